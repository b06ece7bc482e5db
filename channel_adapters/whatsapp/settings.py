"""What a WhatsApp Business phone number is connected with (typed schemas,
``bridge.schema``)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = ["WhatsAppApp", "WhatsAppConnect", "WhatsAppCredentials", "WhatsAppSettings"]


@dataclass(frozen=True)
class WhatsAppApp:
    """The deployment's Meta app, from ``WHATSAPP_APP_SECRET`` and
    ``WHATSAPP_VERIFY_TOKEN``: every phone number's events are posted to
    one URL (``/webhooks/whatsapp/app``), signed with the app's secret
    (``X-Hub-Signature-256``), after a ``hub.verify_token`` handshake."""

    app_secret: str = setting("", secret=True, help="the Meta app's App Secret")
    verify_token: str = setting(
        "", secret=True, help="the verify token typed into the app's webhook settings"
    )


@dataclass(frozen=True)
class WhatsAppConnect:
    """What an admin supplies: the number's id and its business account,
    and a (system user) access token with whatsapp_business_messaging."""

    phone_number_id: str = setting(help="the phone number's id in WhatsApp Manager (digits)")
    waba_id: str = setting(help="the WhatsApp Business Account id (digits)")
    access_token: str = setting(secret=True, help="a system user's access token")
    display_phone_number: str = setting("", help="the number customers see (shown to reps)")


@dataclass(frozen=True)
class WhatsAppCredentials:
    """The access token every Graph API call carries (``Authorization:
    Bearer``), also for media downloads."""

    access_token: str = setting("", secret=True, help="the Graph API access token")


@dataclass(frozen=True)
class WhatsAppSettings:
    """The number's business account, the Graph API version, and its send
    limits (corpora FACTS §2: 80 messages/s per number by default, error
    130429; about one message every 6 s to one customer, error 131056)."""

    waba_id: str = setting("", help="the WhatsApp Business Account id")
    display_phone_number: str = setting("", help="the number customers see")
    api_version: str = setting("v21.0", help="the Graph API version of every call")
    per_second: float = setting(80.0, help="messages per second this number may send")
    pair_burst: int = setting(5, help="messages to one customer sent back to back")
    pair_per_minute: float = setting(10.0, help="messages per minute to one customer after that")
    max_media_bytes: int = setting(100_000_000, help="the largest media file downloaded")
