"""The demo page renders for either CRM, and its JavaScript calls only endpoints that exist."""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from flask import Flask
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from sandbox.amocrm import DEMO_AMOJO_ID, DEMO_CHANNEL_ID, DEMO_CHANNEL_SECRET, sign_request
from sandbox.amocrm import create_app as create_amocrm_app
from sandbox.bitrix24 import DEMO_DOMAIN, DEMO_LINE_ID, DEMO_WEBHOOK_CODE, DEMO_WEBHOOK_USER
from sandbox.bitrix24 import create_app as create_bitrix24_app
from sandbox.hubspot import create_app as create_hubspot_app
from sandbox.telegram import create_app as create_telegram_app
from sandbox.web import CRMS, create_app

STATIC = Path(__file__).resolve().parents[2] / "sandbox" / "web" / "static"
ENDPOINT_RE = re.compile(
    r'(\w+):\s*\["(telegram|hubspot|amocrm|bitrix24)",\s*"(/[^"]*)",\s*"(GET|POST)"\]')
SANDBOX_APPS = {"telegram": create_telegram_app, "hubspot": create_hubspot_app,
                "amocrm": create_amocrm_app, "bitrix24": create_bitrix24_app}
# What the page calls on each CRM's sandbox (the briefs of the two panels).
CRM_ENDPOINTS = {
    "hubspot": {("/_state", "GET"), ("/_reply", "POST")},
    "amocrm": {("/_state", "GET"), ("/_reply", "POST"), ("/_note", "POST"),
               ("/_lead_status", "POST")},
    "bitrix24": {("/_state", "GET"), ("/_reply", "POST"), ("/_lead_status", "POST"),
                 ("/_deal_stage", "POST")},
}
# Element ids the JavaScript looks up, per page: both panels share the customer side
# and the contact/timeline/reply ids; each CRM has its own record lists.
SHARED_IDS = {"customer-name", "customer-id", "customer-new", "transcript", "customer-form",
              "customer-text", "customer-status", "contacts", "timeline", "timeline-contact",
              "reply-form", "reply-text", "reply-status", "crm-status", "record-card",
              "offline-banner"}
PANEL_IDS = {"hubspot": {"deals", "tickets"}, "amocrm": {"leads", "lead-status"},
             "bitrix24": {"leads", "deals", "lead-status", "openlines-chat"}}
CRM_ONLY_EN = "Replies go through Open Lines; this contact has none (CRM-only mode)"
CRM_ONLY_RU = "Ответы идут через Открытые линии; у этого контакта их нет (режим «только CRM»)"


def _demo_apps(web: dict[str, Any] | None = None) -> DispatcherMiddleware:
    """The apps mounted the way the demo server mounts them."""
    root = Flask("root")
    return DispatcherMiddleware(root, {
        "/sandbox": create_app(web),
        "/sandbox/telegram": create_telegram_app(),
        "/sandbox/hubspot": create_hubspot_app(),
        "/sandbox/amocrm": create_amocrm_app(),
        "/sandbox/bitrix24": create_bitrix24_app(),
    })


def _demo_server(web: dict[str, Any] | None = None) -> Client:
    return Client(_demo_apps(web))


def _page(web: dict[str, Any] | None = None) -> str:
    response = _demo_server(web).get("/sandbox/")
    assert response.status_code == 200
    return str(response.get_data(as_text=True))


