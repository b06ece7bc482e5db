"""The admin console: server-rendered pages under ``/console`` for the
tenant's admins and the owner (connect, map, watch, trace, measure).

``bp`` is the blueprint; :mod:`bridge.console.auth` guards every page;
:mod:`bridge.console.pages` holds the pages.
"""

from __future__ import annotations

from flask import Blueprint

__all__ = ["bp"]

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

from bridge.console import pages  # noqa: E402,F401  (registers the pages on bp)
