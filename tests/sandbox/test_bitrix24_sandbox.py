"""Sandbox Bitrix24: behaviour against the vendor contract (FACTS.md section 2).

Every response shape the sandbox produces for a method with an official
example is compared with that example (``sandbox/bitrix24/spec/examples``;
page and lines of each in ``spec/MANIFEST.json``): same keys, same JSON types
(``null`` in an example, or in a nullable field of ours, matches any scalar).
Events are decoded with this file's own PHP bracket parser and compared with
the vendor's event examples key by key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests
from flask import Flask, jsonify, request

from sandbox.bitrix24 import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_DOMAIN,
    DEMO_LINE_ID,
    DEMO_MEMBER_ID,
    DEMO_WEBHOOK_CODE,
    create_app,
)
from sandbox.bitrix24.config import DEFAULTS
from tests.support.servers import serve_wsgi

EXAMPLES = Path(__file__).resolve().parents[2] / "sandbox" / "bitrix24" / "spec" / "examples"
CODE = DEMO_WEBHOOK_CODE
OTHER = {"domain": "other.bitrix24.com", "member_id": "d897063e1ce7c5eb9f04b9751eef5915",
         "users": [{"ID": 1, "NAME": "Olga", "LAST_NAME": "Other", "ADMIN": True}],
         "webhooks": [{"user_id": 1, "code": "otherportalcode1", "scopes": ["crm", "user"]}],
         "open_lines": [{"ID": 5, "LINE_NAME": "Other line"}]}
TIME_KEYS = {"start", "finish", "duration", "processing", "date_start", "date_finish",
             "operating_reset_at", "operating"}
SVG = ("data:image/svg+xml;charset=US-ASCII,%3Csvg%20xmlns%3D%22http%3A%2F%2Fwww.w3.org%2F2000"
       "%2Fsvg%22%2F%3E")


# -- helpers ------------------------------------------------------------------------------------


def example(name: str) -> Any:
    return json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def shape_problems(expected: Any, actual: Any, path: str = "$", *, exact: bool = False,
                   scalars: bool = True) -> list[str]:
    """Where ``actual`` differs structurally from the vendor's ``expected``."""
    if expected is None or (actual is None and not isinstance(expected, (dict, list))):
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: object expected, got {type(actual).__name__}"]
        out = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{path}.{key}: missing")
            else:
                out += shape_problems(value, actual[key], f"{path}.{key}", exact=exact,
                                      scalars=scalars)
        if exact:
            # the time object's members vary between pages (data-types.md#time: "may
            # vary depending on the method"); ours always has the full set
            allowed = TIME_KEYS if path.endswith(".time") else set()
            out += [f"{path}.{k}: not in the example" for k in actual
                    if k not in expected and k not in allowed]
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: array expected, got {type(actual).__name__}"]
        if expected and actual:
            return shape_problems(expected[0], actual[0], f"{path}[0]", exact=exact,
                                  scalars=scalars)
        return []
    if not scalars:
        return [] if not isinstance(actual, (dict, list)) else [f"{path}: scalar expected"]

    def kind(v: Any) -> str:
        return "bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) \
            else type(v).__name__

    if kind(expected) != kind(actual):
        return [f"{path}: {kind(expected)} expected, got {kind(actual)} ({actual!r})"]
    return []


def assert_shape(expected: Any, actual: Any, **kw: Any) -> None:
    problems = shape_problems(expected, actual, **kw)
    assert not problems, problems


def php_decode(body: str) -> dict[str, Any]:
    """This file's own reading of PHP bracket notation (a[b][0]=x)."""
    root: dict[str, Any] = {}
    for name, value in parse_qsl(body, keep_blank_values=True):
        head, _, rest = name.partition("[")
        keys = [head] + ([k.rstrip("]") for k in rest.split("[")] if rest else [])
        node = root
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    def lists(v: Any) -> Any:
        if isinstance(v, dict):
            v = {k: lists(x) for k, x in v.items()}
            if v and all(k.isdigit() for k in v) and sorted(map(int, v)) == list(range(len(v))):
                return [v[str(i)] for i in range(len(v))]
        return v

    return lists(root)


def make(**config: Any) -> Any:
    """A test client; the leaky bucket is lifted unless the test sets ``limits``."""
    config.setdefault("limits", {"basic": {"drain_per_s": 1000.0, "burst": 100000}})
    return create_app(config).test_client()


@pytest.fixture
def client() -> Any:
    return make()


def hook(client: Any, method: str, body: dict[str, Any] | None = None, *, user: int = 1,
         code: str = CODE, portal: str = DEMO_DOMAIN) -> Any:
    # json.dumps keeps key order (Flask's test client would sort the keys; batch
    # commands run in the order given)
    return client.post(f"/{portal}/rest/{user}/{code}/{method}.json",
                       data=json.dumps(body or {}), content_type="application/json")


def call(client: Any, method: str, token: str, body: dict[str, Any] | None = None, *,
         portal: str = DEMO_DOMAIN) -> Any:
    return client.post(f"/{portal}/rest/{method}", data=json.dumps({**(body or {}),
                       "auth": token}), content_type="application/json")


def ok(resp: Any) -> Any:
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["result"]


def install(client: Any, **body: Any) -> dict[str, Any]:
    resp = client.post("/_install", json=body)
    assert resp.status_code == 200, resp.get_json()
    data: dict[str, Any] = resp.get_json()
    return data


def token(client: Any, **body: Any) -> str:
    return str(install(client, **body)["access_token"])


def state(client: Any, portal: str = DEMO_DOMAIN) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/_state", query_string={"account": portal}).get_json()
    return data


def crm(client: Any, portal: str = DEMO_DOMAIN) -> dict[str, Any]:
    """The portal's part of ``GET /_state``."""
    data: dict[str, Any] = state(client, portal)["accounts"][0]
    return data


def custom_free(example_body: Any) -> Any:
    """An example without the vendor portal's own UF_CRM_* / PARENT_ID_* fields."""
    if isinstance(example_body, dict):
        return {k: custom_free(v) for k, v in example_body.items()
                if not k.startswith(("UF_CRM_", "PARENT_ID_"))}
    return example_body


