"""Sandbox HubSpot: a stateful local stand-in of HubSpot's API (Flask).

``create_app(config)`` builds the app; mount it anywhere (the demo mounts it
under ``/sandbox/hubspot``). Request/response validation against HubSpot's
OpenAPI specs lives in :mod:`sandbox.hubspot.openapi` and is importable on its
own. See :mod:`sandbox.hubspot.app` for the request pipeline and
:mod:`sandbox.hubspot.control` for the control API.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
