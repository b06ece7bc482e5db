"""``TelegramAdapter``: the channel contract for one Telegram bot."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from bridge.errors import (
    AmbiguousError,
    BridgeError,
    ConfigError,
    PartlySentError,
    PayloadError,
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
from channel_adapters.base import ChannelAdapter, Reach, ReachView
from channel_adapters.telegram import reach as telegram_reach
from channel_adapters.telegram.client import BotApi, ChatMigratedError
from channel_adapters.telegram.inbound import HANDLED_UPDATES, KIND, parse_update
from channel_adapters.telegram.outbound import PartialSendError, plan
from channel_adapters.telegram.settings import (
    TelegramConnect,
    TelegramCredentials,
    TelegramSettings,
)

__all__ = ["SECRET_HEADER", "TelegramAdapter"]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
#: setWebhook.secret_token: "1-256 characters. Only A-Z, a-z, 0-9, _ and -" (api.json)
SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: answerCallbackQuery 400s that only mean "too late"
STALE_CALLBACK_MARKERS = ("query is too old", "query id is invalid")
#: getUpdates.limit: "Values between 1-100 are accepted. Defaults to 100." (api.json)
POLL_LIMIT = 100
#: what the HTTP read may take beyond the long poll's own timeout
POLL_READ_MARGIN = 10.0


class TelegramAdapter(ChannelAdapter):
    """One Telegram bot (credentials: :class:`TelegramCredentials`);
    ``account.api_base`` overrides ``https://api.telegram.org`` (the sandbox)."""

    kind: ClassVar[str] = KIND
    title: ClassVar[str] = "Telegram"
    Connect: ClassVar[type[TelegramConnect]] = TelegramConnect
    Credentials: ClassVar[type[TelegramCredentials]] = TelegramCredentials
    Settings: ClassVar[type[TelegramSettings]] = TelegramSettings
    #: a webhook by default; ``getUpdates`` long polling for a bridge that
    #: Telegram cannot reach (``mode: polling``)
    modes: ClassVar[tuple[ReceiveMode, ...]] = (ReceiveMode.WEBHOOK, ReceiveMode.POLLING)
    #: the Bot API server caps a long poll at 50 s
    #: (tdlib/telegram-bot-api Client.hpp ``LONG_POLL_MAX_TIMEOUT = 50``)
    max_poll_timeout: ClassVar[float] = 50.0
    #: "~30 messages per second" in bulk: Telegram's guidance, not a
    #: guarantee (FACTS §1); ``retry_after`` is always obeyed on top.
    send_rate: ClassVar[Rate | None] = Rate(capacity=30, per_second=30)
    #: setWebhook.allowed_updates: exactly the kinds parse() turns into messages
    allowed_updates: ClassVar[tuple[str, ...]] = HANDLED_UPDATES
    max_connections: ClassVar[int] = 40

    def __init__(self, account: ChannelAccountInfo, http: HttpClient | None = None) -> None:
        super().__init__(account, http)
        self.api = BotApi(self.http, account.credentials, self.send_rate)

    def __repr__(self) -> str:
        return f"<TelegramAdapter account={self.account.id} bot_id={self.api.bot_id}>"

    @classmethod
    def default_api_base(cls) -> str:
        return "https://api.telegram.org"

    @classmethod
    def reachability(cls, view: ReachView) -> Reach:
        """``blocked`` once a send failed because the user blocked the bot
        (``channel_adapters.telegram.reach``), else the default."""
        return telegram_reach.reachability(view, super().reachability(view))

    @classmethod
    def generate_secret_token(cls) -> str:
        """A fresh webhook secret from the CSPRNG (ASVS 11.5.1: not a uuid4):
        256 bits as 43 characters of urlsafe base64, which is exactly
        setWebhook's alphabet; the filter only guards that claim."""
        token = secrets.token_urlsafe(32)
        return "".join(ch for ch in token if SECRET_TOKEN_RE.fullmatch(ch))[:256]

    #: "bots can download files of up to 20 MB" (api.json getFile, FACTS §1)
    max_download: ClassVar[int] = 20 * 1024 * 1024

    def download(self, attachment: Attachment) -> bytes:
        """``getFile`` then the file from the Bot API's own host (the token is
        in that URL: it is fetched, never logged or handed to a CRM)."""
        if not attachment.file_ref:
            raise PermanentError("the attachment has no Telegram file_id")
        info = self.api.call("getFile", {"file_id": attachment.file_ref})
        path = str((info or {}).get("file_path") or "")
        if not path or ".." in path.split("/"):
            raise PermanentError("Telegram gave no usable file_path")
        host = urlsplit(self.http.base_url).hostname or "api.telegram.org"
        fetcher = self.http.fetcher((host,), max_bytes=self.max_download)
        try:
            return fetcher.fetch(f"{self.http.base_url}/file/bot{self.api._raw_token()}/{path}")
        except BridgeError as exc:
            exc.message = self.api.scrub(exc.message)
            raise

    @classmethod
    def connect(cls, values: TelegramConnect) -> ConnectedAccount:
        """A @BotFather token is ``<bot id>:<secret>``: the bot id is the
        account's id; the webhook secret is generated here, once, and stored
        with the token."""
        token = values.bot_token.strip()
        bot_id, sep, rest = token.partition(":")
        if not (sep and bot_id.isdigit() and rest):
            raise ConfigError("a Telegram bot token looks like 123456789:AAE... (from @BotFather)")
        return ConnectedAccount(
            bot_id, {"bot_token": token, "secret_token": cls.generate_secret_token()}
        )

    # -- inbound ------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        """Compare ``X-Telegram-Bot-Api-Secret-Token`` with the account's
        secret in constant time. Only ever raises :class:`SignatureError`."""
        expected = self.credentials.secret_token
        if not isinstance(expected, str) or not expected:
            raise SignatureError("no secret_token configured for this Telegram account")
        given = _header(request, SECRET_HEADER)
        if given is None:
            raise SignatureError(f"missing {SECRET_HEADER} header")
        if isinstance(given, str):
            given = given.encode("utf-8", "surrogatepass")
        if not isinstance(given, bytes) or not hmac.compare_digest(
            given, expected.encode("utf-8", "surrogatepass")
        ):
            raise SignatureError(f"wrong {SECRET_HEADER} header")

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        """An ``Update`` is a JSON object with an integer ``update_id``
        (api.json: "The update's unique identifier"): that is all the
        webhook checks before journaling it; python-telegram-bot reads the
        rest in the worker."""
        try:
            data = json.loads(request.body)
        except UnicodeDecodeError:
            raise PayloadError("the body is not JSON in UTF-8") from None
        except (ValueError, RecursionError):
            raise PayloadError("the body is not JSON") from None
        if not isinstance(data, dict):
            raise PayloadError("an Update must be a JSON object")
        update_id = data.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise PayloadError("update_id (an integer) is required")
        return [RawDelivery(str(update_id), request.body)]

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        """One ``Update`` -> one event (the table in the package docstring)."""
        return parse_update(request.body, received_at=request.received_at, max_body=self.max_body)

    def poll(self, cursor: str | None, timeout: float) -> PollResult:
        """``getUpdates`` with ``offset`` = the cursor, a long-poll
        ``timeout`` and the same ``allowed_updates`` as ``setWebhook``.

        The cursor is the next offset, the highest ``update_id`` fetched
        plus one: Telegram confirms (and forgets) earlier updates only when
        a later call passes it, so a poll repeated with the old cursor
        fetches the same updates again (api.json getUpdates.offset). Each
        update becomes one delivery keyed by its ``update_id``, as
        :meth:`edge` keys a webhook's; an element without one (never seen)
        is keyed by its hash and left for the parser to reject.

        While a webhook is set Telegram answers 409 ("Conflict: can't use
        getUpdates method while webhook is active; use deleteWebhook to
        delete the webhook first"), and a second poller of the same bot
        ends the first one's poll with 409 ("Conflict: terminated by other
        getUpdates request"): both are :class:`PermanentError` with that
        text. Flood control is :class:`RetryableError` with
        ``retry_after``; a read timeout is retryable (getUpdates writes
        nothing: a repeat is safe).
        """
        wait = int(max(0.0, min(timeout, self.max_poll_timeout)))
        params: dict[str, Any] = {
            "timeout": wait,
            "limit": POLL_LIMIT,
            "allowed_updates": list(self.allowed_updates),
        }
        offset = _offset(cursor)
        if offset is not None:
            params["offset"] = offset
        connect = self.http.timeout[0]
        try:
            result = self.api.call(
                "getUpdates", params, timeout=(connect, wait + POLL_READ_MARGIN), limited=False
            )
        except AmbiguousError as exc:
            # a POST that timed out; getUpdates has no effect to look up
            raise RetryableError(
                exc.message, retry_after=exc.retry_after, status=exc.status
            ) from None
        if not isinstance(result, list):
            raise PermanentError("getUpdates: the answer is not an Array of Update")
        deliveries: list[RawDelivery] = []
        for update in result:
            body = _serialised(update)
            update_id = update.get("update_id") if isinstance(update, dict) else None
            if isinstance(update_id, int) and not isinstance(update_id, bool):
                deliveries.append(RawDelivery(str(update_id), body))
                offset = max(offset or 0, update_id + 1)
            else:
                deliveries.append(RawDelivery(hashlib.sha256(body).hexdigest(), body))
        return PollResult(tuple(deliveries), str(offset) if offset is not None else cursor)

    # -- outbound -----------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        """Send the text (split at 4096 UTF-16 units) and attachments in order,
        after the parts an earlier attempt sent (``message.sent_parts``).

        ``migrate_to_chat_id`` is followed once (``SendResult.new_thread_id``).
        Once a part is out, flood control refusing a later part (nothing of
        it ran) is :class:`bridge.errors.PartlySentError` with the ids sent
        and Telegram's ``retry_after``: the core waits and sends the rest
        (its one retry module); any other failure after a part went out
        raises :class:`PartialSendError` (an ``AmbiguousError``) with
        ``sent_ids``.
        """
        steps = plan(message)
        chat_id = message.external_thread_id
        new_thread: str | None = None
        sent: list[str] = list(message.sent_parts)
        for index, (method, params) in enumerate(steps):
            if index < len(message.sent_parts):
                continue  # delivered by an earlier attempt
            try:
                result, moved = self._call_in_chat(method, params, chat_id, new_thread is None)
            except BridgeError as exc:
                if not sent:
                    raise  # nothing went out: the job retries the whole reply
                pause = _flood_wait(exc) if isinstance(exc, RetryableError) else None
                if pause is not None:
                    raise PartlySentError(
                        f"part {index + 1}/{len(steps)} refused by flood control after "
                        f"{len(sent)} sent",
                        sent_ids=tuple(sent),
                        new_thread_id=new_thread,
                        retry_after=pause,
                        status=exc.status,
                    ) from None
                raise PartialSendError(
                    f"part {index + 1}/{len(steps)} failed after {len(sent)} sent: {exc.message}",
                    sent_ids=tuple(sent),
                    new_thread_id=new_thread,
                    retry_after=getattr(exc, "retry_after", None),
                    status=exc.status,
                ) from None
            if moved is not None:
                new_thread = chat_id = moved
            message_id = result.get("message_id") if isinstance(result, dict) else None
            if not isinstance(message_id, int) or isinstance(message_id, bool):
                # it went out (ok: true) but we cannot tell which message it is
                raise PartialSendError(
                    f"{method}: answer has no message_id",
                    sent_ids=tuple(sent),
                    new_thread_id=new_thread,
                )
            sent.append(str(message_id))
        return SendResult(external_ids=tuple(sent), new_thread_id=new_thread)

    def _call_in_chat(
        self, method: str, params: dict[str, Any], chat_id: str, may_migrate: bool
    ) -> tuple[Any, str | None]:
        """(result, the new chat id when Telegram said the group migrated)."""
        try:
            return self.api.call(method, {"chat_id": _chat(chat_id), **params}), None
        except ChatMigratedError as exc:
            if not may_migrate:
                raise PermanentError("chat migrated twice during one send") from None
            moved = exc.new_chat_id
        try:
            return self.api.call(method, {"chat_id": _chat(moved), **params}), moved
        except ChatMigratedError:
            raise PermanentError("chat migrated twice during one send") from None

    def acknowledge(self, message: InboundMessage) -> None:
        """``answerCallbackQuery`` for a button press (stops the client's spinner)."""
        if message.kind is not MessageKind.CALLBACK or not message.callback_id:
            return
        try:
            self.api.call("answerCallbackQuery", {"callback_query_id": message.callback_id})
        except PermanentError as exc:
            # A query must be answered within seconds; a late answer is a 400
            # "query is too old", harmless: the press is already in the CRM.
            stale = any(m in exc.message.lower() for m in STALE_CALLBACK_MARKERS)
            if exc.status != 400 or not stale:
                raise

    def setup_webhook(self, url: str) -> None:
        """``setWebhook`` with the account's secret and the kinds we handle."""
        secret = self.credentials.secret_token
        if not isinstance(secret, str) or not SECRET_TOKEN_RE.fullmatch(secret):
            raise ConfigError(
                "must be 1-256 characters of A-Z a-z 0-9 _ - "
                "(TelegramAdapter.generate_secret_token() makes one)",
                key="credentials.secret_token",
            )
        self.api.call(
            "setWebhook",
            {
                "url": url,
                "secret_token": secret,
                "allowed_updates": list(self.allowed_updates),
                "max_connections": self.max_connections,
            },
        )

    def check_connection(self) -> str:
        """``getMe`` (api.json: "A simple method for testing your bot's
        authentication token"): the bot's @username and name. A revoked or
        mistyped token is Telegram's 401 ``Unauthorized`` (an ``AuthError``)."""
        me = self.api.call("getMe", {}, limited=False)
        if not isinstance(me, dict) or not me.get("is_bot", True):
            raise PermanentError("Telegram getMe: the token is not a bot's")
        username, name = str(me.get("username") or ""), str(me.get("first_name") or "")
        shown = f"@{username}" if username else f"bot {me.get('id', self.api.bot_id)}"
        return f"{shown} ({name})" if name else shown

    def remove_webhook(self) -> None:
        """``deleteWebhook``: Telegram stops posting updates (and keeps the
        pending ones for ``getUpdates``, api.json)."""
        self.api.call("deleteWebhook", {})

    def answer(self, deliveries: Sequence[RawDelivery]) -> WebhookAnswer:
        """Any 2xx will do. The body must never carry a ``method`` key:
        Telegram would run it as a "webhook reply" whose result we never see."""
        return WebhookAnswer({"ok": True})


def _offset(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        shown = repr(cursor[:20])
        raise PermanentError(f"the stored getUpdates offset is not a number: {shown}") from None


def _serialised(update: Any) -> bytes:
    """One update of getUpdates' array as the journal keeps it: compact
    JSON, as the Bot API server writes a webhook's body. An escaped lone
    surrogate (no valid UTF-8) is kept escaped."""
    try:
        return json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(update, separators=(",", ":")).encode("ascii")


def _flood_wait(exc: RetryableError) -> float | None:
    """``retry_after`` of a flood-control refusal (certainly not sent), else None."""
    if isinstance(exc, AmbiguousError) or exc.status != 429:
        return None
    return exc.retry_after


def _header(request: Any, name: str) -> Any:
    headers = getattr(request, "headers", None)
    if not isinstance(headers, Mapping):
        return None
    wanted = name.lower()
    if wanted in headers:
        return headers[wanted]
    for key, value in headers.items():  # tolerate a caller that kept the case
        if isinstance(key, str) and key.lower() == wanted:
            return value
    return None


def _chat(chat_id: str) -> int | str:
    """Numeric ids go as JSON integers (exact: ids fit in 52 bits)."""
    return int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id
