"""The console's mapping editor (``bridge.console.mapping_edit`` and the
``/console/mapping`` page).

* Each problem at its line: nested keys, list items, a merge key, a YAML
  syntax error (its own line and column), a key the file lacks (its
  parent's line), the whole file (line 1); the loader's own messages.
* The page through the Flask test client, on SQLite and PostgreSQL: the
  live check's JSON, a save (the file replaced where the runtime reads it,
  the runtime's next read is the new mapping, one audit row with the text
  before and after), a save refused (invalid, changed meanwhile, another
  tenant's file, no CSRF token, a viewer).
* The dry run against HubSpot's API mocked with ``responses`` (GETs only:
  an unregistered call, a write included, fails the test); the real
  sandboxes are in tests/integration/test_console_dry_run.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bridge import admin
from bridge.checks import Problem
from bridge.console.mapping_edit import (
    Sample,
    check_text,
    digest,
    dry_run,
    key_position,
    locate,
    save_text,
)
from bridge.runtime import Runtime
from bridge.tables import ConsoleAudit, Tenant
from mappings import MappingStore
from tests.support.console import console_app, csrf_token, login, make_user

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"

GOOD = """\
crm: hubspot
channels:
  telegram:
    object: deal
    pipeline: default
    stage: appointmentscheduled
    owner:
      strategy: round_robin
      pool:
        - "70000001"
        - "70000002"
    timeline: note
    task: {when: new_entity, subject: "Reply to {contact.name}", due_in_minutes: 30}
    fields:
      contact:
        firstname: "{profile.first_name}"
      entity:
        bridge_utm_source: "{utm.utm_source}"
