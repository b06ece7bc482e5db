"""The sandbox Bitrix24 Flask app: wiring, faults, error rendering.

URL layout, relative to the mount point (the demo mounts it under
``/sandbox/bitrix24``; real hosts differ, the paths after them are Bitrix24's):

* ``/<portal>/rest/<method>[.json]`` (``auth=<access token>``) and
  ``/<portal>/rest/<user_id>/<webhook code>/<method>[.json]``: REST
  (:mod:`.dispatch`); ``<portal>`` is host-like, e.g. ``demo.bitrix24.ru``.
* ``/<portal>/oauth/authorize/``: consent; ``/oauth/oauth/token/``: the OAuth
  server (``oauth.bitrix.info``); ``/oauth/rest/app.info`` (:mod:`.oauth`).
* ``/_...``: control endpoints (:mod:`sandbox.core.control` with
  :mod:`.control`'s hooks and extras, :mod:`.placements`' ``/_open_app``,
  ``/_stats``, ``/_faults``), never
  faulted, never rate limited.

Faults (:mod:`sandbox.core.faults`) apply to REST calls only and look like
Bitrix24: "5xx" -> 500 ``INTERNAL_SERVER_ERROR``, "429" -> 503
``QUERY_LIMIT_EXCEEDED`` (Bitrix24's rate answer; no Retry-After), timeouts ->
504 from the front proxy; commit-then-timeout answers late after committing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ..core import control as core_control
from ..core import stats
from ..core.clock import Clock
from ..core.faults import FaultPlan
from ..core.ratelimit import TokenBucket
from . import (
    automation,
    control,
    crm_extra,
    crm_methods,
    dispatch,
    events,
    oauth,
    openlines,
    placements,
    userfield_methods,
)
from .config import SETTINGS
from .context import EXTENSION
from .errors import B24Error, json_response, query_limit
from .limits import OperatingMeter
from .store import Store

__all__ = ["create_app"]

# imported for their @method registrations
_METHOD_MODULES = (crm_methods, crm_extra, openlines, events, userfield_methods, placements)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build a sandbox Bitrix24; ``config`` overrides :data:`config.DEFAULTS`."""
    cfg = SETTINGS.build(config)
    app = Flask(__name__, static_folder=None)
    clock = Clock()
    sb = control.B24Sandbox(Store(cfg, clock), clock, TokenBucket(clock.now),
                            OperatingMeter(clock.now), FaultPlan(seed=cfg["seed"]))
    app.extensions[EXTENSION] = sb
    sb.faults.install(app, error_body=_fault_body, applies=_fault_applies)
    for module in (dispatch, oauth, control, automation, placements):
        app.register_blueprint(module.bp)
    app.register_error_handler(B24Error, _render_b24_error)
    app.register_error_handler(HTTPException, _render_http_error)
    core_control.install(app, sb)  # /_state, /_config, /_reset, /_clock, /_reply
    # GET /_stats: REST calls by method name (a batch is one request, its commands the
    # detail) and the OAuth server's token endpoint as "oauth/token"
    stats.install(app, route=_stats_route, detail=_stats_detail, summary=_stats_summary,
                  label=lambda method, route: route)
    return app


def _stats_route() -> str | None:
    path = request.path
    if path.startswith("/_"):
        return None
    if "/rest/" in path and not path.startswith("/oauth/"):
        fallback = path.rsplit("/", 1)[-1].lower().removesuffix(".json")
        return str(getattr(g, "b24_method", None) or fallback)
    if path.startswith("/oauth/oauth/token"):
        return "oauth/token"
    return None


def _stats_detail() -> list[str] | None:
    commands = getattr(g, "b24_batch", None)
    return list(commands) if commands is not None else None


def _stats_summary(items: list[Any]) -> dict[str, Any]:
    """``by_method`` (the same counts as ``by_route``) and ``batch_commands``."""
    return {"by_method": dict(Counter(i[2] for i in items)),
            "batch_commands": dict(Counter(c for i in items for c in (i[4] or [])))}


def _fault_applies() -> bool:
    path = request.path
    return not path.startswith("/_") and "/rest/" in path and not path.startswith("/oauth/")


def _fault_body(status: int, retry_after: float | None) -> Response:
    if status == 429:
        return query_limit().response()  # limits.md: Bitrix24 throttles with 503
    if status == 504:
        page = ("<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 "
                "Gateway Time-out</h1></center><hr><center>nginx</center></body></html>")
        return Response(page, status=504, mimetype="text/html")
    return B24Error(500, "INTERNAL_SERVER_ERROR", "Internal server error").response()


def _render_b24_error(exc: B24Error) -> Response:
    return exc.response()


def _render_http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    if code == 404:
        return json_response({"error": "NOT_FOUND", "error_description":
                              "No such endpoint in the sandbox Bitrix24"}, 404)
    return json_response({"error": exc.name.upper().replace(" ", "_"),
                          "error_description": exc.description or exc.name}, code)
