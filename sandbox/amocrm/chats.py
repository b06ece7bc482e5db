"""Chats API state and behaviour behind the amojo endpoints (FACTS.md 1.13).

* Chat participants ("amojo users") per connection scope, chats per
  ``conversation_id`` (idempotent), messages with amojo ids and our ``ref_id``.
* The first non-silent incoming message of a conversation whose chat is not
  linked to a contact creates an **Unsorted lead with a contact** (FACTS 1.13;
  the contact gets the sender's name and profile phone/email). Our reading,
  UNCONFIRMED: when the chat is linked (``POST /api/v4/contacts/chats``) to a
  contact with an open lead, the message lands in that lead's chat; with no
  open lead left, a new Unsorted lead is created for that contact.
* ``source.external_id`` (FACTS 1.13: on create-chat and on each message):
  the chat keeps the first one it is given, every message keeps its own, and
  the outgoing-message hook echoes the chat's. The state shows both. Whether a
  later message's source fills a chat created without one is UNCONFIRMED
  (config ``chat_source_from_message``). What the chat shows for it
  (``GET /_state``'s ``source_name``) is the name of the account's source
  with that ``external_id`` registered through the Sources API
  (:mod:`sandbox.amocrm.sources`, UNCONFIRMED), else nothing but the id.
* A manager's reply (control ``POST /_reply``) is stored and announced
  with the outgoing-message hook v2, signed ``X-Signature = hex
  HMAC-SHA1(channel secret, raw body)``, sent once and never retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

from ..core import webhooks as core_webhooks
from . import webhooks
from .contacts import create_contact
from .fields import apply_values, field_by_code
from .leads import create_unsorted_lead
from .store import CLOSED, Account, Store

__all__ = ["client_user", "get_chat", "source_of", "take_source", "record_message",
           "route_incoming", "render_user", "hook_body", "send_hook", "manager_message",
           "MESSAGE_TYPES"]

#: FACTS 1.13 message types
MESSAGE_TYPES = ("text", "contact", "file", "video", "picture", "voice", "audio", "sticker",
                 "location")


def client_user(store: Store, scope_id: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The amojo participant for an integration-side user id (created once)."""
    key = (scope_id, str(raw["id"]))
    user = store.amojo_users.get(key)
    profile = raw["profile"] if isinstance(raw.get("profile"), dict) else {}
    if user is None:
        user = {"id": str(uuid.uuid4()), "client_id": str(raw["id"]),
                "name": raw.get("name") or "", "avatar": raw.get("avatar") or "",
                "phone": profile.get("phone"), "email": profile.get("email"),
                "profile_link": raw.get("profile_link")}
        store.amojo_users[key] = user
    else:  # later messages fill in what was missing
        for k, v in (("name", raw.get("name")), ("avatar", raw.get("avatar")),
                     ("phone", profile.get("phone")), ("email", profile.get("email")),
                     ("profile_link", raw.get("profile_link"))):
            if v and not user.get(k):
                user[k] = v
    return user


def render_user(user: dict[str, Any]) -> dict[str, Any]:
    """``{id, client_id, name, avatar, phone?, email?}`` (phone/email only when
    given: chat-api-reference "create chat" response)."""
    out = {"id": user["id"], "client_id": user["client_id"], "name": user["name"],
           "avatar": user["avatar"]}
    if user.get("phone"):
        out["phone"] = user["phone"]
    if user.get("email"):
        out["email"] = user["email"]
    return out


def source_of(raw: Any) -> dict[str, str] | None:
    """``{"external_id": …}`` of a request's ``source``, or None when it has
    no non-empty string ``external_id`` (FACTS 1.13 gives only that field)."""
    if isinstance(raw, dict) and isinstance(raw.get("external_id"), str) and raw["external_id"]:
        return {"external_id": raw["external_id"]}
    return None


