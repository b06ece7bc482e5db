"""``WebChatAdapter``: the channel contract for the bridge's own chat widget.

A hosted channel: there is no provider between the visitor and the bridge.
The widget's API (:mod:`.api`) composes each checked message into a body
and hands it to the core (``bridge.hosted.accept``), which runs this
adapter's ``verify`` and ``edge`` and journals it, exactly as the generic
``/webhooks/webchat/<key>`` route would; the normaliser then calls
``parse``. A reply is the widget's to read from the moment the core stores
it, so ``send`` only confirms it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from bridge.errors import ConfigError, PayloadError, SignatureError
from bridge.model import (
    ConnectedAccount,
    InboundEvent,
    OutboundMessage,
    RawDelivery,
    SendResult,
    WebhookAnswer,
    WebhookRequest,
)
from channel_adapters.base import ChannelAdapter
from channel_adapters.webchat import tokens
from channel_adapters.webchat.inbound import (
    KIND,
    check_message,
    delivery_key,
    load_body,
    parse_body,
)
from channel_adapters.webchat.settings import (
    MAX_EMAIL_AFTER,
    MAX_FILE_BYTES,
    WebChatApp,
    WebChatConnect,
    WebChatCredentials,
    WebChatSettings,
)

if TYPE_CHECKING:
    import click
    from flask import Blueprint

__all__ = ["WebChatAdapter", "check_origins"]

_COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")


class WebChatAdapter(ChannelAdapter):
    """One widget (its key is the account's public key) on the sites of its
    ``origins``."""

    kind: ClassVar[str] = KIND
    title: ClassVar[str] = "Web chat"
    Connect: ClassVar[type[WebChatConnect]] = WebChatConnect
    Credentials: ClassVar[type[WebChatCredentials]] = WebChatCredentials
    Settings: ClassVar[type[WebChatSettings]] = WebChatSettings
    App: ClassVar[type[WebChatApp]] = WebChatApp
    #: the JSON body only (4000 characters of text, the context, five
    #: file refs): files go through ``POST /widget/<key>/uploads``
    max_body: ClassVar[int] = 64 * 1024
    hosted: ClassVar[bool] = True
    #: "sending" a reply is confirming it: a repeat changes nothing
    idempotent_sends: ClassVar[bool] = True
    #: a visitor's message is their consent to be answered
    consent_by_writing: ClassVar[bool] = True
    #: the widget reports a reply read once the visitor saw it; a visitor
    #: who has gone never does (a cascade then moves on after its wait)
    confirms_delivery: ClassVar[bool] = True

    def __repr__(self) -> str:
        return f"<WebChatAdapter account={self.account.id}>"

    # -- connecting ----------------------------------------------------------

    @classmethod
    def connect(cls, values: WebChatConnect) -> ConnectedAccount:
        """Check the widget's settings; its id on the channel is its first
        site (``shop.example``), and a fresh secret signs its visitors'
        tokens."""
        origins = check_origins(values.origins)
        if not _COLOR_RE.fullmatch(values.color.strip()):
            raise ConfigError(f"--color must be #rrggbb (got {values.color!r})")
        privacy = values.privacy_url.strip()
        if privacy and not _web_url(privacy):
            raise ConfigError("--privacy-url must be an https:// address")
        if not 1024 <= values.max_file_bytes <= MAX_FILE_BYTES:
            raise ConfigError(f"--max-file-bytes must be 1024-{MAX_FILE_BYTES}")
        if not 0 <= values.email_after_minutes <= MAX_EMAIL_AFTER:
            raise ConfigError(f"--email-after-minutes must be 0-{MAX_EMAIL_AFTER} (0: never)")
        version = values.consent_version.strip()
        if not version or len(version) > 64:
            raise ConfigError("--consent-version must be 1-64 characters")
        for name, value, limit in (
            ("title", values.title, 100),
            ("greeting-en", values.greeting_en, 500),
            ("greeting-ru", values.greeting_ru, 500),
            ("consent-text-en", values.consent_text_en, 1000),
            ("consent-text-ru", values.consent_text_ru, 1000),
        ):
            if len(value) > limit:
                raise ConfigError(f"--{name} must be at most {limit} characters")
        settings = {
            "origins": list(origins),
            "title": values.title.strip(),
            "color": values.color.strip().lower(),
            "greeting_en": values.greeting_en.strip(),
            "greeting_ru": values.greeting_ru.strip(),
            "prechat": values.prechat,
            "consent": values.consent,
            "privacy_url": privacy,
            "consent_text_en": values.consent_text_en.strip(),
            "consent_text_ru": values.consent_text_ru.strip(),
            "consent_version": version,
            "max_file_bytes": values.max_file_bytes,
            "email_after_minutes": values.email_after_minutes,
        }
        site = urlsplit(origins[0]).netloc
        credentials = {"token_secret": tokens.new_secret(), "widget_id": tokens.new_widget_id()}
        return ConnectedAccount(site, credentials, settings)

    def setup_webhook(self, url: str) -> None:
        """Nothing to register: the widget is served by the bridge itself."""
        return None

    # -- a reply the visitor has not read --------------------------------------

    def unread_fallback(self) -> dt.timedelta | None:
        """The widget's ``email_after_minutes`` (None for 0): a reply still
        unread then goes to the e-mail the visitor left as well."""
        minutes = int(self.settings.email_after_minutes)
        return dt.timedelta(minutes=minutes) if minutes > 0 else None

    def unread_texts(self, language: str | None) -> tuple[str, str]:
        """The copy's subject and opening line, naming the widget's title
        (else its site), in Russian for a Russian visitor, else English."""
        name = self.settings.title or self.site()
        if (language or "").lower().startswith("ru"):
            return f"Ответ от {name}", f"Вам ответили в чате на сайте {name}:"
        return f"Reply from {name}", f"You have a reply in the chat on {name}:"

    def site(self) -> str:
        """The widget's first site (``shop.example``)."""
        if self.account.external_id:
            return self.account.external_id
        origins = self.settings.origins
        return urlsplit(origins[0]).netloc if origins else "the site"

    # -- the API's and the core's hooks ---------------------------------------

    @classmethod
    def blueprint(cls) -> Blueprint:
        """The widget's script and API (``/widget/<key>...``)."""
        from channel_adapters.webchat.api import bp

        return bp

    @classmethod
    def commands(cls) -> Sequence[click.Command]:
        """``bridge widget create``: a widget and the snippet for the site."""
        from channel_adapters.webchat.cli import widget

        return (widget,)

    @property
    def widget_id(self) -> str:
        """What this widget's tokens are bound to: its ``widget_id``
        credential (the account's id for one stored without it)."""
        return str(self.credentials.widget_id or self.account.id)

    def origin_allowed(self, origin: Any) -> bool:
        """Whether a page of ``origin`` may use this widget (exact match)."""
        return isinstance(origin, str) and origin.lower() in self.settings.origins

    def visitor(self, token: str | None) -> str:
        """The visitor a bearer token was issued for; ``BadToken`` else."""
        if not token:
            raise tokens.BadToken("Authorization: Bearer <visitor token> is required")
        return tokens.read_visitor_token(self.credentials.token_secret, self.widget_id, token)

    def visitor_token(self, visitor: str) -> str:
        return tokens.visitor_token(self.credentials.token_secret, self.widget_id, visitor)

    def file_ref(self, visitor: str, ref: tokens.FileRef) -> str:
        return tokens.sign_file_ref(self.credentials.token_secret, self.widget_id, visitor, ref)

    def read_file(self, visitor: str, ref: str, *, fresh: bool = True) -> tokens.FileRef:
        """The upload ``ref`` names, made by ``visitor``; ``PayloadError``
        otherwise. ``fresh``: made within a day (a new message); else any
        age (a journaled message parsed again later)."""
        try:
            return tokens.read_file_ref(
                self.credentials.token_secret,
                self.widget_id,
                visitor,
                ref,
                max_age=tokens.FILE_MAX_AGE if fresh else None,
            )
        except tokens.BadToken as exc:
            raise PayloadError(f"files: {exc}", code="invalid_file") from None

    # -- inbound -------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        """The bearer token was issued by this widget, the page's origin is
        one of the widget's sites, and a body that names a visitor names the
        token's (one that names none is the edge's 400); only ever raises
        ``SignatureError`` (403 ``forbidden``, the message says which)."""
        try:
            visitor = self.visitor(tokens.bearer(request.header("authorization")))
        except tokens.BadToken as exc:
            raise SignatureError(str(exc)) from None
        if not self.origin_allowed(request.header("origin")):
            raise SignatureError("the page's origin is not one of this widget's sites")
        try:
            data = json.loads(request.body)
            claimed = data.get("visitor") if isinstance(data, dict) else None
        except Exception:  # noqa: BLE001 (junk bytes: the edge refuses them, 400)
            claimed = None
        if isinstance(claimed, str) and not hmac.compare_digest(
            claimed.encode("utf-8", "surrogatepass"), visitor.encode()
        ):
            raise SignatureError("the body is another visitor's")

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        """The whole check (the body is small), keyed ``<visitor>:<id>``
        (``<visitor>:read:<seq>``); files must be this visitor's uploads of
        the last day. Nothing of the request but the body is kept (the token
        never reaches the journal)."""
        data = load_body(request.body)
        key = delivery_key(data)
        if data.get("type") == "message":
            for ref in check_message(data).files:
                self.read_file(str(data["visitor"]), ref, fresh=True)
        return [RawDelivery(key, request.body)]

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        """One body -> a message, or read receipts (see :mod:`.inbound`)."""
        if len(request.body) > self.max_body:
            raise PayloadError(f"the body is larger than {self.max_body} bytes")
        data = load_body(request.body)
        return parse_body(
            data,
            request.received_at,
            lambda visitor, ref: self.read_file(visitor, ref, fresh=False),
        )

    def answer(self, deliveries: Sequence[RawDelivery]) -> WebhookAnswer:
        return WebhookAnswer({"ok": True, "accepted": len(deliveries)})

    # -- outbound ------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        """Nothing to carry: the widget reads the reply from the bridge
        since it was stored. Confirms it under its own uid (what a read
        receipt names)."""
        return SendResult(external_ids=(message.bridge_id,))


def check_origins(value: str | Sequence[str]) -> tuple[str, ...]:
    """The widget's sites, each exactly ``scheme://host[:port]`` in lower
    case; ``ConfigError`` naming the one that is not."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        origin = item.strip().rstrip("/").lower()
        parts = urlsplit(origin)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if (
            parts.scheme not in ("https", "http")
            or not parts.hostname
            or parts.username
            or parts.password
            or parts.path
            or parts.query
            or parts.fragment
            or not port_ok
        ):
            raise ConfigError(
                f"--origin {item!r}: a site is scheme://host[:port], nothing after it "
                "(https://shop.example)"
            )
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ConfigError(
                f"--origin {item!r}: https only (the visitor's token would cross the network "
                "in clear); plain http is for localhost"
            )
        if origin not in out:
            out.append(origin)
    if not out:
        raise ConfigError(
            "--origin is required: the site the widget runs on (https://shop.example)"
        )
    return tuple(out)


def _web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname or ""))


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
