"""Pipelines/statuses and entity links (FACTS.md 1.7/1.8).

* ``GET /<sub>/api/v4/leads/pipelines[/<id>[/statuses[/<id>]]]`` -- every
  pipeline has its own Unsorted status (``type: 1``) and the shared system
  statuses 142 (won) and 143 (lost) (FACTS 1.8).
* ``POST /<sub>/api/v4/{leads|contacts}/<id>/link`` and ``/unlink`` --
  ``[{"to_entity_id", "to_entity_type", "metadata"?: {"is_main"}}]`` (the
  request shape is amoCRM's v4 links API; not in FACTS, our reading).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from .contacts import missing_entity
from .context import api, ctx, json_list, sandbox
from .entities import request_id, self_link
from .errors import ItemErrors, hal, no_content
from .store import Account

__all__ = ["bp"]

bp = Blueprint("pipelines", __name__)


# -- pipelines (FACTS 1.8) ------------------------------------------------------------------------


def _status(account: Account, status: dict[str, Any]) -> dict[str, Any]:
    body = dict(status)
    body["_links"] = self_link(account, f"leads/pipelines/{status['pipeline_id']}/statuses/"
                                        f"{status['id']}")
    return body


def _pipeline(account: Account, pipe: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in pipe.items() if k != "statuses"}
    body["_links"] = self_link(account, f"leads/pipelines/{pipe['id']}")
    body["_embedded"] = {"statuses": [_status(account, s) for s in sorted(
        pipe["statuses"], key=lambda s: s["sort"])]}
    return body


@bp.route("/<subdomain>/api/v4/leads/pipelines", methods=["GET"])
@api
def list_pipelines(subdomain: str) -> Response:
    account = ctx().account
    with sandbox().store.lock:
        pipes = sorted(account.pipelines.values(), key=lambda p: p["sort"])
        return hal({"_total_items": len(pipes), "_links": self_link(account, "leads/pipelines"),
                    "_embedded": {"pipelines": [_pipeline(account, p) for p in pipes]}})


@bp.route("/<subdomain>/api/v4/leads/pipelines/<int:pipeline_id>", methods=["GET"])
@api
def get_pipeline(subdomain: str, pipeline_id: int) -> Response:
    account = ctx().account
    with sandbox().store.lock:
        pipe = account.pipelines.get(pipeline_id)
        return hal(_pipeline(account, pipe)) if pipe else missing_entity()


@bp.route("/<subdomain>/api/v4/leads/pipelines/<int:pipeline_id>/statuses", methods=["GET"])
@api
def list_statuses(subdomain: str, pipeline_id: int) -> Response:
    account = ctx().account
    with sandbox().store.lock:
        pipe = account.pipelines.get(pipeline_id)
        if pipe is None:
            return missing_entity()
        statuses = [_status(account, s) for s in sorted(pipe["statuses"],
                                                        key=lambda s: s["sort"])]
        return hal({"_total_items": len(statuses),
                    "_links": self_link(account, f"leads/pipelines/{pipeline_id}/statuses"),
                    "_embedded": {"statuses": statuses}})


@bp.route("/<subdomain>/api/v4/leads/pipelines/<int:pipeline_id>/statuses/<int:status_id>",
          methods=["GET"])
@api
def get_status(subdomain: str, pipeline_id: int, status_id: int) -> Response:
    account = ctx().account
    with sandbox().store.lock:
        pipe = account.pipelines.get(pipeline_id)
        status = next((s for s in pipe["statuses"] if s["id"] == status_id), None) \
            if pipe else None
        return hal(_status(account, status)) if status else missing_entity()


# -- links (leads <-> contacts / companies) -------------------------------------------------------


@bp.route("/<subdomain>/api/v4/<any(leads,contacts):entity>/<int:entity_id>/<any(link,unlink):op>",
          methods=["POST"])
@api
def link(subdomain: str, entity: str, entity_id: int, op: str) -> Response:
    """``[{"to_entity_id", "to_entity_type", "metadata"?: {"is_main"}}]``."""
    sb = sandbox()
    account = ctx().account
    items = json_list(sb.cfg["batch_limit"])
    errors = ItemErrors()
    with sb.store.lock:
        source = account.entities(entity).get(entity_id)
        if source is None or source["is_deleted"]:
            return missing_entity()
        allowed = {"contacts", "companies"} if entity == "leads" else {"leads", "companies"}
        for index, item in enumerate(items):
            errors.item(request_id(item, index))
            kind = item.get("to_entity_type")
            if not isinstance(kind, str) or kind not in allowed:
                errors.add("to_entity_type")
                continue
            tid = item.get("to_entity_id")
            target = account.entities(kind).get(tid) if isinstance(tid, int) else None
            if target is None or target["is_deleted"]:
                errors.add("to_entity_id")
        errors.raise_if_any()
        out = []
        for item in items:
            kind, tid = item["to_entity_type"], item["to_entity_id"]
            is_main = bool((item.get("metadata") or {}).get("is_main", False))
            if entity == "contacts" and kind == "companies":
                source["companies"] = [] if op == "unlink" else [tid]
            else:
                lead = source if entity == "leads" else account.leads[tid]
                other_kind = kind if entity == "leads" else "contacts"
                other_id = tid if entity == "leads" else entity_id
                lead[other_kind] = [r for r in lead[other_kind] if r["id"] != other_id]
                if op == "link":
                    entry: dict[str, Any] = {"id": other_id}
                    if other_kind == "contacts":
                        entry["is_main"] = is_main or not lead["contacts"]
                    lead[other_kind].append(entry)
            out.append({"entity_id": entity_id, "entity_type": entity, "to_entity_id": tid,
                        "to_entity_type": kind, "metadata": item.get("metadata")})
    if op == "unlink":
        return no_content()
    return hal({"_total_items": len(out), "_links": self_link(account, f"{entity}/{entity_id}/"
                                                                       "link"),
                "_embedded": {"links": out}})
