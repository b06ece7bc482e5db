"""Signing in and out, the console's users and its audit log.

* ``/console/login``: e-mail and password; a user with a second factor
  then gives the TOTP code (``/console/login/totp``, within five minutes).
  Failures count per account and per address (:mod:`bridge.console.auth`);
  past the limit the page answers 429 with when to retry.
* ``POST /console/logout``: ends the session.
* ``/console/users``: the selected tenant's users (the owner also sees the
  owners); an admin adds users to its tenant and disables or enables them,
  each change in the audit log.
* ``/console/audit``: the tenant's audit rows, newest first, 50 a page.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from flask import flash, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, or_, select
from werkzeug.exceptions import abort

from bridge.console import auth, bp, users
from bridge.console.auth import current_user, login_required, selected_tenant
from bridge.console.i18n import register, t
from bridge.runtime import Runtime, app_runtime
from bridge.tables import ConsoleAudit, ConsoleUser, Tenant

__all__: list[str] = []

#: seconds between the password and the TOTP code
PENDING_S = 300
AUDIT_PAGE = 50

register(
    en={
        "login.title": "Sign in",
        "login.heading": "Sign in to the console",
        "login.email": "E-mail",
        "login.password": "Password",
        "login.submit": "Sign in",
        "login.failed": "Wrong e-mail or password.",
        "login.too_many": "Too many failed sign-ins. Try again in {minutes} min.",
        "login.hint": "No account yet? The owner adds one: bridge admin create-user.",
        "totp.title": "Second factor",
        "totp.heading": "Enter the code from your authenticator app",
        "totp.code": "6-digit code",
        "totp.submit": "Confirm",
        "totp.failed": "That code is wrong or was used already.",
        "totp.expired": "Too slow: sign in again.",
        "totp.back": "Start again",
        "users.title": "Users",
        "users.heading": "Console users",
        "users.none": "No users here yet.",
        "users.email": "E-mail",
        "users.role": "Role",
        "users.tenant": "Tenant",
        "users.language": "Language",
        "users.last_login": "Last sign-in",
        "users.never": "never",
        "users.state": "State",
        "users.active": "active",
        "users.disabled": "disabled",
        "users.totp_on": "2FA",
        "users.you": "you",
        "users.disable": "Disable",
        "users.enable": "Enable",
        "users.add": "Add a user",
        "users.password": "Password (at least {n} characters)",
        "users.create": "Add",
        "users.created": "User {email} added.",
        "users.disabled_now": "User {email} disabled.",
        "users.enabled_now": "User {email} enabled.",
        "users.no_tenant": "Create a tenant first (bridge tenant create).",
        "users.read_only": "Only an admin can add or change users.",
        "users.error.email": "That is not an e-mail address.",
        "users.error.role": "Unknown role.",
        "users.error.owner_tenant": "An owner belongs to no tenant.",
        "users.error.tenant": "This role needs a tenant.",
        "users.error.password": "The password needs at least {n} characters.",
        "users.error.lang": "Unknown language.",
        "users.error.exists": "A user with this e-mail exists already.",
        "users.error.self": "You cannot disable yourself.",
        "audit.title": "Audit log",
        "audit.heading": "Audit log",
        "audit.none": "Nothing recorded yet.",
        "audit.at": "When (UTC)",
        "audit.who": "Who",
        "audit.action": "Action",
        "audit.object": "Object",
        "audit.before": "Before",
        "audit.after": "After",
        "audit.address": "Address",
        "audit.newer": "Newer",
        "audit.older": "Older",
        "audit.page": "Page {n}",
    },
    ru={
        "login.title": "Вход",
        "login.heading": "Вход в консоль",
        "login.email": "Эл. почта",
        "login.password": "Пароль",
        "login.submit": "Войти",
        "login.failed": "Неверная почта или пароль.",
        "login.too_many": "Слишком много неудачных попыток. Попробуйте через {minutes} мин.",
        "login.hint": "Нет учётной записи? Её добавляет владелец: bridge admin create-user.",
        "totp.title": "Второй фактор",
        "totp.heading": "Введите код из приложения-аутентификатора",
        "totp.code": "Код из 6 цифр",
        "totp.submit": "Подтвердить",
        "totp.failed": "Код неверен или уже использован.",
        "totp.expired": "Время вышло: войдите снова.",
        "totp.back": "Начать заново",
        "users.title": "Пользователи",
        "users.heading": "Пользователи консоли",
        "users.none": "Пользователей пока нет.",
        "users.email": "Эл. почта",
        "users.role": "Роль",
        "users.tenant": "Клиент",
        "users.language": "Язык",
        "users.last_login": "Последний вход",
        "users.never": "никогда",
        "users.state": "Состояние",
        "users.active": "активен",
        "users.disabled": "отключён",
        "users.totp_on": "2FA",
        "users.you": "вы",
        "users.disable": "Отключить",
        "users.enable": "Включить",
        "users.add": "Добавить пользователя",
        "users.password": "Пароль (не короче {n} символов)",
        "users.create": "Добавить",
        "users.created": "Пользователь {email} добавлен.",
        "users.disabled_now": "Пользователь {email} отключён.",
        "users.enabled_now": "Пользователь {email} включён.",
        "users.no_tenant": "Сначала создайте клиента (bridge tenant create).",
        "users.read_only": "Менять пользователей может только администратор.",
        "users.error.email": "Это не адрес эл. почты.",
        "users.error.role": "Неизвестная роль.",
        "users.error.owner_tenant": "Владелец не принадлежит ни одному клиенту.",
        "users.error.tenant": "Для этой роли нужен клиент.",
        "users.error.password": "Пароль должен быть не короче {n} символов.",
        "users.error.lang": "Неизвестный язык.",
        "users.error.exists": "Пользователь с такой почтой уже есть.",
        "users.error.self": "Нельзя отключить самого себя.",
        "audit.title": "Журнал действий",
        "audit.heading": "Журнал действий",
        "audit.none": "Пока ничего не записано.",
        "audit.at": "Когда (UTC)",
        "audit.who": "Кто",
        "audit.action": "Действие",
        "audit.object": "Объект",
        "audit.before": "Было",
        "audit.after": "Стало",
        "audit.address": "Адрес",
        "audit.newer": "Новее",
        "audit.older": "Старше",
        "audit.page": "Страница {n}",
    },
)


def _runtime() -> Runtime:
    return app_runtime()


def _next_url() -> str | None:
    """Where to go after signing in: a console path given as ``next``."""
    raw = request.values.get("next", "")
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not raw.startswith("/console/") or "\\" in raw:
        return None
    if raw.startswith(url_for("console.login")):
        return None
    return raw


# -- signing in ------------------------------------------------------------------------------


def _too_many(wait: int) -> ResponseReturnValue:
    message = t("login.too_many", minutes=auth.minutes(wait))
    if auth.wants_json():
        body: Any = {"error": "too_many_attempts", "message": message, "retry_after": wait}
    else:
        body = render_template("console/login.html", error=message, next=_next_url())
    return body, 429, {"Retry-After": str(wait)}


def _login_failed(email: str, address: str, template: str, error: str) -> ResponseReturnValue:
    auth.record_failure(email, address)
    return render_template(template, error=error, next=_next_url(), email=email), 401


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """The login form; its POST checks the password (then, for a user
    with a second factor, asks for the code)."""
    if request.method == "GET":
        if g.get("console_user") is not None:
            return redirect(_next_url() or auth.landing_url())
        return render_template("console/login.html", next=_next_url())
    email = users.normalise_email(request.form.get("email", ""))[:320]
    password = request.form.get("password", "")[: users.MAX_PASSWORD]
    address = auth.client_address()
    wait = auth.retry_after(email, address)
    if wait is not None:
        return _too_many(wait)
    with _runtime().transaction() as s:
        user = users.user_by_email(s, email) if email else None
        ok = users.check_password(user, password) and user is not None and not user.disabled
        uid, has_totp = (user.id, user.totp_secret is not None) if user is not None else (0, False)
    if not ok:
        return _login_failed(email, address, "console/login.html", t("login.failed"))
    if has_totp:
        session["console_pending"] = {"uid": uid, "at": time.time(), "email": email}
        return redirect(url_for("console.login_totp", next=_next_url()))
    auth.clear_failures(email)
    auth.sign_in(uid)
    return redirect(_next_url() or auth.landing_url())


@bp.route("/login/totp", methods=["GET", "POST"])
def login_totp() -> ResponseReturnValue:
    """The second step for a user with a TOTP secret."""
    pending = session.get("console_pending")
    if not isinstance(pending, dict) or time.time() - float(pending.get("at", 0)) > PENDING_S:
        session.pop("console_pending", None)
        if request.method == "POST":
            flash(t("totp.expired"), "error")
        return redirect(url_for("console.login", next=_next_url()))
    if request.method == "GET":
        return render_template("console/totp.html", next=_next_url())
    email, address = str(pending.get("email", "")), auth.client_address()
    wait = auth.retry_after(email, address)
    if wait is not None:
        session.pop("console_pending", None)
        return _too_many(wait)
    rt = _runtime()
    with rt.read_session() as s:
        user = s.get(ConsoleUser, int(pending["uid"]))
        check = users.totp_check(rt, user, request.form.get("code", "")[:16]) if user else None
    if check is None or not auth.remember_totp_step(int(pending["uid"]), check.step):
        return _login_failed(email, address, "console/totp.html", t("totp.failed"))
    session.pop("console_pending", None)
    auth.clear_failures(email)
    auth.sign_in(int(pending["uid"]))
    return redirect(_next_url() or auth.landing_url())


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session (any role)."""
    auth.sign_out()
    return redirect(url_for("console.login"))


