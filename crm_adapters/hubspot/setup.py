"""Create what the bridge needs in a HubSpot account (idempotent).

* A property group ``crm_bridge`` and the bridge's custom properties, per
  object type, through the Properties API (``/crm/v3/properties/{type}``);
  409 means "already there".
* When the tenant wants HubSpot's inbox: the custom channel (registered once
  with the developer API key), the inbox, and one channel account per
  channel link (FACTS 3.7). Legacy private apps cannot use custom channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bridge.errors import PermanentError
from bridge.model import ChannelLink, SetupResult

from .client import decode, map_error
from .timeline import DELIVERY_ID_TYPE

if TYPE_CHECKING:
    from .adapter import HubSpotAdapter

__all__ = [
    "GROUP_NAME",
    "OBJECT_TYPES",
    "bridge_properties",
    "channel_capabilities",
    "identity_property",
    "run_setup",
]

GROUP_NAME = "crm_bridge"
GROUP_LABEL = "CRM bridge"

#: the mapping may name object types singular or plural
OBJECT_TYPES: dict[str, str] = {
    "contact": "contacts",
    "deal": "deals",
    "ticket": "tickets",
    "note": "notes",
    "communication": "communications",
    "task": "tasks",
    "company": "companies",
    "lead": "leads",
}


#: HubSpot's own properties the mapping may write: never created (a create
#: would only answer 409). ``hs_`` names are HubSpot's namespace.
BUILTIN_PROPERTIES = frozenset(
    {
        "firstname", "lastname", "email", "phone", "mobilephone", "company", "website",
        "jobtitle", "address", "city", "state", "zip", "country", "lifecyclestage",
        "hubspot_owner_id", "dealname", "amount", "pipeline", "dealstage", "closedate",
        "dealtype", "description", "subject", "content", "source_type",
    }
)  # fmt: skip


def identity_property(channel_kind: str) -> str:
    """The contact property holding a person's id on a channel."""
    return f"bridge_{channel_kind}_id"


