"""Hostile input at every inbound route the bridge serves ("Proof").

The routes (``bridge/webhooks.py``, ``bridge/oauth.py``, listed in
``bridge/openapi.py``) and who serves them come from the registries: every
channel of ``channel_adapters.REGISTRY`` (``POST|GET /webhooks/<kind>/<key>``:
an account's deliveries and its handshake; ``POST|GET /webhooks/<kind>/app``
for an app-routed channel), every CRM of ``crm_adapters.REGISTRY``
(``POST /webhooks/crm/<crm>/<key>``, the app-level
``/webhooks/crm/<crm>/route/<key>``, the install handler
``/webhooks/crm/<crm>/install``, ``GET /oauth/<crm>/callback``). How each
provider's requests are proven, and forged, is its test kit's
(``tests/kits``: ``hostile_targets()``, one target per endpoint);
:func:`test_every_inbound_route_has_targets` fails for an adapter, or an
endpoint of one, without a target. Test-only channels
(``tests.kits.EXERCISE_CHANNELS``, registered for this world) carry the
routes no production adapter uses yet — a GET handshake on an account's URL,
the app-routed URL and its own handshake — so they are attacked too.

For every target: forged, missing and malformed proof (signatures, tokens,
verify tokens), a stale timestamp where one is signed, the wrong tenant's or
account's key, a replay, and hostile bodies (too large, wrong media type,
bad UTF-8, JSON nested 100k deep, JSON that is no object, empty, PHP
bracket-notation bombs). A rejection must be a 4xx with a JSON ``{"error",
"message"?}`` (403 when the proof fails), never a 5xx, and must change
nothing: every table's rows, the RQ queues and jobs, and no log line may
carry the payload's text. Bodies a header proves are proven (signed for
real), so the parser behind the check is reached too. Every channel's
account URL answers a forged ``GET`` handshake with 403 (or 405 when it has
none), and its app URL a forged delivery or handshake with 403 (or 404 when
it is not app-routed), without echoing the challenge.

The app is the real one (``create_app``) on a real SQLite database (and
PostgreSQL when ``BRIDGE_TEST_POSTGRES_URL`` is set) and a real Redis; the
world is built once per module (cheap tests: well under 30 s). No request
can leave the process: ``responses`` answers the few calls an install
makes, and anything else is a connection error the test sees.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

import pytest
import redis
import responses
from itsdangerous import URLSafeTimedSerializer
from rq import Queue
from sqlalchemy import func, select

import channel_adapters
import crm_adapters
from bridge import admin, create_app
from bridge.config import Settings
from bridge.jobs import DELIVER_QUEUE, SYNC_QUEUE
from bridge.pipeline.inbound.journal import normalise_pending
from bridge.registry import channel_class, crm_class
from bridge.tables import Base, ChannelAccount, Conversation, CrmRoute, Tenant
from bridge.webhooks import reset_cache, waker
from channel_adapters.base import ChannelAdapter
from tests import kits
from tests.conftest import DATABASES, postgres_schema
from tests.kits.base import (
    MARK,
    PUBLIC_URL,
    CallbackAttack,
    ChannelKit,
    CrmKit,
    HostileTarget,
    Req,
)
from tests.support.harness import build_runtime

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MAX_BODY = 1_000_000  # the default BRIDGE_MAX_BODY

CRMS: list[CrmKit] = kits.crm_kits()
#: the registered channels' kits, then the test-only channels'
CHANNELS: list[ChannelKit] = [*kits.channel_kits(), *kits.exercise_channel_kits()]
KITS: list[ChannelKit | CrmKit] = [*CHANNELS, *CRMS]
#: every target by name
TARGETS: dict[str, type[HostileTarget]] = {
    cls.name: cls for kit in KITS for cls in kit.hostile_targets()
}
#: the endpoints answered by GET (the handshakes); every other one is a POST
HANDSHAKES = ("handshake", "app-handshake")
POSTED = [name for name, cls in TARGETS.items() if cls.endpoint not in HANDSHAKES]
#: targets whose URL carries a key (an account's, a tenant's, a route's)
KEYED = [
    name
    for name, cls in TARGETS.items()
    if cls.endpoint in ("channel", "handshake", "tenant", "route")
]
#: targets a genuine request to which is accepted (a delivery: a row), and
#: a replay of it changes nothing
ACCEPTED = [name for name, cls in TARGETS.items() if cls.endpoint != "install"]
DELIVERED = [name for name in ACCEPTED if TARGETS[name].endpoint not in HANDSHAKES]
INSTALLS = [name for name, cls in TARGETS.items() if cls.endpoint == "install"]
TARGETS_BY_KIND = {kit.kind: kit for kit in CHANNELS}


def channel_adapter_class(kind: str) -> type[ChannelAdapter]:
    """A channel's adapter class, a test-only channel's too."""
    if kind in kits.EXERCISE_CHANNELS:
        module, _, name = kits.EXERCISE_CHANNELS[kind][0].partition(":")
        cls: type[ChannelAdapter] = getattr(importlib.import_module(module), name)
        return cls
    return channel_class(kind)


def overrides(cls: type, hook: str, base: type) -> bool:
    """``cls`` has its own ``hook`` (a classmethod's or a method's function)."""
    mine, theirs = getattr(cls, hook), getattr(base, hook)
    return getattr(mine, "__func__", mine) is not getattr(theirs, "__func__", theirs)


# -- snapshots -------------------------------------------------------------------------------


def table_contents(rt: Any) -> dict[str, list[str]]:
    """Every row of every table (as text, sorted): a rejection changes none."""
    out: dict[str, list[str]] = {}
    with rt.transaction() as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            out[table.name] = sorted(repr(tuple(r)) for r in rows)
    return out


def table_counts(rt: Any) -> dict[str, int]:
    with rt.transaction() as session:
        return {
            table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def queue_state(conn: redis.Redis) -> dict[str, Any]:
    """Every RQ queue's jobs, and how many job hashes exist."""
    queues = {name.decode(): conn.llen(name) for name in conn.scan_iter("rq:queue:*")}
    return {
        "queues": dict(sorted(queues.items())),
        "jobs": sum(1 for _ in conn.scan_iter("rq:job:*")),
        SYNC_QUEUE: list(Queue(SYNC_QUEUE, connection=conn).job_ids),
        DELIVER_QUEUE: list(Queue(DELIVER_QUEUE, connection=conn).job_ids),
    }


