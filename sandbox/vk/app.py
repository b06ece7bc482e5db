"""Flask application factory of the VK sandbox.

The API (``/method/<name>``, :mod:`.api`), the common control routes
(:mod:`sandbox.core.control`, hooks in :class:`.control.VkSandbox`) and VK's
own (:mod:`.control`). Configuration keys in UPPER case go to ``app.config``
(Flask's own); the others are :mod:`.config` keys.
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
from .api import call_method
from .callback import Callbacks
from .config import DEMO_ACCESS_TOKEN, DEMO_GROUP_ID, SETTINGS
from .control import EXTENSION, VkSandbox, control
from .errors import ApiError, api_fault_body
from .state import Store

__all__ = ["create_app"]


def _is_api() -> bool:
    """API calls only; never the control routes."""
    return request.path.startswith("/method/")


def _stats_route() -> str | None:
    if request.path.startswith("/method/"):
        return request.path[len("/method/"):] or "/method/"
    return None


def _stats_detail() -> Any:
    """The VK error code of a failed call (``None`` for a success)."""
    return getattr(g, "vk_error_code", None)


def _stats_summary(items: list[Any]) -> dict[str, Any]:
    codes: dict[str, int] = {}
    for item in items:
        if item[4] is not None:
            codes[str(item[4])] = codes.get(str(item[4]), 0) + 1
    return {"by_error_code": codes}


def _api_error(error: ApiError) -> Response:
    return error.response()


def _http_error(error: HTTPException) -> Response:
    if not request.path.startswith("/method/"):
        return json_response(
            {"error": "not_found" if error.code == 404 else "bad_request",
             "message": error.description},
            error.code or 400,
        )
    return ApiError(3).response()


def _index() -> Response:
    return json_response({
        "sandbox": "vk",
        "api": f"{request.script_root}/method/<name>",
        "send": f"{request.script_root}/method/messages.send",
        "group_id": DEMO_GROUP_ID,
        "demo_access_token": DEMO_ACCESS_TOKEN,
        "control": ["/_config", "/_connect", "/_deliver", "/_customer", "/_allow", "/_deny",
                    "/_button", "/_user", "/_inject", "/_sent", "/_deliveries", "/_flush",
                    "/_state", "/_reset", "/_faults", "/_stats", "/_clock"],
    })


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
    sb = VkSandbox(store=store, callbacks=Callbacks(store), faults=plan, clock=clock)
    app.extensions[EXTENSION] = sb

    def fault_body(status: int, retry_after: float | None) -> Response:
        with store.lock:
            http_5xx = store.config["fault_5xx"] == "http"
        return api_fault_body(status, retry_after, http_5xx=http_5xx)

    plan.install(app, error_body=fault_body, applies=_is_api)
    app.add_url_rule("/method/<method>", "vk_method", call_method, methods=["GET", "POST"])
    app.add_url_rule("/", "index", _index)
    app.register_blueprint(control)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    core_control.install(app, sb)  # /_state, /_config, /_reset, /_clock, /_deliver, /_sent
    stats.install(app, route=_stats_route, detail=_stats_detail, summary=_stats_summary,
                  label=lambda method, route: route)
    return app
