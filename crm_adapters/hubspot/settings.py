"""What a HubSpot deployment and account are configured with (typed
schemas, ``bridge.schema``): the public app's settings from the environment
(``HUBSPOT_<FIELD>``), and one portal's settings — an admin's options and
what the install and the setup record."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = ["HubSpotApp", "HubSpotSettings"]


@dataclass(frozen=True)
class HubSpotApp:
    """The bridge's public app (OAuth installs, the custom channel, v3
    webhook signatures; FACTS 3.1, 3.6, 3.7)."""

    client_id: str = setting("", help="the app's OAuth client id")
    client_secret: str = setting(
        "", secret=True, help="the app's client secret (OAuth, v3 webhook signatures)"
    )
    app_id: str = setting("", help="the app's id (registers the custom channel)")
    developer_api_key: str = setting(
        "", secret=True, help="the developer account's API key (registers the custom channel)"
    )
    scopes: str = setting("", help="space- or comma-separated scopes (default: what it needs)")
    optional_scopes: str = setting("", help="scopes a portal may decline")
    auth_base: str = setting("", help="the consent host (default https://app.hubspot.com)")
    api_base: str = setting("", help="the token endpoint's host (default the API host)")
    channel_id: str = setting(
        "", help="an already registered custom channel's id (else setup registers one)"
    )
    channel_name: str = setting("CRM bridge", help="the custom channel's name in HubSpot")


@dataclass(frozen=True)
class HubSpotSettings:
    """One portal."""

    rate_per_10s: float = setting(
        100.0,
        help="requests per rolling 10 s (FACTS 3.2: 100 private apps on Free/Starter, "
        "110 OAuth apps, 190 on Professional/Enterprise)",
    )
    properties_ready: bool = setting(
        False, state=True, help="the bridge's custom properties exist (setup)"
    )
    channel_id: str = setting("", state=True, help="the custom channel (setup)")
    inbox_id: str = setting("", help="the conversations inbox (setup takes the first one)")
    channel_accounts: dict[str, str] = setting(
        default_factory=dict,
        state=True,
        help="bridge channel account id -> HubSpot channel account id (setup)",
    )
    channel_identifiers: dict[str, str] = setting(
        default_factory=dict,
        state=True,
        help="bridge channel account id -> its delivery identifier in the inbox (setup)",
    )
