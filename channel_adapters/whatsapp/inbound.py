"""WhatsApp Cloud API webhooks: one POST -> deliveries -> normalised events.

Meta posts every phone number of an app to one URL, in one envelope (FACTS
§2, corpora ``whatsapp/pywa_updates/*.json``)::

    {"object": "whatsapp_business_account",
     "entry": [{"id": <WABA id>, "changes": [{"field": ..., "value": {...}}]}]}

One POST may hold several entries, changes, messages and statuses, for
several phone numbers (``value.metadata.phone_number_id``). Three pure steps:

* :func:`route` — which phone numbers a POST is for (the webhook view then
  hands it to each connected account);
* :func:`split` — the cheap edge: one :class:`RawDelivery` per message, per
  status, per other change of one phone number, each body a minimal envelope
  of the same shape holding just that item, keyed for the journal's dedupe:

  ==========================  =========================================
  a customer message          its ``id`` (the wamid, FACTS §0 rule 3)
  a status                    ``<wamid>:<status>`` (sent, then read...)
  a Business app echo         ``echo:<id>``
  anything else               ``sha256:<hex of its canonical JSON>``
  ==========================  =========================================

  (an item whose id is missing, not a string or too long for the journal's
  key is keyed by its SHA-256 too; the normaliser decides what it is);
* :func:`parse` — a delivery body (or any envelope) -> normalised events,
  each event's ``external_id`` being the key :func:`split` gave its item.

Only a body that is not the envelope raises :class:`PayloadError`; an odd
item inside becomes an ``UNKNOWN`` message or an :class:`IgnoredEvent`.

Account-level notices (template status/quality/category updates,
``account_update``: corpora ``template_*.json``, ``account_update.json``)
carry no phone number at all: :func:`route` answers ``()`` for a POST made
only of them (acknowledged, stored for no account — a 4xx would have Meta
retry it for 7 days, ``reliability.md`` §1). :func:`parse` still maps them
to :class:`IgnoredEvent` (a replay, a mixed body).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.errors import PayloadError
from bridge.model import (
    Attachment,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    RawDelivery,
    SenderProfile,
)

__all__ = ["KIND", "parse", "route", "split"]

KIND = "whatsapp"
#: ``object`` of every WhatsApp Business Account webhook (FACTS §2)
OBJECT = "whatsapp_business_account"
#: the journal's key column
MAX_KEY = 255
#: longest id (wamid, wa_id, BSUID, media id) read as one
MAX_ID = 255
#: longest customer id (a BSUID): the conversation's thread id column
MAX_PARTY = 64
#: ``IgnoredEvent.event_type``
MAX_EVENT_TYPE = 64
#: E.164: at most 15 digits
MAX_PHONE_DIGITS = 15

#: Fields sent from the WhatsApp Business app on the business's own phone:
#: the business's messages, never the customer's (FACTS §0 rule 4; corpus
#: ``outgoing_message.json`` uses ``smb_message_echoes``).
ECHO_FIELDS = frozenset({"smb_message_echoes", "message_echoes"})
#: Changes that belong to a phone number (``value.metadata``); any other
#: field is an account-level notice (corpora ``template_*``, ``account_update``).
PHONE_FIELDS = frozenset({"messages", "calls", "user_preferences", *ECHO_FIELDS})
#: ``statuses[].status`` of an outbound message (FACTS §2; corpus
#: ``message_status.json``); others (``deleted``, ``warning``) are ignored.
STATUSES = frozenset({"sent", "delivered", "read", "played", "failed"})

#: media message types -> kind (``audio`` with ``voice: true`` is a voice
#: note: corpus ``message.json`` "voice")
MEDIA_KINDS: dict[str, MessageKind] = {
    "image": MessageKind.PHOTO,
    "video": MessageKind.VIDEO,
    "audio": MessageKind.AUDIO,
    "document": MessageKind.DOCUMENT,
    "sticker": MessageKind.STICKER,
}

#: ``referral`` (a click-to-WhatsApp ad, corpus ``message.json`` "referral")
#: -> ``profile.utm``
REFERRAL_UTM = (
    ("utm_medium", "source_type"),
    ("utm_content", "source_id"),
    ("utm_campaign", "headline"),
    ("ctwa_clid", "ctwa_clid"),
    ("source_url", "source_url"),
)


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def route(body: bytes) -> tuple[str, ...]:
    """The distinct ``value.metadata.phone_number_id``s of a POST, in order,
    and ``group:<WABA id>`` for account-level notices (account_update,
    template status: no phone number in them, ``entry.id`` names the
    WhatsApp Business Account; the core journals them on its numbers).

    :class:`PayloadError` for a body that is not the envelope, or whose
    messages/statuses name no phone number.
    """
    data = _decode(body)
    ids: dict[str, None] = {}
    for entry, change in _changes(data):
        number = _phone_number_id(change)
        if number is not None:
            ids[number] = None
        elif _str(change.get("field")) in PHONE_FIELDS or not _str(change.get("field")):
            continue  # a number's change naming no number: nobody's
        elif _id(entry.get("id")):
            ids[f"group:{_id(entry.get('id'))}"] = None
    if not ids:
        raise PayloadError("no value.metadata.phone_number_id in the webhook: whose number is it?")
    return tuple(ids)


def split(body: bytes, phone_number_id: str, waba_id: str = "") -> list[RawDelivery]:
    """The deliveries of one phone number in a POST (the cheap edge): one
    per message, status, echo or other change, in the order Meta sent them,
    and the account-level notices of its business account (``waba_id``);
    a key repeated within the POST is kept once."""
    data = _decode(body)
    deliveries: dict[str, RawDelivery] = {}
    for item in _items(data, phone_number_id, waba_id):
        deliveries.setdefault(item.key, RawDelivery(item.key, _dumps(item.envelope)))
    return list(deliveries.values())


def parse(body: bytes, received_at: dt.datetime) -> list[InboundEvent]:
    """A delivery body (one item; any envelope works) -> its events, each
    ``external_id`` the key :func:`split` gave the item."""
    data = _decode(body)
    return [_event(item, received_at) for item in _items(data, None)]


# --------------------------------------------------------------------------
# The envelope and its items
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """One delivery: ``what`` is ``message``, ``echo``, ``status`` or
    ``change``; ``envelope`` the minimal envelope holding it alone."""

    key: str
    what: str
    envelope: dict[str, Any]
    entry: Mapping[str, Any]
    change: Mapping[str, Any]
    node: Any = None  # the message / status itself (any JSON value)
    contact: Mapping[str, Any] | None = None


def _decode(body: bytes) -> dict[str, Any]:
    if not isinstance(body, (bytes, bytearray)):
        raise PayloadError("the webhook body is not bytes")
    try:
        data = json.loads(bytes(body))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise PayloadError("the webhook body is not JSON") from None
    if _SURROGATE.search(body):
        # JSON may escape a lone UTF-16 surrogate ("\ud800"): no text
        # column (or UTF-8 at all) takes it; each becomes U+FFFD
        data = _without_surrogates(data)
    if not isinstance(data, dict):
        raise PayloadError("the webhook body is not a JSON object")
    if data.get("object") != OBJECT:
        raise PayloadError(f'the webhook body\'s "object" is not "{OBJECT}"')
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries:
        raise PayloadError('the webhook body has no "entry"')
    return data


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
#: what json.loads leaves of a surrogate escape that was not a pair
_LONE = re.compile("[\ud800-\udfff]")


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


def _changes(data: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    for entry in _list(data.get("entry")):
        if isinstance(entry, dict):
            for change in _list(entry.get("changes")):
                if isinstance(change, dict):
                    yield entry, change


def _phone_number_id(change: Mapping[str, Any]) -> str | None:
    return _id(_obj(_obj(change.get("value")).get("metadata")).get("phone_number_id"))


def _items(
    data: Mapping[str, Any], phone_number_id: str | None, waba_id: str = ""
) -> Iterator[_Item]:
    """Every item of the envelope, of one phone number and its business
    account's notices (or of all, with ``None``). Idempotent: the items of
    an item's own envelope are itself."""
    for entry, change in _changes(data):
        number = _phone_number_id(change)
        ours = number == phone_number_id or (
            number is None and bool(waba_id) and _id(entry.get("id")) == waba_id
        )
        if phone_number_id is not None and not ours:
            continue
        items = list(_change_items(entry, change))
        if items:
            yield from items
        else:
            envelope = _envelope(entry, [dict(change)])
            yield _Item(_sha_key(envelope), "change", envelope, entry, change)


def _change_items(entry: Mapping[str, Any], change: Mapping[str, Any]) -> Iterator[_Item]:
    """The messages and statuses of a ``messages`` change, the echoes of an
    echo change; nothing for any other change (it is one item whole)."""
    value = change.get("value")
    name = _str(change.get("field"))
    if not isinstance(value, dict):
        return
    if name == "messages":
        contacts = _list(value.get("contacts"))
        for msg in _list(value.get("messages")):
            contact = _contact_of(contacts, msg)
            part: dict[str, Any] = {"contacts": [contact]} if contact is not None else {}
            part["messages"] = [msg]
            if "errors" in value:  # value-level errors describe the message
                part["errors"] = value["errors"]
            yield _item("message", entry, change, part, msg, contact)
        for status in _list(value.get("statuses")):
            yield _item("status", entry, change, {"statuses": [status]}, status, None)
    elif name in ECHO_FIELDS:
        for msg in _list(value.get("message_echoes")):
            yield _item("echo", entry, change, {"message_echoes": [msg]}, msg, None)


def _item(
    what: str,
    entry: Mapping[str, Any],
    change: Mapping[str, Any],
    part: dict[str, Any],
    node: Any,
    contact: Mapping[str, Any] | None,
) -> _Item:
    value = _obj(change.get("value"))
    kept = {k: value[k] for k in ("messaging_product", "metadata") if k in value}
    envelope = _envelope(entry, [{"field": change.get("field"), "value": {**kept, **part}}])
    return _Item(
        _key(what, node) or _sha_key(envelope), what, envelope, entry, change, node, contact
    )