# -- users -----------------------------------------------------------------------------------


def _users_query(tenant: Tenant | None) -> Any:
    me = current_user()
    shown = []
    if tenant is not None:
        shown.append(ConsoleUser.tenant_id == tenant.id)
    if me.is_owner:
        shown.append(ConsoleUser.tenant_id.is_(None))
    return select(ConsoleUser).where(or_(*shown)).order_by(ConsoleUser.email) if shown else None


def _users_page(status: int = 200, error: str | None = None) -> ResponseReturnValue:
    with _runtime().read_session() as s:
        tenant = selected_tenant(s)
        query = _users_query(tenant)
        rows = list(s.scalars(query)) if query is not None else []
        names = {tid: name for tid, name in s.execute(select(Tenant.id, Tenant.name))}
        page = render_template(
            "console/users.html",
            users=rows,
            tenant=tenant,
            tenant_names=names,
            roles=[r for r in users.ROLES if r != "owner" or current_user().is_owner],
            languages=users.LANGUAGES,
            min_password=users.MIN_PASSWORD,
            error=error,
            form=request.form if request.method == "POST" else {},
        )
    return page, status


def _error_text(exc: users.UserError) -> str:
    if exc.code == "no_tenant":
        return t("users.no_tenant")
    return t(f"users.error.{exc.code}", n=users.MIN_PASSWORD)


