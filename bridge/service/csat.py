"""CSAT: the rating prompt after a session closes, reading the client's
rating and comment, signed rating links for e-mail, the low-score alert.

Users of other inboxes miss a satisfaction survey on messengers
(chatwoot#2653, #9102), so the prompt goes on the client's own channel:
1-5 buttons where the channel has them, "reply with a number" otherwise,
and per-session signed links in an e-mail. One prompt per session, only
after a session an operator answered in (never after a session our own
idle timeout closed with nobody answering: there is nothing to rate).

The order the core reads a client's message in, while the latest session
is closed: a rating (:func:`awaits_rating` and :func:`parse_rating`), then
the comment (:func:`takes_comment`), and only then a message that opens a
new session (:func:`~bridge.service.sessions.client_wrote`).

Pure functions: the records (prompt, score, comment, alert) live on the
session state; every function takes the moment it is asked about.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from itsdangerous import BadData, URLSafeTimedSerializer
from itsdangerous.timed import TimestampSigner

from bridge.service.sessions import SessionState, language_of

__all__ = [
    "BUTTON_PREFIX",
    "Button",
    "LinkClaim",
    "Prompt",
    "Verdict",
    "alert_key",
    "alert_raised",
    "awaits_rating",
    "button_payload",
    "commented",
    "is_low",
    "link_token",
    "parse_rating",
    "payload_session",
    "prompt",
    "prompted",
    "rated",
    "rating_links",
    "read_token",
    "should_alert",
    "should_prompt",
    "takes_comment",
    "thanks_text",
]

#: a rating button's payload: ``csat:<session number>:<score>``
BUTTON_PREFIX = "csat:"
#: the score at or below which a rating is low (the mapping may set its own)
DEFAULT_THRESHOLD = 3
_SALT = "bridge.csat.link"

Mode = Literal["buttons", "number", "links"]

_ASK = {
    "buttons": {
        "en": "How would you rate our help? Choose from 1 (bad) to 5 (excellent).",
        "ru": "Оцените, пожалуйста, нашу помощь: от 1 (плохо) до 5 (отлично).",
    },
    "number": {
        "en": (
            "How would you rate our help? Reply with a number from 1 (bad) to 5 (excellent)."
            " You can add a comment in your next message."
        ),
        "ru": (
            "Оцените, пожалуйста, нашу помощь: ответьте цифрой от 1 (плохо) до 5 (отлично)."
            " Комментарий можно написать следующим сообщением."
        ),
    },
    "links": {
        "en": "How would you rate our help? Click a score from 1 (bad) to 5 (excellent):",
        "ru": "Оцените, пожалуйста, нашу помощь — нажмите на оценку от 1 (плохо) до 5 (отлично):",
    },
}
_THANKS = {
    "en": "Thank you for your rating!",
    "ru": "Спасибо за оценку!",
}
_THANKS_LOW = {
    "en": "Thank you for your rating. We are sorry: tell us what went wrong in your next message.",
    "ru": "Спасибо за оценку. Нам жаль: напишите следующим сообщением, что пошло не так.",
}


@dataclass(frozen=True)
class Verdict:
    """Whether to act, and why (a short code for the audit)."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Button:
    label: str
    payload: str


@dataclass(frozen=True)
class Prompt:
    """The rating prompt: its text and, by mode, buttons or (score, URL) links."""

    text: str
    buttons: tuple[Button, ...] = ()
    links: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class LinkClaim:
    """What a valid rating link says."""

    tenant_id: int | str
    session_key: str
    score: int


# -- the prompt ---------------------------------------------------------------------------------


def should_prompt(session: SessionState) -> Verdict:
    """Whether the closed session gets the rating prompt: closed, an operator
    replied in it, not prompted before (reasons ``not_closed``,
    ``idle_without_reply``, ``no_operator_reply``, ``already_prompted``;
    ``prompt`` when it goes)."""
    if session.is_open:
        return Verdict(False, "not_closed")
    if not session.operator_replied:
        reason = "idle_without_reply" if session.close_reason == "idle" else "no_operator_reply"
        return Verdict(False, reason)
    if session.csat_prompted_at is not None:
        return Verdict(False, "already_prompted")
    return Verdict(True, "prompt")


def prompt(
    language: str,
    mode: Mode,
    number: int,
    links: tuple[tuple[int, str], ...] = (),
) -> Prompt:
    """The prompt in the client's language (English for a language without
    a text): ``buttons`` (1-5, payloads :func:`button_payload` of session
    ``number``), ``number`` (the client replies with a digit) or ``links``
    (an e-mail: ``links`` from :func:`rating_links`)."""
    texts = _ASK[mode]
    text = texts.get(language_of(language), texts["en"])
    if mode == "buttons":
        buttons = tuple(Button(str(score), button_payload(number, score)) for score in range(1, 6))
        return Prompt(text, buttons=buttons)
    if mode == "links":
        return Prompt(text, links=links)
    return Prompt(text)


