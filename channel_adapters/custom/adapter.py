"""``CustomAdapter``: the channel contract for one system posting over HTTP."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests

from bridge.errors import (
    AmbiguousError,
    BridgeError,
    ConfigError,
    PayloadError,
    PermanentError,
    RetryableError,
)
from bridge.http import parse_retry_after
from bridge.model import (
    Attachment,
    ConnectedAccount,
    InboundEvent,
    OutboundMessage,
    RawDelivery,
    SendResult,
    WebhookAnswer,
    WebhookRequest,
    utcnow,
)
from channel_adapters.base import ChannelAdapter
from channel_adapters.custom import signing
from channel_adapters.custom.inbound import KIND, parse_request
from channel_adapters.custom.settings import CustomConnect, CustomCredentials, CustomSettings

__all__ = ["CustomAdapter"]

SYSTEM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: answers a receiver gives when it is busy or down: try again later
#: (Standard Webhooks: "retry on any non-2xx"; a 4xx that names a problem
#: with the message itself is final instead, or one bad reply would be sent
#: for ever)
TRANSIENT = frozenset({408, 409, 425, 429})
#: the biggest inbound attachment the bridge downloads
MAX_DOWNLOAD = 25 * 1024 * 1024


class CustomAdapter(ChannelAdapter):
    """One system (``Connect``: :class:`CustomConnect`) posting customers'
    messages and receiving the CRM's replies at its callback URL."""

    kind: ClassVar[str] = KIND
    title: ClassVar[str] = "Custom channel"
    Connect: ClassVar[type[CustomConnect]] = CustomConnect
    Credentials: ClassVar[type[CustomCredentials]] = CustomCredentials
    Settings: ClassVar[type[CustomSettings]] = CustomSettings
    max_body: ClassVar[int] = 256 * 1024
    #: the receiver drops a repeat by ``webhook-id`` (the bridge's message id)
    idempotent_sends: ClassVar[bool] = True

    def __repr__(self) -> str:
        return f"<CustomAdapter account={self.account.id} system={self.account.external_id}>"

    @classmethod
    def connect(cls, values: CustomConnect) -> ConnectedAccount:
        """Check what the admin typed: the system's name, a callback URL the
        bridge may post to, a Standard Webhooks secret."""
        system = values.system.strip()
        if not SYSTEM_RE.fullmatch(system):
            raise ConfigError("--system: 1-64 letters, digits, . _ - (e.g. site-form)")
        url = _callback_url(values.callback_url.strip(), values.allow_http)
        try:
            secret = signing.check_secret(values.signing_secret)
        except ValueError as exc:
            raise ConfigError(f"signing secret: {exc}") from None
        hosts = tuple(
            h.strip().lower() for h in values.attachment_hosts.split(",") if h.strip()
        ) or (urlsplit(url).hostname or "",)
        return ConnectedAccount(
            system,
            {"signing_secret": secret},
            {"callback_url": url, "attachment_hosts": list(hosts)},
        )

    # -- inbound ------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        """The Standard Webhooks signature with the account's secret, inside
        the 5-minute window; only ever raises ``SignatureError``."""
        signing.verify(self.credentials.signing_secret, request.headers, request.body)

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        """The whole check, at the webhook: the caller is a system a
        developer wires up, and a 400 that says "sender is required" is
        what lets them fix it (a messenger could not act on one). The body
        is small and parsing it costs little; it is journaled under its
        ``webhook-id`` (signed, and the same on the system's retries) and
        parsed again in the worker."""
        delivery = request.header(signing.ID) or ""
        if not delivery:  # verify() refuses it first; never journal a keyless row
            raise PayloadError(f"the {signing.ID} header is required")
        self.parse(request)
        return [RawDelivery(delivery, request.body, {signing.ID: delivery})]

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        """One request -> one message (or an ignored event of another type)."""
        if len(request.body) > self.max_body:
            raise PayloadError(f"the body is larger than {self.max_body} bytes")
        delivery = request.header(signing.ID) or ""
        return parse_request(request.body, delivery, request.received_at)

    def answer(self, deliveries: Sequence[RawDelivery]) -> WebhookAnswer:
        """``{"ok": true, "accepted": n}`` once journaled."""
        return WebhookAnswer({"ok": True, "accepted": len(deliveries)})

    def download(self, attachment: Attachment) -> bytes:
        """The file at the attachment's URL, only from the hosts the admin
        allowed (the callback's host by default), SSRF-safe."""
        url = attachment.url or attachment.file_ref
        if not url:
            raise PermanentError("the attachment has no URL")
        hosts = tuple(self.settings.attachment_hosts)
        return self.http.fetcher(hosts, max_bytes=MAX_DOWNLOAD).fetch(url)

    # -- outbound -----------------------------------------------------------

    @classmethod
    def default_api_base(cls) -> str:
        return ""

    def send(self, message: OutboundMessage) -> SendResult:
        """POST the reply to the callback URL, signed, ``webhook-id`` = the
        bridge's message id (the receiver's dedupe key). The receiver may
        answer ``{"id": ...}``, its own id for the message."""
        data: dict[str, Any] = {
            "id": message.bridge_id,
            "thread_id": message.external_thread_id,
            "text": message.text,
            "attachments": [_attachment(a) for a in message.attachments],
        }
        if message.reply_to:
            data["reply_to"] = message.reply_to
        answer = self._post("message.created", message.bridge_id, data)
        their_id = answer.get("id") if isinstance(answer, dict) else None
        if isinstance(their_id, (str, int)) and not isinstance(their_id, bool) and str(their_id):
            return SendResult(external_ids=(str(their_id)[:256],))
        return SendResult(external_ids=(message.bridge_id,))

    def setup_webhook(self, url: str) -> None:
        """Tell the system where to post (``endpoint.connected`` with the
        account's URL), signed: connecting fails, with the receiver's answer,
        unless the callback URL accepts it."""
        try:
            self._post(
                "endpoint.connected",
                f"connect-{self.account.id}-{_stamp()}",
                {"inbound_url": url, "system": self.account.external_id},
            )
        except BridgeError as exc:
            raise ConfigError(
                f"the callback URL did not accept a signed endpoint.connected event "
                f"({exc.message}): check the URL and that it verifies with the same secret"
            ) from None

    def remove_webhook(self) -> None:
        """``endpoint.disconnected``: the system should stop posting (its
        requests are refused from now on anyway)."""
        self._post(
            "endpoint.disconnected",
            f"disconnect-{self.account.id}-{_stamp()}",
            {"system": self.account.external_id},
        )

    def _post(self, event: str, msg_id: str, data: dict[str, Any]) -> Any:
        now = utcnow()
        body = json.dumps(
            {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        headers = signing.sign(self.credentials.signing_secret, msg_id, body, now)
        headers["Content-Type"] = "application/json; charset=utf-8"
        response = self.http.request(
            "POST",
            self.settings.callback_url,
            data=body,
            headers=headers,
            error_mapper=_receiver_error,
        )
        try:
            return response.json() if response.content else None
        except ValueError:
            return None  # any 2xx will do; the body is optional


def _receiver_error(response: requests.Response) -> BridgeError | None:
    """A receiver's non-2xx: busy or down is tried again (a 5xx, which may
    come after it stored the reply, is ambiguous: the retry carries the same
    ``webhook-id``); a 4xx about the message itself is final."""
    status = response.status_code
    detail = f"the callback answered HTTP {status}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status >= 500:
        return AmbiguousError(detail, retry_after=retry_after, status=status)
    if status in TRANSIENT:
        error = RetryableError(detail, retry_after=retry_after, status=status)
        error.nothing_written = status == 429
        return error
    if status in (401, 403):
        return PermanentError(
            f"{detail}: it refused the signature (same secret on both sides?)", status=status
        )
    if 300 <= status < 400:
        return PermanentError(
            f"{detail}: redirects are not followed, register the final URL", status=status
        )
    return PermanentError(detail, status=status)


def _attachment(attachment: Attachment) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": attachment.kind.value, "url": attachment.url}
    for key in ("file_name", "mime_type", "size"):
        value = getattr(attachment, key)
        if value is not None:
            out[key] = value
    return out


def _callback_url(url: str, allow_http: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("--callback-url must be an absolute https:// URL")
    if parts.username or parts.password:
        raise ConfigError("--callback-url must not carry a user or password (it would be logged)")
    if parts.scheme == "http" and not (allow_http or _loopback(parts.hostname)):
        raise ConfigError(
            "--callback-url is plain http: replies would cross the network unencrypted; "
            "use https, or --allow-http yes on a private network"
        )
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stamp() -> str:
    return str(int(utcnow().timestamp() * 1000))
