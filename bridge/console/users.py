"""The console's users and its audit log, without the web: what the pages
(:mod:`bridge.console.pages.access`) and ``bridge admin`` share.

* Passwords: Argon2id (argon2-cffi's ``PasswordHasher`` defaults, RFC 9106's
  low-memory profile); a hash made under other parameters is replaced at the
  next successful sign-in. An unknown e-mail costs the same verification as
  a known one.
* The second factor: an RFC 6238 TOTP secret per user, encrypted at rest
  with the bridge's keys (:mod:`bridge.crypto`, bound to the user's row like
  a tenant's credentials are to the tenant's); a code is checked with one
  step of clock drift either way.
* Roles, lowest first: ``viewer`` (reads), ``admin`` (changes its tenant),
  ``owner`` (every tenant; belongs to none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pyotp.exceptions import OTPVerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.model import utcnow
from bridge.runtime import Runtime
from bridge.tables import ConsoleAudit, ConsoleUser, Tenant

__all__ = [
    "LANGUAGES",
    "MIN_PASSWORD",
    "ROLES",
    "TotpCheck",
    "UserError",
    "check_password",
    "create_user",
    "hash_password",
    "new_totp",
    "normalise_email",
    "rank",
    "record",
    "remove_totp",
    "rotate_totp_secrets",
    "set_disabled",
    "totp_check",
    "user_by_email",
    "user_view",
]

#: lowest first
ROLES = ("viewer", "admin", "owner")
LANGUAGES = ("en", "ru")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
#: the name an authenticator app shows beside the account
ISSUER = "CRM bridge"

_hasher = PasswordHasher()


class UserError(ValueError):
    """A console user that cannot be made or changed as asked (the message
    says why, in English; the pages translate the known ones)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        #: the i18n key of the message (``users.error.<code>``)
        self.code = code


def rank(role: str) -> int:
    """A role's place in :data:`ROLES` (-1 for an unknown one)."""
    return ROLES.index(role) if role in ROLES else -1


def normalise_email(email: str) -> str:
    return email.strip().lower()


def hash_password(password: str) -> str:
    """The Argon2id hash of ``password`` (its salt and parameters inside)."""
    return _hasher.hash(password)


@cache
def _dummy_hash() -> str:
    return _hasher.hash("not a password of anyone")


def check_password(user: ConsoleUser | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s; a hash under outdated parameters
    is replaced (in the caller's transaction). ``None`` (no such user) is
    verified against a dummy hash, so it takes as long and is false."""
    if user is None:
        try:
            _hasher.verify(_dummy_hash(), password)
        except VerificationError:
            pass
        return False
    try:
        _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return True


def _check_new(email: str, password: str, role: str, tenant_id: int | None, language: str) -> None:
    if "@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@"):
        raise UserError(f"not an e-mail address: {email!r}", "email")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r} (one of {', '.join(ROLES)})", "role")
    if role == "owner" and tenant_id is not None:
        raise UserError("an owner sees every tenant and belongs to none", "owner_tenant")
    if role != "owner" and tenant_id is None:
        raise UserError(f"a user with the role {role} needs a tenant", "tenant")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(
            f"the password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters", "password"
        )
    if language not in LANGUAGES:
        raise UserError(f"unknown language {language!r} (one of {', '.join(LANGUAGES)})", "lang")


def user_by_email(session: Session, email: str) -> ConsoleUser | None:
    return session.scalar(
        select(ConsoleUser).where(ConsoleUser.email == normalise_email(email)[:320])
    )


def create_user(
    session: Session,
    *,
    email: str,
    password: str,
    role: str,
    tenant_id: int | None,
    language: str = "en",
) -> ConsoleUser:
    """A new console user (flushed: it has its id). ``UserError`` for what
    the rules refuse, ``LookupError`` for a tenant that does not exist."""
    email = normalise_email(email)
    _check_new(email, password, role, tenant_id, language)
    if tenant_id is not None and session.get(Tenant, tenant_id) is None:
        raise LookupError(f"no tenant with id {tenant_id}")
    if user_by_email(session, email) is not None:
        raise UserError(f"a console user {email} exists already", "exists")
    user = ConsoleUser(
        email=email,
        password_hash=hash_password(password),
        role=role,
        tenant_id=tenant_id,
        language=language,
        disabled=False,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    return user


def user_view(user: ConsoleUser) -> dict[str, Any]:
    """What the audit log keeps of a user (never the hash or the secret)."""
    return {
        "email": user.email,
        "role": user.role,
        "tenant_id": user.tenant_id,
        "language": user.language,
        "disabled": user.disabled,
        "totp": user.totp_secret is not None,
    }


def set_disabled(user: ConsoleUser, disabled: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Disable or enable ``user``: what it was and what it is now."""
    before = user_view(user)
    user.disabled = disabled
    return before, user_view(user)


# -- the second factor -----------------------------------------------------------------------


def _totp_binding(user_id: int) -> str:
    return f"console_user={user_id}|field=totp"


def new_totp(rt: Runtime, user: ConsoleUser) -> str:
    """A new TOTP secret for ``user`` (kept encrypted; the old one stops
    working): its ``otpauth://`` URI for an authenticator app."""
    secret = pyotp.random_base32()
    user.totp_secret = rt.secrets.encrypt(secret, binding=_totp_binding(user.id))
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def remove_totp(user: ConsoleUser) -> None:
    user.totp_secret = None


@dataclass(frozen=True)
class TotpCheck:
    """A code that matched: the 30-second step it belongs to (a step is
    accepted once: the caller remembers it)."""

    step: int


def totp_check(rt: Runtime, user: ConsoleUser, code: str) -> TotpCheck | None:
    """Whether ``code`` is the user's current TOTP code (one step of drift
    either way: ``valid_window=1``); None when it is not or the user has none."""
    if user.totp_secret is None:
        return None
    code = "".join(code.split())
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(rt.secrets.decrypt(user.totp_secret, binding=_totp_binding(user.id)))
    try:
        step = totp.verify_and_get_timecode(code, for_time=utcnow(), valid_window=1)
    except OTPVerificationError:
        return None
    return TotpCheck(step=step)


def rotate_totp_secrets(rt: Runtime) -> int:
    """Re-encrypt every stored TOTP secret under the newest key (the
    console users' part of ``bridge keys rotate``)."""
    n = 0
    with rt.transaction() as session:
        for user in session.scalars(
            select(ConsoleUser).where(ConsoleUser.totp_secret.is_not(None))
        ):
            assert user.totp_secret is not None  # selected only where it is set
            user.totp_secret = rt.secrets.rotate(user.totp_secret)
            n += 1
    return n


# -- the audit log ---------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` as the JSON column will give it back (dates as text)."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=str))


def record(
    session: Session,
    *,
    user_id: int | None,
    user_email: str,
    tenant_id: int | None,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    remote_addr: str | None = None,
) -> ConsoleAudit:
    """One audit row in the caller's transaction."""
    row = ConsoleAudit(
        user_id=user_id,
        user_email=user_email[:320],
        tenant_id=tenant_id,
        action=action[:64],
        target=target[:200],
        before=_jsonable(before),
        after=_jsonable(after),
        at=utcnow(),
        remote_addr=(remote_addr or None) and remote_addr[:64],
    )
    session.add(row)
    return row
