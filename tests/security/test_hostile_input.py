# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Hostile input at every webhook endpoint the bridge serves ("Proof").

The endpoints (``bridge/webhooks.py``, ``bridge/oauth.py``, listed in
``bridge/openapi.py``) are derived from the registries: every channel in
``channel_adapters.REGISTRY`` (``POST /webhooks/<kind>/<key>``), every CRM in
``crm_adapters.REGISTRY`` (``POST /webhooks/crm/<crm>/<key>``, the app-level
``/webhooks/crm/<crm>/route/<key>``, the install handler
``/webhooks/crm/<crm>/install``, ``GET /oauth/<crm>/callback``). Each
adapter's way of proving a request is described once below (a
:class:`Target`); an adapter without one fails
:func:`test_every_registered_adapter_has_hostile_input_targets`.

For every target: forged, missing and malformed proof, a stale timestamp
(HubSpot), the wrong tenant's key, a replay, and hostile bodies (too large,
wrong media type, bad UTF-8, JSON nested 100k deep, JSON that is no object,
empty, PHP bracket-notation bombs). A rejection must be a 4xx with a JSON
``{"error", "message"?}`` (403 when the proof fails), never a 5xx, and must
change nothing: every table's rows, the RQ queues and jobs, and no log line
may carry the payload's text. Bodies a header proves are proven (signed for
real), so the parser behind the check is reached too.

The app is the real one (``create_app``) on a real SQLite database (and
PostgreSQL when ``BRIDGE_TEST_POSTGRES_URL`` is set) and a real Redis; the
world is built once per module (cheap tests: well under 30 s). No request
can leave the process: ``responses`` answers the few calls an install
makes, and anything else is a connection error the test sees.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

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
from bridge.registry import crm_class
from bridge.tables import Base, ChannelAccount, Conversation, CrmRoute, Tenant
from bridge.webhooks import reset_cache
from crm_adapters.base import CrmAdapter
from tests.conftest import DATABASES, ROOT, postgres_schema
from tests.support.harness import (
    CLIENT_SECRET,
    PORTAL_A,
    PORTAL_B,
    build_runtime,
    hubspot_app,
    reply_payload,
    tg_update,
)

#: text every hostile body carries: it must never reach a log line
MARK = "hostile-payload-7c1e"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
PUBLIC_URL = "http://bridge.test"
MAX_BODY = 1_000_000  # the default BRIDGE_MAX_BODY

TG_SECRET_A = "tg-secret-A_0123456789abcdef"
TG_SECRET_B = "tg-secret-B_fedcba9876543210"
TG_HEADER = "X-Telegram-Bot-Api-Secret-Token"

AMO_CHANNEL_ID = "chan-1"
AMO_CHANNEL_SECRET = "amo-channel-secret-1"
AMO_A = {"id": "30100", "sub": "acme", "amojo": "5d1c0b6e-0a4d-4c1e-9d3b-2a6f8e9b0c11"}
AMO_B = {"id": "30200", "sub": "other", "amojo": "7e2d1c0b-1b5e-4d2f-8e4c-3b7f9a0c1d22"}
AMO_LEAD = "900"

B24_APP = {
    "client_id": "local.56017020f07e17.98523769",
    "client_secret": "app-secret-1",
    "auth_base": "https://oauth.bitrix.info",
}
B24_A = {
    "member": "a223c6b3710f85df22e9377d6c4f7553",
    "token": "51856fefc120afa4b628cc82d3935cce",
    "domain": "acme.bitrix24.com",
}
B24_B = {
    "member": "b334d7c4821096e033f0488e7d5a8664",
    "token": "62967f0fd231b0fb5739dd93a4046ddf",
    "domain": "other.bitrix24.com",
}
B24_CONNECTOR = "crm_bridge_telegram"
#: the portal a genuine install event comes from (a third one: no tenant yet)
B24_NEW = {
    "member": "c445e8d5932107f144015990e8f6b9775",
    "token": "73a78010e342c10c68400ee04b5157e0",
    "domain": "fresh.bitrix24.com",
}
B24_TOKEN_URL = "https://oauth.bitrix.info/oauth/token/"
FORGED_MEMBER = "f0rged00000000000000000000000000"

APPS: dict[str, dict[str, str]] = {
    "hubspot": hubspot_app(),
    "amocrm": {
        "client_id": "amo-client-1",
        "client_secret": "amo-client-secret-1",
        "channel_id": AMO_CHANNEL_ID,
        "channel_secret": AMO_CHANNEL_SECRET,
    },
    "bitrix24": dict(B24_APP),
}


# -- requests and snapshots ----------------------------------------------------------------


@dataclass
class Req:
    path: str
    body: bytes
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False

    def send(self, client: Any) -> Any:
        if self.chunked:
            # no Content-Length: the body is read until the stream ends
            # (gunicorn's chunked requests); the cap must still hold
            return client.post(
                self.path,
                input_stream=io.BytesIO(self.body),
                headers={**self.headers, "Transfer-Encoding": "chunked"},
                content_type=self.content_type,
                environ_overrides={"wsgi.input_terminated": True},
            )
        return client.post(
            self.path, data=self.body, headers=self.headers, content_type=self.content_type
        )


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


# -- the world: tenants of every CRM, a channel account each ---------------------------------


