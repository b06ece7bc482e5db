"""Configuration of the sandbox Bitrix24: defaults, overrides, run-time updates.

``create_app(config)`` deep-merges ``config`` over :data:`DEFAULTS`
(``portals`` is replaced whole, each portal's missing keys are filled from
:data:`PORTAL_DEFAULTS`); ``POST /_config`` changes the same keys at run time
except ``portals`` (:data:`SETTINGS`, a :class:`sandbox.core.config.Settings`).
Every switch for behaviour the vendor docs do not state is marked
**UNCONFIRMED** next to its default (FACTS.md section 2 is the source of
what *is* confirmed).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ..core.config import Settings

__all__ = [
    "DEFAULTS",
    "PORTAL_DEFAULTS",
    "SETTINGS",
    "DEMO_DOMAIN",
    "DEMO_MEMBER_ID",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_WEBHOOK_USER",
    "DEMO_WEBHOOK_CODE",
    "DEMO_LINE_ID",
]

DEMO_DOMAIN = "demo.bitrix24.ru"
DEMO_MEMBER_ID = "a223c6b3710f85df22e9377d6c4f7553"
# Local apps get ids of the form "local.<hex>.<digits>" (settings/oauth/index.md
# shows "app.573ad8a0346747.09223434" for a market app).
DEMO_CLIENT_ID = "local.6650f1c2a4b3d7.81234567"
DEMO_CLIENT_SECRET = "LJSl0lNB76B5YY6u0YVQ3AW0DrVADcRTwVr4y99PXU1BWQybWK"  # noqa: S105
DEMO_WEBHOOK_USER = 1
DEMO_WEBHOOK_CODE = "8g9l071eismy9q2l"  # the shape of authorization.md's example code
DEMO_LINE_ID = 1

#: keys a portal entry may carry, with their defaults
PORTAL_DEFAULTS: dict[str, Any] = {
    "domain": None,  # required, host-like ("demo.bitrix24.ru")
    "member_id": None,  # required, 32 hex characters
    "plan": "basic",  # "basic" | "enterprise" (limits.md: the two rate tiers)
    "language": "en",  # LANGUAGE_ID in ONAPPINSTALL / app.info
    "utc_offset": "+03:00",  # the portal server's zone, used in every datetime
    "users": [{"ID": 1, "NAME": "Portal", "LAST_NAME": "Admin", "EMAIL": "admin@example.com",
               "ADMIN": True}],
    # incoming webhooks: {"user_id", "code", "scopes": [...]}
    "webhooks": [],
    # Open Lines: {"ID", "LINE_NAME", "ACTIVE"?: "Y", "QUEUE"?: [user ids],
    #              "CRM_CREATE"?: "lead" | "none", "CRM_SOURCE"?: SOURCE_ID}
    "open_lines": [],
    # extra deal pipelines (the default one, id 0, always exists):
    # {"id", "name", "sort"?}; stages are generated (DEAL_STAGE_<id>, "C<id>:NEW", ...)
    "deal_categories": [],
    # user fields the portal starts with, per entity ("lead" | "contact" | "deal"):
    # [{"FIELD_NAME": "UF_CRM_..." (<= 20 characters), "USER_TYPE_ID"?: "string",
    #   "MULTIPLE"?: "N", "MANDATORY"?: "N", "LABEL"?: "...", any other key
    #   crm.<type>.userfield.add takes}]; crm.<type>.userfield.add adds more at run time.
    # Values of undeclared UF_CRM_* keys: the switch undeclared_user_fields.
    "user_fields": {},
}

DEFAULTS: dict[str, Any] = {
    "portals": [{
        "domain": DEMO_DOMAIN,
        "member_id": DEMO_MEMBER_ID,
        "plan": "basic",
        "language": "en",
        "utc_offset": "+03:00",
        # CRM_ACCESS (sandbox extension): "write" (default) | "read" | "none"; a user
        # without the right gets the documented {"error": "", "error_description":
        # "Access denied."} (crm-lead-add.md).
        "users": [
            {"ID": 1, "NAME": "Klaus", "LAST_NAME": "Weber", "EMAIL": "klaus.weber@example.com",
             "ADMIN": True, "WORK_POSITION": "Head of Sales"},
            {"ID": 2, "NAME": "Maria", "LAST_NAME": "Schmidt",
             "EMAIL": "maria.schmidt@example.com", "ADMIN": False, "WORK_POSITION": "Operator"},
            {"ID": 3, "NAME": "Ivan", "LAST_NAME": "Petrov", "EMAIL": "ivan.petrov@example.com",
             "ADMIN": False, "WORK_POSITION": "Analyst", "CRM_ACCESS": "read"},
        ],
        "webhooks": [{"user_id": DEMO_WEBHOOK_USER, "code": DEMO_WEBHOOK_CODE,
                      "scopes": ["crm", "user", "task", "imopenlines", "imconnector"]}],
        "open_lines": [{"ID": DEMO_LINE_ID, "LINE_NAME": "Demo Open Channel", "ACTIVE": "Y",
                        "QUEUE": [2, 1], "CRM_CREATE": "lead"}],
        "deal_categories": [{"id": 1, "name": "Partners", "sort": 200}],
        "user_fields": {},
    }],
    # The registered (local) application the bridge is (FACTS 2.5).
    "app": {
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
        "code": "local.bridge",  # app.info CODE
        "version": "1",  # ONAPPINSTALL data[VERSION]
        "status": "L",  # L local | F free | D demo | T trial | P paid (on-app-install.md)
        "scope": ["crm", "imopenlines", "imconnector", "im", "user", "task", "placement"],
        "install_handler": None,  # "Initial installation path" (installation-callback.md)
        "uninstall_handler": None,  # optional extra ONAPPUNINSTALL target
        "redirect_uri": None,  # from the app settings, never from the query (oauth/index.md)
    },
    # limits.md: leaky bucket per portal (X = burst, Y = drain per second).
    "limits": {
        "basic": {"drain_per_s": 2.0, "burst": 50},
        "enterprise": {"drain_per_s": 5.0, "burst": 250},
        # limits.md: execution time per method per app/webhook, ten 1-minute buckets.
        # The cloud limit is not published (self-hosted default 420 s; the page's
        # worked example uses 480 s). UNCONFIRMED value.
        "operating_limit_s": 480.0,
        # Execution time booked per call: None = the real (tiny) handler time;
        # a number = that many seconds per call. Per-method overrides win.
        "operating_cost_s": None,
        "operating_costs": {},  # {"crm.lead.list": 20.0}
    },
    "access_token_ttl_s": 3600,  # oauth/index.md: one hour
    "refresh_token_ttl_s": 180 * 86400,  # oauth/auto-renewal.md: 180 days
    "code_ttl_s": 30,  # oauth/index.md: "The lifetime of the authorization code code is 30 s"
    # UNCONFIRMED (FACTS 2.5 says only "overwrite the old one"): seconds the previous
    # refresh token keeps working after a refresh. 0 = it dies at once.
    "refresh_grace_s": 0,
    # UNCONFIRMED: whether a refresh also kills the previous access token at once.
    "revoke_access_on_refresh": False,
    # UNCONFIRMED (oauth/error-codes.md gives bodies, not statuses): HTTP status of
    # oauth.bitrix.info error answers.
    "oauth_error_status": 400,
    # host name reported as the OAuth server (`server_domain`, token `domain`);
    # None = this sandbox's host (the real one is oauth.bitrix.info)
    "oauth_server_domain": None,
    # base URL (scheme://host[:port]) used in client_endpoint / server_endpoint;
    # None = the current request's host
    "public_base_url": None,
    # UNCONFIRMED (FACTS 2.1): event.bind called through an incoming webhook. The
    # docs say app context only; the code is documented for imconnector.* only.
    "webhook_event_bind_error": {"status": 403, "error": "WRONG_AUTH_TYPE"},
    # UNCONFIRMED (FACTS 2.7): crm.duplicate.findbycomm with no hits answers
    # "result": [] (True) or {} (False).
    "findbycomm_empty_as_list": True,
    # UNCONFIRMED: more than 20 values (the documented maximum): "error" = 400,
    # "truncate" = only the first 20 are searched.
    "findbycomm_over_limit": "error",
    # UNCONFIRMED: reject unknown ASSIGNED_BY_ID / STATUS_ID / SOURCE_ID / CATEGORY_ID /
    # STAGE_ID / multifield VALUE_TYPE with 400 ERROR_CORE (False: store as given).
    "strict_field_validation": True,
    # UNCONFIRMED: imconnector.send.messages with a user name breaking the documented
    # rules (letters, spaces, "-", "'", <= 25 chars): "reject" = that message fails
    # (SUCCESS false + ERRORS), "accept" = stored as given.
    "connector_name_policy": "reject",
    # UNCONFIRMED: imconnector.send.status.delivery/reading with a non-array
    # message.id (the docs: "Even for a single message, pass an array"): True = 400.
    "delivery_id_must_be_array": True,
    # Events from REST calls go out after the answer on a worker thread
    # ("background", like the queue server) or before the answer ("inline").
    "event_delivery": "background",
    "event_timeout_s": 5.0,  # UNCONFIRMED: the queue server's handler timeout
    # Fire ONCRM*ADD / ONCRM*UPDATE for changes made through the REST API too.
    "events_for_rest_changes": True,
    # Our model of installFinish for an API-only app (installation-finish.md): the
    # install handler answered 2xx. False: installed as soon as ONAPPINSTALL is sent.
    "install_finish_requires_2xx": True,
    # events/index.md: refresh_token comes only with events "that require long-term
    # access" (ONAPPINSTALL); the ONCRMLEADUPDATE example nevertheless shows one.
    "event_refresh_token": False,
    # UNCONFIRMED (the docs say nothing of it): whether timeline comments, to-do and task
    # descriptions keep zero-width characters (U+200B-U+200F, U+2060-U+2064, U+FEFF).
    # True: they are dropped on write, as a text sanitiser would.
    "strip_zero_width": False,
    # crm.<type>.userfield.* (dev.1c-bitrix.ru/rest_help/crm/leads/crm_lead_userfield_add.php
    # and its contact/deal siblings; sandbox/bitrix24/userfields.py). The pages state the
    # UF_CRM_ prefix and the 20-character limit, not the answers below.
    # UNCONFIRMED: the error for a FIELD_NAME the entity already has. "description" may
    # name {field} (the whole name) and {entity} (CRM_LEAD...). Our guess: the REST
    # layer's generic ERROR_CORE with the main module's text.
    "userfield_duplicate_error": {
        "status": 400, "error": "ERROR_CORE",
        "description": 'A user field with the code "{field}" already exists for "{entity}".'},
    # UNCONFIRMED: a FIELD_NAME over 20 characters with its prefix: an error object like
    # the one above, or "truncate" (stored cut to 20 characters).
    "userfield_name_too_long": {
        "status": 400, "error": "ERROR_CORE",
        "description": 'The field name "{field}" is longer than 20 characters.'},
    # UNCONFIRMED: a FIELD_NAME that already starts with UF_CRM_. "always": prefixed
    # again, as the pages say the prefix always is ("UF_CRM_UF_CRM_X", usually then too
    # long); "unless_present": kept as it is.
    "userfield_prefix": "always",
    # UNCONFIRMED: who may call crm.<type>.userfield.*: the older pages say everyone,
    # the newer ones (apidocs.bitrix24.com .../crm/deals/user-defined-fields/
    # crm-deal-userfield-list.html, -update.html) a CRM administrator. True: only
    # portal admins (ADMIN); False: anyone with CRM access (write access for add).
    # Others get "Access denied.".
    "userfield_admin_only": True,
    # UNCONFIRMED: a UF_CRM_* key in crm.<type>.add/update that is no user field of the
    # portal: "accept" = stored and returned like a declared one (lenient), "drop" =
    # ignored, as Bitrix24 ignores fields it does not know.
    "undeclared_user_fields": "accept",
    # Outgoing webhooks (local-integrations/local-webhooks.md; sandbox/bitrix24/
    # automation.py): each {"portal"? (domain; default the first), "url", "events":
    # [...], "application_token"? (default: derived, shown in /_state)}. Sent once.
    "outgoing_webhooks": [],
    # UNCONFIRMED (automation rules are not in the contracts): robots posting to a URL
    # when a deal or lead enters a stage, each {"portal"?, "entity": "deal"|"lead",
    # "stage", "url"}.
    "robot_webhooks": [],
    # UNCONFIRMED: the robots' body. "document": document_id[0..2] (crm,
    # CCrmDocumentDeal, DEAL_<id>) + auth[domain|client_endpoint|server_endpoint|
    # member_id] [community]; "event": the outgoing webhook's event shape.
    "robot_webhook_body": "document",
    # UNCONFIRMED: seconds before attempt n + 1 of a robot's request after attempt n
    # got no answer or a non-2xx one; [] = never retried.
    "robot_webhook_retry_s": [],
    # UNCONFIRMED: which chat OnImConnectorDialogFinish names in data[DATA][i]
    # [chat][id] and [connector][chat_id] (the page's example shows the integer 8 in
    # both, next to an external user id 0). "external": the connector's own chat id
    # (chat.id of imconnector.send.messages, as OnImConnectorMessageAdd's chat.id);
    # "internal": Bitrix24's Open Lines chat id.
    "dialog_finish_chat": "external",
    # RNG seed for tokens, ids of tokens and the fault plan (None: random).
    "seed": None,
}

_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?$")
_SCOPE_NAMES = re.compile(r"^[a-z_]+$")


def _fill_portal(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError("each portal must be an object")
    unknown = set(raw) - set(PORTAL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown portal keys: {sorted(unknown)}")
    portal = copy.deepcopy(PORTAL_DEFAULTS)
    portal.update(copy.deepcopy(raw))
    domain = portal["domain"]
    if not isinstance(domain, str) or not _DOMAIN.match(domain.lower()):
        raise ValueError(f"portal domain must be host-like, got {domain!r}")
    portal["domain"] = domain.lower()
    if not isinstance(portal["member_id"], str) or not portal["member_id"]:
        raise ValueError(f"portal {domain}: member_id is required")
    if portal["plan"] not in ("basic", "enterprise"):
        raise ValueError(f"portal {domain}: plan must be 'basic' or 'enterprise'")
    if not re.match(r"^[+-]\d\d:\d\d$", str(portal["utc_offset"])):
        raise ValueError(f"portal {domain}: utc_offset must look like +03:00")
    ids = set()
    for user in portal["users"]:
        if not isinstance(user, dict) or not isinstance(user.get("ID"), int) or user["ID"] < 1:
            raise ValueError(f"portal {domain}: every user needs a positive integer ID")
        if user.get("CRM_ACCESS", "write") not in ("write", "read", "none"):
            raise ValueError(f"portal {domain}: CRM_ACCESS must be write|read|none")
        ids.add(user["ID"])
    if not ids:
        raise ValueError(f"portal {domain}: at least one user is required")
    for hook in portal["webhooks"]:
        if not isinstance(hook, dict) or hook.get("user_id") not in ids:
            raise ValueError(f"portal {domain}: webhook user_id must be a portal user")
        if not isinstance(hook.get("code"), str) or not hook["code"].isalnum():
            raise ValueError(f"portal {domain}: webhook code must be alphanumeric")
        if not all(isinstance(s, str) and _SCOPE_NAMES.match(s) for s in hook.get("scopes", [])):
            raise ValueError(f"portal {domain}: webhook scopes must be scope names")
    for line in portal["open_lines"]:
        if not isinstance(line, dict) or not isinstance(line.get("ID"), int):
            raise ValueError(f"portal {domain}: every open line needs an integer ID")
    for cat in portal["deal_categories"]:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or cat["id"] < 1:
            raise ValueError(f"portal {domain}: deal categories need an integer id >= 1")
    _check_user_fields(domain, portal["user_fields"])
    return portal


def _check_user_fields(domain: str, declared: Any) -> None:
    if not isinstance(declared, dict) or set(declared) - {"lead", "contact", "deal"}:
        raise ValueError(f"portal {domain}: user_fields maps lead/contact/deal to lists")
    for kind, fields in declared.items():
        names = set()
        for uf in fields if isinstance(fields, list) else [None]:
            name = uf.get("FIELD_NAME") if isinstance(uf, dict) else None
            if not (isinstance(name, str) and name.startswith("UF_CRM_")
                    and len(name) <= 20 and re.fullmatch(r"[A-Z0-9_]+", name)):
                raise ValueError(f"portal {domain}: user_fields.{kind}: FIELD_NAME must be "
                                 f"UF_CRM_ + A-Z/0-9/_ (at most 20 characters), got {name!r}")
            if name in names:
                raise ValueError(f"portal {domain}: user_fields.{kind}: {name} twice")
            names.add(name)


def _check(cfg: dict[str, Any]) -> None:
    if not isinstance(cfg["portals"], list) or not cfg["portals"]:
        raise ValueError("portals must be a non-empty list")
    domains = [p["domain"] for p in cfg["portals"]]
    members = [p["member_id"] for p in cfg["portals"]]
    if len(set(domains)) != len(domains) or len(set(members)) != len(members):
        raise ValueError("portal domains and member_ids must be unique")
    app = cfg["app"]
    for key in ("client_id", "client_secret"):
        if not isinstance(app.get(key), str) or not app[key]:
            raise ValueError(f"app.{key} is required")
    if not isinstance(app.get("scope"), list):
        raise ValueError("app.scope must be a list of scope names")
    limits = cfg["limits"]
    for plan in ("basic", "enterprise"):
        tier = limits.get(plan) or {}
        if not (isinstance(tier.get("drain_per_s"), (int, float)) and tier["drain_per_s"] > 0
                and isinstance(tier.get("burst"), int) and tier["burst"] >= 1):
            raise ValueError(f"limits.{plan} needs drain_per_s > 0 and an integer burst >= 1")
    if not isinstance(limits.get("operating_limit_s"), (int, float)):
        raise ValueError("limits.operating_limit_s must be a number")
    for key in ("access_token_ttl_s", "refresh_token_ttl_s", "code_ttl_s", "refresh_grace_s",
                "event_timeout_s"):
        if not isinstance(cfg[key], (int, float)) or cfg[key] < 0:
            raise ValueError(f"{key} must be a number >= 0")
    if cfg["oauth_error_status"] not in (400, 401, 403):
        raise ValueError("oauth_error_status must be 400, 401 or 403")
    if cfg["event_delivery"] not in ("background", "inline"):
        raise ValueError("event_delivery must be 'background' or 'inline'")
    if cfg["findbycomm_over_limit"] not in ("error", "truncate"):
        raise ValueError("findbycomm_over_limit must be 'error' or 'truncate'")
    if cfg["connector_name_policy"] not in ("reject", "accept"):
        raise ValueError("connector_name_policy must be 'reject' or 'accept'")
    if not isinstance(cfg["strip_zero_width"], bool):
        raise ValueError("strip_zero_width must be a boolean")
    for key in ("userfield_duplicate_error", "userfield_name_too_long"):
        err = cfg[key]
        if key == "userfield_name_too_long" and err == "truncate":
            continue
        if not (isinstance(err, dict) and isinstance(err.get("status"), int)
                and 400 <= err["status"] <= 599 and isinstance(err.get("error"), str)
                and isinstance(err.get("description"), str)):
            raise ValueError(f"{key} must be an error object {{status (4xx/5xx), error, "
                             "description}" + (' or "truncate"' if "long" in key else ""))
    if cfg["userfield_prefix"] not in ("always", "unless_present"):
        raise ValueError("userfield_prefix must be 'always' or 'unless_present'")
    if not isinstance(cfg["userfield_admin_only"], bool):
        raise ValueError("userfield_admin_only must be a boolean")
    if cfg["undeclared_user_fields"] not in ("accept", "drop"):
        raise ValueError("undeclared_user_fields must be 'accept' or 'drop'")
    _check_hooks(cfg)


def _check_hook(where: str, hook: Any, keys: set[str], domains: set[str]) -> None:
    """What every hook entry needs: known keys, an http(s) URL, a known portal."""
    if not isinstance(hook, dict) or set(hook) - keys:
        raise ValueError(f"{where} must be an object with keys among {sorted(keys)}")
    if not isinstance(hook.get("url"), str) or not hook["url"].startswith(("http://", "https://")):
        raise ValueError(f"{where}.url must be an http(s) URL")
    if hook.get("portal") is not None and str(hook["portal"]).lower() not in domains:
        raise ValueError(f"{where}.portal must be one of the portal domains {sorted(domains)}")


def _check_hooks(cfg: dict[str, Any]) -> None:
    """``outgoing_webhooks`` and ``robot_webhooks`` (automation.py)."""
    from .events import KNOWN_EVENTS  # lazily: events.py imports what imports this module

    domains = {p["domain"] for p in cfg["portals"]}
    for key in ("outgoing_webhooks", "robot_webhooks", "robot_webhook_retry_s"):
        if not isinstance(cfg[key], list):
            raise ValueError(f"{key} must be a list")
    for i, hook in enumerate(cfg["outgoing_webhooks"]):
        where = f"outgoing_webhooks[{i}]"
        _check_hook(where, hook, {"portal", "url", "events", "application_token"}, domains)
        names = hook.get("events")
        if not isinstance(names, list) or not names or not all(
                isinstance(e, str) and e.upper() in KNOWN_EVENTS
                and not e.upper().startswith("ONAPP") for e in names):
            raise ValueError(f"{where}.events must list event names such as ONCRMDEALUPDATE "
                             "(online events of the CRM, tasks, timeline or connectors)")
    for i, hook in enumerate(cfg["robot_webhooks"]):
        where = f"robot_webhooks[{i}]"
        _check_hook(where, hook, {"portal", "entity", "stage", "url"}, domains)
        if hook.get("entity") not in ("deal", "lead"):
            raise ValueError(f"{where}.entity must be 'deal' or 'lead'")
        if not isinstance(hook.get("stage"), str) or not hook["stage"]:
            raise ValueError(f"{where}.stage must be a stage (STAGE_ID) or status (STATUS_ID)")
    if cfg["dialog_finish_chat"] not in ("external", "internal"):
        raise ValueError("dialog_finish_chat must be 'external' or 'internal'")
    if cfg["robot_webhook_body"] not in ("document", "event"):
        raise ValueError("robot_webhook_body must be 'document' or 'event'")
    if not all(isinstance(d, (int, float)) and not isinstance(d, bool) and d >= 0
               for d in cfg["robot_webhook_retry_s"]):
        raise ValueError("robot_webhook_retry_s must be a list of seconds >= 0")


def _fill(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["portals"] = [_fill_portal(p) for p in cfg["portals"]]
    return cfg


#: defaults, overrides (every portal entry completed), run-time updates (not ``portals``)
SETTINGS = Settings(DEFAULTS, check=_check, frozen={"portals"}, replace={"portals"},
                    prepare=_fill)
