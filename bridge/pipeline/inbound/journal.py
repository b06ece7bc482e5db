"""The ingest journal: what a channel delivered, stored raw before anything
parses it (the inbox pattern of Stripe- and Svix-style receivers).

Two halves:

* :func:`record` — the webhook's (or a poller's) one write. The verified
  deliveries its adapter's edge split the request into go into
  ``deliveries`` with one INSERT, a redelivery (same account and delivery
  key) being a no-op, committed before the 2xx; then a wake-up for the
  normaliser. No ORM session and no parsing on this path.
* :func:`run_normaliser` — a worker job, one account at a time under a
  lease: takes the account's ``new`` rows in journal order, parses each with
  the adapter, and in one transaction stores their events as
  :func:`~bridge.pipeline.inbound.accept.accept` does (conversation,
  sequence number, outbox bump) and marks the rows ``normalised``,
  ``ignored`` or ``rejected`` (with a reason code). A crash anywhere before
  that commit leaves the rows ``new``: they are parsed again, and the
  messages' unique keys keep the effect exactly-once.

The wake-up is a hint. A lost one (Redis wiped, the web process killed
between its commit and the push) costs a few seconds: the sweeper wakes the
normaliser for any ``new`` row older than ``journal_grace``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from bridge import metrics
from bridge.errors import PayloadError
from bridge.locks import ConversationLock
from bridge.model import (
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    OutboundStatus,
    RawDelivery,
    utcnow,
)
from bridge.outbox import IN
from bridge.pipeline.inbound.accept import (
    AcceptResult,
    AccountRef,
    accept_in,
    acknowledgement_plan,
    enqueue_jobs,
    look,
)
from bridge.tables import ChannelAccount, Delivery, DeliveryState

if TYPE_CHECKING:
    from bridge.runtime import Runtime
    from channel_adapters.base import ChannelAdapter

__all__ = [
    "Waker",
    "HOOKS",
    "LATE_AFTER",
    "JournalHooks",
    "Reason",
    "counts",
    "delivery_key",
    "drop_old_bodies",
    "normalise_pending",
    "record",
    "reparse",
    "run_normaliser",
    "sweep_journal",
    "wake",
]

log = logging.getLogger(__name__)

#: the longest delivery key stored as it is; a longer one is stored hashed
MAX_KEY = 255
#: rows a normaliser parses and commits together (one SQLite write lock
#: held per batch: the webhooks' INSERTs wait behind it, so keep it short)
BATCH = 10
#: how long (ms) a wake flag outlives a job that was lost before it ran
WAKE_FLAG_MS = 10_000
#: a delivery normalised this long after it arrived is marked late in the CRM
LATE_AFTER = dt.timedelta(minutes=10)


class Reason:
    """Reason codes of ``rejected`` and ``ignored`` rows."""

    #: the adapter's parser refused the body (PayloadError)
    UNPARSEABLE = "unparseable"
    #: the parser failed unexpectedly (a bug, a payload shape it does not
    #: know yet): kept for ``bridge reparse`` after the fix
    PARSER_ERROR = "parser_error"
    #: the delivery carried nothing for a customer thread
    NO_THREAD = "no_thread"
    #: the channel account was deleted before its deliveries were parsed
    NO_ACCOUNT = "no_account"


def delivery_key(key: str) -> str:
    """The key as stored: a key longer than the column is hashed (two long
    keys differing only past the limit must not collide)."""
    if len(key) <= MAX_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class JournalHooks:
    """A test seam, empty in production: callables a test harness runs at
    the journal's crash points (``bench.chaos`` makes the web process exit
    just before or after the journal commit, so the channel gets no 2xx and
    redelivers; tests make the normaliser fail before its commit)."""

    before_commit: list[Callable[[], None]] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    before_normalised_commit: list[Callable[[], None]] = field(default_factory=list)


HOOKS = JournalHooks()

# -- record: the webhook's one write -------------------------------------------

# One statement per delivery, written once per dialect; a redelivery (same
# account and key) inserts nothing (its rowcount is 0).
_COLUMNS = (
    "tenant_id",
    "channel_account_id",
    "delivery_key",
    "received_at",
    "body",
    "facts",
    "state",
    "attempts",
)
# (the column names are this module's constants, never input: S608)
_INSERT_SQL = {
    "sqlite": "INSERT INTO deliveries ({cols}) VALUES ({qmarks}) "  # noqa: S608
    "ON CONFLICT (channel_account_id, delivery_key) DO NOTHING".format(
        cols=", ".join(_COLUMNS), qmarks=", ".join("?" * len(_COLUMNS))
    ),
    "postgresql": "INSERT INTO deliveries ({cols}) VALUES ({named}) "  # noqa: S608
    "ON CONFLICT (channel_account_id, delivery_key) DO NOTHING".format(
        cols=", ".join(_COLUMNS), named=", ".join(f"%({c})s" for c in _COLUMNS)
    ),
}


class _Binder:
    """Each column's own bind processor for the dialect (the format the ORM
    writes: SQLite's datetime strings, JSON), looked up once."""

    def __init__(self, dialect: Any) -> None:
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for name in _COLUMNS:
            column_type = Delivery.__table__.c[name].type
            processor = column_type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor
        self.positional = dialect.name == "sqlite"

    def params(self, row: dict[str, Any]) -> Any:
        for name, processor in self.processors.items():
            row[name] = processor(row[name])
        return tuple(row[c] for c in _COLUMNS) if self.positional else row


