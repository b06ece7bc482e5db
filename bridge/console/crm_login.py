"""Opening the console from inside the CRM, and short-lived login links.

Two ways in besides the password (each ends in :func:`bridge.console.auth.sign_in`
of an ``admin`` of one tenant, which then sees that tenant only):

* ``GET|POST /console/crm/<crm>``: the CRM itself sends the user. The CRM
  adapter's hooks decide who that is (``CrmAdapter.console_account``: which
  account, as far as the app's settings can check; ``console_identity``: the
  user, checked against that tenant's account). An administrator of the CRM
  account gets a console user of that tenant (``<crm>-<user>@<account>.<crm>.crm.invalid``,
  made on first use, role ``admin``, no password); anyone else is refused
  (403), and so is a request whose account is no tenant here (404).

  - The user's browser (``ConsoleIdentity.in_browser``: Bitrix24's app page)
    gets the session and a redirect to the console. Inside the CRM's frame
    (``Sec-Fetch-Dest: iframe``) a session cookie would be a third-party one
    the browser drops, so the frame gets a page with a button that opens the
    console in a new tab through a login link instead.
  - The CRM's server (a signed call of a card or settings action: HubSpot)
    gets JSON with a login link to hand the user.

* ``GET /console/crm/link/<purpose>?token=…``: a login link. The bridge's
  own mechanism (no CRM defines it): an ``itsdangerous`` timed signature
  keyed by the bridge's secret key, a salt per purpose (``crm``: a CRM's
  call; ``api``: the tenant API's ``POST /api/v1/console/login-link``;
  ``cli``: ``bridge admin login-link``), valid :data:`LINK_MAX_AGE` seconds
  and once: its random id is remembered in Redis until it would have expired
  anyway. A link names the tenant and the console user it signs in.

These routes are the app's own, not the console blueprint's: nobody is
signed in yet (the blueprint's guard would send them to the password form),
the CRM posts no CSRF token, and the CRM's frame may show the button page.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from urllib.parse import urlencode

import click
from flask import Flask, Response, g, has_request_context, jsonify, redirect, request
from flask.sansio.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.console import bp, users
from bridge.console.auth import client_address, landing_url, sign_in
from bridge.console.i18n import register, t
from bridge.errors import BridgeError, RetryableError, WebhookError
from bridge.registry import UnknownAdapter, crm_class
from bridge.runtime import Runtime, app_runtime
from bridge.tables import ConsoleUser, Tenant
from crm_adapters.base import ConsoleIdentity

__all__ = [
    "LINK_MAX_AGE",
    "PURPOSES",
    "LinkRefused",
    "login_link_command",
    "mint_link",
    "redeem_link",
]

log = logging.getLogger(__name__)

#: seconds a login link is valid
LINK_MAX_AGE = 300
#: what a link was made for (each its own salt: a link of one kind is no other)
PURPOSES = ("crm", "api", "cli")
#: refused CRM requests per account before the bridge stops asking the CRM
#: (each check costs a call to the CRM account's REST budget) ...
MAX_REFUSALS = 30
#: ... for this many seconds
REFUSAL_WINDOW = 300
#: a console user made here has no password (Argon2 never matches it)
NO_PASSWORD = "!crm-login"  # noqa: S105 (a marker, not a password)
_PREFIX = "bridge:console:crm:"
_LABEL = re.compile(r"[^a-z0-9-]+")

register(
    en={
        "crm_login.title": "CRM bridge console",
        "crm_login.open": "Open the console",
        "crm_login.framed": "The console opens in a new tab (signed in as an admin of {tenant}). "
        "The button works for {minutes} minutes, once.",
        "crm_login.refused": "The console cannot be opened",
        "crm_login.not_admin": "Only an administrator of this CRM account opens the bridge's "
        "console. Ask your administrator.",
        "crm_login.no_tenant": "This CRM account is not connected to the bridge.",
        "crm_login.not_vouched": "The CRM did not confirm who you are. Open the app again "
        "from the CRM.",
        "crm_login.busy": "The CRM did not answer. Try again in a minute.",
        "crm_login.too_many": "Too many refused attempts for this account. Try again later.",
        "crm_login.link_expired": "This login link has expired. Ask for a new one.",
        "crm_login.link_used": "This login link was used already. Ask for a new one.",
        "crm_login.link_invalid": "This login link is not valid.",
        "crm_login.disabled": "Your console user is disabled. Ask the bridge's owner.",
    },
    ru={
        "crm_login.title": "Консоль CRM-моста",
        "crm_login.open": "Открыть консоль",
        "crm_login.framed": "Консоль откроется в новой вкладке (вход администратором {tenant}). "
        "Кнопка действует {minutes} мин., один раз.",
        "crm_login.refused": "Консоль не открывается",
        "crm_login.not_admin": "Консоль моста открывает только администратор этого аккаунта "
        "CRM. Обратитесь к администратору.",
        "crm_login.no_tenant": "Этот аккаунт CRM не подключён к мосту.",
        "crm_login.not_vouched": "CRM не подтвердила, кто вы. Откройте приложение из CRM ещё раз.",
        "crm_login.busy": "CRM не ответила. Попробуйте через минуту.",
        "crm_login.too_many": "Слишком много отклонённых попыток для этого аккаунта. "
        "Попробуйте позже.",
        "crm_login.link_expired": "Срок действия ссылки для входа истёк. Запросите новую.",
        "crm_login.link_used": "Эта ссылка для входа уже использована. Запросите новую.",
        "crm_login.link_invalid": "Ссылка для входа недействительна.",
        "crm_login.disabled": "Ваш пользователь консоли отключён. Обратитесь к владельцу моста.",
    },
)


# -- login links ------------------------------------------------------------------------------


class LinkRefused(Exception):
    """A login link that does not sign anyone in: ``reason`` is ``invalid``
    (tampered, another purpose, unknown user), ``expired`` or ``used``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _serializer(rt: Runtime, purpose: str) -> URLSafeTimedSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown login link purpose {purpose!r}")
    key = hashlib.sha256(b"bridge-console-login|" + rt.secrets_key_material()).hexdigest()
    return URLSafeTimedSerializer(key, salt=f"console-login:{purpose}")


