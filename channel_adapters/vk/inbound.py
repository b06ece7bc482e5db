"""VK Callback API events: one POST -> one delivery -> normalised events.

A community's Callback API server POSTs one JSON event per request (FACTS
§3, schema ``callback_base``)::

    {"type": "message_new", "object": {...}, "group_id": 123,
     "event_id": "5302d2...", "v": "5.199", "secret": "..."}

Pure functions, no I/O:

* :func:`decode` — the body as a JSON object, or :class:`PayloadError`;
* :func:`check_version` — ``v`` is 5.103 or later (before that
  ``message_new.object`` *was* the message, not ``{message, client_info}``:
  VKCOM/vk-java-sdk#215), else :class:`PayloadError` naming the fix;
* :func:`split` — the cheap edge: the one :class:`RawDelivery` of a POST,
  keyed by ``event_id`` ("If it passed twice or more - you should ignore
  it"); the ``confirmation`` event, which may have none, is keyed
  ``confirmation:<event_id or SHA-256>`` so the answer can tell it. The
  journaled body is the event without its ``secret`` (checked already;
  never stored);
* :func:`parse` — a delivery body -> its event.

Event -> normalised event::

    confirmation                      -> IgnoredEvent("confirmation") (answered
                                         with the confirmation string)
    message_new, message_edit         -> InboundMessage (edit: is_edit)
      out: 1 (ours or an admin's)     -> IgnoredEvent("<type>:outgoing")
      from_id < 0 (a community)       -> IgnoredEvent("<type>:from_community")
    message_reply (our own outgoing)  -> IgnoredEvent("message_reply:outgoing")
    message_event (callback button)   -> InboundMessage(kind=CALLBACK,
                                         callback_id=its event_id, text=
                                         its payload; for the bridge's own
                                         button {"button": id}: the id)
    message_allow, message_deny       -> InboundMessage(kind=SYSTEM), the
                                         consent in words, on the timeline
    anything else                     -> IgnoredEvent(<type>)

Identity: the sender is ``from_id`` (the VK user id), the thread is
``peer_id`` (a user's id, or ``2000000000 + chat_id`` for a group chat).
A message is known by its ``id``, or, where that is 0 (group chats, for
community bots), by ``c<conversation_message_id>``; an edit names the same.
Only a body that is not an event, an old ``v``, or a message without its
ids raises :class:`PayloadError`; odd content inside becomes text or an
``UNKNOWN`` message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import mimetypes
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import PayloadError
from bridge.model import (
    Attachment,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    RawDelivery,
    SenderProfile,
)

from .outbound import BUTTON_KEY

__all__ = [
    "CONFIRMATION",
    "KIND",
    "MIN_VERSION",
    "check_version",
    "decode",
    "is_confirmation",
    "parse",
    "split",
]

KIND = "vk"
CONFIRMATION = "confirmation"
#: ``message_new.object`` is ``{message, client_info}`` since 5.103 (FACTS §3)
MIN_VERSION = (5, 103)
#: VK's event ids are hex digests; anything else cannot be a journal key
EVENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: ``peer_id`` of a group chat is ``2000000000 + chat_id`` (schema messages.send)
CHAT_PEER = 2_000_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_EVENT_TYPE = 64
#: how deep forwarded messages are read, how many per level and how many
#: attachments per message (VK allows 10); a hostile body goes no further
MAX_DEPTH = 3
MAX_FORWARDED = 20
MAX_ATTACHMENTS = 20
MAX_TEXT = 20_000
MAX_QUOTED = 1_000

#: ``client_info.lang_id`` -> language (VK's numbering: 0 ru, 1 uk, 2 be,
#: 3 en, 4 es, 5 fi, 6 de, 7 it)
LANGUAGES: dict[int, str] = {0: "ru", 1: "uk", 2: "be", 3: "en", 4: "es", 5: "fi", 6: "de", 7: "it"}

#: the consent events as the CRM timeline says them
CONSENT: dict[str, str] = {
    "message_allow": "(the client allowed messages from the community)",
    "message_deny": (
        "(the client no longer allows messages from the community: replies will fail)"
    ),
}

#: a photo's ``sizes[].type`` from smallest to largest, for sizes without
#: dimensions (s 75, m 130, o/p/q/r crops up to 510, x 604, y 807, z 1080,
#: w 2560; k/l are link previews)
SIZE_RANK: dict[str, int] = {
    t: i for i, t in enumerate(("s", "m", "o", "p", "q", "r", "l", "x", "k", "y", "z", "w"), 1)
}

#: a group chat's service message (``action.type``) in words
ACTIONS: dict[str, str] = {
    "chat_create": "(the chat was created)",
    "chat_invite_user": "(a member was added to the chat)",
    "chat_invite_user_by_link": "(a member joined the chat by link)",
    "chat_kick_user": "(a member left the chat)",
    "chat_title_update": "(the chat's title changed)",
    "chat_photo_update": "(the chat's photo changed)",
    "chat_photo_remove": "(the chat's photo was removed)",
    "chat_pin_message": "(a message was pinned)",
    "chat_unpin_message": "(a message was unpinned)",
    "chat_screenshot": "(a screenshot was taken)",
}


# --------------------------------------------------------------------------
# The edge
# --------------------------------------------------------------------------


def decode(body: bytes) -> dict[str, Any]:
    """The body as a JSON object with a ``type``, or :class:`PayloadError`."""
    if not isinstance(body, (bytes, bytearray)):
        raise PayloadError("the webhook body is not bytes")
    try:
        data = json.loads(bytes(body))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise PayloadError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise PayloadError("a VK Callback API event is a JSON object")
    if _str(data.get("type")) is None:
        raise PayloadError('the event has no "type"')
    return data


def version(value: Any) -> tuple[int, int] | None:
    """``"5.199"`` -> ``(5, 199)``; None for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"\s*(\d{1,3})\.(\d{1,4})\s*", value)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_version(event: Mapping[str, Any]) -> None:
    """``v`` (the API version the community's server is set to) must be
    5.103 or later. An event without ``v`` (a Bots Long Poll update: its
    version is the poll's) is judged by its shape in :func:`parse`."""
    if "v" not in event:
        return
    found = version(event.get("v"))
    if found is None or found < MIN_VERSION:
        shown = str(event.get("v"))[:20]
        raise PayloadError(
            f"API version {shown!r} is too old: set the API version of the community's "
            "Callback API server to 5.103 or later (Manage -> API usage -> Callback API)"
        )


