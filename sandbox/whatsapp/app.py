"""Flask application factory of the WhatsApp Cloud API sandbox.

Graph API routes (:mod:`.graph`), the media URL step (``/_media/<id>``),
the common control routes (:mod:`sandbox.core.control`, hooks in
:class:`.control.WhatsAppSandbox`) and WhatsApp's own (:mod:`.control`).
Configuration keys in UPPER case go to ``app.config`` (Flask's own); the
others are :mod:`.config` keys.
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
from . import graph
from .config import DEMO_ACCESS_TOKEN, DEMO_PHONE_NUMBER_ID, DEMO_WABA_ID, SETTINGS
from .control import EXTENSION, WhatsAppSandbox, control
from .errors import GraphError, fault_body
from .state import Store
from .webhook import Webhooks

__all__ = ["create_app"]

#: Graph routes as ``/_stats`` names them
_ROUTES = {
    "graph_messages": "/v{N}/{phone-number-id}/messages",
    "graph_media_upload": "/v{N}/{phone-number-id}/media",
    "graph_media": "/v{N}/{media-id}",
    "graph_templates": "/v{N}/{waba-id}/message_templates",
    "media_download": "/_media/{media-id}",
}


def _is_api() -> bool:
    """Graph calls and media downloads; never the control routes."""
    return request.path.startswith("/v") or request.path.startswith("/_media/")


def _stats_route() -> str | None:
    if request.endpoint in _ROUTES:
        return _ROUTES[request.endpoint]
    if request.url_rule is None and not request.path.startswith("/_") and request.path != "/":
        return request.path
    return None


def _stats_detail() -> Any:
    """The Graph error code of a failed call (``None`` for a success)."""
    return getattr(g, "graph_error_code", None)


def _stats_summary(items: list[Any]) -> dict[str, Any]:
    codes: dict[str, int] = {}
    for item in items:
        if item[4] is not None:
            codes[str(item[4])] = codes.get(str(item[4]), 0) + 1
    return {"by_error_code": codes}


def _graph_error(error: GraphError) -> Response:
    g.graph_error_code = error.code
    return error.response()


def _http_error(error: HTTPException) -> Response:
    if request.path.startswith("/_"):
        return json_response(
            {
                "error": "not_found" if error.code == 404 else "bad_request",
                "message": error.description,
            },
            error.code or 400,
        )
    # Graph answers a path it does not know with 400, code 2500
    if error.code in (404, 405):
        return _graph_error(
            GraphError(2500, whatsapp=False, message=f"Unknown path components: {request.path}")
        )
    return _graph_error(
        GraphError(
            1,
            status=error.code or 500,
            whatsapp=False,
            message=error.description or "An unknown error occurred",
        )
    )


def _index() -> Response:
    return json_response(
        {
            "sandbox": "whatsapp",
            "graph_api": f"{request.script_root}/v<N>/...",
            "send": f"{request.script_root}/v21.0/{DEMO_PHONE_NUMBER_ID}/messages",
            "templates": f"{request.script_root}/v21.0/{DEMO_WABA_ID}/message_templates",
            "demo_access_token": DEMO_ACCESS_TOKEN,
            "control": [
                "/_config",
                "/_verify",
                "/_deliver",
                "/_customer",
                "/_press",
                "/_sent",
                "/_deliveries",
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
    sb = WhatsAppSandbox(store=store, webhooks=Webhooks(store), faults=plan, clock=clock)
    app.extensions[EXTENSION] = sb

    plan.install(app, error_body=fault_body, applies=_is_api)
    app.add_url_rule(
        "/v<version>/<phone_number_id>/messages",
        "graph_messages",
        graph.send_message,
        methods=["POST"],
    )
    app.add_url_rule(
        "/v<version>/<phone_number_id>/media",
        "graph_media_upload",
        graph.upload_media,
        methods=["POST"],
    )
    app.add_url_rule(
        "/v<version>/<waba_id>/message_templates",
        "graph_templates",
        graph.message_templates,
        methods=["GET"],
    )
    app.add_url_rule(
        "/v<version>/<media_id>", "graph_media", graph.media_object, methods=["GET", "DELETE"]
    )
    app.add_url_rule("/_media/<media_id>", "media_download", graph.download_media, methods=["GET"])
    app.add_url_rule("/", "index", _index)
    app.register_blueprint(control)
    app.register_error_handler(GraphError, _graph_error)
    app.register_error_handler(HTTPException, _http_error)
    core_control.install(app, sb)  # /_state, /_config, /_reset, /_clock, /_deliver, /_sent
    stats.install(app, route=_stats_route, detail=_stats_detail, summary=_stats_summary)
    return app
