"""What the customer wrote this time: quoted history and signatures removed
from a reply's text (corpora FACTS §5 "Stripping quotes and signatures").

The references are GitHub's email_reply_parser (quoted blocks at the end,
``--`` signatures, "Sent from my …") and Mailgun talon (splitter lines:
attribution lines, "Original Message" separators, Outlook header blocks).
The patterns here are our own, written from the corpora:

* attribution lines, on one line or folded over up to three: "On … wrote:"
  and its translations (``a écrit``, ``schrieb``, ``escreveu``, ``skrev``,
  ``napisał``, ``kirjoitti``, ``írta``, ``написал``, ``пишет`` …), and the
  Russian webmail forms that end with the address (Gmail-ru
  ``ср, 30 апр. 2025 г. в 15:19, John Doe <doe@example.com>:``, mail.ru
  ``… от Bob <bob@example.com>:``, Yandex
  ``26.06.2014, 14:41, "Alexander L" <abc@example.com>:``);
* "-----Original Message-----" and its translations ("Исходное сообщение");
* Outlook header blocks (``From:/Sent:/To:/Subject:``, ``От:/Отправлено:/
  Кому:/Тема:``, ``Von:/Gesendet:``, ``De :/Envoyé :`` …);
* ``>``-quoted blocks at the end, or a single quoted block above a
  bottom-posted reply; interleaved (inline) replies keep their quotes;
* signatures: a ``--`` line, a mailing-list footer under a line of
  underscores, and "Sent from my iPhone" / "Отправлено с iPhone" / "Get
  Outlook for iOS" lines.

A forwarded message ("---------- Forwarded message ---------") is the
customer's content and is kept (talon does the same). Nothing is cut when
nothing but quotes would remain: the original text comes back instead.

Every pattern runs on one line (or a join of at most three) capped at
:data:`MAX_LINE` characters; none has nested quantifiers, so the 767 KB
and "pathological" corpora files take milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from channel_adapters.email.mime import html_to_text

__all__ = ["MAX_LINE", "Stripped", "strip_reply", "strip_reply_html"]

#: Lines longer than this are never taken for an attribution or a header.
MAX_LINE = 600
_MAX_JOIN = 3
_MAX_SIGNATURE_LINES = 15
_MAX_FOOTER_LINES = 8
_MAX_BLOCK_SPAN = 10


@dataclass(frozen=True, slots=True)
class Stripped:
    """The reply split in three; ``marker`` names what started the quote
    (``attribution``, ``header-block``, ``separator``, ``mobile-signature``,
    ``quote-prefix``) or is None when nothing was cut."""

    body: str
    quoted: str = ""
    signature: str = ""
    marker: str | None = None


# -- line patterns -------------------------------------------------------------

_INVISIBLE = re.compile(r"[\u200b-\u200f\u2060\ufeff\u00ad]")

# The verb that ends an attribution line, per language (talon quotations.py
# SPLITTER_PATTERNS, crisp lib/regex.ts and the corpora's own files).
_VERB = re.compile(
    r"(?:wrote|writes|a écrit|a ecrit|schrieb|escreveu|escribió|escribio|ha scritto|scrisse"
    r"|napisał(?:\(a\)|a)?|napisal|schreef|skrev(?: følgende)?|kirjoitti|írta|yazdı|napsal"
    r"|написал(?:\(а\)|а)?|пишет|написав|έγραψε|写道|寫道|が書きました)\s*[:：]\s*$",
    re.IGNORECASE,
)
# "… Name <addr>:" (Gmail-ru, mail.ru, Yandex, Gmail-de/no/da/sv/ja)
_ADDR_END = re.compile(r"[<(\[]\s*(?:mailto:)?[^\s<>()\[\]]+@[^\s<>()\[\]]+\s*[>)\]]+\s*[:：]\s*$")
# Zoho: "---- On Wed, 24 Feb 2021 … john@gmail.com wrote ----"
_DASHED_VERB = re.compile(r"\bwrote\s*-{2,}\s*$", re.IGNORECASE)
_DIGIT = re.compile(r"\d")
_ADDR_CLOSE = re.compile(r"^\s*>\s*[:：]\s*$")
# Words that open an attribution ("On …", "Am …", "Le …").
_OPENER = re.compile(
    r"^(?:-{2,}\s*)?(?:on|am|le|el|il|em|op|den|dnia|w dniu|dne|in data)\b", re.IGNORECASE
)
# How a folded attribution starts: "On …", "Am …", "Le …", a date, a
# weekday abbreviation before a number ("ср, 30 апр.", "tir. 18. apr.").
_HEADER_START = re.compile(
    r"^(?:-{2,}\s*)?(?:on|am|le|el|il|em|op|den|dnia|w dniu|dne|in data|\d|\w{2,4}\.?,? \d)",
    re.IGNORECASE,
)

_ORIGINAL = re.compile(
    r"^[-_=*\s]*[-_=*]{2,}\s*(?:original message|original-message|oprindelig (?:besked|meddelelse)"
    r"|message d'origine|ursprüngliche nachricht|originalnachricht|исходное сообщение"
    r"|оригинальное сообщение|původní zpráva|mensaje original|mensagem original"
    r"|messaggio originale|oorspronkelijk bericht|ursprungligt meddelande"
    r"|opprinnelig melding|alkuperäinen viesti|wiadomość oryginalna|eredeti üzenet)"
    r"\s*[-_=*]{2,}\s*$",
    re.IGNORECASE,
)
_FORWARD = re.compile(
    r"^\s*(?:[-_=*]{2,}\s*(?:forwarded message|пересылаемое сообщение|пересланное сообщение"
    r"|weitergeleitete nachricht|message transféré|mensaje reenviado|mensagem encaminhada"
    r"|messaggio inoltrato|doorgestuurd bericht|videresendt (?:meddelelse|besked)"
    r"|vidarebefordrat meddelande|przekazana wiadomość|välitetty viesti|továbbított üzenet)"
    r"\s*[-_=*]{2,}|(?:begin forwarded message|начало переадресованного сообщения"
    r"|début du message réexpédié)\s*:)\s*$",
    re.IGNORECASE,
)
_RULE = re.compile(r"^\s*(?:_{5,}|-{5,}|={5,})\s*$")
_UNDERSCORES = re.compile(r"^\s*_{5,}\s*$")
_SIG_DELIMITER = re.compile(r"^--\s*$")

_URL_TAIL = r"\s*(?:<[^<>\s]{1,300}>|\(\S{1,300}\))?\s*$"
_WORDS = r"[\w'’.\-]+(?: [\w'’.\-]+){0,4}"
# A whole line a mail client appends (never a sentence that merely contains
# "sent from": corpora crisp email_tricky_8, github email_sent_from_my_not_signature).
_MOBILE = re.compile(
    r"^\s*(?:sent from my " + _WORDS + r"|sent from (?:outlook|yahoo mail|mail for windows"
    r"|typeapp|aol|gmail|samsung|huawei|xiaomi|proton ?mail)\b[\w .'’-]{0,40}"
    r"|get outlook for (?:ios|android)|sent with sparrow|von meinem " + _WORDS + r" gesendet"
    r"|gesendet (?:von|mit) (?:meinem )?"
    + _WORDS
    + r"|envoyé (?:de|depuis|à partir de) "
    + _WORDS
    + r"|enviado (?:desde|do|de) (?:mi |meu |o meu )?"
    + _WORDS
    + r"|inviato da "
    + _WORDS
    + r"|verzonden (?:vanaf|met) "
    + _WORDS
    + r"|skickat från (?:min )?"
    + _WORDS
    + r"|sendt fra (?:min )?"
    + _WORDS
    + r"|wysłane z "
    + _WORDS
    + r"|lähetetty "
    + _WORDS
    + r"|отправлено (?:с|со|из) "
    + _WORDS
    + r"|надіслано з "
    + _WORDS
    + r")"
    + _URL_TAIL,
    re.IGNORECASE,
)

# Outlook-style header fields by role (talon, crisp, mail-parser-reply and
# the corpora: windows_mail's "От:/Отправлено:/Кому:", Yahoo-fr's "De :/À :").
_FIELDS = {
    "from": (
        "from", "von", "de", "fra", "från", "van", "od", "da", "lähettäjä", "feladó", "kimden",
        "от", "від", "expéditeur", "remitente", "mittente", "afzender", "avsändare", "发件人",
        "寄件者", "差出人",
    ),
    "date": (
        "sent", "date", "datum", "dato", "data", "fecha", "envoyé", "envoyé le", "enviado",
        "enviada", "enviado el", "gesendet", "verzonden", "skickat", "sendt", "wysłano",
        "lähetetty", "päivämäärä", "elküldve", "inviato", "отправлено", "дата", "надіслано",
        "发送时间", "日期", "送信日時", "日付",
    ),
    "to": (
        "to", "an", "à", "a", "para", "til", "till", "aan", "do", "vastaanottaja", "címzett",
        "kime", "кому", "cc", "kopie", "копия", "收件人", "宛先",
    ),
    "subject": (
        "subject", "betreff", "objet", "asunto", "assunto", "oggetto", "emne", "ämne",
        "onderwerp", "temat", "aihe", "tárgy", "konu", "тема", "主题", "主旨", "件名",
    ),
}  # fmt: skip
_FIELD_ROLE = {name: role for role, names in _FIELDS.items() for name in names}
_FIELD = re.compile(r"^\s*[*_]{0,2}\s*([^\W\d_][\w .'’-]{0,18}?)\s*[*_]{0,2}\s*[:：]", re.UNICODE)


def _norm(line: str) -> str:
    return _INVISIBLE.sub("", line).strip()


def _quoted(line: str) -> bool:
    # ">:" alone ends a folded "<addr\n>:" (corpora crisp email_norwegian_gmail.txt)
    return line.lstrip().startswith(">") and not _ADDR_CLOSE.match(line)


def _is_attribution(text: str, *, before_quote: bool) -> bool:
    """An attribution line: ends with a reply verb or with the quoted
    author's address, and carries a date, an address or a quote below."""
    text = text.strip().strip("*_ ")
    if len(text) > MAX_LINE or not text or text.startswith(">"):
        return False
    if text.startswith("--") and _DASHED_VERB.search(text):
        return True
    core = text.lstrip("-* ")
    if _VERB.search(core):
        return bool(_DIGIT.search(core) or "@" in core or before_quote)
    return bool(_ADDR_END.search(core) and _DIGIT.search(core))


