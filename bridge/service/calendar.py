"""Working hours of a line: a week of open spans with breaks, a time zone,
holidays and transferred working days (a shipped production calendar plus
the tenant's own list). Every function takes the moment it is asked about
(``now``/``at``): no clock is read here.

How a local date is worked, first rule that applies:

1. a date in ``Hours.holidays`` is closed;
2. a date in ``Hours.workdays`` is open: its weekday's spans, or the first
   open weekday's spans when the week closes that weekday;
3. with ``Hours.calendar`` set and the date's year in the production
   calendar's file: its ``holidays`` are closed, its ``workdays`` open as in 2;
4. with ``Hours.calendar`` set and the year missing from the file: the fixed
   public holidays (:data:`FIXED_HOLIDAYS`) are closed;
5. otherwise the week's spans for the weekday.

Instants are aware datetimes; the spans are local wall-clock times in the
line's zone, so a span that meets a daylight-saving change lasts the real
time it covers (a span inside the skipped hour is empty). Computation is in
UTC and costs O(days), never O(minutes). A line with no open time within
:data:`HORIZON_DAYS` of the asked moment raises :class:`NeverOpen` from the
functions that look for an opening (``next_opening``, ``add_business``,
``off_period``) instead of searching forever.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

__all__ = [
    "FIXED_HOLIDAYS",
    "HORIZON_DAYS",
    "CalendarError",
    "Hours",
    "NeverOpen",
    "ProductionCalendar",
    "Span",
    "add_business",
    "business_seconds",
    "closing",
    "is_open",
    "load_calendar",
    "next_opening",
    "off_period",
]

#: how far (days) the functions look for an opening before a line counts as
#: never open; also how far ``closing`` follows a line open round the clock
HORIZON_DAYS = 732
#: (month, day) of the public holidays of the Labour Code (art. 112 part 1),
#: closed in a year the production calendar's file does not cover
FIXED_HOLIDAYS = frozenset(
    {(1, d) for d in range(1, 9)} | {(2, 23), (3, 8), (5, 1), (5, 9), (6, 12), (11, 4)}
)
#: the directory of an updated production calendar (``<name>.yaml``)
CALENDAR_DIR_ENV = "BRIDGE_CALENDAR_DIR"
SHIPPED_DIR = Path(__file__).resolve().parent / "data"
_UTC = dt.UTC
_NAME = re.compile(r"[a-z]{2,16}")

Interval = tuple[dt.datetime, dt.datetime]


@dataclass(frozen=True)
class Span:
    """One open span of a day, local time; ``end`` after ``start`` (a span
    that runs past midnight is two spans). ``end`` 00:00 means the end of
    the day (``Span(time(0), time(0))`` is the whole day)."""

    start: dt.time
    end: dt.time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("a span's times are local wall-clock times, without a zone")
        if self.end != dt.time(0) and self.end <= self.start:
            raise ValueError(f"a span ends after it starts ({self.start} - {self.end})")


@dataclass(frozen=True)
class Hours:
    """When a line works."""

    #: IANA time zone name ("Europe/Moscow")
    timezone: str
    #: weekday (0 = Monday … 6 = Sunday) -> open spans in order; a missing
    #: or empty day is closed (breaks are the gaps between spans)
    week: Mapping[int, tuple[Span, ...]]
    #: the tenant's own days off (added to the production calendar's)
    holidays: frozenset[dt.date] = field(default_factory=frozenset)
    #: the tenant's own working days that the week would close (a
    #: transferred Saturday), worked with the first open weekday's spans
    workdays: frozenset[dt.date] = field(default_factory=frozenset)
    #: a shipped production calendar whose days off and transferred working
    #: days apply too ("ru"), or None
    calendar: str | None = None


class NeverOpen(ValueError):
    """The line has no open time within :data:`HORIZON_DAYS` of the moment
    asked about (an empty week, or holidays covering the whole horizon)."""


class CalendarError(ValueError):
    """A production calendar that is unknown or whose file is malformed."""


@dataclass(frozen=True)
class ProductionCalendar:
    """One production calendar's file: the years it covers and, in them,
    the days off and the transferred working days."""

    name: str
    years: frozenset[int]
    holidays: frozenset[dt.date]
    workdays: frozenset[dt.date]
    #: the file it was read from
    source: Path


# -- the production calendar ----------------------------------------------------------------


def load_calendar(name: str, env: Mapping[str, str] | None = None) -> ProductionCalendar:
    """The production calendar ``name`` ("ru"): ``$BRIDGE_CALENDAR_DIR/<name>.yaml``
    when that variable names a directory holding the file, else the copy
    shipped in ``bridge/service/data/``. Read again only when the file
    changes (its path and modification time key the cache)."""
    path = calendar_path(name, os.environ if env is None else env)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise CalendarError(f"production calendar {name!r}: {path} cannot be read") from exc
    return _read_calendar(name, path, stamp)


def calendar_path(name: str, env: Mapping[str, str]) -> Path:
    """Where the production calendar ``name`` is read from (see :func:`load_calendar`)."""
    if not _NAME.fullmatch(name):
        raise CalendarError(f"production calendar name {name!r}: lower-case letters only")
    own = env.get(CALENDAR_DIR_ENV, "")
    if own and (Path(own) / f"{name}.yaml").is_file():
        return Path(own) / f"{name}.yaml"
    shipped = SHIPPED_DIR / f"{name}.yaml"
    if not shipped.is_file():
        known = sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))
        raise CalendarError(f"no production calendar {name!r} (shipped: {', '.join(known)})")
    return shipped


@functools.lru_cache(maxsize=16)
def _read_calendar(name: str, path: Path, stamp: int) -> ProductionCalendar:
    """The parsed file (``stamp``, its modification time, only keys the cache)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CalendarError(f"{path}: not a readable YAML file ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise CalendarError(f"{path}: expected a mapping of years")
    years: set[int] = set()
    off: set[dt.date] = set()
    work: set[dt.date] = set()
    for year, days in data.items():
        if not isinstance(year, int) or not isinstance(days, dict):
            raise CalendarError(f"{path}: {year!r} is not a year with its days")
        years.add(year)
        off |= _dates(path, year, days, "holidays")
        work |= _dates(path, year, days, "workdays")
    if both := off & work:
        raise CalendarError(f"{path}: {min(both)} is both a holiday and a workday")
    return ProductionCalendar(name, frozenset(years), frozenset(off), frozenset(work), path)


def _dates(path: Path, year: int, days: Mapping[object, object], key: str) -> set[dt.date]:
    value = days.get(key) or []
    if not isinstance(value, list):
        raise CalendarError(f"{path}: {year}.{key} is not a list of dates")
    for day in value:
        # YAML reads an unquoted 2026-01-09 as a date; anything else is a typo
        if not isinstance(day, dt.date) or isinstance(day, dt.datetime) or day.year != year:
            raise CalendarError(f"{path}: {year}.{key}: {day!r} is not a date of {year}")
    return set(value)


# -- one local day ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    """What one call needs: the hours, their zone and their calendar."""

    hours: Hours
    zone: ZoneInfo
    calendar: ProductionCalendar | None


def _line(hours: Hours) -> _Line:
    try:
        zone = ZoneInfo(hours.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {hours.timezone!r}") from exc
    calendar = load_calendar(hours.calendar) if hours.calendar else None
    return _Line(hours, zone, calendar)


def _spans_of(line: _Line, day: dt.date) -> tuple[Span, ...]:
    """The spans a local date is worked with (the rules in the module's docstring)."""
    hours, calendar = line.hours, line.calendar
    if day in hours.holidays:
        return ()
    own = tuple(hours.week.get(day.weekday(), ()))
    if day in hours.workdays:
        return own or _first_open(hours)
    if calendar is not None and day.year in calendar.years:
        if day in calendar.holidays:
            return ()
        if day in calendar.workdays:
            return own or _first_open(hours)
    elif calendar is not None and (day.month, day.day) in FIXED_HOLIDAYS:
        return ()
    return own


def _first_open(hours: Hours) -> tuple[Span, ...]:
    for weekday in range(7):
        if spans := tuple(hours.week.get(weekday, ())):
            return spans
    return ()


def _instant(line: _Line, day: dt.date, at: dt.time) -> dt.datetime:
    """A local wall-clock time as a UTC instant (a time skipped by a
    daylight-saving change reads with the offset before it, fold=0)."""
    return dt.datetime.combine(day, at, tzinfo=line.zone).astimezone(_UTC)


def _day(line: _Line, day: dt.date) -> list[Interval]:
    """The open intervals of a local date in UTC: ordered, touching ones
    joined, empty ones (inside a skipped hour) dropped."""
    out: list[Interval] = []
    for span in _spans_of(line, day):
        start = _instant(line, day, span.start)
        end_day = day + dt.timedelta(days=1) if span.end == dt.time(0) else day
        end = _instant(line, end_day, span.end)
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


def _local_date(line: _Line, at: dt.datetime) -> dt.date:
    return at.astimezone(line.zone).date()


def _aware(at: dt.datetime, name: str = "at") -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return at.astimezone(_UTC)


def _forward(line: _Line, since: dt.datetime) -> Iterator[Interval]:
    """Open intervals ending after ``since`` (UTC), in order; NeverOpen
    after :data:`HORIZON_DAYS` days in a row without one."""
    day = _local_date(line, since) - dt.timedelta(days=1)
    empty = 0
    while empty <= HORIZON_DAYS:
        found = [iv for iv in _day(line, day) if iv[1] > since]
        empty = 0 if found else empty + 1
        yield from found
        day += dt.timedelta(days=1)
    raise NeverOpen(f"no open time within {HORIZON_DAYS} days after {since.isoformat()}")


# -- the public functions --------------------------------------------------------------------


def is_open(hours: Hours, at: dt.datetime) -> bool:
    """Whether the line is open at the aware instant ``at`` (a span's start
    is open, its end is closed)."""
    line, when = _line(hours), _aware(at)
    return any(s <= when < e for s, e in _day(line, _local_date(line, when)))


def next_opening(hours: Hours, after: dt.datetime) -> dt.datetime:
    """The next moment the line is open: ``after`` itself when it is open,
    else the start of the next open span (in the line's zone). Raises
    :class:`NeverOpen` for a line with no open time ahead."""
    line, when = _line(hours), _aware(after, "after")
    start, _ = next(_forward(line, when))
    return after if start <= when else start.astimezone(line.zone)


def closing(hours: Hours, at: dt.datetime) -> dt.datetime | None:
    """When the open span ``at`` is in ends (spans that touch, across a
    break of no length or midnight, count as one), in the line's zone;
    None when the line is closed at ``at`` or does not close within
    :data:`HORIZON_DAYS` (open round the clock)."""
    line, when = _line(hours), _aware(at)
    if not is_open(hours, at):
        return None
    limit = when + dt.timedelta(days=HORIZON_DAYS)
    end = when
    for start, stop in _forward(line, when):
        if start > end:
            break
        end = stop
        if end >= limit:
            return None
    return end.astimezone(line.zone)


def business_seconds(hours: Hours, start: dt.datetime, end: dt.datetime) -> float:
    """Seconds of open time between two aware instants (0 when ``end`` is
    not after ``start``). Additive: for a <= b <= c the time from a to c is
    the time from a to b plus the time from b to c."""
    line, lo, hi = _line(hours), _aware(start, "start"), _aware(end, "end")
    if hi <= lo:
        return 0.0
    total = dt.timedelta(0)
    day, last = _local_date(line, lo), _local_date(line, hi)
    while day <= last:
        for s, e in _day(line, day):
            if e > lo and s < hi:
                total += min(e, hi) - max(s, lo)
        day += dt.timedelta(days=1)
    return total.total_seconds()


def add_business(hours: Hours, start: dt.datetime, seconds: float) -> dt.datetime:
    """The instant ``seconds`` of open time after ``start``, in the line's
    zone: an SLA due time. A due time that uses up a span exactly is that
    span's end (18:00, not the next morning); 0 seconds is ``start``
    itself. Raises :class:`NeverOpen` when the line stops opening first."""
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    line, when = _line(hours), _aware(start, "start")
    if seconds == 0:
        return start
    left = dt.timedelta(seconds=seconds)
    for s, e in _forward(line, when):
        begin = max(s, when)
        if e - begin >= left:
            return (begin + left).astimezone(line.zone)
        left -= e - begin
    raise AssertionError("unreachable: _forward ends by raising NeverOpen")  # pragma: no cover


def off_period(hours: Hours, at: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """The closed period ``at`` is in, as (the moment the line closed, the
    next opening), both in the line's zone; None when the line is open.
    Every instant of one period gives the same pair, so the pair names the
    period (one out-of-hours notice per period). When the line was never
    open within :data:`HORIZON_DAYS` before the next opening, the period
    starts that many days before it. Raises :class:`NeverOpen` when no
    opening comes."""
    line, when = _line(hours), _aware(at)
    opens, _ = next(_forward(line, when))
    if opens <= when:
        return None
    floor = opens - dt.timedelta(days=HORIZON_DAYS)
    closed = _last_close(line, when, floor) or floor
    return closed.astimezone(line.zone), opens.astimezone(line.zone)


def _last_close(line: _Line, before: dt.datetime, floor: dt.datetime) -> dt.datetime | None:
    """The end of the last open interval ending at or before ``before``, not
    looking earlier than ``floor``."""
    day = _local_date(line, before)
    while day >= _local_date(line, floor) - dt.timedelta(days=1):
        ends = [e for _, e in _day(line, day) if floor <= e <= before]
        if ends:
            return max(ends)
        day -= dt.timedelta(days=1)
    return None
