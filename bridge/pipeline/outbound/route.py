"""Which conversation a rep's reply goes out in: the channel it takes.

The CRM names the reply's target in one of three ways (``CrmEvent``):

* a chat: ``thread_key`` (our conversation uid) or ``crm_thread_id`` on a
  reply that names no deal or lead. The rep answered in that chat: the
  reply goes there.
* a deal or lead (``entity``: a notes-mode reply, even when the adapter
  also found the deal's conversation marker), or only the ``recipient``.
  The rep answered the client, not a chat: the reply goes to the client's
  conversation whose last message *from the client* is newest — the
  channel the client last wrote from — among the conversations of that
  deal/lead (a client merged across channels shares one deal) and the same
  contact's open ones on other channel accounts that have no deal/lead of
  their own yet; never one with another deal, nor another chat on the same
  account (an e-mail ticket, a group chat). Our own sends move a
  conversation's ``updated_at`` too, so that is only the tie-break.
* either way, a ``/channel <kind>`` (or ``/канал <kind>``) prefix on the
  reply's first line overrides: the reply goes to the same contact's most
  recent conversation on a channel account of that kind (a registry kind
  such as ``telegram``, or its title; one of the same deal first, then an
  open one without a deal), and the prefix is not sent. When
  the kind is unknown or the contact has no conversation on it, nothing is
  sent: the reply is stored refused with the reason, which the CRM shows
  as the reply's delivery report, in the mapping's language.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from bridge import outbox
from bridge.model import CrmEvent, MessageKind
from bridge.registry import UnknownAdapter, channel_class, channel_kinds
from bridge.rows import aware
from bridge.tables import (
    ChannelAccount,
    ChannelStatus,
    Conversation,
    ConversationStatus,
    Message,
)

__all__ = ["Routed", "kind_named", "named_conversation", "route", "split_prefix"]

#: ``/channel <kind>`` at the start of the reply (after blank space), then
#: the rest of that line; the command word in English or Russian, any case
_PREFIX = re.compile(r"\A\s*/(?:channel|канал)[ \t]+(\S+)[ \t]*([^\n]*)\n?", re.IGNORECASE)
#: the client's latest messages read per conversation (echoes skipped)
_LOOK_BACK = 50
#: conversations weighed at most (a deal's, a contact's)
_CANDIDATES = 50

_REASONS = {
    "unknown": {
        "en": "Not sent: there is no channel “{asked}” (/channel takes one of: {kinds}).",
        "ru": "Не отправлено: канала «{asked}» нет (/канал принимает: {kinds}).",
    },
    "missing": {
        "en": (
            "Not sent: the client has no conversation on {title} to send this reply to "
            "(/channel {asked}). Reply without the prefix, or name a channel the client "
            "wrote from: {theirs}."
        ),
        "ru": (
            "Не отправлено: у клиента нет переписки в {title}, куда отправить ответ "
            "(/канал {asked}). Ответьте без префикса или укажите канал, с которого "
            "клиент писал: {theirs}."
        ),
    },
    "empty": {
        "en": "Not sent: the reply has no text after “/channel {asked}”.",
        "ru": "Не отправлено: после «/канал {asked}» нет текста ответа.",
    },
}
_NONE = {"en": "none", "ru": "нет"}


@dataclass(frozen=True)
class Routed:
    """Where a reply is stored, what it says, and whether it may go."""

    conversation: Conversation
    #: the text to send (a ``/channel`` prefix removed)
    text: str
    #: how the conversation was chosen: named | last_inbound | prefix
    how: str
    #: the kind a ``/channel`` prefix asked for, as the rep wrote it
    asked: str | None = None
    #: why the reply may not go (the CRM shows it), or None
    refusal: str | None = None
    #: the chat the CRM named, if any (its thread id is recorded on it)
    named: Conversation | None = None


def route(
    session: Session, tenant_id: int, event: CrmEvent, language: Callable[[], str]
) -> Routed | None:
    """The tenant's conversation a CRM reply goes out in (never another
    tenant's), or None when the event names none. ``language`` gives the
    mapping's language, asked only for a refusal."""
    named = named_conversation(session, tenant_id, event)
    if named is not None and event.entity is None:
        chosen, how = named, "named"
    else:
        found = _last_written(session, tenant_id, event, named)
        if found is None:
            return None
        chosen, how = found, "last_inbound"
    prefix = split_prefix(event.text)
    if prefix is None:
        return Routed(chosen, event.text, how, named=named)
    asked, text = prefix
    routed = _override(session, tenant_id, chosen, asked, text, event, language)
    return replace(routed, named=named)


