# ruff: noqa: S105, S106, S311  (fake secrets and tokens; the case generator is seeded, not crypto)
"""Tenant isolation, generated: one tenant's keys, secrets, signatures, ids
and OAuth state never read or write another tenant's rows.

The world: two tenants per CRM of ``crm_adapters.REGISTRY`` (two portals or
accounts of each), each with two accounts of every channel of
``channel_adapters.REGISTRY``, conversations, contacts and messages that went
through the real webhooks — with the same chat ids, the same phone number
and some of the same CRM ids in every tenant, the way two businesses share
a customer. What a tenant of each provider is, and how its webhooks are
built and proven, comes from the provider's test kit (``tests/kits``).

A seeded generator (``BRIDGE_ISOLATION_SEED``, ``BRIDGE_ISOLATION_CASES``:
1,000 in all by default) then plays an attacker tenant A against a victim B:

* A's channel delivery and proof at B's webhook URL; A's delivery at A's URL
  naming B's chats and B's customer's phone;
* A's genuine CRM webhook (each CRM's own proof: a signature, a signed chat
  hook, an account in the body, an application token) at B's URL, re-signed
  for B's URL, at B's URL of another CRM, or claiming B's account at A's
  URL;
* A's genuine CRM webhook at A's URL naming B's conversations, CRM threads,
  leads/deals, contacts (operator replies, closed/deleted entities, owner
  changes, contact deletions, uninstall);
* A's genuine CRM webhook at its CRM's app URL (``/webhooks/crm/<crm>/app``:
  one URL for every account, the body names the account; signed for that
  URL with the app-wide secret), naming A's or B's objects: stored for A
  alone; a 404 where the CRM has no app-level webhooks. (There the body's
  account is the tenant and the app's secret the proof, so a body naming
  B's account is B's own webhook: not a case.)
* operator calls scoped to A naming B's objects: ``admin.status`` /
  ``admin.replay``, ``bridge status --tenant`` / ``bridge replay --tenant``,
  ``/api/status`` with A's secrets as the bearer token;
* OAuth (the CRMs whose kit plays an install against its sandbox): a state
  minted for A's install link used with B's consent, and states that were
  forged, tampered with or minted for another CRM.

After every case: no row of any other tenant was inserted, changed or
deleted (the whole database is compared), no job names another tenant's
conversation, and nothing of B's (keys, secrets, tokens, ids, names) is in
the answer. A request at B's URL, or claiming B's account, is refused with a
4xx and a JSON error (403/404; 415 for another CRM's content type; 401 at
``/api/status``). A genuine webhook at A's own URL naming B's objects is
acknowledged (200: a CRM retries a refusal for days) and changes A's rows
only (routed within A, or unroutable). The OAuth state names no tenant: A's
state with B's consent lands in B's own tenant with B's own account's token
and B's own mapping, A untouched. Every webhook builder is first checked
against its own tenant (accepted, with the expected effect), so a refusal is
never a malformed request.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from itsdangerous import URLSafeTimedSerializer
from rq import Queue
from rq.job import Job
from sqlalchemy import select, update

import bridge.runtime
from bridge import admin, create_app
from bridge.cli import main as cli_main
from bridge.config import Settings
from bridge.jobs import DELIVER_QUEUE, SYNC_QUEUE
from bridge.oauth import install_url
from bridge.pipeline.inbound.journal import normalise_pending
from bridge.registry import crm_class
from bridge.runtime import Runtime, set_runtime
from bridge.tables import (
    Base,
    ChannelAccount,
    Contact,
    Conversation,
    CrmRoute,
    Message,
    Outbox,
    Tenant,
)
from bridge.webhooks import reset_cache
from tests import kits
from tests.conftest import DATABASES
from tests.kits.base import ChannelKit, CrmKit, OAuthIsolation, Req
from tests.support.harness import build_runtime, finish_install, start_install, write_mapping

CASES = int(os.environ.get("BRIDGE_ISOLATION_CASES", "1000"))
SEED = int(os.environ.get("BRIDGE_ISOLATION_SEED", "20260101"))
#: how the cases split between the three tests (webhooks / operator calls / OAuth)
SHARE = {"webhooks": 0.76, "operator": 0.18, "oauth": 0.06}
CRMS: list[CrmKit] = kits.crm_kits()
CHANNELS: list[ChannelKit] = kits.channel_kits()
#: the CRMs whose kit plays an OAuth install against the CRM's sandbox
OAUTH: list[tuple[CrmKit, OAuthIsolation]] = [
    (kit, oauth) for kit in CRMS if (oauth := kit.isolation_oauth()) is not None
]


def cases(test: str) -> int:
    """This test's share of the cases on one database: with PostgreSQL in
    CI each database runs half of them, under its own seed (1,000 in all)."""
    return max(1, round(CASES * SHARE[test] / len(DATABASES)))


JSON = "application/json"
#: what an accepted webhook is answered with: JSON, or plain text where the
#: provider wants it (VK's "ok")
ANSWERS = (JSON, "text/plain")
#: an address where nothing listens: a vendor call nobody expected fails fast
NOWHERE = "http://127.0.0.1:9"
#: accounts of each channel kind per tenant
ACCOUNTS = 2

#: chat ids every tenant has (the same customer writing to two businesses)
SHARED_CHAT, SHARED_PHONE_CHAT = 1001, 1002
SHARED_PHONE = "+79990001102"
#: CRM ids every tenant's first conversation has (ids collide across CRMs/portals)
SHARED_ENTITY, SHARED_CONTACT = "900", "501"

log = logging.getLogger(__name__)

#: (table, id) -> (owning tenant id, the whole row as text)
Snapshot = dict[tuple[str, int], tuple[int, str]]


# ======================================================================================
# the world
# ======================================================================================


@dataclass
class Conv:
    id: int
    uid: str
    tenant_id: int
    account_id: int
    external_thread_id: str
    crm_entity_id: str
    crm_thread_id: str
    crm_contact_id: str


@dataclass
class Account:
    """One of a tenant's channel accounts."""

    kit: ChannelKit
    id: int
    key: str
    credentials: dict[str, str]
    #: its own id on the channel (an app-routed channel's body names it)
    external_id: str | None = None


