"""The network guard (``tests/conftest.py`` installs ``bridge.http.GUARD``):
no test reaches the network through the bridge's HTTP seam. A call that is
neither mocked with ``responses`` nor to a local address (the sandboxes) is
refused, and fails the test that made it — naming the host — even when the
code under test swallowed the refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import responses

import bridge.http
from bridge.http import HttpClient
from tests.conftest import ROOT, UnmockedNetworkCall, network_guard, take_unmocked
from tests.support.servers import serve_wsgi

PUBLIC = "https://api.example.com"


def test_the_guard_is_installed_for_the_whole_run() -> None:
    assert bridge.http.GUARD is network_guard


def test_an_unmocked_call_to_a_public_host_is_refused_and_remembered() -> None:
    with pytest.raises(UnmockedNetworkCall, match=r"api\.example\.com") as refused:
        HttpClient(PUBLIC).request("GET", "/v1/things")
    # remembered: the hook wrapper fails the test that made the call
    calls = take_unmocked()
    assert len(calls) == 1 and "api.example.com" in calls[0]
    assert str(refused.value) == calls[0]


def test_a_download_from_a_public_host_is_refused_even_with_responses_active() -> None:
    """``responses`` mocks ``requests``, not the fetcher's urllib3."""
    fetcher = HttpClient(PUBLIC).fetcher(("files.example.com",), max_bytes=100)
    fetcher.resolver = lambda host, port: ["93.184.216.34"]  # a public address, no DNS
    with responses.RequestsMock(), pytest.raises(UnmockedNetworkCall, match="files.example.com"):
        fetcher.fetch("https://files.example.com/f/1.jpg")
    assert len(take_unmocked()) == 1


def test_mocked_and_local_calls_pass() -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{PUBLIC}/v1/things", json={"ok": True})
        assert HttpClient(PUBLIC).json("GET", "/v1/things") == {"ok": True}

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"local": true}']

    with serve_wsgi(app) as server:
        assert HttpClient(server.url).json("GET", "/x") == {"local": True}
        local = server.url.replace("127.0.0.1", "localhost")
        assert HttpClient(local).json("GET", "/x") == {"local": True}
    assert take_unmocked() == []


INNER_TEST = """
from bridge.http import HttpClient


def test_calls_out_and_swallows_the_refusal():
    try:
        HttpClient("https://api.example.com").request("POST", "/v1/things", json={})
    except Exception:
        pass  # whatever the code does with it, the call fails this test


def test_stays_home():
    assert True
"""


def test_a_test_that_calls_a_public_host_fails(tmp_path: Path) -> None:
    """A whole pytest run with the suite's conftest: the test that called
    out fails with the host in its report, the other one passes."""
    (tmp_path / "test_inner.py").write_text(INNER_TEST, encoding="utf-8")
    done = subprocess.run(  # noqa: S603 (our own interpreter and pytest)
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_inner.py"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_ADDOPTS": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "FAILED test_inner.py::test_calls_out_and_swallows_the_refusal" in out, out
    assert "api.example.com" in out, out
