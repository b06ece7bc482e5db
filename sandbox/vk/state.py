"""In-process state of the VK sandbox: communities, their Callback API servers,
users and their permission, the message history, random_id keys, limits.

Everything lives in one :class:`Store` guarded by one re-entrant lock (the
demo server is threaded). Nothing here does I/O: callback posts happen
outside the lock (:mod:`.callback`), so a bridge that calls ``messages.send``
while it handles an event cannot deadlock the sandbox.

* **Communities** come from the config (the top-level keys, then
  ``communities[]``); each has one Callback API **server** (:class:`Server`):
  its address, status (VK's ``unconfigured``, ``wait``, ``ok``, ``failed``),
  confirmation string, failures in a row and pause.
* **Permission** to write to a user is per (community, user): ``allowed``
  once the user wrote or sent ``message_allow``, ``denied`` after
  ``message_deny``; a user never seen is not allowed (error 901).
* **History**: every message of a (community, peer) conversation, inbound
  and outbound, with VK's ids: ``id`` per community (0 for inbound chat
  messages, FACTS §3) and ``conversation_message_id`` per peer.
* **random_id** keys: over the whole history, per (community, peer) or per
  community (``random_id_scope``), each naming the first send's ids.
"""

from __future__ import annotations

import random
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from ..core.clock import Clock
from ..core.ratelimit import RollingWindow
from ..core.webhooks import DeliveryLog
from .config import community_defaults

__all__ = ["Server", "Store", "CHAT_PEER_BASE", "is_chat", "new_event_id"]

#: peer ids of group chats are 2000000000 + chat_id (FACTS §3)
CHAT_PEER_BASE = 2_000_000_000

#: generated names for users the config does not name
_NAMES = (("Anna", "Ivanova"), ("Ivan", "Petrov"), ("Maria", "Smirnova"), ("Dmitry", "Kuznetsov"),
          ("Olga", "Popova"), ("Sergey", "Sokolov"), ("Elena", "Lebedeva"), ("Pavel", "Kozlov"))


def is_chat(peer_id: int) -> bool:
    return peer_id > CHAT_PEER_BASE


def new_event_id() -> str:
    """Callback event ids are 40 hex digits (corpus ``message_event_payload``)."""
    return secrets.token_hex(20)


@dataclass
class Server:
    """A community's Callback API server."""

    url: str | None
    confirmation: str
    status: str = "unconfigured"  # unconfigured | wait | ok | failed
    confirmed_at: float | None = None
    last_check: dict[str, Any] | None = None
    failures_in_row: int = 0
    paused_until: float = 0.0
    pauses: int = 0

    def dump(self, now: float) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "confirmation": self.confirmation,
            "confirmed_at": self.confirmed_at,
            "last_check": self.last_check,
            "failures_in_row": self.failures_in_row,
            "paused": self.paused_until > now,
            "paused_until": self.paused_until or None,
            "pauses": self.pauses,
        }


