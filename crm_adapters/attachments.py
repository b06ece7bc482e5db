"""How an entry's attachments read in a CRM, for every adapter.

A label names the file (``[document: report.pdf]``). A file the bridge
keeps (``bridge.files``: an e-mail's parts and the original mail) also gets
its link, which is ours and carries nothing of the channel; a channel's own
file URL is never shown (Telegram's carries the bot token). CRMs that take
a file by URL (amoCRM chat ``media``, Bitrix24 Open Lines ``files``) are
also handed :func:`fetchable` ones as files.
"""

from __future__ import annotations

from bridge.files import is_kept
from bridge.model import Attachment, TimelineEntry

__all__ = ["fetchable", "label", "labels"]

#: the whole message as it arrived (an e-mail channel keeps it beside the
#: parts): linked from the entry, never sent as a file of its own
_ORIGINAL = ("original.eml", "message/rfc822")


def label(attachment: Attachment, *, with_link: bool = True) -> str:
    """``[photo: a.jpg]``, followed by the link of a file the bridge keeps."""
    kind = attachment.kind.value.replace("_", " ")
    text = f"[{kind}: {attachment.file_name}]" if attachment.file_name else f"[{kind}]"
    if with_link and is_kept(attachment):
        text += f" {attachment.url}"
    return text


def labels(entry: TimelineEntry, *, with_links: bool = True) -> list[str]:
    """The labels of every attachment of ``entry``."""
    return [label(a, with_link=with_links) for a in entry.attachments]


def fetchable(entry: TimelineEntry) -> list[Attachment]:
    """The attachments a CRM can fetch by URL as files: those the bridge
    keeps and links, except the original message (a link is enough)."""
    return [a for a in entry.attachments if is_kept(a) and (a.file_name, a.mime_type) != _ORIGINAL]
