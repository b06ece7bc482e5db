"""Notes and tasks: what a message looks like on a lead's timeline, and how
it is found again (FACTS 1.9, 1.10).

A note reads (``language: ru``, ``timezone: Europe/Moscow``)::

    Ann через Telegram · 01.03.2025 12:15 MSK
    Is the blue one in stock? (изменено)
    [photo: a.jpg]

The header's time is the message's own time in the tenant's zone (the
entry's ``timezone``, else the tenant's ``account.timezone``, else UTC;
amoCRM notes take no creation time, FACTS 1.9), its words in the entry's
``language`` (else ``account.language``), its channel the entry's
``channel_title`` (the channel's name from the core's registry). At the end of the header sits the
**bridge marker**, hidden in zero-width characters (see ``freetext``): notes
have no custom fields, so a retry lists the leads' notes and skips every
entry whose marker is already there, and the same marker tells the webhook
parser that a note is the bridge's own (never a rep's reply). One list
finds the notes of many leads: the type-level list takes
``filter[entity_id]`` as an array, with ``filter[note_type]`` and
``filter[updated_at][from]`` (amoCRM's "Список примечаний по типу сущности",
www.amocrm.ru/developers/content/crm_platform/events-and-notes; FACTS 1.9
names the paths), so a retry of a batch written to 50 leads costs one or two
requests, not 50. Notes written
by earlier versions (a visible ``[bridge:…]`` last line) are still found.
Whether amoCRM keeps zero-width characters is UNCONFIRMED: a retry that
finds its own note stripped of the marker warns and falls back to the
visible tag (``freetext``; tenant setting ``marker_style: visible``,
:class:`~crm_adapters.amocrm.settings.AmoCrmSettings`).

Notes are plain text. Attachments appear as labels (``[photo: a.jpg]``),
never as URLs: a channel's file URL can carry its bot token.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.errors import BridgeError, PermanentError
from bridge.model import CrmAccountInfo, CrmRef, MessageKind, TaskDraft, TimelineEntry
from crm_adapters import attachments
from crm_adapters.freetext import (
    Marker,
    attach_marker,
    find_markers,
    local_time,
    marker,
    marker_hash,
    strip_hidden,
    tenant_zone,
)

from .client import AmoApi, echoed, embedded
from .fields import as_map, to_int
from .settings import AmoCrmSettings

__all__ = [
    "NOTES_CHUNK",
    "NotesMixin",
    "marker",
    "marker_hash",
    "lookup_params",
    "note_item",
    "parse_marker",
    "render_note",
]

log = logging.getLogger(__name__)
#: items per notes POST (no documented maximum; 50 is the folklore, FACTS 1.4)
NOTES_CHUNK = 50
#: a retry looks through at most this many pages of the leads' notes
NOTES_LOOKUP_PAGES = 20
#: leads one notes list names in ``filter[entity_id][]`` (the page gives no
#: maximum; one POST's worth keeps the URL short)
LOOKUP_IDS = NOTES_CHUNK
#: the note types the bridge writes (``note_item``)
OWN_NOTE_TYPES = ("common", "service_message")
#: a note is stamped by amoCRM's clock, the message's ``stored_at`` by the
#: bridge's: the look-up starts this long before the oldest ``stored_at``
CLOCK_SLACK = dt.timedelta(minutes=5)
SERVICE = "CRM bridge"

#: the few words the bridge writes itself, per mapping ``language``
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "customer": "Customer",
        "agent": "Agent",
        "via": "via",
        "edited": "edited",
        "late": "delivered late",
        "sent": "Reply sent to the customer",
        "delivered": "Reply delivered to the customer",
        "read": "Reply read by the customer",
        "failed": "Reply NOT delivered to the customer",
        "note": "note",
    },
    "ru": {
        "customer": "Клиент",
        "agent": "Менеджер",
        "via": "через",
        "edited": "изменено",
        "late": "доставлено с опозданием",
        "sent": "Ответ отправлен клиенту",
        "delivered": "Ответ доставлен клиенту",
        "read": "Ответ прочитан клиентом",
        "failed": "Ответ НЕ доставлен клиенту",
        "note": "примечание",
    },
}

#: message kinds shown as a service message rather than a plain note
SERVICE_KINDS = frozenset(MessageKind) - {MessageKind.TEXT}


def words(language: object) -> dict[str, str]:
    return WORDS.get(str(language or "en"), WORDS["en"])


def parse_marker(text: object) -> Marker | None:
    """(hash, sequence, time) of the first bridge marker in ``text`` (hidden
    or the visible form of earlier versions), if any."""
    found = find_markers(text)
    return found[0] if found else None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def message_text(entry: TimelineEntry) -> str:
    """The message itself: text, "edited" and "delivered late" marks
    (``late``: re-parsed from the ingest journal), attachment labels."""
    labels = " ".join(attachments.labels(entry))
    text = entry.text or ""
    if entry.is_edit:
        edited = f"({words(entry.language)['edited']})"
        text = f"{text} {edited}" if text else edited
    if entry.late:
        late = f"({words(entry.language)['late']})"
        text = f"{text} {late}" if text else late
    if labels:
        text = f"{text}\n{labels}" if text else labels
    return text or f"[{entry.kind.value.replace('_', ' ')}]"


def channel_name(entry: TimelineEntry) -> str:
    """The channel's name the core gives (its registry title), else its kind."""
    return entry.channel_title or entry.channel_kind


