# ruff: noqa: S105, S106, S107  (sandbox app secrets and tokens are test fixtures)
"""Shared helpers for the core's unit and component tests.

* :func:`build_runtime` -- a :class:`bridge.runtime.Runtime` on the test
  database and Redis with extra settings (CRM app credentials, API bases);
* :func:`tg_update` -- Telegram ``Update`` bodies (shapes from the Bot API's
  ``Update``/``Message`` types, as in ``tests/unit/test_telegram_adapter.py``);
* :func:`hubspot_signed` -- HubSpot's v3 request signature, made with the
  sandbox's signer (``sandbox/hubspot/signature.py``, checked there against
  HubSpot's own test vectors);
* :class:`TokenEndpointSpy` -- a WSGI middleware around the sandbox HubSpot
  that records every ``POST /oauth/v1/token`` (grant type and answer) and can
  answer refresh grants itself (a refused refresh in the newer OAuth form);
* :func:`hubspot_sandbox` / :func:`serve` -- a sandbox on a real 127.0.0.1
  port (``serve_wsgi`` with a short poll interval and no access log);
* :func:`oauth_install` and its steps -- the install an admin clicks through:
  the bridge's install link, the sandbox's consent form, the callback.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import redis
from rq import Queue
from sqlalchemy import func, select

from bridge.config import Settings
from bridge.jobs import DELIVER_QUEUE, SYNC_QUEUE
from bridge.migrate import upgrade
from bridge.runtime import Runtime, set_runtime
from bridge.tables import (
    ChannelAccount,
    Contact,
    Conversation,
    IgnoredEventRow,
    Message,
    Outbox,
    Tenant,
)
from sandbox.hubspot.config import DEFAULTS as HUBSPOT_DEFAULTS
from sandbox.hubspot.signature import v3_headers

ROOT = Path(__file__).resolve().parents[2]

#: the sandbox HubSpot's developer app (``sandbox/hubspot/config.py``)
HUBSPOT_APP = dict(HUBSPOT_DEFAULTS["app"])
CLIENT_ID = HUBSPOT_APP["client_id"]
CLIENT_SECRET = HUBSPOT_APP["client_secret"]
PORTAL_A = HUBSPOT_DEFAULTS["portals"][0]["id"]
PORTAL_B = HUBSPOT_DEFAULTS["portals"][1]["id"]
PRIVATE_TOKEN_A = HUBSPOT_DEFAULTS["portals"][0]["private_app_token"]

#: a HubSpot mapping without the inbox (no custom channel needed) and with
#: the first owner the sandbox seeds for portal A
HUBSPOT_MAPPING = """\
crm: hubspot
channels:
  telegram:
    object: deal
    pipeline: default
    stage: appointmentscheduled
    owner: {strategy: fixed, owner_id: "70000001"}
    timeline: note
    inbox: false
