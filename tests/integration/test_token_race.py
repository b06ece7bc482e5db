"""amoCRM's refresh tokens are single-use (FACTS 1.2; RELIABILITY.md 4.4):
two workers refreshing at once lose the tenant. The bridge refreshes once per
tenant under a database row lock and commits the new pair before using it.

* 50 concurrent jobs on an expired token -> exactly one refresh, no
  invalid_grant, every job succeeds (threads of one process, and real worker
  processes);
* a crash between the token response and the commit (the new pair is lost
  with the process, the old refresh token is dead) -> the tenant is flagged
  for re-authorisation, messages wait (none lost), and a re-install resumes
  them.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import requests

from bench.stack import ROOT
from bench.traffic import send_all, telegram_traffic, wait_until
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import Tenant
from sandbox.demo import oauth_install

pytestmark = pytest.mark.integration

FAST = {"amocrm": {"per_second": 200}}


def _runtime(stack) -> Runtime:  # type: ignore[no-untyped-def]
    return Runtime(Settings.from_env(stack.env()))


def _expire_stored_token(stack) -> None:  # type: ignore[no-untyped-def]
    """The bridge believes its access token expired (the sandbox still
    accepts it; what matters is the refresh the bridge then does)."""
    rt = _runtime(stack)
    try:
        with rt.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            creds = rt.decrypt_tenant_credentials(tenant)
            creds["expires_at"] = time.time() - 60
            tenant.credentials = rt.encrypt_tenant_credentials(tenant.id, creds)
            tenant.settings = {**tenant.settings, "rate_per_second": 200}
    finally:
        rt.close()


def _token_calls(stack) -> dict:  # type: ignore[no-untyped-def]
    state = requests.get(f"{stack.sandbox_url}/amocrm/_state", timeout=10).json()
    return state["oauth"]


def test_fifty_concurrent_jobs_refresh_once(make_stack):  # type: ignore[no-untyped-def]
    stack = make_stack(crm="amocrm", sandbox_config=FAST, workers=4)
    before = _token_calls(stack)
    _expire_stored_token(stack)

    # 50 "jobs" in threads of one process, each with its own adapter built
    # from the stored (expired) credentials, all calling amoCRM at once
    rt = _runtime(stack)
    errors: list[BaseException] = []
    start = threading.Barrier(50)

    def job() -> None:
        try:
            with rt.transaction() as session:
                adapter = rt.crm_adapter(session.get(Tenant, stack.seeded.tenant_id))
            start.wait()
            assert adapter.list_owners()
        except BaseException as exc:  # noqa: BLE001 — collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rt.close()
    assert errors == []
    after = _token_calls(stack)
    refreshes = after["token_calls"].get("refresh_token", 0) - before["token_calls"].get(
        "refresh_token", 0
    )
    assert refreshes == 1
    assert after["token_failures"] == before["token_failures"]

    # ... and 50 conversations synced by real worker processes on a token
    # that expires again: one more refresh, nothing refused, nothing lost
    _expire_stored_token(stack)
    traffic = telegram_traffic(50, 1, duplicate_rate=0, first_user=8_300_001)
    assert set(send_all(stack.sandbox_url, traffic, threads=16)) == {200}
    assert wait_until(
        lambda: stack.bridge_status()["messages"]["in"].get("synced") == 50, timeout=180
    ), stack.bridge_status()
    final = _token_calls(stack)
    assert (
        final["token_calls"].get("refresh_token", 0) - after["token_calls"].get("refresh_token", 0)
        == 1
    )
    assert final["token_failures"] == before["token_failures"]
    assert stack.bridge_status()["tenants"][0]["status"] == "active"


CRASH_AFTER_TOKEN_RESPONSE = """
import os, sys
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import Tenant

rt = Runtime(Settings.from_env())
with rt.transaction() as session:
    adapter = rt.crm_adapter(session.get(Tenant, int(sys.argv[1])))
real = adapter.credentials.refresher

def refresh_then_die(stale):
    real(stale)  # amoCRM has rotated the pair now ...
    os._exit(17)  # ... and the process dies before the bridge commits it

adapter.credentials.refresher = refresh_then_die
adapter.list_owners()
"""  # noqa: S105 (a script, not a password)


def test_a_crash_between_token_response_and_commit_parks_without_loss(make_stack_once):  # type: ignore[no-untyped-def]
    stack = make_stack_once(crm="amocrm", sandbox_config=FAST, workers=2)
    _expire_stored_token(stack)
    crashed = subprocess.run(  # noqa: S603
        [sys.executable, "-c", CRASH_AFTER_TOKEN_RESPONSE, str(stack.seeded.tenant_id)],
        cwd=ROOT,
        env={**stack.env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == 17, crashed.stderr.decode()[-2000:]

    # a customer writes: the job's refresh (with the now dead refresh token) is refused
    send_all(stack.sandbox_url, telegram_traffic(1, 2, duplicate_rate=0, first_user=8_400_001))

    def flagged() -> bool:
        status = stack.bridge_status()
        return status["tenants"][0]["status"] == "needs_reauth" and bool(status["parked"])

    assert wait_until(flagged, timeout=60), stack.bridge_status()
    status = stack.bridge_status()
    assert status["messages"]["in"] == {"pending": 2}  # waiting, not failed, not lost
    assert status["parked"][0]["reason"].startswith("auth")
    assert status["failed"] == []

    # the admin installs again: the tenant is re-authorised and the messages go through
    oauth_install(
        stack.bridge_url, crm="amocrm", sandbox=stack.sandbox_url, mapping="demo-amocrm.yaml"
    )
    assert wait_until(
        lambda: stack.bridge_status()["messages"]["in"].get("synced") == 2, timeout=60
    ), stack.bridge_status()
    assert stack.bridge_status()["tenants"][0]["status"] == "active"
