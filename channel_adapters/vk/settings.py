"""What a VK community is connected with (typed schemas, ``bridge.schema``)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = ["VkConnect", "VkCredentials", "VkSettings"]

#: the API version every call is made with and the Callback API server should
#: be set to (``message_new.object`` is ``{message, client_info}`` since 5.103)
DEFAULT_VERSION = "5.199"
#: requests per second one community token may make: the often-quoted "20/s
#: for a community token" is UNCONFIRMED (FACTS §3), so the default is the
#: conservative 3/s, and error 6 pauses the shared bucket on top
DEFAULT_PER_SECOND = 3.0


@dataclass(frozen=True)
class VkConnect:
    """What an admin supplies: the community, its access token (with the
    ``messages`` right; ``manage`` too lets the bridge read the confirmation
    string itself), and optionally the confirmation string and the secret
    key of the community's Callback API server."""

    group_id: str = setting(help="the community's id (digits; club123 and -123 are taken too)")
    access_token: str = setting(
        secret=True, help="a community access token with the messages right"
    )
    confirmation: str = setting(
        "",
        help="the string the community's Callback API settings say the server must return "
        "(fetched with groups.getCallbackConfirmationCode when not given: needs the manage right)",
    )
    secret: str = setting(
        "",
        help="the Callback API server's secret key (letters and digits, up to 50; better: set "
        "VK_SECRET). Generated when not given: `bridge vk callback --account N` shows it",
    )
    api_version: str = setting(
        DEFAULT_VERSION, help="the API version of every call and of the Callback API server"
    )
    per_second: float = setting(
        DEFAULT_PER_SECOND, help="VK API requests per second this community may make"
    )


@dataclass(frozen=True)
class VkCredentials:
    """The community token every call carries (a form field, never in the
    URL) and the secret key VK puts in every Callback API body."""

    access_token: str = setting("", secret=True, help="the community access token")
    secret: str = setting("", secret=True, help="the Callback API server's secret key")


@dataclass(frozen=True)
class VkSettings:
    """The confirmation string, the API version and the send limit."""

    confirmation: str = setting(
        "", help="what the Callback API's confirmation request gets back (not a secret)"
    )
    api_version: str = setting(DEFAULT_VERSION, help="the API version of every call")
    per_second: float = setting(
        DEFAULT_PER_SECOND, help="VK API requests per second (the community's shared bucket)"
    )