def _field_role(line: str) -> str | None:
    found = _FIELD.match(line)
    if not found:
        return None
    return _FIELD_ROLE.get(" ".join(found.group(1).lower().split()))


# -- finding the cut ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cut:
    start: int  # first line of the quote
    end: int  # last line of the header / separator itself
    marker: str


def _next_nonblank(lines: list[str], index: int) -> int | None:
    for j in range(index, len(lines)):
        if lines[j].strip():
            return j
    return None


def _attribution_at(lines: list[str], i: int, *, nested: bool = False) -> int | None:
    """Index of the attribution's last line when one starts at line i."""
    first = _norm(lines[i])
    if not first or len(first) > MAX_LINE or _quoted(first):
        return None
    joined = first
    for k in range(_MAX_JOIN):
        end = i + k
        if k:
            nxt = _norm(lines[end]) if end < len(lines) else ""
            if not nxt or _quoted(nxt) or len(joined) + len(nxt) > MAX_LINE:
                return None
            joined = f"{joined} {nxt}"
        below = _next_nonblank(lines, end + 1)
        before_quote = below is not None and _quoted(lines[below])
        if _is_attribution(joined, before_quote=before_quote):
            return end
        if k == 0 and not (nested or _folded_start(lines, i, first)):
            return None
    return None


