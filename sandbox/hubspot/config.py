"""Configuration of the sandbox HubSpot: defaults, overrides, run-time updates.

``create_app(config)`` deep-merges ``config`` over :data:`DEFAULTS`;
``POST /_config`` updates the same keys at run time (except ``portals``,
which only ``create_app`` sets): :data:`SETTINGS`, a
:class:`sandbox.core.config.Settings`. Switches for UNCONFIRMED vendor behaviour are
named in FACTS.md terms and documented next to each default.
"""

from __future__ import annotations

from typing import Any

from ..core.config import Settings, require_bools, require_numbers, require_positive_ints
from .events import check_subscriptions

__all__ = ["DEFAULTS", "SETTINGS"]

DEFAULTS: dict[str, Any] = {
    # Portals (HubSpot accounts). Each has an id, a private-app token
    # ("pat-na1-..."; FACTS 3.1), a time zone and optional seeded owners.
    "portals": [
        {"id": 62515, "name": "Demo Company", "private_app_token":
         "pat-na1-11111111-1111-4111-8111-111111111111", "time_zone": "Europe/Berlin",
         "currency": "EUR"},
        {"id": 62516, "name": "Second Tenant", "private_app_token":
         "pat-na1-22222222-2222-4222-8222-222222222222", "time_zone": "America/New_York",
         "currency": "USD"},
    ],
    # The developer app that the bridge is (public OAuth app; FACTS 3.1/3.7).
    "app": {
        "app_id": 424242,
        "client_id": "0c3a8f2e-5b1d-4c8e-9a7f-2d6e4b1a9c30",
        "client_secret": "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
        "developer_api_key": "eu1-d3v0-k3y0-4a1b-9c2d-5e6f7a8b9c0d",
        "redirect_uris": [],  # empty: any redirect_uri is accepted
        "scopes": [
            "crm.objects.contacts.read", "crm.objects.contacts.write",
            "crm.objects.deals.read", "crm.objects.deals.write",
            "tickets", "crm.objects.owners.read", "crm.schemas.contacts.write",
            "conversations.read", "conversations.custom_channels.read",
            "conversations.custom_channels.write", "oauth",
        ],
    },
    # FACTS 3.2: 100 / 10 s for Free/Starter private apps (190 Pro/Enterprise),
    # 110 for public OAuth apps (UNCONFIRMED; older docs say 100).
    "per_10s": 100,
    "per_10s_oauth": None,  # None: same as per_10s
    "rate_interval_ms": 10000,  # the rolling window (tests shorten it)
    "per_day": 250000,  # private apps only (no daily limit on OAuth calls)
    # FACTS 3.2: search has its own limit, 4/s (changelog) or 5/s (current docs).
    "search_per_s": 5,
    # UNCONFIRMED (FACTS 3.2): whether API 429s carry Retry-After.
    "retry_after_header": False,
    # FACTS 3.1: access tokens typically live 1800 s.
    "access_token_ttl": 1800,
    "code_ttl": 600,  # authorization codes: single-use, short-lived
    # UNCONFIRMED (FACTS 3.1): whether a refresh returns a new refresh token
    # (and invalidates the old one).
    "rotate_refresh_tokens": False,
    # UNCONFIRMED (FACTS 3.3): the deals/tickets/notes/tasks required-property
    # lists come from HubSpot guides, not stored sources. True enforces them.
    "enforce_unconfirmed_required": True,
    # UNCONFIRMED (FACTS 3.7): integrationIdempotencyId dedupe on publish.
    "idempotency_dedupe": True,
    # FACTS 3.3: search is eventually consistent. Records younger than this are
    # invisible to /search (0 = immediately visible).
    "search_index_lag_s": 0.0,
    # Outgoing webhook delivery (FACTS 3.6: answer within 5 s).
    "webhook_timeout_s": 5.0,
    # The app's webhook target URL for CRM subscriptions (contact.merge...):
    # set in the developer portal's Webhooks settings, one URL for every
    # portal (FACTS 3.6). None: no CRM-object webhooks are sent.
    "crm_webhook_url": None,
    # The app's webhook subscriptions there (the developer portal's Webhooks
    # settings), each as the webhooks v3 spec's SubscriptionCreateRequest
    # (upstream only, FACTS 3.6): {"eventType": "<object>.<action>",
    # "propertyName" (propertyChange only), "active"?: true}. The sandbox fires
    # <object>.creation, .deletion, .propertyChange and .merge (events.py). The
    # default is the set docs/crms/hubspot.md asks for.
    "crm_webhook_subscriptions": [
        {"eventType": "contact.merge"},
        {"eventType": "deal.propertyChange", "propertyName": "dealstage"},
        {"eventType": "deal.propertyChange", "propertyName": "hubspot_owner_id"},
        {"eventType": "deal.deletion"},
        {"eventType": "ticket.propertyChange", "propertyName": "hs_pipeline_stage"},
        {"eventType": "ticket.propertyChange", "propertyName": "hubspot_owner_id"},
        {"eventType": "ticket.deletion"},
    ],
    # UNCONFIRMED: whether a create fires .propertyChange for the subscribed
    # properties it sets (true) or only .creation (false).
    "crm_webhook_change_on_create": False,
    # How the app's CRM-object events go out. False: a request's events at
    # once, in one POST after it (a merge's in its own). True: held until
    # POST /_crm_webhooks/flush, then sent together, every portal's events in
    # the same JSON arrays of up to crm_webhook_batch_size events, as HubSpot
    # batches the app's events for its one target URL (FACTS 3.6: arrays of
    # up to 100 events, UNCONFIRMED; that one array mixes portals is
    # UNCONFIRMED too: every event names its portalId, so a receiver must
    # not assume one portal).
    "crm_webhook_hold": False,
    "crm_webhook_batch_size": 100,
    # Merges (POST /crm/v3/objects/{type}/merge; sandbox/hubspot/merge.py).
    # UNCONFIRMED (changelog "New subscription types for webhooks": "in some
    # cases a new object is created from the result of a merge"): true makes
    # every merge create a new record (the webhook's newObjectId) that both
    # ids resolve to.
    "merge_new_id": False,
    # UNCONFIRMED: a GET of a merged-away id answers the surviving record
    # (HubSpot's merge guide: the secondary's id is kept in
    # hs_merged_object_ids and still opens the record). False: 404.
    "merged_id_resolves": True,
    # UNCONFIRMED: merging a pair already merged. "error": 400
    # VALIDATION_ERROR; "ok": 200 with the surviving record.
    "merge_again": "error",
    # Workflows with a "Send a webhook" action (sandbox/hubspot/workflows.py; HubSpot
    # KB "Use webhooks with HubSpot workflows"): each {"object": "contacts"|"deals",
    # "property", "value" (null: the property becomes known), "url", "method":
    # "POST"|"GET", "portal"? (default: the first), "auth": "none"|"v1"|"v2"|"v3",
    # "reenroll"?: false, "name"?}. A record enrols when its property becomes the value.
    "workflow_webhooks": [],
    # UNCONFIRMED (not in the contracts): the enrolled record's JSON. "object":
    # {"objectId", "objectType", "objectTypeId", "portalId", "properties": {name: value}};
    # "legacy": the legacy contact record {"vid", "portal-id", "properties": {name:
    # {"value"}}, ...} (deals: {"dealId", ...}).
    "workflow_webhook_body": "object",
    # UNCONFIRMED (the KB: retries for up to three days, none after a 4xx): seconds
    # before attempt n + 1 after attempt n got no answer, a 5xx or a 429; [] = no retry.
    "workflow_webhook_retry_s": [60 * 2**n for n in range(9)] + [28800] * 7,
    # A fault for retry tests: the answers of the next N workflow webhook attempts
    # are lost (the receiver acted; HubSpot retries the same bytes).
    "workflow_webhook_lose_answers": 0,
    # First attempts after the write's answer on worker threads ("background", as
    # HubSpot runs workflows asynchronously) or before it ("inline", tests).
    "workflow_delivery": "background",
    # RNG seed for the fault plan (None: random).
    "seed": None,
}

