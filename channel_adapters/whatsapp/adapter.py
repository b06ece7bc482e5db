"""The WhatsApp Cloud API adapter: one Meta app posts every connected
number's events to ``/webhooks/whatsapp/app``; replies go out through the
Graph API of the number the conversation belongs to."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bridge.errors import (
    AmbiguousError,
    BridgeError,
    ConfigError,
    PartlySentError,
    PayloadError,
    RetryableError,
    SignatureError,
)
from bridge.model import (
    Attachment,
    ConnectedAccount,
    InboundEvent,
    OutboundMessage,
    Rate,
    RawDelivery,
    SendResult,
    WebhookAnswer,
    WebhookRequest,
)
from channel_adapters.base import ChannelAdapter

from . import inbound
from .client import GraphApi
from .outbound import plan
from .settings import WhatsAppApp, WhatsAppConnect, WhatsAppCredentials, WhatsAppSettings

__all__ = ["WhatsAppAdapter"]

SIGNATURE = "x-hub-signature-256"
#: the hosts media URLs point at (``lookaside.fbsbx.com``): downloads go
#: nowhere else (the SSRF-safe fetcher)
MEDIA_HOSTS = ("fbsbx.com", "facebook.com", "whatsapp.net", "fbcdn.net")


class WhatsAppAdapter(ChannelAdapter):
    """Meta's WhatsApp Cloud API (corpora FACTS §2)."""

    kind: ClassVar[str] = "whatsapp"
    title: ClassVar[str] = "WhatsApp"
    app_routed: ClassVar[bool] = True
    #: account-level notices (account_update, template status) name the
    #: WhatsApp Business Account (``entry.id``), not a number
    group_setting: ClassVar[str | None] = "waba_id"
    #: a media id's URL lasts minutes (FACTS §2: two-step download)
    fetch_media: ClassVar[bool] = True
    #: "played": a voice note listened to (FACTS §2 statuses) is read
    delivery_statuses: ClassVar[Mapping[str, str]] = {
        "delivered": "delivered",
        "read": "read",
        "played": "read",
    }
    #: account-level webhook events that need a person (WhatsApp Manager)
    listings: ClassVar[Mapping[str, str]] = {
        "templates": "the business account's message templates (for window_template)"
    }
    problem_events: ClassVar[Mapping[str, str]] = {
        "account_update:DISABLED_UPDATE": "the number or business account was disabled",
        "account_update:ACCOUNT_VIOLATION": "Meta reports a policy violation",
        "account_update:ACCOUNT_RESTRICTION": "the business account is restricted",
        "account_update:ACCOUNT_DELETED": "the business account was deleted",
        "account_update:ACCOUNT_OFFBOARDED": "the business account was offboarded",
        "account_update:PARTNER_APP_UNINSTALLED": "the app was uninstalled from the account",
        "message_template_status_update:REJECTED": "a message template was rejected",
        "message_template_status_update:DISABLED": "a message template was disabled",
        "message_template_status_update:PAUSED": "a message template was paused",
        "phone_number_quality_update": "the number's quality rating or limit changed",
    }
    #: "Payloads up to 3 MB" (FACTS §2)
    max_body: ClassVar[int] = 3_000_000
    #: the 24-hour customer-service window (FACTS §2, error 131047)
    reply_window: ClassVar[dt.timedelta | None] = dt.timedelta(hours=24)
    #: ``statuses`` webhooks: sent, delivered, read, failed (FACTS §2)
    confirms_delivery: ClassVar[bool] = True
    send_rate: ClassVar[Rate | None] = Rate(capacity=80, per_second=80.0)

    App: ClassVar[type[Any]] = WhatsAppApp
    Connect: ClassVar[type[Any]] = WhatsAppConnect
    Credentials: ClassVar[type[Any]] = WhatsAppCredentials
    Settings: ClassVar[type[Any]] = WhatsAppSettings

    @classmethod
    def default_api_base(cls) -> str:
        return "https://graph.facebook.com"

    @property
    def graph(self) -> GraphApi:
        rate = Rate(
            capacity=max(1, int(self.settings.per_second)), per_second=self.settings.per_second
        )
        return GraphApi(
            self.http,
            str(self.credentials.access_token or ""),
            str(self.account.external_id or ""),
            str(self.settings.api_version or "v21.0"),
            rate,
        )

    # -- connecting --------------------------------------------------------------

    @classmethod
    def connect(cls, values: WhatsAppConnect) -> ConnectedAccount:
        """The phone number id is the account's id: Meta routes by it."""
        number = values.phone_number_id.strip()
        waba = values.waba_id.strip()
        if not number.isdigit() or not waba.isdigit():
            raise ConfigError(
                "--phone-number-id and --waba-id are the digits WhatsApp Manager shows"
            )
        if not values.access_token.strip():
            raise ConfigError("set the access token (WHATSAPP_ACCESS_TOKEN or the prompt)")
        return ConnectedAccount(
            number,
            {"access_token": values.access_token.strip()},
            {"waba_id": waba, "display_phone_number": values.display_phone_number.strip()},
        )

    def setup_webhook(self, url: str) -> None:
        """Nothing per number: the app's webhook (``/webhooks/whatsapp/app``,
        field ``messages``) is set once in the Meta app's settings."""

    def check_connection(self) -> str:
        """``GET /<phone number id>?fields=display_phone_number,verified_name``
        with the access token (Graph API: WhatsApp Business Phone Number):
        the number and its verified business name. A wrong or expired token
        is Meta's error 190 (an ``AuthError``); a number the token may not
        see, error 100."""
        answer = self.graph.number()
        number = str(answer.get("display_phone_number") or self.account.external_id or "")
        name = str(answer.get("verified_name") or "")
        return f"{number} ({name})" if name else number

    # -- the app's URL ----------------------------------------------------------

    @staticmethod
    def signature(secret: str, body: bytes) -> str:
        return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    @classmethod
    def verify_app(cls, app: WhatsAppApp, request: WebhookRequest) -> None:
        """``X-Hub-Signature-256``: HMAC-SHA256 of the raw body with the App
        Secret, compared in constant time (FACTS §2)."""
        given = (request.header(SIGNATURE) or "").strip()
        expected = cls.signature(str(app.app_secret or ""), request.body)
        if not app.app_secret or not hmac.compare_digest(
            given.encode("utf-8", "replace"), expected.encode()
        ):
            raise SignatureError("X-Hub-Signature-256 does not match")

    @classmethod
    def route(cls, app: WhatsAppApp, request: WebhookRequest) -> tuple[str, ...]:
        return inbound.route(request.body)

    @classmethod
    def app_handshake(cls, app: WhatsAppApp, request: WebhookRequest) -> WebhookAnswer:
        """``GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…``: the
        raw challenge when the token matches (constant time), else 403."""
        given = request.query.get("hub.verify_token", "")
        expected = str(app.verify_token or "")
        if (
            request.query.get("hub.mode") != "subscribe"
            or not expected
            or not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())
        ):
            raise SignatureError("hub.verify_token does not match")
        return WebhookAnswer.text(request.query.get("hub.challenge", ""))

    # -- an account's deliveries -------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        """At the account's own URL: the app's signature, and the body must
        be for this number (or its business account); a body naming no
        number is the edge's 400."""
        self.verify_app(self.app, request)
        try:
            named = inbound.route(request.body)
        except PayloadError:
            return  # the signature is right: the edge names what is wrong
        ours = {str(self.account.external_id), f"group:{self.settings.waba_id}"}
        if not ours.intersection(named):
            raise SignatureError("the delivery is for another WhatsApp number")

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        inbound.route(request.body)  # PayloadError (400) for a body naming no number
        return inbound.split(
            request.body, str(self.account.external_id), str(self.settings.waba_id or "")
        )

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        return inbound.parse(request.body, request.received_at)

    # -- replies ---------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        """Each part in order (after those an earlier attempt sent). Once a
        part is out, a refusal of the next before it ran is
        :class:`PartlySentError` (the core waits and sends the rest); any
        other failure is ambiguous with the ids sent: WhatsApp has no
        idempotency key, so nothing is sent twice blindly."""
        to = message.external_thread_id
        bodies = plan(message, to)
        graph = self.graph
        pair = (
            f"whatsapp:{graph.phone_number_id}:{to}",
            Rate(
                capacity=max(1, int(self.settings.pair_burst)),
                per_second=float(self.settings.pair_per_minute) / 60.0,
            ),
        )
        sent = list(message.sent_parts)
        for index, body in enumerate(bodies):
            if index < len(message.sent_parts):
                continue
            try:
                sent.append(graph.send(body, pair=pair))
            except BridgeError as exc:
                if not sent:
                    raise
                if isinstance(exc, RetryableError) and exc.nothing_written:
                    raise PartlySentError(
                        f"part {index + 1}/{len(bodies)} refused after {len(sent)} sent",
                        sent_ids=tuple(sent),
                        retry_after=exc.retry_after,
                        status=exc.status,
                    ) from None
                raise _Partial(
                    f"part {index + 1}/{len(bodies)} failed after {len(sent)} sent: {exc.message}",
                    sent_ids=tuple(sent),
                    status=exc.status,
                ) from None
        return SendResult(tuple(sent))

    def download(self, attachment: Attachment) -> bytes:
        """Two calls (FACTS §2): ``GET /{media-id}`` for a short-lived URL,
        then that URL with the same bearer token, through the SSRF-safe
        fetcher (Meta's media hosts only, the size cap)."""
        if not attachment.file_ref:
            raise ConfigError("the attachment has no media id")
        graph = self.graph
        url, _size = graph.media_url(attachment.file_ref)
        fetcher = self.http.fetcher(MEDIA_HOSTS, max_bytes=int(self.settings.max_media_bytes))
        fetcher.headers = dict(graph.auth)
        return fetcher.fetch(url)

    def listing(self, name: str) -> list[dict[str, Any]]:
        """``templates``: the business account's message templates, the
        names and languages a mapping's ``window_template`` may use."""
        if name != "templates":
            return super().listing(name)
        return [
            {
                "name": t.get("name"),
                "language": t.get("language"),
                "status": t.get("status"),
                "category": t.get("category"),
                "parameters": _body_parameters(t),
            }
            for t in self.graph.templates(str(self.settings.waba_id))
        ]


def _body_parameters(template: Mapping[str, Any]) -> int:
    """How many ``{{n}}`` parameters the template's body takes."""
    for component in template.get("components") or []:
        if isinstance(component, dict) and component.get("type") in ("BODY", "body"):
            return str(component.get("text") or "").count("{{")
    return 0


class _Partial(AmbiguousError):
    """A later part failed after earlier parts went out (``sent_ids``)."""

    def __init__(self, message: str, *, sent_ids: Sequence[str], status: int | None) -> None:
        super().__init__(message, status=status)
        self.sent_ids = tuple(sent_ids)