def mint_link(rt: Runtime, tenant_id: int, user_id: int, purpose: str) -> str:
    """A link that signs console user ``user_id`` in to ``tenant_id``, once,
    within :data:`LINK_MAX_AGE` seconds."""
    token = _serializer(rt, purpose).dumps(
        {"t": tenant_id, "u": user_id, "j": secrets.token_urlsafe(16)}
    )
    return f"{rt.settings.public_url}/console/crm/link/{purpose}?{urlencode({'token': token})}"


def redeem_link(rt: Runtime, purpose: str, token: str) -> tuple[int, int]:
    """(tenant id, console user id) of a valid link, spent by this call;
    :class:`LinkRefused` otherwise."""
    try:
        payload = _serializer(rt, purpose).loads(token, max_age=LINK_MAX_AGE)
    except SignatureExpired:
        raise LinkRefused("expired") from None
    except (BadSignature, ValueError):
        raise LinkRefused("invalid") from None
    if not isinstance(payload, Mapping):
        raise LinkRefused("invalid")
    tenant_id, user_id, jti = payload.get("t"), payload.get("u"), payload.get("j")
    if not (isinstance(tenant_id, int) and isinstance(user_id, int) and isinstance(jti, str)):
        raise LinkRefused("invalid")
    # once: the first redeemer sets the key; it outlives the link's validity
    if not rt.redis.set(f"{_PREFIX}link:{purpose}:{jti}", "1", nx=True, ex=LINK_MAX_AGE + 60):
        raise LinkRefused("used")
    with rt.read_session() as session:
        user = session.get(ConsoleUser, user_id)
        tenant = session.get(Tenant, tenant_id)
        if user is None or tenant is None or user.tenant_id != tenant.id:
            raise LinkRefused("invalid")
        if user.disabled:
            raise LinkRefused("disabled")
    return tenant_id, user_id


# -- the console users a CRM login makes -------------------------------------------------------


