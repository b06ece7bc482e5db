"""Photos and documents: image sniffing, ``PhotoSize`` ladders, ``Document`` objects.

Telegram stores a sent photo in several sizes and returns "an array of
PhotoSize, one entry per available size" (api.json ``Message.photo``; the order
is not documented, FACTS.md 1). The sandbox keeps the uploaded bytes and
reports the standard ladder (longest side 90/320/800/1280/2560, never above the
original). It does not resize: every size downloads the original bytes.
An upload that is not an image fails like Telegram: ``IMAGE_PROCESS_FAILED``.
"""

from __future__ import annotations

import mimetypes
import struct
from typing import Any

from .errors import ApiError, bad_request
from .spec import UploadedFile
from .state import BotState, Store, StoredFile

__all__ = ["image_size", "store_photo", "store_document", "photo_sizes_for", "document_object"]

_LADDER = (90, 320, 800, 1280, 2560)


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG, GIF, JPEG, WebP or BMP image, else ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _image_mime(data: bytes) -> str:
    """The MIME type of the bytes actually stored (the sandbox does not re-encode to JPEG)."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:3] == b"GIF":
        return "image/gif"
    if data.startswith(b"RIFF"):
        return "image/webp"
    if data.startswith(b"BM"):
        return "image/bmp"
    return "image/jpeg"


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def photo_sizes_for(store: Store, bot: BotState, data: bytes | None, width: int, height: int,
                    mime_type: str = "image/jpeg") -> list[dict[str, Any]]:
    """Store one file per ladder size and return the ``PhotoSize`` array, smallest first."""
    longest = max(width, height, 1)
    targets = [side for side in _LADDER if side < longest] + [min(longest, _LADDER[-1])]
    sizes: list[dict[str, Any]] = []
    for side in targets:
        scale = side / longest
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        is_original = side == targets[-1]
        stored = store.new_file(bot, "photo", data=data, mime_type=mime_type,
                                size=len(data) if data is not None and is_original else None,
                                meta={"width": w, "height": h})
        size: dict[str, Any] = {"file_id": stored.file_id,
                                "file_unique_id": stored.file_unique_id,
                                "width": w, "height": h}
        if stored.size is not None:
            size["file_size"] = stored.size
        stored.meta["photo_sizes"] = sizes
        sizes.append(size)
    return sizes


def store_photo(store: Store, bot: BotState, value: UploadedFile | str) -> list[dict[str, Any]]:
    """The ``photo`` of a sendPhoto: an upload, a known file_id, or an HTTP URL."""
    if isinstance(value, UploadedFile):
        if not value.data:
            raise bad_request("file must be non-empty")
        if len(value.data) > store.config.max_photo_bytes:
            raise bad_request("file is too big")  # wording unconfirmed; limit is api.json's
        size = image_size(value.data)
        if size is None:
            raise bad_request("IMAGE_PROCESS_FAILED")
        if size[0] + size[1] > 10000 or max(size) > 20 * max(1, min(size)):
            raise bad_request("PHOTO_INVALID_DIMENSIONS")  # api.json sendPhoto.photo limits
        mime = _image_mime(value.data)
        return photo_sizes_for(store, bot, value.data, size[0], size[1], mime)
    known = bot.files.get(value)
    if known is not None:
        return list(known.meta.get("photo_sizes") or [_single_size(known)])
    if value.startswith(("http://", "https://")):
        # Telegram would download the URL; the sandbox never goes to the network and
        # records a placeholder 800x600 photo instead.
        return photo_sizes_for(store, bot, None, 800, 600)
    raise bad_request("wrong file identifier/HTTP URL specified")


def _single_size(stored: StoredFile) -> dict[str, Any]:
    size = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
            "width": stored.meta.get("width", 0), "height": stored.meta.get("height", 0)}
    if stored.size is not None:
        size["file_size"] = stored.size
    return size


def document_object(stored: StoredFile) -> dict[str, Any]:
    """The ``Document`` object (api.json ``types.Document``) of a stored file."""
    document: dict[str, Any] = {}
    if stored.file_name:
        document["file_name"] = stored.file_name
    if stored.mime_type:
        document["mime_type"] = stored.mime_type
    document["file_id"] = stored.file_id
    document["file_unique_id"] = stored.file_unique_id
    if stored.size is not None:
        document["file_size"] = stored.size
    return document


def store_document(store: Store, bot: BotState, value: UploadedFile | str) -> dict[str, Any]:
    """The ``document`` of a sendDocument: an upload, a known file_id, or an HTTP URL."""
    if isinstance(value, UploadedFile):
        if not value.data:
            raise bad_request("file must be non-empty")
        if len(value.data) > store.config.max_upload_bytes:
            raise ApiError(413, "Request Entity Too Large")
        name = value.filename or "file"
        mime = value.content_type
        if not mime or mime == "application/octet-stream":
            mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        stored = store.new_file(bot, "document", data=value.data, size=len(value.data),
                                mime_type=mime, file_name=name)
        return document_object(stored)
    known = bot.files.get(value)
    if known is not None:
        return document_object(known)
    if value.startswith(("http://", "https://")):
        name = value.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "file"
        stored = store.new_file(bot, "document", file_name=name,
                                mime_type=mimetypes.guess_type(name)[0] or
                                "application/octet-stream")
        return document_object(stored)
    raise bad_request("wrong file identifier/HTTP URL specified")
