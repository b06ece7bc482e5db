"""Control API (JSON; scripts, tests, the demo). Never faulted, never rate
limited, no auth. ``portal`` defaults to the first configured portal.

* ``GET  /_state[?portal=]`` -- see :mod:`.state` (CRM, timeline, tasks with status, users,
  directories, event bindings + deliveries, connectors, lines, Open Lines chats
  with messages and receipts, OAuth token-endpoint counts, bucket, operating).
* ``POST /_reset`` -- back to the seeded state (config, clock, faults kept).
* ``GET|POST /_config`` -- read / change run-time settings (not ``portals``).
* ``GET|POST /_clock`` -- ``{"advance": s}``, ``{"offset": s}``, ``{"freeze":
  true|false}``: move or stop the sandbox clock (token/code lifetimes, the
  bucket, operating time).
* ``POST /_install`` ``{"portal"?, "handler"?, "user_id"?}`` -- install the
  app: ONAPPINSTALL form-encoded to ``handler`` or ``app.install_handler``.
* ``POST /_uninstall`` ``{"portal"?, "clean"?, "handler"?}`` -- ONAPPUNINSTALL.
* ``POST /_operator_reply`` ``{"portal"?, "chat_id" (the connector's chat.id) |
  "line", "connector"?, "text", "user_id"?}`` -- fires OnImConnectorMessageAdd;
  answers ``{"message", "event": {"status", "body"}, "deliveries"}``.
* ``POST /_lead_status`` ``{"lead_id", "status_id"}``, ``POST /_deal_stage``
  ``{"deal_id", "stage_id"}``, ``POST /_delete`` ``{"entity", "id"}`` -- a user
  acts in the UI; ONCRM*UPDATE / ONCRM*DELETE are fired. ``"user_id": null``
  means an automation rule did it (events then carry no tokens).
* ``GET  /_timeline?entity_type=&entity_id=`` -- comments and to-dos.
* ``/_faults`` -- the shared fault plan; ``GET /_stats`` -- :mod:`.stats`.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from . import events
from .config import update_config
from .context import sandbox
from .crm import get_entity, set_lead_status
from .dispatch import base_url
from .errors import B24Error, json_response
from .openlines import operator_reply
from .params import as_bool, as_int
from .state import dump_state, timeline
from .store import Portal

__all__ = ["bp"]

bp = Blueprint("control", __name__)


class _Bad(Exception):
    def __init__(self, message: str, status: int = 400, error: str = "bad_request") -> None:
        super().__init__(message)
        self.message, self.status, self.error = message, status, error


@bp.errorhandler(_Bad)
def _bad(exc: _Bad) -> Response:
    return json_response({"error": exc.error, "message": exc.message}, exc.status)


def _body() -> dict[str, Any]:
    try:
        data = json.loads(request.get_data() or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _Bad("body must be a JSON object")
    return data


def _portal(name: Any) -> Portal:
    store = sandbox().store
    if name in (None, ""):
        return next(iter(store.portals.values()))
    portal = store.portal(str(name))
    if portal is None:
        raise _Bad(f"unknown portal {name}", 404, "portal_not_found")
    return portal


def _actor(body: dict[str, Any], portal: Portal, default: int | None) -> int | None:
    if "user_id" in body and body["user_id"] is None:
        return None  # an automation rule: no user, no tokens (events/index.md)
    uid = as_int(body.get("user_id")) if "user_id" in body else default
    if uid is not None and uid not in portal.users:
        raise _Bad(f"unknown user {uid}", 404, "user_not_found")
    return uid


@bp.route("/_state", methods=["GET"])
def state() -> Response:
    sb = sandbox()
    name = request.args.get("portal")
    domain = _portal(name).domain if name else None
    with sb.store.lock:
        body = dump_state(sb, domain)
        _add_task_status(list(sb.store.portals.values()), body)
        return json_response(body)


def _add_task_status(portals: list[Portal], body: dict[str, Any]) -> None:
    """Give each dumped task its ``status`` (tasks-task-list.md: ``"5"`` is completed), so
    that the demo page lists only the open ones. Caller holds the lock."""
    by_domain = {p.domain: p for p in portals}
    for dumped in body["portals"]:
        tasks = by_domain[dumped["domain"]].tasks
        for task in dumped["tasks"]:
            task["status"] = tasks[task["id"]]["task"]["status"]


@bp.route("/_timeline", methods=["GET"])
def timeline_view() -> Response:
    sb = sandbox()
    portal = _portal(request.args.get("portal"))
    kind = request.args.get("entity_type")
    with sb.store.lock:
        return json_response(timeline(portal, kind.lower() if kind else None,
                                      as_int(request.args.get("entity_id"))))


@bp.route("/_reset", methods=["POST"])
def reset() -> Response:
    sb = sandbox()
    with sb.store.lock:
        sb.store.reset(sb.store.cfg)
    sb.bucket.reset()
    sb.meter.reset()
    return json_response({"ok": True})


@bp.route("/_config", methods=["GET", "POST"])
def config() -> Response:
    sb = sandbox()
    with sb.store.lock:
        if request.method == "POST":
            values = _body()
            try:
                sb.store.cfg = update_config(sb.store.cfg, values)
            except ValueError as exc:
                raise _Bad(str(exc), 400, "invalid_config") from None
            if "seed" in values:
                sb.faults.update({"seed": values["seed"]})
        return json_response(sb.store.cfg)


@bp.route("/_clock", methods=["GET", "POST"])
def clock() -> Response:
    sb = sandbox()
    if request.method == "POST":
        body = _body()
        if "freeze" in body:
            sb.clock.freeze(as_bool(body["freeze"]))
        if "offset" in body:
            sb.clock.set_offset(float(body["offset"]))
        if "advance" in body:
            sb.clock.advance(float(body["advance"]))
    return json_response({"now": sb.clock.now(), "offset": sb.clock.offset,
                          "frozen": sb.clock.frozen})


@bp.route("/_install", methods=["POST"])
def install() -> Response:
    sb = sandbox()
    body = _body()
    portal = _portal(body.get("portal"))
    handler = body.get("handler") or sb.cfg["app"].get("install_handler")
    return json_response(events.install(sb, portal, base_url(sb), handler,
                                        as_int(body.get("user_id"))))


@bp.route("/_uninstall", methods=["POST"])
def uninstall() -> Response:
    sb = sandbox()
    body = _body()
    portal = _portal(body.get("portal"))
    return json_response(events.uninstall(sb, portal, base_url(sb),
                                          as_bool(body.get("clean"), True), body.get("handler")))


@bp.route("/_operator_reply", methods=["POST"])
def reply() -> Response:
    sb = sandbox()
    body = _body()
    portal = _portal(body.get("portal"))
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _Bad("a non-empty text is required")
    with sb.store.lock:
        chat = _reply_chat(portal, body)
        if not events_possible(portal, chat):
            raise _Bad("the connector is not active on this line", 409, "not_active")
        line = portal.lines[chat["line"]]
        queue = [int(u) for u in line.get("QUEUE") or [] if int(u) in portal.users]
        uid = _actor(body, portal, queue[0] if queue else portal.admin_id())
        operator = uid if uid is not None else portal.admin_id()
        record, data = operator_reply(portal, chat, text, operator, sb.clock.now())
    deliveries = events.fire_now(sb, portal, base_url(sb), "ONIMCONNECTORMESSAGEADD", data,
                                 operator)
    first = deliveries[0] if deliveries else None
    return json_response({
        "message": record, "chat": {"id": chat["id"], "external_chat_id":
                                    chat["external_chat_id"], "connector": chat["connector"],
                                    "line": chat["line"]},
        "event": None if first is None else {"status": first["status"], "body": first["body"],
                                             "error": first["error"]},
        "deliveries": deliveries})


def events_possible(portal: Portal, chat: dict[str, Any]) -> bool:
    entry = portal.activations.get((chat["connector"], chat["line"]))
    return bool(entry and entry["active"] and chat["connector"] in portal.connectors)


def _reply_chat(portal: Portal, body: dict[str, Any]) -> dict[str, Any]:
    chat_ext = body.get("chat_id")
    connector = body.get("connector")
    line = as_int(body.get("line"))
    candidates = sorted(portal.chats.values(), key=lambda c: c["id"], reverse=True)
    for chat in candidates:
        if chat_ext is not None and chat["external_chat_id"] != str(chat_ext):
            continue
        if connector and chat["connector"] != str(connector).lower():
            continue
        if line is not None and chat["line"] != line:
            continue
        if chat_ext is None and line is None:
            break
        return chat
    raise _Bad("no Open Lines chat matches (send a customer message first)", 404,
               "chat_not_found")


def _entity_event(portal: Portal, kind: str, action: str, entity_id: int,
                  body: dict[str, Any]) -> list[dict[str, Any]]:
    sb = sandbox()
    uid = _actor(body, portal, portal.admin_id())
    return events.fire_now(sb, portal, base_url(sb), f"ONCRM{kind.upper()}{action}",
                           {"FIELDS": {"ID": str(entity_id)}}, uid)


@bp.route("/_lead_status", methods=["POST"])
def lead_status() -> Response:
    sb = sandbox()
    body = _body()
    portal = _portal(body.get("portal"))
    lead_id, status = as_int(body.get("lead_id")), str(body.get("status_id") or "")
    with sb.store.lock:
        try:
            lead = get_entity(portal, "lead", lead_id or 0)
        except B24Error:
            raise _Bad(f"unknown lead {lead_id}", 404, "lead_not_found") from None
        if status not in portal.status_ids("STATUS"):
            raise _Bad(f"unknown lead status {status}", 400, "bad_status")
        actor = _actor(body, portal, portal.admin_id())
        set_lead_status(portal, lead, status, actor or portal.admin_id(), sb.clock.now())
        lead.fields["DATE_MODIFY"] = portal.now_str(sb.clock.now())
    deliveries = _entity_event(portal, "lead", "UPDATE", lead.id, body)
    return json_response({"lead_id": lead.id, "status_id": status, "deliveries": deliveries})


@bp.route("/_deal_stage", methods=["POST"])
def deal_stage() -> Response:
    sb = sandbox()
    body = _body()
    portal = _portal(body.get("portal"))
    deal_id, stage = as_int(body.get("deal_id")), str(body.get("stage_id") or "")
    with sb.store.lock:
        try:
            deal = get_entity(portal, "deal", deal_id or 0)
        except B24Error:
            raise _Bad(f"unknown deal {deal_id}", 404, "deal_not_found") from None
        entity = portal.stage_entity(int(deal.fields.get("CATEGORY_ID") or 0))
        if stage not in portal.status_ids(entity):
            raise _Bad(f"stage {stage} is not in {entity}", 400, "bad_stage")
        now = sb.clock.now()
        semantic = portal.semantic_id(entity, stage)
        actor = _actor(body, portal, portal.admin_id()) or portal.admin_id()
        deal.fields.update({"STAGE_ID": stage, "STAGE_SEMANTIC_ID": semantic,
                            "CLOSED": "N" if semantic == "P" else "Y",
                            "MOVED_BY_ID": str(actor), "MOVED_TIME": portal.now_str(now),
                            "DATE_MODIFY": portal.now_str(now)})
    deliveries = _entity_event(portal, "deal", "UPDATE", deal.id, body)
    return json_response({"deal_id": deal.id, "stage_id": stage, "semantic": semantic,
                          "deliveries": deliveries})


@bp.route("/_delete", methods=["POST"])
def delete() -> Response:
    sb = sandbox()
    body = _body()
    portal = _portal(body.get("portal"))
    kind = str(body.get("entity") or "").lower()
    entity_id = as_int(body.get("id"))
    if kind not in ("lead", "deal", "contact"):
        raise _Bad("entity must be lead, deal or contact")
    with sb.store.lock:
        if portal.entities[kind].pop(entity_id or 0, None) is None:
            raise _Bad(f"unknown {kind} {entity_id}", 404, f"{kind}_not_found")
    deliveries = _entity_event(portal, kind, "DELETE", entity_id or 0, body)
    return json_response({"entity": kind, "id": entity_id, "deliveries": deliveries})