"""


def problems_of(text: str, directory: Path = MAPPINGS, crm: str | None = "hubspot") -> list[Any]:
    return locate(text, check_text(text, file="t.yaml", directory=directory, crm_kind=crm))


def by_key(located: list[Any]) -> dict[str, Any]:
    return {p.key: p for p in located}


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line holding ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


# -- the line of each problem -----------------------------------------------------------------


def test_a_nested_keys_error_is_at_that_keys_line() -> None:
    text = GOOD.replace("strategy: round_robin", "strategy: random")
    found = by_key(problems_of(text))["channels.telegram.owner.strategy"]
    assert found.line == line_of(text, "strategy: random")
    assert found.column == 7 and found.exact and found.blocking
    assert "must be one of fixed, round_robin, sticky (got 'random')" in found.message


def test_a_list_items_error_is_at_the_items_line() -> None:
    text = GOOD.replace('        - "70000002"', "        - [1, 2]")
    found = by_key(problems_of(text))["channels.telegram.owner.pool[1]"]
    assert found.line == line_of(text, "- [1, 2]")
    assert found.exact
    # a flow list's items are on one line
    flow = GOOD.replace('\n        - "70000001"\n        - "70000002"', ' ["70000001", {a: 1}]')
    found = by_key(problems_of(flow))["channels.telegram.owner.pool[1]"]
    line = flow.splitlines()[line_of(flow, "pool: [") - 1]
    assert (found.line, found.column) == (line_of(flow, "pool: ["), line.index("{a") + 1)


def test_a_yaml_syntax_error_is_at_its_own_line_and_column() -> None:
    text = GOOD.replace("timeline: note", "timeline: [note")
    (found,) = problems_of(text)
    assert found.key == ""
    assert found.message.startswith("not valid YAML")
    # PyYAML marks where it stopped understanding: the colon after the next key
    assert (found.line, found.column) == (line_of(text, "task:"), len("    task:"))


def test_a_key_written_twice_is_at_its_second_line() -> None:
    text = GOOD.replace("    timeline: note\n", "    timeline: note\n    timeline: none\n")
    (found,) = problems_of(text)
    assert "appears twice" in found.message
    assert found.line == line_of(text, "timeline: none")


def test_a_missing_key_is_at_its_parents_line() -> None:
    text = GOOD.replace("strategy: round_robin", "strategy: fixed")
    found = by_key(problems_of(text))["channels.telegram.owner.owner_id"]
    assert found.message == "fixed needs owner_id: the CRM owner id"
    assert not found.exact
    assert found.line == line_of(text, "owner:")
    # a top-level key missing: the file's first line
    found = by_key(problems_of(GOOD.replace("crm: hubspot\n", "")))["crm"]
    assert (found.line, found.exact, found.message) == (1, False, "required: add this key")


def test_the_service_sections_errors_name_the_loaders_fix_at_their_line() -> None:
    text = (MAPPINGS / "examples" / "service.yaml").read_text(encoding="utf-8")
    text = text.replace("crm: bitrix24", "crm: hubspot")
    text = text.replace(
        '      members: ["101", "102", "103"]\n',
        '      members: ["101", "102", "103"]\n'
        "      hours:\n        week:\n          mnd: closed\n",
        1,
    )
    located = problems_of(text, MAPPINGS / "examples")
    found = by_key(located)["service.lines.sales.hours.week.mnd"]
    assert found.message.startswith("unknown day: did you mean mon?")
    assert found.line == line_of(text, "mnd: closed") and found.exact


def test_keys_through_a_merge_key_and_an_alias() -> None:
    text = (
        "base: &base\n  owner:\n    strategy: fixed\nrule:\n  <<: *base\n  name: x\ncopy: *base\n"
    )
    root = __import__("yaml").compose(text)
    assert key_position(root, "rule.owner.strategy") == (3, 5, True)  # written in the base
    assert key_position(root, "rule.name") == (6, 3, True)
    assert key_position(root, "copy.owner") == (2, 3, True)
    assert key_position(root, "copy.nothing") == (7, 1, False)
    assert key_position(root, "") == (1, 1, True)
    assert key_position(None, "crm") == (1, 1, False)


def test_one_problem_of_an_anchored_block_is_shown_once_with_every_key() -> None:
    text = (
        GOOD.replace("  telegram:\n", "  telegram: &rule\n") + "  vk: *rule\n  max: *rule\n"
    ).replace("strategy: round_robin", "strategy: random")
    (found,) = problems_of(text)
    assert found.key == "channels.telegram.owner.strategy"
    assert found.also == ("channels.vk.owner.strategy", "channels.max.owner.strategy")
    assert found.line == line_of(text, "strategy: random")


def test_a_text_of_nested_aliases_is_refused_before_the_schema_walks_it() -> None:
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    text = "crm: hubspot\n" + "\n".join(laughs) + "\nchannels: {telegram: {}}\n"
    (found,) = problems_of(text)
    assert found.line == 1 and "more than 100000 values" in found.message
    # a few aliases are fine: the shipped demo mappings use them
    anchored = GOOD.replace("  telegram:\n", "  telegram: &rule\n") + "  vk: *rule\n"
    assert problems_of(anchored) == []


def test_the_tenants_crm_is_the_only_crm_the_mapping_may_name() -> None:
    located = problems_of(GOOD, crm="amocrm")
    found = by_key(located)["crm"]
    assert found.blocking and found.line == 1
    assert "connected to amoCRM: write crm: amocrm" in found.message


def test_the_shipped_mappings_have_no_blocking_problem() -> None:
    for path in sorted(MAPPINGS.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        crm = re.search(r"^crm: (\w+)", text, re.M)
        located = problems_of(text, crm=crm.group(1) if crm else None)
        assert not [p for p in located if p.blocking], path.name


def test_locate_keeps_each_problems_message_and_weight() -> None:
    problems = [Problem("f", "channels.telegram.task", "advice", blocking=False)]
    (found,) = locate(GOOD, problems)
    assert (found.message, found.blocking, found.line) == ("advice", False, line_of(GOOD, "task:"))


# -- the file ---------------------------------------------------------------------------------


def test_a_save_replaces_the_file_and_every_store_reads_it_again(tmp_path: Path) -> None:
    store = MappingStore(tmp_path)
    path = tmp_path / "acme.yaml"
    path.write_text(GOOD, encoding="utf-8")
    path.chmod(0o640)
    assert store.get("acme").channels["telegram"].task.due_in_minutes == 30
    for minutes in (31, 32, 33):  # faster than the file system's clock tick
        save_text(path, GOOD.replace("due_in_minutes: 30", f"due_in_minutes: {minutes}"))
        assert store.get("acme").channels["telegram"].task.due_in_minutes == minutes
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acme.yaml"]  # no temporary left


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(GOOD, encoding="utf-8")

    def broken(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("bridge.console.mapping_edit.os.replace", broken)
    with pytest.raises(OSError, match="disk full"):
        save_text(path, "crm: hubspot\n")
    assert path.read_text(encoding="utf-8") == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acme.yaml"]


# -- the page ---------------------------------------------------------------------------------


@pytest.fixture
def app(runtime: Runtime) -> Flask:
    return console_app(runtime)


def tenant(runtime: Runtime, slug: str, mapping: str = "acme.yaml", text: str = GOOD) -> int:
    (runtime.settings.mappings_dir / mapping).write_text(text, encoding="utf-8")
    return admin.create_tenant(
        runtime,
        slug=slug,
        crm_kind="hubspot",
        mapping=mapping,
        credentials={"type": "private_app", "access_token": "pat-test"},
    )


def signed_in(
    app: Flask, runtime: Runtime, email: str, role: str, tenant_id: int | None
) -> FlaskClient:
    make_user(runtime, email, role=role, tenant_id=tenant_id)
    client = app.test_client()
    assert login(client, email).status_code == 302
    return client


def save(client: FlaskClient, tenant_id: int, text: str, base: str, **kw: Any) -> Any:
    token = csrf_token(client, f"/console/mapping?tenant={tenant_id}")
    data = {"text": text, "base": base, "csrf_token": token, **kw}
    return client.post(f"/console/mapping?tenant={tenant_id}", data=data)


def audits(runtime: Runtime) -> list[ConsoleAudit]:
    with runtime.read_session() as session:
        return list(
            session.scalars(select(ConsoleAudit).where(ConsoleAudit.action == "mapping.save"))
        )


def test_the_page_shows_the_file_with_its_problems_at_their_lines(
    app: Flask, runtime: Runtime
) -> None:
    text = GOOD.replace("strategy: round_robin", "strategy: fixed")
    tid = tenant(runtime, "acme")
    (runtime.settings.mappings_dir / "acme.yaml").write_text(text, encoding="utf-8")
    client = signed_in(app, runtime, "viewer@acme.test", "viewer", tid)
    page = client.get(f"/console/mapping?tenant={tid}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="mapping-text"' in html and " readonly" in html
    assert "strategy: fixed" in html
    owner_line = line_of(text, "owner:")
    assert f'data-line="{owner_line}"' in html and "fixed needs owner_id" in html
    assert 'id="mapping-save"' not in html and 'id="mapping-dry-run"' not in html
    assert 'src="/console/static/console/mapping.js"' in html
    ru = client.get(f"/console/mapping?tenant={tid}&lang=ru").get_data(as_text=True)
    assert "Сопоставление" in ru and f"строка {owner_line}" in ru


def test_a_viewer_cannot_save_or_check(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime, "acme")
    client = signed_in(app, runtime, "viewer@acme.test", "viewer", tid)
    answer = save(client, tid, GOOD.replace("30", "45"), digest(GOOD))
    assert answer.status_code == 403
    token = csrf_token(client, f"/console/mapping?tenant={tid}")
    checked = client.post(
        f"/console/mapping/validate?tenant={tid}",
        json={"text": GOOD},
        headers={"X-CSRFToken": token},
    )
    assert checked.status_code == 403
    assert (runtime.settings.mappings_dir / "acme.yaml").read_text(encoding="utf-8") == GOOD
    assert audits(runtime) == []


def test_the_live_check_answers_each_problem_with_its_line(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime, "acme")
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    token = csrf_token(client, f"/console/mapping?tenant={tid}")
    text = GOOD.replace("due_in_minutes: 30", "due_in_minutes: -1").replace("\n", "\r\n")
    answer = client.post(
        f"/console/mapping/validate?tenant={tid}",
        json={"text": text},
        headers={"X-CSRFToken": token},
    )
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["ok"] is False
    (problem,) = body["problems"]
    task_line = GOOD.splitlines()[line_of(GOOD, "task:") - 1]
    assert problem == {
        "key": "channels.telegram.task.due_in_minutes",
        "message": "must be a whole number from 0 to 43200 (got -1)",
        "line": line_of(GOOD, "task:"),
        "column": task_line.index("due_in_minutes") + 1,
        "blocking": True,
        "exact": True,
        "also": [],
    }
    ok = client.post(
        f"/console/mapping/validate?tenant={tid}",
        json={"text": GOOD},
        headers={"X-CSRFToken": token},
    ).get_json()
    assert ok == {"ok": True, "problems": []}
    # without the CSRF header: refused
    bare = client.post(f"/console/mapping/validate?tenant={tid}", json={"text": GOOD})
    assert bare.status_code == 400


def test_a_valid_save_replaces_the_file_the_runtime_reads_and_is_audited(
    app: Flask, runtime: Runtime
) -> None:
    tid = tenant(runtime, "acme")
    with runtime.read_session() as session:
        row = session.get(Tenant, tid)
        assert row is not None
        assert runtime.mapping_for(row).channels["telegram"].task.due_in_minutes == 30
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    new = GOOD.replace("due_in_minutes: 30", "due_in_minutes: 45")
    answer = save(client, tid, new.replace("\n", "\r\n"), digest(GOOD))
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"/console/mapping?tenant={tid}")
    assert (runtime.settings.mappings_dir / "acme.yaml").read_text(encoding="utf-8") == new
    with runtime.read_session() as session:
        row = session.get(Tenant, tid)
        assert row is not None
        assert runtime.mapping_for(row).channels["telegram"].task.due_in_minutes == 45
    (row_audit,) = audits(runtime)
    assert (row_audit.user_email, row_audit.tenant_id) == ("admin@acme.test", tid)
    assert (row_audit.target, row_audit.before, row_audit.after) == ("mapping:acme.yaml", GOOD, new)
    assert "Mapping saved" in client.get(f"/console/mapping?tenant={tid}").get_data(as_text=True)
    # again at once, from the text just saved: the runtime reads the newest
    newer = new.replace("due_in_minutes: 45", "due_in_minutes: 50")
    assert save(client, tid, newer, digest(new)).status_code == 303
    with runtime.read_session() as session:
        row = session.get(Tenant, tid)
        assert row is not None
        assert runtime.mapping_for(row).channels["telegram"].task.due_in_minutes == 50
    assert len(audits(runtime)) == 2


def test_an_invalid_mapping_is_not_saved(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime, "acme")
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    bad = GOOD.replace("object: deal", "object: lead")  # HubSpot has no leads
    answer = save(client, tid, bad, digest(GOOD))
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    assert "Not saved: fix the errors below first." in html
    assert (
        f'data-line="{line_of(bad, "object: lead")}"' in html
        and "HubSpot has no &#39;lead&#39;" in html
    )
    assert "object: lead" in html  # the admin's text stays in the editor
    assert (runtime.settings.mappings_dir / "acme.yaml").read_text(encoding="utf-8") == GOOD
    assert audits(runtime) == []


def test_a_file_changed_since_it_was_opened_is_not_overwritten(
    app: Flask, runtime: Runtime
) -> None:
    tid = tenant(runtime, "acme")
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    theirs = GOOD.replace("due_in_minutes: 30", "due_in_minutes: 40")
    (runtime.settings.mappings_dir / "acme.yaml").write_text(theirs, encoding="utf-8")
    answer = save(
        client, tid, GOOD.replace("due_in_minutes: 30", "due_in_minutes: 45"), digest(GOOD)
    )
    assert answer.status_code == 409
    assert "the file was changed since you opened it" in answer.get_data(as_text=True)
    assert (runtime.settings.mappings_dir / "acme.yaml").read_text(encoding="utf-8") == theirs
    assert audits(runtime) == []


def test_a_file_other_tenants_share_only_the_owner_saves(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime, "acme", mapping="shared.yaml")
    other = tenant(runtime, "globex", mapping="shared")  # the same file, named without .yaml
    new = GOOD.replace("due_in_minutes: 30", "due_in_minutes: 45")
    admin_client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    page = admin_client.get(f"/console/mapping?tenant={tid}").get_data(as_text=True)
    assert "also the mapping of: globex" in page
    assert save(admin_client, tid, new, digest(GOOD)).status_code == 403
    assert audits(runtime) == []
    owner = signed_in(app, runtime, "owner@bridge.test", "owner", None)
    assert save(owner, other, new, digest(GOOD)).status_code == 303
    assert (runtime.settings.mappings_dir / "shared.yaml").read_text(encoding="utf-8") == new
    (row,) = audits(runtime)
    assert (row.user_email, row.tenant_id) == ("owner@bridge.test", other)


def test_another_tenants_mapping_is_not_found(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime, "acme")
    other = tenant(runtime, "globex", mapping="globex.yaml")
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    assert client.get(f"/console/mapping?tenant={other}").status_code == 404
    assert save(client, tid, GOOD, digest(GOOD)).status_code == 303  # unchanged: nothing written
    token = csrf_token(client, f"/console/mapping?tenant={tid}")
    answer = client.post(
        f"/console/mapping?tenant={other}",
        data={"text": "crm: hubspot\n", "base": digest(GOOD), "csrf_token": token},
    )
    assert answer.status_code == 404
    assert (runtime.settings.mappings_dir / "globex.yaml").read_text(encoding="utf-8") == GOOD
    assert audits(runtime) == []


def test_a_save_without_the_csrf_token_is_refused(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime, "acme")
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    answer = client.post(
        f"/console/mapping?tenant={tid}", data={"text": "crm: x\n", "base": digest(GOOD)}
    )
    assert answer.status_code == 400
    assert (runtime.settings.mappings_dir / "acme.yaml").read_text(encoding="utf-8") == GOOD


# -- the dry run, HubSpot's API mocked ----------------------------------------------------------

API = "https://api.hubapi.com"


def hubspot_portal(mocked: responses.RequestsMock) -> None:
    mocked.get(
        f"{API}/crm/v3/pipelines/deals",
        json={
            "results": [
                {
                    "id": "default",
                    "label": "Sales Pipeline",
                    "stages": [
                        {"id": "closedwon", "label": "Closed Won", "displayOrder": 5},
                        {
                            "id": "appointmentscheduled",
                            "label": "Appointment Scheduled",
                            "displayOrder": 0,
                        },
                    ],
                }
            ]
        },
    )
    mocked.get(
        f"{API}/crm/v3/owners/",
        json={
            "results": [
                {
                    "id": "70000001",
                    "firstName": "Olga",
                    "lastName": "Ivanova",
                    "email": "olga@acme.test",
                },
                {"id": "70000002", "email": "max@acme.test", "archived": True},
            ]
        },
    )
    mocked.get(
        f"{API}/crm/v3/properties/contacts",
        json={"results": [{"name": "firstname", "label": "First Name"}]},
    )
    mocked.get(
        f"{API}/crm/v3/properties/deals",
        json={"results": [{"name": "dealname", "label": "Deal name"}]},
    )


def test_a_dry_run_names_what_the_crm_lacks_and_shows_the_drafts(runtime: Runtime) -> None:
    tid = tenant(runtime, "acme")
    with runtime.read_session() as session:
        row = session.get(Tenant, tid)
        assert row is not None
        session.expunge(row)
    text = GOOD.replace("stage: appointmentscheduled", "stage: qualified")
    with responses.RequestsMock() as mocked:
        hubspot_portal(mocked)
        run = dry_run(
            runtime, row, text, Sample("telegram", "Anna Smith", "Hello <b>there</b>\nsecond line")
        )
        assert {c.request.method for c in mocked.calls} == {"GET"}
    checks = {(c.kind, c.value): c for c in run.checks}
    assert checks[("pipeline", "default")].ok is True
    assert checks[("pipeline", "default")].name == "Sales Pipeline"
    stage = checks[("stage", "qualified")]
    assert stage.ok is False and stage.line == line_of(text, "stage: qualified")
    assert stage.keys == ("channels.telegram.stage",)
    assert checks[("owner", "70000001")].ok is True
    assert checks[("owner", "70000001")].name == "Olga Ivanova"
    assert checks[("owner", "70000002")].ok is False  # archived
    assert checks[("field", "contact.firstname")].ok is True
    assert checks[("field", "deal.bridge_utm_source")].ok is False
    assert not run.ok
    preview = run.preview
    assert preview is not None
    assert preview.contact == {"name": "Anna Smith", "firstname": "Anna"}
    assert preview.entity is not None
    assert preview.entity["name"] == "Telegram: Anna Smith"
    assert preview.entity["pipeline"] == "Sales Pipeline (default)"
    assert preview.entity["stage"] == "qualified"  # not in the CRM: the id as written
    assert preview.entity["owner"] == "Olga Ivanova (70000001), round_robin"
    assert preview.task is not None and preview.task["subject"] == "Reply to Anna Smith"
    assert preview.task["body"] == "Hello <b>there</b>\nsecond line"
    assert preview.note == "Anna Smith via Telegram\nHello <b>there</b>\nsecond line"
    # the round robin's turn is read, not taken
    assert runtime.redis.get(f"bridge:rr:{tid}:telegram") is None


def test_a_dry_run_of_an_invalid_text_asks_the_crm_nothing(runtime: Runtime) -> None:
    tid = tenant(runtime, "acme")
    with runtime.read_session() as session:
        row = session.get(Tenant, tid)
        assert row is not None
        session.expunge(row)
    with responses.RequestsMock() as mocked:
        run = dry_run(runtime, row, GOOD.replace("timeline: note", "timeline: sms"), None)
        assert len(mocked.calls) == 0
    assert run.checks == [] and run.preview is None and not run.ok
    assert run.problems[0].key == "channels.telegram.timeline"


def test_the_dry_run_page_shows_each_check_and_the_preview(app: Flask, runtime: Runtime) -> None:
    tid = tenant(runtime, "acme")
    client = signed_in(app, runtime, "admin@acme.test", "admin", tid)
    token = csrf_token(client, f"/console/mapping?tenant={tid}")
    form = {
        "text": GOOD,
        "base": digest(GOOD),
        "channel": "telegram",
        "sender": "Anna Smith",
        "sample_text": "Hello",
        "csrf_token": token,
    }
    with responses.RequestsMock() as mocked:
        hubspot_portal(mocked)
        page = client.post(f"/console/mapping/dry-run?tenant={tid}", data=form)
        as_json = client.post(
            f"/console/mapping/dry-run?tenant={tid}",
            json={k: v for k, v in form.items() if k != "csrf_token"},
            headers={"X-CSRFToken": token, "Accept": "application/json"},
        )
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="dry-run-checks"' in html and 'data-ok="missing"' in html and 'data-ok="ok"' in html
    assert "Telegram: Anna Smith" in html and "Appointment Scheduled (appointmentscheduled)" in html
    body = as_json.get_json()
    assert body["ok"] is False  # the archived owner, the missing deal field
    missing = {(c["kind"], c["value"]) for c in body["checks"] if c["ok"] is False}
    assert missing == {("owner", "70000002"), ("field", "deal.bridge_utm_source")}
    assert body["preview"]["entity"]["stage"] == "Appointment Scheduled (appointmentscheduled)"
    assert (runtime.settings.mappings_dir / "acme.yaml").read_text(encoding="utf-8") == GOOD


WHATSAPP = """\
crm: hubspot
channels:
  whatsapp:
    object: none
    timeline: note
    window_template: {name: order_update, language: en}
