"""Sandbox amoCRM: behaviour against the vendor contract (FACTS.md section 1).

Every example payload here is ours, written from FACTS.md 1.x: there are no
redistributable amoCRM fixtures. Signatures (amojo requests, the outgoing
chat hook, the disconnect hook) are recomputed independently in this file,
and account webhooks are decoded with this file's own PHP bracket parser.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests
from flask import Flask, jsonify, request

from sandbox.amocrm import (
    DEMO_ACCOUNT_ID,
    DEMO_AMOJO_ID,
    DEMO_BOT_ID,
    DEMO_CHANNEL_ID,
    DEMO_CHANNEL_SECRET,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    create_app,
)
from sandbox.amocrm.config import DEFAULTS
from tests.support.servers import serve_wsgi

SUB = "demo"
ADMIN, MANAGER = 6001001, 6001002
MAIN, PARTNERS = 7001001, 7001002
UNSORTED, FIRST_STAGE, SECOND_STAGE = 61001001, 61001002, 61001003
PARTNERS_FIRST = 61002002
REDIRECT = "https://bridge.test/oauth/amocrm/callback"
SCOPE = f"{DEMO_CHANNEL_ID}_{DEMO_AMOJO_ID}"
HAL = "application/hal+json"
PROBLEM = "application/problem+json"

SECOND = {"subdomain": "second", "id": 27182818,
          "amojo_id": "0e1d2c3b-4a59-4687-a5b4-c3d2e1f00f1e", "name": "Second Tenant",
          "users": [{"id": 7000001, "name": "Solo Admin", "email": "solo@second.example",
                     "is_admin": True}]}
TWO = [copy.deepcopy(DEFAULTS["accounts"][0]), SECOND]


# -- helpers ------------------------------------------------------------------------------------


def make(**config: Any) -> Any:
    """A test client; the 7/s limit is lifted unless the test sets ``per_second``."""
    config.setdefault("per_second", 10_000)
    return create_app(config).test_client()


@pytest.fixture
def client() -> Any:
    return make()


def install(client: Any, subdomain: str = SUB, **extra: Any) -> dict[str, Any]:
    resp = client.post("/_install", json={"client_id": DEMO_CLIENT_ID, "redirect_uri": REDIRECT,
                                          "subdomain": subdomain, **extra})
    assert resp.status_code == 200, resp.get_json()
    data: dict[str, Any] = resp.get_json()
    return data


def exchange(client: Any, code: str, subdomain: str = SUB, **over: Any) -> Any:
    body = {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    body.update(over)
    return client.post(f"/{subdomain}/oauth2/access_token", json=body)


def refresh(client: Any, token: str, subdomain: str = SUB) -> Any:
    return client.post(f"/{subdomain}/oauth2/access_token", json={
        "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
        "grant_type": "refresh_token", "refresh_token": token, "redirect_uri": REDIRECT})


def tokens(client: Any, subdomain: str = SUB, **extra: Any) -> dict[str, Any]:
    resp = exchange(client, install(client, subdomain, **extra)["code"], subdomain)
    assert resp.status_code == 200, resp.get_json()
    data: dict[str, Any] = resp.get_json()
    return data


def token(client: Any, subdomain: str = SUB, **extra: Any) -> str:
    return str(tokens(client, subdomain, **extra)["access_token"])


def call(client: Any, method: str, path: str, tok: str | None, body: Any = None,
         subdomain: str = SUB, headers: dict[str, str] | None = None) -> Any:
    hdrs = dict(headers or {})
    if tok:
        hdrs["Authorization"] = f"Bearer {tok}"
    return client.open(f"/{subdomain}/api/v4/{path}", method=method, headers=hdrs,
                       **({"json": body} if body is not None else {}))


def jwt_payload(value: str) -> dict[str, Any]:
    parts = value.split(".")
    assert len(parts) == 3
    pad = parts[1] + "=" * (-len(parts[1]) % 4)
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(pad))
    return data


def parse_php(body: str) -> dict[str, Any]:
    """Decode PHP bracket notation into nested dicts (our own parser)."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, strict_parsing=True):
        head = key.split("[", 1)[0]
        names = [head] + re.findall(r"\[([^\]]*)\]", key[len(head):])
        node = out
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value
    return out


def leaves(tree: Any) -> Iterator[Any]:
    if isinstance(tree, dict):
        for value in tree.values():
            yield from leaves(value)
    else:
        yield tree


def rfc2822(moment: dt.datetime | None = None) -> str:
    return email.utils.format_datetime(moment or dt.datetime.now(dt.UTC))


def amojo_headers(method: str, path: str, body: bytes, *, secret: str = DEMO_CHANNEL_SECRET,
                  date: str | None = None, md5: str | None = None,
                  ctype: str = "application/json") -> dict[str, str]:
    """FACTS 1.13, computed here independently of the sandbox's code."""
    date = date or rfc2822()
    md5 = md5 if md5 is not None else hashlib.md5(body).hexdigest()  # noqa: S324
    text = "\n".join([method.upper(), md5, ctype, date, path])
    sig = hmac.new(secret.encode(), text.encode(), hashlib.sha1).hexdigest()
    return {"Date": date, "Content-Type": ctype, "Content-MD5": md5, "X-Signature": sig}


def amojo(client: Any, method: str, path: str, payload: Any = None, **kw: Any) -> Any:
    raw = b"" if payload is None else json.dumps(payload).encode()
    url = urlsplit(path)
    headers = amojo_headers(method, url.path, raw, **kw)
    return client.open("/amojo" + path, method=method, data=raw, headers=headers)


def connect(client: Any, amojo_id: str = DEMO_AMOJO_ID) -> dict[str, Any]:
    resp = amojo(client, "POST", f"/v2/origin/custom/{DEMO_CHANNEL_ID}/connect", {
        "account_id": amojo_id, "title": "Bridge", "hook_api_version": "v2",
        "is_time_window_disabled": True})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data: dict[str, Any] = resp.get_json()
    return data


def incoming(client: Any, conv: str, msgid: str, text: str = "hi", silent: bool = False,
             sender_id: str = "tg-user-1", source: Any = None, **profile: str) -> Any:
    sender: dict[str, Any] = {"id": sender_id, "name": "Tina Client"}
    if profile:
        sender["profile"] = profile
    payload: dict[str, Any] = {
        "timestamp": int(time.time()), "msec_timestamp": int(time.time() * 1000),
        "msgid": msgid, "conversation_id": conv, "sender": sender,
        "message": {"type": "text", "text": text}, "silent": silent}
    if source is not None:
        payload["source"] = source
    return amojo(client, "POST", f"/v2/origin/custom/{SCOPE}",
                 {"event_type": "new_message", "payload": payload})


def account_state(client: Any, subdomain: str = SUB) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/_state?account={subdomain}").get_json()["accounts"][0]
    return data


def contact_body(**over: Any) -> dict[str, Any]:
    body = {"name": "Tina Tester", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "+79991234567", "enum_code": "MOB"}]},
        {"field_code": "EMAIL", "values": [{"value": "tina@example.com", "enum_code": "WORK"}]}]}
    body.update(over)
    return body


def new_contact(client: Any, tok: str, **over: Any) -> int:
    resp = call(client, "POST", "contacts", tok, [contact_body(**over)])
    assert resp.status_code == 200, resp.get_json()
    return int(resp.get_json()["_embedded"]["contacts"][0]["id"])


def new_lead(client: Any, tok: str, **over: Any) -> int:
    resp = call(client, "POST", "leads", tok, [{"name": "Deal", **over}])
    assert resp.status_code == 200, resp.get_json()
    return int(resp.get_json()["_embedded"]["leads"][0]["id"])


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    """A real HTTP receiver: records every request; answers per ``answers``."""
    got: list[dict[str, Any]] = []
    answers: dict[str, Any] = {"status": 200, "delay": 0.0}
    app = Flask("receiver")

    @app.route("/<path:path>", methods=["GET", "POST"])
    def hook(path: str) -> Any:
        got.append({"path": "/" + path, "method": request.method, "args": request.args.to_dict(),
                    "headers": dict(request.headers), "body": request.get_data(as_text=True)})
        if answers["delay"]:
            time.sleep(answers["delay"])
        return jsonify({"ok": True, "n": len(got)}), answers["status"]

    with serve_wsgi(app) as srv:
        yield {"url": srv.url, "got": got, "answers": answers}


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- OAuth (FACTS 1.2) ---------------------------------------------------------------------------


def _form_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r"<input type='hidden' name='([^']+)' value='([^']*)'>", page))


