"""Working hours (bridge.service.calendar): open/closed, the next opening,
the closing, business time and due times, off-hours periods, over breaks,
holidays, the shipped Russian production calendar (transferred days),
its update directory, time zones and daylight-saving changes. Every
instant is given: no clock is read, nothing sleeps."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.service.calendar import (
    HORIZON_DAYS,
    CalendarError,
    Hours,
    NeverOpen,
    Span,
    add_business,
    business_seconds,
    closing,
    is_open,
    load_calendar,
    next_opening,
    off_period,
)

MSK = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
VVO = ZoneInfo("Asia/Vladivostok")
T = dt.time
DAY = (Span(T(9), T(13)), Span(T(14), T(18)))  # a lunch break 13:00-14:00
WEEKDAYS = {d: DAY for d in range(5)}
#: Monday to Friday with a break, the Russian production calendar
OFFICE = Hours("Europe/Moscow", WEEKDAYS, calendar="ru")
#: the same week without a production calendar
PLAIN = Hours("Europe/Moscow", WEEKDAYS)
FAR_EAST = Hours("Asia/Vladivostok", {d: (Span(T(9), T(18)),) for d in range(5)})
#: a night line in Berlin, every day 01:00-04:00 (across the DST changes)
NIGHT = Hours("Europe/Berlin", {d: (Span(T(1), T(4)),) for d in range(7)})
ROUND_THE_CLOCK = Hours("Europe/Berlin", {d: (Span(T(0), T(0)),) for d in range(7)})
NEVER = Hours("UTC", {})
HOUR = 3600.0


def msk(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=MSK)


@pytest.fixture(autouse=True)
def _shipped_calendar(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped production calendar, whatever the machine's environment says."""
    monkeypatch.delenv("BRIDGE_CALENDAR_DIR", raising=False)


# -- is_open ---------------------------------------------------------------------------------

OPEN_CASES = [
    # (hours, instant, open?, why)
    (OFFICE, msk(2026, 12, 7, 9, 0), True, "a span's start is open"),
    (OFFICE, msk(2026, 12, 7, 8, 59, 59), False, "before the opening"),
    (OFFICE, msk(2026, 12, 7, 12, 59), True, "before the break"),
    (OFFICE, msk(2026, 12, 7, 13, 0), False, "the break starts"),
    (OFFICE, msk(2026, 12, 7, 13, 30), False, "in the break"),
    (OFFICE, msk(2026, 12, 7, 14, 0), True, "after the break"),
    (OFFICE, msk(2026, 12, 7, 18, 0), False, "a span's end is closed"),
    (OFFICE, msk(2026, 12, 5, 12, 0), False, "Saturday"),
    (OFFICE, msk(2026, 1, 9, 12, 0), False, "Friday 9 Jan 2026: a day off moved by decree 1466"),
    (PLAIN, msk(2026, 1, 9, 12, 0), True, "the same Friday without the calendar"),
    (OFFICE, msk(2026, 3, 9, 12, 0), False, "Monday 9 Mar 2026: 8 Mar fell on a Sunday"),
    (OFFICE, msk(2026, 5, 11, 12, 0), False, "Monday 11 May 2026: 9 May fell on a Saturday"),
    (OFFICE, msk(2026, 12, 31, 12, 0), False, "31 Dec 2026: moved from 4 Jan"),
    (OFFICE, msk(2025, 11, 1, 10, 0), True, "Saturday 1 Nov 2025: a transferred working day"),
    (OFFICE, msk(2025, 11, 3, 10, 0), False, "Monday 3 Nov 2025: its day off"),
    (PLAIN, msk(2025, 11, 1, 10, 0), False, "the same Saturday without the calendar"),
    (OFFICE, msk(2024, 12, 28, 10, 0), True, "Saturday 28 Dec 2024: worked (decree 1314)"),
    (OFFICE, msk(2027, 2, 20, 10, 0), True, "Saturday 20 Feb 2027: worked"),
    (OFFICE, msk(2027, 2, 22, 10, 0), False, "Monday 22 Feb 2027: its day off"),
    (OFFICE, msk(2028, 1, 3, 10, 0), False, "2028 is not in the file: fixed holiday 3 Jan"),
    (OFFICE, msk(2028, 2, 23, 10, 0), False, "2028: fixed holiday 23 Feb"),
    (OFFICE, msk(2028, 1, 10, 10, 0), True, "2028: an ordinary Monday"),
    (PLAIN, msk(2028, 1, 3, 10, 0), True, "no calendar: no fixed holidays either"),
    (OFFICE, dt.datetime(2026, 12, 7, 6, 0, tzinfo=dt.UTC), True, "06:00 UTC is 09:00 in Moscow"),
    (FAR_EAST, dt.datetime(2026, 12, 7, 0, 30, tzinfo=dt.UTC), True, "10:30 in Vladivostok"),
    (FAR_EAST, dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC), False, "19:30 in Vladivostok"),
    (FAR_EAST, msk(2026, 12, 6, 20, 0), False, "Sunday evening in Moscow is Monday 03:00 there"),
    (FAR_EAST, msk(2026, 12, 7, 2, 0), True, "Monday 02:00 in Moscow is 09:00 there"),
    (NIGHT, dt.datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN), True, "03:30 CEST after the change"),
    (NIGHT, dt.datetime(2026, 3, 29, 4, 0, tzinfo=BERLIN), False, "04:00 CEST: closed"),
    (NEVER, msk(2026, 12, 7, 12, 0), False, "a line with an empty week"),
]


