"""The outbox state machine, model-checked against the real implementation
(Hypothesis stateful testing; RELIABILITY.md §5 R7).

Rules: customers' messages arrive (new ones and redeliveries, in several
conversations); the sync job runs while the CRM answers normally, fails
transiently, commits and then times out (the duplicate-maker), refuses a
message for good, or refuses the second step of an append after the first
step of the whole batch was written (a note written, its inbox message
refused); a job crashes part-way (its claims stay in flight); Redis
loses every queued job and the sweeper runs; an operator replays.

Invariants, after every step: every CRM entry belongs to an accepted message
and no message has two; a synced message is in the CRM; in each conversation
the synced messages are a prefix of its sequence; a conversation with work
left is never idle. At the end, with the CRM healthy and a replay, everything
accepted is in the CRM exactly once.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import delete, select

import crm_adapters
from bridge import admin
from bridge.errors import AmbiguousError, PermanentError, RetryableError
from bridge.model import InboundMessage, MessageKind, SenderProfile
from bridge.pipeline.inbound import accept, run_inbound
from bridge.sweeper import sweep_once
from bridge.tables import (
    ChannelAccount,
    Contact,
    ContactIdentity,
    ContactLink,
    ContactMerge,
    Conversation,
    CrmRoute,
    IgnoredEventRow,
    Message,
    Outbox,
    Tenant,
)
from tests.support import fakes

MAPPING = """
crm: fake
channels:
  telegram: {object: deal, pipeline: p, stage: s}
