"""Out-of-hours notices: once per session per off-hours period, never after
a recent operator reply or mid-dialog, in the client's language with the
next opening in the line's zone; the morning task's due time. Every moment
is given (no clock); the line works the Russian production calendar."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from bridge.service.after_hours import (
    Verdict,
    mid_dialog,
    morning_task_due,
    notice_sent,
    notice_text,
    opening_words,
    should_notify,
    task_text,
)
from bridge.service.calendar import Hours, Span
from bridge.service.sessions import SessionState, client_wrote, crm_closed, operator_replied

MSK = ZoneInfo("Europe/Moscow")
VVO = ZoneInfo("Asia/Vladivostok")
QUIET = 30
IDLE = dt.timedelta(hours=48)
DAY = (Span(dt.time(9), dt.time(18)),)
WEEKDAYS = {d: DAY for d in range(5)}
MOSCOW = Hours(timezone="Europe/Moscow", week=WEEKDAYS, calendar="ru")
WITH_LUNCH = Hours(
    timezone="Europe/Moscow",
    week={d: (Span(dt.time(9), dt.time(13)), Span(dt.time(14), dt.time(18))) for d in range(5)},
)


def msk(day: int, hour: int, minute: int = 0, month: int = 3, year: int = 2025) -> dt.datetime:
    """A Moscow moment (2025-03-03 is a Monday)."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=MSK)


class Chat:
    """One conversation driven through sessions and notices as the core
    would: the client's message, the verdict, the notice recorded."""

    def __init__(self, hours: Hours = MOSCOW) -> None:
        self.hours = hours
        self.state: SessionState | None = None
        self.sent: list[dt.datetime] = []

    def client(self, at: dt.datetime) -> Verdict:
        self.state, _, _ = client_wrote(self.state, at, IDLE)
        verdict = should_notify(self.hours, self.state, self.state.notices, at, QUIET)
        if verdict.notify:
            self.state = notice_sent(self.state, at)
            self.sent.append(at)
        return verdict

    def operator(self, at: dt.datetime) -> None:
        assert self.state is not None
        self.state = operator_replied(self.state, at)


# -- the operator who answered just before closing -----------------------------------------------


def test_the_operator_answered_five_minutes_before_closing_no_notice() -> None:
    chat = Chat()
    assert chat.client(msk(3, 17, 40)).reason == "open"
    chat.operator(msk(3, 17, 55))
    verdict = chat.client(msk(3, 18, 2))
    assert verdict == Verdict(False, "operator_recent")
    assert chat.sent == []


def test_the_dialog_that_runs_past_closing_gets_no_notice_until_it_stops() -> None:
    chat = Chat()
    chat.client(msk(3, 17, 40))
    chat.operator(msk(3, 17, 55))
    assert chat.client(msk(3, 18, 5)).reason == "operator_recent"
    # 35 minutes after the operator, but answering the conversation: mid-dialog
    assert chat.client(msk(3, 18, 30)).reason == "mid_dialog"
    # the client's previous message (18:30) no longer answers the 17:55 reply
    assert chat.client(msk(3, 18, 50)) == Verdict(True, "off_hours")
    assert chat.sent == [msk(3, 18, 50)]


def test_a_client_back_at_night_after_a_day_dialog_is_notified() -> None:
    chat = Chat()
    chat.client(msk(3, 10, 0))
    chat.operator(msk(3, 10, 5))
    chat.client(msk(3, 10, 10))
    assert chat.client(msk(3, 21, 0)) == Verdict(True, "off_hours")


def test_the_quiet_minutes_end_exactly_at_their_length() -> None:
    chat = Chat()
    chat.client(msk(3, 17, 40))
    chat.operator(msk(3, 17, 55))
    assert chat.client(msk(3, 18, 24)).reason == "operator_recent"
    chat2 = Chat()
    chat2.client(msk(3, 17, 40))
    chat2.operator(msk(3, 17, 55))
    assert chat2.client(msk(3, 18, 25)).notify  # 30 minutes: the quiet is over


# -- the night ---------------------------------------------------------------------------------


def test_a_new_client_at_23_gets_one_notice_per_night() -> None:
    chat = Chat()
    assert chat.client(msk(3, 23, 0)) == Verdict(True, "off_hours")
    assert chat.client(msk(3, 23, 30)) == Verdict(False, "already_notified")
    assert chat.client(msk(4, 8, 59)).reason == "already_notified"  # the same night
    assert chat.client(msk(4, 12, 0)).reason == "open"
    # the next night: nobody answered, the session is still open: a new notice
    assert chat.client(msk(4, 22, 0)) == Verdict(True, "off_hours")
    assert chat.client(msk(4, 22, 10)).reason == "already_notified"
    assert chat.sent == [msk(3, 23, 0), msk(4, 22, 0)]
    assert chat.state is not None and chat.state.number == 1


def test_the_next_night_with_an_operator_reply_in_between() -> None:
    chat = Chat()
    chat.client(msk(3, 23, 0))
    chat.operator(msk(4, 9, 10))
    # the operator answered this morning; the client writes at night: a notice again
    assert chat.client(msk(4, 22, 0)).notify
    assert len(chat.sent) == 2


