"""One Telegram ``Update`` (a webhook body) -> one normalised event.

Read with python-telegram-bot's types. PTB 22 is stricter than many real
payloads (it requires fields later Bot API versions added), so parsing goes:
PTB on the update as received; PTB again on a copy with those fields filled
(:func:`backfill`); and if the shape is still unreadable, an ``UNKNOWN``
message built from the ids alone (:func:`degraded`). A webhook answered
with a 4xx makes Telegram give up on the update, so a message with a chat
and a sender is never dropped; ``raw`` keeps the update for replay.

Deep links: ``t.me/<bot>?start=<payload>`` arrives as the text
``/start <payload>`` (1-64 characters ``A-Za-z0-9_-``); the payload is kept
in ``profile.utm["start"]``. Our convention for campaign tracking: when the
payload is ``<key>-<value>`` pairs joined by ``__`` (keys ``[a-z][a-z0-9_]*``,
the first ``-`` separates key and value), each pair becomes a utm key too::

    utm_source-google__utm_campaign-spring-sale
    -> {"utm_source": "google", "utm_campaign": "spring-sale", "start": "<payload>"}
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from telegram import CallbackQuery, Message, Update

from bridge.errors import PayloadError
from bridge.model import (
    Attachment,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    SenderProfile,
    ThreadMigrated,
)

__all__ = ["HANDLED_UPDATES", "KIND", "backfill", "parse_update", "utm_from_start"]

log = logging.getLogger(__name__)

KIND = "telegram"

#: The update kinds that carry a customer thread, in the order used when a
#: (synthetic) update carries several: Telegram sends "at most one" (api.json
#: ``Update``); TelegramBots' ``Update.json`` fixture carries five.
HANDLED_UPDATES = ("message", "edited_message", "callback_query")

#: Message fields that qualify a message rather than being its content.
ENVELOPE_FIELDS = frozenset(
    """message_id message_thread_id direct_messages_topic from sender_chat sender_boost_count
    sender_business_bot sender_tag date guest_query_id business_connection_id chat
    forward_origin forward_from forward_from_chat forward_from_message_id forward_signature
    forward_sender_name forward_date is_topic_message is_automatic_forward reply_to_message
    external_reply quote reply_to_story reply_to_checklist_task_id reply_to_poll_option_id
    via_bot guest_bot_caller_user guest_bot_caller_chat edit_date has_protected_content
    is_from_offline is_paid_post media_group_id author_signature paid_star_count entities
    caption caption_entities link_preview_options suggested_post_info effect_id
    show_caption_above_media has_media_spoiler reply_markup""".split()
)

#: Media fields, first match wins: an ``animation`` message also carries
#: ``document``, a ``live_photo`` also carries ``photo``, "for backward
#: compatibility" (api.json ``Message``).
MEDIA_KINDS: dict[str, MessageKind] = {
    "animation": MessageKind.ANIMATION,
    "sticker": MessageKind.STICKER,
    "video_note": MessageKind.VIDEO_NOTE,
    "voice": MessageKind.VOICE,
    "audio": MessageKind.AUDIO,
    "video": MessageKind.VIDEO,
    "photo": MessageKind.PHOTO,
    "document": MessageKind.DOCUMENT,
}

#: The message fields the mapping reads: PTB parses only these, so a field
#: we ignore (an exotic reply, a forward origin, a game) cannot break a message.
REPLY_FIELDS = frozenset({"message_id", "date", "chat"})
READ_FIELDS = frozenset(
    [*REPLY_FIELDS, *MEDIA_KINDS, "contact", "venue", "location", "poll", "text", "caption"]
    + "from sender_chat edit_date reply_to_message migrate_to_chat_id migrate_from_chat_id".split()
    + "new_chat_members left_chat_member new_chat_title".split()
)

#: Service messages ("Service message: ..." in api.json ``Message``) -> text.
SERVICE_TEXT: dict[str, str] = {
    "new_chat_members": "joined: {names}",
    "left_chat_member": "left: {names}",
    "new_chat_title": "chat title changed to “{title}”",
    "new_chat_photo": "chat photo changed",
    "delete_chat_photo": "chat photo deleted",
    "group_chat_created": "group created",
    "supergroup_chat_created": "supergroup created",
    "channel_chat_created": "channel created",
    "message_auto_delete_timer_changed": "auto-delete timer changed",
    "pinned_message": "message pinned",
    "chat_owner_left": "chat owner left",
    "chat_owner_changed": "chat owner changed",
    "successful_payment": "payment received",
    "refunded_payment": "payment refunded",
    "write_access_allowed": "allowed the bot to write",
    "users_shared": "shared users with the bot",
    "chat_shared": "shared a chat with the bot",
    "connected_website": "logged in on a website",
    "proximity_alert_triggered": "proximity alert",
    "web_app_data": "sent data from a web app",
    "video_chat_scheduled": "video chat scheduled",
    "video_chat_started": "video chat started",
    "video_chat_ended": "video chat ended",
    "video_chat_participants_invited": "invited to a video chat",
    "forum_topic_created": "topic created",
    "forum_topic_edited": "topic edited",
    "forum_topic_closed": "topic closed",
    "forum_topic_reopened": "topic reopened",
    "general_forum_topic_hidden": "general topic hidden",
    "general_forum_topic_unhidden": "general topic shown",
    "boost_added": "boosted the chat",
    "chat_background_set": "chat background changed",
    "gift": "gift",
    "unique_gift": "unique gift",
    "gift_upgrade_sent": "gift upgrade",
    "giveaway_created": "giveaway created",
    "giveaway_completed": "giveaway completed",
    "giveaway_winners": "giveaway winners",
    "checklist_tasks_done": "checklist tasks done",
    "checklist_tasks_added": "checklist tasks added",
    "poll_option_added": "poll option added",
    "poll_option_deleted": "poll option deleted",
    "paid_message_price_changed": "paid message price changed",
    "direct_message_price_changed": "direct message price changed",
    "managed_bot_created": "managed bot created",
    "suggested_post_approved": "suggested post approved",
    "suggested_post_approval_failed": "suggested post approval failed",
    "suggested_post_declined": "suggested post declined",
    "suggested_post_paid": "suggested post paid",
    "suggested_post_refunded": "suggested post refunded",
}

#: Fields later Bot API versions made required (PTB 22 refuses the type
#: without them; version per PTB's errors and docs). Filled in a copy only.
USER_FIELDS = frozenset(
    "from user forward_from left_chat_member via_bot new_chat_members users traveler watcher"
    " sender_business_bot".split()
)
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "user": {"is_bot": False},  # Bot API 3.0
    "sticker": {"is_animated": False, "is_video": False, "type": "regular"},  # 4.5, 5.7, 6.0
    "poll": {"allows_revoting": False, "members_only": False},  # 9.6, 10.0
}

START_PAYLOAD_RE = re.compile(r"/start(?:@\w+)?\s+([A-Za-z0-9_-]{1,64})\s*")
UTM_PAIR_RE = re.compile(r"([a-z][a-z0-9_]*)-(.+)")

#: what a malformed shape raises inside PTB or the mapping below (RecursionError:
#: a value nested too deeply for PTB's deepcopy / de_json, or for backfill)
MAPPING_ERRORS = (
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    RecursionError,
)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def parse_update(body: Any, *, received_at: dt.datetime, max_body: int) -> list[InboundEvent]:
    """The webhook body -> ``[event]``; :class:`PayloadError` if it is not
    an ``Update`` (bad UTF-8 or JSON, not an object, no integer update_id)."""
    data = decode(body, max_body)
    update_id = data.get("update_id")
    if _int(update_id) is None:
        raise PayloadError("update has no integer update_id")
    external_id = str(update_id)
    present = [k for k in data if k != "update_id"]
    kind = next((k for k in HANDLED_UPDATES if k in data), present[0] if present else "empty")
    if kind not in HANDLED_UPDATES:
        return [IgnoredEvent(KIND, external_id, kind, raw=data)]
    obj = data[kind]
    if not isinstance(obj, dict):
        raise PayloadError(f"{kind} in update {external_id} is not an object")
    try:
        event = _map(kind, obj, external_id, data, received_at)
    except MAPPING_ERRORS as exc:
        # ids and the exception type only: the payload is personal data
        log.warning("telegram update %s: unreadable %s (%s)", external_id, kind, type(exc).__name__)
        event = degraded(kind, obj, external_id, data, received_at)
    return [event]


def decode(body: Any, max_body: int) -> dict[str, Any]:
    if not isinstance(body, (bytes, bytearray)):
        raise PayloadError("body is not bytes")
    if len(body) > max_body:
        raise PayloadError("body too large", status_code=413)
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("body is not valid UTF-8") from exc
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PayloadError("body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise PayloadError("body is not a JSON object")
    return data


def ptb(kind: str, obj: dict) -> Any:
    """``Update.de_json`` on the chosen field alone, and for a message only on
    the fields we read: a malformed sibling (a synthetic multi-kind update) or
    a content type we do not model (a game) cannot break it. Retried on a
    backfilled copy."""
    if kind != "callback_query":
        obj = {k: v for k, v in obj.items() if k in READ_FIELDS}
        reply = obj.get("reply_to_message")
        if isinstance(reply, dict):  # only its id is used; its content may be anything
            obj["reply_to_message"] = {k: v for k, v in reply.items() if k in REPLY_FIELDS}
    try:
        update = Update.de_json({"update_id": 0, kind: copy.deepcopy(obj)}, None)
    except MAPPING_ERRORS:
        update = Update.de_json({"update_id": 0, kind: backfill(obj, kind)}, None)
    return getattr(update, kind)


def content_field(obj: dict) -> str:
    """The first field that is a message's content (not its envelope)."""
    content = (k for k in obj if k not in ENVELOPE_FIELDS and obj[k] not in (None, False, [], {}))
    return next(content, "empty")


