"""In-process state of the sandbox: bots, chats, files, webhooks and logs.

Everything lives in one :class:`Store` guarded by one re-entrant lock (the demo
server is threaded). Nothing here does I/O; webhook HTTP calls happen outside
the lock (``webhook.py``) so a bridge that calls the Bot API while handling a
webhook cannot deadlock the sandbox.

What a chat "knows" is per bot, like Telegram: a bot can send to a chat only
after that chat wrote to it (an update was delivered) or the chat was
configured; otherwise ``400 Bad Request: chat not found``.

A bot without a webhook keeps its updates for ``getUpdates`` (its
``pending`` queue, at most 24 hours, api.json "Getting updates"): an update
leaves the queue only when a later ``getUpdates`` passes an ``offset`` above
its ``update_id``. ``Store.updates_changed`` wakes a waiting long poll.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..core.clock import Clock
from ..core.webhooks import DeliveryLog
from .flood import FloodControl, FloodLimits

__all__ = [
    "DEMO_BOT_TOKEN",
    "TOKEN_RE",
    "SandboxConfig",
    "BotAccount",
    "Webhook",
    "ChatState",
    "StoredFile",
    "BotState",
    "PendingUpdate",
    "Store",
]

# Telegram's token shape: "<bot id>:<35 chars of A-Za-z0-9_->".
TOKEN_RE = re.compile(r"^[1-9]\d{0,19}:[A-Za-z0-9_-]{35}$")
DEMO_BOT_TOKEN = "7000000001:AAE_demo-bot-token-for-the-sandbox0"  # noqa: S105 - not a secret
DEMO_BOT = {"token": DEMO_BOT_TOKEN, "username": "demo_bridge_bot", "first_name": "Demo Bridge Bot"}
# api.json types.Chat fields, in the order the Bot API server writes them.
CHAT_FIELDS = (
    "id",
    "title",
    "first_name",
    "last_name",
    "username",
    "type",
    "is_forum",
    "is_direct_messages",
)
UPDATE_ID_START = 500_000_001
#: "Incoming updates are stored on the server until the bot receives them
#: either way, but they will not be kept longer than 24 hours." (Bot API,
#: "Getting updates"; FACTS.md 1)
UPDATE_RETENTION_S = 24 * 3600


@dataclass
class SandboxConfig:
    """Run-time configuration (``create_app(config)`` and ``/_config``)."""

    bots: list[dict[str, Any]] = field(default_factory=lambda: [dict(DEMO_BOT)])
    chats: list[dict[str, Any]] = field(default_factory=list)
    per_chat_per_s: float | None = 1.0
    per_chat_burst: int = 3
    per_bot_per_s: float | None = 30.0
    per_bot_burst: int = 30
    per_group_per_min: float | None = 20.0
    # The official Bot API server started with --local accepts http:// webhooks on
    # any port; api.telegram.org demands HTTPS on 80/88/443/8443
    # (tdlib/telegram-bot-api WebhookActor.cpp start_up). The demo bridge is http.
    local_mode: bool = True
    webhook_timeout_s: float = 10.0
    redeliver_attempts: int = 3
    redeliver_delay_s: float = 0.5
    redeliver_max_delay_s: float = 5.0
    set_webhook_min_interval_s: float = 1.0  # Client.cpp: one setWebhook per second
    max_upload_bytes: int = 50 * 1024 * 1024  # sendDocument upload limit (FACTS.md 1)
    max_photo_bytes: int = 10 * 1024 * 1024  # sendPhoto (api.json sendPhoto.photo)
    max_download_bytes: int = 20 * 1024 * 1024  # getFile (api.json methods.getFile)
    log_limit: int = 100_000
    # Buttons per inline keyboard and per row (not in the Bot API docs: the
    # third-party figures in markup.py); more is 400 "reply markup is too
    # long". null: no cap.
    max_inline_buttons: int | None = 100
    max_inline_row: int | None = 8
    faults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(
        cls, values: dict[str, Any] | None, base: SandboxConfig | None = None
    ) -> SandboxConfig:
        """Merge ``values`` over ``base`` (or the defaults); unknown keys raise ``ValueError``."""
        current = asdict(base) if base else asdict(cls())
        names = {f.name for f in fields(cls)}
        unknown = set(values or {}) - names
        if unknown:
            raise ValueError(f"unknown telegram sandbox config keys: {sorted(unknown)}")
        current.update(values or {})
        config = cls(**current)
        config.validate()
        return config

    def validate(self) -> None:
        for name in ("per_chat_per_s", "per_bot_per_s", "per_group_per_min"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name} must be a non-negative number or null")
        for name in ("per_chat_burst", "per_bot_burst", "redeliver_attempts", "log_limit"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        for name in ("max_inline_buttons", "max_inline_row"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer or null")
        for name in (
            "webhook_timeout_s",
            "redeliver_delay_s",
            "redeliver_max_delay_s",
            "set_webhook_min_interval_s",
            "max_upload_bytes",
            "max_photo_bytes",
            "max_download_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
        if not isinstance(self.local_mode, bool) or not isinstance(self.faults, dict):
            raise ValueError("local_mode must be a boolean and faults an object")
        for bot in self.bots:
            if not isinstance(bot, dict) or not TOKEN_RE.match(str(bot.get("token", ""))):
                raise ValueError(f"bad bot entry (token must match {TOKEN_RE.pattern}): {bot!r}")
        for chat in self.chats:
            if not isinstance(chat, dict) or not isinstance(chat.get("id"), int):
                raise ValueError(f"bad chat entry (needs an integer id): {chat!r}")

    def flood_limits(self) -> FloodLimits:
        return FloodLimits(
            self.per_chat_per_s,
            self.per_chat_burst,
            self.per_bot_per_s,
            self.per_bot_burst,
            self.per_group_per_min,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BotAccount:
    """A registered bot; its id is the token's prefix, like Telegram's."""

    token: str
    username: str
    first_name: str

    @property
    def id(self) -> int:
        return int(self.token.split(":", 1)[0])

    def user(self) -> dict[str, Any]:
        """The ``User`` that appears as ``from`` of the bot's messages."""
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }


@dataclass
class Webhook:
    """A bot's ``setWebhook`` settings plus the delivery status ``getWebhookInfo`` shows."""

    url: str
    secret_token: str | None = None
    max_connections: int = 40
    allowed_updates: list[str] | None = None
    has_custom_certificate: bool = False
    ip_address: str | None = None
    last_error_date: int | None = None
    last_error_message: str | None = None
    slots: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # At most max_connections deliveries to this URL at once (api.json setWebhook).
        self.slots = threading.BoundedSemaphore(self.max_connections)


@dataclass
class ChatState:
    """One chat as one bot sees it."""

    chat: dict[str, Any]
    next_message_id: int = 1
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    migrated_to: int | None = None
    blocked: bool = False

    def allocate_message_id(self) -> int:
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id

    def remember_message(self, message: dict[str, Any]) -> None:
        message_id = message.get("message_id")
        if isinstance(message_id, int):
            trimmed = {k: v for k, v in message.items() if k != "reply_to_message"}
            self.messages[message_id] = trimmed
            self.next_message_id = max(self.next_message_id, message_id + 1)


@dataclass
class StoredFile:
    """A file a bot can reuse by ``file_id`` and download after ``getFile``."""

    file_id: str
    file_unique_id: str
    kind: str
    size: int | None = None
    mime_type: str | None = None
    file_name: str | None = None
    data: bytes | None = None
    file_path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def content(self) -> bytes:
        """The bytes: the real upload, or a deterministic stand-in of ``size`` bytes."""
        if self.data is not None:
            return self.data
        size = self.size if self.size is not None else 1024
        seed = hashlib.sha256(self.file_unique_id.encode()).digest()
        return (seed * (size // len(seed) + 1))[:size]


@dataclass
class PendingUpdate:
    """An update waiting for ``getUpdates`` (no webhook was set when it came)."""

    update: dict[str, Any]
    queued_at: float

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])


