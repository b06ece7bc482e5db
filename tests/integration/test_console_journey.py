"""The admin console in a real browser, on a running bridge.

One stack (gunicorn, an RQ worker, Redis, the Telegram and HubSpot
sandboxes: what ``make run`` starts, on PostgreSQL when the suite has one)
and Debian's Chromium driven by Playwright. An admin of the demo tenant:

1. signs in through the login form and lands on the overview, which names
   the tenant's Telegram account and its CRM;
2. connects a second Telegram bot from the Channels page: "Test" against
   the Telegram sandbox says it works, "Connect" stores it and registers its
   webhook there (the sandbox holds the URL the page shows);
3. edits the mapping: a typo in an object type is shown at its line while
   typing (the live check), fixed, and the dry run against the live HubSpot
   sandbox shows every check found and the deal a sample message would
   create;
4. two customers write to the bot; their messages are found in the
   conversation log by name, and a message's trace shows it received,
   journaled, normalised and written to HubSpot with the deal's id, a link
   into the CRM and each call HubSpot answered;
5. a rep's reply to a customer who blocked the bot fails; the conversation
   shows it failed with the channel's reason; the customer unblocks the bot
   and the admin replays the reply from the console: it reaches the customer
   once; every change is in the audit log with who made it;
6. the console in Russian (``?lang=ru``).

Screenshots of each page go to docs/screenshots/ (console-*.png), the
README shows them. No console error and no page error along the way
besides the refusals the steps ask for.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select

from bench.stack import ROOT, Stack
from bench.traffic import wait_until
from bridge.tables import Message, MessageStatus
from tests.support.console import PASSWORD, make_user
from tests.support.crm_views import Vendor, crm_view, fast_stack, runtime_of

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
SCREENSHOTS = Path(os.environ.get("BRIDGE_CONSOLE_SCREENSHOTS_DIR") or ROOT / "docs/screenshots")
ADMIN = "ann@demo.test"
#: a second bot the sandbox Telegram knows (BotFather made it: ``/_bots``)
SECOND_BOT = "7000000123:AAE_second-demo-bot-for-console-123"
#: the two customers (Telegram user ids) and their names
ANN, BOB = 7_300_001, 7_300_002
NAMES = {ANN: "Annabel", BOB: "Bobrov"}


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"), full_page=True)


def _writes(stack: Stack, user: int, n: int, text: str) -> None:
    """The customer ``user`` writes ``text`` to the demo bot."""
    person = {"id": user, "is_bot": False, "first_name": NAMES[user], "language_code": "en"}
    message = {
        "message_id": n,
        "from": person,
        "chat": {"id": user, "type": "private", "first_name": NAMES[user]},
        "date": int(time.time()),
        "text": text,
    }
    assert stack.deliver({"message": message})["status"] == 200


def _messages(stack: Stack) -> list[tuple[str, str, str]]:
    """(direction, text, status) of every message the bridge holds."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            rows = session.scalars(select(Message).order_by(Message.id)).all()
            return [(str(m.direction), m.text or "", str(m.status)) for m in rows]
    finally:
        runtime.close()


def _synced(stack: Stack, n: int) -> bool:
    return sum(1 for _, _, s in _messages(stack) if s == MessageStatus.SYNCED) >= n


def _sent_texts(stack: Stack, user: int) -> list[str]:
    return [str(m.get("text") or "") for m in stack.telegram_sent(user)]


