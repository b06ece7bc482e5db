"""HubSpot: merging two contacts, a note on a contact, and the contact.merge
webhook (HTTP mocked with ``responses``; every request and faked 2xx body
checked against HubSpot's OpenAPI specs, as in ``test_hubspot_adapter``).

Sources: the merge endpoint and ``PublicMergeInput`` from the contacts spec
(``sandbox/hubspot/spec/crm-objects-contacts.v3.json``, path ``/merge``);
the webhook's merge fields (``primaryObjectId``, ``mergedObjectIds``,
``newObjectId``, ``numberOfPropertiesMoved``) from HubSpot's changelog "New
subscription types for Webhooks"; the delivery fields from FACTS.md 3.6; the
generic ``object.merge`` with ``objectTypeId`` from the changelog "Public Beta:
Generic Webhook Subscriptions". What HubSpot answers for a pair merged
already is UNCONFIRMED: the 400 below is the sandbox's default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

from bridge.errors import NotFoundError, PermanentError, SignatureError
from bridge.model import CrmEventKind, CrmRef
from crm_adapters.hubspot import HubSpotAdapter
from tests.unit.test_hubspot_adapter import (
    API,
    PORTAL,
    error,
    make_adapter,
    obj,
    search_page,
    signed,
)

KEEP = CrmRef("contact", "501")
GONE = CrmRef("contact", "502")
MERGE = f"{API}/crm/v3/objects/contacts/merge"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture(autouse=True)
def spec_check(rsps: responses.RequestsMock) -> Iterator[None]:
    yield
    from sandbox.hubspot import openapi

    for call in rsps.calls:
        request = call.request
        body = request.body.encode() if isinstance(request.body, str) else request.body
        openapi.validate_request(
            request.method, request.url, body, request.headers.get("Content-Type")
        )
        response = call.response
        if isinstance(response, requests.Response) and 200 <= response.status_code < 300:
            openapi.validate_response(
                request.method, request.url, response.status_code, response.content
            )


@pytest.fixture
def adapter() -> HubSpotAdapter:
    return make_adapter()[0]


def sent(call: Any) -> Any:
    return json.loads(call.request.body)


# -- merge_contacts ------------------------------------------------------------


def test_merge_posts_primary_and_secondary(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.post(MERGE, json=obj(501, email="ann@example.com"))
    assert adapter.merge_contacts(KEEP, GONE) is True
    (call,) = rsps.calls
    assert sent(call) == {"primaryObjectId": "501", "objectIdToMerge": "502"}


def test_a_retry_of_a_done_merge_is_true(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    """The first call timed out after HubSpot merged: the retry's refusal is
    checked by reading both ids back; both open the survivor."""
    rsps.post(MERGE, status=400, json=error("Object 502 has already been merged into 501"))
    rsps.get(f"{API}/crm/v3/objects/contacts/501", json=obj(501, hs_merged_object_ids="502"))
    rsps.get(f"{API}/crm/v3/objects/contacts/502", json=obj(501, hs_merged_object_ids="502"))
    assert adapter.merge_contacts(KEEP, GONE) is True


def test_a_merge_that_made_a_new_record_counts_as_done(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.post(MERGE, status=400, json=error("already merged"))
    rsps.get(f"{API}/crm/v3/objects/contacts/501", json=obj(777))
    rsps.get(f"{API}/crm/v3/objects/contacts/502", json=obj(777))
    assert adapter.merge_contacts(KEEP, GONE) is True


def test_a_refused_merge_of_two_records_raises(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.post(MERGE, status=400, json=error("Cannot merge these contacts"))
    rsps.get(f"{API}/crm/v3/objects/contacts/501", json=obj(501))
    rsps.get(f"{API}/crm/v3/objects/contacts/502", json=obj(502))
    with pytest.raises(PermanentError, match="Cannot merge"):
        adapter.merge_contacts(KEEP, GONE)


def test_a_merge_with_a_missing_contact_raises(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.post(MERGE, status=404, json=error("Object not found", "OBJECT_NOT_FOUND"))
    rsps.get(f"{API}/crm/v3/objects/contacts/501", json=obj(501))
    rsps.get(
        f"{API}/crm/v3/objects/contacts/502",
        status=404,
        json=error("Object not found", "OBJECT_NOT_FOUND"),
    )
    with pytest.raises(NotFoundError):
        adapter.merge_contacts(KEEP, GONE)


def test_merging_a_contact_with_itself_calls_nothing(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    assert adapter.merge_contacts(KEEP, CrmRef("contact", "501")) is True
    assert not rsps.calls


# -- note_contact --------------------------------------------------------------


def test_note_on_a_contact_is_associated_and_keyed(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.post(f"{API}/crm/v3/objects/notes/search", json=search_page())
    rsps.post(f"{API}/crm/v3/objects/notes", status=201, json=obj(9001))
    text = "Possibly the same client as contact 502 <WhatsApp>\n\nВозможно, тот же клиент"
    ref = adapter.note_contact(KEEP, text, "link:501:502")
    assert ref == CrmRef("note", "9001")
    search, create = rsps.calls
    assert sent(search)["filterGroups"] == [
        {
            "filters": [
                {"propertyName": "bridge_message_id", "operator": "EQ", "value": "link:501:502"}
            ]
        }
    ]
    body = sent(create)
    assert body["properties"]["bridge_message_id"] == "link:501:502"
    assert body["properties"]["hs_note_body"] == (
        "<p>Possibly the same client as contact 502 &lt;WhatsApp&gt;</p>"
        "<p>Возможно, тот же клиент</p>"
    )
    assert body["associations"] == [
        {
            "to": {"id": "501"},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}],
        }
    ]


def test_a_note_already_written_is_not_written_again(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/notes/search",
        json=search_page(obj(9001, bridge_message_id="link:501:502")),
    )
    assert adapter.note_contact(KEEP, "again", "link:501:502") == CrmRef("note", "9001")
    assert len(rsps.calls) == 1


# -- the contact.merge webhook -------------------------------------------------


def merge_event(**over: Any) -> dict[str, Any]:
    event = {
        "eventId": 100,
        "subscriptionId": 4242001,
        "portalId": int(PORTAL),
        "appId": 777,
        "occurredAt": 1740830400000,
        "subscriptionType": "contact.merge",
        "attemptNumber": 0,
        "objectId": 501,
        "changeSource": "CRM_UI",
        "primaryObjectId": 501,
        "mergedObjectIds": [502],
        "newObjectId": 501,
        "numberOfPropertiesMoved": 3,
    }
    event.update(over)
    return event


def parse(adapter: HubSpotAdapter, *events: dict[str, Any]) -> list[Any]:
    request = signed(json.dumps(list(events)).encode())
    adapter.verify_webhook(request)
    return adapter.parse_webhook(request)


def test_a_merge_in_hubspot_is_contact_merged(adapter: HubSpotAdapter) -> None:
    (event,) = parse(adapter, merge_event())
    assert event.kind is CrmEventKind.CONTACT_MERGED
    assert event.contact == GONE and event.merged_into == KEEP
    assert event.external_id == "contact.merge:502:501"
    assert event.occurred_at.timestamp() == 1740830400


def test_a_merge_into_a_new_record_loses_both_ids(adapter: HubSpotAdapter) -> None:
    events = parse(adapter, merge_event(newObjectId=777, objectId=777, mergedObjectIds=[502, 503]))
    assert [(e.contact.id, e.merged_into.id) for e in events] == [
        ("502", "777"),
        ("503", "777"),
        ("501", "777"),
    ]
    assert {e.kind for e in events} == {CrmEventKind.CONTACT_MERGED}


def test_generic_merge_of_contacts_and_of_other_objects(adapter: HubSpotAdapter) -> None:
    contact, deal = parse(
        adapter,
        merge_event(subscriptionType="object.merge", objectTypeId="0-1"),
        merge_event(subscriptionType="object.merge", objectTypeId="0-3", eventId=101),
    )
    assert contact.kind is CrmEventKind.CONTACT_MERGED
    assert deal.kind is CrmEventKind.UNKNOWN


def test_a_deal_merge_or_an_empty_merge_is_unknown(adapter: HubSpotAdapter) -> None:
    deal, empty = parse(
        adapter,
        merge_event(subscriptionType="deal.merge"),
        merge_event(mergedObjectIds=[], eventId=102),
    )
    assert deal.kind is CrmEventKind.UNKNOWN and empty.kind is CrmEventKind.UNKNOWN


def test_a_merge_for_another_portal_is_refused(adapter: HubSpotAdapter) -> None:
    with pytest.raises(SignatureError):
        parse(adapter, merge_event(portalId=999))
