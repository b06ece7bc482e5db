"""``/console/channels``: the tenant's channel accounts and its CRM.

* ``GET /console/channels`` (viewer): the accounts (channel, name, state,
  how they receive, the webhook URL with its key masked, each credential
  as "set" and at most its last four characters), the CRM's state, and the
  channels that can be connected.
* ``GET|POST /console/channels/connect/<kind>`` (admin): the connect form,
  drawn from the channel adapter's schema. ``action=test`` tests the typed
  values without storing anything (JSON for the page's script, the page
  again without it); ``action=connect`` stores the account as ``bridge
  <kind> connect`` does.
* ``POST /console/channels/<id>/test`` (admin): test a connected account.
* ``POST /console/channels/<id>/webhook`` (admin): the webhook URL with its
  key, shown once on the page (an audit row says who looked).
* ``GET|POST /console/channels/<id>/disconnect`` (admin): a confirmation,
  then ``bridge <kind> disconnect``.
* ``POST /console/channels/crm/reauthorize`` (admin) and
  ``POST /console/channels/crm/<crm>/install`` (owner): the OAuth install
  (``/oauth/<crm>/install``) started from here, with an audit row.

Every change leaves an audit row with the values before and after, secrets
masked. The logic is :mod:`bridge.console.connect`.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge.console import bp
from bridge.console import connect as logic
from bridge.console.auth import (
    audit,
    current_user,
    login_required,
    selected_tenant,
    wants_json,
)
from bridge.console.i18n import register, t
from bridge.errors import BridgeError
from bridge.model import ReceiveMode
from bridge.registry import UnknownAdapter, channel_class, crm_class
from bridge.runtime import Runtime, app_runtime
from bridge.tables import Tenant

__all__: list[str] = []

register(
    en={
        "channels.title": "Channels and CRMs",
        "channels.no_tenant": "There is no tenant to show.",
        "channels.read_only": "Your role can see the channels but not change them.",
        "channels.accounts": "Channel accounts",
        "channels.none": "No channel is connected yet.",
        "channels.col.channel": "Channel",
        "channels.col.name": "Name",
        "channels.col.account": "Account",
        "channels.col.state": "State",
        "channels.col.receives": "Receives by",
        "channels.col.webhook": "Webhook URL",
        "channels.col.credentials": "Credentials",
        "channels.state.active": "connected",
        "channels.state.disconnected": "disconnected",
        "channels.setup_pending": "waiting for the CRM setup",
        "channels.receives.webhook": "webhook",
        "channels.receives.polling": "polling",
        "channels.receives.hosted": "hosted by the bridge",
        "channels.no_webhook": "none needed",
        "channels.reveal": "Show with its key",
        "channels.revealed": (
            "The webhook URL of {name}, to paste into the channel's settings. "
            "Its last part is a secret key: keep it private."
        ),
        "channels.cred_unset": "not set",
        "channels.test": "Test connection",
        "channels.testing": "Testing…",
        "channels.disconnect": "Disconnect",
        "channels.check.ok": "The connection works: {detail}",
        "channels.check.refused": "The channel refused the credentials: {detail}",
        "channels.check.failed": "The channel refused: {detail}",
        "channels.check.unreachable": "The channel did not answer: {detail}",
        "channels.check.invalid": "The form is not complete: {detail}",
        "channels.check.unsupported": "This channel has no connection test.",
        "channels.check.error": "The test did not answer; try again.",
        "channels.connect_heading": "Connect a channel",
        "channels.connect_intro": "Choose a channel: its form asks for what that channel needs.",
        "channels.connect_title": "Connect {title}",
        "channels.fields_help": (
            "The fields and their descriptions come from the channel's adapter "
            "(the same as the bridge {kind} connect command's options)."
        ),
        "channels.name": "Name shown to reps (optional)",
        "channels.mode": "How messages arrive",
        "channels.mode.default": "the channel's default",
        "channels.mode.webhook": "webhook: the channel posts to the bridge",
        "channels.mode.polling": "polling: the worker fetches (no public URL needed)",
        "channels.required": "required",
        "channels.secret_note": "Stored encrypted; never shown again.",
        "channels.secret_again": "The secret fields were emptied: type them again.",
        "channels.connect": "Connect",
        "channels.back": "Back to the channels",
        "channels.connected": "{title} connected as channel account {id}.",
        "channels.not_connected": "Not connected: {detail}",
        "channels.disconnect_heading": "Disconnect {name}?",
        "channels.disconnect_text": (
            "The bridge stops receiving from this account: its webhook is removed at the "
            "channel and its credentials are deleted. Its conversations stay. Connecting it "
            "again needs the credentials again."
        ),
        "channels.disconnect_confirm": "Yes, disconnect",
        "channels.cancel": "Cancel",
        "channels.disconnected": "{name} disconnected.",
        "channels.disconnect_warning": "The channel did not remove its webhook: {detail}",
        "channels.crm": "CRM",
        "channels.crm_account": "CRM account",
        "channels.crm_status.active": "connected",
        "channels.crm_status.needs_reauth": "needs re-authorisation",
        "channels.crm_status.disabled": "disabled",
        "channels.reauthorize": "Re-authorise",
        "channels.reauthorize_help": (
            "Opens {crm}'s consent page. Afterwards the bridge stores the new tokens and "
            "resumes the work that waited for them."
        ),
        "channels.no_account_id": (
            "This tenant has no CRM account id on record (it was connected with a token): "
            "an OAuth install would make a new tenant, not renew this one."
        ),
        "channels.no_oauth": "OAuth is not available here: {detail}",
        "channels.crms": "CRMs",
        "channels.crms_intro": "Installing through OAuth makes a new tenant for the CRM account.",
        "channels.oauth_ready": "OAuth ready",
        "channels.install": "Install",
    },
    ru={
        "channels.title": "Каналы и CRM",
        "channels.no_tenant": "Нет клиента (тенанта) для показа.",
        "channels.read_only": "Ваша роль позволяет видеть каналы, но не менять их.",
        "channels.accounts": "Аккаунты каналов",
        "channels.none": "Ни один канал пока не подключён.",
        "channels.col.channel": "Канал",
        "channels.col.name": "Название",
        "channels.col.account": "Аккаунт",
        "channels.col.state": "Состояние",
        "channels.col.receives": "Приём",
        "channels.col.webhook": "URL вебхука",
        "channels.col.credentials": "Учётные данные",
        "channels.state.active": "подключён",
        "channels.state.disconnected": "отключён",
        "channels.setup_pending": "ждёт настройки CRM",
        "channels.receives.webhook": "вебхук",
        "channels.receives.polling": "опрос",
        "channels.receives.hosted": "на стороне моста",
        "channels.no_webhook": "не нужен",
        "channels.reveal": "Показать с ключом",
        "channels.revealed": (
            "URL вебхука для {name}: вставьте его в настройки канала. "
            "Последняя часть — секретный ключ: не показывайте его посторонним."
        ),
        "channels.cred_unset": "не задан",
        "channels.test": "Проверить подключение",
        "channels.testing": "Проверка…",
        "channels.disconnect": "Отключить",
        "channels.check.ok": "Подключение работает: {detail}",
        "channels.check.refused": "Канал отклонил учётные данные: {detail}",
        "channels.check.failed": "Канал отказал: {detail}",
        "channels.check.unreachable": "Канал не ответил: {detail}",
        "channels.check.invalid": "Форма заполнена не полностью: {detail}",
        "channels.check.unsupported": "Для этого канала проверки подключения нет.",
        "channels.check.error": "Проверка не ответила; попробуйте ещё раз.",
        "channels.connect_heading": "Подключить канал",
        "channels.connect_intro": "Выберите канал: его форма спросит то, что нужно этому каналу.",
        "channels.connect_title": "Подключить {title}",
        "channels.fields_help": (
            "Поля и их описания берутся из адаптера канала "
            "(те же, что у параметров команды bridge {kind} connect)."
        ),
        "channels.name": "Название для сотрудников (необязательно)",
        "channels.mode": "Как приходят сообщения",
        "channels.mode.default": "как принято у канала",
        "channels.mode.webhook": "вебхук: канал сам отправляет их мосту",
        "channels.mode.polling": "опрос: их забирает воркер (публичный URL не нужен)",
        "channels.required": "обязательно",
        "channels.secret_note": "Хранится в зашифрованном виде и больше не показывается.",
        "channels.secret_again": "Секретные поля очищены: введите их ещё раз.",
        "channels.connect": "Подключить",
        "channels.back": "Назад к каналам",
        "channels.connected": "{title} подключён как аккаунт канала {id}.",
        "channels.not_connected": "Не подключено: {detail}",
        "channels.disconnect_heading": "Отключить {name}?",
        "channels.disconnect_text": (
            "Мост перестанет получать сообщения этого аккаунта: его вебхук будет удалён в "
            "канале, учётные данные — стёрты. Диалоги останутся. Для повторного подключения "
            "понадобятся учётные данные."
        ),
        "channels.disconnect_confirm": "Да, отключить",
        "channels.cancel": "Отмена",
        "channels.disconnected": "{name} отключён.",
        "channels.disconnect_warning": "Канал не удалил свой вебхук: {detail}",
        "channels.crm": "CRM",
        "channels.crm_account": "Аккаунт CRM",
        "channels.crm_status.active": "подключена",
        "channels.crm_status.needs_reauth": "нужна повторная авторизация",
        "channels.crm_status.disabled": "отключена",
        "channels.reauthorize": "Авторизовать заново",
        "channels.reauthorize_help": (
            "Откроет страницу согласия {crm}. После неё мост сохранит новые токены и "
            "продолжит работу, которая их ждала."
        ),
        "channels.no_account_id": (
            "У этого тенанта не записан id аккаунта CRM (он подключён токеном): установка "
            "через OAuth создаст новый тенант, а не обновит этот."
        ),
        "channels.no_oauth": "OAuth здесь недоступен: {detail}",
        "channels.crms": "CRM",
        "channels.crms_intro": "Установка через OAuth создаёт новый тенант для аккаунта CRM.",
        "channels.oauth_ready": "OAuth готов",
        "channels.install": "Установить",
    },
)


def _runtime() -> Runtime:
    return app_runtime()


def _tenant_or_404(session: Any) -> Tenant:
    tenant = selected_tenant(session)
    if tenant is None:
        abort(404)
    return tenant


def _list_url(tenant_id: int) -> str:
    return url_for("console.channels", tenant=tenant_id)


def _kind_or_404(kind: str) -> str:
    try:
        channel_class(kind)
    except UnknownAdapter:
        abort(404)
    return kind


def check_words(check: logic.Check) -> str:
    """A connection test's outcome for a person, in the page's language."""
    return t(f"channels.check.{check.code}", detail=check.detail)


# -- the list ----------------------------------------------------------------------------------


def _list_page(revealed: tuple[int, str] | None = None) -> ResponseReturnValue:
    rt = _runtime()
    user = current_user()
    crms = logic.crm_choices(rt) if user.is_owner else []
    with rt.read_session() as session:
        tenant = selected_tenant(session)
        if tenant is None:
            return render_template("console/channels.html", tenant=None, crms=crms)
        session.expunge(tenant)
    return render_template(
        "console/channels.html",
        tenant=tenant,
        accounts=logic.accounts(rt, tenant.id),
        revealed=revealed,
        crm=logic.crm_view(rt, tenant),
        crms=crms,
        choices=logic.channel_choices(),
        can_change=user.may("admin"),
    )


@bp.get("/channels", endpoint="channels")
@login_required("viewer")
def channels_page() -> ResponseReturnValue:
    """The tenant's channel accounts and CRM."""
    return _list_page()


