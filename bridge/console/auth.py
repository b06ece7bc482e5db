"""Who may use the console, and what each may do there.

* Sign-in: :mod:`bridge.console.pages.access` checks the password (and the
  TOTP code when the user has one), then :func:`sign_in` starts the session.
  The session is Flask's signed cookie (``HttpOnly``, ``SameSite=Lax``,
  ``Secure`` when the bridge is served over https: see :func:`init_app`),
  valid for :data:`SESSION_LIFETIME`; it carries the user's id and a random
  session id that :func:`sign_out` revokes in Redis, so a copied cookie is
  dead after sign-out. The user's row is read on every request: a disabled
  user or a changed role counts at once.
* Failed sign-ins are counted in Redis (every web worker shares it) per
  account and per client address; past :data:`FAILURES_PER_ACCOUNT` /
  :data:`FAILURES_PER_ADDRESS` within :data:`FAILURE_WINDOW` seconds the
  login answers 429 with when to retry, even for the right password.
* Roles (``viewer`` < ``admin`` < ``owner``): every console page needs a
  signed-in user; a viewer may read any page, every POST needs an admin
  (:func:`login_required` asks for more per page). An admin sees its own
  tenant only (another's is a 404, :func:`tenant_or_404`); the owner every one.
* CSRF: Flask-WTF's ``CSRFProtect`` is on the app but checks nothing by
  itself (``WTF_CSRF_CHECK_DEFAULT`` off: webhooks and APIs are never asked
  for a token); the console checks every POST under ``/console`` before
  anything else. A form sends ``csrf_token``, a script ``X-CSRFToken``.
* :func:`audit`: every change made in the console leaves a row
  (``console_audit``) with who, the tenant, what, before and after.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import math
import secrets
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from flask import (
    Flask,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sansio.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException, NotFound

from bridge.console import bp, users
from bridge.console.i18n import language, register, t
from bridge.crypto import load_keys
from bridge.runtime import Runtime, app_runtime
from bridge.tables import ConsoleUser as UserRow
from bridge.tables import Tenant

__all__ = [
    "FAILURES_PER_ACCOUNT",
    "FAILURES_PER_ADDRESS",
    "FAILURE_WINDOW",
    "SESSION_LIFETIME",
    "ConsoleUser",
    "audit",
    "current_user",
    "init_app",
    "landing_url",
    "login_required",
    "selected_tenant",
    "sign_in",
    "sign_out",
    "tenant_or_404",
    "visible_tenant_ids",
]

SESSION_LIFETIME = dt.timedelta(hours=12)
FAILURES_PER_ACCOUNT = 5
#: higher than per account: several admins may sign in from one office address
FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW = 15 * 60
#: endpoints a visitor who is not signed in may use
PUBLIC = frozenset({"console.login", "console.login_totp", "console.static"})
#: POSTs a viewer may make (ending its own session)
ANY_ROLE_POSTS = frozenset({"console.logout"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_PREFIX = "bridge:console:"

csrf = CSRFProtect()

register(
    en={
        "console.title": "Console",
        "console.brand": "CRM bridge",
        "console.sign_out": "Sign out",
        "console.tenant": "Tenant",
        "console.all_tenants": "no tenant yet",
        "console.show": "Show",
        "console.language": "Language",
        "console.signed_in_as": "Signed in as {email} ({role})",
        "role.owner": "owner",
        "role.admin": "admin",
        "role.viewer": "viewer",
        "nav.overview": "Overview",
        "nav.channels": "Channels",
        "nav.mapping": "Mapping",
        "nav.conversations": "Conversations",
        "nav.kpis": "KPIs",
        "nav.audit": "Audit log",
        "nav.users": "Users",
        "error.400.title": "Bad request",
        "error.400.text": "The request cannot be handled.",
        "error.csrf": "CSRF token missing or invalid. Reload the page and try again.",
        "error.403.title": "Not allowed",
        "error.403.text": "Your role does not allow this. Ask an admin of your tenant.",
        "error.404.title": "Not found",
        "error.404.text": "There is no such page, or it is not yours to see.",
        "error.back": "Back to the console",
    },
    ru={
        "console.title": "Консоль",
        "console.brand": "CRM-мост",
        "console.sign_out": "Выйти",
        "console.tenant": "Клиент",
        "console.all_tenants": "клиентов пока нет",
        "console.show": "Показать",
        "console.language": "Язык",
        "console.signed_in_as": "Вы вошли как {email} ({role})",
        "role.owner": "владелец",
        "role.admin": "администратор",
        "role.viewer": "наблюдатель",
        "nav.overview": "Обзор",
        "nav.channels": "Каналы",
        "nav.mapping": "Сопоставление",
        "nav.conversations": "Диалоги",
        "nav.kpis": "Показатели",
        "nav.audit": "Журнал действий",
        "nav.users": "Пользователи",
        "error.400.title": "Неверный запрос",
        "error.400.text": "Запрос не может быть обработан.",
        "error.csrf": "CSRF-токен отсутствует или неверен. Обновите страницу и попробуйте снова.",
        "error.403.title": "Нет доступа",
        "error.403.text": "Ваша роль этого не позволяет. Обратитесь к администратору.",
        "error.404.title": "Не найдено",
        "error.404.text": "Такой страницы нет, или она вам недоступна.",
        "error.back": "Вернуться в консоль",
    },
)


@dataclasses.dataclass(frozen=True)
class ConsoleUser:
    """The signed-in user, as the pages see it."""

    id: int
    email: str
    role: str
    #: None only for the owner
    tenant_id: int | None
    language: str

    @property
    def is_owner(self) -> bool:
        return self.role == "owner"

    def may(self, role: str) -> bool:
        """Whether this user's role is ``role`` or above."""
        return users.rank(self.role) >= users.rank(role)


