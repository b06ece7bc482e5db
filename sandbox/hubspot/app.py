"""The sandbox HubSpot Flask app: wiring, the API gate, error rendering.

Every API request passes, in order:

1. the fault plan (:mod:`sandbox.core.faults`; API requests only),
2. authentication (per view: Bearer private-app/OAuth token, app OAuth token,
   or developer key; FACTS.md 3.1),
3. rate limiting (FACTS 3.2; headers on every counted answer),
4. OpenAPI request validation (:func:`sandbox.hubspot.openapi.validate_request`;
   400 VALIDATION_ERROR on failure),
5. the handler.

Routes are relative to the mount point (the demo mounts the app under
``/sandbox/hubspot``); self-URLs use ``request.script_root``.
"""

from __future__ import annotations

import math
from typing import Any

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from ..core import control as core_control
from ..core import stats
from ..core.clock import Clock
from ..core.faults import FaultPlan
from . import (
    associations,
    channels,
    console,
    control,
    crm,
    events,
    merge,
    oauth,
    properties,
    workflows,
)
from .config import SETTINGS
from .context import AUTH_ATTR, EXTENSION, AuthContext, Sandbox, sandbox
from .errors import (
    HubSpotError,
    error_body,
    expired_token,
    json_response,
    rate_limit_body,
    unauthenticated,
    validation_error,
)
from .openapi import validate_request
from .ratelimit import RateLimiter
from .store import Store, iso

__all__ = ["create_app"]

