"""Test doubles of the core, defined once and imported everywhere.

* :class:`FakeCrm` (and :class:`FakeCrmAtOnce`, :class:`FakeCrmBatch`): an in-memory CRM adapter for
  unit tests of the core pipeline. It keeps the contract's duties (lookup by
  identity/phone/e-mail, find the entity by conversation uid, at most one
  entry per bridge id when ``maybe_written``) and lets a test script failures
  per call. Integration tests use the real adapters against the sandbox.
* :class:`MemoryCredentials`: the core's ``CredentialProvider`` in memory,
  single-flight like the real store.
* :class:`RecordingLimiter` (records what an adapter asked of the shared
  bucket) and :class:`LocalBucket` (a real token bucket in one process):
  ``bridge.model.RateLimiter`` without Redis.
* :class:`FakeAppChannel`: a channel with every edge the dispatcher serves
  (a GET handshake on the account's URL, one app-routed URL with its own
  handshake), shaped like Meta's, for the suites that attack every route.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from bridge.errors import BridgeError, PayloadError, PermanentError, SignatureError
from bridge.model import (
    ContactDraft,
    ContactLookup,
    CrmContact,
    CrmEvent,
    CrmRef,
    DeliveryReport,
    EntityDraft,
    InboundEvent,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    Owner,
    Rate,
    RawDelivery,
    SendResult,
    TaskDraft,
    TimelineEntry,
    WebhookAnswer,
    WebhookRequest,
)
from bridge.schema import setting
from channel_adapters.base import ChannelAdapter
from crm_adapters.base import CrmAdapter


class FakeCrmState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.contacts: dict[str, dict[str, Any]] = {}
        self.entities: dict[str, dict[str, Any]] = {}
        self.entries: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.reports: list[DeliveryReport] = []
        self.calls: list[str] = []
        #: hook name -> list of callables run before the hook (may raise)
        self.faults: dict[str, list[Callable[[Any], None]]] = defaultdict(list)
        #: hook name -> callables run after the effect (commit-then-fail)
        self.after: dict[str, list[Callable[[Any], None]]] = defaultdict(list)
        #: run per entry after every entry of an append was written, as a
        #: CRM's second step (HubSpot: the note, then the inbox message): a
        #: raise there leaves the whole batch's first step written
        self.second_step: list[Callable[[TimelineEntry], None]] = []
        #: lookups of maybe-written entries find nothing (a search index
        #: that lags behind writes, as HubSpot's does: FACTS 3.3)
        self.blind_lookups = False
        #: the CRM can merge two contacts through its API (else the core links them)
        self.can_merge = True
        #: contact id -> the contact it was merged into
        self.merged: dict[str, str] = {}
        #: notes on contacts: (contact id, text, key)
        self.notes: list[tuple[str, str, str]] = []
        #: live field writes: (contact id, properties)
        self.field_writes: list[tuple[str, dict[str, str]]] = []

    def fail_next(
        self, hook: str, error: BridgeError, *, after_commit: bool = False, times: int = 1
    ) -> None:
        remaining = [times]

        def fault(_arg: Any) -> None:
            if remaining[0] > 0:
                remaining[0] -= 1
                raise error

        (self.after if after_commit else self.faults)[hook].append(fault)

    def fail_second_step(self, error: BridgeError, *, times: int = 1) -> None:
        """The next ``times`` second steps of an append fail with ``error``
        after the first step wrote every entry of the batch."""
        remaining = [times]

        def fault(_entry: TimelineEntry) -> None:
            if remaining[0] > 0:
                remaining[0] -= 1
                raise error

        self.second_step.append(fault)

    def entries_for(self, bridge_id: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["bridge_id"] == bridge_id]


STATE = FakeCrmState()


class FakeCrm(CrmAdapter):
    kind = "fake"
    title = "FakeCRM"
    rate = Rate(1000, 1000)
    entity_types = ("deal", "ticket")

    def _hook(self, name: str, arg: Any, effect: Callable[[], Any]) -> Any:
        STATE.calls.append(name)
        for fault in list(STATE.faults[name]):
            fault(arg)
        with STATE.lock:
            result = effect()
        for fault in list(STATE.after[name]):
            fault(arg)
        return result

    def find_contact(self, lookup: ContactLookup) -> CrmContact | None:
        def effect() -> CrmContact | None:
            for cid, c in STATE.contacts.items():
                if (
                    any(c["identities"].get(k) == v for k, v in lookup.identities.items())
                    or (set(lookup.phones) & set(c["phones"]))
                    or (set(lookup.emails) & set(c["emails"]))
                ):
                    return CrmContact(CrmRef("contact", cid), c.get("owner"))
            return None

        return self._hook("find_contact", lookup, effect)

    def create_contact(self, draft: ContactDraft) -> CrmContact:
        def effect() -> CrmContact:
            cid = str(next(STATE.ids))
            STATE.contacts[cid] = {
                "identities": dict(draft.lookup.identities),
                "phones": list(draft.lookup.phones),
                "emails": list(draft.lookup.emails),
                "owner": draft.owner_id,
                "properties": dict(draft.properties),
                "name": draft.profile.name(),
            }
            return CrmContact(CrmRef("contact", cid), draft.owner_id)

        return self._hook("create_contact", draft, effect)

    def update_contact(self, contact: CrmRef, draft: ContactDraft) -> None:
        def effect() -> None:
            c = STATE.contacts[contact.id]
            c["phones"] = sorted(set(c["phones"]) | set(draft.lookup.phones))
            c["emails"] = sorted(set(c["emails"]) | set(draft.lookup.emails))
            c["identities"].update(draft.lookup.identities)

        return self._hook("update_contact", draft, effect)

    def write_contact_fields(self, contact: CrmRef, properties: Mapping[str, str]) -> None:
        def effect() -> None:
            STATE.contacts[contact.id].setdefault("properties", {}).update(properties)
            STATE.field_writes.append((contact.id, dict(properties)))

        self._hook("write_contact_fields", (contact, properties), effect)

    def merge_contacts(self, keep: CrmRef, gone: CrmRef) -> bool:
        def effect() -> bool:
            if not STATE.can_merge:
                return False
            STATE.merged[gone.id] = keep.id
            return True

        return bool(self._hook("merge_contacts", (keep, gone), effect))

    def note_contact(self, contact: CrmRef, text: str, key: str) -> CrmRef:
        def effect() -> CrmRef:
            if not any(k == key for _, _, k in STATE.notes):  # a retry finds its note
                STATE.notes.append((contact.id, text, key))
            return CrmRef("note", key)

        return self._hook("note_contact", (contact, text, key), effect)  # type: ignore[no-any-return]

    def find_entity(self, draft: EntityDraft) -> CrmRef | None:
        def effect() -> CrmRef | None:
            for eid, e in STATE.entities.items():
                if e["conversation_uid"] == draft.conversation_uid:
                    return CrmRef(draft.object_type, eid)
            return None

        return self._hook("find_entity", draft, effect)

    def read_contact_fields(self, contact: CrmRef, names: Sequence[str]) -> dict[str, str]:
        def effect() -> dict[str, str]:
            fields = STATE.contacts[contact.id].get("fields") or {}
            return {n: str(fields[n]) for n in names if fields.get(n) not in (None, "")}

        return self._hook("read_contact_fields", (contact, names), effect)  # type: ignore[no-any-return]

    def update_entity(
        self, entity: CrmRef, properties: Mapping[str, str], owner_id: str | None = None
    ) -> None:
        def effect() -> None:
            found = STATE.entities[entity.id]
            found["properties"].update(properties)
            if owner_id:
                found["owner"] = owner_id

        self._hook("update_entity", (entity, properties, owner_id), effect)

    has_entity_tags = True

    def tag_entity(self, entity: CrmRef, tags: Sequence[str]) -> None:
        def effect() -> None:
            found = STATE.entities[entity.id].setdefault("tags", [])
            found.extend(t for t in tags if t not in found)

        self._hook("tag_entity", (entity, tuple(tags)), effect)

    def create_entity(self, draft: EntityDraft) -> CrmRef:
        def effect() -> CrmRef:
            eid = str(next(STATE.ids))
            STATE.entities[eid] = {
                "type": draft.object_type,
                "conversation_uid": draft.conversation_uid,
                "contact": draft.contact.id,
                "owner": draft.owner_id,
                "name": draft.name,
                "pipeline": draft.pipeline,
                "stage": draft.stage,
                "properties": dict(draft.properties),
            }
            return CrmRef(draft.object_type, eid)

        return self._hook("create_entity", draft, effect)

    def entity_is_open(self, entity: CrmRef) -> bool:
        return self._hook(
            "entity_is_open",
            entity,
            lambda: not STATE.entities.get(entity.id, {}).get("closed", False),
        )

    def append_entries(self, entries: Sequence[TimelineEntry]) -> dict[str, tuple[CrmRef, ...]]:
        def effect() -> dict[str, tuple[CrmRef, ...]]:
            out = {}
            for entry in entries:
                done = entry.written_ref("note")
                if done is not None:
                    out[entry.bridge_id] = (done,)  # an earlier attempt wrote it
                    continue
                if entry.maybe_written and not STATE.blind_lookups:
                    found = STATE.entries_for(entry.bridge_id)
                    if found:
                        out[entry.bridge_id] = (CrmRef("note", found[0]["id"]),)
                        continue
                nid = str(next(STATE.ids))
                STATE.entries.append(
                    {
                        "id": nid,
                        "bridge_id": entry.bridge_id,
                        "conversation_uid": entry.conversation_uid,
                        "contact": entry.contact.id,
                        "entity": entry.entity.id if entry.entity else None,
                        "text": entry.text,
                        "kind": entry.kind.value,
                        "sequence": entry.sequence,
                        "occurred_at": entry.occurred_at,
                        "is_edit": entry.is_edit,
                        "late": entry.late,
                        "owner": entry.owner_id,
                        "first": entry.first_in_conversation,
                        "attachments": entry.attachments,
                        "direction": entry.direction,
                    }
                )
                out[entry.bridge_id] = (CrmRef("note", nid),)
            return self._second_step(entries, out)

        return self._hook("append_entries", entries, effect)

    @staticmethod
    def _second_step(
        entries: Sequence[TimelineEntry], written: dict[str, tuple[CrmRef, ...]]
    ) -> dict[str, tuple[CrmRef, ...]]:
        done: dict[str, tuple[CrmRef, ...]] = {}
        for entry in entries:
            try:
                for fault in list(STATE.second_step):
                    fault(entry)
            except BridgeError as exc:
                exc.partial = dict(done)  # the entries completed before this one
                # this one and the ones after it: the first step is written
                exc.progress = {e.bridge_id: written[e.bridge_id] for e in entries[len(done) :]}
                raise
            done[entry.bridge_id] = written[entry.bridge_id]
        return done

    def create_task(self, draft: TaskDraft) -> CrmRef:
        def effect() -> CrmRef:
            if draft.maybe_written:
                for t in STATE.tasks:
                    if t["bridge_id"] == draft.bridge_id:
                        return CrmRef("task", t["id"])
            tid = str(next(STATE.ids))
            STATE.tasks.append(
                {
                    "id": tid,
                    "bridge_id": draft.bridge_id,
                    "subject": draft.subject,
                    "owner": draft.owner_id,
                }
            )
            return CrmRef("task", tid)

        return self._hook("create_task", draft, effect)

    def list_owners(self) -> list[Owner]:
        return [Owner("101"), Owner("102"), Owner("103")]

    def verify_webhook(self, request: WebhookRequest) -> None:
        return None

    def parse_webhook(self, request: WebhookRequest) -> list[CrmEvent]:
        return []

    def report_delivery(self, report: DeliveryReport) -> None:
        self._hook("report_delivery", report, lambda: STATE.reports.append(report))


class FakeCrmAtOnce(FakeCrm):
    """A CRM that opens a conversation in one request (like Bitrix24's
    batch): contact, entity, task and entries as one atomic hook."""

    kind = "fake_once"
    opens_at_once = True

    def open_conversation(
        self,
        *,
        contact: CrmRef | ContactDraft,
        entity: EntityDraft,
        task: TaskDraft | None = None,
        entries: Sequence[TimelineEntry] = (),
    ) -> Any:
        def effect() -> Any:
            made = (
                _raw(FakeCrm.create_contact, self, contact)
                if isinstance(contact, ContactDraft)
                else CrmContact(contact, None)
            )
            ref = _raw(FakeCrm.create_entity, self, replace(entity, contact=made.ref))
            task_ref = _raw(FakeCrm.create_task, self, replace(task, entity=ref)) if task else None
            fixed = [replace(e, contact=made.ref, entity=ref) for e in entries]
            written = _raw(FakeCrm.append_entries, self, fixed)
            return Opened(made, ref, task_ref, written)

        return self._hook("open_conversation", entity, effect)


class FakeCrmBatch(FakeCrm):
    """A CRM with batch calls (like HubSpot's): each batch hook is one
    request (one ``calls`` entry, one place for scripted faults) and
    commits all of its items or none."""

    kind = "fake_batch"
    batch_size = 4
    #: its lookups of maybe-written entries are in memory: all at once
    finds_entries_at_once = True

    def find_contacts(self, lookups: Mapping[str, ContactLookup]) -> dict[str, CrmContact]:
        def effect() -> dict[str, CrmContact]:
            found = {k: _raw(FakeCrm.find_contact, self, lookup) for k, lookup in lookups.items()}
            return {k: c for k, c in found.items() if c is not None}

        assert len(lookups) <= self.batch_size
        return self._hook("find_contacts", lookups, effect)

    def create_contacts(self, drafts: Mapping[str, ContactDraft]) -> dict[str, CrmContact]:
        assert len(drafts) <= self.batch_size
        return self._hook(
            "create_contacts",
            drafts,
            lambda: {k: _raw(FakeCrm.create_contact, self, d) for k, d in drafts.items()},
        )

    def find_entities(self, drafts: Mapping[str, EntityDraft]) -> dict[str, CrmRef]:
        def effect() -> dict[str, CrmRef]:
            found = {k: _raw(FakeCrm.find_entity, self, d) for k, d in drafts.items()}
            return {k: r for k, r in found.items() if r is not None}

        assert len(drafts) <= self.batch_size
        return self._hook("find_entities", drafts, effect)

    def create_entities(self, drafts: Mapping[str, EntityDraft]) -> dict[str, CrmRef]:
        assert len(drafts) <= self.batch_size
        return self._hook(
            "create_entities",
            drafts,
            lambda: {k: _raw(FakeCrm.create_entity, self, d) for k, d in drafts.items()},
        )

    def create_tasks(self, drafts: Mapping[str, TaskDraft]) -> dict[str, CrmRef]:
        assert len(drafts) <= self.batch_size
        return self._hook(
            "create_tasks",
            drafts,
            lambda: {k: _raw(FakeCrm.create_task, self, d) for k, d in drafts.items()},
        )


@dataclass
class Opened:
    contact: CrmContact
    entity: CrmRef
    task: CrmRef | None
    entries: dict[str, tuple[CrmRef, ...]]


def _raw(hook: Callable[..., Any], adapter: FakeCrm, arg: Any) -> Any:
    """Run a hook's effect without recording a call or running faults."""
    saved = adapter._hook
    adapter._hook = lambda _name, _arg, effect: effect()  # type: ignore[method-assign]
    try:
        return hook(adapter, arg)
    finally:
        adapter._hook = saved  # type: ignore[method-assign]


class MemoryCredentials:
    """The core's credential store, in memory (one process): ``refresh`` runs
    the adapter's refresher only if nobody refreshed since ``stale`` was
    read, like the real single-flight store (one at a time: a lock).

    ``refresher`` is set by whoever builds the adapter
    (``store.refresher = adapter.refresh_credentials``) or given here;
    ``calls`` counts every ``refresh`` asked for, ``refreshes`` the ones
    that reached the refresher."""

    def __init__(
        self,
        creds: Mapping[str, Any],
        refresher: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> None:
        self.creds = dict(creds)
        self.refresher = refresher
        self.calls = 0
        self.refreshes = 0
        self._lock = threading.Lock()

    def get(self) -> Mapping[str, Any]:
        return dict(self.creds)

    def refresh(self, stale: Mapping[str, Any]) -> Mapping[str, Any]:
        with self._lock:
            self.calls += 1
            if self.creds == dict(stale):
                assert self.refresher is not None, "no refresher: set store.refresher"
                self.creds = dict(self.refresher(stale))
                self.refreshes += 1
            return dict(self.creds)


class RecordingLimiter:
    """``bridge.model.RateLimiter`` that grants everything at once and
    records what was asked: ``acquired`` (key, rate) with ``costs`` beside
    it, and ``penalties`` (key, seconds)."""

    def __init__(self) -> None:
        self.acquired: list[tuple[str, Rate]] = []
        self.costs: list[float] = []
        self.penalties: list[tuple[str, float]] = []

    def acquire(self, key: str, rate: Rate, cost: float = 1.0) -> None:
        self.acquired.append((key, rate))
        self.costs.append(cost)

    def penalise(self, key: str, seconds: float) -> None:
        self.penalties.append((key, seconds))


class LocalBucket:
    """``bridge.model.RateLimiter`` in one process (the deployment's is the
    Redis bucket): every adapter call waits for a token, as in production,
    against a sandbox that enforces the vendor's limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._blocked: dict[str, float] = {}

    def acquire(self, key: str, rate: Rate, cost: float = 1.0) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                if self._blocked.get(key, 0.0) > now:
                    wait = self._blocked[key] - now
                else:
                    tokens, stamp = self._buckets.get(key, (rate.capacity, now))
                    tokens = min(rate.capacity, tokens + (now - stamp) * rate.per_second)
                    if tokens >= cost:
                        self._buckets[key] = (tokens - cost, now)
                        return
                    self._buckets[key] = (tokens, now)
                    wait = (cost - tokens) / rate.per_second
            time.sleep(wait)

    def penalise(self, key: str, seconds: float) -> None:
        with self._lock:
            self._blocked[key] = time.monotonic() + seconds
            self._buckets[key] = (0.0, time.monotonic() + seconds)


# -- a channel with every edge: handshakes and one app-routed URL ---------------------------


@dataclass(frozen=True)
class FakeAppApp:
    """The deployment's app: the secret its deliveries are signed with, the
    verify token of the app URL's handshake."""

    app_secret: str = setting("", secret=True)
    verify_token: str = setting("", secret=True)


@dataclass(frozen=True)
class FakeAppCredentials:
    """An account's own handshake token."""

    verify_token: str = setting("", secret=True)


class FakeAppChannel(ChannelAdapter):
    """A channel shaped like Meta's WhatsApp Cloud API, for the suites that
    attack every inbound route (no production adapter uses all of them yet).

    Deliveries are JSON ``{"object", "entry": [{"changes": [{"value":
    {"metadata": {"phone_number_id"}, "messages": [...]}}]}]}`` signed with
    the app's secret (``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``),
    posted to one app-level URL (``/webhooks/fakeapp/app``: routed by
    ``phone_number_id``) or to an account's own URL (which must be named in
    the body). Both URLs answer Meta's ``GET ?hub.mode=subscribe
    &hub.verify_token=…&hub.challenge=…`` handshake: the account's token or
    the app's, compared in constant time; the challenge is echoed."""

    kind: ClassVar[str] = "fakeapp"
    title: ClassVar[str] = "Fake app channel"
    app_routed: ClassVar[bool] = True
    App: ClassVar[type[Any]] = FakeAppApp
    Credentials: ClassVar[type[Any]] = FakeAppCredentials

    # -- the app's proof

    @staticmethod
    def signature(secret: str, body: bytes) -> str:
        return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    @classmethod
    def _check_signature(cls, app: FakeAppApp, request: WebhookRequest) -> None:
        given = request.header("x-hub-signature-256") or ""
        if not app.app_secret or not hmac.compare_digest(
            given.encode("utf-8", "replace"), cls.signature(app.app_secret, request.body).encode()
        ):
            raise SignatureError("X-Hub-Signature-256 does not match")

    @staticmethod
    def _challenge(expected: str, request: WebhookRequest) -> WebhookAnswer:
        given = request.query.get("hub.verify_token", "")
        if (
            request.query.get("hub.mode") != "subscribe"
            or not expected
            or not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())
        ):
            raise SignatureError("hub.verify_token does not match")
        return WebhookAnswer.text(request.query.get("hub.challenge", ""))

    @staticmethod
    def _values(request: WebhookRequest) -> list[Mapping[str, Any]]:
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError):
            raise PayloadError("the body is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("entry"), list):
            raise PayloadError("the body has no entry list")
        values = []
        for entry in data["entry"]:
            changes = entry.get("changes") if isinstance(entry, dict) else None
            for change in changes if isinstance(changes, list) else []:
                value = change.get("value") if isinstance(change, dict) else None
                if isinstance(value, dict) and isinstance(value.get("metadata"), dict):
                    values.append(value)
        if not values:
            raise PayloadError("the body names no account (metadata.phone_number_id)")
        return values

    # -- an account's URL

    def verify(self, request: WebhookRequest) -> None:
        self._check_signature(self.app, request)
        try:
            named = {str(v["metadata"].get("phone_number_id")) for v in self._values(request)}
        except PayloadError:
            return  # the signature is right: parse names what is wrong
        if self.account.external_id not in named:
            raise SignatureError("the delivery is for another account")

    def handshake(self, request: WebhookRequest) -> WebhookAnswer:
        return self._challenge(self.credentials.verify_token, request)

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        """One journal row per message of this account, keyed by its id
        (as a WhatsApp adapter keys by wamid): the body kept is the
        envelope around that one message."""
        try:
            values = self._values(request)
        except UnicodeDecodeError:
            raise PayloadError("the body is not JSON in UTF-8") from None
        deliveries = []
        for value in values:
            if str(value["metadata"].get("phone_number_id")) != self.account.external_id:
                continue
            messages = value.get("messages")
            for message in messages if isinstance(messages, list) else []:
                if not isinstance(message, dict) or not isinstance(message.get("id"), str):
                    raise PayloadError("a message without an id")
                one = {"entry": [{"changes": [{"value": {**value, "messages": [message]}}]}]}
                deliveries.append(RawDelivery(message["id"], json.dumps(one).encode()))
        return deliveries

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        events: list[InboundEvent] = []
        for value in self._values(request):
            if str(value["metadata"].get("phone_number_id")) != self.account.external_id:
                continue
            messages = value.get("messages")
            for message in messages if isinstance(messages, list) else []:
                if not isinstance(message, dict):
                    raise PayloadError("a message is not an object")
                ids = [message.get(k) for k in ("id", "from", "timestamp")]
                if not all(isinstance(v, str) and v for v in ids):
                    raise PayloadError("a message without id, from or timestamp")
                try:
                    sent_at = dt.datetime.fromtimestamp(int(message["timestamp"]), dt.UTC)
                except (ValueError, OverflowError, OSError):
                    raise PayloadError("a message with a bad timestamp") from None
                text = message.get("text")
                body = text.get("body") if isinstance(text, dict) else None
                events.append(
                    InboundMessage(
                        channel_kind=self.kind,
                        external_id=str(message["id"]),
                        external_user_id=str(message["from"]),
                        external_thread_id=str(message["from"]),
                        kind=MessageKind.TEXT if isinstance(body, str) else MessageKind.UNKNOWN,
                        sent_at=sent_at,
                        text=body if isinstance(body, str) else "",
                        raw=message,
                    )
                )
        return events

    def send(self, message: OutboundMessage) -> SendResult:
        raise PermanentError("the fake app channel sends nothing")

    # -- the app's URL

    @classmethod
    def verify_app(cls, app: FakeAppApp, request: WebhookRequest) -> None:
        cls._check_signature(app, request)

    @classmethod
    def route(cls, app: FakeAppApp, request: WebhookRequest) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(str(v["metadata"].get("phone_number_id")) for v in cls._values(request))
        )

    @classmethod
    def app_handshake(cls, app: FakeAppApp, request: WebhookRequest) -> WebhookAnswer:
        return cls._challenge(app.verify_token, request)


