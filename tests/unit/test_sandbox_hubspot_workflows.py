# ruff: noqa: S105  (the sandbox's demo secrets)
"""Sandbox HubSpot: workflows whose "Send a webhook" action posts the
enrolled record (``sandbox/hubspot/workflows.py``; HubSpot KB "Use webhooks
with HubSpot workflows": POST, retries for up to three days, none after a
4xx). What the bodies look like is UNCONFIRMED (not in the contracts); the
two shapes are the ones ``crm_adapters/hubspot/cascade.py`` names, and each
is fed to that parser here. Signatures are checked with HubSpot's own
algorithms (``sandbox/hubspot/signature.py``, tested against HubSpot's test
vectors in ``tests/sandbox/test_hubspot_sandbox.py``).

A real receiver on 127.0.0.1 records every request; first attempts run
before the API's answer (``workflow_delivery: "inline"``) and retries when
``POST /_workflows/flush`` asks, so nothing waits on a clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, request

from bridge.errors import PayloadError
from bridge.model import WebhookRequest
from crm_adapters.hubspot.cascade import cascade_contact
from sandbox.hubspot import create_app
from sandbox.hubspot.signature import sign_v2, verify_v3
from tests.support.servers import serve_wsgi

PAT = "pat-na1-11111111-1111-4111-8111-111111111111"  # the first demo portal's
PORTAL = 62515
SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"  # the demo app's client secret


@dataclass
class Receiver:
    """Records each request; answers with the next of ``answers`` (then 200)."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    got: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Flask:
        app = Flask("receiver")

        @app.route("/hook", methods=["GET", "POST"])
        def hook() -> tuple[str, int]:
            self.got.append(
                {
                    "method": request.method,
                    "url": request.url,
                    "headers": dict(request.headers),
                    "body": request.get_data(),
                }
            )
            return "", self.answers.pop(0) if self.answers else 200

        return app


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    target = Receiver()
    with serve_wsgi(target.app()) as server:
        target.url = f"{server.url}/hook?text=Hi&key=ready"
        yield target


def _sandbox(receiver: Receiver, *workflows: dict[str, Any], **config: Any) -> Any:
    hooks = [{"url": receiver.url, **w} for w in workflows]
    return create_app(
        {"workflow_webhooks": hooks, "workflow_delivery": "inline", **config}
    ).test_client()


def _api(client: Any, method: str, path: str, body: Any = None) -> dict[str, Any]:
    answer = client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {PAT}"})
    assert answer.status_code < 300, answer.get_json()
    return answer.get_json() or {}


def _contact(client: Any, **props: str) -> str:
    return str(_api(client, "POST", "/crm/v3/objects/contacts", {"properties": props})["id"])


def _patch(client: Any, contact: str, **props: str) -> None:
    _api(client, "PATCH", f"/crm/v3/objects/contacts/{contact}", {"properties": props})


def _state(client: Any) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/_state").get_json()
    return data


def _as_bridge_reads_it(body: bytes) -> tuple[str, str]:
    return cascade_contact(
        WebhookRequest(
            method="POST",
            url="https://bridge.test/webhooks/crm/hubspot/k/cascade",
            headers={"content-type": "application/json"},
            body=body,
        )
    )


CUSTOMER = {"object": "contacts", "property": "lifecyclestage", "value": "customer"}


def test_a_contact_enrols_once_when_the_property_becomes_the_value(receiver: Receiver) -> None:
    client = _sandbox(receiver, CUSTOMER)
    contact = _contact(client, email="ann@example.com", firstname="Ann")
    _patch(client, contact, firstname="Anna")  # the trigger is not met
    assert receiver.got == []
    _patch(client, contact, lifecyclestage="customer")
    [call] = receiver.got
    assert call["method"] == "POST" and call["url"] == receiver.url  # the query as typed
    assert call["headers"]["Content-Type"] == "application/json"
    assert "X-Hubspot-Signature-V3" not in call["headers"]  # auth "none"
    body = json.loads(call["body"])
    assert (body["objectId"], body["objectType"], body["objectTypeId"], body["portalId"]) == (
        int(contact),
        "CONTACT",
        "0-1",
        PORTAL,
    )
    assert body["properties"]["firstname"] == "Anna"
    assert body["properties"]["lifecyclestage"] == "customer"
    # what the bridge's parser makes of it: the contact, and the call's digest
    assert _as_bridge_reads_it(call["body"])[0] == contact
    # met already, then left and met again: no re-enrolment by default
    _patch(client, contact, lifecyclestage="customer")
    _patch(client, contact, lifecyclestage="lead")
    _patch(client, contact, lifecyclestage="customer")
    assert len(receiver.got) == 1
    state = _state(client)
    assert state["workflow_enrolments"] == [
        {"workflow": 0, "portalId": PORTAL, "objectType": "contacts", "objectId": contact}
    ]
    [record] = state["workflow_deliveries"]
    assert (record["status"], record["ok"], record["attempt"]) == (200, True, 1)


