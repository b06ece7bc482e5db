"""A conversation's sessions: the span of service the KPIs count.

A session opens with the client's message and closes when nobody wrote
for ``idle`` (the sweeper's :func:`expire`, or the client's next message
noticing it), when the CRM closes the deal/ticket/chat session
(:func:`crm_closed`) or when the service marks it resolved
(:func:`resolved`). A client's message after the close opens the next
session (``number`` + 1 within the conversation).

An idle session is closed at its last activity (either side's last
message) plus ``idle`` — the moment it went idle — not at the moment
someone noticed: the client's next message or the sweeper's pass may
come hours later, and a KPI reading the close time must not count those
hours as service.

The state is a frozen dataclass the core keeps in a JSON column
(:meth:`SessionState.to_dict` / :meth:`SessionState.from_dict`); every
transition returns a new state (or the same object when nothing
changed) and takes the moment it happened — no clock is read here. Every
moment must be time zone aware.

Out-of-hours notices (``notices``) and CSAT (``csat_*``, ``rating``...)
keep their records on the session too: :mod:`bridge.service.after_hours`
and :mod:`bridge.service.csat` read and write them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CLOSE_REASONS",
    "CloseReason",
    "SessionState",
    "client_wrote",
    "crm_closed",
    "expire",
    "language_of",
    "operator_replied",
    "record",
    "resolved",
    "session_key",
]

CloseReason = Literal["idle", "crm_closed", "resolved"]
CLOSE_REASONS: tuple[CloseReason, ...] = ("idle", "crm_closed", "resolved")

#: the moments a state keeps, by field name (serialised as ISO 8601)
_MOMENTS = (
    "opened_at",
    "last_client_at",
    "previous_client_at",
    "first_response_at",
    "last_operator_at",
    "closed_at",
    "csat_prompted_at",
    "rated_at",
    "comment_at",
    "alert_at",
)


@dataclass(frozen=True)
class SessionState:
    """One session of a conversation (frozen; transitions return a copy)."""

    #: 1 for the conversation's first session, then 2, 3...
    number: int
    opened_at: dt.datetime
    #: the client's latest message
    last_client_at: dt.datetime
    #: the client's message before the latest one (None: only one so far);
    #: the out-of-hours notice's "mid-dialog" rule reads it
    previous_client_at: dt.datetime | None = None
    #: the operator's first reply in this session
    first_response_at: dt.datetime | None = None
    last_operator_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    close_reason: CloseReason | None = None
    #: when out-of-hours notices went to the client in this session
    notices: tuple[dt.datetime, ...] = ()
    #: CSAT: when the rating prompt went out, the score (1-5) and when it
    #: came, when the comment came (its text goes to the CRM, not here),
    #: when the low-score alert was raised
    csat_prompted_at: dt.datetime | None = None
    rating: int | None = None
    rated_at: dt.datetime | None = None
    comment_at: dt.datetime | None = None
    alert_at: dt.datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def operator_replied(self) -> bool:
        """Whether an operator answered in this session."""
        return self.first_response_at is not None

    @property
    def last_activity(self) -> dt.datetime:
        """Either side's latest message: the idle limit counts from it."""
        if self.last_operator_at is None:
            return self.last_client_at
        return max(self.last_client_at, self.last_operator_at)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (moments as ISO 8601 strings with their offset)."""
        out: dict[str, Any] = dataclasses.asdict(self)
        for name in _MOMENTS:
            out[name] = _iso(getattr(self, name))
        out["notices"] = [moment.isoformat() for moment in self.notices]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionState:
        """The state :meth:`to_dict` wrote; unknown keys are ignored (a newer
        version's fields), missing optional ones take their defaults."""
        known = {field.name for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for name in _MOMENTS:
            if name in values:
                values[name] = _moment(values[name])
        values["notices"] = tuple(_parsed(text) for text in values.get("notices", ()))
        reason = values.get("close_reason")
        if reason is not None and reason not in CLOSE_REASONS:
            raise ValueError("unknown close reason")
        return cls(**values)


def session_key(conversation_id: int | str, state: SessionState) -> str:
    """A session's id across the bridge: its conversation and number
    (signed into CSAT links, part of the low-score alert's key)."""
    return f"{conversation_id}:{state.number}"


def client_wrote(
    state: SessionState | None, at: dt.datetime, idle: dt.timedelta
) -> tuple[SessionState, bool, SessionState | None]:
    """The client's message at ``at``: ``(session, opened_new,
    closed_previous)``.

    No session yet or the last one closed: a new one opens. The last one
    open but idle for ``idle`` or longer at ``at``: it closes ("idle", at
    its last activity + ``idle`` — when it went idle, not ``at``) and is
    returned as ``closed_previous`` for the core to record; a new one
    opens. Otherwise the message joins the open session."""
    _aware(at)
    if state is None:
        return _opened(1, at), True, None
    if not state.is_open:
        return _opened(state.number + 1, at), True, None
    if at - state.last_activity >= idle:
        closed = _close(state, state.last_activity + idle, "idle")
        return _opened(state.number + 1, at), True, closed
    if at < state.last_client_at:  # a late delivery: the order of messages stands
        return state, False, None
    updated = dataclasses.replace(state, previous_client_at=state.last_client_at, last_client_at=at)
    return updated, False, None


def operator_replied(state: SessionState, at: dt.datetime) -> SessionState:
    """An operator's reply at ``at``: the first one is the session's first
    response. A reply after the session closed changes nothing (the
    client's next message opens a new session)."""
    _aware(at)
    if not state.is_open:
        return state
    first = state.first_response_at if state.first_response_at is not None else at
    last = at if state.last_operator_at is None else max(state.last_operator_at, at)
    return dataclasses.replace(state, first_response_at=first, last_operator_at=last)


def crm_closed(state: SessionState, at: dt.datetime) -> SessionState:
    """The CRM closed the session's deal, ticket or chat session at ``at``."""
    return _close(state, _aware(at), "crm_closed")


def resolved(state: SessionState, at: dt.datetime) -> SessionState:
    """The service marked the session resolved at ``at``."""
    return _close(state, _aware(at), "resolved")


def expire(state: SessionState, now: dt.datetime, idle: dt.timedelta) -> SessionState:
    """The sweeper's pass at ``now``: an open session idle for ``idle`` or
    longer closes ("idle", at its last activity + ``idle``). Anything else
    is returned as it is (the same object)."""
    _aware(now)
    if not state.is_open or now - state.last_activity < idle:
        return state
    return _close(state, state.last_activity + idle, "idle")


def record(state: SessionState) -> dict[str, Any]:
    """The flat record the KPIs read: ``number``, ``opened``,
    ``first_response_seconds`` (wall-clock seconds from the open to the
    first reply; business time is the SLA clock's), ``closed``, ``reason``,
    ``operator_replied``, ``rating`` (the CSAT score). Moments as ISO 8601,
    None while unknown."""
    first = None
    if state.first_response_at is not None:
        first = (state.first_response_at - state.opened_at).total_seconds()
    return {
        "number": state.number,
        "opened": state.opened_at.isoformat(),
        "first_response_seconds": first,
        "closed": _iso(state.closed_at),
        "reason": state.close_reason,
        "operator_replied": state.operator_replied,
        "rating": state.rating,
    }


def language_of(language: str) -> str:
    """The primary subtag of a client's language tag, lower case ("ru-RU" ->
    "ru"); "en" for an empty one. The notices and CSAT pick their text by it."""
    return (language or "en").replace("_", "-").split("-")[0].lower() or "en"


def _opened(number: int, at: dt.datetime) -> SessionState:
    return SessionState(number=number, opened_at=at, last_client_at=at)


def _close(state: SessionState, at: dt.datetime, reason: CloseReason) -> SessionState:
    """A closed copy; a closed session stays as it closed (first close wins)."""
    if not state.is_open:
        return state
    return dataclasses.replace(state, closed_at=at, close_reason=reason)


def _aware(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a session's moments must be time zone aware")
    return at


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moment(value: object) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("a moment must be an ISO 8601 string")
    return _parsed(value)


def _parsed(text: str) -> dt.datetime:
    return _aware(dt.datetime.fromisoformat(text))
