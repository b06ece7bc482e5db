"""Timeline comments, the Open Lines send, to-dos and tasks (FACTS 2.7, 2.8).

**Comments** (``crm.timeline.comment.add``, lowercase ``fields``:
``ENTITY_TYPE`` ``lead``/``deal``/``contact``, ``ENTITY_ID``, ``COMMENT``).
A comment reads (``language: ru``, ``timezone: Europe/Moscow``)::

    Ann Contract через Telegram · 01.03.2025 12:15 MSK
    Is the blue one in stock? (изменено)
    [photo: a.jpg]

The header's time is the message's own time (a comment takes no creation
time) in the tenant's zone (``entry.timezone``, else ``account.timezone``,
else UTC); its words are in ``entry.language``, and the channel's name is
``entry.channel_title`` (the channel registry's; else the channel kind).
At the end of the header sits the **bridge marker**, hidden in zero-width
characters (``freetext``): the message id's hash, sequence and time.
Comments have no custom fields, so a retry (``maybe_written``) lists the
entity's comments (``crm.timeline.comment.list`` filtered by entity, newest
first, several pages in one batch) and skips the entries whose marker is
there. Comments
of earlier versions (a visible ``[bridge:…]`` last line) are still found.
Whether Bitrix24 keeps zero-width characters is UNCONFIRMED: a retry that
finds its own comment stripped of the marker warns and falls back to the
visible tag (``freetext``; setting ``marker_style: visible``).

**One batch per drain.** All entries of a drain go out as one ``batch``
(``halt=1``, ≤ 50 commands, split above): the Open Lines
``imconnector.send.messages`` (all chat messages of the chunk, one command)
first, then one ``crm.timeline.comment.add`` per entry. So a conversation
costs one HTTP request per drain whatever the mode, and calls per message
fall as messages queue up (N messages: ``ceil(N/48)`` requests with Open
Lines, ``ceil(N/50)`` without).

**To-dos** (``crm.activity.todo.add``: ``ownerTypeId`` 1 lead, 2 deal,
3 contact; ``deadline`` ISO; ``title``; ``description`` starting with the
marker (it holds the customer's words; earlier versions ended it with the
marker); ``responsibleId``) or, with the setting ``task_kind: task``,
**tasks** (``tasks.task.add`` with ``UF_CRM_TASK: ["L_<id>"|"D_<id>",
"C_<contact>"]``). A retry looks the marker up first (``crm.activity.list``
/ ``tasks.task.list`` on the same entity).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.errors import BridgeError, NotReadyError, PermanentError
from bridge.model import CrmAccountInfo, CrmRef, TaskDraft, TimelineEntry
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

from .batch import BatchAnswer, Command
from .client import B24Api
from .openlines import (
    WORDS,
    connector_id,
    edit_of,
    entry_text,
    message_item,
    send_results,
    wants_inbox,
)
from .settings import Bitrix24Settings

__all__ = [
    "OWNER_TYPES",
    "TimelineMixin",
    "comment_fields",
    "marker",
    "marker_hash",
    "parse_marker",
    "read_marker",
    "render_comment",
]

log = logging.getLogger(__name__)

#: CRM object type ids (crm/data-types.md "CRM Object Types")
OWNER_TYPES = {"lead": 1, "deal": 2, "contact": 3, "company": 4}
TASK_PREFIX = {"lead": "L", "deal": "D", "contact": "C", "company": "CO"}
SEND = "imconnector.send.messages"
#: comment pages (50 each) one lookup batch reads; up to LOOKUP_ROUNDS batches
LOOKUP_PAGES = 5
LOOKUP_ROUNDS = 4
HEADER_WORDS = {
    "en": {"customer": "Customer", "agent": "Agent", "via": "via"},
    "ru": {"customer": "Клиент", "agent": "Менеджер", "via": "через"},
}


def read_marker(text: object) -> Marker | None:
    """(hash, sequence, time) of ``text``'s last bridge marker (hidden, or
    the visible form of earlier versions), if any."""
    found = find_markers(text)
    return found[-1] if found else None


def parse_marker(text: object) -> str | None:
    """The marker hash on ``text``'s last marker, if any."""
    found = read_marker(text)
    return found[0] if found else None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def render_comment(
    entry: TimelineEntry,
    *,
    language: str = "en",
    timezone: str = "UTC",
    visible_marker: bool = False,
) -> str:
    """``Ann via Telegram · 2025-03-01 09:15 UTC`` + marker / the message
    (``timezone``: the tenant's, where the entry names no valid zone)."""
    words = HEADER_WORDS.get(language, HEADER_WORDS["en"])
    who = entry.sender_name or words["customer" if entry.direction == "in" else "agent"]
    channel = entry.channel_title or entry.channel_kind
    zone = tenant_zone(entry.timezone, timezone)
    when = local_time(entry.occurred_at, zone, language)
    body = entry_text(entry, words=WORDS.get(language, WORDS["en"]))
    tag = marker(entry.bridge_id, entry.sequence, entry.occurred_at, visible=visible_marker)
    return attach_marker(f"{who} {words['via']} {channel} · {when}\n{body}", tag)


