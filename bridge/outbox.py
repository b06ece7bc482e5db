"""The SQL outbox: the record of which conversations have work, per direction.

States::

    idle ──new message──> pending ──job drained it, version unchanged──> idle
                            │  ^
      permanent error / auth│  │ replay / re-authorised
                            v  │
                          parked

Every new message bumps ``version`` in the same transaction that stores it.
Only the idle -> pending transition enqueues a job (so a burst of messages
costs one job, not one per message); a job that finds the version changed
while it worked keeps draining. ``enqueued_at`` and ``last_job_id`` let the
sweeper tell a job that vanished (Redis wiped, worker SIGKILLed) from one
that is merely queued.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Connection, String, bindparam, case, cast, insert, select, update
from sqlalchemy.orm import Session

from bridge.model import utcnow
from bridge.tables import Outbox, OutboxState

__all__ = [
    "ACK",
    "IN",
    "OUT",
    "REPORT",
    "backoff",
    "bump",
    "bump_many",
    "get_or_create",
    "job_id",
    "mark_idle",
    "park",
    "unpark",
    "waiting",
]

IN = "in"
OUT = "out"
#: follow-up work: the channel's acknowledgement of inbound events (a
#: button press answered), the CRM's delivery report of outbound replies
ACK = "ack"
REPORT = "report"
#: the service layer's pass over a conversation's new client messages
#: (``bridge.service.runner``: sessions, menus, notices, ratings)
SERVICE = "service"


def job_id(direction: str, conversation_id: int, version: int, sweep: int = 0) -> str:
    """Deterministic RQ job id for a unit of work (visible in every log line)."""
    base = f"{_KIND[direction]}-{conversation_id}-{version}"
    return f"{base}-s{sweep}" if sweep else base


def get_or_create(session: Session, tenant_id: int, conversation_id: int, direction: str) -> Outbox:
    row = session.scalars(
        select(Outbox)
        .where(Outbox.conversation_id == conversation_id, Outbox.direction == direction)
        .with_for_update()
    ).first()
    if row is None:
        row = Outbox(
            tenant_id=tenant_id,
            conversation_id=conversation_id,
            direction=direction,
            state=OutboxState.IDLE,
            version=0,
            sweeps=0,
        )
        session.add(row)
        session.flush()
    return row


_KIND = {IN: "sync", OUT: "deliver", ACK: "acknowledge", REPORT: "report", SERVICE: "service"}
_WAS_IDLE = Outbox.state == OutboxState.IDLE
#: built once (see bump): SET expressions read the row's old values; the
#: new job id is made in SQL (``<kind>-<conversation>-<version>``, job_id's
#: form) so that one statement bumps many conversations
_BUMP = (
    update(Outbox)
    .where(
        Outbox.conversation_id.in_(bindparam("b_conversations", expanding=True)),
        Outbox.direction == bindparam("b_direction"),
    )
    .values(
        version=Outbox.version + 1,
        state=case((_WAS_IDLE, OutboxState.PENDING), else_=Outbox.state),
        reason=case((_WAS_IDLE, None), else_=Outbox.reason),
        not_before=case((_WAS_IDLE, None), else_=Outbox.not_before),
        enqueued_at=case((_WAS_IDLE, bindparam("b_now")), else_=Outbox.enqueued_at),
        last_job_id=case(
            (
                _WAS_IDLE,
                bindparam("b_kind", type_=String)
                + cast(Outbox.conversation_id, String)
                + "-"
                + cast(Outbox.version + 1, String),
            ),
            else_=Outbox.last_job_id,
        ),
        updated_at=bindparam("b_now"),
    )
    .returning(Outbox.conversation_id, Outbox.version, Outbox.last_job_id)
)


def bump(session: Session, tenant_id: int, conversation_id: int, direction: str) -> str | None:
    """Record new work; return the job id to enqueue after commit, or None
    when a job is already responsible (pending) or the conversation is parked.

    One UPDATE on the hot path: the SET expressions see the row's old state,
    so only an idle row becomes pending and gets a new job id — which is how
    we know, from RETURNING, that this call made the transition.
    """
    return bump_many(session, tenant_id, [conversation_id], direction)[conversation_id]


def bump_many(
    session: Session, tenant_id: int, conversation_ids: Sequence[int], direction: str
) -> dict[int, str | None]:
    """:func:`bump` for several conversations of a tenant with one UPDATE
    (and one INSERT for those with no outbox row yet): each one's job id to
    enqueue, or None."""
    now = utcnow()
    conn = session.connection()
    jobs: dict[int, str | None] = {}
    for cid, version, last_job in conn.execute(
        _BUMP,
        {
            "b_conversations": list(conversation_ids),
            "b_direction": direction,
            "b_now": now,
            "b_kind": f"{_KIND[direction]}-",
        },
    ):
        fresh = job_id(direction, int(cid), int(version))
        jobs[int(cid)] = fresh if last_job == fresh else None
    missing = [cid for cid in conversation_ids if cid not in jobs]
    if missing:
        conn.execute(
            insert(Outbox),
            [
                {
                    "tenant_id": tenant_id,
                    "conversation_id": cid,
                    "direction": direction,
                    "state": OutboxState.PENDING,
                    "version": 1,
                    "sweeps": 0,
                    "enqueued_at": now,
                    "last_job_id": job_id(direction, cid, 1),
                    "updated_at": now,
                }
                for cid in missing
            ],
        )
        jobs.update((cid, job_id(direction, cid, 1)) for cid in missing)
    return jobs


_IDLE = (
    update(Outbox)
    .where(
        Outbox.conversation_id == bindparam("b_conversation"),
        Outbox.direction == bindparam("b_direction"),
        Outbox.version == bindparam("b_version"),
        Outbox.state.in_((OutboxState.PENDING, OutboxState.IDLE)),
    )
    .values(state=OutboxState.IDLE, reason=None, not_before=None)
)


def mark_idle(
    session: Session | Connection, conversation_id: int, direction: str, version: int
) -> bool:
    """pending -> idle, only if nothing arrived since ``version`` was read.

    True also when it is idle already (a second job for the same work found
    nothing to do); False when new work arrived or it was parked meanwhile —
    the caller looks again. One statement built once, run on the session's
    connection (or a Core connection's).
    """
    conn = session.connection() if isinstance(session, Session) else session
    result = conn.execute(
        _IDLE,
        {"b_conversation": conversation_id, "b_direction": direction, "b_version": version},
    )
    return result.rowcount == 1


def park(session: Session, conversation_id: int, direction: str, reason: str) -> None:
    session.execute(
        update(Outbox)
        .where(Outbox.conversation_id == conversation_id, Outbox.direction == direction)
        .values(state=OutboxState.PARKED, reason=reason)
    )


def backoff(
    session: Session, conversation_id: int, direction: str, until: dt.datetime, reason: str
) -> None:
    """Stay pending, but let the sweeper pick it up only after ``until``."""
    session.execute(
        update(Outbox)
        .where(Outbox.conversation_id == conversation_id, Outbox.direction == direction)
        .values(state=OutboxState.PENDING, not_before=until, reason=reason, enqueued_at=until)
    )


def waiting(session: Session, tenant_id: int) -> list[tuple[str, int]]:
    """The tenant's conversations backing off (pending with ``not_before``):
    (direction, conversation id) pairs."""
    rows = session.execute(
        select(Outbox.direction, Outbox.conversation_id).where(
            Outbox.tenant_id == tenant_id,
            Outbox.state == OutboxState.PENDING,
            Outbox.not_before.is_not(None),
        )
    )
    return [(str(direction), int(conversation)) for direction, conversation in rows]


def unpark(session: Session, conversation_id: int, direction: str) -> str | None:
    """parked/idle -> pending (replay, re-authorised): the job id to enqueue."""
    row = session.scalars(
        select(Outbox)
        .where(Outbox.conversation_id == conversation_id, Outbox.direction == direction)
        .with_for_update()
    ).first()
    if row is None:
        return None
    row.version += 1
    row.state = OutboxState.PENDING
    row.reason = None
    row.not_before = None
    row.enqueued_at = utcnow()
    row.sweeps += 1
    row.last_job_id = job_id(direction, conversation_id, row.version, row.sweeps)
    return row.last_job_id
