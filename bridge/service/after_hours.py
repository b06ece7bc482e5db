"""Out-of-hours notices: whether a client's message gets "we are closed,
we will answer at <opening>", its text, and when the morning task is due.

The rules answer the complaints users of other inboxes raise about
out-of-office replies that fire on the agent's own message or in the
middle of a chat (chatwoot#2035, #3042, #9293): a notice goes only for
the client's message (the core never asks for an operator's), once per
session per off-hours period, never while an operator answered in the
last ``quiet`` minutes, and never mid-dialog (see :func:`mid_dialog`).

Pure functions: every one takes the moment it is asked about; the session
state (:class:`~bridge.service.sessions.SessionState`) keeps the notices
sent (:func:`notice_sent`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from bridge.service.calendar import Hours, NeverOpen, next_opening, off_period
from bridge.service.sessions import SessionState, language_of
from bridge.templates import render

__all__ = [
    "NOTICE",
    "TASK",
    "Verdict",
    "mid_dialog",
    "morning_task_due",
    "notice_sent",
    "notice_text",
    "opening_words",
    "should_notify",
    "task_text",
]

#: the notice's default text per language; ``{opening}`` is the next opening
#: in words ("tomorrow at 09:00"), ``{opening_time}`` its time ("09:00"),
#: both in the line's time zone. The mapping may give its own per language.
NOTICE = {
    "en": "Thank you for your message. We are closed now and will answer {opening}.",
    "ru": "Спасибо за сообщение! Сейчас мы не работаем и ответим {opening}.",
}

#: the morning task's title (a CRM user reads it)
TASK = {
    "en": "The client wrote out of hours: answer at opening",
    "ru": "Клиент написал в нерабочее время: ответьте в начале рабочего дня",
}

_WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    # accusative, with the preposition's form ("во вторник")
    "ru": (
        "в понедельник",
        "во вторник",
        "в среду",
        "в четверг",
        "в пятницу",
        "в субботу",
        "в воскресенье",
    ),
}
_MONTHS = {
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    # genitive ("12 января")
    "ru": (
        "января",
        "февраля",
        "марта",
        "апреля",
        "мая",
        "июня",
        "июля",
        "августа",
        "сентября",
        "октября",
        "ноября",
        "декабря",
    ),
}


@dataclass(frozen=True)
class Verdict:
    """Whether to send the notice, and why (a short code for the audit:
    ``off_hours`` when it goes; ``session_closed``, ``open``,
    ``already_notified``, ``operator_recent``, ``mid_dialog``, ``never_open``
    (a line with no open time ahead) when not)."""

    notify: bool
    reason: str

    def __bool__(self) -> bool:
        return self.notify


def should_notify(
    hours: Hours,
    session: SessionState,
    notices_sent: Sequence[dt.datetime],
    now: dt.datetime,
    quiet_minutes: int,
) -> Verdict:
    """Whether the client's message at ``now`` gets an out-of-hours notice.

    Asked right after :func:`~bridge.service.sessions.client_wrote` for
    that message (``session.last_client_at`` is ``now``), never for an
    operator's message. ``notices_sent`` are the moments this session's
    notices went (``session.notices``). A notice goes when the line is
    closed at ``now``, no notice of this session fell in the same closed
    period (one per session per off-hours period: the next night gets one
    again if the session is still open), no operator replied in the last
    ``quiet_minutes``, and the session is not mid-dialog."""
    quiet = dt.timedelta(minutes=quiet_minutes)
    if not session.is_open:
        return Verdict(False, "session_closed")
    try:
        period = off_period(hours, now)
    except NeverOpen:  # no opening to promise
        return Verdict(False, "never_open")
    if period is None:
        return Verdict(False, "open")
    start, opening = period
    if any(start <= sent < opening for sent in notices_sent):
        return Verdict(False, "already_notified")
    last_reply = session.last_operator_at
    if last_reply is not None and now - last_reply < quiet:
        return Verdict(False, "operator_recent")
    if mid_dialog(session, now, quiet):
        return Verdict(False, "mid_dialog")
    return Verdict(True, "off_hours")


def mid_dialog(session: SessionState, now: dt.datetime, quiet: dt.timedelta) -> bool:
    """Whether the client's message at ``now`` continues a live exchange
    with an operator: an operator replied in this session, the client's
    previous message answered that reply (came after the operator's last
    reply, within ``quiet`` of it) and this message follows that one within
    ``quiet``.

    This is the "the bot said we're closed while the agent was talking to
    me" case (chatwoot#9293): the agent answered at 17:55, the client
    answered at 18:05 and writes again at 18:30 — 35 minutes after the
    agent, yet still in the conversation. The exchange is anchored to the
    operator's last reply, so a client who keeps writing long after the
    operator left (each message more than ``quiet`` after the reply it
    could be answering) does get the notice: at most ``2 * quiet`` after
    the operator's last reply."""
    reply = session.last_operator_at
    previous = session.previous_client_at
    if reply is None or previous is None:
        return False
    answered = reply <= previous <= reply + quiet
    return answered and dt.timedelta(0) <= now - previous <= quiet


def notice_sent(session: SessionState, at: dt.datetime) -> SessionState:
    """The session with a notice sent at ``at`` recorded."""
    return dataclasses.replace(session, notices=(*session.notices, at))


def notice_text(
    hours: Hours,
    now: dt.datetime,
    language: str,
    texts: Mapping[str, str] | None = None,
) -> str:
    """The notice in the client's language: the mapping's text for it
    (``texts``, by language) or the default (:data:`NOTICE`; English for a
    language it lacks), its placeholders filled with the next opening after
    ``now`` in the line's time zone and the client's language."""
    lang = language_of(language)
    template = (texts or {}).get(lang) or NOTICE.get(lang) or NOTICE["en"]
    opening = next_opening(hours, now).astimezone(ZoneInfo(hours.timezone))
    words_lang = lang if lang in _WEEKDAYS else "en"
    context = {
        "opening": opening_words(opening, now, words_lang),
        "opening_time": opening.strftime("%H:%M"),
    }
    return render(template, context)


def opening_words(opening: dt.datetime, now: dt.datetime, language: str) -> str:
    """``opening`` (in the line's time zone) as the client reads it, from
    ``now``: "today at 09:00" / "сегодня в 09:00", "tomorrow at 09:00" /
    "завтра в 09:00", within a week "on Monday at 09:00" / "в понедельник в
    09:00", later "on 12 January at 09:00" / "12 января в 09:00"."""
    days = (opening.date() - now.astimezone(opening.tzinfo).date()).days
    time = opening.strftime("%H:%M")
    ru = language == "ru"
    if days <= 0:
        return f"сегодня в {time}" if ru else f"today at {time}"
    if days == 1:
        return f"завтра в {time}" if ru else f"tomorrow at {time}"
    if days < 7:
        day = _WEEKDAYS["ru" if ru else "en"][opening.weekday()]
        return f"{day} в {time}" if ru else f"on {day} at {time}"
    month = _MONTHS["ru" if ru else "en"][opening.month - 1]
    return f"{opening.day} {month} в {time}" if ru else f"on {opening.day} {month} at {time}"


def morning_task_due(hours: Hours, session: SessionState) -> dt.datetime:
    """When the task that surfaces the session to its owner is due: the line's
    next opening after the client's latest message. The core creates it
    with the notice (so once per session per off-hours period)."""
    return next_opening(hours, session.last_client_at)


def task_text(language: str) -> str:
    """The morning task's title in the CRM user's language."""
    return TASK.get(language_of(language), TASK["en"])