def _label(value: str) -> str:
    return _LABEL.sub("-", value.lower()).strip("-")[:60] or "x"


def crm_login_email(kind: str, account_id: str, user_id: str) -> str:
    """The console user of a CRM account's user: never a real address
    (``.invalid``, RFC 2606), so it meets no password user's."""
    return f"{_label(kind)}-{_label(user_id)}@{_label(account_id)}.{_label(kind)}.crm.invalid"


def link_email(purpose: str, tenant_id: int) -> str:
    """The console user of a tenant's API or command-line links."""
    return f"{purpose}-link@tenant-{tenant_id}.crm.invalid"


@dataclass(frozen=True)
class _Login:
    user_id: int
    email: str
    disabled: bool


def _admin_user(session: Session, tenant: Tenant, email: str, language: str = "en") -> _Login:
    """The tenant's console user ``email``, made as an ``admin`` without a
    password on first use. One the owner changed since (a lower role,
    disabled) stays as the owner left it."""
    row = users.user_by_email(session, email)
    if row is None:
        row = ConsoleUser(
            email=users.normalise_email(email),
            password_hash=NO_PASSWORD,
            role="admin",
            tenant_id=tenant.id,
            language=language if language in users.LANGUAGES else "en",
            disabled=False,
        )
        session.add(row)
        session.flush()
        users.record(
            session,
            user_id=None,
            user_email=row.email,
            tenant_id=tenant.id,
            action="crm_user_created",
            target=f"user:{row.id} {row.email}",
            after=users.user_view(row),
            remote_addr=client_address() if has_request_context() else None,
        )
    if row.tenant_id != tenant.id:
        raise LookupError("the console user belongs to another tenant")
    return _Login(row.id, row.email, row.disabled)


def _tenant_by_account(session: Session, crm: str, account_id: str) -> Tenant | None:
    return session.scalars(
        select(Tenant).where(Tenant.crm_kind == crm, Tenant.crm_account_id == account_id)
    ).first()


# -- the pages (HTML for a browser, JSON for a CRM's server) -------------------------------------

_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}}
a.button{{display:inline-block;padding:.6rem 1.2rem;background:#2fc6f6;color:#fff;
border-radius:.3rem;text-decoration:none;font-weight:600}}
</style></head><body>
<h1>{title}</h1>
<p>{text}</p>{action}
</body></html>
"""


def _page(title: str, text: str, status: int, action: str = "") -> Response:
    from bridge.console.i18n import language

    body = _PAGE.format(lang=language(), title=escape(title), text=escape(text), action=action)
    response = Response(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _browser_post() -> bool:
    """The request is a form a browser posted (a CRM's app page), not a
    server's call: errors are pages, not JSON."""
    return request.method == "POST" and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    )


def _refuse(status: int, key: str, error: str) -> ResponseReturnValue:
    if _browser_post() or request.path.startswith("/console/crm/link/"):
        return _page(t("crm_login.refused"), t(key), status)
    return jsonify({"error": error, "message": t(key)}), status


def _framed() -> bool:
    """The browser loads this into a frame (the CRM's): ``Sec-Fetch-Dest``."""
    return request.headers.get("Sec-Fetch-Dest", "").lower() in ("iframe", "frame")


def _landing(tenant_id: int) -> str:
    url = landing_url()
    return url + ("&" if "?" in url else "?") + urlencode({"tenant": tenant_id})


def _signed_in(tenant_id: int, user_id: int) -> ResponseReturnValue:
    sign_in(user_id)
    response = redirect(_landing(tenant_id), code=303)
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _set_language(asked: str | None) -> str:
    """The page's language from the CRM's own hint (Bitrix24's ``LANG``)."""
    if asked in ("en", "ru"):
        g.console_lang = asked
        return asked
    from bridge.console.i18n import language

    return language()


# -- GET|POST /console/crm/<crm> -------------------------------------------------------------


def _too_many(rt: Runtime, crm: str, account: str) -> bool:
    count = rt.redis.get(f"{_PREFIX}refused:{crm}:{hashlib.sha256(account.encode()).hexdigest()}")
    return int(count or 0) >= MAX_REFUSALS


