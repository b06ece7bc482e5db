"""Operator endpoints: the home page, health, readiness and status (JSON).
Status needs the admin token.

The tenant's API (``/api/v1``, a tenant's token from ``bridge.apitokens``):
cascade messages to a CRM contact, one or a batch (``bridge.cascade``), and
their state. Every error is JSON ``{error, message}``."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from html import escape
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, request
from flask.typing import ResponseReturnValue

from bridge import __version__, admin, health
from bridge.runtime import Runtime, app_runtime

__all__ = ["bp"]

bp = Blueprint("api", __name__)

_HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CRM bridge</title>
<link rel="icon" href="data:,">
<style>
body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
.ok{{color:#0a7d32}}.bad{{color:#b42318}}
</style>
</head><body>
<h1>CRM bridge <small>{version}</small></h1>
<p>Customer channels &harr; your CRM. / Каналы клиентов &harr; ваша CRM.</p>
<p class="{css}"><strong>{state}</strong></p>
<ul>{checks}</ul>
<p><a href="/healthz">/healthz</a> &middot; <a href="/readyz">/readyz</a> &middot;
<a href="/openapi.json">/openapi.json</a></p>
</body></html>
"""


def _runtime() -> Runtime:
    return app_runtime()


@bp.get("/")
def home() -> ResponseReturnValue:
    """The demo sends a browser to its try-it page; otherwise a short page
    names the service, its version and its health."""
    rt = _runtime()
    if rt.settings.home_url:
        return redirect(rt.settings.home_url)
    state = health.check(rt)
    parts = (("database", state.database), ("redis", state.redis), ("workers", state.workers))
    checks = "".join(
        f"<li>{name}: {'ok' if c.ok else 'NOT OK'}"
        + (f" ({escape(c.detail)})" if c.detail else "")
        + "</li>"
        for name, c in parts
    )
    page = _HOME.format(
        version=escape(__version__),
        css="ok" if state.healthy else "bad",
        state="healthy / работает" if state.healthy else "degraded / есть проблемы",
        checks=checks,
    )
    return Response(page, status=200 if state.healthy else 503, mimetype="text/html")


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """200 when the database and Redis answer and a worker reported lately;
    503 with what is wrong otherwise."""
    state = health.check(_runtime())
    return jsonify({**state.to_json(), "version": __version__}), 200 if state.healthy else 503


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """For load balancers: 200 when a webhook sent here would be stored and
    queued (database and Redis answer). The workers' heartbeat is reported
    too, but does not make the answer 503: without workers a webhook is
    still journaled and waits, where taking every web process out of the
    balancer would refuse it."""
    state = health.check(_runtime())
    body = {"ready": state.ready, "checks": state.to_json()["checks"]}
    return jsonify(body), 200 if state.ready else 503


def _authorised() -> bool:
    token = os.environ.get("BRIDGE_ADMIN_TOKEN", "")
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@bp.get("/api/status")
def api_status() -> ResponseReturnValue:
    if not _authorised():
        return jsonify(
            {"error": "unauthorized", "message": "send Authorization: Bearer <BRIDGE_ADMIN_TOKEN>"}
        ), 401
    return jsonify(admin.status(_runtime()))


@bp.get("/openapi.json")
def openapi_document() -> ResponseReturnValue:
    from bridge.openapi import document

    return jsonify(document())


# -- /api/v1: the tenant's API (a tenant's token, ``bridge.apitokens``) ----------


def _problem(status: int, error: str, message: str) -> ResponseReturnValue:
    response = jsonify({"error": error, "message": message})
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="bridge"'
    return response, status


def _tenant() -> int | None:
    from bridge import apitokens

    return apitokens.tenant_of(_runtime(), request.headers.get("Authorization"))


def _unauthorised() -> ResponseReturnValue:
    return _problem(
        401, "unauthorized", "send Authorization: Bearer <the tenant's API token> (brt_...)"
    )


def _json_body() -> tuple[Any, ResponseReturnValue | None]:
    """The request's JSON, or the problem answer (415 / 400)."""
    if not request.is_json:
        return None, _problem(415, "unsupported_media_type", "send Content-Type: application/json")
    body = request.get_json(silent=True)
    if body is None:
        return None, _problem(400, "invalid_json", "the body is not valid JSON")
    return body, None


