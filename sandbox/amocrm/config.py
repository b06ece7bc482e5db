"""Configuration of the sandbox amoCRM: defaults, overrides, run-time updates.

``create_app(config)`` deep-merges ``config`` over :data:`DEFAULTS`
(``accounts`` is replaced whole); ``POST /_config`` changes the same keys at
run time, except ``accounts`` (:data:`SETTINGS`, a
:class:`sandbox.core.config.Settings`). Every switch
for behaviour FACTS.md section 1 marks UNCONFIRMED is named here with its
default and the FACTS paragraph it stands for.

The demo data (ids, secrets) are ours: there are no redistributable amoCRM
fixtures; the shapes follow FACTS.md 1.x.
"""

from __future__ import annotations

from typing import Any

from ..core.config import Settings, require_bools, require_numbers, require_positive_ints

__all__ = [
    "DEFAULTS",
    "SETTINGS",
    "DEMO_SUBDOMAIN",
    "DEMO_ACCOUNT_ID",
    "DEMO_AMOJO_ID",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_CHANNEL_ID",
    "DEMO_CHANNEL_SECRET",
    "DEMO_BOT_ID",
]

# -- demo identities (ours, not vendor fixtures) --------------------------------------

DEMO_SUBDOMAIN = "demo"
DEMO_ACCOUNT_ID = 31415926
DEMO_AMOJO_ID = "5f1a3b2c-7d4e-4f60-8a9b-0c1d2e3f4a5b"
DEMO_CLIENT_ID = "3f1c2a4b-5d6e-4f70-8a9b-1c2d3e4f5a6b"
DEMO_CLIENT_SECRET = "SandboxAmoSecret0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM"  # noqa: S105
DEMO_CHANNEL_ID = "c4a8f0e2-1b3d-4e5f-9a6b-7c8d9e0f1a2b"
DEMO_CHANNEL_SECRET = "5e2b0c9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d"  # noqa: S105  (40 hex, like the docs')
DEMO_BOT_ID = "b0770000-1111-4222-8333-444455556666"


def demo_pipelines() -> list[dict[str, Any]]:
    """The demo account's pipelines (FACTS 1.8: an Unsorted stage of type 1 per
    pipeline, then working stages, then the shared system stages 142/143)."""

    def statuses(unsorted: int, working: list[tuple[int, str]]) -> list[dict[str, Any]]:
        out = [{"id": unsorted, "name": "Неразобранное", "type": 1, "color": "#c1c1c1",
                "is_editable": False}]
        out += [{"id": sid, "name": name, "type": 0, "color": "#99ccff", "is_editable": True}
                for sid, name in working]
        out += [{"id": 142, "name": "Успешно реализовано", "type": 0, "color": "#CCFF66",
                 "is_editable": False},
                {"id": 143, "name": "Закрыто и не реализовано", "type": 0, "color": "#D5D8DB",
                 "is_editable": False}]
        return out

    return [
        {"id": 7001001, "name": "Воронка", "is_main": True, "is_unsorted_on": True,
         "statuses": statuses(61001001, [(61001002, "Первичный контакт"),
                                         (61001003, "Переговоры"),
                                         (61001004, "Принимают решение")])},
        {"id": 7001002, "name": "Partners", "is_main": False, "is_unsorted_on": True,
         "statuses": statuses(61002001, [(61002002, "New"), (61002003, "Qualified")])},
    ]


