"""Conversations custom channels (FACTS.md 3.7), the messenger bridge's side.

* ``POST|GET /conversations/v3/custom-channels`` (developer key ``?hapikey=&appId=``)
* ``GET|PATCH /conversations/v3/custom-channels/{channelId}``
* ``GET /conversations/v3/conversations/inboxes`` (one seeded inbox per portal)
* ``POST|GET /conversations/v3/custom-channels/{channelId}/channel-accounts[/{id}]``
* ``POST /conversations/v3/custom-channels/{channelId}/messages`` (ChannelIntegrationMessageEgg)
* ``GET|PATCH /conversations/v3/custom-channels/{channelId}/messages/{messageId}``
* ``GET /conversations/v3/conversations/threads/{threadId}[/messages]``

Channel-account and message endpoints need the developer app's OAuth token;
private-app tokens get 403 ("needs an app, not a legacy private app").
Agent replies (control ``POST /_reply``) go out through :func:`reply`, which
fires the outgoing-message webhook at the channel's ``webhookUrl``.
"""

from __future__ import annotations

import html
from typing import Any

from flask import Blueprint, Response, request

from . import catalog
from .context import auth, current_auth, current_portal, json_body, sandbox
from .errors import HubSpotError, error_body, json_response, not_found, validation_error
from .records import to_millis
from .store import Portal, Store, iso

__all__ = ["bp", "find_reply_target", "build_reply", "outgoing_webhook_payload"]

bp = Blueprint("channels", __name__)

_BASE = "/conversations/v3/custom-channels"
_THREADING = ("INTEGRATION_THREAD_ID", "DELIVERY_IDENTIFIER")
_STATUS_TYPES = ("SENT", "FAILED", "READ")