def delivery_key(event: Mapping[str, Any]) -> str:
    """The journal key: ``event_id``; ``confirmation:<event_id or the
    event's SHA-256>`` for the confirmation event (it may have no id)."""
    event_id = event.get("event_id")
    valid = isinstance(event_id, str) and EVENT_ID_RE.fullmatch(event_id) is not None
    if event.get("type") == CONFIRMATION:
        if valid:
            return f"{CONFIRMATION}:{event_id}"
        canonical = json.dumps(
            _without_secret(event), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )
        return f"{CONFIRMATION}:{hashlib.sha256(canonical.encode('ascii')).hexdigest()}"
    if not valid:
        raise PayloadError('"event_id" (letters, digits, _ and -) is required')
    return str(event_id)


def split(body: bytes) -> RawDelivery:
    """The one delivery of a POST: the event without its ``secret``, keyed
    by :func:`delivery_key`; :class:`PayloadError` for a body that is not
    an event or an event of an API version older than 5.103."""
    event = decode(body)
    if event.get("type") != CONFIRMATION:
        check_version(event)
    return RawDelivery(delivery_key(event), _dumps(_without_secret(event)))


def is_confirmation(delivery: RawDelivery) -> bool:
    return delivery.key.startswith(f"{CONFIRMATION}:")


