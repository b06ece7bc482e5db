# ruff: noqa: S105, S106  (test secrets)
"""The widget's API (``channel_adapters.webchat.api``) through Flask's test
client on the real app and a real runtime: SQLite (and PostgreSQL in CI), a
real Redis, the core's journal and normaliser, a fake CRM.

Every endpoint: the script, config, session, messages (POST; GET and its
long poll), the event stream (a stored reply; a reply stored while it is
open; resumed from ``Last-Event-ID`` without repeats), uploads (201, 413,
415, another visitor's ref), read receipts (the reply read in the core);
CORS preflights and refused origins; a forged or another widget's token
reads nothing; 429 with ``Retry-After``; a resent message is one message;
consent and the pre-chat contact required; and ``bridge widget create``."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

import crm_adapters
from bridge import admin, create_app
from bridge.cli import main
from bridge.model import CrmEvent, CrmEventKind, utcnow
from bridge.pipeline.inbound.journal import run_normaliser
from bridge.pipeline.outbound import accept_crm_events, run_outbound
from bridge.runtime import Runtime
from bridge.schema import load
from bridge.tables import ChannelAccount, Conversation, Delivery, Message
from bridge.webhooks import waker
from channel_adapters.webchat import WebChatAdapter, api, tokens
from channel_adapters.webchat.settings import WebChatConnect
from tests.support import fakes
from tests.support.harness import build_runtime

SITE = "https://shop.example"
MAPPING = """
crm: fake
language: en
channels:
  webchat:
    object: deal
    timeline: note
"""
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
#: the deployment's widget settings here (WEBCHAT_*): short streams and
#: small buckets keep the tests fast, and show the API reads them
APP = {
    "stream_seconds": "1",
    "messages_burst": "6",
    "sessions_per_minute": "6",
    "uploads_per_minute": "8",
}


@dataclass
class Widget:
    rt: Runtime
    client: Any
    key: str
    account_id: int
    tenant_id: int
    adapter: WebChatAdapter

    @property
    def base(self) -> str:
        return f"/widget/{self.key}"

    def session(self, token: str | None = None, **kw: Any) -> Any:
        body = {"token": token} if token else {}
        return self.client.post(
            f"{self.base}/session",
            json=body,
            headers={"Origin": SITE, **kw.pop("headers", {})},
            **kw,
        )

    def visitor(self) -> tuple[str, str]:
        """A new visitor: (token, visitor id)."""
        answer = self.session().get_json()
        return answer["token"], answer["visitor_id"]

    def headers(self, token: str, **extra: str) -> dict[str, str]:
        return {"Origin": SITE, "Authorization": f"Bearer {token}", **extra}

    def send(self, token: str, client_id: str, text: str = "Hello", **body: Any) -> Any:
        response = self.client.post(
            f"{self.base}/messages",
            json={"id": client_id, "text": text, **body},
            headers=self.headers(token),
        )
        assert waker(self.rt).flush()  # the normaliser's wake-up goes from the waker's thread
        return response

    def history(self, token: str, after: int = 0, **query: Any) -> Any:
        params = {"after": after, **query}
        return self.client.get(
            f"{self.base}/messages", query_string=params, headers=self.headers(token)
        )

    def normalise(self) -> None:
        run_normaliser(self.rt, self.account_id)

    def conversation(self, visitor: str) -> Conversation:
        with self.rt.read_session() as session:
            found = session.scalars(
                select(Conversation).where(
                    Conversation.channel_account_id == self.account_id,
                    Conversation.external_thread_id == visitor,
                )
            ).one()
            session.expunge(found)
            return found

    def reply(self, visitor: str, text: str, crm_id: str) -> None:
        """A rep's answer from the CRM: stored, visible to the widget at once."""
        uid = self.conversation(visitor).uid
        event = CrmEvent(CrmEventKind.REPLY, crm_id, utcnow(), thread_key=uid, text=text)
        accept_crm_events(self.rt, self.tenant_id, [event])

    def journal(self) -> list[tuple[str, str]]:
        with self.rt.read_session() as session:
            rows = session.execute(
                select(Delivery.delivery_key, Delivery.state)
                .where(Delivery.channel_account_id == self.account_id)
                .order_by(Delivery.id)
            ).all()
        return [(str(k), str(s)) for k, s in rows]


