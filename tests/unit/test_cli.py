# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""The ``bridge`` command line (click's CliRunner on ``bridge.cli.main``) with
the environment pointing at the test database (SQLite and, in CI,
PostgreSQL) and the test Redis. The pipeline's CRM is the in-memory fake of
``tests/support/fakes.py``, whose failures the tests script."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import responses
from click.testing import CliRunner, Result
from cryptography.fernet import Fernet
from rq import Queue
from sqlalchemy import func, select, text

import bridge.runtime
import crm_adapters
from bridge import admin
from bridge.cli import main
from bridge.config import Settings
from bridge.crypto import SecretBindingError
from bridge.errors import PermanentError
from bridge.jobs import SYNC_QUEUE
from bridge.migrate import upgrade
from bridge.model import InboundMessage, MessageKind, SenderProfile, utcnow
from bridge.pipeline.inbound import accept, run_inbound
from bridge.runtime import Runtime, set_runtime
from bridge.tables import ChannelAccount, Conversation, Message, Outbox, Tenant
from tests.support import fakes
from tests.support.harness import HUBSPOT_MAPPING

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "mappings").glob("*.yaml"))
K1, K2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
SECRET_TEXT = "my passport number is 4510 123456"
TOKEN = "pat-na1-11111111-2222-4333-8444-555555555555"
FAKE_MAPPING = """
crm: fake
channels:
  telegram:
    object: deal
    owner: {strategy: round_robin, pool: ["101", "102"]}
"""


def msg(update_id: int, *, user: int, text: str) -> InboundMessage:
    return InboundMessage(
        channel_kind="telegram",
        external_id=str(update_id),
        external_user_id=str(user),
        external_thread_id=str(user),
        kind=MessageKind.TEXT,
        sent_at=utcnow(),
        text=text,
        provider_message_id=str(update_id),
        profile=SenderProfile(first_name="Ivan"),
    )


@dataclass
class Cli:
    env: dict[str, Any]
    redis: redis.Redis
    runtimes: list[Runtime] = field(default_factory=list)

    def run(self, *args: str, input: str | None = None, **env: Any) -> Result:  # noqa: A002
        root = logging.getLogger()
        saved = (list(root.handlers), root.level, logging.getLogger("urllib3").level)
        try:
            return CliRunner().invoke(
                main, list(args), input=input, env={**self.env, **env}, catch_exceptions=True
            )
        finally:
            # the command configured logging for a terminal; give pytest its handlers back
            root.handlers[:], root.level = saved[0], saved[1]
            logging.getLogger("urllib3").setLevel(saved[2])
            current = bridge.runtime._current  # the runtime the command built
            if current is not None:
                current.close()
            set_runtime(None)

    def runtime(self, **env: Any) -> Runtime:
        rt = Runtime(
            Settings.from_env({k: v for k, v in {**self.env, **env}.items() if v is not None}),
            redis_connection=self.redis,
        )
        self.runtimes.append(rt)
        return rt


@pytest.fixture
def cli(
    database_url: str,
    redis_url: str,
    redis_conn: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cli]:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "fake.yaml").write_text(FAKE_MAPPING)
    (mappings / "hub.yaml").write_text(HUBSPOT_MAPPING)
    env: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BRIDGE_VAR_DIR": str(tmp_path / "var"),
        "BRIDGE_MAPPINGS_DIR": str(mappings),
        "BRIDGE_SECRET_KEYS": K1,
        "BRIDGE_PUBLIC_URL": "http://bridge.test",
        "BRIDGE_RETRY_ATTEMPTS": "2",
        "BRIDGE_RETRY_MAX_WAIT": "0.05",
        "BRIDGE_LOCK_TTL": "5",
        # nothing from the developer's shell
        "HUBSPOT_API_BASE": None,
        "TELEGRAM_API_BASE": None,
        "HUBSPOT_CLIENT_ID": None,
        "HUBSPOT_CLIENT_SECRET": None,
        "BRIDGE_CRM_TOKEN": None,
        "TELEGRAM_BOT_TOKEN": None,
    }
    c = Cli(env, redis_conn)
    upgrade(c.runtime().engine)
    yield c
    for rt in c.runtimes:
        rt.close()
    set_runtime(None)


# -- check-config ---------------------------------------------------------------------------------


