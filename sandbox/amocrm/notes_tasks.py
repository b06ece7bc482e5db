"""Notes (FACTS.md 1.9) and tasks (FACTS.md 1.10).

Notes:

* ``POST /<sub>/api/v4/{leads|contacts|companies}/notes`` (items carry
  ``entity_id``) and ``/{entity_type}/<id>/notes``; response
  ``_embedded.notes[{id, entity_id, request_id}]``.
* ``GET`` the same paths (``filter[note_type]``, ``filter[entity_id]`` on the
  type-level list, ``filter[id]``, ``order``, paging; 204 when none) and
  ``…/notes/<note_id>``.
* ``note_type`` must be one of FACTS 1.9's ten; ``params`` are checked per
  type (which keys are *required* is our reading of FACTS 1.9's lists).
* with the config switch ``strip_zero_width`` (UNCONFIRMED behaviour), the
  texts of notes and tasks lose their zero-width characters on write.

Tasks:

* ``POST /<sub>/api/v4/tasks`` (array; required ``text`` and ``complete_till``;
  ``responsible_user_id`` defaults to the token's user)
* ``GET /<sub>/api/v4/tasks`` (``filter[entity_id|entity_type|is_completed|
  responsible_user_id|task_type]``; 204 when none), ``GET /tasks/<id>``
* ``PATCH /<sub>/api/v4/tasks`` (array) and ``/tasks/<id>`` (completion with
  ``{"is_completed": true, "result": {"text"}}``; answer ``{id, updated_at,
  request_id, _links}``)
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response

from . import webhooks
from .contacts import missing_entity
from .context import api, collect_events, ctx, json_body, json_list, sandbox
from .entities import check_int, check_user, range_filter, request_id, self_link
from .errors import ItemErrors, bad_request, hal
from .listing import bool_arg, int_set, order_key, paginate, query
from .store import Account, Store

__all__ = ["bp", "add_note", "NOTE_TYPES", "TASK_TYPES", "refresh_closest_task"]

bp = Blueprint("notes_tasks", __name__)

_NOTE_ENTITY = "<any(leads,contacts,companies):entity>"
_KIND = {"leads": "lead", "contacts": "contact", "companies": "company"}

#: FACTS 1.9 note types -> params keys required for them (our reading of the lists)
NOTE_TYPES: dict[str, tuple[str, ...]] = {
    "common": ("text",),
    "call_in": ("uniq", "duration", "source", "phone"),
    "call_out": ("uniq", "duration", "source", "phone"),
    "service_message": ("service", "text"),
    "extended_service_message": ("service", "text"),
    "message_cashier": (),
    "geolocation": (),
    "sms_in": ("text", "phone"),
    "sms_out": ("text", "phone"),
    "attachment": ("file_uuid", "file_name"),
}
#: FACTS 1.10: predefined task types 1 = call, 2 = meeting (names ours)
TASK_TYPES = [{"id": 1, "name": "Связаться", "color": None, "icon_id": None,
               "code": "FOLLOW_UP"},
              {"id": 2, "name": "Встреча", "color": None, "icon_id": None, "code": "MEETING"}]
_TASK_ENTITIES = ("leads", "contacts", "companies", "customers")


# -- notes ----------------------------------------------------------------------------------------

_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff]")


def _kept(text: Any) -> Any:
    """A text as stored: without zero-width characters when the sandbox is
    told to strip them (``strip_zero_width``, see the config)."""
    if isinstance(text, str) and sandbox().cfg["strip_zero_width"]:
        return _ZERO_WIDTH.sub("", text)
    return text



def _check_note(account: Account, entity: str, item: dict[str, Any], errors: ItemErrors,
                entity_id: int | None) -> None:
    eid = entity_id if entity_id is not None else check_int(item, "entity_id", errors)
    if eid is None:
        if entity_id is None and "entity_id" not in item:
            errors.blank("entity_id")
    else:
        target = account.entities(entity).get(eid)
        if target is None or target["is_deleted"]:
            errors.add("entity_id")
    note_type = item.get("note_type")
    if not isinstance(note_type, str) or note_type not in NOTE_TYPES:
        errors.add("note_type")
        return
    params = item.get("params")
    if not isinstance(params, dict):
        errors.type_error("params", "array")
        return
    for key in NOTE_TYPES[note_type]:
        value = params.get(key)
        if key == "duration":
            if isinstance(value, bool) or not isinstance(value, int):
                errors.type_error(f"params.{key}", "int")
        elif not isinstance(value, str) or not value.strip():
            errors.blank(f"params.{key}")
    check_user(account, item, "responsible_user_id", errors)
    check_user(account, item, "created_by", errors, allow_robot=True)


def add_note(store: Store, account: Account, entity: str, entity_id: int, note_type: str,
             params: dict[str, Any], user_id: int, item: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Insert a note. Caller holds the lock."""
    item = item or {}
    now = int(store.now())
    created_by = item.get("created_by", user_id)
    note = {"id": store.next_id("notes"), "entity_id": entity_id, "entity_type": entity,
            "created_by": created_by, "updated_by": created_by, "created_at": now,
            "updated_at": now, "responsible_user_id": item.get("responsible_user_id", user_id),
            "group_id": 0, "note_type": note_type, "params": dict(params),
            "account_id": account.id,
            "is_need_to_trigger_digital_pipeline": bool(
                item.get("is_need_to_trigger_digital_pipeline", False))}
    account.notes[note["id"]] = note
    return note


