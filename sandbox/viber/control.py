"""Control API of the Viber sandbox (never faulted, never counted in ``/_stats``):
its hooks into the common one (:mod:`sandbox.core.control`) plus Viber's own.

Routes are relative to the mount point (``/sandbox/viber`` in the demo). A
``"bot"`` field (a bot id, URI or token) picks a bot; the default is the
first (the demo's).

``POST /_deliver`` ``{"payload": <a callback body>, "bot"?, "message_token"?}``
    Any callback (the corpus' ``unicode_request.json``, a built one), signed
    with the bot's token as Viber signs it and posted to its webhook.
    ``timestamp`` is filled in when missing; ``message_token`` is ``"keep"``,
    ``"unique"`` (a new one) or ``"auto"`` (default: kept when given). The
    sandbox learns from it (a ``message`` subscribes its sender, FACTS §4;
    ``subscribed`` / ``unsubscribed`` change the subscription). Answers
    ``{"status", "body", "delivered", "error", "payload"}`` (``status`` /
    ``body``: the bridge's answer; a ``conversation_started`` answered with a
    welcome message is recorded in ``/_state``'s ``welcomes``); 409
    ``no_webhook`` before ``set_webhook``.
``POST /_customer`` ``{"from": <user id>, "name"?, "text"?, "type"?, ...}``
    A real-shaped ``message`` callback from that user (``type`` text by
    default; the message's other fields as given).
``POST /_press`` ``{"from": <user id>, "body": <ActionBody>, "bot"?}``
    The user taps a ``reply`` button of the keyboard the bot showed them last
    ("The client will always display the last keyboard that was sent to
    it", the keyboards page): the ``message`` callback Viber sends for it, a
    text message whose ``text`` is the button's ``ActionBody``, with the
    ``tracking_data`` of the message that carried the keyboard ("passed
    back with user's reply", REST docs) and ``silent`` as the button's
    ``Silent`` (UNCONFIRMED). Whether a later message without a keyboard
    hides it is UNCONFIRMED: the sandbox keeps the last one. 409
    ``no_keyboard`` when none was sent, 400 ``unknown_button`` for a body it
    does not show.
``POST /_open`` ``{"user", "name"?, "context"?}``
    The user opens the chat (``conversation_started``, with a deep link's
    ``context``).
``POST /_subscribe`` / ``POST /_unsubscribe`` ``{"user", "name"?, "callback"?}``
    The user subscribes / unsubscribes: the subscription changes (status 6
    after an unsubscribe, until they write again) and the callback is posted
    (``"callback": false``: not posted, as if it were lost for good).
``GET /_sent[?receiver=][&bot=]``
    ``{"sent": [...]}``: what the bot sent, oldest first: ``message_token``,
    ``receiver``, ``type``, ``text``, ``media``, ``file_name``, ``size``,
    ``tracking_data``, ``sender``, ``body``, ``time``.
``GET /_deliveries[?event=][&kind=]``
    ``{"deliveries": [...]}``: every POST to a webhook (attempt, status, answer,
    payload).
``POST /_flush``
    Run every scheduled retry now (Viber's hour of retries, compressed).
``GET /_state[?account=<bot>]``, ``POST /_reset``, ``GET /_stats``,
``GET|POST /_faults``, ``GET|POST /_clock``, ``GET|POST /_config``
    As every sandbox (README "The control API").
"""

from __future__ import annotations

import copy
import json
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..core.clock import Clock
from ..core.control import ControlError, Vendor, json_object, json_response
from ..core.faults import FaultPlan
from .callbacks import Callbacks
from .config import SETTINGS
from .state import Store

__all__ = ["EXTENSION", "ViberSandbox", "control"]

EXTENSION = "viber_sandbox"

control = Blueprint("viber_control", __name__)


def _sandbox() -> ViberSandbox:
    sb: ViberSandbox = current_app.extensions[EXTENSION]
    return sb


def _user(body: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, str) and 0 < len(value) <= 64:
            return value
        raise ControlError(f'"{key}" must be a Viber user id (a string)')
    raise ControlError(f'"{keys[0]}" (a Viber user id) is required')


