"""A burst of new customers (issue 11): where the CRM has batch calls, the
job that meets a new conversation opens the tenant's other new ones with
it, one batched call per step, and every person still gets exactly one
contact, deal, task and entry, also when a batch call times out after the
CRM committed it. Real SQLite/PostgreSQL and Redis, the in-memory CRM of
``tests.support.fakes`` (its batch hooks are one request each)."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
from sqlalchemy import select

import crm_adapters
from bridge import admin
from bridge.errors import AmbiguousError, PermanentError, RetryableError
from bridge.model import (
    ContactDraft,
    ContactLookup,
    CrmAccountInfo,
    EntityDraft,
    InboundMessage,
    MessageKind,
    SenderProfile,
)
from bridge.pipeline.inbound import accept, run_inbound
from bridge.tables import Contact, Conversation, Message, Outbox
from tests.support import fakes

MAPPING = """
crm: fake_batch
channels:
  telegram:
    object: deal
    pipeline: p1
    stage: s1
    owner: {strategy: round_robin, pool: ["101", "102"]}
    task: {when: new_entity, subject: "Call {contact.name}"}
"""

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def crm(monkeypatch: pytest.MonkeyPatch) -> fakes.FakeCrmState:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake_batch", "tests.support.fakes:FakeCrmBatch")
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    return fakes.STATE


def _tenant(runtime, kind: str) -> int:  # type: ignore[no-untyped-def]
    (runtime.settings.mappings_dir / f"{kind}.yaml").write_text(
        MAPPING.replace("crm: fake_batch", f"crm: {kind}")
    )
    tenant_id = admin.create_tenant(runtime, slug=kind, crm_kind=kind, mapping=f"{kind}.yaml")
    return admin.add_channel_account(
        runtime,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="1",
    )


@pytest.fixture
def account(runtime, crm):  # type: ignore[no-untyped-def]
    return _tenant(runtime, "fake_batch")


def first_message(user: int, n: int = 1) -> InboundMessage:
    return InboundMessage(
        channel_kind="telegram",
        external_id=f"{user}-{n}",
        external_user_id=str(user),
        external_thread_id=str(user),
        kind=MessageKind.TEXT,
        sent_at=T0 + dt.timedelta(seconds=user + n),
        text=f"hello from {user} #{n}",
        sequence=n,
        provider_message_id=str(n),
        profile=SenderProfile(first_name=f"Customer{user}"),
    )


def burst(runtime, account: int, people: int, first: int = 100) -> list[int]:  # type: ignore[no-untyped-def]
    """``people`` new customers write once each; the conversation ids."""
    users = list(range(first, first + people))
    accept(runtime, account, [first_message(u) for u in users])
    with runtime.transaction() as s:
        return list(s.scalars(select(Conversation.id).order_by(Conversation.id)))


def drain_all(runtime, conversations: list[int]) -> list[str]:  # type: ignore[no-untyped-def]
    """Each conversation's job in turn (what RQ does with one worker)."""
    return [run_inbound(runtime, c) for c in conversations]


def assert_exactly_once(runtime, crm: fakes.FakeCrmState, people: int) -> None:  # type: ignore[no-untyped-def]
    identities = Counter(c["identities"].get("telegram") for c in crm.contacts.values())
    assert len(identities) == people and set(identities.values()) == {1}
    per_conversation = Counter(e["conversation_uid"] for e in crm.entities.values())
    assert len(per_conversation) == people and set(per_conversation.values()) == {1}
    tasks = Counter(t["bridge_id"] for t in crm.tasks)
    assert len(tasks) == people and set(tasks.values()) == {1}
    entries = Counter(e["bridge_id"] for e in crm.entries)
    assert len(entries) == people and set(entries.values()) == {1}
    with runtime.transaction() as s:
        assert set(s.scalars(select(Message.status))) == {"synced"}
        assert set(s.scalars(select(Outbox.state))) == {"idle"}
        contacts = list(s.scalars(select(Contact)))
        conversations = list(s.scalars(select(Conversation)))
    assert {c.crm_state for c in contacts} == {"synced"}
    assert sorted(c.crm_contact_id for c in contacts) == sorted(crm.contacts)
    assert sorted(c.crm_entity_id for c in conversations) == sorted(crm.entities)
    for conv in conversations:
        entity = crm.entities[conv.crm_entity_id]
        # the deal names the person's contact, the conversation its deal
        assert entity["conversation_uid"] == conv.uid
        contact = crm.contacts[entity["contact"]]
        assert conv.crm_contact_id == entity["contact"]
        assert contact["identities"]["telegram"] == conv.external_thread_id
        assert conv.task_state and conv.task_state.startswith("task:")