class _Body(HTMLParser):
    """The <body> data attributes and every element id of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, str] = {}
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.data = {k[5:]: v for k, v in values.items() if k.startswith("data-")}
        if "id" in values:
            self.ids.add(values["id"])


def _parse(html: str) -> _Body:
    parsed = _Body()
    parsed.feed(html)
    return parsed


def _js() -> str:
    return (STATIC / "demo.js").read_text("utf-8")


def _declared() -> list[tuple[str, str, str, str]]:
    return ENDPOINT_RE.findall(_js())


def _exists(app: Flask, path: str, method: str) -> bool:
    adapter = app.url_map.bind("localhost")
    try:
        adapter.match(path, method=method)
    except (NotFound, MethodNotAllowed):
        return False
    return True


# -- rendering --------------------------------------------------------------------------


def test_page_renders_both_panels() -> None:
    html = _page()
    for label in ("Customer in Telegram", "Клиент в Telegram",
                  "Rep in HubSpot", "Менеджер в HubSpot", "Deals", "Tickets"):
        assert label in html
    assert "amoCRM" not in html and "Bitrix24" not in html
    # Asset and sibling URLs follow the mount point, not a hard-coded prefix.
    assert 'src="/sandbox/static/demo.js"' in html
    body = _parse(html)
    assert body.data == {"crm": "hubspot", "telegram-base": "/sandbox/telegram",
                         "hubspot-base": "/sandbox/hubspot", "poll-ms": "1500"}
    assert SHARED_IDS | PANEL_IDS["hubspot"] <= body.ids
    assert not PANEL_IDS["amocrm"] & body.ids


def test_amocrm_page_renders_the_manager_panel() -> None:
    html = _page({"crm": "amocrm"})
    for label in ("Customer in Telegram", "Клиент в Telegram",
                  "Manager in amoCRM", "Менеджер в amoCRM", "Leads", "Сделки",
                  "in amoCRM chat", "в чате amoCRM", "as a note @client", "заметкой @client",
                  "files it in amoCRM", "в amoCRM справа"):
        assert label in html
    assert "HubSpot" not in html and "Tickets" not in html and "Bitrix24" not in html
    body = _parse(html)
    assert body.data == {"crm": "amocrm", "telegram-base": "/sandbox/telegram",
                         "amocrm-base": "/sandbox/amocrm", "amocrm-subdomain": "demo",
                         "poll-ms": "1500"}
    assert SHARED_IDS | PANEL_IDS["amocrm"] <= body.ids
    assert not PANEL_IDS["hubspot"] & body.ids
    # the reply box offers the chat (default) and the @client note
    assert re.search(r'name="reply-mode" value="chat" checked', html)
    assert 'name="reply-mode" value="note"' in html
    # the lead buttons and the note marker are the JavaScript's (rendered per lead)
    js = _js()
    for needle in ('"Won", "Успешно"', '"Lost", "Не реализовано"', "WON = 142", "LOST = 143",
                   'REPLY_MARKER = "@client"'):
        assert needle in js


def test_bitrix24_page_renders_the_operator_panel() -> None:
    html = _page({"crm": "bitrix24"})
    for label in ("Customer in Telegram", "Клиент в Telegram",
                  "Operator in Bitrix24", "Оператор в Битрикс24", "Contacts", "Контакты",
                  "Leads", "Лиды", "Deals", "Сделки", "Reply in Open Lines",
                  "Ответ в Открытых линиях", "files it in Bitrix24", "в Битрикс24 справа"):
        assert label in html
    assert "HubSpot" not in html and "amoCRM" not in html and "Tickets" not in html
    body = _parse(html)
    assert body.data == {"crm": "bitrix24", "telegram-base": "/sandbox/telegram",
                         "bitrix24-base": "/sandbox/bitrix24",
                         "bitrix24-portal": "demo.bitrix24.ru", "poll-ms": "1500"}
    assert SHARED_IDS | PANEL_IDS["bitrix24"] <= body.ids
    assert "tickets" not in body.ids
    # the record buttons, the lead statuses and the CRM-only notice are the JavaScript's
    js = _js()
    for needle in ('"Converted", "Сконвертирован"', '"Junk", "Некачественный"',
                   '"Won", "Успешна"', '"Lost", "Провалена"', 'LEAD_CONVERTED = "CONVERTED"',
                   'LEAD_JUNK = "JUNK"', CRM_ONLY_EN, CRM_ONLY_RU):
        assert needle in js


def test_page_has_an_inline_favicon_and_a_hidden_offline_banner() -> None:
    html = _page()
    # the icon is a data URI: the browser asks the server for no /favicon.ico (a 404)
    [icon] = re.findall(r'<link rel="icon" href="([^"]+)">', html)
    assert icon.startswith("data:image/svg+xml,")
    svg = ElementTree.fromstring(urllib.parse.unquote(icon.split(",", 1)[1]))  # noqa: S314 (our page)
    assert svg.tag == "{http://www.w3.org/2000/svg}svg" and len(svg) > 0
    # the banner the page shows while the bridge is down: hidden at first, in both languages
    banner = re.search(r'<div id="offline-banner"[^>]*>(.*?)</div>', html, re.S)
    assert banner and " hidden>" in banner.group(0).split("\n", 1)[0]
    assert "The bridge is not responding" in banner.group(1)
    assert "Мост не отвечает" in banner.group(1)


def test_hubspot_state_has_stage_labels_and_owner_names() -> None:
    """What the HubSpot panel shows instead of ids: stage labels, owner names."""
    client = _demo_server()
    portal = client.get("/sandbox/hubspot/_state").get_json()["accounts"][0]
    deal_stages = {s["id"]: s["label"] for p in portal["pipelines"]["deals"] for s in p["stages"]}
    assert deal_stages["appointmentscheduled"] == "Appointment Scheduled"
    assert deal_stages["closedwon"] == "Closed Won"
    [deals] = portal["pipelines"]["deals"]
    assert deals["id"] == "default" and deals["label"] == "Sales Pipeline"
    closed = {s["id"] for s in deals["stages"] if s["metadata"]["isClosed"] == "true"}
    assert closed == {"closedwon", "closedlost"}
    ticket_stages = {s["id"]: s["label"] for p in portal["pipelines"]["tickets"]
                     for s in p["stages"]}
    assert ticket_stages["1"] == "New"
    names = {o["id"]: f"{o['firstName']} {o['lastName']}" for o in portal["owners"]}
    assert "Alice Agent" in names.values()
    assert portal["tasks"] == []  # tasks are dumped (the panel lists the open ones)


def test_assets_are_served() -> None:
    client = _demo_server()
    assert client.get("/sandbox/static/demo.js").status_code == 200
    assert client.get("/sandbox/static/demo.css").status_code == 200


def test_bases_can_be_configured() -> None:
    app = create_app({"telegram_base": "http://tg.local", "hubspot_base": "/hs", "poll_ms": 500})
    body = _parse(app.test_client().get("/").get_data(as_text=True)).data
    assert body["telegram-base"] == "http://tg.local" and body["hubspot-base"] == "/hs"
    assert body["poll-ms"] == "500"
    app = create_app({"crm": "amocrm", "amocrm_base": "http://amo.local/x",
                      "amocrm_subdomain": 'acme"<b>'})
    html = app.test_client().get("/").get_data(as_text=True)
    assert '<b>' not in html  # attribute values are escaped
    body = _parse(html).data
    assert body["amocrm-base"] == "http://amo.local/x"
    assert body["amocrm-subdomain"] == 'acme"<b>'
    assert body["telegram-base"] == "/telegram"  # no mount point: the app's root


def test_bitrix24_base_and_portal_can_be_configured() -> None:
    app = create_app({"crm": "bitrix24", "bitrix24_base": "http://b24.local/s",
                      "bitrix24_portal": 'acme.bitrix24.de"<b>'})
    html = app.test_client().get("/").get_data(as_text=True)
    assert "<b>" not in html  # attribute values are escaped
    body = _parse(html).data
    assert body["bitrix24-base"] == "http://b24.local/s"
    assert body["bitrix24-portal"] == 'acme.bitrix24.de"<b>'
    assert body["telegram-base"] == "/telegram"
    with pytest.raises(ValueError, match="bitrix24_portal"):
        create_app({"crm": "bitrix24", "bitrix24_portal": ""})
    with pytest.raises(ValueError, match="bitrix24_portal"):
        create_app({"crm": "bitrix24", "bitrix24_portal": None})


@pytest.mark.parametrize("config", [
    {"crm": "salesforce"}, {"crm": "HubSpot"}, {"crm": None}, {"crm": ""},
    {"crm": "bitrix"}, {"crm": "Bitrix24"},
])
def test_unknown_crm_is_refused_at_create_app(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="crm"):
        create_app(config)


def test_unknown_keys_and_bad_subdomain_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown demo page config keys"):
        create_app({"amo_base": "/x"})
    with pytest.raises(ValueError, match="amocrm_subdomain"):
        create_app({"crm": "amocrm", "amocrm_subdomain": ""})
    # upper-case keys are Flask config, not page settings
    assert create_app({"TESTING": True}).config["TESTING"] is True


# -- the JavaScript's endpoints -----------------------------------------------------------


def test_js_calls_only_declared_endpoints() -> None:
    js = _js()
    declared = _declared()
    names = {name for name, *_ in declared}
    assert names == {"deliver", "sent", "deliveries", "crmState", "crmReply",
                     "amoState", "amoReply", "amoNote", "amoLeadStatus",
                     "b24State", "b24Reply", "b24LeadStatus", "b24DealStage"}
    # One fetch() in the whole file, inside call(), which only takes ENDPOINTS names.
    assert js.count("fetch(") == 1
    assert set(re.findall(r'\bcall\("(\w+)"', js)) == names
    # every call(...) names its endpoint literally (a bare "call()" is prose in a comment)
    assert not re.search(r'\bcall\((?![")])', js.replace("async function call(", ""))
    literals = set(re.findall(r'"(/_[a-z_]+)"', js))
    assert literals == {path for _, _, path, _ in declared}
    # Each CRM panel calls exactly its sandbox's endpoints.
    for crm, wanted in CRM_ENDPOINTS.items():
        assert {(path, method) for _, sandbox, path, method in declared
                if sandbox == crm} == wanted


def test_js_uses_only_ids_the_pages_have() -> None:
    used = set(re.findall(r'getElementById\("([\w-]+)"\)', _js()))
    assert used == SHARED_IDS | PANEL_IDS["hubspot"] | PANEL_IDS["amocrm"] | PANEL_IDS["bitrix24"]


@pytest.mark.parametrize(
    ("crm", "name", "sandbox", "path", "method"),
    [(crm, *endpoint) for crm in CRMS for endpoint in _declared()
     if endpoint[1] in ("telegram", crm)])
def test_js_endpoints_exist_for_the_chosen_crm(crm: str, name: str, sandbox: str, path: str,
                                               method: str) -> None:
    # The page of this CRM points the endpoint's sandbox at its mount point...
    body = _parse(_page({"crm": crm})).data
    assert body[f"{sandbox}-base"] == f"/sandbox/{sandbox}", name
    # ...and the real sandbox app mounted there has the route.
    assert _exists(SANDBOX_APPS[sandbox](), path, method), name


def test_page_escapes_user_data() -> None:
    js = _js()
    assert "innerHTML" not in js and "outerHTML" not in js and "insertAdjacentHTML" not in js
    assert "document.write" not in js and "eval(" not in js and "new Function" not in js


# -- what the panels do, against the real sandboxes ---------------------------------------


def test_page_flow_against_the_telegram_sandbox() -> None:
    """What the page's customer panel does, in order: deliver, then poll the transcript."""
    client = _demo_server()
    base = "/sandbox/telegram"
    # No webhook yet: the page shows the 409 message.
    first = client.post(f"{base}/_deliver", json={"from": {"id": 5, "first_name": "A"},
                                                  "text": "hi"})
    assert first.status_code == 409
    sent: Any = client.get(f"{base}/_sent", query_string={"chat_id": "5"}).get_json()
    deliveries: Any = client.get(f"{base}/_deliveries",
                                 query_string={"chat_id": "5"}).get_json()
    assert sent == {"sent": []} and deliveries == {"deliveries": []}


