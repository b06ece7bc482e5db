"""Sandbox HubSpot: the app's CRM-object webhooks of deals and tickets
(``sandbox/hubspot/events.py``): a stage or owner changed, a record deleted,
through the API or a person in HubSpot's UI (the ``/_edit`` and ``/_delete``
controls), sent to the app's one target URL for the subscriptions configured.

Sources: the delivery fields and the v3 signature from FACTS.md 3.6; the
subscriptions' shape (``eventType``, ``propertyName``, ``active``) from the
webhooks v3 spec's ``SubscriptionCreateRequest`` (upstream only); ``dealstage``,
``hs_pipeline_stage`` and ``hubspot_owner_id`` from FACTS 3.3 and 3.5. Every
API answer is validated against HubSpot's OpenAPI spec (``call``). A real
receiver on 127.0.0.1 records each POST with its signature checked; the
sandbox sends a request's events before answering it, so nothing waits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request

from sandbox.hubspot import create_app
from sandbox.hubspot.config import DEFAULTS
from sandbox.hubspot.signature import verify_v3
from tests.sandbox.test_hubspot_sandbox import (
    APP_ID,
    CLIENT_SECRET,
    P1,
    P2,
    PAT2,
    call,
    contact,
    oauth_token,
)
from tests.support.servers import serve_wsgi

OWNER_A, OWNER_B = "70000001", "70000002"  # the first portal's seeded owners


class Receiver:
    """The app's webhook target: every POST's events, its signature checked."""

    def __init__(self) -> None:
        self.url = ""
        self.posts: list[list[dict[str, Any]]] = []
        self.app = Flask("receiver")
        self.app.add_url_rule("/hubspot/app", "hook", self._hook, methods=["POST"])

    def _hook(self) -> str:
        body = request.get_data(as_text=True)
        assert verify_v3(
            CLIENT_SECRET,
            "POST",
            self.url,
            body,
            request.headers["X-HubSpot-Signature-v3"],
            request.headers["X-HubSpot-Request-Timestamp"],
        )
        self.posts.append(json.loads(body))
        return ""

    def events(self) -> list[dict[str, Any]]:
        return [event for post in self.posts for event in post]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    target = Receiver()
    with serve_wsgi(target.app) as server:
        target.url = f"{server.url}/hubspot/app"
        yield target


def sandbox(receiver: Receiver, **config: Any) -> Any:
    return create_app({"crm_webhook_url": receiver.url, **config}).test_client()


def deal(client: Any, token: str | None = None, **props: str) -> str:
    body = {"dealname": "Order", "pipeline": "default", "dealstage": "appointmentscheduled"}
    answer = call(
        client,
        "POST",
        "/crm/v3/objects/deals",
        *([token] if token else []),
        body={"properties": {**body, **props}},
    )
    assert answer.status_code == 201, answer.get_json()
    return str(answer.get_json()["id"])


def patch(client: Any, path: str, token: str | None = None, **props: str) -> None:
    answer = call(client, "PATCH", path, *([token] if token else []), body={"properties": props})
    assert answer.status_code == 200, answer.get_json()


def subscription_id(event_type: str, prop: str | None = None) -> int:
    """The id the sandbox gives the default subscription (4242001 onwards)."""
    subs = DEFAULTS["crm_webhook_subscriptions"]
    (index,) = [
        i
        for i, s in enumerate(subs)
        if s["eventType"] == event_type and s.get("propertyName") == prop
    ]
    return 4242001 + index


def test_a_deal_moved_to_a_stage_through_the_api_is_one_signed_event(
    receiver: Receiver,
) -> None:
    client = sandbox(receiver)
    deal_id = deal(client)
    assert receiver.posts == []  # a create fires no property change by default
    patch(client, f"/crm/v3/objects/deals/{deal_id}", dealstage="closedwon")
    (post,) = receiver.posts
    (event,) = post
    assert set(event) == {
        "eventId",
        "subscriptionId",
        "portalId",
        "appId",
        "occurredAt",
        "subscriptionType",
        "attemptNumber",
        "objectId",
        "changeSource",
        "propertyName",
        "propertyValue",
    }
    assert event["subscriptionType"] == "deal.propertyChange"
    assert event["subscriptionId"] == subscription_id("deal.propertyChange", "dealstage")
    assert (event["propertyName"], event["propertyValue"]) == ("dealstage", "closedwon")
    assert event["objectId"] == int(deal_id) and event["portalId"] == P1
    assert event["appId"] == APP_ID and event["attemptNumber"] == 0
    assert event["changeSource"] == "INTEGRATION"  # a private-app token: no sourceId
    assert isinstance(event["eventId"], int) and isinstance(event["occurredAt"], int)


def test_a_write_of_the_same_value_or_of_another_property_fires_nothing(
    receiver: Receiver,
) -> None:
    client = sandbox(receiver)
    deal_id = deal(client)
    patch(client, f"/crm/v3/objects/deals/{deal_id}", dealstage="appointmentscheduled")
    patch(client, f"/crm/v3/objects/deals/{deal_id}", amount="100")
    assert receiver.posts == []


def test_one_write_of_stage_and_owner_is_one_post_of_two_events(receiver: Receiver) -> None:
    client = sandbox(receiver)
    deal_id = deal(client)
    patch(
        client,
        f"/crm/v3/objects/deals/{deal_id}",
        dealstage="qualifiedtobuy",
        hubspot_owner_id=OWNER_B,
    )
    (post,) = receiver.posts
    changes = sorted((e["propertyName"], e["propertyValue"]) for e in post)
    assert changes == [("dealstage", "qualifiedtobuy"), ("hubspot_owner_id", OWNER_B)]


def test_an_oauth_apps_write_names_the_app(receiver: Receiver) -> None:
    client = sandbox(receiver)
    token = oauth_token(client)["access_token"]
    deal_id = deal(client, token)
    patch(client, f"/crm/v3/objects/deals/{deal_id}", token, dealstage="closedlost")
    (event,) = receiver.events()
    assert (event["changeSource"], event["sourceId"]) == ("INTEGRATION", str(APP_ID))


def test_a_person_moving_a_deal_in_the_ui_fires_it_and_the_control_says_so(
    receiver: Receiver,
) -> None:
    client = sandbox(receiver)
    deal_id = deal(client)
    answer = client.post(
        "/_edit",
        json={
            "account": str(P1),
            "type": "deals",
            "id": deal_id,
            "properties": {
                "hubspot_owner_id": OWNER_A,
            },
        },
    )
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["webhook"]["status"] == 200
    assert body["properties"]["hubspot_owner_id"] == OWNER_A
    (event,) = body["events"]
    assert event["changeSource"] == "CRM_UI" and "sourceId" not in event
    assert (event["propertyName"], event["propertyValue"]) == ("hubspot_owner_id", OWNER_A)
    assert receiver.events() == [event]


def test_the_edit_control_validates_as_the_api_does(receiver: Receiver) -> None:
    client = sandbox(receiver)
    deal_id = deal(client)
    wrong_stage = client.post("/_edit", json={"id": deal_id, "properties": {"dealstage": "x"}})
    assert wrong_stage.status_code == 400
    assert "was not one of the allowed options" in wrong_stage.get_json()["message"]
    missing = client.post("/_edit", json={"id": "1", "properties": {"dealstage": "closedwon"}})
    assert missing.status_code == 404
    other_portal = client.post(
        "/_edit", json={"account": str(P2), "id": deal_id, "properties": {"amount": "1"}}
    )
    assert other_portal.status_code == 404  # a record of portal P1 only
    assert client.post("/_edit", json={"id": deal_id}).status_code == 400
    assert receiver.posts == []


def test_a_deleted_deal_fires_its_deletion_through_the_api_and_the_ui(
    receiver: Receiver,
) -> None:
    client = sandbox(receiver)
    first, second, third = (deal(client) for _ in range(3))
    assert call(client, "DELETE", f"/crm/v3/objects/deals/{first}").status_code == 204
    archived = call(
        client,
        "POST",
        "/crm/v3/objects/deals/batch/archive",
        body={"inputs": [{"id": second}]},
    )
    assert archived.status_code == 204
    in_ui = client.post("/_delete", json={"type": "deals", "id": third})
    assert in_ui.status_code == 200 and in_ui.get_json()["webhook"]["status"] == 200
    events = receiver.events()
    assert [(e["subscriptionType"], e["objectId"]) for e in events] == [
        ("deal.deletion", int(first)),
        ("deal.deletion", int(second)),
        ("deal.deletion", int(third)),
    ]
    assert [e["changeSource"] for e in events] == ["INTEGRATION", "INTEGRATION", "CRM_UI"]
    assert "propertyName" not in events[0]
    again = client.post("/_delete", json={"type": "deals", "id": third})
    assert again.status_code == 404  # gone already: nothing more fires
    assert len(receiver.events()) == 3


def test_a_ticket_moved_to_another_stage_and_deleted(receiver: Receiver) -> None:
    client = sandbox(receiver)
    answer = call(
        client,
        "POST",
        "/crm/v3/objects/tickets",
        body={"properties": {"subject": "Help", "hs_pipeline": "0", "hs_pipeline_stage": "1"}},
    )
    ticket = str(answer.get_json()["id"])
    patch(client, f"/crm/v3/objects/tickets/{ticket}", hs_pipeline_stage="4")
    client.post("/_delete", json={"type": "tickets", "id": ticket})
    first, second = receiver.events()
    assert first["subscriptionType"] == "ticket.propertyChange"
    assert (first["propertyName"], first["propertyValue"]) == ("hs_pipeline_stage", "4")
    assert first["subscriptionId"] == subscription_id("ticket.propertyChange", "hs_pipeline_stage")
    assert (second["subscriptionType"], second["objectId"]) == ("ticket.deletion", int(ticket))


def test_only_the_active_subscriptions_fire(receiver: Receiver) -> None:
    client = sandbox(
        receiver,
        crm_webhook_subscriptions=[
            {"eventType": "deal.propertyChange", "propertyName": "dealstage", "active": False},
            {"eventType": "deal.propertyChange", "propertyName": "hubspot_owner_id"},
        ],
    )
    deal_id = deal(client)
    patch(client, f"/crm/v3/objects/deals/{deal_id}", dealstage="closedwon")
    assert call(client, "DELETE", f"/crm/v3/objects/deals/{deal_id}").status_code == 204
    assert receiver.posts == []
    other = deal(client)
    patch(client, f"/crm/v3/objects/deals/{other}", hubspot_owner_id=OWNER_B)
    (event,) = receiver.events()
    assert event["subscriptionId"] == 4242002  # the second subscription


def test_without_a_target_url_nothing_is_sent_or_kept(receiver: Receiver) -> None:
    client = create_app().test_client()
    deal_id = deal(client)
    patch(client, f"/crm/v3/objects/deals/{deal_id}", dealstage="closedwon")
    state = client.get("/_state").get_json()
    assert state["webhook_deliveries"] == [] and state["held_crm_events"] == []


def test_a_create_fires_creation_and_with_the_switch_its_properties(receiver: Receiver) -> None:
    subs = [
        {"eventType": "deal.creation"},
        {"eventType": "deal.propertyChange", "propertyName": "dealstage"},
    ]
    client = sandbox(receiver, crm_webhook_subscriptions=subs)
    deal_id = deal(client)
    (event,) = receiver.events()
    assert (event["subscriptionType"], event["objectId"]) == ("deal.creation", int(deal_id))
    on_create = sandbox(receiver, crm_webhook_subscriptions=subs, crm_webhook_change_on_create=True)
    deal(on_create)
    creation, stage = receiver.posts[-1]
    assert creation["subscriptionType"] == "deal.creation"
    assert (stage["propertyName"], stage["propertyValue"]) == ("dealstage", "appointmentscheduled")


def test_a_contact_merged_away_fires_its_merge_not_a_deletion(receiver: Receiver) -> None:
    client = sandbox(
        receiver,
        crm_webhook_subscriptions=[
            {"eventType": "contact.merge"},
            {"eventType": "contact.deletion"},
        ],
    )
    keep, gone = contact(client, firstname="Ann")["id"], contact(client, lastname="K")["id"]
    merged = client.post("/_merge", json={"primary_id": keep, "merged_id": gone})
    assert merged.status_code == 200
    (event,) = receiver.events()
    assert event["subscriptionType"] == "contact.merge"
    assert event["subscriptionId"] == 4242001 and event["mergedObjectIds"] == [int(gone)]


def test_without_a_merge_subscription_a_merge_fires_nothing(receiver: Receiver) -> None:
    client = sandbox(receiver, crm_webhook_subscriptions=[{"eventType": "deal.deletion"}])
    keep, gone = contact(client, firstname="Ann")["id"], contact(client, lastname="K")["id"]
    merged = client.post("/_merge", json={"primary_id": keep, "merged_id": gone})
    assert merged.status_code == 200 and merged.get_json()["event"] is None
    assert receiver.posts == []


def test_held_events_of_two_portals_go_out_together(receiver: Receiver) -> None:
    client = sandbox(receiver, crm_webhook_hold=True)
    mine = deal(client)
    theirs = deal(client, PAT2)
    patch(client, f"/crm/v3/objects/deals/{mine}", dealstage="closedwon")
    patch(client, f"/crm/v3/objects/deals/{theirs}", PAT2, dealstage="closedlost")
    assert receiver.posts == []
    flushed = client.post("/_crm_webhooks/flush").get_json()
    assert flushed["events"] == 2 and [d["status"] for d in flushed["deliveries"]] == [200]
    (post,) = receiver.posts
    assert [(e["portalId"], e["propertyValue"]) for e in post] == [
        (P1, "closedwon"),
        (P2, "closedlost"),
    ]


@pytest.mark.parametrize(
    "subscriptions",
    [
        {"eventType": "deal.propertyChange"},
        [{"eventType": "deal.propertyChange"}],
        [{"eventType": "deal.deletion", "propertyName": "dealstage"}],
        [{"eventType": "deal.stageMoved"}],
        [{"eventType": "deal.deletion", "active": "yes"}],
        [{"eventType": "deal.deletion", "url": "https://elsewhere.example"}],
    ],
    ids=["not-a-list", "no-property", "property-on-deletion", "unknown-action", "active", "key"],
)
def test_a_wrong_subscription_is_refused(subscriptions: Any) -> None:
    client = create_app().test_client()
    answer = client.post("/_config", json={"crm_webhook_subscriptions": subscriptions})
    assert answer.status_code == 400
    assert "crm_webhook_subscriptions" in json.dumps(answer.get_json())
