"""The sandbox amoCRM's control API: its hooks into the common one
(:mod:`sandbox.core.control`) plus amoCRM's own controls (JSON; never
faulted, never rate limited).

* ``GET  /_state[?account=<subdomain or id>]`` -- see :mod:`sandbox.amocrm.state`
* ``POST /_reply`` ``{"account"?, "conversation" | "contact_id", "text", "user_id"?}``
  -- a manager answers in amoCRM's chat (``conversation``: the channel's
  ``conversation_id``; ``user_id`` default: the lead's responsible user):
  stored, then the outgoing-message hook (v2) goes to the channel's hook URL
  once -> ``{"message", "webhook": {"url", "status", "body", "error"}}``
* ``POST /_reset``, ``GET|POST /_config``, ``GET|POST /_clock``, ``/_faults``,
  ``GET /_stats`` -- as every sandbox
* ``POST /_install``  ``{"client_id","redirect_uri","subdomain"?,"user_id"?,"state"?,
  "from_widget"?}`` -> ``{"code","referer","platform","state"?,"install_hook"?}``
* ``POST /_integration`` ``{"subdomain","active": false}`` -- switch the integration
  off in an account: its tokens die (API -> 401; FACTS 1.2), the disconnect hook fires
* ``POST /_subscription`` ``{"subdomain","active"}`` -- subscription ended: API -> 402
* ``POST /_long_lived_token`` ``{"subdomain","user_id"?,"expires_in"?}`` -> ``{"token",…}``
* ``POST /_rename`` ``{"subdomain","new_subdomain"}`` -- an account changes its subdomain
* ``POST /_channel`` ``{"hook_url"?,"title"?}`` -- what support would change
* ``POST /_note`` ``{"lead_id","text","user_id"?}``, ``POST /_lead_status``
  ``{"lead_id","status_id","pipeline_id"?}`` (also fires the ``dp_webhooks`` of
  the stage it enters: ``"dp_webhooks"`` in the answer), ``POST /_responsible``
  ``{"lead_id","responsible_user_id"}``, ``POST /_delete_lead`` ``{"lead_id"}``,
  ``POST /_merge_contacts`` ``{"keep_id","remove_id"}``, ``POST /_lead_tags``
  ``{"lead_id","add"?: [names],"remove"?: [names]}`` -- a manager's action in
  the CRM; fires the subscribed account webhooks and answers with the
  delivery results (first attempts; retries follow the schedule)
* ``GET /_webhooks[?subdomain=]`` / ``POST /_webhooks {"flush": true}`` -- deliveries,
  pending retries; flush runs every pending retry now
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request

from ..core.control import ControlError, Reply, Vendor, int_field, json_object
from ..core.webhooks import Job
from . import chats, webhooks
from .config import SETTINGS
from .context import Sandbox, sandbox
from .entities import apply_tags, touch
from .errors import ItemErrors, plain_json
from .leads import lead_change_jobs, resolve_status, set_status
from .notes_tasks import add_note
from .oauth import InstallError, create_code, fire_disconnect_hook, fire_install_hook
from .state import dump_account, dump_extras, render_message
from .store import Account, Store

__all__ = ["bp", "AmoSandbox"]

bp = Blueprint("control", __name__)

def _account(store: Store, subdomain: Any) -> Account:
    if subdomain is None:
        return next(iter(store.accounts.values()))
    account = store.account_by_subdomain(str(subdomain))
    if account is None:
        raise ControlError(f"unknown subdomain {subdomain}", 404, "account_not_found")
    return account


def _user(account: Account, user_id: int | None, default: int | None = None
          ) -> dict[str, Any]:
    uid = user_id if user_id is not None else (default or account.admin_id())
    if uid not in account.users:
        raise ControlError(f"unknown user {uid}", 404, "user_not_found")
    return account.users[uid]


def _lead(store: Store, body: dict[str, Any]) -> tuple[Account, dict[str, Any]]:
    found = store.find_lead(int_field(body, "lead_id") or 0)
    if found is None or found[1]["is_deleted"]:
        raise ControlError(f"unknown lead {body.get('lead_id')}", 404, "lead_not_found")
    return found


# -- OAuth / integration --------------------------------------------------------------------------


@bp.route("/_install", methods=["POST"])
def install() -> Response:
    """Scripted consent: an admin grants access (FACTS 1.2)."""
    sb = sandbox()
    body = json_object()
    with sb.store.lock:
        account = _account(sb.store, body.get("subdomain"))
        try:
            code = create_code(sb.store, account, str(body.get("client_id", "")),
                               body.get("redirect_uri"), int_field(body, "user_id", False))
        except InstallError as exc:
            raise ControlError(str(exc), 400, "install_failed") from None
        result: dict[str, Any] = {"code": code.value, "referer": sb.store.referer(account),
                                  "platform": sb.store.platform(),
                                  "subdomain": account.subdomain, "account_id": account.id,
                                  "redirect_uri": code.redirect_uri}
        if "state" in body:
            result["state"] = body["state"]
        timeout = float(sb.cfg["install_hook_timeout_s"])
    if body.get("from_widget"):
        # FACTS 1.2: one GET, 3 s limit, answer ignored, never re-sent.
        hook = fire_install_hook(code.redirect_uri, {"code": code.value,
                                                     "referer": result["referer"],
                                                     "from_widget": "1"}, timeout)
        result["install_hook"] = hook
        sb.store.install_hooks.append(dict(hook, at=sb.store.now()))
    return plain_json(result)


@bp.route("/_integration", methods=["POST"])
def integration() -> Response:
    sb = sandbox()
    body = json_object()
    active = body.get("active")
    if not isinstance(active, bool):
        raise ControlError("active must be a boolean")
    with sb.store.lock:
        account = _account(sb.store, body.get("subdomain"))
        if active:
            return plain_json({"subdomain": account.subdomain, "installed": account.installed,
                               "message": "install again (POST /_install) to get tokens"})
        sb.store.revoke_account(account)
        for conn in sb.store.connections.values():  # docs: the channel disconnects too
            if conn["account"] == account.id:
                conn["connected"] = False
    hook = fire_disconnect_hook(sb.store, account)
    if hook is not None:
        sb.store.disconnect_hooks.append(dict(hook, at=sb.store.now()))
    return plain_json({"subdomain": account.subdomain, "installed": False,
                       "disconnect_hook": hook})


@bp.route("/_subscription", methods=["POST"])
def subscription() -> Response:
    """``{"subdomain", "active": false}``: the account's subscription ended, its
    API answers 402 Payment Required (FACTS 1.3) until it is active again."""
    sb = sandbox()
    body = json_object()
    active = body.get("active")
    if not isinstance(active, bool):
        raise ControlError("active must be a boolean")
    with sb.store.lock:
        account = _account(sb.store, body.get("subdomain"))
        account.subscription_active = active
        return plain_json({"subdomain": account.subdomain, "subscription_active": active})


@bp.route("/_long_lived_token", methods=["POST"])
def long_lived() -> Response:
    sb = sandbox()
    body = json_object()
    with sb.store.lock:
        account = _account(sb.store, body.get("subdomain"))
        user = _user(account, int_field(body, "user_id", False))
        expires_in = body.get("expires_in", 365 * 86400)
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
            raise ControlError("expires_in must be a number of seconds")
        access = sb.store.issue_long_lived(account, user["id"], expires_in)
        return plain_json({"token": access.token, "user_id": access.user_id,
                           "expires_at": int(access.expires_at), "subdomain": account.subdomain})


@bp.route("/_rename", methods=["POST"])
def rename() -> Response:
    sb = sandbox()
    body = json_object()
    new = body.get("new_subdomain")
    with sb.store.lock:
        account = _account(sb.store, body.get("subdomain"))
        if not isinstance(new, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", new):
            raise ControlError("new_subdomain must be a plain host label")
        if sb.store.account_by_subdomain(new) is not None:
            raise ControlError(f"subdomain {new} is taken", 409, "conflict")
        account.subdomain = new
        return plain_json({"id": account.id, "subdomain": new})


# -- Chats API ------------------------------------------------------------------------------------


@bp.route("/_channel", methods=["GET", "POST"])
def channel() -> Response:
    sb = sandbox()
    with sb.store.lock:
        if request.method == "POST":
            body = json_object()
            allowed = {k: v for k, v in body.items() if k in {"hook_url", "title"}}
            extra = sorted(set(body) - set(allowed))
            if extra:
                raise ControlError(f"only hook_url and title can change, not {extra}")
            try:
                sb.store.cfg = SETTINGS.update(sb.store.cfg, {"channel": allowed})
            except ValueError as exc:
                raise ControlError(str(exc)) from None
        return plain_json(sb.store.cfg["channel"])


def _find_chat(store: Store, reply: Reply) -> dict[str, Any]:
    account_id = None
    if reply.account is not None:
        account = _find_account(store, reply.account)
        if account is None:
            raise ControlError(f"unknown account {reply.account}", 404, "account_not_found")
        account_id = account.id
    candidates = [c for c in store.chats.values()
                  if account_id is None or c["account_id"] == account_id]
    if reply.conversation is not None:
        candidates = [c for c in candidates if c["conversation_id"] == reply.conversation]
    if reply.contact_id is not None:
        contact_id = int_field({"contact_id": reply.contact_id}, "contact_id")
        candidates = [c for c in candidates if c["contact_id"] == contact_id]
    if not candidates:
        raise ControlError("no chat for that conversation/contact", 404, "chat_not_found")
    return max(candidates, key=lambda c: (store.messages[c["messages"][-1]]["msec_timestamp"]
                                          if c["messages"] else 0, c["created_at"]))


def _find_account(store: Store, selector: str) -> Account | None:
    """An account by subdomain or id."""
    found = store.account_by_subdomain(selector)
    if found is None and selector.isdigit():
        found = store.accounts.get(int(selector))
    return found


@dataclass
class AmoSandbox(Sandbox, Vendor):
    """The sandbox amoCRM as the common control API sees it."""

    name = "amocrm"

    @property
    def lock(self) -> Any:
        return self.store.lock

    def accounts(self) -> list[Account]:
        return list(self.store.accounts.values())

    def account_key(self, account: Account) -> Hashable:
        return account.subdomain

    def find_account(self, selector: str) -> Account | None:
        return _find_account(self.store, selector)

    def dump_account(self, account: Account) -> dict[str, Any]:
        return dump_account(self.store, account)

    def dump_extras(self, account: Account | None) -> dict[str, Any]:
        return dump_extras(self.store, self.dispatcher.pending())

    def get_config(self) -> dict[str, Any]:
        return self.store.cfg

    def set_config(self, values: dict[str, Any]) -> None:
        self.store.cfg = SETTINGS.update(self.store.cfg, values)
        if "seed" in values:
            self.faults.update({"seed": values["seed"]})

    def reset(self, options: dict[str, Any]) -> None:
        self.dispatcher.reset()
        with self.store.lock:
            self.store.reset(self.store.cfg)
        self.limiter.reset()

    def reply(self, reply: Reply) -> dict[str, Any]:
        """A manager answers in the chat: stored, then the outgoing-message hook (v2)
        goes to the channel's hook URL with ``:scope_id`` substituted, once."""
        store = self.store
        with store.lock:
            chat = _find_chat(store, reply)
            account = store.accounts[chat["account_id"]]
            lead = account.leads.get(chat["lead_id"] or 0)
            user = _user(account, int_field(reply.body, "user_id", False),
                         lead["responsible_user_id"] if lead else None)
            conn = store.connections.get(chat["scope_id"], {})
            msg = chats.manager_message(store, account, chat, reply.text, user)
            payload = chats.hook_body(store, account, chat, msg)
            hook_url = self.cfg["channel"].get("hook_url")
            secret = self.cfg["channel"]["secret"]
            timeout = float(self.cfg["chat_hook_timeout_s"])
            rendered = render_message(msg)
        if not conn.get("connected"):
            outcome: dict[str, Any] = {"status": None, "body": None,
                                       "error": "the channel is disconnected in this account"}
        elif not hook_url:
            outcome = {"status": None, "body": None, "error": "the channel has no hook_url"}
        else:
            url = hook_url.replace(":scope_id", chat["scope_id"])
            outcome = chats.send_hook(url, payload, secret, timeout)
        store.chat_hooks.append({"at": store.now(), "payload": payload, "result": outcome})
        return {"message": rendered, "webhook": outcome}


