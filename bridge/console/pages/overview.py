"""The overview: ``/console/`` and ``/console/overview`` (viewer and up).

One tenant at a time (the selector's ``?tenant=``; the owner may pick any):
the CRM's state (tokens valid or re-authorisation needed, and how), each
channel account's (connected, its poller or webhook, its latest client
message, whether it is silent: :mod:`bridge.silence`), the ingest journal's
lag, the queues, parked and failed work counted by reason, SLA sessions at
risk. The figures are :mod:`bridge.console.overview`'s; times are shown in
the tenant's zone (its service section's, else UTC).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import render_template, url_for
from flask.typing import ResponseReturnValue

from bridge.console import bp
from bridge.console import overview as figures
from bridge.console.auth import current_user, login_required, selected_tenant
from bridge.console.i18n import language, register, t
from bridge.console.kpis import seconds_text, tenant_zone
from bridge.model import utcnow
from bridge.runtime import app_runtime

__all__: list[str] = []

register(
    en={
        "overview.title": "Overview",
        "overview.heading": "Overview",
        "overview.no_tenant": "There is no tenant to show yet.",
        "overview.zone": "Times in {zone}.",
        "overview.mapping_error": "The tenant's mapping cannot be read: {error}",
        "overview.attention": "Needs attention",
        "overview.all_well": "Nothing needs attention.",
        "overview.banner.reauth": "The CRM refused the bridge's tokens: re-authorise it.",
        "overview.banner.silent": "{count} channel account(s) silent in working hours.",
        "overview.banner.parked": "{count} conversation(s) parked.",
        "overview.banner.failed": "{count} message(s) or follow-up(s) failed.",
        "overview.banner.at_risk": "{count} session(s) at SLA risk or breached.",
        "overview.banner.workers": "No worker is running: nothing is processed.",
        "overview.crm": "CRM",
        "overview.crm.account": "Account",
        "overview.crm.status": "Authorisation",
        "overview.crm.routes": "App webhook routes",
        "overview.crm.active": "tokens valid",
        "overview.crm.needs_reauth": "needs re-authorisation",
        "overview.crm.disabled": "paused by an admin",
        "overview.crm.reauth_link": "Re-authorise in {crm}",
        "overview.crm.reauth_admin": "An admin of the tenant can re-authorise it here.",
        "overview.crm.reauth_hint": "Install the bridge's app in {crm} again (its install"
        " link or the CRM's app page) with an admin account: the new tokens resume what waited.",
        "overview.channels": "Channel accounts",
        "overview.no_channels": "No channel account is connected yet.",
        "overview.col.account": "Account",
        "overview.col.connection": "Connection",
        "overview.col.receives": "Receives by",
        "overview.col.last": "Last client message",
        "overview.col.traffic": "Traffic and silence",
        "overview.auth.ok": "connected",
        "overview.auth.disconnected": "disconnected",
        "overview.auth.setup_pending": "CRM setup pending",
        "overview.auth.failing": "refused by the channel",
        "overview.auth.attention": "channel reports a problem",
        "overview.receive.webhook": "webhook",
        "overview.receive.polling": "polling",
        "overview.receive.unknown": "unknown",
        "overview.poller.polling": "poller running",
        "overview.poller.retrying": "poller retrying",
        "overview.poller.failing": "poller failing",
        "overview.poller.stopped": "no poller running",
        "overview.poller.unknown": "poller state unknown",
        "overview.never": "never",
        "overview.ago": "{age} ago",
        "overview.silent": "Silent for {quiet} of working time",
        "overview.usual": "usually {rate} per working hour",
        "overview.quiet_now": "quiet for {quiet} of working time",
        "overview.not_working": "outside working hours",
        "overview.low_traffic": "no steady traffic (median {rate} per working hour)",
        "overview.no_history": "too little history to judge",
        "overview.not_judged": "not watched",
        "overview.alert.pending": "supervisor alert being sent",
        "overview.alert.done": "supervisor alerted",
        "overview.alert.failed": "supervisor alert failed",
        "overview.pipeline": "Pipeline",
        "overview.journal_lag": "Journal lag",
        "overview.journal_lag.note": "oldest delivery not yet parsed",
        "overview.journal_new": "Deliveries waiting",
        "overview.rejected": "Rejected deliveries",
        "overview.workers": "Workers",
        "overview.workers.none": "none",
        "overview.queues": "Queues (all tenants)",
        "overview.queues.unknown": "Redis does not answer: the queues cannot be read.",
        "overview.col.queue": "Queue",
        "overview.col.queued": "Waiting",
        "overview.col.started": "Running",
        "overview.col.failed": "Failed",
        "overview.parked": "Parked conversations",
        "overview.failed": "Failed messages and follow-ups",
        "overview.col.work": "Work",
        "overview.col.reason": "Reason",
        "overview.col.count": "Count",
        "overview.none": "None.",
        "overview.backing_off": "{count} conversation(s) waiting to retry.",
        "overview.replay": "After fixing the cause: bridge replay --tenant {slug} --all",
        "overview.work.in": "to the CRM",
        "overview.work.out": "to the client",
        "overview.work.ack": "acknowledgement",
        "overview.work.report": "delivery report",
        "overview.work.service": "service layer",
        "overview.work.task": "CRM task",
        "overview.work.note": "CRM note",
        "overview.work.entity": "CRM deal update",
        "overview.work.notify": "supervisor message",
        "overview.service": "Service sessions at risk",
        "overview.col.conversation": "Conversation",
        "overview.col.session": "Session",
        "overview.col.line": "Line",
        "overview.col.owner": "Owner",
        "overview.col.due": "Due",
        "overview.breached": "breached",
        "overview.at_risk": "at risk",
        "overview.no_owner": "no owner yet",
        "overview.service_failed": "Service work failed",
    },
    ru={
        "overview.title": "Обзор",
        "overview.heading": "Обзор",
        "overview.no_tenant": "Пока нет клиента, которого можно показать.",
        "overview.zone": "Время: {zone}.",
        "overview.mapping_error": "Сопоставление клиента не читается: {error}",
        "overview.attention": "Требует внимания",
        "overview.all_well": "Всё в порядке.",
        "overview.banner.reauth": "CRM отвергла токены моста: нужна повторная авторизация.",
        "overview.banner.silent": "Каналов, молчащих в рабочее время: {count}.",
        "overview.banner.parked": "Приостановленных диалогов: {count}.",
        "overview.banner.failed": "Неудачных сообщений и уведомлений: {count}.",
        "overview.banner.at_risk": "Сессий под угрозой SLA или с нарушением: {count}.",
        "overview.banner.workers": "Ни один обработчик не запущен: ничего не обрабатывается.",
        "overview.crm": "CRM",
        "overview.crm.account": "Аккаунт",
        "overview.crm.status": "Авторизация",
        "overview.crm.routes": "Маршруты вебхуков приложения",
        "overview.crm.active": "токены действительны",
        "overview.crm.needs_reauth": "нужна повторная авторизация",
        "overview.crm.disabled": "приостановлен администратором",
        "overview.crm.reauth_link": "Авторизовать заново в {crm}",
        "overview.crm.reauth_admin": "Администратор клиента может авторизовать её здесь.",
        "overview.crm.reauth_hint": "Установите приложение моста в {crm} заново (по ссылке"
        " установки или со страницы приложения в CRM) под администратором: новые токены"
        " возобновят ожидающую работу.",
        "overview.channels": "Аккаунты каналов",
        "overview.no_channels": "Пока не подключено ни одного аккаунта канала.",
        "overview.col.account": "Аккаунт",
        "overview.col.connection": "Подключение",
        "overview.col.receives": "Получение",
        "overview.col.last": "Последнее сообщение клиента",
        "overview.col.traffic": "Трафик и тишина",
        "overview.auth.ok": "подключён",
        "overview.auth.disconnected": "отключён",
        "overview.auth.setup_pending": "ожидает настройки CRM",
        "overview.auth.failing": "канал отказывает",
        "overview.auth.attention": "канал сообщает о проблеме",
        "overview.receive.webhook": "вебхук",
        "overview.receive.polling": "опрос",
        "overview.receive.unknown": "неизвестно",
        "overview.poller.polling": "опрос идёт",
        "overview.poller.retrying": "опрос повторяется",
        "overview.poller.failing": "опрос не удаётся",
        "overview.poller.stopped": "опрос не запущен",
        "overview.poller.unknown": "состояние опроса неизвестно",
        "overview.never": "никогда",
        "overview.ago": "{age} назад",
        "overview.silent": "Тишина {quiet} рабочего времени",
        "overview.usual": "обычно {rate} в рабочий час",
        "overview.quiet_now": "тишина {quiet} рабочего времени",
        "overview.not_working": "нерабочее время",
        "overview.low_traffic": "нет постоянного трафика (медиана {rate} в рабочий час)",
        "overview.no_history": "слишком мало истории для оценки",
        "overview.not_judged": "не отслеживается",
        "overview.alert.pending": "оповещение руководителю отправляется",
        "overview.alert.done": "руководитель оповещён",
        "overview.alert.failed": "оповещение руководителю не удалось",
        "overview.pipeline": "Конвейер",
        "overview.journal_lag": "Задержка журнала",
        "overview.journal_lag.note": "самая старая неразобранная доставка",
        "overview.journal_new": "Доставок ждут разбора",
        "overview.rejected": "Отклонённые доставки",
        "overview.workers": "Обработчики",
        "overview.workers.none": "нет",
        "overview.queues": "Очереди (все клиенты)",
        "overview.queues.unknown": "Redis не отвечает: очереди прочитать нельзя.",
        "overview.col.queue": "Очередь",
        "overview.col.queued": "Ожидают",
        "overview.col.started": "Выполняются",
        "overview.col.failed": "С ошибкой",
        "overview.parked": "Приостановленные диалоги",
        "overview.failed": "Неудачные сообщения и уведомления",
        "overview.col.work": "Работа",
        "overview.col.reason": "Причина",
        "overview.col.count": "Количество",
        "overview.none": "Нет.",
        "overview.backing_off": "Диалогов, ожидающих повтора: {count}.",
        "overview.replay": "После устранения причины: bridge replay --tenant {slug} --all",
        "overview.work.in": "в CRM",
        "overview.work.out": "клиенту",
        "overview.work.ack": "подтверждение",
        "overview.work.report": "отчёт о доставке",
        "overview.work.service": "сервисный слой",
        "overview.work.task": "задача в CRM",
        "overview.work.note": "примечание в CRM",
        "overview.work.entity": "изменение сделки в CRM",
        "overview.work.notify": "сообщение руководителю",
        "overview.service": "Сессии под угрозой SLA",
        "overview.col.conversation": "Диалог",
        "overview.col.session": "Сессия",
        "overview.col.line": "Линия",
        "overview.col.owner": "Ответственный",
        "overview.col.due": "Срок",
        "overview.breached": "нарушен",
        "overview.at_risk": "под угрозой",
        "overview.no_owner": "пока не назначен",
        "overview.service_failed": "Неудачная работа сервисного слоя",
    },
)


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


@bp.route("/", endpoint="overview")
@bp.route("/overview", endpoint="overview")
@login_required("viewer")
def overview() -> ResponseReturnValue:
    """The selected tenant's health at a glance."""
    runtime = app_runtime()
    with runtime.read_session() as session:
        tenant = selected_tenant(session)
    if tenant is None:
        return render_template("console/overview.html", tenant=None, view=None)
    view = figures.build(runtime, tenant.id, now=utcnow())
    zone_name = tenant_zone(view.mapping)
    zone = _zone(zone_name)
    lang = language()

    def when(moment: dt.datetime | None) -> str:
        if moment is None:
            return t("overview.never")
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")

    def age(moment: dt.datetime | None) -> str:
        if moment is None:
            return ""
        return t("overview.ago", age=seconds_text((view.now - moment).total_seconds(), lang))

    def work(direction: str) -> str:
        word = t(f"overview.work.{direction}")
        return direction if word.startswith("overview.") else word

    reauth_url = None
    if view.crm.needs_reauth and view.crm.reinstall and current_user().may("admin"):
        reauth_url = url_for("oauth.install", crm=view.crm.kind, mapping=tenant.mapping)
    return render_template(
        "console/overview.html",
        tenant=tenant,
        view=view,
        zone=zone_name,
        when=when,
        age=age,
        work=work,
        seconds=lambda value: seconds_text(value, lang),
        rate=lambda value: "—" if value is None else f"{value:g}",
        reauth_url=reauth_url,
        may_admin=current_user().may("admin"),
    )
