"""A message's choices (``OutboundMessage.buttons``: ``(id, label)`` pairs)
as a Viber keyboard of ``reply`` buttons, or nothing (the text alone: it
already lists the choices as numbered lines).

Viber's keyboard (creators.viber.com/docs/bots-api/resources/messaging/
keyboards; the parameter tables as viber.github.io/docs/tools/keyboards has
them):

* ``{"Type": "keyboard", "Buttons": [...]}``; Viber refuses one without
  ``Type`` with status 3 "keyboard is not valid. [object has missing
  required properties (["Type"])]" (quoted in webitel/chat_manager's Viber
  client);
* a button: ``ActionType`` ``reply`` ("will send a reply to the bot": a
  ``message`` callback whose text is the ``ActionBody``), ``ActionBody``
  required, ``Text`` "Max 250 characters" and "can contain some HTML tags"
  (so a label is escaped, as webitel/chat_manager does), ``Columns`` 1-6,
  ``Rows`` 1-2;
* the keyboard is 6 columns wide (the "Keyboard design" section) and
  "Keyboards can contain up to 24 rows" (that section as webitel/
  chat_manager quotes it, twice; not in the stored copies of Viber's page):
  one full-width button per row, so at most 24 choices; short labels (a
  rating's 1-5) share one row.

"The client will always display the last keyboard that was sent to it", so
it goes on the last message of a reply. A press is the client's text
message "2", exactly what they would have typed: :mod:`.inbound` needs
nothing more.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["COLUMNS", "MAX_ROWS", "keyboard"]

COLUMNS = 6
MAX_ROWS = 24
TEXT_LIMIT = 250
#: labels this short (a score) share one row, when they all fit in it
SHORT_LABEL = 4
ELLIPSIS = "…"


def keyboard(buttons: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    """The ``keyboard`` of ``buttons``, or None when they cannot all go
    (more than 24 rows, an empty or repeated id)."""
    ids = [key for key, _ in buttons]
    if not buttons or not all(ids) or len(set(ids)) != len(ids):
        return None
    labels = [label.strip() or key for key, label in buttons]
    one_row = len(labels) <= COLUMNS and all(len(label) <= SHORT_LABEL for label in labels)
    if not one_row and len(labels) > MAX_ROWS:
        return None
    columns = COLUMNS // len(labels) if one_row else COLUMNS
    return {
        "Type": "keyboard",
        "DefaultHeight": False,
        "Buttons": [
            {
                "Columns": columns,
                "Rows": 1,
                "ActionType": "reply",
                "ActionBody": key,
                "Text": button_text(label),
            }
            for key, label in zip(ids, labels, strict=True)
        ],
    }


def button_text(label: str) -> str:
    """``label`` HTML-escaped in at most 250 characters (cut with "…")."""
    text = html.escape(label, quote=False)
    if len(text) <= TEXT_LIMIT:
        return text
    kept, size = [], len(ELLIPSIS)
    for char in label:
        escaped = html.escape(char, quote=False)
        if size + len(escaped) > TEXT_LIMIT:
            break
        kept.append(escaped)
        size += len(escaped)
    return "".join(kept).rstrip() + ELLIPSIS