# -- CRM-side actions that fire account webhooks --------------------------------------------------


def _fire(jobs: list[Job]) -> list[dict[str, Any]]:
    return sandbox().dispatcher.deliver_now(jobs)


@bp.route("/_note", methods=["POST"])
def note() -> Response:
    sb = sandbox()
    body = json_object()
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise ControlError("text is required")
    with sb.store.lock:
        account, lead = _lead(sb.store, body)
        user = _user(account, int_field(body, "user_id", False))
        added = add_note(sb.store, account, "leads", lead["id"], "common", {"text": text},
                         user["id"])
        jobs = webhooks.jobs_for(sb.store, account, "note_lead", added)
    return plain_json({"note": added, "webhooks": _fire(jobs)})


@bp.route("/_lead_status", methods=["POST"])
def lead_status() -> Response:
    sb = sandbox()
    body = json_object()
    with sb.store.lock:
        account, lead = _lead(sb.store, body)
        user = _user(account, int_field(body, "user_id", False))
        errors = ItemErrors()
        errors.item("0")
        moved = resolve_status(account, {k: body[k] for k in ("status_id", "pipeline_id")
                                          if k in body}, errors, "", lead)
        if errors or moved is None:
            raise ControlError("status_id (and pipeline_id) must name a status of the account "
                       "(Unsorted excluded)")
        before = dict(lead)
        set_status(lead, *moved)
        touch(lead, user["id"])
        jobs = lead_change_jobs(sb.store, account, lead, before)
        stage_hooks = webhooks.dp_jobs(sb.store, account, lead, before)
        out = {k: lead[k] for k in ("id", "status_id", "pipeline_id", "closed_at")}
    return plain_json({"lead": out, "webhooks": _fire(jobs),
                       "dp_webhooks": _fire(stage_hooks)})


