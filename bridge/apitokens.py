"""Tenants' tokens for the bridge's own API (``/api/v1``).

A token is 256 bits from the CSPRNG, shown once when it is made; only its
SHA-256 is stored, so a database dump holds nothing that authenticates.
A request names its tenant by the token alone (``Authorization: Bearer
<token>``): every ``/api/v1`` call reads and writes that tenant's rows only.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from bridge.db import rowcount
from bridge.model import utcnow
from bridge.tables import ApiToken

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["PREFIX", "issue", "revoke", "tenant_of"]

#: tokens start with it (a secret scanner can tell what leaked)
PREFIX = "brt_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(runtime: Runtime, tenant_id: int, name: str = "") -> str:
    """A new token for the tenant (the only time it is seen in clear)."""
    token = PREFIX + secrets.token_urlsafe(32)
    with runtime.transaction() as session:
        session.add(ApiToken(tenant_id=tenant_id, token_sha256=_digest(token), name=name[:100]))
    return token


def revoke(runtime: Runtime, tenant_id: int, token: str) -> bool:
    """Stop a token working; False when the tenant has no such live token."""
    with runtime.transaction() as session:
        done = session.execute(
            update(ApiToken)
            .where(
                ApiToken.tenant_id == tenant_id,
                ApiToken.token_sha256 == _digest(token),
                ApiToken.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
    return bool(rowcount(done))


def tenant_of(runtime: Runtime, header: str | None) -> int | None:
    """The tenant an ``Authorization: Bearer <token>`` header names, or None.
    The lookup is by the token's digest (a preimage, not a comparison of
    secrets: nothing to time)."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header[len("Bearer ") :].strip()
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    with runtime.read_session() as session:
        tenant = session.scalar(
            select(ApiToken.tenant_id).where(
                ApiToken.token_sha256 == _digest(token), ApiToken.revoked_at.is_(None)
            )
        )
    return int(tenant) if tenant is not None else None