# -- the app's settings ------------------------------------------------------------------------


def _secret_key(rt: Runtime) -> tuple[str, list[str]]:
    """The session's signing key and its fallbacks, derived from the
    bridge's own keys (``BRIDGE_SECRET_KEYS``, or the development key kept
    in the data directory): the newest signs, older ones still verify."""
    keys = load_keys(rt.settings.secret_keys, rt.settings.var_dir)

    def derive(key: str) -> str:
        return hmac.new(key.encode(), b"bridge console session v1", hashlib.sha256).hexdigest()

    return derive(keys[0]), [derive(k) for k in keys[1:]]


def init_app(app: Flask) -> None:
    """The session and CSRF settings the console needs, on the app it is
    registered on. ``SECRET_KEY`` given in the app's config (``BRIDGE_FLASK_
    SECRET_KEY``) wins over the derived one; ``CONSOLE_SECURE_COOKIE``
    (``BRIDGE_FLASK_CONSOLE_SECURE_COOKIE=false|true``) over the default,
    which is a ``Secure`` cookie when ``BRIDGE_PUBLIC_URL`` is https."""
    rt: Runtime = app.extensions["bridge"]
    if not app.config.get("SECRET_KEY"):
        key, fallbacks = _secret_key(rt)
        app.config["SECRET_KEY"] = key
        app.config["SECRET_KEY_FALLBACKS"] = fallbacks
    secure = app.config.get("CONSOLE_SECURE_COOKIE")
    if secure is None:
        secure = rt.settings.public_url.startswith("https://")
    app.config.update(
        SESSION_COOKIE_SECURE=bool(secure),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # the console checks its own POSTs (_guard); nothing else is asked for a token
        WTF_CSRF_CHECK_DEFAULT=False,
        # valid as long as the session: a page left open an hour still submits
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf.init_app(app)


def _registered(state: BlueprintSetupState) -> None:
    assert isinstance(state.app, Flask)  # a Flask app registers it (not a Quart one)
    init_app(state.app)


bp.record(_registered)


# -- the session -----------------------------------------------------------------------------


def _runtime() -> Runtime:
    return app_runtime()


def _revoked_key(sid: str) -> str:
    return f"{_PREFIX}revoked:{sid}"


def _as_user(row: UserRow) -> ConsoleUser:
    return ConsoleUser(
        id=row.id, email=row.email, role=row.role, tenant_id=row.tenant_id, language=row.language
    )


def _session_user() -> ConsoleUser | None:
    """The user of this request's session: None when there is none, it
    was signed out, or the user is disabled or gone."""
    uid, sid = session.get("console_uid"), session.get("console_sid")
    if not isinstance(uid, int) or not isinstance(sid, str):
        return None
    rt = _runtime()
    if rt.redis.exists(_revoked_key(sid)):
        _forget()
        return None
    with rt.read_session() as s:
        row = s.get(UserRow, uid)
        if row is None or row.disabled or users.rank(row.role) < 0:
            _forget()
            return None
        return _as_user(row)


def _forget() -> None:
    """Drop everything but the language from the session."""
    lang = session.get("lang")
    session.clear()
    if lang in ("en", "ru"):
        session["lang"] = lang


def client_address() -> str:
    """The client's address (the connection's, or what the trusted proxies
    say: ``BRIDGE_TRUSTED_PROXIES``)."""
    return (request.remote_addr or "unknown")[:64]


def sign_in(user_id: int) -> None:
    """Start a console session for ``user_id`` (the password login, a CRM
    login): a fresh session (nothing of an earlier one kept but the
    language), its last sign-in time, an audit row. A disabled user is 403."""
    rt = _runtime()
    with rt.transaction() as s:
        row = s.get(UserRow, user_id)
        if row is None or row.disabled:
            abort(403)
        row.last_login_at = dt.datetime.now(dt.UTC)
        users.record(
            s,
            user_id=row.id,
            user_email=row.email,
            tenant_id=row.tenant_id,
            action="sign_in",
            target=f"user:{row.id} {row.email}",
            remote_addr=client_address(),
        )
        user = _as_user(row)
    _forget()
    session.permanent = True
    session["console_uid"] = user.id
    session["console_sid"] = secrets.token_urlsafe(18)
    g.console_user = user


def sign_out() -> None:
    """End this session (its id revoked for as long as the cookie could
    live) with an audit row."""
    user = g.get("console_user")
    sid = session.get("console_sid")
    rt = _runtime()
    if isinstance(sid, str):
        rt.redis.set(_revoked_key(sid), "1", ex=int(SESSION_LIFETIME.total_seconds()))
    if user is not None:
        with rt.transaction() as s:
            users.record(
                s,
                user_id=user.id,
                user_email=user.email,
                tenant_id=user.tenant_id,
                action="sign_out",
                target=f"user:{user.id} {user.email}",
                remote_addr=client_address(),
            )
    _forget()
    g.console_user = None


def current_user() -> ConsoleUser:
    """The signed-in user (inside a view :func:`login_required` guards)."""
    user: ConsoleUser | None = g.get("console_user")
    if user is None:
        raise RuntimeError("no console user is signed in (is the view guarded?)")
    return user


# -- failed sign-ins -------------------------------------------------------------------------


def _failure_keys(email: str, address: str) -> list[tuple[str, int]]:
    account = hashlib.sha256(users.normalise_email(email).encode()).hexdigest()[:32]
    return [
        (f"{_PREFIX}fail:account:{account}", FAILURES_PER_ACCOUNT),
        (f"{_PREFIX}fail:address:{address}", FAILURES_PER_ADDRESS),
    ]


def retry_after(email: str, address: str) -> int | None:
    """Seconds until this account or address may try again; None when it may now."""
    redis = _runtime().redis
    keys = _failure_keys(email, address)
    pipe = redis.pipeline()
    for key, _ in keys:
        pipe.get(key)
        pipe.ttl(key)
    answers = pipe.execute()
    waits = [
        max(int(answers[2 * i + 1]), 1)
        for i, (_, limit) in enumerate(keys)
        if int(answers[2 * i] or 0) >= limit
    ]
    return max(waits) if waits else None


def record_failure(email: str, address: str) -> None:
    """Count a failed sign-in for the account and the address (each count
    lives :data:`FAILURE_WINDOW` seconds from its first failure)."""
    pipe = _runtime().redis.pipeline()
    for key, _ in _failure_keys(email, address):
        pipe.set(key, 0, ex=FAILURE_WINDOW, nx=True)
        pipe.incr(key)
    pipe.execute()


def clear_failures(email: str) -> None:
    """The account signed in: its count starts again (the address's stays)."""
    key, _ = _failure_keys(email, "-")[0]
    _runtime().redis.delete(key)


def remember_totp_step(user_id: int, step: int) -> bool:
    """Whether the TOTP step was not used yet by this user (a code counts once)."""
    key = f"{_PREFIX}totp:{user_id}:{step}"
    return bool(_runtime().redis.set(key, "1", ex=180, nx=True))


def wants_json() -> bool:
    """The caller is a script (asks for JSON, or sends JSON / a CSRF header)."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" or request.is_json


# -- roles and tenants -----------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., ResponseReturnValue])


def _to_login() -> ResponseReturnValue:
    target = request.full_path if request.method in _SAFE else request.path
    return redirect(url_for("console.login", next=target.rstrip("?")))


@overload
def login_required(role: F) -> F: ...
@overload
def login_required(role: str = "viewer") -> Callable[[F], F]: ...
def login_required(role: str | F = "viewer") -> F | Callable[[F], F]:
    """A view for signed-in users of ``role`` or above: a visitor is sent
    to the login page, a lower role gets the 403 page. (Every POST needs an
    admin anyway.) ``@login_required`` alone means ``viewer``."""
    if callable(role):
        return login_required("viewer")(role)
    if role not in users.ROLES:
        raise ValueError(f"unknown console role {role!r}")
    needed = role

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            user: ConsoleUser | None = g.get("console_user")
            if user is None:
                return _to_login()
            if not user.may(needed):
                abort(403)
            return view(*args, **kwargs)

        return cast(F, guarded)

    return decorate


def visible_tenant_ids(session: Session) -> list[int]:
    """The tenants the signed-in user may see: every one for the owner,
    its own for the others."""
    user = current_user()
    if user.is_owner:
        return list(session.scalars(select(Tenant.id).order_by(Tenant.id)))
    return [user.tenant_id] if user.tenant_id is not None else []


def tenant_or_404(session: Session, tenant_id: int) -> Tenant:
    """The tenant, when the signed-in user may see it; 404 otherwise (the
    same answer as for a tenant that does not exist)."""
    user = current_user()
    if not user.is_owner and tenant_id != user.tenant_id:
        abort(404)
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        abort(404)
    return tenant


def _selected_id(session: Session) -> int | None:
    if "console_tenant" in g:
        return cast(int | None, g.console_tenant)
    raw = request.args.get("tenant", "").strip()
    chosen: int | None
    if raw:
        if not raw.isdigit() or len(raw) > 18:
            abort(404)
        chosen = tenant_or_404(session, int(raw)).id
    else:
        user = current_user()
        ids = [user.tenant_id] if user.tenant_id is not None else visible_tenant_ids(session)[:1]
        chosen = ids[0] if ids else None
    g.console_tenant = chosen
    return chosen


def selected_tenant(session: Session) -> Tenant | None:
    """The tenant a page is about: ``?tenant=<id>`` (404 when not visible),
    else the user's own, else (the owner) the first; None when there is none."""
    chosen = _selected_id(session)
    return None if chosen is None else session.get(Tenant, chosen)


_SELECTED: Any = object()


def audit(
    session: Session,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    *,
    tenant_id: int | None = _SELECTED,
) -> None:
    """One audit row in the caller's transaction: the signed-in user, the
    selected tenant (or ``tenant_id``), ``action`` on ``target``, the
    values ``before`` and ``after`` (JSON; never a secret), now, the client's address."""
    user = current_user()
    users.record(
        session,
        user_id=user.id,
        user_email=user.email,
        tenant_id=_selected_id(session) if tenant_id is _SELECTED else tenant_id,
        action=action,
        target=target,
        before=before,
        after=after,
        remote_addr=client_address(),
    )


def landing_url() -> str:
    """Where a signed-in user starts: the overview, else the users page."""
    if "console.overview" in current_app.view_functions:
        return url_for("console.overview")
    return url_for("console.users")


# -- every console request -------------------------------------------------------------------


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    """CSRF on every POST, a signed-in user on every page but the login,
    an admin for every POST but signing out."""
    if request.endpoint == "console.static":
        return None  # the stylesheet: no session read, no database
    g.console_user = _session_user()
    language()
    if request.method not in _SAFE:
        csrf.protect()
    if request.endpoint in PUBLIC:
        return None
    user: ConsoleUser | None = g.console_user
    if user is None:
        return _to_login()
    if (
        request.method not in _SAFE
        and request.endpoint not in ANY_ROLE_POSTS
        and not user.may("admin")
    ):
        abort(403)
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy", "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )
    if request.endpoint != "console.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _tenant_choices() -> tuple[list[tuple[int, str]], int | None]:
    """The tenants the selector offers (id, name) and the selected one."""
    user: ConsoleUser | None = g.get("console_user")
    if user is None:
        return [], None
    with _runtime().read_session() as s:
        try:
            chosen = _selected_id(s)
        except NotFound:
            chosen = None
        ids = visible_tenant_ids(s)
        rows = s.execute(select(Tenant.id, Tenant.slug, Tenant.name).where(Tenant.id.in_(ids)))
        return [(tid, name or slug) for tid, slug, name in rows], chosen


