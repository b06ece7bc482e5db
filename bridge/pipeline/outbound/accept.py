"""The outbound pipeline's webhook side: what a CRM told us, stored before
the answer.

``accept_crm_events()`` mirrors inbound acceptance: each reply becomes an
outbound message row (unique on the CRM's message id, so a redelivered
webhook changes nothing) in the conversation it goes out in (the chat the
CRM named, else the one the client last wrote in, or the channel a
``/channel`` prefix asks for: :mod:`bridge.pipeline.outbound.route`), in one
transaction, before the webhook answers; other events keep our view of the
CRM in step (an entity closed, an owner changed, a contact removed, the app
uninstalled).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.model import Attachment, CrmEvent, CrmEventKind, MessageKind
from bridge.pipeline.followup import due
from bridge.pipeline.outbound.route import Routed, named_conversation, route
from bridge.tables import (
    ChannelAccount,
    Contact,
    Conversation,
    ConversationStatus,
    Message,
    MessageStatus,
    Tenant,
    TenantStatus,
)
from mappings import MappingError

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["CrmAcceptResult", "accept_crm_events"]

log = logging.getLogger(__name__)


@dataclass
class CrmAcceptResult:
    stored: int = 0
    duplicates: int = 0
    ignored: int = 0
    unroutable: int = 0
    jobs: list[tuple[str, int, str]] = field(default_factory=list)
    #: the conversations a reply was stored in (a job or not: a reply stored
    #: behind one still pending bumps no new job, yet its client must hear)
    replied: set[int] = field(default_factory=set)


# --------------------------------------------------------------------------


def _route(
    session: Session, tenant_id: int, event: CrmEvent, language: Callable[[], str]
) -> Routed | None:
    """The tenant's conversation a CRM reply goes out in (never another
    tenant's) and the text it sends (:mod:`bridge.pipeline.outbound.route`:
    the chat the CRM names, else the one the client last wrote in, or the
    channel a ``/channel`` prefix asks for)."""
    return route(session, tenant_id, event, language)


#: the service layer's word on a rep's reply (``bridge.service.runner``):
#: (session, conversation id, text, when) -> True for a command to the
#: bridge (``/transfer 2``) that the client must not get
OnReply = Callable[[Session, int, str, dt.datetime], bool]


def _store_reply(
    session: Session,
    tenant_id: int,
    event: CrmEvent,
    result: CrmAcceptResult,
    language: Callable[[], str] = lambda: "en",
    on_reply: OnReply | None = None,
) -> None:
    exists = session.scalar(
        # the CRM's id, in any of the tenant's accounts: a redelivered
        # webhook may route elsewhere once the client wrote on another channel
        select(Message.id).where(
            Message.channel_account_id.in_(
                select(ChannelAccount.id).where(ChannelAccount.tenant_id == tenant_id)
            ),
            Message.direction == outbox.OUT,
            Message.dedupe_key == event.external_id,
        )
    )
    if exists is not None:
        result.duplicates += 1
        return
    routed = _route(session, tenant_id, event, language)
    if routed is None:
        result.unroutable += 1
        log.warning(
            "tenant %s: CRM reply %s names no known conversation", tenant_id, event.external_id
        )
        return
    conversation = routed.conversation
    named = routed.named
    if event.crm_thread_id and named is not None and not named.crm_thread_id:
        named.crm_thread_id = event.crm_thread_id
    if routed.refusal is None and on_reply is not None:
        if on_reply(session, conversation.id, routed.text or "", event.occurred_at):
            # a command to the bridge, acted on: kept, never sent; the CRM
            # reads so in the reply's delivery report
            routed = replace(routed, refusal=_COMMAND.get(language(), _COMMAND["en"]))
    seq = take_seq(session, conversation.id)
    message = Message(
        uid=str(uuid.uuid4()),
        tenant_id=tenant_id,
        conversation_id=conversation.id,
        channel_account_id=conversation.channel_account_id,
        direction=outbox.OUT,
        seq=seq,
        dedupe_key=event.external_id,
        kind=MessageKind.TEXT.value if not event.attachments else event.attachments[0].kind.value,
        text=routed.text,
        payload={
            "attachments": [_attachment_dict(a) for a in event.attachments],
            "author_id": event.author_id,
            "author_name": event.author_name,
            "crm_thread_id": event.crm_thread_id,
            **({"reply_to": event.reply_to} if _answers_here(session, routed, event) else {}),
            **({"channel_asked": routed.asked} if routed.asked else {}),
        },
        sent_at=event.occurred_at,
        crm_message_id=event.external_id,
        status=MessageStatus.PENDING if routed.refusal is None else MessageStatus.REFUSED,
        last_error=routed.refusal,
    )
    session.add(message)
    result.stored += 1
    if routed.refusal is not None:
        # nothing goes out: the CRM reads why in the reply's delivery report
        session.flush()
        report = due(session, message, outbox.REPORT)
        if report:
            result.jobs.append((outbox.REPORT, conversation.id, report))
        log.info("tenant %s: reply %s refused by its channel prefix", tenant_id, message.uid)
        return
    job = outbox.bump(session, tenant_id, conversation.id, outbox.OUT)
    if job:
        result.jobs.append((outbox.OUT, conversation.id, job))
    result.replied.add(conversation.id)


_COMMAND = {
    "en": "a command to the bridge: done, not sent to the client",
    "ru": "команда для моста: выполнена, клиенту не отправлена",
}


def _answers_here(session: Session, routed: Routed, event: CrmEvent) -> bool:
    """Whether the message the rep answered (``reply_to``) is quoted: in
    the chat the CRM named as the CRM gave it; in a conversation chosen for
    the rep only when it is that conversation's own message (another
    channel's message id means nothing there)."""
    if not event.reply_to:
        return False
    if routed.how == "named" and routed.named is routed.conversation:
        return True
    found = session.scalar(
        select(Message.id).where(
            Message.uid == event.reply_to,
            Message.conversation_id == routed.conversation.id,
        )
    )
    return found is not None