_BINDERS: dict[str, _Binder] = {}


def record(
    runtime: Runtime,
    account: AccountRef,
    deliveries: Sequence[RawDelivery],
    *,
    received_at: dt.datetime | None = None,
    waker: Waker | None = None,
) -> int:
    """Journal ``deliveries`` for ``account`` in one committed transaction
    and wake the normaliser — here, or from ``waker``'s thread when given
    (the web process's). Returns how many were new (a redelivery is 0).
    Raises whatever the database raises: the caller answers non-2xx and the
    provider redelivers."""
    if not deliveries:
        return 0
    writer = runtime.raw_writer
    binder = _BINDERS.get(writer.dialect)
    if binder is None:
        binder = _BINDERS[writer.dialect] = _Binder(writer.engine.dialect)
    now = received_at or utcnow()
    params = [
        binder.params(
            {
                "tenant_id": account.tenant_id,
                "channel_account_id": account.id,
                "delivery_key": delivery_key(d.key),
                "received_at": now,
                "body": d.body,
                "facts": {"headers": dict(d.headers)} if d.headers else {},
                "state": DeliveryState.NEW.value,
                "attempts": 0,
            }
        )
        for d in deliveries
    ]
    sql = _INSERT_SQL[writer.dialect]

    def insert(cursor: Any) -> int:
        inserted = 0
        for row in params:
            cursor.execute(sql, row)
            inserted += cursor.rowcount
        for hook in HOOKS.before_commit:
            hook()
        return inserted

    if len(params) == 1 and not HOOKS.before_commit:
        # the common case, one delivery: one statement in autocommit
        inserted = writer.run_statement(sql, params[0])
    else:
        inserted = writer.run(insert)
    for hook in HOOKS.after_commit:
        hook()
    metrics.ingested(runtime.redis, account.kind, account.tenant_id, len(deliveries), inserted)
    if inserted:
        if waker is not None:
            waker.soon(account.id)
        else:
            wake(runtime, account.id)
    return inserted


def _wake_flag(account_id: int) -> str:
    return f"bridge:journal:wake:{account_id}"


def wake(runtime: Runtime, account_id: int, *, force: bool = False) -> bool:
    """Enqueue the account's normaliser unless a wake-up is already pending
    (a burst of deliveries costs one job, not one per delivery). Never
    raises: a lost wake-up is the sweeper's to make up for."""
    from bridge.jobs import enqueue_normaliser

    try:
        flag = _wake_flag(account_id)
        if not force and not runtime.redis.set(flag, 1, nx=True, px=WAKE_FLAG_MS):
            return False
    except OSError:
        return False
    except Exception as exc:  # redis.RedisError without importing redis here
        log.warning("journal wake-up for account %s not sent (%s)", account_id, type(exc).__name__)
        return False
    return enqueue_normaliser(runtime.queues, account_id, timeout=runtime.settings.job_timeout)


