"""amoCRM: no merge the bridge may call, and a common note on a contact keyed
for retries (HTTP mocked with ``responses``). A merge in amoCRM's UI arrives
as ``contacts[delete]`` with the id only and stays CONTACT_REMOVED
(``test_amocrm_adapter`` covers the delete webhook).

Sources: ``POST|GET /api/v4/contacts/{id}/notes`` and the ``common`` note's
``params.text`` (FACTS.md 1.9); no merge in the public API
(``crm_adapters/amocrm/merge.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from bridge.model import CrmRef
from crm_adapters.freetext import find_markers, marker_hash, strip_markers
from tests.unit.test_amocrm_adapter import API, make_adapter

CONTACT = CrmRef("contact", "501")
OTHER = CrmRef("contact", "502")
NOTES = f"{API}/api/v4/contacts/501/notes"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def created(note_id: int, request_id: str) -> dict[str, Any]:
    return {
        "_links": {"self": {"href": f"{API}/api/v4/contacts/501/notes"}},
        "_embedded": {
            "notes": [
                {
                    "id": note_id,
                    "entity_id": 501,
                    "request_id": request_id,
                    "_links": {"self": {"href": f"{API}/api/v4/contacts/501/notes/{note_id}"}},
                }
            ]
        },
    }


def test_no_merge_is_called(rsps: responses.RequestsMock) -> None:
    assert make_adapter()[0].merge_contacts(CONTACT, OTHER) is False
    assert not rsps.calls


def test_a_note_is_a_common_note_with_the_keys_marker(rsps: responses.RequestsMock) -> None:
    rsps.get(NOTES, status=204)  # "nothing found" (FACTS 1.3)
    rsps.post(NOTES, json=created(9001, "link:501:502"))
    text = "Possibly the same client as contact 502\nВозможно, тот же клиент"
    assert make_adapter()[0].note_contact(CONTACT, text, "link:501:502") == CrmRef("note", "9001")
    listed, posted = rsps.calls
    query = parse_qs(urlsplit(listed.request.url).query)
    assert query["filter[note_type][]"] == ["common"]
    (item,) = json.loads(posted.request.body)
    assert item["note_type"] == "common" and item["request_id"] == "link:501:502"
    assert "entity_id" not in item  # the path names the contact (FACTS 1.9)
    assert strip_markers(item["params"]["text"]) == text
    assert [m[0] for m in find_markers(item["params"]["text"])] == [marker_hash("link:501:502")]


def test_a_note_already_written_is_found_not_written(rsps: responses.RequestsMock) -> None:
    adapter = make_adapter()[0]
    rsps.get(NOTES, status=204)
    rsps.post(NOTES, json=created(9001, "link:501:502"))
    adapter.note_contact(CONTACT, "linked", "link:501:502")
    written = json.loads(rsps.calls[1].request.body)[0]
    rsps.replace(
        responses.GET,
        NOTES,
        json={
            "_links": {"self": {"href": NOTES}},
            "_embedded": {
                "notes": [
                    {"id": 8000, "entity_id": 501, "note_type": "common", "params": {"text": "x"}},
                    {
                        "id": 9001,
                        "entity_id": 501,
                        "note_type": "common",
                        "params": written["params"],
                    },
                ]
            },
        },
    )
    assert adapter.note_contact(CONTACT, "linked", "link:501:502") == CrmRef("note", "9001")
    assert [c.request.method for c in rsps.calls] == ["GET", "POST", "GET"]
