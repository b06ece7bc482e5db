"""In-process state of the WhatsApp sandbox: windows, media, messages, limits.

Everything lives in one :class:`Store` guarded by one re-entrant lock (the
demo server is threaded). Nothing here does I/O: webhook posts happen outside
the lock (:mod:`.webhook`), so a bridge that calls the Graph API while it
handles a webhook cannot deadlock the sandbox.

* The **customer-service window** (FACTS §2) is kept per (business phone
  number, customer): a customer's inbound message opens it for ``window_s``
  seconds of the sandbox clock. A customer is named by ``wa_id`` and, when a
  payload's ``contacts[]`` carried one, by the business-scoped ``user_id``
  ("US.…") too.
* **Media** (inbound ones registered by ``/_deliver``, uploads) are bytes with
  a MIME type, an owner number and an id, downloadable in two steps.
* **Limits**: throughput per number and the pair limit per (number, user),
  token buckets on the sandbox clock (:mod:`sandbox.core.ratelimit`).
"""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
import struct
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from ..core.clock import Clock
from ..core.ratelimit import TokenBucket
from ..core.webhooks import DeliveryLog

__all__ = ["Media", "Store", "new_wamid", "new_media_id", "sample_bytes", "normalize_to"]


def new_wamid(to: str = "") -> str:
    """A message id shaped like Meta's: ``wamid.`` + base64 (an opaque blob that
    names the recipient)."""
    blob = b"\x15\x02\x00\x11\x18\x12" + to.encode() + secrets.token_bytes(12)
    return "wamid." + base64.b64encode(blob).decode()


def new_media_id() -> str:
    """Media ids are 15-16 digit numbers (corpus ``message.json``)."""
    return str(1_000_000_000_000_000 + secrets.randbelow(8_999_999_999_999_999))


def normalize_to(to: str) -> str | None:
    """The ``wa_id`` a ``to`` names: a phone number with ``+``, spaces, dashes,
    dots and parentheses dropped (7-15 digits), or a business-scoped user id
    ("US.…") as given; None when it is neither."""
    value = to.strip()
    if value.startswith("US."):
        return value if len(value) > 3 else None
    digits = "".join(ch for ch in value if ch not in "+ -().")
    return digits if digits.isdigit() and 7 <= len(digits) <= 15 else None


# -- generated media bytes ---------------------------------------------------------------

_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////"
    "////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/a"
    "AAgBAQABPxA="
)
_WEBP = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")


def _png(tag: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"tEXt", b"Comment\x00" + tag)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00"))
        + chunk(b"IEND", b"")
    )


def sample_bytes(mime_type: str, tag: str) -> bytes:
    """Small bytes of ``mime_type`` (right magic numbers), distinct per ``tag``."""
    mime = mime_type.split(";")[0].strip().lower()
    mark = f"sandbox media {tag}".encode()
    if mime == "image/png":
        return _png(mark)
    if mime in ("image/jpeg", "image/jpg"):
        return _JPEG + mark  # bytes after EOI are ignored by decoders
    if mime == "image/webp":
        return _WEBP + mark
    if mime == "application/pdf":
        return (
            b"%PDF-1.4\n% "
            + mark
            + b"\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
        )
    if mime.startswith("audio/ogg") or mime == "audio/opus":
        return b"OggS\x00\x02" + b"\x00" * 20 + mark
    if mime in ("audio/mpeg", "audio/mp3"):
        return b"ID3\x04\x00\x00\x00\x00\x00\x00" + mark
    if mime in ("video/mp4", "audio/mp4", "audio/aac", "video/3gpp"):
        return b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + mark
    if mime.startswith("text/"):
        return mark + b"\n"
    return mark


@dataclass
class Media:
    """One media object: what ``GET /{media-id}`` describes and its URL serves."""

    id: str
    phone_number_id: str
    mime_type: str
    content: bytes
    filename: str | None = None
    created: float = 0.0
    origin: str = "inbound"  # inbound | upload

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mime_type": self.mime_type,
            "sha256": self.sha256,
            "file_size": len(self.content),
            "filename": self.filename,
            "origin": self.origin,
            "phone_number_id": self.phone_number_id,
        }


