"""The service layer in the pipeline: :mod:`bridge.service.engine`'s
decisions, stored and acted on.

- **Client messages.** Ingest bumps the conversation's ``service`` outbox
  row with every stored message (when the tenant's mapping has a
  ``service:`` section), so a menu or an out-of-hours notice never waits
  for the CRM. The job (:func:`run_service`) walks the conversation's new
  inbound messages in order (``ServiceSession.cursor``); for each, in one
  transaction: the session rows, the messages the bridge sends the client
  (ordinary outbound messages marked ``auto``, delivered by the outbound
  pipeline) and the CRM work (``ServiceAction`` rows). Each message is
  acted on once: the cursor moves in the same transaction.
- **Operator replies** (:func:`operator_replied`, in the transaction that
  stores the rep's reply): the session's first response, the SLA clocks;
  a ``/transfer`` command moves the session to another line instead of
  reaching the client.
- **The clock** (:func:`sweep`, each sweeper pass): idle sessions close and
  are offered the rating; SLA warnings and breaches alert the supervisor;
  due CRM work is enqueued.
- **The CRM closing the deal** (:func:`crm_closed`): the session closes.
- **CRM work** (:func:`run_action`): a task (``CrmAdapter.create_task``,
  keyed so a retry finds it) or a note on the client's contact
  (``CrmAdapter.note_contact``), retried with backoff until the CRM has it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bridge import metrics, outbox
from bridge.db import rowcount
from bridge.errors import AuthError, BridgeError, PermanentError, RetryableError
from bridge.model import CrmRef, MessageKind, OutboundMessage, TaskDraft, utcnow
from bridge.pipeline.drain import Drained, Parked, run_drain
from bridge.registry import UnknownAdapter, channel_class
from bridge.rows import aware, profile_from_payload
from bridge.service import assist, csat, engine, routing, transfer
from bridge.service.assist import Assist
from bridge.service.calendar import is_open
from bridge.service.engine import Context, Outcome, Ticket
from bridge.service.knowledge import KnowledgeBase, KnowledgeError
from bridge.service.knowledge import load as load_knowledge
from bridge.service.menu import MenuState
from bridge.service.sessions import SessionState
from bridge.service.sla import due as sla_due
from bridge.tables import (
    ChannelAccount,
    ChannelStatus,
    Contact,
    Conversation,
    Message,
    MessageStatus,
    Outbox,
    OutboxState,
    ServiceAction,
    ServiceSession,
    Tenant,
    TenantService,
    TenantStatus,
)
from mappings import MappingError
from mappings.schema import MappingConfig
from mappings.service import Line, ServicePolicy

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = [
    "AUTO",
    "After",
    "answers_closed_session",
    "at_risk",
    "crm_closed",
    "new_session_since",
    "failed_actions",
    "enqueue_after",
    "operator_replied",
    "owner_changed",
    "stage_changed",
    "tags_changed",
    "run_action",
    "run_service",
    "sweep",
]

log = logging.getLogger(__name__)

#: the ``auto`` mark of what the service layer sends (``OutboundMessage.auto``)
AUTO = "service"
#: client messages taken per transaction
BATCH = 20
#: how long a claimed CRM action is held before another job may try it
ACTION_LEASE = dt.timedelta(minutes=5)
ACTION_ATTEMPTS = 12
ACTION_BACKOFF_CAP = dt.timedelta(hours=1)
#: an action waiting for the sync to write the client is looked at again after
#: this, doubling while it waits (never a failure)
SYNC_WAIT = dt.timedelta(seconds=5)


# -- client messages --------------------------------------------------------------------------


def run_service(runtime: Runtime, conversation_id: int) -> str:
    """The service layer's pass over the conversation's new client messages."""
    return run_drain(
        runtime, outbox.SERVICE, conversation_id, lambda lock: _drain_once(runtime, conversation_id)
    )


@dataclass
class After:
    """What to enqueue once the transaction committed."""

    jobs: list[tuple[str, int, str]] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)


def _drain_once(runtime: Runtime, conversation_id: int) -> Drained | Parked | None:
    after = After()
    with runtime.transaction() as session:
        row = session.scalars(
            select(Outbox).where(
                Outbox.conversation_id == conversation_id, Outbox.direction == outbox.SERVICE
            )
        ).first()
        if row is None or row.state == OutboxState.PARKED:
            return Parked("parked" if row else "no-work")
        version = row.version
        found = _load(runtime, session, conversation_id)
        if found is None:
            outbox.park(session, conversation_id, outbox.SERVICE, "no service section")
            return Parked("parked")
        view, current = found
        messages = list(
            session.scalars(
                select(Message)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.direction == outbox.IN,
                    Message.seq > (current.cursor if current else 0),
                )
                .order_by(Message.seq)
                .limit(BATCH)
            )
        )
        if not messages:
            return Drained(version)
        ticket = _ticket(view.policy, current)
        for message in messages:
            cursor = message.seq
            if (message.payload or {}).get("echo") or message.status == MessageStatus.FAILED:
                current = _advance(session, view, current, cursor)
                continue
            stored = (current.sla or {}).get("priority") if current is not None else None
            ctx = view.context(session, aware(message.sent_at), ticket, message.text or "", stored)
            spoken = profile_from_payload(message.payload).language
            if spoken:
                # the client's own language where their channel tells it
                ctx = dataclasses.replace(ctx, language=spoken)
            outcome = engine.with_due(
                ctx, ticket, engine.on_client_message(ctx, ticket, message.text or "")
            )
            outcome, shown = _assisted(view, ctx, outcome, message)
            current = _apply(session, view, current, outcome, cursor, after, ctx.priority)
            if current is not None and shown is not None:
                current.suggested = shown
            ticket = outcome.ticket
    _enqueue(runtime, after)
    return None


#: what the bridge said that leaves nothing for an operator to answer yet
_HANDLED = frozenset({"menu", "thanks", "answer", "csat"})


def _assisted(
    view: _View, ctx: Context, outcome: Outcome, message: Message
) -> tuple[Outcome, list[dict[str, Any]] | None]:
    """The bot's answer or the operator's suggestions for a client message
    an operator will answer (not a menu step, a rating, or a message the
    menu's knowledge base answered)."""
    ticket = outcome.ticket
    state = ticket.session
    if view.assist is None or state is None or not state.is_open or ticket.menu is not None:
        return outcome, None
    if any(say.kind in _HANDLED for say in outcome.say):
        return outcome, None
    says, works, shown = view.assist.on_client_message(
        _line(view.policy, ticket.line),
        key=message.uid,
        text=message.text or "",
        # the client's own language where the channel told it, else the
        # matcher reads it from the text (not the mapping's)
        language=(view.conversation.channel_state or {}).get("language") or None,
        crm_language=view.mapping.language,
        now=ctx.now,
    )
    changed = dataclasses.replace(outcome, say=(*outcome.say, *says), work=(*outcome.work, *works))
    return changed, shown


@dataclass
class _View:
    """What a pass reads once: the conversation, its tenant, the mapping."""

    conversation: Conversation
    tenant: Tenant
    account: ChannelAccount
    mapping: MappingConfig
    policy: ServicePolicy
    knowledge: KnowledgeBase | None
    assist: Assist | None = None
    #: the rating links' signing secret and address (None: this channel's
    #: prompt carries no links)
    links_secret: bytes | None = None
    links_url: str = ""
    runtime: Runtime | None = None

    def context(
        self,
        session: Session,
        now: dt.datetime,
        ticket: Ticket,
        text: str = "",
        priority: str | None = None,
    ) -> Context:
        """The engine's facts for an event; ``priority`` the session's (its
        first message's), else this message's."""
        contact = session.get(Contact, self.conversation.contact_id)
        language = (self.conversation.channel_state or {}).get("language")
        return Context(
            policy=self.policy,
            key=self.conversation.uid,
            channel=self.account.kind,
            language=str(language) if language else self.mapping.language,
            now=now,
            contact_owner=contact.crm_owner_id if contact else None,
            routing_state=_routing_state(session, self.tenant.id),
            staff=lambda line: _staff(session, self.tenant.id, line, now),
            knowledge=self.knowledge,
            crm_language=self.mapping.language,
            rating_links=self._links if self.links_secret else None,
            client_fields=lambda: self._client_fields(contact),
            priority=priority or self._priority(contact, text),
        )

    def _client_fields(self, contact: Contact | None) -> dict[str, str]:
        """The client's CRM fields the routing rules read, from the CRM
        (only when a session is routed by them). A CRM that cannot be read
        now routes the session without them (the rules by a field do not
        match), and says why in the log."""
        names = sorted(self.policy.segment_fields())
        if not names or contact is None or not contact.crm_contact_id or self.runtime is None:
            return {}
        from bridge.pipeline.retry import call_with_retries

        try:
            adapter = self.runtime.crm_adapter(self.tenant)
            ref = CrmRef("contact", contact.crm_contact_id)
            found = call_with_retries(
                self.runtime.settings, adapter.read_contact_fields, ref, names
            )
        except (BridgeError, NotImplementedError) as exc:
            log.warning("routing without CRM fields (%s)", type(exc).__name__)
            return {}
        return {str(k): str(v) for k, v in found.items()}

    def _priority(self, contact: Contact | None, text: str) -> str | None:
        """The mapping's priority for the conversation: its rule's
        ``priority`` (a VIP address, an urgent word) of this message."""
        rule = self.mapping.rule(self.account.kind)
        if rule is None or rule.priority is None:
            return None
        return rule.priority.of(contact.email if contact else None, text)

    def _links(self, number: int) -> tuple[tuple[int, str], ...]:
        """The five signed rating links of session ``number`` (a channel
        whose prompt carries links: ``ChannelAdapter.rates_by_link``)."""
        assert self.links_secret is not None
        key = f"{self.conversation.id}:{number}"
        return csat.rating_links(
            self.links_secret, self.tenant.id, key, self.links_url, now=utcnow()
        )


def _load(
    runtime: Runtime, session: Session, conversation_id: int
) -> tuple[_View, ServiceSession | None] | None:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    tenant = session.get(Tenant, conversation.tenant_id)
    account = session.get(ChannelAccount, conversation.channel_account_id)
    if tenant is None or account is None:
        return None
    try:
        mapping = runtime.mapping_for(tenant)
    except MappingError:
        return None
    if mapping.service is None:
        return None
    path = _kb_path(runtime, mapping.service)
    knowledge = _knowledge(path)
    helper = assist.for_tenant(session, tenant.id, mapping.service, knowledge, path)
    view = _View(conversation, tenant, account, mapping, mapping.service, knowledge, helper)
    view.runtime = runtime
    if _rates_by_link(account.kind):
        view.links_secret = links_secret(runtime)
        view.links_url = f"{runtime.settings.public_url}{RATE_PATH}"
    return view, _current(session, conversation_id)


#: the public route a rating link opens (``bridge.service.web``)
RATE_PATH = "/service/rate"


def links_secret(runtime: Runtime) -> bytes:
    """The rating links' HMAC key, derived from the bridge's primary key
    (rotating the keys ends the old links)."""
    return hashlib.sha256(b"service-rating-links:" + runtime.secrets_key_material()).digest()


def _rates_by_link(kind: str) -> bool:
    try:
        return channel_class(kind).rates_by_link
    except UnknownAdapter:
        return False


def _kb_path(runtime: Runtime, policy: ServicePolicy) -> Path | None:
    if not policy.knowledge_base:
        return None
    return Path(runtime.settings.mappings_dir) / policy.knowledge_base


#: knowledge bases read, by file and its modification time (a pass reads
#: the file once per process until it changes: parsing it was the biggest
#: cost of a pass, bench.service)
_KNOWLEDGE: dict[tuple[str, float], KnowledgeBase] = {}


def _knowledge(path: Path | None) -> KnowledgeBase | None:
    if path is None:
        return None
    try:
        key = (str(path), path.stat().st_mtime)
    except OSError:
        key = None
    if key is not None and key in _KNOWLEDGE:
        return _KNOWLEDGE[key]
    try:
        found = load_knowledge(path)
    except KnowledgeError as exc:
        log.warning("knowledge base not read (%s)", type(exc).__name__)
        return None
    if key is not None:
        for old in [k for k in _KNOWLEDGE if k[0] == key[0]]:
            del _KNOWLEDGE[old]
        _KNOWLEDGE[key] = found
    return found


def _current(session: Session, conversation_id: int) -> ServiceSession | None:
    """The conversation's newest session row, locked for this transaction."""
    return session.scalars(
        select(ServiceSession)
        .where(ServiceSession.conversation_id == conversation_id)
        .order_by(ServiceSession.number.desc())
        .limit(1)
        .with_for_update()
    ).first()


def _ticket(policy: ServicePolicy, row: ServiceSession | None) -> Ticket:
    if row is None:
        return Ticket()
    line = _line(policy, row.line)
    return Ticket(
        session=SessionState.from_dict(row.state),
        line=row.line,
        owner=row.owner_id,
        route_reason=row.route_reason,
        menu=MenuState.from_dict(row.menu) if row.menu else None,
        sla=engine.sla_from_dict(row.sla, line) if row.sla is not None else None,
    )


def _line(policy: ServicePolicy, name: str | None) -> Line:
    return policy.line(name if name is not None and name in policy.lines else policy.default_line)


def _advance(
    session: Session, view: _View, current: ServiceSession | None, cursor: int
) -> ServiceSession | None:
    if current is not None:
        current.cursor = cursor
    return current


def _apply(
    session: Session,
    view: _View,
    current: ServiceSession | None,
    outcome: Outcome,
    cursor: int,
    after: After,
    priority: str | None = None,
) -> ServiceSession | None:
    """Store one event's outcome: the session rows (a closed one on its
    own row), the messages to the client, the CRM work."""
    ticket = outcome.ticket
    closed = outcome.closed
    if closed is not None and current is not None and current.number == closed.number:
        _write_state(current, closed)
        current.next_check = None
    state = ticket.session
    if state is not None:
        if current is None or current.number != state.number:
            current = _new_row(session, view, state, cursor)
        _write_ticket(view.policy, current, ticket, priority)
        current.cursor = max(current.cursor or 0, cursor)
    if outcome.routing is not None:
        _save_routing(session, view.tenant.id, outcome.routing)
    for say in outcome.say:
        job = _say(session, view.conversation, say)
        if job:
            after.jobs.append((outbox.OUT, view.conversation.id, job))
    for work in outcome.work:
        action = _work(session, view.conversation, work)
        if action is not None:
            after.actions.append(action)
    session.flush()
    return current


def _new_row(session: Session, view: _View, state: SessionState, cursor: int) -> ServiceSession:
    row = ServiceSession(
        tenant_id=view.tenant.id,
        conversation_id=view.conversation.id,
        number=state.number,
        state=state.to_dict(),
        cursor=cursor,
        opened_at=_utc(state.opened_at),
    )
    session.add(row)
    session.flush()
    return row


def _write_state(row: ServiceSession, state: SessionState) -> None:
    """A session's state and the KPI columns read from it."""
    row.state = state.to_dict()
    row.opened_at = _utc(state.opened_at)
    row.first_response_at = _utc(state.first_response_at)
    row.closed_at = _utc(state.closed_at)
    row.close_reason = state.close_reason
    row.rating = state.rating


@overload
def _utc(moment: dt.datetime) -> dt.datetime: ...
@overload
def _utc(moment: None) -> None: ...
@overload
def _utc(moment: dt.datetime | None) -> dt.datetime | None: ...
def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    """In UTC, as every column holds it (SQLite keeps no offset: a
    moment in a line's time zone would read back shifted)."""
    return moment.astimezone(dt.UTC) if moment is not None else None


def _write_ticket(
    policy: ServicePolicy, row: ServiceSession, ticket: Ticket, priority: str | None = None
) -> None:
    assert ticket.session is not None
    _write_state(row, ticket.session)
    row.line = ticket.line
    row.owner_id = ticket.owner
    row.route_reason = ticket.route_reason
    row.menu = ticket.menu.to_dict() if ticket.menu else None
    # the session's priority is its first message's: kept once the SLA started
    priority = (row.sla or {}).get("priority") or priority
    row.sla = engine.sla_to_dict(ticket.sla, priority) if ticket.sla is not None else None
    row.next_check = _utc(engine.next_check(policy, ticket))


def _say(session: Session, conversation: Conversation, say: engine.Say) -> str | None:
    """A message the bridge sends the client, stored as an ordinary
    outbound message (marked ``auto``: the channel marks it automatic)."""
    from bridge.pipeline.outbound.accept import take_seq

    now = utcnow()
    session.add(
        Message(
            uid=str(uuid.uuid4()),
            tenant_id=conversation.tenant_id,
            conversation_id=conversation.id,
            channel_account_id=conversation.channel_account_id,
            direction=outbox.OUT,
            seq=take_seq(session, conversation.id),
            dedupe_key=f"service:{uuid.uuid4().hex}",
            kind=MessageKind.TEXT.value,
            text=say.text,
            payload={
                "auto": AUTO,
                "service": say.kind,
                **({"buttons": [list(b) for b in say.buttons]} if say.buttons else {}),
            },
            sent_at=now,
            status=MessageStatus.PENDING,
            created_at=now,
        )
    )
    session.flush()
    return outbox.bump(session, conversation.tenant_id, conversation.id, outbox.OUT)


def _work(session: Session, conversation: Conversation, work: engine.Work) -> int | None:
    """A CRM action row (once per key); its id to enqueue, None when asked before."""
    key = work.key[:200]
    exists = session.scalar(
        select(ServiceAction.id).where(
            ServiceAction.tenant_id == conversation.tenant_id, ServiceAction.key == key
        )
    )
    if exists is not None:
        return None
    payload: dict[str, Any] = {"text": work.text, "owner": work.owner, "fields": dict(work.fields)}
    if work.tags:
        payload["tags"] = list(work.tags)
    if conversation.crm_entity_id:
        # the deal the work is about is the one the conversation is on now
        # (a later message may open another: the rated deal keeps its rating)
        payload["entity"] = [conversation.crm_entity_type or "deal", conversation.crm_entity_id]
    if work.due is not None:
        payload["due"] = work.due.isoformat()
    action = ServiceAction(
        tenant_id=conversation.tenant_id,
        conversation_id=conversation.id,
        key=key,
        kind=work.kind,
        payload=payload,
        state="pending",
        attempts=0,
        next_check=utcnow(),
    )
    session.add(action)
    session.flush()
    return action.id


def _routing_state(session: Session, tenant_id: int) -> routing.RoutingState:
    row = session.get(TenantService, tenant_id)
    return routing.RoutingState.from_dict(row.routing if row else None)


def _save_routing(session: Session, tenant_id: int, state: routing.RoutingState) -> None:
    row = session.get(TenantService, tenant_id, with_for_update=True)
    if row is None:
        session.add(TenantService(tenant_id=tenant_id, routing=state.to_dict()))
    else:
        row.routing = state.to_dict()


def _staff(session: Session, tenant_id: int, line: Line, now: dt.datetime) -> routing.Staff:
    """The line's members now: on shift while the line is open (members
    share their line's hours), their load (open sessions they own) and
    when they were last given one."""
    on_shift = is_open(line.hours, now)
    rows = session.execute(
        select(
            ServiceSession.owner_id,
            func.count(ServiceSession.id).filter(ServiceSession.closed_at.is_(None)),
            func.max(ServiceSession.opened_at),
        )
        .where(ServiceSession.tenant_id == tenant_id, ServiceSession.owner_id.in_(line.members))
        .group_by(ServiceSession.owner_id)
    ).all()
    known = {str(owner): (int(load or 0), last) for owner, load, last in rows}
    staff: dict[str, routing.Member] = {}
    for member in line.members:
        load, last = known.get(member, (0, None))
        staff[member] = routing.Member(
            on_shift=on_shift, load=load, last_assigned=aware(last) if last else None
        )
    return staff


def _enqueue(runtime: Runtime, after: After) -> None:
    from bridge.jobs import enqueue

    for direction, conversation_id, job in after.jobs:
        enqueue(
            runtime.queues, direction, conversation_id, job, timeout=runtime.settings.job_timeout
        )
    for action_id in after.actions:
        _enqueue_action(runtime, action_id)


# -- operator replies and the CRM closing -------------------------------------------------------


def operator_replied(
    runtime: Runtime, session: Session, conversation_id: int, text: str, at: dt.datetime
) -> tuple[bool, list[tuple[str, int, str]], list[int]]:
    """A rep's reply stored in ``session``'s transaction: ``(command, jobs,
    actions)`` — ``command`` when the reply was a ``/transfer`` (the caller
    keeps it from the client), the jobs and CRM actions to enqueue after
    the commit. Nothing when the tenant has no service section."""
    found = _load(runtime, session, conversation_id)
    if found is None:
        return False, [], []
    view, current = found
    ticket = _ticket(view.policy, current)
    ctx = view.context(session, at, ticket)
    if view.assist is not None and transfer.parse_command(text) is None:
        view.assist.on_operator_reply(session, current, text)
    outcome = engine.with_due(ctx, ticket, engine.on_operator_reply(ctx, ticket, text))
    after = After()
    _apply(session, view, current, outcome, current.cursor if current else 0, after)
    return outcome.command, after.jobs, after.actions


def crm_closed(runtime: Runtime, session: Session, conversation_id: int, at: dt.datetime) -> After:
    """The CRM closed the conversation's deal/ticket (in ``session``'s
    transaction); what to enqueue after the commit."""
    after = After()
    found = _load(runtime, session, conversation_id)
    if found is None:
        return after
    view, current = found
    if current is None:
        return after
    ticket = _ticket(view.policy, current)
    outcome = engine.crm_closed(view.context(session, at, ticket), ticket)
    _apply(session, view, current, outcome, current.cursor, after)
    return after


def stage_changed(
    runtime: Runtime, session: Session, conversation_id: int, stage: str, at: dt.datetime
) -> After:
    """The CRM moved the conversation's deal to ``stage`` (in ``session``'s
    transaction): a stage the mapping's ``transfer.stages`` names moves the
    open session to its line. What to enqueue after the commit."""
    return _moved_by_crm(
        runtime, session, conversation_id, at, lambda ctx, t: engine.on_stage(ctx, t, stage)
    )


def tags_changed(
    runtime: Runtime,
    session: Session,
    conversation_id: int,
    tags: Sequence[str],
    at: dt.datetime,
) -> After:
    """The conversation's deal carries ``tags`` now (in ``session``'s
    transaction): a tag the mapping's ``transfer.tags`` names moves the open
    session to its line. What to enqueue after the commit."""
    return _moved_by_crm(
        runtime, session, conversation_id, at, lambda ctx, t: engine.on_tags(ctx, t, tags)
    )


def _moved_by_crm(
    runtime: Runtime,
    session: Session,
    conversation_id: int,
    at: dt.datetime,
    decide: Callable[[engine.Context, engine.Ticket], engine.Outcome],
) -> After:
    after = After()
    found = _load(runtime, session, conversation_id)
    if found is None or found[1] is None:
        return after
    view, current = found
    ticket = _ticket(view.policy, current)
    outcome = decide(view.context(session, at, ticket), ticket)
    _apply(session, view, current, outcome, current.cursor if current else 0, after)
    return after


def answers_closed_session(
    runtime: Runtime, conversation_id: int, messages: Sequence[tuple[str, dt.datetime]]
) -> int:
    """How many of the first ``messages`` (text, time) of a conversation
    whose deal the CRM closed answer its last session's rating prompt: the
    rating, then its comment. The sync writes those to the closed deal
    instead of opening a new one (a rating is no new request)."""
    with runtime.read_session() as session:
        row = session.scalars(
            select(ServiceSession)
            .where(ServiceSession.conversation_id == conversation_id)
            .order_by(ServiceSession.number.desc())
            .limit(1)
        ).first()
        if row is None or row.closed_at is None:
            return 0
        tenant = session.get(Tenant, row.tenant_id)
        if tenant is None:
            return 0
        try:
            policy = runtime.mapping_for(tenant).service
        except MappingError:
            return 0
        if policy is None:
            return 0
        windows = _line(policy, row.line).csat
        state = SessionState.from_dict(row.state)
    count = 0
    for text, at in messages:
        if state.rated_at is not None and state.rated_at == at:
            pass  # the rating, already taken by the service layer's job
        elif state.comment_at is not None and state.comment_at == at:
            pass  # its comment, likewise
        elif csat.awaits_rating(state, at, windows.rating_window) and (
            score := csat.parse_rating(text)
        ):
            state = csat.rated(state, score, at)
        elif csat.takes_comment(state, at, windows.comment_window):
            state = csat.commented(state, at)
        else:
            break
        count += 1
    return count


def new_session_since(
    runtime: Runtime, conversation_id: int, at: dt.datetime
) -> dt.datetime | None:
    """When a new session began before the client's message at ``at``,
    where the mapping gives each session a deal of its own
    (``service.new_deal_per_session``): the moment the last session went
    idle (closed by the sweeper, or idle by ``at``: the service job may not
    have closed it yet, so the sync decides by the same rule); None when
    ``at`` is in the same session or the mapping keeps one deal."""
    with runtime.read_session() as session:
        row = session.scalars(
            select(ServiceSession)
            .where(ServiceSession.conversation_id == conversation_id)
            .order_by(ServiceSession.number.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        tenant = session.get(Tenant, row.tenant_id)
        if tenant is None:
            return None
        try:
            policy = runtime.mapping_for(tenant).service
        except MappingError:
            return None
        if policy is None or not policy.new_deal_per_session:
            return None
        state = SessionState.from_dict(row.state)
        idle = dt.timedelta(hours=_line(policy, row.line).session_idle_hours)
    if state.is_open and state.number > 1 and state.opened_at <= at:
        return state.opened_at  # the session this message belongs to, a later one
    if not state.is_open:
        went = state.closed_at if state.close_reason == "idle" else None
    else:
        went = state.last_activity + idle  # idle by now: the service job is behind
    return went if went is not None and went <= at else None


def owner_changed(session: Session, conversation_id: int, owner_id: str) -> None:
    """Someone gave the deal to another owner in the CRM: the open session
    is theirs (the load routing counts follows)."""
    current = _current(session, conversation_id)
    if current is not None and current.closed_at is None:
        current.owner_id = owner_id[:64]


def rate_by_link(runtime: Runtime, claim: csat.LinkClaim, now: dt.datetime) -> str:
    """A signed rating link was opened: the session it names is rated
    (once). Returns ``rated``, ``already`` or ``unknown`` (no such session
    of that tenant any more)."""
    conversation_id, _, number = claim.session_key.partition(":")
    after = After()
    with runtime.transaction() as session:
        row = session.scalars(
            select(ServiceSession)
            .where(
                ServiceSession.conversation_id == int(conversation_id),
                ServiceSession.number == int(number),
                ServiceSession.tenant_id == int(claim.tenant_id),
            )
            .with_for_update()
        ).first()
        if row is None or row.closed_at is None:
            return "unknown"
        if row.rating is not None:
            return "already"
        found = _load(runtime, session, row.conversation_id)
        if found is None:
            return "unknown"
        view, _ = found
        ticket = _ticket(view.policy, row)
        assert ticket.session is not None
        ctx = view.context(session, now, ticket)
        outcome = engine.rate(ctx, ticket, ticket.session, claim.score)
        _write_ticket(view.policy, row, outcome.ticket)
        for work in outcome.work:
            action = _work(session, view.conversation, work)
            if action is not None:
                after.actions.append(action)
    _enqueue(runtime, after)
    return "rated"


def enqueue_after(runtime: Runtime, after: After) -> None:
    """Enqueue what :func:`crm_closed` asked for, after the commit."""
    _enqueue(runtime, after)


# -- the clock ---------------------------------------------------------------------------------


def sweep(runtime: Runtime, *, now: dt.datetime | None = None, limit: int = 200) -> int:
    """One pass: sessions whose time came (idle close, SLA alerts) and CRM
    actions due; how many were looked at."""
    now = now or utcnow()
    with runtime.read_session() as session:
        due = list(
            session.scalars(
                select(ServiceSession.id)
                .where(ServiceSession.next_check <= now)
                .order_by(ServiceSession.next_check)
                .limit(limit)
            )
        )
        actions = list(
            session.scalars(
                select(ServiceAction.id)
                .where(ServiceAction.state == "pending", ServiceAction.next_check <= now)
                .order_by(ServiceAction.next_check)
                .limit(limit)
            )
        )
    for session_id in due:
        tick(runtime, session_id, now=now)
    for action_id in actions:
        _enqueue_action(runtime, action_id)
    return len(due) + len(actions)


def tick(runtime: Runtime, session_id: int, *, now: dt.datetime | None = None) -> None:
    """The clock at ``now`` for one session (its row locked)."""
    now = now or utcnow()
    after = After()
    with runtime.transaction() as session:
        row = session.get(ServiceSession, session_id, with_for_update=True)
        if row is None or row.next_check is None or aware(row.next_check) > now:
            return
        newest = _current(session, row.conversation_id)
        if newest is None or newest.id != row.id:
            row.next_check = None  # an older session: its clocks ended with it
            return
        found = _load(runtime, session, row.conversation_id)
        if found is None:
            row.next_check = None
            return
        view, current = found
        ticket = _ticket(view.policy, current)
        outcome = engine.on_tick(view.context(session, now, ticket), ticket)
        _apply(session, view, current, outcome, row.cursor, after)
        if current is not None and current.next_check is not None:
            if aware(current.next_check) <= now:
                current.next_check = None  # nothing more this pass can do
    # counted once committed (the returns above count nothing)
    metrics.sla_alerts(runtime.redis, ticket.sla, outcome.ticket.sla, row.tenant_id)
    _enqueue(runtime, after)


# -- CRM actions ---------------------------------------------------------------------------------


def _enqueue_action(runtime: Runtime, action_id: int) -> None:
    from bridge.jobs import enqueue_task

    enqueue_task(
        runtime.queues,
        run_action_job,
        action_id,
        "service-action",
        timeout=runtime.settings.job_timeout,
    )


def run_action_job(action_id: int) -> str:
    """RQ job: one CRM action of the service layer."""
    from bridge.runtime import get_runtime

    return run_action(get_runtime(), action_id)


def run_action(runtime: Runtime, action_id: int, *, now: dt.datetime | None = None) -> str:
    """Do one CRM action once (claimed with a lease; a task is keyed by the
    action's key, a note by it too). Returns what happened."""
    now = now or utcnow()
    with runtime.transaction() as session:
        claimed = session.execute(
            update(ServiceAction)
            .where(
                ServiceAction.id == action_id,
                ServiceAction.state == "pending",
                ServiceAction.next_check <= now,
            )
            .values(next_check=now + ACTION_LEASE, attempts=ServiceAction.attempts + 1)
        )
        if not rowcount(claimed):
            return "not due"
        action = session.get(ServiceAction, action_id)
        assert action is not None
        conversation = session.get(Conversation, action.conversation_id)
        tenant = session.get(Tenant, action.tenant_id)
        if conversation is None or tenant is None:
            action.state, action.error = "failed", "conversation gone"
            return "failed"
        if tenant.status != TenantStatus.ACTIVE:
            action.next_check = now + dt.timedelta(minutes=5)
            return "paused"
        contact = session.get(Contact, conversation.contact_id)
        crm_contact = conversation.crm_contact_id or (contact.crm_contact_id if contact else None)
        kind, key, payload, attempts = (
            action.kind,
            action.key,
            dict(action.payload),
            action.attempts,
        )
        named = action.payload.get("entity")
        if named:
            entity: CrmRef | None = CrmRef(str(named[0]), str(named[1]))
        elif conversation.crm_entity_id:
            entity = CrmRef(conversation.crm_entity_type or "deal", conversation.crm_entity_id)
        else:
            entity = None
    from bridge.pipeline.retry import call_with_retries

    if kind == "notify":
        return _notify(runtime, action_id, tenant.id, key, payload, attempts, now)
    if crm_contact is None or (kind == "entity" and entity is None):
        # the sync has not written the client (or their deal) yet: soon it
        # will; looked at again shortly, without counting as a failure
        pause = min(ACTION_BACKOFF_CAP, SYNC_WAIT * 2 ** min(attempts - 1, 8))
        with runtime.transaction() as session:
            session.execute(
                update(ServiceAction)
                .where(ServiceAction.id == action_id)
                .values(next_check=now + pause, error="waiting for the client's CRM records")
            )
        return "waiting"
    try:
        adapter = runtime.crm_adapter(tenant)
        ref = CrmRef("contact", crm_contact)
        if kind == "task":
            draft = TaskDraft(
                bridge_id=key,
                subject=str(payload["text"])[:250],
                body=str(payload["text"]),
                due_at=dt.datetime.fromisoformat(str(payload.get("due") or now.isoformat())),
                contact=ref,
                entity=entity,
                owner_id=payload.get("owner"),
                maybe_written=attempts > 1,
            )
            call_with_retries(runtime.settings, adapter.create_task, draft)
        elif kind == "entity":
            assert entity is not None
            fields = {str(k): str(v) for k, v in (payload.get("fields") or {}).items()}
            if fields or payload.get("owner"):
                call_with_retries(
                    runtime.settings, adapter.update_entity, entity, fields, payload.get("owner")
                )
            tags = [str(tag) for tag in payload.get("tags") or ()]
            if tags:
                call_with_retries(runtime.settings, adapter.tag_entity, entity, tags)
        else:
            call_with_retries(
                runtime.settings, adapter.note_contact, ref, str(payload["text"]), key
            )
    except (RetryableError, AuthError) as exc:
        return _action_later(runtime, action_id, attempts, exc, now)
    except (PermanentError, NotImplementedError) as exc:
        _action_done(runtime, action_id, "failed", str(getattr(exc, "message", "") or exc))
        return "failed"
    _action_done(runtime, action_id, "done", None)
    return "done"


def _notify(
    runtime: Runtime,
    action_id: int,
    tenant_id: int,
    key: str,
    payload: dict[str, Any],
    attempts: int,
    now: dt.datetime,
) -> str:
    """A supervisor's alert sent to their chat or address through the
    tenant's active account of that channel (an automatic message, not a
    conversation of a client's)."""
    fields = payload.get("fields") or {}
    kind, to = str(fields.get("channel") or ""), str(fields.get("to") or "")
    with runtime.read_session() as session:
        account = session.scalars(
            select(ChannelAccount)
            .where(
                ChannelAccount.tenant_id == tenant_id,
                ChannelAccount.kind == kind,
                ChannelAccount.status == ChannelStatus.ACTIVE,
            )
            .order_by(ChannelAccount.id)
            .limit(1)
        ).first()
        if account is not None:
            session.expunge(account)
    if account is None or not to:
        _action_done(runtime, action_id, "failed", f"no active {kind or 'channel'} account")
        return "failed"
    text = str(payload.get("text") or "")
    message = OutboundMessage(
        bridge_id=f"alert-{action_id}",
        external_thread_id=to,
        text=text,
        # what a channel that writes first needs (an e-mail's address, subject)
        thread_state={"address": to, "subject": text[:120]},
        auto="alert",
    )
    from bridge.pipeline.retry import call_with_retries

    try:
        adapter = runtime.channel_adapter(account)
        call_with_retries(runtime.settings, adapter.send, message)
    except (RetryableError, AuthError) as exc:
        return _action_later(runtime, action_id, attempts, exc, now)
    except (PermanentError, NotImplementedError) as exc:
        _action_done(runtime, action_id, "failed", str(getattr(exc, "message", "") or exc))
        return "failed"
    _action_done(runtime, action_id, "done", None)
    return "done"


def _action_later(
    runtime: Runtime, action_id: int, attempts: int, exc: Exception, now: dt.datetime
) -> str:
    reason = str(getattr(exc, "message", "") or type(exc).__name__)
    if attempts >= ACTION_ATTEMPTS:
        _action_done(runtime, action_id, "failed", reason)
        return "failed"
    from bridge.pipeline.retry import doubling_pause

    pause = doubling_pause(attempts, ACTION_BACKOFF_CAP)
    with runtime.transaction() as session:
        session.execute(
            update(ServiceAction)
            .where(ServiceAction.id == action_id)
            .values(next_check=now + pause, error=reason[:2000])
        )
    return "later"


def _action_done(runtime: Runtime, action_id: int, state: str, error: str | None) -> None:
    with runtime.transaction() as session:
        session.execute(
            update(ServiceAction)
            .where(ServiceAction.id == action_id)
            .values(
                state=state,
                error=error[:2000] if error else None,
                next_check=None,
                done_at=utcnow(),
            )
        )


#: how far ahead ``bridge status`` looks for SLA due times
AT_RISK = dt.timedelta(hours=1)


def at_risk(
    runtime: Runtime, tenant_id: int | None = None, *, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Open sessions whose nearest SLA due time is past or within
    :data:`AT_RISK` (``bridge status``), the most urgent first, and the CRM
    actions that failed for good."""
    now = now or utcnow()
    scope = [ServiceSession.tenant_id == tenant_id] if tenant_id else []
    found: list[dict[str, Any]] = []
    with runtime.read_session() as session:
        rows = session.execute(
            select(ServiceSession, Tenant)
            .join(Tenant, Tenant.id == ServiceSession.tenant_id)
            .where(ServiceSession.closed_at.is_(None), ServiceSession.sla.is_not(None), *scope)
            .order_by(ServiceSession.id)
            .limit(2000)
        ).all()
        for row, tenant in rows:
            due = _due(runtime, tenant, row)
            if due is not None and due <= now + AT_RISK:
                found.append(
                    {
                        "tenant": tenant.slug,
                        "conversation": row.conversation_id,
                        "session": row.number,
                        "line": row.line,
                        "owner": row.owner_id,
                        "due": due,
                        "breached": due <= now,
                    }
                )
    return sorted(found, key=lambda f: f["due"])


def _due(runtime: Runtime, tenant: Tenant, row: ServiceSession) -> dt.datetime | None:
    try:
        policy = runtime.mapping_for(tenant).service
    except MappingError:
        return None
    if policy is None or row.sla is None:
        return None
    state = engine.sla_from_dict(row.sla, _line(policy, row.line))
    return sla_due(state) if state is not None else None


def failed_actions(runtime: Runtime, tenant_id: int | None = None) -> list[dict[str, Any]]:
    """The service layer's CRM writes that failed for good (``bridge status``)."""
    scope = [ServiceAction.tenant_id == tenant_id] if tenant_id else []
    with runtime.read_session() as session:
        return [
            {"conversation": a.conversation_id, "kind": a.kind, "key": a.key, "error": a.error}
            for a in session.scalars(
                select(ServiceAction)
                .where(ServiceAction.state == "failed", *scope)
                .order_by(ServiceAction.id)
                .limit(100)
            )
        ]


def sessions_of(session: Session, conversation_id: int) -> Sequence[ServiceSession]:
    """The conversation's sessions, oldest first (the KPIs' record)."""
    return list(
        session.scalars(
            select(ServiceSession)
            .where(ServiceSession.conversation_id == conversation_id)
            .order_by(ServiceSession.number)
        )
    )