class BotState:
    """Everything one bot has: webhook, known chats and users, files, callback queries."""

    def __init__(self, account: BotAccount) -> None:
        self.account = account
        self.webhook: Webhook | None = None
        self.chats: dict[int, ChatState] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.files: dict[str, StoredFile] = {}
        self.files_by_path: dict[str, StoredFile] = {}
        self.callback_queries: dict[str, bool] = {}  # id -> answered
        self.callback_answers: list[dict[str, Any]] = []
        self.next_update_id = UPDATE_ID_START
        self.last_set_webhook = float("-inf")
        # getUpdates: the queue, whether anyone polls, and what the polls did
        self.pending: deque[PendingUpdate] = deque()
        self.polling = False  # getUpdates was called: updates queue while no webhook
        self.poll_allowed_updates: list[str] | None = None
        self.poll_generation = 0  # bumped by every getUpdates: ends the running one
        self.long_polls_waiting = 0
        self.get_updates_calls = 0
        self.poll_conflicts = 0  # long polls ended by a newer getUpdates

    def confirm(self, offset: int, now: float) -> None:
        """getUpdates' ``offset``: confirm (forget) every update below it; a
        negative one keeps only the last ``-offset`` (api.json
        getUpdates.offset). Updates older than 24 hours go too."""
        while self.pending and self.pending[0].queued_at < now - UPDATE_RETENTION_S:
            self.pending.popleft()
        if offset > 0:
            while self.pending and self.pending[0].update_id < offset:
                self.pending.popleft()
        elif offset < 0:
            while len(self.pending) > -offset:
                self.pending.popleft()

    def remember_chat(self, chat: dict[str, Any]) -> ChatState:
        """Record (or refresh) a chat from an update or the configuration."""
        data = {k: chat[k] for k in CHAT_FIELDS if k in chat}
        data.setdefault("type", "private" if chat["id"] > 0 else "group")
        state = self.chats.get(chat["id"])
        if state is None:
            state = self.chats[chat["id"]] = ChatState(data)
        else:
            state.chat.update(data)
        return state

    def resolve_chat(self, chat_id: int | str) -> ChatState | None:
        """A known chat by id or ``@username`` (usernames work for groups and channels)."""
        if isinstance(chat_id, int):
            return self.chats.get(chat_id)
        if chat_id.startswith("@"):
            wanted = chat_id[1:].lower()
            for state in self.chats.values():
                if (
                    state.chat.get("type") != "private"
                    and str(state.chat.get("username", "")).lower() == wanted
                ):
                    return state
        return None

    def take_update_id(self, given: int | None) -> int:
        """``given`` if set (and move the counter past it), else the next sequential id."""
        if given is None:
            given = self.next_update_id
        self.next_update_id = max(self.next_update_id, given + 1)
        return given