DEFAULTS: dict[str, Any] = {
    # Accounts (FACTS 1.1: one host per subdomain). Each account is isolated:
    # its tokens and ids never reach another one.
    "accounts": [
        {
            "subdomain": DEMO_SUBDOMAIN,
            "id": DEMO_ACCOUNT_ID,
            "amojo_id": DEMO_AMOJO_ID,
            "name": "Demo Company",
            "users": [
                {"id": 6001001, "name": "Anna Admin", "email": "anna@demo.example",
                 "is_admin": True},
                {"id": 6001002, "name": "Boris Manager", "email": "boris@demo.example",
                 "is_admin": False},
                {"id": 6001003, "name": "Vera Sales", "email": "vera@demo.example",
                 "is_admin": False},
            ],
            "pipelines": demo_pipelines(),
            # Long-lived tokens (FACTS 1.2): [{"token"?, "expires_in"? | "expires_at"?,
            # "user_id"?}]; a missing token is generated (JWT-shaped).
            "long_lived_tokens": [],
            # FACTS 1.3: 402 Payment Required when the subscription ended.
            "subscription_active": True,
        },
    ],
    # The one registered integration (FACTS 1.2). redirect_uri None: any URI is
    # accepted at authorization and must then be repeated at the token exchange.
    "integration": {
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
        "redirect_uri": None,
        # FACTS 1.2 "disconnect hook": GET with account_id, client_uuid, signature.
        "disconnect_hook_url": None,
    },
    # The Chats API channel "registered by support" (FACTS 1.13). hook_url holds
    # ":scope_id"; POST /_channel changes it at run time.
    "channel": {
        "id": DEMO_CHANNEL_ID,
        "secret": DEMO_CHANNEL_SECRET,
        "bot_id": DEMO_BOT_ID,
        "title": "Bridge",
        "hook_url": None,
    },
    # Hosts: referer is "<subdomain>.<base_domain>"; platform 1 = amocrm.ru, 2 = others.
    "base_domain": "amocrm.ru",
    # FACTS 1.1: the api_domain claim of access tokens names the API host.
    "api_domain": "api-b.amocrm.ru",
    # FACTS 1.2 lifetimes.
    "access_token_ttl": 86400,
    "refresh_token_ttl": 90 * 86400,
    "code_ttl": 1200,
    # ASVS 10.4.5; UNCONFIRMED for amoCRM (FACTS 1.2 says only that the old
    # refresh token dies): reusing a dead refresh token also revokes the live pair.
    "revoke_family_on_reuse": False,
    # FACTS 1.4: 7 requests per second per integration per account (rolling window).
    "per_second": 7,
    "rate_window_s": 1.0,
    # UNCONFIRMED (FACTS 1.3): the SDK suggests a 429 body may be empty / not JSON.
    "rate_429_body": "empty",  # "empty" | "json"
    # UNCONFIRMED (FACTS 1.4): whether a Retry-After header is sent.
    "retry_after_header": False,
    # FACTS 1.3/1.4: repeated excess -> 403, account blocked. Thresholds are ours:
    # more than storm_429s refusals within storm_window_s blocks for block_seconds.
    "block_on_storm": True,
    "storm_429s": 200,
    "storm_window_s": 10.0,
    "block_seconds": 60.0,
    # FACTS 1.3: limit <= 250 (over it: clamped, UNCONFIRMED), default page size ours.
    "max_limit": 250,
    "default_limit": 50,
    # UNCONFIRMED (FACTS 1.4: "250 max / 50 recommended is folklore"): items per
    # plain batch write; null = no limit.
    "batch_limit": 250,
    # FACTS 1.7: /leads/complex takes <= 50 leads.
    "complex_limit": 50,
    # UNCONFIRMED: a GET of an unknown id answers 204 (like every empty result,
    # FACTS 1.3; the PHP SDK throws NoContent for it) or 404 problem+json.
    "not_found_status": 204,
    # UNCONFIRMED (not in FACTS 1.12): changes made through the API fire the
    # account webhooks too (add_/update_/status_/responsible_/note_ events).
    "webhooks_on_api_changes": True,
    # FACTS 1.12: a <= 2 s answer counts; retry table (attempt n+1 after
    # "after_s" if the previous code matches "on": "invalid" = 0-99 or >= 300,
    # "5xx" = 499 or 500-599); disable after > 100 invalid answers in 2 h.
    "webhook_timeout_s": 2.0,
    "webhook_retry_schedule": [
        {"after_s": 300, "on": "invalid"},
        {"after_s": 900, "on": "invalid"},
        {"after_s": 900, "on": "5xx"},
        {"after_s": 3600, "on": "5xx"},
    ],
    "webhook_disable_after": 100,
    "webhook_disable_window_s": 7200.0,
    # FACTS 1.2: the widget-install GET has a 3 s limit.
    "install_hook_timeout_s": 3.0,
    # FACTS 1.13: amojo Date header valid 15 minutes.
    "amojo_date_window_s": 900.0,
    # UNCONFIRMED (FACTS 1.13): a repeated msgid from the same sender in the same
    # conversation returns the original answer and creates nothing.
    "msgid_dedupe": True,
    # UNCONFIRMED (FACTS 1.13 gives source.external_id on create-chat and on
    # new_message, not which one wins): True, a chat created without a source takes
    # the first one a later message carries; False, only create-chat / the message
    # that creates the chat set it. Either way a chat's source never changes once set.
    "chat_source_from_message": True,
    # The outgoing chat hook: "answer 200 quickly" (FACTS 1.13); our timeout.
    "chat_hook_timeout_s": 5.0,
    # UNCONFIRMED (FACTS 1.9/1.10 say nothing of it): whether note and task texts keep
    # zero-width characters (U+200B-U+200F, U+2060-U+2064, U+FEFF). True: they are
    # dropped on write, as a text sanitiser would (the bridge hides its marker in them).
    "strip_zero_width": False,
    # UNCONFIRMED (not in FACTS; amoCRM developers: crm_platform/sources-api, not in the
    # stored contracts): the account has the Sources API (GET/POST /api/v4/sources,
    # sandbox.amocrm.sources) and its chats show the name of the source whose
    # external_id they carry. False: the endpoint answers 404, like an account without it.
    "sources_api": True,
    # UNCONFIRMED (not in FACTS): digital pipeline stages with a "webhook" action,
    # [{"pipeline_id"?: int, "status_id": int, "url": str, "action"?: "status"|"update"}].
    # A lead moved into the stage (control /_lead_status, or an API PATCH of its
    # status_id) is POSTed to url in the account-webhook format of FACTS 1.12 (form,
    # PHP brackets, strings; section leads[<action>], default "status"), with the same
    # 2 s deadline and retry table as the account webhooks. That the pipeline's
    # webhook uses that format and that table is our reading; never disabled.
    "dp_webhooks": [],
    # RNG seed for the fault plan (None: random).
    "seed": None,
}

