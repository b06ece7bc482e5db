"""Configuration of the VK sandbox: defaults, overrides, run-time updates.

``create_app(config)`` deep-merges ``config`` over :data:`DEFAULTS`; ``POST
/_config`` changes the same keys at run time (:data:`SETTINGS`, a
:class:`sandbox.core.config.Settings`; ``communities``, ``users`` and
``daily_quota`` are replaced whole). The top-level ``group_id``,
``access_token``, ``secret``, ``confirmation``, ``server_url`` and ``v``
describe *the* community (the demo's); ``communities`` adds more, each with
the same keys. Facts come from FACTS.md §3 and the VK API JSON schema
(``tests/fixtures/corpora/vk/schema/``); behaviour VK does not document in the
stored material is behind a switch and marked UNCONFIRMED.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.config import Settings, require_bools, require_numbers

__all__ = [
    "DEFAULTS",
    "SETTINGS",
    "DEMO_GROUP_ID",
    "DEMO_ACCESS_TOKEN",
    "DEMO_SECRET",
    "DEMO_CONFIRMATION",
    "DEMO_SCREEN_NAME",
    "COMMUNITY_KEYS",
    "SCHEMA_MAX_MESSAGE_CHARS",
    "version_tuple",
]

#: a community id in today's range (VK's are ~2.3e8 now)
DEMO_GROUP_ID = 227000001
DEMO_SCREEN_NAME = "sandbox_demo_shop"
#: today's community tokens start with "vk1.a."; this one only opens the sandbox
DEMO_ACCESS_TOKEN = "vk1.a.SandboxDemoCommunityTokenForTheVkCallbackApiAndMessagesSend0001"  # noqa: S105
#: the Callback API "secret key" (latin letters and digits, up to 50)
DEMO_SECRET = "SandboxVkSecretKey0001"  # noqa: S105
#: confirmation strings are 8 hex digits (e.g. vksdk's "693d0ba9")
DEMO_CONFIRMATION = "5ab0c0de"

#: messages.send ``message`` maxLength in the VK API schema (messages__methods.json)
SCHEMA_MAX_MESSAGE_CHARS = 9000

#: what describes one community (top level for the first, ``communities[]`` for more)
COMMUNITY_KEYS = (
    "group_id",
    "name",
    "screen_name",
    "access_token",
    "secret",
    "confirmation",
    "server_url",
    "v",
)

DEFAULTS: dict[str, Any] = {
    # -- the community (the demo's) ------------------------------------------------------------
    "group_id": DEMO_GROUP_ID,
    "name": "Sandbox Demo Shop",
    "screen_name": DEMO_SCREEN_NAME,
    # the community access token (messages, manage): opens this community only
    "access_token": DEMO_ACCESS_TOKEN,
    # the Callback API server's secret key, sent as "secret" in every event
    # (FACTS §3); null or "": no secret configured, the field is left out
    "secret": DEMO_SECRET,
    # the string the server must answer to the "confirmation" event
    # (groups.getCallbackConfirmationCode returns it)
    "confirmation": DEMO_CONFIRMATION,
    # the Callback API server address (the bridge's VK webhook); null: none yet
    "server_url": None,
    # the server's API version: "v" of every event and the shape of its objects
    # (message_new.object = {message, client_info} from 5.103, FACTS §3)
    "v": "5.199",
    # more communities: [{group_id, name?, screen_name?, access_token, secret?,
    # confirmation?, server_url?, v?}] (replaced whole)
    "communities": [],
    # -- users ---------------------------------------------------------------------------------
    # seeded users: [{id, first_name, last_name, screen_name?, allowed?, blacklisted?,
    # privacy?}]; other ids get a generated name. allowed: may receive messages
    # without having written (as after message_allow); blacklisted: error 900;
    # privacy: error 902.
    "users": [],
    # every user may be written to, even one who never wrote or allowed (no 901)
    "allow_all_users": False,
    # -- the API -------------------------------------------------------------------------------
    # versions below this answer error 8 ("versions below 5.81 are deprecated")
    "min_version": "5.81",
    # from this version messages.send requires random_id (error 100), as VK since 5.90
    "random_id_required_from": "5.90",
    # 914 "Message is too long" above this many characters (Python str length).
    # The schema says maxLength 9000, vkbottle chunks at 4096: the effective limit
    # is UNCONFIRMED (FACTS §3), so 4096 by default, at most 9000.
    "max_message_chars": 4096,
    # random_id de-duplication key: "peer" (per community and peer, the whole
    # history) or "sender" (per community over every peer: the 2019 doc's
    # "per API_ID and sender"). UNCONFIRMED which one VK applies.
    "random_id_scope": "peer",
    # requests per second per access token -> error 6 (0: off). FACTS §3: the
    # often-quoted 3/s (user) and 20/s (community) are UNCONFIRMED.
    "rate_limit_per_s": 3,
    # messages.send to one peer more than `count` times in `window_s` -> error 9
    # "Flood control" (count 0: off; VK publishes no numbers)
    "flood_control": {"count": 0, "window_s": 60.0},
    # per method per token per rolling 24 h -> error 29 "Rate limit reached"
    # ({"messages.send": 10000}; {}: off; VK publishes no numbers)
    "daily_quota": {},
    # groups.getById answers {"groups": [...], "profiles": [...]} from this
    # version (the 5.199 schema's groups_getById_object_response), a bare list
    # below it. The switch-over version is UNCONFIRMED.
    "groups_get_by_id_object_from": "5.194",
    # -- the Callback API ----------------------------------------------------------------------
    # whether the "confirmation" event carries "secret" (FACTS §3: UNCONFIRMED;
    # VK's own example shows {"type", "group_id"} only)
    "confirmation_with_secret": False,
    # an unconfirmed server is confirmed (the handshake) before the first event
    # a control endpoint posts, as when an admin presses "Confirm"; off: 409
    "auto_confirm": True,
    # a new confirmation string whenever server_url changes ("The string changes
    # when servers are added or edited", FACTS §3); off keeps DEMO_CONFIRMATION
    "rotate_confirmation": False,
    # our own sends come back as message_reply events (out: 1), as VK does
    "echo_replies": True,
    # message_event.object.payload: "object" (the corpus' capture) or "string"
    # (the schema's type)
    "event_payload": "object",
    # JSON as VK writes it: "\/" in URLs (the corpus' raw captures), UTF-8 unescaped
    "escape_slashes": True,
    # seconds to wait for the server's answer (VK's is UNCONFIRMED)
    "server_timeout_s": 10.0,
    # a failed event (no answer, not 200, or a body other than "ok") is retried
    # `attempts` times, doubling from `base_s` up to `cap_s` (sandbox clock), with
    # X-Retry-Counter: 1, 2, ... A Retry-After on 410/429/503 is honoured up to
    # `retry_after_cap_s` (3 h, vksdk's doc). The schedule is UNCONFIRMED.
    "retry": {"attempts": 3, "base_s": 1.0, "cap_s": 60.0},
    "retry_after_cap_s": 10800.0,
    # "If a server returns several errors in a row, Callback API will temporarily
    # stop sending": after this many failed attempts in a row the server is paused
    # for `pause_s` (0: never). Numbers UNCONFIRMED.
    "pause_after_failures": 5,
    "pause_s": 60.0,
    # events that come while the server is paused: "hold" (posted when the pause
    # ends) or "drop". UNCONFIRMED.
    "paused_events": "hold",
    # -- faults --------------------------------------------------------------------------------
    # how /_faults' 5xx shows: "api_error" (error 10 "Internal server error" in a
    # 200 body, as VK answers) or "http" (a bare 502 page from the front end)
    "fault_5xx": "api_error",
    # RNG seed (confirmation strings, event ids); None: random
    "seed": None,
    # the initial fault plan (sandbox.core.faults), also POST /_faults
    "faults": {},
}

_VERSION = re.compile(r"^\d+\.\d+$")


def version_tuple(value: str) -> tuple[int, int]:
    major, _, minor = value.partition(".")
    return int(major), int(minor or 0)


def _check_version(key: str, value: Any) -> None:
    if not isinstance(value, str) or not _VERSION.match(value):
        raise ValueError(f"{key} must be a version string like '5.199'")


def _check_community(where: str, c: dict[str, Any]) -> None:
    gid = c.get("group_id")
    if isinstance(gid, bool) or not isinstance(gid, int) or gid < 1:
        raise ValueError(f"{where}group_id must be a positive integer")
    if not isinstance(c.get("access_token"), str) or not c["access_token"]:
        raise ValueError(f"{where}access_token must be a non-empty string")
    for key in ("secret", "server_url", "name", "screen_name"):
        if c.get(key) is not None and not isinstance(c[key], str):
            raise ValueError(f"{where}{key} must be a string or null")
    secret = c.get("secret")
    if secret and (len(secret) > 50 or not secret.isalnum()):
        raise ValueError(f"{where}secret must be up to 50 latin letters and digits")
    if not isinstance(c.get("confirmation"), str) or not c["confirmation"]:
        raise ValueError(f"{where}confirmation must be a non-empty string")
    _check_version(f"{where}v", c.get("v"))


def community_defaults(c: dict[str, Any], index: int) -> dict[str, Any]:
    """A ``communities[]`` item completed with the optional keys."""
    gid = c.get("group_id")
    return {
        "name": f"Community {gid}",
        "screen_name": f"club{gid}",
        "secret": None,
        "confirmation": f"{(0x5ab0c0de + index + 1) & 0xFFFFFFFF:08x}",
        "server_url": None,
        "v": "5.199",
        **c,
    }


def _check(cfg: dict[str, Any]) -> None:
    _check_community("", cfg)
    if not isinstance(cfg["communities"], list):
        raise ValueError("communities must be a list")
    seen = {cfg["group_id"]}
    tokens = {cfg["access_token"]}
    for i, item in enumerate(cfg["communities"]):
        if not isinstance(item, dict):
            raise ValueError("each communities[] item must be an object")
        unknown = set(item) - set(COMMUNITY_KEYS)
        if unknown:
            raise ValueError(f"communities[{i}] has unknown keys {sorted(unknown)}")
        _check_community(f"communities[{i}].", community_defaults(item, i))
        if item["group_id"] in seen:
            raise ValueError(f"duplicate group_id {item['group_id']}")
        if item["access_token"] in tokens:
            raise ValueError("each community needs its own access_token")
        seen.add(item["group_id"])
        tokens.add(item["access_token"])
    if not isinstance(cfg["users"], list):
        raise ValueError("users must be a list")
    for user in cfg["users"]:
        if not isinstance(user, dict) or isinstance(user.get("id"), bool) or not isinstance(
            user.get("id"), int
        ) or user["id"] < 1:
            raise ValueError("users[] items must be objects with a positive integer id")
    for key in ("min_version", "random_id_required_from", "groups_get_by_id_object_from"):
        _check_version(key, cfg[key])
    require_bools(
        cfg,
        (
            "allow_all_users",
            "confirmation_with_secret",
            "auto_confirm",
            "rotate_confirmation",
            "echo_replies",
            "escape_slashes",
        ),
    )
    limit = cfg["max_message_chars"]
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= (
        SCHEMA_MAX_MESSAGE_CHARS
    ):
        raise ValueError(
            f"max_message_chars must be an integer from 1 to {SCHEMA_MAX_MESSAGE_CHARS}")
    if cfg["random_id_scope"] not in ("peer", "sender"):
        raise ValueError("random_id_scope must be 'peer' or 'sender'")
    if cfg["event_payload"] not in ("object", "string"):
        raise ValueError("event_payload must be 'object' or 'string'")
    if cfg["paused_events"] not in ("hold", "drop"):
        raise ValueError("paused_events must be 'hold' or 'drop'")
    if cfg["fault_5xx"] not in ("api_error", "http"):
        raise ValueError("fault_5xx must be 'api_error' or 'http'")
    require_numbers(
        cfg,
        (
            "rate_limit_per_s",
            "server_timeout_s",
            "retry_after_cap_s",
            "pause_after_failures",
            "pause_s",
        ),
    )
    flood = cfg["flood_control"]
    if not isinstance(flood, dict) or set(flood) != {"count", "window_s"}:
        raise ValueError("flood_control must be {count, window_s}")
    require_numbers(flood, ("count", "window_s"))
    retry = cfg["retry"]
    if not isinstance(retry, dict) or set(retry) != {"attempts", "base_s", "cap_s"}:
        raise ValueError("retry must be {attempts, base_s, cap_s}")
    require_numbers(retry, ("attempts", "base_s", "cap_s"))
    quota = cfg["daily_quota"]
    if not isinstance(quota, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in quota.items()
    ):
        raise ValueError("daily_quota must map method names to integers >= 0")
    if cfg["seed"] is not None and (isinstance(cfg["seed"], bool) or not isinstance(
        cfg["seed"], int
    )):
        raise ValueError("seed must be an integer or null")
    if not isinstance(cfg["faults"], dict):
        raise ValueError("faults must be an object")


#: defaults, overrides, run-time updates (``faults`` only at start-up: use /_faults)
SETTINGS = Settings(
    DEFAULTS, check=_check, frozen={"faults"}, replace={"communities", "users", "daily_quota"}
)
