"""Operator API: health and status (JSON). Status needs the admin token."""

from __future__ import annotations

import hmac
import os

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import text

from bridge import admin

__all__ = ["bp"]

bp = Blueprint("api", __name__)


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    rt = current_app.extensions["bridge"]
    with rt.transaction() as session:
        session.execute(text("SELECT 1"))
    return jsonify({"ok": True})


def _authorised() -> bool:
    token = os.environ.get("BRIDGE_ADMIN_TOKEN", "")
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@bp.get("/api/status")
def api_status():  # type: ignore[no-untyped-def]
    if not _authorised():
        return jsonify(
            {"error": "unauthorized", "message": "send Authorization: Bearer <BRIDGE_ADMIN_TOKEN>"}
        ), 401
    rt = current_app.extensions["bridge"]
    return jsonify(admin.status(rt))


@bp.get("/openapi.json")
def openapi_document():  # type: ignore[no-untyped-def]
    from bridge.openapi import document

    return jsonify(document())