@dataclass
class T:
    """One tenant and everything an attacker could name of it."""

    idx: int
    slug: str
    crm: str
    account_id: str
    mapping: str
    credentials: dict[str, Any]
    settings: dict[str, Any]
    routes: tuple[str, ...] = ()
    id: int = 0
    webhook_key: str = ""
    route_key: str | None = None
    accounts: list[Account] = field(default_factory=list)
    convs: list[Conv] = field(default_factory=list)
    failed_uid: str = ""
    failed_conv: int = 0
    unique_chat: int = 0
    unique_phone: str = ""

    @property
    def kit(self) -> CrmKit:
        return kits.crm_kit(self.crm)

    @property
    def customer(self) -> str:
        return f"Cust{self.slug.replace('-', '')}"

    @property
    def channel_keys(self) -> list[str]:
        return [a.key for a in self.accounts]

    @property
    def channel_secrets(self) -> list[str]:
        """Every secret of the tenant's channel accounts."""
        return sorted({s for a in self.accounts for s in a.kit.secrets_of(a.credentials)})

    @property
    def crm_secrets(self) -> list[str]:
        return sorted(self.kit.secrets_of(self.credentials))

    def strings(self) -> list[str]:
        """What must never reach another tenant's answer (long enough to be unique)."""
        values = [
            self.slug,
            self.webhook_key,
            self.customer,
            self.unique_phone,
            *self.channel_keys,
            *self.channel_secrets,
            *(c.uid for c in self.convs),
            self.failed_uid,
            *self.crm_secrets,
        ]
        if self.route_key:
            values.append(self.route_key)
        return [v for v in values if v and len(v) >= 8]


def _tenant_specs() -> list[T]:
    specs = []
    for i, kit in enumerate(CRMS):
        for n in range(2):
            idx = 2 * i + n
            spec = kit.isolation_tenant(idx, n, NOWHERE)
            assert spec.account_id is not None, kit.kind
            specs.append(
                T(
                    idx,
                    f"tenant-{kit.kind}-{idx}",
                    kit.kind,
                    spec.account_id,
                    f"{kit.kind}-{idx}.yaml",
                    dict(spec.credentials),
                    dict(spec.settings),
                    spec.routes,
                )
            )
    return specs


@dataclass
class World:
    rt: Runtime
    client: Any
    tenants: list[T]
    #: crm kind -> the URL of its sandbox (OAuth installs)
    sandboxes: dict[str, str] = field(default_factory=dict)
    #: crm kind -> its sandbox's token-endpoint spy
    spies: dict[str, Any] = field(default_factory=dict)
    counter: int = 0
    #: the database as the last case left it (None: someone wrote since)
    last: Snapshot | None = None

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    @property
    def database(self) -> str:
        return "sqlite" if self.rt.settings.is_sqlite else "postgres"

    def tenant(self, tenant_id: int) -> T:
        return next(t for t in self.tenants if t.id == tenant_id)

    @property
    def redis(self) -> redis.Redis:
        return self.rt.redis


def post_delivery(
    world: World, t: T, n: int, raw: bytes, *, path: str | None = None
) -> Any:  # fmt: skip
    """``raw`` proven by ``t``'s ``n``-th account, at its URL (or ``path``);
    a journaled delivery is then normalised, as a worker would at once."""
    account = t.accounts[n]
    # an app-routed channel's delivery names the account it is for (its number id)
    raw = account.kit.addressed(raw, account.external_id)
    response = world.client.post(
        path or f"/webhooks/{account.kit.kind}/{account.key}",
        data=raw,
        headers=account.kit.prove(account.credentials, raw),
        content_type=account.kit.content_type,
    )
    if 200 <= response.status_code < 300:
        normalise_pending(world.rt)
    return response


@contextmanager
def build_world(
    settings: Settings, redis_conn: redis.Redis, sandboxes: dict[str, str] | None = None
) -> Iterator[World]:
    sandboxes = sandboxes or {}
    apps = {kit.kind: dict(kit.isolation_app(sandboxes.get(kit.kind))) for kit in CRMS}
    apps.update({kit.kind: dict(app) for kit in CHANNELS if (app := kit.hostile_app())})
    api_bases = {kit.kind: kit.isolation_api_base(NOWHERE, sandboxes.get(kit.kind)) for kit in CRMS}
    api_bases.update({kit.kind: NOWHERE for kit in CHANNELS})
    reset_cache()
    with build_runtime(settings, redis_conn, apps=apps, api_bases=api_bases) as rt:
        tenants = _tenant_specs()
        for t in tenants:
            write_mapping(rt, t.mapping, t.kit.mapping_text())
            t.id = admin.create_tenant(
                rt,
                slug=t.slug,
                crm_kind=t.crm,
                mapping=t.mapping,
                credentials=t.credentials,
                account_id=t.account_id,
                name=f"Business {t.idx}",
                settings=t.settings,
            )
            for channel in CHANNELS:
                for n in range(ACCOUNTS):
                    spec = channel.isolation_account(t.idx, n)
                    account_id = admin.add_channel_account(
                        rt,
                        t.id,
                        kind=channel.kind,
                        credentials=spec.credentials,
                        settings=spec.settings,
                        external_id=spec.external_id,
                        name=spec.name,
                    )
                    t.accounts.append(
                        Account(channel, account_id, "", dict(spec.credentials), spec.external_id)
                    )
            with rt.transaction() as s:
                t.webhook_key = s.get(Tenant, t.id).webhook_key
                for account in t.accounts:
                    account.key = s.get(ChannelAccount, account.id).key
                for route in t.routes:
                    s.add(CrmRoute(crm_kind=t.crm, route_key=route, tenant_id=t.id))
                t.route_key = t.routes[0] if t.routes else None
        world = World(rt, create_app(runtime=rt).test_client(), tenants, dict(sandboxes))
        _traffic(world)
        _crm_state(world)
        _check_builders(world)
        yield world
    reset_cache()


