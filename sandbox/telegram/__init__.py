"""Sandbox Telegram Bot API: a local stand-in for api.telegram.org.

Behaves like Telegram for the methods the bridge uses (paths, token auth,
parameter validation against the vendored Bot API 10.1 spec, error envelopes,
flood limits, webhook delivery with the secret-token header), plus a control
API to play the customer (``POST /_deliver``) and to inspect what the bot sent
(``GET /_sent``). See :mod:`sandbox.telegram.app` and
:mod:`sandbox.telegram.control`.

    from sandbox.telegram import create_app, DEMO_BOT_TOKEN
    app = create_app({"per_chat_per_s": 1.0})
"""

from __future__ import annotations

from .app import create_app
from .state import DEMO_BOT_TOKEN

__all__ = ["create_app", "DEMO_BOT_TOKEN"]
