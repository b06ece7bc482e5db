"""Per-app and per-request context shared by the sandbox's blueprints.

* :class:`Sandbox` (in ``app.extensions["amocrm_sandbox"]``): the store, the
  rate limiter, the fault plan, the account webhooks and the clock of one app
  (the app builds :class:`sandbox.amocrm.control.AmoSandbox`, which adds the
  control API's hooks).
* :func:`api` marks an account API view (``/<subdomain>/api/v4/...``); the gate
  in :mod:`sandbox.amocrm.app` authenticates the Bearer token against the
  subdomain's account before the view runs and leaves an :class:`ApiContext`
  in ``g`` (FACTS.md 1.1).
* :func:`json_body`, :func:`api_url`, :func:`collect_events` are helpers used
  by every API module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from flask import current_app, g, request

from ..core.clock import Clock
from ..core.faults import FaultPlan
from .errors import bad_request
from .ratelimit import RateLimiter
from .store import Account, Store

if TYPE_CHECKING:
    from ..core.webhooks import Job
    from .webhooks import AccountWebhooks

__all__ = [
    "Sandbox",
    "sandbox",
    "ApiContext",
    "api",
    "API_ATTR",
    "ctx",
    "json_body",
    "json_list",
    "api_url",
    "base_url",
    "collect_events",
    "EXTENSION",
]

EXTENSION = "amocrm_sandbox"
API_ATTR = "_amocrm_api"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Sandbox:
    """One sandbox instance's moving parts."""

    store: Store
    limiter: RateLimiter
    faults: FaultPlan
    dispatcher: AccountWebhooks
    clock: Clock

    @property
    def cfg(self) -> dict[str, Any]:
        return self.store.cfg


@dataclass(frozen=True)
class ApiContext:
    """Who is calling: the token's account and user."""

    account: Account
    user_id: int
    token: str

    @property
    def is_admin(self) -> bool:
        user = self.account.users.get(self.user_id)
        return bool(user and user["is_admin"])


def sandbox() -> Sandbox:
    sb: Sandbox = current_app.extensions[EXTENSION]
    return sb


def api(fn: F) -> F:
    """Mark a view as an account API view (Bearer token, rate limited)."""
    setattr(fn, API_ATTR, True)
    return fn


def ctx() -> ApiContext:
    context: ApiContext = g.amocrm_ctx
    return context


def json_body() -> Any:
    """The request's JSON; malformed JSON is a 400 problem (body ours)."""
    raw = request.get_data()
    if not raw.strip():
        raise bad_request("Request body is empty")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Invalid JSON in request body") from None


def json_list(limit: int | None = None) -> list[Any]:
    """A batch body: a JSON array of objects (FACTS 1.5/1.7: "takes an array").

    A single object is refused (400, ours). ``limit`` is the batch cap."""
    data = json_body()
    if not isinstance(data, list) or not data or not all(isinstance(i, dict) for i in data):
        raise bad_request("Request body must be a non-empty JSON array of objects")
    if limit is not None and len(data) > limit:
        raise bad_request(f"Too many entities in one request (max {limit})")
    return data


def base_url() -> str:
    """Where the sandbox is mounted (self links follow the mount point, so
    ``_links.next`` can be followed; the real host would be
    ``https://<subdomain>.amocrm.ru``)."""
    return request.host_url.rstrip("/") + request.script_root


def api_url(account: Account, path: str) -> str:
    """The sandbox URL of ``/api/v4/<path>`` on ``account``."""
    return f"{base_url()}/{account.subdomain}/api/v4/{path.lstrip('/')}"


def collect_events(jobs: list[Job]) -> None:
    """Queue account-webhook jobs to send once this API request has answered
    (switch ``webhooks_on_api_changes``, UNCONFIRMED)."""
    pending: list[Job] = g.setdefault("amocrm_jobs", [])
    pending.extend(jobs)