def take_seq(session: Session, conversation_id: int) -> int:
    """The conversation's next message seq, taken under its row lock (held
    to the end of the caller's transaction: its writers commit in seq
    order, which a hosted channel's client resuming "after seq N" relies on)."""
    top = session.scalar(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(next_seq=Conversation.next_seq + 1)
        .returning(Conversation.next_seq)
    )
    assert top is not None
    return int(top) - 1


def _attachment_dict(a: Attachment) -> dict[str, Any]:
    return {k: v for k, v in a.__dict__.items() if v not in (None, "")}


def _apply_state_event(session: Session, tenant_id: int, event: CrmEvent) -> None:
    """Keep our view of the CRM in step (the tenant's rows only)."""
    if event.kind is CrmEventKind.APP_REMOVED:
        # Uninstalled: stop calling the CRM; messages wait (parked) until a
        # re-install re-authorises the tenant.
        session.execute(
            update(Tenant)
            .where(Tenant.id == tenant_id)
            .values(
                status=TenantStatus.NEEDS_REAUTH, status_reason="the app was uninstalled in the CRM"
            )
        )
        return
    if event.kind is CrmEventKind.CONTACT_MERGED:
        if event.contact is not None and event.merged_into is not None:
            # a person merged two contacts in the CRM: follow it (the
            # survivor stays; the clients behind both become one)
            from bridge import identity

            identity.follow_crm_merge(session, tenant_id, event.contact.id, event.merged_into.id)
        return
    if event.kind is CrmEventKind.CONTACT_REMOVED and event.contact is not None:
        # Deleted or merged away in the CRM: the next message finds the
        # person again (identity, phone, e-mail) instead of writing to a ghost.
        session.execute(
            update(Contact)
            .where(Contact.tenant_id == tenant_id, Contact.crm_contact_id == event.contact.id)
            .values(crm_contact_id=None, crm_state=None, crm_owner_id=None)
        )
        return
    if event.entity is None:
        return
    match = (
        Conversation.tenant_id == tenant_id,
        Conversation.crm_entity_id == event.entity.id,
    )
    if event.kind is CrmEventKind.ENTITY_CLOSED:
        # won / lost / deleted: the next message opens a new one
        session.execute(update(Conversation).where(*match).values(status=ConversationStatus.CLOSED))
    elif event.kind is CrmEventKind.OWNER_CHANGED and event.owner_id:
        session.execute(update(Conversation).where(*match).values(owner_id=event.owner_id))


