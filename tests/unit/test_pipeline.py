"""The core pipeline (ingest -> outbox -> sync job) on real SQLite/PostgreSQL
and a real Redis, with an in-memory CRM adapter whose failures the tests
script (integration tests use the real adapters against the sandbox)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import responses
from rq import Queue
from sqlalchemy import func, select, update

import crm_adapters
from bridge import admin, outbox
from bridge.errors import AmbiguousError, AuthError, NotReadyError, PermanentError, RetryableError
from bridge.jobs import DELIVER_QUEUE, SYNC_QUEUE
from bridge.model import InboundMessage, MessageKind, SenderProfile
from bridge.pipeline.inbound import accept, run_inbound
from bridge.sweeper import sweep_once
from bridge.tables import Contact, ContactMerge, Conversation, Message, Outbox, Tenant
from tests.support import fakes

MAPPING = """
crm: fake
channels:
  telegram:
    object: deal
    pipeline: p1
    stage: s1
    owner: {strategy: round_robin, pool: ["101", "102"]}
    task: {when: new_entity, subject: "Call {contact.name}"}
    fields:
      entity: {source_field: "{utm.utm_source}"}
"""

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def fake_crm(monkeypatch: pytest.MonkeyPatch) -> fakes.FakeCrmState:
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    return fakes.STATE


@pytest.fixture
def tenant(runtime, fake_crm):  # type: ignore[no-untyped-def]
    return fakes.telegram_tenant(runtime, MAPPING)


def msg(update_id: int, user: int = 7, text: str | None = None, **kw) -> InboundMessage:  # type: ignore[no-untyped-def]
    return InboundMessage(
        channel_kind="telegram",
        external_id=str(update_id),
        external_user_id=str(user),
        external_thread_id=str(user),
        kind=kw.pop("kind", MessageKind.TEXT),
        sent_at=T0 + dt.timedelta(seconds=update_id),
        text=text if text is not None else f"message {update_id}",
        sequence=update_id,
        provider_message_id=str(update_id),
        profile=kw.pop("profile", SenderProfile(first_name="Ivan", utm={"utm_source": "ads"})),
        **kw,
    )


def conversation_id(runtime, account_id: int, thread: str = "7") -> int:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        return s.scalar(
            select(Conversation.id).where(
                Conversation.channel_account_id == account_id,
                Conversation.external_thread_id == thread,
            )
        )


def statuses(runtime) -> list[str]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        return list(s.scalars(select(Message.status).order_by(Message.seq)))


def test_accept_stores_once_and_enqueues_one_job_per_burst(runtime, tenant, redis_conn):  # type: ignore[no-untyped-def]
    _, account = tenant
    first = accept(runtime, account, [msg(1), msg(2)])
    again = accept(runtime, account, [msg(2), msg(3), msg(3)])  # msg 3 twice in one call
    assert (first.stored, first.duplicates, len(first.jobs)) == (2, 0, 1)
    assert (again.stored, again.duplicates, len(again.jobs)) == (1, 2, 0)  # job already responsible
    with runtime.transaction() as s:
        seqs = list(s.scalars(select(Message.seq).order_by(Message.seq)))
        row = s.scalars(select(Outbox)).one()
    assert seqs == [1, 2, 3]
    # one bump per transaction that stored messages (a job reading after
    # the commit sees all of them), not one per message
    assert (row.state, row.version) == ("pending", 2)
    queued = Queue(SYNC_QUEUE, connection=redis_conn).job_ids
    assert queued == [outbox.job_id("in", row.conversation_id, 1)]


def test_sync_creates_contact_deal_task_and_entries_in_order(runtime, tenant, fake_crm):  # type: ignore[no-untyped-def]
    _, account = tenant
    accept(runtime, account, [msg(i) for i in (3, 1, 2)])  # arrival order != customer order
    conv = conversation_id(runtime, account)
    assert run_inbound(runtime, conv) == "idle"
    assert len(fake_crm.contacts) == 1 and len(fake_crm.entities) == 1 and len(fake_crm.tasks) == 1
    entity = next(iter(fake_crm.entities.values()))
    assert (entity["pipeline"], entity["stage"], entity["owner"]) == ("p1", "s1", "101")
    assert entity["properties"] == {"source_field": "ads"}
    assert fake_crm.tasks[0]["subject"] == "Call Ivan"
    # entries carry the provider's own time and sequence: the CRM sorts by them
    ordered = sorted(fake_crm.entries, key=lambda e: (e["occurred_at"], e["sequence"]))
    assert [e["text"] for e in ordered] == ["message 1", "message 2", "message 3"]
    assert statuses(runtime) == ["synced"] * 3
    with runtime.transaction() as s:
        assert s.scalars(select(Outbox)).one().state == "idle"


def test_second_conversation_reuses_contact_and_round_robin_moves_on(runtime, tenant, fake_crm):  # type: ignore[no-untyped-def]
    _, account = tenant
    accept(
        runtime, account, [msg(1, user=7), msg(2, user=8, profile=SenderProfile(first_name="Olga"))]
    )
    run_inbound(runtime, conversation_id(runtime, account, "7"))
    run_inbound(runtime, conversation_id(runtime, account, "8"))
    owners = sorted(e["owner"] for e in fake_crm.entities.values())
    assert owners == ["101", "102"]


def test_commit_then_timeout_is_looked_up_not_duplicated(runtime, tenant, fake_crm):  # type: ignore[no-untyped-def]
    _, account = tenant
    accept(runtime, account, [msg(1), msg(2)])
    fake_crm.fail_next("append_entries", AmbiguousError("read timeout"), after_commit=True)
    fake_crm.fail_next("create_entity", AmbiguousError("read timeout"), after_commit=True)
    assert run_inbound(runtime, conversation_id(runtime, account)) == "idle"
    assert len(fake_crm.entities) == 1
    assert sorted(len(fake_crm.entries_for(uid)) for uid in _uids(runtime)) == [1, 1]
    assert "find_entity" in fake_crm.calls


def test_permanent_error_parks_then_replay_resumes_in_order(runtime, tenant, fake_crm):  # type: ignore[no-untyped-def]
    _, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    run_inbound(runtime, conv)
    fake_crm.fail_next("append_entries", PermanentError("bad property"), times=2)
    accept(runtime, account, [msg(2), msg(3)])
    assert run_inbound(runtime, conv) == "parked"
    assert statuses(runtime) == ["synced", "failed", "pending"]
    report = admin.status(runtime)
    assert report["failed"][0]["error"] == "bad property" and report["parked"]
    accept(runtime, account, [msg(4)])  # arrives while parked: waits behind the failure
    assert statuses(runtime)[-1] == "pending"
    assert admin.replay(runtime, conversation_id=conv) == 1
    assert run_inbound(runtime, conv) == "idle"
    assert statuses(runtime) == ["synced"] * 4
    assert [e["text"] for e in fake_crm.entries] == [f"message {i}" for i in (1, 2, 3, 4)]


def test_transient_errors_retry_inside_the_job(runtime, tenant, fake_crm):  # type: ignore[no-untyped-def]
    _, account = tenant
    accept(runtime, account, [msg(1)])
    fake_crm.fail_next("find_contact", RetryableError("429", retry_after=0.01), times=2)
    assert run_inbound(runtime, conversation_id(runtime, account)) == "idle"
    assert fake_crm.calls.count("find_contact") == 3


def test_transient_outage_backs_off_and_sweeper_resumes(runtime, tenant, fake_crm, redis_conn):  # type: ignore[no-untyped-def]
    _, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    fake_crm.fail_next("find_contact", RetryableError("503"), times=10)
    assert run_inbound(runtime, conv) == "backoff"
    with runtime.transaction() as s:
        row = s.scalars(select(Outbox)).one()
        row.not_before = row.enqueued_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    redis_conn.flushdb()
    assert sweep_once(runtime) == 1
    fake_crm.faults.clear()
    assert run_inbound(runtime, conv) == "idle"
    assert statuses(runtime) == ["synced"]


def test_auth_error_parks_until_reauthorised(runtime, tenant, fake_crm):  # type: ignore[no-untyped-def]
    tenant_id, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    fake_crm.fail_next("find_contact", AuthError("token revoked"))
    assert run_inbound(runtime, conv) == "parked"
    with runtime.transaction() as s:
        assert s.get(Tenant, tenant_id).status == "needs_reauth"
    assert statuses(runtime) == ["pending"]  # nothing lost while it waits
    assert admin.reauthorize(runtime, tenant_id, {"access_token": "new"}) == 1
    assert run_inbound(runtime, conv) == "idle"
    assert statuses(runtime) == ["synced"]


def test_sweeper_recreates_jobs_lost_with_redis(runtime, tenant, redis_conn):  # type: ignore[no-untyped-def]
    _, account = tenant
    accept(runtime, account, [msg(1)])
    redis_conn.flushdb()  # the queued job is gone
    assert sweep_once(runtime) == 0  # not yet: within the grace period
    with runtime.transaction() as s:
        s.scalars(select(Outbox)).one().enqueued_at = dt.datetime.now(dt.UTC) - dt.timedelta(
            seconds=5
        )
    assert sweep_once(runtime) == 1
    assert len(Queue(SYNC_QUEUE, connection=redis_conn).job_ids) == 1
    assert sweep_once(runtime) == 0  # its job is queued now


def test_shared_phone_merges_contacts_and_updates_crm(runtime, tenant, fake_crm):  # type: ignore[no-untyped-def]
    _, account = tenant
    accept(
        runtime,
        account,
        [
            msg(
                1,
                user=7,
                profile=SenderProfile(first_name="A", phone="+79991234567", phone_verified=True),
            )
        ],
    )
    run_inbound(runtime, conversation_id(runtime, account, "7"))
    accept(runtime, account, [msg(2, user=8, profile=SenderProfile(first_name="B"))])
    run_inbound(runtime, conversation_id(runtime, account, "8"))
    assert len(fake_crm.contacts) == 2
    # user 8 shares a phone (another format) that user 7 wrote from: one person
    accept(
        runtime,
        account,
        [
            msg(
                3,
                user=8,
                kind=MessageKind.CONTACT,
                profile=SenderProfile(
                    first_name="B", phone="7 (999) 123-45-67", phone_verified=True
                ),
            )
        ],
    )
    with runtime.transaction() as s:
        merges = list(s.scalars(select(ContactMerge)))
        live = s.scalar(
            select(func.count()).select_from(Contact).where(Contact.merged_into_id.is_(None))
        )
    assert len(merges) == 1 and merges[0].reason == "same verified phone" and live == 1
    assert merges[0].crm_action == "pending"  # both were in the CRM already
    assert merges[0].evidence["source"] == "telegram: proven by the channel"
    run_inbound(runtime, conversation_id(runtime, account, "8"))
    assert fake_crm.entries[-1]["contact"] == fake_crm.entries[0]["contact"]
    # the CRM merged the second contact into the first, with a note saying why
    first, second = fake_crm.entries[0]["contact"], fake_crm.entries[1]["contact"]
    assert fake_crm.merged == {second: first}
    [(noted, text, _)] = fake_crm.notes
    assert noted == first and "+79991234567" in text and "merged" in text
    with runtime.transaction() as s:
        assert s.scalars(select(ContactMerge)).one().crm_action == "merged"


def _uids(runtime) -> list[str]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        return list(s.scalars(select(Message.uid)))


def test_a_second_job_for_finished_work_ends_at_once(runtime, tenant, redis_conn):  # type: ignore[no-untyped-def]
    """The sweeper may start a job for work another job just finished: it
    must find nothing to do and end (not spin)."""
    _, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    assert run_inbound(runtime, conv) == "idle"
    assert run_inbound(runtime, conv) == "idle"


def test_closed_entity_then_next_message_opens_a_new_one(runtime, tenant, fake_crm):  # type: ignore[no-untyped-def]
    from bridge.model import CrmEvent, CrmEventKind, CrmRef
    from bridge.pipeline.outbound import accept_crm_events

    tenant_id, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    run_inbound(runtime, conv)
    (first,) = fake_crm.entities
    won = CrmEvent(CrmEventKind.ENTITY_CLOSED, "ev1", T0, entity=CrmRef("deal", first))
    accept_crm_events(runtime, tenant_id, [won])
    accept(runtime, account, [msg(2)])
    run_inbound(runtime, conv)
    assert len(fake_crm.entities) == 2 and len(fake_crm.tasks) == 2
    second = next(e for e in fake_crm.entities if e != first)
    assert [e["entity"] for e in fake_crm.entries] == [first, second]


def test_contact_removed_in_the_crm_is_found_again(runtime, tenant, fake_crm):  # type: ignore[no-untyped-def]
    from bridge.model import CrmEvent, CrmEventKind, CrmRef
    from bridge.pipeline.outbound import accept_crm_events

    tenant_id, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    run_inbound(runtime, conv)
    (old,) = fake_crm.contacts
    del fake_crm.contacts[old]  # merged away in the CRM
    gone = CrmEvent(CrmEventKind.CONTACT_REMOVED, "ev2", T0, contact=CrmRef("contact", old))
    accept_crm_events(runtime, tenant_id, [gone])
    accept(runtime, account, [msg(2)])
    run_inbound(runtime, conv)
    assert len(fake_crm.contacts) == 1 and fake_crm.entries[-1]["contact"] != old


# -- CRMs that open a conversation in one request (Bitrix24's batch) -------------


@pytest.fixture
def once_tenant(runtime, fake_crm, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake_once", "tests.support.fakes:FakeCrmAtOnce")
    (runtime.settings.mappings_dir / "fake_once.yaml").write_text(
        MAPPING.replace("crm: fake", "crm: fake_once")
    )
    tenant_id = admin.create_tenant(
        runtime, slug="once", crm_kind="fake_once", mapping="fake_once.yaml"
    )
    return tenant_id, admin.add_channel_account(
        runtime,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="2",
    )


def _one_of_each(fake_crm: fakes.FakeCrmState, runtime) -> None:  # type: ignore[no-untyped-def]
    assert (len(fake_crm.contacts), len(fake_crm.entities), len(fake_crm.tasks)) == (1, 1, 1)
    assert sorted(len(fake_crm.entries_for(uid)) for uid in _uids(runtime)) == [1, 1, 1]
    ordered = sorted(fake_crm.entries, key=lambda e: (e["occurred_at"], e["sequence"]))
    assert [e["text"] for e in ordered] == ["message 1", "message 2", "message 3"]
    assert statuses(runtime) == ["synced"] * 3
    with runtime.transaction() as s:
        conv = s.scalars(select(Conversation)).one()
        contact = s.scalars(select(Contact)).one()
    [entity_id] = fake_crm.entities
    [contact_id] = fake_crm.contacts
    assert (conv.crm_entity_id, conv.crm_entity_state) == (entity_id, "synced")
    assert conv.task_state == f"task:{fake_crm.tasks[0]['id']}"
    assert (contact.crm_contact_id, contact.crm_state) == (contact_id, "synced")


def test_a_new_conversation_opens_with_one_lookup_and_one_request(runtime, once_tenant, fake_crm):  # type: ignore[no-untyped-def]
    _, account = once_tenant
    accept(runtime, account, [msg(i) for i in (3, 1, 2)])
    assert run_inbound(runtime, conversation_id(runtime, account)) == "idle"
    assert fake_crm.calls == ["find_contact", "open_conversation"]
    _one_of_each(fake_crm, runtime)
    entity = next(iter(fake_crm.entities.values()))
    assert (entity["owner"], entity["stage"]) == ("101", "s1")
    # the next message of the open conversation is an ordinary append
    accept(runtime, account, [msg(4)])
    run_inbound(runtime, conversation_id(runtime, account))
    assert fake_crm.calls[2:] == ["append_entries"]


def test_an_ambiguous_open_is_finished_by_looking_up_not_by_writing_again(
    runtime, once_tenant, fake_crm
):  # type: ignore[no-untyped-def]
    _, account = once_tenant
    accept(runtime, account, [msg(i) for i in (1, 2, 3)])
    fake_crm.fail_next("open_conversation", AmbiguousError("read timeout"), after_commit=True)
    assert run_inbound(runtime, conversation_id(runtime, account)) == "idle"
    _one_of_each(fake_crm, runtime)  # nothing written twice
    assert fake_crm.calls[:2] == ["find_contact", "open_conversation"]
    assert {"find_entity", "create_task", "append_entries"} <= set(fake_crm.calls[2:])
    assert "create_contact" not in fake_crm.calls and "create_entity" not in fake_crm.calls


def test_a_refused_open_goes_the_ordinary_way(runtime, once_tenant, fake_crm):  # type: ignore[no-untyped-def]
    _, account = once_tenant
    accept(runtime, account, [msg(i) for i in (1, 2, 3)])
    fake_crm.fail_next("open_conversation", PermanentError("bad stage"))
    assert run_inbound(runtime, conversation_id(runtime, account)) == "idle"
    _one_of_each(fake_crm, runtime)
    assert "create_entity" in fake_crm.calls and fake_crm.calls.count("open_conversation") == 1


def test_a_known_contact_with_an_open_entity_is_not_opened_again(runtime, once_tenant, fake_crm):  # type: ignore[no-untyped-def]
    tenant_id, account = once_tenant
    accept(runtime, account, [msg(1)])
    run_inbound(runtime, conversation_id(runtime, account))
    # the same person writes to the company's second bot: the open deal is reused
    second = admin.add_channel_account(
        runtime,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "2:x", "secret_token": "s"},
        external_id="3",
    )
    accept(runtime, second, [msg(2, user=7)])
    with runtime.transaction() as s:
        assert s.scalar(select(func.count(Contact.id))) == 1
    run_inbound(runtime, conversation_id(runtime, second))
    assert fake_crm.calls.count("open_conversation") == 1 and len(fake_crm.entities) == 1
    assert fake_crm.calls[-1] == "append_entries"


def test_a_rate_limit_refusal_is_retried_without_a_lookup(runtime, tenant, fake_crm, monkeypatch):  # type: ignore[no-untyped-def]
    _, account = tenant
    accept(runtime, account, [msg(1)])
    run_inbound(runtime, conversation_id(runtime, account))  # the deal exists now
    seen: list[bool] = []
    real = fakes.FakeCrm.append_entries

    def spy(self, entries):  # type: ignore[no-untyped-def]
        seen.extend(e.maybe_written for e in entries)
        return real(self, entries)

    monkeypatch.setattr(fakes.FakeCrm, "append_entries", spy)
    refused = RetryableError("429", retry_after=0.01)
    refused.nothing_written = True  # a 429/503 rate-limit answer: nothing ran
    ambiguous = AmbiguousError("read timeout")
    fake_crm.fail_next("append_entries", refused)
    accept(runtime, account, [msg(2)])
    assert run_inbound(runtime, conversation_id(runtime, account)) == "idle"
    assert seen == [False, False]  # the retry of a refusal looks nothing up
    fake_crm.fail_next("append_entries", ambiguous)
    accept(runtime, account, [msg(3)])
    run_inbound(runtime, conversation_id(runtime, account))
    assert seen[2:] == [False, True]  # after a maybe-written answer it does
    assert statuses(runtime) == ["synced"] * 3


def test_a_drain_takes_no_more_than_the_crm_fits_in_one_request(
    runtime, tenant, fake_crm, monkeypatch
):  # type: ignore[no-untyped-def]
    _, account = tenant
    monkeypatch.setattr(fakes.FakeCrm, "entries_per_request", 2, raising=False)
    sizes: list[int] = []
    real = fakes.FakeCrm.append_entries

    def spy(self, entries):  # type: ignore[no-untyped-def]
        sizes.append(len(entries))
        return real(self, entries)

    monkeypatch.setattr(fakes.FakeCrm, "append_entries", spy)
    accept(runtime, account, [msg(i) for i in range(1, 6)])
    assert run_inbound(runtime, conversation_id(runtime, account)) == "idle"
    assert sizes == [2, 2, 1]
    assert [e["text"] for e in fake_crm.entries] == [f"message {i}" for i in range(1, 6)]


class _Crash(Exception):
    """The worker dies (SIGKILL) after the CRM committed the write."""


def test_replay_after_a_crash_and_a_refusal_does_not_write_twice(
    runtime, tenant, fake_crm, redis_conn
):  # type: ignore[no-untyped-def]
    # found by the outbox state machine: crash after the CRM's commit, then the
    # CRM refuses the (lookup-carrying) retry, then an operator replays
    _, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    fake_crm.fail_next("append_entries", _Crash("SIGKILL"), after_commit=True)  # type: ignore[arg-type]
    with pytest.raises(_Crash):
        run_inbound(runtime, conv)
    redis_conn.delete(f"bridge:lock:in:{conv}")  # the dead job's lease expires
    with runtime.transaction() as s:
        for m in s.scalars(select(Message)):
            m.claimed_at = m.claimed_at - dt.timedelta(hours=1)
    fake_crm.fail_next("append_entries", PermanentError("rejected"), times=50)
    assert run_inbound(runtime, conv) == "parked"
    assert statuses(runtime) == ["failed"]
    fake_crm.faults.clear()
    assert admin.replay(runtime) == 1
    assert run_inbound(runtime, conv) == "idle"
    [uid] = _uids(runtime)
    assert len(fake_crm.entries_for(uid)) == 1 and statuses(runtime) == ["synced"]


def test_second_step_refused_after_the_first_is_written_is_not_written_twice(  # type: ignore[no-untyped-def]
    runtime, tenant, fake_crm
):
    """An append of several steps per entry (a note, then an inbox message)
    whose second step is refused after the first step of the whole batch was
    written: what was written is kept with each message, so finding the
    refused entry, the retry and the replay after the fix skip those steps —
    even where a lookup cannot see a fresh write (a lagging search index)."""
    _, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    run_inbound(runtime, conv)
    fake_crm.blind_lookups = True
    fake_crm.fail_second_step(PermanentError("no inbox channel yet"), times=50)
    accept(runtime, account, [msg(2), msg(3), msg(4)])
    assert run_inbound(runtime, conv) == "parked"
    assert statuses(runtime) == ["synced", "failed", "pending", "pending"]
    fake_crm.second_step.clear()  # the setup finished
    assert admin.replay(runtime, conversation_id=conv) == 1
    assert run_inbound(runtime, conv) == "idle"
    assert statuses(runtime) == ["synced"] * 4
    assert [e["text"] for e in fake_crm.entries] == [f"message {i}" for i in (1, 2, 3, 4)]


def test_a_channel_whose_crm_setup_has_not_finished_waits_and_setup_resumes_it(  # type: ignore[no-untyped-def]
    runtime, tenant, fake_crm, redis_conn
):
    """Messages that arrive while the install's CRM-side setup still runs
    wait for it (back off, never parked or failed), and finishing the setup
    sends them at once."""
    tenant_id, account = tenant
    accept(runtime, account, [msg(1), msg(2)])
    conv = conversation_id(runtime, account)
    fake_crm.fail_next("append_entries", NotReadyError("no inbox channel yet"), times=100)
    assert run_inbound(runtime, conv) == "backoff"
    report = admin.status(runtime)
    assert report["parked"] == [] and report["failed"] == []
    assert report["messages"]["in"] == {"pending": 2}
    [waiting] = report["waiting"]
    assert waiting["conversation"] == conv and waiting["reason"].startswith("waiting: ")
    assert fake_crm.entries == []
    fake_crm.faults.clear()
    redis_conn.flushdb()
    admin.setup_crm(runtime, tenant_id)
    queued = Queue(SYNC_QUEUE, connection=redis_conn).job_ids
    assert len(queued) == 1 and queued[0].startswith(f"sync-{conv}-")
    assert run_inbound(runtime, conv) == "idle"
    assert [e["text"] for e in fake_crm.entries] == ["message 1", "message 2"]


def test_messages_of_a_channel_connected_before_its_crm_setup_wait_for_it(  # type: ignore[no-untyped-def]
    runtime, tenant, fake_crm, redis_conn
):
    """A channel whose CRM-side setup has not run yet (custom properties,
    an inbox channel: connected while the install's setup still runs): its
    messages wait, the CRM untouched, until the setup covers it."""
    tenant_id, _ = tenant
    account = admin.add_channel_account(
        runtime,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "2:y", "secret_token": "s2"},
        awaiting_setup=True,
    )
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    assert run_inbound(runtime, conv) == "backoff"
    assert fake_crm.calls == [] and statuses(runtime) == ["pending"]
    [waiting] = admin.status(runtime)["waiting"]
    assert f"has not covered channel account {account}" in waiting["reason"]
    redis_conn.flushdb()
    admin.setup_crm(runtime, tenant_id)
    assert len(Queue(SYNC_QUEUE, connection=redis_conn).job_ids) == 1
    assert run_inbound(runtime, conv) == "idle"
    assert [e["text"] for e in fake_crm.entries] == ["message 1"]


def test_a_contact_created_anew_in_the_crm_is_first_in_its_conversation_again(  # type: ignore[no-untyped-def]
    runtime, tenant, fake_crm
):
    """The person's CRM contact was deleted there and the next message
    creates a new one: its entry says ``first_in_conversation`` again, so a
    CRM that links its conversation view to the contact (amoCRM's chat)
    links it to the new one instead of filing under the deleted contact."""
    _, account = tenant
    accept(runtime, account, [msg(1), msg(2)])
    conv = conversation_id(runtime, account)
    run_inbound(runtime, conv)
    accept(runtime, account, [msg(3)])
    run_inbound(runtime, conv)
    [old] = list(fake_crm.contacts)
    fake_crm.contacts.clear()  # deleted in the CRM ...
    with runtime.transaction() as s:  # ... which the CRM's webhook told us
        s.execute(update(Contact).values(crm_contact_id=None, crm_state=None, crm_owner_id=None))
    accept(runtime, account, [msg(4)])
    run_inbound(runtime, conv)
    [new] = list(fake_crm.contacts)
    assert new != old
    assert [(e["text"], e["contact"], e["first"]) for e in fake_crm.entries] == [
        ("message 1", old, True),
        ("message 2", old, True),
        ("message 3", old, False),
        ("message 4", new, True),
    ]


def test_after_a_quiet_spell_a_closed_deal_we_were_not_told_about_is_not_written_to(  # type: ignore[no-untyped-def]
    runtime, tenant, fake_crm
):
    """The CRM's "won/lost" webhook never came: a message after more than
    ``entity_recheck`` of silence asks whether the deal is still open, and a
    closed one gets a new deal; messages in between ask nothing."""
    _, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    run_inbound(runtime, conv)
    accept(runtime, account, [msg(60)])  # a minute later: no question
    run_inbound(runtime, conv)
    assert "entity_is_open" not in fake_crm.calls
    [first] = list(fake_crm.entities)
    fake_crm.entities[first]["closed"] = True  # won in the CRM; no webhook
    accept(runtime, account, [msg(60 + 7200)])  # two hours of silence
    run_inbound(runtime, conv)
    assert fake_crm.calls.count("entity_is_open") == 1
    [_, second] = list(fake_crm.entities)
    assert [e["entity"] for e in fake_crm.entries] == [first, first, second]


# -- follow-up work: the CRM's delivery report, the channel's acknowledgement ------


def _reply(runtime, tenant_id: int, conv_uid: str, external_id: str) -> None:  # type: ignore[no-untyped-def]
    from bridge.model import CrmEvent, CrmEventKind
    from bridge.pipeline.outbound import accept_crm_events

    reply = CrmEvent(
        CrmEventKind.REPLY, external_id, T0, thread_key=conv_uid, text=f"answer {external_id}"
    )
    accept_crm_events(runtime, tenant_id, [reply])


def _telegram_sends(rsps, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        rsps.post(
            "https://api.telegram.org/bot1:x/sendMessage",
            json={
                "ok": True,
                "result": {"message_id": 100 + i, "date": 1, "chat": {"id": 7, "type": "private"}},
            },
        )


@responses.activate
def test_a_delivery_report_is_its_own_work_retried_until_the_crm_has_it(  # type: ignore[no-untyped-def]
    runtime, tenant, fake_crm, redis_conn
):
    """A reply is sent once; reporting it is a separate job: a CRM that
    fails the report does not hold the reply back, the report is retried
    (backing off, then resumed) until the CRM has it, exactly once."""
    from bridge.pipeline.outbound import run_outbound, run_reports

    tenant_id, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    run_inbound(runtime, conv)
    with runtime.transaction() as s:
        uid = s.get(Conversation, conv).uid
    _reply(runtime, tenant_id, uid, "crm-msg-1")
    _telegram_sends(responses.mock, 1)
    fake_crm.fail_next("report_delivery", RetryableError("503"), times=100)
    assert run_outbound(runtime, conv) == "idle"  # sent, whatever the report does
    assert len(responses.calls) == 1
    assert run_reports(runtime, conv) == "backoff"
    assert admin.status(runtime)["followups"]["report"] == {"pending": 1}
    assert fake_crm.reports == []
    fake_crm.faults.clear()
    with runtime.transaction() as s:  # the backoff is over: the sweeper's turn
        s.execute(update(Outbox).values(not_before=None, enqueued_at=None))
    redis_conn.flushdb()
    sweep_once(runtime)
    # on the queue workers take first: the rep waits for the "sent" mark
    assert Queue(DELIVER_QUEUE, connection=redis_conn).job_ids[0].startswith(f"report-{conv}-")
    assert run_reports(runtime, conv) == "idle"
    [report] = fake_crm.reports
    assert (report.crm_message_id, report.status.value) == ("crm-msg-1", "sent")
    assert admin.status(runtime)["followups"]["report"] == {"done": 1}
    assert run_reports(runtime, conv) == "idle" and len(fake_crm.reports) == 1


@responses.activate
def test_a_refused_report_is_shown_and_replayed_without_holding_the_others(  # type: ignore[no-untyped-def]
    runtime, tenant, fake_crm
):
    from bridge.pipeline.outbound import run_outbound, run_reports

    tenant_id, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    run_inbound(runtime, conv)
    with runtime.transaction() as s:
        uid = s.get(Conversation, conv).uid
    _reply(runtime, tenant_id, uid, "crm-msg-1")
    _reply(runtime, tenant_id, uid, "crm-msg-2")
    _telegram_sends(responses.mock, 2)
    assert run_outbound(runtime, conv) == "idle"
    fake_crm.fail_next("report_delivery", PermanentError("message not found in the CRM"))
    assert run_reports(runtime, conv) == "idle"
    assert [r.crm_message_id for r in fake_crm.reports] == ["crm-msg-2"]
    report = admin.status(runtime)
    assert report["followups"]["report"] == {"done": 1, "failed": 1}
    [failed] = report["followup_failed"]
    assert failed["direction"] == "report" and failed["error"] == "message not found in the CRM"
    assert admin.replay(runtime, conversation_id=conv) == 1
    assert run_reports(runtime, conv) == "idle"
    assert sorted(r.crm_message_id for r in fake_crm.reports) == ["crm-msg-1", "crm-msg-2"]


def test_a_button_press_is_acknowledged_as_its_own_work(  # type: ignore[no-untyped-def]
    runtime, tenant, fake_crm, monkeypatch
):
    """Once a button press is in the CRM, the channel is told (Telegram's
    answerCallbackQuery) by its own job; a failing answer is retried there
    and never touches the CRM sync."""
    from bridge.pipeline.inbound import run_acknowledgements
    from channel_adapters.telegram import TelegramAdapter

    answered: list[str | None] = []
    failures = [RetryableError("flood")]

    def acknowledge(self, message):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        answered.append(message.callback_id)

    monkeypatch.setattr(TelegramAdapter, "acknowledge", acknowledge)
    _, account = tenant
    accept(runtime, account, [msg(1, kind=MessageKind.CALLBACK, callback_id="cb-1")])
    conv = conversation_id(runtime, account)
    assert run_inbound(runtime, conv) == "idle"
    assert answered == []  # not in the sync job
    assert run_acknowledgements(runtime, conv) == "idle"  # retried in the job
    assert answered == ["cb-1"]
    assert admin.status(runtime)["followups"]["ack"] == {"done": 1}


@responses.activate
def test_a_reply_refused_part_way_goes_on_from_the_first_part_not_sent(  # type: ignore[no-untyped-def]
    runtime, tenant, fake_crm
):
    """A long reply split into parts meets flood control at part 2: the
    core's retry waits, records part 1, and sends only part 2 — no part
    twice; with its budget spent, the next job goes on from part 2 too."""
    from bridge.pipeline.outbound import run_outbound

    tenant_id, account = tenant
    accept(runtime, account, [msg(1)])
    conv = conversation_id(runtime, account)
    run_inbound(runtime, conv)
    with runtime.transaction() as s:
        uid = s.get(Conversation, conv).uid
    from bridge.model import CrmEvent, CrmEventKind
    from bridge.pipeline.outbound import accept_crm_events

    long_text = "a" * 4096 + "b" * 10
    accept_crm_events(
        runtime,
        tenant_id,
        [CrmEvent(CrmEventKind.REPLY, "crm-1", T0, thread_key=uid, text=long_text)],
    )
    sent = "https://api.telegram.org/bot1:x/sendMessage"
    ok = {
        "ok": True,
        "result": {"message_id": 101, "date": 1, "chat": {"id": 7, "type": "private"}},
    }
    flood = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    responses.post(sent, json=ok)
    for _ in range(runtime.settings.retry_attempts):  # more than one job's budget
        responses.post(sent, json=flood, status=429)
    assert run_outbound(runtime, conv) == "backoff"
    with runtime.transaction() as s:
        [reply] = s.scalars(select(Message).where(Message.direction == "out")).all()
        assert (reply.status, reply.channel_message_ids) == ("pending", ["101"])
    responses.post(sent, json={**ok, "result": {**ok["result"], "message_id": 102}})
    with runtime.transaction() as s:
        s.execute(update(Outbox).values(not_before=None))
    assert run_outbound(runtime, conv) == "idle"
    texts = [json.loads(c.request.body)["text"][0] for c in responses.calls]
    assert texts[0] == "a" and set(texts[1:]) == {"b"}  # part 1 once, then only part 2
    with runtime.transaction() as s:
        [reply] = s.scalars(select(Message).where(Message.direction == "out")).all()
        assert (reply.status, reply.channel_message_ids) == ("sent", ["101", "102"])