def prompted(session: SessionState, at: dt.datetime) -> SessionState:
    """The session with its prompt recorded."""
    return dataclasses.replace(session, csat_prompted_at=at)


def button_payload(number: int, score: int) -> str:
    """A rating button's payload: the session's number and the score."""
    return f"{BUTTON_PREFIX}{number}:{score}"


def payload_session(payload: str) -> int | None:
    """The session number a rating button's payload names (None for other
    text): a button pressed on an old prompt must not rate a later session."""
    match = re.fullmatch(r"csat:(\d+):[1-5]", payload.strip())
    return int(match.group(1)) if match else None


# -- the rating and the comment -----------------------------------------------------------------


def awaits_rating(session: SessionState, now: dt.datetime, window: dt.timedelta) -> bool:
    """Whether a client's message at ``now`` may be the session's rating:
    prompted, not rated yet, within ``window`` of the prompt."""
    asked = session.csat_prompted_at
    if asked is None or session.rating is not None:
        return False
    return dt.timedelta(0) <= now - asked <= window


def rated(session: SessionState, score: int, at: dt.datetime) -> SessionState:
    """The session with its score recorded; one rating per session (a second
    one — another link clicked, a second number — changes nothing)."""
    if not 1 <= score <= 5:
        raise ValueError("a rating is 1 to 5")
    if session.rating is not None:
        return session
    return dataclasses.replace(session, rating=score, rated_at=at)


def takes_comment(session: SessionState, now: dt.datetime, window: dt.timedelta) -> bool:
    """Whether the client's message at ``now`` is the rating's comment: the
    first message within ``window`` after the rating, once."""
    if session.rated_at is None or session.comment_at is not None:
        return False
    return dt.timedelta(0) <= now - session.rated_at <= window


def commented(session: SessionState, at: dt.datetime) -> SessionState:
    """The session with its comment's arrival recorded (the text goes to the CRM)."""
    if session.comment_at is not None:
        return session
    return dataclasses.replace(session, comment_at=at)


def thanks_text(language: str, score: int, threshold: int = DEFAULT_THRESHOLD) -> str:
    """The reply to a rating; a low one asks what went wrong."""
    texts = _THANKS_LOW if is_low(score, threshold) else _THANKS
    return texts.get(language_of(language), texts["en"])


# Reading a rating. Accepted, the whole message being (after Unicode NFKC,
# so "５" and keycap emoji read as digits): a score 1-5 alone ("4", "4."),
# out of five ("4/5", "4 из 5", "4 out of 5"), with a short label after a
# separator ("5 - great", "5 — отлично", "4, thanks": at most three words,
# no other digit), with a scale word ("5 stars", "5 звёзд", "5 баллов"),
# after a rating word ("rating: 4", "оценка 4", "ставлю 5"), as a word
# ("five", "пять"), as stars ("⭐⭐⭐", "★★★☆☆"), or a button's payload.
# Anything else is not a rating — in particular a longer message with a
# number inside ("I waited 5 hours", "2 days and no answer"): the client is
# talking, and reading a score out of it would write a false one to the CRM.

_SCORE = r"(?P<score>[1-5])"
_OUT_OF = r"(?:\s*(?:/|из|out\s+of|of)\s*5)?"
_LABEL_WORDS = r"[^\W\d_]+(?:[\s'’-]+[^\W\d_]+){0,2}"
_SCALE = r"(?:stars?|points?|звезд[аы]?|звёзд[аы]?|балл(?:а|ов)?)"
_PREFIX = r"(?:(?:my\s+)?(?:rating|score)(?:\s+is)?|оценка|моя\s+оценка|ставлю|даю|i\s+give)"
_TAIL = r"[\s.!)]*"
_RATING_FORMS = (
    re.compile(rf"{_SCORE}{_OUT_OF}{_TAIL}", re.I),
    re.compile(rf"{_SCORE}{_OUT_OF}\s*[-–—:,(]\s*{_LABEL_WORDS}{_TAIL}", re.I),
    re.compile(rf"{_SCORE}\s*{_SCALE}{_TAIL}", re.I),
    re.compile(rf"{_PREFIX}\s*[:-]?\s*{_SCORE}{_OUT_OF}{_TAIL}", re.I),
)
_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "один": 1,
    "одна": 1,
    "единица": 1,
    "два": 2,
    "две": 2,
    "двойка": 2,
    "три": 3,
    "тройка": 3,
    "четыре": 4,
    "четвёрка": 4,
    "четверка": 4,
    "пять": 5,
    "пятёрка": 5,
    "пятерка": 5,
}
_STARS = re.compile(r"(?P<full>[⭐★]+)(?P<empty>☆*)")
_LONGEST = 60


