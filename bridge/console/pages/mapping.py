"""``/console/mapping``: the tenant's mapping file in an editor.

* ``GET /console/mapping`` (viewer): the YAML, each problem at its line.
* ``POST /console/mapping`` (admin): save. An invalid mapping is refused
  with its problems; a file changed since the editor opened it, too. The
  file is written where the runtime reads it and an audit row keeps the
  text before and after (``mapping_edit.save_text``).
* ``POST /console/mapping/validate`` (admin, JSON): the live check the
  page's script asks for while the admin types.
* ``POST /console/mapping/dry-run`` (admin): the checks against the live
  CRM and what a sample message would create, nothing written (a form
  post re-renders the page; JSON for a script).

The logic is :mod:`bridge.console.mapping_edit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge.console import bp
from bridge.console.i18n import register, t
from bridge.console.mapping_edit import (
    DryRun,
    Located,
    Sample,
    blocking,
    check_text,
    digest,
    dry_run,
    locate,
    read_current,
    save_text,
    sharing_tenants,
)
from bridge.runtime import Runtime, app_runtime
from bridge.tables import Tenant
from mappings.loader import read_mapping

__all__: list[str] = []

#: the most a mapping text may be (the shipped examples are under 10 kB)
MAX_TEXT = 512 * 1024

register(
    en={
        "mapping.title": "Mapping",
        "mapping.intro": (
            "Which CRM object each channel opens, with which pipeline, stage, owner and fields. "
            "Problems are checked as you type and shown at their line."
        ),
        "mapping.file": "File: {name}",
        "mapping.no_tenant": "There is no tenant to show.",
        "mapping.missing_file": "The file does not exist yet: saving creates it.",
        "mapping.read_only": "Your role can read this mapping but not change it.",
        "mapping.shared": "This file is also the mapping of: {tenants}. Saving changes theirs too.",
        "mapping.shared_refused": (
            "This file is also the mapping of other tenants: only the owner can change it."
        ),
        "mapping.editor": "Mapping (YAML)",
        "mapping.problems": "Problems",
        "mapping.no_problems": "No problems found.",
        "mapping.checking": "Checking…",
        "mapping.check_failed": "The check did not answer; save checks again.",
        "mapping.line": "line {line}",
        "mapping.column": "column {column}",
        "mapping.missing_key": "(missing here)",
        "mapping.also": "also {keys}",
        "mapping.advisory": "advice",
        "mapping.error": "error",
        "mapping.save": "Save",
        "mapping.saved": "Mapping saved. The bridge uses it from the next message on.",
        "mapping.unchanged": "Nothing changed.",
        "mapping.refused": "Not saved: fix the errors below first.",
        "mapping.conflict": (
            "Not saved: the file was changed since you opened it. Your text is below; "
            "reload the page to see the new one."
        ),
        "mapping.too_big": "Not saved: the text is larger than {kb} kB.",
        "mapping.sample": "Dry run with a sample message",
        "mapping.sample_intro": (
            "Checks against the live CRM that what the mapping names exists, and shows what "
            "this message would create. Nothing is written to the CRM."
        ),
        "mapping.channel": "Channel",
        "mapping.sender": "Sender's name",
        "mapping.text": "Message",
        "mapping.sample_sender": "Anna Smith",
        "mapping.sample_text": "Hello! I would like to order a delivery for tomorrow.",
        "mapping.dry_run": "Dry run",
        "mapping.results": "Dry run",
        "mapping.results_ok": "Everything the mapping names exists in the CRM.",
        "mapping.results_missing": "Something the mapping names is missing in the CRM.",
        "mapping.results_invalid": "The mapping has errors: fix them first.",
        "mapping.crm_error": "The CRM could not be asked: {error}",
        "mapping.checks": "In the CRM",
        "mapping.no_checks": "The mapping names no pipeline, stage, owner, field or template.",
        "mapping.col_what": "What",
        "mapping.col_value": "In the mapping",
        "mapping.col_where": "Where",
        "mapping.col_result": "Result",
        "mapping.col_crm": "In the CRM",
        "mapping.kind.pipeline": "pipeline",
        "mapping.kind.stage": "stage",
        "mapping.kind.owner": "owner",
        "mapping.kind.field": "field",
        "mapping.kind.template": "template",
        "mapping.ok": "ok",
        "mapping.missing": "missing",
        "mapping.unknown": "not checked",
        "mapping.field_hint": "A missing field is created by the CRM setup (bridge crm setup).",
        "mapping.preview": "What the message would create",
        "mapping.contact": "Contact",
        "mapping.entity": "Deal / lead / ticket: {object}",
        "mapping.no_entity": "No deal, lead or ticket (object: {object}).",
        "mapping.task": "Task",
        "mapping.no_task": "No task (task.when: never).",
        "mapping.note": "Timeline note",
        "mapping.no_note": "No timeline note (timeline: none).",
        "mapping.inbox": "The messages also go to the CRM's inbox or chat.",
        "mapping.live": "Kept current by the bridge (not shown): {fields}",
        "mapping.field.name": "name",
        "mapping.field.pipeline": "pipeline",
        "mapping.field.stage": "stage",
        "mapping.field.owner": "owner",
        "mapping.field.subject": "subject",
        "mapping.field.due_in": "due in",
        "mapping.field.body": "text",
        "mapping.no_rule": "The mapping has no rule for this channel.",
    },
    ru={
        "mapping.title": "Сопоставление",
        "mapping.intro": (
            "Какой объект CRM открывает каждый канал, с какой воронкой, этапом, ответственным "
            "и полями. Ошибки проверяются по мере ввода и показываются у своей строки."
        ),
        "mapping.file": "Файл: {name}",
        "mapping.no_tenant": "Нет клиента для показа.",
        "mapping.missing_file": "Файла ещё нет: сохранение создаст его.",
        "mapping.read_only": "Ваша роль позволяет читать это сопоставление, но не менять его.",
        "mapping.shared": "Этот файл — сопоставление и для: {tenants}. Сохранение изменит и их.",
        "mapping.shared_refused": (
            "Этот файл — сопоставление и других клиентов: изменить его может только владелец."
        ),
        "mapping.editor": "Сопоставление (YAML)",
        "mapping.problems": "Ошибки",
        "mapping.no_problems": "Ошибок нет.",
        "mapping.checking": "Проверка…",
        "mapping.check_failed": "Проверка не ответила; при сохранении файл проверится снова.",
        "mapping.line": "строка {line}",
        "mapping.column": "столбец {column}",
        "mapping.missing_key": "(здесь не хватает ключа)",
        "mapping.also": "а также {keys}",
        "mapping.advisory": "совет",
        "mapping.error": "ошибка",
        "mapping.save": "Сохранить",
        "mapping.saved": "Сопоставление сохранено. Мост применяет его со следующего сообщения.",
        "mapping.unchanged": "Изменений нет.",
        "mapping.refused": "Не сохранено: сначала исправьте ошибки ниже.",
        "mapping.conflict": (
            "Не сохранено: файл изменили после того, как вы его открыли. Ваш текст ниже; "
            "обновите страницу, чтобы увидеть новый."
        ),
        "mapping.too_big": "Не сохранено: текст больше {kb} КБ.",
        "mapping.sample": "Пробный прогон с примером сообщения",
        "mapping.sample_intro": (
            "Проверяет в живой CRM, что всё названное в сопоставлении существует, и показывает, "
            "что создало бы это сообщение. В CRM ничего не записывается."
        ),
        "mapping.channel": "Канал",
        "mapping.sender": "Имя отправителя",
        "mapping.text": "Сообщение",
        "mapping.sample_sender": "Анна Иванова",
        "mapping.sample_text": "Здравствуйте! Хочу заказать доставку на завтра.",
        "mapping.dry_run": "Пробный прогон",
        "mapping.results": "Пробный прогон",
        "mapping.results_ok": "Всё, что названо в сопоставлении, есть в CRM.",
        "mapping.results_missing": "Чего-то из названного в сопоставлении нет в CRM.",
        "mapping.results_invalid": "В сопоставлении ошибки: сначала исправьте их.",
        "mapping.crm_error": "Не удалось обратиться к CRM: {error}",
        "mapping.checks": "В CRM",
        "mapping.no_checks": "Сопоставление не называет ни воронок, ни этапов, ни ответственных, "
        "ни полей, ни шаблонов.",
        "mapping.col_what": "Что",
        "mapping.col_value": "В сопоставлении",
        "mapping.col_where": "Где",
        "mapping.col_result": "Итог",
        "mapping.col_crm": "В CRM",
        "mapping.kind.pipeline": "воронка",
        "mapping.kind.stage": "этап",
        "mapping.kind.owner": "ответственный",
        "mapping.kind.field": "поле",
        "mapping.kind.template": "шаблон",
        "mapping.ok": "есть",
        "mapping.missing": "нет",
        "mapping.unknown": "не проверено",
        "mapping.field_hint": "Недостающее поле создаёт настройка CRM (bridge crm setup).",
        "mapping.preview": "Что создало бы сообщение",
        "mapping.contact": "Контакт",
        "mapping.entity": "Сделка / лид / тикет: {object}",
        "mapping.no_entity": "Ни сделки, ни лида, ни тикета (object: {object}).",
        "mapping.task": "Задача",
        "mapping.no_task": "Без задачи (task.when: never).",
        "mapping.note": "Примечание в ленте",
        "mapping.no_note": "Без примечания в ленте (timeline: none).",
        "mapping.inbox": "Сообщения также попадают во входящие или чат CRM.",
        "mapping.live": "Обновляются мостом (здесь не показаны): {fields}",
        "mapping.field.name": "название",
        "mapping.field.pipeline": "воронка",
        "mapping.field.stage": "этап",
        "mapping.field.owner": "ответственный",
        "mapping.field.subject": "тема",
        "mapping.field.due_in": "срок",
        "mapping.field.body": "текст",
        "mapping.no_rule": "В сопоставлении нет правила для этого канала.",
    },
)


def _runtime() -> Runtime:
    return app_runtime()


def _posted_text(values: Mapping[str, Any], name: str = "text") -> str:
    """A text as the editor sent it, with the browser's CRLF line ends as LF."""
    value = values.get(name)
    return str(value if value is not None else "").replace("\r\n", "\n")


