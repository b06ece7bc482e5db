"""Outbound e-mail: our Message-IDs, reply subjects, the reply message and
the SMTP send (corpora FACTS §5, "IMAP in, SMTP out").

* :func:`make_message_id` / :func:`is_own_message_id` / :func:`own_bridge_id`:
  our ``Message-ID`` is derived from the outbound message's uuid, which is
  stored before the send, so it is both the idempotency key and the key a
  customer's ``In-Reply-To``/``References`` lead back to.
* :func:`reply_subject`: ``Re: <subject> [#T-1042]``, one ``Re:``, the
  ticket hook once (Zammad-style hook, FACTS §5 threading).
* :func:`build_reply`: the reply as an :class:`email.message.EmailMessage`
  (text/plain with a text/html alternative made from the text, attachments,
  ``In-Reply-To``/``References``, ``Reply-To`` with the plus address).
  Whatever the caller supplies is kept to one header line: a CR/LF in a
  subject or a display name becomes a space, in an address, a Message-ID or
  an extra header it is a ``ValueError`` (header injection).
* :class:`SmtpSender`: one SMTP session per send over implicit TLS (the
  default), STARTTLS (refused when the server does not offer it) or plain
  (only when chosen), with AUTH when a user is set.

Exactly once over SMTP: which failure is which
-----------------------------------------------
The transaction is driven command by command (``MAIL``, ``RCPT``, ``DATA``,
the content, the final reply), not with ``smtplib.SMTP.sendmail``, so the
phase a failure happened in is known. A server takes responsibility for a
message only with a 2xx reply to the end of the mail data (RFC 5321 §4.1.1.4
and §6.1); before the end-of-data indication ``<CRLF>.<CRLF>`` has been
sent it cannot have accepted anything::

    phase                    failure                       raised
    connect, greeting, EHLO  refused, timeout, reset       RetryableError (nothing sent)
                             certificate not trusted       PermanentError (nothing sent)
                             4xx / 5xx greeting            RetryableError / PermanentError
    STARTTLS                 not offered                   PermanentError (no clear-text fallback)
    AUTH                     535 (and any other 5xx)       AuthError
                             454 (temporary, RFC 4954)     RetryableError
    MAIL FROM, RCPT TO,      4xx                           RetryableError (nothing sent)
    the DATA command         5xx (every RCPT refused)      PermanentError, the server's reply
                             530 (auth required)           AuthError
                             connection lost, timeout      RetryableError (nothing sent)
    the content              connection lost, timeout      RetryableError (the end never left)
    end of data              2xx                           accepted: SendOutcome
    (the final reply)        4xx                           RetryableError (the server refused it)
                             5xx                           PermanentError
                             lost, timeout, garbled reply  AmbiguousError (it may be queued:
                                                           never resent blindly)

Every ``RetryableError`` raised before the final reply has
``nothing_written`` set. Some recipients refused while others were accepted
is not an error: the mail goes to the accepted ones and the refused are
listed in :attr:`SendOutcome.refused` (a retry would duplicate it to the
others). Error messages carry the server's reply text with any e-mail
address in it replaced by ``<address>``: they end up in logs, the database
and the CRM.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import ipaddress
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from copy import copy
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from email.utils import format_datetime, getaddresses
from typing import Any

from bridge.errors import AmbiguousError, AuthError, BridgeError, PermanentError, RetryableError

__all__ = [
    "AUTO_REPLY_HEADERS",
    "MAX_REFERENCES",
    "SECURITY",
    "OutgoingAttachment",
    "SendOutcome",
    "SmtpSender",
    "SmtpSettings",
    "build_reply",
    "is_own_message_id",
    "make_message_id",
    "message_ids",
    "own_bridge_id",
    "reply_subject",
    "text_to_html",
    "ticket_from_subject",
]

log = logging.getLogger(__name__)

#: how the SMTP connection is secured: implicit TLS (RFC 8314 §3, port 465),
#: STARTTLS (RFC 3207, port 587) or none (a local relay, chosen explicitly)
SECURITY = ("tls", "starttls", "plain")
_DEFAULT_PORTS = {"tls": 465, "starttls": 587, "plain": 25}

#: the headers of our automatic acknowledgements: RFC 3834 §5
#: ``Auto-Submitted: auto-replied`` (FACTS §5 auto-replies), and Microsoft's
#: ``X-Auto-Response-Suppress`` so Exchange sends no out-of-office back
AUTO_REPLY_HEADERS: Mapping[str, str] = {
    "Auto-Submitted": "auto-replied",
    "X-Auto-Response-Suppress": "All",
}

#: how many ids a reply's References keeps: past this, the ids after the
#: first go, oldest first (the Netnews rule: draft-ietf-usefor-article §6.10
#: "References", trim to 21 starting with the second, never the first); the
#: parent stays last, and Gmail threads on an earlier id in it (FACTS §5)
MAX_REFERENCES = 21
#: a Message-ID longer than this in a customer's References is dropped
_MAX_ID_LENGTH = 250


# -- the policy: RFC 5322 on the wire, threading headers never encoded ------------------


class _ReplyPolicy(EmailPolicy):
    """``email.policy.SMTP`` (CRLF) with a 7-bit body encoding (no reliance on
    the server's 8BITMIME: non-ASCII text goes quoted-printable or base64),
    and one fix: the stdlib folds ``References``/``In-Reply-To`` as
    unstructured text and turns an id longer than a line into an RFC 2047
    encoded-word, which no client matches any more (CPython gh-100991).
    Those headers are folded between ids only (RFC 5322 §3.6.4)."""

    def fold(self, name: str, value: Any) -> str:
        if name.lower() in _ID_HEADERS:
            return _fold_ids(name, str(value), self.linesep)
        return str(super().fold(name, value))

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() in _ID_HEADERS:
            return _fold_ids(name, str(value), self.linesep).encode("ascii")
        return bytes(super().fold_binary(name, value))


_ID_HEADERS = frozenset({"message-id", "in-reply-to", "references"})
POLICY = _ReplyPolicy(linesep="\r\n", cte_type="7bit")


def _fold_ids(name: str, value: str, linesep: str) -> str:
    lines: list[str] = []
    line = f"{name}:"
    for token in value.split():
        if len(line) + 1 + len(token) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line = f"{line} {token}"
    lines.append(line)
    return linesep.join(lines) + linesep


# -- Message-IDs -----------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z")
#: a msg-id as it appears in a header (RFC 5322 §3.6.4), leniently: real
#: mail has ids that are not addr-specs (FACTS §5, chatwoot/references.eml)
_ANGLED = re.compile(r"<([^<>\s]{1,250})>")


def _ascii_domain(domain: str) -> str:
    """``domain`` as ASCII (IDNA for an internationalised one), or ValueError."""
    domain = domain.strip().rstrip(".")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise ValueError(f"not a valid domain: {domain!r}") from exc
    if not _DOMAIN.match(ascii_domain):
        raise ValueError(f"not a valid domain: {domain!r}")
    return ascii_domain.lower()


def make_message_id(bridge_id: str, domain: str) -> str:
    """Our Message-ID for the outbound message ``bridge_id``:
    ``<bridge.{bridge_id}@{domain}>``. Deterministic, so a retried send
    carries the same id and a customer's reply to it leads back to it."""
    if not _TOKEN.match(bridge_id):
        raise ValueError("bridge_id must be letters, digits, '.', '_' or '-'")
    return f"<bridge.{bridge_id}@{_ascii_domain(domain)}>"


def own_bridge_id(value: str | None, domain: str) -> str | None:
    """The ``bridge_id`` in ``value`` when it is one of our Message-IDs for
    ``domain`` (with or without the angle brackets), else ``None``."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, host = text.rpartition("@")
    if not at or not local.startswith("bridge."):
        return None
    try:
        if host.lower().rstrip(".") != _ascii_domain(domain):
            return None
    except ValueError:
        return None
    token = local[len("bridge.") :]
    return token if _TOKEN.match(token) else None


def is_own_message_id(value: str | None, domain: str) -> bool:
    """True for a Message-ID :func:`make_message_id` made for ``domain``
    (our own echoes; a customer's reply to one of ours)."""
    return own_bridge_id(value, domain) is not None


def message_ids(value: str | Iterable[str] | None) -> list[str]:
    """The Message-IDs in a header value (``References``, ``In-Reply-To``)
    or a list of them, each as ``<...>``, in order, duplicates dropped.
    Lenient (real mail breaks RFC 5322 here, FACTS §5): an id without
    brackets is taken when it has an ``@``; anything with whitespace, a
    control or a non-ASCII character is dropped."""
    texts = [value] if isinstance(value, str) else list(value or ())
    found: list[str] = []
    for text in texts:
        text = str(text)
        ids = [f"<{m}>" for m in _ANGLED.findall(text)]
        if not ids and "<" not in text:
            ids = [f"<{t}>" for t in re.split(r"[\s,]+", text) if "@" in t]
        for candidate in ids:
            if candidate.isascii() and candidate.isprintable() and candidate not in found:
                found.append(candidate)
    return found


def _references(references: str | Iterable[str] | None, parent: str | None) -> list[str]:
    """The parent's References plus the parent (RFC 5322 §3.6.4), deduped,
    the parent last, capped at the root and the newest ids."""
    ids = [i for i in message_ids(references) if len(i) <= _MAX_ID_LENGTH]
    if parent:
        ids = [i for i in ids if i != parent] + [parent]
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    return ids


# -- subjects --------------------------------------------------------------------------

#: reply prefixes a client puts before a subject, repeated or counted
#: (``Re[2]:``): English, the German/Nordic ``AW:``/``SV:``, and the Russian
#: ``Ответ:``/``Отв:`` some clients write. Forward prefixes (``Fwd:``,
#: ``Пересл:``) stay: clients keep them in a reply (``Re: Fwd: x``).
_REPLY_PREFIX = re.compile(
    r"^(?:(?:re|aw|sv|ответ|отв)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*)+", re.IGNORECASE
)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_DEFAULT_SUBJECT = "(no subject)"


def _one_line(value: str) -> str:
    """Controls (CR, LF, tabs...) as spaces, runs of spaces as one."""
    return " ".join(_CONTROLS.sub(" ", value).split())


def reply_subject(
    subject: str | None,
    ticket: str | None,
    hook_format: str = "[#{ticket}]",
    *,
    default: str = _DEFAULT_SUBJECT,
) -> str:
    """The subject of our reply: ``Re: <subject> [#T-1042]``.

    Leading reply prefixes (``Re:``, ``RE:``, ``Re[2]:``, ``AW:``,
    ``Ответ:``...) collapse into one ``Re:`` (Gmail and Mail.app thread on
    ``Re: <unchanged subject>``, FACTS §5); the ticket hook is appended
    unless the subject already carries it; an empty subject becomes
    ``default``. The result is one line: CR/LF become spaces.
    """
    text = _one_line(subject or "")
    text = _REPLY_PREFIX.sub("", text).strip() or default
    if ticket:
        hook = _one_line(hook_format.format(ticket=_one_line(ticket)))
        if hook.lower() not in text.lower():
            text = f"{text} {hook}"
    return f"Re: {text}"


def ticket_from_subject(subject: str | None, hook_format: str = "[#{ticket}]") -> str | None:
    """The ticket named by a hook of ``hook_format`` in ``subject``
    (``"Re: x [#T-1042]"`` -> ``"T-1042"``), else ``None``."""
    before, marker, after = hook_format.partition("{ticket}")
    if not marker or not subject:
        return None
    pattern = re.escape(before) + r"([A-Za-z0-9][A-Za-z0-9_-]{0,63})" + re.escape(after)
    found = re.search(pattern, subject, re.IGNORECASE)
    return found.group(1) if found else None


# -- the text as HTML ------------------------------------------------------------------

#: http(s) links; trailing punctuation is the sentence's, not the link's
_URL = re.compile(r"https?://[^\s<>\"'\x00-\x1f]+", re.IGNORECASE)
_TRAILING = ".,;:!?…»\"')]}"


def _split_url(url: str) -> tuple[str, str]:
    """(link, trailing text): drop sentence punctuation, and a closing
    bracket that has no opening one in the link (``(see https://x/a)``)."""
    tail = ""
    while url and url[-1] in _TRAILING:
        closing = {")": "(", "]": "[", "}": "{"}.get(url[-1])
        if closing and url.count(closing) >= url.count(url[-1]):
            break
        url, tail = url[:-1], url[-1] + tail
    return url, tail


def _linked(line: str) -> str:
    parts: list[str] = []
    position = 0
    for match in _URL.finditer(line):
        url, tail = _split_url(match.group(0))
        parts.append(html.escape(line[position : match.start()]))
        if url.partition("://")[2]:
            href = html.escape(url, quote=True)
            parts.append(f'<a href="{href}">{html.escape(url)}</a>')
        else:
            parts.append(html.escape(url))
        parts.append(html.escape(tail))
        position = match.end()
    parts.append(html.escape(line[position:]))
    return "".join(parts)


def text_to_html(text: str, language: str | None = None) -> str:
    """An HTML document showing ``text``: every character escaped (no markup
    of the rep's text passes through), blank lines as paragraphs, line
    breaks as ``<br>``, http(s) URLs as links."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = [p for p in re.split(r"\n\s*\n", normalised) if p.strip()]
    body = "\n".join(
        "<p>" + "<br>\n".join(_linked(line) for line in p.strip("\n").split("\n")) + "</p>"
        for p in paragraphs
    )
    lang = f' lang="{html.escape(language, quote=True)}"' if language else ""
    return (
        f'<!DOCTYPE html>\n<html{lang}>\n<head><meta charset="utf-8"></head>\n'
        f"<body>\n{body}\n</body>\n</html>\n"
    )


# -- the reply message -----------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingAttachment:
    """A file attached to a reply."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)


_MIME_TYPE = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})/([A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})\Z"
)
#: RFC 5322 §2.2 field name: printable ASCII but the colon
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}\Z")
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*\Z")  # RFC 3282 / BCP 47
_MSG_ID = re.compile(r"<[!-;=?-~]{1,250}@[!-;=?-~]{1,250}>\Z")
#: headers build_reply writes itself: extra headers cannot replace them
_OWN_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "message-id",
        "in-reply-to",
        "references",
        "date",
        "content-language",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "sender",
        "return-path",
    }
)


