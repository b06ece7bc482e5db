"""Sandbox amoCRM: the Sources API and digital pipeline stage webhooks; and
the adapter's setup step that names the chats' sources, against it.

Neither is in FACTS.md (the stored contracts): the Sources API's fields are
amoCRM developers' crm_platform/sources-api as the official PHP SDK's
``SourceModel`` names them, and a pipeline stage's webhook is read as the
account-webhook format of FACTS 1.12; both are UNCONFIRMED switches of the
sandbox (``sources_api``, ``dp_webhooks``). Payloads here are ours. Account
webhook bodies are decoded with this file's own PHP bracket parser.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from flask import Flask, jsonify, request

from bridge.errors import PermanentError
from bridge.http import HttpClient
from bridge.model import ChannelLink, CrmAccountInfo
from crm_adapters.amocrm import AmoCrmAdapter
from crm_adapters.amocrm.sources import ensure_sources, source_name
from sandbox.amocrm import (
    DEMO_ACCOUNT_ID,
    DEMO_AMOJO_ID,
    DEMO_CHANNEL_ID,
    DEMO_CHANNEL_SECRET,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    create_app,
    sign_request,
)
from tests.support.fakes import MemoryCredentials
from tests.support.servers import serve_wsgi

SUB = "demo"
MAIN, PARTNERS = 7001001, 7001002
FIRST_STAGE, SECOND_STAGE, THIRD_STAGE = 61001002, 61001003, 61001004
PARTNERS_NEW = 61002002
REDIRECT = "https://bridge.test/oauth/amocrm/callback"
SCOPE = f"{DEMO_CHANNEL_ID}_{DEMO_AMOJO_ID}"
HAL, PROBLEM = "application/hal+json", "application/problem+json"


# -- helpers ------------------------------------------------------------------------------


def make(**config: Any) -> Any:
    config.setdefault("per_second", 10_000)
    return create_app(config).test_client()


def token(client: Any) -> str:
    code = client.post(
        "/_install",
        json={"client_id": DEMO_CLIENT_ID, "redirect_uri": REDIRECT, "subdomain": SUB},
    ).get_json()["code"]
    answer = client.post(
        f"/{SUB}/oauth2/access_token",
        json={
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
        },
    )
    assert answer.status_code == 200, answer.get_json()
    return str(answer.get_json()["access_token"])


def call(client: Any, method: str, path: str, tok: str, body: Any = None) -> Any:
    return client.open(
        f"/{SUB}/api/v4/{path}",
        method=method,
        headers={"Authorization": f"Bearer {tok}"},
        **({"json": body} if body is not None else {}),
    )


def account_state(client: Any) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/_state", query_string={"account": SUB}).get_json()
    return data["accounts"][0] if "accounts" in data else data


def amojo(client: Any, path: str, body: dict[str, Any]) -> Any:
    """A signed Chats API call (FACTS 1.13's scheme, signed by the sandbox's helper)."""
    raw = json.dumps(body).encode()
    date = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    headers = sign_request(DEMO_CHANNEL_SECRET, "POST", path, raw, date)
    return client.post(f"/amojo{path}", data=raw, headers=headers)


def new_lead(client: Any, tok: str, **over: Any) -> int:
    answer = call(client, "POST", "leads", tok, [{"name": "Deal", **over}])
    assert answer.status_code == 200, answer.get_json()
    return int(answer.get_json()["_embedded"]["leads"][0]["id"])


def parse_php(body: str) -> dict[str, Any]:
    """PHP bracket notation into nested dicts (our own parser)."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, strict_parsing=True):
        head = key.split("[", 1)[0]
        node = out
        names = [head, *re.findall(r"\[([^\]]*)\]", key[len(head) :])]
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value
    return out


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A real HTTP receiver: records each request, answers ``answers["status"]``."""
    got: list[dict[str, Any]] = []
    answers = {"status": 200}
    app = Flask("receiver")

    @app.route("/<path:path>", methods=["POST"])
    def hook(path: str) -> Any:
        got.append(
            {
                "path": "/" + path,
                "args": request.args.to_dict(),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": request.get_data(as_text=True),
            }
        )
        return jsonify({"n": len(got)}), answers["status"]

    with serve_wsgi(app) as server:
        yield {"url": server.url, "got": got, "answers": answers}


SOURCE = {"name": "WhatsApp · +1 555 0100", "external_id": "whatsapp-3", "pipeline_id": MAIN}


# -- the Sources API ---------------------------------------------------------------------------


def test_sources_are_created_listed_and_read() -> None:
    client = make()
    tok = token(client)
    assert call(client, "GET", "sources", tok).status_code == 204  # none yet (FACTS 1.3)
    made = call(
        client,
        "POST",
        "sources",
        tok,
        [
            {**SOURCE, "request_id": "wa"},
            {"name": "Telegram · Demo bot", "external_id": "telegram-1", "pipeline_id": PARTNERS},
        ],
    )
    assert made.status_code == 200 and made.content_type == HAL
    answers = made.get_json()["_embedded"]["sources"]
    assert [(s["request_id"], s["external_id"], s["name"]) for s in answers] == [
        ("wa", "whatsapp-3", SOURCE["name"]),
        ("1", "telegram-1", "Telegram · Demo bot"),  # the index when omitted
    ]
    listed = call(client, "GET", "sources", tok).get_json()["_embedded"]["sources"]
    assert [(s["id"], s["pipeline_id"], s["default"]) for s in listed] == [
        (answers[0]["id"], MAIN, False),
        (answers[1]["id"], PARTNERS, False),
    ]
    wanted = call(client, "GET", "sources?filter[external_id]=telegram-1", tok).get_json()
    assert [s["name"] for s in wanted["_embedded"]["sources"]] == ["Telegram · Demo bot"]
    one = call(client, "GET", f"sources/{answers[0]['id']}", tok).get_json()
    assert one["external_id"] == "whatsapp-3" and one["account_id"] == DEMO_ACCOUNT_ID
    assert call(client, "GET", "sources/999", tok).status_code == 204  # unknown id: as any
    assert [s["external_id"] for s in account_state(client)["sources"]] == [
        "whatsapp-3",
        "telegram-1",
    ]


@pytest.mark.parametrize(
    ("item", "path", "code"),
    [
        ({**SOURCE, "name": ""}, "name", "NotBlank"),
        ({**SOURCE, "name": 5}, "name", "InvalidType"),
        ({k: v for k, v in SOURCE.items() if k != "external_id"}, "external_id", "NotBlank"),
        ({k: v for k, v in SOURCE.items() if k != "pipeline_id"}, "pipeline_id", "NotBlank"),
        ({**SOURCE, "pipeline_id": "7001001"}, "pipeline_id", "InvalidType"),
        ({**SOURCE, "pipeline_id": 1}, "pipeline_id", "NotSupportedChoice"),
        ({**SOURCE, "default": "yes"}, "default", "InvalidType"),
    ],
)
def test_an_invalid_source_is_refused_whole(item: dict[str, Any], path: str, code: str) -> None:
    client = make()
    tok = token(client)
    answer = call(client, "POST", "sources", tok, [{**SOURCE, "external_id": "ok-1"}, item])
    assert answer.status_code == 400 and answer.content_type == PROBLEM
    body = answer.get_json()
    assert (body["title"], body["status"], body["detail"]) == (
        "Bad Request",
        400,
        "Request validation failed",
    )
    (failed,) = body["validation-errors"]
    assert failed["request_id"] == "1"
    assert [(e["path"], e["code"]) for e in failed["errors"]] == [(path, code)]
    assert account_state(client)["sources"] == []  # nothing of the batch was made


def test_an_external_id_is_unique_in_the_account() -> None:
    client = make()
    tok = token(client)
    assert call(client, "POST", "sources", tok, [SOURCE]).status_code == 200
    again = call(client, "POST", "sources", tok, [SOURCE]).get_json()
    assert again["validation-errors"][0]["errors"][0]["path"] == "external_id"
    twice = call(client, "POST", "sources", tok, [{**SOURCE, "external_id": "x"}] * 2).get_json()
    assert [i["request_id"] for i in twice["validation-errors"]] == ["1"]
    assert len(account_state(client)["sources"]) == 1


def test_an_account_without_the_sources_api_answers_404() -> None:
    client = make(sources_api=False)
    tok = token(client)
    for method, body in (("GET", None), ("POST", [SOURCE])):
        answer = call(client, method, "sources", tok, body)
        assert answer.status_code == 404 and answer.content_type == PROBLEM
    assert client.post("/_config", json={"sources_api": True}).status_code == 200
    assert call(client, "POST", "sources", tok, [SOURCE]).status_code == 200


def test_a_chat_shows_the_name_of_its_registered_source() -> None:
    client = make()
    tok = token(client)
    connect = {"account_id": DEMO_AMOJO_ID, "title": "Bridge", "hook_api_version": "v2"}
    assert amojo(client, f"/v2/origin/custom/{DEMO_CHANNEL_ID}/connect", connect).status_code == 200
    for conversation, source in (("c-wa", "whatsapp-3"), ("c-vk", "vk-5"), ("c-none", None)):
        body: dict[str, Any] = {
            "conversation_id": conversation,
            "user": {"id": f"u-{conversation}", "name": "Ann"},
        }
        if source:
            body["source"] = {"external_id": source}
        assert amojo(client, f"/v2/origin/custom/{SCOPE}/chats", body).status_code == 200

    def shown() -> dict[str, Any]:
        return {c["conversation_id"]: c["source_name"] for c in account_state(client)["chats"]}

    assert shown() == {"c-wa": None, "c-vk": None, "c-none": None}  # only the id so far
    assert call(client, "POST", "sources", tok, [SOURCE]).status_code == 200
    assert shown() == {"c-wa": SOURCE["name"], "c-vk": None, "c-none": None}


# -- digital pipeline stage webhooks --------------------------------------------------------------


def test_a_lead_moved_into_the_stage_is_posted_in_the_webhook_format(
    receiver: dict[str, Any],
) -> None:
    url = receiver["url"] + "/webhooks/crm/amocrm/k3y/cascade?text=Hi&channels=telegram"
    client = make(
        webhooks_on_api_changes=False,
        dp_webhooks=[{"pipeline_id": MAIN, "status_id": THIRD_STAGE, "url": url}],
    )
    tok = token(client)
    lead = new_lead(client, tok)
    other = client.post("/_lead_status", json={"lead_id": lead, "status_id": SECOND_STAGE})
    assert other.get_json()["dp_webhooks"] == [] and receiver["got"] == []  # not that stage
    moved = client.post("/_lead_status", json={"lead_id": lead, "status_id": THIRD_STAGE})
    (record,) = moved.get_json()["dp_webhooks"]
    assert (record["event"], record["status"], record["ok"], record["webhook_id"]) == (
        "digital_pipeline",
        200,
        True,
        None,
    )
    (hit,) = receiver["got"]
    assert hit["path"] == "/webhooks/crm/amocrm/k3y/cascade"
    assert hit["args"] == {"text": "Hi", "channels": "telegram"}
    assert hit["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert hit["headers"]["user-agent"] == "amoCRM-WebHook-client/1.0"
    data = parse_php(hit["body"])
    status = data["leads"]["status"]["0"]
    assert (status["id"], status["status_id"], status["pipeline_id"]) == (
        str(lead),
        str(THIRD_STAGE),
        str(MAIN),
    )
    assert status["old_status_id"] == str(SECOND_STAGE)
    assert data["account"] == {
        "subdomain": SUB,
        "id": str(DEMO_ACCOUNT_ID),
        "_links": {"self": "https://demo.amocrm.ru"},
    }
    again = client.post("/_lead_status", json={"lead_id": lead, "status_id": THIRD_STAGE})
    assert again.get_json()["dp_webhooks"] == []  # no move: nothing


def test_an_api_patch_into_the_stage_fires_it_whatever_the_switch(
    receiver: dict[str, Any],
) -> None:
    client = make(
        webhooks_on_api_changes=False,
        dp_webhooks=[
            {"status_id": SECOND_STAGE, "url": receiver["url"] + "/dp", "action": "update"},
        ],
    )
    tok = token(client)
    lead = new_lead(client, tok)
    moved = call(client, "PATCH", f"leads/{lead}", tok, {"status_id": SECOND_STAGE})
    assert moved.status_code == 200
    (delivery,) = _wait_deliveries(client, 1)  # sent after the answer
    assert (delivery["event"], delivery["url"]) == ("digital_pipeline", receiver["url"] + "/dp")
    (hit,) = receiver["got"]
    assert parse_php(hit["body"])["leads"]["update"]["0"]["status_id"] == str(SECOND_STAGE)


def test_a_shared_stage_fires_only_in_the_hook_s_pipeline(receiver: dict[str, Any]) -> None:
    """Won (142) is every pipeline's (FACTS 1.8): ``pipeline_id`` tells them apart."""
    client = make(
        webhooks_on_api_changes=False,
        dp_webhooks=[{"pipeline_id": PARTNERS, "status_id": 142, "url": receiver["url"] + "/w"}],
    )
    tok = token(client)
    main_lead = new_lead(client, tok)
    partners_lead = new_lead(client, tok, pipeline_id=PARTNERS, status_id=PARTNERS_NEW)
    won = {"status_id": 142}
    in_main = client.post("/_lead_status", json={"lead_id": main_lead, **won})
    assert in_main.get_json()["dp_webhooks"] == []
    in_partners = client.post("/_lead_status", json={"lead_id": partners_lead, **won})
    assert [d["status"] for d in in_partners.get_json()["dp_webhooks"]] == [200]
    (hit,) = receiver["got"]
    assert parse_php(hit["body"])["leads"]["status"]["0"]["id"] == str(partners_lead)


