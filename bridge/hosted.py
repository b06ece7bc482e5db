"""Channels the bridge hosts itself: the customer's client talks to us.

A hosted channel (``ChannelAdapter.hosted``: a chat widget in a web page)
has no provider between the customer and the bridge: its client posts the
customer's messages to the channel's own endpoints (``ChannelAdapter
.blueprint``) and reads the conversation back from here. What this module
gives those endpoints — and all they may use of the core:

* :func:`account_for` finds the account of a public key;
* :func:`accept` journals what the client sent exactly as a webhook is
  journaled (the adapter's ``verify`` and ``edge``, one committed INSERT,
  the normaliser woken): the same guarantees, the same dedupe by delivery id;
* :func:`thread` reads the conversation (the SQL ``messages`` table is the
  record: the customer's messages once normalised, the replies from the
  moment they are stored), ordered by ``seq``, which a conversation's
  writers take under its row lock, so they commit in that order and a
  client resuming "after seq N" misses nothing;
* :func:`watch` wakes a waiting client when its thread changes: the
  pipelines call :func:`announce` after their commits, which publishes on
  Redis; one listener thread per process fans the news out to its waiters,
  so an open connection costs a thread waiting on an event, not a Redis
  connection or a poll of the database;
* :func:`keep_file` keeps an uploaded file, :func:`rate` is a shared limit.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bridge import files
from bridge.model import Attachment, Rate, RawDelivery, WebhookRequest
from bridge.registry import UnknownAdapter, channel_class, channel_kinds
from bridge.tables import ChannelAccount, Conversation, Message, MessageStatus

if TYPE_CHECKING:
    import redis

    from bridge.pipeline.inbound import AccountRef
    from bridge.runtime import Runtime
    from channel_adapters.base import ChannelAdapter

__all__ = [
    "Hosted",
    "HostedMessage",
    "Watch",
    "accept",
    "account_for",
    "announce",
    "announce_conversations",
    "hosted_kinds",
    "keep_file",
    "rate",
    "thread",
    "watch",
]

log = logging.getLogger(__name__)

#: the Redis pub/sub channel prefix of thread news
CHANNEL = "bridge:hosted:"
#: replies a client never sees: failed for good (consent withdrawn) or
#: refused by the channel's rules
_HIDDEN = (MessageStatus.FAILED.value, MessageStatus.REFUSED.value)


def hosted_kinds() -> frozenset[str]:
    """The registered channel kinds the bridge hosts itself."""
    kinds = set()
    for kind in channel_kinds():
        try:
            if channel_class(kind).hosted:
                kinds.add(kind)
        except UnknownAdapter:
            continue
    return frozenset(kinds)


# -- the account, and what its client sends ---------------------------------


@dataclass(frozen=True)
class Hosted:
    """An active account of a hosted channel, with its adapter."""

    account: AccountRef
    adapter: ChannelAdapter


def account_for(rt: Runtime, kind: str, key: str) -> Hosted | None:
    """The active ``kind`` account whose public key is ``key`` (cached
    briefly, like the webhooks': credentials are not decrypted per request)."""
    from bridge.webhooks import cached_account

    found = cached_account(rt, key)
    if found is None or found.account.kind != kind:
        return None
    return Hosted(found.account, found.adapter)


def accept(rt: Runtime, hosted: Hosted, webhook: WebhookRequest) -> list[RawDelivery]:
    """Journal what the client sent, as a webhook is: ``verify``, ``edge``,
    the committed INSERT, the normaliser woken (from this process's waker
    thread, after the caller answers). Raises the adapter's
    ``WebhookError`` (4xx) for the caller to answer with; anything the
    database raises propagates (the client retries with the same id)."""
    from bridge.pipeline.inbound.journal import record
    from bridge.webhooks import waker

    hosted.adapter.verify(webhook)
    deliveries = hosted.adapter.edge(webhook)
    record(rt, hosted.account, deliveries, received_at=webhook.received_at, waker=waker(rt))
    return deliveries


# -- the conversation, as its client reads it --------------------------------


@dataclass(frozen=True)
class HostedMessage:
    """One message of a hosted conversation, as its client shows it.

    ``key`` is an inbound message's delivery id (the id the client gave it
    when sending: the client replaces its own pending copy with this one);
    None for a reply. ``attachments`` are plain dicts (``kind``,
    ``file_name``, ``mime_type``, ``size``, ``url``: a kept file's link)."""

    seq: int
    uid: str
    direction: str
    text: str
    kind: str
    attachments: tuple[dict[str, Any], ...]
    sent_at: dt.datetime
    key: str | None
    status: str
    #: a reply's choices the client may press (``payload["buttons"]``,
    #: ``(id, label)``: the service layer's menu or rating); () otherwise
    buttons: tuple[tuple[str, str], ...] = ()


def thread(
    rt: Runtime, account_id: int, thread_id: str, *, after: int = 0, limit: int = 100
) -> list[HostedMessage]:
    """The conversation's messages with ``seq`` above ``after``, oldest
    first (empty while its first message is still in the journal)."""
    with rt.read_engine.connect() as conn:
        conversation_id = conn.scalar(
            select(Conversation.id).where(
                Conversation.channel_account_id == account_id,
                Conversation.external_thread_id == thread_id,
            )
        )
        if conversation_id is None:
            return []
        rows = conn.execute(
            select(
                Message.seq,
                Message.uid,
                Message.direction,
                Message.text,
                Message.kind,
                Message.payload,
                Message.sent_at,
                Message.dedupe_key,
                Message.status,
            )
            .where(Message.conversation_id == conversation_id, Message.seq > after)
            .order_by(Message.seq)
            .limit(limit)
        ).all()
    return [
        _hosted_message(rt, row)
        for row in rows
        if not (row.direction == "out" and row.status in _HIDDEN)
    ]


def _hosted_message(rt: Runtime, row: Any) -> HostedMessage:
    payload = row.payload or {}
    inbound = row.direction == "in"
    return HostedMessage(
        seq=int(row.seq),
        uid=str(row.uid),
        direction=str(row.direction),
        text=str(row.text or ""),
        kind=str(row.kind),
        attachments=tuple(_attachment(rt, a) for a in payload.get("attachments") or ()),
        sent_at=row.sent_at,
        key=str(row.dedupe_key) if inbound else None,
        status=str(row.status),
        buttons=()
        if inbound
        else tuple(
            (str(b[0]), str(b[1]))
            for b in payload.get("buttons") or ()
            if isinstance(b, (list, tuple)) and len(b) == 2
        ),
    )


def _attachment(rt: Runtime, data: dict[str, Any]) -> dict[str, Any]:
    ref = data.get("file_ref")
    url = data.get("url")
    if isinstance(ref, str) and ref.startswith(files.PREFIX):
        url = files.link(rt, ref[len(files.PREFIX) :]) or url
    return {
        "kind": data.get("kind"),
        "file_name": data.get("file_name"),
        "mime_type": data.get("mime_type"),
        "size": data.get("size"),
        "url": url,
    }


# -- news of a thread --------------------------------------------------------


def _topic(account_id: int, thread_id: str) -> str:
    return f"{account_id}:{thread_id}"


def announce(rt: Runtime, account_id: int, thread_ids: Iterable[str]) -> None:
    """After a commit that changed these threads of a hosted account: wake
    their clients. Best effort — a client also looks again at least every
    ``Watch`` timeout, so a lost publish costs latency, never a message."""
    try:
        pipe = rt.redis.pipeline(transaction=False)
        for thread_id in set(thread_ids):
            pipe.publish(CHANNEL + _topic(account_id, thread_id), b"1")
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 — Redis down: clients poll on their timeout
        log.warning("thread news not published: %s", type(exc).__name__)


def announce_conversations(rt: Runtime, conversation_ids: Iterable[int]) -> None:
    """:func:`announce` for conversations by id (the outbound side, which
    knows its conversations by id): only those of hosted channels."""
    ids = sorted(set(conversation_ids))
    kinds = hosted_kinds()
    if not ids or not kinds:
        return
    with rt.read_engine.connect() as conn:
        rows = conn.execute(
            select(Conversation.channel_account_id, Conversation.external_thread_id)
            .join(ChannelAccount, ChannelAccount.id == Conversation.channel_account_id)
            .where(Conversation.id.in_(ids), ChannelAccount.kind.in_(sorted(kinds)))
        ).all()
    by_account: dict[int, list[str]] = {}
    for account_id, thread_id in rows:
        by_account.setdefault(int(account_id), []).append(str(thread_id))
    for account_id, threads in by_account.items():
        announce(rt, account_id, threads)


class Watch:
    """One client's wait for news of its thread (:func:`watch`)."""

    def __init__(self, hub: _Hub, topic: str) -> None:
        self._hub = hub
        self.topic = topic
        self._event = threading.Event()

    def notify(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Block until news arrived since the last wait (or since the watch
        began), at most ``timeout`` seconds; True when there was news."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken


class _Hub:
    """This process's one Redis subscription, fanned out to its watches."""

    def __init__(self, connection: redis.Redis) -> None:
        self._redis = connection
        self._watches: dict[str, set[Watch]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.setdefault(watch.topic, set()).add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._listen, name="hosted-news", daemon=True
                )
                self._thread.start()

    def remove(self, watch: Watch) -> None:
        with self._lock:
            found = self._watches.get(watch.topic)
            if found is not None:
                found.discard(watch)
                if not found:
                    del self._watches[watch.topic]

    def count(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._watches.values())

    def _deliver(self, topic: str) -> None:
        with self._lock:
            waiting = list(self._watches.get(topic, ()))
        for watch in waiting:
            watch.notify()

    def _everyone(self) -> None:
        """After a lost subscription: news may have been missed, so every
        watch looks again."""
        with self._lock:
            waiting = [w for found in self._watches.values() for w in found]
        for watch in waiting:
            watch.notify()

    def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.psubscribe(CHANNEL + "*")
                pubsub.get_message(timeout=1.0)  # the subscription's confirmation
                self.listening.set()
                backoff = 0.5
                for item in pubsub.listen():
                    if item.get("type") != "pmessage":
                        continue
                    channel = item["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode("utf-8", "replace")
                    self._deliver(channel[len(CHANNEL) :])
            except Exception as exc:  # noqa: BLE001 — keep listening whatever Redis did
                self.listening.clear()
                log.warning("thread news listener lost Redis: %s", type(exc).__name__)
                self._everyone()
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)


_hubs: weakref.WeakKeyDictionary[Runtime, _Hub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def _hub(rt: Runtime) -> _Hub:
    with _hubs_lock:
        found = _hubs.get(rt)
        if found is None:
            found = _hubs[rt] = _Hub(rt.redis)
        return found


@contextmanager
def watch(rt: Runtime, account_id: int, thread_id: str) -> Iterator[Watch]:
    """Watch a thread for news. Enter it *before* reading the thread, so
    news committed between the read and the wait is not missed::

        with hosted.watch(rt, account.id, visitor) as news:
            while open:
                send(hosted.thread(rt, account.id, visitor, after=last))
                news.wait(15)
    """
    hub = _hub(rt)
    item = Watch(hub, _topic(account_id, thread_id))
    hub.add(item)
    # the process's first watch starts the subscription: news published
    # before it is confirmed would reach nobody
    hub.listening.wait(2.0)
    try:
        yield item
    finally:
        hub.remove(item)


def watching(rt: Runtime) -> int:
    """How many watches this process holds (the benchmark reads it)."""
    return _hub(rt).count()


# -- files and limits --------------------------------------------------------


def keep_file(rt: Runtime, tenant_id: int, attachment: Attachment) -> Attachment:
    """Keep ``attachment.content`` as a bridge file (its own transaction):
    the attachment returned names it (``file_ref = "file:<uid>"``)."""
    with rt.transaction() as session:
        return files.keep(session, tenant_id, attachment)


def rate(rt: Runtime, name: str, key: str, per_minute: float, burst: float) -> float | None:
    """Take one from the shared bucket ``name``/``key`` (``burst`` at most,
    refilled at ``per_minute``): None when allowed, else the seconds until
    it would be (a 429's ``Retry-After``)."""
    wait = rt.limiter.try_acquire(
        f"hosted:{name}:{key}", Rate(capacity=burst, per_second=per_minute / 60.0)
    )
    return None if wait <= 0 else wait
