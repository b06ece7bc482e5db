"""The mapping's ``service:`` section (``mappings/service.py``): the shipped
example, what each key becomes, the defaults a line inherits, and every
validation rule with the exact key it reports and the fix it names."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from bridge.service.calendar import Span, is_open
from bridge.service.sla import Targets
from mappings import MappingError
from mappings.service import (
    Csat,
    OwnerPolicy,
    ServicePolicy,
    ServiceSchema,
    Suggestions,
    Texts,
    check_channels,
    check_knowledge,
    load_service,
    parse_duration,
    parse_spans,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "mappings" / "examples" / "service.yaml"
MOSCOW = ZoneInfo("Europe/Moscow")
#: a plain Monday (no holiday in Russia's production calendar)
MONDAY = dt.date(2026, 3, 2)

MINIMAL: dict[str, Any] = {
    "lines": {
        "support": {
            "members": ["201"],
            "hours": {"timezone": "Europe/Moscow", "week": {"mon-fri": "09:00-18:00"}},
        }
    }
}


def example() -> ServicePolicy:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return load_service(data["service"], file=str(EXAMPLE))


def problems(section: str) -> list[tuple[str, str]]:
    """The ``(key, message)`` problems of a ``service:`` section written as YAML."""
    with pytest.raises(MappingError) as caught:
        load_service(yaml.safe_load(textwrap.dedent(section)), file="acme.yaml")
    return caught.value.problems


def problem(section: str, key: str) -> str:
    """The one message reported at ``key``."""
    found = dict(problems(section))
    assert key in found, f"no problem at {key}: {found}"
    return found[key]


def section(lines: str = "", **blocks: str) -> str:
    """A section with one valid line ``support`` (plus ``lines``) and ``blocks``."""
    text = textwrap.dedent(
        """\
        lines:
          support:
            title: {en: Support, ru: Поддержка}
            members: ["201", "202"]
            hours: {timezone: Europe/Moscow, week: {mon-fri: "09:00-18:00"}}
        """
    )
    text += textwrap.indent(textwrap.dedent(lines), "  ")
    for key, body in blocks.items():
        text += f"{key}:\n" + textwrap.indent(textwrap.dedent(body), "  ")
    return text


# -- the shipped example ---------------------------------------------------------------------


def test_the_example_loads() -> None:
    policy = example()
    assert list(policy.lines) == ["sales", "support", "support_2", "partners"]
    assert policy.default_line == "support"
    assert list(policy.menus) == ["main", "other"]
    assert [r.line for r in policy.rules] == ["support", "support", "partners"]


def test_a_line_inherits_the_defaults_and_its_own_keys_win_whole() -> None:
    policy = example()
    sales, support, second = (policy.line(n) for n in ("sales", "support", "support_2"))
    assert sales.owner == OwnerPolicy("round_robin", sticky="any", off_shift="wait")
    assert support.owner == OwnerPolicy("least_loaded", sticky="line", off_shift="next", max_load=8)
    assert second.bot == "off"  # unquoted off: YAML's false, read as the mode
    assert support.bot == "out_of_hours"
    assert support.session_idle_hours == 24
    assert support.csat == Csat(enabled=True, threshold=3)
    assert (support.csat.rating_window, support.csat.comment_window) == (
        dt.timedelta(hours=24),
        dt.timedelta(minutes=30),
    )
    assert support.quiet_minutes == 30
    assert support.supervisor is not None and support.supervisor.user == "900"
    assert [a.channel for a in support.supervisor.alerts] == ["telegram", "email"]
    assert support.notice == Texts(
        en="We are closed now and will answer {opening}.",
        ru="Сейчас мы не работаем и ответим {opening}.",
    )
    assert sales.hours is support.hours
    assert policy.line("partners").hours.timezone == "Asia/Vladivostok"


def test_the_example_hours_become_the_calendar_type() -> None:
    hours = example().line("support").hours
    lunch = (Span(dt.time(9), dt.time(13)), Span(dt.time(14), dt.time(18)))
    assert hours.week[0] == lunch and hours.week[4] == lunch
    assert hours.week[5] == (Span(dt.time(10), dt.time(14)),)
    assert hours.week[6] == ()
    assert hours.holidays == frozenset({dt.date(2026, 12, 31)})
    assert hours.calendar == "ru"


@pytest.mark.parametrize(
    ("local", "open_now"),
    [
        (dt.time(10), True),
        (dt.time(13, 30), False),  # the lunch break
        (dt.time(17, 59), True),
        (dt.time(18), False),
    ],
)
def test_the_example_hours_work_with_the_calendar(local: dt.time, open_now: bool) -> None:
    hours = example().line("support").hours
    assert is_open(hours, dt.datetime.combine(MONDAY, local, MOSCOW)) is open_now


def test_sla_targets_per_priority_with_default() -> None:
    line = example().line("support")
    assert line.targets("high") == Targets(
        dt.timedelta(minutes=5), dt.timedelta(minutes=10), dt.timedelta(hours=4), 0.7
    )
    assert line.targets("normal") == line.targets(None) == line.sla["default"]
    assert line.sla["default"].first_response == dt.timedelta(minutes=15)
    assert line.sla["default"].warn_share == 0.8


def test_menus_greetings_and_transfer_as_written() -> None:
    policy = example()
    buy, status, other = policy.menus["main"].options
    assert (buy.line, buy.fields, buy.tags, buy.menu) == ("sales", {"topic": "sales"}, (), None)
    assert (status.knowledge, status.line) == ("order-status", "support")
    assert other.menu == "other"
    assert policy.menus["other"].options[0].fields == {"topic": "returns"}
    assert [(g.menu, sorted(g.channels)) for g in policy.greetings] == [
        ("main", ["telegram", "whatsapp"]),
        (None, ["email"]),
    ]
    assert policy.transfer.numbers == {"1": "support", "2": "support_2"}
    assert policy.transfer.stages == {"C1:PREPARATION": "support_2"}
    assert policy.transfer.tell == "each_line"
    assert policy.knowledge_ids() == frozenset({"order-status"})
    assert policy.knowledge_base == "kb/acme.yaml"
    assert policy.suggestions == Suggestions(enabled=True, count=3)
    assert policy.segment_fields() == frozenset({"segment"})
    assert policy.channel_kinds() == frozenset({"telegram", "whatsapp", "email"})


def test_the_example_is_a_whole_mapping_whose_channels_cover_the_section() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert check_channels(example(), data["channels"]) == []


# -- standalone load and defaults ------------------------------------------------------------


def test_the_schema_loads_standalone_with_defaults() -> None:
    policy = ServiceSchema().load(MINIMAL)
    assert isinstance(policy, ServicePolicy)
    line = policy.line("support")
    assert policy.default_line == "support"  # the first line when none is named
    assert line.title == Texts("support", "support")
    assert line.members == ("201",)
    assert line.owner == OwnerPolicy()
    assert (line.bot, line.session_idle_hours, line.quiet_minutes, line.notice, line.csat) == (
        "out_of_hours",
        24,
        30,
        None,
        Csat(),
    )
    assert line.csat.enabled is False  # no csat: key, no prompt
    assert (policy.knowledge_base, policy.suggestions) == (None, Suggestions(enabled=False))
    assert (line.audience, line.channels, line.priority, line.sla) == (
        frozenset(),
        frozenset(),
        0,
        {},
    )
    assert line.targets("high") is None
    assert (policy.menus, policy.greetings, policy.rules) == ({}, (), ())
    assert policy.transfer.tell == "each_line"
    assert "{line}" in policy.transfer.notice.en and "{line}" in policy.transfer.notice.ru


def test_texts_pick_the_clients_language() -> None:
    texts = Texts("Hello", "Привет")
    assert [texts.get(x) for x in ("ru", "ru-RU", "RU", "en", "de", None)] == [
        "Привет",
        "Привет",
        "Привет",
        "Hello",
        "Hello",
        "Hello",
    ]


def test_a_transfer_number_may_be_written_as_a_yaml_number() -> None:
    policy = load_service(yaml.safe_load(section(transfer="numbers: {2: support}\n")))
    assert policy.transfer.numbers == {"2": "support"}


def test_hours_as_a_list_of_spans_closed_days_and_midnight() -> None:
    policy = load_service(
        yaml.safe_load(
            section(
                """\
                night:
                  members: ["9"]
                  hours:
                    timezone: UTC
                    week:
                      mon: ["09:00-12:00", "13:00-24:00"]
                      tue: "00:00-24:00"
                      wed: closed
                      thu: off
                      fri: []
                    workdays: ["2026-03-07"]
                """
            )
        )
    )
    week = policy.line("night").hours.week
    assert week[0] == (Span(dt.time(9), dt.time(12)), Span(dt.time(13), dt.time(0)))
    assert week[1] == (Span(dt.time(0), dt.time(0)),)
    assert week[2] == week[3] == week[4] == ()
    assert policy.line("night").hours.workdays == frozenset({dt.date(2026, 3, 7)})


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("15m", 15), ("15min", 15), ("1h30m", 90), ("4h", 240), ("2d", 2880), ("1d 2h", 1560)],
)
def test_durations(text: str, minutes: int) -> None:
    assert parse_duration(text) == dt.timedelta(minutes=minutes)


def test_seconds_are_a_duration_too() -> None:
    assert parse_duration("90s") == dt.timedelta(seconds=90)


@pytest.mark.parametrize("text", ["", "15", "1x", "m", "0m", "h1", "-5m"])
def test_not_durations(text: str) -> None:
    with pytest.raises(Exception, match="duration|longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("09:00-18:00", [(dt.time(9), dt.time(18))]),
        (" 9:00 - 13:00 ,14:00-18:00 ", [(dt.time(9), dt.time(13)), (dt.time(14), dt.time(18))]),
        ("20:00-24:00", [(dt.time(20), dt.time(0))]),
        ("closed", []),
        ("", []),
    ],
)
def test_spans(text: str, spans: list[tuple[dt.time, dt.time]]) -> None:
    assert parse_spans(text) == spans


# -- errors: each names the key and the fix --------------------------------------------------


def test_errors_name_the_file_and_the_section_key() -> None:
    with pytest.raises(MappingError) as caught:
        load_service({"lines": {"support": {"members": []}}}, file="mappings/acme.yaml")
    text = str(caught.value)
    assert "mappings/acme.yaml: service.lines.support.members: a line needs members" in text
    assert "mappings/acme.yaml: service.lines.support.hours: required" in text


def test_one_run_reports_every_problem() -> None:
    found = problems(
        """\
        lines:
          sales:
            ownr: {}
            members: []
            hours: {timezone: Europe/Moscw, week: {mnd: "09:00-18:00"}}
        defualt_line: sales
        """
    )
    assert sorted(key for key, _ in found) == [
        "service.defualt_line",
        "service.lines.sales.hours.timezone",
        "service.lines.sales.hours.week.mnd",
        "service.lines.sales.members",
        "service.lines.sales.ownr",
    ]


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        (section(defualt_line="support\n"), "service.defualt_line", "did you mean default_line?"),
        (
            section("  x:\n    members: ['1']\n    ownr: {}\n"),
            "service.lines.x.ownr",
            "did you mean owner?",
        ),
        (
            section("  x:\n    members: ['1']\n    owner: {strategy: least_loded}\n"),
            "service.lines.x.owner.strategy",
            "must be one of round_robin, least_loaded, strict_order (got 'least_loded')",
        ),
        (
            section("  x:\n    members: ['1']\n    owner: {stiky: any}\n"),
            "service.lines.x.owner.stiky",
            "did you mean sticky?",
        ),
        (
            section("  x:\n    members: ['1']\n    owner: {off_shift: later}\n"),
            "service.lines.x.owner.off_shift",
            "must be one of wait, next",
        ),
        (
            section("  x:\n    members: ['1']\n    owner: {max_load: 0}\n"),
            "service.lines.x.owner.max_load",
            "open sessions from 1 to 1000",
        ),
        (
            section("  Sales:\n    members: ['1']\n"),
            "service.lines.Sales",
            "line names are lower-case letters, digits and _",
        ),
        (section("  x: {members: []}\n"), "service.lines.x.members", "a line needs members"),
        (section("  x: {}\n"), "service.lines.x.members", "required"),
        (
            section("  x: {members: ['1'], title: {en: X}}\n"),
            "service.lines.x.title.ru",
            "required: the Russian text (client-facing texts are given in en and ru)",
        ),
        (
            section("  x: {members: ['1'], title: {ru: Х}}\n"),
            "service.lines.x.title.en",
            "required: the English text",
        ),
        (
            section("  x: {members: ['1'], title: {en: X, ru: ''}}\n"),
            "service.lines.x.title.ru",
            "is empty: write the text",
        ),
        (
            section("  x: {members: ['1'], title: {en: X, ru: Х, de: X}}\n"),
            "service.lines.x.title.de",
            "unknown key",
        ),
        (
            section("  x: {members: ['1'], bot: sometimes}\n"),
            "service.lines.x.bot",
            "must be one of always, out_of_hours, off",
        ),
        (
            section("  x: {members: ['1'], session_idle_hours: 0}\n"),
            "service.lines.x.session_idle_hours",
            "hours from 1 to 720",
        ),
        (
            section("  x: {members: ['1'], csat: {threshold: 6}}\n"),
            "service.lines.x.csat.threshold",
            "a score from 1 to 5",
        ),
        (
            section("  x: {members: ['1'], out_of_hours: {en: 'Back {tomorrow}', ru: 'Завтра'}}\n"),
            "service.lines.x.out_of_hours.en",
            "unknown placeholder {tomorrow}; this text takes {opening}, {opening_time}",
        ),
        (
            section("  x: {members: ['1'], out_of_hours: {en: 'Back {opening', ru: 'Завтра'}}\n"),
            "service.lines.x.out_of_hours.en",
            "unbalanced or malformed {placeholder}",
        ),
        (
            section("  x: {members: ['1'], supervisor: {alerts: []}}\n"),
            "service.lines.x.supervisor.user",
            "required",
        ),
        (
            section(
                "  x: {members: ['1'], supervisor: {user: '9',"
                " alerts: [{channel: email, to: boss}]}}\n"
            ),
            "service.lines.x.supervisor.alerts[0].to",
            "an e-mail address",
        ),
        (
            section("  x: {members: ['1'], sla: {high: {first_response: 15}}}\n"),
            "service.lines.x.sla.high.first_response",
            "give the unit: 15m for minutes, 15h for hours",
        ),
        (
            section("  x: {members: ['1'], sla: {high: {resolution: soon}}}\n"),
            "service.lines.x.sla.high.resolution",
            "a duration such as 15m, 1h30m, 4h or 2d (got 'soon')",
        ),
        (
            section("  x: {members: ['1'], sla: {high: {warn_share: 1.5}}}\n"),
            "service.lines.x.sla.high.warn_share",
            "a share from 0 to 1",
        ),
        (
            section("  x: {members: ['1'], sla: {high: {first_responce: 5m}}}\n"),
            "service.lines.x.sla.high.first_responce",
            "did you mean first_response?",
        ),
        (
            section("  x: {members: ['1'], priority: high}\n"),
            "service.lines.x.priority",
            "must be a whole number",
        ),
        (section(default_line="sales\n"), "service.default_line", "no line 'sales'"),
        (
            section("  x: {members: ['1'], quiet_minutes: -1}\n"),
            "service.lines.x.quiet_minutes",
            "minutes from 0 to 1440",
        ),
        (
            section("  x: {members: ['1'], csat: {rating_window: 2}}\n"),
            "service.lines.x.csat.rating_window",
            "give the unit",
        ),
        (section(knowledge_base="../kb.yaml\n"), "service.knowledge_base", "a YAML file in the"),
        (section(knowledge_base="/etc/kb.yaml\n"), "service.knowledge_base", "mappings directory"),
        (section(knowledge_base="kb.json\n"), "service.knowledge_base", "such as kb/acme.yaml"),
        (
            section(suggestions="{count: 0}\n"),
            "service.suggestions.count",
            "from 1 to 10 suggestions",
        ),
        (section(menus="{}\n", lines_="x"), "service.lines_", "unknown key"),
    ],
)
def test_each_rule_names_its_key_and_fix(text: str, key: str, says: str) -> None:
    assert says in problem(text, key)


@pytest.mark.parametrize(
    ("week", "key", "says"),
    [
        ("{mnd: '09:00-18:00'}", "week.mnd", "unknown day: did you mean mon?"),
        ("{mon-frd: '09:00-18:00'}", "week.mon-frd", "did you mean fri?"),
        ("{fri-mon: '09:00-18:00'}", "week.fri-mon", "a range runs forward through the week"),
        (
            "{mon-fri: '09:00-18:00', wed: '10:00-12:00'}",
            "week.wed",
            "wed is given twice (in mon-fri and wed): give each day once",
        ),
        ("{mon: '18:00-09:00'}", "week.mon", "a span ends after it starts"),
        ("{mon: '09:00-13:00, 12:00-18:00'}", "week.mon", "spans must be in order and not overlap"),
        ("{mon: '9-18'}", "week.mon", "a span is HH:MM-HH:MM such as 09:00-18:00 (got '9-18')"),
        ("{mon: '09:00-25:00'}", "week.mon", "not a time of day"),
        ("{mon: 9}", "week.mon", "spans as text"),
        ("{sun: closed}", "week", "the line is never open"),
    ],
)
def test_week_errors(week: str, key: str, says: str) -> None:
    text = f"""\
        lines:
          x:
            members: ["1"]
            hours: {{timezone: UTC, week: {week}}}
        """
    assert says in problem(text, f"service.lines.x.hours.{key}")


@pytest.mark.parametrize(
    ("hours", "key", "says"),
    [
        (
            "{timezone: europe/moscow, week: {mon: '09:00-18:00'}}",
            "timezone",
            "did you mean Europe/Moscow?",
        ),
        (
            "{timezone: Moscow, week: {mon: '09:00-18:00'}}",
            "timezone",
            "did you mean Europe/Moscow?",
        ),
        ("{week: {mon: '09:00-18:00'}}", "timezone", "required"),
        ("{timezone: UTC}", "week", "required"),
        (
            "{timezone: UTC, week: {mon: '09:00-18:00'}, holidays: ['2026-02-30']}",
            "holidays[0]",
            "a date as YYYY-MM-DD",
        ),
        (
            "{timezone: UTC, week: {mon: '09:00-18:00'}, calendar: kz}",
            "calendar",
            "must be one of ru (got 'kz')",
        ),
        ("{timezone: UTC, week: {mon: '09:00-18:00'}, wek: {}}", "wek", "did you mean week?"),
    ],
)
def test_hours_errors(hours: str, key: str, says: str) -> None:
    text = f"""\
        lines:
          x:
            members: ["1"]
            hours: {hours}
        """
    assert says in problem(text, f"service.lines.x.hours.{key}")


def test_a_line_without_hours_anywhere() -> None:
    says = problem("lines:\n  x: {members: ['1']}\n", "service.lines.x.hours")
    assert says == "required: the line's working hours (here or in defaults: hours:)"


def test_hours_in_defaults_are_enough() -> None:
    policy = load_service(
        yaml.safe_load(
            """\
            defaults: {hours: {timezone: UTC, week: {mon-sun: "00:00-24:00"}}}
            lines: {x: {members: ["1"]}}
            """
        )
    )
    assert len(policy.line("x").hours.week) == 7


MENU = """\
main:
  text: {en: Hi, ru: Привет}
  options:
"""


def menu_problem(options: str, key: str, extra: str = "") -> str:
    menus = MENU + textwrap.indent(textwrap.dedent(options), "    ") + extra
    return problem(section(menus=menus), f"service.menus.main.{key}")


@pytest.mark.parametrize(
    ("options", "key", "says"),
    [
        (
            "- {label: {en: Buy, ru: Купить}, line: suport}\n",
            "options[0].line",
            "no line 'suport': did you mean support?",
        ),
        (
            "- {label: {en: More, ru: Ещё}, menu: mian}\n",
            "options[0].menu",
            "no menu 'mian': did you mean main?",
        ),
        (
            "- {label: {en: Loop, ru: Петля}, menu: main}\n",
            "options[0].menu",
            "'main' leads back to 'main'",
        ),
        ("- {label: {en: Buy, ru: Купить}}\n", "options[0]", "the option does nothing"),
        (
            "- {label: {en: Buy, ru: Купить}, menu: main, line: support}\n",
            "options[0].menu",
            "an option opens a menu or routes the session, not both: remove menu or line",
        ),
        ("- {label: {en: Buy}, line: support}\n", "options[0].label.ru", "the Russian text"),
        (
            "- {label: {en: Back, ru: Вернуться}, line: support}\n",
            "options[0].label",
            "'back' is what a client types",
        ),
        (
            "- {label: {en: Operator, ru: Оператор}, line: support}\n",
            "options[0].label",
            "'operator' is what",
        ),
        (
            "- {label: {en: '2', ru: '2'}, line: support}\n",
            "options[0].label",
            "'2' is what a client types",
        ),
        (
            "- {label: {en: Buy, ru: Купить}, line: support}\n"
            "- {label: {en: 'buy!', ru: Покупка}, line: support}\n",
            "options[1].label",
            "'buy' is another option's label too",
        ),
        (
            "- {label: {en: Buy, ru: Купить}, line: support, lin: x}\n",
            "options[0].lin",
            "did you mean line?",
        ),
        ("[]\n", "options", "a menu holds 1 to 9 options"),
    ],
)
def test_menu_errors(options: str, key: str, says: str) -> None:
    if options.startswith("[]"):
        text = section(menus="main:\n  text: {en: Hi, ru: Привет}\n  options: []\n")
        assert says in problem(text, f"service.menus.main.{key}")
        return
    assert says in menu_problem(options, key)


def test_ten_options_are_too_many() -> None:
    options = "".join(
        f"- {{label: {{en: 'Opt {n}', ru: 'Вар {n}'}}, line: support}}\n" for n in range(10)
    )
    assert "put more in a submenu" in menu_problem(options, "options")


def test_a_cycle_through_submenus() -> None:
    menus = textwrap.dedent(
        """\
        main:
          text: {en: Hi, ru: Привет}
          options: [{label: {en: More, ru: Ещё}, menu: more}]
        more:
          text: {en: More, ru: Ещё}
          options: [{label: {en: Top, ru: Верх}, menu: main}]
        """
    )
    found = dict(problems(section(menus=menus)))
    assert "'more' leads back to 'main'" in found["service.menus.main.options[0].menu"]
    assert "'main' leads back to 'more'" in found["service.menus.more.options[0].menu"]


@pytest.mark.parametrize(
    ("rules", "key", "says"),
    [
        ("- {line: support}\n", "rules[0]", "a rule needs a condition"),
        ("- {keywords: [refund], line: suport}\n", "rules[0].line", "did you mean support?"),
        ("- {field: segment, line: support}\n", "rules[0].values", "field needs values"),
        ("- {values: [vip], line: support}\n", "rules[0].field", "values need field"),
        ("- {languages: [english], line: support}\n", "rules[0].languages[0]", "a language code"),
        (
            "- {channels: [Telegram], line: support}\n",
            "rules[0].channels[0]",
            "channel kinds are lower-case",
        ),
        ("- {keyword: [refund], line: support}\n", "rules[0].keyword", "did you mean keywords?"),
    ],
)
def test_rule_errors(rules: str, key: str, says: str) -> None:
    assert says in problem(section(rules=rules), f"service.{key}")


@pytest.mark.parametrize(
    ("greetings", "key", "says"),
    [
        ("- {menu: nope}\n", "greetings[0].menu", "no menu 'nope'"),
        ("- {}\n", "greetings[0].menu", "required"),
        ("- {menu: null, lines: [suport]}\n", "greetings[0].lines", "did you mean support?"),
        (
            "- {menu: null, hours: night}\n",
            "greetings[0].hours",
            "must be one of any, open, closed",
        ),
    ],
)
def test_greeting_errors(greetings: str, key: str, says: str) -> None:
    assert says in problem(section(greetings=greetings), f"service.{key}")


@pytest.mark.parametrize(
    ("transfer", "key", "says"),
    [
        ("numbers: {2: suport}\n", "transfer.numbers.2", "no line 'suport': did you mean support?"),
        ("numbers: {two: support}\n", "transfer.numbers.two", "a number from 1 to 99"),
        ("stages: {WON: nope}\n", "transfer.stages.WON", "no line 'nope'"),
        ("tags: {vip: nope}\n", "transfer.tags.vip", "no line 'nope'"),
        ("tell: always\n", "transfer.tell", "must be one of each_line, once, never"),
        (
            "notice: {en: 'Moved to {team}', ru: 'Передано: {line}'}\n",
            "transfer.notice.en",
            "unknown placeholder {team}; this text takes {line}",
        ),
    ],
)
def test_transfer_errors(transfer: str, key: str, says: str) -> None:
    assert says in problem(section(transfer=transfer), f"service.{key}")


def test_a_section_that_is_not_a_mapping() -> None:
    [(key, says)] = problems("[]\n")
    assert key == "service"
    assert says.startswith("must be a mapping")


def test_lines_are_required() -> None:
    assert problem("menus: {}\n", "service.lines") == "required: add this key"


# -- the hooks the core calls once it knows more --------------------------------------------


def test_knowledge_ids_are_checked_against_the_knowledge_base() -> None:
    policy = example()
    assert check_knowledge(policy, {"order-status", "returns"}) == []
    assert check_knowledge(policy, {"order-stat", "returns"}) == [
        (
            "service.menus.main.options[1].knowledge",
            "no knowledge-base entry with this id: did you mean order-stat? (got 'order-status')",
        )
    ]


def test_channels_are_checked_against_the_mapped_channels() -> None:
    policy = example()
    found = check_channels(policy, {"telegram", "email", "whatsap"})
    assert found == [
        (
            "service.lines.sales.channels",
            "channel 'whatsapp' is not one of the mapping's channels: did you mean whatsap?",
        ),
        (
            "service.greetings[0].channels",
            "channel 'whatsapp' is not one of the mapping's channels: did you mean whatsap?",
        ),
    ]