def _folded_start(lines: list[str], i: int, first: str) -> bool:
    """Whether an attribution folded over lines may start at line i: the
    line starts like one, and the next line does not (else it starts there:
    corpora mail_parser_reply multiline_on_de.txt "Am heutigen Tage")."""
    if not _HEADER_START.match(first):
        return False
    nxt = _norm(lines[i + 1]) if i + 1 < len(lines) else ""
    return not (_OPENER.match(nxt) and _attribution_at(lines, i + 1, nested=True) is not None)


def _header_block_at(lines: list[str], i: int) -> int | None:
    """Index of the last field line when an Outlook header block starts at
    line i: a From field with an address plus one more field, or three
    fields with a Subject. Continuation lines (a folded From) are allowed."""
    role = _field_role(_norm(lines[i]))
    if role is None:
        return None
    roles: set[str] = set()
    has_address = False
    end = i
    for j in range(i, min(len(lines), i + _MAX_BLOCK_SPAN)):
        line = _norm(lines[j])
        if not line or _quoted(lines[j]):
            break
        role = _field_role(line)
        if role is not None:
            roles.add(role)
            end = j
        elif j - end > 2:
            break
        if (role == "from" or (role is None and "from" in roles)) and (
            "@" in line or "mailto" in line
        ):
            has_address = True
    from_ok = "from" in roles and has_address and len(roles) >= 2
    if from_ok or (len(roles) >= 3 and "subject" in roles):
        return end
    return None


