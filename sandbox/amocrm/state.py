"""The ``GET /_state`` dump of the sandbox amoCRM (control API, JSON;
the envelope is :mod:`sandbox.core.control`'s).

Per account (``accounts``): users, pipelines, custom fields, contacts (with custom field
values), companies, leads (status/pipeline/responsible/closed_at/contacts),
the Unsorted records, the Sources API's sources, notes, tasks, webhook
subscriptions and their delivery attempts, chats (with the name of their
source) and their messages (direction, msgid/ref_id, text, delivery
statuses, linked contact/lead), token-endpoint call counts. Top level: the
integration, the channel and its connections, token-endpoint counts, the
install/disconnect/chat hook deliveries and the pending webhook retries.
"""

from __future__ import annotations

from typing import Any

from .fields import render_values
from .sources import source_name
from .store import Account, Store

__all__ = ["dump_account", "dump_extras", "render_message", "render_chat"]


def _tags(store: Store, account: Account, entity: str, obj: dict[str, Any]) -> list[str]:
    return [t["name"] for t in (store.tag_by_id(account, entity, tid) for tid in obj["tags"])
            if t]


def render_message(msg: dict[str, Any]) -> dict[str, Any]:
    return {"id": msg["id"], "ref_id": msg["ref_id"], "direction": msg["direction"],
            "type": msg["type"], "text": msg["text"], "media": msg["media"] or None,
            "file_name": msg["file_name"] or None, "file_size": msg["file_size"] or None,
            # what the sandbox got when it downloaded media (sandbox/core/media.py)
            "fetched": msg.get("fetched"),
            "sender": msg["sender"], "receiver": msg["receiver"], "silent": msg["silent"],
            "origin": msg["origin"], "source": msg.get("source"),
            "timestamp": msg["timestamp"], "lead_id": msg["lead_id"],
            "delivery_statuses": list(msg["delivery_statuses"]), "edits": list(msg["edits"])}


def render_chat(store: Store, chat: dict[str, Any]) -> dict[str, Any]:
    """A chat; ``source_name``: what it shows for its source, the name of the
    account's source (Sources API) with the chat's ``external_id``, or None
    when no such source is registered (UNCONFIRMED, sandbox.amocrm.sources)."""
    client = next((u for (scope, _), u in store.amojo_users.items()
                   if scope == chat["scope_id"] and u["id"] == chat["client_user_id"]), None)
    account = store.accounts.get(chat["account_id"])
    external_id = (chat["source"] or {}).get("external_id")
    return {"id": chat["id"], "scope_id": chat["scope_id"],
            "conversation_id": chat["conversation_id"], "contact_id": chat["contact_id"],
            "lead_id": chat["lead_id"], "source": chat["source"],
            "source_name": source_name(account, external_id) if account else None,
            "client": client,
            "created_at": chat["created_at"],
            "messages": [render_message(store.messages[m]) for m in chat["messages"]]}


def _contact(store: Store, account: Account, entity: str, obj: dict[str, Any]
             ) -> dict[str, Any]:
    out = {k: obj.get(k) for k in ("id", "name", "first_name", "last_name",
                                   "responsible_user_id", "created_by", "updated_by",
                                   "created_at", "updated_at", "closest_task_at",
                                   "is_deleted")}
    out["is_unsorted"] = bool(obj.get("is_unsorted"))
    out["custom_fields_values"] = render_values(account, entity, obj["custom_fields_values"])
    out["tags"] = _tags(store, account, entity, obj)
    out["companies"] = list(obj.get("companies", []))
    out["leads"] = sorted(lid for lid, lead in account.leads.items()
                          if any(c["id"] == obj["id"] for c in lead[entity]))
    if entity == "contacts":
        out["chats"] = sorted(c["id"] for c in store.chats.values()
                              if c["contact_id"] == obj["id"])
    return out


def _lead(store: Store, account: Account, lead: dict[str, Any]) -> dict[str, Any]:
    out = {k: lead[k] for k in ("id", "name", "price", "status_id", "pipeline_id",
                                "responsible_user_id", "created_by", "updated_by",
                                "created_at", "updated_at", "closed_at", "closest_task_at",
                                "loss_reason_id", "is_deleted", "is_unsorted")}
    out["custom_fields_values"] = render_values(account, "leads", lead["custom_fields_values"])
    out["tags"] = _tags(store, account, "leads", lead)
    out["contacts"] = [dict(c) for c in lead["contacts"]]
    out["companies"] = [c["id"] for c in lead["companies"]]
    return out


def dump_account(store: Store, account: Account) -> dict[str, Any]:
    """One account's dump. Caller holds the lock."""
    now = store.now()
    oauth = store.oauth
    long_lived = [{"token": a.token, "user_id": a.user_id, "expires_at": int(a.expires_at)}
                  for a in oauth.access.values()
                  if a.account == account.id and a.family is None]
    return {
        "id": account.id, "subdomain": account.subdomain, "amojo_id": account.amojo_id,
        "name": account.name, "installed": account.installed,
        "subscription_active": account.subscription_active,
        "users": [dict(u) for u in account.users.values()],
        "pipelines": [dict(p, statuses=[dict(s) for s in p["statuses"]])
                      for p in account.pipelines.values()],
        "custom_fields": {e: list(f.values()) for e, f in account.fields.items()},
        "contacts": [_contact(store, account, "contacts", c)
                     for c in sorted(account.contacts.values(), key=lambda c: c["id"])],
        "companies": [_contact(store, account, "companies", c)
                      for c in sorted(account.companies.values(), key=lambda c: c["id"])],
        "leads": [_lead(store, account, lead)
                  for lead in sorted(account.leads.values(), key=lambda lead: lead["id"])],
        "unsorted": list(account.unsorted.values()),
        "sources": sorted(account.sources.values(), key=lambda s: s["id"]),
        "notes": sorted(account.notes.values(), key=lambda n: n["id"]),
        "tasks": sorted(account.tasks.values(), key=lambda t: t["id"]),
        "webhooks": [dict({k: v for k, v in w.items() if not k.startswith("_")},
                          invalid_answers=len(w.get("_invalid", [])))
                     for w in account.webhooks.values()],
        "webhook_deliveries": [d for d in store.deliveries if d["account_id"] == account.id],
        "chats": [render_chat(store, c) for c in store.chats.values()
                  if c["account_id"] == account.id],
        "token_calls": dict(account.token_calls),
        "tokens": {"access": sum(1 for a in oauth.access.values()
                                 if a.account == account.id and a.expires_at > now
                                 and a.family is not None),
                   "refresh": sum(1 for r in oauth.refresh.values() if r.account == account.id),
                   "long_lived": long_lived},
    }


def dump_extras(store: Store, pending: list[dict[str, Any]]) -> dict[str, Any]:
    """The app-wide parts of ``GET /_state``. Caller holds the lock."""
    integ = store.cfg["integration"]
    codes = store.oauth.codes.values()
    return {
        "integration": {"client_id": integ["client_id"], "redirect_uri": integ["redirect_uri"]},
        "channel": dict(store.cfg["channel"]),
        "connections": list(store.connections.values()),
        "oauth": {"token_calls": dict(store.token_calls),
                  "token_failures": dict(store.token_failures),
                  "codes_issued": len(codes),
                  "codes_used": sum(1 for c in codes if c.used)},
        "install_hooks": store.install_hooks.list(),
        "disconnect_hooks": store.disconnect_hooks.list(),
        "chat_hooks": store.chat_hooks.list(),
        "webhook_pending": pending,
    }
