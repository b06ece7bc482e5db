"""Routing a session (``bridge/service/routing.py``): a test per rule, per
owner strategy and per sticky case; and transfers between lines
(``bridge/service/transfer.py``): the commands, stages and tags, the new
line's owner, and telling the client once."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
import yaml

from bridge.service.routing import (
    Facts,
    LineChoice,
    Member,
    Route,
    RoutingState,
    choose_line,
    choose_owner,
    route,
)
from bridge.service.transfer import (
    by_stage,
    by_tags,
    decide,
    notice,
    parse_command,
    resolve,
    should_tell,
    unknown_target,
)
from mappings.service import ServicePolicy, ServiceSchema

HOURS = {"timezone": "Europe/Moscow", "week": {"mon-fri": "09:00-18:00"}}
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)

POLICY_YAML = """\
defaults:
  hours: {timezone: Europe/Moscow, week: {mon-fri: "09:00-18:00"}}
lines:
  support:
    title: {en: Support, ru: Поддержка}
    members: ["a", "b", "c"]
    owner: {strategy: round_robin}
  sales:
    title: {en: Sales, ru: Продажи}
    channels: [telegram]
    members: ["s1", "s2"]
    priority: 5
    owner: {strategy: least_loaded}
  vip:
    title: {en: VIP desk, ru: VIP-отдел}
    channels: [telegram]
    audience: [clients]
    members: ["v1", "v2"]
    priority: 10
    owner: {strategy: strict_order}
  partners:
    title: {en: Partners, ru: Партнёры}
    audience: [partners]
    members: ["p1"]
  second:
    title: {en: Second-line support, ru: Вторая линия}
    members: ["x1", "x2"]
  english:
    title: {en: English desk, ru: Английский отдел}
    members: ["e1"]
default_line: support
rules:
  - {keywords: ["возврат*", "money back", refund], line: second}
  - {channels: [email], languages: [en], line: english}
  - {field: segment, values: [Partner, dealer], line: partners}
  - {audience: [partners], line: partners}
  - {languages: [en], line: english}
transfer:
  numbers: {1: support, 2: second}
  stages: {"C1:ESCALATED": second}
  tags: {Escalate: second, sales: sales}
