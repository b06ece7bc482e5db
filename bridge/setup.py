"""Connecting channels and maintaining secrets (behind the CLI and the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from bridge import admin
from bridge.registry import channel_class
from bridge.schema import check, load
from bridge.tables import ChannelAccount, ChannelStatus, Tenant
from bridge.webhooks import reset_cache

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["connect_channel", "rotate_secrets", "set_channel_webhook"]


def connect_channel(
    rt: Runtime,
    tenant_id: int,
    *,
    kind: str,
    values: Mapping[str, Any],
    name: str = "",
) -> int:
    """Store a channel account from what an admin supplied (``values``: the
    fields of the adapter's ``Connect`` schema; credentials encrypted), run
    the CRM setup for the new channel, then register its webhook with the
    channel: customers' messages start arriving only once the CRM side (an
    inbox channel, a chat scope, an Open Lines connector) is ready for them."""
    cls = channel_class(kind)
    where = f"{kind} connect"
    connected = cls.connect(load(cls.Connect, values, where=where, strict=True))
    credentials = check(cls.Credentials, connected.credentials, where=f"{kind} credentials")
    settings = check(cls.Settings, connected.settings, where=f"{kind} settings")
    external_id = connected.external_id
    with rt.transaction() as session:
        taken = session.scalar(
            select(ChannelAccount.id).where(
                ChannelAccount.tenant_id == tenant_id,
                ChannelAccount.kind == kind,
                ChannelAccount.external_id == external_id,
                ChannelAccount.status == ChannelStatus.ACTIVE,
            )
        )
    if taken is not None:
        raise ValueError(f"this {cls.title} account is connected already (channel account {taken})")
    account_id = admin.add_channel_account(
        rt,
        tenant_id,
        kind=kind,
        credentials=credentials,
        name=name or f"{cls.title} {external_id}",
        external_id=external_id,
        settings=settings,
        awaiting_setup=True,
    )
    try:
        admin.setup_crm(rt, tenant_id)
        set_channel_webhook(rt, account_id)
    except BaseException:
        # nothing can have arrived without the webhook: forget the account,
        # so the next attempt starts clean (no second account for one bot)
        with rt.transaction() as session:
            session.execute(delete(ChannelAccount).where(ChannelAccount.id == account_id))
        reset_cache()
        raise
    return account_id


def set_channel_webhook(rt: Runtime, account_id: int) -> str:
    with rt.transaction() as session:
        account = session.get(ChannelAccount, account_id)
        if account is None:
            raise LookupError(f"no channel account {account_id}")
        adapter = rt.channel_adapter(account)
        url = rt.channel_webhook_url(account)
    adapter.setup_webhook(url)
    return url


def rotate_secrets(rt: Runtime) -> int:
    """Re-encrypt every stored secret under the newest key."""
    n = 0
    with rt.transaction() as session:
        for tenant in session.scalars(select(Tenant).where(Tenant.credentials.is_not(None))):
            assert tenant.credentials is not None  # selected only where it is set
            tenant.credentials = rt.secrets.rotate(tenant.credentials)
            n += 1
        for account in session.scalars(
            select(ChannelAccount).where(ChannelAccount.credentials.is_not(None))
        ):
            assert account.credentials is not None  # selected only where it is set
            account.credentials = rt.secrets.rotate(account.credentials)
            n += 1
    reset_cache()
    return n
