"""A rep's reply -> the ``POST /messages`` calls that carry it, in order
(FACTS §9, §11).

* The addressee: a dialog's thread is the user's id (``?user_id=``), a
  group chat's its negative chat id (``?chat_id=``), FACTS §6, §13.
* Text is split at 4000 characters (``NewMessageBody.text`` maxLength
  4000, FACTS §9), cut after a paragraph, else a line, else a space in the
  second half of a part.
* Each attachment is a message of its own after the text: file, audio,
  sticker and contact requests "must be the only attachment in the message"
  (FACTS §7). An image with an address goes by URL (``{"type": "image",
  "payload": {"url"}}``, no upload); any other file is uploaded first (the
  adapter: ``POST /uploads``, the bytes to the URL it gives, then its token).
* A reply to a customer's message: ``link: {"type": "reply", "mid"}`` on
  the first message.
* ``OutboundMessage.buttons`` (a greeting menu, a rating): the last message
  carries an inline keyboard of ``callback`` buttons whose ``payload`` is
  the choice's id, so a press (``message_callback``) comes back as what the
  client would have typed (FACTS §9, §10). More choices than MAX takes, or
  an id it cannot carry: the text alone (it lists the choices).
* The account's ``contact_button`` setting: the last message's inline
  keyboard also has one ``request_contact`` button, in a row of its own
  (FACTS §8), for the client to share their verified phone number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.errors import PermanentError
from bridge.model import Attachment, MessageKind, OutboundMessage
from channel_adapters.text import split_text as shared_split

__all__ = [
    "TEXT_LIMIT",
    "Step",
    "address",
    "callback_rows",
    "inline_keyboard",
    "plan",
    "split_text",
    "upload_type",
]

TEXT_LIMIT = 4000
#: a button's text is 1-128 characters (FACTS §9)
BUTTON_TEXT = 128
#: a keyboard holds at most 210 buttons in at most 30 rows, 7 per row
#: (FACTS §9, the dev.max.ru keyboard page)
MAX_BUTTONS = 210
MAX_ROWS = 30
ROW_BUTTONS = 7
#: CallbackButton.payload: maxLength 1024 (FACTS §9, schema [S])
PAYLOAD_LIMIT = 1024
#: labels this short share rows: the keyboard page recommends at most 3
#: visible characters with 4 buttons in a row; longer ones get a row each
SHORT_LABEL = 3


@dataclass(frozen=True)
class Step:
    """One ``POST /messages``: its text or its one attachment, and the
    body's extra fields (``link``, the keyboard)."""

    text: str | None = None
    attachment: Attachment | None = None
    extra: tuple[tuple[str, Any], ...] = ()


def address(thread: str) -> dict[str, int]:
    """The query naming the addressee: ``chat_id`` or ``user_id`` (int64)."""
    text = thread.strip()
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(text) > 20:
        raise PermanentError(f"the conversation's MAX id is not a number: {text[:30]!r}")
    value = int(text)
    if not -(2**63) <= value < 2**63 or value == 0:
        raise PermanentError("the conversation's MAX id is out of range")
    return {"user_id": value} if value > 0 else {"chat_id": value}


def plan(message: OutboundMessage, contact_button: str = "") -> list[Step]:
    """The messages of one reply, in order; the keyboard (the buttons',
    then the contact button's row) on the last."""
    steps = [Step(text=part) for part in split_text(message.text)]
    steps += [Step(attachment=a) for a in message.attachments]
    if not steps:
        raise PermanentError("nothing to send: no text and no attachments")
    reply = (message.reply_to or "").strip()
    if reply.startswith("mid.") and reply.isascii() and len(reply) <= 200:
        first = steps[0]
        steps[0] = Step(first.text, first.attachment, (("link", {"type": "reply", "mid": reply}),))
    rows = callback_rows(message.buttons, room=MAX_ROWS - (1 if contact_button.strip() else 0))
    if contact_button.strip():
        rows.append([_contact(contact_button)])
    if rows:
        last = steps[-1]
        steps[-1] = Step(last.text, last.attachment, (*last.extra, ("keyboard", rows)))
    return steps


def callback_rows(
    buttons: tuple[tuple[str, str], ...], room: int = MAX_ROWS
) -> list[list[dict[str, Any]]]:
    """Rows of ``callback`` buttons for ``(id, label)`` pairs, the id as the
    payload; ``[]`` when there are none or they do not fit: more than
    ``room`` rows or :data:`MAX_BUTTONS` buttons, or an id that is empty or
    longer than :data:`PAYLOAD_LIMIT`. A blank label shows the id; a label is
    cut at :data:`BUTTON_TEXT` characters."""
    if not buttons or not all(0 < len(key) <= PAYLOAD_LIMIT for key, _ in buttons):
        return []
    keys = [
        {"type": "callback", "text": (label.strip() or key)[:BUTTON_TEXT], "payload": key}
        for key, label in buttons
    ]
    per_row = ROW_BUTTONS if all(len(k["text"]) <= SHORT_LABEL for k in keys) else 1
    rows = [keys[i : i + per_row] for i in range(0, len(keys), per_row)]
    return rows if len(keys) <= MAX_BUTTONS and len(rows) <= room else []


def inline_keyboard(rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The ``inline_keyboard`` attachment of ``rows`` (FACTS §7)."""
    return {"type": "inline_keyboard", "payload": {"buttons": rows}}


def _contact(text: str) -> dict[str, Any]:
    """A ``request_contact`` button (FACTS §8)."""
    return {"type": "request_contact", "text": text.strip()[:BUTTON_TEXT]}


def upload_type(attachment: Attachment) -> str:
    """``POST /uploads?type=``: image, video, audio or file (FACTS §11)."""
    if attachment.kind in (MessageKind.PHOTO, MessageKind.STICKER):
        return "image"
    if attachment.kind in (MessageKind.VIDEO, MessageKind.VIDEO_NOTE, MessageKind.ANIMATION):
        return "video"
    if attachment.kind in (MessageKind.VOICE, MessageKind.AUDIO):
        return "audio"
    return "file"


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` characters (``channel_adapters.text``)."""
    return shared_split(text, limit)