def _envelope(entry: Mapping[str, Any], changes: list[Any]) -> dict[str, Any]:
    head = {k: entry[k] for k in ("id", "time") if k in entry}
    return {"object": OBJECT, "entry": [{**head, "changes": changes}]}


def _key(what: str, node: Any) -> str | None:
    """The provider's own id for an item (FACTS §0 rule 3), when it has a
    usable one."""
    if not isinstance(node, dict):
        return None
    wamid = _id(node.get("id"))
    if wamid is None:
        return None
    if what == "status":
        status = _str(node.get("status"))
        key = f"{wamid}:{status}" if status else None
    elif what == "echo":
        key = f"echo:{wamid}"
    else:
        key = wamid
    return key if key is not None and len(key) <= MAX_KEY else None


def _sha_key(envelope: Mapping[str, Any]) -> str:
    canonical = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _dumps(envelope: Mapping[str, Any]) -> bytes:
    # ASCII escapes: a lone surrogate (valid in JSON text) cannot break the bytes
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _contact_of(contacts: list[Any], msg: Any) -> Mapping[str, Any] | None:
    """The ``value.contacts`` entry of a message's sender: the one whose
    ``wa_id`` is the message's ``from``, or whose ``user_id`` (BSUID) is its
    ``from_user_id`` (corpus ``callback_button.json`` "quick_reply_without_
    context"); the only one when the message names no sender at all."""
    if not isinstance(msg, dict):
        return None
    sender = _id(msg.get("from"))
    sender_bsuid = _id(msg.get("from_user_id"))
    cards = [c for c in contacts if isinstance(c, dict)]
    for card in cards:
        wa_id, bsuid = _id(card.get("wa_id")), _id(card.get("user_id"))
        if (wa_id is not None and wa_id == sender) or (
            bsuid is not None and bsuid in (sender, sender_bsuid)
        ):
            return card
    if sender is None and sender_bsuid is None and len(cards) == 1:
        return cards[0]
    return None


# --------------------------------------------------------------------------
# Items -> events
# --------------------------------------------------------------------------


def _event(item: _Item, received_at: dt.datetime) -> InboundEvent:
    if item.what == "status":
        return _status(item)
    if item.what in ("message", "echo") and isinstance(item.node, dict):
        return _message(item, item.node, received_at)
    field_name = _str(item.change.get("field")) or "unknown"
    if item.what != "change":  # a message or status that is not an object
        return _ignored(item, f"{field_name}:malformed")
    event = _event_name(_obj(item.change.get("value")))
    return _ignored(item, f"{field_name}:{event}" if event else field_name)