#: a dot-atom local part with UTF-8 allowed (RFC 6532 §3.2): the stdlib's
#: parser refuses non-ASCII local parts (NonASCIILocalPartDefect)
_UTF8_LOCAL = re.compile(
    r"[^\s\x00-\x1f\x7f()<>\[\]:;@\\,\".]+(?:\.[^\s\x00-\x1f\x7f()<>\[\]:;@\\,\".]+)*\Z"
)


def _checked_address(value: str, what: str) -> str:
    """An addr-spec with an ASCII (IDNA) domain, or ValueError (a CR/LF or
    any other control or space in it is refused: header injection). A
    non-ASCII local part is kept: it needs SMTPUTF8 (RFC 6531) to be sent."""
    if not value or _CONTROLS.search(value) or any(c.isspace() for c in value):
        raise ValueError(f"{what}: not a single e-mail address")
    local, at, domain = value.rpartition("@")
    if not at or not local:
        raise ValueError(f"{what}: not an e-mail address")
    ascii_domain = _ascii_domain(domain)
    if not local.isascii():
        if not _UTF8_LOCAL.match(local):
            raise ValueError(f"{what}: not an e-mail address")
        return f"{local}@{ascii_domain}"
    try:
        parsed = Address(addr_spec=f"{local}@{ascii_domain}")
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise ValueError(f"{what}: not an e-mail address") from exc
    return str(parsed.addr_spec)


