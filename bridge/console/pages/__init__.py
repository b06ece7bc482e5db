"""The console's pages, each module registering its routes on
:data:`bridge.console.bp`."""

from __future__ import annotations

from bridge.console import crm_login  # noqa: F401  (the CRM's way in; login links)
from bridge.console.pages import (
    access,  # noqa: F401  (sign-in, users, audit log)
    channels,  # noqa: F401  (channel accounts and the CRM connection)
    conversations,  # noqa: F401  (conversations, message traces, replay, reparse)
    kpis,  # noqa: F401  (the KPI page and its CSV)
    mapping,  # noqa: F401  (the mapping editor)
    overview,  # noqa: F401  (the overview: health, silence, parked and failed work)
)
