"""Merging two records, and the ``contact.merge`` webhook (FACTS.md 3.3, 3.6).

* ``POST /crm/v3/objects/{type}/merge`` with ``PublicMergeInput``
  ``{"primaryObjectId", "objectIdToMerge"}`` (both strings, both required:
  spec ``crm-objects-contacts.v3.json`` path ``/merge``) answers 200 with the
  surviving record (``SimplePublicObject``).
* ``POST /_merge`` (control, no auth): ``{"account"?, "primary_id",
  "merged_id", "type"?}``, a person merging two records in HubSpot's UI.

What a merge does here (HubSpot's merge guide, knowledge.hubspot.com
"merge records"; the details are UNCONFIRMED unless said otherwise):

* the primary's values win; a property the primary lacks takes the
  secondary's value; the secondary's e-mail goes to ``hs_additional_emails``;
* every association of the secondary (deals, tickets, notes, tasks,
  communications) moves to the survivor; a custom-channel thread of the
  secondary is associated with the survivor;
* the secondary leaves every read, search and list; its id is kept in the
  survivor's ``hs_merged_object_ids`` (property name: HubSpot/hubspot-api-nodejs#6)
  and a GET of it answers the survivor (config ``merged_id_resolves``);
* config ``merge_new_id``: the merge makes a new record both ids resolve to
  (the changelog's ``newObjectId``: "in some cases a new object is created");
* merging a pair that is merged already: config ``merge_again`` (400, or 200
  with the survivor).

Then, when the app has a webhook target (config ``crm_webhook_url``: the one
URL of the app's webhook settings, for every portal) and a subscription to
``contact.merge`` (config ``crm_webhook_subscriptions``), the event goes out
v3-signed (FACTS 3.6) in a JSON array, as every CRM-object event does
(events.py: at once, or held until ``POST /_crm_webhooks/flush``), with
the merge fields of HubSpot's changelog "New subscription types for
Webhooks": ``primaryObjectId``, ``mergedObjectIds`` (array),
``newObjectId``, ``numberOfPropertiesMoved``. ``objectId`` is the survivor
(UNCONFIRMED). The API's own merges fire it too (``changeSource``
``INTEGRATION``; a person's: ``CRM_UI``). The record merged away fires no
``.deletion``; the survivor's changed properties fire their
``.propertyChange`` (both UNCONFIRMED).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response

from ..core.control import ControlError, json_object
from . import catalog, events
from .context import auth, current_portal, json_body, sandbox
from .crm import resolve_or_400
from .errors import HubSpotError, error_body, json_response, not_found, validation_error
from .events import deliver
from .records import archive, update
from .store import CrmObject, Portal, Store

__all__ = ["bp", "merge_records"]

bp = Blueprint("merge", __name__)

#: properties a merge never copies from the secondary
_OWN = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate",
                  "hs_createdate", "hs_merged_object_ids", "hs_additional_emails", "email"})


@dataclass
class Merged:
    """The outcome of one merge, for the answer and the webhook."""

    survivor: CrmObject
    primary_id: str
    merged_id: str
    moved: int
    again: bool = False


def _merged_ids(obj: CrmObject) -> list[str]:
    raw = obj.properties.get("hs_merged_object_ids") or ""
    return [part for part in raw.split(";") if part]


def _absorb(store: Store, portal: Portal, into: CrmObject, gone: CrmObject) -> int:
    """Move ``gone``'s values, e-mail and associations to ``into``; archive
    ``gone``. Returns how many properties moved."""
    values: dict[str, str] = {}
    for name, value in gone.properties.items():
        if name in _OWN or not value or into.properties.get(name):
            continue
        pdef = portal.props[gone.type].get(name)
        if pdef is None or pdef.unique or pdef.calculated:
            continue  # a unique value stays with one record; calculated ones follow
        values[name] = value
    moved = len(values)
    email = gone.properties.get("email")
    if gone.type == "contacts" and email:
        extra = [e for e in (into.properties.get("hs_additional_emails") or "").split(";") if e]
        values["hs_additional_emails"] = ";".join(dict.fromkeys([*extra, email]))
    ids = [*_merged_ids(into), gone.id, *_merged_ids(gone)]
    values["hs_merged_object_ids"] = ";".join(dict.fromkeys(ids))
    for (ttype, tid), kinds in list(portal.assoc.get((gone.type, gone.id), {}).items()):
        for category, type_id in list(kinds):
            store.associate(portal, gone.type, into.id, ttype, tid, category, type_id)
    for thread in portal.threads.values():
        if gone.type == "contacts" and thread.get("associatedContactId") == gone.id:
            thread["associatedContactId"] = into.id
    archive(store, portal, gone, notify=False)  # the merge's own event tells
    portal.merged[(gone.type, gone.id)] = into.id
    update(store, portal, into, values)  # computed properties, modified date, unique index
    return moved


def _live_or_merged(portal: Portal, type_name: str, raw_id: str) -> CrmObject:
    obj = Store.get(portal, type_name, raw_id) or Store.survivor(portal, type_name, raw_id)
    if obj is None:
        # wording and status for an unknown id UNCONFIRMED
        raise not_found(f"Object not found. objectId are usually numeric. ({raw_id})")
    return obj


def merge_records(store: Store, portal: Portal, type_name: str, primary_id: str,
                  merged_id: str) -> Merged:
    """Merge ``merged_id`` into ``primary_id`` (caller holds the lock)."""
    if primary_id == merged_id:
        raise validation_error("Cannot merge an object with itself")  # wording UNCONFIRMED
    primary = _live_or_merged(portal, type_name, primary_id)
    secondary = _live_or_merged(portal, type_name, merged_id)
    if primary.id == secondary.id:
        if store.cfg["merge_again"] == "ok":
            return Merged(primary, primary_id, merged_id, 0, again=True)
        raise HubSpotError(400, error_body(  # wording UNCONFIRMED
            f"Object {merged_id} has already been merged into {primary.id}",
            "VALIDATION_ERROR"))
    if store.cfg["merge_new_id"]:
        now = store.now()
        fresh = CrmObject(store.next_id(), type_name, {}, now, now)
        fresh.properties.update({k: v for k, v in primary.properties.items()
                                 if k not in ("hs_object_id", "hs_merged_object_ids")})
        fresh.properties["hs_object_id"] = fresh.id
        portal.objects[type_name][fresh.id] = fresh
        moved = _absorb(store, portal, fresh, primary)
        moved += _absorb(store, portal, fresh, secondary)
        return Merged(fresh, primary_id, merged_id, moved)
    moved = _absorb(store, portal, primary, secondary)
    return Merged(primary, primary_id, merged_id, moved)


def webhook_event(store: Store, portal: Portal, type_name: str,
                  merged: Merged) -> dict[str, Any] | None:
    """One ``<type>.merge`` event (FACTS 3.6 delivery fields + the changelog's
    merge fields), or None when the app does not subscribe to it."""
    event_type = f"{catalog.OBJECT_TYPES[type_name].singular}.merge"
    sub_id = events.subscription(store, event_type)
    if sub_id is None:
        return None
    return events.event(
        store, portal, sub_id, event_type, merged.survivor.id,
        primaryObjectId=int(merged.primary_id), mergedObjectIds=[int(merged.merged_id)],
        newObjectId=int(merged.survivor.id), numberOfPropertiesMoved=merged.moved)


@bp.route("/crm/v3/objects/<object_type>/merge", methods=["POST"])
@auth("bearer")
def merge(object_type: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    body = json_body()
    primary_id = str(body.get("primaryObjectId") or "")
    merged_id = str(body.get("objectIdToMerge") or "")
    if not primary_id or not merged_id:
        raise validation_error("primaryObjectId and objectIdToMerge are required")
    store = sandbox().store
    with store.lock:
        merged = merge_records(store, portal, otype.name, primary_id, merged_id)
        out = Store.render(portal, merged.survivor, None,
                           extra=set(merged.survivor.properties))
        event = None if merged.again else webhook_event(store, portal, otype.name, merged)
    if event is not None:
        deliver(store, [event])
    return json_response(out)


@bp.route("/_merge", methods=["POST"])
def merge_in_ui() -> Response:
    """A person merges two records in HubSpot's UI: the merge, then the
    webhook. Answers the survivor's id and the delivery's outcome."""
    body = json_object()
    store = sandbox().store
    type_name = str(body.get("type") or "contacts")
    if catalog.resolve_type(type_name) is None:
        raise ControlError(f"unknown object type {type_name}")
    with store.lock:
        portal = events.portal_for(store, body.get("account"))
        otype = catalog.resolve_type(type_name)
        assert otype is not None
        primary_id, merged_id = str(body.get("primary_id", "")), str(body.get("merged_id", ""))
        if not primary_id.isdigit() or not merged_id.isdigit():
            raise ControlError("primary_id and merged_id must be record ids")
        try:
            merged = merge_records(store, portal, otype.name, primary_id, merged_id)
        except HubSpotError as exc:
            raise ControlError(str(exc.body.get("message")), exc.status) from None
        event = webhook_event(store, portal, otype.name, merged)
    outcome = deliver(store, [event]) if event is not None else None
    return json_response({"id": merged.survivor.id, "event": event, "webhook": outcome})
