"""The VK API methods a community bot uses, as ``api.vk.com`` serves them.

``POST /method/<name>`` (GET works too, as at VK): parameters form-encoded or
in the query string. A JSON body is not read (VK does not support it,
FACTS §3): its parameters are simply missing. Every answer is HTTP 200 with
``{"response": ...}`` or ``{"error": {"error_code", "error_msg",
"request_params"}}`` (:mod:`.errors`).

Checks on every call, in order: ``v`` (error 8 when missing or below
``min_version``), the token (``access_token`` or ``Authorization: Bearer``;
error 5 when missing or unknown: a community token opens its community
only), the per-token rate (error 6 above ``rate_limit_per_s`` in any second),
the method (error 3), the daily quota (error 29), one-shot injected errors
(``POST /_inject``).

``messages.send``
    ``peer_id`` | ``user_id`` | ``chat_id`` | ``domain`` | ``peer_ids`` (≤ 100),
    ``random_id`` (required from 5.90; de-duplicated over the whole history:
    a repeat answers the first send's id and sends nothing; 0 disables the
    check), ``message`` (914 above ``max_message_chars``), ``attachment``
    (``<type><owner>_<id>[_<key>]``, comma-separated), ``reply_to``,
    ``forward_messages``, ``forward``, ``sticker_id``, ``keyboard`` (JSON with
    ``buttons``: at most 10 rows and 40 buttons, inline 6 rows and 10
    buttons, 5 a row; known action types with their fields; labels ≤ 40,
    button payloads JSON ≤ 255; else 911), ``payload`` (≤ 1000), ``dont_parse_links``,
    ``disable_mentions``, ``intent``. Answer: the message id, or for
    ``peer_ids`` ``[{peer_id, message_id, conversation_message_id}]`` (an
    item failing alone carries ``error: {code, description}``). Peer errors:
    900 (blacklisted), 901 (no permission: the user never wrote, never
    allowed, or denied), 902 (privacy), 917 (a chat the community is not in),
    9 (``flood_control``). Each send is echoed as a ``message_reply`` event.
``messages.sendMessageEventAnswer``
    ``event_id``, ``user_id``, ``peer_id`` of a ``message_event`` the sandbox
    posted, ``event_data`` (JSON ≤ 1000: ``show_snackbar`` | ``open_link`` |
    ``open_app``) → ``1``.
``messages.getHistory``
    ``peer_id`` | ``user_id``, ``count`` (20, ≤ 200), ``offset``, ``rev`` →
    ``{"count", "items"}``.
``groups.getById``, ``groups.getCallbackConfirmationCode``,
``groups.getCallbackServers``, ``users.get``
    The community, its confirmation string, its server, names for user ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, g, request

from ..core.control import json_response
from .callback import envelope
from .config import version_tuple
from .errors import ApiError, param_error
from .state import CHAT_PEER_BASE, Store, is_chat

__all__ = ["call_method", "METHODS"]

_ATTACHMENT = re.compile(
    r"^(photo|video|audio|doc|wall|market|poll|audio_playlist|story|graffiti|article|podcast)"
    r"(-?\d+)_(\d+)(?:_([A-Za-z0-9]+))?$"
)
_VERSION = re.compile(r"^\d+(?:\.\d+)?$")
_EVENT_ACTIONS = ("show_snackbar", "open_link", "open_app")


def _sandbox() -> Any:
    return current_app.extensions["vk_sandbox"]


@dataclass
class Call:
    """One method call: its parameters, version and community."""

    method: str
    params: dict[str, str]
    version: tuple[int, int]
    token: str
    community: dict[str, Any]

    @property
    def group_id(self) -> int:
        gid: int = self.community["group_id"]
        return gid


# -- parameters ------------------------------------------------------------------------------


def _params() -> dict[str, str]:
    """Query and form parameters (a JSON body is not read, as at VK)."""
    out: dict[str, str] = {}
    for source in (request.args, request.form):
        for key, value in source.items():
            out.setdefault(key, value)
    if request.mimetype == "application/json" and request.get_data(cache=True).strip():
        _sandbox().store.count("json_bodies_ignored")  # VK does not read them either
    return out


def _int(params: dict[str, str], name: str, *, required: bool = False) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise param_error(f"{name} is a required parameter")
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise param_error(f"{name} not integer") from None


def _int_list(params: dict[str, str], name: str) -> list[int] | None:
    raw = params.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise param_error(f"{name} should be a list of integers") from None


# -- the call --------------------------------------------------------------------------------


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def call_method(method: str) -> Response:
    sb = _sandbox()
    store: Store = sb.store
    params = _params()
    raw_v = params.get("v")
    if not raw_v:
        raise ApiError(
            8,
            message="Invalid request: v is required. Version param should be "
            'passed as "v". "version" param is invalid and not supported.',
        )
    if not _VERSION.match(raw_v.strip()):
        raise ApiError(8, message="Invalid request: v is invalid")
    with store.lock:
        cfg = store.config
        minimum = cfg["min_version"]
    version = version_tuple(raw_v.strip())
    if version < version_tuple(minimum):
        raise ApiError(
            8,
            message=(
                f"Invalid request: versions below {minimum} are deprecated. Version param should "
                'be passed as "v". "version" param is invalid and not supported. For more '
                "information go to https://vk.com/dev/constant_version_updates"
            ),
        )
    token = params.get("access_token") or _bearer()
    if not token:
        raise ApiError(5, "no access_token passed.")
    community = store.token_community(token)
    if community is None:
        raise ApiError(5, "invalid access_token (4).")
    g.vk_group_id = community["group_id"]
    with store.lock:
        rate = float(cfg["rate_limit_per_s"])
        if rate > 0 and not store.windows.admit(("rate", token), max(1, int(rate)), 1.0):
            store.count("error_6")
            raise ApiError(6)
    handler = METHODS.get(method)
    if handler is None:
        raise ApiError(3)
    with store.lock:
        quota = cfg["daily_quota"].get(method)
        if quota is not None and not store.windows.admit(("quota", token, method), quota, 86400):
            raise ApiError(29)
        for rule in store.injected:
            if rule["method"] in (method, "*") and rule["times"] > 0:
                rule["times"] -= 1
                store.injected[:] = [r for r in store.injected if r["times"] > 0]
                raise ApiError(rule["error_code"], message=rule.get("error_msg"))
    result = handler(Call(method, params, version, token, community))
    return json_response({"response": result})


# -- messages.send ---------------------------------------------------------------------------


def _peers(call: Call) -> tuple[list[int], bool]:
    """The recipients, and whether the answer is the ``peer_ids`` list."""
    p = call.params
    many = _int_list(p, "peer_ids")
    if many is None:
        many = _int_list(p, "user_ids")
    if many is not None:
        if not many:
            raise param_error("peer_ids is empty")
        if len(many) > 100:
            raise param_error("peer_ids is too long (100 at most)")
        return many, True
    for name in ("peer_id", "user_id"):
        value = _int(p, name)
        if value is not None:
            return [value], False
    chat = _int(p, "chat_id")
    if chat is not None:
        return [CHAT_PEER_BASE + chat], False
    domain = p.get("domain")
    if domain:
        user = _sandbox().store.user_by_screen_name(domain.strip())
        if user is None:
            raise param_error("domain is invalid")
        return [user["id"]], False
    raise param_error("you should specify peer_id, user_id, domain, chat_id or user_ids param")


def _attachments(raw: str) -> list[dict[str, Any]]:
    out = []
    for part in (s.strip() for s in raw.split(",")):
        if not part:
            continue
        match = _ATTACHMENT.match(part)
        if match is None:
            raise param_error(f"attachment is invalid: {part}")
        kind, owner, item, key = match.groups()
        obj: dict[str, Any] = {"id": int(item), "owner_id": int(owner)}
        if key:
            obj["access_key"] = key
        out.append({"type": kind, kind: obj})
    return out


#: the keyboard's limits (dev.vk.com/en/api/bots/development/keyboard): under the
#: input field at most 5 x 10 and 40 buttons, inline at most 5 x 6 and 10 buttons
KEYBOARD_LIMITS = {False: (10, 40), True: (6, 10)}
ROW_MAX_BUTTONS = 5
#: a button's label and payload: 40 and 255 characters (the limits vk-io's
#: keyboard builder documents, negezor/vk-io Keyboard; what VK answers past
#: them is UNCONFIRMED: 911 here)
LABEL_LIMIT = 40
BUTTON_PAYLOAD_LIMIT = 255
#: action type -> its required fields besides ``type`` (schema
#: ``messages_keyboard_button_action_*``, vk/schema/messages__objects.json)
BUTTON_ACTIONS: dict[str, tuple[str, ...]] = {
    "text": ("label",),
    "callback": ("label",),
    "open_link": ("label", "link"),
    "open_app": ("label", "app_id", "owner_id"),
    "location": (),
    "vkpay": ("hash",),
    "open_photo": (),
}
BUTTON_COLORS = ("default", "positive", "negative", "primary", "secondary")


def _keyboard(raw: str) -> dict[str, Any]:
    """The ``keyboard`` parameter as VK checks it: error 911 "Keyboard format
    is invalid" for anything it would refuse (shape, sizes, actions, labels,
    payloads)."""
    try:
        keyboard = json.loads(raw)
    except ValueError:
        raise ApiError(911) from None
    buttons = keyboard.get("buttons") if isinstance(keyboard, dict) else None
    if not isinstance(buttons, list) or not all(
        isinstance(row, list)
        and all(isinstance(b, dict) and isinstance(b.get("action"), dict) for b in row)
        for row in buttons
    ):
        raise ApiError(911)
    inline = keyboard.get("inline", False)
    if not isinstance(inline, bool) or not isinstance(keyboard.get("one_time", False), bool):
        raise ApiError(911)
    rows, total = KEYBOARD_LIMITS[inline]
    if (
        len(buttons) > rows
        or sum(len(row) for row in buttons) > total
        or any(len(row) > ROW_MAX_BUTTONS for row in buttons)
    ):
        raise ApiError(911)
    for row in buttons:
        for button in row:
            _check_button(button)
    return keyboard


def _check_button(button: dict[str, Any]) -> None:
    """One button: a known action with its fields, a label of at most 40
    characters, a payload of JSON of at most 255, a known colour (911 else)."""
    action = button["action"]
    kind = action.get("type")
    required = BUTTON_ACTIONS.get(kind) if isinstance(kind, str) else None
    if required is None or any(action.get(name) in (None, "") for name in required):
        raise ApiError(911)
    label = action.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > LABEL_LIMIT):
        raise ApiError(911)
    payload = action.get("payload")
    if payload is not None:
        if not isinstance(payload, str) or len(payload) > BUTTON_PAYLOAD_LIMIT:
            raise ApiError(911)
        try:
            json.loads(payload)
        except ValueError:
            raise ApiError(911) from None
    if button.get("color") is not None and button.get("color") not in BUTTON_COLORS:
        raise ApiError(911)


def messages_send(call: Call) -> Any:
    sb = _sandbox()
    store: Store = sb.store
    p = call.params
    gid = call.group_id
    group_param = _int(p, "group_id")
    if group_param is not None and group_param != gid:
        raise param_error("group_id is invalid")
    peers, many = _peers(call)
    random_id = _int(p, "random_id")
    with store.lock:
        cfg = store.config
        required_from = version_tuple(cfg["random_id_required_from"])
        limit = int(cfg["max_message_chars"])
        echo = bool(cfg["echo_replies"])
        flood = dict(cfg["flood_control"])
    if random_id is None:
        if call.version >= required_from:
            raise param_error("random_id is a required parameter")
        random_id = 0
    text = p.get("message", "")
    attachments = _attachments(p.get("attachment", ""))
    forwards = _int_list(p, "forward_messages") or []
    if len(forwards) > 100:
        raise ApiError(913)
    sticker = _int(p, "sticker_id")
    has_geo = p.get("lat") not in (None, "") and p.get("long") not in (None, "")
    if (
        not text.strip()
        and not attachments
        and not forwards
        and sticker is None
        and not (has_geo or p.get("forward"))
    ):
        raise param_error("message is empty or invalid")
    if len(text) > limit:
        raise ApiError(914)
    keyboard = _keyboard(p["keyboard"]) if p.get("keyboard") else None
    payload = p.get("payload")
    if payload is not None and len(payload) > 1000:
        raise param_error("payload is too long")
    reply_to = _int(p, "reply_to")
    if sticker is not None:
        attachments.append({"type": "sticker", "sticker": {"sticker_id": sticker}})

    results: list[dict[str, Any]] = []
    echoes: list[dict[str, Any]] = []
    with store.lock:
        known = (
            {peer: store.random_ids.get(store.random_key(gid, peer, random_id)) for peer in peers}
            if random_id
            else {}
        )
        for peer in peers:
            try:
                first = known.get(peer)
                if first is not None:
                    store.count("random_id_repeats")
                    for record in store.sent:
                        if (record["message_id"], record["group_id"]) == (first["message_id"], gid):
                            record["repeats"] = record.get("repeats", 0) + 1
                    results.append({"peer_id": peer, **first})
                    continue
                _check_peer(store, gid, peer, flood)
                mid, cmid = store.allocate(gid, peer, inbound=False)
                message: dict[str, Any] = {
                    "date": int(store.now()),
                    "from_id": -gid,
                    "id": mid,
                    "out": 1,
                    "peer_id": peer,
                    "text": text,
                    "conversation_message_id": cmid,
                    "fwd_messages": [],
                    "important": False,
                    "random_id": random_id,
                    "attachments": attachments,
                    "is_hidden": False,
                }
                if payload is not None:
                    message["payload"] = payload
                if keyboard is not None:
                    message["keyboard"] = keyboard
                if reply_to is not None:
                    original = store.find_message(gid, reply_to)
                    if original is not None:
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
                store.record_message(gid, message)
                ids = {"message_id": mid, "conversation_message_id": cmid}
                if random_id:
                    store.random_ids[store.random_key(gid, peer, random_id)] = ids
                store.sent.append(
                    {
                        "message_id": mid,
                        "conversation_message_id": cmid,
                        "group_id": gid,
                        "peer_id": peer,
                        "random_id": random_id,
                        "message": text,
                        "attachment": p.get("attachment"),
                        "reply_to": reply_to,
                        "keyboard": keyboard,
                        "payload": payload,
                        "time": store.now(),
                        "params": {k: v for k, v in p.items() if k != "access_token"},
                        "repeats": 0,
                    }
                )
                store.count("sent")
                if echo and store.servers[gid].status == "ok":
                    echoes.append(message)
                results.append({"peer_id": peer, **ids})
            except ApiError as exc:
                if not many:
                    raise
                g.vk_error_code = exc.code
                results.append(
                    {"peer_id": peer, "error": {"code": exc.code, "description": exc.message}}
                )
    for message in echoes:
        event = envelope(call.community, "message_reply", dict(message))
        sb.callbacks.post_later(
            gid, event, {"kind": "echo", "message_id": message["id"], "peer_id": message["peer_id"]}
        )
    if many:
        return results
    return results[0]["message_id"]


def _check_peer(store: Store, gid: int, peer: int, flood: dict[str, Any]) -> None:
    """Whether the community may write to ``peer`` now (lock held)."""
    if peer < 0:
        raise ApiError(901)
    if is_chat(peer):
        if not store.chat_seen(gid, peer):
            raise ApiError(917)
    else:
        user = store.user(peer)
        if user["blacklisted"]:
            raise ApiError(900)
        if store.permission(gid, peer) != "allowed":
            raise ApiError(901)
        if user["privacy"]:
            raise ApiError(902)
    if flood["count"] and not store.windows.admit(
        ("flood", gid, peer), int(flood["count"]), float(flood["window_s"])
    ):
        raise ApiError(9, "too much messages sent to user")


# -- other methods ---------------------------------------------------------------------------


def send_message_event_answer(call: Call) -> Any:
    store: Store = _sandbox().store
    p = call.params
    event_id = p.get("event_id")
    if not event_id:
        raise param_error("event_id is a required parameter")
    user_id = _int(p, "user_id", required=True)
    peer_id = _int(p, "peer_id", required=True)
    data = p.get("event_data")
    parsed = None
    if data:
        if len(data) > 1000:
            raise param_error("event_data is too long")
        try:
            parsed = json.loads(data)
        except ValueError:
            raise param_error("event_data is invalid") from None
        if not isinstance(parsed, dict) or parsed.get("type") not in _EVENT_ACTIONS:
            raise param_error("event_data is invalid")
    with store.lock:
        event = store.button_events.get(event_id)
        if event is None or event["group_id"] != call.group_id:
            raise param_error("event_id is invalid")
        if event["user_id"] != user_id or event["peer_id"] != peer_id:
            raise param_error("user_id or peer_id does not match the event")
        event["answers"].append({"event_data": parsed, "time": store.now()})
    return 1


def messages_get_history(call: Call) -> Any:
    store: Store = _sandbox().store
    p = call.params
    peer = _int(p, "peer_id")
    if peer is None:
        peer = _int(p, "user_id")
    if peer is None:
        raise param_error("peer_id is a required parameter")
    count = _int(p, "count") or 20
    if not 0 <= count <= 200:
        raise param_error("count should be from 0 to 200")
    offset = _int(p, "offset") or 0
    rev = _int(p, "rev") or 0
    with store.lock:
        messages = [dict(m) for m in store.history.get((call.group_id, peer), [])]
    ordered = messages if rev == 1 else messages[::-1]
    return {"count": len(messages), "items": ordered[max(offset, 0) : max(offset, 0) + count]}


def _group_object(community: dict[str, Any]) -> dict[str, Any]:
    gid = community["group_id"]
    return {
        "id": gid,
        "name": community["name"],
        "screen_name": community["screen_name"],
        "is_closed": 0,
        "type": "group",
        "photo_50": f"https://sun9-1.userapi.com/sandbox/club{gid}_50.png",
        "photo_100": f"https://sun9-1.userapi.com/sandbox/club{gid}_100.png",
        "photo_200": f"https://sun9-1.userapi.com/sandbox/club{gid}_200.png",
    }


def groups_get_by_id(call: Call) -> Any:
    store: Store = _sandbox().store
    p = call.params
    raw = p.get("group_ids") or p.get("group_id") or str(call.group_id)
    groups = []
    for part in (s.strip() for s in raw.split(",")):
        if not part:
            continue
        key = part
        for prefix in ("club", "public", "-"):
            if key.startswith(prefix) and key[len(prefix) :].isdigit():
                key = key[len(prefix) :]
        with store.lock:
            found = next(
                (
                    c
                    for c in store.communities()
                    if str(c["group_id"]) == key or c["screen_name"] == key
                ),
                None,
            )
        if found is None:
            if not key.isdigit():
                raise param_error(f"group_ids is invalid: {part}")
            gid = int(key)
            found = {"group_id": gid, "name": f"Community {gid}", "screen_name": f"club{gid}"}
        groups.append(_group_object(found))
    with store.lock:
        switch = version_tuple(store.config["groups_get_by_id_object_from"])
    if call.version >= switch:
        return {"groups": groups, "profiles": []}
    return groups


def groups_get_callback_confirmation_code(call: Call) -> Any:
    store: Store = _sandbox().store
    gid = _int(call.params, "group_id", required=True)
    if gid != call.group_id:
        raise ApiError(15, "no access to this community")
    return {"code": store.confirmation_code(call.group_id)}


def groups_get_callback_servers(call: Call) -> Any:
    store: Store = _sandbox().store
    gid = _int(call.params, "group_id", required=True)
    if gid != call.group_id:
        raise ApiError(15, "no access to this community")
    with store.lock:
        server = store.servers[gid]
        if not server.url:
            return {"count": 0, "items": []}
        return {
            "count": 1,
            "items": [
                {
                    "id": 1,
                    "title": "Sandbox",
                    "creator_id": 0,
                    "url": server.url,
                    "secret_key": call.community.get("secret") or "",
                    "status": server.status,
                }
            ],
        }


_USER_FIELDS = ("screen_name", "domain", "photo_50", "photo_100", "photo_200", "sex")


def users_get(call: Call) -> Any:
    store: Store = _sandbox().store
    p = call.params
    raw = p.get("user_ids") or p.get("user_id") or ""
    fields = {f.strip() for f in p.get("fields", "").split(",") if f.strip()}
    out = []
    for part in (s.strip() for s in raw.split(",")):
        if not part:
            continue
        if part.isdigit():
            user = store.user(int(part))
        else:
            found = store.user_by_screen_name(part)
            if found is None:
                raise ApiError(113)
            user = found
        item: dict[str, Any] = {
            "id": user["id"],
            "first_name": user["first_name"],
            "last_name": user["last_name"],
            "can_access_closed": True,
            "is_closed": False,
        }
        for name in sorted(fields & set(_USER_FIELDS)):
            if name in ("screen_name", "domain"):
                item[name] = user["screen_name"]
            elif name == "sex":
                item[name] = 0
            else:
                item[name] = f"https://sun9-1.userapi.com/sandbox/id{user['id']}_{name[6:]}.jpg"
        out.append(item)
    return out


METHODS: dict[str, Callable[[Call], Any]] = {
    "messages.send": messages_send,
    "messages.sendMessageEventAnswer": send_message_event_answer,
    "messages.getHistory": messages_get_history,
    "groups.getById": groups_get_by_id,
    "groups.getCallbackConfirmationCode": groups_get_callback_confirmation_code,
    "groups.getCallbackServers": groups_get_callback_servers,
    "users.get": users_get,
}