@bp.route("/_lead_tags", methods=["POST"])
def lead_tags() -> Response:
    sb = sandbox()
    body = json_object()
    add, remove = body.get("add") or [], body.get("remove") or []
    if not all(isinstance(t, str) and t.strip() for t in [*add, *remove]):
        raise ControlError("add and remove must be lists of tag names")
    with sb.store.lock:
        account, lead = _lead(sb.store, body)
        user = _user(account, int_field(body, "user_id", False))
        before = dict(lead)
        item = {"tags_to_add": [{"name": t} for t in add],
                "tags_to_delete": [{"name": t} for t in remove]}
        lead["tags"] = apply_tags(sb.store, account, "leads", lead, item, ItemErrors())
        touch(lead, user["id"])
        jobs = lead_change_jobs(sb.store, account, lead, before)
        names = [t["name"] for t in (sb.store.tag_by_id(account, "leads", tid)
                                     for tid in lead["tags"]) if t]
    return plain_json({"lead": {"id": lead["id"], "tags": names}, "webhooks": _fire(jobs)})


@bp.route("/_responsible", methods=["POST"])
def responsible() -> Response:
    sb = sandbox()
    body = json_object()
    with sb.store.lock:
        account, lead = _lead(sb.store, body)
        new = _user(account, int_field(body, "responsible_user_id"))
        user = _user(account, int_field(body, "user_id", False))
        before = dict(lead)
        lead["responsible_user_id"] = new["id"]
        touch(lead, user["id"])
        jobs = lead_change_jobs(sb.store, account, lead, before)
        out = {"id": lead["id"], "responsible_user_id": new["id"]}
    return plain_json({"lead": out, "webhooks": _fire(jobs)})


