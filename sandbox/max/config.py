"""Configuration of the MAX sandbox: defaults, overrides, run-time updates.

``create_app(config)`` deep-merges ``config`` over :data:`DEFAULTS`; ``POST
/_config`` changes the same keys at run time. Facts come from the MAX
contract's FACTS (corpora ``max/``); every item FACTS §17 lists as
UNCONFIRMED is a switch here, with the default FACTS gives, and says so.
"""

from __future__ import annotations

from typing import Any

from ..core.config import Settings, require_bools, require_numbers

__all__ = [
    "DEFAULTS",
    "DEMO_BOT_ID",
    "DEMO_BOT_NAME",
    "DEMO_BOT_USERNAME",
    "DEMO_TOKEN",
    "DIALOG_BASE",
    "SETTINGS",
]

#: the demo bot's user id (a bot's id is a user id: FACTS §5)
DEMO_BOT_ID = 229229229
DEMO_BOT_NAME = "Sandbox Demo Shop"
DEMO_BOT_USERNAME = "sandbox_demo_shop_bot"
#: a bot token from business.max.ru; this one only opens the sandbox
DEMO_TOKEN = "sandbox-max-bot-token-0001"  # noqa: S105
#: a user's dialog with the bot has a chat id of its own (FACTS §6: chat
#: 182182182 for user 123456789); the sandbox gives DIALOG_BASE + user id
#: to a dialog no update named
DIALOG_BASE = 10**11

DEFAULTS: dict[str, Any] = {
    # -- the bot -----------------------------------------------------------------------------
    "bot_id": DEMO_BOT_ID,
    "bot_name": DEMO_BOT_NAME,
    "bot_username": DEMO_BOT_USERNAME,
    "token": DEMO_TOKEN,
    # -- authentication (FACTS §1, §17) ------------------------------------------------------
    # "Authorization: Bearer <token>" accepted too? UNCONFIRMED: refused (401) by default
    "accept_bearer": False,
    # ?access_token= in the query: "deprecated" (403 deprecated.token, observed
    # 2026-04) or "accept" (the 2025 API)
    "query_token": "deprecated",
    # -- webhooks (FACTS §2, §17) ------------------------------------------------------------
    # the Content-Type of a webhook POST (UNCONFIRMED, presumably application/json)
    "webhook_content_type": "application/json",
    # MAX posts to https on port 443 only; the local sandbox also posts to
    # plain-http loopback URLs unless this is on (then: 400 for them)
    "require_https": False,
    # update_types omitted from POST /subscriptions: every type (UNCONFIRMED)
    "omitted_update_types": "all",
    # a failed delivery is retried after first_s, then x factor each time (60 s
    # x2.5, FACTS §2), at most `attempts` retries; once `cutoff_s` (8 h) passed
    # since the first attempt the subscription is deleted. Times are divided by
    # `time_compression` (a test's 8 h in seconds).
    "retry": {"first_s": 60.0, "factor": 2.5, "attempts": 10, "cutoff_s": 28800.0},
    "time_compression": 1.0,
    # seconds the bridge has to answer (FACTS §2: 200 within 30 s)
    "webhook_timeout_s": 30.0,
    # -- long polling (FACTS §3, §17) --------------------------------------------------------
    # GET /updates without a marker: "all" uncommitted updates (the 2025 text)
    # or only the "latest" one (the 2026 text). The conflict is UNCONFIRMED.
    "updates_without_marker": "all",
    # GET /updates while a webhook subscription is active: 405 (UNCONFIRMED)
    "updates_405_with_webhook": True,
    # the first marker handed out (the stab's is 25493970)
    "first_marker": 25493970,
    # -- sending (FACTS §9, §11, §12) --------------------------------------------------------
    "max_text": 4000,
    # requests per second per token (30 rps, FACTS §12: its scope is UNCONFIRMED)
    "rps": 30,
    # messages and callback answers per second per chat (FACTS §9, §10)
    "per_chat_per_s": 2,
    # the 429 body: MAX documents none (UNCONFIRMED). INVENTED by the sandbox.
    "error_429": {
        "code": "too.many.requests",
        "message": "Too many requests (sandbox-only body: MAX documents none)",
    },
    # POST /messages to a user who stopped the bot: 403 with this body.
    # UNCONFIRMED: the code is the sandbox's own.
    "stopped_error": {
        "code": "chat.denied",
        "message": "The user stopped the bot (sandbox-only code)",
    },
    # the first N sends carrying a freshly uploaded file's token answer 400
    # attachment.not.ready (FACTS §11); 0: files are ready at once
    "attachment_not_ready_times": 0,
    # the code of other 400s (MAX's are UNCONFIRMED: sandbox-only)
    "bad_request_code": "proto.payload",
    # -- contacts and deep links (FACTS §8, §14, §17) ----------------------------------------
    # a shared contact's hash: "hmac-sha256" (hex HMAC-SHA256(token, vcf_info),
    # third-party) or "none" (no hash)
    "contact_hash": "hmac-sha256",
    # the vCard of a shared contact (UNCONFIRMED text; {name}, {phone})
    "vcard": "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nTEL;TYPE=cell:{phone}\r\nEND:VCARD\r\n",
    # deep-link payloads longer than this are dropped (128 docs, 512 schema)
    "deeplink_payload_limit": 128,
    # a user who started the bot opening another deep link gets bot_started again
    # with the new payload (UNCONFIRMED)
    "bot_started_on_repeat": True,
    # -- faults ------------------------------------------------------------------------------
    # the initial fault plan (sandbox.core.faults), also POST /_faults
    "faults": {},
    "seed": None,
}


