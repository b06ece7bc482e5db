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
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bridge.errors import PermanentError
from bridge.model import OutboundMessage
from channel_adapters.text import split_text as shared_split

__all__ = ["TEXT_LIMIT", "plan", "random_id", "split_text"]

TEXT_LIMIT = 4096
#: random_id is an int64 ("use a large range (up to int64)": vk.com/dev/
#: messages.send, FACTS §3); 63 bits keep it positive; 0 would disable the check
RANDOM_ID_MASK = 2**63 - 1


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
    return calls


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
