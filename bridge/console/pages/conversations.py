"""The Conversations page: the selected tenant's conversations and each
message's trace (:mod:`bridge.console.trace`).

* ``/console/conversations``: search by contact, channel, status and days;
  50 a page.
* ``/console/conversations/<id>``: one conversation, its messages in order
  both ways with their statuses.
* ``/console/conversations/<id>/messages/<id>``: a message's trace, from
  the channel's delivery to the CRM and back.
* ``/console/conversations/journal``: the journal's rows no message came
  from (rejected, ignored); ``/console/conversations/journal/<id>``: one row.

Viewers read; an admin acts (POST, CSRF, an audit row each):

* ``.../messages/<id>/replay`` and ``/console/conversations/<id>/replay``:
  ``bridge replay`` of a failed message, or of a conversation (its failures,
  or its parked work resumed) — :func:`bridge.admin.replay`.
* ``/console/conversations/journal/<id>/reparse``: ``bridge reparse`` of one
  rejected or ignored row — :func:`bridge.pipeline.inbound.journal.reparse`,
  the normaliser run here and now.

Another tenant's conversation, message or journal row is a 404.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from bridge import admin
from bridge.console import bp, trace
from bridge.console.auth import audit, current_user, login_required, selected_tenant
from bridge.console.i18n import register, t
from bridge.pipeline.inbound import journal
from bridge.runtime import Runtime, app_runtime
from bridge.tables import Delivery, DeliveryState, Message, Outbox, Tenant

__all__: list[str] = []

log = logging.getLogger(__name__)

register(
    en={
        "conv.title": "Conversations",
        "conv.heading": "Conversations",
        "conv.no_tenant": "There is no tenant to show yet.",
        "conv.contact": "Contact",
        "conv.contact_hint": "name, phone, e-mail, CRM contact id, a handle, #ticket",
        "conv.channel": "Channel",
        "conv.status": "Status",
        "conv.any": "any",
        "conv.from": "From (UTC)",
        "conv.to": "To (UTC)",
        "conv.search": "Search",
        "conv.reset": "Reset",
        "conv.bad_date": "Not a date (YYYY-MM-DD), left out: {value}",
        "conv.col.contact": "Contact",
        "conv.col.channel": "Channel",
        "conv.col.status": "Status",
        "conv.col.crm": "In the CRM",
        "conv.col.messages": "Messages",
        "conv.col.last": "Last activity (UTC)",
        "conv.none": "No conversation matches.",
        "conv.unnamed": "(no name)",
        "conv.page": "Page {n}",
        "conv.newer": "Newer",
        "conv.older": "Older",
        "conv.journal_link": "Ingest journal: {rejected} rejected, {ignored} ignored deliveries",
        "state.open": "open",
        "state.closed": "closed",
        "state.parked": "parked",
        "state.failed": "failed",
        "msg.pending": "waiting",
        "msg.in_flight": "in progress",
        "msg.synced": "in the CRM",
        "msg.sent": "sent",
        "msg.failed": "failed",
        "msg.refused": "refused",
        "msg.skipped": "skipped",
        "delivery.sent": "sent",
        "delivery.delivered": "delivered",
        "delivery.read": "read",
        "followup.pending": "due",
        "followup.done": "done",
        "followup.failed": "failed",
        "outbox.idle": "nothing waiting",
        "outbox.pending": "queued",
        "outbox.parked": "parked",
        "journal.new": "new",
        "journal.normalised": "parsed",
        "journal.rejected": "rejected",
        "journal.ignored": "ignored",
        "dir.in": "in",
        "dir.out": "out",
        "dir.ack": "acknowledgement",
        "dir.report": "delivery report",
        "work.in": "sync to the CRM",
        "work.out": "delivery to the channel",
        "work.ack": "acknowledgements to the channel",
        "work.report": "delivery reports to the CRM",
        "work.service": "the service layer",
        "endpoint.webhook": "webhook: POST /webhooks/{kind}/… (the account's secret path)",
        "endpoint.polling": "fetched by the worker's poller",
        "endpoint.hosted": "the bridge's own chat API",
        "endpoint.unknown": "a channel this bridge no longer has",
        "origin.crm": "a reply from the CRM",
        "origin.bridge": "the bridge (acknowledgement, menu, notice)",
        "origin.cascade": "a cascade",
        "origin.copy": "a copy of a reply sent on another channel",
        "conv.page_title": "Conversation {id}",
        "conv.back": "All conversations",
        "conv.uid": "Public id",
        "conv.thread": "Thread id on the channel",
        "conv.ticket": "Ticket",
        "conv.account": "Channel account",
        "conv.handles": "Handles",
        "conv.verified": "verified",
        "conv.unverified": "unverified",
        "conv.crm_contact": "CRM contact",
        "conv.crm_entity": "CRM deal / lead / ticket",
        "conv.crm_task": "CRM task",
        "conv.crm_thread": "CRM chat",
        "conv.creating": "being written (may exist already)",
        "conv.not_yet": "not yet",
        "conv.work": "Work",
        "conv.col.direction": "Work",
        "conv.col.state": "State",
        "conv.col.reason": "Reason",
        "conv.col.job": "Job",
        "conv.col.since": "Queued at",
        "conv.actions": "The service layer's CRM writes",
        "conv.col.kind": "Kind",
        "conv.col.key": "Key",
        "conv.col.error": "Error",
        "conv.messages": "Messages",
        "conv.earlier": "Earlier messages",
        "conv.latest": "Latest messages",
        "conv.col.seq": "#",
        "conv.col.dir": "Dir.",
        "conv.col.at": "Sent (UTC)",
        "conv.col.text": "Message",
        "conv.col.followup": "Follow-up",
        "conv.col.trace": "Trace",
        "conv.trace": "trace",
        "conv.no_messages": "No messages.",
        "conv.attempts": "attempts: {n}",
        "conv.replay": "Replay",
        "conv.replay_all": "Replay this conversation",
        "conv.replay_hint": "Puts its failed messages and follow-ups back in the queue, or resumes"
        " its parked work (bridge replay).",
        "conv.replayed": "Requeued: {n} message(s) and follow-up(s).",
        "conv.resumed": "The conversation's work was resumed.",
        "conv.nothing": "Nothing to replay here.",
        "conv.read_only": "Only an admin can replay or reparse.",
        "trace.title": "Trace of message {uid}",
        "trace.heading": "Trace of a message",
        "trace.back": "Back to the conversation",
        "trace.received": "Received",
        "trace.journaled": "Journaled",
        "trace.normalised": "Normalised",
        "trace.crm": "Written to the CRM",
        "trace.replies": "Replies and their delivery",
        "trace.from_crm": "Received from the CRM",
        "trace.delivered": "Sent to the channel",
        "trace.reported": "Delivery report to the CRM",
        "trace.answers": "In answer to",
        "trace.journal_row": "Journal row",
        "trace.received_at": "Received at (UTC)",
        "trace.account": "Channel account",
        "trace.endpoint": "Received through",
        "trace.delivery_key": "Delivery key",
        "trace.found_parsed": "its kept body parses to this message",
        "trace.found_key": "found by its delivery key (its body was dropped by retention)",
        "trace.not_found": "No journal row found for this message (stored without the"
        " journal, or its row's body was dropped by retention).",
        "trace.candidates": "Rows parsed with it whose bodies are gone: {ids}",
        "trace.state": "State",
        "trace.normalised_at": "Parsed at (UTC)",
        "trace.lag": "Parsed after",
        "trace.attempts": "Attempts",
        "trace.reason": "Reason",
        "trace.detail": "Detail",
        "trace.body": "Raw body",
        "trace.body_kept": "kept, {n} bytes",
        "trace.body_dropped": "dropped by retention",
        "trace.message_id": "Bridge message id",
        "trace.seq": "Sequence in the conversation",
        "trace.key": "Channel key",
        "trace.provider_id": "Provider's message id",
        "trace.kind": "Kind",
        "trace.sent_at": "Sent at (provider, UTC)",
        "trace.stored_at": "Stored at (UTC)",
        "trace.text": "Text",
        "trace.attachments": "Attachments",
        "trace.sender": "Sender",
        "trace.flags": "Flags",
        "trace.status": "Status",
        "trace.last_error": "Last error",
        "trace.updated_at": "Last change (UTC)",
        "trace.entries": "Timeline entries written",
        "trace.no_entries": "none yet",
        "trace.outbox": "Outbox: {direction}",
        "trace.ack": "Acknowledgement to the channel",
        "trace.no_replies": "No reply yet.",
        "trace.crm_message": "CRM message id",
        "trace.author": "Author",
        "trace.origin": "Made by",
        "trace.channel_ids": "Channel's message ids",
        "trace.delivery": "Delivery reported by the channel",
        "trace.report": "Report to the CRM",
        "trace.calls": "CRM calls while it was written",
        "trace.call_at": "At (UTC)",
        "trace.call": "Request",
        "trace.call_status": "Answer",
        "trace.call_ms": "ms",
        "trace.no_answer": "none (timeout or reset)",
        "trace.no_calls": "No CRM call recorded for it (kept two weeks).",
        "trace.open": "open in the CRM",
        "trace.replay": "Replay this message",
        "trace.replay_hint": "Puts this message (or its failed follow-up) back in the queue and"
        " resumes its conversation (bridge replay --message).",
        "journal.title": "Ingest journal",
        "journal.heading": "Deliveries no message came from",
        "journal.back": "Back to the conversations",
        "journal.col.id": "Row",
        "journal.col.received": "Received (UTC)",
        "journal.col.account": "Channel account",
        "journal.col.key": "Delivery key",
        "journal.col.reason": "Reason",
        "journal.col.attempts": "Attempts",
        "journal.none": "No such delivery.",
        "journal.row_title": "Journal row {id}",
        "journal.messages": "Messages it became",
        "journal.no_messages": "None (its body cannot be parsed here, or it carried none).",
        "journal.reparse": "Reparse",
        "journal.reparse_hint": "Parses it again with this bridge's parser (bridge reparse): a"
        " message that lands this way is marked late in the CRM.",
        "journal.reparsed": "Reparsed: the row is now {state}.",
        "journal.waiting": "Put back: the normaliser at work on this account parses it next.",
        "journal.not_reparsable": "Only a rejected or ignored row with its body can be reparsed.",
    },
    ru={
        "conv.title": "Диалоги",
        "conv.heading": "Диалоги",
        "conv.no_tenant": "Пока нет клиента, которого можно показать.",
        "conv.contact": "Контакт",
        "conv.contact_hint": "имя, телефон, эл. почта, id контакта в CRM, идентификатор, #тикет",
        "conv.channel": "Канал",
        "conv.status": "Статус",
        "conv.any": "любой",
        "conv.from": "С (UTC)",
        "conv.to": "По (UTC)",
        "conv.search": "Найти",
        "conv.reset": "Сбросить",
        "conv.bad_date": "Не дата (ГГГГ-ММ-ДД), не учтена: {value}",
        "conv.col.contact": "Контакт",
        "conv.col.channel": "Канал",
        "conv.col.status": "Статус",
        "conv.col.crm": "В CRM",
        "conv.col.messages": "Сообщений",
        "conv.col.last": "Последняя активность (UTC)",
        "conv.none": "Подходящих диалогов нет.",
        "conv.unnamed": "(без имени)",
        "conv.page": "Страница {n}",
        "conv.newer": "Новее",
        "conv.older": "Старше",
        "conv.journal_link": "Журнал приёма: отклонено доставок — {rejected},"
        " пропущено — {ignored}",
        "state.open": "открыт",
        "state.closed": "закрыт",
        "state.parked": "остановлен",
        "state.failed": "с ошибкой",
        "msg.pending": "ожидает",
        "msg.in_flight": "в работе",
        "msg.synced": "в CRM",
        "msg.sent": "отправлено",
        "msg.failed": "ошибка",
        "msg.refused": "отклонено",
        "msg.skipped": "пропущено",
        "delivery.sent": "отправлено",
        "delivery.delivered": "доставлено",
        "delivery.read": "прочитано",
        "followup.pending": "ожидается",
        "followup.done": "выполнено",
        "followup.failed": "ошибка",
        "outbox.idle": "ничего не ждёт",
        "outbox.pending": "в очереди",
        "outbox.parked": "остановлена",
        "journal.new": "новая",
        "journal.normalised": "разобрана",
        "journal.rejected": "отклонена",
        "journal.ignored": "пропущена",
        "dir.in": "вход.",
        "dir.out": "исх.",
        "dir.ack": "подтверждение",
        "dir.report": "отчёт о доставке",
        "work.in": "запись в CRM",
        "work.out": "отправка в канал",
        "work.ack": "подтверждения в канал",
        "work.report": "отчёты о доставке в CRM",
        "work.service": "сервисный слой",
        "endpoint.webhook": "вебхук: POST /webhooks/{kind}/… (секретный адрес аккаунта)",
        "endpoint.polling": "получено опросом в воркере",
        "endpoint.hosted": "собственный API чата моста",
        "endpoint.unknown": "канал, которого в этом мосте больше нет",
        "origin.crm": "ответ из CRM",
        "origin.bridge": "мост (подтверждение, меню, уведомление)",
        "origin.cascade": "каскад",
        "origin.copy": "копия ответа, отправленного в другой канал",
        "conv.page_title": "Диалог {id}",
        "conv.back": "Все диалоги",
        "conv.uid": "Публичный id",
        "conv.thread": "Id переписки в канале",
        "conv.ticket": "Тикет",
        "conv.account": "Аккаунт канала",
        "conv.handles": "Идентификаторы",
        "conv.verified": "подтверждён",
        "conv.unverified": "не подтверждён",
        "conv.crm_contact": "Контакт в CRM",
        "conv.crm_entity": "Сделка / лид / тикет в CRM",
        "conv.crm_task": "Задача в CRM",
        "conv.crm_thread": "Чат в CRM",
        "conv.creating": "записывается (может уже существовать)",
        "conv.not_yet": "ещё нет",
        "conv.work": "Работа",
        "conv.col.direction": "Работа",
        "conv.col.state": "Состояние",
        "conv.col.reason": "Причина",
        "conv.col.job": "Задание",
        "conv.col.since": "В очереди с",
        "conv.actions": "Записи сервисного слоя в CRM",
        "conv.col.kind": "Вид",
        "conv.col.key": "Ключ",
        "conv.col.error": "Ошибка",
        "conv.messages": "Сообщения",
        "conv.earlier": "Более ранние сообщения",
        "conv.latest": "Последние сообщения",
        "conv.col.seq": "№",
        "conv.col.dir": "Напр.",
        "conv.col.at": "Отправлено (UTC)",
        "conv.col.text": "Сообщение",
        "conv.col.followup": "Дальнейшая работа",
        "conv.col.trace": "Трассировка",
        "conv.trace": "трассировка",
        "conv.no_messages": "Сообщений нет.",
        "conv.attempts": "попыток: {n}",
        "conv.replay": "Повторить",
        "conv.replay_all": "Повторить этот диалог",
        "conv.replay_hint": "Возвращает в очередь сообщения и дальнейшую работу с ошибкой или"
        " возобновляет остановленную работу (bridge replay).",
        "conv.replayed": "Возвращено в очередь: {n} сообщ. и дальнейшей работы.",
        "conv.resumed": "Работа диалога возобновлена.",
        "conv.nothing": "Здесь нечего повторять.",
        "conv.read_only": "Повторять и разбирать заново может только администратор.",
        "trace.title": "Трассировка сообщения {uid}",
        "trace.heading": "Трассировка сообщения",
        "trace.back": "Назад к диалогу",
        "trace.received": "Получено",
        "trace.journaled": "Записано в журнал",
        "trace.normalised": "Разобрано",
        "trace.crm": "Записано в CRM",
        "trace.replies": "Ответы и их доставка",
        "trace.from_crm": "Получено из CRM",
        "trace.delivered": "Отправлено в канал",
        "trace.reported": "Отчёт о доставке в CRM",
        "trace.answers": "В ответ на",
        "trace.journal_row": "Строка журнала",
        "trace.received_at": "Получено (UTC)",
        "trace.account": "Аккаунт канала",
        "trace.endpoint": "Как получено",
        "trace.delivery_key": "Ключ доставки",
        "trace.found_parsed": "её сохранённое тело разбирается в это сообщение",
        "trace.found_key": "найдена по ключу доставки (тело удалено по сроку хранения)",
        "trace.not_found": "Строка журнала для этого сообщения не найдена (сохранено без"
        " журнала, или тело её строки удалено по сроку хранения).",
        "trace.candidates": "Строки, разобранные вместе с ним, без тела: {ids}",
        "trace.state": "Состояние",
        "trace.normalised_at": "Разобрано (UTC)",
        "trace.lag": "Разобрано через",
        "trace.attempts": "Попыток",
        "trace.reason": "Причина",
        "trace.detail": "Подробности",
        "trace.body": "Исходное тело",
        "trace.body_kept": "сохранено, {n} байт",
        "trace.body_dropped": "удалено по сроку хранения",
        "trace.message_id": "Id сообщения в мосте",
        "trace.seq": "Номер в диалоге",
        "trace.key": "Ключ в канале",
        "trace.provider_id": "Id сообщения у провайдера",
        "trace.kind": "Вид",
        "trace.sent_at": "Отправлено (у провайдера, UTC)",
        "trace.stored_at": "Сохранено (UTC)",
        "trace.text": "Текст",
        "trace.attachments": "Вложения",
        "trace.sender": "Отправитель",
        "trace.flags": "Отметки",
        "trace.status": "Статус",
        "trace.last_error": "Последняя ошибка",
        "trace.updated_at": "Последнее изменение (UTC)",
        "trace.entries": "Записи в ленте",
        "trace.no_entries": "пока нет",
        "trace.outbox": "Очередь: {direction}",
        "trace.ack": "Подтверждение в канал",
        "trace.no_replies": "Ответа пока нет.",
        "trace.crm_message": "Id сообщения в CRM",
        "trace.author": "Автор",
        "trace.origin": "Создано",
        "trace.channel_ids": "Id сообщения в канале",
        "trace.delivery": "Доставка по данным канала",
        "trace.report": "Отчёт в CRM",
        "trace.calls": "Обращения к CRM при записи",
        "trace.call_at": "Время (UTC)",
        "trace.call": "Запрос",
        "trace.call_status": "Ответ",
        "trace.call_ms": "мс",
        "trace.no_answer": "нет (таймаут или разрыв)",
        "trace.no_calls": "Обращений к CRM для него не записано (хранятся две недели).",
        "trace.open": "открыть в CRM",
        "trace.replay": "Повторить это сообщение",
        "trace.replay_hint": "Возвращает это сообщение (или его дальнейшую работу с ошибкой) в"
        " очередь и возобновляет его диалог (bridge replay --message).",
        "journal.title": "Журнал приёма",
        "journal.heading": "Доставки, не ставшие сообщениями",
        "journal.back": "Назад к диалогам",
        "journal.col.id": "Строка",
        "journal.col.received": "Получено (UTC)",
        "journal.col.account": "Аккаунт канала",
        "journal.col.key": "Ключ доставки",
        "journal.col.reason": "Причина",
        "journal.col.attempts": "Попыток",
        "journal.none": "Таких доставок нет.",
        "journal.row_title": "Строка журнала {id}",
        "journal.messages": "Сообщения из неё",
        "journal.no_messages": "Нет (её тело здесь не разбирается, или в ней их не было).",
        "journal.reparse": "Разобрать заново",
        "journal.reparse_hint": "Разбирает её снова текущим разборщиком моста (bridge reparse):"
        " сообщение, появившееся так, отмечается в CRM как запоздавшее.",
        "journal.reparsed": "Разобрано заново: строка теперь «{state}».",
        "journal.waiting": "Возвращено: её разберёт нормализатор, уже работающий с этим аккаунтом.",
        "journal.not_reparsable": "Разобрать заново можно только отклонённую или пропущенную"
        " строку с сохранённым телом.",
    },
)


def _runtime() -> Runtime:
    return app_runtime()


def word(prefix: str, value: str | None) -> str:
    """A status word in the current language (the value itself when it has none)."""
    if not value:
        return ""
    key = f"{prefix}.{value}"
    said = t(key)
    return value if said == key else said


def _render(template: str, **context: Any) -> str:
    return render_template(f"console/{template}", word=word, call_time=_call_time, **context)


def _call_time(at: float) -> str:
    """A recorded CRM call's time (Unix seconds) as the page shows times (UTC)."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _redirect(endpoint: str, tenant: int, **values: Any) -> ResponseReturnValue:
    return redirect(url_for(endpoint, tenant=tenant, **values), code=303)


