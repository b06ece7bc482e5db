"""Entity parsing for ``parse_mode`` (HTML, MarkdownV2, Markdown) and ``entities``.

The Bot API limits ``text`` to "1-4096 characters after entities parsing" and
captions to "0-1024" (api.json ``sendMessage.text``, ``sendPhoto.caption``), so
the sandbox parses the markup first, then measures. Entity offsets and lengths
are UTF-16 code units (api.json ``MessageEntity``). Whether the length limit is
counted in UTF-16 units too is UNCONFIRMED (FACTS.md 1 "Outbound"); the sandbox
counts UTF-16 units, the conservative choice (an astral emoji counts 2).

Error descriptions follow the Bot API server ("Bad Request: can't parse
entities: ..."): ``Unsupported start tag "x" at byte offset N``, ``Can't find
end tag corresponding to start tag "b"``, ``Character '.' is reserved and must
be escaped with the preceding '\\'``, ``Can't find end of the entity starting at
byte offset N``. The parsers cover the documented tags and markers, not every
corner of tdlib's implementation.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ApiError, bad_request
from .spec import utf16_len

__all__ = ["format_text", "auto_entities", "strip_and_shift"]

_HTML_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic",
    "u": "underline", "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "tg-spoiler": "spoiler", "span": "spoiler", "a": "text_link",
    "code": "code", "pre": "pre", "blockquote": "blockquote", "tg-emoji": "custom_emoji",
}
_HTML_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MDV2_NAMES = {
    "*": "Bold", "_": "Italic", "__": "Underline", "~": "Strikethrough", "||": "Spoiler",
    "`": "Code", "```": "Pre", "[": "TextUrl", ">": "BlockQuote",
}
_MDV2_TYPES = {
    "*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler",
    "`": "code", "```": "pre", "[": "text_link", ">": "blockquote",
}
_WHITESPACE = " \t\n\r"
_AUTO_PATTERNS = (
    ("url", re.compile(r"https?://[^\s<>\"]+[^\s<>\".,;:!?)\]]")),
    ("mention", re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{3,31}\b")),
    ("hashtag", re.compile(r"(?<![\w#])#[^\W\d_][\w]*")),
    ("bot_command", re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]{5,32})?\b")),
)


def _entity_error(what: str) -> ApiError:
    return bad_request(f"can't parse entities: {what}")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


class _Builder:
    """Accumulates output text and tracks its UTF-16 length."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.len16 = 0

    def add(self, chunk: str) -> None:
        self.parts.append(chunk)
        self.len16 += utf16_len(chunk)

    def text(self) -> str:
        return "".join(self.parts)


def _parse_html(src: str) -> tuple[str, list[dict[str, Any]]]:
    out = _Builder()
    stack: list[tuple[str, dict[str, Any], int]] = []
    entities: list[dict[str, Any]] = []
    i, n = 0, len(src)
    while i < n:
        char = src[i]
        if char == "&":
            end = src.find(";", i + 1, i + 12)
            decoded = _decode_html_entity(src[i + 1:end]) if end != -1 else None
            if decoded is not None:
                out.add(decoded)
                i = end + 1
                continue
            out.add("&")
            i += 1
            continue
        if char != "<":
            out.add(char)
            i += 1
            continue
        offset = _byte_offset(src, i)
        if src.startswith("</", i):
            end = src.find(">", i)
            if end == -1:
                raise _entity_error(f"Unclosed end tag at byte offset {offset}")
            name = src[i + 2:end].strip().lower()
            if not stack:
                raise _entity_error(f'Unexpected end tag at byte offset {offset}')
            tag, entity, start = stack.pop()
            if name != tag:
                raise _entity_error(f'Unmatched end tag at byte offset {offset}, '
                                    f'expected "</{tag}>", found "</{name}>"')
            _close_html(entity, start, out.len16, stack, entities)
            i = end + 1
            continue
        j = i + 1
        while j < n and (src[j].isalnum() or src[j] == "-"):
            j += 1
        name = src[i + 1:j].lower()
        if name not in _HTML_TAGS:
            raise _entity_error(f'Unsupported start tag "{name}" at byte offset {offset}')
        attrs, j = _html_attributes(src, j, offset)
        stack.append((name, _html_entity(name, attrs, offset), out.len16))
        i = j + 1
    if stack:
        raise _entity_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return out.text(), entities