"""
USERS = [101, 102, 103]
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


class JobCrashed(Exception):
    """A worker died part-way (the exception is not one the job handles)."""


@pytest.fixture
def machine_env(runtime, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setitem(crm_adapters.REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    (runtime.settings.mappings_dir / "fake.yaml").write_text(MAPPING)
    return runtime


def test_outbox_state_machine(machine_env, redis_conn) -> None:  # type: ignore[no-untyped-def]
    runtime = machine_env

    class Outboxes(RuleBasedStateMachine):
        @initialize()
        def fresh(self) -> None:
            with runtime.transaction() as s:
                for table in (
                    Message,
                    Outbox,
                    IgnoredEventRow,
                    Conversation,
                    ContactLink,
                    ContactMerge,
                    ContactIdentity,
                    Contact,
                    ChannelAccount,
                    CrmRoute,
                    Tenant,
                ):
                    s.execute(delete(table))
            redis_conn.flushdb()
            fakes.STATE = fakes.FakeCrmState()
            self.crm = fakes.STATE
            tenant = admin.create_tenant(
                runtime, slug=f"t{uuid.uuid4().hex[:6]}", crm_kind="fake", mapping="fake.yaml"
            )
            self.account = admin.add_channel_account(
                runtime,
                tenant,
                kind="telegram",
                credentials={"bot_token": "1:x", "secret_token": "s"},
            )
            self.sent: dict[int, list[str]] = {u: [] for u in USERS}  # update ids per user
            self.next_update = 1

        # -- customers ------------------------------------------------------

        @rule(user=st.sampled_from(USERS))
        def customer_writes(self, user: int) -> None:
            update = self.next_update
            self.next_update += 1
            self.sent[user].append(str(update))
            accept(runtime, self.account, [_message(user, update)])

        @precondition(lambda self: any(self.sent.values()))
        @rule(data=st.data())
        def channel_redelivers(self, data) -> None:  # type: ignore[no-untyped-def]
            user = data.draw(st.sampled_from([u for u in USERS if self.sent[u]]))
            update = int(data.draw(st.sampled_from(self.sent[user])))
            result = accept(runtime, self.account, [_message(user, update)])
            assert result.stored == 0 and result.duplicates == 1

        # -- the job, under faults --------------------------------------------

        @rule(
            user=st.sampled_from(USERS),
            fault=st.sampled_from(
                [
                    "none",
                    "transient",
                    "commit_then_timeout",
                    "permanent",
                    "second_step_refused",
                    "crash",
                ]
            ),
        )
        def job_runs(self, user: int, fault: str) -> None:
            conversation = _conversation(runtime, self.account, user)
            if conversation is None:
                return
            self._healthy()
            if fault == "transient":
                self.crm.fail_next("append_entries", RetryableError("503"), times=2)
            elif fault == "commit_then_timeout":
                self.crm.fail_next("append_entries", AmbiguousError("timeout"), after_commit=True)
            elif fault == "permanent":
                self.crm.fail_next("append_entries", PermanentError("rejected"), times=50)
            elif fault == "second_step_refused":
                # the first step (the note) of every entry is written, then
                # the second (the inbox message) is refused for good
                self.crm.fail_second_step(PermanentError("no inbox yet"), times=50)
            elif fault == "crash":
                self.crm.fail_next("append_entries", JobCrashed("SIGKILL"), after_commit=True)
            try:
                run_inbound(runtime, conversation)
            except JobCrashed:
                redis_conn.delete(f"bridge:lock:in:{conversation}")  # the lease expires
                _age_claims(runtime)
            finally:
                self._healthy()

        def _healthy(self) -> None:
            self.crm.faults.clear()
            self.crm.after.clear()
            self.crm.second_step.clear()

        @rule()
        def redis_lost_and_sweeper_runs(self) -> None:
            redis_conn.flushdb()
            with runtime.transaction() as s:
                for row in s.scalars(select(Outbox)):
                    if row.enqueued_at is not None:
                        row.enqueued_at = row.enqueued_at - dt.timedelta(hours=1)
                    if row.not_before is not None:
                        row.not_before = row.not_before - dt.timedelta(hours=1)
            sweep_once(runtime)

        @rule()
        def operator_replays(self) -> None:
            admin.replay(runtime)

        # -- invariants -------------------------------------------------------

        @invariant()
        def crm_has_no_strangers_and_no_duplicates(self) -> None:
            uids = _uids(runtime)
            written = [e["bridge_id"] for e in self.crm.entries]
            assert set(written) <= set(uids.values())
            assert len(written) == len(set(written))

        @invariant()
        def synced_means_in_the_crm(self) -> None:
            written = {e["bridge_id"] for e in self.crm.entries}
            with runtime.transaction() as s:
                synced = set(s.scalars(select(Message.uid).where(Message.status == "synced")))
            assert synced <= written

        @invariant()
        def synced_messages_are_a_prefix(self) -> None:
            with runtime.transaction() as s:
                rows = s.execute(
                    select(Message.conversation_id, Message.seq, Message.status).order_by(
                        Message.conversation_id, Message.seq
                    )
                ).all()
            by_conv: dict[int, list[str]] = {}
            for conv, _seq, status in rows:
                by_conv.setdefault(conv, []).append(status)
            for statuses in by_conv.values():
                seen_unsynced = False
                for status in statuses:
                    if status != "synced":
                        seen_unsynced = True
                    else:
                        assert not seen_unsynced, statuses

        @invariant()
        def work_left_is_never_idle(self) -> None:
            with runtime.transaction() as s:
                for row in s.scalars(select(Outbox)):
                    left = s.scalar(
                        select(Message.id)
                        .where(
                            Message.conversation_id == row.conversation_id,
                            Message.status.in_(("pending", "in_flight", "failed")),
                        )
                        .limit(1)
                    )
                    if left is not None:
                        assert row.state in ("pending", "parked"), (row.state, row.reason)

        def teardown(self) -> None:
            # The end: CRM healthy, an operator replays, the sweeper and the
            # jobs run until nothing is left -> all accepted, exactly once.
            if not hasattr(self, "crm"):
                return
            self._healthy()
            admin.replay(runtime)
            for _ in range(5):
                _age_claims(runtime)
                for user in USERS:
                    conversation = _conversation(runtime, self.account, user)
                    if conversation is not None:
                        run_inbound(runtime, conversation)
            accepted = {u: set(ids) for u, ids in self.sent.items()}
            uids = _uids(runtime)
            written = [e["bridge_id"] for e in self.crm.entries]
            assert len(written) == len(set(written))
            assert set(written) == set(uids.values())
            assert len(uids) == sum(len(v) for v in accepted.values())

    Outboxes.TestCase.settings = settings(
        max_examples=25,
        stateful_step_count=20,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    Outboxes.TestCase().runTest()


def _message(user: int, update: int) -> InboundMessage:
    return InboundMessage(
        channel_kind="telegram",
        external_id=str(update),
        external_user_id=str(user),
        external_thread_id=str(user),
        kind=MessageKind.TEXT,
        sent_at=T0 + dt.timedelta(seconds=update),
        text=f"{user}:{update}",
        sequence=update,
        provider_message_id=str(update),
        profile=SenderProfile(first_name=f"U{user}"),
    )


def _conversation(runtime, account: int, user: int) -> int | None:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        return s.scalar(
            select(Conversation.id).where(
                Conversation.channel_account_id == account,
                Conversation.external_thread_id == str(user),
            )
        )


def _uids(runtime) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        return dict(s.execute(select(Message.dedupe_key, Message.uid)).all())


def _age_claims(runtime) -> None:  # type: ignore[no-untyped-def]
    """Time passes: in-flight claims of dead jobs grow older than the lease."""
    with runtime.transaction() as s:
        for message in s.scalars(select(Message).where(Message.status == "in_flight")):
            if message.claimed_at is not None:
                message.claimed_at = message.claimed_at - dt.timedelta(hours=1)