def _can_act() -> bool:
    return current_user().may("admin")


# -- reading ------------------------------------------------------------------------------------


@bp.get("/conversations")
@login_required
def conversations() -> ResponseReturnValue:
    """The search form and one page of the tenant's conversations."""
    rt = _runtime()
    filters, bad = trace.Filters.from_args(request.args)
    with rt.read_session() as session:
        tenant = selected_tenant(session)
        if tenant is None:
            return _render("conversations.html", tenant=None, view="search")
        found = trace.search(session, tenant.id, filters)
        return _render(
            "conversations.html",
            view="search",
            tenant=tenant,
            filters=filters,
            bad_dates=bad,
            statuses=trace.STATUSES,
            kinds=trace.channel_kinds(session, tenant.id),
            found=found,
            journal=trace.journal_counts(session, tenant.id),
        )


@bp.get("/conversations/<int:conversation_id>")
@login_required
def conversation(conversation_id: int) -> ResponseReturnValue:
    """A conversation and its messages (``?upto=<seq>``: earlier ones)."""
    rt = _runtime()
    upto_raw = request.args.get("upto", "")
    upto = int(upto_raw) if upto_raw.isdigit() and len(upto_raw) < 10 else None
    with rt.read_session() as session:
        tenant = _tenant_or_404(session)
        view = trace.conversation_view(session, tenant.id, conversation_id, upto)
        if view is None:
            abort(404)
        return _render(
            "conversation.html",
            tenant=tenant,
            view=view,
            links=trace.CrmLinks.for_tenant(rt, tenant),
            can_act=_can_act(),
            can_replay=trace.can_replay,
            shown=trace.MESSAGES_SHOWN,
        )


