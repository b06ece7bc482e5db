"""A rep's reply -> the Telegram messages that carry it, in sending order.

``sendMessage.text`` is "1-4096 characters after entities parsing" and
entity offsets count UTF-16 code units; whether the 4096 does too is
unconfirmed, so we split on UTF-16 length (FACTS §1). Captions of
``sendPhoto`` / ``sendDocument`` take 0-1024.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import AmbiguousError, PermanentError
from bridge.model import MessageKind, OutboundMessage

__all__ = [
    "CALLBACK_DATA_BYTES",
    "CAPTION_LIMIT",
    "MAX_BUTTONS",
    "ROW_BUTTONS",
    "TEXT_LIMIT",
    "PartialSendError",
    "inline_keyboard",
    "plan",
    "split_utf16",
    "utf16_len",
]

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
#: InlineKeyboardButton.callback_data: "1-64 bytes" (api.json)
CALLBACK_DATA_BYTES = 64
#: buttons per inline keyboard and per row. The Bot API does not document
#: them; 100 and 8 are tginfo/Telegram-Limits#228 (third-party), and a
#: bigger markup is refused with "reply markup is too long"
#: (rubenlagus/TelegramBots#218, eternnoir/pyTelegramBotAPI#511)
MAX_BUTTONS = 100
ROW_BUTTONS = 8
#: labels this short (the 1-5 rating) share rows; longer ones get a row each
SHORT_LABEL = 3

#: attachment kind -> (method, file field); anything else goes as a document
SEND_METHODS: dict[MessageKind, tuple[str, str]] = {
    MessageKind.PHOTO: ("sendPhoto", "photo"),
    MessageKind.DOCUMENT: ("sendDocument", "document"),
}


class PartialSendError(AmbiguousError):
    """A later part of a split reply failed after earlier parts were sent.

    ``sent_ids`` are the Telegram message ids already delivered, in order:
    resending the whole reply would duplicate them. ``retry_after`` and
    ``status`` come from the failed part.
    """

    def __init__(
        self,
        message: str,
        *,
        sent_ids: tuple[str, ...],
        new_thread_id: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, status=status)
        self.sent_ids = sent_ids
        self.new_thread_id = new_thread_id


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def split_utf16(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 code units.

    Each cut goes after the last paragraph break, else line break, else
    space in the second half of the window, else hard at the limit. Python
    strings hold code points, so a surrogate pair (an emoji) is never cut.
    ``"".join(parts) == text``, except that whitespace-only parts are dropped
    (Telegram rejects an empty text).
    """
    parts: list[str] = []
    rest = text
    while rest:
        if utf16_len(rest) <= limit:
            parts.append(rest)
            break
        units = end = 0
        for end, ch in enumerate(rest):  # noqa: B007 (end is read after the loop)
            units += 2 if ord(ch) > 0xFFFF else 1
            if units > limit:
                break
        window = rest[: max(end, 1)]
        cut = len(window)
        for sep in ("\n\n", "\n", " "):
            pos = window.rfind(sep)
            if pos >= len(window) // 2:
                cut = pos + len(sep)
                break
        parts.append(rest[:cut])
        rest = rest[cut:]
    return [p for p in parts if p.strip()]


def plan(message: OutboundMessage) -> list[tuple[str, dict[str, Any]]]:
    """``(method, params)`` per Telegram message, without ``chat_id``.

    Text that fits a caption rides on the first attachment; longer text goes
    first as its own message(s). ``reply_to`` goes on the first message,
    the buttons' keyboard (:func:`inline_keyboard`) on the last.
    """
    files: list[tuple[str, str, str]] = []
    for att in message.attachments:
        ref = att.file_ref or att.url  # a file_id needs no re-upload
        if not ref:
            raise PermanentError("attachment has neither file_ref nor url")
        method, field = SEND_METHODS.get(att.kind, SEND_METHODS[MessageKind.DOCUMENT])
        files.append((method, field, ref))
    text = message.text or ""
    caption = text if files and utf16_len(text) <= CAPTION_LIMIT else ""
    steps: list[tuple[str, dict[str, Any]]] = []
    if not caption:
        steps += [("sendMessage", {"text": part}) for part in split_utf16(text)]
    for index, (method, field, ref) in enumerate(files):
        params: dict[str, Any] = {field: ref}
        if index == 0 and caption.strip():
            params["caption"] = caption
        steps.append((method, params))
    if not steps:
        raise PermanentError("nothing to send: no text and no attachments")
    markup = inline_keyboard(message.buttons)
    if markup is not None:
        steps[-1][1]["reply_markup"] = markup
    reply_to = message.reply_to or ""
    if reply_to.isdigit():
        steps[0][1]["reply_parameters"] = {
            "message_id": int(reply_to),
            "allow_sending_without_reply": True,  # the original may be deleted
        }
    return steps


def inline_keyboard(buttons: tuple[tuple[str, str], ...]) -> dict[str, Any] | None:
    """``InlineKeyboardMarkup`` of callback buttons for ``(id, label)``
    pairs, or None: no buttons, more than :data:`MAX_BUTTONS`, or an id that
    is not 1-64 bytes of UTF-8 (the text lists the choices anyway). A blank
    label shows the id."""
    if not buttons or len(buttons) > MAX_BUTTONS:
        return None
    if not all(1 <= _utf8_len(key) <= CALLBACK_DATA_BYTES for key, _ in buttons):
        return None
    keys = [{"text": label.strip() or key, "callback_data": key} for key, label in buttons]
    short = all(len(k["text"]) <= SHORT_LABEL for k in keys)
    per_row = ROW_BUTTONS if short else 1
    return {"inline_keyboard": [keys[i : i + per_row] for i in range(0, len(keys), per_row)]}


def _utf8_len(text: str) -> int:
    """Bytes in UTF-8; 0 (unsendable) for a lone surrogate."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return 0