def _count_refusal(rt: Runtime, crm: str, account: str) -> None:
    key = f"{_PREFIX}refused:{crm}:{hashlib.sha256(account.encode()).hexdigest()}"
    pipe = rt.redis.pipeline()
    pipe.set(key, 0, ex=REFUSAL_WINDOW, nx=True)
    pipe.incr(key)
    pipe.execute()


def crm_open(crm: str) -> ResponseReturnValue:
    """The CRM sends a user to the console (see the module docstring)."""
    from bridge.webhooks import to_webhook_request

    rt = app_runtime()
    language = _set_language(request.args.get("LANG"))
    try:
        cls = crm_class(crm)
    except UnknownAdapter:
        return _refuse(404, "crm_login.no_tenant", "not_found")
    if request.method == "POST" and request.mimetype not in cls.content_types:
        return _refuse(415, "crm_login.not_vouched", "unsupported_media_type")
    webhook = to_webhook_request(request, rt.settings.public_url)
    try:
        account = cls.console_account(rt.crm_app(crm), webhook)
    except NotImplementedError:
        return _refuse(404, "crm_login.no_tenant", "not_found")
    except WebhookError as exc:
        log.warning("console login from %s refused: %s", crm, exc.code)
        return _refuse(exc.status_code, "crm_login.not_vouched", exc.code)
    if not account:
        return _refuse(400, "crm_login.not_vouched", "invalid_payload")
    if _too_many(rt, crm, account):
        return _refuse(429, "crm_login.too_many", "too_many_requests")
    with rt.read_session() as session:
        tenant = _tenant_by_account(session, crm, account)
        if tenant is None:
            return _refuse(404, "crm_login.no_tenant", "not_found")
        tenant_id, tenant_name = tenant.id, tenant.name or tenant.slug
        adapter = rt.crm_adapter(tenant)
    try:
        identity = adapter.console_identity(webhook)
    except NotImplementedError:
        return _refuse(404, "crm_login.no_tenant", "not_found")
    except WebhookError as exc:
        _count_refusal(rt, crm, account)
        log.warning("console login for tenant %s refused: %s", tenant_id, exc.code)
        return _refuse(exc.status_code, "crm_login.not_vouched", exc.code)
    except RetryableError:
        return _refuse(503, "crm_login.busy", "unavailable")
    except BridgeError as exc:
        _count_refusal(rt, crm, account)
        log.warning("console login for tenant %s refused: %s", tenant_id, type(exc).__name__)
        return _refuse(403, "crm_login.not_vouched", "forbidden")
    if identity.account_id != account:
        _count_refusal(rt, crm, account)
        return _refuse(403, "crm_login.not_vouched", "forbidden")
    if not identity.admin:
        return _refuse(403, "crm_login.not_admin", "not_an_admin")
    return _let_in(rt, crm, tenant_id, tenant_name, identity, language)


