"""The two pipelines, each in small steps (DESIGN.md "The two pipelines").

Inbound, customer -> CRM (:mod:`bridge.pipeline.inbound`): ``accept`` stores
what a channel delivered in one transaction before the webhook answers; the
sync job (``run_inbound``) drains a conversation into the CRM in sequence
order; the channel's acknowledgements of its events are follow-up work
(``run_acknowledgements``).

Outbound, CRM -> customer (:mod:`bridge.pipeline.outbound`):
``accept_crm_events`` stores what the CRM's webhook said before it answers;
the delivery job (``run_outbound``) sends a conversation's replies in order,
exactly once; the CRM's delivery reports are follow-up work
(``run_reports``).

Shared: the conversation's lease and drain loop (:mod:`.drain`), retries in
one place (:mod:`.retry`), follow-up work (:mod:`.followup`).
"""
