"""The web chat widget in a real browser, on the demo shop ``bridge run`` serves.

One ``bridge run`` (the HubSpot demo, what ``make run`` starts) for the whole
module: it connects the demo shop's widget (``sandbox.demo.connect_webchat``)
whose sites are the sandbox's own origin and ``localhost`` on the same port.
``bridge run`` serves one CRM per start, so the browser runs against HubSpot
here. The widget's path through each sandbox CRM (HubSpot, amoCRM, Bitrix24:
the first and the last touch's UTM tags on the lead / deal, the phone and the
consent on the contact, each message with the page it was written on, the
rep's reply in the open panel within a second of the bridge accepting it) is
a step of ``test_try_it_page.py``, inside its one ``bridge run`` per CRM; this
module keeps what is the widget's own.

* An English visitor on the bridge's own origin (the widget's requests are
  same-origin: a GET carries no ``Origin``): the launcher, the pre-chat form
  (name and e-mail) with the consent box, Enter sends and Shift+Enter breaks
  the line; the contact with the e-mail and its deal with the ad's click id
  reach HubSpot; the rep's reply shows in the open panel (its link safe) and
  reaches "read" in HubSpot; a picture goes with a message (a link to the
  bridge's copy), a file of a type the bridge refuses shows the refusal;
  Escape closes the panel and gives the focus back to the launcher; a reply
  that arrives while the panel is closed lights the unread badge.
* A Russian visitor on ``localhost`` (cross-origin: CORS): reload keeps the
  history, a second tab shows the same conversation, the network dropped for
  10 s while the rep replies: after reconnecting the reply shows exactly once
  in both tabs; the panel is full-screen at 390 px.
* XSS payloads in the text, the name and the page title, and in the rep's
  reply, render inert: the widget shows them as text, the try-it page's CRM
  panel too, nothing injected runs or appears. That visitor's network is
  flaky on purpose: the stream is cut (a proxy that breaks it: the widget
  falls back to the long poll) and the first two sends are answered 503
  (retried with the same client id: one message).
* No console error, no page error.

Screenshots (closed, open, pre-chat form, conversation, mobile 390 px) go to
``docs/screenshots/widget-*.png`` (``$BRIDGE_WIDGET_SCREENSHOTS_DIR`` elsewhere);
the README's "Web chat" section shows them.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    sync_playwright,
)

from bench.stack import ROOT
from tests.support.crm_views import HubSpotView
from tests.support.demo import DemoRun
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
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDGET_JS = ROOT / "channel_adapters" / "webchat" / "static" / "widget.js"
SCREENSHOTS = Path(os.environ.get("BRIDGE_WIDGET_SCREENSHOTS_DIR") or ROOT / "docs" / "screenshots")
OFFLINE_S = 10.0
CRM_S = 30.0
#: a 1x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
#: set by any payload that runs
XSS_FLAG = "__xss"
XSS_TEXT = (
    "<img src=x onerror=\"window.__xss='text'\"><script>window.__xss='script'</script>"
    ' see https://example.com/"><svg onload="window.__xss=\'link\'">'
)
XSS_NAME = "<svg onload=\"window.__xss='name'\">Eve"
XSS_TITLE = "</title><img src=x onerror=\"window.__xss='title'\">"
XSS_REPLY = (
    "<b>bold?</b><img src=x onerror=\"window.__xss='reply'\"> "
    "javascript:window.__xss=1 https://safe.example/path?a=1&b=2 <i>italic?</i>"
)


# -- the bridge, the browser ----------------------------------------------------------------


@dataclass
class _Demo:
    """``bridge run`` and what the tests read of it (the shape
    ``tests.support.crm_views`` takes for a stack)."""

    run: DemoRun
    crm: str = "hubspot"
    seeded: Any = None

    @property
    def base(self) -> str:
        return self.run.base

    @property
    def local(self) -> str:
        """The same server as another site: ``localhost`` instead of 127.0.0.1."""
        return self.base.replace("127.0.0.1", "localhost")

    @property
    def sandbox_url(self) -> str:
        return f"{self.base}/sandbox"

    def hubspot_state(self) -> dict[str, Any]:
        r = requests.get(f"{self.sandbox_url}/hubspot/_state", timeout=30)
        r.raise_for_status()
        data = r.json()
        return data["accounts"][0] if "accounts" in data else data  # type: ignore[no-any-return]

    def reply(self, contact_id: str, text: str) -> dict[str, Any]:
        r = requests.post(
            f"{self.sandbox_url}/hubspot/_reply",
            json={"contact_id": contact_id, "text": text},
            timeout=30,
        )
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def widget_src(self) -> str:
        r = requests.get(f"{self.sandbox_url}/site/_widget", timeout=10)
        r.raise_for_status()
        return str(r.json()["src"])

    def _rows(self, direction: str) -> list[tuple[str, str, str]]:
        """(text, status, payload) of the bridge's messages one way, oldest first,
        read from the demo's database."""
        from sqlalchemy import create_engine, text

        engine = create_engine(f"sqlite:///{self.run.var_dir / 'demo.db'}")
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT text, status, payload FROM messages"
                        " WHERE direction = :d ORDER BY id"
                    ),
                    {"d": direction},
                )
                return [(str(t), str(s), str(p or "{}")) for t, s, p in rows]
        finally:
            engine.dispose()

    def replies(self) -> list[tuple[str, str]]:
        """(text, status) of the bridge's stored replies, oldest first."""
        return [(t, s) for t, s, _ in self._rows("out")]

    def profile_of(self, text: str) -> dict[str, Any]:
        """The sender profile the bridge keeps with the inbound message ``text``."""
        payload = next(p for t, _, p in self._rows("in") if t == text)
        return json.loads(payload)["profile"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Demo]:
    run = DemoRun(tmp_path_factory.mktemp("widget") / "var").start()
    try:
        run.wait_banner(timeout=180)
        assert "/sandbox/site/" in run.text  # the banner shows the shop
        yield _Demo(run)
        run.stop()
    finally:
        run.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class _Errors:
    seen: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.seen.append(f"console: {message.text} ({message.location.get('url')})")

        page.on("console", console)
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))
        return page


