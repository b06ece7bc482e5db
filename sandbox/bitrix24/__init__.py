"""Sandbox Bitrix24: a stateful local stand-in of Bitrix24's REST API (Flask).

CRM methods, ``batch``, the leaky-bucket and operating-time limits, incoming
webhooks and OAuth apps (install flow, ``oauth.bitrix.info`` token server),
events delivered form-encoded, and the Open Channels connector
(``imconnector.*``). Behaviour follows Bitrix24's official docs shipped in
``spec/`` (bitrix24/b24restdocs, MIT) and /work/shared/contracts/FACTS.md
section 2; every UNCONFIRMED behaviour is a switch in :mod:`.config`.

``create_app(config)`` builds the app; the demo mounts it under
``/sandbox/bitrix24``. URL layout: :mod:`.app`; control API: :mod:`.control`.

    from sandbox.bitrix24 import create_app, DEMO_DOMAIN
    app = create_app({"limits": {"basic": {"burst": 10}}})
"""

from __future__ import annotations

from .app import create_app
from .config import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_DOMAIN,
    DEMO_LINE_ID,
    DEMO_MEMBER_ID,
    DEMO_WEBHOOK_CODE,
    DEMO_WEBHOOK_USER,
)
from .params import encode_form

__all__ = [
    "create_app",
    "encode_form",
    "DEMO_DOMAIN",
    "DEMO_MEMBER_ID",
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_WEBHOOK_USER",
    "DEMO_WEBHOOK_CODE",
    "DEMO_LINE_ID",
]