def _let_in(
    rt: Runtime,
    crm: str,
    tenant_id: int,
    tenant_name: str,
    identity: ConsoleIdentity,
    language: str,
) -> ResponseReturnValue:
    """The CRM vouched for an admin: a session, a framed page's button, or a link."""
    email = crm_login_email(crm, identity.account_id, identity.user_id)
    with rt.transaction() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            return _refuse(404, "crm_login.no_tenant", "not_found")
        login = _admin_user(session, tenant, email, language)
        users.record(
            session,
            user_id=login.user_id,
            user_email=login.email,
            tenant_id=tenant_id,
            action="crm_login",
            target=f"{crm} user {identity.user_id} {identity.name}".strip()[:200],
            remote_addr=client_address(),
        )
    if login.disabled:
        return _refuse(403, "crm_login.disabled", "disabled")
    if not identity.in_browser:
        url = mint_link(rt, tenant_id, login.user_id, "crm")
        return jsonify({"url": url, "expires_in": LINK_MAX_AGE, "tenant": tenant_id})
    if _framed():
        url = mint_link(rt, tenant_id, login.user_id, "crm")
        button = (
            f'<p><a class="button" href="{escape(url)}" target="_blank" '
            f'rel="noopener noreferrer">{escape(t("crm_login.open"))}</a></p>'
        )
        text = t("crm_login.framed", tenant=tenant_name, minutes=LINK_MAX_AGE // 60)
        return _page(t("crm_login.title"), text, 200, button)
    return _signed_in(tenant_id, login.user_id)


# -- GET /console/crm/link/<purpose> ---------------------------------------------------------


def link_login(purpose: str) -> ResponseReturnValue:
    """A login link: sign in, then the console (see :func:`redeem_link`)."""
    rt = app_runtime()
    token = request.args.get("token", "")
    if purpose not in PURPOSES or not token or len(token) > 2000:
        return _refuse(404, "crm_login.link_invalid", "not_found")
    try:
        tenant_id, user_id = redeem_link(rt, purpose, token)
    except LinkRefused as exc:
        status, key = {
            "expired": (410, "crm_login.link_expired"),
            "used": (410, "crm_login.link_used"),
            "disabled": (403, "crm_login.disabled"),
        }.get(exc.reason, (403, "crm_login.link_invalid"))
        return _refuse(status, key, exc.reason)
    return _signed_in(tenant_id, user_id)


# -- POST /api/v1/console/login-link (the tenant's API token) -------------------------------------


def tenant_link(rt: Runtime, tenant_id: int, purpose: str, by: str) -> str:
    """A login link to ``tenant_id`` as its ``purpose`` link user (the
    tenant API's, the command line's), with an audit row naming ``by``."""
    with rt.transaction() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise LookupError(f"no tenant with id {tenant_id}")
        login = _admin_user(session, tenant, link_email(purpose, tenant_id))
        users.record(
            session,
            user_id=None,
            user_email=by[:320],
            tenant_id=tenant_id,
            action="login_link",
            target=f"user:{login.user_id} {login.email}",
        )
    return mint_link(rt, tenant_id, login.user_id, purpose)


def api_login_link() -> ResponseReturnValue:
    """A login link for the tenant whose API token calls (any CRM; the way
    in for amoCRM, which signs no call of its own)."""
    from bridge import apitokens

    rt = app_runtime()
    tenant_id = apitokens.tenant_of(rt, request.headers.get("Authorization"))
    if tenant_id is None:
        response = jsonify(
            {
                "error": "unauthorized",
                "message": "send Authorization: Bearer <the tenant's API token> (brt_...)",
            }
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="bridge"'
        return response, 401
    by = "api:" + _label(request.headers.get("X-Bridge-Actor") or "tenant")
    url = tenant_link(rt, tenant_id, "api", by)
    response = jsonify({"url": url, "expires_in": LINK_MAX_AGE, "tenant": tenant_id})
    response.headers["Cache-Control"] = "no-store"
    return response, 201


# -- the command line ---------------------------------------------------------------------------


@click.command("login-link")
@click.option("--tenant", "tenant", required=True, help="The tenant's id or slug.")
def login_link_command(tenant: str) -> None:
    """Print a login link to one tenant's console as its admin (once, 5 minutes)."""
    from bridge.cli import context

    rt = context.runtime()
    with rt.read_session() as session:
        found = session.get(Tenant, int(tenant)) if tenant.isdigit() else None
        chosen = found.id if found is not None else None
    if chosen is None:
        chosen = context.tenant_id(rt, tenant)
    click.echo(tenant_link(rt, chosen, "cli", "cli"))


# -- wiring -------------------------------------------------------------------------------------


def _routes(state: BlueprintSetupState) -> None:
    """The app-level routes (see the module docstring), added when the
    console's blueprint is registered."""
    app = state.app
    assert isinstance(app, Flask)
    app.add_url_rule("/console/crm/<crm>", "console_crm_open", crm_open, methods=["GET", "POST"])
    app.add_url_rule("/console/crm/link/<purpose>", "console_crm_link", link_login)
    app.add_url_rule(
        "/api/v1/console/login-link", "console_login_link", api_login_link, methods=["POST"]
    )


bp.record_once(_routes)
