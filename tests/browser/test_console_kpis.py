"""The KPI page in a real browser: the charts drawn by ``charts.js`` and the
figures shown, on the scenario of ``tests/unit/test_console_kpis.py`` (its
figures worked out by hand there).

One Chromium (Debian's, driven by Playwright) for the module; the bridge's
app served on 127.0.0.1 in this process (the page's clock set to the
scenario's "now"). A viewer signs in through the login form, opens the
page for the scenario's two days and finds: the traffic chart's three lines
(one per channel) with their points' values, six bars of first response (p50
and p90 of three operators, in minutes), five bars of ratings (1..5), each
equal to the seeded figures, and the tables' figures; then the page in
Russian (``?lang=ru``). No console error, no page error.

Screenshots: ``docs/screenshots/console-kpis.png`` and
``console-kpis-ru.png`` (``$BRIDGE_CONSOLE_SCREENSHOTS_DIR`` elsewhere).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from bridge.console import kpis
from bridge.console.pages import kpis as kpis_page
from bridge.runtime import Runtime
from tests.support.console import PASSWORD, console_app, make_user
from tests.support.servers import serve_wsgi
from tests.unit.test_console_kpis import (
    CSAT_OPERATORS,
    CSAT_OVERALL,
    FRT_OPERATORS,
    LOAD,
    MENU,
    NOW,
    TRAFFIC,
    seed,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
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
QUERY = "period=dates&from=2026-12-07&to=2026-12-08&bucket=day"
DAYS = ("2026-12-07", "2026-12-08")
CHANNELS = ("telegram", "webchat", "whatsapp")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _values(page: Page, selector: str) -> list[float]:
    return [float(v) for v in page.locator(selector).evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('data-value'))"
    )]  # fmt: skip


def _texts(page: Page, selector: str) -> list[str]:
    """SVG text (an SVG element has no innerText)."""
    return [str(t) for t in page.locator(selector).evaluate_all("ns => ns.map(n => n.textContent)")]


def _cell(page: Page, table: str, key: str, col: str) -> str:
    return page.locator(f'#{table} tr[data-key="{key}"] td[data-col="{col}"]').inner_text().strip()


def test_the_kpi_page_in_chromium(
    runtime: Runtime, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kpis_page, "utcnow", lambda: NOW.astimezone(dt.UTC))
    seeded = seed(runtime)
    make_user(runtime, "viewer@kpis.test", role="viewer", tenant_id=seeded.tenant)
    errors: list[str] = []
    with serve_wsgi(console_app(runtime)) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on(
            "console",
            lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

        # sign in through the form; the page asked for comes back after it
        url = f"{server.url}/console/kpis?tenant={seeded.tenant}&{QUERY}"
        page.goto(url)
        page.fill('input[name="email"]', "viewer@kpis.test")
        page.fill('input[name="password"]', PASSWORD)
        page.click('button[type="submit"]')
        page.wait_for_url("**/console/kpis?*")
        page.locator('[data-chart="csat"] svg rect.bar').first.wait_for()
        assert page.locator("#kpis-heading").inner_text().startswith("Key figures")

        # traffic: a line per channel, a point per day, the day's in + out
        lines = page.locator('[data-chart="traffic"] svg polyline')
        assert lines.count() == 3
        for kind in CHANNELS:
            points = f'[data-chart="traffic"] svg circle.point[data-series="{kind}"]'
            assert _values(page, points) == [float(sum(TRAFFIC[(d, kind)])) for d in DAYS]
        # first response per operator: p50 and p90 of 101, 102, 103, in minutes
        bars = '[data-chart="frt"] svg rect.bar'
        assert page.locator(bars).count() == 6
        for series, index in (("p50", 2), ("p90", 3)):
            shown = _values(page, f'{bars}[data-series="{series}"]')
            expected = [round(FRT_OPERATORS[k][index] / 60, 1) for k in ("101", "102", "103")]
            assert shown == expected
        frt_labels = _texts(page, '[data-chart="frt"] svg .axis.x text')
        assert frt_labels == ["101", "102", "103"]
        # the ratings 1..5, each bar's value written on it too
        csat_bars = '[data-chart="csat"] svg rect.bar'
        assert page.locator(csat_bars).count() == 5
        assert _values(page, csat_bars) == [float(n) for n in CSAT_OVERALL[2]]
        written = _texts(page, '[data-chart="csat"] svg text.value')
        assert written == [str(n) for n in CSAT_OVERALL[2]]

        # the tables
        for day in DAYS:
            for kind in CHANNELS:
                row = page.locator(f'#traffic-table tr[data-bucket="{day}"]')
                got_in = row.locator(f'td[data-channel="{kind}"][data-dir="in"]').inner_text()
                got_out = row.locator(f'td[data-channel="{kind}"][data-dir="out"]').inner_text()
                assert (int(got_in), int(got_out)) == TRAFFIC[(day, kind)]
        for key, (sessions, answered, p50, p90, _, _, pct) in FRT_OPERATORS.items():
            assert _cell(page, "frt-operators", key, "sessions") == str(sessions)
            assert _cell(page, "frt-operators", key, "answered") == str(answered)
            assert _cell(page, "frt-operators", key, "p50") == kpis.seconds_text(p50)
            assert _cell(page, "frt-operators", key, "p90") == kpis.seconds_text(p90)
            assert _cell(page, "frt-operators", key, "sla") == (
                "—" if pct is None else f"{pct:g} %"
            )
        for key, (sessions, peak) in LOAD.items():
            assert _cell(page, "load-table", key, "sessions") == str(sessions)
            assert _cell(page, "load-table", key, "peak") == str(peak)
        for key, (ratings, average, spread) in CSAT_OPERATORS.items():
            assert _cell(page, "csat-operators", key, "ratings") == str(ratings)
            assert _cell(page, "csat-operators", key, "average") == str(average)
            assert [_cell(page, "csat-operators", key, f"r{n}") for n in range(1, 6)] == [
                str(n) for n in spread
            ]
        for key, (label, count) in MENU.items():
            assert _cell(page, "menu-table", key, "count") == str(count)
            assert page.locator(f'#menu-table tr[data-key="{key}"] td').first.inner_text() == label
        tiles = page.locator("#kpi-tiles")
        assert tiles.locator('[data-kpi="clients-new"] .value').inner_text() == "17"
        assert tiles.locator('[data-kpi="sla"] .value').inner_text() == "50 %"
        # the CSV link carries the same period
        href = page.locator("#kpi-csv").get_attribute("href") or ""
        assert "/console/kpis.csv?" in href and "from=2026-12-07" in href
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "console-kpis.png"), full_page=True)

        # in Russian
        page.goto(f"{url}&lang=ru")
        page.locator('[data-chart="csat"] svg rect.bar').first.wait_for()
        assert page.locator("#kpis-heading").inner_text().startswith("Ключевые показатели")
        assert page.locator("#kpi-frt h2").inner_text() == "Первый ответ"
        assert page.locator('#menu-table tr[data-key="main:1"] td').first.inner_text() == "Купить"
        assert page.locator('[data-chart="frt"] svg rect.bar').count() == 6
        page.screenshot(path=str(SCREENSHOTS / "console-kpis-ru.png"), full_page=True)
        context.close()
    assert errors == []