def _map(
    kind: str, obj: dict, external_id: str, raw: dict, received_at: dt.datetime
) -> InboundEvent:
    parsed = ptb(kind, obj)
    if kind == "callback_query":
        return _callback(parsed, external_id, raw, received_at)
    return _message(parsed, obj, external_id, raw, is_edit=kind == "edited_message")


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


def _message(
    msg: Message, obj: dict, external_id: str, raw: dict, *, is_edit: bool
) -> InboundEvent:
    chat_id = _id(msg.chat.id)
    if msg.migrate_to_chat_id is not None:
        return ThreadMigrated(KIND, external_id, chat_id, _id(msg.migrate_to_chat_id), raw=raw)
    if msg.migrate_from_chat_id is not None:
        return ThreadMigrated(KIND, external_id, _id(msg.migrate_from_chat_id), chat_id, raw=raw)
    if is_edit and msg.location is not None:
        # A live location streams edited_message.location every few seconds
        # (corpus testListUpdates3): not one CRM note per edit (FACTS §1).
        return IgnoredEvent(KIND, external_id, "live_location_update", raw=raw)
    kind, text, attachments, phone = _content(msg, obj)
    user = msg.from_user
    sender = user.id if user else (msg.sender_chat.id if msg.sender_chat else msg.chat.id)
    # An edit is a new timeline entry: its time is when the customer edited.
    sent_at = (msg.edit_date if is_edit else None) or msg.date
    if not isinstance(sent_at, dt.datetime):
        raise ValueError("message has no date")
    return InboundMessage(
        channel_kind=KIND,
        external_id=external_id,
        external_user_id=_id(sender),
        external_thread_id=chat_id,
        kind=kind,
        sent_at=sent_at.astimezone(dt.UTC),
        text=text,
        attachments=attachments,
        profile=_profile(user, phone=phone, utm=utm_from_start(_str(msg.text))),
        provider_message_id=_id(msg.message_id),
        sequence=msg.message_id,
        is_edit=is_edit,
        reply_to=_id(msg.reply_to_message.message_id) if msg.reply_to_message else None,
        raw=raw,
    )


