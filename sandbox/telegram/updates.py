"""Updates the sandbox delivers: learning from them, and building them for humans.

:func:`learn_from_update` walks any Update (real corpora ones included) and
records what a bot learns from it in Telegram: the chats and users (a chat is
"known" once it wrote to the bot), message ids (for ``reply_parameters``),
``file_id``s (for ``getFile`` and re-sending), and callback query ids (for
``answerCallbackQuery``).

:func:`build_update` turns the convenience form of ``POST /_deliver``
(``{"from": {...}, "text": "..."}``) into a realistic private-chat Update:
``message_id`` continues the chat's sequence, ``date`` is now, ``chat`` is the
user, a leading ``/command`` gets its ``bot_command`` entity (Telegram adds it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from typing import Any

from ..core.control import ControlError
from .markup import callback_buttons
from .media import document_object, image_size, photo_sizes_for
from .spec import utf16_len
from .state import BotState, Store, StoredFile

__all__ = ["ControlError", "learn_from_update", "build_update", "update_kinds_of", "summarize"]

_MEDIA_KEYS = ("photo", "document", "voice", "audio", "video", "video_note", "sticker",
               "animation")
_USER_KEYS = ("from", "user", "sender_user", "new_chat_member", "old_chat_member")


def update_kinds_of(update: dict[str, Any], kinds: tuple[str, ...]) -> list[str]:
    """The optional ``Update`` fields present (api.json: "at most one")."""
    return [key for key in update if key in kinds]


def learn_from_update(store: Store, bot: BotState, update: dict[str, Any],
                      files: dict[str, bytes] | None = None) -> None:
    """Record chats, users, messages, files and callback queries found in ``update``."""
    with store.lock:
        _walk(store, bot, update, None, 0)
        query = update.get("callback_query")
        if isinstance(query, dict) and isinstance(query.get("id"), str):
            bot.callback_queries.setdefault(query["id"], False)
        for file_id, data in (files or {}).items():
            if file_id in bot.files:
                bot.files[file_id].data = data
                bot.files[file_id].size = len(data)


def _walk(store: Store, bot: BotState, node: Any, key: str | None, depth: int) -> None:
    if depth > 12:
        return
    if isinstance(node, list):
        for item in node:
            _walk(store, bot, item, key, depth + 1)
        return
    if not isinstance(node, dict):
        return
    chat = node.get("chat")
    if isinstance(chat, dict) and isinstance(chat.get("id"), int):
        state = bot.remember_chat(chat)
        if isinstance(node.get("message_id"), int):
            state.remember_message(node)
    if key in _USER_KEYS and isinstance(node.get("id"), int) and "first_name" in node:
        bot.users[node["id"]] = dict(node)
    if isinstance(node.get("file_id"), str) and node["file_id"]:
        _remember_file(bot, node, key)
    for child_key, child in node.items():
        if isinstance(child, (dict, list)):
            _walk(store, bot, child, child_key, depth + 1)


def _remember_file(bot: BotState, node: dict[str, Any], key: str | None) -> None:
    if node["file_id"] in bot.files:
        return
    kind = key if key in _MEDIA_KEYS else "document"
    size = node.get("file_size")
    unique = node.get("file_unique_id")
    if not isinstance(unique, str):
        # Updates from before Bot API 4.5 have no file_unique_id; derive a stable one.
        unique = "AQAD" + hashlib.sha256(node["file_id"].encode()).hexdigest()[:12]
    bot.files[node["file_id"]] = StoredFile(
        file_id=node["file_id"], file_unique_id=unique, kind=kind,
        size=size if isinstance(size, int) else None,
        mime_type=node.get("mime_type"), file_name=node.get("file_name"),
        meta={"width": node.get("width"), "height": node.get("height")},
    )


# -- the convenience form ----------------------------------------------------------


def _user_from(bot: BotState, body: dict[str, Any]) -> dict[str, Any]:
    sender = body.get("from")
    if sender is not None:
        if not isinstance(sender, dict) or not isinstance(sender.get("id"), int) \
                or isinstance(sender.get("id"), bool) or sender["id"] <= 0:
            raise ControlError('"from" must be an object with a positive integer "id"')
        user: dict[str, Any] = {"id": sender["id"], "is_bot": False,
                                "first_name": str(sender.get("first_name") or "User")}
        for name in ("last_name", "username", "language_code"):
            if sender.get(name):
                user[name] = str(sender[name])
        return user
    chat_id = body.get("chat_id")
    if not isinstance(chat_id, int) or isinstance(chat_id, bool) or chat_id <= 0:
        raise ControlError('give "from": {"id", "first_name"} or a private "chat_id" (> 0)')
    known = bot.users.get(chat_id)
    if known:
        return dict(known)
    chat = bot.chats.get(chat_id)
    first_name = chat.chat.get("first_name") if chat else None
    return {"id": chat_id, "is_bot": False, "first_name": first_name or f"User {chat_id}"}


def _decode(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ControlError(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ControlError(f"{what} is not valid base64") from None


def _text_entities(text: str) -> list[dict[str, Any]]:
    if text.startswith("/"):
        command = text.split(None, 1)[0]
        return [{"offset": 0, "length": utf16_len(command), "type": "bot_command"}]
    return []


def build_update(store: Store, bot: BotState, body: dict[str, Any]) -> dict[str, Any]:
    """A realistic private-chat Update (without ``update_id``) from the convenience form."""
    with store.lock:
        user = _user_from(bot, body)
        chat = {"id": user["id"], "first_name": user["first_name"]}
        for name in ("last_name", "username"):
            if name in user:
                chat[name] = user[name]
        chat["type"] = "private"
        state = bot.remember_chat(chat)
        bot.users[user["id"]] = user
        if "callback_data" in body or "button" in body:
            return {"callback_query": _callback_query(bot, state, user, body)}
        message: dict[str, Any] = {"message_id": state.allocate_message_id(), "from": user,
                                   "chat": dict(state.chat), "date": int(store.now())}
        reply_to = body.get("reply_to_message_id")
        if reply_to is not None:
            if reply_to not in state.messages:
                raise ControlError(f"message {reply_to} is not known in chat {chat['id']}")
            message["reply_to_message"] = state.messages[reply_to]
        _fill_content(store, bot, message, body)
        state.remember_message(message)
        return {"message": message}


def _fill_content(store: Store, bot: BotState, message: dict[str, Any],
                  body: dict[str, Any]) -> None:
    text, caption = body.get("text"), body.get("caption")
    photo, document = body.get("photo"), body.get("document")
    if photo is not None:
        spec = photo if isinstance(photo, dict) else {}
        data = _decode(spec["content_base64"], "photo.content_base64") \
            if "content_base64" in spec else None
        size = image_size(data) if data else None
        width, height = size or (int(spec.get("width", 1280)), int(spec.get("height", 960)))
        message["photo"] = photo_sizes_for(store, bot, data, width, height)
    elif document is not None:
        if not isinstance(document, dict):
            raise ControlError('"document" must be an object '
                               '{file_name, mime_type, content_base64}')
        data = _decode(document.get("content_base64", ""), "document.content_base64")
        stored = store.new_file(bot, "document", data=data, size=len(data),
                                file_name=str(document.get("file_name") or "file.bin"),
                                mime_type=str(document.get("mime_type") or
                                              "application/octet-stream"))
        message["document"] = document_object(stored)
    elif isinstance(text, str) and text.strip():
        message["text"] = text
        entities = _text_entities(text)
        if entities:
            message["entities"] = entities
        return
    else:
        raise ControlError('the convenience form needs "text" (non-empty), "photo", '
                           '"document" or "callback_data"')
    if isinstance(caption, str) and caption:
        message["caption"] = caption


def _callback_query(bot: BotState, state: Any, user: dict[str, Any],
                    body: dict[str, Any]) -> dict[str, Any]:
    """A press of a button of the bot's message: ``message_id``, else the
    bot's latest message with an inline keyboard, else its latest message."""
    message = _pressed_message(bot, state, body.get("message_id"))
    data = _pressed_data(message, body)
    instance = hashlib.sha256(f"{bot.account.id}:{state.chat['id']}".encode()).hexdigest()
    return {"id": str(secrets.randbits(62)), "from": user, "message": message,
            "chat_instance": str(int(instance[:15], 16)), "data": data}


