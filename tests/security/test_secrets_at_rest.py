# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Secrets at rest, at the database (``bridge.crypto``: MultiFernet, every
ciphertext bound to ``tenant=<id>|field=<crm|channel:<id>>``).

``tests/unit/test_crypto.py`` covers the box itself (round trip, rotation of
one token, bindings, bad keys) and a tenant's or channel's ciphertext copied
into another row; ``tests/unit/test_cli.py`` one tenant and one bot through
``bridge keys rotate``. Here real rows of several tenants of every CRM are
written through the admin helpers and the runtime (``create_tenant``,
``upsert_oauth_tenant`` for OAuth and Bitrix24 installs, ``reauthorize``,
``add_channel_account``, the single-flight token refresh, ``rotate_secrets``)
and webhooks are served from them; then

* the raw database — every column of every table, and the SQLite file with
  its WAL — holds no token or secret in clear, nor a piece, base64 or hex of
  one, and every credentials column is a Fernet token under the primary key
  whose authenticated plaintext carries the row's own binding;
* a key rotation round-trips across the whole database: written under K1;
  with [K2, K1] every row still reads, new writes go under K2 while old rows
  stay under K1; ``rotate_secrets`` moves every row to K2; with K2 alone
  everything reads and the webhooks still verify; K1 alone reads nothing;
* a row moved to another tenant (its ``tenant_id`` re-pointed, two tenants'
  credentials swapped) or another field (a bot's secret into a CRM's) does
  not decrypt: ``SecretBindingError`` that names no secret, and no other row
  is affected;
* a webhook whose stored secret cannot be read is refused with a JSON error
  and the log does not carry the URL's path secret.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, text

from bridge import admin, create_app
from bridge.config import Settings
from bridge.crypto import SecretBindingError, binding
from bridge.migrate import upgrade
from bridge.runtime import Runtime, TenantCredentials, set_runtime
from bridge.setup import rotate_secrets
from bridge.tables import Base, ChannelAccount, Tenant
from bridge.webhooks import reset_cache
from crm_adapters.bitrix24.webhooks import token_digest
from tests.support.harness import HUBSPOT_MAPPING, body, tg_update, write_mapping

ROOT = Path(__file__).resolve().parents[2]
K1, K2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
NOWHERE = "http://127.0.0.1:9"
B24_APP = {"client_id": "local.9.9", "client_secret": "b24-client-secret-at-rest"}


# -- the world ------------------------------------------------------------------------------


@dataclass
class World:
    settings: Settings
    redis: redis.Redis
    #: tenant id -> its credentials in clear (the latest written)
    tenants: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: channel account id -> (tenant id, credentials in clear)
    channels: dict[int, tuple[int, dict[str, str]]] = field(default_factory=dict)
    slugs: dict[str, int] = field(default_factory=dict)
    #: every secret ever written, in clear (old ones too: they must not linger)
    secrets: set[str] = field(default_factory=set)
    runtimes: list[Runtime] = field(default_factory=list)

    def runtime(self, *keys: str) -> Runtime:
        rt = Runtime(replace(self.settings, secret_keys=keys), redis_connection=self.redis)
        self.runtimes.append(rt)
        set_runtime(rt)
        return rt

    def remember(self, creds: dict[str, Any]) -> None:
        for key, value in creds.items():
            if isinstance(value, str) and (
                "token" in key or "secret" in key or key in ("url", "password")
            ):
                self.secrets.add(value)
                if ":" in value and key == "bot_token":
                    self.secrets.add(value.split(":", 1)[1])  # the part after the bot id


def _mapping_text(crm: str) -> str:
    if crm == "hubspot":
        return HUBSPOT_MAPPING
    return (ROOT / "mappings" / f"{crm}.yaml").read_text(encoding="utf-8")


def _token(kind: str, n: int) -> str:
    return f"{kind}-{n}-" + Fernet.generate_key().decode()[:32].replace("=", "x")