@pytest.mark.parametrize(("hours", "at", "expected", "why"), OPEN_CASES)
def test_is_open(hours: Hours, at: dt.datetime, expected: bool, why: str) -> None:
    assert is_open(hours, at) is expected, why


def test_the_tenants_own_holidays_and_workdays_come_first() -> None:
    own = Hours(
        "Europe/Moscow",
        WEEKDAYS,
        holidays=frozenset({dt.date(2026, 12, 8)}),
        workdays=frozenset({dt.date(2026, 12, 12), dt.date(2026, 1, 9)}),
        calendar="ru",
    )
    assert not is_open(own, msk(2026, 12, 8, 10, 0))  # a Tuesday the tenant closes
    # a Saturday the tenant works, with the first open weekday's spans (the break too)
    assert is_open(own, msk(2026, 12, 12, 10, 0))
    assert not is_open(own, msk(2026, 12, 12, 13, 30))
    # the tenant's working day wins over the production calendar's day off
    assert is_open(own, msk(2026, 1, 9, 10, 0))


def test_a_transferred_working_day_uses_the_weekdays_own_spans_when_it_has_some() -> None:
    saturdays = Hours("Europe/Moscow", {**WEEKDAYS, 5: (Span(T(10), T(12)),)}, calendar="ru")
    assert is_open(saturdays, msk(2025, 11, 1, 11, 0))
    assert not is_open(saturdays, msk(2025, 11, 1, 9, 30))


def test_a_naive_instant_or_an_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_open(OFFICE, dt.datetime(2026, 12, 7, 10, 0))
    with pytest.raises(ValueError, match="Mars/Olympus"):
        is_open(Hours("Mars/Olympus", WEEKDAYS), msk(2026, 12, 7, 10, 0))


def test_a_span_ends_after_it_starts_or_at_midnight() -> None:
    with pytest.raises(ValueError, match="ends after it starts"):
        Span(T(18), T(9))
    with pytest.raises(ValueError, match="ends after it starts"):
        Span(T(9), T(9))
    with pytest.raises(ValueError, match="without a zone"):
        Span(T(9, tzinfo=dt.UTC), T(18))
    assert Span(T(22), T(0)).end == T(0)  # until midnight


# -- next_opening, closing -------------------------------------------------------------------