@bp.get("/conversations/<int:conversation_id>/messages/<int:message_id>")
@login_required
def message_trace(conversation_id: int, message_id: int) -> ResponseReturnValue:
    """One message's trace."""
    rt = _runtime()
    with rt.read_session() as session:
        tenant = _tenant_or_404(session)
        found = trace.message_trace(rt, session, tenant.id, conversation_id, message_id)
        if found is None:
            abort(404)
        return _render(
            "trace.html",
            view="message",
            tenant=tenant,
            trace=found,
            links=trace.CrmLinks.for_tenant(rt, tenant),
            can_act=_can_act(),
            can_replay=trace.can_replay,
        )


@bp.get("/conversations/journal")
@login_required
def journal_list() -> ResponseReturnValue:
    """The tenant's rejected (``?state=ignored``: ignored) journal rows."""
    rt = _runtime()
    state = request.args.get("state", DeliveryState.REJECTED.value)
    if state not in (DeliveryState.REJECTED.value, DeliveryState.IGNORED.value):
        state = DeliveryState.REJECTED.value
    page_raw = request.args.get("page", "1")
    page = int(page_raw) if page_raw.isdigit() and 0 < len(page_raw) < 7 else 1
    with rt.read_session() as session:
        tenant = selected_tenant(session)
        if tenant is None:
            return _render("conversations.html", tenant=None, view="journal")
        return _render(
            "conversations.html",
            view="journal",
            tenant=tenant,
            state=state,
            rows=trace.journal_rows(session, tenant.id, state, max(page, 1)),
            journal=trace.journal_counts(session, tenant.id),
        )