def _need(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in body or body[name] is None:
        raise validation_error(f"{name} is required")
    value = body[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise validation_error(f"{name} has the wrong type ({type(value).__name__})")
    return value


def _opt(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return _need(body, name, kind) if body.get(name) is not None else None


def _delivery_identifier(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise validation_error(f"{where}.deliveryIdentifier is required")
    dtype, dvalue = value.get("type"), value.get("value")
    if dtype not in catalog.DELIVERY_IDENTIFIER_TYPES:
        raise validation_error(f"{where}.deliveryIdentifier.type must be one of "
                               f"{list(catalog.DELIVERY_IDENTIFIER_TYPES)}")
    if not isinstance(dvalue, str) or not dvalue:
        raise validation_error(f"{where}.deliveryIdentifier.value must be a non-empty string")
    return {"type": dtype, "value": dvalue}


def _check_capabilities(caps: dict[str, Any]) -> None:
    types = caps.get("deliveryIdentifierTypes")
    if types is not None and (not isinstance(types, list) or any(
            t not in catalog.DELIVERY_IDENTIFIER_TYPES for t in types)):
        raise validation_error("capabilities.deliveryIdentifierTypes must list "
                               f"{list(catalog.DELIVERY_IDENTIFIER_TYPES)} values")
    if caps.get("threadingModel") not in (None, *_THREADING):
        raise validation_error(f"capabilities.threadingModel must be one of {list(_THREADING)}")
    for key in ("allowInlineImages", "allowOutgoingMessages", "allowConversationStart"):
        if key in caps and not isinstance(caps[key], bool):
            raise validation_error(f"capabilities.{key} must be a boolean")
    for key in ("maxFileAttachmentCount", "maxFileAttachmentSizeBytes",
                "maxTotalFileAttachmentSizeBytes", "maxTextLength"):
        if key in caps and (not isinstance(caps[key], int) or isinstance(caps[key], bool)):
            raise validation_error(f"capabilities.{key} must be an integer")


def _check_url(value: str | None, name: str) -> None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise validation_error(f"{name} must be an http(s) URL")


def _channel(channel_id: str) -> dict[str, Any]:
    """The channel, visible only to its own app's credentials."""
    channel = sandbox().store.channels.get(channel_id)
    ctx = current_auth()
    if channel is None or channel["appId"] != ctx.app_id:
        raise not_found(f"Channel {channel_id} not found")
    return channel


def _public_channel(channel: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in channel.items() if v is not None}


# -- channels (developer key) ------------------------------------------------------


@bp.route(_BASE, methods=["POST"])
@auth("devkey")
def create_channel() -> Response:
    sb = sandbox()
    app = sb.cfg["app"]
    if request.args.get("appId") != str(app["app_id"]):
        raise HubSpotError(403, error_body(
            f"The developer API key does not own app {request.args.get('appId')}",
            "VALIDATION_ERROR"))
    body = json_body()
    if not isinstance(body, dict):
        raise validation_error("body must be a JSON object")
    name = _need(body, "name", str)
    caps = _need(body, "capabilities", dict)
    _check_capabilities(caps)
    webhook = _opt(body, "webhookUrl", str)
    _check_url(webhook, "webhookUrl")
    stamp = iso(sandbox().store.now())
    with sb.store.lock:
        channel = {
            "id": sb.store.next_misc_id(), "name": name, "capabilities": caps,
            "webhookUrl": webhook, "channelDescription": _opt(body, "channelDescription", str),
            "channelLogoUrl": _opt(body, "channelLogoUrl", str),
            "channelAccountConnectionRedirectUrl":
                _opt(body, "channelAccountConnectionRedirectUrl", str),
            "appId": int(app["app_id"]), "createdAt": stamp, "updatedAt": stamp,
            "archived": False}
        sb.store.channels[channel["id"]] = channel
        return json_response(_public_channel(channel), 201)


@bp.route(_BASE, methods=["GET"])
@auth("devkey_or_app")
def list_channels() -> Response:
    ctx = current_auth()
    with sandbox().store.lock:
        return json_response({"results": [_public_channel(c)
                                          for c in sandbox().store.channels.values()
                                          if c["appId"] == ctx.app_id]})


@bp.route(f"{_BASE}/<channel_id>", methods=["GET"])
@auth("devkey_or_app")
def get_channel(channel_id: str) -> Response:
    with sandbox().store.lock:
        return json_response(_public_channel(_channel(channel_id)))


@bp.route(f"{_BASE}/<channel_id>", methods=["PATCH"])
@auth("devkey")
def update_channel(channel_id: str) -> Response:
    body = json_body()
    if not isinstance(body, dict):
        raise validation_error("body must be a JSON object")
    with sandbox().store.lock:
        channel = _channel(channel_id)
        if "name" in body:
            _need(body, "name", str)
        if "capabilities" in body:
            _check_capabilities(_need(body, "capabilities", dict))
        if body.get("webhookUrl") is not None:
            _check_url(_need(body, "webhookUrl", str), "webhookUrl")
        for key in ("name", "capabilities", "webhookUrl", "channelDescription",
                    "channelLogoUrl", "channelAccountConnectionRedirectUrl"):
            if key in body:
                channel[key] = body[key]
        channel["updatedAt"] = iso(sandbox().store.now())
        return json_response(_public_channel(channel))


# -- inboxes and channel accounts (OAuth token of the app) ---------------------------


@bp.route("/conversations/v3/conversations/inboxes", methods=["GET"])
@auth("bearer")
def list_inboxes() -> Response:
    portal = current_portal()
    with sandbox().store.lock:
        return json_response({"total": len(portal.inboxes), "results": list(portal.inboxes)})


@bp.route(f"{_BASE}/<channel_id>/channel-accounts", methods=["POST"])
@auth("app")
def create_account(channel_id: str) -> Response:
    portal = current_portal()
    body = json_body()
    if not isinstance(body, dict):
        raise validation_error("body must be a JSON object")
    inbox_id = str(_need(body, "inboxId", (str, int)))
    name = _need(body, "name", str)
    authorized = _need(body, "authorized", bool)
    ident = (_delivery_identifier(body["deliveryIdentifier"], "body")
             if body.get("deliveryIdentifier") is not None else None)
    store = sandbox().store
    with store.lock:
        _channel(channel_id)
        if inbox_id not in {i["id"] for i in portal.inboxes}:
            raise validation_error(f"Inbox {inbox_id} does not exist")
        stamp = iso(store.now())
        account = {"id": store.next_misc_id(), "channelId": channel_id, "inboxId": inbox_id,
                   "name": name, "active": True, "archived": False, "authorized": authorized,
                   "createdAt": stamp, "updatedAt": stamp}
        if ident:
            account["deliveryIdentifier"] = ident
        portal.channel_accounts[account["id"]] = account
        return json_response(account, 201)


@bp.route(f"{_BASE}/<channel_id>/channel-accounts", methods=["GET"])
@auth("app")
def list_accounts(channel_id: str) -> Response:
    portal = current_portal()
    with sandbox().store.lock:
        _channel(channel_id)
        return json_response({"results": [a for a in portal.channel_accounts.values()
                                          if a["channelId"] == channel_id]})


def _account(portal: Portal, channel_id: str, account_id: str) -> dict[str, Any]:
    account = portal.channel_accounts.get(str(account_id))
    if account is None or account["channelId"] != channel_id:
        raise not_found(f"Channel account {account_id} not found")
    return account


@bp.route(f"{_BASE}/<channel_id>/channel-accounts/<account_id>", methods=["GET", "PATCH"])
@auth("app")
def one_account(channel_id: str, account_id: str) -> Response:
    portal = current_portal()
    body = json_body() if request.method == "PATCH" else {}
    with sandbox().store.lock:
        _channel(channel_id)
        account = _account(portal, channel_id, account_id)
        if request.method == "PATCH":
            if "name" in body:
                account["name"] = _need(body, "name", str)
            if "authorized" in body:
                account["authorized"] = _need(body, "authorized", bool)
            account["updatedAt"] = iso(sandbox().store.now())
        return json_response(account)


# -- messages ------------------------------------------------------------------------


def _participants(body: dict[str, Any], name: str, non_empty: bool) -> list[dict[str, Any]]:
    items = _need(body, name, list)
    if non_empty and not items:
        raise validation_error(f"{name} must not be empty")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise validation_error(f"{name}[{i}] must be an object")
        entry: dict[str, Any] = {"deliveryIdentifier": _delivery_identifier(
            item.get("deliveryIdentifier"), f"{name}[{i}]")}
        if item.get("name") is not None:
            entry["name"] = _need(item, "name", str)
        out.append(entry)
    return out


def _contact_id(portal: Portal, body: dict[str, Any]) -> str | None:
    raw = body.get("associateWithContactId")
    if raw is None:
        pre = (body.get("preResolvedContacts") or {}).get("contacts") or []
        raw = pre[0].get("contactVid") if pre and isinstance(pre[0], dict) else None
    if raw is None:
        return None
    cid = str(raw)
    if Store.get(portal, "contacts", cid) is None:
        raise validation_error(f"Contact {cid} does not exist")
    return cid


def _thread_for(store: Store, portal: Portal, account: dict[str, Any], itid: str | None,
                customer: dict[str, Any], contact_id: str | None) -> dict[str, Any]:
    """Find or open the thread: by integrationThreadId, else by the customer's
    delivery identifier, within one channel account (FACTS 3.7)."""
    key = ((account["id"], "itid", itid) if itid else
           (account["id"], "did", customer["deliveryIdentifier"]["value"]))
    thread_id = portal.thread_index.get(key)
    stamp = iso(store.now())
    if thread_id is None:
        thread = {"id": store.next_misc_id(), "channelId": account["channelId"],
                  "channelAccountId": account["id"], "inboxId": account["inboxId"],
                  "integrationThreadId": itid, "customer": customer,
                  "associatedContactId": None, "status": "OPEN", "createdAt": stamp,
                  "latestMessageTimestamp": stamp, "latest": store.now(), "messages": []}
        portal.threads[thread["id"]] = thread
        portal.thread_index[key] = thread["id"]
    else:
        thread = portal.threads[thread_id]
    if contact_id is not None:
        thread["associatedContactId"] = contact_id
    return thread


def _public(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = record["public"]
    return out


@bp.route(f"{_BASE}/<channel_id>/messages", methods=["POST"])
@auth("app")
def publish(channel_id: str) -> Response:
    """Publish a ChannelIntegrationMessageEgg; 201 PublicConversationsMessage."""
    portal = current_portal()
    body = json_body()
    if not isinstance(body, dict):
        raise validation_error("body must be a JSON object")
    # Required fields per FACTS 3.7.
    text = _need(body, "text", str)
    attachments = _need(body, "attachments", list)
    account_id = str(_need(body, "channelAccountId", (str, int)))
    direction = _need(body, "messageDirection", str)
    if direction not in {"INCOMING", "OUTGOING"}:
        raise validation_error("messageDirection must be INCOMING or OUTGOING")
    senders = _participants(body, "senders", non_empty=True)
    recipients = _participants(body, "recipients", non_empty=False)
    timestamp = _need(body, "timestamp", str)
    if to_millis(timestamp) is None or "T" not in timestamp:
        raise validation_error("timestamp must be an ISO 8601 date-time")
    itid = _opt(body, "integrationThreadId", str)
    idem = _opt(body, "integrationIdempotencyId", str)
    in_reply_to = _opt(body, "inReplyToId", str)
    rich = _opt(body, "richText", str)
    store = sandbox().store
    ctx = current_auth()
    with store.lock:
        _channel(channel_id)
        account = _account(portal, channel_id, account_id)
        if idem and store.cfg["idempotency_dedupe"]:
            # UNCONFIRMED (switch idempotency_dedupe): a repeat returns the original.
            seen = portal.idempotency.get((channel_id, account_id, idem))
            if seen is not None:
                return json_response(_public(portal.messages[seen]), 201)
        contact_id = _contact_id(portal, body)
        customer = senders[0] if direction == "INCOMING" else (recipients or senders)[0]
        thread = _thread_for(store, portal, account, itid, customer, contact_id)
        actor = (f"V-{thread['associatedContactId']}" if thread["associatedContactId"]
                 else None)
        now = store.now()
        public: dict[str, Any] = {
            "id": store.new_message_id(), "conversationsThreadId": thread["id"],
            "channelId": channel_id, "channelAccountId": account_id, "direction": direction,
            "text": text, "senders": [dict(s, **({"actorId": actor} if actor and
                                                 direction == "INCOMING" else {}))
                                      for s in senders],
            "recipients": recipients, "attachments": attachments,
            "client": {"clientType": "INTEGRATION", "integrationAppId": ctx.app_id},
            "createdAt": iso(now), "createdBy": actor or f"I-{ctx.app_id}",
            "archived": False, "truncationStatus": "NOT_TRUNCATED", "type": "MESSAGE",
            # Status of a published message: RECEIVED (UNCONFIRMED).
            "status": {"statusType": "RECEIVED" if direction == "INCOMING" else "SENT"}}
        if rich is not None:
            public["richText"] = rich
        if in_reply_to is not None:
            public["inReplyToId"] = in_reply_to
        record = {"public": public, "integrationThreadId": itid,
                  "integrationIdempotencyId": idem, "timestamp": timestamp, "source": "api"}
        portal.messages[public["id"]] = record
        thread["messages"].append(public["id"])
        thread["latest"], thread["latestMessageTimestamp"] = now, iso(now)
        if idem:
            portal.idempotency[(channel_id, account_id, idem)] = public["id"]
        return json_response(public, 201)


def _message(portal: Portal, channel_id: str, message_id: str) -> dict[str, Any]:
    record = portal.messages.get(message_id)
    if record is None or record["public"]["channelId"] != channel_id:
        raise not_found(f"Message {message_id} not found")
    return record


@bp.route(f"{_BASE}/<channel_id>/messages/<message_id>", methods=["GET"])
@auth("app")
def get_message(channel_id: str, message_id: str) -> Response:
    portal = current_portal()
    with sandbox().store.lock:
        _channel(channel_id)
        return json_response(_public(_message(portal, channel_id, message_id)))


@bp.route(f"{_BASE}/<channel_id>/messages/<message_id>", methods=["PATCH"])
@auth("app")
def update_message_status(channel_id: str, message_id: str) -> Response:
    """``{"statusType": "SENT"|"FAILED"|"READ", "errorMessage"?}`` (FACTS 3.7)."""
    portal = current_portal()
    body = json_body()
    if not isinstance(body, dict):
        raise validation_error("body must be a JSON object")
    status_type = _need(body, "statusType", str)
    if status_type not in _STATUS_TYPES:
        raise validation_error(f"statusType must be one of {list(_STATUS_TYPES)}")
    error_message = _opt(body, "errorMessage", str)
    with sandbox().store.lock:
        _channel(channel_id)
        record = _message(portal, channel_id, message_id)
        status: dict[str, Any] = {"statusType": status_type}
        if error_message is not None:
            # failureDetails shape UNCONFIRMED.
            status["failureDetails"] = {"errorMessage": error_message}
        record["public"]["status"] = status
        record.setdefault("statusHistory", []).append(
            {"statusType": status_type, "errorMessage": error_message,
             "at": iso(sandbox().store.now())})
        return json_response(record["public"])


# -- threads (read-only helpers for the bridge and the demo) -------------------------


def public_thread(thread: dict[str, Any]) -> dict[str, Any]:
    body = {"id": thread["id"], "createdAt": thread["createdAt"], "status": thread["status"],
            "inboxId": thread["inboxId"], "originalChannelId": thread["channelId"],
            "originalChannelAccountId": thread["channelAccountId"],
            "latestMessageTimestamp": thread["latestMessageTimestamp"], "spam": False,
            "archived": False}
    if thread["associatedContactId"]:
        body["associatedContactId"] = thread["associatedContactId"]
    return body


@bp.route("/conversations/v3/conversations/threads/<thread_id>", methods=["GET"])
@auth("bearer")
def get_thread(thread_id: str) -> Response:
    portal = current_portal()
    with sandbox().store.lock:
        thread = portal.threads.get(thread_id)
        if thread is None:
            raise not_found(f"Thread {thread_id} not found")
        return json_response(public_thread(thread))


@bp.route("/conversations/v3/conversations/threads/<thread_id>/messages", methods=["GET"])
@auth("bearer")
def thread_messages(thread_id: str) -> Response:
    portal = current_portal()
    with sandbox().store.lock:
        thread = portal.threads.get(thread_id)
        if thread is None:
            raise not_found(f"Thread {thread_id} not found")
        return json_response({"results": [_public(portal.messages[m])
                                          for m in thread["messages"]]})


# -- agent replies (control /_reply) ---------------------------------------------------


def find_reply_target(store: Store, contact_id: str | None, conversation: str | None,
                      portal_id: int | None) -> tuple[Portal, dict[str, Any]] | str:
    """The portal and the thread to answer: the contact's most recent
    custom-channel thread, or the most recent thread with ``conversation`` as its
    ``integrationThreadId`` (of that contact, if given); else an error code
    string. Caller holds the lock."""
    if portal_id is None:
        portals = list(store.portals.values())
    else:
        portals = [store.portals[portal_id]] if portal_id in store.portals else []
    for portal in portals:
        if contact_id is not None and Store.get(portal, "contacts", contact_id) is None:
            continue
        threads = [t for t in portal.threads.values()
                   if (contact_id is None or t["associatedContactId"] == contact_id)
                   and (conversation is None or t["integrationThreadId"] == conversation)]
        if not threads:
            if contact_id is None:
                continue
            return "no_thread"
        return portal, max(threads, key=lambda t: t["latest"])
    return "contact_not_found" if contact_id is not None else "conversation_not_found"


def outgoing_webhook_payload(store: Store, portal: Portal, thread: dict[str, Any],
                             message: dict[str, Any]) -> dict[str, Any]:
    """The OUTGOING_CHANNEL_MESSAGE_CREATED webhook HubSpot POSTs at webhookUrl.

    UNCONFIRMED (FACTS 3.7: community observation, no official sample): the
    envelope ``{type, portalId, channelId, channelAccountId, eventTimestamp,
    message}`` and the message's field names. Keep every guess in this one
    builder.
    """
    return {"type": "OUTGOING_CHANNEL_MESSAGE_CREATED", "portalId": portal.id,
            "channelId": thread["channelId"], "channelAccountId": thread["channelAccountId"],
            "eventTimestamp": int(store.now() * 1000), "message": message}


def build_reply(store: Store, portal: Portal, thread: dict[str, Any], text: str,
                owner: dict[str, Any], sender_name: str,
                in_reply_to: str | None = None) -> dict[str, Any]:
    """Write a rep's reply into ``thread``; returns the webhook message body.
    Caller holds the lock."""
    now = store.now()
    customer = thread["customer"]
    recipient: dict[str, Any] = {"deliveryIdentifier": dict(customer["deliveryIdentifier"])}
    if customer.get("name"):
        recipient["name"] = customer["name"]
    message: dict[str, Any] = {
        "id": store.new_message_id(), "conversationsThreadId": thread["id"],
        "channelId": thread["channelId"], "channelAccountId": thread["channelAccountId"],
        "direction": "OUTGOING", "text": text,
        "richText": "<div>" + html.escape(text).replace("\n", "<br>") + "</div>",
        "senders": [{"actorId": f"A-{owner['userId']}", "name": sender_name}],
        "recipients": [recipient], "createdAt": iso(now), "type": "MESSAGE",
        "truncationStatus": "NOT_TRUNCATED", "attachments": [],
        "channelIntegrationThreadIds": ([thread["integrationThreadId"]]
                                        if thread["integrationThreadId"] else [])}
    if in_reply_to:
        message["inReplyToId"] = in_reply_to
    # No status until the integration reports one (PATCH .../messages/{id}).
    public = dict(message, createdBy=f"A-{owner['userId']}", archived=False)
    portal.messages[message["id"]] = {"public": public, "integrationThreadId":
                                      thread["integrationThreadId"],
                                      "integrationIdempotencyId": None,
                                      "timestamp": iso(now), "source": "reply"}
    thread["messages"].append(message["id"])
    thread["latest"], thread["latestMessageTimestamp"] = now, iso(now)
    return message