def parse_rating(text: str) -> int | None:
    """The score 1-5 a client's message or a button's payload gives, or None
    (the accepted forms are listed above this function)."""
    if text.startswith(BUTTON_PREFIX):
        match = re.fullmatch(r"csat:(?:\d+:)?([1-5])", text.strip())
        return int(match.group(1)) if match else None
    plain = unicodedata.normalize("NFKC", text).replace("\ufe0f", "").replace("\u20e3", "")
    plain = " ".join(plain.split())
    if not plain or len(plain) > _LONGEST:
        return None
    for form in _RATING_FORMS:
        match = form.fullmatch(plain)
        if match:
            return int(match.group("score"))
    return _stars(plain.replace(" ", "")) or _WORDS.get(plain.lower().strip(".! "))


def _stars(text: str) -> int | None:
    match = _STARS.fullmatch(text)
    if match is None:
        return None
    full, empty = len(match.group("full")), len(match.group("empty"))
    if full > 5 or (empty and full + empty != 5):
        return None
    return full


# -- signed links for e-mail --------------------------------------------------------------------


def link_token(
    secret: str | bytes,
    tenant_id: int | str,
    session_key: str,
    score: int,
    *,
    now: dt.datetime,
) -> str:
    """A URL-safe token for one score of one session's rating link, signed
    (itsdangerous, HMAC) and stamped with ``now``."""
    if not 1 <= score <= 5:
        raise ValueError("a rating is 1 to 5")
    claim = {"t": tenant_id, "s": session_key, "r": score}
    return str(_serializer(secret, now).dumps(claim))


def read_token(
    secret: str | bytes, token: str, max_age: dt.timedelta, *, now: dt.datetime
) -> LinkClaim | None:
    """The claim of a rating link's token, or None when it was tampered
    with, signed with another secret, is older than ``max_age`` at ``now``
    (or stamped after ``now``), or does not hold a claim."""
    try:
        data = _serializer(secret, now).loads(token, max_age=int(max_age.total_seconds()))
    except BadData:  # an expired, tampered or foreign token; a payload that is no claim
        return None
    return _claim(data)


def rating_links(
    secret: str | bytes,
    tenant_id: int | str,
    session_key: str,
    url: str,
    *,
    now: dt.datetime,
) -> tuple[tuple[int, str], ...]:
    """The five (score, link) pairs of an e-mail's prompt: ``url`` (the
    core's rating route) with ``?token=<link_token>``."""
    joiner = "&" if "?" in url else "?"
    return tuple(
        (
            score,
            url
            + joiner
            + urlencode({"token": link_token(secret, tenant_id, session_key, score, now=now)}),
        )
        for score in range(1, 6)
    )


class _StampedSigner(TimestampSigner):
    """itsdangerous' timestamp signer reading the caller's ``now`` instead
    of the system clock (``TimestampSigner.get_timestamp`` is the one
    documented override point: "Returns the current timestamp")."""

    def __init__(self, *args: Any, now: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return self._now


def _serializer(secret: str | bytes, now: dt.datetime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret,
        salt=_SALT,
        signer=_StampedSigner,
        signer_kwargs={"now": int(now.timestamp())},
    )


def _claim(data: object) -> LinkClaim | None:
    if not isinstance(data, dict):
        return None
    tenant, key, score = data.get("t"), data.get("s"), data.get("r")
    if not isinstance(tenant, int | str) or not isinstance(key, str):
        return None
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        return None
    return LinkClaim(tenant, key, score)


# -- the low score ------------------------------------------------------------------------------


def is_low(score: int, threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Whether a score raises the supervisor's alert (at or below ``threshold``)."""
    return score <= threshold


def should_alert(session: SessionState, threshold: int = DEFAULT_THRESHOLD) -> Verdict:
    """Whether the session's rating raises the alert and the task now: rated
    low and not alerted before (reasons ``not_rated``, ``not_low``,
    ``already_alerted``; ``low`` when it goes)."""
    if session.rating is None:
        return Verdict(False, "not_rated")
    if not is_low(session.rating, threshold):
        return Verdict(False, "not_low")
    if session.alert_at is not None:
        return Verdict(False, "already_alerted")
    return Verdict(True, "low")


def alert_raised(session: SessionState, at: dt.datetime) -> SessionState:
    """The session with its alert recorded."""
    return dataclasses.replace(session, alert_at=at)


def alert_key(tenant_id: int | str, session_key: str) -> str:
    """The low-score alert's dedup key: one alert (and one task) per session,
    whatever redelivers the rating."""
    return f"csat-low:{tenant_id}:{session_key}"