def _users_url() -> str:
    tenant = request.args.get("tenant")
    return url_for("console.users", tenant=tenant) if tenant else url_for("console.users")


@bp.get("/users", endpoint="users")
@login_required("viewer")
def users_page() -> ResponseReturnValue:
    """The selected tenant's users (a viewer sees them without the forms)."""
    return _users_page()


@bp.post("/users")
@login_required("admin")
def users_create() -> ResponseReturnValue:
    """Add a user to the selected tenant (an owner: to no tenant)."""
    me = current_user()
    role = request.form.get("role", "")
    if role == "owner" and not me.is_owner:
        abort(403)
    language = request.form.get("language", "en")
    error: str | None = None
    with _runtime().transaction() as s:
        tenant = selected_tenant(s)
        try:
            if tenant is None and role != "owner":
                raise users.UserError("no tenant", "no_tenant")
            user = users.create_user(
                s,
                email=request.form.get("email", "")[:400],
                password=request.form.get("password", "")[: users.MAX_PASSWORD + 1],
                role=role,
                tenant_id=tenant.id if tenant is not None and role != "owner" else None,
                language=language,
            )
        except users.UserError as exc:
            error = _error_text(exc)
        else:
            auth.audit(
                s,
                "user.create",
                f"user:{user.id} {user.email}",
                before=None,
                after=users.user_view(user),
                tenant_id=user.tenant_id,
            )
            email = user.email
    if error is not None:
        return _users_page(400, error)
    flash(t("users.created", email=email), "ok")
    return redirect(_users_url())