@bp.get("/api/v1/contacts/<crm_contact_id>")
def client_explained(crm_contact_id: str) -> ResponseReturnValue:
    """The client behind a CRM contact, as ``bridge contacts show`` explains
    it: handles, conversations, merges and links with their evidence,
    reachability."""
    from bridge.clients import describe, find_client
    from bridge.identity import IdentityError

    tenant_id = _tenant()
    if tenant_id is None:
        return _unauthorised()
    with _runtime().transaction() as session:
        try:
            client = find_client(session, f"crm:{crm_contact_id[:64]}", tenant_id)
        except IdentityError as exc:
            return _problem(404, "unknown_contact", str(exc))
        return jsonify(describe(session, client))


@bp.post("/api/v1/links/<int:link_id>/<any(confirm, dismiss):decision>")
def link_decided(link_id: int, decision: str) -> ResponseReturnValue:
    """A rep's one action on "possibly the same client": confirm (the two
    are merged; the answer names the merge) or dismiss (never linked again)."""
    return _identity_action(decision, link_id)


@bp.post("/api/v1/merges/<int:merge_id>/undo")
def merge_undone(merge_id: int) -> ResponseReturnValue:
    """Split a merge: each conversation back to its own client."""
    return _identity_action("unmerge", merge_id)


def _identity_action(action: str, row_id: int) -> ResponseReturnValue:
    from bridge import identity

    tenant_id = _tenant()
    if tenant_id is None:
        return _unauthorised()
    by = "api:" + (request.headers.get("X-Bridge-Actor") or "tenant")[:60]
    with _runtime().transaction() as session:
        try:
            if action == "confirm":
                merge = identity.confirm_link(session, row_id, by, tenant_id)
                return jsonify({"link": row_id, "state": "confirmed", "merge": merge.id})
            if action == "dismiss":
                identity.dismiss_link(session, row_id, by, tenant_id)
                return jsonify({"link": row_id, "state": "dismissed"})
            merge = identity.unmerge(session, row_id, by, tenant_id)
            return jsonify({"merge": row_id, "undone": True, "client": merge.from_contact_id})
        except identity.IdentityError as exc:
            missing = str(exc).startswith("no ")
            return _problem(
                404 if missing else 409, "not_found" if missing else "conflict", str(exc)
            )


@bp.post("/api/v1/contacts/<crm_contact_id>/messages")
def cascade_for_contact(crm_contact_id: str) -> ResponseReturnValue:
    """Start a cascade message to one CRM contact: 202 with its id (the
    same for a retried request with the same key)."""
    from bridge import cascade

    tenant_id = _tenant()
    if tenant_id is None:
        return _unauthorised()
    body, problem = _json_body()
    if problem is not None:
        return problem
    try:
        asked = cascade.parse_request(body)
    except cascade.BadRequest as exc:
        return _problem(exc.status, exc.code, exc.message)
    if len(crm_contact_id) > 64:
        return _problem(404, "unknown_contact", "no client of the bridge has this CRM contact id")
    try:
        uid, created = cascade.start_once(_runtime(), tenant_id, crm_contact_id, asked)
    except cascade.BadRequest as exc:
        return _problem(exc.status, exc.code, exc.message)
    except cascade.NotFound:
        return _problem(
            404,
            "unknown_contact",
            "no client of the bridge has this CRM contact id (a client is known once they "
            "wrote on a channel, or their contact was synced)",
        )
    shown = cascade.view(_runtime(), tenant_id, uid)
    response = jsonify({**(shown or {"id": uid}), "created": created})
    response.headers["Location"] = f"/api/v1/cascades/{uid}"
    return response, 202


def _tenant_view(
    view: Callable[[Runtime, int, str], Any], key: str, code: str, what: str
) -> tuple[Any, ResponseReturnValue | None]:
    """What ``view`` shows the calling tenant of ``key``, or the answer
    refusing it (no token: 401; not this tenant's: 404)."""
    tenant_id = _tenant()
    if tenant_id is None:
        return None, _unauthorised()
    shown = view(_runtime(), tenant_id, key[:36])
    if shown is None:
        return None, _problem(404, code, f"no such {what} for this tenant")
    return shown, None


@bp.get("/api/v1/cascades/<uid>")
def cascade_state(uid: str) -> ResponseReturnValue:
    """A cascade's state: each channel's step and the outcome."""
    from bridge import cascade

    shown, refused = _tenant_view(cascade.view, uid, "unknown_cascade", "cascade")
    return refused or jsonify(shown)


