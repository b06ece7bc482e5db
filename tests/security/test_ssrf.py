"""Attachment downloads are SSRF-safe (RELIABILITY.md §5 S6): every URL in the
table is refused before any connection is made; redirects are not followed;
size caps and timeouts hold."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from flask import Flask, Response, redirect

from bridge.errors import RetryableError
from bridge.fetch import FetchRefused, SafeFetcher, is_public_address
from bridge.http import HttpClient
from tests.support.servers import serve_wsgi

PROVIDER = ("api.telegram.org", "*.cdn.example")
PUBLIC = "149.154.167.220"  # api.telegram.org's documented address block


def resolver_for(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        return table.get(host, [PUBLIC])

    return resolve


class Boom(AssertionError):
    pass


def no_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket connection fails the test: refusals happen before connecting."""

    def connect(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise Boom("a connection was attempted")

    monkeypatch.setattr(socket, "create_connection", connect)


BLOCKED_ADDRESSES = [  # addresses under test; nothing binds to them
    "127.0.0.1",
    "127.1.2.3",
    "::1",
    "0.0.0.0",  # noqa: S104
    "169.254.169.254",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
]


@pytest.mark.parametrize("address", BLOCKED_ADDRESSES)
def test_private_reserved_and_metadata_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["149.154.167.220", "8.8.8.8", "2001:4860:4860::8888"])
def test_public_addresses_are(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize("address", BLOCKED_ADDRESSES)
def test_a_provider_host_resolving_to_a_private_address_is_refused(address, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    no_connect(monkeypatch)
    fetcher = SafeFetcher(PROVIDER, resolver=resolver_for({"api.telegram.org": [address]}))
    with pytest.raises(FetchRefused):
        fetcher.fetch("https://api.telegram.org/file/bot1:x/photo.jpg")


def test_one_private_address_among_public_ones_is_enough_to_refuse(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    no_connect(monkeypatch)
    table = {"api.telegram.org": [PUBLIC, "10.0.0.7"]}
    with pytest.raises(FetchRefused):
        SafeFetcher(PROVIDER, resolver=resolver_for(table)).fetch("https://api.telegram.org/f")


@pytest.mark.parametrize(
    "url",
    [
        "http://api.telegram.org/file/x",  # not https
        "file:///etc/passwd",
        "gopher://api.telegram.org:70/_x",
        "ftp://api.telegram.org/x",
        "https://evil.example/x",  # not a provider host
        "https://api.telegram.org.evil.example/x",
        "https://evilapi.telegram.org/x",
        "https://cdn.example/x",  # *.cdn.example does not include the apex
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "https://2130706433/x",  # 127.0.0.1 as a decimal
        "https://0177.0.0.1/x",  # octal
        "https://0x7f.0.0.1/x",  # hex
        "https://169.254.169.254/latest/meta-data/",
        "https://user:pass@api.telegram.org/x",
        "https://api.telegram.org:notaport/x",
        "",
        "//api.telegram.org/x",
    ],
)
def test_urls_outside_the_rules_are_refused_before_connecting(url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    no_connect(monkeypatch)
    with pytest.raises(FetchRefused):
        SafeFetcher(PROVIDER, resolver=resolver_for({})).fetch(url)


def test_wildcard_subdomains_of_an_allowed_suffix_pass_the_check() -> None:
    fetcher = SafeFetcher(PROVIDER, resolver=resolver_for({}))
    scheme, host, port, target, addresses = fetcher.check("https://a.cdn.example/f?x=1")
    assert (scheme, host, port, target, addresses) == (
        "https",
        "a.cdn.example",
        443,
        "/f?x=1",
        [PUBLIC],
    )


# -- against a real local server (allowed only because it is configured as local) ------------


@pytest.fixture
def files() -> Iterator[str]:
    app = Flask("files")

    @app.get("/small")
    def small():  # type: ignore[no-untyped-def]
        return b"x" * 1000

    @app.get("/big")
    def big():  # type: ignore[no-untyped-def]
        return Response((b"y" * 65536 for _ in range(40)), mimetype="application/octet-stream")

    @app.get("/lying")
    def lying():  # type: ignore[no-untyped-def]
        # declares far more than the cap (and sends less): refused on the header
        return Response((b"z" for _ in range(100)), headers={"Content-Length": "99999999"})

    @app.get("/redirect")
    def redirected():  # type: ignore[no-untyped-def]
        return redirect("http://169.254.169.254/latest/meta-data/")

    @app.get("/slow")
    def slow():  # type: ignore[no-untyped-def]
        time.sleep(3)
        return b"late"

    with serve_wsgi(app) as server:
        yield server.url


def _local(base: str, **kwargs) -> SafeFetcher:  # type: ignore[no-untyped-def]
    return HttpClient(base, timeout=(1.0, 1.0)).fetcher(("nowhere.example",), **kwargs)


def test_a_configured_local_provider_host_can_be_fetched(files: str) -> None:
    assert _local(files, max_bytes=10_000).fetch(f"{files}/small") == b"x" * 1000


def test_size_cap_holds_while_streaming(files: str) -> None:
    with pytest.raises(FetchRefused):
        _local(files, max_bytes=100_000).fetch(f"{files}/big")


def test_a_lying_content_length_is_refused_early(files: str) -> None:
    with pytest.raises(FetchRefused):
        _local(files, max_bytes=1000).fetch(f"{files}/lying")


def test_redirects_are_not_followed(files: str) -> None:
    with pytest.raises(FetchRefused):
        _local(files, max_bytes=10_000).fetch(f"{files}/redirect")


def test_read_timeout_holds(files: str) -> None:
    started = time.monotonic()
    with pytest.raises(RetryableError):
        _local(files, max_bytes=10_000).fetch(f"{files}/slow")
    assert time.monotonic() - started < 2.9  # gave up before the server answered


def test_a_non_local_configuration_refuses_the_same_local_server(files: str) -> None:
    fetcher = HttpClient("https://api.telegram.org", timeout=(1.0, 1.0)).fetcher(
        ("api.telegram.org",), max_bytes=10_000
    )
    with pytest.raises(FetchRefused):
        fetcher.fetch(f"{files}/small")


def test_telegram_attachments_download_only_from_the_bot_api_host() -> None:
    """getFile + the file host the adapter is configured for (the sandbox
    here, a configured local host); the token never shows in an error."""
    import base64

    import requests

    from bridge.errors import PermanentError
    from bridge.model import Attachment, ChannelAccountInfo, MessageKind
    from channel_adapters.telegram import TelegramAdapter
    from sandbox.telegram import DEMO_BOT_TOKEN, create_app

    picture = b"\x89PNG\r\n\x1a\n" + b"p" * 2048
    with serve_wsgi(create_app()) as sandbox:
        hook = Flask("hook")
        hook.post("/h")(lambda: {"ok": True})
        with serve_wsgi(hook) as receiver:
            requests.post(
                f"{sandbox.url}/bot{DEMO_BOT_TOKEN}/setWebhook",
                json={"url": f"{receiver.url}/h"},
                timeout=10,
            ).raise_for_status()
            requests.post(
                f"{sandbox.url}/_deliver",
                json={
                    "from": {"id": 42, "first_name": "Ann"},
                    "photo": {"content_base64": base64.b64encode(picture).decode()},
                },
                timeout=10,
            ).raise_for_status()
        deliveries = requests.get(f"{sandbox.url}/_deliveries", timeout=10).json()["deliveries"]
        sizes = deliveries[-1]["update"]["message"]["photo"]
        account = ChannelAccountInfo(
            1,
            "telegram",
            "k",
            {"bot_token": DEMO_BOT_TOKEN, "secret_token": "s"},
            api_base=sandbox.url,
        )
        adapter = TelegramAdapter(account)
        photo = Attachment(MessageKind.PHOTO, file_ref=sizes[-1]["file_id"])
        assert adapter.download(photo) == picture
        with pytest.raises(PermanentError) as refused:
            adapter.download(Attachment(MessageKind.PHOTO, file_ref="no-such-file"))
        assert DEMO_BOT_TOKEN not in str(refused.value)