@dataclass
class Store:
    """Everything the sandbox remembers (see the module docstring)."""

    config: dict[str, Any]
    clock: Clock
    lock: threading.RLock = field(default_factory=threading.RLock)
    servers: dict[int, Server] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: (group_id, user_id) -> "allowed" | "denied"
    permissions: dict[tuple[int, int], str] = field(default_factory=dict)
    #: (group_id, peer_id) -> messages, oldest first
    history: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)
    next_id: dict[int, int] = field(default_factory=dict)
    next_cmid: dict[tuple[int, int], int] = field(default_factory=dict)
    #: (group_id, peer_id or 0, random_id) -> {"message_id", "conversation_message_id"}
    random_ids: dict[tuple[int, int, int], dict[str, int]] = field(default_factory=dict)
    #: the bridge's sends (GET /_sent), oldest first
    sent: list[dict[str, Any]] = field(default_factory=list)
    deliveries: DeliveryLog = field(default_factory=lambda: DeliveryLog(2000, numbered=True))
    #: message_event ids posted (POST /_button) -> the event and its answers
    button_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: one-shot errors (POST /_inject): [{"method", "error_code", "error_msg"?, "times"}]
    injected: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.windows = RollingWindow(now=self.clock.now)
        self.rng = random.Random(self.config.get("seed"))  # noqa: S311 (not crypto)
        self.sync_servers()
        self._seed_users()

    def now(self) -> float:
        return self.clock.now()

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def reset(self) -> None:
        with self.lock:
            self.servers.clear()
            self.permissions.clear()
            self.history.clear()
            self.next_id.clear()
            self.next_cmid.clear()
            self.random_ids.clear()
            self.sent.clear()
            self.deliveries.clear()
            self.button_events.clear()
            self.injected.clear()
            self.counters.clear()
            self.windows.reset()
            self.rng = random.Random(self.config.get("seed"))  # noqa: S311
            self.sync_servers()
            self._seed_users()

    # -- communities ------------------------------------------------------------------------

    def communities(self) -> list[dict[str, Any]]:
        cfg = self.config
        first = {k: cfg[k] for k in ("group_id", "name", "screen_name", "access_token",
                                     "secret", "confirmation", "server_url", "v")}
        more = [community_defaults(c, i) for i, c in enumerate(cfg["communities"])]
        return [first, *more]

    def community(self, group_id: int) -> dict[str, Any] | None:
        return next((c for c in self.communities() if c["group_id"] == group_id), None)

    def default_community(self) -> dict[str, Any]:
        return self.communities()[0]

    def find_community(self, selector: str) -> dict[str, Any] | None:
        """By group id (also "-<id>", "club<id>"), screen name or access token."""
        value = selector.strip()
        for prefix in ("club", "public", "-"):
            if value.startswith(prefix) and value[len(prefix):].isdigit():
                value = value[len(prefix):]
        for c in self.communities():
            if value == str(c["group_id"]) or value == c["screen_name"]:
                return c
        return self.token_community(selector)

    def token_community(self, token: str) -> dict[str, Any] | None:
        for c in self.communities():
            if secrets.compare_digest(c["access_token"].encode(), token.encode()):
                return c
        return None

    def sync_servers(self) -> None:
        """Servers follow the config: a new or changed address waits for confirmation."""
        with self.lock:
            live = set()
            for c in self.communities():
                gid = c["group_id"]
                live.add(gid)
                server = self.servers.get(gid)
                if server is None:
                    server = Server(url=c["server_url"], confirmation=c["confirmation"])
                    server.status = "wait" if c["server_url"] else "unconfigured"
                    self.servers[gid] = server
                    continue
                if not self.config["rotate_confirmation"]:
                    server.confirmation = c["confirmation"]
                if server.url != c["server_url"]:
                    server.url = c["server_url"]
                    server.status = "wait" if server.url else "unconfigured"
                    server.confirmed_at = None
                    server.failures_in_row = 0
                    server.paused_until = 0.0
                    if self.config["rotate_confirmation"]:
                        server.confirmation = f"{self.rng.getrandbits(32):08x}"
            for gid in set(self.servers) - live:
                del self.servers[gid]

    def confirmation_code(self, group_id: int) -> str:
        with self.lock:
            return self.servers[group_id].confirmation

    # -- users ----------------------------------------------------------------------------------

    def _seed_users(self) -> None:
        self.users.clear()
        for user in self.config["users"]:
            first, last = _NAMES[user["id"] % len(_NAMES)]
            self.users[user["id"]] = {
                "id": user["id"],
                "first_name": user.get("first_name") or first,
                "last_name": user.get("last_name") or last,
                "screen_name": user.get("screen_name") or f"id{user['id']}",
                "blacklisted": bool(user.get("blacklisted")),
                "privacy": bool(user.get("privacy")),
                "allowed": bool(user.get("allowed")),
            }

    def user(self, user_id: int) -> dict[str, Any]:
        """A known user, or one with a name generated from the id (not stored)."""
        with self.lock:
            known = self.users.get(user_id)
            if known is not None:
                return known
            first, last = _NAMES[user_id % len(_NAMES)]
            return {
                "id": user_id,
                "first_name": first,
                "last_name": last,
                "screen_name": f"id{user_id}",
                "blacklisted": False,
                "privacy": False,
                "allowed": False,
            }

    def remember_user(self, user_id: int, **fields: Any) -> dict[str, Any]:
        with self.lock:
            user = dict(self.user(user_id))
            user.update({k: v for k, v in fields.items() if v is not None})
            self.users[user_id] = user
            return user

    def user_by_screen_name(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            if name.startswith("id") and name[2:].isdigit():
                return self.user(int(name[2:]))
            return next((u for u in self.users.values() if u["screen_name"] == name), None)

    # -- permission ---------------------------------------------------------------------------

    def permission(self, group_id: int, user_id: int) -> str | None:
        with self.lock:
            state = self.permissions.get((group_id, user_id))
            if state is None and (self.user(user_id)["allowed"] or self.config["allow_all_users"]):
                return "allowed"
            return state

    def set_permission(self, group_id: int, user_id: int, state: str) -> None:
        with self.lock:
            self.permissions[(group_id, user_id)] = state

    # -- history --------------------------------------------------------------------------------

    def allocate(self, group_id: int, peer_id: int, inbound: bool) -> tuple[int, int]:
        """The next ``(id, conversation_message_id)`` in a conversation."""
        with self.lock:
            cmid = self.next_cmid.get((group_id, peer_id), 1)
            self.next_cmid[(group_id, peer_id)] = cmid + 1
            if inbound and is_chat(peer_id):
                return 0, cmid
            mid = self.next_id.get(group_id, 1)
            self.next_id[group_id] = mid + 1
            return mid, cmid

    def record_message(self, group_id: int, message: dict[str, Any]) -> None:
        """Keep a message of the conversation (ids seen push the counters on)."""
        with self.lock:
            peer = int(message.get("peer_id") or 0)
            self.history.setdefault((group_id, peer), []).append(message)
            mid, cmid = message.get("id"), message.get("conversation_message_id")
            if isinstance(mid, int) and mid >= self.next_id.get(group_id, 1):
                self.next_id[group_id] = mid + 1
            if isinstance(cmid, int) and cmid >= self.next_cmid.get((group_id, peer), 1):
                self.next_cmid[(group_id, peer)] = cmid + 1

    def learn_inbound(self, group_id: int, message: dict[str, Any]) -> None:
        """A customer's message: kept, and writing allows the community to answer."""
        with self.lock:
            self.record_message(group_id, message)
            sender, peer = message.get("from_id"), message.get("peer_id")
            if isinstance(peer, int) and 0 < peer and not is_chat(peer):
                # a personal dialog: its peer is the user (peer_id == from_id at VK;
                # the anonymised corpus has them differ, so both are let in)
                self.permissions[(group_id, peer)] = "allowed"
                if isinstance(sender, int) and sender > 0:
                    self.permissions[(group_id, sender)] = "allowed"

    def find_message(self, group_id: int, message_id: int) -> dict[str, Any] | None:
        with self.lock:
            for (gid, _), messages in self.history.items():
                if gid != group_id:
                    continue
                for message in messages:
                    if message.get("id") == message_id:
                        return message
            return None

    def chat_seen(self, group_id: int, peer_id: int) -> bool:
        with self.lock:
            return (group_id, peer_id) in self.history

    # -- random_id --------------------------------------------------------------------------------

    def random_key(self, group_id: int, peer_id: int, random_id: int) -> tuple[int, int, int]:
        scope_peer = peer_id if self.config["random_id_scope"] == "peer" else 0
        return (group_id, scope_peer, random_id)
