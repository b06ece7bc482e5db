"""Which channels reach a client now, and why not.

Per client (a bridge contact, following merges: the live contact's
conversations are those with ``Conversation.contact_id`` equal to its id)
and channel account: reachable or not, with a reason. The core gathers what
it knows of each conversation into a :class:`~channel_adapters.base.ReachView`
(the client's last own message, the last send that failed for good after
it, their word on consent, whether the mapping names a template for the
channel's reply window) and asks the channel
(:meth:`~channel_adapters.base.ChannelAdapter.reachability`): the channel
knows what its provider's failures and windows mean (a bot blocked, an
address bouncing, a 24-hour window, messages denied). A channel that can
write first to a handle the client has (``ChannelAdapter.reaches``: an
e-mail address) reaches them even without a conversation yet.

Used by ``bridge contacts show`` (:func:`for_contact`), the CRM contact's
``{client.reachable}`` field (:func:`summary`: "WhatsApp: yes; Telegram:
blocked") and each step of a cascade (``bridge.cascade``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import identity, outbox
from bridge.model import utcnow
from bridge.registry import UnknownAdapter, channel_class
from bridge.rows import aware
from bridge.tables import (
    ChannelAccount,
    ChannelStatus,
    Contact,
    ContactIdentity,
    Conversation,
    Message,
    MessageStatus,
    Tenant,
)
from channel_adapters.base import Reach, ReachView
from mappings.schema import MappingConfig

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = [
    "PLACEHOLDER",
    "WORDS",
    "ChannelReach",
    "for_contact",
    "for_template",
    "live_contact",
    "of_conversation",
    "opener",
    "summary",
]

#: the core's words for each ``Reach.reason``, per language (the CRM
#: contact's field and the cascade's note say them)
WORDS: dict[str, dict[str, str]] = {
    "ok": {"en": "yes", "ru": "да"},
    "window_open": {"en": "yes", "ru": "да"},
    "opens": {"en": "yes (a new thread)", "ru": "да (новая переписка)"},
    "template": {"en": "template only", "ru": "только шаблон"},
    "window_closed": {"en": "window closed, no template", "ru": "окно закрыто, шаблона нет"},
    "denied": {"en": "messages denied", "ru": "сообщения запрещены"},
    "stopped": {"en": "bot stopped", "ru": "бот остановлен"},
    "unsubscribed": {"en": "unsubscribed", "ru": "отписался"},
    "consent_withdrawn": {"en": "consent withdrawn", "ru": "согласие отозвано"},
    "blocked": {"en": "blocked", "ru": "заблокирован"},
    "bounced": {"en": "bounced", "ru": "письма возвращаются"},
    "failed": {"en": "last message failed", "ru": "последнее сообщение не дошло"},
    "disconnected": {"en": "channel disconnected", "ru": "канал отключён"},
}

#: how many of the newest inbound messages are read for the client's last
#: own one (the rest are the business's echoes)
_LOOK_BACK = 50
#: a failed send whose outcome is unknown (``deliver``): no word on reach
_UNKNOWN = "delivery outcome unknown"


@dataclass(frozen=True)
class ChannelReach:
    """One channel account's answer for one client."""

    kind: str
    title: str
    account_id: int
    #: the client's conversation there (None: one would be opened, to ``address``)
    conversation_id: int | None
    reachable: bool
    reason: str
    detail: str | None = None
    #: the handle a new thread would be opened with (never logged)
    address: str | None = None
    #: when the answer changes by the clock alone (a reply window closing)
    until: dt.datetime | None = None

    def words(self, language: str) -> str:
        """The reason in the mapping's language ("yes", "blocked")."""
        texts = WORDS.get(self.reason)
        if texts is None:
            return self.reason
        return texts.get(language, texts["en"])


def live_contact(session: Session, contact_id: int) -> Contact | None:
    """The contact ``contact_id`` is now (merges followed), or None when
    there is no such contact."""
    try:
        return identity.live_contact(session, contact_id)
    except identity.IdentityError:
        return None


