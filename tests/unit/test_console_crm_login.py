# ruff: noqa: S105, S106  (fake tokens and secrets are test fixtures)
"""Opening the console from inside the CRM (``bridge.console.crm_login``)
and its short-lived login links.

Bitrix24: the app page's POST (settings/oauth/simple-way.md fields) is
checked by calling the tenant's own portal with the posted ``AUTH_ID``
(``batch`` of ``user.admin``, ``profile``, ``app.info``; mocked with
``responses`` in the shapes of the Bitrix24 docs: the batch envelope of
batch.md, ``401 NO_AUTH_FOUND`` / ``expired_token`` of the system errors).
HubSpot: a v3-signed call (FACTS 3.6) answered with a login link. The
tenant API and the command line mint links too. Every way ends in an admin
session of one tenant: another tenant's pages are 404.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import redis
import responses
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner
from sqlalchemy import func, select

from bridge import admin, apitokens
from bridge.config import Settings
from bridge.console import crm_login, users
from bridge.runtime import Runtime
from bridge.tables import ConsoleAudit, ConsoleUser
from crm_adapters.bitrix24.webhooks import token_digest
from tests.support.console import console_app, make_user
from tests.support.harness import CLIENT_SECRET, build_runtime, hubspot_signed

ROOT = Path(__file__).resolve().parents[2]
B24_APP = {"client_id": "local.6650f1c2a4b3d7.81234567", "client_secret": "b24-secret"}
MEMBER_A = "a223c6b3710f85df22e9377d6c4f7553"
MEMBER_B = "b334d7c4821f96ef33fa488e7d5f8664"
PORTAL_A = "https://acme.bitrix24.com/rest/"
PORTAL_B = "https://beta.bitrix24.com/rest/"
APP_TOKEN_A = "51856fefc120afa4b628cc82d3935cce"
HUB_A, HUB_B = "62515", "62516"


# -- the bridge with four tenants ------------------------------------------------------------


@pytest.fixture
def rt(settings: Settings, redis_conn: redis.Redis) -> Iterator[Runtime]:
    apps = {
        "bitrix24": B24_APP,
        "hubspot": {"client_id": "hub-app", "client_secret": CLIENT_SECRET},
    }
    with build_runtime(settings, redis_conn, apps=apps) as runtime:
        for name in ("bitrix24.yaml", "hubspot.yaml"):
            shutil.copy(ROOT / "mappings" / name, runtime.settings.mappings_dir / name)
        yield runtime


def _b24_tenant(rt: Runtime, slug: str, member: str, endpoint: str, app_token: str) -> int:
    creds = {
        "type": "oauth",
        "access_token": f"stored-{slug}",
        "refresh_token": f"refresh-{slug}",
        "expires_at": 4_000_000_000,
        "client_endpoint": endpoint,
        "member_id": member,
        "application_token": app_token,
    }
    settings = {
        "member_id": member,
        "domain": urlsplit(endpoint).netloc,
        "application_token_sha256": token_digest(app_token),
    }
    return admin.create_tenant(
        rt,
        slug=slug,
        crm_kind="bitrix24",
        mapping="bitrix24.yaml",
        credentials=creds,
        account_id=member,
        settings=settings,
    )


@pytest.fixture
def tenants(rt: Runtime) -> dict[str, int]:
    made = {
        "a": _b24_tenant(rt, "acme", MEMBER_A, PORTAL_A, APP_TOKEN_A),
        "b": _b24_tenant(rt, "beta", MEMBER_B, PORTAL_B, "62967ab3c4d5e6f708192a3b4c5d6e7f"),
    }
    for key, portal in (("ha", HUB_A), ("hb", HUB_B)):
        made[key] = admin.create_tenant(
            rt,
            slug=f"hub-{portal}",
            crm_kind="hubspot",
            mapping="hubspot.yaml",
            credentials={"type": "private_app", "access_token": f"pat-{portal}"},
            account_id=portal,
        )
    return made


@pytest.fixture
def app(rt: Runtime) -> Flask:
    return console_app(rt)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def sees(client: FlaskClient, tenant_id: int) -> int:
    """The status of a console page about ``tenant_id`` for this session."""
    return client.get(f"/console/audit?tenant={tenant_id}").status_code


def console_users(rt: Runtime) -> list[tuple[str, str, int | None]]:
    with rt.read_session() as session:
        rows = session.scalars(select(ConsoleUser).order_by(ConsoleUser.id))
        return [(u.email, u.role, u.tenant_id) for u in rows]


# -- Bitrix24: the app's page ------------------------------------------------------------------


def page_form(
    member: str = MEMBER_A, auth_id: str = "page-token-1", **extra: str
) -> dict[str, str]:
    """The fields Bitrix24 POSTs to the app's main page (simple-way.md)."""
    return {
        "AUTH_ID": auth_id,
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "page-refresh-1",
        "SERVER_ENDPOINT": "https://oauth.bitrix.info/rest/",
        "member_id": member,
        "status": "L",
        "PLACEMENT": "DEFAULT",
        **extra,
    }


