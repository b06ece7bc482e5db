"""Raw RFC 5322 bytes to a clean, typed mail (corpora FACTS §5).

:func:`parse_mail` is pure: no database, no network. It never raises on
hostile or broken input except :class:`MailError` for bytes that carry no
header at all. What was odd about a mail is listed in
:attr:`ParsedMail.defects` as short codes (no personal data: safe to log).

* Headers: RFC 2047 encoded-words in any charset and raw 8-bit values are
  decoded with the same charset fallback as bodies; CR/LF and other control
  characters never survive into a field (header injection).
* Bodies: ``Content-Transfer-Encoding`` by the stdlib; the charset by
  :func:`decode_bytes` (declared charset, then UTF-8 / windows-1251 /
  KOI8-R / windows-1252 by a plausibility score, then ``errors="replace"``).
* HTML: :func:`sanitize_html` (nh3: no scripts, event handlers or
  ``javascript:`` URLs) and :func:`html_to_text` (stdlib ``html.parser``;
  ``<blockquote>`` becomes ``>``-quoted lines so quote stripping sees it).
* Hostile input: at most ``max_parts`` MIME parts are read (boundary count
  checked before the stdlib parser, which recurses per nesting level);
  attachments over ``max_attachment`` keep their size but not their bytes;
  archives are never unpacked.
"""

from __future__ import annotations

import binascii
import codecs
import datetime as dt
import email
import email.header
import email.parser
import email.policy
import email.utils
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.message import Message
from html.parser import HTMLParser
from types import MappingProxyType

import nh3

__all__ = [
    "KEPT_HEADERS",
    "AuthResults",
    "MailAttachment",
    "MailError",
    "ParsedMail",
    "ReportPart",
    "clean_text",
    "decode_bytes",
    "decode_header_value",
    "guess_language",
    "html_to_text",
    "parse_auth_results",
    "parse_mail",
    "sanitize_html",
]

#: Headers kept (lowercased) in :attr:`ParsedMail.headers` for classification.
KEPT_HEADERS = (
    "auto-submitted",
    "precedence",
    "x-autoreply",
    "x-autorespond",
    "x-auto-response-suppress",
    "x-apple-action",
    "x-failed-recipients",
    "x-loop",
    "return-path",
    "sender",
    "list-id",
    "list-unsubscribe",
    "list-post",
    "mailing-list",
    "x-mailing-list",
    "content-type",
    "authentication-results",
    "x-mailer",
)

_MAX_HEADER_VALUE = 2000
#: HTML read for the text and the sanitised copy: html5ever (nh3) and the
#: text builder are quadratic in nesting depth (1 MB of nested
#: <blockquote> took 11 s, 300 kB under a second); a longer HTML part is
#: cut there, its text ends early (the raw mail stays in the journal)
_MAX_HTML_CHARS = 300_000
_MAX_DEFECTS = 40
_MAX_DEPTH = 100  # MIME nesting levels read; also the boundary declarations allowed
_MAX_ID_LEN = 998  # RFC 5322 §2.1.1 line limit: an id longer than a line is junk
_MAX_IDS = 100

# Parser failures of the stdlib on hostile input. email's header parser and
# feedparser register defects for most damage, but some inputs still raise
# (RecursionError on deep nesting; IndexError/ValueError/TypeError/
# AttributeError/LookupError in _header_value_parser on mangled headers).
_PARSER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    LookupError,
    RecursionError,
    AssertionError,
)
_HEADER_ERRORS: tuple[type[BaseException], ...] = (HeaderParseError, *_PARSER_ERRORS)
_DATE_ERRORS: tuple[type[BaseException], ...] = (OverflowError, *_PARSER_ERRORS)
_SERIALISE_ERRORS: tuple[type[BaseException], ...] = (UnicodeError, *_PARSER_ERRORS)


class MailError(ValueError):
    """The bytes are not a mail at all (no header field)."""


