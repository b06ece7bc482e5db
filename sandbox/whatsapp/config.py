"""Configuration of the WhatsApp Cloud API sandbox: defaults, overrides, run-time updates.

``create_app(config)`` deep-merges ``config`` over :data:`DEFAULTS`; ``POST
/_config`` changes the same keys at run time (:data:`SETTINGS`, a
:class:`sandbox.core.config.Settings`; ``accounts`` and ``templates`` are
replaced whole). Facts come from FACTS.md §2; behaviour Meta does not document
in the stored material is behind a switch and marked UNCONFIRMED.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.config import Settings, require_bools, require_numbers, require_positive_ints

__all__ = [
    "DEFAULTS",
    "SETTINGS",
    "DEMO_ACCOUNT",
    "DEMO_PHONE_NUMBER_ID",
    "DEMO_DISPLAY_PHONE_NUMBER",
    "DEMO_WABA_ID",
    "DEMO_ACCESS_TOKEN",
    "DEMO_APP_SECRET",
    "DEMO_VERIFY_TOKEN",
    "STATUS_MODES",
]

# The ids of Meta's own documentation examples (webhook reference pages), so
# that payloads copied from the docs already name the demo account.
DEMO_PHONE_NUMBER_ID = "106540352242922"
DEMO_DISPLAY_PHONE_NUMBER = "15550783881"
DEMO_WABA_ID = "102290129340398"
#: Meta's access tokens start with "EAA"; this one only opens the sandbox
DEMO_ACCESS_TOKEN = "EAASandboxDemoAccessTokenForTheWhatsAppCloudApi0001"  # noqa: S105
#: an App Secret is 32 hex digits (the HMAC key of X-Hub-Signature-256)
DEMO_APP_SECRET = "5ab0c0ffee5ab0c0ffee5ab0c0ffee00"  # noqa: S105
DEMO_VERIFY_TOKEN = "sandbox-verify-token"  # noqa: S105

DEMO_ACCOUNT: dict[str, Any] = {
    "phone_number_id": DEMO_PHONE_NUMBER_ID,
    "display_phone_number": DEMO_DISPLAY_PHONE_NUMBER,
    "waba_id": DEMO_WABA_ID,
    "access_token": DEMO_ACCESS_TOKEN,
    "verified_name": "Demo Company",
}

#: what happens to the status webhooks of an accepted send
STATUS_MODES = ("off", "in_order", "shuffled", "duplicated")

DEFAULTS: dict[str, Any] = {
    # Business phone numbers: {phone_number_id, display_phone_number, waba_id,
    # access_token, verified_name?}. A token opens its own number (and WABA) only.
    "accounts": [dict(DEMO_ACCOUNT)],
    # Where Meta posts the webhooks (the bridge's /webhooks/whatsapp/<key>), the
    # App Secret that signs them (X-Hub-Signature-256, FACTS §2) and the verify
    # token of the subscription handshake (POST /_verify).
    "webhook_url": None,
    "app_secret": DEMO_APP_SECRET,
    "verify_token": DEMO_VERIFY_TOKEN,
    "webhook_timeout_s": 10.0,
    # Meta retries a non-200 answer "with decreasing frequency" for up to 7 days
    # (RELIABILITY §1). The sandbox: `attempts` retries, doubling from `base_s`,
    # capped at `cap_s`, on the sandbox clock (POST /_clock moves it). 0: none.
    "redelivery": {"attempts": 5, "base_s": 5.0, "cap_s": 3600.0},
    # Graph API versions below this one answer error 2635 (deprecated version).
    "min_version": 17,
    # -- outbound statuses ---------------------------------------------------------
    # off | in_order | shuffled (each message's statuses in random order: Meta
    # does not promise order, RELIABILITY §1) | duplicated (some posted twice:
    # Meta's retries make duplicates).
    "status_webhooks": "in_order",
    # the statuses of a successful send, in their natural order
    "status_sequence": ["sent", "delivered", "read"],
    # share of statuses posted twice in "duplicated" mode (at least one per message)
    "duplicate_rate": 0.5,
    # real seconds before each status post (Meta's come a moment after the send
    # answered; 0 races the bridge's own bookkeeping of the wamid)
    "status_delay_s": 0.1,
    # sandbox-clock seconds between the timestamps of consecutive statuses
    "status_step_s": 1,
    # pricing.pricing_model of the statuses: the corpus shows "CBP"
    # (conversation-based); Meta announced per-message pricing ("PMP"). UNCONFIRMED
    # which one a given account gets today.
    "pricing_model": "CBP",
    # -- fault switches of the send (beside /_faults) ----------------------------------
    # share of accepted sends that end in a `failed` status with errors[] instead
    # of sent/delivered/read, and its error code (131026: Message Undeliverable)
    "failed_rate": 0.0,
    "failed_code": 131026,
    # share of accepted sends whose connection is dropped after the message was
    # accepted (and will be delivered): the bridge cannot know the outcome. On a
    # server that gives no socket (the test client) the answer hangs
    # `/_faults` timeout_seconds and is a 504 instead.
    "drop_after_accept_rate": 0.0,
    # "link" media: the sandbox downloads the URL (as Meta does) before the
    # statuses; a failed download makes the status `failed` with 131053.
    "fetch_media_links": True,
    # -- the 24-hour customer-service window (FACTS §2) ------------------------------------
    "enforce_window": True,
    "window_s": 86400,
    # How a free-form send outside the window fails: "sync" answers HTTP 400
    # error 131047 on the send (the brief's reading of FACTS §2); "status"
    # accepts it and posts a `failed` status with errors[131047], as the Cloud
    # API is widely reported to do. UNCONFIRMED which one Meta does today.
    "window_error": "sync",
    # -- limits (FACTS §2) -----------------------------------------------------------------
    # Throughput: 80 messages/s per business number by default -> 130429.
    "enforce_throughput": True,
    "throughput_per_s": 80,
    # HTTP status of 130429. Third-party copies of Meta's error table say 400;
    # UNCONFIRMED (Meta advises handling by `code`, not by HTTP status).
    "throughput_http_status": 400,
    # Pair limit: about 1 message per 6 s to one user, bursts borrowing from the
    # future -> 131056 (third party quoting Meta; FACTS §7). Off by default.
    "enforce_pair_limit": False,
    "pair_interval_s": 6.0,
    "pair_burst": 1,
    # FACTS §2 says HTTP 429 (third party); other copies of the table say 400.
    "pair_http_status": 429,
    # -- payload limits ------------------------------------------------------------------------
    "max_text_chars": 4096,  # FACTS §2
    "max_caption_chars": 1024,  # UNCONFIRMED (Meta's media message reference)
    # media URLs (GET /{media-id}) expire; Meta says after 5 minutes (UNCONFIRMED here)
    "media_url_ttl_s": 300,
    # -- message templates (GET /{waba-id}/message_templates) ------------------------------------
    "templates": [
        {
            "name": "hello_world",
            "language": "en_US",
            "status": "APPROVED",
            "category": "UTILITY",
            "id": "1192339204654487",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Hello World"},
                {
                    "type": "BODY",
                    "text": "Welcome and congratulations!! This message "
                    "demonstrates your ability to send a WhatsApp message notification from "
                    "the Cloud API, hosted by Meta.",
                },
                {"type": "FOOTER", "text": "WhatsApp Business Platform sample message"},
            ],
        },
        {
            "name": "order_update",
            "language": "en",
            "status": "APPROVED",
            "category": "UTILITY",
            "id": "1402318400100001",
            "components": [
                {
                    "type": "BODY",
                    "text": "Your order {{1}} is now {{2}}.",
                    "example": {"body_text": [["#1001", "on its way"]]},
                },
                {"type": "FOOTER", "text": "Reply to this message to reach us"},
            ],
        },
        {
            "name": "order_update",
            "language": "ru",
            "status": "APPROVED",
            "category": "UTILITY",
            "id": "1402318400100002",
            "components": [
                {
                    "type": "BODY",
                    "text": "Ваш заказ {{1}}: {{2}}.",
                    "example": {"body_text": [["#1001", "в пути"]]},
                },
                {"type": "FOOTER", "text": "Ответьте на это сообщение, чтобы связаться с нами"},
            ],
        },
        {
            "name": "spring_sale",
            "language": "en",
            "status": "REJECTED",
            "category": "MARKETING",
            "id": "1402318400100003",
            "rejected_reason": "PROMOTIONAL",
            "components": [{"type": "BODY", "text": "50% off everything until Sunday!"}],
        },
    ],
    # RNG seed (failed / dropped draws, shuffles, duplicates); None: random
    "seed": None,
    # the initial fault plan (sandbox.core.faults), also POST /_faults
    "faults": {},
}

_PHONE_ID = re.compile(r"^\d{5,20}$")
_TEMPLATE_STATUSES = {"APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED", "IN_APPEAL"}


def _check_accounts(accounts: Any) -> None:
    if not isinstance(accounts, list) or not accounts:
        raise ValueError("accounts must be a non-empty list")
    seen_ids: set[str] = set()
    for account in accounts:
        if not isinstance(account, dict):
            raise ValueError("each account must be an object")
        for key in ("phone_number_id", "display_phone_number", "waba_id", "access_token"):
            if not isinstance(account.get(key), str) or not account[key]:
                raise ValueError(f"accounts[].{key} must be a non-empty string")
        for key in ("phone_number_id", "waba_id", "display_phone_number"):
            if not _PHONE_ID.match(account[key]):
                raise ValueError(f"accounts[].{key} must be digits ({account[key]!r})")
        if account["phone_number_id"] in seen_ids:
            raise ValueError(f"duplicate phone_number_id {account['phone_number_id']}")
        seen_ids.add(account["phone_number_id"])


def _check_templates(templates: Any) -> None:
    if not isinstance(templates, list):
        raise ValueError("templates must be a list")
    for template in templates:
        if not isinstance(template, dict):
            raise ValueError("each template must be an object")
        for key in ("name", "language", "status", "category"):
            if not isinstance(template.get(key), str) or not template[key]:
                raise ValueError(f"templates[].{key} must be a non-empty string")
        if template["status"] not in _TEMPLATE_STATUSES:
            raise ValueError(f"templates[].status must be one of {sorted(_TEMPLATE_STATUSES)}")
        if not isinstance(template.get("components", []), list):
            raise ValueError("templates[].components must be a list")


def _rate(cfg: dict[str, Any], key: str) -> None:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{key} must be a number from 0 to 1")


def _check(cfg: dict[str, Any]) -> None:
    _check_accounts(cfg["accounts"])
    _check_templates(cfg["templates"])
    url = cfg["webhook_url"]
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("http://", "https://"))
    ):
        raise ValueError("webhook_url must be an http(s) URL or null")
    for key in ("app_secret", "verify_token"):
        if not isinstance(cfg[key], str) or not cfg[key]:
            raise ValueError(f"{key} must be a non-empty string")
    require_bools(
        cfg, ("enforce_window", "enforce_throughput", "enforce_pair_limit", "fetch_media_links")
    )
    require_numbers(
        cfg,
        (
            "webhook_timeout_s",
            "status_delay_s",
            "status_step_s",
            "window_s",
            "pair_interval_s",
            "media_url_ttl_s",
        ),
    )
    require_positive_ints(
        cfg,
        (
            "min_version",
            "throughput_per_s",
            "pair_burst",
            "max_text_chars",
            "max_caption_chars",
            "failed_code",
        ),
    )
    if cfg["pair_interval_s"] <= 0:
        raise ValueError("pair_interval_s must be > 0")
    for key in ("failed_rate", "drop_after_accept_rate", "duplicate_rate"):
        _rate(cfg, key)
    if cfg["status_webhooks"] not in STATUS_MODES:
        raise ValueError(f"status_webhooks must be one of {list(STATUS_MODES)}")
    sequence = cfg["status_sequence"]
    if not isinstance(sequence, list) or not all(
        s in ("sent", "delivered", "read", "played") for s in sequence
    ):
        raise ValueError("status_sequence must list sent, delivered, read or played")
    if cfg["window_error"] not in ("sync", "status"):
        raise ValueError("window_error must be 'sync' or 'status'")
    if cfg["pricing_model"] not in ("CBP", "PMP"):
        raise ValueError("pricing_model must be 'CBP' or 'PMP'")
    for key in ("throughput_http_status", "pair_http_status"):
        if cfg[key] not in (400, 429):
            raise ValueError(f"{key} must be 400 or 429")
    redelivery = cfg["redelivery"]
    if not isinstance(redelivery, dict) or set(redelivery) != {"attempts", "base_s", "cap_s"}:
        raise ValueError("redelivery must be {attempts, base_s, cap_s}")
    require_numbers(redelivery, ("attempts", "base_s", "cap_s"))
    if cfg["seed"] is not None and not isinstance(cfg["seed"], int):
        raise ValueError("seed must be an integer or null")
    if not isinstance(cfg["faults"], dict):
        raise ValueError("faults must be an object")


#: defaults, overrides, run-time updates (``faults`` only at start-up: use /_faults)
SETTINGS = Settings(
    DEFAULTS, check=_check, frozen={"faults"}, replace={"accounts", "templates", "status_sequence"}
)
