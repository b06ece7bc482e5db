"""SLA clocks (bridge.service.sla) in business time: first response, next
response and resolution; due times over closings, breaks, holidays, a
transferred working Saturday and a daylight-saving change; pause while
waiting for the client and resume; transfers between lines; every warning
and breach given exactly once. Every event carries its instant: no clock
is read, nothing sleeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.service.calendar import Hours, Span
from bridge.service.sla import (
    Alert,
    SlaState,
    Targets,
    check,
    client_wrote,
    closed,
    due,
    moved,
    next_check,
    operator_replied,
    record,
    start,
)

MSK = ZoneInfo("Europe/Moscow")
VVO = ZoneInfo("Asia/Vladivostok")
BERLIN = ZoneInfo("Europe/Berlin")
T = dt.time
MIN = dt.timedelta(minutes=1)
WEEKDAYS = {d: (Span(T(9), T(13)), Span(T(14), T(18))) for d in range(5)}
OFFICE = Hours("Europe/Moscow", WEEKDAYS, calendar="ru")
FAR_EAST = Hours("Asia/Vladivostok", {d: (Span(T(9), T(18)),) for d in range(5)})
BERLIN_DAYS = Hours("Europe/Berlin", {d: (Span(T(9), T(17)),) for d in range(7)})
#: first response 15 min, next response 30 min, resolution 8 h; warn at 80 %
TARGETS = Targets(first_response=15 * MIN, next_response=30 * MIN, resolution=dt.timedelta(hours=8))


def msk(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=MSK)


MON = (2026, 12, 7)  # an ordinary Monday; Friday 4 Dec before it


def mon(hour: int, minute: int = 0) -> dt.datetime:
    return msk(*MON, hour, minute)


def tue(hour: int, minute: int = 0) -> dt.datetime:
    return msk(2026, 12, 8, hour, minute)


Event = tuple[str, dt.datetime]


def run(events: Sequence[Event], hours: Hours = OFFICE, targets: Targets = TARGETS) -> SlaState:
    """The state after ``events``: ("client"|"operator"|"close", at)."""
    step = {"client": client_wrote, "operator": operator_replied, "close": closed}
    state = start(hours, targets)
    for name, at in events:
        state = step[name](state, at)
    return state


def alerts_over(state: SlaState, first: dt.datetime, last: dt.datetime) -> list[Alert]:
    """Every alert a check each minute from ``first`` to ``last`` gives,
    each recorded as the core records it."""
    given_: list[Alert] = []
    now = first
    while now <= last:
        found = check(state, now)
        state = record(state, found)
        given_ += found
        now += MIN
    return given_


# -- due times -------------------------------------------------------------------------------

DUE_CASES = [
    # (events, the nearest due time, why)
    ([("client", msk(2026, 12, 4, 23, 0))], mon(9, 15), "23:00 Friday: due Monday morning"),
    ([("client", mon(23, 0))], tue(9, 15), "23:00: due next morning"),
    ([("client", mon(17, 55))], tue(9, 10), "5 min before closing: 10 min left for tomorrow"),
    ([("client", mon(12, 50))], mon(14, 5), "10 min before the break, 5 after it"),
    ([("client", mon(13, 30))], mon(14, 15), "written in the break"),
    ([("client", msk(2025, 12, 30, 17, 50))], msk(2026, 1, 12, 9, 5), "the New Year days off"),
    ([("client", msk(2025, 10, 31, 17, 50))], msk(2025, 11, 1, 9, 5), "the working Saturday"),
    ([("client", msk(2026, 3, 6, 17, 50))], msk(2026, 3, 10, 9, 5), "Monday 9 March is off"),
    ([("client", mon(10, 0)), ("client", mon(10, 10))], mon(10, 15), "a second message waits"),
    ([("client", mon(17, 50)), ("operator", mon(17, 55))], None, "answered; waiting for client"),
    (
        [("client", mon(10, 0)), ("operator", mon(10, 5)), ("client", tue(10, 0))],
        tue(10, 30),
        "the next response clock",
    ),
    ([("client", mon(10, 0)), ("close", mon(10, 5))], None, "closed"),
    (
        [("client", mon(10, 0)), ("close", mon(10, 5)), ("client", mon(11, 0))],
        mon(11, 15),
        "written again after the close: a new first response",
    ),
    ([("operator", mon(10, 0))], None, "the operator wrote first"),
    (
        [("operator", mon(10, 0)), ("client", mon(11, 0))],
        mon(11, 15),
        "the client's first message after the operator's: a first response",
    ),
]


@pytest.mark.parametrize(("events", "expected", "why"), DUE_CASES)
def test_due(events: list[Event], expected: dt.datetime | None, why: str) -> None:
    assert due(run(events)) == expected, why


def test_due_in_another_zone_and_across_a_daylight_saving_change() -> None:
    # Saturday 28 March 2026, 16:55 in Berlin; the clocks go forward that night
    state = run([("client", dt.datetime(2026, 3, 28, 16, 55, tzinfo=BERLIN))], BERLIN_DAYS)
    assert due(state) == dt.datetime(2026, 3, 29, 9, 10, tzinfo=BERLIN)
    assert due(state) == dt.datetime(2026, 3, 29, 7, 10, tzinfo=dt.UTC)  # CEST now
    # 17:55 in Vladivostok is 10:55 in Moscow
    state = run([("client", mon(10, 55))], FAR_EAST)
    assert due(state) == dt.datetime(2026, 12, 8, 9, 10, tzinfo=VVO)


def test_resolution_pauses_while_waiting_for_the_client_and_resumes() -> None:
    events = [("client", mon(10, 0)), ("operator", mon(10, 5))]
    paused = run(events)
    (resolution,) = paused.clocks
    assert resolution.kind == "resolution" and resolution.since is None
    assert resolution.used == 5 * MIN
    # four days waiting for the client count nothing
    resumed = client_wrote(paused, msk(2026, 12, 11, 10, 0))
    clocks = {c.kind: c for c in resumed.clocks}
    assert clocks["resolution"].used == 5 * MIN
    assert clocks["resolution"].since == msk(2026, 12, 11, 10, 0)
    # 7 h 55 min left: Friday 10:00-13:00 and 14:00-18:00 is 7 h, Monday 09:55
    given_ = alerts_over(resumed, msk(2026, 12, 11, 10), msk(2026, 12, 14, 10))
    assert [a for a in given_ if a.kind == "resolution"] == [
        Alert(msk(2026, 12, 14, 9, 55), "resolution", "warning", mon(10, 0)),
        Alert(msk(2026, 12, 14, 9, 55), "resolution", "breach", mon(10, 0)),
    ]


# -- alerts: warnings and breaches, each once ------------------------------------------------


def test_a_night_message_warns_and_breaches_once_each_next_morning() -> None:
    state = run([("client", msk(2026, 12, 4, 23, 0))])
    assert next_check(state) == mon(9, 12)  # 80 % of 15 min
    assert check(state, mon(9, 11)) == []
    warning = check(state, mon(9, 12))
    assert warning == [Alert(mon(9, 15), "first_response", "warning", msk(2026, 12, 4, 23, 0))]
    state = record(state, warning)
    assert check(state, mon(9, 13)) == []  # never twice
    assert next_check(state) == mon(9, 15)
    breach = check(state, mon(9, 15))
    assert [(a.kind, a.level) for a in breach] == [("first_response", "breach")]
    state = record(state, breach)
    assert check(state, mon(9, 30)) == []


def test_a_day_of_checks_every_minute_gives_four_alerts_and_no_storm() -> None:
    state = run([("client", mon(10, 0))])
    given_ = alerts_over(state, mon(10, 0), tue(12, 0))
    assert [(a.kind, a.level, a.due) for a in given_] == [
        ("first_response", "warning", mon(10, 15)),
        ("first_response", "breach", mon(10, 15)),
        # 80 % of 8 h is 6 h 24 min: 10:00-13:00, then 14:00-17:24
        ("resolution", "warning", tue(10, 0)),
        # 8 h: 7 h on Monday, the last hour Tuesday 09:00-10:00
        ("resolution", "breach", tue(10, 0)),
    ]


def test_an_answer_in_time_gives_no_alert() -> None:
    state = run([("client", mon(17, 50)), ("operator", mon(17, 55))])
    assert alerts_over(state, mon(17, 55), tue(18, 0)) == []
    assert next_check(state) is None


def test_a_first_check_after_the_due_time_gives_the_breach_alone() -> None:
    state = run([("client", mon(10, 0))])
    alerts = check(state, mon(10, 30))
    assert [(a.kind, a.level) for a in alerts] == [("first_response", "breach")]
    assert check(record(state, alerts), mon(10, 31)) == []


def test_a_late_answer_still_gives_its_breach_once_then_the_clock_goes() -> None:
    # nobody checked between 10:15 and the answer at 10:20
    state = run([("client", mon(10, 0)), ("operator", mon(10, 20))])
    alerts = check(state, mon(10, 21))
    assert alerts == [Alert(mon(10, 15), "first_response", "breach", mon(10, 0))]
    state = record(state, alerts)
    assert [c.kind for c in state.clocks] == ["resolution"]  # the settled clock is dropped
    assert check(state, mon(11, 0)) == []


def test_a_resolution_that_ran_out_before_the_pause_breaches_at_its_due_time() -> None:
    hour = Targets(first_response=15 * MIN, resolution=dt.timedelta(hours=1))
    state = run([("client", mon(10, 0)), ("operator", mon(11, 30))], targets=hour)
    assert [(a.kind, a.level, a.due) for a in check(state, mon(11, 31))] == [
        ("first_response", "breach", mon(10, 15)),
        ("resolution", "breach", mon(11, 0)),
    ]
    assert due(state) is None  # nothing runs while waiting for the client


def test_next_response_clocks_each_give_their_own_alerts() -> None:
    events = [
        ("client", mon(10, 0)),
        ("operator", mon(10, 1)),
        ("client", mon(11, 0)),
    ]
    state = run(events)
    state = record(state, check(state, mon(11, 30)))  # the first next-response breach
    state = operator_replied(state, mon(11, 40))
    state = client_wrote(state, mon(12, 0))
    assert [(a.kind, a.level, a.due) for a in check(state, mon(12, 24))] == [
        ("next_response", "warning", mon(12, 30)),
    ]


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_warn_share_of_0_or_1_gives_the_breach_only(share: float) -> None:
    state = run(
        [("client", mon(10, 0))], targets=Targets(first_response=15 * MIN, warn_share=share)
    )
    assert [(a.level, a.due) for a in alerts_over(state, mon(10, 0), mon(11, 0))] == [
        ("breach", mon(10, 15))
    ]


def test_a_clock_without_a_target_gives_nothing() -> None:
    state = run([("client", mon(10, 0))], targets=Targets())
    assert due(state) is None and next_check(state) is None
    assert alerts_over(state, mon(10, 0), tue(18, 0)) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"first_response": dt.timedelta(0)}, "first_response must be a positive"),
        ({"resolution": -MIN}, "resolution must be a positive"),
        ({"warn_share": 1.5}, "warn_share"),
        ({"warn_share": -0.1}, "warn_share"),
    ],
)
def test_targets_are_validated(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Targets(**fields)  # type: ignore[arg-type]


# -- transfers -------------------------------------------------------------------------------

SECOND_LINE = Targets(first_response=60 * MIN, resolution=dt.timedelta(hours=16))


def test_a_transfer_carries_the_time_waited_over_to_the_new_lines_targets() -> None:
    state = run([("client", mon(10, 0))])
    state = moved(state, OFFICE, SECOND_LINE, mon(10, 10))
    # 10 min waited; 60 min allowed: due 11:00, the warning at 48 min (10:48)
    assert due(state) == mon(11, 0)
    assert [(a.kind, a.level, a.due) for a in alerts_over(state, mon(10, 10), mon(11, 0))] == [
        ("first_response", "warning", mon(11, 0)),
        ("first_response", "breach", mon(11, 0)),
    ]


def test_a_warning_given_on_the_old_line_is_given_again_only_by_a_line_with_more_time() -> None:
    state = run([("client", mon(10, 0))])
    state = record(state, check(state, mon(10, 13)))  # the first line's warning
    roomier = moved(state, OFFICE, SECOND_LINE, mon(10, 13))
    assert check(roomier, mon(10, 14)) == []
    assert [a.level for a in check(roomier, mon(10, 48))] == ["warning"]  # its own, once
    tighter = moved(state, OFFICE, Targets(first_response=14 * MIN), mon(10, 13))
    assert tighter.clocks[0].raised == frozenset({"warning"})  # still past it: not again
    assert check(tighter, mon(10, 13)) == []
    assert [a.level for a in check(tighter, mon(10, 14))] == ["breach"]


def test_a_transfer_to_a_line_already_exceeded_breaches_at_the_move() -> None:
    state = run([("client", mon(10, 0))])
    state = moved(state, OFFICE, Targets(first_response=5 * MIN), mon(10, 10))
    assert due(state) == mon(10, 10)
    assert check(state, mon(10, 10)) == [Alert(mon(10, 10), "first_response", "breach", mon(10, 0))]


def test_a_breach_given_before_the_transfer_is_not_given_again() -> None:
    state = run([("client", mon(10, 0))])
    state = record(state, check(state, mon(10, 20)))
    state = moved(state, OFFICE, Targets(first_response=10 * MIN), mon(10, 25))
    assert alerts_over(state, mon(10, 25), mon(12, 0)) == []


def test_a_transfer_follows_the_new_lines_hours_and_zone() -> None:
    # 17:50 in Moscow (00:50 in Vladivostok): 5 min waited when moved at 17:55;
    # the far-east line's own morning gives the last 10 min
    state = run([("client", mon(17, 50))])
    state = moved(state, FAR_EAST, TARGETS, mon(17, 55))
    assert due(state) == dt.datetime(2026, 12, 8, 9, 10, tzinfo=VVO)


def test_a_transfer_while_waiting_for_the_client_keeps_resolution_paused() -> None:
    state = run([("client", mon(10, 0)), ("operator", mon(10, 10))])
    state = moved(state, FAR_EAST, SECOND_LINE, mon(12, 0))
    (resolution,) = state.clocks
    assert resolution.since is None and resolution.used == 10 * MIN
    assert due(state) is None
    state = client_wrote(state, tue(10, 0))  # 10:00 in Moscow is 17:00 in Vladivostok
    # 15 h 50 min left of the new line's 16 h, on its 9-hour days: 1 h on
    # Tuesday, 9 h on Wednesday, 5 h 50 min on Thursday (its next response
    # has no target)
    assert due(state) == dt.datetime(2026, 12, 10, 14, 50, tzinfo=VVO)


def test_a_transfer_to_a_line_without_a_target_stops_its_alerts() -> None:
    state = run([("client", mon(10, 0))])
    state = moved(state, OFFICE, Targets(resolution=dt.timedelta(hours=8)), mon(10, 5))
    assert [a.kind for a in alerts_over(state, mon(10, 5), mon(12, 0))] == []
    assert due(state) == tue(10, 0)


# -- properties ------------------------------------------------------------------------------

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["client", "operator", "close", "move"]),
        st.integers(0, 300),  # minutes from the event to a check
        st.integers(0, 300),  # minutes from the check to the next event
    ),
    max_size=12,
)
EVENTS = {"client": client_wrote, "operator": operator_replied, "close": closed}


@settings(max_examples=100, deadline=None)
@given(steps=STEPS)
def test_no_alert_is_given_twice_on_one_line(steps: list[tuple[str, int, int]]) -> None:
    """Any events with checks between them: on one line, every clock gives
    each level once at most, and never a warning after its breach."""
    state, now = start(OFFICE, TARGETS), mon(9, 0)
    lines = [(FAR_EAST, SECOND_LINE), (OFFICE, TARGETS)]
    seen: list[tuple[str, dt.datetime, str]] = []
    for i, (name, to_check, to_next) in enumerate(steps):
        if name == "move":
            state, seen = moved(state, *lines[i % 2], now), []
        else:
            state = EVENTS[name](state, now)
        now += to_check * MIN
        found = check(state, now)
        state = record(state, found)
        for alert in found:
            key = (alert.kind, alert.started, alert.level)
            assert key not in seen
            assert (alert.kind, alert.started, "breach") not in seen
            seen.append(key)
        now += to_next * MIN
