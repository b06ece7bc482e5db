"""What an amoCRM deployment and account are configured with (typed
schemas, ``bridge.schema``): the integration's settings from the environment
(``AMOCRM_<FIELD>``), and one account's settings — an admin's options and
what the install and the setup record (``state``). Facts are cited by
section of ``../shared/contracts/FACTS.md``.

Whether a tenant also writes into amoCRM's chat window, and the language and
zone of the words and times the bridge writes, come from the tenant's
mapping (``CrmAccountInfo.inbox`` / ``.language`` / ``.timezone``), not from
here.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = ["DEFAULT_CHANNEL_TITLE", "DEFAULT_RATE_PER_SECOND", "AmoCrmApp", "AmoCrmSettings"]

#: amoCRM allows 7 requests per second per integration (FACTS 1.4)
DEFAULT_RATE_PER_SECOND = 7.0
DEFAULT_CHANNEL_TITLE = "CRM bridge"


@dataclass(frozen=True)
class AmoCrmApp:
    """The bridge's amoCRM integration (OAuth, FACTS 1.2) and the Chats API
    channel amoCRM support registers for it (FACTS 1.13)."""

    client_id: str = setting("", help="the integration's id (OAuth client id)")
    client_secret: str = setting("", secret=True, help="the integration's secret key (OAuth)")
    auth_base: str = setting("", help="the consent host (default https://www.amocrm.ru; FACTS 1.2)")
    redirect_uri: str = setting(
        "",
        help="the redirect URI configured on the integration, which the token "
        "exchange must repeat exactly (default: the bridge's /oauth/amocrm/callback)",
    )
    channel_id: str = setting(
        "", help="the Chats API channel's id, issued by amoCRM support (only for inbox: true)"
    )
    channel_secret: str = setting(
        "",
        secret=True,
        help="the Chats API channel's secret: signs its requests and hooks (FACTS 1.13)",
    )
    bot_id: str = setting(
        "", help="the Chats API channel's bot id (the sender of echoed rep messages)"
    )
    amojo_base: str = setting(
        "", help="the Chats API host (default https://amojo.amocrm.ru; FACTS 1.13)"
    )
    channel_title: str = setting(
        DEFAULT_CHANNEL_TITLE, help="the chat channel's title in each account it connects to"
    )


@dataclass(frozen=True)
class AmoCrmSettings:
    """One amoCRM account (a tenant)."""

    # -- recorded by the install (exchange_code, or a pasted long-lived token)
    subdomain: str = setting(
        "", state=True, help="the account's subdomain (acme in acme.amocrm.ru; FACTS 1.1)"
    )
    domain: str = setting(
        "",
        state=True,
        help="the account's host (acme.kommo.com): the API host when no API base "
        "template is configured",
    )
    redirect_uri: str = setting(
        "", state=True, help="the redirect URI the install used (a refresh repeats it)"
    )
    # -- recorded by the install and refreshed by setup()
    amo_account_id: str = setting(
        "",
        state=True,
        help="amoCRM's numeric account id: the account webhooks must name it "
        "(subdomains can be renamed, FACTS 1.1)",
    )
    amojo_id: str = setting(
        "", state=True, help="the account's Chats API id (GET /api/v4/account, FACTS 1.11)"
    )
    # -- recorded by setup()
    identity_fields: dict[str, int] = setting(
        default_factory=dict,
        state=True,
        help="channel kind -> the contact field holding the person's id there",
    )
    conversation_field: int | None = setting(
        None, state=True, help="the lead field holding the bridge's conversation id"
    )
    custom_fields: dict[str, dict[str, int]] = setting(
        default_factory=dict,
        state=True,
        help="leads | contacts -> mapping field name -> amoCRM field id",
    )
    scope_id: str = setting(
        "",
        state=True,
        help="the chat channel's connection to this account (inbox: true; "
        "also the tenant's route key, FACTS 1.13)",
    )
    # -- an admin's options
    reply_marker: str = setting(
        "@client",
        help="notes mode: a rep's note starting with it is sent to the customer "
        "(@client and @клиент always work)",
    )
    rate_per_second: float = setting(
        DEFAULT_RATE_PER_SECOND, help="requests per second to this account (FACTS 1.4: 7)"
    )
    marker_style: str = setting(
        "hidden",
        help="how notes and tasks carry the bridge's marker (visible where amoCRM "
        "drops zero-width characters, UNCONFIRMED whether it does)",
        choices=("hidden", "visible"),
    )
