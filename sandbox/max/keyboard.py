"""Inline keyboards as MAX documents them (FACTS §7, §9; schema [S]
``InlineKeyboardAttachmentRequest``, ``Button`` and its subtypes), and
pressing one of their buttons.

* ``{"type": "inline_keyboard", "payload": {"buttons": Button[][]}}``, at
  least one row; a button is ``{"type", "text"}`` with ``text`` 1-128
  characters and the fields of its type: ``callback`` needs a ``payload`` of
  at most 1024 characters, ``link`` a ``url`` of at most 2048;
  ``request_contact``, ``request_geo_location``, ``open_app``, ``message``,
  ``clipboard`` and ``chat`` (described, missing from [S]'s mapping) are the
  other types.
* At most 210 buttons in at most 30 rows, 7 per row, 3 when the row holds a
  ``link``, ``open_app``, ``request_geo_location`` or ``request_contact``
  button (the dev.max.ru keyboard page).

MAX's wording for a refused keyboard is UNCONFIRMED: :func:`problem` says
what is wrong in the sandbox's words (sent with ``bad_request_code``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUTTON_TYPES", "callback_buttons", "problem"]

BUTTON_TYPES = frozenset(
    {
        "callback",
        "link",
        "request_contact",
        "request_geo_location",
        "open_app",
        "message",
        "clipboard",
        "chat",
    }
)
#: a row holding one of these takes at most 3 buttons (FACTS §9)
NARROW = frozenset({"link", "open_app", "request_geo_location", "request_contact"})
MAX_BUTTONS, MAX_ROWS, ROW_BUTTONS, NARROW_ROW = 210, 30, 7, 3
TEXT_LIMIT, PAYLOAD_LIMIT, URL_LIMIT = 128, 1024, 2048


def problem(payload: Any) -> str | None:
    """What is wrong with an ``inline_keyboard`` attachment's ``payload``, or None."""
    rows = payload.get("buttons") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        return "inline_keyboard: payload.buttons must be a non-empty array of button rows"
    if len(rows) > MAX_ROWS:
        return f"inline_keyboard: at most {MAX_ROWS} rows"
    if sum(len(row) for row in rows) > MAX_BUTTONS:
        return f"inline_keyboard: at most {MAX_BUTTONS} buttons"
    for row in rows:
        wrong = _row(row)
        if wrong:
            return f"inline_keyboard: {wrong}"
    return None


def _row(row: list[Any]) -> str | None:
    if not row:
        return "a row is empty"
    narrow = any(_kind(b) in NARROW for b in row)
    limit = NARROW_ROW if narrow else ROW_BUTTONS
    if len(row) > limit:
        return f"at most {limit} buttons in this row"
    for button in row:
        wrong = _button(button)
        if wrong:
            return wrong
    return None


def _button(button: Any) -> str | None:
    if not isinstance(button, dict) or _kind(button) not in BUTTON_TYPES:
        return f"a button's type must be one of {', '.join(sorted(BUTTON_TYPES))}"
    text = button.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= TEXT_LIMIT:
        return f"a button's text must be 1-{TEXT_LIMIT} characters"
    kind = button["type"]
    if kind == "callback":
        payload = button.get("payload")
        if not isinstance(payload, str) or len(payload) > PAYLOAD_LIMIT:
            return f"a callback button needs a payload of at most {PAYLOAD_LIMIT} characters"
    if kind == "link":
        url = button.get("url")
        if not isinstance(url, str) or not url or len(url) > URL_LIMIT:
            return f"a link button needs a url of at most {URL_LIMIT} characters"
    return None


def _kind(button: Any) -> str:
    """A button's ``type`` as text ("" when it is not a string)."""
    kind = button.get("type") if isinstance(button, dict) else None
    return kind if isinstance(kind, str) else ""


def callback_buttons(attachments: Any) -> list[dict[str, Any]]:
    """The ``callback`` buttons of a message's inline keyboards, in order."""
    found: list[dict[str, Any]] = []
    for item in attachments if isinstance(attachments, list) else []:
        if not isinstance(item, dict) or item.get("type") != "inline_keyboard":
            continue
        payload = item.get("payload")
        rows = payload.get("buttons") if isinstance(payload, dict) else None
        for row in rows if isinstance(rows, list) else []:
            for button in row if isinstance(row, list) else []:
                if isinstance(button, dict) and button.get("type") == "callback":
                    found.append(button)
    return found