def _mailbox(address: str, name: str | None, what: str) -> Address:
    addr_spec = _checked_address(address, what)
    local, _, domain = addr_spec.rpartition("@")
    return Address(display_name=_one_line(name or ""), username=local, domain=domain)


def _checked_id(value: str, what: str) -> str:
    value = value.strip()
    if not _MSG_ID.match(value):
        raise ValueError(f"{what}: not a Message-ID <local@domain>")
    return value


def _checked_extra(name: str, value: str) -> tuple[str, str]:
    if not _FIELD_NAME.match(name) or name.lower() in _OWN_HEADERS:
        raise ValueError(f"extra header {name!r}: not a header build_reply lets through")
    if _CONTROLS.search(value.replace("\t", " ")):
        raise ValueError(f"extra header {name}: a control character (CR/LF) in its value")
    return name, value.strip()


def _attach(message: EmailMessage, attachment: OutgoingAttachment) -> None:
    kind = _MIME_TYPE.match(attachment.content_type.strip())
    maintype, subtype = (kind.group(1), kind.group(2)) if kind else ("application", "octet-stream")
    # the name only (no directories), on one line; RFC 2231 encodes non-ASCII
    name = _one_line(re.split(r"[\\/]", attachment.filename)[-1]) or "attachment"
    message.add_attachment(
        attachment.data, maintype=maintype.lower(), subtype=subtype.lower(), filename=name
    )