def _traffic(world: World) -> None:
    """Real deliveries through the webhooks: every account hears the shared
    chats (one of them shares the shared phone) and the tenant's own chat."""
    for t in world.tenants:
        t.unique_chat = 2000 + t.idx
        t.unique_phone = f"+7999100{t.idx:04d}"
        for n, account in enumerate(t.accounts):
            base = 10_000 * (n + 1)
            message = account.kit.customer_message
            deliveries = [
                message(base + 1, SHARED_CHAT, t.customer, text=f"hello {t.customer}"),
                message(base + 2, SHARED_PHONE_CHAT, t.customer, text="phone follows"),
                message(base + 3, SHARED_PHONE_CHAT, t.customer, phone=SHARED_PHONE),
                message(base + 4, t.unique_chat, t.customer, text=f"only {t.slug}"),
                message(base + 5, t.unique_chat, t.customer, phone=t.unique_phone),
            ]
            for raw in deliveries:
                response = post_delivery(world, t, n, raw)
                assert response.status_code == 200, response.data


def _crm_state(world: World) -> None:
    """As if the sync jobs had run: every conversation has its CRM entity,
    thread and contact (the first one with ids shared by every tenant), the
    inbound messages are synced, and one message per tenant failed (its
    conversation parked) for status and replay to find."""
    with world.rt.transaction() as s:
        for t in world.tenants:
            convs = list(
                s.scalars(
                    select(Conversation)
                    .where(Conversation.tenant_id == t.id)
                    .order_by(Conversation.id)
                )
            )
            assert len(convs) == 3 * len(t.accounts), len(convs)  # 3 chats per account
            crm_contacts: dict[int, str] = {}
            for conv in convs:
                k = len(crm_contacts)
                crm_contacts.setdefault(
                    conv.contact_id, SHARED_CONTACT if k == 0 else f"5{t.idx}{k:02d}"
                )
            for contact_id, crm_contact in crm_contacts.items():
                s.execute(
                    update(Contact)
                    .where(Contact.id == contact_id)
                    .values(crm_contact_id=crm_contact, crm_state="synced")
                )
            for j, conv in enumerate(convs):
                conv.crm_entity_type = t.kit.entity_type
                conv.crm_entity_id = SHARED_ENTITY if j == 0 else f"9{t.idx}{j:02d}"
                conv.crm_entity_state = "synced"
                conv.crm_thread_id = t.kit.thread_id(t.idx, j, conv.uid)
                t.convs.append(
                    Conv(
                        conv.id,
                        conv.uid,
                        t.id,
                        conv.channel_account_id,
                        conv.external_thread_id,
                        conv.crm_entity_id,
                        conv.crm_thread_id,
                        crm_contacts[conv.contact_id],
                    )
                )
            s.execute(
                update(Message)
                .where(Message.tenant_id == t.id)
                .values(status="synced", crm_refs=[["note", "1"]])
            )
            failed = s.scalars(
                select(Message)
                .where(Message.conversation_id == convs[-1].id)
                .order_by(Message.seq.desc())
            ).first()
            failed.status, failed.attempts = "failed", 3
            failed.last_error = "the CRM said 400 (test)"
            t.failed_uid, t.failed_conv = failed.uid, convs[-1].id
            s.execute(update(Outbox).where(Outbox.tenant_id == t.id).values(state="idle"))
            s.execute(
                update(Outbox)
                .where(Outbox.conversation_id == convs[-1].id, Outbox.direction == "in")
                .values(state="parked", reason=f"message {failed.uid} failed")
            )
    for name in (SYNC_QUEUE, DELIVER_QUEUE):
        world.rt.queues[name].empty()


def restore(world: World, t: T) -> None:
    """The tenant's conversations and contacts as ``_crm_state`` left them."""
    world.last = None
    with world.rt.transaction() as s:
        for conv in t.convs:
            s.execute(
                update(Conversation)
                .where(Conversation.id == conv.id)
                .values(status="open", owner_id=None, crm_entity_id=conv.crm_entity_id)
            )
            contact = s.scalar(select(Conversation.contact_id).where(Conversation.id == conv.id))
            s.execute(
                update(Contact)
                .where(Contact.id == contact)
                .values(crm_contact_id=conv.crm_contact_id, crm_state="synced")
            )


def refail(world: World, t: T) -> None:
    """Put a tenant's failed message and parked conversation back (a replay
    of A's own failures is allowed to change them)."""
    with world.rt.transaction() as s:
        status = s.scalar(select(Message.status).where(Message.uid == t.failed_uid))
        state = s.scalar(
            select(Outbox.state).where(
                Outbox.conversation_id == t.failed_conv, Outbox.direction == "in"
            )
        )
        if (status, state) == ("failed", "parked"):
            return
        world.last = None
        s.execute(
            update(Message)
            .where(Message.uid == t.failed_uid)
            .values(status="failed", last_error="the CRM said 400 (test)")
        )
        s.execute(
            update(Outbox)
            .where(Outbox.conversation_id == t.failed_conv, Outbox.direction == "in")
            .values(state="parked", reason=f"message {t.failed_uid} failed")
        )


# ======================================================================================
# CRM webhooks as each CRM sends them (the kits build them)
# ======================================================================================


@dataclass
class Webhook:
    """A CRM webhook request and the URL its signature covers (None: not
    URL-bound): re-signing targets another one."""

    req: Req
    signed_for: str | None = None

    @property
    def path(self) -> str:
        return self.req.path

    def send(self, world: World) -> Any:
        return self.req.send(world.client)


