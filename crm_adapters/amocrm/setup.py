"""Create what the bridge needs in an amoCRM account (idempotent).

1. ``GET /api/v4/account?with=amojo_id``: the account id and amojo id
   (FACTS 1.11).
2. Custom fields (FACTS 1.6), each created only when no field of that name
   exists: a contact text field per channel kind for the person's id there
   ("Telegram ID"), a lead text field for the bridge's conversation uid
   ("Bridge conversation"), and a text field per name the mapping writes
   (``properties``: object type -> names). A mapping name ``utm_source``
   first adopts amoCRM's own field with code ``UTM_SOURCE`` when the account
   has one (its "tracking data" fields).
3. Account webhooks (FACTS 1.12): ``POST /api/v4/webhooks`` to the tenant's
   webhook URL (which carries the tenant's secret key: these hooks are not
   signed) for lead status / owner / deletion / notes and contact deletion /
   updates. The same destination is updated, never duplicated.
4. When the tenant's mapping writes into amoCRM's chat (``account.inbox``):
   connect the Chats API channel
   (``POST {amojo}/v2/origin/custom/{channel_id}/connect``, signed) and
   return its ``scope_id`` as this tenant's route key, so the channel's hook
   ``/webhooks/crm/amocrm/route/<scope_id>`` reaches this tenant; then name
   each channel account's chats: one amoCRM source per account, its
   ``external_id`` the chats' ``source.external_id`` (:mod:`.sources`; the
   Sources API is not in the stored contracts, UNCONFIRMED; an account
   without it is no failure).

What it records are fields of :class:`~crm_adapters.amocrm.settings.AmoCrmSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bridge.errors import PermanentError
from bridge.model import ChannelLink, SetupResult

from .client import embedded
from .fields import CONVERSATION_FIELD_NAME, ENTITY_PATHS, identity_field_name
from .settings import DEFAULT_CHANNEL_TITLE
from .sources import ensure_sources

if TYPE_CHECKING:
    from .adapter import AmoCrmAdapter

__all__ = ["WEBHOOK_EVENTS", "run_setup"]

WEBHOOK_EVENTS = (
    "status_lead",
    # a lead's tags (the service layer's transfers by tag): the update carries them
    "update_lead",
    "responsible_lead",
    "delete_lead",
    "note_lead",
    "delete_contact",
    "update_contact",
)
#: field types a bridge value (a string id) can live in
TEXTUAL = frozenset({"text", "textarea", "numeric", "tracking_data", "url"})


def run_setup(
    adapter: AmoCrmAdapter,
    channels: Sequence[ChannelLink],
    properties: Mapping[str, Sequence[str]] | None,
) -> SetupResult:
    """See :meth:`AmoCrmAdapter.setup`."""
    account = adapter.api.json("GET", "/api/v4/account", params={"with": "amojo_id"})
    if not isinstance(account, Mapping) or account.get("id") in (None, ""):
        raise PermanentError("amoCRM did not return the account (GET /api/v4/account)")
    result: dict[str, Any] = {"amo_account_id": str(account["id"])}
    if account.get("amojo_id"):
        result["amojo_id"] = str(account["amojo_id"])

    # field name -> (object path, adopt-by-code) per object type
    wanted: dict[str, dict[str, str | None]] = {"contacts": {}, "leads": {}}
    identity = {link.kind: identity_field_name(link.kind) for link in channels}
    for name in identity.values():
        wanted["contacts"][name] = None
    wanted["leads"][CONVERSATION_FIELD_NAME] = None
    extra: dict[str, list[str]] = {}
    for object_type, names in (properties or {}).items():
        path = ENTITY_PATHS.get(object_type)
        if path is None:
            raise PermanentError(
                f"amoCRM has no object type {object_type!r} for mapping fields (lead, contact)"
            )
        for name in names:
            wanted.setdefault(path, {})[name] = name.upper()
            extra.setdefault(path, []).append(name)
    ids: dict[str, dict[str, int]] = {}
    for path, fields in wanted.items():
        if fields:
            ids[path] = _ensure_fields(adapter, path, fields)
    result["identity_fields"] = {
        kind: ids["contacts"][name] for kind, name in sorted(identity.items())
    }
    result["conversation_field"] = ids["leads"][CONVERSATION_FIELD_NAME]
    result["custom_fields"] = {
        path: {name: ids[path][name] for name in sorted(set(names))}
        for path, names in sorted(extra.items())
    }

    if adapter.account.webhook_url:
        adapter.api.json(
            "POST",
            "/api/v4/webhooks",
            json={
                "destination": adapter.account.webhook_url,
                "settings": list(WEBHOOK_EVENTS),
                "sort": 10,
            },
        )

    if not adapter.account.inbox:
        return SetupResult(settings=result)
    app = adapter.app
    amojo_id = result.get("amojo_id") or adapter.settings.amojo_id
    if not app.channel_id or not app.channel_secret:
        raise PermanentError(
            "amoCRM chats need the channel issued by amoCRM support: set AMOCRM_CHANNEL_ID "
            "and AMOCRM_CHANNEL_SECRET, or set `inbox: false` in the mapping"
        )
    if not amojo_id:
        raise PermanentError("amoCRM did not return the account's amojo_id")
    title = app.channel_title or DEFAULT_CHANNEL_TITLE
    scope_id = adapter.amojo.connect(app.channel_id, str(amojo_id), title)
    result["scope_id"] = scope_id
    ensure_sources(adapter, channels)
    # the channel's hook URL ends in the scope id (FACTS 1.13): the tenant's route
    return SetupResult(settings=result, routes=(scope_id,))


def _ensure_fields(
    adapter: AmoCrmAdapter, path: str, wanted: Mapping[str, str | None]
) -> dict[str, int]:
    """name -> field id for every wanted name, creating the missing ones in
    one call. A name is matched by an existing field's code (when given),
    else by its name; a same-named field of a type that cannot hold text is
    left alone and ours gets the suffix " (bridge)"."""
    existing = adapter.api.pages(f"/api/v4/{path}/custom_fields", "custom_fields")
    by_code = {str(f.get("code") or "").upper(): f for f in existing if f.get("code")}
    by_name: dict[str, Mapping[str, Any]] = {}
    for item in existing:
        by_name.setdefault(str(item.get("name") or ""), item)
    found: dict[str, int] = {}
    create: dict[str, str] = {}  # wanted name -> name to create
    for name, code in wanted.items():
        field = by_code.get(code) if code else None
        if field is None:
            field = by_name.get(name)
        if field is not None and str(field.get("type") or "text") in TEXTUAL:
            found[name] = int(field["id"])
            continue
        label = name if field is None else f"{name} (bridge)"
        other = by_name.get(label)
        if other is not None and str(other.get("type") or "text") in TEXTUAL:
            found[name] = int(other["id"])
            continue
        create[name] = label
    if create:
        body = adapter.api.json(
            "POST",
            f"/api/v4/{path}/custom_fields",
            json=[
                {"name": label, "type": "text", "request_id": name}
                for name, label in create.items()
            ],
        )
        made = embedded(body, "custom_fields")
        labels = {label: name for name, label in create.items()}
        for index, field in enumerate(made):
            name = str(field.get("request_id") or "")
            if name not in create:
                name = labels.get(str(field.get("name") or ""), "")
            if not name and index < len(create):
                name = list(create)[index]
            if name and field.get("id") is not None:
                found[name] = int(field["id"])
        missing = [n for n in create if n not in found]
        if missing:
            raise PermanentError(f"amoCRM did not create the {path} field(s) {', '.join(missing)}")
    return found
