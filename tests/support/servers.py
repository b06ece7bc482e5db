"""Run a WSGI app on a real 127.0.0.1 port for the duration of a test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from werkzeug.serving import BaseWSGIServer, make_server


@dataclass
class RunningServer:
    url: str
    server: BaseWSGIServer


@contextmanager
def serve_wsgi(app, host: str = "127.0.0.1") -> Iterator[RunningServer]:
    """Serve ``app`` (threaded) on an ephemeral port; yields its base URL."""
    server = make_server(host, 0, app, threaded=True)
    # shutdown() waits for serve_forever's next poll: 0.5 s by default, per
    # server per test
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-wsgi", daemon=True
    )
    thread.start()
    try:
        yield RunningServer(url=f"http://{host}:{server.server_port}", server=server)
    finally:
        server.shutdown()
        thread.join(timeout=5)