def render_note(
    entry: TimelineEntry,
    tenant: CrmAccountInfo | None = None,
    *,
    visible_marker: bool = False,
) -> str:
    """``Ann via Telegram · 2025-03-01 09:15 UTC`` + marker / the message.
    ``tenant`` gives the language and zone an entry leaves empty."""
    language = entry.language or (tenant.language if tenant else "en")
    w = words(language)
    who = entry.sender_name or w["customer" if entry.direction == "in" else "agent"]
    zone = tenant_zone(entry.timezone, tenant.timezone if tenant else None)
    channel = channel_name(entry)
    head = f"{who} {w['via']} {channel} · {local_time(entry.occurred_at, zone, language)}"
    tag = marker(entry.bridge_id, entry.sequence, entry.occurred_at, visible=visible_marker)
    return attach_marker(f"{head}\n{message_text(entry)}", tag)


def note_item(
    entry: TimelineEntry,
    entity_id: int,
    tenant: CrmAccountInfo | None = None,
    *,
    visible_marker: bool = False,
) -> dict[str, Any]:
    """One item of ``POST /api/v4/{leads|contacts}/notes``."""
    text = render_note(entry, tenant, visible_marker=visible_marker)
    item: dict[str, Any] = {"entity_id": entity_id, "request_id": entry.bridge_id}
    if entry.kind in SERVICE_KINDS:
        item["note_type"] = "service_message"
        item["params"] = {"service": f"{SERVICE} · {channel_name(entry)}", "text": text}
    else:
        item["note_type"] = "common"
        item["params"] = {"text": text}
    if entry.owner_id and str(entry.owner_id).isdigit():
        item["responsible_user_id"] = int(entry.owner_id)
    return item


def note_target(entry: TimelineEntry) -> tuple[str, int] | None:
    """(``leads`` | ``contacts``, id) the entry's note goes on, or None."""
    if entry.entity is not None and entry.entity.kind == "lead":
        return "leads", to_int(entry.entity.id, "lead id")
    if entry.contact is not None:
        return "contacts", to_int(entry.contact.id, "contact id")
    return None


