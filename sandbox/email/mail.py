"""Mail as the sandbox reads and writes it: the customer's mail built from
the control API's JSON form, a raw message checked before it is posted, a
summary of what the bridge sent, the webhook's signature.

The sandbox reads mail with the standard library only (``email`` with the
``default`` policy, which decodes RFC 2047 encoded words and the transfer
encodings, corpora FACTS §5 "Encodings"), never with the bridge's own
parser: the code under test does not check itself.
"""

from __future__ import annotations

import datetime as dt
import email
import hashlib
import hmac
import re
from collections.abc import Iterable
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.policy import SMTP
from email.policy import default as default_policy
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

from .state import plain_address

__all__ = [
    "MailError",
    "SHOWN_HEADERS",
    "compose",
    "header_recipients",
    "check_raw",
    "message_ids",
    "parse_sent",
    "sign",
    "summary",
]

#: the headers ``/_sent`` and ``/_deliveries`` show (threading, auto-reply marks)
SHOWN_HEADERS = (
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    "Date",
    "Content-Language",
)
#: a msg-id as RFC 5322 §3.6.4 writes it, the angle brackets optional here
_MSG_ID = re.compile(r"<?([^<>\s@]{1,250}@[^<>\s@]{1,250})>?")
#: a header field name (RFC 5322 §3.6.8: printable ASCII but the colon)
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")
#: a header field line opens the message (``Name: value``)
_FIRST_FIELD = re.compile(rb"[!-9;-~]+:")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
#: what the JSON form takes
FORM_KEYS = frozenset(
    {
        "from",
        "name",
        "subject",
        "text",
        "html",
        "in_reply_to",
        "references",
        "to",
        "message_id",
        "language",
        "headers",
        "account",
        "sign",
        "secret",
    }
)
#: headers the form sets itself (``headers`` may not override them)
_OWN = frozenset(
    {
        "from",
        "to",
        "bcc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-language",
    }
)


class MailError(ValueError):
    """A mail or form the sandbox cannot deliver; the message says why."""


