"""Behind a reverse proxy (``BRIDGE_TRUSTED_PROXIES``) the client's address
is the one the proxy forwarded — per-address limits (the web chat's) would
otherwise count every visitor as the balancer — and without one a client's
own X-Forwarded-For is not believed (it would pick its own address)."""

from __future__ import annotations

import dataclasses

import pytest
from flask import request

from bridge import create_app
from bridge.config import Settings
from bridge.runtime import Runtime


@pytest.mark.parametrize(("proxies", "seen"), [(0, "127.0.0.1"), (1, "203.0.113.7")])
def test_the_client_address_behind_trusted_proxies(
    settings: Settings,
    redis_conn,
    proxies: int,
    seen: str,  # type: ignore[no-untyped-def]
) -> None:
    runtime = Runtime(
        dataclasses.replace(settings, trusted_proxies=proxies), redis_connection=redis_conn
    )
    try:
        app = create_app(runtime=runtime)
        app.add_url_rule("/whoami", "whoami", lambda: request.remote_addr or "")
        answer = app.test_client().get(
            "/whoami",
            headers={"X-Forwarded-For": "203.0.113.7"},
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )
        assert answer.get_data(as_text=True) == seen
    finally:
        runtime.close()
