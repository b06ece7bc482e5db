"""The HTTP seam itself (``bridge.http``): absolute URLs, the status ->
error mapping, ``Retry-After``."""

from __future__ import annotations

import email.utils
import time

import pytest
import responses

from bridge.errors import AmbiguousError, AuthError, NotFoundError, PermanentError, RetryableError
from bridge.http import HttpClient, parse_retry_after


@pytest.mark.parametrize(
    ("path", "url"),
    [
        ("/v1/x", "https://api.example.com/base/v1/x"),
        ("v1/x", "https://api.example.com/base/v1/x"),
        ("https://other.example.com/y", "https://other.example.com/y"),
        ("httPs://other.example.com/y", "httPs://other.example.com/y"),  # RFC 3986 3.1
        ("HTTP://other.example.com/y", "HTTP://other.example.com/y"),
    ],
)
def test_a_path_or_an_absolute_url_of_any_case(path: str, url: str) -> None:
    assert HttpClient("https://api.example.com/base/").url(path) == url


@pytest.mark.parametrize(
    ("method", "status", "error"),
    [
        ("POST", 429, RetryableError),
        ("GET", 503, RetryableError),
        ("POST", 503, AmbiguousError),  # a write may have landed before the 5xx
        ("POST", 401, AuthError),
        ("GET", 404, NotFoundError),
        ("POST", 400, PermanentError),
        ("GET", 302, PermanentError),
    ],
)
@responses.activate
def test_each_status_maps_onto_the_error_tree(method: str, status: int, error: type) -> None:
    responses.add(method, "https://api.example.com/x", status=status)
    with pytest.raises(error) as raised:
        HttpClient("https://api.example.com").request(method, "/x")
    assert type(raised.value) is error
    assert raised.value.status == status
    assert "api.example.com" not in str(raised.value)  # no URL: some carry a token


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
