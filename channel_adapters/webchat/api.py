"""The widget's HTTP API and its script: the Blueprint the app factory
registers for the web chat channel (``ChannelAdapter.blueprint``).

Routes (all JSON; an error is ``{"error": "<code>", "message": "<what is
wrong>"}`` with a 4xx):

* ``GET /widget/<key>.js``: the script (``static/widget.js``), cacheable 5 min;
* ``GET /widget/<key>/config``: what the widget shows (title, colours,
  greeting, pre-chat form, consent box, file limits);
* ``POST /widget/<key>/session``: a visitor token (the same one when the
  widget's is still valid);
* ``POST /widget/<key>/messages``: a message, journaled (202) like any
  channel's webhook delivery; ``GET /widget/<key>/messages?after=&wait=``:
  the conversation after a seq, a long poll with ``wait``;
* ``GET /widget/<key>/stream?after=``: the same as server-sent events, for
  ``stream_seconds``, resumed with ``Last-Event-ID``;
* ``POST /widget/<key>/uploads``: a file (multipart, field ``file``) ->
  a signed reference a message names;
* ``POST /widget/<key>/read``: the operator replies up to a seq were read.

Every ``/widget/<key>/...`` request must come from a page of one of the
widget's ``origins`` (its ``Origin``; a same-origin ``GET``, which carries
none, by ``Sec-Fetch-Site: same-origin`` and the bridge's own origin) and
is answered with CORS headers for that origin only; a visitor's requests
carry their token as ``Authorization: Bearer`` (a URL reaches logs). The
core is reached only through ``bridge.hosted``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import random
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, request, stream_with_context
from werkzeug.exceptions import RequestEntityTooLarge

from bridge import hosted
from bridge.errors import PayloadError, WebhookError
from bridge.model import Attachment, MessageKind, WebhookRequest, utcnow
from bridge.runtime import Runtime, app_runtime
from channel_adapters.webchat import inbound, tokens
from channel_adapters.webchat.adapter import WebChatAdapter

__all__ = ["FILE_TYPES", "MAX_BUTTONS", "PING_SECONDS", "bp", "buttons", "sniff"]

log = logging.getLogger(__name__)
bp = Blueprint("webchat", __name__)

SCRIPT = Path(__file__).resolve().parent / "static" / "widget.js"
PLACEHOLDER = (
    "/* The web chat widget's script is not in this build: "
    "channel_adapters/webchat/static/widget.js is missing. */\n"
    'console.warn("web chat: widget.js is missing on this bridge");\n'
)
#: a comment this often keeps proxies from closing a quiet stream
PING_SECONDS = 15
#: the longest long poll (``wait``)
MAX_WAIT = 25.0
#: operator replies before the read mark that one receipt names at most
READ_WINDOW = 50
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: what a visitor may upload (the type is read from the bytes)
FILE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    DOCX,
    XLSX,
    "application/zip",
)
#: multipart framing around the file: what a request may carry beyond it
MULTIPART_SLACK = 64 * 1024
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
#: how long a visitor's consent and pre-chat contact are remembered
REMEMBER_SECONDS = tokens.VISITOR_MAX_AGE
#: the choices a reply offers as buttons (a greeting menu, a 1-5 rating): at
#: most this many (more: the text alone, which lists them numbered), each
#: id (what a press sends as the visitor's text) at most BUTTON_ID
#: characters, each label shown cut to BUTTON_LABEL
MAX_BUTTONS = 10
BUTTON_ID = 64
BUTTON_LABEL = 100


class ApiError(Exception):
    """A 4xx (or 503) answer with the API's JSON error."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return _json({"error": exc.code, "message": exc.message}, exc.status, exc.headers)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(
        json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        status=status,
        mimetype="application/json",
    )
    # a visitor's conversation: never in a shared cache
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(dict(headers or {}))
    return response


