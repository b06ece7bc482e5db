# ruff: noqa: F811  (the fixtures imported from test_hubspot_adapter are used as arguments)
"""HubSpot's batch hooks (a burst of new customers, issue 11), HTTP mocked
with ``responses``; every request is checked against HubSpot's OpenAPI
specs and every faked 2xx body against the response schema (the
``spec_check`` fixture of ``test_hubspot_adapter``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import requests
import responses

from bridge.errors import AmbiguousError, PermanentError
from bridge.model import ContactDraft, ContactLookup, CrmRef, SenderProfile
from crm_adapters.hubspot import HubSpotAdapter
from tests.unit.test_hubspot_adapter import (  # noqa: F401 (fixtures)
    API,
    adapter,
    batch_answer,
    body_of,
    echo_batch,
    entity_draft,
    error,
    obj,
    rsps,
    search_page,
    spec_check,
    task_draft,
)


def person(n: int, **lookup: Any) -> ContactDraft:
    return ContactDraft(
        lookup=ContactLookup(identities={"telegram": f"tg-{n}"}, **lookup),
        profile=SenderProfile(first_name=f"Customer{n}"),
        owner_id="101",
    )


# -- contacts -------------------------------------------------------------------------


def test_find_contacts_is_one_search_with_in_filters(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/contacts/search",
        json=search_page(
            obj(601, bridge_telegram_id="tg-1", hubspot_owner_id="102"),
            # a rep typed the number nationally: found by its digits
            obj(602, phone="8 (916) 000-00-02"),
            obj(603, email="c@example.com"),
            obj(604, bridge_telegram_id="tg-1"),  # a younger duplicate
        ),
    )
    lookups = {
        "a": person(1).lookup,
        "b": person(2, phones=("+79160000002",)).lookup,
        "c": person(3, emails=("C@example.com",)).lookup,
        "d": person(4).lookup,
    }
    found = adapter.find_contacts(lookups)
    assert found == {
        "a": found["a"],
        "b": found["b"],
        "c": found["c"],
    }
    assert (found["a"].ref, found["a"].owner_id) == (CrmRef("contact", "601"), "102")
    assert found["b"].ref == CrmRef("contact", "602")
    assert found["c"].ref == CrmRef("contact", "603")
    (call,) = rsps.calls
    assert body_of(call)["filterGroups"] == [
        {
            "filters": [
                {
                    "propertyName": "bridge_telegram_id",
                    "operator": "IN",
                    "values": ["tg-1", "tg-2", "tg-3", "tg-4"],
                }
            ]
        },
        {"filters": [{"propertyName": "phone", "operator": "EQ", "value": "+79160000002"}]},
        {"filters": [{"propertyName": "email", "operator": "EQ", "value": "c@example.com"}]},
    ]


def test_find_contacts_ranks_identity_over_phone_over_email(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/contacts/search",
        json=search_page(
            obj(700, email="ann@example.com"),
            obj(701, phone="+79991234567"),
            obj(702, bridge_telegram_id="tg-1"),
            obj(703, bridge_telegram_id="tg-2"),
        ),
    )
    ann = person(1, phones=("+79991234567",), emails=("ann@example.com",)).lookup
    no_identity = ContactLookup(identities={}, phones=("+79991234567",))
    found = adapter.find_contacts({"ann": ann, "phone": no_identity, "other": person(2).lookup})
    assert {k: c.ref.id for k, c in found.items()} == {"ann": "702", "phone": "701", "other": "703"}


def test_find_contacts_takes_100_values_per_search(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(f"{API}/crm/v3/objects/contacts/search", json=search_page())
    assert adapter.find_contacts({str(n): person(n).lookup for n in range(150)}) == {}
    sizes = [len(body_of(c)["filterGroups"][0]["filters"][0]["values"]) for c in rsps.calls]
    assert sizes == [100, 50]
    # each on the search budget (its own bucket: 5 a second, FACTS 3.2)


def test_create_contacts_is_one_batch_matched_by_identity(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.add_callback(
        responses.POST, f"{API}/crm/v3/objects/contacts/batch/create", echo_batch("contacts")
    )
    made = adapter.create_contacts({f"k{n}": person(n) for n in range(3)})
    (call,) = rsps.calls
    inputs = body_of(call)["inputs"]
    assert [i["properties"]["bridge_telegram_id"] for i in inputs] == ["tg-0", "tg-1", "tg-2"]
    assert inputs[0]["properties"]["firstname"] == "Customer0"
    # the answer came in reverse order: matched by the identity, not the position
    assert {k: c.ref.id for k, c in made.items()} == {"k0": "1000", "k1": "1001", "k2": "1002"}
    assert {c.owner_id for c in made.values()} == {"101"}


def test_create_contacts_conflict_goes_one_by_one(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    conflict = error("Contact already exists. Existing ID: 777", "CONFLICT")
    rsps.post(f"{API}/crm/v3/objects/contacts/batch/create", status=409, json=conflict)
    rsps.post(f"{API}/crm/v3/objects/contacts", status=201, json=obj(901))
    made = adapter.create_contacts({"a": person(1), "b": person(2)})
    assert {k: c.ref.id for k, c in made.items()} == {"a": "901", "b": "901"}
    assert [c.request.url.rsplit("/", 1)[1] for c in rsps.calls] == [
        "create",
        "contacts",
        "contacts",
    ]


def test_create_contacts_answered_in_part_names_what_was_made(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/contacts/batch/create",
        status=207,
        json={
            **batch_answer([obj(1000, bridge_telegram_id="tg-1")]),
            "numErrors": 1,
            "errors": [
                {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "Property values were not valid",
                    "context": {},
                    "errors": [],
                    "links": {},
                }
            ],
        },
    )
    with pytest.raises(PermanentError, match="1 of 2") as refused:
        adapter.create_contacts({"a": person(1), "b": person(2)})
    assert refused.value.created == {"a": CrmRef("contact", "1000")}


# -- deals and tickets ----------------------------------------------------------------


def test_create_entities_batches_per_object_type_with_inline_associations(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.add_callback(
        responses.POST, f"{API}/crm/v3/objects/deals/batch/create", echo_batch("deals", 900)
    )
    rsps.add_callback(
        responses.POST, f"{API}/crm/v3/objects/tickets/batch/create", echo_batch("tickets", 950)
    )
    drafts = {
        "d1": replace(entity_draft(), conversation_uid="conv-1", contact=CrmRef("contact", "501")),
        "d2": replace(entity_draft(), conversation_uid="conv-2", contact=CrmRef("contact", "502")),
        "t1": replace(entity_draft("ticket", pipeline="0", stage="1"), conversation_uid="conv-3"),
    }
    made = adapter.create_entities(drafts)
    assert made == {
        "d1": CrmRef("deal", "900"),
        "d2": CrmRef("deal", "901"),
        "t1": CrmRef("ticket", "950"),
    }
    deals = body_of(rsps.calls[0])["inputs"]
    assert [d["properties"]["bridge_conversation_id"] for d in deals] == ["conv-1", "conv-2"]
    assert deals[1]["associations"] == [
        {
            "to": {"id": "502"},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
        }
    ]
    assert body_of(rsps.calls[1])["inputs"][0]["associations"][0]["types"][0] == {
        "associationCategory": "HUBSPOT_DEFINED",
        "associationTypeId": 16,
    }


def test_find_entities_is_one_search_per_type(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/deals/search",
        json=search_page(
            obj(905, bridge_conversation_id="conv-2"),
            obj(901, bridge_conversation_id="conv-2"),
            obj(903, bridge_conversation_id="conv-1"),
        ),
    )
    drafts = {
        "a": replace(entity_draft(), conversation_uid="conv-1"),
        "b": replace(entity_draft(), conversation_uid="conv-2"),
        "c": replace(entity_draft(), conversation_uid="conv-3"),
    }
    assert adapter.find_entities(drafts) == {
        "a": CrmRef("deal", "903"),
        "b": CrmRef("deal", "901"),  # the oldest of two
    }
    (call,) = rsps.calls
    assert body_of(call)["filterGroups"][0]["filters"][0] == {
        "propertyName": "bridge_conversation_id",
        "operator": "IN",
        "values": ["conv-1", "conv-2", "conv-3"],
    }


def test_create_entities_failure_keeps_what_an_earlier_chunk_made(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.add_callback(
        responses.POST, f"{API}/crm/v3/objects/deals/batch/create", echo_batch("deals", 900)
    )
    rsps.post(f"{API}/crm/v3/objects/tickets/batch/create", body=requests.ReadTimeout())
    drafts = {
        "d": replace(entity_draft(), conversation_uid="conv-1"),
        "t": replace(entity_draft("ticket", pipeline="0", stage="1"), conversation_uid="conv-2"),
    }
    with pytest.raises(AmbiguousError) as timed_out:
        adapter.create_entities(drafts)
    assert timed_out.value.created == {"d": CrmRef("deal", "900")}


# -- tasks ----------------------------------------------------------------------------


def test_create_tasks_looks_up_the_maybe_written_then_batches_the_rest(
    rsps: responses.RequestsMock, adapter: HubSpotAdapter
) -> None:
    rsps.post(
        f"{API}/crm/v3/objects/tasks/search",
        json=search_page(obj(300, bridge_message_id="conv-1:task")),
    )
    rsps.add_callback(
        responses.POST, f"{API}/crm/v3/objects/tasks/batch/create", echo_batch("tasks", 400)
    )
    drafts = {
        "a": replace(task_draft(), bridge_id="conv-1:task", maybe_written=True),
        "b": replace(task_draft(), bridge_id="conv-2:task", maybe_written=True),
        "c": replace(task_draft(), bridge_id="conv-3:task"),
    }
    made = adapter.create_tasks(drafts)
    assert made == {
        "a": CrmRef("task", "300"),
        "b": CrmRef("task", "400"),
        "c": CrmRef("task", "401"),
    }
    search, create = rsps.calls
    assert body_of(search)["filterGroups"][0]["filters"][0]["values"] == [
        "conv-1:task",
        "conv-2:task",
    ]
    inputs = body_of(create)["inputs"]
    assert [i["properties"]["bridge_message_id"] for i in inputs] == ["conv-2:task", "conv-3:task"]
    assert {t["types"][0]["associationTypeId"] for t in inputs[0]["associations"]} == {204, 216}


def test_batch_size_is_hubspots_100_inputs() -> None:
    assert HubSpotAdapter.batch_size == 100
