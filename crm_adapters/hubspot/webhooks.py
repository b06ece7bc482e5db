"""HubSpot -> bridge: v3 request signatures and the custom-channel webhook.

Signature v3 (FACTS 3.6; HubSpot's Python and Node SDKs)::

    X-HubSpot-Signature-v3 = base64(HMAC_SHA256(client_secret,
                                   METHOD + URI + rawBody + timestamp))
    X-HubSpot-Request-Timestamp = epoch milliseconds

The SDKs reject a timestamp older than 300 s; we also reject one more than
300 s in the future (RELIABILITY.md 4.2: symmetric window). Any malformed
header becomes :class:`SignatureError`, never another exception: the
reference verifiers of other vendors crash on junk (RELIABILITY.md 1.3).

The outgoing-message webhook (an agent's reply in HubSpot's inbox) is
``{"type":"OUTGOING_CHANNEL_MESSAGE_CREATED","portalId","channelId",
"message":{...PublicConversationsMessage..., "channelIntegrationThreadIds":[...]}}``
as observed by integrators (FACTS 3.7, UNCONFIRMED): every field access is
in :func:`_reply_event` so a correction is a one-place change, and each event
keeps the raw payload.

The app's CRM-object webhooks (FACTS 3.6: ``[{"eventId", "subscriptionId",
"portalId", "appId", "occurredAt", "subscriptionType", "attemptNumber",
"objectId", "changeFlag"?, "changeSource", "sourceId"?, "propertyName"?,
"propertyValue"?}]``) of the deals and tickets the bridge opens are read by
:func:`_record_event`: a stage change, an owner change, a deletion.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import html
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from bridge.errors import PayloadError, SignatureError
from bridge.model import (
    Attachment,
    CrmEvent,
    CrmEventKind,
    CrmRef,
    MessageKind,
    WebhookRequest,
)

__all__ = [
    "CLOSED_DEAL_STAGES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WINDOW_SECONDS",
    "StageClosed",
    "default_stage_closed",
    "parse_events",
    "sign_v3",
    "split_by_portal",
    "verify_v3",
]

SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
WINDOW_SECONDS = 300

_MAX_SIGNATURE_LEN = 128  # base64 of 32 bytes is 44 characters
_TIMESTAMP = re.compile(r"[0-9]{1,16}")
# HubSpot's v3 guide asks to URL-decode these before signing (UNCONFIRMED in
# the stored copies, FACTS 3.6); the SDKs sign the URI as given. We accept
# either form: both need the client secret.
_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_DECODE_RE = re.compile("|".join(re.escape(k) for k in _DECODE), re.IGNORECASE)


def sign_v3(secret: str, method: str, url: str, body: bytes, timestamp: str) -> str:
    """The v3 signature HubSpot sends for this request."""
    message = method.upper().encode() + url.encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _candidate_urls(url: str) -> list[str]:
    decoded = _DECODE_RE.sub(lambda m: _DECODE[m.group(0).upper()], url)
    return [url] if decoded == url else [url, decoded]


def verify_v3(
    request: WebhookRequest,
    client_secret: str | None,
    *,
    now: float | None = None,
    window: int = WINDOW_SECONDS,
) -> None:
    """Raise :class:`SignatureError` unless ``request`` carries a valid,
    fresh v3 signature made with ``client_secret``."""
    if not client_secret:
        raise SignatureError("HubSpot client secret is not configured")
    try:
        _verify(request, client_secret, time.time() if now is None else now, window)
    except SignatureError:
        raise
    except Exception:  # noqa: BLE001 - junk headers must never become a 500 (RELIABILITY 1.3)
        raise SignatureError("malformed HubSpot signature headers") from None


def _verify(request: WebhookRequest, secret: str, now: float, window: int) -> None:
    signature = request.header(SIGNATURE_HEADER)
    timestamp = request.header(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise SignatureError("missing HubSpot signature headers")
    timestamp = timestamp.strip()
    signature = signature.strip()
    if not _TIMESTAMP.fullmatch(timestamp) or len(signature) > _MAX_SIGNATURE_LEN:
        raise SignatureError("malformed HubSpot signature headers")
    if abs(now - int(timestamp) / 1000.0) > window:
        raise SignatureError("HubSpot signature timestamp outside the 300 s window")
    provided = signature.encode("ascii")
    method = request.method.upper()
    for url in _candidate_urls(request.url):
        expected = sign_v3(secret, method, url, request.body, timestamp).encode("ascii")
        if hmac.compare_digest(expected, provided):
            return
    raise SignatureError("HubSpot signature does not match")


# --------------------------------------------------------------------------
# the app's webhook target (every portal's CRM-object events)
# --------------------------------------------------------------------------


def split_by_portal(request: WebhookRequest) -> dict[str, WebhookRequest]:
    """A delivery to the app's webhook target, per portal: portal id -> the
    request with only that portal's events (a JSON array, the same headers).

    HubSpot sends CRM-object events (``contact.merge`` ...) of every portal
    that installed the app to the one target URL of the app's webhook
    settings, in JSON arrays that may mix portals, each event naming its
    ``portalId`` (FACTS 3.6). The client secret signs the whole body, so
    verify the request before splitting it; the parts are not signed. An
    event without a portal id names no tenant: left out."""
    items = _items(request)
    portals: dict[str, list[Any]] = {}
    for item in items:
        portal = _portal_of(item)
        if portal is not None:
            portals.setdefault(portal, []).append(item)
    return {
        portal: replace(request, body=json.dumps(part, separators=(",", ":")).encode())
        for portal, part in portals.items()
    }


def _portal_of(item: Mapping[str, Any]) -> str | None:
    """The event's portal id (a number; a digit string is taken too)."""
    portal = item.get("portalId")
    if isinstance(portal, int) and not isinstance(portal, bool):
        return str(portal)
    if isinstance(portal, str) and portal.isdigit():
        return portal
    return None