@dataclass(frozen=True, slots=True)
class MailAttachment:
    """A file in the mail. ``content`` is None when it was over the size cap
    (``truncated``); ``size`` is the decoded size either way."""

    file_name: str | None
    mime_type: str
    size: int
    content: bytes | None
    truncated: bool = False
    inline: bool = False
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuthResults:
    """SPF / DKIM / DMARC verdicts of the receiving MTA (RFC 8601), read
    from the first (topmost) ``Authentication-Results`` header only: lower
    ones were written by other hops and prove nothing."""

    spf: str = "none"
    dkim: str = "none"
    dmarc: str = "none"
    authserv_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReportPart:
    """A machine-readable part of a report or bounce, as header blocks.

    ``kind`` is the part's content type: ``message/delivery-status`` (RFC
    3464: a per-message block, then one block per recipient),
    ``message/feedback-report`` (ARF, RFC 5965),
    ``message/disposition-notification`` (MDN, RFC 8098),
    ``text/rfc822-headers`` or ``message/rfc822`` (the original message's
    headers). Field names are lowercased; values decoded and capped.
    """

    kind: str
    blocks: tuple[Mapping[str, str], ...]


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """One mail, decoded. Every text field is free of CR/LF injection."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_name: str | None
    from_addr: str | None
    reply_to_addr: str | None
    to_addrs: tuple[str, ...]
    cc_addrs: tuple[str, ...]
    delivered_to: tuple[str, ...]
    date: dt.datetime | None
    text: str
    html: str | None
    attachments: tuple[MailAttachment, ...]
    headers: Mapping[str, str]
    auth: AuthResults
    language: str
    defects: tuple[str, ...]
    content_type: str = "text/plain"
    report_type: str | None = None
    reports: tuple[ReportPart, ...] = ()
    #: ``text`` came from the HTML part (no text/plain alternative)
    text_from_html: bool = False


# ---------------------------------------------------------------------------
# Charsets
# ---------------------------------------------------------------------------

# Labels seen in real mail that Python's codec registry lacks or maps to a
# narrower codec than the one mailers actually use (WHATWG Encoding Standard
# label table: ks_c_5601-1987 -> windows-949, gb2312 -> gbk/gb18030,
# iso-8859-1 -> windows-1252, iso-8859-8-i -> iso-8859-8).
_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-8-i": "iso8859-8",
    "windows-874": "cp874",
    "x-mac-cyrillic": "mac-cyrillic",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "iso-2022-jp": "iso2022_jp_2",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "cp-850": "cp850",
    "utf8": "utf-8",
}

# Single-byte codecs: any byte string decodes, so a wrong label is only
# visible in the result (the plausibility score below).
_SINGLE_BYTE = frozenset(
    {
        "ascii",
        "cp1250",
        "cp1251",
        "cp1252",
        "cp866",
        "iso8859-1",
        "iso8859-2",
        "iso8859-5",
        "iso8859-15",
        "koi8-r",
        "koi8-u",
        "mac-cyrillic",
        "latin-1",
    }
)
# Stateful 7-bit encodings: pure ASCII bytes still need the codec.
_SEVEN_BIT = frozenset({"utf-7", "iso2022_jp", "iso2022_jp_2", "iso2022_kr", "hz"})
# The fallback chain (FACTS §5 "Encodings": the order is our own choice).
_FALLBACKS = ("cp1251", "koi8-r", "cp1252")
_DECLARED_BONUS = 0.3
_SAMPLE = 65536

_FREQUENT_RU = frozenset("оеаинтсрвлкмдпуяыьгзбчй")
_PUNCT = frozenset("«»—–“”„‘’…№•·°€\u00a0")


def _codec(label: str | None) -> str | None:
    """Python codec name for a MIME charset label; None if unknown."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def _is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u04ff"


def _run_share(text: str, member: Iterable[bool]) -> float:
    """Share of member characters standing in runs of three or more."""
    total = in_runs = run = 0
    for flag in (*member, False):
        if flag:
            run += 1
            continue
        total += run
        if run >= 3:
            in_runs += run
        run = 0
    return in_runs / total if total else 0.0


