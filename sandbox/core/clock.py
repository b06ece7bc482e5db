"""The sandbox clock: the one seam for time of every vendor sandbox.

``time.time()`` plus an adjustable offset, optionally frozen so that only
:meth:`Clock.advance` moves it. Token and code lifetimes, rate-limit windows
and buckets, webhook retry schedules and record timestamps all read it, so a
test moves time (``POST /_clock``, :mod:`sandbox.core.control`) instead of
sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["Clock"]


class Clock:
    """Wall-clock seconds plus an offset; thread-safe."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._frozen: float | None = None
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            base = self._frozen if self._frozen is not None else time.time()
            return base + self._offset

    def freeze(self, frozen: bool) -> None:
        """Stop (or restart) the clock where it stands."""
        with self._lock:
            if frozen and self._frozen is None:
                self._frozen = time.time()
            elif not frozen and self._frozen is not None:
                self._offset += self._frozen - time.time()
                self._frozen = None

    @property
    def frozen(self) -> bool:
        with self._lock:
            return self._frozen is not None

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new offset."""
        with self._lock:
            self._offset += float(seconds)
            return self._offset

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset = float(seconds)

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    def snapshot(self) -> dict[str, Any]:
        """The ``GET /_clock`` body."""
        return {"now": self.now(), "offset": self.offset, "frozen": self.frozen}