def _render_note(account: Account, note: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in note.items() if k not in {"entity_type",
                                                         "is_need_to_trigger_digital_pipeline"}}
    body["_links"] = self_link(account, f"{note['entity_type']}/{note['entity_id']}/notes/"
                                        f"{note['id']}")
    return body


def _create_notes(entity: str, entity_id: int | None) -> Response:
    sb = sandbox()
    c = ctx()
    items = json_list(sb.cfg["batch_limit"])
    errors = ItemErrors()
    with sb.store.lock:
        if entity_id is not None:
            target = c.account.entities(entity).get(entity_id)
            if target is None or target["is_deleted"]:
                return missing_entity()
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            _check_note(c.account, entity, item, errors, entity_id)
        errors.raise_if_any()
        out, jobs = [], []
        for index, item in enumerate(items):
            eid = entity_id if entity_id is not None else item["entity_id"]
            params = dict(item["params"])
            if "text" in params:
                params["text"] = _kept(params["text"])
            note = add_note(sb.store, c.account, entity, eid, item["note_type"],
                            params, c.user_id, item)
            jobs += webhooks.jobs_for(sb.store, c.account, f"note_{_KIND[entity]}", note)
            out.append({"id": note["id"], "entity_id": eid,
                        "request_id": request_id(item, index),
                        "_links": self_link(c.account, f"{entity}/{eid}/notes/{note['id']}")})
    if sb.cfg["webhooks_on_api_changes"]:
        collect_events(jobs)
    return hal({"_links": self_link(c.account, f"{entity}/notes"),
                "_embedded": {"notes": out}})


@bp.route(f"/<subdomain>/api/v4/{_NOTE_ENTITY}/notes", methods=["POST"])
@api
def create_notes(subdomain: str, entity: str) -> Response:
    return _create_notes(entity, None)


@bp.route(f"/<subdomain>/api/v4/{_NOTE_ENTITY}/<int:entity_id>/notes", methods=["POST"])
@api
def create_entity_notes(subdomain: str, entity: str, entity_id: int) -> Response:
    return _create_notes(entity, entity_id)


def _list_notes(entity: str, entity_id: int | None) -> Response:
    sb = sandbox()
    account = ctx().account
    flt = query().get("filter")
    flt = flt if isinstance(flt, dict) else {}
    raw_types = flt.get("note_type")
    types = set(raw_types.values()) if isinstance(raw_types, dict) else (
        set(str(raw_types).split(",")) if raw_types else None)
    ids = int_set(flt.get("id"))
    entity_ids = {entity_id} if entity_id is not None else int_set(flt.get("entity_id"))
    key, reverse = order_key(("id", "updated_at"))
    with sb.store.lock:
        if entity_id is not None and entity_id not in account.entities(entity):
            return missing_entity()
        items = [n for n in account.notes.values() if n["entity_type"] == entity
                 and (entity_ids is None or n["entity_id"] in entity_ids)
                 and (types is None or n["note_type"] in types)
                 and (ids is None or n["id"] in ids)
                 and range_filter(flt, "updated_at", n["updated_at"])]
        items.sort(key=lambda n: (n[key], n["id"]), reverse=reverse)
        path = f"{entity}/{entity_id}/notes" if entity_id is not None else f"{entity}/notes"
        return paginate(account, path, "notes", items, lambda n: _render_note(account, n))