def wants_note(entry: TimelineEntry) -> bool:
    """The mapping's ``timeline`` is ``note`` (the one kind amoCRM has here,
    FACTS 1.9); ``none`` and anything else write no note."""
    return (entry.timeline or "note").lower() == "note"


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class NotesMixin:
    """Notes and tasks for :class:`~crm_adapters.amocrm.AmoCrmAdapter`."""

    account: CrmAccountInfo
    settings: AmoCrmSettings
    api: AmoApi
    #: set once a look-up found one of our notes without its hidden marker
    _markers_stripped: bool = False

    def _visible_marker(self) -> bool:
        """Write the visible tag instead of the hidden marker: the tenant
        asked for it, or amoCRM was seen dropping zero-width characters."""
        style = (self.settings.marker_style or "hidden").lower()
        return style == "visible" or self._markers_stripped

    def _note_stripped(self, what: str) -> None:
        """One of our entries came back without its hidden marker: warn once
        (the fix is a tenant setting) and write the visible tag from now on."""
        if not self._markers_stripped:
            log.warning(
                "amoCRM removed the bridge's hidden marker from a %s (tenant %s): the "
                "entry is written again with a visible marker; set the tenant setting "
                "marker_style: visible to keep retries exactly-once",
                what,
                self.account.tenant_id,
            )
        self._markers_stripped = True

    def _find_notes(
        self, path: str, entity_ids: Sequence[int], wanted: Mapping[str, TimelineEntry]
    ) -> dict[str, str]:
        """marker hash -> note id, for the ``wanted`` entries (by marker hash)
        found on the ``entity_ids`` (one list for them all, newest first,
        stopping once all are found). A note that is one of them but lost its
        marker is reported, not found."""
        found: dict[str, str] = {}
        bare = {_comparable(render_note(entry, self.account)): key for key, entry in wanted.items()}
        params = lookup_params(entity_ids, wanted.values())
        for page in range(1, NOTES_LOOKUP_PAGES + 1):
            body = self.api.json(
                "GET", f"/api/v4/{path}/notes", params=[*params, ("page", str(page))]
            )
            notes = embedded(body, "notes")
            for note in notes:
                text = as_map(note.get("params")).get("text") or note.get("text")
                parsed = parse_marker(text)
                if parsed and parsed[0] in wanted:
                    found.setdefault(parsed[0], str(note["id"]))
                elif parsed is None and isinstance(text, str) and _comparable(text) in bare:
                    self._note_stripped("note")
            if len(found) == len(wanted) or len(notes) < 250:
                break
        return found

    def _look_up(self, path: str, items: Sequence[tuple[TimelineEntry, int]]) -> dict[str, str]:
        """marker hash -> note id of the ``maybe_written`` entries among
        ``items`` already on their leads: one list per ``LOOKUP_IDS`` leads."""
        wanted: dict[int, dict[str, TimelineEntry]] = {}
        for entry, entity_id in items:
            if entry.maybe_written:
                wanted.setdefault(entity_id, {})[marker_hash(entry.bridge_id)] = entry
        found: dict[str, str] = {}
        for ids in chunks(sorted(wanted), LOOKUP_IDS):
            group = {key: entry for i in ids for key, entry in wanted[i].items()}
            found.update(self._find_notes(path, ids, group))
        return found

    def _write_notes(self, entries: Sequence[TimelineEntry], done: dict[str, CrmRef]) -> None:
        """Notes for ``entries`` into ``done`` (bridge id -> note ref): looked
        up first where ``maybe_written``, then one POST per target type per
        ``NOTES_CHUNK``. ``done`` holds what was completed if this raises."""
        groups: dict[str, list[tuple[TimelineEntry, int]]] = {}
        for entry in entries:
            target = note_target(entry)
            if target is not None:
                groups.setdefault(target[0], []).append((entry, target[1]))
        for path, items in groups.items():
            found = self._look_up(path, items)
            todo = []
            for entry, entity_id in items:
                note_id = found.get(marker_hash(entry.bridge_id))
                if note_id is not None and entry.maybe_written:
                    done[entry.bridge_id] = CrmRef("note", note_id)
                else:
                    todo.append((entry, entity_id))
            visible = self._visible_marker()
            for chunk in chunks(todo, NOTES_CHUNK):
                items_ = [note_item(e, i, self.account, visible_marker=visible) for e, i in chunk]
                body = self.api.json("POST", f"/api/v4/{path}/notes", json=items_)
                done.update(_written(embedded(body, "notes"), [e.bridge_id for e, _ in chunk]))

    # -- tasks ------------------------------------------------------------

    def create_task(self, draft: TaskDraft) -> CrmRef:
        """``POST /api/v4/tasks`` (:meth:`_task_item`). When ``maybe_written``,
        the entity's tasks are searched for the marker first."""
        return self.create_tasks({"task": draft})["task"]

    def _find_task(self, draft: TaskDraft) -> CrmRef | None:
        """The task an earlier attempt made for ``draft``: its entity's tasks
        (``GET /api/v4/tasks`` by entity), the one with the draft's marker."""
        entity_id, entity_type = _task_target(draft)
        body = self.api.json(
            "GET",
            "/api/v4/tasks",
            params={
                "filter[entity_id]": entity_id,
                "filter[entity_type]": entity_type,
                "limit": 250,
            },
        )
        for task in embedded(body, "tasks"):
            parsed = parse_marker(task.get("text"))
            if parsed and parsed[0] == marker_hash(draft.bridge_id):
                return CrmRef("task", str(task["id"]))
        return None

    def _task_item(self, draft: TaskDraft) -> dict[str, Any]:
        """One task of a ``POST /api/v4/tasks`` array: text (subject with the
        marker, body), due time, owner, the lead (or the contact), type 1
        ("call", FACTS 1.10); ``request_id`` is the draft's bridge id."""
        entity_id, entity_type = _task_target(draft)
        tag = marker(draft.bridge_id, visible=self._visible_marker())
        text = attach_marker("\n".join(p for p in (draft.subject, draft.body) if p), tag)
        item: dict[str, Any] = {
            "text": text,
            "complete_till": int(_utc(draft.due_at).timestamp()),
            "entity_id": entity_id,
            "entity_type": entity_type,
            "task_type_id": 1,
            "request_id": draft.bridge_id,
        }
        if draft.owner_id:
            item["responsible_user_id"] = to_int(draft.owner_id, "owner id")
        return item

    def create_tasks(self, drafts: Mapping[str, TaskDraft]) -> dict[str, CrmRef]:
        """Many tasks per ``POST /api/v4/tasks`` (a JSON array of up to
        ``NOTES_CHUNK``), each answer matched back by its ``request_id`` echo
        (FACTS 1.3); a ``maybe_written`` draft is looked up first (one list
        of its entity's tasks: amoCRM's task filter takes one entity here)."""
        made: dict[str, CrmRef] = {}
        try:
            for key, draft in drafts.items():
                if draft.maybe_written:
                    found = self._find_task(draft)
                    if found is not None:
                        made[key] = found
            todo = [k for k in drafts if k not in made]
            for chunk in chunks(todo, NOTES_CHUNK):
                body = self.api.json(
                    "POST", "/api/v4/tasks", json=[self._task_item(drafts[k]) for k in chunk]
                )
                answers = echoed(embedded(body, "tasks"), [drafts[k].bridge_id for k in chunk])
                for key, task in zip(chunk, answers, strict=True):
                    if task is None or task.get("id") is None:
                        raise PermanentError("amoCRM did not return the new task's id")
                    made[key] = CrmRef("task", str(task["id"]))
        except BridgeError as exc:
            exc.created = {**made, **exc.created}
            raise
        return made

    # -- delivery status as a note ----------------------------------------

    def _delivery_note(self, lead_id: int, note_id: str, status: str, error: str | None) -> None:
        w = words(self.account.language)
        text = f"{w[status]} ({w['note']} {note_id})"
        if status == "failed" and error:
            text += f": {error[:300]}"
        # the marker: this note is never taken for a rep's reply
        tag = marker(f"delivery:{note_id}:{status}", visible=self._visible_marker())
        text = attach_marker(text, tag)
        self.api.json(
            "POST",
            "/api/v4/leads/notes",
            json=[
                {
                    "entity_id": lead_id,
                    "note_type": "service_message",
                    "params": {"service": SERVICE, "text": text},
                }
            ],
        )