def _content(
    msg: Message, obj: dict
) -> tuple[MessageKind, str, tuple[Attachment, ...], str | None]:
    """(kind, text, attachments, the sender's own phone when they shared it)."""
    # real messages carry text or caption, never both; a synthetic one may
    caption = _str(msg.caption) or _str(msg.text) or ""
    for field, kind in MEDIA_KINDS.items():
        if obj.get(field):
            if kind is MessageKind.STICKER and not caption:
                caption = _str(getattr(msg.sticker, "emoji", None)) or ""
            return kind, caption, (_attachment(msg, field, kind),), None
    if msg.contact is not None:
        c = msg.contact
        name = " ".join(filter(None, (_str(c.first_name), _str(c.last_name))))
        phone = _str(c.phone_number)
        # Only the customer's own number is theirs (user_id == from.id); a
        # contact card of someone else is message content only.
        own = msg.from_user is not None and c.user_id == msg.from_user.id
        text = f"👤 {name}: {phone}" if phone else f"👤 {name}"
        return MessageKind.CONTACT, text, (), _e164(phone) if own else None
    if msg.venue is not None:
        v = msg.venue
        where = f"{v.location.latitude}, {v.location.longitude}"
        return MessageKind.VENUE, f"📍 {v.title}, {v.address} ({where})", (), None
    if msg.location is not None:
        loc = msg.location
        live = " (live location)" if _seconds(loc, "live_period") else ""
        return MessageKind.LOCATION, f"📍 {loc.latitude}, {loc.longitude}{live}", (), None
    if msg.poll is not None:
        options = "".join(f"\n• {o.text}" for o in msg.poll.options)
        return MessageKind.POLL, f"📊 {msg.poll.question}{options}", (), None
    plain = _str(msg.text)
    if plain:
        return MessageKind.TEXT, plain, (), None
    what = content_field(obj)
    if what in SERVICE_TEXT:
        return MessageKind.SYSTEM, _service_text(msg, what), (), None
    text = f"[unsupported: {what}]" + (f"\n{caption}" if caption else "")
    return MessageKind.UNKNOWN, text, (), None


