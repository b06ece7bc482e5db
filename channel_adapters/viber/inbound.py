"""Viber REST bot API callbacks: one signed POST -> one delivery -> one event.

Viber POSTs one JSON callback per request to the bot's webhook (corpora FACTS
§4; ``viberbot/api/event_type.py``; creators.viber.com/docs/bots-api/events)::

    {"event": "message", "timestamp": 1457764197627,
     "message_token": 4912661846655238145,
     "sender": {"id", "name", "avatar", "language", "country", "api_version"},
     "message": {"type": "text", "text": "...", "tracking_data": "..."}}

signed with ``X-Viber-Content-Signature``: the hex HMAC-SHA256 of the raw
body keyed with the bot's auth token (:func:`signature`; FACTS §4 has the
test vector). Pure functions, no I/O:

* :func:`decode` — the body as a JSON object with an ``event``, or
  :class:`PayloadError`. Python's ``json`` keeps ``message_token`` (beyond
  2^53: 4912661846655238145 in the corpus) an exact ``int``; it is used
  only as a string from then on (FACTS §0 rule 5);
* :func:`split` — the cheap edge: the one :class:`RawDelivery` of a POST,
  keyed by :func:`delivery_key`, the body kept byte for byte;
* :func:`parse` — a delivery body -> its event.

Journal keys (``message_token`` is Viber's dedupe key, FACTS §0 rule 3; the
status callbacks name the token of *our* message, so the event is part of
the key)::

    message                  <message_token>
    delivered, seen, failed  <message_token>:<event>
    anything else            <event>:<message_token or the body's SHA-256>

Event -> normalised event::

    webhook                  -> IgnoredEvent("webhook") (set_webhook's URL check)
    message                  -> InboundMessage (text, picture, video, file,
                                sticker, contact, location, url, rich_media)
    conversation_started     -> InboundMessage(kind=SYSTEM): the user opened the
                                chat; ``context`` (a deep link's) -> profile.utm
                                by the Telegram /start convention
    subscribed, unsubscribed -> InboundMessage(kind=SYSTEM), the consent in words
                                and as ``consent`` (``bridge.consent``: a reply
                                after an unsubscribe is refused with the reason)
    delivered, seen, failed  -> OutboundStatus (by our message's token)
    anything else            -> IgnoredEvent(<event>)

Identity: the user is ``sender.id`` / ``user.id`` / ``user_id`` (stable per
bot, FACTS §4); the thread is the same id (a bot talks 1:1). A shared
contact's phone number becomes the profile's phone (E.164) when it is the
user's own: Viber's ``share-phone`` keyboard button sends the user's number
as a ``contact`` message; an address-book card has no marker telling them
apart, so a card whose name is not the sender's is shown only, and even the
sender's own is never ``phone_verified`` (a guess, not a proof).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import phonenumbers

from bridge.errors import PayloadError
from bridge.model import (
    Attachment,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    RawDelivery,
    SenderProfile,
)

__all__ = [
    "CONSENT",
    "CONVERSATION_STARTED",
    "KIND",
    "STATUSES",
    "decode",
    "delivery_key",
    "is_conversation_started",
    "parse",
    "signature",
    "split",
    "utm_from_context",
]

KIND = "viber"
SIGNATURE_HEADER = "x-viber-content-signature"
CONVERSATION_STARTED = "conversation_started"
#: the status callbacks of our own messages -> ``OutboundStatus.status``
#: (the adapter's ``delivery_statuses`` maps ``seen`` to read)
STATUSES = frozenset({"delivered", "seen", "failed"})
#: the consent events as the CRM timeline says them (English / Russian)
CONSENT: dict[str, str] = {
    "subscribed": "(the user subscribed to the bot: replies can be sent / "
    "пользователь подписался на бота)",
    "unsubscribed": "(the user unsubscribed from the bot: replies will fail until they write "
    "again / пользователь отписался от бота: ответы не будут доставлены)",
}
OPENED = "(the user opened the chat / пользователь открыл чат)"
#: Viber's user ids are base64-ish (``01234567890A=``); the journal's and
#: the conversation's columns take 64 characters
USER_ID_RE = re.compile(r"[A-Za-z0-9+/=_-]{1,64}")
#: a deep link's ``context`` kept as Telegram keeps a /start payload
#: (``channel_adapters.telegram.inbound``): ``<key>-<value>`` pairs joined by ``__``
UTM_PAIR_RE = re.compile(r"([a-z][a-z0-9_]*)-(.+)")
MAX_CONTEXT = 256
MAX_EVENT_TYPE = 64
MAX_TEXT = 20_000
MAX_FIELD = 1_000
_SURROGATE = re.compile("[\ud800-\udfff]")

#: message types with a file -> kind (``viberbot/api/messages/*``)
MEDIA_KINDS: dict[str, MessageKind] = {
    "picture": MessageKind.PHOTO,
    "video": MessageKind.VIDEO,
    "file": MessageKind.DOCUMENT,
    "sticker": MessageKind.STICKER,
}


def signature(token: str, body: bytes) -> str:
    """``X-Viber-Content-Signature``: hex HMAC-SHA256 of the raw body keyed
    with the auth token (FACTS §4, ``viberbot/api/api.py`` L91-95)."""
    return hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_matches(token: str, body: bytes, given: str | None) -> bool:
    """Constant-time comparison of the header with :func:`signature`."""
    if not token or not given:
        return False
    expected = signature(token, body)
    return hmac.compare_digest(given.strip().lower().encode("utf-8", "replace"), expected.encode())


# --------------------------------------------------------------------------
# The edge
# --------------------------------------------------------------------------


def decode(body: bytes) -> dict[str, Any]:
    """The body as a JSON object with an ``event``, or :class:`PayloadError`."""
    if not isinstance(body, (bytes, bytearray)):
        raise PayloadError("the webhook body is not bytes")
    try:
        data = json.loads(bytes(body))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise PayloadError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise PayloadError("a Viber callback is a JSON object")
    if _str(data.get("event")) is None:
        raise PayloadError('the callback has no "event"')
    return data


def token_of(event: Mapping[str, Any]) -> str | None:
    """``message_token`` as a string (a JSON integer, or its digits)."""
    token = event.get("message_token")
    if isinstance(token, int) and not isinstance(token, bool) and 0 <= token < 2**64:
        return str(token)
    if isinstance(token, str) and token.isascii() and token.isdigit() and len(token) <= 20:
        return token
    return None


def delivery_key(event: Mapping[str, Any], body: bytes) -> str:
    """The journal key (module docstring)."""
    name = _printable(str(event["event"]))[:MAX_EVENT_TYPE]
    token = token_of(event)
    if name == "message":
        if token is None:
            raise PayloadError('a message callback needs its "message_token" (an integer)')
        return token
    if name in STATUSES:
        if token is None:
            raise PayloadError(f'a {name} callback needs the "message_token" it reports on')
        return f"{token}:{name}"
    return f"{name}:{token or hashlib.sha256(body).hexdigest()}"


def split(body: bytes) -> RawDelivery:
    """The one delivery of a POST, the body as Viber sent it (it was signed)."""
    return RawDelivery(delivery_key(decode(body), bytes(body)), bytes(body))


def is_conversation_started(delivery: RawDelivery) -> bool:
    return delivery.key.startswith(f"{CONVERSATION_STARTED}:")


# --------------------------------------------------------------------------
# The normaliser
# --------------------------------------------------------------------------


def parse(body: bytes, received_at: dt.datetime) -> list[InboundEvent]:
    """A delivery body (or a callback as Viber sent it) -> its event."""
    event = decode(body)
    key = delivery_key(event, bytes(body))
    name = str(event["event"])
    handler = EVENTS.get(name)
    if handler is None:
        return [_ignored(key, name, event)]
    return [handler(event, key, received_at)]


def _ignored(key: str, name: str, event: Mapping[str, Any]) -> IgnoredEvent:
    return IgnoredEvent(KIND, key, _printable(name)[:MAX_EVENT_TYPE], raw=_facts(event))


def _webhook(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    return _ignored(key, "webhook", event)


def _message(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    sender = _obj(event.get("sender"))
    user = _user_id(sender.get("id"))
    if user is None:
        raise PayloadError(f"message {key} has no sender.id")
    msg = event.get("message")
    if not isinstance(msg, dict):
        raise PayloadError(f"message {key} has no message object")
    kind, text, attachments, phone = _content(msg, sender)
    tracking = _clip(_str(msg.get("tracking_data")), MAX_FIELD)
    facts = {
        **_facts(event),
        "type": _clip(_str(msg.get("type")), 40),
        "tracking_data": tracking,
        "silent": event.get("silent") if isinstance(event.get("silent"), bool) else None,
        "api_version": _int(sender.get("api_version")),
    }
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=user,
        external_thread_id=user,
        kind=kind,
        sent_at=_time(event.get("timestamp"), received_at),
        text=_clip(text, MAX_TEXT) or "",
        attachments=tuple(attachments),
        profile=_profile(sender, phone=phone),
        provider_message_id=token_of(event),
        raw={k: v for k, v in facts.items() if v is not None},
    )


def _conversation_started(
    event: Mapping[str, Any], key: str, received_at: dt.datetime
) -> InboundEvent:
    """The user opened the chat (the bot's Message button, a deep link
    ``viber://pa?chatURI=<uri>&context=<context>``). Not a subscription:
    only the welcome message (the webhook's answer, the adapter's ``answer``)
    may reach the user before they write."""
    user = _obj(event.get("user"))
    user_id = _user_id(user.get("id"))
    if user_id is None:
        raise PayloadError(f"conversation_started {key} has no user.id")
    context = _clip(_str(event.get("context")), MAX_CONTEXT)
    subscribed = event.get("subscribed")
    facts = {
        **_facts(event),
        "context": context,
        "subscribed": subscribed if isinstance(subscribed, bool) else None,
        "type": _clip(_str(event.get("type")), 40),
    }
    text = OPENED if not context else f"{OPENED}\ncontext: {context}"
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=user_id,
        external_thread_id=user_id,
        kind=MessageKind.SYSTEM,
        sent_at=_time(event.get("timestamp"), received_at),
        text=text,
        profile=_profile(user, utm=utm_from_context(context)),
        raw={k: v for k, v in facts.items() if v is not None},
    )


def _consent(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    """``subscribed`` carries ``user``; ``unsubscribed`` only ``user_id``."""
    name = str(event["event"])
    user = _obj(event.get("user"))
    user_id = _user_id(user.get("id")) or _user_id(event.get("user_id"))
    if user_id is None:
        raise PayloadError(f"{name} {key} names no user")
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=user_id,
        external_thread_id=user_id,
        kind=MessageKind.SYSTEM,
        sent_at=_time(event.get("timestamp"), received_at),
        text=CONSENT[name],
        profile=_profile(user),
        raw={**_facts(event), "user_id": user_id},
        consent=name == "subscribed",
    )


def _status(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    """``delivered`` / ``seen`` / ``failed`` of the message whose
    ``message_token`` ``send_message`` returned (our channel message id);
    ``failed`` carries ``desc``. Forward-only: the core moves a reply's
    state on, never back (``delivery_statuses``)."""
    name = str(event["event"])
    token = token_of(event)
    assert token is not None  # delivery_key required it
    desc = _clip(_clean(_str(event.get("desc")) or ""), 300)
    return OutboundStatus(
        channel_kind=KIND,
        external_id=key,
        bridge_id="",
        status=name,
        error=(desc or "Viber reports the message failed") if name == "failed" else None,
        raw={**_facts(event), "user_id": _user_id(event.get("user_id"))},
        channel_message_id=token,
    )


EVENTS: dict[str, Callable[[Mapping[str, Any], str, dt.datetime], InboundEvent]] = {
    "webhook": _webhook,
    "message": _message,
    CONVERSATION_STARTED: _conversation_started,
    "subscribed": _consent,
    "unsubscribed": _consent,
    "delivered": _status,
    "seen": _status,
    "failed": _status,
}


# --------------------------------------------------------------------------
# A message's content
# --------------------------------------------------------------------------


def _content(
    msg: Mapping[str, Any], sender: Mapping[str, Any]
) -> tuple[MessageKind, str, list[Attachment], str | None]:
    """(kind, text, attachments, the sender's own phone) of ``message``."""
    mtype = _str(msg.get("type")) or "unknown"
    text = _clean(_str(msg.get("text")) or "")
    media = _url(msg.get("media"))
    if mtype == "text":
        return MessageKind.TEXT, text, [], None
    if mtype in MEDIA_KINDS:
        kind = MEDIA_KINDS[mtype]
        name = _clip(_str(msg.get("file_name")), 255)
        sticker = _int(msg.get("sticker_id"))
        attachment = Attachment(
            kind=kind,
            file_ref=f"sticker:{sticker}" if sticker is not None else None,
            url=media,
            file_name=name,
            size=_nonnegative(msg.get("size")),
            duration=_nonnegative(msg.get("duration")),
        )
        return kind, text, [attachment], None
    if mtype == "contact":
        return _contact(_obj(msg.get("contact")), sender)
    if mtype == "location":
        where = _obj(msg.get("location"))
        lat, lon = _number(where.get("lat")), _number(where.get("lon"))
        if lat is None or lon is None:
            return MessageKind.UNKNOWN, "[a location without coordinates]", [], None
        address = _clip(_clean(_str(where.get("address")) or ""), 300)
        line = f"📍 {address} ({lat}, {lon})" if address else f"📍 {lat}, {lon}"
        return MessageKind.LOCATION, line, [], None
    if mtype == "url":
        return MessageKind.TEXT, media or text or "[a link]", [], None
    if mtype == "rich_media":
        return MessageKind.TEXT, text or "[rich media]", [], None
    return MessageKind.UNKNOWN, text or f"[unsupported message: {_printable(mtype)[:40]}]", [], None


def _contact(
    card: Mapping[str, Any], sender: Mapping[str, Any]
) -> tuple[MessageKind, str, list[Attachment], str | None]:
    """A contact card; its number is the sender's own phone when it is
    what the share-phone button sends: no name, or the sender's name."""
    name = _clip(_clean(_str(card.get("name")) or ""), 200)
    phone = e164(_str(card.get("phone_number")))
    shown = phone or _clip(_clean(_str(card.get("phone_number")) or ""), 40)
    text = "👤 " + " ".join(p for p in (name, shown) if p) if (name or shown) else "[a contact]"
    own = phone is not None and (not name or name == _clean(_str(sender.get("name")) or ""))
    return MessageKind.CONTACT, text, [], phone if own else None


def e164(raw: str | None) -> str | None:
    """A phone number in E.164 (Viber numbers are international, with or
    without the ``+``), or None when it is not a possible number."""
    if not raw or len(raw) > 40:
        return None
    digits = "".join(c for c in raw if c.isdigit() and c.isascii())
    if not 6 <= len(digits) <= 15:
        return None
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def utm_from_context(context: str | None) -> dict[str, str]:
    """A deep link's ``context`` -> utm keys, as Telegram's /start payload
    (``utm_source-google__utm_campaign-spring`` -> both keys, and
    ``start``: the context itself)."""
    if not context:
        return {}
    pairs = [UTM_PAIR_RE.fullmatch(part) for part in context.split("__")]
    utm = {m.group(1): m.group(2) for m in pairs if m} if all(pairs) else {}
    utm["start"] = context
    return utm


def _profile(
    user: Mapping[str, Any], *, phone: str | None = None, utm: Mapping[str, str] | None = None
) -> SenderProfile:
    language = _str(user.get("language"))
    return SenderProfile(
        display_name=_clip(_clean(_str(user.get("name")) or ""), 200) or None,
        language=language[:16] if language and language.isascii() else None,
        phone=phone,
        # Never verified: the ``share-phone`` button's ``contact`` message
        # and an address-book card the user sends have the same shape
        # (``contact{name, phone_number, avatar?}``, developers.viber.com
        # /rest/ "Receive message from user"; corpora FACTS §4 lists no
        # marker and no proof such as MAX's hash), so "the sender's own" is
        # our guess from the name (``_contact``): anyone can send a card
        # named like themselves. It links for a rep, never merges.
        phone_verified=False,
        utm=dict(utm or {}),
    )


def _facts(event: Mapping[str, Any]) -> dict[str, Any]:
    """What the raw record keeps of a callback (never a float token)."""
    facts = {
        "event": _clip(_printable(str(event.get("event"))), MAX_EVENT_TYPE),
        "message_token": token_of(event),
        "timestamp": _int(event.get("timestamp")),
    }
    return {k: v for k, v in facts.items() if v is not None}


# --------------------------------------------------------------------------
# Small readers (nothing in a webhook body is trusted to have its type)
# --------------------------------------------------------------------------


def _user_id(value: Any) -> str | None:
    if isinstance(value, str) and USER_ID_RE.fullmatch(value):
        return value
    return None


def _time(stamp: Any, fallback: dt.datetime) -> dt.datetime:
    """Viber's ``timestamp`` is epoch milliseconds."""
    millis = _int(stamp)
    if millis is None or millis <= 0:
        return fallback
    try:
        return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
    except (OverflowError, ValueError, OSError):
        return fallback


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    return None


def _nonnegative(value: Any) -> int | None:
    number = _int(value)
    return number if number is not None and number >= 0 else None


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _url(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 4096:
        return None
    if not value.lower().startswith(("https://", "http://")) or not value.isprintable():
        return None
    return value if " " not in value else None


def _clean(text: str) -> str:
    """No NUL (PostgreSQL refuses it) and no lone surrogate (a JSON ``\\ud800``)."""
    if not text:
        return text
    return _SURROGATE.sub("\ufffd", text.replace("\x00", ""))


def _clip(text: str | None, limit: int) -> str | None:
    return _clean(text)[:limit] if text else None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in _clean(text))
