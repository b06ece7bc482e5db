"""The Bot API methods the sandbox implements, and the dispatcher in front of them.

Order of checks, as in the Bot API server (tdlib/telegram-bot-api
``ClientManager::send`` then ``Client::on_cmd``): token shape
(``401 Unauthorized: invalid token specified``), a known bot (``401
Unauthorized``), the method (``404 Not Found``), then the method's own checks
in the server's order (for sendMessage the text comes before the chat:
``process_send_message_query`` parses the text, then ``do_send_message``
checks the chat). Parameter types are checked first against api.json
(``spec.py``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import CHAT_NOT_FOUND, QUERY_ID_INVALID, ApiError, bad_request
from .formatting import format_text
from .markup import check_reply_markup
from .media import store_document, store_photo
from .spec import BotApiSpec, MethodSpec, UploadedFile, utf16_len
from .state import TOKEN_RE, BotState, ChatState, Store, Webhook

__all__ = ["Call", "dispatch", "HANDLERS", "check_token"]

_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]*$")
#: the Bot API server's long-poll cap (tdlib/telegram-bot-api Client.hpp
#: LONG_POLL_MAX_TIMEOUT = 50); getUpdates.limit is 1-100 (api.json)
LONG_POLL_MAX_TIMEOUT = 50
# The three 409s of getUpdates, as the Bot API server words them (quoted by
# the many bots that match on them).
WEBHOOK_ACTIVE = ("Conflict: can't use getUpdates method while webhook is active; "
                  "use deleteWebhook to delete the webhook first")
TERMINATED_BY_POLL = ("Conflict: terminated by other getUpdates request; "
                      "make sure that only one bot instance is running")
TERMINATED_BY_WEBHOOK = "Conflict: terminated by setWebhook request"
_WEBHOOK_PORTS = (80, 88, 443, 8443)
_FORBIDDEN_BY_TYPE = {
    "private": "Forbidden: bot was blocked by the user",
    "group": "Forbidden: bot was kicked from the group chat",
    "supergroup": "Forbidden: bot was kicked from the supergroup chat",
    "channel": "Forbidden: bot is not a member of the channel chat",
}


@dataclass
class Call:
    """One Bot API call: the typed parameters plus everything a handler needs."""

    store: Store
    spec: BotApiSpec
    bot: BotState
    method: MethodSpec
    params: dict[str, Any]
    raw: dict[str, Any]

    def limit(self, field_name: str) -> int:
        """The upper length limit api.json states for ``field_name`` of this method."""
        limit = self.method.fields[field_name].limit
        assert limit is not None, field_name  # noqa: S101 - spec invariant
        return limit[1]


Handler = Callable[[Call], "tuple[Any, str | None]"]


def check_token(store: Store, token: str) -> BotState:
    """The bot for ``token`` or the 401 Telegram answers."""
    # ClientManager::send rejects malformed tokens before looking the bot up.
    if not token or token[0] == "0" or len(token) > 80 or ":" not in token:
        raise ApiError(401, "Unauthorized: invalid token specified")
    bot = store.bot(token)
    if bot is None or not TOKEN_RE.match(token):
        raise ApiError(401, "Unauthorized")
    return bot


def dispatch(store: Store, spec: BotApiSpec, token: str, method_name: str,
             raw: dict[str, Any], files: dict[str, UploadedFile]) -> tuple[Any, str | None]:
    """Run one Bot API call; returns ``(result, description)`` or raises :class:`ApiError`."""
    bot = check_token(store, token)
    handler = HANDLERS.get(method_name.lower())
    method = spec.method(method_name)
    if handler is None or method is None:
        raise ApiError(404, "Not Found")
    params = spec.coerce_params(method, raw, files)
    return handler(Call(store, spec, bot, method, params, raw))


# -- shared steps --------------------------------------------------------------------


def _target_chat(call: Call) -> ChatState:
    chat_id = call.params.get("chat_id")
    if chat_id is None:
        raise bad_request("chat_id is empty")
    with call.store.lock:
        state = call.bot.resolve_chat(chat_id)
        if state is None:
            raise bad_request(CHAT_NOT_FOUND)
        if state.migrated_to is not None:
            # The answer python-telegram-bot maps to ChatMigrated (FACTS.md 1).
            raise bad_request("group chat was upgraded to a supergroup chat",
                              {"migrate_to_chat_id": state.migrated_to})
        if state.blocked:
            raise ApiError(403, _FORBIDDEN_BY_TYPE.get(state.chat.get("type", "private"),
                                                       _FORBIDDEN_BY_TYPE["private"]))
        return state


def _reply_target(call: Call, state: ChatState) -> dict[str, Any] | None:
    """The message being replied to (``reply_parameters``; legacy ``reply_to_message_id``)."""
    reply = call.params.get("reply_parameters")
    if reply is not None:
        message_id, allow = reply.get("message_id"), bool(reply.get("allow_sending_without_reply"))
        other = reply.get("chat_id")
    else:
        # The server still reads the pre-7.0 parameters for older clients.
        legacy = call.raw.get("reply_to_message_id")
        if legacy in (None, "", 0, "0"):
            return None
        try:
            message_id = int(legacy)
        except (TypeError, ValueError):
            raise bad_request('parameter "reply_to_message_id" must be of type Integer') from None
        allow = str(call.raw.get("allow_sending_without_reply", "")).lower() in ("true", "1")
        other = None
    source: ChatState | None = state
    if other not in (None, state.chat["id"]):
        with call.store.lock:
            source = call.bot.resolve_chat(other)
    if source is None:
        raise bad_request(CHAT_NOT_FOUND)
    with call.store.lock:
        message = source.messages.get(message_id)
    if message is None and not allow:
        raise bad_request("message to be replied not found")
    return dict(message) if message else None


def _formatted(call: Call, text_field: str, entities_field: str) -> tuple[str, list[Any]]:
    allowed = _entity_types(call.spec)
    return format_text(call.params.get(text_field, ""), call.params.get("parse_mode"),
                       call.params.get(entities_field), allowed)


def _entity_types(spec: BotApiSpec) -> set[str]:
    description = next(f.description for f in spec.type_fields("MessageEntity")
                       if f.name == "type")
    return set(re.findall(r'"([a-z_]+)"', description))


def _commit(call: Call, state: ChatState, content: dict[str, Any],
            reply_to: dict[str, Any] | None) -> dict[str, Any]:
    """Flood check, then allocate the message id, build the Message and log it."""
    store, bot = call.store, call.bot
    with store.lock:
        retry_after = store.flood.take(bot.account.id, state.chat["id"])
        if retry_after is not None:
            raise ApiError.flood(retry_after)
        message: dict[str, Any] = {"message_id": state.allocate_message_id(),
                                   "from": bot.account.user(), "chat": dict(state.chat),
                                   "date": int(store.now())}
        if reply_to:
            message["reply_to_message"] = reply_to
        message.update(content)
        markup = call.params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup  # only inline keyboards are echoed back
        state.remember_message(message)
        store.log_sent({
            "bot_id": bot.account.id, "chat_id": state.chat["id"], "method": call.method.name,
            "message_id": message["message_id"], "text": message.get("text"),
            "caption": message.get("caption"),
            "reply_to_message_id": reply_to["message_id"] if reply_to else None,
            "time": store.now(), "message": message,
        })
        return message


def _check_markup(call: Call) -> None:
    """``reply_markup`` as the server reads it, with the message's content
    (before the chat is looked up; markup.py)."""
    config = call.store.config
    check_reply_markup(call.spec, call.params.get("reply_markup"),
                       config.max_inline_buttons, config.max_inline_row)


def _caption_content(call: Call) -> dict[str, Any]:
    if "caption" not in call.params:
        return {}
    caption, entities = _formatted(call, "caption", "caption_entities")
    if utf16_len(caption) > call.limit("caption"):
        raise bad_request("message caption is too long")
    content: dict[str, Any] = {}
    if caption:
        content["caption"] = caption
        if entities:
            content["caption_entities"] = entities
    if call.params.get("show_caption_above_media"):
        content["show_caption_above_media"] = True
    return content


# -- handlers --------------------------------------------------------------------------


def get_me(call: Call) -> tuple[Any, str | None]:
    user = call.bot.account.user()
    for name in call.spec.getme_only_user_fields:
        user[name] = name == "can_join_groups"
    return user, None


def send_message(call: Call) -> tuple[Any, str | None]:
    if not str(call.params.get("text", "")).strip():
        raise bad_request("message text is empty")
    text, entities = _formatted(call, "text", "entities")
    if not text:
        raise bad_request("message text is empty")
    _check_markup(call)
    state = _target_chat(call)
    if utf16_len(text) > call.limit("text"):
        raise bad_request("message is too long")
    reply_to = _reply_target(call, state)
    content: dict[str, Any] = {"text": text}
    if entities:
        content["entities"] = entities
    if call.params.get("link_preview_options"):
        content["link_preview_options"] = call.params["link_preview_options"]
    return _commit(call, state, content, reply_to), None


def send_photo(call: Call) -> tuple[Any, str | None]:
    photo = call.params.get("photo")
    if photo is None:
        raise bad_request("there is no photo in the request")
    caption = _caption_content(call)
    _check_markup(call)
    state = _target_chat(call)
    reply_to = _reply_target(call, state)
    content: dict[str, Any] = {"photo": store_photo(call.store, call.bot, photo)}
    content.update(caption)
    if call.params.get("has_spoiler"):
        content["has_media_spoiler"] = True
    return _commit(call, state, content, reply_to), None


def send_document(call: Call) -> tuple[Any, str | None]:
    document = call.params.get("document")
    if document is None:
        raise bad_request("there is no document in the request")
    caption = _caption_content(call)
    _check_markup(call)
    state = _target_chat(call)
    reply_to = _reply_target(call, state)
    content: dict[str, Any] = {"document": store_document(call.store, call.bot, document)}
    content.update(caption)
    return _commit(call, state, content, reply_to), None


def send_chat_action(call: Call) -> tuple[Any, str | None]:
    action = call.params.get("action")
    description = call.method.fields["action"].description
    allowed = set(re.findall(r"\b(typing|[a-z]+_[a-z_]+)\b", description))
    if action not in allowed:
        # Client.cpp process_send_chat_action_query: "Wrong parameter action in request"
        raise bad_request("wrong parameter action in request")
    _target_chat(call)
    return True, None


def answer_callback_query(call: Call) -> tuple[Any, str | None]:
    query_id = call.params.get("callback_query_id")
    with call.store.lock:
        if not query_id or call.bot.callback_queries.get(query_id, True):
            # Unknown, or answered already: QUERY_ID_INVALID (Client.cpp).
            raise bad_request(QUERY_ID_INVALID)
        call.bot.callback_queries[query_id] = True
        call.bot.callback_answers.append({
            "callback_query_id": query_id, "text": call.params.get("text"),
            "show_alert": bool(call.params.get("show_alert")), "url": call.params.get("url"),
            "cache_time": call.params.get("cache_time", 0), "time": call.store.now()})
    return True, None


def get_file(call: Call) -> tuple[Any, str | None]:
    file_id = call.params.get("file_id")
    with call.store.lock:
        stored = call.bot.files.get(file_id) if file_id else None
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.size is not None and stored.size > call.store.config.max_download_bytes:
            raise bad_request("file is too big")  # Client.cpp do_get_file; 20 MB (FACTS.md 1)
        result: dict[str, Any] = {"file_id": stored.file_id,
                                  "file_unique_id": stored.file_unique_id}
        if stored.size is not None:
            result["file_size"] = stored.size
        result["file_path"] = call.store.file_path_for(call.bot, stored)
    return result, None


def _webhook_url_error(url: str, local_mode: bool) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "invalid webhook URL specified"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "invalid webhook URL specified"
    if local_mode:
        return None
    # WebhookActor::start_up (not in --local mode).
    if parts.scheme != "https":
        return "bad webhook: An HTTPS URL must be provided for webhook"
    if (port or 443) not in _WEBHOOK_PORTS:
        return "bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
    return None


def get_updates(call: Call) -> tuple[Any, str | None]:
    """Long polling, as the Bot API server does it: 409 while a webhook is
    set; ``offset`` confirms (forgets) the updates below it; ``limit`` and
    ``timeout`` are clamped (1-100, 0-50); a call ends the long poll that
    was waiting (409 "terminated by other getUpdates request") and so does
    ``setWebhook`` (409 "terminated by setWebhook request"); without
    pending updates the call waits up to ``timeout`` seconds for one.
    ``allowed_updates`` sticks until changed ("If not specified, the
    previous setting will be used") and filters updates as they arrive."""
    store, bot = call.store, call.bot
    offset = int(call.params.get("offset", 0))
    limit = min(100, max(1, int(call.params.get("limit", 100))))
    timeout = min(LONG_POLL_MAX_TIMEOUT, max(0, int(call.params.get("timeout", 0))))
    allowed = call.params.get("allowed_updates")
    with store.lock:
        if bot.webhook is not None:
            raise ApiError(409, WEBHOOK_ACTIVE)
        bot.get_updates_calls += 1
        bot.polling = True
        if allowed is not None:
            if not all(isinstance(a, str) for a in allowed):
                raise bad_request("can't parse allowed updates: expected an Array of String")
            bot.poll_allowed_updates = list(allowed)
        bot.confirm(offset, store.now())
        bot.poll_generation += 1
        mine = bot.poll_generation
        store.updates_changed.notify_all()  # the poll that was waiting ends
        deadline = time.monotonic() + timeout
        bot.long_polls_waiting += 1
        try:
            while True:
                if bot.poll_generation != mine:
                    bot.poll_conflicts += 1
                    raise ApiError(409, TERMINATED_BY_POLL)
                if bot.webhook is not None:
                    raise ApiError(409, TERMINATED_BY_WEBHOOK)
                if store.bot(bot.account.token) is not bot:
                    return [], None  # the sandbox was reset meanwhile
                bot.confirm(0, store.now())  # retention only
                ready = [dict(p.update) for p in list(bot.pending)[:limit]]
                left = deadline - time.monotonic()
                if ready or left <= 0:
                    return ready, None
                store.updates_changed.wait(left)
        finally:
            bot.long_polls_waiting -= 1


def set_webhook(call: Call) -> tuple[Any, str | None]:
    # A missing url counts as "" (Client.cpp reads query->arg("url")), which deletes.
    url = str(call.params.get("url", ""))
    bot, store = call.bot, call.store
    if not url:
        return delete_webhook(call)
    secret = call.params.get("secret_token")
    if secret is not None and not _SECRET_RE.match(secret):
        raise bad_request("secret token contains unallowed characters")
    allowed = call.params.get("allowed_updates")
    if allowed is not None and not all(isinstance(a, str) for a in allowed):
        raise bad_request("can't parse allowed updates: expected an Array of String")
    problem = _webhook_url_error(url, store.config.local_mode)
    with store.lock:
        now = store.now()
        if now - bot.last_set_webhook < store.config.set_webhook_min_interval_s:
            raise ApiError.flood(1)  # Client.cpp: next_allowed_set_webhook_date_ = now + 1
        bot.last_set_webhook = now
        if problem:
            raise bad_request(problem)
        max_connections = min(100, max(1, call.params.get("max_connections", 40)))
        certificate = isinstance(call.params.get("certificate"), UploadedFile)
        old = bot.webhook
        if allowed is None and old is not None:
            allowed = old.allowed_updates  # "If not specified, the previous setting will be used."
        if old and old.url == url and old.secret_token == secret and not certificate \
                and not old.has_custom_certificate and old.max_connections == max_connections \
                and not call.params.get("drop_pending_updates"):
            old.allowed_updates = allowed
            return True, "Webhook is already set"
        bot.webhook = Webhook(url=url, secret_token=secret, max_connections=max_connections,
                              allowed_updates=allowed, has_custom_certificate=certificate,
                              ip_address=call.params.get("ip_address"))
        if call.params.get("drop_pending_updates"):
            bot.pending.clear()
        store.updates_changed.notify_all()  # a waiting long poll ends (409)
        pending = bool(bot.pending)
    if pending:
        # What getUpdates did not take goes to the new webhook, in order.
        from .webhook import post_pending

        threading.Thread(target=post_pending, args=(store, call.spec, bot.account.token),
                         name="telegram-pending", daemon=True).start()
    return True, "Webhook was set"


def delete_webhook(call: Call) -> tuple[Any, str | None]:
    with call.store.lock:
        existed = call.bot.webhook is not None
        call.bot.webhook = None
        if call.params.get("drop_pending_updates"):
            call.bot.pending.clear()
        call.store.updates_changed.notify_all()
    return True, "Webhook was deleted" if existed else "Webhook is already deleted"


def get_webhook_info(call: Call) -> tuple[Any, str | None]:
    with call.store.lock:
        webhook = call.bot.webhook
        call.bot.confirm(0, call.store.now())  # retention only
        pending = len(call.bot.pending)
        if webhook is None:
            return {"url": "", "has_custom_certificate": False,
                    "pending_update_count": pending}, None
        info: dict[str, Any] = {"url": webhook.url,
                                "has_custom_certificate": webhook.has_custom_certificate,
                                "pending_update_count": pending}
        if webhook.ip_address:
            info["ip_address"] = webhook.ip_address
        if webhook.last_error_date:
            info["last_error_date"] = webhook.last_error_date
            info["last_error_message"] = webhook.last_error_message
        info["max_connections"] = webhook.max_connections
        if webhook.allowed_updates:
            info["allowed_updates"] = list(webhook.allowed_updates)
    return info, None


HANDLERS: dict[str, Handler] = {
    "getme": get_me,
    "getupdates": get_updates,
    "setwebhook": set_webhook,
    "deletewebhook": delete_webhook,
    "getwebhookinfo": get_webhook_info,
    "sendmessage": send_message,
    "sendphoto": send_photo,
    "senddocument": send_document,
    "answercallbackquery": answer_callback_query,
    "getfile": get_file,
    "sendchataction": send_chat_action,
}
