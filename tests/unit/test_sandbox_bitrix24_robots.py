"""Sandbox Bitrix24: outgoing webhooks and automation rules' webhook robots
(``sandbox/bitrix24/automation.py``).

Outgoing webhooks follow the contracts: the body is compared key by key with
the vendor's "Event Sent to an Outgoing Webhook" example
(contracts/bitrix24/examples/api-reference__events__index.2.json, from
api-reference/events/index.md), form-encoded as local-webhooks.md says, sent
once (FACTS 2.6). Robots are UNCONFIRMED as a whole (automation rules are not
in the contracts): when they run, and both body shapes, are the sandbox's
switches. Each body is also fed to the bridge's parser
(``crm_adapters/bitrix24/cascade.py``): it takes contact events only.

Requests go to a real receiver on 127.0.0.1; first attempts run before the
API's answer (``event_delivery: "inline"``), retries when ``POST
/_robots/flush`` asks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from bridge.errors import PayloadError
from crm_adapters.bitrix24.cascade import cascade_contact
from crm_adapters.bitrix24.webhooks import decode_brackets
from sandbox.bitrix24 import DEMO_DOMAIN, DEMO_MEMBER_ID, DEMO_WEBHOOK_CODE, create_app
from tests.support.servers import serve_wsgi

EXAMPLES = Path(__file__).resolve().parents[2] / "sandbox" / "bitrix24" / "spec" / "examples"


@dataclass
class Receiver:
    """Records each request; answers with the next of ``answers`` (then 200)."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    got: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Flask:
        app = Flask("receiver")

        @app.route("/hook", methods=["POST"])
        def hook() -> tuple[str, int]:
            self.got.append(
                {
                    "content_type": request.content_type,
                    "url": request.url,
                    "body": request.get_data(),
                }
            )
            return "", self.answers.pop(0) if self.answers else 200

        return app

    def forms(self) -> list[dict[str, Any]]:
        return [decode_brackets(g["body"]) for g in self.got]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    target = Receiver()
    with serve_wsgi(target.app()) as server:
        target.url = f"{server.url}/hook?text=Hi&key=k"
        yield target


def _sandbox(**config: Any) -> Any:
    return create_app({"event_delivery": "inline", **config}).test_client()


def _rest(client: Any, method: str, body: dict[str, Any]) -> Any:
    """A call through the demo incoming webhook (the admin, user 1)."""
    answer = client.post(
        f"/{DEMO_DOMAIN}/rest/1/{DEMO_WEBHOOK_CODE}/{method}.json",
        data=json.dumps(body),
        content_type="application/json",
    )
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["result"]


def _state(client: Any) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/_state").get_json()
    return data


def _keys(value: Any) -> Any:
    """A payload's nested key structure (values dropped)."""
    return {k: _keys(v) for k, v in value.items()} if isinstance(value, dict) else None


# -- outgoing webhooks ---------------------------------------------------------------------


def test_an_outgoing_webhook_posts_the_documented_event_once(receiver: Receiver) -> None:
    hooks = [{"url": receiver.url, "events": ["ONCRMCONTACTUPDATE"]}]
    client = _sandbox(outgoing_webhooks=hooks)  # the app is not installed: still sent
    contact = _rest(client, "crm.contact.add", {"fields": {"NAME": "Ann"}})
    assert receiver.got == []  # ONCRMCONTACTADD is not chosen
    _rest(client, "crm.contact.update", {"id": contact, "fields": {"NAME": "Anna"}})
    [got] = receiver.got
    assert got["content_type"] == "application/x-www-form-urlencoded"
    assert got["url"] == receiver.url  # the query as the admin typed it
    [form] = receiver.forms()
    documented = json.loads((EXAMPLES / "api-reference__events__index.2.json").read_text())
    assert _keys(form) == _keys(documented)  # exactly the documented keys
    assert (form["event"], form["data"]["FIELDS"]["ID"]) == ("ONCRMCONTACTUPDATE", str(contact))
    [shown] = _state(client)["accounts"][0]["outgoing_webhooks"]
    assert form["auth"]["application_token"] == shown["application_token"]
    assert len(shown["application_token"]) == 32
    assert form["event_handler_id"] == str(shown["event_handler_id"])
    assert (form["auth"]["member_id"], form["auth"]["domain"]) == (DEMO_MEMBER_ID, DEMO_DOMAIN)
    # what the bridge's parser makes of it: the contact, keyed by event and id
    assert cascade_contact(form, DEMO_MEMBER_ID) == (
        str(contact),
        f"bitrix24:ONCRMCONTACTUPDATE:{contact}",
    )
    [record] = [d for d in _state(client)["deliveries"] if d["outgoing_webhook"] == 0]
    assert (record["status"], record["event"]) == (200, "ONCRMCONTACTUPDATE")


