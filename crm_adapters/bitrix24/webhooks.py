"""Bitrix24 -> bridge: events (FACTS 2.5, 2.6; docs ``api-reference/events/*``).

Bitrix24 POSTs events **form-encoded** in PHP ``http_build_query`` notation
(``event=ONCRMLEADUPDATE&data[FIELDS][ID]=7&auth[application_token]=…``;
``events/index.md``). The JSON shown in the docs is only a rendering; a
JSON body is accepted too (same structure). :func:`decode_brackets` is
strict: a malformed key, a key used both as a value and as a container,
bad UTF-8, too deep or too many fields is a ``PayloadError``.

**Proof.** ``auth[application_token]`` equal to the one the install event
delivered is the only proof an event comes from the portal (no HMAC;
``safe-event-handlers.md``); it is compared in constant time. Incoming-
webhook tenants have no app, hence no token and no events: all refused.

**Events** (:func:`events_from`):

====================================  ========================================
``ONIMCONNECTORMESSAGEADD``           one ``REPLY`` per message: ``external_id``
                                      ``<im.chat_id>:<im.message_id>``,
                                      ``thread_key`` = ``chat.id`` (our
                                      conversation uid), text from BB-code
``ONIMCONNECTORDIALOGFINISH``         one ``THREAD_CLOSED`` per ``DATA`` item:
                                      an operator closed the chat's Open Lines
                                      session; ``thread_key`` = ``chat.id``
``ONAPPUNINSTALL``                    ``APP_REMOVED``
``ONCRMLEADUPDATE``/``…DEALUPDATE``   carry only the id: the adapter re-reads
                                      the entity (``ENTITY_CLOSED`` when closed,
                                      ``OWNER_CHANGED`` with the current owner)
``ONCRMLEADDELETE``/``…DEALDELETE``   ``ENTITY_CLOSED``
``ONCRMCONTACTDELETE``                ``CONTACT_REMOVED`` (a merge in the UI
                                      too: the docs name no merge event and
                                      the delete no survivor; see merge.py)
anything else                         ``UNKNOWN``
====================================  ========================================

Events are **not retried** by Bitrix24 (FACTS 2.6): the webhook view stores
them before answering.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from bridge.errors import PayloadError, SignatureError
from bridge.model import Attachment, CrmEvent, CrmEventKind, CrmRef, MessageKind, WebhookRequest
from crm_adapters import phpform
from crm_adapters.phpform import items

from .batch import as_map
from .openlines import bb_to_text

__all__ = [
    "ENTITY_EVENTS",
    "decode_brackets",
    "decode_event",
    "events_from",
    "items",
    "token_digest",
    "verify_token",
]

FORM = "application/x-www-form-urlencoded"
MAX_DEPTH = 10

#: event -> (entity kind, what happened)
ENTITY_EVENTS: dict[str, tuple[str, str]] = {
    "ONCRMLEADUPDATE": ("lead", "update"),
    "ONCRMDEALUPDATE": ("deal", "update"),
    "ONCRMLEADDELETE": ("lead", "delete"),
    "ONCRMDEALDELETE": ("deal", "delete"),
    "ONCRMCONTACTDELETE": ("contact", "delete"),
}


# -- decoding -------------------------------------------------------------------


def decode_brackets(body: bytes) -> dict[str, Any]:
    """The form as nested dicts (``crm_adapters.phpform``; at most
    10 levels)."""
    return phpform.decode_brackets(body, what="Bitrix24 event", max_depth=MAX_DEPTH)


def decode_event(request: WebhookRequest) -> dict[str, Any]:
    """The event as nested dicts, from a form (what Bitrix24 sends) or JSON."""
    content_type = (request.header("content-type") or FORM).split(";", 1)[0].strip().lower()
    if content_type == "application/json":
        try:
            payload = json.loads(request.body)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            raise PayloadError("Bitrix24 event body is not JSON") from None
        if not isinstance(payload, dict):
            raise PayloadError("Bitrix24 event body must be an object")
        return payload
    return decode_brackets(request.body)


# -- proof ------------------------------------------------------------------------


def token_digest(token: str) -> str:
    """What the tenant settings may keep instead of the token itself."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def verify_token(
    payload: Mapping[str, Any],
    *,
    stored_token: str | None,
    stored_digest: str | None,
    member_id: str | None,
) -> None:
    """``auth[application_token]`` must equal the stored one (constant-time);
    ``auth[member_id]``, when both are known, must be this tenant's portal."""
    auth = payload.get("auth")
    if not isinstance(auth, Mapping):
        raise SignatureError("Bitrix24 event without auth[application_token]")
    token = auth.get("application_token")
    if not isinstance(token, str) or not token:
        raise SignatureError("Bitrix24 event without auth[application_token]")
    if stored_token:
        good = hmac.compare_digest(token.encode("utf-8"), str(stored_token).encode("utf-8"))
    elif stored_digest:
        good = hmac.compare_digest(token_digest(token), str(stored_digest))
    else:
        raise SignatureError(
            "no Bitrix24 application_token is stored for this tenant: events are accepted "
            "once the app's install event has delivered it"
        )
    if not good:
        raise SignatureError("Bitrix24 event application_token does not match")
    theirs = auth.get("member_id")
    if member_id and isinstance(theirs, str) and theirs and theirs != member_id:
        raise SignatureError("Bitrix24 event is for another portal")


# -- events -----------------------------------------------------------------------


