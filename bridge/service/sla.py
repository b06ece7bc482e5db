"""SLA clocks of one conversation, in business time (the line's open hours).

A frozen :class:`SlaState` and pure transitions: :func:`client_wrote`,
:func:`operator_replied`, :func:`closed`, :func:`moved`; :func:`check` says
which warnings and breaches are due at ``now`` and :func:`record` marks
them raised, so every alert is given once ("never a storm"). No clock is
read here: every function takes the moment (``at``/``now``).

The clocks (each counts only while the line is open, see
:mod:`bridge.service.calendar`):

* ``first_response``: from the client's first message of a conversation to
  the operator's first reply;
* ``next_response``: from the client's next message after an operator's
  reply to the operator's next reply;
* ``resolution``: from the client's first message to the close, paused while
  waiting for the client (from an operator's reply until the client writes).

A clock past its due time when it stops (the reply came late) still gives
its breach once; a warning is given only while a clock runs. A check that
finds a clock already past its due time gives the breach alone (the warning
is implied).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Literal

from bridge.service.calendar import Hours, add_business, business_seconds

__all__ = [
    "Alert",
    "Clock",
    "Kind",
    "Level",
    "SlaState",
    "Targets",
    "check",
    "client_wrote",
    "closed",
    "due",
    "moved",
    "next_check",
    "operator_replied",
    "record",
    "start",
]

Kind = Literal["first_response", "next_response", "resolution"]
Level = Literal["warning", "breach"]
Phase = Literal["idle", "operator", "client", "closed"]
_ZERO = dt.timedelta(0)
_BOTH: frozenset[Level] = frozenset({"warning", "breach"})


@dataclass(frozen=True)
class Targets:
    """A line's SLA for one priority: business time allowed per clock
    (None: that clock has no due time and gives no alerts) and the share of
    it at which a warning is given (0 or 1: no warning, the breach only)."""

    first_response: dt.timedelta | None = None
    next_response: dt.timedelta | None = None
    resolution: dt.timedelta | None = None
    warn_share: float = 0.8

    def __post_init__(self) -> None:
        for kind in ("first_response", "next_response", "resolution"):
            value = getattr(self, kind)
            if value is not None and value <= _ZERO:
                raise ValueError(f"{kind} must be a positive duration")
        if not 0.0 <= self.warn_share <= 1.0:
            raise ValueError("warn_share must be between 0 and 1")

    def of(self, kind: Kind) -> dt.timedelta | None:
        """The time allowed for ``kind``."""
        allowed: dt.timedelta | None = getattr(self, kind)
        return allowed

    def warning_of(self, kind: Kind) -> dt.timedelta | None:
        """The business time after which ``kind`` gives its warning (None: no warning)."""
        allowed = self.of(kind)
        if allowed is None or self.warn_share in (0.0, 1.0):
            return None
        return allowed * self.warn_share


@dataclass(frozen=True)
class Clock:
    """One clock: the business time it has counted and whether it runs."""

    kind: Kind
    #: the client's message that started it
    started: dt.datetime
    #: business time counted up to ``since`` (or up to its pause or stop)
    used: dt.timedelta = _ZERO
    #: counting since this instant; None while paused or once stopped
    since: dt.datetime | None = None
    stopped: bool = False
    #: its due time, once a pause, a stop or a move found that due time past
    overdue_at: dt.datetime | None = None
    #: the alerts already given
    raised: frozenset[Level] = frozenset()


@dataclass(frozen=True)
class SlaState:
    """The SLA clocks of one conversation on its current line."""

    hours: Hours
    targets: Targets
    clocks: tuple[Clock, ...] = ()
    #: idle (nothing yet), operator (the client waits for an operator),
    #: client (waiting for the client), closed
    phase: Phase = "idle"
    #: an operator has answered the client in this conversation (the next
    #: client message starts ``next_response``, not ``first_response``)
    answered: bool = False


@dataclass(frozen=True, order=True)
class Alert:
    """A warning or a breach of one clock."""

    due: dt.datetime
    kind: Kind
    level: Level
    #: the clock's start (tells two next-response clocks apart)
    started: dt.datetime = field(compare=False)


def start(hours: Hours, targets: Targets) -> SlaState:
    """A conversation's SLA state before anything happened."""
    return SlaState(hours, targets)