def test_an_outgoing_webhook_is_never_retried(receiver: Receiver) -> None:
    client = _sandbox(
        outgoing_webhooks=[
            {"url": receiver.url, "events": ["ONCRMCONTACTADD"], "application_token": "t" * 32}
        ]
    )
    receiver.answers = [503]
    _rest(client, "crm.contact.add", {"fields": {"NAME": "Bo"}})
    assert len(receiver.got) == 1 and receiver.forms()[0]["auth"]["application_token"] == "t" * 32
    assert [d["status"] for d in _state(client)["deliveries"]] == [503]
    assert client.post("/_robots/flush").get_json()["attempts"] == []
    assert len(receiver.got) == 1


def test_a_user_moving_a_deal_fires_the_outgoing_webhook_of_its_event(receiver: Receiver) -> None:
    client = _sandbox(outgoing_webhooks=[{"url": receiver.url, "events": ["ONCRMDEALUPDATE"]}])
    deal = _rest(client, "crm.deal.add", {"fields": {"TITLE": "Order"}})
    answer = client.post("/_deal_stage", json={"deal_id": deal, "stage_id": "EXECUTING"})
    assert answer.status_code == 200
    [form] = receiver.forms()
    assert (form["event"], form["data"]["FIELDS"]["ID"]) == ("ONCRMDEALUPDATE", str(deal))
    with pytest.raises(PayloadError):  # the bridge starts cascades from contact events
        cascade_contact(form, DEMO_MEMBER_ID)


# -- robots ----------------------------------------------------------------------------------


