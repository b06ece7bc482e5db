"""Control API of the MAX sandbox (never faulted, never counted in
``/_stats``): its hooks into the common one (:mod:`sandbox.core.control`)
plus MAX's own. Routes are relative to the mount point (``/sandbox/max``).

``POST /_deliver`` ``{"payload": <an Update>}``
    Any update (a corpus file's; a ``GET /updates`` answer ``{"updates"}``
    posts each): the bot's side is made the demo bot's (a dialog message's
    ``recipient`` is ``{chat_id: <the user's dialog>, chat_type: "dialog",
    user_id: <bot id>}``, a button press's message is the bot's), and the
    sandbox learns from it (a dialog to answer, a stopped or started user, a
    press to answer). Then it is posted as MAX posts it (one Update, the
    secret header) to the subscribed URL, or kept for ``GET /updates`` when
    there is no subscription. Answer: ``{"status", "body", "delivered",
    "error", "queued", "marker", "update"}`` (``status``: the bridge's).
``POST /_customer`` ``{"from", "name"?, "text"?, "reply_to"?, "attachments"?, "mid"?,
"seq"?, "timestamp"?}``
    A real-shaped ``message_created`` from the user in their dialog.
``POST /_start`` ``{"user", "payload"?, "name"?}`` / ``POST /_stop`` ``{"user"}``
    The user starts the bot (through a deep link with ``payload``) / stops
    it: ``bot_started`` / ``bot_stopped`` posted; after a stop, a send to
    them is refused (403 with the sandbox's ``stopped_error``).
``POST /_contact`` ``{"user", "phone", "name"?, "hash"?: "valid"|"wrong"|"none"}``
    The user shares their contact (a ``request_contact`` button): a
    ``message_created`` with a contact whose ``hash`` is the HMAC of the
    vCard under the bot token (or a wrong or no hash).
``POST /_button`` ``{"user", "payload"? | "button"?, "mid"?}``
    The user presses a callback button: the one whose ``payload`` is given,
    or the one labelled ``button``, of the bot's message ``mid`` (default:
    its latest message to them with an inline keyboard); a button the
    message does not have is 409 (MAX sends only what a button carries).
    A ``message_callback`` shaped like the go-stab fixture (answer it with
    ``POST /answers``).
``GET /_sent[?chat_id=][&user_id=]``
    ``{"sent": [...]}``: the bot's messages, oldest first.
``GET /_deliveries[?update_type=]``, ``POST /_flush`` (run every retry now),
``GET /_state``, ``POST /_config``, ``POST /_reset``, ``GET /_stats``,
``GET|POST /_faults``, ``GET|POST /_clock``
    As every sandbox (README "The control API"); ``/_state`` shows the
    subscriptions, the updates kept for polling, the answers and counters.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..core.clock import Clock
from ..core.control import ControlError, Vendor, json_object, json_response
from ..core.faults import FaultPlan
from . import keyboard
from .config import SETTINGS
from .state import Hooks, Store

__all__ = ["EXTENSION", "MaxSandbox", "control"]

EXTENSION = "max_sandbox"

control = Blueprint("max_control", __name__)


def _sandbox() -> MaxSandbox:
    sb: MaxSandbox = current_app.extensions[EXTENSION]
    return sb


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _user_id(body: dict[str, Any], key: str = "user") -> int:
    value = body.get(key)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ControlError(f'"{key}" must be a MAX user id (a positive int64)')
    return value


@dataclass
class MaxSandbox(Vendor):
    """What the routes share (``app.extensions["max_sandbox"]``)."""

    name = "max"
    kind = "channel"

    store: Store
    hooks: Hooks
    faults: FaultPlan
    clock: Clock

    @property
    def lock(self) -> Any:
        return self.store.lock

    # -- /_state, /_config, /_reset -----------------------------------------------------------

    def accounts(self) -> list[dict[str, Any]]:
        return [{"bot_id": self.store.config["bot_id"]}]

    def account_key(self, account: dict[str, Any]) -> Hashable:
        return str(account["bot_id"])

    def find_account(self, selector: str) -> dict[str, Any] | None:
        cfg = self.store.config
        if selector in (str(cfg["bot_id"]), cfg["bot_username"], cfg["token"]):
            return {"bot_id": cfg["bot_id"]}
        return None

    def dump_account(self, account: dict[str, Any]) -> dict[str, Any]:
        store = self.store
        return {
            "bot": store.bot_user(),
            "subscriptions": [
                {k: v for k, v in s.items() if k != "secret"}
                | {"secret_set": bool(s.get("secret"))}
                for s in store.subscriptions
            ],
            "polling": {
                "kept": len(store.queue),
                "next_marker": store.next_marker,
                "committed": store.committed,
            },
            "dialogs": [
                {"chat_id": c, "user_id": u, "stopped": u in store.stopped}
                for c, u in sorted(store.dialogs.items())
            ],
            "stopped": sorted(store.stopped),
            "started": {str(u): p for u, p in store.started.items()},
            "sent": len(store.sent),
            "answers": [dict(a) for a in store.answers],
            "uploads": [
                {"id": u.id, "type": u.type, "done": u.done, "name": u.name, "size": u.size}
                for u in store.uploads.values()
            ],
        }

    def dump_extras(self, account: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "counters": dict(self.store.counters),
            "deliveries": len(self.store.deliveries),
            "retries_pending": len(self.hooks.dispatcher.pending()),
        }

    def get_config(self) -> dict[str, Any]:
        return dict(self.store.config)

    def set_config(self, values: dict[str, Any]) -> None:
        self.store.config = SETTINGS.update(self.store.config, values)

    def reset(self, options: dict[str, Any]) -> None:
        self.hooks.dispatcher.reset()
        self.store.reset()

    # -- /_deliver, /_sent --------------------------------------------------------------------

    def deliver(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = body.get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("updates"), list):
            answers = [self.publish(u) for u in payload["updates"]]
            if not answers:
                raise ControlError("updates is empty")
            return {**answers[-1], "deliveries": answers}
        return self.publish(payload)

    def publish(self, payload: Any) -> dict[str, Any]:
        """Make ``payload`` the demo bot's, learn from it, post or keep it."""
        if not isinstance(payload, dict) or not isinstance(payload.get("update_type"), str):
            raise ControlError(
                '{"payload": <a MAX Update with "update_type">} is required', 400, "invalid_payload"
            )
        update = copy.deepcopy(payload)
        with self.store.lock:
            self._learn(update)
            kept_before = self.store.next_marker
        records = self.hooks.publish(update, now=True)
        if not records:
            return {
                "status": None,
                "body": None,
                "delivered": False,
                "error": None,
                "queued": True,
                "marker": kept_before,
                "update": update,
            }
        first = records[0]
        return {
            "status": first["status"],
            "body": first.get("answer"),
            "delivered": all(r["ok"] for r in records),
            "error": first["error"],
            "queued": False,
            "marker": None,
            "update": update,
        }

    def _learn(self, update: dict[str, Any]) -> None:
        """The bot's side of ``update`` and what it tells (lock held)."""
        store, cfg = self.store, self.store.config
        kind = update["update_type"]
        update.setdefault("timestamp", store.now_ms())
        if kind in ("message_created", "message_edited"):
            msg = update.get("message")
            if not isinstance(msg, dict):
                return
            sender = msg.get("sender") if isinstance(msg.get("sender"), dict) else None
            recipient = msg.setdefault("recipient", {})
            if sender is None or sender.get("is_bot") or not isinstance(recipient, dict):
                return
            user = sender.get("user_id")
            chat = recipient.get("chat_id")
            if not isinstance(user, int):
                return
            store.user(user, sender.get("first_name"), sender.get("last_name"))
            if recipient.get("chat_type") in (None, "dialog") and not (
                isinstance(chat, int) and chat < 0
            ):
                chat = store.dialog(user, chat if isinstance(chat, int) else None)
                recipient.update({"chat_id": chat, "chat_type": "dialog", "user_id": cfg["bot_id"]})
            return
        user_obj = _obj(update.get("user"))
        callback = _obj(update.get("callback"))
        if kind == "message_callback":
            user_obj = _obj(callback.get("user"))
        user = user_obj.get("user_id", update.get("user_id"))
        if not isinstance(user, int):
            return
        given = update.get("chat_id")
        chat = store.dialog(user, given if isinstance(given, int) and given > 0 else None)
        if kind == "message_callback":
            msg = update.get("message")
            if isinstance(msg, dict):
                msg["sender"] = store.bot_user()
                msg["recipient"] = {"chat_id": chat, "chat_type": "dialog", "user_id": user}
            callback_id = callback.get("callback_id")
            if isinstance(callback_id, str):
                store.callbacks[callback_id] = {
                    "chat_id": chat,
                    "user_id": user,
                    "payload": callback.get("payload"),
                }
            return
        if given is None or (isinstance(given, int) and given > 0):
            update["chat_id"] = chat
        if kind == "bot_started":
            store.stopped.discard(user)
            store.started[user] = update.get("payload")
        elif kind == "bot_stopped":
            store.stopped.add(user)

    def sent(self, args: dict[str, str]) -> list[dict[str, Any]]:
        chat, user = args.get("chat_id"), args.get("user_id")
        with self.store.lock:
            return [
                dict(s)
                for s in self.store.sent
                if (chat is None or str(s["chat_id"]) == chat)
                and (user is None or str(s["user_id"]) == user)
            ]

    # -- the convenience forms ----------------------------------------------------------------

    def sender(self, body: dict[str, Any], key: str = "from") -> dict[str, Any]:
        user = _user_id(body, key)
        name = body.get("name")
        first, _, last = (name if isinstance(name, str) and name.strip() else "").partition(" ")
        with self.store.lock:
            return self.store.user(user, first or None, last or None)

    def customer(self, body: dict[str, Any]) -> dict[str, Any]:
        sender = self.sender(body)
        text = body.get("text")
        attachments = body.get("attachments")
        if text is not None and not isinstance(text, str):
            raise ControlError('"text" must be a string')
        if attachments is not None and not isinstance(attachments, list):
            raise ControlError('"attachments" must be a list')
        with self.store.lock:
            message_body: dict[str, Any] = {
                "mid": body.get("mid") or self.store.mid(),
                "seq": body.get("seq") or next(self.store.seq),
                "text": text,
            }
        if attachments:
            message_body["attachments"] = attachments
        message: dict[str, Any] = {
            "sender": sender,
            "recipient": {"chat_type": "dialog"},
            "timestamp": body.get("timestamp") or self.store.now_ms(),
            "body": message_body,
        }
        if isinstance(body.get("reply_to"), str):
            message["link"] = {
                "type": "reply",
                "sender": self.store.bot_user(),
                "message": {"mid": body["reply_to"]},
            }
        update = {
            "message": message,
            "timestamp": message["timestamp"],
            "user_locale": body.get("locale") or "ru",
            "update_type": "message_created",
        }
        return self.publish(update)