def _lang_url(lang: str) -> str:
    args = {**request.args.to_dict(), **(request.view_args or {}), "lang": lang}
    if request.endpoint is None or request.method not in _SAFE:
        return url_for("console.login", lang=lang)
    return url_for(request.endpoint, **args)


def _nav_url(endpoint: str, tenant: int | None) -> str:
    return url_for(endpoint, tenant=tenant) if tenant is not None else url_for(endpoint)


@bp.context_processor
def _template_context() -> dict[str, Any]:
    tenants, chosen = _tenant_choices()
    me = g.get("console_user")
    return {
        "home_url": landing_url() if me is not None else url_for("console.login"),
        "t": t,
        "lang": language(),
        "me": me,
        "console_endpoints": frozenset(current_app.view_functions),
        "tenant_choices": tenants,
        "tenant_id": chosen,
        "lang_url": _lang_url,
        "nav_url": _nav_url,
    }


# -- error pages -----------------------------------------------------------------------------


def error_page(code: int, title: str, text: str) -> tuple[Response | str, int]:
    """An error inside the console: the base layout's page, or JSON for a script."""
    if wants_json():
        return jsonify({"error": title, "message": text}), code
    return render_template("console/error.html", code=code, title=title, text=text), code


@bp.errorhandler(CSRFError)
def _csrf_error(_exc: HTTPException) -> tuple[Response | str, int]:
    if wants_json():
        return jsonify({"error": "csrf", "message": "CSRF token missing or invalid"}), 400
    return error_page(400, t("error.400.title"), t("error.csrf"))


@bp.errorhandler(400)
def _bad_request(_exc: HTTPException) -> tuple[Response | str, int]:
    return error_page(400, t("error.400.title"), t("error.400.text"))


@bp.errorhandler(403)
def _forbidden(_exc: HTTPException) -> tuple[Response | str, int]:
    return error_page(403, t("error.403.title"), t("error.403.text"))


@bp.errorhandler(404)
def _not_found(_exc: HTTPException) -> tuple[Response | str, int]:
    return error_page(404, t("error.404.title"), t("error.404.text"))


def minutes(seconds: int) -> int:
    return max(1, math.ceil(seconds / 60))