def for_contact(
    session: Session,
    contact_id: int,
    *,
    mapping: MappingConfig | None = None,
    now: dt.datetime | None = None,
) -> list[ChannelReach]:
    """Every channel the client (merges followed) has a conversation on, or
    could be written to first on, with whether it reaches them now: one per
    conversation, then one per account that would open a thread. The
    mapping (for window templates) is the tenant's when not given."""
    contact = live_contact(session, contact_id)
    if contact is None:
        return []
    now = now or utcnow()
    if mapping is None:
        mapping = _mapping_of(session, contact.tenant_id)
    answers: list[ChannelReach] = []
    seen_accounts: set[int] = set()
    conversations = session.scalars(
        select(Conversation)
        .where(Conversation.tenant_id == contact.tenant_id, Conversation.contact_id == contact.id)
        .order_by(Conversation.id)
    ).all()
    for conversation in conversations:
        account = session.get(ChannelAccount, conversation.channel_account_id)
        if account is None or not _known(account.kind):
            continue
        seen_accounts.add(account.id)
        answers.append(of_conversation(session, conversation, account, mapping, now))
    for account, address in _openers(session, contact):
        if account.id not in seen_accounts:
            answers.append(_opens(account, address))
    return answers


def of_conversation(
    session: Session,
    conversation: Conversation,
    account: ChannelAccount,
    mapping: MappingConfig | None,
    now: dt.datetime,
) -> ChannelReach:
    """The channel's answer for the client of one conversation."""
    cls = channel_class(account.kind)
    if account.status != ChannelStatus.ACTIVE:
        reach = Reach(False, "disconnected")
    else:
        reach = cls.reachability(_view(session, conversation, account, mapping, now))
    return ChannelReach(
        kind=account.kind,
        title=cls.title,
        account_id=account.id,
        conversation_id=conversation.id,
        reachable=reach.reachable,
        reason=reach.reason,
        detail=reach.detail,
        until=reach.until,
    )


def opener(session: Session, contact: Contact, kind: str) -> tuple[ChannelAccount, str] | None:
    """The tenant's active account of ``kind`` that can open a thread with
    the client (its channel ``reaches`` a handle they have), and the handle."""
    for account, address in _openers(session, contact):
        if account.kind == kind:
            return account, address
    return None


def summary(reaches: Iterable[ChannelReach], language: str) -> str | None:
    """One line for the CRM contact: each channel once, its best answer
    ("WhatsApp: yes; Telegram: blocked"); None when there is none."""
    best: dict[str, ChannelReach] = {}
    for reach in reaches:
        held = best.get(reach.title)
        if held is None or (reach.reachable and not held.reachable):
            best[reach.title] = reach
    if not best:
        return None
    return "; ".join(f"{title}: {reach.words(language)}" for title, reach in best.items())


# --------------------------------------------------------------------------


def _known(kind: str) -> bool:
    try:
        channel_class(kind)
    except UnknownAdapter:
        return False
    return True


def _mapping_of(session: Session, tenant_id: int) -> MappingConfig | None:
    from bridge.runtime import get_runtime

    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        return None
    return get_runtime().mapping_for(tenant)


def _view(
    session: Session,
    conversation: Conversation,
    account: ChannelAccount,
    mapping: MappingConfig | None,
    now: dt.datetime,
) -> ReachView:
    last_in = _last_inbound(session, conversation.id)
    failure, failed_at = _last_failure(session, conversation.id)
    if failed_at is not None and last_in is not None and failed_at <= last_in:
        failure, failed_at = None, None  # they wrote since: the failure is old news
    rule = mapping.rule(account.kind) if mapping is not None else None
    return ReachView(
        now=now,
        last_inbound_at=last_in,
        last_failure=failure,
        last_failure_at=failed_at,
        consent=conversation.consent,
        consent_at=aware(conversation.consent_at) if conversation.consent_at else None,
        template=bool(rule is not None and rule.window_template is not None),
        thread_state=dict(conversation.channel_state or {}),
        settings=dict(account.settings or {}),
    )