def _items(request: WebhookRequest) -> list[dict[str, Any]]:
    try:
        payload = json.loads(request.body)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise PayloadError("HubSpot webhook body is not JSON") from None
    items = payload if isinstance(payload, list) else [payload]
    if not items or not all(isinstance(item, dict) for item in items):
        raise PayloadError("HubSpot webhook body must be an object or an array of objects")
    return items


# --------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------

REPLY_TYPE = "OUTGOING_CHANNEL_MESSAGE_CREATED"
#: other documented custom-channel webhook types (changelog
#: "custom-channels-api-is-now-live"): acknowledged, nothing to do.
KNOWN_OTHER_TYPES = frozenset({"CHANNEL_ACCOUNT_CREATED", "CHANNEL_ACCOUNT_UPDATED"})


#: (``"deal"`` | ``"ticket"``, stage id) -> whether that stage is a closed one
StageClosed = Callable[[str, str], bool]

#: HubSpot's closed stages of the default deal pipeline (FACTS 3.5's
#: ``metadata.isClosed`` names them per portal; these ids are the fallback)
CLOSED_DEAL_STAGES = frozenset({"closedwon", "closedlost"})


def default_stage_closed(kind: str, stage: str) -> bool:
    """Closed without the pipelines' metadata: only the default deal
    pipeline's ``closedwon`` / ``closedlost`` are known to be."""
    return kind == "deal" and stage in CLOSED_DEAL_STAGES


def parse_events(
    request: WebhookRequest,
    account_id: str | None,
    stage_closed: StageClosed = default_stage_closed,
) -> list[CrmEvent]:
    """The webhook body as events; a payload for another portal is refused.
    ``stage_closed`` tells a closed deal/ticket stage from an open one (the
    adapter reads the pipelines; called only for a stage change)."""
    events = []
    for item in _items(request):
        _check_portal(item, account_id)
        merges = _merge_events(item, request.received_at)
        if merges is not None:
            events.extend(merges)
            continue
        record = _record_event(item, request.received_at, stage_closed)
        events.append(record if record is not None else _event(item, request.received_at))
    return events


#: the records the bridge opens, by the subscription type's object name and,
#: for the generic ``object.*`` subscriptions, by ``objectTypeId`` (HubSpot's
#: standard type ids: 0-3 deals, 0-5 tickets)
RECORD_KINDS = {"deal": "deal", "ticket": "ticket"}
RECORD_TYPE_IDS = {"0-3": "deal", "0-5": "ticket"}
#: the property holding a record's stage (FACTS 3.3: deals ``dealstage``,
#: tickets ``hs_pipeline_stage``) and its owner (FACTS 3.5)
STAGE_PROPERTIES = {"deal": "dealstage", "ticket": "hs_pipeline_stage"}
OWNER_PROPERTY = "hubspot_owner_id"