@bp.get("/conversations/journal/<int:delivery_id>")
@login_required
def delivery_trace(delivery_id: int) -> ResponseReturnValue:
    """One journal row, the messages it became, and its reparse button."""
    rt = _runtime()
    with rt.read_session() as session:
        tenant = _tenant_or_404(session)
        found = trace.delivery_trace(rt, session, tenant.id, delivery_id)
        if found is None:
            abort(404)
        return _render(
            "trace.html",
            view="delivery",
            tenant=tenant,
            row=found,
            can_act=_can_act(),
        )


def _tenant_or_404(session: Session) -> Tenant:
    tenant = selected_tenant(session)
    if tenant is None:
        abort(404)
    return tenant


# -- acting -------------------------------------------------------------------------------------


def _message_state(message: Message, rows: dict[str, Outbox]) -> dict[str, Any]:
    """What an audit row keeps of a message: its state, never its text or error."""
    return {
        "status": message.status,
        "attempts": message.attempts,
        "followup": message.followup_status,
        "outbox": {d: rows[d].state for d in sorted(rows)},
    }


@bp.post("/conversations/<int:conversation_id>/messages/<int:message_id>/replay")
@login_required("admin")
def replay_message(conversation_id: int, message_id: int) -> ResponseReturnValue:
    """``bridge replay --message``: the failed message (or its failed
    follow-up) back in the queue, its conversation resumed."""
    rt = _runtime()
    with rt.read_session() as session:
        tenant = _tenant_or_404(session)
        view = trace.message_trace(rt, session, tenant.id, conversation_id, message_id)
        if view is None:
            abort(404)
        tenant_id, uid = tenant.id, view.message.uid
        before = _message_state(view.message, view.outbox)
        failed = trace.can_replay(view.message)
    back = ("console.message_trace", {"conversation_id": conversation_id, "message_id": message_id})
    if not failed:
        flash(t("conv.nothing"), "error")
        return _redirect(back[0], tenant_id, **back[1])

    def audited(session: Session, requeued: int) -> None:
        message = session.get(Message, message_id)
        assert message is not None
        after = {
            **_message_state(message, trace.outbox_rows(session, conversation_id)),
            "requeued": requeued,
        }
        audit(session, "conversation.replay_message", f"message:{uid}", before, after)

    requeued = admin.replay(rt, message_uid=uid, tenant_id=tenant_id, record=audited)
    log.info("console user %s replayed message %s (%d requeued)", current_user().id, uid, requeued)
    flash(t("conv.replayed", n=requeued), "ok")
    return _redirect(back[0], tenant_id, **back[1])


