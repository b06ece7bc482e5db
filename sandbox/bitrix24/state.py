"""``GET /_state``: everything the sandbox holds, as JSON (caller holds the lock).

Per portal (``accounts``, :func:`portal_state`): users, webhooks, the app's
installation, directories, pipelines, user fields, leads / contacts / deals
with multifields and timelines, tasks (with status), event bindings, the
outgoing webhooks (with their tokens), the offline queue, placements, lines,
connectors, Open Lines chats with messages, unmatched receipts. App-wide
(:func:`dump_extras`): the clock, the app, OAuth token-endpoint counts, event
deliveries (of the selected portal), pending deliveries, leaky-bucket levels,
operating time.
"""

from __future__ import annotations

from typing import Any

from .automation import outgoing_state
from .context import Sandbox
from .crm import KINDS, entity_json
from .store import Portal

__all__ = ["dump_extras", "portal_state", "timeline"]


def _message(rec: dict[str, Any]) -> dict[str, Any]:
    return {"id": rec["id"], "direction": rec["direction"], "external_id": rec["external_id"],
            "text": rec["text"], "files": rec["files"], "date": rec["date"],
            "author": rec["author"], "deleted": rec["deleted"], "updated": rec["updated"],
            "delivered": rec["delivered"], "read": rec["read"]}


def timeline(portal: Portal, entity_type: str | None = None,
             entity_id: int | None = None) -> dict[str, Any]:
    """Timeline comments and to-dos (optionally of one record)."""
    owner_types = {"lead": 1, "deal": 2, "contact": 3, "company": 4}
    comments = [dict(c) for c in portal.comments.values()
                if (entity_type is None or c["ENTITY_TYPE"] == entity_type)
                and (entity_id is None or c["ENTITY_ID"] == entity_id)]
    todos = [dict(a) for a in portal.activities.values()
             if (entity_type is None or a["ownerTypeId"] == owner_types.get(entity_type))
             and (entity_id is None or a["ownerId"] == entity_id)]
    return {"comments": comments, "activities": todos}


def portal_state(sb: Sandbox, portal: Portal) -> dict[str, Any]:
    out: dict[str, Any] = {
        "domain": portal.domain, "member_id": portal.member_id, "plan": portal.plan,
        "users": list(portal.users.values()),
        "webhooks": [{"user_id": h["user_id"], "code": h["code"], "scopes": h.get("scopes", [])}
                     for h in portal.webhooks.values()],
        "app": None if portal.app is None else {
            "installed": True, "finished": portal.app.finished,
            "application_token": portal.app.application_token,
            "installed_by": portal.app.installed_by, "handler": portal.app.handler,
            "install_result": portal.app.result},
        "statuses": list(portal.statuses),
        "deal_categories": [{"id": 0, "name": "General", "isDefault": "Y"}]
        + [dict(c, isDefault="N") for c in portal.categories],
        "user_fields": {k: list(v.values()) for k, v in portal.user_fields.items()},
    }
    for kind in KINDS:
        out[kind + "s"] = [
            {"id": ent.id, "fields": entity_json(portal, kind, ent),
             "multifields": {k: [dict(m) for m in v] for k, v in ent.multi.items()},
             "links": dict(ent.fields.get("_links") or {}),
             "timeline": timeline(portal, kind, ent.id)}
            for ent in sorted(portal.entities[kind].values(), key=lambda e: e.id)]
    out["timeline"] = timeline(portal)
    # status: tasks-task-list.md ("5" is completed), so the demo page lists open ones
    out["tasks"] = [{"id": tid, "title": t["task"]["title"],
                     "responsibleId": t["task"]["responsibleId"],
                     "createdBy": t["task"]["createdBy"], "deadline": t["task"]["deadline"],
                     "description": t["task"]["description"], "UF_CRM_TASK": t["UF_CRM_TASK"],
                     "status": t["task"]["status"]}
                    for tid, t in sorted(portal.tasks.items())]
    out["event_bindings"] = [dict(b) for b in portal.bindings]
    out["outgoing_webhooks"] = outgoing_state(sb.cfg, portal)
    out["offline_queue"] = list(portal.offline_queue)
    out["placements"] = list(portal.placements)
    out["open_lines"] = [dict(line) for line in portal.lines.values()]
    out["connectors"] = [
        dict(c, lines=[{"line": line, "active": a["active"], "data": a["data"]}
                       for (cid, line), a in sorted(portal.activations.items())
                       if cid == c["ID"]])
        for c in portal.connectors.values()]
    out["chats"] = [
        {k: v for k, v in chat.items() if k != "messages"}
        | {"messages": [_message(portal.messages[m]) for m in chat["messages"]]}
        for chat in sorted(portal.chats.values(), key=lambda c: c["id"])]
    out["unmatched_receipts"] = list(portal.unmatched_receipts)
    return out


def dump_extras(sb: Sandbox, domain: str | None = None) -> dict[str, Any]:
    store = sb.store
    drains = {p.domain: float(sb.cfg["limits"][p.plan]["drain_per_s"])
              for p in store.portals.values()}
    now = sb.clock.now()
    oauth = store.oauth
    levels = sb.bucket.levels(lambda key: drains.get(str(key), 2.0))
    return {
        "now": now, "clock_offset": sb.clock.offset,
        "app": {"client_id": store.cfg["app"]["client_id"], "scope": store.cfg["app"]["scope"]},
        "oauth": {"token_endpoint": dict(store.oauth_calls),
                  "live_access_tokens": sum(1 for t in oauth.access.values()
                                            if t.expires_at > now),
                  "live_refresh_tokens": len(oauth.refresh), "codes": len(oauth.codes)},
        "deliveries": [d for d in store.deliveries if domain is None or d["portal"] == domain],
        "pending_deliveries": sb.dispatcher.in_flight,
        "bucket": {str(k): round(v, 3) for k, v in levels.items()
                   if domain is None or k == domain},
        "operating": [o for o in sb.meter.snapshot() if domain is None or o["portal"] == domain],
    }