NEXT_CASES = [
    (OFFICE, msk(2026, 12, 4, 23, 0), msk(2026, 12, 7, 9, 0), "Friday night -> Monday 09:00"),
    (OFFICE, msk(2026, 12, 7, 13, 30), msk(2026, 12, 7, 14, 0), "in the break -> its end"),
    (OFFICE, msk(2026, 12, 7, 18, 0), msk(2026, 12, 8, 9, 0), "at closing -> next morning"),
    (OFFICE, msk(2025, 12, 30, 19, 0), msk(2026, 1, 12, 9, 0), "New Year: 31 Dec to 11 Jan off"),
    (OFFICE, msk(2025, 10, 31, 19, 0), msk(2025, 11, 1, 9, 0), "-> the working Saturday"),
    (OFFICE, msk(2026, 3, 6, 18, 30), msk(2026, 3, 10, 9, 0), "Mon 9 Mar 2026 is off"),
    (
        FAR_EAST,
        dt.datetime(2026, 12, 4, 18, 0, tzinfo=VVO),
        dt.datetime(2026, 12, 7, 9, 0, tzinfo=VVO),
        "Vladivostok's own Monday morning",
    ),
    (
        NIGHT,
        dt.datetime(2026, 3, 28, 5, 0, tzinfo=BERLIN),
        dt.datetime(2026, 3, 29, 1, 0, tzinfo=BERLIN),
        "01:00 CET on the night of the change",
    ),
]


@pytest.mark.parametrize(("hours", "after", "expected", "why"), NEXT_CASES)
def test_next_opening(hours: Hours, after: dt.datetime, expected: dt.datetime, why: str) -> None:
    got = next_opening(hours, after)
    assert got == expected, why
    assert got.tzinfo == ZoneInfo(hours.timezone)  # said in the line's own zone
    assert got.utcoffset() == expected.utcoffset()


def test_next_opening_of_an_open_line_is_the_instant_itself() -> None:
    at = dt.datetime(2026, 12, 7, 7, 0, tzinfo=dt.UTC)
    assert next_opening(OFFICE, at) is at


def test_a_line_that_never_opens_says_so_instead_of_searching_forever() -> None:
    with pytest.raises(NeverOpen, match=f"{HORIZON_DAYS} days"):
        next_opening(NEVER, msk(2026, 12, 7, 10, 0))
    monday = {0: (Span(T(9), T(18)),)}
    closed_for_years = Hours(
        "UTC", monday, holidays=_days(dt.date(2026, 12, 1), dt.date(2030, 1, 1))
    )
    with pytest.raises(NeverOpen):
        next_opening(closed_for_years, msk(2026, 12, 7, 10, 0))
    # within the horizon it is found, however far
    found = next_opening(closed_for_years, msk(2029, 1, 1, 0, 0))
    assert found == dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.UTC)


def _days(first: dt.date, last: dt.date) -> frozenset[dt.date]:
    """Every date from ``first`` to ``last``."""
    return frozenset(first + dt.timedelta(days=n) for n in range((last - first).days + 1))


CLOSING_CASES = [
    (OFFICE, msk(2026, 12, 7, 10, 0), msk(2026, 12, 7, 13, 0), "the break"),
    (OFFICE, msk(2026, 12, 7, 14, 30), msk(2026, 12, 7, 18, 0), "the evening"),
    (OFFICE, msk(2026, 12, 7, 13, 30), None, "closed now"),
    (
        Hours("Europe/Moscow", {0: (Span(T(22), T(0)),), 1: (Span(T(0), T(2)),)}),
        msk(2026, 12, 7, 23, 0),
        msk(2026, 12, 8, 2, 0),
        "a night span across midnight is one span",
    ),
    (
        Hours("Europe/Moscow", {0: (Span(T(9), T(13)), Span(T(13), T(18)))}),
        msk(2026, 12, 7, 10, 0),
        msk(2026, 12, 7, 18, 0),
        "spans that touch are one",
    ),
    (ROUND_THE_CLOCK, msk(2026, 12, 7, 10, 0), None, "never closes"),
]


@pytest.mark.parametrize(("hours", "at", "expected", "why"), CLOSING_CASES)
def test_closing(hours: Hours, at: dt.datetime, expected: dt.datetime | None, why: str) -> None:
    assert closing(hours, at) == expected, why


# -- business time ---------------------------------------------------------------------------

