"""Bitrix24: no merge the bridge may call, and a comment on a contact's
timeline keyed for retries (HTTP mocked with ``responses`` through
``test_bitrix24_adapter.Portal``). A merge in the UI arrives as
ONCRMCONTACTDELETE and stays CONTACT_REMOVED
(``test_bitrix24_adapter::test_uninstall_and_deletions``).

Sources: ``crm.timeline.comment.add`` / ``.list`` with ``ENTITY_TYPE``
``contact`` (FACTS.md 2.7; b24restdocs ``crm-timeline-comment-add.md``); no
merge method in the stored docs (``crm_adapters/bitrix24/merge.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import responses

from bridge.model import CrmRef
from crm_adapters.freetext import find_markers, marker_hash, strip_markers
from tests.unit.test_bitrix24_adapter import Portal, make

CONTACT = CrmRef("contact", "41")
OTHER = CrmRef("contact", "42")


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def portal(rsps: responses.RequestsMock) -> Portal:
    return Portal(rsps)


def test_no_merge_is_called(portal: Portal) -> None:
    assert make().merge_contacts(CONTACT, OTHER) is False
    assert portal.executed == []


def test_a_note_is_a_contact_comment_with_the_keys_marker(portal: Portal) -> None:
    portal.on("crm.timeline.comment.list", [])
    portal.on("crm.timeline.comment.add", 9001)
    text = "Possibly the same client as contact 42\nВозможно, тот же клиент"
    assert make().note_contact(CONTACT, text, "link:41:42") == CrmRef("comment", "9001")
    (listed,) = portal.methods("crm.timeline.comment.list")
    assert listed["filter"] == {"ENTITY_ID": 41, "ENTITY_TYPE": "contact"}
    (added,) = portal.methods("crm.timeline.comment.add")
    fields = added["fields"]
    assert (fields["ENTITY_ID"], fields["ENTITY_TYPE"]) == (41, "contact")
    assert strip_markers(fields["COMMENT"]) == text
    assert [m[0] for m in find_markers(fields["COMMENT"])] == [marker_hash("link:41:42")]


def test_a_note_already_written_is_found_not_written(portal: Portal) -> None:
    adapter = make()
    written: list[dict[str, Any]] = []

    def add(params: dict[str, Any]) -> int:
        written.append({"ID": str(100 + len(written)), "COMMENT": params["fields"]["COMMENT"]})
        return 100 + len(written) - 1

    portal.on("crm.timeline.comment.add", add)
    portal.on("crm.timeline.comment.list", lambda _p: list(reversed(written)))
    first = adapter.note_contact(CONTACT, "linked", "link:41:42")
    other = adapter.note_contact(CONTACT, "another link", "link:41:43")
    again = adapter.note_contact(CONTACT, "linked", "link:41:42")
    assert again == first != other
    assert len(written) == 2
