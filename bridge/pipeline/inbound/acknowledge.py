"""The inbound pipeline's last step: the channel told that an event was
handled (Telegram's ``answerCallbackQuery`` for a button press), once the
event is in the CRM, as its own follow-up work
(:mod:`bridge.pipeline.followup`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge import outbox
from bridge.model import InboundMessage, MessageKind
from bridge.pipeline.followup import FollowupItem, run_followups
from bridge.rows import aware

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["Acknowledgements", "run_acknowledgements"]


class Acknowledgements:
    """The channel's acknowledgement of each handled event."""

    direction = outbox.ACK
    message_direction = outbox.IN

    def perform(self, runtime: Runtime, item: FollowupItem) -> None:
        message, payload = item.message, item.message.payload or {}
        event = InboundMessage(
            channel_kind=item.account.kind,
            external_id=message.dedupe_key,
            external_user_id="",
            external_thread_id=item.conversation.external_thread_id,
            kind=MessageKind(message.kind),
            sent_at=aware(message.sent_at),
            text=message.text,
            provider_message_id=payload.get("provider_message_id"),
            callback_id=payload.get("callback_id"),
        )
        runtime.channel_adapter(item.account).acknowledge(event)


def run_acknowledgements(runtime: Runtime, conversation_id: int) -> str:
    """Acknowledge the conversation's handled events to the channel."""
    return run_followups(runtime, conversation_id, Acknowledgements())