def _quality(text: str) -> float:
    """How much a decoded text looks like real writing, 0..1.

    Only non-ASCII characters count (ASCII decodes alike in every candidate).
    Cyrillic text scores by its share of frequent lowercase Russian letters
    (KOI8-R read as windows-1251, or the reverse, swaps the case of every
    letter) times the share standing in whole words (Western text read as
    windows-1251 gives lone Cyrillic letters inside Latin words). Latin text
    scores by the share of accented letters that stand alone (Cyrillic read
    as Latin-1 gives whole words of accented letters: mojibake).
    """
    sample = [c for c in text[:_SAMPLE] if ord(c) > 127]
    if not sample:
        return 1.0
    cyr = [c for c in sample if _is_cyrillic(c)]
    latin = [c for c in sample if c.isalpha() and not _is_cyrillic(c)]
    other = len(sample) - len(cyr) - len(latin) - sum(1 for c in sample if c in _PUNCT)
    clean = 1.0 - other / len(sample)
    if not cyr and not latin:
        return clean * 0.5
    if len(cyr) >= len(latin):
        good = sum(1.0 if c in _FREQUENT_RU else 0.7 if c.islower() else 0.3 for c in cyr)
        words = _run_share(text, (_is_cyrillic(c) for c in text[:_SAMPLE]))
        return clean * (good / len(cyr)) * words
    words = _run_share(text, (ord(c) > 127 and c.isalpha() for c in text[:_SAMPLE]))
    return clean * 0.8 * (1.0 - words)


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_bytes(data: bytes, declared: str | None) -> tuple[str, str | None]:
    """Decode a body or header chunk; returns the text and a defect code
    (None when the declared charset was used as is).

    Order: a multi-byte declared charset that decodes strictly is trusted;
    then valid UTF-8 (a multi-byte UTF-8 sequence is never an accident);
    then the declared single-byte charset, windows-1251, KOI8-R and
    windows-1252 compete by :func:`_quality` (the declared one gets a
    bonus), with a replace-decode of the declared charset (or UTF-8) as the
    last candidate. Never raises.
    """
    codec = _codec(declared)
    if data.isascii() and codec not in _SEVEN_BIT:
        return data.decode("ascii"), None
    if codec is not None and codec not in _SINGLE_BYTE and codec != "utf-8":
        text = _strict(data, codec)
        if text is not None:
            return text, None
    text = _strict(data, "utf-8")
    if text is not None:
        mislabelled = codec not in (None, "utf-8", "ascii")
        return text, "charset-mislabelled" if mislabelled else _unknown(declared, codec)
    return _compete(data, codec, declared)


def _unknown(declared: str | None, codec: str | None) -> str | None:
    return "charset-unknown" if declared and codec is None else None


def _compete(data: bytes, codec: str | None, declared: str | None) -> tuple[str, str | None]:
    base = codec if codec not in (None, "ascii") else None
    names = [n for n in dict.fromkeys([base, *_FALLBACKS]) if n is not None]
    best: tuple[float, str, str] | None = None
    for name in names:
        text = _strict(data, name)
        if text is None:
            continue
        score = _quality(text) + (_DECLARED_BONUS if name == base else 0.0)
        if best is None or score > best[0]:
            best = (score, name, text)
    replaced = data.decode(base or "utf-8", errors="replace")
    score = _quality(replaced) + (_DECLARED_BONUS if base else 0.0)
    if best is None or score > best[0]:
        return replaced, "charset-replaced"
    if best[1] == base:
        return best[2], None
    return best[2], "charset-unknown" if declared and codec is None else "charset-fallback"


# ---------------------------------------------------------------------------
# Header values
# ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u2060\ufeff]+")
_SPACES = re.compile(r"\s+")


def clean_text(value: str) -> str:
    """One line: control characters (CR/LF included) become spaces,
    whitespace runs collapse, lone surrogates become U+FFFD."""
    value = _CONTROL.sub(" ", value)
    value = _SPACES.sub(" ", value).strip()
    return value.encode("utf-8", "replace").decode("utf-8")


def _unsurrogate(value: str) -> str:
    """Undo the stdlib's surrogateescape of raw 8-bit header bytes, decoding
    them with the charset fallback."""
    if not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    raw = bytearray()
    for ch in value:
        if "\udc80" <= ch <= "\udcff":
            raw.append(ord(ch) - 0xDC00)
        else:
            raw.extend(ch.encode("utf-8", "replace"))
    return decode_bytes(bytes(raw), None)[0]


def decode_header_value(value: str | None) -> str:
    """A header's raw value as one clean line: RFC 2047 encoded-words in
    any charset (unknown or lying labels go through :func:`decode_bytes`),
    raw 8-bit bytes, folding and control characters removed."""
    if not value:
        return ""
    value = value[: _MAX_HEADER_VALUE * 4]
    try:
        chunks = email.header.decode_header(value)
    except _HEADER_ERRORS:
        return clean_text(_unsurrogate(value))[:_MAX_HEADER_VALUE]
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(_unsurrogate(chunk))
        else:
            text = _unsurrogate(chunk.decode("ascii", "surrogateescape")) if not charset else None
            out.append(text if text is not None else decode_bytes(chunk, charset)[0])
    return clean_text("".join(out))[:_MAX_HEADER_VALUE]


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------

_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:", re.MULTILINE)
_ANGLE_ID = re.compile(r"<([^<>\s]{1,998})>")
_BARE_ID = re.compile(r"[^\s<>,;\"()]+")


