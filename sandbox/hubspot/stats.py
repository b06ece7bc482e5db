"""Request statistics of the sandbox HubSpot (for benchmarks). Read-only.

Every API request (not the control endpoints under ``/_``, not the consent
page) is recorded when its answer leaves: wall-clock time, method, the
route's template with the object type and batch action spelled out
(``/crm/v3/objects/notes/batch/create``, ``/crm/v3/objects/deals/<object_id>``) and the
status, including 429s from the rate limiter and injected faults.

* ``GET /_stats[?since=<unix seconds>][&requests=0]`` ->
  ``{"now", "total", "by_route": {"POST /crm/...": n}, "by_status": {"200": n},
  "requests": [[t, "POST", "/crm/...", 200], ...]}`` over the requests at or
  after ``since`` (all kept ones by default; the newest 200,000 are kept).
  ``requests=0`` leaves the list out.

Like every control endpoint: never faulted, never rate limited, no auth.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

from flask import Blueprint, Flask, Response, request

from .errors import json_response

__all__ = ["RequestStats", "install"]

EXTENSION = "hubspot_sandbox_stats"
KEEP = 200_000

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


def _is_api_request() -> bool:
    path = request.path
    return not (path.startswith("/_") or path == "/" or path == "/oauth/authorize")


#: route variables spelled out in the statistics (few values: object types,
#: batch actions); ids stay templates
_SPELLED = ("object_type", "from_type", "to_type", "action")


def _route() -> str:
    if request.url_rule is None:
        return request.path
    rule = request.url_rule.rule
    for name, value in (request.view_args or {}).items():
        if name in _SPELLED:
            rule = rule.replace(f"<{name}>", str(value))
    return rule


def install(app: Flask) -> RequestStats:
    stats = RequestStats()
    app.extensions[EXTENSION] = stats

    @app.after_request
    def _record(response: Response) -> Response:
        if _is_api_request():
            stats.record(request.method, _route(), response.status_code)
        return response

    app.register_blueprint(bp)
    return stats


@bp.route("/_stats", methods=["GET"])
def stats_view() -> Response:
    from flask import current_app

    raw = request.args.get("since")
    try:
        since = float(raw) if raw not in (None, "") else None
    except ValueError:
        return json_response({"error": "bad_request", "message": "since must be a number"}, 400)
    items = current_app.extensions[EXTENSION].snapshot(since)
    by_route = Counter(f"{m} {r}" for _, m, r, _ in items)
    by_status = Counter(str(s) for *_, s in items)
    body: dict[str, Any] = {
        "now": time.time(),
        "total": len(items),
        "by_route": dict(by_route),
        "by_status": dict(by_status),
    }
    if request.args.get("requests", "1") != "0":
        body["requests"] = [list(i) for i in items]
    return json_response(body)