@bp.route(f"/<subdomain>/api/v4/{_NOTE_ENTITY}/notes", methods=["GET"])
@api
def list_notes(subdomain: str, entity: str) -> Response:
    return _list_notes(entity, None)


@bp.route(f"/<subdomain>/api/v4/{_NOTE_ENTITY}/<int:entity_id>/notes", methods=["GET"])
@api
def list_entity_notes(subdomain: str, entity: str, entity_id: int) -> Response:
    return _list_notes(entity, entity_id)


@bp.route(f"/<subdomain>/api/v4/{_NOTE_ENTITY}/notes/<int:note_id>", methods=["GET"])
@bp.route(f"/<subdomain>/api/v4/{_NOTE_ENTITY}/<int:entity_id>/notes/<int:note_id>",
          methods=["GET"])
@api
def get_note(subdomain: str, entity: str, note_id: int, entity_id: int | None = None
             ) -> Response:
    account = ctx().account
    with sandbox().store.lock:
        note = account.notes.get(note_id)
        if note is None or note["entity_type"] != entity or (
                entity_id is not None and note["entity_id"] != entity_id):
            return missing_entity()
        return hal(_render_note(account, note))


# -- tasks ----------------------------------------------------------------------------------------


def refresh_closest_task(account: Account, entity_type: str | None, entity_id: int | None
                         ) -> None:
    """``closest_task_at`` of an entity: the earliest open task's due time."""
    if entity_type not in {"leads", "contacts", "companies"} or entity_id is None:
        return
    obj = account.entities(entity_type).get(entity_id)
    if obj is None:
        return
    due = [t["complete_till"] for t in account.tasks.values() if t["entity_type"] == entity_type
           and t["entity_id"] == entity_id and not t["is_completed"]]
    obj["closest_task_at"] = min(due) if due else None


def _check_task(account: Account, item: dict[str, Any], errors: ItemErrors,
                task: dict[str, Any] | None) -> None:
    creating = task is None
    if creating or "text" in item:
        if not isinstance(item.get("text"), str) or not item["text"].strip():
            errors.blank("text")
    if creating or "complete_till" in item:
        value = item.get("complete_till")
        if value is None:
            errors.blank("complete_till")
        elif isinstance(value, bool) or not isinstance(value, int):
            errors.type_error("complete_till", "int")
    check_user(account, item, "responsible_user_id", errors)
    check_user(account, item, "created_by", errors, allow_robot=True)
    if "task_type_id" in item and item["task_type_id"] not in [t["id"] for t in TASK_TYPES]:
        errors.add("task_type_id")
    check_int(item, "duration", errors)
    if "is_completed" in item and not isinstance(item["is_completed"], bool):
        errors.type_error("is_completed", "bool")
    if "result" in item and not (isinstance(item["result"], dict) and isinstance(
            item["result"].get("text", ""), str)):
        errors.type_error("result", "array")
    if creating and "entity_id" in item:
        eid = check_int(item, "entity_id", errors)
        etype = item.get("entity_type")
        if etype not in _TASK_ENTITIES:
            errors.add("entity_type")  # error 235 "element type not given" (FACTS-era)
        elif eid is not None:
            target = account.entities(etype).get(eid) if etype != "customers" else None
            if target is None or target["is_deleted"]:
                errors.add("entity_id")


def _render_task(account: Account, task: dict[str, Any]) -> dict[str, Any]:
    body = dict(task)
    body["_links"] = self_link(account, f"tasks/{task['id']}")
    return body


@bp.route("/<subdomain>/api/v4/tasks", methods=["POST"])
@api
def create_tasks(subdomain: str) -> Response:
    sb = sandbox()
    c = ctx()
    items = json_list(sb.cfg["batch_limit"])
    errors = ItemErrors()
    with sb.store.lock:
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            _check_task(c.account, item, errors, None)
        errors.raise_if_any()
        out = []
        now = int(sandbox().store.now())
        for index, item in enumerate(items):
            created_by = item.get("created_by", c.user_id)
            task = {"id": sb.store.next_id("tasks"), "created_by": created_by,
                    "updated_by": item.get("updated_by", created_by),
                    "created_at": item.get("created_at", now),
                    "updated_at": item.get("updated_at", now),
                    # FACTS 1.10: the responsible user defaults to the current user
                    "responsible_user_id": item.get("responsible_user_id", c.user_id),
                    "group_id": 0, "entity_id": item.get("entity_id"),
                    "entity_type": item.get("entity_type") if "entity_id" in item else None,
                    "is_completed": bool(item.get("is_completed", False)),
                    "task_type_id": item.get("task_type_id", 1), "text": _kept(item["text"]),
                    "duration": item.get("duration", 0),
                    "complete_till": item["complete_till"], "result": item.get("result", []),
                    "account_id": c.account.id}
            c.account.tasks[task["id"]] = task
            refresh_closest_task(c.account, task["entity_type"], task["entity_id"])
            out.append({"id": task["id"], "request_id": request_id(item, index),
                        "_links": self_link(c.account, f"tasks/{task['id']}")})
    return hal({"_links": self_link(c.account, "tasks"), "_embedded": {"tasks": out}})