def parse_mail(raw: bytes, *, max_attachment: int = 10_000_000, max_parts: int = 200) -> ParsedMail:
    """Parse raw RFC 5322 bytes into a :class:`ParsedMail`.

    Raises :class:`MailError` only when the bytes carry no header field at
    all; any other damage is repaired or skipped and named in ``defects``.
    """
    defects: list[str] = []
    raw = _prepare(raw, defects)
    raw = _limit_parts(raw, max_parts, defects)
    msg = _message(raw, defects)
    if not list(msg.raw_items()):
        raise MailError("not a mail: no header fields")
    walker = _Walker(max_attachment=max_attachment, max_parts=max_parts, defects=defects)
    walker.collect(msg)
    text, html, from_html = walker.body()
    from_name, from_addr = _first_address(msg, "from")
    headers = _kept_headers(msg)
    return ParsedMail(
        message_id=_message_id(_raw(msg, "message-id"), defects),
        in_reply_to=_ids(_raw_all(msg, "in-reply-to")),
        references=_ids(_raw_all(msg, "references")),
        subject=decode_header_value(_raw(msg, "subject")),
        from_name=from_name,
        from_addr=from_addr,
        reply_to_addr=_first_address(msg, "reply-to")[1],
        to_addrs=_addresses(msg, "to"),
        cc_addrs=_addresses(msg, "cc"),
        delivered_to=_delivered_to(msg),
        date=_date(_raw(msg, "date"), defects),
        text=text,
        html=html,
        attachments=tuple(walker.attachments),
        headers=MappingProxyType(headers),
        auth=parse_auth_results(headers.get("authentication-results")),
        language=guess_language(text),
        defects=_defects(msg, walker, defects),
        content_type=_content_type(msg),
        report_type=_report_type(msg),
        reports=tuple(walker.reports),
        text_from_html=from_html,
    )


def _prepare(raw: bytes, defects: list[str]) -> bytes:
    if raw.startswith(b"\xef\xbb\xbf"):
        # A UTF-8 BOM before the first header hides every header from the
        # parser (corpora mimekit/messages__feedback-report.txt).
        defects.append("bom-stripped")
        raw = raw[3:]
    if raw.startswith(b"From ") and b"\n" in raw[:1000]:
        # An mbox "From " envelope line (corpora sisimai not__rb-issue-368-bug)
        first = raw.index(b"\n") + 1
        if not _HEADER_LINE.match(raw[:first]):
            defects.append("mbox-from-line")
            raw = raw[first:]
    return raw


def _limit_parts(raw: bytes, max_parts: int, defects: list[str]) -> bytes:
    """Cut the mail before its (max_parts+1)-th boundary declaration.

    The stdlib's feedparser recurses once per nesting level and re-checks
    every open boundary on every line: 1,000 nested multiparts take seconds
    and end in RecursionError. Counting declarations first bounds both."""
    limit = min(max_parts, _MAX_DEPTH)
    for count, found in enumerate(_BOUNDARY.finditer(raw), start=1):
        if count > limit:
            defects.append("too-many-parts")
            line_start = raw.rfind(b"\n", 0, found.start()) + 1
            return raw[:line_start]
    return raw


def _message(raw: bytes, defects: list[str]) -> Message:
    try:
        return email.message_from_bytes(raw, policy=email.policy.default)
    except _PARSER_ERRORS:
        defects.append("parser-failed")
    try:
        return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    except _PARSER_ERRORS:
        return Message(policy=email.policy.default)


def _raw(msg: Message, name: str) -> str | None:
    for key, value in msg.raw_items():
        if key.lower() == name:
            return str(value)
    return None


def _raw_all(msg: Message, name: str) -> list[str]:
    return [str(v) for k, v in msg.raw_items() if k.lower() == name]


def _kept_headers(msg: Message) -> dict[str, str]:
    kept: dict[str, str] = {}
    for key, value in msg.raw_items():
        name = key.lower()
        if name in KEPT_HEADERS and name not in kept:
            kept[name] = decode_header_value(str(value))
    return kept


def _content_type(msg: Message) -> str:
    try:
        return msg.get_content_type()
    except _PARSER_ERRORS:
        return "text/plain"


def _report_type(msg: Message) -> str | None:
    try:
        value = msg.get_param("report-type")
    except _PARSER_ERRORS:
        return None
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = value[2]
    if not value:
        return None
    return clean_text(str(value)).lower() or None


def _message_id(value: str | None, defects: list[str]) -> str | None:
    if value is None:
        return None
    ids = _ids([value])
    if not ids:
        defects.append("message-id-invalid")
        return None
    return ids[0]


