"""In-memory state of the sandbox amoCRM, guarded by one re-entrant lock.

Everything CRM-side lives in an :class:`Account` (one amoCRM account, one
subdomain); a token works on its own account only and another account's ids
are simply not found there (FACTS.md 1.1: requests go to the account's own
host). Entity ids come from global counters, so they never repeat across
accounts. OAuth state (codes, token families: :mod:`sandbox.core.oauth`) and
the Chats API state (connections, chats, messages) sit next to the accounts;
time comes from the app's clock (:mod:`sandbox.core.clock`).

Entities are plain dicts in the v4 model's field names (FACTS 1.5/1.7/1.9/1.10)
plus a few internal keys (``contacts`` links on leads, ``tags`` ids).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..core.clock import Clock
from ..core.oauth import AccessToken, TokenFormat, TokenServer
from ..core.webhooks import DeliveryLog
from .config import demo_pipelines

__all__ = [
    "Store",
    "Account",
    "PHONE_ENUMS",
    "EMAIL_ENUMS",
    "UTM_CODES",
    "CLOSED",
]

_HOOK_LOG = 200  # install and chat hook deliveries kept for /_state
_WEBHOOK_LOG = 2000  # account webhook attempts kept for /_state

#: FACTS 1.8: the system statuses won (142) and lost (143), shared by every pipeline
CLOSED = (142, 143)
#: FACTS 1.6: multitext enum codes
PHONE_ENUMS = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
EMAIL_ENUMS = ("WORK", "PRIV", "OTHER")
#: UNCONFIRMED naming (FACTS 1.6 does not list them): the UTM tracking fields on leads
UTM_CODES = ("UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_TERM", "UTM_CONTENT")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass
class Account:
    """One amoCRM account and everything in it."""

    id: int
    subdomain: str
    amojo_id: str
    name: str
    uuid: str
    users: dict[int, dict[str, Any]]
    pipelines: dict[int, dict[str, Any]]
    subscription_active: bool = True
    installed: bool = False  # the integration is enabled in this account
    fields: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    tags: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    unsorted: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the Sources API's sources (sandbox.amocrm.sources), by id
    sources: dict[int, dict[str, Any]] = field(default_factory=dict)
    token_calls: Counter[str] = field(default_factory=Counter)
    created_at: int = 0

    def entities(self, kind: str) -> dict[int, dict[str, Any]]:
        """``contacts`` / ``companies`` / ``leads`` by v4 entity type name."""
        return {"contacts": self.contacts, "companies": self.companies,
                "leads": self.leads}[kind]

    def admin_id(self) -> int:
        for user in self.users.values():
            if user["is_admin"]:
                return int(user["id"])
        return int(next(iter(self.users)))

    # -- pipelines (FACTS 1.8) --------------------------------------------------

    def main_pipeline(self) -> dict[str, Any]:
        for pipe in self.pipelines.values():
            if pipe["is_main"]:
                return pipe
        return next(iter(self.pipelines.values()))

    @staticmethod
    def status_ids(pipe: dict[str, Any]) -> list[int]:
        return [int(s["id"]) for s in pipe["statuses"]]

    @staticmethod
    def unsorted_status(pipe: dict[str, Any]) -> int:
        return next(int(s["id"]) for s in pipe["statuses"] if s["type"] == 1)

    @staticmethod
    def first_working_status(pipe: dict[str, Any]) -> int:
        """FACTS 1.7: the default status is the main pipeline's first stage
        (the first one after Unsorted)."""
        for s in sorted(pipe["statuses"], key=lambda s: s["sort"]):
            if s["type"] != 1 and s["id"] not in CLOSED:
                return int(s["id"])
        return CLOSED[0]

    def pipeline_of_status(self, status_id: int) -> dict[str, Any] | None:
        """The pipeline holding ``status_id``; 142/143 resolve to the main one."""
        if status_id in CLOSED:
            return self.main_pipeline()
        for pipe in self.pipelines.values():
            if status_id in self.status_ids(pipe):
                return pipe
        return None


_PREDEFINED_CONTACT_FIELDS = (
    ("PHONE", "Телефон", PHONE_ENUMS),
    ("EMAIL", "Email", EMAIL_ENUMS),
)


class Store:
    """All state of one sandbox app."""

    def __init__(self, cfg: dict[str, Any], clock: Clock) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.jwt_key = secrets.token_bytes(32)  # the sandbox's own signing key
        self.reset(cfg)

    def now(self) -> float:
        return self.clock.now()

    # -- seeding -----------------------------------------------------------------

    def reset(self, cfg: dict[str, Any]) -> None:
        """Forget everything and seed from ``cfg``."""
        with self.lock:
            self.cfg = cfg
            self.started = self.now()
            self._ids: dict[str, itertools.count[int]] = {
                "contacts": itertools.count(40000001), "companies": itertools.count(45000001),
                "leads": itertools.count(20000001), "notes": itertools.count(90000001),
                "tasks": itertools.count(80000001), "fields": itertools.count(900001),
                "enums": itertools.count(5000001), "tags": itertools.count(300001),
                "webhooks": itertools.count(1001), "links": itertools.count(1),
                "pipelines": itertools.count(7100001), "statuses": itertools.count(62000001),
                "sources": itertools.count(4100001),
            }
            self.accounts: dict[int, Account] = {}
            # FACTS 1.2: codes single-use (kept, to tell "revoked" from unknown),
            # refresh tokens single-use in families
            self.oauth = TokenServer(self.now, TokenFormat(
                code=lambda: "def50200" + secrets.token_hex(180),
                access=lambda account, user, expires, _: self.make_jwt(
                    self.accounts[account], user, expires),
                # Refresh tokens are opaque and of variable length (FACTS 1.2).
                refresh=lambda: "def50200" + secrets.token_hex(96 + secrets.randbelow(16))))
            self.token_calls: Counter[str] = Counter()
            self.token_failures: Counter[str] = Counter()
            self.install_hooks = DeliveryLog(_HOOK_LOG)
            self.disconnect_hooks = DeliveryLog(None)
            # Chats API (FACTS 1.13)
            self.connections: dict[str, dict[str, Any]] = {}  # scope_id -> connection
            self.chats: dict[str, dict[str, Any]] = {}  # amojo chat id -> chat
            self.chat_index: dict[tuple[str, str], str] = {}  # (scope, conversation) -> id
            self.amojo_users: dict[tuple[str, str], dict[str, Any]] = {}  # (scope, client id)
            self.messages: dict[str, dict[str, Any]] = {}  # amojo msgid -> message
            self.msg_index: dict[tuple[str, str, str, str], str] = {}
            self.chat_hooks = DeliveryLog(_HOOK_LOG)  # outgoing-message hook deliveries
            self.deliveries = DeliveryLog(_WEBHOOK_LOG)  # account webhook attempts
            for index, acfg in enumerate(cfg["accounts"]):
                self._seed_account(acfg, index)

    def next_id(self, kind: str) -> int:
        return next(self._ids[kind])

    def _seed_account(self, acfg: dict[str, Any], index: int) -> None:
        created = int(self.started)
        users = {}
        for u in acfg["users"]:
            users[u["id"]] = {"id": u["id"], "name": u.get("name", f"User {u['id']}"),
                              "email": u.get("email", f"user{u['id']}@example.com"),
                              "is_admin": bool(u.get("is_admin", False)),
                              "is_active": bool(u.get("is_active", True)),
                              "amojo_id": u.get("amojo_id") or str(uuid.uuid5(
                                  uuid.NAMESPACE_URL, f"amojo-user:{acfg['id']}:{u['id']}")),
                              "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                     f"user:{acfg['id']}:{u['id']}")),
                              "group_id": 0, "lang": "ru"}
        account = Account(id=acfg["id"], subdomain=acfg["subdomain"], amojo_id=acfg["amojo_id"],
                          name=acfg.get("name", acfg["subdomain"]),
                          uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"account:{acfg['id']}")),
                          users=users, pipelines={},
                          subscription_active=bool(acfg.get("subscription_active", True)),
                          created_at=created)
        pipes = acfg.get("pipelines") or self._fresh_pipelines(index)
        for sort, pcfg in enumerate(pipes, start=1):
            statuses = []
            for ssort, s in enumerate(pcfg["statuses"], start=1):
                statuses.append({"id": s["id"], "name": s.get("name", str(s["id"])),
                                 "sort": s.get("sort", ssort * 10 if s["id"] not in CLOSED
                                               else (10000 if s["id"] == 142 else 11000)),
                                 "is_editable": s.get("is_editable", s.get("type") != 1
                                                      and s["id"] not in CLOSED),
                                 "pipeline_id": pcfg["id"], "color": s.get("color", "#99ccff"),
                                 "type": s.get("type", 0), "account_id": account.id})
            account.pipelines[pcfg["id"]] = {
                "id": pcfg["id"], "name": pcfg.get("name", f"Pipeline {pcfg['id']}"),
                "sort": pcfg.get("sort", sort), "is_main": bool(pcfg.get("is_main", sort == 1)),
                "is_unsorted_on": bool(pcfg.get("is_unsorted_on", True)), "is_archive": False,
                "account_id": account.id, "statuses": statuses}
        account.fields = {"contacts": {}, "companies": {}, "leads": {}}
        account.tags = {"contacts": {}, "companies": {}, "leads": {}}
        for sort, (code, name, enums) in enumerate(_PREDEFINED_CONTACT_FIELDS, start=1):
            self.add_field(account, "contacts", {"name": name, "type": "multitext",
                                                 "code": code, "sort": sort,
                                                 "enums": [{"value": e} for e in enums]},
                           predefined=True)
        for sort, code in enumerate(UTM_CODES, start=1):
            self.add_field(account, "leads", {"name": code.lower(), "type": "tracking_data",
                                              "code": code, "sort": sort}, predefined=True)
        self.accounts[account.id] = account
        for tcfg in acfg.get("long_lived_tokens") or []:
            self.issue_long_lived(account, tcfg.get("user_id"), tcfg.get("expires_in"),
                                  tcfg.get("expires_at"), tcfg.get("token"))

    def _fresh_pipelines(self, index: int) -> list[dict[str, Any]]:
        """The demo pipeline layout with fresh ids (accounts without their own)."""
        if index == 0:
            return demo_pipelines()
        out = []
        for pipe in demo_pipelines():
            pid = self.next_id("pipelines")
            statuses = [dict(s, id=s["id"] if s["id"] in CLOSED else self.next_id("statuses"))
                        for s in pipe["statuses"]]
            out.append(dict(pipe, id=pid, statuses=statuses))
        return out

    # -- lookups -------------------------------------------------------------------

    def account_by_subdomain(self, subdomain: str) -> Account | None:
        for account in self.accounts.values():
            if account.subdomain == subdomain:
                return account
        return None

    def account_by_amojo(self, amojo_id: str) -> Account | None:
        for account in self.accounts.values():
            if account.amojo_id == amojo_id:
                return account
        return None

    def find_lead(self, lead_id: int) -> tuple[Account, dict[str, Any]] | None:
        for account in self.accounts.values():
            lead = account.leads.get(lead_id)
            if lead is not None:
                return account, lead
        return None

    def find_contact(self, contact_id: int) -> tuple[Account, dict[str, Any]] | None:
        for account in self.accounts.values():
            contact = account.contacts.get(contact_id)
            if contact is not None:
                return account, contact
        return None

    def referer(self, account: Account) -> str:
        """FACTS 1.2: ``referer`` is the account host, e.g. ``demo.amocrm.ru``."""
        return f"{account.subdomain}.{self.cfg['base_domain']}"

    def platform(self) -> str:
        """FACTS 1.2: ``1`` = amocrm.ru, ``2`` = amocrm.com / kommo.com."""
        return "1" if self.cfg["base_domain"].endswith(".ru") else "2"

    # -- custom fields and tags (FACTS 1.6) --------------------------------------------

    def add_field(self, account: Account, entity: str, spec: dict[str, Any],
                  predefined: bool = False) -> dict[str, Any]:
        fid = self.next_id("fields")
        enums = None
        if spec.get("enums") is not None:
            enums = [{"id": self.next_id("enums"), "value": e["value"],
                      "sort": e.get("sort", (i + 1) * 10)}
                     for i, e in enumerate(spec["enums"])]
        field_def = {"id": fid, "name": spec["name"], "type": spec["type"],
                     "account_id": account.id, "code": spec.get("code"),
                     "sort": spec.get("sort", 500), "is_api_only": bool(spec.get("is_api_only")),
                     "enums": enums, "group_id": spec.get("group_id"),
                     "required_statuses": [], "is_deletable": not predefined,
                     "is_predefined": predefined, "entity_type": entity,
                     "remind": None, "settings": None, "is_computed": False}
        account.fields[entity][fid] = field_def
        return field_def

    def tag(self, account: Account, entity: str, name: str | None = None,
            tag_id: int | None = None) -> dict[str, Any] | None:
        """Find (by id or name) or create (by name) a tag of ``entity``."""
        tags = account.tags[entity]
        if tag_id is not None:
            return next((t for t in tags.values() if t["id"] == tag_id), None)
        if not name:
            return None
        key = name.strip().lower()
        if key not in tags:
            tags[key] = {"id": self.next_id("tags"), "name": name.strip(), "color": None}
        return tags[key]

    def tag_by_id(self, account: Account, entity: str, tag_id: int) -> dict[str, Any] | None:
        return self.tag(account, entity, tag_id=tag_id)

    # -- tokens (FACTS 1.2) ----------------------------------------------------------------

    def make_jwt(self, account: Account, user_id: int, expires_at: float,
                 grant: str = "") -> str:
        """A JWT-shaped access token (FACTS 1.1/1.2): three base64url parts, the
        payload carries ``api_domain``, ``exp``, ``account_id``. Signed with the
        sandbox's own HS256 key (amoCRM's own signing is RS256; nobody verifies
        it client-side)."""
        now = int(self.now())
        header = {"typ": "JWT", "alg": "HS256"}
        payload = {"aud": self.cfg["integration"]["client_id"], "jti": uuid.uuid4().hex,
                   "iat": now, "nbf": now, "exp": int(expires_at), "sub": str(user_id),
                   "grant_type": grant, "account_id": account.id,
                   "base_domain": self.cfg["base_domain"], "version": 2,
                   "scopes": ["crm", "notifications"], "hash_uuid": str(uuid.uuid4()),
                   "api_domain": self.cfg["api_domain"]}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64url(json.dumps(payload, separators=(",", ":")).encode()))
        sig = hmac.new(self.jwt_key, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + _b64url(sig)

    def issue_pair(self, account: Account, user_id: int, redirect_uri: str
                   ) -> tuple[AccessToken, Any]:
        """A new family's first access + refresh pair (an install)."""
        access, refresh = self.oauth.issue(
            account.id, user_id, self.cfg["integration"]["client_id"], [],
            access_ttl=float(self.cfg["access_token_ttl"]),
            refresh_ttl=float(self.cfg["refresh_token_ttl"]), redirect_uri=redirect_uri)
        account.installed = True
        return access, refresh

    def revoke_account(self, account: Account) -> None:
        """Integration switched off (FACTS 1.2): every token of the account dies."""
        self.oauth.revoke_account(account.id)
        account.installed = False

    def issue_long_lived(self, account: Account, user_id: int | None = None,
                         expires_in: float | None = None, expires_at: float | None = None,
                         token: str | None = None) -> AccessToken:
        """A long-lived token (FACTS 1.2: 1 day .. 5 years, no refresh token)."""
        uid = int(user_id) if user_id is not None else account.admin_id()
        if expires_at is None:
            expires_at = self.now() + float(expires_in if expires_in is not None else 365 * 86400)
        access = self.oauth.issue_access(account.id, uid, self.cfg["integration"]["client_id"],
                                         [], float(expires_at), token=token)
        account.installed = True
        return access
