"""The sandbox Bitrix24's control API: its hooks into the common one
(:mod:`sandbox.core.control`) plus Bitrix24's own controls (JSON; scripts,
tests, the demo). Never faulted, never rate limited, no auth. ``portal``
defaults to the first configured portal.

* ``GET  /_state[?account=<domain or member_id>]`` -- see :mod:`.state` (per
  portal: CRM, timeline, tasks with status, users, directories, event
  bindings, connectors, lines, Open Lines chats with messages and receipts;
  app-wide: event deliveries, OAuth token-endpoint counts, bucket, operating).
* ``POST /_reply`` ``{"account"?, "conversation" (the connector's chat.id) |
  "contact_id" | "line", "connector"?, "text", "user_id"?}`` -- an Open Lines
  operator answers (default: the line's first queued operator); fires
  OnImConnectorMessageAdd; answers ``{"message", "chat", "webhook": {"status",
  "body", "error"}, "deliveries"}``. A contact's chats are those the CRM
  tracker bound to it or to its leads / deals, or whose address is one of its
  IM values.
* ``POST /_reset`` (config, clock, faults kept), ``GET|POST /_config`` (not
  ``portals``), ``GET|POST /_clock``, ``/_faults``, ``GET /_stats`` -- as
  every sandbox.
* ``POST /_install`` ``{"portal"?, "handler"?, "user_id"?}`` -- install the
  app: ONAPPINSTALL form-encoded to ``handler`` or ``app.install_handler``.
* ``POST /_uninstall`` ``{"portal"?, "clean"?, "handler"?}`` -- ONAPPUNINSTALL.
* ``POST /_lead_status`` ``{"lead_id", "status_id"}``, ``POST /_deal_stage``
  ``{"deal_id", "stage_id"}``, ``POST /_delete`` ``{"entity", "id"}`` -- a user
  acts in the UI; ONCRM*UPDATE / ONCRM*DELETE are fired. ``"user_id": null``
  means an automation rule did it (events then carry no tokens).
* ``POST /_finish_dialog`` ``{"account"?, "conversation" (the connector's
  chat.id) | "line", "connector"?, "user_id"?}`` -- an operator closes the
  chat's Open Lines session: OnImConnectorDialogFinish is fired
  (on-im-connector-dialog-finish.md) and the chat's next message opens a new
  session; answers ``{"session", "chat", "deliveries"}``.
* ``GET  /_timeline?entity_type=&entity_id=`` -- comments and to-dos.
* ``POST /_robots/flush`` -- run the robots' pending retries now
  (automation.py).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request

from ..core.control import ControlError, Reply, Vendor, json_object
from ..core.webhooks import Dispatcher
from . import events
from .automation import Automation
from .config import SETTINGS
from .context import Sandbox, sandbox
from .crm import get_entity, set_lead_status
from .dispatch import base_url
from .errors import B24Error, json_response
from .openlines import operator_reply
from .params import as_bool, as_int
from .state import dump_extras, portal_state, timeline
from .store import Entity, Portal

__all__ = ["bp", "B24Sandbox"]

bp = Blueprint("control", __name__)


def _portal(name: Any) -> Portal:
    store = sandbox().store
    if name in (None, ""):
        return next(iter(store.portals.values()))
    portal = store.portal(str(name))
    if portal is None:
        raise ControlError(f"unknown portal {name}", 404, "portal_not_found")
    return portal


def _actor(body: dict[str, Any], portal: Portal, default: int | None) -> int | None:
    if "user_id" in body and body["user_id"] is None:
        return None  # an automation rule: no user, no tokens (events/index.md)
    uid = as_int(body.get("user_id")) if "user_id" in body else default
    if uid is not None and uid not in portal.users:
        raise ControlError(f"unknown user {uid}", 404, "user_not_found")
    return uid


@bp.route("/_timeline", methods=["GET"])
def timeline_view() -> Response:
    sb = sandbox()
    portal = _portal(request.args.get("portal"))
    kind = request.args.get("entity_type")
    with sb.store.lock:
        return json_response(timeline(portal, kind.lower() if kind else None,
                                      as_int(request.args.get("entity_id"))))


@bp.route("/_install", methods=["POST"])
def install() -> Response:
    sb = sandbox()
    body = json_object()
    portal = _portal(body.get("portal"))
    handler = body.get("handler") or sb.cfg["app"].get("install_handler")
    return json_response(events.install(sb, portal, base_url(sb), handler,
                                        as_int(body.get("user_id"))))


@bp.route("/_uninstall", methods=["POST"])
def uninstall() -> Response:
    sb = sandbox()
    body = json_object()
    portal = _portal(body.get("portal"))
    return json_response(events.uninstall(sb, portal, base_url(sb),
                                          as_bool(body.get("clean"), True), body.get("handler")))


def events_possible(portal: Portal, chat: dict[str, Any]) -> bool:
    entry = portal.activations.get((chat["connector"], chat["line"]))
    return bool(entry and entry["active"] and chat["connector"] in portal.connectors)


def _reply_chat(portal: Portal, reply: Reply) -> dict[str, Any] | None:
    """The newest chat of ``portal`` matching the reply's selectors."""
    connector = reply.body.get("connector")
    line = as_int(reply.body.get("line"))
    linked = _contact_chats(portal, reply.contact_id) if reply.contact_id is not None else None
    for chat in sorted(portal.chats.values(), key=lambda c: c["id"], reverse=True):
        if reply.conversation is not None and chat["external_chat_id"] != reply.conversation:
            continue
        if connector and chat["connector"] != str(connector).lower():
            continue
        if line is not None and chat["line"] != line:
            continue
        if linked is not None and chat["id"] not in linked:
            continue
        return chat
    return None


