"""The KPI page: ``/console/kpis`` and its CSV, ``/console/kpis.csv``.

Both take the same query: ``tenant`` (the selector's), ``period`` (``today``,
``7d``, ``30d`` or ``dates`` with ``from`` and ``to``, local dates, both
included) and ``bucket`` (``hour``, ``day``, ``week``; the period's default
when left out). The figures are :mod:`bridge.console.kpis`'s, in the
tenant's time zone. The page shows each as a table and draws its charts in
the browser (``static/console/charts.js``, from the JSON the page embeds);
the CSV has one section per table, UTF-8 with a BOM, ``;`` and a decimal
comma for Russian (what a Russian Excel expects), ``,`` and a point for English.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

from flask import Response, render_template, request
from flask.typing import ResponseReturnValue

from bridge.console import bp
from bridge.console import kpis as figures
from bridge.console.auth import login_required, selected_tenant
from bridge.console.i18n import language, register, t
from bridge.model import utcnow
from bridge.runtime import app_runtime
from bridge.tables import Tenant
from mappings import MappingError
from mappings.schema import MappingConfig

__all__: list[str] = []

register(
    en={
        "kpis.title": "KPIs",
        "kpis.heading": "Key figures",
        "kpis.period": "Period",
        "kpis.preset.today": "Today",
        "kpis.preset.7d": "Last 7 days",
        "kpis.preset.30d": "Last 30 days",
        "kpis.preset.dates": "Dates",
        "kpis.from": "From",
        "kpis.to": "To",
        "kpis.bucket": "Group by",
        "kpis.bucket.auto": "automatic",
        "kpis.bucket.hour": "hour",
        "kpis.bucket.day": "day",
        "kpis.bucket.week": "week",
        "kpis.show": "Show",
        "kpis.csv": "Download CSV",
        "kpis.range": "{first} – {last} ({zone}), by {bucket}",
        "kpis.no_tenant": "There is no tenant to show yet.",
        "kpis.bad_period": "That period cannot be shown ({reason}); the last 7 days instead.",
        "kpis.err.date": "a date is not one (YYYY-MM-DD)",
        "kpis.err.dates": "give the first and the last date",
        "kpis.err.order": "the last date is before the first",
        "kpis.err.length": "at most 366 days",
        "kpis.err.preset": "unknown period",
        "kpis.err.bucket": "unknown grouping",
        "kpis.no_mapping": "The tenant's mapping cannot be read: no SLA figures, menu options"
        " as the notes wrote them.",
        "kpis.messages_in": "Messages in",
        "kpis.messages_out": "Messages out",
        "kpis.traffic": "Traffic by channel",
        "kpis.traffic.chart": "Messages per {bucket}, by channel (in + out)",
        "kpis.col.bucket": "Period",
        "kpis.col.channel": "Channel",
        "kpis.in": "in",
        "kpis.out": "out",
        "kpis.inbound": "Inbound",
        "kpis.outbound": "Outbound",
        "kpis.total": "Total",
        "kpis.clients": "Clients who wrote",
        "kpis.clients.new": "New",
        "kpis.clients.returning": "Returning",
        "kpis.clients.note": "New: their first message ever is in this period.",
        "kpis.frt": "First response",
        "kpis.frt.chart": "First response per operator, minutes",
        "kpis.frt.lines": "By line",
        "kpis.frt.operators": "By operator",
        "kpis.frt.note": "Time from the session's first client message to the operator's first"
        " reply; median (p50) and p90 by the nearest-rank method. SLA met: replies within the"
        " line's first-response time in its working hours, of the sessions with a verdict"
        " (answered, or unanswered past the time).",
        "kpis.col.line": "Line",
        "kpis.col.operator": "Operator",
        "kpis.col.sessions": "Sessions",
        "kpis.col.answered": "Answered",
        "kpis.col.p50": "Median (p50)",
        "kpis.col.p90": "p90",
        "kpis.col.sla": "SLA met",
        "kpis.col.sla_count": "met / with verdict",
        "kpis.all": "All",
        "kpis.unassigned": "unassigned",
        "kpis.no_line": "no line",
        "kpis.load": "Operator load",
        "kpis.col.peak": "Most open at once",
        "kpis.load.note": "Sessions opened in the period; the most of the operator's sessions"
        " open at one moment of it (those opened before and still open count).",
        "kpis.csat": "Satisfaction (CSAT)",
        "kpis.csat.chart": "Ratings from 1 to 5",
        "kpis.col.ratings": "Ratings",
        "kpis.col.average": "Average",
        "kpis.menu": "Menu choices",
        "kpis.col.option": "Option",
        "kpis.col.count": "Chosen",
        "kpis.suggestions": "Suggested replies",
        "kpis.sugg.shown": "Suggestions shown (all time)",
        "kpis.sugg.accepted": "Accepted (all time)",
        "kpis.sugg.rate": "Acceptance",
        "kpis.sugg.rate_all": "Suggestions accepted, all time",
        "kpis.sugg.messages": "Client messages with suggestions in the period",
        "kpis.sugg.answered": "Operator replies to a suggested message (period)",
        "kpis.sugg.taken": "Of them, took a suggestion",
        "kpis.sugg.period_rate": "Acceptance in the period",
        "kpis.minutes": "min",
        "kpis.none": "Nothing in this period.",
        "kpis.csv.report": "KPIs",
        "kpis.csv.tenant": "Tenant",
        "kpis.csv.zone": "Time zone",
        "kpis.csv.seconds": "{what}, s",
    },
    ru={
        "kpis.title": "Показатели",
        "kpis.heading": "Ключевые показатели",
        "kpis.period": "Период",
        "kpis.preset.today": "Сегодня",
        "kpis.preset.7d": "7 дней",
        "kpis.preset.30d": "30 дней",
        "kpis.preset.dates": "Даты",
        "kpis.from": "С",
        "kpis.to": "По",
        "kpis.bucket": "Группировать",
        "kpis.bucket.auto": "автоматически",
        "kpis.bucket.hour": "по часам",
        "kpis.bucket.day": "по дням",
        "kpis.bucket.week": "по неделям",
        "kpis.show": "Показать",
        "kpis.csv": "Скачать CSV",
        "kpis.range": "{first} – {last} ({zone}), {bucket}",
        "kpis.no_tenant": "Пока нет клиента, которого можно показать.",
        "kpis.bad_period": "Этот период показать нельзя ({reason}); показаны последние 7 дней.",
        "kpis.err.date": "дата указана неверно (ГГГГ-ММ-ДД)",
        "kpis.err.dates": "укажите первую и последнюю дату",
        "kpis.err.order": "последняя дата раньше первой",
        "kpis.err.length": "не больше 366 дней",
        "kpis.err.preset": "неизвестный период",
        "kpis.err.bucket": "неизвестная группировка",
        "kpis.no_mapping": "Сопоставление клиента не читается: без показателей SLA, пункты меню"
        " как их записали заметки.",
        "kpis.messages_in": "Входящих",
        "kpis.messages_out": "Исходящих",
        "kpis.traffic": "Трафик по каналам",
        "kpis.traffic.chart": "Сообщения {bucket} по каналам (вход. + исх.)",
        "kpis.col.bucket": "Интервал",
        "kpis.col.channel": "Канал",
        "kpis.in": "вход.",
        "kpis.out": "исх.",
        "kpis.inbound": "Входящие",
        "kpis.outbound": "Исходящие",
        "kpis.total": "Всего",
        "kpis.clients": "Написавшие клиенты",
        "kpis.clients.new": "Новые",
        "kpis.clients.returning": "Вернувшиеся",
        "kpis.clients.note": "Новые: их первое сообщение вообще пришло в этот период.",
        "kpis.frt": "Первый ответ",
        "kpis.frt.chart": "Первый ответ по операторам, минуты",
        "kpis.frt.lines": "По линиям",
        "kpis.frt.operators": "По операторам",
        "kpis.frt.note": "Время от первого сообщения клиента в сессии до первого ответа"
        " оператора; медиана (p50) и p90 методом ближайшего ранга. SLA выполнен: ответ в пределах"
        " нормы линии в её рабочие часы, от сессий с вердиктом (с ответом или без ответа дольше"
        " нормы).",
        "kpis.col.line": "Линия",
        "kpis.col.operator": "Оператор",
        "kpis.col.sessions": "Сессии",
        "kpis.col.answered": "С ответом",
        "kpis.col.p50": "Медиана (p50)",
        "kpis.col.p90": "p90",
        "kpis.col.sla": "SLA выполнен",
        "kpis.col.sla_count": "выполнен / с вердиктом",
        "kpis.all": "Все",
        "kpis.unassigned": "не назначен",
        "kpis.no_line": "без линии",
        "kpis.load": "Нагрузка операторов",
        "kpis.col.peak": "Максимум одновременно",
        "kpis.load.note": "Сессии, открытые за период; наибольшее число сессий оператора,"
        " открытых в один момент периода (учитываются и открытые раньше).",
        "kpis.csat": "Удовлетворённость (CSAT)",
        "kpis.csat.chart": "Оценки от 1 до 5",
        "kpis.col.ratings": "Оценок",
        "kpis.col.average": "Средняя",
        "kpis.menu": "Выбор в меню",
        "kpis.col.option": "Пункт",
        "kpis.col.count": "Выбран",
        "kpis.suggestions": "Подсказки ответов",
        "kpis.sugg.shown": "Показано подсказок (за всё время)",
        "kpis.sugg.accepted": "Принято (за всё время)",
        "kpis.sugg.rate": "Доля принятых",
        "kpis.sugg.rate_all": "Принято подсказок, за всё время",
        "kpis.sugg.messages": "Сообщений клиентов с подсказками за период",
        "kpis.sugg.answered": "Ответов оператора на сообщения с подсказками (за период)",
        "kpis.sugg.taken": "Из них взяли подсказку",
        "kpis.sugg.period_rate": "Доля принятых за период",
        "kpis.minutes": "мин",
        "kpis.none": "За этот период ничего нет.",
        "kpis.csv.report": "Показатели",
        "kpis.csv.tenant": "Клиент",
        "kpis.csv.zone": "Часовой пояс",
        "kpis.csv.seconds": "{what}, с",
    },
)


# -- the request --------------------------------------------------------------------------------


def _date(name: str) -> dt.date | None:
    raw = request.args.get(name, "").strip()
    try:
        return dt.date.fromisoformat(raw) if raw else None
    except ValueError:
        raise figures.PeriodError("date", f"not a date: {raw[:20]!r}") from None


def _mapping(tenant: Tenant) -> MappingConfig | None:
    try:
        return app_runtime().mapping_for(tenant)
    except MappingError:
        return None


def _period(zone: str, now: dt.datetime) -> tuple[figures.Period, str | None]:
    """The asked period, or the last 7 days and why the asked one was refused."""
    preset = request.args.get("period", "7d")
    bucket = request.args.get("bucket") or None
    try:
        return figures.period_for(zone, now, preset, _date("from"), _date("to"), bucket), None
    except figures.PeriodError as exc:
        return figures.period_for(zone, now, "7d"), t(f"kpis.err.{exc.code}")


def _load(tenant: Tenant) -> tuple[figures.Report, MappingConfig | None, str | None]:
    mapping = _mapping(tenant)
    now = utcnow()
    period, refused = _period(figures.tenant_zone(mapping), now)
    with app_runtime().read_session() as session:
        report = figures.report(session, tenant.id, period, mapping, now)
    return report, mapping, refused


# -- what the page and the CSV show -------------------------------------------------------------


def _line_name(report: figures.Report, key: str, lang: str) -> str:
    if not key:
        return t("kpis.no_line")
    title = report.line_titles.get(key)
    return title.get(lang) if title is not None else key


def _operator_name(key: str) -> str:
    return key or t("kpis.unassigned")


def _bucket_word(bucket: str) -> str:
    return t(f"kpis.bucket.{bucket}")


def _charts(report: figures.Report, lang: str) -> dict[str, Any]:
    """The charts' data for charts.js (names already in the page's language)."""
    traffic = report.traffic
    frt = [r for r in report.response.operators if r.key and r.answered]
    charts: dict[str, dict[str, Any]] = {
        "traffic": {
            "kind": "line",
            "title": t("kpis.traffic.chart", bucket=_bucket_word(report.period.bucket)),
            "labels": traffic.labels,
            "series": [
                {
                    "name": kind,
                    "values": [
                        a + b
                        for a, b in zip(traffic.inbound[kind], traffic.outbound[kind], strict=True)
                    ],
                }
                for kind in traffic.channels
            ],
        },
        "frt": {
            "kind": "bar",
            "title": t("kpis.frt.chart"),
            "unit": t("kpis.minutes"),
            "labels": [_operator_name(r.key) for r in frt],
            "series": [
                {"name": "p50", "values": [_minutes(r.p50) for r in frt]},
                {"name": "p90", "values": [_minutes(r.p90) for r in frt]},
            ],
        },
        "csat": {
            "kind": "bar",
            "title": t("kpis.csat.chart"),
            "labels": ["1", "2", "3", "4", "5"],
            "series": [
                {"name": t("kpis.col.ratings"), "values": list(report.csat.overall.distribution)}
            ],
        },
    }
    for chart in charts.values():
        chart["empty"] = t("kpis.none")
    return charts


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60.0, 1)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:g} %"


@bp.route("/kpis")
@login_required("viewer")
def kpis() -> ResponseReturnValue:
    """The tenant's KPIs for the asked period: tables and charts."""
    with app_runtime().read_session() as session:
        tenant = selected_tenant(session)
    if tenant is None:
        return render_template("console/kpis.html", tenant=None, report=None)
    report, mapping, refused = _load(tenant)
    lang = language()
    return render_template(
        "console/kpis.html",
        tenant=tenant,
        report=report,
        refused=refused,
        has_mapping=mapping is not None,
        charts=_charts(report, lang),
        totals=(
            sum(report.traffic.total(k, "in") for k in report.traffic.channels),
            sum(report.traffic.total(k, "out") for k in report.traffic.channels),
        ),
        line_name=lambda key: _line_name(report, key, lang),
        operator_name=_operator_name,
        seconds=lambda value: figures.seconds_text(value, lang),
        pct=_pct,
        bucket_word=_bucket_word,
        presets=figures.PRESETS,
        buckets=figures.BUCKETS,
        asked=request.args,
        csv_args={k: v for k, v in request.args.items() if k != "lang"},
    )