_BOOLS = ("revoke_family_on_reuse", "retry_after_header", "block_on_storm",
          "webhooks_on_api_changes", "msgid_dedupe", "strip_zero_width",
          "chat_source_from_message", "sources_api")
_POSITIVE_INTS = ("per_second", "max_limit", "default_limit", "complex_limit",
                  "webhook_disable_after")
_NUMBERS = ("access_token_ttl", "refresh_token_ttl", "code_ttl", "rate_window_s",
            "storm_window_s", "block_seconds", "webhook_timeout_s",
            "webhook_disable_window_s", "install_hook_timeout_s", "amojo_date_window_s",
            "chat_hook_timeout_s")


def _check_accounts(accounts: Any) -> None:
    if not isinstance(accounts, list) or not accounts:
        raise ValueError("accounts must be a non-empty list")
    seen_ids: set[int] = set()
    seen_subs: set[str] = set()
    for acc in accounts:
        if not isinstance(acc, dict):
            raise ValueError("each account must be an object")
        for key, kind in (("subdomain", str), ("id", int), ("amojo_id", str)):
            if not isinstance(acc.get(key), kind):
                raise ValueError(f"each account needs '{key}' ({kind.__name__})")
        if acc["id"] in seen_ids or acc["subdomain"] in seen_subs:
            raise ValueError(f"duplicate account {acc['id']} / {acc['subdomain']}")
        seen_ids.add(acc["id"])
        seen_subs.add(acc["subdomain"])
        users = acc.get("users")
        if not isinstance(users, list) or not users:
            raise ValueError(f"account {acc['subdomain']}: users must be a non-empty list")
        for user in users:
            if not isinstance(user, dict) or not isinstance(user.get("id"), int):
                raise ValueError(f"account {acc['subdomain']}: each user needs an int 'id'")
        pipelines = acc.get("pipelines")
        if pipelines is not None:
            if not isinstance(pipelines, list) or not pipelines:
                raise ValueError(f"account {acc['subdomain']}: pipelines must be a list")
            for pipe in pipelines:
                kinds = [s.get("type") for s in pipe.get("statuses", [])]
                ids = {s.get("id") for s in pipe.get("statuses", [])}
                if not isinstance(pipe.get("id"), int) or kinds.count(1) != 1 \
                        or not {142, 143} <= ids:
                    raise ValueError("each pipeline needs an int id, one Unsorted status "
                                     "(type 1) and the system statuses 142 and 143")


