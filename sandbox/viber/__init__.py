"""Sandbox Viber: a local stand-in for ``chatapi.viber.com/pa`` and the callbacks
a Viber bot receives.

Behaves like Viber for what a customer-service bridge uses (FACTS.md §4, the
REST bot API docs): ``POST /pa/<name>`` with ``X-Viber-Auth-Token``
(``set_webhook`` checking the URL with a signed ``webhook`` event,
``send_message``, ``broadcast_message``, ``get_account_info``,
``get_user_details``), answers with ``status`` / ``status_message`` and HTTP
200 even on errors, callbacks signed with ``X-Viber-Content-Signature``
(HMAC-SHA256 of the body with the bot's token) and retried when the webhook
does not answer 200, ``delivered`` / ``seen`` after each send. Routes:
:mod:`.api` (the API), :mod:`.callbacks` (what is posted), :mod:`.control`
(control API); settings: :mod:`.config`.

    from sandbox.viber import create_app, DEMO_AUTH_TOKEN
    app = create_app({"text_limit": 7000})
"""

from __future__ import annotations

from .app import create_app
from .config import DEMO_AUTH_TOKEN, DEMO_BOT_ID, DEMO_BOT_NAME, DEMO_BOT_URI
from .control import EXTENSION, ViberSandbox

__all__ = [
    "create_app",
    "DEMO_AUTH_TOKEN",
    "DEMO_BOT_ID",
    "DEMO_BOT_NAME",
    "DEMO_BOT_URI",
    "EXTENSION",
    "ViberSandbox",
]
