"""Leads and ``/leads/complex`` (FACTS.md 1.7/1.8).

* ``GET /<sub>/api/v4/leads`` (``query`` incl. custom field values,
  ``filter[id|pipeline_id|statuses|responsible_user_id|created_at|updated_at|closed_at]``,
  ``order``, ``with=contacts``, paging; 204 when empty) and ``/leads/<id>``
* ``POST /<sub>/api/v4/leads`` (array), ``PATCH /leads`` (array) and ``/leads/<id>``
* ``POST /<sub>/api/v4/leads/complex``: <= 50 leads, <= 1 contact and <= 1 company
  each (full model or ``{id}``), ``_embedded.metadata`` -> Unsorted; the answer
  is a **bare array** with ``request_id`` as an array and ``merged`` (FACTS 1.7).
  No dedupe within the request; duplicate control is not modelled (``merged`` is
  always false).

Pipelines and entity links are in :mod:`sandbox.amocrm.pipelines`.

Statuses 142 (won) / 143 (lost) set ``closed_at``; leaving them clears it.
A PATCH that moves a lead into a stage with a digital pipeline webhook
(config ``dp_webhooks``, UNCONFIRMED) sends it after the answer, whatever
``webhooks_on_api_changes`` says (:func:`sandbox.amocrm.webhooks.dp_jobs`).
Moving a lead *into* Unsorted through the API is refused (our reading: amoCRM
only puts leads there itself); ``responsible_user_id`` must be a user of the
account (400 otherwise).
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, Response, request

from . import webhooks
from .contacts import create_contact, missing_entity, validate_contact
from .context import api, collect_events, ctx, json_body, json_list, sandbox
from .entities import (
    apply_tags,
    as_dict,
    check_int,
    common_fields,
    modified_since,
    range_filter,
    render_tags,
    request_id,
    self_link,
    text_matches,
    touch,
)
from .errors import ItemErrors, bad_request, hal
from .fields import apply_values, normalize_values, render_values
from .listing import int_set, order_key, paginate, query, with_params
from .store import CLOSED, Account, Store

__all__ = ["bp", "lead_change_jobs", "render_lead", "create_unsorted_lead", "set_status",
           "resolve_status"]

bp = Blueprint("leads", __name__)

_UNSORTED_CATEGORIES = ("forms", "sip")  # FACTS 1.7 (complex); "chats" is ours (amojo)


# -- validation -------------------------------------------------------------------------------


def resolve_status(account: Account, item: dict[str, Any], errors: ItemErrors, prefix: str,
                    lead: dict[str, Any] | None, allow_unsorted: bool = False
                    ) -> tuple[int, int] | None:
    """(pipeline_id, status_id) after ``item`` or None when unchanged/invalid."""
    pipeline_id = check_int(item, "pipeline_id", errors, prefix)
    status_id = check_int(item, "status_id", errors, prefix)
    if pipeline_id is None and status_id is None:
        return None
    if pipeline_id is not None:
        pipe = account.pipelines.get(pipeline_id)
        if pipe is None:
            errors.add(f"{prefix}pipeline_id")
            return None
    elif status_id in CLOSED and lead is not None:
        pipe = account.pipelines[lead["pipeline_id"]]
    else:
        pipe = account.pipeline_of_status(status_id) if status_id is not None else None
        if pipe is None:
            errors.add(f"{prefix}status_id")
            return None
    if status_id is None:
        return pipe["id"], account.first_working_status(pipe)
    if status_id not in account.status_ids(pipe):
        errors.add(f"{prefix}status_id")
        return None
    if status_id == account.unsorted_status(pipe) and not allow_unsorted and (
            lead is None or lead["status_id"] != status_id):
        errors.add(f"{prefix}status_id")
        return None
    return pipe["id"], status_id


def _links(account: Account, item: dict[str, Any], errors: ItemErrors, prefix: str,
           key: str) -> list[dict[str, Any]] | None:
    embedded = item.get("_embedded")
    if not isinstance(embedded, dict) or key not in embedded:
        return None
    refs = embedded[key]
    if not isinstance(refs, list):
        errors.type_error(f"{prefix}_embedded.{key}", "array")
        return None
    out = []
    for i, ref in enumerate(refs):
        target = account.entities(key).get(ref["id"]) if isinstance(ref, dict) \
            and isinstance(ref.get("id"), int) else None
        if target is None or target["is_deleted"]:
            errors.add(f"{prefix}_embedded.{key}.{i}.id")
            continue
        entry = {"id": target["id"]}
        if key == "contacts":
            entry["is_main"] = bool(ref.get("is_main", i == 0))
        out.append(entry)
    return out


def _validate(account: Account, item: dict[str, Any], errors: ItemErrors,
              lead: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    store = sandbox().store
    fields = {k: v for k, v in common_fields(account, item, errors, prefix).items()
              if k not in {"first_name", "last_name"}}
    for key in ("price", "closed_at", "loss_reason_id"):
        value = check_int(item, key, errors, prefix)
        if value is not None:
            fields[key] = value
    status = resolve_status(account, item, errors, prefix, lead)
    if status is not None:
        fields["pipeline_id"], fields["status_id"] = status
    fields["_values"] = normalize_values(account, "leads", item.get("custom_fields_values"),
                                         errors, prefix)
    apply_tags(store, account, "leads", lead, item, errors, prefix, dry_run=True)
    for key in ("contacts", "companies"):
        links = _links(account, item, errors, prefix, key)
        if links is not None:
            fields[f"_{key}"] = links
    return fields


# -- writes ---------------------------------------------------------------------------------------


def set_status(lead: dict[str, Any], pipeline_id: int, status_id: int,
               closed_at: int | None = None) -> None:
    """Move a lead; 142/143 set ``closed_at``, leaving them clears it (FACTS 1.8)."""
    lead["pipeline_id"], lead["status_id"] = pipeline_id, status_id
    if status_id in CLOSED:
        lead["closed_at"] = closed_at or lead.get("closed_at") or int(sandbox().store.now())
    else:
        lead["closed_at"] = None


def _insert(store: Store, account: Account, item: dict[str, Any], fields: dict[str, Any],
            user_id: int) -> dict[str, Any]:
    now = int(store.now())
    pipe = account.pipelines.get(fields.get("pipeline_id", 0)) or account.main_pipeline()
    lead_id = store.next_id("leads")
    lead: dict[str, Any] = {
        "id": lead_id, "name": fields.get("name") or f"Сделка #{lead_id}",
        "price": fields.get("price", 0),
        "responsible_user_id": fields.get("responsible_user_id", user_id), "group_id": 0,
        "status_id": 0, "pipeline_id": pipe["id"],
        "loss_reason_id": fields.get("loss_reason_id"), "source_id": None,
        "created_by": fields.get("created_by", user_id),
        "updated_by": fields.get("updated_by", fields.get("created_by", user_id)),
        "created_at": fields.get("created_at", now),
        "updated_at": fields.get("updated_at", fields.get("created_at", now)),
        "closed_at": None, "closest_task_at": None, "is_deleted": False,
        "custom_fields_values": [], "score": None, "account_id": account.id,
        "labor_cost": None, "tags": [], "contacts": fields.get("_contacts", []),
        "companies": fields.get("_companies", []), "is_unsorted": False}
    set_status(lead, pipe["id"], fields.get("status_id", account.first_working_status(pipe)),
               fields.get("closed_at"))
    apply_values(lead, fields["_values"])
    lead["tags"] = apply_tags(store, account, "leads", None, item, ItemErrors())
    account.leads[lead_id] = lead
    return lead


def lead_change_jobs(store: Store, account: Account, lead: dict[str, Any],
                     before: dict[str, Any]) -> list[webhooks.Job]:
    """``status_lead`` / ``responsible_lead`` / ``update_lead`` jobs for a change
    (FACTS 1.12: ``old_status_id``; ``old_pipeline_id`` and
    ``old_responsible_user_id`` are legacy names by analogy, UNCONFIRMED)."""
    jobs: list[webhooks.Job] = []
    if (lead["status_id"], lead["pipeline_id"]) != (before["status_id"], before["pipeline_id"]):
        jobs += webhooks.jobs_for(store, account, "status_lead", lead, {
            "old_status_id": before["status_id"], "old_pipeline_id": before["pipeline_id"]})
    if lead["responsible_user_id"] != before["responsible_user_id"]:
        jobs += webhooks.jobs_for(store, account, "responsible_lead", lead, {
            "old_responsible_user_id": before["responsible_user_id"]})
    jobs += webhooks.jobs_for(store, account, "update_lead", lead)
    return jobs


def _update(store: Store, account: Account, lead: dict[str, Any], item: dict[str, Any],
            fields: dict[str, Any], user_id: int) -> list[webhooks.Job]:
    before = dict(lead)
    for key in ("name", "price", "responsible_user_id", "loss_reason_id", "created_by",
                "created_at"):
        if key in fields:
            lead[key] = fields[key]
    if "status_id" in fields:
        set_status(lead, fields["pipeline_id"], fields["status_id"], fields.get("closed_at"))
        if lead["is_unsorted"] and lead["status_id"] != account.unsorted_status(
                account.pipelines[lead["pipeline_id"]]):
            lead["is_unsorted"] = False  # accepted out of Unsorted
    elif "closed_at" in fields and lead["status_id"] in CLOSED:
        lead["closed_at"] = fields["closed_at"]
    for key in ("contacts", "companies"):
        if f"_{key}" in fields:
            lead[key] = fields[f"_{key}"]
    apply_values(lead, fields["_values"])
    lead["tags"] = apply_tags(store, account, "leads", lead, item, ItemErrors())
    touch(lead, fields.get("updated_by", user_id))
    if "updated_at" in fields:
        lead["updated_at"] = fields["updated_at"]
    return lead_change_jobs(store, account, lead, before)


def create_unsorted_lead(store: Store, account: Account, contact: dict[str, Any] | None,
                         category: str, metadata: dict[str, Any], user_id: int,
                         pipeline_id: int | None = None, name: str | None = None,
                         company: dict[str, Any] | None = None) -> dict[str, Any]:
    """An Unsorted lead (FACTS 1.7 metadata, FACTS 1.13 chats) plus its unsorted
    record ``{uid, category, pipeline_id, …}``. Caller holds the lock."""
    pipe = account.pipelines.get(pipeline_id or 0) or account.main_pipeline()
    fields: dict[str, Any] = {"pipeline_id": pipe["id"],
                              "status_id": account.unsorted_status(pipe), "_values": [],
                              "created_by": 0, "updated_by": 0}
    if name:
        fields["name"] = name
    if contact is not None:
        fields["_contacts"] = [{"id": contact["id"], "is_main": True}]
    if company is not None:
        fields["_companies"] = [{"id": company["id"]}]
    lead = _insert(store, account, {}, fields, user_id)
    lead["is_unsorted"] = True
    uid = secrets.token_hex(30)
    lead["unsorted_uid"] = uid
    account.unsorted[uid] = {"uid": uid, "category": category, "pipeline_id": pipe["id"],
                             "created_at": lead["created_at"], "metadata": metadata,
                             "lead_id": lead["id"],
                             "contact_id": contact["id"] if contact else None,
                             "company_id": company["id"] if company else None}
    return lead


# -- rendering ----------------------------------------------------------------------------------


def render_lead(store: Store, account: Account, lead: dict[str, Any],
                with_: set[str]) -> dict[str, Any]:
    """The v4 lead model (FACTS 1.7)."""
    body = {k: lead[k] for k in (
        "id", "name", "price", "responsible_user_id", "group_id", "status_id", "pipeline_id",
        "loss_reason_id", "source_id", "created_by", "updated_by", "created_at", "updated_at",
        "closed_at", "closest_task_at", "is_deleted", "score", "account_id", "labor_cost")}
    body["custom_fields_values"] = render_values(account, "leads",
                                                 lead["custom_fields_values"])
    body["_links"] = self_link(account, f"leads/{lead['id']}")
    embedded: dict[str, Any] = {
        "tags": render_tags(store, account, "leads", lead),
        "companies": [{"id": c["id"], "_links": self_link(account, f"companies/{c['id']}")}
                      for c in lead["companies"]]}
    if "contacts" in with_:
        embedded["contacts"] = [{"id": c["id"], "is_main": c["is_main"],
                                 "_links": self_link(account, f"contacts/{c['id']}")}
                                for c in lead["contacts"]]
    if "is_price_modified_by_robot" in with_:
        body["is_price_modified_by_robot"] = False
    body["_embedded"] = embedded
    return body


# -- endpoints ------------------------------------------------------------------------------------


def _statuses_filter(flt: dict[str, Any]) -> list[tuple[int | None, int | None]] | None:
    raw = flt.get("statuses")
    if not isinstance(raw, dict):
        return None
    out = []
    for entry in raw.values():
        if isinstance(entry, dict):
            try:
                out.append((int(entry["pipeline_id"]) if "pipeline_id" in entry else None,
                            int(entry["status_id"]) if "status_id" in entry else None))
            except ValueError:
                raise bad_request("invalid filter[statuses]") from None
    return out


@bp.route("/<subdomain>/api/v4/leads", methods=["GET"])
@api
def list_leads(subdomain: str) -> Response:
    store = sandbox().store
    account = ctx().account
    q = request.args.get("query")
    flt = query().get("filter")
    flt = flt if isinstance(flt, dict) else {}
    ids, pipes = int_set(flt.get("id")), int_set(flt.get("pipeline_id"))
    statuses = _statuses_filter(flt)
    since = modified_since()
    key, reverse = order_key()
    with_ = with_params()
    with store.lock:
        items = []
        for lead in account.leads.values():
            if lead["is_deleted"] or (ids is not None and lead["id"] not in ids) or (
                    pipes is not None and lead["pipeline_id"] not in pipes):
                continue
            if statuses is not None and not any(
                    (p is None or p == lead["pipeline_id"]) and
                    (s is None or s == lead["status_id"]) for p, s in statuses):
                continue
            if not all(range_filter(flt, k, lead[k]) for k in
                       ("responsible_user_id", "created_at", "updated_at")):
                continue
            if "closed_at" in flt and (lead["closed_at"] is None
                                       or not range_filter(flt, "closed_at", lead["closed_at"])):
                continue
            if since is not None and lead["updated_at"] <= since:
                continue
            if q and not text_matches(q, lead, account, "leads") and q.strip() != str(
                    lead["id"]):
                continue
            items.append(lead)
        items.sort(key=lambda o: (o[key], o["id"]), reverse=reverse)
        return paginate(account, "leads", "leads", items,
                        lambda o: render_lead(store, account, o, with_))


@bp.route("/<subdomain>/api/v4/leads/<int:lead_id>", methods=["GET"])
@api
def get_lead(subdomain: str, lead_id: int) -> Response:
    store = sandbox().store
    account = ctx().account
    with store.lock:
        lead = account.leads.get(lead_id)
        if lead is None or lead["is_deleted"]:
            return missing_entity()
        return hal(render_lead(store, account, lead, with_params()))


@bp.route("/<subdomain>/api/v4/leads", methods=["POST"])
@api
def create_leads(subdomain: str) -> Response:
    sb = sandbox()
    c = ctx()
    items = json_list(sb.cfg["batch_limit"])
    errors = ItemErrors()
    with sb.store.lock:
        checked = []
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            checked.append(_validate(c.account, item, errors, None))
        errors.raise_if_any()
        out, jobs = [], []
        for index, (item, fields) in enumerate(zip(items, checked, strict=True)):
            lead = _insert(sb.store, c.account, item, fields, c.user_id)
            jobs += webhooks.jobs_for(sb.store, c.account, "add_lead", lead)
            out.append({"id": lead["id"], "request_id": request_id(item, index),
                        "_links": self_link(c.account, f"leads/{lead['id']}")})
    if sb.cfg["webhooks_on_api_changes"]:
        collect_events(jobs)
    return hal({"_links": self_link(c.account, "leads"), "_embedded": {"leads": out}})


def _patch(items: list[dict[str, Any]], single: bool) -> Response:
    sb = sandbox()
    c = ctx()
    errors = ItemErrors()
    with sb.store.lock:
        checked: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            lead = c.account.leads.get(item["id"]) if isinstance(item.get("id"),
                                                                       int) else None
            if lead is None or lead["is_deleted"]:
                errors.add("id", "NotFound", "Entity not found.")  # UNCONFIRMED code/detail
                checked.append((None, {}))
                continue
            checked.append((lead, _validate(c.account, item, errors, lead)))
        errors.raise_if_any()
        out, jobs, stage_hooks = [], [], []
        for index, (item, (lead, fields)) in enumerate(zip(items, checked, strict=True)):
            assert lead is not None
            before = dict(lead)
            jobs += _update(sb.store, c.account, lead, item, fields, c.user_id)
            stage_hooks += webhooks.dp_jobs(sb.store, c.account, lead, before)
            out.append({"id": lead["id"], "updated_at": lead["updated_at"],
                        "request_id": request_id(item, index),
                        "_links": self_link(c.account, f"leads/{lead['id']}")})
    if sb.cfg["webhooks_on_api_changes"]:
        collect_events(jobs)
    # a stage's hook fires whoever moved the lead (config dp_webhooks, UNCONFIRMED)
    collect_events(stage_hooks)
    if single:
        out[0].pop("request_id")
        return hal(out[0])
    return hal({"_links": self_link(c.account, "leads"), "_embedded": {"leads": out}})


@bp.route("/<subdomain>/api/v4/leads", methods=["PATCH"])
@api
def patch_leads(subdomain: str) -> Response:
    return _patch(json_list(sandbox().cfg["batch_limit"]), single=False)


@bp.route("/<subdomain>/api/v4/leads/<int:lead_id>", methods=["PATCH"])
@api
def patch_lead(subdomain: str, lead_id: int) -> Response:
    item = json_body()
    if not isinstance(item, dict):
        raise bad_request("Request body must be a JSON object")
    return _patch([dict(item, id=lead_id)], single=True)


# -- complex (FACTS 1.7) --------------------------------------------------------------------------


def _embedded_one(account: Account, item: dict[str, Any], key: str, errors: ItemErrors
                  ) -> tuple[str, Any] | None:
    """("link", entity) / ("new", (fields, values, raw)) / None for ``_embedded.<key>``."""
    embedded = as_dict(item.get("_embedded"))
    refs = embedded.get(key)
    if refs is None:
        return None
    if not isinstance(refs, list):
        errors.type_error(f"_embedded.{key}", "array")
        return None
    if len(refs) > 1:  # FACTS 1.7: at most one contact and one company per lead
        errors.add(f"_embedded.{key}", "TooMany", "This collection should contain 1 element "
                   "or less.")
        return None
    if not refs:
        return None
    ref = refs[0]
    if not isinstance(ref, dict):
        errors.type_error(f"_embedded.{key}.0", "array")
        return None
    if set(ref) <= {"id", "is_main", "request_id"} and "id" in ref:
        target = account.entities(key).get(ref["id"]) if isinstance(ref["id"], int) else None
        if target is None or target["is_deleted"]:
            errors.add(f"_embedded.{key}.0.id")
            return None
        return "link", target
    fields, values = validate_contact(account, ref, errors, key, f"_embedded.{key}.0.")
    return "new", (fields, values, ref)


@bp.route("/<subdomain>/api/v4/leads/complex", methods=["POST"])
@api
def create_complex(subdomain: str) -> Response:
    sb = sandbox()
    c = ctx()
    items = json_list(int(sb.cfg["complex_limit"]))
    errors = ItemErrors()
    with sb.store.lock:
        checked = []
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            embedded = as_dict(item.get("_embedded"))
            meta = embedded.get("metadata")
            if meta is not None and (not isinstance(meta, dict)
                                     or meta.get("category") not in _UNSORTED_CATEGORIES):
                errors.add("_embedded.metadata.category")
            plain = {k: v for k, v in item.items() if k != "_embedded"}
            if meta is not None:  # FACTS 1.7: a status other than Unsorted is ignored
                plain.pop("status_id", None)
            plain["_embedded"] = {k: v for k, v in embedded.items() if k == "tags"}
            fields = _validate(c.account, plain, errors, None)
            contact = _embedded_one(c.account, item, "contacts", errors)
            company = _embedded_one(c.account, item, "companies", errors)
            checked.append((plain, fields, meta, contact, company))
        errors.raise_if_any()
        out, jobs = [], []
        for index, (item, (plain, fields, meta, contact, company)) in enumerate(
                zip(items, checked, strict=True)):
            made: dict[str, dict[str, Any] | None] = {}
            for key, spec in (("contacts", contact), ("companies", company)):
                if spec is None:
                    made[key] = None
                elif spec[0] == "link":
                    made[key] = spec[1]
                else:
                    fields_, values, raw = spec[1]
                    obj = create_contact(sb.store, c.account, raw, fields_, values, c.user_id,
                                         key)
                    made[key] = obj
                    jobs += webhooks.jobs_for(sb.store, c.account, "add_contact" if key ==
                                              "contacts" else "add_company", obj)
            new_contact = contact is not None and contact[0] == "new"
            new_company = company is not None and company[0] == "new"
            if new_contact and new_company:  # FACTS 1.7: new contact and company get linked
                assert made["contacts"] is not None and made["companies"] is not None
                made["contacts"]["companies"] = [made["companies"]["id"]]
            if meta is not None:
                lead = create_unsorted_lead(sb.store, c.account, made["contacts"],
                                            meta["category"], meta, c.user_id,
                                            fields.get("pipeline_id"), fields.get("name"),
                                            made["companies"])
                _update(sb.store, c.account, lead, plain, {k: v for k, v in fields.items()
                                                           if k not in {"status_id",
                                                                        "pipeline_id"}},
                        c.user_id)
            else:
                if made["contacts"] is not None:
                    fields["_contacts"] = [{"id": made["contacts"]["id"], "is_main": True}]
                if made["companies"] is not None:
                    fields["_companies"] = [{"id": made["companies"]["id"]}]
                lead = _insert(sb.store, c.account, plain, fields, c.user_id)
            jobs += webhooks.jobs_for(sb.store, c.account, "add_lead", lead)
            out.append({"id": lead["id"],
                        "contact_id": made["contacts"]["id"] if made["contacts"] else None,
                        "company_id": made["companies"]["id"] if made["companies"] else None,
                        "request_id": [request_id(item, index)], "merged": False})
    if sb.cfg["webhooks_on_api_changes"]:
        collect_events(jobs)
    return hal(out)
