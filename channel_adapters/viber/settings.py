"""What a Viber bot is connected with (typed schemas, ``bridge.schema``)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = [
    "DEFAULT_PER_SECOND",
    "DEFAULT_TEXT_LIMIT",
    "SENDER_NAME_LIMIT",
    "ViberConnect",
    "ViberCredentials",
    "ViberSettings",
]

#: the longest text message: "7000 characters" is often quoted but is
#: UNCONFIRMED (corpora FACTS §4): configurable per bot, split above it
DEFAULT_TEXT_LIMIT = 7000
#: ``sender.name`` is at most 28 characters (REST bot API, send_message)
SENDER_NAME_LIMIT = 28
#: requests per second one bot may make: Viber publishes no number (FACTS
#: §4, UNCONFIRMED), so the default is conservative; status 12
#: (tooManyRequests) pauses the bot's shared bucket on top
DEFAULT_PER_SECOND = 5.0


@dataclass(frozen=True)
class ViberConnect:
    """What an admin supplies: the bot's auth token (Viber's admin panel,
    "Your app key"), the name replies are sent under and, optionally, its
    avatar and a welcome message for users who open the chat."""

    auth_token: str = setting(secret=True, help="the bot's authentication token (its app key)")
    sender_name: str = setting(help="the name replies are sent under (28 characters at most)")
    sender_avatar: str = setting("", help="an https URL of the sender's avatar (optional)")
    welcome_text: str = setting(
        "",
        help="the welcome message a user gets on opening the chat (conversation_started); "
        "empty: none",
    )
    text_limit: int = setting(
        DEFAULT_TEXT_LIMIT, help="longest text message; longer replies are split"
    )
    per_second: float = setting(
        DEFAULT_PER_SECOND, help="Viber API requests per second this bot may make"
    )


@dataclass(frozen=True)
class ViberCredentials:
    """The token every call carries (``X-Viber-Auth-Token``) and every
    callback is signed with (``X-Viber-Content-Signature``)."""

    auth_token: str = setting("", secret=True, help="the bot's authentication token")


@dataclass(frozen=True)
class ViberSettings:
    """The sender, the welcome message and the limits."""

    sender_name: str = setting("", help="the name replies are sent under (28 characters at most)")
    sender_avatar: str = setting("", help="the sender's avatar URL")
    welcome_text: str = setting("", help="the welcome message (empty: none)")
    text_limit: int = setting(DEFAULT_TEXT_LIMIT, help="longest text message")
    per_second: float = setting(
        DEFAULT_PER_SECOND, help="Viber API requests per second (the bot's shared bucket)"
    )
