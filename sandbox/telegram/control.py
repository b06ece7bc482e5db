"""Control API of the Telegram sandbox (never faulted, never part of the Bot API):
its hooks into the common one (:mod:`sandbox.core.control`) plus Telegram's own.

Routes are relative to the mount point (``/sandbox/telegram`` in the demo):

``POST /_deliver``
    The customer writes: deliver an Update to a bot's webhook. Either the raw
    form ``{"update": {...}}`` (sent unchanged; ``update_id`` filled in when
    absent, sequential per bot), or the convenience form for humans and curl::

        {"from": {"id": 1001, "first_name": "Anna", "last_name": "K", "username": "anna"},
         "text": "Hello"}
        {"chat_id": 1001, "text": "Hello again"}          # a user the bot already knows
        {"from": {...}, "photo": {"content_base64": "..."}, "caption": "look"}
        {"from": {...}, "document": {"file_name": "a.pdf", "mime_type": "application/pdf",
                                     "content_base64": "..."}}
        {"from": {...}, "callback_data": "yes", "message_id": 7}   # press an inline button
        {"chat_id": 1001, "button": "Buy"}      # press the button labelled "Buy"

    A press (``callback_data`` or ``button``, the label) goes to ``message_id``,
    else to the bot's latest message with an inline keyboard, else to its
    latest message; on a message with a keyboard it must be one of its
    callback buttons (409 otherwise): Telegram sends only what a button
    carries. The ``callback_query`` is answered with ``answerCallbackQuery``.

    Both take ``"token"`` (default: the demo bot), ``"redeliver_on_failure": true``
    (retry a non-2XY answer like Telegram) and ``"files": {"<file_id>": "<base64>"}``
    (bytes for files in the update). Answer: ``{"status", "body", "delivered",
    "update_id", "attempts", "warnings", ...}``. A bot without a webhook that
    called ``getUpdates`` gets the update queued for its next poll (``"queued":
    true, "pending_update_count"``); 409 if the bot has neither.
``GET /_sent[?chat_id=&token=]``        ``{"sent": [...]}`` what bots sent, in order
``GET /_state[?account=<bot id, token or username>]``  per bot (``accounts``):
                                         webhook, chats, answered callback queries,
                                         ``polling`` (getUpdates: queue, calls, conflicts)
``POST /_reset`` ``{"keep_webhooks": false}``   forget all state; the fault plan goes
                                         back to the configured ``faults``
``GET|POST /_config``                    flood limits, bots, chats, timeouts
``GET|POST /_faults``, ``GET /_stats``, ``GET|POST /_clock``  as every sandbox
``GET /_deliveries[?chat_id=&token=]``  ``{"deliveries": [...]}`` every delivery attempt
``GET|POST /_bots``                      list / register ``{"token", "username", "first_name"}``
``POST /_chats`` ``{"chat": {...}, "token"?}``  make a chat known (as if configured)
``POST /_block`` ``{"chat_id", "token"?, "blocked": true}``  the user blocks the bot
``POST /_migrate`` ``{"chat_id", "new_chat_id"?, "token"?}``  group -> supergroup
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..core.clock import Clock
from ..core.control import ControlError, Vendor, json_object
from ..core.faults import FaultPlan
from .spec import BotApiSpec
from .state import DEMO_BOT_TOKEN, TOKEN_RE, BotState, SandboxConfig, Store
from .updates import build_update
from .webhook import deliver

__all__ = ["control", "TelegramSandbox"]

control = Blueprint("telegram_control", __name__)


def _context() -> Any:
    return current_app.extensions["telegram_sandbox"]




def _bots_for(store: Store, token: str | None) -> list[BotState]:
    if token is None:
        return list(store.bots.values())
    bot = store.bot(token)
    if bot is None:
        raise ControlError(f"unknown bot token {token!r}", 404)
    return [bot]


def _default_token(store: Store) -> str:
    if DEMO_BOT_TOKEN in store.bots:
        return DEMO_BOT_TOKEN
    if not store.bots:
        raise ControlError("no bot is registered", 404)
    return next(iter(store.bots))


def _int_arg(args: dict[str, str], name: str) -> int | None:
    value = args.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ControlError(f"{name} must be an integer") from None


def _filtered(entries: list[dict[str, Any]], args: dict[str, str]) -> list[dict[str, Any]]:
    chat_id = _int_arg(args, "chat_id")
    token = args.get("token")
    bot_id = int(token.split(":", 1)[0]) if token and ":" in token else None
    return [e for e in entries
            if (chat_id is None or e.get("chat_id") == chat_id)
            and (bot_id is None or e.get("bot_id") == bot_id)]


def _decode_files(value: Any) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ControlError('"files" must map file_id to base64 content')
    try:
        return {str(k): base64.b64decode(v, validate=True) for k, v in value.items()}
    except (binascii.Error, ValueError, TypeError):
        raise ControlError('"files" values must be base64') from None


@control.get("/_deliveries")
def deliveries() -> Response:
    store = _context().store
    with store.lock:
        entries = store.deliveries.list()
    return jsonify({"deliveries": _filtered(entries, dict(request.args))})


def _bot_view(bot: BotState) -> dict[str, Any]:
    account = bot.account
    return {"id": account.id, "token": account.token, "username": account.username,
            "first_name": account.first_name}


@control.route("/_bots", methods=["GET", "POST"])
def bots() -> tuple[Response, int]:
    store = _context().store
    if request.method == "GET":
        with store.lock:
            return jsonify({"bots": [_bot_view(b) for b in store.bots.values()]}), 200
    body = json_object()
    token = str(body.get("token", ""))
    if not TOKEN_RE.match(token):
        raise ControlError(f"token must look like Telegram's: {TOKEN_RE.pattern}")
    bot = store.register_bot(token, body.get("username"), body.get("first_name"))
    return jsonify({"bot": _bot_view(bot)}), 201


@control.post("/_chats")
def chats() -> tuple[Response, int]:
    store = _context().store
    body = json_object()
    chat = body.get("chat")
    if not isinstance(chat, dict) or not isinstance(chat.get("id"), int):
        raise ControlError('"chat" must be a Chat object with an integer "id"')
    with store.lock:
        for bot in _bots_for(store, body.get("token")):
            bot.remember_chat(chat)
    return jsonify({"chat": chat}), 201


def _chat_id(body: dict[str, Any], name: str = "chat_id") -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(f'"{name}" must be an integer')
    return value


@control.post("/_block")
def block() -> Response:
    store = _context().store
    body = json_object()
    chat_id = _chat_id(body)
    blocked = bool(body.get("blocked", True))
    with store.lock:
        for bot in _bots_for(store, body.get("token")):
            state = bot.chats.get(chat_id) or bot.remember_chat({"id": chat_id})
            state.blocked = blocked
    return jsonify({"chat_id": chat_id, "blocked": blocked})


@control.post("/_migrate")
def migrate() -> Response:
    store = _context().store
    body = json_object()
    old = _chat_id(body)
    if old >= 0:
        raise ControlError("only group chats (negative ids) can be upgraded to supergroups")
    new = _chat_id(body, "new_chat_id") if "new_chat_id" in body else int(f"-100{abs(old)}")
    with store.lock:
        for bot in _bots_for(store, body.get("token")):
            state = bot.chats.get(old) or bot.remember_chat(
                {"id": old, "type": "group", "title": f"Group {old}"})
            state.migrated_to = new
            bot.remember_chat({"id": new, "type": "supergroup",
                               "title": state.chat.get("title", f"Group {old}")})
    return jsonify({"chat_id": old, "new_chat_id": new})


def _find_bot(store: Store, selector: str) -> BotState | None:
    """A bot by token, id or username (with or without ``@``)."""
    if selector in store.bots:
        return store.bots[selector]
    name = selector.removeprefix("@").lower()
    for bot in store.bots.values():
        if str(bot.account.id) == selector or bot.account.username.lower() == name:
            return bot
    return None


@dataclass
class TelegramSandbox(Vendor):
    """The Telegram sandbox: what the routes share (``app.extensions
    ["telegram_sandbox"]``) and its hooks into the common control API."""

    name = "telegram"
    kind = "channel"

    store: Store
    spec: BotApiSpec
    faults: FaultPlan
    clock: Clock

    @property
    def lock(self) -> Any:
        return self.store.lock

    def accounts(self) -> list[BotState]:
        return list(self.store.bots.values())

    def account_key(self, account: BotState) -> Hashable:
        return account.account.id

    def find_account(self, selector: str) -> BotState | None:
        return _find_bot(self.store, selector)

    def dump_account(self, account: BotState) -> dict[str, Any]:
        webhook = account.webhook
        return {
            **_bot_view(account),
            "webhook": None if webhook is None else {
                "url": webhook.url, "has_secret_token": bool(webhook.secret_token),
                "max_connections": webhook.max_connections,
                "allowed_updates": webhook.allowed_updates,
                "last_error_message": webhook.last_error_message},
            "chats": [{**c.chat, "blocked": c.blocked, "migrated_to": c.migrated_to,
                       "next_message_id": c.next_message_id} for c in account.chats.values()],
            "callback_answers": list(account.callback_answers),
            "polling": {
                "active": account.polling,
                "pending_update_count": len(account.pending),
                "pending_update_ids": [p.update_id for p in account.pending],
                "allowed_updates": account.poll_allowed_updates,
                "waiting": account.long_polls_waiting > 0,
                "get_updates_calls": account.get_updates_calls,
                "conflicts": account.poll_conflicts,
            },
        }

    def get_config(self) -> dict[str, Any]:
        return self.store.config.to_dict()

    def set_config(self, values: dict[str, Any]) -> None:
        new = SandboxConfig.from_dict(values, base=self.store.config)
        self.store.apply_config(new)
        if "faults" in values:
            self.faults.update(new.faults)

    def reset(self, options: dict[str, Any]) -> None:
        self.store.reset(keep_webhooks=bool(options.get("keep_webhooks")))
        self.faults.update({"reset": True, **self.store.config.faults})

    def deliver(self, body: dict[str, Any]) -> dict[str, Any]:
        store = self.store
        token = body.get("token") or _default_token(store)
        bot = store.bot(token)
        if bot is None:
            raise ControlError(f"unknown bot token {token!r}; register it with POST /_bots", 404)
        files = _decode_files(body.get("files"))
        if "update" in body:
            update = body["update"]
            if not isinstance(update, dict):
                raise ControlError('"update" must be a JSON object (an Update)')
        else:
            if bot.webhook is None and not bot.polling:
                raise ControlError("the bot has no webhook and nobody calls getUpdates: call "
                                   "setWebhook (or getUpdates) first", 409)
            update = build_update(store, bot, body)
        return deliver(store, self.spec, token, update,
                       redeliver=bool(body.get("redeliver_on_failure")), files=files)

    def sent(self, args: dict[str, str]) -> list[dict[str, Any]]:
        with self.store.lock:
            entries = list(self.store.sent)
        return _filtered(entries, args)
