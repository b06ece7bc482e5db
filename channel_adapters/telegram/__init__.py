"""Telegram Bot API channel adapter (webhook in, ``sendMessage`` out).

Registered as ``channel_adapters.telegram:TelegramAdapter``. Modules:

* :mod:`.adapter`  the :class:`TelegramAdapter` hooks (verify, parse, send,
  acknowledge, setup_webhook)
* :mod:`.inbound`  one ``Update`` -> one normalised event, read with
  python-telegram-bot's types (``telegram.Update.de_json``; never its network
  stack)
* :mod:`.outbound` splitting a reply into Telegram messages (4096 UTF-16
  code units, captions 1024); a menu's or rating's buttons as an inline
  keyboard whose presses come back as ``callback_query``
* :mod:`.client`   the Bot API call (``POST {base}/bot<token>/<method>``) and
  the one mapping from Telegram's error envelope to the exception tree

Update kind -> event::

    message, edited_message        -> InboundMessage (edits: is_edit=True)
      .migrate_to_chat_id          -> ThreadMigrated(old=chat.id, new=migrate_to_chat_id)
      .migrate_from_chat_id        -> ThreadMigrated(old=migrate_from_chat_id, new=chat.id)
      edited_message.location      -> IgnoredEvent("live_location_update")
      text / photo / document / voice / audio / video / video_note /
      animation / sticker / contact / location / venue / poll
                                   -> the MessageKind of the same name
      service messages             -> SYSTEM ("joined: Ann", "chat title changed to ...")
      game, invoice, dice, story, anything newer -> UNKNOWN "[unsupported: game]"
    callback_query                 -> InboundMessage(kind=CALLBACK, text=data: a
                                      button's id), answered by acknowledge()
    every other key (inline_query, chosen_inline_result, shipping_query,
    pre_checkout_query, poll, poll_answer, my_chat_member, chat_member,
    chat_join_request, channel_post, edited_channel_post, message_reaction*,
    business_*, chat_boost, ..., keys newer than Bot API 10.1)
                                   -> IgnoredEvent(event_type=<the key>)

The bot token sits in the URL path: it never reaches an exception message,
a log line or a ``repr``.
"""

from channel_adapters.telegram.adapter import TelegramAdapter
from channel_adapters.telegram.client import ChatMigratedError
from channel_adapters.telegram.inbound import utm_from_start
from channel_adapters.telegram.outbound import PartialSendError, split_utf16, utf16_len

__all__ = [
    "ChatMigratedError",
    "PartialSendError",
    "TelegramAdapter",
    "split_utf16",
    "utf16_len",
    "utm_from_start",
]