def _check(cfg: dict[str, Any]) -> None:
    bot = cfg["bot_id"]
    if isinstance(bot, bool) or not isinstance(bot, int) or bot <= 0:
        raise ValueError("bot_id must be a positive integer")
    for key in (
        "bot_name",
        "bot_username",
        "token",
        "webhook_content_type",
        "vcard",
        "bad_request_code",
    ):
        if not isinstance(cfg[key], str) or not cfg[key]:
            raise ValueError(f"{key} must be a non-empty string")
    require_bools(
        cfg, ("accept_bearer", "require_https", "updates_405_with_webhook", "bot_started_on_repeat")
    )
    choices = {
        "query_token": ("deprecated", "accept"),
        "omitted_update_types": ("all", "none"),
        "updates_without_marker": ("all", "latest"),
        "contact_hash": ("hmac-sha256", "none"),
    }
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}")
    require_numbers(
        cfg,
        (
            "webhook_timeout_s",
            "max_text",
            "rps",
            "per_chat_per_s",
            "attachment_not_ready_times",
            "deeplink_payload_limit",
            "first_marker",
        ),
    )
    if not isinstance(cfg["time_compression"], (int, float)) or cfg["time_compression"] <= 0:
        raise ValueError("time_compression must be a number > 0")
    retry = cfg["retry"]
    if not isinstance(retry, dict) or set(retry) != {"first_s", "factor", "attempts", "cutoff_s"}:
        raise ValueError("retry must be {first_s, factor, attempts, cutoff_s}")
    require_numbers(retry, ("first_s", "factor", "attempts", "cutoff_s"))
    for key in ("error_429", "stopped_error"):
        body = cfg[key]
        if not isinstance(body, dict) or not isinstance(body.get("code"), str):
            raise ValueError(f"{key} must be an error body {{code, message}}")
    if not isinstance(cfg["faults"], dict):
        raise ValueError("faults must be an object")


#: defaults, overrides, run-time updates (``faults`` only at start-up: use /_faults)
SETTINGS = Settings(
    DEFAULTS, check=_check, frozen={"faults"}, replace={"error_429", "stopped_error"}
)
