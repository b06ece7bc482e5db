# ruff: noqa: F811  (the fixtures imported from test_bitrix24_adapter are used as arguments)
"""Bitrix24's batch hooks (a burst of new customers, issue 11): every step
for many people as ``batch`` requests of at most 50 commands (FACTS 2.4),
``halt=0`` so one refused command does not stop the others. HTTP mocked
with ``responses`` behind ``test_bitrix24_adapter.Portal``, which runs
each command the way the portal does and refuses a batch over 50."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from bridge.errors import PermanentError
from bridge.model import ContactLookup, CrmRef, TaskDraft
from crm_adapters.bitrix24 import Bitrix24Adapter
from tests.unit.test_bitrix24_adapter import (  # noqa: F401 (fixtures)
    CONTACT,
    LEAD,
    Err,
    Portal,
    _fresh_caches,
    contact_row,
    draft,
    lead_draft,
    make,
    php_parse,
    portal,
    rsps,
)
from tests.unit.test_bitrix24_adapter import (
    T0 as _T0,
)


def people(n: int) -> dict[str, ContactLookup]:
    return {f"k{i}": ContactLookup(identities={"telegram": f"{1000 + i}"}) for i in range(n)}


def test_batch_size_is_one_batch_of_commands() -> None:
    assert Bitrix24Adapter.batch_size == 50


def test_find_contacts_packs_many_lookups_into_one_batch(portal: Portal) -> None:
    rows = {"1001": [contact_row("31", "1001")], "1003": [contact_row("33", "1003", owner="9")]}
    portal.on("crm.contact.list", lambda p: rows.get(p["filter"]["IM"], []))
    found = make().find_contacts(people(4))
    assert {k: (c.ref.id, c.owner_id) for k, c in found.items()} == {
        "k1": ("31", "5"),
        "k3": ("33", "9"),
    }
    assert [m for m, _ in portal.requests] == ["batch"]
    commands = portal.requests[0][1]["cmd"]
    assert list(commands) == ["p0_id0", "p1_id0", "p2_id0", "p3_id0"]
    assert php_parse(commands["p2_id0"].partition("?")[2])["filter"] == {"IM": "1002"}


def test_find_contacts_never_splits_one_persons_lookup(portal: Portal) -> None:
    portal.on("crm.contact.list", [])
    portal.on("crm.duplicate.findbycomm", {"CONTACT": [275]})
    portal.on("crm.contact.get", {"ID": "275", "ASSIGNED_BY_ID": "9"})
    # 5 commands a person (identity, phone + its owner, e-mail + its owner)
    lookups = {f"k{i}": draft().lookup for i in range(12)}
    found = make().find_contacts(lookups)
    assert {c.ref.id for c in found.values()} == {"275"} and len(found) == 12
    sizes = [len(body["cmd"]) for m, body in portal.requests]
    assert sizes == [50, 10]  # ten people, then two: references stay inside one batch
    second = portal.requests[1][1]["cmd"]
    assert second["p10_phone_owner"] == "crm.contact.get?id=$result[p10_phone][CONTACT][0]"


def test_create_contacts_is_one_batch_and_names_what_was_made_on_a_refusal(
    portal: Portal,
) -> None:
    ids = itertools.count(40)

    def add(params: dict[str, Any]) -> int:
        if params["fields"]["IM"][0]["VALUE"] == "1002":
            raise Err(400, "", "Access denied.")
        return next(ids)

    portal.on("crm.contact.add", add)
    drafts = {key: replace(draft(), lookup=lookup) for key, lookup in people(2).items()}
    made = make().create_contacts(drafts)
    assert {k: c.ref.id for k, c in made.items()} == {"k0": "40", "k1": "41"}
    assert {c.owner_id for c in made.values()} == {"5"}
    assert [m for m, _ in portal.requests] == ["batch"]
    assert portal.requests[0][1]["halt"] == 0
    drafts = {key: replace(draft(), lookup=lookup) for key, lookup in people(4).items()}
    with pytest.raises(PermanentError) as refused:
        make().create_contacts(drafts)
    # halt=0: the refused one did not stop the one after it
    assert set(refused.value.created) == {"k0", "k1", "k3"}


def test_create_and_find_entities_in_one_batch_each(portal: Portal) -> None:
    ids = itertools.count(900)
    portal.on("crm.lead.add", lambda p: next(ids))
    portal.on(
        "crm.lead.list",
        lambda p: [{"ID": "902"}, {"ID": "901"}] if p["filter"]["ORIGIN_ID"] == "conv-1" else [],
    )
    drafts = {
        f"c{n}": lead_draft(conversation_uid=f"conv-{n}", contact=CrmRef("contact", str(500 + n)))
        for n in range(3)
    }
    adapter = make()
    made = adapter.create_entities(drafts)
    assert made == {f"c{n}": CrmRef("lead", str(900 + n)) for n in range(3)}
    added = portal.methods("crm.lead.add")
    # (a batch's commands are query strings: every value arrives as text)
    assert [a["fields"]["CONTACT_ID"] for a in added] == ["500", "501", "502"]
    assert [a["fields"]["ORIGIN_ID"] for a in added] == ["conv-0", "conv-1", "conv-2"]
    assert adapter.find_entities(drafts) == {"c1": CrmRef("lead", "901")}  # the oldest
    assert [m for m, _ in portal.requests] == ["batch", "batch"]


def test_create_tasks_batches_new_todos_and_looks_up_the_maybe_written(
    portal: Portal,
) -> None:
    portal.on("crm.activity.todo.add", lambda p: {"id": 700 + int(p["ownerId"])})
    portal.on("crm.activity.list", [])  # the earlier attempt wrote nothing
    base = TaskDraft(
        bridge_id="conv-1:task",
        subject="Reply to Ann",
        body="Is the blue one in stock?",
        due_at=_T0,
        contact=CONTACT,
        entity=LEAD,
        owner_id="5",
    )
    drafts = {
        "a": replace(base, entity=CrmRef("lead", "1")),
        "b": replace(base, bridge_id="conv-2:task", entity=CrmRef("lead", "2")),
        "c": replace(base, bridge_id="conv-3:task", entity=CrmRef("lead", "3"), maybe_written=True),
    }
    made = make().create_tasks(drafts)
    assert made == {k: CrmRef("todo", str(700 + n)) for k, n in (("a", 1), ("b", 2), ("c", 3))}
    # the maybe-written one on its own (looked up first), the new ones in one batch
    assert [m for m, _ in portal.requests] == [
        "crm.activity.list",
        "crm.activity.todo.add",
        "batch",
    ]
    batch = portal.requests[-1][1]["cmd"]
    assert len(batch) == 2
    todo = php_parse(batch["n0"].partition("?")[2])
    assert todo["ownerTypeId"] == "1" and todo["ownerId"] == "1" and todo["responsibleId"] == "5"