def _decode_html_entity(name: str) -> str | None:
    if name in _HTML_ENTITIES:
        return _HTML_ENTITIES[name]
    try:
        if name.startswith("#x") or name.startswith("#X"):
            return chr(int(name[2:], 16))
        if name.startswith("#"):
            return chr(int(name[1:]))
    except (ValueError, OverflowError):
        return None
    return None


def _html_attributes(src: str, j: int, offset: int) -> tuple[dict[str, str], int]:
    attrs: dict[str, str] = {}
    n = len(src)
    while True:
        while j < n and src[j] in _WHITESPACE:
            j += 1
        if j >= n:
            raise _entity_error(f"Unclosed start tag at byte offset {offset}")
        if src[j] == ">":
            return attrs, j
        k = j
        while k < n and (src[k].isalnum() or src[k] in "-_"):
            k += 1
        if k == j:
            raise _entity_error(f"Expected equal sign in declaration of an attribute of "
                                f"the tag at byte offset {offset}")
        key = src[j:k].lower()
        value = ""
        if k < n and src[k] == "=":
            k += 1
            if k < n and src[k] in "\"'":
                close = src.find(src[k], k + 1)
                if close == -1:
                    raise _entity_error(f"Unclosed start tag at byte offset {offset}")
                value = src[k + 1:close]
                k = close + 1
            else:
                start = k
                while k < n and src[k] not in _WHITESPACE + ">":
                    k += 1
                value = src[start:k]
        attrs[key] = value.replace("&amp;", "&").replace("&quot;", '"')
        j = k


