"""Control API (JSON; for scripts, tests and the demo page). Never faulted,
never rate limited, no auth.

* ``GET  /_state[?portal_id=]`` -- dump of the CRM, associations, channels,
  threads and messages, owners, pipelines (with stage labels), custom
  properties, webhook deliveries.
* ``POST /_reply`` -- ``{"contact_id", "text", "portal_id"?, "sender_name"?,
  "actor_id"?, "in_reply_to_id"?}``: a rep replies in the contact's most recent
  custom-channel thread; fires the signed outgoing-message webhook.
* ``POST /_reset`` -- back to the seeded state (config and fault plan kept).
* ``GET|POST /_config`` -- read / change run-time settings.
* ``POST /_install`` -- ``{"client_id", "redirect_uri", "portal_id"?, "scopes"?}``
  -> ``{"code", "portal_id", "redirect_uri"}`` for scripted installs.
* ``/_faults`` -- the shared fault plan (:mod:`sandbox.faults`).
"""

from __future__ import annotations

import json
from typing import Any

import requests
from flask import Blueprint, Response, request

from .catalog import OBJECT_TYPES
from .channels import build_reply, find_reply_target, outgoing_webhook_payload
from .config import update_config
from .context import sandbox
from .errors import json_response
from .oauth import OAuthError, create_code
from .signature import v3_headers
from .store import Portal, Store, iso, now_s, property_json

__all__ = ["bp", "deliver_webhook", "dump_state"]

bp = Blueprint("control", __name__)

_DELIVERY_LOG = 100


def _bad(message: str, status: int = 400, error: str = "bad_request") -> Response:
    return json_response({"error": error, "message": message}, status)


