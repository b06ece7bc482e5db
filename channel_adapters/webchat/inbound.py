"""What the widget sends, checked field by field, and the journaled body ->
normalised events.

Two bodies reach the journal, both composed by the widget API
(:mod:`.api`) from checked input, never the visitor's bytes as they came::

    {"type": "message", "visitor": "<visitor id, from the token>",
     "id": "<the widget's client message id>", "text": "...",
     "files": ["<signed upload reference>", ...],
     "profile": {"name", "phone", "email"} | null,
     "consent": {"given": true, "version", "at", "page"} | null,
     "context": {"page_url", "page_title", "referrer", "language", "timezone",
                 "utm_first": {...}, "utm_last": {...}},
     "received_at": "<ISO time>"}

    {"type": "read", "visitor": "...", "read_up_to": <seq>,
     "read": ["<bridge uid of an operator reply>", ...], "received_at": "..."}

The same checks run three times: in the API (a 400 that names the field, for
the widget), at the edge (the generic ``/webhooks/webchat/<key>`` route
takes the same body) and in the worker's parse (a journaled row is read
again, maybe by a newer version).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import PayloadError
from bridge.model import (
    Attachment,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    SenderProfile,
)
from channel_adapters.webchat.tokens import VISITOR_RE, FileRef

__all__ = [
    "CLIENT_ID_RE",
    "KIND",
    "MAX_FILES",
    "MAX_TEXT",
    "UTM_KEYS",
    "CheckedMessage",
    "check_message",
    "check_read",
    "delivery_key",
    "load_body",
    "parse_body",
]

KIND = "webchat"
#: longest text of one message (characters)
MAX_TEXT = 4000
#: most files in one message
MAX_FILES = 5
#: the widget's own id for a message (generated once, kept over retries)
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
#: the first/last-touch marks kept, each a string of at most MAX_UTM
UTM_KEYS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "gclid",
    "yclid",
    "fbclid",
)
MAX_UTM = 200
MAX_URL = 2048
#: most operator replies one read receipt names (the API looks up no more)
MAX_READ = 200
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}")
_PHONE_RE = re.compile(r"\+?[0-9][0-9 ()\-.]{3,30}")
_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8}){0,4}")
_TIMEZONE_RE = re.compile(r"[A-Za-z0-9_+\-/]{1,64}")
_VERSION_RE = re.compile(r"[\w.\-+ ]{1,64}")
_UID_RE = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True)
class CheckedMessage:
    """A message as the widget sent it, every field checked."""

    id: str
    text: str
    files: tuple[str, ...] = ()
    profile: Mapping[str, str] = field(default_factory=dict)
    consent: Mapping[str, str] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def contact(self) -> bool:
        """A phone or an e-mail given (what a required pre-chat form asks)."""
        return bool(self.profile.get("phone") or self.profile.get("email"))

    def body(self, visitor: str, received_at: dt.datetime) -> dict[str, Any]:
        """The journal body for ``visitor`` (see the module docstring)."""
        return {
            "type": "message",
            "visitor": visitor,
            "id": self.id,
            "text": self.text,
            "files": list(self.files),
            "profile": dict(self.profile) or None,
            "consent": {"given": True, **self.consent} if self.consent is not None else None,
            "context": dict(self.context),
            "received_at": received_at.isoformat(),
        }


def _bad(code: str, message: str) -> PayloadError:
    return PayloadError(message, code=code)


def load_body(body: bytes) -> dict[str, Any]:
    """A JSON object, or a 400 saying it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _bad("invalid_json", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise _bad("invalid_json", "the body must be a JSON object")
    return data


def _text(value: Any, name: str, limit: int, *, code: str = "invalid_field") -> str:
    """A string of at most ``limit`` characters, valid Unicode; None -> ""."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(code, f"{name} must be a string")
    if len(value) > limit:
        # the widget names this one to the visitor
        too_long = "text_too_long" if name == "text" else code
        raise _bad(too_long, f"{name} is longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(code, f"{name} is not valid Unicode (a lone surrogate)") from None
    return value


def _line(value: Any, name: str, limit: int, *, code: str = "invalid_field") -> str:
    """One line: control characters (a newline in a name) become spaces."""
    text = _text(value, name, limit, code=code)
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _url(value: Any, name: str, *, code: str = "invalid_context") -> str:
    """An http(s) URL, else "" (a ``javascript:`` page address never becomes
    a link in the CRM)."""
    text = _line(value, name, MAX_URL, code=code)
    return text if text.lower().startswith(("https://", "http://")) else ""


def _object(value: Any, name: str, code: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(code, f"{name} must be an object")
    return value


def check_message(data: Mapping[str, Any]) -> CheckedMessage:
    """The widget's message body (``POST /widget/<key>/messages``), checked;
    a ``PayloadError`` whose ``code`` and message name the field otherwise."""
    client_id = data.get("id")
    if not isinstance(client_id, str) or not CLIENT_ID_RE.fullmatch(client_id):
        raise _bad("invalid_id", "id must be 8-64 characters of A-Z a-z 0-9 _ - (the client's id)")
    text = _text(data.get("text"), "text", MAX_TEXT, code="invalid_text")
    files = data.get("files") or []
    if not isinstance(files, list) or len(files) > MAX_FILES:
        raise _bad("invalid_files", f"files must be a list of at most {MAX_FILES} upload refs")
    if not all(isinstance(f, str) and f for f in files):
        raise _bad("invalid_files", "files must hold the refs POST /uploads answered")
    if not text.strip() and not files:
        raise _bad("empty_message", "a message needs a text or files")
    return CheckedMessage(
        id=client_id,
        text=text,
        files=tuple(files),
        profile=_profile(data.get("profile")),
        consent=_consent(data.get("consent")),
        context=_context(data.get("context")),
    )


def _profile(value: Any) -> dict[str, str]:
    data = _object(value, "profile", "invalid_profile")
    out: dict[str, str] = {}
    name = _line(data.get("name"), "profile.name", 200, code="invalid_profile")
    if name:
        out["name"] = name
    # a phone or an address that is not one is left out, not refused: the
    # widget would keep sending it with every message, each refused; left
    # out, a required pre-chat form is asked again (prechat_required)
    phone = _line(data.get("phone"), "profile.phone", 100, code="invalid_profile")
    if phone and _PHONE_RE.fullmatch(phone):
        out["phone"] = phone
    email = _line(data.get("email"), "profile.email", 254, code="invalid_profile")
    if email and _EMAIL_RE.fullmatch(email):
        out["email"] = email
    return out


def _consent(value: Any) -> dict[str, str] | None:
    """The consent given with the message, or None (not given here)."""
    data = _object(value, "consent", "invalid_consent")
    given = data.get("given")
    if given is None or given is False:
        return None
    if given is not True:
        raise _bad("invalid_consent", "consent.given must be true or false")
    version = _line(data.get("version"), "consent.version", 64, code="invalid_consent")
    if version and not _VERSION_RE.fullmatch(version):
        raise _bad("invalid_consent", "consent.version must be a short version string")
    out = {"version": version} if version else {}
    at = data.get("at")
    if at is not None:
        if not isinstance(at, str) or len(at) > 40:
            raise _bad("invalid_consent", "consent.at must be an ISO 8601 time with an offset")
        try:
            when = dt.datetime.fromisoformat(at)
        except ValueError:
            raise _bad(
                "invalid_consent", "consent.at must be an ISO 8601 time, e.g. 2026-12-05T10:00:00Z"
            ) from None
        if when.utcoffset() is None:
            raise _bad("invalid_consent", "consent.at needs an offset (…Z or …+03:00)")
        out["at"] = when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    page = _url(data.get("page"), "consent.page", code="invalid_consent")
    if page:
        out["page"] = page
    return out


def _utm(value: Any, name: str) -> dict[str, str]:
    """The marks the bridge keeps (:data:`UTM_KEYS`); others the widget may
    read from a page's address (``utm_id``) are left out, not refused."""
    data = _object(value, name, "invalid_context")
    out: dict[str, str] = {}
    for key in UTM_KEYS:
        text = _line(data.get(key), f"{name}.{key}", MAX_UTM, code="invalid_context")
        if text:
            out[key] = text
    return out


def _context(value: Any) -> dict[str, Any]:
    data = _object(value, "context", "invalid_context")
    out: dict[str, Any] = {}
    for key in ("page_url", "referrer"):
        url = _url(data.get(key), f"context.{key}")
        if url:
            out[key] = url
    title = _line(data.get("page_title"), "context.page_title", 500, code="invalid_context")
    if title:
        out["page_title"] = title
    language = _line(data.get("language"), "context.language", 35, code="invalid_context")
    if language and _LANGUAGE_RE.fullmatch(language):
        out["language"] = language
    timezone = _line(data.get("timezone"), "context.timezone", 64, code="invalid_context")
    if timezone and _TIMEZONE_RE.fullmatch(timezone):
        out["timezone"] = timezone
    for key in ("utm_first", "utm_last"):
        marks = _utm(data.get(key), f"context.{key}")
        if marks:
            out[key] = marks
    return out


def check_read(data: Mapping[str, Any]) -> tuple[int, tuple[str, ...]]:
    """A read receipt's ``read_up_to`` and the replies it names."""
    seq = data.get("read_up_to")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise _bad("invalid_seq", "read_up_to must be a whole number (a message's seq)")
    uids = data.get("read") or []
    if not isinstance(uids, list) or len(uids) > MAX_READ:
        raise _bad("invalid_read", f"read must be a list of at most {MAX_READ} message ids")
    if not all(isinstance(u, str) and _UID_RE.fullmatch(u) for u in uids):
        raise _bad("invalid_read", "read must hold message ids")
    return seq, tuple(uids)


def _visitor(data: Mapping[str, Any]) -> str:
    visitor = data.get("visitor")
    if not isinstance(visitor, str) or not VISITOR_RE.fullmatch(visitor):
        raise _bad("invalid_visitor", "visitor must be the visitor id of the token")
    return visitor


def delivery_key(data: Mapping[str, Any]) -> str:
    """The journal key: ``<visitor>:<client id>`` (a message the widget sends
    again is one message), ``<visitor>:read:<seq>`` for a read receipt."""
    visitor = _visitor(data)
    kind = data.get("type")
    if kind == "message":
        return f"{visitor}:{check_message(data).id}"
    if kind == "read":
        seq, _ = check_read(data)
        return f"{visitor}:read:{seq}"
    raise _bad("invalid_type", "type must be message or read")


#: (visitor, reference) -> the upload it names; raises PayloadError
Files = Callable[[str, str], FileRef]


def parse_body(
    data: Mapping[str, Any], received_at: dt.datetime, files: Files
) -> list[InboundEvent]:
    """One journaled body -> its events: a message, or the read receipts of
    the operator replies it names."""
    visitor = _visitor(data)
    kind = data.get("type")
    if kind == "read":
        seq, uids = check_read(data)
        if not uids:
            return [IgnoredEvent(KIND, f"{visitor}:read:{seq}", "read", raw=dict(data))]
        return [
            # one report per reply (the core records each once): reading
            # it again, from another tab, changes nothing
            OutboundStatus(
                channel_kind=KIND,
                external_id=f"read:{uid}",
                bridge_id=uid,
                status="read",
                raw=dict(data),
                channel_message_id=uid,
            )
            for uid in uids
        ]
    if kind != "message":
        raise _bad("invalid_type", "type must be message or read")
    checked = check_message(data)
    attachments = tuple(_attachment(files(visitor, ref)) for ref in checked.files)
    context = checked.context
    text = checked.text
    return [
        InboundMessage(
            channel_kind=KIND,
            external_id=f"{visitor}:{checked.id}",
            external_user_id=visitor,
            external_thread_id=visitor,
            kind=attachments[0].kind if attachments and not text.strip() else MessageKind.TEXT,
            sent_at=received_at,
            text=text,
            attachments=attachments,
            profile=SenderProfile(
                display_name=checked.profile.get("name"),
                phone=checked.profile.get("phone"),
                email=checked.profile.get("email"),
                # typed by the visitor into the pre-chat form: nothing proves
                # them (corpora FACTS §6: our own contract, no proof step),
                # so they only ever link for a rep, never merge two clients
                phone_verified=False,
                email_verified=False,
                language=context.get("language"),
                utm=_touches(context),
                page_url=context.get("page_url"),
                page_title=context.get("page_title"),
                referrer=context.get("referrer"),
                timezone=context.get("timezone"),
                consent=dict(checked.consent or {}),
            ),
            provider_message_id=checked.id,
            consent=True if checked.consent is not None else None,
            raw=dict(data),
        )
    ]


def _touches(context: Mapping[str, Any]) -> dict[str, str]:
    """The last touch under the plain keys (``utm_source``), the first as
    ``first_utm_source``: a mapping writes either (``{utm.first_gclid}``)."""
    out: dict[str, str] = dict(context.get("utm_last") or {})
    for key, value in (context.get("utm_first") or {}).items():
        out[f"first_{key}"] = value
    return out


def _attachment(ref: FileRef) -> Attachment:
    major = ref.mime_type.split("/", 1)[0]
    return Attachment(
        kind=MessageKind.PHOTO if major == "image" else MessageKind.DOCUMENT,
        file_ref=ref.file_ref,
        mime_type=ref.mime_type,
        file_name=ref.name,
        size=ref.size,
    )
