"""In-process state of the sandbox Bitrix24 (one lock guards all of it).

* the clock (:class:`sandbox.core.clock.Clock`, ``POST /_clock`` moves it) is
  the one seam for time: token and code lifetimes, the leaky bucket, operating
  time.
* :class:`Portal` -- one Bitrix24 account: users, webhooks, CRM (leads,
  contacts, deals with multifields), directories (``crm.status.list``),
  pipelines, user fields (:mod:`.userfields`), timeline comments, to-dos,
  tasks, the app's installation, event bindings, Open Lines (lines,
  connectors, chats, messages).
* :class:`Store` -- the portals plus the OAuth server's tokens and codes
  (:mod:`sandbox.core.oauth`).

Portals are isolated: every id counter is per portal (as every Bitrix24 has
its own database) and every lookup goes through the portal that was called.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import string
import threading
from dataclasses import dataclass, field
from typing import Any

from ..core.clock import Clock
from ..core.oauth import AccessToken, RefreshToken, TokenFormat, TokenServer
from ..core.webhooks import DeliveryLog
from . import userfields

__all__ = [
    "Entity",
    "Portal",
    "Store",
    "AppInstall",
    "ENTITY_TYPE_IDS",
]

#: crm/data-types.md "CRM Object Types": entityTypeId by entity
ENTITY_TYPE_IDS = {"lead": 1, "deal": 2, "contact": 3, "company": 4}

_TOKEN_CHARS = string.ascii_lowercase + string.digits


def fmt_datetime(ts: float, utc_offset: str) -> str:
    """``2024-05-23T18:18:25+02:00`` in the portal's zone (crm-lead-get.md dates)."""
    sign = 1 if utc_offset[0] == "+" else -1
    hours, minutes = int(utc_offset[1:3]), int(utc_offset[4:6])
    zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    return dt.datetime.fromtimestamp(ts, zone).replace(microsecond=0).isoformat()


@dataclass
class AppInstall:
    """The app's installation on a portal (on-app-install.md, installation-finish.md)."""

    application_token: str
    installed_at: float
    installed_by: int
    finished: bool = False
    handler: str | None = None
    result: dict[str, Any] | None = None


@dataclass
class Entity:
    """A lead, contact or deal: scalar fields as Bitrix24 returns them (strings),
    multifields (``PHONE``/``EMAIL``/``WEB``/``IM``/``LINK``) apart."""

    id: int
    fields: dict[str, Any]
    multi: dict[str, list[dict[str, str]]] = field(default_factory=dict)


# -- directories (crm.status.list) -------------------------------------------------------

# crm-lead-add.md STATUS_ID table; semantics: CONVERTED success, JUNK failure
_LEAD_STATUSES = [("NEW", "Unprocessed", None, "process", "#39A8EF"),
                  ("IN_PROCESS", "In process", None, "process", "#2FC6F6"),
                  ("PROCESSED", "Processed", None, "process", "#55D0E0"),
                  ("CONVERTED", "High-quality lead", "S", "success", "#7BD500"),
                  ("JUNK", "Low-quality lead", "F", "failure", "#FF5752")]
# crm-lead-add.md SOURCE_ID table
_SOURCES = [("CALL", "Call"), ("EMAIL", "E-mail"), ("WEB", "Website"),
            ("ADVERTISING", "Advertising"), ("PARTNER", "Existing client"),
            ("RECOMMENDATION", "By recommendation"), ("TRADE_SHOW", "Trade show"),
            ("WEBFORM", "CRM form"), ("CALLBACK", "Callback"),
            ("RC_GENERATOR", "Sales generator"), ("STORE", "Online store"), ("OTHER", "Other")]
# crm-status-list.md example (ENTITY_ID=DEAL_STAGE)
_DEAL_STAGES = [("NEW", "New", None, "process", "#39A8EF"),
                ("PREPARATION", "Document preparation", None, "process", "#2FC6F6"),
                ("PREPAYMENT_INVOICE", "Prepayment invoice", None, "process", "#55D0E0"),
                ("EXECUTING", "In progress", None, "process", "#47E4C2"),
                ("FINAL_INVOICE", "Final invoice", None, "process", "#FFA900"),
                ("WON", "Deal successful", "S", "success", "#7BD500"),
                ("LOSE", "Deal failed", "F", "failure", "#FF5752"),
                ("APOLOGY", "Failure reason analysis", "F", "apology", "#FF5752")]
# Stages of an extra pipeline: the same semantics, "C<id>:" prefixed (crm-deal-list.md
# shows "C1:NEW"); which stages a new pipeline gets is our choice.
_CATEGORY_STAGES = [("NEW", "New", None, "process", "#39A8EF"),
                    ("PREPARATION", "Document preparation", None, "process", "#2FC6F6"),
                    ("EXECUTING", "In progress", None, "process", "#47E4C2"),
                    ("WON", "Deal successful", "S", "success", "#7BD500"),
                    ("LOSE", "Deal failed", "F", "failure", "#FF5752")]