def crm_request(
    world: World,
    src: T,
    event: str,
    *,
    conv: Conv | None = None,
    entity: str | None = None,
    contact: str | None = None,
    claim: T | None = None,
    text: str = "operator says hi",
) -> Webhook:
    """``src``'s CRM sending ``event`` about ``conv`` / ``entity`` /
    ``contact`` to ``src``'s own URL, genuinely (signed, with src's token).
    ``claim``: the body names that tenant's account/portal instead (what a
    forger who has only src's secrets can do)."""
    req, signed_for = src.kit.crm_webhook(
        world.rt.settings.public_url,
        src,
        event,
        n=world.next_id(),
        conv=conv,
        entity=entity or (conv.crm_entity_id if conv else SHARED_ENTITY),
        contact=contact or (conv.crm_contact_id if conv else SHARED_CONTACT),
        claim=claim or src,
        text=text,
    )
    return Webhook(req, signed_for)


def retarget(world: World, hook: Webhook, src: T, victim: T, how: str) -> Webhook:
    """``hook`` (src's genuine webhook) sent somewhere of the victim's.

    * ``as_signed``: to the victim's URL of the same kind, byte for byte;
    * ``resigned``: the same, signed for the victim's URL (a secret that is
      app-wide signs any account's webhook validly);
    * ``src_kind``: the victim's key under src's CRM path;
    * ``victim_kind``: the victim's own URL (of its CRM) with src's body.
    """
    routed = "/route/" in hook.path
    if how == "victim_kind":
        path = victim.kit.url(victim, routed=routed)
    elif routed and how in ("as_signed", "resigned") and victim.route_key:
        path = src.kit.url(victim, routed=True)
    else:
        path = f"/webhooks/crm/{src.crm}/{victim.webhook_key}"
    req = hook.req
    if how == "resigned" and hook.signed_for:
        url = f"{world.rt.settings.public_url}{path}"
        headers = src.kit.resign(url, req.body)
        assert headers is not None, f"{src.crm}: a URL-bound signature the kit cannot make"
        return Webhook(Req(path, req.body, req.content_type, headers), signed_for=url)
    return Webhook(Req(path, req.body, req.content_type, dict(req.headers)), hook.signed_for)


def _check_builders(world: World) -> None:
    """Every builder, sent by its own tenant to its own URL, is accepted and
    does what it says — so that a refusal below is the tenant check."""
    for t in world.tenants:
        conv = t.convs[1]
        for event, effect in t.kit.events.items():
            if effect == "uninstall":
                continue  # would put the tenant to needs_reauth: checked in the cases
            before = _outbound_count(world, conv.id)
            hook = crm_request(
                world,
                t,
                event,
                conv=conv,
                entity=conv.crm_entity_id,
                contact=conv.crm_contact_id,
            )
            response = hook.send(world)
            assert response.status_code == 200, (t.slug, event, response.data)
            replied = _outbound_count(world, conv.id) == before + 1
            with world.rt.transaction() as s:
                row = s.get(Conversation, conv.id)
                contact = s.get(Contact, row.contact_id)
                done = {
                    "reply": replied,
                    "close": row.status == "closed",
                    "owner": row.owner_id is not None,
                    "contact_removed": contact.crm_contact_id is None,
                }[effect]
            assert done, (t.slug, event, "accepted but did nothing")
            restore(world, t)
    # the replies were queued for delivery: the job check below is not vacuous
    assert len(all_jobs(world.redis)) >= len(world.tenants)
    for name in (SYNC_QUEUE, DELIVER_QUEUE):
        world.rt.queues[name].empty()


def _outbound_count(world: World, conversation_id: int) -> int:
    with world.rt.transaction() as s:
        return len(
            s.scalars(
                select(Message.id).where(
                    Message.conversation_id == conversation_id, Message.direction == "out"
                )
            ).all()
        )


# ======================================================================================
# observing: whole-database diff, queued jobs, answers
# ======================================================================================


def _snapshot_sql() -> str:
    """One statement for the whole database (one round trip on PostgreSQL):
    every row of every table with its owner (``tenant_id``; a tenant owns
    itself) and all its columns as text."""
    parts = []
    for table in Base.metadata.sorted_tables:
        names = list(table.c.keys())
        owner = "id" if table.name == "tenants" else "tenant_id"
        assert owner in names, table.name
        row = " || '|' || ".join(f"COALESCE(CAST(\"{c}\" AS TEXT), '~')" for c in names)
        # its primary key (a tenant's own row of a per-tenant table: tenant_id)
        (pk,) = [c.name for c in table.primary_key.columns]
        # our own table and column names only
        sql = f'SELECT \'{table.name}\', "{pk}", "{owner}", {row} FROM "{table.name}"'  # noqa: S608
        parts.append(sql)
    return " UNION ALL ".join(parts)


SNAPSHOT_SQL = _snapshot_sql()


def snapshot(rt: Runtime) -> Snapshot:
    with rt.engine.connect() as conn:
        return {
            (table, int(pk)): (int(owner), row)
            for table, pk, owner, row in conn.exec_driver_sql(SNAPSHOT_SQL)
        }


def changed_owners(before: Snapshot, after: Snapshot) -> dict[int, list[str]]:
    """tenant id -> what changed of it (inserted, updated or deleted rows)."""
    owners: dict[int, list[str]] = {}
    for key in before.keys() | after.keys():
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        verb = "inserted" if a is None else "deleted" if b is None else "updated"
        for tenant in {row[0] for row in (a, b) if row is not None}:
            owners.setdefault(tenant, []).append(f"{key[0]}#{key[1]} {verb}")
    return owners


