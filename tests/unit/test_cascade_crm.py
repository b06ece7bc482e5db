# ruff: noqa: S105, S106  (test secrets)
"""CRM-triggered cascades: a CRM automation's webhook posted to the
tenant's ``/webhooks/crm/<crm>/<key>/cascade`` with the message in the URL's
query, the contact read from the CRM's body by its adapter
(``CrmAdapter.cascade_contact``).

Bodies, with their sources: amoCRM's webhook format (FACTS 1.12, form in
PHP bracket notation; that a digital pipeline's webhook uses it is
UNCONFIRMED), Bitrix24's outgoing webhook (contracts/bitrix24/docs/
local-integrations/local-webhooks.md, "What the Handler Receives"), and a
HubSpot contact workflow's "Send a webhook" record (UNCONFIRMED: the record
id as ``objectId``, or a legacy workflow's ``vid``)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from bridge import admin, create_app
from bridge.errors import PayloadError, SignatureError
from bridge.model import WebhookRequest, utcnow
from bridge.runtime import Runtime
from bridge.tables import Tenant
from crm_adapters.amocrm import cascade as amo
from crm_adapters.bitrix24 import cascade as b24
from crm_adapters.hubspot import cascade as hubspot
from tests.unit.test_cascade import World, make_world


def _request(body: bytes, content_type: str) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://bridge.test/webhooks/crm/x/k/cascade",
        headers={"content-type": content_type},
        body=body,
    )


def test_a_hubspot_workflow_names_its_enrolled_contact() -> None:
    body = json.dumps({"objectId": 4242, "properties": {"firstname": "Ann"}}).encode()
    contact, event = hubspot.cascade_contact(_request(body, "application/json"))
    assert contact == "4242" and event.startswith("hubspot:")
    # the same delivery again (HubSpot retries for up to three days): the same call
    assert hubspot.cascade_contact(_request(body, "application/json"))[1] == event
    legacy = json.dumps({"vid": 77, "properties": {}}).encode()
    assert hubspot.cascade_contact(_request(legacy, "application/json"))[0] == "77"
    for bad in (
        {"objectId": 5, "objectType": "DEAL"},
        {"objectId": 5, "objectTypeId": "0-3"},
        {"properties": {}},
        [],
    ):
        with pytest.raises(PayloadError):
            hubspot.cascade_contact(_request(json.dumps(bad).encode(), "application/json"))


def test_an_amocrm_pipeline_names_the_leads_main_contact() -> None:
    lead = {"leads[status][0][id]": "301", "leads[status][0][status_id]": "142"}
    asked: list[str] = []

    def contacts_of(lead_id: str) -> list[Any]:
        asked.append(lead_id)
        return [{"id": 11, "is_main": False}, {"id": 12, "is_main": True}]

    from crm_adapters.amocrm.webhooks import decode_brackets

    body = urlencode({**lead, "account[id]": "9"}).encode()
    payload = decode_brackets(body)
    contact, event = amo.cascade_contact(payload, body, contacts_of)
    assert (contact, asked) == ("12", ["301"])
    assert event.startswith("amocrm:")
    direct = urlencode({"contacts[add][0][id]": "55", "contacts[add][0][type]": "contact"}).encode()
    assert amo.cascade_contact(decode_brackets(direct), direct, contacts_of)[0] == "55"
    company = urlencode(
        {"contacts[add][0][id]": "56", "contacts[add][0][type]": "company"}
    ).encode()
    with pytest.raises(PayloadError):
        amo.cascade_contact(decode_brackets(company), company, contacts_of)
    with pytest.raises(PayloadError):  # a lead without contacts
        amo.cascade_contact(payload, body, lambda _lead: [])


def test_a_bitrix24_outgoing_webhook_names_its_contact_from_this_portal() -> None:
    from crm_adapters.bitrix24.webhooks import decode_brackets

    event = {
        "event": "ONCRMCONTACTADD",
        "data[FIELDS][ID]": "662",
        "ts": "1724140800",
        "auth[domain]": "example.bitrix24.com",
        "auth[member_id]": "m1",
        "auth[application_token]": "t" * 32,
    }
    payload = decode_brackets(urlencode(event).encode())
    contact, key = b24.cascade_contact(payload, "m1")
    assert (contact, key) == ("662", "bitrix24:ONCRMCONTACTADD:662")
    # a later update of the same contact (the bridge's own write of its live
    # field, a rep's edit) is the same call: one message per automation key
    later = decode_brackets(urlencode({**event, "ts": "1724140899"}).encode())
    assert b24.cascade_contact(later, "m1")[1] == key
    with pytest.raises(SignatureError):
        b24.cascade_contact(payload, "another-portal")
    deal = decode_brackets(urlencode({**event, "event": "ONCRMDEALUPDATE"}).encode())
    with pytest.raises(PayloadError):
        b24.cascade_contact(deal, "m1")


# -- the route, with the real HubSpot adapter (its body needs no HubSpot call) ----------


@pytest.fixture
def hubspot_tenant(runtime: Runtime) -> tuple[World, str, Any]:
    (runtime.settings.mappings_dir / "hs.yaml").write_text(
        "crm: hubspot\nlanguage: en\nchannels:\n  telegram: {object: none, timeline: note}\n"
    )
    tenant_id = admin.create_tenant(
        runtime,
        slug="hs",
        crm_kind="hubspot",
        mapping="hs.yaml",
        credentials={"type": "private_app", "access_token": "pat-x"},
        account_id="1",
    )
    hs = World(runtime, tenant_id)
    hs.accounts["telegram"] = admin.add_channel_account(
        runtime,
        tenant_id,
        kind="telegram",
        credentials={"bot_token": "1:x", "secret_token": "s"},
        external_id="3",
    )
    client = hs.contact("4242")
    hs.conversation(client, "telegram", last_inbound=utcnow() - dt.timedelta(hours=1))
    with runtime.read_session() as session:
        key = session.scalar(select(Tenant.webhook_key).where(Tenant.id == tenant_id))
    assert key is not None
    return hs, f"/webhooks/crm/hubspot/{key}/cascade", create_app(runtime=runtime).test_client()


def test_a_crm_workflow_starts_one_cascade_per_call(
    hubspot_tenant: tuple[World, str, FlaskClient],
) -> None:
    _, path, http = hubspot_tenant
    query = "?text=Your%20order%20is%20ready&channels=whatsapp,telegram&wait_minutes=15&key=ready"
    body = {"objectId": 4242, "properties": {"firstname": "Ann"}}
    first = http.post(path + query, json=body)
    assert first.status_code == 202, first.json
    assert [(s["channel"], s["state"]) for s in first.json["steps"]] == [
        ("whatsapp", "skipped"),
        ("telegram", "sending"),
    ]
    assert first.json["wait_minutes"] == 15 and first.json["created"] is True
    again = http.post(path + query, json=body)  # the workflow's retry
    assert (again.status_code, again.json["id"], again.json["created"]) == (
        202,
        first.json["id"],
        False,
    )
    unknown = http.post(path + query, json={"objectId": 999})
    assert unknown.status_code == 200 and unknown.json["started"] is False
    no_text = http.post(path + "?channels=telegram", json=body)
    assert (no_text.status_code, no_text.json["error"]) == (400, "invalid_text")
    deal = http.post(path + query, json={"objectId": 5, "objectType": "DEAL"})
    assert deal.status_code == 400
    wrong_key = http.post("/webhooks/crm/hubspot/" + "k" * 32 + "/cascade" + query, json=body)
    assert wrong_key.status_code == 404


def test_a_crm_without_a_trigger_says_so(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(runtime, monkeypatch)  # the fake CRM has no cascade trigger
    with runtime.read_session() as session:
        key = session.scalar(select(Tenant.webhook_key).where(Tenant.id == world.tenant_id))
    http = create_app(runtime=runtime).test_client()
    answer = http.post(f"/webhooks/crm/fake/{key}/cascade?text=Hi&channels=telegram", json={})
    assert (answer.status_code, answer.json["error"]) == (404, "no_cascade_trigger")


def test_the_amocrm_adapter_reads_the_leads_contact_from_its_account_only() -> None:
    import responses

    from tests.unit.test_amocrm_adapter import ACCOUNT_ID, API, SUB, form_request, make_adapter

    adapter, _ = make_adapter()
    account = {"account[subdomain]": SUB, "account[id]": ACCOUNT_ID}
    with responses.RequestsMock() as rsps:
        rsps.get(
            f"{API}/api/v4/leads/301?with=contacts",
            json={"id": 301, "_embedded": {"contacts": [{"id": 8, "is_main": True}]}},
        )
        contact, _ = adapter.cascade_contact(
            form_request({"leads[status][0][id]": "301", **account})
        )
    assert contact == "8"
    with pytest.raises(SignatureError):  # another account's pipeline
        adapter.cascade_contact(form_request({"leads[status][0][id]": "301", "account[id]": "999"}))
