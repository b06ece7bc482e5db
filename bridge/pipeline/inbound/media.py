"""Customer files a channel holds for us (WhatsApp media ids), fetched
before the message is written to the CRM and kept by the bridge
(:mod:`bridge.files`), so the CRM gets a file or a link that lasts rather
than a provider handle that expires.

Runs in the sync job (never on a webhook), through the channel adapter's
:meth:`~channel_adapters.base.ChannelAdapter.download` (the SSRF-safe
fetcher, the provider's hosts only, a size cap). A fetch that may work
later (a timeout, a 5xx) is retried with the message; one that never will
(the media expired, too large, refused) leaves the attachment as a label
with the reason, and the message goes on: a text is never held back by
its file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from bridge import files
from bridge.errors import PermanentError
from bridge.registry import channel_class
from bridge.rows import attachment_from_dict
from bridge.tables import ChannelAccount, Message

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["fetch_media"]

log = logging.getLogger(__name__)


def fetch_media(runtime: Runtime, account: ChannelAccount, messages: Sequence[Message]) -> None:
    """Keep the files of ``messages`` the channel can hand over (its
    adapter's ``fetch_media``): each file stored, and its message's payload
    naming it, in one transaction (the rows given are updated too)."""
    if not channel_class(account.kind).fetch_media:
        return
    adapter: Any = None
    for message in messages:
        attachments = list((message.payload or {}).get("attachments") or [])
        for index, data in enumerate(attachments):
            if not _to_fetch(data):
                continue
            adapter = adapter or runtime.channel_adapter(account)
            attachment = attachment_from_dict(data)
            try:
                content = adapter.download(attachment)
            except PermanentError as exc:
                log.info("media not fetched: %s", exc.message)
                attachments[index] = {**data, "fetch_error": (exc.message or "refused")[:300]}
                content = None
            with runtime.transaction() as session:
                if content is not None:
                    kept = files.keep(
                        session, account.tenant_id, dataclasses.replace(attachment, content=content)
                    )
                    attachments[index] = _as_dict(kept)
                payload = {**(message.payload or {}), "attachments": attachments}
                session.execute(
                    update(Message).where(Message.id == message.id).values(payload=payload)
                )
            message.payload = payload


def _to_fetch(data: dict[str, Any]) -> bool:
    ref = str(data.get("file_ref") or "")
    return bool(ref) and not ref.startswith(files.PREFIX) and "fetch_error" not in data


def _as_dict(attachment: Any) -> dict[str, Any]:
    data = dataclasses.asdict(attachment)
    return {k: v for k, v in data.items() if k != "content" and v not in (None, "")}