# -- connecting --------------------------------------------------------------------------------


def _form_page(
    tenant: Tenant,
    kind: str,
    *,
    values: dict[str, Any] | None = None,
    check: logic.Check | None = None,
    error: str | None = None,
    error_field: str | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    """The connect form; after a post, its non-secret values again (a
    secret is never sent back to the browser)."""
    cls = channel_class(kind)
    fields = logic.form_fields(kind)
    shown = {f.name: f.default for f in fields}
    if values is not None:
        shown.update(
            {
                f.name: ("" if f.secret else str(values.get(f.name, "")))
                for f in fields
                if f.name in values or f.input == "checkbox"
            }
        )
        for f in fields:
            if f.input == "checkbox":
                shown[f.name] = "true" if str(values.get(f.name)) == "true" else ""
    body = render_template(
        "console/channels_connect.html",
        tenant=tenant,
        kind=kind,
        title=cls.title,
        fields=fields,
        shown=shown,
        name=request.form.get("name", "") if values is not None else "",
        modes=[m.value for m in cls.modes] if len(cls.modes) > 1 else [],
        mode=request.form.get("mode", "") if values is not None else "",
        testable=logic.is_testable(cls),
        check=check,
        check_text=check_words(check) if check else None,
        error=error,
        error_field=error_field or (check.field if check else None),
        posted=values is not None,
    )
    return body, status


@bp.get("/channels/connect/<kind>")
@login_required("admin")
def channels_connect_form(kind: str) -> ResponseReturnValue:
    """The connect form of channel ``kind``."""
    _kind_or_404(kind)
    with _runtime().read_session() as session:
        tenant = _tenant_or_404(session)
        session.expunge(tenant)
    return _form_page(tenant, kind)


def _mode() -> ReceiveMode | None:
    raw = request.form.get("mode", "")
    try:
        return ReceiveMode(raw) if raw else None
    except ValueError:
        abort(400)


@bp.post("/channels/connect/<kind>")
@login_required("admin")
def channels_connect(kind: str) -> ResponseReturnValue:
    """Test (``action=test``) or store (``action=connect``) the form's account."""
    _kind_or_404(kind)
    rt = _runtime()
    with rt.read_session() as session:
        tenant = _tenant_or_404(session)
        session.expunge(tenant)
    values = logic.read_form(kind, request.form)
    if request.form.get("action") == "test":
        check = logic.check_values(rt, kind, values)
        if wants_json():
            return jsonify({**check.as_json(), "message": check_words(check)})
        return _form_page(tenant, kind, values=values, check=check)
    return _connect(rt, tenant, kind, values)


def _connect(rt: Runtime, tenant: Tenant, kind: str, values: dict[str, Any]) -> ResponseReturnValue:
    name = request.form.get("name", "").strip()[:200]
    mode = _mode()
    try:
        account_id = logic.connect(rt, tenant.id, kind, values, name=name, mode=mode)
    except logic.ConnectError as exc:
        return _form_page(
            tenant,
            kind,
            values=values,
            error=t("channels.not_connected", detail=exc.message),
            error_field=exc.field,
            status=422,
        )
    except ValueError as exc:  # connected already; a mode the channel lacks
        return _form_page(
            tenant,
            kind,
            values=values,
            error=t("channels.not_connected", detail=str(exc)),
            status=409,
        )
    except BridgeError as exc:  # the channel or the CRM refused (nothing was kept)
        words = check_words(logic.refusal(exc))
        return _form_page(
            tenant,
            kind,
            values=values,
            error=t("channels.not_connected", detail=words),
            status=502,
        )
    view = logic.account_of(rt, tenant.id, account_id)
    with rt.transaction() as session:
        audit(
            session,
            "channels.connect",
            f"channel:{account_id} {kind}",
            before=None,
            after={
                "kind": kind,
                "name": view.name,
                "external_id": view.external_id,
                "receives": view.receives,
                "values": logic.audit_values(kind, values),
                "credentials": dict(view.credentials),
            },
        )
    flash(t("channels.connected", title=view.title, id=account_id), "ok")
    return redirect(_list_url(tenant.id), code=303)


# -- one account -------------------------------------------------------------------------------


def _own_account(rt: Runtime, account_id: int) -> tuple[Tenant, logic.AccountView]:
    with rt.read_session() as session:
        tenant = _tenant_or_404(session)
        session.expunge(tenant)
    try:
        return tenant, logic.account_of(rt, tenant.id, account_id)
    except LookupError:
        abort(404)


@bp.post("/channels/<int:account_id>/test")
@login_required("admin")
def channels_test(account_id: int) -> ResponseReturnValue:
    """Test a connected account with its stored credentials."""
    rt = _runtime()
    tenant, view = _own_account(rt, account_id)
    try:
        check = logic.check_account(rt, tenant.id, account_id)
    except LookupError:
        abort(404)
    words = check_words(check)
    if wants_json():
        return jsonify({**check.as_json(), "message": words})
    flash(f"{view.title} · {view.name}: {words}", "ok" if check.ok else "error")
    return redirect(_list_url(tenant.id), code=303)


@bp.post("/channels/<int:account_id>/webhook")
@login_required("admin")
def channels_reveal(account_id: int) -> ResponseReturnValue:
    """The account's webhook URL with its key, on the page (not kept in
    the session: a reload shows it masked again)."""
    rt = _runtime()
    tenant, view = _own_account(rt, account_id)
    url = logic.revealed_url(rt, tenant.id, account_id) if view.has_key else None
    if url is None:
        abort(404)
    with rt.transaction() as session:
        audit(session, "channels.reveal_webhook", f"channel:{account_id} {view.kind}")
    return _list_page(revealed=(account_id, url))


@bp.route("/channels/<int:account_id>/disconnect", methods=["GET", "POST"])
@login_required("admin")
def channels_disconnect(account_id: int) -> ResponseReturnValue:
    """GET: the confirmation; POST: disconnect."""
    rt = _runtime()
    tenant, view = _own_account(rt, account_id)
    if not view.active:
        abort(404)
    if request.method == "GET":
        return render_template("console/channels_disconnect.html", tenant=tenant, account=view)
    try:
        problems = logic.disconnect(rt, tenant.id, account_id)
    except LookupError:
        abort(404)
    after = logic.account_of(rt, tenant.id, account_id)
    with rt.transaction() as session:
        audit(
            session,
            "channels.disconnect",
            f"channel:{account_id} {view.kind}",
            before={"status": view.status, "credentials": dict(view.credentials)},
            after={
                "status": after.status,
                "credentials": dict(after.credentials),
                "problems": problems,
            },
        )
    flash(t("channels.disconnected", name=view.name or view.title), "ok")
    for problem in problems:
        flash(t("channels.disconnect_warning", detail=problem), "error")
    return redirect(_list_url(tenant.id), code=303)


# -- the CRM -----------------------------------------------------------------------------------


@bp.post("/channels/crm/reauthorize")
@login_required("admin")
def channels_reauthorize() -> ResponseReturnValue:
    """Start the OAuth install for the tenant's own CRM account: its
    callback renews this tenant's tokens (the same account id)."""
    rt = _runtime()
    with rt.transaction() as session:
        tenant = _tenant_or_404(session)
        crm = logic.crm_view(rt, tenant)
        if not crm.oauth or not crm.account:
            abort(404)
        audit(
            session,
            "crm.reauthorize",
            f"tenant:{tenant.id} {tenant.crm_kind}",
            before={"status": tenant.status, "reason": tenant.status_reason},
            after={"oauth": "started"},
        )
        target = url_for("oauth.install", crm=tenant.crm_kind, mapping=tenant.mapping)
    return redirect(target, code=303)


@bp.post("/channels/crm/<crm>/install")
@login_required("owner")
def channels_install(crm: str) -> ResponseReturnValue:
    """Start an OAuth install of ``crm`` (a new tenant for the account the
    CRM admin picks)."""
    rt = _runtime()
    try:
        crm_class(crm)
    except UnknownAdapter:
        abort(404)
    choice = next((c for c in logic.crm_choices(rt) if c.kind == crm), None)
    if choice is None or not choice.oauth:
        abort(404)
    with rt.transaction() as session:
        audit(session, "crm.install", f"crm:{crm}", after={"oauth": "started"}, tenant_id=None)
    return redirect(url_for("oauth.install", crm=crm), code=303)
