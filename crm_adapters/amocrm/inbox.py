"""Messages into amoCRM's own chat window through the Chats API (FACTS 1.13).

Per conversation (``conversation_id`` = the bridge's conversation uid):

1. when the bridge knows the contact, make sure the chat exists
   (``POST {scope}/chats``, idempotent per ``conversation_id``) and link it to
   the contact (``POST /api/v4/contacts/chats``, FACTS 1.5) *before* the first
   message, so amoCRM files the messages on that contact and its lead
   instead of opening an Unsorted lead with a second contact. Without a
   contact (mapping ``object: unsorted``) this step is skipped: the first
   message creates the chat, and amoCRM its Unsorted lead, as wanted.
   The step is remembered per process (an LRU of ready chats); a process that
   has not seen the conversation yet repeats it (both calls are idempotent).
   When the core says the conversation already has entries in the CRM
   (``entry.first_in_conversation`` is False), the step is skipped
   unless the batch is a retry: then a live conversation costs one call per
   message even when every job runs in a fresh process (RQ's work-horses).
2. one ``new_message`` per entry: ``msgid`` = the bridge's message id,
   ``sender`` = the customer's channel id. A retry (``maybe_written``) first
   reads the conversation's history for those msgids: whether amojo
   deduplicates by msgid is UNCONFIRMED.

Every chat and message carries ``source.external_id`` (FACTS 1.13: the
create-chat and ``new_message`` payloads both have it), the channel account
the conversation came through (:func:`source_of`): amoCRM keeps it on the
chat and echoes it in the outgoing-message hook, so each chat says which
channel (and which number or bot of it) the customer wrote from. The texts
stay the customer's own: the chat window shows them as the customer wrote.

Media are labelled in the text (``[photo: a.jpg]``). A file the bridge
keeps (an e-mail's attachment) then follows as a ``file``/``picture``
message of its own whose ``media`` is the file's bridge link (amojo fetches
media by URL, FACTS 1.13), ``msgid`` = the bridge id plus ``.f<n>``; a
channel's own file URL is never sent (Telegram's carries the bot token).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from bridge.errors import NotReadyError
from bridge.model import Attachment, CrmAccountInfo, CrmRef, MessageKind, TimelineEntry
from crm_adapters import attachments

from .chats import AmojoClient
from .client import AmoApi
from .fields import to_int
from .settings import AmoCrmApp, AmoCrmSettings
from .sources import external_id
from .timeline import message_text, words

__all__ = ["InboxMixin", "forget_chats", "message_payload", "source_of", "wants_inbox"]

_READY_MAX = 10_000
_ready: OrderedDict[tuple[str, str, str], str] = OrderedDict()
_ready_lock = threading.Lock()


def _remember(key: tuple[str, str, str], chat_id: str) -> None:
    with _ready_lock:
        _ready[key] = chat_id
        _ready.move_to_end(key)
        while len(_ready) > _READY_MAX:
            _ready.popitem(last=False)


def _recall(key: tuple[str, str, str]) -> str | None:
    with _ready_lock:
        chat_id = _ready.get(key)
        if chat_id is not None:
            _ready.move_to_end(key)
        return chat_id


def forget_chats() -> None:
    """Forget every ready chat (tests; a process restart does the same)."""
    with _ready_lock:
        _ready.clear()


def wants_inbox(entry: TimelineEntry) -> bool:
    """The entry also goes to amoCRM's chat window (the mapping's ``inbox``)."""
    return entry.inbox


def _customer(entry: TimelineEntry) -> dict[str, Any]:
    ident = entry.sender_identifier or (
        f"contact-{entry.contact.id}" if entry.contact is not None else entry.conversation_uid
    )
    name = entry.sender_name or words(entry.language)["customer"]
    return {"id": str(ident), "name": name}


def source_of(entry: TimelineEntry) -> dict[str, str]:
    """``source`` of the entry's chat and messages: ``{"external_id":
    "<channel kind>-<channel account id>"}``, e.g. ``whatsapp-3``.

    FACTS 1.13 gives ``source.external_id`` on create-chat and on
    ``new_message`` and echoes it in the outgoing hook, without saying what
    amoCRM shows for it. The value is stable per channel account (never its
    title, which a tenant may rename) and names the channel's kind, so a rep
    reading it knows the channel. The setup registers a source with this
    ``external_id`` per channel account, named by the channel and the
    account (``sources.py``; the Sources API is UNCONFIRMED: not in FACTS),
    which is the name amoCRM and the sandbox show on the chat."""
    return {"external_id": external_id(entry.channel_kind, entry.channel_account)}


def message_payload(entry: TimelineEntry, *, bot_id: str | None = None) -> dict[str, Any]:
    """The ``payload`` of a ``new_message`` / ``edit_message`` event."""
    occurred = entry.occurred_at
    ms = int(occurred.timestamp() * 1000)
    payload: dict[str, Any] = {
        "timestamp": ms // 1000,
        "msec_timestamp": ms,
        "msgid": entry.bridge_id,
        "conversation_id": entry.conversation_uid,
        "source": source_of(entry),
        "message": {"type": "text", "text": message_text(entry)},
        "silent": False,
    }
    customer = _customer(entry)
    if entry.direction == "in":
        payload["sender"] = customer
    else:
        # a rep's message sent from another tool, echoed for the record:
        # from the channel's bot to the customer, without notifying anyone
        name = entry.sender_name or words(entry.language)["agent"]
        sender: dict[str, Any] = {"id": f"bridge-bot-{bot_id or 'bot'}", "name": name}
        if bot_id:
            sender["ref_id"] = bot_id
        payload["sender"] = sender
        payload["receiver"] = customer
        payload["silent"] = True
    return payload


def file_messages(entry: TimelineEntry, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``new_message`` payloads of the entry's files amojo can fetch,
    after its text message (``payload``); none for an edit."""
    if _edit_of(entry):
        return []
    return [
        {**payload, "msgid": f"{entry.bridge_id}.f{n}", "message": _media(a)}
        for n, a in enumerate(attachments.fetchable(entry), 1)
    ]