def _rule_above(lines: list[str], i: int) -> int:
    """The separator line (underscores, dashes, "Original Message") just
    above a header block, across blank lines; else i itself."""
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j >= 0 and (_RULE.match(lines[j]) or _ORIGINAL.match(_norm(lines[j]))):
        return j
    return i


def _cut_at(lines: list[str], i: int) -> _Cut | None:
    line = _norm(lines[i])
    if not line or len(line) > MAX_LINE or _quoted(line):
        return None
    if _ORIGINAL.match(line):
        return _Cut(i, i, "separator")
    if _MOBILE.match(line):
        return _Cut(i, i, "mobile-signature")
    end = _attribution_at(lines, i)
    if end is not None:
        return _Cut(i, end, "attribution")
    end = _header_block_at(lines, i)
    if end is not None:
        return _Cut(_rule_above(lines, i), end, "header-block")
    return None


def _find_cut(lines: list[str], start: int = 0) -> _Cut | None:
    """The first splitter line at or after ``start``; None when a forward
    marker comes first (a forward is the customer's content)."""
    for i in range(start, len(lines)):
        if _FORWARD.match(_norm(lines[i])):
            return None
        cut = _cut_at(lines, i)
        if cut is not None:
            return cut
    return None


# -- the trailing quote, inline and bottom-posted replies ------------------------


def _is_noise_from(lines: list[str], j: int) -> bool:
    """Lines from j on are a signature or footer, not more reply."""
    rest = [ln for ln in lines[j:] if ln.strip()]
    first = _norm(lines[j])
    if _SIG_DELIMITER.match(lines[j].rstrip()) or _MOBILE.match(first):
        return len(rest) <= _MAX_SIGNATURE_LINES
    if _UNDERSCORES.match(lines[j]):
        return len(rest) <= _MAX_FOOTER_LINES
    return False


def _inline_after(lines: list[str], end: int) -> bool:
    """A reply written under (or between) ``>``-quoted blocks: unquoted text
    follows a quoted block, with no further splitter after that text."""
    seen_quote = False
    for j in range(end + 1, len(lines)):
        if not lines[j].strip():
            continue
        if _quoted(lines[j]):
            seen_quote = True
            continue
        if not seen_quote or _is_noise_from(lines, j):
            return False
        return _find_cut(lines, j) is None
    return False


def _trailing_signature(lines: list[str]) -> int:
    """Start of a signature block at the very end (a ``--`` line, or a
    mailing-list footer under a line of underscores: corpora github
    email_1_1.txt), else len(lines). Nothing quoted may follow it."""
    size = len(lines)
    for j in range(max(0, size - _MAX_SIGNATURE_LINES - 1), size):
        if _quoted(lines[j]) or any(_quoted(ln) for ln in lines[j:]):
            continue
        if _SIG_DELIMITER.match(lines[j].rstrip()):
            return j
        tail = sum(1 for ln in lines[j + 1 :] if ln.strip())
        if _UNDERSCORES.match(lines[j]) and 0 < tail <= _MAX_FOOTER_LINES:
            return j
    return size


def _lenient_attribution(lines: list[str], end: int) -> int:
    """First line of an attribution (1-3 lines) ending at ``end``, right
    above a trailing quote; lenient: any line ending in ":" with a date or
    an address (a QP-mangled "w=\\nrote:" in corpora mail_parser_reply
    begins_with_signature.txt still qualifies)."""
    for k in range(_MAX_JOIN):
        start = end - k
        if start < 0 or not lines[start].strip() or _quoted(lines[start]):
            break
        joined = " ".join(_norm(ln) for ln in lines[start : end + 1])
        if len(joined) > MAX_LINE:
            break
        if joined.endswith((":", "：")) and (_DIGIT.search(joined) or "@" in joined):
            if _HEADER_START.match(joined) or _is_attribution(joined, before_quote=True):
                return start
    return end + 1