def _widget(rt: Runtime, tenant_id: int, **values: Any) -> tuple[int, str]:
    overrides = values.pop("_settings", {})
    connected = WebChatAdapter.connect(
        load(WebChatConnect, {"origins": f"{SITE} http://localhost:5000", **values}, strict=True)
    )
    settings = {**connected.settings, **overrides}
    account_id = admin.add_channel_account(
        rt,
        tenant_id,
        kind="webchat",
        credentials=connected.credentials,
        external_id=connected.external_id,
        settings=settings,
    )
    with rt.read_session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        return account_id, account.key


@pytest.fixture
def runtime(settings: Any, redis_conn: Any) -> Iterator[Runtime]:
    """The conftest's runtime, with this deployment's widget settings."""
    with build_runtime(settings, redis_conn, apps={"webchat": APP}) as rt:
        yield rt


@pytest.fixture
def tenant(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    (runtime.settings.mappings_dir / "fake.yaml").write_text(MAPPING)
    return admin.create_tenant(runtime, slug="acme", crm_kind="fake", mapping="fake.yaml")


def _make(rt: Runtime, tenant_id: int, **values: Any) -> Widget:
    account_id, key = _widget(rt, tenant_id, **values)
    app = create_app(runtime=rt)
    with rt.read_session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        adapter = rt.channel_adapter(account)
    assert isinstance(adapter, WebChatAdapter)
    return Widget(rt, app.test_client(), key, account_id, tenant_id, adapter)


@pytest.fixture
def widget(runtime: Runtime, tenant: int) -> Widget:
    return _make(runtime, tenant, title="Acme shop", color="#0A7A3B")


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.data[:300]
    assert response.mimetype == "application/json"
    data = response.get_json()
    assert set(data) == {"error", "message"} and data["error"] == code, data
    assert data["message"]
    return data


# -- the script and config -------------------------------------------------------------


def test_the_script_is_served_for_a_widget_key_only(
    widget: Widget, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    answer = widget.client.get(f"{widget.base}.js")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert answer.headers["Cache-Control"] == "public, max-age=300"
    assert answer.data == api.SCRIPT.read_bytes()
    _error(widget.client.get("/widget/no-such-key.js"), 404, "not_found")
    monkeypatch.setattr(api, "SCRIPT", tmp_path / "missing.js")
    placeholder = widget.client.get(f"{widget.base}.js")
    assert placeholder.status_code == 200 and b"widget.js is missing" in placeholder.data


def test_config_says_what_the_widget_shows(widget: Widget) -> None:
    answer = widget.client.get(f"{widget.base}/config", headers={"Origin": SITE})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == SITE
    assert "Origin" in answer.headers["Vary"]
    config = answer.get_json()
    assert config["title"] == "Acme shop" and config["color"] == "#0a7a3b"
    assert set(config["greeting"]) == {"en", "ru"} and config["greeting"]["ru"]
    assert (config["prechat"], config["consent"]) == ("off", "off")
    assert config["prechat_fields"] == ["name", "phone", "email"]
    assert config["max_file_bytes"] == 10 * 1024 * 1024
    assert "image/png" in config["file_types"]
    assert config["stream_seconds"] == 1  # the deployment's (WEBCHAT_STREAM_SECONDS)
    assert set(config) == {
        "title", "greeting", "color", "prechat", "prechat_fields", "consent", "privacy_url",
        "consent_text", "consent_version", "max_file_bytes", "file_types", "stream_seconds",
    }  # fmt: skip


# -- origins and CORS ----------------------------------------------------------------------


def test_a_preflight_from_the_widgets_site_is_answered(widget: Widget) -> None:
    answer = widget.client.options(
        f"{widget.base}/messages",
        headers={
            "Origin": SITE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == SITE
    assert answer.headers["Access-Control-Allow-Headers"] == (
        "Authorization, Content-Type, Last-Event-ID"
    )
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in answer.headers


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "https://shop.example:444", "http://shop.example", "null"]
)
def test_another_origin_is_refused_everywhere(widget: Widget, origin: str) -> None:
    token, _ = widget.visitor()
    auth = {"Origin": origin, "Authorization": f"Bearer {token}"}
    for response in (
        widget.client.options(f"{widget.base}/messages", headers={"Origin": origin}),
        widget.client.get(f"{widget.base}/config", headers={"Origin": origin}),
        widget.client.post(f"{widget.base}/session", json={}, headers={"Origin": origin}),
        widget.client.post(f"{widget.base}/messages", json={"id": "c-00000001"}, headers=auth),
        widget.client.get(f"{widget.base}/messages", headers=auth),
        widget.client.get(f"{widget.base}/stream", headers=auth),
        widget.client.post(f"{widget.base}/read", json={"seq": 1}, headers=auth),
        widget.client.post(f"{widget.base}/uploads", headers=auth),
    ):
        _error(response, 403, "origin_not_allowed")
        assert "Access-Control-Allow-Origin" not in response.headers
    assert widget.journal() == []


def test_without_an_origin_only_a_same_origin_request_of_an_allowed_site_passes(
    runtime: Runtime, tenant: int
) -> None:
    """A browser sends no Origin on a same-origin GET: it says
    Sec-Fetch-Site instead, and the page is then on the bridge's own origin
    (the demo shop served beside it)."""
    own = _make(runtime, tenant, _settings={"origins": [SITE, "http://bridge.test"]})
    other = _make(runtime, tenant)
    same = {"Sec-Fetch-Site": "same-origin"}
    assert own.client.get(f"{own.base}/config", headers=same).status_code == 200
    _error(own.client.get(f"{own.base}/config"), 403, "origin_not_allowed")
    _error(
        own.client.get(f"{own.base}/config", headers={"Sec-Fetch-Site": "cross-site"}),
        403,
        "origin_not_allowed",
    )
    _error(other.client.get(f"{other.base}/config", headers=same), 403, "origin_not_allowed")


def test_an_unknown_key_is_not_found(widget: Widget) -> None:
    for response in (
        widget.client.get("/widget/nope/config", headers={"Origin": SITE}),
        widget.client.post("/widget/nope/session", json={}, headers={"Origin": SITE}),
    ):
        _error(response, 404, "not_found")


# -- sessions and tokens -------------------------------------------------------------------


def test_a_session_is_a_new_visitor_or_the_same_one(
    widget: Widget, runtime: Runtime, tenant: int
) -> None:
    token, visitor = widget.visitor()
    assert tokens.VISITOR_RE.fullmatch(visitor) and visitor not in token
    again = widget.session(token).get_json()
    assert again == {"token": token, "visitor_id": visitor}
    # a token of another widget, or junk: a new visitor
    other = _make(runtime, tenant)
    foreign, foreign_visitor = other.visitor()
    fresh = widget.session(foreign).get_json()
    assert fresh["visitor_id"] not in (visitor, foreign_visitor)
    assert widget.session("junk.token").get_json()["visitor_id"] != visitor


def test_a_forged_or_foreign_token_reads_and_writes_nothing(
    widget: Widget, runtime: Runtime, tenant: int
) -> None:
    token, visitor = widget.visitor()
    assert widget.send(token, "c-private-1", "my address is 1 Main St").status_code == 202
    widget.normalise()
    forged = tokens.visitor_token("a-guessed-secret-0123456789", widget.account_id, visitor)
    foreign = _make(runtime, tenant).adapter.visitor_token(visitor)  # same visitor id, other key
    for bad in (forged, foreign, "", "Bearer"):
        data = _error(widget.history(bad), 401, "invalid_token")
        assert "my address" not in json.dumps(data)
        _error(widget.send(bad, "c-forged-01"), 401, "invalid_token")
        _error(
            widget.client.get(f"{widget.base}/stream", headers=widget.headers(bad)),
            401,
            "invalid_token",
        )
    _error(
        widget.client.get(f"{widget.base}/messages", headers={"Origin": SITE}), 401, "invalid_token"
    )
    # another visitor of the same widget sees only their own conversation
    theirs, _ = widget.visitor()
    assert widget.history(theirs).get_json() == {"messages": [], "last": 0}
    assert [k for k, _ in widget.journal()] == [f"{visitor}:c-private-1"]


# -- messages --------------------------------------------------------------------------------


def test_a_message_is_journaled_then_read_back_once_normalised(widget: Widget) -> None:
    token, visitor = widget.visitor()
    answer = widget.send(
        token,
        "c-first-0001",
        "Здравствуйте! Do you ship to Kazan?",
        profile={"name": "Анна", "email": "anna@example.com"},
        context={
            "page_url": "https://shop.example/kettle?utm_source=yandex",
            "page_title": "Kettle",
            "language": "ru",
            "utm_first": {"utm_source": "google", "gclid": "g-1"},
            "utm_last": {"utm_source": "yandex"},
        },
    )
    assert answer.status_code == 202, answer.data
    assert answer.get_json() == {"id": "c-first-0001", "accepted": True}
    assert answer.headers["Access-Control-Allow-Origin"] == SITE
    assert widget.journal() == [(f"{visitor}:c-first-0001", "new")]
    assert widget.history(token).get_json() == {"messages": [], "last": 0}  # not normalised yet

    widget.normalise()
    assert widget.journal() == [(f"{visitor}:c-first-0001", "normalised")]
    page = widget.history(token).get_json()
    (message,) = page["messages"]
    assert page["last"] == message["seq"]
    assert (message["client_id"], message["from"], message["direction"]) == (
        "c-first-0001",
        "visitor",
        "in",
    )
    assert message["text"] == "Здравствуйте! Do you ship to Kazan?"
    assert message["sent_at"].endswith("Z") and message["attachments"] == []
    # what the CRM will get: the profile, both touches, the page
    with widget.rt.read_session() as session:
        stored = session.scalars(select(Message).where(Message.direction == "in")).one()
        profile = stored.payload["profile"]
    assert profile["display_name"] == "Анна" and profile["email"] == "anna@example.com"
    assert profile["utm"] == {
        "utm_source": "yandex",
        "first_utm_source": "google",
        "first_gclid": "g-1",
    }
    assert profile["page_url"] == "https://shop.example/kettle?utm_source=yandex"
    assert widget.history(token, after=message["seq"]).get_json() == {
        "messages": [],
        "last": message["seq"],
    }


def test_a_message_sent_again_with_its_id_is_one_message(widget: Widget) -> None:
    token, visitor = widget.visitor()
    for _ in range(3):
        answer = widget.send(token, "c-retried-01", "once")
        assert answer.status_code == 202 and answer.get_json()["accepted"] is True
    assert widget.journal() == [(f"{visitor}:c-retried-01", "new")]
    widget.normalise()
    assert [m["text"] for m in widget.history(token).get_json()["messages"]] == ["once"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"id": "short", "text": "x"}, 400, "invalid_id"),
        ({"id": "c-00000001", "text": "x" * 4001}, 400, "text_too_long"),
        ({"id": "c-00000001", "text": ""}, 400, "empty_message"),
        ({"id": "c-00000001", "text": "x", "files": ["not-a-ref"]}, 400, "invalid_file"),
        ({"id": "c-00000001", "text": "x", "consent": {"given": "yes"}}, 400, "invalid_consent"),
        ({"id": "c-00000001", "text": "x", "context": "page"}, 400, "invalid_context"),
    ],
)
def test_a_bad_message_is_refused_saying_why(
    widget: Widget, body: dict[str, Any], status: int, code: str
) -> None:
    token, _ = widget.visitor()
    answer = widget.client.post(f"{widget.base}/messages", json=body, headers=widget.headers(token))
    _error(answer, status, code)
    assert widget.journal() == []


