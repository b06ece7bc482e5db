"""Connecting channels and maintaining secrets (behind the CLI and the demo)."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from bridge import admin
from bridge.tables import ChannelAccount, Tenant
from bridge.webhooks import reset_cache

__all__ = ["connect_telegram", "rotate_secrets", "set_channel_webhook"]


def connect_telegram(rt, tenant_id: int, *, token: str, name: str = "") -> int:  # type: ignore[no-untyped-def]
    """Store the bot (token encrypted, a fresh webhook secret), register its
    webhook with Telegram, then run the CRM setup for the new channel."""
    bot_id = token.split(":", 1)[0]
    account_id = admin.add_channel_account(
        rt,
        tenant_id,
        kind="telegram",
        # secret_token: 1-256 chars of A-Za-z0-9_- (setWebhook); 256 bits from the CSPRNG
        credentials={"bot_token": token, "secret_token": secrets.token_urlsafe(32)},
        name=name or f"Telegram bot {bot_id}",
        external_id=bot_id,
    )
    set_channel_webhook(rt, account_id)
    admin.setup_crm(rt, tenant_id)
    return account_id


def set_channel_webhook(rt, account_id: int) -> str:  # type: ignore[no-untyped-def]
    with rt.transaction() as session:
        account = session.get(ChannelAccount, account_id)
        if account is None:
            raise LookupError(f"no channel account {account_id}")
        adapter = rt.channel_adapter(account)
        url = rt.channel_webhook_url(account)
    adapter.setup_webhook(url)
    return url


def rotate_secrets(rt) -> int:  # type: ignore[no-untyped-def]
    """Re-encrypt every stored secret under the newest key."""
    n = 0
    with rt.transaction() as session:
        for tenant in session.scalars(select(Tenant).where(Tenant.credentials.is_not(None))):
            tenant.credentials = rt.secrets.rotate(tenant.credentials)
            n += 1
        for account in session.scalars(
            select(ChannelAccount).where(ChannelAccount.credentials.is_not(None))
        ):
            account.credentials = rt.secrets.rotate(account.credentials)
            n += 1
    reset_cache()
    return n