#: RQ's queue lists (building a Queue connects to nothing)
QUEUE_KEYS = [Queue(name, connection=redis.Redis()).key for name in (SYNC_QUEUE, DELIVER_QUEUE)]


def all_jobs(conn: redis.Redis) -> set[str]:
    """Every queued job id (RQ's queue lists, read directly)."""
    return {job.decode() for key in QUEUE_KEYS for job in conn.lrange(key, 0, -1)}


def new_job_owners(world: World, before: set[str], after_snap: Snapshot) -> dict[int, int]:
    """tenant id -> how many new jobs name its conversations."""
    out: Counter[int] = Counter()
    for job_id in all_jobs(world.redis) - before:
        job = Job.fetch(job_id, connection=world.redis)
        (conversation_id,) = job.args
        out[after_snap[("conversations", conversation_id)][0]] += 1
    return dict(out)


def json_error(response: Any) -> dict[str, Any]:
    assert response.mimetype == JSON, (response.status_code, response.data[:200])
    data = response.get_json()
    assert isinstance(data, dict) and set(data) == {"error", "message"}, data
    assert data["error"] and data["message"], data
    return data


def leaked(text: str, others: list[T]) -> list[str]:
    return [f"{t.slug}:{s[:24]}" for t in others for s in t.strings() if s in text]


@dataclass
class Outcome:
    """What a case may do: ``writers`` are the tenants whose rows (and jobs)
    may change; ``status``: the accepted answers."""

    status: set[int]
    writers: set[int] = field(default_factory=set)


class Runner:
    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.failures: list[str] = []
        self.kinds: Counter[str] = Counter()
        self.statuses: Counter[tuple[str, int]] = Counter()

    def pick_pair(self, same_crm: bool | None = None) -> tuple[T, T]:
        tenants = self.world.tenants
        a = self.rng.choice(tenants)
        others = [t for t in tenants if t is not a]
        if same_crm is True:
            others = [t for t in others if t.crm == a.crm]
        elif same_crm is False:
            others = [t for t in others if t.crm != a.crm]
        return a, self.rng.choice(others)

    def run(
        self,
        kind: str,
        description: str,
        attacker: T,
        act: Callable[[], tuple[int, str, Any]],
        outcome: Outcome,
    ) -> None:
        """Run one case: ``act`` returns (status, answer text, extra check)."""
        world = self.world
        self.kinds[kind] += 1
        # the database as the last case left it, unless someone wrote since
        before = world.last if world.last is not None else snapshot(world.rt)
        world.last = None
        jobs = all_jobs(world.redis)
        try:
            status, text, check = act()
            self.statuses[(kind, status)] += 1
            after = world.last = snapshot(world.rt)
            assert status in outcome.status, f"status {status}, expected {sorted(outcome.status)}"
            foreign = {
                world.tenant(tid).slug: what[:3]
                for tid, what in changed_owners(before, after).items()
                if tid not in outcome.writers
            }
            assert not foreign, f"rows of other tenants changed: {foreign}"
            jobs_for = {
                world.tenant(tid).slug: n
                for tid, n in new_job_owners(world, jobs, after).items()
                if tid not in outcome.writers
            }
            assert not jobs_for, f"jobs queued for other tenants' conversations: {jobs_for}"
            others = [t for t in world.tenants if t is not attacker and t.id not in outcome.writers]
            found = leaked(text, others)
            assert not found, f"the answer shows other tenants' data: {found}"
            if check is not None:
                check()
        except AssertionError as exc:
            self.failures.append(f"[{kind}] {description}: {exc}"[:600])

    def summary(self) -> str:
        lines = [f"{sum(self.kinds.values())} cases: {dict(sorted(self.kinds.items()))}"]
        lines.append(f"answers: {dict(sorted(self.statuses.items()))}")
        return "\n".join(lines)

    def assert_clean(self) -> None:
        print("\n" + self.summary())  # noqa: T201 (the report in -s runs)
        shown = "\n".join(self.failures[:25])
        assert not self.failures, (
            f"{len(self.failures)} cross-tenant failures (seed {SEED}):\n{shown}\n{self.summary()}"
        )


def http(response: Any, *, refused: bool) -> tuple[int, str, Any]:
    text = response.get_data(as_text=True)
    if refused:
        assert response.status_code >= 400, f"accepted ({response.status_code}): {text[:80]}"
        json_error(response)
    else:
        assert response.mimetype in ANSWERS, response.data[:200]
    return response.status_code, text, None


# ======================================================================================
# 1. webhooks
# ======================================================================================


@pytest.fixture
def world(settings, redis_conn) -> Iterator[World]:  # type: ignore[no-untyped-def]
    with build_world(settings, redis_conn) as w:
        yield w


def test_every_provider_has_a_kit() -> None:
    assert kits.missing() == []


def _delivery_for(world: World, a: T, n: int, b: T, chat: int, *, phone: bool) -> bytes:
    """A delivery from ``chat`` (a chat B has too), as A's ``n``-th account
    gets it; with ``phone``, the customer shares B's customer's phone number."""
    i = world.next_id()
    message = a.accounts[n].kit.customer_message
    if phone:
        return message(500_000 + i, chat, a.customer, phone=b.unique_phone)
    return message(500_000 + i, chat, a.customer, text=f"case {i}")


