# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""HubSpot's deal and ticket events: a stage moved (closed or open), an
owner changed, a record deleted, as the app's CRM-object webhooks report
them, parsed by ``HubSpotAdapter.parse_webhook`` (``webhooks._record_event``).

Payloads follow FACTS.md 3.6's delivery shape (``[{"eventId",
"subscriptionId", "portalId", "appId", "occurredAt", "subscriptionType",
"attemptNumber", "objectId", "changeFlag"?, "changeSource", "sourceId"?,
"propertyName"?, "propertyValue"?}]``); the stage properties (``dealstage``,
``hs_pipeline_stage``) from FACTS 3.3, ``hubspot_owner_id`` and the
pipelines' stage metadata (``isClosed``, ``ticketState``) from FACTS 3.5;
the generic ``object.*`` subscriptions' ``objectTypeId`` from HubSpot's
changelog "Public Beta: Generic Webhook Subscriptions". HTTP is mocked at
one seam (``responses``) and every request and faked 2xx body is checked
against HubSpot's OpenAPI specs, as in ``test_hubspot_adapter``.

Last, end to end: a client writes on Telegram, the bridge opens the deal in
the HubSpot sandbox, and the deal moved, given to another owner and closed
there comes back through the app's webhook URL and closes the bridge's
conversation; a deleted deal closes another. SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses

from bridge import admin, create_app
from bridge.errors import SignatureError
from bridge.model import CrmEvent, CrmEventKind, CrmRef
from bridge.pipeline.inbound import accept, run_inbound
from bridge.tables import Conversation
from crm_adapters.hubspot import HubSpotAdapter
from tests.support.harness import (
    HUBSPOT_MAPPING,
    PORTAL_A,
    PRIVATE_TOKEN_A,
    build_runtime,
    hubspot_app,
    hubspot_sandbox,
    serve,
    write_mapping,
)
from tests.unit.test_hubspot_adapter import API, PORTAL, error, make_adapter, signed
from tests.unit.test_pipeline import conversation_id, msg

DEALS = f"{API}/crm/v3/pipelines/deals"
TICKETS = f"{API}/crm/v3/pipelines/tickets"
AT = 1_740_832_245_123  # 2025-03-01T12:30:45.123Z
_ids = itertools.count(5001)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def spec_check(rsps: responses.RequestsMock) -> Iterator[None]:
    """After each test with the adapter: every request valid per HubSpot's
    OpenAPI specs, every faked 2xx body valid per the response schema."""
    yield
    from sandbox.hubspot import openapi

    for call in rsps.calls:
        request = call.request
        body = request.body.encode() if isinstance(request.body, str) else request.body
        openapi.validate_request(
            request.method, request.url, body, request.headers.get("Content-Type")
        )
        response = call.response
        if isinstance(response, requests.Response) and 200 <= response.status_code < 300:
            openapi.validate_response(
                request.method, request.url, response.status_code, response.content
            )


@pytest.fixture
def adapter(spec_check: None) -> HubSpotAdapter:
    return make_adapter()[0]


def event(subscription: str, object_id: int = 900, **fields: Any) -> dict[str, Any]:
    """One CRM-object event as HubSpot delivers it (FACTS 3.6)."""
    return {
        "eventId": next(_ids),
        "subscriptionId": 4242002,
        "portalId": int(PORTAL),
        "appId": 777,
        "occurredAt": AT,
        "subscriptionType": subscription,
        "attemptNumber": 0,
        "objectId": object_id,
        "changeSource": "CRM_UI",
        **fields,
    }


def change(kind: str, prop: str, value: Any, object_id: int = 900, **fields: Any) -> dict[str, Any]:
    return event(
        f"{kind}.propertyChange", object_id, propertyName=prop, propertyValue=value, **fields
    )


def parse(adapter: HubSpotAdapter, *events: dict[str, Any]) -> list[CrmEvent]:
    return adapter.parse_webhook(signed(json.dumps(list(events)).encode()))


def stage(stage_id: str, order: int, **meta: str) -> dict[str, Any]:
    stamp = "2025-01-01T00:00:00.000Z"
    return {
        "id": stage_id,
        "label": stage_id,
        "displayOrder": order,
        "metadata": meta,
        "archived": False,
        "createdAt": stamp,
        "updatedAt": stamp,
    }


def pipeline(pipeline_id: str, *stages: dict[str, Any]) -> dict[str, Any]:
    stamp = "2025-01-01T00:00:00.000Z"
    return {
        "id": pipeline_id,
        "label": pipeline_id,
        "displayOrder": 0,
        "stages": list(stages),
        "archived": False,
        "createdAt": stamp,
        "updatedAt": stamp,
    }


