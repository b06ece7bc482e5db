"""What every command needs: settings (with a running ``bridge run``'s),
a runtime whose database has the schema, tenants by slug, and one-line
explanations of the failures a user can cause.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import click
import redis
import requests
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, ProgrammingError

from bridge import runfile
from bridge.config import ROOT, Settings
from bridge.crypto import SecretBindingError
from bridge.db import NestedTransactionError
from bridge.errors import BridgeError, ConfigError
from bridge.registry import UnknownAdapter
from bridge.runtime import Runtime, set_runtime

__all__ = ["environment", "explain", "runtime", "settings", "tenant_id"]


def environment() -> Mapping[str, str]:
    """The process environment, completed by the settings of a ``bridge
    run`` that is running from the same var directory (its database, its
    embedded Redis, the sandbox it serves): what the shell sets wins."""
    env = dict(os.environ)
    var_dir = Path(env.get("BRIDGE_VAR_DIR") or ROOT / "var")
    running = runfile.live(var_dir)
    if running is not None:
        for key, value in running["env"].items():
            env.setdefault(str(key), str(value))
    return env


def settings() -> Settings:
    return Settings.from_env(environment())


def safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid DATABASE_URL>"


def runtime(*, schema: bool = True) -> Runtime:
    """The runtime for a command; with ``schema`` (the default) it refuses
    a database that was never migrated, naming the fix."""
    rt = Runtime(settings())
    set_runtime(rt)
    if schema:
        with rt.read_engine.connect() as conn:
            migrated = inspect(conn).has_table("alembic_version")
        if not migrated:
            raise click.ClickException(
                f"the database {safe_url(rt.settings.database_url)} has no bridge schema yet: "
                "run `bridge db upgrade` (or start `bridge run`, which does it)"
            )
    return rt


def tenant_id(rt: Runtime, slug: str) -> int:
    from bridge.admin import tenant_by_slug

    found = tenant_by_slug(rt, slug)
    if found is None:
        raise click.ClickException(f"no tenant {slug!r} (`bridge tenant list` shows them)")
    return found


def _database_problem(exc: DBAPIError) -> str:
    text = str(exc.orig or exc).lower()
    if "no such table" in text or "does not exist" in text and "relation" in text:
        return "the database has no bridge schema yet: run `bridge db upgrade`"
    if isinstance(exc, OperationalError):
        first = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc) else ""
        return f"cannot use the database: {first[:200]}"
    return f"database error: {type(exc.orig or exc).__name__}"


def explain(exc: BaseException) -> str | None:
    """One line for a failure the user can cause and fix; None for a bug."""
    if isinstance(exc, (OperationalError, ProgrammingError)):
        return _database_problem(exc)
    if isinstance(exc, redis.RedisError):
        return f"cannot reach Redis ({type(exc).__name__}): is it running? (REDIS_URL)"
    if isinstance(exc, requests.RequestException):
        host = getattr(getattr(exc, "request", None), "url", "") or ""
        where = requests.utils.urlparse(host).netloc if host else "the remote service"
        return f"cannot reach {where} ({type(exc).__name__})"
    if isinstance(exc, BridgeError):
        return exc.message or type(exc).__name__
    if isinstance(exc, SecretBindingError):
        return f"a stored secret cannot be read with the configured keys: {exc}"
    if isinstance(exc, NestedTransactionError):
        return None  # a bug: keep the traceback
    if isinstance(exc, (ConfigError, UnknownAdapter, LookupError, ValueError, NotImplementedError)):
        return str(exc).strip() or type(exc).__name__
    if isinstance(exc, (OSError, RuntimeError)):
        return str(exc) or type(exc).__name__
    return None
