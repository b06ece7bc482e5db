"""What the bridge writes into a CRM's free-text fields (amoCRM notes and
tasks, Bitrix24 timeline comments, to-dos and tasks): the bridge marker,
hidden from people, and times in the tenant's own time zone.

A helper shared by the CRMs whose entries are free text (as ``phpform`` is
for the CRMs that post PHP forms), not an adapter: adapters never import each
other, and both import this.

**The bridge marker.** Notes and comments have no custom fields, so the only
way to find an entry again after an ambiguous write (a timeout after the CRM
committed) is an id in its text: the first 12 hex digits of sha-256 of the
bridge's message id (48 bits: unique within any lead), optionally with the
message's provider sequence and its own time in epoch milliseconds (the
order checks of ``bench`` read them; the CRM takes no creation time). Earlier
versions wrote it visibly as the last line, ``[bridge:ab97bd248d3f:2:1796445456000]``,
which a sales team reads as machine noise.

It is now written **hidden**: the same ``hash:sequence:ms`` text, each of its
characters (``0-9 a-f : -``) as three base-3 digits in zero-width characters
(U+200B ZERO WIDTH SPACE = 0, U+200C ZERO WIDTH NON-JOINER = 1, U+200D ZERO
WIDTH JOINER = 2), framed by U+2060 WORD JOINER on both sides. Why this
design:

* nothing visible: all four are Unicode default-ignorable format characters
  (no glyph, no width, no line break), the most widely kept ones (ZWJ and
  ZWNJ are needed by emoji sequences and by Persian and Indic scripts, so a
  CRM that keeps emoji keeps them);
* found again exactly: the frame makes a marker unambiguous in any text
  (a customer's own zero-width characters cannot shift it), and the decoded
  text is validated like the visible form;
* placed at the end of the first line (the bridge's own header, or a task's
  subject), or ahead of a text that is the customer's words only (a
  Bitrix24 to-do's description), never after the customer's words: a link
  at the end of a message stays a clean link, and a rep who copies the
  message does not copy the marker.

Parsing accepts both forms, so entries written by earlier versions are still
found. A short visible tag (``[bridge:<hash>]``) is the fallback, written
when the tenant sets ``marker_style: visible``.

**UNCONFIRMED: whether amoCRM and Bitrix24 keep zero-width characters** in
note / comment / task text. Neither vendor documents it (FACTS.md is silent;
Bitrix24's batch encoding itself relies on U+200B surviving, see
``bitrix24/batch.py``). The sandboxes can strip them on command (config
``strip_zero_width``). What the adapters do when a CRM strips them: a retry's
look-up that finds its own entry without a marker (same text once every
zero-width character is removed) logs a warning naming the fix
(``marker_style: visible``), writes the entry again with the visible tag, and
uses the visible tag for the rest of that adapter's writes. The entry may
then show twice; it is never lost.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "HIDDEN_CHARS",
    "Marker",
    "attach_marker",
    "find_markers",
    "has_marker",
    "local_time",
    "marker",
    "marker_hash",
    "strip_hidden",
    "strip_markers",
    "tenant_zone",
]

#: (hash, sequence, time) of one marker
Marker = tuple[str, int | None, dt.datetime | None]

_FRAME = "\u2060"  # WORD JOINER
_DIGITS = "\u200b\u200c\u200d"  # ZERO WIDTH SPACE / NON-JOINER / JOINER: base-3 digits
_ALPHABET = "0123456789abcdef:-"
#: every zero-width character a marker uses, and U+FEFF (a stripper takes it too)
HIDDEN_CHARS = frozenset(_FRAME + _DIGITS + "\ufeff")
_HIDDEN_RE = re.compile(f"{_FRAME}((?:[{_DIGITS}]{{3}}){{12,80}}){_FRAME}")
_VISIBLE_RE = re.compile(r"\[bridge:([0-9a-f]{12})(?::(-?\d*):(\d*))?\]")
_INNER_RE = re.compile(r"([0-9a-f]{12})(?::(-?\d*):(\d*))?")
_ENCODE = {
    ch: "".join(_DIGITS[(n // 3**power) % 3] for power in (2, 1, 0))
    for n, ch in enumerate(_ALPHABET)
}
_DECODE = {code: ch for ch, code in _ENCODE.items()}


def marker_hash(bridge_id: str) -> str:
    """The 12 hex digits that stand for ``bridge_id`` in a marker."""
    return hashlib.sha256(bridge_id.encode()).hexdigest()[:12]


def _inner(bridge_id: str, sequence: int | None, at: dt.datetime | None) -> str:
    if sequence is None and at is None:
        return marker_hash(bridge_id)
    seq = "" if sequence is None else str(sequence)
    ms = "" if at is None else str(int(_utc(at).timestamp() * 1000))
    return f"{marker_hash(bridge_id)}:{seq}:{ms}"


def marker(
    bridge_id: str,
    sequence: int | None = None,
    at: dt.datetime | None = None,
    *,
    visible: bool = False,
) -> str:
    """The marker of ``bridge_id``: hidden (zero-width characters), or with
    ``visible`` the short tag ``[bridge:<hash>]`` (no sequence, no time)."""
    if visible:
        return f"[bridge:{marker_hash(bridge_id)}]"
    return _FRAME + "".join(_ENCODE[ch] for ch in _inner(bridge_id, sequence, at)) + _FRAME


def attach_marker(text: str, tag: str, *, before: bool = False) -> str:
    """``text`` with ``tag`` at the end of its first line (the bridge's own
    header or subject), or with ``before`` ahead of it (a text that is the
    customer's words only): never right after the customer's words."""
    gap = " " if tag.startswith("[") and text else ""  # the visible tag stands apart
    if before:
        return f"{tag}{gap}{text}"
    head, newline, rest = text.partition("\n")
    return f"{head}{gap if head else ''}{tag}{newline}{rest}"


def _decode(digits: str) -> str | None:
    out = []
    for i in range(0, len(digits), 3):
        ch = _DECODE.get(digits[i : i + 3])
        if ch is None:
            return None
        out.append(ch)
    return "".join(out)


def _reveal(text: str) -> str:
    """``text`` with every valid hidden marker turned into its visible
    ``[bridge:…]`` form (anything else left as it is)."""
    if _FRAME not in text:
        return text
    out: list[str] = []
    i = 0
    while True:
        start = text.find(_FRAME, i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        found = _HIDDEN_RE.match(text, start)
        inner = _decode(found.group(1)) if found else None
        if found is None or inner is None or not _INNER_RE.fullmatch(inner):
            out.append(text[i : start + 1])
            i = start + 1
            continue
        out.append(f"{text[i:start]}[bridge:{inner}]")
        i = found.end()


def _parsed(match: re.Match[str]) -> Marker:
    try:  # a rep may type anything: a year out of range, more than 4300 digits
        seq = int(match.group(2)) if match.group(2) not in (None, "") else None
    except ValueError:
        seq = None
    ms = match.group(3)
    try:
        at = dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC) if ms else None
    except (ValueError, OverflowError, OSError):
        at = None
    return match.group(1), seq, at


def find_markers(text: object) -> list[Marker]:
    """Every marker in ``text`` (hidden or visible), in text order."""
    if not isinstance(text, str):
        return []
    return [_parsed(m) for m in _VISIBLE_RE.finditer(_reveal(text))]


def has_marker(text: object) -> bool:
    """True when ``text`` carries a bridge marker (an entry the bridge wrote)."""
    return bool(find_markers(text))


def strip_markers(text: str) -> str:
    """``text`` without its markers (hidden or visible) and the space or the
    line they took."""
    revealed = _reveal(text)
    tag = _VISIBLE_RE.pattern
    without = re.sub(rf"[ \t]{tag}|{tag}[ \t]?", "", revealed)
    return re.sub(r"\n\s*\Z", "", without) if without != revealed else revealed


def strip_hidden(text: str) -> str:
    """``text`` as a CRM that drops zero-width characters would keep it."""
    return "".join(ch for ch in text if ch not in HIDDEN_CHARS)


# -- times in the tenant's zone ------------------------------------------------------

_FORMATS = {"ru": "%d.%m.%Y %H:%M", "en": "%Y-%m-%d %H:%M"}


def tenant_zone(*names: object) -> ZoneInfo:
    """The first of ``names`` that is a known IANA zone; UTC otherwise."""
    for name in names:
        if isinstance(name, str) and name.strip():
            try:
                return ZoneInfo(name.strip())
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _zone_label(local: dt.datetime) -> str:
    """``MSK`` / ``CET`` where the zone has a name, else ``UTC+05`` / ``UTC-03:30``
    (tzdata names many zones only by their offset, e.g. ``+05``)."""
    name = local.tzname() or ""
    if name.isalpha():
        return name
    offset = local.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}" + (f":{rest:02d}" if rest else "")


def local_time(when: dt.datetime, zone: ZoneInfo, language: object = "en") -> str:
    """``01.03.2025 12:15 MSK`` (ru) / ``2025-03-01 09:15 UTC`` (en)."""
    local = _utc(when).astimezone(zone)
    pattern = _FORMATS.get(str(language or "en"), _FORMATS["en"])
    return f"{local.strftime(pattern)} {_zone_label(local)}"


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