def webhook_case(r: Runner) -> None:
    world, rng = r.world, r.rng
    family = rng.choices(
        [
            "channel_foreign_url",
            "channel_own_url_foreign_ids",
            "crm_foreign_url",
            "crm_claims_foreign_account",
            "crm_own_url_foreign_objects",
            "crm_app_url",
        ],
        weights=[20, 13, 33, 11, 23, 8],
    )[0]

    if family == "channel_foreign_url":
        a, b = r.pick_pair()
        n = rng.randrange(len(a.accounts))
        kind = a.accounts[n].kit.kind  # B's account of the same channel
        m = rng.choice([j for j, acc in enumerate(b.accounts) if acc.kit.kind == kind])
        variant = rng.choice(["a_secret", "a_secret", "crm_key_as_channel_key"])
        chat = rng.choice([SHARED_CHAT, b.unique_chat])
        raw = _delivery_for(world, a, n, b, chat, phone=rng.random() < 0.3)
        path, expected = f"/webhooks/{kind}/{b.channel_keys[m]}", {403}
        if variant == "crm_key_as_channel_key":
            path, expected = f"/webhooks/{kind}/{b.webhook_key}", {404}
        r.run(
            family,
            f"{a.slug} account {n} delivery+proof -> {b.slug} account {m} ({variant})",
            a,
            lambda: http(post_delivery(world, a, n, raw, path=path), refused=True),
            Outcome(expected),
        )
        return

    if family == "channel_own_url_foreign_ids":
        a, b = r.pick_pair()
        n = rng.randrange(len(a.accounts))
        chat = rng.choice([SHARED_CHAT, SHARED_PHONE_CHAT, b.unique_chat])
        phone = rng.random() < 0.5
        raw = _delivery_for(world, a, n, b, chat, phone=phone)
        r.run(
            family,
            f"{a.slug} account {n}: chat {chat} of {b.slug}"
            + (f" sharing {b.slug}'s phone" * phone),
            a,
            lambda: http(post_delivery(world, a, n, raw), refused=False),
            Outcome({200}, writers={a.id}),
        )
        return

    if family == "crm_foreign_url":
        how = rng.choice(["as_signed", "resigned", "src_kind", "victim_kind"])
        a, b = r.pick_pair(same_crm=True if how in ("as_signed", "resigned") else None)
        event = rng.choice(list(a.kit.events))
        conv = rng.choice(b.convs + a.convs)
        hook = crm_request(
            world, a, event, conv=conv, entity=conv.crm_entity_id, contact=conv.crm_contact_id
        )
        sent = retarget(world, hook, a, b, how)
        if how == "src_kind" and a.crm != b.crm:
            expected = {404}
        elif how == "victim_kind" and a.crm != b.crm:
            # another CRM's body: that CRM's proof is missing (403) or the
            # content type is not one it takes (415)
            expected = {403, 415}
        else:
            expected = {403}
        r.run(
            family,
            f"{a.slug} {event} about {conv.uid[:8]} -> {b.slug} {sent.path[:40]} ({how})",
            a,
            lambda: http(sent.send(world), refused=True),
            Outcome(expected),
        )
        return

    if family == "crm_claims_foreign_account":
        # A's own proof (signature, token), a body that names B's account or
        # portal: at A's URL; where the proof travels in the body, at B's too
        a, b = r.pick_pair(same_crm=True)
        event = rng.choice(list(a.kit.events))
        conv = rng.choice(b.convs)
        hook = crm_request(
            world,
            a,
            event,
            conv=conv,
            entity=conv.crm_entity_id,
            contact=conv.crm_contact_id,
            claim=b,
        )
        at = "own_url"
        if a.kit.proof_in_body and rng.random() < 0.5:
            hook, at = retarget(world, hook, a, b, "as_signed"), "victim_url"
        r.run(
            family,
            f"{a.slug} {event} claiming {b.slug}'s account at {at}",
            a,
            lambda: http(hook.send(world), refused=True),
            Outcome({403}),
        )
        return

    if family == "crm_app_url":
        _app_url_case(r)
        return

    # crm_own_url_foreign_objects: A's genuine webhook at A's URL naming B's things
    a, b = r.pick_pair()
    event = rng.choice(list(a.kit.events))
    conv = rng.choice(b.convs)
    target = rng.choice(["conversation", "unique_ids", "shared_ids"])
    entity = conv.crm_entity_id if target != "shared_ids" else SHARED_ENTITY
    contact = conv.crm_contact_id if target != "shared_ids" else SHARED_CONTACT
    hook = crm_request(world, a, event, conv=conv, entity=entity, contact=contact)
    r.run(
        family,
        f"{a.slug} {event} at its own URL naming {b.slug}'s {target} ({conv.uid[:8]})",
        a,
        lambda: http(hook.send(world), refused=False),
        Outcome({200}, writers={a.id}),
    )
    if a.kit.events[event] == "uninstall":
        world.last = None
        with world.rt.transaction() as s:
            s.execute(
                update(Tenant).where(Tenant.id == a.id).values(status="active", status_reason=None)
            )


def _app_url_case(r: Runner) -> None:
    """A's genuine CRM webhook at its CRM's app URL, naming A's account and
    A's or B's objects: stored for A alone (404 without app webhooks)."""
    world, rng = r.world, r.rng
    a, b = r.pick_pair()
    event = rng.choice(list(a.kit.events))
    conv = rng.choice(b.convs + a.convs)
    hook = crm_request(
        world, a, event, conv=conv, entity=conv.crm_entity_id, contact=conv.crm_contact_id
    )
    path = f"/webhooks/crm/{a.crm}/app"
    has_app = crm_class(a.crm).has_app_webhooks
    req = hook.req
    headers = dict(req.headers)
    if has_app:
        resigned = a.kit.resign(f"{world.rt.settings.public_url}{path}", req.body)
        assert resigned is not None, f"{a.crm}: app webhooks, but no app-wide signature"
        headers = resigned
    sent = Req(path, req.body, req.content_type, headers)
    own = conv in a.convs
    before = _outbound_count(world, conv.id)

    def act() -> tuple[int, str, Any]:
        status, text, _ = http(sent.send(world.client), refused=not has_app)
        if not (has_app and own and a.kit.events[event] == "reply"):
            return status, text, None
        # not vacuous: A's own reply through the app URL is stored for A
        return status, text, lambda: _equal(_outbound_count(world, conv.id), before + 1, "replies")

    r.run(
        "crm_app_url",
        f"{a.slug} {event} at the {a.crm} app URL naming {a.slug if own else b.slug}'s "
        f"conversation {conv.uid[:8]}",
        a,
        act,
        Outcome({200}, writers={a.id}) if has_app else Outcome({404}),
    )
    if has_app and a.kit.events[event] == "uninstall":
        world.last = None
        with world.rt.transaction() as s:
            s.execute(
                update(Tenant).where(Tenant.id == a.id).values(status="active", status_reason=None)
            )


