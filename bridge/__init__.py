"""The omnichannel CRM bridge: app factory.

``create_app()`` builds the Flask app (webhooks, OAuth installs, operator
API) on a :class:`bridge.runtime.Runtime`; nothing connects at import time.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from bridge.config import Settings
from bridge.crypto import SecretBindingError
from bridge.runtime import Runtime, set_runtime

__all__ = ["__version__", "create_app"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crm-bridge")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


__version__ = _version()


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
    if runtime.settings.trusted_proxies:
        # behind a load balancer every client would share its address
        proxies = runtime.settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]

    from bridge import api, console, files, oauth, webhooks
    from bridge.metrics_web import bp as metrics_bp
    from bridge.service import web as service_web

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(service_web.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(oauth.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(console.bp)
    _channel_blueprints(app)
    _json_errors(app)
    return app


def _channel_blueprints(app: Flask) -> None:
    """The endpoints channels serve themselves (a hosted channel's client
    API), each channel's own blueprint."""
    from bridge.registry import UnknownAdapter, channel_class, channel_kinds

    for kind in channel_kinds():
        try:
            blueprint = channel_class(kind).blueprint()
        except UnknownAdapter:
            continue  # disabled (missing library): logged by the registry
        if blueprint is not None:
            app.register_blueprint(blueprint)


def _logged_path(path: str) -> str:
    """The request path for a log line: a webhook URL's last segment is its
    path secret (``/webhooks/<kind>/<key>``) and stays out of the log, as do
    a file link's token and name (``/files/<uid>/<token>/<name>``)."""
    if path.startswith("/webhooks/") and not path.endswith("/install"):
        return path.rsplit("/", 1)[0] + "/<key>"
    if path.startswith("/files/"):
        return "/".join(path.split("/")[:3]) + "/<token>/<name>"
    return path


def _json_errors(app: Flask) -> None:
    def log_exception(
        exc_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None],
    ) -> None:
        # Flask's own line names request.path: the webhook key with it
        app.logger.error(
            "Exception on %s [%s]", _logged_path(request.path), request.method, exc_info=exc_info
        )

    # on this app only (Flask's method, replaced on the instance)
    app.log_exception = log_exception  # type: ignore[method-assign]

    @app.errorhandler(SecretBindingError)
    def _secret_unreadable(exc: SecretBindingError) -> tuple[Response, int]:
        # A stored secret does not decrypt: its row was moved, or the key it
        # is under was dropped before `bridge keys rotate`. Nothing was accepted.
        logging.getLogger("bridge").error(
            "stored secret unreadable on %s: %s", _logged_path(request.path), exc
        )
        response = jsonify(
            {
                "error": "secret_unreadable",
                "message": "a stored secret cannot be read with the configured keys",
            }
        )
        return response, 500

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        # Flask returns an exception without a code (a routing proxy) as it
        # is, without calling the handler
        assert exc.code is not None
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify({"error": code, "message": exc.description}), exc.code

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError) -> tuple[Response, int]:
        # The database is unreachable or locked: nothing was accepted, so
        # ask the sender to retry (every provider retries a 5xx).
        logging.getLogger("bridge").error("database unavailable: %s", type(exc.orig).__name__)
        response = jsonify({"error": "unavailable", "message": "storage unavailable, retry later"})
        response.headers["Retry-After"] = "5"
        return response, 503