"""


def hubspot_app(sandbox_url: str | None = None) -> dict[str, str]:
    app = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    if sandbox_url:
        app["auth_base"] = sandbox_url
    return app


@contextmanager
def build_runtime(
    settings: Settings, redis_conn: redis.Redis, **overrides: Any
) -> Iterator[Runtime]:
    """A migrated runtime on the fixture database/Redis with ``overrides``
    applied to the settings; installed as the process runtime meanwhile."""
    settings = replace(settings, **overrides) if overrides else settings
    settings.mappings_dir.mkdir(parents=True, exist_ok=True)
    rt = Runtime(settings, redis_connection=redis_conn)
    upgrade(rt.engine)
    set_runtime(rt)
    try:
        yield rt
    finally:
        set_runtime(None)
        rt.close()


def write_mapping(rt: Runtime, name: str, text: str) -> str:
    (rt.settings.mappings_dir / name).write_text(text, encoding="utf-8")
    return name


# -- Telegram updates ------------------------------------------------------------------


def tg_user(user_id: int = 1001, first_name: str = "Anna", **extra: Any) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name, **extra}


def tg_update(
    update_id: int,
    *,
    chat_id: int = 1001,
    text: str | None = None,
    message_id: int | None = None,
    date: int = 1_767_225_600,
    user: Mapping[str, Any] | None = None,
    **message_fields: Any,
) -> dict[str, Any]:
    """A private-chat ``message`` update."""
    sender = dict(user or tg_user(chat_id))
    message: dict[str, Any] = {
        "message_id": message_id if message_id is not None else update_id,
        "from": sender,
        "chat": {"id": chat_id, "type": "private", "first_name": sender.get("first_name", "")},
        "date": date,
    }
    if text is not None:
        message["text"] = text
    message.update(message_fields)
    return {"update_id": update_id, "message": message}


def body(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


# -- HubSpot signatures ------------------------------------------------------------------


def hubspot_signed(
    url: str, payload: bytes, *, secret: str = CLIENT_SECRET, now_ms: int | None = None
) -> dict[str, str]:
    """Headers of a v3-signed ``POST url`` with ``payload``, as HubSpot sends it."""
    headers = v3_headers(secret, "POST", url, payload.decode("utf-8"), now_ms=now_ms)
    headers["Content-Type"] = "application/json"
    return headers


def reply_payload(
    *, portal_id: int, thread_uid: str, message_id: str, text: str = "Hello from the rep"
) -> dict[str, Any]:
    """An ``OUTGOING_CHANNEL_MESSAGE_CREATED`` webhook for a conversation, the
    shape ``sandbox/hubspot/channels.py::outgoing_webhook_payload`` sends."""
    return {
        "type": "OUTGOING_CHANNEL_MESSAGE_CREATED",
        "portalId": portal_id,
        "channelId": "1001",
        "channelAccountId": "1002",
        "eventTimestamp": 1_767_225_600_000,
        "message": {
            "id": message_id,
            "conversationsThreadId": "5001",
            "direction": "OUTGOING",
            "text": text,
            "senders": [{"actorId": "A-9000001", "name": "Alice Agent"}],
            "recipients": [
                {"deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": "1001"}}
            ],
            "createdAt": "2026-01-01T00:00:00.000Z",
            "type": "MESSAGE",
            "attachments": [],
            "channelIntegrationThreadIds": [thread_uid],
        },
    }


# -- database and queue snapshots -------------------------------------------------------

TABLES = {
    "tenants": Tenant,
    "accounts": ChannelAccount,
    "contacts": Contact,
    "conversations": Conversation,
    "messages": Message,
    "ignored": IgnoredEventRow,
    "outbox": Outbox,
}


def row_counts(rt: Runtime) -> dict[str, int]:
    with rt.transaction() as session:
        return {
            name: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in TABLES.items()
        }


def queued(redis_conn: redis.Redis, queue: str = SYNC_QUEUE) -> list[str]:
    return list(Queue(queue, connection=redis_conn).job_ids)


def all_queued(redis_conn: redis.Redis) -> dict[str, list[str]]:
    return {name: queued(redis_conn, name) for name in (SYNC_QUEUE, DELIVER_QUEUE)}


# -- the sandbox's token endpoint ---------------------------------------------------------


class TokenEndpointSpy:
    """Wraps a WSGI app; records ``POST <token_path>`` requests (HubSpot's
    ``/oauth/v1/token`` by default).

    ``grants`` lists the grant types in arrival order, ``answers`` the
    decoded JSON answers (same order). With ``refuse_refresh`` set to a
    ``(status, body)`` pair, refresh grants get that answer instead of
    reaching the sandbox.
    """

    def __init__(self, app: Callable[..., Any], token_path: str = "/oauth/v1/token") -> None:
        self.app = app
        self.token_path = token_path
        self.lock = threading.Lock()
        self.grants: list[str] = []
        self.answers: list[dict[str, Any]] = []
        self.refuse_refresh: tuple[int, dict[str, Any]] | None = None

    def count(self, grant: str) -> int:
        with self.lock:
            return self.grants.count(grant)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("REQUEST_METHOD") != "POST" or not environ.get("PATH_INFO", "").endswith(
            self.token_path
        ):
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        grant = (parse_qs(raw.decode("latin-1")).get("grant_type") or [""])[0]
        with self.lock:
            self.grants.append(grant)
        if grant == "refresh_token" and self.refuse_refresh is not None:
            status, answer = self.refuse_refresh
            data = json.dumps(answer).encode()
            start_response(
                f"{status} REFUSED",
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            with self.lock:
                self.answers.append(answer)
            return [data]
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"] = status
            return start_response(status, headers, exc_info)

        result = self.app(environ, capture)
        try:
            chunks = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        try:
            answer = json.loads(chunks)
        except ValueError:
            answer = {"raw": chunks.decode("latin-1")}
        with self.lock:
            self.answers.append(answer)
        return [chunks]


# -- the sandbox HubSpot on a real port, and the OAuth install through it ----------------


@contextmanager
def hubspot_sandbox(config: dict[str, Any] | None = None) -> Iterator[tuple[str, TokenEndpointSpy]]:
    """The sandbox HubSpot served on 127.0.0.1 (its token endpoint spied on)."""
    import requests

    from sandbox.hubspot import create_app as create_hubspot

    spy = TokenEndpointSpy(create_hubspot(config))
    with serve(spy) as url:
        # The sandbox loads its OpenAPI specs on first use (process-wide, not
        # locked): load them before tests send concurrent requests.
        portals = (config or {}).get("portals") or HUBSPOT_DEFAULTS["portals"]
        requests.get(
            f"{url}/crm/v3/owners/",
            timeout=30,
            headers={"Authorization": f"Bearer {portals[0]['private_app_token']}"},
        )
        yield url, spy


@contextmanager
def serve(app: Callable[..., Any]) -> Iterator[str]:
    """``tests.support.servers.serve_wsgi`` with a short poll interval, so
    that stopping the server does not cost half a second per test."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:  # the vendor's access log
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="test-wsgi", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def start_install(
    client: Any, mapping: str | None = "hub.yaml", *, crm: str = "hubspot"
) -> dict[str, str]:
    """``GET /oauth/<crm>/install``: the authorize URL's query."""
    from urllib.parse import urlsplit

    response = client.get(
        f"/oauth/{crm}/install", query_string={"mapping": mapping} if mapping else {}
    )
    assert response.status_code == 302, response.data
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    return {k: v[0] for k, v in query.items()}


