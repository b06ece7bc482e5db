"""``ViberAdapter``: the channel contract for one Viber bot."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bridge.errors import (
    AmbiguousError,
    AuthError,
    BridgeError,
    ConfigError,
    PartlySentError,
    RetryableError,
    SignatureError,
)
from bridge.http import HttpClient
from bridge.model import (
    ChannelAccountInfo,
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
from .client import ViberApi
from .inbound import KIND, SIGNATURE_HEADER
from .outbound import plan
from .settings import (
    DEFAULT_PER_SECOND,
    DEFAULT_TEXT_LIMIT,
    SENDER_NAME_LIMIT,
    ViberConnect,
    ViberCredentials,
    ViberSettings,
)

__all__ = ["EVENT_TYPES", "ViberAdapter"]

#: the callbacks set_webhook asks for (``message``, ``subscribed``,
#: ``unsubscribed`` and ``conversation_started`` are always sent: REST docs
#: "Event types filtering")
EVENT_TYPES = (
    "delivered",
    "seen",
    "failed",
    "subscribed",
    "unsubscribed",
    "conversation_started",
)


class ViberAdapter(ChannelAdapter):
    """One Viber bot (credentials: :class:`ViberCredentials`);
    ``account.api_base`` (``VIBER_API_BASE``) overrides
    ``https://chatapi.viber.com/pa``."""

    kind: ClassVar[str] = KIND
    title: ClassVar[str] = "Viber"
    Connect: ClassVar[type[Any]] = ViberConnect
    Credentials: ClassVar[type[Any]] = ViberCredentials
    Settings: ClassVar[type[Any]] = ViberSettings
    #: the default of the per-account ``per_second`` setting (Viber's rate
    #: limits are UNCONFIRMED, FACTS §4); status 12 pauses the bucket on top
    send_rate: ClassVar[Rate | None] = Rate(
        capacity=int(DEFAULT_PER_SECOND), per_second=DEFAULT_PER_SECOND
    )
    #: a callback is one small JSON object (a request to Viber is at most
    #: 30 KB, FACTS §4); a megabyte is far beyond any real one
    max_body: ClassVar[int] = 1_000_000
    #: ``seen``: the user read it (REST docs "Message receipts callbacks")
    delivery_statuses: ClassVar[Mapping[str, str]] = {"delivered": "delivered", "seen": "read"}
    #: a user's message subscribes them again without a ``subscribed``
    #: callback (FACTS §4): writing after an unsubscribe is consent
    consent_by_writing: ClassVar[bool] = True
    #: ``unsubscribed`` callback (REST docs "Callbacks"; FACTS §4)
    withdrawn_reason: ClassVar[str] = "unsubscribed"
    #: ``delivered`` and ``seen`` callbacks report our messages (FACTS §4)
    confirms_delivery: ClassVar[bool] = True

    def __init__(self, account: ChannelAccountInfo, http: HttpClient | None = None) -> None:
        super().__init__(account, http)
        per_second = float(self.settings.per_second or DEFAULT_PER_SECOND)
        self.api = ViberApi(
            self.http,
            str(self.credentials.auth_token or ""),
            str(account.external_id or account.id),
            Rate(capacity=max(1, int(per_second)), per_second=per_second),
        )

    def __repr__(self) -> str:
        return f"<ViberAdapter account={self.account.id} bot={self.account.external_id}>"

    @classmethod
    def default_api_base(cls) -> str:
        return "https://chatapi.viber.com/pa"

    # -- connecting --------------------------------------------------------------

    @classmethod
    def connect(cls, values: ViberConnect) -> ConnectedAccount:
        """The account's id is a digest of the token (a token names one bot;
        the digest shows nothing of it). No call is made here: the token is
        proved by :meth:`setup_webhook`, which runs next, with the
        deployment's API base (a failure there forgets the account)."""
        token = values.auth_token.strip()
        if not token:
            raise ConfigError("set the bot's auth token (VIBER_AUTH_TOKEN or the prompt)")
        if not token.isascii() or not token.isprintable() or " " in token:
            raise ConfigError("the auth token is the bot's app key as Viber shows it")
        if not values.per_second > 0:
            raise ConfigError("--per-second must be more than 0")
        if not values.text_limit > 0:
            raise ConfigError("--text-limit must be more than 0")
        avatar = values.sender_avatar.strip()
        if avatar and not avatar.lower().startswith("https://"):
            raise ConfigError("--sender-avatar must be an https:// URL")
        name = values.sender_name.strip()
        if not name:
            raise ConfigError("--sender-name is required: the name replies are sent under")
        if len(name) > SENDER_NAME_LIMIT:
            raise ConfigError(f"--sender-name is at most {SENDER_NAME_LIMIT} characters (Viber's)")
        return ConnectedAccount(
            "bot:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:24],
            {"auth_token": token},
            {
                "sender_name": name,
                "sender_avatar": avatar,
                "welcome_text": values.welcome_text.strip(),
                "text_limit": int(values.text_limit or DEFAULT_TEXT_LIMIT),
                "per_second": float(values.per_second),
            },
        )

    def setup_webhook(self, url: str) -> None:
        """``get_account_info`` proves the token, then ``set_webhook`` with
        the account's URL: Viber posts a signed ``webhook`` event to it and
        answers status 1 when it got no 200."""
        try:
            self.api.account_info()
        except AuthError as exc:
            raise ConfigError(f"Viber refused the token: {exc.message}") from None
        try:
            self.api.set_webhook(url, EVENT_TYPES)
        except BridgeError as exc:
            if exc.vendor_code == "1":
                raise ConfigError(
                    f"Viber could not reach {url} ({exc.message}): the bridge's public URL "
                    "(BRIDGE_PUBLIC_URL) must be reachable from the internet over https"
                ) from None
            raise

    def check_connection(self) -> str:
        """``get_account_info`` with the bot's token: the bot's name and
        URI (a wrong token: status 2 ``invalidAuthToken``, an ``AuthError``)."""
        info = self.api.account_info()
        name, uri = str(info.get("name") or ""), str(info.get("uri") or "")
        return f"{name} ({uri})" if name and uri else name or uri or "Viber bot"

    def remove_webhook(self) -> None:
        """``set_webhook`` with an empty URL: Viber stops posting."""
        self.api.set_webhook("", ())

    # -- inbound ------------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        """``X-Viber-Content-Signature`` over the raw bytes with the bot's
        token, compared in constant time (FACTS §0 rule 1, §4)."""
        token = str(self.credentials.auth_token or "")
        if not inbound.signature_matches(token, request.body, request.header(SIGNATURE_HEADER)):
            raise SignatureError("X-Viber-Content-Signature does not match")

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        """One callback per POST, keyed by its ``message_token`` (with the
        event for everything but a user's message)."""
        return [inbound.split(request.body)]

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        return inbound.parse(request.body, request.received_at)

    def answer(self, deliveries: Sequence[RawDelivery]) -> WebhookAnswer:
        """A plain 200; for ``conversation_started`` the bot's welcome
        message when it has one: Viber sends the answer's body to the user
        as a message ("the welcome message ... in the body of the HTTP
        response", REST docs "Sending a welcome message")."""
        welcome = str(self.settings.welcome_text or "").strip()
        if welcome and any(inbound.is_conversation_started(d) for d in deliveries):
            return WebhookAnswer(
                {
                    "sender": self._sender(),
                    "type": "text",
                    "text": welcome[: int(self.settings.text_limit or DEFAULT_TEXT_LIMIT)],
                }
            )
        return WebhookAnswer({"status": 0, "status_message": "ok"})

    # -- outbound -------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        """``send_message`` per part, after those an earlier attempt sent.
        Viber has no idempotency key: once a part is out, a refusal of the
        next before it ran (status 12) is :class:`PartlySentError` (the core
        waits and sends the rest); any other failure is ambiguous with the
        ids sent, so nothing goes twice blindly."""
        bodies = plan(
            message,
            sender_name=str(self.settings.sender_name or ""),
            sender_avatar=str(self.settings.sender_avatar or ""),
            text_limit=int(self.settings.text_limit or DEFAULT_TEXT_LIMIT),
        )
        sent = list(message.sent_parts)
        for index, body in enumerate(bodies):
            if index < len(message.sent_parts):
                continue
            try:
                sent.append(self.api.send(body))
            except BridgeError as exc:
                if not sent:
                    raise
                where = f"part {index + 1}/{len(bodies)}"
                if isinstance(exc, RetryableError) and exc.nothing_written:
                    raise PartlySentError(
                        f"{where} refused after {len(sent)} sent: {exc.message}",
                        sent_ids=tuple(sent),
                        retry_after=exc.retry_after,
                        status=exc.status,
                    ) from None
                raise _Partial(
                    f"{where} failed after {len(sent)} sent: {exc.message}",
                    sent_ids=tuple(sent),
                    status=exc.status,
                ) from None
        return SendResult(tuple(sent))

    def _sender(self) -> dict[str, str]:
        sender = {"name": str(self.settings.sender_name or "Support")[:SENDER_NAME_LIMIT]}
        if self.settings.sender_avatar:
            sender["avatar"] = str(self.settings.sender_avatar)
        return sender


class _Partial(AmbiguousError):
    """A later part failed after earlier parts went out (``sent_ids``)."""

    def __init__(self, message: str, *, sent_ids: Sequence[str], status: int | None) -> None:
        super().__init__(message, status=status)
        self.sent_ids = tuple(sent_ids)
