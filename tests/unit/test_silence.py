"""The silence alarm (``bridge.silence``) on SQLite and PostgreSQL, the
clock passed in (nothing sleeps).

The world: a tenant of the fake CRM whose service line works Mon-Fri
09:00-18:00 in Moscow (UTC+3 all year) with supervisor 900, who also gets
alerts in a Telegram chat; one Telegram account that had three client
messages in every working hour for three weeks (the median per working
hour is 3), up to a moment each test chooses. BRIDGE_SILENCE_AFTER is the
default, 2 h of working time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from bridge import admin, silence
from bridge.runtime import Runtime
from bridge.service import runner
from bridge.tables import ChannelAccount, Contact, Conversation, Message, ServiceAction
from tests.support import fakes

MSK = dt.timezone(dt.timedelta(hours=3))
#: Wednesday 9 December 2026, Moscow
WED = dt.date(2026, 12, 9)

MAPPING = """\
crm: fake
language: en
channels:
  telegram:
    object: deal
    timeline: note
service:
  defaults:
    hours:
      timezone: Europe/Moscow
      week: {mon-fri: "09:00-18:00"}
    supervisor: {user: "900", alerts: [{channel: telegram, to: "-100777"}]}
  lines:
    support:
      title: {en: Support, ru: Поддержка}
      members: ["201"]
"""

NO_SERVICE = """\
crm: fake
language: ru
channels:
  telegram:
    object: deal
    timeline: note