def _oauth_installs(n: int) -> list[tuple[str, dict[str, Any]]]:
    """What each CRM's ``exchange_code`` / ``install_event`` returns (the
    shapes in crm_adapters/*/oauth.py), secrets fresh for ``n``."""
    b24_app_token = _token("b24-application-token", n)
    return [
        (
            "hubspot",
            {
                "type": "oauth",
                "access_token": _token("CNhs-access", n),
                "refresh_token": _token("na1-hs-refresh", n),
                "expires_at": 4_000_000_000,
                "hub_id": f"7700{n}",
                "account_id": f"7700{n}",
            },
        ),
        (
            "amocrm",
            {
                "type": "oauth",
                "access_token": _token("amo-access", n),
                "refresh_token": _token("def50200-amo-refresh", n),
                "expires_at": 4_000_000_000,
                "account_id": f"3010{n}",
                "settings": {
                    "subdomain": f"acct{n}",
                    "amo_account_id": f"3010{n}",
                    "amojo_id": f"amojo-{n}",
                    "redirect_uri": "http://bridge.test/oauth/amocrm/callback",
                },
            },
        ),
        (
            "bitrix24",
            {
                "type": "oauth",
                "access_token": _token("b24-access", n),
                "refresh_token": _token("b24-refresh", n),
                "expires_at": 4_000_000_000,
                "client_endpoint": f"{NOWHERE}/rest/",
                "server_endpoint": f"{NOWHERE}/oauth/",
                "member_id": f"{n:032d}",
                "application_token": b24_app_token,
                "account_id": f"{n:032d}",
                "settings": {
                    "member_id": f"{n:032d}",
                    "domain": f"portal{n}.bitrix24.invalid",
                    "application_token_sha256": token_digest(b24_app_token),
                },
            },
        ),
    ]


def build(world: World, rt: Runtime) -> None:
    """Tenants of every CRM through the admin helpers: a private-app token
    (``create_tenant``), OAuth installs and a Bitrix24 install
    (``upsert_oauth_tenant``), two bots each (``add_channel_account``)."""
    upgrade(rt.engine)
    rt.settings.mappings_dir.mkdir(parents=True, exist_ok=True)
    for crm in ("hubspot", "amocrm", "bitrix24"):
        write_mapping(rt, f"{crm}.yaml", _mapping_text(crm))
    private = {"type": "private_app", "access_token": "pat-na1-" + _token("private", 0)}
    world.slugs["private"] = admin.create_tenant(
        rt,
        slug="private",
        crm_kind="hubspot",
        mapping="hubspot.yaml",
        account_id="62515",
        credentials=private,
    )
    world.tenants[world.slugs["private"]] = private
    world.remember(private)
    for n in (1, 2):
        for crm, creds in _oauth_installs(n):
            tenant_id, created = admin.upsert_oauth_tenant(
                rt, crm_kind=crm, credentials=creds, mapping=f"{crm}.yaml"
            )
            assert created
            stored = {k: v for k, v in creds.items() if k != "settings"}
            world.tenants[tenant_id] = stored
            world.slugs[f"{crm}-{n}"] = tenant_id
            world.remember(stored)
    for tenant_id in world.tenants:
        for n in range(2):
            creds = {
                "bot_token": f"{7_200_000_000 + tenant_id * 10 + n}:" + _token("AAE", n)[:35],
                "secret_token": _token("tg-webhook-secret", tenant_id * 10 + n),
            }
            account = admin.add_channel_account(
                rt, tenant_id, kind="telegram", credentials=creds, external_id=str(n)
            )
            world.channels[account] = (tenant_id, creds)
            world.remember(creds)


def reauthorize(world: World, rt: Runtime, slug: str) -> None:
    """A re-install: fresh tokens through ``admin.reauthorize``."""
    tenant_id = world.slugs[slug]
    fresh = {**world.tenants[tenant_id]}
    fresh["access_token"] = _token("reinstalled-access", tenant_id)
    fresh["refresh_token"] = _token("reinstalled-refresh", tenant_id)
    admin.reauthorize(rt, tenant_id, fresh)
    world.tenants[tenant_id] = fresh
    world.remember(fresh)