_WORKFLOW_KEYS = {"object", "property", "value", "url", "method", "portal", "auth",
                  "reenroll", "name"}


def _check_workflow(i: int, w: Any, portal_ids: set[int]) -> None:
    """One ``workflow_webhooks`` entry; ValueError names the key and the fix."""
    where = f"workflow_webhooks[{i}]"
    if not isinstance(w, dict) or set(w) - _WORKFLOW_KEYS:
        raise ValueError(f"{where} must be an object with keys among {sorted(_WORKFLOW_KEYS)}")
    if w.get("object") not in ("contacts", "deals"):
        raise ValueError(f"{where}.object must be 'contacts' or 'deals'")
    if not isinstance(w.get("property"), str) or not w["property"]:
        raise ValueError(f"{where}.property must name a property")
    if w.get("value") is not None and not isinstance(w["value"], (str, int, float)):
        raise ValueError(f"{where}.value must be a string or null")
    if not isinstance(w.get("url"), str) or not w["url"].startswith(("http://", "https://")):
        raise ValueError(f"{where}.url must be an http(s) URL")
    if str(w.get("method", "POST")).upper() not in ("POST", "GET"):
        raise ValueError(f"{where}.method must be POST or GET")
    if w.get("auth", "none") not in ("none", "v1", "v2", "v3"):
        raise ValueError(f"{where}.auth must be none, v1, v2 or v3")
    if "portal" in w and w["portal"] not in portal_ids:
        raise ValueError(f"{where}.portal must be one of the portal ids {sorted(portal_ids)}")
    if not isinstance(w.get("reenroll", False), bool):
        raise ValueError(f"{where}.reenroll must be a boolean")


