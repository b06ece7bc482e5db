"""Shared context of the sandbox's modules: the app-wide :class:`Sandbox`, the
per-call :class:`CallCtx`, and the REST method registry (:func:`method`).

A method handler is ``fn(ctx: CallCtx, params: dict) -> result``; it runs
under the store lock, raises :class:`~sandbox.bitrix24.errors.B24Error` for
errors, returns :class:`ListResult` for list methods (the envelope then gets
``total``/``next``: list-methods-pecularities.md) and queues events with
``ctx.fire(...)`` (sent after the lock is released).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app

from ..core.clock import Clock
from ..core.ratelimit import TokenBucket
from .limits import OperatingMeter
from .store import Portal, Store

if TYPE_CHECKING:
    from ..core.faults import FaultPlan
    from ..core.webhooks import Dispatcher
    from .automation import Automation

__all__ = ["Sandbox", "sandbox", "AuthCtx", "CallCtx", "ListResult", "Method", "METHODS",
           "method", "EXTENSION", "PAGE_SIZE"]

EXTENSION = "bitrix24_sandbox"
PAGE_SIZE = 50  # list-methods-pecularities.md: "no more than 50 at a time"


@dataclass
class Sandbox:
    """One sandbox instance's moving parts."""

    store: Store
    clock: Clock
    bucket: TokenBucket  # limits.md's leaky bucket per portal
    meter: OperatingMeter
    faults: FaultPlan
    #: the queue server sending REST-caused events (set by the app's sandbox class)
    dispatcher: Dispatcher = field(init=False)
    #: the automation rules' robots (set by the app's sandbox class; automation.py)
    automation: Automation = field(init=False)

    @property
    def cfg(self) -> dict[str, Any]:
        return self.store.cfg


def sandbox() -> Sandbox:
    sb: Sandbox = current_app.extensions[EXTENSION]
    return sb


@dataclass(frozen=True)
class AuthCtx:
    """Who calls: an app (OAuth access token) or an incoming webhook."""

    kind: str  # "app" | "webhook"
    portal: Portal
    user_id: int
    scopes: tuple[str, ...]
    credential: str  # operating-time key: "app:<client_id>" | "webhook:<user>/<code>"
    token: str | None = None


@dataclass
class ListResult:
    """A list method's page: ``items`` plus the ``total`` and the ``next`` offset."""

    items: Any
    total: int
    next: int | None = None


@dataclass
class CallCtx:
    """One method call (a batch's nested calls share the outer call's auth)."""

    sb: Sandbox
    auth: AuthCtx
    base_url: str
    events: list[tuple[str, dict[str, Any], int | None]] = field(default_factory=list)

    @property
    def portal(self) -> Portal:
        return self.auth.portal

    @property
    def store(self) -> Store:
        return self.sb.store

    @property
    def cfg(self) -> dict[str, Any]:
        return self.sb.store.cfg

    def now(self) -> float:
        return self.sb.clock.now()

    def fire(self, event: str, data: dict[str, Any], user_id: int | None = None) -> None:
        """Queue an event (delivered after the call; tokens only if a user acted)."""
        self.events.append((event, data, user_id))


Handler = Callable[[CallCtx, dict[str, Any]], Any]


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    scopes: tuple[str, ...]  # any one of them grants the method; () = basic (always)
    app_only: str | None  # None | "wrong_auth_type" | "event_bind" | "app_info"


METHODS: dict[str, Method] = {}


def method(name: str, *, scope: str | tuple[str, ...] = (),
           app_only: str | None = None) -> Callable[[Handler], Handler]:
    """Register a REST method handler under ``name`` (lower case)."""
    scopes = (scope,) if isinstance(scope, str) else tuple(scope)

    def register(fn: Handler) -> Handler:
        METHODS[name.lower()] = Method(name.lower(), fn, scopes, app_only)
        return fn

    return register
