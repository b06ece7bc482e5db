"""``VkAdapter``: the channel contract for one VK community."""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bridge.errors import (
    AuthError,
    BridgeError,
    ConfigError,
    PartlySentError,
    PermanentError,
    RetryableError,
    SignatureError,
    WebhookError,
)
from bridge.http import HttpClient
from bridge.model import (
    ChannelAccountInfo,
    ConnectedAccount,
    InboundEvent,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    Rate,
    RawDelivery,
    SendResult,
    WebhookAnswer,
    WebhookRequest,
)
from channel_adapters.base import ChannelAdapter

from . import inbound
from .client import DENIED, VkApi
from .inbound import CONFIRMATION, KIND, MIN_VERSION
from .outbound import plan
from .settings import DEFAULT_PER_SECOND, VkConnect, VkCredentials, VkSettings

__all__ = ["VkAdapter"]

log = logging.getLogger(__name__)

#: the Callback API server's "Secret key": letters and digits, up to 50
SECRET_RE = re.compile(r"[A-Za-z0-9]{1,50}")
#: what the confirmation string may be (VK shows 8 hex digits)
CONFIRMATION_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: the events the community's Callback API server should send
EVENT_TYPES = (
    "message_new",
    "message_reply",
    "message_edit",
    "message_allow",
    "message_deny",
    "message_event",
)