@bp.after_request
def _cors(response: Response) -> Response:
    """CORS for the page's origin, when it is one of the widget's sites."""
    if request.path.endswith(".js"):
        return response
    response.vary.add("Origin")
    origin = g.get("webchat_origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response


# -- what every request needs ------------------------------------------------


def _runtime() -> Runtime:
    return app_runtime()


def _widget(rt: Runtime, key: str) -> tuple[hosted.Hosted, WebChatAdapter]:
    found = hosted.account_for(rt, WebChatAdapter.kind, key)
    if found is None or not isinstance(found.adapter, WebChatAdapter):
        raise ApiError(404, "not_found", "no such widget")
    return found, found.adapter


def _page_origin(rt: Runtime) -> str | None:
    """The page's origin: its ``Origin`` header, or for a same-origin
    request without one (a browser's same-origin ``GET``) the bridge's own."""
    origin = request.headers.get("Origin")
    if origin is None and request.headers.get("Sec-Fetch-Site") == "same-origin":
        parts = urlsplit(rt.settings.public_url)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin


def _open(key: str) -> tuple[Runtime, hosted.Hosted, WebChatAdapter]:
    """The widget of ``key``, for a page of one of its sites (403 else)."""
    rt = _runtime()
    found, adapter = _widget(rt, key)
    origin = _page_origin(rt)
    if not adapter.origin_allowed(origin):
        raise ApiError(
            403,
            "origin_not_allowed",
            "this page's origin is not one of the widget's sites (bridge widget create --origin)",
        )
    assert isinstance(origin, str)
    g.webchat_origin = origin
    return rt, found, adapter


def _preflight(key: str) -> Response:
    """A CORS preflight: the widget's sites may call with its headers."""
    _open(key)
    asked = (request.headers.get("Access-Control-Request-Method") or "").upper()
    if asked and asked not in ("GET", "POST"):
        raise ApiError(405, "method_not_allowed", "the widget API takes GET and POST")
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
    response.headers["Access-Control-Max-Age"] = "600"
    return response


def _visitor(adapter: WebChatAdapter) -> str:
    """The visitor of the request's bearer token (401 without a valid one)."""
    try:
        return adapter.visitor(tokens.bearer(request.headers.get("Authorization")))
    except tokens.BadToken as exc:
        raise ApiError(
            401,
            "invalid_token",
            f"{exc}: POST /session for a visitor token",
            {"WWW-Authenticate": 'Bearer realm="widget"'},
        ) from None


def _limit(rt: Runtime, name: str, key: str, per_minute: int, burst: int | None = None) -> None:
    """One from the shared bucket (``burst`` defaults to a minute's worth);
    429 with ``Retry-After`` when it is empty."""
    wait = hosted.rate(rt, f"webchat-{name}", key, per_minute, burst or per_minute)
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests: try again in {seconds} s",
            {"Retry-After": str(seconds)},
        )


def _ip() -> str:
    return request.remote_addr or "-"


