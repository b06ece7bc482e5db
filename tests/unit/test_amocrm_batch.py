# ruff: noqa: F811  (the fixtures imported from test_amocrm_adapter are used as arguments)
"""amoCRM's batch hooks (a burst of new customers, issue 11), HTTP mocked
with ``responses``: contacts and tasks as JSON arrays matched back by the
``request_id`` amoCRM echoes (FACTS 1.3), leads 50 to a ``/leads/complex``
(FACTS 1.7), people still looked up one ``query=`` at a time (FACTS 1.5)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import pytest
import requests
import responses

from bridge.errors import AmbiguousError
from bridge.model import ContactLookup, CrmRef
from crm_adapters.amocrm import AmoCrmAdapter
from tests.unit.test_amocrm_adapter import (  # noqa: F401 (fixtures)
    API,
    adapter,
    amojo_signatures,
    body_of,
    collection,
    contact,
    contact_draft,
    entity_draft,
    rsps,
    task_draft,
)


def echo(key: str, start_id: int, *, reverse: bool = True) -> Any:
    """A batch POST's answer: every item made, ``request_id`` echoed, in
    reverse order (matched by the echo, not the position)."""

    ids = itertools.count(start_id)

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        items = json.loads(request.body)
        made = [{"id": next(ids), "request_id": i["request_id"]} for i in items]
        return 200, {}, json.dumps(collection(key, *(reversed(made) if reverse else made)))

    return callback


def test_batch_size_is_what_leads_complex_takes() -> None:
    assert AmoCrmAdapter.batch_size == 50


def test_create_contacts_is_one_array_matched_by_request_id(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.add_callback(responses.POST, f"{API}/api/v4/contacts", echo("contacts", 40))
    drafts = {
        f"k{n}": replace(contact_draft(), lookup=ContactLookup(identities={"telegram": f"{n}"}))
        for n in range(3)
    }
    made = adapter.create_contacts(drafts)
    (call,) = rsps.calls
    items = body_of(call)
    assert [i["request_id"] for i in items] == ["0", "1", "2"]
    identities = [
        next(f["values"][0]["value"] for f in i["custom_fields_values"] if f.get("field_id") == 701)
        for i in items
    ]
    assert identities == ["0", "1", "2"]
    assert {k: c.ref.id for k, c in made.items()} == {"k0": "40", "k1": "41", "k2": "42"}
    assert {c.owner_id for c in made.values()} == {"101"}


def test_create_contacts_takes_50_per_request(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.add_callback(responses.POST, f"{API}/api/v4/contacts", echo("contacts", 1000))
    made = adapter.create_contacts({str(n): contact_draft() for n in range(60)})
    assert [len(body_of(c)) for c in rsps.calls] == [50, 10]
    assert len({c.ref.id for c in made.values()}) == 60


def test_find_contacts_searches_one_person_at_a_time(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    """amoCRM's only search is ``query=`` over one value (FACTS 1.5)."""
    rsps.get(f"{API}/api/v4/contacts", json=collection("contacts", contact(501, identity="1")))
    rsps.get(f"{API}/api/v4/contacts", status=204)
    found = adapter.find_contacts(
        {
            "a": ContactLookup(identities={"telegram": "1"}),
            "b": ContactLookup(identities={"telegram": "2"}),
        }
    )
    assert {k: c.ref.id for k, c in found.items()} == {"a": "501"}
    assert [c.request.params["query"] for c in rsps.calls] == ["1", "2"]


def test_create_entities_is_one_complex_call_per_50_leads(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    def complex_answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        leads = json.loads(request.body)
        answer = [
            {
                "id": 900 + n,
                "contact_id": lead["_embedded"]["contacts"][0]["id"],
                "company_id": None,
                "request_id": [lead["request_id"]],
                "merged": False,
            }
            for n, lead in enumerate(leads)
        ]
        return 200, {}, json.dumps(list(reversed(answer)))

    rsps.add_callback(responses.POST, f"{API}/api/v4/leads/complex", complex_answer)
    drafts = {
        f"c{n}": entity_draft(conversation_uid=f"conv-{n}", contact=CrmRef("contact", str(500 + n)))
        for n in range(55)
    }
    made = adapter.create_entities(drafts)
    assert [len(body_of(c)) for c in rsps.calls] == [50, 5]
    assert made["c0"] == CrmRef("lead", "900") and made["c54"] == CrmRef("lead", "904")
    first = body_of(rsps.calls[0])[1]
    assert first["request_id"] == "conv-1"
    assert first["_embedded"]["contacts"] == [{"id": 501}]


def test_create_entities_failure_names_the_earlier_leads(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    answer = [{"id": 900 + n, "request_id": [f"conv-{n}"], "merged": False} for n in range(50)]
    rsps.post(f"{API}/api/v4/leads/complex", json=answer)
    rsps.post(f"{API}/api/v4/leads/complex", body=requests.ReadTimeout())
    drafts = {f"c{n}": entity_draft(conversation_uid=f"conv-{n}") for n in range(51)}
    with pytest.raises(AmbiguousError) as timed_out:
        adapter.create_entities(drafts)
    assert len(timed_out.value.created) == 50 and "c50" not in timed_out.value.created


def test_create_tasks_is_one_array_and_looks_up_the_maybe_written(
    rsps: responses.RequestsMock, adapter: AmoCrmAdapter
) -> None:
    rsps.get(f"{API}/api/v4/tasks", status=204)  # the earlier attempt wrote nothing
    rsps.add_callback(responses.POST, f"{API}/api/v4/tasks", echo("tasks", 300))
    drafts = {
        "a": replace(task_draft(), bridge_id="conv-1:task", maybe_written=True),
        "b": replace(task_draft(), bridge_id="conv-2:task"),
    }
    made = adapter.create_tasks(drafts)
    assert made == {"a": CrmRef("task", "300"), "b": CrmRef("task", "301")}
    lookup, create = rsps.calls
    assert lookup.request.method == "GET"
    assert [t["request_id"] for t in body_of(create)] == ["conv-1:task", "conv-2:task"]
