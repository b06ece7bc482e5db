"""Files the bridge keeps for the CRM, served at links with a secret token.

Some channels hand us a file's bytes inside the delivery (an e-mail's
attachments, and the mail itself): nothing on the provider's side can
serve them later. :func:`keep` stores them with the message that carries
them (the same transaction), and the attachment then names the stored file
(``file_ref = "file:<uid>"``). When the message is written to the CRM,
:func:`resolve` gives it its link, ``<public url>/files/<uid>/<token>/<name>``:
CRMs that take a file by URL (amoCRM's chat ``media``, Bitrix24's Open
Lines ``files``) fetch it into their own storage, the others show the link.

The token is random per file (not derived from a key, so a key rotation
breaks no link already in a CRM) and compared in constant time. A link is
served as a download with ``nosniff`` and a sandboxing CSP: a customer's
HTML or SVG never runs on our origin. Bytes are dropped
``file_retention_days`` after they were stored (:func:`drop_old`); the link
then answers 410.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from urllib.parse import quote

from flask import Blueprint, Response, jsonify
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.model import Attachment, utcnow
from bridge.runtime import Runtime, app_runtime
from bridge.tables import StoredFile

__all__ = ["PREFIX", "bp", "drop_old", "is_kept", "keep", "link", "resolve"]

#: an attachment's ``file_ref`` when its bytes are kept here
PREFIX = "file:"

#: types a browser may show inline from our origin (everything else is a
#: download, served as an opaque type when it could run: HTML, SVG, XML, JS)
_INLINE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"})
_OPAQUE_HINTS = ("html", "xml", "svg", "javascript", "ecmascript")

bp = Blueprint("files", __name__)


def keep(session: Session, tenant_id: int, attachment: Attachment) -> Attachment:
    """Store ``attachment.content`` in the caller's transaction; the
    attachment naming the stored file (its bytes no longer carried)."""
    if attachment.content is None:
        return attachment
    data = attachment.content
    uid = str(uuid.uuid4())
    session.add(
        StoredFile(
            uid=uid,
            tenant_id=tenant_id,
            token=secrets.token_urlsafe(24),
            name=_safe_name(attachment.file_name),
            mime_type=(attachment.mime_type or "application/octet-stream")[:127],
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            content=data,
        )
    )
    return dataclasses.replace(attachment, file_ref=PREFIX + uid, content=None, size=len(data))


def link(runtime: Runtime, uid: str) -> str | None:
    """The public link of stored file ``uid`` (None when there is none)."""
    with runtime.read_session() as session:
        row = session.execute(
            select(StoredFile.token, StoredFile.name).where(StoredFile.uid == uid)
        ).first()
    if row is None:
        return None
    token, name = row
    return f"{runtime.settings.public_url}/files/{uid}/{token}/{quote(name, safe='')}"


def resolve(runtime: Runtime, attachment: Attachment) -> Attachment:
    """The attachment with its link, when its bytes are kept here."""
    ref = attachment.file_ref or ""
    if not ref.startswith(PREFIX) or attachment.url:
        return attachment
    url = link(runtime, ref[len(PREFIX) :])
    return dataclasses.replace(attachment, url=url) if url else attachment


def is_kept(attachment: Attachment) -> bool:
    """Whether the attachment's link is one of ours (safe to show: no
    provider token in it)."""
    return bool(attachment.url) and (attachment.file_ref or "").startswith(PREFIX)


def drop_old(runtime: Runtime, *, limit: int = 500) -> int:
    """Retention: drop the bytes of files stored more than
    ``file_retention_days`` ago (the row stays). Returns files done."""
    cutoff = utcnow() - dt.timedelta(days=runtime.settings.file_retention_days)
    with runtime.transaction() as session:
        ids = list(
            session.scalars(
                select(StoredFile.id)
                .where(StoredFile.created_at < cutoff, StoredFile.content.is_not(None))
                .limit(limit)
            )
        )
        if ids:
            session.execute(update(StoredFile).where(StoredFile.id.in_(ids)).values(content=None))
    return len(ids)


@bp.get("/files/<uid>/<token>/<path:name>")
def serve(uid: str, token: str, name: str) -> Response | tuple[Response, int]:
    """A stored file, to whoever holds its link (the CRM fetching it, a rep
    clicking it). Unknown file and wrong token answer the same 404."""
    with app_runtime().read_session() as session:
        row = session.execute(
            select(
                StoredFile.token, StoredFile.name, StoredFile.mime_type, StoredFile.content
            ).where(StoredFile.uid == uid)
        ).first()
    if row is None or not hmac.compare_digest(row[0].encode(), token.encode()):
        return _error("not_found", "no such file", 404)
    _, stored_name, mime_type, content = row
    if content is None:
        return _error("gone", "the file was kept for its retention period and dropped", 410)
    return _download(bytes(content), stored_name, mime_type)


def _download(content: bytes, name: str, mime_type: str) -> Response:
    opaque = any(h in mime_type.lower() for h in _OPAQUE_HINTS)
    response = Response(content, mimetype="application/octet-stream" if opaque else mime_type)
    disposition = "inline" if mime_type in _INLINE else "attachment"
    response.headers["Content-Disposition"] = (
        f"{disposition}; filename*=UTF-8''{quote(name, safe='')}"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


def _error(code: str, message: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": code, "message": message}), status


def _safe_name(name: str | None) -> str:
    """A file name safe in a path and a header: no directory, no control
    characters, at most 200 characters (the extension kept)."""
    base = (name or "file").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '"').strip() or "file"
    if len(base) > 200:
        stem, dot, ext = base.rpartition(".")
        base = (stem[:190] + dot + ext[:9]) if dot and len(ext) <= 9 else base[:200]
    return base
