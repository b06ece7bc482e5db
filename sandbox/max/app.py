"""Flask application factory of the MAX sandbox.

The Bot API (:mod:`.api`, every path but the control routes and the upload
host), the common control routes (:mod:`sandbox.core.control`, hooks in
:class:`.control.MaxSandbox`) and MAX's own (:mod:`.control`).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ..core import control as core_control
from ..core import stats
from ..core.clock import Clock
from ..core.control import json_response
from ..core.faults import FaultPlan
from .api import ApiError, api, require_auth, upload_host
from .config import DEMO_BOT_ID, SETTINGS
from .control import EXTENSION, MaxSandbox, control
from .state import Hooks, Store

__all__ = ["create_app"]


def _is_api() -> bool:
    """Bot API calls only: never the control routes, the upload host or the index."""
    return not request.path.startswith("/_") and request.path != "/"


def _stats_route() -> str | None:
    return request.path if _is_api() else None


def _http_error(error: HTTPException) -> Response:
    """Unknown paths as MAX answers them (FACTS §12, max-bot-api-client-go#105)."""
    if not _is_api():
        return json_response(
            {
                "error": "not_found" if error.code == 404 else "bad_request",
                "message": error.description,
            },
            error.code or 400,
        )
    if error.code == 405:
        return ApiError(
            405, "method.not.allowed", f"Method {request.method} is not allowed for {request.path}"
        ).response()
    return ApiError(
        404,
        "method.not.found",
        f"Path {request.path} is not recognized. Please check docs at https://dev.max.ru/docs",
    ).response()


def _index() -> Response:
    return json_response(
        {
            "sandbox": "max",
            "api": f"{request.script_root}/<path> (Authorization: <token>)",
            "bot_id": DEMO_BOT_ID,
            "control": [
                "/_config",
                "/_deliver",
                "/_customer",
                "/_start",
                "/_stop",
                "/_contact",
                "/_button",
                "/_sent",
                "/_deliveries",
                "/_flush",
                "/_state",
                "/_reset",
                "/_faults",
                "/_stats",
                "/_clock",
            ],
        }
    )


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the sandbox app; nothing is shared between two apps."""
    values = dict(config or {})
    cfg = SETTINGS.build({k: v for k, v in values.items() if not k.isupper()})
    app = Flask(__name__)
    app.config.update({k: v for k, v in values.items() if k.isupper()})

    clock = Clock()
    store = Store(cfg, clock)
    plan = FaultPlan(seed=cfg["seed"])
    if cfg["faults"]:
        plan.update(cfg["faults"])
    sb = MaxSandbox(store=store, hooks=Hooks(store), faults=plan, clock=clock)
    app.extensions[EXTENSION] = sb

    def fault_body(status: int, retry_after: float | None) -> Response:
        if status == 429:
            with store.lock:
                body = dict(store.config["error_429"])
            response = json_response(body, 429)
            if retry_after:
                response.headers["Retry-After"] = str(int(retry_after))
            return response
        if status == 400:
            return ApiError(400, "proto.payload", "Refused by the sandbox's fault plan").response()
        return ApiError(
            status,
            "internal.error" if status < 503 else "service.unavailable",
            "Service temporarily unavailable",
        ).response()

    def authenticate() -> Response | None:
        if _is_api():
            g.max_error = None
            require_auth()
        return None

    plan.install(app, error_body=fault_body, applies=_is_api)
    app.before_request(authenticate)
    app.register_blueprint(api)
    app.add_url_rule("/_upload/<upload_id>", "max_upload_host", upload_host, methods=["POST"])
    app.add_url_rule("/", "index", _index)
    app.register_blueprint(control)
    app.register_error_handler(ApiError, lambda e: e.response())
    app.register_error_handler(HTTPException, _http_error)
    core_control.install(app, sb)  # /_state, /_config, /_reset, /_clock, /_deliver, /_sent
    stats.install(app, route=_stats_route)
    return app