def test_a_burst_is_opened_with_one_batched_call_per_step(runtime, account, crm) -> None:  # type: ignore[no-untyped-def]
    conversations = burst(runtime, account, 4)
    outcomes = drain_all(runtime, conversations)
    # the first job opened all four; the others found nothing left
    assert outcomes == ["idle"] * 4
    assert crm.calls == [
        "find_contacts",
        "create_contacts",
        "create_entities",
        "create_tasks",
        "append_entries",
    ]
    assert_exactly_once(runtime, crm, 4)
    # owners are chosen per conversation, as one by one
    assert sorted(e["owner"] for e in crm.entities.values()) == ["101", "101", "102", "102"]


def test_a_burst_larger_than_a_batch_is_opened_a_batch_at_a_time(runtime, account, crm) -> None:  # type: ignore[no-untyped-def]
    conversations = burst(runtime, account, 10)  # batch_size 4: 4 + 4 + 2
    drain_all(runtime, conversations)
    assert crm.calls.count("find_contacts") == 3
    assert crm.calls.count("create_contacts") == 3
    assert crm.calls.count("append_entries") == 3
    assert "find_contact" not in crm.calls and "create_contact" not in crm.calls
    assert_exactly_once(runtime, crm, 10)


@pytest.mark.parametrize(
    "hook", ["create_contacts", "create_entities", "create_tasks", "append_entries"]
)
def test_a_batch_call_that_times_out_after_the_crm_committed_is_not_repeated(
    runtime, account, crm, hook
) -> None:  # type: ignore[no-untyped-def]
    conversations = burst(runtime, account, 4)
    crm.fail_next(hook, AmbiguousError("read timeout"), after_commit=True)
    assert drain_all(runtime, conversations) == ["idle"] * 4
    # the retry looked up what the timed-out call had made: one of each
    assert_exactly_once(runtime, crm, 4)
    lookup = {
        "create_contacts": "find_contacts",
        "create_entities": "find_entities",
    }.get(hook)
    if lookup is not None:
        after = crm.calls[crm.calls.index(hook) + 1 :]
        assert after[0] == lookup and hook not in after


def test_people_known_to_the_crm_are_found_not_created(runtime, account, crm) -> None:  # type: ignore[no-untyped-def]
    # two of four already exist in the CRM (written from another tool)
    crm.contacts["900"] = {"identities": {"telegram": "100"}, "phones": [], "emails": []}
    crm.contacts["901"] = {"identities": {"telegram": "102"}, "phones": [], "emails": []}
    conversations = burst(runtime, account, 4)
    drain_all(runtime, conversations)
    assert crm.calls[:2] == ["find_contacts", "create_contacts"]
    assert len(crm.contacts) == 4
    assert_exactly_once(runtime, crm, 4)
    with runtime.transaction() as s:
        known = {c.external_thread_id: c.crm_contact_id for c in s.scalars(select(Conversation))}
    assert (known["100"], known["102"]) == ("900", "901")


def test_a_refused_batch_leaves_each_conversation_to_the_ordinary_way(
    runtime, account, crm
) -> None:  # type: ignore[no-untyped-def]
    conversations = burst(runtime, account, 4)
    crm.fail_next("create_entities", PermanentError("a stage was refused"))
    assert drain_all(runtime, conversations) == ["idle"] * 4
    # the entities were then opened one by one, each looked up first (the
    # refused call was marked creating): still one of everything
    assert crm.calls.count("create_entity") == 4
    assert_exactly_once(runtime, crm, 4)