@dataclass
class World:
    rt: Any
    client: Any
    redis: redis.Redis
    #: crm kind -> {"A"|"B": tenant id}
    tenants: dict[str, dict[str, int]]
    #: crm kind -> {"A"|"B": webhook key}
    tenant_keys: dict[str, dict[str, str]]
    #: crm kind -> the conversation uid of tenant A's Telegram chat
    conversations: dict[str, str]
    #: channel kind -> {"A"|"B": account key}
    account_keys: dict[str, dict[str, str]]

    def snapshot(self) -> tuple[dict[str, list[str]], dict[str, Any]]:
        return table_contents(self.rt), queue_state(self.redis)

    def counts(self) -> tuple[dict[str, int], dict[str, Any]]:
        return table_counts(self.rt), queue_state(self.redis)


@dataclass(frozen=True)
class TenantSpec:
    account_id: str
    settings: dict[str, Any]
    credentials: dict[str, Any]


#: per CRM: tenants A and B (each with its own proof, and its own route keys)
TENANTS: dict[str, dict[str, TenantSpec]] = {
    "hubspot": {
        "A": TenantSpec(
            str(PORTAL_A), {}, {"type": "private_app", "access_token": "pat-na1-unused-a"}
        ),
        "B": TenantSpec(
            str(PORTAL_B), {}, {"type": "private_app", "access_token": "pat-na1-unused-b"}
        ),
    },
    "amocrm": {
        name: TenantSpec(
            spec["id"],
            {
                "subdomain": spec["sub"],
                "amo_account_id": spec["id"],
                "amojo_id": spec["amojo"],
                "scope_id": f"{AMO_CHANNEL_ID}_{spec['amojo']}",
            },
            {"type": "long_lived", "access_token": f"amo-token-{name}"},
        )
        for name, spec in (("A", AMO_A), ("B", AMO_B))
    },
    "bitrix24": {
        name: TenantSpec(
            spec["member"],
            {
                "member_id": spec["member"],
                "domain": spec["domain"],
                "line": "1",
                "connectors": {"telegram": B24_CONNECTOR},
            },
            {
                "type": "oauth",
                "access_token": f"b24-access-{name}",
                "refresh_token": f"b24-refresh-{name}",
                "expires_at": 1_900_000_000,
                "client_endpoint": f"https://{spec['domain']}/rest/",
                "server_endpoint": "https://oauth.bitrix.info/rest/",
                "member_id": spec["member"],
                "application_token": spec["token"],
            },
        )
        for name, spec in (("A", B24_A), ("B", B24_B))
    },
}


def _route_keys(crm: str, settings: dict[str, Any]) -> list[str]:
    """The app-level route keys a tenant owns (what ``setup()`` registers)."""
    return [str(settings["scope_id"])] if crm == "amocrm" else []


