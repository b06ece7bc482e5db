"""The cascade API (``/api/v1``, ``bridge.api``) on real SQLite/PostgreSQL
and Redis: a tenant's token and nothing else opens it (another tenant's
cascade is not found), bad input is a 4xx JSON naming what is wrong, an
unknown CRM contact is a 404, a retried POST with the same key returns the
same cascade (202 both times), and a batch answers with each contact's
cascade and the contacts the bridge does not know."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask.testing import FlaskClient

from bridge import admin, apitokens, create_app
from bridge.model import utcnow
from bridge.runtime import Runtime
from tests.unit.test_cascade import World, make_world

PATH = "/api/v1/contacts/{}/messages"


@pytest.fixture
def api(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> tuple[World, FlaskClient, str]:
    world = make_world(runtime, monkeypatch)
    client = world.contact("crm-1")
    world.conversation(client, "telegram", last_inbound=utcnow() - dt.timedelta(hours=1))
    token = apitokens.issue(runtime, world.tenant_id, "tests")
    return world, create_app(runtime=runtime).test_client(), token


def _post(http: FlaskClient, token: str | None, path: str, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post(path, json=body, headers=headers)


BODY = {"text": "Your order is ready", "channels": ["whatsapp", "telegram"], "key": "order-1"}


def test_only_the_tenants_token_opens_the_api(
    api: tuple[World, FlaskClient, str], runtime: Runtime
) -> None:
    world, http, token = api
    for given in (None, "brt_wrong", token[:-1]):
        answer = _post(http, given, PATH.format("crm-1"), BODY)
        assert answer.status_code == 401 and answer.json["error"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    created = _post(http, token, PATH.format("crm-1"), BODY)
    assert created.status_code == 202
    # another tenant's token sees nothing of this tenant
    other = admin.create_tenant(runtime, slug="other", crm_kind="fake", mapping="fake.yaml")
    theirs = apitokens.issue(runtime, other)
    seen = http.get(
        f"/api/v1/cascades/{created.json['id']}", headers={"Authorization": f"Bearer {theirs}"}
    )
    assert seen.status_code == 404 and seen.json["error"] == "unknown_cascade"
    assert _post(http, theirs, PATH.format("crm-1"), BODY).status_code == 404
    # a revoked token stops working
    assert apitokens.revoke(runtime, world.tenant_id, token)
    assert _post(http, token, PATH.format("crm-1"), BODY).status_code == 401


BAD = [
    ([], "invalid_body"),
    ({**BODY, "text": ""}, "invalid_text"),
    ({**BODY, "channels": []}, "invalid_channels"),
    ({**BODY, "channels": ["pigeon"]}, "invalid_channels"),
    ({**BODY, "channels": ["telegram", "telegram"]}, "invalid_channels"),
    ({**BODY, "wait_minutes": 0}, "invalid_wait_minutes"),
    ({**BODY, "wait_minutes": "30"}, "invalid_wait_minutes"),
    ({k: v for k, v in BODY.items() if k != "key"}, "invalid_key"),
    ({**BODY, "priority": "high"}, "unknown_field"),
]


def test_bad_input_is_a_400_saying_what_is_wrong(api: tuple[World, FlaskClient, str]) -> None:
    _, http, token = api
    for body, error in BAD:
        answer = _post(http, token, PATH.format("crm-1"), body)
        assert (answer.status_code, answer.json["error"]) == (400, error), body
        assert answer.json["message"]


def test_not_json_and_unknown_contacts(api: tuple[World, FlaskClient, str]) -> None:
    _, http, token = api
    auth = {"Authorization": f"Bearer {token}"}
    plain = http.post(PATH.format("crm-1"), data="text", headers=auth, content_type="text/plain")
    assert plain.status_code == 415
    broken = http.post(
        PATH.format("crm-1"), data="{", headers=auth, content_type="application/json"
    )
    assert (broken.status_code, broken.json["error"]) == (400, "invalid_json")
    unknown = _post(http, token, PATH.format("crm-404"), BODY)
    assert (unknown.status_code, unknown.json["error"]) == (404, "unknown_contact")
    assert _post(http, token, PATH.format("x" * 65), BODY).status_code == 404


def test_a_retried_post_returns_the_same_cascade_and_a_reused_key_conflicts(
    api: tuple[World, FlaskClient, str],
) -> None:
    _, http, token = api
    first = _post(http, token, PATH.format("crm-1"), BODY)
    again = _post(http, token, PATH.format("crm-1"), BODY)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json["id"] == again.json["id"]
    assert (first.json["created"], again.json["created"]) == (True, False)
    assert first.headers["Location"] == f"/api/v1/cascades/{first.json['id']}"
    assert [(s["channel"], s["state"]) for s in first.json["steps"]] == [
        ("whatsapp", "skipped"),  # no conversation there
        ("telegram", "sending"),
    ]
    conflict = _post(http, token, PATH.format("crm-1"), {**BODY, "text": "Something else"})
    assert (conflict.status_code, conflict.json["error"]) == (409, "key_reused")
    state = http.get(first.headers["Location"], headers={"Authorization": f"Bearer {token}"})
    assert state.status_code == 200 and state.json["state"] == "running"


def test_a_batch_names_each_contacts_cascade_and_the_unknown_ones(
    api: tuple[World, FlaskClient, str],
) -> None:
    _, http, token = api
    body = {**BODY, "key": "promo", "contacts": ["crm-1", "crm-404"]}
    answer = _post(http, token, "/api/v1/messages/cascade", body)
    assert answer.status_code == 202
    assert [c["contact"] for c in answer.json["cascades"]] == ["crm-1"]
    assert answer.json["unknown_contacts"] == ["crm-404"]
    listed = http.get(answer.headers["Location"], headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200
    assert [c["id"] for c in listed.json["cascades"]] == [answer.json["cascades"][0]["id"]]
    missing = _post(http, token, "/api/v1/messages/cascade", BODY)  # no contacts
    assert (missing.status_code, missing.json["error"]) == (400, "invalid_contacts")