def _set_disabled(user_id: int, disabled: bool) -> ResponseReturnValue:
    me = current_user()
    if user_id == me.id:
        return _users_page(400, t("users.error.self"))
    with _runtime().transaction() as s:
        user = s.get(ConsoleUser, user_id)
        if user is None or not (me.is_owner or user.tenant_id == me.tenant_id):
            abort(404)
        before, after = users.set_disabled(user, disabled)
        auth.audit(
            s,
            "user.disable" if disabled else "user.enable",
            f"user:{user.id} {user.email}",
            before=before,
            after=after,
            tenant_id=user.tenant_id,
        )
        email = user.email
    flash(t("users.disabled_now" if disabled else "users.enabled_now", email=email), "ok")
    return redirect(_users_url())


@bp.post("/users/<int:user_id>/disable")
@login_required("admin")
def users_disable(user_id: int) -> ResponseReturnValue:
    """Disable a user of the admin's tenant: its sessions end at once."""
    return _set_disabled(user_id, True)


@bp.post("/users/<int:user_id>/enable")
@login_required("admin")
def users_enable(user_id: int) -> ResponseReturnValue:
    """Enable a disabled user again."""
    return _set_disabled(user_id, False)


# -- the audit log ---------------------------------------------------------------------------


@bp.get("/audit")
@login_required("viewer")
def audit() -> ResponseReturnValue:
    """The selected tenant's audit rows, newest first (the owner also sees
    the rows of no tenant: owners' sign-ins, the command line's)."""
    raw_page = request.args.get("page", "1")
    page = int(raw_page) if raw_page.isdigit() and 0 < int(raw_page) < 100_000 else 1
    me = current_user()
    with _runtime().read_session() as s:
        tenant = selected_tenant(s)
        shown = []
        if tenant is not None:
            shown.append(ConsoleAudit.tenant_id == tenant.id)
        if me.is_owner:
            shown.append(ConsoleAudit.tenant_id.is_(None))
        rows: list[ConsoleAudit] = []
        total = 0
        if shown:
            where = or_(*shown)
            total = s.scalar(select(func.count()).select_from(ConsoleAudit).where(where)) or 0
            rows = list(
                s.scalars(
                    select(ConsoleAudit)
                    .where(where)
                    .order_by(ConsoleAudit.id.desc())
                    .offset((page - 1) * AUDIT_PAGE)
                    .limit(AUDIT_PAGE)
                )
            )
        return render_template(
            "console/audit.html",
            rows=rows,
            page=page,
            more=page * AUDIT_PAGE < total,
            tenant=tenant,
        )


@bp.get("/<path:_unknown>")
def not_found(_unknown: str) -> ResponseReturnValue:
    """Any other console address: the console's 404 page (after sign-in)."""
    abort(404)
