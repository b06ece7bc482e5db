"""``MaxAdapter``: the channel contract for one MAX bot."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from bridge.errors import (
    AmbiguousError,
    AuthError,
    BridgeError,
    ConfigError,
    PartlySentError,
    PermanentError,
    RetryableError,
    SignatureError,
)
from bridge.http import HttpClient
from bridge.model import (
    Attachment,
    ChannelAccountInfo,
    ConnectedAccount,
    InboundEvent,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    PollResult,
    Rate,
    RawDelivery,
    ReceiveMode,
    SendResult,
    WebhookAnswer,
    WebhookRequest,
)
from channel_adapters.base import ChannelAdapter

from . import inbound
from .client import BOT_RATE, NOT_READY, MaxApi
from .inbound import KIND, Bot
from .outbound import Step, address, inline_keyboard, plan, upload_type
from .settings import MaxApp, MaxConnect, MaxCredentials, MaxSettings

__all__ = ["SECRET_HEADER", "MaxAdapter"]

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Max-Bot-Api-Secret"  # noqa: S105 (a header name, FACTS §2)
#: SubscriptionRequestBody.secret: ``^[a-zA-Z0-9_-]{5,256}$`` (FACTS §2)
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{5,256}")
#: the updates the bridge reads (``update_types`` of the subscription and
#: ``types`` of a poll): what :mod:`.inbound` turns into messages
UPDATE_TYPES = (
    "message_created",
    "message_edited",
    "message_removed",
    "message_callback",
    "bot_started",
    "bot_stopped",
    "dialog_removed",
)
#: GET /updates ``limit`` is 1-1000, default 100 (FACTS §3)
POLL_LIMIT = 100
#: what the HTTP read may take beyond the long poll's own timeout
POLL_READ_MARGIN = 10.0
#: the webhook path of every account (``/webhooks/max/<key>``)
WEBHOOK_PATH = "/webhooks/max/"
#: largest file uploaded for a reply (MAX takes up to 4 GB, FACTS §11: a
#: reply's attachment is read into memory here, so the bridge caps it)
MAX_UPLOAD = 50 * 1024 * 1024
#: a button press's toast (CallbackAnswer.notification, FACTS §10)
PRESSED = "✓"


class MaxAdapter(ChannelAdapter):
    """One MAX bot (credentials: :class:`MaxCredentials`); ``account.api_base``
    (``MAX_API_BASE``) overrides ``https://platform-api2.max.ru``."""

    kind: ClassVar[str] = KIND
    title: ClassVar[str] = "MAX"
    Connect: ClassVar[type[Any]] = MaxConnect
    Credentials: ClassVar[type[Any]] = MaxCredentials
    Settings: ClassVar[type[Any]] = MaxSettings
    App: ClassVar[type[Any]] = MaxApp
    #: a webhook subscription by default; ``GET /updates`` long polling for
    #: a bridge MAX cannot reach ("development only", FACTS §3)
    modes: ClassVar[tuple[ReceiveMode, ...]] = (ReceiveMode.WEBHOOK, ReceiveMode.POLLING)
    #: GET /updates ``timeout`` is 0-90 s (FACTS §3)
    max_poll_timeout: ClassVar[float] = 90.0
    #: 30 requests per second per bot (FACTS §12); 2/s per chat on top
    send_rate: ClassVar[Rate | None] = BOT_RATE
    #: ``bot_stopped``: the client stopped the bot (FACTS §3; MAX refuses
    #: a send to them); ``bot_started`` allows it again
    withdrawn_reason: ClassVar[str] = "stopped"
    #: a send has no idempotency key: an unknown outcome is not sent blindly again
    idempotent_sends: ClassVar[bool] = False
    #: seconds between the tries of a send refused with attachment.not.ready
    #: (the official clients: 3 tries, 1 s then 2 s; FACTS §11)
    not_ready_waits: ClassVar[tuple[float, ...]] = (1.0, 2.0)

    def __init__(self, account: ChannelAccountInfo, http: HttpClient | None = None) -> None:
        super().__init__(account, http)
        if self.app.ca_bundle:
            # platform-api2's chain ends at the Минцифры root (FACTS §1 TLS)
            self.http.session.verify = str(self.app.ca_bundle)
        self.api = MaxApi(
            self.http, str(self.credentials.access_token or ""), str(account.external_id or "")
        )

    def __repr__(self) -> str:
        return f"<MaxAdapter account={self.account.id} bot={self.account.external_id}>"

    @classmethod
    def default_api_base(cls) -> str:
        return "https://platform-api2.max.ru"

    # -- connecting --------------------------------------------------------------

    @classmethod
    def connect(cls, values: MaxConnect) -> ConnectedAccount:
        """The bot's user id (given, else ``GET /me``) is the account's id; the webhook
        secret is generated here, once: 43 characters of urlsafe base64,
        which is exactly the subscription's alphabet."""
        token = values.access_token.strip()
        if not token or any(c.isspace() for c in token):
            raise ConfigError("set the bot token (MAX_ACCESS_TOKEN or the prompt)")
        given = values.bot_id.strip()
        if given and not (given.isascii() and given.isdigit() and 0 < int(given) < 2**63):
            raise ConfigError("--bot-id is the bot's user id (digits; GET /me shows it)")
        bot_id = str(int(given)) if given else _fetch_bot_id(token)
        secret = secrets.token_urlsafe(32)
        assert SECRET_RE.fullmatch(secret)  # noqa: S101 (token_urlsafe's alphabet)
        return ConnectedAccount(bot_id, {"access_token": token, "secret": secret})

    def setup_webhook(self, url: str) -> None:
        """``POST /subscriptions`` with the account's URL, its secret and the
        update types the bridge reads (FACTS §2). A subscription is added,
        not replaced: one left at an earlier address of this account (a new
        ``BRIDGE_PUBLIC_URL``) is deleted after."""
        secret = str(self.credentials.secret or "")
        if not SECRET_RE.fullmatch(secret):
            raise ConfigError(
                "must be 5-256 characters of A-Z a-z 0-9 _ - (connect the bot again)",
                key="credentials.secret",
            )
        self.api.call(
            "POST",
            "subscriptions",
            body={"url": url, "update_types": list(UPDATE_TYPES), "secret": secret},
        )
        for old in self._subscriptions():
            if old != url:
                self.api.call("DELETE", "subscriptions", params={"url": old})

    def check_connection(self) -> str:
        """``GET /me`` with the bot's token: the bot's name and @username
        (a wrong token: 401 ``verify.token``, an ``AuthError``)."""
        me = self.api.call("GET", "me")
        if not isinstance(me, dict) or not me.get("user_id"):
            raise PermanentError("MAX GET /me named no bot")
        username, name = str(me.get("username") or ""), str(me.get("name") or "")
        shown = f"@{username}" if username else f"bot {me['user_id']}"
        return f"{shown} ({name})" if name else shown

    def remove_webhook(self) -> None:
        """``DELETE /subscriptions?url=`` for this account's subscriptions
        (another system's subscriptions of the same bot stay): MAX then
        holds updates for ``GET /updates``."""
        for url in self._subscriptions():
            self.api.call("DELETE", "subscriptions", params={"url": url})

    def _subscriptions(self) -> list[str]:
        """The subscribed URLs that are this account's (its webhook path)."""
        answer = self.api.call("GET", "subscriptions")
        found = answer.get("subscriptions") if isinstance(answer, dict) else None
        ours = f"{WEBHOOK_PATH}{self.account.key}"
        urls = [s.get("url") for s in found or [] if isinstance(s, dict)]
        return [u for u in urls if isinstance(u, str) and urlsplit(u).path.rstrip("/") == ours]

    # -- inbound ------------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        """``X-Max-Bot-Api-Secret`` must be the account's secret, compared
        in constant time (MAX signs nothing else: FACTS §2). Only ever
        raises :class:`SignatureError` (403, nothing processed)."""
        expected = self.credentials.secret
        if not isinstance(expected, str) or not expected:
            raise SignatureError("no webhook secret stored for this MAX bot")
        given = _header(request.headers, SECRET_HEADER)
        if given is None:
            raise SignatureError(f"missing {SECRET_HEADER} header")
        if isinstance(given, str):
            given = given.encode("utf-8", "surrogatepass")
        if not isinstance(given, bytes) or not hmac.compare_digest(given, expected.encode("utf-8")):
            raise SignatureError(f"wrong {SECRET_HEADER} header")

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        """One ``Update`` per POST, keyed as :func:`inbound.delivery_key` says."""
        return [inbound.split(request.body)]

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        return inbound.parse(request.body, request.received_at, self._bot())

    def answer(self, deliveries: Any) -> WebhookAnswer:
        """HTTP 200 (MAX counts any other status, 204 too, as a failed
        delivery: FACTS §2)."""
        return WebhookAnswer({"ok": True})

    def _bot(self) -> Bot:
        return Bot(str(self.account.external_id or ""), str(self.credentials.access_token or ""))

    def poll(self, cursor: str | None, timeout: float) -> PollResult:
        """``GET /updates`` with the stored ``marker`` (always passed: without
        one the 2026 docs say only the latest update comes, FACTS §3), a long
        poll ``timeout`` and the same types as the subscription. The marker
        MAX answers is the next cursor; passing it commits what came before
        it, so the core stores it only once these deliveries are journaled.

        405 means a webhook subscription is active (polling and webhooks
        never run together: FACTS §2): :class:`PermanentError` naming the
        fix. A read timeout is retryable (a GET changes nothing)."""
        wait = int(max(0.0, min(timeout, self.max_poll_timeout)))
        params: dict[str, Any] = {
            "limit": POLL_LIMIT,
            "timeout": wait,
            "types": ",".join(UPDATE_TYPES),
            "marker": _marker(cursor),
        }
        try:
            answer = self.api.call(
                "GET",
                "updates",
                params=params,
                timeout=(self.http.timeout[0], wait + POLL_READ_MARGIN),
            )
        except PermanentError as exc:
            if exc.status == 405:
                raise PermanentError(
                    "MAX refuses GET /updates while a webhook subscription is active: "
                    "switch the account to polling again (its webhook is removed first)",
                    status=405,
                ) from None
            raise
        if not isinstance(answer, dict) or not isinstance(answer.get("updates"), list):
            raise RetryableError("GET /updates: the answer has no updates list")
        deliveries = []
        for update in answer["updates"]:
            body = inbound.serialise(update)
            try:
                key = inbound.split(body).key
            except BridgeError:
                key = f"unreadable:{_digest(body)}"  # the parser says why
            deliveries.append(RawDelivery(key, body))
        marker = answer.get("marker")
        next_cursor = (
            str(marker) if isinstance(marker, int) and not isinstance(marker, bool) else cursor
        )
        return PollResult(tuple(deliveries), next_cursor)

    # -- outbound -------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        """``POST /messages`` per step (:func:`outbound.plan`), after the
        steps an earlier attempt sent, each after the chat's turn (2/s per
        chat). A failure after a step went out: :class:`PartlySentError`
        when it is retryable (the core sends the rest), else the error
        saying which step."""
        target = address(message.external_thread_id)
        steps = plan(message, str(self.settings.contact_button or ""))
        sent = list(message.sent_parts)
        chat = str(next(iter(target.values())))
        for index, step in enumerate(steps):
            if index < len(message.sent_parts):
                continue
            try:
                sent.append(self._send_step(target, chat, step))
            except BridgeError as exc:
                if not sent:
                    raise
                where = f"part {index + 1}/{len(steps)}"
                if isinstance(exc, RetryableError) and not isinstance(exc, AmbiguousError):
                    raise PartlySentError(
                        f"{where} failed after {len(sent)} sent: {exc.message}",
                        sent_ids=tuple(sent),
                        retry_after=exc.retry_after,
                        status=exc.status,
                    ) from None
                exc.message = f"{exc.message} ({where}; {len(sent)} sent before it)"
                exc.args = (exc.message,)
                raise
        return SendResult(tuple(sent))

    def _send_step(self, target: Mapping[str, int], chat: str, step: Step) -> str:
        body: dict[str, Any] = {"text": step.text}
        attachments = [self._attachment(step.attachment)] if step.attachment else []
        extra = dict(step.extra)
        if "keyboard" in extra:
            attachments.append(inline_keyboard(extra.pop("keyboard")))
        body["attachments"] = attachments or None
        body.update(extra)
        waits = list(self.not_ready_waits)
        while True:
            self.api.chat_turn(chat)
            try:
                answer = self.api.call("POST", "messages", params=dict(target), body=body)
                break
            except RetryableError as exc:
                # a file just uploaded may not be processed yet (FACTS §11)
                if exc.vendor_code != NOT_READY or not waits:
                    raise
                time.sleep(waits.pop(0))
        mid = _mid(answer)
        if mid is None:
            # it went out (200) but we cannot tell which message it is
            raise AmbiguousError("MAX POST /messages: the answer names no message.body.mid")
        return mid

    def _attachment(self, attachment: Attachment) -> dict[str, Any]:
        """An image with an address by URL; anything else uploaded (FACTS
        §11: ``POST /uploads?type=``, the bytes to its URL as ``data``, then
        the token: video and audio take step 1's token, their upload host
        answers XML)."""
        kind = upload_type(attachment)
        if kind == "image" and attachment.url and attachment.url.startswith("https://"):
            return {"type": "image", "payload": {"url": attachment.url}}
        data = self._bytes(attachment)
        endpoint = self.api.call("POST", "uploads", params={"type": kind})
        url = endpoint.get("url") if isinstance(endpoint, dict) else None
        if not isinstance(url, str) or not url.lower().startswith(("https://", "http://")):
            raise PermanentError(f"MAX POST /uploads?type={kind} gave no upload URL")
        name = attachment.file_name or f"{kind}.{_extension(attachment)}"
        uploaded = self.api.upload(url, name, data, attachment.mime_type)
        if (
            kind == "image"
            and isinstance(uploaded, dict)
            and isinstance(uploaded.get("photos"), dict)
        ):
            return {"type": "image", "payload": {"photos": uploaded["photos"]}}
        token = endpoint.get("token") if kind in ("video", "audio") else None
        if token is None and isinstance(uploaded, dict):
            token = uploaded.get("token")
        if not isinstance(token, str) or not token:
            raise PermanentError(f"MAX gave no token for the uploaded {kind}")
        return {"type": kind, "payload": {"token": token}}

    def _bytes(self, attachment: Attachment) -> bytes:
        """The file's bytes: kept ones as they are, else fetched from its
        address through the SSRF-safe fetcher (public addresses of that
        host only, no redirects, at most :data:`MAX_UPLOAD`)."""
        if attachment.content is not None:
            return attachment.content
        url = attachment.url or ""
        host = urlsplit(url).hostname
        if not host:
            raise PermanentError(
                f"the attachment {attachment.file_name or attachment.kind.value!r} has no "
                "address to fetch it from"
            )
        return self.http.fetcher((host,), max_bytes=MAX_UPLOAD).fetch(url)

    def acknowledge(self, message: InboundMessage) -> None:
        """``POST /answers?callback_id=`` for a button press (the client's
        button stops waiting; FACTS §10), within the chat's 2/s. Its deadline
        is UNCONFIRMED: a late answer MAX refuses (400/404) is harmless,
        the press is in the CRM already."""
        if message.kind is not MessageKind.CALLBACK or not message.callback_id:
            return
        target = address(message.external_thread_id)
        self.api.chat_turn(str(next(iter(target.values()))))
        try:
            self.api.call(
                "POST",
                "answers",
                params={"callback_id": message.callback_id},
                body={"notification": PRESSED},
            )
        except PermanentError as exc:
            if exc.status not in (400, 404):
                raise
            log.info("max: a button press was answered too late (%s)", exc.vendor_code)


def _fetch_bot_id(token: str) -> str:
    """``GET /me`` -> the bot's ``user_id`` (the connect command has no
    HTTP client from the core: one is made here, on ``MAX_API_BASE``)."""
    http = HttpClient(os.environ.get("MAX_API_BASE") or MaxAdapter.default_api_base())
    bundle = os.environ.get("MAX_CA_BUNDLE")
    if bundle:
        http.session.verify = bundle
    try:
        me = MaxApi(http, token, "connect").call("GET", "me")
    except AuthError as exc:
        raise ConfigError(f"MAX refused the token: {exc.message}") from None
    except BridgeError as exc:
        raise ConfigError(f"could not read the bot with GET /me: {exc.message}") from None
    user_id = me.get("user_id") if isinstance(me, dict) else None
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
        raise ConfigError("GET /me gave no user_id for the bot")
    return str(user_id)


def _marker(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    text = cursor.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise PermanentError(f"the stored GET /updates marker is not a number: {cursor[:20]!r}")
    return int(text)


def _mid(answer: Any) -> str | None:
    """``message.body.mid`` of a SendMessageResult (FACTS §9)."""
    message = answer.get("message") if isinstance(answer, dict) else None
    body = message.get("body") if isinstance(message, dict) else None
    mid = body.get("mid") if isinstance(body, dict) else None
    return mid if isinstance(mid, str) and mid else None


def _header(headers: Any, name: str) -> Any:
    if not isinstance(headers, Mapping):
        return None
    wanted = name.lower()
    if wanted in headers:
        return headers[wanted]
    for key, value in headers.items():  # tolerate a caller that kept the case
        if isinstance(key, str) and key.lower() == wanted:
            return value
    return None


def _extension(attachment: Attachment) -> str:
    return {"image": "jpg", "video": "mp4", "audio": "mp3"}.get(upload_type(attachment), "bin")


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