# -- transitions -----------------------------------------------------------------------------


def client_wrote(state: SlaState, at: dt.datetime) -> SlaState:
    """The client wrote at ``at``. The first message (of a new or a closed
    conversation, or after the operator wrote first) starts the
    first-response and resolution clocks; a message while waiting for the
    client after an operator's answer starts a next-response clock and
    resumes resolution; a message while the client already waits changes
    nothing."""
    if state.phase == "operator":
        return state
    if state.phase == "client" and state.answered:
        clocks = [_resume(c, at) if c.kind == "resolution" else c for c in state.clocks]
        if not any(c.kind == "resolution" and not c.stopped for c in clocks):
            clocks.append(Clock("resolution", at, since=at))
        clocks.append(Clock("next_response", at, since=at))
        return _with(state, clocks, phase="operator")
    kept = [_stop(state, c, at) for c in state.clocks]
    fresh = [Clock("first_response", at, since=at), Clock("resolution", at, since=at)]
    return _with(state, kept + fresh, phase="operator", answered=False)


def operator_replied(state: SlaState, at: dt.datetime) -> SlaState:
    """An operator replied at ``at``: the running response clock stops
    (met, or late: then its breach is still given once) and resolution
    pauses until the client writes. A reply before any client message
    starts nothing."""
    if state.phase == "operator":
        clocks = [
            _pause(state, c, at) if c.kind == "resolution" else _stop(state, c, at)
            for c in state.clocks
        ]
        return _with(state, clocks, phase="client", answered=True)
    if state.phase == "client":
        return state
    return _with(state, [_stop(state, c, at) for c in state.clocks], phase="client", answered=False)


def closed(state: SlaState, at: dt.datetime) -> SlaState:
    """The conversation was closed at ``at``: every clock stops. The client's
    next message starts a new conversation's clocks."""
    clocks = [_stop(state, c, at) for c in state.clocks]
    return _with(state, clocks, phase="closed", answered=False)


def moved(state: SlaState, hours: Hours, targets: Targets, at: dt.datetime) -> SlaState:
    """The conversation moved to another line at ``at`` (a transfer).

    The client's wait does not start over: the business time each clock has
    counted so far (in the old line's hours, up to ``at``) carries over, the
    new line's targets apply to that total, and from ``at`` on time counts in
    the new line's hours. A clock already past the new line's target is due
    at once (its breach is given at the next check unless it was given
    before). An alert already given stays given only while the new terms
    still put the clock past it: a new line that allows more time gives its
    own warning and breach when they come, once each."""
    settled = [_settle(state, c, at) for c in state.clocks]
    clocks = [c if c.stopped else _reterm(c, targets, at) for c in settled]
    return _with(replace(state, hours=hours, targets=targets), clocks)


# -- alerts and due times --------------------------------------------------------------------


def check(state: SlaState, now: dt.datetime) -> list[Alert]:
    """The warnings and breaches due at ``now`` and not raised yet, by due
    time. Pure: pass them to :func:`record` (in the transaction that sends
    or enqueues them) so the next check does not give them again."""
    alerts: list[Alert] = []
    for clock in state.clocks:
        alert = _alert(state, clock, now)
        if alert is not None:
            alerts.append(alert)
    return sorted(alerts)


def record(state: SlaState, alerts: list[Alert]) -> SlaState:
    """``state`` with ``alerts`` marked raised (a breach marks the warning too)."""
    given = {(a.kind, a.started): a.level for a in alerts}
    clocks = []
    for clock in state.clocks:
        level = given.get((clock.kind, clock.started))
        if level is not None:
            levels = _BOTH if level == "breach" else frozenset({level})
            clock = replace(clock, raised=clock.raised | levels)
        clocks.append(clock)
    return _with(state, clocks)


def due(state: SlaState) -> dt.datetime | None:
    """The nearest due time of the running clocks (past when one is late),
    in the line's zone, to write into the CRM; None when no clock with a
    target runs."""
    dues = [_due(state, c) for c in state.clocks if c.since is not None]
    found = [d for d in dues if d is not None]
    return min(found) if found else None


def next_check(state: SlaState) -> dt.datetime | None:
    """When the next alert comes if nothing happens before: schedule the
    next :func:`check` then instead of polling. None: no alert ahead
    (a late clock's unraised breach is due at its due time, in the past)."""
    moments = [m for c in state.clocks for m in _alert_moments(state, c)]
    return min(moments) if moments else None


