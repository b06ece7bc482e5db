"""The web chat widget in a page, the way the browser tests drive it
(``tests/browser/test_widget.py`` on HubSpot, ``test_try_it_page.py`` in each
sandbox CRM): a visitor opens the panel, fills the pre-chat form, writes;
the tests read the conversation the panel shows.

The widget draws itself in an open shadow root under its host element
(:data:`W`); Playwright's CSS selectors pierce it, so ``f"{W} .launcher"``
finds the launcher."""

from __future__ import annotations

import json
import time
from typing import Any

import requests
from playwright.sync_api import Page

__all__ = [
    "CONVERSATION_JS",
    "W",
    "conversation",
    "fill_prechat",
    "open_panel",
    "send",
    "texts",
    "visitor_id",
    "wait_text",
    "widget_key",
]

#: the widget's host element
W = "crm-bridge-chat"

#: the conversation as the panel shows it: seq, whose, the text (links included)
CONVERSATION_JS = """(host) => Array.from(host.shadowRoot.querySelectorAll('.list .msg[data-seq]'))
  .map(m => ({seq: Number(m.dataset.seq), mine: m.classList.contains('me'),
              text: (m.querySelector('.text') || {textContent: ''}).textContent}))"""


def conversation(page: Page) -> list[dict[str, Any]]:
    """The stored messages the panel shows, oldest first (not the pending ones)."""
    return page.locator(W).evaluate(CONVERSATION_JS)  # type: ignore[no-any-return]


def texts(page: Page) -> list[tuple[bool, str]]:
    """(the visitor's own?, text) of each stored message the panel shows."""
    return [(m["mine"], m["text"]) for m in conversation(page)]


def widget_key(base: str) -> str:
    """The demo shop's widget key: the script the shop embeds is ``.../widget/<key>.js``
    (``base``: the bridge that serves the sandbox)."""
    r = requests.get(f"{base}/sandbox/site/_widget", timeout=10)
    r.raise_for_status()
    return str(r.json()["src"]).rsplit("/", 1)[1].removesuffix(".js")


def visitor_id(page: Page, key: str) -> str:
    """The visitor id the widget keeps for the page's site (the customer's id in the CRM)."""
    raw = page.evaluate(f"localStorage.getItem('crmb:{key}:visitor')")
    assert raw, "no visitor id stored: the widget never took a session"
    return str(json.loads(raw))


def open_panel(page: Page) -> None:
    """Click the launcher and wait for the panel."""
    page.locator(f"{W} .launcher").click()
    page.locator(f"{W} [role=dialog]").wait_for(state="visible")


def fill_prechat(page: Page, **values: str) -> None:
    """Fill the pre-chat form's fields (``name``, ``phone``, ``email``), tick the
    consent box and start: the composer shows."""
    for name, value in values.items():
        page.locator(f"{W} .intro input[name={name}]").fill(value)
    page.locator(f"{W} .intro input[name=consent]").check()
    page.locator(f"{W} .intro button[type=submit]").click()
    page.locator(f"{W} .composer textarea").wait_for(state="visible")


def send(page: Page, text: str) -> None:
    """Type ``text`` (Shift+Enter between its lines) and send it with Enter."""
    box = page.locator(f"{W} .composer textarea")
    lines = text.split("\n")
    box.fill(lines[0])
    for line in lines[1:]:
        box.press("Shift+Enter")  # a new line, not a send
        box.press_sequentially(line)
    box.press("Enter")


def wait_text(page: Page, text: str, *, mine: bool, timeout: float = 30.0) -> float:
    """Seconds until the panel shows a stored message ``text`` (the visitor's own
    when ``mine``, else the business's); AssertionError after ``timeout``."""
    start = time.monotonic()
    while (mine, text) not in (shown := texts(page)):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{(mine, text)!r} not in {shown!r}")
        time.sleep(0.1)
    return time.monotonic() - start
