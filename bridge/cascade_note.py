"""A finished cascade's outcome on the CRM contact's timeline
(``bridge.cascade``): which channel delivered, when, which were skipped and
why, in the mapping's language, written once with
``CrmAdapter.note_contact`` keyed by the cascade.

The note is due in the transaction that finishes the cascade
(``note_state = pending``); a job writes it (:func:`run_note`), and the
sweeper enqueues it again while it is due. A job claims it with a lease
(``next_check`` moved ahead) so a second job keeps off while one writes;
the CRM's key lookup covers a job that died after writing. A CRM that is
down is retried with backoff; one that refuses (the contact deleted, no
notes on contacts) leaves ``note_state = failed`` with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge import reach
from bridge.db import rowcount
from bridge.errors import AuthError, PermanentError, RetryableError
from bridge.model import CrmRef, utcnow
from bridge.registry import UnknownAdapter, channel_class
from bridge.rows import aware
from bridge.tables import Cascade, CascadeStep, StepState, Tenant, TenantStatus
from mappings import MappingError

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["enqueue_note", "note", "outcome_text", "run_note", "steps_of"]

log = logging.getLogger(__name__)

#: how long a note job holds a cascade's note before another may try
NOTE_LEASE = dt.timedelta(minutes=10)
#: a failed note's retries: after 1, 2, 4 ... minutes, at most an hour
NOTE_BACKOFF_CAP = dt.timedelta(hours=1)
NOTE_ATTEMPTS = 12
#: a disabled tenant's note is looked at again after
NOTE_PAUSED = dt.timedelta(minutes=5)
_PREFIX = "cascade:"


def enqueue_note(runtime: Runtime, cascade_id: int) -> None:
    from bridge.jobs import enqueue_task

    enqueue_task(
        runtime.queues, run_note, cascade_id, "cascade-note", timeout=runtime.settings.job_timeout
    )


def run_note(cascade_id: int) -> str:
    """RQ job: the cascade's outcome on the CRM contact's timeline."""
    from bridge.runtime import get_runtime

    return note(get_runtime(), cascade_id)


def note(runtime: Runtime, cascade_id: int, *, now: dt.datetime | None = None) -> str:
    """Write the outcome note once (a lease keeps a second job off it
    while one writes; the CRM's key lookup covers a job that died after
    writing). Returns what happened."""
    now = now or utcnow()
    with runtime.transaction() as session:
        status = session.scalar(
            select(Tenant.status)
            .join(Cascade, Cascade.tenant_id == Tenant.id)
            .where(Cascade.id == cascade_id)
        )
        if status == TenantStatus.DISABLED:
            # paused by an admin: looked at again later, nothing written now
            session.execute(
                update(Cascade).where(Cascade.id == cascade_id).values(next_check=now + NOTE_PAUSED)
            )
            return "paused"
        claimed = session.execute(
            update(Cascade)
            .where(
                Cascade.id == cascade_id,
                Cascade.note_state == "pending",
                Cascade.next_check <= now,
            )
            .values(next_check=now + NOTE_LEASE, note_attempts=Cascade.note_attempts + 1)
        )
        if not rowcount(claimed):
            return "not due"
        cascade = session.get(Cascade, cascade_id)
        assert cascade is not None
        tenant = session.get(Tenant, cascade.tenant_id)
        assert tenant is not None
        language = _language(runtime, tenant)
        text = outcome_text(session, cascade, language)
        ref, key, attempts = (
            CrmRef("contact", cascade.crm_contact_id),
            cascade.uid,
            cascade.note_attempts,
        )
    from bridge.pipeline.retry import call_with_retries

    try:
        adapter = runtime.crm_adapter(tenant)
        call_with_retries(runtime.settings, adapter.note_contact, ref, text, f"{_PREFIX}{key}")
    except (RetryableError, AuthError) as exc:
        return _note_later(runtime, cascade_id, attempts, exc.message or type(exc).__name__, now)
    except (PermanentError, NotImplementedError) as exc:
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        _note_done(runtime, cascade_id, "failed", reason)
        return "failed"
    _note_done(runtime, cascade_id, "done", None)
    return "done"


def _note_later(
    runtime: Runtime, cascade_id: int, attempts: int, error: str, now: dt.datetime
) -> str:
    if attempts >= NOTE_ATTEMPTS:
        _note_done(runtime, cascade_id, "failed", error)
        return "failed"
    from bridge.pipeline.retry import doubling_pause

    pause = doubling_pause(attempts, NOTE_BACKOFF_CAP)
    with runtime.transaction() as session:
        session.execute(
            update(Cascade)
            .where(Cascade.id == cascade_id)
            .values(next_check=now + pause, note_error=error[:2000])
        )
    return "later"


def _note_done(runtime: Runtime, cascade_id: int, state: str, error: str | None) -> None:
    with runtime.transaction() as session:
        session.execute(
            update(Cascade)
            .where(Cascade.id == cascade_id)
            .values(
                note_state=state,
                note_error=error[:2000] if error else None,
                next_check=None,
            )
        )


_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "delivered": "Cascade message: delivered on {channel} ({how}) at {when}.",
        "undelivered": "Cascade message: not delivered on any channel.",
        "skipped": "skipped ({why})",
        "failed": "failed ({why})",
        "timed_out": "no delivered/read within {minutes} min",
        "waiting": "not needed",
        "sending": "sending",
        "delivered_step": "{how}",
        "text": "Text: {text}",
        "delivered_how": "delivered",
        "read_how": "read",
        "sent_how": "sent; the channel confirms no delivery",
        "no_conversation": "no conversation or address on this channel",
    },
    "ru": {
        "delivered": "Каскадное сообщение: доставлено в {channel} ({how}) {when}.",
        "undelivered": "Каскадное сообщение: не доставлено ни в один канал.",
        "skipped": "пропущен ({why})",
        "failed": "ошибка ({why})",
        "timed_out": "не доставлено и не прочитано за {minutes} мин",
        "waiting": "не понадобился",
        "sending": "отправляется",
        "delivered_step": "{how}",
        "text": "Текст: {text}",
        "delivered_how": "доставлено",
        "read_how": "прочитано",
        "sent_how": "отправлено; канал не подтверждает доставку",
        "no_conversation": "нет переписки или адреса в этом канале",
    },
}


def _words(language: str, key: str) -> str:
    return _TEXTS.get(language, _TEXTS["en"])[key]


def outcome_text(session: Session, cascade: Cascade, language: str) -> str:
    """The note: the outcome, then each channel's line, then the text."""
    steps = steps_of(session, cascade.id)
    lines: list[str] = []
    won = next((s for s in steps if s.state == StepState.DELIVERED), None)
    if won is not None and won.finished_at is not None:
        lines.append(
            _words(language, "delivered").format(
                channel=_title(won.channel),
                how=_how(language, won.reason),
                when=aware(won.finished_at).strftime("%Y-%m-%d %H:%M UTC"),
            )
        )
    else:
        lines.append(_words(language, "undelivered"))
    for step in steps:
        lines.append(f"- {_title(step.channel)}: {_step_words(language, cascade, step)}")
    lines.append(_words(language, "text").format(text=_short(cascade.text)))
    return "\n".join(lines)


