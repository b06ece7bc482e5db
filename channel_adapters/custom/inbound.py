"""One signed request from the system -> one normalised event (the shape is
in the package docstring). A body that is not that shape is a 400 that says
which field is wrong: the system's developer reads it, fixes the call and
sends again."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from bridge.errors import PayloadError
from bridge.model import (
    Attachment,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    SenderProfile,
)

__all__ = ["KIND", "MAX_TEXT", "parse_request"]

KIND = "custom"
#: longest text accepted in one message (characters)
MAX_TEXT = 65_536
#: most attachments in one message
MAX_ATTACHMENTS = 20
#: longest id (thread, message, sender) accepted
MAX_ID = 256
#: what a text field may carry at most (names, e-mail, phone, language, URLs)
MAX_FIELD = 2_048

_PROFILE_FIELDS = ("name", "first_name", "last_name", "email", "phone", "language", "page_url")


def parse_request(body: bytes, delivery_id: str, received_at: dt.datetime) -> list[InboundEvent]:
    """The event one request carries; ``delivery_id``: its ``webhook-id``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PayloadError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise PayloadError("the body must be a JSON object")
    kind = data.get("type", "message")
    if not isinstance(kind, str) or not kind:
        raise PayloadError("type must be a string")
    if kind != "message":
        # a type this version does not handle: recorded and acknowledged
        return [IgnoredEvent(KIND, f"event:{_bounded(delivery_id)}", kind[:64], raw=data)]
    return [_message(data, delivery_id, received_at)]


def _message(data: Mapping[str, Any], delivery_id: str, received_at: dt.datetime) -> InboundMessage:
    sender = data.get("sender")
    if not isinstance(sender, dict):
        raise PayloadError('sender is required: {"id": "<the customer\'s id in your system>"}')
    user_id = _id(sender, "id", "sender.id", required=True)
    assert user_id is not None
    thread_id = _id(data, "thread_id", "thread_id") or user_id
    message_id = _id(data, "message_id", "message_id")
    text = _text(data.get("text"))
    attachments = _attachments(data.get("attachments"))
    if not text.strip() and not attachments:
        raise PayloadError("a message needs a text or attachments")
    return InboundMessage(
        channel_kind=KIND,
        # a message id is unique in its thread; without one, the delivery's
        # own id (the same on the system's retries) keeps a repeat out
        external_id=f"{thread_id}:{message_id}" if message_id else f"delivery:{delivery_id}",
        external_user_id=user_id,
        external_thread_id=thread_id,
        kind=attachments[0].kind if attachments and not text.strip() else MessageKind.TEXT,
        sent_at=_sent_at(data.get("sent_at"), received_at),
        text=text,
        attachments=attachments,
        profile=_profile(sender),
        provider_message_id=message_id,
        reply_to=_id(data, "reply_to", "reply_to"),
        raw=dict(data),
    )


def _bounded(value: str) -> str:
    return value[:MAX_ID]


def _id(data: Mapping[str, Any], key: str, name: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise PayloadError(f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"{name} must be a string or an integer")
    text = str(value)
    if len(text) > MAX_ID or not text.isprintable() or not text.strip():
        raise PayloadError(f"{name} must be 1-{MAX_ID} printable characters")
    return text


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError("text must be a string")
    if len(value) > MAX_TEXT:
        raise PayloadError(f"text is longer than {MAX_TEXT} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError("text is not valid Unicode (a lone surrogate)") from None
    return value


def _sent_at(value: Any, received_at: dt.datetime) -> dt.datetime:
    if value is None:
        return received_at
    if not isinstance(value, str):
        raise PayloadError("sent_at must be an ISO 8601 time with an offset (…Z or …+03:00)")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError("sent_at must be an ISO 8601 time, e.g. 2026-12-05T10:00:00Z") from None
    if when.utcoffset() is None:
        raise PayloadError("sent_at needs an offset (…Z or …+03:00): whose 10:00 is it?")
    return when.astimezone(dt.UTC)


def _profile(sender: Mapping[str, Any]) -> SenderProfile:
    values: dict[str, str | None] = {}
    for key in _PROFILE_FIELDS:
        value = sender.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_FIELD:
            raise PayloadError(f"sender.{key} must be a string of at most {MAX_FIELD} characters")
        values[key] = value.strip() or None
    utm = sender.get("utm") or {}
    if not isinstance(utm, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= MAX_FIELD
        for k, v in utm.items()
    ):
        raise PayloadError("sender.utm must be an object of short strings")
    phone, email = values.get("phone"), values.get("email")
    return SenderProfile(
        display_name=values.get("name"),
        first_name=values.get("first_name"),
        last_name=values.get("last_name"),
        email=email,
        phone=phone,
        # the business's own word that it proved the handle (an SMS code, a
        # confirmed sign-up: docs/channels/custom.md); unsaid is unproven
        phone_verified=_flag(sender, "phone_verified") and phone is not None,
        email_verified=_flag(sender, "email_verified") and email is not None,
        language=values.get("language"),
        page_url=values.get("page_url"),
        utm=dict(utm),
    )


def _flag(sender: Mapping[str, Any], key: str) -> bool:
    """An optional boolean of the sender object (absent or null: False)."""
    value = sender.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise PayloadError(f"sender.{key} must be true or false")
    return value


def _attachments(value: Any) -> tuple[Attachment, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ATTACHMENTS:
        raise PayloadError(f"attachments must be a list of at most {MAX_ATTACHMENTS}")
    return tuple(_attachment(item, i) for i, item in enumerate(value))


def _attachment(item: Any, index: int) -> Attachment:
    where = f"attachments[{index}]"
    if not isinstance(item, dict):
        raise PayloadError(f"{where} must be an object with a url")
    url = item.get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")) or len(url) > 2048:
        raise PayloadError(f"{where}.url must be an http(s) URL")
    mime = item.get("mime_type")
    name = item.get("file_name")
    size = item.get("size")
    if mime is not None and (not isinstance(mime, str) or len(mime) > 255):
        raise PayloadError(f"{where}.mime_type must be a string")
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise PayloadError(f"{where}.file_name must be a string")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise PayloadError(f"{where}.size must be a whole number of bytes")
    return Attachment(
        kind=_kind_of(mime),
        file_ref=url,
        url=url,
        mime_type=mime,
        file_name=name,
        size=size,
    )


def _kind_of(mime: str | None) -> MessageKind:
    major = (mime or "").split("/", 1)[0].lower()
    return {
        "image": MessageKind.PHOTO,
        "audio": MessageKind.AUDIO,
        "video": MessageKind.VIDEO,
    }.get(major, MessageKind.DOCUMENT)