@bp.post("/api/v1/messages/cascade")
def cascade_batch() -> ResponseReturnValue:
    """Start one cascade per CRM contact of a list: 202 with the batch id,
    each contact's cascade id, and the contacts the bridge does not know."""
    from bridge import cascade

    tenant_id = _tenant()
    if tenant_id is None:
        return _unauthorised()
    body, problem = _json_body()
    if problem is not None:
        return problem
    try:
        asked = cascade.parse_request(body, batch=True)
        batch, started, unknown = cascade.start_batch(_runtime(), tenant_id, asked)
    except cascade.BadRequest as exc:
        return _problem(exc.status, exc.code, exc.message)
    response = jsonify(
        {
            "batch": batch,
            "cascades": [{"contact": crm_id, "id": uid} for crm_id, uid in started],
            "unknown_contacts": unknown,
        }
    )
    response.headers["Location"] = f"/api/v1/messages/cascade/{batch}"
    return response, 202


@bp.get("/api/v1/messages/cascade/<batch>")
def cascade_batch_state(batch: str) -> ResponseReturnValue:
    """A batch's cascades, each as ``GET /api/v1/cascades/<id>`` shows it."""
    from bridge import cascade

    shown, refused = _tenant_view(cascade.batch_view, batch, "unknown_batch", "batch")
    return refused or jsonify({"batch": batch, "cascades": shown})


@bp.post("/webhooks/crm/<crm>/<key>/cascade")
def cascade_from_crm(crm: str, key: str) -> ResponseReturnValue:
    """A CRM automation asking for a cascade (a workflow's or pipeline's
    webhook): the tenant's webhook key in the path, the contact from the
    CRM's body (``CrmAdapter.cascade_contact``), the message from the query:
    ``text``, ``channels`` (comma-separated), ``wait_minutes``, ``key``."""
    from sqlalchemy import select

    from bridge import cascade
    from bridge.errors import AuthError, PermanentError, RetryableError, WebhookError
    from bridge.registry import UnknownAdapter
    from bridge.tables import Tenant
    from bridge.webhooks import to_webhook_request

    rt = _runtime()
    with rt.read_session() as session:
        tenant = session.scalars(
            select(Tenant).where(Tenant.webhook_key == key, Tenant.crm_kind == crm)
        ).first()
        try:
            adapter = rt.crm_adapter(tenant) if tenant is not None else None
        except UnknownAdapter:
            adapter = None
    if tenant is None or adapter is None:
        return _problem(404, "not_found", "no such webhook")
    try:
        webhook = to_webhook_request(request, rt.settings.public_url)
        contact, event = adapter.cascade_contact(webhook)
    except NotImplementedError:
        return _problem(404, "no_cascade_trigger", f"{crm} has no cascade trigger")
    except WebhookError as exc:
        return _problem(exc.status_code, exc.code, exc.message)
    except (RetryableError, AuthError) as exc:
        # reading the record's contact failed for now: the CRM delivers again
        return _problem(503, "crm_unavailable", exc.message or type(exc).__name__)
    except PermanentError as exc:
        return _problem(404, "unknown_record", exc.message or type(exc).__name__)
    try:
        asked = cascade.parse_request(_query_request(event))
        uid, created = cascade.start_once(rt, tenant.id, contact, asked)
    except cascade.BadRequest as exc:
        return _problem(exc.status, exc.code, exc.message)
    except cascade.NotFound:
        # the CRM did its part: nothing to retry (a 2xx keeps its hook alive)
        return jsonify({"started": False, "error": "unknown_contact", "contact": contact}), 200
    return jsonify({**(cascade.view(rt, tenant.id, uid) or {"id": uid}), "created": created}), 202


def _query_request(event: str) -> dict[str, Any]:
    """The cascade API's body from an automation URL's query; the key is
    the query's (a campaign's name) and the CRM call's own id together."""
    args = request.args
    body: dict[str, Any] = {
        "text": args.get("text", ""),
        "channels": [c.strip() for c in args.get("channels", "").split(",") if c.strip()],
        "key": f"{args.get('key', 'crm')[:60]}:{event}"[:200],
    }
    wait = args.get("wait_minutes")
    if wait is not None:
        body["wait_minutes"] = int(wait) if wait.strip().isdigit() else wait
    return body
