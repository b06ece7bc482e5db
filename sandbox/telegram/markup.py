"""Inline keyboards as the Bot API server reads them, beyond the types
api.json gives (``spec.py`` checks those: a button needs ``text``,
``callback_data`` is 1-64 bytes), and pressing one of their buttons.

* "Exactly one of the fields other than text, icon_custom_emoji_id, and
  style must be used to specify the type of the button" (api.json
  ``InlineKeyboardButton``): a button with none is refused with the Bot API
  server's "can't parse inline keyboard button: Text buttons are unallowed
  in the inline keyboard" (the text bot libraries quote, e.g. the error
  tables of several Lua and Go clients).
* The size of a keyboard is not in the Bot API docs: 100 buttons and 8 per
  row are third-party figures (tginfo/Telegram-Limits#228), and an oversized
  markup is refused with "reply markup is too long"
  (rubenlagus/TelegramBots#218, eternnoir/pyTelegramBotAPI#511). Both caps
  are sandbox settings (``max_inline_buttons``, ``max_inline_row``).
"""

from __future__ import annotations

from typing import Any

from .errors import bad_request
from .spec import BotApiSpec

__all__ = ["TEXT_BUTTONS", "TOO_LONG", "callback_buttons", "check_reply_markup"]

TEXT_BUTTONS = (
    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
)
TOO_LONG = "reply markup is too long"
#: InlineKeyboardButton fields that are not the button's action (api.json)
NOT_ACTIONS = frozenset({"text", "icon_custom_emoji_id", "style"})


def check_reply_markup(
    spec: BotApiSpec, markup: Any, max_buttons: int | None, max_row: int | None
) -> None:
    """Raise the Bot API's 400 for an inline keyboard it would refuse.
    ``markup`` has passed the type checks; other keyboards pass unchanged."""
    if not isinstance(markup, dict) or not isinstance(markup.get("inline_keyboard"), list):
        return
    rows = markup["inline_keyboard"]
    actions = [f for f in spec.type_field_names("InlineKeyboardButton") if f not in NOT_ACTIONS]
    for row in rows:
        for button in row:
            if not any(button.get(name) not in (None, "") for name in actions):
                raise bad_request(TEXT_BUTTONS)
    too_many = max_buttons is not None and sum(len(row) for row in rows) > max_buttons
    too_wide = max_row is not None and any(len(row) > max_row for row in rows)
    if too_many or too_wide:
        raise bad_request(TOO_LONG)


def callback_buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The callback buttons of a message's inline keyboard, in order."""
    markup = message.get("reply_markup")
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list):
        return []
    return [
        button
        for row in rows
        if isinstance(row, list)
        for button in row
        if isinstance(button, dict) and isinstance(button.get("callback_data"), str)
    ]