def _check_workflows(cfg: dict[str, Any]) -> None:
    if not isinstance(cfg["workflow_webhooks"], list):
        raise ValueError("workflow_webhooks must be a list")
    portal_ids = {p["id"] for p in cfg["portals"]}
    for i, workflow in enumerate(cfg["workflow_webhooks"]):
        _check_workflow(i, workflow, portal_ids)
    if cfg["workflow_webhook_body"] not in ("object", "legacy"):
        raise ValueError("workflow_webhook_body must be 'object' or 'legacy'")
    delays = cfg["workflow_webhook_retry_s"]
    if not isinstance(delays, list) or not all(
            isinstance(d, (int, float)) and not isinstance(d, bool) and d >= 0 for d in delays):
        raise ValueError("workflow_webhook_retry_s must be a list of seconds >= 0")
    lose = cfg["workflow_webhook_lose_answers"]
    if not isinstance(lose, int) or isinstance(lose, bool) or lose < 0:
        raise ValueError("workflow_webhook_lose_answers must be an integer >= 0")
    if cfg["workflow_delivery"] not in ("background", "inline"):
        raise ValueError("workflow_delivery must be 'background' or 'inline'")


def _check(cfg: dict[str, Any]) -> None:
    require_positive_ints(cfg, ("per_10s", "per_day", "search_per_s", "rate_interval_ms",
                                "crm_webhook_batch_size"))
    if cfg["per_10s_oauth"] is not None and (
            not isinstance(cfg["per_10s_oauth"], int) or cfg["per_10s_oauth"] < 1):
        raise ValueError("per_10s_oauth must be a positive integer or null")
    require_numbers(cfg, ("access_token_ttl", "code_ttl", "search_index_lag_s",
                          "webhook_timeout_s"))
    require_bools(cfg, ("retry_after_header", "rotate_refresh_tokens",
                        "enforce_unconfirmed_required", "idempotency_dedupe",
                        "merge_new_id", "merged_id_resolves", "crm_webhook_hold",
                        "crm_webhook_change_on_create"))
    check_subscriptions(cfg["crm_webhook_subscriptions"])
    if cfg["merge_again"] not in ("error", "ok"):
        raise ValueError("merge_again must be 'error' or 'ok'")
    if cfg["crm_webhook_url"] is not None and not isinstance(cfg["crm_webhook_url"], str):
        raise ValueError("crm_webhook_url must be a URL or null")
    ids = set()
    for portal in cfg["portals"]:
        if not isinstance(portal, dict) or not isinstance(portal.get("id"), int):
            raise ValueError("each portal needs an integer 'id'")
        if portal["id"] in ids:
            raise ValueError(f"duplicate portal id {portal['id']}")
        ids.add(portal["id"])
    app = cfg["app"]
    for key in ("app_id", "client_id", "client_secret", "developer_api_key"):
        if key not in app:
            raise ValueError(f"app.{key} is required")
    _check_workflows(cfg)


#: defaults, overrides, run-time updates (``portals`` only at start-up)
SETTINGS = Settings(DEFAULTS, check=_check, frozen={"portals"})
