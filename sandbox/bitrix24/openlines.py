"""Open Lines and the Open Channels connector API (``imconnector.*``).

Sources: api-reference/imopenlines/imconnector/*.md, the connector tutorial
(tutorials/openlines/example-connector.md), imopenlines-config-list-get.md,
FACTS.md 2.8. Every ``imconnector.*`` method needs app context (a webhook gets
403 ``WRONG_AUTH_TYPE``: "The methods imconnector.* in the current version do
not support operation via webhooks", imconnector/index.md); scope
``imopenlines`` (the method pages) or ``imconnector`` (the index page).

Our reading (UNCONFIRMED, the docs do not describe Open Lines internals):

* a chat is kept per (connector, line, ``chat.id``) in group mode
  (``CHAT_GROUP`` true) and per (connector, line, ``chat.id``, ``user.id``)
  otherwise (imconnector-register.md: "grouping by chat.id ... by user.id");
  each gets an Open Lines chat id and a session id;
* the CRM tracker runs for one-on-one chats unless ``disable_crm=Y`` or the
  line's ``CRM_CREATE`` is ``none``: an existing lead/contact with the chat's
  ``IMOL`` address is reused, else a contact with the user's phone/email, else
  a lead is created with ``IM`` = ``imol|<connector>|<line>|<chat.id>|<user>``
  (``VALUE_TYPE`` ``OPENLINE``, the shape crm-lead-get.md shows);
* per-message validation failures come back as ``SUCCESS: false`` with
  ``ERRORS`` for that element (imconnector-send-messages.md "RESULT[]").
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.core import media

from .context import CallCtx, method
from .crm import add_entity, normalize_phone
from .errors import B24Error, argument_error
from .params import as_bool, as_int, as_str, php_array
from .store import Portal

__all__ = ["operator_reply", "find_chat"]

_SCOPES = ("imopenlines", "imconnector")
#: imconnector-list.md example: connectors every portal has
_BUILTIN = {"livechat": "Live Chat", "telegrambot": "Telegram", "network": "Bitrix24.Network"}
_FLAGS = {"DEL_EXTERNAL_MESSAGES": True, "EDIT_INTERNAL_MESSAGES": True,
          "DEL_INTERNAL_MESSAGES": True, "NEWSLETTER": True, "NEED_SYSTEM_MESSAGES": True,
          "NEED_SIGNATURE": True, "CHAT_GROUP": False}  # imconnector-register.md defaults


def _no_provider() -> B24Error:
    return B24Error(400, "IMCONNECTOR_NO_CORRECT_PROVIDER",
                    "Failed to find a suitable provider for the connector")


def _not_active() -> B24Error:
    return B24Error(400, "NOT_ACTIVE_LINE", "The line with this ID is inactive or does not exist")


def _connector_line(params: dict[str, Any], line_required: bool = True) -> tuple[str, int]:
    connector = as_str(params.get("CONNECTOR")).strip().lower()
    if not connector:
        raise argument_error("CONNECTOR")
    line = as_int(params.get("LINE"))
    if line_required and not line:
        raise argument_error("LINE")
    return connector, line or 0


def _active(portal: Portal, connector: str, line: int) -> bool:
    entry = portal.activations.get((connector, line))
    line_cfg = portal.lines.get(line)
    return bool(entry and entry["active"] and line_cfg and line_cfg.get("ACTIVE") == "Y")


# -- imopenlines.config.list.get ------------------------------------------------------------


@method("imopenlines.config.list.get", scope="imopenlines")
def config_list(ctx: CallCtx, params: dict[str, Any]) -> list[dict[str, Any]]:
    portal = ctx.portal
    raw_options, raw_query = params.get("OPTIONS"), params.get("PARAMS")
    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
    query: dict[str, Any] = raw_query if isinstance(raw_query, dict) else {}
    flt = query.get("filter", {})
    if flt not in (None, "") and not isinstance(flt, dict):
        raise B24Error(400, "INVALID_FORMAT",
                       "A wrong format for the PARAMS field 'filter' is passed")
    out = []
    for line_id, line in sorted(portal.lines.items()):
        row: dict[str, Any] = {"ID": str(line_id), "LINE_NAME": line.get("LINE_NAME", ""),
                               "ACTIVE": line.get("ACTIVE", "Y")}
        if flt and any(str(row.get(k)) != str(v) for k, v in flt.items()):
            continue
        queue = [int(u) for u in line.get("QUEUE") or []]
        if as_bool(options.get("QUEUE")):
            row["QUEUE"] = queue
            row["QUEUE_USERS_FIELDS"] = {
                str(u): {"USER_NAME": portal.user_name(u), "USER_WORK_POSITION":
                         portal.users.get(u, {}).get("WORK_POSITION"), "USER_AVATAR": "",
                         "USER_AVATAR_ID": None} for u in queue}
        if as_bool(options.get("CONFIG_QUEUE")):
            row["CONFIG_QUEUE"] = [{"ENTITY_ID": str(u), "ENTITY_TYPE": "user"} for u in queue]
        out.append(row)
    return out


# -- connector lifecycle ------------------------------------------------------------------


def _reg_error(code: str, text: str) -> dict[str, Any]:
    """imconnector-register.md: validation errors are HTTP 200 with result=false."""
    return {"result": False, "error": code, "error_description": text}


@method("imconnector.register", scope=_SCOPES, app_only="wrong_auth_type")
def register(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    raw_id = params.get("ID")
    if not isinstance(raw_id, str) or not raw_id.strip():
        return _reg_error("CONNECTOR_ID_REQUIRED", "Connector ID is not specified")
    connector = raw_id.strip().lower()  # "The method converts the value to lowercase"
    if "." in connector:
        return _reg_error("APPLICATION_REGISTRATION_ERROR_POINT", "Application registration "
                          "error. Using a dot in the connector identifier is not allowed")
    if not re.fullmatch(r"[a-z0-9_]+", connector):
        return _reg_error("GENERAL_CONNECTOR_REGISTRATION_ERROR",
                          "General connector registration error")
    name = params.get("NAME")
    if not isinstance(name, str) or not name.strip():
        return _reg_error("NAME_REQUIRED", "Connector name is not specified")
    icon = params.get("ICON")
    image = icon.get("DATA_IMAGE") if isinstance(icon, dict) else None
    if not isinstance(image, str) or not image:
        return _reg_error("ICON_REQUIRED", "Connector icon is not specified")
    if not image.startswith("data:image/"):  # "SVG icon in Data URI format" (our check)
        return _reg_error("GENERAL_CONNECTOR_REGISTRATION_ERROR",
                          "General connector registration error")
    handler = params.get("PLACEMENT_HANDLER")
    if not isinstance(handler, str) or not handler.strip():
        return _reg_error("NO_PLACEMENT_HANDLER", "Failed to get embedding handler URL")
    entry = {"ID": connector, "NAME": name, "ICON": icon, "PLACEMENT_HANDLER": handler,
             "ICON_DISABLED": params.get("ICON_DISABLED")}
    for flag, default in _FLAGS.items():
        entry[flag] = as_bool(params.get(flag), default)
    entry["registered_at"] = ctx.now()
    ctx.portal.connectors[connector] = entry  # re-registering updates
    return {"result": True}


@method("imconnector.activate", scope=_SCOPES, app_only="wrong_auth_type")
def activate(ctx: CallCtx, params: dict[str, Any]) -> bool:
    connector, line = _connector_line(params)
    if params.get("ACTIVE") is None:
        raise argument_error("ACTIVE")
    if connector not in ctx.portal.connectors:
        raise _no_provider()  # UNCONFIRMED for this method
    if line not in ctx.portal.lines:
        raise _not_active()  # UNCONFIRMED for this method
    entry = ctx.portal.activations.setdefault((connector, line), {"active": False, "data": None})
    entry["active"] = as_bool(params.get("ACTIVE"))  # empty or 0 disables
    return True


@method("imconnector.status", scope=_SCOPES, app_only="wrong_auth_type")
def status(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    connector, line = _connector_line(params, line_required=False)
    registered = connector in ctx.portal.connectors or connector in _BUILTIN
    entry = ctx.portal.activations.get((connector, line)) or {}
    configured = bool(registered and entry.get("active"))
    return {"LINE": line, "CONNECTOR": connector, "ERROR": False, "CONFIGURED": configured,
            "STATUS": configured and _active(ctx.portal, connector, line)}


@method("imconnector.list", scope=_SCOPES, app_only="wrong_auth_type")
def connector_list(ctx: CallCtx, params: dict[str, Any]) -> dict[str, str]:
    # imconnector-list.md: only users allowed to modify connectors (our reading: admins)
    if not ctx.portal.users.get(ctx.auth.user_id, {}).get("ADMIN"):
        raise B24Error(400, "ACCESS_DENIED", "You don't have access to this action")
    out = dict(_BUILTIN)
    out.update({cid: c["NAME"] for cid, c in ctx.portal.connectors.items()})
    return out


@method("imconnector.connector.data.set", scope=_SCOPES, app_only="wrong_auth_type")
def data_set(ctx: CallCtx, params: dict[str, Any]) -> bool:
    connector, line = _connector_line(params)
    data = params.get("DATA")
    if not isinstance(data, dict) or not data:
        raise argument_error("DATA")
    if connector not in ctx.portal.connectors:
        raise _no_provider()  # UNCONFIRMED for this method
    entry = ctx.portal.activations.setdefault((connector, line), {"active": False, "data": None})
    entry["data"] = dict(data)  # written as a whole, never merged (the page says so)
    return True


@method("imconnector.unregister", scope=_SCOPES, app_only="wrong_auth_type")
def unregister(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    connector = as_str(params.get("ID")).strip().lower()
    if connector not in ctx.portal.connectors:
        return _reg_error("APPLICATION_UNREGISTRATION_ERROR",
                          "Error unregistering the application")
    del ctx.portal.connectors[connector]
    for key in [k for k in ctx.portal.activations if k[0] == connector]:
        del ctx.portal.activations[key]
    return {"result": True}


# -- messages ---------------------------------------------------------------------------------


def _messages(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The documented ERROR_ARGUMENT checks of imconnector-send-messages.md."""
    if "MESSAGES" not in params or params["MESSAGES"] in (None, "", [], {}):
        raise argument_error("MESSAGES")
    messages = params["MESSAGES"]
    if isinstance(messages, dict):
        messages = list(messages.values())
    if not isinstance(messages, list):
        raise B24Error(400, "ERROR_ARGUMENT",
                       "The value of an argument 'MESSAGES' must be of type array")
    if not all(isinstance(m, dict) for m in messages):
        raise B24Error(400, "ERROR_ARGUMENT",
                       "The MESSAGES parameter must be an array of messages (arrays)")
    return messages