@bp.route("/_delete_lead", methods=["POST"])
def delete_lead() -> Response:
    sb = sandbox()
    body = json_object()
    with sb.store.lock:
        account, lead = _lead(sb.store, body)
        lead["is_deleted"] = True
        touch(lead, _user(account, int_field(body, "user_id", False))["id"])
        jobs = webhooks.jobs_for(sb.store, account, "delete_lead", lead)
    return plain_json({"lead": {"id": lead["id"], "is_deleted": True}, "webhooks": _fire(jobs)})


@bp.route("/_merge_contacts", methods=["POST"])
def merge_contacts() -> Response:
    """Merge ``remove_id`` into ``keep_id``: leads, chats, notes and tasks move to
    the kept contact, custom field values missing on it are copied, the other is
    deleted; fires ``delete_contact`` (removed) + ``update_contact`` (kept). How
    amoCRM reports a merge to webhooks is UNCONFIRMED."""
    sb = sandbox()
    body = json_object()
    keep_id, remove_id = int_field(body, "keep_id"), int_field(body, "remove_id")
    with sb.store.lock:
        found_keep = sb.store.find_contact(keep_id or 0)
        found_remove = sb.store.find_contact(remove_id or 0)
        if found_keep is None or found_remove is None or keep_id == remove_id \
                or found_keep[0] is not found_remove[0] or found_keep[1]["is_deleted"] \
                or found_remove[1]["is_deleted"]:
            raise ControlError("keep_id and remove_id must be two live contacts of one "
                               "account", 404, "contact_not_found")
        account, keep = found_keep
        gone = found_remove[1]
        for lead in account.leads.values():
            refs = [dict(c, id=keep_id) if c["id"] == remove_id else c for c in lead["contacts"]]
            unique: dict[int, dict[str, Any]] = {}
            for ref in refs:
                unique.setdefault(ref["id"], ref)
            lead["contacts"] = list(unique.values())
        for chat in sb.store.chats.values():
            if chat["contact_id"] == remove_id:
                chat["contact_id"] = keep_id
        for item in list(account.notes.values()) + list(account.tasks.values()):
            if item["entity_type"] == "contacts" and item["entity_id"] == remove_id:
                item["entity_id"] = keep_id
        have = {c["field_id"] for c in keep["custom_fields_values"]}
        keep["custom_fields_values"] += [c for c in gone["custom_fields_values"]
                                         if c["field_id"] not in have]
        keep["tags"] += [t for t in gone["tags"] if t not in keep["tags"]]
        gone["is_deleted"] = True
        user = _user(account, int_field(body, "user_id", False))
        touch(gone, user["id"])
        touch(keep, user["id"])
        jobs = webhooks.jobs_for(sb.store, account, "delete_contact", gone)
        jobs += webhooks.jobs_for(sb.store, account, "update_contact", keep)
    return plain_json({"kept": keep_id, "removed": remove_id, "webhooks": _fire(jobs)})


@bp.route("/_webhooks", methods=["GET", "POST"])
def webhook_log() -> Response:
    sb = sandbox()
    if request.method == "POST":
        body = json_object()
        if not body.get("flush"):
            raise ControlError('POST {"flush": true} runs every pending retry now')
        return plain_json({"delivered": sb.dispatcher.flush()})
    sub = request.args.get("subdomain")
    with sb.store.lock:
        account_id = _account(sb.store, sub).id if sub is not None else None
        subs = [dict({k: v for k, v in w.items() if not k.startswith("_")},
                     invalid_answers=len(w.get("_invalid", [])))
                for a in sb.store.accounts.values() if account_id in (None, a.id)
                for w in a.webhooks.values()]
        deliveries = [d for d in sb.store.deliveries if account_id in (None, d["account_id"])]
    return plain_json({"subscriptions": subs, "deliveries": deliveries,
                       "pending": sb.dispatcher.pending()})