SECONDS_CASES = [
    (OFFICE, msk(2026, 12, 7, 8, 0), msk(2026, 12, 7, 20, 0), 8 * HOUR, "a day, less the break"),
    (OFFICE, msk(2026, 12, 7, 12, 30), msk(2026, 12, 7, 14, 30), HOUR, "across the break"),
    (OFFICE, msk(2026, 12, 4, 17, 0), msk(2026, 12, 7, 10, 0), 2 * HOUR, "over a weekend"),
    (OFFICE, msk(2026, 12, 7, 20, 0), msk(2026, 12, 7, 8, 0), 0.0, "end before start"),
    (OFFICE, msk(2025, 12, 30, 17, 0), msk(2026, 1, 12, 10, 0), 2 * HOUR, "the New Year break"),
    (OFFICE, msk(2026, 1, 1), msk(2027, 1, 1), 247 * 8 * HOUR, "2026: 247 working days"),
    (OFFICE, msk(2025, 1, 1), msk(2026, 1, 1), 247 * 8 * HOUR, "2025: 247 working days"),
    (OFFICE, msk(2024, 1, 1), msk(2025, 1, 1), 248 * 8 * HOUR, "2024: 248 working days"),
    (
        NIGHT,
        dt.datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN),
        dt.datetime(2026, 3, 30, 0, 0, tzinfo=BERLIN),
        2 * HOUR,
        "01:00-04:00 on the spring change lasts two hours",
    ),
    (
        NIGHT,
        dt.datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN),
        dt.datetime(2026, 10, 26, 0, 0, tzinfo=BERLIN),
        4 * HOUR,
        "01:00-04:00 on the autumn change lasts four hours",
    ),
    (
        ROUND_THE_CLOCK,
        dt.datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN),
        dt.datetime(2026, 3, 30, 0, 0, tzinfo=BERLIN),
        23 * HOUR,
        "the spring day has 23 hours",
    ),
    (
        FAR_EAST,
        msk(2026, 12, 7, 0, 0),
        msk(2026, 12, 7, 12, 0),
        9 * HOUR,
        "Moscow's morning is Vladivostok's working day",
    ),
]


@pytest.mark.parametrize(("hours", "start", "end", "expected", "why"), SECONDS_CASES)
def test_business_seconds(
    hours: Hours, start: dt.datetime, end: dt.datetime, expected: float, why: str
) -> None:
    assert business_seconds(hours, start, end) == expected, why


ADD_CASES = [
    (OFFICE, msk(2026, 12, 4, 23, 0), 900, msk(2026, 12, 7, 9, 15), "23:00 Fri -> Monday 09:15"),
    (OFFICE, msk(2026, 12, 7, 23, 0), 900, msk(2026, 12, 8, 9, 15), "23:00 -> next morning"),
    (OFFICE, msk(2026, 12, 7, 17, 55), 900, msk(2026, 12, 8, 9, 10), "5 min before closing"),
    (OFFICE, msk(2026, 12, 7, 17, 45), 900, msk(2026, 12, 7, 18, 0), "exactly at closing"),
    (OFFICE, msk(2026, 12, 7, 12, 50), 1800, msk(2026, 12, 7, 14, 20), "across the break"),
    (OFFICE, msk(2026, 12, 7, 13, 30), 600, msk(2026, 12, 7, 14, 10), "asked in the break"),
    (OFFICE, msk(2025, 12, 30, 17, 30), HOUR, msk(2026, 1, 12, 9, 30), "over the New Year"),
    (OFFICE, msk(2025, 10, 31, 17, 50), 900, msk(2025, 11, 1, 9, 5), "the working Saturday"),
    (OFFICE, msk(2026, 12, 7, 10, 0), 0, msk(2026, 12, 7, 10, 0), "nothing to add"),
    (
        ROUND_THE_CLOCK,
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN),
        HOUR,
        dt.datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN),
        "an hour of real time across the spring change",
    ),
    (
        ROUND_THE_CLOCK,
        dt.datetime(2026, 10, 25, 1, 30, tzinfo=BERLIN),
        2 * HOUR,
        dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN),
        "two hours across the autumn change: 02:30 comes twice",
    ),
    (
        FAR_EAST,
        msk(2026, 12, 7, 10, 55),
        900,
        dt.datetime(2026, 12, 8, 9, 10, tzinfo=VVO),
        "17:55 in Vladivostok",
    ),
]


