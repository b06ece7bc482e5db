"""Sessions: open on the client's message, close idle / by the CRM /
resolved, the next message opens the next one; the KPI record; the JSON
round trip. Every moment is given (no clock)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.service.sessions import (
    SessionState,
    client_wrote,
    crm_closed,
    expire,
    language_of,
    operator_replied,
    record,
    resolved,
    session_key,
)

UTC = dt.UTC
T0 = dt.datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
IDLE = dt.timedelta(hours=24)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def opened(minutes: float = 0) -> SessionState:
    state, new, closed = client_wrote(None, at(minutes), IDLE)
    assert new and closed is None
    return state


def test_the_first_message_opens_session_one() -> None:
    state, new, closed = client_wrote(None, T0, IDLE)
    assert new is True and closed is None
    assert state.number == 1 and state.opened_at == T0 and state.last_client_at == T0
    assert state.is_open and not state.operator_replied and state.previous_client_at is None


def test_a_message_within_the_idle_limit_joins_the_session() -> None:
    state, new, closed = client_wrote(opened(), at(30), IDLE)
    assert new is False and closed is None
    assert state.number == 1 and state.opened_at == T0
    assert state.last_client_at == at(30) and state.previous_client_at == T0


def test_a_message_after_the_idle_limit_closes_at_last_activity_plus_idle() -> None:
    state = operator_replied(opened(), at(10))
    later = at(10) + IDLE + dt.timedelta(hours=5)  # noticed five hours after it went idle
    new_state, new, closed = client_wrote(state, later, IDLE)
    assert new is True and closed is not None
    assert closed.closed_at == at(10) + IDLE  # the operator's reply was the last activity
    assert closed.close_reason == "idle" and closed.number == 1
    assert new_state.number == 2 and new_state.opened_at == later and new_state.is_open


def test_the_idle_limit_itself_closes() -> None:
    state = opened()
    _, new, closed = client_wrote(state, T0 + IDLE, IDLE)
    assert new is True and closed is not None and closed.closed_at == T0 + IDLE
    _, new, closed = client_wrote(state, T0 + IDLE - dt.timedelta(seconds=1), IDLE)
    assert new is False and closed is None


def test_idle_counts_from_either_sides_last_message() -> None:
    state = opened()
    state, _, _ = client_wrote(state, at(60), IDLE)
    state = operator_replied(state, at(600))
    assert state.last_activity == at(600)
    _, new, _ = client_wrote(state, at(60) + IDLE + dt.timedelta(minutes=1), IDLE)
    assert new is False  # 24 h after the client's message, but not after the operator's


def test_a_message_after_a_close_opens_the_next_session() -> None:
    closed_state = crm_closed(opened(), at(5))
    state, new, closed = client_wrote(closed_state, at(6), IDLE)
    assert new is True and closed is None  # the CRM close was recorded when it happened
    assert state.number == 2 and state.opened_at == at(6)


def test_a_late_delivered_message_does_not_move_the_session_back() -> None:
    state, _, _ = client_wrote(opened(), at(30), IDLE)
    again, new, _ = client_wrote(state, at(20), IDLE)
    assert new is False and again is state


def test_the_first_reply_is_the_first_response_and_later_ones_move_the_last() -> None:
    state = operator_replied(opened(), at(7))
    state = operator_replied(state, at(9))
    state = operator_replied(state, at(8))  # late delivery
    assert state.first_response_at == at(7) and state.last_operator_at == at(9)
    assert state.operator_replied


def test_a_reply_after_the_close_changes_nothing() -> None:
    closed_state = crm_closed(opened(), at(5))
    assert operator_replied(closed_state, at(6)) is closed_state


def test_crm_close_and_resolved() -> None:
    state = crm_closed(opened(), at(40))
    assert (state.closed_at, state.close_reason) == (at(40), "crm_closed")
    state = resolved(opened(), at(41))
    assert (state.closed_at, state.close_reason) == (at(41), "resolved")


def test_the_first_close_stands() -> None:
    state = crm_closed(opened(), at(40))
    assert resolved(state, at(50)) is state
    assert crm_closed(state, at(60)) is state
    assert expire(state, at(0) + 3 * IDLE, IDLE) is state


def test_the_sweeper_expires_an_idle_session_at_last_activity_plus_idle() -> None:
    state = operator_replied(opened(), at(15))
    assert expire(state, at(15) + IDLE - dt.timedelta(minutes=1), IDLE) is state
    swept = expire(state, at(15) + IDLE + dt.timedelta(hours=3), IDLE)
    assert swept.closed_at == at(15) + IDLE and swept.close_reason == "idle"


def test_an_idle_close_without_any_reply_counts_from_the_client() -> None:
    swept = expire(opened(), T0 + 2 * IDLE, IDLE)
    assert swept.closed_at == T0 + IDLE and not swept.operator_replied


@pytest.mark.parametrize("idle_hours", [1, 8, 72])
def test_the_idle_limit_is_the_tenants(idle_hours: int) -> None:
    idle = dt.timedelta(hours=idle_hours)
    state, _, _ = client_wrote(None, T0, idle)
    assert expire(state, T0 + idle, idle).closed_at == T0 + idle
    assert expire(state, T0 + idle - dt.timedelta(seconds=1), idle).is_open


def test_the_kpi_record() -> None:
    state = operator_replied(opened(), at(12.5))
    state = dataclasses.replace(crm_closed(state, at(90)), rating=5)
    assert record(state) == {
        "number": 1,
        "opened": T0.isoformat(),
        "first_response_seconds": 750.0,
        "closed": at(90).isoformat(),
        "reason": "crm_closed",
        "operator_replied": True,
        "rating": 5,
    }


def test_the_kpi_record_of_an_open_unanswered_session() -> None:
    assert record(opened()) == {
        "number": 1,
        "opened": T0.isoformat(),
        "first_response_seconds": None,
        "closed": None,
        "reason": None,
        "operator_replied": False,
        "rating": None,
    }


def test_numbers_count_up_across_a_day_of_sessions() -> None:
    state: SessionState | None = None
    numbers = []
    for hour in (0, 30, 60):  # each message 30 h after the last: a new session each time
        state, new, _ = client_wrote(state, T0 + dt.timedelta(hours=hour), IDLE)
        numbers.append((state.number, new))
    assert numbers == [(1, True), (2, True), (3, True)]


def test_the_state_survives_a_json_column() -> None:
    moscow = ZoneInfo("Europe/Moscow")
    state, _, _ = client_wrote(None, dt.datetime(2025, 3, 3, 23, 0, tzinfo=moscow), IDLE)
    state, _, _ = client_wrote(state, dt.datetime(2025, 3, 3, 23, 5, tzinfo=moscow), IDLE)
    state = operator_replied(state, dt.datetime(2025, 3, 4, 9, 1, tzinfo=moscow))
    state = dataclasses.replace(state, notices=(state.opened_at,), rating=4)
    state = resolved(state, dt.datetime(2025, 3, 4, 9, 30, tzinfo=moscow))
    text = json.dumps(state.to_dict())
    back = SessionState.from_dict(json.loads(text))
    assert back == state
    assert back.opened_at.utcoffset() == dt.timedelta(hours=3)


def test_from_dict_ignores_unknown_keys_and_fills_defaults() -> None:
    data = {"number": 2, "opened_at": T0.isoformat(), "last_client_at": T0.isoformat(), "x": 1}
    state = SessionState.from_dict(data)
    assert state.number == 2 and state.notices == () and state.closed_at is None


@pytest.mark.parametrize(
    "change",
    [
        {"close_reason": "timeout"},
        {"opened_at": "2025-03-03T10:00:00"},  # naive
        {"opened_at": 1741000000},
    ],
)
def test_from_dict_refuses_a_state_it_cannot_trust(change: dict[str, object]) -> None:
    data = {**opened().to_dict(), **change}
    with pytest.raises(ValueError):
        SessionState.from_dict(data)


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError):
        client_wrote(None, dt.datetime(2025, 3, 3, 10, 0), IDLE)
    with pytest.raises(ValueError):
        crm_closed(opened(), dt.datetime(2025, 3, 3, 10, 0))


def test_the_session_key_names_conversation_and_number() -> None:
    state, _, _ = client_wrote(crm_closed(opened(), at(1)), at(2), IDLE)
    assert session_key(41, state) == "41:2"


@pytest.mark.parametrize(
    ("tag", "language"),
    [("ru", "ru"), ("ru-RU", "ru"), ("EN_us", "en"), ("", "en"), ("de", "de")],
)
def test_language_of(tag: str, language: str) -> None:
    assert language_of(tag) == language


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(min_value=0, max_value=3 * 24 * 60)),
        min_size=1,
        max_size=30,
    )
)
def test_any_run_of_messages_keeps_sessions_ordered(steps: list[tuple[bool, int]]) -> None:
    """Client and operator messages at growing gaps: numbers count up by
    one, an idle close is at last activity + idle and never after the
    message that found it, nothing closes before it opened."""
    state, now = opened(), T0
    for by_client, gap in steps:
        now += dt.timedelta(minutes=gap)
        if not by_client:
            state = operator_replied(state, now)
            continue
        before = state
        state, new, closed = client_wrote(state, now, IDLE)
        assert state.number == before.number + (1 if new else 0)
        if closed is not None:
            assert closed.closed_at == before.last_activity + IDLE <= now
            assert closed.opened_at <= closed.closed_at and closed.close_reason == "idle"
        assert state.is_open and state.opened_at <= state.last_activity
