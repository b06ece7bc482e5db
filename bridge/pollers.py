"""Pollers: the ingest edge of channel accounts that are pulled, not pushed.

A channel account is pulled when its adapter says so
(``ChannelAdapter.pulled``: an IMAP mailbox; a bot in long-polling mode for
a bridge the provider cannot reach). Its deliveries are fetched by a poller
and go into the same ingest journal a webhook writes to, so everything after
the journal is the same for both.

The pollers run in their own small process, ``bridge pollers``, which
``bridge worker`` starts beside its sweeper and which exits when that worker
dies — never as threads of the worker, where a busy job could delay a lease
renewal and hand the account to another machine (``bridge.worker``). In
that process one thread per pulled account:

1. holds the account's lease in Redis (``bridge:lock:poller:<id>``, TTL
   ``poll_lease_ttl``, renewed every third of it): one poller per account
   across all machines. A machine that dies stops renewing; a poller on
   another machine, trying every second, takes over once the lease expired.
   The lease's value names the worker holding it (``host:pid/...``);
2. calls ``adapter.poll(cursor, poll_timeout)`` with the cursor stored on
   the account (``channel_accounts.poll_cursor``);
3. journals what came back (:func:`bridge.pipeline.inbound.journal.record`:
   one committed INSERT per delivery, unique per account and delivery key,
   then the normaliser's wake-up);
4. only then stores the new cursor, and only while it still holds the lease
   and the stored cursor is still the one it polled with. A crash between 3
   and 4 makes the next poll fetch the same deliveries again, and the
   journal's unique key makes that a no-op: nothing is lost, nothing is
   stored twice.

Failures never make a poller spin: a ``RetryableError`` waits its
``retry_after`` or a backoff (1 s doubling to 30 s); a ``PermanentError`` or
``AuthError`` — the provider refuses until someone acts (a webhook set
elsewhere, a second poller of the same account outside this deployment, a
revoked token) — waits 30 s doubling to 5 min; anything else (the database
away) 5 s doubling to 60 s. Each distinct failure is logged once, and every
one is shown by ``bridge status`` (the poller's state in Redis,
``bridge:poller:<id>``): who polls, the last error, the next try.

The process looks for pulled accounts every ``Pollers.RESCAN`` seconds: a new
one gets its thread; a thread whose account was disconnected or switched to
its webhook stops after its current poll.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import select, update

from bridge.db import write_connection
from bridge.errors import AuthError, BridgeError, PermanentError, RetryableError
from bridge.locks import ConversationLock
from bridge.model import ReceiveMode
from bridge.pipeline.inbound.accept import AccountRef
from bridge.pipeline.inbound.journal import record
from bridge.registry import UnknownAdapter, channel_class, channel_kinds
from bridge.tables import ChannelAccount, ChannelStatus

if TYPE_CHECKING:
    from bridge.runtime import Runtime
    from channel_adapters.base import ChannelAdapter

__all__ = [
    "HOOKS",
    "AccountPoller",
    "PollerHooks",
    "Pollers",
    "backoff",
    "lease_name",
    "pulled_accounts",
    "report",
    "worker_name",
]

log = logging.getLogger(__name__)

LEASE_PREFIX = "bridge:lock:poller:"
STATUS_PREFIX = "bridge:poller:"


def lease_name(account_id: int) -> str:
    return f"{LEASE_PREFIX}{account_id}"


def _status_key(account_id: int) -> str:
    return f"{STATUS_PREFIX}{account_id}"


def worker_name(pid: int) -> str:
    """How a poller names its worker in the lease and in ``bridge status``
    (the same ``host:pid`` as the worker's heartbeat)."""
    return f"{socket.gethostname()}:{pid}"


@dataclass
class PollerHooks:
    """A test seam, empty in production: callables run right after a
    poll's deliveries are committed to the journal and before its cursor is
    stored (a test makes one raise: the crash between the two)."""

    after_record: list[Callable[[], None]] = field(default_factory=list)


HOOKS = PollerHooks()


def backoff(exc: BaseException, failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: the far
    side's ``retry_after`` when it gave one, else a doubling wait with
    jitter, longer for what needs a person than for what passes by
    itself."""
    if isinstance(exc, RetryableError):
        if exc.retry_after is not None:
            return min(max(float(exc.retry_after), 0.5), 300.0)
        base, cap = 1.0, 30.0
    elif isinstance(exc, (PermanentError, AuthError)):
        base, cap = 30.0, 300.0
    else:
        base, cap = 5.0, 60.0
    wait: float = min(cap, base * 2.0 ** max(0, min(failures, 20) - 1))
    return wait * random.uniform(0.8, 1.0)  # noqa: S311 — jitter, not a secret


def _pullable_kinds() -> list[str]:
    kinds = []
    for kind in channel_kinds():
        try:
            cls = channel_class(kind)
        except UnknownAdapter:
            continue
        if ReceiveMode.POLLING in cls.modes:
            kinds.append(kind)
    return kinds


def pulled_accounts(runtime: Runtime, tenant_id: int | None = None) -> dict[int, str]:
    """The active channel accounts a poller must fetch for: id -> kind
    (read from each account's settings; no credentials are decrypted)."""
    kinds = _pullable_kinds()
    if not kinds:
        return {}
    query = select(ChannelAccount.id, ChannelAccount.kind, ChannelAccount.settings).where(
        ChannelAccount.status == ChannelStatus.ACTIVE, ChannelAccount.kind.in_(kinds)
    )
    if tenant_id is not None:
        query = query.where(ChannelAccount.tenant_id == tenant_id)
    with runtime.read_engine.connect() as conn:
        rows = conn.execute(query.order_by(ChannelAccount.id)).all()
    return {
        int(row.id): str(row.kind)
        for row in rows
        if channel_class(row.kind).receive_mode(row.settings) is ReceiveMode.POLLING
    }


@dataclass
class _Loaded:
    ref: AccountRef
    adapter: ChannelAdapter
    cursor: str | None


class AccountPoller:
    """One pulled account's poller: a thread that contends for the
    account's lease and, while it holds it, polls, journals and stores the
    cursor (the module docstring)."""

    #: how often (s) a poller without the lease tries to take it
    CONTEND_EVERY = 1.0

    def __init__(self, runtime: Runtime, account_id: int, *, worker: str) -> None:
        self.runtime = runtime
        self.account_id = account_id
        self.worker = worker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease: ConversationLock | None = None
        self._renewer: threading.Thread | None = None
        self._held = threading.Event()  # set while a lease is held
        self._adapter: ChannelAdapter | None = None
        self._fingerprint: Any = None
        self._reported: str | None = None
        self.fetched = 0

    # -- the thread ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.run, name=f"poller:{self.account_id}", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the thread to stop after its current poll (it stores no
        cursor after this)."""
        self._stop.set()
        self._held.clear()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def release(self) -> None:
        """Give the lease up now (the process is exiting: another machine
        takes over at once instead of after the TTL), even while the thread
        still waits on its poll; it stores no cursor after :meth:`stop`."""
        self.stop()
        renewer = self._renewer
        if renewer is not None:
            renewer.join(timeout=5)
        lease = self._lease
        if lease is not None:
            lease.release()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._contend():
                    return
            except Exception:  # noqa: BLE001 — the poller must outlive a bad turn
                log.exception("poller of channel account %s failed", self.account_id)
                self._stop.wait(5.0)

    def _contend(self) -> bool:
        """Take the lease and poll while it is held; False when the account
        is no longer pulled (the thread ends)."""
        settings = self.runtime.settings
        lease = ConversationLock(
            self.runtime.redis, lease_name(self.account_id), settings.poll_lease_ttl
        )
        lease.token = f"{self.worker}/{secrets.token_hex(8)}"
        try:
            taken = lease.acquire()
        except (redis.RedisError, OSError):
            taken = False
        if not taken:
            self._stop.wait(self.CONTEND_EVERY)
            return True
        if self._stop.is_set():  # stopped while taking it
            lease.release()
            return False
        self._lease = lease
        self._held.set()
        self._renewer = threading.Thread(
            target=self._renew, args=(lease,), name=f"lease:{lease.name}", daemon=True
        )
        self._renewer.start()
        try:
            return self._hold(lease)
        finally:
            self._held.clear()
            self._renewer.join(timeout=5)
            lease.release()
            self._lease = None

    def _renew(self, lease: ConversationLock) -> None:
        """The lease's keepalive: stops with the holding (a renewal after
        :meth:`release` would take the lease back for a dying process)."""
        interval = min(lease.ttl_ms / 3000.0, 2.0)
        while self._held.is_set() and not self._stop.is_set():
            if not lease.renew():
                return
            deadline = time.monotonic() + interval
            while self._held.is_set() and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._stop.wait(min(left, 0.2))

    def _hold(self, lease: ConversationLock) -> bool:
        log.info("polling channel account %s here (%s)", self.account_id, self.worker)
        since = time.time()
        self._status("polling", since=since)
        failures = 0
        while not self._stop.is_set() and not lease.lost.is_set():
            try:
                fetched = self.step(lease)
            except Exception as exc:  # noqa: BLE001 — sorted by backoff(), reported
                if not self._still_pulled():
                    return False  # switched or disconnected mid-poll: not a failure
                failures += 1
                wait = backoff(exc, failures)
                self._failed(exc, wait, since)
                self._stop.wait(wait)
                continue
            if fetched is None:
                return False
            if failures:
                log.info("poller of channel account %s recovered", self.account_id)
                self._reported = None
            failures = 0
            self._status("polling", since=since)
        if lease.lost.is_set():
            log.warning("poller of channel account %s lost its lease", self.account_id)
        return True

    # -- one poll ----------------------------------------------------------------

    def step(self, lease: ConversationLock | None = None) -> int | None:
        """One poll: fetch, journal, then store the cursor. Returns how many
        deliveries came back (new or not), None when the account is no
        longer pulled. Raises what the adapter or the database raised."""
        loaded = self._load()
        if loaded is None:
            return None
        result = loaded.adapter.poll(loaded.cursor, self.runtime.settings.poll_timeout)
        if result.deliveries:
            record(self.runtime, loaded.ref, result.deliveries)
        for hook in HOOKS.after_record:
            hook()
        self.fetched += len(result.deliveries)
        held = lease is None or not lease.lost.is_set()
        if held and not self._stop.is_set() and result.cursor != loaded.cursor:
            _store_cursor(self.runtime, self.account_id, loaded.cursor, result.cursor)
        return len(result.deliveries)

    def _load(self) -> _Loaded | None:
        """The account's adapter (rebuilt only when its row changed) and its
        stored cursor; None when it is gone, disconnected or not pulled."""
        runtime = self.runtime
        with runtime.transaction() as session:
            account = session.get(ChannelAccount, self.account_id)
            if account is None or account.status != ChannelStatus.ACTIVE:
                return None
            try:
                cls = channel_class(account.kind)
            except UnknownAdapter:
                return None
            if cls.receive_mode(account.settings) is not ReceiveMode.POLLING:
                return None
            fingerprint = (account.credentials, json.dumps(account.settings, sort_keys=True))
            if self._adapter is None or fingerprint != self._fingerprint:
                self._adapter = runtime.channel_adapter(account)
                self._fingerprint = fingerprint
            ref = AccountRef(
                account.id,
                account.tenant_id,
                account.kind,
                *runtime.ingest_view(account.tenant_id),
            )
            return _Loaded(ref, self._adapter, account.poll_cursor)

    def _still_pulled(self) -> bool:
        try:
            return self._load() is not None
        except Exception:  # noqa: BLE001 — the database away: keep the poller
            return True

    # -- what bridge status shows ----------------------------------------------------

    def _failed(self, exc: BaseException, wait: float, since: float) -> None:
        if isinstance(exc, BridgeError):
            text = exc.message or type(exc).__name__
            if exc.status is not None and str(exc.status) not in text:
                text = f"{text} (HTTP {exc.status})"
        else:
            text = type(exc).__name__  # the type only: a message may quote data
        state = "retrying" if isinstance(exc, RetryableError) else "failing"
        if text != self._reported:
            self._reported = text
            if isinstance(exc, BridgeError):
                log.warning(
                    "poller of channel account %s: %s; next try in %.0f s",
                    self.account_id,
                    text,
                    wait,
                )
            else:
                log.error(
                    "poller of channel account %s failed; next try in %.0f s",
                    self.account_id,
                    wait,
                    exc_info=exc,
                )
        self._status(state, since=since, error=text, retry_in=wait)

    def _status(
        self,
        state: str,
        *,
        since: float,
        error: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        now = time.time()
        data = {
            "worker": self.worker,
            "state": state,
            "since": since,
            "at": now,
            "fetched": self.fetched,
            "error": error,
            "retry_at": now + retry_in if retry_in is not None else None,
        }
        settings = self.runtime.settings
        ttl = int(settings.poll_timeout + settings.poll_lease_ttl + 60 + (retry_in or 0))
        try:
            self.runtime.redis.set(_status_key(self.account_id), json.dumps(data), ex=ttl)
        except (redis.RedisError, OSError):
            pass  # only what bridge status shows


def _store_cursor(runtime: Runtime, account_id: int, old: str | None, new: str | None) -> bool:
    """Compare-and-set: a poller that lost its lease meanwhile (its
    successor stored a later cursor) cannot move the cursor back."""
    current = ChannelAccount.poll_cursor
    with write_connection(runtime.engine) as conn:
        done = conn.execute(
            update(ChannelAccount)
            .where(
                ChannelAccount.id == account_id,
                current.is_(None) if old is None else current == old,
            )
            .values(poll_cursor=new)
        )
    return bool(done.rowcount)


class Pollers:
    """Every pulled account's :class:`AccountPoller`, kept in step with the
    database by a rescan every :attr:`RESCAN` seconds."""

    RESCAN = 5.0

    def __init__(self, runtime: Runtime, *, worker: str) -> None:
        self.runtime = runtime
        self.worker = worker
        self.pollers: dict[int, AccountPoller] = {}
        #: pollers told to stop whose thread may still wait on its poll
        self._retiring: list[AccountPoller] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bridge-pollers", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.rescan()
            except Exception:  # noqa: BLE001 — the next rescan tries again
                log.exception("pollers: looking for pulled accounts failed")
            self._stop.wait(self.RESCAN)

    def rescan(self) -> set[int]:
        """Start a poller for each pulled account without a live one, stop
        those whose account is no longer pulled; the accounts polled."""
        wanted = pulled_accounts(self.runtime)
        for account_id in wanted:
            current = self.pollers.get(account_id)
            if current is None or not current.alive:
                poller = AccountPoller(self.runtime, account_id, worker=self.worker)
                self.pollers[account_id] = poller
                if not self._stop.is_set():
                    poller.start()
        for account_id in list(self.pollers):
            if account_id not in wanted:
                retired = self.pollers.pop(account_id)
                retired.stop()
                self._retiring.append(retired)
        self._retiring = [p for p in self._retiring if p.alive]
        return set(wanted)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every poller and give the leases up: a poller still waiting
        on its long poll is left to die with the process."""
        self._stop.set()
        pollers = [*self.pollers.values(), *self._retiring]
        for poller in pollers:
            poller.stop()
        deadline = time.monotonic() + timeout
        for poller in pollers:
            poller.join(max(0.0, deadline - time.monotonic()))
        for poller in pollers:
            poller.release()
        if self._thread is not None:
            self._thread.join(timeout=1)


# -- for bridge status ------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def report(runtime: Runtime, tenant_id: int | None = None) -> list[dict[str, Any]]:
    """Each pulled account's poller: which worker holds it (None: nobody
    does, no worker runs pollers), its state and its last error."""
    out = []
    for account_id, kind in pulled_accounts(runtime, tenant_id).items():
        entry: dict[str, Any] = {
            "account": account_id,
            "kind": kind,
            "modes": [m.value for m in channel_class(kind).modes],
            "worker": None,
            "state": "stopped",
            "error": None,
            "retry_in_s": None,
            "fetched": None,
        }
        try:
            holder = _text(runtime.redis.get(lease_name(account_id)))
            raw = _text(runtime.redis.get(_status_key(account_id)))
        except (redis.RedisError, OSError) as exc:
            entry.update(state="unknown", error=f"Redis unreachable ({type(exc).__name__})")
            out.append(entry)
            continue
        status = json.loads(raw) if raw else {}
        if holder is not None:
            worker = holder.rsplit("/", 1)[0]
            entry.update(worker=worker, state="polling")
            if status.get("worker") == worker:
                entry["state"] = status.get("state") or "polling"
                entry["error"] = status.get("error")
                entry["fetched"] = status.get("fetched")
                retry_at = status.get("retry_at")
                if retry_at is not None:
                    entry["retry_in_s"] = round(max(0.0, float(retry_at) - time.time()), 1)
        out.append(entry)
    return out
