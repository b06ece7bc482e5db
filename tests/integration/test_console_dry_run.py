# ruff: noqa: S105, S106  (sandbox secrets)
"""The mapping editor's dry run (``POST /console/mapping/dry-run``) against
the sandbox CRMs over real HTTP: HubSpot, amoCRM and Bitrix24, one sandbox
each for the module.

Per CRM a tenant is connected the way an admin does it without the OAuth
install (HubSpot: a private-app token; amoCRM: a long-lived token;
Bitrix24: an incoming webhook), its CRM setup run (it creates the fields
the mapping writes), and an admin signed in to the console. Then:

* a good mapping: every pipeline, stage, owner and field it names is found
  (ok, with the CRM's own name), and the sample message's contact, deal or
  lead (pipeline, stage, owner), task and note are shown;
* the same mapping naming a stage and an owner the CRM does not have: those
  two are named missing, the rest still ok;

and the sandbox's state is the same before and after: nothing was written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bridge import admin
from bridge.config import Settings
from bridge.runtime import Runtime
from sandbox.amocrm import DEMO_CLIENT_ID as AMO_CLIENT_ID
from sandbox.amocrm import DEMO_CLIENT_SECRET as AMO_CLIENT_SECRET
from sandbox.amocrm import DEMO_SUBDOMAIN
from sandbox.amocrm import create_app as create_amocrm
from sandbox.bitrix24 import DEMO_CLIENT_ID as B24_CLIENT_ID
from sandbox.bitrix24 import DEMO_CLIENT_SECRET as B24_CLIENT_SECRET
from sandbox.bitrix24 import DEMO_DOMAIN, DEMO_WEBHOOK_CODE, DEMO_WEBHOOK_USER
from sandbox.bitrix24 import create_app as create_bitrix24
from tests.support.console import console_app, csrf_token, login, make_user
from tests.support.harness import (
    PORTAL_A,
    PRIVATE_TOKEN_A,
    build_runtime,
    hubspot_app,
    hubspot_sandbox,
)
from tests.support.servers import serve_wsgi


@dataclass(frozen=True)
class Crm:
    """One CRM's side of the test: the running sandbox, how a tenant
    connects to it, a good mapping and what the dry run should find."""

    kind: str
    url: str
    #: Settings overrides (apps, api_bases) pointing the bridge at the sandbox
    overrides: dict[str, Any]
    #: credentials, account id and settings of ``admin.create_tenant``
    connect: Callable[[], tuple[dict[str, Any], str | None, dict[str, Any]]]
    mapping: str
    #: (stage, owner) of the good mapping, replaced by ones the CRM lacks
    stage: str
    owner: str
    #: ``GET /_state`` of the tenant's account
    state_params: dict[str, str]
    #: what the preview's entity shows for the good mapping
    entity: dict[str, str]


HUBSPOT_MAPPING = """\
crm: hubspot
channels:
  telegram:
    object: deal
    pipeline: default
    stage: appointmentscheduled
    owner: {strategy: fixed, owner_id: "70000002"}
    timeline: note
    inbox: false
    task: {when: new_entity, subject: "Reply to {contact.name}", due_in_minutes: 30}
    fields:
      contact:
        firstname: "{profile.first_name}"
      entity:
        bridge_first_words: "{message.text}"
"""

AMOCRM_MAPPING = """\
crm: amocrm
language: ru
channels:
  telegram:
    object: lead
    pipeline: "7001001"
    stage: "61001003"
    owner: {strategy: fixed, owner_id: "6001002"}
    timeline: note
    task: {when: new_entity, subject: "Ответить: {contact.name}", due_in_minutes: 30}
    fields:
      entity:
        bridge_first_words: "{message.text}"
"""

BITRIX24_MAPPING = """\
crm: bitrix24
channels:
  telegram:
    object: deal
    pipeline: "1"
    stage: "C1:NEW"
    owner: {strategy: fixed, owner_id: "2"}
    timeline: note
    task: {when: new_entity, subject: "Reply to {contact.name}", due_in_minutes: 30}
    fields:
      entity:
        utm_source: "{utm.utm_source}"
        bridge_first_words: "{message.text}"
