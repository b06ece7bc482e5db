"""Text helpers the channel adapters share.

:func:`split_text` cuts a reply longer than a channel's message limit into
parts (VK 4096, MAX 4000, Viber's configurable limit, WhatsApp 4096): each
cut falls after the last paragraph break, else line break, else space in
the second half of a part, else hard at the limit, so that a part never
ends mid-word when a better place exists. Telegram counts UTF-16 units and
e-mail has no limit: they have their own.
"""

from __future__ import annotations

__all__ = ["split_text"]

_SEPARATORS = ("\n\n", "\n", " ")


def split_text(text: str, limit: int) -> list[str]:
    """``text`` (stripped) in parts of at most ``limit`` characters, none empty."""
    limit = max(1, int(limit))
    rest, parts = text.strip(), []
    while len(rest) > limit:
        cuts = [rest.rfind(sep, limit // 2, limit) for sep in _SEPARATORS]
        cut = next((c for c in cuts if c > 0), limit)
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return [p for p in (*parts, rest) if p]