def _post(fn: Any) -> Response:
    return json_response(fn(json_object()))


@control.route("/_customer", methods=["POST"])
def customer() -> Response:
    return _post(_sandbox().customer)


@control.route("/_start", methods=["POST"])
def start() -> Response:
    sb = _sandbox()
    body = json_object()
    user = sb.sender(body, "user")
    payload = body.get("payload")
    store = sb.store
    with store.lock:
        limit = int(store.config["deeplink_payload_limit"])
        again = store.config["bot_started_on_repeat"]
        started = user["user_id"] in store.started and user["user_id"] not in store.stopped
    if started and not again:
        return json_response({"status": None, "delivered": False, "skipped": "already started"})
    update: dict[str, Any] = {
        "timestamp": store.now_ms(),
        "user": user,
        "user_locale": "ru",
        "update_type": "bot_started",
    }
    if isinstance(payload, str) and len(payload) <= limit:
        update["payload"] = payload  # longer ones "are omitted and not passed" (FACTS §14)
    return json_response(sb.publish(update))


@control.route("/_stop", methods=["POST"])
def stop() -> Response:
    sb = _sandbox()
    user = sb.sender(json_object(), "user")
    update = {
        "timestamp": sb.store.now_ms(),
        "user": user,
        "user_locale": "ru",
        "update_type": "bot_stopped",
    }
    return json_response(sb.publish(update))


