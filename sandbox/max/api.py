"""The MAX Bot API paths a bot uses (FACTS §1-§12), as the sandbox answers them.

Auth: ``Authorization: <token>`` (the raw token); a missing or wrong one is
401 ``verify.token``; ``?access_token=`` is 403 ``deprecated.token``;
``Bearer <token>`` is refused unless ``accept_bearer``. Errors are ``{"code",
"message"}``; actions answer ``{"success": true}``. Limits: ``rps`` per token
and ``per_chat_per_s`` per chat for sends and callback answers, 429 with the
sandbox's (invented) body.

Routes: ``GET/PATCH /me``; ``POST/GET/PUT/DELETE /messages``, ``GET
/messages/<mid>``; ``POST /answers``; ``POST /uploads`` and the upload host
``POST /_upload/<id>`` (step 2, multipart field ``data``); ``GET/POST/DELETE
/subscriptions``; ``GET /updates`` (marker, limit, timeout, types; 405
while a webhook is active); ``POST /chats/<id>/actions``.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, request

from ..core.control import json_response
from . import keyboard
from .state import Store, Upload, dumps

__all__ = ["ApiError", "api", "require_auth"]

api = Blueprint("max_api", __name__)

UPLOAD_TYPES = ("image", "video", "audio", "file")
SUBSCRIPTION_SECRET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class ApiError(Exception):
    """A MAX error answer ``{"code", "message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> Response:
        return json_response({"code": self.code, "message": self.message}, self.status)


def _sb() -> Any:
    return current_app.extensions["max_sandbox"]


def _store() -> Store:
    store: Store = _sb().store
    return store


def _bad(message: str) -> ApiError:
    return ApiError(400, _store().config["bad_request_code"], message)


def require_auth() -> None:
    """FACTS §1 (before_request of every API path)."""
    store = _store()
    with store.lock:
        cfg = dict(store.config)
    mode = cfg["query_token"]
    if "access_token" in request.args and mode == "deprecated":
        raise ApiError(
            403,
            "deprecated.token",
            "Query parameter access_token is deprecated, use Authorization header",
        )
    given = request.headers.get("Authorization")
    if given is None and mode == "accept":
        given = request.args.get("access_token")
    if given and cfg["accept_bearer"] and given.startswith("Bearer "):
        given = given[len("Bearer ") :]
    if not given or not hmac.compare_digest(given.encode(), cfg["token"].encode()):
        raise ApiError(401, "verify.token", "Invalid access_token")
    # 30 rps per token (FACTS §12)
    if not store.buckets.take(("rps",), float(cfg["rps"]), float(cfg["rps"])):
        store.count("rate_limited")
        g.max_error = "too.many.requests"
        raise ApiError(429, cfg["error_429"]["code"], cfg["error_429"].get("message", ""))


def _chat_turn(chat: int) -> None:
    store = _store()
    with store.lock:
        cfg = store.config
        rate = float(cfg["per_chat_per_s"])
        if rate and not store.buckets.take(("chat", chat), rate, rate):
            store.count("chat_rate_limited")
            raise ApiError(429, cfg["error_429"]["code"], cfg["error_429"].get("message", ""))


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise _bad("the body must be a JSON object")
    return data


def _int_arg(name: str, required: bool = True) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        if required:
            raise _bad(f"{name} is required")
        return None
    try:
        return int(raw)
    except ValueError:
        raise _bad(f"{name} must be an int64") from None


# -- /me --------------------------------------------------------------------------------------


@api.route("/me", methods=["GET", "PATCH"])
def me() -> Response:
    store = _store()
    with store.lock:
        bot = store.bot_user()
    return json_response(
        {
            **bot,
            "description": "Sandbox demo bot",
            "avatar_url": None,
            "full_avatar_url": None,
            "commands": [],
        }
    )


# -- subscriptions ----------------------------------------------------------------------------


@api.route("/subscriptions", methods=["GET"])
def subscriptions() -> Response:
    store = _store()
    with store.lock:
        subs = [
            {"url": s["url"], "time": s["time"], "update_types": s["update_types"]}
            for s in store.subscriptions
        ]
    return json_response({"subscriptions": subs})


@api.route("/subscriptions", methods=["POST"])
def subscribe() -> Response:
    """``SubscriptionRequestBody``; unknown fields (``version``) ignored (FACTS §2)."""
    data = _body()
    url, secret, types = data.get("url"), data.get("secret"), data.get("update_types")
    store = _store()
    with store.lock:
        https_only = store.config["require_https"]
        omitted = store.config["omitted_update_types"]
    parts = urlsplit(url) if isinstance(url, str) else None
    local = parts is not None and parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        raise _bad("url must be an https:// URL")
    if parts.scheme != "https" and (https_only or not local):
        raise _bad("url must start with https:// (plain HTTP is not supported since 2026-05-25)")
    if secret is not None and (
        not isinstance(secret, str)
        or not 5 <= len(secret) <= 256
        or not set(secret) <= SUBSCRIPTION_SECRET
    ):
        raise _bad("secret must be 5-256 characters of A-Z, a-z, 0-9, _ and -")
    if types is not None and (
        not isinstance(types, list) or not all(isinstance(t, str) for t in types)
    ):
        raise _bad("update_types must be a list of strings")
    if types is None and omitted == "none":
        types = []
    with store.lock:
        store.subscriptions = [s for s in store.subscriptions if s["url"] != url]
        store.subscriptions.append(
            {"url": url, "secret": secret, "update_types": types, "time": store.now_ms()}
        )
        store.count("subscribed")
    return json_response({"success": True})


@api.route("/subscriptions", methods=["DELETE"])
def unsubscribe() -> Response:
    url = request.args.get("url")
    if not url:
        raise _bad("url is required")
    store = _store()
    with store.lock:
        store.subscriptions = [s for s in store.subscriptions if s["url"] != url]
    return json_response({"success": True})


# -- long polling -----------------------------------------------------------------------------


@api.route("/updates", methods=["GET"])
def updates() -> Response:
    store = _store()
    with store.lock:
        if store.subscriptions and store.config["updates_405_with_webhook"]:
            raise ApiError(
                405,
                "method.not.allowed",
                "Long polling is not available while a webhook subscription is active",
            )
    limit = _int_arg("limit", required=False) or 100
    timeout = _int_arg("timeout", required=False)
    timeout = 30 if timeout is None else timeout
    if not 1 <= limit <= 1000 or not 0 <= timeout <= 90:
        raise _bad("limit must be 1-1000 and timeout 0-90")
    marker = _int_arg("marker", required=False)
    raw_types = request.args.get("types")
    types = {t for t in raw_types.split(",") if t} if raw_types else None
    deadline = store.clock.now() + timeout
    with store.polled:
        while True:
            found, nxt = store.take(marker, limit, types)
            wait = deadline - store.clock.now()
            if found or wait <= 0:
                break
            store.polled.wait(min(wait, 1.0))
    return json_response({"updates": found, "marker": nxt})


# -- messages ---------------------------------------------------------------------------------


def _addressee() -> tuple[int, int | None]:
    """(chat id, the dialog's user) of ``?chat_id=`` or ``?user_id=``."""
    store = _store()
    chat, user = _int_arg("chat_id", required=False), _int_arg("user_id", required=False)
    with store.lock:
        if chat is None and user is None:
            raise _bad("chat_id or user_id is required")
        if chat is None:
            assert user is not None  # one of the two, checked above
            if user not in store.user_dialogs:
                raise ApiError(404, "chat.not.found", f"Dialog with user {user} not found")
            chat = store.user_dialogs[user]
        if chat not in store.dialogs and chat > 0:
            raise ApiError(404, "chat.not.found", f"Chat {chat} not found")
        owner = store.dialogs.get(chat)
        if owner is not None and owner in store.stopped:
            body = store.config["stopped_error"]
            raise ApiError(403, body["code"], body.get("message", ""))
    return chat, owner


def _attachments(given: Any) -> list[dict[str, Any]]:
    """Outgoing attachments (FACTS §7, §11): tokens must come from an upload;
    a fresh one may be ``attachment.not.ready``; an inline keyboard is
    checked against its documented shape and limits (:mod:`.keyboard`)."""
    if given is None:
        return []
    if not isinstance(given, list):
        raise _bad("attachments must be a list")
    store = _store()
    out = []
    for item in given:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _bad("an attachment is an object with a type")
        given_payload = item.get("payload")
        payload: dict[str, Any] = given_payload if isinstance(given_payload, dict) else {}
        kind = item["type"]
        if kind in UPLOAD_TYPES and kind != "image" or (kind == "image" and "token" in payload):
            token = payload.get("token")
            with store.lock:
                upload = store.tokens.get(token) if isinstance(token, str) else None
                if upload is None or not upload.done:
                    raise _bad(f"{kind}: unknown or unfinished upload token")
                if upload.refused < upload.refuse:
                    upload.refused += 1
                    store.count("attachment_not_ready")
                    raise ApiError(
                        400,
                        "attachment.not.ready",
                        "Key: errors.process.attachment.file.not.processed",
                    )
        elif kind == "image" and "photos" in payload:
            photos = payload["photos"]
            tokens = [p.get("token") for p in photos.values()] if isinstance(photos, dict) else []
            with store.lock:
                if not tokens or any(store.tokens.get(t) is None for t in tokens):
                    raise _bad("image: unknown photo token")
        elif kind == "image" and not isinstance(payload.get("url"), str):
            raise _bad("image: payload needs url, token or photos")
        elif kind == "inline_keyboard":
            wrong = keyboard.problem(given_payload)
            if wrong:
                raise _bad(wrong)
        out.append(item)
    return out


def _message(store: Store, chat: int, user: int | None, data: dict[str, Any]) -> dict[str, Any]:
    """The Message MAX answers a send with (schema-built-send-message.response.json)."""
    body: dict[str, Any] = {"mid": store.mid(), "seq": next(store.seq), "text": data.get("text")}
    if data.get("attachments"):
        body["attachments"] = data["attachments"]
    recipient: dict[str, Any] = {"chat_id": chat, "chat_type": "dialog" if chat > 0 else "chat"}
    if user is not None:
        recipient["user_id"] = user
    message: dict[str, Any] = {
        "sender": store.bot_user(),
        "recipient": recipient,
        "timestamp": store.now_ms(),
        "body": body,
    }
    link = data.get("link")
    if isinstance(link, dict):
        message["link"] = {"type": link.get("type"), "message": {"mid": link.get("mid")}}
    return message


@api.route("/messages", methods=["POST"])
def send_message() -> Response:
    data = _body()
    chat, user = _addressee()
    store = _store()
    text = data.get("text")
    if text is not None and not isinstance(text, str):
        raise _bad("text must be a string")
    with store.lock:
        limit = int(store.config["max_text"])
    if text is not None and len(text) > limit:
        raise _bad(f"text: size must be between 0 and {limit}")
    if data.get("format") not in (None, "markdown", "html"):
        raise _bad("format must be markdown or html")
    attachments = _attachments(data.get("attachments"))
    if not text and not attachments:
        raise _bad("text or attachments are required")
    _chat_turn(chat)
    with store.lock:
        message = _message(store, chat, user, {**data, "attachments": attachments})
        store.sent.append(
            {
                "mid": message["body"]["mid"],
                "seq": message["body"]["seq"],
                "chat_id": chat,
                "user_id": user,
                "text": text,
                "attachments": attachments,
                "link": data.get("link"),
                "format": data.get("format"),
                "notify": data.get("notify", True),
                "time": store.clock.now(),
                "body": data,
            }
        )
    return json_response({"message": message})


@api.route("/messages", methods=["GET"])
def list_messages() -> Response:
    store = _store()
    chat = _int_arg("chat_id", required=False)
    with store.lock:
        found = [s for s in store.sent if chat is None or s["chat_id"] == chat]
    return json_response(
        {
            "messages": [
                {
                    "body": {"mid": s["mid"], "seq": s["seq"], "text": s["text"]},
                    "recipient": {"chat_id": s["chat_id"]},
                    "timestamp": int(s["time"] * 1000),
                }
                for s in reversed(found)
            ]
        }
    )


@api.route("/messages/<mid>", methods=["GET"])
def get_message(mid: str) -> Response:
    store = _store()
    with store.lock:
        found = next((s for s in store.sent if s["mid"] == mid), None)
    if found is None:
        raise ApiError(404, "not.found", f"Message {mid} not found")
    return json_response(
        {
            "body": {"mid": found["mid"], "seq": found["seq"], "text": found["text"]},
            "recipient": {"chat_id": found["chat_id"]},
            "timestamp": int(found["time"] * 1000),
        }
    )


@api.route("/messages", methods=["PUT", "DELETE"])
def edit_message() -> Response:
    mid = request.args.get("message_id")
    if not mid:
        raise _bad("message_id is required")
    store = _store()
    data = _body() if request.method == "PUT" else {}
    with store.lock:
        found = next((s for s in store.sent if s["mid"] == mid), None)
        if found is None:
            raise ApiError(404, "not.found", f"Message {mid} not found")
        if request.method == "DELETE":
            found["deleted"] = True
        else:
            found.setdefault("edits", []).append(data)
            if "text" in data:
                found["text"] = data["text"]
    return json_response({"success": True})


@api.route("/answers", methods=["POST"])
def answer_callback() -> Response:
    """``POST /answers?callback_id=`` (FACTS §10): a ``message`` (it replaces
    the pressed one) has its attachments checked as a send's."""
    callback_id = (request.args.get("callback_id") or "").strip()
    if not callback_id:
        raise _bad("callback_id is required")
    data = _body()
    replaced = data.get("message")
    if isinstance(replaced, dict):
        _attachments(replaced.get("attachments"))  # the new keyboard, checked as a send's
    store = _store()
    with store.lock:
        known = store.callbacks.get(callback_id)
    if known is None:
        raise ApiError(404, "not.found", "Callback not found")
    _chat_turn(int(known["chat_id"]))
    with store.lock:
        store.answers.append(
            {
                "callback_id": callback_id,
                "body": data,
                "chat_id": known["chat_id"],
                "time": store.clock.now(),
            }
        )
    return json_response({"success": True})


@api.route("/chats/<int:chat_id>/actions", methods=["POST"])
def chat_action(chat_id: int) -> Response:
    data = _body()
    if data.get("action") not in (
        "typing_on",
        "sending_photo",
        "sending_video",
        "sending_audio",
        "sending_file",
        "mark_seen",
    ):
        raise _bad("unknown action")
    return json_response({"success": True})


# -- uploads ----------------------------------------------------------------------------------


@api.route("/uploads", methods=["POST"])
def uploads() -> Response:
    """Step 1 (FACTS §11): the URL to upload to (one file), with the token
    for video and audio."""
    kind = request.args.get("type")
    if kind not in UPLOAD_TYPES:
        raise _bad("type must be image, video, audio or file (photo is no longer accepted)")
    store = _store()
    upload = Upload(secrets.token_hex(8), kind)
    if kind in ("video", "audio"):
        upload.token = "sbx-" + secrets.token_urlsafe(18)
    with store.lock:
        upload.refuse = int(store.config["attachment_not_ready_times"])
        store.uploads[upload.id] = upload
        if upload.token:
            store.tokens[upload.token] = upload
    body: dict[str, Any] = {
        "url": f"{request.host_url.rstrip('/')}{request.script_root}/_upload/{upload.id}"
    }
    if upload.token:
        body["token"] = upload.token
    return json_response(body)


def upload_host(upload_id: str) -> Response:
    """Step 2, the upload host (no Authorization: [GO] sends none): the
    file as the multipart field ``data``; image -> ``{"photos": {...}}``,
    file -> ``{"token"}``, video/audio -> XML ``<retval>1</retval>``."""
    store = _store()
    with store.lock:
        upload = store.uploads.get(upload_id)
    if upload is None or upload.done:
        return json_response({"code": "upload.error", "message": "Upload URL is not valid"}, 400)
    file = request.files.get("data")
    if file is None:
        return json_response({"code": "upload.error", "message": "No data field"}, 400)
    content = file.read()
    with store.lock:
        upload.done, upload.name, upload.size = True, file.filename, len(content)
        if upload.token is None:
            upload.token = "sbx-" + secrets.token_urlsafe(18)
            store.tokens[upload.token] = upload
        store.count("uploads")
    if upload.type in ("video", "audio"):
        xml = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<retval>1</retval>'
        return Response(xml, mimetype="application/xml")
    if upload.type == "image":
        return Response(
            dumps({"photos": {secrets.token_urlsafe(8) + "==": {"token": upload.token}}}),
            mimetype="application/json",
        )
    return json_response({"token": upload.token})
