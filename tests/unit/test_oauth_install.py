# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""The OAuth install (``/oauth/hubspot/install`` and ``/callback``) against
the sandbox HubSpot served on a real port: the admin's consent form, the
code exchange and the token answers are the sandbox's (FACTS 3.1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner
from sqlalchemy import select, text

import crm_adapters
from bridge import admin, create_app, outbox
from bridge.jobs import SYNC_QUEUE
from bridge.model import InboundMessage, MessageKind, SenderProfile, utcnow
from bridge.pipeline.inbound import accept, run_inbound
from bridge.tables import Conversation, Message, Outbox, Tenant
from tests.support import fakes
from tests.support.harness import (
    CLIENT_ID,
    HUBSPOT_MAPPING,
    PORTAL_A,
    PORTAL_B,
    build_runtime,
    consent,
    finish_install,
    hubspot_app,
    hubspot_sandbox,
    oauth_install,
    queued,
    row_counts,
    start_install,
    write_mapping,
)


class OtherCrm(fakes.FakeCrm):
    """A second CRM with an OAuth install of its own."""

    kind = "othercrm"

    @classmethod
    def install_url(cls, app, *, redirect_uri: str, state: str) -> str:  # type: ignore[no-untyped-def]
        return f"https://other-crm.example/authorize?state={state}"


@pytest.fixture
def sandbox() -> Iterator[tuple[str, Any]]:
    with hubspot_sandbox() as served:
        yield served


@pytest.fixture
def rt(settings, redis_conn, sandbox):  # type: ignore[no-untyped-def]
    url, _ = sandbox
    with build_runtime(
        settings, redis_conn, apps={"hubspot": hubspot_app(url)}, api_bases={"hubspot": url}
    ) as runtime:
        write_mapping(runtime, "hub.yaml", HUBSPOT_MAPPING)
        yield runtime


@pytest.fixture
def client(rt):  # type: ignore[no-untyped-def]
    return create_app(runtime=rt).test_client()


def _tenants(rt) -> list[Tenant]:  # type: ignore[no-untyped-def]
    with rt.transaction() as s:
        return list(s.scalars(select(Tenant)))


def _raw_credentials(rt) -> list[str]:  # type: ignore[no-untyped-def]
    with rt.engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT credentials FROM tenants"))]


def _bad(response, error: str) -> str:  # type: ignore[no-untyped-def]
    # a state we did not sign is a forgery (403); other bad requests are 400
    assert response.status_code == (403 if error == "invalid_state" else 400), response.data
    data = response.get_json()
    assert data["error"] == error and data["message"], data
    return data["message"]


# -- the install link -------------------------------------------------------------------------


def test_install_redirects_to_the_consent_page_with_a_signed_state(client, rt, sandbox) -> None:  # type: ignore[no-untyped-def]
    url, _ = sandbox
    response = client.get("/oauth/hubspot/install", query_string={"mapping": "hub.yaml"})
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{url}/oauth/authorize"
    query = start_install(client)
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == f"{rt.settings.public_url}/oauth/hubspot/callback"
    assert "crm.objects.contacts.write" in query["scope"].split(" ")
    # the state carries the mapping, signed: readable, but not forgeable
    payload = URLSafeTimedSerializer("x", salt="oauth-state").loads_unsafe(query["state"])[1]
    assert payload == {"crm": "hubspot", "mapping": "hub.yaml"}
    # ... and the sandbox accepts the link: its consent form offers the grant
    page = requests.get(response.headers["Location"], timeout=10)
    assert page.status_code == 200 and "Grant access" in page.text