def refresh(world: World, rt: Runtime, slug: str) -> None:
    """A token refresh through the runtime's single-flight refresh (what a
    job does when the CRM says 401): the new pair is committed encrypted."""
    tenant_id = world.slugs[slug]
    stale = dict(world.tenants[tenant_id])
    fresh = {
        **stale,
        "access_token": _token("refreshed-access", tenant_id),
        "refresh_token": _token("refreshed-refresh", tenant_id),
    }
    provider = TenantCredentials(rt, tenant_id, stale)
    provider.refresher = lambda stored: fresh
    assert provider.refresh(stale) == fresh
    world.tenants[tenant_id] = fresh
    world.remember(fresh)


@pytest.fixture
def world(settings: Settings, redis_conn: redis.Redis) -> Iterator[World]:
    settings = replace(
        settings,
        apps={"bitrix24": B24_APP},
        api_bases={"hubspot": NOWHERE, "amocrm": f"{NOWHERE}/{{subdomain}}", "bitrix24": NOWHERE},
    )
    w = World(settings, redis_conn)
    reset_cache()
    build(w, w.runtime(K1))
    yield w
    for rt in w.runtimes:
        rt.close()
    set_runtime(None)
    reset_cache()


# -- reading the raw database ------------------------------------------------------------------


def raw_rows(rt: Runtime) -> list[tuple[str, tuple[Any, ...]]]:
    """Every row of every table as the driver returns it (no type processing)."""
    out = []
    with rt.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            cols = ", ".join(f'"{c}"' for c in table.c.keys())
            sql = f'SELECT {cols} FROM "{table.name}"'  # noqa: S608 (our own table names)
            out += [(table.name, tuple(row)) for row in conn.exec_driver_sql(sql)]
    return out


def raw_credentials(rt: Runtime) -> dict[tuple[str, int], str]:
    with rt.engine.connect() as conn:
        tenants = conn.execute(text("SELECT id, credentials FROM tenants"))
        rows = {("tenants", int(i)): c for i, c in tenants if c}
        accounts = conn.execute(text("SELECT id, credentials FROM channel_accounts"))
        rows.update({("channel_accounts", int(i)): c for i, c in accounts if c})
    return rows


def forms(secret: str) -> dict[str, str]:
    """A secret in clear and the encodings that are not encryption."""
    raw = secret.encode()
    return {
        "clear": secret,
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "urlsafe base64": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "hex": raw.hex(),
        "json": json.dumps(secret)[1:-1],
    }


def pieces(secret: str, width: int = 12) -> list[str]:
    return [secret[i : i + width] for i in range(0, max(1, len(secret) - width + 1))]


def found_in(haystack: str, secrets: set[str]) -> list[str]:
    hits = []
    lowered = haystack.lower()
    for secret in sorted(secrets):
        for name, form in forms(secret).items():
            if form.lower() in lowered:
                hits.append(f"{secret[:10]}… ({name})")
        hits += [f"{secret[:10]}… (piece {p!r})" for p in pieces(secret) if p in haystack]
    return hits


def expected_binding(table: str, row_id: int, world: World) -> str:
    if table == "tenants":
        return binding(row_id, "crm")
    tenant_id, _ = world.channels[row_id]
    return binding(tenant_id, f"channel:{row_id}")


def under(key: str, token: str) -> dict[str, Any] | None:
    """The authenticated plaintext if ``token`` is a Fernet token under ``key``."""
    try:
        return json.loads(Fernet(key.encode()).decrypt(token.encode()))
    except InvalidToken:
        return None