def _problems(rt: Runtime, tenant: Tenant, text: str) -> list[Located]:
    path = rt.mappings.path(tenant.mapping)
    found = check_text(text, file=path.name, directory=path.parent, crm_kind=tenant.crm_kind)
    return locate(text, found)


def _channels(text: str) -> list[str]:
    """The channel kinds the text maps (for the sample's channel list)."""
    data = read_mapping(text).data or {}
    channels = data.get("channels")
    return [str(k) for k in channels] if isinstance(channels, Mapping) else []


def _page(
    tenant: Tenant | None,
    *,
    text: str = "",
    base: str = "",
    problems: list[Located] | None = None,
    shared: list[Tenant] | None = None,
    exists: bool = True,
    run: DryRun | None = None,
    sample: Sample | None = None,
    notice: str | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    from bridge.console.auth import current_user

    channels = _channels(text)
    if sample is None:
        sample = Sample(
            channel=channels[0] if channels else "",
            sender=t("mapping.sample_sender"),
            text=t("mapping.sample_text"),
        )
    body = render_template(
        "console/mapping.html",
        tenant=tenant,
        file_name=_runtime().mappings.path(tenant.mapping).name if tenant else "",
        text=text,
        base=base,
        problems=problems or [],
        has_errors=blocking(problems or []),
        shared=shared or [],
        exists=exists,
        can_edit=current_user().may("admin"),
        run=run,
        sample=sample,
        channels=channels,
        notice=notice,
    )
    return body, status


@bp.route("/mapping", methods=["GET", "POST"])
def mapping() -> ResponseReturnValue:
    """The editor (GET: viewer); a save (POST: admin)."""
    from bridge.console.auth import login_required

    view = _save if request.method == "POST" else _show
    return login_required("admin" if request.method == "POST" else "viewer")(view)()


def _show() -> ResponseReturnValue:
    from bridge.console.auth import selected_tenant

    rt = _runtime()
    with rt.read_session() as session:
        tenant = selected_tenant(session)
        if tenant is None:
            return _page(None)
        path, text = read_current(rt, tenant)
        shared = sharing_tenants(rt, session, tenant)
    return _page(
        tenant,
        text=text,
        base=digest(text),
        problems=_problems(rt, tenant, text),
        shared=shared,
        exists=path.exists(),
    )


def _save() -> ResponseReturnValue:
    from bridge.console.auth import audit, current_user, selected_tenant

    rt = _runtime()
    text = _posted_text(request.form)
    with rt.transaction() as session:
        tenant = selected_tenant(session)
        if tenant is None:
            return _page(None, status=404)
        path, current = read_current(rt, tenant)
        shared = sharing_tenants(rt, session, tenant)

        def refused(
            notice: str, status: int, problems: list[Located] | None = None
        ) -> ResponseReturnValue:
            return _page(
                tenant,
                text=text,
                base=request.form.get("base", ""),
                problems=problems,
                shared=shared,
                exists=path.exists(),
                notice=notice,
                status=status,
            )

        if len(text.encode("utf-8")) > MAX_TEXT:
            return refused(t("mapping.too_big", kb=MAX_TEXT // 1024), 413)
        if request.form.get("base", "") != digest(current):
            return refused(t("mapping.conflict"), 409, _problems(rt, tenant, text))
        problems = _problems(rt, tenant, text)
        if blocking(problems):
            return refused(t("mapping.refused"), 422, problems)
        if shared and not current_user().is_owner:
            return refused(t("mapping.shared_refused"), 403, problems)
        if text == current:
            flash(t("mapping.unchanged"), "info")
            return redirect(url_for("console.mapping", tenant=tenant.id), code=303)
        audit(session, "mapping.save", f"mapping:{tenant.mapping}", before=current, after=text)
        # in the transaction: a failed write leaves no audit row behind
        save_text(path, text)
        tenant_id = tenant.id
    flash(t("mapping.saved"), "ok")
    return redirect(url_for("console.mapping", tenant=tenant_id), code=303)


@bp.route("/mapping/validate", methods=["POST"])
def mapping_validate() -> ResponseReturnValue:
    """JSON ``{"text": ...}`` -> ``{"ok", "problems": [{line, column, key,
    message, blocking, exact}]}``."""
    from bridge.console.auth import error_page, login_required, selected_tenant

    @login_required("admin")
    def view() -> ResponseReturnValue:
        rt = _runtime()
        data = request.get_json(silent=True)
        text = _posted_text(data if isinstance(data, Mapping) else {})
        if len(text.encode("utf-8")) > MAX_TEXT:
            return error_page(413, t("mapping.title"), t("mapping.too_big", kb=MAX_TEXT // 1024))
        with rt.read_session() as session:
            tenant = selected_tenant(session)
            if tenant is None:
                return error_page(404, t("error.404.title"), t("mapping.no_tenant"))
            problems = _problems(rt, tenant, text)
        return jsonify({"ok": not blocking(problems), "problems": [p.as_json() for p in problems]})

    return view()


@bp.route("/mapping/dry-run", methods=["POST"])
def mapping_dry_run() -> ResponseReturnValue:
    """The dry run of the posted text with the posted sample (a form: the
    page again with the results; JSON: :meth:`DryRun.as_json`)."""
    from bridge.console.auth import error_page, login_required, selected_tenant, wants_json

    @login_required("admin")
    def view() -> ResponseReturnValue:
        rt = _runtime()
        data = request.get_json(silent=True) if request.is_json else request.form
        values: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        text = _posted_text(values)
        if len(text.encode("utf-8")) > MAX_TEXT:
            return error_page(413, t("mapping.title"), t("mapping.too_big", kb=MAX_TEXT // 1024))
        sample = Sample(
            channel=str(values.get("channel") or ""),
            sender=_posted_text(values, "sender")[:200],
            text=_posted_text(values, "sample_text")[:4000],
        )
        with rt.read_session() as session:
            tenant = selected_tenant(session)
            if tenant is None:
                return error_page(404, t("error.404.title"), t("mapping.no_tenant"))
            path, _current = read_current(rt, tenant)
            shared = sharing_tenants(rt, session, tenant)
            session.expunge(tenant)  # the CRM is asked after the session closed
        run = dry_run(rt, tenant, text, sample if sample.channel else None)
        if wants_json():
            return jsonify(run.as_json())
        return _page(
            tenant,
            text=text,
            base=str(values.get("base") or ""),
            problems=run.problems,
            shared=shared,
            exists=path.exists(),
            run=run,
            sample=sample,
        )

    return view()
