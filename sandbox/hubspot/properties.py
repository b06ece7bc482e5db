"""Properties API v3: the custom properties and groups the bridge creates at
setup. Not covered by the shipped specs, so the handlers check bodies here.

* ``GET|POST /crm/v3/properties/{objectType}``
* ``GET|PATCH|DELETE /crm/v3/properties/{objectType}/{propertyName}``
* ``GET|POST /crm/v3/properties/{objectType}/groups``

Object types by name or type id (``0-1`` contacts, ``0-3`` deals, ``0-5``
tickets...; contracts/README.md). Creating an existing name answers 409;
``groupName`` must name an existing group (standard or created).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response

from . import catalog
from .catalog import PropertyDef
from .context import auth, current_portal, json_body, sandbox
from .crm import resolve_or_400
from .errors import HubSpotError, error_body, json_response, not_found, validation_error
from .store import iso, property_json

__all__ = ["bp"]

bp = Blueprint("properties", __name__)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")


def _already_exists(message: str) -> HubSpotError:
    # 409 for duplicate property/group names; category OBJECT_ALREADY_EXISTS is
    # UNCONFIRMED (from memory of HubSpot's Properties API).
    return HubSpotError(409, error_body(message, "OBJECT_ALREADY_EXISTS"))


def _expect(body: dict[str, Any], name: str, kind: type | tuple[type, ...],
            required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise validation_error(f"{name} is required")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise validation_error(f"{name} has the wrong type ({type(value).__name__})")
    return value


def _options(body: dict[str, Any], ptype: str) -> tuple[tuple[str, str], ...]:
    raw = body.get("options")
    if raw is None:
        if ptype == "enumeration":
            raise validation_error("options are required for enumeration properties")
        return ()
    if not isinstance(raw, list):
        raise validation_error("options must be a list")
    out: list[tuple[str, str]] = []
    for i, opt in enumerate(raw):
        if not isinstance(opt, dict) or not isinstance(opt.get("value"), str) \
                or not isinstance(opt.get("label"), str):
            raise validation_error(f"options[{i}] needs string label and value")
        out.append((opt["value"], opt["label"]))
    return tuple(out)


@bp.route("/crm/v3/properties/<object_type>", methods=["GET"])
@auth("bearer")
def list_properties(object_type: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    created = iso(sandbox().store.started)
    with sandbox().store.lock:
        return json_response({"results": [property_json(p, created)
                                          for p in portal.props[otype.name].values()]})


@bp.route("/crm/v3/properties/<object_type>", methods=["POST"])
@auth("bearer")
def create_property(object_type: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    body = json_body()
    if not isinstance(body, dict):
        raise validation_error("body must be a JSON object")
    name = _expect(body, "name", str)
    label = _expect(body, "label", str)
    ptype = _expect(body, "type", str)
    field_type = _expect(body, "fieldType", str)
    group = _expect(body, "groupName", str)
    if not _NAME.match(name):
        raise validation_error(f"Property name {name!r} is invalid: use lowercase letters, "
                               "digits and underscores, starting with a letter")
    if ptype not in catalog.PROPERTY_TYPES:
        raise validation_error(f"type {ptype!r} is not one of {list(catalog.PROPERTY_TYPES)}")
    if field_type not in catalog.FIELD_TYPES:
        raise validation_error(f"fieldType {field_type!r} is not one of "
                               f"{list(catalog.FIELD_TYPES)}")
    options = _options(body, ptype)
    unique = bool(_expect(body, "hasUniqueValue", bool, required=False))
    description = _expect(body, "description", str, required=False) or ""
    display_order = _expect(body, "displayOrder", int, required=False)
    form_field = bool(_expect(body, "formField", bool, required=False))
    store = sandbox().store
    with store.lock:
        if group not in portal.groups[otype.name]:
            raise validation_error(f"Property group {group!r} does not exist for {otype.name}")
        if name in portal.props[otype.name]:
            raise _already_exists(f"Property named '{name}' already exists.")
        stamp = iso(store.now())
        pdef = PropertyDef(name, label, ptype, field_type, group, options, unique=unique,
                           hubspot_defined=False, description=description,
                           extra={"createdAt": stamp, "updatedAt": stamp,
                                  "displayOrder": display_order if display_order is not None
                                  else -1, "formField": form_field})
        portal.props[otype.name][name] = pdef
        return json_response(property_json(pdef, stamp), 201)


@bp.route("/crm/v3/properties/<object_type>/groups", methods=["GET"])
@auth("bearer")
def list_groups(object_type: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    with sandbox().store.lock:
        return json_response({"results": list(portal.groups[otype.name].values())})


@bp.route("/crm/v3/properties/<object_type>/groups", methods=["POST"])
@auth("bearer")
def create_group(object_type: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    body = json_body()
    if not isinstance(body, dict):
        raise validation_error("body must be a JSON object")
    name = _expect(body, "name", str)
    label = _expect(body, "label", str)
    order = _expect(body, "displayOrder", int, required=False)
    if not _NAME.match(name):
        raise validation_error(f"Group name {name!r} is invalid")
    with sandbox().store.lock:
        if name in portal.groups[otype.name]:
            raise _already_exists(f"Property group named '{name}' already exists.")
        group = {"name": name, "label": label,
                 "displayOrder": order if order is not None else -1, "archived": False}
        portal.groups[otype.name][name] = group
        return json_response(group, 201)


@bp.route("/crm/v3/properties/<object_type>/<property_name>", methods=["GET"])
@auth("bearer")
def get_property(object_type: str, property_name: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    with sandbox().store.lock:
        pdef = portal.props[otype.name].get(property_name)
        if pdef is None:
            raise not_found(f"Unable to find property {property_name} for {otype.name}")
        return json_response(property_json(pdef, iso(sandbox().store.started)))


@bp.route("/crm/v3/properties/<object_type>/<property_name>", methods=["PATCH"])
@auth("bearer")
def update_property(object_type: str, property_name: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    body = json_body()
    with sandbox().store.lock:
        pdef = portal.props[otype.name].get(property_name)
        if pdef is None:
            raise not_found(f"Unable to find property {property_name} for {otype.name}")
        if pdef.hubspot_defined:
            raise validation_error(f"{property_name} is a HubSpot-defined property; its "
                                   "definition is read only in this sandbox")
        changes: dict[str, Any] = {}
        if "label" in body:
            changes["label"] = _expect(body, "label", str)
        if "description" in body:
            changes["description"] = _expect(body, "description", str)
        if "groupName" in body:
            group = _expect(body, "groupName", str)
            if group not in portal.groups[otype.name]:
                raise validation_error(f"Property group {group!r} does not exist")
            changes["group"] = group
        if "options" in body:
            changes["options"] = _options(body, pdef.type)
        extra = dict(pdef.extra, updatedAt=iso(sandbox().store.now()))
        new = PropertyDef(**{**pdef.__dict__, **changes, "extra": extra})
        portal.props[otype.name][property_name] = new
        return json_response(property_json(new, extra.get("createdAt", "")))


@bp.route("/crm/v3/properties/<object_type>/<property_name>", methods=["DELETE"])
@auth("bearer")
def delete_property(object_type: str, property_name: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    with sandbox().store.lock:
        pdef = portal.props[otype.name].get(property_name)
        if pdef is None:
            raise not_found(f"Unable to find property {property_name} for {otype.name}")
        if pdef.hubspot_defined:
            raise validation_error(f"{property_name} is a HubSpot-defined property and "
                                   "cannot be archived")
        del portal.props[otype.name][property_name]
    return Response(status=204)