@control.route("/_contact", methods=["POST"])
def contact() -> Response:
    """A ``request_contact`` answer (FACTS §8; schema-built example)."""
    sb = _sandbox()
    body = json_object()
    user = sb.sender(body, "user")
    phone = body.get("phone")
    if not isinstance(phone, str) or not phone.strip():
        raise ControlError('"phone" is required')
    how = body.get("hash", "valid")
    if how not in ("valid", "wrong", "none"):
        raise ControlError('"hash" must be valid, wrong or none')
    store = sb.store
    with store.lock:
        cfg = dict(store.config)
    name = body.get("name") if isinstance(body.get("name"), str) else user["name"]
    vcf = cfg["vcard"].format(name=name, phone=phone.strip())
    payload: dict[str, Any] = {"vcf_info": vcf, "max_info": user}
    if cfg["contact_hash"] == "hmac-sha256" and how != "none":
        key = cfg["token"] if how == "valid" else secrets.token_hex(8)
        payload["hash"] = hmac.new(key.encode(), vcf.encode(), hashlib.sha256).hexdigest()
    return json_response(
        sb.customer(
            {"from": user["user_id"], "attachments": [{"type": "contact", "payload": payload}]}
        )
    )


@control.route("/_button", methods=["POST"])
def button() -> Response:
    sb = _sandbox()
    body = json_object()
    user = sb.sender(body, "user")
    store = sb.store
    with store.lock:
        chat = store.dialog(user["user_id"])
        pressed = _pressed(store.sent, chat, body)
    payload = _pressed_payload(pressed, body)
    now = store.now_ms()
    message = {
        "recipient": {"chat_id": chat, "chat_type": "dialog", "user_id": user["user_id"]},
        "timestamp": int(pressed["time"] * 1000),
        "body": {"mid": pressed["mid"], "seq": pressed["seq"], "text": pressed["text"]},
    }
    update = {
        "callback": {
            "timestamp": now,
            "callback_id": secrets.token_urlsafe(87),
            "user": user,
            "payload": payload,
        },
        "message": message,
        "timestamp": now,
        "user_locale": "ru",
        "update_type": "message_callback",
    }
    return json_response(sb.publish(update))