def new_lead(client: Any, **fields: Any) -> int:
    return int(ok(hook(client, "crm.lead.add", {"fields": {"TITLE": "Lead", **fields}})))


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A real HTTP receiver: records every request; answers ``answers["status"]``."""
    got: list[dict[str, Any]] = []
    answers: dict[str, Any] = {"status": 200}
    app = Flask("receiver")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def hit(path: str) -> Any:
        got.append({"path": "/" + path, "content_type": request.content_type,
                    "body": request.get_data(as_text=True)})
        return jsonify({"ok": True}), answers["status"]

    with serve_wsgi(app) as srv:
        yield {"url": srv.url, "got": got, "answers": answers}


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- auth: webhooks (local-webhooks.md) -----------------------------------------------------------


def test_webhook_call_envelope_and_profile(client: Any) -> None:
    resp = client.get(f"/{DEMO_DOMAIN}/rest/1/{CODE}/profile.json")
    body = resp.get_json()
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert_shape(example("api-reference__common__users__profile.1"), body, exact=True)
    assert body["result"]["ID"] == "1" and body["result"]["ADMIN"] is True
    assert set(body["time"]) == {"start", "finish", "duration", "processing", "date_start",
                                 "date_finish", "operating_reset_at", "operating"}
    assert body["time"]["date_start"].endswith("+03:00")
    # the same without ".json", via GET with the method in any case
    assert client.get(f"/{DEMO_DOMAIN}/rest/1/{CODE}/PROFILE").status_code == 200


def test_webhook_wrong_code_user_or_portal_gives_no_auth_found() -> None:
    client = make(portals=[DEFAULTS["portals"][0], OTHER])
    for url in (f"/{DEMO_DOMAIN}/rest/1/wrongcode/profile", f"/{DEMO_DOMAIN}/rest/2/{CODE}/profile",
                f"/{DEMO_DOMAIN}/rest/1/otherportalcode1/profile"):
        resp = client.post(url)
        assert resp.status_code == 401
        assert resp.get_json() == {"error": "NO_AUTH_FOUND",
                                   "error_description": "Wrong authorization data"}
    assert hook(client, "profile", portal="other.bitrix24.com",
                code="otherportalcode1").status_code == 200
    assert client.post("/nowhere.bitrix24.ru/rest/1/x/profile").status_code == 404


def test_webhook_scopes_and_unknown_method() -> None:
    portal = dict(DEFAULTS["portals"][0])
    portal["webhooks"] = [{"user_id": 1, "code": "usersonly0000001", "scopes": ["user"]}]
    client = make(portals=[portal])
    resp = hook(client, "crm.lead.add", {"fields": {"TITLE": "x"}}, code="usersonly0000001")
    assert resp.status_code == 403 and resp.get_json()["error"] == "insufficient_scope"
    assert hook(client, "user.current", code="usersonly0000001").status_code == 200
    assert hook(client, "profile", code="usersonly0000001").status_code == 200  # basic
    missing = hook(client, "crm.lead.nosuch", code="usersonly0000001")
    assert missing.status_code == 404 and missing.get_json()["error"] == "ERROR_METHOD_NOT_FOUND"


def test_app_context_methods_refuse_webhooks(client: Any) -> None:
    for name in ("imconnector.register", "imconnector.activate", "imconnector.send.messages",
                 "imconnector.send.status.delivery", "imconnector.list", "placement.bind"):
        resp = hook(client, name, {"ID": "x"})
        assert resp.status_code == 403, name
        assert resp.get_json()["error"] == "WRONG_AUTH_TYPE", name
    assert hook(client, "imconnector.register").get_json() == example(
        "api-reference__imopenlines__imconnector__imconnector-register.3")
    bind = hook(client, "event.bind", {"event": "ONCRMLEADADD", "handler": "https://x/"})
    assert (bind.status_code, bind.get_json()["error"]) == (403, "WRONG_AUTH_TYPE")
    info = hook(client, "app.info")
    assert info.status_code == 400
    assert info.get_json() == example("api-reference__common__system__app-info.2")
    # the UNCONFIRMED event.bind answer is a switch
    other = make(webhook_event_bind_error={"status": 401, "error": "INVALID_CREDENTIALS"})
    resp = hook(other, "event.bind", {"event": "ONCRMLEADADD", "handler": "https://x/"})
    assert (resp.status_code, resp.get_json()["error"]) == (401, "INVALID_CREDENTIALS")
    # imopenlines.config.list.get is not app-only
    assert hook(client, "imopenlines.config.list.get").status_code == 200


# -- auth: app tokens and OAuth (settings/oauth/*.md) ---------------------------------------------


def test_app_token_in_query_form_or_json(client: Any) -> None:
    tok = token(client)
    base = f"/{DEMO_DOMAIN}/rest/profile"
    assert client.get(base, query_string={"auth": tok}).status_code == 200
    assert client.post(base, data={"auth": tok}).status_code == 200
    assert client.post(base, json={"auth": tok}).status_code == 200
    missing = client.post(base, json={})
    assert (missing.status_code, missing.get_json()["error"]) == (401, "NO_AUTH_FOUND")
    wrong = client.post(base, json={"auth": "nope"})
    assert (wrong.status_code, wrong.get_json()["error"]) == (401, "NO_AUTH_FOUND")
    info = ok(call(client, "app.info", tok))
    assert_shape(example("api-reference__common__system__app-info.1")["result"], info,
                 exact=True)
    assert info["INSTALLED"] is True and info["STATUS"] == "L"


def test_access_token_expires_after_an_hour_and_stays_on_its_portal() -> None:
    client = make(portals=[DEFAULTS["portals"][0], OTHER])
    tok = token(client)
    foreign = call(client, "profile", tok, portal="other.bitrix24.com")
    assert (foreign.status_code, foreign.get_json()["error"]) == (401, "NO_AUTH_FOUND")
    client.post("/_clock", json={"advance": 3599})
    assert call(client, "profile", tok).status_code == 200
    client.post("/_clock", json={"advance": 2})
    resp = call(client, "profile", tok)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "expired_token",
                               "error_description": "The access token provided has expired."}


def _authorize(client: Any, state_value: str = "JJHgsdgfkdaslg7lbadsfg") -> dict[str, str]:
    resp = client.get(f"/{DEMO_DOMAIN}/oauth/authorize/",
                      query_string={"client_id": DEMO_CLIENT_ID, "state": state_value,
                                    "redirect_uri": "https://evil.example/steal"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://app.example/cb"
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def _exchange(client: Any, **args: str) -> Any:
    query = {"grant_type": "authorization_code", "client_id": DEMO_CLIENT_ID,
             "client_secret": DEMO_CLIENT_SECRET, **args}
    return client.get("/oauth/oauth/token/", query_string=query)


def _refresh(client: Any, refresh_token: str) -> Any:
    return client.get("/oauth/oauth/token/", query_string={
        "grant_type": "refresh_token", "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET, "refresh_token": refresh_token})


def test_authorization_code_flow_code_lives_30s_and_is_single_use() -> None:
    client = make(app={"redirect_uri": "https://app.example/cb"})
    refused = client.get(f"/{DEMO_DOMAIN}/oauth/authorize/",
                         query_string={"client_id": DEMO_CLIENT_ID})
    assert refused.status_code == 400 and "Location" not in refused.headers  # not installed
    install(client)
    params = _authorize(client)
    assert params["state"] == "JJHgsdgfkdaslg7lbadsfg" and params["domain"] == DEMO_DOMAIN
    assert params["member_id"] == DEMO_MEMBER_ID and params["server_domain"] == "localhost"
    assert params["scope"].split(",")[0] == "crm"
    resp = _exchange(client, code=params["code"])
    body = resp.get_json()
    assert resp.status_code == 200
    assert_shape(example("settings__oauth__index.1"), body, exact=True)
    assert body["client_endpoint"] == f"http://localhost/{DEMO_DOMAIN}/rest/"
    assert body["server_endpoint"] == "http://localhost/oauth/rest/"
    assert body["expires_in"] == 3600 and body["member_id"] == DEMO_MEMBER_ID
    assert call(client, "profile", body["access_token"]).status_code == 200
    again = _exchange(client, code=params["code"])
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"
    late = _authorize(client)
    client.post("/_clock", json={"advance": 31})
    assert _exchange(client, code=late["code"]).get_json()["error"] == "invalid_grant"
    fresh = _authorize(client)
    bad = _exchange(client, code=fresh["code"], client_secret="wrong")  # noqa: S106
    assert bad.get_json()["error"] == "invalid_client"
    assert client.post("/oauth/oauth/token/", query_string={
        "grant_type": "authorization_code"}).get_json()["error"] == "invalid_request"
    counts = state(client)["oauth"]["token_endpoint"]["authorization_code"]
    assert counts["ok"] == 1 and counts["errors"] == {"invalid_grant": 2, "invalid_client": 1,
                                                      "invalid_request": 1}


def test_refresh_rotates_and_the_old_token_dies() -> None:
    client = make()
    first = install(client)
    resp = _refresh(client, first["refresh_token"])
    pair = resp.get_json()
    assert resp.status_code == 200
    assert_shape(example("settings__oauth__auto-renewal.1"), pair, exact=True)
    assert pair["refresh_token"] != first["refresh_token"] and pair["user_id"] == 1
    assert pair["expires"] == int(pair["expires"]) and pair["scope"].startswith("crm")
    old = _refresh(client, first["refresh_token"])
    assert old.status_code == 400 and old.get_json() == {
        "error": "invalid_grant", "error_description": "Invalid refresh token"}
    assert _refresh(client, pair["refresh_token"]).status_code == 200
    # refresh tokens live 180 days
    later = _refresh(client, install(client)["refresh_token"]).get_json()
    client.post("/_clock", json={"advance": 180 * 86400 + 1})
    assert _refresh(client, later["refresh_token"]).get_json()["error"] == "invalid_grant"


def test_refresh_grace_and_error_status_are_switches() -> None:
    client = make(refresh_grace_s=60, oauth_error_status=401)
    first = install(client)["refresh_token"]
    assert _refresh(client, first).status_code == 200
    assert _refresh(client, first).status_code == 200  # inside the grace period
    client.post("/_clock", json={"advance": 61})
    dead = _refresh(client, first)
    assert (dead.status_code, dead.get_json()["error"]) == (401, "invalid_grant")


# -- envelopes and quirks -------------------------------------------------------------------------


def test_list_envelope_total_and_next(client: Any) -> None:
    for chunk in range(3):
        cmd = {f"l{i}": f"crm.lead.add?fields[TITLE]=L{chunk}-{i}" for i in range(40)}
        assert not ok(hook(client, "batch", {"cmd": cmd}))["result_error"]
    first = hook(client, "crm.lead.list", {"select": ["ID", "TITLE"]}).get_json()
    assert first["total"] == 120 and first["next"] == 50 and len(first["result"]) == 50
    assert list(first) == ["result", "next", "total", "time"]
    assert set(first["result"][0]) == {"ID", "TITLE"}
    second = hook(client, "crm.lead.list", {"start": 50}).get_json()
    assert second["next"] == 100 and second["result"][0]["ID"] == "51"
    query = client.get(f"/{DEMO_DOMAIN}/rest/1/{CODE}/crm.lead.list.json?select[]=ID"
                       "&filter[>ID]=115&order[ID]=DESC").get_json()
    assert [r["ID"] for r in query["result"]] == ["120", "119", "118", "117", "116"]
    last = hook(client, "crm.lead.list", {"start": 100}).get_json()
    assert "next" not in last and len(last["result"]) == 20 and last["total"] == 120
    filtered = hook(client, "crm.lead.list", {"filter": {"%TITLE": "L2-3"},
                                              "order": {"ID": "DESC"}}).get_json()
    assert [r["TITLE"] for r in filtered["result"]] == [f"L2-{i}" for i in range(39, 29, -1)
                                                       ] + ["L2-3"]


def test_crm_errors_carry_an_empty_code(client: Any) -> None:
    assert hook(client, "crm.lead.get", {"id": 999}).get_json() == {
        "error": "", "error_description": "Not found"}
    resp = hook(client, "crm.lead.get", {})
    assert resp.status_code == 400
    assert resp.get_json() == example("api-reference__crm__leads__crm-lead-update.2")
    missing = hook(client, "crm.contact.update", {"id": 5, "fields": {"NAME": "x"}})
    assert missing.get_json() == example("api-reference__crm__contacts__crm-contact-update.8")
    # a user without CRM rights (the demo's user 3 has read access only)
    portal = dict(DEFAULTS["portals"][0])
    portal["webhooks"] = [{"user_id": 3, "code": "readonlyhook0001", "scopes": ["crm"]}]
    ro = make(portals=[portal])
    denied = hook(ro, "crm.lead.add", {"fields": {"TITLE": "x"}}, user=3, code="readonlyhook0001")
    assert denied.status_code == 400
    assert denied.get_json() == example("api-reference__crm__leads__crm-lead-add.2")
    assert hook(ro, "crm.lead.list", user=3, code="readonlyhook0001").status_code == 200
    bad_fields = hook(client, "crm.deal.add", {"fields": "TITLE"})
    assert bad_fields.get_json() == example("api-reference__crm__deals__crm-deal-add.2")
    # crm.duplicate.findbycomm puts the text into "error"
    dup = hook(client, "crm.duplicate.findbycomm", {"values": ["+1"]})
    assert dup.status_code == 400
    assert dup.get_json() == example("api-reference__crm__duplicates__crm-duplicate-find-by-comm.2")


# -- limits (limits.md) ----------------------------------------------------------------------------


def test_leaky_bucket_basic_plan_50_then_2_per_second() -> None:
    client = make(limits={"basic": {"drain_per_s": 2.0, "burst": 50}})
    client.post("/_clock", json={"freeze": True})
    for _ in range(50):
        assert hook(client, "profile").status_code == 200
    refused = hook(client, "profile")
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert "Retry-After" not in refused.headers
    client.post("/_clock", json={"advance": 0.5})
    assert hook(client, "profile").status_code == 200
    assert hook(client, "profile").status_code == 503
    client.post("/_clock", json={"advance": 1.0})
    assert [hook(client, "profile").status_code for _ in range(3)] == [200, 200, 503]
    assert state(client)["bucket"][DEMO_DOMAIN] == 50.0


def test_leaky_bucket_enterprise_plan_and_batch_counts_once() -> None:
    portal = dict(DEFAULTS["portals"][0], plan="enterprise")
    client = make(portals=[portal], limits={"basic": {"drain_per_s": 2.0, "burst": 50}})
    client.post("/_clock", json={"freeze": True})
    cmd = {str(i): "profile" for i in range(50)}
    assert len(ok(hook(client, "batch", {"cmd": cmd}))["result"]) == 50
    assert state(client)["bucket"][DEMO_DOMAIN] == 1.0  # one HTTP request
    codes = [hook(client, "profile").status_code for _ in range(250)]
    assert codes.count(200) == 249 and codes[-1] == 503
    client.post("/_clock", json={"advance": 1.0})
    assert [hook(client, "profile").status_code for _ in range(6)] == [200] * 5 + [503]


def test_operation_time_limit_per_method() -> None:
    client = make(limits={"operating_limit_s": 100, "operating_costs": {"crm.lead.list": 30}})
    client.post("/_clock", json={"freeze": True})
    times = [hook(client, "crm.lead.list").get_json()["time"] for _ in range(4)]
    assert [t["operating"] for t in times] == [30, 60, 90, 120]
    reset_at = times[0]["operating_reset_at"]
    assert all(t["operating_reset_at"] == reset_at for t in times)
    blocked = hook(client, "crm.lead.list")
    assert blocked.status_code == 429 and blocked.get_json()["error"] == "OPERATION_TIME_LIMIT"
    assert hook(client, "crm.contact.list").status_code == 200  # other methods go on
    inner = ok(hook(client, "batch", {"cmd": {"a": "crm.lead.list", "b": "profile"}}))
    assert inner["result_error"]["a"]["error"] == "OPERATION_TIME_LIMIT" and "b" in inner["result"]
    client.post("/_clock", json={"advance": 599})
    assert hook(client, "crm.lead.list").status_code == 429
    client.post("/_clock", json={"advance": 2})
    assert hook(client, "crm.lead.list").status_code == 200


# -- batch (batch.md) ------------------------------------------------------------------------------


def test_batch_shapes_references_and_empty_members(client: Any) -> None:
    body = hook(client, "batch", {"halt": 0, "cmd": {
        "get_user": "user.current",
        "new_contact": "crm.contact.add?fields[NAME]=Ann&fields[PHONE][0][VALUE]=+100&"
                       "fields[PHONE][0][VALUE_TYPE]=WORK",
        "new_deal": "crm.deal.add?fields[TITLE]=For $result[get_user][NAME]&"
                    "fields[CONTACT_ID]=$result[new_contact]",
        "deals": "crm.deal.list?select[]=ID&select[]=CONTACT_ID&select[]=TITLE"}}).get_json()
    expected = example("settings__how-to-call-rest-api__batch.1")
    # the example's second command is department.get; ours is a deal list
    expected["result"]["result"]["get_department"] = [{"ID": "1"}]
    assert_shape(expected, {
        "result": {k: body["result"][k] for k in ("result", "result_error", "result_total",
                                                  "result_next", "result_time")} | {
            "result": {"get_user": body["result"]["result"]["get_user"],
                       "get_department": body["result"]["result"]["deals"]},
            "result_total": {"get_department": body["result"]["result_total"]["deals"]},
            "result_time": {"get_user": body["result"]["result_time"]["get_user"],
                            "get_department": body["result"]["result_time"]["deals"]}},
        "time": body["time"]})
    assert body["result"]["result_error"] == [] and body["result"]["result_next"] == []
    deal = body["result"]["result"]["deals"][0]
    assert deal["TITLE"] == "For Klaus" and deal["CONTACT_ID"] == str(
        body["result"]["result"]["new_contact"])
    # a list-valued reference, form-encoded cmd[] (a PHP list answers with a list)
    resp = client.post(f"/{DEMO_DOMAIN}/rest/1/{CODE}/batch", data={
        "cmd[0]": "crm.contact.list?select[]=ID", "cmd[1]": "crm.contact.get?id=$result[0][0][ID]"})
    listed = ok(resp)
    assert isinstance(listed["result"], list) and listed["result"][1]["NAME"] == "Ann"


def test_batch_errors_limit_nesting_halt_always_200(client: Any) -> None:
    cmd = {f"c{i}": "profile" for i in range(51)}
    resp = hook(client, "batch", {"cmd": cmd})
    assert resp.status_code == 200
    result = resp.get_json()["result"]
    assert len(result["result"]) == 50
    assert result["result_error"] == {"c50": {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                                              "error_description": "Max batch length exceeded"}}
    nested = ok(hook(client, "batch", {"cmd": {"a": "batch?cmd[x]=profile"}}))
    assert nested["result_error"]["a"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert nested["result"] == [] and nested["result_time"] == []
    errors = {"get_user": "crm.lead.get?id=999", "get_department": "crm.lead.get?id=998"}
    soft = hook(client, "batch", {"halt": 0, "cmd": errors}).get_json()
    assert_shape(example("settings__how-to-call-rest-api__batch.2"), soft, exact=True)
    assert set(soft["result"]["result_error"]) == {"get_user", "get_department"}
    hard = hook(client, "batch", {"halt": 1, "cmd": errors}).get_json()
    assert_shape(example("settings__how-to-call-rest-api__batch.3"), hard, exact=True)
    assert list(hard["result"]["result_error"]) == ["get_user"]
    portal = dict(DEFAULTS["portals"][0])
    portal["webhooks"] = [{"user_id": 1, "code": "usersonly0000001", "scopes": ["user"]}]
    scoped = hook(make(portals=[portal]), "batch", {"cmd": {"get_user": "crm.lead.list"}},
                  code="usersonly0000001")
    assert scoped.status_code == 200
    assert scoped.get_json()["result"]["result_error"]["get_user"]["error"] == "insufficient_scope"


# -- CRM (FACTS 2.7) -------------------------------------------------------------------------------


def test_lead_add_get_update_fields_match_the_examples(client: Any) -> None:
    add = hook(client, "crm.lead.add", {"fields": {
        "TITLE": "From Telegram", "NAME": "Ivan", "SOURCE_ID": "WEB", "UTM_SOURCE": "google",
        "ASSIGNED_BY_ID": 2, "PHONE": [{"VALUE": "+15454777777", "VALUE_TYPE": "OTHER"}],
        "IM": [{"VALUE": "@ivan", "VALUE_TYPE": "TELEGRAM"}], "UF_CRM_1704817278": "x"},
        "params": {"REGISTER_SONET_EVENT": "Y"}}).get_json()
    assert_shape(example("api-reference__crm__leads__crm-lead-add.1"), add, exact=True)
    lead = ok(hook(client, "crm.lead.get", {"id": add["result"]}))
    assert_shape(example("api-reference__crm__leads__crm-lead-get.1")["result"], lead)
    assert lead["STATUS_ID"] == "NEW" and lead["STATUS_SEMANTIC_ID"] == "P"
    assert lead["ASSIGNED_BY_ID"] == "2" and lead["UTM_SOURCE"] == "google"
    assert lead["HAS_PHONE"] == "Y" and lead["HAS_EMAIL"] == "N" and "EMAIL" not in lead
    assert lead["IM"][0]["VALUE_TYPE"] == "TELEGRAM" and lead["UF_CRM_1704817278"] == "x"
    upd = hook(client, "crm.lead.update", {"id": add["result"], "fields": {
        "STATUS_ID": "CONVERTED", "UTM_CAMPAIGN": "spring"}}).get_json()
    assert_shape(example("api-reference__crm__leads__crm-lead-update.1"), upd, exact=True)
    after = ok(hook(client, "crm.lead.get", {"id": add["result"]}))
    assert after["STATUS_SEMANTIC_ID"] == "S" and after["DATE_CLOSED"] != ""
    fields = ok(hook(client, "crm.lead.fields"))
    assert fields == example("api-reference__crm__leads__crm-lead-fields.1")["result"]
    for bad in ({"ASSIGNED_BY_ID": 99}, {"STATUS_ID": "NOPE"}, {"SOURCE_ID": "NOPE"}):
        resp = hook(client, "crm.lead.add", {"fields": {"TITLE": "x", **bad}})
        assert resp.status_code == 400 and resp.get_json()["error"] == "", bad
    form = client.post(f"/{DEMO_DOMAIN}/rest/1/{CODE}/crm.lead.add", data={
        "fields[TITLE]": "Form", "fields[EMAIL][0][VALUE]": "a@b.example",
        "fields[EMAIL][0][VALUE_TYPE]": "HOME"})
    formed = ok(hook(client, "crm.lead.get", {"id": ok(form)}))
    assert formed["TITLE"] == "Form" and formed["EMAIL"][0]["VALUE_TYPE"] == "HOME"
    assert ok(hook(client, "crm.multifield.fields")) == example(
        "api-reference__crm__auxiliary__multifield__crm-multifield-fields.1")["result"]
    loose = make(strict_field_validation=False)
    assert hook(loose, "crm.lead.add", {"fields": {"SOURCE_ID": "NOPE"}}).status_code == 200


def test_contact_multifields_follow_the_update_page(client: Any) -> None:
    add = hook(client, "crm.contact.add", {"fields": {"NAME": "John", "LAST_NAME": "Smith",
        "PHONE": [{"VALUE": v, "VALUE_TYPE": "WORK"} for v in ("111111", "222222", "333333")],
        "EMAIL": [{"VALUE": "john@example.com", "VALUE_TYPE": "WORK"}]}}).get_json()
    assert_shape(example("api-reference__crm__contacts__crm-contact-add.1"), add, exact=True)
    cid = add["result"]
    phones = ok(hook(client, "crm.contact.get", {"id": cid}))["PHONE"]
    assert_shape(example("api-reference__crm__contacts__crm-contact-update.1"), phones,
                 exact=True)
    p1, p2, p3 = (p["ID"] for p in phones)
    update = hook(client, "crm.contact.update", {"id": cid, "fields": {
        "PHONE": [{"ID": int(p2), "VALUE": "444444", "VALUE_TYPE": "MOBILE"}]}}).get_json()
    assert_shape(example("api-reference__crm__contacts__crm-contact-update.7"), update, exact=True)
    ok(hook(client, "crm.contact.update", {"id": cid, "fields": {
        "PHONE": [{"VALUE": "44444", "VALUE_TYPE": "WORK"}]}}))
    contact = ok(hook(client, "crm.contact.get", {"id": cid}))
    assert [(p["VALUE"], p["VALUE_TYPE"]) for p in contact["PHONE"]] == [
        ("111111", "WORK"), ("444444", "MOBILE"), ("333333", "WORK"), ("44444", "WORK")]
    last = contact["PHONE"][3]["ID"]
    ok(hook(client, "crm.contact.update", {"id": cid, "fields": {"PHONE": [
        {"ID": int(p1), "DELETE": "Y"}, {"ID": int(p2), "VALUE": ""}, {"ID": int(p3)}]}}))
    remaining = ok(hook(client, "crm.contact.get", {"id": cid}))["PHONE"]
    assert [p["ID"] for p in remaining] == [last]
    assert_shape(example("api-reference__crm__contacts__crm-contact-update.5"), remaining,
                 exact=True)
    bad = hook(client, "crm.contact.add", {"fields": {"NAME": "x", "EMAIL": [
        {"VALUE": "not-an-email", "VALUE_TYPE": "WORK"}]}})
    assert bad.get_json() == {"error": "ERROR_CORE", "error_description":
                              'The field "Work e-mail" contains an invalid address'}
    wrong_type = hook(client, "crm.contact.add", {"fields": {"PHONE": [
        {"VALUE": "1", "VALUE_TYPE": "TELEGRAM"}]}})
    assert wrong_type.status_code == 400
    listed = hook(client, "crm.contact.list", {"filter": {"EMAIL": "JOHN@example.com"},
                                               "select": ["ID", "NAME", "LAST_NAME", "EXPORT",
                                                          "ASSIGNED_BY_ID", "DATE_CREATE",
                                                          "EMAIL"]}).get_json()
    assert_shape(example("api-reference__crm__contacts__crm-contact-list.1"), listed, exact=True)
    contact_get = hook(client, "crm.contact.get", {"id": cid}).get_json()
    assert_shape(custom_free(example("api-reference__crm__contacts__crm-contact-get.1")),
                 contact_get)
    assert ok(hook(client, "crm.contact.fields")) == example(
        "api-reference__crm__contacts__crm-contact-fields.1")["result"]


def test_deal_pipelines_stages_and_directories(client: Any) -> None:
    cats = hook(client, "crm.category.list", {"entityTypeId": 2}).get_json()
    assert_shape(example("api-reference__crm__universal__category__crm-category-list.1"), cats,
                 exact=True)
    assert [c["id"] for c in cats["result"]["categories"]] == [1, 0] and cats["total"] == 2
    missing = hook(client, "crm.category.list", {"entityTypeId": 999}).get_json()
    assert missing == example("api-reference__crm__universal__category__crm-category-list.2")
    stages = hook(client, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}}).get_json()
    assert_shape(example("api-reference__crm__status__crm-status-list.1"), stages, exact=True)
    semantics = {s["STATUS_ID"]: s["SEMANTICS"] for s in stages["result"]}
    assert semantics["WON"] == "S" and semantics["LOSE"] == "F" and semantics["NEW"] is None
    statuses = ok(hook(client, "crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}}))
    assert [s["STATUS_ID"] for s in statuses] == ["NEW", "IN_PROCESS", "PROCESSED", "CONVERTED",
                                                  "JUNK"]
    sources = ok(hook(client, "crm.status.list", {"filter": {"ENTITY_ID": "SOURCE"}}))
    assert len(sources) == 12 and sources[0]["STATUS_ID"] == "CALL"
    second = ok(hook(client, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_1"}}))
    assert second[0]["STATUS_ID"] == "C1:NEW" and second[0]["CATEGORY_ID"] == "1"
    bad_filter = hook(client, "crm.status.list", {"filter": "STATUS"})
    assert bad_filter.get_json() == example("api-reference__crm__status__crm-status-list.2")
    added = hook(client, "crm.deal.add", {"fields": {"TITLE": "Partner", "CATEGORY_ID": 1}})
    assert_shape(example("api-reference__crm__deals__crm-deal-add.1"), added.get_json(),
                 exact=True)
    deal_id = added.get_json()["result"]
    assert_shape(example("api-reference__crm__deals__crm-deal-update.1"), hook(
        client, "crm.deal.update", {"id": deal_id, "fields": {"OPPORTUNITY": 10}}).get_json(),
        exact=True)
    assert hook(client, "crm.deal.update", {"id": deal_id, "fields": []}).get_json() == \
        example("api-reference__crm__deals__crm-deal-update.2")
    deal = ok(hook(client, "crm.deal.get", {"id": deal_id}))
    assert (deal["CATEGORY_ID"], deal["STAGE_ID"], deal["CLOSED"]) == ("1", "C1:NEW", "N")
    assert_shape(custom_free(example("api-reference__crm__deals__crm-deal-get.1"))["result"],
                 deal)
    wrong = hook(client, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "WON"}})
    assert wrong.status_code == 400  # WON is a stage of the general pipeline
    ok(hook(client, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "C1:WON",
                                                                  "CATEGORY_ID": 0}}))
    won = ok(hook(client, "crm.deal.get", {"id": deal_id}))
    assert (won["STAGE_ID"], won["STAGE_SEMANTIC_ID"], won["CLOSED"], won["CATEGORY_ID"]) == (
        "C1:WON", "S", "Y", "1")  # CATEGORY_ID is immutable on update
    assert hook(client, "crm.deal.add", {"fields": {"CATEGORY_ID": 7}}).status_code == 400
    listed = hook(client, "crm.deal.list", {"select": [
        "ID", "TITLE", "TYPE_ID", "CATEGORY_ID", "STAGE_ID", "OPPORTUNITY",
        "IS_MANUAL_OPPORTUNITY", "ASSIGNED_BY_ID", "DATE_CREATE"]}).get_json()
    assert_shape(example("api-reference__crm__deals__crm-deal-list.1"), listed, exact=True)
    assert ok(hook(client, "crm.deal.fields")) == example(
        "api-reference__crm__deals__crm-deal-fields.1")["result"]


def test_findbycomm_rules() -> None:
    client = make()
    contact = ok(hook(client, "crm.contact.add", {"fields": {"NAME": "A", "PHONE": [
        {"VALUE": "+7 (999) 123-45-67 ext. 12", "VALUE_TYPE": "WORK"}], "EMAIL": [
        {"VALUE": "Ann@Example.com", "VALUE_TYPE": "WORK"}]}}))
    found = hook(client, "crm.duplicate.findbycomm", {"type": "PHONE",
                                                      "values": ["79991234567"]}).get_json()
    assert_shape(example("api-reference__crm__duplicates__crm-duplicate-find-by-comm.1"), found,
                 exact=True)
    assert found["result"] == {"CONTACT": [contact]}
    assert ok(hook(client, "crm.duplicate.findbycomm", {"type": "EMAIL", "values": [
        "ann@example.COM"]})) == {"CONTACT": [contact]}
    assert ok(hook(client, "crm.duplicate.findbycomm", {"type": "EMAIL",
                                                        "values": ["none@x.org"]})) == []
    assert ok(hook(make(findbycomm_empty_as_list=False), "crm.duplicate.findbycomm",
                   {"type": "EMAIL", "values": ["none@x.org"]})) == {}
    over = hook(client, "crm.duplicate.findbycomm", {"type": "PHONE",
                                                     "values": [str(i) for i in range(21)]})
    assert over.status_code == 400
    unsupported = hook(client, "crm.duplicate.findbycomm", {"type": "WEB", "values": ["x"]})
    assert unsupported.get_json()["error"] == \
        "Communication type 'WEB' is not supported in current context"
    cmd = {f"l{i}": "crm.lead.add?fields[PHONE][0][VALUE]=+79991234567" for i in range(20)}
    ok(hook(client, "batch", {"cmd": cmd}))
    many = ok(hook(client, "crm.duplicate.findbycomm", {"type": "PHONE",
                                                        "values": ["+7 999 123 45 67"]}))
    assert list(many) == ["LEAD"] and len(many["LEAD"]) == 20  # 20+ leads: contacts left out
    only = ok(hook(client, "crm.duplicate.findbycomm", {"type": "PHONE", "entity_type":
                                                        "CONTACT", "values": ["+79991234567"]}))
    assert only == {"CONTACT": [contact]}


def test_timeline_comment_todo_and_their_listing(client: Any) -> None:
    lead = new_lead(client)
    resp = hook(client, "crm.timeline.comment.add", {"fields": {
        "ENTITY_ID": lead, "ENTITY_TYPE": "lead", "COMMENT": "Called back"}}).get_json()
    assert_shape(example("api-reference__crm__timeline__comments__crm-timeline-comment-add.1"),
                 resp, exact=True)
    upper = hook(client, "crm.timeline.comment.add", {"FIELDS": {
        "ENTITY_ID": lead, "ENTITY_TYPE": "lead", "COMMENT": "x"}})
    assert upper.status_code == 400 and upper.get_json()["error"] == "100"
    for fields, code in (({"ENTITY_ID": 999, "ENTITY_TYPE": "deal", "COMMENT": "x"},
                          "OWNER_NOT_FOUND"),
                         ({"ENTITY_ID": lead, "ENTITY_TYPE": "lead", "COMMENT": " "},
                          "INVALID_ARG_VALUE"),
                         ({"ENTITY_ID": lead, "ENTITY_TYPE": "dynamic_1046", "COMMENT": "x"},
                          "NOT_FOUND")):
        bad = hook(client, "crm.timeline.comment.add", {"fields": fields})
        assert (bad.status_code, bad.get_json()["error"]) == (400, code)
    deal = int(ok(hook(client, "crm.deal.add", {"fields": {"TITLE": "D"}})))
    todo = hook(client, "crm.activity.todo.add", {
        "ownerTypeId": 2, "ownerId": deal, "deadline": "2025-02-03T15:00:00",
        "title": "Call", "responsibleId": 2, "pingOffsets": [0, 15]}).get_json()
    assert_shape(example("api-reference__crm__timeline__activities__todo__crm-activity-todo-add.1"),
                 todo, exact=True)
    no_deadline = hook(client, "crm.activity.todo.add", {"ownerTypeId": 2, "ownerId": deal})
    assert no_deadline.get_json()["error"] == "100"
    assert hook(client, "crm.activity.todo.add", {
        "ownerTypeId": 2, "ownerId": deal, "deadline": "tomorrow"}).get_json()[
        "error"] == "WRONG_DATETIME_FORMAT"
    gone = hook(client, "crm.activity.todo.add", {"ownerTypeId": 1, "ownerId": 999,
                                                  "deadline": "2025-02-03T15:00:00"})
    assert gone.get_json() == example(
        "api-reference__crm__timeline__activities__todo__crm-activity-todo-add.2")
    lead_line = client.get("/_timeline", query_string={"entity_type": "lead",
                                                        "entity_id": lead}).get_json()
    assert [c["COMMENT"] for c in lead_line["comments"]] == ["Called back"]
    assert lead_line["activities"] == []
    deal_line = crm(client)["deals"][0]["timeline"]
    assert deal_line["activities"][0]["deadline"] == "2025-02-03T15:00:00+03:00"
    assert deal_line["activities"][0]["responsibleId"] == 2


ZERO_WIDTH_TEXT = (
    "Ann\u2060\u200b\u200c\u200d\u2060 via\ufeff Telegram\u200e\nhi \U0001f468\u200d\U0001f469"
)


def test_zero_width_characters_are_kept_unless_the_sandbox_strips_them(client: Any) -> None:
    """Whether Bitrix24 keeps them is UNCONFIRMED: kept by default, dropped
    from comments, to-do and task descriptions with ``strip_zero_width``."""
    for strip in (False, True):
        app = make(strip_zero_width=strip)
        lead = new_lead(app)
        ok(hook(app, "crm.timeline.comment.add", {"fields": {
            "ENTITY_ID": lead, "ENTITY_TYPE": "lead", "COMMENT": ZERO_WIDTH_TEXT}}))
        ok(hook(app, "crm.activity.todo.add", {
            "ownerTypeId": 1, "ownerId": lead, "deadline": "2025-02-03T15:00:00",
            "title": "Call", "description": ZERO_WIDTH_TEXT}))
        ok(hook(app, "tasks.task.add", {"fields": {
            "TITLE": "Call", "RESPONSIBLE_ID": 2, "DESCRIPTION": ZERO_WIDTH_TEXT,
            "UF_CRM_TASK": [f"L_{lead}"]}}))
        kept = "Ann via Telegram\nhi \U0001f468\U0001f469" if strip else ZERO_WIDTH_TEXT
        body = ok(hook(app, "batch", {"cmd": {
            "comments": f"crm.timeline.comment.list?filter[ENTITY_ID]={lead}"
                        "&filter[ENTITY_TYPE]=lead&select[]=COMMENT",
            "todos": f"crm.activity.list?filter[OWNER_TYPE_ID]=1&filter[OWNER_ID]={lead}"
                     "&select[]=DESCRIPTION",
            "tasks": f"tasks.task.list?filter[UF_CRM_TASK]=L_{lead}&select[]=DESCRIPTION"}}))
        assert body["result"]["comments"][0]["COMMENT"] == kept
        assert body["result"]["todos"][0]["DESCRIPTION"] == kept
        assert body["result"]["tasks"]["tasks"][0]["description"] == kept
    assert client.post("/_config", json={"strip_zero_width": True}).get_json()[
        "strip_zero_width"] is True
    assert client.post("/_config", json={"strip_zero_width": 1}).status_code == 400


def test_tasks_task_add(client: Any) -> None:
    lead = new_lead(client)
    resp = hook(client, "tasks.task.add", {"fields": {
        "TITLE": "Follow up", "RESPONSIBLE_ID": 2, "DEADLINE": "2025-12-31T23:59:59",
        "UF_CRM_TASK": [f"L_{lead}"]}}).get_json()
    assert_shape(example("api-reference__tasks__tasks-task-add.1"), resp, exact=True)
    task = resp["result"]["task"]
    assert task["title"] == "Follow up" and task["responsibleId"] == "2"
    assert task["responsible"]["name"] == "Maria Schmidt" and task["createdBy"] == "1"
    assert task["deadline"] == "2025-12-31T23:59:59+03:00"
    assert crm(client)["tasks"][0]["UF_CRM_TASK"] == [f"L_{lead}"]
    untitled = hook(client, "tasks.task.add", {"fields": {"RESPONSIBLE_ID": 2}})
    assert untitled.get_json() == example("api-reference__tasks__tasks-task-add.2")
    nobody = hook(client, "tasks.task.add", {"fields": {"TITLE": "x", "RESPONSIBLE_ID": 42}})
    assert nobody.get_json()["error"] == "ERROR_CORE"
    assert hook(client, "tasks.task.add", {}).get_json()["error"] == "100"


def test_users(client: Any) -> None:
    users = hook(client, "user.get", {"FILTER": {"ACTIVE": True}}).get_json()
    expected = example("api-reference__user__user-get.1")
    assert_shape(expected, users)
    assert set(users["result"][1]) >= set(expected["result"][0])
    assert [u["ID"] for u in users["result"]] == ["1", "2", "3"] and users["total"] == 3
    assert [u["NAME"] for u in ok(hook(client, "user.get", {"ID": 2}))] == ["Maria"]
    current = hook(client, "user.current").get_json()
    assert_shape(example("api-reference__user__user-current.1"), current)
    assert current["result"]["EMAIL"] == "klaus.weber@example.com"


# -- install and events (FACTS 2.5 / 2.6) ----------------------------------------------------------


def test_install_posts_onappinstall_form_encoded(receiver: dict[str, Any]) -> None:
    client = make(app={"install_handler": receiver["url"] + "/install"})
    result = install(client)
    assert result["finished"] is True and result["delivery"]["status"] == 200
    [hit] = receiver["got"]
    assert hit["path"] == "/install"
    assert hit["content_type"] == "application/x-www-form-urlencoded"
    assert "auth%5Baccess_token%5D=" in hit["body"]  # PHP bracket notation, percent-encoded
    payload = php_decode(hit["body"])
    assert_shape(example("api-reference__common__events__on-app-install.1"), payload,
                 exact=True, scalars=False)
    auth = payload["auth"]
    assert payload["event"] == "ONAPPINSTALL" and payload["data"]["INSTALLED"] == "Y"
    assert auth["client_endpoint"] == f"http://localhost/{DEMO_DOMAIN}/rest/"
    assert auth["server_endpoint"] == "http://localhost/oauth/rest/"
    assert auth["member_id"] == DEMO_MEMBER_ID and auth["status"] == "L"
    assert auth["application_token"] == state(client)["accounts"][0]["app"]["application_token"]
    assert call(client, "profile", auth["access_token"]).status_code == 200
    assert _refresh(client, auth["refresh_token"]).status_code == 200


def test_install_not_finished_blocks_events(receiver: dict[str, Any]) -> None:
    client = make(event_delivery="inline")
    receiver["answers"]["status"] = 500
    result = install(client, handler=receiver["url"] + "/install")
    assert result["finished"] is False
    tok = result["access_token"]
    assert ok(call(client, "app.info", tok))["INSTALLED"] is False
    ok(call(client, "event.bind", tok, {"event": "ONCRMLEADADD", "handler": receiver["url"]}))
    new_lead(client)
    assert len(receiver["got"]) == 1  # only the install attempt
    assert state(client)["accounts"][0]["app"]["finished"] is False


def test_event_bind_unbind_and_deliveries_without_retries(receiver: dict[str, Any]) -> None:
    client = make()
    tok = token(client)
    bind = call(client, "event.bind", tok, {"event": "onCrmLeadUpdate",
                                            "handler": receiver["url"] + "/lead"}).get_json()
    assert_shape(example("api-reference__events__event-bind.1"), bind, exact=True)
    assert call(client, "event.bind", tok, {"event": "ONCRMLEADUPDATE", "handler":
                receiver["url"] + "/lead"}).get_json()["error"] == "ERROR_HANDLER_ALREADY_EXIST"
    unknown = call(client, "event.bind", tok, {"event": "ONNOTHING", "handler": "https://x/"})
    assert unknown.status_code == 400
    assert unknown.get_json() == example("api-reference__events__event-bind.2")
    assert ok(call(client, "event.get", tok))[0]["event"] == "ONCRMLEADUPDATE"
    lead = new_lead(client)
    receiver["answers"]["status"] = 500
    answer = client.post("/_lead_status", json={"lead_id": lead, "status_id": "IN_PROCESS",
                                                "user_id": 2}).get_json()
    assert [d["status"] for d in answer["deliveries"]] == [500]
    time.sleep(0.3)
    assert len(receiver["got"]) == 1  # no retry
    payload = php_decode(receiver["got"][0]["body"])
    index_example = example("api-reference__events__index.1")
    assert_shape(index_example, payload, scalars=False)
    assert set(payload["auth"]) - set(index_example["auth"]) <= {"expires", "user_id"}
    assert payload["event"] == "ONCRMLEADUPDATE" and payload["data"] == {"FIELDS": {
        "ID": str(lead)}}
    assert payload["auth"]["user_id"] == "2"
    assert ok(hook(client, "crm.lead.get", {"id": lead}))["STATUS_ID"] == "IN_PROCESS"
    logged = state(client)["deliveries"]
    assert [(d["event"], d["status"]) for d in logged] == [("ONCRMLEADUPDATE", 500)]
    # an automation rule acted: no tokens
    client.post("/_lead_status", json={"lead_id": lead, "status_id": "PROCESSED",
                                       "user_id": None})
    robot = php_decode(receiver["got"][1]["body"])["auth"]
    assert set(robot) == {"domain", "client_endpoint", "server_endpoint", "member_id",
                          "application_token"}
    operator = install(client, user_id=2)["access_token"]
    offline = call(client, "event.unbind", operator, {"event": "ONCRMLEADUPDATE",
                                                      "event_type": "offline"})
    assert offline.status_code == 403
    assert offline.get_json() == example("api-reference__events__event-unbind.2")
    ok(call(client, "event.bind", tok, {"event": "ONCRMLEADUPDATE",
                                        "handler": receiver["url"] + "/lead"}))
    unbind = call(client, "event.unbind", tok, {"event": "ONCRMLEADUPDATE",
                                                "handler": receiver["url"] + "/lead"}).get_json()
    assert_shape(example("api-reference__events__event-unbind.1"), unbind, exact=True)
    assert unbind["result"] == {"count": 1}
    client.post("/_lead_status", json={"lead_id": lead, "status_id": "NEW"})
    assert len(receiver["got"]) == 2
    # a repeated install is an update: handlers must be bound again (event-bind.md)
    ok(call(client, "event.bind", tok, {"event": "ONCRMLEADADD", "handler": receiver["url"]}))
    assert ok(call(client, "event.get", token(client))) == []


def test_deal_stage_and_delete_events(receiver: dict[str, Any]) -> None:
    client = make()
    tok = token(client)
    for event in ("ONCRMDEALUPDATE", "ONCRMDEALDELETE", "ONCRMLEADDELETE", "ONCRMCONTACTDELETE"):
        ok(call(client, "event.bind", tok, {"event": event, "handler": receiver["url"] + "/e"}))
    deal = int(ok(hook(client, "crm.deal.add", {"fields": {"TITLE": "D"}})))
    moved = client.post("/_deal_stage", json={"deal_id": deal, "stage_id": "WON"}).get_json()
    assert moved["semantic"] == "S"
    assert ok(hook(client, "crm.deal.get", {"id": deal}))["CLOSED"] == "Y"
    assert client.post("/_deal_stage", json={"deal_id": deal,
                                             "stage_id": "C1:NEW"}).status_code == 400
    contact = int(ok(hook(client, "crm.contact.add", {"fields": {"NAME": "C"}})))
    client.post("/_delete", json={"entity": "deal", "id": deal})
    client.post("/_delete", json={"entity": "contact", "id": contact})
    events = [php_decode(h["body"]) for h in receiver["got"]]
    assert [(e["event"], e["data"]["FIELDS"]["ID"]) for e in events] == [
        ("ONCRMDEALUPDATE", str(deal)), ("ONCRMDEALDELETE", str(deal)),
        ("ONCRMCONTACTDELETE", str(contact))]
    assert hook(client, "crm.deal.get", {"id": deal}).get_json()["error_description"] == \
        "Not found"


def test_rest_changes_fire_events(receiver: dict[str, Any]) -> None:
    client = make(event_delivery="inline")
    tok = token(client)
    ok(call(client, "event.bind", tok, {"event": "ONCRMLEADADD", "handler": receiver["url"]}))
    ok(call(client, "event.bind", tok, {"event": "ONCRMLEADUPDATE", "handler": receiver["url"]}))
    lead = int(ok(call(client, "crm.lead.add", tok, {"fields": {"TITLE": "x"}})))
    ok(hook(client, "crm.lead.update", {"id": lead, "fields": {"TITLE": "y"}}))
    got = [php_decode(h["body"]) for h in receiver["got"]]
    assert [g["event"] for g in got] == ["ONCRMLEADADD", "ONCRMLEADUPDATE"]
    assert all(g["data"]["FIELDS"]["ID"] == str(lead) for g in got)
    background = make()
    btok = token(background)
    ok(call(background, "event.bind", btok, {"event": "ONCRMLEADADD",
                                             "handler": receiver["url"] + "/bg"}))
    new_lead(background)
    wait_for(lambda: any(h["path"] == "/bg" for h in receiver["got"]))


def test_uninstall_sends_onappuninstall_without_tokens(receiver: dict[str, Any]) -> None:
    client = make()
    first = install(client)
    tok = first["access_token"]
    ok(call(client, "event.bind", tok, {"event": "ONAPPUNINSTALL", "handler": receiver["url"]}))
    answer = client.post("/_uninstall", json={"clean": 1}).get_json()
    assert answer["uninstalled"] is True
    [hit] = receiver["got"]
    payload = php_decode(hit["body"])
    assert_shape(example("api-reference__common__events__on-app-uninstall.1"), payload,
                 exact=True, scalars=False)
    assert payload["auth"]["application_token"] == first["application_token"]
    assert payload["data"]["CLEAN"] == "1"
    assert call(client, "profile", tok).get_json()["error"] == "NO_AUTH_FOUND"
    assert _refresh(client, first["refresh_token"]).get_json()["error"] == "invalid_grant"
    assert state(client)["accounts"][0]["event_bindings"] == []


# -- Open Lines connector (FACTS 2.8) --------------------------------------------------------------


def register(client: Any, tok: str, connector: str = "myconnector", **extra: Any) -> Any:
    return call(client, "imconnector.register", tok, {
        "ID": connector, "NAME": "My Connector", "ICON": {"DATA_IMAGE": SVG, "COLOR": "#69acc0"},
        "PLACEMENT_HANDLER": "https://app.example/placement", **extra})


def connect(client: Any, tok: str, **extra: Any) -> None:
    assert ok(register(client, tok, **extra)) == {"result": True}
    ok(call(client, "imconnector.activate", tok, {"CONNECTOR": "myconnector",
                                                  "LINE": DEMO_LINE_ID, "ACTIVE": 1}))


def customer_message(text: str = "Good afternoon", **over: Any) -> dict[str, Any]:
    message: dict[str, dict[str, Any]] = {
        "user": {"id": "ext-user-42", "name": "Ivan", "last_name": "Ivanov"},
        "message": {"id": "ext-msg-1001", "date": 1773265993, "text": text},
        "chat": {"id": "channel-123", "name": "Support Channel",
                 "url": "https://example.com/chats/123"}}
    for block, values in over.items():
        message[block] = {**message[block], **values}
    return message


def send(client: Any, tok: str, *messages: dict[str, Any], line: int = DEMO_LINE_ID) -> Any:
    return call(client, "imconnector.send.messages", tok, {
        "CONNECTOR": "myconnector", "LINE": line, "MESSAGES": list(messages)})


def test_connector_lifecycle_matches_the_examples(client: Any) -> None:
    tok = token(client)
    reg = register(client, tok, connector="MyConnector").get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-register.1"), reg,
                 exact=True)
    dotted = register(client, tok, connector="my.connector")
    assert dotted.status_code == 200
    assert dotted.get_json()["result"]["error"] == "APPLICATION_REGISTRATION_ERROR_POINT"
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-register.2")[
        "result"], dotted.get_json()["result"], exact=True)
    assert call(client, "imconnector.register", tok, {"ID": "x"}).get_json()["result"][
        "error"] == "NAME_REQUIRED"
    ok(register(client, tok, NAME="Renamed", NEED_SIGNATURE="N"))  # re-register updates
    listed = call(client, "imconnector.list", tok).get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-list.1"), listed,
                 exact=True)
    assert listed["result"]["myconnector"] == "Renamed"
    no_active = call(client, "imconnector.activate", tok, {"CONNECTOR": "myconnector",
                                                           "LINE": DEMO_LINE_ID})
    assert no_active.get_json() == example(
        "api-reference__imopenlines__imconnector__imconnector-activate.2")
    act = call(client, "imconnector.activate", tok, {"CONNECTOR": "myconnector",
                                                     "LINE": DEMO_LINE_ID, "ACTIVE": "1"})
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-activate.1"),
                 act.get_json(), exact=True)
    data = call(client, "imconnector.connector.data.set", tok, {
        "CONNECTOR": "myconnector", "LINE": DEMO_LINE_ID, "DATA": {
            "ID": "channel-123", "URL": "https://example.com", "URL_IM": "https://example.com",
            "NAME": "Support"}})
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-connector-data-set.1"),
                 data.get_json(), exact=True)
    status = call(client, "imconnector.status", tok, {"CONNECTOR": "myconnector",
                                                      "LINE": DEMO_LINE_ID}).get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-status.1"), status,
                 exact=True)
    assert status["result"]["STATUS"] is True and status["result"]["LINE"] == DEMO_LINE_ID
    assert ok(call(client, "imconnector.status", tok, {"CONNECTOR": "myconnector"}))[
        "CONFIGURED"] is False  # LINE defaults to 0
    [connector] = state(client)["accounts"][0]["connectors"]
    assert connector["NEED_SIGNATURE"] is False and connector["lines"][0]["data"]["ID"] == \
        "channel-123"
    for name, body, page in (
            ("imconnector.status", {"LINE": 1}, "status.2"),
            ("imconnector.connector.data.set", {"CONNECTOR": "myconnector", "LINE": 1},
             "connector-data-set.2"),
            ("imconnector.update.messages", {"CONNECTOR": "myconnector", "MESSAGES": [{}]},
             "update-messages.2"),
            ("imconnector.delete.messages", {"LINE": 1, "MESSAGES": [{}]}, "delete-messages.2"),
            ("imconnector.send.messages", {"CONNECTOR": "myconnector", "LINE": 1},
             "send-messages.2")):
        resp = call(client, name, tok, body)
        assert resp.status_code == 400, name
        assert resp.get_json() == example(
            f"api-reference__imopenlines__imconnector__imconnector-{page}"), name
    operator = token(client, user_id=2)  # not an admin
    assert call(client, "imconnector.list", operator).get_json() == example(
        "api-reference__imopenlines__imconnector__imconnector-list.2")
    gone = call(client, "imconnector.unregister", tok, {"ID": "myconnector"}).get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-unregister.1"),
                 gone, exact=True)
    again = call(client, "imconnector.unregister", tok, {"ID": "myconnector"}).get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-unregister.2")[
        "result"], again["result"], exact=True)


def test_config_list_get(client: Any) -> None:
    tok = token(client)
    lines = call(client, "imopenlines.config.list.get", tok, {"OPTIONS": {
        "QUEUE": "Y", "CONFIG_QUEUE": "Y"}}).get_json()
    expected = example("api-reference__imopenlines__openlines__imopenlines-config-list-get.1")
    row = expected["result"][0]
    # QUEUE_USERS_FIELDS is keyed by user id: compare one entry's shape
    row["QUEUE_USERS_FIELDS"] = {"2": row["QUEUE_USERS_FIELDS"]["101"],
                                 "1": row["QUEUE_USERS_FIELDS"]["205"]}
    assert_shape(expected, lines, exact=True)
    assert lines["result"][0]["ID"] == str(DEMO_LINE_ID) and lines["result"][0]["QUEUE"] == [2, 1]
    plain = ok(call(client, "imopenlines.config.list.get", tok))
    assert set(plain[0]) == {"ID", "LINE_NAME", "ACTIVE"}


def test_send_messages_validation_shape_chat_and_crm(client: Any) -> None:
    tok = token(client)
    connect(client, tok)
    for body, text in (({"LINE": 1, "MESSAGES": [{}]}, "Argument 'CONNECTOR' is null or empty"),
                       ({"CONNECTOR": "myconnector", "MESSAGES": [{}]},
                        "Argument 'LINE' is null or empty"),
                       ({"CONNECTOR": "myconnector", "LINE": 1},
                        "Argument 'MESSAGES' is null or empty"),
                       ({"CONNECTOR": "myconnector", "LINE": 1, "MESSAGES": [{"user": {}}]},
                        "The incorrect structure of a message inside MESSAGES parameter")):
        resp = call(client, "imconnector.send.messages", tok, body)
        assert resp.status_code == 400 and resp.get_json() == {"error": "ERROR_ARGUMENT",
                                                               "error_description": text}
    request_example = customer_message(
        user={"picture": {"url": "https://example.com/u42.png"}, "email": "ivan@example.com",
              "phone": "+19990000000", "skip_phone_validate": "Y", "gender": "male"},
        message={"files": [{"url": "https://example.com/files/spec.pdf", "name": "spec.pdf"}],
                 "disable_crm": "Y"})
    resp = send(client, tok, request_example).get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-send-messages.1"),
                 resp, exact=True)
    first = resp["result"]["DATA"]["RESULT"][0]
    assert first["chat"]["description"] == "Link to the original post: https://example.com/chats/123"
    assert crm(client)["leads"] == []  # disable_crm=Y: no tracker
    again = ok(send(client, tok, customer_message("Are you there?")))["DATA"]["RESULT"][0]
    assert again["session"] == first["session"] and again["user"] == first["user"]
    [lead] = crm(client)["leads"]
    im = lead["multifields"]["IM"][0]
    assert im["VALUE_TYPE"] == "OPENLINE"
    assert im["VALUE"] == f"imol|myconnector|{DEMO_LINE_ID}|channel-123|{first['user']}"
    assert lead["fields"]["HAS_IMOL"] == "Y" and lead["fields"]["ASSIGNED_BY_ID"] == "2"
    other = ok(send(client, tok, customer_message(user={"id": "ext-user-7", "name": "Olga",
                                                        "last_name": "Orlova"},
                                                  chat={"id": "channel-9"})))
    assert other["DATA"]["RESULT"][0]["session"]["CHAT_ID"] != first["session"]["CHAT_ID"]
    tutorial = example("tutorials__openlines__example-connector.4")
    assert_shape(tutorial["result"], other)
    bad_names = ok(send(client, tok, customer_message(user={"name": "Ivan2"}),
                        customer_message(user={"last_name": "A" * 26})))
    assert bad_names["SUCCESS"] is False
    assert [r["SUCCESS"] for r in bad_names["DATA"]["RESULT"]] == [False, False]
    assert all(r["ERRORS"] for r in bad_names["DATA"]["RESULT"])
    lax = make(connector_name_policy="accept")
    lax_tok = token(lax)
    connect(lax, lax_tok)
    assert ok(send(lax, lax_tok, customer_message(user={"name": "Ivan2"})))["SUCCESS"] is True
    ok(call(client, "imconnector.activate", tok, {"CONNECTOR": "myconnector",
                                                  "LINE": DEMO_LINE_ID, "ACTIVE": 0}))
    inactive = send(client, tok, customer_message())
    assert inactive.status_code == 400 and inactive.get_json()["error"] == "NOT_ACTIVE_LINE"
    chats = state(client)["accounts"][0]["chats"]
    assert [m["text"] for m in chats[0]["messages"]] == ["Good afternoon", "Are you there?"]
    assert chats[0]["messages"][0]["direction"] == "in"


def test_update_and_delete_messages(client: Any) -> None:
    tok = token(client)
    connect(client, tok)
    ok(send(client, tok, customer_message()))
    upd = call(client, "imconnector.update.messages", tok, {
        "CONNECTOR": "myconnector", "LINE": DEMO_LINE_ID,
        "MESSAGES": [customer_message("Good afternoon, we clarified the details")]}).get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-update-messages.1"),
                 upd, exact=True)
    delete = call(client, "imconnector.delete.messages", tok, {
        "CONNECTOR": "myconnector", "LINE": DEMO_LINE_ID, "MESSAGES": [
            {"user": {"id": "ext-user-42"}, "message": {"id": "ext-msg-1001"},
             "chat": {"id": "channel-123"}}]}).get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-delete-messages.1"),
                 delete, exact=True)
    [msg] = state(client)["accounts"][0]["chats"][0]["messages"]
    assert msg["deleted"] is True and msg["updated"] is True
    assert msg["text"] == "Good afternoon, we clarified the details"


def test_operator_reply_fires_onimconnectormessageadd(receiver: dict[str, Any]) -> None:
    client = make()
    tok = token(client)
    connect(client, tok)
    ok(call(client, "event.bind", tok, {"event": "OnImConnectorMessageAdd",
                                        "handler": receiver["url"] + "/im"}))
    ok(send(client, tok, customer_message()))
    answer = client.post("/_reply", json={"conversation": "channel-123",
                                          "text": "Guten Tag!"}).get_json()
    assert answer["webhook"]["status"] == 200 and answer["message"]["direction"] == "out"
    [hit] = receiver["got"]
    assert hit["content_type"] == "application/x-www-form-urlencoded"
    payload = php_decode(hit["body"])
    assert_shape(example("api-reference__imopenlines__imconnector__events__on-im-connector-"
                         "message-add.1"), payload, exact=True, scalars=False)
    item = payload["data"]["MESSAGES"][0]
    assert payload["event"] == "ONIMCONNECTORMESSAGEADD"
    assert payload["data"]["CONNECTOR"] == "myconnector" and payload["data"]["LINE"] == "1"
    assert item["message"] == {"user_id": "2", "text": "[b]Maria Schmidt:[/b] [br]Guten Tag!"}
    assert item["chat"] == {"id": "channel-123"}
    assert item["im"]["message_id"] == str(answer["message"]["id"])
    assert payload["auth"]["user_id"] == "2"
    assert call(client, "profile", payload["auth"]["access_token"]).get_json()["result"][
        "ID"] == "2"
    # without NEED_SIGNATURE the text goes as typed (BB-code line breaks)
    ok(register(client, tok, NEED_SIGNATURE=False))
    client.post("/_reply", json={"line": DEMO_LINE_ID, "text": "a\nb", "user_id": 1})
    assert php_decode(receiver["got"][1]["body"])["data"]["MESSAGES"][0]["message"] == {
        "user_id": "1", "text": "a[br]b"}


def test_delivery_and_reading_receipts(receiver: dict[str, Any]) -> None:
    client = make()
    tok = token(client)
    connect(client, tok)
    ok(call(client, "event.bind", tok, {"event": "ONIMCONNECTORMESSAGEADD",
                                        "handler": receiver["url"]}))
    ok(send(client, tok, customer_message()))
    client.post("/_reply", json={"conversation": "channel-123", "text": "Hi"})
    im = php_decode(receiver["got"][0]["body"])["data"]["MESSAGES"][0]["im"]
    receipt = {"CONNECTOR": "myconnector", "LINE": DEMO_LINE_ID, "MESSAGES": [
        {"im": {"chat_id": int(im["chat_id"]), "message_id": int(im["message_id"])},
         "message": {"id": ["ext-msg-1007"], "date": 1738065600}, "chat": {"id": "channel-123"}}]}
    scalar = json.loads(json.dumps(receipt))
    scalar["MESSAGES"][0]["message"]["id"] = "ext-msg-1007"
    refused = call(client, "imconnector.send.status.delivery", tok, scalar)
    assert refused.status_code == 400
    resp = call(client, "imconnector.send.status.delivery", tok, receipt).get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-send-status-"
                         "delivery.1"), resp, exact=True)
    assert resp["result"] == {"SUCCESS": True, "DATA": []}
    reading = call(client, "imconnector.send.status.reading", tok, receipt).get_json()
    assert_shape(example("api-reference__imopenlines__imconnector__imconnector-send-status-"
                         "reading.1"), reading, exact=True)
    out = state(client)["accounts"][0]["chats"][0]["messages"][-1]
    assert out["direction"] == "out" and out["delivered"]["external_ids"] == ["ext-msg-1007"]
    assert out["read"]["external_ids"] == ["ext-msg-1007"]
    stray = json.loads(json.dumps(receipt))
    stray["MESSAGES"][0]["im"]["message_id"] = 1
    ok(call(client, "imconnector.send.status.delivery", tok, stray))
    assert len(state(client)["accounts"][0]["unmatched_receipts"]) == 1


# -- faults, stats, control ------------------------------------------------------------------------


def test_faults_are_bitrix24_shaped(client: Any) -> None:
    client.post("/_faults", json={"error_rate": 1.0})
    resp = hook(client, "profile")
    assert resp.status_code == 500 and resp.get_json()["error"] == "INTERNAL_SERVER_ERROR"
    assert client.get("/_state").status_code == 200  # control endpoints are never faulted
    client.post("/_faults", json={"reset": True, "rate_429": 1.0})
    throttled = hook(client, "profile")
    assert throttled.status_code == 503 and "Retry-After" not in throttled.headers
    assert throttled.get_json()["error"] == "QUERY_LIMIT_EXCEEDED"
    client.post("/_faults", json={"reset": True, "commit_then_timeout_rate": 1.0,
                                  "timeout_seconds": 0.05})
    assert hook(client, "crm.lead.add", {"fields": {"TITLE": "late"}}).status_code == 200
    client.post("/_faults", json={"reset": True})
    assert len(crm(client)["leads"]) == 1  # committed despite the late answer


def test_stats_count_batch_once_and_list_its_commands(client: Any) -> None:
    ok(hook(client, "batch", {"cmd": {"a": "crm.lead.add?fields[TITLE]=x", "b": "profile"}}))
    hook(client, "crm.lead.get", {"id": 999})
    stats = client.get("/_stats").get_json()
    assert stats["total"] == 2 and stats["by_method"] == {"batch": 1, "crm.lead.get": 1}
    assert stats["by_status"] == {"200": 1, "400": 1}
    assert stats["batch_commands"] == {"crm.lead.add": 1, "profile": 1}
    assert stats["requests"][0][2:] == ["batch", 200, ["crm.lead.add", "profile"]]


def test_reset_config_and_portal_isolation() -> None:
    client = make(portals=[DEFAULTS["portals"][0], OTHER])
    lead = new_lead(client)
    foreign = hook(client, "crm.lead.get", {"id": lead}, portal="other.bitrix24.com",
                   code="otherportalcode1")
    assert foreign.get_json() == {"error": "", "error_description": "Not found"}
    assert state(client, "other.bitrix24.com")["accounts"][0]["leads"] == []
    client.post("/_config", json={"findbycomm_empty_as_list": False})
    assert client.get("/_config").get_json()["findbycomm_empty_as_list"] is False
    assert client.post("/_config", json={"portals": []}).status_code == 400
    client.post("/_reset")
    assert state(client)["accounts"][0]["leads"] == []


def test_mounted_under_sandbox_bitrix24_over_http(receiver: dict[str, Any]) -> None:
    from sandbox.server import build

    with serve_wsgi(build({"bitrix24": {"app": {"install_handler": receiver["url"]}}})) as srv:
        base = srv.url + "/sandbox/bitrix24"
        requests.post(f"{base}/_install", json={}, timeout=10).raise_for_status()
        auth = php_decode(receiver["got"][0]["body"])["auth"]
        assert auth["client_endpoint"] == f"{base}/{DEMO_DOMAIN}/rest/"
        made = requests.post(auth["client_endpoint"] + "crm.lead.add", timeout=10,
                             json={"auth": auth["access_token"], "fields": {"TITLE": "HTTP"}})
        assert made.status_code == 200 and made.json()["result"] == 1
        pair = requests.get(f"{base}/oauth/oauth/token/", timeout=10, params={
            "grant_type": "refresh_token", "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET, "refresh_token": auth["refresh_token"]}).json()
        assert pair["server_endpoint"] == f"{base}/oauth/rest/"
        info = requests.get(pair["server_endpoint"] + "app.info", timeout=10,
                            params={"auth": pair["access_token"]}).json()
        assert info["result"]["INSTALLED"] is True


# -- the list methods a retry looks entries up with --------------------------------------------

#: the first row of the answer example of b24restdocs
#: api-reference/crm/timeline/comments/crm-timeline-comment-list.md (a file of the
#: example is an image; ours are plain files, so its "image" member is left out)
COMMENT_LIST_ROW = {
    "ID": "999", "ENTITY_ID": "2", "ENTITY_TYPE": "deal", "CREATED": "2020-03-02T12:00:00+03:00",
    "COMMENT": "New comment was added", "AUTHOR_ID": "1", "FILES": {"1": {
        "id": 1, "date": "2020-03-02T12:00:00+03:00", "type": "image", "name": "1.gif",
        "size": 43, "authorId": 1, "authorName": "John Dou", "urlPreview": "https://x/",
        "urlShow": "https://x/", "urlDownload": "https://x/"}}}
#: the answer example's row of b24restdocs
#: api-reference/crm/timeline/activities/activity-base/crm-activity-list.md
ACTIVITY_LIST_ROW = {
    "ID": "20", "OWNER_ID": "15", "OWNER_TYPE_ID": "3", "TYPE_ID": "2",
    "PROVIDER_ID": "VOXIMPLANT_CALL", "PROVIDER_TYPE_ID": "CALL", "PROVIDER_GROUP_ID": None,
    "ASSOCIATED_ENTITY_ID": "0", "SUBJECT": "Outgoing call Klaus Weber",
    "CREATED": "2020-09-27T13:26:55+03:00", "LAST_UPDATED": "2021-03-21T20:28:24+03:00",
    "START_TIME": "2020-09-27T13:25:00+03:00", "END_TIME": "2020-09-27T19:25:00+03:00",
    "DEADLINE": "2020-09-27T13:25:00+03:00", "COMPLETED": "Y", "STATUS": "2",
    "RESPONSIBLE_ID": "505", "PRIORITY": "2", "NOTIFY_TYPE": "1", "NOTIFY_VALUE": "15",
    "DESCRIPTION": "", "DESCRIPTION_TYPE": "1", "DIRECTION": "2", "LOCATION": "", "SETTINGS": [],
    "ORIGINATOR_ID": None, "ORIGIN_ID": None, "AUTHOR_ID": "505", "EDITOR_ID": "505",
    "PROVIDER_PARAMS": [], "PROVIDER_DATA": None, "RESULT_MARK": "0", "RESULT_VALUE": None,
    "RESULT_SUM": None, "RESULT_CURRENCY_ID": None, "RESULT_STATUS": "0", "RESULT_STREAM": "0",
    "RESULT_SOURCE_ID": None, "AUTOCOMPLETE_RULE": "0"}
#: the selected fields of the answer example of b24restdocs api-reference/tasks/tasks-task-list.md
TASK_LIST_ROW = {
    "id": "8017", "title": "Task example", "description": "Task description",
    "deadline": "2025-10-24T19:00:00+02:00", "createdDate": "2025-06-04T16:15:55+02:00",
    "responsibleId": "547", "priority": "2", "status": "2", "subStatus": "2", "responsible": {
        "id": "547", "name": "Maria", "link": "/company/personal/user/547/",
        "icon": "/bitrix/images/tasks/default_avatar.png", "workPosition": "Tester"}}
ACCESS_DENIED = {"error": "", "error_description": "Access denied."}


def _with_users_hook(**rights: str) -> Any:
    """A client whose users ``u<id>=...`` have that CRM_ACCESS and a webhook each
    (code ``<id>hook000000001``)."""
    portal = json.loads(json.dumps(DEFAULTS["portals"][0]))
    for user in portal["users"]:
        if f"u{user['ID']}" in rights:
            user["CRM_ACCESS"] = rights[f"u{user['ID']}"]
            portal["webhooks"].append({"user_id": user["ID"], "code": f"{user['ID']}hook000000001",
                                       "scopes": ["crm", "task"]})
    return make(portals=[portal])


def test_timeline_comment_list_pages_sorts_selects_and_needs_its_filter(client: Any) -> None:
    lead, other = new_lead(client), new_lead(client)
    for chunk in (range(30), range(30, 55)):
        cmd = {f"c{i}": f"crm.timeline.comment.add?fields[ENTITY_ID]={lead}&"
                        f"fields[ENTITY_TYPE]=lead&fields[COMMENT]=note {i}" for i in chunk}
        assert not ok(hook(client, "batch", {"cmd": cmd}))["result_error"]
    ok(hook(client, "crm.timeline.comment.add", {"fields": {
        "ENTITY_ID": other, "ENTITY_TYPE": "lead", "COMMENT": "with a file",
        "FILES": [["offer.pdf", "JVBERi0="]]}}))
    flt = {"ENTITY_ID": lead, "ENTITY_TYPE": "lead"}
    first = hook(client, "crm.timeline.comment.list", {"filter": flt}).get_json()
    assert list(first) == ["result", "next", "total", "time"]
    assert first["total"] == 55 and first["next"] == 50 and len(first["result"]) == 50
    assert [r["COMMENT"] for r in first["result"][:2]] == ["note 0", "note 1"]  # by ID
    row = first["result"][0]
    assert_shape({k: v for k, v in COMMENT_LIST_ROW.items() if k != "FILES"}, row, exact=True)
    assert row["ENTITY_ID"] == str(lead) and row["AUTHOR_ID"] == "1"
    last = hook(client, "crm.timeline.comment.list", {"filter": flt, "start": 50}).get_json()
    assert "next" not in last and len(last["result"]) == 5 and last["total"] == 55
    newest = ok(hook(client, "crm.timeline.comment.list", {
        "filter": {"ENTITY_ID": str(lead), "ENTITY_TYPE": "LEAD"}, "order": {"ID": "DESC"},
        "select": ["ID", "COMMENT"]}))
    assert newest[0] == {"ID": newest[0]["ID"], "COMMENT": "note 54"}
    assert int(newest[0]["ID"]) > int(newest[1]["ID"])
    # only ID / CREATED / AUTHOR_ID sort, and only an exact "DESC" sorts descending
    # (the vendor's CCrmTimelineCommentRestProxy; UNCONFIRMED beyond that code copy)
    for order in ({"COMMENT": "DESC"}, {"ID": "desc"}):
        rows = ok(hook(client, "crm.timeline.comment.list", {"filter": flt, "order": order}))
        assert rows[0]["COMMENT"] == "note 0", order
    everything = ok(hook(client, "crm.timeline.comment.list", {"filter": flt, "select": []}))
    assert set(everything[0]) == set(COMMENT_LIST_ROW) - {"FILES"}
    [filed] = ok(hook(client, "crm.timeline.comment.list", {"filter": {
        "ENTITY_ID": other, "ENTITY_TYPE": "lead"}, "select": ["ID"]}))
    assert set(filed) == {"ID", "FILES"}  # FILES comes with a comment that has files
    [(file_id, file)] = filed["FILES"].items()
    assert_shape(COMMENT_LIST_ROW["FILES"]["1"], file, exact=True)
    assert file_id == str(file["id"]) and file["name"] == "offer.pdf"
    assert ok(hook(client, "crm.timeline.comment.list", {"filter": {
        "ENTITY_ID": 999, "ENTITY_TYPE": "deal"}})) == []
    # ENTITY_ID and ENTITY_TYPE are required; the page's one error is "Access denied."
    for body in ({}, {"filter": {"ENTITY_ID": lead}}, {"filter": {"ENTITY_TYPE": "lead"}},
                 {"filter": {"ENTITY_ID": lead, "ENTITY_TYPE": "dynamic_1046"}},
                 {"filter": {"ENTITY_ID": "x", "ENTITY_TYPE": "lead"}}):
        resp = hook(client, "crm.timeline.comment.list", body)
        assert (resp.status_code, resp.get_json()) == (400, ACCESS_DENIED), body
    bad = hook(client, "crm.timeline.comment.list", {"filter": "ENTITY_ID"})
    assert (bad.status_code, bad.get_json()) == (400, {
        "error": "", "error_description": "Parameter 'filter' must be array."})
    # read access is enough; no CRM access is refused
    rights = _with_users_hook(u2="none", u3="read")
    mine = new_lead(rights)
    ok(hook(rights, "crm.timeline.comment.add", {"fields": {
        "ENTITY_ID": mine, "ENTITY_TYPE": "lead", "COMMENT": "x"}}))
    body = {"filter": {"ENTITY_ID": mine, "ENTITY_TYPE": "lead"}}
    assert len(ok(hook(rights, "crm.timeline.comment.list", body, user=3,
                       code="3hook000000001"))) == 1
    denied = hook(rights, "crm.timeline.comment.list", body, user=2, code="2hook000000001")
    assert (denied.status_code, denied.get_json()) == (400, ACCESS_DENIED)


def test_activity_list_shows_the_todos(client: Any) -> None:
    lead = new_lead(client)
    deal = int(ok(hook(client, "crm.deal.add", {"fields": {"TITLE": "D"}})))
    on_lead = ok(hook(client, "crm.activity.todo.add", {
        "ownerTypeId": 1, "ownerId": lead, "deadline": "2025-02-04T10:00:00",
        "title": "Reply to Ann", "description": "Is the blue one in stock?",
        "responsibleId": 2}))["id"]
    on_deal = ok(hook(client, "crm.activity.todo.add", {
        "ownerTypeId": 2, "ownerId": deal, "deadline": "2025-02-03T10:00:00",
        "title": "Send the offer"}))["id"]
    both = hook(client, "crm.activity.list", {"select": ["*"]}).get_json()
    assert list(both) == ["result", "total", "time"] and both["total"] == 2
    assert [r["ID"] for r in both["result"]] == [str(on_deal), str(on_lead)]  # START_TIME asc
    assert_shape(ACTIVITY_LIST_ROW, both["result"][0], exact=True)
    [row] = ok(hook(client, "crm.activity.list", {"filter": {"OWNER_TYPE_ID": 1,
                                                              "OWNER_ID": lead}}))
    assert {k: row[k] for k in ("ID", "OWNER_TYPE_ID", "OWNER_ID", "SUBJECT", "DESCRIPTION",
                                "DEADLINE", "RESPONSIBLE_ID", "COMPLETED", "PROVIDER_ID",
                                "PROVIDER_TYPE_ID", "TYPE_ID", "AUTHOR_ID")} == {
        "ID": str(on_lead), "OWNER_TYPE_ID": "1", "OWNER_ID": str(lead),
        "SUBJECT": "Reply to Ann", "DESCRIPTION": "Is the blue one in stock?",
        "DEADLINE": "2025-02-04T10:00:00+03:00", "RESPONSIBLE_ID": "2", "COMPLETED": "N",
        "PROVIDER_ID": "CRM_TODO", "PROVIDER_TYPE_ID": "TODO", "TYPE_ID": "6", "AUTHOR_ID": "1"}
    picked = ok(hook(client, "crm.activity.list", {"select": ["ID", "SUBJECT"],
                                                   "order": {"ID": "DESC"}}))
    assert picked == [{"ID": str(on_deal), "SUBJECT": "Send the offer"},
                      {"ID": str(on_lead), "SUBJECT": "Reply to Ann"}]
    with_comm = ok(hook(client, "crm.activity.list", {"select": ["*", "COMMUNICATIONS"]}))
    assert with_comm[0]["COMMUNICATIONS"] == [] and "FILES" not in with_comm[0]
    bound = ok(hook(client, "crm.activity.list", {"filter": {"BINDINGS": [{"OWNER_TYPE_ID": 2}]},
                                                  "select": ["ID"]}))
    assert bound == [{"ID": str(on_deal)}]
    assert [r["ID"] for r in ok(hook(client, "crm.activity.list", {
        "filter": {"%SUBJECT": "offer", "COMPLETED": "N", "PROVIDER_ID": "CRM_TODO"}}))] == [
        str(on_deal)]
    for name in ("filter", "order"):
        bad = hook(client, "crm.activity.list", {name: "x"})
        assert (bad.status_code, bad.get_json()) == (400, {
            "error": "", "error_description": f"Parameter '{name}' must be array."})
    # 50 a page
    cmd = {f"t{i}": f"crm.activity.todo.add?ownerTypeId=2&ownerId={deal}&"
                    f"deadline=2025-03-01T10:{i:02d}:00&title=n{i}" for i in range(50)}
    assert not ok(hook(client, "batch", {"cmd": cmd}))["result_error"]
    flt = {"OWNER_TYPE_ID": 2, "OWNER_ID": deal}
    first = hook(client, "crm.activity.list", {"filter": flt}).get_json()
    assert first["total"] == 51 and first["next"] == 50 and len(first["result"]) == 50
    rest = hook(client, "crm.activity.list", {"filter": flt, "start": 50}).get_json()
    assert [r["SUBJECT"] for r in rest["result"]] == ["n49"] and "next" not in rest
    # the rows follow the caller's permissions: none without CRM access
    rights = _with_users_hook(u2="none")
    ok(hook(rights, "crm.activity.todo.add", {"ownerTypeId": 1, "ownerId": new_lead(rights),
                                              "deadline": "2025-02-04T10:00:00"}))
    assert hook(rights, "crm.activity.list", user=2, code="2hook000000001").get_json()[
        "total"] == 0


def test_tasks_task_list(client: Any) -> None:
    lead, other = new_lead(client), new_lead(client)
    for chunk in (range(30), range(30, 52)):
        cmd = {f"t{i}": f"tasks.task.add?fields[TITLE]=Call {i}&fields[RESPONSIBLE_ID]="
                        f"{1 if i % 2 else 2}&fields[DESCRIPTION]=about {i}&"
                        f"fields[UF_CRM_TASK][0]=L_{other if i == 7 else lead}" for i in chunk}
        assert not ok(hook(client, "batch", {"cmd": cmd}))["result_error"]
    first = hook(client, "tasks.task.list", {"select": ["ID", "TITLE"]}).get_json()
    assert list(first) == ["result", "next", "total", "time"]
    assert first["total"] == 52 and first["next"] == 50
    tasks = first["result"]["tasks"]
    assert len(tasks) == 50 and tasks[0] == {"id": tasks[0]["id"], "title": "Call 51"}  # ID desc
    rest = hook(client, "tasks.task.list", {"start": 50, "select": ["ID"]}).get_json()
    assert len(rest["result"]["tasks"]) == 2 and "next" not in rest
    [bound] = ok(hook(client, "tasks.task.list", {"filter": {"UF_CRM_TASK": f"L_{other}"},
                                                  "select": ["ID", "DESCRIPTION", "UF_CRM_TASK"],
                                                  "order": {"ID": "desc"}}))["tasks"]
    assert bound == {"id": bound["id"], "description": "about 7", "ufCrmTask": [f"L_{other}"]}
    assert len(ok(hook(client, "tasks.task.list", {"filter": {
        "UF_CRM_TASK": [f"L_{lead}", "D_1"]}}))["tasks"]) == 50
    picked = ok(hook(client, "tasks.task.list", {
        "filter": {"TITLE": "Call 1%", "RESPONSIBLE_ID": 2}, "order": {"TITLE": "asc"},
        "select": ["ID", "TITLE", "DESCRIPTION", "DEADLINE", "CREATED_DATE", "RESPONSIBLE_ID",
                   "PRIORITY", "STATUS"]}))["tasks"]
    assert [t["title"] for t in picked] == ["Call 10", "Call 12", "Call 14", "Call 16",
                                            "Call 18"]
    assert_shape(TASK_LIST_ROW, picked[0], exact=True)
    assert picked[0]["responsible"]["name"] == "Maria Schmidt"
    assert ok(hook(client, "tasks.task.list", {"filter": {"ID": bound["id"]}}))["tasks"][0][
        "title"] == "Call 7"  # no select: the task as stored (UNCONFIRMED default set)
    wrong = hook(client, "tasks.task.list", {"order": {"NO_SUCH_FIELD": "asc"}})
    assert (wrong.status_code, wrong.get_json()) == (400, {
        "error": "0", "error_description": "Invalid sorting key (internal error)"})
    # "others see only the tasks available to them": Maria is responsible for half
    maria = token(client, user_id=2)
    assert call(client, "tasks.task.list", maria).get_json()["total"] == 26


def test_list_methods_inside_batch(client: Any) -> None:
    lead = new_lead(client)
    cmd = {f"c{i}": f"crm.timeline.comment.add?fields[ENTITY_ID]={lead}&fields[ENTITY_TYPE]=lead"
                    f"&fields[COMMENT]=note {i}" for i in range(45)}
    cmd.update({
        "todo": f"crm.activity.todo.add?ownerTypeId=1&ownerId={lead}&deadline=2025-02-04T10:00:00"
                "&title=Reply&description=see [bridge:0123456789ab]",
        "task": f"tasks.task.add?fields[TITLE]=Call&fields[RESPONSIBLE_ID]=2&"
                f"fields[DESCRIPTION]=later&fields[UF_CRM_TASK][0]=L_{lead}"})
    assert not ok(hook(client, "batch", {"cmd": cmd}))["result_error"]
    ok(hook(client, "crm.timeline.comment.add", {"fields": {
        "ENTITY_ID": lead, "ENTITY_TYPE": "lead", "COMMENT": "note 45"}}))
    comments = (f"crm.timeline.comment.list?filter[ENTITY_ID]={lead}&filter[ENTITY_TYPE]=lead"
                "&order[ID]=DESC&select[]=ID&select[]=COMMENT")
    body = ok(hook(client, "batch", {"halt": 0, "cmd": {
        "p0": comments + "&start=0", "p1": comments + "&start=50",
        "todos": f"crm.activity.list?filter[OWNER_TYPE_ID]=1&filter[OWNER_ID]={lead}"
                 "&select[]=ID&select[]=DESCRIPTION&order[ID]=DESC",
        "tasks": f"tasks.task.list?filter[UF_CRM_TASK]=L_{lead}&select[]=ID&select[]=DESCRIPTION",
        "unfiltered": "crm.timeline.comment.list?filter[ENTITY_ID]=1"}}))
    assert len(body["result"]["p0"]) == 46 and body["result"]["p0"][0]["COMMENT"] == "note 45"
    assert body["result"]["p1"] == []
    assert body["result_total"] == {"p0": 46, "p1": 46, "todos": 1, "tasks": 1}
    assert body["result_next"] == []
    assert body["result"]["todos"][0]["DESCRIPTION"] == "see [bridge:0123456789ab]"
    assert body["result"]["tasks"]["tasks"][0]["description"] == "later"
    assert body["result_error"] == {"unfiltered": ACCESS_DENIED}
    # more than 50: result_next
    many = ok(hook(client, "batch", {"cmd": {f"c{i}": f"crm.timeline.comment.add?fields[ENTITY_ID]="
                                              f"{lead}&fields[ENTITY_TYPE]=lead&fields[COMMENT]=x"
                                              for i in range(10)}}))
    assert not many["result_error"]
    paged = ok(hook(client, "batch", {"cmd": {"p0": comments, "p1": comments + "&start=50"}}))
    assert paged["result_next"] == {"p0": 50} and paged["result_total"] == {"p0": 56, "p1": 56}
    assert len(paged["result"]["p1"]) == 6
    # scopes as for the add methods: crm for the CRM lists, task for tasks.task.list
    portal = dict(DEFAULTS["portals"][0])
    portal["webhooks"] = [{"user_id": 1, "code": "crmonlyhook00001", "scopes": ["crm"]}]
    crm_only = make(portals=[portal])
    scoped = ok(hook(crm_only, "batch", {"cmd": {"t": "tasks.task.list",
                                                  "a": "crm.activity.list"}},
                     code="crmonlyhook00001"))
    assert scoped["result_error"]["t"]["error"] == "insufficient_scope"
    assert scoped["result"]["a"] == []
