"""Request statistics of a vendor sandbox (for benchmarks). Read-only.

Every vendor request the sandbox's ``counted`` rule accepts (never the control
endpoints under ``/_``, never consent pages) is recorded when its answer
leaves, 429s from the rate limiters and injected faults included: wall-clock
time, HTTP method, the route as the vendor names it (a rule template with a
few variables spelled out, or a REST method name) and the status, plus an
optional vendor detail (Bitrix24: the commands of a ``batch``).

* ``GET /_stats[?since=<unix seconds>][&requests=0]`` ->
  ``{"now", "total", "by_route": {"POST /crm/...": n}, "by_status": {"200": n},
  "requests": [[t, "POST", "/crm/...", 200], ...]}`` over the requests at or
  after ``since`` (the newest 200,000 are kept); ``requests=0`` leaves the list
  out. A vendor that records details gets a fifth element per request and
  may add summary keys (``summary``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

__all__ = ["RequestStats", "install", "EXTENSION"]

EXTENSION = "sandbox_stats"
KEEP = 200_000

Item = tuple[float, str, str, int, Any]
#: extra summary keys computed from the selected items
Summary = Callable[[list[Item]], dict[str, Any]]


class RequestStats:
    """A bounded, thread-safe log of answered requests."""

    def __init__(self, keep: int = KEEP, *, with_detail: bool = False,
                 label: Callable[[str, str], str] = lambda method, route: f"{method} {route}",
                 ) -> None:
        self._lock = threading.Lock()
        self._items: deque[Item] = deque(maxlen=keep)
        self.with_detail = with_detail
        self.label = label

    def record(self, method: str, route: str, status: int, detail: Any = None) -> None:
        with self._lock:
            self._items.append((time.time(), method, route, status, detail))

    def snapshot(self, since: float | None = None) -> list[Item]:
        with self._lock:
            items = list(self._items)
        return items if since is None else [i for i in items if i[0] >= since]

    def body(self, since: float | None, with_requests: bool,
             summary: Summary | None = None) -> dict[str, Any]:
        """The ``GET /_stats`` body."""
        items = self.snapshot(since)
        out: dict[str, Any] = {
            "now": time.time(), "total": len(items),
            "by_route": dict(Counter(self.label(m, r) for _, m, r, _, _ in items)),
            "by_status": dict(Counter(str(i[3]) for i in items)),
        }
        if summary is not None:
            out.update(summary(items))
        if with_requests:
            width = 5 if self.with_detail else 4
            out["requests"] = [list(i[:width]) for i in items]
        return out


def install(app: Flask, *, route: Callable[[], str | None],
            detail: Callable[[], Any] | None = None, summary: Summary | None = None,
            label: Callable[[str, str], str] | None = None) -> RequestStats:
    """Record ``app``'s vendor requests and serve ``GET /_stats``.

    ``route()`` names the current request (``None``: not counted); ``detail()``
    adds the fifth element; ``label(method, route)`` is the ``by_route`` key
    (default ``"POST /path"``; a vendor whose route is a method name may drop
    the HTTP method).
    """
    stats = RequestStats(with_detail=detail is not None)
    if label is not None:
        stats.label = label
    app.extensions[EXTENSION] = stats

    @app.after_request
    def _record(response: Response) -> Response:
        name = route()
        if name is not None:
            stats.record(request.method, name, response.status_code,
                         detail() if detail else None)
        return response

    @app.route("/_stats", methods=["GET"], endpoint="sandbox_stats")
    def _stats() -> Response | tuple[Response, int]:
        raw = request.args.get("since")
        try:
            since = float(raw) if raw not in (None, "") else None
        except ValueError:
            return jsonify({"error": "bad_request", "message": "since must be a number"}), 400
        body = current_app.extensions[EXTENSION].body(
            since, request.args.get("requests", "1") != "0", summary)
        return jsonify(body)

    return stats