def test_a_body_that_is_not_json_or_too_large(widget: Widget) -> None:
    token, _ = widget.visitor()
    url = f"{widget.base}/messages"
    _error(
        widget.client.post(
            url, data="id=1", content_type="text/plain", headers=widget.headers(token)
        ),
        415,
        "unsupported_media_type",
    )
    _error(
        widget.client.post(
            url, data="{oops", content_type="application/json", headers=widget.headers(token)
        ),
        400,
        "invalid_json",
    )
    huge = json.dumps({"id": "c-00000001", "text": "x", "pad": "y" * 70_000})
    _error(
        widget.client.post(
            url, data=huge, content_type="application/json", headers=widget.headers(token)
        ),
        413,
        "too_large",
    )
    assert widget.journal() == []


def test_consent_is_required_once_when_the_widget_asks_for_it(
    runtime: Runtime, tenant: int
) -> None:
    widget = _make(runtime, tenant, consent="checkbox", privacy_url="https://shop.example/privacy")
    token, visitor = widget.visitor()
    _error(widget.send(token, "c-no-consent"), 400, "consent_required")
    consent = {"given": True, "version": "1", "at": "2026-12-05T10:00:00Z", "page": SITE + "/"}
    assert widget.send(token, "c-consented", consent=consent).status_code == 202
    assert widget.send(token, "c-afterwards").status_code == 202  # remembered
    other, _ = widget.visitor()
    _error(widget.send(other, "c-other-one"), 400, "consent_required")  # per visitor
    assert [k for k, _ in widget.journal()] == [f"{visitor}:c-consented", f"{visitor}:c-afterwards"]
    widget.normalise()
    with runtime.read_session() as session:
        conversation = session.scalars(select(Conversation)).one()
        first = session.scalars(select(Message).order_by(Message.seq)).first()
        assert conversation.consent == "allowed"
        assert first is not None and first.payload["profile"]["consent"]["version"] == "1"


