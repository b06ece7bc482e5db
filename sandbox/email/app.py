"""Flask application factory of the e-mail sandbox.

The vendor's API here is SMTP (:mod:`sandbox.email.smtp`); the HTTP side is
the control API only (:mod:`sandbox.email.control`). Configuration:
:class:`sandbox.email.state.SandboxConfig` fields; keys in UPPER case go to
``app.config`` (Flask's own).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app

from ..core import control as core_control
from ..core import stats
from ..core.clock import Clock
from ..core.control import json_response
from ..core.faults import FaultPlan
from .control import EXTENSION, EmailSandbox, control, deliver_view
from .state import DEMO_ADDRESS, SandboxConfig, Store

__all__ = ["create_app"]


def _index() -> Response:
    sb = _current()
    return json_response(
        {
            "sandbox": "email",
            "smtp": sb.smtp.view(),
            "demo_address": DEMO_ADDRESS,
            "control": [
                "/_deliver",
                "/_sent",
                "/_sent/<id>/raw",
                "/_deliveries",
                "/_mailboxes",
                "/_smtp",
                "/_state",
                "/_reset",
                "/_config",
                "/_faults",
                "/_stats",
                "/_clock",
            ],
            "deliver_forms": {
                "json": {
                    "from": "anna@example.com",
                    "name": "Anna",
                    "subject": "Delivery",
                    "text": "Do you deliver to Berlin?",
                    "in_reply_to": "optional <id>",
                },
                "raw": "Content-Type: message/rfc822, the message as it is [?account=<address>]",
            },
        }
    )


def _current() -> EmailSandbox:
    sb: EmailSandbox = current_app.extensions[EXTENSION]
    return sb


def _no_vendor_fault(status: int, retry_after: float | None) -> Response:
    # never called: the plan's faults act on SMTP transactions, not on HTTP
    return json_response({"error": "fault", "status": status}, status)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the sandbox app; nothing is shared between two apps. The SMTP
    server starts with the app's first request (``sb.smtp.start()`` starts
    it at once; ``sb.smtp.stop()`` ends it)."""
    values = dict(config or {})
    sandbox_config = SandboxConfig.from_dict({k: v for k, v in values.items() if not k.isupper()})
    app = Flask(__name__)
    app.config.update({k: v for k, v in values.items() if k.isupper()})

    plan = FaultPlan()
    if sandbox_config.faults:
        plan.update(sandbox_config.faults)
    clock = Clock()
    sb = EmailSandbox(Store(sandbox_config, clock), plan, clock)
    app.extensions[EXTENSION] = sb

    @app.before_request
    def _start_smtp() -> None:
        if not sb.smtp.running:
            sb.smtp.start()

    # /_faults: the plan acts on the SMTP server's transactions (smtp.py)
    plan.install(app, error_body=_no_vendor_fault, applies=lambda: False)
    app.add_url_rule("/", "index", _index)
    app.register_blueprint(control)
    core_control.install(app, sb)  # /_state, /_config, /_reset, /_clock, /_deliver, /_sent
    app.view_functions["sandbox_deliver"] = deliver_view  # JSON or message/rfc822
    # GET /_stats: SMTP transactions (``SMTP DATA`` by reply code); no HTTP vendor API
    sb.smtp.stats = stats.install(app, route=lambda: None)
    return app
