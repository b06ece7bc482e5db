# ruff: noqa: S105, S106  (canary secrets are test fixtures)
"""Canaries through the whole stack: no personal data and no secret in any
log, job or status output of any bridge process.

For each CRM of the registry the stack runs as real processes
(``bench.stack``: redis-server with AOF, the sandbox vendors, gunicorn, a
``bridge worker`` — RQ, its work-horses and its sweeper). Canary values go
through it end to end:

* a customer with a canary first and last name and username writes canary
  text with a canary e-mail address, shares a canary phone number, edits a
  message, and is redelivered once; a forged update (wrong secret) and a
  malformed one carrying the canaries are refused;
* the only bot is connected with ``bridge telegram connect`` and a canary bot
  token (passed the documented way, in ``TELEGRAM_BOT_TOKEN``); the CRM app's
  client secret (and amoCRM's chat channel secret, HubSpot's developer key)
  are canaries; the CRM's OAuth tokens / Bitrix24's application token, the
  bot's webhook secret token, the webhook URLs' path keys and the bridge's
  Fernet key are read back after the run and searched for as well;
* the messages are synced into the CRM and an operator's canary reply is
  delivered to the customer (amoCRM: from the chat and from a note).

Then every file the stack's bridge processes wrote (web, worker and sweeper,
the migration, redis-server's log and its AOF), the output of the CLI
commands (``bridge telegram connect``, ``bridge status``), the status data,
and every key in Redis (RQ's job hashes with their zlib-compressed pickles,
results, queues, locks, buckets) are searched: no canary anywhere; every RQ
job carries ids only. The sandbox's log is the vendors' side (Telegram's
Bot API puts the bot token in its URLs; the CRM sees its own tokens and the
customer): it is searched only for the Fernet key, which no vendor ever gets.

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
import time
import zlib
from collections.abc import Iterator
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
from bridge.runtime import Runtime
from bridge.tables import ChannelAccount, Tenant
from sandbox.demo import DEMO_CRMS, Seeded, event_install, oauth_install
from tests.conftest import POSTGRES_URL, postgres_schema

pytestmark = pytest.mark.integration

CRMS = ["hubspot", "amocrm", "bitrix24"]
CHAT = 6_100_001  # the customer's Telegram id (ids are not canaries: logs carry ids)


def _hex(n: int = 10) -> str:
    return secrets.token_hex(n // 2)


def _bot_token() -> str:
    body = "CANARYbot" + _hex(16)
    pad = "".join(random.SystemRandom().choice(string.ascii_letters) for _ in range(35 - len(body)))
    return f"7999{random.SystemRandom().randrange(10**5, 10**6)}:{body}{pad}"


@dataclass
class Canaries:
    """What must never show up, by name (found values are reported by name)."""

    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fresh(cls) -> Canaries:
        tag = _hex()
        digits = "".join(random.SystemRandom().choice(string.digits) for _ in range(7))
        bot = _bot_token()
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
                "bot token": bot,
                "bot token secret part": bot.split(":", 1)[1],
                "client secret": f"CanaryClientSecret{tag}",
                "channel secret": f"canarychannelsecret{tag}",
                "developer key": f"canary-devkey-{tag}",
            }
        )
        return c

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


# -- the stack --------------------------------------------------------------------------


def sandbox_config(crm: str, c: Canaries) -> dict[str, Any]:
    bots = [{"token": c["bot token"], "username": "canary_bot", "first_name": "Canary"}]
    config: dict[str, Any] = {"telegram": {"bots": bots}}
    if crm == "hubspot":
        config["hubspot"] = {
            "per_10s": 2000,
            "search_per_s": 50,
            "app": {"client_secret": c["client secret"], "developer_api_key": c["developer key"]},
        }
    elif crm == "amocrm":
        config["amocrm"] = {
            "per_second": 100,
            "integration": {"client_secret": c["client secret"]},
            "channel": {"secret": c["channel secret"]},
        }
    else:
        config["bitrix24"] = {
            "limits": {"basic": {"drain_per_s": 100, "burst": 250}},
            "app": {"client_secret": c["client secret"]},
        }
    return config


def env_overrides(crm: str, c: Canaries) -> dict[str, str]:
    if crm == "hubspot":
        return {
            "HUBSPOT_CLIENT_SECRET": c["client secret"],
            "HUBSPOT_DEVELOPER_API_KEY": c["developer key"],
        }
    if crm == "amocrm":
        return {
            "AMOCRM_CLIENT_SECRET": c["client secret"],
            "AMOCRM_CHANNEL_SECRET": c["channel secret"],
        }
    return {"BITRIX24_CLIENT_SECRET": c["client secret"]}


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

    def make(crm: str, c: Canaries) -> Stack:
        stack = Stack(
            workdir=tmp_path / crm,
            database_url=database,
            crm=crm,
            workers=1,
            web_workers=1,
            sandbox_config=sandbox_config(crm, c),
            env_overrides=env_overrides(crm, c),
        )
        stacks.append(stack)
        stack.start(seed=False)
        install(stack)
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


def cli(stack: Stack, *args: str, **env: str) -> str:
    """A ``bridge`` command as the operator runs it; its whole output."""
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


def install(stack: Stack) -> None:
    """The CRM side of ``Stack.seed`` (the app installed through OAuth, or
    Bitrix24's install event), without the demo bot: the only bot is the
    canary's."""
    rt = runtime_of(stack)
    try:
        args = {"crm": stack.crm, "sandbox": stack.sandbox_url, "mapping": DEMO_CRMS[stack.crm]}
        if stack.crm == "bitrix24":
            tenant_id = event_install(rt, stack.bridge_url, **args)
        else:
            tenant_id = oauth_install(stack.bridge_url, **args)
        if stack.crm == "amocrm":  # amoCRM support registers the chat channel's hook
            _post(
                stack,
                "amocrm/_channel",
                hook_url=f"{stack.bridge_url}/webhooks/crm/amocrm/route/:scope_id",
            )
        with rt.transaction() as s:
            tenant = s.get(Tenant, tenant_id)
            tenant.settings = {
                **tenant.settings,
                # the tenant's API budget as fast as the sandbox's (as the
                # other integration tests do)
                "rate_per_10s": 2000,
                "rate_per_second": 100,
                "burst": 250,
            }
            settings = tenant.settings
            account = str(
                settings.get("subdomain") or settings.get("domain") or tenant.crm_account_id
            )
    finally:
        rt.close()
    stack.seeded = Seeded(stack.crm, tenant_id, 0, account)


def connect_canary_bot(stack: Stack, c: Canaries) -> tuple[int, str]:
    """``bridge telegram connect`` with the canary token (in
    ``TELEGRAM_BOT_TOKEN``, not on the command line); returns the account id
    and the command's output."""
    rt = runtime_of(stack)
    try:
        with rt.transaction() as s:
            slug = s.get(Tenant, stack.seeded.tenant_id).slug
    finally:
        rt.close()
    out = cli(
        stack,
        "telegram",
        "connect",
        "--tenant",
        slug,
        "--name",
        "Canary bot",
        TELEGRAM_BOT_TOKEN=c["bot token"],
    )
    rt = runtime_of(stack)
    try:
        with rt.transaction() as s:
            (account,) = s.scalars(
                select(ChannelAccount).where(ChannelAccount.tenant_id == stack.seeded.tenant_id)
            ).all()
            assert rt.decrypt_channel_credentials(account)["bot_token"] == c["bot token"]
            stack.seeded.channel_account_id = account.id
            return account.id, out
    finally:
        rt.close()


# -- the customer -------------------------------------------------------------------------


def customer(c: Canaries) -> dict[str, Any]:
    return {
        "id": CHAT,
        "is_bot": False,
        "first_name": c["first name"],
        "last_name": c["last name"],
        "username": c["username"],
        "language_code": "en",
    }


def updates(c: Canaries) -> list[dict[str, Any]]:
    user = customer(c)
    chat = {"id": CHAT, "type": "private", "first_name": c["first name"]}
    date = int(time.time()) - 60

    def message(n: int, **fields: Any) -> dict[str, Any]:
        return {"message_id": n, "from": user, "chat": chat, "date": date + n, **fields}

    return [
        {
            "update_id": 810_000_001,
            "message": message(1, text=f"{c['text']}: write to me at {c['e-mail']}"),
        },
        {
            "update_id": 810_000_002,
            "message": message(
                2,
                contact={
                    "phone_number": c["phone"].lstrip("+"),
                    "first_name": c["first name"],
                    "last_name": c["last name"],
                    "user_id": CHAT,
                },
            ),
        },
        {
            "update_id": 810_000_003,
            "message": message(3, text=f"{c['text']} call {c['phone']} or {c['e-mail']}"),
        },
        {
            "update_id": 810_000_004,
            "edited_message": {
                **message(1, text=f"{c['edited text']} {c['e-mail']}"),
                "edit_date": date + 30,
            },
        },
    ]


def deliver(stack: Stack, c: Canaries, update: dict[str, Any]) -> None:
    r = requests.post(
        f"{stack.sandbox_url}/telegram/_deliver",
        json={"token": c["bot token"], "update": update},
        timeout=30,
    )
    r.raise_for_status()
    assert r.json().get("status") == 200, r.json()


def refused_requests(stack: Stack, account_id: int, c: Canaries) -> None:
    """Straight to the bridge: a forged update (wrong secret) and a malformed
    one, both full of canaries, are refused without repeating them."""
    rt = runtime_of(stack)
    try:
        with rt.transaction() as s:
            account = s.get(ChannelAccount, account_id)
            url = rt.channel_webhook_url(account)
            secret = rt.decrypt_channel_credentials(account)["secret_token"]
    finally:
        rt.close()
    path = url.split("/webhooks/", 1)[1]
    target = f"{stack.bridge_url}/webhooks/{path}"
    forged = requests.post(
        target,
        data=json.dumps(updates(c)[0]),
        headers={
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": secret[:-1] + c["text"],
        },
        timeout=10,
    )
    assert forged.status_code == 403 and c.found(forged.text) == []
    broken = requests.post(
        target,
        data=json.dumps(updates(c)[0])[:-7] + c["text"],
        headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret},
        timeout=10,
    )
    assert broken.status_code == 400 and c.found(broken.text) == []