def test_a_new_session_the_same_night_gets_its_own_notice() -> None:
    chat = Chat()
    chat.client(msk(3, 23, 0))
    assert chat.state is not None
    chat.state = crm_closed(chat.state, msk(3, 23, 10))
    verdict = chat.client(msk(3, 23, 20))
    assert chat.state.number == 2 and verdict.notify


def test_the_weekend_is_one_off_period() -> None:
    chat = Chat()
    assert chat.client(msk(7, 19, 0)).notify  # Friday evening
    assert chat.client(msk(8, 12, 0)).reason == "already_notified"  # Saturday
    assert chat.client(msk(9, 23, 0)).reason == "already_notified"  # Sunday night
    assert chat.client(msk(10, 9, 30)).reason == "open"  # Monday


def test_a_lunch_break_is_an_off_period_of_its_own() -> None:
    chat = Chat(WITH_LUNCH)
    assert chat.client(msk(3, 13, 10)).notify
    assert chat.client(msk(3, 13, 50)).reason == "already_notified"
    assert chat.client(msk(3, 19, 0)).notify  # the evening is another period
    assert notice_text(WITH_LUNCH, msk(3, 13, 10), "en") == (
        "Thank you for your message. We are closed now and will answer today at 14:00."
    )


def test_a_closed_session_gets_no_notice() -> None:
    state, _, _ = client_wrote(None, msk(3, 23, 0), IDLE)
    state = crm_closed(state, msk(3, 23, 1))
    assert should_notify(MOSCOW, state, (), msk(3, 23, 2), QUIET).reason == "session_closed"


def test_a_line_that_never_opens_promises_nothing() -> None:
    never = Hours(timezone="Europe/Moscow", week={})
    state, _, _ = client_wrote(None, msk(3, 23, 0), IDLE)
    assert should_notify(never, state, (), msk(3, 23, 0), QUIET) == Verdict(False, "never_open")


def test_notices_of_earlier_nights_do_not_count_for_tonight() -> None:
    state, _, _ = client_wrote(None, msk(4, 22, 0), IDLE)
    earlier = (msk(3, 23, 0), msk(4, 8, 0))
    assert should_notify(MOSCOW, state, earlier, msk(4, 22, 0), QUIET).notify
    assert not should_notify(MOSCOW, state, (msk(4, 18, 0),), msk(4, 22, 0), QUIET)


# -- holidays and time zones -------------------------------------------------------------------


def test_a_holiday_week_promises_the_day_after_it() -> None:
    # Wednesday 11 June 2025: Thursday 12 is Russia Day, Friday 13 moved by decree
    chat = Chat()
    night = msk(11, 20, 0, month=6)
    assert chat.client(night).notify
    assert chat.client(msk(13, 12, 0, month=6)).reason == "already_notified"
    assert notice_text(MOSCOW, night, "ru") == (
        "Спасибо за сообщение! Сейчас мы не работаем и ответим в понедельник в 09:00."
    )
    assert chat.state is not None
    assert morning_task_due(MOSCOW, chat.state) == msk(16, 9, 0, month=6)


def test_new_year_holidays_name_the_date() -> None:
    eve = msk(30, 19, 0, month=12)
    assert notice_text(MOSCOW, eve, "ru").endswith("ответим 12 января в 09:00.")
    assert notice_text(MOSCOW, eve, "en").endswith("will answer on 12 January at 09:00.")


def test_a_transferred_working_saturday_opens_tomorrow() -> None:
    friday = msk(31, 19, 0, month=10)  # Saturday 1 November 2025 is worked
    assert notice_text(MOSCOW, friday, "ru").endswith("ответим завтра в 09:00.")
    state, _, _ = client_wrote(None, friday, IDLE)
    assert morning_task_due(MOSCOW, state) == msk(1, 9, 0, month=11)


def test_the_line_zone_decides_and_words_are_in_it() -> None:
    far_east = Hours(timezone="Asia/Vladivostok", week=WEEKDAYS)
    utc = dt.UTC
    # 23:30 UTC Monday is 09:30 Tuesday in Vladivostok: open
    state, _, _ = client_wrote(None, dt.datetime(2025, 3, 3, 23, 30, tzinfo=utc), IDLE)
    assert should_notify(far_east, state, (), state.last_client_at, QUIET).reason == "open"
    # 09:00 UTC Monday is 19:00 there: closed, the opening in its own time
    evening = dt.datetime(2025, 3, 3, 9, 0, tzinfo=utc)
    state, _, _ = client_wrote(None, evening, IDLE)
    assert should_notify(far_east, state, (), evening, QUIET).notify
    assert notice_text(far_east, evening, "en").endswith("tomorrow at 09:00.")
    assert morning_task_due(far_east, state) == dt.datetime(2025, 3, 4, 9, 0, tzinfo=VVO)
    # 22:30 UTC Monday is 08:30 Tuesday there: "today", though it is Monday in UTC
    dawn = dt.datetime(2025, 3, 3, 22, 30, tzinfo=utc)
    assert notice_text(far_east, dawn, "ru").endswith("ответим сегодня в 09:00.")