_PAGES = frozenset({"/oauth/authorize"})


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build a sandbox HubSpot app; ``config`` overrides :data:`config.DEFAULTS`."""
    cfg = SETTINGS.build(config)
    app = Flask(__name__)
    clock = Clock()
    sb = control.HubSpotSandbox(Store(cfg, clock), RateLimiter(clock.now),
                                FaultPlan(seed=cfg["seed"]), clock)
    app.extensions[EXTENSION] = sb
    # Faults first: they stand for the network and HubSpot's edge.
    sb.faults.install(app, error_body=_fault_body, applies=_fault_applies)
    app.before_request(_gate)
    app.after_request(_add_rate_headers)
    for module in (merge, crm, properties, associations, oauth, channels, control, workflows,
                   events, console):
        app.register_blueprint(module.bp)
    app.register_error_handler(HubSpotError, _render_hubspot_error)
    app.register_error_handler(HTTPException, _render_http_error)
    core_control.install(app, sb)  # /_state, /_config, /_reset, /_clock, /_reply
    stats.install(app, route=_stats_route)  # GET /_stats (read-only)
    return app


# -- statistics ----------------------------------------------------------------------

#: route variables spelled out in the statistics (few values: object types,
#: batch actions); ids stay templates
_SPELLED = ("object_type", "from_type", "to_type", "action")


def _stats_route() -> str | None:
    """API requests as their route template, e.g. ``/crm/v3/objects/notes/batch/create``,
    ``/crm/v3/objects/deals/<object_id>``; None for control endpoints and pages."""
    path = request.path
    if path.startswith("/_") or path == "/" or path in _PAGES:
        return None
    if request.url_rule is None:
        return path
    rule = request.url_rule.rule
    for name, value in (request.view_args or {}).items():
        if name in _SPELLED:
            rule = rule.replace(f"<{name}>", str(value))
    return rule


# -- faults --------------------------------------------------------------------------


def _fault_applies() -> bool:
    """API calls only: never control endpoints, the consent page or pages."""
    path = request.path
    return not (path.startswith("/_") or path in _PAGES or path == "/")


def _fault_body(status: int, retry_after: float | None) -> Response:
    if status == 429:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after or 1)))}
        return json_response(rate_limit_body("TEN_SECONDLY_ROLLING"), 429, headers)
    # 5xx bodies in HubSpot's error envelope; exact wording/category UNCONFIRMED.
    # 400: the refusal fault, as a validation error (FACTS 3.3's envelope).
    messages = {400: ("The channel account is not accepting messages.", "VALIDATION_ERROR"),
                503: ("The service is temporarily unavailable. Please try again later.",
                      "SERVICE_UNAVAILABLE"),
                504: ("The request timed out.", "GATEWAY_TIMEOUT")}
    message, category = messages.get(status, ("internal error", "INTERNAL_ERROR"))
    return json_response(error_body(message, category), status)


# -- the gate ------------------------------------------------------------------------


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return None


def _authenticate(sb: Sandbox, mode: str) -> AuthContext:
    store = sb.store
    app_cfg = store.cfg["app"]
    hapikey = request.args.get("hapikey")
    if mode in {"devkey", "devkey_or_app"} and hapikey is not None:
        if hapikey != app_cfg["developer_api_key"]:
            # Body from memory of HubSpot's hapikey errors (UNCONFIRMED).
            raise HubSpotError(401, error_body(
                "The API key provided is invalid. View or manage your API key here: "
                "https://app.hubspot.com/l/api-key/", "INVALID_AUTHENTICATION"))
        return AuthContext("devkey", None, int(app_cfg["app_id"]), hapikey)
    token = _bearer()
    if token is None or mode == "devkey":
        raise unauthenticated()
    portal = store.portal_for_private_token(token)
    if portal is not None:
        if mode in {"app", "devkey_or_app"}:
            # FACTS 3.7: custom channels need an app, not a legacy private app.
            # Body/category UNCONFIRMED.
            raise HubSpotError(403, error_body(
                "This endpoint requires an OAuth access token of a public app; private app "
                "access tokens are not supported.", "MISSING_SCOPES"))
        return AuthContext("private", portal, None, token)
    access = store.oauth.bearer(token)
    if access is None:
        raise unauthenticated()
    now = store.now()
    if access.expires_at <= now:
        raise expired_token(now - access.expires_at, iso(access.expires_at))
    return AuthContext("oauth", store.portals[int(access.account)], access.extra["app_id"],
                       token, tuple(access.scopes), access.user_id)


def _rate_limit(sb: Sandbox, ctx: AuthContext) -> Response | None:
    cfg = sb.cfg
    interval = int(cfg["rate_interval_ms"])
    if ctx.kind == "private":
        assert ctx.portal is not None
        key: tuple[Any, ...] = ("private", ctx.portal.id, ctx.token)
        limit, daily = int(cfg["per_10s"]), int(cfg["per_day"])
    elif ctx.kind == "oauth":
        assert ctx.portal is not None
        key = ("oauth", ctx.portal.id, ctx.app_id)
        limit, daily = int(cfg["per_10s_oauth"] or cfg["per_10s"]), None
    else:
        key, limit, daily = ("dev", ctx.app_id), int(cfg["per_10s"]), None
    search_key = ("search", ctx.token) if request.endpoint == "crm.search_objects" else None
    decision = sb.limiter.check(key, limit, interval, daily_limit=daily, search_key=search_key,
                                search_limit=int(cfg["search_per_s"]))
    g.hubspot_rate_headers = decision.headers
    if decision.policy is None:
        return None
    headers: dict[str, str] = {}
    if cfg["retry_after_header"]:  # UNCONFIRMED switch (FACTS 3.2)
        wait = sb.limiter.retry_after(key, interval, decision.policy, search_key)
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return json_response(rate_limit_body(decision.policy), 429, headers)


def _gate() -> Response | None:
    if request.endpoint is None or request.routing_exception is not None:
        return None
    view = current_app.view_functions.get(request.endpoint)
    mode = getattr(view, AUTH_ATTR, None)
    if mode is None:
        return None
    sb = sandbox()
    with sb.store.lock:
        ctx = _authenticate(sb, mode)
    g.hubspot_auth = ctx
    refused = _rate_limit(sb, ctx)
    if refused is not None:
        return refused
    try:
        validate_request(request.method, request.url, request.get_data(), request.content_type)
    except ValueError as exc:
        raise validation_error(str(exc)) from None
    return None


def _add_rate_headers(response: Response) -> Response:
    for key, value in getattr(g, "hubspot_rate_headers", {}).items():
        response.headers[key] = value
    return response


# -- errors ----------------------------------------------------------------------------


def _render_hubspot_error(exc: HubSpotError) -> Response:
    return exc.response()


def _render_http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    if code == 404:
        return json_response(error_body("resource not found", "OBJECT_NOT_FOUND"), 404)
    if code == 405:
        return json_response(error_body(f"Method {request.method} is not allowed on this "
                                        "resource", "VALIDATION_ERROR"), 405)
    return json_response(error_body(exc.description or exc.name, "VALIDATION_ERROR"), code)
