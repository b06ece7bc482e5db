"""The omnichannel CRM bridge: app factory.

``create_app()`` builds the Flask app (webhooks, OAuth installs, operator
API) on a :class:`bridge.runtime.Runtime`; nothing connects at import time.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from bridge.config import Settings
from bridge.runtime import Runtime, set_runtime

__all__ = ["create_app"]


def create_app(
    test_config: dict[str, Any] | None = None, *, runtime: Runtime | None = None
) -> Flask:
    """The bridge's web app.

    ``runtime`` (tests, ``bridge run``) or ``test_config["settings"]`` (a
    :class:`Settings`) override the environment.
    """
    app = Flask(__name__, static_folder=None)
    app.config.from_prefixed_env("BRIDGE_FLASK")
    if test_config:
        app.config.update(test_config)
    if runtime is None:
        settings = app.config.get("settings") or Settings.from_env()
        runtime = Runtime(settings)
    from bridge.checks import validate_mappings_dir

    validate_mappings_dir(runtime.settings.mappings_dir)
    set_runtime(runtime)
    app.extensions["bridge"] = runtime
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_body

    from bridge import api, oauth, webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(oauth.bp)
    app.register_blueprint(api.bp)
    _json_errors(app)
    return app


def _json_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify({"error": code, "message": exc.description}), exc.code

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError):  # type: ignore[no-untyped-def]
        # The database is unreachable or locked: nothing was accepted, so
        # ask the sender to retry (every provider retries a 5xx).
        logging.getLogger("bridge").error("database unavailable: %s", type(exc.orig).__name__)
        response = jsonify({"error": "unavailable", "message": "storage unavailable, retry later"})
        response.headers["Retry-After"] = "5"
        return response, 503
