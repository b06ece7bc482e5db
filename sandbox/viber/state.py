"""In-process state of the Viber sandbox: bots and their webhooks, users and
their subscription to each bot, what the bots sent, the callback log.

Everything lives in one :class:`Store` guarded by one re-entrant lock (the
demo server is threaded). Nothing here does I/O: callbacks are posted
outside the lock (:mod:`.control`), so a bridge that calls ``send_message``
while it answers a callback cannot deadlock the sandbox.

* **Bots** come from the config (the top-level keys, then ``bots[]``); each
  has a webhook (``set_webhook``: its URL and event types).
* **Subscription** is per (bot, user): ``subscribed`` once the user wrote
  (a first message subscribes without a ``subscribed`` callback, FACTS §4)
  or subscribed, ``unsubscribed`` after ``unsubscribed``; a reply to anyone
  else answers status 6 (``require_subscription``).
* **Message tokens** are 64-bit integers beyond 2^53, as Viber's are
  (4912661846655238145 in the corpus, FACTS §0 rule 5).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

from ..core.clock import Clock
from ..core.ratelimit import RollingWindow
from ..core.webhooks import DeliveryLog

__all__ = ["Store", "FIRST_TOKEN"]

#: the first message token the sandbox gives out (> 2^53, < 2^63)
FIRST_TOKEN = 5_100_000_000_000_000_001
_NAMES = ("Anna", "Ivan", "Maria", "Dmitry", "Olga", "Sergey", "Elena", "Pavel")


@dataclass
class Store:
    """Everything the sandbox remembers (see the module docstring)."""

    config: dict[str, Any]
    clock: Clock
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: bot id -> {"url", "event_types", "set_at"}
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: user id -> {"id", "name", "avatar", "language", "country", "api_version"}
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (bot id, user id) -> "subscribed" | "unsubscribed"
    subscriptions: dict[tuple[str, str], str] = field(default_factory=dict)
    #: what the bots sent (GET /_sent), oldest first
    sent: list[dict[str, Any]] = field(default_factory=list)
    #: the welcome messages the webhook answered conversation_started with
    welcomes: list[dict[str, Any]] = field(default_factory=list)
    deliveries: DeliveryLog = field(default_factory=lambda: DeliveryLog(5000, numbered=True))
    counters: dict[str, int] = field(default_factory=dict)
    next_token: int = FIRST_TOKEN

    def __post_init__(self) -> None:
        self.windows = RollingWindow(now=self.clock.now)
        self.rng = random.Random(self.config.get("seed"))  # noqa: S311 (not crypto)
        self._seed_users()

    def now(self) -> float:
        return self.clock.now()

    def millis(self) -> int:
        return int(self.clock.now() * 1000)

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def token(self) -> int:
        with self.lock:
            self.next_token += 1
            return self.next_token - 1

    # -- bots ----------------------------------------------------------------------------------

    def bots(self) -> list[dict[str, Any]]:
        cfg = self.config
        first = {k: cfg[k] for k in ("auth_token", "id", "name", "uri", "avatar")}
        return [first, *({"name": b["id"], "uri": "", "avatar": None, **b} for b in cfg["bots"])]

    def bot_by_token(self, token: str | None) -> dict[str, Any] | None:
        return next((b for b in self.bots() if token and b["auth_token"] == token), None)

    def find_bot(self, selector: str) -> dict[str, Any] | None:
        return next(
            (b for b in self.bots() if selector in (b["id"], b["uri"], b["auth_token"])), None
        )

    # -- users ---------------------------------------------------------------------------------

    def _seed_users(self) -> None:
        for item in self.config["users"]:
            user = self.remember_user(
                item["id"], **{k: v for k, v in item.items() if k not in ("id", "subscribed")}
            )
            if item.get("subscribed"):
                self.subscriptions[(self.config["id"], user["id"])] = "subscribed"

    def remember_user(self, user_id: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            user = self.users.get(user_id)
            if user is None:
                name = _NAMES[len(self.users) % len(_NAMES)]
                user = self.users[user_id] = {
                    "id": user_id,
                    "name": name,
                    "avatar": None,
                    "language": "en",
                    "country": "GB",
                    "api_version": 10,
                }
            user.update({k: v for k, v in fields.items() if v is not None})
            return dict(user)

    def subscription(self, bot_id: str, user_id: str) -> str | None:
        return self.subscriptions.get((bot_id, user_id))

    def set_subscription(self, bot_id: str, user_id: str, state: str) -> None:
        with self.lock:
            self.subscriptions[(bot_id, user_id)] = state

    def reset(self) -> None:
        with self.lock:
            self.webhooks.clear()
            self.users.clear()
            self.subscriptions.clear()
            self.sent.clear()
            self.welcomes.clear()
            self.deliveries.clear()
            self.counters.clear()
            self.next_token = FIRST_TOKEN
            self.rng.seed(self.config.get("seed"))
            self._seed_users()