def _ids(values: Iterable[str]) -> tuple[str, ...]:
    """Message ids from In-Reply-To / References / Message-ID, leniently:
    ids that are not addr-spec (corpora chatwoot/references.eml) are kept,
    empty ones dropped (mikel_mail error_emails__empty_in_reply_to.eml),
    duplicates dropped (chatwoot/non_utf_encoded_mail.eml), and an id
    with a space inside its brackets is dropped (mikel_mail
    error_emails__multiple_references_with_one_invalid.eml)."""
    found: list[str] = []
    for value in values:
        value = clean_text(_unsurrogate(value))[: _MAX_ID_LEN * _MAX_IDS]
        if "<" in value:
            # an id with a space inside its brackets is junk: dropped
            found.extend(_ANGLE_ID.findall(value))
        else:
            found.extend(i for i in _BARE_ID.findall(value) if len(i) <= _MAX_ID_LEN)
    return tuple(dict.fromkeys(found))[:_MAX_IDS]


def _date(value: str | None, defects: list[str]) -> dt.datetime | None:
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(clean_text(value))
    except _DATE_ERRORS:
        defects.append("date-invalid")
        return None
    if when.tzinfo is None:
        # "-0000": UTC with no statement about the local zone (RFC 5322 §3.3)
        when = when.replace(tzinfo=dt.UTC)
    return when


# -- addresses ----------------------------------------------------------------

_ADDR = re.compile(r"^[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+$")