def bridge_properties(
    channel_kinds: Sequence[str], extra: Mapping[str, Sequence[str]] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """object type (plural) -> property name -> definition to create."""
    text = {"type": "string", "fieldType": "text"}
    number = {"type": "number", "fieldType": "number"}
    wanted: dict[str, dict[str, dict[str, Any]]] = {
        "contacts": {},
        "deals": {"bridge_conversation_id": dict(text, label="Bridge conversation id")},
        "tickets": {"bridge_conversation_id": dict(text, label="Bridge conversation id")},
    }
    for kind in sorted(set(channel_kinds)):
        # one person per channel id: a unique value makes a racing duplicate
        # create answer 409 instead of making a second contact
        wanted["contacts"][identity_property(kind)] = dict(
            text, label=f"Bridge {kind} id", hasUniqueValue=True
        )
    for engagement in ("notes", "communications", "tasks"):
        wanted[engagement] = {
            "bridge_message_id": dict(text, label="Bridge message id"),
            "bridge_sequence": dict(number, label="Bridge message sequence"),
        }
    for object_type, names in (extra or {}).items():
        plural = OBJECT_TYPES.get(object_type, object_type)
        for name in names:
            if name in BUILTIN_PROPERTIES or name.startswith("hs_"):
                continue
            wanted.setdefault(plural, {}).setdefault(name, dict(text, label=name))
    return wanted


def run_setup(
    adapter: HubSpotAdapter,
    channels: Sequence[ChannelLink],
    properties: Mapping[str, Sequence[str]] | None,
) -> SetupResult:
    """See :meth:`HubSpotAdapter.setup`."""
    inbox = adapter.account.inbox
    if inbox and str(adapter.credentials.get().get("type") or "oauth") == "private_app":
        # FACTS 3.7: "The custom channel endpoints are not supported when
        # building a legacy private app."
        raise PermanentError(
            "HubSpot's inbox needs the bridge's OAuth app: a private-app token cannot use "
            "custom channels. Install the OAuth app, or set `inbox: false` in the mapping."
        )
    kinds = [link.kind for link in channels]
    for object_type, defs in bridge_properties(kinds, properties).items():
        _ensure_group(adapter, object_type)
        for name, definition in defs.items():
            _ensure_property(adapter, object_type, name, definition)
    result: dict[str, Any] = {"properties_ready": True}
    if inbox:
        result.update(_ensure_inbox(adapter, channels))
    return SetupResult(settings=result)


def _ensure_group(adapter: HubSpotAdapter, object_type: str) -> None:
    adapter.api.request(
        "POST",
        f"/crm/v3/properties/{object_type}/groups",
        json={"name": GROUP_NAME, "label": GROUP_LABEL},
        limit=adapter.api_limit,
        ok=(409,),  # the group exists
    )


def _ensure_property(
    adapter: HubSpotAdapter, object_type: str, name: str, definition: Mapping[str, Any]
) -> None:
    adapter.api.request(
        "POST",
        f"/crm/v3/properties/{object_type}",
        json={"name": name, "groupName": GROUP_NAME, **definition},
        limit=adapter.api_limit,
        ok=(409,),  # the property exists
    )


# -- the custom channel (HubSpot's inbox) --------------------------------------


def _ensure_inbox(adapter: HubSpotAdapter, channels: Sequence[ChannelLink]) -> dict[str, Any]:
    settings = adapter.settings
    channel_id = settings.channel_id or adapter.app.channel_id
    if not channel_id:
        channel_id = _register_channel(adapter)
    inbox_id = settings.inbox_id or _first_inbox(adapter)
    known: dict[str, str] = dict(settings.channel_accounts)
    missing = [link for link in channels if link.id not in known]
    if missing:
        existing = _existing_channel_accounts(adapter, channel_id, inbox_id)
        for link in missing:
            known[link.id] = existing.get(link.identifier) or _create_channel_account(
                adapter, channel_id, inbox_id, link
            )
    return {
        "channel_id": channel_id,
        "inbox_id": inbox_id,
        "channel_accounts": known,
        # the bridge side of each inbox message (recipient of INCOMING ones)
        "channel_identifiers": {
            **settings.channel_identifiers,
            **{link.id: link.identifier for link in channels},
        },
    }


def channel_capabilities() -> dict[str, Any]:
    """What our channel can carry (HubSpot custom-channels guide, FACTS 3.7)."""
    return {
        "deliveryIdentifierTypes": [DELIVERY_ID_TYPE],
        "richText": [],
        "threadingModel": "INTEGRATION_THREAD_ID",  # we send integrationThreadId
        "allowInlineImages": False,
        "allowOutgoingMessages": True,
        # a rep's file goes out by URL; 5 MB is Telegram's limit for photos by URL
        "outgoingAttachmentTypes": ["FILE"],
        "allowedFileAttachmentMimeTypes": ["image/png", "image/jpeg", "application/pdf"],
        "maxFileAttachmentCount": 1,
        "maxFileAttachmentSizeBytes": 5_000_000,
        "maxTotalFileAttachmentSizeBytes": 5_000_000,
    }


def _register_channel(adapter: HubSpotAdapter) -> str:
    app = adapter.app
    if not app.developer_api_key or not app.app_id:
        raise PermanentError(
            "registering HubSpot's custom channel needs the app's `developer_api_key` and "
            "`app_id` in the deployment settings"
        )
    if not adapter.account.webhook_url:
        raise PermanentError("this tenant has no webhook URL for HubSpot's custom channel")
    # App-level call: authenticated by the developer key, not by the
    # tenant's token (FACTS 3.7).
    response = adapter.http.request(
        "POST",
        "/conversations/v3/custom-channels",
        params={"hapikey": app.developer_api_key, "appId": app.app_id},
        json={
            "name": app.channel_name or "CRM bridge",
            "webhookUrl": adapter.account.webhook_url,
            "capabilities": channel_capabilities(),
        },
        limit=adapter.api_limit,
        error_mapper=map_error,
    )
    channel_id = decode(response).get("id")
    if not channel_id:
        raise PermanentError("HubSpot did not return the custom channel id")
    return str(channel_id)


def _first_inbox(adapter: HubSpotAdapter) -> str:
    body = adapter.api.json(
        "GET", "/conversations/v3/conversations/inboxes", limit=adapter.api_limit
    )
    results = body.get("results") if isinstance(body, dict) else None
    if not results:
        raise PermanentError(
            "the HubSpot account has no conversations inbox: create one, or set `inbox_id`"
        )
    return str(results[0]["id"])


def _existing_channel_accounts(
    adapter: HubSpotAdapter, channel_id: str, inbox_id: str
) -> dict[str, str]:
    """delivery identifier value -> channel account id, for this inbox."""
    body = adapter.api.json(
        "GET",
        f"/conversations/v3/custom-channels/{channel_id}/channel-accounts",
        limit=adapter.api_limit,
    )
    found: dict[str, str] = {}
    for account in body.get("results", []) if isinstance(body, dict) else []:
        ident = account.get("deliveryIdentifier") or {}
        if account.get("archived") or str(account.get("inboxId")) != inbox_id:
            continue
        if ident.get("value") is not None:
            found.setdefault(str(ident["value"]), str(account["id"]))
    return found


def _create_channel_account(
    adapter: HubSpotAdapter, channel_id: str, inbox_id: str, link: ChannelLink
) -> str:
    body = adapter.api.json(
        "POST",
        f"/conversations/v3/custom-channels/{channel_id}/channel-accounts",
        json={
            "inboxId": inbox_id,
            "name": link.name,
            "authorized": True,
            "deliveryIdentifier": {"type": DELIVERY_ID_TYPE, "value": link.identifier},
        },
        limit=adapter.api_limit,
    )
    return str(body["id"])
