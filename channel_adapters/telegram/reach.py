"""Whether a Telegram user can be written to (``ChannelAdapter.reachability``).

The Bot API never says a user blocked the bot until a send fails: then
``sendMessage`` answers 403 with ``Forbidden: bot was blocked by the user``
(a deactivated account: ``Forbidden: user is deactivated``; the Bot API's
error descriptions, as python-telegram-bot's ``Forbidden`` and our sandbox
give them). The client reaches the bot again only by unblocking it and
writing, so a message of theirs after the failure makes them reachable
(the core passes a failure only when it is newer than their last message).
"""

from __future__ import annotations

from channel_adapters.base import Reach, ReachView

__all__ = ["BLOCKED", "reachability"]

#: the 403 descriptions that mean this user cannot be written to
BLOCKED = ("bot was blocked by the user", "user is deactivated")


def reachability(view: ReachView, default: Reach) -> Reach:
    """``blocked`` when the last failed send says the user blocked the bot
    (or is gone), else the core's default answer."""
    failure = (view.last_failure or "").lower()
    if any(words in failure for words in BLOCKED):
        return Reach(False, "blocked", view.last_failure)
    return default
