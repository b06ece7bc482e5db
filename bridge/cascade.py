"""Cascade messages: one message tried on a client's channels in turn.

The CRM (or anyone with the tenant's API token) asks for a text to reach a
CRM contact on channels in an order (``POST /api/v1/contacts/<id>/messages``,
``bridge.api``). The policy, per step::

    waiting ──not reachable / no conversation──> skipped ──> next channel
       │
       └──reachable──> sending (an outbound message stored in the client's
                        conversation there: the normal outbox path, so
                        order, exactly-once and rate limits are the
                        pipeline's)
                          ├── delivered / read ────────> delivered: done
                          │   (sent, on a channel that never confirms)
                          ├── failed / refused ────────> failed ──> next
                          └── wait_minutes without ────> timed_out ──> next
                              delivered/read (a message still
                              unsent then is withdrawn)

Never twice on one channel: a step is unique per cascade and channel kind,
and its message's dedupe key is ``cascade:<uid>:<kind>`` (unique per
channel account), so a retried job finds what it stored. Every change is
made under the cascade's row lock, in one transaction with the message it
stores. A channel's accepting a send counts as delivered only where the
channel reports nothing more (``ChannelAdapter.confirms_delivery``).

What moves a cascade on: :func:`advance` right after it is asked, and the
sweeper (:func:`sweep`, every ``sweep_interval``), which advances each
running cascade whose step's message changed since it last looked or whose
wait (or rate-limit pause) is over. The outcome — which channel delivered,
when, which were skipped and why — goes on the CRM contact's timeline as a
note in the mapping's language (``bridge.cascade_note``:
``CrmAdapter.note_contact``, keyed by the cascade so a retry writes it once
where the CRM can be searched). A hosted channel's unread fallback leaves a
cascade's message alone: the cascade's next channel is its fallback.

A batch (:func:`start_batch`) starts one cascade per CRM contact. Each
send takes a token from the shared bucket (``bridge.ratelimit``) of its
channel account at half the channel's documented send rate, so a mailing
never takes the budget a rep's reply needs; a send over the budget waits
(the sweeper resumes it). Unsubscribes are honoured as every withdrawn
consent is: the channel is not reachable and is skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge import outbox, reach
from bridge.cascade_note import enqueue_note, note, run_note, steps_of
from bridge.db import rowcount
from bridge.model import MessageKind, Rate, utcnow
from bridge.pipeline.inbound import threads
from bridge.pipeline.outbound.accept import take_seq
from bridge.pipeline.outbound.unread import MARK as UNREAD
from bridge.registry import channel_class, channel_kinds
from bridge.rows import aware
from bridge.tables import (
    Cascade,
    CascadeState,
    CascadeStep,
    ChannelAccount,
    Contact,
    Conversation,
    Message,
    MessageStatus,
    StepState,
    Tenant,
    TenantStatus,
)

if TYPE_CHECKING:
    from bridge.runtime import Runtime
    from mappings import MappingConfig

__all__ = [
    "BadRequest",
    "CascadeRequest",
    "NotFound",
    "advance",
    "find",
    "note",
    "parse_request",
    "run_cascade",
    "run_note",
    "start",
    "start_batch",
    "start_once",
    "sweep",
    "view",
]

log = logging.getLogger(__name__)

MAX_TEXT = 10_000
MAX_CHANNELS = 10
MAX_WAIT = 7 * 24 * 60
DEFAULT_WAIT = 30
MAX_BATCH = 1000
#: a batch's key leaves room for ``:<crm contact id>`` in each cascade's
MAX_KEY = 200
MAX_BATCH_KEY = 120
#: the share of a channel's send rate cascades may take
SHARE = 0.5
#: a message that is being sent when its wait ends: looked at again after
IN_FLIGHT_PAUSE = dt.timedelta(minutes=1)
#: a disabled tenant's cascade is looked at again after
PAUSED_RECHECK = dt.timedelta(minutes=1)
_PREFIX = "cascade:"
#: the subject of a thread a cascade opens (a channel with subjects: e-mail)
_SUBJECT = {"en": "A message from {company}", "ru": "Сообщение от {company}"}


class BadRequest(ValueError):
    """What is wrong with an API body (the API's 400, or 409 for a key
    reused with another request)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NotFound(LookupError):
    """No bridge contact has this CRM contact id (the API's 404)."""


