"""Bitrix24: ``read_contact_fields``, a client's contact fields for the
service layer's routing rules (HTTP mocked with ``responses`` through
``test_bitrix24_adapter.Portal``, which answers ``batch`` as Bitrix24 does).

Sources: the ``crm.contact.get`` answer is the official example
(``sandbox/bitrix24/spec/examples/api-reference__crm__contacts__crm-contact-get.1.json``:
every field, ``UF_CRM_*`` and multifields included; ``TYPE_ID`` and
``SOURCE_ID`` as codes) and its "Not found" error text (FACTS.md 2.1: an
empty ``error`` carries its meaning in the text); a list user field's items
(``LIST``: ``ID``, ``VALUE``) from the ``crm.contact.userfield.add`` page
(dev.1c-bitrix.ru .../crm_contact_userfield_add.php), its value on the
contact being the item's id, an array for a multiple field (UNCONFIRMED in
the stored docs: the sandbox's model); "Access denied." for a user who is
no CRM administrator (the newer userfield pages, as ``sandbox/bitrix24/
config.py`` ``userfield_admin_only`` notes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from bridge.errors import NotFoundError
from bridge.model import CrmRef
from tests.support.fakes import RecordingLimiter
from tests.unit.test_bitrix24_adapter import DOMAIN, MEMBER, Err, Portal, make

SPEC = Path(__file__).resolve().parents[2] / "sandbox" / "bitrix24" / "spec" / "examples"
#: the official crm.contact.get answer (contact 43)
OFFICIAL: dict[str, Any] = json.loads(
    (SPEC / "api-reference__crm__contacts__crm-contact-get.1.json").read_text(encoding="utf-8")
)["result"]
CONTACT = CrmRef("contact", "43")
SETTINGS = {
    "member_id": MEMBER,
    "domain": DOMAIN,
    "custom_fields": {"contact": {"bridge_reach": "UF_CRM_BRIDGE_REACH"}},
}


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def portal(rsps: responses.RequestsMock) -> Portal:
    return Portal(rsps)


def contact(**fields: Any) -> dict[str, Any]:
    return {**OFFICIAL, **fields}


def list_field(name: str, items: dict[str, str], *, multiple: bool = False) -> dict[str, Any]:
    """A ``crm.contact.userfield.list`` row of a list field."""
    return {
        "ID": "141",
        "ENTITY_ID": "CRM_CONTACT",
        "FIELD_NAME": name,
        "USER_TYPE_ID": "enumeration",
        "MULTIPLE": "Y" if multiple else "N",
        "LIST": [
            {"ID": item_id, "SORT": "10", "VALUE": value, "DEF": "N"}
            for item_id, value in items.items()
        ],
    }


def test_built_in_fields_read_as_their_codes_in_one_request(portal: Portal) -> None:
    portal.on("crm.contact.get", contact())
    read = make().read_contact_fields(
        CONTACT, ["TYPE_ID", "source_id", "utm_source", "PHONE", "PHOTO", "NO_SUCH_FIELD"]
    )
    assert read == {
        "TYPE_ID": "PARTNER",
        "source_id": "WEB",
        "utm_source": "google",
        "PHONE": "+13333333555, +15599888666",
    }
    assert [method for method, _ in portal.requests] == ["batch"]
    ((method, params),) = portal.executed
    assert (method, params) == ("crm.contact.get", {"id": "43"})


def test_a_list_field_reads_as_its_items_text(portal: Portal) -> None:
    portal.on("crm.contact.get", contact(UF_CRM_TIER=["60", "61"], UF_CRM_LEVEL="62"))
    portal.on(
        "crm.contact.userfield.list",
        [
            list_field("UF_CRM_TIER", {"60": "Gold", "61": "VIP"}, multiple=True),
            list_field("UF_CRM_LEVEL", {"62": "Key account"}),
        ],
    )
    read = make().read_contact_fields(
        CONTACT, ["UF_CRM_TIER", "uf_crm_level", "UF_CRM_1720697698689"]
    )
    assert read == {
        "UF_CRM_TIER": "Gold, VIP",
        "uf_crm_level": "Key account",
        "UF_CRM_1720697698689": 'Example value of a custom field with type "String"',
    }
    assert [method for method, _ in portal.requests] == ["batch"]
    (listed,) = portal.methods("crm.contact.userfield.list")
    assert listed == {"filter": {"USER_TYPE_ID": "enumeration"}}


def test_list_items_the_user_may_not_read_leave_the_ids(portal: Portal) -> None:
    portal.on("crm.contact.get", contact(UF_CRM_TIER=["60", "61"]))

    def refused(_params: dict[str, Any]) -> Any:
        raise Err(403, "", "Access denied.")

    portal.on("crm.contact.userfield.list", refused)
    assert make().read_contact_fields(CONTACT, ["UF_CRM_TIER"]) == {"UF_CRM_TIER": "60, 61"}


def test_a_mapping_property_reads_the_field_the_setup_made(portal: Portal) -> None:
    portal.on("crm.contact.get", contact(UF_CRM_BRIDGE_REACH="Telegram: yes"))
    portal.on("crm.contact.userfield.list", [])
    read = make(settings=SETTINGS).read_contact_fields(CONTACT, ["bridge_reach"])
    assert read == {"bridge_reach": "Telegram: yes"}


def test_a_field_without_a_value_is_left_out(portal: Portal) -> None:
    portal.on(
        "crm.contact.get",
        contact(UF_CRM_TIER=[], UF_CRM_NOTE="", UF_CRM_FILE={"id": 5, "url": "/file"}),
    )
    portal.on("crm.contact.userfield.list", [])
    read = make().read_contact_fields(
        CONTACT, ["UF_CRM_TIER", "UF_CRM_NOTE", "UF_CRM_FILE", "ORIGIN_ID", "ADDRESS"]
    )
    assert read == {}


def test_names_that_are_no_field_ask_nothing(portal: Portal) -> None:
    """A name the setup did not map and that cannot be a field code."""
    assert make().read_contact_fields(CONTACT, ["Client tier", "", "уровень"]) == {}
    assert portal.requests == []


def test_a_contact_bitrix24_no_longer_has_is_not_found(portal: Portal) -> None:
    def missing(_params: dict[str, Any]) -> Any:
        raise Err(400, "", "Not found")

    portal.on("crm.contact.get", missing)
    with pytest.raises(NotFoundError):
        make().read_contact_fields(CONTACT, ["TYPE_ID"])


def test_the_read_waits_for_the_portals_bucket(portal: Portal) -> None:
    limiter = RecordingLimiter()
    portal.on("crm.contact.get", contact())
    make(limiter=limiter).read_contact_fields(CONTACT, ["TYPE_ID"])
    assert [key for key, _ in limiter.acquired] == [f"bitrix24:{MEMBER}:api"]