def test_check_config_passes_the_shipped_mappings(cli: Cli) -> None:
    result = cli.run("check-config", BRIDGE_MAPPINGS_DIR=str(ROOT / "mappings"))
    assert result.exit_code == 0, result.output
    n = len(SHIPPED)
    assert result.stdout.strip() == f"{n} files, {n} ok, 0 with errors"
    explicit = cli.run("check-config", *map(str, SHIPPED))
    assert explicit.exit_code == 0 and explicit.stderr == ""


BROKEN = {
    "unknown-key.yaml": (
        "crm: hubspot\nchannels:\n  telegram:\n    {pipeline: p, stage: s, colour: red}\n",
        "channels.telegram.colour: unknown key: remove it or check its spelling",
    ),
    "bad-owner.yaml": (
        "crm: hubspot\nchannels:\n  telegram:\n    owner: {strategy: random}\n"
        "    pipeline: p\n    stage: s\n",
        "channels.telegram.owner.strategy: must be one of fixed, round_robin, sticky "
        "(got 'random')",
    ),
    "placeholder.yaml": (
        "crm: hubspot\nchannels:\n  telegram:\n    name: 'Deal for {contact.age}'\n"
        "    pipeline: p\n    stage: s\n",
        "channels.telegram.name: unknown placeholder {contact.age}; use one of ",
    ),
    "unknown-crm.yaml": (
        "crm: salesforce\nchannels:\n  telegram: {}\n",
        "crm: unknown CRM 'salesforce'; use one of hubspot",
    ),
    "no-such-object.yaml": (
        "crm: hubspot\nchannels:\n  telegram:\n    object: lead\n",
        "channels.telegram.object: HubSpot has no 'lead'; use one of deal, ticket or none",
    ),
}


def _write_broken(directory: Path) -> dict[str, Path]:
    paths = {}
    for name, (content, _) in BROKEN.items():
        paths[name] = directory / name
        paths[name].write_text(content)
    return paths


