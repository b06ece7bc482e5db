"""What a web chat widget is connected with (typed schemas, ``bridge.schema``).

``Connect`` is what ``bridge widget create`` (and the generic ``bridge
webchat connect``) takes; ``Settings`` is what the account keeps and what
``GET /widget/<key>/config`` shows the widget; ``Credentials`` holds the
secret that signs visitor tokens and upload references; ``App`` the
deployment's limits (``WEBCHAT_*`` in the environment).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = [
    "DEFAULT_CONSENT_TEXT_EN",
    "WebChatApp",
    "DEFAULT_CONSENT_TEXT_RU",
    "DEFAULT_GREETING_EN",
    "DEFAULT_GREETING_RU",
    "MAX_FILE_BYTES",
    "WebChatConnect",
    "WebChatCredentials",
    "WebChatSettings",
]

PRECHAT = ("off", "optional", "required")
CONSENT = ("off", "checkbox")
DEFAULT_COLOR = "#1a5fd0"  # white text on it: contrast 5.8:1 (WCAG AA)
DEFAULT_GREETING_EN = "Hello! How can we help you?"
DEFAULT_GREETING_RU = "Здравствуйте! Чем можем помочь?"
DEFAULT_CONSENT_TEXT_EN = "I agree to the processing of my personal data"
DEFAULT_CONSENT_TEXT_RU = "Я согласен(на) на обработку моих персональных данных"
#: the default largest upload (bytes), and the most an admin may allow: the
#: bytes are stored in the database (``bridge.files``)
DEFAULT_FILE_BYTES = 10 * 1024 * 1024
MAX_FILE_BYTES = 20 * 1024 * 1024
#: an unread reply goes to the visitor's e-mail after this many minutes
DEFAULT_EMAIL_AFTER = 10
MAX_EMAIL_AFTER = 7 * 24 * 60


@dataclass(frozen=True)
class WebChatConnect:
    """What an admin supplies for a widget on their site(s)."""

    origins: str = setting(
        help="the sites the widget runs on, exactly scheme://host[:port], comma- or "
        "space-separated (https; plain http only for localhost)"
    )
    title: str = setting("", help="the panel's title (empty: the widget's own words)")
    color: str = setting(DEFAULT_COLOR, help="the accent colour, #rrggbb")
    greeting_en: str = setting(DEFAULT_GREETING_EN, help="the first line a visitor reads (English)")
    greeting_ru: str = setting(DEFAULT_GREETING_RU, help="the first line a visitor reads (Russian)")
    prechat: str = setting(
        "off",
        choices=PRECHAT,
        help="the name/phone/e-mail form before the first message: off, optional, or "
        "required (a phone or an e-mail before anything is sent)",
    )
    consent: str = setting(
        "off",
        choices=CONSENT,
        help="off, or checkbox: no message leaves before the visitor ticks the consent box",
    )
    privacy_url: str = setting("", help="the privacy policy the consent box links to (https)")
    consent_text_en: str = setting(DEFAULT_CONSENT_TEXT_EN, help="the consent box's words (en)")
    consent_text_ru: str = setting(DEFAULT_CONSENT_TEXT_RU, help="the consent box's words (ru)")
    consent_version: str = setting(
        "1", help="the version of the consent text, recorded with each consent given"
    )
    max_file_bytes: int = setting(
        DEFAULT_FILE_BYTES, help=f"the largest file a visitor may send (at most {MAX_FILE_BYTES})"
    )
    email_after_minutes: int = setting(
        DEFAULT_EMAIL_AFTER,
        help="a reply the visitor has not read after this many minutes also goes to the "
        "e-mail they left (through the tenant's e-mail channel); 0: never",
    )


@dataclass(frozen=True)
class WebChatCredentials:
    """The secret that signs visitor tokens and upload references, and the
    widget's id they are bound to (stored encrypted, generated when the
    widget is created)."""

    token_secret: str = setting(
        "", secret=True, help="signs visitor tokens and file references (32 random bytes)"
    )
    #: not a secret in itself (a token shows it, signed); with the secret,
    #: it lets a token be checked from the credentials alone
    widget_id: str = setting(
        "", secret=True, help="the widget's own id its visitor tokens are bound to"
    )


@dataclass(frozen=True)
class WebChatSettings:
    """The widget as its visitors see it (``GET /widget/<key>/config``) and
    the pages it may run on."""

    origins: tuple[str, ...] = setting(
        (), help="the origins (scheme://host[:port]) whose pages may use the widget"
    )
    title: str = setting("", help="the panel's title (empty: the widget's own words)")
    color: str = setting(DEFAULT_COLOR, help="the accent colour, #rrggbb")
    greeting_en: str = setting(DEFAULT_GREETING_EN, help="the greeting (English)")
    greeting_ru: str = setting(DEFAULT_GREETING_RU, help="the greeting (Russian)")
    prechat: str = setting("off", choices=PRECHAT, help="off, optional or required")
    consent: str = setting("off", choices=CONSENT, help="off or checkbox")
    privacy_url: str = setting("", help="the privacy policy the consent box links to")
    consent_text_en: str = setting(DEFAULT_CONSENT_TEXT_EN, help="the consent box's words (en)")
    consent_text_ru: str = setting(DEFAULT_CONSENT_TEXT_RU, help="the consent box's words (ru)")
    consent_version: str = setting("1", help="the consent text's version")
    max_file_bytes: int = setting(DEFAULT_FILE_BYTES, help="the largest upload (bytes)")
    email_after_minutes: int = setting(
        DEFAULT_EMAIL_AFTER, help="an unread reply goes to the visitor's e-mail after (0: never)"
    )


@dataclass(frozen=True)
class WebChatApp:
    """Deployment-wide, for every widget (``WEBCHAT_<FIELD>`` in the
    environment): the widget API's limits, per minute, and how long an event
    stream stays open."""

    sessions_per_minute: int = setting(30, help="new visitors a minute per address")
    messages_per_minute: int = setting(20, help="messages a minute per visitor")
    messages_burst: int = setting(10, help="messages a visitor may send at once")
    ip_messages_per_minute: int = setting(120, help="messages a minute per address")
    uploads_per_minute: int = setting(10, help="uploads a minute per visitor")
    reads_per_minute: int = setting(
        120, help="history reads, streams and read receipts a minute per visitor"
    )
    stream_seconds: float = setting(
        25.0, help="how long one event stream stays open before the widget reconnects"
    )
    held_connections: int = setting(
        0,
        help="long polls and streams one web process holds at most (0: its threads but a "
        "quarter, at most 16, kept for the webhooks)",
    )