def test_reenrolment_creation_batches_and_a_known_value(receiver: Receiver) -> None:
    known = {"object": "contacts", "property": "jobtitle", "value": None}
    client = _sandbox(receiver, {**CUSTOMER, "reenroll": True}, known)
    contact = _contact(client, email="bo@example.com", lifecyclestage="customer")  # at creation
    _patch(client, contact, lifecyclestage="lead")
    _api(
        client,
        "POST",
        "/crm/v3/objects/contacts/batch/update",
        {"inputs": [{"id": contact, "properties": {"lifecyclestage": "customer"}}]},
    )
    _api(
        client,
        "POST",
        "/crm/v3/objects/contacts/batch/upsert",
        {
            "inputs": [
                {"id": "bo@example.com", "idProperty": "email", "properties": {"jobtitle": "CTO"}}
            ]
        },
    )
    workflows = [r["workflow"] for r in _state(client)["workflow_deliveries"]]
    assert workflows == [0, 0, 1]  # created customer, back to customer (re-enrolled), a job title
    assert len(receiver.got) == 3


def test_a_deal_workflow_in_both_shapes_is_one_the_bridge_refuses(receiver: Receiver) -> None:
    won = {"object": "deals", "property": "dealstage", "value": "closedwon"}
    for shape, key in (("object", "objectId"), ("legacy", "dealId")):
        receiver.got.clear()
        client = _sandbox(receiver, won, workflow_webhook_body=shape)
        deal = _api(
            client,
            "POST",
            "/crm/v3/objects/deals",
            {
                "properties": {
                    "dealname": "Order 1",
                    "pipeline": "default",
                    "dealstage": "qualifiedtobuy",
                }
            },
        )["id"]
        _api(
            client,
            "PATCH",
            f"/crm/v3/objects/deals/{deal}",
            {"properties": {"dealstage": "closedwon"}},
        )
        [call] = receiver.got
        body = json.loads(call["body"])
        assert body[key] == int(deal)
        with pytest.raises(PayloadError):  # the cascade trigger takes contacts only
            _as_bridge_reads_it(call["body"])


def test_the_legacy_contact_record_names_the_vid(receiver: Receiver) -> None:
    client = _sandbox(receiver, CUSTOMER, workflow_webhook_body="legacy")
    contact = _contact(client, email="cy@example.com", lifecyclestage="customer")
    body = json.loads(receiver.got[0]["body"])
    assert (body["vid"], body["portal-id"], body["is-contact"]) == (int(contact), PORTAL, True)
    assert body["properties"]["email"] == {"value": "cy@example.com"}
    assert _as_bridge_reads_it(receiver.got[0]["body"])[0] == contact


def test_signed_requests_verify_with_the_apps_secret(receiver: Receiver) -> None:
    client = _sandbox(receiver, {**CUSTOMER, "auth": "v3"}, {**CUSTOMER, "auth": "v2"})
    _contact(client, email="di@example.com", lifecyclestage="customer")
    v3, v2 = receiver.got
    text = v3["body"].decode()
    assert verify_v3(
        SECRET,
        "POST",
        receiver.url,
        text,
        v3["headers"]["X-Hubspot-Signature-V3"],
        v3["headers"]["X-Hubspot-Request-Timestamp"],
    )
    assert v2["headers"]["X-Hubspot-Signature-Version"] == "v2"
    assert v2["headers"]["X-Hubspot-Signature"] == sign_v2(SECRET, "POST", receiver.url, text)


def test_a_get_action_carries_no_body(receiver: Receiver) -> None:
    client = _sandbox(receiver, {**CUSTOMER, "method": "GET"})
    _contact(client, email="ed@example.com", lifecyclestage="customer")
    [call] = receiver.got
    assert (call["method"], call["body"]) == ("GET", b"")