def _one_line(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MailError(f"{what} must be a string")
    return _LINE_BREAKS.sub(" ", value).strip()


def _msg_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _MSG_ID.fullmatch(value.strip()):
        raise MailError(f"{what} must be a message id such as <abc@example.com>")
    found = _MSG_ID.fullmatch(value.strip())
    assert found is not None
    return f"<{found.group(1)}>"


def _references(value: Any, parent: str | None) -> list[str]:
    if value in (None, "", []):
        items: list[Any] = []
    elif isinstance(value, str):
        items = value.split()
    elif isinstance(value, list):
        items = value
    else:
        raise MailError("references must be a list of message ids (or one string)")
    refs = [_msg_id(item, "references") for item in items]
    if parent and parent not in refs:
        # RFC 5322 §3.6.4: the parent's References followed by the parent's id
        refs.append(parent)
    return refs


def _extra_headers(value: Any) -> list[tuple[str, str]]:
    if value in (None, {}):
        return []
    if not isinstance(value, dict):
        raise MailError('headers must be an object {"Name": "value"}')
    found = []
    for name, text in value.items():
        if not _FIELD_NAME.fullmatch(str(name)) or str(name).lower() in _OWN:
            raise MailError(f"headers: {name!r} is not a header field the form lets you set")
        if not isinstance(text, str) or _LINE_BREAKS.search(text):
            raise MailError(f"headers: the value of {name} must be one line of text")
        found.append((str(name), text))
    return found


def compose(form: dict[str, Any], to_addr: str, *, now: float) -> bytes:
    """The customer's mail from the JSON form, as a mail client writes it
    (RFC 5322: Message-ID, Date, From, To; CRLF line ends)::

        {"from": "anna@example.com", "name": "Anna", "subject": "Delivery",
         "text": "Do you deliver?", "in_reply_to": "<id>"?, "references": [...]?,
         "html": "<p>...</p>"?, "language": "en"?, "message_id": "<id>"?,
         "headers": {"Auto-Submitted": "auto-replied"}?}

    A subject or a text is required; line breaks in the name and subject
    become spaces; ``MailError`` says what is wrong otherwise."""
    unknown = set(form) - FORM_KEYS
    if unknown:
        raise MailError(f"unknown fields: {sorted(unknown)} (known: {sorted(FORM_KEYS)})")
    try:
        sender = plain_address(form.get("from"), "from")
    except ValueError as exc:
        raise MailError(str(exc)) from None
    name, subject = _one_line(form.get("name"), "name"), _one_line(form.get("subject"), "subject")
    text, html = form.get("text") or "", form.get("html") or ""
    if not isinstance(text, str) or not isinstance(html, str):
        raise MailError("text and html must be strings")
    if not (subject or text.strip() or html.strip()):
        raise MailError("write a subject or a text")
    parent = _msg_id(form["in_reply_to"], "in_reply_to") if form.get("in_reply_to") else None
    refs = _references(form.get("references"), parent)
    domain = sender.rpartition("@")[2]
    message_id = (
        _msg_id(form["message_id"], "message_id")
        if form.get("message_id")
        else make_msgid(domain=domain)
    )
    language = _one_line(form.get("language"), "language")

    mail = EmailMessage(policy=SMTP)
    mail["From"] = Address(display_name=name, addr_spec=sender) if name else sender
    mail["To"] = to_addr
    if subject:
        mail["Subject"] = subject
    mail["Date"] = format_datetime(dt.datetime.fromtimestamp(now, dt.UTC))
    mail["Message-ID"] = message_id
    if parent:
        mail["In-Reply-To"] = parent
        mail["References"] = " ".join(refs)
    elif refs:
        mail["References"] = " ".join(refs)
    extra = _extra_headers(form.get("headers"))
    mail.set_content(text if text.endswith("\n") or not text else text + "\n")
    if html:
        mail.add_alternative(html, subtype="html")
    # after the content: set_content clears every Content-* header
    if language:
        mail["Content-Language"] = language  # RFC 3282
    for header, value in extra:
        mail[header] = value
    return mail.as_bytes()


def check_raw(raw: bytes) -> Message:
    """The header block of a raw message posted as ``message/rfc822``;
    ``MailError`` when it is no RFC 5322 message (no header fields first,
    or no From)."""
    if not raw.strip():
        raise MailError("the body is empty: post a raw RFC 5322 message")
    if not _FIRST_FIELD.match(raw.lstrip(b"\r\n")[:1000]):
        raise MailError(
            "the body is not an RFC 5322 message: it must start with header "
            "fields (From: ..., Subject: ...)"
        )
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    headers = BytesHeaderParser(policy=default_policy).parsebytes(head)
    try:
        has_from = bool(str(headers.get("From") or "").strip())
    except (ValueError, TypeError, IndexError):
        has_from = False
    if not has_from:
        raise MailError("the message has no From header (RFC 5322 §3.6 requires one)")
    return headers


def header_recipients(headers: Message, names: Iterable[str] = ("To", "Cc")) -> list[str]:
    """The addresses in ``names`` headers, lower case, in order."""
    values: list[str] = []
    for name in names:
        for value in headers.get_all(name, []):
            try:
                values.append(str(value))
            except (ValueError, TypeError, IndexError):
                continue
    return [addr.lower() for _, addr in getaddresses(values) if "@" in addr]


def message_ids(value: str | None) -> list[str]:
    """The ``<...>`` ids in a Message-ID, In-Reply-To or References value."""
    return re.findall(r"<[^<>\s]+>", value or "")


def _header(message: Message, name: str) -> str | None:
    try:
        value = message.get(name)
        return None if value is None else " ".join(str(value).split())
    except (ValueError, TypeError, IndexError):  # a header the policy cannot parse
        raw = message.get_all(name)
        return None if not raw else " ".join(str(raw[0]).split())


def _part_text(message: Message, subtype: str) -> str | None:
    if not isinstance(message, EmailMessage):
        return None
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError):  # an unknown or lying charset
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    # the view's line ends are "\n" (the message's own are CRLF on the wire)
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def _attachments(message: Message) -> list[dict[str, Any]]:
    if not isinstance(message, EmailMessage):
        return []
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        found.append(
            {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "size": len(payload) if isinstance(payload, bytes) else 0,
            }
        )
    return found


def summary(message: Message) -> dict[str, Any]:
    """What ``/_sent`` and ``/_deliveries`` show of a message: the headers
    in :data:`SHOWN_HEADERS` (decoded, unfolded; None when absent), the
    References as a list, the text and HTML parts, the attachments."""
    headers = {name: _header(message, name) for name in SHOWN_HEADERS}
    return {
        "headers": headers,
        "references": message_ids(headers["References"]),
        "subject": headers["Subject"],
        "text": _part_text(message, "plain"),
        "html": _part_text(message, "html"),
        "attachments": _attachments(message),
        "to_addrs": header_recipients(message),
        "from_addr": next(iter(header_recipients(message, ("From",))), None),
    }


def parse_sent(raw: bytes, utf8: bool) -> Message:
    """A message as the SMTP server received it; an SMTPUTF8 message's
    headers are UTF-8 (RFC 6532), which ``message_from_bytes`` would read
    as ASCII."""
    if utf8:
        return email.message_from_string(
            raw.decode("utf-8", "surrogateescape"), policy=default_policy
        )
    return email.message_from_bytes(raw, policy=default_policy)


def sign(body: bytes, secret: str) -> str:
    """``X-Bridge-Signature``: ``sha256=`` and the hex HMAC-SHA256 of the
    body with the account's webhook secret (the e-mail adapter's ``verify``)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
