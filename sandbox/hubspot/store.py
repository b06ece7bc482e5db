"""In-memory state of the sandbox HubSpot, guarded by one re-entrant lock.

Everything lives in a :class:`Portal` (a HubSpot account); a token sees only
its portal (tenant isolation: another portal's id is simply not found). Ids
come from global counters, so ids never repeat across portals. The developer
app's custom channels are app-level (FACTS.md 3.7), OAuth grants are bound to
one portal each (FACTS 3.1) and kept by the shared authorization server
(:mod:`sandbox.core.oauth`); time comes from the app's clock
(:mod:`sandbox.core.clock`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..core.clock import Clock
from ..core.oauth import TokenFormat, TokenServer
from ..core.webhooks import DeliveryLog
from . import catalog
from .catalog import PropertyDef

__all__ = [
    "Store",
    "Portal",
    "CrmObject",
    "iso",
    "property_json",
]

_DELIVERY_LOG = 100  # outgoing webhook deliveries kept for /_state


def iso(ts: float) -> str:
    """HubSpot's timestamp format: ISO 8601 UTC with milliseconds and ``Z``."""
    moment = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class CrmObject:
    """One CRM record (SimplePublicObject without the rendering)."""

    id: str
    type: str
    properties: dict[str, str]
    created_at: float
    updated_at: float
    archived: bool = False
    archived_at: float | None = None


@dataclass
class Portal:
    """A HubSpot account and everything in it."""

    id: int
    name: str
    time_zone: str
    currency: str
    private_tokens: set[str]
    objects: dict[str, dict[str, CrmObject]] = field(default_factory=dict)
    # (from type, from id) -> (to type, to id) -> {(category, type id)}
    assoc: dict[tuple[str, str], dict[tuple[str, str], set[tuple[str, int]]]] = field(
        default_factory=dict)
    owners: list[dict[str, Any]] = field(default_factory=list)
    pipelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    props: dict[str, dict[str, PropertyDef]] = field(default_factory=dict)
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    inboxes: list[dict[str, Any]] = field(default_factory=list)
    channel_accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # (type, unique property, normalised value) -> record id (live records only)
    unique: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # (channel account id, "itid"|"did", key) -> thread id
    thread_index: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # (type, merged-away id) -> the id it was merged into (sandbox/hubspot/merge.py)
    merged: dict[tuple[str, str], str] = field(default_factory=dict)

    def owner_ids(self) -> list[str]:
        return [o["id"] for o in self.owners if not o["archived"]]

    def pipeline(self, type_name: str, pipeline_id: str) -> dict[str, Any] | None:
        for p in self.pipelines.get(type_name, []):
            if p["id"] == pipeline_id and not p["archived"]:
                return p
        return None


_DEFAULT_OWNERS = (("Alice", "Agent"), ("Bob", "Builder"), ("Carol", "Closer"))


def property_json(p: PropertyDef, portal_created: str) -> dict[str, Any]:
    """A property definition in the Properties API's shape."""
    created = p.extra.get("createdAt", portal_created)
    return {
        "name": p.name, "label": p.label, "type": p.type, "fieldType": p.field_type,
        "description": p.description, "groupName": p.group,
        "options": [{"label": label, "value": value, "displayOrder": i, "hidden": False}
                    for i, (value, label) in enumerate(p.options)],
        "displayOrder": p.extra.get("displayOrder", -1),
        "calculated": p.calculated, "externalOptions": p.external_options,
        "hasUniqueValue": p.unique, "hidden": False, "hubspotDefined": p.hubspot_defined,
        "modificationMetadata": {"archivable": not p.hubspot_defined,
                                 "readOnlyDefinition": p.hubspot_defined,
                                 "readOnlyValue": p.read_only},
        "formField": p.extra.get("formField", False),
        "createdAt": created, "updatedAt": p.extra.get("updatedAt", created),
        "archived": False,
    }


def _access_token(*_: Any) -> str:
    return "CN" + secrets.token_urlsafe(48).replace("-", "x").replace("_", "y")


#: HubSpot's token shapes: hex codes, "CN..." access tokens, "na1-..." refresh tokens
_TOKENS = TokenFormat(
    code=lambda: secrets.token_hex(18),
    access=_access_token,
    refresh=lambda: "na1-" + "-".join(secrets.token_hex(n) for n in (2, 2, 2, 2, 6)))


