"""Account webhooks: payloads, delivery, retries (FACTS.md 1.12).

Delivery exactly as FACTS 1.12 describes it: ``POST``,
``application/x-www-form-urlencoded`` in PHP bracket notation
(``leads[status][0][id]=…&account[subdomain]=…``), every value a string,
legacy field names (``date_create``, ``last_modified``, ``created_user_id``,
``modified_user_id``, ``old_status_id``, ``custom_fields``), contacts and
companies both under ``contacts[…]`` with ``type``, ``User-Agent:
amoCRM-WebHook-client/1.0`` (community captures), **no signature**.

An answer within ``webhook_timeout_s`` (2 s) with a code 100-299 counts. Else
the attempt is retried per ``webhook_retry_schedule`` (the docs' table: attempt
2 after 5 min and 3 after 15 min when the previous code was 0-99 or >= 300;
attempt 4 after 15 min and 5 after 1 h when it was 499 or 5xx). A hook with
more than ``webhook_disable_after`` (100) invalid answers within
``webhook_disable_window_s`` (2 h), the latest one included, is disabled.

All payload shapes are built in :func:`section`; ours, written from FACTS 1.12
(there are no redistributable amoCRM captures). Sending, the retry schedule
and the delivery record are the shared machinery of :mod:`sandbox.core.webhooks`.

Digital pipeline webhooks (config ``dp_webhooks``, UNCONFIRMED: not in FACTS)
go through the same dispatcher: :func:`dp_jobs` makes one job per stage hook
a lead has just moved into, its body the lead in the account-webhook format
(``leads[status][0][…]`` with ``old_status_id``/``old_pipeline_id`` by
default), sent and retried like an account webhook; it has no subscription,
so it is never disabled. Its deliveries are recorded with ``event``
``digital_pipeline`` and ``webhook_id`` None.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from ..core.webhooks import Dispatcher, Job, RetrySchedule, send
from .store import Account, Store

__all__ = ["Job", "AccountWebhooks", "jobs_for", "dp_jobs", "encode_form", "EVENTS", "section",
           "DP_EVENT"]

USER_AGENT = "amoCRM-WebHook-client/1.0"  # FACTS 1.12 (community captures, 2016)
#: the delivery records' ``event`` of a digital pipeline webhook
DP_EVENT = "digital_pipeline"

_ACTIONS = ("add", "update", "delete", "restore", "responsible", "status", "note")
_KINDS = ("lead", "contact", "company", "customer", "task")
#: FACTS 1.12 event names accepted by POST /api/v4/webhooks
EVENTS = frozenset([f"{a}_{k}" for a in _ACTIONS for k in _KINDS]
                   + ["add_talk", "update_talk", "add_chat_template_review"])
_SECTION = {"lead": "leads", "contact": "contacts", "company": "contacts", "task": "task",
            "customer": "customers"}
#: legacy numeric note types (v2-era ids); UNCONFIRMED for webhooks, FACTS 1.12
#: does not show a note payload. Unknown types pass their v4 name.
_LEGACY_NOTE_TYPES = {"common": 4, "call_in": 10, "call_out": 11, "service_message": 25,
                      "sms_in": 102, "sms_out": 103}
#: legacy element types: 1 contact, 2 lead, 3 company, 12 customer
_ELEMENT_TYPES = {"contacts": 1, "leads": 2, "companies": 3, "customers": 12}


# -- encoding (PHP http_build_query) ----------------------------------------------------------


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _flatten(f"{prefix}[{key}]" if prefix else str(key), sub)
    elif isinstance(value, (list, tuple)):
        for index, sub in enumerate(value):
            yield from _flatten(f"{prefix}[{index}]", sub)
    elif value is None:
        return  # PHP's http_build_query drops nulls
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
    else:
        yield prefix, str(value)


def encode_form(data: dict[str, Any]) -> str:
    """``{"leads": {"status": [{"id": 1}]}}`` -> ``leads%5Bstatus%5D%5B0%5D%5Bid%5D=1``
    (brackets percent-encoded and spaces as ``+``, as PHP's http_build_query does)."""
    return "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in _flatten("", data))


# -- payload builders (the one place for the legacy shapes) ----------------------------------


def _custom_fields(account: Account, entity: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Legacy ``custom_fields[{id,name,values,code}]``: plain values as strings,
    multitext/select values as ``{value, enum}`` (FACTS 1.12, the docs' examples)."""
    out = []
    for item in obj.get("custom_fields_values") or []:
        fdef = account.fields[entity].get(item["field_id"])
        if fdef is None:
            continue
        if fdef["type"] in {"multitext", "select", "multiselect", "radiobutton"}:
            values: list[Any] = [{"value": v["value"], "enum": v.get("enum_id")}
                                 for v in item["values"]]
        else:
            values = [v["value"] for v in item["values"]]
        entry: dict[str, Any] = {"id": fdef["id"], "name": fdef["name"], "values": values}
        if fdef.get("code"):
            entry["code"] = fdef["code"]
        out.append(entry)
    return out


def _lead(store: Store, account: Account, lead: dict[str, Any]) -> dict[str, Any]:
    tags = [{"id": t["id"], "name": t["name"]} for t in
            (store.tag_by_id(account, "leads", tid) for tid in lead.get("tags", [])) if t]
    return {"id": lead["id"], "name": lead["name"], "status_id": lead["status_id"],
            "price": lead["price"], "responsible_user_id": lead["responsible_user_id"],
            "last_modified": lead["updated_at"], "modified_user_id": lead["updated_by"],
            "created_user_id": lead["created_by"], "date_create": lead["created_at"],
            "pipeline_id": lead["pipeline_id"], "tags": tags or None,
            "account_id": account.id,
            "custom_fields": _custom_fields(account, "leads", lead) or None,
            "created_at": lead["created_at"], "updated_at": lead["updated_at"]}


def _contact(account: Account, contact: dict[str, Any], kind: str) -> dict[str, Any]:
    entity = "contacts" if kind == "contact" else "companies"
    linked = {str(lid): {"ID": str(lid)} for lid in sorted(
        lid for lid, lead in account.leads.items()
        if any(c["id"] == contact["id"] for c in lead.get(entity, [])))}
    out = {"id": contact["id"], "name": contact["name"],
           "responsible_user_id": contact["responsible_user_id"],
           "date_create": contact["created_at"], "last_modified": contact["updated_at"],
           "created_user_id": contact["created_by"], "modified_user_id": contact["updated_by"],
           "account_id": account.id,
           "custom_fields": _custom_fields(account, entity, contact) or None,
           "linked_leads_id": linked or None,
           "created_at": contact["created_at"], "updated_at": contact["updated_at"],
           "type": kind}
    if kind == "contact" and contact.get("companies"):
        company = account.companies.get(contact["companies"][0])
        if company:
            out["linked_company_id"] = company["id"]
            out["company_name"] = company["name"]
    return out


def _note(account: Account, note: dict[str, Any]) -> dict[str, Any]:
    """``leads[note][0][note][…]``: the exact layout is UNCONFIRMED (FACTS 1.12
    shows no note payload); this is the legacy (v2-era) shape, kept here only."""
    params = note.get("params") or {}
    return {"note": {"id": note["id"],
                     "note_type": _LEGACY_NOTE_TYPES.get(note["note_type"], note["note_type"]),
                     "text": params.get("text", ""), "params": params or None,
                     "element_id": note["entity_id"],
                     "element_type": _ELEMENT_TYPES.get(note["entity_type"], 0),
                     "created_by": note["created_by"], "created_user_id": note["created_by"],
                     "responsible_user_id": note["responsible_user_id"],
                     "date_create": note["created_at"], "last_modified": note["updated_at"],
                     "created_at": note["created_at"], "updated_at": note["updated_at"],
                     "account_id": account.id}}


def section(store: Store, account: Account, event: str, obj: dict[str, Any],
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The decoded payload ``{entity: {action: [fields]}, account: {…}}`` of one event."""
    action, kind = event.split("_", 1)
    if action == "delete":
        fields: dict[str, Any] = {"id": obj["id"]}
        if kind == "lead":
            fields.update(status_id=obj["status_id"], pipeline_id=obj["pipeline_id"])
        else:
            fields["type"] = kind
    elif action == "note":
        fields = _note(account, obj)
    elif kind == "lead":
        fields = _lead(store, account, obj)
    else:
        fields = _contact(account, obj, kind)
    fields.update(extra or {})
    return {_SECTION[kind]: {action: [fields]},
            "account": {"subdomain": account.subdomain, "id": account.id,
                        "_links": {"self": f"https://{store.referer(account)}"}}}


@dataclass(frozen=True)
class Hook:
    """What a :class:`~sandbox.core.webhooks.Job` of this module carries."""

    account_id: int
    webhook_id: int | None  # None: a digital pipeline's hook (no subscription)
    url: str
    event: str
    body: str


def jobs_for(store: Store, account: Account, event: str, obj: dict[str, Any],
             extra: dict[str, Any] | None = None) -> list[Job]:
    """One job per enabled subscription of ``account`` listening to ``event``.
    Caller holds the store lock."""
    subs = [w for w in account.webhooks.values() if event in w["settings"] and not w["disabled"]]
    if not subs:
        return []
    body = encode_form(section(store, account, event, obj, extra))
    return [Job(store.now(), data=Hook(account.id, w["id"], w["destination"], event, body))
            for w in sorted(subs, key=lambda w: (w["sort"], w["id"]))]


def dp_jobs(store: Store, account: Account, lead: dict[str, Any],
            before: dict[str, Any]) -> list[Job]:
    """One job per ``dp_webhooks`` stage the lead has just moved into (from
    ``before``'s status/pipeline): the lead in the account-webhook format,
    section ``leads[<action>]``. Caller holds the store lock."""
    moved = (lead["status_id"], lead["pipeline_id"]) != (before["status_id"],
                                                         before["pipeline_id"])
    if not moved or lead["is_deleted"]:
        return []
    jobs = []
    for hook in store.cfg["dp_webhooks"]:
        if hook["status_id"] != lead["status_id"] or hook.get("pipeline_id") not in (
                None, lead["pipeline_id"]):
            continue
        action = hook.get("action", "status")
        data = section(store, account, f"{action}_lead", lead, {
            "old_status_id": before["status_id"], "old_pipeline_id": before["pipeline_id"]})
        jobs.append(Job(store.now(), data=Hook(account.id, None, hook["url"], DP_EVENT,
                                               encode_form(data))))
    return jobs


#: the retry table's answer classes (FACTS 1.12; no answer in time counts as code 0)
_CLASSES = {"5xx": lambda code: code == 499 or 500 <= code <= 599,
            "invalid": lambda code: code < 100 or code >= 300}


class AccountWebhooks:
    """Sends jobs, records every attempt in ``store.deliveries``, retries later."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dispatcher = Dispatcher(self.attempt, now=store.now, name="amocrm-webhook")

    def submit(self, jobs: list[Job]) -> None:
        """Send in the background (first attempts of API-caused events)."""
        self.dispatcher.submit(jobs)

    def deliver_now(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """First attempts, synchronously (control endpoints); retries are scheduled."""
        return self.dispatcher.deliver_now(jobs)

    def flush(self) -> list[dict[str, Any]]:
        """Run every pending retry now, whatever its due time (for tests/demo)."""
        return self.dispatcher.flush()

    def pending(self) -> list[dict[str, Any]]:
        return [{"due_at": j.due, "url": j.data.url, "event": j.data.event,
                 "attempt": j.attempt, "account_id": j.data.account_id,
                 "webhook_id": j.data.webhook_id} for j in self.dispatcher.pending()]

    def reset(self) -> None:
        self.dispatcher.reset()

    def attempt(self, job: Job) -> dict[str, Any]:
        cfg = self.store.cfg
        hook: Hook = job.data
        outcome = send(hook.url, hook.body.encode("ascii"), {
            "Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT},
            float(cfg["webhook_timeout_s"]))
        code = outcome.status or 0  # no answer within the limit counts as code 0
        ok = 100 <= code <= 299
        record: dict[str, Any] = {
            "at": self.store.now(), "account_id": hook.account_id,
            "webhook_id": hook.webhook_id, "url": hook.url, "event": hook.event,
            "attempt": job.attempt, "status": code, "ok": ok, "body": hook.body,
            "response": (outcome.text or "")[:2000]}
        if outcome.error:
            record["error"] = outcome.error
        with self.store.lock:
            sub = self._subscription(hook)
            if not ok and sub is not None:
                self._count_invalid(sub, record["at"])
            live = hook.webhook_id is None or (sub is not None and not sub["disabled"])
            if not ok and live:
                delay = RetrySchedule(cfg["webhook_retry_schedule"], _CLASSES).delay(
                    job.attempt, code)
                if delay is not None:
                    retry = job.retry(record["at"] + delay)
                    record["next_attempt_at"] = retry.due
                    self.dispatcher.schedule(retry)
            self.store.deliveries.append(record)
        return record

    def _subscription(self, hook: Hook) -> dict[str, Any] | None:
        """The live subscription a job was made for (None: deleted, moved to
        another destination, or a digital pipeline's hook)."""
        account = self.store.accounts.get(hook.account_id)
        if account is None or hook.webhook_id is None:
            return None
        sub = account.webhooks.get(hook.webhook_id)
        return sub if sub is not None and sub["destination"] == hook.url else None

    def _count_invalid(self, sub: dict[str, Any], at: float) -> None:
        """FACTS 1.12: disabled after > N invalid answers in the window, the
        latest included (this one is invalid)."""
        cfg = self.store.cfg
        times: list[float] = sub.setdefault("_invalid", [])
        times.append(at)
        horizon = at - float(cfg["webhook_disable_window_s"])
        sub["_invalid"] = times = [t for t in times if t > horizon]
        if len(times) > int(cfg["webhook_disable_after"]):
            sub["disabled"] = True
