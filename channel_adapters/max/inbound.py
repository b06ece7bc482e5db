"""MAX Bot API updates: one webhook POST (or one element of ``GET
/updates``) -> one delivery -> normalised events.

MAX posts ONE ``Update`` object per request, with no wrapper and no event
id (corpora ``max/examples/go-stab.webhook.*.json``; FACTS §2, §4)::

    {"update_type": "message_created", "timestamp": 1775025604499,
     "message": {...}, "user_locale": "ru"}

Pure functions, no I/O:

* :func:`decode` — the body as an ``Update`` (an object with a string
  ``update_type`` and an integer ``timestamp``), or :class:`PayloadError`;
* :func:`delivery_key` — the journal key. An ``Update`` has no id and a
  retry delivers the same body again (FACTS §2), so the key is built from
  what names the event: ``message_created:<mid>`` and
  ``message_removed:<mid>``; ``message_edited:<mid>:<timestamp>`` (FACTS §2
  suggests mid + type, but two edits of one message share both: the
  update's own ``timestamp``, the same in a retry of the same update, tells
  them apart); ``message_callback:<callback_id>``; for everything else the
  tuple ``<type>:<chat_id>:<user_id>:<timestamp>``;
* :func:`parse` — a delivery body -> its event.

Update -> normalised event::

    message_created, message_edited    -> InboundMessage (edit: is_edit)
      no sender (a channel post)       -> IgnoredEvent("<type>:channel_post")
      sender is a bot / is this bot    -> IgnoredEvent("<type>:from_bot")
    message_removed                    -> InboundMessage(revoked, is_edit)
    message_callback (a button press)  -> InboundMessage(kind=CALLBACK,
                                          callback_id), answered with
                                          POST /answers by the adapter
    bot_started                        -> InboundMessage(kind=SYSTEM,
                                          consent=True); the deep-link
                                          payload in profile.utm
    bot_stopped                        -> InboundMessage(kind=SYSTEM,
                                          consent=False): the client stopped
                                          the bot; the core refuses replies
                                          until they start it again
    dialog_removed                     -> InboundMessage(kind=SYSTEM)
    anything else (dialog_muted, bot_added, user_added, chat_title_changed,
    dialog_cleared, ...)               -> IgnoredEvent(<type>)

Identity: the sender is ``user_id``. The thread of a dialog (a user and
the bot) is the user's id, as a Telegram or VK dialog's is, and a reply
goes to ``POST /messages?user_id=<thread>``; a group chat's thread is its
``chat_id``, which is negative (FACTS §13), and a reply goes to ``?chat_id=``
(both are the documented ways to answer, FACTS §6). The dialog's own chat
id stays in ``raw``.

Ids are int64 and ``seq`` exceeds 2**53 (FACTS §13): Python's ``json``
reads them as exact ints, never floats. Timestamps are milliseconds (§4).

A shared contact (a ``request_contact`` button, FACTS §8) is the client's
phone number when its ``hash`` is the hex HMAC-SHA256 of ``vcf_info`` under
the bot token (a third-party fact, FACTS §8) and it names the sender: only
then is it the contact's phone identity; any other contact card is shown
as an unverified number and becomes no identity (anyone can forward one).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import mimetypes
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import PayloadError
from bridge.identity import normalize_phone
from bridge.model import (
    Attachment,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    RawDelivery,
    SenderProfile,
)

__all__ = [
    "KIND",
    "STOPPED",
    "check_contact_hash",
    "decode",
    "delivery_key",
    "parse",
    "read_vcard",
    "split",
    "utm_from_payload",
]

KIND = "max"
MAX_TEXT = 20_000
MAX_QUOTED = 1_000
MAX_ATTACHMENTS = 20
MAX_TYPE = 64
#: the forwarded/replied message is read one level deep (a link's message
#: is a MessageBody, which has no link of its own: FACTS §6)
INT64 = 2**63
#: an opaque id (mid, callback_id) as the journal keeps it (FACTS §13: text)
OPAQUE_RE = re.compile(r"[\x21-\x7e]{1,200}")
#: a URL-safe deep-link payload (FACTS §14: "keep payloads <=128 characters,
#: URL-safe"); our campaign convention is Telegram's
#: (channel_adapters.telegram.inbound)
PAYLOAD_RE = re.compile(r"[A-Za-z0-9_-]{1,512}")
UTM_PAIR_RE = re.compile(r"([a-z][a-z0-9_]*)-(.+)")
_SURROGATE = re.compile("[\ud800-\udfff]")

#: the chat events shown on the conversation's timeline
STOPPED = "(the client stopped the bot: replies will fail until they start it again)"
SYSTEM_TEXT: dict[str, str] = {
    "bot_started": "(the client started the bot)",
    "bot_stopped": STOPPED,
    "dialog_removed": "(the client deleted the dialog with the bot)",
}


# --------------------------------------------------------------------------
# The edge
# --------------------------------------------------------------------------


def decode(body: bytes) -> dict[str, Any]:
    """The body as an ``Update``, or :class:`PayloadError` saying what is wrong."""
    if not isinstance(body, (bytes, bytearray)):
        raise PayloadError("the webhook body is not bytes")
    try:
        data = json.loads(bytes(body))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise PayloadError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise PayloadError("a MAX Update is a JSON object")
    kind = data.get("update_type")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_TYPE or not kind.isprintable():
        raise PayloadError('the Update has no "update_type"')
    if _int(data.get("timestamp")) is None:
        raise PayloadError('the Update has no integer "timestamp" (milliseconds)')
    return data


def delivery_key(update: Mapping[str, Any]) -> str:
    """The journal key of an ``Update`` (the module docstring)."""
    kind = str(update["update_type"])
    stamp = _int(update.get("timestamp"))
    if kind in ("message_created", "message_edited"):
        mid = _opaque(_obj(_obj(update.get("message")).get("body")).get("mid"))
        if mid is None:
            raise PayloadError(f'{kind} has no "message.body.mid"')
        return f"{kind}:{mid}" if kind == "message_created" else f"{kind}:{mid}:{stamp}"
    if kind == "message_removed":
        mid = _opaque(update.get("message_id"))
        if mid is None:
            raise PayloadError('message_removed has no "message_id"')
        return f"{kind}:{mid}"
    if kind == "message_callback":
        callback_id = _opaque(_obj(update.get("callback")).get("callback_id"))
        if callback_id is None:
            raise PayloadError('message_callback has no "callback.callback_id"')
        return f"{kind}:{callback_id}"
    chat = _int(update.get("chat_id"))
    user = _int(_obj(update.get("user")).get("user_id"))
    if user is None:
        user = _int(update.get("user_id"))
    return ":".join(str(p) if p is not None else "" for p in (_printable(kind), chat, user, stamp))


def split(body: bytes) -> RawDelivery:
    """The one delivery of a webhook POST, keyed by :func:`delivery_key`
    (the body journaled as it came: it carries no secret)."""
    return RawDelivery(delivery_key(decode(body)), bytes(body))


def serialise(update: Any) -> bytes:
    """One update of ``GET /updates`` as the journal keeps it: compact JSON
    (ints exact; a lone surrogate kept escaped)."""
    try:
        return json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(update, separators=(",", ":")).encode("ascii")


# --------------------------------------------------------------------------
# The normaliser
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bot:
    """What parsing needs of the account: the bot's own user id (its
    messages are never the customer's) and its token (the contact hash key)."""

    user_id: str = ""
    token: str = ""