def test_webhooks_never_cross_tenants(world: World) -> None:
    rng = random.Random(f"{SEED}:webhooks:{world.database}")
    runner = Runner(world, rng)
    n = cases("webhooks")
    started = time.monotonic()
    for _ in range(n):
        webhook_case(runner)
    log.info("webhook cases: %d in %.1f s", n, time.monotonic() - started)
    assert sum(runner.kinds.values()) == n
    runner.assert_clean()


# ======================================================================================
# 2. operator calls: admin, CLI, /api/status
# ======================================================================================


def _cli(world: World, *args: str) -> tuple[int, str]:
    settings = world.rt.settings
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": world.rt.redis_url,
        "BRIDGE_VAR_DIR": str(settings.var_dir),
        "BRIDGE_MAPPINGS_DIR": str(settings.mappings_dir),
        "BRIDGE_SECRET_KEYS": ",".join(settings.secret_keys) or None,
        "BRIDGE_PUBLIC_URL": settings.public_url,
    }
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("urllib3").level)
    try:
        result = CliRunner().invoke(cli_main, list(args), env=env, catch_exceptions=True)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("urllib3").setLevel(saved[2])
        current = bridge.runtime._current  # the runtime the command built
        if current is not None and current is not world.rt:
            current.close()
        set_runtime(world.rt)
    return result.exit_code, result.output


def _own_counts(world: World, a: T) -> dict[str, Any]:
    with world.rt.transaction() as s:
        messages = s.execute(
            select(Message.direction, Message.status, Message.uid, Message.conversation_id).where(
                Message.tenant_id == a.id
            )
        ).all()
        conversations = set(
            s.scalars(select(Conversation.id).where(Conversation.tenant_id == a.id))
        )
    counts: dict[str, Counter[str]] = {"in": Counter(), "out": Counter()}
    for direction, status, _, _ in messages:
        counts[direction][status] += 1
    return {
        "counts": {d: dict(c) for d, c in counts.items()},
        "conversations": conversations,
        "uids": {m[2] for m in messages},
    }


def _check_status(world: World, a: T, data: dict[str, Any]) -> None:
    own = _own_counts(world, a)
    assert [t["id"] for t in data["tenants"]] == [a.id], data["tenants"]
    assert data["conversations"] == len(own["conversations"])
    assert data["messages"] == own["counts"], (data["messages"], own["counts"])
    assert {p["conversation"] for p in data["parked"]} <= own["conversations"], data["parked"]
    assert {f["message"] for f in data["failed"]} <= own["uids"], data["failed"]
    assert {f["conversation"] for f in data["failed"]} <= own["conversations"]
    assert a.failed_uid in {f["message"] for f in data["failed"]}  # A does see its own


def operator_case(r: Runner) -> None:
    world, rng = r.world, r.rng
    family = rng.choices(
        ["admin_status", "admin_replay", "api_status", "cli_status", "cli_replay"],
        weights=[25, 45, 18, 6, 6],
    )[0]
    a, b = r.pick_pair()
    for t in (a, b):
        refail(world, t)

    if family == "admin_status":

        def act() -> tuple[int, str, Any]:
            data = admin.status(world.rt, a.id)
            return 200, json.dumps(data, default=str), lambda: _check_status(world, a, data)

        r.run(family, f"admin.status({a.slug})", a, act, Outcome({200}))
        return

    if family == "admin_replay":
        own = rng.choice(a.convs).id
        scope, named = rng.choice(
            [
                ({"message_uid": b.failed_uid}, f"message_uid=<{b.slug}'s failed>"),
                ({"conversation_id": rng.choice(b.convs).id}, f"conversation_id=<{b.slug}'s>"),
                ({"conversation_id": b.failed_conv}, f"conversation_id=<{b.slug}'s parked>"),
                (
                    {"message_uid": b.failed_uid, "conversation_id": b.failed_conv},
                    f"message_uid, conversation_id=<{b.slug}'s>",
                ),
                (
                    {"message_uid": b.failed_uid, "conversation_id": own},
                    f"message_uid=<{b.slug}'s>, conversation_id=<{a.slug}'s own>",
                ),
            ]
        )

        def act() -> tuple[int, str, Any]:
            n = admin.replay(world.rt, tenant_id=a.id, **scope)
            return 200, str(n), lambda: _equal(n, 0, "messages requeued")

        # A's own conversation may be resumed (it is A's); B's rows must not move
        r.run(
            family,
            f"admin.replay(tenant={a.slug}, {named})",
            a,
            act,
            Outcome({200}, writers={a.id}),
        )
        return

    if family == "api_status":
        token = rng.choice([a.webhook_key, *a.channel_keys, *a.channel_secrets, *a.crm_secrets])
        query = rng.choice([{}, {"tenant": str(b.id)}, {"tenant": b.slug}])
        header = rng.choice([f"Bearer {token}", token, f"Bearer {token} "])

        def act() -> tuple[int, str, Any]:
            response = world.client.get(
                "/api/status", headers={"Authorization": header}, query_string=query
            )
            return http(response, refused=True)

        r.run(
            family,
            f"/api/status with {a.slug}'s secret as the token {query}",
            a,
            act,
            Outcome({401}),
        )
        return

    if family == "cli_status":
        as_json = rng.random() < 0.6

        def act() -> tuple[int, str, Any]:
            code, out = _cli(world, "status", "--tenant", a.slug, *(["--json"] if as_json else []))
            assert code == 0, out
            check = (lambda: _check_status(world, a, json.loads(out))) if as_json else None
            return 200, out, check

        r.run(family, f"bridge status --tenant {a.slug}", a, act, Outcome({200}))
        return

    # cli_replay
    scope = rng.choice(
        [
            ["--message", b.failed_uid],
            ["--conversation", str(b.failed_conv)],
            ["--conversation", str(rng.choice(b.convs).id)],
        ]
    )

    def act() -> tuple[int, str, Any]:
        code, out = _cli(world, "replay", "--tenant", a.slug, *scope)
        assert code == 0, out
        return 200, out, lambda: _equal(out.strip(), "requeued 0 message(s)", "CLI says")

    r.run(
        family,
        f"bridge replay --tenant {a.slug} {scope[0]} <{b.slug}'s>",
        a,
        act,
        Outcome({200}),
    )


