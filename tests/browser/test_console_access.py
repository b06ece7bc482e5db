# ruff: noqa: S105, S106  (passwords here are test fixtures)
"""The console's sign-in in a real browser (Debian's Chromium, Playwright).

The bridge's whole app is served on a 127.0.0.1 port for the module
(SQLite, an embedded Redis) with one tenant, its admin and its viewer; one
Chromium for the module.

* The admin: a console page sends the browser to the login form; the form
  signs in (through the CSRF-protected POST) and lands on the console; the
  users page lists the tenant's users; a user is added through its form
  and the audit log shows it; signing out returns to the login page and
  the console is closed again.
* The viewer: the users page without its forms; a change forced through
  the page's own CSRF token (a script's fetch) is refused with 403 and
  changes nothing.
* Sign-in failures are limited: after five wrong passwords for one account
  the form answers 429 with when to retry, even for the right password;
  another account from the same browser still signs in.
* At 390 px nothing is wider than the screen.
* No console error, no page error.

Screenshots: ``docs/screenshots/console-login.png`` and
``console-users.png`` (``$BRIDGE_CONSOLE_SCREENSHOTS_DIR`` elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from sqlalchemy import select

from bridge.config import Settings
from bridge.migrate import upgrade
from bridge.runtime import Runtime, set_runtime
from bridge.tables import ConsoleAudit, ConsoleUser
from tests.support.console import PASSWORD, console_app, make_tenant, make_user
from tests.support.servers import serve_wsgi

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(
    os.environ.get("BRIDGE_CONSOLE_SCREENSHOTS_DIR") or ROOT / "docs" / "screenshots"
)


@dataclass
class Console:
    rt: Runtime
    url: str
    tenant: int

    def user(self, email: str) -> ConsoleUser | None:
        with self.rt.read_session() as s:
            return s.scalar(select(ConsoleUser).where(ConsoleUser.email == email))

    def audit_actions(self) -> list[str]:
        with self.rt.read_session() as s:
            return list(s.scalars(select(ConsoleAudit.action).order_by(ConsoleAudit.id)))


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Console]:
    base = tmp_path_factory.mktemp("console")
    settings = Settings.from_env(
        env={
            "DATABASE_URL": f"sqlite:///{base / 'bridge.db'}",
            "REDIS_URL": redis_url,
            "BRIDGE_VAR_DIR": str(base / "var"),
            "BRIDGE_MAPPINGS_DIR": str(base / "mappings"),
        }
    )
    settings.mappings_dir.mkdir(parents=True)
    rt = Runtime(settings)
    upgrade(rt.engine)
    for key in rt.redis.scan_iter("bridge:console:*"):
        rt.redis.delete(key)
    tenant = make_tenant(rt, "acme", "Acme Shop")
    make_user(rt, "ann@acme.test", role="admin", tenant_id=tenant)
    make_user(rt, "vic@acme.test", role="viewer", tenant_id=tenant, language="ru")
    make_user(rt, "ray@acme.test", role="admin", tenant_id=tenant)
    app = console_app(rt)
    try:
        with serve_wsgi(app) as server:
            yield Console(rt, server.url, tenant)
    finally:
        set_runtime(None)
        rt.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


#: Chromium's line for a page or fetch answered with an error status (the
#: refusals these tests ask for: a wrong password's 401, a viewer's 403)
REFUSED = "Failed to load resource: the server responded with a status of {}"


def _page(browser: Browser, errors: list[str], width: int = 1280) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"))


def test_an_admin_signs_in_changes_a_user_and_signs_out(browser: Browser, console: Console) -> None:
    errors: list[str] = []
    context, page = _page(browser, errors)
    page.goto(f"{console.url}/console/audit")
    expect(page).to_have_url(f"{console.url}/console/login?next=/console/audit")
    expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    page.get_by_label("E-mail").fill("ann@acme.test")
    _shot(page, "login")
    # a wrong password first: the form says so and stays
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong e-mail or password.")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{console.url}/console/audit")  # where it was going
    expect(page.locator("#audit")).to_contain_text("sign_in")

    page.get_by_role("link", name="Users").click()
    expect(page.locator("#users")).to_contain_text("vic@acme.test")
    expect(page.locator(".me")).to_contain_text("ann@acme.test")
    form = page.locator("#add-user")
    form.get_by_label("E-mail").fill("neo@acme.test")
    form.get_by_label("Password (at least 12 characters)").fill("a brand new password")
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Add").click()
    expect(page.locator(".flash.ok")).to_have_text("User neo@acme.test added.")
    expect(page.locator("#users")).to_contain_text("neo@acme.test")
    new = console.user("neo@acme.test")
    assert new is not None and new.role == "viewer" and new.tenant_id == console.tenant
    _shot(page, "users")

    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("#audit tbody tr").first).to_contain_text("user.create")
    page.get_by_role("link", name="RU", exact=True).click()
    expect(page.get_by_role("heading", name="Журнал действий")).to_be_visible()
    page.get_by_role("button", name="Выйти").click()
    expect(page).to_have_url(f"{console.url}/console/login")
    page.goto(f"{console.url}/console/users")
    expect(page).to_have_url(f"{console.url}/console/login?next=/console/users")
    assert console.audit_actions()[-1] == "sign_out"
    context.close()
    assert errors == [REFUSED.format("401 (UNAUTHORIZED)")]  # the wrong password


def test_a_viewer_cannot_change_anything(browser: Browser, console: Console) -> None:
    errors: list[str] = []
    context, page = _page(browser, errors)
    page.goto(f"{console.url}/console/login?next=/console/users")
    page.locator("input[name=email]").fill("vic@acme.test")
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form.stack button[type=submit]").click()
    expect(page).to_have_url(f"{console.url}/console/users")
    # the viewer's own language
    expect(page.get_by_role("heading", name="Пользователи консоли")).to_be_visible()
    expect(page.locator("#users")).to_contain_text("ann@acme.test")
    expect(page.locator("#add-user")).to_have_count(0)
    expect(page.locator("#users button")).to_have_count(0)
    ann = console.user("ann@acme.test")
    assert ann is not None
    before = console.audit_actions()
    status = page.evaluate(
        """async (path) => {
          const token = document.querySelector('meta[name="csrf-token"]').content;
          const answer = await fetch(path, {method: 'POST', headers: {'X-CSRFToken': token}});
          return answer.status;
        }""",
        f"/console/users/{ann.id}/disable",
    )
    assert status == 403
    answer = page.request.post(
        f"{console.url}/console/users",
        form={"email": "x@acme.test", "password": PASSWORD, "role": "admin"},
    )
    assert answer.status == 400  # no token: refused before anything else
    refreshed = console.user("ann@acme.test")
    assert refreshed is not None and not refreshed.disabled
    assert console.user("x@acme.test") is None
    assert console.audit_actions() == before
    context.close()
    assert errors == [REFUSED.format("403 (FORBIDDEN)")]  # the forced change


def test_sign_in_failures_are_limited_per_account(browser: Browser, console: Console) -> None:
    errors: list[str] = []
    context, page = _page(browser, errors)
    page.goto(f"{console.url}/console/login")
    for _ in range(5):
        page.locator("input[name=email]").fill("ray@acme.test")
        page.locator("input[name=password]").fill("a wrong guess")
        page.locator("form.stack button[type=submit]").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong e-mail or password.")
    page.locator("input[name=email]").fill("ray@acme.test")
    page.locator("input[name=password]").fill(PASSWORD)  # right, but too late
    page.locator("form.stack button[type=submit]").click()
    expect(page.get_by_text("Too many failed sign-ins. Try again in")).to_be_visible()
    ray = console.user("ray@acme.test")
    assert ray is not None and ray.last_login_at is None  # never signed in
    # the limit is the account's: another one signs in from this browser
    page.goto(f"{console.url}/console/login?next=/console/users")
    page.locator("input[name=email]").fill("ann@acme.test")
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form.stack button[type=submit]").click()
    expect(page).to_have_url(f"{console.url}/console/users")
    context.close()
    assert errors == [REFUSED.format("401 (UNAUTHORIZED)")] * 5 + [
        REFUSED.format("429 (TOO MANY REQUESTS)")
    ]


def test_the_console_fits_a_phone(browser: Browser, console: Console) -> None:
    errors: list[str] = []
    context, page = _page(browser, errors, width=390)
    page.goto(f"{console.url}/console/login?next=/console/users")
    page.locator("input[name=email]").fill("ann@acme.test")
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form.stack button[type=submit]").click()
    expect(page.locator("#users")).to_be_visible()
    page.wait_for_load_state("load")  # the stylesheet applied (under load it came after)
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    expect(page.locator("#add-user button")).to_be_visible()
    context.close()
    assert errors == []