def test_a_failed_stage_webhook_is_retried_with_the_same_body(receiver: dict[str, Any]) -> None:
    client = make(
        webhooks_on_api_changes=False,
        webhook_disable_after=1,
        dp_webhooks=[{"status_id": SECOND_STAGE, "url": receiver["url"] + "/dp"}],
    )
    tok = token(client)
    lead = new_lead(client, tok)
    receiver["answers"]["status"] = 502
    moved = client.post("/_lead_status", json={"lead_id": lead, "status_id": SECOND_STAGE})
    (first,) = moved.get_json()["dp_webhooks"]
    assert (first["status"], first["ok"], first["attempt"]) == (502, False, 1)
    # FACTS 1.12's table: the next attempt 5 minutes later (the sandbox clock)
    (pending,) = client.get("/_webhooks").get_json()["pending"]
    assert (pending["event"], pending["attempt"]) == ("digital_pipeline", 2)
    assert pending["due_at"] - first["at"] == 300
    flushed = client.post("/_webhooks", json={"flush": True}).get_json()["delivered"]
    assert [(d["attempt"], d["status"]) for d in flushed] == [(2, 502)]
    receiver["answers"]["status"] = 200
    flushed = client.post("/_webhooks", json={"flush": True}).get_json()["delivered"]
    assert [(d["attempt"], d["ok"]) for d in flushed] == [(3, True)]
    bodies = {hit["body"] for hit in receiver["got"]}
    assert len(receiver["got"]) == 3 and len(bodies) == 1  # the very same body each time
    assert client.get("/_webhooks").get_json()["pending"] == []


