"""Configuration of the Viber sandbox: defaults, overrides, run-time updates.

``create_app(config)`` deep-merges ``config`` over :data:`DEFAULTS`; ``POST
/_config`` changes the same keys at run time (``bots`` and ``users`` are
replaced whole). The top-level ``auth_token``, ``id``, ``name``, ``uri``,
``avatar`` describe *the* bot (the demo's); ``bots`` adds more with the same
keys. Facts come from FACTS.md §4 and the REST bot API docs; behaviour Viber
does not document in the stored material is behind a switch and marked
UNCONFIRMED.
"""

from __future__ import annotations

from typing import Any

from ..core.config import Settings, require_bools, require_numbers

__all__ = [
    "BOT_KEYS",
    "DEFAULTS",
    "DEMO_AUTH_TOKEN",
    "DEMO_BOT_ID",
    "DEMO_BOT_NAME",
    "DEMO_BOT_URI",
    "SETTINGS",
]

#: auth tokens look like FACTS §4's test vector: three dash-joined 16-hex groups
DEMO_AUTH_TOKEN = "4a5b6c7d8e9f0a1b-2c3d4e5f6a7b8c9d-0e1f2a3b4c5d6e7f"  # noqa: S105
#: get_account_info's ``id`` ("pa:" and digits in the docs' example)
DEMO_BOT_ID = "pa:5704351212117413530"
DEMO_BOT_NAME = "Sandbox Demo Shop"
DEMO_BOT_URI = "sandboxdemoshop"

BOT_KEYS = ("auth_token", "id", "name", "uri", "avatar")

DEFAULTS: dict[str, Any] = {
    # -- the bot (the demo's) ------------------------------------------------------------------
    "auth_token": DEMO_AUTH_TOKEN,
    "id": DEMO_BOT_ID,
    "name": DEMO_BOT_NAME,
    "uri": DEMO_BOT_URI,
    "avatar": "https://example.com/sandbox-bot.png",
    # more bots: [{auth_token, id, name?, uri?, avatar?}] (replaced whole)
    "bots": [],
    # seeded users: [{id, name?, language?, country?, subscribed?}] (replaced whole)
    "users": [],
    # -- sending -------------------------------------------------------------------------------
    # longest text message (Python str length): "7000" is often quoted and
    # UNCONFIRMED (FACTS §4); longer -> status 3 badData with this message
    "text_limit": 7000,
    # send_message/broadcast_message requests per second per bot -> status 12
    # tooManyRequests (0: off). Viber publishes no number: UNCONFIRMED.
    "rate_limit_per_s": 0,
    # a send to a user who never wrote nor subscribed (or unsubscribed since)
    # answers status 6 receiverNotSubscribed (off: any known user may be written to)
    "require_subscription": True,
    # -- status callbacks after a send ---------------------------------------------------------
    # fire "delivered" and then "seen" at the webhook after each send
    "delivered": True,
    "seen": True,
    # odds that a status callback is posted twice, and that seen comes before
    # delivered (statuses from several devices; both shown to the bridge)
    "status_duplicate_rate": 0.0,
    "status_reorder_rate": 0.0,
    # -- callbacks -----------------------------------------------------------------------------
    # seconds to wait for the webhook's answer (Viber's is UNCONFIRMED)
    "webhook_timeout_s": 10.0,
    # an unanswered callback (no 200) is retried "several times for an hour"
    # (FACTS §4): `attempts` times, doubling from `base_s` up to `cap_s` on the
    # sandbox clock (POST /_clock or /_flush compresses it). The exact schedule
    # is UNCONFIRMED.
    "retry": {"attempts": 6, "base_s": 60.0, "cap_s": 1800.0},
    # RNG seed (status shuffles, tokens); None: random
    "seed": None,
    # the initial fault plan (sandbox.core.faults), also POST /_faults; its
    # 429 shows as Viber's status 12 in a 200 body
    "faults": {},
}


def _check_bot(where: str, bot: dict[str, Any]) -> None:
    for key in ("auth_token", "id"):
        if not isinstance(bot.get(key), str) or not bot[key]:
            raise ValueError(f"{where}{key} must be a non-empty string")
    for key in ("name", "uri", "avatar"):
        if bot.get(key) is not None and not isinstance(bot[key], str):
            raise ValueError(f"{where}{key} must be a string or null")


def _check(cfg: dict[str, Any]) -> None:
    _check_bot("", cfg)
    if not isinstance(cfg["bots"], list):
        raise ValueError("bots must be a list")
    for index, bot in enumerate(cfg["bots"]):
        if not isinstance(bot, dict):
            raise ValueError(f"bots[{index}] must be an object")
        _check_bot(f"bots[{index}].", bot)
    if not isinstance(cfg["users"], list) or not all(
        isinstance(u, dict) and isinstance(u.get("id"), str) and u["id"] for u in cfg["users"]
    ):
        raise ValueError("users must be a list of objects with an id")
    require_bools(cfg, ("require_subscription", "delivered", "seen"))
    require_numbers(
        cfg,
        (
            "text_limit",
            "rate_limit_per_s",
            "webhook_timeout_s",
            "status_duplicate_rate",
            "status_reorder_rate",
        ),
    )
    for key in ("status_duplicate_rate", "status_reorder_rate"):
        if cfg[key] > 1:
            raise ValueError(f"{key} must be from 0 to 1")
    retry = cfg["retry"]
    if not isinstance(retry, dict) or set(retry) != {"attempts", "base_s", "cap_s"}:
        raise ValueError("retry must be {attempts, base_s, cap_s}")
    require_numbers(retry, ("attempts", "base_s", "cap_s"))
    if not isinstance(cfg["faults"], dict):
        raise ValueError("faults must be an object")


SETTINGS = Settings(DEFAULTS, check=_check, frozen={"faults"}, replace={"bots", "users"})
