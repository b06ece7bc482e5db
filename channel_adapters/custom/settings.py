"""What a custom channel account is connected with (typed schemas,
``bridge.schema``)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = ["CustomConnect", "CustomCredentials", "CustomSettings"]


@dataclass(frozen=True)
class CustomConnect:
    """What an admin supplies: the system's name, where replies go, the
    shared secret."""

    system: str = setting(
        help="a short name for the system that posts (site-form, call-tracker): "
        "letters, digits, . _ -; unique per tenant"
    )
    callback_url: str = setting(
        help="where the bridge posts the CRM's replies (https; http only on a "
        "private network with --allow-http yes)"
    )
    signing_secret: str = setting(
        secret=True,
        help="the Standard Webhooks secret both sides sign with: whsec_ and the "
        "base64 of 24-64 random bytes (echo whsec_$(openssl rand -base64 32))",
    )
    allow_http: bool = setting(
        False, help="accept a plain-http callback URL (a private network only)"
    )
    attachment_hosts: str = setting(
        "",
        help="comma-separated hosts the bridge may download customers' attachments "
        "from (default: the callback URL's host)",
    )


@dataclass(frozen=True)
class CustomCredentials:
    """The shared secret (stored encrypted)."""

    signing_secret: str = setting("", secret=True, help="the Standard Webhooks secret (whsec_...)")


@dataclass(frozen=True)
class CustomSettings:
    """Where replies go and what may be fetched."""

    callback_url: str = setting("", help="where the bridge posts the CRM's replies")
    attachment_hosts: tuple[str, ...] = setting(
        (), help="hosts customers' attachments may be downloaded from"
    )
