"""The demo page: try the whole loop (customer in Telegram <-> rep in HubSpot) in a browser.

``GET /`` serves one plain page (HTML + vanilla JS + CSS from ``static/``, no
build step). Left panel: the customer writes through the Telegram sandbox's
``POST /_deliver`` (convenience form) and sees the transcript from
``/_deliveries`` and ``/_sent``. Right panel: the rep sees contacts, deals,
tickets and the selected contact's timeline from the HubSpot sandbox's
``GET /_state`` and answers with ``POST /_reply``.

The sibling sandboxes are found relative to this app's mount point
(``<script_root>/telegram``, ``<script_root>/hubspot``: ``/sandbox/telegram``
and ``/sandbox/hubspot`` in the demo server) unless ``telegram_base`` /
``hubspot_base`` are configured.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, render_template, request

__all__ = ["create_app", "DEFAULTS"]

DEFAULTS: dict[str, Any] = {"telegram_base": None, "hubspot_base": None, "poll_ms": 1500}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the demo-page app. Upper-case keys go to ``app.config``."""
    values = dict(config or {})
    settings = dict(DEFAULTS)
    unknown = {k for k in values if not k.isupper()} - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown demo page config keys: {sorted(unknown)}")
    settings.update({k: v for k, v in values.items() if not k.isupper()})

    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update({k: v for k, v in values.items() if k.isupper()})

    @app.get("/")
    def index() -> str:
        root = request.script_root
        return render_template(
            "index.html",
            telegram_base=settings["telegram_base"] or f"{root}/telegram",
            hubspot_base=settings["hubspot_base"] or f"{root}/hubspot",
            poll_ms=int(settings["poll_ms"]),
        )

    return app
