"""Associations v4 (FACTS.md 3.4; spec crm-associations.v4.yaml).

* ``PUT  /crm/v4/objects/{from}/{fromId}/associations/default/{to}/{toId}``
* ``PUT|DELETE /crm/v4/objects/{from}/{fromId}/associations/{to}/{toId}``
* ``GET  /crm/v4/objects/{type}/{id}/associations/{toType}`` (<= 500 per page)
* ``POST /crm/v4/associations/{from}/{to}/batch/{read,create,archive,
  associate/default,labels/archive}``

Associations are symmetric: writing A -> B with a HUBSPOT_DEFINED type id also
writes B -> A with the reverse id from the FACTS 3.4 table. Only the table's
unlabelled HUBSPOT_DEFINED ids are accepted (this sandbox defines no labels).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from . import catalog
from .catalog import ObjectType
from .context import auth, current_portal, json_body, sandbox
from .crm import BATCH_LIMIT, resolve_or_400
from .errors import json_response, not_found, validation_error
from .store import Portal, Store, iso

__all__ = ["bp"]

bp = Blueprint("associations", __name__)

PAGE_MAX = 500  # FACTS 3.4: at most 500 per call


def _pair(from_raw: str, to_raw: str) -> tuple[ObjectType, ObjectType, int]:
    ftype, ttype = resolve_or_400(from_raw), resolve_or_400(to_raw)
    default = catalog.default_type_id(ftype.name, ttype.name)
    if default is None:
        raise validation_error(f"No association type is defined between {ftype.name} and "
                               f"{ttype.name}")
    return ftype, ttype, default


def _exists(portal: Portal, otype: ObjectType, obj_id: str) -> None:
    if Store.get(portal, otype.name, obj_id) is None:
        raise not_found(f"{otype.singular} {obj_id} does not exist")


def _check_specs(specs: list[dict[str, Any]], ftype: ObjectType, ttype: ObjectType,
                 default: int) -> set[tuple[str, int]]:
    out: set[tuple[str, int]] = set()
    for spec in specs:
        category, type_id = spec.get("associationCategory"), spec.get("associationTypeId")
        if category != "HUBSPOT_DEFINED" or type_id != default:
            # Wording UNCONFIRMED; the valid ids are the FACTS 3.4 table's.
            raise validation_error(f"associationTypeId {type_id} ({category}) is not valid "
                                   f"from {ftype.name} to {ttype.name}; expected "
                                   f"HUBSPOT_DEFINED {default}")
        out.add((category, type_id))
    if not out:
        raise validation_error("at least one association type is required")
    return out


def _default_result(ftype: ObjectType, fid: str, ttype: ObjectType,
                    tid: str) -> list[dict[str, Any]]:
    fwd = catalog.default_type_id(ftype.name, ttype.name)
    rev = catalog.default_type_id(ttype.name, ftype.name)
    return [
        {"from": {"id": fid}, "to": {"id": tid},
         "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": fwd}},
        {"from": {"id": tid}, "to": {"id": fid},
         "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": rev}},
    ]


def _labels(ftype: ObjectType, fid: str, ttype: ObjectType, tid: str) -> dict[str, Any]:
    """``LabelsBetweenObjectPair`` (unlabelled associations carry no labels)."""
    return {"fromObjectTypeId": ftype.type_id, "fromObjectId": int(fid),
            "toObjectTypeId": ttype.type_id, "toObjectId": int(tid), "labels": []}


def _multi(pairs: list[tuple[str, set[tuple[str, int]]]]) -> list[dict[str, Any]]:
    return [{"toObjectId": int(tid),
             "associationTypes": [{"category": c, "typeId": t, "label": None}
                                  for c, t in sorted(kinds)]}
            for tid, kinds in pairs]


def _batch(results: list[dict[str, Any]], started: float,
           errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results,
                            "startedAt": iso(started), "completedAt": iso(sandbox().store.now())}
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    return body


def _inputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = body.get("inputs") or []
    if len(inputs) > BATCH_LIMIT:
        raise validation_error(f"Too many inputs: {len(inputs)} (max {BATCH_LIMIT})")
    return list(inputs)


# -- record level ----------------------------------------------------------------


@bp.route("/crm/v4/objects/<from_type>/<from_id>/associations/default/<to_type>/<to_id>",
          methods=["PUT"])
@auth("bearer")
def put_default(from_type: str, from_id: str, to_type: str, to_id: str) -> Response:
    ftype, ttype, default = _pair(from_type, to_type)
    portal = current_portal()
    started = sandbox().store.now()
    with sandbox().store.lock:
        _exists(portal, ftype, from_id)
        _exists(portal, ttype, to_id)
        Store.associate(portal, ftype.name, from_id, ttype.name, to_id, "HUBSPOT_DEFINED", default)
        return json_response(_batch(_default_result(ftype, from_id, ttype, to_id), started))


@bp.route("/crm/v4/objects/<from_type>/<from_id>/associations/<to_type>/<to_id>",
          methods=["PUT"])
@auth("bearer")
def put_labelled(from_type: str, from_id: str, to_type: str, to_id: str) -> Response:
    ftype, ttype, default = _pair(from_type, to_type)
    portal = current_portal()
    specs = json_body()
    with sandbox().store.lock:
        _exists(portal, ftype, from_id)
        _exists(portal, ttype, to_id)
        for category, type_id in _check_specs(specs, ftype, ttype, default):
            Store.associate(portal, ftype.name, from_id, ttype.name, to_id, category, type_id)
        return json_response(_labels(ftype, from_id, ttype, to_id), 201)


@bp.route("/crm/v4/objects/<from_type>/<from_id>/associations/<to_type>/<to_id>",
          methods=["DELETE"])
@auth("bearer")
def delete_pair(from_type: str, from_id: str, to_type: str, to_id: str) -> Response:
    ftype, ttype = resolve_or_400(from_type), resolve_or_400(to_type)
    portal = current_portal()
    with sandbox().store.lock:
        Store.dissociate(portal, ftype.name, from_id, ttype.name, to_id)
    return Response(status=204)


@bp.route("/crm/v4/objects/<object_type>/<object_id>/associations/<to_type>", methods=["GET"])
@auth("bearer")
def list_for_object(object_type: str, object_id: str, to_type: str) -> Response:
    ftype, ttype = resolve_or_400(object_type), resolve_or_400(to_type)
    portal = current_portal()
    limit = min(int(request.args.get("limit", PAGE_MAX)), PAGE_MAX)
    after = request.args.get("after", "0")
    offset = int(after) if after.isdigit() else 0
    with sandbox().store.lock:
        _exists(portal, ftype, object_id)
        pairs = Store.associations_of(portal, ftype.name, object_id, ttype.name)
        body: dict[str, Any] = {"results": _multi(pairs[offset:offset + limit])}
        if offset + limit < len(pairs):
            nxt = str(offset + limit)
            body["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
    return json_response(body)


# -- batch -------------------------------------------------------------------------


@bp.route("/crm/v4/associations/<from_type>/<to_type>/batch/read", methods=["POST"])
@auth("bearer")
def batch_read(from_type: str, to_type: str) -> Response:
    ftype, ttype = resolve_or_400(from_type), resolve_or_400(to_type)
    portal = current_portal()
    inputs = _inputs(json_body())
    started = sandbox().store.now()
    results, missing = [], []
    with sandbox().store.lock:
        for item in inputs:
            fid = str(item.get("id"))
            if Store.get(portal, ftype.name, fid) is None:
                missing.append(fid)
                continue
            pairs = Store.associations_of(portal, ftype.name, fid, ttype.name)
            if pairs:
                results.append({"from": {"id": fid}, "to": _multi(pairs)})
    if missing:
        error = {"status": "error", "category": "OBJECT_NOT_FOUND",
                 "message": f"No {ttype.singular}s found for {ftype.singular} ids",
                 "context": {"fromIds": missing}, "errors": [], "links": {}}
        return json_response(_batch(results, started, [error]), 207)
    return json_response(_batch(results, started))


@bp.route("/crm/v4/associations/<from_type>/<to_type>/batch/create", methods=["POST"])
@auth("bearer")
def batch_create(from_type: str, to_type: str) -> Response:
    ftype, ttype, default = _pair(from_type, to_type)
    portal = current_portal()
    inputs = _inputs(json_body())
    started = sandbox().store.now()
    with sandbox().store.lock:
        plan = []
        for item in inputs:
            fid, tid = str(item["from"]["id"]), str(item["to"]["id"])
            _exists(portal, ftype, fid)
            _exists(portal, ttype, tid)
            plan.append((fid, tid, _check_specs(item.get("types") or [], ftype, ttype, default)))
        for fid, tid, kinds in plan:
            for category, type_id in kinds:
                Store.associate(portal, ftype.name, fid, ttype.name, tid, category, type_id)
        results = [_labels(ftype, fid, ttype, tid) for fid, tid, _ in plan]
    return json_response(_batch(results, started), 201)


@bp.route("/crm/v4/associations/<from_type>/<to_type>/batch/associate/default",
          methods=["POST"])
@auth("bearer")
def batch_default(from_type: str, to_type: str) -> Response:
    ftype, ttype, default = _pair(from_type, to_type)
    portal = current_portal()
    inputs = _inputs(json_body())
    started = sandbox().store.now()
    with sandbox().store.lock:
        pairs = []
        for item in inputs:
            fid, tid = str(item["from"]["id"]), str(item["to"]["id"])
            _exists(portal, ftype, fid)
            _exists(portal, ttype, tid)
            pairs.append((fid, tid))
        results: list[dict[str, Any]] = []
        for fid, tid in pairs:
            Store.associate(portal, ftype.name, fid, ttype.name, tid, "HUBSPOT_DEFINED", default)
            results.extend(_default_result(ftype, fid, ttype, tid))
    return json_response(_batch(results, started))


@bp.route("/crm/v4/associations/<from_type>/<to_type>/batch/archive", methods=["POST"])
@auth("bearer")
def batch_archive(from_type: str, to_type: str) -> Response:
    ftype, ttype = resolve_or_400(from_type), resolve_or_400(to_type)
    portal = current_portal()
    inputs = _inputs(json_body())
    with sandbox().store.lock:
        for item in inputs:
            fid = str(item["from"]["id"])
            for to in item.get("to") or []:
                Store.dissociate(portal, ftype.name, fid, ttype.name, str(to["id"]))
    return Response(status=204)


@bp.route("/crm/v4/associations/<from_type>/<to_type>/batch/labels/archive", methods=["POST"])
@auth("bearer")
def batch_labels_archive(from_type: str, to_type: str) -> Response:
    ftype, ttype, default = _pair(from_type, to_type)
    portal = current_portal()
    inputs = _inputs(json_body())
    with sandbox().store.lock:
        for item in inputs:
            kinds = _check_specs(item.get("types") or [], ftype, ttype, default)
            Store.dissociate(portal, ftype.name, str(item["from"]["id"]), ttype.name,
                             str(item["to"]["id"]), only=kinds)
    return Response(status=204)
