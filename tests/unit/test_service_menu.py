"""The greeting menu (``bridge/service/menu.py``): which menu greets a new
session, the menu as numbered text in en/ru and as buttons, and the
client's reply read as a choice, a submenu, back or a person."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import yaml

from bridge.service.menu import (
    MenuState,
    Step,
    answer,
    buttons,
    greeting_menu,
    render,
    start,
)
from bridge.service.routing import Facts, choose_line
from mappings.service import ServicePolicy, ServiceSchema

MOSCOW = ZoneInfo("Europe/Moscow")
#: a plain Monday (no holiday in Russia's production calendar)
MONDAY = dt.date(2026, 3, 2)

POLICY = yaml.safe_load(
    """\
    defaults:
      hours: {timezone: Europe/Moscow, week: {mon-fri: "09:00-18:00"}, calendar: ru}
    lines:
      support: {title: {en: Support, ru: Поддержка}, members: ["1"]}
      sales: {title: {en: Sales, ru: Продажи}, members: ["2"], channels: [telegram]}
      partners: {title: {en: Partners, ru: Партнёры}, members: ["3"]}
    menus:
      main:
        text: {en: "Hello! How can we help?", ru: "Здравствуйте! Чем помочь?"}
        options:
          - label: {en: Buy, ru: Купить}
            line: sales
            tags: [menu-buy]
            fields: {source: menu}
          - label: {en: Order status, ru: Статус заказа}
            knowledge: order-status
          - label: {en: Something else, ru: Другое}
            menu: other
      other:
        text: {en: "Choose a topic:", ru: "Выберите тему:"}
        options:
          - {label: {en: Partnership, ru: Сотрудничество}, line: partners}
          - {label: {en: Even more, ru: Ещё}, menu: deep}
      deep:
        text: {en: "Last level:", ru: "Последний уровень:"}
        options:
          - {label: {en: Complaint, ru: Жалоба}, line: support, tags: [complaint]}
      night:
        text: {en: "We are closed. Leave a message:", ru: "Мы не работаем. Оставьте сообщение:"}
        options:
          - {label: {en: Call me back, ru: Перезвоните мне}, tags: [callback]}
    greetings:
      - {menu: null, channels: [email]}
      - {menu: night, hours: closed}
      - {menu: main, lines: [sales, support]}
    """
)


def policy() -> ServicePolicy:
    loaded: ServicePolicy = ServiceSchema().load(POLICY)
    return loaded


MAIN = start(policy(), "main")
OTHER = MenuState(("main", "other"))


# -- rendering -------------------------------------------------------------------------------


def test_the_top_menu_in_english() -> None:
    assert render(policy(), MAIN, "en") == (
        "Hello! How can we help?\n"
        "1 — Buy\n"
        "2 — Order status\n"
        "3 — Something else\n"
        "0 — Talk to a person"
    )


def test_the_top_menu_in_russian() -> None:
    assert render(policy(), MAIN, "ru") == (
        "Здравствуйте! Чем помочь?\n"
        "1 — Купить\n"
        "2 — Статус заказа\n"
        "3 — Другое\n"
        "0 — Связаться с оператором"
    )


def test_a_nested_menu_has_back_and_still_the_person() -> None:
    assert render(policy(), OTHER, "en") == (
        "Choose a topic:\n1 — Partnership\n2 — Even more\n# — Back\n0 — Talk to a person"
    )
    assert render(policy(), OTHER, "ru-RU").splitlines()[-2:] == [
        "# — Назад",
        "0 — Связаться с оператором",
    ]


def test_an_unknown_language_reads_english() -> None:
    assert (
        render(policy(), MAIN, "de") == render(policy(), MAIN, None) == render(policy(), MAIN, "en")
    )


def test_buttons_per_level() -> None:
    p = policy()
    assert buttons(p, MAIN, "en") == [
        ("1", "Buy"),
        ("2", "Order status"),
        ("3", "Something else"),
        ("0", "Talk to a person"),
    ]
    assert buttons(p, OTHER, "ru") == [
        ("1", "Сотрудничество"),
        ("2", "Ещё"),
        ("#", "Назад"),
        ("0", "Связаться с оператором"),
    ]


@pytest.mark.parametrize("state", [MAIN, OTHER, MenuState(("main", "other", "deep"))])
def test_every_button_id_is_a_reply_that_does_what_it_says(state: MenuState) -> None:
    p = policy()
    for key, label in buttons(p, state, "en"):
        by_id, by_label = answer(p, state, key), answer(p, state, label)
        assert by_id == by_label
        assert by_id.kind != "unknown"


def test_the_person_is_one_step_away_at_every_level() -> None:
    p = policy()
    for state in (MAIN, OTHER, MenuState(("main", "other", "deep"))):
        assert buttons(p, state, "en")[-1] == ("0", "Talk to a person")
        assert answer(p, state, "0") == Step("person", state)


def test_start_refuses_an_unknown_menu() -> None:
    with pytest.raises(KeyError):
        start(policy(), "nope")


# -- replies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    ["1", " 1 ", "1.", "1)", "1️⃣", "buy", "BUY", "  Buy!", "купить", "КУПИТЬ", "Купить."],
)
def test_a_reply_chooses_the_first_option(reply: str) -> None:
    step = answer(policy(), MAIN, reply)
    assert step.kind == "choice"
    assert step.option is not None
    assert (step.option.line, step.option.tags, step.option.fields) == (
        "sales",
        ("menu-buy",),
        {"source": "menu"},
    )


@pytest.mark.parametrize("reply", ["2", "order status", "Order   Status", "статус заказа"])
def test_a_self_service_option(reply: str) -> None:
    step = answer(policy(), MAIN, reply)
    assert step.option is not None
    assert (step.kind, step.option.knowledge, step.option.line) == ("choice", "order-status", None)


@pytest.mark.parametrize(
    "reply",
    ["0", "0️⃣", "operator", "Оператор", "человек", "talk to a person", "Связаться с оператором"],
)
def test_a_person(reply: str) -> None:
    assert answer(policy(), OTHER, reply) == Step("person", OTHER)


def test_nested_menus_and_back() -> None:
    p = policy()
    down = answer(p, MAIN, "3")
    assert down == Step("menu", OTHER)
    deeper = answer(p, down.state, "ещё")
    assert deeper == Step("menu", MenuState(("main", "other", "deep")))
    chosen = answer(p, deeper.state, "жалоба")
    assert chosen.kind == "choice" and chosen.option is not None
    assert (chosen.option.line, chosen.option.tags) == ("support", ("complaint",))
    for back in ("#", "#️⃣", "back", "Назад"):
        assert answer(p, deeper.state, back) == Step("menu", OTHER)
    assert answer(p, OTHER, "#") == Step("menu", MAIN)


def test_back_at_the_top_shows_the_top_again() -> None:
    assert answer(policy(), MAIN, "назад") == Step("menu", MAIN)


@pytest.mark.parametrize("reply", ["4", "10", "11", "hello", "buy something", "2 3", "", "   "])
def test_anything_else_is_not_a_choice(reply: str) -> None:
    assert answer(policy(), MAIN, reply) == Step("unknown", MAIN)


def test_numbers_are_per_level() -> None:
    # 3 opens a submenu at the top; the submenu has two options
    assert answer(policy(), OTHER, "3") == Step("unknown", OTHER)


def test_the_menu_state_survives_a_round_trip() -> None:
    state = MenuState(("main", "other"))
    assert MenuState.from_dict(state.to_dict()) == state
    assert (state.current, state.nested, MAIN.nested) == ("other", True, False)


def test_a_choice_routes_the_session_as_the_menu_line() -> None:
    p = policy()
    step = answer(p, OTHER, "1")
    assert step.option is not None
    facts = Facts("web", text="hi", menu_line=step.option.line)
    assert choose_line(p, facts).line == "partners"


# -- which menu greets a new session ---------------------------------------------------------


def at(hour: int, day: dt.date = MONDAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), MOSCOW)


def test_greetings_first_match_by_channel_hours_and_line() -> None:
    p = policy()
    assert greeting_menu(p, "email", "support", at(10)) is None
    assert greeting_menu(p, "telegram", "support", at(10)) == "main"
    assert greeting_menu(p, "telegram", "sales", at(10)) == "main"
    assert greeting_menu(p, "telegram", "partners", at(10)) is None  # no greeting for it


@pytest.mark.parametrize(
    ("moment", "menu"),
    [
        (at(8), "night"),
        (at(9), "main"),
        (at(17), "main"),
        (at(18), "night"),
        (at(12, MONDAY + dt.timedelta(days=5)), "night"),  # Saturday
        (at(12, dt.date(2026, 1, 5)), "night"),  # a Monday of Russia's New Year holidays
    ],
)
def test_greetings_by_the_lines_hours(moment: dt.datetime, menu: str) -> None:
    assert greeting_menu(policy(), "telegram", "support", moment) == menu


def test_greetings_read_the_lines_time_zone() -> None:
    # 06:30 UTC is 09:30 in Moscow: open
    assert (
        greeting_menu(policy(), "web", "sales", dt.datetime(2026, 3, 2, 6, 30, tzinfo=dt.UTC))
        == "main"
    )
