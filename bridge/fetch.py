"""Downloading attachments without SSRF (RELIABILITY.md 4.5, OWASP SSRF
cheat sheet, ASVS 1.3.6 / 15.3.2 / 5.2.1).

A :class:`SafeFetcher` only fetches

* ``https`` URLs (``http`` only where the operator configured a plain-HTTP
  provider host, i.e. the local sandbox), with no credentials in the URL;
* from an allow-list of provider hosts (``api.telegram.org``, ...);
* whose every resolved address is public — no private, loopback,
  link-local, multicast, reserved or metadata address, IPv4-mapped IPv6
  included — unless the operator configured that very host as local;
* by connecting to the address it checked (a DNS rebinding between check and
  connect cannot redirect it), with TLS verified against the hostname;
* never following a redirect, within connect/read timeouts, and at most
  ``max_bytes`` (counted while streaming, not trusted from Content-Length).

Adapters get it through ``bridge.http`` (``HttpClient.fetcher``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import urllib3

from bridge.errors import PermanentError, RetryableError

__all__ = ["FetchRefused", "SafeFetcher", "is_public_address"]

Resolver = Callable[[str, int], Sequence[str]]


class FetchRefused(PermanentError):
    """The URL is not one the bridge may fetch (and it was not fetched)."""


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_private
        and not ip.is_unspecified
    )


def _default_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _host_matches(host: str, allowed: Collection[str]) -> bool:
    for pattern in allowed:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


@dataclass
class SafeFetcher:
    allowed_hosts: Collection[str]
    #: hosts the operator configured as local (the sandbox): their addresses
    #: may be private and they may use plain http
    local_hosts: Collection[str] = field(default_factory=tuple)
    max_bytes: int = 20 * 1024 * 1024  # Telegram: bots download at most 20 MB (FACTS §1)
    timeout: tuple[float, float] = (5.0, 15.0)
    resolver: Resolver = _default_resolver
    headers: dict[str, str] = field(default_factory=dict)

    def check(self, url: str) -> tuple[str, str, int, str, list[str]]:
        """Validate ``url``; return (scheme, host, port, path?query, addresses)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise FetchRefused("malformed URL") from exc
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower().rstrip(".")
        local = host in {h.lower() for h in self.local_hosts}
        if scheme not in ("https", "http") or (scheme == "http" and not local):
            raise FetchRefused(f"scheme {scheme or '(none)'!r} is not allowed: https only")
        if parts.username or parts.password:
            raise FetchRefused("credentials in the URL are not allowed")
        if not host or not (_host_matches(host, self.allowed_hosts) or local):
            raise FetchRefused("host is not one of the provider's")
        port = port or (443 if scheme == "https" else 80)
        try:
            addresses = list(self.resolver(host, port))
        except OSError as exc:
            raise RetryableError("cannot resolve the provider's host") from exc
        if not addresses:
            raise FetchRefused("host resolves to nothing")
        if not local and not all(is_public_address(a) for a in addresses):
            raise FetchRefused("host resolves to a private or reserved address")
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        return scheme, host, port, target, addresses

    def fetch(self, url: str) -> bytes:
        """The body, or ``FetchRefused`` / ``PermanentError`` / ``RetryableError``."""
        scheme, host, port, target, addresses = self.check(url)
        address = addresses[0]
        timeout = urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1])
        if scheme == "https":
            pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                address,
                port,
                timeout=timeout,
                retries=False,
                server_hostname=host,
                assert_hostname=host,
                cert_reqs="CERT_REQUIRED",
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
        try:
            response = pool.urlopen(
                "GET",
                target,
                headers={"Host": host, **self.headers},
                redirect=False,
                preload_content=False,
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise RetryableError(f"download failed: {type(exc).__name__}") from exc
        try:
            if 300 <= response.status < 400:
                raise FetchRefused("redirects are not followed")
            if response.status >= 400:
                cls = (
                    RetryableError
                    if response.status >= 500 or response.status == 429
                    else PermanentError
                )
                raise cls(f"download failed: HTTP {response.status}", status=response.status)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes:
                raise FetchRefused(f"file larger than {self.max_bytes} bytes")
            chunks, total = [], 0
            try:
                for chunk in response.stream(64 * 1024):
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise FetchRefused(f"file larger than {self.max_bytes} bytes")
                    chunks.append(chunk)
            except urllib3.exceptions.HTTPError as exc:
                raise RetryableError(f"download failed: {type(exc).__name__}") from exc
            return b"".join(chunks)
        finally:
            response.release_conn()
            pool.close()