def lookup_params(
    entity_ids: Sequence[int], entries: Iterable[TimelineEntry]
) -> list[tuple[str, str]]:
    """The query of one notes list finding ``entries`` on ``entity_ids``:
    the bridge's note types, newest first, and, when every entry says when
    the bridge stored it, only notes changed since the oldest of those
    (less ``CLOCK_SLACK``): no attempt wrote a note before its message was
    stored, and an edit only moves ``updated_at`` later."""
    params = [("filter[entity_id][]", str(i)) for i in entity_ids]
    params += [("filter[note_type][]", t) for t in OWN_NOTE_TYPES]
    stored = [e.stored_at for e in entries]
    if stored and all(s is not None for s in stored):
        since = min(_utc(s) for s in stored if s is not None) - CLOCK_SLACK
        params.append(("filter[updated_at][from]", str(int(since.timestamp()))))
    return [*params, ("order[updated_at]", "desc"), ("limit", "250")]


def _comparable(text: str) -> str:
    """A note's text as a CRM that drops zero-width characters keeps it."""
    return strip_hidden(text).strip()


def _written(notes: Sequence[Mapping[str, Any]], bridge_ids: Sequence[str]) -> dict[str, CrmRef]:
    """bridge id -> note, by the echoed ``request_id`` (FACTS 1.3), falling
    back to position when amoCRM echoed the index instead."""
    out: dict[str, CrmRef] = {}
    wanted = set(bridge_ids)
    for index, note in enumerate(notes):
        if note.get("id") is None:
            continue
        request_id = str(note.get("request_id") or "")
        if request_id in wanted:
            out[request_id] = CrmRef("note", str(note["id"]))
        elif request_id.isdigit() and int(request_id) < len(bridge_ids):
            out.setdefault(bridge_ids[int(request_id)], CrmRef("note", str(note["id"])))
        elif index < len(bridge_ids):
            out.setdefault(bridge_ids[index], CrmRef("note", str(note["id"])))
    return out


def _task_target(draft: TaskDraft) -> tuple[int, str]:
    """(entity id, entity type) a task hangs on: the lead, else the contact."""
    entity = draft.entity if draft.entity is not None else draft.contact
    entity_type = "leads" if entity.kind == "lead" else "contacts"
    return to_int(entity.id, f"{entity.kind} id"), entity_type