def _pressed(sent: list[dict[str, Any]], chat: int, body: dict[str, Any]) -> dict[str, Any]:
    """The bot's message in ``chat`` whose button is pressed (lock held)."""
    mine = [s for s in sent if s["chat_id"] == chat and not s.get("deleted")]
    mid = body.get("mid")
    if mid is not None:
        found = next((s for s in mine if s["mid"] == mid), None)
        if found is None:
            raise ControlError(f"the bot sent no message {mid!r} to this user", 404)
        return found
    keyed = [s for s in mine if keyboard.callback_buttons(s["attachments"])]
    if not keyed:
        raise ControlError("the bot sent this user no message with callback buttons", 409)
    return keyed[-1]


def _pressed_payload(message: dict[str, Any], body: dict[str, Any]) -> str:
    buttons = keyboard.callback_buttons(message["attachments"])
    if "button" in body:
        found = next((b for b in buttons if b.get("text") == body["button"]), None)
    else:
        found = next((b for b in buttons if b.get("payload") == body.get("payload")), None)
    if found is None:
        shown = [(b.get("text"), b.get("payload")) for b in buttons]
        raise ControlError(f"message {message['mid']} has no such callback button: {shown}", 409)
    return str(found["payload"])


@control.route("/_deliveries", methods=["GET"])
def deliveries() -> Response:
    kind = request.args.get("update_type")
    found = [
        d
        for d in _sandbox().store.deliveries.list()
        if kind is None or d.get("update_type") == kind
    ]
    return json_response({"deliveries": found})


@control.route("/_flush", methods=["POST"])
def flush() -> Response:
    return json_response({"attempts": _sandbox().hooks.dispatcher.flush()})
