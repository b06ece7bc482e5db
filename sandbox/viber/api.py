"""The REST bot API: ``POST /pa/<name>`` with ``X-Viber-Auth-Token`` and a JSON
body; every answer is HTTP 200 with ``status`` (0 ok) and ``status_message``,
errors included (FACTS §4; the status table of the REST bot API: 1 invalidUrl,
2 invalidAuthToken, 3 badData, 4 missingData, 5 receiverNotRegistered,
6 receiverNotSubscribed, 12 tooManyRequests, ...).

* ``set_webhook`` ``{url, event_types?, send_name?, send_photo?}``: posts the
  signed ``webhook`` event to ``url`` and answers status 1 when it did not
  get 200; ``url`` ``""`` removes the webhook.
* ``send_message`` ``{receiver, sender{name<=28, avatar?}, type, tracking_data?,
  min_api_version?, keyboard?, text | media...}``: ``message_token`` back;
  then ``delivered`` and ``seen`` callbacks (switches in :mod:`.config`). A
  ``keyboard`` is checked as the keyboards page describes it (status 3).
* ``broadcast_message`` ``{broadcast_list<=300, ...}``: ``failed_list`` back.
* ``get_account_info``, ``get_user_details`` ``{id}``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, g, request

from ..core.control import json_response
from .callbacks import CHAT_HOSTNAME
from .state import Store

__all__ = ["STATUS", "call", "status_body"]

#: the status table (REST bot API "Error codes", as the SDKs copy it)
STATUS: dict[int, str] = {
    0: "ok",
    1: "invalidUrl",
    2: "invalidAuthToken",
    3: "badData",
    4: "missingData",
    5: "receiverNotRegistered",
    6: "receiverNotSubscribed",
    7: "publicAccountBlocked",
    8: "publicAccountNotFound",
    9: "publicAccountSuspended",
    10: "webhookNotSet",
    11: "receiverNoSuitableDevice",
    12: "tooManyRequests",
    13: "apiVersionNotSupported",
}
SENDER_NAME_LIMIT = 28
BROADCAST_LIMIT = 300
MESSAGE_TYPES = (
    "text",
    "picture",
    "video",
    "file",
    "location",
    "contact",
    "sticker",
    "url",
    "rich_media",
)
EVENT_TYPES = ("delivered", "seen", "failed", "subscribed", "unsubscribed", "conversation_started")
#: a keyboard (the keyboards page's parameter tables; creators.viber.com
#: docs/bots-api/resources/messaging/keyboards): buttons 1-6 columns wide,
#: 1-2 rows high, ``Text`` "Max 250 characters", ``ActionBody`` required;
#: "Keyboards can contain up to 24 rows" (the "Keyboard design" section as
#: webitel/chat_manager quotes it)
KEYBOARD_ACTIONS = ("reply", "open-url", "location-picker", "share-phone", "none")
KEYBOARD_COLUMNS = 6
KEYBOARD_ROWS = 24
BUTTON_TEXT_LIMIT = 250


class ViberStatus(Exception):
    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def status_body(status: int, detail: str = "") -> Response:
    """Viber's error answer: HTTP 200, the status in the body."""
    g.viber_status = status
    words = STATUS.get(status, "unknown")
    return json_response(
        {"status": status, "status_message": f"{words}: {detail}" if detail else words}
    )


def _sandbox() -> Any:
    return current_app.extensions["viber_sandbox"]


def call(name: str) -> Response:
    sb = _sandbox()
    store: Store = sb.store
    handler = METHODS.get(name)
    if handler is None:
        return json_response({"error": "not_found", "message": f"no method {name}"}, 404)
    with store.lock:
        bot = store.bot_by_token(request.headers.get("X-Viber-Auth-Token"))
    if bot is None:
        return status_body(2)
    try:
        body = json.loads(request.get_data() or b"{}")
    except ValueError:
        return status_body(3, "the body is not JSON")
    if not isinstance(body, dict):
        return status_body(3, "the body is not a JSON object")
    try:
        answer = handler(sb, bot, body)
    except ViberStatus as exc:
        return status_body(exc.status, exc.detail)
    g.viber_status = 0
    return json_response({"status": 0, "status_message": "ok", **answer})


# -- methods ------------------------------------------------------------------------------------


