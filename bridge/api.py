"""Operator endpoints: the home page, health, readiness and status (JSON).
Status needs the admin token."""

from __future__ import annotations

import hmac
import os
from html import escape

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
    queued (database and Redis answer); workers are not needed for that."""
    state = health.check(_runtime(), workers=False)
    body = {"ready": state.ready, "checks": state.to_json()["checks"]}
    del body["checks"]["workers"]
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