def comment_target(entry: TimelineEntry) -> tuple[str, int] | None:
    """(``lead``|``deal``|``contact``, id) the entry's comment goes on."""
    ref = entry.entity if entry.entity is not None else entry.contact
    if ref is None:
        return None
    if ref.kind not in OWNER_TYPES:
        raise PermanentError(f"Bitrix24 has no timeline for {ref.kind!r}")
    return ref.kind, to_int(ref.id, f"{ref.kind} id")


def comment_fields(
    entry: TimelineEntry,
    target: tuple[str, Any],
    language: str,
    timezone: str = "UTC",
    *,
    visible_marker: bool = False,
) -> dict[str, Any]:
    """The params of ``crm.timeline.comment.add`` (FACTS 2.7) for one entry."""
    comment = render_comment(
        entry, language=language, timezone=timezone, visible_marker=visible_marker
    )
    return {"fields": {"ENTITY_ID": target[1], "ENTITY_TYPE": target[0], "COMMENT": comment}}


def wants_note(entry: TimelineEntry) -> bool:
    """Any ``timeline`` kind but ``none`` is written as a comment; so is the
    business's own message (``direction`` out), which the Open Lines chat
    cannot show as the business's."""
    return (entry.timeline or "note").lower() != "none" or entry.direction == "out"


def to_int(value: Any, what: str) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        raise PermanentError(f"Bitrix24 {what} must be a number, got {value!r}") from None