class Waker:
    """Wakes the normaliser from a thread of its own, for the web process.

    The request that committed a delivery only names its account here and
    answers: no Redis round trip before its 2xx (a ``SET NX`` and its
    blocking read were a third of the CPU the webhook spent over storing
    the bytes, bench.ingest), and the deliveries many request threads
    commit while one wake-up is being sent cost one more, not one each.
    Losing a wake-up (the process dies before this thread ran) loses
    nothing: the sweeper wakes every account whose ``new`` rows are older
    than ``BRIDGE_JOURNAL_GRACE``.

    Every delivery gets a wake-up attempt after its commit (the normaliser
    clears the flag when it starts and looks for new rows once more when it
    stops, so one sent before the commit might not do). Passes are ``GAP``
    apart: an idle bridge wakes at once, a busy one at most every ``GAP``
    per process, for everything committed meanwhile.
    """

    #: seconds between two passes of the waker's thread
    GAP = 0.01

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._pid = -1
        self._cond = threading.Condition()
        self._pending: set[int] = set()
        self._busy = False

    def soon(self, account_id: int) -> None:
        """Wake ``account_id``'s normaliser shortly (never raises)."""
        if self._pid != os.getpid():
            self._start()  # first use in this process (a forked web worker)
        with self._cond:
            idle = not self._pending and not self._busy
            self._pending.add(account_id)
            if idle:
                self._cond.notify()  # else the thread finds it on its next pass

    def _start(self) -> None:
        # a fresh condition: one inherited through fork may be held by a
        # thread that does not exist here
        self._cond = threading.Condition()
        self._pending = set()
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="journal-waker", daemon=True).start()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                self._busy = False
                cond.notify_all()
                while not self._pending:
                    cond.wait()
                accounts, self._pending = self._pending, set()
                self._busy = True
            for account_id in sorted(accounts):
                try:
                    wake(self.runtime, account_id)
                except Exception:  # noqa: BLE001 — this thread outlives a bad wake-up
                    log.warning("journal wake-up for account %s not sent", account_id)
            time.sleep(self.GAP)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every wake-up asked for so far was sent (tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)


# -- the normaliser: a worker job ---------------------------------------------------


def lock_name(account_id: int) -> str:
    return f"bridge:lock:journal:{account_id}"


_NEW_ROWS = (
    select(
        Delivery.id,
        Delivery.delivery_key,
        Delivery.body,
        Delivery.facts,
        Delivery.received_at,
        Delivery.attempts,
    )
    .where(
        Delivery.channel_account_id == bindparam("account"),
        Delivery.state == DeliveryState.NEW.value,
    )
    .order_by(Delivery.id)
    .limit(bindparam("limit"))
)
_HAS_NEW = (
    select(Delivery.id)
    .where(
        Delivery.channel_account_id == bindparam("account"),
        Delivery.state == DeliveryState.NEW.value,
    )
    .limit(1)
)
_MARK = (
    update(Delivery)
    .where(
        Delivery.id.in_(bindparam("ids", expanding=True)),
        Delivery.state == DeliveryState.NEW.value,
    )
    .values(
        state=bindparam("b_state"),
        reason=bindparam("b_reason"),
        detail=bindparam("b_detail"),
        normalised_at=bindparam("b_at"),
        attempts=Delivery.attempts + 1,
    )
)


class _LeaseLost(Exception):
    pass


def run_normaliser(
    runtime: Runtime, account_id: int, *, handoff: list[tuple[str, int, str]] | None = None
) -> str:
    """Normalise every ``new`` delivery of the account, in journal order.

    Holds the account's lease while it works; a job that finds the lease
    held returns at once — the holder looks for new rows once more after
    it lets the lease go, so a row committed meanwhile is never stranded.

    The jobs the stored messages call for are enqueued after each commit.
    With ``handoff`` (a list), a run whose whole work called for one
    conversation's sync job (a lone message) puts that job there instead of
    enqueueing it: the caller runs it once the lease is let go
    (:func:`bridge.jobs.normalise_account`). Its outbox row says pending
    with that job id meanwhile, so a caller that dies leaves it to the
    sweeper, as a lost job would.
    """
    try:
        runtime.redis.delete(_wake_flag(account_id))
    except Exception:  # noqa: BLE001 — the flag only dedupes wake-ups
        log.debug("wake flag not cleared for account %s", account_id)
    done = 0
    while True:
        lock = ConversationLock(runtime.redis, lock_name(account_id), runtime.settings.lock_ttl)
        if not lock.acquire():
            return "busy" if not done else f"normalised {done}"
        try:
            with lock.keepalive():
                done += _drain(runtime, account_id, lock, handoff)
        except _LeaseLost:
            return "lease-lost"
        finally:
            lock.release()
        if not _has_new(runtime, account_id):
            return f"normalised {done}"


def normalise_pending(runtime: Runtime) -> int:
    """Run the normaliser here, now, for every account with ``new`` rows
    (``bridge reparse`` without a worker; tests). Returns the accounts run."""
    with runtime.read_engine.connect() as conn:
        accounts = list(
            conn.scalars(
                select(Delivery.channel_account_id)
                .where(Delivery.state == DeliveryState.NEW.value)
                .distinct()
            )
        )
    for account_id in accounts:
        run_normaliser(runtime, int(account_id))
    return len(accounts)


def _has_new(runtime: Runtime, account_id: int) -> bool:
    with runtime.read_engine.connect() as conn:
        return conn.scalar(_HAS_NEW, {"account": account_id}) is not None


def _drain(
    runtime: Runtime,
    account_id: int,
    lock: ConversationLock,
    handoff: list[tuple[str, int, str]] | None = None,
) -> int:
    context = _account(runtime, account_id)
    done = 0
    while True:
        if lock.lost.is_set():
            raise _LeaseLost
        with runtime.read_engine.connect() as conn:
            rows = list(conn.execute(_NEW_ROWS, {"account": account_id, "limit": BATCH}))
        if not rows:
            return done
        if context is None:
            _mark_all(runtime, rows, DeliveryState.REJECTED, Reason.NO_ACCOUNT)
        else:
            _normalise(runtime, context[0], context[1], rows, lock, handoff)
        done += len(rows)
        if len(rows) < BATCH:
            # all there was: a row committed since is found by the caller's
            # look once the lease is let go (run_normaliser), not by a read here
            return done


_ACCOUNT = select(*ChannelAccount.__table__.c).where(
    ChannelAccount.__table__.c.id == bindparam("account")
)


def _account(runtime: Runtime, account_id: int) -> tuple[AccountRef, ChannelAdapter] | None:
    """The account and its parser (kept by the runtime while the account's
    credentials and settings stay the same): one row on a Core connection,
    read into a transient ``ChannelAccount`` that no session ever holds."""
    with runtime.read_engine.connect() as conn:
        row = conn.execute(_ACCOUNT, {"account": account_id}).first()
    if row is None:
        return None
    account = ChannelAccount(**row._mapping)
    ref = AccountRef(
        account.id, account.tenant_id, account.kind, *runtime.ingest_view(account.tenant_id)
    )
    return ref, runtime.channel_parser(account)


@dataclass
class _Parsed:
    row: Row[Any]
    events: list[InboundEvent] | None = None
    state: DeliveryState = DeliveryState.NORMALISED
    reason: str | None = None
    detail: str | None = None


def _parse(adapter: ChannelAdapter, row: Row[Any], now: dt.datetime) -> _Parsed:
    headers = (row.facts or {}).get("headers") or {}
    if row.body is None:  # retention dropped it: nothing left to parse
        return _Parsed(row, None, DeliveryState.REJECTED, Reason.UNPARSEABLE, "body dropped")
    request = RawDelivery(row.delivery_key, bytes(row.body), headers).request(
        _aware(row.received_at)
    )
    try:
        events = adapter.parse(request)
    except PayloadError as exc:
        return _Parsed(row, None, DeliveryState.REJECTED, Reason.UNPARSEABLE, exc.message[:500])
    except Exception as exc:  # noqa: BLE001 — a parser bug must not lose the delivery
        # The type only: a message may quote the payload (personal data).
        log.warning("%s parser failed on delivery %s: %s", adapter.kind, row.id, type(exc).__name__)
        return _Parsed(row, None, DeliveryState.REJECTED, Reason.PARSER_ERROR, type(exc).__name__)
    if not any(isinstance(e, InboundMessage) for e in events):
        kinds = sorted(
            {e.event_type for e in events if isinstance(e, IgnoredEvent)}
            | {f"outbound_{e.status}" for e in events if isinstance(e, OutboundStatus)}
        )
        reason = ",".join(kinds)[:64] if kinds else Reason.NO_THREAD
        # thread migrations are stored (they re-key a conversation) yet are
        # no customer message: the row says ignored
        return _Parsed(row, events, DeliveryState.IGNORED, reason)
    late = row.attempts > 0 or now - _aware(row.received_at) > LATE_AFTER
    return _Parsed(row, [_marked(e, late) for e in events])


def _marked(event: InboundEvent, late: bool) -> InboundEvent:
    if late and isinstance(event, InboundMessage):
        from dataclasses import replace

        return replace(event, late=True)
    return event


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _normalise(
    runtime: Runtime,
    ref: AccountRef,
    adapter: ChannelAdapter,
    rows: Sequence[Row[Any]],
    lock: ConversationLock,
    handoff: list[tuple[str, int, str]] | None = None,
) -> None:
    now = utcnow()
    parsed = [_parse(adapter, row, now) for row in rows]
    attempt = 0
    while True:
        attempt += 1
        try:
            result = _commit(runtime, ref, parsed, lock)
            break
        except IntegrityError:
            # another account's normaliser created the same person a moment
            # before (identities are unique per tenant): again, it is found
            if attempt >= 3:
                raise
            log.info("journal race on account %s, retrying (attempt %d)", ref.id, attempt)
    metrics.parsed(runtime.redis, ref.kind, [(p.state.value, p.row.received_at) for p in parsed])
    if handoff is not None:
        # a lone conversation's sync, the first work of this run: the caller's
        if not handoff and len(result.jobs) == 1 and result.jobs[0][0] == IN:
            handoff.append(result.jobs.pop())
        elif handoff and result.jobs:
            # more work after all: the conversation kept is not alone
            result.jobs.insert(0, handoff.pop())
    enqueue_jobs(runtime, result)


def _commit(
    runtime: Runtime,
    ref: AccountRef,
    parsed: Sequence[_Parsed],
    lock: ConversationLock,
) -> AcceptResult:
    """Store the batch's events and mark its rows in one transaction. The
    lookups run before it (:func:`look`), the writes are one statement per
    kind where they can be: SQLite's one writer lock, which the webhooks'
    INSERTs wait for, is held for the writes alone."""
    result = AcceptResult()
    events = [e for item in parsed for e in item.events or ()]
    with runtime.read_engine.connect() as conn:
        seen = look(conn, ref, events)
    planned = acknowledgement_plan(runtime, ref, events)
    with runtime.transaction() as session:
        now = utcnow()  # stamped in the transaction that stores the events
        accept_in(session, ref, events, result, seen, planned)
        conn = session.connection()
        for (state, reason, detail), ids in _by_outcome(parsed).items():
            marked = conn.execute(
                _MARK,
                {"ids": ids, "b_state": state, "b_reason": reason, "b_detail": detail, "b_at": now},
            )
            if marked.rowcount != len(ids):
                raise _LeaseLost  # someone else normalised one: roll back
        for hook in HOOKS.before_normalised_commit:
            hook()
        if lock.lost.is_set():
            raise _LeaseLost
    return result


def _by_outcome(parsed: Sequence[_Parsed]) -> dict[tuple[str, str | None, str | None], list[int]]:
    """Row ids by what they are marked with (one UPDATE each: in a batch of
    ordinary messages, one for all)."""
    groups: dict[tuple[str, str | None, str | None], list[int]] = {}
    for item in parsed:
        groups.setdefault((item.state.value, item.reason, item.detail), []).append(item.row.id)
    return groups


def _mark_all(
    runtime: Runtime, rows: Sequence[Row[Any]], state: DeliveryState, reason: str
) -> None:
    now = utcnow()
    with runtime.transaction() as session:
        session.connection().execute(
            _MARK,
            {
                "ids": [row.id for row in rows],
                "b_state": state.value,
                "b_reason": reason,
                "b_detail": None,
                "b_at": now,
            },
        )


# -- the sweeper's part -------------------------------------------------------------


def sweep_journal(runtime: Runtime) -> int:
    """Wake the normaliser of every account with a ``new`` row older than
    ``journal_grace`` that nobody is working on (its wake-up was lost).
    Returns the accounts woken."""
    stale = utcnow() - dt.timedelta(seconds=runtime.settings.journal_grace)
    with runtime.read_engine.connect() as conn:
        accounts = list(
            conn.scalars(
                select(Delivery.channel_account_id)
                .where(Delivery.state == DeliveryState.NEW.value, Delivery.received_at <= stale)
                .distinct()
            )
        )
    woken = 0
    for account_id in accounts:
        if ConversationLock.is_held(runtime.redis, lock_name(account_id)):
            continue  # a normaliser is on it; it looks again before it stops
        if runtime.redis.exists(_wake_flag(account_id)):
            continue  # a wake-up is queued (the flag expires if it was lost)
        if wake(runtime, account_id):
            woken += 1
    if woken:
        log.info("sweeper woke the normaliser of %d account(s)", woken)
    return woken