def _ignored(item: _Item, event_type: str) -> IgnoredEvent:
    return IgnoredEvent(KIND, item.key, _printable(event_type)[:MAX_EVENT_TYPE], raw=item.change)


def _event_name(value: Mapping[str, Any]) -> str | None:
    """What an account-level change says: its ``event`` (account_update,
    template status), the new quality or category (template quality and
    category updates), or its first call/status/preference's event."""
    for key in ("event", "new_quality_score", "new_category"):
        if _str(value.get(key)):
            return _str(value.get(key))
    for key, name in (("calls", "event"), ("statuses", "status"), ("user_preferences", "value")):
        first = _list(value.get(key))[:1]
        if first and _str(_obj(first[0]).get(name)):
            return _str(_obj(first[0]).get(name))
    error = _first_error(value.get("errors"))
    return f"error {error[0]}" if error and error[0] else None


# -- statuses ---------------------------------------------------------------


def _status(item: _Item) -> InboundEvent:
    """``statuses[]`` -> what became of our message (corpus
    ``message_status.json``). The message is found by the
    ``biz_opaque_callback_data`` we sent it with, else by its wamid."""
    node = _obj(item.node)
    status = _str(node.get("status"))
    wamid = _id(node.get("id"))
    bridge_id = _str(node.get("biz_opaque_callback_data")) or ""
    if status not in STATUSES or (wamid is None and not bridge_id):
        return _ignored(item, f"statuses:{status or 'malformed'}")
    assert status is not None  # in STATUSES
    facts = {
        "recipient_id": _id(node.get("recipient_id")),
        "timestamp": _str(node.get("timestamp")),
        "conversation_id": _id(_obj(node.get("conversation")).get("id")),
        "pricing_category": _str(_obj(node.get("pricing")).get("category")),
    }
    if status == "failed" and _window_closed(node.get("errors")):
        # Meta may accept a free-form send outside the 24-hour window and
        # fail it afterwards with 131047 (sandbox switch window_error:
        # status): the core then sends the mapping's template instead
        status = "window_closed"
    return OutboundStatus(
        channel_kind=KIND,
        external_id=item.key,
        bridge_id=bridge_id,
        status=status,
        error=(_errors_text(node.get("errors")) or "no error given")
        if status in ("failed", "window_closed")
        else None,
        raw={k: v for k, v in facts.items() if v is not None},
        channel_message_id=wamid,
    )


def _window_closed(errors: Any) -> bool:
    """A status error is 131047 "Re-engagement message" (FACTS §2)."""
    return any(_obj(e).get("code") in (131047, "131047") for e in _list(errors))


def _errors_text(errors: Any) -> str | None:
    """``errors[]`` -> ``"<code>: <title> — <details>"`` (joined by "; ")."""
    parts: list[str] = []
    for node in _list(errors):
        error = _obj(node)
        code, title = _code(error.get("code")), _str(error.get("title") or error.get("message"))
        text = ": ".join(p for p in (code, title) if p)
        details = _str(_obj(error.get("error_data")).get("details"))
        if details and details != title:
            text = f"{text} — {details}" if text else details
        if text:
            parts.append(text)
    return "; ".join(parts) or None


def _first_error(errors: Any) -> tuple[str | None, str | None] | None:
    first = _list(errors)[:1]
    if not first:
        return None
    error = _obj(first[0])
    return _code(error.get("code")), _str(error.get("title") or error.get("message"))


# -- messages ---------------------------------------------------------------


@dataclass(frozen=True)
class _Content:
    kind: MessageKind
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    #: the message it changes (an edit or a deletion)
    original: str | None = None
    revoked: bool = False
    #: the sender's own phone, when they shared their own contact card
    own_phone: str | None = None


@dataclass(frozen=True)
class _Party:
    """The customer of a message: ``id`` (wa_id, else BSUID), and the
    ``wa_id`` when it is a phone number's digits."""

    id: str
    wa_id: str | None