@dataclass
class Store:
    """Everything the sandbox remembers (see the module docstring)."""

    config: dict[str, Any]
    clock: Clock
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: (phone_number_id, customer) -> sandbox time of the customer's last message
    windows: dict[tuple[str, str], float] = field(default_factory=dict)
    #: (phone_number_id, user_id) -> wa_id, learnt from contacts[]
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (phone_number_id, wamid) -> the inbound message as delivered (+ read_at)
    inbound: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    media: dict[str, Media] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    #: (phone_number_id, customer, category) -> {"id", "expires"}
    conversations: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    deliveries: DeliveryLog = field(default_factory=lambda: DeliveryLog(1000, numbered=True))
    verification: dict[str, Any] | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.throughput = TokenBucket(now=self.clock.now)
        self.pairs = TokenBucket(now=self.clock.now)
        self.rng = random.Random(self.config.get("seed"))  # noqa: S311 (not crypto)

    def now(self) -> float:
        return self.clock.now()

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def reset(self) -> None:
        with self.lock:
            self.windows.clear()
            self.aliases.clear()
            self.inbound.clear()
            self.media.clear()
            self.sent.clear()
            self.conversations.clear()
            self.deliveries.clear()
            self.counters.clear()
            self.verification = None
            self.throughput.reset()
            self.pairs.reset()
            self.rng = random.Random(self.config.get("seed"))  # noqa: S311

    # -- accounts ------------------------------------------------------------------------

    def accounts(self) -> list[dict[str, Any]]:
        return list(self.config["accounts"])

    def account(self, phone_number_id: str) -> dict[str, Any] | None:
        return next(
            (a for a in self.config["accounts"] if a["phone_number_id"] == phone_number_id), None
        )

    def find_account(self, selector: str) -> dict[str, Any] | None:
        """By phone number id, display number (with or without ``+``) or WABA id."""
        plain = selector.lstrip("+")
        for account in self.config["accounts"]:
            if selector == account["phone_number_id"] or plain == account["display_phone_number"]:
                return account
        return next((a for a in self.config["accounts"] if a["waba_id"] == selector), None)

    def default_account(self) -> dict[str, Any]:
        account: dict[str, Any] = self.config["accounts"][0]
        return account

    def token_accounts(self, token: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.config["accounts"]
            if secrets.compare_digest(a["access_token"].encode(), token.encode())
        ]

    # -- the customer-service window -------------------------------------------------------

    def customer_key(self, phone_number_id: str, customer: str) -> str:
        """A ``user_id`` the sandbox has seen maps to its ``wa_id``."""
        return self.aliases.get((phone_number_id, customer), customer)

    def open_window(self, phone_number_id: str, customer: str, at: float | None = None) -> None:
        with self.lock:
            self.windows[(phone_number_id, self.customer_key(phone_number_id, customer))] = (
                self.now() if at is None else at
            )

    def window_open(self, phone_number_id: str, customer: str) -> bool:
        with self.lock:
            last = self.windows.get((phone_number_id, self.customer_key(phone_number_id, customer)))
            return last is not None and self.now() < last + float(self.config["window_s"])

    def window_dump(self, phone_number_id: str) -> list[dict[str, Any]]:
        now, span = self.now(), float(self.config["window_s"])
        return [
            {
                "customer": customer,
                "last_inbound": at,
                "expires": at + span,
                "open": now < at + span,
            }
            for (pnid, customer), at in sorted(self.windows.items())
            if pnid == phone_number_id
        ]

    # -- conversations (the statuses' conversation object) -----------------------------------

    def conversation(self, phone_number_id: str, customer: str, category: str) -> dict[str, Any]:
        """The open conversation of this category, or a new one for 24 h."""
        with self.lock:
            key = (phone_number_id, self.customer_key(phone_number_id, customer), category)
            now = self.now()
            current = self.conversations.get(key)
            if current is None or now >= current["expires"]:
                current = {
                    "id": secrets.token_hex(16),
                    "expires": now + 86400,
                    "category": category,
                }
                self.conversations[key] = current
            return current

    # -- media ---------------------------------------------------------------------------------

    def add_media(self, media: Media) -> Media:
        with self.lock:
            self.media[media.id] = media
        return media
