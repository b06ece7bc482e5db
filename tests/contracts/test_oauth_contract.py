# ruff: noqa: S105, S106  (sandbox app secrets are test fixtures)
"""The OAuth-client contract (``oauth_contract.py``) for every CRM that
installs through OAuth, each against its sandbox over real HTTP, the consent
played in the vendor's own form."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from bridge.http import HttpClient
from bridge.model import CrmAccountInfo, Installed
from bridge.schema import load
from crm_adapters.amocrm import AmoCrmAdapter
from crm_adapters.base import CrmAdapter
from crm_adapters.bitrix24 import Bitrix24Adapter, Bitrix24App
from crm_adapters.hubspot import HubSpotAdapter
from sandbox.amocrm import create_app as create_amocrm
from sandbox.amocrm.config import DEMO_CLIENT_ID as AMO_CLIENT_ID
from sandbox.amocrm.config import DEMO_CLIENT_SECRET as AMO_CLIENT_SECRET
from sandbox.bitrix24 import DEMO_CLIENT_ID as B24_CLIENT_ID
from sandbox.bitrix24 import DEMO_CLIENT_SECRET as B24_CLIENT_SECRET
from sandbox.bitrix24 import DEMO_DOMAIN as B24_DOMAIN
from sandbox.bitrix24 import create_app as create_bitrix24
from sandbox.hubspot import create_app as create_hubspot
from tests.contracts.oauth_contract import OAuthClientContract
from tests.support.fakes import MemoryCredentials
from tests.support.servers import RunningServer, serve_wsgi

REDIRECT_URI = OAuthClientContract.redirect_uri


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class TestHubSpotOAuth(OAuthClientContract):
    """HubSpot keeps the refresh token (FACTS 3.1: rotation UNCONFIRMED; the
    sandbox's default), takes the redirect URI from the authorize URL."""

    adapter_class = HubSpotAdapter
    rotates_refresh_token = False
    redirect_in_url = True
    portal = 62515

    @pytest.fixture
    def sandbox(self) -> Iterator[RunningServer]:
        app = create_hubspot({"portals": [{"id": self.portal, "name": "OAuth Co"}]})
        with serve_wsgi(app) as server:
            self.url = server.url
            yield server

    @pytest.fixture
    def app(self, sandbox: RunningServer) -> Any:
        config = requests.get(f"{sandbox.url}/_config", timeout=10).json()["app"]
        values = {
            "client_id": config["client_id"],
            "client_secret": config["client_secret"],
            "auth_base": sandbox.url,
            "api_base": sandbox.url,
        }
        return load(HubSpotAdapter.App, values, strict=True)

    def consent(self, install_url: str) -> dict[str, str]:
        query = _query(install_url)
        granted = requests.post(
            f"{self.url}/oauth/authorize",
            data={**query, "portal_id": str(self.portal), "decision": "grant"},
            allow_redirects=False,
            timeout=10,
        )
        assert granted.status_code == 302, granted.text
        return _query(granted.headers["Location"])

    def exchange(self, app: Any, callback: Mapping[str, str]) -> Installed:
        return HubSpotAdapter.exchange_code(
            app, code=callback["code"], redirect_uri=REDIRECT_URI, http=HttpClient(self.url)
        )

    def adapter(self, app: Any, installed: Installed, store: MemoryCredentials) -> CrmAdapter:
        account = CrmAccountInfo(
            tenant_id=1,
            kind="hubspot",
            account_id=installed.account_id,
            app={"client_id": app.client_id, "client_secret": app.client_secret},
            api_base=self.url,
        )
        adapter = HubSpotAdapter(account, store, HttpClient(self.url))
        store.refresher = adapter.refresh_credentials
        return adapter


class TestAmoCrmOAuth(OAuthClientContract):
    """amoCRM's refresh tokens are single use (FACTS 1.2): every refresh
    returns a new pair and the old refresh token dies at once; the redirect
    URI comes from the integration's settings."""

    adapter_class = AmoCrmAdapter
    rotates_refresh_token = True
    redirect_in_url = False

    @pytest.fixture
    def sandbox(self) -> Iterator[RunningServer]:
        app = create_amocrm({"integration": {"redirect_uri": REDIRECT_URI}})
        with serve_wsgi(app) as server:
            self.url = server.url
            yield server

    @pytest.fixture
    def app(self, sandbox: RunningServer) -> Any:
        values = {
            "client_id": AMO_CLIENT_ID,
            "client_secret": AMO_CLIENT_SECRET,
            "auth_base": f"{sandbox.url}/www",
        }
        return load(AmoCrmAdapter.App, values, strict=True)

    @property
    def api_base(self) -> str:
        return f"{self.url}/{{subdomain}}"

    def consent(self, install_url: str) -> dict[str, str]:
        page = requests.get(install_url, timeout=10)
        assert page.status_code == 200, page.text
        account_id = re.search(r"name='account_id' value='(\d+)'", page.text)
        assert account_id is not None, page.text[:500]
        granted = requests.post(
            f"{self.url}/www/oauth",
            data={
                **_query(install_url),
                "redirect_uri": REDIRECT_URI,
                "has_state": "1",
                "account_id": account_id.group(1),
                "decision": "grant",
            },
            allow_redirects=False,
            timeout=10,
        )
        assert granted.status_code == 302, granted.text
        return _query(granted.headers["Location"])

    def exchange(self, app: Any, callback: Mapping[str, str]) -> Installed:
        return AmoCrmAdapter.exchange_code(
            app,
            code=callback["code"],
            redirect_uri=REDIRECT_URI,
            http=HttpClient(self.api_base),
            params=callback,
        )

    def adapter(self, app: Any, installed: Installed, store: MemoryCredentials) -> CrmAdapter:
        account = CrmAccountInfo(
            tenant_id=1,
            kind="amocrm",
            account_id=installed.account_id,
            settings=installed.settings,
            app={"client_id": app.client_id, "client_secret": app.client_secret},
            api_base=self.api_base,
        )
        adapter = AmoCrmAdapter(account, store, HttpClient(self.api_base))
        store.refresher = adapter.refresh_credentials
        return adapter


class TestBitrix24OAuth(OAuthClientContract):
    """Bitrix24 rotates refresh tokens on every refresh (auto-renewal.md:
    "retain it instead of the previous one"); the authorize URL is on the
    portal, the redirect URI comes from the app's settings, and the app must
    be installed on the portal first (oauth/index.md)."""

    adapter_class = Bitrix24Adapter
    rotates_refresh_token = True
    redirect_in_url = False

    @pytest.fixture
    def sandbox(self) -> Iterator[RunningServer]:
        app = create_bitrix24({"app": {"redirect_uri": REDIRECT_URI}})

        def handler(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"ok": true}']  # the app's install handler: installed

        with serve_wsgi(app) as server, serve_wsgi(handler) as receiver:
            self.url = server.url
            installed = requests.post(
                f"{server.url}/_install", json={"handler": f"{receiver.url}/install"}, timeout=15
            )
            assert installed.status_code == 200, installed.text
            yield server

    @pytest.fixture
    def app(self, sandbox: RunningServer) -> Any:
        values = {
            "client_id": B24_CLIENT_ID,
            "client_secret": B24_CLIENT_SECRET,
            "auth_base": f"{sandbox.url}/oauth",
            "portal": f"{sandbox.url}/{B24_DOMAIN}",
            "allowed_hosts": "127.0.0.1:*",
        }
        return load(Bitrix24App, values, strict=True)

    def consent(self, install_url: str) -> dict[str, str]:
        granted = requests.get(install_url, allow_redirects=False, timeout=10)
        assert granted.status_code == 302, granted.text
        return _query(granted.headers["Location"])

    def exchange(self, app: Any, callback: Mapping[str, str]) -> Installed:
        return Bitrix24Adapter.exchange_code(
            app,
            code=callback["code"],
            redirect_uri=REDIRECT_URI,
            http=HttpClient(),
            params=callback,
        )

    def adapter(self, app: Any, installed: Installed, store: MemoryCredentials) -> CrmAdapter:
        account = CrmAccountInfo(
            tenant_id=1,
            kind="bitrix24",
            account_id=installed.account_id,
            settings=installed.settings,
            app={
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "auth_base": app.auth_base,
                "allowed_hosts": app.allowed_hosts,
            },
        )
        adapter = Bitrix24Adapter(account, store, HttpClient())
        store.refresher = adapter.refresh_credentials
        return adapter