def test_install_of_a_crm_without_oauth_is_404(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/oauth/nosuchcrm/install")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


# -- a good install -----------------------------------------------------------------------------


def test_callback_creates_the_tenant_with_encrypted_credentials(client, rt, sandbox) -> None:  # type: ignore[no-untyped-def]
    url, spy = sandbox
    answer = oauth_install(client, url)
    assert answer["ok"] is True and answer["created"] is True
    (tenant,) = _tenants(rt)
    assert tenant.id == answer["tenant"]
    assert (tenant.crm_kind, tenant.crm_account_id, tenant.mapping, tenant.status) == (
        "hubspot",
        str(PORTAL_A),
        "hub.yaml",
        "active",
    )
    assert spy.grants == ["authorization_code"]
    issued = spy.answers[0]
    # at rest: ciphertext only
    (raw,) = _raw_credentials(rt)
    for secret in (issued["access_token"], issued["refresh_token"]):
        assert secret not in raw
    creds = rt.decrypt_tenant_credentials(tenant)
    assert (creds["access_token"], creds["refresh_token"], creds["hub_id"]) == (
        issued["access_token"],
        issued["refresh_token"],
        str(PORTAL_A),
    )
    # and the stored token is the portal's
    details = requests.get(
        f"{url}/account-info/v3/details",
        timeout=10,
        headers={"Authorization": f"Bearer {creds['access_token']}"},
    )
    assert details.json()["portalId"] == PORTAL_A


def test_install_into_another_portal_is_another_tenant(client, rt, sandbox) -> None:  # type: ignore[no-untyped-def]
    url, _ = sandbox
    first = oauth_install(client, url, portal_id=PORTAL_A)
    second = oauth_install(client, url, portal_id=PORTAL_B)
    assert first["tenant"] != second["tenant"] and second["created"] is True
    assert sorted(t.crm_account_id for t in _tenants(rt)) == sorted([str(PORTAL_A), str(PORTAL_B)])


# -- refused callbacks ---------------------------------------------------------------------------


def _tamper(state: str) -> str:
    middle = len(state) // 2
    return state[:middle] + ("A" if state[middle] != "A" else "B") + state[middle + 1 :]


@pytest.mark.parametrize("where", ["payload", "signature", "dropped-signature"])
def test_tampered_state_is_refused_before_the_code_is_spent(
    client, rt, sandbox, where: str
) -> None:  # type: ignore[no-untyped-def]
    url, spy = sandbox
    back = consent(url, start_install(client))
    state = back["state"]
    back["state"] = {
        "payload": _tamper(state),
        "signature": state[:-2] + ("AA" if not state.endswith("AA") else "BB"),
        "dropped-signature": state.rsplit(".", 1)[0],
    }[where]
    assert "start again" in _bad(finish_install(client, back), "invalid_state")
    assert _tenants(rt) == []
    assert spy.grants == []  # the code was never exchanged


def test_state_minted_for_another_crm_is_refused(client, rt, sandbox, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(crm_adapters.REGISTRY, "othercrm", f"{__name__}:OtherCrm")
    monkeypatch.setitem(rt.settings.apps, "othercrm", {"client_id": "other-app"})
    url, spy = sandbox
    other = client.get("/oauth/othercrm/install", query_string={"mapping": "hub.yaml"})
    assert other.status_code == 302
    other_state = dict(
        p.split("=", 1) for p in urlsplit(other.headers["Location"]).query.split("&")
    )["state"]
    back = consent(url, start_install(client))
    back["state"] = other_state
    assert "another CRM" in _bad(finish_install(client, back), "invalid_state")
    assert _tenants(rt) == [] and spy.grants == []


@pytest.mark.parametrize("age,accepted", [(599, True), (601, False)])
def test_state_expires_after_ten_minutes(
    client, rt, sandbox, monkeypatch, age: int, accepted: bool
) -> None:  # type: ignore[no-untyped-def]
    url, _ = sandbox
    back = consent(url, start_install(client))
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + age)
    response = finish_install(client, back)
    if accepted:
        assert response.status_code == 200, response.data
        assert len(_tenants(rt)) == 1
    else:
        assert "expired" in _bad(response, "invalid_state")
        assert _tenants(rt) == []


def test_reused_code_is_refused_and_changes_nothing(client, rt, sandbox) -> None:  # type: ignore[no-untyped-def]
    url, spy = sandbox
    back = consent(url, start_install(client))
    assert finish_install(client, back).status_code == 200
    (before,) = _raw_credentials(rt)
    response = finish_install(client, back)  # a reload of the callback page, or a replay
    assert response.status_code == 400, response.data
    assert response.get_json()["error"] == "invalid_grant"
    assert spy.grants == ["authorization_code", "authorization_code"]
    assert spy.answers[1]["status"] == "BAD_AUTH_CODE"
    assert len(_tenants(rt)) == 1
    assert _raw_credentials(rt) == [before]


def test_denied_consent_is_400_and_no_tenant(client, rt, sandbox) -> None:  # type: ignore[no-untyped-def]
    url, spy = sandbox
    back = consent(url, start_install(client), decision="deny")
    assert back["error"] == "access_denied"
    _bad(finish_install(client, back), "access_denied")
    assert _tenants(rt) == [] and spy.grants == []


@pytest.mark.parametrize("drop", ["code", "state"])
def test_callback_without_code_or_state_is_400(client, rt, sandbox, drop: str) -> None:  # type: ignore[no-untyped-def]
    url, spy = sandbox
    back = consent(url, start_install(client))
    del back[drop]
    _bad(finish_install(client, back), "invalid_request")
    assert _tenants(rt) == [] and spy.grants == []


# -- re-installing re-authorises ------------------------------------------------------------------


def _message(update_id: int, chat: str) -> InboundMessage:
    return InboundMessage(
        channel_kind="telegram",
        external_id=str(update_id),
        external_user_id=chat,
        external_thread_id=chat,
        kind=MessageKind.TEXT,
        sent_at=utcnow(),
        text=f"message {update_id}",
        provider_message_id=str(update_id),
        profile=SenderProfile(first_name="Ivan"),
    )


def _outbox(rt, conversation_id: int) -> Outbox:  # type: ignore[no-untyped-def]
    with rt.transaction() as s:
        return s.scalars(
            select(Outbox).where(
                Outbox.conversation_id == conversation_id, Outbox.direction == "in"
            )
        ).one()


def test_second_install_reauthorises_and_resumes_auth_parked_work(
    client, rt, sandbox, redis_conn
) -> None:  # type: ignore[no-untyped-def]
    url, spy = sandbox
    first = oauth_install(client, url)
    tenant_id = first["tenant"]
    account = admin.add_channel_account(
        rt,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="1",
    )
    admin.setup_crm(rt, tenant_id)
    accept(rt, account, [_message(1, "501"), _message(2, "502")])
    with rt.transaction() as s:
        conv_auth, conv_failed = (
            s.scalar(select(Conversation.id).where(Conversation.external_thread_id == chat))
            for chat in ("501", "502")
        )
        old = rt.decrypt_tenant_credentials(s.get(Tenant, tenant_id))
    # the admin uninstalls the app: HubSpot forgets the grant and its tokens
    revoked = requests.delete(f"{url}/oauth/v1/refresh-tokens/{old['refresh_token']}", timeout=10)
    assert revoked.status_code == 204
    assert run_inbound(rt, conv_auth) == "parked"
    assert _outbox(rt, conv_auth).reason.startswith("auth")
    with rt.transaction() as s:
        tenant = s.get(Tenant, tenant_id)
        assert tenant.status == "needs_reauth" and tenant.status_reason
        # another conversation is parked for a reason re-installing does not fix
        outbox.park(s, conv_failed, "in", "message failed: HubSpot VALIDATION_ERROR")
    redis_conn.flushdb()

    again = oauth_install(client, url)
    assert (again["tenant"], again["created"]) == (tenant_id, False)
    assert len(_tenants(rt)) == 1
    with rt.transaction() as s:
        tenant = s.get(Tenant, tenant_id)
        creds = rt.decrypt_tenant_credentials(tenant)
    assert (tenant.status, tenant.status_reason) == ("active", None)
    assert creds["access_token"] == spy.answers[-1]["access_token"] != old["access_token"]
    resumed = _outbox(rt, conv_auth)
    assert resumed.state == "pending" and queued(redis_conn, SYNC_QUEUE) == [resumed.last_job_id]
    assert _outbox(rt, conv_failed).state == "parked"
    # nothing was lost while it waited
    assert run_inbound(rt, conv_auth) == "idle"
    with rt.transaction() as s:
        status = s.scalar(select(Message.status).where(Message.conversation_id == conv_auth))
    assert status == "synced"
    notes = requests.get(f"{url}/_state", params={"account": PORTAL_A}, timeout=10).json()
    bodies = [n["properties"].get("hs_note_body", "") for n in notes["accounts"][0]["notes"]]
    assert any("message 1" in b for b in bodies)
    assert row_counts(rt)["tenants"] == 1


@pytest.mark.parametrize(
    "mapping", ["/etc/passwd", "../mappings/hub.yaml", "sub/hub.yaml", ".hidden.yaml", "nope.yaml"]
)
def test_install_link_names_a_mapping_file_of_the_mappings_directory(client, rt, mapping) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/oauth/hubspot/install", query_string={"mapping": mapping})
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_mapping"
    assert "Location" not in response.headers
