"""A rep's reply -> the ``messages.send`` calls that carry it, in order
(corpora FACTS §3 "Outbound").

* Text is split at 4096 characters: the schema allows 9000 but vkbottle
  chunks at 4096 and error 914 "Message is too long" is all VK says, so
  the effective limit is UNCONFIRMED and 4096 is the safe side.
* Attachments go as links in the text (one line each, after the text): a
  file the CRM or the bridge serves over HTTPS. Uploading them the VK way
  (``photos.getMessagesUploadServer`` / ``docs.getMessagesUploadServer``,
  then ``attachment=photo<owner>_<id>``) is not done.
* ``random_id`` is VK's idempotency key, checked "over the whole message
  history": derived from the bridge's message id and the part's index, so
  a retried job sends every part with the same key (VK drops the repeat)
  and each part has its own (the same key twice would silently drop every
  part after the first: vkbottle ``mini_types/base/message.py``).
* A reply to a customer's message: ``reply_to`` with its message id, or,
  for a message known only by its ``conversation_message_id`` (group chats:
  ``id`` is 0 for community bots), ``forward`` with ``is_reply``.
* Choices (``message.buttons``: a menu, a rating) go as an inline keyboard
  of callback buttons on the last part (:func:`keyboard`); a press comes
  back as ``message_event`` with the button's payload (:mod:`.inbound`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bridge.errors import PermanentError
from bridge.model import OutboundMessage
from channel_adapters.text import split_text as shared_split

__all__ = [
    "BUTTON_KEY",
    "INLINE_MAX_BUTTONS",
    "LABEL_LIMIT",
    "TEXT_LIMIT",
    "keyboard",
    "plan",
    "random_id",
    "split_text",
]

TEXT_LIMIT = 4096
#: random_id is an int64 ("use a large range (up to int64)": vk.com/dev/
#: messages.send, FACTS §3); 63 bits keep it positive; 0 would disable the check
RANDOM_ID_MASK = 2**63 - 1

# The inline keyboard's limits: at most 5 x 6 and 10 buttons (VK's keyboard
# page, dev.vk.com/en/api/bots/development/keyboard, "Inline Display"; a
# keyboard VK cannot read is error 911 "Keyboard format is invalid"); a
# button's ``label`` at most 40 characters and its ``payload`` at most 255
# (the limits vk-io's keyboard builder documents: negezor/vk-io, Keyboard).
# The schema (vk/schema/messages__objects.json ``messages_keyboard``) gives
# the shape, not the numbers.
INLINE_MAX_BUTTONS = 10
INLINE_MAX_ROWS = 6
ROW_MAX_BUTTONS = 5
LABEL_LIMIT = 40
PAYLOAD_LIMIT = 255
#: labels this short share one row (a 1-5 rating fits in one)
SHORT_LABEL = 4
#: the payload's key naming the button: ``{"button": "<id>"}``
BUTTON_KEY = "button"


def random_id(bridge_id: str, index: int) -> int:
    """The ``random_id`` of part ``index`` of the bridge's message
    ``bridge_id``: the same on every attempt, different for every part."""
    digest = hashlib.sha256(f"vk:random_id:{bridge_id}:{index}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") & RANDOM_ID_MASK) or 1


def plan(message: OutboundMessage) -> list[dict[str, Any]]:
    """The parameters of each ``messages.send``, in order (without the
    token and version the client adds)."""
    peer = _peer(message.external_thread_id)
    parts = split_text(_text(message))
    if not parts:
        raise PermanentError("nothing to send: no text and no attachments")
    calls = [
        {"peer_id": peer, "message": part, "random_id": random_id(message.bridge_id, index)}
        for index, part in enumerate(parts)
    ]
    calls[0].update(_reply(message.reply_to, peer))
    board = keyboard(message.buttons)
    if board is not None:
        calls[-1]["keyboard"] = board
    return calls


def keyboard(buttons: tuple[tuple[str, str], ...]) -> str | None:
    """The inline keyboard (a JSON string, as ``messages.send`` takes it)
    of callback buttons for ``(id, label)`` pairs, each one's payload
    ``{"button": "<id>"}``; None when there are none, more than VK shows
    inline (10), or an id its payload cannot hold: the text lists them.

    Callback buttons, not text ones: a press is a ``message_event`` that
    names the button whatever its label says, and the acknowledge path
    already answers it (``messages.sendMessageEventAnswer``). A label
    longer than 40 characters is cut with an ellipsis (the text has it whole).
    """
    if not buttons or len(buttons) > INLINE_MAX_BUTTONS:
        return None
    cells: list[dict[str, Any]] = []
    for key, label in buttons:
        payload = json.dumps({BUTTON_KEY: key}, ensure_ascii=False, separators=(",", ":"))
        shown = _label(label) or _label(key)
        if not key or len(payload) > PAYLOAD_LIMIT or not shown:
            return None
        cells.append({"action": {"type": "callback", "label": shown, "payload": payload}})
    board = {"inline": True, "buttons": _rows(cells, buttons)}
    return json.dumps(board, ensure_ascii=False, separators=(",", ":"))


def _label(text: str) -> str:
    """One line of at most :data:`LABEL_LIMIT` characters."""
    line = " ".join(text.split())
    return line if len(line) <= LABEL_LIMIT else line[: LABEL_LIMIT - 1].rstrip() + "…"


def _rows(cells: list[dict[str, Any]], buttons: tuple[tuple[str, str], ...]) -> list[Any]:
    """Short labels (a rating) in one row of up to five; otherwise one
    button a row, two a row beyond six (10 buttons: 5 rows of 2)."""
    short = all(len(label.strip()) <= SHORT_LABEL for _, label in buttons)
    if short and len(cells) <= ROW_MAX_BUTTONS:
        return [cells]
    width = 1 if len(cells) <= INLINE_MAX_ROWS else 2
    return [cells[i : i + width] for i in range(0, len(cells), width)]


def _text(message: OutboundMessage) -> str:
    """The reply's text, then one line per attachment: its link."""
    links: list[str] = []
    for attachment in message.attachments:
        name = attachment.file_name or attachment.kind.value
        if not attachment.url:
            raise PermanentError(
                f"the attachment {name!r} has no link to send (VK gets files as links here)"
            )
        links.append(f"📎 {name}: {attachment.url}")
    return "\n\n".join(p for p in (message.text.strip(), "\n".join(links)) if p)


def _peer(thread: str) -> int:
    """A thread is a ``peer_id``: a user's id, ``2000000000 + chat_id``."""
    text = thread.strip()
    if not text.lstrip("-").isdigit() or len(text) > 20:
        raise PermanentError(f"the conversation's VK peer id is not a number: {text[:30]!r}")
    return int(text)


def _reply(reply_to: str | None, peer: int) -> dict[str, Any]:
    """``reply_to=<id>`` for a message id; ``forward`` with ``is_reply``
    for ``c<conversation_message_id>`` (the id the inbound side gave a
    message whose ``id`` was 0); nothing for anything else."""
    ref = (reply_to or "").strip()
    if ref.isdigit() and 0 < int(ref) < 2**63:
        return {"reply_to": int(ref)}
    if ref[:1] == "c" and ref[1:].isdigit() and 0 < int(ref[1:]) < 2**63:
        forward = {"peer_id": peer, "conversation_message_ids": [int(ref[1:])], "is_reply": True}
        return {"forward": json.dumps(forward, separators=(",", ":"))}
    return {}


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` characters (``channel_adapters.text``)."""
    return shared_split(text, limit)