@dataclass(frozen=True)
class CascadeRequest:
    text: str
    channels: tuple[str, ...]
    wait_minutes: int
    key: str
    #: a batch's CRM contact ids (empty for one contact's request)
    contacts: tuple[str, ...] = field(default=())


# -- the request ---------------------------------------------------------------


def parse_request(body: Any, *, batch: bool = False) -> CascadeRequest:
    """The API body, checked: ``BadRequest`` names the field and the fix."""
    if not isinstance(body, Mapping):
        raise BadRequest("invalid_body", "the body must be a JSON object")
    known = {"text", "channels", "wait_minutes", "key"} | ({"contacts"} if batch else set())
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest("unknown_field", f"unknown field(s): {', '.join(unknown)}")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("invalid_text", "text: a non-empty string is required")
    if len(text) > MAX_TEXT:
        raise BadRequest("invalid_text", f"text: at most {MAX_TEXT} characters")
    return CascadeRequest(
        text=text,
        channels=_channels(body.get("channels")),
        wait_minutes=_wait(body.get("wait_minutes", DEFAULT_WAIT)),
        key=_key(body.get("key"), MAX_BATCH_KEY if batch else MAX_KEY),
        contacts=_contacts(body.get("contacts")) if batch else (),
    )


def _channels(value: Any) -> tuple[str, ...]:
    kinds = channel_kinds()
    if not isinstance(value, list) or not value or len(value) > MAX_CHANNELS:
        raise BadRequest(
            "invalid_channels",
            f"channels: a list of 1 to {MAX_CHANNELS} channel kinds, in the order to try "
            f"(known: {', '.join(kinds)})",
        )
    for kind in value:
        if not isinstance(kind, str) or kind not in kinds:
            raise BadRequest(
                "invalid_channels",
                f"channels: unknown channel {kind!r} (known: {', '.join(kinds)})",
            )
    if len(set(value)) != len(value):
        raise BadRequest("invalid_channels", "channels: each channel once (never twice)")
    return tuple(value)


def _wait(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WAIT:
        raise BadRequest(
            "invalid_wait_minutes",
            f"wait_minutes: a whole number of minutes from 1 to {MAX_WAIT} (default "
            f"{DEFAULT_WAIT}): how long a channel may take to say delivered or read",
        )
    return value


def _key(value: Any, longest: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > longest:
        raise BadRequest(
            "invalid_key",
            f"key: your idempotency key, 1 to {longest} characters (a retried request "
            "with the same key returns the same cascade)",
        )
    return value


def _contacts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_BATCH:
        raise BadRequest(
            "invalid_contacts", f"contacts: a list of 1 to {MAX_BATCH} CRM contact ids"
        )
    ids = [str(v) for v in value if isinstance(v, (str, int)) and not isinstance(v, bool)]
    if len(ids) != len(value) or any(not i or len(i) > 64 for i in ids):
        raise BadRequest("invalid_contacts", "contacts: each a CRM contact id (string)")
    return tuple(dict.fromkeys(ids))


# -- starting ------------------------------------------------------------------


def find(session: Session, tenant_id: int, crm_contact_id: str) -> Contact | None:
    """The live bridge contact of a CRM contact (merges followed)."""
    rows = session.scalars(
        select(Contact)
        .where(Contact.tenant_id == tenant_id, Contact.crm_contact_id == crm_contact_id)
        .order_by(Contact.merged_into_id.is_not(None), Contact.id)
    ).all()
    for row in rows:
        live = reach.live_contact(session, row.id)
        if live is not None:
            return live
    return None


def start(
    runtime: Runtime,
    tenant_id: int,
    crm_contact_id: str,
    request: CascadeRequest,
    *,
    batch: str | None = None,
) -> tuple[str, bool]:
    """Store a cascade (or find the one its key made before) and take its
    first step: its uid, and True when it was made now. ``NotFound`` for
    an unknown CRM contact; ``BadRequest`` (409) for a key reused with
    another request."""
    with runtime.transaction() as session:
        found = _by_key(session, tenant_id, request.key)
        if found is not None:
            _same_request(found, crm_contact_id, request)
            return found.uid, False
        contact = find(session, tenant_id, crm_contact_id)
        if contact is None:
            raise NotFound(crm_contact_id)
        cascade = Cascade(
            uid=str(uuid.uuid4()),
            tenant_id=tenant_id,
            contact_id=contact.id,
            crm_contact_id=crm_contact_id,
            key=request.key,
            text=request.text,
            channels=list(request.channels),
            wait_minutes=request.wait_minutes,
            state=CascadeState.RUNNING,
            next_check=utcnow(),
            batch=batch,
        )
        session.add(cascade)
        try:
            session.flush()
        except IntegrityError:
            # the same key, asked at the same moment: the other one won
            # (this transaction is rolled back on the way out)
            raise _Raced(request.key) from None
        for position, kind in enumerate(request.channels):
            session.add(
                CascadeStep(
                    tenant_id=tenant_id, cascade_id=cascade.id, position=position, channel=kind
                )
            )
        cascade_id, uid = cascade.id, cascade.uid
    try:
        advance(runtime, cascade_id)
    except (redis.RedisError, OSError) as exc:
        # stored (due now): the sweeper takes the first step once Redis answers
        log.warning("cascade %s: first step left to the sweeper (%s)", uid, type(exc).__name__)
    return uid, True


class _Raced(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def start_once(
    runtime: Runtime,
    tenant_id: int,
    crm_contact_id: str,
    request: CascadeRequest,
    *,
    batch: str | None = None,
) -> tuple[str, bool]:
    """:func:`start`, reading the winner when the same key raced in."""
    try:
        return start(runtime, tenant_id, crm_contact_id, request, batch=batch)
    except _Raced:
        return start(runtime, tenant_id, crm_contact_id, request, batch=batch)


def start_batch(
    runtime: Runtime, tenant_id: int, request: CascadeRequest
) -> tuple[str, list[tuple[str, str]], list[str]]:
    """One cascade per CRM contact of a batch, keyed ``<key>:<contact>``:
    the batch id (the same for the same key), the (contact, cascade uid)
    pairs, and the contacts the bridge does not know."""
    batch = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bridge-cascade-batch:{tenant_id}:{request.key}"))
    started: list[tuple[str, str]] = []
    unknown: list[str] = []
    for crm_id in request.contacts:
        one = CascadeRequest(
            text=request.text,
            channels=request.channels,
            wait_minutes=request.wait_minutes,
            key=f"{request.key}:{crm_id}",
        )
        try:
            uid, _ = start_once(runtime, tenant_id, crm_id, one, batch=batch)
        except NotFound:
            unknown.append(crm_id)
            continue
        started.append((crm_id, uid))
    return batch, started, unknown


def _by_key(session: Session, tenant_id: int, key: str) -> Cascade | None:
    return session.scalars(
        select(Cascade).where(Cascade.tenant_id == tenant_id, Cascade.key == key)
    ).first()


def _same_request(found: Cascade, crm_contact_id: str, request: CascadeRequest) -> None:
    same = (
        found.crm_contact_id == crm_contact_id
        and found.text == request.text
        and list(found.channels) == list(request.channels)
        and found.wait_minutes == request.wait_minutes
    )
    if not same:
        raise BadRequest(
            "key_reused",
            "key: already used for a different message; use a new key for a new cascade",
            status=409,
        )


# -- advancing -------------------------------------------------------------------


@dataclass
class _Work:
    """What a pass did that is enqueued once it is committed."""

    jobs: list[tuple[str, int, str]] = field(default_factory=list)
    conversations: set[int] = field(default_factory=set)
    note_due: bool = False


def advance(runtime: Runtime, cascade_id: int, *, now: dt.datetime | None = None) -> str:
    """Take the cascade as far as it can go now (under its row lock; safe
    to run twice, by any number of processes): its state afterwards."""
    work = _Work()
    with runtime.transaction() as session:
        cascade = session.get(Cascade, cascade_id, with_for_update=True)
        if cascade is None:
            return "gone"
        if cascade.state == CascadeState.RUNNING:
            _Pass(runtime, session, cascade, work, now or utcnow()).run()
        state = cascade.state
    _after_commit(runtime, work)
    if work.note_due:
        enqueue_note(runtime, cascade_id)
    return str(state)


def _after_commit(runtime: Runtime, work: _Work) -> None:
    if work.conversations:
        from bridge import hosted

        # a hosted channel's open client shows the message now
        hosted.announce_conversations(runtime, work.conversations)
    from bridge.jobs import enqueue

    for direction, conversation_id, job in work.jobs:
        enqueue(
            runtime.queues, direction, conversation_id, job, timeout=runtime.settings.job_timeout
        )


class _Pass:
    """One look at a running cascade, in the transaction holding its row."""

    def __init__(
        self,
        runtime: Runtime,
        session: Session,
        cascade: Cascade,
        work: _Work,
        now: dt.datetime,
    ) -> None:
        self.rt = runtime
        self.session = session
        self.cascade = cascade
        self.work = work
        self.now = now
        self.wait = dt.timedelta(minutes=cascade.wait_minutes)

    def run(self) -> None:
        tenant = self.session.get(Tenant, self.cascade.tenant_id)
        if tenant is None or tenant.status == TenantStatus.DISABLED:
            # paused by an admin: nothing is sent; it goes on once enabled
            self.cascade.next_check = self.now + PAUSED_RECHECK
            return
        steps = self.session.scalars(
            select(CascadeStep)
            .where(CascadeStep.cascade_id == self.cascade.id)
            .order_by(CascadeStep.position)
        ).all()
        for step in steps:
            if step.state in (StepState.SKIPPED, StepState.FAILED, StepState.TIMED_OUT):
                continue
            if step.state == StepState.WAITING and not self._try(step):
                return  # stored and waiting for the channel, or paused
            if step.state == StepState.SENDING and not self._look(step):
                return
            if step.state == StepState.DELIVERED:
                self._finish(CascadeState.DELIVERED)
                return
        self._finish(CascadeState.UNDELIVERED)

    # -- a step not tried yet ----------------------------------------------

    def _try(self, step: CascadeStep) -> bool:
        """Skip the step (True: go on) or store its message (False)."""
        contact = reach.live_contact(self.session, self.cascade.contact_id)
        if contact is None:
            self._end(step, StepState.SKIPPED, "no_conversation", "the client is gone")
            return True
        target = self._target(contact, step.channel)
        if isinstance(target, reach.ChannelReach):
            self._end(step, StepState.SKIPPED, target.reason, target.detail)
            return True
        if target is None:
            self._end(step, StepState.SKIPPED, "no_conversation", None)
            return True
        account, conversation_id, address = target
        paused = self._budget(account)
        if paused is not None:
            self.cascade.next_check = self.now + dt.timedelta(seconds=paused)
            return False
        if conversation_id is None:
            assert address is not None
            conversation_id = self._open(account, contact.id, address)
        self._store(step, account, conversation_id)
        return False

    def _target(
        self, contact: Contact, kind: str
    ) -> tuple[ChannelAccount, int | None, str | None] | reach.ChannelReach | None:
        """Where the step's message goes: the client's most recent
        conversation of that kind that reaches them (account, conversation,
        None), an account that opens a thread to an address they have
        (account, None, address), the reason none reaches them, or None
        when they have no way there at all."""
        mapping = self._mapping()
        conversations = self.session.scalars(
            select(Conversation)
            .join(ChannelAccount, ChannelAccount.id == Conversation.channel_account_id)
            .where(
                Conversation.tenant_id == self.cascade.tenant_id,
                Conversation.contact_id == contact.id,
                ChannelAccount.kind == kind,
            )
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        ).all()
        refusal: reach.ChannelReach | None = None
        for conversation in conversations:
            account = self.session.get(ChannelAccount, conversation.channel_account_id)
            assert account is not None
            answer = reach.of_conversation(self.session, conversation, account, mapping, self.now)
            if answer.reachable:
                return account, conversation.id, None
            refusal = refusal or answer
        if refusal is not None:
            return refusal
        opens = reach.opener(self.session, contact, kind)
        if opens is not None:
            return opens[0], None, opens[1]
        return None

    def _budget(self, account: ChannelAccount) -> float | None:
        """Take one send from the account's cascade bucket: None, or the
        seconds until one is free."""
        rate = channel_class(account.kind).send_rate
        if rate is None:
            return None
        share = Rate(
            capacity=max(1.0, rate.capacity * SHARE), per_second=max(0.01, rate.per_second * SHARE)
        )
        wait = self.rt.limiter.try_acquire(f"cascade:{account.id}", share)
        return wait if wait > 0 else None

    def _open(self, account: ChannelAccount, contact_id: int, address: str) -> int:
        """The client's conversation with ``address`` on ``account`` (the
        one the channel names for it, opened now when there is none)."""
        tenant = self.session.get(Tenant, self.cascade.tenant_id)
        assert tenant is not None
        subject = _SUBJECT.get(self._language(), _SUBJECT["en"]).format(company=tenant.name)
        thread_id, state = channel_class(account.kind).open_thread(address, subject)
        return threads.open_conversation(self.session, account, contact_id, thread_id, state)

    def _store(self, step: CascadeStep, account: ChannelAccount, conversation_id: int) -> None:
        """The step's message in the conversation's outbox (found again,
        never stored twice, when a retry comes here once more)."""
        key = f"{_PREFIX}{self.cascade.uid}:{step.channel}"
        message_id = self.session.scalar(
            select(Message.id).where(
                Message.channel_account_id == account.id,
                Message.direction == outbox.OUT,
                Message.dedupe_key == key,
            )
        )
        if message_id is None:
            message = Message(
                uid=str(uuid.uuid4()),
                tenant_id=self.cascade.tenant_id,
                conversation_id=conversation_id,
                channel_account_id=account.id,
                direction=outbox.OUT,
                seq=take_seq(self.session, conversation_id),
                dedupe_key=key,
                kind=MessageKind.TEXT.value,
                text=self.cascade.text,
                # a hosted channel's unread fallback leaves it alone: the
                # cascade's next channel is its fallback
                payload={"cascade": self.cascade.uid, UNREAD: {"none": "a cascade message"}},
                sent_at=self.now,
                status=MessageStatus.PENDING,
            )
            self.session.add(message)
            self.session.flush()
            message_id = message.id
            job = outbox.bump(self.session, self.cascade.tenant_id, conversation_id, outbox.OUT)
            if job:
                self.work.jobs.append((outbox.OUT, conversation_id, job))
            self.work.conversations.add(conversation_id)
        step.state = StepState.SENDING
        step.channel_account_id = account.id
        step.message_id = message_id
        step.started_at = step.checked_at = self.now
        self.cascade.next_check = self.now + self.wait

    # -- a step whose message is out ---------------------------------------

    def _look(self, step: CascadeStep) -> bool:
        """Read the step's message: True when the step ended (delivered:
        the cascade is done; failed or timed out: the next one goes)."""
        message = self.session.get(Message, step.message_id) if step.message_id else None
        step.checked_at = self.now
        if message is None:
            self._end(step, StepState.FAILED, "failed", "the message is gone")
            return True
        if message.status in (MessageStatus.FAILED, MessageStatus.REFUSED):
            self._end(step, StepState.FAILED, "failed", (message.last_error or "")[:500] or None)
            return True
        if message.status == MessageStatus.SENT:
            reached = str((message.payload or {}).get("delivery") or "sent")
            confirms = channel_class(step.channel).confirms_delivery
            if reached in ("delivered", "read") or not confirms:
                self._end(step, StepState.DELIVERED, reached, None)
                return True
        started = aware(step.started_at) if step.started_at else self.now
        if self.now - started < self.wait:
            self.cascade.next_check = started + self.wait
            return False
        return self._time_out(step, message)

    def _time_out(self, step: CascadeStep, message: Message) -> bool:
        if message.status == MessageStatus.IN_FLIGHT:
            # being sent right now: its outcome decides, a minute later
            self.cascade.next_check = self.now + IN_FLIGHT_PAUSE
            return False
        if message.status == MessageStatus.PENDING:
            # never sent: withdrawn, so it cannot reach the client after
            # the next channel did (the delivery job skips what is not pending)
            withdrawn = self.session.execute(
                update(Message)
                .where(Message.id == message.id, Message.status == MessageStatus.PENDING)
                .values(
                    status=MessageStatus.REFUSED,
                    last_error=f"not sent: the cascade moved on after {self.cascade.wait_minutes}"
                    " min",
                )
            )
            if not rowcount(withdrawn):
                self.session.refresh(message)
                return self._look(step)
        detail = f"no delivery within {self.cascade.wait_minutes} min"
        self._end(step, StepState.TIMED_OUT, "timed_out", detail)
        return True

    # -- ends ----------------------------------------------------------------

    def _end(self, step: CascadeStep, state: str, reason: str, detail: str | None) -> None:
        step.state, step.reason = state, reason[:64]
        step.detail = detail[:2000] if detail else None
        step.finished_at = self.now

    def _finish(self, state: str) -> None:
        self.cascade.state = state
        self.cascade.finished_at = self.now
        self.cascade.next_check = self.now
        self.cascade.note_state = "pending"
        self.work.note_due = True
        log.info("cascade %s %s", self.cascade.uid, state)

    def _mapping(self) -> MappingConfig:
        tenant = self.session.get(Tenant, self.cascade.tenant_id)
        assert tenant is not None
        return self.rt.mapping_for(tenant)

    def _language(self) -> str:
        return self._mapping().language


# -- the sweeper's pass ------------------------------------------------------------


def sweep(runtime: Runtime, *, now: dt.datetime | None = None, limit: int = 200) -> int:
    """Advance the running cascades due now (a wait or a pause over, or
    their step's message changed since they looked) and enqueue the CRM
    notes due; how many were looked at."""
    now = now or utcnow()
    with runtime.read_engine.connect() as conn:
        due = set(
            conn.scalars(
                select(Cascade.id)
                .where(Cascade.state == CascadeState.RUNNING, Cascade.next_check <= now)
                .limit(limit)
            )
        )
        due |= set(
            conn.scalars(
                select(CascadeStep.cascade_id)
                .join(Message, Message.id == CascadeStep.message_id)
                .where(
                    CascadeStep.state == StepState.SENDING,
                    or_(
                        CascadeStep.checked_at.is_(None),
                        Message.updated_at > CascadeStep.checked_at,
                    ),
                )
                .limit(limit)
            )
        )
        notes = list(
            conn.scalars(
                select(Cascade.id)
                .where(
                    Cascade.note_state == "pending",
                    Cascade.state != CascadeState.RUNNING,
                    Cascade.next_check <= now,
                )
                .limit(limit)
            )
        )
    for cascade_id in sorted(due):
        advance(runtime, cascade_id, now=now)
    for cascade_id in notes:
        enqueue_note(runtime, cascade_id)
    return len(due) + len(notes)


def run_cascade(cascade_id: int) -> str:
    """RQ job: advance one cascade (safe to run twice)."""
    from bridge.runtime import get_runtime

    return advance(get_runtime(), cascade_id)


# -- reading ----------------------------------------------------------------------------


def view(runtime: Runtime, tenant_id: int, uid: str) -> dict[str, Any] | None:
    """A cascade as the API shows it (the tenant's only), or None."""
    with runtime.read_session() as session:
        cascade = session.scalars(
            select(Cascade).where(Cascade.tenant_id == tenant_id, Cascade.uid == uid)
        ).first()
        if cascade is None:
            return None
        return _json(session, cascade)


def batch_view(runtime: Runtime, tenant_id: int, batch: str) -> list[dict[str, Any]] | None:
    """A batch's cascades (the tenant's only), or None for no such batch."""
    with runtime.read_session() as session:
        rows = session.scalars(
            select(Cascade)
            .where(Cascade.tenant_id == tenant_id, Cascade.batch == batch)
            .order_by(Cascade.id)
        ).all()
        if not rows:
            return None
        return [_json(session, c) for c in rows]


def _when(value: dt.datetime | None) -> str | None:
    return aware(value).isoformat() if value else None


def _json(session: Session, cascade: Cascade) -> dict[str, Any]:
    steps = steps_of(session, cascade.id)
    won = next((s for s in steps if s.state == StepState.DELIVERED), None)
    return {
        "id": cascade.uid,
        "contact": cascade.crm_contact_id,
        "state": cascade.state,
        "channels": list(cascade.channels),
        "wait_minutes": cascade.wait_minutes,
        "key": cascade.key,
        "batch": cascade.batch,
        "delivered": (
            {"channel": won.channel, "status": won.reason, "at": _when(won.finished_at)}
            if won
            else None
        ),
        "steps": [
            {
                "channel": s.channel,
                "state": s.state,
                "reason": s.reason,
                "detail": s.detail,
                "started_at": _when(s.started_at),
                "finished_at": _when(s.finished_at),
            }
            for s in steps
        ],
        "note": cascade.note_state,
        "created_at": _when(cascade.created_at),
        "finished_at": _when(cascade.finished_at),
    }