def test_failures_are_retried_with_the_same_bytes_and_a_4xx_is_not(receiver: Receiver) -> None:
    client = _sandbox(receiver, CUSTOMER, workflow_webhook_retry_s=[1, 1])
    receiver.answers = [503, 429, 503]
    _contact(client, email="fa@example.com", lifecyclestage="customer")
    pending = _state(client)["workflow_pending"]
    assert [p["attempt"] for p in pending] == [2]
    attempts = client.post("/_workflows/flush").get_json()["attempts"]
    assert [a["status"] for a in attempts] == [429]
    attempts = client.post("/_workflows/flush").get_json()["attempts"]
    assert [a["status"] for a in attempts] == [503]  # the schedule's end: given up
    assert _state(client)["workflow_pending"] == []
    assert [r["attempt"] for r in _state(client)["workflow_deliveries"]] == [1, 2, 3]
    assert len({c["body"] for c in receiver.got}) == 1 and len(receiver.got) == 3

    receiver.got.clear()
    receiver.answers = [400]
    _contact(client, email="fb@example.com", lifecyclestage="customer")
    assert _state(client)["workflow_pending"] == []  # none after a 4xx
    assert client.post("/_workflows/flush").get_json()["attempts"] == []
    assert len(receiver.got) == 1


def test_a_lost_answer_is_retried_and_reaches_the_receiver_twice(receiver: Receiver) -> None:
    client = _sandbox(receiver, CUSTOMER, workflow_webhook_retry_s=[1])
    assert client.post("/_config", json={"workflow_webhook_lose_answers": 1}).status_code == 200
    _contact(client, email="ga@example.com", lifecyclestage="customer")
    [first] = _state(client)["workflow_deliveries"]
    assert (first["status"], first["lost"], first["ok"]) == (None, True, False)
    assert len(receiver.got) == 1  # the receiver did get it
    [second] = client.post("/_workflows/flush").get_json()["attempts"]
    assert (second["status"], second["lost"], second["attempt"]) == (200, False, 2)
    assert [c["body"] for c in receiver.got] == [receiver.got[0]["body"]] * 2
    assert _as_bridge_reads_it(receiver.got[0]["body"]) == _as_bridge_reads_it(
        receiver.got[1]["body"]
    )


def test_a_reset_forgets_enrolments_and_pending_retries(receiver: Receiver) -> None:
    client = _sandbox(receiver, CUSTOMER, workflow_webhook_retry_s=[60])
    receiver.answers = [500]
    _contact(client, email="ha@example.com", lifecyclestage="customer")
    assert len(_state(client)["workflow_pending"]) == 1
    client.post("/_reset", json={})
    state = _state(client)
    assert (
        state["workflow_pending"],
        state["workflow_enrolments"],
        state["workflow_deliveries"],
    ) == (
        [],
        [],
        [],
    )


def test_a_workflow_only_watches_its_portal(receiver: Receiver) -> None:
    client = _sandbox(receiver, {**CUSTOMER, "portal": 62516})
    _contact(client, email="ia@example.com", lifecyclestage="customer")  # portal 62515
    assert receiver.got == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            {"workflow_webhooks": [{"object": "tickets", "property": "p", "url": "http://x"}]},
            ".object",
        ),
        (
            {"workflow_webhooks": [{"object": "contacts", "property": "p", "url": "ftp://x"}]},
            ".url",
        ),
        (
            {
                "workflow_webhooks": [
                    {"object": "contacts", "property": "p", "url": "http://x", "auth": "v9"}
                ]
            },
            ".auth",
        ),
        (
            {
                "workflow_webhooks": [
                    {"object": "contacts", "property": "p", "url": "http://x", "portal": 1}
                ]
            },
            ".portal",
        ),
        (
            {"workflow_webhooks": [{"object": "contacts", "url": "http://x", "when": 1}]},
            "keys among",
        ),
        ({"workflow_webhook_body": "xml"}, "workflow_webhook_body"),
        ({"workflow_webhook_retry_s": [-1]}, "workflow_webhook_retry_s"),
        ({"workflow_webhook_lose_answers": -1}, "workflow_webhook_lose_answers"),
        ({"workflow_delivery": "later"}, "workflow_delivery"),
    ],
)
def test_bad_workflow_config_names_the_key(change: dict[str, Any], named: str) -> None:
    client = create_app(None).test_client()
    answer = client.post("/_config", json=change)
    assert answer.status_code == 400
    assert named in json.dumps(answer.get_json())
