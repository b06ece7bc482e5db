"""The console's pages, each module registering its routes on
:data:`bridge.console.bp`."""

from __future__ import annotations
