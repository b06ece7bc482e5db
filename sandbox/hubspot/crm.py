"""CRM objects v3, owners and pipelines (FACTS.md 3.3, 3.5).

Routes (relative to the app's mount point):

* ``GET|POST /crm/v3/objects/{type}``; ``GET|PATCH|DELETE /crm/v3/objects/{type}/{id}``
* ``POST /crm/v3/objects/{type}/search``
* ``POST /crm/v3/objects/{type}/batch/{create,read,update,upsert,archive}``
* ``GET /crm/v3/owners/``, ``GET /crm/v3/owners/{ownerId}``
* ``GET /crm/v3/pipelines/{deals|tickets}[/{pipelineId}[/stages[/{stageId}]]]``

``{type}`` may be a plural name, a singular name or a type id (``0-1``...).
Bodies and query parameters were already checked against the OpenAPI spec by
the app's gate; these handlers enforce HubSpot's semantics.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from . import catalog, records
from .catalog import ObjectType
from .context import auth, current_portal, json_body, sandbox
from .errors import json_response, not_found, validation_error
from .search import run_search
from .store import CrmObject, Portal, Store, iso

__all__ = ["bp", "resolve_or_400", "BATCH_LIMIT"]

bp = Blueprint("crm", __name__)

# Batch size: 100 inputs per call (HubSpot docs, FACTS 3.3; not in the spec).
BATCH_LIMIT = 100
LIST_MAX = 100  # list endpoint page cap (UNCONFIRMED: larger limits are clamped)


def resolve_or_400(raw: str) -> ObjectType:
    """The object type named in a path, or HubSpot's 400 for an unknown type."""
    otype = catalog.resolve_type(raw)
    if otype is None:
        # Message as HubSpot words it for unknown object types (from memory, UNCONFIRMED).
        raise validation_error(f"Unable to infer object type from: {raw}")
    return otype


def _csv(name: str) -> list[str] | None:
    values = [v for raw in request.args.getlist(name) for v in raw.split(",") if v]
    return values or None


def _flag(name: str) -> bool:
    return request.args.get(name, "false").lower() == "true"


def _with_associations(portal: Portal, obj: CrmObject, body: dict[str, Any]) -> dict[str, Any]:
    """Add ``associations`` for ``?associations=`` (SimplePublicObjectWithAssociations)."""
    wanted = _csv("associations")
    if not wanted:
        return body
    out: dict[str, Any] = {}
    for raw in wanted:
        target = catalog.resolve_type(raw)
        if target is None:
            continue  # spec: unknown association types are ignored
        pairs = Store.associations_of(portal, obj.type, obj.id, target.name)
        if pairs:
            label = f"{catalog.OBJECT_TYPES[obj.type].singular}_to_{target.singular}"
            out[target.name] = {"results": [{"id": tid, "type": label} for tid, _ in pairs]}
    if out:
        body["associations"] = out
    return body


def _lookup(portal: Portal, otype: ObjectType, raw_id: str, archived: bool = False) -> CrmObject:
    id_property = request.args.get("idProperty")
    store = sandbox().store
    if id_property and id_property != "hs_object_id":
        pdef = portal.props[otype.name].get(id_property)
        if pdef is None or not pdef.unique:
            raise validation_error(f"{id_property} is not a unique property of {otype.name}")
        obj = store.find_by(portal, otype.name, id_property, raw_id)
        if obj is not None and obj.archived != archived:
            obj = None
    else:
        obj = store.get(portal, otype.name, raw_id, archived=archived)
        if obj is None and not archived and store.cfg["merged_id_resolves"]:
            # a merged-away id opens the surviving record (merge.py; UNCONFIRMED)
            obj = Store.survivor(portal, otype.name, raw_id)
    if obj is None:
        raise not_found()
    return obj


def _batch_inputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = body.get("inputs") or []
    if len(inputs) > BATCH_LIMIT:
        # Wording UNCONFIRMED; the 100-input limit is from HubSpot's docs (FACTS 3.3).
        raise validation_error(f"Too many inputs: {len(inputs)} (a batch takes at most "
                               f"{BATCH_LIMIT} inputs)")
    return list(inputs)