def _attachment(msg: Message, field: str, kind: MessageKind) -> Attachment:
    item = getattr(msg, field)
    if kind is MessageKind.PHOTO:
        # One PhotoSize per available size; api.json does not document the
        # order, so pick by area, then by bytes (FACTS §1).
        item = max(item, key=lambda p: ((p.width or 0) * (p.height or 0), p.file_size or 0))
    mime = getattr(item, "mime_type", None)
    width, height = getattr(item, "width", None), getattr(item, "height", None)
    if kind is MessageKind.STICKER:
        # animated stickers are .TGS, video stickers .WEBM, static .WEBP
        mime = (
            "application/x-tgsticker"
            if item.is_animated
            else "video/webm"
            if item.is_video
            else "image/webp"
        )
    if kind is MessageKind.VIDEO_NOTE:
        width = height = item.length  # a round video: length is its diameter
    return Attachment(
        kind=kind,
        file_ref=_str(item.file_id),
        mime_type=_str(mime),
        file_name=_str(getattr(item, "file_name", None)),
        size=_int(getattr(item, "file_size", None)),
        width=_int(width),
        height=_int(height),
        duration=_seconds(item, "duration"),
    )


def _service_text(msg: Message, field: str) -> str:
    template = SERVICE_TEXT[field]
    if field == "new_chat_members":
        return template.format(names=_user_names(msg.new_chat_members))
    if field == "left_chat_member":
        return template.format(names=_user_names([msg.left_chat_member]))
    if field == "new_chat_title":
        return template.format(title=msg.new_chat_title)
    return template


def _user_names(users: Any) -> str:
    names = (" ".join(filter(None, (u.first_name, u.last_name))) for u in users if u)
    return ", ".join(n for n in names if n)


def _e164(phone: str | None) -> str | None:
    # The number of the user's own account comes in international format,
    # with or without the "+" depending on the client: make it E.164-parseable.
    return "+" + phone if phone and phone.isdigit() else phone


def _profile(
    user: Any, *, phone: str | None = None, utm: Mapping[str, str] | None = None
) -> SenderProfile:
    # ``phone`` is only ever the sender's own number: a ``contact`` whose
    # ``user_id`` is the sender's ``from.id`` (api.json ``types.Contact``,
    # corpora FACTS §1), which Telegram fills from the account that shared
    # it; another person's card never becomes a phone (``_content``). So a
    # phone here is channel-proven: verified (bridge.model.SenderProfile).
    if user is None:
        return SenderProfile(phone=phone, phone_verified=phone is not None, utm=dict(utm or {}))
    return SenderProfile(
        first_name=_str(user.first_name),
        last_name=_str(user.last_name),
        username=_str(user.username),
        language=_str(user.language_code),
        phone=phone,
        phone_verified=phone is not None,
        utm=dict(utm or {}),
    )


