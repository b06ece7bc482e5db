"""The sandbox HubSpot's control API: its hooks into the common one
(:mod:`sandbox.core.control`) plus HubSpot's own controls. Never faulted,
never rate limited, no auth.

* ``GET /_state[?account=<portal id>]`` -- per portal (``accounts``): the CRM,
  associations, channel accounts, threads and messages, owners, pipelines
  (with stage labels), custom properties; app-wide: the app, the custom
  channels, the outgoing webhook deliveries.
* ``POST /_reply`` -- ``{"account"?, "contact_id" | "conversation", "text",
  "user_id"?, "sender_name"?, "in_reply_to_id"?}``: a rep replies in the
  contact's most recent custom-channel thread (``conversation``: the thread's
  ``integrationThreadId``); ``user_id`` is an owner id or user id (default:
  the first owner). Fires the signed OUTGOING_CHANNEL_MESSAGE_CREATED webhook.
* ``POST /_reset``, ``GET|POST /_config``, ``GET|POST /_clock``, ``/_faults``,
  ``GET /_stats`` -- as every sandbox.
* ``POST /_install`` -- ``{"client_id", "redirect_uri", "portal_id"?, "scopes"?}``
  -> ``{"code", "portal_id", "redirect_uri"}`` for scripted installs.
* ``POST /_merge`` -- ``{"account"?, "primary_id", "merged_id", "type"?}``: a
  person merges two records in the UI; fires ``contact.merge`` (merge.py).
* ``POST /_edit`` -- ``{"account"?, "type"?, "id", "properties"}``: a person
  edits a record in the UI (a deal's stage or owner); ``POST /_delete`` --
  ``{"account"?, "type"?, "id"}``: a person deletes one. Each fires the app's
  subscribed events (events.py).
* ``POST /_crm_webhooks/flush`` -- send the CRM-object events held back
  (config ``crm_webhook_hold``): every portal's in the same arrays to the
  app's one target URL (events.py).
* ``POST /_workflows/flush`` -- run every pending retry of the workflows'
  webhook actions now (config ``workflow_webhooks``; workflows.py).
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response

from ..core import webhooks
from ..core.control import ControlError, Reply, Vendor, json_object
from .catalog import OBJECT_TYPES
from .channels import build_reply, find_reply_target, outgoing_webhook_payload
from .config import SETTINGS
from .context import Sandbox, sandbox
from .errors import json_response
from .oauth import OAuthError, create_code
from .signature import v3_headers
from .store import Portal, Store, iso, property_json
from .workflows import Workflows

__all__ = ["bp", "HubSpotSandbox"]

bp = Blueprint("control", __name__)


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
    # merged-away records -> the record each was merged into (merge.py)
    out["merges"] = [{"type": t, "id": i, "into": into}
                     for (t, i), into in sorted(portal.merged.items())]
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


def _owner(portal: Portal, actor_id: Any) -> dict[str, Any] | None:
    if actor_id is None:
        return portal.owners[0] if portal.owners else None
    raw = str(actor_id).removeprefix("A-")
    for owner in portal.owners:
        if raw in {owner["id"], str(owner["userId"])}:
            return owner
    return None


def deliver_webhook(url: str, payload: dict[str, Any], client_secret: str,
                    timeout: float) -> dict[str, Any]:
    """POST a v3-signed JSON webhook (FACTS 3.6/3.7); failures are reported."""
    body = json.dumps(payload, separators=(",", ":"))
    headers: dict[str, str | None] = {
        "Content-Type": "application/json",
        "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/)"}
    headers.update(v3_headers(client_secret, "POST", url, body))
    outcome = webhooks.send(url, body.encode("utf-8"), headers, timeout, allow_redirects=True)
    return {"status": outcome.status, "body": outcome.body(), "error": outcome.error}


@dataclass
class HubSpotSandbox(Sandbox, Vendor):
    """The sandbox HubSpot as the common control API sees it."""

    name = "hubspot"

    def __post_init__(self) -> None:
        self.workflows = Workflows(self.store)

    @property
    def lock(self) -> Any:
        return self.store.lock

    def accounts(self) -> list[Portal]:
        return list(self.store.portals.values())

    def account_key(self, account: Portal) -> Hashable:
        return account.id

    def find_account(self, selector: str) -> Portal | None:
        return self.store.portals.get(int(selector)) if selector.isdigit() else None

    def dump_account(self, account: Portal) -> dict[str, Any]:
        return _portal_state(self.store, account)

    def dump_extras(self, account: Portal | None) -> dict[str, Any]:
        app = self.cfg["app"]
        return {"app": {"app_id": app["app_id"], "client_id": app["client_id"]},
                "custom_channels": list(self.store.channels.values()),
                "webhook_deliveries": self.store.deliveries.list(),
                "held_crm_events": list(self.store.held_events),
                **self.workflows.state()}

    def get_config(self) -> dict[str, Any]:
        return self.store.cfg

    def set_config(self, values: dict[str, Any]) -> None:
        self.store.cfg = SETTINGS.update(self.store.cfg, values)
        if "seed" in values:  # re-seed the fault plan's RNG too
            self.faults.update({"seed": values["seed"]})
        if "workflow_webhook_lose_answers" in values:  # counts from now on
            self.workflows.lost = 0

    def reset(self, options: dict[str, Any]) -> None:
        with self.store.lock:
            self.store.reset(self.store.cfg)
        self.limiter.reset()
        self.workflows.reset()

    def reply(self, reply: Reply) -> dict[str, Any]:
        store = self.store
        with store.lock:
            portal_id = None
            if reply.account is not None:
                found = self.find_account(reply.account)
                if found is None:
                    raise ControlError(f"unknown account {reply.account}", 404,
                                       "account_not_found")
                portal_id = found.id
            target = find_reply_target(store, reply.contact_id, reply.conversation, portal_id)
            if isinstance(target, str):
                text_ = {"contact_not_found": "contact not found",
                         "no_thread": "the contact has no custom-channel thread"}.get(
                    target, "no custom-channel thread has that integrationThreadId")
                raise ControlError(text_, 404, target)
            portal, thread = target
            owner = _owner(portal, reply.user_id)
            if owner is None:
                raise ControlError(f"unknown user_id {reply.user_id}", 404, "owner_not_found")
            name = (reply.body.get("sender_name")
                    or f"{owner['firstName']} {owner['lastName']}".strip())
            message = build_reply(store, portal, thread, reply.text, owner, name,
                                  reply.body.get("in_reply_to_id"))
            payload = outgoing_webhook_payload(store, portal, thread, message)
            channel = store.channels.get(thread["channelId"]) or {}
            url = channel.get("webhookUrl")
            secret = store.cfg["app"]["client_secret"]
            timeout = float(store.cfg["webhook_timeout_s"])
        # Deliver outside the lock: the receiver may call back into this sandbox.
        if url:
            outcome = deliver_webhook(url, payload, secret, timeout)
        else:
            outcome = {"status": None, "body": None, "error": "the channel has no webhookUrl"}
        store.deliveries.append({"at": iso(store.now()), "url": url, "payload": payload,
                                 "result": outcome})
        return {"message": message, "webhook": outcome}


# -- HubSpot's own controls --------------------------------------------------------------


@bp.route("/_install", methods=["POST"])
def install() -> Response:
    body = json_object()
    store = sandbox().store
    with store.lock:
        portal_id = body.get("portal_id", next(iter(store.portals), None))
        if not isinstance(portal_id, int):
            raise ControlError("portal_id must be an integer")
        scopes = body.get("scopes") or list(store.cfg["app"].get("scopes", []))
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ControlError("scopes must be a list of strings")
        try:
            code = create_code(store, portal_id, str(body.get("client_id", "")),
                               str(body.get("redirect_uri", "")), scopes)
        except OAuthError as exc:
            raise ControlError(exc.message, 400, exc.status) from None
    return json_response({"code": code, "portal_id": portal_id,
                          "redirect_uri": body.get("redirect_uri", "")})