PAGE_QUERY = {"DOMAIN": "acme.bitrix24.com", "PROTOCOL": "1", "LANG": "en", "APP_SID": "f00d"}


def open_page(client: FlaskClient, form: dict[str, str], **kw: Any) -> Any:
    return client.post(f"/console/crm/bitrix24?{urlencode(PAGE_QUERY)}", data=form, **kw)


def portal_answers(
    endpoint: str = PORTAL_A,
    *,
    admin: bool = True,
    user: str = "1",
    code: str = B24_APP["client_id"],
    auth_id: str = "page-token-1",
) -> None:
    """The portal's ``batch`` answer for a page token (batch.md envelope);
    any other token gets ``401 NO_AUTH_FOUND`` (system-errors.md)."""

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        if body.get("auth") != auth_id:
            error = {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
            return 401, {}, json.dumps(error)
        assert body["cmd"] == {"admin": "user.admin", "me": "profile", "app": "app.info"}
        result = {
            "result": {
                "admin": admin,
                "me": {"ID": user, "ADMIN": admin, "NAME": "Klaus", "LAST_NAME": "Weber"},
                "app": {"ID": 1, "CODE": code, "STATUS": "L", "INSTALLED": True},
            },
            "result_error": [],
            "result_total": [],
            "result_next": [],
            "result_time": [],
        }
        return 200, {}, json.dumps({"result": result, "time": {"start": 1.0, "finish": 1.1}})

    responses.add_callback(responses.POST, endpoint + "batch", callback=answer)


@responses.activate
def test_a_portal_admin_opens_the_app_page_and_sees_their_tenant_only(
    rt: Runtime, tenants: dict[str, int], client: FlaskClient
) -> None:
    portal_answers()
    response = open_page(client, page_form(APPLICATION_TOKEN=APP_TOKEN_A))
    assert response.status_code == 303, response.get_data(as_text=True)
    assert f"tenant={tenants['a']}" in response.headers["Location"]
    assert response.headers["Location"].startswith("/console/")
    # the portal the install recorded was asked, with the page's token
    [call] = responses.calls
    assert call.request.url == PORTAL_A + "batch"
    assert json.loads(call.request.body)["auth"] == "page-token-1"
    assert sees(client, tenants["a"]) == 200
    for other in ("b", "ha", "hb"):
        assert sees(client, tenants[other]) == 404
    email = f"bitrix24-1@{MEMBER_A}.bitrix24.crm.invalid"
    assert console_users(rt) == [(email, "admin", tenants["a"])]
    with rt.read_session() as session:
        actions = list(session.scalars(select(ConsoleAudit.action).order_by(ConsoleAudit.id)))
    assert actions == ["crm_user_created", "crm_login", "sign_in"]

    # the same user again: the same console user, no second one
    other = client.application.test_client()
    assert open_page(other, page_form()).status_code == 303
    assert len(console_users(rt)) == 1
    # it has no password: the login form never signs it in
    with rt.read_session() as session:
        assert not users.check_password(users.user_by_email(session, email), "!crm-login")


@responses.activate
def test_a_portal_user_who_is_no_admin_is_refused(
    rt: Runtime, tenants: dict[str, int], client: FlaskClient
) -> None:
    portal_answers(admin=False, user="2")
    response = open_page(client, page_form())
    assert response.status_code == 403
    assert "administrator" in response.get_data(as_text=True)
    assert client.get(f"/console/audit?tenant={tenants['a']}").status_code == 302  # to login
    assert console_users(rt) == []


@pytest.mark.parametrize(
    "error",
    [
        {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
        {"error": "expired_token", "error_description": "The access token provided has expired."},
    ],
)
@responses.activate
def test_a_forged_or_expired_page_token_is_refused(
    rt: Runtime, tenants: dict[str, int], client: FlaskClient, error: dict[str, str]
) -> None:
    responses.add(responses.POST, PORTAL_A + "batch", json=error, status=401)
    response = open_page(client, page_form(auth_id="forged"))
    assert response.status_code == 403
    assert "did not confirm" in response.get_data(as_text=True)
    assert len(responses.calls) == 1  # the page's token is never refreshed
    assert client.get(f"/console/audit?tenant={tenants['a']}").status_code == 302
    assert console_users(rt) == []


@responses.activate
def test_a_member_id_of_no_tenant_is_refused_without_asking_anyone(
    tenants: dict[str, int], client: FlaskClient
) -> None:
    response = open_page(client, page_form(member="c" * 32))
    assert response.status_code == 404
    assert open_page(client, page_form(member="")).status_code == 400
    assert len(responses.calls) == 0


@responses.activate
def test_the_portal_asked_is_the_tenants_never_the_one_the_post_names(
    tenants: dict[str, int], client: FlaskClient
) -> None:
    """A token that works on the attacker's portal A, posted with B's
    member_id (and any DOMAIN): the bridge asks B's recorded endpoint, which
    does not know the token."""
    portal_answers(PORTAL_A)
    portal_answers(PORTAL_B, auth_id="only-b-knows-this")
    form = page_form(member=MEMBER_B)
    response = client.post("/console/crm/bitrix24?DOMAIN=acme.bitrix24.com&PROTOCOL=1", data=form)
    assert response.status_code == 403
    assert [c.request.url for c in responses.calls] == [PORTAL_B + "batch"]
    assert sees(client, tenants["b"]) == 302


@responses.activate
def test_a_token_of_another_app_or_another_install_is_refused(
    rt: Runtime, tenants: dict[str, int], client: FlaskClient
) -> None:
    portal_answers(code="local.another.app")
    assert open_page(client, page_form()).status_code == 403
    # the main page's APPLICATION_TOKEN must be the install's (checked first)
    assert open_page(client, page_form(APPLICATION_TOKEN="0" * 32)).status_code == 403
    assert len(responses.calls) == 1
    assert console_users(rt) == []


@responses.activate
def test_inside_the_crms_frame_the_page_offers_the_console_in_a_new_tab(
    rt: Runtime, tenants: dict[str, int], app: Flask
) -> None:
    """A frame's session cookie would be a third-party one: the frame gets a
    button with a login link instead, which signs in a top-level tab."""
    portal_answers()
    frame = app.test_client()
    page = open_page(frame, page_form(), headers={"Sec-Fetch-Dest": "iframe"})
    assert page.status_code == 200
    assert "X-Frame-Options" not in page.headers
    html = page.get_data(as_text=True)
    [link] = re.findall(r'href="([^"]+)" target="_blank"', html)
    link = link.replace("&amp;", "&")
    assert link.startswith("http://bridge.test/console/crm/link/crm?token=")
    assert sees(frame, tenants["a"]) == 302  # no session in the frame

    tab = app.test_client()
    signed = tab.get(link.removeprefix("http://bridge.test"))
    assert signed.status_code == 303
    assert sees(tab, tenants["a"]) == 200 and sees(tab, tenants["b"]) == 404


@responses.activate
def test_refusals_stop_asking_the_portal_after_a_while(
    rt: Runtime, tenants: dict[str, int], client: FlaskClient
) -> None:
    responses.add(
        responses.POST,
        PORTAL_A + "batch",
        json={"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
        status=401,
    )
    for _ in range(crm_login.MAX_REFUSALS):
        assert open_page(client, page_form(auth_id="guess")).status_code == 403
    assert open_page(client, page_form(auth_id="guess")).status_code == 429
    assert len(responses.calls) == crm_login.MAX_REFUSALS


# -- login links -------------------------------------------------------------------------------


def api_link(client: FlaskClient, token: str) -> str:
    response = client.post(
        "/api/v1/console/login-link", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["expires_in"] == 300
    return str(body["url"])


def path_of(url: str) -> str:
    assert url.startswith("http://bridge.test/")
    return url.removeprefix("http://bridge.test")


def test_the_tenant_api_mints_a_link_that_signs_in_an_admin_of_that_tenant(
    rt: Runtime, tenants: dict[str, int], app: Flask
) -> None:
    token = apitokens.issue(rt, tenants["b"], "amocrm widget")
    url = api_link(app.test_client(), token)
    assert "/console/crm/link/api?token=" in url
    browser = app.test_client()
    response = browser.get(path_of(url))
    assert response.status_code == 303
    assert f"tenant={tenants['b']}" in response.headers["Location"]
    assert sees(browser, tenants["b"]) == 200
    assert sees(browser, tenants["a"]) == 404
    assert console_users(rt) == [
        (f"api-link@tenant-{tenants['b']}.crm.invalid", "admin", tenants["b"])
    ]
    # the same link again: spent
    again = app.test_client().get(path_of(url))
    assert again.status_code == 410
    assert "used" in again.get_data(as_text=True)


def test_the_tenant_api_wants_the_tenants_token(
    rt: Runtime, tenants: dict[str, int], client: FlaskClient
) -> None:
    assert client.post("/api/v1/console/login-link").status_code == 401
    assert (
        client.post(
            "/api/v1/console/login-link", headers={"Authorization": "Bearer brt_forged"}
        ).status_code
        == 401
    )
    revoked = apitokens.issue(rt, tenants["a"])
    apitokens.revoke(rt, tenants["a"], revoked)
    headers = {"Authorization": f"Bearer {revoked}"}
    assert client.post("/api/v1/console/login-link", headers=headers).status_code == 401


def test_an_expired_link_is_refused(
    rt: Runtime, tenants: dict[str, int], client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = TimestampSigner.get_timestamp
    monkeypatch.setattr(
        TimestampSigner, "get_timestamp", lambda self: now(self) - crm_login.LINK_MAX_AGE - 1
    )
    url = crm_login.tenant_link(rt, tenants["a"], "cli", "cli")
    monkeypatch.setattr(TimestampSigner, "get_timestamp", now)
    response = client.get(path_of(url))
    assert response.status_code == 410
    assert "expired" in response.get_data(as_text=True)
    assert sees(client, tenants["a"]) == 302


def test_a_tampered_link_or_one_of_another_purpose_is_refused(
    rt: Runtime, tenants: dict[str, int], app: Flask
) -> None:
    url = crm_login.tenant_link(rt, tenants["a"], "api", "test")
    query = dict(parse_qsl(urlsplit(url).query))
    payload, rest = query["token"].split(".", 1)
    # the payload names tenant b instead (same signature): not the bridge's
    forged = crm_login._serializer(rt, "api").dumps({"t": tenants["b"], "u": 1, "j": "x"})
    tampered = forged.split(".", 1)[0] + "." + rest
    for path in (
        f"/console/crm/link/api?token={tampered}",
        f"/console/crm/link/api?token={payload}.{rest[:-2]}xx",
        # a valid token of the tenant API is no command-line link
        f"/console/crm/link/cli?token={query['token']}",
        f"/console/crm/link/nothing?token={query['token']}",
        "/console/crm/link/api",
    ):
        browser = app.test_client()
        assert browser.get(path).status_code in (403, 404), path
        assert sees(browser, tenants["a"]) == 302
        assert sees(browser, tenants["b"]) == 302
    # untouched, it still works (nothing above spent it)
    browser = app.test_client()
    assert browser.get(path_of(url)).status_code == 303
    assert sees(browser, tenants["a"]) == 200 and sees(browser, tenants["b"]) == 404


def test_a_link_never_signs_in_a_user_of_another_tenant_or_a_disabled_one(
    rt: Runtime, tenants: dict[str, int], app: Flask
) -> None:
    """A link signed by the bridge for tenant a's tenant id but another
    tenant's user (or an owner) does not sign in; a disabled user neither."""
    owner = make_user(rt, "owner@example.com", role="owner")
    b_admin = make_user(rt, "admin@beta.example", role="admin", tenant_id=tenants["b"])
    for user_id in (owner, b_admin):
        url = crm_login.mint_link(rt, tenants["a"], user_id, "cli")
        assert app.test_client().get(path_of(url)).status_code == 403
    url = crm_login.tenant_link(rt, tenants["a"], "cli", "cli")
    with rt.transaction() as session:
        user = users.user_by_email(session, crm_login.link_email("cli", tenants["a"]))
        assert user is not None
        user.disabled = True
    response = app.test_client().get(path_of(url))
    assert response.status_code == 403
    assert "disabled" in response.get_data(as_text=True)


def test_the_command_line_prints_a_link_for_the_owner(
    rt: Runtime, tenants: dict[str, int], app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.cli import context

    monkeypatch.setattr(context, "runtime", lambda **_: rt)
    for chosen in (str(tenants["b"]), "beta"):
        result = CliRunner().invoke(crm_login.login_link_command, ["--tenant", chosen])
        assert result.exit_code == 0, result.output
        url = result.output.strip()
        browser = app.test_client()
        assert browser.get(path_of(url)).status_code == 303
        assert sees(browser, tenants["b"]) == 200 and sees(browser, tenants["a"]) == 404
    missing = CliRunner().invoke(crm_login.login_link_command, ["--tenant", "nobody"])
    assert missing.exit_code == 1 and "no tenant" in missing.output
    with rt.read_session() as session:
        minted = session.scalar(
            select(func.count())
            .select_from(ConsoleAudit)
            .where(ConsoleAudit.action == "login_link")
        )
    assert minted == 2


# -- HubSpot: a signed call for a link ---------------------------------------------------------


def hubspot_call(client: FlaskClient, portal: str, user: str = "9001", **kw: Any) -> Any:
    query = urlencode({"userId": user, "userEmail": "rep@example.com", "portalId": portal})
    url = f"http://bridge.test/console/crm/hubspot?{query}"
    headers = hubspot_signed(url, b"", **kw)
    headers.pop("Content-Type")
    # a GET: the v3 signature over "GET" + URL + empty body + timestamp
    from crm_adapters.hubspot.webhooks import sign_v3

    headers["X-HubSpot-Signature-v3"] = sign_v3(
        kw.get("secret", CLIENT_SECRET), "GET", url, b"", headers["X-HubSpot-Request-Timestamp"]
    )
    return client.get(f"/console/crm/hubspot?{query}", headers=headers)


def test_a_signed_hubspot_call_gets_a_link_to_that_portals_tenant(
    rt: Runtime, tenants: dict[str, int], app: Flask
) -> None:
    answer = hubspot_call(app.test_client(), HUB_B)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["tenant"] == tenants["hb"] and body["expires_in"] == 300
    browser = app.test_client()
    assert browser.get(path_of(body["url"])).status_code == 303
    assert sees(browser, tenants["hb"]) == 200
    assert sees(browser, tenants["ha"]) == 404 and sees(browser, tenants["a"]) == 404
    assert console_users(rt) == [
        (f"hubspot-9001@{HUB_B}.hubspot.crm.invalid", "admin", tenants["hb"])
    ]


def test_an_unsigned_forged_or_stale_hubspot_call_is_refused(
    rt: Runtime, tenants: dict[str, int], client: FlaskClient
) -> None:
    assert hubspot_call(client, HUB_A, secret="not-the-apps-secret").status_code == 403
    assert hubspot_call(client, HUB_A, now_ms=1_000_000).status_code == 403
    plain = client.get(f"/console/crm/hubspot?portalId={HUB_A}&userId=1")
    assert plain.status_code == 403
    assert plain.get_json()["error"] == "forbidden"
    # signed, but for a portal with no tenant here
    assert hubspot_call(client, "99999").status_code == 404
    assert console_users(rt) == []


def test_a_crm_without_a_way_in_is_a_404(tenants: dict[str, int], client: FlaskClient) -> None:
    assert client.post("/console/crm/amocrm", data={"account_id": "1"}).status_code == 404
    assert client.get("/console/crm/nothing").status_code == 404