def consent(
    sandbox_url: str,
    query: Mapping[str, str],
    *,
    decision: str = "grant",
    portal_id: int = PORTAL_A,
) -> dict[str, str]:
    """The admin submits the sandbox's consent form; returns the query of
    the redirect back to the bridge (``code``/``error`` and ``state``)."""
    from urllib.parse import urlsplit

    import requests

    form = {k: query.get(k, "") for k in ("client_id", "redirect_uri", "scope", "state")}
    form.update(portal_id=str(portal_id), decision=decision)
    response = requests.post(
        f"{sandbox_url}/oauth/authorize", data=form, allow_redirects=False, timeout=10
    )
    assert response.status_code == 302, response.text
    back = urlsplit(response.headers["Location"])
    return {k: v[0] for k, v in parse_qs(back.query).items()}


def finish_install(client: Any, params: Mapping[str, str], *, crm: str = "hubspot") -> Any:
    """``GET /oauth/<crm>/callback`` with the vendor's redirect query."""
    return client.get(f"/oauth/{crm}/callback", query_string=dict(params))


def oauth_install(
    client: Any, sandbox_url: str, *, mapping: str = "hub.yaml", portal_id: int = PORTAL_A
) -> dict[str, Any]:
    """The whole install, as an admin clicks through it; the callback's JSON."""
    back = consent(sandbox_url, start_install(client, mapping), portal_id=portal_id)
    response = finish_install(client, back)
    assert response.status_code == 200, response.data
    return response.get_json()