def _step_words(language: str, cascade: Cascade, step: CascadeStep) -> str:
    if step.state == StepState.SKIPPED:
        if step.reason == "no_conversation":
            why = _words(language, "no_conversation")
        else:
            why = _reason_words(step.reason or "", language)
        return _words(language, "skipped").format(why=why)
    if step.state == StepState.FAILED:
        return _words(language, "failed").format(why=_short(step.detail or "", 200))
    if step.state == StepState.TIMED_OUT:
        return _words(language, "timed_out").format(minutes=cascade.wait_minutes)
    if step.state == StepState.DELIVERED:
        return _how(language, step.reason)
    return _words(language, str(step.state))


def _reason_words(reason: str, language: str) -> str:
    texts = reach.WORDS.get(reason)
    return texts.get(language, texts["en"]) if texts else reason


def _how(language: str, reached: str | None) -> str:
    key = f"{reached}_how" if reached in ("delivered", "read", "sent") else "delivered_how"
    return _words(language, key)


def _title(kind: str) -> str:
    try:
        return channel_class(kind).title
    except UnknownAdapter:  # a channel removed since: its slug
        return kind


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def steps_of(session: Session, cascade_id: int) -> Sequence[CascadeStep]:
    return session.scalars(
        select(CascadeStep)
        .where(CascadeStep.cascade_id == cascade_id)
        .order_by(CascadeStep.position)
    ).all()


def _language(runtime: Runtime, tenant: Tenant) -> str:
    """The mapping's language (English while the mapping cannot be read:
    the note still goes)."""
    try:
        return str(runtime.mapping_for(tenant).language or "en")
    except MappingError:
        return "en"