def exercise_webhooks(world: World, rt: Runtime) -> None:
    """Serve from the stored secrets: every bot's webhook checks its secret
    (a wrong one is refused), a Bitrix24 event its application token."""
    reset_cache()
    client = create_app(runtime=rt).test_client()
    with rt.transaction() as s:
        keys = {a.id: a.key for a in s.scalars(select(ChannelAccount))}
        b24 = {t.id: t.webhook_key for t in s.scalars(select(Tenant)) if t.crm_kind == "bitrix24"}
    for account, (_, creds) in world.channels.items():
        path = f"/webhooks/telegram/{keys[account]}"
        ok = client.post(
            path,
            data=body(tg_update(900 + account, chat_id=4242, text="hi")),
            headers={SECRET_HEADER: creds["secret_token"]},
            content_type="application/json",
        )
        assert ok.status_code == 200, ok.data
        wrong = client.post(
            path,
            data=body(tg_update(901 + account, chat_id=4242, text="hi")),
            headers={SECRET_HEADER: creds["secret_token"][:-1]},
            content_type="application/json",
        )
        assert wrong.status_code == 403
    for tenant_id, key in b24.items():
        creds = world.tenants[tenant_id]
        fields = {
            "event": "ONCRMDEALDELETE",
            "data[FIELDS][ID]": "999999",
            "ts": "1767225600",
            "auth[application_token]": creds["application_token"],
            "auth[member_id]": creds["member_id"],
        }
        raw = "&".join(f"{quote(k, safe='[]')}={quote(v)}" for k, v in fields.items())
        response = client.post(
            f"/webhooks/crm/bitrix24/{key}",
            data=raw,
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code == 200, response.data


def assert_reads_everything(world: World, rt: Runtime) -> None:
    """Every row decrypts to what was written, through the adapters' view."""
    with rt.transaction() as s:
        for tenant_id, creds in world.tenants.items():
            tenant = s.get(Tenant, tenant_id)
            assert rt.decrypt_tenant_credentials(tenant) == creds
            assert dict(rt.crm_adapter(tenant).credentials.get()) == creds
        for account_id, (_, creds) in world.channels.items():
            assert rt.decrypt_channel_credentials(s.get(ChannelAccount, account_id)) == creds


def assert_reads_nothing(world: World, rt: Runtime) -> None:
    with rt.transaction() as s:
        for tenant_id in world.tenants:
            with pytest.raises(SecretBindingError, match="configured keys"):
                rt.decrypt_tenant_credentials(s.get(Tenant, tenant_id))
        for account_id in world.channels:
            with pytest.raises(SecretBindingError, match="configured keys"):
                rt.decrypt_channel_credentials(s.get(ChannelAccount, account_id))


# -- 1. nothing in clear --------------------------------------------------------------------


def test_no_secret_is_stored_in_clear_anywhere(world: World) -> None:
    rt = world.runtimes[0]
    reauthorize(world, rt, "hubspot-1")
    reauthorize(world, rt, "bitrix24-2")
    refresh(world, rt, "amocrm-1")
    refresh(world, rt, "hubspot-2")
    exercise_webhooks(world, rt)
    assert len(world.secrets) >= 40, len(world.secrets)

    # every column of every table, as the driver hands it over
    dump = "\n".join(repr(row) for _, row in raw_rows(rt))
    assert found_in(dump, world.secrets) == []
    # ... and the database file itself (pages, WAL): nothing written in clear, ever
    if rt.settings.is_sqlite:
        path = Path(rt.engine.url.database or "")
        data = b"".join(
            p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()
        )
        assert data, path
        assert found_in(data.decode("latin-1"), world.secrets) == []

    # every credentials value is a Fernet token under the primary key, bound
    # to its own row, holding what was written
    stored = raw_credentials(rt)
    assert len(stored) == len(world.tenants) + len(world.channels)
    assert len(set(stored.values())) == len(stored)  # randomised: no two alike
    for (table, row_id), token in stored.items():
        plain = under(K1, token)
        assert plain is not None, (table, row_id)
        assert plain["b"] == expected_binding(table, row_id, world), (table, row_id, plain["b"])
        want = world.tenants[row_id] if table == "tenants" else world.channels[row_id][1]
        assert plain["v"] == want
    # the Bitrix24 settings keep only a digest of the application token
    with rt.transaction() as s:
        for tenant in s.scalars(select(Tenant).where(Tenant.crm_kind == "bitrix24")):
            token = world.tenants[tenant.id]["application_token"]
            assert tenant.settings["application_token_sha256"] == token_digest(token)


# -- 2. rotation ---------------------------------------------------------------------------


def test_key_rotation_round_trips_the_whole_database(world: World) -> None:
    old = raw_credentials(world.runtimes[0])
    assert all(under(K1, t) and not under(K2, t) for t in old.values())

    # the new key first, the old one still listed: every row still reads ...
    during = world.runtime(K2, K1)
    assert_reads_everything(world, during)
    # ... and what is written meanwhile goes under the new key only
    reauthorize(world, during, "hubspot-1")
    refresh(world, during, "bitrix24-1")
    new_bot = {"bot_token": "7299999999:" + "N" * 35, "secret_token": _token("new-bot", 1)}
    owner = world.slugs["amocrm-2"]
    account = admin.add_channel_account(during, owner, kind="telegram", credentials=new_bot)
    world.channels[account] = (owner, new_bot)
    world.remember(new_bot)
    mixed = raw_credentials(during)
    rewritten = {
        ("tenants", world.slugs["hubspot-1"]),
        ("tenants", world.slugs["bitrix24-1"]),
        ("channel_accounts", account),
    }
    for row, token in mixed.items():
        if row in rewritten:
            assert under(K2, token) and not under(K1, token), row
        else:
            assert token == old[row] and under(K1, token), row
    assert_reads_everything(world, during)
    exercise_webhooks(world, during)

    # rotate: every row re-encrypted under K2
    assert rotate_secrets(during) == len(world.tenants) + len(world.channels)
    rotated = raw_credentials(during)
    assert rotated.keys() == mixed.keys()
    for row, token in rotated.items():
        assert token != mixed[row], row
        plain = under(K2, token)
        assert plain is not None and not under(K1, token), row
        assert plain["b"] == expected_binding(*row, world)

    # K1 dropped: everything reads and the bridge serves from the new key alone
    after = world.runtime(K2)
    assert_reads_everything(world, after)
    exercise_webhooks(world, after)
    # rotating again changes the ciphertexts, not the values
    assert rotate_secrets(after) == len(rotated)
    assert_reads_everything(world, after)
    # and the old key alone reads nothing any more (a clear error, per row)
    assert_reads_nothing(world, world.runtime(K1))


# -- 3. a row moved elsewhere --------------------------------------------------------------


def _move(world: World, rt: Runtime, how: str) -> set[tuple[str, int]]:
    """Tamper with the rows the way someone with write access to the
    database (or a botched restore) could; returns the rows that moved."""
    a, b = world.slugs["hubspot-1"], world.slugs["hubspot-2"]
    a_bot = next(acc for acc, (tid, _) in world.channels.items() if tid == a)
    with rt.engine.begin() as conn:
        if how == "channel re-pointed to another tenant":
            conn.execute(
                text("UPDATE channel_accounts SET tenant_id = :b WHERE id = :id"),
                {"b": b, "id": a_bot},
            )
            return {("channel_accounts", a_bot)}
        if how == "two tenants' credentials swapped":
            ca = conn.scalar(text("SELECT credentials FROM tenants WHERE id = :i"), {"i": a})
            cb = conn.scalar(text("SELECT credentials FROM tenants WHERE id = :i"), {"i": b})
            conn.execute(
                text("UPDATE tenants SET credentials = :c WHERE id = :i"), {"c": cb, "i": a}
            )
            conn.execute(
                text("UPDATE tenants SET credentials = :c WHERE id = :i"), {"c": ca, "i": b}
            )
            return {("tenants", a), ("tenants", b)}
        if how == "a bot's secret as the tenant's CRM secret":
            bot = conn.scalar(
                text("SELECT credentials FROM channel_accounts WHERE id = :i"), {"i": a_bot}
            )
            conn.execute(
                text("UPDATE tenants SET credentials = :c WHERE id = :i"), {"c": bot, "i": a}
            )
            return {("tenants", a)}
    raise AssertionError(how)


MOVES = [
    "channel re-pointed to another tenant",
    "two tenants' credentials swapped",
    "a bot's secret as the tenant's CRM secret",
]


@pytest.mark.parametrize("how", MOVES)
def test_a_row_moved_to_another_tenant_or_field_does_not_decrypt(world: World, how: str) -> None:
    rt = world.runtimes[0]
    moved = _move(world, rt, how)
    with rt.transaction() as s:
        for table, row_id in moved:
            row = s.get(Tenant if table == "tenants" else ChannelAccount, row_id)
            decrypt = (
                rt.decrypt_tenant_credentials
                if table == "tenants"
                else rt.decrypt_channel_credentials
            )
            with pytest.raises(SecretBindingError, match="another tenant or field") as caught:
                decrypt(row)
            message = str(caught.value)
            assert found_in(message, world.secrets) == [] and row.credentials not in message
            assert K1 not in message
        # the damage stays with the rows that moved
        for tenant_id, creds in world.tenants.items():
            if ("tenants", tenant_id) not in moved:
                assert rt.decrypt_tenant_credentials(s.get(Tenant, tenant_id)) == creds
        for account_id, (_, creds) in world.channels.items():
            if ("channel_accounts", account_id) not in moved:
                got = rt.decrypt_channel_credentials(s.get(ChannelAccount, account_id))
                assert got == creds


# -- 4. serving from an unreadable secret ----------------------------------------------------


@pytest.mark.parametrize("how", [MOVES[0], MOVES[1]])
def test_a_webhook_whose_secret_cannot_be_read_is_refused_without_logging_its_key(
    world: World, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot's / the tenant's stored secret no longer decrypts (moved, or
    its key dropped too early): the webhook gets a JSON error, and neither
    the answer nor the log carries the URL's path key (the webhook's only
    secret besides the header) or any stored secret."""
    rt = world.runtimes[0]
    a = world.slugs["hubspot-1"]
    a_bot, (_, bot) = next((acc, v) for acc, v in world.channels.items() if v[0] == a)
    _move(world, rt, how)
    reset_cache()
    client = create_app(runtime=rt).test_client()
    with rt.transaction() as s:
        channel_key = s.get(ChannelAccount, a_bot).key
        tenant_key = s.get(Tenant, a).webhook_key
    caplog.set_level(logging.INFO)
    if how == MOVES[0]:
        path = f"/webhooks/telegram/{channel_key}"
        response = client.post(
            path,
            data=body(tg_update(1, chat_id=4242, text="hi")),
            headers={SECRET_HEADER: bot["secret_token"]},
            content_type="application/json",
        )
        key = channel_key
    else:
        path = f"/webhooks/crm/hubspot/{tenant_key}"
        response = client.post(path, data=b"{}", content_type="application/json")
        key = tenant_key
    assert response.status_code >= 500, response.data
    assert response.mimetype == "application/json"
    assert set(response.get_json()) == {"error", "message"}
    answer = response.get_data(as_text=True)
    assert key not in answer and found_in(answer, world.secrets) == []
    logged = "\n".join(
        f"{r.getMessage()}\n{logging.Formatter().formatException(r.exc_info) if r.exc_info else ''}"
        for r in caplog.records
    )
    # the operator learns why (SecretBindingError's own words) ...
    assert "another tenant or field" in logged or "cannot be decrypted" in logged, logged
    # ... but not the key
    assert key not in logged, f"the log carries the webhook's path key: {logged[:300]}"
    assert found_in(logged, world.secrets) == []
