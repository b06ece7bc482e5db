"""Sandbox VK: a local stand-in for a VK community's Callback API and ``api.vk.com``.

Behaves like VK for what a customer-service bridge uses (FACTS.md §3, the
VK API JSON schema in ``tests/fixtures/corpora/vk/schema/``):
``POST /method/<name>`` form-encoded with a community token and ``v``
(``messages.send`` with ``random_id`` de-duplicated over the whole history,
``messages.sendMessageEventAnswer``, ``messages.getHistory``,
``groups.getById``, ``groups.getCallbackConfirmationCode``,
``groups.getCallbackServers``, ``users.get``), errors in the body with HTTP
200 (5, 6, 8, 9, 10, 29, 100, 900, 901, 902, 914, ...), and the Callback API:
the ``confirmation`` handshake, then events with ``secret`` that must be
answered ``ok`` (retried with ``X-Retry-Counter``, a server failing in a row
is paused), our own sends echoed as ``message_reply``. Routes: :mod:`.api`
(the API), :mod:`.callback` (what is posted), :mod:`.control` (control API);
settings: :mod:`.config`.

    from sandbox.vk import create_app, DEMO_ACCESS_TOKEN
    app = create_app({"server_url": "http://127.0.0.1:8000/webhooks/vk/demo"})
"""

from __future__ import annotations

from .app import create_app
from .config import (
    DEMO_ACCESS_TOKEN,
    DEMO_CONFIRMATION,
    DEMO_GROUP_ID,
    DEMO_SCREEN_NAME,
    DEMO_SECRET,
)
from .control import EXTENSION, VkSandbox

__all__ = [
    "create_app",
    "DEMO_ACCESS_TOKEN",
    "DEMO_CONFIRMATION",
    "DEMO_GROUP_ID",
    "DEMO_SCREEN_NAME",
    "DEMO_SECRET",
    "EXTENSION",
    "VkSandbox",
]