def take_source(chat: dict[str, Any], raw: Any, fill: bool) -> None:
    """A later message's ``source`` fills a chat that has none when ``fill``
    (config ``chat_source_from_message``); a chat's source never changes."""
    source = source_of(raw)
    if fill and source is not None and chat.get("source") is None:
        chat["source"] = source


def get_chat(store: Store, connection: dict[str, Any], conversation_id: str,
             client: dict[str, Any], source: dict[str, Any] | None = None,
             ref_id: Any = None) -> tuple[dict[str, Any], bool]:
    """The chat of ``conversation_id`` in this scope (idempotent); (chat, created)."""
    scope_id = connection["scope_id"]
    key = (scope_id, conversation_id)
    chat_id = store.chat_index.get(key)
    if chat_id is None and isinstance(ref_id, str) and ref_id in store.chats:
        chat_id = ref_id  # conversation_ref_id links our conversation to an amoCRM chat
        store.chat_index[key] = chat_id
    if chat_id is not None:
        return store.chats[chat_id], False
    chat = {"id": str(uuid.uuid4()), "scope_id": scope_id, "account_id": connection["account"],
            "conversation_id": conversation_id, "client_user_id": client["id"],
            "client_key": client["client_id"],
            "source": source_of(source), "contact_id": None,
            "lead_id": None, "created_at": int(store.now()), "messages": []}
    store.chats[chat["id"]] = chat
    store.chat_index[key] = chat["id"]
    return chat, True


def record_message(store: Store, chat: dict[str, Any], direction: str,
                   sender: dict[str, Any], receiver: dict[str, Any] | None,
                   message: dict[str, Any], ref_id: str | None, timestamp: int,
                   msec_timestamp: int, silent: bool, origin: str,
                   source: Any = None) -> dict[str, Any]:
    msg = {"id": str(uuid.uuid4()), "ref_id": ref_id, "chat_id": chat["id"],
           "scope_id": chat["scope_id"], "conversation_id": chat["conversation_id"],
           "direction": direction, "sender": sender, "receiver": receiver,
           "type": message.get("type", "text"), "text": message.get("text", ""),
           "media": message.get("media", ""), "thumbnail": message.get("thumbnail", ""),
           "file_name": message.get("file_name", ""), "file_size": message.get("file_size", 0),
           "location": message.get("location"), "contact": message.get("contact"),
           "timestamp": timestamp, "msec_timestamp": msec_timestamp, "silent": silent,
           "origin": origin, "source": source_of(source), "delivery_statuses": [],
           "edits": [],
           "lead_id": chat.get("lead_id")}
    store.messages[msg["id"]] = msg
    chat["messages"].append(msg["id"])
    return msg


def _open_lead(account: Account, contact_id: int) -> dict[str, Any] | None:
    leads = [lead for lead in account.leads.values() if not lead["is_deleted"]
             and lead["status_id"] not in CLOSED
             and any(c["id"] == contact_id for c in lead["contacts"])]
    return max(leads, key=lambda lead: lead["updated_at"]) if leads else None