def utm_from_start(text: str | None) -> dict[str, str]:
    """``/start <payload>`` -> utm keys (the convention in the module docstring)."""
    match = START_PAYLOAD_RE.fullmatch(text or "")
    if not match:
        return {}
    payload = match.group(1)
    pairs = [UTM_PAIR_RE.fullmatch(part) for part in payload.split("__")]
    utm = {m.group(1): m.group(2) for m in pairs if m} if all(pairs) else {}
    utm["start"] = payload
    return utm


# --------------------------------------------------------------------------
# Button presses and unreadable shapes
# --------------------------------------------------------------------------


def _callback(
    query: CallbackQuery, external_id: str, raw: dict, received_at: dt.datetime
) -> InboundMessage:
    message = query.message  # Message or InaccessibleMessage: both have chat
    user_id = _id(query.from_user.id)
    return InboundMessage(
        channel_kind=KIND,
        external_id=external_id,
        external_user_id=user_id,
        # No message: the button sat on an inline-mode message; the only
        # thread we know is the user's private chat with the bot.
        external_thread_id=_id(message.chat.id) if message else user_id,
        kind=MessageKind.CALLBACK,
        sent_at=received_at,  # a callback_query has no date of its own
        text=_str(query.data) or "",
        profile=_profile(query.from_user),
        reply_to=_id(message.message_id) if message else None,
        callback_id=_str(query.id),
        raw=raw,
    )


def degraded(
    kind: str, obj: dict, external_id: str, raw: dict, received_at: dt.datetime
) -> InboundMessage:
    """An ``UNKNOWN`` message from the ids alone, for a shape PTB cannot read."""

    def ident(node: Any, *path: str) -> str | None:
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return str(node) if _int(node) is not None else None

    is_callback = kind == "callback_query"
    thread = ident(obj.get("message") if is_callback else obj, "chat", "id")
    thread = thread or (ident(obj, "from", "id") if is_callback else None)
    user = ident(obj, "from", "id") or ident(obj, "sender_chat", "id") or thread
    if thread is None or user is None:
        raise PayloadError(f"{kind} in update {external_id} has no chat or sender id")
    date = None if is_callback else _int(obj.get("date"))
    try:
        sent_at = dt.datetime.fromtimestamp(date, dt.UTC) if date else received_at
    except (OverflowError, ValueError, OSError):
        sent_at = received_at
    msg_id = None if is_callback else ident(obj, "message_id")
    return InboundMessage(
        channel_kind=KIND,
        external_id=external_id,
        external_user_id=user,
        external_thread_id=thread,
        kind=MessageKind.UNKNOWN,
        sent_at=sent_at,
        text=f"[unsupported: {content_field(obj) if kind != 'callback_query' else kind}]",
        provider_message_id=msg_id,
        sequence=int(msg_id) if msg_id else None,
        is_edit=kind == "edited_message",
        callback_id=_str(obj.get("id")) if is_callback else None,
        raw=raw,
    )


def backfill(node: Any, key: str = "") -> Any:
    """A copy of ``node`` with the fields of :data:`LEGACY_DEFAULTS` filled."""
    if isinstance(node, list):
        return [backfill(item, key) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: backfill(v, k) for k, v in node.items()}
    if "file_id" in out:  # every file object; file_unique_id came with Bot API 4.5
        out.setdefault("file_unique_id", out["file_id"])
    for name, value in LEGACY_DEFAULTS.get("user" if key in USER_FIELDS else key, {}).items():
        out.setdefault(name, value)
    if key == "poll" and isinstance(out.get("options"), list):
        for index, option in enumerate(out["options"]):  # PollOption.persistent_id, 9.6
            if isinstance(option, dict):
                option.setdefault("persistent_id", str(index))
    return out


# --------------------------------------------------------------------------
# Small readers (PTB does not check JSON types: "text": 7 reaches us)
# --------------------------------------------------------------------------


def _id(value: Any) -> str:
    """A Telegram id as an exact string (may exceed 32 bits, FACTS §0.5)."""
    if _int(value) is None:
        raise ValueError("id is not an integer")
    return str(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _seconds(obj: Any, name: str) -> int | None:
    """A duration in whole seconds. Read through ``to_dict()``: PTB 22.2+
    warns on the attribute, which becomes a ``timedelta`` in a later major."""
    return _int(obj.to_dict().get(name))