@bp.post("/conversations/<int:conversation_id>/replay")
@login_required("admin")
def replay_conversation(conversation_id: int) -> ResponseReturnValue:
    """``bridge replay --conversation``: its failed messages and follow-ups
    back in the queue; with none, its parked work resumed."""
    rt = _runtime()
    with rt.read_session() as session:
        tenant = _tenant_or_404(session)
        view = trace.conversation_view(session, tenant.id, conversation_id)
        if view is None:
            abort(404)
        tenant_id = tenant.id
        before = {d: row.state for d, row in sorted(view.outbox.items())}
        stuck = view.parked or trace.conversation_failed(session, conversation_id)
    if not stuck:
        flash(t("conv.nothing"), "error")
        return _redirect("console.conversation", tenant_id, conversation_id=conversation_id)

    def audited(session: Session, requeued: int) -> None:
        rows = trace.outbox_rows(session, conversation_id)
        after = {**{d: rows[d].state for d in sorted(rows)}, "requeued": requeued}
        audit(session, "conversation.replay", f"conversation:{conversation_id}", before, after)

    requeued = admin.replay(
        rt, conversation_id=conversation_id, tenant_id=tenant_id, record=audited
    )
    log.info(
        "console user %s replayed conversation %s (%d requeued)",
        current_user().id,
        conversation_id,
        requeued,
    )
    flash(t("conv.replayed", n=requeued) if requeued else t("conv.resumed"), "ok")
    return _redirect("console.conversation", tenant_id, conversation_id=conversation_id)