def _strip_trailing(lines: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(body, quoted, signature) with the ``>`` block at the end, the
    attribution above it and a signature under it taken off."""
    sig_at = _trailing_signature(lines)
    signature = lines[sig_at:]
    rest = lines[:sig_at]
    end = len(rest)
    while end and (not rest[end - 1].strip() or _quoted(rest[end - 1])):
        end -= 1
    if not any(_quoted(ln) for ln in rest[end:]):
        return rest, [], signature
    start = _lenient_attribution(rest, end - 1) if end else 0
    return rest[:start], rest[start:], signature


def _bottom_posted(lines: list[str]) -> tuple[list[str], list[str]] | None:
    """(quoted, reply) when the text is [attribution] + one quoted block +
    the reply under it (corpora talon standard_replies__thunderbird.eml)."""
    first = _next_nonblank(lines, 0)
    if first is None:
        return None
    i = first
    end = _attribution_at(lines, i)
    if end is not None:
        i = end + 1
    start = i
    while i < len(lines) and (not lines[i].strip() or _quoted(lines[i])):
        i += 1
    reply = lines[i:]
    if not any(_quoted(ln) for ln in lines[start:i]) or not any(ln.strip() for ln in reply):
        return None
    if any(_quoted(ln) for ln in reply):
        return None
    return lines[:i], reply


# -- signatures inside the body ---------------------------------------------------


def _split_signature(lines: list[str]) -> tuple[list[str], list[str]]:
    """Body lines and the signature under a ``--`` line or a mailing-list
    footer under a line of underscores (corpora github email_1_1.txt)."""
    at = _trailing_signature(lines)
    if not any(ln.strip() for ln in lines[:at]):
        return lines, []
    return lines[:at], lines[at:]


def _text(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n").rstrip()


# -- public API ---------------------------------------------------------------------


def strip_reply(text: str) -> Stripped:
    """Split a reply's plain text into what the customer wrote this time,
    the quoted history and the signature.

    Never returns an empty body for a text that has anything unquoted: when
    everything looks quoted, the whole text is the body.
    """
    if not text or not text.strip():
        return Stripped(body=(text or "").strip())
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lead, lines = _leading_block(lines)
    body, quoted, signature, marker = _split(lines)
    body, more_signature = _split_signature(body)
    signature = more_signature + signature
    if not any(ln.strip() for ln in body):
        return Stripped(body=text.strip())
    return Stripped(
        body=_text(body),
        quoted=_text(lead + quoted),
        signature=_text(signature),
        marker=marker,
    )


def _leading_block(lines: list[str]) -> tuple[list[str], list[str]]:
    """A header block at the very top, before any text (a pasted or
    forwarded header: corpora mail_parser_reply email_pl_1_1.txt), is not
    the customer's text: it is set aside and the rest is read."""
    first = _next_nonblank(lines, 0)
    if first is None:
        return [], lines
    end = _header_block_at(lines, first)
    if end is None or _next_nonblank(lines, end + 1) is None:
        return [], lines
    return lines[: end + 1], lines[end + 1 :]


def _split(lines: list[str]) -> tuple[list[str], list[str], list[str], str | None]:
    cut = _find_cut(lines)
    if cut is not None and cut.marker == "attribution" and _inline_after(lines, cut.end):
        cut = None
    if cut is not None and any(ln.strip() for ln in lines[: cut.start]):
        signature = [lines[cut.start]] if cut.marker == "mobile-signature" else []
        quoted = lines[cut.start + len(signature) :]
        return lines[: cut.start], quoted, signature, cut.marker
    body, quoted, signature = _strip_trailing(lines)
    bottom = _bottom_posted(body)
    if bottom is not None:
        return bottom[1], bottom[0] + quoted, signature, "quote-prefix"
    return body, quoted, signature, "quote-prefix" if quoted else None


def strip_reply_html(html: str) -> Stripped:
    """:func:`strip_reply` over an HTML body: ``<blockquote>`` becomes
    ``>``-quoted lines and ``<hr>`` a rule line, so Gmail, Thunderbird,
    Outlook, mail.ru and Yandex HTML replies split like their plain text
    (corpora talon html_replies__*)."""
    return strip_reply(html_to_text(html))