@pytest.mark.parametrize(
    "hooks",
    [
        {"status_id": 1, "url": "http://x"},
        [{"url": "http://x"}],
        [{"status_id": "61001002", "url": "http://x"}],
        [{"status_id": 1, "url": "ftp://x"}],
        [{"status_id": 1, "url": "http://x", "action": "delete"}],
        [{"status_id": 1, "url": "http://x", "extra": 1}],
    ],
)
def test_bad_dp_webhooks_config_is_refused(hooks: Any) -> None:
    with pytest.raises(ValueError, match="dp_webhooks"):
        create_app({"dp_webhooks": hooks})
    answer = make().post("/_config", json={"dp_webhooks": hooks})
    assert answer.status_code == 400


def _wait_deliveries(client: Any, count: int) -> list[dict[str, Any]]:
    """The webhook deliveries once ``count`` are recorded (a PATCH's hooks go
    out after the answer, on the sandbox's sender threads)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found: list[dict[str, Any]] = account_state(client)["webhook_deliveries"]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} deliveries")


# -- the adapter's setup step against the sandbox (crm_adapters/amocrm/sources.py) -------------


@dataclass(frozen=True)
class PipelineLink(ChannelLink):
    """A channel link carrying its mapping rule's pipeline (a field the core
    is asked to add; ``ensure_sources`` reads it when present)."""

    pipeline: str = ""


@pytest.fixture
def adapter() -> Iterator[AmoCrmAdapter]:
    """A tenant on a long-lived token, against a served sandbox."""
    with serve_wsgi(create_app({"per_second": 10_000})) as server:
        made = requests.post(f"{server.url}/_long_lived_token", json={"subdomain": SUB}, timeout=10)
        made.raise_for_status()
        installed = AmoCrmAdapter.token_credentials(f"{SUB}:{made.json()['token']}")
        api_base = f"{server.url}/{{subdomain}}"
        account = CrmAccountInfo(
            tenant_id=1,
            kind="amocrm",
            account_id=installed.account_id,
            settings=dict(installed.settings),
            api_base=api_base,
        )
        credentials = MemoryCredentials(dict(installed.credentials))
        yield AmoCrmAdapter(account, credentials, HttpClient(api_base))


def sources_of(adapter: AmoCrmAdapter) -> list[tuple[str, str, int]]:
    body = adapter.api.json("GET", "/api/v4/sources") or {}
    return [(s["external_id"], s["name"], s["pipeline_id"]) for s in body["_embedded"]["sources"]]


def test_the_setup_step_names_sources_in_the_link_s_pipeline(adapter: AmoCrmAdapter) -> None:
    links = [
        PipelineLink(
            id="3",
            kind="whatsapp",
            name="+1 555 0100",
            identifier="pn",
            title="WhatsApp",
            pipeline=str(PARTNERS),
        ),
        ChannelLink(id="1", kind="telegram", name="Telegram", identifier="42", title="Telegram"),
    ]
    made = ensure_sources(adapter, links)
    assert set(made) == {"whatsapp-3", "telegram-1"}
    assert sources_of(adapter) == [
        ("whatsapp-3", "WhatsApp · +1 555 0100", PARTNERS),
        ("telegram-1", "Telegram", MAIN),  # no pipeline given: the main one (FACTS 1.8)
    ]
    assert ensure_sources(adapter, links) == made  # read back, nothing made twice
    assert len(sources_of(adapter)) == 2


def test_a_refused_source_fails_the_setup_step(adapter: AmoCrmAdapter) -> None:
    link = PipelineLink(
        id="3", kind="whatsapp", name="n", identifier="pn", title="WhatsApp", pipeline="12345"
    )
    with pytest.raises(PermanentError, match="pipeline_id"):
        ensure_sources(adapter, [link])


@pytest.mark.parametrize(
    ("title", "name", "shown"),
    [
        ("WhatsApp", "+1 555 0100", "WhatsApp · +1 555 0100"),
        ("Telegram", "Telegram", "Telegram"),
        ("", "@acme_bot", "@acme_bot"),
        ("VK", " ", "VK"),
        ("E-mail", "x" * 300, ("E-mail · " + "x" * 300)[:255]),
    ],
)
def test_a_source_name_reads_channel_then_account(title: str, name: str, shown: str) -> None:
    assert source_name(title, name) == shown
