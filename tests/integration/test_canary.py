# ruff: noqa: S105, S106  (canary secrets are test fixtures)
"""Canaries through the whole stack: no personal data and no secret in any
log, job or status output of any bridge process.

For each channel of the registry, with the CRMs of the registry in turn, the stack
runs as real processes (``bench.stack``: redis-server with AOF, the sandbox
vendors, gunicorn, a ``bridge worker`` — RQ, running each job itself, and its
sweeper). What is a canary of each provider, and how its sandbox plays its
part, comes from the provider's test kit (``tests/kits``). Canary values go
through it end to end:

* a customer with a canary first and last name and username writes canary
  text with a canary e-mail address, shares a canary phone number, edits a
  message (as far as the channel has these), and is redelivered once; a
  forged delivery (a wrong proof) and a malformed one carrying the canaries
  are refused;
* the only channel account is connected the documented way (``bridge <kind>
  connect``, secrets from the environment) with canary secrets; the CRM
  app's secrets are canaries; the CRM's tokens, the account's stored
  secrets, the webhook URLs' path keys and the bridge's Fernet key are read
  back after the run and searched for as well;
* the messages are synced into the CRM and the operators' canary replies (in
  every way the CRM's users answer) are delivered to the customer.

Then every file the stack's bridge processes wrote (web, worker and sweeper,
the migration, redis-server's log and its AOF), the output of the CLI
commands (the connect, ``bridge status``), the status data, and every key in
Redis (RQ's job hashes with their zlib-compressed pickles, results, queues,
locks, buckets) are searched: no canary anywhere; every RQ job carries ids
only. The sandbox's log is the vendors' side (a vendor sees its own tokens
and the customer): it is searched only for the Fernet key, which no vendor
ever gets.

Runs on PostgreSQL when ``BRIDGE_TEST_POSTGRES_URL`` is set (its error
messages quote row values), else on SQLite.
"""

from __future__ import annotations

import json
import pickle
import random
import secrets
import string
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from rq.job import Job
from sqlalchemy import select

from bench.stack import ROOT, Stack
from bench.traffic import wait_until
from bridge import admin
from bridge.config import Settings
from bridge.registry import channel_class
from bridge.runtime import Runtime
from bridge.tables import ChannelAccount, Tenant
from sandbox.demo import Seeded
from tests import kits
from tests.conftest import POSTGRES_URL, postgres_schema
from tests.kits.base import ChannelKit, CrmKit

pytestmark = pytest.mark.integration

CRMS: list[CrmKit] = kits.crm_kits()
CHANNELS: list[ChannelKit] = kits.channel_kits()
#: the customer's id on the channel (ids are not canaries: logs carry ids)
CHAT = "6100001"