@dataclass
class ViberSandbox(Vendor):
    """What the routes share (``app.extensions["viber_sandbox"]``) and the
    hooks into the common control API."""

    name = "viber"
    kind = "channel"

    store: Store
    callbacks: Callbacks
    faults: FaultPlan
    clock: Clock

    @property
    def lock(self) -> Any:
        return self.store.lock

    # -- /_state ------------------------------------------------------------------------------

    def accounts(self) -> list[dict[str, Any]]:
        return self.store.bots()

    def account_key(self, account: dict[str, Any]) -> Hashable:
        return str(account["id"])

    def find_account(self, selector: str) -> dict[str, Any] | None:
        return self.store.find_bot(selector)

    def dump_account(self, account: dict[str, Any]) -> dict[str, Any]:
        store = self.store
        bot_id = account["id"]
        return {
            **{k: v for k, v in account.items() if k != "auth_token"},
            "webhook": store.webhooks.get(bot_id),
            "subscriptions": {
                u: s for (b, u), s in sorted(store.subscriptions.items()) if b == bot_id
            },
            "sent": sum(1 for r in store.sent if r["bot"] == bot_id),
        }

    def dump_extras(self, account: dict[str, Any] | None) -> dict[str, Any]:
        store = self.store
        return {
            "deliveries": len(store.deliveries),
            "retries_pending": len(self.callbacks.dispatcher.pending()),
            "in_flight": self.callbacks.dispatcher.in_flight,
            "users": [dict(u) for u in store.users.values()],
            "welcomes": [dict(w) for w in store.welcomes],
            "counters": dict(store.counters),
        }

    # -- /_config, /_reset --------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return dict(self.store.config)

    def set_config(self, values: dict[str, Any]) -> None:
        self.store.config = SETTINGS.update(self.store.config, values)
        if "users" in values:
            self.store._seed_users()
        if "seed" in values:
            self.store.rng.seed(self.store.config["seed"])

    def reset(self, options: dict[str, Any]) -> None:
        self.callbacks.dispatcher.reset()
        self.store.reset()

    # -- helpers ------------------------------------------------------------------------------

    def bot(self, selector: Any) -> dict[str, Any]:
        with self.store.lock:
            found = (
                self.store.bots()[0]
                if selector in (None, "")
                else self.store.find_bot(str(selector))
            )
        if found is None:
            raise ControlError(f"unknown bot {selector}", 404, "account_not_found")
        return dict(found)

    def statuses_after_send(self, bot: dict[str, Any], receiver: str, token: int) -> None:
        """``delivered`` then ``seen`` (switches), maybe twice or reordered."""
        store = self.store
        with store.lock:
            cfg = store.config
            names = [n for n in ("delivered", "seen") if cfg[n]]
            if len(names) == 2 and store.rng.random() < cfg["status_reorder_rate"]:
                names.reverse()
            names += [n for n in names if store.rng.random() < cfg["status_duplicate_rate"]]
            events = [
                {
                    "event": n,
                    "timestamp": store.millis(),
                    "message_token": token,
                    "user_id": receiver,
                }
                for n in names
            ]
        if events:
            self.callbacks.post_later(bot, events, {"kind": "status"})

    def _learn(self, bot_id: str, event: dict[str, Any]) -> None:
        """What a callback tells the sandbox (lock held)."""
        store = self.store
        kind = event.get("event")
        person = event.get("sender") if kind == "message" else event.get("user")
        if isinstance(person, dict) and isinstance(person.get("id"), str):
            store.remember_user(
                person["id"],
                **{k: person.get(k) for k in ("name", "avatar", "language", "country")},
            )
        user_id = person.get("id") if isinstance(person, dict) else event.get("user_id")
        if not isinstance(user_id, str):
            return
        if kind in ("message", "subscribed"):
            store.set_subscription(bot_id, user_id, "subscribed")
        elif kind == "unsubscribed":
            store.set_subscription(bot_id, user_id, "unsubscribed")

    # -- /_deliver ----------------------------------------------------------------------------

    def deliver(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = body.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
            raise ControlError(
                '{"payload": <a Viber callback body with "event">} is required',
                400,
                "invalid_payload",
            )
        mode = body.get("message_token", "auto")
        if mode not in ("keep", "unique", "auto"):
            raise ControlError('"message_token" must be "keep", "unique" or "auto"')
        bot = self.bot(body.get("bot"))
        event = copy.deepcopy(payload)
        store = self.store
        with store.lock:
            if not store.webhooks.get(bot["id"]):
                raise ControlError(
                    "no webhook set: the bot's set_webhook comes first (bridge viber connect)",
                    409,
                    "no_webhook",
                )
            if not isinstance(event.get("timestamp"), int):
                event["timestamp"] = store.millis()
            if mode == "unique" or (mode == "auto" and "message_token" not in event):
                event["message_token"] = store.token()
            self._learn(bot["id"], event)
        record = self.callbacks.post_now(bot, event, {"kind": "deliver"})
        answer = record.get("answer")
        if event["event"] == "conversation_started" and record["ok"] and answer:
            try:
                welcome = json.loads(answer)
            except ValueError:
                welcome = None
            if isinstance(welcome, dict) and welcome.get("type"):
                with store.lock:
                    store.welcomes.append(
                        {
                            "bot": bot["id"],
                            "receiver": _user_of(event),
                            "message": welcome,
                            "time": store.now(),
                        }
                    )
        return {
            "status": record["status"],
            "body": answer,
            "delivered": record["ok"],
            "error": record["error"],
            "payload": event,
        }

    def sent(self, args: dict[str, str]) -> list[dict[str, Any]]:
        receiver, bot = args.get("receiver"), args.get("bot")
        bot_id = self.bot(bot)["id"] if bot else None
        with self.store.lock:
            return [
                dict(r)
                for r in self.store.sent
                if (not receiver or r["receiver"] == receiver)
                and (not bot_id or r["bot"] == bot_id)
            ]

    # -- built callbacks ----------------------------------------------------------------------

    def customer(self, body: dict[str, Any]) -> dict[str, Any]:
        user = _user(body, "from", "user")
        known = self.store.remember_user(user, name=body.get("name"))
        message = {k: v for k, v in body.items() if k not in ("from", "user", "name", "bot")}
        message.setdefault("type", "text")
        if message["type"] == "text" and not isinstance(message.get("text"), str):
            raise ControlError('"text" (a string) is required for a text message')
        payload = {
            "event": "message",
            "sender": _sender(known),
            "message": message,
            "silent": False,
        }
        return self.deliver({"payload": payload, "bot": body.get("bot")})

    def press(self, body: dict[str, Any]) -> dict[str, Any]:
        """The user presses a keyboard button (``/_press``)."""
        user = _user(body, "from", "user")
        bot = self.bot(body.get("bot"))
        shown = self._keyboard_of(bot["id"], user)
        wanted = body.get("body")
        button = next(
            (
                b
                for b in shown["body"]["keyboard"]["Buttons"]
                if b.get("ActionType", "reply") == "reply" and b.get("ActionBody") == wanted
            ),
            None,
        )
        if button is None or not isinstance(wanted, str):
            bodies = [b.get("ActionBody") for b in shown["body"]["keyboard"]["Buttons"]]
            raise ControlError(
                f'"body" must be the ActionBody of a reply button shown: {bodies}',
                400,
                "unknown_button",
            )
        message: dict[str, Any] = {"type": "text", "text": wanted}
        if shown.get("tracking_data") is not None:
            message["tracking_data"] = shown["tracking_data"]
        payload = {
            "event": "message",
            "sender": _sender(self.store.remember_user(user, name=body.get("name"))),
            "message": message,
            "silent": button.get("Silent") is True,
        }
        return self.deliver({"payload": payload, "bot": bot["id"]})

    def _keyboard_of(self, bot_id: str, user: str) -> dict[str, Any]:
        """The last message with a keyboard the bot sent to ``user``."""
        with self.store.lock:
            for record in reversed(self.store.sent):
                if (
                    record["bot"] == bot_id
                    and record["receiver"] == user
                    and isinstance(record["body"].get("keyboard"), dict)
                ):
                    return dict(record)
        raise ControlError("the bot has sent this user no keyboard", 409, "no_keyboard")

    def opened(self, body: dict[str, Any]) -> dict[str, Any]:
        user = _user(body, "user", "from")
        known = self.store.remember_user(user, name=body.get("name"))
        with self.store.lock:
            subscribed = self.store.subscription(self.bot(body.get("bot"))["id"], user)
        payload: dict[str, Any] = {
            "event": "conversation_started",
            "type": "open",
            "user": _sender(known),
            "subscribed": subscribed == "subscribed",
        }
        if isinstance(body.get("context"), str):
            payload["context"] = body["context"]
        return self.deliver({"payload": payload, "bot": body.get("bot")})

    def subscription_event(self, body: dict[str, Any], subscribed: bool) -> dict[str, Any]:
        user = _user(body, "user", "from")
        known = self.store.remember_user(user, name=body.get("name"))
        if body.get("callback", True) is False:
            # the subscription changes at Viber, the bot is not told (a
            # callback lost for good): only a send finds out (status 6)
            bot = self.bot(body.get("bot"))
            self.store.set_subscription(
                bot["id"], user, "subscribed" if subscribed else "unsubscribed"
            )
            return {
                "status": None,
                "body": None,
                "delivered": False,
                "error": None,
                "payload": None,
            }
        payload: dict[str, Any] = (
            {"event": "subscribed", "user": _sender(known)}
            if subscribed
            else {"event": "unsubscribed", "user_id": user}
        )
        return self.deliver({"payload": payload, "bot": body.get("bot")})


def _sender(user: dict[str, Any]) -> dict[str, Any]:
    return {k: user.get(k) for k in ("id", "name", "avatar", "language", "country", "api_version")}


def _user_of(event: dict[str, Any]) -> Any:
    person = event.get("user") or event.get("sender")
    return person.get("id") if isinstance(person, dict) else event.get("user_id")


@control.post("/_customer")
def customer() -> Response:
    return json_response(_sandbox().customer(json_object()))


@control.post("/_press")
def press() -> Response:
    return json_response(_sandbox().press(json_object()))


@control.post("/_open")
def opened() -> Response:
    return json_response(_sandbox().opened(json_object()))


@control.post("/_subscribe")
def subscribe() -> Response:
    return json_response(_sandbox().subscription_event(json_object(), True))


@control.post("/_unsubscribe")
def unsubscribe() -> Response:
    return json_response(_sandbox().subscription_event(json_object(), False))


@control.get("/_deliveries")
def deliveries() -> Response:
    kind, event = request.args.get("kind"), request.args.get("event")
    items = [
        d
        for d in _sandbox().store.deliveries.list()
        if (not kind or d.get("kind") == kind) and (not event or d.get("event") == event)
    ]
    return json_response({"deliveries": items})


@control.post("/_flush")
def flush() -> Response:
    return json_response({"ran": len(_sandbox().callbacks.dispatcher.flush())})
