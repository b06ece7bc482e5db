"""CRM record writes: property validation, required properties, uniqueness,
inline associations, create/update/upsert/archive (FACTS.md 3.3, 3.4).

Callers hold ``store.lock``. Validation happens before any write, so a batch
either commits entirely or not at all. Every write queues the app's webhook
events it fires (events.py) and enrols the records in workflows.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import phonenumbers

from . import catalog, events
from .errors import HubSpotError, error_body, property_errors, validation_error
from .store import CrmObject, Portal, Store, iso
from .workflows import enrol

__all__ = [
    "Prepared",
    "prepare_create",
    "commit_create",
    "update",
    "archive",
    "e164",
    "to_millis",
    "PHONE_PROPS",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

PHONE_PROPS = frozenset({"phone", "mobilephone", "hs_whatsapp_phone_number",
                         "hs_searchable_calculated_phone_number"})

# Required on create. Each inner tuple is "at least one of".
# Confirmed (FACTS 3.3): contacts need one of email/firstname/lastname;
# communications need the channel type and logged_from.
_REQUIRED_CONFIRMED: dict[str, list[tuple[str, ...]]] = {
    "contacts": [("email", "firstname", "lastname")],
    "communications": [("hs_communication_channel_type",), ("hs_communication_logged_from",)],
}
# UNCONFIRMED (FACTS 3.3: from HubSpot guides, not the stored sources):
# enforced only when config `enforce_unconfirmed_required` is true.
_REQUIRED_UNCONFIRMED: dict[str, list[tuple[str, ...]]] = {
    "deals": [("dealname",), ("pipeline",), ("dealstage",)],
    "tickets": [("subject",), ("hs_pipeline",), ("hs_pipeline_stage",)],
    "notes": [("hs_timestamp",), ("hs_note_body",)],
    "tasks": [("hs_timestamp",), ("hs_task_body", "hs_task_subject"), ("hs_task_status",),
              ("hs_task_priority",), ("hubspot_owner_id",)],
    "communications": [("hs_communication_body",), ("hs_timestamp",)],
}


def to_millis(value: str) -> int | None:
    """Epoch ms from ms digits or an ISO 8601 date/date-time; None if neither."""
    value = value.strip()
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def e164(value: str) -> str:
    """Phone normalisation for matching (FACTS 3.3: search by E.164; UNCONFIRMED
    how HubSpot matches). Parseable numbers become E.164, others their digits."""
    raw = value.strip()
    candidate = raw if raw.startswith("+") else ("+" + raw[2:] if raw.startswith("00") else raw)
    try:
        num = phonenumbers.parse(candidate, None)
        if phonenumbers.is_possible_number(num):
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    except phonenumbers.NumberParseException:
        pass
    return re.sub(r"\D", "", raw)


def _national_digits(value: str) -> str:
    normal = e164(value)
    if normal.startswith("+"):
        try:
            return str(phonenumbers.parse(normal, None).national_number)
        except phonenumbers.NumberParseException:
            pass
    return re.sub(r"\D", "", value)


def _problem(name: str, error: str, message: str) -> dict[str, str]:
    return {"name": name, "error": error, "message": message}


def _stage_options(portal: Portal, type_name: str, pipeline_id: str | None) -> list[str]:
    pipeline = portal.pipeline(type_name, pipeline_id or "")
    return [s["id"] for s in pipeline["stages"] if not s["archived"]] if pipeline else []


def _check_value(portal: Portal, type_name: str, name: str, value: str,
                 merged: dict[str, str], problems: list[dict[str, str]]) -> str:
    """Validate and normalise one value; append problems."""
    pdef = portal.props[type_name][name]
    options: list[str] | None = None
    if name == "hubspot_owner_id":
        options = portal.owner_ids()
    elif (type_name, name) in {("deals", "pipeline"), ("tickets", "hs_pipeline")}:
        options = [p["id"] for p in portal.pipelines[type_name] if not p["archived"]]
    elif (type_name, name) in {("deals", "dealstage"), ("tickets", "hs_pipeline_stage")}:
        pipe_prop = "pipeline" if type_name == "deals" else "hs_pipeline"
        # HubSpot puts a stage without a pipeline in the default pipeline.
        default = "default" if type_name == "deals" else "0"
        pipeline_id = merged.get(pipe_prop) or default
        if portal.pipeline(type_name, pipeline_id) is None:
            return value  # the pipeline itself is reported invalid
        options = _stage_options(portal, type_name, pipeline_id)
    elif pdef.type == "enumeration" and not pdef.external_options:
        options = [v for v, _ in pdef.options]
    if options is not None:
        values = value.split(";") if pdef.field_type == "checkbox" else [value]
        for v in values:
            if v not in options:
                # Message format as in a live INVALID_OPTION body (community).
                problems.append(_problem(name, "INVALID_OPTION",
                                         f"{v} was not one of the allowed options: "
                                         f"[{', '.join(options)}]"))
        return value
    if pdef.type == "number":
        try:
            float(value)
        except ValueError:
            problems.append(_problem(name, "INVALID_DECIMAL",  # code UNCONFIRMED
                                     f"{value} was not a valid number."))
        return value
    if pdef.type in {"datetime", "date"}:
        ms = to_millis(value)
        if ms is None:
            problems.append(_problem(name, "INVALID_DATE",  # code UNCONFIRMED
                                     f"{value} is not a valid date or timestamp."))
            return value
        # HubSpot returns datetime values as ISO 8601 whatever was written.
        return iso(ms / 1000.0)
    if pdef.type == "bool":
        if value.lower() not in {"true", "false"}:
            problems.append(_problem(name, "INVALID_BOOLEAN",  # code UNCONFIRMED
                                     f"{value} is not a valid boolean."))
        return value.lower()
    if type_name == "contacts" and name == "email":
        if not _EMAIL.match(value):
            problems.append(_problem(name, "INVALID_EMAIL", f"Email address {value} is invalid"))
        # HubSpot stores email addresses lower-cased (case-insensitive identity).
        return value.lower()
    return value


def check_properties(store: Store, portal: Portal, type_name: str, props: dict[str, str],
                     existing: CrmObject | None) -> dict[str, str]:
    """Validate writes; return normalised values ("" clears a property)."""
    problems: list[dict[str, str]] = []
    defined = portal.props[type_name]
    merged = dict(existing.properties) if existing else {}
    merged.update(props)
    out: dict[str, str] = {}
    for name, value in props.items():
        pdef = defined.get(name)
        if pdef is None:
            problems.append(_problem(name, "PROPERTY_DOESNT_EXIST",
                                     f'Property "{name}" does not exist'))
            continue
        if pdef.read_only:
            problems.append(_problem(name, "READ_ONLY_VALUE",
                                     f"{name} is a read only property; its value cannot be set."))
            continue
        if value == "":
            out[name] = ""
            continue
        out[name] = _check_value(portal, type_name, name, value, merged, problems)
    if existing is None:
        required = list(_REQUIRED_CONFIRMED.get(type_name, []))
        if store.cfg["enforce_unconfirmed_required"]:
            required += _REQUIRED_UNCONFIRMED.get(type_name, [])
        for names in required:
            if not any(out.get(n) for n in names):
                # Entry shape mirrors the other property errors; code UNCONFIRMED.
                problems.append(_problem(names[0], "REQUIRED_PROPERTY",
                                         f"Property {' or '.join(repr(n) for n in names)} "
                                         "is required"))
    if problems:
        raise property_errors(problems)
    return out


def _unique_conflict(store: Store, portal: Portal, type_name: str, values: dict[str, str],
                     self_id: str | None, pending: dict[tuple[str, str], str]) -> None:
    for name, value in values.items():
        pdef = portal.props[type_name].get(name)
        if pdef is None or not pdef.unique or value == "":
            continue
        key = (name, value.lower() if name == "email" else value)
        other = store.find_by(portal, type_name, name, value)
        claimed = pending.get(key)
        if other is None and claimed is not None and (self_id is None or claimed != self_id):
            # Two inputs of one batch claim the same unique value (wording UNCONFIRMED).
            raise validation_error(f"Duplicate value {value!r} for unique property {name} "
                                   "within the batch inputs")
        other_id = other.id if other is not None else None
        if other_id is not None and other_id != self_id:
            if type_name == "contacts" and name == "email":
                # FACTS 3.3: 409 "Contact already exists. Existing ID: <id>".
                message = f"Contact already exists. Existing ID: {other_id}"
            else:  # wording for other unique properties UNCONFIRMED
                message = (f"A {catalog.OBJECT_TYPES[type_name].singular} with {name} "
                           f"{value} already exists. Existing ID: {other_id}")
            raise HubSpotError(409, error_body(message, "CONFLICT"))
        pending[key] = self_id or "pending-new"


def _check_associations(portal: Portal, type_name: str,
                        associations: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    """Inline associations on create: infer the target type from the type id
    (FACTS 3.4 table); the target must exist in the same portal."""
    out: list[tuple[str, str, str, int]] = []
    for i, assoc in enumerate(associations):
        to_id = str((assoc.get("to") or {}).get("id", ""))
        for spec in assoc.get("types") or []:
            category = spec.get("associationCategory")
            type_id = spec.get("associationTypeId")
            target = (catalog.target_for_type_id(type_name, type_id)
                      if category == "HUBSPOT_DEFINED" and isinstance(type_id, int) else None)
            if target is None:
                raise validation_error(
                    f"associations[{i}]: association type {category}/{type_id} is not "
                    f"valid from {type_name}")
            if target not in portal.objects:
                raise validation_error(
                    f"associations[{i}]: {target} objects are not supported by this sandbox")
            if Store.get(portal, target, to_id) is None:
                raise validation_error(f"associations[{i}]: {target} {to_id} does not exist")
            out.append((target, to_id, category, type_id))
    return out


@dataclass
class Prepared:
    """A validated create, ready to commit."""

    type_name: str
    properties: dict[str, str]
    associations: list[tuple[str, str, str, int]]


def prepare_create(store: Store, portal: Portal, type_name: str, body: dict[str, Any],
                   pending: dict[tuple[str, str], str] | None = None) -> Prepared:
    """Validate one create input (``SimplePublicObjectInputForCreate``)."""
    props = check_properties(store, portal, type_name, body.get("properties") or {}, None)
    _unique_conflict(store, portal, type_name, props, None, pending if pending is not None else {})
    assoc = _check_associations(portal, type_name, body.get("associations") or [])
    return Prepared(type_name, props, assoc)


def _computed(obj: CrmObject) -> None:
    otype = catalog.OBJECT_TYPES[obj.type]
    obj.properties["hs_object_id"] = obj.id
    obj.properties.setdefault(otype.created_prop, iso(obj.created_at))
    obj.properties[otype.modified_prop] = iso(obj.updated_at)
    if obj.type == "contacts":
        phone = obj.properties.get("phone")
        if phone:
            obj.properties["hs_searchable_calculated_phone_number"] = _national_digits(phone)
        else:
            obj.properties.pop("hs_searchable_calculated_phone_number", None)


def commit_create(store: Store, portal: Portal, prepared: Prepared) -> CrmObject:
    """Write a prepared create and its associations."""
    now = store.now()
    obj = CrmObject(store.next_id(), prepared.type_name,
                    {k: v for k, v in prepared.properties.items() if v != ""}, now, now)
    _computed(obj)
    portal.objects[prepared.type_name][obj.id] = obj
    store.index(portal, obj)
    for target, to_id, category, type_id in prepared.associations:
        store.associate(portal, prepared.type_name, obj.id, target, to_id, category, type_id)
    enrol(store, portal, obj, None)  # workflows whose trigger the new record meets
    events.created(store, portal, obj)
    return obj


def check_update(store: Store, portal: Portal, obj: CrmObject, props: dict[str, str],
                 pending: dict[tuple[str, str], str] | None = None) -> dict[str, str]:
    """Validate a PATCH of ``obj``; returns the normalised values. ``pending``
    carries unique values claimed earlier in the same batch."""
    values = check_properties(store, portal, obj.type, props, obj)
    _unique_conflict(store, portal, obj.type, values, obj.id,
                     pending if pending is not None else {})
    return values


def update(store: Store, portal: Portal, obj: CrmObject, values: dict[str, str]) -> CrmObject:
    """Apply validated values (see :func:`check_update`)."""
    store.index(portal, obj, add=False)
    before = dict(obj.properties)
    for name, value in values.items():
        if value == "":
            obj.properties.pop(name, None)
        else:
            obj.properties[name] = value
    obj.updated_at = max(store.now(), obj.updated_at)
    _computed(obj)
    store.index(portal, obj)
    enrol(store, portal, obj, before)  # workflows whose trigger the write met
    events.property_changed(store, portal, obj, before)
    return obj


def archive(store: Store, portal: Portal, obj: CrmObject, notify: bool = True) -> None:
    """Archive (HubSpot's DELETE): hidden from reads, associations removed;
    ``notify``: the ``.deletion`` event fires (not for a record merged away)."""
    store.index(portal, obj, add=False)
    obj.archived = True
    obj.archived_at = store.now()
    store.drop_associations(portal, obj.type, obj.id)
    if notify:
        events.deleted(store, portal, obj)
