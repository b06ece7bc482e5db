"""The sandbox amoCRM Flask app: wiring, the API gate, error rendering.

URL layout (relative to the mount point, e.g. ``/sandbox/amocrm``; the real
hosts differ, the paths after them are amoCRM's own):

* ``/<subdomain>/api/v4/...`` -- an account's API (``https://<subdomain>.amocrm.ru``)
* ``/<subdomain>/oauth2/access_token``, ``/<host>/oauth2/account/current/subdomain``
* ``/www/oauth`` -- the consent page (``https://www.amocrm.ru/oauth``)
* ``/amojo/v2/origin/custom/...`` -- the Chats API (``https://amojo.amocrm.ru``)
* ``/_...`` -- control endpoints (never faulted, never rate limited)

Every account API request passes, in order: the fault plan
(:mod:`sandbox.core.faults`), authentication (the subdomain must name an account,
else 401 -- error code 101; the Bearer token must be a live token of *that*
account, else 401; FACTS.md 1.1-1.3), the subscription check (402), the rate
limiter (403 while blocked, 429 over 7/s; FACTS 1.4), the handler. Webhook
jobs collected by the handler are sent after the answer.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from ..core import control as core_control
from ..core import stats
from ..core.clock import Clock
from ..core.faults import FaultPlan
from . import (
    account,
    amojo,
    contacts,
    control,
    fields,
    leads,
    notes_tasks,
    oauth,
    pipelines,
    sources,
)
from .config import SETTINGS
from .context import API_ATTR, EXTENSION, ApiContext, sandbox
from .errors import (
    AmoError,
    forbidden,
    payment_required,
    problem,
    rate_limited,
    unauthorized,
)
from .ratelimit import RateLimiter
from .store import Store
from .webhooks import AccountWebhooks

__all__ = ["create_app"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build a sandbox amoCRM app; ``config`` overrides :data:`config.DEFAULTS`."""
    cfg = SETTINGS.build(config)
    app = Flask(__name__, static_folder=None)
    clock = Clock()
    store = Store(cfg, clock)
    sb = control.AmoSandbox(store, RateLimiter(clock.now), FaultPlan(seed=cfg["seed"]),
                            AccountWebhooks(store), clock)
    app.extensions[EXTENSION] = sb
    # Faults first: they stand for the network and amoCRM's edge.
    sb.faults.install(app, error_body=_fault_body, applies=_fault_applies)
    app.before_request(_gate)
    app.after_request(_send_webhooks)
    for module in (contacts, leads, pipelines, fields, notes_tasks, account, oauth, amojo,
                   sources, control):
        app.register_blueprint(module.bp)
    app.register_error_handler(AmoError, _render_amo_error)
    app.register_error_handler(HTTPException, _render_http_error)
    core_control.install(app, sb)  # /_state, /_config, /_reset, /_clock, /_reply
    stats.install(app, route=_stats_route)  # GET /_stats (read-only)
    return app


_ANY = re.compile(r"<any\([^)]*\):(\w+)>")


def _stats_route() -> str | None:
    """Vendor requests as their rule template with ``<any(…):name>`` parts spelled
    out (``/<subdomain>/api/v4/leads/<int:lead_id>``); None for control endpoints
    and the consent page."""
    path = request.path
    if path.startswith("/_") or path == "/www/oauth":
        return None
    if request.url_rule is None:
        return path
    args = request.view_args or {}
    return _ANY.sub(lambda m: str(args.get(m.group(1), m.group(0))), request.url_rule.rule)


# -- faults ------------------------------------------------------------------------------------


def _fault_applies() -> bool:
    """Vendor calls only: never control endpoints or the consent page."""
    path = request.path
    return not (path.startswith("/_") or path == "/www/oauth")


def _fault_body(status: int, retry_after: float | None) -> Response:
    cfg = sandbox().cfg
    if status == 429:  # FACTS 1.4 + the UNCONFIRMED body/header switches
        return rate_limited(cfg["rate_429_body"],
                            retry_after if cfg["retry_after_header"] else None)
    # 5xx as problem+json by analogy with FACTS 1.3 (UNCONFIRMED).
    return problem(status, {503: "Service temporarily unavailable",
                            504: "Gateway timeout"}.get(status, "Internal server error"))


# -- the gate -----------------------------------------------------------------------------------


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return None


def _gate() -> Response | None:
    if request.endpoint is None or request.routing_exception is not None:
        return None
    view = current_app.view_functions.get(request.endpoint)
    if not getattr(view, API_ATTR, False):
        return None
    sb = sandbox()
    cfg = sb.cfg
    subdomain = (request.view_args or {}).get("subdomain", "")
    with sb.store.lock:
        acct = sb.store.account_by_subdomain(subdomain)
        if acct is None:  # error code 101: no such account -> 401
            raise unauthorized("Account not found")
        access = sb.store.oauth.bearer(_bearer())
        if access is None or access.account != acct.id:
            raise unauthorized()
        if access.expires_at <= sb.store.now():
            raise unauthorized("Token has expired")
        if not acct.subscription_active:
            raise payment_required()
        g.amocrm_ctx = ApiContext(acct, access.user_id, access.token)
    decision = sb.limiter.check(
        (cfg["integration"]["client_id"], acct.id), acct.id, int(cfg["per_second"]),
        float(cfg["rate_window_s"]), block=bool(cfg["block_on_storm"]),
        storm_429s=int(cfg["storm_429s"]), storm_window_s=float(cfg["storm_window_s"]),
        block_seconds=float(cfg["block_seconds"]))
    if decision.verdict == "403":  # FACTS 1.3: blocked for repeatedly exceeding the rate
        return forbidden("Account is blocked for repeatedly exceeding the request rate "
                         "limit").response
    if decision.verdict == "429":
        return rate_limited(cfg["rate_429_body"],
                            decision.retry_after if cfg["retry_after_header"] else None)
    return None


def _send_webhooks(response: Response) -> Response:
    jobs = g.pop("amocrm_jobs", None)
    if jobs and response.status_code < 400:
        sandbox().dispatcher.submit(jobs)
    return response


# -- errors ---------------------------------------------------------------------------------------


def _render_amo_error(exc: AmoError) -> Response:
    return exc.response


def _render_http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    if code == 404:
        return problem(404, "Not Found")
    if code == 405:
        return problem(405, f"Method {request.method} is not allowed")
    return problem(code, exc.description or exc.name)