def _contact_ids(ent: Entity) -> set[str]:
    fields, links = ent.fields, ent.fields.get("_links") or {}
    ids = [fields.get("CONTACT_ID"), *(fields.get("CONTACT_IDS") or []),
           *(links.get("CONTACT_IDS") or [])]
    return {str(i) for i in ids if i not in (None, "", 0, "0")}


def _contact_chats(portal: Portal, contact_id: str) -> set[int]:
    """Chats of the contact: bound by the CRM tracker to it or to one of its leads /
    deals, or addressed by one of its IM values (the chat's ``imol|`` address, or
    the customer's id on the channel)."""
    contact = portal.entities["contact"].get(as_int(contact_id) or 0)
    if contact is None:
        return set()
    records = {("contact", contact.id)} | {
        (kind, ent.id) for kind in ("lead", "deal")
        for ent in portal.entities[kind].values() if contact_id in _contact_ids(ent)}
    values = {str(m["VALUE"]) for m in contact.multi.get("IM", [])}
    found = set()
    for chat in portal.chats.values():
        crm = chat.get("crm") or {}
        address = "|".join(("imol", chat["connector"], str(chat["line"]),
                            chat["external_chat_id"], str(chat["user"])))
        user = str(chat.get("external_user_id") or "")
        if (crm.get("entity"), crm.get("id")) in records or address in values or (
                not chat.get("group") and user
                and any(v == user or v.endswith(":" + user) for v in values)):
            found.add(chat["id"])
    return found


@dataclass
class B24Sandbox(Sandbox, Vendor):
    """The sandbox Bitrix24 as the common control API sees it."""

    name = "bitrix24"
    reply_selectors = ("line",)

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(lambda job: events.send(self, job.data),
                                     now=self.clock.now, name="b24-events")
        self.automation = Automation(self)

    @property
    def lock(self) -> Any:
        return self.store.lock

    def accounts(self) -> list[Portal]:
        return list(self.store.portals.values())

    def account_key(self, account: Portal) -> Hashable:
        return account.domain

    def find_account(self, selector: str) -> Portal | None:
        return self.store.portal(selector) or self.store.portal_by_member(selector)

    def dump_account(self, account: Portal) -> dict[str, Any]:
        return portal_state(self, account)

    def dump_extras(self, account: Portal | None) -> dict[str, Any]:
        return {**dump_extras(self, account.domain if account is not None else None),
                **self.automation.state()}

    def get_config(self) -> dict[str, Any]:
        return self.store.cfg

    def set_config(self, values: dict[str, Any]) -> None:
        self.store.cfg = SETTINGS.update(self.store.cfg, values)
        if "seed" in values:
            self.faults.update({"seed": values["seed"]})

    def reset(self, options: dict[str, Any]) -> None:
        with self.store.lock:
            self.store.reset(self.store.cfg)
        self.bucket.reset()
        self.meter.reset()
        self.automation.reset()

    def reply(self, reply: Reply) -> dict[str, Any]:
        store = self.store
        with store.lock:
            if reply.account is not None:
                portal = self.find_account(reply.account)
                if portal is None:
                    raise ControlError(f"unknown account {reply.account}", 404,
                                       "account_not_found")
                portals = [portal]
            else:
                portals = list(store.portals.values())
            found = next(((p, c) for p in portals if (c := _reply_chat(p, reply)) is not None),
                         None)
            if found is None:
                raise ControlError("no Open Lines chat matches (send a customer message "
                                   "first)", 404, "chat_not_found")
            portal, chat = found
            if not events_possible(portal, chat):
                raise ControlError("the connector is not active on this line", 409,
                                   "not_active")
            line = portal.lines[chat["line"]]
            queue = [int(u) for u in line.get("QUEUE") or [] if int(u) in portal.users]
            uid = _actor(reply.body, portal, queue[0] if queue else portal.admin_id())
            operator = uid if uid is not None else portal.admin_id()
            record, data = operator_reply(portal, chat, reply.text, operator, self.clock.now())
        deliveries = events.fire_now(self, portal, base_url(self), "ONIMCONNECTORMESSAGEADD",
                                     data, operator)
        first = deliveries[0] if deliveries else {
            "status": None, "body": None,
            "error": "no handler is bound to ONIMCONNECTORMESSAGEADD"}
        return {"message": record,
                "chat": {"id": chat["id"], "external_chat_id": chat["external_chat_id"],
                         "connector": chat["connector"], "line": chat["line"]},
                "webhook": {"status": first["status"], "body": first["body"],
                            "error": first["error"]},
                "deliveries": deliveries}