def parse(body: bytes, received_at: dt.datetime, bot: Bot | None = None) -> list[InboundEvent]:
    """A delivery body -> its event (the table in the module docstring)."""
    update = decode(body)
    key = delivery_key(update)
    kind = str(update["update_type"])
    handler = EVENTS.get(kind)
    if handler is None:
        return [_ignored(key, kind, update)]
    return [handler(update, key, received_at, bot or Bot())]


Handler = Callable[[Mapping[str, Any], str, dt.datetime, Bot], InboundEvent]


def _ignored(key: str, event_type: str, update: Mapping[str, Any]) -> IgnoredEvent:
    return IgnoredEvent(KIND, key, _printable(event_type)[:MAX_TYPE], raw=dict(update))


def _message_event(
    update: Mapping[str, Any], key: str, received_at: dt.datetime, bot: Bot
) -> InboundEvent:
    kind = str(update["update_type"])
    msg = _obj(update.get("message"))
    sender = _obj(msg.get("sender"))
    recipient = _obj(msg.get("recipient"))
    user = _int(sender.get("user_id"))
    if not sender or recipient.get("chat_type") == "channel":
        return _ignored(key, f"{kind}:channel_post", update)
    if user is None or user <= 0:
        raise PayloadError(f"{kind} {key} has no sender.user_id")
    if sender.get("is_bot") is True or str(user) == bot.user_id:
        return _ignored(key, f"{kind}:from_bot", update)
    body = _obj(msg.get("body"))
    content = _content(body, msg.get("link"), user, bot)
    edit = kind == "message_edited"
    link = _obj(msg.get("link"))
    reply_to = (
        _opaque(_obj(link.get("message")).get("mid")) if link.get("type") == "reply" else None
    )
    seq = _int(body.get("seq"))
    stamp = update.get("timestamp") if edit else msg.get("timestamp")
    facts: dict[str, Any] = {
        "update_type": kind,
        "chat_id": _int(recipient.get("chat_id")),
        "chat_type": _clip(_str(recipient.get("chat_type")), 20),
        "user_id": user,
        "mid": _opaque(body.get("mid")),
        "seq": seq,
        "link": _clip(_str(link.get("type")), 20),
        "phone_verified": content.verified,
        "user_locale": _clip(_str(update.get("user_locale")), 35),
    }
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=str(user),
        external_thread_id=_thread(recipient, user),
        kind=content.kind,
        sent_at=_time(stamp) or _time(update.get("timestamp")) or received_at,
        text=_clip(content.text, MAX_TEXT) or "",
        attachments=tuple(content.attachments),
        profile=_profile(sender, update, phone=content.phone),
        provider_message_id=_opaque(body.get("mid")),
        sequence=seq if seq is not None and seq > 0 else None,
        is_edit=edit,
        reply_to=reply_to,
        raw={k: v for k, v in facts.items() if v is not None},
    )