def _hex(n: int = 10) -> str:
    return secrets.token_hex(n // 2)


@dataclass
class Canaries:
    """What must never show up, by name (found values are reported by name)."""

    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fresh(cls, crm: CrmKit, channel: ChannelKit) -> Canaries:
        tag = _hex()
        digits = "".join(random.SystemRandom().choice(string.digits) for _ in range(7))
        c = cls()
        c.values.update(
            {
                "first name": f"Canaryfirst{tag}",
                "last name": f"Canarylast{tag}",
                "username": f"canary_user_{tag}",
                "phone": f"+7999{digits}",
                "phone digits": f"7999{digits}",
                "phone local": f"999{digits}",
                "e-mail": f"canary.{tag}@example.org",
                "text": f"CANARY-TEXT-{tag}",
                "edited text": f"CANARY-EDIT-{tag}",
                "reply": f"CANARY-REPLY-{tag}",
                "note reply": f"CANARY-NOTE-{tag}",
            }
        )
        channel_values = channel.canary_values(tag)
        crm_values = crm.canary_values(tag)
        assert not (set(channel_values) | set(crm_values)) & set(c.values)
        c.values.update(channel_values)
        c.values.update(crm_values)
        c.channel_secrets = set(channel_values)
        return c

    channel_secrets: set[str] = field(default_factory=set)

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def add(self, name: str, value: Any) -> None:
        if isinstance(value, str) and len(value) >= 8:
            self.values[name] = value

    def found(self, text: str, *, only: set[str] | None = None) -> list[str]:
        lowered = text.lower()
        return sorted(
            name
            for name, value in self.values.items()
            if (only is None or name in only) and value.lower() in lowered
        )

    def person(self) -> dict[str, str]:
        """The customer, as a channel kit draws its deliveries."""
        names = ("first name", "last name", "username", "phone", "e-mail", "text", "edited text")
        return {**{name: self.values[name] for name in names}, "chat": CHAT}


# -- the stack --------------------------------------------------------------------------


@pytest.fixture
def database() -> Iterator[str | None]:
    if not POSTGRES_URL:
        yield None  # the stack's own SQLite file
        return
    with postgres_schema("canary") as url:
        yield url


@pytest.fixture
def canary_stack(tmp_path: Path, database: str | None):  # type: ignore[no-untyped-def]
    stacks: list[Stack] = []

    def make(crm: CrmKit, channel: ChannelKit, c: Canaries) -> Stack:
        stack = Stack(
            workdir=tmp_path / f"{crm.kind}-{channel.kind}",
            database_url=database,
            crm=crm.kind,
            workers=1,
            web_workers=1,
            sandbox_config={**channel.canary_sandbox(c.values), **crm.canary_sandbox(c.values)},
            env_overrides=crm.canary_env(c.values),
        )
        # the channel's deployment-wide settings, where its kit has them (an
        # app-routed channel's app secrets, its API at the sandbox): its
        # secrets are canaries too
        for name, value in channel.canary_env(c.values, stack.sandbox_url).items():
            stack.env_overrides[name] = value
            if "SECRET" in name or "TOKEN" in name:
                c.add(name.lower(), value)
        stacks.append(stack)
        stack.start(seed=False)
        install(stack, crm)
        return stack

    yield make
    for stack in stacks:
        stack.close()


def runtime_of(stack: Stack) -> Runtime:
    return Runtime(Settings.from_env(stack.env()))


def status(stack: Stack) -> dict[str, Any]:
    """``admin.status`` read here (polling ``bridge status`` would start a
    process per look; the command itself runs once, at the end)."""
    rt = runtime_of(stack)
    try:
        return admin.status(rt)
    finally:
        rt.close()


def cli(stack: Stack) -> Callable[..., str]:
    """A ``bridge`` command as the operator runs it; its whole output."""

    def run(*args: str, **env: str) -> str:
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "bridge.cli", *args],
            cwd=ROOT,
            env={**stack.env(), **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    return run


def install(stack: Stack, crm: CrmKit) -> None:
    """The CRM side of ``Stack.seed`` (the app installed the CRM's way),
    without the demo's channel: the only account is the canary's."""
    rt = runtime_of(stack)
    try:
        tenant_id = crm.canary_install(stack, rt)
        with rt.transaction() as s:
            tenant = s.get(Tenant, tenant_id)
            # the tenant's API budget as fast as the sandbox's (as the other
            # integration tests do)
            tenant.settings = {**tenant.settings, **crm.fast_settings}
            settings = tenant.settings
            account = str(
                settings.get("subdomain") or settings.get("domain") or tenant.crm_account_id
            )
    finally:
        rt.close()
    stack.seeded = Seeded(crm.kind, tenant_id, 0, account)


def connect_canary_account(stack: Stack, channel: ChannelKit, c: Canaries) -> tuple[int, str]:
    """The channel's connect command with the canary secrets (from the
    environment, never on the command line); the account id and the
    command's output."""
    rt = runtime_of(stack)
    try:
        with rt.transaction() as s:
            slug = s.get(Tenant, stack.seeded.tenant_id).slug
    finally:
        rt.close()
    out = channel.canary_connect(cli(stack), slug, c.values, stack.sandbox_url)
    rt = runtime_of(stack)
    try:
        with rt.transaction() as s:
            (account,) = s.scalars(
                select(ChannelAccount).where(ChannelAccount.tenant_id == stack.seeded.tenant_id)
            ).all()
            assert account.kind == channel.kind
            stored = json.dumps(rt.decrypt_channel_credentials(account))
            assert c.channel_secrets <= set(c.found(stored)), "connected with other secrets"
            stack.seeded.channel_account_id = account.id
            return account.id, out
    finally:
        rt.close()


def refused_requests(stack: Stack, account_id: int, channel: ChannelKit, c: Canaries) -> None:
    """Straight to the bridge: a forged delivery (a wrong proof that carries
    a canary) and a malformed one (``ChannelKit.refused_body``), both full
    of canaries, are refused without repeating them."""
    rt = runtime_of(stack)
    try:
        with rt.transaction() as s:
            account = s.get(ChannelAccount, account_id)
            url = rt.channel_webhook_url(account)
            creds = rt.decrypt_channel_credentials(account)
    finally:
        rt.close()
    target = f"{stack.bridge_url}/webhooks/{url.split('/webhooks/', 1)[1]}"
    raw = channel.customer_message(
        810_000_090, int(CHAT), c["first name"], text=f"{c['text']}: write to {c['e-mail']}"
    )
    proof = channel.prove(creds, raw)
    forged = requests.post(
        target,
        data=raw,
        headers={
            "Content-Type": channel.content_type,
            **{name: value[:-1] + c["text"] for name, value in proof.items()},
        },
        timeout=10,
    )
    assert forged.status_code == 403 and c.found(forged.text) == [], forged.text
    broken = channel.refused_body(raw, c["text"])
    refused = requests.post(
        target,
        data=broken,
        headers={"Content-Type": channel.content_type, **channel.prove(creds, broken)},
        timeout=10,
    )
    assert refused.status_code == 400 and c.found(refused.text) == [], refused.text


# -- collecting everything ---------------------------------------------------------------


def stored_secrets(stack: Stack, channel: ChannelKit, c: Canaries) -> None:
    """The secrets the run created: the CRM's tokens (an install), every
    channel account's stored secrets, the path keys, the Fernet key."""
    c.add("Fernet key", stack.key)
    rt = runtime_of(stack)
    try:
        with rt.transaction() as s:
            tenant = s.get(Tenant, stack.seeded.tenant_id)
            for name, value in rt.decrypt_tenant_credentials(tenant).items():
                if "token" in name:
                    c.add(f"CRM {name}", value)
            c.add("tenant webhook key", tenant.webhook_key)
            for account in s.scalars(select(ChannelAccount)):
                creds = rt.decrypt_channel_credentials(account)
                hidden = channel.secrets_of(creds)
                for name, value in creds.items():
                    if value in hidden:
                        c.add(f"account {account.id} {name}", value)
                if not channel_class(account.kind).hosted:
                    # a hosted channel's key is public by design: every page
                    # embedding its widget carries it (its visitors' tokens
                    # are what is secret)
                    c.add(f"account {account.id} path key", account.key)
    finally:
        rt.close()


def redis_dump(conn: redis.Redis) -> tuple[str, list[str]]:
    """Every key and value in Redis as text — RQ's job data decompressed —
    and the problems with RQ's jobs (anything but ids in a job)."""
    out: list[str] = []
    problems: list[str] = []
    for key in conn.scan_iter(count=1000):
        name = key.decode("latin-1")
        out.append(name)
        kind = conn.type(key).decode()
        values: list[bytes] = []
        if kind == "string":
            values = [conn.get(key) or b""]
        elif kind == "hash":
            for k, v in conn.hgetall(key).items():
                values += [k, v]
        elif kind == "list":
            values = conn.lrange(key, 0, -1)
        elif kind == "set":
            values = list(conn.smembers(key))
        elif kind == "zset":
            values = conn.zrange(key, 0, -1)
        elif kind == "stream":
            for entry_id, entry in conn.xrange(key):
                values.append(entry_id)
                for k, v in entry.items():
                    values += [k, v]
        for value in values:
            try:
                value = zlib.decompress(value)
            except zlib.error:
                pass
            out.append(value.decode("latin-1"))
            if value[:1] == b"\x80":  # a pickle (RQ's job data and results)
                try:
                    out.append(repr(pickle.loads(value)))  # noqa: S301 (our own Redis)
                except Exception:  # noqa: BLE001, S110 (not every 0x80 is a pickle)
                    pass
        if name.startswith("rq:job:") and kind == "hash":
            job = Job.fetch(name.removeprefix("rq:job:"), connection=conn)
            if not (all(isinstance(a, int) for a in job.args) and job.kwargs == {}):
                problems.append(f"{job.id}: args {job.args!r} kwargs {job.kwargs!r}")
            if job.description != job.id:
                problems.append(f"{job.id}: description {job.description!r}")
    return "\n".join(out), problems


def stack_files(stack: Stack) -> dict[str, str]:
    """Every file the stack's processes wrote under its workdir (logs, the
    Redis AOF), except the database and the sandbox's config."""
    files = {}
    for path in sorted(stack.workdir.rglob("*")):
        if not path.is_file() or path.name.startswith("bridge.db") or path.name == "sandbox.json":
            continue
        if path.parent.name == "var" and path.name == "secret.key":
            continue
        files[str(path.relative_to(stack.workdir))] = path.read_bytes().decode("latin-1")
    return files


# -- the test ---------------------------------------------------------------------------------


#: every channel once, the CRMs in turn (each CRM with a third of them): a
#: secret leaks through the adapter whose code handles it, which each pair
#: runs whole; every CRM x channel would cost the suite three times as long
PAIRS = [(CRMS[i % len(CRMS)], channel) for i, channel in enumerate(CHANNELS)]


@pytest.mark.parametrize("crm,channel", PAIRS, ids=lambda kit: kit.kind)
def test_no_canary_in_any_log_job_or_status(canary_stack, crm: CrmKit, channel: ChannelKit) -> None:  # type: ignore[no-untyped-def]
    c = Canaries.fresh(crm, channel)
    stack = canary_stack(crm, channel, c)
    account_id, connect_out = connect_canary_account(stack, channel, c)
    outputs = {f"bridge {channel.kind} connect": connect_out}

    deliveries = channel.canary_deliveries(c.values, c.person())
    for delivery in deliveries:
        channel.canary_deliver(stack.sandbox_url, c.values, delivery)
    channel.canary_deliver(stack.sandbox_url, c.values, deliveries[0])  # a redelivery
    refused_requests(stack, account_id, channel, c)

    def synced() -> bool:
        counts = status(stack)["messages"]["in"]
        return counts.get("synced", 0) >= 3 and not (set(counts) - {"synced", "skipped"})

    assert wait_until(synced, timeout=60, interval=0.2), status(stack)

    def in_crm() -> bool:  # the canaries reached the CRM: the search below is not vacuous
        return {"text", "phone", "first name"} <= set(c.found(crm.canary_in_crm(stack)))

    assert wait_until(in_crm, timeout=30, interval=0.2)

    # the customer as the channel names them (a chat id; e-mail: the address)
    user = channel.canary_user_id(c.person())
    replies = crm.canary_replies(stack, c.values, channel.kind, user)

    def sent() -> list[str]:
        return channel.canary_sent(stack.sandbox_url, user)

    def answered() -> list[str]:
        # what was sent carrying the reps' replies: besides them, a mapping's
        # acknowledge rule sends a new ticket an automatic acknowledgement
        return [text for text in sent() if c.found(text, only=set(replies))]

    assert wait_until(lambda: len(answered()) >= len(replies), timeout=30, interval=0.2)
    assert c[replies[0]] in answered()[0], sent()
    assert wait_until(
        lambda: status(stack)["messages"]["out"].get("sent") == len(sent()),
        timeout=30,
        interval=0.2,
    ), (status(stack), sent())

    final = status(stack)
    assert final["failed"] == [] and final["parked"] == [], final
    # each reply once; anything else at most one acknowledgement per conversation
    assert len(answered()) == len(replies), sent()
    assert len(sent()) - len(replies) <= final["conversations"], sent()
    outputs["status data"] = json.dumps(final)
    outputs["bridge status"] = cli(stack)("status")  # the command, as an operator runs it
    stored_secrets(stack, channel, c)

    dump, job_problems = redis_dump(stack.redis())
    assert "rq:job:" in dump  # the jobs are there to be searched
    assert job_problems == []
    stack.close()  # every process flushed and gone: the logs are complete

    files = stack_files(stack)
    logs = {name: text for name, text in files.items() if not name.startswith("sandbox")}
    assert {"web.log", "worker0.log", "migrate.log", "redis/redis.log"} <= set(logs), sorted(files)
    worker_logs = logs["worker0.log"]
    assert "bridge.pipeline" in worker_logs, worker_logs[-2000:]

    leaks = {name: c.found(text) for name, text in {**logs, **outputs}.items()}
    leaks["redis"] = c.found(dump)
    vendor_never = {"Fernet key"}  # the sandbox is the vendors: only what no vendor gets
    leaks.update(
        {name: c.found(text, only=vendor_never) for name, text in files.items() if name not in logs}
    )
    if stack.database_url is None:  # no token or secret in clear in the database file
        raw = b"".join(p.read_bytes() for p in stack.workdir.glob("bridge.db*"))
        stored = {n for n in c.values if ("token" in n or "secret" in n) and "key" not in n}
        leaks["bridge.db (secrets)"] = c.found(raw.decode("latin-1"), only=stored)
    assert {name: found for name, found in leaks.items() if found} == {}


def test_every_provider_has_a_kit() -> None:
    assert kits.missing() == []
