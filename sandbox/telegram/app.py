"""Flask application factory of the Telegram Bot API sandbox.

Bot API: ``GET|POST /bot<token>/<method>`` with parameters in the query
string, a JSON body, ``application/x-www-form-urlencoded`` or
``multipart/form-data`` (Telegram accepts all four); method names are
case-insensitive. Files: ``GET /file/bot<token>/<file_path>``. Everything
else that is not a control route answers Telegram's ``404 Not Found``
envelope. Control routes: the common ones (:mod:`sandbox.core.control`; the
hooks are :class:`sandbox.telegram.control.TelegramSandbox`'s) and
Telegram's own (:mod:`sandbox.telegram.control`).

Configuration keys in UPPER case go to ``app.config`` (Flask's own); lower-case
keys are :class:`~sandbox.telegram.state.SandboxConfig` fields.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from ..core import control as core_control
from ..core import stats
from ..core.clock import Clock
from ..core.faults import FaultPlan
from .control import TelegramSandbox, control
from .errors import ApiError, bad_request, error_response, fault_body, ok_response
from .methods import dispatch
from .spec import UploadedFile, load_spec
from .state import DEMO_BOT_TOKEN, SandboxConfig, Store

__all__ = ["create_app"]


def _context() -> TelegramSandbox:
    sb: TelegramSandbox = current_app.extensions["telegram_sandbox"]
    return sb


def _read_params() -> tuple[dict[str, Any], dict[str, UploadedFile]]:
    """All parameters of a Bot API request, whatever the transport."""
    raw: dict[str, Any] = dict(request.args.items())
    files: dict[str, UploadedFile] = {}
    if request.mimetype == "application/json":
        data = request.get_data(cache=True)
        if data.strip():
            try:
                body = json.loads(data)
            except ValueError:
                raise bad_request("can't parse JSON object") from None  # sandbox wording
            if not isinstance(body, dict):
                raise bad_request("can't parse JSON object")
            raw.update(body)
    else:
        raw.update(request.form.items())
        for name, storage in request.files.items():
            files[name] = UploadedFile(storage.filename or name, storage.mimetype or "",
                                       storage.read())
    return raw, files


def _bot_api(token: str, method: str) -> Response:
    ctx = _context()
    try:
        raw, files = _read_params()
        result, description = dispatch(ctx.store, ctx.spec, token, method, raw, files)
    except ApiError as error:
        return error_response(error)
    return ok_response(result, description)


def _download(token: str, file_path: str) -> Response:
    ctx = _context()
    with ctx.store.lock:
        bot = ctx.store.bot(token)
        stored = bot.files_by_path.get(file_path) if bot else None
        content = stored.content() if stored else None
        mime = (stored.mime_type if stored else None) or "application/octet-stream"
    if content is None:
        return error_response(ApiError(404, "Not Found"))
    return Response(content, mimetype=mime)


def _index() -> Response:
    return jsonify({
        "sandbox": "telegram",
        "bot_api": f"{request.script_root}/bot<token>/<method>",
        "file_download": f"{request.script_root}/file/bot<token>/<file_path>",
        "demo_bot_token": DEMO_BOT_TOKEN,
        "spec_version": _context().spec.version,
        "control": ["/_deliver", "/_sent", "/_deliveries", "/_reset", "/_config", "/_bots",
                    "/_chats", "/_block", "/_migrate", "/_state", "/_faults", "/_stats",
                    "/_clock"],
        "deliver_forms": {
            "raw": {"update": {"message": {"...": "..."}}, "token": "optional"},
            "convenience": {"from": {"id": 1001, "first_name": "Anna"}, "text": "Hello"},
        },
    })


def _http_error(error: HTTPException) -> Response:
    # The Bot API server answers unknown paths with its JSON envelope
    # (HttpConnection::send_http_error(404, "Not Found")).
    code = error.code or 500
    if code in (404, 405):
        return error_response(ApiError(404, "Not Found"))
    return error_response(ApiError(code, error.name))


class _TelegramJSON(DefaultJSONProvider):
    sort_keys = False  # keep Telegram's field order
    ensure_ascii = False  # raw UTF-8 like Telegram


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the sandbox app; nothing is shared between two apps."""
    values = dict(config or {})
    flask_values = {k: v for k, v in values.items() if k.isupper()}
    sandbox_config = SandboxConfig.from_dict({k: v for k, v in values.items()
                                              if not k.isupper()})
    app = Flask(__name__)
    app.config.update(flask_values)
    app.json = _TelegramJSON(app)

    plan = FaultPlan()
    if sandbox_config.faults:
        plan.update(sandbox_config.faults)
    clock = Clock()
    sb = TelegramSandbox(store=Store(sandbox_config, clock), spec=load_spec(), faults=plan,
                         clock=clock)
    app.extensions["telegram_sandbox"] = sb

    # Only Bot API calls are faulted; control routes and file downloads never are.
    plan.install(app, error_body=fault_body, applies=lambda: request.path.startswith("/bot"))

    app.add_url_rule("/bot<token>/<method>", "bot_api", _bot_api, methods=["GET", "POST"])
    app.add_url_rule("/file/bot<token>/<path:file_path>", "file_download", _download)
    app.add_url_rule("/", "index", _index)
    app.register_blueprint(control)
    app.register_error_handler(HTTPException, _http_error)
    core_control.install(app, sb)  # /_state, /_config, /_reset, /_clock, /_deliver, /_sent
    stats.install(app, route=_stats_route)  # GET /_stats: Bot API calls and downloads
    return app


def _stats_route() -> str | None:
    """``/bot<token>/sendMessage`` (the method as called), ``/file/bot<token>/<file_path>``;
    None for control routes and the index."""
    if request.url_rule is None:
        return request.path if not request.path.startswith("/_") else None
    if request.endpoint == "bot_api":
        return f"/bot<token>/{(request.view_args or {}).get('method', '')}"
    if request.endpoint == "file_download":
        return "/file/bot<token>/<file_path>"
    return None
