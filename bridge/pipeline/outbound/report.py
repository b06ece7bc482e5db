"""The outbound pipeline's last step: the CRM told what happened to a rep's
reply (sent, or failed and why), as its own follow-up work, retried until
the CRM has it (:mod:`bridge.pipeline.followup`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge import crm_calls, live_fields, outbox
from bridge.model import DeliveryReport, DeliveryStatus
from bridge.pipeline.followup import FollowupItem, run_followups
from bridge.tables import MessageStatus

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["DeliveryReports", "run_reports"]


class DeliveryReports:
    """The CRM's delivery report of each sent or failed reply."""

    direction = outbox.REPORT
    message_direction = outbox.OUT

    def perform(self, runtime: Runtime, item: FollowupItem) -> None:
        message = item.message
        failed = message.status in (MessageStatus.FAILED, MessageStatus.REFUSED)
        # how far the channel says it got (delivered, read), never back
        reached = DeliveryStatus((message.payload or {}).get("delivery", DeliveryStatus.SENT))
        report = DeliveryReport(
            crm_message_id=str(message.crm_message_id),
            status=DeliveryStatus.FAILED if failed else reached,
            error=message.last_error if failed else None,
            crm_thread_id=(message.payload or {}).get("crm_thread_id"),
        )
        if failed:
            # a reply that failed for good (a bot blocked, an address
            # bouncing) may change where the client can be reached: the
            # CRM contact's live fields are looked at again. Before the
            # report, never after: a step that fails after the CRM has the
            # report is tried again, and the CRM would get it twice
            with runtime.transaction() as session:
                live_fields.mark_conversation(session, message.conversation_id)
        runtime.crm_adapter(item.tenant).report_delivery(report)


def run_reports(runtime: Runtime, conversation_id: int) -> str:
    """Report the conversation's replies' outcomes to the CRM, in order."""
    with crm_calls.recording(runtime, [conversation_id]):
        return run_followups(runtime, conversation_id, DeliveryReports())
