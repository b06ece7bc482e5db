"""Inbound: customer -> CRM (see :mod:`bridge.pipeline`)."""

from bridge.pipeline.inbound.accept import AcceptResult, AccountRef, accept
from bridge.pipeline.inbound.acknowledge import run_acknowledgements
from bridge.pipeline.inbound.sync import run_inbound

__all__ = ["AcceptResult", "AccountRef", "accept", "run_acknowledgements", "run_inbound"]