def _json_body(limit: int, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object (413, 415 and 400 say what is wrong)."""
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, "too_large", f"the body is larger than {limit} bytes")
    raw = request.get_data(cache=True)
    if optional and not raw.strip():
        return {}
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    if len(raw) > limit:
        raise ApiError(413, "too_large", f"the body is larger than {limit} bytes")
    try:
        return inbound.load_body(raw)
    except PayloadError as exc:
        raise ApiError(400, exc.code, exc.message) from None


def _payload_error(exc: WebhookError) -> ApiError:
    return ApiError(exc.status_code, exc.code, exc.message)


def _int_arg(name: str, value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not value.isdigit() or len(value) > 18:
        raise ApiError(400, f"invalid_{name}", f"{name} must be a whole number (a message's seq)")
    return int(value)


# -- held requests -----------------------------------------------------------


class _Held:
    """The long polls and streams this process holds open: each takes a web
    thread while it waits, so they may not take them all; a quarter (at
    most 16, at least 2) is kept for the webhooks, unless the deployment
    says how many may be held (``WEBCHAT_HELD_CONNECTIONS``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    @staticmethod
    def limit(configured: int) -> int:
        if configured > 0:
            return configured
        threads = web_threads()
        return max(1, threads - max(2, min(16, threads // 4)))

    def take(self, configured: int) -> bool:
        with self._lock:
            if self.count >= self.limit(configured):
                return False
            self.count += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.count = max(0, self.count - 1)

    def full(self, configured: int) -> bool:
        with self._lock:
            return self.count >= self.limit(configured)


def web_threads() -> int:
    """The web server's threads per process: gunicorn's ``--threads`` as
    this process was started with it (``bridge web``, ``bridge run``, the
    Procfile all pass it), else ``WEB_THREADS``, else gunicorn's 64 of
    ``bridge web``."""
    args = [*sys.argv, *(os.environ.get("GUNICORN_CMD_ARGS") or "").split()]
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == "--threads" and i + 1 < len(args) else None
        if arg.startswith("--threads="):
            value = arg.partition("=")[2]
        if value is not None and value.isdigit() and int(value) > 0:
            return int(value)
    found = os.environ.get("WEB_THREADS") or ""
    return int(found) if found.isdigit() and int(found) > 0 else 64


HELD = _Held()


def _busy() -> ApiError:
    return ApiError(
        503,
        "busy",
        "too many open connections on this server: try again shortly",
        {"Retry-After": "5"},
    )


# -- the script ----------------------------------------------------------------


@bp.get("/widget/<key>.js")
def script(key: str) -> Response:
    """The widget's script for any page (it finds its key and the bridge's
    address in its own ``src``); a placeholder saying so when this build
    has none."""
    _widget(_runtime(), key)
    try:
        body = SCRIPT.read_bytes()
    except FileNotFoundError:
        body = PLACEHOLDER.encode()
    response = Response(body, mimetype="application/javascript")
    response.headers["Content-Type"] = "application/javascript; charset=utf-8"
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # a site isolated with COEP may still load it
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


# -- config and session --------------------------------------------------------


@bp.route("/widget/<key>/config", methods=["GET", "OPTIONS"])
def config(key: str) -> Response:
    if request.method == "OPTIONS":
        return _preflight(key)
    _, _, adapter = _open(key)
    s = adapter.settings
    response = _json(
        {
            "title": s.title,
            "greeting": {"en": s.greeting_en, "ru": s.greeting_ru},
            "color": s.color,
            "prechat": s.prechat,
            "prechat_fields": ["name", "phone", "email"],
            "consent": s.consent,
            "privacy_url": s.privacy_url,
            "consent_text": {"en": s.consent_text_en, "ru": s.consent_text_ru},
            "consent_version": s.consent_version,
            "max_file_bytes": s.max_file_bytes,
            "file_types": list(FILE_TYPES),
            "stream_seconds": adapter.app.stream_seconds,
        }
    )
    response.headers["Cache-Control"] = "private, max-age=60"
    return response


@bp.route("/widget/<key>/session", methods=["POST", "OPTIONS"])
def session(key: str) -> Response:
    """The widget's token back when it is still valid (the same visitor:
    nothing stored, nothing limited), else a new visitor's (rate-limited per
    address: tokens cost nothing to make, so a flood is refused early)."""
    if request.method == "OPTIONS":
        return _preflight(key)
    rt, found, adapter = _open(key)
    data = _json_body(4096, optional=True)
    given = data.get("token")
    if isinstance(given, str) and given:
        try:
            return _json({"token": given, "visitor_id": adapter.visitor(given)})
        except tokens.BadToken:
            pass  # expired or not ours: a new visitor
    _limit(rt, "session", f"{found.account.id}:{_ip()}", adapter.app.sessions_per_minute)
    visitor = tokens.new_visitor()
    return _json({"token": adapter.visitor_token(visitor), "visitor_id": visitor})


# -- messages ------------------------------------------------------------------


def _remember_key(what: str, account_id: int, visitor: str) -> str:
    return f"webchat:{what}:{account_id}:{visitor}"


def _remembered(rt: Runtime, what: str, account_id: int, visitor: str) -> bool:
    try:
        return bool(rt.redis.exists(_remember_key(what, account_id, visitor)))
    except Exception as exc:  # noqa: BLE001 — Redis down: ask the visitor again
        log.warning("webchat: %s not readable: %s", what, type(exc).__name__)
        return False


def _remember(rt: Runtime, what: str, account_id: int, visitor: str) -> None:
    try:
        rt.redis.set(_remember_key(what, account_id, visitor), b"1", ex=REMEMBER_SECONDS)
    except Exception as exc:  # noqa: BLE001 — the message is journaled; asked again at worst
        log.warning("webchat: %s not remembered: %s", what, type(exc).__name__)


@bp.route("/widget/<key>/messages", methods=["GET", "POST", "OPTIONS"])
def messages(key: str) -> Response:
    if request.method == "OPTIONS":
        return _preflight(key)
    if request.method == "GET":
        return _history(key)
    rt, found, adapter = _open(key)
    visitor = _visitor(adapter)
    account_id = found.account.id
    app = adapter.app
    _limit(
        rt,
        "messages-visitor",
        f"{account_id}:{visitor}",
        app.messages_per_minute,
        app.messages_burst,
    )
    _limit(rt, "messages-ip", f"{account_id}:{_ip()}", app.ip_messages_per_minute)
    data = _json_body(adapter.max_body)
    try:
        checked = inbound.check_message(data)
        for ref in checked.files:
            adapter.read_file(visitor, ref, fresh=True)
    except PayloadError as exc:
        raise _payload_error(exc) from None
    s = adapter.settings
    if (
        s.consent == "checkbox"
        and checked.consent is None
        and not _remembered(rt, "consent", account_id, visitor)
    ):
        raise ApiError(
            400,
            "consent_required",
            "this widget needs the visitor's consent first: consent {given: true, version}",
        )
    if (
        s.prechat == "required"
        and not checked.contact
        and not _remembered(rt, "prechat", account_id, visitor)
    ):
        raise ApiError(
            400, "prechat_required", "this widget needs a phone or an e-mail first: profile"
        )
    now = utcnow()
    _journal(rt, found, checked.body(visitor, now), now)
    if checked.consent is not None:
        _remember(rt, "consent", account_id, visitor)
    if checked.contact:
        _remember(rt, "prechat", account_id, visitor)
    return _json({"id": checked.id, "accepted": True}, 202)


def _journal(rt: Runtime, found: hosted.Hosted, body: dict[str, Any], now: dt.datetime) -> None:
    """Journal what the visitor sent as the body the adapter reads, with
    the request's token and origin for its ``verify`` (the generic webhook
    path's checks), committed before the caller answers."""
    webhook = WebhookRequest(
        method="POST",
        url=f"{rt.settings.public_url}{request.path}",
        headers={
            "authorization": request.headers.get("Authorization", ""),
            "origin": g.webchat_origin,
            "content-type": "application/json",
        },
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        received_at=now,
    )
    try:
        hosted.accept(rt, found, webhook)
    except WebhookError as exc:
        raise _payload_error(exc) from None


def _message_json(message: hosted.HostedMessage, visitor: str) -> dict[str, Any]:
    client_id = message.key
    if client_id and client_id.startswith(f"{visitor}:"):
        client_id = client_id[len(visitor) + 1 :]
    sent_at = message.sent_at
    if sent_at.tzinfo is None:  # SQLite keeps naive UTC
        sent_at = sent_at.replace(tzinfo=dt.UTC)
    return {
        "seq": message.seq,
        "id": message.uid,
        "direction": message.direction,
        "from": "visitor" if message.direction == "in" else "operator",
        "text": message.text,
        "kind": message.kind,
        "attachments": [dict(a) for a in message.attachments],
        "sent_at": sent_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "client_id": client_id,
        "status": message.status,
        "buttons": buttons(message),
    }


def buttons(message: hosted.HostedMessage) -> list[dict[str, str]]:
    """A reply's choices as the widget shows them, ``[{"id", "label"}]``:
    none for a visitor's message, for more than :data:`MAX_BUTTONS`, or
    when an id is empty or longer than :data:`BUTTON_ID` (the text lists
    the choices; the visitor types one). A label is one line, cut to
    :data:`BUTTON_LABEL` characters (the id when it has none)."""
    # the core's HostedMessage carries a stored reply's payload["buttons"]
    pairs = message.buttons if message.direction == "out" else ()
    if not pairs or len(pairs) > MAX_BUTTONS:
        return []
    out = []
    for key, label in pairs:
        key, line = str(key), " ".join(str(label).split())
        if not key.strip() or len(key) > BUTTON_ID:
            return []
        if len(line) > BUTTON_LABEL:
            line = line[: BUTTON_LABEL - 1].rstrip() + "…"
        out.append({"id": key, "label": line or key})
    return out


def _history(key: str) -> Response:
    """``GET /messages?after=&wait=``: what came after a seq, at once or as
    soon as there is something (a long poll of ``wait`` seconds)."""
    rt, found, adapter = _open(key)
    visitor = _visitor(adapter)
    account_id = found.account.id
    _limit(rt, "reads", f"{account_id}:{visitor}", adapter.app.reads_per_minute)
    after = _int_arg("after", request.args.get("after"))
    wait = _wait_arg(request.args.get("wait"))
    if wait <= 0:
        found_messages = hosted.thread(rt, account_id, visitor, after=after)
    else:
        if not HELD.take(adapter.app.held_connections):
            raise _busy()
        try:
            with hosted.watch(rt, account_id, visitor) as news:
                deadline = time.monotonic() + wait
                found_messages = hosted.thread(rt, account_id, visitor, after=after)
                while not found_messages:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    news.wait(left)
                    found_messages = hosted.thread(rt, account_id, visitor, after=after)
        finally:
            HELD.give()
    last = max([after, *(m.seq for m in found_messages)])
    return _json({"messages": [_message_json(m, visitor) for m in found_messages], "last": last})


def _wait_arg(value: str | None) -> float:
    if value is None or value == "":
        return 0.0
    try:
        wait = float(value)
    except ValueError:
        raise ApiError(400, "invalid_wait", f"wait must be seconds, 0-{MAX_WAIT:g}") from None
    if not math.isfinite(wait) or wait < 0:
        raise ApiError(400, "invalid_wait", f"wait must be seconds, 0-{MAX_WAIT:g}")
    return min(wait, MAX_WAIT)


# -- the event stream ------------------------------------------------------------


@bp.route("/widget/<key>/stream", methods=["GET", "OPTIONS"])
def stream(key: str) -> Response:
    """Server-sent events: each message after the seq (``Last-Event-ID``
    wins over ``after``) as ``id: <seq>`` / ``event: message``; a comment
    every ``PING_SECONDS``; closed after the deployment's
    ``stream_seconds`` with ``retry: 1000`` (the widget reconnects with the
    last id it saw: nothing lost, nothing twice)."""
    if request.method == "OPTIONS":
        return _preflight(key)
    rt, found, adapter = _open(key)
    visitor = _visitor(adapter)
    account_id = found.account.id
    _limit(rt, "reads", f"{account_id}:{visitor}", adapter.app.reads_per_minute)
    resume = request.headers.get("Last-Event-ID")
    after = _int_arg("after", resume if resume not in (None, "") else request.args.get("after"))
    held = adapter.app.held_connections
    # each stream's length drawn from the last quarter of the window:
    # streams opened together (a burst of page loads, a restart) would
    # otherwise all come back in the same second, every window (bench.webchat
    # measured the p99 of a reply at 0.67 s with 500 streams in step)
    seconds = float(adapter.app.stream_seconds) * random.uniform(0.75, 1.0)  # noqa: S311
    if HELD.full(held):
        raise _busy()

    def events() -> Iterator[str]:
        # the slot is taken inside: a response never iterated holds none
        if not HELD.take(held):
            yield "retry: 5000\n\n"
            return
        try:
            last = after
            # first bytes at once: the widget knows the stream is open
            yield ": open\n\n"
            with hosted.watch(rt, account_id, visitor) as news:
                deadline = time.monotonic() + seconds
                ping_at = time.monotonic() + PING_SECONDS
                while True:
                    for message in hosted.thread(rt, account_id, visitor, after=last):
                        data = json.dumps(
                            _message_json(message, visitor),
                            ensure_ascii=False,
                            separators=(",", ":"),
                        )
                        yield f"id: {message.seq}\nevent: message\ndata: {data}\n\n"
                        last = message.seq
                    now = time.monotonic()
                    if now >= deadline:
                        break
                    if now >= ping_at:
                        yield ": ping\n\n"
                        ping_at = now + PING_SECONDS
                    news.wait(max(0.0, min(deadline, ping_at) - now))
            yield "retry: 1000\n\n"
        finally:
            HELD.give()

    response = Response(stream_with_context(events()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    # a proxy (nginx) must not buffer it
    response.headers["X-Accel-Buffering"] = "no"
    return response


# -- uploads -------------------------------------------------------------------


@bp.route("/widget/<key>/uploads", methods=["POST", "OPTIONS"])
def uploads(key: str) -> Response:
    """One file (multipart, field ``file``) kept by the bridge; its type is
    read from its first bytes, not taken from the browser's word."""
    if request.method == "OPTIONS":
        return _preflight(key)
    rt, found, adapter = _open(key)
    visitor = _visitor(adapter)
    _limit(rt, "uploads", f"{found.account.id}:{visitor}", adapter.app.uploads_per_minute)
    limit = int(adapter.settings.max_file_bytes)
    too_large = ApiError(
        413, "file_too_large", f"the file is larger than this widget takes ({limit} bytes)"
    )
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise too_large
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", "send the file as multipart/form-data, field file"
        )
    request.max_content_length = limit + MULTIPART_SLACK
    try:
        upload = request.files.get("file")
    except RequestEntityTooLarge:
        raise too_large from None
    if upload is None:
        raise ApiError(400, "missing_file", "the form has no field file")
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise too_large
    if not data:
        raise ApiError(400, "empty_file", "the file is empty")
    name = _file_name(upload.filename)
    mime = sniff(data, upload.mimetype or "", name)
    if mime is None:
        raise ApiError(
            415,
            "file_type_not_allowed",
            "this type of file is not accepted: images (JPEG, PNG, GIF, WebP), PDF, text, "
            "Word (.docx), Excel (.xlsx) or ZIP",
        )
    kept = hosted.keep_file(
        rt,
        found.account.tenant_id,
        Attachment(
            kind=MessageKind.PHOTO if mime.startswith("image/") else MessageKind.DOCUMENT,
            mime_type=mime,
            file_name=name,
            size=len(data),
            content=data,
        ),
    )
    uid = (kept.file_ref or "").removeprefix("file:")
    ref = adapter.file_ref(visitor, tokens.FileRef(uid, name, mime, len(data)))
    return _json({"ref": ref, "name": name, "size": len(data), "mime_type": mime}, 201)


def _file_name(name: str | None) -> str:
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '"').strip()
    if len(base) > 200:
        stem, dot, ext = base.rpartition(".")
        base = (stem[:190] + dot + ext[:9]) if dot and len(ext) <= 9 else base[:200]
    return base or "file"


def sniff(data: bytes, declared: str, name: str) -> str | None:
    """The file's type from its first bytes (one of :data:`FILE_TYPES`), or
    None for anything else. Only text, which has no signature, takes the
    browser's word (``text/plain`` or a ``.txt`` name) and must hold no NUL."""
    declared = declared.split(";", 1)[0].strip().lower()
    ext = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        # an Office file is a ZIP whose entries name its parts
        if (declared == DOCX or ext == "docx") and b"word/" in data:
            return DOCX
        if (declared == XLSX or ext == "xlsx") and b"xl/" in data:
            return XLSX
        return "application/zip"
    if (declared == "text/plain" or ext == "txt") and b"\x00" not in data:
        return "text/plain"
    return None


# -- read receipts ---------------------------------------------------------------


@bp.route("/widget/<key>/read", methods=["POST", "OPTIONS"])
def read(key: str) -> Response:
    """The operator replies up to ``seq`` were read: journaled as their
    read receipts (the CRM shows them read)."""
    if request.method == "OPTIONS":
        return _preflight(key)
    rt, found, adapter = _open(key)
    visitor = _visitor(adapter)
    account_id = found.account.id
    _limit(rt, "reads", f"{account_id}:{visitor}", adapter.app.reads_per_minute)
    data = _json_body(4096)
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ApiError(400, "invalid_seq", "seq must be a whole number (a message's seq)")
    replies = [
        m.uid
        for m in hosted.thread(
            rt, account_id, visitor, after=max(0, seq - READ_WINDOW), limit=READ_WINDOW
        )
        if m.direction == "out" and m.seq <= seq
    ]
    if replies:
        now = utcnow()
        body = {
            "type": "read",
            "visitor": visitor,
            "read_up_to": seq,
            "read": replies,
            "received_at": now.isoformat(),
        }
        _journal(rt, found, body, now)
    return _json({"seq": seq, "read": len(replies)}, 202)