def _structured(messages: list[dict[str, Any]], blocks: tuple[str, ...]) -> None:
    for msg in messages:
        if not all(isinstance(msg.get(b), dict) for b in blocks):
            raise B24Error(400, "ERROR_ARGUMENT",
                           "The incorrect structure of a message inside MESSAGES parameter")


def _name_ok(value: Any) -> bool:
    """Letters (any language), spaces, hyphens, apostrophes; at most 25 characters."""
    text = as_str(value)
    return len(text) <= 25 and all(ch.isalpha() or ch in " -'" for ch in text)


def find_chat(portal: Portal, connector: str, line: int, chat_ext: str,
              user_ext: str | None) -> dict[str, Any] | None:
    for chat in portal.chats.values():
        if (chat["connector"], chat["line"], chat["external_chat_id"]) != (connector, line,
                                                                             chat_ext):
            continue
        if chat["group"] or user_ext is None or chat["external_user_id"] == user_ext:
            return chat
    return None


def _crm_link(ctx: CallCtx, chat: dict[str, Any], user: dict[str, Any]) -> None:
    """The CRM tracker (our reading, see the module docstring)."""
    portal = ctx.portal
    address = f"imol|{chat['connector']}|{chat['line']}|{chat['external_chat_id']}|{chat['user']}"
    for kind in ("contact", "lead"):
        for ent in portal.entities[kind].values():
            if any(m["VALUE"] == address for m in ent.multi.get("IM", [])):
                chat["crm"] = {"entity": kind, "id": ent.id}
                return
    phone = normalize_phone(as_str(user.get("phone")))
    email = as_str(user.get("email")).strip().lower()
    for ent in sorted(portal.entities["contact"].values(), key=lambda e: e.id):
        phones = {normalize_phone(m["VALUE"]) for m in ent.multi.get("PHONE", [])}
        emails = {m["VALUE"].lower() for m in ent.multi.get("EMAIL", [])}
        if (phone and phone in phones) or (email and email in emails):
            chat["crm"] = {"entity": "contact", "id": ent.id}
            return
    line = portal.lines[chat["line"]]
    queue = [int(u) for u in line.get("QUEUE") or [] if int(u) in portal.users]
    responsible = queue[0] if queue else portal.admin_id()
    display = " ".join(p for p in (as_str(user.get("name")), as_str(user.get("last_name"))) if p)
    fields: dict[str, Any] = {
        "TITLE": f"{display or 'Guest'} - {line.get('LINE_NAME', 'Open Channel')}",
        "NAME": as_str(user.get("name")) or None, "LAST_NAME": as_str(user.get("last_name"))
        or None, "ASSIGNED_BY_ID": responsible, "SOURCE_ID": line.get("CRM_SOURCE"),
        "IM": [{"VALUE": address, "VALUE_TYPE": "OPENLINE"}]}
    if phone:
        fields["PHONE"] = [{"VALUE": as_str(user.get("phone")), "VALUE_TYPE": "WORK"}]
    if email:
        fields["EMAIL"] = [{"VALUE": as_str(user.get("email")), "VALUE_TYPE": "WORK"}]
    ent = add_entity(portal, "lead", fields, responsible, ctx.now(), strict=False)
    chat["crm"] = {"entity": "lead", "id": ent.id}
    ctx.fire("ONCRMLEADADD", {"FIELDS": {"ID": str(ent.id)}}, None)  # no user acted