def _removed(
    update: Mapping[str, Any], key: str, received_at: dt.datetime, bot: Bot
) -> InboundEvent:
    """``message_removed``: who deleted is ``user_id``; our own messages
    deleted by the bot are no customer's news."""
    mid = _opaque(update.get("message_id"))
    user, chat = _int(update.get("user_id")), _int(update.get("chat_id"))
    if user is None or user <= 0 or chat is None:
        raise PayloadError(f"message_removed {key} has no user_id or chat_id")
    if str(user) == bot.user_id:
        return _ignored(key, "message_removed:from_bot", update)
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=str(user),
        external_thread_id=str(user) if chat > 0 else str(chat),
        kind=MessageKind.TEXT,
        sent_at=_time(update.get("timestamp")) or received_at,
        text="(the client deleted this message)",
        provider_message_id=mid,
        is_edit=True,
        revoked=True,
        raw={"update_type": "message_removed", "chat_id": chat, "user_id": user, "mid": mid},
    )


def _callback(
    update: Mapping[str, Any], key: str, received_at: dt.datetime, bot: Bot
) -> InboundEvent:
    """A button press: ``callback.user`` pressed a button of the bot's
    ``message`` (null when that message was deleted). Answered with ``POST
    /answers?callback_id=`` (FACTS §10) by the adapter's ``acknowledge``."""
    callback = _obj(update.get("callback"))
    user = _obj(callback.get("user"))
    user_id = _int(user.get("user_id"))
    if user_id is None or user_id <= 0:
        raise PayloadError(f"message_callback {key} has no callback.user.user_id")
    msg = _obj(update.get("message"))
    recipient = _obj(msg.get("recipient"))
    payload = callback.get("payload")
    text = payload if isinstance(payload, str) else ""
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=str(user_id),
        external_thread_id=_thread(recipient, user_id),
        kind=MessageKind.CALLBACK,
        sent_at=_time(callback.get("timestamp")) or _time(update.get("timestamp")) or received_at,
        text=_clip(_clean(text), MAX_QUOTED) or "",
        profile=_profile(user, update),
        reply_to=_opaque(_obj(msg.get("body")).get("mid")),
        callback_id=_opaque(callback.get("callback_id")),
        raw={
            "update_type": "message_callback",
            "user_id": user_id,
            "chat_id": _int(recipient.get("chat_id")),
        },
    )


