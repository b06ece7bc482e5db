# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Secrets at rest, at the database (``bridge.crypto``: MultiFernet, every
ciphertext bound to ``tenant=<id>|field=<crm|channel:<id>>``).

``tests/unit/test_crypto.py`` covers the box itself (round trip, rotation of
one token, bindings, bad keys) and a tenant's or channel's ciphertext copied
into another row; ``tests/unit/test_cli.py`` one tenant and one bot through
``bridge keys rotate``. Here real rows of several tenants of every CRM (its
test kit, ``tests/kits``, says what its installs and private setups give)
are written through the admin helpers and the runtime (``create_tenant``
with what the adapter makes of a pasted token, ``upsert_oauth_tenant`` for
OAuth and install-event installs, ``reauthorize``, ``add_channel_account``
for accounts of every channel, the single-flight token refresh,
``rotate_secrets``) and webhooks are served from them; then

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, text

from bridge import admin, create_app
from bridge.config import Settings
from bridge.crypto import SecretBindingError, binding
from bridge.migrate import upgrade
from bridge.registry import crm_class
from bridge.runtime import Runtime, TenantCredentials, set_runtime
from bridge.setup import rotate_secrets
from bridge.tables import Base, ChannelAccount, Tenant
from bridge.webhooks import reset_cache
from tests import kits
from tests.kits.base import ChannelKit, CrmKit
from tests.support.harness import write_mapping

K1, K2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
#: an address where nothing listens: no vendor is called here
NOWHERE = "http://127.0.0.1:9"
CRMS: list[CrmKit] = kits.crm_kits()
CHANNELS: list[ChannelKit] = kits.channel_kits()


# -- the world ------------------------------------------------------------------------------


@dataclass
class World:
    settings: Settings
    redis: redis.Redis
    #: tenant id -> its credentials in clear (the latest written)
    tenants: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: channel account id -> (tenant id, credentials in clear)
    channels: dict[int, tuple[int, dict[str, str]]] = field(default_factory=dict)
    #: channel account id -> its kit
    channel_kits: dict[int, ChannelKit] = field(default_factory=dict)
    #: tenant id -> its CRM's kit
    crm_kits: dict[int, CrmKit] = field(default_factory=dict)
    slugs: dict[str, int] = field(default_factory=dict)
    #: every secret ever written, in clear (old ones too: they must not linger)
    secrets: set[str] = field(default_factory=set)
    runtimes: list[Runtime] = field(default_factory=list)

    def runtime(self, *keys: str) -> Runtime:
        rt = Runtime(replace(self.settings, secret_keys=keys), redis_connection=self.redis)
        self.runtimes.append(rt)
        set_runtime(rt)
        return rt

    def remember(self, creds: Mapping[str, Any], kit: ChannelKit | CrmKit) -> None:
        """Every secret of ``creds`` (the kit knows which parts are)."""
        self.secrets |= kit.secrets_of(creds)


def _token(kind: str, n: int) -> str:
    return f"{kind}-{n}-" + Fernet.generate_key().decode()[:32].replace("=", "x")


def _tokens(n: int) -> Callable[[str], str]:
    return lambda kind: _token(kind, n)


def crm_kit_of(world: World, tenant_id: int) -> CrmKit:
    return world.crm_kits[tenant_id]


def build(world: World, rt: Runtime) -> None:
    """Tenants of every CRM through the admin helpers: a private setup
    (``create_tenant`` with what the adapter makes of a pasted token), two
    installs each (``upsert_oauth_tenant``), two accounts of every channel
    each (``add_channel_account``)."""
    upgrade(rt.engine)
    rt.settings.mappings_dir.mkdir(parents=True, exist_ok=True)
    for kit in CRMS:
        write_mapping(rt, f"{kit.kind}.yaml", kit.mapping_text())
        pasted = kit.pasted(_tokens(0))
        if pasted is None:
            continue
        private = crm_class(kit.kind).token_credentials(pasted)
        slug = f"private-{kit.kind}"
        world.slugs[slug] = admin.create_tenant(
            rt,
            slug=slug,
            crm_kind=kit.kind,
            mapping=f"{kit.kind}.yaml",
            account_id=private.account_id,
            credentials=private.credentials,
            settings=private.settings,
        )
        world.tenants[world.slugs[slug]] = dict(private.credentials)
        world.crm_kits[world.slugs[slug]] = kit
        world.remember(private.credentials, kit)
    for n in (1, 2):
        for kit in CRMS:
            installed = kit.installed(n, _tokens(n), NOWHERE)
            tenant_id, created = admin.upsert_oauth_tenant(
                rt, crm_kind=kit.kind, installed=installed, mapping=f"{kit.kind}.yaml"
            )
            assert created
            world.tenants[tenant_id] = dict(installed.credentials)
            world.crm_kits[tenant_id] = kit
            world.slugs[f"{kit.kind}-{n}"] = tenant_id
            world.remember(installed.credentials, kit)
    for tenant_id in list(world.tenants):
        for channel in CHANNELS:
            for n in range(2):
                add_account(world, rt, tenant_id, channel, tenant_id * 10 + n)


def add_account(world: World, rt: Runtime, tenant_id: int, channel: ChannelKit, n: int) -> int:
    spec = channel.isolation_account(n, 0)
    creds = dict(spec.credentials)
    account = admin.add_channel_account(
        rt,
        tenant_id,
        kind=channel.kind,
        credentials=creds,
        settings=spec.settings,
        external_id=str(n),
    )
    world.channels[account] = (tenant_id, creds)
    world.channel_kits[account] = channel
    world.remember(creds, channel)
    return account