# -- the operator ----------------------------------------------------------------------------


def _amo_account(stack: Stack) -> dict[str, Any]:
    state = stack.amocrm_state()
    return state["accounts"][0] if "accounts" in state else state


def crm_has_the_customer(stack: Stack, crm: str, c: Canaries) -> bool:
    """The canaries reached the CRM (the search below is not vacuous)."""
    if crm == "hubspot":
        dump = json.dumps(stack.hubspot_state())
    elif crm == "amocrm":
        dump = json.dumps(_amo_account(stack))
    else:
        dump = json.dumps(stack.bitrix24_state())
    return {"text", "phone", "first name"} <= set(c.found(dump))


def operator_replies(stack: Stack, crm: str, c: Canaries) -> int:
    """The operator answers in the CRM; returns how many replies were sent."""
    if crm == "hubspot":
        contact = next(
            x
            for x in stack.hubspot_state()["contacts"]
            if x["properties"].get("bridge_telegram_id") == str(CHAT)
        )
        answer = stack.reply(contact["id"], c["reply"])
        assert answer["webhook"]["status"] == 200, answer
        return 1
    if crm == "amocrm":
        account = _amo_account(stack)
        contact = next(
            x
            for x in account["contacts"]
            if any(
                v["values"][0]["value"] == str(CHAT) for v in x.get("custom_fields_values") or []
            )
        )
        answer = _post(stack, "amocrm/_reply", contact_id=contact["id"], text=c["reply"])
        assert answer["webhook"]["status"] == 200, answer
        _post(stack, "amocrm/_note", lead_id=contact["leads"][0], text=f"@client {c['note reply']}")
        return 2
    portal = stack.bitrix24_state()
    chat = next(x for x in portal["chats"] if x["external_user_id"] == str(CHAT))
    answer = _post(stack, "bitrix24/_reply", conversation=chat["external_chat_id"], text=c["reply"])
    assert answer["webhook"]["status"] == 200, answer
    return 1