def _chat_event(
    update: Mapping[str, Any], key: str, received_at: dt.datetime, bot: Bot
) -> InboundEvent:
    """``bot_started`` (a deep link's ``payload`` kept as utm, Telegram's
    convention; consent given), ``bot_stopped`` (the client stopped the bot:
    consent withdrawn, like VK's ``message_deny``; MAX itself refuses a send
    after it, with a 403), and ``dialog_removed``, on the conversation's
    timeline."""
    kind = str(update["update_type"])
    user = _obj(update.get("user"))
    user_id = _int(user.get("user_id"))
    if user_id is None:
        user_id = _int(update.get("user_id"))
    chat = _int(update.get("chat_id"))
    if user_id is None or user_id <= 0:
        raise PayloadError(f"{kind} {key} has no user.user_id")
    if user.get("is_bot") is True or str(user_id) == bot.user_id:
        return _ignored(key, f"{kind}:from_bot", update)
    payload = update.get("payload") if kind == "bot_started" else None
    utm = utm_from_payload(payload if isinstance(payload, str) else None)
    text = SYSTEM_TEXT[kind]
    if utm.get("start"):
        text = f"(the client started the bot with the link parameter {utm['start']})"
    facts = {
        "update_type": kind,
        "chat_id": chat,
        "user_id": user_id,
        "payload": _clip(payload, 512) if isinstance(payload, str) else None,
    }
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=str(user_id),
        external_thread_id=str(user_id),  # a dialog's events: the user's thread
        kind=MessageKind.SYSTEM,
        sent_at=_time(update.get("timestamp")) or received_at,
        text=text,
        profile=_profile(user, update, utm=utm),
        raw={k: v for k, v in facts.items() if v is not None},
        # the client's word on the bot writing to them (bridge.consent): a
        # stop withdraws it until they start the bot again
        consent=CONSENT.get(kind),
    )


#: the chat events that say whether the client lets the bot write to them
CONSENT: dict[str, bool] = {"bot_started": True, "bot_stopped": False}

EVENTS: dict[str, Handler] = {
    "message_created": _message_event,
    "message_edited": _message_event,
    "message_removed": _removed,
    "message_callback": _callback,
    "bot_started": _chat_event,
    "bot_stopped": _chat_event,
    "dialog_removed": _chat_event,
}


def utm_from_payload(payload: str | None) -> dict[str, str]:
    """A deep link's ``?start=<payload>`` -> utm keys, by the Telegram
    channel's convention: the payload itself is ``start``; a URL-safe one
    of ``<key>-<value>`` pairs joined by ``__`` (``utm_source-google__
    utm_campaign-spring``) gives each pair as a key too. MAX documents 128
    characters for bots and 512 in the schema (FACTS §14): up to 512
    printable characters are kept."""
    if not payload or not payload.strip() or len(payload) > 512:
        return {}
    payload = _printable(payload.strip())
    utm: dict[str, str] = {}
    if PAYLOAD_RE.fullmatch(payload):
        pairs = [UTM_PAIR_RE.fullmatch(part) for part in payload.split("__")]
        utm = {m.group(1): m.group(2) for m in pairs if m} if all(pairs) else {}
    utm["start"] = payload
    return utm