"""


def test_a_window_template_is_looked_up_in_the_channels_templates(runtime: Runtime) -> None:
    tid = tenant(runtime, "acme")
    with runtime.read_session() as session:
        row = session.get(Tenant, tid)
        assert row is not None
        session.expunge(row)
    assert [c.name for c in dry_run(runtime, row, WHATSAPP, None).checks] == [
        "no WhatsApp account connected"
    ]
    admin.add_channel_account(
        runtime,
        tid,
        kind="whatsapp",
        credentials={"access_token": "wa-token"},
        name="Shop number",
        settings={"waba_id": "1001"},
    )
    listed = "https://graph.facebook.com/v21.0/1001/message_templates?limit=100"
    for templates, ok, name in (
        ([{"name": "order_update", "language": "en", "status": "APPROVED"}], True, "Shop number"),
        ([{"name": "order_update", "language": "ru", "status": "APPROVED"}], False, "Shop number"),
        (
            [{"name": "order_update", "language": "en", "status": "PAUSED"}],
            False,
            "Shop number: PAUSED",
        ),
    ):
        with responses.RequestsMock() as mocked:
            mocked.get(listed, json={"data": templates})
            run = dry_run(runtime, row, WHATSAPP, None)
        (check,) = run.checks
        assert (check.kind, check.value, check.ok, check.name) == (
            "template",
            "order_update (en)",
            ok,
            name,
        )
        assert check.line == line_of(WHATSAPP, "window_template")
