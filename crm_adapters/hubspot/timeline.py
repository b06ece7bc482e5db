"""What a message looks like on HubSpot's timeline and in its inbox.

Pure functions: :class:`~bridge.model.TimelineEntry` -> HubSpot request
bodies. No I/O here, so the shapes are easy to test and to correct.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from bridge.files import is_kept
from bridge.model import Attachment, CrmRef, TimelineEntry
from crm_adapters import attachments

__all__ = [
    "ASSOCIATION_TYPES",
    "COMMUNICATION_CHANNEL_TYPES",
    "DELIVERY_ID_TYPE",
    "association",
    "hubspot_time",
    "inbox_message",
    "render_body",
    "timeline_input",
]

#: HUBSPOT_DEFINED association type ids, (from, to) -> id (FACTS 3.4).
ASSOCIATION_TYPES: dict[tuple[str, str], int] = {
    ("deal", "contact"): 3,
    ("ticket", "contact"): 16,
    ("note", "contact"): 202,
    ("note", "deal"): 214,
    ("note", "ticket"): 228,
    ("task", "contact"): 204,
    ("task", "deal"): 216,
    ("task", "ticket"): 230,
    ("communication", "contact"): 81,
    ("communication", "deal"): 85,
    ("communication", "ticket"): 83,
}

#: ``hs_communication_channel_type`` values HubSpot has (FACTS 3.3); any
#: other channel is logged as a note.
COMMUNICATION_CHANNEL_TYPES: dict[str, str] = {
    "whatsapp": "WHATS_APP",
    "sms": "SMS",
    "linkedin": "LINKEDIN_MESSAGE",
}

#: our delivery ids are the channel's own user / bot ids (FACTS 3.7)
DELIVERY_ID_TYPE = "CHANNEL_SPECIFIC_OPAQUE_ID"

_BODY_PROPERTY = {"note": "hs_note_body", "communication": "hs_communication_body"}


def hubspot_time(value: dt.datetime) -> str:
    """ISO-8601 in UTC with millisecond precision (``hs_timestamp``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def association(from_kind: str, to: CrmRef) -> dict[str, Any]:
    """One inline association of a create body."""
    type_id = ASSOCIATION_TYPES.get((from_kind, to.kind))
    if type_id is None:
        raise ValueError(f"no HubSpot association from {from_kind} to {to.kind}")
    return {
        "to": {"id": str(to.id)},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }


#: the few words the bridge writes itself, per mapping ``language``
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "customer": "Customer",
        "agent": "Agent",
        "via": "via",
        "edited": "edited",
        "late": "delivered late",
    },
    "ru": {
        "customer": "Клиент",
        "agent": "Менеджер",
        "via": "через",
        "edited": "изменено",
        "late": "доставлено с опозданием",
    },
}


def _words(entry: TimelineEntry) -> dict[str, str]:
    return WORDS.get(entry.language, WORDS["en"])


def render_body(entry: TimelineEntry) -> str:
    """The HTML body of a note / communication for one message: sender,
    channel, an "edited" and a "delivered late" mark, the escaped text, attachment labels, each in
    its own ``<p>`` (``<p>head</p><p>text</p>``), line breaks as ``<br>``.

    ``hs_note_body`` is HTML (a rich-text property; a bare ``"\n"`` is
    dropped and the header runs into the message: "Ann via TelegramHello").
    Whether ``hs_communication_body`` is rendered as HTML too is not in the
    stored specs (FACTS 3.3; HubSpot's guide calls it "the text body of the
    message", UNCONFIRMED): it gets the same HTML, like every other
    engagement body. No time in the header: HubSpot shows ``hs_timestamp``
    in each user's own zone. The bridge's message id travels in the
    ``bridge_message_id`` property, never in the body."""
    words = _words(entry)
    who = entry.sender_name or words["customer" if entry.direction == "in" else "agent"]
    channel = entry.channel_title or entry.channel_kind
    head = f"<strong>{html.escape(who)}</strong> {words['via']} {html.escape(channel)}"
    if entry.is_edit:
        head += f" <em>({words['edited']})</em>"
    if entry.late:  # re-parsed from the ingest journal: its own time, shown late
        head += f" <em>({words['late']})</em>"
    parts = [f"<p>{head}</p>"]
    if entry.text:
        text = html.escape(entry.text).replace("\n", "<br>")
        parts.append(f"<p>{text}</p>")
    files = [_linked(a) for a in entry.attachments]
    if not files and not entry.text:
        files = [html.escape(f"[{entry.kind.value.replace('_', ' ')}]")]
    if files:
        parts.append(f"<p>{' '.join(files)}</p>")
    return "".join(parts)


