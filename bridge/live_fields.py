"""The CRM contact's fields the bridge keeps current.

A mapping's contact field is *live* when its template uses a placeholder
whose value changes without a message (``{client.reachable}``: "WhatsApp:
template only; Telegram: blocked"; ``mappings.schema.LIVE_PLACEHOLDERS``).
Other contact fields are written once, when the contact is created, and
then belong to the CRM's users; a live field is the bridge's and is
rewritten whenever its value changes.

What was last written is kept on the bridge's contact (``crm_live``), with
the time to look again (``crm_live_due``). The value is looked at again:

- after every sync of one of the client's conversations (the client wrote,
  merged with another client, shared a phone);
- when a reply to them failed for good or was refused (a bot blocked, an
  address bouncing) and when they gave or withdrew consent (:func:`mark_due`);
- when the answer changes by the clock alone (a reply window closing:
  ``ChannelReach.until``).

The sweeper enqueues each due contact (:func:`sweep`); one job per contact
at a time (a Redis lock) renders the fields and writes those that changed
(``CrmAdapter.write_contact_fields``). An event during a write leaves the
contact due again, so the CRM ends with the newest value.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge import identity, reach
from bridge.db import rowcount
from bridge.errors import AuthError, PermanentError, RetryableError
from bridge.locks import ConversationLock
from bridge.model import CrmRef, utcnow
from bridge.rows import aware
from bridge.tables import Contact, Conversation, Tenant, TenantStatus
from bridge.templates import render_all
from mappings import MappingError
from mappings.schema import MappingConfig

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = [
    "after_sync",
    "mark_conversation",
    "mark_due",
    "refresh",
    "run_refresh",
    "sweep",
    "values",
]

log = logging.getLogger(__name__)

#: how long an enqueued or running refresh holds a contact before the
#: sweeper enqueues it again (a job that died)
LEASE = dt.timedelta(minutes=5)
#: a CRM that is down or not set up is tried again after
RETRY = dt.timedelta(minutes=5)
#: another job holds the contact: looked at again after
BUSY = dt.timedelta(seconds=10)


def values(
    session: Session, mapping: MappingConfig, contact: Contact, now: dt.datetime | None = None
) -> tuple[dict[str, str], dt.datetime | None]:
    """The live fields' values for the client (rendered from the client
    alone), and when they change by the clock alone (None: only by an
    event). Empty when the mapping has no live field."""
    templates = mapping.live_contact_fields()
    if not templates:
        return {}, None
    reaches = reach.for_contact(session, contact.id, mapping=mapping, now=now)
    context = {
        "contact.name": contact.display_name,
        "contact.phone": contact.phone,
        "contact.email": contact.email,
        reach.PLACEHOLDER: reach.summary(reaches, mapping.language),
    }
    until = min((r.until for r in reaches if r.until is not None), default=None)
    return render_all(templates, context), until


def changed(written: Mapping[str, str] | None, rendered: Mapping[str, str]) -> dict[str, str]:
    """The fields whose value differs from what was last written."""
    written = written or {}
    return {k: v for k, v in rendered.items() if written.get(k) != v}


def after_sync(
    session: Session, mapping: MappingConfig, contact_id: int, *, now: dt.datetime | None = None
) -> bool:
    """After a sync of one of the client's conversations: due now when a
    live field changed, else due when the clock changes one. True when due
    now. Does nothing for a client the CRM does not know yet."""
    contact = _live(session, contact_id)
    if contact is None or not contact.crm_contact_id:
        return False
    now = now or utcnow()
    rendered, until = values(session, mapping, contact, now)
    if not rendered:
        return False
    if changed(contact.crm_live, rendered):
        contact.crm_live_due = now
        return True
    due = aware(contact.crm_live_due) if contact.crm_live_due else None
    if until is not None and (due is None or until < due):
        contact.crm_live_due = until
    return False


def mark_due(session: Session, contact_id: int, *, now: dt.datetime | None = None) -> None:
    """Something that may change a live field happened to the client (a
    send failed for good, consent given or withdrawn): look again now."""
    contact = _live(session, contact_id)
    if contact is not None and contact.crm_contact_id:
        contact.crm_live_due = now or utcnow()


def mark_conversation(
    session: Session, conversation_id: int, *, now: dt.datetime | None = None
) -> None:
    """:func:`mark_due` for the client of a conversation."""
    contact_id = session.scalar(
        select(Conversation.contact_id).where(Conversation.id == conversation_id)
    )
    if contact_id is not None:
        mark_due(session, contact_id, now=now)


def sweep(runtime: Runtime, *, now: dt.datetime | None = None, limit: int = 200) -> int:
    """Enqueue a refresh for each due contact, holding it for :data:`LEASE`
    (a job that dies is enqueued again then); how many were enqueued."""
    now = now or utcnow()
    with runtime.transaction() as session:
        due = list(
            session.scalars(
                select(Contact.id)
                .where(Contact.crm_live_due <= now)
                .order_by(Contact.crm_live_due)
                .limit(limit)
            )
        )
        held = []
        for contact_id in due:
            claimed = session.execute(
                update(Contact)
                .where(Contact.id == contact_id, Contact.crm_live_due <= now)
                .values(crm_live_due=now + LEASE)
            )
            if rowcount(claimed):
                held.append(contact_id)
    for contact_id in held:
        _enqueue(runtime, contact_id)
    return len(held)


def run_refresh(contact_id: int) -> str:
    """RQ job: the client's live fields written where they changed."""
    from bridge.runtime import get_runtime

    return refresh(get_runtime(), contact_id)


