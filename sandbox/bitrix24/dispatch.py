"""The REST entry point: ``/<portal>/rest/...``, authentication, limits, batch.

URL forms (local-integrations/local-webhooks.md, settings/how-to-call-rest-api/
general-principles.md, authorization.md):

* ``/<portal>/rest/<method>[.json]`` with ``auth=<access token>`` in the
  query, the form or the JSON body: an app call;
* ``/<portal>/rest/<user_id>/<webhook code>/<method>[.json]``: an incoming
  webhook call (the creator's rights, the webhook's scopes).

Pipeline of one HTTP call: fault plan (app-level, see :mod:`.app`) ->
portal -> authentication (401 ``NO_AUTH_FOUND`` / ``expired_token``) -> the
leaky bucket (503 ``QUERY_LIMIT_EXCEEDED``; one count per HTTP request, batch
included; our reading: calls refused by authentication are not counted) ->
method: unknown (404), app-context-only (403 ``WRONG_AUTH_TYPE``),
scope (403 ``insufficient_scope``), operating time (429
``OPERATION_TIME_LIMIT``) -> handler -> envelope ``{"result", "time"}``
(+ ``total``/``next`` for lists). Events the handler queued are sent after
the answer is built, outside the lock.
"""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Blueprint, Response, g, request

from . import events
from .context import METHODS, AuthCtx, CallCtx, ListResult, Sandbox, method, sandbox
from .errors import (
    B24Error,
    expired_token,
    insufficient_scope,
    json_response,
    method_not_found,
    no_auth,
    operation_time_limit,
    query_limit,
    wrong_auth_type,
)
from .params import as_bool, parse_php_query, php_array, request_params
from .store import Portal, fmt_datetime

__all__ = ["bp", "base_url", "BATCH_LIMIT"]

bp = Blueprint("rest", __name__)

BATCH_LIMIT = 50  # batch.md: "A single batch contains no more than 50 subqueries"
_REF = re.compile(r"\$result\[([^\]]*)\]((?:\[[^\]]*\])*)")
_USER_SCOPES = ("user", "user_brief", "user_basic")  # user-current.md


def base_url(sb: Sandbox) -> str:
    """``scheme://host[:port]<mount>`` of this sandbox (or ``public_base_url``)."""
    configured = sb.cfg.get("public_base_url")
    root = configured.rstrip("/") if configured else request.host_url.rstrip("/")
    return root + request.script_root


def _time(portal: Portal, start: float, finish: float, processing: float,
          operating: tuple[float, int | None] | None) -> dict[str, Any]:
    """The ``time`` object (api-reference/data-types.md#time, limits.md)."""
    out: dict[str, Any] = {
        "start": round(start, 6), "finish": round(finish, 6),
        "duration": round(finish - start, 6), "processing": round(processing, 6),
        "date_start": fmt_datetime(start, portal.cfg["utc_offset"]),
        "date_finish": fmt_datetime(finish, portal.cfg["utc_offset"])}
    if operating is not None:
        value, reset_at = operating
        if reset_at is not None:
            out["operating_reset_at"] = reset_at
        out["operating"] = round(value, 6)
    return out


# -- authentication -------------------------------------------------------------------


def _authenticate(sb: Sandbox, portal: Portal, parts: list[str],
                  params: dict[str, Any]) -> AuthCtx:
    if len(parts) == 3:
        user_raw, code = parts[0], parts[1]
        hook = portal.webhooks.get((int(user_raw), code)) if user_raw.isdigit() else None
        if hook is None:
            raise no_auth()
        uid = int(hook["user_id"])
        return AuthCtx("webhook", portal, uid, tuple(hook.get("scopes") or ()),
                       f"webhook:{uid}/{code}")
    token = params.get("auth")
    if not isinstance(token, str) or not token:
        raise no_auth()
    access = sb.store.oauth.bearer(token)
    # another portal's token is no token here (portals are isolated)
    if access is None or access.account != portal.domain or portal.app is None:
        raise no_auth()
    if access.expires_at <= sb.clock.now():
        raise expired_token()
    return AuthCtx("app", portal, access.user_id, tuple(access.scopes),
                   f"app:{access.client_id}", token)


# -- one method -----------------------------------------------------------------------


def _check_method(ctx: CallCtx, name: str) -> Any:
    entry = METHODS.get(name)
    if entry is None:
        raise method_not_found()
    auth = ctx.auth
    if entry.app_only and auth.kind == "webhook":
        if entry.app_only == "event_bind":
            # UNCONFIRMED code/status (FACTS 2.1): config webhook_event_bind_error
            err = ctx.cfg["webhook_event_bind_error"]
            raise B24Error(int(err["status"]), str(err["error"]),
                           "Current authorization type is denied for this method Application "
                           "context required")
        if entry.app_only == "app_info":
            # app-info.md: 400 ACCESS_DENIED "Access denied! Application context required"
            raise B24Error(400, "ACCESS_DENIED", "Access denied! Application context required")
        raise wrong_auth_type()
    if entry.scopes:
        wanted = entry.scopes + (_USER_SCOPES if "user" in entry.scopes else ())
        if not any(s in auth.scopes for s in wanted):
            raise insufficient_scope()
    return entry


