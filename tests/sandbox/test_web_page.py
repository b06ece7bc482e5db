"""The demo page renders, and its JavaScript calls only endpoints that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from sandbox.telegram import create_app as create_telegram_app
from sandbox.web import create_app

STATIC = Path(__file__).resolve().parents[2] / "sandbox" / "web" / "static"
ENDPOINT_RE = re.compile(r'(\w+):\s*\["(telegram|hubspot)",\s*"(/[^"]*)",\s*"(GET|POST)"\]')
# The HubSpot sandbox's control endpoints the page relies on (its brief), used only
# when that sandbox cannot be imported.
HUBSPOT_CONTRACT = {("/_state", "GET"), ("/_reply", "POST")}


def _demo_server() -> Client:
    """The apps mounted the way the demo server mounts them."""
    root = Flask("root")
    return Client(DispatcherMiddleware(root, {
        "/sandbox": create_app(),
        "/sandbox/telegram": create_telegram_app(),
    }))


def _js() -> str:
    return (STATIC / "demo.js").read_text("utf-8")


def _exists(app: Flask, path: str, method: str) -> bool:
    adapter = app.url_map.bind("localhost")
    try:
        adapter.match(path, method=method)
    except (NotFound, MethodNotAllowed):
        return False
    return True


def test_page_renders_both_panels() -> None:
    response = _demo_server().get("/sandbox/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for label in ("Customer in Telegram", "Клиент в Telegram",
                  "Rep in HubSpot", "Менеджер в HubSpot"):
        assert label in html
    # Asset and sibling URLs follow the mount point, not a hard-coded prefix.
    assert 'src="/sandbox/static/demo.js"' in html
    assert 'data-telegram-base="/sandbox/telegram"' in html
    assert 'data-hubspot-base="/sandbox/hubspot"' in html


def test_assets_are_served() -> None:
    client = _demo_server()
    assert client.get("/sandbox/static/demo.js").status_code == 200
    assert client.get("/sandbox/static/demo.css").status_code == 200


def test_bases_can_be_configured() -> None:
    app = create_app({"telegram_base": "http://tg.local", "hubspot_base": "/hs", "poll_ms": 500})
    html = app.test_client().get("/").get_data(as_text=True)
    assert 'data-telegram-base="http://tg.local"' in html and 'data-poll-ms="500"' in html


def test_js_calls_only_declared_endpoints() -> None:
    js = _js()
    declared = ENDPOINT_RE.findall(js)
    assert {name for name, *_ in declared} == {"deliver", "sent", "deliveries", "crmState",
                                               "crmReply"}
    # One fetch() in the whole file, inside call(), which only takes ENDPOINTS names.
    assert js.count("fetch(") == 1
    literals = set(re.findall(r'"(/_[a-z_]+)"', js))
    assert literals == {path for _, _, path, _ in declared}


@pytest.mark.parametrize(("name", "sandbox", "path", "method"), ENDPOINT_RE.findall(_js()))
def test_js_endpoints_exist(name: str, sandbox: str, path: str, method: str) -> None:
    if sandbox == "telegram":
        assert _exists(create_telegram_app(), path, method), name
        return
    try:
        from sandbox.hubspot import create_app as create_hubspot_app
    except ImportError:
        assert (path, method) in HUBSPOT_CONTRACT, name
        return
    assert _exists(create_hubspot_app(), path, method), name


def test_page_escapes_user_data() -> None:
    js = _js()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js
    assert "document.write" not in js and "eval(" not in js


def test_page_flow_against_the_telegram_sandbox() -> None:
    """What the page's customer panel does, in order: deliver, then poll the transcript."""
    client = _demo_server()
    base = "/sandbox/telegram"
    # No webhook yet: the page shows the 409 message.
    first = client.post(f"{base}/_deliver", json={"from": {"id": 5, "first_name": "A"},
                                                  "text": "hi"})
    assert first.status_code == 409
    sent: Any = client.get(f"{base}/_sent", query_string={"chat_id": "5"}).get_json()
    deliveries: Any = client.get(f"{base}/_deliveries",
                                 query_string={"chat_id": "5"}).get_json()
    assert sent == {"sent": []} and deliveries == {"deliveries": []}