"""


def policy(text: str = POLICY_YAML) -> ServicePolicy:
    loaded: ServicePolicy = ServiceSchema().load(yaml.safe_load(text))
    return loaded


def everyone(*users: str, load: int = 0) -> dict[str, Member]:
    return {user: Member(on_shift=True, load=load) for user in users}


def line_with(owner: dict[str, Any], members: list[str]) -> ServicePolicy:
    return ServiceSchema().load(
        {"lines": {"desk": {"members": members, "owner": owner, "hours": HOURS}}}
    )


# -- the line: a test per rule ---------------------------------------------------------------


def test_the_menu_choice_comes_first() -> None:
    # the text would match the keyword rule and the language rule
    facts = Facts("telegram", text="refund please", language="en", menu_line="sales")
    assert choose_line(policy(), facts) == LineChoice("sales", "menu")


def test_an_unknown_menu_line_is_ignored() -> None:
    assert choose_line(policy(), Facts("web", menu_line="gone")).line == "support"


@pytest.mark.parametrize(
    "text",
    [
        "Хочу возврат",
        "оформите ВОЗВРАТ денег",
        "по возврату заказа",  # a prefix keyword (возврат*) takes the inflected forms
        "I want a REFUND!",
        "money   back now",  # a phrase: its words in a row
        "Money back?",
    ],
)
def test_keywords(text: str) -> None:
    choice = choose_line(policy(), Facts("web", text=text))
    assert (choice.line, choice.reason) == ("second", "rule 1 (keywords)")


@pytest.mark.parametrize(
    "text",
    [
        "refunds",  # a word without * matches only itself
        "back money",  # a phrase's words in its order
        "moneyback",
        "",
    ],
)
def test_not_keywords(text: str) -> None:
    assert choose_line(policy(), Facts("web", text=text)).line == "support"


def test_yo_is_read_as_ye() -> None:
    p = policy(POLICY_YAML.replace('"возврат*"', '"ещё*"'))
    assert choose_line(p, Facts("web", text="Еще вопрос")).line == "second"


def test_channel_and_language_both_hold() -> None:
    p = policy()
    english_mail = choose_line(p, Facts("email", language="en"))
    assert (english_mail.line, english_mail.reason) == ("english", "rule 2 (channel, language)")
    assert choose_line(p, Facts("email", language="ru")).line == "support"


@pytest.mark.parametrize("language", ["en", "en-US", "EN_gb"])
def test_the_language_rule_reads_the_primary_tag(language: str) -> None:
    choice = choose_line(policy(), Facts("web", language=language))
    assert (choice.line, choice.reason) == ("english", "rule 5 (language)")


def test_no_language_matches_no_language_rule() -> None:
    assert choose_line(policy(), Facts("web", language=None)).line == "support"


@pytest.mark.parametrize(
    "value",
    # one value in any case; one of several (a multiselect read as "a, b";
    # a HubSpot multiple checkbox as stored, "a;b")
    ["partner", "PARTNER", " Dealer ", "Gold, Partner", "gold;dealer"],
)
def test_the_crm_segment_field(value: str) -> None:
    choice = choose_line(policy(), Facts("web", fields={"segment": value}))
    assert (choice.line, choice.reason) == ("partners", "rule 3 (field)")


def test_another_segment_value_or_field_does_not_match() -> None:
    p = policy()
    assert choose_line(p, Facts("web", fields={"segment": "retail"})).line == "support"
    assert choose_line(p, Facts("web", fields={"segment": "retail, gold"})).line == "support"
    assert choose_line(p, Facts("web", fields={"tier": "partner"})).line == "support"


def test_the_audience_rule() -> None:
    choice = choose_line(policy(), Facts("web", audience="partners"))
    assert (choice.line, choice.reason) == ("partners", "rule 4 (audience)")


def test_rules_in_order_the_first_match_wins() -> None:
    # keywords (rule 1) before the field (rule 3) and the language (rule 5)
    facts = Facts("web", text="refund", language="en", fields={"segment": "partner"})
    assert choose_line(policy(), facts).reason == "rule 1 (keywords)"


def test_lines_serving_the_channel_by_priority() -> None:
    p = policy()
    # telegram: sales (priority 5) serves it; vip (priority 10) its clients only
    sales = LineChoice("sales", "serves the session (priority 5)")
    assert choose_line(p, Facts("telegram")) == sales
    assert choose_line(p, Facts("telegram", audience="leads")) == sales
    assert choose_line(p, Facts("telegram", audience="clients")) == LineChoice(
        "vip", "serves the session (priority 10)"
    )


def test_equal_priority_keeps_the_files_order() -> None:
    text = POLICY_YAML.replace("priority: 10", "priority: 5")
    assert choose_line(policy(text), Facts("telegram", audience="clients")).line == "sales"


def test_the_default_line_last() -> None:
    choice = choose_line(policy(), Facts("web", text="hello"))
    assert (choice.line, choice.reason) == ("support", "default")


# -- the owner: strategies -------------------------------------------------------------------


def assign_many(p: ServicePolicy, staff: dict[str, Member], times: int) -> list[str]:
    """Owners of ``times`` sessions in a row, the state carried from one to the next."""
    state = RoutingState()
    owners = []
    for _ in range(times):
        chosen = choose_owner(p.line("desk"), None, staff, state)
        assert chosen.verdict == "assign" and chosen.owner is not None
        owners.append(chosen.owner)
        state = chosen.state
    return owners


def test_round_robin_is_fair_over_many_assignments() -> None:
    p = line_with({"strategy": "round_robin"}, ["a", "b", "c"])
    owners = assign_many(p, everyone("a", "b", "c"), 30)
    assert owners[:4] == ["a", "b", "c", "a"]
    assert Counter(owners) == {"a": 10, "b": 10, "c": 10}


def test_round_robin_skips_who_is_off_shift_and_resumes_after_the_last() -> None:
    p = line_with({"strategy": "round_robin"}, ["a", "b", "c"])
    staff = {"a": Member(True), "b": Member(False), "c": Member(True)}
    assert assign_many(p, staff, 4) == ["a", "c", "a", "c"]
    after_a = RoutingState({"desk": "a"})
    assert choose_owner(p.line("desk"), None, everyone("a", "b", "c"), after_a).owner == "b"


def test_round_robin_state_survives_a_round_trip() -> None:
    state = RoutingState({"desk": "b", "other": "x"})
    assert RoutingState.from_dict(state.to_dict()) == state
    assert RoutingState.from_dict(None) == RoutingState()


def test_round_robin_after_a_member_left_starts_over() -> None:
    p = line_with({"strategy": "round_robin"}, ["a", "b"])
    gone = RoutingState({"desk": "z"})
    assert choose_owner(p.line("desk"), None, everyone("a", "b"), gone).owner == "a"


def test_least_loaded_takes_the_fewest_open_sessions() -> None:
    p = line_with({"strategy": "least_loaded"}, ["a", "b", "c"])
    staff = {"a": Member(load=3), "b": Member(load=1), "c": Member(load=2)}
    chosen = choose_owner(p.line("desk"), None, staff, RoutingState())
    assert (chosen.owner, chosen.reason) == ("b", "least_loaded (load 1)")


def test_least_loaded_ties_go_to_who_was_assigned_least_recently() -> None:
    p = line_with({"strategy": "least_loaded"}, ["a", "b", "c"])
    staff = {
        "a": Member(load=1, last_assigned=T0 + dt.timedelta(minutes=5)),
        "b": Member(load=1, last_assigned=T0),
        "c": Member(load=1, last_assigned=T0 + dt.timedelta(minutes=1)),
    }
    assert choose_owner(p.line("desk"), None, staff, RoutingState()).owner == "b"


def test_least_loaded_ties_never_assigned_first_then_the_members_order() -> None:
    p = line_with({"strategy": "least_loaded"}, ["a", "b", "c"])
    staff = {"a": Member(load=0, last_assigned=T0), "b": Member(load=0), "c": Member(load=0)}
    assert choose_owner(p.line("desk"), None, staff, RoutingState()).owner == "b"


def test_least_loaded_spreads_sessions_as_load_grows() -> None:
    p = line_with({"strategy": "least_loaded"}, ["a", "b", "c"])
    staff = everyone("a", "b", "c")
    owners = []
    for minute in range(9):
        owner = choose_owner(p.line("desk"), None, staff, RoutingState()).owner
        assert owner is not None
        owners.append(owner)
        was = staff[owner]
        staff[owner] = Member(True, was.load + 1, T0 + dt.timedelta(minutes=minute))
    assert owners == ["a", "b", "c"] * 3


def test_strict_order_takes_the_first_on_shift() -> None:
    p = line_with({"strategy": "strict_order"}, ["a", "b", "c"])
    staff = {"a": Member(False), "b": Member(True, load=7), "c": Member(True)}
    assert assign_many(p, staff, 3) == ["b", "b", "b"]


def test_max_load_skips_a_full_member() -> None:
    p = line_with({"strategy": "strict_order", "max_load": 2}, ["a", "b"])
    staff = {"a": Member(load=2), "b": Member(load=1)}
    assert choose_owner(p.line("desk"), None, staff, RoutingState()).owner == "b"


def test_everyone_full_is_a_wait() -> None:
    p = line_with({"strategy": "least_loaded", "max_load": 2}, ["a", "b"])
    chosen = choose_owner(p.line("desk"), None, everyone("a", "b", load=2), RoutingState())
    assert (chosen.verdict, chosen.owner, chosen.reason) == ("wait", None, "everyone at max load")


def test_nobody_on_shift_is_a_wait() -> None:
    p = line_with({"strategy": "round_robin"}, ["a", "b"])
    staff = {"a": Member(False)}  # b is not in the view at all
    chosen = choose_owner(p.line("desk"), None, staff, RoutingState())
    assert chosen == Route("desk", "wait", None, "nobody on shift", RoutingState())


# -- the owner: sticky -----------------------------------------------------------------------


def test_sticky_the_clients_owner_on_shift_keeps_the_client() -> None:
    p = line_with({"strategy": "round_robin"}, ["a", "b", "c"])
    state = RoutingState({"desk": "a"})
    chosen = choose_owner(p.line("desk"), "c", everyone("a", "b", "c"), state)
    assert (chosen.verdict, chosen.owner, chosen.reason) == (
        "assign",
        "c",
        "sticky: the client's owner",
    )
    assert chosen.state == state  # round-robin's turn is not used up


def test_sticky_ignores_max_load() -> None:
    p = line_with({"strategy": "least_loaded", "max_load": 1}, ["a", "b"])
    staff = {"a": Member(load=5), "b": Member(load=0)}
    assert choose_owner(p.line("desk"), "a", staff, RoutingState()).owner == "a"


def test_sticky_owner_off_shift_wait() -> None:
    p = line_with({"strategy": "round_robin", "off_shift": "wait"}, ["a", "b"])
    staff = {"a": Member(False), "b": Member(True)}
    chosen = choose_owner(p.line("desk"), "a", staff, RoutingState())
    assert (chosen.verdict, chosen.owner, chosen.reason) == (
        "wait",
        "a",
        "sticky: the client's owner is off shift",
    )


def test_sticky_owner_off_shift_next() -> None:
    p = line_with({"strategy": "round_robin", "off_shift": "next"}, ["a", "b"])
    staff = {"a": Member(False), "b": Member(True)}
    chosen = choose_owner(p.line("desk"), "a", staff, RoutingState())
    assert (chosen.verdict, chosen.owner, chosen.reason) == (
        "assign",
        "b",
        "the client's owner is off shift; round_robin",
    )


def test_sticky_owner_off_shift_next_and_nobody_else() -> None:
    p = line_with({"strategy": "round_robin", "off_shift": "next"}, ["a", "b"])
    staff = {"a": Member(False), "b": Member(False)}
    chosen = choose_owner(p.line("desk"), "a", staff, RoutingState())
    assert (chosen.verdict, chosen.owner) == ("wait", None)
    assert chosen.reason == "the client's owner is off shift; nobody on shift"


def test_sticky_line_only_for_a_member_of_the_line() -> None:
    p = line_with({"strategy": "strict_order", "sticky": "line"}, ["a", "b"])
    staff = everyone("a", "b", "outsider")
    assert choose_owner(p.line("desk"), "outsider", staff, RoutingState()).owner == "a"


def test_sticky_any_for_any_crm_user_on_shift() -> None:
    p = line_with({"strategy": "strict_order", "sticky": "any"}, ["a", "b"])
    staff = everyone("a", "b", "outsider")
    assert choose_owner(p.line("desk"), "outsider", staff, RoutingState()).owner == "outsider"


def test_sticky_off() -> None:
    p = line_with({"strategy": "strict_order", "sticky": "off"}, ["a", "b"])
    assert choose_owner(p.line("desk"), "b", everyone("a", "b"), RoutingState()).owner == "a"


# -- the whole route -------------------------------------------------------------------------


def test_route_gives_the_line_the_owner_and_the_reason() -> None:
    facts = Facts("web", text="Мне нужен возврат, телефон +79991234567", owner=None)
    routed = route(policy(), facts, everyone("x1", "x2"), RoutingState())
    assert (routed.line, routed.verdict, routed.owner) == ("second", "assign", "x1")
    assert routed.reason == "rule 1 (keywords); round_robin"
    assert "79991234567" not in routed.reason and "возврат" not in routed.reason
    assert routed.state == RoutingState({"second": "x1"})


def test_route_with_a_sticky_owner_of_the_chosen_line() -> None:
    facts = Facts("telegram", owner="s2")
    staff = {"s1": Member(load=0), "s2": Member(load=4)}
    routed = route(policy(), facts, staff, RoutingState())
    assert (routed.line, routed.owner, routed.reason) == (
        "sales",
        "s2",
        "serves the session (priority 5); sticky: the client's owner",
    )


# -- transfers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "where"),
    [
        ("/transfer 2", "2"),
        ("  /TRANSFER   2  ", "2"),
        ("/transfer_2", "2"),
        ("/transfer support", "support"),
        ("/transfer Вторая линия", "Вторая линия"),
        ("/перевод 2", "2"),
        ("/Перевести вторая линия", "вторая линия"),
        ("/transfer", ""),
    ],
)
def test_transfer_commands(reply: str, where: str) -> None:
    assert parse_command(reply) == where


@pytest.mark.parametrize(
    "reply",
    ["transfer 2", "please /transfer 2", "/transferred", "/transfer 2\nthanks", "/help", ""],
)
def test_not_transfer_commands(reply: str) -> None:
    assert parse_command(reply) is None


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("2", "second"),
        ("2.", "second"),
        ("1", "support"),
        ("second", "second"),
        ("SECOND", "second"),
        ("Second-line support", "second"),
        ("вторая   ЛИНИЯ", "second"),
        ("Продажи", "sales"),
        ("3", None),
        ("", None),
        ("nowhere", None),
    ],
)
def test_transfer_targets(where: str, line: str | None) -> None:
    assert resolve(policy(), where) == line


def test_transfer_by_stage_and_tags() -> None:
    p = policy()
    assert by_stage(p, "C1:ESCALATED") == "second"
    assert by_stage(p, "C1:NEW") is None and by_stage(p, None) is None
    assert by_tags(p, ["foo", "ESCALATE"]) == "second"
    # two mapped tags: the mapping's order decides
    assert by_tags(p, ["sales", "escalate"]) == "second"
    assert by_tags(p, ["foo"]) is None and by_tags(p, []) is None


@pytest.mark.parametrize(
    ("mode", "told", "line", "tell"),
    [
        ("each_line", [], "second", True),
        ("each_line", ["second"], "second", False),  # back to a line already told of
        ("each_line", ["second"], "third", True),
        ("once", [], "second", True),
        ("once", ["second"], "third", False),
        ("never", [], "second", False),
    ],
)
def test_should_tell(mode: str, told: list[str], line: str, tell: bool) -> None:
    assert should_tell(mode, told, line) is tell


def test_a_transfer_is_decided_once_per_move() -> None:
    p = policy()
    moved = decide(p, "support", "second", told=(), via="command")
    assert moved is not None
    assert (moved.line, moved.tell, moved.reason) == (
        "second",
        True,
        "command: support -> second; told",
    )
    # the stage webhook delivered again: the session is already there
    assert decide(p, "second", "second", told=("second",), via="stage") is None
    assert decide(p, "support", "gone", told=(), via="tag") is None
    again = decide(p, "support", "second", told=("second",), via="tag")
    assert again is not None and again.tell is False


def test_the_transfer_notice_in_the_clients_language() -> None:
    p = policy()
    assert notice(p, "second", "en") == (
        "Your conversation has been passed to Second-line support."
        " Everything you wrote stays with it."
    )
    assert (
        notice(p, "second", "ru-RU") == "Ваш диалог передан: Вторая линия. Вся переписка сохранена."
    )


def test_the_mappings_own_transfer_notice() -> None:
    text = POLICY_YAML + "  notice: {en: 'Now with {line}', ru: 'Теперь: {line}'}\n"
    assert notice(policy(text), "sales", "ru") == "Теперь: Продажи"


def test_an_unknown_target_tells_the_crm_user_the_choices() -> None:
    p = policy()
    known = "1 (support), 2 (second), support, sales, vip, partners, second, english"
    assert (
        unknown_target(p, "7", "en")
        == f"No line '7' to transfer to. Use a number or a line: {known}."
    )
    assert unknown_target(p, "7", "ru") == (
        f"Нет линии '7' для перевода. Укажите номер или линию: {known}."
    )


def test_after_a_transfer_the_new_lines_strategy_picks_the_owner() -> None:
    p = policy()
    moved = decide(p, "support", resolve(p, "2") or "", told=(), via="command")
    assert moved is not None
    chosen = choose_owner(p.line(moved.line), "a", everyone("a", "x1", "x2"), RoutingState())
    # "a" owned the client on support; sticky (line) does not follow to a line they are not on
    assert (chosen.line, chosen.owner) == ("second", "x1")