class Store:
    """The whole sandbox state; use ``with store.lock:`` around compound changes."""

    def __init__(self, config: SandboxConfig, clock: Clock) -> None:
        self.lock = threading.RLock()
        #: notified when a bot's pending updates or its webhook change
        self.updates_changed = threading.Condition(self.lock)
        self.clock = clock
        self.config = config
        self.flood = FloodControl(config.flood_limits(), clock.now)
        self.bots: dict[str, BotState] = {}
        self.sent: deque[dict[str, Any]] = deque(maxlen=config.log_limit or None)
        self.deliveries = DeliveryLog(config.log_limit)  # webhook delivery attempts
        self._file_counter = 0
        self.reset()

    # -- lifecycle -------------------------------------------------------------

    def reset(self, keep_webhooks: bool = False) -> None:
        """Forget everything except the configuration (and, optionally, webhooks)."""
        with self.lock:
            webhooks = {t: b.webhook for t, b in self.bots.items()} if keep_webhooks else {}
            self.bots.clear()
            self.sent.clear()
            self.deliveries.clear()
            self.flood.configure(self.config.flood_limits())
            for bot in self.config.bots:
                self.register_bot(bot["token"], bot.get("username"), bot.get("first_name"))
            for token, webhook in webhooks.items():
                if token in self.bots:
                    self.bots[token].webhook = webhook
            self.add_configured_chats(self.config.chats)
            self.updates_changed.notify_all()  # a waiting long poll: its bot is gone

    def apply_config(self, config: SandboxConfig) -> None:
        with self.lock:
            self.config = config
            self.flood.configure(config.flood_limits())
            self.sent = deque(self.sent, maxlen=config.log_limit or None)
            self.deliveries.resize(config.log_limit)
            for bot in config.bots:
                self.register_bot(bot["token"], bot.get("username"), bot.get("first_name"))
            self.add_configured_chats(config.chats)

    def add_configured_chats(self, chats: list[dict[str, Any]]) -> None:
        """Chats from config are known to every bot (or to ``chat["bots"]`` tokens)."""
        with self.lock:
            for chat in chats:
                targets = chat.get("bots") or list(self.bots)
                for token in targets:
                    if token in self.bots:
                        self.bots[token].remember_chat(chat)

    # -- bots ----------------------------------------------------------------

    def register_bot(
        self, token: str, username: str | None = None, first_name: str | None = None
    ) -> BotState:
        with self.lock:
            bot_id = token.split(":", 1)[0]
            account = BotAccount(
                token, username or f"sandbox_{bot_id}_bot", first_name or f"Sandbox Bot {bot_id}"
            )
            state = self.bots.get(token)
            if state is None:
                state = self.bots[token] = BotState(account)
            else:
                state.account = account
            return state

    def bot(self, token: str) -> BotState | None:
        return self.bots.get(token)

    def now(self) -> float:
        return self.clock.now()

    # -- files ---------------------------------------------------------------

    def new_file(self, bot: BotState, kind: str, **details: Any) -> StoredFile:
        """A fresh ``file_id``/``file_unique_id`` pair in Telegram's base64url style."""
        with self.lock:
            self._file_counter += 1
            seed = f"{bot.account.id}:{kind}:{self._file_counter}:{time.time_ns()}".encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(seed).digest()).decode().rstrip("=")
            unique = base64.urlsafe_b64encode(
                hashlib.md5(seed, usedforsecurity=False).digest()[:9]
            ).decode()
            stored = StoredFile(
                file_id=f"AgAC{kind[:2].upper()}gIAAxkBAAI{digest}",
                file_unique_id=f"AQAD{unique}",
                kind=kind,
                **details,
            )
            bot.files[stored.file_id] = stored
            return stored

    def file_path_for(self, bot: BotState, stored: StoredFile) -> str:
        """Telegram-style ``file_path`` (``photos/file_3.jpg``), assigned on first getFile."""
        with self.lock:
            if stored.file_path is None:
                self._file_counter += 1
                folder = {
                    "photo": "photos",
                    "document": "documents",
                    "voice": "voice",
                    "audio": "music",
                    "video": "videos",
                    "video_note": "video_notes",
                    "sticker": "stickers",
                    "animation": "animations",
                }.get(stored.kind, "documents")
                stored.file_path = f"{folder}/file_{self._file_counter}{_extension(stored)}"
            bot.files_by_path[stored.file_path] = stored
            return stored.file_path

    # -- logs ----------------------------------------------------------------

    def log_sent(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.sent.append(entry)

    def log_delivery(self, entry: dict[str, Any]) -> None:
        self.deliveries.append(entry)


def _extension(stored: StoredFile) -> str:
    if stored.file_name and "." in stored.file_name:
        return "." + stored.file_name.rsplit(".", 1)[1].lower()
    by_mime = {
        "image/jpeg": ".jpg",
        "image/png": ".png",
        "image/gif": ".gif",
        "image/webp": ".webp",
        "application/pdf": ".pdf",
        "audio/ogg": ".oga",
        "audio/mpeg": ".mp3",
        "video/mp4": ".mp4",
        "text/plain": ".txt",
    }
    if stored.mime_type in by_mime:
        return by_mime[stored.mime_type]
    return {
        "photo": ".jpg",
        "voice": ".oga",
        "video": ".mp4",
        "video_note": ".mp4",
        "sticker": ".webp",
        "animation": ".mp4",
        "audio": ".mp3",
    }.get(stored.kind, "")