def refresh(runtime: Runtime, contact_id: int, *, now: dt.datetime | None = None) -> str:
    """Render the client's live fields and write those that changed on the
    CRM contact. Returns what happened."""
    lock = ConversationLock(runtime.redis, f"bridge:live:{contact_id}", ttl=LEASE.total_seconds())
    if not lock.acquire():
        _set_due(runtime, contact_id, (now or utcnow()) + BUSY)
        return "busy"
    try:
        return _refresh(runtime, contact_id, now or utcnow())
    finally:
        lock.release()


# --------------------------------------------------------------------------


def _refresh(runtime: Runtime, contact_id: int, now: dt.datetime) -> str:
    held = now + LEASE
    with runtime.transaction() as session:
        contact = session.get(Contact, contact_id, with_for_update=True)
        if contact is None:
            return "gone"
        if contact.merged_into_id is not None:
            contact.crm_live_due = None
            mark_due(session, contact.id, now=now)  # its survivor's fields, then
            return "merged"
        tenant = session.get(Tenant, contact.tenant_id)
        if tenant is None or not contact.crm_contact_id:
            contact.crm_live_due = None
            return "no CRM contact"
        if tenant.status != TenantStatus.ACTIVE:
            contact.crm_live_due = now + RETRY  # paused, or waiting for a new token
            return "paused"
        try:
            mapping = runtime.mapping_for(tenant)
        except MappingError:
            contact.crm_live_due = None  # the next sync parks on it and says why
            return "no mapping"
        rendered, until = values(session, mapping, contact, now)
        write = changed(contact.crm_live, rendered)
        if not write:
            contact.crm_live_due = until
            return "unchanged"
        contact.crm_live_due = held
        ref = CrmRef("contact", contact.crm_contact_id)
    from bridge.pipeline.retry import call_with_retries

    try:
        adapter = runtime.crm_adapter(tenant)
        call_with_retries(runtime.settings, adapter.write_contact_fields, ref, write)
    except (RetryableError, AuthError) as exc:
        log.warning("contact %s: live fields not written (%s)", contact_id, type(exc).__name__)
        _finish(runtime, contact_id, held, None, now + RETRY)
        return "later"
    except (PermanentError, NotImplementedError) as exc:
        log.warning("contact %s: live fields refused (%s)", contact_id, type(exc).__name__)
        _finish(runtime, contact_id, held, None, None)
        return "refused"
    _finish(runtime, contact_id, held, write, until)
    return "written"


def _finish(
    runtime: Runtime,
    contact_id: int,
    held: dt.datetime,
    written: Mapping[str, str] | None,
    due: dt.datetime | None,
) -> None:
    """Record what was written; the next look is ``due`` unless an event
    made the contact due meanwhile (its due is no longer the job's hold)."""
    with runtime.transaction() as session:
        contact = session.get(Contact, contact_id, with_for_update=True)
        if contact is None:
            return
        if written:
            contact.crm_live = {**(contact.crm_live or {}), **written}
        if contact.crm_live_due is not None and aware(contact.crm_live_due) == held:
            contact.crm_live_due = due


def _set_due(runtime: Runtime, contact_id: int, due: dt.datetime) -> None:
    with runtime.transaction() as session:
        session.execute(update(Contact).where(Contact.id == contact_id).values(crm_live_due=due))


def _live(session: Session, contact_id: int) -> Contact | None:
    try:
        return identity.live_contact(session, contact_id)
    except identity.IdentityError:
        return None


def _enqueue(runtime: Runtime, contact_id: int) -> None:
    from bridge.jobs import enqueue_task

    enqueue_task(
        runtime.queues, run_refresh, contact_id, "live-fields", timeout=runtime.settings.job_timeout
    )