_DEAL_TYPES = [("SALE", "Sales"), ("COMPLEX", "Integrated sale"), ("GOODS", "Merchandise sale"),
               ("SERVICES", "Service sale"), ("SERVICE", "After-sale service")]
_SYSTEM_STAGES = {"NEW", "WON", "LOSE", "CONVERTED", "JUNK"}


class Portal:
    """One Bitrix24 account and everything in it."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.domain: str = cfg["domain"]
        self.member_id: str = cfg["member_id"]
        self.plan: str = cfg["plan"]
        self.users: dict[int, dict[str, Any]] = {int(u["ID"]): dict(u) for u in cfg["users"]}
        self.webhooks: dict[tuple[int, str], dict[str, Any]] = {
            (int(h["user_id"]), str(h["code"])): dict(h) for h in cfg["webhooks"]}
        self.lines: dict[int, dict[str, Any]] = {}
        for line in cfg["open_lines"]:
            entry = {"ACTIVE": "Y", "QUEUE": [min(self.users)], "CRM_CREATE": "lead",
                     "CRM_SOURCE": None}
            entry.update(line)
            self.lines[int(line["ID"])] = entry
        self.categories: list[dict[str, Any]] = [
            {"id": int(c["id"]), "name": c.get("name") or f"Pipeline {c['id']}",
             "sort": int(c.get("sort", 200))} for c in cfg["deal_categories"]]
        self.counters: dict[str, int] = {}
        # kind -> FIELD_NAME -> record (:mod:`.userfields`); the declared ones first
        self.user_fields: dict[str, dict[str, dict[str, Any]]] = {}
        for kind, declared in sorted((cfg.get("user_fields") or {}).items()):
            for raw in declared:
                self.add_user_field(kind, raw)
        self.statuses: list[dict[str, Any]] = []
        self._seed_statuses()
        self.entities: dict[str, dict[int, Entity]] = {"lead": {}, "contact": {}, "deal": {}}
        self.comments: dict[int, dict[str, Any]] = {}
        self.activities: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.app: AppInstall | None = None
        self.bindings: list[dict[str, Any]] = []
        self.placements: list[dict[str, Any]] = []
        self.offline_queue: list[dict[str, Any]] = []
        self.connectors: dict[str, dict[str, Any]] = {}
        self.activations: dict[tuple[str, int], dict[str, Any]] = {}
        self.chats: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.connector_users: dict[tuple[str, str], int] = {}
        self.unmatched_receipts: list[dict[str, Any]] = []

    # -- ids -----------------------------------------------------------------------

    _STARTS = {"status": 101, "multifield": 11000, "comment": 900, "activity": 1000,
               "task": 3700, "handler": 180, "chat": 1800, "message": 86000, "session": 320,
               "connector_user": 580, "user_field": 140, "user_field_enum": 60}

    def next_id(self, kind: str) -> int:
        value = self.counters.get(kind, self._STARTS.get(kind, 1))
        self.counters[kind] = value + 1
        return value

    def add_user_field(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Store a user field of ``kind`` (``fields`` checked, FIELD_NAME prefixed);
        ids are per portal, shared by the three objects (one user field table)."""
        rec = userfields.build(kind, fields, self.next_id("user_field"),
                               lambda: self.next_id("user_field_enum"),
                               str(self.cfg.get("language") or "en"))
        self.user_fields.setdefault(kind, {})[rec["FIELD_NAME"]] = rec
        return rec

    # -- directories -------------------------------------------------------------------

    def _status(self, entity_id: str, status_id: str, name: str, sort: int,
                semantics: str | None = None, extra: str | None = None, color: str | None = None,
                category: int | None = None) -> None:
        row: dict[str, Any] = {
            "ID": str(self.next_id("status")), "ENTITY_ID": entity_id, "STATUS_ID": status_id,
            "NAME": name, "NAME_INIT": name if status_id.split(":")[-1] in _SYSTEM_STAGES else "",
            "SORT": str(sort), "SYSTEM": "Y" if status_id.split(":")[-1] in _SYSTEM_STAGES
            else "N", "CATEGORY_ID": str(category) if category else None, "COLOR": color,
            "SEMANTICS": semantics}
        if extra is not None:
            row["EXTRA"] = {"SEMANTICS": extra, "COLOR": color}
        self.statuses.append(row)

    def _seed_statuses(self) -> None:
        for i, (sid, name, sem, extra, color) in enumerate(_LEAD_STATUSES):
            self._status("STATUS", sid, name, 10 * (i + 1), sem, extra, color)
        for i, (sid, name) in enumerate(_SOURCES):
            self._status("SOURCE", sid, name, 10 * (i + 1))
        for i, (sid, name) in enumerate(_DEAL_TYPES):
            self._status("DEAL_TYPE", sid, name, 10 * (i + 1))
        for i, (sid, name, sem, extra, color) in enumerate(_DEAL_STAGES):
            self._status("DEAL_STAGE", sid, name, 10 * (i + 1), sem, extra, color)
        for cat in self.categories:
            for i, (sid, name, sem, extra, color) in enumerate(_CATEGORY_STAGES):
                self._status(f"DEAL_STAGE_{cat['id']}", f"C{cat['id']}:{sid}", name,
                             10 * (i + 1), sem, extra, color, cat["id"])

    def status_ids(self, entity_id: str) -> list[str]:
        return [s["STATUS_ID"] for s in self.statuses if s["ENTITY_ID"] == entity_id]

    def status_row(self, entity_id: str, status_id: str) -> dict[str, Any] | None:
        for row in self.statuses:
            if row["ENTITY_ID"] == entity_id and row["STATUS_ID"] == status_id:
                return row
        return None

    def category_ids(self) -> list[int]:
        return [0] + [c["id"] for c in self.categories]

    @staticmethod
    def stage_entity(category_id: int) -> str:
        """crm-deal-add.md: DEAL_STAGE for the general pipeline, DEAL_STAGE_{id} else."""
        return "DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}"

    def semantic_id(self, entity_id: str, status_id: str) -> str:
        """``P`` process, ``S`` success, ``F`` failure (STATUS_SEMANTIC_ID/STAGE_SEMANTIC_ID)."""
        row = self.status_row(entity_id, status_id)
        return (row or {}).get("SEMANTICS") or "P"

    def admin_id(self) -> int:
        admins = [uid for uid, u in self.users.items() if u.get("ADMIN")]
        return min(admins or self.users)

    def crm_access(self, user_id: int) -> str:
        return str(self.users.get(user_id, {}).get("CRM_ACCESS", "write"))

    def user_name(self, user_id: int) -> str:
        user = self.users.get(user_id) or {}
        return " ".join(p for p in (user.get("NAME"), user.get("LAST_NAME")) if p) or str(user_id)

    def now_str(self, ts: float) -> str:
        return fmt_datetime(ts, self.cfg["utc_offset"])