# --------------------------------------------------------------------------
# A message's content
# --------------------------------------------------------------------------


@dataclass
class _Content:
    lines: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    kinds: list[MessageKind | None] = field(default_factory=list)
    textual: bool = False
    phone: str | None = None
    verified: bool | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def kind(self) -> MessageKind:
        known = [k for k in self.kinds if k is not None and k is not MessageKind.UNKNOWN]
        if known:
            return known[0]
        if self.textual or None in self.kinds:
            return MessageKind.TEXT
        return MessageKind.UNKNOWN


@dataclass(frozen=True)
class _Part:
    kind: MessageKind | None
    line: str | None = None
    attachment: Attachment | None = None


def _content(body: Mapping[str, Any], link: Any, sender: int, bot: Bot) -> _Content:
    content = _Content()
    _read_body(content, body, sender, bot, own=True)
    link = _obj(link)
    inner = _obj(link.get("message"))
    if link.get("type") == "forward" and inner:
        author = _name(_obj(link.get("sender")))
        content.lines.append(f"↪ forwarded{f' from {author}' if author else ''}:")
        quoted = _Content()
        _read_body(quoted, inner, sender, bot, own=False)
        content.lines.extend(f"> {line}" for line in quoted.lines if line)
        content.attachments.extend(quoted.attachments)
        content.kinds.extend(quoted.kinds)
        content.textual = content.textual or quoted.textual
    if not content.lines and not content.attachments:
        content.lines.append("[empty message]")
    return content


def _read_body(
    content: _Content, body: Mapping[str, Any], sender: int, bot: Bot, *, own: bool
) -> None:
    text = _clean(_str(body.get("text")) or "")
    if text.strip():
        content.lines.append(text)
        content.textual = True
    for node in _list(body.get("attachments"))[:MAX_ATTACHMENTS]:
        node = _obj(node)
        atype = _str(node.get("type")) or "unknown"
        part: _Part | None
        if atype == "contact":
            part = _contact(node, sender if own else None, bot, content)
        elif atype in ("inline_keyboard", "reply_keyboard"):
            continue  # the bot's own buttons (FACTS §7), nothing the client sent
        else:
            reader = ATTACHMENTS.get(atype)
            part = reader(node) if reader is not None else None
        if part is None:
            part = _Part(MessageKind.UNKNOWN, f"[unsupported attachment: {_printable(atype)[:40]}]")
        content.kinds.append(part.kind)
        if part.line:
            content.lines.append(part.line)
        if part.attachment is not None:
            content.attachments.append(part.attachment)


def _image(node: Mapping[str, Any]) -> _Part | None:
    payload = _obj(node.get("payload"))
    return _Part(
        MessageKind.PHOTO,
        attachment=Attachment(
            kind=MessageKind.PHOTO,
            file_ref=_clip(_str(payload.get("token")), 500),
            url=_url(payload.get("url")),
            mime_type="image/jpeg",
        ),
    )


def _video(node: Mapping[str, Any]) -> _Part | None:
    payload = _obj(node.get("payload"))
    return _Part(
        MessageKind.VIDEO,
        attachment=Attachment(
            kind=MessageKind.VIDEO,
            file_ref=_clip(_str(payload.get("token")), 500),
            url=_url(payload.get("url")),
            width=_nonnegative(node.get("width")),
            height=_nonnegative(node.get("height")),
            duration=_nonnegative(node.get("duration")),
        ),
    )


def _audio(node: Mapping[str, Any]) -> _Part | None:
    """A voice message; its ``transcription`` (when MAX made one) as text."""
    payload = _obj(node.get("payload"))
    said = _clip(_clean(_str(node.get("transcription")) or ""), MAX_QUOTED)
    return _Part(
        MessageKind.VOICE,
        f"🗣 {said}" if said and said.strip() else None,
        Attachment(
            kind=MessageKind.VOICE,
            file_ref=_clip(_str(payload.get("token")), 500),
            url=_url(payload.get("url")),
            duration=_nonnegative(node.get("duration")),
        ),
    )


