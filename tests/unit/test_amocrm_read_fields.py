"""amoCRM: ``read_contact_fields``, a client's contact fields for the service
layer's routing rules (HTTP mocked with ``responses``).

Sources: ``GET /api/v4/contacts/{id}`` and the contact model
(``custom_fields_values (array|null)``, FACTS.md 1.5); a field read back as
``{"field_id","field_name","field_code","field_type","values":[…]}``, a
select's values with the option's text in ``value`` beside ``enum_id``,
multitext values with ``enum_code`` (FACTS.md 1.6); 204 for an id amoCRM
does not have ("nothing found", FACTS.md 1.3).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import responses

from bridge.errors import NotFoundError
from bridge.model import CrmRef
from tests.support.fakes import RecordingLimiter
from tests.unit.test_amocrm_adapter import ACCOUNT_ID, API, SETTINGS, make_adapter

CONTACT = CrmRef("contact", "501")
GET = f"{API}/api/v4/contacts/501"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def field(
    field_id: int, name: str, values: list[dict[str, Any]], *, code: str | None = None, kind="text"
) -> dict[str, Any]:
    return {
        "field_id": field_id,
        "field_name": name,
        "field_code": code,
        "field_type": kind,
        "values": values,
    }


def contact(*fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": 501,
        "name": "Ann",
        "responsible_user_id": 101,
        "custom_fields_values": list(fields) or None,
        "account_id": int(ACCOUNT_ID),
    }


TIER = field(901, "Tier", [{"value": "Gold"}])
SEGMENT = field(902, "Segment", [{"value": "VIP", "enum_id": 41, "enum_code": None}], kind="select")
INTERESTS = field(
    903,
    "Interests",
    [{"value": "Shoes", "enum_id": 51}, {"value": "Bags", "enum_id": 52}],
    kind="multiselect",
)
PHONE = field(
    100,
    "Phone",
    [
        {"value": "+79161234567", "enum_id": 1, "enum_code": "MOB"},
        {"value": "+74951234567", "enum_id": 2, "enum_code": "WORK"},
    ],
    code="PHONE",
    kind="multitext",
)


def test_one_get_reads_fields_by_name_and_code(rsps: responses.RequestsMock) -> None:
    rsps.get(GET, json=contact(TIER, SEGMENT, INTERESTS, PHONE))
    read = make_adapter()[0].read_contact_fields(
        CONTACT, ["tier", "SEGMENT", "Interests", "phone", "Nowhere"]
    )
    assert read == {
        "tier": "Gold",
        "SEGMENT": "VIP",
        "Interests": "Shoes, Bags",
        "phone": "+79161234567, +74951234567",
    }
    (call,) = rsps.calls
    assert call.request.method == "GET" and call.request.url == GET


def test_a_fields_code_comes_before_another_fields_name(rsps: responses.RequestsMock) -> None:
    by_name = field(904, "tier", [{"value": "by name"}])
    by_code = field(905, "Client tier", [{"value": "by code"}], code="TIER")
    rsps.get(GET, json=contact(by_name, by_code))
    assert make_adapter()[0].read_contact_fields(CONTACT, ["tier"]) == {"tier": "by code"}


def test_a_mapping_property_reads_the_field_the_setup_made(rsps: responses.RequestsMock) -> None:
    """The setup names its field after the property, or with " (bridge)"
    when a field of another type had the name: its id finds it either way."""
    made = field(711, "company_size (bridge)", [{"value": "50-100"}])
    other = field(712, "company_size", [], kind="checkbox")
    rsps.get(GET, json=contact(other, made))
    adapter = make_adapter()[0]
    assert SETTINGS["custom_fields"]["contacts"]["company_size"] == 711
    assert adapter.read_contact_fields(CONTACT, ["company_size"]) == {"company_size": "50-100"}


def test_values_that_are_no_text_read_as_text_or_are_skipped(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(
        GET,
        json=contact(
            field(906, "Newsletter", [{"value": True}], kind="checkbox"),
            field(907, "Employees", [{"value": 120}], kind="numeric"),
            field(908, "Address", [{"value": {"address_line_1": "1 Main St"}}], kind="legal"),
            field(909, "Note", [{"value": "  "}]),
        ),
    )
    read = make_adapter()[0].read_contact_fields(
        CONTACT, ["Newsletter", "Employees", "Address", "Note"]
    )
    assert read == {"Newsletter": "true", "Employees": "120"}


def test_a_contact_without_custom_fields_reads_nothing(rsps: responses.RequestsMock) -> None:
    rsps.get(GET, json=contact())
    assert make_adapter()[0].read_contact_fields(CONTACT, ["tier", "company_size"]) == {}


def test_names_are_answered_as_given(rsps: responses.RequestsMock) -> None:
    rsps.get(GET, json=contact(TIER))
    read = make_adapter()[0].read_contact_fields(CONTACT, ["Tier", " tier ", "Tier", ""])
    assert read == {"Tier": "Gold", " tier ": "Gold"}
    assert len(rsps.calls) == 1


def test_no_names_ask_nothing(rsps: responses.RequestsMock) -> None:
    assert make_adapter()[0].read_contact_fields(CONTACT, ["", " "]) == {}
    assert not rsps.calls


@pytest.mark.parametrize("status", [204, 404])
def test_a_contact_amocrm_no_longer_has_is_not_found(
    rsps: responses.RequestsMock, status: int
) -> None:
    rsps.get(GET, status=status)
    with pytest.raises(NotFoundError):
        make_adapter()[0].read_contact_fields(CONTACT, ["tier"])


def test_the_read_waits_for_the_accounts_api_bucket(rsps: responses.RequestsMock) -> None:
    limiter = RecordingLimiter()
    rsps.get(GET, json=contact(TIER))
    make_adapter(limiter=limiter)[0].read_contact_fields(CONTACT, ["tier"])
    assert [key for key, _ in limiter.acquired] == [f"amocrm:{ACCOUNT_ID}:api"]