def _chat_json(chat_in: dict[str, Any]) -> dict[str, str]:
    url = as_str(chat_in.get("url"))
    return {"id": as_str(chat_in.get("id")), "name": as_str(chat_in.get("name")),
            "description": f"Link to the original post: {url}" if url else ""}


def _incoming(ctx: CallCtx, connector: str, line: int, msg: dict[str, Any]) -> dict[str, Any]:
    portal = ctx.portal
    user, message, chat_in = msg["user"], msg["message"], msg["chat"]
    errors = []
    if not as_str(user.get("id")):
        errors.append("User ID is not specified")  # UNCONFIRMED texts
    if not as_str(chat_in.get("id")):
        errors.append("Chat ID is not specified")
    if ctx.cfg["connector_name_policy"] == "reject":
        for key in ("name", "last_name"):
            if user.get(key) not in (None, "") and not _name_ok(user.get(key)):
                errors.append(f"Invalid user {key}: letters, spaces, hyphens and apostrophes "
                              "only, at most 25 characters")
    files = message.get("files") if isinstance(message.get("files"), list) else []
    text = as_str(message.get("text"))
    if not text and not files:
        errors.append("Message text or files are required")
    if errors:
        return {"SUCCESS": False, "ERRORS": errors}
    group = bool(portal.connectors[connector]["CHAT_GROUP"])
    user_ext, chat_ext = as_str(user["id"]), as_str(chat_in["id"])
    cuid = portal.connector_users.get((connector, user_ext))
    if cuid is None:
        cuid = portal.connector_users[(connector, user_ext)] = portal.next_id("connector_user")
    chat = find_chat(portal, connector, line, chat_ext, user_ext)
    if chat is None:
        chat_id = portal.next_id("chat")
        chat = {"id": chat_id, "session_id": portal.next_id("session"), "connector": connector,
                "line": line, "external_chat_id": chat_ext, "external_user_id": user_ext,
                "user": cuid, "group": group, "name": as_str(chat_in.get("name")),
                "url": as_str(chat_in.get("url")), "crm": None, "messages": [],
                "created": ctx.now()}
        portal.chats[chat_id] = chat
    if (chat["crm"] is None and not group and as_str(message.get("disable_crm")) != "Y"
            and portal.lines[line].get("CRM_CREATE", "lead") != "none"):
        _crm_link(ctx, chat, user)
    mid = portal.next_id("message")
    portal.messages[mid] = {
        "id": mid, "chat_id": chat["id"], "direction": "in", "external_id": message.get("id"),
        # Bitrix24 downloads each url into the chat (sandbox/core/media.py)
        "text": text, "files": [{**f, "fetched": media.fetch(f.get("url"))}
                                if isinstance(f, dict) else f for f in files],
        "date": as_int(message.get("date")) or int(ctx.now()),
        "author": cuid, "external_user_id": user_ext, "deleted": False, "updated": False,
        "delivered": None, "read": None}
    chat["messages"].append(mid)
    out: dict[str, Any] = {"user": str(cuid), "message": {
        "id": message.get("id"), "date": {}, "text": text, "files": files},
        "chat": _chat_json(chat_in)}
    extra = {}
    if as_str(user.get("skip_phone_validate")) == "Y":
        extra["skip_phone_validate"] = "Y"
    if as_str(message.get("disable_crm")) == "Y":
        extra["disable_tracker"] = "Y"
    if extra:
        out["extra"] = extra
    out["SUCCESS"] = True
    out["session"] = {"ID": str(chat["session_id"]), "CHAT_ID": str(chat["id"])}
    return out


