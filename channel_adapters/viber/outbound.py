"""A rep's reply -> the ``send_message`` bodies that carry it, in order
(corpora FACTS §4 "Outbound"; creators.viber.com/docs/bots-api send message).

* Every body names the ``receiver`` (the user's id, the conversation's
  thread), the ``sender`` (``name`` at most 28 characters, an optional
  ``avatar``) and ``tracking_data``: our message's id, so whatever Viber
  hands back about it names the bridge's message.
* Text is split at the bot's ``text_limit`` (default 7000, UNCONFIRMED:
  FACTS §4), after a paragraph, line or word where it can.
* Files go by public URL (Viber fetches them; the bridge serves a rep's
  files at ``/files/<uid>/<token>/<name>``): an image as ``picture``
  (``media`` and a ``text``, empty when the reply's text went before it),
  a video as ``video`` (``media``, ``size``), anything else as ``file``
  (``media``, ``size``, ``file_name``). A file without a URL cannot go.
* Choices (``message.buttons``: a menu, a rating) ride on the last message
  as a keyboard of ``reply`` buttons (:mod:`.keyboard`); a press comes back
  as the client's text, the button's id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.errors import PermanentError
from bridge.model import Attachment, MessageKind, OutboundMessage
from channel_adapters.text import split_text as shared_split

from .keyboard import keyboard
from .settings import DEFAULT_TEXT_LIMIT, SENDER_NAME_LIMIT

__all__ = ["plan", "split_text"]

#: a picture's ``text``: "Max 120 characters" in the REST docs' picture
#: message (UNCONFIRMED in the stored material): a longer reply text goes
#: as a text message before the picture
PICTURE_TEXT_LIMIT = 120
#: ``file_name`` "Max 256 characters (including file extension)"
FILE_NAME_LIMIT = 256
#: "Max request JSON 30 KB" (FACTS §4)
REQUEST_LIMIT = 30_000
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")


def plan(
    message: OutboundMessage,
    *,
    sender_name: str,
    sender_avatar: str = "",
    text_limit: int = DEFAULT_TEXT_LIMIT,
) -> list[dict[str, Any]]:
    """The ``send_message`` bodies of one reply, in order."""
    receiver = message.external_thread_id.strip()
    if not receiver:
        raise PermanentError("the conversation names no Viber user to send to")
    sender: dict[str, Any] = {"name": sender_name[:SENDER_NAME_LIMIT] or "Support"}
    if sender_avatar:
        sender["avatar"] = sender_avatar
    base = {"receiver": receiver, "sender": sender, "tracking_data": message.bridge_id}
    text = message.text.strip()
    files = [_file(a) for a in message.attachments]
    caption = ""
    if (
        len(files) == 1
        and files[0]["type"] == "picture"
        and text
        and len(text) <= PICTURE_TEXT_LIMIT
    ):
        caption, text = text, ""
    bodies = [{**base, "type": "text", "text": part} for part in split_text(text, text_limit)]
    for body in files:
        if body["type"] == "picture":
            body["text"] = caption
        bodies.append({**base, **body})
    if not bodies:
        raise PermanentError("nothing to send: no text and no attachments")
    if message.buttons:
        _attach_keyboard(bodies[-1], message.buttons)
    return bodies


def _attach_keyboard(body: dict[str, Any], buttons: Sequence[tuple[str, str]]) -> None:
    """The choices as a keyboard on the reply's last message (the client
    shows the last keyboard sent), unless they cannot go (:mod:`.keyboard`)
    or the request would pass Viber's 30 KB (FACTS §4; measured as
    ``requests`` writes it, non-ASCII escaped): then the text alone."""
    board = keyboard(buttons)
    if board is not None and len(json.dumps({**body, "keyboard": board})) <= REQUEST_LIMIT:
        body["keyboard"] = board


def _file(attachment: Attachment) -> dict[str, Any]:
    name = attachment.file_name or attachment.kind.value
    if not attachment.url:
        raise PermanentError(
            f"the attachment {name!r} has no public link (Viber fetches files by URL)"
        )
    mime = (attachment.mime_type or "").lower()
    if attachment.kind is MessageKind.PHOTO or mime in _IMAGE_TYPES:
        return {"type": "picture", "media": attachment.url}
    if attachment.kind is MessageKind.VIDEO and attachment.size:
        return {"type": "video", "media": attachment.url, "size": attachment.size}
    return {
        "type": "file",
        "media": attachment.url,
        "size": attachment.size or 0,
        "file_name": name[-FILE_NAME_LIMIT:],
    }


def split_text(text: str, limit: int = DEFAULT_TEXT_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` characters (``channel_adapters.text``)."""
    return shared_split(text, limit)