def test_a_phone_or_email_is_required_once_when_the_prechat_form_is(
    runtime: Runtime, tenant: int
) -> None:
    widget = _make(runtime, tenant, prechat="required")
    token, _ = widget.visitor()
    _error(widget.send(token, "c-anonymous"), 400, "prechat_required")
    # a name alone, or a phone that is not one, is not a contact
    _error(widget.send(token, "c-name-only", profile={"name": "Ann"}), 400, "prechat_required")
    _error(widget.send(token, "c-bad-phone", profile={"phone": "no"}), 400, "prechat_required")
    assert (
        widget.send(token, "c-with-phone", profile={"phone": "+7 912 345-67-89"}).status_code == 202
    )
    assert widget.send(token, "c-later-one").status_code == 202
    optional = _make(runtime, tenant, prechat="optional")
    token, _ = optional.visitor()
    assert optional.send(token, "c-optional-1").status_code == 202


# -- rate limits -------------------------------------------------------------------------------


def test_too_many_messages_are_refused_with_retry_after(widget: Widget) -> None:
    token, _ = widget.visitor()
    burst = int(APP["messages_burst"])
    for n in range(burst):
        assert widget.send(token, f"c-burst-{n:04d}").status_code == 202
    refused = widget.send(token, "c-burst-over")
    data = _error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60 and "try again" in data["message"]
    assert refused.headers["Access-Control-Allow-Origin"] == SITE  # the widget can read it
    assert "Retry-After" in refused.headers["Access-Control-Expose-Headers"]
    assert len(widget.journal()) == burst
    # another visitor has a bucket of their own
    other, _ = widget.visitor()
    assert widget.send(other, "c-other-0001").status_code == 202


