"""The one HTTP seam every adapter talks through.

``HttpClient`` owns the ``requests`` session, timeouts, the User-Agent, the
shared rate limiter and the mapping from transport failures and status codes
to the exception tree (``bridge.errors``). Adapters subclass nothing here:
they call ``client.request(...)`` and, where the vendor has its own error
envelope, pass an ``error_mapper`` that refines the default mapping.

Unit tests mock this seam with ``responses``; integration tests point
``base_url`` at the sandbox. :data:`GUARD` is the test suite's hook: every
request and every download is shown to it first.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis
import requests

from bridge import crm_calls, metrics
from bridge.errors import (
    AmbiguousError,
    AuthError,
    BridgeError,
    NotFoundError,
    PermanentError,
    RetryableError,
)
from bridge.fetch import SafeFetcher
from bridge.model import Rate, RateLimiter

__all__ = ["GUARD", "Guard", "HttpClient", "Limit", "Session", "parse_retry_after"]

USER_AGENT = "crm-bridge/0.1 (+https://github.com/crm-bridge)"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

ErrorMapper = Callable[[requests.Response], BridgeError | None]


class Guard(Protocol):
    """Shown every outbound URL first; raises to refuse the call."""

    def __call__(self, url: str, *, download: bool = False) -> None: ...


#: A test seam, None in production. When set, it is called with the URL
#: before every request an :class:`HttpClient` sends and before every
#: download its fetcher makes (``download=True``: plain urllib3, which no
#: ``responses`` mock answers), and raises to refuse the call. The test
#: suite installs one (``tests/conftest.py``) that fails a test whose call
#: is neither mocked nor local.
GUARD: Guard | None = None


@dataclass(frozen=True)
class Limit:
    """Which shared bucket a call draws from."""

    key: str
    rate: Rate
    cost: float = 1.0


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


#: (scheme, host) -> what the environment says for it (proxies, CA bundle)
_ENVIRONMENT: dict[tuple[str, str], dict[str, Any]] = {}
_ENVIRONMENT_HOSTS = 256


class Session(requests.Session):
    """A ``requests`` session that reads the environment's proxy and CA
    bundle settings once per host, not once per request (``requests`` scans
    every environment variable for ``*_proxy`` on each call: a fifth of a
    lone message's HTTP call in the worker's profile). The environment of a
    running process does not change; a session given its own proxies,
    ``verify`` or ``cert`` reads them as ``requests`` does."""

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        plain = not (proxies or self.proxies) and verify is None and cert is None
        if not plain or not self.trust_env or self.verify is not True or self.cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(str(url))
        key = (parts.scheme, parts.netloc)
        found = _ENVIRONMENT.get(key)
        if found is None:
            found = super().merge_environment_settings(url, {}, None, None, None)
            _ENVIRONMENT[key] = found
            while len(_ENVIRONMENT) > _ENVIRONMENT_HOSTS:
                _ENVIRONMENT.pop(next(iter(_ENVIRONMENT)), None)
        return {
            "proxies": dict(found["proxies"]),
            "stream": self.stream if stream is None else stream,
            "verify": found["verify"],
            "cert": found["cert"],
        }


class HttpClient:
    """A thin ``requests`` wrapper with one status -> exception mapping."""

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: tuple[float, float] = (5.0, 15.0),
        limiter: RateLimiter | None = None,
        session: requests.Session | None = None,
        user_agent: str = USER_AGENT,
        counters: redis.Redis | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.limiter = limiter
        self.session = session or Session()
        self.session.headers["User-Agent"] = user_agent
        #: how many HTTP requests went out (benchmarks count CRM calls with it)
        self.calls = 0
        #: the CRM kind and tenant id its calls are counted under
        #: (``bridge.metrics``, in ``counters``); None: not counted
        self.metered: tuple[str, int | None] | None = None
        #: the Redis that ``bridge.metrics`` keeps the counters in
        self.counters = counters

    def url(self, path: str) -> str:
        """``path`` under the base URL, or ``path`` itself when it is an
        absolute http(s) URL (a scheme is case-insensitive, RFC 3986 3.1:
        ``HTTPS://`` is absolute too)."""
        if path[:8].lower().startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        limit: Limit | None = None,
        error_mapper: ErrorMapper | None = None,
        ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; return the response or raise from the tree.

        ``ok`` lists extra statuses to return instead of raising (e.g. 404 for
        a lookup). Redirects are never followed.
        """
        method = method.upper()
        if limit is not None and self.limiter is not None:
            self.limiter.acquire(limit.key, limit.rate, limit.cost)
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", False)
        url = self.url(path)
        if GUARD is not None:
            GUARD(url)
        self.calls += 1
        try:
            response = self._send(method, url, **kwargs)
        except requests.ConnectTimeout as exc:
            raise RetryableError("connect timeout") from exc
        except requests.ConnectionError as exc:
            # A reset may come after the far side read the whole request.
            if method in IDEMPOTENT_METHODS:
                raise RetryableError("connection error") from exc
            raise AmbiguousError("connection error after send") from exc
        except requests.Timeout as exc:
            if method in IDEMPOTENT_METHODS:
                raise RetryableError("read timeout") from exc
            raise AmbiguousError("read timeout after send") from exc
        except requests.RequestException as exc:
            raise AmbiguousError(f"transport error: {type(exc).__name__}") from exc
        if response.status_code < 300 or response.status_code in ok:
            return response
        error = error_mapper(response) if error_mapper else None
        if error is None:
            error = self.default_error(method, response)
        if isinstance(error, RetryableError) and response.status_code == 429:
            # refused at the door (RFC 6585), whatever the vendor's mapper
            # says: a retry need not look up what it would have written
            error.nothing_written = True
        if (
            isinstance(error, RetryableError)
            and response.status_code == 429
            and limit is not None
            and self.limiter is not None
        ):
            self.limiter.penalise(limit.key, error.retry_after or 1.0)
        raise error

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """The session's request, counted (and noted for the conversation's
        trace, :mod:`bridge.crm_calls`) when the client is metered."""
        started, clock = crm_calls.now(), time.perf_counter()
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.RequestException:
            self._count(method, url, None, started, clock)
            raise
        self._count(method, url, response.status_code, started, clock)
        return response

    def _count(
        self, method: str, url: str, status: int | None, started: float, clock: float
    ) -> None:
        if self.metered is None:
            return
        crm_calls.note(method, url, status, started, (time.perf_counter() - clock) * 1000)
        if self.counters is not None:
            metrics.crm_call(self.counters, *self.metered, status)

    @staticmethod
    def default_error(method: str, response: requests.Response) -> BridgeError:
        """Map a non-2xx answer to the exception tree."""
        status = response.status_code
        # No URL in the message: some vendors put the token in the path
        # (Telegram's /bot<token>/...), and this text lands in logs and the DB.
        detail = f"HTTP {status} on {method}"
        if status == 429:
            error = RetryableError(
                detail,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                status=status,
            )
            error.nothing_written = True  # refused at the door (RFC 6585)
            return error
        if status >= 500:
            # A 5xx on a write may come after the commit (proxy timeout):
            # treat it as ambiguous so the retry looks the entry up first.
            cls = RetryableError if method in IDEMPOTENT_METHODS else AmbiguousError
            return cls(
                detail,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                status=status,
            )
        if status == 401:
            return AuthError(detail, status=status)
        if status == 404:
            return NotFoundError(detail, status=status)
        if 300 <= status < 400:
            return PermanentError(f"{detail}: unexpected redirect", status=status)
        return PermanentError(detail, status=status)

    def fetcher(self, allowed_hosts: tuple[str, ...], *, max_bytes: int) -> SafeFetcher:
        """An SSRF-safe downloader for the provider's file hosts. Only when the
        operator pointed this client at a local host (the sandbox) may that
        host be private and plain-http."""
        base_host = (urlsplit(self.base_url).hostname or "").lower()
        local = (base_host,) if base_host in ("localhost", "127.0.0.1", "::1") else ()
        return _GuardedFetcher(
            allowed_hosts=allowed_hosts,
            local_hosts=local,
            max_bytes=max_bytes,
            timeout=self.timeout,
        )

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` and decode a JSON body (``None`` for an empty body)."""
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise AmbiguousError(
                f"HTTP {response.status_code}: body is not JSON", status=response.status_code
            ) from exc


class _GuardedFetcher(SafeFetcher):
    """A :class:`SafeFetcher` that shows :data:`GUARD` what it is about to
    download (only URLs it would fetch: a refused one never connects)."""

    def fetch(self, url: str) -> bytes:
        if GUARD is not None:
            self.check(url)
            GUARD(url, download=True)
        return super().fetch(url)


def merge_headers(*parts: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in parts:
        if part:
            out.update(part)
    return out