class Store:
    """The whole sandbox state. Hold :attr:`lock` around every read and write."""

    def __init__(self, cfg: dict[str, Any], clock: Clock) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.reset(cfg)

    def now(self) -> float:
        return self.clock.now()

    # -- seeding -----------------------------------------------------------

    def reset(self, cfg: dict[str, Any]) -> None:
        """Forget everything and seed from ``cfg``."""
        with self.lock:
            self.cfg = cfg
            self.started = self.now()
            self._ids = itertools.count(100001)  # CRM records (int32-safe, spec v4 ints)
            self._owner_ids = itertools.count(70000001)
            self._user_ids = itertools.count(9000001)
            self._misc_ids = itertools.count(1001)  # channels, accounts, inboxes, threads
            self.portals: dict[int, Portal] = {}
            self.channels: dict[str, dict[str, Any]] = {}
            # OAuth (FACTS 3.1): single-use codes, forgotten once used or expired
            self.oauth = TokenServer(self.now, _TOKENS, keep_used_codes=False)
            self.private_index: dict[str, int] = {}  # private-app token -> portal id
            self.deliveries = DeliveryLog(_DELIVERY_LOG)  # outgoing webhook deliveries
            # CRM-object events waiting for POST /_crm_webhooks/flush (config
            # crm_webhook_hold; merge.py)
            self.held_events: list[dict[str, Any]] = []
            # CRM-object events the current request's writes fired, sent after it
            # (events.py)
            self.crm_event_queue: list[dict[str, Any]] = []
            # workflow enrolments (workflows.py): (workflow index, portal id, object
            # type, record id) enrolled so far, and the actions of the current request
            self.workflow_enrolled: set[tuple[int, int, str, str]] = set()
            self.workflow_queue: list[Any] = []
            for pcfg in cfg["portals"]:
                self._seed_portal(pcfg)

    def _seed_portal(self, pcfg: dict[str, Any]) -> None:
        tokens = set(pcfg.get("private_app_tokens", []))
        if pcfg.get("private_app_token"):
            tokens.add(pcfg["private_app_token"])
        portal = Portal(id=pcfg["id"], name=pcfg.get("name", f"Portal {pcfg['id']}"),
                        time_zone=pcfg.get("time_zone", "US/Eastern"),
                        currency=pcfg.get("currency", "USD"), private_tokens=tokens)
        created = iso(self.started)
        slug = re.sub(r"[^a-z0-9]+", "-", portal.name.lower()).strip("-") or str(portal.id)
        owners_cfg = pcfg.get("owners") or [
            {"firstName": f, "lastName": last, "email": f"{f.lower()}@{slug}.example"}
            for f, last in _DEFAULT_OWNERS]
        for o in owners_cfg:
            user_id = next(self._user_ids)
            portal.owners.append({
                "id": str(next(self._owner_ids)), "email": o["email"],
                "firstName": o.get("firstName", ""), "lastName": o.get("lastName", ""),
                "userId": user_id, "userIdIncludingInactive": user_id, "type": "PERSON",
                "teams": [], "createdAt": created, "updatedAt": created, "archived": False})
        portal.pipelines = catalog.seed_pipelines(created)
        for name in catalog.OBJECT_TYPES:
            portal.objects[name] = {}
            portal.props[name] = catalog.standard_properties(name)
            portal.groups[name] = {
                g: {"name": g, "label": label, "displayOrder": i, "archived": False}
                for i, (g, label) in enumerate(catalog.STANDARD_GROUPS[name])}
        portal.inboxes.append({"id": str(next(self._misc_ids)), "name": "Inbox",
                               "createdAt": created, "updatedAt": created, "archived": False})
        self.portals[portal.id] = portal
        for token in tokens:
            self.private_index[token] = portal.id

    # -- ids and tokens ----------------------------------------------------

    def next_id(self) -> str:
        return str(next(self._ids))

    def next_misc_id(self) -> str:
        return str(next(self._misc_ids))

    @staticmethod
    def new_message_id() -> str:
        return uuid.uuid4().hex

    def portal_for_private_token(self, token: str) -> Portal | None:
        pid = self.private_index.get(token)
        return self.portals.get(pid) if pid is not None else None

    # -- records -------------------------------------------------------------

    @staticmethod
    def live(portal: Portal, type_name: str) -> Iterator[CrmObject]:
        return (o for o in portal.objects[type_name].values() if not o.archived)

    @staticmethod
    def get(portal: Portal, type_name: str, obj_id: str,
            archived: bool = False) -> CrmObject | None:
        obj = portal.objects[type_name].get(str(obj_id))
        if obj is None or obj.archived != archived:
            return None
        return obj

    @staticmethod
    def _norm_unique(prop: str, value: str) -> str:
        return value.lower() if prop == "email" else value

    @staticmethod
    def survivor(portal: Portal, type_name: str, obj_id: str) -> CrmObject | None:
        """The live record a merged-away id now stands for (merges chain:
        A into B, then B into C), or None when ``obj_id`` was never merged."""
        current, seen = str(obj_id), set()
        while (type_name, current) in portal.merged and current not in seen:
            seen.add(current)
            current = portal.merged[(type_name, current)]
        if not seen:
            return None
        return Store.get(portal, type_name, current)

    def find_by(self, portal: Portal, type_name: str, prop: str, value: str) -> CrmObject | None:
        """Find a live record by a unique property (case-insensitive for email)."""
        needle = self._norm_unique(prop, value)
        pdef = portal.props[type_name].get(prop)
        if pdef is not None and pdef.unique:
            oid = portal.unique.get((type_name, prop, needle))
            obj = portal.objects[type_name].get(oid) if oid else None
            return obj if obj is not None and not obj.archived else None
        for obj in self.live(portal, type_name):
            have = obj.properties.get(prop)
            if have is not None and self._norm_unique(prop, have) == needle:
                return obj
        return None

    def index(self, portal: Portal, obj: CrmObject, add: bool = True) -> None:
        """Add (or remove) ``obj``'s unique property values to the index."""
        for name, pdef in portal.props[obj.type].items():
            value = obj.properties.get(name)
            if not pdef.unique or not value:
                continue
            key = (obj.type, name, self._norm_unique(name, value))
            if add:
                portal.unique[key] = obj.id
            elif portal.unique.get(key) == obj.id:
                del portal.unique[key]

    # -- associations (FACTS 3.4; symmetric) -----------------------------------

    @staticmethod
    def associate(portal: Portal, ftype: str, fid: str, ttype: str, tid: str,
                  category: str, type_id: int) -> None:
        """Add one typed association and its reverse."""
        portal.assoc.setdefault((ftype, fid), {}).setdefault((ttype, tid), set()).add(
            (category, type_id))
        rev = catalog.reverse_type_id(ftype, ttype, type_id)
        if rev is not None:
            portal.assoc.setdefault((ttype, tid), {}).setdefault((ftype, fid), set()).add(
                (category, rev))

    @staticmethod
    def dissociate(portal: Portal, ftype: str, fid: str, ttype: str, tid: str,
                   only: set[tuple[str, int]] | None = None) -> None:
        """Remove associations between two records (all, or only the given types)."""
        for a, b, ta, tb in ((ftype, fid, ttype, tid), (ttype, tid, ftype, fid)):
            edges = portal.assoc.get((a, b), {})
            kinds = edges.get((ta, tb))
            if kinds is None:
                continue
            if only is None:
                edges.pop((ta, tb), None)
                continue
            for cat, type_id in list(kinds):
                if (a, b) == (ftype, fid) and (cat, type_id) in only:
                    kinds.discard((cat, type_id))
                elif (a, b) != (ftype, fid):
                    fwd = catalog.reverse_type_id(a, ta, type_id)
                    if fwd is not None and (cat, fwd) in only:
                        kinds.discard((cat, type_id))
            if not kinds:
                edges.pop((ta, tb), None)

    @staticmethod
    def associations_of(portal: Portal, ftype: str, fid: str,
                        ttype: str) -> list[tuple[str, set[tuple[str, int]]]]:
        """``[(to id, {(category, type id)})]`` sorted by numeric id."""
        edges = portal.assoc.get((ftype, fid), {})
        out = [(tid, kinds) for (t, tid), kinds in edges.items() if t == ttype and kinds]
        return sorted(out, key=lambda x: int(x[0]) if x[0].isdigit() else 0)

    def drop_associations(self, portal: Portal, ftype: str, fid: str) -> None:
        """Archiving a record removes its associations."""
        for (ttype, tid) in list(portal.assoc.get((ftype, fid), {})):
            self.dissociate(portal, ftype, fid, ttype, tid)
        portal.assoc.pop((ftype, fid), None)

    # -- rendering -------------------------------------------------------------

    @staticmethod
    def render(portal: Portal, obj: CrmObject, requested: list[str] | None,
               extra: set[str] | None = None) -> dict[str, Any]:
        """``SimplePublicObject``: requested properties (null when unset, unknown
        names ignored), else the type's default set (plus ``extra``)."""
        otype = catalog.OBJECT_TYPES[obj.type]
        defined = portal.props[obj.type]
        if requested:
            names = [n for n in requested if n in defined]
        else:
            names = list(otype.default_props) + sorted((extra or set()) - set(otype.default_props))
        props: dict[str, str | None] = {n: obj.properties.get(n) for n in names}
        body: dict[str, Any] = {"id": obj.id, "properties": props,
                                "createdAt": iso(obj.created_at),
                                "updatedAt": iso(obj.updated_at), "archived": obj.archived}
        if obj.archived and obj.archived_at is not None:
            body["archivedAt"] = iso(obj.archived_at)
        return body