def json_error(response: Any) -> dict[str, Any]:
    """The body of a rejection: JSON ``{"error": <code>, "message"?: <text>}``."""
    assert response.mimetype == JSON, (response.status_code, response.data[:200])
    data = response.get_json()
    assert isinstance(data, dict), data
    assert set(data) <= {"error", "message"} and "error" in data, data
    assert isinstance(data["error"], str) and data["error"], data
    if "message" in data:
        assert isinstance(data["message"], str) and data["message"], data
    return data


# -- the world: tenants of every CRM, accounts of every channel ----------------------------


@dataclass
class World:
    rt: Any
    client: Any
    redis: redis.Redis
    #: crm kind -> {"A"|"B": tenant id}
    tenants: dict[str, dict[str, int]]
    #: crm kind -> {"A"|"B": webhook key}
    tenant_keys: dict[str, dict[str, str]]
    #: crm kind -> the conversation uid of tenant A's chat
    conversations: dict[str, str]
    #: channel kind -> {"A"|"B": account key}
    account_keys: dict[str, dict[str, str]]

    def snapshot(self) -> tuple[dict[str, list[str]], dict[str, Any]]:
        # an earlier test's accepted delivery wakes the normaliser from the
        # web process's waker thread, after its answer: let that land first,
        # or its job shows up between this request's two snapshots
        assert waker(self.rt).flush()
        return table_contents(self.rt), queue_state(self.redis)

    def counts(self) -> tuple[dict[str, int], dict[str, Any]]:
        assert waker(self.rt).flush()  # as snapshot()
        return table_counts(self.rt), queue_state(self.redis)


def _channel_target(kit: ChannelKit, world: World) -> HostileTarget:
    (cls,) = [t for t in kit.hostile_targets() if t.endpoint == "channel"]
    return cls(world)