def _html_entity(name: str, attrs: dict[str, str], offset: int) -> dict[str, Any]:
    kind = _HTML_TAGS[name]
    entity: dict[str, Any] = {"type": kind}
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise _entity_error(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
    if name == "a":
        entity["url"] = attrs.get("href", "")
    if name == "code" and attrs.get("class", "").startswith("language-"):
        entity["language"] = attrs["class"][len("language-"):]
    if name == "blockquote" and "expandable" in attrs:
        entity["type"] = "expandable_blockquote"
    if name == "tg-emoji":
        entity["custom_emoji_id"] = attrs.get("emoji-id", "")
    return entity


def _close_html(entity: dict[str, Any], start: int, end: int,
                stack: list[tuple[str, dict[str, Any], int]],
                entities: list[dict[str, Any]]) -> None:
    # <pre><code class="language-x"> is one "pre" entity with "language".
    if entity["type"] == "code" and "language" in entity and stack and stack[-1][0] == "pre":
        stack[-1][1]["language"] = entity["language"]
        return
    if entity["type"] == "code":
        entity.pop("language", None)
    if entity["type"] == "text_link" and not entity.get("url"):
        return
    if end > start:
        entities.append({**entity, "offset": start, "length": end - start})


def _parse_markdown_v2(src: str) -> tuple[str, list[dict[str, Any]]]:
    out = _Builder()
    stack: list[tuple[str, dict[str, Any], int, int]] = []  # marker, entity, start16, byte
    entities: list[dict[str, Any]] = []
    i, n = 0, len(src)
    at_line_start = True
    while i < n:
        char = src[i]
        in_code = bool(stack) and stack[-1][0] in ("`", "```")
        if char == "\\" and i + 1 < n:
            out.add(src[i + 1])
            i += 2
            at_line_start = False
            continue
        if in_code:
            marker = stack[-1][0]
            if src.startswith(marker, i):
                _, entity, start, _ = stack.pop()
                _append(entities, entity, start, out.len16)
                i += len(marker)
            else:
                out.add(char)
                i += 1
            continue
        if char == "\n" and stack and stack[-1][0] == ">":
            _, entity, start, _ = stack.pop()
            _append(entities, entity, start, out.len16)
        if char == ">" and at_line_start:
            stack.append((">", {"type": "blockquote"}, out.len16, _byte_offset(src, i)))
            i += 1
            at_line_start = False
            continue
        at_line_start = char == "\n"
        found = _markdown_v2_marker(src, i)
        if found is None:
            if char in _MDV2_RESERVED:
                raise _entity_error(f"Character '{char}' is reserved and must be escaped "
                                    "with the preceding '\\'")
            out.add(char)
            i += 1
            continue
        i = _markdown_v2_apply(src, i, found, stack, entities, out)
    if stack:
        marker, _, _, byte = stack[-1]
        raise _entity_error(f"Can't find end of {_MDV2_NAMES[marker]} entity at byte offset {byte}")
    return out.text(), entities


def _markdown_v2_marker(src: str, i: int) -> str | None:
    for marker in ("```", "||", "__", "*", "_", "~", "`", "[", "]"):
        if src.startswith(marker, i):
            return marker
    return None


def _markdown_v2_url(src: str, i: int) -> tuple[str, int]:
    """The URL of ``[text](url)`` starting at the ``(``; ``\\)`` and ``\\\\`` are escapes."""
    chars: list[str] = []
    j = i + 1
    while j < len(src):
        if src[j] == "\\" and j + 1 < len(src):
            chars.append(src[j + 1])
            j += 2
            continue
        if src[j] == ")":
            return "".join(chars), j
        chars.append(src[j])
        j += 1
    raise _entity_error(f"Can't find end of a URL at byte offset {_byte_offset(src, i)}")


def _markdown_v2_apply(src: str, i: int, marker: str,
                       stack: list[tuple[str, dict[str, Any], int, int]],
                       entities: list[dict[str, Any]], out: _Builder) -> int:
    byte = _byte_offset(src, i)
    if marker == "]":
        if not stack or stack[-1][0] != "[":
            raise _entity_error("Character ']' is reserved and must be escaped with the "
                                "preceding '\\'")
        _, link, start, _ = stack.pop()
        i += 1
        if i < len(src) and src[i] == "(":
            url, end = _markdown_v2_url(src, i)
            link["url"] = url
            i = end + 1
            _append(entities, link, start, out.len16)
        return i
    if stack and stack[-1][0] == marker:
        _, opened, start, _ = stack.pop()
        _append(entities, opened, start, out.len16)
        return i + len(marker)
    entity: dict[str, Any] = {"type": _MDV2_TYPES[marker]}
    i += len(marker)
    if marker == "```":
        newline = src.find("\n", i)
        language = src[i:newline] if newline != -1 else ""
        if language and " " not in language and "`" not in language:
            entity["language"] = language
            i = newline + 1
        elif newline == i:
            i += 1
    stack.append((marker, entity, out.len16, byte))
    return i


def _parse_markdown(src: str) -> tuple[str, list[dict[str, Any]]]:
    """Legacy Markdown: ``*bold*``, ``_italic_``, ```` `code` ````, ```` ```pre``` ````, links."""
    out = _Builder()
    entities: list[dict[str, Any]] = []
    i, n = 0, len(src)
    while i < n:
        char = src[i]
        if char == "\\" and i + 1 < n and src[i + 1] in "_*`[":
            out.add(src[i + 1])
            i += 2
            continue
        if char not in "_*`[":
            out.add(char)
            i += 1
            continue
        byte = _byte_offset(src, i)
        missing = _entity_error(f"Can't find end of the entity starting at byte offset {byte}")
        if char == "[":
            close = src.find("]", i + 1)
            if close == -1 or not src.startswith("(", close + 1) or src.find(")", close) == -1:
                raise missing
            url_end = src.find(")", close)
            start = out.len16
            out.add(src[i + 1:close])
            _append(entities, {"type": "text_link", "url": src[close + 2:url_end]}, start,
                    out.len16)
            i = url_end + 1
            continue
        marker = "```" if src.startswith("```", i) else char
        close = src.find(marker, i + len(marker))
        if close == -1:
            raise missing
        inner = src[i + len(marker):close]
        entity: dict[str, Any] = {"type": {"*": "bold", "_": "italic", "`": "code",
                                           "```": "pre"}[marker]}
        if marker == "```" and "\n" in inner:
            first, rest = inner.split("\n", 1)
            if first and " " not in first:
                entity["language"], inner = first, rest
        start = out.len16
        out.add(inner)
        _append(entities, entity, start, out.len16)
        i = close + len(marker)
    return out.text(), entities


def _append(entities: list[dict[str, Any]], entity: dict[str, Any], start: int, end: int) -> None:
    if end > start:
        entities.append({**entity, "offset": start, "length": end - start})


def _check_given_entities(text: str, given: Any, allowed: set[str]) -> list[dict[str, Any]]:
    if not isinstance(given, list):
        return []
    total = utf16_len(text)
    result = []
    for item in given:
        if not isinstance(item, dict):
            raise bad_request("can't parse MessageEntity: expected an Object")
        kind, offset, length = item.get("type"), item.get("offset"), item.get("length")
        if not isinstance(kind, str) or kind not in allowed:
            raise bad_request("can't parse MessageEntity: Unsupported type specified")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 1:
            raise bad_request("can't parse MessageEntity: wrong offset or length specified")
        if offset + length <= total:
            result.append(dict(item))
    return result


def strip_and_shift(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Trim leading/trailing whitespace (Telegram trims messages) and move the entities."""
    stripped_left = text.lstrip(_WHITESPACE)
    shift = utf16_len(text) - utf16_len(stripped_left)
    result_text = stripped_left.rstrip(_WHITESPACE)
    total = utf16_len(result_text)
    shifted = []
    for entity in entities:
        start = max(0, entity["offset"] - shift)
        end = min(total, entity["offset"] + entity["length"] - shift)
        if end > start:
            shifted.append({**entity, "offset": start, "length": end - start})
    return result_text, shifted


def auto_entities(text: str, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the entities Telegram detects by itself (urls, mentions, hashtags, commands)."""
    taken = [(e["offset"], e["offset"] + e["length"]) for e in entities]
    found = list(entities)
    for kind, pattern in _AUTO_PATTERNS:
        for match in pattern.finditer(text):
            start = utf16_len(text[:match.start()])
            end = start + utf16_len(match.group(0))
            if any(s < end and start < e for s, e in taken):
                continue
            taken.append((start, end))
            found.append({"offset": start, "length": end - start, "type": kind})
    return found


def format_text(
    text: str,
    parse_mode: str | None,
    given_entities: Any,
    allowed_types: set[str],
) -> tuple[str, list[dict[str, Any]]]:
    """``(plain_text, entities)`` after parsing, trimming and auto-detection.

    ``allowed_types`` is the MessageEntity type list from api.json.
    """
    mode = (parse_mode or "").lower()
    if mode in ("", "none"):
        plain, entities = text, _check_given_entities(text, given_entities, allowed_types)
    elif mode == "html":
        plain, entities = _parse_html(text)
    elif mode == "markdownv2":
        plain, entities = _parse_markdown_v2(text)
    elif mode == "markdown":
        plain, entities = _parse_markdown(text)
    else:
        # Client.cpp get_formatted_text: Status::Error(400, "Unsupported parse_mode")
        raise bad_request("unsupported parse_mode")
    plain, entities = strip_and_shift(plain, entities)
    entities = auto_entities(plain, entities)
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    ordered = []
    for entity in entities:
        head = {"offset": entity["offset"], "length": entity["length"], "type": entity["type"]}
        head.update({k: v for k, v in entity.items() if k not in head})
        ordered.append(head)
    return plain, ordered