def _file(node: Mapping[str, Any]) -> _Part | None:
    payload = _obj(node.get("payload"))
    name = _clip(_clean(_str(node.get("filename")) or ""), 255) or "file"
    return _Part(
        MessageKind.DOCUMENT,
        attachment=Attachment(
            kind=MessageKind.DOCUMENT,
            file_ref=_clip(_str(payload.get("token")), 500),
            url=_url(payload.get("url")),
            mime_type=mimetypes.guess_type(name)[0],
            file_name=name,
            size=_nonnegative(node.get("size")),
        ),
    )


def _sticker(node: Mapping[str, Any]) -> _Part | None:
    payload = _obj(node.get("payload"))
    return _Part(
        MessageKind.STICKER,
        attachment=Attachment(
            kind=MessageKind.STICKER,
            file_ref=_clip(_str(payload.get("code")), 500),
            url=_url(payload.get("url")),
            width=_nonnegative(node.get("width")),
            height=_nonnegative(node.get("height")),
        ),
    )


def _share(node: Mapping[str, Any]) -> _Part | None:
    """A link preview: its title and address, as text."""
    url = _url(_obj(node.get("payload")).get("url"))
    title = _clip(_clean(_str(node.get("title")) or ""), 300)
    if url is None:
        return _Part(None, f"🔗 {title}") if title else None
    return _Part(None, f"🔗 {title}: {url}" if title else f"🔗 {url}")


def _location(node: Mapping[str, Any]) -> _Part | None:
    """``{latitude, longitude}`` with no ``payload`` (FACTS §7)."""
    lat, lon = _number(node.get("latitude")), _number(node.get("longitude"))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return _Part(MessageKind.LOCATION, f"📍 {lat}, {lon}")


ATTACHMENTS: dict[str, Callable[[Mapping[str, Any]], _Part | None]] = {
    "image": _image,
    "video": _video,
    "audio": _audio,
    "file": _file,
    "sticker": _sticker,
    "share": _share,
    "location": _location,
}


def _contact(node: Mapping[str, Any], sender: int | None, bot: Bot, content: _Content) -> _Part:
    """A contact card: the client's own verified phone (an identity) or a
    number shown as unverified (the module docstring)."""
    payload = _obj(node.get("payload"))
    given = payload.get("vcf_info")
    vcf = given if isinstance(given, str) else ""
    name, raw_phone = read_vcard(vcf)
    info = _obj(payload.get("max_info"))
    name = name or _name(info)
    phone = normalize_phone(raw_phone)
    owner = _int(info.get("user_id"))
    verified = bool(
        phone
        and sender is not None
        and (owner is None or owner == sender)
        and check_contact_hash(bot.token, vcf, payload.get("hash"))
    )
    if phone and content.phone is None:
        content.verified = verified
        if verified:
            content.phone = phone
    shown = phone or (_clip(_clean(raw_phone or ""), 40) if raw_phone else None) or "no number"
    status = "verified by MAX" if verified else "not verified"
    label = " ".join(p for p in ("📇", _clip(name, 200), shown) if p)
    return _Part(MessageKind.CONTACT, f"{label} ({status})" if phone else label)


