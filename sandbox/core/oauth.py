"""The OAuth 2.0 authorization-code server every CRM sandbox runs.

One :class:`TokenServer` holds an app's authorization codes, access tokens
and refresh tokens; the vendor modules keep their endpoints, parameter
names, token formats (``TokenFormat``), lifetimes and error bodies, and map
the :class:`Rejected` reasons below to them.

* **Codes** are single-use and short-lived, bound to an account, a user and
  the redirect URI they were issued for. :meth:`TokenServer.redeem` checks,
  in this order: ``unknown``, ``wrong_account`` (a code of another account),
  ``used``, ``expired``, ``redirect_mismatch``; a redeemed code is marked used
  (and forgotten unless ``keep_used_codes``).
* **Refresh tokens** belong to a *family* (one install's chain). A refresh
  (:meth:`TokenServer.refresh`) under a :class:`RefreshPolicy`:
  ``rotate`` issues a new refresh token and retires the old one at once, or
  after ``grace_s`` seconds; without rotation the same refresh token comes
  back with a new access token. A retired token presented again is
  ``reused`` (with ``revoke_family_on_reuse`` the whole family dies: its live
  refresh token and every access token); others: ``unknown``,
  ``wrong_account``, ``expired``, ``replaced`` (retired after its grace),
  ``redirect_mismatch``. ``revoke_access_on_refresh`` kills the user's other
  access tokens on the account first.
* **Access tokens** are looked up with :meth:`TokenServer.bearer`; expiry is
  the vendor's to report (each words it differently). Tokens without a family
  (long-lived tokens, event tokens) are issued with :meth:`issue_access`.

Accounts are whatever the vendor keys them by (portal id, account id,
domain). Every method expects the caller to hold the vendor store's lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TokenServer",
    "TokenFormat",
    "RefreshPolicy",
    "Rejected",
    "Code",
    "AccessToken",
    "RefreshToken",
    "Family",
]


class Rejected(Exception):
    """A code or refresh token the server refuses; ``reason`` names why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Code:
    value: str
    account: Any  # the vendor's account key (portal id, account id, domain)
    user_id: int
    client_id: str
    scopes: list[str]
    redirect_uri: str
    expires_at: float
    used: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Family:
    """One install's chain of refresh tokens and the access tokens they gave."""

    id: str
    account: Any  # the vendor's account key (portal id, account id, domain)
    user_id: int
    client_id: str
    scopes: list[str]
    redirect_uri: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    live_refresh: set[str] = field(default_factory=set)
    access_tokens: set[str] = field(default_factory=set)


@dataclass
class AccessToken:
    token: str
    account: Any  # the vendor's account key (portal id, account id, domain)
    user_id: int
    client_id: str
    scopes: list[str]
    expires_at: float
    family: str | None = None  # None: a long-lived or event token
    refresh: str | None = None  # the refresh token issued with / used for it
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RefreshToken:
    token: str
    family: str
    account: Any  # the vendor's account key (portal id, account id, domain)
    user_id: int
    client_id: str
    scopes: list[str]
    expires_at: float | None  # None: never expires
    replaced_at: float | None = None  # rotated, still alive within the grace period
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenFormat:
    """How the vendor's tokens look: ``code()``, ``access(account, user_id,
    expires_at, grant)`` and ``refresh()`` return fresh values."""

    code: Callable[[], str]
    access: Callable[[Any, int, float, str], str]
    refresh: Callable[[], str]


@dataclass(frozen=True)
class RefreshPolicy:
    rotate: bool = True
    grace_s: float = 0.0
    revoke_family_on_reuse: bool = False
    revoke_access_on_refresh: bool = False


#: "any account": the account is not checked
ANY = object()