def _message(item: _Item, msg: Mapping[str, Any], received_at: dt.datetime) -> InboundEvent:
    echo = item.what == "echo"
    value = _obj(item.change.get("value"))
    party = _recipient(msg, value) if echo else _sender(msg, item.contact)
    if party is None:
        return _ignored(item, f"{_str(item.change.get('field')) or 'unknown'}:no_sender")
    mtype = _str(msg.get("type")) or ""
    content = _content(mtype, msg, value, party)
    context = _obj(msg.get("context"))
    wamid = _id(msg.get("id"))
    facts: dict[str, Any] = {"type": mtype, **content.facts}
    if context.get("forwarded") is True or context.get("frequently_forwarded") is True:
        facts["forwarded"] = True  # corpus message.json "forwarded", "forwarded_many_times"
        if context.get("frequently_forwarded") is True:
            facts["frequently_forwarded"] = True
    facts.update(_ids(item, party, msg))
    facts = {k: v for k, v in facts.items() if v is not None and v != ""}
    return InboundMessage(
        channel_kind=KIND,
        external_id=item.key,
        external_user_id=party.id,
        external_thread_id=party.id,
        kind=content.kind,
        sent_at=_time(msg.get("timestamp"), received_at),
        text=content.text,
        attachments=content.attachments,
        profile=SenderProfile() if echo else _profile(item.contact, party, content, msg),
        provider_message_id=content.original or wamid,
        is_edit=content.original is not None,
        reply_to=content.reply_to or _id(context.get("id")),
        raw=facts,
        revoked=content.revoked,
        echo=echo,
    )


def _sender(msg: Mapping[str, Any], contact: Mapping[str, Any] | None) -> _Party | None:
    """The customer: ``wa_id`` when it is digits, else the business-scoped
    ``user_id`` ("US.…"): the id is not always a phone number (FACTS §2)."""
    card = contact or {}
    return _party(
        _id(card.get("wa_id")) or _id(msg.get("from")),
        _id(card.get("user_id")) or _id(msg.get("from_user_id")),
    )


def _recipient(msg: Mapping[str, Any], value: Mapping[str, Any]) -> _Party | None:
    """The customer a Business app echo went to: ``to`` / ``to_user_id``.
    Corpus ``outgoing_message.json`` "delete" and "edit" have ``from`` and
    ``to`` the other way round (``to`` is our own display number): the
    business never writes to itself, so the other side is taken then."""
    to, sender = _id(msg.get("to")), _id(msg.get("from"))
    ours = _id(_obj(value.get("metadata")).get("display_phone_number"))
    if ours is not None and to == ours and sender is not None and sender != ours:
        return _party(sender, None)
    return _party(to, _id(msg.get("to_user_id")))


def _party(wa_id: str | None, bsuid: str | None) -> _Party | None:
    if wa_id is not None and _digits(wa_id):
        return _Party(wa_id, wa_id)
    best = bsuid or wa_id
    # the customer's id names the conversation (conversations.external_thread_id
    # is 64 characters): a longer one is nobody we can thread
    return _Party(best, None) if best and len(best) <= MAX_PARTY else None


def _ids(item: _Item, party: _Party, msg: Mapping[str, Any]) -> dict[str, Any]:
    """The account and identity facts kept in ``raw``."""
    card = item.contact or {}
    facts = {
        "phone_number_id": _phone_number_id(item.change),
        "waba_id": _id(item.entry.get("id")),
        "wa_id": party.wa_id,
        "user_id": _id(card.get("user_id"))
        or _id(msg.get("from_user_id") or msg.get("to_user_id")),
        "parent_user_id": _id(card.get("parent_user_id")),
    }
    return {k: v for k, v in facts.items() if v is not None}


def _profile(
    contact: Mapping[str, Any] | None, party: _Party, content: _Content, msg: Mapping[str, Any]
) -> SenderProfile:
    profile = _obj((contact or {}).get("profile"))
    # The phone is only ever the sender's own ``wa_id`` (the number the
    # message came from, corpora FACTS §2 ``value.contacts[].wa_id``;
    # pywa ``message.json``): WhatsApp proved it, so it is verified. A
    # shared ``contacts`` card is someone's address-book entry: it names
    # the sender's phone only when its ``wa_id`` is the sender's own
    # (``_contacts``), never another number. A BSUID-only sender ("US.…")
    # has no phone at all.
    phone = "+" + party.wa_id if party.wa_id else None
    own = phone or content.own_phone
    return SenderProfile(
        display_name=_str(profile.get("name")),
        username=_str(profile.get("username")),
        phone=own,
        phone_verified=own is not None,
        language=None,
        utm=_utm(msg.get("referral")),
    )