def test_consent_page_grant_and_refusal_redirects() -> None:
    client = make(integration={"redirect_uri": REDIRECT})
    page = client.get("/www/oauth", query_string={"client_id": DEMO_CLIENT_ID, "state": "csrf1",
                                                  "mode": "popup"})
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    assert "type='radio'" not in html  # one account: no chooser
    form = _form_fields(html)
    assert form["redirect_uri"] == REDIRECT and form["state"] == "csrf1"
    granted = client.post("/www/oauth", data={**form, "decision": "grant"})
    assert granted.status_code == 302
    location = urlsplit(granted.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert params["referer"] == "demo.amocrm.ru" and params["state"] == "csrf1"
    assert params["platform"] == "1" and params["code"]
    assert exchange(client, params["code"]).status_code == 200
    refused = client.post("/www/oauth", data={**form, "decision": "deny"})
    assert parse_qs(urlsplit(refused.headers["Location"]).query) == {
        "error": ["access_denied"], "state": ["csrf1"]}
    # No state sent -> none comes back (FACTS 1.2: "only if sent").
    form = _form_fields(client.get("/www/oauth", query_string={
        "client_id": DEMO_CLIENT_ID}).get_data(as_text=True))
    location = client.post("/www/oauth", data={**form, "decision": "grant"}).headers["Location"]
    assert "state" not in parse_qs(urlsplit(location).query)
    assert client.get("/www/oauth", query_string={"client_id": "nope"}).status_code == 400


def test_consent_page_chooses_among_accounts() -> None:
    client = make(accounts=TWO)
    html = client.get("/www/oauth", query_string={"client_id": DEMO_CLIENT_ID,
                                                  "redirect_uri": REDIRECT}).get_data(as_text=True)
    assert html.count("type='radio'") == 2 and "second.amocrm.ru" in html
    form = _form_fields(html)
    resp = client.post("/www/oauth", data={**form, "account_id": str(SECOND["id"]),
                                           "decision": "grant"})
    params = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert params["referer"] == ["second.amocrm.ru"]
    assert exchange(client, params["code"][0], "second").status_code == 200
    assert exchange(client, params["code"][0], "second").status_code == 400


def test_code_exchange_is_single_use_and_bound(client: Any) -> None:
    granted = install(client, state="s1")
    assert granted["referer"] == "demo.amocrm.ru" and granted["state"] == "s1"
    resp = exchange(client, granted["code"])
    assert resp.status_code == 200 and resp.content_type == "application/json"
    body = resp.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86400  # noqa: S105
    assert abs(body["server_time"] - time.time()) < 5 and body["refresh_token"]
    claims = jwt_payload(body["access_token"])
    assert claims["account_id"] == DEMO_ACCOUNT_ID and claims["api_domain"]
    assert claims["exp"] - time.time() == pytest.approx(86400, abs=5)
    again = exchange(client, granted["code"])
    assert again.status_code == 400 and again.content_type == PROBLEM
    assert again.get_json() == {
        "hint": "Authorization code has been revoked", "title": "Некорректный запрос",
        "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson", "status": 400,
        "detail": "В запросе отсутствует ряд параметров или параметры невалидны"}
    assert exchange(client, "garbage").get_json()["hint"] == \
        "Cannot decrypt the authorization code"
    other = install(client)
    assert exchange(client, other["code"], redirect_uri="https://evil.test/cb").status_code == 400
    assert exchange(client, other["code"], client_secret="wrong").status_code == 400  # noqa: S106
    # Form-encoded bodies work too (league/oauth2 clients send them).
    form = client.post(f"/{SUB}/oauth2/access_token", data={
        "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
        "grant_type": "authorization_code", "code": other["code"], "redirect_uri": REDIRECT})
    assert form.status_code == 200
    assert exchange(client, install(client)["code"], subdomain="nowhere").status_code == 401


def test_expired_code_is_refused() -> None:
    client = make(code_ttl=0)
    code = install(client)["code"]
    time.sleep(0.01)
    assert exchange(client, code).get_json()["hint"] == "Authorization code has expired"


def test_refresh_rotation_kills_the_old_refresh_token(client: Any) -> None:
    first = tokens(client)
    second = refresh(client, first["refresh_token"])
    assert second.status_code == 200
    pair = second.get_json()
    assert pair["refresh_token"] != first["refresh_token"]
    assert pair["access_token"] != first["access_token"]
    reused = refresh(client, first["refresh_token"])
    assert reused.status_code == 400 and reused.content_type == PROBLEM
    body = reused.get_json()
    assert body["type"] == "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"
    assert body["status"] == 400 and body["hint"]
    # The new pair still works; the switch is off, so nothing else was revoked.
    assert call(client, "GET", "account", pair["access_token"]).status_code == 200
    third = refresh(client, pair["refresh_token"])
    assert third.status_code == 200
    state = client.get("/_state").get_json()
    assert state["oauth"]["token_calls"] == {"authorization_code": 1, "refresh_token": 3}
    assert state["accounts"][0]["token_calls"] == {"authorization_code": 1, "refresh_token": 3}
    assert state["oauth"]["token_failures"] == {"refresh_token": 1}


def test_revoke_family_on_reuse_switch() -> None:
    client = make(revoke_family_on_reuse=True)
    first = tokens(client)
    live = refresh(client, first["refresh_token"]).get_json()
    assert refresh(client, first["refresh_token"]).status_code == 400
    assert call(client, "GET", "account", live["access_token"]).status_code == 401
    assert refresh(client, live["refresh_token"]).status_code == 400


def test_long_lived_tokens() -> None:
    acc = copy.deepcopy(DEFAULTS["accounts"][0])
    acc["long_lived_tokens"] = [{"token": "static-long-lived", "expires_in": 3600},
                                {"token": "already-expired", "expires_in": 0}]
    client = make(accounts=[acc])
    assert call(client, "GET", "account", "static-long-lived").status_code == 200
    assert call(client, "GET", "account", "already-expired").status_code == 401
    made = client.post("/_long_lived_token", json={"subdomain": SUB, "user_id": MANAGER,
                                                   "expires_in": 5 * 365 * 86400}).get_json()
    assert jwt_payload(made["token"])["account_id"] == DEMO_ACCOUNT_ID
    info = call(client, "GET", "account", made["token"]).get_json()
    assert info["current_user_id"] == MANAGER
    listed = account_state(client)["tokens"]["long_lived"]
    assert {t["token"] for t in listed} >= {"static-long-lived", made["token"]}


def test_401s_and_their_body() -> None:
    client = make(access_token_ttl=0)
    expired = token(client)
    resp = call(client, "GET", "contacts", expired)
    assert resp.status_code == 401 and resp.content_type == PROBLEM
    body = resp.get_json()
    assert body["title"] == "Unauthorized" and body["status"] == 401
    assert body["type"] == "https://httpstatus.es/401"
    assert call(client, "GET", "contacts", None).status_code == 401
    assert call(client, "GET", "contacts", "not-a-token").status_code == 401
    assert call(client, "GET", "contacts", expired, subdomain="nowhere").status_code == 401


def test_deactivated_integration_gets_401(client: Any) -> None:
    pair = tokens(client)
    assert call(client, "GET", "account", pair["access_token"]).status_code == 200
    resp = client.post("/_integration", json={"subdomain": SUB, "active": False})
    assert resp.status_code == 200 and resp.get_json()["installed"] is False
    assert call(client, "GET", "account", pair["access_token"]).status_code == 401
    assert refresh(client, pair["refresh_token"]).status_code == 400
    assert account_state(client)["installed"] is False
    assert call(client, "GET", "account", token(client)).status_code == 200  # reinstall


def test_subscription_ended_gets_402(client: Any) -> None:
    tok = token(client)
    client.post("/_subscription", json={"subdomain": SUB, "active": False})
    resp = call(client, "GET", "account", tok)
    assert resp.status_code == 402 and resp.content_type == PROBLEM
    assert resp.get_json()["type"] == "https://httpstatus.es/402"
    client.post("/_subscription", json={"subdomain": SUB, "active": True})
    assert call(client, "GET", "account", tok).status_code == 200


def test_account_isolation() -> None:
    client = make(accounts=TWO)
    mine, theirs = token(client), token(client, "second")
    cid = new_contact(client, mine)
    assert call(client, "GET", "contacts", mine, subdomain="second").status_code == 401
    assert call(client, "GET", f"contacts/{cid}", theirs, subdomain="second").status_code == 204
    assert call(client, "GET", "contacts?query=Tina", theirs,
                subdomain="second").status_code == 204
    patch = call(client, "PATCH", "contacts", theirs, [{"id": cid, "name": "x"}],
                 subdomain="second")
    assert patch.status_code == 400
    assert patch.get_json()["validation-errors"][0]["errors"][0]["path"] == "id"
    other_user = call(client, "POST", "leads", theirs, [{"responsible_user_id": ADMIN}],
                      subdomain="second")
    assert other_user.status_code == 400
    assert [s["subdomain"] for s in client.get("/_state").get_json()["accounts"]] == [
        "demo", "second"]
    assert account_state(client, "second")["contacts"] == []


def test_current_subdomain_and_rename(client: Any) -> None:
    pair = tokens(client)
    host = jwt_payload(pair["access_token"])["api_domain"].split(".")[0]
    resp = client.get(f"/{host}/oauth2/account/current/subdomain",
                      headers={"X-Refresh-Token": pair["refresh_token"]})
    assert resp.get_json() == {"id": DEMO_ACCOUNT_ID, "subdomain": "demo",
                               "domain": "demo.amocrm.ru", "top_level_domain": "ru"}
    bad = client.get(f"/{host}/oauth2/account/current/subdomain",
                     headers={"X-Refresh-Token": "nope"})
    assert bad.status_code == 401 and bad.content_type == PROBLEM
    assert client.post("/_rename", json={"subdomain": SUB,
                                         "new_subdomain": "renamed"}).status_code == 200
    assert call(client, "GET", "account", pair["access_token"]).status_code == 401
    assert call(client, "GET", "account", pair["access_token"],
                subdomain="renamed").status_code == 200
    assert client.get(f"/{host}/oauth2/account/current/subdomain", headers={
        "X-Refresh-Token": pair["refresh_token"]}).get_json()["subdomain"] == "renamed"
    old = client.get("/www/oauth2/account/subdomain",
                     headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert old.get_json()["domain"] == "renamed.amocrm.ru"


# -- responses and errors (FACTS 1.3) ------------------------------------------------------------


def test_empty_results_are_204_with_empty_body(client: Any) -> None:
    tok = token(client)
    for path in ("contacts", "leads", "tasks", "leads/notes", "contacts?query=nobody",
                 "tasks?filter[entity_id]=1&filter[entity_type]=leads", "contacts/123",
                 "leads/1"):
        resp = call(client, "GET", path, tok)
        assert resp.status_code == 204, path
        assert resp.get_data() == b"", path
    new_contact(client, tok)
    assert call(client, "GET", "contacts?query=nobody", tok).status_code == 204
    assert call(client, "GET", "contacts?page=2", tok).status_code == 204


def test_not_found_status_switch() -> None:
    client = make(not_found_status=404)
    resp = call(client, "GET", "contacts/123", token(client))
    assert resp.status_code == 404 and resp.content_type == PROBLEM


def test_hal_envelope_paging_and_links(client: Any) -> None:
    tok = token(client)
    for i in range(3):
        new_contact(client, tok, name=f"Page {i}")
    resp = call(client, "GET", "contacts?limit=2", tok)
    assert resp.status_code == 200 and resp.content_type == HAL
    body = resp.get_json()
    assert body["_page"] == 1 and len(body["_embedded"]["contacts"]) == 2
    assert "/demo/api/v4/contacts?" in body["_links"]["self"]["href"]
    nxt = body["_links"]["next"]["href"]
    page2 = client.get(nxt[nxt.index("/demo/"):], headers={"Authorization": f"Bearer {tok}"})
    assert page2.get_json()["_page"] == 2 and len(page2.get_json()["_embedded"]["contacts"]) == 1
    assert "next" not in page2.get_json()["_links"]
    capped = call(client, "GET", "contacts?limit=1000", tok).get_json()  # max 250
    assert len(capped["_embedded"]["contacts"]) == 3


def test_validation_errors_body_is_exact(client: Any) -> None:
    tok = token(client)
    resp = call(client, "POST", "contacts", tok, [{"name": "A", "custom_fields_values": [
        {"field_id": 999999, "values": [{"value": "x"}]}]}])
    assert resp.status_code == 400 and resp.content_type == PROBLEM
    assert resp.get_json() == {
        "validation-errors": [{"request_id": "0", "errors": [{
            "code": "NotSupportedChoice", "path": "custom_fields_values.0.field_id",
            "detail": "The value you selected is not a valid choice."}]}],
        "title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
        "detail": "Request validation failed"}
    resp = call(client, "POST", "contacts", tok, [
        {"name": "ok", "request_id": "first"},
        {"name": "bad", "request_id": "second", "responsible_user_id": 1,
         "custom_fields_values": [{"field_code": "PHONE",
                                   "values": [{"value": "1", "enum_code": "NOPE"}]}]}])
    errors = resp.get_json()["validation-errors"]
    assert [e["request_id"] for e in errors] == ["second"]
    assert {e["path"] for e in errors[0]["errors"]} == {
        "responsible_user_id", "custom_fields_values.0.values.0.enum_code"}
    assert call(client, "GET", "contacts", tok).status_code == 204  # all or nothing
    assert call(client, "POST", "contacts", tok, {"name": "not an array"}).status_code == 400


# -- contacts (FACTS 1.5/1.6) ---------------------------------------------------------------------


def test_contacts_create_get_query_patch(client: Any) -> None:
    tok = token(client)
    resp = call(client, "POST", "contacts", tok, [contact_body(request_id="r-1"),
                                                  {"first_name": "Ivan", "last_name": "Petrov"}])
    assert resp.status_code == 200 and resp.content_type == HAL
    made = resp.get_json()["_embedded"]["contacts"]
    assert [m["request_id"] for m in made] == ["r-1", "1"]
    assert made[0]["_links"]["self"]["href"].endswith(f"/demo/api/v4/contacts/{made[0]['id']}")
    cid = made[0]["id"]
    got = call(client, "GET", f"contacts/{cid}", tok).get_json()
    assert got["name"] == "Tina Tester" and got["responsible_user_id"] == ADMIN
    assert got["account_id"] == DEMO_ACCOUNT_ID and got["_embedded"]["tags"] == []
    phone = next(f for f in got["custom_fields_values"] if f["field_code"] == "PHONE")
    assert phone["field_type"] == "multitext" and phone["field_name"]
    assert phone["values"] == [{"value": "+79991234567", "enum_id": phone["values"][0]["enum_id"],
                                "enum_code": "MOB"}]
    assert call(client, "GET", f"contacts/{made[1]['id']}", tok).get_json()["name"] == \
        "Ivan Petrov"
    for q in ("tina", "tina@example.com", "+7 (999) 123-45-67", "9991234567"):
        found = call(client, "GET", f"contacts?query={requests.utils.quote(q)}", tok)
        assert [c["id"] for c in found.get_json()["_embedded"]["contacts"]] == [cid], q
    # PATCH replaces the multitext values sent (UNCONFIRMED semantics).
    patched = call(client, "PATCH", "contacts", tok, [{"id": cid, "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "+70000000001"}]}],
        "tags_to_add": [{"name": "vip"}]}])
    assert patched.status_code == 200
    assert patched.get_json()["_embedded"]["contacts"][0]["request_id"] == "0"
    got = call(client, "GET", f"contacts/{cid}", tok).get_json()
    phone = next(f for f in got["custom_fields_values"] if f["field_code"] == "PHONE")
    assert [(v["value"], v["enum_code"]) for v in phone["values"]] == [("+70000000001", "WORK")]
    assert [t["name"] for t in got["_embedded"]["tags"]] == ["vip"]
    single = call(client, "PATCH", f"contacts/{cid}", tok, {"name": "Tina T."})
    assert single.status_code == 200 and single.get_json()["id"] == cid
    lead = new_lead(client, tok, _embedded={"contacts": [{"id": cid}]})
    with_leads = call(client, "GET", f"contacts/{cid}?with=leads", tok).get_json()
    assert [x["id"] for x in with_leads["_embedded"]["leads"]] == [lead]
    assert "leads" not in call(client, "GET", f"contacts/{cid}", tok).get_json()["_embedded"]


def test_custom_fields_api(client: Any) -> None:
    tok = token(client)
    contact_fields = call(client, "GET", "contacts/custom_fields", tok).get_json()
    by_code = {f["code"]: f for f in contact_fields["_embedded"]["custom_fields"]}
    assert by_code["PHONE"]["type"] == "multitext" and by_code["PHONE"]["is_predefined"]
    assert [e["value"] for e in by_code["PHONE"]["enums"]] == [
        "WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER"]
    assert [e["value"] for e in by_code["EMAIL"]["enums"]] == ["WORK", "PRIV", "OTHER"]
    lead_fields = call(client, "GET", "leads/custom_fields", tok).get_json()
    assert {"UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_TERM", "UTM_CONTENT"} <= {
        f["code"] for f in lead_fields["_embedded"]["custom_fields"]}
    made = call(client, "POST", "leads/custom_fields", tok, [
        {"name": "Channel", "type": "text", "code": "BRIDGE_CHANNEL", "request_id": "f1"}])
    assert made.status_code == 200
    field = made.get_json()["_embedded"]["custom_fields"][0]
    assert field["request_id"] == "f1" and field["type"] == "text"
    lid = new_lead(client, tok, custom_fields_values=[
        {"field_id": field["id"], "values": [{"value": "telegram"}]},
        {"field_code": "UTM_SOURCE", "values": [{"value": "ads"}]}])
    values = call(client, "GET", f"leads/{lid}", tok).get_json()["custom_fields_values"]
    assert {v["field_code"]: v["values"] for v in values} == {
        "BRIDGE_CHANNEL": [{"value": "telegram"}], "UTM_SOURCE": [{"value": "ads"}]}
    found = call(client, "GET", "leads?query=telegram", tok).get_json()["_embedded"]["leads"]
    assert [x["id"] for x in found] == [lid]
    dup = call(client, "POST", "leads/custom_fields", tok, [{"name": "x", "type": "text",
                                                             "code": "BRIDGE_CHANNEL"}])
    assert dup.get_json()["validation-errors"][0]["errors"][0]["path"] == "code"
    bad = call(client, "POST", "leads/custom_fields", tok, [{"name": "x", "type": "weird"}])
    assert bad.get_json()["validation-errors"][0]["errors"][0]["path"] == "type"


def test_link_chat_to_contact_needs_admin_and_a_known_chat(client: Any) -> None:
    admin = token(client)
    manager = token(client, user_id=MANAGER)
    cid = new_contact(client, admin)
    connect(client)
    chat = amojo(client, "POST", f"/v2/origin/custom/{SCOPE}/chats", {
        "conversation_id": "conv-link", "user": {"id": "u-9", "name": "Nine"}}).get_json()
    assert call(client, "POST", "contacts/chats", manager,
                [{"contact_id": cid, "chat_id": chat["id"]}]).status_code == 403
    bad = call(client, "POST", "contacts/chats", admin, [{"contact_id": cid, "chat_id": "nope"}])
    assert bad.get_json()["validation-errors"][0]["errors"][0]["path"] == "chat_id"
    ok = call(client, "POST", "contacts/chats", admin, [{"contact_id": cid,
                                                        "chat_id": chat["id"]}])
    assert ok.status_code == 200
    link = ok.get_json()["_embedded"]["chats"][0]
    assert link["chat_id"] == chat["id"] and link["contact_id"] == cid
    assert call(client, "GET", f"contacts/chats?contact_id={cid}", admin).status_code == 200


# -- leads (FACTS 1.7/1.8) ------------------------------------------------------------------------


def test_pipelines_and_statuses(client: Any) -> None:
    tok = token(client)
    body = call(client, "GET", "leads/pipelines", tok).get_json()
    pipes = body["_embedded"]["pipelines"]
    main = next(p for p in pipes if p["is_main"])
    assert main["id"] == MAIN
    statuses = main["_embedded"]["statuses"]
    assert statuses[0]["type"] == 1 and statuses[0]["id"] == UNSORTED
    assert {142, 143} <= {s["id"] for s in statuses}
    assert all(s["pipeline_id"] == MAIN and s["account_id"] == DEMO_ACCOUNT_ID for s in statuses)
    listed = call(client, "GET", f"leads/pipelines/{PARTNERS}/statuses", tok).get_json()
    assert {s["id"] for s in listed["_embedded"]["statuses"]} >= {PARTNERS_FIRST, 142, 143}


def test_lead_status_closed_at_responsible_and_tags(client: Any) -> None:
    tok = token(client)
    lid = new_lead(client, tok, price=1500, _embedded={"tags": [{"name": "bridge"}]})
    lead = call(client, "GET", f"leads/{lid}", tok).get_json()
    assert (lead["pipeline_id"], lead["status_id"]) == (MAIN, FIRST_STAGE)
    assert lead["price"] == 1500 and lead["closed_at"] is None
    assert lead["responsible_user_id"] == ADMIN and lead["name"] == "Deal"
    assert [t["name"] for t in lead["_embedded"]["tags"]] == ["bridge"]
    won = call(client, "PATCH", f"leads/{lid}", tok, {"status_id": 142})
    assert won.status_code == 200 and set(won.get_json()) >= {"id", "updated_at", "_links"}
    closed = call(client, "GET", f"leads/{lid}", tok).get_json()
    assert closed["status_id"] == 142 and closed["closed_at"] is not None
    call(client, "PATCH", "leads", tok, [{"id": lid, "status_id": SECOND_STAGE}])
    assert call(client, "GET", f"leads/{lid}", tok).get_json()["closed_at"] is None
    moved = call(client, "PATCH", f"leads/{lid}", tok, {"pipeline_id": PARTNERS,
                                                        "status_id": 143})
    assert moved.status_code == 200
    assert call(client, "GET", f"leads/{lid}", tok).get_json()["pipeline_id"] == PARTNERS
    for bad, path in (({"status_id": 1}, "status_id"), ({"status_id": UNSORTED}, "status_id"),
                      ({"pipeline_id": 5}, "pipeline_id"),
                      ({"responsible_user_id": 42}, "responsible_user_id"),
                      ({"price": "a lot"}, "price")):
        resp = call(client, "POST", "leads", tok, [bad])
        assert resp.status_code == 400, bad
        assert resp.get_json()["validation-errors"][0]["errors"][0]["path"] == path
    assert call(client, "PATCH", f"leads/{lid}", tok, {"responsible_user_id": MANAGER}) \
        .status_code == 200
    by_status = call(client, "GET", f"leads?filter[statuses][0][pipeline_id]={PARTNERS}"
                     "&filter[statuses][0][status_id]=143", tok).get_json()
    assert [x["id"] for x in by_status["_embedded"]["leads"]] == [lid]
    assert call(client, "GET", "leads?filter[statuses][0][pipeline_id]="
                f"{MAIN}&filter[statuses][0][status_id]=142", tok).status_code == 204


def test_leads_complex() -> None:
    client = make()
    tok = token(client)
    existing = new_contact(client, tok, name="Known")
    resp = call(client, "POST", "leads/complex", tok, [
        {"name": "Complex", "price": 10, "request_id": "q1",
         "_embedded": {"contacts": [contact_body(name="New Person")],
                       "companies": [{"name": "ACME"}]}},
        {"name": "Linked", "_embedded": {"contacts": [{"id": existing}]}},
        {"name": "From form", "status_id": SECOND_STAGE, "_embedded": {
            "metadata": {"category": "forms", "form_id": "f1", "form_name": "Site",
                         "form_page": "https://site.test", "form_sent_at": int(time.time())},
            "contacts": [{"name": "Form Person"}]}},
        {"name": "No contact"}])
    assert resp.status_code == 200 and resp.content_type == HAL
    out = resp.get_json()
    assert isinstance(out, list) and len(out) == 4
    assert out[0]["request_id"] == ["q1"] and out[1]["request_id"] == ["1"]
    assert all(item["merged"] is False for item in out)
    assert out[1]["contact_id"] == existing and out[1]["company_id"] is None
    assert out[3]["contact_id"] is None and out[3]["company_id"] is None
    lead = call(client, "GET", f"leads/{out[0]['id']}?with=contacts", tok).get_json()
    assert [c["id"] for c in lead["_embedded"]["contacts"]] == [out[0]["contact_id"]]
    assert [c["id"] for c in lead["_embedded"]["companies"]] == [out[0]["company_id"]]
    company = call(client, "GET", f"companies/{out[0]['company_id']}?with=leads", tok).get_json()
    assert company["name"] == "ACME"
    assert [x["id"] for x in company["_embedded"]["leads"]] == [out[0]["id"]]
    person = call(client, "GET", f"contacts/{out[0]['contact_id']}", tok).get_json()
    assert [c["id"] for c in person["_embedded"]["companies"]] == [out[0]["company_id"]]
    unsorted = call(client, "GET", f"leads/{out[2]['id']}", tok).get_json()
    assert unsorted["status_id"] == UNSORTED  # the metadata wins over status_id
    state = account_state(client)
    assert [u["category"] for u in state["unsorted"]] == ["forms"]
    # No dedupe within a request: the same contact twice -> two contacts.
    twice = call(client, "POST", "leads/complex", tok, [
        {"_embedded": {"contacts": [{"name": "Twin"}]}},
        {"_embedded": {"contacts": [{"name": "Twin"}]}}]).get_json()
    assert twice[0]["contact_id"] != twice[1]["contact_id"]
    too_many = call(client, "POST", "leads/complex", tok, [
        {"_embedded": {"contacts": [{"name": "a"}, {"name": "b"}]}}])
    assert too_many.get_json()["validation-errors"][0]["errors"][0]["path"] == \
        "_embedded.contacts"
    assert call(client, "POST", "leads/complex", tok, [{}] * 51).status_code == 400
    bad_field = call(client, "POST", "leads/complex", tok, [{"_embedded": {"contacts": [
        {"name": "x", "custom_fields_values": [{"field_id": 1, "values": [{"value": "y"}]}]}]}}])
    assert bad_field.get_json()["validation-errors"][0]["errors"][0]["path"] == \
        "_embedded.contacts.0.custom_fields_values.0.field_id"


def test_link_and_unlink_contacts(client: Any) -> None:
    tok = token(client)
    lid, first, second = new_lead(client, tok), new_contact(client, tok), new_contact(client, tok)
    linked = call(client, "POST", f"leads/{lid}/link", tok, [
        {"to_entity_id": first, "to_entity_type": "contacts", "metadata": {"is_main": True}},
        {"to_entity_id": second, "to_entity_type": "contacts"}])
    assert linked.status_code == 200
    assert [x["to_entity_id"] for x in linked.get_json()["_embedded"]["links"]] == [first, second]
    lead = call(client, "GET", f"leads/{lid}?with=contacts", tok).get_json()
    assert [(c["id"], c["is_main"]) for c in lead["_embedded"]["contacts"]] == [
        (first, True), (second, False)]
    assert call(client, "POST", f"contacts/{second}/unlink", tok, [
        {"to_entity_id": lid, "to_entity_type": "leads"}]).status_code == 204
    lead = call(client, "GET", f"leads/{lid}?with=contacts", tok).get_json()
    assert [c["id"] for c in lead["_embedded"]["contacts"]] == [first]
    bad = call(client, "POST", f"leads/{lid}/link", tok, [{"to_entity_id": 1,
                                                           "to_entity_type": "contacts"}])
    assert bad.get_json()["validation-errors"][0]["errors"][0]["path"] == "to_entity_id"


# -- notes and tasks (FACTS 1.9/1.10) -------------------------------------------------------------


def test_notes(client: Any) -> None:
    tok = token(client)
    lid = new_lead(client, tok)
    cid = new_contact(client, tok)
    assert call(client, "GET", f"leads/{lid}/notes", tok).status_code == 204
    made = call(client, "POST", "leads/notes", tok, [
        {"entity_id": lid, "note_type": "common", "params": {"text": "hello"},
         "request_id": "n1"},
        {"entity_id": lid, "note_type": "sms_in", "params": {"text": "sms", "phone": "+7999"}}])
    assert made.status_code == 200
    notes = made.get_json()["_embedded"]["notes"]
    assert [(n["entity_id"], n["request_id"]) for n in notes] == [(lid, "n1"), (lid, "1")]
    assert call(client, "POST", f"contacts/{cid}/notes", tok, [
        {"note_type": "service_message", "params": {"service": "Bridge", "text": "t"}}]) \
        .status_code == 200
    listed = call(client, "GET", f"leads/{lid}/notes?filter[note_type]=common", tok).get_json()
    assert [n["params"] for n in listed["_embedded"]["notes"]] == [{"text": "hello"}]
    desc = call(client, "GET", "leads/notes?order[id]=desc", tok).get_json()
    assert [n["note_type"] for n in desc["_embedded"]["notes"]] == ["sms_in", "common"]
    assert call(client, "GET", f"leads/{lid}/notes?filter[note_type]=call_in",
                tok).status_code == 204
    for bad, path in (({"entity_id": lid, "note_type": "nope", "params": {}}, "note_type"),
                      ({"entity_id": lid, "note_type": "common", "params": {}}, "params.text"),
                      ({"entity_id": 1, "note_type": "common", "params": {"text": "x"}},
                       "entity_id"),
                      ({"entity_id": lid, "note_type": "sms_out", "params": {"text": "x"}},
                       "params.phone")):
        resp = call(client, "POST", "leads/notes", tok, [bad])
        assert resp.status_code == 400
        assert resp.get_json()["validation-errors"][0]["errors"][0]["path"] == path


def test_notes_of_many_leads_in_one_list(client: Any) -> None:
    """The type-level list takes ``filter[entity_id]`` as an array, with
    ``filter[note_type]`` and ``filter[updated_at][from]`` (amoCRM's notes
    list by entity type, www.amocrm.ru/developers/content/crm_platform/
    events-and-notes): what a batched POST wrote is found in one request."""
    tok = token(client)
    a, b, c = (new_lead(client, tok) for _ in range(3))
    call(client, "POST", "leads/notes", tok, [
        {"entity_id": a, "note_type": "common", "params": {"text": "to a"}},
        {"entity_id": b, "note_type": "service_message",
         "params": {"service": "Bridge", "text": "to b"}},
        {"entity_id": b, "note_type": "sms_in", "params": {"text": "sms", "phone": "+7999"}},
        {"entity_id": c, "note_type": "common", "params": {"text": "to c"}}])
    query = (f"filter[entity_id][]={a}&filter[entity_id][]={b}"
             "&filter[note_type][]=common&filter[note_type][]=service_message"
             "&order[updated_at]=desc&limit=250")
    listed = call(client, "GET", f"leads/notes?{query}", tok).get_json()
    assert sorted((n["entity_id"], n["params"]["text"]) for n in listed["_embedded"]["notes"]) \
        == [(a, "to a"), (b, "to b")]
    late = int(time.time()) + 3600
    assert call(client, "GET", f"leads/notes?{query}&filter[updated_at][from]={late}",
                tok).status_code == 204


ZERO_WIDTH_TEXT = (
    "Ann\u2060\u200b\u200c\u200d\u2060 via\ufeff Telegram\u200e\nhi \U0001f468\u200d\U0001f469"
)


def test_zero_width_characters_are_kept_unless_the_sandbox_strips_them(client: Any) -> None:
    """Whether amoCRM keeps them is UNCONFIRMED: kept by default, dropped from
    note and task texts (and nothing else) with ``strip_zero_width``."""
    due = int(time.time()) + 3600
    for strip in (False, True):
        app = make(strip_zero_width=strip)
        tok = token(app)
        lid = new_lead(app, tok)
        note = {"entity_id": lid, "note_type": "common", "params": {"text": ZERO_WIDTH_TEXT}}
        assert call(app, "POST", "leads/notes", tok, [note]).status_code == 200
        task = {"text": ZERO_WIDTH_TEXT, "complete_till": due, "entity_id": lid,
                "entity_type": "leads"}
        made = call(app, "POST", "tasks", tok, [task]).get_json()
        tid = made["_embedded"]["tasks"][0]["id"]
        (stored,) = call(app, "GET", f"leads/{lid}/notes", tok).get_json()["_embedded"]["notes"]
        kept = "Ann via Telegram\nhi \U0001f468\U0001f469" if strip else ZERO_WIDTH_TEXT
        assert stored["params"]["text"] == kept
        assert call(app, "GET", f"tasks/{tid}", tok).get_json()["text"] == kept
        call(app, "PATCH", f"tasks/{tid}", tok, {"text": f"{ZERO_WIDTH_TEXT}!"})
        assert call(app, "GET", f"tasks/{tid}", tok).get_json()["text"] == f"{kept}!"
    # a run-time switch, like the other UNCONFIRMED behaviours
    assert client.post("/_config", json={"strip_zero_width": True}).get_json()[
        "strip_zero_width"] is True
    assert client.post("/_config", json={"strip_zero_width": "yes"}).status_code == 400


def test_tasks(client: Any) -> None:
    tok = token(client, user_id=MANAGER)
    lid = new_lead(client, tok)
    missing = call(client, "POST", "tasks", tok, [{"entity_id": lid, "entity_type": "leads"}])
    assert {e["path"] for e in missing.get_json()["validation-errors"][0]["errors"]} == {
        "text", "complete_till"}
    due = int(time.time()) + 3600
    made = call(client, "POST", "tasks", tok, [{"text": "Call back", "complete_till": due,
                                                "entity_id": lid, "entity_type": "leads",
                                                "task_type_id": 1}])
    tid = made.get_json()["_embedded"]["tasks"][0]["id"]
    task = call(client, "GET", f"tasks/{tid}", tok).get_json()
    assert task["responsible_user_id"] == MANAGER and task["is_completed"] is False
    assert call(client, "GET", f"leads/{lid}", tok).get_json()["closest_task_at"] == due
    found = call(client, "GET", f"tasks?filter[entity_id]={lid}&filter[entity_type]=leads", tok)
    assert [t["id"] for t in found.get_json()["_embedded"]["tasks"]] == [tid]
    assert call(client, "GET", "tasks?filter[entity_id]=1&filter[entity_type]=leads",
                tok).status_code == 204
    done = call(client, "PATCH", f"tasks/{tid}", tok, {"is_completed": True,
                                                       "result": {"text": "done"}})
    assert done.status_code == 200
    assert set(done.get_json()) == {"id", "updated_at", "request_id", "_links"}
    assert call(client, "GET", f"tasks/{tid}", tok).get_json()["result"] == {"text": "done"}
    assert call(client, "GET", f"leads/{lid}", tok).get_json()["closest_task_at"] is None
    assert call(client, "GET", "tasks?filter[is_completed]=0", tok).status_code == 204


# -- users and account (FACTS 1.11) ---------------------------------------------------------------


def test_users_admin_only_and_account(client: Any) -> None:
    admin, manager = token(client), token(client, user_id=MANAGER)
    users = call(client, "GET", "users", admin).get_json()["_embedded"]["users"]
    assert [u["id"] for u in users] == [6001001, 6001002, 6001003]
    assert users[0]["rights"]["is_admin"] is True and users[1]["rights"]["is_admin"] is False
    forbidden = call(client, "GET", "users", manager)
    assert forbidden.status_code == 403 and forbidden.content_type == PROBLEM
    info = call(client, "GET", "account?with=amojo_id,task_types,users_groups", manager)
    body = info.get_json()
    assert body["id"] == DEMO_ACCOUNT_ID and body["subdomain"] == SUB
    assert body["amojo_id"] == DEMO_AMOJO_ID and body["current_user_id"] == MANAGER
    assert [t["id"] for t in body["_embedded"]["task_types"]] == [1, 2]
    assert body["_embedded"]["users_groups"]
    assert "amojo_id" not in call(client, "GET", "account", manager).get_json()


# -- rate limits (FACTS 1.4) ----------------------------------------------------------------------


def test_429_over_seven_per_second() -> None:
    client = create_app({"rate_window_s": 0.5}).test_client()  # the default 7/s
    tok = token(client)
    assert [call(client, "GET", "account", tok).status_code for _ in range(7)] == [200] * 7
    over = call(client, "GET", "account", tok)
    assert over.status_code == 429 and over.get_data() == b""
    assert "Retry-After" not in over.headers
    assert client.get("/_state").status_code == 200  # control endpoints are not limited
    time.sleep(0.55)
    assert call(client, "GET", "account", tok).status_code == 200


def test_429_body_and_retry_after_switches() -> None:
    client = make(per_second=2, rate_429_body="json", retry_after_header=True)
    tok = token(client)
    call(client, "GET", "account", tok)
    call(client, "GET", "account", tok)
    over = call(client, "GET", "account", tok)
    assert over.status_code == 429 and over.get_json()["status"] == 429
    assert over.headers["Retry-After"] == "1"


def test_storm_blocks_the_account_with_403() -> None:
    client = make(per_second=1, storm_429s=3, storm_window_s=5, block_seconds=0.4)
    tok = token(client)
    codes = [call(client, "GET", "account", tok).status_code for _ in range(6)]
    assert codes == [200, 429, 429, 429, 403, 403]
    blocked = call(client, "GET", "account", tok)
    assert blocked.status_code == 403 and "blocked" in blocked.get_json()["detail"]
    time.sleep(1.05)
    assert call(client, "GET", "account", tok).status_code == 200
    no_block = make(per_second=1, storm_429s=1, block_on_storm=False)
    tok = token(no_block)
    assert {call(no_block, "GET", "account", tok).status_code for _ in range(5)} == {200, 429}


# -- account webhooks (FACTS 1.12) ----------------------------------------------------------------


def test_webhooks_subscription_api(client: Any) -> None:
    admin, manager = token(client), token(client, user_id=MANAGER)
    made = call(client, "POST", "webhooks", admin, {"destination": "https://hooks.test/a",
                                                    "settings": ["add_lead", "status_lead"],
                                                    "sort": 10})
    assert made.status_code == 201 and made.content_type == HAL
    hook = made.get_json()
    assert hook["destination"] == "https://hooks.test/a" and hook["disabled"] is False
    assert hook["settings"] == ["add_lead", "status_lead"] and hook["sort"] == 10
    again = call(client, "POST", "webhooks", admin, {"destination": "https://hooks.test/a",
                                                     "settings": ["note_lead"]})
    assert again.status_code == 201 and again.get_json()["id"] == hook["id"]
    listed = call(client, "GET", "webhooks?filter[destination]=https://hooks.test/a", admin)
    assert [w["settings"] for w in listed.get_json()["_embedded"]["webhooks"]] == [["note_lead"]]
    bad = call(client, "POST", "webhooks", admin, {"destination": "https://hooks.test/b",
                                                   "settings": ["add_lead", "explode"]})
    assert bad.get_json()["validation-errors"][0]["errors"][0]["path"] == "settings.1"
    assert call(client, "POST", "webhooks", manager, {"destination": "https://h.test",
                                                      "settings": ["add_lead"]}).status_code == 403
    assert call(client, "DELETE", "webhooks", admin,
                {"destination": "https://hooks.test/a"}).status_code == 204
    assert call(client, "GET", "webhooks", admin).status_code == 204


def _subscribe(client: Any, tok: str, url: str, *events: str) -> None:
    resp = call(client, "POST", "webhooks", tok, {"destination": url, "settings": list(events)})
    assert resp.status_code == 201


def test_webhooks_are_form_encoded_bracket_notation(receiver: dict[str, Any]) -> None:
    client = make(webhooks_on_api_changes=False)
    tok = token(client)
    url = receiver["url"] + "/hooks/amocrm?key=secret123"
    _subscribe(client, tok, url, "status_lead", "responsible_lead", "delete_lead", "note_lead",
               "update_lead", "update_contact", "delete_contact")
    lid = new_lead(client, tok, custom_fields_values=[
        {"field_code": "UTM_SOURCE", "values": [{"value": "tg ads"}]}])
    resp = client.post("/_lead_status", json={"lead_id": lid, "status_id": SECOND_STAGE})
    assert resp.status_code == 200
    results = resp.get_json()["webhooks"]
    assert [(r["event"], r["status"], r["ok"]) for r in results] == [
        ("status_lead", 200, True), ("update_lead", 200, True)]
    first = receiver["got"][0]
    assert first["method"] == "POST" and first["path"] == "/hooks/amocrm"
    assert first["args"] == {"key": "secret123"}
    headers = {k.lower(): v for k, v in first["headers"].items()}
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert headers["user-agent"] == "amoCRM-WebHook-client/1.0"
    assert not any("signature" in k for k in headers)
    assert "leads%5Bstatus%5D%5B0%5D%5Bid%5D=" in first["body"]  # PHP-style encoding
    data = parse_php(first["body"])
    assert all(isinstance(v, str) for v in leaves(data))
    status = data["leads"]["status"]["0"]
    assert status["id"] == str(lid) and status["status_id"] == str(SECOND_STAGE)
    assert status["old_status_id"] == str(FIRST_STAGE) and status["pipeline_id"] == str(MAIN)
    assert status["date_create"] and status["last_modified"] and status["created_user_id"]
    assert status["custom_fields"]["0"]["values"]["0"] == "tg ads"
    assert data["account"]["subdomain"] == SUB and data["account"]["id"] == str(DEMO_ACCOUNT_ID)
    receiver["got"].clear()
    client.post("/_responsible", json={"lead_id": lid, "responsible_user_id": MANAGER})
    responsible = parse_php(receiver["got"][0]["body"])["leads"]["responsible"]["0"]
    assert responsible["responsible_user_id"] == str(MANAGER)
    assert responsible["old_responsible_user_id"] == str(ADMIN)
    receiver["got"].clear()
    note = client.post("/_note", json={"lead_id": lid, "text": "Call him", "user_id": MANAGER})
    assert [r["event"] for r in note.get_json()["webhooks"]] == ["note_lead"]
    inner = parse_php(receiver["got"][0]["body"])["leads"]["note"]["0"]["note"]
    assert inner["text"] == "Call him" and inner["element_id"] == str(lid)
    assert inner["element_type"] == "2" and inner["created_by"] == str(MANAGER)
    receiver["got"].clear()
    client.post("/_delete_lead", json={"lead_id": lid})
    deleted = parse_php(receiver["got"][0]["body"])
    assert deleted["leads"]["delete"]["0"]["id"] == str(lid)
    assert call(client, "GET", f"leads/{lid}", tok).status_code == 204
    receiver["got"].clear()
    keep, gone = new_contact(client, tok), new_contact(client, tok, name="Dup")
    lead2 = new_lead(client, tok, _embedded={"contacts": [{"id": gone}]})
    merged = client.post("/_merge_contacts", json={"keep_id": keep, "remove_id": gone})
    assert [r["event"] for r in merged.get_json()["webhooks"]] == [
        "delete_contact", "update_contact"]
    bodies = [parse_php(g["body"]) for g in receiver["got"]]
    assert bodies[0]["contacts"]["delete"]["0"] == {"id": str(gone), "type": "contact"}
    updated = bodies[1]["contacts"]["update"]["0"]
    assert updated["id"] == str(keep) and updated["type"] == "contact"
    assert updated["linked_leads_id"] == {str(lead2): {"ID": str(lead2)}}
    assert call(client, "GET", f"contacts/{gone}", tok).status_code == 204
    state = account_state(client)
    assert {d["event"] for d in state["webhook_deliveries"]} >= {"status_lead", "note_lead"}


def test_api_changes_fire_webhooks_in_the_background(receiver: dict[str, Any]) -> None:
    client = make()  # webhooks_on_api_changes defaults to True (UNCONFIRMED)
    tok = token(client)
    _subscribe(client, tok, receiver["url"] + "/h", "add_lead", "add_contact", "status_lead")
    lid = new_lead(client, tok)
    new_contact(client, tok)
    call(client, "PATCH", f"leads/{lid}", tok, {"status_id": 143})
    wait_for(lambda: len(receiver["got"]) == 3)
    sections = set()
    for hit in receiver["got"]:
        data = parse_php(hit["body"])
        entity = next(k for k in data if k != "account")
        sections.add(f"{entity}/{next(iter(data[entity]))}")
    assert sections == {"contacts/add", "leads/add", "leads/status"}


def test_webhook_retry_schedule(receiver: dict[str, Any]) -> None:
    schedule = [{"after_s": 0.1, "on": "invalid"}, {"after_s": 0.1, "on": "invalid"},
                {"after_s": 0.1, "on": "5xx"}, {"after_s": 0.1, "on": "5xx"}]
    client = make(webhook_retry_schedule=schedule, webhooks_on_api_changes=False)
    tok = token(client)
    _subscribe(client, tok, receiver["url"] + "/fail", "status_lead")
    lid = new_lead(client, tok)
    receiver["answers"]["status"] = 500
    first = client.post("/_lead_status", json={"lead_id": lid, "status_id": 142})
    assert first.get_json()["webhooks"][0]["status"] == 500
    wait_for(lambda: len(receiver["got"]) == 5)  # 1 + 2 (invalid) + 2 (5xx)
    time.sleep(0.3)
    assert len(receiver["got"]) == 5
    attempts = [d["attempt"] for d in account_state(client)["webhook_deliveries"]]
    assert attempts == [1, 2, 3, 4, 5]
    receiver["got"].clear()
    receiver["answers"]["status"] = 404  # not 499/5xx: only the first two retries
    client.post("/_lead_status", json={"lead_id": lid, "status_id": FIRST_STAGE})
    wait_for(lambda: len(receiver["got"]) == 3)
    time.sleep(0.3)
    assert len(receiver["got"]) == 3
    receiver["got"].clear()
    receiver["answers"]["status"] = 200  # a success stops the retries
    client.post("/_lead_status", json={"lead_id": lid, "status_id": SECOND_STAGE})
    time.sleep(0.3)
    assert len(receiver["got"]) == 1


def test_webhook_timeout_flush_and_disable(receiver: dict[str, Any]) -> None:
    client = make(webhook_timeout_s=0.2, webhook_disable_after=2,
                  webhook_retry_schedule=[{"after_s": 3600, "on": "invalid"}],
                  webhooks_on_api_changes=False)
    tok = token(client)
    _subscribe(client, tok, receiver["url"] + "/slow", "status_lead")
    lid = new_lead(client, tok)
    receiver["answers"]["delay"] = 0.4
    result = client.post("/_lead_status", json={"lead_id": lid, "status_id": 142}).get_json()
    assert result["webhooks"][0]["status"] == 0 and "error" in result["webhooks"][0]
    pending = client.get("/_webhooks").get_json()["pending"]
    assert [p["attempt"] for p in pending] == [2]
    receiver["answers"]["delay"] = 0.0
    receiver["answers"]["status"] = 302
    flushed = client.post("/_webhooks", json={"flush": True}).get_json()["delivered"]
    assert [(d["attempt"], d["status"]) for d in flushed] == [(2, 302)]
    client.post("/_lead_status", json={"lead_id": lid, "status_id": FIRST_STAGE})
    subs = client.get("/_webhooks").get_json()["subscriptions"]
    assert subs[0]["disabled"] is True and subs[0]["invalid_answers"] == 3
    before = len(receiver["got"])
    client.post("/_lead_status", json={"lead_id": lid, "status_id": SECOND_STAGE})
    assert len(receiver["got"]) == before  # disabled: nothing sent


# -- Chats API (FACTS 1.13) -----------------------------------------------------------------------


def test_amojo_signature_is_enforced(client: Any) -> None:
    path = f"/v2/origin/custom/{DEMO_CHANNEL_ID}/connect"
    body = {"account_id": DEMO_AMOJO_ID, "hook_api_version": "v2"}
    assert amojo(client, "POST", path, body).status_code == 200
    assert amojo(client, "POST", path, body, secret="wrong").status_code == 403  # noqa: S106
    stale = rfc2822(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16))
    assert amojo(client, "POST", path, body, date=stale).status_code == 403
    assert amojo(client, "POST", path, body, md5=hashlib.md5(b"other").hexdigest()) \
        .status_code == 403  # noqa: S324
    raw = json.dumps(body).encode()
    headers = amojo_headers("POST", path, raw)
    del headers["X-Signature"]
    assert client.post("/amojo" + path, data=raw, headers=headers).status_code == 403
    denied = amojo(client, "POST", path, body, secret="wrong")  # noqa: S106
    assert denied.content_type == "application/json"
    # GET: md5 of the empty body; the query string is not signed.
    connect(client)
    incoming(client, "conv-sig", "m-1")
    hist = amojo(client, "GET", f"/v2/origin/custom/{SCOPE}/chats/conv-sig/history?limit=5")
    assert hist.status_code == 200


def test_connect_disconnect_and_scope(client: Any) -> None:
    assert connect(client) == {"account_id": DEMO_AMOJO_ID, "scope_id": SCOPE,
                               "title": "Bridge", "hook_api_version": "v2",
                               "is_time_window_disabled": True}
    assert amojo(client, "POST", "/v2/origin/custom/no-such-channel/connect",
                 {"account_id": DEMO_AMOJO_ID}).status_code == 404
    assert amojo(client, "POST", f"/v2/origin/custom/{DEMO_CHANNEL_ID}/connect",
                 {"account_id": "unknown-amojo"}).status_code == 400
    gone = amojo(client, "DELETE", f"/v2/origin/custom/{DEMO_CHANNEL_ID}/disconnect",
                 {"account_id": DEMO_AMOJO_ID})
    assert gone.status_code == 200 and gone.get_data() == b""
    assert incoming(client, "c", "m").status_code == 404
    connect(client)
    assert incoming(client, "c", "m").status_code == 200


def test_create_chat_is_idempotent(client: Any) -> None:
    connect(client)
    body = {"conversation_id": "conv-1", "source": {"external_id": "bot-1"},
            "user": {"id": "tg-7", "name": "Seven", "profile": {"phone": "79151112233"}}}
    first = amojo(client, "POST", f"/v2/origin/custom/{SCOPE}/chats", body).get_json()
    again = amojo(client, "POST", f"/v2/origin/custom/{SCOPE}/chats", body).get_json()
    assert first == again
    assert first["user"]["client_id"] == "tg-7" and first["user"]["phone"] == "79151112233"
    assert "email" not in first["user"]
    assert amojo(client, "POST", f"/v2/origin/custom/{SCOPE}/chats",
                 {"conversation_id": "x"}).status_code == 400


def test_new_message_response_and_msgid_dedupe(client: Any) -> None:
    connect(client)
    resp = incoming(client, "conv-2", "our-1", "Hello")
    assert resp.status_code == 200
    msg = resp.get_json()["new_message"]
    assert msg["conversation_id"] == "conv-2" and msg["ref_id"] == "our-1"
    assert msg["msgid"] and msg["sender_id"] and msg["receiver_id"] is None
    assert incoming(client, "conv-2", "our-1", "Hello").get_json() == resp.get_json()
    chats = account_state(client)["chats"]
    assert len(chats) == 1 and [m["ref_id"] for m in chats[0]["messages"]] == ["our-1"]
    loose = make(msgid_dedupe=False)
    connect(loose)
    incoming(loose, "conv-2", "our-1")
    incoming(loose, "conv-2", "our-1")
    assert len(account_state(loose)["chats"][0]["messages"]) == 2
    bad = amojo(client, "POST", f"/v2/origin/custom/{SCOPE}", {"event_type": "new_message",
                                                               "payload": {"msgid": "x"}})
    assert bad.status_code == 400


def test_first_message_creates_an_unsorted_lead_with_a_contact(client: Any) -> None:
    connect(client)
    incoming(client, "conv-silent", "s-1", silent=True)
    assert account_state(client)["leads"] == []  # silent: no unsorted lead
    incoming(client, "conv-3", "m-1", "I want to buy", phone="+79150001122",
             email="buyer@example.com")
    incoming(client, "conv-3", "m-2", "still there?")
    state = account_state(client)
    [lead] = state["leads"]
    assert lead["status_id"] == UNSORTED and lead["pipeline_id"] == MAIN
    assert lead["is_unsorted"] is True
    [contact] = state["contacts"]
    assert lead["contacts"] == [{"id": contact["id"], "is_main": True}]
    assert contact["name"] == "Tina Client"
    codes = {f["field_code"]: f["values"][0]["value"] for f in contact["custom_fields_values"]}
    assert codes == {"PHONE": "+79150001122", "EMAIL": "buyer@example.com"}
    chat = next(c for c in state["chats"] if c["conversation_id"] == "conv-3")
    assert chat["contact_id"] == contact["id"] and chat["lead_id"] == lead["id"]
    assert [u["category"] for u in state["unsorted"]] == ["chats"]
    assert [m["lead_id"] for m in chat["messages"]] == [lead["id"], lead["id"]]


def test_message_in_a_linked_chat_lands_in_the_open_lead(client: Any) -> None:
    tok = token(client)
    cid = new_contact(client, tok)
    lid = new_lead(client, tok, _embedded={"contacts": [{"id": cid}]})
    connect(client)
    chat = amojo(client, "POST", f"/v2/origin/custom/{SCOPE}/chats", {
        "conversation_id": "conv-4", "user": {"id": "tg-4", "name": "Four"}}).get_json()
    call(client, "POST", "contacts/chats", tok, [{"contact_id": cid, "chat_id": chat["id"]}])
    incoming(client, "conv-4", "m-1", sender_id="tg-4")
    state = account_state(client)
    assert [lead["id"] for lead in state["leads"]] == [lid]  # no new lead
    assert state["chats"][0]["messages"][0]["lead_id"] == lid


def test_delivery_status_and_history(client: Any) -> None:
    connect(client)
    incoming(client, "conv-5", "m-1", "first")
    reply = client.post("/_reply", json={"conversation": "conv-5", "text": "answer"})
    out_id = reply.get_json()["message"]["id"]
    path = f"/v2/origin/custom/{SCOPE}/{out_id}/delivery_status"
    ok = amojo(client, "POST", path, {"msgid": out_id, "delivery_status": 1})
    assert ok.status_code == 200 and ok.get_data() == b""
    assert amojo(client, "POST", path, {"status_code": 2}).status_code == 200
    assert amojo(client, "POST", path, {"status_code": -1}).status_code == 400
    assert amojo(client, "POST", path, {"status_code": -1, "error_code": 905}).status_code == 400
    assert amojo(client, "POST", path, {"status_code": -1, "error_code": 901,
                                        "error": "deleted"}).status_code == 200
    assert amojo(client, "POST", f"/v2/origin/custom/{SCOPE}/nope/delivery_status",
                 {"status_code": 1}).status_code == 404
    msgs = account_state(client)["chats"][0]["messages"]
    statuses = [(s["status"], s["field"]) for s in msgs[1]["delivery_statuses"]]
    assert statuses == [(1, "delivery_status"), (2, "status_code"), (-1, "status_code")]
    hist = amojo(client, "GET", f"/v2/origin/custom/{SCOPE}/chats/conv-5/history?offset=0"
                                "&limit=50").get_json()["messages"]
    assert [m["message"]["text"] for m in hist] == ["answer", "first"]  # newest first
    assert hist[1]["message"]["client_id"] == "m-1"
    assert hist[1]["sender"]["client_id"] == "tg-user-1"
    assert amojo(client, "GET", f"/v2/origin/custom/{SCOPE}/chats/conv-5/history?limit=51") \
        .status_code == 400
    assert amojo(client, "GET", f"/v2/origin/custom/{SCOPE}/chats/none/history") \
        .status_code == 204


def test_edit_message(client: Any) -> None:
    connect(client)
    sent = incoming(client, "conv-6", "m-1", "typo").get_json()["new_message"]
    edited = amojo(client, "POST", f"/v2/origin/custom/{SCOPE}", {
        "event_type": "edit_message", "payload": {"msgid": "m-1", "conversation_id": "conv-6",
                                                  "message": {"type": "text", "text": "fixed"}}})
    assert edited.status_code == 200 and edited.get_json()["edit_message"]["msgid"] == \
        sent["msgid"]
    msg = account_state(client)["chats"][0]["messages"][0]
    assert msg["text"] == "fixed" and msg["edits"][0]["text"] == "typo"


def test_chat_source_is_kept_on_the_chat_and_each_message(receiver: dict[str, Any]) -> None:
    """source.external_id (FACTS 1.13): the chat keeps the first one it gets
    (create-chat, else a message: config ``chat_source_from_message``), each
    message its own; the state shows both and the reply hook echoes the chat's."""
    client = make()
    connect(client)
    wa, tg = {"external_id": "whatsapp-3"}, {"external_id": "telegram-7"}
    created = amojo(client, "POST", f"/v2/origin/custom/{SCOPE}/chats", {
        "conversation_id": "conv-a", "source": wa, "user": {"id": "wa-1", "name": "Wanda"}})
    assert created.status_code == 200
    assert incoming(client, "conv-a", "a-1", sender_id="wa-1", source=wa).status_code == 200
    assert incoming(client, "conv-a", "a-2", sender_id="wa-1", source=tg).status_code == 200
    incoming(client, "conv-b", "b-1")  # no source: the chat has none yet
    assert account_state(client)["chats"][1]["source"] is None
    incoming(client, "conv-b", "b-2", source=tg)
    incoming(client, "conv-c", "c-1", source={"external_id": 7})  # not a string: no source
    chats = {c["conversation_id"]: c for c in account_state(client)["chats"]}
    assert {k: c["source"] for k, c in chats.items()} == {
        "conv-a": wa, "conv-b": tg, "conv-c": None}
    assert [m["source"] for m in chats["conv-a"]["messages"]] == [wa, tg]
    assert [m["source"] for m in chats["conv-b"]["messages"]] == [None, tg]
    # a rep's answer: the hook says which source the chat is
    assert client.post("/_channel", json={
        "hook_url": receiver["url"] + "/hooks/amocrm/route/:scope_id"}).status_code == 200
    assert client.post("/_reply", json={"conversation": "conv-a", "text": "ok",
                                        "user_id": MANAGER}).status_code == 200
    [hook] = receiver["got"]
    assert json.loads(hook["body"])["message"]["source"] == wa
    # the unconfirmed switch off: only the message that creates the chat sets it
    strict = make(chat_source_from_message=False)
    connect(strict)
    incoming(strict, "conv-b", "b-1")
    incoming(strict, "conv-b", "b-2", source=tg)
    incoming(strict, "conv-d", "d-1", source=wa)
    assert {c["conversation_id"]: c["source"] for c in account_state(strict)["chats"]} == {
        "conv-b": None, "conv-d": wa}


def test_chat_reply_fires_the_signed_hook_once(receiver: dict[str, Any]) -> None:
    client = make()
    connect(client)
    assert client.post("/_channel", json={
        "hook_url": receiver["url"] + "/hooks/amocrm/route/:scope_id"}).status_code == 200
    incoming(client, "conv-7", "m-1", phone="+79151112233")
    receiver["answers"]["status"] = 500
    resp = client.post("/_reply", json={"conversation": "conv-7", "text": "Привет",
                                             "user_id": MANAGER})
    assert resp.status_code == 200
    answer = resp.get_json()
    assert answer["webhook"]["status"] == 500 and answer["webhook"]["body"]["ok"] is True
    time.sleep(0.2)
    [hook] = receiver["got"]  # never retried
    assert hook["path"] == f"/hooks/amocrm/route/{SCOPE}"
    expected = hmac.new(DEMO_CHANNEL_SECRET.encode(), hook["body"].encode(),
                        hashlib.sha1).hexdigest()
    headers = {k.lower(): v for k, v in hook["headers"].items()}
    assert hmac.compare_digest(headers["x-signature"], expected)
    body = json.loads(hook["body"])
    assert body["account_id"] == DEMO_AMOJO_ID and abs(body["time"] - time.time()) < 5
    message = body["message"]
    assert message["conversation"]["client_id"] == "conv-7"
    assert message["receiver"]["client_id"] == "tg-user-1"
    assert message["receiver"]["phone"] == "+79151112233" and message["receiver"]["email"] == ""
    users = {u["id"]: u for u in account_state(client)["users"]}
    assert message["sender"]["id"] == users[MANAGER]["amojo_id"]  # the manager's amojo id
    assert message["message"]["type"] == "text" and message["message"]["text"] == "Привет"
    assert message["message"]["id"] == answer["message"]["id"]
    assert isinstance(message["timestamp"], int) and isinstance(message["msec_timestamp"], int)
    by_contact = client.post("/_reply", json={
        "contact_id": account_state(client)["contacts"][0]["id"], "text": "again"})
    assert by_contact.status_code == 200
    assert client.post("/_reply", json={"conversation": "none",
                                             "text": "x"}).status_code == 404


def test_chat_reply_without_hook_url_reports_it(client: Any) -> None:
    connect(client)
    incoming(client, "conv-8", "m-1")
    resp = client.post("/_reply", json={"conversation": "conv-8", "text": "hi"})
    assert resp.get_json()["webhook"]["status"] is None
    assert "hook_url" in resp.get_json()["webhook"]["error"]


def test_outgoing_message_import_with_receiver(client: Any) -> None:
    connect(client)
    incoming(client, "conv-9", "m-1")
    resp = amojo(client, "POST", f"/v2/origin/custom/{SCOPE}", {
        "event_type": "new_message", "payload": {
            "timestamp": int(time.time()), "msgid": "m-2", "conversation_id": "conv-9",
            "sender": {"id": "bot", "name": "Bot", "ref_id": DEMO_BOT_ID},
            "receiver": {"id": "tg-user-1", "name": "Tina Client"},
            "message": {"type": "text", "text": "sent from the messenger"}, "silent": True}})
    new = resp.get_json()["new_message"]
    assert new["sender_id"] == DEMO_BOT_ID and new["receiver_id"]
    msgs = account_state(client)["chats"][0]["messages"]
    assert [m["direction"] for m in msgs] == ["in", "out"]


# -- install hook, disconnect hook, mounting over HTTP --------------------------------------------


def test_from_widget_install_fires_one_get(receiver: dict[str, Any]) -> None:
    client = make()
    url = receiver["url"] + "/oauth/amocrm/callback"
    resp = client.post("/_install", json={"client_id": DEMO_CLIENT_ID, "redirect_uri": url,
                                          "from_widget": True})
    result = resp.get_json()
    [hit] = receiver["got"]
    assert hit["method"] == "GET" and hit["path"] == "/oauth/amocrm/callback"
    assert hit["args"] == {"code": result["code"], "referer": "demo.amocrm.ru",
                           "from_widget": "1"}
    assert result["install_hook"]["status"] == 200
    assert client.get("/_state").get_json()["install_hooks"][0]["status"] == 200


def test_disconnect_hook_is_signed(receiver: dict[str, Any]) -> None:
    client = make(integration={"disconnect_hook_url": receiver["url"] + "/off"})
    token(client)
    client.post("/_integration", json={"subdomain": SUB, "active": False})
    [hit] = receiver["got"]
    expected = hmac.new(DEMO_CLIENT_SECRET.encode(),
                        f"{DEMO_CLIENT_ID}|{DEMO_ACCOUNT_ID}".encode(), hashlib.sha256).hexdigest()
    assert hit["args"] == {"account_id": str(DEMO_ACCOUNT_ID), "client_uuid": DEMO_CLIENT_ID,
                           "signature": expected}


def test_mounted_under_sandbox_amocrm_over_http(receiver: dict[str, Any]) -> None:
    from sandbox.server import build

    with serve_wsgi(build()) as srv:
        base = srv.url + "/sandbox/amocrm"
        s = requests.Session()
        page = s.get(f"{base}/www/oauth", params={"client_id": DEMO_CLIENT_ID,
                                                  "redirect_uri": REDIRECT}).text
        assert "action='/sandbox/amocrm/www/oauth'" in page
        code = s.post(f"{base}/_install", json={"client_id": DEMO_CLIENT_ID,
                                                "redirect_uri": REDIRECT}).json()["code"]
        pair = s.post(f"{base}/{SUB}/oauth2/access_token", json={
            "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}).json()
        auth = {"Authorization": f"Bearer {pair['access_token']}"}
        made = s.post(f"{base}/{SUB}/api/v4/contacts", json=[{"name": "Over HTTP"}],
                      headers=auth).json()
        href = made["_embedded"]["contacts"][0]["_links"]["self"]["href"]
        assert href.startswith(base + f"/{SUB}/api/v4/contacts/")
        assert s.get(href, headers=auth).json()["name"] == "Over HTTP"
        # amojo over HTTP, signed over the amojo-host path.
        raw = json.dumps({"account_id": DEMO_AMOJO_ID, "hook_api_version": "v2"}).encode()
        path = f"/v2/origin/custom/{DEMO_CHANNEL_ID}/connect"
        assert s.post(f"{base}/amojo{path}", data=raw,
                      headers=amojo_headers("POST", path, raw)).status_code == 200
        stats = s.get(f"{base}/_stats?requests=0").json()
        assert stats["by_route"]["POST /<subdomain>/api/v4/contacts"] == 1


# -- faults ---------------------------------------------------------------------------------------


def test_fault_bodies_and_control_endpoints_are_exempt(client: Any) -> None:
    tok = token(client)
    client.post("/_faults", json={"error_rate": 1.0})
    resp = call(client, "GET", "contacts", tok)
    assert resp.status_code == 503 and resp.content_type == PROBLEM
    assert resp.get_json()["status"] == 503
    assert client.get("/_state").status_code == 200
    assert client.get("/www/oauth", query_string={"client_id": DEMO_CLIENT_ID,
                                                  "redirect_uri": REDIRECT}).status_code == 200
    client.post("/_faults", json={"reset": True, "rate_429": 1.0})
    resp = call(client, "GET", "contacts", tok)
    assert resp.status_code == 429 and resp.get_data() == b""
    client.post("/_faults", json={"reset": True})
    assert call(client, "GET", "contacts", tok).status_code == 204


def test_fault_timeout_commits_nothing(client: Any) -> None:
    tok = token(client)
    client.post("/_faults", json={"timeout_rate": 1.0, "timeout_seconds": 0.05})
    assert call(client, "POST", "contacts", tok, [{"name": "lost"}]).status_code == 504
    client.post("/_faults", json={"reset": True})
    assert account_state(client)["contacts"] == []


def test_fault_commit_then_timeout_commits(client: Any) -> None:
    tok = token(client)
    client.post("/_faults", json={"commit_then_timeout_rate": 1.0, "timeout_seconds": 0.2})
    started = time.monotonic()
    resp = call(client, "POST", "contacts", tok, [contact_body(name="Committed")])
    assert time.monotonic() - started >= 0.2 and resp.status_code == 200
    client.post("/_faults", json={"reset": True})
    assert [c["name"] for c in account_state(client)["contacts"]] == ["Committed"]
    # Lookup-before-recreate finds it.
    found = call(client, "GET", "contacts?query=79991234567", tok).get_json()
    assert [c["name"] for c in found["_embedded"]["contacts"]] == ["Committed"]


# -- control API ----------------------------------------------------------------------------------


def test_state_reset_config_channel_and_stats(client: Any) -> None:
    tok = token(client)
    new_contact(client, tok)
    state = client.get("/_state").get_json()
    assert state["integration"]["client_id"] == DEMO_CLIENT_ID
    assert state["channel"]["id"] == DEMO_CHANNEL_ID and state["channel"]["bot_id"] == DEMO_BOT_ID
    acc = state["accounts"][0]
    assert acc["id"] == DEMO_ACCOUNT_ID and acc["amojo_id"] == DEMO_AMOJO_ID
    assert len(acc["users"]) == 3 and len(acc["pipelines"]) == 2
    assert acc["contacts"][0]["custom_fields_values"][0]["field_code"] == "PHONE"
    assert acc["tokens"]["access"] == 1 and acc["tokens"]["refresh"] == 1
    assert client.get("/_state?account=nope").status_code == 404
    assert client.post("/_config", json={"bogus": 1}).status_code == 400
    assert client.post("/_config", json={"per_second": 0}).status_code == 400
    assert client.post("/_config", json={"accounts": []}).status_code == 400
    cfg = client.post("/_config", json={"per_second": 3, "msgid_dedupe": False}).get_json()
    assert cfg["per_second"] == 3 and cfg["msgid_dedupe"] is False
    assert client.post("/_channel", json={"secret": "x"}).status_code == 400
    assert client.post("/_channel", json={"hook_url": "https://b.test/:scope_id"}) \
        .get_json()["hook_url"] == "https://b.test/:scope_id"
    stats = client.get("/_stats").get_json()
    assert stats["by_route"]["POST /<subdomain>/api/v4/contacts"] == 1
    assert stats["by_status"]["200"] >= 1
    assert client.post("/_reset").status_code == 200
    after = client.get("/_state").get_json()
    assert after["accounts"][0]["contacts"] == [] and after["oauth"]["token_calls"] == {}
    assert client.get("/_config").get_json()["per_second"] == 3  # config survives a reset
    assert call(client, "GET", "account", tok).status_code == 401  # tokens are gone
    assert client.post("/_install", json={"client_id": "nope", "redirect_uri": "x"}) \
        .status_code == 400
    assert client.post("/_lead_status", json={"lead_id": 1, "status_id": 142}).status_code == 404
    lid = new_lead(client, token(client))
    assert client.post("/_lead_status", json={"lead_id": lid,
                                              "status_id": UNSORTED}).status_code == 400
    assert client.post("/_responsible", json={"lead_id": lid,
                                              "responsible_user_id": 1}).status_code == 404