def _context(browser: Browser, width: int = 1280, height: int = 860, **kw: Any) -> BrowserContext:
    return browser.new_context(viewport={"width": width, "height": height}, **kw)


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(150)  # the last bubble laid out
    page.screenshot(path=str(SCREENSHOTS / f"widget-{name}.png"))


def _eventually(check: Callable[[], Any], timeout: float = CRM_S) -> Any:
    """Retry an assertion until it holds (the bridge writes the CRM asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, StopIteration, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


# -- the widget in a page ---------------------------------------------------------------------


def _assert_in(item: Any, items: list[Any]) -> None:
    assert item in items, f"{item!r} not in {items!r}"


def _assert_eq(got: Any, want: Any) -> None:
    assert got == want, f"{got!r} != {want!r}"


def _shows_once(page: Page, text: str) -> None:
    assert [t for _, t in texts(page)].count(text) == 1, texts(page)


def _contrast(page: Page, selector: str) -> float:
    """WCAG contrast of an element's text colour on its (opaque) background."""
    return page.locator(f"{W} {selector}").first.evaluate("""(el) => {
      const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
      const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255;
        return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
        .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
      let bg = el, colour = 'rgba(0, 0, 0, 0)';
      while (bg && bg.nodeType === 1) {
        colour = getComputedStyle(bg).backgroundColor;
        if (!/rgba\\(.*,\\s*0\\)$/.test(colour)) break;
        bg = bg.parentNode instanceof ShadowRoot ? null : bg.parentNode;
      }
      if (/rgba\\(.*,\\s*0\\)$/.test(colour)) colour = 'rgb(255, 255, 255)';
      const a = lum(rgb(getComputedStyle(el).color)), b = lum(rgb(colour));
      return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    }""")


# -- CRM ---------------------------------------------------------------------------------------


def _hubspot(demo: _Demo) -> HubSpotView:
    return HubSpotView(demo, "webchat", users=0, per_user=0)


def _deal_of(state: dict[str, Any], contact_id: str) -> dict[str, Any]:
    deal_ids = {
        a["toId"]
        for a in state["associations"]
        if a["fromObjectType"] == "contacts"
        and a["fromId"] == contact_id
        and a["toObjectType"] == "deals"
    }
    return next(d for d in state["deals"] if d["id"] in deal_ids)


# -- the tests -----------------------------------------------------------------------------------