def _utm(referral: Any) -> dict[str, str]:
    """A click-to-WhatsApp ad's ``referral`` -> utm keys (only non-empty
    strings; corpus ``message.json`` "referral")."""
    if not isinstance(referral, dict):
        return {}
    utm = {"utm_source": "whatsapp_ad"}
    for key, name in REFERRAL_UTM:
        text = _str(referral.get(name))
        if text:
            utm[key] = text
    return utm


def _time(stamp: Any, received_at: dt.datetime) -> dt.datetime:
    """``timestamp``: a string of Unix seconds (FACTS §2); ``received_at``
    when it is missing or absurd."""
    if isinstance(stamp, str) and stamp.isascii() and stamp.isdigit() and len(stamp) <= 12:
        seconds: int | None = int(stamp)
    else:
        seconds = stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else None
    if seconds is None:
        return received_at
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, ValueError, OSError):
        return received_at


# -- content by type ----------------------------------------------------------


def _content(
    mtype: str, msg: Mapping[str, Any], value: Mapping[str, Any], party: _Party
) -> _Content:
    if mtype == "edit":
        return _edit(msg, value, party)
    if mtype == "revoke":
        # corpus deleted_message.json: the customer deleted an earlier message
        original = _id(_obj(msg.get("revoke")).get("original_message_id"))
        if original is None:
            return _unsupported("revoke", msg, value)
        return _Content(MessageKind.TEXT, "", original=original, revoked=True)
    if mtype in MEDIA_KINDS:
        return _media(mtype, msg, value)
    reader = READERS.get(mtype)
    content = reader(msg, party) if reader is not None else None
    return content if content is not None else _unsupported(mtype, msg, value)


def _edit(msg: Mapping[str, Any], value: Mapping[str, Any], party: _Party) -> _Content:
    """``type: edit`` (corpus ``edited_message.json``): ``edit.message`` is
    the new content, of its own type; the edit changes the original."""
    edit = _obj(msg.get("edit"))
    original = _id(edit.get("original_message_id"))
    new = _obj(edit.get("message"))
    new_type = _str(new.get("type")) or ""
    if original is None or new_type in ("edit", "revoke"):
        return _unsupported("edit", msg, value)
    content = _content(new_type, new, {}, party)
    return _Content(
        content.kind,
        content.text,
        content.attachments,
        {**content.facts, "edit_type": new_type},
        original=original,
    )


def _media(mtype: str, msg: Mapping[str, Any], value: Mapping[str, Any]) -> _Content:
    media = msg.get(mtype)
    if not isinstance(media, dict):
        return _unsupported(mtype, msg, value)
    kind = MEDIA_KINDS[mtype]
    if kind is MessageKind.AUDIO and media.get("voice") is True:
        kind = MessageKind.VOICE
    attachment = Attachment(
        kind=kind,
        file_ref=_id(media.get("id")),  # GET /{media-id} -> url (FACTS §2)
        mime_type=_str(media.get("mime_type")),
        file_name=_str(media.get("filename")) if mtype == "document" else None,
        url=None,  # a lookaside URL (corpus "media_with_url") needs the token
    )
    return _Content(kind, _str(media.get("caption")) or "", (attachment,))


def _text(msg: Mapping[str, Any], party: _Party) -> _Content | None:
    body = _obj(msg.get("text")).get("body")
    return _Content(MessageKind.TEXT, body) if isinstance(body, str) else None


def _reaction(msg: Mapping[str, Any], party: _Party) -> _Content | None:
    """An emoji on an earlier message; ``""`` (or no ``emoji``) takes it
    back (corpus ``message.json`` "unreaction_empty", "unreaction_no_emoji")."""
    reaction = _obj(msg.get("reaction"))
    target = _id(reaction.get("message_id"))
    if target is None:
        return None
    emoji = reaction.get("emoji")
    return _Content(MessageKind.REACTION, emoji if isinstance(emoji, str) else "", reply_to=target)