def _body() -> dict[str, Any]:
    try:
        data = json.loads(request.get_data() or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


# -- state ---------------------------------------------------------------------------


def _portal_state(store: Store, portal: Portal) -> dict[str, Any]:
    out: dict[str, Any] = {"portal_id": portal.id, "name": portal.name,
                           "time_zone": portal.time_zone}
    for type_name, objs in portal.objects.items():
        out[type_name] = [{"id": o.id, "properties": dict(o.properties),
                           "createdAt": iso(o.created_at), "updatedAt": iso(o.updated_at),
                           "archived": o.archived}
                          for o in sorted(objs.values(), key=lambda o: int(o.id))]
    assoc = []
    for (ftype, fid), edges in sorted(portal.assoc.items()):
        for (ttype, tid), kinds in sorted(edges.items()):
            if kinds:
                assoc.append({"fromObjectType": ftype, "fromObjectTypeId":
                              OBJECT_TYPES[ftype].type_id, "fromId": fid,
                              "toObjectType": ttype, "toObjectTypeId":
                              OBJECT_TYPES[ttype].type_id, "toId": tid,
                              "types": [{"associationCategory": c, "associationTypeId": t}
                                        for c, t in sorted(kinds)]})
    out["associations"] = assoc
    out["owners"] = [dict(o) for o in portal.owners]
    # the demo page shows stage labels, not ids (GET /crm/v3/pipelines/{deals|tickets})
    out["pipelines"] = {t: [dict(p, stages=[dict(s) for s in p["stages"]]) for p in pipes]
                        for t, pipes in portal.pipelines.items()}
    created = iso(store.started)
    out["custom_properties"] = {
        t: [property_json(p, created) for p in props.values() if not p.hubspot_defined]
        for t, props in portal.props.items()}
    out["property_groups"] = {t: list(g.values()) for t, g in portal.groups.items()}
    out["inboxes"] = list(portal.inboxes)
    out["channel_accounts"] = list(portal.channel_accounts.values())
    threads = []
    for thread in portal.threads.values():
        messages = []
        for mid in thread["messages"]:
            rec = portal.messages[mid]
            pub = rec["public"]
            status = pub.get("status") or {}
            messages.append({
                "id": mid, "direction": pub["direction"], "text": pub["text"],
                "status": status.get("statusType"),
                "errorMessage": (status.get("failureDetails") or {}).get("errorMessage"),
                "statusHistory": rec.get("statusHistory", []),
                "integrationThreadId": rec["integrationThreadId"],
                "integrationIdempotencyId": rec["integrationIdempotencyId"],
                "senders": pub["senders"], "recipients": pub["recipients"],
                "createdAt": pub["createdAt"], "timestamp": rec["timestamp"],
                "source": rec["source"]})
        threads.append({"id": thread["id"], "channelId": thread["channelId"],
                        "channelAccountId": thread["channelAccountId"],
                        "inboxId": thread["inboxId"],
                        "integrationThreadId": thread["integrationThreadId"],
                        "customer": thread["customer"],
                        "associatedContactId": thread["associatedContactId"],
                        "createdAt": thread["createdAt"],
                        "latestMessageTimestamp": thread["latestMessageTimestamp"],
                        "messages": messages})
    out["threads"] = threads
    return out


def dump_state(store: Store, portal_id: int | None = None) -> dict[str, Any]:
    """The ``GET /_state`` body. Caller holds the lock."""
    portals = [p for p in store.portals.values() if portal_id is None or p.id == portal_id]
    app = store.cfg["app"]
    return {"app": {"app_id": app["app_id"], "client_id": app["client_id"]},
            "custom_channels": list(store.channels.values()),
            "portals": [_portal_state(store, p) for p in portals],
            "webhook_deliveries": list(store.deliveries)}


@bp.route("/_state", methods=["GET"])
def state() -> Response:
    raw = request.args.get("portal_id")
    if raw is not None and not raw.isdigit():
        return _bad("portal_id must be an integer")
    store = sandbox().store
    with store.lock:
        if raw is not None and int(raw) not in store.portals:
            return _bad(f"unknown portal {raw}", 404, "portal_not_found")
        return json_response(dump_state(store, int(raw) if raw is not None else None))


# -- replies and webhooks ---------------------------------------------------------------


def deliver_webhook(url: str, payload: dict[str, Any], client_secret: str,
                    timeout: float) -> dict[str, Any]:
    """POST a v3-signed JSON webhook (FACTS 3.6/3.7); failures are reported."""
    body = json.dumps(payload, separators=(",", ":"))
    headers = {"Content-Type": "application/json",
               "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/)"}
    headers.update(v3_headers(client_secret, "POST", url, body))
    try:
        resp = requests.post(url, data=body.encode("utf-8"), headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        return {"status": None, "body": None, "error": f"{type(exc).__name__}: {exc}"}
    try:
        answer: Any = resp.json()
    except ValueError:
        answer = resp.text
    return {"status": resp.status_code, "body": answer}


def _owner(portal: Portal, actor_id: Any) -> dict[str, Any] | None:
    if actor_id is None:
        return portal.owners[0] if portal.owners else None
    raw = str(actor_id).removeprefix("A-")
    for owner in portal.owners:
        if raw in {owner["id"], str(owner["userId"])}:
            return owner
    return None


@bp.route("/_reply", methods=["POST"])
def reply() -> Response:
    try:
        body = _body()
    except ValueError as exc:
        return _bad(str(exc))
    contact_id, text = body.get("contact_id"), body.get("text")
    if contact_id is None or not isinstance(text, str) or not text:
        return _bad("contact_id and a non-empty text are required")
    portal_id = body.get("portal_id")
    if portal_id is not None and not isinstance(portal_id, int):
        return _bad("portal_id must be an integer")
    sb = sandbox()
    store = sb.store
    with store.lock:
        target = find_reply_target(store, str(contact_id), portal_id)
        if isinstance(target, str):
            text_ = ("contact not found" if target == "contact_not_found"
                     else "the contact has no custom-channel thread")
            return _bad(text_, 404, target)
        portal, thread = target
        owner = _owner(portal, body.get("actor_id"))
        if owner is None:
            return _bad(f"unknown actor_id {body.get('actor_id')}", 404, "owner_not_found")
        name = body.get("sender_name") or f"{owner['firstName']} {owner['lastName']}".strip()
        message = build_reply(store, portal, thread, text, owner, name,
                              body.get("in_reply_to_id"))
        payload = outgoing_webhook_payload(portal, thread, message)
        channel = store.channels.get(thread["channelId"]) or {}
        url = channel.get("webhookUrl")
        secret = store.cfg["app"]["client_secret"]
        timeout = float(store.cfg["webhook_timeout_s"])
    # Deliver outside the lock: the receiver may call back into this sandbox.
    if url:
        outcome = deliver_webhook(url, payload, secret, timeout)
    else:
        outcome = {"status": None, "body": None, "error": "the channel has no webhookUrl"}
    with store.lock:
        store.deliveries.append({"at": iso(now_s()), "url": url, "payload": payload,
                                 "result": outcome})
        del store.deliveries[:-_DELIVERY_LOG]
    return json_response({"message": message, "webhook": outcome})


# -- reset, config, install ------------------------------------------------------------


@bp.route("/_reset", methods=["POST"])
def reset() -> Response:
    sb = sandbox()
    with sb.store.lock:
        sb.store.reset(sb.store.cfg)
    sb.limiter.reset()
    return json_response({"ok": True})


@bp.route("/_config", methods=["GET", "POST"])
def config() -> Response:
    sb = sandbox()
    with sb.store.lock:
        if request.method == "POST":
            try:
                values = _body()
                sb.store.cfg = update_config(sb.store.cfg, values)
            except ValueError as exc:
                return _bad(str(exc), 400, "invalid_config")
            if "seed" in values:  # re-seed the fault plan's RNG too
                sb.faults.update({"seed": values["seed"]})
        return json_response(sb.store.cfg)


@bp.route("/_install", methods=["POST"])
def install() -> Response:
    try:
        body = _body()
    except ValueError as exc:
        return _bad(str(exc))
    store = sandbox().store
    with store.lock:
        portal_id = body.get("portal_id", next(iter(store.portals), None))
        if not isinstance(portal_id, int):
            return _bad("portal_id must be an integer")
        scopes = body.get("scopes") or list(store.cfg["app"].get("scopes", []))
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return _bad("scopes must be a list of strings")
        try:
            code = create_code(store, portal_id, str(body.get("client_id", "")),
                               str(body.get("redirect_uri", "")), scopes)
        except OAuthError as exc:
            return _bad(exc.message, 400, exc.status)
    return json_response({"code": code, "portal_id": portal_id,
                          "redirect_uri": body.get("redirect_uri", "")})