def build_reply(
    *,
    from_addr: str,
    from_name: str | None,
    to_addr: str,
    subject: str,
    text: str,
    message_id: str,
    to_name: str | None = None,
    cc: Sequence[str] = (),
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: str | Sequence[str] | None = None,
    language: str | None = None,
    attachments: Sequence[OutgoingAttachment] = (),
    extra_headers: Mapping[str, str] | None = None,
    date: dt.datetime | None = None,
) -> EmailMessage:
    """The reply to a customer as a MIME message ready for :class:`SmtpSender`.

    ``message_id`` is ours (:func:`make_message_id`); ``in_reply_to`` is the
    customer's last Message-ID and ``references`` their References (a header
    value or a list): the reply carries ``In-Reply-To`` and ``References``
    = theirs + that id, deduped, capped (:data:`MAX_REFERENCES`). Ids there
    that are malformed (the customer's mail is untrusted) are dropped.
    ``reply_to`` is the plus address the customer's answer should reach.
    The body is ``text`` as text/plain with a text/html alternative
    (:func:`text_to_html`), then ``attachments``. ``extra_headers`` add
    headers such as :data:`AUTO_REPLY_HEADERS`; they cannot replace one of
    the headers set here.

    Raises ``ValueError`` for an address, Message-ID, language tag or extra
    header that is malformed or carries a CR/LF; a CR/LF in ``subject`` or a
    display name becomes a space.
    """
    message = EmailMessage(policy=POLICY)
    message["From"] = _mailbox(from_addr, from_name, "from_addr")
    message["To"] = _mailbox(to_addr, to_name, "to_addr")
    if cc:
        message["Cc"] = tuple(_mailbox(a, None, "cc") for a in cc)
    if reply_to:
        message["Reply-To"] = _mailbox(reply_to, from_name, "reply_to")
    message["Subject"] = _one_line(subject) or _DEFAULT_SUBJECT
    message["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    message["Message-ID"] = _checked_id(message_id, "message_id")
    parent = next(iter(message_ids(in_reply_to)), None) if in_reply_to else None
    if parent:
        message["In-Reply-To"] = parent
    thread = _references(references, parent)
    if thread:
        message["References"] = " ".join(thread)
    if language and not _LANGUAGE.match(language):
        raise ValueError(f"language: not a language tag: {language!r}")
    for name, value in (extra_headers or {}).items():
        checked_name, checked_value = _checked_extra(name, value)
        message[checked_name] = checked_value
    message.set_content(text.replace("\r\n", "\n").replace("\r", "\n"))
    message.add_alternative(text_to_html(text, language), subtype="html")
    for attachment in attachments:
        _attach(message, attachment)
    for part in message.walk():
        if part is not message:
            del part["MIME-Version"]  # the stdlib adds one per part; it belongs on top only
    if language:
        # last: making the message multipart moves Content-* headers into a part
        message["Content-Language"] = language  # RFC 3282
    return message


# -- the SMTP sender -------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """Where and how replies are sent.

    ``port`` defaults by ``security`` (465 tls, 587 starttls, 25 plain).
    ``ssl_context`` replaces the system's trust store (a private CA; tests).
    Credentials never cross the network in clear: with ``security="plain"``
    a user is accepted only for a loopback host (a local relay).
    """

    host: str
    port: int | None = None
    security: str = "tls"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    from_addr: str
    from_name: str | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    #: the name given in EHLO (default: this host's FQDN, as smtplib does)
    helo_name: str | None = None

    def __post_init__(self) -> None:
        if self.security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}")
        if not self.host or _CONTROLS.search(self.host) or " " in self.host:
            raise ValueError("host: not a host name")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError("port: out of range")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.password and not self.user:
            raise ValueError("a password without a user")
        if self.user and self.security == "plain" and not _is_loopback(self.host):
            raise ValueError(
                "SMTP credentials over a plain connection: use security 'tls' or 'starttls' "
                "(plain with a login is allowed only to a loopback relay)"
            )
        _checked_address(self.from_addr, "from_addr")

    @property
    def effective_port(self) -> int:
        """The port connected to."""
        return self.port or _DEFAULT_PORTS[self.security]


@dataclass(frozen=True)
class SendOutcome:
    """What the server accepted."""

    #: the Message-ID header of the message sent
    message_id: str | None
    #: the envelope recipients the server accepted (RCPT TO 2xx)
    accepted: tuple[str, ...]
    #: recipients refused while others were accepted: address -> (code, reply)
    refused: Mapping[str, tuple[int, str]]
    #: the server's final reply ("250 2.0.0 Ok: queued as 4Xyz")
    reply: str


_ADDRESS_IN_TEXT = re.compile(r"<?[^\s<>@:;,\"']+@[^\s<>@:;,\"']+>?")


def _scrub(reply: bytes | str) -> str:
    """A server reply for an error message: decoded, one line, no address."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return _ADDRESS_IN_TEXT.sub("<address>", _one_line(text))[:300]


def _reply_error(phase: str, code: int, reply: bytes | str) -> BridgeError:
    """The exception for a refusal ``code`` in a phase before the end of
    data: nothing has been sent, so a temporary refusal is simply retried."""
    detail = f"SMTP {phase} refused: {code} {_scrub(reply)}".rstrip()
    error: BridgeError
    if code == 530 or (phase == "AUTH" and code >= 500):
        # 530 5.7.0 authentication required; 534/535/538 (RFC 4954 §6)
        error = AuthError(detail)
    elif 400 <= code < 500:
        error = RetryableError(detail)
        error.nothing_written = True
    elif 500 <= code < 600:
        error = PermanentError(detail)
    else:
        error = RetryableError(f"SMTP {phase}: unexpected reply {code} {_scrub(reply)}".rstrip())
        error.nothing_written = True
    error.vendor_code = str(code)
    return error


def _lost(phase: str, exc: BaseException, what: str = "nothing was sent") -> RetryableError:
    """Connection lost, refused or timed out before the end of data."""
    error = RetryableError(f"SMTP {phase}: {_describe(exc)} ({what})")
    error.nothing_written = True
    return error


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return "timed out"  # smtplib re-raises a timeout as SMTPServerDisconnected
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "connection lost"
    return f"{type(exc).__name__}"


@dataclass
class _Envelope:
    sender: str
    recipients: list[str]
    payload: bytes
    smtputf8: bool


def _header_recipients(message: Message) -> list[str]:
    found: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for header in message.get_all(name, []):
            addresses = getattr(header, "addresses", None)
            if addresses is None:  # a message built with the compat32 policy
                found.extend(a for _, a in getaddresses([str(header)]) if a)
            else:
                found.extend(a.addr_spec for a in addresses if a.addr_spec)
    return found


def _flatten(message: EmailMessage, utf8: bool) -> bytes:
    """The message as sent: no Bcc, CRLF line ends, dot-stuffed (RFC 5321
    §4.5.2), ending in the end-of-data indication ``<CRLF>.<CRLF>``."""
    visible = copy(message)
    del visible["Bcc"]
    buffer = io.BytesIO()
    policy = POLICY.clone(utf8=True) if utf8 else POLICY
    BytesGenerator(buffer, mangle_from_=False, policy=policy).flatten(visible, linesep="\r\n")
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", buffer.getvalue())
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class SmtpSender:
    """Sends a message over one SMTP session per call (see the module's
    table for what each failure raises)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def send(
        self,
        message: EmailMessage,
        *,
        mail_from: str | None = None,
        recipients: Sequence[str] | None = None,
    ) -> SendOutcome:
        """Send ``message`` to its To/Cc/Bcc (or ``recipients``), with the
        envelope sender ``mail_from`` (default: the settings' ``from_addr``).
        Returns what the server accepted; raises ``RetryableError``,
        ``PermanentError``, ``AuthError`` or ``AmbiguousError``."""
        try:
            sender = _checked_address(mail_from or self.settings.from_addr, "mail_from")
            rcpts = [
                _checked_address(r, "recipient")
                for r in (recipients if recipients is not None else _header_recipients(message))
            ]
        except ValueError as exc:
            raise PermanentError(f"SMTP envelope: {exc}") from exc
        rcpts = list(dict.fromkeys(rcpts))
        if not rcpts:
            raise PermanentError("SMTP envelope: the message has no recipients")
        smtputf8 = not all(a.isascii() for a in (sender, *rcpts))
        envelope = _Envelope(sender, rcpts, _flatten(message, smtputf8), smtputf8)
        smtp = self._connect()
        polite = False  # QUIT only between commands (see _close)
        try:
            self._prepare(smtp)
            outcome = self._transaction(smtp, envelope, message)
            polite = True
            return outcome
        except BridgeError:
            # raised on a server's reply (between commands), or after
            # smtplib closed the socket on a network failure
            polite = smtp.sock is not None
            raise
        finally:
            _close(smtp, polite)

    def check(self) -> None:
        """Connect, greet, secure and log in as :meth:`send` would, then
        QUIT: nothing is sent (the console's connection test). Raises like
        :meth:`send`."""
        smtp = self._connect()
        polite = False
        try:
            self._prepare(smtp)
            polite = True
        except BridgeError:
            polite = smtp.sock is not None
            raise
        finally:
            _close(smtp, polite)

    # -- connect, greet, secure, authenticate -----------------------------------------

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "tls":
                return smtplib.SMTP_SSL(
                    s.host,
                    s.effective_port,
                    local_hostname=s.helo_name,
                    timeout=s.timeout,
                    context=self._context(),
                )
            return smtplib.SMTP(
                s.host, s.effective_port, local_hostname=s.helo_name, timeout=s.timeout
            )
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(
                f"SMTP TLS: the server's certificate is not trusted ({exc.verify_message})"
            ) from exc
        except smtplib.SMTPConnectError as exc:
            raise _reply_error("greeting", exc.smtp_code, exc.smtp_error) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise _lost("connect", exc) from exc

    def _context(self) -> ssl.SSLContext:
        return self.settings.ssl_context or ssl.create_default_context()

    def _prepare(self, smtp: smtplib.SMTP) -> None:
        """EHLO; STARTTLS and EHLO again when chosen; AUTH when a user is set."""
        phase = "EHLO"
        try:
            smtp.ehlo_or_helo_if_needed()
            if self.settings.security == "starttls":
                phase = "STARTTLS"
                if not smtp.has_extn("starttls"):
                    # never fall back to clear text (RFC 3207 §4 leaves it
                    # to the client; a stripped STARTTLS is the MITM attack)
                    raise PermanentError(
                        "SMTP STARTTLS: the server does not offer STARTTLS; "
                        "refusing to send in clear text"
                    )
                smtp.starttls(context=self._context())
                phase = "EHLO"
                smtp.ehlo()
            if self.settings.user:
                phase = "AUTH"
                smtp.login(self.settings.user, self.settings.password or "")
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(
                f"SMTP TLS: the server's certificate is not trusted ({exc.verify_message})"
            ) from exc
        # smtplib.SMTPException subclasses OSError: the specific ones first
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentError(f"SMTP {phase}: the server does not offer it") from exc
        except smtplib.SMTPResponseException as exc:  # EHLO/HELO, STARTTLS and AUTH replies
            raise _reply_error(phase, exc.smtp_code, exc.smtp_error) from exc
        except smtplib.SMTPServerDisconnected as exc:
            raise _lost(phase, exc) from exc
        except smtplib.SMTPException as exc:  # "No suitable authentication method found."
            raise PermanentError(f"SMTP {phase}: {exc}") from exc
        except OSError as exc:  # reset, timeout, a TLS handshake failure
            raise _lost(phase, exc) from exc

    # -- the mail transaction -----------------------------------------------------------

    def _transaction(
        self, smtp: smtplib.SMTP, envelope: _Envelope, message: EmailMessage
    ) -> SendOutcome:
        accepted, refused = self._envelope(smtp, envelope)
        reply = self._data(smtp, envelope.payload)
        log.info(
            "smtp: message accepted for %d recipient(s), %d refused", len(accepted), len(refused)
        )
        message_id = message.get("Message-ID")
        return SendOutcome(
            message_id=str(message_id).strip() if message_id else None,
            accepted=tuple(accepted),
            refused=refused,
            reply=reply,
        )

    def _envelope(
        self, smtp: smtplib.SMTP, envelope: _Envelope
    ) -> tuple[list[str], dict[str, tuple[int, str]]]:
        """MAIL FROM and one RCPT TO per recipient; raises when none is accepted."""
        options: list[str] = []
        try:
            if envelope.smtputf8:
                if not smtp.has_extn("smtputf8"):
                    raise PermanentError(
                        "SMTP MAIL FROM: an address needs SMTPUTF8 (RFC 6531), "
                        "which the server does not offer"
                    )
                options.append("SMTPUTF8")
            if smtp.has_extn("size"):
                # RFC 1870: an oversized message is refused here, before DATA
                options.append(f"SIZE={len(envelope.payload)}")
            code, reply = smtp.mail(envelope.sender, options)
            if not 200 <= code < 300:
                raise _reply_error("MAIL FROM", code, reply)
            accepted: list[str] = []
            refused: dict[str, tuple[int, str]] = {}
            for recipient in envelope.recipients:
                code, reply = smtp.rcpt(recipient)
                if 200 <= code < 300:
                    accepted.append(recipient)
                else:
                    refused[recipient] = (code, _scrub(reply))
        except OSError as exc:  # smtplib.SMTPServerDisconnected included
            raise _lost("MAIL/RCPT", exc) from exc
        if not accepted:
            raise _all_refused(refused)
        if refused:
            log.warning(
                "smtp: %d of %d recipient(s) refused", len(refused), len(envelope.recipients)
            )
        return accepted, refused

    def _data(self, smtp: smtplib.SMTP, payload: bytes) -> str:
        """DATA, the content, and the final reply: the one place a failure
        may leave the message delivered (see the module's table)."""
        try:
            code, reply = smtp.docmd("DATA")
        except OSError as exc:  # smtplib.SMTPServerDisconnected included
            raise _lost("DATA", exc) from exc
        if code != 354:
            raise _reply_error("DATA", code, reply)
        try:
            smtp.send(payload)
        except OSError as exc:
            # smtplib.send is one sendall: when it fails, the last bytes (the
            # end-of-data <CRLF>.<CRLF>) never left, and a server delivers
            # nothing without them (RFC 5321 §4.1.1.4)
            raise _lost("content", exc, "the message was cut short: not delivered") from exc
        try:
            code, reply = smtp.getreply()
        except OSError as exc:  # lost, timed out, a garbled reply (SMTPException)
            # the whole message is with the server, its answer is not with
            # us: it may be queued (RFC 1047); a blind resend may duplicate it
            raise AmbiguousError(
                f"SMTP end of data: {_describe(exc)} after the message was sent; "
                "the server may have accepted it"
            ) from exc
        if 200 <= code < 300:
            return f"{code} {_scrub(reply)}"
        if 400 <= code < 600:
            # the server answered and refused: it took no responsibility
            # for the message (RFC 5321 §4.2.5 / §6.1)
            raise _reply_error("end of data", code, reply)
        raise AmbiguousError(f"SMTP end of data: unexpected reply {code} {_scrub(reply)}")


def _all_refused(refused: Mapping[str, tuple[int, str]]) -> BridgeError:
    """Every recipient refused: retry when one refusal was temporary."""
    replies = list(refused.values())
    temporary = [r for r in replies if 400 <= r[0] < 500]
    code, text = (temporary or replies)[0]
    return _reply_error("RCPT TO", code, text)


def _close(smtp: smtplib.SMTP, polite: bool) -> None:
    """QUIT when the session is between commands, else just close (a QUIT
    in the middle of the content would become part of the message)."""
    try:
        if polite and smtp.sock is not None:
            smtp.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        smtp.close()