def _location(msg: Mapping[str, Any], party: _Party) -> _Content | None:
    loc = _obj(msg.get("location"))
    lat, lon = _number(loc.get("latitude")), _number(loc.get("longitude"))
    if lat is None or lon is None:
        return None
    name, address = _str(loc.get("name")), _str(loc.get("address"))
    place = ", ".join(p for p in (name, address) if p)
    text = f"📍 {place} ({lat}, {lon})" if place else f"📍 {lat}, {lon}"
    facts = {"latitude": lat, "longitude": lon, "name": name, "address": address}
    facts["url"] = _str(loc.get("url"))
    return _Content(MessageKind.LOCATION, text, facts={k: v for k, v in facts.items() if v})


def _contacts(msg: Mapping[str, Any], party: _Party) -> _Content | None:
    """Shared contact cards. Only a card whose phone's ``wa_id`` is the
    sender's own gives the sender a phone; anybody else's number is content,
    never the sender's identity."""
    cards = [c for c in _list(msg.get("contacts")) if isinstance(c, dict)]
    if not cards:
        return None
    lines: list[str] = []
    own = False
    for card in cards:
        name = _obj(card.get("name"))
        full = _str(name.get("formatted_name")) or " ".join(
            p for p in (_str(name.get("first_name")), _str(name.get("last_name"))) if p
        )
        phones = [_obj(p) for p in _list(card.get("phones"))]
        numbers = [n for n in (_str(p.get("phone")) for p in phones) if n]
        if party.wa_id is not None and any(_id(p.get("wa_id")) == party.wa_id for p in phones):
            own = True
        label = f"👤 {full or '(no name)'}"
        lines.append(f"{label}: {', '.join(numbers)}" if numbers else label)
    own_phone = "+" + party.wa_id if own and party.wa_id else None
    return _Content(MessageKind.CONTACT, "\n".join(lines), own_phone=own_phone)


def _interactive(msg: Mapping[str, Any], party: _Party) -> _Content | None:
    """A reply button or list row (corpora ``callback_button.json``,
    ``callback_selection.json``), a WhatsApp Flow's answers
    (``flow_completion.json``), a call-permission answer
    (``call_permission_update.json``).

    A pressed button or row is the client's text message whose text is its
    ``id``: the bridge's buttons (:mod:`.buttons`) carry as id what the
    client would have typed ("2"), so a menu reads a press like a typed
    answer; the shown ``title`` stays in ``raw``."""
    interactive = _obj(msg.get("interactive"))
    itype = _str(interactive.get("type")) or ""
    reply = _obj(interactive.get(itype))
    if itype in ("button_reply", "list_reply"):
        title, reply_id = _str(reply.get("title")), _id(reply.get("id"))
        if title is None and reply_id is None:
            return None
        facts = {
            "reply_id": reply_id,
            "title": title,
            "description": _str(reply.get("description")),
        }
        clean = {k: v for k, v in facts.items() if v is not None}
        return _Content(MessageKind.TEXT, reply_id or title or "", facts=clean)
    if itype == "nfm_reply":
        return _flow(reply)
    if itype == "call_permission_reply":
        answer = _str(reply.get("response"))
        if answer is None:
            return None
        return _Content(
            MessageKind.SYSTEM, f"call permission: {answer}", facts={"response": answer}
        )
    return None


def _flow(reply: Mapping[str, Any]) -> _Content:
    """A Flow's ``response_json`` (a JSON string) -> one line per field;
    the ``flow_token`` goes to ``raw`` only."""
    answers = reply.get("response_json")
    try:
        answers = json.loads(answers) if isinstance(answers, str) else answers
    except (ValueError, RecursionError):
        answers = None
    answers = answers if isinstance(answers, dict) else {}
    lines = [f"📝 {_str(reply.get('name')) or 'flow'}: {_str(reply.get('body')) or 'sent'}"]
    for key, answer in answers.items():
        if key != "flow_token":
            shown = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
            lines.append(f"{key}: {shown}")
    facts = {"flow_token": answers["flow_token"]} if _str(answers.get("flow_token")) else {}
    return _Content(MessageKind.TEXT, "\n".join(lines), facts=facts)