# -- one clock -------------------------------------------------------------------------------


def _with(
    state: SlaState,
    clocks: list[Clock],
    phase: Phase | None = None,
    answered: bool | None = None,
) -> SlaState:
    """``state`` with ``clocks`` (and the phase and answered flag when
    given), dropping the stopped clocks that have nothing left to say: met
    in time, or their breach given."""
    kept = tuple(c for c in clocks if not (c.stopped and _settled(c)))
    return replace(
        state,
        clocks=kept,
        phase=state.phase if phase is None else phase,
        answered=state.answered if answered is None else answered,
    )


def _settled(clock: Clock) -> bool:
    return clock.overdue_at is None or "breach" in clock.raised


def _settle(state: SlaState, clock: Clock, at: dt.datetime) -> Clock:
    """A running clock's time counted up to ``at`` (``since`` becomes ``at``),
    noting its due time if it passed."""
    if clock.since is None:
        return clock
    spent = dt.timedelta(seconds=business_seconds(state.hours, clock.since, at))
    allowed = state.targets.of(clock.kind)
    overdue_at = clock.overdue_at
    if overdue_at is None and allowed is not None and clock.used + spent >= allowed:
        left = max(allowed - clock.used, _ZERO)
        overdue_at = add_business(state.hours, clock.since, left.total_seconds())
    return replace(clock, used=clock.used + spent, since=at, overdue_at=overdue_at)


def _pause(state: SlaState, clock: Clock, at: dt.datetime) -> Clock:
    return replace(_settle(state, clock, at), since=None)


def _stop(state: SlaState, clock: Clock, at: dt.datetime) -> Clock:
    return replace(_settle(state, clock, at), since=None, stopped=True)


def _resume(clock: Clock, at: dt.datetime) -> Clock:
    if clock.stopped or clock.since is not None:
        return clock
    return replace(clock, since=at)


def _reterm(clock: Clock, targets: Targets, at: dt.datetime) -> Clock:
    """A settled clock under a new line's targets (see :func:`moved`)."""
    allowed = targets.of(clock.kind)
    if allowed is None:
        return replace(clock, overdue_at=None)
    late = clock.used >= allowed
    warned_by = targets.warning_of(clock.kind)
    keep: set[Level] = set()
    if late:
        keep |= {"breach", "warning"}
    elif warned_by is not None and clock.used >= warned_by:
        keep.add("warning")
    overdue_at = (clock.overdue_at or at) if late else None
    return replace(clock, overdue_at=overdue_at, raised=clock.raised & frozenset(keep))


def _due(state: SlaState, clock: Clock) -> dt.datetime | None:
    """The clock's due time: past once it was found late; ahead while it
    runs; None for a paused or stopped clock in time, or without a target."""
    if clock.overdue_at is not None:
        return clock.overdue_at
    allowed = state.targets.of(clock.kind)
    if allowed is None or clock.since is None:
        return None
    left = max(allowed - clock.used, _ZERO)
    return add_business(state.hours, clock.since, left.total_seconds())


def _alert(state: SlaState, clock: Clock, now: dt.datetime) -> Alert | None:
    when = _due(state, clock)
    if when is None or "breach" in clock.raised:
        return None
    if now >= when:
        return Alert(when, clock.kind, "breach", clock.started)
    warn_at = _warning_at(state, clock)
    if warn_at is not None and now >= warn_at:
        return Alert(when, clock.kind, "warning", clock.started)
    return None


def _warning_at(state: SlaState, clock: Clock) -> dt.datetime | None:
    """When a running clock reaches its warning share (None: no warning
    ahead, already given, or not running)."""
    warned_by = state.targets.warning_of(clock.kind)
    if warned_by is None or clock.since is None or "warning" in clock.raised:
        return None
    left = max(warned_by - clock.used, _ZERO)
    return add_business(state.hours, clock.since, left.total_seconds())


def _alert_moments(state: SlaState, clock: Clock) -> list[dt.datetime]:
    if "breach" in clock.raised:
        return []
    # the warning comes before the due time; the due time once it is given
    moments = [m for m in (_warning_at(state, clock), _due(state, clock)) if m is not None]
    return moments[:1]