def _linked(attachment: Attachment) -> str:
    """An attachment's label, a link where the bridge keeps the file (the
    Files API is not in the stored specs: HubSpot gets links, not uploads)."""
    text = html.escape(attachments.label(attachment, with_link=False))
    if not is_kept(attachment):
        return text
    return f'<a href="{html.escape(attachment.url or "", quote=True)}">{text}</a>'


def plain_text(entry: TimelineEntry) -> str:
    """The message as inbox text (attachment labels appended; the links of
    files the bridge keeps, never a channel's file URL)."""
    labels = " ".join(attachments.labels(entry))
    text = entry.text or ""
    if entry.is_edit:
        edited = f"({_words(entry)['edited']})"
        text = f"{text} {edited}" if text else edited
    if entry.late:
        late = f"({_words(entry)['late']})"
        text = f"{text} {late}" if text else late
    if labels:
        text = f"{text}\n{labels}" if text else labels
    return text or f"[{entry.kind.value.replace('_', ' ')}]"


def timeline_kind(entry: TimelineEntry) -> str | None:
    """``note``, ``communication`` or ``None`` (``timeline: none``)."""
    wanted = entry.timeline.lower()
    if wanted == "none":
        return None
    if wanted == "communication" and entry.channel_kind in COMMUNICATION_CHANNEL_TYPES:
        return "communication"
    return "note"  # HubSpot has no communication type for this channel


def _contact(entry: TimelineEntry) -> CrmRef:
    # An entry has no contact only where the CRM's own inbox creates the
    # person (``inbox_created_types``); HubSpot has none, so the core found
    # or made the contact before writing any entry.
    assert entry.contact is not None
    return entry.contact


def timeline_input(entry: TimelineEntry, kind: str) -> dict[str, Any]:
    """One ``inputs[]`` item of ``/crm/v3/objects/{notes|communications}/batch/create``."""
    properties: dict[str, str] = {
        "hs_timestamp": hubspot_time(entry.occurred_at),
        _BODY_PROPERTY[kind]: render_body(entry),
        "bridge_message_id": entry.bridge_id,
    }
    if entry.sequence is not None:
        properties["bridge_sequence"] = str(entry.sequence)
    if entry.owner_id:
        properties["hubspot_owner_id"] = str(entry.owner_id)
    if kind == "communication":
        properties["hs_communication_channel_type"] = COMMUNICATION_CHANNEL_TYPES[
            entry.channel_kind
        ]
        # required by HubSpot's communications guide (FACTS 3.3)
        properties["hs_communication_logged_from"] = "CRM"
    associations = [association(kind, _contact(entry))]
    if entry.entity is not None:
        associations.append(association(kind, entry.entity))
    return {
        "properties": properties,
        "associations": associations,
        # echoed in batch errors: tells which input failed (RELIABILITY 1.2)
        "objectWriteTraceId": entry.bridge_id,
    }


def inbox_message(
    entry: TimelineEntry, *, channel_account_id: str, account_identifier: str
) -> dict[str, Any]:
    """``ChannelIntegrationMessageEgg`` for the custom-channel inbox (FACTS 3.7)."""
    customer: dict[str, Any] = {
        "deliveryIdentifier": {
            "type": DELIVERY_ID_TYPE,
            "value": str(entry.sender_identifier or _contact(entry).id),
        }
    }
    if entry.sender_name and entry.direction == "in":
        customer["name"] = entry.sender_name
    bridge_side = {"deliveryIdentifier": {"type": DELIVERY_ID_TYPE, "value": account_identifier}}
    incoming = entry.direction == "in"
    body: dict[str, Any] = {
        "messageDirection": "INCOMING" if incoming else "OUTGOING",
        "channelAccountId": str(channel_account_id),
        "senders": [customer if incoming else bridge_side],
        "recipients": [bridge_side if incoming else customer],
        "text": plain_text(entry),
        "attachments": [],
        "timestamp": hubspot_time(entry.occurred_at),
        "integrationThreadId": entry.conversation_uid,
        # HubSpot dedupes on it: publishing twice is safe (FACTS 3.7)
        "integrationIdempotencyId": entry.bridge_id,
    }
    # int64 in HubSpot's newer SDKs (Go/Java: int64); not in the v3 spec
    # snapshot, named in HubSpot's guide (FACTS 3.7).
    contact = _contact(entry)
    if str(contact.id).isdigit():
        body["associateWithContactId"] = int(contact.id)
    return body


def wants_inbox(entry: TimelineEntry) -> bool:
    """The entry also goes into HubSpot's inbox (the mapping's ``inbox``)."""
    return entry.inbox
