"""amoCRM -> bridge: two kinds of webhook.

1. **Account webhooks** (FACTS 1.12) at the tenant's own URL
   ``/webhooks/crm/amocrm/<tenant key>``: ``application/x-www-form-urlencoded``
   in PHP bracket notation (``leads[status][0][id]=…&account[id]=…``), values
   are strings, and they are **not signed**. The tenant's random key in the
   URL is the only secret; :func:`check_account` makes sure the body names
   this tenant's account too.
2. **The chat channel's outgoing-message hook** (FACTS 1.13) at
   ``/webhooks/crm/amocrm/route/<scope_id>``: JSON, ``X-Signature`` = hex
   HMAC-SHA1(channel_secret, raw body). amoCRM sends it **once** and never
   retries; the core stores it before answering.

A request is told apart by its media type: form-encoded is an account
webhook, JSON a chat hook (which must be signed).

**Reply marker (notes mode).** A rep answers a customer from a lead by
adding a note whose text starts with the reply marker (the tenant's
``reply_marker`` setting, ``@client`` by default; ``@клиент`` always works).
The ``note_lead`` webhook turns it into a REPLY; the marker is cut off the
text the customer receives. The bridge's own notes carry its marker (hidden, or
the visible ``[bridge:…]`` of earlier versions; ``freetext``) and are never
replies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from bridge.errors import PayloadError, SignatureError
from bridge.model import Attachment, CrmEvent, CrmEventKind, CrmRef, MessageKind, WebhookRequest
from crm_adapters import phpform
from crm_adapters.freetext import has_marker
from crm_adapters.phpform import items

from .fields import as_map
from .leads import CLOSED_STATUSES

__all__ = [
    "DEFAULT_REPLY_MARKERS",
    "account_events",
    "chat_events",
    "decode_brackets",
    "is_echo",
    "is_form",
    "items",
    "strip_reply_marker",
]

FORM = "application/x-www-form-urlencoded"
DEFAULT_REPLY_MARKERS = ("@client", "@клиент")
MAX_DEPTH = 8


# --------------------------------------------------------------------------
# PHP bracket notation
# --------------------------------------------------------------------------


def decode_brackets(body: bytes) -> dict[str, Any]:
    """The form as nested dicts (``crm_adapters.phpform``; at most
    8 levels)."""
    return phpform.decode_brackets(body, what="amoCRM webhook", max_depth=MAX_DEPTH)


def is_form(request: WebhookRequest) -> bool:
    content_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
    return content_type == FORM


# --------------------------------------------------------------------------
# account webhooks
# --------------------------------------------------------------------------


def check_account(
    payload: Mapping[str, Any], account_id: str | None, subdomain: str | None
) -> None:
    """The body must name this tenant's account: amoCRM signs nothing, so a
    leaked URL of another tenant must not move this tenant's data. The id is
    decisive (subdomains can be renamed); the subdomain is checked only when
    we know no id."""
    account = payload.get("account")
    if not isinstance(account, Mapping):
        raise SignatureError("amoCRM webhook does not name its account")
    their_id = str(account.get("id") or "").strip()
    their_sub = str(account.get("subdomain") or "").strip().lower()
    if account_id:
        if their_id != str(account_id):
            raise SignatureError("amoCRM webhook is for another account")
        return
    if not subdomain or their_sub != str(subdomain).lower():
        raise SignatureError("amoCRM webhook is for another account")


def strip_reply_marker(text: str, markers: tuple[str, ...]) -> str | None:
    """The reply without its marker, or None when ``text`` is not a reply."""
    stripped = text.lstrip()
    lowered = stripped.casefold()
    for mark in markers:
        mark = mark.strip()
        if mark and lowered.startswith(mark.casefold()):
            rest = stripped[len(mark) :]
            if rest and rest[0].isalnum():
                continue  # "@clientele ..." is not the marker
            return rest.lstrip(" \t:,-—").strip()
    return None


def account_events(
    payload: Mapping[str, Any], received_at: dt.datetime, markers: tuple[str, ...]
) -> list[CrmEvent]:
    """Every record of an account webhook as an event (unknown kinds kept)."""
    events: list[CrmEvent] = []
    for entity, actions in payload.items():
        if entity == "account" or not isinstance(actions, Mapping):
            continue
        for action, records in actions.items():
            for record in items(records):
                events.append(
                    _account_event(str(entity), str(action), record, received_at, markers)
                )
    return events


def _account_event(
    entity: str,
    action: str,
    record: Mapping[str, Any],
    received_at: dt.datetime,
    markers: tuple[str, ...],
) -> CrmEvent:
    record_id = _str(record.get("id"))
    when = _when(
        record.get("last_modified") or record.get("updated_at") or record.get("date_create"),
        received_at,
    )
    owner = _str(record.get("responsible_user_id"))
    base = f"{entity}.{action}:{record_id or _digest(record)}"
    if entity == "leads" and record_id:
        lead = CrmRef("lead", record_id)
        if action == "status" and _int(record.get("status_id")) in CLOSED_STATUSES:
            return CrmEvent(
                CrmEventKind.ENTITY_CLOSED,
                f"{base}:{record.get('status_id')}",
                when,
                entity=lead,
                owner_id=owner,
                raw=dict(record),
            )
        if action == "status" and _str(record.get("status_id")):
            # an open stage (FACTS 1.12: status_id, old_status_id): the
            # service layer's transfers by stage read it
            return CrmEvent(
                CrmEventKind.ENTITY_STAGE,
                f"{base}:{record.get('status_id')}",
                when,
                entity=lead,
                owner_id=owner,
                stage=_str(record.get("status_id")),
                raw=dict(record),
            )
        if action == "responsible" and owner:
            return CrmEvent(
                CrmEventKind.OWNER_CHANGED,
                f"{base}:{owner}",
                when,
                entity=lead,
                owner_id=owner,
                raw=dict(record),
            )
        if action == "delete":
            return CrmEvent(CrmEventKind.ENTITY_CLOSED, base, when, entity=lead, raw=dict(record))
        if action == "update":
            # the lead's tags now (``tags[i][name]``; none sent: none left):
            # the service layer's transfers by tag read them
            tags = tuple(
                name for tag in items(record.get("tags")) if (name := _str(tag.get("name")))
            )
            return CrmEvent(
                CrmEventKind.ENTITY_TAGS,
                f"{base}:{record.get('last_modified') or _digest(record)}",
                when,
                entity=lead,
                tags=tags,
                raw=dict(record),
            )
    if entity == "leads" and action == "note":
        reply = _note_reply(record, received_at, markers)
        if reply is not None:
            return reply
    if entity == "contacts" and action == "delete" and record_id:
        # Deleted, or merged away in amoCRM's UI: a delete carries the id only
        # (FACTS 1.12), never the survivor, so a merge stays CONTACT_REMOVED
        # here, not CONTACT_MERGED (see merge.py)
        if str(record.get("type") or "contact") == "contact":
            return CrmEvent(
                CrmEventKind.CONTACT_REMOVED,
                base,
                when,
                contact=CrmRef("contact", record_id),
                raw=dict(record),
            )
    return CrmEvent(CrmEventKind.UNKNOWN, base, when, raw=dict(record))


def is_echo(payload: Mapping[str, Any]) -> bool:
    """Every record of the account webhook is a note carrying the bridge's
    marker (amoCRM sends a ``note_lead`` webhook for each note, the ones the
    bridge writes too): :func:`account_events` would make each an ignored
    event, so nothing of it needs the tenant."""
    notes = 0
    for entity, actions in payload.items():
        if entity == "account":
            continue
        if not isinstance(actions, Mapping):
            return False
        for action, records in actions.items():
            if action != "note":
                return False
            for record in items(records):
                if not has_marker(_note_text(record)):
                    return False
                notes += 1
    return notes > 0


def _note_text(record: Mapping[str, Any]) -> str:
    """A note record's text, wherever its layout keeps it (see
    :func:`_note_reply`)."""
    note: Mapping[str, Any] = as_map(record.get("note")) or record
    text = note.get("text")
    if isinstance(text, str) and text:
        return text
    params = as_map(note.get("params"))
    return params["text"] if isinstance(params.get("text"), str) else ""


def _note_reply(
    record: Mapping[str, Any], received_at: dt.datetime, markers: tuple[str, ...]
) -> CrmEvent | None:
    """A rep's note starting with the reply marker -> REPLY. The note may sit
    under ``note`` or at the record's top level; its text under ``text`` or
    ``params.text`` (the note webhook's layout is not in FACTS 1.12)."""
    note: Mapping[str, Any] = as_map(record.get("note")) or record
    text = _note_text(record)
    if not text or has_marker(text):
        return None  # empty, or the bridge's own note
    reply = strip_reply_marker(text, markers)
    if reply is None:
        return None
    note_id = _str(note.get("id") or record.get("id"))
    lead_id = _str(
        note.get("element_id")
        or note.get("entity_id")
        or record.get("element_id")
        or record.get("entity_id")
    )
    if not note_id or not lead_id:
        raise PayloadError("amoCRM note webhook without note id or lead id")
    author = _str(
        note.get("created_by") or record.get("created_by") or note.get("responsible_user_id")
    )
    return CrmEvent(
        kind=CrmEventKind.REPLY,
        external_id=f"note:{lead_id}:{note_id}",
        occurred_at=_when(
            note.get("date_create") or note.get("created_at") or record.get("created_at"),
            received_at,
        ),
        crm_thread_id=f"lead:{lead_id}",
        text=reply,
        author_id=author,
        entity=CrmRef("lead", lead_id),
        raw=dict(record),
    )


# --------------------------------------------------------------------------
# the chat channel's outgoing-message hook
# --------------------------------------------------------------------------

#: amojo message types -> our kinds (FACTS 1.13)
MEDIA_KINDS: dict[str, MessageKind] = {
    "picture": MessageKind.PHOTO,
    "video": MessageKind.VIDEO,
    "file": MessageKind.DOCUMENT,
    "voice": MessageKind.VOICE,
    "audio": MessageKind.AUDIO,
    "sticker": MessageKind.STICKER,
}


def load_json(body: bytes) -> Mapping[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise PayloadError("amoCRM chat webhook body is not JSON") from None
    if not isinstance(payload, Mapping):
        raise PayloadError("amoCRM chat webhook body must be an object")
    return payload


def chat_events(payload: Mapping[str, Any], received_at: dt.datetime) -> list[CrmEvent]:
    """A manager's message -> REPLY; typing, reactions and anything else
    -> UNKNOWN."""
    outer = payload.get("message")
    if not isinstance(outer, Mapping) or not isinstance(outer.get("message"), Mapping):
        return [
            CrmEvent(
                CrmEventKind.UNKNOWN, f"amojo:{_digest(payload)}", received_at, raw=dict(payload)
            )
        ]
    message = outer["message"]
    message_id = _str(message.get("id"))
    if not message_id:
        raise PayloadError("amoCRM chat webhook message has no id")
    conversation = as_map(outer.get("conversation"))
    receiver = as_map(outer.get("receiver"))
    sender = as_map(outer.get("sender"))
    ms = outer.get("msec_timestamp")
    when = _when_ms(ms) if ms not in (None, "") else _when(outer.get("timestamp"), received_at)
    text = message.get("text") if isinstance(message.get("text"), str) else ""
    return [
        CrmEvent(
            kind=CrmEventKind.REPLY,
            external_id=message_id,
            occurred_at=when or received_at,
            thread_key=_str(conversation.get("client_id")),
            crm_thread_id=_str(conversation.get("id")),
            recipient=_str(receiver.get("client_id")),
            text=text,
            attachments=_attachments(message),
            author_id=_str(sender.get("id")),
            author_name=_str(sender.get("name")),
            raw=dict(payload),
        )
    ]


def _attachments(message: Mapping[str, Any]) -> tuple[Attachment, ...]:
    media = _str(message.get("media"))
    kind = MEDIA_KINDS.get(str(message.get("type") or ""))
    if not media or kind is None:
        return ()
    size = message.get("file_size")
    return (
        Attachment(
            kind=kind,
            url=media,
            file_name=_str(message.get("file_name")),
            size=_int(size)
            if isinstance(size, int) or (isinstance(size, str) and size.isdigit())
            else None,
        ),
    )


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    if value in (None, "") or isinstance(value, (Mapping, list)):
        return None
    return str(value)


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _when(value: Any, default: dt.datetime) -> dt.datetime:
    """Epoch seconds (as amoCRM's form values: strings) -> aware datetime."""
    number = _int(value)
    if number is None or number <= 0:
        return default
    try:
        return dt.datetime.fromtimestamp(number, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return default


def _when_ms(value: Any) -> dt.datetime | None:
    number = _int(value)
    if number is None or number <= 0:
        return None
    try:
        return dt.datetime.fromtimestamp(number / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _digest(value: Any) -> str:
    try:
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except RecursionError:  # json.loads took it, but only just: nested too deeply
        raise PayloadError("amoCRM webhook body is nested too deeply") from None
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