def test_widget_script_is_small_and_builds_no_html_from_data() -> None:
    source = WIDGET_JS.read_text(encoding="utf-8")
    assert len(gzip.compress(source.encode(), 9)) < 50 * 1024
    # everything rendered with createElement / textContent
    for banned in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("on',
        "javascript:",
    ):
        assert banned not in source, banned
    assert not re.search(r"\.on[a-z]+\s*=", source), "an inline event handler"
    # ES2019: no optional chaining, no nullish coalescing, no class fields
    code = re.sub(
        r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\])*\"|/(?:\\.|[^/\\\n])+/[gimsuy]*",
        "",
        source,
        flags=re.S,
    )
    assert "?." not in re.sub(r"\?\s*\.\d", "", code) and "??" not in code


def test_english_visitor_and_the_rep(browser: Browser, demo: _Demo) -> None:
    errors = _Errors()
    key = widget_key(demo.base)
    # the script the shop embeds: the bridge serves it as JavaScript, cacheable
    script = requests.get(demo.widget_src(), timeout=10)
    assert script.headers["Content-Type"].startswith("application/javascript")
    assert script.text == WIDGET_JS.read_text(encoding="utf-8")

    context = _context(browser, locale="en-US")
    page = errors.watch(context.new_page())
    # same origin as the bridge; from a Google ad
    page.goto(f"{demo.base}/sandbox/site/?utm_source=google&utm_medium=cpc&gclid=G-1")
    launcher = page.locator(f"{W} .launcher")
    launcher.wait_for()
    assert launcher.get_attribute("aria-label") == "Open chat"
    assert launcher.get_attribute("aria-expanded") == "false"
    _shot(page, "closed")

    open_panel(page)
    dialog = page.locator(f"{W} [role=dialog]")
    assert dialog.get_attribute("aria-label") == "Tea & Coffee"
    log = page.locator(f"{W} [role=log]")
    assert log.get_attribute("aria-live") == "polite"
    assert "Ask us about tea" in log.inner_text()  # the greeting from /config
    # focus moved into the panel: the form's first field
    assert page.evaluate(f"document.querySelector('{W}').shadowRoot.activeElement.name") == "name"
    # consent: nothing leaves before the box is ticked
    page.locator(f"{W} .intro input[name=email]").fill("john@example.com")
    page.locator(f"{W} .intro button[type=submit]").click()
    assert "tick the box" in page.locator(f"{W} .intro [role=alert]").inner_text()
    assert page.locator(f"{W} .composer").is_hidden()
    _shot(page, "prechat")
    fill_prechat(page, name="John Smith", email="john@example.com")
    _shot(page, "open")

    # contrast of the panel's texts (white on the shop's green, dark on grey and white)
    for selector in (".head .title", ".greeting .text", ".intro p, .composer textarea"):
        assert _contrast(page, selector) >= 4.5, selector

    text = "Hello! Do you deliver to Leeds?\nTomorrow would be great."
    send(page, text)
    wait_text(page, text, mine=True)
    visitor = visitor_id(page, key)

    hubspot = _hubspot(demo)

    def in_crm() -> dict[str, Any]:
        state = demo.hubspot_state()
        contact = hubspot._contact(visitor, state)
        assert contact["properties"].get("email") == "john@example.com"
        deal = _deal_of(state, contact["id"])["properties"]
        # the ad's click id with the tags (the first and last touch, the page under each
        # message: test_try_it_page.py, in every CRM)
        assert (deal.get("bridge_utm_source"), deal.get("bridge_gclid")) == ("google", "G-1")
        incoming = [m for m in hubspot.messages(visitor, state) if m["direction"] == "in"]
        assert incoming and incoming[0]["text"].startswith(text)
        return {"contact": contact, "deal": deal}

    _eventually(in_crm)

    # the rep answers in HubSpot's inbox: the open panel shows it, its link safe (within a
    # second of the bridge accepting it: test_try_it_page.py, in every CRM)
    answer = "Yes, we deliver to Leeds tomorrow. Details: https://example.com/delivery."
    hubspot.reply(visitor, answer)
    wait_text(page, answer, mine=False)
    link = page.locator(f"{W} .msg.op a[href='https://example.com/delivery']")
    assert link.get_attribute("rel") == "noopener noreferrer"
    _shot(page, "conversation")
    # seen in the open panel: HubSpot shows the reply read
    _eventually(
        lambda: _assert_in(
            "read", [m["status"] for m in hubspot.messages(visitor) if m["direction"] == "out"]
        )
    )

    # files: a picture goes with a message; a type the bridge does not take is refused,
    # and the panel says so
    chooser = page.locator(f"{W} .composer input[type=file]")
    chooser.set_input_files({"name": "tea.png", "mimeType": "image/png", "buffer": PNG})
    page.locator(f"{W} .chip").wait_for()
    send(page, "The tea on this photo, please")
    wait_text(page, "The tea on this photo, please", mine=True)
    attached = page.locator(f"{W} .msg.me[data-seq] .files-in a")
    assert "tea.png" in attached.inner_text()
    assert "/files/" in (attached.get_attribute("href") or "")
    chooser.set_input_files(
        {"name": "setup.exe", "mimeType": "application/pdf", "buffer": b"MZ\x90\x00" + bytes(64)}
    )
    alert = page.locator(f"{W} .panel > .error[role=alert]")
    alert.wait_for(state="visible")
    assert alert.inner_text() == "This type of file cannot be sent."
    assert page.locator(f"{W} .chip").count() == 0

    # Escape closes the panel and gives the focus back to the launcher
    page.keyboard.press("Escape")
    assert dialog.is_hidden()
    assert (
        page.evaluate(f"document.querySelector('{W}').shadowRoot.activeElement.className")
        == "launcher"
    )
    # a reply while the panel is closed: the unread badge
    hubspot.reply(visitor, "Anything else?")
    badge = page.locator(f"{W} .launcher .badge")
    badge.wait_for(state="visible", timeout=CRM_S * 1000)
    assert badge.inner_text() == "1"
    assert launcher.get_attribute("aria-label") == "Open chat (1 unread message)"
    open_panel(page)
    assert badge.is_hidden()
    context.close()
    # the refused upload's 415 is the one error the browser logs
    assert [e for e in errors.seen if "415" not in e or "/uploads" not in e] == []


