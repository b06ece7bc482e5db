"""HubSpot request signatures (FACTS.md 3.6), the signer side of the sandbox.

* v1: ``sha256_hex(client_secret + body)``
* v2: ``sha256_hex(client_secret + method + uri + body)``
* v3: ``base64(hmac_sha256(client_secret, method + uri + body + timestamp))``,
  sent as ``X-HubSpot-Signature-v3`` with ``X-HubSpot-Request-Timestamp`` (ms).
  Receivers reject timestamps older than 300 s.

Checked against HubSpot's official vectors (``spec/signature_test_vectors.json``,
from HubSpot/hubspot-api-python tests) in the sandbox tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

__all__ = ["sign_v1", "sign_v2", "sign_v3", "v3_headers", "verify_v3", "MAX_TIMESTAMP_AGE_S"]

MAX_TIMESTAMP_AGE_S = 300  # sdk: hubspot/utils/signature.py MAX_ALLOWED_TIMESTAMP


def sign_v1(client_secret: str, body: str) -> str:
    """v1 signature (hex)."""
    return hashlib.sha256((client_secret + body).encode("utf-8")).hexdigest()


def sign_v2(client_secret: str, method: str, uri: str, body: str) -> str:
    """v2 signature (hex)."""
    return hashlib.sha256((client_secret + method + uri + body).encode("utf-8")).hexdigest()


def sign_v3(client_secret: str, method: str, uri: str, body: str, timestamp: str) -> str:
    """v3 signature (base64 HMAC-SHA256)."""
    message = (method + uri + body + timestamp).encode("utf-8")
    digest = hmac.new(client_secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def v3_headers(client_secret: str, method: str, uri: str, body: str,
               now_ms: int | None = None) -> dict[str, str]:
    """The headers HubSpot adds to a signed v3 request."""
    timestamp = str(now_ms if now_ms is not None else int(time.time() * 1000))
    return {
        "X-HubSpot-Signature-v3": sign_v3(client_secret, method, uri, body, timestamp),
        "X-HubSpot-Request-Timestamp": timestamp,
    }


def verify_v3(client_secret: str, method: str, uri: str, body: str, signature: str,
              timestamp: str, now_ms: int | None = None) -> bool:
    """Receiver-side check: constant-time compare plus the 300 s window."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    try:
        if now - int(timestamp) > MAX_TIMESTAMP_AGE_S * 1000:
            return False
    except ValueError:
        return False
    expected = sign_v3(client_secret, method, uri, body, timestamp)
    return hmac.compare_digest(expected, signature)