def _batch_response(results: list[dict[str, Any]], started: float,
                    errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results,
                            "startedAt": iso(started), "completedAt": iso(sandbox().store.now())}
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    return body


def _missing_error(otype: ObjectType, ids: list[str]) -> dict[str, Any]:
    """A ``StandardError`` for ids that do not exist (207 multi-status)."""
    return {"status": "error", "category": "OBJECT_NOT_FOUND",
            "message": f"Could not get some {otype.singular.upper()} objects, they may be "
                       "deleted or not exist. Check that ids are valid.",
            "context": {"ids": ids}, "errors": [], "links": {}}


# -- basic ---------------------------------------------------------------------


@bp.route("/crm/v3/objects/<object_type>", methods=["GET"])
@auth("bearer")
def list_objects(object_type: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    limit = min(int(request.args.get("limit", 10)), LIST_MAX)
    after = request.args.get("after")
    archived = _flag("archived")
    with sandbox().store.lock:
        objs = sorted((o for o in portal.objects[otype.name].values() if o.archived == archived),
                      key=lambda o: int(o.id))
        if after:
            if not after.isdigit():
                raise validation_error(f"after must be a paging cursor from a previous page, "
                                       f"got {after!r}")
            objs = [o for o in objs if int(o.id) >= int(after)]
        page, rest = objs[:max(limit, 0)], objs[max(limit, 0):]
        body: dict[str, Any] = {"results": [
            _with_associations(portal, o, Store.render(portal, o, _csv("properties")))
            for o in page]}
        if rest and limit > 0:
            body["paging"] = {"next": {"after": rest[0].id, "link": f"?after={rest[0].id}"}}
    return json_response(body)


@bp.route("/crm/v3/objects/<object_type>", methods=["POST"])
@auth("bearer")
def create_object(object_type: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    body = json_body()
    store = sandbox().store
    with store.lock:
        prepared = records.prepare_create(store, portal, otype.name, body)
        obj = records.commit_create(store, portal, prepared)
        out = Store.render(portal, obj, None, extra=set(obj.properties))
    return json_response(out, 201)


@bp.route("/crm/v3/objects/<object_type>/<object_id>", methods=["GET"])
@auth("bearer")
def get_object(object_type: str, object_id: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    with sandbox().store.lock:
        obj = _lookup(portal, otype, object_id, archived=_flag("archived"))
        body = _with_associations(portal, obj, Store.render(portal, obj, _csv("properties")))
    return json_response(body)


@bp.route("/crm/v3/objects/<object_type>/<object_id>", methods=["PATCH"])
@auth("bearer")
def update_object(object_type: str, object_id: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    body = json_body()
    store = sandbox().store
    with store.lock:
        obj = _lookup(portal, otype, object_id)
        values = records.check_update(store, portal, obj, body.get("properties") or {})
        records.update(store, portal, obj, values)
        out = Store.render(portal, obj, None, extra=set(obj.properties))
    return json_response(out)


@bp.route("/crm/v3/objects/<object_type>/<object_id>", methods=["DELETE"])
@auth("bearer")
def archive_object(object_type: str, object_id: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    store = sandbox().store
    with store.lock:
        obj = store.get(portal, otype.name, object_id)
        # Archiving an unknown or already archived id answers 204 too
        # (idempotent archive; UNCONFIRMED).
        if obj is not None:
            records.archive(store, portal, obj)
    return Response(status=204)


# -- search --------------------------------------------------------------------


@bp.route("/crm/v3/objects/<object_type>/search", methods=["POST"])
@auth("bearer")
def search_objects(object_type: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    body = json_body(default={})
    store = sandbox().store
    with store.lock:
        return json_response(run_search(store, portal, otype.name, body))


# -- batch ---------------------------------------------------------------------


@bp.route("/crm/v3/objects/<object_type>/batch/<action>", methods=["POST"])
@auth("bearer")
def batch(object_type: str, action: str) -> Response:
    otype = resolve_or_400(object_type)
    portal = current_portal()
    body = json_body()
    inputs = _batch_inputs(body)
    store = sandbox().store
    started = store.now()
    with store.lock:
        if action == "create":
            return _batch_create(store, portal, otype, inputs, started)
        if action == "read":
            return _batch_read(store, portal, otype, body, inputs, started)
        if action == "update":
            return _batch_update(store, portal, otype, inputs, started)
        if action == "upsert":
            return _batch_upsert(store, portal, otype, inputs, started)
        if action == "archive":
            for item in inputs:
                obj = store.get(portal, otype.name, str(item.get("id")))
                if obj is not None:
                    records.archive(store, portal, obj)
            return Response(status=204)
    raise not_found()


def _batch_create(store: Store, portal: Portal, otype: ObjectType, inputs: list[dict[str, Any]],
                  started: float) -> Response:
    pending: dict[tuple[str, str], str] = {}
    prepared = [records.prepare_create(store, portal, otype.name, item, pending)
                for item in inputs]
    objs = [records.commit_create(store, portal, p) for p in prepared]
    results = [Store.render(portal, o, None, extra=set(o.properties)) for o in objs]
    return json_response(_batch_response(results, started), 201)


def _batch_read(store: Store, portal: Portal, otype: ObjectType, body: dict[str, Any],
                inputs: list[dict[str, Any]], started: float) -> Response:
    id_property = body.get("idProperty")
    archived = _flag("archived")
    if id_property and id_property != "hs_object_id":
        pdef = portal.props[otype.name].get(id_property)
        if pdef is None or not pdef.unique:
            raise validation_error(f"{id_property} is not a unique property of {otype.name}")
    results, missing = [], []
    for item in inputs:
        raw = str(item.get("id"))
        if id_property and id_property != "hs_object_id":
            obj = store.find_by(portal, otype.name, id_property, raw)
        else:
            obj = store.get(portal, otype.name, raw, archived=archived)
        if obj is None:
            missing.append(raw)
        else:
            results.append(Store.render(portal, obj, body.get("properties") or None))
    if missing:
        return json_response(_batch_response(results, started, [_missing_error(otype, missing)]),
                             207)
    return json_response(_batch_response(results, started))


def _batch_update(store: Store, portal: Portal, otype: ObjectType, inputs: list[dict[str, Any]],
                  started: float) -> Response:
    planned: list[tuple[CrmObject, dict[str, str]]] = []
    missing: list[str] = []
    pending: dict[tuple[str, str], str] = {}
    for item in inputs:
        raw = str(item.get("id"))
        id_property = item.get("idProperty")
        if id_property and id_property != "hs_object_id":
            obj = store.find_by(portal, otype.name, id_property, raw)
        else:
            obj = store.get(portal, otype.name, raw)
        if obj is None:
            missing.append(raw)
            continue
        planned.append((obj, records.check_update(store, portal, obj,
                                                  item.get("properties") or {}, pending)))
    for obj, values in planned:
        records.update(store, portal, obj, values)
    results = [Store.render(portal, o, None, extra=set(v)) for o, v in planned]
    if missing:  # multi-status for unknown ids; UNCONFIRMED (HubSpot may 400 the batch)
        return json_response(_batch_response(results, started, [_missing_error(otype, missing)]),
                             207)
    return json_response(_batch_response(results, started))


def _batch_upsert(store: Store, portal: Portal, otype: ObjectType, inputs: list[dict[str, Any]],
                  started: float) -> Response:
    """Upsert inputs are ``{id, idProperty, properties}`` (FACTS 3.3)."""
    plan: list[tuple[CrmObject | None, Any]] = []
    pending: dict[tuple[str, str], str] = {}
    for item in inputs:
        raw = str(item.get("id"))
        id_property = item.get("idProperty") or "hs_object_id"
        props = dict(item.get("properties") or {})
        if id_property == "hs_object_id":
            obj = store.get(portal, otype.name, raw)
        else:
            pdef = portal.props[otype.name].get(id_property)
            if pdef is None or not pdef.unique:
                raise validation_error(f"{id_property} is not a unique property of {otype.name}")
            obj = store.find_by(portal, otype.name, id_property, raw)
            props.setdefault(id_property, raw)
        if obj is not None:
            plan.append((obj, records.check_update(store, portal, obj, props, pending)))
        elif id_property == "hs_object_id":
            raise validation_error(f"Upsert by hs_object_id needs an existing id, got {raw}")
        else:
            plan.append((None, records.prepare_create(store, portal, otype.name,
                                                      {"properties": props}, pending)))
    results = []
    for obj, work in plan:
        if obj is None:
            created = records.commit_create(store, portal, work)
            body = Store.render(portal, created, None, extra=set(created.properties))
            body["new"] = True
        else:
            records.update(store, portal, obj, work)
            body = Store.render(portal, obj, None, extra=set(work))
            body["new"] = False
        # SimplePublicUpsertObject properties are non-nullable strings.
        body["properties"] = {k: v for k, v in body["properties"].items() if v is not None}
        results.append(body)
    return json_response(_batch_response(results, started))


# -- owners (FACTS 3.5; spec crm-owners.v3.json) --------------------------------


@bp.route("/crm/v3/owners/", methods=["GET"], strict_slashes=False)
@auth("bearer")
def list_owners() -> Response:
    portal = current_portal()
    limit = int(request.args.get("limit", 100))
    if limit < 1 or limit > 500:
        raise validation_error(f"limit must be between 1 and 500, got {limit}")
    after = request.args.get("after", "0")
    offset = int(after) if after.isdigit() else 0
    email = request.args.get("email")
    archived = _flag("archived")
    with sandbox().store.lock:
        owners = [o for o in portal.owners if o["archived"] == archived
                  and (email is None or o["email"].lower() == email.lower())]
        page = owners[offset:offset + limit]
        body: dict[str, Any] = {"results": [dict(o) for o in page]}
        if offset + limit < len(owners):
            nxt = str(offset + limit)
            body["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
    return json_response(body)


@bp.route("/crm/v3/owners/<owner_id>", methods=["GET"])
@auth("bearer")
def get_owner(owner_id: str) -> Response:
    portal = current_portal()
    by = request.args.get("idProperty", "id")
    archived = _flag("archived")
    with sandbox().store.lock:
        for o in portal.owners:
            key = str(o["userId"]) if by == "userId" else o["id"]
            if key == owner_id and o["archived"] == archived:
                return json_response(dict(o))
    raise not_found()


# -- pipelines (FACTS 3.5; spec crm-pipelines.v3.json) ---------------------------


def _pipeline_type(raw: str) -> str:
    otype = resolve_or_400(raw)
    if otype.name not in {"deals", "tickets"}:
        raise validation_error(f"{otype.name} do not have pipelines in this sandbox")
    return otype.name


@bp.route("/crm/v3/pipelines/<object_type>", methods=["GET"])
@auth("bearer")
def list_pipelines(object_type: str) -> Response:
    type_name = _pipeline_type(object_type)
    portal = current_portal()
    with sandbox().store.lock:
        return json_response({"results": [p for p in portal.pipelines[type_name]
                                          if not p["archived"]]})


@bp.route("/crm/v3/pipelines/<object_type>/<pipeline_id>", methods=["GET"])
@auth("bearer")
def get_pipeline(object_type: str, pipeline_id: str) -> Response:
    type_name = _pipeline_type(object_type)
    portal = current_portal()
    with sandbox().store.lock:
        pipeline = portal.pipeline(type_name, pipeline_id)
        if pipeline is None:
            raise not_found()
        return json_response(pipeline)


@bp.route("/crm/v3/pipelines/<object_type>/<pipeline_id>/stages", methods=["GET"])
@auth("bearer")
def list_stages(object_type: str, pipeline_id: str) -> Response:
    type_name = _pipeline_type(object_type)
    portal = current_portal()
    with sandbox().store.lock:
        pipeline = portal.pipeline(type_name, pipeline_id)
        if pipeline is None:
            raise not_found()
        return json_response({"results": pipeline["stages"]})


@bp.route("/crm/v3/pipelines/<object_type>/<pipeline_id>/stages/<stage_id>", methods=["GET"])
@auth("bearer")
def get_stage(object_type: str, pipeline_id: str, stage_id: str) -> Response:
    type_name = _pipeline_type(object_type)
    portal = current_portal()
    with sandbox().store.lock:
        pipeline = portal.pipeline(type_name, pipeline_id)
        for stage in (pipeline or {}).get("stages", []):
            if stage["id"] == stage_id:
                return json_response(stage)
    raise not_found()