def test_russian_visitor_cross_origin_tabs_and_offline(browser: Browser, demo: _Demo) -> None:
    errors = _Errors()
    key = widget_key(demo.base)
    context = _context(browser, locale="ru-RU")
    page = errors.watch(context.new_page())
    shop = f"{demo.local}/sandbox/site"  # another origin than the bridge's: CORS
    page.goto(f"{shop}/product?lang=ru")
    page.locator(f"{W} .launcher").wait_for()
    assert page.locator(f"{W} .launcher").get_attribute("aria-label") == "Открыть чат"
    open_panel(page)
    fill_prechat(page, name="Мария", phone="+7 999 123-45-67")
    text = "Здравствуйте! Сенча есть в наличии?"
    send(page, text)
    wait_text(page, text, mine=True)
    visitor = visitor_id(page, key)
    hubspot = _hubspot(demo)

    # the rep answers once the inbox has the visitor's thread (the phone, the consent, the
    # touches and the page in the CRM: test_try_it_page.py, in every CRM)
    _eventually(
        lambda: _assert_in(
            text,
            [m["text"].split("\n")[0] for m in hubspot.messages(visitor) if m["direction"] == "in"],
        )
    )
    answer = "Да, Сенча есть. Доставим завтра."
    hubspot.reply(visitor, answer)
    wait_text(page, answer, mine=False)
    before = texts(page)
    assert before == [(True, text), (False, answer)]

    # reload keeps the history; a second tab (another page of the shop) shows it too
    page.reload()
    page.locator(f"{W} .launcher").wait_for()
    _eventually(lambda: _assert_in((False, answer), texts(page)), 10)
    assert texts(page) == before
    second = errors.watch(context.new_page())
    second.goto(f"{shop}/?lang=ru")
    open_panel(second)
    _eventually(lambda: _assert_in((False, answer), texts(second)), 10)
    assert texts(second) == before
    open_panel(page)

    # the network dropped for 10 s while the rep replies: once in each tab after it is back
    context.set_offline(True)
    dropped = time.monotonic()
    for tab in (page, second):  # each tab noticed: its live connection is gone
        tab.locator(f"{W} .notice").wait_for(state="visible", timeout=5000)
    late = "Курьер приедет с 10 до 14."
    hubspot.reply(visitor, late)
    _eventually(lambda: _assert_in(late, [t for t, _ in demo.replies()]))
    time.sleep(max(0.0, OFFLINE_S - (time.monotonic() - dropped)))
    for tab in (page, second):  # stored while the tabs were cut off: not shown yet
        assert late not in [t for _, t in texts(tab)]
    context.set_offline(False)
    for tab in (page, second):
        wait_text(tab, late, mine=False)
    time.sleep(2.0)  # a duplicate would come with the next reconnect
    for tab in (page, second):
        _shows_once(tab, late)
        assert texts(tab) == [*before, (False, late)]
    # no duplicate or lost row behind it either
    assert [t for t, _ in demo.replies()].count(late) == 1

    # a phone-sized window: the panel takes the whole screen
    page.set_viewport_size({"width": 390, "height": 844})
    box = page.locator(f"{W} [role=dialog]").bounding_box()
    assert box is not None and (box["width"], box["height"]) == (390, 844)
    _shot(page, "mobile")
    context.close()
    # the offline spell's failed requests are console errors of the browser's own
    assert [e for e in errors.seen if "ERR_INTERNET_DISCONNECTED" not in e] == []


