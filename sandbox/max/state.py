"""The MAX sandbox's state and what it posts.

:class:`Store` holds one bot: its webhook subscriptions, the updates kept
for ``GET /updates`` (numbered by marker), the dialogs it knows (chat id
<-> user), who stopped the bot, the messages it sent, the callback answers,
the uploads, and the delivery log. :class:`Hooks` posts updates to the
subscriptions as MAX does (FACTS §2): one ``Update`` per HTTPS POST, the
secret in ``X-Max-Bot-Api-Secret``, success only on HTTP 200; a failure is
retried after 60 s, x2.5 each time, and once 8 hours have passed since the
first attempt the subscription is deleted (all on the sandbox clock,
divided by ``time_compression``).
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from ..core import webhooks
from ..core.clock import Clock
from ..core.ratelimit import TokenBucket
from .config import DIALOG_BASE

__all__ = ["Hooks", "Store", "Upload", "dumps"]

USER_AGENT = "MaxBotApi-Sandbox/1.0"
SECRET_HEADER = "X-Max-Bot-Api-Secret"  # noqa: S105 (a header name)


def dumps(value: Any) -> bytes:
    """JSON as the sandbox writes it (compact, UTF-8, ints exact)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class Upload:
    """One ``POST /uploads`` URL (one file each, FACTS §11)."""

    id: str
    type: str
    token: str | None = None  # video/audio: given in step 1
    done: bool = False
    name: str | None = None
    size: int = 0
    #: sends refused attachment.not.ready so far / how many to refuse
    refused: int = 0
    refuse: int = 0


@dataclass
class Store:
    """Everything the sandbox knows (guarded by :attr:`lock`)."""

    config: dict[str, Any]
    clock: Clock
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.buckets = TokenBucket(self.clock.now)
        self.deliveries = webhooks.DeliveryLog(2000, numbered=True)
        self.polled = threading.Condition(self.lock)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.subscriptions: list[dict[str, Any]] = []
            #: (marker, update) kept for GET /updates, oldest first
            self.queue: list[tuple[int, dict[str, Any]]] = []
            self.next_marker = int(self.config["first_marker"])
            self.committed = self.next_marker
            #: dialog chat id -> user id, and back
            self.dialogs: dict[int, int] = {}
            self.user_dialogs: dict[int, int] = {}
            self.users: dict[int, dict[str, Any]] = {}
            self.stopped: set[int] = set()
            self.started: dict[int, str | None] = {}
            self.sent: list[dict[str, Any]] = []
            self.answers: list[dict[str, Any]] = []
            #: callback_id -> {chat_id, user_id, payload} of the presses delivered
            self.callbacks: dict[str, dict[str, Any]] = {}
            self.uploads: dict[str, Upload] = {}
            self.tokens: dict[str, Upload] = {}
            self.counters: dict[str, int] = {}
            self.seq = itertools.count(116_328_147_937_082_782)
            self.deliveries.clear()
            self.buckets.reset()

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- the bot and its users -----------------------------------------------------------------

    def bot_user(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "user_id": cfg["bot_id"],
            "first_name": cfg["bot_name"],
            "username": cfg["bot_username"],
            "is_bot": True,
            "last_activity_time": self.now_ms(),
            "name": cfg["bot_name"],
        }

    def user(
        self, user_id: int, first_name: str | None = None, last_name: str | None = None
    ) -> dict[str, Any]:
        """A user as MAX shows one (no username for users: FACTS §5)."""
        known = self.users.setdefault(
            user_id,
            {
                "user_id": user_id,
                "first_name": first_name or f"User{user_id}",
                "last_name": last_name,
                "is_bot": False,
            },
        )
        if first_name:
            known["first_name"] = first_name
        if last_name is not None:
            known["last_name"] = last_name
        out = {k: v for k, v in known.items() if v is not None}
        out["last_activity_time"] = self.now_ms()
        out["name"] = " ".join(p for p in (known["first_name"], known.get("last_name")) if p)
        return out

    def dialog(self, user_id: int, chat_id: int | None = None) -> int:
        """The user's dialog with the bot (made on first sight)."""
        chat = self.user_dialogs.get(user_id) if chat_id is None else chat_id
        if chat is None:
            chat = DIALOG_BASE + user_id
        self.user_dialogs.setdefault(user_id, chat)
        self.dialogs.setdefault(chat, user_id)
        return chat

    def mid(self) -> str:
        return "mid." + secrets.token_hex(16)

    # -- long polling ----------------------------------------------------------------------

    def enqueue(self, update: dict[str, Any]) -> int:
        with self.lock:
            marker = self.next_marker
            self.next_marker += 1
            self.queue.append((marker, update))
            self.polled.notify_all()
            return marker

    def take(
        self, marker: int | None, limit: int, types: set[str] | None
    ) -> tuple[list[dict[str, Any]], int]:
        """Updates from ``marker`` on (earlier ones committed and dropped),
        and the marker to pass next (FACTS §3)."""
        with self.lock:
            if marker is not None:
                self.committed = max(self.committed, marker)
                self.queue = [(m, u) for m, u in self.queue if m >= self.committed]
            pending = [
                (m, u)
                for m, u in self.queue
                if m >= self.committed and (types is None or u.get("update_type") in types)
            ]
            if marker is None and self.config["updates_without_marker"] == "latest":
                pending = pending[-1:]
            chosen = pending[:limit]
            nxt = chosen[-1][0] + 1 if chosen else max(self.committed, marker or 0)
            return [u for _, u in chosen], nxt