class VkAdapter(ChannelAdapter):
    """One VK community (credentials: :class:`VkCredentials`);
    ``account.api_base`` (``VK_API_BASE``) overrides ``https://api.vk.com``."""

    kind: ClassVar[str] = KIND
    title: ClassVar[str] = "VK"
    Connect: ClassVar[type[Any]] = VkConnect
    Credentials: ClassVar[type[Any]] = VkCredentials
    Settings: ClassVar[type[Any]] = VkSettings
    #: the default of the per-account ``per_second`` setting (the numeric
    #: limits are UNCONFIRMED, FACTS §3); error 6 pauses the bucket on top
    send_rate: ClassVar[Rate | None] = Rate(
        capacity=int(DEFAULT_PER_SECOND), per_second=DEFAULT_PER_SECOND
    )
    #: ``random_id`` is VK's idempotency key (checked "over the whole
    #: message history", FACTS §3): a send whose outcome is unknown is sent
    #: again with the same keys and VK drops the repeat
    idempotent_sends: ClassVar[bool] = True
    # A user who writes to the community may be answered (901 is "the user
    # never allowed messages", corpora FACTS §3): a message newer than a
    # message_deny counts as consent again. VK's 901 stays the last word.
    consent_by_writing: ClassVar[bool] = True
    #: ``message_deny``: the user denied the community's messages (FACTS §3)
    withdrawn_reason: ClassVar[str] = "denied"
    listings: ClassVar[Mapping[str, str]] = {
        "callback": "what to type into the community's Callback API server settings "
        "(secret key, API version, event types) and its confirmation string",
    }

    def __init__(self, account: ChannelAccountInfo, http: HttpClient | None = None) -> None:
        super().__init__(account, http)
        per_second = float(self.settings.per_second or DEFAULT_PER_SECOND)
        self.api = VkApi(
            self.http,
            str(self.credentials.access_token or ""),
            str(account.external_id or ""),
            str(self.settings.api_version),
            Rate(capacity=max(1, int(per_second)), per_second=per_second),
        )

    def __repr__(self) -> str:
        return f"<VkAdapter account={self.account.id} group={self.account.external_id}>"

    @classmethod
    def default_api_base(cls) -> str:
        return "https://api.vk.com"

    # -- connecting --------------------------------------------------------------

    @classmethod
    def connect(cls, values: VkConnect) -> ConnectedAccount:
        """The community's id is the account's id. The secret key is
        generated when not given; the confirmation string is read with
        ``groups.getCallbackConfirmationCode`` when not given (the token
        needs the ``manage`` right for that)."""
        group_id = _group_id(values.group_id)
        token = values.access_token.strip()
        if not token:
            raise ConfigError("set the community access token (VK_ACCESS_TOKEN or the prompt)")
        _check_version(values.api_version)
        if not values.per_second > 0:
            raise ConfigError("--per-second must be more than 0")
        secret = values.secret.strip() or secrets.token_hex(16)
        if not SECRET_RE.fullmatch(secret):
            raise ConfigError("--secret must be 1-50 letters and digits (VK's secret key field)")
        confirmation = values.confirmation.strip()
        if confirmation and not CONFIRMATION_RE.fullmatch(confirmation):
            raise ConfigError("--confirmation is the short string the Callback API settings show")
        if not confirmation:
            confirmation = _fetch_confirmation(group_id, token, values.api_version.strip())
        return ConnectedAccount(
            group_id,
            {"access_token": token, "secret": secret},
            {
                "confirmation": confirmation,
                "api_version": values.api_version.strip(),
                "per_second": float(values.per_second),
            },
        )

    def setup_webhook(self, url: str) -> Mapping[str, Any] | None:
        """Nothing is registered at VK: the admin adds ``url`` as a Callback
        API server with the secret key (``bridge vk callback``). When the
        token may read it, the community's confirmation string is
        refreshed: VK changes it when a server is added or edited (FACTS
        §3), and a stale one fails the next confirmation. ``bridge vk
        set-webhook --account <id>`` runs this again."""
        try:
            current = self.api.confirmation_code()
        except (PermanentError, RetryableError) as exc:
            if exc.vendor_code is not None and int(exc.vendor_code) in DENIED:
                return None  # the token has no manage right: the stored string stands
            raise
        if current == self.settings.confirmation:
            return None
        log.info("vk account %s: the confirmation string changed, stored", self.account.id)
        return {"confirmation": current}

    def check_connection(self) -> str:
        """``groups.getById`` for the community with its own token: the
        community's name. A wrong or revoked token is VK's error 5 (an
        ``AuthError``); a token of another community, error 27/15/100."""
        answer = self.api.call("groups.getById", {"group_id": self.api.group_id})
        # 5.199 answers {"groups": [...], "profiles": [...]}; before 5.139 a bare list
        groups = answer.get("groups") if isinstance(answer, dict) else answer
        first = groups[0] if isinstance(groups, list) and groups else None
        if not isinstance(first, dict):
            raise PermanentError("VK groups.getById named no community")
        name = str(first.get("name") or "")
        club = f"club{first.get('id', self.api.group_id)}"
        return f"{name} ({club})" if name else club

    def listing(self, name: str) -> list[dict[str, Any]]:
        """``callback``: the Callback API server settings to type into the
        community (Manage -> API usage -> Callback API), the secret key
        among them (shown only by this command, which an admin runs), and
        the confirmation string stored and, when the token may read it, the
        one VK has now."""
        if name != "callback":
            return super().listing(name)
        rows = [
            {"setting": "API version", "value": self.settings.api_version},
            {"setting": "Secret key", "value": self.credentials.secret},
            {"setting": "Event types", "value": ", ".join(EVENT_TYPES)},
            {"setting": "Confirmation string (stored)", "value": self.settings.confirmation},
        ]
        try:
            now = self.api.confirmation_code()
        except BridgeError as exc:
            now = f"(not readable: {exc.message})"
        rows.append({"setting": "Confirmation string (VK now)", "value": now})
        return rows

    # -- inbound ------------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        """The body's ``group_id`` must be this community's and its
        ``secret`` the stored one (constant time; there is no signature,
        FACTS §0 rule 2). The ``confirmation`` event may come without a
        secret (UNCONFIRMED, FACTS §3): it is accepted then, for our group
        only (it only asks for the confirmation string, not a secret).
        Only ever raises :class:`SignatureError`."""
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError, TypeError):
            raise SignatureError("the body is not a VK event: no secret to check") from None
        if not isinstance(data, dict):
            raise SignatureError("the body is not a VK event: no secret to check")
        group = data.get("group_id")
        ours = str(self.account.external_id or "")
        if isinstance(group, bool) or not isinstance(group, int) or str(group) != ours:
            raise SignatureError("group_id is not this community's")
        given = data.get("secret")
        if given is None and data.get("type") == CONFIRMATION:
            return
        expected = str(self.credentials.secret or "")
        if not expected:
            raise SignatureError("no Callback API secret stored for this community")
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode("utf-8", "surrogatepass"), expected.encode("utf-8")
        ):
            raise SignatureError("the Callback API secret does not match")

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        """One event per POST, keyed by ``event_id``; the secret is not
        journaled. An old ``v`` is a 400 naming the fix; a confirmation
        with no string stored is refused (VK would be told something wrong)."""
        delivery = inbound.split(request.body)
        if inbound.is_confirmation(delivery) and not self.settings.confirmation:
            raise WebhookError(
                "no confirmation string stored for this community: connect it with --confirmation",
                code="not_configured",
                status_code=409,
            )
        return [delivery]

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        """One event -> one normalised event (the table in :mod:`.inbound`)."""
        return inbound.parse(request.body, request.received_at)

    def answer(self, deliveries: Sequence[RawDelivery]) -> WebhookAnswer:
        """The community's confirmation string for the ``confirmation``
        event, the plain text ``ok`` for every other (HTTP 200: anything
        else makes VK retry and, repeated, stop sending: FACTS §3)."""
        if any(inbound.is_confirmation(d) for d in deliveries):
            return WebhookAnswer.text(str(self.settings.confirmation))
        return WebhookAnswer.text("ok")

    # -- outbound -------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        """``messages.send`` per part (4096 characters each), after the
        parts an earlier attempt sent. Every part has its own ``random_id``
        derived from the bridge's id, so a repeat is dropped by VK: a
        retryable failure after a part went out is :class:`PartlySentError`
        (the core sends the rest); a refusal of the next part says which."""
        calls = plan(message)
        sent = list(message.sent_parts)
        for index, params in enumerate(calls):
            if index < len(message.sent_parts):
                continue
            try:
                sent.append(self.api.send(params))
            except BridgeError as exc:
                if not sent:
                    raise
                where = f"part {index + 1}/{len(calls)}"
                if isinstance(exc, RetryableError):
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

    def acknowledge(self, message: InboundMessage) -> None:
        """``messages.sendMessageEventAnswer`` for a callback button press
        (the client's button stops spinning). Its three ids: the button's
        event id and the user from ``callback_id`` (``<event_id>[:<user>]``,
        :mod:`.inbound`), the peer from the thread."""
        if message.kind is not MessageKind.CALLBACK or not message.callback_id:
            return
        event_id, _, user = message.callback_id.partition(":")
        peer = message.external_thread_id
        user = user or message.external_user_id or peer
        digits = user.isascii() and peer.isascii()
        if not (digits and user.isdigit() and peer.lstrip("-").isdigit()):
            raise PermanentError("the button press names no VK user or peer to answer")
        self.api.answer_event(event_id, int(user), int(peer))


def _group_id(given: str) -> str:
    """``123``, ``-123``, ``club123`` or ``public123`` -> ``123``."""
    text = given.strip().lower()
    for prefix in ("club", "public", "-"):
        text = text.removeprefix(prefix)
    # isascii: "²".isdigit() is True, but int() cannot read it
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) <= 0:
        raise ConfigError("--group-id is the community's id: the digits of vk.com/club<id>")
    return str(int(text))


def _check_version(given: str) -> None:
    found = inbound.version(given)
    if found is None or found < MIN_VERSION:
        raise ConfigError("--api-version must be 5.103 or later (5.199 is current)")


def _fetch_confirmation(group_id: str, token: str, version: str) -> str:
    """The confirmation string from VK (the connect command has no HTTP
    client from the core: one is made here, on ``VK_API_BASE``)."""
    base = os.environ.get("VK_API_BASE") or VkAdapter.default_api_base()
    api = VkApi(HttpClient(base), token, group_id, version, None)
    try:
        return api.confirmation_code()
    except AuthError as exc:
        raise ConfigError(f"VK refused the token: {exc.message}") from None
    except BridgeError as exc:
        raise ConfigError(
            f"could not read the confirmation string ({exc.message}): pass --confirmation "
            "with the string the community's Callback API settings show"
        ) from None
