"""Flask application factory of the Viber sandbox.

The REST bot API (``/pa/<name>``, :mod:`.api`), the common control routes
(:mod:`sandbox.core.control`, hooks in :class:`.control.ViberSandbox`) and
Viber's own (:mod:`.control`). Configuration keys in UPPER case go to
``app.config`` (Flask's own); the others are :mod:`.config` keys.
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
from .api import call, status_body
from .callbacks import Callbacks
from .config import DEMO_BOT_ID, SETTINGS
from .control import EXTENSION, ViberSandbox, control
from .state import Store

__all__ = ["create_app"]


def _is_api() -> bool:
    return request.path.startswith("/pa/")


def _stats_route() -> str | None:
    return request.path[len("/pa/") :] or "/pa/" if _is_api() else None


def _stats_detail() -> Any:
    """Viber's status of the call (0: ok)."""
    return getattr(g, "viber_status", None)


def _fault_body(status: int, retry_after: float | None) -> Response:
    """A fault as Viber shows it: rate control is status 12 in a 200 body;
    a 5xx or a timeout is the front end's bare error."""
    if status == 429:
        return status_body(12)
    return Response(
        "<html><body>Service Unavailable</body></html>", status=status, content_type="text/html"
    )


def _http_error(error: HTTPException) -> Response:
    return json_response(
        {
            "error": "not_found" if error.code == 404 else "bad_request",
            "message": error.description,
        },
        error.code or 400,
    )


def _index() -> Response:
    return json_response(
        {
            "sandbox": "viber",
            "api": f"{request.script_root}/pa/<name>",
            "send": f"{request.script_root}/pa/send_message",
            "bot_id": DEMO_BOT_ID,
            "control": [
                "/_config",
                "/_deliver",
                "/_customer",
                "/_press",
                "/_open",
                "/_subscribe",
                "/_unsubscribe",
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
    sb = ViberSandbox(store=store, callbacks=Callbacks(store), faults=plan, clock=clock)
    app.extensions[EXTENSION] = sb
    plan.install(app, error_body=_fault_body, applies=_is_api)
    app.add_url_rule("/pa/<name>", "viber_call", call, methods=["POST"])
    app.add_url_rule("/", "index", _index)
    app.register_blueprint(control)
    app.register_error_handler(HTTPException, _http_error)
    core_control.install(app, sb)  # /_state, /_config, /_reset, /_clock, /_deliver, /_sent
    stats.install(app, route=_stats_route, detail=_stats_detail, label=lambda method, route: route)
    return app
