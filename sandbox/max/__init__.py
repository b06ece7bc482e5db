"""Sandbox MAX: a local stand-in for the MAX messenger Bot API
(``platform-api2.max.ru``) and its webhooks.

Behaves like MAX for what a customer-service bridge uses (the contract's
FACTS, corpora ``max/``): the raw token in ``Authorization`` (401
``verify.token``, 403 ``deprecated.token`` for a query token), ``GET /me``,
``POST /messages`` (4000 characters, attachments by upload token or image
URL, 403 to a user who stopped the bot), ``POST /answers``, the 3-step
upload (``POST /uploads``, the upload host at ``/_upload/<id>``),
``/subscriptions``, ``GET /updates`` (marker, 405 while a webhook is
active), ``{"code", "message"}`` errors, 30 rps per token and 2 messages
per second per chat. Webhooks: one ``Update`` per POST with
``X-Max-Bot-Api-Secret``, retried 60 s x2.5 and unsubscribed after 8 h.
Every UNCONFIRMED fact is a switch in :mod:`.config`.

    from sandbox.max import create_app, DEMO_TOKEN
    app = create_app()
"""

from __future__ import annotations

from .app import create_app
from .config import DEMO_BOT_ID, DEMO_BOT_NAME, DEMO_BOT_USERNAME, DEMO_TOKEN, DIALOG_BASE
from .control import EXTENSION, MaxSandbox

__all__ = [
    "DEMO_BOT_ID",
    "DEMO_BOT_NAME",
    "DEMO_BOT_USERNAME",
    "DEMO_TOKEN",
    "DIALOG_BASE",
    "EXTENSION",
    "MaxSandbox",
    "create_app",
]