def _entity_event(portal: Portal, kind: str, action: str, entity_id: int,
                  body: dict[str, Any]) -> list[dict[str, Any]]:
    sb = sandbox()
    uid = _actor(body, portal, portal.admin_id())
    return events.fire_now(sb, portal, base_url(sb), f"ONCRM{kind.upper()}{action}",
                           {"FIELDS": {"ID": str(entity_id)}}, uid)


@bp.route("/_finish_dialog", methods=["POST"])
def finish_dialog() -> Response:
    sb = sandbox()
    body = json_object()
    reply = Reply.parse({**body, "text": "-"}, B24Sandbox.reply_selectors)
    with sb.store.lock:
        portals = ([_portal(reply.account)] if reply.account is not None
                   else list(sb.store.portals.values()))
        found = next(((p, c) for p in portals if (c := _reply_chat(p, reply)) is not None), None)
        if found is None:
            raise ControlError("no Open Lines chat matches", 404, "chat_not_found")
        portal, chat = found
        closed = chat["session_id"]
        # the chat's next message starts a new session (its own id)
        chat["session_id"] = portal.next_id("session")
        data = dialog_finish_data(chat, closed, sb.cfg["dialog_finish_chat"])
        actor = _actor(body, portal, portal.admin_id())
    deliveries = events.fire_now(sb, portal, base_url(sb), "ONIMCONNECTORDIALOGFINISH", data,
                                 actor)
    return json_response({"session": closed, "chat": {"id": chat["id"],
                          "external_chat_id": chat["external_chat_id"]},
                          "deliveries": deliveries})


def dialog_finish_data(chat: dict[str, Any], session_id: int, which: str) -> dict[str, Any]:
    """``data`` of OnImConnectorDialogFinish (on-im-connector-dialog-finish.md):
    which chat id it names is the ``dialog_finish_chat`` switch."""
    chat_id: Any = chat["external_chat_id"] if which == "external" else chat["id"]
    user = chat["external_user_id"] or 0
    return {"CONNECTOR": chat["connector"], "LINE": str(chat["line"]),
            "DATA": [{"connector": {"connector_id": chat["connector"], "line_id": chat["line"],
                                    "chat_id": chat_id, "user_id": user},
                      "session": {"id": session_id, "closed": "Y", "parent_id": 0,
                                  "close_term": 0},
                      "chat": {"id": chat_id}, "user": {"id": user}}]}


@bp.route("/_lead_status", methods=["POST"])
def lead_status() -> Response:
    sb = sandbox()
    body = json_object()
    portal = _portal(body.get("portal"))
    lead_id, status = as_int(body.get("lead_id")), str(body.get("status_id") or "")
    with sb.store.lock:
        try:
            lead = get_entity(portal, "lead", lead_id or 0)
        except B24Error:
            raise ControlError(f"unknown lead {lead_id}", 404, "lead_not_found") from None
        if status not in portal.status_ids("STATUS"):
            raise ControlError(f"unknown lead status {status}", 400, "bad_status")
        actor = _actor(body, portal, portal.admin_id())
        set_lead_status(portal, lead, status, actor or portal.admin_id(), sb.clock.now())
        lead.fields["DATE_MODIFY"] = portal.now_str(sb.clock.now())
    deliveries = _entity_event(portal, "lead", "UPDATE", lead.id, body)
    return json_response({"lead_id": lead.id, "status_id": status, "deliveries": deliveries})


@bp.route("/_deal_stage", methods=["POST"])
def deal_stage() -> Response:
    sb = sandbox()
    body = json_object()
    portal = _portal(body.get("portal"))
    deal_id, stage = as_int(body.get("deal_id")), str(body.get("stage_id") or "")
    with sb.store.lock:
        try:
            deal = get_entity(portal, "deal", deal_id or 0)
        except B24Error:
            raise ControlError(f"unknown deal {deal_id}", 404, "deal_not_found") from None
        entity = portal.stage_entity(int(deal.fields.get("CATEGORY_ID") or 0))
        if stage not in portal.status_ids(entity):
            raise ControlError(f"stage {stage} is not in {entity}", 400, "bad_stage")
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
    body = json_object()
    portal = _portal(body.get("portal"))
    kind = str(body.get("entity") or "").lower()
    entity_id = as_int(body.get("id"))
    if kind not in ("lead", "deal", "contact"):
        raise ControlError("entity must be lead, deal or contact")
    with sb.store.lock:
        if portal.entities[kind].pop(entity_id or 0, None) is None:
            raise ControlError(f"unknown {kind} {entity_id}", 404, f"{kind}_not_found")
    deliveries = _entity_event(portal, kind, "DELETE", entity_id or 0, body)
    return json_response({"entity": kind, "id": entity_id, "deliveries": deliveries})