def test_xss_payloads_render_inert_over_a_flaky_network(browser: Browser, demo: _Demo) -> None:
    errors = _Errors()
    key = widget_key(demo.base)
    context = _context(browser, locale="en-US")
    # a proxy that breaks the stream: the widget falls back to the long poll
    context.route(re.compile(r".*/widget/[^/]+/stream\?.*"), lambda route: route.abort())
    polls: list[str] = []
    context.on("request", lambda r: polls.append(r.url) if "wait=25" in r.url else None)
    # the first two sends answered 503: retried with the same id, one message
    posted: list[str] = []

    def flaky(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        posted.append(str((route.request.post_data_json or {}).get("id")))
        if len(posted) <= 2:
            route.fulfill(status=503, json={"error": "unavailable", "message": "try again"})
        else:
            route.continue_()

    context.route(re.compile(r".*/widget/[^/]+/messages$"), flaky)
    page = errors.watch(context.new_page())
    page.goto(f"{demo.base}/sandbox/site/?utm_source=<b>x</b>")
    page.locator(f"{W} .launcher").wait_for()
    page.evaluate("(title) => { document.title = title; }", XSS_TITLE)
    open_panel(page)
    fill_prechat(page, name=XSS_NAME, phone="+44 20 7946 0000")
    send(page, XSS_TEXT)
    wait_text(page, XSS_TEXT, mine=True)
    visitor = visitor_id(page, key)
    hubspot = _hubspot(demo)
    # the rep answers once the inbox has the visitor's thread
    _eventually(lambda: _assert_in("in", [m["direction"] for m in hubspot.messages(visitor)]))
    hubspot.reply(visitor, XSS_REPLY)
    wait_text(page, XSS_REPLY, mine=False)
    assert len(posted) >= 3 and len(set(posted)) == 1, posted
    assert [t for t, _, _ in demo._rows("in")].count(XSS_TEXT) == 1
    assert polls, "the reply came without the long poll"

    # in the widget: the texts as typed, and no element but the widget's own
    inside = page.locator(W).evaluate("""(host) => {
      const root = host.shadowRoot;
      return {tags: Array.from(new Set(Array.from(root.querySelectorAll('.log *'))
                                         .map(e => e.tagName.toLowerCase()))).sort(),
              handlers: Array.from(root.querySelectorAll('*')).filter(e =>
                  Array.from(e.attributes).some(a => a.name.startsWith('on'))).length,
              links: Array.from(root.querySelectorAll('a')).map(a => [a.getAttribute('href'),
                                                                    a.getAttribute('rel')])};
    }""")
    assert set(inside["tags"]) <= {"div", "span", "a"}, inside["tags"]
    assert inside["handlers"] == 0
    for href, rel in inside["links"]:
        assert href.startswith(("http://", "https://")) and rel == "noopener noreferrer", href
    assert ["https://safe.example/path?a=1&b=2"] == [
        h for h, _ in inside["links"] if "safe.example" in h
    ]
    assert page.evaluate(f"window.{XSS_FLAG}") is None
    assert page.evaluate("document.querySelectorAll('img, svg').length") == 0

    # the bridge keeps the name and the page title as they were typed ...
    profile = demo.profile_of(XSS_TEXT)
    assert (profile["display_name"], profile["page_title"]) == (XSS_NAME, XSS_TITLE)
    # ... the CRM got the name literally; the try-it page's CRM panel shows it as text
    contact = hubspot._contact(visitor)
    assert contact["properties"]["firstname"].startswith("<svg")
    crm_page = errors.watch(context.new_page())
    crm_page.goto(f"{demo.base}/sandbox/")
    crm_page.get_by_text(XSS_NAME, exact=False).first.wait_for(timeout=CRM_S * 1000)
    crm_page.get_by_text(XSS_NAME, exact=False).first.click()
    crm_page.get_by_text(XSS_REPLY, exact=False).first.wait_for(timeout=CRM_S * 1000)
    assert crm_page.evaluate(f"window.{XSS_FLAG}") is None
    assert (
        crm_page.evaluate("document.querySelectorAll('main svg[onload], main img[src=x]').length")
        == 0
    )
    context.close()
    # what the test broke on purpose: the aborted streams, the 503s
    assert [e for e in errors.seen if "ERR_FAILED" not in e and "503" not in e] == []


def test_required_pre_chat_form_without_consent_box(browser: Browser, demo: _Demo) -> None:
    """A widget that asks for a phone or an e-mail before anything is sent and has
    no consent box: the demo's config rewritten on its way to the page."""
    errors = _Errors()
    context = _context(browser, locale="ru-RU")

    def config(route: Route) -> None:
        # Playwright's own fetch is no same-origin browser request: it names the page
        answer = route.fetch(headers={**route.request.headers, "Origin": demo.base})
        assert answer.ok, answer.text()
        changes = {"prechat": "required", "prechat_fields": ["name", "email"], "consent": "off"}
        route.fulfill(response=answer, json={**answer.json(), **changes})

    context.route(re.compile(r".*/widget/[^/]+/config$"), config)
    page = errors.watch(context.new_page())
    page.goto(f"{demo.base}/sandbox/site/?lang=ru")
    page.locator(f"{W} .launcher").wait_for()
    open_panel(page)
    form = page.locator(f"{W} .intro")
    assert [form.locator(f"input[name={n}]").count() for n in ("name", "phone", "email")] == [
        1,
        0,
        1,
    ]
    assert form.locator("input[name=consent]").count() == 0
    assert form.locator("button.secondary").count() == 0  # no Skip when it is required
    form.locator("input[name=name]").fill("Олег")
    form.locator("button[type=submit]").click()
    problem = form.locator("[role=alert]")
    assert problem.inner_text() == "Укажите телефон или адрес эл. почты."
    form.locator("input[name=email]").fill("oleg-at-example")
    form.locator("button[type=submit]").click()
    assert problem.inner_text() == "Проверьте адрес эл. почты."
    assert page.locator(f"{W} .composer").is_hidden()
    form.locator("input[name=email]").fill("oleg@example.com")
    form.locator("button[type=submit]").click()
    page.locator(f"{W} .composer textarea").wait_for(state="visible")
    # asked once: the next page of the shop goes straight to the composer
    page.goto(f"{demo.base}/sandbox/site/product?lang=ru")
    open_panel(page)
    assert page.locator(f"{W} .intro").is_hidden()
    assert page.evaluate(f"document.querySelector('{W}').shadowRoot.activeElement.tagName") == (
        "TEXTAREA"
    )
    context.close()
    assert errors.seen == []


# -- a reply's choices as buttons (the service layer's menu) ------------------------------------
#
# A reply's choices as buttons in the web chat widget, in a real browser, on
# the demo shop ``bridge run`` serves (the harness of ``test_widget.py``: its
# ``bridge run`` fixture, Debian's Chromium).
#
# The demo's mapping has no service section, so no greeting menu is sent by the
# bridge there: the rep sends the menu's text from HubSpot's inbox, and its
# choices are put on that reply on the way to the page, in the JSON the widget
# API gives a reply with choices (``buttons``: ``[{"id", "label"}]``,
# ``channel_adapters.webchat.api.buttons``). The live stream is cut so the
# widget reads through the long poll (as ``test_widget.py``'s flaky-network
# visitor), where each answer is rewritten.
#
# The visitor presses "Order status": the button shows pressed and the choices
# can no longer be pressed, the visitor's message is the choice's id ("2", what
# they would type), it reaches HubSpot as the visitor's message, and after a
# reload the choice still shows which was pressed. Screenshot:
# ``docs/screenshots/widget-menu.png`` (``$BRIDGE_WIDGET_SCREENSHOTS_DIR``
# elsewhere).

MENU_TEXT = "How can we help?\n1 — Buy\n2 — Order status\n0 — Talk to a person"
MENU = [
    {"id": "1", "label": "Buy"},
    {"id": "2", "label": "Order status"},
    {"id": "0", "label": "Talk to a person"},
]


def _with_choices(run: _Demo) -> Callable[[Route], None]:
    """The route handler: the widget API's answer, the menu reply given its choices."""

    def handle(route: Route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        # Playwright's own fetch is no same-origin browser request: it names the page
        answer = route.fetch(headers={**route.request.headers, "Origin": run.base})
        if not answer.ok:
            route.fulfill(response=answer)
            return
        data: dict[str, Any] = answer.json()
        for message in data.get("messages") or []:
            if message.get("from") == "operator" and message.get("text") == MENU_TEXT:
                message["buttons"] = MENU
        route.fulfill(response=answer, json=data)

    return handle


def _choices(page: Page) -> list[dict[str, Any]]:
    """Each choice the panel shows: its label, id, whether it is pressed, enabled."""
    return page.locator(f"{W} .choices .choice").evaluate_all(
        """(buttons) => buttons.map(b => ({label: b.textContent, id: b.dataset.id,
              pressed: b.getAttribute('aria-pressed') === 'true', enabled: !b.disabled}))"""
    )


def test_a_menu_button_pressed_sends_its_id(browser: Browser, demo: _Demo) -> None:
    errors = _Errors()
    key = widget_key(demo.base)
    context = _context(browser, locale="en-US")
    context.route(re.compile(r".*/widget/[^/]+/stream\?.*"), lambda route: route.abort())
    context.route(re.compile(r".*/widget/[^/]+/messages\?.*"), _with_choices(demo))
    page = errors.watch(context.new_page())
    page.goto(f"{demo.base}/sandbox/site/")
    page.locator(f"{W} .launcher").wait_for()
    open_panel(page)
    fill_prechat(page, name="Ann Lee", email="ann@example.com")
    send(page, "Hello")
    page.locator(f"{W} .msg.me[data-seq]").wait_for()
    visitor = visitor_id(page, key)
    hubspot = _hubspot(demo)
    _eventually(lambda: _assert_in("in", [m["direction"] for m in hubspot.messages(visitor)]))

    # the menu: its numbered text, and its choices as buttons that can be pressed
    hubspot.reply(visitor, MENU_TEXT)
    group = page.locator(f"{W} .msg.op .choices[role=group]")
    group.wait_for(timeout=CRM_S * 1000)
    assert group.get_attribute("aria-label") == "Choose an option"
    assert [(c["label"], c["id"], c["enabled"]) for c in _choices(page)] == [
        ("Buy", "1", True),
        ("Order status", "2", True),
        ("Talk to a person", "0", True),
    ]
    assert (False, MENU_TEXT) in texts(page)

    page.locator(f"{W} .choice", has_text="Order status").click()
    # the visitor's message is the choice's id, stored once
    page.locator(f"{W} .msg.me[data-seq]", has_text="2").wait_for(timeout=CRM_S * 1000)
    # in the order stored, once the panel has the stored copy (under load the
    # panel may show the sent message a moment before its place is known)
    _eventually(lambda: _assert_eq(texts(page)[-2:], [(False, MENU_TEXT), (True, "2")]), 10)
    pressed = _choices(page)
    assert [c["id"] for c in pressed if c["pressed"]] == ["2"]
    assert not any(c["enabled"] for c in pressed)
    _shot(page, "menu")

    # HubSpot has it as the visitor's message
    _eventually(
        lambda: _assert_in(
            "2",
            [m["text"].split("\n")[0] for m in hubspot.messages(visitor) if m["direction"] == "in"],
        )
    )
    # after a reload the history shows which was chosen, and nothing can be pressed again
    page.reload()
    open_panel(page)
    page.locator(f"{W} .choices").wait_for(timeout=CRM_S * 1000)
    _eventually(lambda: _assert_in((True, "2"), texts(page)), 10)
    again = _choices(page)
    assert [c["id"] for c in again if c["pressed"]] == ["2"]
    assert not any(c["enabled"] for c in again)
    context.close()
    # what the test broke on purpose: the aborted streams
    assert [e for e in errors.seen if "ERR_FAILED" not in e] == []