class TokenServer:
    """Codes, access and refresh tokens of one sandbox app (module docstring)."""

    def __init__(self, now: Callable[[], float], tokens: TokenFormat, *,
                 keep_used_codes: bool = True) -> None:
        self.now = now
        self.tokens = tokens
        self.keep_used_codes = keep_used_codes
        self.codes: dict[str, Code] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.dead: dict[str, str] = {}  # retired refresh token -> family id
        self.families: dict[str, Family] = {}

    # -- codes -------------------------------------------------------------------------

    def issue_code(self, account: Hashable, user_id: int, client_id: str, scopes: list[str],
                   redirect_uri: str, ttl: float, extra: dict[str, Any] | None = None) -> Code:
        code = Code(self.tokens.code(), account, user_id, client_id, list(scopes),
                    redirect_uri, self.now() + float(ttl), extra=dict(extra or {}))
        self.codes[code.value] = code
        return code

    def redeem(self, value: str, *, account: Any = ANY,
               redirect_uri: str | None = None) -> Code:
        """Consume a code; ``redirect_uri`` None: not checked."""
        code = self.codes.get(value)
        if code is None:
            raise Rejected("unknown")
        if account is not ANY and code.account != account:
            raise Rejected("wrong_account")
        if code.used:
            raise Rejected("used")
        if code.expires_at <= self.now():
            if not self.keep_used_codes:
                del self.codes[value]
            raise Rejected("expired")
        if redirect_uri is not None and code.redirect_uri and redirect_uri != code.redirect_uri:
            raise Rejected("redirect_mismatch")
        code.used = True
        if not self.keep_used_codes:
            del self.codes[value]
        return code

    # -- issuing -----------------------------------------------------------------------

    def issue(self, account: Hashable, user_id: int, client_id: str, scopes: list[str], *,
              access_ttl: float, refresh_ttl: float | None, redirect_uri: str = "",
              grant: str = "authorization_code", extra: dict[str, Any] | None = None,
              ) -> tuple[AccessToken, RefreshToken]:
        """A new family with its first access + refresh pair."""
        family = Family(uuid.uuid4().hex, account, user_id, client_id, list(scopes),
                        redirect_uri, dict(extra or {}))
        self.families[family.id] = family
        return self._pair(family, access_ttl, refresh_ttl, grant)

    def issue_access(self, account: Hashable, user_id: int, client_id: str,
                     scopes: list[str], expires_at: float, *, token: str | None = None,
                     grant: str = "", extra: dict[str, Any] | None = None) -> AccessToken:
        """An access token outside any family (long-lived tokens, event tokens)."""
        value = token or self.tokens.access(account, user_id, expires_at, grant)
        access = AccessToken(value, account, user_id, client_id, list(scopes), expires_at,
                             extra=dict(extra or {}))
        self.access[value] = access
        return access

    def _access(self, family: Family, access_ttl: float, grant: str,
                refresh: str | None) -> AccessToken:
        expires_at = self.now() + float(access_ttl)
        value = self.tokens.access(family.account, family.user_id, expires_at, grant)
        access = AccessToken(value, family.account, family.user_id, family.client_id,
                             list(family.scopes), expires_at, family.id, refresh,
                             dict(family.extra))
        self.access[value] = access
        family.access_tokens.add(value)
        return access

    def _pair(self, family: Family, access_ttl: float, refresh_ttl: float | None,
              grant: str) -> tuple[AccessToken, RefreshToken]:
        # the access token's value first (a seeded token format stays reproducible)
        access = self._access(family, access_ttl, grant, None)
        refresh = RefreshToken(self.tokens.refresh(), family.id, family.account,
                               family.user_id, family.client_id, list(family.scopes),
                               None if refresh_ttl is None else self.now() + float(refresh_ttl),
                               extra=dict(family.extra))
        access.refresh = refresh.token
        self.refresh[refresh.token] = refresh
        family.live_refresh.add(refresh.token)
        return access, refresh

    # -- refreshing ----------------------------------------------------------------------

    def refresh_grant(self, value: str, policy: RefreshPolicy, *, access_ttl: float,
                      refresh_ttl: float | None, account: Any = ANY,
                      redirect_uri: str | None = None) -> tuple[AccessToken, RefreshToken]:
        """Exchange a refresh token (see the module docstring for the reasons)."""
        now = self.now()
        old = self.refresh.get(value)
        if old is None:
            family_id = self.dead.get(value)
            if family_id is None:
                raise Rejected("unknown")
            family = self.families[family_id]
            if account is not ANY and family.account != account:
                raise Rejected("wrong_account")
            if policy.revoke_family_on_reuse:
                self.revoke_family(family_id)
            raise Rejected("reused")
        family = self.families[old.family]
        if account is not ANY and family.account != account:
            raise Rejected("wrong_account")
        if old.expires_at is not None and old.expires_at <= now:
            raise Rejected("expired")
        if old.replaced_at is not None and now >= old.replaced_at + policy.grace_s:
            raise Rejected("replaced")
        if redirect_uri is not None and family.redirect_uri \
                and redirect_uri != family.redirect_uri:
            raise Rejected("redirect_mismatch")
        if policy.revoke_access_on_refresh:
            for key in [k for k, a in self.access.items()
                        if a.account == family.account and a.user_id == family.user_id]:
                self._drop_access(key)
        if not policy.rotate:
            return self._access(family, access_ttl, "refresh_token", value), old
        access, refresh = self._pair(family, access_ttl, refresh_ttl, "refresh_token")
        if policy.grace_s <= 0:
            self._retire(value)
        elif old.replaced_at is None:
            old.replaced_at = now
        return access, refresh

    # -- lookups and revocation -----------------------------------------------------------

    def bearer(self, token: str | None) -> AccessToken | None:
        """The access token (expired ones included), or None."""
        return self.access.get(token) if token else None

    def live_refresh(self, token: str | None) -> RefreshToken | None:
        """A refresh token that still works now (not expired, not retired)."""
        found = self.refresh.get(token) if token else None
        if found is None or (found.expires_at is not None and found.expires_at <= self.now()):
            return None
        return found

    def _retire(self, token: str) -> None:
        gone = self.refresh.pop(token, None)
        if gone is not None:
            self.dead[token] = gone.family
            family = self.families.get(gone.family)
            if family is not None:
                family.live_refresh.discard(token)

    def _drop_access(self, token: str) -> None:
        gone = self.access.pop(token, None)
        if gone is not None and gone.family is not None:
            family = self.families.get(gone.family)
            if family is not None:
                family.access_tokens.discard(token)

    def revoke_family(self, family_id: str) -> None:
        """Kill a family's live refresh tokens and all its access tokens."""
        family = self.families.get(family_id)
        if family is None:
            return
        for token in list(family.live_refresh):
            self._retire(token)
        for token in list(family.access_tokens):
            self.access.pop(token, None)
        family.access_tokens.clear()

    def revoke_refresh(self, token: str) -> bool:
        """Revoke one refresh token and the access tokens issued with it."""
        if token not in self.refresh:
            return False
        self._retire(token)
        for key in [k for k, a in self.access.items() if a.refresh == token]:
            self._drop_access(key)
        return True

    def revoke_account(self, account: Hashable, *, codes: bool = False) -> None:
        """Every token of ``account`` dies (and its codes with ``codes``)."""
        for family in [f for f in self.families.values() if f.account == account]:
            self.revoke_family(family.id)
        for key in [k for k, a in self.access.items() if a.account == account]:
            self._drop_access(key)
        if codes:
            for key in [k for k, c in self.codes.items() if c.account == account]:
                del self.codes[key]

    def prune(self) -> None:
        """Forget expired access tokens."""
        now = self.now()
        for key in [k for k, a in self.access.items() if a.expires_at <= now]:
            self._drop_access(key)
