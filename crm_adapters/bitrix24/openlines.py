"""Open Lines (Bitrix24's contact centre chat) through a custom connector
(FACTS 2.8; docs ``api-reference/imopenlines/imconnector/**``,
``tutorials/openlines/example-connector.md``). App authorization only: from
an incoming webhook every ``imconnector.*`` answers ``403 WRONG_AUTH_TYPE``.

* **In** (customer -> operators): ``imconnector.send.messages`` with
  ``{CONNECTOR, LINE, MESSAGES: [{user, message, chat}]}``; several messages
  in one call (and, with timeline comments, in the same ``batch`` as the
  comments: see ``timeline``). ``user.id`` is the customer's id on the
  channel, ``user.name``/``last_name`` keep only letters, spaces, ``-`` and
  ``'`` and at most 25 characters (the method's rule); ``message.id`` is
  the bridge's message id, ``message.date`` the message's own time;
  ``chat.id`` is the bridge's conversation uid (it comes back as the reply's
  ``thread_key``). ``message.disable_crm = "Y"`` unless the tenant sets
  ``openlines_crm_tracker``: the bridge already files every message on its
  own contact and lead/deal, Bitrix24's tracker would open a second lead.
  ``chat.name`` is the channel's name (``entry.channel_title``). An edit
  with a known original (``entry.edit_of``) is sent as
  ``imconnector.update.messages`` of that message id.
* **Out** (operator -> customer): the ``OnImConnectorMessageAdd`` event
  (``webhooks``); its text is BB-code, converted by :func:`bb_to_text`.
* **Receipts**: ``imconnector.send.status.delivery`` with ``im{chat_id,
  message_id}`` from the event (our reply's ``external_id`` carries both),
  ``message.id`` as an **array**, ``chat.id``. Bitrix24 has no "failed"
  status: a failed reply is reported as a timeline comment on the
  conversation's lead/deal instead (when the bridge can find it).

**A retry** (``maybe_written``): the API has no way to read a connector's
messages back, and whether ``send.messages`` de-duplicates by
``message.id`` is not documented. The bridge therefore sends the chat
message first and the entry's timeline comment after it in one ``halt=1``
batch: a comment found by its marker proves the message went out. Without
timeline comments (``timeline: none``) a retry after an ambiguous send may
show the message twice in the operator's chat; it is never lost.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.errors import PermanentError
from bridge.model import TimelineEntry
from crm_adapters import attachments

from .batch import as_list, as_map
from .settings import DEFAULT_CONNECTOR, Bitrix24Settings

__all__ = [
    "DEFAULT_CONNECTOR",
    "bb_to_text",
    "connector_id",
    "message_item",
    "our_connectors",
    "person_name",
    "plain_text",
    "send_results",
    "wants_inbox",
]

NAME_LIMIT = 25
WORDS = {
    "en": {"customer": "Customer", "edited": "edited", "late": "delivered late"},
    "ru": {"customer": "Клиент", "edited": "изменено", "late": "доставлено с опозданием"},
}

# -- BB-code -> plain text ---------------------------------------------------------

#: "[b]Klaus Weber:[/b] [br]" — the operator signature (NEED_SIGNATURE)
_SIGNATURE = re.compile(
    r"\A\s*\[b\]\s*([^\[\]\n]{1,120}?)\s*:\s*\[/b\][ \t]*(?:\[br\]|\n)?[ \t]*", re.I
)
_BR = re.compile(r"\[br\s*/?\]", re.I)
_URL_NAMED = re.compile(r"\[url=([^\]]+)\](.*?)\[/url\]", re.I | re.S)
_URL_PLAIN = re.compile(r"\[url\](.*?)\[/url\]", re.I | re.S)
_QUOTE = re.compile(r"\[quote(?:=[^\]]*)?\]((?:(?!\[quote).)*?)\[/quote\]", re.I | re.S)
#: [user=5]Ann[/user], [chat=..]x[/chat], [send=..]x[/send], [put=..]x[/put]
_LABELLED = re.compile(
    r"\[(user|chat|send|put|context|call|dialog)=[^\]]*\](.*?)\[/\1\]", re.I | re.S
)
_PAIRED = re.compile(
    r"\[(b|i|u|s|code|color|size|font|left|right|center|justify|p)(?:=[^\]]*)?\](.*?)\[/\1\]",
    re.I | re.S,
)
_SINGLE = re.compile(r"\[(?:icon|img|timestamp|attach)(?:=[^\]]*)?(?:\s[^\]]*)?\]", re.I)
_IMG = re.compile(r"\[img(?:[^\]]*)\](.*?)\[/img\]", re.I | re.S)


def plain_text(text: str) -> str:
    """Bitrix24 IM BB-code -> text a customer's channel can show."""
    text = text.replace("\r\n", "\n")
    text = _BR.sub("\n", text)
    text = _URL_NAMED.sub(lambda m: _link(m.group(1), m.group(2)), text)
    text = _URL_PLAIN.sub(lambda m: m.group(1).strip(), text)
    text = _IMG.sub(lambda m: m.group(1).strip(), text)
    for _ in range(8):  # nested quotes, innermost first
        quoted = _QUOTE.sub(lambda m: _quote(m.group(1)), text)
        if quoted == text:
            break
        text = quoted
    for _ in range(8):  # nested formatting
        stripped = _LABELLED.sub(lambda m: m.group(2), _PAIRED.sub(lambda m: m.group(2), text))
        if stripped == text:
            break
        text = stripped
    text = _SINGLE.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip()


def _link(url: str, label: str) -> str:
    url, label = url.strip().strip("'\""), plain_text(label)
    return url if not label or label == url else f"{label} ({url})"