def test_check_config_names_file_key_and_fix(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    paths = _write_broken(broken)
    good = ROOT / "mappings" / "demo-hubspot.yaml"
    result = cli.run("check-config", str(good), *map(str, paths.values()))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    for name, (_, expected) in BROKEN.items():
        assert any(line.startswith(f"{paths[name]}: {expected}") for line in lines), (name, lines)
    assert len(lines) == len(BROKEN)  # one line per problem, nothing about the good file
    assert str(good) not in result.stderr
    assert result.stdout.strip() == f"{len(BROKEN) + 1} files, 1 ok, {len(BROKEN)} with errors"


def test_check_config_without_arguments_checks_the_mappings_directory(
    cli: Cli, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    _write_broken(broken)
    result = cli.run("check-config", BRIDGE_MAPPINGS_DIR=str(broken))
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == len(BROKEN)


# -- status and replay ------------------------------------------------------------


def _tenant(rt: Runtime, slug: str = "acme") -> tuple[int, int]:
    tenant_id = admin.create_tenant(rt, slug=slug, crm_kind="fake", mapping="fake.yaml")
    account_id = admin.add_channel_account(
        rt,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="1",
    )
    return tenant_id, account_id


def _conversation(rt: Runtime, account_id: int, thread: str) -> int:
    with rt.transaction() as s:
        return s.scalar(
            select(Conversation.id).where(
                Conversation.channel_account_id == account_id,
                Conversation.external_thread_id == thread,
            )
        )


def _failed_conversations(cli: Cli) -> tuple[Runtime, int, list[int]]:
    """Two conversations, each parked behind a failed message."""
    rt = cli.runtime()
    tenant_id, account = _tenant(rt)
    accept(rt, account, [msg(1, user=7, text=SECRET_TEXT), msg(2, user=8, text=SECRET_TEXT)])
    conversations = [_conversation(rt, account, "7"), _conversation(rt, account, "8")]
    fakes.STATE.fail_next(
        "append_entries", PermanentError("HubSpot VALIDATION_ERROR: bad property"), times=2
    )
    for conversation in conversations:
        assert run_inbound(rt, conversation) == "parked"
    cli.redis.flushdb()
    return rt, tenant_id, conversations


def _statuses(rt: Runtime) -> dict[int, str]:
    with rt.transaction() as s:
        return dict(s.execute(select(Message.conversation_id, Message.status)).all())


def test_status_shows_parked_and_failed_with_reasons_but_no_message_text(cli: Cli) -> None:
    rt, tenant_id, conversations = _failed_conversations(cli)
    with rt.transaction() as s:
        uids = dict(s.execute(select(Message.conversation_id, Message.uid)).all())
    result = cli.run("status")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "tenant acme [fake]: active" in out
    assert "inbound (customer -> CRM): failed 2" in out
    for conversation in conversations:
        assert (
            f"PARKED conversation {conversation} (in): message failed: HubSpot VALIDATION_ERROR"
            in out
        )
        assert (
            f"FAILED in message {uids[conversation]} (conversation {conversation}, seq 1, "
            "1 attempts): HubSpot VALIDATION_ERROR: bad property"
        ) in out
    assert "bridge replay" in out
    # no part of the text either ("4510" alone can be in a message's UUID)
    assert SECRET_TEXT not in result.output and "passport" not in result.output
    assert "4510 123456" not in result.output
    data = json.loads(cli.run("status", "--json").stdout)
    assert [t["slug"] for t in data["tenants"]] == ["acme"]
    assert sorted(p["conversation"] for p in data["parked"]) == sorted(conversations)
    assert SECRET_TEXT not in json.dumps(data)


def test_status_shows_a_tenant_waiting_for_reauthorisation(cli: Cli) -> None:
    rt = cli.runtime()
    tenant_id, _ = _tenant(rt)
    _tenant(rt, "other")
    with rt.transaction() as s:
        tenant = s.get(Tenant, tenant_id)
        tenant.status, tenant.status_reason = (
            "needs_reauth",
            "token refresh refused: BAD_REFRESH_TOKEN",
        )
    result = cli.run("status", "--tenant", "acme")
    assert result.exit_code == 0
    assert (
        "tenant acme [fake]: needs_reauth (token refresh refused: BAD_REFRESH_TOKEN)"
        in result.stdout
    )
    assert "other" not in result.stdout
    missing = cli.run("status", "--tenant", "nosuch")
    assert missing.exit_code == 1 and "no tenant 'nosuch'" in missing.stderr


def test_replay_needs_a_scope(cli: Cli) -> None:
    result = cli.run("replay")
    assert result.exit_code == 2 and "--message, --conversation or --all" in result.stderr


def test_replay_one_message_requeues_it_and_resumes_its_conversation(cli: Cli) -> None:
    rt, _, (first, second) = _failed_conversations(cli)
    with rt.transaction() as s:
        uid = s.scalar(select(Message.uid).where(Message.conversation_id == first))
    result = cli.run("replay", "--message", uid)
    assert result.exit_code == 0 and "requeued 1 message(s)" in result.stdout
    # tried before, so it may be in the CRM already: the next attempt looks first
    assert _statuses(rt) == {first: "in_flight", second: "failed"}
    with rt.transaction() as s:
        states = dict(s.execute(select(Outbox.conversation_id, Outbox.state)).all())
        job = s.scalar(select(Outbox.last_job_id).where(Outbox.conversation_id == first))
    assert states == {first: "pending", second: "parked"}
    assert Queue(SYNC_QUEUE, connection=cli.redis).job_ids == [job]
    assert run_inbound(rt, first) == "idle"
    assert _statuses(rt) == {first: "synced", second: "failed"}
    assert [e["text"] for e in fakes.STATE.entries] == [SECRET_TEXT]


def test_replay_a_conversation(cli: Cli) -> None:
    rt, _, (first, second) = _failed_conversations(cli)
    result = cli.run("replay", "--conversation", str(second))
    assert result.exit_code == 0 and "requeued 1 message(s)" in result.stdout
    assert _statuses(rt) == {first: "failed", second: "in_flight"}  # looked up first
    assert run_inbound(rt, second) == "idle"
    assert _statuses(rt)[second] == "synced"


def test_replay_all_and_per_tenant(cli: Cli) -> None:
    rt, _, conversations = _failed_conversations(cli)
    other = cli.run("replay", "--all", "--tenant", "nosuch")
    assert other.exit_code == 1
    assert set(_statuses(rt).values()) == {"failed"}
    _tenant(rt, "quiet")
    assert "requeued 0 message(s)" in cli.run("replay", "--all", "--tenant", "quiet").stdout
    result = cli.run("replay", "--all", "--tenant", "acme")
    assert result.exit_code == 0 and "requeued 2 message(s)" in result.stdout
    assert len(Queue(SYNC_QUEUE, connection=cli.redis).job_ids) == 2
    for conversation in conversations:
        assert run_inbound(rt, conversation) == "idle"
    assert set(_statuses(rt).values()) == {"synced"}
    assert "requeued 0 message(s)" in cli.run("replay", "--all").stdout


# -- tenants and keys ------------------------------------------------------------


def _raw(rt: Runtime, table: str) -> list[str]:
    with rt.engine.connect() as conn:
        return [r[0] for r in conn.execute(text(f"SELECT credentials FROM {table} ORDER BY id"))]  # noqa: S608


@pytest.mark.parametrize("via", ["option", "environment"])
def test_tenant_create_stores_the_token_encrypted(cli: Cli, via: str) -> None:
    args = [
        "tenant",
        "create",
        "--slug",
        "acme",
        "--crm",
        "hubspot",
        "--mapping",
        "hub.yaml",
        "--account-id",
        "62515",
    ]
    result = (
        cli.run(*args, "--token", TOKEN)
        if via == "option"
        else cli.run(*args, BRIDGE_CRM_TOKEN=TOKEN)
    )
    assert result.exit_code == 0, result.output
    rt = cli.runtime()
    with rt.transaction() as s:
        tenant = s.scalars(select(Tenant)).one()
        creds = rt.decrypt_tenant_credentials(tenant)
    assert f"tenant acme created (id {tenant.id})" in result.stdout
    assert (tenant.slug, tenant.crm_kind, tenant.crm_account_id, tenant.mapping) == (
        "acme",
        "hubspot",
        "62515",
        "hub.yaml",
    )
    assert creds == {"type": "private_app", "access_token": TOKEN}
    (raw,) = _raw(rt, "tenants")
    assert TOKEN not in raw
    assert TOKEN not in result.output


@pytest.mark.parametrize(
    "args,code,fragment",
    [
        # --crm is a choice among the registered CRMs: a usage error
        (["--crm", "salesforce", "--mapping", "hub.yaml"], 2, "'salesforce' is not one of"),
        (["--crm", "hubspot", "--mapping", "nope.yaml"], 1, "nope.yaml: mapping file not found"),
    ],
)
def test_tenant_create_refuses_an_unknown_crm_or_mapping(
    cli: Cli, args: list[str], code: int, fragment: str
) -> None:
    result = cli.run("tenant", "create", "--slug", "acme", *args, "--token", TOKEN)
    assert result.exit_code == code
    assert fragment in result.stderr and "Traceback" not in result.output
    rt = cli.runtime()
    with rt.transaction() as s:
        assert s.scalars(select(Tenant)).all() == []


def test_tenant_create_takes_a_bitrix24_incoming_webhook_url(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "mappings" / "b24.yaml").write_text(
        (ROOT / "mappings" / "bitrix24.yaml").read_text().replace("inbox: true", "inbox: false")
    )
    url = "https://acme.bitrix24.ru/rest/1/8g9l071eismy9q2l/"
    args = ["tenant", "create", "--slug", "acme", "--crm", "bitrix24", "--mapping", "b24.yaml"]
    bad = cli.run(*args, "--token", "https://acme.bitrix24.ru/crm/deal/")
    assert bad.exit_code == 1 and "/rest/<user>/<code>/" in bad.stderr
    plain = cli.run(*args, "--token", url.replace("https", "http"))
    assert plain.exit_code == 1 and "HTTPS" in plain.stderr
    result = cli.run(*args, "--token", url)
    assert result.exit_code == 0, result.output
    rt = cli.runtime()
    with rt.transaction() as s:
        (tenant,) = s.scalars(select(Tenant)).all()
        assert tenant.crm_account_id == "acme.bitrix24.ru"
        assert rt.decrypt_tenant_credentials(tenant) == {"type": "webhook", "url": url}
    assert "8g9l071eismy9q2l" not in _raw(rt, "tenants")[0] and url not in result.output


def test_tenant_create_without_a_token_says_where_to_give_it(cli: Cli) -> None:
    args = ["tenant", "create", "--slug", "acme", "--crm", "hubspot", "--mapping", "hub.yaml"]
    result = cli.run(*args)
    assert result.exit_code == 2
    assert "BRIDGE_CRM_TOKEN=... in the environment, or --ask-token" in result.stderr
    asked = cli.run(*args, "--ask-token", input=f"{TOKEN}\n")
    assert asked.exit_code == 0, asked.output
    assert TOKEN not in asked.output
    rt = cli.runtime()
    with rt.transaction() as s:
        (tenant,) = s.scalars(select(Tenant)).all()
        assert rt.decrypt_tenant_credentials(tenant)["access_token"] == TOKEN


def test_tenant_create_refuses_a_taken_slug(cli: Cli) -> None:
    args = ["tenant", "create", "--slug", "acme", "--crm", "hubspot", "--mapping", "hub.yaml"]
    assert cli.run(*args, "--token", TOKEN).exit_code == 0
    again = cli.run(*args, "--token", "pat-na1-other")
    assert again.exit_code == 1 and "tenant 'acme' exists already" in again.stderr
    rt = cli.runtime()
    with rt.transaction() as s:
        (tenant,) = s.scalars(select(Tenant)).all()
        assert rt.decrypt_tenant_credentials(tenant)["access_token"] == TOKEN


def test_keys_generate_prints_a_fernet_key(cli: Cli) -> None:
    result = cli.run("keys", "generate")
    assert result.exit_code == 0
    Fernet(result.stdout.strip().encode())


def test_keys_rotate_reencrypts_everything_and_the_old_key_can_go(cli: Cli) -> None:
    assert (
        cli.run(
            "tenant",
            "create",
            "--slug",
            "acme",
            "--crm",
            "hubspot",
            "--mapping",
            "hub.yaml",
            "--token",
            TOKEN,
        ).exit_code
        == 0
    )
    rt = cli.runtime()
    with rt.transaction() as s:
        tenant_id = s.scalar(select(Tenant.id))
    bot = {"bot_token": "123456:AAEbot-token", "secret_token": "webhook-secret"}
    admin.add_channel_account(rt, tenant_id, kind="telegram", credentials=bot)
    before = _raw(rt, "tenants") + _raw(rt, "channel_accounts")

    result = cli.run("keys", "rotate", BRIDGE_SECRET_KEYS=f"{K2},{K1}")
    assert result.exit_code == 0, result.output
    assert "re-encrypted 2 secret(s)" in result.stdout
    after = _raw(rt, "tenants") + _raw(rt, "channel_accounts")
    assert all(a != b for a, b in zip(after, before, strict=True))

    # K1 dropped: everything still reads with K2 alone ...
    new = cli.runtime(BRIDGE_SECRET_KEYS=K2)
    with new.transaction() as s:
        assert new.decrypt_tenant_credentials(s.get(Tenant, tenant_id))["access_token"] == TOKEN
        assert new.decrypt_channel_credentials(s.scalars(select(ChannelAccount)).one()) == bot
    # ... and nothing reads with K1 any more
    old = cli.runtime(BRIDGE_SECRET_KEYS=K1)
    with old.transaction() as s:
        with pytest.raises(SecretBindingError):
            old.decrypt_tenant_credentials(s.get(Tenant, tenant_id))
        with pytest.raises(SecretBindingError):
            old.decrypt_channel_credentials(s.scalars(select(ChannelAccount)).one())
    # the CLI itself works with the new key alone
    assert cli.run("status", BRIDGE_SECRET_KEYS=K2).exit_code == 0


# -- lifecycle: tenant list | show | disable | enable | delete, <channel> list | disconnect -------


def _telegram_api(rsps: responses.RequestsMock, method: str) -> None:
    rsps.add(
        responses.POST,
        f"https://api.telegram.org/bot1:x/{method}",
        json={"ok": True, "result": True, "description": "Webhook was deleted"},
    )


def test_tenant_list_and_show_name_what_other_commands_take(cli: Cli) -> None:
    rt = cli.runtime()
    tenant_id, account = _tenant(rt)
    listed = cli.run("tenant", "list")
    assert listed.exit_code == 0
    assert f"{tenant_id}\tacme\tfake\t-\tactive\t1\tfake.yaml" in listed.stdout
    shown = cli.run("tenant", "show", "acme")
    assert shown.exit_code == 0
    assert f"channel account {account}: telegram" in shown.stdout
    assert "webhooks/telegram/<key>" in shown.stdout and "webhooks/crm/fake/<key>" in shown.stdout
    with rt.transaction() as s:
        key = s.get(ChannelAccount, account).key
        tenant_key = s.get(Tenant, tenant_id).webhook_key
    assert key not in shown.stdout and tenant_key not in shown.stdout
    revealed = cli.run("tenant", "show", "acme", "--reveal")
    assert f"webhooks/telegram/{key}" in revealed.stdout
    assert f"webhooks/crm/fake/{tenant_key}" in revealed.stdout
    channels = cli.run("telegram", "list")
    assert channels.exit_code == 0 and f"{account}\tacme\t" in channels.stdout


def test_tenant_api_token_is_shown_once_and_names_its_tenant(cli: Cli) -> None:
    from bridge.apitokens import tenant_of

    rt = cli.runtime()
    tenant_id, _ = _tenant(rt)
    made = cli.run("tenant", "api-token", "acme", "--name", "cascades")
    assert made.exit_code == 0
    token = made.stdout.strip()
    assert token.startswith("brt_") and tenant_of(rt, f"Bearer {token}") == tenant_id
    with rt.engine.connect() as conn:
        stored = [str(v) for row in conn.execute(text("SELECT * FROM api_tokens")) for v in row]
    assert stored and not any(token in v for v in stored)  # only its digest is kept
    assert cli.run("tenant", "api-token", "nobody").exit_code == 1


def test_a_disabled_tenant_keeps_what_arrives_and_enable_resumes_it(cli: Cli) -> None:
    rt = cli.runtime()
    _, account = _tenant(rt)
    assert cli.run("tenant", "disable", "acme").exit_code == 0
    accept(rt, account, [msg(1, user=7, text="hello")])
    conversation = _conversation(rt, account, "7")
    assert run_inbound(rt, conversation) == "parked"
    assert fakes.STATE.entries == []
    assert "tenant acme [fake]: disabled (disabled by an admin)" in cli.run("status").stdout
    cli.redis.flushdb()
    enabled = cli.run("tenant", "enable", "acme")
    assert enabled.exit_code == 0 and "1 conversation(s) resumed" in enabled.stdout
    assert len(Queue(SYNC_QUEUE, connection=cli.redis).job_ids) == 1
    assert run_inbound(rt, conversation) == "idle"
    assert [e["text"] for e in fakes.STATE.entries] == ["hello"]


@responses.activate
def test_disconnect_stops_the_webhook_forgets_the_token_and_keeps_history(cli: Cli) -> None:
    rt = cli.runtime()
    _, account = _tenant(rt)
    accept(rt, account, [msg(1, user=7, text="hello")])
    _telegram_api(responses.mock, "deleteWebhook")
    with rt.transaction() as s:
        key = s.get(ChannelAccount, account).key
    result = cli.run("telegram", "disconnect", "--account", str(account))
    assert result.exit_code == 0, result.output
    assert [c.request.url.rsplit("/", 1)[1] for c in responses.calls] == ["deleteWebhook"]
    with rt.transaction() as s:
        row = s.get(ChannelAccount, account)
        assert (row.status, row.credentials) == ("disconnected", None)
        assert s.scalar(select(func.count()).select_from(Message)) == 1
    from bridge import create_app

    answer = create_app(runtime=rt).test_client().post(f"/webhooks/telegram/{key}", json={})
    assert answer.status_code == 404
    again = cli.run("telegram", "disconnect", "--account", str(account))
    assert again.exit_code == 1 and "is disconnected" in again.stderr


@responses.activate
def test_tenant_delete_removes_every_row_of_that_tenant_only(cli: Cli) -> None:
    rt = cli.runtime()
    _, account = _tenant(rt, "acme")
    _, other = _tenant(rt, "other")
    accept(rt, account, [msg(1, user=7, text="a")])
    accept(rt, other, [msg(2, user=8, text="b")])
    _telegram_api(responses.mock, "deleteWebhook")
    refused = cli.run("tenant", "delete", "acme", input="n\n")
    assert refused.exit_code == 1
    result = cli.run("tenant", "delete", "acme", "--yes")
    assert result.exit_code == 0 and "tenant acme deleted (1 messages)" in result.stdout
    with rt.transaction() as s:
        assert s.scalars(select(Tenant.slug)).all() == ["other"]
        assert s.scalars(select(Message.text)).all() == ["b"]
        assert s.scalars(select(ChannelAccount.id)).all() == [other]


@responses.activate
def test_a_failed_connect_leaves_no_account_and_a_bot_connects_once(cli: Cli) -> None:
    rt = cli.runtime()
    admin.create_tenant(rt, slug="acme", crm_kind="fake", mapping="fake.yaml")
    hook = "https://api.telegram.org/bot77:secret/setWebhook"
    responses.post(
        hook, status=401, json={"ok": False, "error_code": 401, "description": "Unauthorized"}
    )
    failed = cli.run("telegram", "connect", "--tenant", "acme", TELEGRAM_BOT_TOKEN="77:secret")
    assert failed.exit_code == 1 and "Unauthorized" in failed.stderr
    assert "Traceback" not in failed.output and "77:secret" not in failed.output
    with rt.transaction() as s:
        assert s.scalars(select(ChannelAccount)).all() == []
    responses.replace(responses.POST, hook, json={"ok": True, "result": True})
    done = cli.run("telegram", "connect", "--tenant", "acme", TELEGRAM_BOT_TOKEN="77:secret")
    assert done.exit_code == 0, done.output
    again = cli.run("telegram", "connect", "--tenant", "acme", TELEGRAM_BOT_TOKEN="77:secret")
    assert again.exit_code == 1
    assert "this Telegram account is connected already (channel account" in again.stderr
    with rt.transaction() as s:
        (account,) = s.scalars(select(ChannelAccount)).all()
        assert not account.awaiting_crm_setup  # the setup covered it


@responses.activate
def test_connect_names_the_webhook_url_with_its_key_masked(cli: Cli) -> None:
    """Where the account receives: a webhook account's URL (an e-mail
    account's is what the admin's mail system posts to) with its path key
    masked, as every listing shows it (a secret), and the command that
    shows the key; an account the worker polls (e-mail with --imap-host)
    has none."""
    rt = cli.runtime()
    admin.create_tenant(rt, slug="acme", crm_kind="fake", mapping="fake.yaml")
    responses.post(
        "https://api.telegram.org/bot77:secret/setWebhook", json={"ok": True, "result": True}
    )
    bot = cli.run("telegram", "connect", "--tenant", "acme", TELEGRAM_BOT_TOKEN="77:secret")
    mailbox = cli.run(
        "email", "connect", "--tenant", "acme", "--address", "support@acme.test",
        "--smtp-host", "smtp.acme.test",
    )  # fmt: skip
    polled = cli.run(
        "email", "connect", "--tenant", "acme", "--address", "sales@acme.test",
        "--imap-host", "imap.acme.test", "--user", "sales@acme.test",
        "--password-env", "SALES_MAIL_PASSWORD", SALES_MAIL_PASSWORD="mail-password",
    )  # fmt: skip
    assert (bot.exit_code, mailbox.exit_code, polled.exit_code) == (0, 0, 0), polled.output
    with rt.transaction() as s:
        accounts = {a.external_id: (a.id, a.key) for a in s.scalars(select(ChannelAccount))}
    hint = "(the key: bridge tenant show acme --reveal)"
    bot_id, bot_key = accounts["77"]
    assert bot.stdout.splitlines() == [
        f"Telegram connected as channel account {bot_id}; webhook registered",
        f"webhook URL: http://bridge.test/webhooks/telegram/<key> {hint}",
    ]
    mail_id, mail_key = accounts["support@acme.test"]
    assert mailbox.stdout.splitlines() == [
        f"E-mail connected as channel account {mail_id}; webhook registered",
        f"webhook URL: http://bridge.test/webhooks/email/<key> {hint}",
    ]
    assert polled.stdout.splitlines() == [
        f"E-mail connected as channel account {accounts['sales@acme.test'][0]}; polling: a "
        "running `bridge worker` fetches its messages (no public URL needed)"
    ]
    for _, key in accounts.values():
        assert key not in bot.output + mailbox.output + polled.output
    revealed = cli.run("tenant", "show", "acme", "--reveal")
    assert f"http://bridge.test/webhooks/telegram/{bot_key}" in revealed.stdout
    assert f"http://bridge.test/webhooks/email/{mail_key}" in revealed.stdout