# -- the text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "language", "words"),
    [
        (msk(3, 6, 0), "en", "today at 09:00"),
        (msk(3, 6, 0), "ru", "сегодня в 09:00"),
        (msk(3, 23, 0), "en", "tomorrow at 09:00"),
        (msk(3, 23, 0), "ru", "завтра в 09:00"),
        (msk(4, 0, 30), "ru", "сегодня в 09:00"),  # after midnight: today
        (msk(7, 19, 0), "en", "on Monday at 09:00"),
        (msk(7, 19, 0), "ru", "в понедельник в 09:00"),
    ],
)
def test_the_opening_in_words(now: dt.datetime, language: str, words: str) -> None:
    assert notice_text(MOSCOW, now, language).endswith(f" {words}.")


@pytest.mark.parametrize(
    ("opening", "ru", "en"),
    [
        (msk(4, 9), "во вторник в 09:00", "on Tuesday at 09:00"),  # from Sunday 2 March
        (msk(5, 9), "в среду в 09:00", "on Wednesday at 09:00"),
        (msk(6, 10, 30), "в четверг в 10:30", "on Thursday at 10:30"),
        (msk(7, 9), "в пятницу в 09:00", "on Friday at 09:00"),
        (msk(8, 9), "в субботу в 09:00", "on Saturday at 09:00"),
        (msk(9, 9), "9 марта в 09:00", "on 9 March at 09:00"),
        (msk(12, 9), "12 марта в 09:00", "on 12 March at 09:00"),
    ],
)
def test_opening_words_table(opening: dt.datetime, ru: str, en: str) -> None:
    sunday = msk(2, 12, 0)
    assert opening_words(opening, sunday, "ru") == ru
    assert opening_words(opening, sunday, "en") == en


def test_the_client_language_picks_the_text() -> None:
    night = msk(3, 23, 0)
    assert notice_text(MOSCOW, night, "ru-RU").startswith("Спасибо за сообщение!")
    assert notice_text(MOSCOW, night, "de") == (
        "Thank you for your message. We are closed now and will answer tomorrow at 09:00."
    )


def test_the_mapping_text_overrides_with_its_placeholders() -> None:
    texts = {
        "ru": "Мы на связи {opening}. Время: {opening_time}, {unknown}!",
        "en": "Back {opening}.",
    }
    night = msk(7, 19, 0)
    assert notice_text(MOSCOW, night, "ru", texts) == (
        "Мы на связи в понедельник в 09:00. Время: 09:00, !"
    )
    assert notice_text(MOSCOW, night, "en", texts) == "Back on Monday at 09:00."
    # a language the mapping lacks takes the default text
    assert notice_text(MOSCOW, night, "de", {"ru": "x"}).startswith("Thank you")


def test_a_mapping_text_cannot_reach_attributes() -> None:
    text = notice_text(MOSCOW, msk(3, 23, 0), "en", {"en": "{opening.__class__} {0}"})
    assert text == "{0}"  # an unknown name renders empty, nothing is evaluated


# -- mid-dialog and the task ---------------------------------------------------------------------


def test_mid_dialog_needs_an_operator_reply_the_client_answered() -> None:
    quiet = dt.timedelta(minutes=QUIET)
    state, _, _ = client_wrote(None, msk(3, 17, 0), IDLE)
    state, _, _ = client_wrote(state, msk(3, 17, 10), IDLE)
    assert not mid_dialog(state, msk(3, 17, 10), quiet)  # nobody answered
    state = operator_replied(state, msk(3, 17, 5))
    # the previous message (17:00) came before the reply: the client did not answer it
    assert not mid_dialog(state, msk(3, 17, 10), quiet)
    state, _, _ = client_wrote(state, msk(3, 17, 20), IDLE)  # previous: 17:10, after 17:05
    assert mid_dialog(state, msk(3, 17, 20), quiet)
    assert not mid_dialog(state, msk(3, 17, 41), quiet)  # 31 min after the previous one


def test_the_morning_task_is_due_at_the_next_opening() -> None:
    state, _, _ = client_wrote(None, msk(3, 23, 0), IDLE)
    due = morning_task_due(MOSCOW, state)
    assert due == msk(4, 9, 0) and due.utcoffset() == dt.timedelta(hours=3)
    friday, _, _ = client_wrote(None, msk(7, 18, 0), IDLE)  # closing time itself is closed
    assert morning_task_due(MOSCOW, friday) == msk(10, 9, 0)


def test_the_task_title_is_in_the_crm_users_language() -> None:
    assert task_text("ru") == "Клиент написал в нерабочее время: ответьте в начале рабочего дня"
    assert task_text("en-GB") == "The client wrote out of hours: answer at opening"
    assert task_text("fr") == task_text("en")


def test_the_verdict_reads_as_a_boolean() -> None:
    assert Verdict(True, "off_hours") and not Verdict(False, "open")