def route_incoming(store: Store, account: Account, chat: dict[str, Any],
                   client: dict[str, Any], msg: dict[str, Any], title: str
                   ) -> list[webhooks.Job]:
    """Where an incoming non-silent message lands (see the module docstring).
    Returns the account-webhook jobs of what was created. Lock held."""
    jobs: list[webhooks.Job] = []
    contact = account.contacts.get(chat["contact_id"]) if chat["contact_id"] else None
    if contact is not None and contact["is_deleted"]:
        contact = None
    if contact is not None:
        lead = _open_lead(account, contact["id"])
        if lead is not None:
            chat["lead_id"] = msg["lead_id"] = lead["id"]
            return jobs
    if contact is None:
        contact = create_contact(store, account, {}, {"name": client["name"] or "Unknown",
                                                      "created_by": 0, "updated_by": 0,
                                                      "responsible_user_id":
                                                          account.admin_id()}, [], 0)
        values = []
        for code, key in (("PHONE", "phone"), ("EMAIL", "email")):
            fdef = field_by_code(account, "contacts", code)
            if client.get(key) and fdef:
                enum = (fdef.get("enums") or [{}])[0]
                values.append({"field_id": fdef["id"], "values": [
                    {"value": client[key], "enum_id": enum.get("id"),
                     "enum_code": enum.get("value")}]})
        apply_values(contact, values)
        contact["is_unsorted"] = True
        chat["contact_id"] = contact["id"]
        jobs += webhooks.jobs_for(store, account, "add_contact", contact)
    meta = {"category": "chats", "from": client["name"], "source_name": title,
            "client": {"name": client["name"], "id": client["client_id"]},
            "conversation_id": chat["conversation_id"], "chat_id": chat["id"],
            "last_message_text": msg["text"]}  # ours: FACTS 1.13 gives no layout
    lead = create_unsorted_lead(store, account, contact, "chats", meta, account.admin_id())
    lead["responsible_user_id"] = account.admin_id()
    chat["lead_id"] = msg["lead_id"] = lead["id"]
    jobs += webhooks.jobs_for(store, account, "add_lead", lead)
    return jobs


def manager_message(store: Store, account: Account, chat: dict[str, Any], text: str,
                    user: dict[str, Any]) -> dict[str, Any]:
    """Store a manager's outgoing text message in ``chat``. Lock held."""
    now = store.now()
    client = next(u for (scope, _), u in store.amojo_users.items()
                  if scope == chat["scope_id"] and u["id"] == chat["client_user_id"])
    return record_message(store, chat, "out", {"id": user["amojo_id"], "name": user["name"],
                                               "user_id": user["id"]},
                          {"id": client["id"]}, {"type": "text", "text": text}, None,
                          int(now), int(now * 1000), False, "manager")


def hook_body(store: Store, account: Account, chat: dict[str, Any], msg: dict[str, Any]
              ) -> dict[str, Any]:
    """The outgoing-message hook v2 (FACTS 1.13; chat-webhooks "Хук сообщения v2").

    ``receiver.phone``/``email`` are empty strings when no profile was given;
    ``conversation.client_id`` is our conversation id; ``source`` only when the
    chat has one; ``markup``/``template``/``reply_to`` are optional and left out.
    UNCONFIRMED: ``message.tag`` is always ``""`` and ``media``/``thumbnail``/
    ``file_name``/``file_size`` are sent empty for text messages."""
    client = next(u for (scope, _), u in store.amojo_users.items()
                  if scope == chat["scope_id"] and u["id"] == chat["client_user_id"])
    body: dict[str, Any] = {
        "account_id": account.amojo_id, "time": int(store.now()),
        "message": {
            "receiver": {"id": client["id"], "phone": client.get("phone") or "",
                         "email": client.get("email") or "", "client_id": client["client_id"]},
            "sender": {"id": msg["sender"]["id"]},
            "conversation": {"id": chat["id"], "client_id": chat["conversation_id"]},
            "timestamp": msg["timestamp"], "msec_timestamp": msg["msec_timestamp"],
            "message": {"id": msg["id"], "type": msg["type"], "text": msg["text"], "tag": "",
                        "media": msg["media"], "thumbnail": msg["thumbnail"],
                        "file_name": msg["file_name"], "file_size": msg["file_size"]}}}
    if chat.get("source") and chat["source"].get("external_id"):
        body["message"]["source"] = {"external_id": chat["source"]["external_id"]}
    return body


def send_hook(url: str, body: dict[str, Any], secret: str, timeout: float) -> dict[str, Any]:
    """POST the hook once (never retried, FACTS 1.13); report the answer."""
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    signature = hmac.new(secret.encode(), raw, hashlib.sha1).hexdigest()
    outcome = core_webhooks.send(url, raw, {"Content-Type": "application/json",
                                       "X-Signature": signature}, timeout)
    return {"url": url, "status": outcome.status, "body": outcome.body(2000),
            "error": outcome.error}
