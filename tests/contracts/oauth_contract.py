"""The shared contract of a CRM adapter's OAuth client, run against each
CRM's sandbox over real HTTP (``tests/contracts/test_oauth_contract.py``
subclasses it once per OAuth CRM).

What every OAuth client must do:

* the install URL (``install_url``) carries our client id and the state we
  gave it, and the redirect URI where the vendor takes it from the URL;
* an authorization code exchanges once (``exchange_code``): it gives the
  account's id and a token pair; the same code a second time is refused
  (``AuthError``), as the vendor redeems a code once;
* a refresh (``refresh_credentials``) gives a new access token and keeps or
  rotates the refresh token the way the vendor does — a rotated one is dead
  at once (a second use is ``AuthError``), a kept one keeps working;
* a refresh the vendor refuses (an unknown or dead refresh token) is
  ``AuthError``, whatever the vendor's error body;
* no token, code or client secret ever appears in an error's message (its
  causes included) or in a log line the bridge writes (``urllib3`` at its
  production level, WARNING: it logs full URLs at DEBUG; the sandboxes'
  own request logs are the vendors', not ours).

A subclass names the adapter class, whether the vendor rotates refresh
tokens and puts the redirect URI in the authorize URL, and provides the
fixtures and hooks below (the consent is the vendor's own form, played as
an admin would).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from bridge.errors import AuthError, BridgeError
from bridge.model import Installed
from crm_adapters.base import CrmAdapter
from tests.support.fakes import MemoryCredentials

__all__ = ["OAuthClientContract", "TokenWatch"]

#: loggers that are the vendors' side (the in-process sandboxes' request logs)
VENDOR_LOGGERS = ("werkzeug", "sandbox")


class TokenWatch:
    """Every secret the flow handled, and the errors it raised."""

    def __init__(self, *secrets: str) -> None:
        self.secrets: set[str] = {s for s in secrets if s}
        self.errors: list[BaseException] = []

    def add(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, str) and len(value) >= 6:
                self.secrets.add(value)

    def add_credentials(self, credentials: Mapping[str, Any]) -> None:
        self.add(*(v for k, v in credentials.items() if "token" in k or "secret" in k))

    def refused(self, call: Any, *args: Any, **kwargs: Any) -> AuthError:
        """``call`` must raise ``AuthError``; it is kept for the message check."""
        with pytest.raises(AuthError) as caught:
            call(*args, **kwargs)
        self.errors.append(caught.value)
        return caught.value

    def leaks(self, text: str) -> list[str]:
        return sorted(f"{s[:6]}…" for s in self.secrets if s in text)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class OAuthClientContract:
    """Subclass as ``Test<Crm>OAuth`` (see the module docstring)."""

    adapter_class: ClassVar[type[CrmAdapter]]
    #: the vendor answers a refresh with a new refresh token, the old one dead
    rotates_refresh_token: ClassVar[bool]
    #: the authorize URL carries ``redirect_uri`` (else the vendor takes it
    #: from the app's settings)
    redirect_in_url: ClassVar[bool]
    redirect_uri: ClassVar[str] = "https://bridge.example/oauth/callback"

    # -- what a subclass provides ---------------------------------------------------

    @pytest.fixture
    def app(self) -> Any:
        """The deployment's app settings (an instance of the adapter's
        ``App``) pointed at the sandbox."""
        raise NotImplementedError

    def consent(self, install_url: str) -> dict[str, str]:
        """An admin opens ``install_url`` and grants access in the vendor's
        own form; the query the vendor redirects back with (``code``,
        ``state``, whatever else it adds)."""
        raise NotImplementedError

    def exchange(self, app: Any, callback: Mapping[str, str]) -> Installed:
        """``exchange_code`` as the bridge's callback calls it."""
        raise NotImplementedError

    def adapter(self, app: Any, installed: Installed, store: MemoryCredentials) -> CrmAdapter:
        """The tenant's adapter on the installed credentials (``store``)."""
        raise NotImplementedError

    # -- the flow ------------------------------------------------------------------------

    def install_url(self, app: Any, state: str) -> str:
        return self.adapter_class.install_url(app, redirect_uri=self.redirect_uri, state=state)

    def installed(self, app: Any, watch: TokenWatch | None = None) -> tuple[Installed, dict]:
        callback = self.consent(self.install_url(app, "contract-state-1"))
        installed = self.exchange(app, callback)
        if watch is not None:
            watch.add(callback.get("code"))
            watch.add_credentials(installed.credentials)
        return installed, callback

    @pytest.fixture
    def watch(self, app: Any, caplog: pytest.LogCaptureFixture) -> Iterator[TokenWatch]:
        """Collects the secrets; afterwards no error message (nor its
        causes) and no log line of ours carries one."""
        caplog.set_level(logging.DEBUG)
        logging.getLogger("urllib3").setLevel(logging.WARNING)  # as bridge.logs sets it
        watch = TokenWatch(getattr(app, "client_secret", ""))
        yield watch
        for error in watch.errors:
            for exc in _chain(error):
                shown = f"{exc} {exc!r} {getattr(exc, 'message', '')}"
                assert watch.leaks(shown) == [], f"an error names a secret: {type(exc).__name__}"
        for record in caplog.records:
            if record.name.startswith(VENDOR_LOGGERS):
                continue
            text = record.getMessage() + (record.exc_text or "")
            assert watch.leaks(text) == [], f"a log line names a secret: {record.name}"

    # -- the contract --------------------------------------------------------------------

    def test_the_install_url_carries_the_client_id_redirect_and_state(self, app: Any) -> None:
        url = self.install_url(app, "state-Zq7 with/odd+chars")
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert urlsplit(url).scheme in ("https", "http") and urlsplit(url).netloc
        assert query["client_id"] == app.client_id
        assert query["state"] == "state-Zq7 with/odd+chars"
        if self.redirect_in_url:
            assert query["redirect_uri"] == self.redirect_uri
        else:
            assert "redirect_uri" not in query  # the vendor takes it from the app's settings

    def test_a_code_exchanges_once(self, app: Any, watch: TokenWatch) -> None:
        installed, callback = self.installed(app, watch)
        assert callback["state"] == "contract-state-1"
        assert installed.account_id, "the exchange must name the account"
        creds = installed.credentials
        assert creds.get("access_token") and creds.get("refresh_token")
        assert isinstance(creds.get("expires_at"), int)
        watch.refused(self.exchange, app, callback)  # the same code again

    def test_a_refresh_keeps_or_rotates_the_refresh_token_as_the_vendor_does(
        self, app: Any, watch: TokenWatch
    ) -> None:
        installed, _ = self.installed(app, watch)
        store = MemoryCredentials(installed.credentials)
        adapter = self.adapter(app, installed, store)
        old = dict(installed.credentials)
        fresh = adapter.refresh_credentials(old)
        watch.add_credentials(fresh)
        assert fresh["access_token"] and fresh["access_token"] != old["access_token"]
        assert fresh["expires_at"] >= old["expires_at"]
        if self.rotates_refresh_token:
            assert fresh["refresh_token"] != old["refresh_token"]
            # the old one died with its use: a second use is refused
            watch.refused(adapter.refresh_credentials, old)
        else:
            assert fresh["refresh_token"] == old["refresh_token"]
            again = adapter.refresh_credentials(fresh)  # and it keeps working
            watch.add_credentials(again)
            assert again["refresh_token"] == old["refresh_token"]
        # the newest pair refreshes
        newest = adapter.refresh_credentials(fresh)
        watch.add_credentials(newest)
        assert newest["access_token"] != fresh["access_token"]

    def test_a_refused_refresh_is_an_auth_error(self, app: Any, watch: TokenWatch) -> None:
        installed, _ = self.installed(app, watch)
        store = MemoryCredentials(installed.credentials)
        adapter = self.adapter(app, installed, store)
        never_issued = {**installed.credentials, "refresh_token": "never-issued-" + "x" * 24}
        watch.add(never_issued["refresh_token"])
        error = watch.refused(adapter.refresh_credentials, never_issued)
        assert isinstance(error, BridgeError) and error.message