def split_prefix(text: str) -> tuple[str, str] | None:
    """``(kind as written, the text without the prefix)`` when the first
    line starts with ``/channel <kind>``; None otherwise (a prefix on a
    later line is the rep's text)."""
    match = _PREFIX.match(text or "")
    if match is None:
        return None
    rest = text[match.end() :]
    first = match.group(2).strip()
    if not first:
        return match.group(1), rest.lstrip("\r\n")  # the text starts on a later line
    return match.group(1), f"{first}\n{rest}" if rest else first


def kind_named(asked: str) -> str | None:
    """The registry's channel kind ``asked`` names: its slug or its title,
    case, spaces and dashes aside; None when no enabled channel is named so."""
    want = _squash(asked)
    for kind in channel_kinds():
        try:
            title = channel_class(kind).title
        except UnknownAdapter:
            continue
        if want in (_squash(kind), _squash(title)):
            return kind
    return None


# --------------------------------------------------------------------------


def named_conversation(session: Session, tenant_id: int, event: CrmEvent) -> Conversation | None:
    """The conversation the CRM names by our uid or its own thread id."""
    base = select(Conversation).where(Conversation.tenant_id == tenant_id)
    if event.thread_key:
        found = session.scalars(base.where(Conversation.uid == event.thread_key)).first()
        if found:
            return found
    if event.crm_thread_id:
        return session.scalars(
            base.where(Conversation.crm_thread_id == event.crm_thread_id)
        ).first()
    return None


def _last_written(
    session: Session, tenant_id: int, event: CrmEvent, named: Conversation | None
) -> Conversation | None:
    """The client's conversation they last wrote in: among the deal's (or
    the recipient's) conversations and the client's others the reply may
    take (``_also_theirs``)."""
    base = select(Conversation).where(Conversation.tenant_id == tenant_id)
    pool: list[Conversation] = [named] if named is not None else []
    if event.entity is not None:
        pool += session.scalars(
            base.where(Conversation.crm_entity_id == event.entity.id)
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            .limit(_CANDIDATES)
        ).all()
    if not pool and event.recipient:
        pool += session.scalars(
            base.where(Conversation.external_thread_id == event.recipient)
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            .limit(1)
        ).all()
    if not pool:
        return None
    # the client: whoever wrote last among what the CRM named (a deal's
    # conversations are one client's unless an unmerge split them)
    client = _best(session, pool).contact_id
    theirs = [c for c in pool if c.contact_id == client]
    return _best(session, [*theirs, *_also_theirs(session, tenant_id, client, theirs)])


def _also_theirs(
    session: Session, tenant_id: int, client: int, theirs: Sequence[Conversation]
) -> Sequence[Conversation]:
    """The client's other open conversations the reply may take: those of
    the same deal/lead (a client merged across channels shares one deal),
    and those on another channel account with no deal/lead of their own
    yet. Never one with another deal (another matter: an e-mail ticket, a
    group chat the client also writes in), nor another chat on the same
    account without one (a group's members would read it)."""
    deals = sorted({c.crm_entity_id for c in theirs if c.crm_entity_id})
    accounts = sorted({c.channel_account_id for c in theirs})
    return session.scalars(
        select(Conversation)
        .where(
            Conversation.tenant_id == tenant_id,
            Conversation.contact_id == client,
            Conversation.status == ConversationStatus.OPEN,
            or_(
                Conversation.crm_entity_id.in_(deals),
                and_(
                    Conversation.crm_entity_id.is_(None),
                    Conversation.channel_account_id.not_in(accounts),
                ),
            ),
        )
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(_CANDIDATES)
    ).all()


def _override(
    session: Session,
    tenant_id: int,
    chosen: Conversation,
    asked: str,
    text: str,
    event: CrmEvent,
    language: Callable[[], str],
) -> Routed:
    """A ``/channel`` prefix: the same contact's conversation on that kind,
    or the reply refused (stored in ``chosen``) with the reason."""
    kind = kind_named(asked)
    if kind is None:
        kinds = ", ".join(channel_kinds())
        return _refused(chosen, text, asked, _say("unknown", language, asked=asked, kinds=kinds))
    if not text.strip() and not event.attachments:
        return _refused(chosen, text, asked, _say("empty", language, asked=asked))
    on_kind = _contact_conversations(session, tenant_id, chosen.contact_id, kind)
    if not on_kind:
        return _refused(
            chosen,
            text,
            asked,
            _say(
                "missing",
                language,
                asked=asked,
                title=channel_class(kind).title,
                theirs=_their_channels(session, tenant_id, chosen.contact_id, language),
            ),
        )
    return Routed(_best(session, _closest(chosen, on_kind)), text, "prefix", asked=asked)