def _amojo(client: Client, path: str, payload: dict[str, Any]) -> Any:
    """A signed Chats API call, as the bridge makes it."""
    raw = json.dumps(payload).encode()
    date = email.utils.formatdate(usegmt=True)
    headers = sign_request(DEMO_CHANNEL_SECRET, "POST", path, raw, date)
    return client.post("/sandbox/amocrm/amojo" + path, data=raw, headers=headers)


def _customer_writes(client: Client, msgid: str, text: str) -> None:
    scope = f"{DEMO_CHANNEL_ID}_{DEMO_AMOJO_ID}"
    resp = _amojo(client, f"/v2/origin/custom/{scope}", {
        "event_type": "new_message", "payload": {
            "timestamp": int(time.time()), "msec_timestamp": int(time.time() * 1000),
            "msgid": msgid, "conversation_id": "tg-5", "silent": False,
            "sender": {"id": "tg-5", "name": "Anna Customer"},
            "message": {"type": "text", "text": text}}})
    assert resp.status_code == 200, resp.get_data(as_text=True)


def test_page_flow_against_the_amocrm_sandbox() -> None:
    """What the amoCRM panel does, in order, with the shapes its JavaScript reads."""
    client = _demo_server({"crm": "amocrm"})
    body = _parse(client.get("/sandbox/").get_data(as_text=True)).data
    base, sub = body["amocrm-base"], body["amocrm-subdomain"]

    def state() -> dict[str, Any]:
        resp = client.get(f"{base}/_state", query_string={"account": sub})
        assert resp.status_code == 200
        [account] = resp.get_json()["accounts"]
        return dict(account)

    assert state()["contacts"] == [] and state()["leads"] == []
    # the bridge connects its channel and files the customer's first message
    connect = _amojo(client, f"/v2/origin/custom/{DEMO_CHANNEL_ID}/connect", {
        "account_id": DEMO_AMOJO_ID, "title": "Bridge", "hook_api_version": "v2"})
    assert connect.status_code == 200, connect.get_data(as_text=True)
    _customer_writes(client, "m-1", "Hello")
    account = state()
    [contact] = account["contacts"]
    [lead] = account["leads"]
    assert contact["name"] == "Anna Customer" and contact["leads"] == [lead["id"]]
    assert {"id": contact["id"], "is_main": True} in lead["contacts"]
    stages = {s["id"]: s["name"] for p in account["pipelines"] for s in p["statuses"]
              if p["id"] == lead["pipeline_id"]}
    assert lead["status_id"] in stages and 142 in stages and 143 in stages
    assert lead["responsible_user_id"] in {u["id"] for u in account["users"]}
    [chat] = account["chats"]
    assert chat["contact_id"] == contact["id"] and chat["client"]["name"] == "Anna Customer"
    assert [(m["direction"], m["text"]) for m in chat["messages"]] == [("in", "Hello")]
    assert isinstance(chat["messages"][0]["timestamp"], int)

    # reply in amoCRM's chat, by contact id (no hook URL here: reported, not failed)
    reply = client.post(f"{base}/_reply", json={"contact_id": contact["id"],
                                                "text": "Hi!", "account": sub})
    assert reply.status_code == 200
    assert reply.get_json()["webhook"]["status"] is None
    assert reply.get_json()["webhook"]["error"]
    missing = client.post(f"{base}/_reply", json={"contact_id": 1, "text": "x",
                                                  "account": sub})
    assert missing.status_code == 404 and missing.get_json()["error"] == "chat_not_found"

    # reply as a note on the contact's open lead
    note = client.post(f"{base}/_note", json={"lead_id": lead["id"],
                                              "text": "@client It ships today"})
    assert note.status_code == 200 and note.get_json()["webhooks"] == []
    account = state()
    [n] = [n for n in account["notes"] if n["entity_type"] == "leads"]
    assert n["entity_id"] == lead["id"] and n["params"]["text"] == "@client It ships today"
    assert isinstance(n["created_at"], int) and n["created_by"] in {u["id"] for u in
                                                                    account["users"]}
    [chat] = account["chats"]
    assert [m["direction"] for m in chat["messages"]] == ["in", "out"]
    assert chat["messages"][1]["sender"]["name"]

    # Won: the lead closes; the customer's next message opens a new lead
    won = client.post(f"{base}/_lead_status", json={"lead_id": lead["id"], "status_id": 142})
    assert won.status_code == 200 and won.get_json()["lead"]["status_id"] == 142
    _customer_writes(client, "m-2", "One more question")
    account = state()
    assert [x["status_id"] == 142 for x in account["leads"]] == [True, False]
    assert [c["id"] for c in account["contacts"]] == [contact["id"]]
    lost = client.post(f"{base}/_lead_status", json={"lead_id": account["leads"][1]["id"],
                                                     "status_id": 143})
    assert lost.status_code == 200 and lost.get_json()["lead"]["status_id"] == 143