@pytest.fixture(scope="module", params=DATABASES)
def world(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("hostile")
    with ExitStack() as stack:
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
        settings = replace(settings, apps=APPS)
        conn = redis.Redis.from_url(redis_url)
        stack.callback(conn.close)
        conn.flushdb()
        rt = stack.enter_context(build_runtime(settings, conn))
        reset_cache()
        stack.callback(reset_cache)
        for crm in crm_adapters.REGISTRY:
            shutil.copy(ROOT / "mappings" / f"{crm}.yaml", rt.settings.mappings_dir)
        app = create_app(runtime=rt)
        client = app.test_client()
        tenants: dict[str, dict[str, int]] = {}
        keys: dict[str, dict[str, str]] = {}
        conversations: dict[str, str] = {}
        channel_keys: dict[str, dict[str, str]] = {kind: {} for kind in CHANNEL_TARGETS}
        for crm, specs in TENANTS.items():
            tenants[crm], keys[crm] = {}, {}
            for name, spec in specs.items():
                tenant_id = admin.create_tenant(
                    rt,
                    slug=f"{crm}-{name.lower()}",
                    crm_kind=crm,
                    mapping=f"{crm}.yaml",
                    account_id=spec.account_id,
                    settings=spec.settings,
                    credentials=spec.credentials,
                )
                tenants[crm][name] = tenant_id
                with rt.transaction() as session:
                    keys[crm][name] = session.get(Tenant, tenant_id).webhook_key
                    for route in _route_keys(crm, spec.settings):
                        session.add(CrmRoute(crm_kind=crm, route_key=route, tenant_id=tenant_id))
            # tenant A's Telegram chat: a conversation CRM replies can reach
            secret = TG_SECRET_A if crm == "hubspot" else f"tg-secret-{crm}"
            account_id = admin.add_channel_account(
                rt,
                tenants[crm]["A"],
                kind="telegram",
                credentials={"bot_token": "123456:unused", "secret_token": secret},
                external_id="123456",
            )
            with rt.transaction() as session:
                account_key = session.get(ChannelAccount, account_id).key
            response = client.post(
                f"/webhooks/telegram/{account_key}",
                data=json.dumps(tg_update(1, chat_id=5001, text="hello")),
                headers={TG_HEADER: secret},
                content_type=JSON,
            )
            assert response.status_code == 200, response.data
            with rt.transaction() as session:
                conversation = session.scalars(
                    select(Conversation).where(Conversation.tenant_id == tenants[crm]["A"])
                ).one()
                conversation.crm_entity_id = AMO_LEAD  # the lead notes-mode replies name
                conversations[crm] = conversation.uid
            if crm == "hubspot":
                channel_keys["telegram"]["A"] = account_key
        # Telegram account B (another tenant's bot, another secret)
        account_b = admin.add_channel_account(
            rt,
            tenants["hubspot"]["B"],
            kind="telegram",
            credentials={"bot_token": "654321:unused", "secret_token": TG_SECRET_B},
            external_id="654321",
        )
        with rt.transaction() as session:
            channel_keys["telegram"]["B"] = session.get(ChannelAccount, account_b).key
        yield World(rt, client, conn, tenants, keys, conversations, channel_keys)


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


# -- targets: one per way a webhook is proven -------------------------------------------------


class Target:
    """One webhook endpoint and how a genuine request to it is proven."""

    name: ClassVar[str]
    kind: ClassVar[str]  # the adapter's registry slug
    #: which route serves it: channel, tenant (a CRM tenant's key), route
    #: (an app-level route key), install (one URL for every account)
    endpoint: ClassVar[str]
    content_type: ClassVar[str]  # what the provider posts
    content_types: ClassVar[tuple[str, ...]]  # what the endpoint accepts
    #: proof attack -> the status it must get
    auth_cases: ClassVar[dict[str, int]]

    def __init__(self, world: World) -> None:
        self.world = world

    # where
    def path(self, tenant: str = "A") -> str:
        raise NotImplementedError

    def unknown_path(self) -> str:
        return self.path().rsplit("/", 1)[0] + "/" + uuid.uuid4().hex

    # what
    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        """A genuine delivery for ``tenant`` with an effect (a row, a job)."""
        raise NotImplementedError

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict | None:
        """Headers that make the request genuine; ``None`` when the proof
        can only travel in the body (nothing to add)."""
        raise NotImplementedError

    def genuine(self, uid: str, tenant: str = "A", path_of: str | None = None) -> Req:
        path = self.path(path_of or tenant)
        body = self.delivery(uid, tenant)
        headers = self.prove(path, body, self.content_type, tenant) or {}
        return Req(path, body, self.content_type, headers)

    def auth_attack(self, case: str) -> Req:
        raise NotImplementedError


def _uid_digits(uid: str) -> str:
    return str(int(uid[:12], 16))


class TelegramTarget(Target):
    name = "telegram"
    kind = "telegram"
    endpoint = "channel"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = {
        "forged": 403,
        "missing": 403,
        "empty": 403,
        "malformed-prefix": 403,
        "malformed-longer": 403,
        "malformed-non-ascii": 403,
        "malformed-huge": 403,
        "other-accounts-secret": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/telegram/{self.world.account_keys['telegram'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        update = tg_update(int(_uid_digits(uid)), chat_id=7001, text=f"{MARK} hello")
        return json.dumps(update).encode()

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return {TG_HEADER: TG_SECRET_A if tenant == "A" else TG_SECRET_B}

    def auth_attack(self, case: str) -> Req:
        secret = {
            "forged": "not-the-secret-token-at-all",
            "missing": None,
            "empty": "",
            "malformed-prefix": TG_SECRET_A[:-1],
            "malformed-longer": TG_SECRET_A + "x",
            "malformed-non-ascii": "sécret-ключ".encode().decode("latin-1"),
            "malformed-huge": "A" * 10_240,
            "other-accounts-secret": TG_SECRET_B,
        }[case]
        headers = {} if secret is None else {TG_HEADER: secret}
        return Req(self.path(), self.delivery(uuid.uuid4().hex), JSON, headers)


class HubSpotTarget(Target):
    name = "hubspot"
    kind = "hubspot"
    endpoint = "tenant"
    content_type = JSON
    content_types = (JSON,)
    auth_cases = {
        "forged": 403,
        "missing-signature": 403,
        "missing-timestamp": 403,
        "missing-both": 403,
        "malformed-not-base64": 403,
        "malformed-short": 403,
        "malformed-huge": 403,
        "malformed-non-ascii": 403,
        "malformed-timestamp": 403,
        "negative-timestamp": 403,
        "stale": 403,
        "future": 403,
        "body-swapped": 403,
        "signed-for-another-url": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/crm/hubspot/{self.world.tenant_keys['hubspot'][tenant]}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        payload = reply_payload(
            portal_id=PORTAL_A if tenant == "A" else PORTAL_B,
            thread_uid=self.world.conversations["hubspot"],
            message_id=f"hs-{uid}",
            text=f"{MARK} from the rep",
        )
        return json.dumps(payload).encode()

    @staticmethod
    def sign(
        path: str, body: bytes, *, secret: str = CLIENT_SECRET, now_ms: int | None = None
    ) -> dict[str, str]:
        """HubSpot's v3 signature over the raw bytes (FACTS 3.6; the sandbox's
        signer takes text, and hostile bodies need not be UTF-8)."""
        timestamp = str(int(time.time() * 1000) if now_ms is None else now_ms)
        message = b"POST" + f"{PUBLIC_URL}{path}".encode() + body + timestamp.encode()
        digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
        return {
            "X-HubSpot-Signature-v3": base64.b64encode(digest).decode("ascii"),
            "X-HubSpot-Request-Timestamp": timestamp,
        }

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict:
        return self.sign(path, body)

    def auth_attack(self, case: str) -> Req:
        path, body = self.path(), self.delivery(uuid.uuid4().hex)
        good = self.sign(path, body)
        sig, ts = "X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"
        now_ms = int(time.time() * 1000)
        headers = {
            "forged": lambda: self.sign(path, body, secret="not-the-client-secret"),
            "missing-signature": lambda: {ts: good[ts]},
            "missing-timestamp": lambda: {sig: good[sig]},
            "missing-both": lambda: {},
            "malformed-not-base64": lambda: {**good, sig: "%%%% not base64 %%%%"},
            "malformed-short": lambda: {**good, sig: good[sig][:22]},
            "malformed-huge": lambda: {**good, sig: "A" * 10_240},
            "malformed-non-ascii": lambda: {**good, sig: "сигнатура".encode().decode("latin-1")},
            "malformed-timestamp": lambda: {**good, ts: "1e12"},
            "negative-timestamp": lambda: {**good, ts: "-1"},
            "stale": lambda: self.sign(path, body, now_ms=now_ms - 301_000),
            "future": lambda: self.sign(path, body, now_ms=now_ms + 301_000),
            "body-swapped": lambda: self.sign(path, self.delivery(uuid.uuid4().hex)),
            "signed-for-another-url": lambda: self.sign(self.path("B"), body),
        }[case]()
        return Req(path, body, JSON, headers)


def _amo_signature(body: bytes, secret: str = AMO_CHANNEL_SECRET) -> str:
    # FACTS 1.13: hex HMAC-SHA1(channel secret, raw body), made here independently
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


class AmoAccountTarget(Target):
    """amoCRM's account webhooks: form-encoded, unsigned; the tenant's URL
    key is the secret and the body must name the tenant's account. JSON at
    the same URL is a chat hook: it must carry ``X-Signature``."""

    name = "amocrm-account"
    kind = "amocrm"
    endpoint = "tenant"
    content_type = FORM
    content_types = (FORM, JSON)
    auth_cases = {
        "forged-account-id": 403,
        "missing-account": 403,
        "missing-account-id": 403,
        "malformed-account-id-container": 403,
        "malformed-account-scalar": 403,
        "malformed-account-id-empty": 403,
        "right-subdomain-wrong-id": 403,
        "json-unsigned": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/crm/amocrm/{self.world.tenant_keys['amocrm'][tenant]}"

    @staticmethod
    def fields(uid: str, account: dict[str, str] | None = None) -> dict[str, str]:
        account = AMO_A if account is None else account
        return {
            "leads[note][0][note][id]": _uid_digits(uid),
            "leads[note][0][note][text]": f"@client {MARK} it ships tomorrow",
            "leads[note][0][note][note_type]": "4",
            "leads[note][0][note][element_id]": AMO_LEAD,
            "leads[note][0][note][element_type]": "2",
            "leads[note][0][note][created_by]": "101",
            "leads[note][0][note][date_create]": "1740820530",
            "account[subdomain]": account["sub"],
            "account[id]": account["id"],
        }

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return urlencode(self.fields(uid, AMO_A if tenant == "A" else AMO_B)).encode()

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict | None:
        if content_type == JSON:
            return {"X-Signature": _amo_signature(body)}
        return None  # unsigned: the account in the body is the proof

    def auth_attack(self, case: str) -> Req:
        fields = self.fields(uuid.uuid4().hex)
        without = {k: v for k, v in fields.items() if not k.startswith("account[")}
        if case == "json-unsigned":
            body = json.dumps({"account_id": AMO_A["amojo"], "text": MARK}).encode()
            return Req(self.path(), body, JSON)
        form = {
            "forged-account-id": {**fields, "account[id]": AMO_B["id"]},
            "missing-account": without,
            "missing-account-id": {**without, "account[subdomain]": AMO_A["sub"]},
            "malformed-account-id-container": {
                **without,
                "account[subdomain]": AMO_A["sub"],
                "account[id][0]": AMO_A["id"],
            },
            "malformed-account-scalar": {**without, "account": AMO_A["id"]},
            "malformed-account-id-empty": {**fields, "account[id]": ""},
            "right-subdomain-wrong-id": {
                **without,
                "account[subdomain]": AMO_A["sub"],
                "account[id]": "0",
            },
        }[case]
        return Req(self.path(), urlencode(form).encode(), FORM)


class AmoChatTarget(Target):
    """amoCRM's chat channel hook at the app-level route URL: JSON,
    ``X-Signature`` = hex HMAC-SHA1 with the channel secret (app-wide, so the
    body's amojo account must be the tenant's too)."""

    name = "amocrm-chat"
    kind = "amocrm"
    endpoint = "route"
    content_type = JSON
    content_types = (FORM, JSON)
    auth_cases = {
        "forged": 403,
        "missing": 403,
        "empty": 403,
        "malformed-not-hex": 403,
        "malformed-short": 403,
        "malformed-huge": 403,
        "malformed-non-ascii": 403,
        "body-swapped": 403,
        "another-account-validly-signed": 403,
        "unsigned-form-at-route": 403,
    }

    def path(self, tenant: str = "A") -> str:
        amojo = (AMO_A if tenant == "A" else AMO_B)["amojo"]
        return f"/webhooks/crm/amocrm/route/{AMO_CHANNEL_ID}_{amojo}"

    def unknown_path(self) -> str:
        return f"/webhooks/crm/amocrm/route/{AMO_CHANNEL_ID}_{uuid.uuid4()}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        payload = {
            "account_id": (AMO_A if tenant == "A" else AMO_B)["amojo"],
            "time": 1740820600,
            "message": {
                "receiver": {"id": "amojo-client-1", "client_id": "tg-user-1"},
                "sender": {"id": "amojo-manager-1", "name": "Manager"},
                "conversation": {
                    "id": "amojo-conv-1",
                    "client_id": self.world.conversations["amocrm"],
                },
                "timestamp": 1740820600,
                "msec_timestamp": 1740820600123,
                "message": {"id": f"amojo-{uid}", "type": "text", "text": f"{MARK} reply"},
            },
        }
        return json.dumps(payload).encode()

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict | None:
        if content_type == JSON:
            return {"X-Signature": _amo_signature(body)}
        return None

    def auth_attack(self, case: str) -> Req:
        path, body = self.path(), self.delivery(uuid.uuid4().hex)
        good = _amo_signature(body)
        if case == "unsigned-form-at-route":
            form = AmoAccountTarget.fields(uuid.uuid4().hex)
            return Req(path, urlencode(form).encode(), FORM)
        if case == "another-account-validly-signed":
            body = self.delivery(uuid.uuid4().hex, tenant="B")  # B's account, A's route
            return Req(path, body, JSON, {"X-Signature": _amo_signature(body)})
        signature = {
            "forged": _amo_signature(body, "not-the-channel-secret"),
            "missing": None,
            "empty": "",
            "malformed-not-hex": "zz" * 20,
            "malformed-short": good[:20],
            "malformed-huge": "a" * 10_240,
            "malformed-non-ascii": "подпись".encode().decode("latin-1"),
            "body-swapped": _amo_signature(self.delivery(uuid.uuid4().hex)),
        }[case]
        headers = {} if signature is None else {"X-Signature": signature}
        return Req(path, body, JSON, headers)


def _php_form(payload: dict[str, Any]) -> bytes:
    """PHP ``http_build_query`` of nested dicts (what Bitrix24 posts)."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), item)
        else:
            pairs.append((prefix, str(value)))

    walk("", payload)
    return urlencode(pairs).encode()


class Bitrix24EventsTarget(Target):
    """Bitrix24 events at the tenant's URL: form-encoded (JSON accepted);
    ``auth[application_token]`` from the install is the only proof."""

    name = "bitrix24-events"
    kind = "bitrix24"
    endpoint = "tenant"
    content_type = FORM
    content_types = (FORM, JSON)
    auth_cases = {
        "forged-token": 403,
        "missing-token": 403,
        "missing-auth": 403,
        "malformed-token-container": 403,
        "malformed-token-empty": 403,
        "malformed-token-huge": 403,
        "malformed-token-non-ascii": 403,
        "malformed-auth-scalar": 403,
        "another-portals-member-id": 403,
        "json-forged-token": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/crm/bitrix24/{self.world.tenant_keys['bitrix24'][tenant]}"

    def event(self, uid: str, auth: Any) -> dict[str, Any]:
        return {
            "event": "ONIMCONNECTORMESSAGEADD",
            "data": {
                "CONNECTOR": B24_CONNECTOR,
                "LINE": "1",
                "MESSAGES": {
                    "0": {
                        "im": {"chat_id": "123", "message_id": _uid_digits(uid)},
                        "message": {"text": f"{MARK} operator reply", "user_id": "1"},
                        "chat": {"id": self.world.conversations["bitrix24"]},
                    }
                },
            },
            "ts": "1740820600",
            "auth": auth,
        }

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        spec = B24_A if tenant == "A" else B24_B
        auth = {"application_token": spec["token"], "member_id": spec["member"]}
        return _php_form(self.event(uid, auth))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> None:
        return None  # the token travels in the body

    def auth_attack(self, case: str) -> Req:
        uid = uuid.uuid4().hex
        member = B24_A["member"]
        if case == "json-forged-token":
            event = self.event(uid, {"application_token": "0" * 32, "member_id": member})
            return Req(self.path(), json.dumps(event).encode(), JSON)
        auth: Any = {
            "forged-token": {"application_token": "f" * 32, "member_id": member},
            "missing-token": {"member_id": member},
            "missing-auth": None,
            "malformed-token-container": {"application_token": {"0": B24_A["token"]}},
            "malformed-token-empty": {"application_token": "", "member_id": member},
            "malformed-token-huge": {"application_token": "a" * 10_240},
            "malformed-token-non-ascii": {"application_token": "токен" + B24_A["token"][5:]},
            "malformed-auth-scalar": B24_A["token"],
            "another-portals-member-id": {
                "application_token": B24_A["token"],
                "member_id": B24_B["member"],
            },
        }[case]
        event = self.event(uid, auth)
        if auth is None:
            del event["auth"]
        return Req(self.path(), _php_form(event), FORM)


class Bitrix24InstallTarget(Target):
    """Bitrix24's ONAPPINSTALL at the one install URL: nothing is signed;
    the event's endpoint must be the portal's own Bitrix24 host, its token
    must work there for our app, and the OAuth server must confirm the
    portal by redeeming the event's (single-use) refresh token."""

    name = "bitrix24-install"
    kind = "bitrix24"
    endpoint = "install"
    content_type = FORM
    content_types = (FORM, JSON)
    auth_cases = {
        "forged-endpoint": 403,
        "forged-endpoint-lookalike": 403,
        "endpoint-not-https": 403,
        "endpoint-other-portal": 403,
        "endpoint-not-a-url": 403,
        "forged-token": 403,
        "another-apps-token": 403,
        "forged-member-id": 403,
        "refresh-token-refused": 403,
        "missing-auth": 400,
        "missing-application-token": 400,
        "malformed-auth-scalar": 400,
    }

    def path(self, tenant: str = "A") -> str:
        return "/webhooks/crm/bitrix24/install"

    def unknown_path(self) -> str:  # one URL for every portal: no key to get wrong
        raise NotImplementedError

    def event(self, uid: str, **auth: Any) -> dict[str, Any]:
        spec = B24_NEW
        return {
            "event": "ONAPPINSTALL",
            "data": {"VERSION": "1", "LANGUAGE_ID": "en"},
            "ts": "1740820600",
            "auth": {
                "access_token": f"access-{uid}",
                "expires": "1740824200",
                "expires_in": "3600",
                "scope": "crm,imopenlines,imconnector",
                "domain": spec["domain"],
                "server_endpoint": "https://oauth.bitrix.info/rest/",
                "status": "L",
                "client_endpoint": f"https://{spec['domain']}/rest/",
                "member_id": spec["member"],
                "user_id": "1",
                "refresh_token": f"refresh-{uid}",
                "application_token": spec["token"],
                **auth,
            },
        }

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return _php_form(self.event(uid))

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> None:
        return None

    def auth_attack(self, case: str) -> Req:
        uid = uuid.uuid4().hex
        if case == "malformed-auth-scalar":
            event: dict[str, Any] = {**self.event(uid), "auth": "x"}
        elif case.startswith("missing-"):
            event = self.event(uid)
            if case == "missing-auth":
                del event["auth"]
            else:
                del event["auth"]["application_token"]
        else:
            event = self.event(
                uid,
                **{
                    "forged-endpoint": {"client_endpoint": "https://evil.example/rest/"},
                    "forged-endpoint-lookalike": {
                        "client_endpoint": "https://fresh.bitrix24.attacker.example/rest/",
                        "domain": "fresh.bitrix24.attacker.example",
                    },
                    "endpoint-not-https": {"client_endpoint": f"http://{B24_NEW['domain']}/rest/"},
                    "endpoint-other-portal": {
                        "client_endpoint": f"https://{B24_A['domain']}/rest/"
                    },
                    "endpoint-not-a-url": {"client_endpoint": "\x00not a url"},
                }.get(case, {}),
            )
        return Req(self.path(), _php_form(event), FORM)


#: every channel kind -> how its webhook is proven
CHANNEL_TARGETS: dict[str, list[type[Target]]] = {"telegram": [TelegramTarget]}
#: every CRM kind -> its webhook endpoints (tenant URL, route URL, install)
CRM_TARGETS: dict[str, list[type[Target]]] = {
    "hubspot": [HubSpotTarget],
    "amocrm": [AmoAccountTarget, AmoChatTarget],
    "bitrix24": [Bitrix24EventsTarget, Bitrix24InstallTarget],
}
TARGETS: dict[str, type[Target]] = {
    cls.name: cls for group in (CHANNEL_TARGETS, CRM_TARGETS) for classes in group.values()
    for cls in classes
}  # fmt: skip
KEYED = [name for name, cls in TARGETS.items() if cls.endpoint != "install"]


# -- the install's far side: the portal's app.info and the OAuth server ---------------------


@dataclass
class B24Install:
    """``app.info`` at the new portal and the OAuth server: refresh tokens
    are single use, as at Bitrix24 (a redeemed one is ``invalid_grant``)."""

    app_code: str = B24_APP["client_id"]
    member: str = B24_NEW["member"]
    refuse_token: bool = False
    refuse_refresh: bool = False
    redeemed: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def install(self, rsps: responses.RequestsMock) -> B24Install:
        rsps.add_callback(
            responses.POST,
            f"https://{B24_NEW['domain']}/rest/app.info",
            callback=self._app_info,
        )
        rsps.add_callback(responses.GET, B24_TOKEN_URL, callback=self._token)
        return self

    def _app_info(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls.append("app.info")
        if self.refuse_token:
            error = {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
            return 401, {"Content-Type": JSON}, json.dumps(error)
        info = {"ID": "7", "CODE": self.app_code, "VERSION": "1", "STATUS": "L"}
        info |= {"INSTALLED": True, "PAYMENT_EXPIRED": "N", "LICENSE": "en_project"}
        return 200, {"Content-Type": JSON}, json.dumps({"result": info})

    def _token(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls.append("token")
        query = dict(parse_qsl(urlsplit(request.url).query))
        refresh = query.get("refresh_token", "")
        if self.refuse_refresh or refresh in self.redeemed:
            error = {"error": "invalid_grant", "error_description": "Invalid refresh token"}
            return 400, {"Content-Type": JSON}, json.dumps(error)
        self.redeemed.add(refresh)
        body = {
            "access_token": f"fresh-{refresh}",
            "refresh_token": f"fresh-{refresh}-r",
            "expires_in": 3600,
            "member_id": self.member,
            "client_endpoint": f"https://{B24_NEW['domain']}/rest/",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "domain": "oauth.bitrix.info",
            "scope": "crm,imopenlines,imconnector",
            "status": "L",
        }
        return 200, {"Content-Type": JSON}, json.dumps(body)


def _install_side(case: str, rsps: responses.RequestsMock) -> B24Install:
    far = B24Install(
        refuse_token=case == "forged-token",
        app_code="someone.elses.app" if case == "another-apps-token" else B24_APP["client_id"],
        member=FORGED_MEMBER if case == "forged-member-id" else B24_NEW["member"],
        refuse_refresh=case == "refresh-token-refused",
    )
    return far.install(rsps)


# -- hostile bodies --------------------------------------------------------------------------


def _deep_json_arrays(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_json_objects(depth: int = 100_000) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


#: attack -> (body, media type); sent to every target, proven where a header can prove it
BODY_ATTACKS: dict[str, Callable[[], tuple[bytes, str]]] = {
    "invalid-utf8": lambda: (
        b'{"update_id": 1, "text": "\xff\xfe\xc3\x28 ' + MARK.encode() + b'"}',
        JSON,
    ),
    "invalid-utf8-form": lambda: (b"text=\xff\xfe\xc3\x28&m=" + MARK.encode(), FORM),
    "deep-json-arrays": lambda: (_deep_json_arrays(), JSON),
    "deep-json-objects": lambda: (_deep_json_objects(), JSON),
    "deep-json-under-an-object": lambda: (
        b'{"update_id": 3, "text": "' + MARK.encode() + b'", "x": ' + _deep_json_arrays() + b"}",
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
        for target in TARGETS
        for attack in BODY_ATTACKS
    ]


def _auth_cases() -> list[Any]:
    return [
        pytest.param(name, case, status, id=f"{name}-{case}")
        for name, cls in TARGETS.items()
        for case, status in cls.auth_cases.items()
    ]


#: failures whose fix is in bridge/ (proposed to the lead engineer, not applied here):
#: strict xfails, so the fix turns them into passes that must lose the marker
def _rejected(world: World, response: Any, statuses: set[int], before: Any) -> dict[str, Any]:
    """A deliberate 4xx (one of ``statuses``) with a JSON error, and nothing changed."""
    assert response.status_code in statuses, (response.status_code, response.data[:300])
    data = json_error(response)
    assert world.snapshot() == before, "a rejected request changed the database or the queues"
    return data


# -- coverage of the registries --------------------------------------------------------------


def test_every_registered_adapter_has_hostile_input_targets() -> None:
    missing_channels = sorted(set(channel_adapters.REGISTRY) - set(CHANNEL_TARGETS))
    assert not missing_channels, (
        f"channel adapter(s) {missing_channels} are not covered by the hostile-input tests: "
        "add a Target (how its webhook is proven) to CHANNEL_TARGETS"
    )
    for kind, classes in CHANNEL_TARGETS.items():
        assert [c.endpoint for c in classes] == ["channel"] and classes[0].kind == kind
    missing_crms = sorted(set(crm_adapters.REGISTRY) - set(CRM_TARGETS))
    assert not missing_crms, (
        f"CRM adapter(s) {missing_crms} are not covered by the hostile-input tests: "
        "add Targets to CRM_TARGETS and tenants to TENANTS"
    )
    assert set(TENANTS) == set(crm_adapters.REGISTRY)
    for crm in crm_adapters.REGISTRY:
        overrides_install = (
            crm_class(crm).install_event.__func__  # type: ignore[attr-defined]
            is not CrmAdapter.install_event.__func__  # type: ignore[attr-defined]
        )
        has_install = any(t.endpoint == "install" for t in CRM_TARGETS[crm])
        assert overrides_install == has_install, (
            f"{crm}: POST /webhooks/crm/{crm}/install is served but not covered"
            if overrides_install
            else f"{crm}: an install target for a CRM that has no install handler"
        )
        assert any(t.endpoint == "tenant" for t in CRM_TARGETS[crm]), crm
        for cls in CRM_TARGETS[crm]:
            assert cls.kind == crm and cls.endpoint in ("tenant", "route", "install")
            assert set(cls.content_types) == set(crm_class(crm).content_types), cls.name


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
        ("/healthz", "GET"),
        ("/oauth/<crm>/callback", "GET"),
        ("/oauth/<crm>/install", "GET"),  # only redirects to the CRM
        ("/openapi.json", "GET"),
        ("/readyz", "GET"),
        ("/webhooks/<kind>/<key>", "GET"),  # the adapter's handshake (405 where none)
        ("/webhooks/<kind>/<key>", "POST"),
        ("/webhooks/<kind>/app", "GET"),  # app-routed channels only (404 otherwise)
        ("/webhooks/<kind>/app", "POST"),
        ("/webhooks/crm/<crm>/<key>", "POST"),
        ("/webhooks/crm/<crm>/install", "POST"),
        ("/webhooks/crm/<crm>/route/<route_key>", "POST"),
    ], served
    posts = sorted(p for p, ops in document()["paths"].items() if "post" in ops)
    assert posts == [
        "/webhooks/crm/{crm}/install",
        "/webhooks/crm/{crm}/route/{route_key}",
        "/webhooks/crm/{crm}/{key}",
        "/webhooks/{kind}/app",
        "/webhooks/{kind}/{key}",
    ], posts


# -- proof -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target,case,status", _auth_cases())
def test_bad_proof_is_refused_and_changes_nothing(
    world: World, no_network: responses.RequestsMock, target: str, case: str, status: int
) -> None:
    t = TARGETS[target](world)
    far = _install_side(case, no_network) if target == "bitrix24-install" else None
    before = world.snapshot()
    response = t.auth_attack(case).send(world.client)
    data = _rejected(world, response, {status}, before)
    if status == 403:
        assert data["error"] == "forbidden", data
    if far is not None and case.startswith(("forged-endpoint", "endpoint-")):
        assert far.calls == [] and len(no_network.calls) == 0, "a forged endpoint was called"


@pytest.mark.parametrize("target", KEYED)
def test_an_unknown_key_is_404(world: World, target: str) -> None:
    t = TARGETS[target](world)
    req = t.genuine(uuid.uuid4().hex)
    req.path = t.unknown_path()
    req.headers = t.prove(req.path, req.body, req.content_type or "") or {}
    before = world.snapshot()
    assert _rejected(world, req.send(world.client), {404}, before)["error"] == "not_found"


@pytest.mark.parametrize("target", KEYED)
def test_another_tenants_url_refuses_this_tenants_delivery(world: World, target: str) -> None:
    """Tenant A's genuine delivery, proven for tenant B's URL (the secrets
    that are app-wide sign it correctly): the body does not prove B."""
    t = TARGETS[target](world)
    req = t.genuine(uuid.uuid4().hex, path_of="B")
    before = world.snapshot()
    assert _rejected(world, req.send(world.client), {403}, before)["error"] == "forbidden"


# -- replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", KEYED)
def test_a_replayed_delivery_is_acknowledged_and_changes_nothing(world: World, target: str) -> None:
    req = TARGETS[target](world).genuine(uuid.uuid4().hex)
    counts, queues = world.counts()
    first = req.send(world.client)
    assert 200 <= first.status_code < 300, first.data
    after_counts, after_queues = world.counts()
    assert after_counts["messages"] == counts["messages"] + 1, "the delivery had no effect"
    assert after_queues["jobs"] >= queues["jobs"]
    after = world.snapshot()
    again = req.send(world.client)  # the very same bytes and headers
    assert 200 <= again.status_code < 300, again.data
    assert again.get_json() == first.get_json()
    assert world.snapshot() == after, "the replay had an effect"


def test_a_replayed_install_event_is_refused_and_changes_nothing(
    world: World, no_network: responses.RequestsMock
) -> None:
    """The install endpoint acts once: a captured ONAPPINSTALL replayed
    carries a refresh token the OAuth server has already redeemed."""
    far = B24Install().install(no_network)
    t = Bitrix24InstallTarget(world)
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
    assert far.calls == ["app.info", "token", "app.info", "token"]
    with world.rt.transaction() as session:  # leave the world as it was for the next tests
        session.query(Tenant).filter(Tenant.id == answer["tenant"]).delete()


@pytest.mark.parametrize("target", KEYED)
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


def _expected(t: Target, media: str, proven: bool) -> set[int]:
    """415 for a media type the endpoint does not take; else 400 when a
    header proved the body (the parser is reached), 400 or 403 when the
    proof was to be in the body itself."""
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
    _rejected(world, response, _expected(t, media, headers is not None), before)


@pytest.mark.parametrize("target", list(TARGETS))
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


@pytest.mark.parametrize("target", list(TARGETS))
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


# -- the other CRM endpoints of every registered CRM ----------------------------------------


@pytest.mark.parametrize("crm", [*crm_adapters.REGISTRY, "nosuchcrm"])
def test_route_and_install_urls_without_a_handler_are_404(world: World, crm: str) -> None:
    before = world.snapshot()
    body = json.dumps({"text": MARK}).encode()
    route = Req(f"/webhooks/crm/{crm}/route/{uuid.uuid4().hex}", body, JSON)
    assert _rejected(world, route.send(world.client), {404}, before)["error"] == "not_found"
    if not any(t.endpoint == "install" for t in CRM_TARGETS.get(crm, [])):
        install = Req(f"/webhooks/crm/{crm}/install", body, JSON)
        assert _rejected(world, install.send(world.client), {404}, before)["error"] == "not_found"
    key = Req(f"/webhooks/crm/{crm}/{uuid.uuid4().hex}", body, JSON)
    assert _rejected(world, key.send(world.client), {404}, before)["error"] == "not_found"


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(world: World, target: str, method: str) -> None:
    t = TARGETS[target](world)
    before = world.snapshot()
    response = world.client.open(t.path(), method=method, data=t.delivery(uuid.uuid4().hex))
    assert _rejected(world, response, {405}, before)["error"] == "method_not_allowed"


def test_a_key_of_another_crm_or_a_channel_is_404(world: World) -> None:
    before = world.snapshot()
    crms = list(crm_adapters.REGISTRY)
    for crm, other in zip(crms, crms[1:] + crms[:1], strict=True):
        key = world.tenant_keys[other]["A"]
        req = Req(f"/webhooks/crm/{crm}/{key}", json.dumps({"t": MARK}).encode(), JSON)
        assert _rejected(world, req.send(world.client), {404}, before)["error"] == "not_found"
    for kind in channel_adapters.REGISTRY:
        key = world.account_keys[kind]["A"]
        for path in (f"/webhooks/crm/hubspot/{key}", f"/webhooks/nosuchchannel/{key}"):
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


@pytest.mark.parametrize(
    "referer",
    ["evil.example", "acme.amocrm.ru.evil.example", "", "http://127.0.0.1:8080"],
    ids=["foreign-host", "lookalike-host", "no-referer", "loopback"],
)
def test_forged_vendor_initiated_amocrm_callback_is_a_4xx(
    world: World, no_network: responses.RequestsMock, referer: str
) -> None:
    """amoCRM's "integration enabled" GET has no state of ours, so the
    query is all attacker-chosen: the referer must not send the client
    secret anywhere, and the answer is the request's fault (4xx), not a
    failing CRM's (502)."""
    query = {"code": MARK, "from_widget": "1"}
    if referer:
        query["referer"] = referer
    before = world.snapshot()
    response = world.client.get("/oauth/amocrm/callback", query_string=query)
    assert len(no_network.calls) == 0, "the client secret was sent to a forged host"
    _rejected(world, response, {400, 403}, before)


def test_vendor_initiated_amocrm_callback_with_a_forged_code_is_400(
    world: World, no_network: responses.RequestsMock
) -> None:
    no_network.post(
        "https://acme.amocrm.ru/oauth2/access_token",
        status=400,
        json={"title": "Bad Request", "hint": "Authorization code has been revoked"},
    )
    before = world.snapshot()
    response = world.client.get(
        "/oauth/amocrm/callback",
        query_string={"code": MARK, "referer": "acme.amocrm.ru", "from_widget": "1"},
    )
    assert _rejected(world, response, {400}, before)["error"] == "invalid_grant"
    assert MARK not in response.get_data(as_text=True)