# -- the CSV ------------------------------------------------------------------------------------


def _number(value: float | int | None, comma: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    text = f"{value:g}" if abs(value) < 1e15 else str(value)
    return text.replace(".", ",") if comma else text


def csv_sections(report: figures.Report, tenant: Tenant, lang: str) -> list[list[list[str]]]:
    """The CSV's sections: each a title row, a header row and the rows."""
    comma = lang == "ru"

    def n(value: float | int | None) -> str:
        return _number(value, comma)

    def seconds(word: str) -> str:
        return t("kpis.csv.seconds", what=t(word))

    period = report.period
    head = [
        [t("kpis.csv.report"), tenant.name or tenant.slug],
        [t("kpis.period"), period.first_day.isoformat(), period.last_day.isoformat()],
        [t("kpis.csv.zone"), period.zone],
        [t("kpis.bucket"), _bucket_word(period.bucket)],
    ]
    traffic = report.traffic
    traffic_rows = [
        [label, kind, n(traffic.inbound[kind][i]), n(traffic.outbound[kind][i])]
        for i, label in enumerate(traffic.labels)
        for kind in traffic.channels
    ]
    frt_head = [
        t("kpis.col.sessions"),
        t("kpis.col.answered"),
        seconds("kpis.col.p50"),
        seconds("kpis.col.p90"),
        t("kpis.col.sla_count"),
        t("kpis.col.sla"),
    ]

    def frt(name: str, r: figures.ResponseRow) -> list[str]:
        met = f"{r.sla_met}/{r.sla_sessions}"
        return [name, n(r.sessions), n(r.answered), n(r.p50), n(r.p90), met, n(r.sla_met_pct)]

    def csat(name: str, r: figures.CsatRow) -> list[str]:
        return [name, n(r.ratings), n(r.average), *(n(v) for v in r.distribution)]

    csat_head = [t("kpis.col.ratings"), t("kpis.col.average"), "1", "2", "3", "4", "5"]
    overall = report.response.overall
    s = report.suggestions
    return [
        [*head],
        [
            [t("kpis.traffic")],
            [t("kpis.col.bucket"), t("kpis.col.channel"), t("kpis.inbound"), t("kpis.outbound")],
            *traffic_rows,
        ],
        [
            [t("kpis.clients")],
            [t("kpis.clients.new"), t("kpis.clients.returning"), t("kpis.total")],
            [n(report.clients.new), n(report.clients.returning), n(report.clients.total)],
        ],
        [
            [f"{t('kpis.frt')}: {t('kpis.frt.lines')}"],
            [t("kpis.col.line"), *frt_head],
            *(frt(_line_name(report, r.key, lang), r) for r in report.response.lines),
            frt(t("kpis.all"), overall),
        ],
        [
            [f"{t('kpis.frt')}: {t('kpis.frt.operators')}"],
            [t("kpis.col.operator"), *frt_head],
            *(frt(_operator_name(r.key), r) for r in report.response.operators),
        ],
        [
            [t("kpis.load")],
            [t("kpis.col.operator"), t("kpis.col.sessions"), t("kpis.col.peak")],
            *([r.operator, n(r.sessions), n(r.peak_open)] for r in report.load),
        ],
        [
            [f"{t('kpis.csat')}: {t('kpis.frt.lines')}"],
            [t("kpis.col.line"), *csat_head],
            *(csat(_line_name(report, r.key, lang), r) for r in report.csat.lines),
            csat(t("kpis.all"), report.csat.overall),
        ],
        [
            [f"{t('kpis.csat')}: {t('kpis.frt.operators')}"],
            [t("kpis.col.operator"), *csat_head],
            *(csat(_operator_name(r.key), r) for r in report.csat.operators),
        ],
        [
            [t("kpis.menu")],
            [t("kpis.col.option"), t("kpis.col.count")],
            *([r.label.get(lang), n(r.count)] for r in report.menu),
        ],
        [
            [t("kpis.suggestions")],
            [
                t("kpis.sugg.shown"),
                t("kpis.sugg.accepted"),
                t("kpis.sugg.rate"),
                t("kpis.sugg.messages"),
                t("kpis.sugg.answered"),
                t("kpis.sugg.taken"),
                t("kpis.sugg.period_rate"),
            ],
            [
                n(s.shown),
                n(s.accepted),
                n(s.rate_pct),
                n(s.messages),
                n(s.answered),
                n(s.taken),
                n(s.period_rate_pct),
            ],
        ],
    ]


def csv_text(sections: Iterable[Sequence[Sequence[str]]], lang: str) -> str:
    """The sections as CSV, a blank line between two (``;`` for Russian)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if lang == "ru" else ",", lineterminator="\r\n")
    for i, section in enumerate(sections):
        if i:
            writer.writerow([])
        writer.writerows(section)
    return out.getvalue()


@bp.route("/kpis.csv")
@login_required("viewer")
def kpis_csv() -> ResponseReturnValue:
    """The page's tables as one CSV file (UTF-8 with a BOM)."""
    with app_runtime().read_session() as session:
        tenant = selected_tenant(session)
    if tenant is None:
        return Response(t("kpis.no_tenant"), status=404, mimetype="text/plain")
    report, _, refused = _load(tenant)
    if refused is not None:
        return Response(refused, status=400, mimetype="text/plain")
    lang = language()
    body = "\ufeff" + csv_text(csv_sections(report, tenant, lang), lang)
    period = report.period
    slug = re.sub(r"[^A-Za-z0-9_-]", "", tenant.slug) or str(tenant.id)
    name = f"kpis-{slug}-{period.first_day.isoformat()}-{period.last_day.isoformat()}.csv"
    return Response(
        body.encode("utf-8"),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Type": "text/csv; charset=utf-8",
        },
    )
