"""Request statistics of the sandbox amoCRM (for benchmarks). Read-only.

Every vendor request (not the control endpoints under ``/_``, not the consent
page) is recorded when its answer leaves: wall-clock time, method, the route
template (``/<subdomain>/api/v4/leads/<int:lead_id>``, entity names spelled
out) and the status, 429s/403s from the rate limiter and injected faults
included.

* ``GET /_stats[?since=<unix seconds>][&requests=0]`` ->
  ``{"now", "total", "by_route": {"POST /<subdomain>/api/v4/leads": n},
  "by_status": {"200": n}, "requests": [[t, "POST", route, 200], ...]}``
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from .errors import plain_json

__all__ = ["install"]

EXTENSION = "amocrm_sandbox_stats"
KEEP = 200_000
_ANY = re.compile(r"<any\([^)]*\):(\w+)>")

bp = Blueprint("stats", __name__)


class RequestStats:
    def __init__(self, keep: int = KEEP) -> None:
        self._lock = threading.Lock()
        self._items: deque[tuple[float, str, str, int]] = deque(maxlen=keep)

    def record(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self._items.append((time.time(), method, route, status))

    def snapshot(self, since: float | None = None) -> list[tuple[float, str, str, int]]:
        with self._lock:
            items = list(self._items)
        return items if since is None else [i for i in items if i[0] >= since]


def _route() -> str:
    """The rule template with ``<any(…):name>`` parts spelled out."""
    if request.url_rule is None:
        return request.path
    args = request.view_args or {}
    return _ANY.sub(lambda m: str(args.get(m.group(1), m.group(0))), request.url_rule.rule)


def install(app: Flask) -> None:
    stats = RequestStats()
    app.extensions[EXTENSION] = stats

    @app.after_request
    def _record(response: Response) -> Response:
        path = request.path
        if not (path.startswith("/_") or path == "/www/oauth"):
            stats.record(request.method, _route(), response.status_code)
        return response

    app.register_blueprint(bp)


@bp.route("/_stats", methods=["GET"])
def stats_view() -> Response:
    raw = request.args.get("since")
    try:
        since = float(raw) if raw not in (None, "") else None
    except ValueError:
        return plain_json({"error": "bad_request", "message": "since must be a number"}, 400)
    items = current_app.extensions[EXTENSION].snapshot(since)
    body: dict[str, Any] = {
        "now": time.time(), "total": len(items),
        "by_route": dict(Counter(f"{m} {r}" for _, m, r, _ in items)),
        "by_status": dict(Counter(str(s) for *_, s in items))}
    if request.args.get("requests", "1") != "0":
        body["requests"] = [list(i) for i in items]
    return plain_json(body)