def drop_old_bodies(runtime: Runtime, *, limit: int = 1000) -> int:
    """Retention: the raw body of a row normalised or ignored more than
    ``journal_retention_days`` ago is dropped (the row stays, as the record
    of what arrived). Rejected and new rows keep theirs. Returns rows done."""
    cutoff = utcnow() - dt.timedelta(days=runtime.settings.journal_retention_days)
    done = (DeliveryState.NORMALISED.value, DeliveryState.IGNORED.value)
    with runtime.transaction() as session:
        ids = list(
            session.scalars(
                select(Delivery.id)
                .where(
                    Delivery.state.in_(done),
                    Delivery.normalised_at < cutoff,
                    Delivery.body.is_not(None),
                )
                .limit(limit)
            )
        )
        if ids:
            session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(body=None))
    return len(ids)


# -- bridge reparse ---------------------------------------------------------------

#: the states ``bridge reparse`` takes rows back from
REPARSABLE = (DeliveryState.REJECTED, DeliveryState.IGNORED)


def reparse(
    runtime: Runtime,
    *,
    account: int | None = None,
    since: dt.datetime | None = None,
    state: DeliveryState | None = None,
    delivery: int | None = None,
) -> dict[int, int]:
    """Put journal rows back to ``new`` (after a parser fix) and run the
    normaliser for their accounts here and now. Rows are picked by state
    (rejected by default; ignored on request), account, received time, or
    one row by its id (in either of those states). A message that lands
    this way is written with its own time and marked late in the CRM.
    Returns {account id: rows put back}."""
    if state is not None and state not in REPARSABLE:
        raise ValueError(f"only {' or '.join(s.value for s in REPARSABLE)} rows are reparsed")
    wanted = (
        [state.value]
        if state
        else (
            [s.value for s in REPARSABLE]
            if delivery is not None
            else [DeliveryState.REJECTED.value]
        )
    )
    query = select(Delivery.id, Delivery.channel_account_id).where(Delivery.state.in_(wanted))
    if account is not None:
        query = query.where(Delivery.channel_account_id == account)
    if since is not None:
        query = query.where(Delivery.received_at >= since)
    if delivery is not None:
        query = query.where(Delivery.id == delivery)
    put_back: dict[int, int] = {}
    with runtime.transaction() as session:
        for row_id, account_id in session.execute(query).all():
            session.execute(
                update(Delivery)
                .where(Delivery.id == row_id, Delivery.state.in_(wanted))
                .values(state=DeliveryState.NEW.value, reason=None, detail=None)
            )
            put_back[int(account_id)] = put_back.get(int(account_id), 0) + 1
    for account_id in put_back:
        run_normaliser(runtime, account_id)
    return put_back


# -- for bridge status ----------------------------------------------------------


def counts(runtime: Runtime, tenant_id: int | None = None) -> dict[str, Any]:
    """Journal rows by state, the rejected ones by reason, and the oldest
    ``new`` row's age in seconds (None when nothing waits)."""
    scope = [Delivery.tenant_id == tenant_id] if tenant_id else []
    with runtime.read_engine.connect() as conn:
        by_state = {
            str(k): int(v)
            for k, v in conn.execute(
                select(Delivery.state, func.count()).where(*scope).group_by(Delivery.state)
            ).all()
        }
        oldest = conn.scalar(
            select(func.min(Delivery.received_at)).where(
                Delivery.state == DeliveryState.NEW.value, *scope
            )
        )
        rejected = {
            str(k): int(v)
            for k, v in conn.execute(
                select(Delivery.reason, func.count())
                .where(Delivery.state == DeliveryState.REJECTED.value, *scope)
                .group_by(Delivery.reason)
            ).all()
        }
    age = (utcnow() - _aware(oldest)).total_seconds() if oldest is not None else None
    return {
        "by_state": {s.value: by_state.get(s.value, 0) for s in DeliveryState},
        "oldest_new_age_s": round(age, 1) if age is not None else None,
        "rejected_reasons": rejected,
    }