"""


@pytest.fixture(scope="module")
def hubspot() -> Iterator[Crm]:
    with hubspot_sandbox() as (url, _spy):
        yield Crm(
            kind="hubspot",
            url=url,
            overrides={"apps": {"hubspot": hubspot_app(url)}, "api_bases": {"hubspot": url}},
            connect=lambda: (
                {"type": "private_app", "access_token": PRIVATE_TOKEN_A},
                str(PORTAL_A),
                {},
            ),
            mapping=HUBSPOT_MAPPING,
            stage="appointmentscheduled",
            owner="70000002",
            state_params={"account": str(PORTAL_A)},
            entity={
                "pipeline": "Sales Pipeline (default)",
                "stage": "Appointment Scheduled (appointmentscheduled)",
            },
        )


@pytest.fixture(scope="module")
def amocrm() -> Iterator[Crm]:
    app = create_amocrm({"webhooks_on_api_changes": False})
    with serve_wsgi(app) as server:
        url = server.url

        def connect() -> tuple[dict[str, Any], str | None, dict[str, Any]]:
            from crm_adapters.amocrm import AmoCrmAdapter

            made = requests.post(
                f"{url}/_long_lived_token", json={"subdomain": DEMO_SUBDOMAIN}, timeout=10
            )
            made.raise_for_status()
            installed = AmoCrmAdapter.token_credentials(f"{DEMO_SUBDOMAIN}:{made.json()['token']}")
            return dict(installed.credentials), installed.account_id, dict(installed.settings)

        yield Crm(
            kind="amocrm",
            url=url,
            overrides={
                "apps": {
                    "amocrm": {
                        "client_id": AMO_CLIENT_ID,
                        "client_secret": AMO_CLIENT_SECRET,
                        "auth_base": f"{url}/www",
                        "amojo_base": f"{url}/amojo",
                    }
                },
                "api_bases": {"amocrm": f"{url}/{{subdomain}}"},
            },
            connect=connect,
            mapping=AMOCRM_MAPPING,
            stage="61001003",
            owner="6001002",
            state_params={"account": DEMO_SUBDOMAIN},
            entity={"pipeline": "Воронка (7001001)", "stage": "Переговоры (61001003)"},
        )


@pytest.fixture(scope="module")
def bitrix24() -> Iterator[Crm]:
    app = create_bitrix24({"events_for_rest_changes": False, "event_delivery": "inline"})
    with serve_wsgi(app) as server:
        url = server.url
        hook = f"{url}/{DEMO_DOMAIN}/rest/{DEMO_WEBHOOK_USER}/{DEMO_WEBHOOK_CODE}/"
        yield Crm(
            kind="bitrix24",
            url=url,
            overrides={
                "apps": {
                    "bitrix24": {
                        "client_id": B24_CLIENT_ID,
                        "client_secret": B24_CLIENT_SECRET,
                        "auth_base": f"{url}/oauth",
                        "allowed_hosts": "127.0.0.1:*",
                    }
                }
            },
            connect=lambda: ({"type": "webhook", "url": hook}, None, {}),
            mapping=BITRIX24_MAPPING,
            stage="C1:NEW",
            owner="2",
            state_params={"account": DEMO_DOMAIN},
            entity={"pipeline": "Partners (1)"},
        )


@pytest.fixture(params=["hubspot", "amocrm", "bitrix24"])
def crm(request: pytest.FixtureRequest) -> Crm:
    found: Crm = request.getfixturevalue(request.param)
    return found


@pytest.fixture
def bridge(
    crm: Crm, settings: Settings, redis_conn: redis.Redis, tmp_path: Path
) -> Iterator[tuple[Runtime, int]]:
    """A runtime on the fixture database pointed at the CRM's sandbox, with
    the tenant connected and its CRM setup run."""
    with build_runtime(settings, redis_conn, **crm.overrides) as rt:
        (rt.settings.mappings_dir / "acme.yaml").write_text(crm.mapping, encoding="utf-8")
        credentials, account_id, tenant_settings = crm.connect()
        tenant_id = admin.create_tenant(
            rt,
            slug="acme",
            crm_kind=crm.kind,
            mapping="acme.yaml",
            credentials=credentials,
            account_id=account_id,
            settings=tenant_settings,
        )
        admin.setup_crm(rt, tenant_id)
        yield rt, tenant_id


def state(crm: Crm) -> Any:
    """The account's records (not the sandbox's clock and rate-limit meters)."""
    answer = requests.get(f"{crm.url}/_state", params=crm.state_params, timeout=30)
    answer.raise_for_status()
    return answer.json()["accounts"]


def dry_run(rt: Runtime, tenant_id: int, text: str) -> dict[str, Any]:
    make_user(rt, f"admin{len(text)}@acme.test", role="admin", tenant_id=tenant_id)
    client = console_app(rt).test_client()
    assert login(client, f"admin{len(text)}@acme.test").status_code == 302
    token = csrf_token(client, f"/console/mapping?tenant={tenant_id}")
    answer = client.post(
        f"/console/mapping/dry-run?tenant={tenant_id}",
        json={
            "text": text,
            "channel": "telegram",
            "sender": "Anna Smith",
            "sample_text": "Hello, I need a delivery tomorrow",
        },
        headers={"X-CSRFToken": token, "Accept": "application/json"},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body: dict[str, Any] = answer.get_json()
    return body


def results(body: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(c["kind"], c["value"]): c for c in body["checks"]}


def test_a_good_mapping_checks_out_and_shows_the_sample(
    crm: Crm, bridge: tuple[Runtime, int]
) -> None:
    rt, tenant_id = bridge
    before = state(crm)
    body = dry_run(rt, tenant_id, crm.mapping)
    assert state(crm) == before  # nothing written
    assert body["problems"] == [] and body["error"] is None
    checks = results(body)
    assert {c["ok"] for c in checks.values()} == {True}, body["checks"]
    kinds = {kind for kind, _ in checks}
    assert kinds == {"pipeline", "stage", "owner", "field"}
    assert checks[("stage", crm.stage)]["name"]
    assert checks[("owner", crm.owner)]["name"]
    assert body["ok"] is True
    preview = body["preview"]
    assert preview["contact"]["name"] == "Anna Smith"
    entity = preview["entity"]
    assert entity["name"] == "Telegram: Anna Smith"
    for key, value in crm.entity.items():
        assert entity[key] == value
    assert entity["owner"].startswith(checks[("owner", crm.owner)]["name"])
    assert entity["bridge_first_words"] == "Hello, I need a delivery tomorrow"
    assert preview["task"]["subject"].endswith("Anna Smith")
    assert "Hello, I need a delivery tomorrow" in preview["note"]
    assert "Anna Smith" in preview["note"]


def test_a_missing_stage_and_owner_are_named(crm: Crm, bridge: tuple[Runtime, int]) -> None:
    rt, tenant_id = bridge
    text = re.sub(r"(?m)^(    stage: ).*$", r'\1"99999"', crm.mapping)
    text = text.replace(f'owner_id: "{crm.owner}"', 'owner_id: "88888"')
    before = state(crm)
    body = dry_run(rt, tenant_id, text)
    assert state(crm) == before
    assert body["problems"] == [] or all(not p["blocking"] for p in body["problems"])
    missing = {key for key, c in results(body).items() if c["ok"] is False}
    assert missing == {("stage", "99999"), ("owner", "88888")}
    stage = results(body)[("stage", "99999")]
    assert stage["keys"] == ["channels.telegram.stage"]
    assert stage["line"] == text.splitlines().index('    stage: "99999"') + 1
    assert body["ok"] is False
    assert body["preview"]["entity"]["stage"] == "99999"  # as written: the CRM has no name
