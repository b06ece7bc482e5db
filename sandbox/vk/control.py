"""Control API of the VK sandbox (never faulted, never counted in ``/_stats``):
its hooks into the common one (:mod:`sandbox.core.control`) plus VK's own.

Routes are relative to the mount point (``/sandbox/vk`` in the demo). A
``"community"`` field (a group id, ``club<id>``, screen name) picks a
community; the default is the first (the demo's).

``GET|POST /_config``
    The community (``group_id``, ``name``, ``screen_name``, ``access_token``,
    ``secret``, ``confirmation``, ``server_url``, ``v``), more ``communities``,
    ``users``, the limits and switches (:mod:`.config` documents every key).
    A changed ``server_url`` waits for confirmation again.
``POST /_connect`` (alias ``/_verify``) ``{"server_url"?, "community"?}``
    The confirmation handshake against the server address (``server_url``
    sets it first, as an admin does in the community's settings): ``{"ok",
    "status", "body", "expected", "url", "sent", "error", "server"}``;
    ``ok`` when the server answered 200 with the confirmation string. The
    server's status becomes ``ok`` or ``failed``.
``POST /_deliver`` ``{"payload": <a callback body>, "community"?, "event_id"?}``
    Any event (a corpus file's; a Bots Long Poll answer ``{"ts", "updates"}``
    posts each update): ``group_id`` and ``secret`` become the community's,
    ``v`` is kept (or the server's), ``event_id`` is ``"keep"``, ``"unique"``
    (a new one) or ``"auto"`` (default: kept unless the sandbox already
    posted it). The sandbox learns from it (a ``message_new`` lets the
    community answer its sender; ``message_allow``/``message_deny`` change the
    permission; a ``message_event`` can be answered). Posted as VK would (the
    server confirmed first when ``auto_confirm``): ``{"status", "body",
    "delivered", "error", "event_id", "payload"}`` (``status``/``body``: the
    bridge's answer); 409 ``not_connected`` / ``not_confirmed``.
``POST /_customer`` ``{"from": <user id>, "name"?, "text"?, "payload"?,
"attachments"?, "peer_id"?, "reply_to"?, "community"?}``
    A real-shaped ``message_new``; adds ``message_id``,
    ``conversation_message_id``, ``peer_id``.
``POST /_allow`` ``{"user", "key"?}`` / ``POST /_deny`` ``{"user"}``
    The user allows / forbids messages from the community: the permission
    changes (901 after a deny) and ``message_allow`` / ``message_deny`` is posted.
``POST /_button`` ``{"user", "payload"?, "peer_id"?, "conversation_message_id"?}``
    A callback button pressed: a ``message_event`` (answer it with
    ``messages.sendMessageEventAnswer``; the answers show in ``/_state``).
``POST /_button`` ``{"user", "label" | "index", "message_id"?, "peer_id"?}``
    A button of a keyboard the community sent pressed (the last message to
    the peer with one, or ``message_id``; ``index`` counts row by row from
    0): a callback button posts its ``message_event`` (the button's payload,
    the message's ``conversation_message_id``), a text button a
    ``message_new`` with the label as text and the button's ``payload``;
    ``pressed`` says which action it was.
``POST /_user`` ``{"user", "first_name"?, "last_name"?, "screen_name"?,
"blacklisted"?, "privacy"?, "allowed"?}``
    A user's name (``users.get``) and flags: 900 / 902 / allowed to write.
``GET|POST /_inject`` ``{"method", "error_code", "error_msg"?, "times"?}``
    The next ``times`` (1) calls of ``method`` (``"*"``: any) answer that VK
    error (9, 10, 29, 900, ...); ``{"clear": true}`` forgets them.
``GET /_sent[?peer_id=][&community=]``
    ``{"sent": [...]}``: the bridge's messages, oldest first: ``message_id``,
    ``conversation_message_id``, ``group_id``, ``peer_id``, ``random_id``,
    ``message``, ``attachment``, ``reply_to``, ``keyboard``, ``payload``,
    ``params``, ``time``, ``repeats`` (sends refused as repeats of its
    ``random_id``), ``echo`` (the message_reply posts' answers).
``GET /_deliveries[?type=][&kind=][&event_id=]``
    ``{"deliveries": [...]}``: every POST to a server (attempt,
    ``retry_counter``, status, answer, payload).
``POST /_flush``
    Run every scheduled retry now.
``GET /_state[?account=<group id>]``, ``POST /_reset``, ``GET /_stats``,
``GET|POST /_faults``, ``GET|POST /_clock``
    As every sandbox (README "The control API").
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..core.clock import Clock
from ..core.control import ControlError, Vendor, as_bool, json_object, json_response
from ..core.faults import FaultPlan
from .callback import Callbacks, envelope
from .config import SETTINGS, version_tuple
from .state import Store, new_event_id

__all__ = ["VkSandbox", "control", "EXTENSION", "CLIENT_INFO"]

EXTENSION = "vk_sandbox"

control = Blueprint("vk_control", __name__)

#: message_new.object.client_info as today's clients send it (corpus *_5_118.json)
CLIENT_INFO: dict[str, Any] = {
    "button_actions": [
        "text",
        "vkpay",
        "open_app",
        "location",
        "open_link",
        "callback",
        "intent_subscribe",
        "intent_unsubscribe",
    ],
    "keyboard": True,
    "inline_keyboard": True,
    "carousel": True,
    "lang_id": 0,
}
_ORDER = ("type", "object", "group_id", "event_id", "v", "secret")


def _sandbox() -> VkSandbox:
    sb: VkSandbox = current_app.extensions[EXTENSION]
    return sb


def _user_id(body: dict[str, Any], *keys: str) -> int:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        raise ControlError(f'"{key}" must be a VK user id (a positive integer)')
    raise ControlError(f'"{keys[0]}" (a VK user id) is required')


def _pick_button(keyboard: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The action of the button ``label`` (its text) or ``index`` (0-based,
    row by row) names."""
    actions = [b["action"] for row in keyboard.get("buttons", []) for b in row]
    if "label" in body:
        found = [a for a in actions if a.get("label") == body["label"]]
        if not found:
            shown = ", ".join(repr(a.get("label")) for a in actions)
            raise ControlError(
                f"no button labelled {body['label']!r} (there are {shown})", 404, "button_not_found"
            )
        return dict(found[0])
    index = body["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(actions):
        raise ControlError(
            f'"index" must be 0-{len(actions) - 1} (the buttons, row by row)',
            404,
            "button_not_found",
        )
    return dict(actions[index])


@dataclass
class VkSandbox(Vendor):
    """What the routes share (``app.extensions["vk_sandbox"]``) and the hooks
    into the common control API."""

    name = "vk"
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
        return self.store.communities()

    def account_key(self, account: dict[str, Any]) -> Hashable:
        return str(account["group_id"])

    def find_account(self, selector: str) -> dict[str, Any] | None:
        return self.store.find_community(selector)

    def dump_account(self, account: dict[str, Any]) -> dict[str, Any]:
        store = self.store
        gid = account["group_id"]
        return {
            **{k: v for k, v in account.items() if k != "access_token"},
            "server": store.servers[gid].dump(store.now()),
            "permissions": {
                str(u): s for (g, u), s in sorted(store.permissions.items()) if g == gid
            },
            "conversations": [
                {"peer_id": peer, "messages": len(msgs)}
                for (g, peer), msgs in sorted(store.history.items())
                if g == gid
            ],
            "sent": sum(1 for r in store.sent if r["group_id"] == gid),
            "random_ids": sum(1 for k in store.random_ids if k[0] == gid),
            "button_events": [
                {"event_id": e, **v} for e, v in store.button_events.items() if v["group_id"] == gid
            ],
        }

    def dump_extras(self, account: dict[str, Any] | None) -> dict[str, Any]:
        store = self.store
        return {
            "deliveries": len(store.deliveries),
            "retries_pending": len(self.callbacks.dispatcher.pending()),
            "in_flight": self.callbacks.dispatcher.in_flight,
            "users": [dict(u) for u in store.users.values()],
            "injected": [dict(r) for r in store.injected],
            "counters": dict(store.counters),
        }

    # -- /_config, /_reset --------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return dict(self.store.config)

    def set_config(self, values: dict[str, Any]) -> None:
        new = SETTINGS.update(self.store.config, values)
        self.store.config = new
        self.store.sync_servers()
        if "users" in values:
            self.store._seed_users()
        if "seed" in values:
            self.store.rng.seed(new["seed"])

    def reset(self, options: dict[str, Any]) -> None:
        self.callbacks.dispatcher.reset()
        self.store.reset()

    # -- helpers ------------------------------------------------------------------------------

    def community(self, selector: Any) -> dict[str, Any]:
        with self.store.lock:
            if selector in (None, ""):
                return dict(self.store.default_community())
            found = self.store.find_community(str(selector))
        if found is None:
            raise ControlError(f"unknown community {selector}", 404, "account_not_found")
        return dict(found)

    def set_server_url(self, group_id: int, url: str) -> None:
        with self.store.lock:
            cfg = self.store.config
            if cfg["group_id"] == group_id:
                self.set_config({"server_url": url})
                return
            items = [dict(c) for c in cfg["communities"]]
            for item in items:
                if item["group_id"] == group_id:
                    item["server_url"] = url
            self.set_config({"communities": items})

    def ensure_confirmed(self, group_id: int) -> None:
        """409 unless the server is confirmed (``auto_confirm``: confirm it now)."""
        with self.store.lock:
            server = self.store.servers[group_id]
            url, status = server.url, server.status
            auto = self.store.config["auto_confirm"]
        if not url:
            raise ControlError(
                'no server_url: POST /_config {"server_url": "<the bridge\'s VK '
                'callback URL>"} (or /_connect with it) first',
                409,
                "not_connected",
            )
        if status == "ok":
            return
        if not auto:
            raise ControlError(
                f"the server is not confirmed ({status}): POST /_connect", 409, "not_confirmed"
            )
        result = self.callbacks.confirm(group_id)
        if not result["ok"]:
            raise ControlError(
                f"the server failed the confirmation: {result['error']}", 409, "not_confirmed"
            )

    def post(
        self, community: dict[str, Any], event: dict[str, Any], what: dict[str, Any]
    ) -> dict[str, Any]:
        gid = community["group_id"]
        self.ensure_confirmed(gid)
        record = self.callbacks.post_now(gid, event, what)
        return {
            "status": record["status"],
            "body": record.get("answer"),
            "delivered": record["ok"],
            "error": record["error"],
            "event_id": event["event_id"],
            "payload": event,
        }

    # -- /_deliver ----------------------------------------------------------------------------

    def deliver(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise ControlError('{"payload": <a VK callback body>} is required')
        mode = body.get("event_id", "auto")
        if mode not in ("keep", "unique", "auto"):
            raise ControlError('"event_id" must be "keep", "unique" or "auto"')
        community = self.community(body.get("community"))
        if isinstance(payload.get("updates"), list):
            answers = [self._deliver_one(u, community, mode) for u in payload["updates"]]
            if not answers:
                raise ControlError("updates is empty")
            last = answers[-1]
            return {
                **last,
                "delivered": all(a["delivered"] for a in answers),
                "deliveries": answers,
            }
        return self._deliver_one(payload, community, mode)

    def _deliver_one(self, payload: Any, community: dict[str, Any], mode: str) -> dict[str, Any]:
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            raise ControlError(
                'a callback body is an object with "type" and "object"', 400, "invalid_payload"
            )
        if payload["type"] == "confirmation":
            raise ControlError(
                "the confirmation event is the handshake: POST /_connect", 400, "invalid_payload"
            )
        event = copy.deepcopy(payload)
        event["group_id"] = community["group_id"]
        if community.get("secret"):
            event["secret"] = community["secret"]
        else:
            event.pop("secret", None)
        if not isinstance(event.get("v"), str):
            event["v"] = community["v"]
        store = self.store
        with store.lock:
            posted = {d.get("event_id") for d in store.deliveries.list()}
            given = event.get("event_id")
            if (
                mode == "unique"
                or not isinstance(given, str)
                or not given
                or (mode == "auto" and given in posted)
            ):
                event["event_id"] = new_event_id()
            self._learn(community["group_id"], event)
        ordered = {k: event[k] for k in _ORDER if k in event}
        ordered.update({k: v for k, v in event.items() if k not in ordered})
        return self.post(community, ordered, {"kind": "deliver"})

    def _learn(self, gid: int, event: dict[str, Any]) -> None:
        """What an event tells the sandbox (lock held)."""
        store = self.store
        kind, obj = event["type"], event.get("object")
        if not isinstance(obj, dict):
            return
        if kind == "message_new":
            inner = obj.get("message")
            message: dict[str, Any] = inner if isinstance(inner, dict) else obj
            store.learn_inbound(gid, copy.deepcopy(message))
        elif kind in ("message_allow", "message_deny") and isinstance(obj.get("user_id"), int):
            store.set_permission(
                gid, obj["user_id"], "allowed" if kind == "message_allow" else "denied"
            )
        elif kind == "message_event" and isinstance(obj.get("event_id"), str):
            store.button_events[obj["event_id"]] = {
                "group_id": gid,
                "user_id": obj.get("user_id"),
                "peer_id": obj.get("peer_id"),
                "payload": obj.get("payload"),
                "answers": [],
            }

    # -- /_customer, /_allow, /_deny, /_button ------------------------------------------------

    def customer(self, body: dict[str, Any]) -> dict[str, Any]:
        user = _user_id(body, "from", "user")
        community = self.community(body.get("community"))
        gid = community["group_id"]
        peer = body.get("peer_id", user)
        if isinstance(peer, bool) or not isinstance(peer, int) or peer <= 0:
            raise ControlError('"peer_id" must be the user id or 2000000000 + a chat id')
        text = body.get("text", "")
        if not isinstance(text, str):
            raise ControlError('"text" must be a string')
        attachments = body.get("attachments", [])
        if not isinstance(attachments, list):
            raise ControlError('"attachments" must be a list of VK attachment objects')
        payload = body.get("payload")
        if not text and not attachments and payload is None:
            raise ControlError('a "text" (or "attachments", "payload") is required')
        self.ensure_confirmed(gid)
        name = body.get("name")
        if name is not None:
            first, _, last = str(name).strip().partition(" ")
            self.store.remember_user(user, first_name=first or None, last_name=last or None)
        store = self.store
        with store.lock:
            mid, cmid = store.allocate(gid, peer, inbound=True)
            message: dict[str, Any] = {
                "date": int(store.now()),
                "from_id": user,
                "id": mid,
                "out": 0,
                "peer_id": peer,
                "text": text,
                "conversation_message_id": cmid,
                "fwd_messages": [],
                "important": False,
                "random_id": 0,
                "attachments": attachments,
                "is_hidden": False,
            }
            if payload is not None:
                message["payload"] = (
                    payload
                    if isinstance(payload, str)
                    else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
                )
            reply_to = body.get("reply_to")
            if isinstance(reply_to, int) and not isinstance(reply_to, bool):
                original = store.find_message(gid, reply_to)
                if original is None:
                    raise ControlError(
                        f"no message {reply_to} in this community", 404, "message_not_found"
                    )
                message["reply_message"] = {
                    k: original[k]
                    for k in (
                        "date",
                        "from_id",
                        "text",
                        "attachments",
                        "conversation_message_id",
                        "peer_id",
                        "id",
                    )
                    if k in original
                }
            store.learn_inbound(gid, copy.deepcopy(message))
        obj: Any = {"message": message, "client_info": dict(CLIENT_INFO)}
        if version_tuple(community["v"]) < (5, 103):
            obj = message  # before 5.103 the object was the message (FACTS §3)
        answer = self.post(community, envelope(community, "message_new", obj), {"kind": "customer"})
        return {"message_id": mid, "conversation_message_id": cmid, "peer_id": peer, **answer}

    def permission_event(self, body: dict[str, Any], allow: bool) -> dict[str, Any]:
        user = _user_id(body, "user", "from", "user_id")
        community = self.community(body.get("community"))
        gid = community["group_id"]
        self.ensure_confirmed(gid)
        self.store.set_permission(gid, user, "allowed" if allow else "denied")
        obj: dict[str, Any] = {"user_id": user}
        if allow:
            obj["key"] = str(body.get("key", ""))
        kind = "message_allow" if allow else "message_deny"
        return self.post(community, envelope(community, kind, obj), {"kind": kind})

    def button(self, body: dict[str, Any]) -> dict[str, Any]:
        user = _user_id(body, "user", "from", "user_id")
        community = self.community(body.get("community"))
        gid = community["group_id"]
        peer = body.get("peer_id", user)
        if isinstance(peer, bool) or not isinstance(peer, int) or peer <= 0:
            raise ControlError('"peer_id" must be a positive integer')
        if "label" in body or "index" in body:
            return self.press(body, user, community, peer)
        payload = body.get("payload", {})
        self.ensure_confirmed(gid)
        store = self.store
        with store.lock:
            as_string = store.config["event_payload"] == "string"
            history = store.history.get((gid, peer), [])
            last_out = next((m for m in reversed(history) if m.get("out") == 1), None)
        cmid = body.get("conversation_message_id")
        if cmid is None and last_out is not None:
            cmid = last_out["conversation_message_id"]
        event_id = secrets.token_hex(6)  # 12 hex digits (corpus message_event_payload)
        obj: dict[str, Any] = {
            "user_id": user,
            "peer_id": peer,
            "event_id": event_id,
            "payload": json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
            if as_string and not isinstance(payload, str)
            else payload,
        }
        if cmid is not None:
            obj["conversation_message_id"] = cmid
        with store.lock:
            store.button_events[event_id] = {
                "group_id": gid,
                "user_id": user,
                "peer_id": peer,
                "payload": payload,
                "answers": [],
            }
        answer = self.post(community, envelope(community, "message_event", obj), {"kind": "button"})
        return {"button_event_id": event_id, **answer}

    def press(
        self, body: dict[str, Any], user: int, community: dict[str, Any], peer: int
    ) -> dict[str, Any]:
        """A button of a keyboard the community sent to ``peer`` pressed, as
        VK reports it: a callback button -> ``message_event`` with the
        button's payload (an object, or the string under ``event_payload:
        string``) and the message's ``conversation_message_id``; a text
        button -> ``message_new`` whose text is the label and whose
        ``payload`` is the button's (corpus message_new_payload_sample_5_118)."""
        gid = community["group_id"]
        message = self._keyboard_message(gid, peer, body.get("message_id"))
        action = _pick_button(message["keyboard"], body)
        if action["type"] == "text":
            pressed = {
                "from": user,
                "peer_id": peer,
                "text": action.get("label", ""),
                "community": body.get("community"),
            }
            if action.get("payload") is not None:
                pressed["payload"] = action["payload"]
            return {"pressed": action, **self.customer(pressed)}
        if action["type"] != "callback":
            raise ControlError(
                f"a {action['type']} button posts nothing to the community",
                400,
                "not_a_message_button",
            )
        raw = action.get("payload")
        payload: Any = json.loads(raw) if isinstance(raw, str) else {}
        return {
            "pressed": action,
            **self.button(
                {
                    "user": user,
                    "peer_id": peer,
                    "payload": payload,
                    "community": body.get("community"),
                    "conversation_message_id": message["conversation_message_id"],
                }
            ),
        }

    def _keyboard_message(self, gid: int, peer: int, message_id: Any) -> dict[str, Any]:
        """The community's message to ``peer`` with a keyboard: ``message_id``,
        else the last one sent."""
        if message_id is not None and (
            isinstance(message_id, bool) or not isinstance(message_id, int)
        ):
            raise ControlError('"message_id" must be the id messages.send answered')
        with self.store.lock:
            sent = [
                m
                for m in self.store.history.get((gid, peer), [])
                if m.get("out") == 1 and isinstance(m.get("keyboard"), dict)
            ]
        if message_id is not None:
            sent = [m for m in sent if m.get("id") == message_id]
        if not sent:
            raise ControlError(
                f"no message with a keyboard to peer {peer}"
                + (f" with id {message_id}" if message_id is not None else ""),
                404,
                "message_not_found",
            )
        return copy.deepcopy(sent[-1])

    # -- /_sent -------------------------------------------------------------------------------

    def sent(self, args: dict[str, str]) -> list[dict[str, Any]]:
        peer = args.get("peer_id")
        gid = self.community(args["community"])["group_id"] if args.get("community") else None
        echoes: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for d in self.store.deliveries.list():
            if d.get("kind") == "echo":
                echoes.setdefault((d["group_id"], d["message_id"]), []).append(
                    {
                        "attempt": d["attempt"],
                        "status": d["status"],
                        "ok": d["ok"],
                        "error": d["error"],
                    }
                )
        with self.store.lock:
            out = []
            for record in self.store.sent:
                if peer and str(record["peer_id"]) != peer:
                    continue
                if gid is not None and record["group_id"] != gid:
                    continue
                item = copy.deepcopy(record)
                item["echo"] = echoes.get((record["group_id"], record["message_id"]), [])
                out.append(item)
            return out


# -- VK's own control routes -----------------------------------------------------------------


@control.post("/_connect")
@control.post("/_verify")
def connect() -> Response:
    sb = _sandbox()
    body = json_object()
    community = sb.community(body.get("community"))
    gid = community["group_id"]
    url = body.get("server_url", body.get("url"))
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ControlError('"server_url" must be an http(s) URL')
        try:
            sb.set_server_url(gid, url)
        except ValueError as exc:
            raise ControlError(str(exc), 400, "invalid_config") from None
    with sb.store.lock:
        if not sb.store.servers[gid].url:
            raise ControlError(
                'no server_url to confirm: {"server_url": "..."}', 409, "not_connected"
            )
    result = sb.callbacks.confirm(gid)
    with sb.store.lock:
        result["server"] = sb.store.servers[gid].dump(sb.store.now())
    return json_response(result)


@control.post("/_customer")
def customer() -> Response:
    return json_response(_sandbox().customer(json_object()))


@control.post("/_allow")
def allow() -> Response:
    return json_response(_sandbox().permission_event(json_object(), True))


@control.post("/_deny")
def deny() -> Response:
    return json_response(_sandbox().permission_event(json_object(), False))


@control.post("/_button")
def button() -> Response:
    return json_response(_sandbox().button(json_object()))


@control.post("/_user")
def user() -> Response:
    sb = _sandbox()
    body = json_object()
    uid = _user_id(body, "user", "id")
    fields: dict[str, Any] = {}
    for key in ("first_name", "last_name", "screen_name"):
        if body.get(key) is not None:
            if not isinstance(body[key], str) or not body[key]:
                raise ControlError(f'"{key}" must be a non-empty string')
            fields[key] = body[key]
    for key in ("blacklisted", "privacy", "allowed"):
        if key in body:
            fields[key] = as_bool(body[key])
    return json_response({"user": sb.store.remember_user(uid, **fields)})


@control.route("/_inject", methods=["GET", "POST"])
def inject() -> Response:
    sb = _sandbox()
    if request.method == "POST":
        body = json_object()
        with sb.store.lock:
            if body.get("clear"):
                sb.store.injected.clear()
            else:
                method, code = body.get("method"), body.get("error_code")
                times = body.get("times", 1)
                if not isinstance(method, str) or not method:
                    raise ControlError('"method" (a VK method name or "*") is required')
                if isinstance(code, bool) or not isinstance(code, int) or code < 1:
                    raise ControlError('"error_code" must be a VK error code')
                if isinstance(times, bool) or not isinstance(times, int) or times < 1:
                    raise ControlError('"times" must be a positive integer')
                rule: dict[str, Any] = {"method": method, "error_code": code, "times": times}
                if isinstance(body.get("error_msg"), str):
                    rule["error_msg"] = body["error_msg"]
                sb.store.injected.append(rule)
    with sb.store.lock:
        return json_response({"injected": [dict(r) for r in sb.store.injected]})


@control.get("/_deliveries")
def deliveries() -> Response:
    kind, etype, event_id = (request.args.get(k) for k in ("kind", "type", "event_id"))
    items = [
        d
        for d in _sandbox().store.deliveries.list()
        if (not kind or d.get("kind") == kind)
        and (not etype or d.get("type") == etype)
        and (not event_id or d.get("event_id") == event_id)
    ]
    return json_response({"deliveries": items})


@control.post("/_flush")
def flush() -> Response:
    records = _sandbox().callbacks.dispatcher.flush()
    return json_response({"ran": len(records)})
