"""A rep's reply -> the WhatsApp messages that carry it, in sending order
(corpora FACTS §2 "Outbound").

``text.body`` is at most 4096 characters: a longer reply is split, at a
line or word break where there is one. Attachments go by ``link`` (a file
the CRM or the bridge serves over HTTPS); a kind WhatsApp has no message
for goes as a document; a place (a ``geo:`` URI) as a location message. A
reply to a specific customer message threads with ``context.message_id``;
every message carries the bridge's id in ``biz_opaque_callback_data``,
which Meta echoes in the message's statuses. A template (the reply window
is closed) is one message. Choices (``message.buttons``: a menu, a rating)
go as one interactive message with the text as its body (reply buttons or a
list, :mod:`.buttons`); when they cannot, the text alone lists them.
"""

from __future__ import annotations

from typing import Any

from bridge.model import Attachment, MessageKind, OutboundMessage
from channel_adapters.text import split_text as shared_split

from .buttons import interactive

__all__ = ["TEXT_LIMIT", "plan", "split_text"]

TEXT_LIMIT = 4096
#: a caption is 1024 characters (third-party tables, UNCONFIRMED): longer
#: text goes as a message of its own
CAPTION_LIMIT = 1024
_MEDIA = {
    MessageKind.PHOTO: "image",
    MessageKind.VIDEO: "video",
    MessageKind.AUDIO: "audio",
    MessageKind.VOICE: "audio",
    MessageKind.STICKER: "sticker",
}


def plan(message: OutboundMessage, to: str) -> list[dict[str, Any]]:
    """The request bodies of ``POST /{phone-number-id}/messages``, in order."""
    base: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "biz_opaque_callback_data": message.bridge_id[:512],
    }
    if message.reply_to:
        base["context"] = {"message_id": message.reply_to}
    if message.template is not None:
        return [{**base, "type": "template", "template": _template(message)}]
    choices = interactive(message.text, message.buttons) if message.buttons else None
    if choices is not None:
        bodies = [{**base, "type": "interactive", "interactive": choices}]
    else:
        bodies = [
            {**base, "type": "text", "text": {"body": part, "preview_url": False}}
            for part in split_text(message.text)
        ]
    bodies += [{**base, **_media(a)} for a in message.attachments if a.url]
    bodies += [{**base, **place} for a in message.attachments if (place := _location(a))]
    return bodies


def _location(attachment: Attachment) -> dict[str, Any] | None:
    """A place the rep sent (``file_ref`` ``geo:<lat>,<lon>``, RFC 5870,
    the name in ``file_name``) as WhatsApp's location message."""
    ref = attachment.file_ref or ""
    if attachment.kind != MessageKind.LOCATION or not ref.startswith("geo:"):
        return None
    try:
        lat, lon = (float(p) for p in ref[4:].split(";", 1)[0].split(",")[:2])
    except ValueError:
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    place: dict[str, Any] = {"latitude": lat, "longitude": lon}
    if attachment.file_name:
        place["name"] = attachment.file_name[:1000]
    return {"type": "location", "location": place}


def _template(message: OutboundMessage) -> dict[str, Any]:
    template = message.template
    assert template is not None
    body: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if template.parameters:
        body["components"] = [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": p or "-"} for p in template.parameters],
            }
        ]
    return body


def _media(attachment: Attachment) -> dict[str, Any]:
    kind = _MEDIA.get(attachment.kind, "document")
    media: dict[str, Any] = {"link": attachment.url}
    if kind == "document" and attachment.file_name:
        media["filename"] = attachment.file_name[:240]
    return {"type": kind, kind: media}


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` characters (``channel_adapters.text``)."""
    return shared_split(text, limit)
