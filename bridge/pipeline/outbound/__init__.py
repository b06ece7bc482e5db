"""Outbound: CRM -> customer (see :mod:`bridge.pipeline`)."""

from bridge.pipeline.outbound.accept import CrmAcceptResult, accept_crm_events
from bridge.pipeline.outbound.deliver import run_outbound
from bridge.pipeline.outbound.report import run_reports

__all__ = ["CrmAcceptResult", "accept_crm_events", "run_outbound", "run_reports"]
