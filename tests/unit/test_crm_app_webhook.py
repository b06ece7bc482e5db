# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""``POST /webhooks/crm/<crm>/app``: one URL for every account of a CRM app
whose webhooks name the account in the body (HubSpot's CRM-object webhooks:
``contact.merge`` of every portal to the app's one target URL, FACTS 3.6).

Two HubSpot tenants (two portals) whose bridge clients carry the same CRM
contact ids, the way two businesses' CRMs number their records alike: a
signed array mixing both portals' merges (and a portal not connected here)
merges each tenant's clients by its own events only. A forged or stale
signature is a 403 with nothing stored; a CRM without app webhooks is a 404.
Last, the HubSpot sandbox holding two portals' merges and sending them in
one signed POST to the bridge's app URL over real HTTP. SQLite and
PostgreSQL (the ``settings`` fixture).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bridge import admin, create_app
from bridge.runtime import Runtime
from bridge.tables import Contact, ContactMerge
from sandbox.hubspot.app import create_app as hubspot_sandbox_app
from tests.support.harness import (
    HUBSPOT_MAPPING,
    PORTAL_A,
    PORTAL_B,
    body,
    build_runtime,
    hubspot_app,
    hubspot_signed,
    reply_payload,
    write_mapping,
)
from tests.support.servers import serve_wsgi

APP_PATH = "/webhooks/crm/hubspot/app"
UNKNOWN_PORTAL = 99_999_999
#: CRM contact ids every tenant has (each in its own portal)
IDS = ("101", "102", "103")
_event_ids = itertools.count(1)


@dataclass
class World:
    rt: Runtime
    client: FlaskClient
    #: tenant id -> CRM contact id -> bridge contact id
    tenants: dict[int, dict[str, int]]
    a: int
    b: int

    def post(self, events: Any, *, path: str = APP_PATH, **sign: Any) -> Any:
        raw = body(events)
        headers = hubspot_signed(f"{self.rt.settings.public_url}{path}", raw, **sign)
        return self.client.post(path, data=raw, headers=headers)

    def merged(self) -> dict[int, dict[str, str | None]]:
        """tenant id -> CRM id -> the CRM id of the client it was merged into."""
        with self.rt.transaction() as s:
            rows = {c.id: c for c in s.scalars(select(Contact))}
            return {
                tenant: {crm: _crm(rows, rows[cid].merged_into_id) for crm, cid in contacts.items()}
                for tenant, contacts in self.tenants.items()
            }

    def merges(self) -> int:
        with self.rt.transaction() as s:
            return int(s.scalar(select(func.count()).select_from(ContactMerge)) or 0)


def _crm(rows: dict[int, Contact], contact_id: int | None) -> str | None:
    return None if contact_id is None else rows[contact_id].crm_contact_id


def _tenant(rt: Runtime, slug: str, portal: int) -> tuple[int, dict[str, int]]:
    tenant_id = admin.create_tenant(
        rt,
        slug=slug,
        crm_kind="hubspot",
        mapping="hub.yaml",
        account_id=str(portal),
        credentials={"type": "private_app", "access_token": "pat-na1-unused"},
    )
    with rt.transaction() as s:
        contacts = {
            crm: Contact(tenant_id=tenant_id, crm_contact_id=crm, crm_state="synced") for crm in IDS
        }
        s.add_all(contacts.values())
        s.flush()
        return tenant_id, {crm: c.id for crm, c in contacts.items()}


@contextmanager
def world_at(settings: Any, redis_conn: Any, **overrides: Any) -> Iterator[World]:
    """Two HubSpot tenants (portals A and B), each with clients on ``IDS``."""
    with build_runtime(settings, redis_conn, apps={"hubspot": hubspot_app()}, **overrides) as rt:
        write_mapping(rt, "hub.yaml", HUBSPOT_MAPPING)
        a, a_contacts = _tenant(rt, "acme", PORTAL_A)
        b, b_contacts = _tenant(rt, "globex", PORTAL_B)
        client = create_app(runtime=rt).test_client()
        yield World(rt, client, {a: a_contacts, b: b_contacts}, a, b)


@pytest.fixture
def world(settings, redis_conn) -> Iterator[World]:  # type: ignore[no-untyped-def]
    with world_at(settings, redis_conn) as w:
        yield w


def merge_event(portal: int, gone: str, keep: str) -> dict[str, Any]:
    """A ``contact.merge`` event as HubSpot sends it (FACTS 3.6 delivery
    fields; the merge fields of the changelog, as sandbox/hubspot/merge.py)."""
    return {
        "eventId": next(_event_ids),
        "subscriptionId": 4242001,
        "portalId": portal,
        "appId": 424242,
        "occurredAt": int(time.time() * 1000),
        "subscriptionType": "contact.merge",
        "attemptNumber": 0,
        "objectId": int(keep),
        "changeSource": "CRM_UI",
        "primaryObjectId": int(keep),
        "mergedObjectIds": [int(gone)],
        "newObjectId": int(keep),
        "numberOfPropertiesMoved": 1,
    }


NONE_MERGED = {"101": None, "102": None, "103": None}


def test_one_post_for_two_portals_merges_each_tenants_clients_by_its_own_events(
    world: World,
) -> None:
    events = [
        merge_event(PORTAL_A, gone="102", keep="101"),
        merge_event(PORTAL_B, gone="103", keep="101"),
        merge_event(UNKNOWN_PORTAL, gone="101", keep="103"),  # no tenant here: skipped
    ]
    response = world.post(events)
    assert response.status_code == 200, response.get_json()
    expected = {
        world.a: {"101": None, "102": "101", "103": None},
        world.b: {"101": None, "102": None, "103": "101"},
    }
    assert world.merged() == expected
    assert world.merges() == 2
    again = world.post(events)  # HubSpot's retry of the same batch changes nothing
    assert again.status_code == 200
    assert world.merged() == expected and world.merges() == 2


def test_only_an_unknown_portal_is_acknowledged_and_changes_nothing(world: World) -> None:
    response = world.post([merge_event(UNKNOWN_PORTAL, gone="102", keep="101")])
    assert response.status_code == 200
    assert world.merged() == {world.a: NONE_MERGED, world.b: NONE_MERGED}


@pytest.mark.parametrize(
    "sign",
    [
        {"secret": "not-the-client-secret"},
        {"now_ms": int(time.time() * 1000) - 301_000},  # outside HubSpot's 300 s window
        {"path": "/webhooks/crm/hubspot/some-tenant-key"},  # signed for another URL
    ],
    ids=["forged", "stale", "other-url"],
)
def test_a_bad_signature_is_refused_and_nothing_is_stored(world: World, sign: Any) -> None:
    events = [merge_event(PORTAL_A, "102", "101"), merge_event(PORTAL_B, "103", "101")]
    raw = body(events)
    sign = dict(sign)  # the parameter is shared by both databases' runs
    url = world.rt.settings.public_url + sign.pop("path", APP_PATH)
    response = world.client.post(APP_PATH, data=raw, headers=hubspot_signed(url, raw, **sign))
    assert response.status_code == 403
    assert set(response.get_json()) == {"error", "message"}
    assert world.merged() == {world.a: NONE_MERGED, world.b: NONE_MERGED}
    assert world.merges() == 0


def test_one_portals_bad_event_does_not_lose_the_others(world: World) -> None:
    bad = reply_payload(portal_id=PORTAL_B, thread_uid="t", message_id="x")
    bad["message"]["id"] = None  # a reply without an id: the adapter's PayloadError
    response = world.post([merge_event(PORTAL_A, "102", "101"), bad])
    assert response.status_code == 200
    assert world.merged() == {world.a: {**NONE_MERGED, "102": "101"}, world.b: NONE_MERGED}
    only_bad = world.post([bad])
    assert only_bad.status_code == 400 and only_bad.get_json()["error"] == "invalid_payload"


def test_a_body_that_is_not_json_is_a_400(world: World) -> None:
    raw = b"not json"
    headers = hubspot_signed(f"{world.rt.settings.public_url}{APP_PATH}", raw)
    response = world.client.post(APP_PATH, data=raw, headers=headers)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_payload"


def test_a_crm_without_app_webhooks_is_a_404(world: World) -> None:
    for crm in ("amocrm", "bitrix24", "no-such-crm"):
        response = world.client.post(f"/webhooks/crm/{crm}/app", data=b"{}", headers={})
        assert response.status_code == 404, crm
        assert response.get_json()["error"] == "not_found"


# -- the HubSpot sandbox sending to the app URL ----------------------------------------


class _Late:
    """A WSGI app set after the server started (its URL is the bridge's
    public URL, which the runtime needs first)."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


def _sandbox_contact(sandbox: Any, token: str) -> str:
    response = sandbox.post(
        "/crm/v3/objects/contacts",
        json={"properties": {"firstname": f"Ann {next(_event_ids)}"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["id"])


def test_the_sandbox_sends_every_portals_merges_in_one_signed_post(  # type: ignore[no-untyped-def]
    settings, redis_conn
) -> None:
    from sandbox.hubspot.config import DEFAULTS

    late = _Late()
    with serve_wsgi(late) as served, world_at(settings, redis_conn, public_url=served.url) as w:
        late.app = w.client.application
        sandbox = hubspot_sandbox_app(
            {"crm_webhook_url": f"{served.url}{APP_PATH}", "crm_webhook_hold": True}
        ).test_client()
        tokens = {p["id"]: p["private_app_token"] for p in DEFAULTS["portals"]}
        ids = {}
        for portal, tenant in ((PORTAL_A, w.a), (PORTAL_B, w.b)):
            keep, gone = (_sandbox_contact(sandbox, tokens[portal]) for _ in range(2))
            ids[tenant] = (keep, gone)
            with w.rt.transaction() as s:  # the bridge's two clients behind them
                for crm in (keep, gone):
                    s.add(Contact(tenant_id=tenant, crm_contact_id=crm, crm_state="synced"))
            merged = sandbox.post(
                "/_merge", json={"account": str(portal), "primary_id": keep, "merged_id": gone}
            )
            assert merged.status_code == 200 and merged.get_json()["webhook"]["held"] >= 1
        flushed = sandbox.post("/_crm_webhooks/flush").get_json()
        assert flushed["events"] == 2
        (delivery,) = flushed["deliveries"]  # one POST for both portals
        assert delivery["status"] == 200, delivery
        for tenant, (keep, gone) in ids.items():
            with w.rt.transaction() as s:
                rows = {
                    c.crm_contact_id: c for c in s.scalars(select(Contact)) if c.tenant_id == tenant
                }
                assert rows[gone].merged_into_id == rows[keep].id
                assert rows[keep].merged_into_id is None
        assert sandbox.post("/_crm_webhooks/flush").get_json() == {"events": 0, "deliveries": []}