_DP_ACTIONS = ("status", "update")


def _check_dp_webhooks(hooks: Any) -> None:
    """``dp_webhooks``: a list of ``{"pipeline_id"?, "status_id", "url", "action"?}``."""
    if not isinstance(hooks, list):
        raise ValueError("dp_webhooks must be a list")
    for hook in hooks:
        if not isinstance(hook, dict) or set(hook) - {"pipeline_id", "status_id", "url",
                                                      "action"}:
            raise ValueError("each dp_webhooks item is {'pipeline_id'?, 'status_id', 'url', "
                             "'action'?}")
        for key in ("pipeline_id", "status_id"):
            value = hook.get(key)
            if (key == "status_id" or value is not None) and (
                    not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"dp_webhooks: {key} must be an integer")
        url = hook.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("dp_webhooks: url must be an http(s) URL")
        if hook.get("action", "status") not in _DP_ACTIONS:
            raise ValueError("dp_webhooks: action must be 'status' or 'update'")


def _check(cfg: dict[str, Any]) -> None:
    _check_accounts(cfg["accounts"])
    _check_dp_webhooks(cfg["dp_webhooks"])
    require_bools(cfg, _BOOLS)
    require_positive_ints(cfg, _POSITIVE_INTS)
    require_numbers(cfg, _NUMBERS)
    if cfg["storm_429s"] is not None and (not isinstance(cfg["storm_429s"], int)
                                          or cfg["storm_429s"] < 0):
        raise ValueError("storm_429s must be an integer >= 0")
    if cfg["batch_limit"] is not None and (not isinstance(cfg["batch_limit"], int)
                                           or cfg["batch_limit"] < 1):
        raise ValueError("batch_limit must be a positive integer or null")
    if cfg["rate_429_body"] not in {"empty", "json"}:
        raise ValueError("rate_429_body must be 'empty' or 'json'")
    if cfg["not_found_status"] not in {204, 404}:
        raise ValueError("not_found_status must be 204 or 404")
    schedule = cfg["webhook_retry_schedule"]
    if not isinstance(schedule, list) or not all(
            isinstance(s, dict) and isinstance(s.get("after_s"), (int, float))
            and s.get("on") in {"invalid", "5xx"} for s in schedule):
        raise ValueError("webhook_retry_schedule must be a list of "
                         "{'after_s': seconds, 'on': 'invalid'|'5xx'}")
    integ = cfg["integration"]
    for key in ("client_id", "client_secret"):
        if not isinstance(integ.get(key), str) or not integ[key]:
            raise ValueError(f"integration.{key} is required")
    chan = cfg["channel"]
    for key in ("id", "secret", "bot_id"):
        if not isinstance(chan.get(key), str) or not chan[key]:
            raise ValueError(f"channel.{key} is required")


#: defaults, overrides, run-time updates (``accounts`` only at start-up)
SETTINGS = Settings(DEFAULTS, check=_check, frozen={"accounts"})