def set_webhook(sb: Any, bot: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    url = body.get("url")
    if not isinstance(url, str):
        raise ViberStatus(4, "url is required")
    if url == "":
        with sb.store.lock:
            sb.store.webhooks.pop(bot["id"], None)
        return {}
    if not url.startswith(("http://", "https://")):
        raise ViberStatus(1, "the URL is not valid")
    types = body.get("event_types", list(EVENT_TYPES))
    if not isinstance(types, list) or not all(t in EVENT_TYPES for t in types):
        raise ViberStatus(3, f"event_types are {', '.join(EVENT_TYPES)}")
    check = sb.callbacks.check(bot, url)
    if not check["ok"]:
        raise ViberStatus(1, f"the webhook did not answer 200 ({check['error']})")
    with sb.store.lock:
        sb.store.webhooks[bot["id"]] = {
            "url": url,
            "event_types": list(types),
            "set_at": sb.store.now(),
        }
    return {"chat_hostname": CHAT_HOSTNAME, "event_types": list(types)}


def _check_message(sb: Any, body: dict[str, Any]) -> None:
    sender = body.get("sender")
    if not isinstance(sender, dict) or not isinstance(sender.get("name"), str):
        raise ViberStatus(4, "sender.name is required")
    if len(sender["name"]) > SENDER_NAME_LIMIT:
        raise ViberStatus(3, f"sender.name is at most {SENDER_NAME_LIMIT} characters")
    kind = body.get("type")
    if kind not in MESSAGE_TYPES:
        raise ViberStatus(3, f"type must be one of {', '.join(MESSAGE_TYPES)}")
    need = {
        "text": ("text",),
        "picture": ("media",),
        "video": ("media", "size"),
        "file": ("media", "size", "file_name"),
        "location": ("location",),
        "contact": ("contact",),
        "sticker": ("sticker_id",),
        "url": ("media",),
        "rich_media": ("rich_media",),
    }[kind]
    missing = [k for k in need if body.get(k) in (None, "")]
    if missing:
        raise ViberStatus(4, f"{kind} needs {', '.join(missing)}")
    limit = int(sb.store.config["text_limit"])
    if kind == "text" and (not isinstance(body["text"], str) or len(body["text"]) > limit):
        raise ViberStatus(3, f"text is a string of at most {limit} characters")
    if "keyboard" in body:
        check_keyboard(body["keyboard"])


def _invalid_keyboard(detail: str) -> ViberStatus:
    """Viber's schema refusal: status 3 "keyboard is not valid. [...]" (the
    wording webitel/chat_manager quotes for a keyboard without ``Type``)."""
    return ViberStatus(3, f"keyboard is not valid. [{detail}]")


def check_keyboard(board: Any) -> None:
    """A keyboard as the keyboards page describes it, or status 3."""
    if not isinstance(board, dict):
        raise _invalid_keyboard("instance is not an object")
    missing = [k for k in ("Type", "Buttons") if k not in board]
    if missing:
        names = ",".join(f'"{k}"' for k in missing)
        raise _invalid_keyboard(f"object has missing required properties ([{names}])")
    if board["Type"] != "keyboard":
        raise _invalid_keyboard('Type must be "keyboard"')
    buttons = board["Buttons"]
    if not isinstance(buttons, list) or not buttons:
        raise _invalid_keyboard("Buttons must be a non-empty array")
    for index, button in enumerate(buttons):
        _check_button(index, button)
    if layout_rows(buttons) > KEYBOARD_ROWS:
        raise _invalid_keyboard(f"a keyboard has at most {KEYBOARD_ROWS} rows")


def _check_button(index: int, button: Any) -> None:
    where = f"Buttons[{index}]"
    if not isinstance(button, dict):
        raise _invalid_keyboard(f"{where} is not an object")
    if not isinstance(button.get("ActionBody"), str):
        raise _invalid_keyboard(f'{where}: object has missing required properties (["ActionBody"])')
    if button.get("ActionType", "reply") not in KEYBOARD_ACTIONS:
        raise _invalid_keyboard(f"{where}.ActionType is one of {', '.join(KEYBOARD_ACTIONS)}")
    for key, top in (("Columns", KEYBOARD_COLUMNS), ("Rows", 2)):
        value = button.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise _invalid_keyboard(f"{where}.{key} is 1-{top}")
    text = button.get("Text")
    if text is not None and (not isinstance(text, str) or len(text) > BUTTON_TEXT_LIMIT):
        raise _invalid_keyboard(f"{where}.Text is at most {BUTTON_TEXT_LIMIT} characters")
    if not any(button.get(k) for k in ("Text", "BgMedia", "Image", "BgColor")):
        raise _invalid_keyboard(f"{where} needs one of Text, BgMedia, Image, BgColor")


def layout_rows(buttons: list[Any]) -> int:
    """The rows the client lays ``buttons`` out in: "as many buttons as
    possible into each row" of 6 columns, in order; a row as high as its
    highest button (the sandbox's reading of "Keyboard design")."""
    rows, used, height = 0, 0, 0
    for button in buttons:
        width, tall = int(button.get("Columns", KEYBOARD_COLUMNS)), int(button.get("Rows", 1))
        if used + width > KEYBOARD_COLUMNS:
            rows, used, height = rows + height, 0, 0
        used, height = used + width, max(height, tall)
    return rows + height


def _rate(sb: Any, bot: dict[str, Any]) -> None:
    per_s = sb.store.config["rate_limit_per_s"]
    if per_s and not sb.store.windows.admit(("send", bot["id"]), int(per_s), 1.0):
        sb.store.count("too_many_requests")
        raise ViberStatus(12)


def _receivable(sb: Any, bot: dict[str, Any], user_id: Any) -> None:
    store: Store = sb.store
    if not isinstance(user_id, str) or not user_id:
        raise ViberStatus(4, "receiver is required")
    if not store.config["require_subscription"]:
        return
    if user_id not in store.users:
        raise ViberStatus(5)
    if store.subscription(bot["id"], user_id) != "subscribed":
        raise ViberStatus(6)


def send_message(sb: Any, bot: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    store: Store = sb.store
    with store.lock:
        _check_message(sb, body)
        _receivable(sb, bot, body.get("receiver"))
        _rate(sb, bot)
        token = store.token()
        store.sent.append(
            {
                "message_token": token,
                "bot": bot["id"],
                "receiver": body["receiver"],
                "type": body["type"],
                "text": body.get("text"),
                "media": body.get("media"),
                "file_name": body.get("file_name"),
                "size": body.get("size"),
                "tracking_data": body.get("tracking_data"),
                "sender": body.get("sender"),
                "body": body,
                "time": store.now(),
            }
        )
    sb.statuses_after_send(bot, body["receiver"], token)
    return {"message_token": token, "chat_hostname": CHAT_HOSTNAME}


def broadcast_message(sb: Any, bot: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    store: Store = sb.store
    receivers = body.get("broadcast_list")
    if not isinstance(receivers, list) or not receivers:
        raise ViberStatus(4, "broadcast_list is required")
    if len(receivers) > BROADCAST_LIMIT:
        raise ViberStatus(3, f"broadcast_list holds at most {BROADCAST_LIMIT} users")
    failed: list[dict[str, Any]] = []
    sent: list[tuple[str, int]] = []
    with store.lock:
        _check_message(sb, body)
        _rate(sb, bot)
        token = store.token()
        for receiver in receivers:
            try:
                _receivable(sb, bot, receiver)
            except ViberStatus as exc:
                failed.append(
                    {
                        "receiver": receiver,
                        "status": exc.status,
                        "status_message": STATUS[exc.status],
                    }
                )
                continue
            store.sent.append(
                {
                    "message_token": token,
                    "bot": bot["id"],
                    "receiver": receiver,
                    "type": body["type"],
                    "text": body.get("text"),
                    "media": body.get("media"),
                    "broadcast": True,
                    "tracking_data": body.get("tracking_data"),
                    "body": body,
                    "time": store.now(),
                }
            )
            sent.append((receiver, token))
    for receiver, tok in sent:
        sb.statuses_after_send(bot, receiver, tok)
    return {"message_token": token, "failed_list": failed}


def get_account_info(sb: Any, bot: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    store: Store = sb.store
    with store.lock:
        hook = store.webhooks.get(bot["id"]) or {}
        subscribers = sum(
            1 for (b, _), s in store.subscriptions.items() if b == bot["id"] and s == "subscribed"
        )
    return {
        "id": bot["id"],
        "name": bot.get("name") or bot["id"],
        "uri": bot.get("uri") or "",
        "icon": bot.get("avatar"),
        "background": None,
        "category": "Shopping",
        "subcategory": "Online shop",
        "location": {"lon": 0.0, "lat": 0.0},
        "country": "GB",
        "webhook": hook.get("url", ""),
        "event_types": hook.get("event_types", []),
        "subscribers_count": subscribers,
        "members": [
            {"id": "01234567890A=", "name": "Sandbox admin", "avatar": None, "role": "admin"}
        ],
    }


def get_user_details(sb: Any, bot: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    user_id = body.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise ViberStatus(4, "id is required")
    with sb.store.lock:
        user = sb.store.users.get(user_id)
        if user is None:
            raise ViberStatus(5)
        user = dict(user)
    return {
        "message_token": sb.store.token(),
        "user": {
            **user,
            "primary_device_os": "Android 14",
            "viber_version": "24.1.0",
            "mcc": 1,
            "mnc": 1,
            "device_type": "Pixel",
        },
    }


METHODS = {
    "set_webhook": set_webhook,
    "send_message": send_message,
    "broadcast_message": broadcast_message,
    "get_account_info": get_account_info,
    "get_user_details": get_user_details,
}