def _when(value: Any, default: dt.datetime) -> dt.datetime:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return default
    if number <= 0:
        return default
    try:
        return dt.datetime.fromtimestamp(number, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return default


def _str(value: Any) -> str | None:
    if value in (None, "") or isinstance(value, (Mapping, list)):
        return None
    return str(value)


def _digest(value: Any) -> str:
    try:
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except RecursionError:  # json.loads took it, but only just: nested too deeply
        raise PayloadError("Bitrix24 webhook body is nested too deeply") from None
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def events_from(
    payload: Mapping[str, Any],
    received_at: dt.datetime,
    *,
    keep_signature: bool = False,
) -> list[CrmEvent]:
    """Every event in ``payload`` except the CRM updates, which need a
    re-read (the adapter handles those: see ``ENTITY_EVENTS``)."""
    name = str(payload.get("event") or "").upper()
    when = _when(payload.get("ts"), received_at)
    raw = dict(payload)
    raw.pop("auth", None)  # tokens never travel with the event
    data = as_map(payload.get("data"))
    if name == "ONIMCONNECTORMESSAGEADD":
        replies = []
        for message in items(data.get("MESSAGES")):
            replies.append(_reply(message, when, raw, keep_signature))
        if not replies:
            raise PayloadError("Bitrix24 OnImConnectorMessageAdd without MESSAGES")
        return replies
    if name == "ONIMCONNECTORDIALOGFINISH":
        return _dialogs_finished(data, when, raw)
    if name == "ONAPPUNINSTALL":
        return [CrmEvent(CrmEventKind.APP_REMOVED, f"{name}:{_digest(raw)}", when, raw=raw)]
    if name in ENTITY_EVENTS:
        kind, action = ENTITY_EVENTS[name]
        fields = as_map(data.get("FIELDS"))
        entity_id = _str(fields.get("ID"))
        if not entity_id or not entity_id.isdigit():
            raise PayloadError(f"Bitrix24 {name} without data[FIELDS][ID]")
        external = f"{name}:{entity_id}:{payload.get('ts') or _digest(raw)}"
        if kind == "contact":
            return [
                CrmEvent(
                    CrmEventKind.CONTACT_REMOVED,
                    external,
                    when,
                    contact=CrmRef("contact", entity_id),
                    raw=raw,
                )
            ]
        if action == "delete":
            return [
                CrmEvent(
                    CrmEventKind.ENTITY_CLOSED,
                    external,
                    when,
                    entity=CrmRef(kind, entity_id),
                    raw=raw,
                )
            ]
        # an update: the adapter re-reads it (the event names only the id)
        return [
            CrmEvent(CrmEventKind.UNKNOWN, external, when, entity=CrmRef(kind, entity_id), raw=raw)
        ]
    return [CrmEvent(CrmEventKind.UNKNOWN, f"{name or 'event'}:{_digest(raw)}", when, raw=raw)]


def _dialogs_finished(
    data: Mapping[str, Any], when: dt.datetime, raw: Mapping[str, Any]
) -> list[CrmEvent]:
    """OnImConnectorDialogFinish (on-im-connector-dialog-finish.md): each
    ``DATA`` item names the chat (``chat.id``; ``connector.chat_id`` is the
    same on the page's example) and the session that closed. Which chat id it
    is, the connector's or Bitrix24's own, the page does not say
    (UNCONFIRMED; the sandbox's ``dialog_finish_chat`` switch): it is matched
    as the connector's, i.e. our conversation uid."""
    out = []
    for item in items(data.get("DATA")):
        chat = _str(as_map(item.get("chat")).get("id")) or _str(
            as_map(item.get("connector")).get("chat_id")
        )
        session = _str(as_map(item.get("session")).get("id"))
        if not chat or not session:
            raise PayloadError("Bitrix24 OnImConnectorDialogFinish without chat[id]/session[id]")
        out.append(
            CrmEvent(
                CrmEventKind.THREAD_CLOSED,
                f"ONIMCONNECTORDIALOGFINISH:{session}",
                when,
                thread_key=chat,
                raw={**raw, "dialog": dict(item)},
            )
        )
    if not out:
        raise PayloadError("Bitrix24 OnImConnectorDialogFinish without DATA")
    return out


def _reply(
    message: Mapping[str, Any], when: dt.datetime, raw: Mapping[str, Any], keep_signature: bool
) -> CrmEvent:
    im = as_map(message.get("im"))
    body = as_map(message.get("message"))
    chat = as_map(message.get("chat"))
    chat_id, message_id = _str(im.get("chat_id")), _str(im.get("message_id"))
    thread = _str(chat.get("id"))
    if not chat_id or not message_id or not chat_id.isdigit() or not message_id.isdigit():
        raise PayloadError("Bitrix24 connector message without im[chat_id]/im[message_id]")
    if not thread:
        raise PayloadError("Bitrix24 connector message without chat[id]")
    text, author = bb_to_text(str(body.get("text") or ""), keep_signature=keep_signature)
    return CrmEvent(
        kind=CrmEventKind.REPLY,
        external_id=f"{chat_id}:{message_id}",
        occurred_at=when,
        thread_key=thread,
        crm_thread_id=thread,
        text=text,
        attachments=_files(body.get("files")),
        author_id=_str(body.get("user_id")),
        author_name=author,
        raw={**raw, "message": dict(message)},
    )


def _files(value: Any) -> tuple[Attachment, ...]:
    """Files an operator attached (``message.files[]``: ``url``, ``name``,
    when Bitrix24 sends them; not described on the event page)."""
    out = []
    for item in items(value):
        url = _str(item.get("link") or item.get("url"))
        if not url or not url.startswith("https://"):
            continue
        kind = MessageKind.PHOTO if str(item.get("type") or "") == "image" else MessageKind.DOCUMENT
        out.append(Attachment(kind=kind, url=url, file_name=_str(item.get("name"))))
    return tuple(out)