# -- the Bitrix24 panel against the real sandbox ------------------------------------------

SVG_ICON = (
    "data:image/svg+xml;charset=US-ASCII,"
    "%3Csvg%20xmlns%3D%22http%3A%2F%2Fwww.w3.org%2F2000%2Fsvg%22%2F%3E"
)
B24 = "/sandbox/bitrix24"


def _b24_hook(client: Client, method: str, body: dict[str, Any]) -> Any:
    """A REST call through the demo portal's incoming webhook."""
    resp = client.post(f"{B24}/{DEMO_DOMAIN}/rest/{DEMO_WEBHOOK_USER}/{DEMO_WEBHOOK_CODE}/"
                       f"{method}.json", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["result"]


def _b24_app(client: Client, method: str, token: str, body: dict[str, Any]) -> Any:
    """A REST call with the app's token (imconnector.* refuse webhooks)."""
    resp = client.post(f"{B24}/{DEMO_DOMAIN}/rest/{method}",
                       data=json.dumps({**body, "auth": token}), content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["result"]


def _b24_connect(client: Client) -> str:
    """The bridge installs, registers its connector and activates it on the demo line."""
    token = str(client.post(f"{B24}/_install", json={}).get_json()["access_token"])
    assert _b24_app(client, "imconnector.register", token, {
        "ID": "crm_bridge", "NAME": "CRM bridge", "ICON": {"DATA_IMAGE": SVG_ICON},
        "PLACEMENT_HANDLER": "https://bridge.example/placement"}) == {"result": True}
    assert _b24_app(client, "imconnector.activate", token, {
        "CONNECTOR": "crm_bridge", "LINE": DEMO_LINE_ID, "ACTIVE": 1}) is True
    return token


def _b24_customer_writes(client: Client, token: str, text: str, msgid: str, *, user: str = "5",
                         name: str = "Anna", tracker: bool = False) -> None:
    """A customer message arrives through the connector, as the bridge sends it (the
    customer's Telegram id as user.id; disable_crm unless Bitrix24's tracker is wanted)."""
    message: dict[str, Any] = {"id": msgid, "date": int(time.time()), "text": text}
    if not tracker:
        message["disable_crm"] = "Y"
    result = _b24_app(client, "imconnector.send.messages", token, {
        "CONNECTOR": "crm_bridge", "LINE": DEMO_LINE_ID, "MESSAGES": [
            {"user": {"id": user, "name": name}, "message": message,
             "chat": {"id": f"tg-{user}", "name": f"Telegram {name}"}}]})
    assert result["SUCCESS"] is True, result


def _b24_closing_stages(portal: dict[str, Any], category_id: str) -> tuple[str, str]:
    """What demo.js's closingStages() picks: the pipeline's success stage and its first
    plain failure stage, by SORT."""
    entity = "DEAL_STAGE" if int(category_id or 0) == 0 else f"DEAL_STAGE_{category_id}"
    rows = sorted((s for s in portal["statuses"] if s["ENTITY_ID"] == entity),
                  key=lambda s: int(s["SORT"]))
    won = [s for s in rows if s["SEMANTICS"] == "S"]
    lost = [s for s in rows if s["SEMANTICS"] == "F" and s["EXTRA"]["SEMANTICS"] != "apology"]
    return won[0]["STATUS_ID"], lost[0]["STATUS_ID"]


def test_page_flow_against_the_bitrix24_sandbox() -> None:
    """What the Bitrix24 panel does, in order, with the shapes its JavaScript reads."""
    client = _demo_server({"crm": "bitrix24"})
    body = _parse(client.get("/sandbox/").get_data(as_text=True)).data
    base, portal_name = body["bitrix24-base"], body["bitrix24-portal"]
    assert base == B24

    def portal() -> dict[str, Any]:
        resp = client.get(f"{base}/_state", query_string={"account": portal_name})
        assert resp.status_code == 200
        [one] = resp.get_json()["accounts"]
        assert one["domain"] == portal_name
        return dict(one)

    empty = portal()
    assert empty["contacts"] == [] and empty["leads"] == [] and empty["deals"] == []
    assert empty["chats"] == []
    assert client.get(f"{base}/_state", query_string={"account": "nope.bitrix24.ru"}).get_json()[
        "error"] == "account_not_found"  # the page shows its message

    # the bridge files the customer: contact (Telegram id in IM), lead, deal, timeline
    token = _b24_connect(client)
    contact_id = _b24_hook(client, "crm.contact.add", {"fields": {
        "NAME": "Anna", "LAST_NAME": "Customer", "ASSIGNED_BY_ID": 2,
        "IM": [{"VALUE": "5", "VALUE_TYPE": "TELEGRAM"}]}})
    lead_id = _b24_hook(client, "crm.lead.add", {"fields": {
        "TITLE": "Telegram: Anna Customer", "CONTACT_ID": contact_id, "ASSIGNED_BY_ID": 2}})
    deal_id = _b24_hook(client, "crm.deal.add", {"fields": {
        "TITLE": "Partner deal", "CONTACT_IDS": [contact_id], "CATEGORY_ID": 1}})
    _b24_hook(client, "crm.timeline.comment.add", {"fields": {
        "ENTITY_TYPE": "lead", "ENTITY_ID": lead_id, "COMMENT": "[b]Anna[/b]: Hello"}})
    _b24_hook(client, "crm.activity.todo.add", {
        "ownerTypeId": 2, "ownerId": deal_id, "deadline": "2030-01-01T10:00:00",
        "title": "Call back"})
    _b24_customer_writes(client, token, "Hello", "m-1")

    p = portal()
    users = {str(u["ID"]): " ".join([u["NAME"], u["LAST_NAME"]]) for u in p["users"]}
    statuses = {(s["ENTITY_ID"], s["STATUS_ID"]): s for s in p["statuses"]}
    [contact] = p["contacts"]
    assert contact["id"] == contact_id
    assert (contact["fields"]["NAME"], contact["fields"]["LAST_NAME"]) == ("Anna", "Customer")
    assert users[contact["fields"]["ASSIGNED_BY_ID"]] == "Maria Schmidt"
    [im] = contact["multifields"]["IM"]
    assert (im["VALUE_TYPE"], im["VALUE"]) == ("TELEGRAM", "5")
    # leads: title, status name, responsible; linked by CONTACT_ID
    [lead] = p["leads"]
    assert lead["id"] == lead_id and lead["fields"]["TITLE"] == "Telegram: Anna Customer"
    assert lead["fields"]["CONTACT_ID"] == str(contact_id)
    assert statuses[("STATUS", lead["fields"]["STATUS_ID"])]["NAME"] == "Unprocessed"
    assert statuses[("STATUS", lead["fields"]["STATUS_ID"])]["SEMANTICS"] is None  # open
    assert statuses[("STATUS", "CONVERTED")]["SEMANTICS"] == "S"
    assert statuses[("STATUS", "JUNK")]["SEMANTICS"] == "F"
    assert users[lead["fields"]["ASSIGNED_BY_ID"]] == "Maria Schmidt"
    [comment] = lead["timeline"]["comments"]
    assert comment["COMMENT"] == "[b]Anna[/b]: Hello" and comment["CREATED"][:2] == "20"
    assert users[str(comment["AUTHOR_ID"])] == "Klaus Weber"
    # deals: title, stage name in the pipeline's directory, linked by CONTACT_IDS
    [deal] = p["deals"]
    assert deal["links"]["CONTACT_IDS"] == [contact_id]
    category = deal["fields"]["CATEGORY_ID"]
    assert category == "1" and {c["id"]: c["name"] for c in p["deal_categories"]}[1] == "Partners"
    assert statuses[("DEAL_STAGE_1", deal["fields"]["STAGE_ID"])]["NAME"] == "New"
    won_stage, lost_stage = _b24_closing_stages(p, category)
    assert (won_stage, lost_stage) == ("C1:WON", "C1:LOSE")
    assert _b24_closing_stages(p, "0") == ("WON", "LOSE")  # not APOLOGY
    [todo] = deal["timeline"]["activities"]
    assert todo["title"] == "Call back" and todo["created"] and todo["completed"] is False
    # a task bound to the contact (task_kind: task): the panel lists it unless completed ("5")
    _b24_hook(client, "tasks.task.add", {"fields": {
        "TITLE": "Send the price list", "RESPONSIBLE_ID": 2, "DEADLINE": "2030-01-02T10:00:00",
        "UF_CRM_TASK": [f"C_{contact_id}"]}})
    [task] = portal()["tasks"]
    assert (task["title"], task["responsibleId"], task["status"]) == (
        "Send the price list", "2", "2")
    assert task["UF_CRM_TASK"] == [f"C_{contact_id}"] and task["deadline"][:4] == "2030"
    # the Open Lines chat: the contact's by its Telegram id (the connector's user.id)
    [chat] = p["chats"]
    assert chat["external_user_id"] == im["VALUE"] and chat["group"] is False
    assert chat["crm"] is None  # disable_crm: the bridge files it, not the tracker
    assert [(m["direction"], m["text"]) for m in chat["messages"]] == [("in", "Hello")]
    assert isinstance(chat["messages"][0]["date"], int)
    assert {line["ID"]: line["LINE_NAME"] for line in p["open_lines"]}[chat["line"]]

    # the operator replies in Open Lines, the way the page addresses the chat
    reply = client.post(f"{base}/_reply", json={
        "account": portal_name, "conversation": chat["external_chat_id"],
        "connector": chat["connector"], "line": chat["line"], "text": "Hi!\nHow can I help?"})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    answer = reply.get_json()
    # no OnImConnectorMessageAdd handler bound: nothing delivered, reported
    assert answer["deliveries"] == [] and answer["webhook"]["status"] is None
    assert answer["webhook"]["error"]
    assert answer["message"]["direction"] == "out"
    assert users[str(answer["message"]["author"])] == "Maria Schmidt"  # the line's queue
    [chat] = portal()["chats"]
    out = chat["messages"][1]
    assert out["direction"] == "out" and out["date"] >= chat["messages"][0]["date"]
    # BB-code with the operator's signature, which demo.js strips (SIGNATURE)
    assert out["text"] == "[b]Maria Schmidt:[/b] [br]Hi![br]How can I help?"
    assert '.replace(/\\[br\\s*\\/?\\]/gi, "\\n")' in _js()  # [br] -> newline

    # a contact with no Open Lines chat is CRM-only: the page sends nothing (the sandbox
    # would refuse an unknown chat anyway)
    _b24_hook(client, "crm.contact.add", {"fields": {"NAME": "Boris"}})
    missing = client.post(f"{base}/_reply", json={
        "account": portal_name, "conversation": "no-such-chat", "text": "x"})
    assert missing.status_code == 404 and missing.get_json()["error"] == "chat_not_found"

    # Bitrix24's own tracker (tenant setting): the chat's record is a lead with the
    # chat's imol| address, which demo.js rebuilds from the chat's fields
    _b24_customer_writes(client, token, "Via the tracker", "m-2", user="7", name="Olga",
                         tracker=True)
    p = portal()
    tracked = p["chats"][-1]
    assert tracked["crm"]["entity"] == "lead"
    [tracker_lead] = [x for x in p["leads"] if x["id"] == tracked["crm"]["id"]]
    address = "|".join(["imol", tracked["connector"], str(tracked["line"]),
                        tracked["external_chat_id"], str(tracked["user"])])
    assert tracker_lead["multifields"]["IM"][0]["VALUE"] == address

    # lead converted; deal won in its own pipeline
    converted = client.post(f"{base}/_lead_status", json={
        "portal": portal_name, "lead_id": lead_id, "status_id": "CONVERTED"})
    assert converted.status_code == 200
    assert converted.get_json() == {"lead_id": lead_id, "status_id": "CONVERTED",
                                    "deliveries": []}
    won = client.post(f"{base}/_deal_stage", json={
        "portal": portal_name, "deal_id": deal_id, "stage_id": won_stage})
    assert won.status_code == 200 and won.get_json()["semantic"] == "S"
    p = portal()
    [lead] = [x for x in p["leads"] if x["id"] == lead_id]
    assert lead["fields"]["STATUS_ID"] == "CONVERTED"
    assert lead["fields"]["STATUS_SEMANTIC_ID"] == "S"
    [deal] = p["deals"]
    assert deal["fields"]["STAGE_ID"] == "C1:WON" and deal["fields"]["CLOSED"] == "Y"
    assert statuses[("DEAL_STAGE_1", "C1:WON")]["NAME"] == "Deal successful"
    # Junk and Lost close the others
    junk = client.post(f"{base}/_lead_status", json={
        "portal": portal_name, "lead_id": tracker_lead["id"], "status_id": "JUNK"})
    assert junk.status_code == 200
    other = _b24_hook(client, "crm.deal.add", {"fields": {"TITLE": "General deal"}})
    lost = client.post(f"{base}/_deal_stage", json={
        "portal": portal_name, "deal_id": other, "stage_id": _b24_closing_stages(p, "0")[1]})
    assert lost.status_code == 200 and lost.get_json()["semantic"] == "F"
    p = portal()
    assert {x["id"]: x["fields"]["STATUS_SEMANTIC_ID"] for x in p["leads"]} == {
        lead_id: "S", tracker_lead["id"]: "F"}
    assert [x["fields"]["STAGE_SEMANTIC_ID"] for x in p["deals"]] == ["S", "F"]