#: the default sales pipeline and a custom one whose stages have numeric ids
DEAL_PIPELINES = {
    "results": [
        pipeline(
            "default",
            stage("appointmentscheduled", 0, isClosed="false", probability="0.2"),
            stage("closedwon", 5, isClosed="true", probability="1.0"),
            stage("closedlost", 6, isClosed="true", probability="0.0"),
        ),
        pipeline(
            "88001",
            stage("88101", 0, isClosed="false", probability="0.1"),
            stage("88199", 1, isClosed="true", probability="1.0"),
        ),
    ]
}
TICKET_PIPELINES = {
    "results": [
        pipeline(
            "0",
            stage("1", 0, ticketState="OPEN"),
            stage("2", 1, ticketState="OPEN"),
            stage("4", 3, ticketState="CLOSED"),
        )
    ]
}
WHEN = dt.datetime.fromtimestamp(AT / 1000, dt.UTC)


def pipeline_reads(rsps: responses.RequestsMock) -> list[str]:
    return [c.request.url for c in rsps.calls if "/pipelines/" in c.request.url]


# -- deals -----------------------------------------------------------------------------


def test_a_deal_moved_to_a_closed_stage_is_closed(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.get(DEALS, json=DEAL_PIPELINES)
    raw = change("deal", "dealstage", "closedwon")
    (closed,) = parse(adapter, raw)
    assert closed.kind is CrmEventKind.ENTITY_CLOSED
    assert closed.entity == CrmRef("deal", "900")
    assert closed.external_id == f"deal.propertyChange:dealstage:900:{raw['eventId']}"
    assert closed.occurred_at == WHEN and closed.stage is None
    assert closed.raw == raw


def test_a_custom_pipelines_closed_stage_is_known_by_its_metadata(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.get(DEALS, json=DEAL_PIPELINES)
    closed, open_ = parse(
        adapter,
        change("deal", "dealstage", "88199", object_id=901),
        change("deal", "dealstage", "88101", object_id=902),
    )
    assert (closed.kind, closed.entity) == (CrmEventKind.ENTITY_CLOSED, CrmRef("deal", "901"))
    assert (open_.kind, open_.stage) == (CrmEventKind.ENTITY_STAGE, "88101")
    assert open_.entity == CrmRef("deal", "902")
    assert pipeline_reads(rsps) == [DEALS]  # one read for the whole delivery


def test_a_deal_moved_to_an_open_stage_names_the_stage(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.get(DEALS, json=DEAL_PIPELINES)
    (moved,) = parse(adapter, change("deal", "dealstage", "appointmentscheduled"))
    assert moved.kind is CrmEventKind.ENTITY_STAGE
    assert (moved.entity, moved.stage) == (CrmRef("deal", "900"), "appointmentscheduled")


def test_a_stage_no_pipeline_names_falls_back_to_the_default_closed_ids(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    """The pipelines as read lack the stage (a pipeline added since): the
    default pipeline's closed ids still close, any other stage is open."""
    rsps.get(DEALS, json={"results": [pipeline("88001", stage("88101", 0, isClosed="false"))]})
    lost, other = parse(
        adapter,
        change("deal", "dealstage", "closedlost"),
        change("deal", "dealstage", "77777"),
    )
    assert lost.kind is CrmEventKind.ENTITY_CLOSED
    assert (other.kind, other.stage) == (CrmEventKind.ENTITY_STAGE, "77777")


def test_pipelines_that_cannot_be_read_fall_back_once_and_log_no_data(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    rsps.get(DEALS, status=403, json=error("This app lacks a scope", "MISSING_SCOPES"))
    with caplog.at_level(logging.WARNING, logger="crm_adapters.hubspot.adapter"):
        won, custom = parse(
            adapter,
            change("deal", "dealstage", "closedwon"),
            change("deal", "dealstage", "88199"),
        )
    assert won.kind is CrmEventKind.ENTITY_CLOSED
    assert (custom.kind, custom.stage) == (CrmEventKind.ENTITY_STAGE, "88199")
    assert pipeline_reads(rsps) == [DEALS]  # not tried again for the second event
    (record,) = caplog.records
    assert "deal pipelines not read" in record.getMessage()
    assert "88199" not in record.getMessage() and "900" not in record.getMessage()


def test_an_owner_change_names_the_new_owner_and_reads_nothing(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    raw = change("deal", "hubspot_owner_id", "70000002")
    (owner,) = parse(adapter, raw)
    assert owner.kind is CrmEventKind.OWNER_CHANGED
    assert (owner.entity, owner.owner_id) == (CrmRef("deal", "900"), "70000002")
    assert owner.external_id == f"deal.propertyChange:hubspot_owner_id:900:{raw['eventId']}"
    assert not rsps.calls


def test_a_deleted_deal_is_closed(adapter: HubSpotAdapter, rsps: responses.RequestsMock) -> None:
    raw = event("deal.deletion", 903, changeFlag="DELETED")
    (gone,) = parse(adapter, raw)
    assert gone.kind is CrmEventKind.ENTITY_CLOSED
    assert gone.entity == CrmRef("deal", "903")
    assert gone.external_id == f"deal.deletion:903:{raw['eventId']}"
    assert not rsps.calls


# -- tickets ---------------------------------------------------------------------------


def test_ticket_stages_are_told_by_the_ticket_pipelines(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.get(TICKETS, json=TICKET_PIPELINES)
    closed, waiting, owner, deleted = parse(
        adapter,
        change("ticket", "hs_pipeline_stage", "4", object_id=31),
        change("ticket", "hs_pipeline_stage", "2", object_id=32),
        change("ticket", "hubspot_owner_id", 70000003, object_id=33),
        event("ticket.deletion", 34),
    )
    assert (closed.kind, closed.entity) == (CrmEventKind.ENTITY_CLOSED, CrmRef("ticket", "31"))
    assert (waiting.kind, waiting.stage) == (CrmEventKind.ENTITY_STAGE, "2")
    assert (owner.kind, owner.owner_id) == (CrmEventKind.OWNER_CHANGED, "70000003")
    assert (deleted.kind, deleted.entity) == (CrmEventKind.ENTITY_CLOSED, CrmRef("ticket", "34"))
    assert pipeline_reads(rsps) == [TICKETS]


def test_a_ticket_stage_without_pipelines_is_open(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    """No default closed ticket stage is documented: without the pipelines a
    ticket's stage change is a move, not a close."""
    rsps.get(TICKETS, status=403, json=error("This app lacks a scope", "MISSING_SCOPES"))
    (moved,) = parse(adapter, change("ticket", "hs_pipeline_stage", "4"))
    assert (moved.kind, moved.stage) == (CrmEventKind.ENTITY_STAGE, "4")


# -- the generic object.* subscriptions ------------------------------------------------


def test_generic_object_events_of_deals_and_tickets_are_read_alike(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.get(DEALS, json=DEAL_PIPELINES)
    won, gone, contact = parse(
        adapter,
        change("object", "dealstage", "closedwon", objectTypeId="0-3"),
        event("object.deletion", 35, objectTypeId="0-5"),
        change("object", "hubspot_owner_id", "70000001", objectTypeId="0-1"),
    )
    assert (won.kind, won.entity) == (CrmEventKind.ENTITY_CLOSED, CrmRef("deal", "900"))
    assert (gone.kind, gone.entity) == (CrmEventKind.ENTITY_CLOSED, CrmRef("ticket", "35"))
    assert contact.kind is CrmEventKind.UNKNOWN  # a contact's owner: not a deal's


# -- what is not followed ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        change("deal", "amount", "100"),
        change("deal", "dealstage", ""),
        change("deal", "hubspot_owner_id", None),
        change("contact", "hubspot_owner_id", "70000001"),
        change("ticket", "dealstage", "closedwon"),
        event("deal.creation"),
        event("deal.restore"),
        {k: v for k, v in event("deal.deletion").items() if k != "objectId"},
    ],
    ids=[
        "other-property",
        "stage-cleared",
        "owner-cleared",
        "contact",
        "ticket-with-deal-property",
        "creation",
        "restore",
        "no-object-id",
    ],
)
def test_other_record_events_are_unknown_and_read_nothing(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock, raw: dict[str, Any]
) -> None:
    (unknown,) = parse(adapter, raw)
    assert unknown.kind is CrmEventKind.UNKNOWN
    assert unknown.external_id == f"unknown:{raw['eventId']}"
    assert not rsps.calls


# -- ids, retries, portals ----------------------------------------------------------------


def test_a_retry_of_an_event_has_its_id_and_another_record_another(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    first = change("deal", "hubspot_owner_id", "70000002")
    retry = {**first, "attemptNumber": 1, "occurredAt": AT}
    # eventId "is not guaranteed to be unique" (HubSpot's webhooks guide)
    same_id = {**first, "objectId": 904}
    ids = [e.external_id for e in parse(adapter, first, retry, same_id)]
    assert ids[0] == ids[1] and ids[2] != ids[0]


def test_an_event_without_an_id_is_keyed_by_its_content(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    raw = {k: v for k, v in event("deal.deletion").items() if k != "eventId"}
    first, again = parse(adapter, raw, raw)
    other, _ = parse(adapter, {**raw, "occurredAt": AT + 1}, raw)
    assert first.kind is CrmEventKind.ENTITY_CLOSED
    assert first.external_id == again.external_id != other.external_id


def test_another_portals_event_is_refused(adapter: HubSpotAdapter) -> None:
    with pytest.raises(SignatureError):
        parse(adapter, {**event("deal.deletion"), "portalId": 1})


def test_an_app_delivery_mixing_merges_and_deals_splits_and_parses(
    adapter: HubSpotAdapter, rsps: responses.RequestsMock
) -> None:
    rsps.get(DEALS, json=DEAL_PIPELINES)
    merge = event(
        "contact.merge",
        501,
        primaryObjectId=501,
        mergedObjectIds=[502],
        newObjectId=501,
        numberOfPropertiesMoved=0,
    )
    other_portal = {**change("deal", "dealstage", "closedwon"), "portalId": 99}
    delivery = signed(
        json.dumps([merge, change("deal", "dealstage", "closedlost"), other_portal]).encode(),
        url="https://bridge.example/webhooks/crm/hubspot/app",
    )
    parts = HubSpotAdapter.app_webhook(adapter.app, delivery)
    assert set(parts) == {PORTAL, "99"}
    merged, lost = adapter.parse_webhook(parts[PORTAL])
    assert merged.kind is CrmEventKind.CONTACT_MERGED
    assert (lost.kind, lost.entity) == (CrmEventKind.ENTITY_CLOSED, CrmRef("deal", "900"))


# -- end to end: the HubSpot sandbox and the bridge ------------------------------------------

APP_PATH = "/webhooks/crm/hubspot/app"


class _Late:
    """A WSGI app set once the runtime (which needs the server's URL) exists."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


def _conversation(rt: Any, conversation: int) -> Conversation:
    with rt.transaction() as s:
        row = s.get(Conversation, conversation)
        assert row is not None
        s.expunge(row)
        return row


def test_a_deal_closed_in_hubspot_closes_the_bridges_conversation(  # type: ignore[no-untyped-def]
    settings, redis_conn
) -> None:
    late = _Late()
    with (
        hubspot_sandbox() as (hs_url, _),
        serve(late) as bridge_url,
        build_runtime(
            settings,
            redis_conn,
            public_url=bridge_url,
            apps={"hubspot": hubspot_app(hs_url)},
            api_bases={"hubspot": hs_url},
        ) as rt,
    ):
        write_mapping(rt, "hub.yaml", HUBSPOT_MAPPING)
        tenant = admin.create_tenant(
            rt,
            slug="acme",
            crm_kind="hubspot",
            mapping="hub.yaml",
            account_id=str(PORTAL_A),
            credentials={"type": "private_app", "access_token": PRIVATE_TOKEN_A},
        )
        account = admin.add_channel_account(
            rt,
            tenant,
            kind="telegram",
            credentials={"bot_token": "1:x", "secret_token": "s"},
            external_id="1",
        )
        admin.setup_crm(rt, tenant)
        late.app = create_app(runtime=rt)
        # the developer portal's webhook settings: the app's one URL (the
        # sandbox's default subscriptions are the ones docs/crms/hubspot.md lists)
        configured = requests.post(
            f"{hs_url}/_config", json={"crm_webhook_url": f"{bridge_url}{APP_PATH}"}, timeout=10
        )
        assert configured.status_code == 200
        accept(rt, account, [msg(1, user=7), msg(2, user=8)])
        first, second = (conversation_id(rt, account, thread) for thread in ("7", "8"))
        for conversation in (first, second):
            run_inbound(rt, conversation)
        deal = _conversation(rt, first).crm_entity_id
        other = _conversation(rt, second).crm_entity_id
        assert deal and other and deal != other

        def edit(deal_id: str, **props: str) -> None:
            answer = requests.patch(
                f"{hs_url}/crm/v3/objects/deals/{deal_id}",
                json={"properties": props},
                headers={"Authorization": f"Bearer {PRIVATE_TOKEN_A}"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text

        edit(deal, dealstage="qualifiedtobuy")  # an open stage: still open
        assert _conversation(rt, first).status == "open"
        moved = requests.post(
            f"{hs_url}/_edit",
            json={"id": deal, "properties": {"hubspot_owner_id": "70000002"}},
            timeout=30,
        )
        assert moved.json()["webhook"]["status"] == 200
        assert _conversation(rt, first).owner_id == "70000002"
        edit(deal, dealstage="closedwon")
        assert _conversation(rt, first).status == "closed"
        assert _conversation(rt, second).status == "open"
        deleted = requests.post(f"{hs_url}/_delete", json={"id": other}, timeout=30)
        assert deleted.json()["webhook"]["status"] == 200
        assert _conversation(rt, second).status == "closed"
        deliveries = requests.get(f"{hs_url}/_state", timeout=10).json()["webhook_deliveries"]
        assert [d["result"]["status"] for d in deliveries] == [200] * 4