@pytest.mark.parametrize(("hours", "start", "seconds", "expected", "why"), ADD_CASES)
def test_add_business(
    hours: Hours, start: dt.datetime, seconds: float, expected: dt.datetime, why: str
) -> None:
    got = add_business(hours, start, seconds)
    assert got == expected, why
    assert got.utcoffset() == expected.utcoffset(), why


def test_add_business_refuses_negative_time_and_a_line_that_never_opens() -> None:
    with pytest.raises(ValueError, match="negative"):
        add_business(OFFICE, msk(2026, 12, 7, 10, 0), -1)
    with pytest.raises(NeverOpen):
        add_business(NEVER, msk(2026, 12, 7, 10, 0), 60)


# -- off-hours periods -----------------------------------------------------------------------

WEEKEND = (msk(2026, 12, 4, 18, 0), msk(2026, 12, 7, 9, 0))
OFF_CASES = [
    (msk(2026, 12, 4, 18, 0), WEEKEND, "at closing"),
    (msk(2026, 12, 4, 23, 0), WEEKEND, "Friday night"),
    (msk(2026, 12, 5, 12, 0), WEEKEND, "Saturday"),
    (msk(2026, 12, 7, 8, 59), WEEKEND, "Monday before the opening"),
    (msk(2026, 12, 7, 13, 30), (msk(2026, 12, 7, 13, 0), msk(2026, 12, 7, 14, 0)), "the break"),
    (msk(2026, 1, 5, 12, 0), (msk(2025, 12, 30, 18, 0), msk(2026, 1, 12, 9, 0)), "New Year"),
    (msk(2026, 12, 7, 10, 0), None, "open"),
]


@pytest.mark.parametrize(("at", "expected", "why"), OFF_CASES)
def test_off_period(
    at: dt.datetime, expected: tuple[dt.datetime, dt.datetime] | None, why: str
) -> None:
    assert off_period(OFFICE, at) == expected, why


def test_an_off_period_with_no_opening_before_it_starts_a_horizon_before_the_opening() -> None:
    monday = {0: (Span(T(9), T(18)),)}
    once = Hours("UTC", monday, holidays=_days(dt.date(2024, 1, 1), dt.date(2027, 6, 6)))
    opening = dt.datetime(2027, 6, 7, 9, 0, tzinfo=dt.UTC)
    early = off_period(once, dt.datetime(2026, 12, 7, tzinfo=dt.UTC))
    late = off_period(once, dt.datetime(2027, 6, 6, tzinfo=dt.UTC))
    assert early == late == (opening - dt.timedelta(days=HORIZON_DAYS), opening)
    with pytest.raises(NeverOpen):
        off_period(NEVER, msk(2026, 12, 7, 10, 0))


# -- the production calendar file ------------------------------------------------------------


def test_the_shipped_calendar_covers_2024_to_2027() -> None:
    ru = load_calendar("ru")
    assert ru.years == frozenset({2024, 2025, 2026, 2027})
    assert ru.source.name == "ru.yaml" and ru.source.parent.name == "data"
    assert dt.date(2026, 1, 9) in ru.holidays and dt.date(2025, 11, 1) in ru.workdays
    for year in ru.years:  # the fixed holidays are in every year of the file
        assert {dt.date(year, m, d) for m, d in [(1, 1), (1, 7), (5, 9), (11, 4)]} <= ru.holidays


def test_an_updated_calendar_in_bridge_calendar_dir_is_read_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ru.yaml").write_text(
        "2028:\n  holidays: [2028-01-03, 2028-03-10]\n  workdays: [2028-03-11]\n"
    )
    monkeypatch.setenv("BRIDGE_CALENDAR_DIR", str(tmp_path))
    assert load_calendar("ru").years == frozenset({2028})
    assert not is_open(OFFICE, msk(2028, 3, 10, 10, 0))  # a day off only the update knows
    assert is_open(OFFICE, msk(2028, 3, 11, 10, 0))  # a Saturday it makes a working day
    # 2027 is not in the update: the week and the fixed holidays only, so the
    # shipped file's days off moved by decree are worked
    assert is_open(OFFICE, msk(2027, 2, 22, 10, 0))
    assert is_open(OFFICE, msk(2027, 11, 5, 10, 0))
    assert not is_open(OFFICE, msk(2027, 2, 23, 10, 0))


