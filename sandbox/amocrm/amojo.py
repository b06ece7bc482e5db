"""The Chats API ("amojo"), mounted under ``/amojo`` (FACTS.md 1.13).

Real host ``https://amojo.amocrm.ru``; the paths after ``/amojo`` are amojo's:

* ``POST   /v2/origin/custom/<channel_id>/connect``    -> ``{account_id, scope_id, title,
  hook_api_version, is_time_window_disabled}``; 404 unknown channel
* ``DELETE /v2/origin/custom/<channel_id>/disconnect`` -> 200, no body
* ``POST   /v2/origin/custom/<scope_id>/chats``        create chat (idempotent per
  ``conversation_id``) -> ``{id, user{id, client_id, name, avatar, phone?, email?}}``
* ``POST   /v2/origin/custom/<scope_id>``              ``new_message`` / ``edit_message``
* ``POST   /v2/origin/custom/<scope_id>/<msgid>/delivery_status``
* ``GET    /v2/origin/custom/<scope_id>/chats/<conversation_id>/history?offset&limit``
* ``POST   /v2/origin/custom/<scope_id>/typing``

Every request is **signed** (FACTS 1.13): ``Date`` (RFC 2822, valid 15 min),
``Content-Type: application/json``, ``Content-MD5`` (hex md5 of the raw body;
md5 of "" for GET), ``X-Signature`` = hex HMAC-SHA1(channel secret,
``METHOD\\nmd5\\ncontent-type\\ndate\\npath``); bad/missing -> 403. The path is
the one on the amojo host (``/v2/origin/…``); the full sandbox path
(``/sandbox/amocrm/amojo/v2/…``) is accepted too, since on the real host the
two are the same thing.

Error bodies are JSON (the docs say "details in the body"); their layout
``{"error_code", "error_type", "error_description"}`` is ours (UNCONFIRMED).
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
from typing import Any

from flask import Blueprint, Response, request

from sandbox.core import media

from . import chats
from .context import sandbox
from .errors import AmoError, plain_json
from .store import Store

__all__ = ["bp", "sign_request"]

bp = Blueprint("amojo", __name__, url_prefix="/amojo")

_PREFIX = "/amojo"


def sign_request(
    secret: str,
    method: str,
    path: str,
    body: bytes,
    date: str,
    content_type: str = "application/json",
) -> dict[str, str]:
    """Headers of a signed amojo request (the scheme the sandbox checks)."""
    md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()  # the vendor's Content-MD5
    msg = "\n".join([method.upper(), md5, content_type, date, path])
    sig = hmac.new(secret.encode(), msg.encode(), hashlib.sha1).hexdigest()
    return {"Date": date, "Content-Type": content_type, "Content-MD5": md5, "X-Signature": sig}


def _error(status: int, kind: str, detail: str) -> AmoError:
    return AmoError(
        plain_json({"error_code": status, "error_type": kind, "error_description": detail}, status)
    )


@bp.before_request
def _verify_signature() -> None:
    store = sandbox().store
    secret = store.cfg["channel"]["secret"]
    raw = request.get_data(cache=True)
    given_md5 = request.headers.get("Content-MD5", "")
    ctype = request.headers.get("Content-Type", "")
    date = request.headers.get("Date", "")
    signature = request.headers.get("X-Signature", "").strip().lower()
    if not signature:
        raise _error(403, "INVALID_SIGNATURE", "X-Signature header is required")
    if given_md5.lower() != hashlib.md5(raw, usedforsecurity=False).hexdigest():
        raise _error(403, "INVALID_SIGNATURE", "Content-MD5 does not match the body")
    try:
        sent = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError):
        raise _error(403, "INVALID_SIGNATURE", "Date header missing or not RFC 2822") from None
    if abs(store.now() - sent) > float(store.cfg["amojo_date_window_s"]):
        raise _error(403, "INVALID_SIGNATURE", "Date header is outside the 15 minute window")
    paths = {request.path[len(_PREFIX) :], request.script_root + request.path}
    ok = any(
        hmac.compare_digest(
            hmac.new(
                secret.encode(),
                "\n".join([request.method.upper(), given_md5, ctype, date, p]).encode(),
                hashlib.sha1,
            ).hexdigest(),
            signature,
        )
        for p in paths
    )
    if not ok:
        raise _error(403, "INVALID_SIGNATURE", "Signature is invalid")
    if raw and ctype.split(";")[0].strip().lower() != "application/json":
        raise _error(400, "INVALID_CONTENT_TYPE", "Content-Type must be application/json")


def _body() -> dict[str, Any]:
    try:
        data = json.loads(request.get_data() or b"")
    except ValueError:
        raise _error(400, "INVALID_REQUEST", "body must be JSON") from None
    if not isinstance(data, dict):
        raise _error(400, "INVALID_REQUEST", "body must be a JSON object")
    return data


def _channel(channel_id: str) -> dict[str, Any]:
    channel: dict[str, Any] = sandbox().cfg["channel"]
    if channel_id != channel["id"]:
        raise _error(404, "CHANNEL_NOT_FOUND", "channel does not exist")
    return channel


def _connection(store: Store, scope_id: str) -> dict[str, Any]:
    conn = store.connections.get(scope_id)
    if conn is None or not conn["connected"]:  # 404 for an unknown/disconnected scope: ours
        raise _error(404, "SCOPE_NOT_FOUND", "no connected channel for this scope_id")
    return conn


# -- connect / disconnect ---------------------------------------------------------------------


@bp.route("/v2/origin/custom/<channel_id>/connect", methods=["POST"])
def connect(channel_id: str) -> Response:
    channel = _channel(channel_id)
    body = _body()
    store = sandbox().store
    version = body.get("hook_api_version", "v1")  # docs: default v1
    title = body.get("title", channel["title"])
    window = body.get("is_time_window_disabled", False)
    if (
        not isinstance(body.get("account_id"), str)
        or version not in ("v1", "v2")
        or not isinstance(title, str)
        or not isinstance(window, bool)
    ):
        raise _error(
            400, "INVALID_REQUEST", "account_id (string) and hook_api_version (v1|v2) are required"
        )
    with store.lock:
        account = store.account_by_amojo(body["account_id"])
        if account is None:
            raise _error(400, "ACCOUNT_NOT_FOUND", "unknown account_id")
        scope_id = f"{channel_id}_{account.amojo_id}"  # FACTS 1.13
        store.connections[scope_id] = {
            "scope_id": scope_id,
            "channel_id": channel_id,
            "account": account.id,
            "amojo_id": account.amojo_id,
            "title": title,
            "hook_api_version": version,
            "is_time_window_disabled": window,
            "connected": True,
            "connected_at": int(store.now()),
        }
    return plain_json(
        {
            "account_id": account.amojo_id,
            "scope_id": scope_id,
            "title": title,
            "hook_api_version": version,
            "is_time_window_disabled": window,
        }
    )


@bp.route("/v2/origin/custom/<channel_id>/disconnect", methods=["DELETE"])
def disconnect(channel_id: str) -> Response:
    _channel(channel_id)
    body = _body()
    store = sandbox().store
    if not isinstance(body.get("account_id"), str):
        raise _error(400, "INVALID_REQUEST", "account_id is required")
    with store.lock:
        conn = store.connections.get(f"{channel_id}_{body['account_id']}")
        if conn is None:
            raise _error(400, "ACCOUNT_NOT_FOUND", "the channel is not connected there")
        conn["connected"] = False
    return Response(b"", status=200)


# -- chats and messages ----------------------------------------------------------------------------


def _user_payload(raw: Any, what: str) -> dict[str, Any]:
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("id"), str)
        or not raw["id"]
        or not isinstance(raw.get("name", ""), str)
    ):
        raise _error(400, "INVALID_REQUEST", f"{what}.id (string) is required")
    return raw


@bp.route("/v2/origin/custom/<scope_id>/chats", methods=["POST"])
def create_chat(scope_id: str) -> Response:
    store = sandbox().store
    body = _body()
    conversation_id = body.get("conversation_id")
    user = _user_payload(body.get("user"), "user")
    if not isinstance(conversation_id, str) or not conversation_id or not user.get("name"):
        raise _error(400, "INVALID_REQUEST", "conversation_id and user{id,name} are required")
    with store.lock:
        conn = _connection(store, scope_id)
        existing = store.chat_index.get((scope_id, conversation_id))
        if existing is not None:
            chat = store.chats[existing]
            client = next(
                u
                for (s, _), u in store.amojo_users.items()
                if s == scope_id and u["id"] == chat["client_user_id"]
            )
        else:
            client = chats.client_user(store, scope_id, user)
            chat, _ = chats.get_chat(store, conn, conversation_id, client, body.get("source"))
        return plain_json({"id": chat["id"], "user": chats.render_user(client)})


#: message types whose ``media`` amojo downloads
_MEDIA = frozenset({"file", "video", "picture", "voice", "audio"})


def _check_message(message: Any) -> dict[str, Any]:
    """FACTS 1.13 / chat-api-reference: type, text for text, media+file_name+
    file_size for file/video/picture, location{lon,lat}, contact{name,phone}."""
    if not isinstance(message, dict) or message.get("type") not in chats.MESSAGE_TYPES:
        raise _error(
            400,
            "INVALID_REQUEST",
            "message.type is required and must be one of " + ", ".join(chats.MESSAGE_TYPES),
        )
    kind = message["type"]
    if kind == "text" and (not isinstance(message.get("text"), str) or not message["text"]):
        raise _error(400, "INVALID_REQUEST", "message.text is required for text messages")
    if kind in {"file", "video", "picture"} and not (
        message.get("media")
        and message.get("file_name")
        and isinstance(message.get("file_size"), int)
    ):
        raise _error(400, "INVALID_REQUEST", "media, file_name and file_size are required")
    if kind == "location" and not (
        isinstance(message.get("location"), dict) and {"lon", "lat"} <= set(message["location"])
    ):
        raise _error(400, "INVALID_REQUEST", "message.location{lon,lat} is required")
    if kind == "contact" and not (
        isinstance(message.get("contact"), dict) and {"name", "phone"} <= set(message["contact"])
    ):
        raise _error(400, "INVALID_REQUEST", "message.contact{name,phone} is required")
    return message


@bp.route("/v2/origin/custom/<scope_id>", methods=["POST"])
def send_message(scope_id: str) -> Response:
    body = _body()
    event = body.get("event_type")
    payload = body.get("payload")
    if event not in ("new_message", "edit_message") or not isinstance(payload, dict):
        raise _error(
            400, "INVALID_REQUEST", "event_type new_message|edit_message and a payload are required"
        )
    if event == "edit_message":
        return _edit(scope_id, payload)
    sb = sandbox()
    store = sb.store
    msgid, conversation_id = payload.get("msgid"), payload.get("conversation_id")
    if (
        not isinstance(msgid, str)
        or not msgid
        or not isinstance(conversation_id, str)
        or not conversation_id
    ):
        raise _error(
            400, "INVALID_REQUEST", "payload.msgid and payload.conversation_id are required"
        )
    sender = _user_payload(payload.get("sender"), "sender")
    outgoing = payload.get("receiver") is not None
    receiver = _user_payload(payload["receiver"], "receiver") if outgoing else sender
    message = _check_message(payload.get("message"))
    # amojo downloads media by URL (sandbox/core/media.py): outside the lock
    fetched = media.fetch(message.get("media")) if message["type"] in _MEDIA else None
    now = store.now()
    timestamp = payload.get("timestamp", int(now))
    msec = payload.get("msec_timestamp", int(timestamp) * 1000)
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int)
        or isinstance(msec, bool)
        or not isinstance(msec, int)
    ):
        raise _error(400, "INVALID_REQUEST", "timestamp/msec_timestamp must be integers")
    silent = bool(payload.get("silent", False))
    jobs = []
    with store.lock:
        conn = _connection(store, scope_id)
        key = (scope_id, conversation_id, sender["id"], msgid)
        if sb.cfg["msgid_dedupe"] and key in store.msg_index:  # UNCONFIRMED switch
            return plain_json(store.messages[store.msg_index[key]]["response"])
        account = store.accounts[conn["account"]]
        client = chats.client_user(store, scope_id, receiver)
        chat, _ = chats.get_chat(
            store,
            conn,
            conversation_id,
            client,
            payload.get("source"),
            payload.get("conversation_ref_id"),
        )
        chats.take_source(chat, payload.get("source"), bool(sb.cfg["chat_source_from_message"]))
        if outgoing:  # from a manager (sender.ref_id = amojo user id) or the bot
            from_ = {
                "id": sender.get("ref_id") or sb.cfg["channel"]["bot_id"],
                "client_id": sender["id"],
                "name": sender.get("name", ""),
            }
            to = {"id": client["id"]}
        else:
            from_, to = {"id": client["id"]}, None
        msg = chats.record_message(
            store,
            chat,
            "out" if outgoing else "in",
            from_,
            to,
            message,
            msgid,
            timestamp,
            msec,
            silent,
            "api",
            payload.get("source"),
        )
        if fetched is not None:
            msg["fetched"] = fetched
        if not outgoing and not silent:  # FACTS 1.13: unsorted unless silent
            jobs = chats.route_incoming(store, account, chat, client, msg, conn["title"])
        # receiver_id: null for incoming messages (UNCONFIRMED; the docs' type is string|null)
        msg["response"] = {
            "new_message": {
                "conversation_id": conversation_id,
                "sender_id": from_["id"],
                "receiver_id": to["id"] if to else None,
                "msgid": msg["id"],
                "ref_id": msgid,
            }
        }
        store.msg_index[key] = msg["id"]
        answer = msg["response"]
    sb.dispatcher.submit(jobs)  # add_contact / add_lead of a new Unsorted lead
    return plain_json(answer)


def _edit(scope_id: str, payload: dict[str, Any]) -> Response:
    """``edit_message``: find by amojo ``id`` or by our ``msgid`` in the
    conversation; 404 when unknown and the answer layout are ours (UNCONFIRMED)."""
    store = sandbox().store
    message = _check_message(payload.get("message"))
    with store.lock:
        _connection(store, scope_id)
        msg = store.messages.get(str(payload.get("id") or ""))
        if msg is None:
            msg = next(
                (
                    m
                    for m in store.messages.values()
                    if m["scope_id"] == scope_id
                    and m["ref_id"] == payload.get("msgid")
                    and m["conversation_id"] == payload.get("conversation_id")
                ),
                None,
            )
        if msg is None or msg["scope_id"] != scope_id:
            raise _error(404, "MESSAGE_NOT_FOUND", "message does not exist")
        msg["edits"].append({"at": store.now(), "text": msg["text"], "type": msg["type"]})
        for key in ("type", "text", "media", "file_name", "file_size", "location", "contact"):
            if key in message:
                msg[key] = message[key]
        if payload.get("id") and isinstance(payload.get("msgid"), str):
            msg["ref_id"] = payload["msgid"]
        return plain_json(
            {
                "edit_message": {
                    "conversation_id": msg["conversation_id"],
                    "msgid": msg["id"],
                    "ref_id": msg["ref_id"],
                }
            }
        )


@bp.route("/v2/origin/custom/<scope_id>/<msgid>/delivery_status", methods=["POST"])
def delivery_status(scope_id: str, msgid: str) -> Response:
    """FACTS 1.13: ``delivery_status`` (PHP example) or ``status_code`` (reference
    table) -- both accepted; 1 delivered, 2 read, -1 error with ``error_code``
    901-905 (905 needs ``error`` text); 404 for an unknown message."""
    body = _body()
    field = "delivery_status" if "delivery_status" in body else "status_code"
    status = body.get(field)
    error_code, error = body.get("error_code"), body.get("error")
    if status not in (1, 2, -1) or isinstance(status, bool):
        raise _error(400, "INVALID_REQUEST", "status must be 1, 2 or -1")
    if status == -1:
        if error_code not in (901, 902, 903, 904, 905) or isinstance(error_code, bool):
            raise _error(400, "INVALID_REQUEST", "error_code 901..905 is required with -1")
        if error_code == 905 and (not isinstance(error, str) or not error):
            raise _error(400, "INVALID_REQUEST", "error text is required with error_code 905")
    store = sandbox().store
    with store.lock:
        _connection(store, scope_id)
        msg = store.messages.get(msgid)
        if msg is None or msg["scope_id"] != scope_id:
            raise _error(404, "MESSAGE_NOT_FOUND", "message does not exist")
        msg["delivery_statuses"].append(
            {
                "status": status,
                "error_code": error_code,
                "error": error,
                "field": field,
                "at": store.now(),
            }
        )
    return Response(b"", status=200)


def _history_user(store: Store, scope_id: str, ref: dict[str, Any] | None) -> dict[str, Any] | None:
    if not ref:
        return None
    for (scope, _), user in store.amojo_users.items():
        if scope == scope_id and user["id"] == ref["id"]:
            return {k: v for k, v in chats.render_user(user).items() if v}
    return {"id": ref["id"], "name": ref.get("name", "")}


@bp.route("/v2/origin/custom/<scope_id>/chats/<conversation_id>/history", methods=["GET"])
def history(scope_id: str, conversation_id: str) -> Response:
    """Newest first; ``limit`` <= 50; 204 when the chat does not exist or has no
    messages (chat-api-reference)."""
    try:
        offset = int(request.args.get("offset", "0"))
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        raise _error(400, "INVALID_REQUEST", "offset and limit must be integers") from None
    if offset < 0 or not 1 <= limit <= 50:
        raise _error(400, "INVALID_REQUEST", "limit must be 1..50 and offset >= 0")
    store = sandbox().store
    with store.lock:
        _connection(store, scope_id)
        chat_id = store.chat_index.get((scope_id, conversation_id))
        ids = list(reversed(store.chats[chat_id]["messages"])) if chat_id else []
        out = []
        for mid in ids[offset : offset + limit]:
            msg = store.messages[mid]
            item: dict[str, Any] = {
                "timestamp": msg["timestamp"],
                "msec_timestamp": msg["msec_timestamp"],
                "sender": _history_user(store, scope_id, msg["sender"]),
            }
            receiver = _history_user(store, scope_id, msg["receiver"])
            if receiver:
                item["receiver"] = receiver
            item["message"] = {
                "id": msg["id"],
                "client_id": msg["ref_id"] or "",
                "type": msg["type"],
                "text": msg["text"],
                "media": msg["media"],
                "thumbnail": msg["thumbnail"],
                "file_name": msg["file_name"],
                "file_size": msg["file_size"],
            }
            for key in ("location", "contact"):
                if msg[key]:
                    item["message"][key] = msg[key]
            out.append(item)
    if not out:
        return Response(b"", status=204)
    return plain_json({"messages": out})


@bp.route("/v2/origin/custom/<scope_id>/typing", methods=["POST"])
def typing(scope_id: str) -> Response:
    store = sandbox().store
    _body()
    with store.lock:
        _connection(store, scope_id)
    return Response(b"", status=200)
