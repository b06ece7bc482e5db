"""``bridge.checks``: what ``bridge check-config`` and start-up say about
mapping files written to ``tmp_path`` for each CRM: every problem in one run
(schema and CRM rules together), the CRM's own declarations (no CRM name in
the core), name resolution as ``tenant create --mapping`` does it, and the
summary."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import textwrap
from pathlib import Path

import pytest
import responses

import crm_adapters
from bridge import checks
from bridge.checks import check_config, check_file, check_mapping_files, validate_mappings_dir
from bridge.errors import ConfigError, PermanentError
from bridge.http import HttpClient
from bridge.model import CrmAccountInfo, CrmRef, EntityDraft, MessageKind, TimelineEntry
from bridge.registry import channel_kinds, crm_class, crm_kinds
from crm_adapters.amocrm import AmoCrmAdapter
from crm_adapters.amocrm import timeline as amo_timeline
from crm_adapters.bitrix24 import Bitrix24Adapter
from crm_adapters.bitrix24 import timeline as b24_timeline
from crm_adapters.hubspot import timeline as hubspot_timeline
from tests.support.fakes import FakeCrm, MemoryCredentials

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "mappings").glob("*.yaml"))


class BareCrm(FakeCrm):
    """A CRM that declares nothing beyond the contract's defaults: no inbox,
    notes only, no placement keys."""

    kind = "bare"
    title = "BareCRM"
    entity_types = ("deal",)


@pytest.fixture
def bare_crm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(crm_adapters.REGISTRY, "bare", "tests.unit.test_checks:BareCrm")


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def rule_file(crm: str, rule: str, *, channel: str = "telegram") -> str:
    """A file of ``crm`` whose one channel rule is ``rule`` (a flow mapping)."""
    return f"crm: {crm}\nchannels:\n  {channel}: {rule}\n"


def lines_of(path: Path) -> list[str]:
    """Every line check-config prints for the file, without the file name."""
    prefix = f"{path}: "
    out = []
    for problem in check_file(path):
        line = str(problem)
        assert line.startswith(prefix), line
        out.append(line[len(prefix) :])
    return out


def one(path: Path) -> str:
    (line,) = lines_of(path)
    return line


# -- the shipped examples ---------------------------------------------------------------------


def test_every_shipped_example_passes() -> None:
    report = check_config([], ROOT / "mappings")
    assert report.lines == []
    assert report.ok
    assert report.summary == f"{len(SHIPPED)} files, {len(SHIPPED)} ok, 0 with errors"


def test_the_shipped_examples_also_pass_with_the_timeline_off_where_the_inbox_is_on(
    tmp_path: Path,
) -> None:
    # whichever way the examples are edited (timeline: note or none beside inbox: true)
    variants = 0
    for path in SHIPPED:
        text = path.read_text(encoding="utf-8")
        if not re.search(r"^\s*inbox: true\b", text, re.M):
            continue
        variant = re.sub(r"^(\s*timeline:) \w+", r"\1 none", text, flags=re.M)
        assert "timeline: none" in variant
        assert check_file(write(tmp_path, path.name, variant)) == [], path.name
        variants += 1
    assert variants, "no shipped example has inbox: true"


# -- every problem in one run ---------------------------------------------------------------


def test_schema_errors_do_not_hide_the_crm_checks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "acme.yaml",
        """\
        crm: hubspot
        timezone: moscow
        channels:
          telegram:
            object: lead
            inbox: yes please
            timeline: communication
            owner: {strategy: round_robin, pool: [70000001]}
        """,
    )
    assert lines_of(path) == [
        "timezone: unknown time zone: did you mean Europe/Moscow? Otherwise use an IANA name "
        "such as Europe/Moscow or UTC (got 'moscow')",
        "channels.telegram.object: HubSpot has no 'lead'; use one of deal, ticket or none",
        "channels.telegram.inbox: must be true or false (got 'yes please')",
        "channels.telegram.timeline: HubSpot writes communication only for whatsapp, sms, "
        "linkedin channels, not telegram; use note or none (got 'communication')",
        'channels.telegram.owner.pool[0]: must be text: put it in quotes, e.g. "70000001" '
        "(got 70000001)",
    ]


def test_problems_come_in_the_order_of_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "order.yaml",
        """\
        channels:
          fax: {object: lead}
          telegram:
            task: {when: always}
            object: ticket
        language: de
        crm: amocrm
        """,
    )
    keys = [line.split(":", 1)[0] for line in lines_of(path)]
    assert keys == [
        "channels.fax",
        "channels.telegram.task.when",
        "channels.telegram.object",
        "language",
    ]


def test_an_invalid_choice_gets_the_crms_own_choices_not_every_crms(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", rule_file("amocrm", "{object: company, timeline: email}"))
    assert lines_of(path) == [
        "channels.telegram.object: amoCRM has no 'company'; use one of lead, unsorted or none",
        "channels.telegram.timeline: amoCRM writes no 'email' timeline; use note or none "
        "(got 'email')",
    ]
    # still refused at start-up: the schema refused them first
    assert len(check_mapping_files([path])) == 2


def test_an_object_left_to_its_default_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", rule_file("amocrm", "{}"))
    assert check_mapping_files([path]) == [
        f"{path}: channels.telegram.object: amoCRM has no 'deal' (the default object); "
        "set object: lead, unsorted or none"
    ]


def test_an_unknown_crm_still_gets_its_channels_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "crm: hubspt\nchannels: {telegramm: {inbox: maybe}}\n")
    assert lines_of(path) == [
        f"crm: unknown CRM 'hubspt'; use one of {', '.join(crm_kinds())} (did you mean hubspot?)",
        f"channels.telegramm: unknown channel; use one of {', '.join(channel_kinds())}"
        " (did you mean telegram?)",
        "channels.telegramm.inbox: must be true or false (got 'maybe')",
    ]


def test_a_disabled_crm_is_not_called_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(crm_adapters.REGISTRY, "ghost", "tests.unit.no_such_module:Ghost")
    path = write(tmp_path, "a.yaml", rule_file("ghost", "{}"))
    assert one(path) == "crm: CRM 'ghost' is disabled: its Python library is missing (see the log)"


# -- options of another CRM -------------------------------------------------------------------


@pytest.mark.parametrize("crm", ["amocrm", "bitrix24"])
def test_communication_is_hubspots_alone(tmp_path: Path, crm: str) -> None:
    path = write(tmp_path, "a.yaml", rule_file(crm, "{object: lead, timeline: communication}"))
    title = crm_class(crm).title
    assert one(path) == (
        f"channels.telegram.timeline: {title} writes no 'communication' timeline; "
        "use note or none (got 'communication')"
    )
    assert check_mapping_files([path]) == []  # advisory: start-up does not refuse it


def test_hubspot_communication_is_fine_on_a_channel_hubspot_logs_it_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = "{object: deal, pipeline: default, stage: s, timeline: communication}"
    path = write(tmp_path, "a.yaml", rule_file("hubspot", rule, channel="whatsapp"))
    monkeypatch.setattr(checks, "channel_kinds", lambda: ("telegram", "whatsapp"))
    assert lines_of(path) == []


@pytest.mark.parametrize(
    "crm,obj,choices",
    [
        ("amocrm", "ticket", "lead, unsorted"),
        ("bitrix24", "ticket", "lead, deal"),
        ("hubspot", "unsorted", "deal, ticket"),
        ("bitrix24", "unsorted", "lead, deal"),
        ("amocrm", "deal", "lead, unsorted"),
        ("hubspot", "lead", "deal, ticket"),
    ],
)
def test_an_object_of_another_crm_blocks_the_start(
    tmp_path: Path, crm: str, obj: str, choices: str
) -> None:
    path = write(tmp_path, "a.yaml", rule_file(crm, f"{{object: {obj}}}"))
    expected = (
        f"{path}: channels.telegram.object: {crm_class(crm).title} has no {obj!r}; "
        f"use one of {choices} or none"
    )
    assert check_mapping_files([path]) == [expected]
    assert check_config([str(path)], tmp_path).lines == [expected]


# -- where entities land ----------------------------------------------------------------------


@pytest.mark.parametrize("obj", ["deal", "ticket"])
def test_hubspot_deals_and_tickets_without_pipeline_and_stage_are_flagged(
    tmp_path: Path, obj: str
) -> None:
    path = write(tmp_path, "a.yaml", rule_file("hubspot", f"{{object: {obj}}}"))
    default_id = {"deal": "'default'", "ticket": "'0'"}[obj]
    assert lines_of(path) == [
        f"channels.telegram.pipeline: HubSpot needs pipeline for object {obj}: without it "
        f"{obj}s go to the pipeline with id {default_id} (from HubSpot's guides, unconfirmed "
        "by its API specs), and a stage of another pipeline is rejected; "
        "add pipeline: <pipeline id>",
        f"channels.telegram.stage: HubSpot needs stage for object {obj}: without it each new "
        f"{obj} opens at the first open stage of its pipeline; add stage: <stage id>",
    ]
    # the file works (the default pipeline, its first open stage): start-up only logs it
    assert check_mapping_files([path]) == []


def test_a_stage_without_its_pipeline_says_it_may_be_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", rule_file("hubspot", "{stage: qualifiedtobuy}"))
    (line,) = lines_of(path)
    assert line.startswith("channels.telegram.pipeline: HubSpot needs pipeline for object deal ")
    assert "(the default)" in line and "a stage of another pipeline is rejected" in line


def test_hubspot_with_both_keys_is_quiet(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", rule_file("hubspot", "{pipeline: default, stage: s1}"))
    assert lines_of(path) == []


def test_amocrm_and_bitrix24_fall_back_to_their_first_stage_without_a_word(
    tmp_path: Path,
) -> None:
    for crm in ("amocrm", "bitrix24"):
        path = write(tmp_path, f"{crm}.yaml", rule_file(crm, "{object: lead}"))
        assert lines_of(path) == []
    path = write(tmp_path, "deal.yaml", rule_file("bitrix24", "{object: deal}"))
    assert lines_of(path) == []


@pytest.mark.parametrize(
    "crm,rule,key",
    [
        ("amocrm", "{object: lead, pipeline: sales}", "pipeline"),
        ("amocrm", "{object: lead, pipeline: '7001001', stage: first}", "stage"),
        ("bitrix24", "{object: deal, pipeline: main, stage: 'C1:NEW'}", "pipeline"),
    ],
)
def test_a_name_where_the_crm_takes_a_numeric_id_blocks_the_start(
    tmp_path: Path, crm: str, rule: str, key: str
) -> None:
    path = write(tmp_path, "a.yaml", rule_file(crm, rule))
    value = re.search(rf"{key}: '?([\w:]+)", rule)[1]  # type: ignore[index]
    expected = (
        f"{path}: channels.telegram.{key}: {crm_class(crm).title} takes a numeric {key} id "
        f"(got {value!r}): write the id, not the name"
    )
    assert check_mapping_files([path]) == [expected]


def test_numeric_ids_are_fine(tmp_path: Path) -> None:
    rule = "{object: lead, pipeline: '7001001', stage: ' 61 '}"
    amo = write(tmp_path, "a.yaml", rule_file("amocrm", rule))
    b24 = write(tmp_path, "b.yaml", rule_file("bitrix24", "{object: deal, pipeline: '3'}"))
    assert lines_of(amo) == []
    assert lines_of(b24) == []


def test_a_key_the_crm_ignores_is_flagged(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", rule_file("bitrix24", "{object: lead, pipeline: '3'}"))
    assert one(path) == (
        "channels.telegram.pipeline: Bitrix24 ignores pipeline for a lead (only deal takes one): "
        "remove it (got '3')"
    )
    assert check_mapping_files([path]) == []


def test_object_none_uses_no_pipeline(tmp_path: Path, bare_crm: None) -> None:
    path = write(tmp_path, "a.yaml", rule_file("bare", "{object: none, stage: won}"))
    assert one(path) == (
        "channels.telegram.stage: object none opens no entity, so stage is never used: "
        "remove it (got 'won')"
    )


def test_unsorted_needs_the_chat_and_takes_no_pipeline(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", rule_file("amocrm", "{object: unsorted, pipeline: '1'}"))
    inbox = (
        f"{path}: channels.telegram.inbox: with object unsorted, amoCRM's own inbox creates the "
        "entity from the first message, so without inbox: true messages have nowhere to go; "
        "set inbox: true (got nothing: false is the default)"
    )
    pipeline = (
        f"{path}: channels.telegram.pipeline: with object unsorted, amoCRM's own inbox opens "
        "the entity, so pipeline is never used: remove it (got '1')"
    )
    assert check_config([str(path)], tmp_path).lines == [pipeline, inbox]
    assert check_mapping_files([path]) == [inbox]  # nowhere to go: start-up refuses it
    path.write_text(rule_file("amocrm", "{object: unsorted, inbox: true, timeline: none}"))
    assert lines_of(path) == []


def test_inbox_true_where_the_crm_has_none(tmp_path: Path, bare_crm: None) -> None:
    path = write(tmp_path, "a.yaml", rule_file("bare", "{inbox: true}"))
    assert one(path) == (
        "channels.telegram.inbox: BareCRM has no inbox or chat to publish to; "
        "set inbox: false (got True)"
    )


def test_a_crm_that_declares_no_placement_is_not_second_guessed(
    tmp_path: Path, bare_crm: None
) -> None:
    path = write(tmp_path, "a.yaml", rule_file("bare", "{object: deal, pipeline: p, stage: s}"))
    assert lines_of(path) == []


# -- the declarations match what the adapters do ------------------------------------------------


def test_the_core_names_no_crm() -> None:
    source = Path(checks.__file__).read_text(encoding="utf-8").lower()
    for kind in crm_kinds():
        assert kind not in source
        assert crm_class(kind).title.lower() not in source


@pytest.mark.parametrize("kind", crm_kinds())
def test_each_crm_declares_what_a_mapping_may_ask(kind: str) -> None:
    cls = crm_class(kind)
    assert "none" not in cls.timeline_kinds and "note" in cls.timeline_kinds
    assert set(cls.inbox_created_types) <= set(cls.entity_types)
    assert not cls.inbox_created_types or cls.has_inbox
    assert set(cls.entity_keys) <= set(cls.entity_types)
    assert set(cls.entity_placement) <= set(cls.entity_types)
    for keys in cls.entity_keys.values():
        assert set(keys) <= {"pipeline", "stage"}
        assert set(keys.values()) <= {"text", "number"}
    for obj, wanted in cls.entity_placement.items():
        assert all(why.startswith("without it") for why in wanted.values()), obj


def test_hubspot_communication_channels_are_the_ones_its_timeline_knows() -> None:
    declared = crm_class("hubspot").timeline_kinds["communication"]
    assert set(declared) == set(hubspot_timeline.COMMUNICATION_CHANNEL_TYPES)


def _entry(timeline: str) -> TimelineEntry:
    return TimelineEntry(
        bridge_id="m1",
        conversation_uid="conv-1",
        channel_kind="telegram",
        channel_account="1",
        direction="in",
        kind=MessageKind.TEXT,
        text="hi",
        occurred_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        contact=CrmRef("contact", "1"),
        timeline=timeline,
    )


def test_why_communication_is_flagged_outside_hubspot() -> None:
    # amoCRM writes no note for it, Bitrix24 a plain comment, HubSpot a note on telegram
    assert amo_timeline.wants_note(_entry("communication")) is False
    assert b24_timeline.wants_note(_entry("communication")) is True
    assert hubspot_timeline.timeline_kind(_entry("communication")) == "note"


def _draft(obj: str, **placement: str) -> EntityDraft:
    return EntityDraft(
        object_type=obj,
        conversation_uid="conv-1",
        contact=CrmRef("contact", "1"),
        name="x",
        **placement,  # type: ignore[arg-type]
    )


def _account(kind: str, **settings: str) -> CrmAccountInfo:
    return CrmAccountInfo(tenant_id=1, kind=kind, account_id="1", settings=settings)


def test_why_a_name_for_a_numeric_id_blocks_the_start() -> None:
    creds = MemoryCredentials({"type": "private_app", "access_token": "t"})
    amo = AmoCrmAdapter(_account("amocrm", conversation_field="1"), creds, HttpClient("http://a"))
    b24 = Bitrix24Adapter(_account("bitrix24"), creds, HttpClient("http://b"))
    with responses.RequestsMock():  # fails before any request
        with pytest.raises(PermanentError, match="pipeline"):
            amo.create_entity(_draft("lead", pipeline="sales"))
        with pytest.raises(PermanentError, match="pipeline"):
            b24.entity_fields(_draft("deal", pipeline="main"))
        # and a pipeline on a Bitrix24 lead goes nowhere
        fields = b24.entity_fields(_draft("lead", pipeline="3", stage="NEW"))
        assert fields["STATUS_ID"] == "NEW" and "CATEGORY_ID" not in fields


# -- names, paths and the summary --------------------------------------------------------------


@pytest.fixture
def mappings(tmp_path: Path) -> Path:
    directory = tmp_path / "mappings"
    directory.mkdir()
    write(directory, "acme.yaml", rule_file("hubspot", "{pipeline: default, stage: s}"))
    write(directory, "broken.yaml", rule_file("hubspot", "{pipeline: default, stage: s, inbox: 2}"))
    return directory


def test_a_bare_name_is_the_file_in_the_mappings_directory(
    mappings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(mappings.parent)
    for name in ("acme", "acme.yaml"):
        report = check_config([name], mappings)
        assert (report.lines, report.summary, report.ok) == (
            [],
            "1 file, 1 ok, 0 with errors",
            True,
        )
    report = check_config(["broken"], mappings)
    assert report.lines == [
        f"{mappings / 'broken.yaml'}: channels.telegram.inbox: must be true or false (got 2)"
    ]
    assert (report.summary, report.ok) == ("1 file, 0 ok, 1 with errors", False)


def test_a_path_to_a_file_outside_the_directory_is_checked_before_it_is_copied_in(
    mappings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = "{object: lead, timeline: communication}"
    draft = write(tmp_path, "my.yaml", rule_file("amocrm", rule))
    monkeypatch.chdir(tmp_path)
    for target in ("./my.yaml", str(draft)):
        report = check_config([target], mappings)
        assert len(report.lines) == 1 and "amoCRM writes no 'communication'" in report.lines[0]
        assert report.lines[0].startswith(f"{Path(target)}: channels.telegram.timeline: ")
        assert report.summary == "1 file, 0 ok, 1 with errors"


def test_a_name_that_finds_nothing_says_where_it_looked(
    mappings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    report = check_config(["nope", "./gone.yaml", "acme"], mappings)
    assert report.lines == [
        f"nope: no mapping named 'nope': looked for {mappings / 'nope.yaml'}",
        f"./gone.yaml: no such file: looked for {tmp_path / 'gone.yaml'}",
    ]
    assert (report.summary, report.ok) == ("3 files, 1 ok, 2 with errors", False)


def test_a_bare_name_found_only_here_says_how_to_check_it(
    mappings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "draft.yaml", rule_file("hubspot", "{}"))
    monkeypatch.chdir(tmp_path)
    (line,) = check_config(["draft.yaml"], mappings).lines
    assert line == (
        f"draft.yaml: no mapping named 'draft.yaml': looked for {mappings / 'draft.yaml'}; "
        "to check ./draft.yaml instead, write ./draft.yaml"
    )


def test_no_targets_checks_the_whole_directory_with_a_summary(mappings: Path) -> None:
    write(mappings, "third.yml", rule_file("bitrix24", "{object: lead}"))
    report = check_config([], mappings)
    assert report.summary == "3 files, 2 ok, 1 with errors"
    assert report.lines == [
        f"{mappings / 'broken.yaml'}: channels.telegram.inbox: must be true or false (got 2)"
    ]


def test_a_directory_target_and_repeats(mappings: Path) -> None:
    report = check_config([str(mappings), "acme", str(mappings / "acme.yaml")], mappings)
    assert report.summary == "2 files, 1 ok, 1 with errors"


def test_an_empty_or_missing_mappings_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    report = check_config([], empty)
    assert report.lines == [f"{empty}: no mapping files (*.yaml) in the mappings directory"]
    assert (report.summary, report.ok) == ("no mapping files checked", False)
    report = check_config([], tmp_path / "missing")
    assert report.lines == [
        f"{tmp_path / 'missing'}: the mappings directory does not exist "
        "(BRIDGE_MAPPINGS_DIR names it)"
    ]
    assert not report.ok


def test_an_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "")
    path.write_bytes(b"crm: hubspot\nname: \xff\n")
    assert lines_of(path) == ["not UTF-8 text (invalid start byte)"]
    if os.geteuid() != 0:  # root reads anything
        path.chmod(0)
        assert lines_of(path) == ["cannot read the file: Permission denied"]


# -- start-up ----------------------------------------------------------------------------------


def test_start_up_refuses_what_cannot_work_and_logs_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    advisory = write(tmp_path, "a.yaml", rule_file("hubspot", "{object: deal}"))
    with caplog.at_level(logging.WARNING, logger="bridge.checks"):
        validate_mappings_dir(tmp_path)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2
    assert all(m.startswith(f"mapping: {advisory}: channels.telegram.") for m in logged)
    blocking = write(tmp_path, "b.yml", rule_file("amocrm", "{object: lead, stage: new}"))
    with pytest.raises(ConfigError) as caught:
        validate_mappings_dir(tmp_path)
    assert str(caught.value).splitlines() == [
        "invalid mapping files:",
        f"{blocking}: channels.telegram.stage: amoCRM takes a numeric stage id (got 'new'): "
        "write the id, not the name",
    ]


# -- tags, where the CRM's deals have them ----------------------------------------------------

TAGGED_SERVICE = """\
service:
  lines:
    support:
      title: {en: Support, ru: Поддержка}
      members: ["1"]
      hours: {timezone: Europe/Moscow, week: {mon-fri: "09:00-18:00"}}
  default_line: support
  transfer: {tags: {escalate: support}}
  menus:
    main:
      text: {en: Hello, ru: Привет}
      options:
        - {label: {en: Buy, ru: Купить}, line: support, tags: [sales]}
"""


@pytest.mark.parametrize("crm", ["hubspot", "bitrix24", "amocrm"])
def test_menu_and_transfer_tags_need_a_crm_with_tags(tmp_path: Path, crm: str) -> None:
    rule = "{object: lead}" if crm != "hubspot" else "{object: deal, pipeline: default, stage: x}"
    path = write(tmp_path, "a.yaml", rule_file(crm, rule) + TAGGED_SERVICE)
    if crm == "amocrm":  # its leads carry tags
        assert lines_of(path) == []
        return
    why = f"{crm_class(crm).title} has no tags on deals: route by a CRM field (fields:) or a stage"
    assert lines_of(path) == [
        f"service.transfer.tags: {why}",
        f"service.menus.main.options[0].tags: {why}",
    ]
