"""Secrets at rest: Fernet (AES-CBC + HMAC) under rotatable keys.

``BRIDGE_SECRET_KEYS`` holds Fernet keys, newest first: the first encrypts,
all decrypt (``MultiFernet``); ``bridge keys rotate`` re-encrypts every row
under the first key, after which old keys can be dropped.

Each ciphertext is bound to where it lives (``tenant=<id>|field=<name>``):
the binding is inside the authenticated plaintext, so a row copied into
another tenant fails to decrypt (RELIABILITY.md 4.3's AAD idea, done with
Fernet's own authentication).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bridge.errors import ConfigError

__all__ = ["SecretBox", "SecretBindingError", "load_keys"]

log = logging.getLogger(__name__)


class SecretBindingError(Exception):
    """The ciphertext is valid but belongs to another row/tenant."""


def load_keys(keys: Sequence[str], var_dir: Path) -> list[str]:
    """The configured keys, or a development key kept in ``var/`` (0600)."""
    if keys:
        return list(keys)
    path = var_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(Fernet.generate_key().decode())
        log.warning("BRIDGE_SECRET_KEYS is not set: generated a development key in var/")
    return [path.read_text().strip()]


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("no encryption key: set BRIDGE_SECRET_KEYS")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "BRIDGE_SECRET_KEYS must be comma-separated Fernet keys "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())')"
            ) from exc

    def encrypt(self, value: Any, *, binding: str) -> str:
        plain = json.dumps({"b": binding, "v": value}, separators=(",", ":"))
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str, *, binding: str) -> Any:
        try:
            data = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:
            raise SecretBindingError("secret cannot be decrypted with the configured keys") from exc
        if data.get("b") != binding:
            raise SecretBindingError("secret belongs to another tenant or field")
        return data["v"]

    def rotate(self, token: str) -> str:
        """Re-encrypt under the newest key without exposing the plaintext."""
        return self._fernet.rotate(token.encode()).decode()


def binding(tenant_id: int, field: str) -> str:
    return f"tenant={tenant_id}|field={field}"