@dataclass
class _ServiceHooks:
    """The service layer's part in storing CRM events (a tenant whose
    mapping has a ``service:`` section): a rep's reply is the session's
    answer or a command; a closed deal closes the session; an owner
    changed in the CRM owns the open session. What they ask for is
    enqueued after the commit."""

    runtime: Runtime
    tenant_id: int
    jobs: list[tuple[str, int, str]] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)

    def on_reply(self, session: Session, conversation_id: int, text: str, at: dt.datetime) -> bool:
        from bridge.service import runner

        command, jobs, actions = runner.operator_replied(
            self.runtime, session, conversation_id, text, at
        )
        self.jobs += jobs
        self.actions += actions
        return command

    def on_state(self, session: Session, event: CrmEvent) -> None:
        from bridge.service import runner

        for conversation_id in self._conversations(session, event):
            if event.kind in (CrmEventKind.ENTITY_CLOSED, CrmEventKind.THREAD_CLOSED):
                after = runner.crm_closed(self.runtime, session, conversation_id, event.occurred_at)
                self.jobs += after.jobs
                self.actions += after.actions
            elif event.kind is CrmEventKind.OWNER_CHANGED and event.owner_id:
                runner.owner_changed(session, conversation_id, event.owner_id)
            elif event.kind is CrmEventKind.ENTITY_STAGE and event.stage:
                after = runner.stage_changed(
                    self.runtime, session, conversation_id, event.stage, event.occurred_at
                )
                self.jobs += after.jobs
                self.actions += after.actions
            elif event.kind is CrmEventKind.ENTITY_TAGS:
                after = runner.tags_changed(
                    self.runtime, session, conversation_id, event.tags, event.occurred_at
                )
                self.jobs += after.jobs
                self.actions += after.actions

    def _conversations(self, session: Session, event: CrmEvent) -> Sequence[int]:
        """The conversations the event is about: the deal's, or the one chat
        the CRM closed (named by our uid or the CRM's thread id)."""
        if event.kind is CrmEventKind.THREAD_CLOSED:
            named = named_conversation(session, self.tenant_id, event)
            return [named.id] if named is not None else []
        if event.entity is None:
            return []
        return session.scalars(
            select(Conversation.id).where(
                Conversation.tenant_id == self.tenant_id,
                Conversation.crm_entity_id == event.entity.id,
            )
        ).all()

    def enqueue(self) -> None:
        from bridge.service import runner

        runner.enqueue_after(self.runtime, runner.After(self.jobs, self.actions))


def _service_hooks(runtime: Runtime, tenant_id: int) -> _ServiceHooks | None:
    return _ServiceHooks(runtime, tenant_id) if runtime.ingest_view(tenant_id)[1] else None


def _language(runtime: Runtime, session: Session, tenant_id: int) -> str:
    """The tenant's mapping's language (a refused reply's reason is in it)."""
    tenant = session.get(Tenant, tenant_id)
    try:
        return runtime.mapping_for(tenant).language if tenant is not None else "en"
    except MappingError:
        return "en"  # the sync names the mapping's problem; the rep still reads why


def accept_crm_events(
    runtime: Runtime, tenant_id: int, events: Iterable[CrmEvent]
) -> CrmAcceptResult:
    events = list(events)
    with runtime.transaction() as session:
        result = CrmAcceptResult()
        language = partial(_language, runtime, session, tenant_id)
        service = _service_hooks(runtime, tenant_id)
        for event in events:
            if event.kind is CrmEventKind.REPLY:
                _store_reply(
                    session,
                    tenant_id,
                    event,
                    result,
                    language,
                    service.on_reply if service else None,
                )
            elif event.kind in (
                CrmEventKind.ENTITY_CLOSED,
                CrmEventKind.ENTITY_STAGE,
                CrmEventKind.ENTITY_TAGS,
                CrmEventKind.THREAD_CLOSED,
                CrmEventKind.OWNER_CHANGED,
                CrmEventKind.CONTACT_REMOVED,
                CrmEventKind.CONTACT_MERGED,
                CrmEventKind.APP_REMOVED,
            ):
                _apply_state_event(session, tenant_id, event)
                if service is not None:
                    service.on_state(session, event)
                result.ignored += 1
            else:
                result.ignored += 1
    if service is not None:
        service.enqueue()
    if result.replied:
        from bridge import hosted

        # the replies are the hosted channels' clients' to read now
        hosted.announce_conversations(runtime, result.replied)
    if result.jobs:
        from bridge.jobs import enqueue

        for direction, conversation_id, job in result.jobs:
            enqueue(
                runtime.queues,
                direction,
                conversation_id,
                job,
                timeout=runtime.settings.job_timeout,
            )
    return result