def _button(msg: Mapping[str, Any], party: _Party) -> _Content | None:
    """A template's quick-reply button (corpus ``callback_button.json``)."""
    button = _obj(msg.get("button"))
    text, payload = _str(button.get("text")), _str(button.get("payload"))
    if text is None and payload is None:
        return None
    return _Content(MessageKind.TEXT, text or payload or "", facts={"payload": payload})


def _order(msg: Mapping[str, Any], party: _Party) -> _Content | None:
    """A cart sent from the catalog (corpus ``message.json`` "order")."""
    order = _obj(msg.get("order"))
    items = [_obj(i) for i in _list(order.get("product_items"))]
    if not items:
        return None
    lines: list[str] = []
    total, currencies = Decimal(0), set[str]()
    for product in items:
        quantity, price = _decimal(product.get("quantity")), _decimal(product.get("item_price"))
        currency = _str(product.get("currency")) or ""
        name = _str(product.get("product_retailer_id")) or "?"
        each = f" at {price} {currency}".rstrip() if price is not None else ""
        lines.append(f"• {quantity if quantity is not None else '?'} × {name}{each}")
        currencies.add(currency)
        if quantity is None or price is None:
            currencies.add("?")
        else:
            total += quantity * price
    head = "🛒 order"
    if len(currencies) == 1 and total.is_finite():
        head += f", total {total} {currencies.pop()}".rstrip()
    note = _str(order.get("text"))
    text = "\n".join([head, *lines, *([note] if note else [])])
    return _Content(MessageKind.TEXT, text, facts={"catalog_id": _id(order.get("catalog_id"))})


def _system(msg: Mapping[str, Any], party: _Party) -> _Content | None:
    """The customer changed number or identity (corpus ``system.json``)."""
    system = _obj(msg.get("system"))
    stype = _str(system.get("type"))
    text = _str(system.get("body")) or stype
    if text is None:
        return None
    facts = {"system_type": stype, "new_wa_id": _id(system.get("wa_id"))}
    return _Content(MessageKind.SYSTEM, text, facts={k: v for k, v in facts.items() if v})


def _unsupported(name: str, msg: Mapping[str, Any], value: Mapping[str, Any]) -> _Content:
    """``unsupported`` (``errors[131051]``), an unknown type, or a known
    type without its content: text names the type and the error (message
    errors, else the change's: corpus "interactive_message_with_err")."""
    inner = _str(_obj(msg.get("unsupported")).get("type"))
    what = inner or (name if name != "unsupported" else None)
    error = _first_error(msg.get("errors")) or _first_error(value.get("errors"))
    text = "unsupported message" + (f": {what}" if what else "")
    detail = ": ".join(p for p in (error or ()) if p)
    return _Content(MessageKind.UNKNOWN, f"{text} ({detail})" if detail else text)


#: message types read by a function of ``(message, sender)``; media,
#: ``edit`` and ``revoke`` are read above
READERS: dict[str, Callable[[Mapping[str, Any], _Party], _Content | None]] = {
    "text": _text,
    "reaction": _reaction,
    "location": _location,
    "contacts": _contacts,
    "interactive": _interactive,
    "button": _button,
    "order": _order,
    "system": _system,
}


# --------------------------------------------------------------------------
# Small readers (nothing in a webhook body is trusted to have its type)
# --------------------------------------------------------------------------


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: Any) -> str | None:
    """An id as a string: a non-empty printable string, or an integer
    (ids are strings in Meta's payloads; an int is taken as its digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        text = str(value) if value < 10**MAX_ID else ""
    elif isinstance(value, str):
        text = value
    else:
        return None
    return text if 0 < len(text) <= MAX_ID and text.isprintable() and text.strip() else None


def _code(value: Any) -> str | None:
    return _id(value) if not isinstance(value, str) else _str(value)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= MAX_PHONE_DIGITS


def _number(value: Any) -> float | int | None:
    """A finite JSON number (``NaN`` and ``1e400`` parse as floats too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if isinstance(value, int) or math.isfinite(value) else None


def _decimal(value: Any) -> Decimal | None:
    number = _number(value)
    if number is None or (isinstance(number, int) and abs(number) > 10**18):
        return None
    try:
        return Decimal(str(number))
    except InvalidOperation:
        return None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