def _post(stack: Stack, path: str, **body: Any) -> dict[str, Any]:
    r = requests.post(f"{stack.sandbox_url}/{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


# -- collecting everything ---------------------------------------------------------------


def stored_secrets(stack: Stack, c: Canaries) -> None:
    """The secrets the run created: the CRM's tokens (OAuth / install
    event), every bot's webhook secret, the path keys, the Fernet key."""
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
                c.add(f"bot {account.id} secret_token", creds.get("secret_token"))
                c.add(f"bot {account.id} path key", account.key)
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


@pytest.mark.parametrize("crm", CRMS)
def test_no_canary_in_any_log_job_or_status(canary_stack, crm: str) -> None:  # type: ignore[no-untyped-def]
    c = Canaries.fresh()
    stack = canary_stack(crm, c)
    account_id, connect_out = connect_canary_bot(stack, c)
    outputs = {"bridge telegram connect": connect_out}

    for update in updates(c):
        deliver(stack, c, update)
    deliver(stack, c, updates(c)[0])  # Telegram redelivers after a timeout
    refused_requests(stack, account_id, c)

    def synced() -> bool:
        counts = status(stack)["messages"]["in"]
        return counts.get("synced", 0) >= 3 and not (set(counts) - {"synced", "skipped"})

    assert wait_until(synced, timeout=60, interval=0.2), status(stack)
    assert wait_until(lambda: crm_has_the_customer(stack, crm, c), timeout=30, interval=0.2)

    replies = operator_replies(stack, crm, c)
    assert wait_until(lambda: len(stack.telegram_sent(CHAT)) >= replies, timeout=30, interval=0.2)
    sent = [m["text"] for m in stack.telegram_sent(CHAT)]
    assert c["reply"] in sent[0], sent
    assert wait_until(
        lambda: status(stack)["messages"]["out"].get("sent") == replies, timeout=30, interval=0.2
    ), status(stack)

    final = status(stack)
    assert final["failed"] == [] and final["parked"] == [], final
    outputs["status data"] = json.dumps(final)
    outputs["bridge status"] = cli(stack, "status")  # the command, as an operator runs it
    stored_secrets(stack, c)

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