def _equal(got: Any, want: Any, what: str) -> None:
    assert got == want, f"{what}: {got!r}, expected {want!r}"


def test_operator_calls_never_cross_tenants(world: World, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    admin_token = secrets.token_urlsafe(24)
    monkeypatch.setenv("BRIDGE_ADMIN_TOKEN", admin_token)
    # the control: the operator's own token does open /api/status (the 401s are real)
    assert (
        world.client.get(
            "/api/status", headers={"Authorization": f"Bearer {admin_token}"}
        ).status_code
        == 200
    )
    rng = random.Random(f"{SEED}:operator:{world.database}")
    runner = Runner(world, rng)
    n = cases("operator")
    for _ in range(n):
        operator_case(runner)
    runner.assert_clean()


# ======================================================================================
# 3. OAuth installs
# ======================================================================================


@pytest.fixture
def oauth_world(settings, redis_conn) -> Iterator[World]:  # type: ignore[no-untyped-def]
    assert OAUTH, "no CRM kit plays an OAuth install (CrmKit.isolation_oauth)"
    with ExitStack() as stack:
        served = {kit.kind: stack.enter_context(oauth.sandbox(oauth.fast)) for kit, oauth in OAUTH}
        with build_world(settings, redis_conn, {k: url for k, (url, _) in served.items()}) as w:
            w.spies = {k: spy for k, (_, spy) in served.items()}
            yield w
        # the bridge's HTTP sessions keep connections to the sandbox open, and
        # its server waits for them on shutdown: let them go first
        gc.collect()


def _credentials_of(world: World, tenant_id: int) -> dict[str, Any]:
    with world.rt.transaction() as s:
        return world.rt.decrypt_tenant_credentials(s.get(Tenant, tenant_id))


def _mapping_of(world: World, tenant_id: int) -> str:
    with world.rt.transaction() as s:
        return s.get(Tenant, tenant_id).mapping


def oauth_case(r: Runner) -> None:
    world, rng = r.world, r.rng
    kit, oauth = rng.choice(OAUTH)
    crm, url = kit.kind, world.sandboxes[kit.kind]
    a = rng.choice(world.tenants)  # whose install link minted the state
    # the account whose admin consents
    b = rng.choice([t for t in world.tenants if t.crm == crm and t is not a])
    family = rng.choice(["state_of_a_consent_of_b", "forged_state"])
    query = start_install(world.client, mapping=a.mapping, crm=crm)

    if family == "state_of_a_consent_of_b":
        back = oauth.consent(url, query, b.account_id)

        def act() -> tuple[int, str, Any]:
            response = finish_install(world.client, back, crm=crm)
            data = response.get_json()

            def check() -> None:
                # the install lands in the consenting account's tenant, with its
                # own account's token and its own mapping: the state names no tenant
                _equal(data.get("tenant"), b.id, "installed into")
                token_of = oauth.account_of(url, _credentials_of(world, b.id))
                _equal(token_of, b.account_id, "token's account")
                _equal(_mapping_of(world, b.id), b.mapping, "mapping")

            return response.status_code, response.get_data(as_text=True), check

        r.run(
            family,
            f"install link of {a.slug} ({a.mapping}), consent in {b.slug}'s account",
            a,
            act,
            Outcome({200}, writers={b.id}),
        )
        return

    back = oauth.consent(url, query, b.account_id)
    how = rng.choice(["other_deployment", "tampered", "other_crm", "unsigned_json"])
    if how == "other_deployment":
        foreign = URLSafeTimedSerializer(secrets.token_hex(32), salt="oauth-state")
        back["state"] = foreign.dumps({"crm": crm, "mapping": a.mapping, "tenant": b.id})
    elif how == "tampered":
        state = back["state"]
        i = rng.randrange(len(state))
        back["state"] = state[:i] + ("A" if state[i] != "A" else "B") + state[i + 1 :]
    elif how == "other_crm":
        other = install_url(
            world.rt, rng.choice([k.kind for k in CRMS if k.kind != crm]), a.mapping
        )
        back["state"] = next(
            v
            for k, v in (p.split("=", 1) for p in other.split("?", 1)[1].split("&"))
            if k == "state"
        )
    else:
        back["state"] = json.dumps({"crm": crm, "tenant": b.id})
    spy = world.spies[crm]
    grants = len(spy.grants)

    def act() -> tuple[int, str, Any]:
        response = finish_install(world.client, back, crm=crm)
        status, text, _ = http(response, refused=True)
        return status, text, lambda: _equal(len(spy.grants), grants, "codes exchanged")

    r.run(family, f"{how} state with {b.slug}'s code", a, act, Outcome({403}))


def test_oauth_installs_never_cross_tenants(oauth_world: World) -> None:
    rng = random.Random(f"{SEED}:oauth:{oauth_world.database}")
    runner = Runner(oauth_world, rng)
    n = cases("oauth")
    for _ in range(n):
        oauth_case(runner)
    runner.assert_clean()
