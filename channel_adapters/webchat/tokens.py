"""Signed visitor tokens and upload references (itsdangerous).

The widget key is public (it is in every page that embeds the widget), so
what keeps one visitor out of another's conversation is the *visitor
token*: ``{"a": <widget id>, "v": <visitor id>}`` signed with the
account's ``token_secret`` (HMAC-SHA1 under a key derived per salt, the
itsdangerous default), timestamped and accepted for 400 days. The widget
keeps it in the page's ``localStorage`` and sends it as ``Authorization:
Bearer <token>``, never in a URL.

An upload answers a *file reference*: the stored file's uid, name, type and
size with the account and the visitor, signed under another salt. A message
names its files by these references, so a visitor can attach only files
they uploaded themselves to this widget: a file uid alone (another
tenant's file) is never accepted.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer

__all__ = [
    "FILE_MAX_AGE",
    "VISITOR_MAX_AGE",
    "BadToken",
    "FileRef",
    "bearer",
    "new_secret",
    "new_visitor",
    "new_widget_id",
    "read_file_ref",
    "read_visitor_token",
    "sign_file_ref",
    "visitor_token",
]

VISITOR_SALT = "webchat-visitor"
FILE_SALT = "webchat-file"
#: a visitor comes back within this (a returning customer keeps their
#: conversation); then the widget starts a new visitor
VISITOR_MAX_AGE = 400 * 24 * 3600
#: an upload is named by a message within this (the widget sends it at once)
FILE_MAX_AGE = 24 * 3600
#: what a visitor id looks like (``secrets.token_urlsafe(16)``: 22 characters)
VISITOR_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: longest token accepted (a real one is about 100 characters)
MAX_TOKEN = 1024


class BadToken(Exception):
    """A token or reference that is not ours: forged, for another account or
    visitor, expired, or junk. ``str()`` says which, for the 4xx answer."""


@dataclass(frozen=True)
class FileRef:
    """What a verified upload reference names."""

    uid: str
    name: str
    mime_type: str
    size: int

    @property
    def file_ref(self) -> str:
        """The attachment's ``file_ref`` (a file the bridge keeps)."""
        return f"file:{self.uid}"


def new_secret() -> str:
    """A fresh ``token_secret`` (32 random bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def new_visitor() -> str:
    return secrets.token_urlsafe(16)


def new_widget_id() -> str:
    """A widget's own id in its tokens (random: it names nothing else)."""
    return secrets.token_urlsafe(9)


def _serializer(secret: str, salt: str) -> URLSafeTimedSerializer:
    if not secret:
        # never sign or accept anything under an empty key
        raise BadToken("this widget has no signing secret: create it again")
    return URLSafeTimedSerializer(secret, salt=salt)


def visitor_token(secret: str, widget: str | int, visitor: str) -> str:
    """A token for ``visitor`` of ``widget`` (its ``widget_id`` credential,
    which only its secret can vouch for)."""
    return str(_serializer(secret, VISITOR_SALT).dumps({"a": str(widget), "v": visitor}))


def read_visitor_token(
    secret: str, widget: str | int, token: str, *, max_age: int | None = VISITOR_MAX_AGE
) -> str:
    """The visitor id a token was issued for by this widget; ``BadToken``
    for anything else."""
    data = _loads(secret, VISITOR_SALT, token, max_age, "visitor token")
    visitor = data.get("v")
    if data.get("a") != str(widget):
        raise BadToken("the visitor token is for another widget")
    if not isinstance(visitor, str) or not VISITOR_RE.fullmatch(visitor):
        raise BadToken("the visitor token names no visitor")
    return visitor


def sign_file_ref(secret: str, widget: str | int, visitor: str, ref: FileRef) -> str:
    return str(
        _serializer(secret, FILE_SALT).dumps(
            {
                "a": str(widget),
                "v": visitor,
                "f": ref.uid,
                "n": ref.name,
                "m": ref.mime_type,
                "s": ref.size,
            }
        )
    )


def read_file_ref(
    secret: str, widget: str | int, visitor: str, token: str, *, max_age: int | None = FILE_MAX_AGE
) -> FileRef:
    """The upload a reference names, when this visitor of this account made
    it; ``BadToken`` otherwise. ``max_age`` None: any age (the worker
    re-reading a journaled message, maybe days later)."""
    data = _loads(secret, FILE_SALT, token, max_age, "file reference")
    if data.get("a") != str(widget) or data.get("v") != visitor:
        raise BadToken("the file was uploaded by another visitor")
    uid, name, mime, size = data.get("f"), data.get("n"), data.get("m"), data.get("s")
    if not (
        isinstance(uid, str)
        and isinstance(name, str)
        and isinstance(mime, str)
        and isinstance(size, int)
        and not isinstance(size, bool)
    ):
        raise BadToken("the file reference is incomplete")
    return FileRef(uid, name, mime, size)


def _loads(secret: str, salt: str, token: Any, max_age: int | None, what: str) -> dict[str, Any]:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN or not token.isascii():
        raise BadToken(f"no valid {what}")
    serializer = _serializer(secret, salt)
    try:
        if max_age is None:
            data = serializer.loads(token)
        else:
            data = serializer.loads(token, max_age=max_age)
    except BadData as exc:
        # SignatureExpired is a BadData too: an old token is no token
        expired = type(exc).__name__ == "SignatureExpired"
        raise BadToken(f"the {what} has expired" if expired else f"no valid {what}") from None
    except Exception:  # noqa: BLE001 (a hostile token must never become a 500)
        raise BadToken(f"no valid {what}") from None
    if not isinstance(data, dict):
        raise BadToken(f"no valid {what}")
    return data


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header or not isinstance(header, str):
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None
