"""Whether an address can be written to (``ChannelAdapter.reachability``).

A send the receiving server refuses for good comes back as a bounce
(a DSN with ``Action: failed``, a 5.x.x status; RFC 3464): the adapter
reports it as a failed status whose reason starts with ``bounced``
(``adapter._bounce_reason``), and the core marks the message failed with
it. Until the person writes again from that address, it counts as
bouncing. A temporary delay (4.x.x, ``Action: delayed``) is no failure.
"""

from __future__ import annotations

from channel_adapters.base import Reach, ReachView

__all__ = ["reachability"]


def reachability(view: ReachView, default: Reach) -> Reach:
    """``bounced`` when the last failed send bounced, else the default."""
    if (view.last_failure or "").startswith("bounced"):
        return Reach(False, "bounced", view.last_failure)
    return default