def _record_event(
    item: Mapping[str, Any], received_at: dt.datetime, stage_closed: StageClosed
) -> CrmEvent | None:
    """A deal's or ticket's ``.deletion`` -> ENTITY_CLOSED; its
    ``.propertyChange`` of the stage -> ENTITY_CLOSED (a closed stage) or
    ENTITY_STAGE (an open one), of ``hubspot_owner_id`` -> OWNER_CHANGED.
    None when ``item`` is none of these (an UNKNOWN event keeps it)."""
    subscription = item.get("subscriptionType")
    if not isinstance(subscription, str):
        return None
    name, _, action = subscription.partition(".")
    kind = (
        RECORD_TYPE_IDS.get(str(item.get("objectTypeId")))
        if name == "object"
        else RECORD_KINDS.get(name)
    )
    object_id = _str_or_none(item.get("objectId"))
    if kind is None or object_id is None:
        return None
    entity = CrmRef(kind, object_id)
    when = _when(item.get("occurredAt"), received_at)
    if action == "deletion":
        key = f"{subscription}:{object_id}:{_event_key(item)}"
        return CrmEvent(CrmEventKind.ENTITY_CLOSED, key, when, entity=entity, raw=dict(item))
    if action == "propertyChange":
        return _property_event(item, entity, when, stage_closed)
    return None


def _property_event(
    item: Mapping[str, Any], entity: CrmRef, when: dt.datetime, stage_closed: StageClosed
) -> CrmEvent | None:
    prop = item.get("propertyName")
    value = _str_or_none(item.get("propertyValue"))
    if value is None:  # a stage or owner cleared: nothing to follow
        return None
    key = f"{item.get('subscriptionType')}:{prop}:{entity.id}:{_event_key(item)}"
    if prop == STAGE_PROPERTIES[entity.kind]:
        if stage_closed(entity.kind, value):
            return CrmEvent(CrmEventKind.ENTITY_CLOSED, key, when, entity=entity, raw=dict(item))
        return CrmEvent(
            CrmEventKind.ENTITY_STAGE, key, when, entity=entity, stage=value, raw=dict(item)
        )
    if prop == OWNER_PROPERTY:
        return CrmEvent(
            CrmEventKind.OWNER_CHANGED, key, when, entity=entity, owner_id=value, raw=dict(item)
        )
    return None


def _event_key(item: Mapping[str, Any]) -> str:
    """The delivery's ``eventId`` (the same on HubSpot's retries of it); it
    "is not guaranteed to be unique" (HubSpot's webhooks guide), so callers
    prefix it with the record and the property. No id: the event's digest."""
    return _str_or_none(item.get("eventId")) or _digest(item)


#: CRM webhook subscriptions (FACTS 3.6) for a contact merge: the legacy
#: ``contact.merge`` and the generic ``object.merge`` with ``objectTypeId``
#: 0-1 (changelog "Public Beta: Generic Webhook Subscriptions")
MERGE_TYPES = frozenset({"contact.merge", "object.merge"})
CONTACT_TYPE_ID = "0-1"


def _merge_events(item: Mapping[str, Any], received_at: dt.datetime) -> list[CrmEvent] | None:
    """A person (or an app) merged contacts in HubSpot: one CONTACT_MERGED
    per contact gone (``contact``) into the survivor (``merged_into``).

    The merge fields (changelog "New subscription types for Webhooks"):
    ``primaryObjectId``, ``mergedObjectIds`` (an array: several may merge at
    once), ``newObjectId`` ("in some cases a new object is created from the
    result of a merge": then the primary is gone too),
    ``numberOfPropertiesMoved``. None when ``item`` is no contact merge."""
    kind = item.get("subscriptionType")
    if kind not in MERGE_TYPES:
        return None
    if kind == "object.merge" and str(item.get("objectTypeId")) != CONTACT_TYPE_ID:
        return None
    primary = _str_or_none(item.get("primaryObjectId"))
    survivor = (
        _str_or_none(item.get("newObjectId")) or primary or _str_or_none(item.get("objectId"))
    )
    merged = item.get("mergedObjectIds")
    gone = [str(i) for i in (merged if isinstance(merged, list) else []) if _str_or_none(i)]
    if primary and primary != survivor:
        gone.append(primary)
    gone = [g for g in dict.fromkeys(gone) if g != survivor]
    if survivor is None or not gone:
        return None  # nothing we can follow: an UNKNOWN event keeps it
    when = _when(item.get("occurredAt"), received_at)
    return [
        CrmEvent(
            kind=CrmEventKind.CONTACT_MERGED,
            # eventId "is not guaranteed to be unique" (HubSpot's webhooks
            # guide): the pair names the merge
            external_id=f"contact.merge:{old}:{survivor}",
            occurred_at=when,
            contact=CrmRef("contact", old),
            merged_into=CrmRef("contact", survivor),
            raw=dict(item),
        )
        for old in gone
    ]


