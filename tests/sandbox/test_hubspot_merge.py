"""The sandbox HubSpot's merge (``POST /crm/v3/objects/{type}/merge``, the
``/_merge`` control) and its ``contact.merge`` webhook.

Every API answer is validated strictly against HubSpot's OpenAPI spec
(``call``). Sources: ``PublicMergeInput`` and the 200 ``SimplePublicObject``
(contacts spec, path ``/merge``); the webhook's merge fields from HubSpot's
changelog "New subscription types for Webhooks" and its delivery fields and
v3 signature from FACTS.md 3.6; ``hs_merged_object_ids`` from
HubSpot/hubspot-api-nodejs#6. The rest is UNCONFIRMED and behind config
switches (``merge_again``, ``merged_id_resolves``, ``merge_new_id``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request

from sandbox.hubspot.signature import verify_v3
from tests.sandbox.test_hubspot_sandbox import CLIENT_SECRET, P1, PAT2, call, contact, make
from tests.support.servers import serve_wsgi

MERGE = "/crm/v3/objects/contacts/merge"


def merge(client: Any, primary: str, gone: str) -> Any:
    return call(client, "POST", MERGE, body={"primaryObjectId": primary, "objectIdToMerge": gone})


def pair(client: Any) -> tuple[str, str]:
    keep = contact(client, email="ann@example.com", firstname="Ann")["id"]
    gone = contact(client, email="ann.k@example.com", lastname="Kovacs", phone="+442079460123")[
        "id"
    ]
    return keep, gone


class Hooks:
    """A webhook target: every POST recorded with its signature check."""

    def __init__(self) -> None:
        self.url = ""
        self.received: list[dict[str, Any]] = []
        self.app = Flask("hooks")
        self.app.add_url_rule("/hubspot", "hook", self._hook, methods=["POST"])

    def _hook(self) -> str:
        body = request.get_data(as_text=True)
        self.received.append(
            {
                "events": json.loads(body),
                "signed": verify_v3(
                    CLIENT_SECRET,
                    "POST",
                    self.url,
                    body,
                    request.headers["X-HubSpot-Signature-v3"],
                    request.headers["X-HubSpot-Request-Timestamp"],
                ),
            }
        )
        return ""


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    target = Hooks()
    with serve_wsgi(target.app) as server:
        target.url = f"{server.url}/hubspot"
        yield target


def test_merge_keeps_the_primary_and_moves_what_the_secondary_had() -> None:
    client = make()
    keep, gone = pair(client)
    deal = call(
        client,
        "POST",
        "/crm/v3/objects/deals",
        body={
            "properties": {
                "dealname": "Order",
                "pipeline": "default",
                "dealstage": "appointmentscheduled",
            },
            "associations": [
                {
                    "to": {"id": gone},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
                }
            ],
        },
    ).get_json()["id"]
    resp = merge(client, keep, gone)
    assert resp.status_code == 200, resp.get_json()
    survivor = resp.get_json()
    assert survivor["id"] == keep
    props = survivor["properties"]
    assert props["email"] == "ann@example.com" and props["firstname"] == "Ann"
    assert props["lastname"] == "Kovacs" and props["phone"] == "+442079460123"
    assert props["hs_additional_emails"] == "ann.k@example.com"
    assert props["hs_merged_object_ids"] == gone
    deals = call(client, "GET", f"/crm/v4/objects/contacts/{keep}/associations/deals")
    assert [r["toObjectId"] for r in deals.get_json()["results"]] == [int(deal)]
    # the old id opens the survivor; lists and search no longer show it
    old = call(client, "GET", f"/crm/v3/objects/contacts/{gone}?properties=hs_merged_object_ids")
    assert old.status_code == 200 and old.get_json()["id"] == keep
    listed = call(client, "GET", "/crm/v3/objects/contacts?limit=100").get_json()["results"]
    assert [c["id"] for c in listed] == [keep]
    found = call(
        client,
        "POST",
        "/crm/v3/objects/contacts/search",
        body={
            "filterGroups": [
                {"filters": [{"propertyName": "phone", "operator": "EQ", "value": "+442079460123"}]}
            ]
        },
    )
    assert [c["id"] for c in found.get_json()["results"]] == [keep]


def test_merging_again_is_refused_or_answered_per_switch() -> None:
    client = make()
    keep, gone = pair(client)
    assert merge(client, keep, gone).status_code == 200
    again = merge(client, keep, gone)
    assert again.status_code == 400
    body = again.get_json()
    assert body["category"] == "VALIDATION_ERROR" and body["status"] == "error"
    assert body["correlationId"] and gone in body["message"]
    client.post("/_config", json={"merge_again": "ok"})
    ok = merge(client, keep, gone)
    assert ok.status_code == 200 and ok.get_json()["id"] == keep


def test_a_merged_id_can_be_made_to_vanish() -> None:
    client = make(merged_id_resolves=False)
    keep, gone = pair(client)
    merge(client, keep, gone)
    old = call(client, "GET", f"/crm/v3/objects/contacts/{gone}")
    assert old.status_code == 404 and old.get_json()["category"] == "OBJECT_NOT_FOUND"


def test_a_merge_may_make_a_new_record() -> None:
    client = make(merge_new_id=True)
    keep, gone = pair(client)
    new = merge(client, keep, gone).get_json()["id"]
    assert new not in (keep, gone)
    for old in (keep, gone):
        assert call(client, "GET", f"/crm/v3/objects/contacts/{old}").get_json()["id"] == new
    merged = call(client, "GET", f"/crm/v3/objects/contacts/{new}?properties=hs_merged_object_ids")
    assert set(merged.get_json()["properties"]["hs_merged_object_ids"].split(";")) == {keep, gone}


def test_bad_merges_answer_in_hubspots_shape() -> None:
    client = make()
    keep, gone = pair(client)
    missing = call(client, "POST", MERGE, body={"primaryObjectId": keep}, validate=False)
    assert missing.status_code == 400 and "objectIdToMerge" in missing.get_json()["message"]
    unknown = merge(client, keep, "999999")
    assert unknown.status_code == 404 and unknown.get_json()["category"] == "OBJECT_NOT_FOUND"
    itself = merge(client, keep, keep)
    assert itself.status_code == 400 and itself.get_json()["category"] == "VALIDATION_ERROR"
    other_portal = call(
        client,
        "POST",
        MERGE,
        token=PAT2,
        body={"primaryObjectId": keep, "objectIdToMerge": gone},
    )
    assert other_portal.status_code == 404  # another portal's contacts are not found


def test_a_merge_in_the_ui_fires_the_signed_contact_merge_webhook(hooks: Hooks) -> None:
    client = make(crm_webhook_url=hooks.url)
    keep, gone = pair(client)
    resp = client.post("/_merge", json={"account": str(P1), "primary_id": keep, "merged_id": gone})
    assert resp.status_code == 200, resp.get_json()
    (delivery,) = hooks.received
    assert delivery["signed"] is True
    (event,) = delivery["events"]
    assert event["subscriptionType"] == "contact.merge" and event["portalId"] == P1
    assert event["changeSource"] == "CRM_UI"
    assert event["primaryObjectId"] == int(keep) and event["mergedObjectIds"] == [int(gone)]
    assert event["newObjectId"] == int(keep) and event["objectId"] == int(keep)
    assert isinstance(event["numberOfPropertiesMoved"], int)
    for name in ("eventId", "subscriptionId", "appId", "occurredAt", "attemptNumber"):
        assert isinstance(event[name], int), name
    state = client.get(f"/_state?account={P1}").get_json()["accounts"][0]
    assert state["merges"] == [{"type": "contacts", "id": gone, "into": keep}]


def test_an_api_merge_fires_the_webhook_too_but_not_a_repeat(hooks: Hooks) -> None:
    client = make(crm_webhook_url=hooks.url, merge_again="ok")
    keep, gone = pair(client)
    merge(client, keep, gone)
    merge(client, keep, gone)
    (delivery,) = hooks.received
    assert delivery["events"][0]["changeSource"] == "INTEGRATION"


def test_without_a_webhook_target_nothing_is_sent() -> None:
    client = make()
    keep, gone = pair(client)
    resp = client.post("/_merge", json={"primary_id": keep, "merged_id": gone})
    assert resp.status_code == 200 and resp.get_json()["webhook"] is None
    refused = client.post("/_merge", json={"primary_id": keep, "merged_id": gone})
    assert refused.status_code == 400