_EVENT_LOG = 2000  # event deliveries kept for /_state


class Store:
    """Every portal plus the OAuth server (oauth.bitrix.info) state."""

    def __init__(self, cfg: dict[str, Any], clock: Clock) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.cfg = cfg
        self.reset(cfg)

    def reset(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        seed = cfg.get("seed")
        self._rng: random.Random | None = random.Random(seed) if seed is not None else None  # noqa: S311
        self.portals: dict[str, Portal] = {p["domain"]: Portal(p) for p in cfg["portals"]}
        # oauth/index.md: codes single-use (kept once used), every token 32 characters
        self.oauth = TokenServer(self.now, TokenFormat(
            code=self.random_token, access=lambda *_: self.random_token(),
            refresh=self.random_token))
        self.oauth_calls: dict[str, dict[str, Any]] = {}
        self.deliveries = DeliveryLog(_EVENT_LOG, numbered=True)
        self.started = self.clock.now()

    def now(self) -> float:
        return self.clock.now()

    def portal(self, domain: str) -> Portal | None:
        return self.portals.get(domain.lower())

    def portal_by_member(self, member_id: str) -> Portal | None:
        for portal in self.portals.values():
            if portal.member_id == member_id:
                return portal
        return None

    # -- tokens ----------------------------------------------------------------------

    def random_token(self, length: int = 32) -> str:
        if self._rng is not None:
            return "".join(self._rng.choice(_TOKEN_CHARS) for _ in range(length))
        return "".join(secrets.choice(_TOKEN_CHARS) for _ in range(length))

    def issue_access(self, portal: Portal, user_id: int, scopes: list[str]) -> AccessToken:
        """An access token without a refresh token (event ``auth``)."""
        if len(self.oauth.access) > 5000:  # events mint one per delivery
            self.oauth.prune()
        return self.oauth.issue_access(
            portal.domain, user_id, self.cfg["app"]["client_id"], list(scopes),
            self.now() + float(self.cfg["access_token_ttl_s"]))

    def issue_pair(self, portal: Portal, user_id: int,
                   scopes: list[str]) -> tuple[AccessToken, RefreshToken]:
        if len(self.oauth.access) > 5000:
            self.oauth.prune()
        return self.oauth.issue(portal.domain, user_id, self.cfg["app"]["client_id"],
                                list(scopes), access_ttl=float(self.cfg["access_token_ttl_s"]),
                                refresh_ttl=float(self.cfg["refresh_token_ttl_s"]))

    def revoke_portal(self, domain: str) -> None:
        """Uninstall: every token and code of the app on ``domain`` dies."""
        self.oauth.revoke_account(domain, codes=True)

    def count_oauth(self, grant: str, error: str | None) -> None:
        entry = self.oauth_calls.setdefault(grant, {"calls": 0, "ok": 0, "failed": 0,
                                                    "errors": {}})
        entry["calls"] += 1
        if error is None:
            entry["ok"] += 1
        else:
            entry["failed"] += 1
            entry["errors"][error] = entry["errors"].get(error, 0) + 1