def test_a_deal_robot_runs_each_time_the_deal_enters_its_stage(receiver: Receiver) -> None:
    client = _sandbox(robot_webhooks=[{"entity": "deal", "stage": "WON", "url": receiver.url}])
    deal = _rest(client, "crm.deal.add", {"fields": {"TITLE": "Order", "STAGE_ID": "NEW"}})
    _rest(client, "crm.deal.update", {"id": deal, "fields": {"TITLE": "Order 1"}})
    assert receiver.got == []
    _rest(client, "crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "WON"}})
    [form] = receiver.forms()
    assert form["document_id"] == {"0": "crm", "1": "CCrmDocumentDeal", "2": f"DEAL_{deal}"}
    assert set(form["auth"]) == {"domain", "client_endpoint", "server_endpoint", "member_id"}
    assert form["auth"]["member_id"] == DEMO_MEMBER_ID
    with pytest.raises(PayloadError):  # not an event the bridge reads
        cascade_contact(form, DEMO_MEMBER_ID)
    _rest(client, "crm.deal.update", {"id": deal, "fields": {"TITLE": "Order 2"}})  # stays
    client.post("/_deal_stage", json={"deal_id": deal, "stage_id": "WON"})  # the same stage
    assert len(receiver.got) == 1
    client.post("/_deal_stage", json={"deal_id": deal, "stage_id": "EXECUTING"})
    client.post("/_deal_stage", json={"deal_id": deal, "stage_id": "WON"})  # enters again
    assert len(receiver.got) == 2
    records = _state(client)["robot_deliveries"]
    assert [(r["entity"], r["entity_id"], r["stage"], r["status"]) for r in records] == [
        ("deal", deal, "WON", 200)
    ] * 2


def test_a_lead_robot_runs_when_a_lead_is_created_in_or_moved_into_its_status(
    receiver: Receiver,
) -> None:
    client = _sandbox(
        robot_webhooks=[{"entity": "lead", "stage": "IN_PROCESS", "url": receiver.url}],
        robot_webhook_body="event",
        events_for_rest_changes=False,  # robots are no event handlers: they run anyway
    )
    born = _rest(client, "crm.lead.add", {"fields": {"TITLE": "L", "STATUS_ID": "IN_PROCESS"}})
    moved = _rest(client, "crm.lead.add", {"fields": {"TITLE": "M"}})
    client.post("/_lead_status", json={"lead_id": moved, "status_id": "IN_PROCESS"})
    first, second = receiver.forms()
    assert (first["event"], first["data"]["FIELDS"]["ID"]) == ("ONCRMLEADADD", str(born))
    assert (second["event"], second["data"]["FIELDS"]["ID"]) == ("ONCRMLEADUPDATE", str(moved))
    assert set(first) == {"event", "data", "ts", "auth"}
    assert set(first["auth"]) == {
        "domain",
        "client_endpoint",
        "server_endpoint",
        "member_id",
        "application_token",
    }
    with pytest.raises(PayloadError):
        cascade_contact(second, DEMO_MEMBER_ID)
    assert _state(client)["deliveries"] == []  # no event went out


def test_a_robot_on_another_portal_or_pipeline_stage_stays_quiet(receiver: Receiver) -> None:
    client = _sandbox(robot_webhooks=[{"entity": "deal", "stage": "C1:WON", "url": receiver.url}])
    deal = _rest(client, "crm.deal.add", {"fields": {"TITLE": "Order"}})
    _rest(client, "crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "WON"}})  # pipeline 0
    assert receiver.got == []
    other = _rest(client, "crm.deal.add", {"fields": {"TITLE": "Partner", "CATEGORY_ID": 1}})
    _rest(client, "crm.deal.update", {"id": other, "fields": {"STAGE_ID": "C1:WON"}})
    assert receiver.forms()[0]["document_id"]["2"] == f"DEAL_{other}"


def test_robot_retries_send_the_same_bytes_when_switched_on(receiver: Receiver) -> None:
    client = _sandbox(
        robot_webhooks=[{"entity": "deal", "stage": "WON", "url": receiver.url}],
        robot_webhook_retry_s=[30],
    )
    receiver.answers = [500, 500]
    deal = _rest(client, "crm.deal.add", {"fields": {"TITLE": "Order", "STAGE_ID": "WON"}})
    [pending] = _state(client)["robot_pending"]
    assert (pending["attempt"], pending["entity_id"]) == (2, deal)
    [retry] = client.post("/_robots/flush").get_json()["attempts"]
    assert (retry["attempt"], retry["status"]) == (2, 500)
    assert _state(client)["robot_pending"] == []  # the schedule's end
    assert receiver.got[0]["body"] == receiver.got[1]["body"]

    client.post("/_reset", json={})
    state = _state(client)
    assert (state["robot_deliveries"], state["robot_pending"]) == ([], [])


def test_without_the_switch_a_failed_robot_is_not_retried(receiver: Receiver) -> None:
    client = _sandbox(robot_webhooks=[{"entity": "deal", "stage": "WON", "url": receiver.url}])
    receiver.answers = [503]
    _rest(client, "crm.deal.add", {"fields": {"TITLE": "Order", "STAGE_ID": "WON"}})
    assert _state(client)["robot_pending"] == [] and len(receiver.got) == 1


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"outgoing_webhooks": [{"url": "http://x", "events": ["ONAPPINSTALL"]}]}, ".events"),
        ({"outgoing_webhooks": [{"url": "http://x", "events": []}]}, ".events"),
        ({"outgoing_webhooks": [{"url": "x", "events": ["ONCRMDEALADD"]}]}, ".url"),
        (
            {
                "outgoing_webhooks": [
                    {"url": "http://x", "events": ["ONCRMDEALADD"], "portal": "n.io"}
                ]
            },
            ".portal",
        ),
        ({"robot_webhooks": [{"entity": "contact", "stage": "WON", "url": "http://x"}]}, ".entity"),
        ({"robot_webhooks": [{"entity": "deal", "url": "http://x"}]}, ".stage"),
        (
            {"robot_webhooks": [{"entity": "deal", "stage": "WON", "url": "http://x", "when": 1}]},
            "keys among",
        ),
        ({"robot_webhook_body": "json"}, "robot_webhook_body"),
        ({"robot_webhook_retry_s": [-5]}, "robot_webhook_retry_s"),
    ],
)
def test_bad_hook_config_names_the_key(change: dict[str, Any], named: str) -> None:
    answer = create_app(None).test_client().post("/_config", json=change)
    assert answer.status_code == 400
    assert named in json.dumps(answer.get_json())
