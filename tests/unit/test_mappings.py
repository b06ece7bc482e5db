"""The admin's mapping files: the shipped examples, every validation rule of
``mappings/schema.py`` (with the exact key path it reports), the CRM-aware
checks of ``bridge.checks``, and template rendering that never evaluates."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest

from bridge.checks import check_mapping_files, validate_mappings_dir
from bridge.errors import ConfigError
from bridge.registry import channel_kinds, crm_kinds
from bridge.templates import render, render_all
from mappings import MappingError, MappingStore, load_mapping, parse_mapping
from mappings.loader import SHOWN_CHARS, read_mapping
from mappings.schema import KNOWN_PLACEHOLDERS, ChannelRule, OwnerRule, TaskRule, WindowTemplate

ROOT = Path(__file__).resolve().parents[2]
#: the shipped mappings and the examples beside them (the service section's)
SHIPPED = sorted(
    [*(ROOT / "mappings").glob("*.yaml"), *(ROOT / "mappings/examples").glob("*.yaml")]
)

MINIMAL = "crm: hubspot\nchannels:\n  telegram: {}\n"


def problems(text: str, file: str = "acme.yaml") -> list[tuple[str, str]]:
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, file=file)
    return caught.value.problems


def channel(rule: str) -> str:
    """A file whose telegram rule is ``rule`` (a YAML flow mapping)."""
    return f"crm: hubspot\nchannels:\n  telegram: {rule}\n"


# -- valid files ----------------------------------------------------------------------------


def test_there_are_shipped_examples() -> None:
    assert SHIPPED, "mappings/*.yaml: no example shipped"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_examples_load_and_pass_the_crm_checks(path: Path) -> None:
    config = load_mapping(path)
    assert config.source == str(path)
    assert config.channels, "an example maps at least one channel"
    assert check_mapping_files([path]) == []


def test_a_service_section_naming_what_is_not_there_is_refused(tmp_path: Path) -> None:
    """The service section is checked against the rest of the mapping: a
    line's channel the mapping does not map, a knowledge base that is not
    there, a menu option naming an entry the knowledge base lacks."""
    example = (ROOT / "mappings/examples/service.yaml").read_text(encoding="utf-8")
    path = tmp_path / "shop.yaml"
    path.write_text(example, encoding="utf-8")
    problems = check_mapping_files([path])
    assert len(problems) == 1 and "service.knowledge_base" in problems[0], problems
    (tmp_path / "kb").mkdir()
    kb = (ROOT / "mappings/examples/kb/acme.yaml").read_text(encoding="utf-8")
    (tmp_path / "kb/acme.yaml").write_text(kb.replace("id: order-status", "id: orders"))
    problems = check_mapping_files([path])
    assert len(problems) == 1 and "order-status" in problems[0], problems
    (tmp_path / "kb/acme.yaml").write_text(kb)
    assert check_mapping_files([path]) == []


def test_an_unquoted_impossible_date_is_a_problem_not_a_crash() -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping("crm: hubspot\nchannels: {telegram: {}}\nname: 2026-13-01\n", file="m.yaml")
    assert "quote the value" in str(caught.value)


def test_demo_mapping_reads_as_written() -> None:
    config = load_mapping(ROOT / "mappings" / "demo-hubspot.yaml")
    rule = config.rule("telegram")
    assert (config.crm, config.language, config.name) == ("hubspot", "en", "Demo company")
    assert (rule.object, rule.pipeline, rule.stage, rule.reuse, rule.timeline, rule.inbox) == (
        "deal",
        "default",
        "appointmentscheduled",
        "open",
        "none",  # each message once: the inbox thread shows on the contact's timeline
        True,
    )
    assert rule.owner == OwnerRule(
        strategy="round_robin", pool=("70000001", "70000002", "70000003")
    )
    assert rule.task == TaskRule(
        when="new_entity", subject="Reply to {contact.name} ({channel.title})", due_in_minutes=60
    )
    assert rule.fields.contact == {
        "bridge_reachable": "{client.reachable}",
        "firstname": "{profile.first_name}",
        "lastname": "{profile.last_name}",
    }
    assert config.live_contact_fields() == {"bridge_reachable": "{client.reachable}"}
    assert config.custom_properties() == {
        # the web chat's consent on the contact, its first and last touch on the deal
        "contact": [
            "bridge_consent_at",
            "bridge_consent_page",
            "bridge_consent_version",
            "bridge_reachable",
            "firstname",
            "lastname",
        ],
        "deal": [
            "bridge_first_utm_campaign",
            "bridge_first_utm_medium",
            "bridge_first_utm_source",
            "bridge_gclid",
            "bridge_utm_campaign",
            "bridge_utm_medium",
            "bridge_utm_source",
        ],
        # the e-mail rule's ticket priority (HubSpot's own property: not created)
        "ticket": ["hs_ticket_priority"],
    }
    # WhatsApp: the Telegram rule, and the template a reply after 24 h becomes
    whatsapp = config.rule("whatsapp")
    assert whatsapp is not None
    assert whatsapp.window_template == WindowTemplate(
        "order_update", "en", ("{contact.name}", "{message.text}")
    )
    assert dataclasses.replace(whatsapp, window_template=None) == rule
    assert config.rule("vk") == rule  # VK: the Telegram rule
    assert config.rule("max") == rule  # MAX: the Telegram rule
    assert config.rule("viber") == rule  # Viber: the Telegram rule
    assert config.rule("sms") is None  # a channel the mapping has no rule for


def test_defaults_of_a_minimal_file() -> None:
    config = parse_mapping(MINIMAL)
    assert config.language == "en"
    assert config.channels == {"telegram": ChannelRule()}


@pytest.mark.parametrize(
    "owner",
    [
        "{strategy: fixed, owner_id: '7'}",
        "{strategy: round_robin, pool: ['1', '2']}",
        "{strategy: sticky, pool: ['1']}",
        "{strategy: sticky, fallback: fixed, owner_id: '7'}",
    ],
)
def test_each_owner_strategy_with_what_it_needs_is_valid(owner: str) -> None:
    rule = parse_mapping(channel(f"{{owner: {owner}}}")).rule("telegram")
    assert rule.owner.strategy in owner


def test_timeline_none_is_fine_when_the_inbox_gets_the_messages() -> None:
    rule = parse_mapping(channel("{timeline: none, inbox: true}")).rule("telegram")
    assert (rule.timeline, rule.inbox) == ("none", True)


# -- every rule, with the exact key path ----------------------------------------------------------

RULES = [
    # top level
    ("crm: hubspot\ncolour: red\nchannels: {telegram: {}}\n", "colour", "unknown key"),
    ("channels: {telegram: {}}\n", "crm", "required: add this key"),
    ("crm: Hub Spot\nchannels: {telegram: {}}\n", "crm", "CRM slug such as hubspot"),
    ("crm: hubspot\nlanguage: de\nchannels: {telegram: {}}\n", "language", "must be en or ru"),
    ("crm: hubspot\n", "channels", "required: add this key"),
    ("crm: hubspot\nchannels: {}\n", "channels", "map at least one channel"),
    (
        "crm: hubspot\nchannels: {Tele-gram: {}}\n",
        "channels.Tele-gram",
        "lower-case slugs such as telegram",
    ),
    # a channel's rule
    (channel("{colour: red}"), "channels.telegram.colour", "unknown key"),
    (
        channel("{object: company}"),
        "channels.telegram.object",
        "must be one of deal, ticket, lead, unsorted, none (got 'company')",
    ),
    (channel("{reuse: always}"), "channels.telegram.reuse", "must be open or conversation"),
    (
        channel("{timeline: email}"),
        "channels.telegram.timeline",
        "must be note, communication or none",
    ),
    (channel("{timeline: none}"), "channels.telegram.timeline", "messages would land nowhere"),
    (channel("{inbox: maybe}"), "channels.telegram.inbox", "must be true or false (got 'maybe')"),
    (
        channel("{name: '{contact.age}'}"),
        "channels.telegram.name",
        "unknown placeholder {contact.age}",
    ),
    (channel("{name: '{contact.name'}"), "channels.telegram.name", "unbalanced or malformed"),
    (channel("{name: 5}"), "channels.telegram.name", 'must be text: put it in quotes, e.g. "5"'),
    # owner
    (
        channel("{owner: {strategy: random}}"),
        "channels.telegram.owner.strategy",
        "must be one of fixed, round_robin, sticky (got 'random')",
    ),
    (
        channel("{owner: {pool: ['1']}}"),
        "channels.telegram.owner.strategy",
        "required: add this key",
    ),
    (
        channel("{owner: {strategy: fixed}}"),
        "channels.telegram.owner.owner_id",
        "fixed needs owner_id",
    ),
    (
        channel("{owner: {strategy: round_robin}}"),
        "channels.telegram.owner.pool",
        "round_robin needs pool",
    ),
    (
        channel("{owner: {strategy: round_robin, pool: 5}}"),
        "channels.telegram.owner.pool",
        'must be a list such as ["1", "2"] (got 5)',
    ),
    (
        channel("{owner: {strategy: sticky}}"),
        "channels.telegram.owner.pool",
        "add pool (owner ids) or fallback: fixed",
    ),
    (
        channel("{owner: {strategy: sticky, fallback: fixed}}"),
        "channels.telegram.owner.owner_id",
        "sticky with fallback fixed needs owner_id",
    ),
    (
        channel("{owner: {strategy: sticky, fallback: sticky, pool: ['1']}}"),
        "channels.telegram.owner.fallback",
        "must be fixed or round_robin",
    ),
    (
        channel("{owner: {strategy: fixed, owner_id: '1', team: x}}"),
        "channels.telegram.owner.team",
        "unknown key",
    ),
    # task
    (
        channel("{task: {when: always}}"),
        "channels.telegram.task.when",
        "must be never or new_entity",
    ),
    (
        channel("{task: {subject: 'Call {contact.surname}'}}"),
        "channels.telegram.task.subject",
        "unknown placeholder {contact.surname}",
    ),
    (
        channel("{task: {due_in_minutes: -5}}"),
        "channels.telegram.task.due_in_minutes",
        "must be a whole number from 0 to 43200 (got -5)",
    ),
    (
        channel("{task: {due_in_minutes: 43201}}"),
        "channels.telegram.task.due_in_minutes",
        "must be a whole number from 0 to 43200 (got 43201)",
    ),
    (channel("{task: {priority: high}}"), "channels.telegram.task.priority", "unknown key"),
    # fields
    (
        channel("{fields: {entity: {Bad-Name: x}}}"),
        "channels.telegram.fields.entity.Bad-Name",
        "property names are lower-case letters, digits and _ (got 'Bad-Name')",
    ),
    (
        channel("{fields: {contact: {firstname: '{profile.nick}'}}}"),
        "channels.telegram.fields.contact.firstname",
        "unknown placeholder {profile.nick}",
    ),
    (channel("{fields: {deal: {x: y}}}"), "channels.telegram.fields.deal", "unknown key"),
]


@pytest.mark.parametrize(
    "text,key,fragment", RULES, ids=[f"{i}-{r[1]}" for i, r in enumerate(RULES)]
)
def test_each_rule_names_the_key_and_the_fix(text: str, key: str, fragment: str) -> None:
    found = problems(text)
    assert len(found) == 1, found
    ((got_key, message),) = found
    assert got_key == key
    assert fragment in message


# -- marshmallow's messages, as sentences with the value and the fix -------------------------------

RULE_KEYS = (
    "object, pipeline, stage, reuse, owner, timeline, inbox, task, fields, name, "
    "acknowledge, priority, window_template"
)
TRANSLATED = [
    (
        channel("{inbox: 'yes please'}"),
        "channels.telegram.inbox",
        "must be true or false (got 'yes please')",
    ),
    (
        "crm: 5\nchannels: {telegram: {}}\n",
        "crm",
        'must be text: put it in quotes, e.g. "5" (got 5)',
    ),
    (
        channel("{name: yes}"),
        "channels.telegram.name",
        "must be text: YAML reads yes/no/true/false as a boolean, so put it in quotes (got True)",
    ),
    (
        channel("{name: [a]}"),
        "channels.telegram.name",
        "must be a single text value, not a list (got ['a'])",
    ),
    (channel("{reuse: 3}"), "channels.telegram.reuse", "must be one of open, conversation (got 3)"),
    (
        channel("{task: {due_in_minutes: 1h}}"),
        "channels.telegram.task.due_in_minutes",
        "must be a whole number (got '1h')",
    ),
    (
        channel("{owner: bob}"),
        "channels.telegram.owner",
        "must be a mapping (indented key: value lines) with keys such as strategy, owner_id, "
        "pool, fallback (got 'bob')",
    ),
    (
        channel("{fields: {entity: [1]}}"),
        "channels.telegram.fields.entity",
        "must be a mapping (indented key: value lines) (got [1])",
    ),
    (
        channel("{stage: null}"),
        "channels.telegram.stage",
        "is empty: give it a value or delete the line",
    ),
    (
        "crm: hubspot\nchannels:\n  telegram:\n",
        "channels.telegram",
        "is empty: add its keys, or write {} for the defaults",
    ),
    (channel("{stge: x}"), "channels.telegram.stge", "unknown key: did you mean stage?"),
    (
        channel("{Timeline: note}"),
        "channels.telegram.Timeline",
        "unknown key: did you mean timeline?",
    ),
    (
        channel("{colour: red}"),
        "channels.telegram.colour",
        f"unknown key: remove it or check its spelling (keys here: {RULE_KEYS})",
    ),
    (
        channel("{owner: {strategy: round_robin, pool: ['1', 2]}}"),
        "channels.telegram.owner.pool[1]",
        'must be text: put it in quotes, e.g. "2" (got 2)',
    ),
    (
        channel("{fields: {contact: {7: x}}}"),
        "channels.telegram.fields.contact.7",
        'must be text: put it in quotes, e.g. "7" (got 7)',
    ),
    (
        "crm: hubspot\ntimezone: Mars/Base\nchannels: {telegram: {}}\n",
        "timezone",
        "unknown time zone: use an IANA name such as Europe/Moscow or UTC (got 'Mars/Base')",
    ),
    (
        "crm: hubspot\ntimezone: new_york\nchannels: {telegram: {}}\n",
        "timezone",
        "unknown time zone: did you mean America/New_York? Otherwise use an IANA name such as "
        "Europe/Moscow or UTC (got 'new_york')",
    ),
    (
        "crm: hubspot\ntimezone: 3\nchannels: {telegram: {}}\n",
        "timezone",
        'must be text: put it in quotes, e.g. "3" (got 3)',
    ),
]


@pytest.mark.parametrize(
    "text,key,message", TRANSLATED, ids=[f"{i}-{r[1]}" for i, r in enumerate(TRANSLATED)]
)
def test_marshmallow_messages_become_sentences_with_the_value_and_the_fix(
    text: str, key: str, message: str
) -> None:
    assert problems(text) == [(key, message)]


def test_the_value_shown_is_cut_short() -> None:
    ((_, message),) = problems(channel(f"{{inbox: '{'y' * 500}'}}"))
    shown = message.split("(got ", 1)[1][:-1]
    assert len(shown) == SHOWN_CHARS and shown.startswith("'yyy") and shown.endswith("...")


def test_a_misspelt_required_key_is_one_problem() -> None:
    assert problems("crm: hubspot\nchanels: {telegram: {}}\n") == [
        ("chanels", "unknown key: did you mean channels?")
    ]


def test_checks_across_keys_still_run_when_another_key_fails() -> None:
    found = problems(channel("{timeline: none, task: {when: always}}"))
    assert sorted(found) == [
        ("channels.telegram.task.when", "must be never or new_entity (got 'always')"),
        (
            "channels.telegram.timeline",
            "messages would land nowhere: set timeline: note or inbox: true (got 'none')",
        ),
    ]


def test_a_key_given_but_invalid_is_not_also_called_missing() -> None:
    assert problems(channel("{owner: {strategy: fixed, owner_id: 7}}")) == [
        ("channels.telegram.owner.owner_id", 'must be text: put it in quotes, e.g. "7" (got 7)')
    ]
    assert problems(channel("{timeline: none, inbox: maybe}")) == [
        ("channels.telegram.inbox", "must be true or false (got 'maybe')")
    ]


def test_a_key_written_twice_is_an_error_not_a_silent_override() -> None:
    text = "crm: hubspot\nchannels:\n  telegram:\n    inbox: true\n    inbox: false\n"
    assert problems(text) == [
        ("line 5, column 5", "not valid YAML: the key 'inbox' appears twice in one block")
    ]


@pytest.mark.parametrize(
    "head,zone",
    [
        ("language: ru", "Europe/Moscow"),
        ("language: en", "UTC"),
        ("", "UTC"),
        ("language: ru\ntimezone: Asia/Yekaterinburg", "Asia/Yekaterinburg"),
    ],
)
def test_the_time_zone_defaults_by_language(head: str, zone: str) -> None:
    assert parse_mapping(f"{head}\n{MINIMAL}").timezone == zone


def test_read_mapping_keeps_the_yaml_of_an_invalid_file_for_the_crm_checks() -> None:
    result = read_mapping(channel("{object: lead, inbox: maybe}"), file="a.yaml")
    assert result.config is None
    assert result.data == {
        "crm": "hubspot",
        "channels": {"telegram": {"object": "lead", "inbox": "maybe"}},
    }
    assert result.problems == [("channels.telegram.inbox", "must be true or false (got 'maybe')")]


def test_an_unknown_placeholder_error_lists_what_may_be_used() -> None:
    ((_, message),) = problems(channel("{name: '{contact.age}'}"))
    for name in KNOWN_PLACEHOLDERS:
        assert name in message
    assert "{utm.<key>}" in message


def test_all_problems_of_a_file_are_reported_with_the_file_name() -> None:
    text = channel("{object: company, owner: {strategy: random}, task: {when: always}}")
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, file="mappings/acme.yaml")
    assert sorted(k for k, _ in caught.value.problems) == [
        "channels.telegram.object",
        "channels.telegram.owner.strategy",
        "channels.telegram.task.when",
    ]
    lines = str(caught.value).splitlines()
    assert len(lines) == 3 and all(
        line.startswith("mappings/acme.yaml: channels.telegram.") for line in lines
    )


def test_yaml_syntax_error_names_line_and_column() -> None:
    ((key, message),) = problems("crm: hubspot\nchannels: [\n")
    assert key == "line 3, column 1" and message.startswith("not valid YAML")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", ""])
def test_a_file_that_is_not_a_mapping_says_what_it_must_be(text: str) -> None:
    assert problems(text) == [("", "the file must be a YAML mapping with crm: and channels:")]


def test_yaml_tags_are_not_constructed(tmp_path: Path) -> None:
    # safe_load: a python tag is an error, never an object
    ((key, message),) = problems(
        "crm: !!python/object/apply:os.system ['true']\nchannels: {telegram: {}}\n"
    )
    assert key.startswith("line ") and "not valid YAML" in message


def test_unreadable_or_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read the file"):
        load_mapping(tmp_path / "nope.yaml")
    with pytest.raises(MappingError, match="mapping file not found"):
        MappingStore(tmp_path).get("nope")


# -- CRM-aware checks (bridge.checks) -------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_crm_checks_name_file_key_and_fix(tmp_path: Path) -> None:
    unknown_crm = _write(tmp_path, "a.yaml", "crm: salesforce\nchannels: {telegram: {}}\n")
    lead = _write(tmp_path, "b.yaml", channel("{object: lead}"))
    # (not "fax": that is one letter from "max", and the check would suggest it)
    fax = _write(tmp_path, "c.yaml", "crm: hubspot\nchannels: {pager: {}}\n")
    good = _write(tmp_path, "d.yaml", MINIMAL)
    found = check_mapping_files([unknown_crm, lead, fax, good])
    assert found == [
        f"{unknown_crm}: crm: unknown CRM 'salesforce'; use one of {', '.join(crm_kinds())}",
        f"{lead}: channels.telegram.object: HubSpot has no 'lead'; use one of deal, ticket or none",
        f"{fax}: channels.pager: unknown channel; use one of {', '.join(channel_kinds())}",
    ]


def test_the_app_refuses_to_start_on_an_invalid_mapping(tmp_path: Path) -> None:
    _write(tmp_path, "ok.yaml", MINIMAL)
    bad = _write(tmp_path, "bad.yaml", channel("{owner: {strategy: random}}"))
    with pytest.raises(ConfigError) as caught:
        validate_mappings_dir(tmp_path)
    assert f"{bad}: channels.telegram.owner.strategy: must be one of" in str(caught.value)
    bad.unlink()
    validate_mappings_dir(tmp_path)


def test_store_reloads_a_changed_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "acme.yaml", MINIMAL)
    store = MappingStore(tmp_path)
    assert store.get("acme").rule("telegram").object == "deal"
    assert store.get("acme.yaml") is store.get("acme")  # cached while unchanged
    path.write_text(channel("{object: ticket}"), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert store.get("acme").rule("telegram").object == "ticket"


# -- templates ----------------------------------------------------------------------------------

CONTEXT = {
    "contact.name": "Anna K",
    "contact.phone": "+79990001122",
    "channel.title": "Telegram",
    "profile.first_name": "Anna",
    "profile.last_name": None,
    "utm.utm_source": "google",
}


def test_templates_render_from_the_context() -> None:
    assert render("{channel.title}: {contact.name}", CONTEXT) == "Telegram: Anna K"
    assert render_all(
        {
            "firstname": "{profile.first_name}",
            "lastname": "{profile.last_name}",
            "source": "{utm.utm_source}",
            "campaign": "{utm.utm_campaign}",
            "note": "from {channel.title}",
        },
        CONTEXT,
    ) == {"firstname": "Anna", "source": "google", "note": "from Telegram"}


def test_empty_values_collapse_instead_of_leaving_gaps() -> None:
    assert (
        render("{profile.first_name} {profile.last_name} ({contact.email})", CONTEXT) == "Anna ()"
    )
    assert render_all({"name": "{profile.last_name} - {contact.email}:"}, CONTEXT) == {}


def test_values_are_inserted_verbatim_never_rendered_again() -> None:
    context = {**CONTEXT, "contact.name": "{contact.phone} {0.__class__} %(x)s ${HOME}"}
    assert render("Hi {contact.name}", context) == "Hi {contact.phone} {0.__class__} %(x)s ${HOME}"


@pytest.mark.parametrize(
    "template",
    [
        "{contact.name.__class__}",
        "{contact.name.__class__.__mro__}",
        "{__class__}",
        "{contact.__dict__}",
        "{0.__class__}",
        "{contact.name!r}",
        "{contact.name:>99999}",
        "{contact[name]}",
        "{}",
        "{{contact.name}}",
    ],
)
def test_attribute_access_and_format_syntax_are_rejected_by_the_schema(template: str) -> None:
    ((key, message),) = problems(channel(f"{{name: '{template}'}}"))
    assert key == "channels.telegram.name"
    assert "placeholder" in message


def test_renderer_only_looks_names_up() -> None:
    # even where the schema lets a free-form utm key through, the renderer
    # treats it as a dictionary key, not as something to evaluate
    parse_mapping(channel("{name: '{utm.__class__}'}"))
    assert render("[{utm.__class__}]", CONTEXT) == "[]"
    assert render("[{utm.__class__}]", {"utm.__class__": "plain"}) == "[plain]"


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../secret.yaml", "a/b.yaml", "..", ".env", "", "x\\..\\y.yaml"]
)
def test_a_mapping_name_never_leaves_the_mappings_directory(tmp_path: Path, name: str) -> None:
    (tmp_path / "ok.yaml").write_text("crm: hubspot\nchannels:\n  telegram: {}\n")
    store = MappingStore(tmp_path)
    with pytest.raises(MappingError, match="file name in the mappings directory"):
        store.get(name)
    assert store.get("ok").crm == "hubspot" and store.get("ok.yaml").crm == "hubspot"