class Hooks:
    """Posts updates to the bot's subscriptions (the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dispatcher = webhooks.Dispatcher(
            self._attempt, now=store.clock.now, name="max-webhook", workers=4
        )

    def publish(self, update: dict[str, Any], *, now: bool) -> list[dict[str, Any]]:
        """Post ``update`` to every subscription that takes its type (``now``:
        synchronously, the records returned), or keep it for ``GET /updates``
        when the bot has none."""
        store = self.store
        with store.lock:
            targets = [
                dict(s)
                for s in store.subscriptions
                if s.get("update_types") is None or update.get("update_type") in s["update_types"]
            ]
            if not store.subscriptions:
                store.enqueue(update)
                return []
        jobs = [
            webhooks.Job(
                store.clock.now(), data={"sub": s, "update": update, "first": store.clock.now()}
            )
            for s in targets
        ]
        if now:
            return self.dispatcher.deliver_now(jobs)
        self.dispatcher.submit(jobs)
        return []

    def _attempt(self, job: webhooks.Job) -> dict[str, Any]:
        store = self.store
        sub, update, first = job.data["sub"], job.data["update"], job.data["first"]
        with store.lock:
            cfg = store.config
            live = any(s["url"] == sub["url"] for s in store.subscriptions)
            timeout = float(cfg["webhook_timeout_s"])
            content_type = cfg["webhook_content_type"]
        base = {
            "url": sub["url"],
            "update_type": update.get("update_type"),
            "attempt": job.attempt,
            "time": store.clock.now(),
            "payload": update,
        }
        if not live:
            return store.deliveries.append(
                {**base, "status": None, "ok": False, "error": "unsubscribed"}
            )
        headers: dict[str, str | None] = {"Content-Type": content_type, "User-Agent": USER_AGENT}
        if sub.get("secret"):
            headers[SECRET_HEADER] = sub["secret"]
        outcome = webhooks.send(sub["url"], dumps(update), headers, timeout)
        # "any other status (204 included) ... counts as a failed delivery" (FACTS §2)
        ok = outcome.status == 200
        error = None if ok else (outcome.error or f"HTTP {outcome.status}")
        record = store.deliveries.append(
            {
                **base,
                "status": outcome.status,
                "ok": ok,
                "error": error,
                "answer": outcome.text if outcome.text is None else outcome.text[:2000],
            }
        )
        if not ok:
            self._retry(job, first)
        return record

    def _retry(self, job: webhooks.Job, first: float) -> None:
        store = self.store
        with store.lock:
            policy = store.config["retry"]
            squeeze = float(store.config["time_compression"])
        delay = float(policy["first_s"]) * float(policy["factor"]) ** (job.attempt - 1) / squeeze
        due = store.clock.now() + delay
        cutoff = first + float(policy["cutoff_s"]) / squeeze
        if job.attempt > int(policy["attempts"]) or due > cutoff:
            url = job.data["sub"]["url"]
            with store.lock:
                before = len(store.subscriptions)
                store.subscriptions = [s for s in store.subscriptions if s["url"] != url]
                if len(store.subscriptions) < before:
                    store.count("unsubscribed_after_failures")
            store.deliveries.append(
                {
                    "url": url,
                    "event": "unsubscribed",
                    "ok": False,
                    "attempt": job.attempt,
                    "time": store.clock.now(),
                    "error": "no successful answer within the retry window: "
                    "the subscription was deleted",
                }
            )
            return
        self.dispatcher.schedule(job.retry(due))