def _check_portal(item: Mapping[str, Any], account_id: str | None) -> None:
    # The client secret is app-wide, so a valid signature does not prove the
    # tenant: the portal id does (DESIGN: a tenant's webhook touches only
    # that tenant). A payload that names no portal proves nothing either.
    portal = item.get("portalId")
    if account_id is None:
        return
    if portal is None or str(portal) != str(account_id):
        raise SignatureError("HubSpot webhook is for another portal")


def _event(item: Mapping[str, Any], received_at: dt.datetime) -> CrmEvent:
    kind = item.get("type")
    message = item.get("message")
    if kind == REPLY_TYPE and isinstance(message, Mapping):
        direction = message.get("direction")
        client = message.get("client")
        from_integration = isinstance(client, Mapping) and client.get("clientType") == "INTEGRATION"
        if direction in (None, "OUTGOING") and not from_integration:
            return _reply_event(item, message, received_at)
    return CrmEvent(
        kind=CrmEventKind.UNKNOWN,
        external_id=_unknown_id(item),
        occurred_at=_when(item.get("eventTimestamp") or item.get("occurredAt"), received_at),
        raw=dict(item),
    )


def _reply_event(
    item: Mapping[str, Any], message: Mapping[str, Any], received_at: dt.datetime
) -> CrmEvent:
    message_id = message.get("id")
    if message_id in (None, ""):
        raise PayloadError("HubSpot outgoing message has no id")
    threads = message.get("channelIntegrationThreadIds") or []
    senders = message.get("senders") or []
    recipients = message.get("recipients") or []
    # any JSON may stand there: {"0": …} would be a KeyError, 5 a TypeError
    senders = senders if isinstance(senders, list) else []
    recipients = recipients if isinstance(recipients, list) else []
    sender = senders[0] if senders and isinstance(senders[0], Mapping) else {}
    recipient = recipients[0] if recipients and isinstance(recipients[0], Mapping) else {}
    delivery = recipient.get("deliveryIdentifier")
    text = message.get("text")
    if not isinstance(text, str) or not text:
        text = html_to_text(message.get("richText"))
    return CrmEvent(
        kind=CrmEventKind.REPLY,
        external_id=str(message_id),
        occurred_at=_when(message.get("createdAt") or item.get("eventTimestamp"), received_at),
        thread_key=str(threads[0]) if isinstance(threads, list) and threads else None,
        crm_thread_id=_str_or_none(message.get("conversationsThreadId")),
        recipient=_str_or_none(delivery.get("value") if isinstance(delivery, Mapping) else None),
        text=text,
        attachments=_attachments(message.get("attachments")),
        author_id=_str_or_none(sender.get("actorId")),
        author_name=_str_or_none(sender.get("name")),
        raw=dict(item),
    )


def _attachments(value: Any) -> tuple[Attachment, ...]:
    # PublicFile {type: FILE, fileId, fileUsageType, name?, url?} (customChannels spec)
    out = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, Mapping) or item.get("type") != "FILE":
            continue
        usage = str(item.get("fileUsageType") or "").upper()
        kind = {"IMAGE": MessageKind.PHOTO, "AUDIO": MessageKind.AUDIO, "VIDEO": MessageKind.VIDEO}
        out.append(
            Attachment(
                kind=kind.get(usage, MessageKind.DOCUMENT),
                file_ref=_str_or_none(item.get("fileId")),
                url=_str_or_none(item.get("url")),
                file_name=_str_or_none(item.get("name")),
            )
        )
    return tuple(out)


_TAG = re.compile(r"<[^>]+>")
_BREAK = re.compile(r"<\s*(br|/p|/div|/li)\s*/?\s*>", re.IGNORECASE)


def html_to_text(value: Any) -> str:
    """richText (HTML) as plain text for the channel."""
    if not isinstance(value, str):
        return ""
    text = _BREAK.sub("\n", value)
    text = html.unescape(_TAG.sub("", text))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _when(value: Any, default: dt.datetime) -> dt.datetime:
    """ISO-8601 or epoch milliseconds -> aware datetime."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value / 1000.0, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return default
    if isinstance(value, str) and value:
        if value.isdigit():
            return _when(int(value), default)
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return default
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return default


def _unknown_id(item: Mapping[str, Any]) -> str:
    message = item.get("message")
    for candidate in (
        item.get("eventId"),
        message.get("id") if isinstance(message, Mapping) else None,
    ):
        if candidate not in (None, ""):
            return f"{item.get('type') or 'unknown'}:{candidate}"
    return "unknown:" + _digest(item)


def _digest(item: Mapping[str, Any]) -> str:
    """A stable id for an event that carries none."""
    try:
        canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str)
    except RecursionError:  # json.loads took it, but only just: nested too deeply
        raise PayloadError("HubSpot webhook body is nested too deeply") from None
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _str_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
