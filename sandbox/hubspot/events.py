"""The app's CRM-object webhooks: the events of its subscriptions, sent to its
one target URL (FACTS.md 3.6).

HubSpot sends the events of every portal that installed an app to the one
target URL of the app's webhook settings (config ``crm_webhook_url``; None:
nothing is sent), for the subscriptions the developer created there (config
``crm_webhook_subscriptions``, each in the shape of the webhooks v3 spec's
``SubscriptionCreateRequest``: ``{"eventType", "propertyName"?, "active"?}``;
the spec is upstream only, ``PublicApiSpecs/Webhooks/.../v3/webhooks.json``).
An event carries the delivery fields of FACTS 3.6::

    {"eventId", "subscriptionId", "portalId", "appId", "occurredAt" (ms),
     "subscriptionType", "attemptNumber", "objectId", "changeSource",
     "sourceId"?, "propertyName"?, "propertyValue"?}

What fires, for a subscription of the record's type (``deal.*`` for deals):

* ``<type>.propertyChange`` with ``propertyName``: a write that changes that
  property (a create too with config ``crm_webhook_change_on_create``, which
  is UNCONFIRMED); ``propertyValue`` is the new value. A write of the same
  value changes nothing and fires nothing (UNCONFIRMED);
* ``<type>.creation``: a create; ``<type>.deletion``: an archive (``DELETE``,
  batch archive; a record merged away fires its merge instead, UNCONFIRMED);
* ``<type>.merge``: a merge (merge.py builds that event).

``changeSource`` is ``CRM_UI`` for the controls (a person in HubSpot) and
``INTEGRATION`` for the API, with ``sourceId`` the app's id for an OAuth
token (both UNCONFIRMED beyond the field list). Writes queue their events
(under the store's lock); after the request the queue goes out v3-signed in
one JSON array, or is held (config ``crm_webhook_hold``) until ``POST
/_crm_webhooks/flush`` sends every portal's held events together,
``crm_webhook_batch_size`` per array (FACTS 3.6: up to 100, UNCONFIRMED).

Controls (no auth): ``POST /_edit`` ``{"account"?, "type"?: "deals", "id",
"properties": {...}}`` -- a person edits a record in HubSpot's UI (a stage
moved, an owner given); ``POST /_delete`` ``{"account"?, "type"?, "id"}`` --
a person deletes one. Each answers the events fired and the delivery's
outcome.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from flask import Blueprint, Response, g, has_request_context, request

from ..core import webhooks
from ..core.control import ControlError, json_object
from . import catalog
from .context import sandbox
from .errors import HubSpotError, json_response
from .signature import v3_headers
from .store import CrmObject, Portal, Store, iso

__all__ = [
    "bp",
    "ACTIONS",
    "check_subscriptions",
    "created",
    "deleted",
    "deliver",
    "event",
    "flush",
    "portal_for",
    "property_changed",
    "subscription",
]

bp = Blueprint("events", __name__)

_EVENT_IDS = itertools.count(700000001)
#: the first subscription's id; the others follow in the config's order
FIRST_SUBSCRIPTION_ID = 4242001
#: the actions of the spec's ``eventType`` enum (``<object>.<action>``)
ACTIONS = frozenset(
    {
        "associationChange",
        "creation",
        "deletion",
        "merge",
        "newMessage",
        "privacyDeletion",
        "propertyChange",
        "restore",
        "completed",
    }
)
_USER_AGENT = "HubSpot Connect 2.0 (http://dev.hubspot.com/)"


# -- subscriptions ---------------------------------------------------------------------


def check_subscriptions(value: Any) -> None:
    """``crm_webhook_subscriptions``; ValueError names the entry and the fix."""
    if not isinstance(value, list):
        raise ValueError("crm_webhook_subscriptions must be a list")
    for i, sub in enumerate(value):
        where = f"crm_webhook_subscriptions[{i}]"
        if not isinstance(sub, dict) or set(sub) - {"eventType", "propertyName", "active"}:
            raise ValueError(f"{where} must be an object with eventType, propertyName?, active?")
        name, _, action = str(sub.get("eventType") or "").partition(".")
        if not name or action not in ACTIONS:
            raise ValueError(f"{where}.eventType must be <object>.<action>, e.g. deal.deletion")
        prop = sub.get("propertyName")
        if (action == "propertyChange") != isinstance(prop, str) or prop == "":
            raise ValueError(
                f"{where}: propertyName names the property of a propertyChange "
                "subscription, and only of one"
            )
        if not isinstance(sub.get("active", True), bool):
            raise ValueError(f"{where}.active must be a boolean")


def subscription(store: Store, event_type: str, prop: str | None = None) -> int | None:
    """The id of the active subscription to ``event_type`` (and ``prop``), or
    None when the app has none or no target URL."""
    if not store.cfg["crm_webhook_url"]:
        return None
    for i, sub in enumerate(store.cfg["crm_webhook_subscriptions"]):
        if (
            sub["eventType"] == event_type
            and sub.get("propertyName") == prop
            and sub.get("active", True)
        ):
            return FIRST_SUBSCRIPTION_ID + i
    return None


def _source() -> tuple[str, str | None]:
    """``changeSource`` and ``sourceId`` of the current request's writes."""
    if not has_request_context() or request.path.startswith("/_"):
        return "CRM_UI", None
    auth = getattr(g, "hubspot_auth", None)
    app_id = getattr(auth, "app_id", None) if getattr(auth, "kind", "") == "oauth" else None
    return "INTEGRATION", None if app_id is None else str(app_id)


