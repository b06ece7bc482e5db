"""Per-app and per-request context shared by the sandbox's blueprints.

* :class:`Sandbox` (in ``app.extensions["hubspot_sandbox"]``): the store, the
  rate limiter, the fault plan and the clock of one app instance (the app
  builds :class:`sandbox.hubspot.control.HubSpotSandbox`, which adds the
  control API's hooks).
* :func:`auth` marks a view with the credentials it accepts; the gate in
  :mod:`sandbox.hubspot.app` authenticates before the view runs and leaves an
  :class:`AuthContext` in ``g``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, g, request

from ..core.clock import Clock
from ..core.faults import FaultPlan
from .errors import validation_error
from .ratelimit import RateLimiter
from .store import Portal, Store

__all__ = [
    "Sandbox",
    "sandbox",
    "AuthContext",
    "auth",
    "AUTH_ATTR",
    "current_auth",
    "current_portal",
    "json_body",
    "EXTENSION",
]

EXTENSION = "hubspot_sandbox"
AUTH_ATTR = "_hubspot_auth"

# Credential modes a view accepts:
#   "bearer"        private-app token or OAuth access token (CRM APIs)
#   "app"           OAuth access token of the developer app; private-app tokens get
#                   403 (FACTS 3.7: custom channels need an app, not a private app)
#   "devkey"        developer API key ?hapikey= (+ appId) (FACTS 3.1/3.7)
#   "devkey_or_app" either of the two above
AuthMode = str

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Sandbox:
    """One sandbox instance's moving parts."""

    store: Store
    limiter: RateLimiter
    faults: FaultPlan
    clock: Clock

    @property
    def cfg(self) -> dict[str, Any]:
        return self.store.cfg


@dataclass(frozen=True)
class AuthContext:
    """Who is calling: the token's portal (None for developer-key calls)."""

    kind: str  # "private" | "oauth" | "devkey"
    portal: Portal | None
    app_id: int | None
    token: str
    scopes: tuple[str, ...] = ()
    user_id: int | None = None


def sandbox() -> Sandbox:
    """The current app's :class:`Sandbox`."""
    sb: Sandbox = current_app.extensions[EXTENSION]
    return sb


def auth(mode: AuthMode) -> Callable[[F], F]:
    """Declare which credentials a view accepts (checked by the app's gate)."""

    def mark(fn: F) -> F:
        setattr(fn, AUTH_ATTR, mode)
        return fn

    return mark


def current_auth() -> AuthContext:
    ctx: AuthContext = g.hubspot_auth
    return ctx


def current_portal() -> Portal:
    """The calling token's portal (views with mode bearer/app only)."""
    portal = current_auth().portal
    assert portal is not None, "view needs a portal-bound token"
    return portal


def json_body(default: Any = None) -> Any:
    """The request's JSON body, or a HubSpot 400 for malformed JSON."""
    raw = request.get_data()
    if not raw.strip():
        if default is not None:
            return default
        raise validation_error("Invalid input JSON: the request body is empty")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise validation_error(f"Invalid input JSON: {exc}") from None