def _quote(body: str) -> str:
    lines = plain_text(body).split("\n")
    return "\n" + "\n".join(f"> {line}".rstrip() for line in lines) + "\n"


def bb_to_text(text: str, *, keep_signature: bool = False) -> tuple[str, str | None]:
    """(plain text, operator name). The signature line Bitrix24 prepends
    with ``NEED_SIGNATURE`` (``[b]Name:[/b] [br]``) is taken off and returned
    as the author's name; with ``keep_signature`` it stays as a plain
    ``Name: `` prefix."""
    author = None
    match = _SIGNATURE.match(text)
    if match:
        author = plain_text(match.group(1)).strip() or None
        text = text[match.end() :]
    body = plain_text(text)
    if keep_signature and author:
        body = f"{author}: {body}" if body else f"{author}:"
    return body, author


# -- customer -> Open Lines -----------------------------------------------------------


def wants_inbox(entry: TimelineEntry) -> bool:
    """The entry also goes to the Open Lines chat (the mapping's ``inbox``):
    a customer's message only. ``imconnector.send.messages`` posts as the
    external user (FACTS 2.8); the business's own message sent outside the
    bridge (a WhatsApp Business app echo) would read as the customer's, so
    it is a timeline comment instead (:func:`timeline.wants_note`)."""
    return bool(entry.inbox) and entry.direction == "in"


def connector_id(settings: Bitrix24Settings, channel_kind: str | None = None) -> str:
    """The connector a channel kind's messages go through (``setup()``
    registers one per kind: ``settings.connectors``)."""
    if channel_kind and settings.connectors.get(channel_kind):
        return str(settings.connectors[channel_kind])
    return settings.connector_id or DEFAULT_CONNECTOR


def our_connectors(settings: Bitrix24Settings) -> set[str]:
    """Every connector id of this tenant (a reply through another is not ours)."""
    out = {str(v) for v in settings.connectors.values()}
    out.add(connector_id(settings))
    return out


def person_name(value: str | None) -> str:
    """Letters, spaces, ``-`` and ``'`` only, at most 25 characters
    (``imconnector.send.messages``: "Numbers and other special characters
    are not allowed")."""
    kept = []
    for char in unicodedata.normalize("NFC", value or ""):
        if char.isalpha() or char in "-'":
            kept.append(char)
        elif char.isspace() or char in "._":
            kept.append(" ")
    name = " ".join("".join(kept).split())
    return name[:NAME_LIMIT].rstrip(" -'")


def entry_text(entry: TimelineEntry, *, words: Mapping[str, str]) -> str:
    """The message itself: text, "(edited)", "(delivered late)" (``late``:
    re-parsed from the ingest journal), attachment labels (never a file
    URL: a channel's file URL can carry its bot token)."""
    labels = " ".join(attachments.labels(entry))
    text = entry.text or ""
    if entry.is_edit:
        mark = f"({words['edited']})"
        text = f"{text} {mark}" if text else mark
    if entry.late:
        late = f"({words['late']})"
        text = f"{text} {late}" if text else late
    if labels:
        text = f"{text}\n{labels}" if text else labels
    return text or f"[{entry.kind.value.replace('_', ' ')}]"


def message_item(entry: TimelineEntry, settings: Bitrix24Settings) -> dict[str, Any]:
    """One element of ``MESSAGES`` (``imconnector.send.messages``, FACTS 2.8)."""
    words = WORDS.get(entry.language, WORDS["en"])
    first, _, last = (entry.sender_name or "").strip().partition(" ")
    user: dict[str, Any] = {
        "id": str(entry.sender_identifier or entry.conversation_uid),
        "name": person_name(first) or words["customer"],
    }
    if person_name(last):
        user["last_name"] = person_name(last)
    message: dict[str, Any] = {
        "id": entry.bridge_id,
        "date": int(_utc(entry.occurred_at).timestamp()),
        "text": entry_text(entry, words=words),
    }
    files = attachments.fetchable(entry)
    if files:
        # Bitrix24 downloads each url into the chat as a file ("The url link
        # must be accessible from Bitrix24", imconnector-send-messages.md)
        message["files"] = [{"url": a.url, "name": a.file_name or "file"} for a in files]
    if not settings.openlines_crm_tracker:
        message["disable_crm"] = "Y"
    chat: dict[str, Any] = {"id": entry.conversation_uid}
    if entry.channel_title:
        chat["name"] = entry.channel_title
    return {"user": user, "message": message, "chat": chat}


def edit_of(entry: TimelineEntry) -> str | None:
    """The bridge id of the message an edit changes, when known."""
    if not entry.is_edit:
        return None
    return entry.edit_of or None


def send_results(result: Any, entries: Sequence[TimelineEntry]) -> dict[str, str | None]:
    """bridge id -> None when Bitrix24 took the message, else its error text
    (``result.DATA.RESULT[i].SUCCESS`` / ``ERRORS``, in the order sent)."""
    if not isinstance(result, Mapping) or result.get("SUCCESS") is False and not result.get("DATA"):
        raise PermanentError("Bitrix24 did not accept the Open Lines messages")
    data = as_map(result.get("DATA"))
    rows = as_list(data.get("RESULT"))
    out: dict[str, str | None] = {}
    for index, entry in enumerate(entries):
        row = rows[index] if index < len(rows) and isinstance(rows[index], Mapping) else None
        if row is None:
            # no per-message answer: the call as a whole succeeded
            out[entry.bridge_id] = None if result.get("SUCCESS") else "no answer for the message"
        elif row.get("SUCCESS") is False:
            errors = row.get("ERRORS")
            text = "; ".join(str(e) for e in errors) if isinstance(errors, list) else ""
            out[entry.bridge_id] = text[:300] or "refused"
        else:
            out[entry.bridge_id] = None
    return out


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