def event(
    store: Store,
    portal: Portal,
    subscription_id: int,
    event_type: str,
    object_id: str,
    **fields: Any,
) -> dict[str, Any]:
    """One event of ``event_type`` (FACTS 3.6 delivery fields; ids are numbers
    as in HubSpot's payloads), with ``fields`` added."""
    source, source_id = _source()
    out: dict[str, Any] = {
        "eventId": next(_EVENT_IDS),
        "subscriptionId": subscription_id,
        "portalId": portal.id,
        "appId": store.cfg["app"]["app_id"],
        "occurredAt": int(store.now() * 1000),
        "subscriptionType": event_type,
        "attemptNumber": 0,
        "objectId": int(object_id),
        "changeSource": source,
    }
    if source_id is not None:
        out["sourceId"] = source_id
    out.update(fields)
    return out


# -- what writes fire (records.py calls these under the store's lock) ----------------


def _singular(obj: CrmObject) -> str:
    return catalog.OBJECT_TYPES[obj.type].singular


def property_changed(
    store: Store, portal: Portal, obj: CrmObject, before: dict[str, str] | None
) -> None:
    """Queue ``<type>.propertyChange`` for each subscribed property the write
    changed (``before``: the properties before it; None: a create)."""
    if before is None and not store.cfg["crm_webhook_change_on_create"]:
        return
    event_type = f"{_singular(obj)}.propertyChange"
    for sub in store.cfg["crm_webhook_subscriptions"]:
        prop = sub.get("propertyName")
        if sub["eventType"] != event_type or prop is None:
            continue
        value = obj.properties.get(prop)
        if value is None or value == (before or {}).get(prop):
            continue
        sub_id = subscription(store, event_type, prop)
        if sub_id is not None:
            store.crm_event_queue.append(
                event(
                    store,
                    portal,
                    sub_id,
                    event_type,
                    obj.id,
                    propertyName=prop,
                    propertyValue=value,
                )
            )


def _lifecycle(store: Store, portal: Portal, obj: CrmObject, action: str) -> None:
    event_type = f"{_singular(obj)}.{action}"
    sub_id = subscription(store, event_type)
    if sub_id is not None:
        store.crm_event_queue.append(event(store, portal, sub_id, event_type, obj.id))


def created(store: Store, portal: Portal, obj: CrmObject) -> None:
    """Queue ``<type>.creation`` (and the create's property changes)."""
    _lifecycle(store, portal, obj, "creation")
    property_changed(store, portal, obj, None)


def deleted(store: Store, portal: Portal, obj: CrmObject) -> None:
    """Queue ``<type>.deletion``."""
    _lifecycle(store, portal, obj, "deletion")


# -- delivery --------------------------------------------------------------------------


