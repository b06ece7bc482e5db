"""CSAT: the prompt once per answered session, reading ratings (en/ru),
the comment once, signed e-mail links (tampering and expiry refused), one
low-score alert per session. Every moment is given (no clock)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.service import csat
from bridge.service.csat import (
    Button,
    LinkClaim,
    Verdict,
    alert_key,
    alert_raised,
    awaits_rating,
    button_payload,
    commented,
    is_low,
    link_token,
    parse_rating,
    payload_session,
    prompt,
    prompted,
    rated,
    rating_links,
    read_token,
    should_alert,
    should_prompt,
    takes_comment,
    thanks_text,
)
from bridge.service.sessions import (
    SessionState,
    client_wrote,
    crm_closed,
    expire,
    operator_replied,
    resolved,
    session_key,
)

T0 = dt.datetime(2025, 3, 3, 10, 0, tzinfo=dt.UTC)
IDLE = dt.timedelta(hours=24)
WINDOW = dt.timedelta(hours=24)
COMMENT = dt.timedelta(minutes=30)
SECRET = "s3cret-for-tests"  # noqa: S105 — a test key
DAY = dt.timedelta(days=1)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def answered_and_closed(reason: str = "crm") -> SessionState:
    state, _, _ = client_wrote(None, T0, IDLE)
    state = operator_replied(state, at(5))
    return crm_closed(state, at(60)) if reason == "crm" else resolved(state, at(60))


# -- the prompt --------------------------------------------------------------------------------


def test_a_closed_answered_session_is_prompted_once() -> None:
    state = answered_and_closed()
    assert should_prompt(state) == Verdict(True, "prompt")
    state = prompted(state, at(61))
    assert should_prompt(state) == Verdict(False, "already_prompted")
    # the round trip through the JSON column keeps the record
    assert should_prompt(SessionState.from_dict(state.to_dict())).reason == "already_prompted"


def test_resolved_sessions_are_prompted_too() -> None:
    assert should_prompt(answered_and_closed("resolved")).ok


def test_an_open_session_is_not_prompted() -> None:
    state, _, _ = client_wrote(None, T0, IDLE)
    assert should_prompt(operator_replied(state, at(1))) == Verdict(False, "not_closed")


def test_our_idle_timeout_without_a_reply_is_never_prompted() -> None:
    state, _, _ = client_wrote(None, T0, IDLE)
    swept = expire(state, T0 + 2 * IDLE, IDLE)
    assert should_prompt(swept) == Verdict(False, "idle_without_reply")


def test_an_idle_close_after_a_reply_is_prompted() -> None:
    state, _, _ = client_wrote(None, T0, IDLE)
    swept = expire(operator_replied(state, at(3)), T0 + 2 * IDLE, IDLE)
    assert swept.close_reason == "idle" and should_prompt(swept).ok


def test_a_crm_close_nobody_answered_is_not_prompted() -> None:
    state, _, _ = client_wrote(None, T0, IDLE)
    assert should_prompt(crm_closed(state, at(3))) == Verdict(False, "no_operator_reply")


def test_the_previous_session_closed_by_a_new_message_is_prompted() -> None:
    state, _, _ = client_wrote(None, T0, IDLE)
    state = operator_replied(state, at(5))
    _, _, closed = client_wrote(state, T0 + 2 * IDLE, IDLE)
    assert closed is not None and should_prompt(closed).ok


@pytest.mark.parametrize("language", ["en", "ru"])
def test_the_prompt_with_buttons(language: str) -> None:
    shown = prompt(language, "buttons", 7)
    assert shown.buttons == tuple(Button(str(n), f"csat:7:{n}") for n in range(1, 6))
    assert ("1" in shown.text and "5" in shown.text) and not shown.links
    assert [parse_rating(b.payload) for b in shown.buttons] == [1, 2, 3, 4, 5]


def test_the_prompt_by_number_in_both_languages() -> None:
    assert "Reply with a number from 1 (bad) to 5 (excellent)" in prompt("en", "number", 1).text
    assert "ответьте цифрой от 1 (плохо) до 5 (отлично)" in prompt("ru-RU", "number", 1).text
    assert prompt("de", "number", 1).text == prompt("en", "number", 1).text
    assert prompt("ru", "number", 1).buttons == ()


def test_the_prompt_for_e_mail_carries_the_links() -> None:
    links = rating_links(SECRET, 9, "41:2", "https://bridge.example/csat", now=T0)
    shown = prompt("ru", "links", 2, links)
    assert shown.links == links and [score for score, _ in links] == [1, 2, 3, 4, 5]
    assert shown.text.startswith("Оцените")


def test_a_button_names_its_session() -> None:
    assert button_payload(3, 5) == "csat:3:5"
    assert payload_session("csat:3:5") == 3
    assert payload_session("5") is None and payload_session("csat:3:6") is None


# -- reading a rating --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("5", 5),
        ("1", 1),
        (" 4 ", 4),
        ("4.", 4),
        ("3!", 3),
        ("４", 4),  # a full-width digit
        ("4️⃣", 4),  # a keycap emoji
        ("4/5", 4),
        ("4 / 5", 4),
        ("2 из 5", 2),
        ("5 out of 5", 5),
        ("5 - great", 5),
        ("5 — отлично", 5),
        ("5 – отлично!", 5),
        ("4, thanks", 4),
        ("4, спасибо большое", 4),
        ("1 (ужасно)", 1),
        ("3: so-so", 3),
        ("5 stars", 5),
        ("1 star", 1),
        ("5 звёзд", 5),
        ("5 звезд", 5),
        ("3 балла", 3),
        ("rating: 4", 4),
        ("My rating is 5", 5),
        ("Оценка 5", 5),
        ("ставлю 5", 5),
        ("оценка: 3 из 5", 3),
        ("five", 5),
        ("Пять", 5),
        ("три", 3),
        ("пятёрка", 5),
        ("⭐⭐⭐", 3),
        ("⭐️⭐️⭐️⭐️⭐️", 5),
        ("★", 1),
        ("★★★☆☆", 3),
        ("⭐ ⭐", 2),
        ("csat:12:2", 2),
        ("csat:4", 4),
    ],
)
def test_ratings_read(text: str, score: int) -> None:
    assert parse_rating(text) == score


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0",
        "6",
        "10",
        "-5",
        "4 5",
        "4.5",
        "5/10",
        "I waited 5 hours for an answer",
        "5 hours and no answer",
        "2 days and nobody called me back",
        "Жду ответа уже 3 дня",
        "5 - but the courier was late and rude to me",  # a label of more words: the client talks
        "ok",
        "хорошо",  # "fine" in Russian: never read as a 4
        "great",
        "спасибо",
        "⭐⭐⭐⭐⭐⭐",
        "★★☆",
        "3 2 1",
        "csat:3:9",
        "csat:x",
        "my order 4",
        "Call me at 5",
        "5" * 70,
    ],
)
def test_anything_else_is_not_a_rating(text: str) -> None:
    assert parse_rating(text) is None


@given(st.text(max_size=80))
def test_any_text_reads_as_nothing_or_a_score_of_one_to_five(text: str) -> None:
    assert parse_rating(text) in {None, 1, 2, 3, 4, 5}


@given(
    st.integers(min_value=1, max_value=5),
    st.lists(st.sampled_from(["hours", "days", "waited", "ждал", "часа", "nobody"]), min_size=1),
)
def test_a_score_followed_by_talk_is_not_a_rating(score: int, words: list[str]) -> None:
    assert parse_rating(f"{score} {' '.join(words)}") is None


# -- the rating, the comment, the thanks -------------------------------------------------------


def test_the_rating_is_awaited_within_its_window_once() -> None:
    state = prompted(answered_and_closed(), at(61))
    assert not awaits_rating(answered_and_closed(), at(62), WINDOW)  # never prompted
    assert awaits_rating(state, at(62), WINDOW)
    assert awaits_rating(state, at(61) + WINDOW, WINDOW)
    assert not awaits_rating(state, at(61) + WINDOW + dt.timedelta(seconds=1), WINDOW)
    assert not awaits_rating(state, at(60), WINDOW)  # before the prompt
    state = rated(state, 4, at(70))
    assert not awaits_rating(state, at(71), WINDOW)


def test_one_rating_per_session() -> None:
    state = rated(prompted(answered_and_closed(), at(61)), 2, at(70))
    assert (state.rating, state.rated_at) == (2, at(70))
    assert rated(state, 5, at(75)) is state  # a second link clicked, a second number


@pytest.mark.parametrize("score", [0, 6, -1])
def test_a_score_out_of_range_is_refused(score: int) -> None:
    with pytest.raises(ValueError):
        rated(answered_and_closed(), score, at(70))


def test_the_next_message_within_the_window_is_the_comment_once() -> None:
    state = prompted(answered_and_closed(), at(61))
    assert not takes_comment(state, at(65), COMMENT)  # not rated yet
    state = rated(state, 2, at(70))
    assert takes_comment(state, at(75), COMMENT)
    assert takes_comment(state, at(100), COMMENT)
    assert not takes_comment(state, at(100.5), COMMENT)
    state = commented(state, at(75))
    assert state.comment_at == at(75)
    assert not takes_comment(state, at(76), COMMENT)
    assert commented(state, at(80)) is state


def test_a_client_message_after_a_prompt_the_core_reads_in_order() -> None:
    """The order the module documents: a rating, then the comment, then a new
    session."""
    state = prompted(answered_and_closed(), at(61))
    kinds = []
    for minute, text in ((62, "5 - great"), (64, "Thank you, the operator was fast"), (66, "4")):
        now = at(minute)
        score = parse_rating(text)
        if awaits_rating(state, now, WINDOW) and score is not None:
            state, kind = rated(state, score, now), "rating"
        elif takes_comment(state, now, COMMENT):
            state, kind = commented(state, now), "comment"
        else:
            new, opened, _ = client_wrote(state, now, IDLE)
            kind = f"session {new.number}" if opened else "same session"
        kinds.append(kind)
    assert kinds == ["rating", "comment", "session 2"]
    assert state.rating == 5


def test_thanks_in_both_languages_and_a_low_score_asks_why() -> None:
    assert thanks_text("ru", 5) == "Спасибо за оценку!"
    assert thanks_text("en", 4) == "Thank you for your rating!"
    assert "что пошло не так" in thanks_text("ru", 3)
    assert "what went wrong" in thanks_text("en", 1)
    assert thanks_text("en", 3, threshold=2) == "Thank you for your rating!"


# -- signed links ------------------------------------------------------------------------------


def test_a_link_token_round_trips() -> None:
    token = link_token(SECRET, 9, "41:2", 4, now=T0)
    assert read_token(SECRET, token, DAY, now=T0 + dt.timedelta(hours=5)) == LinkClaim(9, "41:2", 4)
    assert read_token(SECRET, token, DAY, now=T0 + DAY) == LinkClaim(9, "41:2", 4)


def test_an_expired_token_is_refused() -> None:
    token = link_token(SECRET, 9, "41:2", 4, now=T0)
    assert read_token(SECRET, token, DAY, now=T0 + DAY + dt.timedelta(seconds=1)) is None


def test_a_token_from_the_future_is_refused() -> None:
    token = link_token(SECRET, 9, "41:2", 4, now=T0 + dt.timedelta(hours=1))
    assert read_token(SECRET, token, DAY, now=T0) is None


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = link_token("another-secret", 9, "41:2", 4, now=T0)
    assert read_token(SECRET, token, DAY, now=T0) is None


def _flip(token: str, index: int) -> str:
    swapped = "A" if token[index] != "A" else "B"
    return token[:index] + swapped + token[index + 1 :]


@pytest.mark.parametrize("where", ["payload", "timestamp", "signature"])
def test_a_tampered_token_is_refused(where: str) -> None:
    token = link_token(SECRET, 9, "41:2", 1, now=T0)
    payload, stamp, signature = token.split(".")
    index = {"payload": 2, "timestamp": len(payload) + 2, "signature": len(token) - 3}[where]
    assert read_token(SECRET, _flip(token, index), DAY, now=T0) is None
    assert stamp and signature


def test_a_score_swapped_into_another_tokens_payload_is_refused() -> None:
    one = link_token(SECRET, 9, "41:2", 1, now=T0)
    five = link_token(SECRET, 9, "41:2", 5, now=T0)
    forged = five.split(".")[0] + "." + ".".join(one.split(".")[1:])
    assert read_token(SECRET, forged, DAY, now=T0) is None


@pytest.mark.parametrize("junk", ["", "abc", "a.b.c", "...", "ü"])
def test_junk_is_refused(junk: str) -> None:
    assert read_token(SECRET, junk, DAY, now=T0) is None


def test_a_signed_value_that_is_no_claim_is_refused() -> None:
    serializer = csat._serializer(SECRET, T0)
    for value in ([1, 2], {"t": 9, "s": "41:2", "r": 7}, {"t": 9, "s": 5, "r": 3}, {"r": True}):
        assert read_token(SECRET, serializer.dumps(value), DAY, now=T0) is None


def test_every_link_carries_its_own_score() -> None:
    links = rating_links(SECRET, "tenant-a", "41:2", "https://bridge.example/csat?x=1", now=T0)
    for score, url in links:
        parts = urlsplit(url)
        assert (parts.netloc, parts.path) == ("bridge.example", "/csat")
        query = parse_qs(parts.query)
        claim = read_token(SECRET, query["token"][0], DAY, now=T0)
        assert claim == LinkClaim("tenant-a", "41:2", score) and query["x"] == ["1"]


def test_a_token_refuses_a_score_out_of_range() -> None:
    with pytest.raises(ValueError):
        link_token(SECRET, 9, "41:2", 6, now=T0)


# -- the low score -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "threshold", "low"),
    [(1, 3, True), (3, 3, True), (4, 3, False), (5, 3, False), (4, 4, True), (1, 0, False)],
)
def test_is_low(score: int, threshold: int, low: bool) -> None:
    assert is_low(score, threshold) is low


def test_a_low_score_raises_one_alert_and_one_task() -> None:
    state = rated(prompted(answered_and_closed(), at(61)), 2, at(70))
    alerts = []
    for minute in (70, 71, 90):  # the rating redelivered, the sweeper passing again
        verdict = should_alert(state)
        if verdict.ok:
            alerts.append(alert_key(9, session_key(41, state)))
            state = alert_raised(state, at(minute))
    assert alerts == ["csat-low:9:41:1"]
    assert should_alert(state) == Verdict(False, "already_alerted")
    assert should_alert(SessionState.from_dict(state.to_dict())).reason == "already_alerted"


def test_a_good_or_missing_score_raises_nothing() -> None:
    state = prompted(answered_and_closed(), at(61))
    assert should_alert(state) == Verdict(False, "not_rated")
    assert should_alert(rated(state, 4, at(70))) == Verdict(False, "not_low")
    assert should_alert(rated(state, 4, at(70)), threshold=4) == Verdict(True, "low")


def test_the_alert_key_is_per_session() -> None:
    first = answered_and_closed()
    second = dataclasses.replace(first, number=2)
    assert alert_key(9, session_key(41, first)) != alert_key(9, session_key(41, second))
    assert alert_key(9, session_key(41, first)) != alert_key(8, session_key(41, first))