def _media(attachment: Attachment) -> dict[str, Any]:
    return {
        "type": "picture" if attachment.kind == MessageKind.PHOTO else "file",
        "media": attachment.url,
        "file_name": attachment.file_name or "file",
        "file_size": attachment.size or 0,
    }


class InboxMixin:
    """The Chats API part of ``append_entries`` (and delivery statuses)."""

    account: CrmAccountInfo
    settings: AmoCrmSettings
    app: AmoCrmApp
    api: AmoApi
    amojo: AmojoClient

    def _scope_id(self) -> str:
        scope_id = self.settings.scope_id
        if not scope_id:
            # the setup that connects the chat channel has not finished (it
            # may still be running): wait for it rather than fail the message
            raise NotReadyError(
                "amoCRM chat channel is not connected yet: waiting for `bridge crm setup` "
                "(needs `inbox: true` in the mapping)"
            )
        return scope_id

    def _ensure_chat(self, scope_id: str, entry: TimelineEntry) -> None:
        """Create the chat and link it to the contact (once per process)."""
        if entry.contact is None:
            return
        key = (scope_id, entry.conversation_uid, str(entry.contact.id))
        if _recall(key) is not None:
            return
        customer = _customer(entry)
        chat_id = self.amojo.create_chat(
            scope_id,
            {
                "conversation_id": entry.conversation_uid,
                "source": source_of(entry),
                "user": customer,
            },
        )
        self.api.json(
            "POST",
            "/api/v4/contacts/chats",
            json=[{"contact_id": to_int(entry.contact.id, "contact id"), "chat_id": chat_id}],
        )
        _remember(key, chat_id)

    def _publish(self, entries: Sequence[TimelineEntry], done: dict[str, CrmRef]) -> None:
        """Chat messages for ``entries`` into ``done`` (bridge id -> message
        ref), conversation by conversation, in the given order."""
        if not entries:
            return
        scope_id = self._scope_id()
        bot_id = self.app.bot_id or None
        conversations: dict[str, list[TimelineEntry]] = {}
        for entry in entries:
            conversations.setdefault(entry.conversation_uid, []).append(entry)
        for conversation, group in conversations.items():
            maybe = {
                msgid
                for e in group
                if e.maybe_written and not _edit_of(e)
                for msgid in (e.bridge_id, *_file_ids(e))
            }
            found = self.amojo.find_in_history(scope_id, conversation, maybe) if maybe else {}
            if group[0].first_in_conversation or maybe:
                self._ensure_chat(scope_id, group[0])
            for entry in group:
                done[entry.bridge_id] = self._send_entry(scope_id, entry, bot_id, found)

    def _send_entry(
        self, scope_id: str, entry: TimelineEntry, bot_id: str | None, found: dict[str, str]
    ) -> CrmRef:
        """The entry's message (and its files), each unless ``found`` (a
        retry found it in the chat's history)."""
        payload = message_payload(entry, bot_id=bot_id)
        ref = found.get(entry.bridge_id)
        if ref is None:
            event = "new_message"
            original = _edit_of(entry)
            if original:
                event, payload["msgid"] = "edit_message", original
            answer = self.amojo.send(scope_id, event, payload)
            ref = str(answer.get("msgid") or entry.bridge_id)
        for media in file_messages(entry, payload):
            if media["msgid"] not in found:
                self.amojo.send(scope_id, "new_message", media)
        return CrmRef("message", ref)


def _file_ids(entry: TimelineEntry) -> list[str]:
    return [f"{entry.bridge_id}.f{n}" for n in range(1, len(attachments.fetchable(entry)) + 1)]


def _edit_of(entry: TimelineEntry) -> str | None:
    """The msgid an edit replaces, when the core names it (``edit_of``: the
    bridge id of the edited message); without it an edit is sent as a new
    message marked "(edited)"."""
    if not entry.is_edit:
        return None
    return entry.edit_of or None