def test_an_admin_runs_the_bridge_from_the_console(make_stack_once: Any, browser: Browser) -> None:
    stack: Stack = fast_stack(make_stack_once, "hubspot", (), workers=1)
    runtime = runtime_of(stack)
    try:
        make_user(runtime, ADMIN, role="admin", tenant_id=stack.seeded.tenant_id)
    finally:
        runtime.close()
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    base = f"{stack.bridge_url}/console"

    # 1. sign in: the overview names the tenant's channel account and CRM
    page.goto(f"{base}/")
    expect(page).to_have_url(re.compile(r"/console/login"))
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/(overview)?(\?.*)?$"))
    body = page.locator("main")
    expect(body).to_contain_text("Demo bot")  # the Telegram account, by its title
    expect(body).to_contain_text("HubSpot")
    expect(body).to_contain_text("tokens valid")
    _shot(page, "overview")

    # 2. a second bot: tested, connected, its webhook registered at Telegram
    telegram = Vendor(stack, "telegram")
    telegram.post("_bots", token=SECOND_BOT, username="acme_second_bot", first_name="Acme 2")
    page.goto(f"{base}/channels")
    expect(page.locator("#channel-accounts tbody tr")).to_have_count(1)
    page.locator("#connect-choices a", has_text="Telegram").click()
    page.fill("#input-bot_token", SECOND_BOT)
    page.click("#connect-test")
    expect(page.locator("#connect-check")).to_have_class(re.compile(r"\bok\b"), timeout=15_000)
    _shot(page, "channels-connect")
    page.click("#connect-submit")
    expect(page).to_have_url(re.compile(r"/console/channels(\?.*)?$"))
    accounts = page.locator("#channel-accounts tbody tr")
    expect(accounts).to_have_count(2)
    second = telegram.get("_bots")
    assert any(b["token"] == SECOND_BOT for b in second["bots"]), second
    webhook = _webhook_of(stack, SECOND_BOT)
    assert webhook and webhook.startswith(stack.bridge_url), webhook
    _shot(page, "channels")

    # 3. the mapping: a typo shown at its line while typing, fixed, dry run
    page.goto(f"{base}/mapping")
    editor = page.locator("#mapping-text")
    original = editor.input_value()
    assert "object: deal" in original, original
    line = original[: original.index("object: deal")].count("\n") + 1
    editor.fill(original.replace("object: deal", "object: dael", 1))
    problem = page.locator("#mapping-problems li").first
    expect(problem).to_contain_text("dael", timeout=10_000)
    assert problem.get_attribute("data-line") == str(line)
    _shot(page, "mapping-error")
    editor.fill(original)
    expect(page.locator("#mapping-problems li")).to_have_count(0, timeout=10_000)
    page.fill("input[name=sender]", "Dry Run")
    page.fill("textarea[name=sample_text]", "Do you deliver on Sundays?")
    page.click("#mapping-dry-run")
    expect(page.locator("#dry-run-checks")).to_be_visible()
    expect(page.locator("#dry-run-verdict")).to_have_class(re.compile(r"\bok\b"))
    expect(page.locator("#dry-run-preview")).to_contain_text("Dry Run")
    _shot(page, "mapping-dry-run")

    # 4. two customers write; found by name; a message's trace
    for n, user in enumerate((ANN, BOB, ANN), 1):
        _writes(stack, user, n, f"Hello from {NAMES[user]} #{n}")
    assert wait_until(lambda: _synced(stack, 3), timeout=60), _messages(stack)
    page.goto(f"{base}/conversations")
    page.fill("#conversation-search input[name=contact]", "Annab")
    page.click("#conversation-search button[type=submit]")
    rows = page.locator("#conversations tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Annabel")
    _shot(page, "conversations")
    rows.first.locator("a").first.click()
    messages = page.locator("#messages")
    expect(messages).to_contain_text("Hello from Annabel #1")
    expect(messages).to_contain_text("Hello from Annabel #3")
    expect(messages).not_to_contain_text("Bobrov")
    _shot(page, "conversation")
    page.locator("#messages tbody tr", has_text="#1").locator("a", has_text="Trace").click()
    trace = page.locator("main")
    deal = _deal_of(stack, "Annabel")
    expect(trace).to_contain_text(deal)
    link = page.locator(f"a[href*='{deal}']").first
    assert "hubspot" in str(link.get_attribute("href")), link.get_attribute("href")
    calls = page.locator("#crm-calls tbody tr")  # each call HubSpot answered while it was written
    expect(calls.first).to_contain_text("/crm/v3/")
    statuses = [int(t) for t in calls.locator("td:nth-child(3)").all_inner_texts()]
    assert statuses and all(200 <= s < 300 for s in statuses), statuses
    _shot(page, "trace")

    # 5. a reply to a customer who blocked the bot fails; replayed from here
    telegram.post("_block", chat_id=BOB, blocked=True)
    view = crm_view(stack, "telegram", 1, 1, read_receipts=False)
    view.reply(BOB, "We deliver on Sundays")
    failed = ("out", "We deliver on Sundays", MessageStatus.FAILED)
    assert wait_until(lambda: failed in _messages(stack), timeout=60), _messages(stack)
    page.goto(f"{base}/conversations?contact=Bobrov&status=failed")
    expect(page.locator("#conversations tbody tr")).to_have_count(1)
    page.locator("#conversations tbody tr a").first.click()
    reply = page.locator("#messages tbody tr", has_text="We deliver on Sundays")
    expect(reply).to_contain_text("blocked")
    telegram.post("_block", chat_id=BOB, blocked=False)
    conversation_url = page.url
    reply.locator("button", has_text="Replay").click()
    expect(page.locator("main")).to_contain_text("1")  # the flash names what was requeued
    assert wait_until(lambda: "We deliver on Sundays" in _sent_texts(stack, BOB), timeout=60)
    assert _sent_texts(stack, BOB).count("We deliver on Sundays") == 1
    page.goto(conversation_url)
    expect(
        page.locator("#messages tbody tr", has_text="We deliver on Sundays")
    ).not_to_contain_text("blocked")
    _shot(page, "replayed")

    # every change above is in the audit log, newest first
    page.goto(f"{base}/audit")
    audit = page.locator("#audit tbody")
    expect(audit).to_contain_text("conversation.replay_message")
    expect(audit).to_contain_text("channels.connect")
    expect(audit).to_contain_text(ADMIN)
    _shot(page, "audit")

    # 6. in Russian
    page.goto(f"{base}/overview?lang=ru")
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    expect(page.locator("nav")).to_contain_text("Диалоги")
    _shot(page, "overview-ru")

    refusals = [e for e in errors if "status of 4" in e]
    assert [e for e in errors if e not in refusals] == [], errors
    context.close()


def _webhook_of(stack: Stack, token: str) -> str | None:
    """The webhook URL the sandbox Telegram holds for the bot ``token``."""
    answer = requests.get(
        f"{stack.sandbox_url}/telegram/bot{token}/getWebhookInfo", timeout=10
    ).json()
    return str(answer["result"].get("url") or "") or None


def _deal_of(stack: Stack, name: str) -> str:
    """The HubSpot deal the customer's conversation is on."""
    runtime = runtime_of(stack)
    try:
        from bridge.tables import Contact, Conversation

        with runtime.read_session() as session:
            row = session.execute(
                select(Conversation.crm_entity_id)
                .join(Contact, Contact.id == Conversation.contact_id)
                .where(Contact.display_name.like(f"{name}%"))
            ).first()
            assert row is not None and row[0], name
            return str(row[0])
    finally:
        runtime.close()
