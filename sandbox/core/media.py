"""Fetching a file a CRM was handed by URL, as the vendor does.

amoCRM's chats take ``media`` by URL and Bitrix24's Open Lines ``files``
by ``url`` ("The url link must be accessible from Bitrix24",
imconnector-send-messages.md): the vendor downloads the file into its own
storage. The sandboxes do the same, at the moment the message arrives, and
keep what they got (status, size, SHA-256) on the message, so a test sees
whether the file really reached the CRM. A failed download never fails the
API call (the vendor shows a broken file instead).
"""

from __future__ import annotations

import hashlib
from typing import Any

import requests

__all__ = ["fetch"]

#: the most a sandbox downloads of one file
MAX_BYTES = 50_000_000


def fetch(url: Any, *, timeout: float = 10.0) -> dict[str, Any]:
    """``{"status", "size", "sha256", "content_type"}`` of ``url``, or
    ``{"error": ...}`` when it could not be downloaded."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return {"error": "not an http(s) url"}
    try:
        with requests.get(url, timeout=timeout, stream=True) as response:
            digest, size = hashlib.sha256(), 0
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > MAX_BYTES:
                    return {"status": response.status_code, "error": "too large"}
                digest.update(chunk)
            return {
                "status": response.status_code,
                "size": size,
                "sha256": digest.hexdigest(),
                "content_type": response.headers.get("Content-Type", ""),
            }
    except requests.RequestException as exc:
        return {"error": type(exc).__name__}
