"""Sandbox amoCRM: a stateful local stand-in of amoCRM's API v4, its OAuth,
its account webhooks and its Chats API ("amojo") (Flask).

``create_app(config)`` builds the app; mount it anywhere (the demo mounts it
under ``/sandbox/amocrm``). Behaviour follows /work/shared/contracts/FACTS.md
section 1; every UNCONFIRMED behaviour is a switch in
:mod:`sandbox.amocrm.config`. See :mod:`sandbox.amocrm.app` for the URL layout
and the request pipeline, :mod:`sandbox.amocrm.control` for the control API.

    from sandbox.amocrm import create_app, DEMO_CLIENT_ID
    app = create_app({"per_second": 7, "access_token_ttl": 60})
"""

from __future__ import annotations

from .amojo import sign_request
from .app import create_app
from .config import (
    DEMO_ACCOUNT_ID,
    DEMO_AMOJO_ID,
    DEMO_BOT_ID,
    DEMO_CHANNEL_ID,
    DEMO_CHANNEL_SECRET,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_SUBDOMAIN,
)

__all__ = [
    "create_app",
    "sign_request",
    "DEMO_SUBDOMAIN",
    "DEMO_ACCOUNT_ID",
    "DEMO_AMOJO_ID",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_CHANNEL_ID",
    "DEMO_CHANNEL_SECRET",
    "DEMO_BOT_ID",
]
