"""HubSpot: ``read_contact_fields``, a client's contact properties for the
service layer's routing rules (HTTP mocked with ``responses``; every request
and faked 2xx body checked against HubSpot's OpenAPI specs, as in
``test_hubspot_adapter``).

Sources: ``GET /crm/v3/objects/contacts/{contactId}`` with ``properties``
(a comma-separated list) answering ``SimplePublicObjectWithAssociations``,
whose ``properties`` values are nullable strings, and a name the account
has no property for not in the answer (the spec's ``properties`` parameter:
"If any of the specified properties are not present on the requested
object(s), they will be ignored";
``sandbox/hubspot/spec/crm-objects-contacts.v3.json``); a 404 body from
FACTS.md 3.3's error shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from bridge.errors import NotFoundError
from bridge.model import CrmRef
from tests.support.fakes import RecordingLimiter
from tests.unit.test_hubspot_adapter import API, PORTAL, error, make_adapter, obj
from tests.unit.test_hubspot_adapter import spec_check as spec_check  # autouse: every call

CONTACT = CrmRef("contact", "501")
GET = f"{API}/crm/v3/objects/contacts/501"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def asked(call: responses.Call) -> list[str]:
    """The ``properties`` a GET asked for, in order."""
    query = parse_qs(urlsplit(str(call.request.url)).query)
    return [p for raw in query.get("properties", []) for p in raw.split(",")]


def test_one_get_names_the_properties_and_reads_their_values(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(GET, json=obj(501, tier="gold", lifecyclestage="customer"))
    adapter = make_adapter()[0]
    read = adapter.read_contact_fields(CONTACT, ["tier", "lifecyclestage", "no_such_property"])
    assert read == {"tier": "gold", "lifecyclestage": "customer"}
    (call,) = rsps.calls
    assert call.request.method == "GET"
    assert asked(call) == ["tier", "lifecyclestage", "no_such_property"]


def test_a_property_without_a_value_is_left_out(rsps: responses.RequestsMock) -> None:
    rsps.get(GET, json=obj(501, tier=None, segment="  ", hs_language="ru"))
    read = make_adapter()[0].read_contact_fields(CONTACT, ["tier", "segment", "hs_language"])
    assert read == {"hs_language": "ru"}


def test_values_keep_hubspots_text(rsps: responses.RequestsMock) -> None:
    """An enumeration reads as its option's value; a multiple checkbox as
    HubSpot stores it (options separated by ``;``)."""
    rsps.get(GET, json=obj(501, lifecyclestage="salesqualifiedlead", interests="vip;gold"))
    read = make_adapter()[0].read_contact_fields(CONTACT, ["lifecyclestage", "interests"])
    assert read == {"lifecyclestage": "salesqualifiedlead", "interests": "vip;gold"}


def test_names_are_asked_once_and_answered_as_given(rsps: responses.RequestsMock) -> None:
    rsps.get(GET, json=obj(501, tier="gold"))
    read = make_adapter()[0].read_contact_fields(CONTACT, ["tier", " tier ", "tier", ""])
    assert read == {"tier": "gold", " tier ": "gold"}
    (call,) = rsps.calls
    assert asked(call) == ["tier", "tier"]


def test_no_names_ask_nothing(rsps: responses.RequestsMock) -> None:
    assert make_adapter()[0].read_contact_fields(CONTACT, []) == {}
    assert make_adapter()[0].read_contact_fields(CONTACT, ["", "  "]) == {}
    assert not rsps.calls


def test_a_contact_hubspot_no_longer_has_is_not_found(rsps: responses.RequestsMock) -> None:
    rsps.get(GET, status=404, json=error("Object not found", "OBJECT_NOT_FOUND"))
    with pytest.raises(NotFoundError):
        make_adapter()[0].read_contact_fields(CONTACT, ["tier"])


def test_the_read_waits_for_the_portals_api_bucket(rsps: responses.RequestsMock) -> None:
    limiter = RecordingLimiter()
    adapter = make_adapter(limiter=limiter)[0]
    rsps.get(GET, json=obj(501, tier="gold"))
    adapter.read_contact_fields(CONTACT, ["tier"])
    ((key, _),) = limiter.acquired
    assert key.startswith(f"hubspot:{PORTAL}:") and key.endswith(":api")
