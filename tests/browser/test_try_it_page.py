"""The try-it page in a real browser, the way a newcomer meets it.

For each CRM the test starts ``bridge run --demo <crm>`` (what ``make run``
starts) once and opens the page at 390 and 1280 px (and 1920 px for HubSpot), with a
customer of its own per width. At each width:

* the whole loop works in the page: the customer writes on the left, the
  message shows in the CRM panel (its line break kept) with the owner, the
  open tasks and the stage label the CRM holds, the rep answers on the right
  and the customer reads the answer; the notes under the bubbles are words
  ("delivered"), not status codes or API method names;
* the layout holds: every text box is at least 200 px wide, no word is split
  across two lines (each run of letters and digits is laid out on one line
  box), nothing is wider than the window;
* the WhatsApp customer beside the Telegram one (a phone number and a name of
  its own per width) writes with Ctrl+Enter, the message reaches the CRM
  panel, the rep answers on the right and the answer comes back into the
  WhatsApp panel with its delivery ticks; at 1280 px the sandbox's clock then
  moves a day on, so the rep's next answer goes out as the mapping's approved
  template and shows as "template: <name> (<params>)";
* the MAX customer (at 1280 px) writes with Ctrl+Enter, the message reaches the
  CRM panel, the rep's answer comes back into the MAX panel, and a shared phone
  shows in the chat as the contact card;
* the web chat visitor (at 1280 px) follows the page's shop links, landing from
  the Yandex ad and coming back from the newsletter (the shop opens in new tabs),
  leaves a name and a phone in the widget's pre-chat form with the consent box,
  writes in English there and in Russian on the product page; the CRM holds the
  contact with the phone (and the consent, where the mapping writes it), the
  lead / deal with the last touch's UTM tags (and the first touch's, where the
  mapping writes them: HubSpot and amoCRM; Bitrix24's built-in UTM_* fields take
  the last) and each message once per place with the page it was written on
  under it ("Page: <url>", "Страница: <url>" in the Russian mappings); the CRM
  panel follows the visitor, the rep answers there and the open widget shows the
  answer within a second of the bridge accepting it (screenshot
  ``try-it-webchat-<crm>-1280.png``);
* no console error and no page error while the bridge runs (a 404, a failed
  request or an exception in the page's script all show up there).

Then the bridge is stopped with SIGINT (Ctrl-C), once per CRM, since each CRM
panel has its own poller that must survive its sandbox going away and coming
back empty: all three open pages show the offline banner within 5 s of the
server refusing connections, probe it with backed-off requests instead of
polling at full rate, fail a send with a message; started again on the same
port, the bridge is found and the banner clears. A WhatsApp send while the
bridge is down fails with a message too.

Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright's sync API;
no browser is ever downloaded. Screenshots of every CRM x width go to
``$BRIDGE_SCREENSHOTS_DIR`` (default ``var/screenshots/``), the WhatsApp loop's as
``try-it-whatsapp-<crm>-<width>.png``; the README shows the 1280 px ones of the
Telegram loop, refreshed by hand when the page changes:
``cp var/screenshots/try-it-{hubspot,amocrm,bitrix24}-1280.png docs/img/``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright

from bench.stack import ROOT, free_port
from bench.traffic import wait_until
from tests.support.widget import (
    W,
    fill_prechat,
    open_panel,
    send,
    texts,
    visitor_id,
    wait_text,
    widget_key,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CRMS = ("hubspot", "amocrm", "bitrix24")
WIDTHS = (390, 1280, 1920)
#: the widths each CRM's page opens at: the panels' layout differs per CRM at the narrow
#: widths; 1920 px (the widest, where layouts break least) once, with HubSpot's page
# the layouts are the page's own: every width once (HubSpot), the other CRMs
# at the desktop width (the phone width until 2026-12-06: the 20-minute budget)
WIDTHS_OF = {"hubspot": WIDTHS, "amocrm": WIDTHS[1:2], "bitrix24": WIDTHS[1:2]}
HEIGHT = 900
#: one customer per width: each loop has a contact of its own in the CRM
CUSTOMERS = {390: "Maria", 1280: "Anna", 1920: "Olga"}
#: the WhatsApp customer of each width: (name, phone number as typed, its wa_id)
WA_CUSTOMERS = {390: ("Sofia", "+7 999 000-03-90", "79990000390"),
                1280: ("Elena", "79990001280", "79990001280"),
                1920: ("Irina", "+7 (999) 000-19-20", "79990001920")}
#: where the rep's answer goes out as a template: the sandbox's clock a day on
WA_TEMPLATE_WIDTH = 1280
#: what the page's WhatsApp panel shows when it opens (sandbox/web/static/whatsapp.js)
WA_DEFAULT_PHONE, WA_DEFAULT_NAME = "79990001234", "Anna"
MIN_TEXT_BOX_PX = 200
OFFLINE_WITHIN_S = 5.0
#: the page probes every 5 s at most while offline, then polls again
ONLINE_AGAIN_WITHIN_S = 10.0
#: long enough offline for the back-off to show (probes after 1, 2, 4, 5, 5 s ...)
OFFLINE_OBSERVED_S = 12.0
LOOP_MS = 60_000
SEND_MS = 30_000
#: the ``bridge`` command of this virtualenv (what ``make run`` runs)
BRIDGE_CLI = Path(sys.executable).with_name("bridge")
SCREENSHOTS = Path(os.environ.get("BRIDGE_SCREENSHOTS_DIR") or ROOT / "var" / "screenshots")
#: a clock time as the page prints it ("07:04 AM", "19:04")
TIME = r"\d{1,2}:\d{2}(?:\s?[AP]M)?"
TEXT_BOXES = "input:not([type=radio]):not([type=checkbox]):not([type=hidden]), textarea"
# Every run of letters and digits in the page's visible text, laid out on more than one
# line box, is a word split across lines (what overflow-wrap: anywhere did at 390 px).
SPLIT_WORDS_JS = """() => {
  const split = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest("script, style, textarea, [hidden]")) continue;
    for (const m of node.data.matchAll(/[\\p{L}\\p{N}]+/gu)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const lines = new Set();
      for (const r of range.getClientRects()) if (r.width > 0) lines.add(Math.round(r.top));
      if (lines.size > 1) split.push(m[0] + " in <" + parent.tagName.toLowerCase() + " class='" +
                                     parent.className + "'>");
    }
  }
  return { split: split, scrollWidth: document.documentElement.scrollWidth,
           innerWidth: window.innerWidth };
}"""


# -- the bridge, as a newcomer runs it ----------------------------------------------------


class _Bridge:
    """``bridge run --demo <crm> --port <port>``: started, stopped with SIGINT, started
    again on the same port and var dir."""

    def __init__(self, crm: str, port: int, var_dir: Path) -> None:
        self.crm, self.port, self.var_dir = crm, port, var_dir
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BRIDGE_", "HUBSPOT_", "TELEGRAM_"))}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        env.update({"BRIDGE_VAR_DIR": str(self.var_dir), "PYTHONUNBUFFERED": "1"})
        output: list[str] = []
        self.output = output
        self.proc = subprocess.Popen(  # noqa: S603 (our own CLI)
            [str(BRIDGE_CLI), "run", "--demo", self.crm, "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: output.extend(iter(stdout.readline, "")),
                         daemon=True).start()
        running = wait_until(lambda: any("demo is running" in line for line in output)
                             or self.proc is None or self.proc.poll() is not None, timeout=180)
        assert running and self.proc.poll() is None, "".join(output[-40:])

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to ``bridge run``, without waiting for it to finish."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)

    def wait_stopped(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.interrupt()
        self.wait_stopped()

    def refuses_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return False
        except OSError:
            return True


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def bridge(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Bridge]:
    running = _Bridge(request.param, free_port(), tmp_path / "var")
    running.start()
    try:
        yield running
    finally:
        running.stop()


# -- a page and what it logged -------------------------------------------------------------


@dataclass
class _Tab:
    width: int
    page: Page
    errors: list[str] = field(default_factory=list)
    #: monotonic times of the GET requests that got no answer
    failed_polls: list[float] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"page error: {error}")

    def on_request_failed(self, req: Request) -> None:
        if req.method == "GET":
            self.failed_polls.append(time.monotonic())


def _open(browser: Browser, width: int, url: str) -> _Tab:
    context = browser.new_context(viewport={"width": width, "height": HEIGHT}, locale="en-US")
    tab = _Tab(width, context.new_page())
    tab.page.on("console", tab.on_console)
    tab.page.on("pageerror", tab.on_page_error)
    tab.page.on("requestfailed", tab.on_request_failed)
    tab.page.goto(url)
    return tab


def _eventually(check: Callable[[], None], timeout: float = 30.0) -> None:
    """Retry an assertion until it holds (the bridge writes the CRM asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


# -- what the CRM holds for a customer (from the sandbox's GET /_state) ---------------------


@dataclass
class _Record:
    owner: str
    tasks: list[str]
    stages: list[str]


def _hubspot_record(base: str, page: Page, name: str) -> _Record:
    data = requests.get(f"{base}/sandbox/hubspot/_state", timeout=10).json()
    for portal in data["accounts"]:
        found = [c for c in portal["contacts"] if c["properties"].get("firstname") == name]
        if found:
            break
    else:
        raise AssertionError(f"no HubSpot contact {name!r} yet")
    [contact] = found
    owners = {o["id"]: f"{o['firstName']} {o['lastName']}" for o in portal["owners"]}

    def linked(kind: str) -> set[str]:
        return {a["toId"] for a in portal["associations"] if a["fromObjectType"] == "contacts"
                and a["fromId"] == contact["id"] and a["toObjectType"] == kind}

    tasks = [t["properties"]["hs_task_subject"] for t in portal["tasks"]
             if t["id"] in linked("tasks") and t["properties"].get("hs_task_status") != "COMPLETED"]
    labels = {s["id"]: s["label"] for p in portal["pipelines"]["deals"] for s in p["stages"]}
    stages = [labels[d["properties"]["dealstage"]] for d in portal["deals"]
              if d["id"] in linked("deals")]
    return _Record(owners[contact["properties"]["hubspot_owner_id"]], tasks, stages)


def _amocrm_record(base: str, page: Page, name: str) -> _Record:
    subdomain = page.evaluate("document.body.dataset.amocrmSubdomain")
    data = requests.get(f"{base}/sandbox/amocrm/_state", params={"account": subdomain},
                        timeout=10).json()
    [account] = data["accounts"]
    found = [c for c in account["contacts"] if c["name"] == name and not c["is_deleted"]]
    assert found, f"no amoCRM contact {name!r} yet"
    [contact] = found
    users = {u["id"]: u["name"] for u in account["users"]}
    leads = [lead for lead in account["leads"]
             if any(c["id"] == contact["id"] for c in lead["contacts"])]
    lead_ids = {lead["id"] for lead in leads}
    tasks = [_lines(t["text"])[0] for t in account["tasks"] if not t["is_completed"] and (
        (t["entity_type"] == "contacts" and t["entity_id"] == contact["id"])
        or (t["entity_type"] == "leads" and t["entity_id"] in lead_ids))]
    names = {s["id"]: s["name"] for p in account["pipelines"] for s in p["statuses"]}
    return _Record(users[contact["responsible_user_id"]], tasks,
                   [names[lead["status_id"]] for lead in leads])


def _bitrix24_record(base: str, page: Page, name: str) -> _Record:
    domain = page.evaluate("document.body.dataset.bitrix24Portal")
    data = requests.get(f"{base}/sandbox/bitrix24/_state", params={"account": domain},
                        timeout=10).json()
    [portal] = data["accounts"]
    found = [c for c in portal["contacts"] if c["fields"]["NAME"] == name]
    assert found, f"no Bitrix24 contact {name!r} yet"
    [contact] = found
    cid = str(contact["id"])
    users = {str(u["ID"]): " ".join(filter(None, [u["NAME"], u["LAST_NAME"]]))
             for u in portal["users"]}
    leads = [lead for lead in portal["leads"] if lead["fields"].get("CONTACT_ID") == cid]
    deals = [d for d in portal["deals"] if d["fields"].get("CONTACT_ID") == cid
             or cid in map(str, d["links"].get("CONTACT_IDS", []))]
    keys = {f"C_{cid}"} | {f"L_{x['id']}" for x in leads} | {f"D_{x['id']}" for x in deals}
    tasks = [a["title"] for r in [contact, *leads, *deals] for a in r["timeline"]["activities"]
             if not a["completed"]]
    tasks += [t["title"] for t in portal["tasks"]
              if t["status"] != "5" and keys & set(t["UF_CRM_TASK"])]
    statuses = {(s["ENTITY_ID"], s["STATUS_ID"]): s["NAME"] for s in portal["statuses"]}
    stages = [statuses[("STATUS", lead["fields"]["STATUS_ID"])] for lead in leads]
    return _Record(users[contact["fields"]["ASSIGNED_BY_ID"]], tasks, stages)


RECORDS: dict[str, Callable[[str, Page, str], _Record]] = {
    "hubspot": _hubspot_record, "amocrm": _amocrm_record, "bitrix24": _bitrix24_record}


def _shows_the_record(bridge: _Bridge, page: Page, name: str) -> None:
    """The CRM panel shows the contact's owner and open tasks by name, and the stage
    label of its deals / leads (not the stage id)."""
    record = RECORDS[bridge.crm](bridge.base, page, name)
    card = page.locator("#record-card")
    assert card.locator(".owner").inner_text() == record.owner
    shown = sorted(card.locator(".task .subject").all_inner_texts())
    assert shown == sorted(record.tasks), (shown, record.tasks)
    mine = " ".join(page.locator(".records-list .record.mine").all_inner_texts())
    for stage in record.stages:
        assert stage in mine, (stage, mine)


# -- the loop, the layout --------------------------------------------------------------------


def _customer_writes(page: Page, name: str, text: str) -> None:
    page.fill("#customer-name", name)
    page.fill("#customer-text", text)
    page.click("#customer-form button[type=submit]")


def _rep_replies(page: Page, text: str) -> None:
    page.fill("#reply-text", text)
    page.click("#reply-form button[type=submit]")


def _whole_loop(tab: _Tab, bridge: _Bridge) -> None:
    page, name = tab.page, CUSTOMERS[tab.width]
    question_line = "Do you deliver to Berlin?"
    answer = f"Hi {name}, yes: Berlin takes two days."
    _customer_writes(page, name, f"Hello, this is {name}!\n{question_line}")
    expect(page.locator("#customer-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
    bubble = page.locator("#transcript .bubble.customer").filter(has_text=question_line)
    expect(bubble.locator(".meta")).to_have_text(
        re.compile(rf"^{TIME} · delivered / доставлено ✓$"), timeout=LOOP_MS)

    # The CRM panel follows the new contact; the message shows with its line break.
    expect(page.locator("#timeline-contact")).to_have_text(name, timeout=LOOP_MS)
    entries = page.locator("#timeline .entry").filter(has_text=question_line)
    expect(entries.first).to_be_visible(timeout=LOOP_MS)
    for entry in entries.all():
        assert question_line in _lines(entry.locator(".text").inner_text())
    _eventually(lambda: _shows_the_record(bridge, page, name))

    _rep_replies(page, answer)
    expect(page.locator("#reply-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
    reply = page.locator("#transcript .bubble.bot").filter(has_text=answer)
    expect(reply).to_be_visible(timeout=LOOP_MS)
    expect(reply.locator(".meta")).to_have_text(re.compile(rf"^{TIME}$"))
    outgoing = page.locator("#timeline .entry.outgoing").filter(has_text=answer)
    expect(outgoing.locator(".meta")).to_contain_text(
        re.compile("sent / отправлено|delivered / доставлено ✓|read / прочитано ✓✓"),
        timeout=LOOP_MS)


# -- the MAX customer --------------------------------------------------------------------------

#: the MAX customer (at MAX_WIDTH only): a user id per CRM, a name, the phone shared
MAX_WIDTH = 1280
MAX_CUSTOMER = ("Vera", "79990005050")


def _max_loop(tab: _Tab, bridge: _Bridge) -> None:
    """A MAX user writes, the message reaches the CRM panel, the rep answers on the right,
    the answer comes back into the MAX panel; the user shares their phone (a card MAX signs)
    and the card shows in the chat."""
    from sandbox.max import DEMO_BOT_NAME, DEMO_BOT_USERNAME

    page = tab.page
    name, phone = MAX_CUSTOMER
    user = str(7_770_000 + CRMS.index(bridge.crm))
    expect(page.locator("#max h2")).to_have_text("Customer in MAX / Клиент в MAX")
    expect(page.locator("#max-bot")).to_have_text(
        f"{DEMO_BOT_NAME} (@{DEMO_BOT_USERNAME})", timeout=LOOP_MS)
    expect(page.locator("#max-notice")).to_be_hidden()  # the demo bot is subscribed
    for control in ("#max-user", "#max-name", "#max-phone", "#max-text", "#max-share",
                    "#max-new", "#max-form button[type=submit]", "#max-transcript"):
        assert page.locator(control).evaluate(
            "node => (node.labels && node.labels.length > 0) || !!node.getAttribute('aria-label')"
            " || !!node.textContent.trim()"), control
    question = f"Hi, {name} here on MAX: do you deliver on Sunday?"
    answer = f"Hi {name}, yes we do."
    page.fill("#max-user", user)
    page.fill("#max-name", name)
    page.fill("#max-phone", phone)
    page.fill("#max-text", question)
    page.focus("#max-text")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#max-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
    bubble = page.locator("#max-transcript .bubble.customer").filter(has_text=question)
    expect(bubble.locator(".meta")).to_have_text(
        re.compile(rf"^{TIME} · delivered / доставлено ✓$"), timeout=LOOP_MS)

    # the CRM panel follows the new contact: the message is in its timeline
    expect(page.locator("#timeline-contact")).to_have_text(name, timeout=LOOP_MS)
    entries = page.locator("#timeline .entry.incoming").filter(has_text=question)
    expect(entries.first).to_be_visible(timeout=LOOP_MS)
    _rep_replies(page, answer)
    expect(page.locator("#reply-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
    reply = page.locator("#max-transcript .bubble.bot").filter(has_text=answer)
    expect(reply.locator(".text")).to_have_text(answer, timeout=LOOP_MS)
    sent = requests.get(f"{bridge.base}/sandbox/max/_sent", params={"user_id": user},
                        timeout=10).json()["sent"]
    assert [s["text"] for s in sent] == [answer]

    # the user shares their phone: the card shows in the chat
    page.click("#max-share")
    expect(page.locator("#max-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
    card = page.locator("#max-transcript .bubble.customer").filter(has_text=phone)
    expect(card.locator(".text")).to_have_text(f"[contact / контакт: {phone}]", timeout=LOOP_MS)


# -- the web chat visitor ---------------------------------------------------------------------

#: the web chat visitor (at WEBCHAT_WIDTH only): a name and the phone of the pre-chat form
WEBCHAT_WIDTH = 1280
WEBCHAT_VISITOR = ("Daria", "+7 999 555-12-80")
#: the try-it page's shop links the visitor follows (#webchat .shop-links): landed from the
#: Yandex ad (the first touch), came back from the newsletter (the last touch)
LANDING_LINK, RETURN_LINK = 1, 2
FIRST_TOUCH = {"utm_source": "yandex", "utm_medium": "cpc", "utm_campaign": "sencha"}
LAST_TOUCH = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "spring"}
#: written on the newsletter's page (English), then on the product page in Russian
WEBCHAT_EN = "Hello! Is the Sencha in stock?\nTwo packs, please."
WEBCHAT_RU = "Здравствуйте! Доставите в Казань?"
#: a reply shows in the open widget within this long of the bridge accepting it
REPLY_WITHIN_S = 1.0
#: the label of the page line under a message: the mapping's language (mappings/demo-<crm>.yaml)
PAGE_LABEL = {"hubspot": "Page", "amocrm": "Страница", "bitrix24": "Страница"}
#: the touches each CRM's lead / deal holds
TOUCH_KEYS = (*LAST_TOUCH, *(f"first_{k}" for k in FIRST_TOUCH))
#: where the mapping writes the first touch and the consent too (every demo mapping now:
#: Bitrix24 in user fields its setup creates)
FIRST_TOUCH_WRITTEN = CONSENT_WRITTEN = {"hubspot": True, "amocrm": True, "bitrix24": True}
#: Bitrix24's user fields of the first touch (lead) and the consent (contact), as
#: mappings/demo-bitrix24.yaml names them (13 characters after UF_CRM_)
B24_FIRST_TOUCH = {"first_utm_source": "UF_CRM_FIRST_SOURCE",
                   "first_utm_medium": "UF_CRM_FIRST_MEDIUM",
                   "first_utm_campaign": "UF_CRM_FIRST_CAMPGN"}
B24_CONSENT = {"version": "UF_CRM_CONSENT_VER", "page": "UF_CRM_CONSENT_PAGE"}
#: the CRM entries of each message: Bitrix24 has it in the Open Lines chat and as a comment
#: on the lead (mappings/demo-bitrix24.yaml: timeline: note, inbox: true)
ENTRIES_PER_MESSAGE = {"hubspot": 1, "amocrm": 1, "bitrix24": 2}


@dataclass
class _Visitor:
    """What a CRM holds for the web chat visitor: the contact's phones (digits) and
    consent (``version``, ``page``; empty where the mapping writes none), the lead's /
    deal's touches (``utm_source`` the last, ``first_utm_source`` the first; None where the
    CRM has no such field) and the texts of the visitor's entries."""

    phones: list[str]
    consent: dict[str, str | None]
    touches: dict[str, str | None]
    entries: list[str]


def _digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value or ""))


def _hubspot_visitor(bridge: _Bridge, page: Page, visitor: str) -> _Visitor:
    data = requests.get(f"{bridge.base}/sandbox/hubspot/_state", timeout=10).json()
    for portal in data["accounts"]:
        found = [c for c in portal["contacts"]
                 if c["properties"].get("bridge_webchat_id") == visitor]
        if found:
            break
    else:
        raise AssertionError(f"no HubSpot contact of the visitor {visitor} yet")
    [contact] = found
    deal_ids = {a["toId"] for a in portal["associations"] if a["fromObjectType"] == "contacts"
                and a["fromId"] == contact["id"] and a["toObjectType"] == "deals"}
    [deal] = [d["properties"] for d in portal["deals"] if d["id"] in deal_ids]
    entries = [m["text"] for t in portal["threads"] if t.get("associatedContactId") == contact["id"]
               for m in t["messages"] if m["direction"] == "INCOMING"]
    touches = {k: deal.get(f"bridge_{k}") for k in TOUCH_KEYS}
    props = contact["properties"]
    consent = {k: props.get(f"bridge_consent_{k}") for k in ("version", "page")}
    return _Visitor([_digits(props.get("phone"))], consent, touches, entries)


def _amocrm_visitor(bridge: _Bridge, page: Page, visitor: str) -> _Visitor:
    from crm_adapters.amocrm.fields import identity_field_name

    subdomain = page.evaluate("document.body.dataset.amocrmSubdomain")
    [account] = requests.get(f"{bridge.base}/sandbox/amocrm/_state",
                             params={"account": subdomain}, timeout=10).json()["accounts"]

    def values(record: dict[str, Any], key: str, name: str) -> list[str]:
        return [str(v["value"]) for f in record.get("custom_fields_values") or []
                if f.get(key) == name for v in f["values"]]

    found = [c for c in account["contacts"] if not c["is_deleted"]
             and visitor in values(c, "field_name", identity_field_name("webchat"))]
    assert found, f"no amoCRM contact of the visitor {visitor} yet"
    [contact] = found
    [lead] = [lead for lead in account["leads"]
              if any(c["id"] == contact["id"] for c in lead["contacts"])]
    touches = {k: next(iter(values(lead, "field_name", f"bridge_{k}")), None)
               for k in TOUCH_KEYS}
    entries = [m["text"] for chat in account["chats"]
               if (chat.get("client") or {}).get("client_id") == visitor
               for m in chat["messages"] if m["direction"] == "in"]
    consent = {k: next(iter(values(contact, "field_name", f"bridge_consent_{k}")), None)
               for k in ("version", "page")}
    return _Visitor([_digits(p) for p in values(contact, "field_code", "PHONE")], consent,
                    touches, entries)


def _bitrix24_visitor(bridge: _Bridge, page: Page, visitor: str) -> _Visitor:
    from crm_adapters.bitrix24.contacts import identity_value

    domain = page.evaluate("document.body.dataset.bitrix24Portal")
    [portal] = requests.get(f"{bridge.base}/sandbox/bitrix24/_state",
                            params={"account": domain}, timeout=10).json()["accounts"]
    value_type, value = identity_value("webchat", visitor)
    found = [c for c in portal["contacts"] if any(
        str(im.get("VALUE_TYPE")) == value_type and str(im.get("VALUE")) == value
        for im in c["multifields"].get("IM") or [])]
    assert found, f"no Bitrix24 contact of the visitor {visitor} yet"
    [contact] = found
    [lead] = [lead for lead in portal["leads"]
              if lead["fields"].get("CONTACT_ID") == str(contact["id"])]
    touches = {k: lead["fields"].get(k.upper()) or None for k in LAST_TOUCH}
    touches |= {k: lead["fields"].get(code) or None for k, code in B24_FIRST_TOUCH.items()}
    consent = {k: contact["fields"].get(code) or None for k, code in B24_CONSENT.items()}
    # each message twice: in the Open Lines chat and as a comment on the lead
    chats = [m["text"] for chat in portal["chats"] if chat["external_user_id"] == visitor
             for m in chat["messages"] if m["direction"] == "in"]
    comments = [str(c.get("COMMENT") or "") for c in lead["timeline"]["comments"]]
    return _Visitor([_digits(p.get("VALUE")) for p in contact["multifields"].get("PHONE") or []],
                    consent, touches, chats + comments)


VISITORS: dict[str, Callable[[_Bridge, Page, str], _Visitor]] = {
    "hubspot": _hubspot_visitor, "amocrm": _amocrm_visitor, "bitrix24": _bitrix24_visitor}


def _webchat_loop(tab: _Tab, bridge: _Bridge) -> None:
    """The web chat visitor follows the page's shop links (the Yandex ad, then the
    newsletter), leaves a phone in the pre-chat form and writes in English there, then in
    Russian on the product page; the CRM holds the contact with the phone, the lead / deal
    with the last touch (and the first, where the mapping writes it) and each message with
    the page it was written on; the rep answers in the CRM panel and the answer shows in the
    open widget within a second of the bridge accepting it."""
    page, context = tab.page, tab.page.context
    name, phone = WEBCHAT_VISITOR
    shop_errors: list[str] = []

    def watch(opened: Page) -> None:
        shop = _Tab(tab.width, opened, shop_errors)
        opened.on("console", shop.on_console)
        opened.on("pageerror", shop.on_page_error)

    context.on("page", watch)
    links = page.locator("#webchat .shop-links a")
    try:
        with context.expect_page() as opened:
            links.nth(LANDING_LINK).click()
        landing = opened.value
        landing.locator(f"{W} .launcher").wait_for()  # the widget read the first touch
        with context.expect_page() as opened:
            links.nth(RETURN_LINK).click()
        shop = opened.value
        landing.close()
        for key, value in LAST_TOUCH.items():
            assert f"{key}={value}" in shop.url, shop.url
        open_panel(shop)
        fill_prechat(shop, name=name, phone=phone)
        send(shop, WEBCHAT_EN)
        wait_text(shop, WEBCHAT_EN, mine=True)
        written = {WEBCHAT_EN: shop.url}
        shop.goto(f"{bridge.base}/sandbox/site/product?lang=ru")  # no tags: the last touch stays
        open_panel(shop)
        send(shop, WEBCHAT_RU)
        wait_text(shop, WEBCHAT_RU, mine=True)
        written[WEBCHAT_RU] = shop.url
        visitor = visitor_id(shop, widget_key(bridge.base))

        expected = dict(LAST_TOUCH)
        if FIRST_TOUCH_WRITTEN[bridge.crm]:
            expected |= {f"first_{k}": v for k, v in FIRST_TOUCH.items()}
        label = PAGE_LABEL[bridge.crm]
        # the consent box was ticked on the newsletter's page
        consent: dict[str, str | None] = {}
        if CONSENT_WRITTEN[bridge.crm]:
            consent = {"version": "1", "page": written[WEBCHAT_EN]}

        def in_crm() -> None:
            found = VISITORS[bridge.crm](bridge, page, visitor)
            assert _digits(phone) in found.phones, found.phones
            assert found.touches == expected, found.touches
            assert found.consent == consent, found.consent
            for text, url in written.items():
                first_line = text.split("\n")[0]
                holding = [e for e in found.entries if first_line in e]
                assert len(holding) == ENTRIES_PER_MESSAGE[bridge.crm], (text, found.entries)
                for entry in holding:  # the page it was written on, under each message
                    assert f"{label}: {url}" in entry, (entry, url)

        _eventually(in_crm)

        # The CRM panel follows the visitor; the rep answers there, the open widget shows
        # the answer within a second of the bridge accepting it (the sandbox's /_reply the
        # panel calls returns once the bridge took the CRM's webhook).
        expect(page.locator("#timeline-contact")).to_have_text(name, timeout=LOOP_MS)
        expect(page.locator("#timeline .entry").filter(has_text="Казань").first).to_be_visible(
            timeout=LOOP_MS)
        answer = f"{name}, да: доставим в Казань за три дня."
        with page.expect_response(lambda r: r.url.endswith("/_reply")) as replied:
            _rep_replies(page, answer)
        assert replied.value.ok, replied.value.text()
        accepted = time.monotonic()
        shop.locator(f"{W} .list .msg.op[data-seq] .text", has_text=answer).wait_for(
            timeout=REPLY_WITHIN_S * 1000)
        assert time.monotonic() - accepted <= REPLY_WITHIN_S
        expect(page.locator("#reply-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
        assert texts(shop) == [(True, WEBCHAT_EN), (True, WEBCHAT_RU), (False, answer)]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shop.wait_for_timeout(150)  # the last bubble laid out
        shop.screenshot(path=str(SCREENSHOTS / f"try-it-webchat-{bridge.crm}-{tab.width}.png"))
        shop.close()
    finally:
        context.remove_listener("page", watch)
    assert shop_errors == []


# -- the WhatsApp customer ---------------------------------------------------------------------


def _wa_writes(page: Page, phone: str, name: str, text: str) -> None:
    """Types as the WhatsApp customer and sends from the keyboard (Ctrl+Enter)."""
    page.fill("#wa-phone", phone)
    page.fill("#wa-name", name)
    page.fill("#wa-text", text)
    page.focus("#wa-text")
    page.keyboard.press("Control+Enter")


def _wa_sent(base: str, wa_id: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = requests.get(
        f"{base}/sandbox/whatsapp/_sent", params={"to": wa_id}, timeout=10).json()["sent"]
    return sent


def _whatsapp_loop(tab: _Tab, bridge: _Bridge) -> None:
    """A WhatsApp customer writes, the message reaches the CRM panel, the rep answers on the
    right, the answer comes back into the WhatsApp panel (with its ticks); at
    WA_TEMPLATE_WIDTH the next answer, a day later, goes as a template."""
    from sandbox.whatsapp import DEMO_DISPLAY_PHONE_NUMBER

    page = tab.page
    name, typed, wa_id = WA_CUSTOMERS[tab.width]
    panel = page.locator("#whatsapp")
    expect(panel.locator("h2")).to_have_text("Customer in WhatsApp / Клиент в WhatsApp")
    expect(page.locator("#wa-business")).to_have_text(
        re.compile(rf"^\+{DEMO_DISPLAY_PHONE_NUMBER}\b"), timeout=LOOP_MS)
    expect(page.locator("#wa-notice")).to_be_hidden()  # the demo number is connected
    expect(page.locator("#wa-phone")).to_have_value(WA_DEFAULT_PHONE)
    expect(page.locator("#wa-name")).to_have_value(WA_DEFAULT_NAME)
    # every control has a name a screen reader reads out
    for control in ("#wa-phone", "#wa-name", "#wa-text", "#wa-form button[type=submit]",
                    "#wa-new", "#wa-transcript"):
        assert page.locator(control).evaluate(
            "node => (node.labels && node.labels.length > 0) || !!node.getAttribute('aria-label')"
            " || !!node.textContent.trim()"), control

    question_line = "Is the shop open on Sunday?"
    answer = f"Hi {name}, yes: from 10 to 16."
    _wa_writes(page, typed, name, f"Hi, {name} here on WhatsApp\n{question_line}")
    expect(page.locator("#wa-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
    expect(page.locator("#wa-text")).to_have_value("")
    bubble = page.locator("#wa-transcript .bubble.customer").filter(has_text=question_line)
    expect(bubble.locator(".meta")).to_have_text(re.compile(
        rf"^{TIME} · (delivered / доставлено ✓|read / прочитано ✓✓)$"), timeout=LOOP_MS)
    assert _lines(bubble.locator(".text").inner_text()) == [
        f"Hi, {name} here on WhatsApp", question_line]

    # The CRM panel follows the new contact: the message is in its timeline.
    expect(page.locator("#timeline-contact")).to_have_text(name, timeout=LOOP_MS)
    entries = page.locator("#timeline .entry.incoming").filter(has_text=question_line)
    expect(entries.first).to_be_visible(timeout=LOOP_MS)
    _eventually(lambda: _shows_the_record(bridge, page, name))

    # The rep answers on the right; the answer comes back into the WhatsApp panel, and the
    # statuses the sandbox posts to the bridge turn into ticks (sent, delivered, read).
    _rep_replies(page, answer)
    expect(page.locator("#reply-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
    reply = page.locator("#wa-transcript .bubble.bot").filter(has_text=answer)
    expect(reply.locator(".meta")).to_have_text(
        re.compile(rf"^{TIME} · read / прочитано ✓✓$"), timeout=LOOP_MS)
    expect(reply.locator(".text")).to_have_text(answer)
    [sent] = _wa_sent(bridge.base, wa_id)
    assert sent["type"] == "text" and sent["body"]["text"]["body"] == answer
    # the customer's line is above the rep's answer
    texts = page.locator("#wa-transcript .bubble .text").all_inner_texts()
    assert [i for i, t in enumerate(texts) if question_line in t or t == answer] == [0, 1], texts

    if tab.width != WA_TEMPLATE_WIDTH:
        return
    # A day on (the sandbox's clock): Meta refuses a free-form message (131047), so the
    # bridge sends the mapping's window_template with the reply as a parameter.
    clock = f"{bridge.base}/sandbox/whatsapp/_clock"
    requests.post(clock, json={"advance": 25 * 3600}, timeout=10).raise_for_status()
    try:
        late = "Are you still there?"
        _rep_replies(page, late)
        expect(page.locator("#reply-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
        template = page.locator("#wa-transcript .bubble.bot.template")
        expect(template).to_have_count(1, timeout=LOOP_MS)
        sent = _wa_sent(bridge.base, wa_id)[-1]
        assert sent["type"] == "template", sent
        spec = sent["body"]["template"]
        params = [p["text"] for c in spec["components"] for p in c.get("parameters", [])]
        assert late in params, params
        expect(template.locator(".text")).to_have_text(
            f"template: {spec['name']} ({', '.join(params)})")
        expect(template.locator(".meta")).to_have_text(
            re.compile(rf"^{TIME} · (sent / отправлено ✓|delivered / доставлено ✓✓|"
                       r"read / прочитано ✓✓)$"), timeout=LOOP_MS)
    finally:
        requests.post(clock, json={"offset": 0}, timeout=10).raise_for_status()


def _layout_problems(page: Page) -> list[str]:
    problems = []
    for box in page.locator(TEXT_BOXES).all():
        bounds = box.bounding_box()
        if box.is_visible() and bounds and bounds["width"] < MIN_TEXT_BOX_PX:
            problems.append(f"#{box.get_attribute('id')} is {bounds['width']:.0f} px wide")
    found = page.evaluate(SPLIT_WORDS_JS)
    problems += [f"word split across lines: {word}" for word in found["split"]]
    if found["scrollWidth"] > found["innerWidth"]:
        problems.append(f"the page is {found['scrollWidth']} px wide in a "
                        f"{found['innerWidth']} px window")
    return problems


def _screenshot(tab: _Tab, crm: str, what: str = "") -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = f"try-it-{what}-{crm}-{tab.width}.png" if what else f"try-it-{crm}-{tab.width}.png"
    tab.page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


# -- HubSpot: a note body is untrusted HTML ----------------------------------------------------

UNTRUSTED_NOTE = (
    "<p>Called the customer</p>"
    "<p>Second <b>paragraph</b>, line one<br>line two</p>"
    "<p><img src=\"x\" onerror=\"window.__xss = 1\"><script>window.__xss = 2</script>"
    "<a href=\"javascript:window.__xss = 3\" onclick=\"window.__xss = 4\">a link</a></p>"
    "<style>main { display: none }</style>"
)


def _hubspot_note(base: str, name: str, html: str) -> None:
    """A note a HubSpot user writes on the contact (through the CRM API, with a token
    of a scripted app install), not one the bridge wrote."""
    hubspot = f"{base}/sandbox/hubspot"
    app = requests.get(f"{hubspot}/_config", timeout=10).json()["app"]
    [(portal_id, contact_id)] = [
        (p["portal_id"], c["id"])
        for p in requests.get(f"{hubspot}/_state", timeout=10).json()["accounts"]
        for c in p["contacts"] if c["properties"].get("firstname") == name]
    redirect = "http://localhost/callback"
    code = requests.post(f"{hubspot}/_install", json={
        "client_id": app["client_id"], "redirect_uri": redirect, "portal_id": portal_id},
        timeout=10).json()["code"]
    token = requests.post(f"{hubspot}/oauth/v1/token", data={
        "grant_type": "authorization_code", "client_id": app["client_id"],
        "client_secret": app["client_secret"], "redirect_uri": redirect, "code": code},
        timeout=10).json()["access_token"]
    created = requests.post(f"{hubspot}/crm/v3/objects/notes", timeout=10, headers={
        "Authorization": f"Bearer {token}"}, json={
        "properties": {"hs_note_body": html,
                       "hs_timestamp": datetime.now(UTC).isoformat(timespec="milliseconds")},
        "associations": [{"to": {"id": contact_id}, "types": [
            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}]})
    assert created.status_code == 201, created.text


def _note_is_rendered_safely(tab: _Tab, base: str) -> None:
    page = tab.page
    _hubspot_note(base, CUSTOMERS[tab.width], UNTRUSTED_NOTE)
    note = page.locator("#timeline .entry.note").filter(has_text="Called the customer")
    expect(note).to_be_visible(timeout=LOOP_MS)
    lines = _lines(note.locator(".text").inner_text())
    assert lines[:3] == ["Called the customer", "Second paragraph, line one", "line two"]
    expect(note.locator("b")).to_have_text("paragraph")  # simple formatting is kept
    assert note.locator("img, script, style, a, [onerror], [onclick], [href]").count() == 0
    assert page.evaluate("window.__xss") is None
    expect(page.locator("main")).to_be_visible()


# -- offline and back --------------------------------------------------------------------------


def _offline_and_back(tabs: list[_Tab], bridge: _Bridge) -> None:
    bridge.interrupt()
    assert wait_until(bridge.refuses_connections, timeout=30, interval=0.1)
    gone = time.monotonic()
    for tab in tabs:
        left = max(0.1, gone + OFFLINE_WITHIN_S - time.monotonic())
        expect(tab.page.locator("#offline-banner")).to_be_visible(timeout=left * 1000)
        expect(tab.page.locator("#offline-banner")).to_contain_text("The bridge is not responding")
        expect(tab.page.locator("#offline-banner")).to_contain_text("Мост не отвечает")

    # a send while the bridge is down ends with a message, not "Sending…" forever
    page = next(tab.page for tab in tabs if tab.width == 1280)
    _customer_writes(page, CUSTOMERS[1280], "Are you there?")
    expect(page.locator("#customer-status")).to_contain_text(
        "Not sent: the bridge is not responding", timeout=OFFLINE_WITHIN_S * 1000)
    _rep_replies(page, "Still here")
    expect(page.locator("#reply-status")).to_contain_text(
        "Not sent: the bridge is not responding", timeout=OFFLINE_WITHIN_S * 1000)
    name, typed, _ = WA_CUSTOMERS[1280]
    _wa_writes(page, typed, name, "Hello?")
    expect(page.locator("#wa-status")).to_contain_text(
        "Not sent: the bridge is not responding", timeout=OFFLINE_WITHIN_S * 1000)

    # Playwright hands events over when the test calls it, so the polls that failed are
    # counted between two calls: from here (the polls in flight when the bridge went are
    # counted by now) to the banner clearing.
    since = time.monotonic()
    failed_before = {tab.width: len(tab.failed_polls) for tab in tabs}
    bridge.wait_stopped()
    time.sleep(max(0.0, since + OFFLINE_OBSERVED_S - time.monotonic()))
    bridge.start()
    back = time.monotonic()
    for tab in tabs:
        left = max(0.1, back + ONLINE_AGAIN_WITHIN_S - time.monotonic())
        expect(tab.page.locator("#offline-banner")).to_be_hidden(timeout=left * 1000)
    # While the bridge is away the page sends one probe after 1, 2, 4 s, then every 5 s
    # (polling at full rate would be 3 requests every 1.5 s; probing every second, one).
    window = time.monotonic() - since
    for tab in tabs:
        probes = len(tab.failed_polls) - failed_before[tab.width]
        assert 0 < probes <= 2 + window / 3, (tab.width, probes, window)


# -- the test ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bridge", CRMS, indirect=True)
def test_try_it_page_in_a_browser(browser: Browser, bridge: _Bridge) -> None:
    tabs: list[_Tab] = []
    try:
        for width in WIDTHS_OF[bridge.crm]:
            tab = _open(browser, width, f"{bridge.base}/sandbox/")
            tabs.append(tab)
            _whole_loop(tab, bridge)
            _screenshot(tab, bridge.crm)
            assert _layout_problems(tab.page) == [], width
            if bridge.crm == "hubspot" and width == WIDTHS[-1]:
                _note_is_rendered_safely(tab, bridge.base)
            _whatsapp_loop(tab, bridge)
            tab.page.locator("#whatsapp").scroll_into_view_if_needed()
            _screenshot(tab, bridge.crm, "whatsapp")
            assert _layout_problems(tab.page) == [], ("whatsapp", width)
            if width == MAX_WIDTH:
                _max_loop(tab, bridge)
                tab.page.locator("#max").scroll_into_view_if_needed()
                _screenshot(tab, bridge.crm, "max")
            assert _layout_problems(tab.page) == [], ("max", width)
            if width == WEBCHAT_WIDTH:
                _webchat_loop(tab, bridge)
        assert {tab.width: tab.errors for tab in tabs} == {
            width: [] for width in WIDTHS_OF[bridge.crm]
        }
        _offline_and_back(tabs, bridge)
    finally:
        for tab in tabs:
            tab.page.context.close()


# -- the WhatsApp panel's script and markup ----------------------------------------------------

WHATSAPP_JS = ROOT / "sandbox" / "web" / "static" / "whatsapp.js"


@pytest.mark.parametrize("crm", CRMS)
def test_whatsapp_panel_calls_only_endpoints_the_sandbox_has(crm: str) -> None:
    """Every page has the panel, its script loads before demo.js (whose timer runs its
    poll), calls only routes the WhatsApp sandbox has, and never renders text as HTML."""
    from sandbox.web import create_app as create_web_app
    from sandbox.whatsapp import create_app as create_whatsapp_app

    html = create_web_app({"crm": crm}).test_client().get("/").get_data(as_text=True)
    for label in ("Customer in WhatsApp", "Клиент в WhatsApp", "Phone number",
                  "Номер телефона", 'data-whatsapp-base="/whatsapp"'):
        assert label in html, label
    assert html.index("whatsapp.js") < html.index("demo.js")
    js = WHATSAPP_JS.read_text("utf-8")
    ids = set(re.findall(r'\bid="([\w-]+)"', html))
    used = set(re.findall(r'getElementById\("([\w-]+)"\)', js))
    assert used and used <= ids, used - ids
    declared = re.findall(r'(\w+):\s*\["(/[^"]*)",\s*"(GET|POST)"\]', js)
    names = {name for name, _, _ in declared}
    assert names == {"waState", "waCustomer", "waSent", "waDeliveries"}
    assert set(re.findall(r'\bcall\("(\w+)"', js)) == names
    assert js.count("fetch(") == 1
    adapter = create_whatsapp_app().url_map.bind("localhost")
    for _, path, method in declared:
        adapter.match(path, method=method)  # raises when the route is missing
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                   "new Function", "DOMParser"):
        assert unsafe not in js, unsafe
    assert "window.DEMO_PANELS" in js


# -- the MAX panel's script and markup ---------------------------------------------------------

MAX_JS = ROOT / "sandbox" / "web" / "static" / "max.js"


@pytest.mark.parametrize("crm", CRMS)
def test_max_panel_calls_only_endpoints_the_sandbox_has(crm: str) -> None:
    """Every page has the MAX panel, its script loads before demo.js (whose timer runs its
    poll), calls only routes the MAX sandbox has, and never renders text as HTML."""
    from sandbox.max import create_app as create_max_app
    from sandbox.web import create_app as create_web_app

    html = create_web_app({"crm": crm}).test_client().get("/").get_data(as_text=True)
    for label in ("Customer in MAX", "Клиент в MAX", "Share phone", "Поделиться номером",
                  'data-max-base="/max"'):
        assert label in html, label
    assert html.index("max.js") < html.index("demo.js")
    js = MAX_JS.read_text("utf-8")
    ids = set(re.findall(r'\bid="([\w-]+)"', html))
    used = set(re.findall(r'getElementById\("([\w-]+)"\)', js))
    assert used and used <= ids, used - ids
    declared = re.findall(r'(\w+):\s*\["(/[^"]*)",\s*"(GET|POST)"\]', js)
    names = {name for name, _, _ in declared}
    assert names == {"maxState", "maxCustomer", "maxContact", "maxSent", "maxDeliveries"}
    # the reads through call(), the two writes through post() (which calls call(name))
    assert set(re.findall(r'\b(?:call|post)\("(\w+)"', js)) == names
    assert js.count("fetch(") == 1
    adapter = create_max_app().url_map.bind("localhost")
    for _, path, method in declared:
        adapter.match(path, method=method)  # raises when the route is missing
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                   "new Function", "DOMParser"):
        assert unsafe not in js, unsafe
    assert "window.DEMO_PANELS" in js


# -- the Viber panel's script and markup -------------------------------------------------------

VIBER_JS = ROOT / "sandbox" / "web" / "static" / "viber.js"


@pytest.mark.parametrize("crm", CRMS)
def test_viber_panel_calls_only_endpoints_the_sandbox_has(crm: str) -> None:
    """Every page has the Viber panel, its script loads before demo.js (whose timer runs its
    poll), calls only routes the Viber sandbox has, and never renders text as HTML."""
    from sandbox.viber import create_app as create_viber_app
    from sandbox.web import create_app as create_web_app

    html = create_web_app({"crm": crm}).test_client().get("/").get_data(as_text=True)
    for label in ("Customer in Viber", "Клиент в Viber", "Open chat", "Открыть чат",
                  'data-viber-base="/viber"'):
        assert label in html, label
    assert html.index("viber.js") < html.index("demo.js")
    js = VIBER_JS.read_text("utf-8")
    ids = set(re.findall(r'\bid="([\w-]+)"', html))
    used = set(re.findall(r'getElementById\("([\w-]+)"\)', js))
    assert used and used <= ids, used - ids
    declared = re.findall(r'(\w+):\s*\["(/[^"]*)",\s*"(GET|POST)"\]', js)
    names = {name for name, _, _ in declared}
    assert names == {"vbState", "vbCustomer", "vbOpen", "vbSent", "vbDeliveries"}
    # the reads through call(), the two writes through post() (which calls call(name))
    assert set(re.findall(r'\b(?:call|post)\("(\w+)"', js)) == names
    assert js.count("fetch(") == 1
    adapter = create_viber_app().url_map.bind("localhost")
    for _, path, method in declared:
        adapter.match(path, method=method)  # raises when the route is missing
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                   "new Function", "DOMParser"):
        assert unsafe not in js, unsafe
    assert "window.DEMO_PANELS" in js


# -- the e-mail client, against the sandbox mail system ----------------------------------------
#
# The sandbox alone (``sandbox.server.build()``, what ``python -m sandbox`` serves), its demo
# mailbox routed to a stand-in for the bridge's raw-MIME webhook that records what it gets;
# the bridge's answers are sent to the sandbox's SMTP server with the e-mail adapter's own
# SmtpSender and build_reply. The customer writes in the page, reads the answers in its
# inbox and answers one of them (threaded by In-Reply-To / References).

EMAIL_WIDTHS = (390, 1280)
SUPPORT = "support@demo.example"


def _mail_bridge() -> tuple[Any, list[bytes]]:
    """The stand-in webhook: every raw mail posted, in order."""
    from flask import Flask
    from flask import request as flask_request

    posted: list[bytes] = []
    hook = Flask("bridge-email-webhook")

    @hook.post("/webhooks/email/<key>")
    def _webhook(key: str) -> dict[str, Any]:
        posted.append(flask_request.get_data())
        return {"ok": True}

    return hook, posted


def _posted_from(posted: list[bytes], address: str) -> list[Any]:
    import email
    from email.policy import default as default_policy

    mails = [email.message_from_bytes(raw, policy=default_policy) for raw in posted]
    return [m for m in mails if m["From"].addresses[0].addr_spec == address]


def _bridge_answers(port: int, customer: str, question: Any) -> None:
    """What the bridge sends: the automatic acknowledgement, then a rep's reply whose
    HTML part is hostile (an image with a handler, a script): the page must never render it."""
    from channel_adapters.email.smtp import SmtpSender, SmtpSettings, build_reply

    sender = SmtpSender(SmtpSettings(host="127.0.0.1", port=port, security="plain",
                                     from_addr=SUPPORT, timeout=10.0))
    common = {"from_addr": SUPPORT, "from_name": "Demo Support", "to_addr": customer,
              "subject": "Re: Delivery to Berlin [#T-1001]", "in_reply_to": question["Message-ID"],
              "references": [question["Message-ID"]],
              "reply_to": "support+6b1e4c2a-0000-4000-8000-00000000000a@demo.example"}
    local = customer.split("@")[0].replace(".", "-")
    sender.send(build_reply(
        **common, text="We got your mail: ticket T-1001. A rep answers soon.",
        message_id=f"<bridge.{local}-ack@demo.example>",
        extra_headers={"Auto-Submitted": "auto-replied"}))
    rep = build_reply(**common, text="Hi, yes: Berlin takes two days. <b>not bold</b>",
                      message_id=f"<bridge.{local}-rep@demo.example>")
    html = rep.get_body(("html",))
    assert html is not None
    html.set_content('<p>rich</p><img src="x" onerror="window.__xss = 1">'
                     "<script>window.__xss = 2</script>", subtype="html")
    sender.send(rep)


def _email_loop(tab: _Tab, posted: list[bytes], port: int) -> None:
    page = tab.page
    name = CUSTOMERS[tab.width]
    customer = f"{name.lower()}.{tab.width}@example.com"
    panel = page.locator("#email")
    expect(panel.locator("h2")).to_contain_text("E-mail client")
    expect(panel.locator("h2")).to_contain_text("Почтовый клиент")
    expect(page.locator("#email-support")).to_have_text(SUPPORT)
    expect(page.locator("#email-notice")).to_be_hidden(timeout=LOOP_MS)  # the route is set

    # the customer writes: the webhook gets an RFC 5322 mail
    page.fill("#email-from", customer)
    page.fill("#email-name", name)
    page.fill("#email-subject", "Delivery to Berlin")
    page.fill("#email-text", f"Hello, this is {name}!\nDo you deliver to Berlin?")
    page.click("#email-form button[type=submit]")
    expect(page.locator("#email-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
    [question] = _posted_from(posted, customer)
    assert question["To"] == SUPPORT and question["Subject"] == "Delivery to Berlin"
    assert question["From"].addresses[0].display_name == name
    assert question.get_content().splitlines() == [f"Hello, this is {name}!",
                                                   "Do you deliver to Berlin?"]
    written = page.locator("#email-inbox .mail.written")
    expect(written).to_have_count(1, timeout=LOOP_MS)
    expect(written.locator(".mail-note")).to_have_text("delivered to the bridge / доставлено ✓")
    expect(page.locator("#email-mailbox")).to_have_text(customer)

    # the bridge answers: the acknowledgement and the rep's reply arrive, text only
    _bridge_answers(port, customer, question)
    received = page.locator("#email-inbox .mail.received")
    expect(received).to_have_count(2, timeout=LOOP_MS)
    ack, rep = received.nth(0), received.nth(1)
    expect(ack.locator(".mail-subject")).to_have_text("Re: Delivery to Berlin [#T-1001]")
    expect(ack.locator(".mail-note")).to_have_text("automatic reply / автоматический ответ")
    expect(ack.locator(".who")).to_have_text(f"Demo Support <{SUPPORT}>")
    expect(rep.locator(".text")).to_have_text("Hi, yes: Berlin takes two days. <b>not bold</b>")
    assert rep.locator(".mail-note").count() == 0  # a person's reply is not marked automatic
    assert page.locator("#email-inbox img, #email-inbox script, #email-inbox b").count() == 0
    assert page.evaluate("window.__xss") is None
    ack.locator("summary").click()
    headers = ack.locator(".mail-headers dl")
    expect(headers).to_contain_text(f"In-Reply-To{question['Message-ID']}")
    expect(headers).to_contain_text("Auto-Submittedauto-replied")

    # the customer answers the rep: threaded to the rep's mail
    rep.locator("button.reply").click()
    expect(page.locator("#email-replying")).to_be_visible()
    expect(page.locator("#email-subject")).to_have_value("Re: Delivery to Berlin [#T-1001]")
    page.fill("#email-text", "Great, thank you!")
    page.click("#email-form button[type=submit]")
    expect(page.locator("#email-status")).to_contain_text("Sent ✓", timeout=SEND_MS)
    expect(page.locator("#email-replying")).to_be_hidden()
    expect(page.locator("#email-subject")).to_have_value("")
    answer = _posted_from(posted, customer)[-1]
    local = customer.split("@")[0].replace(".", "-")
    assert answer["In-Reply-To"] == f"<bridge.{local}-rep@demo.example>"
    assert answer["References"].split() == [question["Message-ID"],
                                            f"<bridge.{local}-rep@demo.example>"]
    assert answer["Subject"] == "Re: Delivery to Berlin [#T-1001]"
    expect(page.locator("#email-inbox .mail")).to_have_count(4, timeout=LOOP_MS)
    # the headers opened above stay open when the list is drawn again (their long ids wrap
    # at their punctuation: the layout check below reads them)
    expect(received.nth(0).locator("details.mail-headers")).to_have_attribute("open", "")


def test_email_client_in_a_browser(browser: Browser) -> None:
    from sandbox.server import build
    from tests.support.servers import serve_wsgi

    hook, posted = _mail_bridge()
    server = build()
    tabs: list[_Tab] = []
    try:
        with serve_wsgi(server) as sandbox, serve_wsgi(hook) as bridge:
            mail = f"{sandbox.url}/sandbox/email"
            requests.post(f"{mail}/_mailboxes", timeout=10, json={
                "address": SUPPORT, "webhook_url": f"{bridge.url}/webhooks/email/k3y",
                "webhook_secret": "demo-secret"}).raise_for_status()
            port = requests.get(f"{mail}/_state", timeout=10).json()["smtp"]["port"]
            for width in EMAIL_WIDTHS:
                tab = _open(browser, width, f"{sandbox.url}/sandbox/")
                tabs.append(tab)
                _email_loop(tab, posted, port)
                tab.page.locator("#email").scroll_into_view_if_needed()
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                tab.page.screenshot(path=str(SCREENSHOTS / f"try-it-email-{width}.png"),
                                    full_page=True)
                assert _layout_problems(tab.page) == [], width
            assert {tab.width: tab.errors for tab in tabs} == {w: [] for w in EMAIL_WIDTHS}
    finally:
        for tab in tabs:
            tab.page.context.close()
        server.mounts["/sandbox/email"].extensions["email_sandbox"].smtp.stop()
