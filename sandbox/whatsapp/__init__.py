"""Sandbox WhatsApp Cloud API: a local stand-in for Meta's graph.facebook.com.

Behaves like the Cloud API for what a customer-service bridge uses (FACTS.md
§2): ``POST /v{N}/{phone-number-id}/messages`` with Bearer auth, Meta's
validation and error bodies (``{"error": {"message", "type", "code",
"error_data", "fbtrace_id"}}``), the 24-hour customer-service window
(131047), templates (132001), throughput (130429) and pair (131056) limits,
two-step media download, the template list, and signed webhooks
(``X-Hub-Signature-256``): the customer's messages (``/_deliver``,
``/_customer``) and the statuses of every send (sent, delivered, read or
failed; in order, shuffled or duplicated) from a background thread. Routes:
:mod:`.graph` (Graph API), :mod:`.control` (control API), settings:
:mod:`.config`.

    from sandbox.whatsapp import create_app, DEMO_ACCESS_TOKEN
    app = create_app({"webhook_url": "http://127.0.0.1:8000/webhooks/whatsapp/app"})
"""

from __future__ import annotations

from .app import create_app
from .config import (
    DEMO_ACCESS_TOKEN,
    DEMO_APP_SECRET,
    DEMO_DISPLAY_PHONE_NUMBER,
    DEMO_PHONE_NUMBER_ID,
    DEMO_VERIFY_TOKEN,
    DEMO_WABA_ID,
)
from .control import EXTENSION, WhatsAppSandbox

__all__ = [
    "create_app",
    "DEMO_ACCESS_TOKEN",
    "DEMO_APP_SECRET",
    "DEMO_DISPLAY_PHONE_NUMBER",
    "DEMO_PHONE_NUMBER_ID",
    "DEMO_VERIFY_TOKEN",
    "DEMO_WABA_ID",
    "EXTENSION",
    "WhatsAppSandbox",
]
