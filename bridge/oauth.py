"""CRM installs through OAuth (the marketplace path).

``GET /oauth/<crm>/install[?mapping=<file>]`` redirects the CRM admin to
the CRM's consent page with a signed, expiring ``state`` (CSRF binding,
ASVS 10.2.1); ``GET /oauth/<crm>/callback`` checks the state, exchanges the
code, and creates the tenant — or, for an account already known, stores the
new tokens and resumes whatever waited for re-authorisation.
"""

from __future__ import annotations

import hashlib
import logging

from flask import Blueprint, jsonify, redirect, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from bridge import admin
from bridge.errors import AuthError, BridgeError, ConfigError, WebhookError
from bridge.registry import UnknownAdapter, crm_class
from bridge.runtime import Runtime, app_runtime
from crm_adapters.base import CrmAdapter

__all__ = ["bp", "install_url"]

log = logging.getLogger(__name__)
bp = Blueprint("oauth", __name__)

STATE_MAX_AGE = 600


def _serializer(rt: Runtime) -> URLSafeTimedSerializer:
    key = hashlib.sha256(b"bridge-oauth-state|" + rt.secrets_key_material()).hexdigest()
    return URLSafeTimedSerializer(key, salt="oauth-state")


def _redirect_uri(rt: Runtime, crm: str) -> str:
    return f"{rt.settings.public_url}/oauth/{crm}/callback"


def not_configured(rt: Runtime, crm: str) -> str | None:
    """Why this deployment cannot install ``crm`` through OAuth (its app
    credentials are missing), or None."""
    if rt.settings.apps.get(crm, {}).get("client_id"):
        return None
    return (
        f"the {crm} app is not configured here: set {crm.upper()}_CLIENT_ID and "
        f"{crm.upper()}_CLIENT_SECRET (README: Connecting a CRM)"
    )


def install_url(rt: Runtime, crm: str, mapping: str | None = None) -> str:
    """The install link for ``crm``; ``ConfigError`` when the app is not
    configured here."""
    cls = crm_class(crm)
    problem = not_configured(rt, crm)
    if problem:
        raise ConfigError(problem)
    state = _serializer(rt).dumps({"crm": crm, "mapping": mapping or f"{crm}.yaml"})
    return cls.install_url(rt.crm_app(crm), redirect_uri=_redirect_uri(rt, crm), state=state)


@bp.get("/oauth/<crm>/install")
def install(crm: str) -> ResponseReturnValue:
    rt = app_runtime()
    try:
        crm_class(crm)
    except UnknownAdapter:
        return jsonify({"error": "not_found", "message": f"{crm} has no OAuth install"}), 404
    problem = not_configured(rt, crm)
    if problem:
        return jsonify({"error": "not_configured", "message": problem}), 404
    mapping = request.args.get("mapping") or f"{crm}.yaml"
    problem = admin.check_mapping(rt, mapping)
    if problem:
        return jsonify({"error": "bad_mapping", "message": problem}), 400
    try:
        return redirect(install_url(rt, crm, mapping))
    except (UnknownAdapter, NotImplementedError):
        return jsonify({"error": "not_found", "message": f"{crm} has no OAuth install"}), 404
    except BridgeError as exc:
        return jsonify({"error": "not_configured", "message": exc.message}), 404


@bp.get("/oauth/<crm>/callback")
def callback(crm: str) -> ResponseReturnValue:
    rt = app_runtime()
    if "error" in request.args:
        return jsonify(
            {"error": "access_denied", "message": "the CRM admin refused the install"}
        ), 400
    code, raw_state = request.args.get("code"), request.args.get("state")
    params = request.args.to_dict()
    try:
        cls = crm_class(crm)
    except UnknownAdapter:
        return jsonify({"error": "not_found", "message": f"{crm} has no OAuth install"}), 404
    if code and not raw_state and cls.vendor_initiated_install(params):
        # The CRM itself announced the install (no state of ours to check).
        return _install(rt, cls, crm, code, params, f"{crm}.yaml")
    if not code or not raw_state:
        return jsonify({"error": "invalid_request", "message": "code and state are required"}), 400
    # A state we did not sign (or no longer accept) is a forged or replayed
    # callback (CSRF, ASVS 10.2.1): 403, like a bad webhook signature.
    try:
        state = _serializer(rt).loads(raw_state, max_age=STATE_MAX_AGE)
    except SignatureExpired:
        return jsonify(
            {"error": "invalid_state", "message": "the install link expired: start again"}
        ), 403
    except BadSignature:
        return jsonify(
            {"error": "invalid_state", "message": "state does not match: start again"}
        ), 403
    if state.get("crm") != crm:
        return jsonify({"error": "invalid_state", "message": "state is for another CRM"}), 403
    return _install(rt, cls, crm, code, params, state.get("mapping") or f"{crm}.yaml")


def _install(
    rt: Runtime, cls: type[CrmAdapter], crm: str, code: str, params: dict[str, str], mapping: str
) -> ResponseReturnValue:
    try:
        installed = cls.exchange_code(
            rt.crm_app(crm),
            code=code,
            redirect_uri=_redirect_uri(rt, crm),
            http=rt.http(rt.settings.api_bases.get(crm) or cls.default_api_base()),
            params=params,
        )
        tenant_id, created = admin.upsert_oauth_tenant(
            rt, crm_kind=crm, installed=installed, mapping=mapping
        )
        admin.after_install(rt, tenant_id)
    except AuthError as exc:
        # The CRM refused the grant itself (a reused, expired or unknown
        # code): the request is what is wrong, not the CRM. Start again.
        log.warning("OAuth install for %s refused: %s", crm, type(exc).__name__)
        return jsonify({"error": "invalid_grant", "message": f"{exc.message}: start again"}), 400
    except WebhookError as exc:
        # The callback itself is malformed or forged (e.g. a referer that
        # names no account of the CRM): the request is at fault, not the CRM.
        log.warning("OAuth install for %s refused: %s", crm, exc.code)
        return jsonify(exc.to_json()), exc.status_code
    except BridgeError as exc:
        log.warning("OAuth install for %s failed: %s", crm, type(exc).__name__)
        return jsonify({"error": "install_failed", "message": exc.message}), 502
    return jsonify(
        {
            "ok": True,
            "tenant": tenant_id,
            "created": created,
            "message": "Connected. / Подключено.",
        }
    )