def _address_pairs(msg: Message, name: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of an address header, all its copies."""
    values = _raw_all(msg, name)
    if not values:
        return []
    pairs: list[tuple[str, str]] = []
    try:
        for header in msg.get_all(name) or []:
            for address in getattr(header, "addresses", ()):
                pairs.append((address.display_name, address.addr_spec))
    except _PARSER_ERRORS:
        pairs = []
    if not pairs:
        try:
            pairs = email.utils.getaddresses(values)
        except _PARSER_ERRORS:
            return []
    return pairs


def _clean_address(value: str) -> str | None:
    value = clean_text(_unsurrogate(value)).strip("<>").lower()
    return value if _ADDR.match(value) and len(value) <= 320 else None


def _first_address(msg: Message, name: str) -> tuple[str | None, str | None]:
    for display, address in _address_pairs(msg, name):
        addr = _clean_address(address)
        if addr:
            display_name = decode_header_value(display) if display else ""
            return display_name or None, addr
    return None, None


def _addresses(msg: Message, name: str) -> tuple[str, ...]:
    found = (_clean_address(a) for _, a in _address_pairs(msg, name))
    return tuple(dict.fromkeys(a for a in found if a))


def _delivered_to(msg: Message) -> tuple[str, ...]:
    found: list[str] = []
    for name in ("delivered-to", "x-original-to"):
        for value in _raw_all(msg, name):
            for _, address in email.utils.getaddresses([value]):
                addr = _clean_address(address)
                if addr:
                    found.append(addr)
    return tuple(dict.fromkeys(found))


# -- walking the MIME tree ----------------------------------------------------

_REPORT_KINDS = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/feedback-report",
        "message/disposition-notification",
        "message/global-disposition-notification",
        "text/rfc822-headers",
    }
)
_EMBEDDED = frozenset({"message/rfc822", "message/global", "message/news"})
_DELIMITER = re.compile(rb'^--([^\s"]{1,200}?)[ \t]*\r?$', re.MULTILINE)


class _Walker:
    """Collects text, HTML, attachments and report parts, depth-first in
    document order, with explicit part and depth limits."""

    def __init__(self, *, max_attachment: int, max_parts: int, defects: list[str]) -> None:
        self.max_attachment = max_attachment
        self.max_parts = max_parts
        self.defects = defects
        self.parts = 0
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[MailAttachment] = []
        self.reports: list[ReportPart] = []
        self.part_defects: list[str] = []

    def body(self) -> tuple[str, str | None, bool]:
        text = "\n\n".join(t.strip("\n") for t in self.texts if t.strip())
        html = self.htmls[0] if self.htmls else None
        clean = sanitize_html(html) if html is not None else None
        if text or html is None:
            return text, clean, False
        return html_to_text(html), clean, True

    def collect(self, part: Message, depth: int = 0) -> None:
        if self.parts >= self.max_parts:
            if "too-many-parts" not in self.defects:
                self.defects.append("too-many-parts")
            return
        if depth > _MAX_DEPTH:
            self.defects.append("nesting-too-deep")
            return
        self.parts += 1
        self.part_defects.extend(type(d).__name__ for d in getattr(part, "defects", ()))
        ctype = _content_type(part)
        if ctype.startswith("multipart/"):
            self._multipart(part, ctype, depth)
        elif ctype in _REPORT_KINDS:
            self._report(part, ctype)
        elif ctype in _EMBEDDED:
            self._embedded(part, ctype)
        else:
            self._leaf(part, ctype)

    def _multipart(self, part: Message, ctype: str, depth: int) -> None:
        children = _children(part)
        if not children:
            self._unsplit(part, ctype, depth)
        elif ctype == "multipart/alternative":
            self._alternative(children, depth)
        else:
            for child in children:
                self.collect(child, depth + 1)

    def _unsplit(self, part: Message, ctype: str, depth: int) -> None:
        """A multipart whose boundary the stdlib did not find keeps its body
        as one string. An unquoted boundary with "=" in it is the usual
        cause (corpora mikel_mail plain_emails__raw_email_bad_time.eml):
        take the first "--token" line as the boundary; else read the body
        as text (corpora flanker/false-multipart.eml)."""
        data = _payload_bytes(part)
        found = _DELIMITER.search(data)
        if found:
            head = b'Content-Type: %s; boundary="%s"\r\n\r\n' % (ctype.encode(), found.group(1))
            repaired = _message(head + data, self.defects)
            if _children(repaired):
                self.defects.append("boundary-repaired")
                self.collect(repaired, depth + 1)
                return
        self._leaf(part, "text/plain")

    def _alternative(self, children: list[Message], depth: int) -> None:
        """multipart/alternative: the last plain and the last HTML rendering
        (RFC 2046 §5.1.4: alternatives in increasing faithfulness)."""
        best_text: list[str] = []
        best_html: list[str] = []
        for child in children:
            sub = _Walker(
                max_attachment=self.max_attachment,
                max_parts=self.max_parts - self.parts,
                defects=self.defects,
            )
            sub.collect(child, depth + 1)
            self.parts += sub.parts
            self.part_defects.extend(sub.part_defects)
            if sub.texts:
                best_text = sub.texts
            if sub.htmls:
                best_html = sub.htmls
            self.attachments.extend(sub.attachments)
            self.reports.extend(sub.reports)
        self.texts.extend(best_text)
        self.htmls.extend(best_html)

    def _leaf(self, part: Message, ctype: str) -> None:
        disposition = _disposition(part)
        file_name = _file_name(part)
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and not file_name:
            content = _decoded_text(part, self.defects)
            (self.texts if ctype == "text/plain" else self.htmls).append(content)
            return
        self._attach(part, ctype, file_name, disposition)

    def _attach(self, part: Message, ctype: str, file_name: str | None, disposition: str) -> None:
        self._store(_payload_bytes(part), part, ctype, file_name, disposition)

    def _store(
        self, payload: bytes, part: Message, ctype: str, file_name: str | None, disposition: str
    ) -> None:
        size = len(payload)
        over = size > self.max_attachment
        if over:
            self.defects.append("attachment-truncated")
        self.attachments.append(
            MailAttachment(
                file_name=file_name,
                mime_type=ctype,
                size=size,
                content=None if over else payload,
                truncated=over,
                inline=disposition == "inline" or (disposition == "" and bool(part["content-id"])),
                content_id=_content_id(part),
            )
        )

    def _embedded(self, part: Message, ctype: str) -> None:
        """An attached mail: its headers are kept as a report part (a
        bounce's original message), its bytes as an attachment."""
        inner = _children(part)
        if not inner:
            self._attach(part, ctype, _file_name(part), _disposition(part))
            return
        self.reports.append(ReportPart("message/rfc822", (_fields(inner[0]),)))
        name = _file_name(part)
        if name is None:
            subject = decode_header_value(_raw(inner[0], "subject"))
            name = (subject[:100] or "message") + ".eml"
        self._store(_as_bytes(inner[0]), part, ctype, name, _disposition(part))

    def _report(self, part: Message, ctype: str) -> None:
        if ctype == "text/rfc822-headers":
            text = _decoded_text(part, self.defects)
            try:
                headers = email.parser.HeaderParser(policy=email.policy.default).parsestr(text)
            except _PARSER_ERRORS:
                return
            self.reports.append(ReportPart(ctype, (_fields(headers),)))
            return
        blocks = tuple(_block_fields(b) for b in _children(part))
        if not blocks:
            # a report part the parser left as text: read it as header blocks
            text = _decoded_text(part, self.defects)
            blocks = tuple(_fields_from_text(chunk) for chunk in re.split(r"\n\s*\n", text))
        kind = ctype.replace("/global-", "/")
        self.reports.append(ReportPart(kind, tuple(b for b in blocks if b)))


def _children(part: Message) -> list[Message]:
    try:
        payload = part.get_payload()
    except _PARSER_ERRORS:
        return []
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def _fields(block: Message) -> Mapping[str, str]:
    fields: dict[str, str] = {}
    for key, value in block.raw_items():
        name = key.lower()
        if name not in fields:
            fields[name] = decode_header_value(str(value))
    return MappingProxyType(fields)


def _block_fields(block: Message) -> Mapping[str, str]:
    """Fields of one report block; a block whose fields were base64-encoded
    (a "Content-Transfer-Encoding: base64" field in the block above it:
    corpora mimekit messages__bounce.txt) is decoded first."""
    fields = _fields(block)
    if fields:
        return fields
    try:
        payload = block.get_payload()
    except _PARSER_ERRORS:
        return fields
    if not isinstance(payload, str) or not payload.strip():
        return fields
    try:
        text = binascii.a2b_base64(payload.encode("ascii", "replace")).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        text = payload
    return _fields_from_text(text if ":" in text else payload)


def _fields_from_text(text: str) -> Mapping[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name and " " not in name.strip() and name.lower() not in fields:
            fields[name.strip().lower()] = clean_text(value)[:_MAX_HEADER_VALUE]
    return MappingProxyType(fields)


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except _PARSER_ERRORS:
        return ""


def _file_name(part: Message) -> str | None:
    """The file name (RFC 2231 and, non-standard but common, RFC 2047
    encoded), without directories or control characters."""
    try:
        name = part.get_filename()
    except _PARSER_ERRORS:
        name = None
    if not name:
        return None
    if "=?" in name:
        name = decode_header_value(name)
    name = clean_text(_unsurrogate(name))
    name = re.split(r"[\\/]", name)[-1].strip(". ")
    return name[:255] or None


def _content_id(part: Message) -> str | None:
    value = _raw(part, "content-id")
    if not value:
        return None
    return clean_text(value).strip("<> ")[:_MAX_ID_LEN] or None


def _payload_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except _PARSER_ERRORS:
        payload = None
    if isinstance(payload, bytes):
        return payload
    return _as_bytes(part)


def _as_bytes(part: Message) -> bytes:
    try:
        return part.as_bytes()
    except _SERIALISE_ERRORS:
        return b""


def _decoded_text(part: Message, defects: list[str]) -> str:
    data = _payload_bytes(part)
    try:
        charset = part.get_content_charset()
    except _PARSER_ERRORS:
        charset = None
    text, defect = decode_bytes(data, charset)
    if defect:
        defects.append(defect)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _defects(msg: Message, walker: _Walker, own: list[str]) -> tuple[str, ...]:
    found = [type(d).__name__ for d in getattr(msg, "defects", ())]
    found.extend(walker.part_defects)
    found.extend(own)
    return tuple(dict.fromkeys(found))[:_MAX_DEFECTS]


# ---------------------------------------------------------------------------
# Authentication-Results (RFC 8601)
# ---------------------------------------------------------------------------

_COMMENT = re.compile(r"\([^()]*\)")
_RESULT = re.compile(r"^\s*(spf|dkim|dmarc)\s*=\s*([a-z]+)", re.IGNORECASE)


def parse_auth_results(value: str | None) -> AuthResults:
    """SPF/DKIM/DMARC from one ``Authentication-Results`` value. DKIM is
    "pass" when any signature passed (a mail may carry several)."""
    if not value:
        return AuthResults()
    text = value[:8000]
    for _ in range(3):  # comments nest (RFC 5322 §3.2.2); three levels suffice
        text = _COMMENT.sub(" ", text)
    pieces = [p.strip() for p in text.split(";")]
    found: dict[str, str] = {}
    for piece in pieces[1:]:
        match = _RESULT.match(piece)
        if not match:
            continue
        method, result = match.group(1).lower(), match.group(2).lower()
        if method not in found or (method == "dkim" and result == "pass"):
            found[method] = result
    authserv = pieces[0].split()[0] if pieces and pieces[0].split() else None
    return AuthResults(
        spf=found.get("spf", "none"),
        dkim=found.get("dkim", "none"),
        dmarc=found.get("dmarc", "none"),
        authserv_id=authserv,
    )


# ---------------------------------------------------------------------------
# Language
# ---------------------------------------------------------------------------


def guess_language(text: str) -> str:
    """ "ru" when Cyrillic letters outnumber Latin ones, else "en"."""
    cyr = latin = 0
    for ch in text[:20000]:
        if _is_cyrillic(ch):
            cyr += 1
        elif ch.isascii() and ch.isalpha():
            latin += 1
    return "ru" if cyr > latin else "en"


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------

# Schemes a rep's browser may follow or load from a customer's mail: no
# javascript:, no data: (an HTML data: URL is a script carrier).
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid"}


def sanitize_html(html: str) -> str:
    """HTML safe to show to a rep: ammonia's allow-list (nh3) without
    scripts, styles, event handlers, forms or ``javascript:`` URLs."""
    return nh3.clean(
        html[:_MAX_HTML_CHARS],
        url_schemes=_URL_SCHEMES,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template"},
        strip_comments=True,
    )


_BLOCK = frozenset(
    {
        "address", "article", "aside", "center", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "header", "main", "nav", "ol",
        "section", "table", "tbody", "thead", "tfoot", "tr", "ul", "body", "html",
    }
)  # fmt: skip
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table"})
_SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "svg", "xml"})
_LINK_SCHEMES = ("http://", "https://", "mailto:", "tel:", "ftp://")
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2060\ufeff\u00ad]")
_HR_LINE = "_" * 32


