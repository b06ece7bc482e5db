"""Each CRM call for a conversation's trace (``bridge.crm_calls``): what a
metered client notes inside a recording, what is kept of a URL, where it
goes in Redis (a real one), and that recording never breaks the work."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import requests
import responses

from bridge import crm_calls
from bridge.errors import RetryableError
from bridge.http import HttpClient
from bridge.runtime import Runtime


@pytest.mark.parametrize(
    ("url", "path"),
    [
        # a Bitrix24 incoming webhook's code is a key: never kept
        (
            "https://acme.bitrix24.ru/rest/1/8g9l071eismy9q2l/crm.lead.add.json",
            "/rest/1/…/crm.lead.add.json",
        ),
        # a search's query names the person: dropped with the host
        ("https://acme.amocrm.ru/api/v4/contacts?query=%2B79991234567", "/api/v4/contacts"),
        (
            "https://api.hubapi.com/crm/v3/objects/deals/100003?archived=false",
            "/crm/v3/objects/deals/100003",
        ),
        # ids and chat ids (with their dashes) stay
        (
            "https://amojo.amocrm.ru/v2/origin/custom/3a7f0a2e-1c9b-4f7e-9d2a-5b6c7d8e9f01/chats",
            "/v2/origin/custom/3a7f0a2e-1c9b-4f7e-9d2a-5b6c7d8e9f01/chats",
        ),
        ("https://api.hubapi.com", "/"),
    ],
)
def test_a_call_keeps_its_path_without_keys_or_query(url: str, path: str) -> None:
    assert crm_calls.safe_path(url) == path


def _client(runtime: Runtime) -> HttpClient:
    client = HttpClient("https://api.crm.test")
    client.metered = ("hubspot", 1)
    return client


def test_a_metered_client_notes_each_call_for_the_conversations_recording(
    runtime: Runtime,
) -> None:
    client = _client(runtime)
    with responses.RequestsMock() as mock:
        mock.post("https://api.crm.test/crm/v3/objects/contacts", json={"id": "1"}, status=201)
        mock.get("https://api.crm.test/crm/v3/objects/deals/7", status=503)
        mock.get("https://api.crm.test/down", body=requests.ConnectionError("reset"))
        with crm_calls.recording(runtime, [11, 12, 11]):
            client.request("POST", "/crm/v3/objects/contacts", json={"email": "a@b.test"})
            with pytest.raises(RetryableError):
                client.request("GET", "/crm/v3/objects/deals/7")
            with pytest.raises(RetryableError):
                client.request("GET", "/down")
        client.request("POST", "/crm/v3/objects/contacts", json={})  # no recording: not noted
    for conversation in (11, 12):  # a batch's calls serve each of its conversations
        calls = crm_calls.recent(runtime.redis, conversation)
        assert [(c.method, c.path, c.status) for c in calls] == [
            ("POST", "/crm/v3/objects/contacts", 201),
            ("GET", "/crm/v3/objects/deals/7", 503),
            ("GET", "/down", None),
        ]
        assert calls[0].at <= calls[1].at <= calls[2].at and all(c.ms >= 0 for c in calls)
    assert crm_calls.recent(runtime.redis, 13) == []
    stored = runtime.redis.lrange("bridge:crm-calls:11", 0, -1)
    assert all("a@b.test" not in row.decode() for row in stored)  # no body, ever


def test_an_unmetered_client_and_nested_recordings(runtime: Runtime) -> None:
    plain = HttpClient("https://api.crm.test")  # a channel's client: not the CRM's
    client = _client(runtime)
    with responses.RequestsMock() as mock:
        mock.get("https://api.crm.test/a", json={})
        mock.get("https://api.crm.test/b", json={})
        with crm_calls.recording(runtime, [21]):
            plain.request("GET", "/a")
            client.request("GET", "/a")
            with crm_calls.recording(runtime, [22, 23]):  # a batch inside the job
                client.request("GET", "/b")
            client.request("GET", "/a")
    assert [c.path for c in crm_calls.recent(runtime.redis, 21)] == ["/a", "/a"]
    assert [c.path for c in crm_calls.recent(runtime.redis, 22)] == ["/b"]
    assert [c.path for c in crm_calls.recent(runtime.redis, 23)] == ["/b"]


def test_only_the_newest_are_kept_and_they_expire(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crm_calls, "KEEP", 3)
    with crm_calls.recording(runtime, [31]):
        for n in range(5):
            crm_calls.note("GET", f"https://x.test/n/{n}", 200, float(n), 1.0)
    assert [c.path for c in crm_calls.recent(runtime.redis, 31)] == ["/n/2", "/n/3", "/n/4"]
    assert 0 < runtime.redis.ttl("bridge:crm-calls:31") <= crm_calls.TTL
    runtime.redis.lpush("bridge:crm-calls:31", json.dumps({"other": 1}))  # another version
    assert len(crm_calls.recent(runtime.redis, 31)) == 2  # skipped, the rest read


def test_a_redis_that_does_not_answer_loses_the_calls_not_the_work(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Down:
        """A Redis whose every pipeline fails as a refused connection does."""

        def pipeline(self, transaction: bool = False) -> Any:
            return self

        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any, **kwargs: Any) -> None:
                if name == "execute":
                    raise redis.ConnectionError("Connection refused")

            return fail

    class Rt:
        redis = Down()

    monkeypatch.setattr(crm_calls, "_warned", False)
    for _ in range(2):
        with crm_calls.recording(Rt(), [41]):  # type: ignore[arg-type]
            crm_calls.note("GET", "https://x.test/a", 200, 0.0, 1.0)
    warnings = [r for r in caplog.records if "CRM calls not recorded" in r.getMessage()]
    assert len(warnings) == 1  # once per outage