def test_the_update_is_read_again_when_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ru.yaml"
    path.write_text("2028:\n  holidays: [2028-03-10]\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    monkeypatch.setenv("BRIDGE_CALENDAR_DIR", str(tmp_path))
    assert not is_open(OFFICE, msk(2028, 3, 10, 10, 0))
    path.write_text("2028:\n  holidays: [2028-03-13]\n")
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert is_open(OFFICE, msk(2028, 3, 10, 10, 0))
    assert not is_open(OFFICE, msk(2028, 3, 13, 10, 0))


def test_a_calendar_dir_without_the_file_falls_back_to_the_shipped_one(tmp_path: Path) -> None:
    assert load_calendar("ru", env={"BRIDGE_CALENDAR_DIR": str(tmp_path)}).source.parent.name == (
        "data"
    )


BAD_FILES = [
    ("- 2026-01-01\n", "a mapping of years"),
    ("2026:\n  holidays: [2025-12-31]\n", "not a date of 2026"),
    ("2026:\n  holidays: ['2026-01-32']\n", "not a date of 2026"),
    ("2026:\n  holidays: 2026-01-01\n", "not a list of dates"),
    ("2026:\n  holidays: [2026-01-10]\n  workdays: [2026-01-10]\n", "both a holiday and a workday"),
    ("twenty: {}\n", "not a year"),
    ("2026: [\n", "not a readable YAML file"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_malformed_calendar_file_is_refused_naming_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "ru.yaml").write_text(text)
    with pytest.raises(CalendarError, match=message):
        load_calendar("ru", env={"BRIDGE_CALENDAR_DIR": str(tmp_path)})


@pytest.mark.parametrize("name", ["xx", "../ru", "RU", ""])
def test_an_unknown_calendar_is_refused(name: str) -> None:
    with pytest.raises(CalendarError):
        load_calendar(name)
    with pytest.raises(CalendarError):
        is_open(Hours("Europe/Moscow", WEEKDAYS, calendar=name or "x"), msk(2026, 12, 7, 10, 0))


# -- properties ------------------------------------------------------------------------------

LINES = st.sampled_from([OFFICE, FAR_EAST, NIGHT, ROUND_THE_CLOCK])
INSTANTS = st.datetimes(
    min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 12, 1), timezones=st.just(dt.UTC)
).map(lambda at: at.replace(microsecond=0))
PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(hours=LINES, start=INSTANTS, seconds=st.integers(min_value=0, max_value=30 * 86400))
def test_the_due_time_is_exactly_that_much_business_time_away(
    hours: Hours, start: dt.datetime, seconds: int
) -> None:
    assert business_seconds(hours, start, add_business(hours, start, seconds)) == seconds


@PROPERTY
@given(hours=LINES, a=INSTANTS, b=INSTANTS, c=INSTANTS)
def test_business_time_adds_up_over_a_split_point(
    hours: Hours, a: dt.datetime, b: dt.datetime, c: dt.datetime
) -> None:
    a, b, c = sorted((a, b, c))
    whole = business_seconds(hours, a, c)
    assert whole == business_seconds(hours, a, b) + business_seconds(hours, b, c)
    assert 0 <= whole <= (c - a).total_seconds()


@PROPERTY
@given(hours=LINES, at=INSTANTS)
def test_the_next_opening_is_open_and_nothing_is_open_before_it(
    hours: Hours, at: dt.datetime
) -> None:
    opening = next_opening(hours, at)
    assert is_open(hours, opening)
    assert business_seconds(hours, at, opening) == 0
    period = off_period(hours, at)
    if period is None:
        assert opening == at
    else:
        closed_at, opens = period
        assert opens == opening and closed_at <= at
        assert off_period(hours, closed_at + (opens - closed_at) / 2) == period
