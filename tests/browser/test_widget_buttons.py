"""A reply's choices as buttons in the web chat widget, in a real browser, on
the demo shop ``bridge run`` serves (the harness of ``test_widget.py``: its
``bridge run`` fixture, Debian's Chromium).

The demo's mapping has no service section, so no greeting menu is sent by the
bridge there: the rep sends the menu's text from HubSpot's inbox, and its
choices are put on that reply on the way to the page, in the JSON the widget
API gives a reply with choices (``buttons``: ``[{"id", "label"}]``,
``channel_adapters.webchat.api.buttons``). The live stream is cut so the
widget reads through the long poll (as ``test_widget.py``'s flaky-network
visitor), where each answer is rewritten.

The visitor presses "Order status": the button shows pressed and the choices
can no longer be pressed, the visitor's message is the choice's id ("2", what
they would type), it reaches HubSpot as the visitor's message, and after a
reload the choice still shows which was pressed. Screenshot:
``docs/screenshots/widget-menu.png`` (``$BRIDGE_WIDGET_SCREENSHOTS_DIR``
elsewhere).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route

from tests.browser.test_widget import (  # noqa: F401  (browser, demo: the module's fixtures)
    CRM_S,
    _assert_in,
    _context,
    _Demo,
    _Errors,
    _eventually,
    _hubspot,
    _shot,
    browser,
    demo,
)
from tests.support.widget import W, fill_prechat, open_panel, send, texts, visitor_id, widget_key

pytestmark = [pytest.mark.integration, pytest.mark.browser]

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


def test_a_menu_button_pressed_sends_its_id(browser: Browser, demo: _Demo) -> None:  # noqa: F811
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
    assert texts(page)[-2:] == [(False, MENU_TEXT), (True, "2")]
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
