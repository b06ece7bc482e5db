"""Serve the sandbox vendors together, under ``/sandbox``.

* ``mount(bridge_app)``: the demo (``bridge run``) — the sandbox shares the
  bridge's server: ``/sandbox/hubspot/...`` (HubSpot's own paths after the
  prefix), ``/sandbox/amocrm/...``, ``/sandbox/bitrix24/...``,
  ``/sandbox/telegram/bot<token>/<method>``,
  ``/sandbox/whatsapp/v<N>/<phone-number-id>/messages`` (the Graph API's
  paths after the prefix), ``/sandbox/vk/method/<name>`` (VK's API paths
  after the prefix; the Callback API posts to the configured server),
  ``/sandbox/max/<path>`` (the MAX Bot API's paths after the prefix; its
  webhooks post to the subscribed URL),
  ``/sandbox/viber/pa/<name>`` (Viber's REST bot API paths after the prefix;
  callbacks go to the webhook set_webhook named),
  ``/sandbox/site/`` (the demo shop whose pages embed the web chat
  widget, :mod:`sandbox.site`), ``/sandbox/email/...`` (the
  control API of a mail system whose SMTP server listens on a port of its
  own, :mod:`sandbox.email`), and the try-it page at
  ``/sandbox/``. Each vendor's control API (``/_state``, ``/_reply``, ...) is
  under its prefix (``sandbox/README.md``).
* ``python -m sandbox --port 8001``: standalone, for tests, benchmarks and
  your own experiments (same paths).

The sandboxes keep state in process memory: serve them from one process
(threads are fine).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.middleware.dispatcher import DispatcherMiddleware

__all__ = ["build", "mount"]


def _apps(config: dict[str, Any] | None) -> dict[str, Any]:
    from sandbox import (
        amocrm,
        bitrix24,
        custom,
        email,
        hubspot,
        site,
        telegram,
        viber,
        vk,
        web,
        whatsapp,
    )
    from sandbox import max as max_messenger  # not `max`: the builtin

    config = config or {}
    return {
        "/sandbox/hubspot": hubspot.create_app(config.get("hubspot")),
        "/sandbox/amocrm": amocrm.create_app(config.get("amocrm")),
        "/sandbox/bitrix24": bitrix24.create_app(config.get("bitrix24")),
        "/sandbox/telegram": telegram.create_app(config.get("telegram")),
        "/sandbox/whatsapp": whatsapp.create_app(config.get("whatsapp")),
        "/sandbox/vk": vk.create_app(config.get("vk")),
        "/sandbox/viber": viber.create_app(config.get("viber")),
        "/sandbox/max": max_messenger.create_app(config.get("max")),
        "/sandbox/custom": custom.create_app(config.get("custom")),
        "/sandbox/email": email.create_app(config.get("email")),
        "/sandbox/site": site.create_app(config.get("site")),
        "/sandbox": web.create_app(config.get("web")),
    }


def mount(app: Any, config: dict[str, Any] | None = None) -> DispatcherMiddleware:
    """The bridge app with the sandboxes mounted under ``/sandbox``."""
    return DispatcherMiddleware(app, _apps(config))


def build(config: dict[str, Any] | None = None) -> DispatcherMiddleware:
    """The sandboxes alone (anything outside ``/sandbox`` is a JSON 404)."""
    root = Flask("sandbox-root")

    @root.route("/", defaults={"path": ""})
    @root.route("/<path:path>")
    def _nothing(path: str) -> tuple[Response, int]:
        return jsonify({"error": "not_found", "message": "the sandboxes live under /sandbox/"}), 404

    return DispatcherMiddleware(root, _apps(config))