def reauthorize(world: World, rt: Runtime, slug: str) -> None:
    """A re-install: fresh tokens through ``admin.reauthorize``."""
    tenant_id = world.slugs[slug]
    fresh = {**world.tenants[tenant_id]}
    fresh["access_token"] = _token("reinstalled-access", tenant_id)
    fresh["refresh_token"] = _token("reinstalled-refresh", tenant_id)
    admin.reauthorize(rt, tenant_id, fresh)
    world.tenants[tenant_id] = fresh
    world.remember(fresh, crm_kit_of(world, tenant_id))


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
    world.remember(fresh, crm_kit_of(world, tenant_id))


@pytest.fixture
def world(settings: Settings, redis_conn: redis.Redis) -> Iterator[World]:
    apps = {kit.kind: dict(app) for kit in CRMS if (app := kit.at_rest_app()) is not None}
    apps.update({kit.kind: dict(app) for kit in CHANNELS if (app := kit.hostile_app())})
    api_bases = {kit.kind: kit.at_rest_api_base(NOWHERE) for kit in CRMS}
    api_bases.update({kit.kind: NOWHERE for kit in CHANNELS})
    settings = replace(settings, apps=apps, api_bases=api_bases)
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
    """Serve from the stored secrets: every channel account's webhook checks
    its proof (an almost-right one is refused), every CRM webhook proven by
    a stored secret checks it."""
    reset_cache()
    client = create_app(runtime=rt).test_client()
    with rt.transaction() as s:
        keys = {a.id: a.key for a in s.scalars(select(ChannelAccount))}
        numbers = {a.id: a.external_id for a in s.scalars(select(ChannelAccount))}
        tenant_keys = {t.id: t.webhook_key for t in s.scalars(select(Tenant))}
    for account, (_, creds) in world.channels.items():
        kit = world.channel_kits[account]
        path = f"/webhooks/{kit.kind}/{keys[account]}"
        raw = kit.customer_message(900 + account, 4242, "Ann", text="hi")
        # an app-routed channel's delivery names the account it is for
        raw = kit.addressed(raw, numbers[account])
        ok = client.post(
            path, data=raw, headers=kit.prove(creds, raw), content_type=kit.content_type
        )
        assert ok.status_code == 200, ok.data
        raw = kit.customer_message(901 + account, 4242, "Ann", text="hi")
        wrong = client.post(
            path, data=raw, headers=kit.forge(creds, raw), content_type=kit.content_type
        )
        assert wrong.status_code == 403
    for tenant_id, key in tenant_keys.items():
        req = crm_kit_of(world, tenant_id).stored_secret_webhook(key, world.tenants[tenant_id])
        if req is not None:
            response = req.send(client)
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


def test_every_provider_has_a_kit() -> None:
    assert kits.missing() == []


def test_no_secret_is_stored_in_clear_anywhere(world: World) -> None:
    rt = world.runtimes[0]
    for kit in CRMS:  # a re-install and a token refresh of every CRM
        reauthorize(world, rt, f"{kit.kind}-1")
        refresh(world, rt, f"{kit.kind}-2")
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
    # what a CRM keeps in its settings instead of a secret (a digest)
    with rt.transaction() as s:
        for tenant in s.scalars(select(Tenant)):
            kit = crm_kit_of(world, tenant.id)
            kit.check_at_rest(tenant.settings or {}, world.tenants[tenant.id])


# -- 2. rotation ---------------------------------------------------------------------------


def test_key_rotation_round_trips_the_whole_database(world: World) -> None:
    old = raw_credentials(world.runtimes[0])
    assert all(under(K1, t) and not under(K2, t) for t in old.values())

    # the new key first, the old one still listed: every row still reads ...
    during = world.runtime(K2, K1)
    assert_reads_everything(world, during)
    # ... and what is written meanwhile goes under the new key only
    first, last = CRMS[0].kind, CRMS[-1].kind
    reauthorize(world, during, f"{first}-1")
    refresh(world, during, f"{last}-1")
    account = add_account(world, during, world.slugs[f"{last}-2"], CHANNELS[0], 999)
    mixed = raw_credentials(during)
    rewritten = {
        ("tenants", world.slugs[f"{first}-1"]),
        ("tenants", world.slugs[f"{last}-1"]),
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
    kind = CRMS[0].kind  # two installs of one CRM
    a, b = world.slugs[f"{kind}-1"], world.slugs[f"{kind}-2"]
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
    crm = CRMS[0]
    a = world.slugs[f"{crm.kind}-1"]
    a_bot, (_, bot) = next((acc, v) for acc, v in world.channels.items() if v[0] == a)
    channel = world.channel_kits[a_bot]
    _move(world, rt, how)
    reset_cache()
    client = create_app(runtime=rt).test_client()
    with rt.transaction() as s:
        channel_key = s.get(ChannelAccount, a_bot).key
        tenant_key = s.get(Tenant, a).webhook_key
    caplog.set_level(logging.INFO)
    if how == MOVES[0]:
        path = f"/webhooks/{channel.kind}/{channel_key}"
        raw = channel.customer_message(1, 4242, "Ann", text="hi")
        response = client.post(
            path,
            data=raw,
            headers=channel.prove(bot, raw),
            content_type=channel.content_type,
        )
        key = channel_key
    else:
        path = f"/webhooks/crm/{crm.kind}/{tenant_key}"
        media = crm_class(crm.kind).content_types[0]
        response = client.post(path, data=b"{}", content_type=media)
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