@pytest.fixture(scope="module", params=DATABASES)
def world(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("hostile")
    with ExitStack() as stack:
        registry = stack.enter_context(pytest.MonkeyPatch.context())
        for kind, (adapter, _kit) in kits.EXERCISE_CHANNELS.items():
            registry.setitem(channel_adapters.REGISTRY, kind, adapter)
        if request.param == "sqlite":
            database_url = f"sqlite:///{tmp / 'bridge.db'}"
        else:
            database_url = stack.enter_context(postgres_schema("hostile"))
        settings = Settings.from_env(
            env={
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "BRIDGE_VAR_DIR": str(tmp / "var"),
                "BRIDGE_MAPPINGS_DIR": str(tmp / "mappings"),
                "BRIDGE_PUBLIC_URL": PUBLIC_URL,
                "BRIDGE_HTTP_READ_TIMEOUT": "2",
            }
        )
        assert settings.max_body == MAX_BODY
        apps = {kit.kind: dict(app) for kit in KITS if (app := kit.hostile_app())}
        settings = replace(settings, apps=apps)
        conn = redis.Redis.from_url(redis_url)
        stack.callback(conn.close)
        conn.flushdb()
        rt = stack.enter_context(build_runtime(settings, conn))
        reset_cache()
        stack.callback(reset_cache)
        for kit in CRMS:
            (rt.settings.mappings_dir / f"{kit.kind}.yaml").write_text(
                kit.mapping_text(), encoding="utf-8"
            )
        client = create_app(runtime=rt).test_client()
        w = World(rt, client, conn, {}, {}, {}, {kit.kind: {} for kit in CHANNELS})

        def add_account(kit: ChannelKit, name: str, tenant_id: int) -> str:
            spec = kit.hostile_accounts()[name]
            account_id = admin.add_channel_account(
                rt,
                tenant_id,
                kind=kit.kind,
                credentials=spec.credentials,
                external_id=spec.external_id,
                settings=spec.settings,
            )
            with rt.transaction() as session:
                return str(session.get(ChannelAccount, account_id).key)

        for kit in CRMS:
            w.tenants[kit.kind], w.tenant_keys[kit.kind] = {}, {}
            for name, spec in kit.hostile_tenants().items():
                tenant_id = admin.create_tenant(
                    rt,
                    slug=f"{kit.kind}-{name.lower()}",
                    crm_kind=kit.kind,
                    mapping=f"{kit.kind}.yaml",
                    account_id=spec.account_id,
                    settings=spec.settings,
                    credentials=spec.credentials,
                )
                w.tenants[kit.kind][name] = tenant_id
                with rt.transaction() as session:
                    w.tenant_keys[kit.kind][name] = session.get(Tenant, tenant_id).webhook_key
                    for route in spec.routes:
                        session.add(
                            CrmRoute(crm_kind=kit.kind, route_key=route, tenant_id=tenant_id)
                        )
        # every channel's accounts A and B: tenants A and B of the first CRM
        first = CRMS[0].kind
        for kit in CHANNELS:
            for name in ("A", "B"):
                w.account_keys[kit.kind][name] = add_account(kit, name, w.tenants[first][name])
        # tenant A's chat of every CRM (through account A's proof of the first
        # channel): a conversation CRM replies can reach
        chat = CHANNELS[0]
        for kit in CRMS:
            tenant_a = w.tenants[kit.kind]["A"]
            key = w.account_keys[chat.kind]["A"] if kit.kind == first else None
            key = key or add_account(chat, "A", tenant_a)
            target = _channel_target(chat, w)
            body = target.delivery(uuid.uuid4().hex)
            path = f"/webhooks/{chat.kind}/{key}"
            headers = target.prove(path, body, target.content_type) or {}
            response = Req(path, body, target.content_type, headers).send(client)
            assert response.status_code == 200, response.data
            normalise_pending(rt)  # the journaled delivery, parsed as a worker would
            with rt.transaction() as session:
                conversation = session.scalars(
                    select(Conversation).where(Conversation.tenant_id == tenant_a)
                ).one()
                if kit.hostile_entity_id is not None:  # the entity a CRM reply names
                    conversation.crm_entity_id = kit.hostile_entity_id
                w.conversations[kit.kind] = conversation.uid
        yield w


@pytest.fixture(autouse=True)
def no_network() -> Iterator[responses.RequestsMock]:
    """Nothing leaves the process: an unregistered URL is a ConnectionError."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture(autouse=True)
def payload_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        text = record.getMessage() + (record.exc_text or "")
        assert MARK not in text, f"a log line carries the payload: {record.name}: {text[:300]}"


# -- hostile bodies and the checks of a rejection -----------------------------------------


def _deep_json_arrays(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_json_objects(depth: int = 100_000) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


#: attack -> (body, media type); sent to every target, proven where a header can prove it
BODY_ATTACKS: dict[str, Callable[[], tuple[bytes, str]]] = {
    "invalid-utf8": lambda: (
        b'{"id": 1, "text": "\xff\xfe\xc3\x28 ' + MARK.encode() + b'"}',
        JSON,
    ),
    "invalid-utf8-form": lambda: (b"text=\xff\xfe\xc3\x28&m=" + MARK.encode(), FORM),
    "deep-json-arrays": lambda: (_deep_json_arrays(), JSON),
    "deep-json-objects": lambda: (_deep_json_objects(), JSON),
    "deep-json-under-an-object": lambda: (
        b'{"id": 3, "text": "' + MARK.encode() + b'", "x": ' + _deep_json_arrays() + b"}",
        JSON,
    ),
    "json-array": lambda: (json.dumps([1, 2, MARK]).encode(), JSON),
    "json-empty-array": lambda: (b"[]", JSON),
    "json-string": lambda: (json.dumps(MARK).encode(), JSON),
    "json-number": lambda: (b"12345", JSON),
    "json-null": lambda: (b"null", JSON),
    "json-truncated": lambda: (b'{"text": "' + MARK.encode() + b'", "a": {', JSON),
    "json-nul-bytes": lambda: (b"\x00" * 64, JSON),
    "empty-json": lambda: (b"", JSON),
    "empty-form": lambda: (b"", FORM),
    "form-deep-brackets": lambda: (
        ("a" + "[a]" * 60_000 + "=" + MARK).encode(),
        FORM,
    ),
    "form-deep-list-brackets": lambda: (("a" + "[]" * 100_000 + "=" + MARK).encode(), FORM),
    "form-many-keys": lambda: (
        "&".join(f"k{i}[x]={MARK}" for i in range(20_000)).encode(),
        FORM,
    ),
    "form-many-keys-one-container": lambda: (
        "&".join(f"a[{i}]={MARK}" for i in range(9_999)).encode(),
        FORM,
    ),
    "form-many-list-items": lambda: (
        "&".join(f"a[]={MARK}" for _ in range(9_999)).encode(),
        FORM,
    ),
    "form-unbalanced-brackets": lambda: (("a" + "[" * 100_000 + "=" + MARK).encode(), FORM),
    "form-huge-key": lambda: (("k" * 500_000 + "=" + MARK).encode(), FORM),
    "form-key-conflict": lambda: (f"a=1&a[b]={MARK}".encode(), FORM),
    "form-bad-percent": lambda: (f"a=%zz%&b=%ff%fe&m={MARK}".encode(), FORM),
    "form-no-equals": lambda: (f"{MARK}&&&=&==".encode(), FORM),
}


def _body_cases() -> list[Any]:
    return [
        pytest.param(target, attack, id=f"{target}-{attack}")
        for target in POSTED
        for attack in BODY_ATTACKS
    ]


def _auth_cases() -> list[Any]:
    return [
        pytest.param(name, case, status, id=f"{name}-{case}")
        for name, cls in TARGETS.items()
        for case, status in cls.auth_cases.items()
    ]


def _rejected(world: World, response: Any, statuses: set[int], before: Any) -> dict[str, Any]:
    """A deliberate 4xx (one of ``statuses``) with a JSON error, and nothing changed."""
    assert response.status_code in statuses, (response.status_code, response.data[:300])
    data = json_error(response)
    assert world.snapshot() == before, "a rejected request changed the database or the queues"
    return data


# -- coverage of the registries: every inbound route has targets ----------------------------


def test_every_provider_has_a_kit() -> None:
    assert kits.missing() == []


@pytest.mark.parametrize("kit", CHANNELS, ids=lambda k: k.kind)
def test_every_channel_route_has_targets(kit: ChannelKit) -> None:
    """An account's URL (and its GET handshake when the adapter has one),
    the app-routed URL (and its handshake) when the channel is app-routed."""
    cls = channel_adapter_class(kit.kind)
    endpoints = [t.endpoint for t in kit.hostile_targets()]
    assert endpoints.count("channel") == 1, (kit.kind, endpoints)
    has_handshake = overrides(cls, "handshake", ChannelAdapter)
    assert ("handshake" in endpoints) == has_handshake, (
        f"{kit.kind}: GET /webhooks/{kit.kind}/<key> is "
        + ("a handshake without a target" if has_handshake else "405: no handshake target")
    )
    assert ("app" in endpoints) == cls.app_routed, (kit.kind, "app-routed", cls.app_routed)
    has_app_handshake = cls.app_routed and overrides(cls, "app_handshake", ChannelAdapter)
    assert ("app-handshake" in endpoints) == has_app_handshake, (kit.kind, endpoints)
    for target in kit.hostile_targets():
        assert target.kind == kit.kind, target.name
        assert target.endpoint in ("channel", "handshake", "app", "app-handshake"), target.name
        if target.endpoint not in HANDSHAKES:
            assert set(target.content_types) == set(cls.content_types), target.name
        assert target.auth_cases, f"{target.name}: no attack on its proof"


@pytest.mark.parametrize("kit", CRMS, ids=lambda k: k.kind)
def test_every_crm_route_has_targets(kit: CrmKit) -> None:
    """A tenant's URL; the app-level route URL when its tenants own routes;
    the install handler when the CRM installs by an event."""
    cls = crm_class(kit.kind)
    endpoints = [t.endpoint for t in kit.hostile_targets()]
    assert "tenant" in endpoints, kit.kind
    assert ("install" in endpoints) == cls.has_install_event, (
        f"{kit.kind}: POST /webhooks/crm/{kit.kind}/install is served but not covered"
        if cls.has_install_event
        else f"{kit.kind}: an install target for a CRM that has no install handler"
    )
    routed = any(spec.routes for spec in kit.hostile_tenants().values())
    assert ("route" in endpoints) == routed, (kit.kind, "routes", routed)
    for target in kit.hostile_targets():
        assert target.kind == kit.kind and target.endpoint in ("tenant", "route", "install")
        assert set(target.content_types) == set(cls.content_types), target.name
        assert target.auth_cases, f"{target.name}: no attack on its proof"


def test_every_kind_of_inbound_route_is_attacked() -> None:
    served = {t.endpoint for t in TARGETS.values()}
    want = {"channel", "handshake", "app", "app-handshake", "tenant", "route", "install"}
    assert served == want, sorted(want - served)


def test_the_app_serves_no_other_webhook(world: World) -> None:
    """A new inbound route (in the app or its API description) needs a target here."""
    from bridge.openapi import document

    served = sorted(
        (rule.rule, method)
        for rule in world.client.application.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS") and rule.endpoint != "static"
    )
    assert served == [
        ("/", "GET"),  # a redirect to the demo page, or name, version and health
        ("/api/status", "GET"),  # operator API: bearer token, no body
        # the tenant API (cascades): a tenant's bearer token names the tenant;
        # missing/forged/revoked/another tenant's tokens, bad JSON, wrong
        # types and sizes: tests/unit/test_cascade_api.py
        ("/api/v1/cascades/<uid>", "GET"),
        # a login link for the token's tenant (tests/unit/test_console_crm_login.py)
        ("/api/v1/console/login-link", "POST"),
        # clients: tests/unit/test_identity.py (tokens, another tenant's rows)
        ("/api/v1/contacts/<crm_contact_id>", "GET"),
        ("/api/v1/contacts/<crm_contact_id>/messages", "POST"),
        ("/api/v1/links/<int:link_id>/<any(confirm, dismiss):decision>", "POST"),
        ("/api/v1/merges/<int:merge_id>/undo", "POST"),
        ("/api/v1/messages/cascade", "POST"),
        ("/api/v1/messages/cascade/<batch>", "GET"),
        # the admin console: a signed-in session for every page but the
        # login; CSRF on every POST, an admin for every change, the login's
        # failures counted per account and address (tests/unit/test_console_auth.py)
        ("/console/", "GET"),
        ("/console/<path:_unknown>", "GET"),  # its 404 page
        ("/console/audit", "GET"),
        # connecting channels: the adapter's own schema validates the form, the
        # vendor checks the credentials (tests/unit/test_console_channels.py)
        ("/console/channels", "GET"),
        ("/console/channels/<int:account_id>/disconnect", "GET"),
        ("/console/channels/<int:account_id>/disconnect", "POST"),
        ("/console/channels/<int:account_id>/test", "POST"),
        ("/console/channels/<int:account_id>/webhook", "POST"),
        ("/console/channels/connect/<kind>", "GET"),
        ("/console/channels/connect/<kind>", "POST"),
        ("/console/channels/crm/<crm>/install", "POST"),
        ("/console/channels/crm/reauthorize", "POST"),
        # conversations, traces, replay and reparse: the tenant's rows only
        # (tests/unit/test_console_conversations.py)
        ("/console/conversations", "GET"),
        ("/console/conversations/<int:conversation_id>", "GET"),
        ("/console/conversations/<int:conversation_id>/messages/<int:message_id>", "GET"),
        (
            "/console/conversations/<int:conversation_id>/messages/<int:message_id>/replay",
            "POST",
        ),
        ("/console/conversations/<int:conversation_id>/replay", "POST"),
        ("/console/conversations/journal", "GET"),
        ("/console/conversations/journal/<int:delivery_id>", "GET"),
        ("/console/conversations/journal/<int:delivery_id>/reparse", "POST"),
        # the CRM sends a user: the adapter's checks (a Bitrix24 page's token at the
        # tenant's portal, a HubSpot v3 signature), an admin only, a 404 for an
        # account of no tenant; login links signed, 5 minutes, once
        # (tests/unit/test_console_crm_login.py)
        ("/console/crm/<crm>", "GET"),
        ("/console/crm/<crm>", "POST"),
        ("/console/crm/link/<purpose>", "GET"),
        # the KPIs: a period read by the page's own parser (tests/unit/test_console_kpis.py)
        ("/console/kpis", "GET"),
        ("/console/kpis.csv", "GET"),
        ("/console/login", "GET"),
        ("/console/login", "POST"),
        ("/console/login/totp", "GET"),
        ("/console/login/totp", "POST"),
        ("/console/logout", "POST"),
        # the mapping editor: the loader's own checks, an alias bomb refused
        # (tests/unit/test_console_mapping.py)
        ("/console/mapping", "GET"),
        ("/console/mapping", "POST"),
        ("/console/mapping/dry-run", "POST"),
        ("/console/mapping/validate", "POST"),
        ("/console/overview", "GET"),
        ("/console/static/<path:filename>", "GET"),
        ("/console/users", "GET"),
        ("/console/users", "POST"),
        ("/console/users/<int:user_id>/disable", "POST"),
        ("/console/users/<int:user_id>/enable", "POST"),
        (
            "/files/<uid>/<token>/<path:name>",
            "GET",
        ),  # a kept file: its token (tests/unit/test_files.py)
        ("/healthz", "GET"),
        # Prometheus metrics: no input; bearer BRIDGE_METRICS_TOKEN when set
        # (tests/unit/test_metrics.py)
        ("/metrics", "GET"),
        ("/oauth/<crm>/callback", "GET"),
        ("/oauth/<crm>/install", "GET"),  # only redirects to the CRM
        ("/openapi.json", "GET"),
        ("/readyz", "GET"),
        # a rating link of an e-mail's prompt: signed, 30 days
        # (tests/unit/test_service_runner.py: tampered links get a 400)
        ("/service/rate", "GET"),
        ("/webhooks/<kind>/<key>", "GET"),  # the adapter's handshake (405 where none)
        ("/webhooks/<kind>/<key>", "POST"),
        ("/webhooks/<kind>/app", "GET"),  # app-routed channels only (404 otherwise)
        ("/webhooks/<kind>/app", "POST"),
        ("/webhooks/crm/<crm>/<key>", "POST"),
        # a cascade the CRM's automation starts: the tenant's webhook key, the
        # adapter's checks of the body (tests/unit/test_cascade_crm.py)
        ("/webhooks/crm/<crm>/<key>/cascade", "POST"),
        # one URL for a CRM app's webhooks naming the account in the body:
        # forged, stale, other-URL signatures, junk, other portals
        # (tests/unit/test_crm_app_webhook.py, the isolation suite's crm_app_url)
        ("/webhooks/crm/<crm>/app", "POST"),
        ("/webhooks/crm/<crm>/install", "POST"),
        ("/webhooks/crm/<crm>/route/<route_key>", "POST"),
        # the web chat's own API (its blueprint): every route checks the
        # Origin and the signed visitor token, limits and sizes its input
        # (tests/unit/test_webchat_api.py); the messages it journals go
        # through the generic webhook's checks here (the web chat kit)
        ("/widget/<key>.js", "GET"),  # the script: no input
        ("/widget/<key>/config", "GET"),
        ("/widget/<key>/messages", "GET"),
        ("/widget/<key>/messages", "POST"),
        ("/widget/<key>/read", "POST"),
        ("/widget/<key>/session", "POST"),
        ("/widget/<key>/stream", "GET"),
        ("/widget/<key>/uploads", "POST"),
    ], served
    posts = sorted(p for p, ops in document()["paths"].items() if "post" in ops)
    assert posts == [
        "/api/v1/contacts/{contact}/messages",
        "/api/v1/links/{link}/confirm",
        "/api/v1/links/{link}/dismiss",
        "/api/v1/merges/{merge}/undo",
        "/api/v1/messages/cascade",
        "/webhooks/crm/{crm}/app",
        "/webhooks/crm/{crm}/install",
        "/webhooks/crm/{crm}/route/{route_key}",
        "/webhooks/crm/{crm}/{key}",
        "/webhooks/crm/{crm}/{key}/cascade",
        "/webhooks/{kind}/app",
        "/webhooks/{kind}/{key}",
    ], posts


# -- proof -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target,case,status", _auth_cases())
def test_bad_proof_is_refused_and_changes_nothing(
    world: World, no_network: responses.RequestsMock, target: str, case: str, status: int
) -> None:
    t = TARGETS[target](world)
    far = t.far_side(case, no_network)
    before = world.snapshot()
    response = t.auth_attack(case).send(world.client)
    data = _rejected(world, response, {status}, before)
    if status == 403:
        assert data["error"] == "forbidden", data
    assert MARK not in response.get_data(as_text=True), "the answer repeats the payload"
    if case in t.untouched_cases:
        assert far is None or far.calls == [], "a forged request was checked by calling out"
        assert len(no_network.calls) == 0, "a forged request made the bridge call out"


def _genuine_elsewhere(t: HostileTarget, path: str) -> Req:
    req = t.genuine(uuid.uuid4().hex)
    req.path = path
    if t.method == "POST":
        req.headers = t.prove(req.path, req.body, req.content_type or "") or {}
    return req


@pytest.mark.parametrize("target", KEYED)
def test_an_unknown_key_is_404(world: World, target: str) -> None:
    t = TARGETS[target](world)
    req = _genuine_elsewhere(t, t.unknown_path())
    before = world.snapshot()
    assert _rejected(world, req.send(world.client), {404}, before)["error"] == "not_found"


@pytest.mark.parametrize("target", KEYED)
def test_another_tenants_url_refuses_this_tenants_delivery(world: World, target: str) -> None:
    """Tenant (account) A's genuine request, proven for B's URL (the
    secrets that are app-wide sign it correctly): the request does not
    prove B."""
    t = TARGETS[target](world)
    req = t.genuine(uuid.uuid4().hex, path_of="B")
    before = world.snapshot()
    assert _rejected(world, req.send(world.client), {403}, before)["error"] == "forbidden"


# -- replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ACCEPTED)
def test_a_genuine_request_is_accepted_and_a_replay_changes_nothing(
    world: World, target: str
) -> None:
    t = TARGETS[target](world)
    req = t.genuine(uuid.uuid4().hex)
    counts, queues = world.counts()
    before = world.snapshot()
    first = req.send(world.client)
    assert 200 <= first.status_code < 300, first.data
    if t.method == "GET":  # a handshake: the challenge echoed, nothing stored
        assert first.data == t.answer(req), first.data[:200]
        assert world.snapshot() == before, "a handshake changed the database or the queues"
    else:
        normalise_pending(world.rt)  # a journaled delivery is parsed by a worker
        after_counts, after_queues = world.counts()
        assert after_counts["messages"] == counts["messages"] + 1, "the delivery had no effect"
        assert after_queues["jobs"] >= queues["jobs"]
    after = world.snapshot()
    again = req.send(world.client)  # the very same bytes and headers
    assert 200 <= again.status_code < 300, again.data
    assert again.data == first.data
    normalise_pending(world.rt)
    assert world.snapshot() == after, "the replay had an effect"


@pytest.mark.parametrize("target", INSTALLS)
def test_a_replayed_install_event_is_refused_and_changes_nothing(
    world: World, no_network: responses.RequestsMock, target: str
) -> None:
    """The install endpoint acts once: a captured install event replayed
    carries what the vendor has already redeemed."""
    t = TARGETS[target](world)
    far = t.far_side("genuine", no_network)
    req = t.genuine(uuid.uuid4().hex)
    tenants = table_counts(world.rt)["tenants"]
    first = req.send(world.client)
    assert first.status_code == 200, first.data
    answer = first.get_json()
    assert answer["ok"] is True and answer["created"] is True
    assert table_counts(world.rt)["tenants"] == tenants + 1
    before = world.snapshot()
    again = req.send(world.client)
    assert _rejected(world, again, {403}, before)["error"] == "forbidden"
    assert far is not None and far.calls == list(t.replay_calls)
    with world.rt.transaction() as session:  # leave the world as it was for the next tests
        session.query(Tenant).filter(Tenant.id == answer["tenant"]).delete()


@pytest.mark.parametrize("target", DELIVERED)
def test_nul_characters_in_a_genuine_delivery_are_never_a_5xx(world: World, target: str) -> None:
    """A NUL in a text field (JSON ``\\u0000`` or form ``%00``) is legal input
    that PostgreSQL's text columns refuse: stored without it, or refused
    with a 4xx, never a 500."""
    t = TARGETS[target](world)
    req = t.genuine(uuid.uuid4().hex)
    nul = "\\u0000" if req.content_type == JSON else "%00"
    req.body = req.body.replace(MARK.encode(), f"{nul}{MARK}{nul}".encode())
    req.headers = t.prove(req.path, req.body, req.content_type or "") or {}
    before = world.snapshot()
    response = req.send(world.client)
    assert response.status_code < 500, (response.status_code, response.data[:300])
    if response.status_code >= 400:
        _rejected(world, response, {400, 403}, before)


# -- hostile bodies --------------------------------------------------------------------------


def max_body(t: HostileTarget) -> int:
    """The largest body the target's endpoint takes (a channel may take less)."""
    if t.endpoint in ("channel", "app"):
        return min(channel_adapter_class(t.kind).max_body, MAX_BODY)
    return MAX_BODY


def _expected(t: HostileTarget, body: bytes, media: str, proven: bool) -> set[int]:
    """413 for a body larger than the endpoint takes; 415 for a media type
    it does not take; else 400 when a header proved the body (the parser is
    reached), 400 or 403 when the proof was to be in the body itself."""
    if len(body) > max_body(t):
        return {413}
    if media not in t.content_types:
        return {415}
    return {400} if proven else {400, 403}


@pytest.mark.parametrize("target,attack", _body_cases())
def test_hostile_body_is_a_4xx_and_changes_nothing(world: World, target: str, attack: str) -> None:
    t = TARGETS[target](world)
    body, media = BODY_ATTACKS[attack]()
    path = t.path()
    headers = t.prove(path, body, media)
    req = Req(path, body, media, headers or {})
    before = world.snapshot()
    response = req.send(world.client)
    _rejected(world, response, _expected(t, body, media, headers is not None), before)


@pytest.mark.parametrize("target", POSTED)
@pytest.mark.parametrize(
    "chunked",
    [False, True],
    ids=["content-length", "chunked"],
)
def test_oversized_body_is_413(world: World, target: str, chunked: bool) -> None:
    t = TARGETS[target](world)
    genuine = t.genuine(uuid.uuid4().hex)
    pad = MAX_BODY + 1 - len(genuine.body)
    if t.content_type == JSON:
        data = json.loads(genuine.body)
        data["padding"] = MARK * (pad // len(MARK) + 1)
        body = json.dumps(data).encode()
    else:
        body = genuine.body + b"&padding=" + MARK.encode() * (pad // len(MARK) + 1)
    assert len(body) > MAX_BODY
    headers = t.prove(genuine.path, body, t.content_type) or {}
    req = Req(genuine.path, body, t.content_type, headers, chunked=chunked)
    before = world.snapshot()
    _rejected(world, req.send(world.client), {413}, before)


@pytest.mark.parametrize("target", POSTED)
@pytest.mark.parametrize(
    "media",
    ["text/plain", "application/xml", "multipart/form-data; boundary=x", None],
    ids=["text", "xml", "multipart", "none"],
)
def test_wrong_content_type_is_415(world: World, target: str, media: str | None) -> None:
    """A genuine, proven delivery under a media type the endpoint does not take."""
    req = TARGETS[target](world).genuine(uuid.uuid4().hex)
    req.content_type = media
    before = world.snapshot()
    data = _rejected(world, req.send(world.client), {415}, before)
    assert data["error"] == "unsupported_media_type"


# -- the handshakes and the app URL of every channel -----------------------------------------

#: a forged handshake in the shapes providers use (Meta's hub.*, a plain token)
FORGED_HANDSHAKE = {
    "hub.mode": "subscribe",
    "hub.verify_token": f"forged-{MARK}",
    "hub.challenge": MARK,
    "token": f"forged-{MARK}",
    "challenge": MARK,
}


@pytest.mark.parametrize("kit", CHANNELS, ids=lambda k: k.kind)
def test_a_forged_get_at_an_account_url_is_refused(world: World, kit: ChannelKit) -> None:
    """``GET /webhooks/<kind>/<key>`` is the adapter's handshake: a forged
    verify token is 403 (405 where the channel has no handshake); the
    challenge is never echoed."""
    has_handshake = overrides(channel_adapter_class(kit.kind), "handshake", ChannelAdapter)
    path = f"/webhooks/{kit.kind}/{world.account_keys[kit.kind]['A']}"
    before = world.snapshot()
    response = world.client.get(path, query_string=FORGED_HANDSHAKE)
    data = _rejected(world, response, {403 if has_handshake else 405}, before)
    assert data["error"] == ("forbidden" if has_handshake else "method_not_allowed")
    assert MARK not in response.get_data(as_text=True)


@pytest.mark.parametrize("kind", [*(k.kind for k in CHANNELS), "nosuchchannel"])
def test_a_forged_request_at_the_app_url_is_refused(world: World, kind: str) -> None:
    """``/webhooks/<kind>/app``: for an app-routed channel a forged delivery
    (a wrong signature in every header a provider uses) and a forged
    handshake are 403; for any other channel, or none, the URL is 404."""
    routed = kind in TARGETS_BY_KIND and channel_adapter_class(kind).app_routed
    body = json.dumps({"object": "page", "entry": [{"id": "1", "text": MARK}]}).encode()
    forged = {
        "X-Hub-Signature-256": "sha256=" + "0" * 64,
        "X-Signature": "0" * 40,
        "webhook-signature": "v1,AAAA",
    }
    attempts = [
        Req(f"/webhooks/{kind}/app", body, JSON, forged),
        Req(f"/webhooks/{kind}/app", method="GET", query=dict(FORGED_HANDSHAKE)),
    ]
    for req in attempts:
        before = world.snapshot()
        response = req.send(world.client)
        data = _rejected(world, response, {403 if routed else 404}, before)
        assert data["error"] == ("forbidden" if routed else "not_found"), (req.method, data)
        assert MARK not in response.get_data(as_text=True)


# -- the other CRM endpoints of every registered CRM ----------------------------------------


@pytest.mark.parametrize("crm", [*crm_adapters.REGISTRY, "nosuchcrm"])
def test_route_and_install_urls_without_a_handler_are_404(world: World, crm: str) -> None:
    before = world.snapshot()
    body = json.dumps({"text": MARK}).encode()
    route = Req(f"/webhooks/crm/{crm}/route/{uuid.uuid4().hex}", body, JSON)
    assert _rejected(world, route.send(world.client), {404}, before)["error"] == "not_found"
    if not any(TARGETS[t].kind == crm for t in INSTALLS):
        install = Req(f"/webhooks/crm/{crm}/install", body, JSON)
        assert _rejected(world, install.send(world.client), {404}, before)["error"] == "not_found"
    key = Req(f"/webhooks/crm/{crm}/{uuid.uuid4().hex}", body, JSON)
    assert _rejected(world, key.send(world.client), {404}, before)["error"] == "not_found"


def _other_methods(target: str) -> list[Any]:
    # GET at an account's or the app URL is the handshake (attacked above)
    served_get = TARGETS[target].endpoint in ("channel", "app")
    methods = ["PUT", "DELETE", "PATCH"] if served_get else ["GET", "PUT", "DELETE", "PATCH"]
    return [pytest.param(target, m, id=f"{m}-{target}") for m in methods]


@pytest.mark.parametrize("target,method", [p for t in POSTED for p in _other_methods(t)])
def test_other_methods_are_405(world: World, target: str, method: str) -> None:
    t = TARGETS[target](world)
    before = world.snapshot()
    response = world.client.open(t.path(), method=method, data=t.delivery(uuid.uuid4().hex))
    assert _rejected(world, response, {405}, before)["error"] == "method_not_allowed"


def test_a_key_of_another_crm_or_a_channel_is_404(world: World) -> None:
    before = world.snapshot()
    crms = [kit.kind for kit in CRMS]
    for crm, other in zip(crms, crms[1:] + crms[:1], strict=True):
        key = world.tenant_keys[other]["A"]
        req = Req(f"/webhooks/crm/{crm}/{key}", json.dumps({"t": MARK}).encode(), JSON)
        assert _rejected(world, req.send(world.client), {404}, before)["error"] == "not_found"
    for kit in CHANNELS:
        key = world.account_keys[kit.kind]["A"]
        for path in (f"/webhooks/crm/{crms[0]}/{key}", f"/webhooks/nosuchchannel/{key}"):
            req = Req(path, json.dumps({"t": MARK}).encode(), JSON)
            assert _rejected(world, req.send(world.client), {404}, before)


# -- OAuth callbacks -------------------------------------------------------------------------


def _state(world: World, crm: str, *, key: str | None = None, age: float = 0) -> str:
    """A state as ``bridge.oauth`` signs it (or with another key), ``age`` s old."""
    from bridge import oauth

    serializer = oauth._serializer(world.rt)
    if key is not None:
        serializer = URLSafeTimedSerializer(key, salt="oauth-state")
    if not age:
        return serializer.dumps({"crm": crm, "mapping": f"{crm}.yaml"})
    real = time.time
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "time", lambda: real() - age)
        return serializer.dumps({"crm": crm, "mapping": f"{crm}.yaml"})


CALLBACK_CASES: dict[str, tuple[int, str]] = {
    "forged-state": (403, "invalid_state"),
    "state-signed-with-another-key": (403, "invalid_state"),
    "state-for-another-crm": (403, "invalid_state"),
    "expired-state": (403, "invalid_state"),
    "malformed-state-non-ascii": (403, "invalid_state"),
    "malformed-state-huge": (403, "invalid_state"),
    "missing-state": (400, "invalid_request"),
    "missing-code": (400, "invalid_request"),
    "empty-code-and-state": (400, "invalid_request"),
    "denied": (400, "access_denied"),
}


@pytest.mark.parametrize("crm", list(crm_adapters.REGISTRY))
@pytest.mark.parametrize("case", list(CALLBACK_CASES))
def test_forged_oauth_callback_is_refused_without_calling_anyone(
    world: World, no_network: responses.RequestsMock, crm: str, case: str
) -> None:
    status, error = CALLBACK_CASES[case]
    other = next(c for c in crm_adapters.REGISTRY if c != crm)
    query: dict[str, str] = {
        "forged-state": {"code": MARK, "state": "eyJjcm0iOiJodWJzcG90In0.forged.sig"},
        "state-signed-with-another-key": {"code": MARK, "state": _state(world, crm, key="k")},
        "state-for-another-crm": {"code": MARK, "state": _state(world, other)},
        "expired-state": {"code": MARK, "state": _state(world, crm, age=3600)},
        "malformed-state-non-ascii": {"code": MARK, "state": "состояние\x00" + MARK},
        "malformed-state-huge": {"code": MARK, "state": "A" * 8_000},
        "missing-state": {"code": MARK},
        "missing-code": {"state": _state(world, crm)},
        "empty-code-and-state": {"code": "", "state": ""},
        "denied": {"error": "access_denied", "state": MARK},
    }[case]
    before = world.snapshot()
    response = world.client.get(f"/oauth/{crm}/callback", query_string=query)
    assert _rejected(world, response, {status}, before)["error"] == error
    assert len(no_network.calls) == 0, "a forged callback reached a CRM"


CALLBACK_ATTACKS: list[tuple[CrmKit, CallbackAttack]] = [
    (kit, attack) for kit in CRMS for attack in kit.callback_attacks()
]


@pytest.mark.parametrize(
    "kit,attack", CALLBACK_ATTACKS, ids=[f"{k.kind}-{a.name}" for k, a in CALLBACK_ATTACKS]
)
def test_a_forged_vendor_flow_callback_is_a_4xx(
    world: World, no_network: responses.RequestsMock, kit: CrmKit, attack: CallbackAttack
) -> None:
    """Callbacks the vendor's own flow allows (no state of ours): the
    query is all attacker-chosen, so nothing is sent where it names, and
    the answer is the request's fault (4xx), not a failing CRM's (502)."""
    if attack.arrange is not None:
        attack.arrange(no_network)
    before = world.snapshot()
    response = world.client.get(f"/oauth/{kit.kind}/callback", query_string=dict(attack.query))
    if attack.arrange is None:
        assert len(no_network.calls) == 0, "the client secret was sent to a forged host"
    data = _rejected(world, response, set(attack.statuses), before)
    if attack.error is not None:
        assert data["error"] == attack.error, data
    assert MARK not in response.get_data(as_text=True)
