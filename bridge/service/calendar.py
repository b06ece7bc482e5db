"""Working hours of a line: a week of open spans with breaks, a time zone,
holidays and transferred working days (a shipped production calendar plus
the tenant's own list). Every function takes the moment it is asked about
(``now``/``at``): no clock is read here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Hours", "Span"]


@dataclass(frozen=True)
class Span:
    """One open span of a day, local time; ``end`` after ``start`` (a span
    that runs past midnight is two spans)."""

    start: dt.time
    end: dt.time


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