def test_too_many_new_visitors_from_one_address(widget: Widget) -> None:
    token, _ = widget.visitor()
    for _ in range(int(APP["sessions_per_minute"]) - 1):
        assert widget.session().status_code == 200
    refused = widget.session()
    _error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    # a visitor who has a token keeps it, whatever the address did
    assert widget.session(token).status_code == 200
    other = widget.session(headers={}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200


# -- the long poll and the event stream --------------------------------------------------------


def _later(seconds: float, action: Any) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_long_poll_answers_as_soon_as_a_reply_is_stored(widget: Widget) -> None:
    token, visitor = widget.visitor()
    widget.send(token, "c-question-1", "Is it in stock?")
    widget.normalise()
    last = widget.history(token).get_json()["last"]
    started = time.monotonic()
    empty = widget.history(token, after=last, wait=0.5).get_json()
    assert empty == {"messages": [], "last": last} and time.monotonic() - started >= 0.45

    helper = _later(0.3, lambda: widget.reply(visitor, "Yes, 3 left", "crm-1"))
    started = time.monotonic()
    page = widget.history(token, after=last, wait=10).get_json()
    took = time.monotonic() - started
    helper.join()
    (reply,) = page["messages"]
    assert (reply["from"], reply["text"], reply["client_id"]) == ("operator", "Yes, 3 left", None)
    assert reply["status"] == "pending"  # visible from the moment it is stored
    assert took < 3.0, f"the long poll took {took:.1f} s after the reply"
    _error(widget.history(token, wait="soon"), 400, "invalid_wait")
    _error(widget.history(token, after="-1"), 400, "invalid_after")


def _frames(response: Any) -> Iterator[str]:
    """The stream's events as they come (a frame ends with a blank line)."""
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            yield frame


def _stream(widget: Widget, token: str, **headers: str) -> Any:
    return widget.client.get(
        f"{widget.base}/stream", headers=widget.headers(token, **headers), buffered=False
    )


def _events(frames: list[str]) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for frame in frames:
        fields = dict(
            line.split(": ", 1) for line in frame.splitlines() if not line.startswith(":")
        )
        if fields.get("event") == "message":
            out.append((int(fields["id"]), json.loads(fields["data"])))
    return out


def test_the_stream_carries_replies_and_resumes_without_repeats(
    widget: Widget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "PING_SECONDS", 30.0)  # no ping: only news wakes it
    token, visitor = widget.visitor()
    widget.send(token, "c-question-1", "When do you open?")
    widget.normalise()
    widget.reply(visitor, "At nine", "crm-1")
    # delivered, as a worker does at once (the core announces a reply that
    # schedules a delivery: one stored behind a pending one is not)
    assert run_outbound(widget.rt, widget.conversation(visitor).id) == "idle"

    # a reply stored before the stream opened, then one while it is open
    response = _stream(widget, token)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    helper = _later(0.3, lambda: widget.reply(visitor, "Until six", "crm-2"))
    started, arrived = time.monotonic(), {}
    frames = []
    for frame in _frames(response):
        frames.append(frame)
        for _, data in _events([frame]):
            arrived[data["text"]] = time.monotonic() - started
    took = time.monotonic() - started
    helper.join()
    events = _events(frames)
    assert [d["text"] for _, d in events] == ["When do you open?", "At nine", "Until six"]
    assert [seq for seq, _ in events] == [d["seq"] for _, d in events]
    # woken by the news (without it, found only when the stream ends: after
    # 0.75 to 1 s, each stream's length drawn from the window's last quarter)
    assert arrived["Until six"] < 0.7, arrived
    assert 0.7 <= took < 2.0, took  # the deployment's stream_seconds
    assert frames[0] == ": open"
    assert frames[-1] == "retry: 1000" and ": ping" not in frames

    # resumed from the last id seen: only what came after, nothing twice
    # (and a quiet stream pings)
    monkeypatch.setattr(api, "PING_SECONDS", 0.3)
    widget.reply(visitor, "On Sundays too", "crm-3")
    last_seen = events[-1][0]
    frames = list(_frames(_stream(widget, token, **{"Last-Event-ID": str(last_seen)})))
    again = _events(frames)
    assert [d["text"] for _, d in again] == ["On Sundays too"] and ": ping" in frames
    # Last-Event-ID wins over ?after=
    resumed = widget.client.get(
        f"{widget.base}/stream?after=0",
        headers=widget.headers(token, **{"Last-Event-ID": str(again[-1][0])}),
        buffered=False,
    )
    assert _events(list(_frames(resumed))) == []


def test_a_stream_beyond_the_servers_share_of_threads_is_refused(
    widget: Widget, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = widget.visitor()
    monkeypatch.setattr(api.HELD, "count", api.HELD.limit(widget.adapter.app.held_connections))
    refused = widget.client.get(f"{widget.base}/stream", headers=widget.headers(token))
    _error(refused, 503, "busy")
    assert refused.headers["Retry-After"] == "5"
    _error(widget.history(token, wait=5), 503, "busy")
    assert widget.history(token).status_code == 200  # a plain read holds nothing


def test_what_a_web_process_may_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """All its threads but a quarter (at most 16, at least 2) for the
    webhooks, read from gunicorn's command line, else WEB_THREADS; or what
    the deployment says (WEBCHAT_HELD_CONNECTIONS)."""
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    monkeypatch.delenv("WEB_THREADS", raising=False)
    monkeypatch.setattr(api.sys, "argv", ["gunicorn", "--threads", "232", "wsgi:app"])
    assert (api.web_threads(), api.HELD.limit(0)) == (232, 216)
    monkeypatch.setattr(api.sys, "argv", ["gunicorn", "--threads=64"])
    assert api.HELD.limit(0) == 48
    monkeypatch.setattr(api.sys, "argv", ["pytest"])
    monkeypatch.setenv("WEB_THREADS", "8")
    assert api.HELD.limit(0) == 6
    monkeypatch.delenv("WEB_THREADS")
    assert api.web_threads() == 64
    assert api.HELD.limit(5) == 5


# -- uploads -------------------------------------------------------------------------------------


def _upload(widget: Widget, token: str, data: bytes, name: str, mime: str) -> Any:
    return widget.client.post(
        f"{widget.base}/uploads",
        data={"file": (io.BytesIO(data), name, mime)},
        content_type="multipart/form-data",
        headers=widget.headers(token),
    )


def test_an_upload_is_kept_and_a_message_carries_it(widget: Widget) -> None:
    token, visitor = widget.visitor()
    answer = _upload(widget, token, PNG, "../../etc/photo.png", "image/png")
    assert answer.status_code == 201, answer.data
    upload = answer.get_json()
    assert (upload["name"], upload["size"], upload["mime_type"]) == (
        "photo.png",
        len(PNG),
        "image/png",
    )
    assert widget.send(token, "c-with-file", "", files=[upload["ref"]]).status_code == 202
    widget.normalise()
    (message,) = widget.history(token).get_json()["messages"]
    (attachment,) = message["attachments"]
    assert message["kind"] == "photo" and attachment["file_name"] == "photo.png"
    assert attachment["url"].startswith("http://bridge.test/files/")
    path = attachment["url"].removeprefix("http://bridge.test")
    assert widget.client.get(path).data == PNG
    # another visitor cannot send it
    other, _ = widget.visitor()
    _error(widget.send(other, "c-stolen-01", "", files=[upload["ref"]]), 400, "invalid_file")
    assert [k for k, _ in widget.journal()] == [f"{visitor}:c-with-file"]


def test_an_upload_too_large_or_of_a_type_not_taken(runtime: Runtime, tenant: int) -> None:
    widget = _make(runtime, tenant, max_file_bytes=2048)
    token, _ = widget.visitor()
    data = _error(
        _upload(widget, token, PNG + b"\x00" * 2048, "big.png", "image/png"), 413, "file_too_large"
    )
    assert "2048" in data["message"]
    _error(
        _upload(widget, token, b"\x00" * 200_000, "huge.png", "image/png"), 413, "file_too_large"
    )
    _error(
        _upload(widget, token, b"<html><script>x</script>", "a.png", "image/png"),
        415,
        "file_type_not_allowed",
    )
    _error(
        _upload(widget, token, b"<svg/>", "a.svg", "image/svg+xml"), 415, "file_type_not_allowed"
    )
    _error(
        widget.client.post(
            f"{widget.base}/uploads",
            data=PNG,
            content_type="image/png",
            headers=widget.headers(token),
        ),
        415,
        "unsupported_media_type",
    )
    _error(
        widget.client.post(
            f"{widget.base}/uploads",
            data={"other": (io.BytesIO(PNG), "a.png")},
            content_type="multipart/form-data",
            headers=widget.headers(token),
        ),
        400,
        "missing_file",
    )
    assert _upload(widget, token, PNG, "ok.png", "image/png").status_code == 201


def test_uploads_are_rate_limited_per_visitor(widget: Widget) -> None:
    token, _ = widget.visitor()
    for _ in range(int(APP["uploads_per_minute"])):
        assert _upload(widget, token, PNG, "a.png", "image/png").status_code == 201
    refused = _upload(widget, token, PNG, "a.png", "image/png")
    _error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1


# -- read receipts ---------------------------------------------------------------------------------


def test_reading_a_reply_reaches_the_core_as_read(widget: Widget) -> None:
    token, visitor = widget.visitor()
    widget.send(token, "c-question-1", "Hi")
    widget.normalise()
    widget.reply(visitor, "Hello!", "crm-1")
    conversation = widget.conversation(visitor)
    assert run_outbound(widget.rt, conversation.id) == "idle"  # "sent": confirmed
    messages = widget.history(token).get_json()["messages"]
    reply = messages[-1]
    assert reply["from"] == "operator" and reply["status"] == "sent"

    answer = widget.client.post(
        f"{widget.base}/read", json={"seq": reply["seq"]}, headers=widget.headers(token)
    )
    assert answer.status_code == 202 and answer.get_json() == {"seq": reply["seq"], "read": 1}
    again = widget.client.post(
        f"{widget.base}/read", json={"seq": reply["seq"]}, headers=widget.headers(token)
    )
    assert again.status_code == 202
    assert widget.journal()[-1] == (f"{visitor}:read:{reply['seq']}", "new")
    assert len(widget.journal()) == 2  # the receipt sent again is one
    widget.normalise()
    with widget.rt.read_session() as session:
        stored = session.scalars(select(Message).where(Message.uid == reply["id"])).one()
        assert stored.payload.get("delivery") == "read"
    # nothing to mark: answered, nothing journaled
    nothing = widget.client.post(
        f"{widget.base}/read", json={"seq": 1}, headers=widget.headers(token)
    )
    assert nothing.get_json() == {"seq": 1, "read": 0} and len(widget.journal()) == 2
    _error(
        widget.client.post(f"{widget.base}/read", json={"seq": "x"}, headers=widget.headers(token)),
        400,
        "invalid_seq",
    )


# -- bridge widget create --------------------------------------------------------------------


def test_widget_create_connects_and_prints_the_snippet(runtime: Runtime, tenant: int) -> None:
    settings = runtime.settings
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BRIDGE_VAR_DIR": str(settings.var_dir),
        "BRIDGE_MAPPINGS_DIR": str(settings.mappings_dir),
        "BRIDGE_PUBLIC_URL": "https://bridge.example",
    }
    args = ["widget", "create", "--tenant", "acme", "--origin", "https://shop.example"]
    result = CliRunner().invoke(
        main,
        [
            *args,
            "--origin",
            "https://m.shop.example",
            "--title",
            "Ask us",
            "--consent",
            "checkbox",
            "--email-after-minutes",
            "0",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    with runtime.read_session() as session:
        (account,) = session.scalars(select(ChannelAccount).where(ChannelAccount.kind == "webchat"))
        key, stored = account.key, dict(account.settings)
    lines = result.stdout.splitlines()
    assert lines[-1] == f'<script src="https://bridge.example/widget/{key}.js" async></script>'
    assert stored["origins"] == ["https://shop.example", "https://m.shop.example"]
    assert (stored["title"], stored["consent"]) == ("Ask us", "checkbox")
    assert stored["email_after_minutes"] == 0
    # the same site twice is one widget; a bad origin says what is wrong
    twice = CliRunner().invoke(main, args, env=env)
    assert twice.exit_code == 1 and "connected already" in twice.output
    bad = CliRunner().invoke(
        main, ["widget", "create", "--tenant", "acme", "--origin", "shop"], env=env
    )
    assert bad.exit_code == 1 and "scheme://host" in bad.output and "Traceback" not in bad.output
    wrong = CliRunner().invoke(main, [*args, "--prechat", "sometimes"], env=env)
    assert wrong.exit_code == 2 and "sometimes" in wrong.output

    # update: the options given change, the rest and the key stay
    account = str(account.id)
    changed = CliRunner().invoke(
        main, ["widget", "update", "--account", account, "--color", "#112233"], env=env
    )
    assert changed.exit_code == 0, changed.output
    with runtime.read_session() as session:
        (row,) = session.scalars(select(ChannelAccount).where(ChannelAccount.kind == "webchat"))
        assert row.key == key and row.settings["color"] == "#112233"
        assert row.settings["title"] == "Ask us" and len(row.settings["origins"]) == 2
    moved = CliRunner().invoke(
        main, ["widget", "update", "--account", account, "--origin", "https://new.example"], env=env
    )
    assert moved.exit_code == 0, moved.output
    refused = CliRunner().invoke(
        main, ["widget", "update", "--account", account, "--color", "red"], env=env
    )
    assert refused.exit_code == 1 and "--color" in refused.output
    with runtime.read_session() as session:
        (row,) = session.scalars(select(ChannelAccount).where(ChannelAccount.kind == "webchat"))
        assert row.settings["origins"] == ["https://new.example"]
        assert row.settings["color"] == "#112233"
    again = CliRunner().invoke(main, ["widget", "snippet", "--account", account], env=env)
    assert again.stdout.strip() == lines[-1]
    missing = CliRunner().invoke(main, ["widget", "snippet", "--account", "424242"], env=env)
    assert missing.exit_code == 1 and "no web chat widget 424242" in missing.output


def test_the_widget_reads_as_dataclass_settings(widget: Widget) -> None:
    """What the API reads is the account's typed settings, not raw JSON."""
    assert dataclasses.is_dataclass(widget.adapter.settings)
    assert widget.adapter.settings.origins == (SITE, "http://localhost:5000")