class _TextBuilder(HTMLParser):
    """Block elements become line breaks, links keep their URL
    (``text <url>``), ``<blockquote>`` lines are prefixed with ``> ``,
    script/style/head text is dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.quote = 0
        self.skip = 0
        self.pre = 0
        self.links: list[tuple[str | None, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.skip = 0  # an unclosed <head> must not hide the body
        if tag in _SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        self._open(tag, dict(attrs))

    def _open(self, tag: str, attrs: dict[str, str | None]) -> None:
        if tag == "br":
            self.flush(force=True)
        elif tag == "hr":
            self.flush()
            self.lines.append(_HR_LINE)
        elif tag == "blockquote":
            self.paragraph()
            self.quote += 1
        elif tag == "li":
            self.flush()
            self.current.append("- ")
        elif tag in _PARAGRAPH:
            self.paragraph()
            self.pre += tag == "pre"
        elif tag in _BLOCK:
            self.flush()
        elif tag in ("td", "th"):
            self.current.append(" ")
        elif tag == "a":
            self.links.append((attrs.get("href"), []))
        elif tag == "img" and attrs.get("alt"):
            self.handle_data(f"[image: {attrs['alt']}]")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag == "blockquote":
            self.flush()
            self.quote = max(0, self.quote - 1)
            self.paragraph()
        elif tag in _PARAGRAPH:
            self.paragraph()
            self.pre = max(0, self.pre - (tag == "pre"))
        elif tag in _BLOCK or tag == "li":
            self.flush()
        elif tag == "a" and self.links:
            self._close_link(*self.links.pop())

    def _close_link(self, href: str | None, text: list[str]) -> None:
        href = (href or "").strip()
        if not href.lower().startswith(_LINK_SCHEMES):
            return
        shown = " ".join("".join(text).split())
        target = href[7:] if href.lower().startswith("mailto:") else href
        if target and target not in shown:
            self.current.append(f" <{target}>")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        for link in self.links:
            link[1].append(data)
        if not self.pre:
            self.current.append(data)
            return
        first, *rest = data.split("\n")
        self.current.append(first)
        for line in rest:
            self.flush(force=True)
            self.current.append(line)

    def flush(self, *, force: bool = False) -> None:
        raw = "".join(self.current)
        line = raw.rstrip() if self.pre else " ".join(raw.split())
        self.current = []
        if line or force:
            self.lines.append("> " * self.quote + line if line else ">" * self.quote)

    def paragraph(self) -> None:
        """A blank line (quoted at the current depth) unless one is there."""
        self.flush()
        if not self.lines:
            return
        if self.lines[-1].strip("> "):
            self.lines.append(">" * self.quote)
        else:  # a blank line left by a deeper quote takes this depth
            self.lines[-1] = ">" * self.quote

    def text(self) -> str:
        self.flush()
        out = "\n".join(self.lines)
        out = _INVISIBLE.sub("", out).replace("\u00a0", " ")
        out = re.sub(r"[ \t]+\n", "\n", out)
        out = re.sub(r"\n(?:>*\n){2,}", "\n\n", out)
        return unicodedata.normalize("NFC", out).strip("\n")


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body (see :class:`_TextBuilder`)."""
    builder = _TextBuilder()
    try:
        builder.feed(html[:_MAX_HTML_CHARS])
        builder.close()
    except _PARSER_ERRORS:
        return clean_text(re.sub(r"<[^>]{0,2000}>", " ", html[:_MAX_HTML_CHARS]))
    return builder.text()