def _pressed_message(bot: BotState, state: Any, message_id: Any) -> dict[str, Any]:
    if message_id is None:
        own = [m for m in state.messages.values()
               if (m.get("from") or {}).get("id") == bot.account.id]
        if not own:
            raise ControlError("no bot message in this chat to press a button on")
        keyed = [m for m in own if callback_buttons(m)]
        message_id = max(m["message_id"] for m in keyed or own)
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ControlError('"message_id" must be an integer')
    message = state.messages.get(message_id)
    if message is None:
        raise ControlError(f"message {message_id} is not known in chat {state.chat['id']}")
    return dict(message)


def _pressed_data(message: dict[str, Any], body: dict[str, Any]) -> str:
    """``callback_data`` of the button pressed: the one labelled ``button``,
    or ``callback_data`` itself, which must be one of the message's buttons
    when it has a keyboard (Telegram sends only what a button carries)."""
    buttons = callback_buttons(message)
    where = f"message {message['message_id']}"
    if "button" in body:
        label = body["button"]
        found = next((b for b in buttons if b.get("text") == label), None)
        if found is None:
            labels = [b.get("text") for b in buttons]
            raise ControlError(f"{where} has no callback button {label!r} (it has {labels})", 409)
        return str(found["callback_data"])
    data = body.get("callback_data")
    if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
        raise ControlError('"callback_data" must be 1-64 bytes (api.json InlineKeyboardButton)')
    if buttons and data not in {b["callback_data"] for b in buttons}:
        raise ControlError(f"{where} has no button with callback_data {data!r}", 409)
    return data


def summarize(update: dict[str, Any]) -> dict[str, Any]:
    """``chat_id``, ``kind`` and ``text`` of an update, for the delivery log and the page."""
    for kind, value in update.items():
        if kind == "update_id" or not isinstance(value, dict):
            continue
        chat = value.get("chat") or (value.get("message") or {}).get("chat") or {}
        text = value.get("text") or value.get("caption") or value.get("data")
        return {"kind": kind, "chat_id": chat.get("id") if isinstance(chat, dict) else None,
                "text": text if isinstance(text, str) else None}
    return {"kind": None, "chat_id": None, "text": None}