def test_a_transient_outage_backs_every_member_off(runtime, account, crm) -> None:  # type: ignore[no-untyped-def]
    conversations = burst(runtime, account, 3)
    crm.fail_next("create_contacts", RetryableError("503"), times=10)
    assert run_inbound(runtime, conversations[0]) == "backoff"
    with runtime.transaction() as s:
        rows = list(s.scalars(select(Outbox)))
    assert {r.state for r in rows} == {"pending"} and all(r.not_before for r in rows)
    assert "create_contact" not in crm.calls
    # the CRM recovers: each conversation ends with one of everything
    crm.faults.clear()
    drain_all(runtime, conversations)
    assert_exactly_once(runtime, crm, 3)


def test_more_messages_of_a_member_are_written_by_the_opener(runtime, account, crm) -> None:  # type: ignore[no-untyped-def]
    conversations = burst(runtime, account, 3)
    accept(runtime, account, [first_message(101, 2), first_message(101, 3)])
    drain_all(runtime, conversations)
    with runtime.transaction() as s:
        assert set(s.scalars(select(Message.status))) == {"synced"}
    assert len(crm.entries) == 5 and len({e["bridge_id"] for e in crm.entries}) == 5
    assert len(crm.contacts) == 3 and len(crm.entities) == 3


def test_a_crm_without_batch_calls_opens_one_by_one(runtime, crm) -> None:  # type: ignore[no-untyped-def]
    account = _tenant(runtime, "fake")
    conversations = burst(runtime, account, 3)
    drain_all(runtime, conversations)
    assert crm.calls.count("find_contact") == 3 and crm.calls.count("create_entity") == 3
    assert not any(c.endswith("s") and c != "append_entries" for c in crm.calls)
    assert_exactly_once(runtime, crm, 3)


def test_the_default_batch_hooks_call_the_one_item_hooks(crm) -> None:  # type: ignore[no-untyped-def]
    adapter = fakes.FakeCrm(CrmAccountInfo(1, "fake", None), fakes.MemoryCredentials({}))
    assert adapter.batch_size == 1
    drafts = {
        k: ContactDraft(lookup=ContactLookup(identities={"telegram": k}), profile=SenderProfile())
        for k in ("a", "b")
    }
    made = adapter.create_contacts(drafts)
    assert set(made) == {"a", "b"} and crm.calls == ["create_contact", "create_contact"]
    assert adapter.find_contacts({k: d.lookup for k, d in drafts.items()}) == made
    assert adapter.find_contacts({"c": ContactLookup(identities={"telegram": "c"})}) == {}
    # a failure part-way names what was made before it (error.created)
    calls = [0]

    def second_fails(_draft: object) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise PermanentError("refused")

    crm.faults["create_entity"].append(second_fails)
    entity = EntityDraft("deal", "conv-1", made["a"].ref, "Deal")
    with pytest.raises(PermanentError) as refused:
        adapter.create_entities({"y": entity, "z": entity})
    assert list(refused.value.created) == ["y"]
    assert refused.value.created["y"].id in crm.entities


def test_two_workers_at_a_burst_make_one_of_everything(runtime, account, crm) -> None:  # type: ignore[no-untyped-def]
    """Two workers take the jobs from both ends at once: the openers take
    turns under the tenant's lease and each conversation's lease keeps a
    job out of what another opened."""
    conversations = burst(runtime, account, 12)
    errors: list[BaseException] = []

    def worker(order: list[int]) -> None:
        try:
            for conversation in order:
                run_inbound(runtime, conversation)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(conversations,)),
        threading.Thread(target=worker, args=(list(reversed(conversations)),)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    # a job that found its conversation busy left it to the opener, who drained it
    assert_exactly_once(runtime, crm, 12)
    # batches did the work; a conversation whose own job held it while the
    # other worker opened a batch may end up alone and go one by one
    assert crm.calls.count("create_contacts") >= 2
    assert crm.calls.count("create_contact") <= 2
