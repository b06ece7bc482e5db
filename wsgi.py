"""WSGI entry point: ``gunicorn wsgi:app``.

With ``BRIDGE_MOUNT_SANDBOX=1`` (the demo, ``bridge run``) the sandbox
vendors are served under ``/sandbox`` by the same server.
"""

import os

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from bridge import create_app
from bridge.logs import configure_logging

configure_logging()  # ids only; urllib3 kept at WARNING (its DEBUG lines carry bot tokens)
app: Flask | DispatcherMiddleware = create_app()

if os.environ.get("BRIDGE_MOUNT_SANDBOX") == "1":
    from sandbox.server import mount

    # the try-it page shows the CRM the demo wired (bridge run --demo <crm>)
    crm = os.environ.get("BRIDGE_DEMO_CRM", "hubspot")
    app = mount(app, {"web": {"crm": crm}})
