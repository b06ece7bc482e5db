"""Fault switches shared by every sandbox (the in-process toxiproxy).

A :class:`FaultPlan` decides, per API request, whether to answer normally or
to misbehave the ways real vendors do (RELIABILITY.md 3.2):

* ``error_rate``       answer 5xx before doing anything (nothing committed)
* ``rate_429``         answer the vendor's 429 with ``Retry-After``
* ``timeout_rate``     hang past the client's timeout, then 504, nothing committed
* ``commit_then_timeout_rate``  do the work and commit, then hang past the
  client's timeout before answering: the duplicate-maker that only
  lookup-before-recreate survives
* ``latency_ms``       extra latency on every request
* ``storm_until``/``storm_kind``  every request fails (429 or 5xx) until then
* ``refuse_path``/``refuse_until``  requests whose path matches the regular
  expression are refused with the vendor's 400 until then (nothing done):
  a permanent refusal of one step of a multi-step write (HubSpot: the
  inbox message after its note), as when an inbox channel is paused
* ``routes``           odds for one endpoint: a list of
  ``{"method", "path", "error_rate", "rate_429", "timeout_rate",
  "commit_then_timeout_rate"}`` (:class:`RouteFault`). A request whose
  method and path match a rule (``method`` exact, ``""`` any; ``path`` a
  regular expression searched in the path) draws its fault under that
  rule's odds *instead of* the plan-wide ones (the first matching rule
  wins), with the same vendor error bodies: HubSpot's delivery-report
  endpoint failing 50 % while the rest of the API answers as usual. A
  storm and a refusal still come first. Each rule counts the calls it
  matched and the faults it injected. Posting ``routes`` replaces the list
  (``[]`` clears it).

Each sandbox wires it with :meth:`FaultPlan.install` and supplies its own
error bodies, so a fault looks exactly like the vendor's. The control
endpoint ``POST <prefix>/_faults`` (JSON with the fields above) switches it
at run time; ``GET`` shows the plan and its counters.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from flask import Flask, Response, g, jsonify, request

__all__ = ["FaultPlan", "RouteFault"]

ErrorBody = Callable[[int, float | None], Response]

#: the faults a draw can pick, in the order the odds are laid out
_KINDS = (
    ("5xx", "error_rate"),
    ("429", "rate_429"),
    ("timeout", "timeout_rate"),
    ("commit_then_timeout", "commit_then_timeout_rate"),
)


@dataclass
class RouteFault:
    """The odds for the requests one endpoint receives (``FaultPlan.routes``)."""

    path: str
    method: str = ""
    error_rate: float = 0.0
    rate_429: float = 0.0
    timeout_rate: float = 0.0
    commit_then_timeout_rate: float = 0.0
    #: requests the rule matched, and the faults it injected by kind
    calls: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    SETTABLE = (
        "path",
        "method",
        "error_rate",
        "rate_429",
        "timeout_rate",
        "commit_then_timeout_rate",
    )

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)

    @classmethod
    def parse(cls, value: Any) -> RouteFault:
        """One rule from the control API; a bad one raises ``ValueError``."""
        if not isinstance(value, dict):
            raise ValueError("each route fault must be an object")
        unknown = set(value) - set(cls.SETTABLE)
        if unknown:
            raise ValueError(f"unknown route fault fields: {sorted(unknown)}")
        path, method = value.get("path"), value.get("method", "")
        if not isinstance(path, str) or not path:
            raise ValueError("a route fault needs a path (a regular expression)")
        if not isinstance(method, str):
            raise ValueError("a route fault's method must be a string")
        try:
            re.compile(path)
        except re.error as exc:
            raise ValueError(f"bad route fault path {path!r}: {exc}") from exc
        rates: dict[str, float] = {}
        for _, name in _KINDS:
            rate = value.get(name, 0.0)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise ValueError(f"route fault {name} must be a number from 0 to 1")
            rates[name] = float(rate)
        if sum(rates.values()) > 1:
            raise ValueError("a route fault's rates add up to more than 1")
        return cls(
            path=path,
            method=method.upper(),
            error_rate=rates["error_rate"],
            rate_429=rates["rate_429"],
            timeout_rate=rates["timeout_rate"],
            commit_then_timeout_rate=rates["commit_then_timeout_rate"],
        )

    def matches(self, method: str, path: str) -> bool:
        return (not self.method or self.method == method.upper()) and bool(
            self._pattern.search(path)
        )


@dataclass
class FaultPlan:
    error_rate: float = 0.0
    rate_429: float = 0.0
    retry_after: float = 1.0
    timeout_rate: float = 0.0
    commit_then_timeout_rate: float = 0.0
    timeout_seconds: float = 3.0
    latency_ms: float = 0.0
    storm_until: float = 0.0
    storm_kind: str = "429"  # "429" or "5xx"
    refuse_path: str = ""
    refuse_until: float = 0.0
    routes: list[RouteFault] = field(default_factory=list)
    seed: int | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)  # noqa: S311 (fault injection, not crypto)

    # -- configuration ----------------------------------------------------

    FIELDS = (
        "error_rate",
        "rate_429",
        "retry_after",
        "timeout_rate",
        "commit_then_timeout_rate",
        "timeout_seconds",
        "latency_ms",
        "storm_until",
        "storm_kind",
        "refuse_path",
        "refuse_until",
        "routes",
        "seed",
    )

    def update(self, values: dict[str, Any]) -> None:
        """Apply a control-API update; unknown keys raise ``ValueError``."""
        unknown = set(values) - set(self.FIELDS) - {"storm_seconds", "refuse_seconds", "reset"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        routes = None
        if "routes" in values:
            if not isinstance(values["routes"], list):
                raise ValueError("routes must be a list of route faults")
            routes = [RouteFault.parse(rule) for rule in values["routes"]]
        with self._lock:
            if values.get("reset"):
                for name in self.FIELDS:
                    if name != "routes":
                        setattr(self, name, getattr(FaultPlan, name))
                self.routes = []
                self.counters.clear()
            for name in self.FIELDS:
                if name in values and name != "routes":
                    setattr(self, name, values[name])
            if routes is not None:
                self.routes = routes
            if "storm_seconds" in values:
                self.storm_until = time.time() + float(values["storm_seconds"])
            if "refuse_seconds" in values:
                self.refuse_until = time.time() + float(values["refuse_seconds"])
            if "seed" in values:
                self._rng = random.Random(self.seed)  # noqa: S311 (fault injection, not crypto)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            data = {k: v for k, v in asdict(self).items() if k != "counters"}
            data["counters"] = dict(self.counters)
            return data

    # -- decisions --------------------------------------------------------

    def refuses(self, path: str) -> bool:
        """This request is refused for good (``refuse_path`` matches, in time)."""
        with self._lock:
            if not self.refuse_path or time.time() >= self.refuse_until:
                return False
            if re.search(self.refuse_path, path) is None:
                return False
            self.counters["refused"] = self.counters.get("refused", 0) + 1
            return True

    def draw(self, method: str = "", path: str = "") -> str | None:
        """Pick this request's fault (or None): a storm's, else under the
        odds of the first route rule matching ``method`` and ``path``, else
        under the plan-wide odds."""
        with self._lock:
            if self.storm_until and time.time() < self.storm_until:
                fault: str | None = "429" if self.storm_kind == "429" else "5xx"
            else:
                rule = next((r for r in self.routes if r.matches(method, path)), None)
                odds: Any = self if rule is None else rule
                roll = self._rng.random()
                fault = None
                for kind, name in _KINDS:
                    p = getattr(odds, name)
                    if roll < p:
                        fault = kind
                        break
                    roll -= p
                if rule is not None:
                    rule.calls += 1
                    if fault:
                        rule.counters[fault] = rule.counters.get(fault, 0) + 1
                    return fault
            if fault:
                self.counters[fault] = self.counters.get(fault, 0) + 1
            return fault

    # -- Flask wiring -----------------------------------------------------

    def install(
        self,
        app: Flask,
        *,
        error_body: ErrorBody,
        applies: Callable[[], bool],
        control_rule: str = "/_faults",
    ) -> None:
        """Hook the plan into ``app``.

        ``error_body(status, retry_after)`` builds the vendor's error response;
        ``applies()`` says whether the current request is an API call (control
        endpoints and pages are never faulted).
        """
        plan = self

        @app.before_request
        def _inject_fault() -> Response | None:
            if not applies():
                return None
            if plan.latency_ms:
                time.sleep(plan.latency_ms / 1000.0)
            if plan.refuses(request.path):
                return error_body(400, None)
            fault = plan.draw(request.method, request.path)
            g.sandbox_fault = fault
            if fault == "5xx":
                return error_body(503, None)
            if fault == "429":
                return error_body(429, plan.retry_after)
            if fault == "timeout":
                time.sleep(plan.timeout_seconds)
                return error_body(504, None)
            return None

        @app.after_request
        def _hang_after_commit(response: Response) -> Response:
            if getattr(g, "sandbox_fault", None) == "commit_then_timeout":
                time.sleep(plan.timeout_seconds)
            return response

        @app.route(control_rule, methods=["GET", "POST"], endpoint="sandbox_faults")
        def _faults() -> tuple[Response, int] | Response:
            if request.method == "POST":
                try:
                    plan.update(request.get_json(force=True) or {})
                except (ValueError, TypeError) as exc:
                    return jsonify({"error": "invalid_faults", "message": str(exc)}), 400
            return jsonify(plan.snapshot())