@bp.route("/<subdomain>/api/v4/tasks", methods=["GET"])
@api
def list_tasks(subdomain: str) -> Response:
    sb = sandbox()
    account = ctx().account
    flt = query().get("filter")
    flt = flt if isinstance(flt, dict) else {}
    ids, entity_ids = int_set(flt.get("id")), int_set(flt.get("entity_id"))
    types = int_set(flt.get("task_type"))
    raw_etype = flt.get("entity_type")
    etypes = set(raw_etype.values()) if isinstance(raw_etype, dict) else (
        {raw_etype} if raw_etype else None)
    done = bool_arg(flt.get("is_completed"))
    key, reverse = order_key(("id", "created_at", "complete_till"))
    with sb.store.lock:
        items = [t for t in account.tasks.values()
                 if (ids is None or t["id"] in ids)
                 and (entity_ids is None or t["entity_id"] in entity_ids)
                 and (etypes is None or t["entity_type"] in etypes)
                 and (types is None or t["task_type_id"] in types)
                 and (done is None or t["is_completed"] == done)
                 and range_filter(flt, "responsible_user_id", t["responsible_user_id"])
                 and range_filter(flt, "updated_at", t["updated_at"])]
        items.sort(key=lambda t: (t[key], t["id"]), reverse=reverse)
        return paginate(account, "tasks", "tasks", items, lambda t: _render_task(account, t))


@bp.route("/<subdomain>/api/v4/tasks/<int:task_id>", methods=["GET"])
@api
def get_task(subdomain: str, task_id: int) -> Response:
    account = ctx().account
    with sandbox().store.lock:
        task = account.tasks.get(task_id)
        return hal(_render_task(account, task)) if task else missing_entity()


def _patch_tasks(items: list[dict[str, Any]], single: bool) -> Response:
    sb = sandbox()
    c = ctx()
    errors = ItemErrors()
    with sb.store.lock:
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            task = c.account.tasks.get(item["id"]) if isinstance(item.get("id"),
                                                                       int) else None
            if task is None:
                errors.add("id", "NotFound", "Entity not found.")  # UNCONFIRMED code/detail
                continue
            _check_task(c.account, item, errors, task)
        errors.raise_if_any()
        out = []
        for index, item in enumerate(items):
            task = c.account.tasks[item["id"]]
            for key in ("text", "complete_till", "is_completed", "result",
                        "responsible_user_id", "task_type_id", "duration"):
                if key in item:
                    task[key] = _kept(item[key]) if key == "text" else item[key]
            task["updated_at"] = int(item.get("updated_at", sandbox().store.now()))
            task["updated_by"] = item.get("updated_by", c.user_id)
            refresh_closest_task(c.account, task["entity_type"], task["entity_id"])
            out.append({"id": task["id"], "updated_at": task["updated_at"],
                        "request_id": request_id(item, index),
                        "_links": self_link(c.account, f"tasks/{task['id']}")})
    if single:
        return hal(out[0])
    return hal({"_links": self_link(c.account, "tasks"), "_embedded": {"tasks": out}})


@bp.route("/<subdomain>/api/v4/tasks", methods=["PATCH"])
@api
def patch_tasks(subdomain: str) -> Response:
    return _patch_tasks(json_list(sandbox().cfg["batch_limit"]), single=False)


@bp.route("/<subdomain>/api/v4/tasks/<int:task_id>", methods=["PATCH"])
@api
def patch_task(subdomain: str, task_id: int) -> Response:
    """FACTS 1.10: the answer is ``{id, updated_at, request_id, _links}``."""
    item = json_body()
    if not isinstance(item, dict):
        raise bad_request("Request body must be a JSON object")
    return _patch_tasks([dict(item, id=task_id)], single=True)
