"""Request statistics of the sandbox Bitrix24 (for benchmarks). Read-only.

Every REST call and every OAuth token-endpoint call is recorded when its
answer leaves (503s from the bucket, 429s, injected faults included):
wall-clock time, HTTP method, the REST method name (``crm.lead.add``; the
OAuth server as ``oauth/token``) and the status. A ``batch`` is one request
(as the leaky bucket counts it) whose commands are listed with it.

* ``GET /_stats[?since=<unix seconds>][&requests=0]`` ->
  ``{"now", "total", "by_method": {"crm.lead.add": n}, "by_status": {"200": n},
  "batch_commands": {"crm.lead.add": n},
  "requests": [[t, "POST", "batch", 200, ["crm.lead.add", …]], [t, "GET",
  "crm.lead.get", 200, null], …]}`` (the newest 200,000 are kept).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

from .errors import json_response

__all__ = ["install"]

EXTENSION = "bitrix24_sandbox_stats"
KEEP = 200_000

bp = Blueprint("stats", __name__)

Item = tuple[float, str, str, int, list[str] | None]


class RequestStats:
    def __init__(self, keep: int = KEEP) -> None:
        self._lock = threading.Lock()
        self._items: deque[Item] = deque(maxlen=keep)

    def record(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)

    def snapshot(self, since: float | None = None) -> list[Item]:
        with self._lock:
            items = list(self._items)
        return items if since is None else [i for i in items if i[0] >= since]


def _name() -> str | None:
    path = request.path
    if path.startswith("/_"):
        return None
    if "/rest/" in path and not path.startswith("/oauth/"):
        fallback = path.rsplit("/", 1)[-1].lower().removesuffix(".json")
        return str(getattr(g, "b24_method", None) or fallback)
    if path.startswith("/oauth/oauth/token"):
        return "oauth/token"
    return None


def install(app: Flask) -> RequestStats:
    stats = RequestStats()
    app.extensions[EXTENSION] = stats

    @app.after_request
    def _record(response: Response) -> Response:
        name = _name()
        if name is not None:
            commands = getattr(g, "b24_batch", None)
            stats.record((time.time(), request.method, name, response.status_code,
                          list(commands) if commands is not None else None))
        return response

    app.register_blueprint(bp)
    return stats


@bp.route("/_stats", methods=["GET"])
def stats_view() -> Response:
    raw = request.args.get("since")
    try:
        since = float(raw) if raw not in (None, "") else None
    except ValueError:
        return json_response({"error": "bad_request", "message": "since must be a number"}, 400)
    items = current_app.extensions[EXTENSION].snapshot(since)
    body: dict[str, Any] = {
        "now": time.time(), "total": len(items),
        "by_method": dict(Counter(i[2] for i in items)),
        "by_status": dict(Counter(str(i[3]) for i in items)),
        "batch_commands": dict(Counter(c for i in items for c in (i[4] or [])))}
    if request.args.get("requests", "1") != "0":
        body["requests"] = [list(i) for i in items]
    return json_response(body)
