"""Sandbox HubSpot: behaviour against the vendor contract.

Fixtures and expectations come from /work/shared/contracts/FACTS.md (section 3)
and the vendored specs in sandbox/hubspot/spec/ (Apache-2.0 via WSO2, see its
MANIFEST.json). Every response the `call` helper sees is validated strictly
against the OpenAPI spec of its path (paths the specs do not cover pass).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask, jsonify, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

from sandbox.hubspot import create_app
from sandbox.hubspot.openapi import validate_request, validate_response
from sandbox.hubspot.signature import sign_v1, sign_v2, sign_v3, verify_v3

SPEC = Path(__file__).resolve().parents[2] / "sandbox" / "hubspot" / "spec"
# HubSpot's official signature vectors (HubSpot/hubspot-api-python tests, via
# contracts MANIFEST).
VECTORS = json.loads((SPEC / "signature_test_vectors.json").read_text())

P1, P2 = 62515, 62516
PAT1 = "pat-na1-11111111-1111-4111-8111-111111111111"
PAT2 = "pat-na1-22222222-2222-4222-8222-222222222222"
CLIENT_ID = "0c3a8f2e-5b1d-4c8e-9a7f-2d6e4b1a9c30"
CLIENT_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"  # noqa: S105 - demo default
DEV_KEY = "eu1-d3v0-k3y0-4a1b-9c2d-5e6f7a8b9c0d"
APP_ID = 424242


# -- helpers ------------------------------------------------------------------------------


def make(**config: Any) -> Any:
    return create_app(config or None).test_client()


@pytest.fixture
def client() -> Any:
    return make()


def call(client: Any, method: str, path: str, token: str | None = PAT1, *,
         body: Any = None, headers: dict[str, str] | None = None, validate: bool = True) -> Any:
    """One API call; the answer is validated strictly against the spec.

    429s are exempt: HubSpot's real 429 body (FACTS 3.2) has no `category`,
    which the spec's generic Error requires.
    """
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    resp = client.open(path, method=method, headers=hdrs,
                       **({"json": body} if body is not None else {}))
    if validate and resp.status_code != 429:
        validate_response(method, "https://api.hubapi.com" + path, resp.status_code,
                          resp.get_data())
    return resp


def oauth_token(client: Any, portal_id: int = P1) -> dict[str, Any]:
    code = client.post("/_install", json={"client_id": CLIENT_ID, "portal_id": portal_id,
                                          "redirect_uri": "https://bridge.test/cb"}).get_json()
    resp = client.post("/oauth/v1/token", data={
        "grant_type": "authorization_code", "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "redirect_uri": "https://bridge.test/cb",
        "code": code["code"]})
    assert resp.status_code == 200, resp.get_json()
    tokens: dict[str, Any] = resp.get_json()
    return tokens


def contact(client: Any, token: str = PAT1, **props: str) -> dict[str, Any]:
    resp = call(client, "POST", "/crm/v3/objects/contacts", token,
                body={"properties": props})
    assert resp.status_code == 201, resp.get_json()
    data: dict[str, Any] = resp.get_json()
    return data


def error_entries(resp: Any) -> list[dict[str, Any]]:
    """The JSON list embedded in "Property values were not valid: [...]"."""
    message = resp.get_json()["message"]
    prefix = "Property values were not valid: "
    assert message.startswith(prefix), message
    entries: list[dict[str, Any]] = json.loads(message[len(prefix):])
    return entries


# -- openapi module -----------------------------------------------------------------------


def test_validate_request_matches_hubspot_part_of_any_url() -> None:
    url = "http://127.0.0.1:5000/sandbox/hubspot/crm/v3/objects/notes/batch/create"
    validate_request("POST", url, b'{"inputs":[{"properties":{"hs_note_body":"x"}}]}')
    with pytest.raises(ValueError, match=r"inputs\[0\]\.properties\.hs_note_body"):
        validate_request("POST", url, b'{"inputs":[{"properties":{"hs_note_body":5}}]}')


def test_validate_request_shapes_and_types() -> None:
    with pytest.raises(ValueError, match="'properties' is a required property"):
        validate_request("POST", "/crm/v3/objects/contacts", b"{}")
    with pytest.raises(ValueError, match="EQQ"):
        validate_request("POST", "/crm/v3/objects/0-1/search", json.dumps(
            {"filterGroups": [{"filters": [{"propertyName": "x", "operator": "EQQ"}]}]}).encode())
    with pytest.raises(ValueError, match="not an integer"):
        validate_request("GET", "/crm/v3/objects/contacts?limit=ten", None)
    with pytest.raises(ValueError, match="Invalid input JSON"):
        validate_request("POST", "/crm/v3/objects/deals", b"{nope")
    with pytest.raises(ValueError, match="associationTypeId"):
        validate_request("PUT", "/crm/v4/objects/contacts/1/associations/deals/2",
                         b'[{"associationCategory":"HUBSPOT_DEFINED"}]')


def test_validate_request_does_not_enforce_unreliable_required_lists() -> None:
    # Later upstream specs require `associations` on create and every search
    # field; the real API does not (contracts/README.md). The communications
    # spec we ship already lists `associations` as required.
    validate_request("POST", "/crm/v3/objects/communications", b'{"properties":{}}')
    validate_request("POST", "/crm/v3/objects/contacts/search", b"{}")
    # batch/read: spec requires properties + propertiesWithHistory; we do not.
    validate_request("POST", "/crm/v3/objects/contacts/batch/read", b'{"inputs":[{"id":"1"}]}')
    # HubSpot's search guide sends object sorts although the spec says string[].
    validate_request("POST", "/crm/v3/objects/contacts/search",
                     b'{"sorts":[{"propertyName":"createdate","direction":"DESCENDING"}]}')


def test_validate_request_ignores_paths_outside_the_specs() -> None:
    validate_request("POST", "/crm/v3/properties/contacts", b"not json at all")
    validate_request("POST", "/conversations/v3/custom-channels", b"[]")
    validate_request("POST", "/oauth/v1/token", b"grant_type=x",
                     "application/x-www-form-urlencoded")


def test_validate_response_is_strict() -> None:
    good = {"id": "1", "properties": {"email": None}, "createdAt": "2024-01-01T00:00:00.000Z",
            "updatedAt": "2024-01-01T00:00:00.000Z", "archived": False}
    validate_response("GET", "/crm/v3/objects/contacts/1", 200, json.dumps(good))
    for broken in ({**good, "id": 1}, {k: v for k, v in good.items() if k != "updatedAt"},
                   {**good, "createdAt": "yesterday"}):
        with pytest.raises(ValueError):
            validate_response("GET", "/crm/v3/objects/contacts/1", 200, json.dumps(broken))
    with pytest.raises(ValueError, match="no body"):
        validate_response("DELETE", "/crm/v3/objects/contacts/1", 204, b"{}")


# -- auth and tenancy ---------------------------------------------------------------------


def test_missing_and_unknown_tokens_get_401(client: Any) -> None:
    for token in (None, "pat-na1-00000000-0000-0000-0000-000000000000"):
        resp = call(client, "GET", "/crm/v3/objects/contacts", token)
        assert resp.status_code == 401
        body = resp.get_json()
        assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
        assert body["message"].startswith("Authentication credentials not found")


def test_expired_oauth_token_gets_401() -> None:
    c = make(access_token_ttl=0)
    tokens = oauth_token(c)
    resp = call(c, "GET", "/crm/v3/objects/contacts", tokens["access_token"])
    assert resp.status_code == 401
    body = resp.get_json()
    assert body["category"] == "EXPIRED_AUTHENTICATION"
    assert "expired" in body["message"] and "expire time" in body["context"]


def test_portal_isolation_is_exact(client: Any) -> None:
    mine = contact(client, PAT1, email="iso@example.com")
    for method, body in (("GET", None), ("PATCH", {"properties": {"firstname": "X"}})):
        resp = call(client, method, f"/crm/v3/objects/contacts/{mine['id']}", PAT2, body=body)
        assert resp.status_code == 404
    found = call(client, "POST", "/crm/v3/objects/contacts/search", PAT2, body={
        "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ",
                                       "value": "iso@example.com"}]}]}).get_json()
    assert found["total"] == 0
    # The other portal may reuse the email: uniqueness is per portal.
    other = contact(client, PAT2, email="iso@example.com")
    assert other["id"] != mine["id"]
    call(client, "DELETE", f"/crm/v3/objects/contacts/{mine['id']}", PAT2)
    assert call(client, "GET", f"/crm/v3/objects/contacts/{mine['id']}").status_code == 200
    # An OAuth token is bound to the portal it was installed in.
    t2 = oauth_token(client, P2)["access_token"]
    assert call(client, "GET", f"/crm/v3/objects/contacts/{mine['id']}", t2).status_code == 404
    assert call(client, "GET", f"/crm/v3/objects/contacts/{other['id']}", t2).status_code == 200


# -- OAuth --------------------------------------------------------------------------------


def test_consent_page_grants_a_code_that_exchanges_once(client: Any) -> None:
    page = client.get("/oauth/authorize", query_string={
        "client_id": CLIENT_ID, "redirect_uri": "https://bridge.test/cb",
        "scope": "crm.objects.contacts.write conversations.read", "state": "s-1"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f"value='{P1}'" in html and f"value='{P2}'" in html  # portal chooser
    assert "conversations.read" in html
    resp = client.post("/oauth/authorize", data={
        "client_id": CLIENT_ID, "redirect_uri": "https://bridge.test/cb",
        "scope": "crm.objects.contacts.write", "state": "s-1", "portal_id": str(P2),
        "decision": "grant"})
    assert resp.status_code == 302
    location = urlsplit(resp.headers["Location"])
    assert location.netloc == "bridge.test" and location.path == "/cb"
    query = parse_qs(location.query)
    assert query["state"] == ["s-1"]
    form = {"grant_type": "authorization_code", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "redirect_uri": "https://bridge.test/cb",
            "code": query["code"][0]}
    tokens = client.post("/oauth/v1/token", data=form).get_json()
    for key in ("access_token", "refresh_token", "expires_in", "token_type", "token_use"):
        assert key in tokens
    assert tokens["hub_id"] == P2 and tokens["expires_in"] == 1800
    assert tokens["scopes"] == ["crm.objects.contacts.write"]
    again = client.post("/oauth/v1/token", data=form)
    assert again.status_code == 400
    assert again.get_json()["status"] == "BAD_AUTH_CODE"
    info = client.get(f"/oauth/v1/access-tokens/{tokens['access_token']}").get_json()
    assert info["hub_id"] == P2 and info["app_id"] == APP_ID
    assert info["scopes"] == ["crm.objects.contacts.write"] and 0 < info["expires_in"] <= 1800
    assert info["token_type"] == "access" and "@" in info["user"]  # noqa: S105
    details = call(client, "GET", "/account-info/v3/details", tokens["access_token"]).get_json()
    assert details["portalId"] == P2 and details["timeZone"] == "America/New_York"


def test_refresh_and_bad_grants(client: Any) -> None:
    tokens = oauth_token(client)
    form = {"grant_type": "refresh_token", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "refresh_token": tokens["refresh_token"]}
    fresh = client.post("/oauth/v1/token", data=form).get_json()
    assert fresh["access_token"] != tokens["access_token"]
    assert fresh["refresh_token"] == tokens["refresh_token"]  # rotate_refresh_tokens=False
    assert fresh["hub_id"] == P1
    assert call(client, "GET", "/crm/v3/objects/contacts", fresh["access_token"]).status_code \
        == 200
    bad = client.post("/oauth/v1/token", data={**form, "refresh_token": "na1-nope"})
    assert bad.status_code == 400
    body = bad.get_json()
    assert body["status"] == "BAD_REFRESH_TOKEN"
    assert body["message"] == "missing or unknown refresh token"
    assert body["error"] == "invalid_grant" and body["correlationId"]
    wrong_secret = client.post("/oauth/v1/token", data={**form, "client_secret": "nope"})
    assert wrong_secret.status_code == 400
    as_json = client.post("/oauth/v1/token", json=form)
    assert as_json.status_code == 400  # the endpoint is form-encoded only


def test_refresh_token_rotation_switch() -> None:
    c = make(rotate_refresh_tokens=True)
    tokens = oauth_token(c)
    form = {"grant_type": "refresh_token", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "refresh_token": tokens["refresh_token"]}
    fresh = c.post("/oauth/v1/token", data=form).get_json()
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert c.post("/oauth/v1/token", data=form).get_json()["status"] == "BAD_REFRESH_TOKEN"


def test_expired_code_is_refused() -> None:
    c = make(code_ttl=0)
    code = c.post("/_install", json={"client_id": CLIENT_ID, "redirect_uri": "https://x.test/cb"})
    resp = c.post("/oauth/v1/token", data={
        "grant_type": "authorization_code", "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "redirect_uri": "https://x.test/cb",
        "code": code.get_json()["code"]})
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"


# -- CRM objects --------------------------------------------------------------------------


def test_create_get_patch_archive_contact(client: Any) -> None:
    created = contact(client, email="Ann@Example.com", firstname="Ann", phone="+44 20 7946 0018")
    assert created["properties"]["email"] == "ann@example.com"
    assert created["properties"]["hs_object_id"] == created["id"]
    cid = created["id"]
    got = call(client, "GET", f"/crm/v3/objects/contacts/{cid}?properties=email,lastname,nope")
    assert got.get_json()["properties"] == {"email": "ann@example.com", "lastname": None}
    by_email = call(client, "GET", "/crm/v3/objects/contacts/ann@example.com?idProperty=email")
    assert by_email.get_json()["id"] == cid
    patched = call(client, "PATCH", f"/crm/v3/objects/0-1/{cid}",
                   body={"properties": {"lastname": "Lee"}})
    assert patched.status_code == 200 and patched.get_json()["properties"]["lastname"] == "Lee"
    assert call(client, "DELETE", f"/crm/v3/objects/contacts/{cid}").status_code == 204
    assert call(client, "GET", f"/crm/v3/objects/contacts/{cid}").status_code == 404
    archived = call(client, "GET", f"/crm/v3/objects/contacts/{cid}?archived=true").get_json()
    assert archived["archived"] is True and "archivedAt" in archived
    # The archived contact's email is free again.
    assert contact(client, email="ann@example.com")["id"] != cid


def test_duplicate_email_conflict_names_the_existing_id(client: Any) -> None:
    first = contact(client, email="dup@example.com")
    resp = call(client, "POST", "/crm/v3/objects/contacts",
                body={"properties": {"email": "DUP@example.com"}})
    assert resp.status_code == 409
    body = resp.get_json()
    assert body == {"status": "error", "message": f"Contact already exists. Existing ID: "
                    f"{first['id']}", "correlationId": body["correlationId"],
                    "category": "CONFLICT"}


def test_property_errors_mirror_hubspot(client: Any) -> None:
    resp = call(client, "POST", "/crm/v3/objects/contacts", body={"properties": {
        "email": "p@example.com", "favourite_colour": "blue", "hubspot_owner_id": "12345",
        "hs_object_id": "7"}})
    assert resp.status_code == 400 and resp.get_json()["category"] == "VALIDATION_ERROR"
    codes = {e["name"]: e["error"] for e in error_entries(resp)}
    assert codes == {"favourite_colour": "PROPERTY_DOESNT_EXIST",
                     "hubspot_owner_id": "INVALID_OPTION", "hs_object_id": "READ_ONLY_VALUE"}
    bad_email = call(client, "POST", "/crm/v3/objects/contacts",
                     body={"properties": {"email": "not-an-email"}})
    assert error_entries(bad_email)[0]["error"] == "INVALID_EMAIL"
    nothing = call(client, "POST", "/crm/v3/objects/contacts", body={"properties": {}})
    assert nothing.status_code == 400  # one of email/firstname/lastname (FACTS 3.3)
    wrong_type = call(client, "POST", "/crm/v3/objects/contacts",
                      body={"properties": {"email": "t@example.com", "firstname": 5}})
    assert wrong_type.status_code == 400 and "firstname" in wrong_type.get_json()["message"]
    unknown_type = call(client, "POST", "/crm/v3/objects/widgets",
                        body={"properties": {"a": "b"}})
    assert unknown_type.status_code == 400
    assert "Unable to infer object type from: widgets" in unknown_type.get_json()["message"]


def test_deal_pipeline_stage_and_owner_are_checked(client: Any) -> None:
    owners = call(client, "GET", "/crm/v3/owners/").get_json()["results"]
    good = {"dealname": "D", "pipeline": "default", "dealstage": "qualifiedtobuy",
            "amount": "100", "hubspot_owner_id": owners[0]["id"], "closedate": "1700000000000"}
    deal = call(client, "POST", "/crm/v3/objects/deals", body={"properties": good})
    assert deal.status_code == 201
    # Datetimes written as epoch ms come back as ISO 8601.
    assert deal.get_json()["properties"]["closedate"] == "2023-11-14T22:13:20.000Z"
    for field, value in (("pipeline", "nope"), ("dealstage", "1"), ("amount", "lots")):
        resp = call(client, "POST", "/crm/v3/objects/deals",
                    body={"properties": {**good, field: value}})
        assert resp.status_code == 400, field
        assert error_entries(resp)[0]["name"] == field
    other_owner = call(client, "GET", "/crm/v3/owners/", PAT2).get_json()["results"][0]["id"]
    resp = call(client, "POST", "/crm/v3/objects/deals",
                body={"properties": {**good, "hubspot_owner_id": other_owner}})
    assert error_entries(resp)[0]["error"] == "INVALID_OPTION"
    ticket = call(client, "POST", "/crm/v3/objects/tickets", body={"properties": {
        "subject": "Help", "hs_pipeline": "0", "hs_pipeline_stage": "closedwon"}})
    assert ticket.status_code == 400


def test_required_properties_and_the_unconfirmed_switch() -> None:
    strict = make()
    comm = {"hs_communication_channel_type": "WHATS_APP", "hs_communication_logged_from": "CRM",
            "hs_communication_body": "hi", "hs_timestamp": "2024-05-01T10:00:00Z"}
    assert call(strict, "POST", "/crm/v3/objects/communications",
                body={"properties": comm}).status_code == 201
    bad_channel = call(strict, "POST", "/crm/v3/objects/communications",
                       body={"properties": {**comm, "hs_communication_channel_type": "EMAIL"}})
    assert error_entries(bad_channel)[0]["error"] == "INVALID_OPTION"
    lax = make(enforce_unconfirmed_required=False)
    no_logged_from = {k: v for k, v in comm.items() if k != "hs_communication_logged_from"}
    for c in (strict, lax):  # confirmed requirement: always enforced
        assert call(c, "POST", "/crm/v3/objects/communications",
                    body={"properties": no_logged_from}).status_code == 400
    assert call(strict, "POST", "/crm/v3/objects/deals",
                body={"properties": {"amount": "5"}}).status_code == 400
    assert call(lax, "POST", "/crm/v3/objects/deals",
                body={"properties": {"amount": "5"}}).status_code == 201
    note = {"hs_note_body": "n"}
    assert call(strict, "POST", "/crm/v3/objects/notes", body={"properties": note}).status_code \
        == 400
    assert call(lax, "POST", "/crm/v3/objects/notes", body={"properties": note}).status_code == 201


def test_inline_associations_use_the_facts_type_ids(client: Any) -> None:
    c = contact(client, email="assoc@example.com")
    note = call(client, "POST", "/crm/v3/objects/notes", body={
        "properties": {"hs_note_body": "hello", "hs_timestamp": "1714557600000"},
        "associations": [{"to": {"id": c["id"]}, "types": [
            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}]})
    assert note.status_code == 201
    seen = call(client, "GET", f"/crm/v4/objects/contacts/{c['id']}/associations/notes")
    assert seen.get_json()["results"] == [{"toObjectId": int(note.get_json()["id"]),
                                           "associationTypes": [{"category": "HUBSPOT_DEFINED",
                                                                 "typeId": 201, "label": None}]}]
    wrong = call(client, "POST", "/crm/v3/objects/notes", body={
        "properties": {"hs_note_body": "x", "hs_timestamp": "1714557600000"},
        "associations": [{"to": {"id": c["id"]}, "types": [
            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 81}]}]})
    assert wrong.status_code == 400
    missing = call(client, "POST", "/crm/v3/objects/notes", body={
        "properties": {"hs_note_body": "x", "hs_timestamp": "1714557600000"},
        "associations": [{"to": {"id": "999999"}, "types": [
            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}]})
    assert missing.status_code == 400


def test_list_paging(client: Any) -> None:
    ids = [contact(client, firstname=f"N{i}")["id"] for i in range(5)]
    page1 = call(client, "GET", "/crm/v3/objects/contacts?limit=2").get_json()
    assert [r["id"] for r in page1["results"]] == ids[:2]
    after = page1["paging"]["next"]["after"]
    page2 = call(client, "GET", f"/crm/v3/objects/contacts?limit=2&after={after}").get_json()
    assert [r["id"] for r in page2["results"]] == ids[2:4]
    last = call(client, "GET", f"/crm/v3/objects/contacts?limit=2&after="
                f"{page2['paging']['next']['after']}").get_json()
    assert [r["id"] for r in last["results"]] == ids[4:] and "paging" not in last


def _search(client: Any, type_name: str, body: dict[str, Any], token: str = PAT1) -> Any:
    return call(client, "POST", f"/crm/v3/objects/{type_name}/search", token, body=body)


def _f(prop: str, op: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    out = {"propertyName": prop, "operator": op, **extra}
    if value is not None:
        out["value"] = value
    return out


def test_search_operators_groups_sorts_and_paging() -> None:
    client = make(search_per_s=100)
    a = contact(client, email="a@alpha.com", firstname="Ann", phone="+49 151 2345678")
    b = contact(client, email="b@beta.com", firstname="Bob", lastname="Stone")
    c = contact(client, email="c@alpha.com", firstname="Cid", mobilephone="0044 20 7946 0018")

    def ids(body: dict[str, Any]) -> list[str]:
        resp = _search(client, "contacts", body)
        assert resp.status_code == 200, resp.get_json()
        data = resp.get_json()
        assert data["total"] >= len(data["results"])
        return [r["id"] for r in data["results"]]

    assert ids({"filterGroups": [{"filters": [_f("phone", "EQ", "+491512345678")]}]}) == [a["id"]]
    assert ids({"filterGroups": [{"filters": [_f("mobilephone", "EQ", "+442079460018")]}]}) \
        == [c["id"]]
    assert ids({"filterGroups": [{"filters": [
        _f("hs_searchable_calculated_phone_number", "EQ", "1512345678")]}]}) == [a["id"]]
    assert ids({"filterGroups": [{"filters": [_f("email", "EQ", "B@BETA.COM")]}]}) == [b["id"]]
    assert ids({"filterGroups": [{"filters": [_f("email", "NEQ", "b@beta.com")]}]}) \
        == [a["id"], c["id"]]
    assert ids({"filterGroups": [{"filters": [_f("firstname", "IN", values=["ann", "cid"])]}]}) \
        == [a["id"], c["id"]]
    assert ids({"filterGroups": [{"filters": [_f("firstname", "NOT_IN", values=["ann"])]}]}) \
        == [b["id"], c["id"]]
    assert ids({"filterGroups": [{"filters": [_f("lastname", "HAS_PROPERTY")]}]}) == [b["id"]]
    assert ids({"filterGroups": [{"filters": [_f("lastname", "NOT_HAS_PROPERTY")]}]}) \
        == [a["id"], c["id"]]
    assert ids({"filterGroups": [{"filters": [_f("email", "CONTAINS_TOKEN", "*@alpha.com")]}]}) \
        == [a["id"], c["id"]]
    # AND inside a group, OR between groups.
    assert ids({"filterGroups": [
        {"filters": [_f("email", "CONTAINS_TOKEN", "*@alpha.com"), _f("firstname", "EQ", "Cid")]},
        {"filters": [_f("firstname", "EQ", "Bob")]}]}) == [b["id"], c["id"]]
    assert ids({"sorts": [{"propertyName": "firstname", "direction": "DESCENDING"}]}) \
        == [c["id"], b["id"], a["id"]]
    assert ids({"sorts": ["-firstname"], "limit": 1}) == [c["id"]]
    page = _search(client, "contacts", {"limit": 2, "properties": ["firstname"]}).get_json()
    assert page["total"] == 3 and page["results"][0]["properties"] == {"firstname": "Ann"}
    rest = _search(client, "contacts", {"limit": 2, "after": page["paging"]["next"]["after"]})
    assert [r["id"] for r in rest.get_json()["results"]] == [c["id"]]
    assert ids({"query": "sto"}) == [b["id"]]
    assert _search(client, "contacts", {"limit": 201}).status_code == 400
    too_many = {"filterGroups": [{"filters": [_f("email", "HAS_PROPERTY")]}] * 6}
    assert _search(client, "contacts", too_many).status_code == 400


def test_search_numbers_and_dates_compare_as_values() -> None:
    client = make(search_per_s=100, enforce_unconfirmed_required=False)
    made = []
    for amount, close in (("9", "2024-01-01T00:00:00Z"), ("10", "2024-06-01T00:00:00Z"),
                          ("100", "2025-01-01T00:00:00Z")):
        made.append(call(client, "POST", "/crm/v3/objects/deals", body={
            "properties": {"dealname": amount, "amount": amount, "closedate": close}}).get_json())

    def names(filters: list[dict[str, Any]]) -> list[str]:
        body = {"filterGroups": [{"filters": filters}], "properties": ["dealname"]}
        return [r["properties"]["dealname"]
                for r in _search(client, "deals", body).get_json()["results"]]

    assert names([_f("amount", "GT", "9")]) == ["10", "100"]  # numeric, not lexical
    assert names([_f("amount", "LTE", "10")]) == ["9", "10"]
    assert names([_f("amount", "BETWEEN", "10", highValue="100")]) == ["10", "100"]
    assert names([_f("closedate", "GTE", "1717200000000")]) == ["10", "100"]  # ms vs ISO
    assert names([_f("closedate", "LT", "2024-03-01T00:00:00Z")]) == ["9"]


def test_search_index_lag_switch() -> None:
    client = make(search_index_lag_s=30)
    contact(client, email="lag@example.com")
    body = {"filterGroups": [{"filters": [_f("email", "EQ", "lag@example.com")]}]}
    assert _search(client, "contacts", body).get_json()["total"] == 0


def test_batch_create_read_update_archive(client: Any) -> None:
    created = call(client, "POST", "/crm/v3/objects/contacts/batch/create", body={"inputs": [
        {"properties": {"email": f"b{i}@example.com"}} for i in range(3)]})
    assert created.status_code == 201
    ids = [r["id"] for r in created.get_json()["results"]]
    read = call(client, "POST", "/crm/v3/objects/contacts/batch/read", body={
        "inputs": [{"id": i} for i in ids], "properties": ["email"]})
    assert read.status_code == 200
    assert [r["properties"]["email"] for r in read.get_json()["results"]] == \
        [f"b{i}@example.com" for i in range(3)]
    partial = call(client, "POST", "/crm/v3/objects/contacts/batch/read", body={
        "inputs": [{"id": ids[0]}, {"id": "424242424"}]})
    assert partial.status_code == 207
    assert partial.get_json()["errors"][0]["context"]["ids"] == ["424242424"]
    by_email = call(client, "POST", "/crm/v3/objects/contacts/batch/read", body={
        "inputs": [{"id": "b1@example.com"}], "idProperty": "email"})
    assert by_email.get_json()["results"][0]["id"] == ids[1]
    updated = call(client, "POST", "/crm/v3/objects/contacts/batch/update", body={
        "inputs": [{"id": i, "properties": {"lastname": "Batch"}} for i in ids]})
    assert updated.status_code == 200
    assert {r["properties"]["lastname"] for r in updated.get_json()["results"]} == {"Batch"}
    upsert = call(client, "POST", "/crm/v3/objects/contacts/batch/upsert", body={"inputs": [
        {"id": "b0@example.com", "idProperty": "email", "properties": {"firstname": "Zed"}},
        {"id": "new@example.com", "idProperty": "email", "properties": {"firstname": "New"}}]})
    assert upsert.status_code == 200
    assert [r["new"] for r in upsert.get_json()["results"]] == [False, True]
    assert call(client, "POST", "/crm/v3/objects/contacts/batch/archive",
                body={"inputs": [{"id": i} for i in ids]}).status_code == 204
    assert call(client, "GET", f"/crm/v3/objects/contacts/{ids[0]}").status_code == 404


def test_batch_limits_and_atomicity(client: Any) -> None:
    too_many = {"inputs": [{"properties": {"firstname": str(i)}} for i in range(101)]}
    resp = call(client, "POST", "/crm/v3/objects/contacts/batch/create", body=too_many)
    assert resp.status_code == 400 and resp.get_json()["category"] == "VALIDATION_ERROR"
    existing = contact(client, email="taken@example.com")
    conflict = call(client, "POST", "/crm/v3/objects/contacts/batch/create", body={"inputs": [
        {"properties": {"email": "fresh@example.com"}},
        {"properties": {"email": "taken@example.com"}}]})
    assert conflict.status_code == 409
    assert existing["id"] in conflict.get_json()["message"]
    # All or nothing: the valid input was not committed either.
    body = {"filterGroups": [{"filters": [_f("email", "EQ", "fresh@example.com")]}]}
    assert _search(client, "contacts", body).get_json()["total"] == 0
    twice = call(client, "POST", "/crm/v3/objects/contacts/batch/create", body={"inputs": [
        {"properties": {"email": "twice@example.com"}},
        {"properties": {"email": "Twice@example.com"}}]})
    assert twice.status_code == 400
    assert _search(client, "contacts", body).get_json()["total"] == 0


# -- properties API -----------------------------------------------------------------------


def test_properties_api(client: Any) -> None:
    listed = call(client, "GET", "/crm/v3/properties/contacts").get_json()["results"]
    assert {"email", "phone", "hubspot_owner_id", "lifecyclestage"} <= {p["name"] for p in listed}
    spec = {"name": "bridge_channel", "label": "Bridge channel", "type": "enumeration",
            "fieldType": "select", "groupName": "contactinformation",
            "options": [{"label": "Telegram", "value": "telegram"}]}
    created = call(client, "POST", "/crm/v3/properties/0-1", body=spec)
    assert created.status_code == 201 and created.get_json()["hubspotDefined"] is False
    dup = call(client, "POST", "/crm/v3/properties/contacts", body=spec)
    assert dup.status_code == 409
    got = call(client, "GET", "/crm/v3/properties/contacts/bridge_channel").get_json()
    assert got["options"][0]["value"] == "telegram"
    assert call(client, "GET", "/crm/v3/properties/contacts/none_such").status_code == 404
    no_group = call(client, "POST", "/crm/v3/properties/deals",
                    body={**spec, "groupName": "bridge"})
    assert no_group.status_code == 400
    group = call(client, "POST", "/crm/v3/properties/deals/groups",
                 body={"name": "bridge", "label": "Bridge"})
    assert group.status_code == 201
    assert "bridge" in {g["name"] for g in call(
        client, "GET", "/crm/v3/properties/deals/groups").get_json()["results"]}
    assert call(client, "POST", "/crm/v3/properties/deals",
                body={**spec, "groupName": "bridge"}).status_code == 201
    assert call(client, "POST", "/crm/v3/properties/deals", body={
        "name": "Bad Name", "label": "x", "type": "string", "fieldType": "text",
        "groupName": "bridge"}).status_code == 400
    # The new property is writable and its options enforced.
    assert contact(client, email="cp@example.com", bridge_channel="telegram")
    bad = call(client, "POST", "/crm/v3/objects/contacts",
               body={"properties": {"email": "cq@example.com", "bridge_channel": "fax"}})
    assert error_entries(bad)[0]["error"] == "INVALID_OPTION"
    # Other portals do not see it.
    assert call(client, "GET", "/crm/v3/properties/contacts/bridge_channel", PAT2).status_code \
        == 404


def test_unique_custom_property_supports_id_property(client: Any) -> None:
    call(client, "POST", "/crm/v3/properties/contacts", body={
        "name": "bridge_key", "label": "Key", "type": "string", "fieldType": "text",
        "groupName": "contactinformation", "hasUniqueValue": True})
    made = contact(client, firstname="K", bridge_key="tg:1")
    got = call(client, "GET", "/crm/v3/objects/contacts/tg:1?idProperty=bridge_key")
    assert got.get_json()["id"] == made["id"]
    dup = call(client, "POST", "/crm/v3/objects/contacts",
               body={"properties": {"firstname": "L", "bridge_key": "tg:1"}})
    assert dup.status_code == 409 and made["id"] in dup.get_json()["message"]


# -- associations v4 ----------------------------------------------------------------------


def test_associations_are_symmetric(client: Any) -> None:
    c = contact(client, email="sym@example.com")
    deal = call(client, "POST", "/crm/v3/objects/deals", body={"properties": {
        "dealname": "S", "pipeline": "default", "dealstage": "closedwon"}}).get_json()
    resp = call(client, "PUT", f"/crm/v4/objects/contacts/{c['id']}/associations/default/"
                f"deals/{deal['id']}")
    assert resp.status_code == 200
    specs = {(r["from"]["id"], r["associationSpec"]["associationTypeId"])
             for r in resp.get_json()["results"]}
    assert specs == {(c["id"], 4), (deal["id"], 3)}  # FACTS 3.4: deal->contact 3, reverse 4
    back = call(client, "GET", f"/crm/v4/objects/deals/{deal['id']}/associations/contacts")
    assert back.get_json()["results"][0]["associationTypes"][0]["typeId"] == 3
    inline = call(client, "GET", f"/crm/v3/objects/contacts/{c['id']}?associations=deals")
    assert inline.get_json()["associations"]["deals"]["results"][0]["id"] == deal["id"]
    assert call(client, "DELETE", f"/crm/v4/objects/deals/{deal['id']}/associations/contacts/"
                f"{c['id']}").status_code == 204
    assert call(client, "GET", f"/crm/v4/objects/contacts/{c['id']}/associations/deals") \
        .get_json()["results"] == []


def test_labelled_put_and_batches(client: Any) -> None:
    c = contact(client, email="lab@example.com")
    t = call(client, "POST", "/crm/v3/objects/tickets", body={"properties": {
        "subject": "T", "hs_pipeline": "0", "hs_pipeline_stage": "1"}}).get_json()
    ok = call(client, "PUT", f"/crm/v4/objects/tickets/{t['id']}/associations/contacts/{c['id']}",
              body=[{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 16}])
    assert ok.status_code == 201
    assert ok.get_json()["fromObjectTypeId"] == "0-5" and ok.get_json()["toObjectId"] == \
        int(c["id"])
    wrong = call(client, "PUT", f"/crm/v4/objects/tickets/{t['id']}/associations/contacts/"
                 f"{c['id']}", body=[{"associationCategory": "HUBSPOT_DEFINED",
                                      "associationTypeId": 15}])
    assert wrong.status_code == 400
    read = call(client, "POST", "/crm/v4/associations/contacts/tickets/batch/read",
                body={"inputs": [{"id": c["id"]}]})
    assert read.get_json()["results"][0]["to"][0]["associationTypes"][0]["typeId"] == 15
    t2 = call(client, "POST", "/crm/v3/objects/tickets", body={"properties": {
        "subject": "T2", "hs_pipeline": "0", "hs_pipeline_stage": "2"}}).get_json()
    made = call(client, "POST", "/crm/v4/associations/contacts/tickets/batch/create", body={
        "inputs": [{"from": {"id": c["id"]}, "to": {"id": t2["id"]},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED",
                               "associationTypeId": 15}]}]})
    assert made.status_code == 201
    listed = call(client, "GET", f"/crm/v4/objects/contacts/{c['id']}/associations/tickets")
    assert [r["toObjectId"] for r in listed.get_json()["results"]] == [int(t["id"]),
                                                                       int(t2["id"])]
    assert call(client, "POST", "/crm/v4/associations/contacts/tickets/batch/archive", body={
        "inputs": [{"from": {"id": c["id"]}, "to": [{"id": t["id"]}, {"id": t2["id"]}]}]}) \
        .status_code == 204
    assert call(client, "GET", f"/crm/v4/objects/tickets/{t['id']}/associations/contacts") \
        .get_json()["results"] == []
    other = contact(client, PAT2, email="x@example.com")
    cross = call(client, "PUT", f"/crm/v4/objects/contacts/{other['id']}/associations/default/"
                 f"tickets/{t['id']}")
    assert cross.status_code == 404


# -- owners and pipelines -----------------------------------------------------------------


def test_owners(client: Any) -> None:
    owners = call(client, "GET", "/crm/v3/owners/").get_json()["results"]
    assert len(owners) == 3 and all("@" in o["email"] for o in owners)
    page = call(client, "GET", "/crm/v3/owners?limit=2").get_json()
    assert len(page["results"]) == 2 and page["paging"]["next"]["after"] == "2"
    one = call(client, "GET", f"/crm/v3/owners/{owners[1]['id']}").get_json()
    assert one["email"] == owners[1]["email"]
    by_user = call(client, "GET", f"/crm/v3/owners/{owners[1]['userId']}?idProperty=userId")
    assert by_user.get_json()["id"] == owners[1]["id"]
    by_email = call(client, "GET", f"/crm/v3/owners/?email={owners[2]['email']}").get_json()
    assert [o["id"] for o in by_email["results"]] == [owners[2]["id"]]
    theirs = call(client, "GET", "/crm/v3/owners/", PAT2).get_json()["results"]
    assert call(client, "GET", f"/crm/v3/owners/{theirs[0]['id']}").status_code == 404


def test_pipelines(client: Any) -> None:
    deals = call(client, "GET", "/crm/v3/pipelines/deals").get_json()["results"]
    assert deals[0]["id"] == "default"
    stages = {s["id"]: s["metadata"] for s in deals[0]["stages"]}
    assert list(stages)[0] == "appointmentscheduled"
    assert stages["closedwon"] == {"isClosed": "true", "probability": "1.0"}
    assert stages["closedlost"]["probability"] == "0.0"
    tickets = call(client, "GET", "/crm/v3/pipelines/0-5").get_json()["results"]
    assert tickets[0]["id"] == "0"
    ticket_stages = call(client, "GET", "/crm/v3/pipelines/tickets/0/stages").get_json()
    assert [(s["id"], s["metadata"]["ticketState"]) for s in ticket_stages["results"]] == \
        [("1", "OPEN"), ("2", "OPEN"), ("3", "OPEN"), ("4", "CLOSED")]
    assert call(client, "GET", "/crm/v3/pipelines/deals/nope").status_code == 404


# -- custom channels ----------------------------------------------------------------------


def _channel(client: Any, webhook: str = "https://bridge.test/hooks/hubspot") -> dict[str, Any]:
    resp = client.post(f"/conversations/v3/custom-channels?hapikey={DEV_KEY}&appId={APP_ID}",
                       json={"name": "Telegram", "webhookUrl": webhook, "capabilities": {
                           "deliveryIdentifierTypes": ["CHANNEL_SPECIFIC_OPAQUE_ID"],
                           "threadingModel": "INTEGRATION_THREAD_ID",
                           "allowOutgoingMessages": True}})
    assert resp.status_code == 201, resp.get_json()
    data: dict[str, Any] = resp.get_json()
    return data


def _account(client: Any, token: str, channel_id: str) -> dict[str, Any]:
    inbox = call(client, "GET", "/conversations/v3/conversations/inboxes", token).get_json()
    resp = call(client, "POST", f"/conversations/v3/custom-channels/{channel_id}/channel-accounts",
                token, body={"inboxId": inbox["results"][0]["id"], "name": "Bot",
                             "authorized": True, "deliveryIdentifier": {
                                 "type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": "bot-1"}})
    assert resp.status_code == 201, resp.get_json()
    data: dict[str, Any] = resp.get_json()
    return data


def _egg(account_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"text": text, "attachments": [], "channelAccountId": account_id,
            "messageDirection": "INCOMING", "timestamp": "2024-05-01T10:00:00.000Z",
            "senders": [{"deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID",
                                                "value": "tg-user-7"}, "name": "Tina"}],
            "recipients": [{"deliveryIdentifier": {"type": "CHANNEL_SPECIFIC_OPAQUE_ID",
                                                   "value": "bot-1"}}], **extra}


def test_custom_channel_registration_needs_the_developer_key(client: Any) -> None:
    channel = _channel(client)
    assert channel["webhookUrl"] == "https://bridge.test/hooks/hubspot"
    bad = client.post(f"/conversations/v3/custom-channels?hapikey=nope&appId={APP_ID}",
                      json={"name": "x", "capabilities": {}})
    assert bad.status_code == 401
    no_name = client.post(f"/conversations/v3/custom-channels?hapikey={DEV_KEY}&appId={APP_ID}",
                          json={"capabilities": {}})
    assert no_name.status_code == 400
    patched = client.patch(f"/conversations/v3/custom-channels/{channel['id']}?hapikey={DEV_KEY}",
                           json={"webhookUrl": "https://bridge.test/v2"})
    assert patched.get_json()["webhookUrl"] == "https://bridge.test/v2"
    token = oauth_token(client)["access_token"]
    got = call(client, "GET", f"/conversations/v3/custom-channels/{channel['id']}", token)
    assert got.get_json()["webhookUrl"] == "https://bridge.test/v2"


def test_custom_channel_endpoints_refuse_private_app_tokens(client: Any) -> None:
    channel = _channel(client)
    resp = call(client, "POST", f"/conversations/v3/custom-channels/{channel['id']}/"
                "channel-accounts", PAT1, body={"inboxId": "1", "name": "x", "authorized": True})
    assert resp.status_code == 403 and resp.get_json()["status"] == "error"


def test_publish_threads_idempotency_and_status(client: Any) -> None:
    token = oauth_token(client)["access_token"]
    channel = _channel(client)
    account = _account(client, token, channel["id"])
    person = contact(client, token, firstname="Tina")
    base = f"/conversations/v3/custom-channels/{channel['id']}/messages"
    first = call(client, "POST", base, token, body=_egg(
        account["id"], "hello", integrationThreadId="conv-1", integrationIdempotencyId="m-1",
        associateWithContactId=person["id"]))
    assert first.status_code == 201
    msg = first.get_json()
    assert msg["direction"] == "INCOMING" and msg["channelAccountId"] == account["id"]
    assert msg["conversationsThreadId"] and msg["type"] == "MESSAGE"
    second = call(client, "POST", base, token, body=_egg(
        account["id"], "again", integrationThreadId="conv-1", integrationIdempotencyId="m-2"))
    assert second.get_json()["conversationsThreadId"] == msg["conversationsThreadId"]
    repeat = call(client, "POST", base, token, body=_egg(
        account["id"], "hello", integrationThreadId="conv-1", integrationIdempotencyId="m-1"))
    assert repeat.get_json()["id"] == msg["id"]
    other = call(client, "POST", base, token, body=_egg(account["id"], "x",
                                                       integrationThreadId="conv-2"))
    assert other.get_json()["conversationsThreadId"] != msg["conversationsThreadId"]
    state = client.get(f"/_state?account={P1}").get_json()["accounts"][0]
    thread = next(t for t in state["threads"] if t["id"] == msg["conversationsThreadId"])
    assert [m["text"] for m in thread["messages"]] == ["hello", "again"]
    assert thread["associatedContactId"] == person["id"]
    assert thread["messages"][0]["integrationIdempotencyId"] == "m-1"
    missing = _egg(account["id"], "x")
    del missing["senders"]
    assert call(client, "POST", base, token, body=missing).status_code == 400
    status = call(client, "PATCH", f"{base}/{msg['id']}", token,
                  body={"statusType": "FAILED", "errorMessage": "blocked by user"})
    assert status.status_code == 200
    got = call(client, "GET", f"{base}/{msg['id']}", token).get_json()
    assert got["status"]["statusType"] == "FAILED"
    assert call(client, "PATCH", f"{base}/{msg['id']}", token,
                body={"statusType": "DELIVERED"}).status_code == 400
    # Another portal's token does not see the message.
    t2 = oauth_token(client, P2)["access_token"]
    assert call(client, "GET", f"{base}/{msg['id']}", t2).status_code == 404


def test_idempotency_switch_off_creates_duplicates() -> None:
    client = make(idempotency_dedupe=False)
    token = oauth_token(client)["access_token"]
    channel = _channel(client)
    account = _account(client, token, channel["id"])
    base = f"/conversations/v3/custom-channels/{channel['id']}/messages"
    egg = _egg(account["id"], "hi", integrationThreadId="c", integrationIdempotencyId="same")
    a = call(client, "POST", base, token, body=egg).get_json()
    b = call(client, "POST", base, token, body=egg).get_json()
    assert a["id"] != b["id"]


def test_reply_without_a_thread_is_404(client: Any) -> None:
    person = contact(client, firstname="Nobody")
    resp = client.post("/_reply", json={"contact_id": person["id"], "text": "hi"})
    assert resp.status_code == 404 and resp.get_json()["error"] == "no_thread"
    assert client.post("/_reply", json={"contact_id": "1", "text": "hi"}).status_code == 404


# -- signatures ---------------------------------------------------------------------------


def test_signer_matches_hubspot_vectors() -> None:
    secret, body, url = VECTORS["client_secret"], VECTORS["request_body"], VECTORS["url"]
    for case in VECTORS["cases"]:
        if case["version"] == "v1":
            assert sign_v1(secret, body) == case["signature_hex"]
        elif case["version"] == "v2":
            assert sign_v2(secret, case["method"], url, case.get("request_body", body)) == \
                case["signature_hex"]
        else:
            got = sign_v3(secret, case["method"], url, body, case["timestamp"])
            assert got == case["signature_base64"]
            now = int(case["timestamp"])
            assert verify_v3(secret, "POST", url, body, got, case["timestamp"], now_ms=now)
            late = now + (VECTORS["timestamp_window_seconds"] + 1) * 1000
            assert not verify_v3(secret, "POST", url, body, got, case["timestamp"], now_ms=late)


@pytest.fixture
def servers() -> Iterator[dict[str, Any]]:
    """The sandbox mounted under /sandbox/hubspot and a webhook receiver, over HTTP."""
    sandbox_app = create_app()
    root = Flask("root")
    mounted = DispatcherMiddleware(root, {"/sandbox/hubspot": sandbox_app})
    received: list[dict[str, Any]] = []
    receiver = Flask("receiver")

    @receiver.post("/hooks/hubspot")
    def hook() -> Any:
        raw = request.get_data(as_text=True)
        received.append({"headers": dict(request.headers), "body": raw, "url": request.url})
        data = json.loads(raw)
        # Like the bridge: report delivery back to HubSpot from inside the hook.
        token = received_token[0]
        back = requests.patch(
            f"{base}/conversations/v3/custom-channels/{data['channelId']}/messages/"
            f"{data['message']['id']}", json={"statusType": "SENT"},
            headers={"Authorization": f"Bearer {token}"}, timeout=5)
        return jsonify({"ok": True, "status_patch": back.status_code})

    received_token: list[str] = []
    srv_a = make_server("127.0.0.1", 0, mounted, threaded=True)
    srv_b = make_server("127.0.0.1", 0, receiver, threaded=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (srv_a, srv_b)]
    for t in threads:
        t.start()
    base = f"http://127.0.0.1:{srv_a.server_port}/sandbox/hubspot"
    try:
        yield {"base": base, "hook": f"http://127.0.0.1:{srv_b.server_port}/hooks/hubspot",
               "received": received, "token": received_token}
    finally:
        srv_a.shutdown()
        srv_b.shutdown()


def test_reply_fires_signed_webhook_over_http(servers: dict[str, Any]) -> None:
    base, hook = servers["base"], servers["hook"]
    s = requests.Session()
    code = s.post(f"{base}/_install", json={"client_id": CLIENT_ID,
                                            "redirect_uri": "https://bridge.test/cb"}).json()
    tokens = s.post(f"{base}/oauth/v1/token", data={
        "grant_type": "authorization_code", "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "redirect_uri": "https://bridge.test/cb",
        "code": code["code"]}).json()
    token = tokens["access_token"]
    servers["token"].append(token)
    # Self-URLs honour the mount point (request.script_root).
    page = s.get(f"{base}/oauth/authorize", params={
        "client_id": CLIENT_ID, "redirect_uri": "https://bridge.test/cb"}).text
    assert "action='/sandbox/hubspot/oauth/authorize'" in page
    auth = {"Authorization": f"Bearer {token}"}
    channel = s.post(f"{base}/conversations/v3/custom-channels",
                     params={"hapikey": DEV_KEY, "appId": APP_ID},
                     json={"name": "TG", "webhookUrl": hook, "capabilities": {}}).json()
    inbox = s.get(f"{base}/conversations/v3/conversations/inboxes", headers=auth).json()
    account = s.post(f"{base}/conversations/v3/custom-channels/{channel['id']}/channel-accounts",
                     headers=auth, json={"inboxId": inbox["results"][0]["id"], "name": "Bot",
                                         "authorized": True}).json()
    person = s.post(f"{base}/crm/v3/objects/contacts", headers=auth,
                    json={"properties": {"firstname": "Tina"}}).json()
    published = s.post(f"{base}/conversations/v3/custom-channels/{channel['id']}/messages",
                       headers=auth, json=_egg(account["id"], "hi", integrationThreadId="tg-42",
                                               associateWithContactId=person["id"]))
    assert published.status_code == 201
    assert published.headers["X-HubSpot-RateLimit-Max"] == "100"
    started = time.monotonic()
    answer = s.post(f"{base}/_reply", json={"contact_id": person["id"], "text": "Hello Tina"})
    assert time.monotonic() - started < 5
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["webhook"]["status"] == 200
    assert result["webhook"]["body"] == {"ok": True, "status_patch": 200}
    [delivery] = servers["received"]
    payload = json.loads(delivery["body"])
    owners = s.get(f"{base}/crm/v3/owners/", headers=auth).json()["results"]
    assert payload["type"] == "OUTGOING_CHANNEL_MESSAGE_CREATED"
    assert payload["portalId"] == P1 and payload["channelId"] == channel["id"]
    assert payload["channelAccountId"] == account["id"]
    message = payload["message"]
    assert message["direction"] == "OUTGOING" and message["text"] == "Hello Tina"
    assert message["conversationsThreadId"] == published.json()["conversationsThreadId"]
    assert message["channelIntegrationThreadIds"] == ["tg-42"]
    assert message["senders"][0]["actorId"] == f"A-{owners[0]['userId']}"
    assert message["recipients"][0]["deliveryIdentifier"] == {
        "type": "CHANNEL_SPECIFIC_OPAQUE_ID", "value": "tg-user-7"}
    assert message["id"] == result["message"]["id"]
    # v3 signature, recomputed independently with the vectors' algorithm.
    headers = {k.lower(): v for k, v in delivery["headers"].items()}
    timestamp = headers["x-hubspot-request-timestamp"]
    expected = base64.b64encode(hmac.new(
        CLIENT_SECRET.encode(), ("POST" + hook + delivery["body"] + timestamp).encode(),
        hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["x-hubspot-signature-v3"], expected)
    assert abs(int(timestamp) - time.time() * 1000) < 60_000
    # The bridge's status PATCH from inside the hook was recorded.
    state = s.get(f"{base}/_state", params={"account": P1}).json()["accounts"][0]
    outgoing = [m for t in state["threads"] for m in t["messages"] if m["direction"] == "OUTGOING"]
    assert [(m["text"], m["status"]) for m in outgoing] == [("Hello Tina", "SENT")]


def test_reply_reports_unreachable_webhook(client: Any) -> None:
    token = oauth_token(client)["access_token"]
    channel = _channel(client, webhook="http://127.0.0.1:9/nothing-listens")
    account = _account(client, token, channel["id"])
    person = contact(client, token, firstname="U")
    call(client, "POST", f"/conversations/v3/custom-channels/{channel['id']}/messages", token,
         body=_egg(account["id"], "hi", associateWithContactId=person["id"]))
    resp = client.post("/_reply", json={"contact_id": person["id"], "text": "yo",
                                        "account": P1})
    assert resp.status_code == 200
    assert resp.get_json()["webhook"]["status"] is None
    assert "error" in resp.get_json()["webhook"]


# -- rate limits --------------------------------------------------------------------------


def test_ten_secondly_limit_body_and_headers() -> None:
    client = make(per_10s=3)
    seen = [call(client, "GET", "/crm/v3/objects/contacts") for _ in range(3)]
    assert [r.headers["X-HubSpot-RateLimit-Remaining"] for r in seen] == ["2", "1", "0"]
    assert seen[0].headers["X-HubSpot-RateLimit-Max"] == "3"
    assert seen[0].headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert seen[0].headers["X-HubSpot-RateLimit-Daily"] == "250000"
    over = call(client, "GET", "/crm/v3/objects/contacts")
    assert over.status_code == 429 and "Retry-After" not in over.headers
    body = over.get_json()
    assert body["status"] == "error" and body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["correlationId"]
    assert body["requestId"]
    # Per token's portal: the other portal still has its budget.
    assert call(client, "GET", "/crm/v3/objects/contacts", PAT2).status_code == 200


def test_window_rolls_and_retry_after_switch() -> None:
    client = make(per_10s=2, rate_interval_ms=300, retry_after_header=True)
    for _ in range(2):
        assert call(client, "GET", "/crm/v3/owners/").status_code == 200
    over = call(client, "GET", "/crm/v3/owners/")
    assert over.status_code == 429 and over.headers["Retry-After"] == "1"
    time.sleep(0.35)
    assert call(client, "GET", "/crm/v3/owners/").status_code == 200


def test_search_has_its_own_secondly_limit() -> None:
    client = make(search_per_s=2)
    for _ in range(2):
        assert _search(client, "contacts", {}).status_code == 200
    over = _search(client, "contacts", {})
    assert over.status_code == 429
    assert over.get_json()["message"] == "You have reached your secondly limit."
    assert over.headers["X-HubSpot-RateLimit-Secondly-Remaining"] == "0"
    # Non-search calls are not held back by the search window.
    assert call(client, "GET", "/crm/v3/objects/contacts").status_code == 200
    time.sleep(1.05)
    assert _search(client, "contacts", {}).status_code == 200


def test_searches_are_exempt_from_the_ten_secondly_window() -> None:
    """The specs mark POST .../search "x-hubspot-rate-limit-exemptions":
    ["ten-secondly"]: a full 10 s window does not stop a search, and searches
    do not fill it."""
    client = make(per_10s=2, search_per_s=50)
    for _ in range(3):
        assert _search(client, "contacts", {}).status_code == 200
    for _ in range(2):
        assert call(client, "GET", "/crm/v3/objects/contacts").status_code == 200
    assert call(client, "GET", "/crm/v3/objects/contacts").status_code == 429
    assert _search(client, "contacts", {}).status_code == 200


def test_oauth_calls_use_their_own_limit() -> None:
    client = make(per_10s=50, per_10s_oauth=1)
    token = oauth_token(client)["access_token"]
    first = call(client, "GET", "/crm/v3/objects/contacts", token)
    assert first.headers["X-HubSpot-RateLimit-Max"] == "1"
    assert "X-HubSpot-RateLimit-Daily" not in first.headers  # no daily limit on OAuth calls
    assert call(client, "GET", "/crm/v3/objects/contacts", token).status_code == 429


# -- faults -------------------------------------------------------------------------------


def test_fault_5xx_and_429_bodies(client: Any) -> None:
    client.post("/_faults", json={"error_rate": 1.0})
    resp = call(client, "GET", "/crm/v3/objects/contacts")
    assert resp.status_code == 503
    assert resp.get_json()["status"] == "error" and resp.get_json()["correlationId"]
    # Control endpoints and the consent page are never faulted.
    assert client.get("/_state").status_code == 200
    assert client.get("/oauth/authorize", query_string={
        "client_id": CLIENT_ID, "redirect_uri": "https://x.test"}).status_code == 200
    client.post("/_faults", json={"reset": True, "rate_429": 1.0, "retry_after": 2})
    resp = call(client, "GET", "/crm/v3/objects/contacts")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
    assert resp.get_json()["policyName"] == "TEN_SECONDLY_ROLLING"
    client.post("/_faults", json={"reset": True, "storm_seconds": 30, "storm_kind": "5xx"})
    assert call(client, "GET", "/crm/v3/owners/").status_code == 503
    assert client.get("/_faults").get_json()["counters"]["5xx"] >= 1


def test_fault_timeout_commits_nothing(client: Any) -> None:
    client.post("/_faults", json={"timeout_rate": 1.0, "timeout_seconds": 0.05})
    resp = call(client, "POST", "/crm/v3/objects/contacts",
                body={"properties": {"email": "t@example.com"}})
    assert resp.status_code == 504
    client.post("/_faults", json={"reset": True})
    assert client.get("/_state").get_json()["accounts"][0]["contacts"] == []


def test_fault_commit_then_timeout_commits(client: Any) -> None:
    client.post("/_faults", json={"commit_then_timeout_rate": 1.0, "timeout_seconds": 0.2})
    started = time.monotonic()
    resp = call(client, "POST", "/crm/v3/objects/contacts",
                body={"properties": {"email": "ctt@example.com"}})
    assert time.monotonic() - started >= 0.2  # the answer came after the hang
    assert resp.status_code == 201
    client.post("/_faults", json={"reset": True})
    stored = client.get("/_state").get_json()["accounts"][0]["contacts"]
    assert [c["properties"]["email"] for c in stored] == ["ctt@example.com"]
    retry = call(client, "POST", "/crm/v3/objects/contacts",
                 body={"properties": {"email": "ctt@example.com"}})
    assert retry.status_code == 409  # a blind retry duplicates nothing


def test_latency_fault(client: Any) -> None:
    client.post("/_faults", json={"latency_ms": 80})
    started = time.monotonic()
    call(client, "GET", "/crm/v3/owners/")
    assert time.monotonic() - started >= 0.08


# -- control API --------------------------------------------------------------------------


def test_state_reset_and_config(client: Any) -> None:
    c = contact(client, email="s@example.com")
    deal = call(client, "POST", "/crm/v3/objects/deals", body={"properties": {
        "dealname": "D", "pipeline": "default", "dealstage": "closedlost"}}).get_json()
    call(client, "PUT", f"/crm/v4/objects/deals/{deal['id']}/associations/default/contacts/"
          f"{c['id']}")
    state = client.get("/_state").get_json()
    assert [p["portal_id"] for p in state["accounts"]] == [P1, P2]
    mine = state["accounts"][0]
    assert mine["contacts"][0]["id"] == c["id"] and len(mine["owners"]) == 3
    assert {"fromObjectType": "deals", "fromObjectTypeId": "0-3", "fromId": deal["id"],
            "toObjectType": "contacts", "toObjectTypeId": "0-1", "toId": c["id"],
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}]} \
        in mine["associations"]
    assert client.get("/_state?account=1").status_code == 404
    assert client.post("/_config", json={"bogus": 1}).status_code == 400
    assert client.post("/_config", json={"per_10s": 0}).status_code == 400
    cfg = client.post("/_config", json={"per_10s": 7, "idempotency_dedupe": False}).get_json()
    assert cfg["per_10s"] == 7 and cfg["idempotency_dedupe"] is False
    assert call(client, "GET", "/crm/v3/owners/").headers["X-HubSpot-RateLimit-Max"] == "7"
    assert client.post("/_reset").status_code == 200
    assert client.get("/_state").get_json()["accounts"][0]["contacts"] == []
    assert client.get("/_config").get_json()["per_10s"] == 7  # config survives a reset
    assert client.post("/_install", json={"client_id": "nope", "redirect_uri": "x"}) \
        .status_code == 400


def test_custom_portals_and_app_config() -> None:
    client = make(portals=[{"id": 7, "name": "Solo", "private_app_token": "pat-na1-solo",
                            "owners": [{"email": "o@solo.example", "firstName": "O"}]}],
                  app={"client_id": "cid", "client_secret": "sec"})
    owners = call(client, "GET", "/crm/v3/owners/", "pat-na1-solo").get_json()["results"]
    assert [o["email"] for o in owners] == ["o@solo.example"]
    page = client.get("/oauth/authorize", query_string={
        "client_id": "cid", "redirect_uri": "https://x.test"}).get_data(as_text=True)
    assert "type='radio'" not in page and "Solo" in page  # one portal: no chooser
    assert call(client, "GET", "/crm/v3/owners/", PAT1).status_code == 401