def _guard(ctx: CallCtx, params: dict[str, Any], check_line: bool) -> tuple[str, int, list[Any]]:
    connector, line = _connector_line(params)
    messages = _messages(params)
    if connector not in ctx.portal.connectors:
        raise _no_provider()
    if check_line and not _active(ctx.portal, connector, line):
        raise _not_active()
    return connector, line, messages


def _batch_answer(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"SUCCESS": all(r.get("SUCCESS") for r in results), "DATA": {"RESULT": results}}


@method("imconnector.send.messages", scope=_SCOPES, app_only="wrong_auth_type")
def send_messages(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    connector, line, messages = _guard(ctx, params, check_line=True)
    _structured(messages, ("user", "message", "chat"))
    return _batch_answer([_incoming(ctx, connector, line, m) for m in messages])


def _existing(ctx: CallCtx, connector: str, line: int,
              msg: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    user, message, chat_in = msg["user"], msg["message"], msg["chat"]
    chat = find_chat(ctx.portal, connector, line, as_str(chat_in.get("id")),
                     as_str(user.get("id")) or None)
    if chat is None:
        return None, ""
    for mid in chat["messages"]:
        rec = ctx.portal.messages[mid]
        if (rec["direction"] == "in" and not rec["deleted"]
                and as_str(rec["external_id"]) == as_str(message.get("id"))):
            return rec, str(chat["user"])
    return None, str(chat["user"])


@method("imconnector.update.messages", scope=_SCOPES, app_only="wrong_auth_type")
def update_messages(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    connector, line, messages = _guard(ctx, params, check_line=True)
    _structured(messages, ("user", "message", "chat"))
    results = []
    for msg in messages:
        rec, cuid = _existing(ctx, connector, line, msg)
        if rec is None:
            results.append({"SUCCESS": False, "ERRORS": ["Message not found"]})  # UNCONFIRMED
            continue
        message = msg["message"]
        if "text" in message:
            rec["text"] = as_str(message.get("text"))
        if isinstance(message.get("files"), list):
            rec["files"] = message["files"]
        rec["updated"] = True
        results.append({"user": cuid, "message": {"id": message.get("id"), "date": {},
                                                  "text": rec["text"]},
                        "chat": _chat_json(msg["chat"]), "SUCCESS": True})
    return _batch_answer(results)


@method("imconnector.delete.messages", scope=_SCOPES, app_only="wrong_auth_type")
def delete_messages(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    connector, line, messages = _guard(ctx, params, check_line=True)
    _structured(messages, ("user", "message", "chat"))
    results = []
    for msg in messages:
        rec, cuid = _existing(ctx, connector, line, msg)
        if rec is None:
            results.append({"SUCCESS": False, "ERRORS": ["Message not found"]})  # UNCONFIRMED
            continue
        rec["deleted"] = True
        results.append({"user": cuid, "message": {"id": msg["message"].get("id")},
                        "chat": {"id": as_str(msg["chat"].get("id"))}, "SUCCESS": True})
    return _batch_answer(results)


def _receipts(ctx: CallCtx, params: dict[str, Any], kind: str) -> dict[str, Any]:
    """imconnector-send-status-delivery.md / -reading.md: ``im`` ids from the
    OnImConnectorMessageAdd event, ``message.id`` an array of external ids.
    "When processing the delivered status, the message is also marked as read"."""
    connector, line, messages = _guard(ctx, params, check_line=False)
    _structured(messages, ("im", "message", "chat"))
    stamp = ctx.now()
    for msg in messages:
        ext_ids = msg["message"].get("id")
        if not isinstance(ext_ids, list):
            if ctx.cfg["delivery_id_must_be_array"]:
                # UNCONFIRMED answer; the docs: "Even for a single message, pass an array"
                raise B24Error(400, "ERROR_ARGUMENT", "message.id must be an array")
            ext_ids = [ext_ids]
        chat_id, message_id = as_int(msg["im"].get("chat_id")), as_int(msg["im"].get("message_id"))
        rec = ctx.portal.messages.get(message_id or 0)
        receipt = {"at": stamp, "external_ids": [as_str(i) for i in ext_ids],
                   "date": as_int(msg["message"].get("date")), "connector": connector,
                   "line": line, "chat": as_str(msg["chat"].get("id"))}
        if rec is None or rec["chat_id"] != chat_id or rec["direction"] != "out":
            ctx.portal.unmatched_receipts.append({"kind": kind, "im": dict(msg["im"]),
                                                  **receipt})
            continue  # UNCONFIRMED: the sandbox still answers SUCCESS
        if kind == "delivery":
            rec["delivered"] = receipt
        rec["read"] = rec["read"] or receipt
    return {"SUCCESS": True, "DATA": php_array({})}


@method("imconnector.send.status.delivery", scope=_SCOPES, app_only="wrong_auth_type")
def status_delivery(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    return _receipts(ctx, params, "delivery")


@method("imconnector.send.status.reading", scope=_SCOPES, app_only="wrong_auth_type")
def status_reading(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    return _receipts(ctx, params, "reading")


# -- operator replies (control API) ---------------------------------------------------------------


def _bbcode(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "[br]")


def operator_reply(portal: Portal, chat: dict[str, Any], text: str, user_id: int,
                   now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """An operator answers in the chat: the stored message and the
    OnImConnectorMessageAdd ``data`` (on-im-connector-message-add.md). With
    ``NEED_SIGNATURE`` the text gets ``[b]Name:[/b] [br]`` in front (the example)."""
    connector = portal.connectors.get(chat["connector"]) or {}
    body = _bbcode(text)
    if connector.get("NEED_SIGNATURE", True):
        body = f"[b]{portal.user_name(user_id)}:[/b] [br]{body}"
    mid = portal.next_id("message")
    record = {"id": mid, "chat_id": chat["id"], "direction": "out", "external_id": None,
              "text": body, "files": [], "date": int(now), "author": user_id,
              "deleted": False, "updated": False, "delivered": None, "read": None}
    portal.messages[mid] = record
    chat["messages"].append(mid)
    data = {"CONNECTOR": chat["connector"], "LINE": chat["line"],
            "MESSAGES": [{"im": {"chat_id": chat["id"], "message_id": mid},
                          "message": {"user_id": user_id, "text": body},
                          "chat": {"id": chat["external_chat_id"]}}]}
    return record, data