def telegram_tenant(runtime: Any, mapping: str, monkeypatch: Any = None) -> tuple[int, int]:
    """(tenant id, channel account id) of a tenant on the in-memory CRM
    (``mapping``: its YAML) with one Telegram bot; ``monkeypatch`` also
    registers the fake CRM and gives it a fresh state."""
    from bridge import admin

    if monkeypatch is not None:
        import crm_adapters

        global STATE
        monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
        STATE = FakeCrmState()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(mapping)
    tenant_id = admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")
    account_id = admin.add_channel_account(
        runtime,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="1",
    )
    return tenant_id, account_id


def channel_refs(runtime: Any, tenant_id: int, kinds: Any) -> dict[str, Any]:
    """Channel accounts of ``kinds`` for the tenant, as rows only (no
    provider is called), by kind: the ingest's view of each."""
    import uuid

    from bridge.pipeline.inbound import AccountRef
    from bridge.tables import ChannelAccount

    refs = {}
    with runtime.transaction() as s:
        for kind in kinds:
            row = ChannelAccount(tenant_id=tenant_id, kind=kind, key=uuid.uuid4().hex, name=kind)
            s.add(row)
            s.flush()
            refs[kind] = AccountRef(row.id, tenant_id, kind)
    return refs


_WRITES = itertools.count(1)


def customer_writes(runtime: Any, account: Any, user: str, text: str, **profile: Any) -> int:
    """A customer of ``account`` (an ``AccountRef``) writes ``text`` in their
    own thread, telling the channel's ``profile`` (``SenderProfile`` fields);
    accepted as the webhook would. Returns the conversation's id."""
    import datetime as dt

    from sqlalchemy import select

    from bridge.model import InboundMessage, MessageKind, SenderProfile
    from bridge.pipeline.inbound import accept
    from bridge.tables import Conversation

    n = next(_WRITES)
    accept(
        runtime,
        account,
        [
            InboundMessage(
                channel_kind=account.kind,
                external_id=f"{account.kind}-{n}",
                external_user_id=user,
                external_thread_id=user,
                kind=MessageKind.TEXT,
                sent_at=dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=n),
                text=text,
                sequence=n,
                profile=SenderProfile(**profile),
            )
        ],
    )
    with runtime.transaction() as s:
        return int(
            s.scalar(
                select(Conversation.id).where(
                    Conversation.channel_account_id == account.id,
                    Conversation.external_thread_id == user,
                )
            )
        )