def _without_secret(event: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "secret"}


def _dumps(event: Mapping[str, Any]) -> bytes:
    # ASCII escapes: a lone surrogate (valid in JSON text) cannot break the bytes
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# --------------------------------------------------------------------------
# The normaliser
# --------------------------------------------------------------------------


def parse(body: bytes, received_at: dt.datetime) -> list[InboundEvent]:
    """A delivery body (or a Callback API body as VK sent it) -> its event."""
    event = decode(body)
    etype = str(event["type"])
    if etype != CONFIRMATION:
        check_version(event)
    key = delivery_key(event)
    handler = EVENTS.get(etype)
    if handler is None:
        return [_ignored(key, etype, event)]
    return [handler(event, key, received_at)]


def _ignored(key: str, event_type: str, event: Mapping[str, Any]) -> IgnoredEvent:
    return IgnoredEvent(
        KIND, key, _printable(event_type)[:MAX_EVENT_TYPE], raw=_without_secret(event)
    )


def _confirmation(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    return _ignored(key, CONFIRMATION, event)


def _outgoing(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    """``message_reply``: a message the community sent (through the bridge
    or by an admin in VK): never the customer's (FACTS §0 rule 4)."""
    return _ignored(key, f"{event['type']}:outgoing", event)


def _message_new(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    obj = _obj(event.get("object"))
    msg = obj.get("message")
    if msg is None and "peer_id" in obj:
        raise PayloadError(
            "message_new without object.message is the shape of API versions before 5.103: "
            "set the API version of the community's Callback API server to 5.103 or later"
        )
    if not isinstance(msg, dict):
        raise PayloadError(f"message_new {key} has no object.message")
    return _message(event, msg, key, received_at, client_info=_obj(obj.get("client_info")))


def _message_edit(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    msg = event.get("object")
    if not isinstance(msg, dict):
        raise PayloadError(f"message_edit {key} has no object")
    return _message(event, msg, key, received_at, client_info={}, edit=True)


def _message(
    event: Mapping[str, Any],
    msg: Mapping[str, Any],
    key: str,
    received_at: dt.datetime,
    *,
    client_info: Mapping[str, Any],
    edit: bool = False,
) -> InboundEvent:
    etype = str(event["type"])
    if msg.get("out") in (1, True):
        return _ignored(key, f"{etype}:outgoing", event)
    peer, sender = _int(msg.get("peer_id")), _int(msg.get("from_id"))
    if peer is None or sender is None:
        raise PayloadError(f"{etype} {key} has no peer_id or from_id")
    if sender < 0:  # another community (a bot in a group chat), never a customer
        return _ignored(key, f"{etype}:from_community", event)
    if sender == 0:
        raise PayloadError(f"{etype} {key} has no from_id")
    content = _content(msg, 0)
    message_id = _message_ref(msg)
    cmid = _int(msg.get("conversation_message_id"))
    stamp = msg.get("update_time") if edit else None
    reply = msg.get("reply_message")
    facts: dict[str, Any] = {
        "type": etype,
        "group_id": _int(event.get("group_id")),
        "peer_id": peer,
        "from_id": sender,
        "id": _int(msg.get("id")),
        "conversation_message_id": cmid,
        "chat": True if peer >= CHAT_PEER else None,
        "payload": _clip(_str(msg.get("payload")), MAX_QUOTED),
        "command": _command(msg.get("payload")),
        "forwarded": len(_list(msg.get("fwd_messages"))) or None,
        "reply_text": _clip(_str(_obj(reply).get("text")), MAX_QUOTED),
        "lang_id": _int(client_info.get("lang_id")),
    }
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=str(sender),
        external_thread_id=str(peer),
        kind=content.kind,
        sent_at=_time(stamp, None) or _time(msg.get("date"), received_at) or received_at,
        text=_clip(content.text, MAX_TEXT) or "",
        attachments=tuple(content.attachments),
        # no phone or e-mail: VK never gives a user's (the message and
        # client_info objects carry none, corpora FACTS §3; vk/schema
        # callback_message_object): nothing to verify
        profile=SenderProfile(language=_language(client_info.get("lang_id"))),
        provider_message_id=message_id,
        sequence=cmid if cmid is not None and cmid > 0 else None,
        is_edit=edit,
        reply_to=_message_ref(reply) if isinstance(reply, dict) else None,
        raw={k: v for k, v in facts.items() if v is not None},
    )


def _callback(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    """A callback button (``message_event``): ``user_id, peer_id,
    event_id, payload`` (schema ``callback_message_event``; the payload is a
    string there and an object in corpus ``message_event_payload_sample_
    5_118``). Answered with ``messages.sendMessageEventAnswer`` by the
    adapter's ``acknowledge``, which needs the three ids: the callback id
    is the button's ``event_id``, with ``:<user_id>`` in a group chat
    (where the thread does not name the user)."""
    obj = _obj(event.get("object"))
    user, peer = _int(obj.get("user_id")), _int(obj.get("peer_id"))
    button = obj.get("event_id")
    if user is None or peer is None or user <= 0:
        raise PayloadError(f"message_event {key} has no user_id or peer_id")
    if not isinstance(button, str) or EVENT_ID_RE.fullmatch(button) is None:
        raise PayloadError(f"message_event {key} has no event_id to answer")
    payload = obj.get("payload")
    chosen = _button(payload)
    if chosen is not None:
        text = chosen  # one of the bridge's choices: what the client would have typed
    elif isinstance(payload, str):
        text = payload
    elif payload is None:
        text = ""
    else:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    cmid = _int(obj.get("conversation_message_id"))
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=str(user),
        external_thread_id=str(peer),
        kind=MessageKind.CALLBACK,
        sent_at=received_at,  # a message_event has no date of its own
        text=_clip(_clean(text), MAX_QUOTED) or "",
        reply_to=f"c{cmid}" if cmid is not None and cmid > 0 else None,
        callback_id=button if peer == user else f"{button}:{user}",
        raw={
            "type": "message_event",
            "user_id": user,
            "peer_id": peer,
            "event_id": button,
            **({"button": chosen} if chosen is not None else {}),
        },
    )


def _consent(event: Mapping[str, Any], key: str, received_at: dt.datetime) -> InboundEvent:
    """``message_allow`` / ``message_deny``: the client allowed or revoked
    the community's messages (a 901 refuses every reply after a deny)."""
    etype = str(event["type"])
    obj = _obj(event.get("object"))
    user = _int(obj.get("user_id"))
    if user is None or user <= 0:
        raise PayloadError(f"{etype} {key} has no user_id")
    facts = {"type": etype, "user_id": user, "key": _clip(_str(obj.get("key")), 200)}
    return InboundMessage(
        channel_kind=KIND,
        external_id=key,
        external_user_id=str(user),
        external_thread_id=str(user),
        kind=MessageKind.SYSTEM,
        sent_at=received_at,
        text=CONSENT[etype],
        raw={k: v for k, v in facts.items() if v is not None},
        consent=etype == "message_allow",
    )


EVENTS: dict[str, Callable[[Mapping[str, Any], str, dt.datetime], InboundEvent]] = {
    CONFIRMATION: _confirmation,
    "message_new": _message_new,
    "message_edit": _message_edit,
    "message_reply": _outgoing,
    "message_event": _callback,
    "message_allow": _consent,
    "message_deny": _consent,
}


# --------------------------------------------------------------------------
# A message's content: text, attachments, geo, forwarded messages
# --------------------------------------------------------------------------


@dataclass
class _Content:
    """What a message (and the messages forwarded in it) carries.
    ``kinds``: one per attachment; None for text-like ones (a link, a wall
    post), ``UNKNOWN`` for ones the bridge cannot show."""

    lines: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    kinds: list[MessageKind | None] = field(default_factory=list)
    textual: bool = False
    action: bool = False

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
        if self.action:
            return MessageKind.SYSTEM
        return MessageKind.UNKNOWN


@dataclass(frozen=True)
class _Part:
    kind: MessageKind | None
    line: str | None = None
    attachment: Attachment | None = None


def _content(msg: Mapping[str, Any], depth: int) -> _Content:
    content = _Content()
    own = _clean(_str(msg.get("text")) or "")
    if own.strip():
        content.lines.append(own)
        content.textual = True
    for node in _list(msg.get("attachments"))[:MAX_ATTACHMENTS]:
        part = _attachment(_obj(node))
        content.kinds.append(part.kind)
        if part.line:
            content.lines.append(part.line)
        if part.attachment is not None:
            content.attachments.append(part.attachment)
    geo = _geo(msg.get("geo"))
    if geo is not None:
        content.kinds.append(MessageKind.LOCATION)
        content.lines.append(geo)
    action = _obj(msg.get("action"))
    if action and depth == 0:
        content.action = True
        what = _str(action.get("type")) or "unknown"
        content.lines.append(ACTIONS.get(what, f"(chat: {_printable(what)[:40]})"))
    if depth < MAX_DEPTH:
        for node in _list(msg.get("fwd_messages"))[:MAX_FORWARDED]:
            if isinstance(node, dict):
                _forwarded(content, node, depth + 1)
    if not content.lines and not content.attachments:
        content.lines.append("[empty message]")
    return content


def _forwarded(content: _Content, node: Mapping[str, Any], depth: int) -> None:
    """A forwarded message: a header naming its author, its lines quoted,
    its attachments the message's own (the customer sent them along)."""
    inner = _content(node, depth)
    author = _int(node.get("from_id"))
    who = f" from {_profile_link(author)}" if author else ""
    content.lines.append(f"↪ forwarded{who}:")
    content.lines.extend(f"> {line}" for line in inner.lines if line)
    for attachment in inner.attachments:
        if attachment.file_name:  # a photo or a voice message has no name to show
            content.lines.append(f"> 📎 {attachment.file_name}")
    content.attachments.extend(inner.attachments)
    content.kinds.extend(inner.kinds)
    content.textual = content.textual or inner.textual


def _profile_link(owner: int) -> str:
    return f"vk.com/id{owner}" if owner > 0 else f"vk.com/club{-owner}"


def _attachment(node: Mapping[str, Any]) -> _Part:
    atype = _str(node.get("type")) or "unknown"
    body = _obj(node.get(atype))
    reader = ATTACHMENTS.get(atype)
    part = reader(body) if reader is not None else None
    return part or _Part(MessageKind.UNKNOWN, f"[unsupported attachment: {_printable(atype)[:40]}]")


def _photo(photo: Mapping[str, Any]) -> _Part | None:
    """The largest of the ``sizes[]`` ladder (by area, then by its type
    letter when VK gives no dimensions)."""
    best = _largest(photo.get("sizes"), rank=True)
    if best is None:
        return None
    url, width, height = best
    return _Part(
        MessageKind.PHOTO,
        attachment=Attachment(
            kind=MessageKind.PHOTO,
            file_ref=_ref("photo", photo),
            url=url,
            mime_type="image/jpeg",
            width=width,
            height=height,
        ),
    )


def _largest(sizes: Any, *, rank: bool) -> tuple[str, int | None, int | None] | None:
    """(url, width, height) of the largest size with an http(s) URL."""
    found: list[tuple[tuple[int, int], str, int | None, int | None]] = []
    for size in _list(sizes):
        size = _obj(size)
        url = _url(size.get("url") or size.get("src"))
        if url is None:
            continue
        width, height = _int(size.get("width")), _int(size.get("height"))
        area = max(width or 0, 0) * max(height or 0, 0)
        order = SIZE_RANK.get(_str(size.get("type")) or "", 0) if rank else 0
        found.append(((area, order), url, width or None, height or None))
    if not found:
        return None
    _, url, width, height = max(found, key=lambda f: f[0])
    return url, width, height


def _doc(doc: Mapping[str, Any]) -> _Part | None:
    title = _clean(_str(doc.get("title")) or "")
    ext = _str(doc.get("ext"))
    name = title or (f"file.{ext}" if ext else "file")
    if ext and not name.lower().endswith(f".{ext.lower()}"):
        name = f"{name}.{ext}"
    # doc type 3 is a GIF (VK's doc types: 1 text ... 3 gif, 4 image ... 8 unknown)
    kind = MessageKind.ANIMATION if _int(doc.get("type")) == 3 else MessageKind.DOCUMENT
    return _Part(
        kind,
        attachment=Attachment(
            kind=kind,
            file_ref=_ref("doc", doc),
            url=_url(doc.get("url")),
            mime_type=mimetypes.guess_type(name)[0],
            file_name=_clip(name, 255),
            size=_nonnegative(doc.get("size")),
        ),
    )


def _audio_message(voice: Mapping[str, Any]) -> _Part | None:
    """A voice message: ``link_mp3`` (plays everywhere), else ``link_ogg``."""
    mp3, ogg = _url(voice.get("link_mp3")), _url(voice.get("link_ogg"))
    transcript = _clean(_str(voice.get("transcript")) or "")
    return _Part(
        MessageKind.VOICE,
        f"🗣 {transcript}" if transcript.strip() else None,
        Attachment(
            kind=MessageKind.VOICE,
            file_ref=_ref("audio_message", voice),
            url=mp3 or ogg,
            mime_type="audio/mpeg" if mp3 else "audio/ogg" if ogg else None,
            duration=_nonnegative(voice.get("duration")),
        ),
    )


def _sticker(sticker: Mapping[str, Any]) -> _Part | None:
    best = _largest(sticker.get("images"), rank=False) or _largest(
        sticker.get("images_with_background"), rank=False
    )
    sticker_id = _int(sticker.get("sticker_id"))
    url, width, height = best if best is not None else (None, None, None)
    return _Part(
        MessageKind.STICKER,
        attachment=Attachment(
            kind=MessageKind.STICKER,
            file_ref=f"sticker{sticker_id}" if sticker_id is not None else None,
            url=url,
            mime_type="image/png" if url else None,
            width=width,
            height=height,
        ),
    )


def _graffiti(graffiti: Mapping[str, Any]) -> _Part | None:
    return _Part(
        MessageKind.PHOTO,
        attachment=Attachment(
            kind=MessageKind.PHOTO,
            file_ref=_ref("graffiti", graffiti),
            url=_url(graffiti.get("url")),
            width=_nonnegative(graffiti.get("width")),
            height=_nonnegative(graffiti.get("height")),
        ),
    )


def _video(video: Mapping[str, Any]) -> _Part | None:
    """A video has no file URL in an event: its page on vk.com."""
    ref = _ref("video", video, access_key=False)
    title = _clean(_str(video.get("title")) or "video")
    line = f"🎬 {title}" + (f" https://vk.com/{ref}" if ref else "")
    return _Part(
        MessageKind.VIDEO,
        line,
        Attachment(
            kind=MessageKind.VIDEO,
            file_ref=_ref("video", video),
            duration=_nonnegative(video.get("duration")),
        ),
    )


def _audio(audio: Mapping[str, Any]) -> _Part | None:
    who = " — ".join(
        p for p in (_clean(_str(audio.get(k)) or "") for k in ("artist", "title")) if p.strip()
    )
    return _Part(
        MessageKind.AUDIO,
        f"🎵 {who or 'audio'}",
        Attachment(
            kind=MessageKind.AUDIO,
            file_ref=_ref("audio", audio, access_key=False),
            url=_url(audio.get("url")),
            duration=_nonnegative(audio.get("duration")),
        ),
    )


def _wall(post: Mapping[str, Any]) -> _Part | None:
    """A shared wall post: its link and text (its own attachments are the
    post's, not the customer's: not copied)."""
    owner = _int(post.get("owner_id")) or _int(post.get("to_id")) or _int(post.get("from_id"))
    post_id = _int(post.get("id"))
    link = f" https://vk.com/wall{owner}_{post_id}" if owner and post_id else ""
    text = _clip(_clean(_str(post.get("text")) or ""), MAX_QUOTED)
    return _Part(None, f"📝 wall post{link}" + (f"\n{text}" if text else ""))


def _wall_reply(comment: Mapping[str, Any]) -> _Part | None:
    owner, post_id = _int(comment.get("owner_id")), _int(comment.get("post_id"))
    comment_id = _int(comment.get("id"))
    link = ""
    if owner and post_id:
        link = f" https://vk.com/wall{owner}_{post_id}" + (
            f"?reply={comment_id}" if comment_id else ""
        )
    text = _clip(_clean(_str(comment.get("text")) or ""), MAX_QUOTED)
    return _Part(None, f"💬 comment{link}" + (f"\n{text}" if text else ""))


def _link(link: Mapping[str, Any]) -> _Part | None:
    url = _url(link.get("url"))
    if url is None:
        return None
    title = _clip(_clean(_str(link.get("title")) or ""), 300)
    return _Part(None, f"🔗 {title}: {url}" if title else f"🔗 {url}")


def _poll(poll: Mapping[str, Any]) -> _Part | None:
    question = _clip(_clean(_str(poll.get("question")) or ""), 300) or "poll"
    answers = [
        _clip(_clean(_str(_obj(a).get("text")) or ""), 300) for a in _list(poll.get("answers"))
    ]
    lines = "".join(f"\n• {a}" for a in answers[:MAX_FORWARDED] if a)
    return _Part(MessageKind.POLL, f"📊 {question}{lines}")


def _market(item: Mapping[str, Any]) -> _Part | None:
    title = _clip(_clean(_str(item.get("title")) or ""), 300) or "product"
    price = _clean(_str(_obj(item.get("price")).get("text")) or "")
    ref = _ref("product", item, access_key=False)
    link = f" https://vk.com/{ref}" if ref else ""
    return _Part(None, f"🛍 {title}" + (f", {price}" if price else "") + link)


def _named(label: str) -> Callable[[Mapping[str, Any]], _Part | None]:
    """Attachments shown by name only (a gift, a call, a story)."""

    def read(body: Mapping[str, Any]) -> _Part | None:
        title = _clip(_clean(_str(body.get("title")) or ""), 300)
        url = _url(body.get("url") or body.get("view_url"))
        return _Part(None, " ".join(p for p in (label, title, url) if p))

    return read


#: attachment ``type`` -> its reader (schema ``messages_message_attachment_type``)
ATTACHMENTS: dict[str, Callable[[Mapping[str, Any]], _Part | None]] = {
    "photo": _photo,
    "doc": _doc,
    "audio_message": _audio_message,
    "sticker": _sticker,
    "graffiti": _graffiti,
    "video": _video,
    "audio": _audio,
    "wall": _wall,
    "wall_reply": _wall_reply,
    "link": _link,
    "poll": _poll,
    "market": _market,
    "article": _named("📰 article"),
    "gift": _named("🎁 gift"),
    "call": _named("📞 call"),
    "story": _named("📖 story"),
    "podcast": _named("🎙 podcast"),
}


def _geo(geo: Any) -> str | None:
    """``geo.coordinates``: ``{latitude, longitude}`` (corpus
    ``message_new_geo_sample_5_110``) or the older ``"lat lon"`` string."""
    if not isinstance(geo, dict):
        return None
    coords = geo.get("coordinates")
    if isinstance(coords, dict):
        lat, lon = _number(coords.get("latitude")), _number(coords.get("longitude"))
    elif isinstance(coords, str) and len(coords.split()) == 2:
        lat, lon = (_number(_float(p)) for p in coords.split())
    else:
        return None
    if lat is None or lon is None:
        return None
    place = _obj(geo.get("place"))
    name = ", ".join(
        p for p in (_clean(_str(place.get(k)) or "") for k in ("title", "city", "country")) if p
    )
    return f"📍 {name} ({lat}, {lon})" if name else f"📍 {lat}, {lon}"


# --------------------------------------------------------------------------
# Small readers (nothing in a webhook body is trusted to have its type)
# --------------------------------------------------------------------------


def _message_ref(msg: Mapping[str, Any]) -> str | None:
    """A message's id, or ``c<conversation_message_id>`` where ``id`` is 0."""
    message_id = _int(msg.get("id"))
    if message_id is not None and message_id > 0:
        return str(message_id)
    cmid = _int(msg.get("conversation_message_id"))
    return f"c{cmid}" if cmid is not None and cmid > 0 else None


def _ref(prefix: str, body: Mapping[str, Any], *, access_key: bool = True) -> str | None:
    """VK's name of a media object: ``photo<owner>_<id>[_<access_key>]``."""
    owner, item = _int(body.get("owner_id")), _int(body.get("id"))
    if owner is None or item is None:
        return None
    key = _str(body.get("access_key")) if access_key else None
    key = key if key is not None and EVENT_ID_RE.fullmatch(key) else None
    return f"{prefix}{owner}_{item}" + (f"_{key}" if key else "")


def _language(lang_id: Any) -> str | None:
    number = _int(lang_id)
    return LANGUAGES.get(number) if number is not None else None


def _button(payload: Any) -> str | None:
    """The id of one of the bridge's own buttons (``{"button": "<id>"}``,
    :func:`.outbound.keyboard`) from a ``message_event`` payload: an object
    in corpus ``message_event_payload_sample_5_118``, a JSON string in the
    schema's ``callback_message_event``; None for any other payload."""
    if isinstance(payload, str) and len(payload) <= 4096:
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError):
            return None
    if not isinstance(payload, dict) or set(payload) != {BUTTON_KEY}:
        return None
    chosen = payload[BUTTON_KEY]
    if not isinstance(chosen, str) or not chosen.strip():
        return None
    return _clip(_clean(chosen), MAX_QUOTED)


def _command(payload: Any) -> str | None:
    """A keyboard button's ``payload`` (a JSON string) -> its ``command``
    (``{"command":"start"}``: the Start button)."""
    if not isinstance(payload, str) or len(payload) > 4096:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    command = data.get("command") if isinstance(data, dict) else None
    return _clip(_clean(command), 200) if isinstance(command, str) and command else None


def _time(stamp: Any, fallback: dt.datetime | None) -> dt.datetime | None:
    seconds = _int(stamp)
    if seconds is None or seconds <= 0:
        return fallback
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, ValueError, OSError):
        return fallback


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    """An id or count: a JSON integer within int64."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    return None


def _nonnegative(value: Any) -> int | None:
    number = _int(value)
    return number if number is not None and number >= 0 else None


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if isinstance(value, int) or math.isfinite(value) else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _url(value: Any) -> str | None:
    """An absolute http(s) URL, else None (an empty ``url`` is VK's "none")."""
    if not isinstance(value, str) or len(value) > 4096:
        return None
    if not value.lower().startswith(("https://", "http://")) or not value.isprintable():
        return None
    return value if " " not in value else None


def _clean(text: str) -> str:
    """No NUL (PostgreSQL refuses it in text) and no lone surrogate (a JSON
    ``\\ud800`` that no UTF-8 can hold)."""
    if not text:
        return text
    return _SURROGATE.sub("\ufffd", text.replace("\x00", ""))


def _clip(text: str | None, limit: int) -> str | None:
    return _clean(text)[:limit] if text else None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in _clean(text))