@bp.post("/conversations/journal/<int:delivery_id>/reparse")
@login_required("admin")
def reparse_delivery(delivery_id: int) -> ResponseReturnValue:
    """``bridge reparse --delivery``: the row back to ``new`` and the
    account's normaliser run here; its messages' sync jobs are enqueued."""
    rt = _runtime()
    with rt.read_session() as session:
        tenant = _tenant_or_404(session)
        row = session.get(Delivery, delivery_id)
        if row is None or row.tenant_id != tenant.id:
            abort(404)
        tenant_id = tenant.id
        before = {"state": row.state, "reason": row.reason, "attempts": row.attempts}
        reparsable = row.state in {s.value for s in journal.REPARSABLE} and row.body is not None
    if not reparsable:
        flash(t("journal.not_reparsable"), "error")
        return _redirect("console.delivery_trace", tenant_id, delivery_id=delivery_id)
    journal.reparse(rt, delivery=delivery_id)
    with rt.transaction() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        after = {"state": row.state, "reason": row.reason, "attempts": row.attempts}
        audit(session, "journal.reparse", f"delivery:{delivery_id}", before, after)
    log.info(
        "console user %s reparsed delivery %s: %s", current_user().id, delivery_id, after["state"]
    )
    if after["state"] == DeliveryState.NEW.value:
        flash(t("journal.waiting"), "ok")
    else:
        flash(t("journal.reparsed", state=word("journal", str(after["state"]))), "ok")
    return _redirect("console.delivery_trace", tenant_id, delivery_id=delivery_id)