def _closest(chosen: Conversation, on_kind: Sequence[Conversation]) -> list[Conversation]:
    """The conversations on the asked kind nearest the one the reply was
    for: the same deal first, then open ones without a deal, then any open
    one, then the rest (another deal's chat, such as a group the client
    also writes in, only when nothing else is there)."""

    def rank(c: Conversation) -> int:
        if chosen.crm_entity_id is not None and c.crm_entity_id == chosen.crm_entity_id:
            return 0
        if c.status != ConversationStatus.OPEN:
            return 3
        return 1 if c.crm_entity_id is None else 2

    nearest = min(rank(c) for c in on_kind)
    return [c for c in on_kind if rank(c) == nearest]


def _refused(chosen: Conversation, text: str, asked: str, reason: str) -> Routed:
    return Routed(chosen, text, "prefix", asked=asked, refusal=reason)


def _say(what: str, language: Callable[[], str], **values: str) -> str:
    lang = language()
    words = _REASONS[what]
    return words.get(lang, words["en"]).format(**values)


def _contact_conversations(
    session: Session, tenant_id: int, contact_id: int, kind: str
) -> Sequence[Conversation]:
    return session.scalars(
        select(Conversation)
        .join(ChannelAccount, ChannelAccount.id == Conversation.channel_account_id)
        .where(
            Conversation.tenant_id == tenant_id,
            Conversation.contact_id == contact_id,
            ChannelAccount.kind == kind,
        )
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(_CANDIDATES)
    ).all()


def _their_channels(
    session: Session, tenant_id: int, contact_id: int, language: Callable[[], str]
) -> str:
    """The kinds the contact has conversations on, for the rep to pick."""
    kinds = session.scalars(
        select(ChannelAccount.kind)
        .join(Conversation, Conversation.channel_account_id == ChannelAccount.id)
        .where(Conversation.tenant_id == tenant_id, Conversation.contact_id == contact_id)
        .distinct()
    ).all()
    named = sorted({str(k) for k in kinds})
    return ", ".join(named) if named else _NONE.get(language(), _NONE["en"])


def _best(session: Session, pool: Iterable[Conversation]) -> Conversation:
    """The conversation the client last wrote in: on a connected channel
    account first, then by their last message, then the latest touched."""
    unique = list({c.id: c for c in pool}.values())
    heard = {c.id: _last_heard(session, c.id) for c in unique}
    active = _active_accounts(session, {c.channel_account_id for c in unique})
    floor = dt.datetime.min.replace(tzinfo=dt.UTC)
    return max(
        unique,
        key=lambda c: (
            c.channel_account_id in active,
            heard[c.id] or floor,
            aware(c.updated_at) if c.updated_at else floor,
            c.id,
        ),
    )


def _active_accounts(session: Session, ids: set[int]) -> set[int]:
    rows = session.scalars(
        select(ChannelAccount.id).where(
            ChannelAccount.id.in_(sorted(ids)), ChannelAccount.status == ChannelStatus.ACTIVE
        )
    ).all()
    return {int(i) for i in rows}


def _last_heard(session: Session, conversation_id: int) -> dt.datetime | None:
    """When the client last wrote in the conversation: their messages only
    (the business's own echoes and the channel's system events — a
    subscription, a consent withdrawn — do not count), at the provider's
    time, never later than when it reached us (a sender's clock ahead,
    an e-mail's Date in the future)."""
    rows = session.execute(
        select(Message.sent_at, Message.created_at, Message.payload)
        .where(
            Message.conversation_id == conversation_id,
            Message.direction == outbox.IN,
            Message.kind != MessageKind.SYSTEM.value,
        )
        .order_by(Message.seq.desc())
        .limit(_LOOK_BACK)
    ).all()
    return max(
        (
            min(aware(sent), aware(created)) if created else aware(sent)
            for sent, created, payload in rows
            if not (payload or {}).get("echo")
        ),
        default=None,
    )


def _squash(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.lower())