def execute(ctx: CallCtx, name: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Run ``name``; returns (result or ListResult, its ``time`` object)."""
    sb = ctx.sb
    entry = _check_method(ctx, name)
    limits = ctx.cfg["limits"]
    key = (ctx.portal.domain, ctx.auth.credential, name)
    if sb.meter.blocked(key, float(limits["operating_limit_s"])):
        raise operation_time_limit(name)
    start = sb.clock.now()
    perf = time.perf_counter()
    try:
        with sb.store.lock:
            result = entry.handler(ctx, params)
    finally:
        spent = time.perf_counter() - perf
        costs = limits.get("operating_costs") or {}
        cost = costs.get(name, limits.get("operating_cost_s"))
        state = sb.meter.record(key, float(cost) if cost is not None else spent)
    finish = sb.clock.now()
    return result, _time(ctx.portal, start, finish, spent, (state.operating, state.reset_at))


# -- batch ---------------------------------------------------------------------------------


def _lookup(results: dict[str, Any], key: str, path: str) -> tuple[bool, Any]:
    if key not in results:
        return False, None
    value = results[key]
    for part in re.findall(r"\[([^\]]*)\]", path):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return False, None
    return True, value


def _resolve(value: Any, results: dict[str, Any]) -> Any:
    """Replace ``$result[key][field]...`` (batch.md "Linked Calls"). A whole-value
    reference keeps the referenced type; an embedded one is substituted as text;
    an unresolvable one is left as written (UNCONFIRMED)."""
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results) for v in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _REF.fullmatch(value)
    if whole:
        found, ref = _lookup(results, whole.group(1), whole.group(2))
        return ref if found else value

    def sub(match: re.Match[str]) -> str:
        found, ref = _lookup(results, match.group(1), match.group(2))
        return str(ref) if found and not isinstance(ref, (dict, list)) else match.group(0)

    return _REF.sub(sub, value)


@method("batch")
def batch(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    """batch.md / FACTS 2.4. Runs outside the store lock (nested calls take it)."""
    raise AssertionError("batch is run by run_batch")  # registered for scope/lookup only


def run_batch(ctx: CallCtx, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    cmd = params.get("cmd")
    halt = as_bool(params.get("halt"), False)
    items: list[tuple[str, Any]]
    if isinstance(cmd, dict):
        items = [(str(k), v) for k, v in cmd.items()]
    elif isinstance(cmd, list):
        items = [(str(i), v) for i, v in enumerate(cmd)]
    else:
        items = []
    results: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    nexts: dict[str, Any] = {}
    times: dict[str, Any] = {}
    names: list[str] = []
    for index, (key, query) in enumerate(items):
        if index >= BATCH_LIMIT:
            # batch.md: "subqueries beyond the limit will end with an error"
            errors[key] = {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                           "error_description": "Max batch length exceeded"}
            if halt:
                break
            continue
        head, _, query_string = str(query).partition("?")
        name = head.strip().lower().removesuffix(".json")
        names.append(name)
        try:
            if name == "batch":  # batch.md: nesting forbidden since rest 24.0.0
                raise B24Error(405, "ERROR_BATCH_METHOD_NOT_ALLOWED",
                               "Method is not allowed for batch usage")
            sub_params = _resolve(parse_php_query(query_string), results)
            sub_params.pop("auth", None)
            result, spent = execute(ctx, name, sub_params)
        except B24Error as exc:
            errors[key] = exc.body()
            if halt:
                break
            continue
        if isinstance(result, ListResult):
            results[key] = result.items
            totals[key] = result.total
            if result.next is not None:
                nexts[key] = result.next
        else:
            results[key] = result
        # batch.md's result_time entries carry no operating keys
        times[key] = {k: v for k, v in spent.items() if not k.startswith("operating")}
    body = {"result": php_array(results), "result_error": php_array(errors),
            "result_total": php_array(totals), "result_next": php_array(nexts),
            "result_time": php_array(times)}
    return body, names


# -- the route -----------------------------------------------------------------------------


@bp.route("/<portal_name>/rest/<path:rest>", methods=["GET", "POST"])
def rest_call(portal_name: str, rest: str) -> Response:
    sb = sandbox()
    start = sb.clock.now()
    perf = time.perf_counter()
    parts = rest.split("/")
    if len(parts) not in (1, 3) or not parts[-1]:
        return method_not_found().response()
    name = parts[-1].lower().removesuffix(".json")
    g.b24_method = name
    portal = sb.store.portal(portal_name)
    if portal is None:
        # a real unknown host would not resolve; sandbox-specific answer
        return json_response({"error": "PORTAL_NOT_FOUND",
                              "error_description": f"No Bitrix24 at {portal_name}"}, 404)
    try:
        params = request_params(request)
    except ValueError:
        # UNCONFIRMED: the docs do not say how a malformed JSON body is answered
        return json_response({"error": "INVALID_REQUEST",
                              "error_description": "Invalid JSON body"}, 400)
    try:
        with sb.store.lock:
            auth = _authenticate(sb, portal, parts, params)
    except B24Error as exc:
        return exc.response()
    params.pop("auth", None)
    tier = sb.cfg["limits"][portal.plan]
    if not sb.bucket.take(portal.domain, float(tier["drain_per_s"]), int(tier["burst"])):
        return query_limit().response()
    ctx = CallCtx(sb, auth, base_url(sb))
    try:
        if name == "batch":
            _check_method(ctx, name)
            result, names = run_batch(ctx, params)
            g.b24_batch = names
            # limits.md: the outer batch is not counted in operating
            body: dict[str, Any] = {"result": result, "time": _time(
                portal, start, sb.clock.now(), time.perf_counter() - perf, None)}
        else:
            result, spent = execute(ctx, name, params)
            spent["start"] = round(start, 6)
            spent["duration"] = round(spent["finish"] - start, 6)
            spent["date_start"] = fmt_datetime(start, portal.cfg["utc_offset"])
            if isinstance(result, ListResult):
                body = {"result": result.items}
                if result.next is not None:
                    body["next"] = result.next
                body["total"] = result.total
            else:
                body = {"result": result}
            body["time"] = spent
        response = json_response(body)
    except B24Error as exc:
        response = exc.response()
    finally:
        events.dispatch(sb, ctx)
    return response