class TimelineMixin:
    """``append_entries`` and ``create_task`` of the Bitrix24 adapter."""

    account: CrmAccountInfo
    settings: Bitrix24Settings
    api: B24Api

    def _language(self, entry: TimelineEntry | None = None) -> str:
        return (entry.language if entry else None) or self.account.language or "en"

    #: set once a look-up found one of our comments without its hidden marker
    _markers_stripped: bool = False

    def _visible_marker(self) -> bool:
        """Write the visible tag instead of the hidden marker: the tenant
        asked for it, or Bitrix24 was seen dropping zero-width characters."""
        style = (self.settings.marker_style or "hidden").lower()
        return style == "visible" or self._markers_stripped

    def _note_stripped(self) -> None:
        """One of our comments came back without its hidden marker: warn once
        (the fix is a setting) and write the visible tag from now on."""
        if not self._markers_stripped:
            log.warning(
                "Bitrix24 removed the bridge's hidden marker from a timeline comment "
                "(tenant %s): the entry is written again with a visible marker; set the "
                "tenant setting marker_style: visible to keep retries exactly-once",
                self.account.tenant_id,
            )
        self._markers_stripped = True

    def _comment(self, entry: TimelineEntry, target: tuple[str, Any]) -> dict[str, Any]:
        """``crm.timeline.comment.add`` params for ``entry`` on ``target``."""
        return comment_fields(
            entry,
            target,
            self._language(entry),
            self.account.timezone,
            visible_marker=self._visible_marker(),
        )

    def _tagged(self, text: str, bridge_id: str) -> str:
        """A to-do / task description (the customer's words) with the marker
        of ``bridge_id`` ahead of it."""
        return attach_marker(text, marker(bridge_id, visible=self._visible_marker()), before=True)

    def _run(self, commands: Sequence[Command], *, halt: bool) -> BatchAnswer:
        """One command: a plain call (its error raised as is); more: batches."""
        if len(commands) == 1:
            only = commands[0]
            return BatchAnswer(results={only.key: self.api.call(only.method, only.params).result})
        return self.api.batch(commands, halt=halt)

    # -- lookups ------------------------------------------------------------------

    def _find_comments(self, entries: Sequence[TimelineEntry]) -> dict[str, CrmRef]:
        """bridge id -> comment, for the ``entries`` already on their entity."""
        wanted: dict[tuple[str, int], dict[str, str]] = {}
        bare: dict[str, str] = {}  # a comment's text without zero-width characters
        for entry in entries:
            target = comment_target(entry)
            if target is not None:
                wanted.setdefault(target, {})[marker_hash(entry.bridge_id)] = entry.bridge_id
                text = render_comment(
                    entry, language=self._language(entry), timezone=self.account.timezone
                )
                bare[_comparable(text)] = entry.bridge_id
        found: dict[str, CrmRef] = {}
        offset: dict[tuple[str, int], int | None] = {target: 0 for target in wanted}
        for _ in range(LOOKUP_ROUNDS):
            open_targets = [t for t in wanted if offset[t] is not None and wanted[t]]
            if not open_targets:
                break
            commands = []
            for n, target in enumerate(open_targets):
                for page in range(LOOKUP_PAGES):
                    commands.append(
                        Command(
                            f"t{n}p{page}",
                            "crm.timeline.comment.list",
                            {
                                "filter": {"ENTITY_ID": target[1], "ENTITY_TYPE": target[0]},
                                "select": ["ID", "COMMENT"],
                                "order": {"ID": "DESC"},
                                "start": int(offset[target] or 0) + 50 * page,
                            },
                        )
                    )
            answer = self.api.batch(commands)
            for n, target in enumerate(open_targets):
                more = False
                for page in range(LOOKUP_PAGES):
                    key = f"t{n}p{page}"
                    rows = answer.value(key)
                    for row in rows if isinstance(rows, list) else []:
                        if not isinstance(row, Mapping):
                            continue
                        comment = row.get("COMMENT")
                        digest = parse_marker(comment)
                        bridge_id = wanted[target].pop(digest or "", None)
                        if bridge_id is not None:
                            found[bridge_id] = CrmRef("comment", str(row.get("ID")))
                        elif (
                            digest is None
                            and isinstance(comment, str)
                            and _comparable(comment) in bare
                        ):
                            self._note_stripped()
                    more = key in answer.nexts
                offset[target] = (int(offset[target] or 0) + 50 * LOOKUP_PAGES) if more else None
        return found

    # -- writes -------------------------------------------------------------------

    def append_entries(self, entries: Sequence[TimelineEntry]) -> dict[str, tuple[CrmRef, ...]]:
        """Per entry: ``timeline`` (any kind but ``none``) -> a comment on the
        lead/deal (or the contact, FACTS 2.7); ``inbox`` -> also a message in
        the Open Lines chat (app install only, FACTS 2.8). One batch per ≤ 50
        commands; ``maybe_written`` entries are looked up by their marker
        first; steps in ``entry.written`` are not sent again. On a failure
        part-way, the error's ``partial`` holds the entries completed before
        it and ``progress`` the steps written of the others (a chat message
        sent whose comment failed in the same ``halt`` batch)."""
        unique = list({e.bridge_id: e for e in entries}.values())
        plan: dict[str, tuple[bool, bool]] = {}
        for entry in unique:
            note = wants_note(entry) and comment_target(entry) is not None
            chat = wants_inbox(entry)
            if not note and not chat:
                raise PermanentError(
                    "Bitrix24: this message has nowhere to go: it needs a contact or lead/deal "
                    "for a timeline comment, or `inbox: true` (Open Lines)"
                )
            plan[entry.bridge_id] = (note, chat)
        if any(chat for _, chat in plan.values()) and self.api.is_webhook():
            raise PermanentError(
                "Bitrix24: Open Lines need the app install, not an incoming webhook "
                "(set `inbox: false` in the mapping, or install the bridge as an app)"
            )
        # steps an earlier attempt reported written (error.progress)
        notes = {e.bridge_id: r for e in unique if (r := e.written_ref("comment")) is not None}
        chats = {e.bridge_id: r for e in unique if (r := e.written_ref("message")) is not None}

        def started() -> dict[str, tuple[CrmRef, ...]]:
            done = completed()
            return {
                e.bridge_id: tuple(r for r in (notes.get(e.bridge_id), chats.get(e.bridge_id)) if r)
                for e in unique
                if e.bridge_id not in done and (e.bridge_id in notes or e.bridge_id in chats)
            }

        def completed() -> dict[str, tuple[CrmRef, ...]]:
            out: dict[str, tuple[CrmRef, ...]] = {}
            for entry in unique:
                note, chat = plan[entry.bridge_id]
                if note and entry.bridge_id not in notes:
                    continue
                if chat and entry.bridge_id not in chats and not note:
                    continue
                refs = [notes[entry.bridge_id]] if note else []
                if chat and entry.bridge_id in chats:
                    refs.append(chats[entry.bridge_id])
                out[entry.bridge_id] = tuple(refs)
            return out

        try:
            retried = [e for e in unique if e.maybe_written and plan[e.bridge_id][0]]
            if retried:
                for bridge_id, ref in self._find_comments(retried).items():
                    notes[bridge_id] = ref
                    if plan[bridge_id][1]:
                        # sent in the same halt=1 batch, before the comment
                        chats[bridge_id] = CrmRef("message", bridge_id)
            todo = [e for e in unique if e.bridge_id not in notes]
            steps = {  # what is left to write of each entry
                b: (note and b not in notes, chat and b not in chats)
                for b, (note, chat) in plan.items()
            }
            # room for the chat commands (one per connector and method) in each batch
            size = 48 if any(steps[e.bridge_id][1] for e in todo) else 50
            for start in range(0, len(todo), size):
                self._write_chunk(todo[start : start + size], steps, notes, chats)
        except BridgeError as exc:
            exc.partial, exc.progress = completed(), started()
            raise
        return completed()

    def _write_chunk(
        self,
        chunk: Sequence[TimelineEntry],
        plan: Mapping[str, tuple[bool, bool]],
        notes: dict[str, CrmRef],
        chats: dict[str, CrmRef],
    ) -> None:
        commands: list[Command] = []
        settings = self.settings
        groups: dict[tuple[str, str], list[TimelineEntry]] = {}
        for entry in chunk:
            if plan[entry.bridge_id][1]:
                method = "imconnector.update.messages" if edit_of(entry) else SEND
                groups.setdefault((method, connector_id(settings, entry.channel_kind)), []).append(
                    entry
                )
        line = self._line() if groups else None
        chat_keys: dict[str, list[TimelineEntry]] = {}
        for n, ((method, connector), group) in enumerate(sorted(groups.items())):
            key = f"im{n}"
            chat_keys[key] = group
            commands.append(self._chat_command(key, method, group, line, connector))
        keys: dict[str, str] = {}
        for index, entry in enumerate(chunk):
            target = comment_target(entry) if plan[entry.bridge_id][0] else None
            if target is None:
                continue
            key = f"c{index}"
            keys[entry.bridge_id] = key
            commands.append(Command(key, "crm.timeline.comment.add", self._comment(entry, target)))
        answer = self._run(commands, halt=True)
        refused: dict[str, str] = {}
        for key, group in chat_keys.items():
            if answer.ok(key):
                for bridge_id, error in send_results(answer.results[key], group).items():
                    if error is None:
                        chats[bridge_id] = CrmRef("message", bridge_id)
                    else:
                        refused[bridge_id] = error
        for bridge_id, key in keys.items():
            if answer.ok(key):
                notes[bridge_id] = CrmRef("comment", str(answer.results[key]))
        failed = answer.first_error([c.key for c in commands])
        if failed is not None:
            raise failed[1]
        for bridge_id, error in refused.items():
            if bridge_id in notes:
                # its comment is on the timeline (written after the send): the
                # message is filed; repeating it would duplicate the comment
                log.warning("Bitrix24 Open Lines refused message %s: %s", bridge_id, error)
                continue
            raise PermanentError(f"Bitrix24 Open Lines refused the message: {error}")

    def _line(self) -> int:
        line = self.settings.line
        if not line:
            # the setup that activates the connector has not finished (it may
            # still be running): wait for it rather than fail the message
            raise NotReadyError(
                "Bitrix24 Open Lines line is not set up yet: waiting for `bridge crm setup` "
                "(needs `inbox: true` in the mapping and the app install)"
            )
        return to_int(line, "Open Lines line")

    def _chat_command(
        self,
        key: str,
        method: str,
        group: Sequence[TimelineEntry],
        line: int | None,
        connector: str,
    ) -> Command:
        messages = []
        for entry in group:
            item = message_item(entry, self.settings)
            original = edit_of(entry)
            if original:
                item["message"]["id"] = original
            messages.append(item)
        return Command(
            key,
            method,
            {"CONNECTOR": connector, "LINE": line, "MESSAGES": messages},
        )

    # -- tasks ----------------------------------------------------------------------

    def create_task(self, draft: TaskDraft) -> CrmRef:
        """A to-do (default) or a task (``task_kind: task``) on the lead/deal
        (else the contact), its description starting with the marker; looked
        up first when ``maybe_written``."""
        kind = (self.settings.task_kind or "todo").lower()
        owner = draft.entity if draft.entity is not None else draft.contact
        if owner.kind not in OWNER_TYPES:
            raise PermanentError(f"Bitrix24 cannot attach a task to {owner.kind!r}")
        owner_id = to_int(owner.id, f"{owner.kind} id")
        description = self._tagged(draft.body, draft.bridge_id)
        deadline = _utc(draft.due_at).replace(microsecond=0).isoformat()
        if kind == "task":
            return self._task(draft, owner, owner_id, description, deadline)
        if draft.maybe_written:
            rows = self.api.call(
                "crm.activity.list",
                {
                    "filter": {"OWNER_TYPE_ID": OWNER_TYPES[owner.kind], "OWNER_ID": owner_id},
                    "select": ["ID", "SUBJECT", "DESCRIPTION"],
                    "order": {"ID": "DESC"},
                },
            ).result
            for row in rows if isinstance(rows, list) else []:
                if isinstance(row, Mapping) and parse_marker(row.get("DESCRIPTION")) == (
                    marker_hash(draft.bridge_id)
                ):
                    return CrmRef("todo", str(row.get("ID")))
        params: dict[str, Any] = {
            "ownerTypeId": OWNER_TYPES[owner.kind],
            "ownerId": owner_id,
            "deadline": deadline,
            "title": draft.subject[:255],
            "description": description,
        }
        if draft.owner_id:
            params["responsibleId"] = to_int(draft.owner_id, "owner id")
        result = self.api.call("crm.activity.todo.add", params).result
        if not isinstance(result, Mapping) or result.get("id") in (None, ""):
            raise PermanentError("Bitrix24 did not return the new to-do's id")
        return CrmRef("todo", str(result["id"]))

    def create_tasks(self, drafts: Mapping[str, TaskDraft]) -> dict[str, CrmRef]:
        """:meth:`create_task` for many. New to-dos (the default
        ``task_kind``) go as ``crm.activity.todo.add`` commands, 50 to a
        ``batch`` request (``halt=0``); a ``maybe_written`` draft, or a
        task (``task_kind: task``), goes through :meth:`create_task`, which
        looks it up first. A command refused raises its error with
        ``error.created`` naming the ones made."""
        made: dict[str, CrmRef] = {}
        batched = (self.settings.task_kind or "todo").lower() != "task"
        names: dict[str, str] = {}
        commands: list[Command] = []
        try:
            for key, draft in drafts.items():
                owner = draft.entity if draft.entity is not None else draft.contact
                if not batched or draft.maybe_written or owner.kind not in OWNER_TYPES:
                    made[key] = self.create_task(draft)
                    continue
                name = f"n{len(names)}"
                names[name] = key
                params: dict[str, Any] = {
                    "ownerTypeId": OWNER_TYPES[owner.kind],
                    "ownerId": to_int(owner.id, f"{owner.kind} id"),
                    "deadline": _utc(draft.due_at).replace(microsecond=0).isoformat(),
                    "title": draft.subject[:255],
                    "description": self._tagged(draft.body, draft.bridge_id),
                }
                if draft.owner_id:
                    params["responsibleId"] = to_int(draft.owner_id, "owner id")
                commands.append(Command(name, "crm.activity.todo.add", params))
            if commands:
                answer = self.api.batch(commands, halt=False)
                for name, key in names.items():
                    result = answer.results.get(name) if answer.ok(name) else None
                    if isinstance(result, Mapping) and result.get("id") not in (None, ""):
                        made[key] = CrmRef("todo", str(result["id"]))
                failed = answer.first_error(list(names))
                if failed is not None:
                    raise failed[1]
                if any(key not in made for key in names.values()):
                    raise PermanentError("Bitrix24 did not return the new to-do's id")
        except BridgeError as exc:
            exc.created = {**made, **exc.created}
            raise
        return made

    def _task(
        self, draft: TaskDraft, owner: CrmRef, owner_id: int, description: str, deadline: str
    ) -> CrmRef:
        links = [f"{TASK_PREFIX[owner.kind]}_{owner_id}"]
        if draft.contact is not None and draft.contact != owner:
            links.append(f"C_{to_int(draft.contact.id, 'contact id')}")
        if draft.maybe_written:
            found = self.api.call(
                "tasks.task.list",
                {
                    "filter": {"UF_CRM_TASK": links[0]},
                    "select": ["ID", "DESCRIPTION"],
                    "order": {"ID": "desc"},
                },
            ).result
            tasks = found.get("tasks") if isinstance(found, Mapping) else None
            for task in tasks if isinstance(tasks, list) else []:
                if isinstance(task, Mapping) and parse_marker(
                    task.get("description") or task.get("DESCRIPTION")
                ) == marker_hash(draft.bridge_id):
                    return CrmRef("task", str(task.get("id") or task.get("ID")))
        responsible = draft.owner_id or self.settings.default_responsible_id
        if not responsible:
            raise PermanentError(
                "Bitrix24 tasks need a responsible user: set an owner in the mapping or the "
                "tenant setting `default_responsible_id` (or use `task_kind: todo`)"
            )
        result = self.api.call(
            "tasks.task.add",
            {
                "fields": {
                    "TITLE": draft.subject[:255],
                    "DESCRIPTION": description,
                    "RESPONSIBLE_ID": to_int(responsible, "owner id"),
                    "DEADLINE": deadline,
                    "UF_CRM_TASK": links,
                }
            },
        ).result
        task = result.get("task") if isinstance(result, Mapping) else None
        if not isinstance(task, Mapping) or task.get("id") in (None, ""):
            raise PermanentError("Bitrix24 did not return the new task's id")
        return CrmRef("task", str(task["id"]))


def _comparable(text: str) -> str:
    """A comment's text as a CRM that drops zero-width characters keeps it."""
    return strip_hidden(text).strip()