def check_contact_hash(token: str, vcf_info: str, given: Any) -> bool:
    """``hash`` is ``hex(HMAC-SHA256(key=bot token, msg=vcf_info))``, compared
    in constant time (a third-party fact: max-bot-api-php
    ``validateContactAttachmentHash``, FACTS §8)."""
    if not token or not vcf_info or not isinstance(given, str) or not given.isascii():
        return False
    want = hmac.new(token.encode(), vcf_info.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return hmac.compare_digest(want.hexdigest(), given.strip().lower())


def read_vcard(text: str) -> tuple[str | None, str | None]:
    """(FN, the first TEL — a ``cell`` one preferred) of a vCard, read
    leniently: folded lines, any version, any line ending, parameters and
    a ``tel:`` URI value (the exact text MAX sends is UNCONFIRMED, FACTS §8)."""
    if not text:
        return None, None
    unfolded = re.sub(r"\r?\n[ \t]", "", text[:10_000])
    name: str | None = None
    phones: list[tuple[bool, str]] = []
    for line in re.split(r"\r\n|\r|\n", unfolded):
        head, sep, value = line.partition(":")
        if not sep:
            continue
        prop, *params = head.split(";")
        prop = prop.rsplit(".", 1)[-1].strip().upper()  # "item1.TEL"
        value = value.strip()
        if prop == "FN" and value and name is None:
            name = _clean(value.replace("\\,", ",").replace("\\;", ";"))[:200]
        elif prop == "TEL" and value:
            number = value[4:] if value.lower().startswith("tel:") else value
            cell = any("cell" in p.lower() for p in params)
            phones.append((cell, number.strip()))
    phones.sort(key=lambda p: not p[0])
    return name, phones[0][1][:40] if phones else None


# --------------------------------------------------------------------------
# Small readers (nothing in a webhook body is trusted to have its type)
# --------------------------------------------------------------------------


def _thread(recipient: Mapping[str, Any], user: int) -> str:
    """A group chat's (negative) ``chat_id``, else the dialog's user."""
    chat = _int(recipient.get("chat_id"))
    group = recipient.get("chat_type") in ("chat", "channel") or (chat is not None and chat < 0)
    return str(chat) if group and chat else str(user)


def _profile(
    user: Mapping[str, Any],
    update: Mapping[str, Any],
    *,
    phone: str | None = None,
    utm: Mapping[str, str] | None = None,
) -> SenderProfile:
    """A User (FACTS §5: no phone, no language; the deprecated ``name``
    only when there is no first name); the language from ``user_locale``."""
    locale = _str(update.get("user_locale"))
    language = locale.split("-")[0].lower()[:8] if locale and locale.isascii() else None
    return SenderProfile(
        display_name=None if _str(user.get("first_name")) else _clip(_str(user.get("name")), 200),
        first_name=_clip(_str(user.get("first_name")), 200),
        last_name=_clip(_str(user.get("last_name")), 200),
        username=_clip(_str(user.get("username")), 200),
        language=language or None,
        phone=phone,
        # ``phone`` is only ever a contact card whose ``hash`` checks under
        # the bot token and that names the sender (``_contact``; contracts
        # max/FACTS §8: the hash proves "the user shared the number linked
        # to their MAX account"): verified. An unchecked card gives no phone.
        phone_verified=phone is not None,
        utm=dict(utm or {}),
    )


def _name(user: Mapping[str, Any]) -> str | None:
    parts = [_clean(p) for p in (_str(user.get("first_name")), _str(user.get("last_name"))) if p]
    return _clip(" ".join(parts), 200) if parts else _clip(_str(user.get("name")), 200)


def _time(stamp: Any) -> dt.datetime | None:
    """Milliseconds since the epoch (FACTS §4, §13)."""
    ms = _int(stamp)
    if ms is None or ms <= 0:
        return None
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    """An int64 (ids, seq, timestamps): a JSON integer, never a float."""
    if isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64:
        return value
    return None


def _opaque(value: Any) -> str | None:
    """A mid or callback_id: printable ASCII without spaces, kept as text."""
    return value if isinstance(value, str) and OPAQUE_RE.fullmatch(value) else None


def _nonnegative(value: Any) -> int | None:
    number = _int(value)
    return number if number is not None and number >= 0 else None


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if isinstance(value, int) or math.isfinite(value) else None


def _url(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 4096 or " " in value:
        return None
    if not value.lower().startswith(("https://", "http://")) or not value.isprintable():
        return None
    return value


def _clean(text: str) -> str:
    """No NUL (PostgreSQL refuses it) and no lone surrogate."""
    if not text:
        return text
    return _SURROGATE.sub("\ufffd", text.replace("\x00", ""))


def _clip(text: str | None, limit: int) -> str | None:
    return _clean(text)[:limit] if text else None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in _clean(text))
