"""An in-memory CRM adapter for unit tests of the core pipeline.

It keeps the contract's duties (lookup by identity/phone/e-mail, find the
entity by conversation uid, at most one entry per bridge id when
``maybe_written``) and lets a test script failures per call. Integration
tests use the real adapters against the sandbox instead.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bridge.errors import BridgeError
from bridge.model import (
    ContactDraft,
    ContactLookup,
    CrmContact,
    CrmEvent,
    CrmRef,
    DeliveryReport,
    EntityDraft,
    Owner,
    Rate,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)
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

    def find_entity(self, draft: EntityDraft) -> CrmRef | None:
        def effect() -> CrmRef | None:
            for eid, e in STATE.entities.items():
                if e["conversation_uid"] == draft.conversation_uid:
                    return CrmRef(draft.object_type, eid)
            return None

        return self._hook("find_entity", draft, effect)

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
                        "owner": entry.owner_id,
                        "first": entry.first_in_conversation,
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
    the adapter's refresher only if nobody refreshed since ``stale``
    was read, like the real single-flight store; ``refreshes`` counts them."""

    def __init__(self, creds: Mapping[str, Any]) -> None:
        self.creds = dict(creds)
        self.refresher: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
        self.refreshes = 0

    def get(self) -> Mapping[str, Any]:
        return dict(self.creds)

    def refresh(self, stale: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.creds == dict(stale):
            assert self.refresher is not None
            self.creds = dict(self.refresher(stale))
            self.refreshes += 1
        return dict(self.creds)