"""


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """A Moscow wall-clock moment, in UTC."""
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=MSK).astimezone(dt.UTC)


@dataclasses.dataclass
class World:
    runtime: Runtime
    tenant: int
    account: int
    conversation: int
    seq: Iterator[int]

    def message(self, when: dt.datetime) -> int:
        """One client message stored at ``when``."""
        with self.runtime.transaction() as session:
            row = Message(
                uid=str(uuid.uuid4()),
                tenant_id=self.tenant,
                conversation_id=self.conversation,
                channel_account_id=self.account,
                direction="in",
                seq=next(self.seq),
                dedupe_key=uuid.uuid4().hex,
                kind="text",
                text="hello",
                payload={},
                sent_at=when,
                created_at=when,
            )
            session.add(row)
            session.flush()
            return row.id

    def traffic(self, start: dt.datetime, end: dt.datetime, minutes: tuple[int, ...]) -> None:
        """Messages at ``minutes`` past each working hour in ``[start, end)``."""
        rows = []
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < end:
            local = hour.astimezone(MSK)
            if local.weekday() < 5 and 9 <= local.hour < 18:
                rows += [hour + dt.timedelta(minutes=m) for m in minutes]
            hour += dt.timedelta(hours=1)
        with self.runtime.transaction() as session:
            for when in rows:
                if start <= when < end:
                    session.add(
                        Message(
                            uid=str(uuid.uuid4()),
                            tenant_id=self.tenant,
                            conversation_id=self.conversation,
                            channel_account_id=self.account,
                            direction="in",
                            seq=next(self.seq),
                            dedupe_key=uuid.uuid4().hex,
                            kind="text",
                            text="hello",
                            payload={},
                            sent_at=when,
                            created_at=when,
                        )
                    )

    def busy_until(self, end: dt.datetime) -> None:
        """Three messages in every working hour of the three weeks before ``end``."""
        self.traffic(end - dt.timedelta(days=21), end, (10, 25, 40))

    def check(self, now: dt.datetime) -> silence.AccountSilence:
        (found,) = silence.check(self.runtime, self.tenant, now=now)
        return found

    def actions(self) -> list[ServiceAction]:
        with self.runtime.read_session() as session:
            return list(
                session.scalars(
                    select(ServiceAction)
                    .where(ServiceAction.tenant_id == self.tenant)
                    .order_by(ServiceAction.id)
                )
            )


def _world(runtime: Runtime, mapping: str) -> World:
    (runtime.settings.mappings_dir / "shop.yaml").write_text(mapping, encoding="utf-8")
    tenant = admin.create_tenant(runtime, slug="shop", crm_kind="fake", mapping="shop.yaml")
    account = admin.add_channel_account(
        runtime,
        tenant,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="2",
    )
    with runtime.transaction() as session:
        row = session.get(ChannelAccount, account)
        assert row is not None
        row.created_at = at(WED, 0) - dt.timedelta(days=60)
        contact = Contact(tenant_id=tenant, display_name="Client", crm_contact_id="c-1")
        session.add(contact)
        session.flush()
        conversation = Conversation(
            uid=str(uuid.uuid4()),
            tenant_id=tenant,
            channel_account_id=account,
            contact_id=contact.id,
            external_thread_id="42",
            crm_contact_id="c-1",
            crm_entity_type="deal",
            crm_entity_id="d-1",
        )
        session.add(conversation)
        session.flush()
        conversation_id = conversation.id
    fakes.STATE.contacts["c-1"] = {"identities": {}, "phones": [], "emails": [], "properties": {}}
    fakes.STATE.entities["d-1"] = {"type": "deal", "owner": None, "properties": {}}
    return World(runtime, tenant, account, conversation_id, itertools.count(1))


@pytest.fixture
def world(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setitem(__import__("crm_adapters").REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    return _world(runtime, MAPPING)


def _tasks(world: World) -> list[ServiceAction]:
    return [a for a in world.actions() if a.kind == "task"]


# -- the alarm ---------------------------------------------------------------------------------


def test_normal_traffic_raises_nothing(world: World) -> None:
    world.busy_until(at(WED, 12))
    state = world.check(at(WED, 12))
    assert state.per_hour == 3.0 and state.normal
    assert state.working and not state.silent
    assert state.quiet == pytest.approx(20 * 60)  # the last one at 11:40
    assert silence.sweep(world.runtime, now=at(WED, 12)) == 0
    assert world.actions() == []


def test_three_silent_working_hours_alert_once(world: World) -> None:
    world.busy_until(at(WED, 10))  # the last message at 09:40
    before = world.check(at(WED, 11, 30))
    assert before.normal and before.working and not before.silent  # 1 h 50 min: not yet
    state = world.check(at(WED, 12, 45))
    assert state.silent and state.quiet == pytest.approx(3 * 3600 + 5 * 60)
    assert silence.sweep(world.runtime, now=at(WED, 12, 45)) == 1
    actions = world.actions()
    assert [a.kind for a in actions] == ["task", "notify"]
    task, notify = actions
    assert state.last is not None
    assert task.key == f"silence:{world.account}:{state.last.id}" == state.key
    assert notify.key == f"{task.key}:telegram:-100777"
    assert task.payload["owner"] == "900"
    assert task.payload["text"].startswith(
        f"Channel silent: no message from clients through telegram account {world.account}"
        " for 3 h 05 min of working time (usually 3 an hour);"
        " the last one came 2026-12-09 06:40 UTC"
    )
    assert notify.payload["fields"] == {"channel": "telegram", "to": "-100777"}
    # the same minute (the throttle), later the same day, the next morning: still one alert
    for later in (at(WED, 12, 45), at(WED, 13), at(WED, 17, 59), at(WED + dt.timedelta(1), 10)):
        assert silence.sweep(world.runtime, now=later) == 0
    assert len(world.actions()) == 2
    with world.runtime.read_session() as session:
        states = silence.alert_states(session, world.tenant, [task.key, "silence:0:0"])
    assert states == {task.key: "pending"}


def test_the_alert_reaches_the_crm_and_the_supervisors_chat(world: World) -> None:
    import responses

    world.busy_until(at(WED, 10))
    assert silence.sweep(world.runtime, now=at(WED, 12, 45)) == 1
    task, notify = world.actions()
    assert runner.run_action(world.runtime, task.id, now=at(WED, 12, 46)) == "done"
    assert [(t["subject"][:15], t["owner"], t["bridge_id"]) for t in fakes.STATE.tasks] == [
        ("Channel silent:", "900", task.key)
    ]
    with responses.RequestsMock() as rsps:
        sent = rsps.post(
            "https://api.telegram.org/bot1:x/sendMessage",
            json={"ok": True, "result": {"message_id": 7, "date": 0, "chat": {"id": -100777}}},
        )
        assert runner.run_action(world.runtime, notify.id, now=at(WED, 12, 46)) == "done"
        assert sent.call_count == 1
        assert json.loads(sent.calls[0].request.body)["text"].startswith("Channel silent:")


def test_out_of_hours_nothing_and_only_working_time_counts(world: World) -> None:
    world.busy_until(at(WED, 18))  # the last message at 17:40
    thu = WED + dt.timedelta(days=1)
    for quiet_night in (at(WED, 21), at(thu, 3), at(thu, 8, 59)):
        state = world.check(quiet_night)
        assert state.normal and not state.working and not state.silent
        assert silence.sweep(world.runtime, now=quiet_night) == 0
    # Thursday 10:30: 20 min on Wednesday + 1 h 30 min: 1 h 50 min of working time
    assert world.check(at(thu, 10, 30)).quiet == pytest.approx(110 * 60)
    assert silence.sweep(world.runtime, now=at(thu, 10, 30)) == 0
    assert silence.sweep(world.runtime, now=at(thu, 10, 40)) == 1
    assert len(_tasks(world)) == 1


def test_a_silence_reached_by_day_waits_for_working_hours(world: World) -> None:
    world.busy_until(at(WED, 15))  # the last message at 14:40
    thu = WED + dt.timedelta(days=1)
    night = world.check(at(WED, 22))
    assert night.quiet == pytest.approx(3 * 3600 + 20 * 60) and not night.working
    assert not night.silent  # silent enough, but nobody works now
    assert silence.sweep(world.runtime, now=at(WED, 22)) == 0
    assert silence.sweep(world.runtime, now=at(thu, 8, 59)) == 0
    assert silence.sweep(world.runtime, now=at(thu, 9)) == 1


def test_a_weekend_is_not_a_silence(world: World) -> None:
    fri = dt.date(2026, 12, 11)
    world.busy_until(at(fri, 18))
    for moment in (at(fri, 23), at(dt.date(2026, 12, 12), 14), at(dt.date(2026, 12, 13), 20)):
        assert silence.sweep(world.runtime, now=moment) == 0
    assert world.actions() == []


def test_traffic_resuming_ends_the_episode_and_a_later_silence_alerts_again(
    world: World,
) -> None:
    world.busy_until(at(WED, 10))
    assert silence.sweep(world.runtime, now=at(WED, 12, 45)) == 1
    world.message(at(WED, 13))  # the channel works again
    state = world.check(at(WED, 13, 10))
    assert not state.silent and state.key is None
    assert silence.sweep(world.runtime, now=at(WED, 13, 10)) == 0
    assert silence.sweep(world.runtime, now=at(WED, 14, 59)) == 0  # 1 h 59 min
    assert silence.sweep(world.runtime, now=at(WED, 15, 1)) == 1
    first, second = _tasks(world)
    assert first.key != second.key
    assert silence.sweep(world.runtime, now=at(WED, 16)) == 0
    assert len(_tasks(world)) == 2


def test_an_account_without_steady_traffic_is_never_silent(world: World) -> None:
    # one message a working day: the median working hour has none
    world.traffic(at(WED, 0) - dt.timedelta(days=21), at(WED, 10), (5,))
    with world.runtime.transaction() as session:
        session.query(Message).filter(Message.channel_account_id == world.account).filter(
            Message.id % 9 != 0
        ).delete(synchronize_session=False)
    state = world.check(at(WED, 17))
    assert state.per_hour == 0.0 and not state.normal and not state.silent
    assert silence.sweep(world.runtime, now=at(WED, 17)) == 0


def test_a_young_account_is_not_judged(world: World) -> None:
    with world.runtime.transaction() as session:
        row = session.get(ChannelAccount, world.account)
        assert row is not None
        row.created_at = at(WED, 9, 30)  # its first whole hour: 10:00
    world.traffic(at(WED, 9, 30), at(WED, 12), (10, 25, 40))
    state = world.check(at(WED, 17))
    assert state.per_hour is None and not state.silent  # two working hours seen
    assert silence.sweep(world.runtime, now=at(WED, 17)) == 0


def test_silence_after_is_a_setting(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        world.runtime,
        "settings",
        dataclasses.replace(world.runtime.settings, silence_after=4 * 3600),
    )
    world.busy_until(at(WED, 10))
    assert world.check(at(WED, 12, 45)).after == 4 * 3600
    assert silence.sweep(world.runtime, now=at(WED, 12, 45)) == 0
    assert silence.sweep(world.runtime, now=at(WED, 14, 1)) == 1


def test_a_lines_silence_after_wins_over_the_setting(world: World) -> None:
    mapping = MAPPING.replace(
        '      members: ["201"]\n', '      members: ["201"]\n      silence_after: 30m\n'
    )
    assert "silence_after: 30m" in mapping
    (world.runtime.settings.mappings_dir / "shop.yaml").write_text(mapping, encoding="utf-8")
    world.busy_until(at(WED, 10))
    assert world.check(at(WED, 10, 45)).after == 30 * 60
    assert silence.sweep(world.runtime, now=at(WED, 10, 45)) == 1


def test_without_a_service_section_every_hour_is_working_time(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("crm_adapters").REGISTRY, "fake", "tests.support.fakes:FakeCrm")
    fakes.STATE = fakes.FakeCrmState()
    world = _world(runtime, NO_SERVICE)
    with runtime.transaction() as session:
        start = at(WED, 3) - dt.timedelta(days=15)
        for n in range(15 * 24 * 2):
            when = start + dt.timedelta(minutes=30 * n)
            session.add(
                Message(
                    uid=str(uuid.uuid4()),
                    tenant_id=world.tenant,
                    conversation_id=world.conversation,
                    channel_account_id=world.account,
                    direction="in",
                    seq=next(world.seq),
                    dedupe_key=uuid.uuid4().hex,
                    kind="text",
                    text="hi",
                    payload={},
                    sent_at=when,
                    created_at=when,
                )
            )
    state = world.check(at(WED, 6, 1))  # the last at 02:30: 3 h 31 min ago, at night
    assert state.per_hour == 2.0 and state.working and state.silent
    assert silence.sweep(runtime, now=at(WED, 6, 1)) == 1
    (task,) = world.actions()  # no supervisor, no alert route: the task only
    assert task.kind == "task" and task.payload["owner"] is None
    assert task.payload["text"].startswith("Канал молчит: через telegram, аккаунт")


def test_disconnected_accounts_and_disabled_tenants_are_left_out(world: World) -> None:
    world.busy_until(at(WED, 10))
    with world.runtime.transaction() as session:
        row = session.get(ChannelAccount, world.account)
        assert row is not None
        row.status = "disconnected"
    assert silence.check(world.runtime, world.tenant, now=at(WED, 13)) == []
    assert silence.sweep(world.runtime, now=at(WED, 13)) == 0


def test_duration_text() -> None:
    assert silence.duration_text(59 * 60) == "59 min"
    assert silence.duration_text(3 * 3600 + 5 * 60 + 30, "en") == "3 h 05 min"
    assert silence.duration_text(7200, "ru") == "2 ч 00 мин"