def deliver(store: Store, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """POST ``events`` to the app's webhook target, v3-signed (outside the
    lock: the receiver may call back), or hold them for :func:`flush` (config
    ``crm_webhook_hold``: ``{"held": <events waiting>}``). None when the app
    has no target or there is nothing to send."""
    url = store.cfg["crm_webhook_url"]
    if not url or not events:
        return None
    if store.cfg["crm_webhook_hold"]:
        with store.lock:
            store.held_events.extend(events)
            return {"held": len(store.held_events)}
    return _post(store, url, events)


def flush(store: Store) -> tuple[int, list[dict[str, Any]]]:
    """Send the held events to the app's target: every portal's together,
    in arrays of up to ``crm_webhook_batch_size`` events, one POST each, in
    the order they happened. How many were sent, and each POST's outcome."""
    with store.lock:
        events, store.held_events = store.held_events, []
        url = store.cfg["crm_webhook_url"]
        size = int(store.cfg["crm_webhook_batch_size"])
    if not url:
        return 0, []
    return len(events), [
        _post(store, url, events[i : i + size]) for i in range(0, len(events), size)
    ]


def _post(store: Store, url: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    body = json.dumps(events, separators=(",", ":"))
    headers: dict[str, str | None] = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
    headers.update(v3_headers(store.cfg["app"]["client_secret"], "POST", url, body))
    outcome = webhooks.send(
        url,
        body.encode("utf-8"),
        headers,
        float(store.cfg["webhook_timeout_s"]),
        allow_redirects=True,
    )
    result = {"status": outcome.status, "body": outcome.body(), "error": outcome.error}
    store.deliveries.append(
        {"at": iso(store.now()), "url": url, "payload": events, "result": result}
    )
    return result


def _take(store: Store) -> list[dict[str, Any]]:
    with store.lock:
        events, store.crm_event_queue = store.crm_event_queue, []
    return events


@bp.after_app_request
def send_queued(response: Response) -> Response:
    """After every request: send the events its writes queued."""
    store = sandbox().store
    events = _take(store)
    if events:
        deliver(store, events)
    return response


# -- controls ----------------------------------------------------------------------------


def portal_for(store: Store, account: Any) -> Portal:
    """The portal a control names (``account``: its id; default the first)."""
    if account in (None, ""):
        portal = next(iter(store.portals.values()), None)
    else:
        portal = store.portals.get(int(str(account))) if str(account).isdigit() else None
    if portal is None:
        raise ControlError(f"unknown account {account}", 404, "account_not_found")
    return portal


def _record(store: Store, body: dict[str, Any]) -> tuple[Portal, CrmObject]:
    otype = catalog.resolve_type(str(body.get("type") or "deals"))
    if otype is None:
        raise ControlError(f"unknown object type {body.get('type')}")
    portal = portal_for(store, body.get("account"))
    obj = Store.get(portal, otype.name, str(body.get("id", "")))
    if obj is None:
        raise ControlError(f"no live {otype.name} record {body.get('id')}", 404, "not_found")
    return portal, obj


@bp.route("/_edit", methods=["POST"])
def edit_in_ui() -> Response:
    """A person edits a record in HubSpot's UI: the write (validated as the
    API validates it), then the events it fires."""
    from .records import check_update, update  # records imports this module

    body = json_object()
    props = body.get("properties")
    if not isinstance(props, dict) or not props:
        raise ControlError("properties must be a non-empty object")
    store = sandbox().store
    with store.lock:
        portal, obj = _record(store, body)
        try:
            values = check_update(
                store, portal, obj, {k: "" if v is None else str(v) for k, v in props.items()}
            )
        except HubSpotError as exc:
            raise ControlError(str(exc.body.get("message")), exc.status) from None
        update(store, portal, obj, values)
    events = _take(store)
    return json_response(
        {
            "id": obj.id,
            "properties": dict(obj.properties),
            "events": events,
            "webhook": deliver(store, events),
        }
    )


@bp.route("/_delete", methods=["POST"])
def delete_in_ui() -> Response:
    """A person deletes a record in HubSpot's UI: archived, then its event."""
    from .records import archive

    body = json_object()
    store = sandbox().store
    with store.lock:
        portal, obj = _record(store, body)
        archive(store, portal, obj)
    events = _take(store)
    return json_response({"id": obj.id, "events": events, "webhook": deliver(store, events)})


@bp.route("/_crm_webhooks/flush", methods=["POST"])
def flush_held() -> Response:
    """Send the CRM-object events held back (config ``crm_webhook_hold``):
    ``{"events": <how many>, "deliveries": [<outcome of each POST>]}``."""
    sent, deliveries = flush(sandbox().store)
    return json_response({"events": sent, "deliveries": deliveries})
