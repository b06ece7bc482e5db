"""What a Telegram bot is connected with (typed schemas, ``bridge.schema``)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = ["TelegramConnect", "TelegramCredentials", "TelegramSettings"]


@dataclass(frozen=True)
class TelegramConnect:
    """What an admin supplies: the token @BotFather gave."""

    bot_token: str = setting(secret=True, help="the bot's token from @BotFather (123456789:AAE...)")


@dataclass(frozen=True)
class TelegramCredentials:
    """The bot's token and the secret Telegram echoes in every webhook
    request (``X-Telegram-Bot-Api-Secret-Token``, api.json setWebhook)."""

    bot_token: str = setting("", secret=True, help="the bot's token")
    secret_token: str = setting(
        "", secret=True, help="the webhook secret, generated when the bot is connected"
    )


@dataclass(frozen=True)
class TelegramSettings:
    """How the bot's updates arrive. Telegram offers two ways, never both
    at once (api.json getUpdates: "This method will not work if an outgoing
    webhook is set up"): ``webhook`` (``setWebhook``: Telegram posts each
    update to ``BRIDGE_PUBLIC_URL``) and ``polling`` (``getUpdates`` long
    polling from the worker, for a bridge with no public HTTPS address)."""

    mode: str = setting(
        "webhook",
        choices=("webhook", "polling"),
        help="webhook (Telegram posts updates to BRIDGE_PUBLIC_URL) or polling "
        "(the worker fetches them with getUpdates; no public URL needed)",
    )
