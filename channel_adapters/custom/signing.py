"""Standard Webhooks signatures, both ways, through the standard's own
Python library (``standardwebhooks``): the system on the other side can
verify and sign with the same code in its language.

Spec (standardwebhooks.com, "Signature scheme"): the signed content is
``<webhook-id>.<webhook-timestamp>.<raw body>``; the key is the secret after
``whsec_``, base64-decoded; ``webhook-signature`` holds space-separated
``v1,<base64 HMAC-SHA256>`` entries (several during a key rotation), any one
matching is enough, compared in constant time; a timestamp more than
5 minutes from the receiver's clock is refused (replay protection).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping

from standardwebhooks import Webhook, WebhookVerificationError

from bridge.errors import SignatureError

__all__ = ["HEADERS", "SECRET_PREFIX", "check_secret", "sign", "verify"]

SECRET_PREFIX = "whsec_"  # noqa: S105 (the spec's prefix, not a secret)
ID, TIMESTAMP, SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"
HEADERS = (ID, TIMESTAMP, SIGNATURE)
#: the spec's advice: "between 24 bytes (192 bits) and 64 bytes (512 bits)"
KEY_BYTES = (24, 64)
#: the spec's own bound for a message id; longer is junk
MAX_ID = 256


def check_secret(secret: str) -> str:
    """``secret`` if it is ``whsec_`` and the base64 of 24-64 bytes, else
    ``ValueError`` saying how to make one."""
    body = secret.strip()
    hint = "make one with: echo whsec_$(openssl rand -base64 32)"
    if not body.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret starts with {SECRET_PREFIX}; {hint}")
    try:
        key = base64.b64decode(body[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {SECRET_PREFIX} must be base64; {hint}") from None
    low, high = KEY_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"the secret must be {low}-{high} random bytes (got {len(key)}); {hint}")
    return body


def sign(secret: str, msg_id: str, body: bytes, now: dt.datetime) -> dict[str, str]:
    """The three headers for ``body`` sent as ``msg_id`` at ``now``."""
    webhook = Webhook(secret)
    return {
        ID: msg_id,
        TIMESTAMP: str(int(now.timestamp())),
        SIGNATURE: webhook.sign(msg_id, now, body),
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> str:
    """The ``webhook-id`` of a request whose signature and timestamp check
    out; :class:`SignatureError` saying what is wrong otherwise (and nothing
    else, whatever the input)."""
    if not isinstance(secret, str) or not secret:
        raise SignatureError("no signing secret configured for this custom channel account")
    given = {name: headers.get(name) for name in HEADERS}
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise SignatureError(f"missing {', '.join(missing)} header (Standard Webhooks)")
    values: dict[str, str] = {}
    for name, value in given.items():
        if not isinstance(value, str) or not value.isascii() or not value.isprintable():
            raise SignatureError(f"{name} header is not printable ASCII")
        values[name] = value
    if len(values[ID]) > MAX_ID:
        raise SignatureError(f"{ID} header longer than {MAX_ID} characters")
    try:
        Webhook(secret).verify(body, values, json_parse=False)
    except WebhookVerificationError as exc:
        # "Message timestamp too old/new", "No matching signature found", ...
        raise SignatureError(f"signature refused: {exc}") from None
    except Exception:  # noqa: BLE001 (a hostile header must not become a 500)
        raise SignatureError("signature headers unreadable") from None
    return values[ID]
