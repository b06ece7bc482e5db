"""The console opened from inside the CRM, over real HTTP: the sandbox
Bitrix24 (two portals) and the sandbox HubSpot on 127.0.0.1 ports, the
bridge's app on another, a browser played by a ``requests`` session.

Bitrix24: each portal installs the app (ONAPPINSTALL to the bridge's install
handler), the bridge's setup binds the console page (``placement.bind``),
and a portal user opens it there: the sandbox builds the POST Bitrix24 makes
(settings/oauth/simple-way.md) with a fresh token of that user, and the
bridge asks that portal who it is. HubSpot: the sandbox makes the app's
v3-signed call for a portal user and the bridge answers with a login link.
Each session sees its own tenant only.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import redis
import requests
from flask import Flask
from sqlalchemy import select

from bridge import admin, create_app
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import ConsoleUser, Tenant
from sandbox.bitrix24 import create_app as create_bitrix24
from sandbox.bitrix24.config import (
    DEFAULTS as B24_DEFAULTS,
)
from sandbox.bitrix24.config import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_DOMAIN,
    DEMO_MEMBER_ID,
)
from tests.support.harness import (
    CLIENT_SECRET,
    PORTAL_A,
    PORTAL_B,
    build_runtime,
    hubspot_app,
    hubspot_sandbox,
    serve,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BETA_DOMAIN = "beta.bitrix24.ru"
BETA_MEMBER = "b334d7c4821f96ef33fa488e7d5f8664"


@pytest.fixture
def b24_url() -> Iterator[str]:
    """The sandbox Bitrix24 with a second portal (its own admin and user)."""
    second = {
        "domain": BETA_DOMAIN,
        "member_id": BETA_MEMBER,
        "users": [
            {"ID": 1, "NAME": "Olga", "LAST_NAME": "Admin", "EMAIL": "olga@beta.example",
             "ADMIN": True},
            {"ID": 2, "NAME": "Pavel", "LAST_NAME": "User", "EMAIL": "pavel@beta.example",
             "ADMIN": False},
        ],
        "open_lines": [{"ID": 1, "LINE_NAME": "Beta line", "ACTIVE": "Y"}],
    }  # fmt: skip
    portals = [B24_DEFAULTS["portals"][0], second]
    with serve(create_bitrix24({"portals": portals})) as url:
        yield url


@pytest.fixture
def bridge(
    settings: Settings, redis_conn: redis.Redis, b24_url: str
) -> Iterator[tuple[str, Runtime]]:
    """The bridge's app on a real port, its public URL that port's."""
    holder: dict[str, Flask] = {}

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return holder["app"](environ, start_response)

    with serve(wsgi) as url:
        apps = {
            "bitrix24": {
                "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET,
                "auth_base": f"{b24_url}/oauth",
                "allowed_hosts": "127.0.0.1:*",
                "app_code": str(B24_DEFAULTS["app"]["code"]),
            },
            "hubspot": hubspot_app(),
        }
        with build_runtime(settings, redis_conn, public_url=url, apps=apps) as rt:
            for name in ("bitrix24.yaml", "hubspot.yaml"):
                shutil.copy(ROOT / "mappings" / name, rt.settings.mappings_dir / name)
            holder["app"] = create_app({"TESTING": True}, runtime=rt)
            yield url, rt


def control(base: str, path: str, **body: Any) -> Any:
    response = requests.post(f"{base}/{path}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def tenant_of(rt: Runtime, crm: str, account: str) -> int:
    with rt.read_session() as session:
        found = session.scalar(
            select(Tenant.id).where(Tenant.crm_kind == crm, Tenant.crm_account_id == account)
        )
    assert found is not None, f"no {crm} tenant {account}"
    return int(found)


def sees(browser: requests.Session, url: str, tenant_id: int) -> int:
    page = f"{url}/console/audit?tenant={tenant_id}"
    return browser.get(page, allow_redirects=False, timeout=30).status_code


def submit(browser: requests.Session, page: dict[str, Any]) -> requests.Response:
    """The browser posts the app page's form, as Bitrix24's frame does."""
    return browser.post(page["url"], data=page["form"], allow_redirects=False, timeout=30)


def test_bitrix24_opens_the_console_as_the_apps_page_for_its_portal_only(
    b24_url: str, bridge: tuple[str, Runtime]
) -> None:
    url, rt = bridge
    for domain in (DEMO_DOMAIN, BETA_DOMAIN):
        installed = control(
            b24_url, "_install", portal=domain, handler=f"{url}/webhooks/crm/bitrix24/install"
        )
        assert installed["finished"] and installed["delivery"]["status"] == 200, installed
    acme, beta = tenant_of(rt, "bitrix24", DEMO_MEMBER_ID), tenant_of(rt, "bitrix24", BETA_MEMBER)

    # setup binds the console page where the app settings say (twice: idempotent)
    for _ in range(2):
        for tenant in (acme, beta):
            admin.setup_crm(rt, tenant)
    state = requests.get(f"{b24_url}/_state", params={"account": DEMO_DOMAIN}, timeout=30).json()
    [portal] = state["accounts"]
    assert [(p["PLACEMENT"], p["HANDLER"]) for p in portal["placements"]] == [
        ("CRM_ANALYTICS_MENU", f"{url}/console/crm/bitrix24")
    ]
    with rt.read_session() as session:
        assert session.get(Tenant, acme).settings["placements"] == ["CRM_ANALYTICS_MENU"]

    # the portal's admin opens it there: signed in, acme's console only
    page = control(b24_url, "_open_app", portal=DEMO_DOMAIN, user_id=1,
                   placement="CRM_ANALYTICS_MENU")  # fmt: skip
    assert page["url"].startswith(f"{url}/console/crm/bitrix24?DOMAIN={DEMO_DOMAIN}")
    assert {"AUTH_ID", "AUTH_EXPIRES", "REFRESH_ID", "member_id", "PLACEMENT"} <= set(page["form"])
    browser = requests.Session()
    answer = submit(browser, page)
    assert answer.status_code == 303, answer.text
    assert f"tenant={acme}" in answer.headers["Location"]
    assert sees(browser, url, acme) == 200
    assert sees(browser, url, beta) == 404

    # the main page (DEFAULT, its APPLICATION_TOKEN) of the other portal: beta's only
    main = control(b24_url, "_open_app", portal=BETA_DOMAIN, user_id=1,
                   handler=f"{url}/console/crm/bitrix24")  # fmt: skip
    assert main["form"]["PLACEMENT"] == "DEFAULT" and main["form"]["APPLICATION_TOKEN"]
    other = requests.Session()
    assert submit(other, main).status_code == 303
    assert sees(other, url, beta) == 200 and sees(other, url, acme) == 404
    with rt.read_session() as session:
        made = [(u.email, u.role, u.tenant_id) for u in session.scalars(select(ConsoleUser))]
    assert sorted(made) == sorted(
        [
            (f"bitrix24-1@{DEMO_MEMBER_ID}.bitrix24.crm.invalid", "admin", acme),
            (f"bitrix24-1@{BETA_MEMBER}.bitrix24.crm.invalid", "admin", beta),
        ]
    )

    # a portal user who is no admin: refused
    user = control(b24_url, "_open_app", portal=BETA_DOMAIN, user_id=2,
                   placement="CRM_ANALYTICS_MENU")  # fmt: skip
    refused = requests.Session()
    assert submit(refused, user).status_code == 403
    assert sees(refused, url, beta) == 302  # to the login form

    # the page as a browser gets it: a form that submits itself to the handler
    html = requests.get(
        f"{b24_url}/_open_app",
        params={"portal": DEMO_DOMAIN, "user_id": 1, "placement": "CRM_ANALYTICS_MENU"},
        timeout=30,
    ).text
    action = unescape(re.search(r"action='([^']+)'", html).group(1))  # type: ignore[union-attr]
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', html))
    assert action.startswith(f"{url}/console/crm/bitrix24?")
    framed = requests.Session()
    shown = framed.post(action, data=fields, headers={"Sec-Fetch-Dest": "iframe"}, timeout=30)
    assert shown.status_code == 200 and 'target="_blank"' in shown.text
    link = unescape(re.search(r'href="([^"]+)"', shown.text).group(1))  # type: ignore[union-attr]
    tab = requests.Session()
    assert tab.get(link, allow_redirects=False, timeout=30).status_code == 303
    assert sees(tab, url, acme) == 200 and sees(tab, url, beta) == 404

    # an hour later the page's token has expired at the portal: refused
    control(b24_url, "_clock", advance=3700)
    late = requests.Session()
    assert submit(late, page).status_code == 403
    assert sees(late, url, acme) == 302


def test_hubspot_signs_a_call_for_a_login_link_to_its_portals_tenant(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    holder: dict[str, Flask] = {}

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return holder["app"](environ, start_response)

    with hubspot_sandbox() as (hub_url, _spy), serve(wsgi) as url:
        apps = {"hubspot": hubspot_app(hub_url)}
        with build_runtime(settings, redis_conn, public_url=url, apps=apps) as rt:
            shutil.copy(ROOT / "mappings" / "hubspot.yaml", rt.settings.mappings_dir)
            tenants = {
                portal: admin.create_tenant(
                    rt,
                    slug=f"hub-{portal}",
                    crm_kind="hubspot",
                    mapping="hubspot.yaml",
                    credentials={"type": "private_app", "access_token": f"pat-{portal}"},
                    account_id=str(portal),
                )
                for portal in (PORTAL_A, PORTAL_B)
            }
            holder["app"] = create_app({"TESTING": True}, runtime=rt)
            endpoint = f"{url}/console/crm/hubspot"
            for method in ("GET", "POST"):
                call = control(hub_url, "_console_link", url=endpoint, account=PORTAL_B,
                               method=method)  # fmt: skip
                assert call["status"] == 200, call
                assert call["body"]["tenant"] == tenants[PORTAL_B]
                browser = requests.Session()
                link = call["body"]["url"]
                assert browser.get(link, allow_redirects=False, timeout=30).status_code == 303
                assert sees(browser, url, tenants[PORTAL_B]) == 200
                assert sees(browser, url, tenants[PORTAL_A]) == 404
                # the link is spent
                assert requests.get(link, allow_redirects=False, timeout=30).status_code == 410

            forged = control(hub_url, "_console_link", url=endpoint, account=PORTAL_A,
                             secret="not-" + CLIENT_SECRET)  # fmt: skip
            assert forged["status"] == 403


# -- a real browser: Bitrix24's frame ------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
SCREENSHOTS = Path(
    os.environ.get("BRIDGE_CONSOLE_SCREENSHOTS_DIR") or ROOT / "docs" / "screenshots"
)


@pytest.mark.browser
def test_in_chromium_the_portals_frame_opens_the_console_in_a_new_tab(
    b24_url: str, bridge: tuple[str, Runtime]
) -> None:
    """The app's page in a frame, as Bitrix24 shows it: the frame's form
    posts itself to the bridge (Chromium says ``Sec-Fetch-Dest: iframe``),
    the bridge answers the button page inside the frame, and the button
    opens the console, signed in, in a new tab."""
    from playwright.sync_api import sync_playwright

    url, rt = bridge
    for domain in (DEMO_DOMAIN, BETA_DOMAIN):
        control(b24_url, "_install", portal=domain, handler=f"{url}/webhooks/crm/bitrix24/install")
    acme, beta = tenant_of(rt, "bitrix24", DEMO_MEMBER_ID), tenant_of(rt, "bitrix24", BETA_MEMBER)
    admin.setup_crm(rt, acme)
    query = urlencode({"portal": DEMO_DOMAIN, "user_id": 1, "placement": "CRM_ANALYTICS_MENU"})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = chromium.new_context(viewport={"width": 1100, "height": 700})
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_content(
                "<h1 style='font:20px system-ui'>Bitrix24 · CRM · Analytics</h1>"
                f"<iframe id='app' src='{b24_url}/_open_app?{query}' "
                "style='width:900px;height:360px;border:1px solid #ccc'></iframe>"
            )
            frame = page.frame_locator("#app")
            button = frame.locator("a.button")
            button.wait_for(timeout=20_000)
            page.screenshot(path=str(SCREENSHOTS / "console-from-bitrix24-frame.png"))
            with context.expect_page() as opened:
                button.click()
            console = opened.value
            console.wait_for_load_state()
            assert urlsplit(console.url).path.startswith("/console/")
            assert f"tenant={acme}" in console.url
            assert "Sign out" in console.content() or "Выйти" in console.content()
            console.screenshot(path=str(SCREENSHOTS / "console-from-bitrix24.png"))
            # the tab's session is the tenant's only
            assert console.request.get(f"{url}/console/audit?tenant={beta}").status == 404
            assert console.request.get(f"{url}/console/audit?tenant={acme}").status == 200
        finally:
            chromium.close()
    assert errors == []
