"""Connecting channels and maintaining secrets (behind the CLI and the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from bridge import admin
from bridge.model import ConnectedAccount, ReceiveMode
from bridge.registry import channel_class
from bridge.schema import check, load
from bridge.tables import ChannelAccount, ChannelStatus, Tenant
from bridge.webhooks import reset_cache

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bridge.runtime import Runtime
    from channel_adapters.base import ChannelAdapter

__all__ = [
    "connect_channel",
    "rotate_secrets",
    "set_channel_mode",
    "set_channel_webhook",
    "start_receiving",
    "store_connected",
    "webhook_url",
]


def connect_channel(
    rt: Runtime,
    tenant_id: int,
    *,
    kind: str,
    values: Mapping[str, Any],
    name: str = "",
    mode: ReceiveMode | None = None,
) -> int:
    """Store a channel account from what an admin supplied (``values``: the
    fields of the adapter's ``Connect`` schema; credentials encrypted), run
    the CRM setup for the new channel, then start receiving (its webhook
    registered with the channel, or, for a pulled account, the channel told
    to hold its deliveries for the poller): customers' messages start
    arriving only once the CRM side (an inbox channel, a chat scope, an
    Open Lines connector) is ready for them. ``mode``: how a channel that
    offers both receives (its ``mode`` setting; default: its first)."""
    cls = channel_class(kind)
    connected = cls.connect(load(cls.Connect, values, where=f"{kind} connect", strict=True))
    return store_connected(rt, tenant_id, cls, connected, name=name, mode=mode)


def store_connected(
    rt: Runtime,
    tenant_id: int,
    cls: type[ChannelAdapter],
    connected: ConnectedAccount,
    *,
    name: str = "",
    mode: ReceiveMode | None = None,
) -> int:
    """The second half of :func:`connect_channel`, from an account the
    adapter built already (the console's form builds it from a schema of
    its own): checked, stored, the CRM set up, receiving started; nothing
    kept when a step fails. ``ValueError`` for an account connected
    already or a mode the channel lacks."""
    kind = cls.kind
    credentials = check(cls.Credentials, connected.credentials, where=f"{kind} credentials")
    chosen = dict(connected.settings)
    if mode is not None:
        _check_mode(cls, mode)
        if len(cls.modes) > 1:
            chosen["mode"] = mode.value
    settings = check(cls.Settings, chosen, where=f"{kind} settings")
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
        start_receiving(rt, account_id)
    except BaseException:
        # nothing can have arrived without the webhook: forget the account,
        # so the next attempt starts clean (no second account for one bot)
        with rt.transaction() as session:
            session.execute(delete(ChannelAccount).where(ChannelAccount.id == account_id))
        reset_cache()
        raise
    return account_id


def set_channel_webhook(rt: Runtime, account_id: int) -> str:
    """(Re-)register the account's webhook; an account polled until now
    (a channel offering both modes) switches to its webhook."""
    cls = _account_class(rt, account_id)
    if len(cls.modes) > 1:
        url = set_channel_mode(rt, account_id, ReceiveMode.WEBHOOK)
        assert url is not None  # a webhook mode returns its URL
        return url
    adapter, url, _ = _receiving(rt, account_id)
    _setup_webhook(rt, account_id, adapter, url)
    return url


def start_receiving(rt: Runtime, account_id: int) -> str | None:
    """Register the account's webhook (its URL is returned) or, for a
    pulled account, make the channel hold its deliveries for the poller:
    any webhook removed (Telegram refuses getUpdates while one is set)."""
    adapter, url, _ = _receiving(rt, account_id)
    if adapter.pulled:
        adapter.remove_webhook()
        return None
    _setup_webhook(rt, account_id, adapter, url)
    return url


def _setup_webhook(rt: Runtime, account_id: int, adapter: Any, url: str) -> None:
    """Register the webhook; settings the provider changed meanwhile are
    stored on the account (and the cached view of it dropped)."""
    changed = adapter.setup_webhook(url)
    if changed:
        admin.set_channel_settings(rt, account_id, **changed)
        reset_cache()


def set_channel_mode(rt: Runtime, account_id: int, mode: ReceiveMode) -> str | None:
    """Move an account of a channel offering both modes between its webhook
    and its poller, in the order the channel requires; returns the webhook
    URL (None for polling).

    To polling: the webhook is removed first (the channel then holds what
    arrives; Telegram: ``deleteWebhook``), then the account is marked
    pulled and a poller picks it up within seconds. To the webhook: the
    account is marked pushed first (its poller stops after its current
    poll, or when the channel ends that poll), then the webhook is set;
    what was fetched but not confirmed is posted to it again, and the
    journal keeps it once. A failed provider call leaves the mode as it
    was."""
    cls = _account_class(rt, account_id)
    _check_mode(cls, mode)
    adapter, url, settings = _receiving(rt, account_id)
    previous = cls.receive_mode(settings)
    if mode is ReceiveMode.POLLING:
        adapter.remove_webhook()
        _store_mode(rt, account_id, mode)
        return None
    _store_mode(rt, account_id, mode)
    try:
        _setup_webhook(rt, account_id, adapter, url)
    except BaseException:
        _store_mode(rt, account_id, previous)
        raise
    return url


def webhook_url(rt: Runtime, account_id: int) -> str | None:
    """The URL the account receives at (its path key in it: a secret), or
    None when a poller fetches its deliveries; read as :func:`_receiving`
    reads it, without building the adapter (no credentials decrypted)."""
    with rt.read_session() as session:
        account = _account(session, account_id)
        if channel_class(account.kind).receive_mode(account.settings) is ReceiveMode.POLLING:
            return None
        return rt.channel_webhook_url(account)


def _account(session: Session, account_id: int) -> ChannelAccount:
    account = session.get(ChannelAccount, account_id)
    if account is None:
        raise LookupError(f"no channel account {account_id}")
    return account


def _account_class(rt: Runtime, account_id: int) -> Any:
    with rt.read_session() as session:
        return channel_class(_account(session, account_id).kind)


def _receiving(rt: Runtime, account_id: int) -> tuple[ChannelAdapter, str, dict[str, Any]]:
    """The account's adapter, its webhook URL and its settings (a read:
    the provider is called after, outside any transaction)."""
    with rt.read_session() as session:
        account = _account(session, account_id)
        return (
            rt.channel_adapter(account),
            rt.channel_webhook_url(account),
            dict(account.settings or {}),
        )


def _check_mode(cls: Any, mode: ReceiveMode) -> None:
    if mode not in cls.modes:
        ways = ", ".join(m.value for m in cls.modes)
        raise ValueError(f"{cls.title} accounts cannot use {mode.value} (only: {ways})")


def _store_mode(rt: Runtime, account_id: int, mode: ReceiveMode) -> None:
    """The ``mode`` setting, checked against the adapter's schema; the row
    is locked so a concurrent settings change is not lost."""
    with rt.transaction() as session:
        account = session.get(ChannelAccount, account_id, with_for_update=True)
        if account is None:
            raise LookupError(f"no channel account {account_id}")
        cls = channel_class(account.kind)
        value = check(cls.Settings, {"mode": mode.value}, where=f"{account.kind} settings")
        account.settings = {**(account.settings or {}), **value}
    reset_cache()


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
    from bridge.console.users import rotate_totp_secrets

    n += rotate_totp_secrets(rt)  # the console's second factors
    reset_cache()
    return n
