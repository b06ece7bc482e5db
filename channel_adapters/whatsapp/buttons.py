"""A message's choices (``OutboundMessage.buttons``: ``(id, label)`` pairs)
as WhatsApp's interactive message: reply buttons, a list, or nothing (the
text alone: it already lists the choices as numbered lines).

Meta's limits (developers.facebook.com/documentation/business-messaging/
whatsapp/messages/interactive-reply-buttons-messages: "up to three
predefined replies"; .../interactive-list-messages: "up to 10 sections,
with up to 10 rows for all sections combined"), the fields' lengths as
Meta's WhatsApp Node.js SDK reference states them
(whatsapp.github.io/WhatsApp-Nodejs-SDK/api-reference/types/ButtonObject,
.../RowObject):

* reply button: ``title`` 1-20 characters, unique within the message;
  ``id`` at most 256 characters;
* list row: ``title`` at most 24, ``description`` at most 72, ``id`` at
  most 200; the list's ``action.button`` at most 20;
* ``body.text`` at most 1024: not on the stored Meta pages; the SDKs say
  so (whatsapp-api-js ``Body``: "Maximum length: 1024 characters";
  the Sinch and Telnyx WhatsApp references), as does the sandbox.

One label over its limit makes Meta refuse the whole message
(nyaruka/courier PR 1126, hubtype/botonic PR 2801: "the WhatsApp message was
not being sent"), so the choice is made here: up to 3 choices whose labels
fit as reply buttons; else up to 10 as list rows (a long label cut with
"…" in the title, whole in the description); else, or when the text is
over the body limit or an id cannot go, None. A press comes back as
``interactive.button_reply`` / ``list_reply`` with the id
(:mod:`.inbound`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["BODY_LIMIT", "MAX_BUTTONS", "MAX_ROWS", "interactive", "list_label"]

BODY_LIMIT = 1024
MAX_BUTTONS = 3
BUTTON_TITLE = 20
BUTTON_ID = 256
MAX_ROWS = 10
ROW_TITLE = 24
ROW_ID = 200
ROW_DESCRIPTION = 72
#: the list's button (``action.button``, at most 20 characters), in the
#: client's language: the text's own script tells which
LIST_LABEL = {"en": "Choose", "ru": "Выбрать"}
ELLIPSIS = "…"


def interactive(text: str, buttons: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    """The ``interactive`` object showing ``text`` with ``buttons``, or None
    when they cannot go natively (send the text alone)."""
    body = text.strip()
    ids = [key for key, _ in buttons]
    if not buttons or not body or len(body) > BODY_LIMIT or not _ids_fit(ids):
        return None
    titles = [label.strip() or key for key, label in buttons]
    if _as_buttons(ids, titles):
        return {
            "type": "button",
            "body": {"text": body},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": key, "title": title}}
                    for key, title in zip(ids, titles, strict=True)
                ]
            },
        }
    if len(ids) <= MAX_ROWS and all(len(key) <= ROW_ID for key in ids):
        rows = [_row(key, title) for key, title in zip(ids, titles, strict=True)]
        return {
            "type": "list",
            "body": {"text": body},
            "action": {"button": list_label(body), "sections": [{"rows": rows}]},
        }
    return None


def list_label(text: str) -> str:
    """The list's button in the text's language (Cyrillic: Russian)."""
    cyrillic = any("\u0400" <= ch <= "\u04ff" for ch in text)
    return LIST_LABEL["ru" if cyrillic else "en"]


def _ids_fit(ids: Sequence[str]) -> bool:
    """Ids come back verbatim: non-empty, no edge spaces, unique (else a
    press could not be told apart)."""
    return all(key and key == key.strip() for key in ids) and len(set(ids)) == len(ids)


def _as_buttons(ids: Sequence[str], titles: Sequence[str]) -> bool:
    return (
        len(ids) <= MAX_BUTTONS
        and all(len(key) <= BUTTON_ID for key in ids)
        and all(len(title) <= BUTTON_TITLE for title in titles)
        and len(set(titles)) == len(titles)
    )


def _row(key: str, title: str) -> dict[str, str]:
    """A list row; a title over 24 characters is cut, and shown whole (up
    to 72) as the row's description."""
    if len(title) <= ROW_TITLE:
        return {"id": key, "title": title}
    return {
        "id": key,
        "title": _clip(title, ROW_TITLE),
        "description": _clip(title, ROW_DESCRIPTION),
    }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS
