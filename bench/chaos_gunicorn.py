"""gunicorn configuration the chaos soak gives its web server
(``gunicorn -c bench/chaos_gunicorn.py``): in each worker process it
installs crash points in the ingest path's test seam
(``bridge.pipeline.inbound.journal.HOOKS``), so the process exits just before or
just after the journal's commit with the probabilities in ``BRIDGE_CHAOS_CRASH``
(``before_commit:0.01,after_commit:0.01``). The bridge itself never reads
that variable: production's hot path runs no crash code.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from typing import Any

log = logging.getLogger("bench.chaos")


def crash_points(spec: str) -> dict[str, float]:
    """``before_commit:0.01,after_commit:0.01`` -> {point: probability}."""
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, probability = item.partition(":")
        points[point] = float(probability or 1)
    return points


def _crash(point: str, probability: float) -> Callable[[], None]:
    def hook() -> None:
        if random.random() < probability:  # noqa: S311 (fault injection, not crypto)
            log.error("chaos: exiting at %s", point)
            os._exit(70)

    return hook


def install(spec: str) -> None:
    """Add the crash hooks ``spec`` asks for to the ingest seam."""
    from bridge.pipeline.inbound.journal import HOOKS

    points = crash_points(spec)
    for point, hooks in (
        ("before_commit", HOOKS.before_commit),
        ("after_commit", HOOKS.after_commit),
    ):
        if points.get(point):
            hooks.append(_crash(point, points[point]))


def post_worker_init(worker: Any) -> None:  # gunicorn's server hook, in each worker
    install(os.environ.get("BRIDGE_CHAOS_CRASH", ""))
