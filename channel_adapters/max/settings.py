"""What a MAX bot is connected with (typed schemas, ``bridge.schema``)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = ["MaxApp", "MaxConnect", "MaxCredentials", "MaxSettings"]


@dataclass(frozen=True)
class MaxConnect:
    """What an admin supplies: the bot's token (business.max.ru -> Chat
    bots -> Settings, FACTS §1), and the bot's id, read with ``GET /me``
    when not given."""

    access_token: str = setting(
        secret=True, help="the bot's token from business.max.ru (MAX_ACCESS_TOKEN or the prompt)"
    )
    bot_id: str = setting(
        "", help="the bot's user id (read with GET /me from MAX_API_BASE when not given)"
    )


@dataclass(frozen=True)
class MaxCredentials:
    """The token every call carries (``Authorization: <token>``, raw, FACTS
    §1) and the webhook secret MAX echoes in ``X-Max-Bot-Api-Secret``
    (generated when the bot is connected, FACTS §2)."""

    access_token: str = setting("", secret=True, help="the bot's token")
    secret: str = setting(
        "", secret=True, help="the webhook secret (5-256 of A-Z a-z 0-9 _ -), generated"
    )


@dataclass(frozen=True)
class MaxSettings:
    """How updates arrive and what replies carry."""

    mode: str = setting(
        "webhook",
        choices=("webhook", "polling"),
        help="webhook (POST /subscriptions: MAX posts updates to BRIDGE_PUBLIC_URL, HTTPS on "
        "port 443) or polling (the worker reads GET /updates; no public URL needed)",
    )
    contact_button: str = setting(
        "",
        help="when set, every reply carries a request_contact button with this text: the client "
        "shares their phone number, verified by MAX (empty: no button)",
    )


@dataclass(frozen=True)
class MaxApp:
    """Deployment-wide: the CA bundle that verifies platform-api2.max.ru,
    whose chain is issued by the Russian Минцифры root most trust stores do
    not contain (FACTS §1 TLS)."""

    ca_bundle: str = setting(
        "",
        help="a PEM file with the Russian Trusted Root CA (gosuslugi.ru/tls) for MAX's API; "
        "empty: the system's trust store",
    )