def _last_inbound(session: Session, conversation_id: int) -> dt.datetime | None:
    rows = session.execute(
        select(Message.sent_at, Message.payload)
        .where(Message.conversation_id == conversation_id, Message.direction == outbox.IN)
        .order_by(Message.seq.desc())
        .limit(_LOOK_BACK)
    ).all()
    return max(
        (aware(sent_at) for sent_at, payload in rows if not (payload or {}).get("echo")),
        default=None,
    )


def _last_failure(session: Session, conversation_id: int) -> tuple[str | None, dt.datetime | None]:
    """The newest outbound message that went out or failed: its reason and
    time when it failed for good, else (None, None)."""
    row = session.execute(
        select(Message.status, Message.last_error, Message.updated_at)
        .where(
            Message.conversation_id == conversation_id,
            Message.direction == outbox.OUT,
            Message.status.in_((MessageStatus.SENT, MessageStatus.FAILED)),
        )
        .order_by(Message.seq.desc())
        .limit(1)
    ).first()
    if row is None or row.status != MessageStatus.FAILED:
        return None, None
    error = row.last_error or "failed"
    if error.startswith(_UNKNOWN):
        return None, None
    return error, aware(row.updated_at)


def _openers(session: Session, contact: Contact) -> list[tuple[ChannelAccount, str]]:
    """The tenant's active accounts whose channel can write first to a
    handle the client has, each with that handle."""
    accounts = session.scalars(
        select(ChannelAccount)
        .where(
            ChannelAccount.tenant_id == contact.tenant_id,
            ChannelAccount.status == ChannelStatus.ACTIVE,
        )
        .order_by(ChannelAccount.id)
    ).all()
    found: list[tuple[ChannelAccount, str]] = []
    for account in accounts:
        if not _known(account.kind):
            continue
        handle_kind = channel_class(account.kind).reaches
        if handle_kind is None:
            continue
        handle = _handle(session, contact, handle_kind)
        if handle:
            found.append((account, handle))
    return found


def _handle(session: Session, contact: Contact, kind: str) -> str | None:
    """The client's handle of ``kind``: the contact's own column where it
    has one (phone, e-mail), else the newest identity of that kind."""
    own = {"phone": contact.phone, "email": contact.email}.get(kind)
    if own:
        return own
    value = session.scalar(
        select(ContactIdentity.value)
        .where(ContactIdentity.contact_id == contact.id, ContactIdentity.kind == kind)
        .order_by(ContactIdentity.id.desc())
        .limit(1)
    )
    return str(value) if value else None


def _opens(account: ChannelAccount, address: str) -> ChannelReach:
    cls = channel_class(account.kind)
    return ChannelReach(
        kind=account.kind,
        title=cls.title,
        account_id=account.id,
        conversation_id=None,
        reachable=True,
        reason="opens",
        detail="no conversation yet: the bridge opens one",
        address=address,
    )


#: the template key of the one-line summary (``{client.reachable}`` in a
#: mapping's contact or entity fields)
PLACEHOLDER = "client.reachable"


def for_template(
    runtime: Runtime, mapping: MappingConfig | None, contact_id: int, kind: str
) -> str | None:
    """``{client.reachable}`` for a sync of ``kind``'s rule: the summary in
    the mapping's language, read only when the rule's fields use it (None
    otherwise: no query on every sync for a field nobody shows)."""
    rule = mapping.rule(kind) if mapping is not None else None
    if rule is None or mapping is None:
        return None
    marker = "{" + PLACEHOLDER + "}"
    templates = [*rule.fields.contact.values(), *rule.fields.entity.values()]
    if not any(marker in t for t in templates):
        return None
    with runtime.read_session() as session:
        return summary(for_contact(session, contact_id, mapping=mapping), mapping.language)
