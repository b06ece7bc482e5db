"""Leads and deals: open one for a conversation, find it again, tell whether
it is still open (FACTS 2.7; docs ``crm/leads/*``, ``crm/deals/*``,
``crm/status/crm-status-list.md``, ``crm/universal/category/*``).

**The conversation uid** travels in the fields Bitrix24 documents "for
linking to an external source": ``ORIGINATOR_ID`` = ``crm_bridge`` and
``ORIGIN_ID`` = the uid (both on leads and deals; ``crm-lead-add.md``,
``crm-deal-add.md``). :meth:`find_entity` filters ``crm.lead.list`` /
``crm.deal.list`` on both. No user field has to be created for it; a
tenant may name a ``UF_CRM_*`` field instead (setting
``conversation_field``).

**Mapping properties** (the entity/contact fields the mapping's templates
fill). A mapping's property names are lower-case (``mappings/schema.py``,
``PROPERTY_NAME``: letters, digits and ``_``), so from a mapping file:
``utm_source``, ``utm_medium``, ``utm_campaign``, ``utm_content``,
``utm_term`` (also with a ``bridge_`` prefix) write the built-in ``UTM_*``
fields (FACTS 2.7); any other name gets a string user field that
``setup()`` creates (``UF_CRM_<NAME>``, ≤ 13 characters after the prefix)
and records in the setting ``custom_fields``. A mapping cannot name an
existing Bitrix24 field code (``UF_CRM_…``, ``COMMENTS``): the schema
refuses upper case. Only a caller that builds the draft itself may pass an
upper-case code, which is then written as it is.

**Open or closed**: a lead's ``STATUS_SEMANTIC_ID`` / a deal's
``STAGE_SEMANTIC_ID`` is ``P`` (in progress), ``S`` (won / converted) or
``F`` (lost / junk); a deal with ``CLOSED = Y`` is closed too. When a
portal does not return the semantic field, the status list
(``crm.status.list``: ``EXTRA.SEMANTICS`` success/failure/apology) decides,
cached per process for ten minutes.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from bridge.errors import NotFoundError, NotReadyError, PermanentError
from bridge.model import CrmAccountInfo, CrmRef, EntityDraft

from .batch import Command, as_map
from .client import B24Api
from .settings import Bitrix24Settings
from .timeline import to_int

__all__ = [
    "CLOSED_SEMANTICS",
    "ORIGINATOR",
    "EntitiesMixin",
    "field_code",
    "field_values",
    "mapped_fields",
    "source_id",
]

ORIGINATOR = "crm_bridge"
CLOSED_SEMANTICS = frozenset({"S", "F"})
UTM = ("UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")
#: when even the status list is unreadable (FACTS 2.7)
CLOSED_CODES = {"lead": {"JUNK", "CONVERTED"}, "deal": {"WON", "LOSE", "APOLOGY"}}
STATUS_TTL = 600.0
_CODE = re.compile(r"[A-Z][A-Z0-9_]*")
_status_cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
_status_lock = threading.Lock()


def field_values(record: Mapping[str, Any], field: str) -> list[Mapping[str, Any]]:
    """A multifield's values (``[{"ID","VALUE_TYPE","VALUE","TYPE_ID"}]``)."""
    values = record.get(field)
    return [v for v in values if isinstance(v, Mapping)] if isinstance(values, list) else []


def source_id(settings: Bitrix24Settings) -> str:
    """``SOURCE_ID`` of what the bridge creates (setting ``source_id``;
    ``OTHER`` by default: every portal has it, FACTS 2.7)."""
    return settings.source_id or "OTHER"


def field_code(name: str) -> str | None:
    """The Bitrix24 field a property name writes (``utm_*`` / ``bridge_utm_*``:
    the built-in UTM field; an upper-case code, which only a caller other than
    a mapping can pass: itself), or None when it needs a user field of its own
    (see :func:`user_field_name`)."""
    bare = name.strip()
    upper = bare.upper()
    for prefix in ("BRIDGE_", ""):
        if upper.startswith(prefix) and upper[len(prefix) :] in UTM:
            return upper[len(prefix) :]
    if bare == upper and _CODE.fullmatch(upper):
        return upper
    return None


def user_field_name(name: str) -> str:
    """``UF_CRM_`` + at most 13 characters (``crm.lead.userfield.add``: the
    whole name is limited to 20)."""
    base = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") or "FIELD"
    if len(base) <= 13:
        return f"UF_CRM_{base}"
    digest = hashlib.sha256(name.encode()).hexdigest()[:4].upper()
    return f"UF_CRM_{base[:8].rstrip('_')}_{digest}"


def mapped_fields(
    settings: Bitrix24Settings, properties: Mapping[str, str], object_type: str
) -> dict[str, Any]:
    """The mapping's rendered properties as Bitrix24 ``fields`` (empty
    values are left out: a template without data writes nothing)."""
    created = settings.custom_fields.get(object_type) or {}
    out: dict[str, Any] = {}
    for name, value in properties.items():
        if value in (None, ""):
            continue
        code = field_code(name) or created.get(name)
        if not code:
            # the setup creates it: a mapping changed since the last setup waits for it
            raise NotReadyError(
                f"Bitrix24 has no field for the mapping's {object_type} property {name!r}: "
                "run `bridge crm setup --tenant <slug>` (it creates one)"
            )
        out[str(code)] = value
    return out


class EntitiesMixin:
    """Lead/deal hooks of the Bitrix24 adapter."""

    account: CrmAccountInfo
    settings: Bitrix24Settings
    api: B24Api

    def _conversation_field(self) -> str:
        return self.settings.conversation_field or "ORIGIN_ID"

    def _uid_fields(self, uid: str) -> dict[str, Any]:
        field = self._conversation_field()
        if field == "ORIGIN_ID":
            return {"ORIGINATOR_ID": ORIGINATOR, "ORIGIN_ID": uid}
        return {field: uid}

    @staticmethod
    def _check_type(object_type: str) -> str:
        if object_type not in ("lead", "deal"):
            raise PermanentError(
                f"Bitrix24 entity type {object_type!r}: the bridge opens a 'lead' or a 'deal'"
            )
        return object_type

    def entity_fields(self, draft: EntityDraft) -> dict[str, Any]:
        """``fields`` of ``crm.lead.add`` / ``crm.deal.add`` (without
        ``CONTACT_ID``, which the caller sets: an id or a batch reference)."""
        kind = self._check_type(draft.object_type)
        settings = self.settings
        fields: dict[str, Any] = {"TITLE": (draft.name or draft.conversation_uid)[:255]}
        if kind == "lead":
            if draft.stage:
                fields["STATUS_ID"] = draft.stage
        else:
            if draft.pipeline not in (None, ""):
                fields["CATEGORY_ID"] = to_int(draft.pipeline, "pipeline (mapping `pipeline`)")
            if draft.stage:
                fields["STAGE_ID"] = draft.stage
        fields["SOURCE_ID"] = source_id(settings)
        title = draft.channel_title
        fields["SOURCE_DESCRIPTION"] = f"CRM bridge: {title}" if title else "CRM bridge"
        if draft.owner_id:
            fields["ASSIGNED_BY_ID"] = to_int(draft.owner_id, "owner id")
        fields.update(mapped_fields(settings, draft.properties, kind))
        fields.update(self._uid_fields(draft.conversation_uid))
        return fields

    def find_entity(self, draft: EntityDraft) -> CrmRef | None:
        """The lead/deal whose ``ORIGIN_ID`` (with our ``ORIGINATOR_ID``) is the
        conversation uid; the oldest if an ambiguous retry made two."""
        kind = self._check_type(draft.object_type)
        rows = self.api.call(
            f"crm.{kind}.list",
            {
                "filter": self._uid_fields(draft.conversation_uid),
                "select": ["ID"],
                "order": {"ID": "ASC"},
            },
        ).result
        ids = [
            to_int(r.get("ID"), f"{kind} id")
            for r in (rows if isinstance(rows, list) else [])
            if isinstance(r, Mapping)
        ]
        return CrmRef(kind, str(min(ids))) if ids else None

    def update_entity(
        self, entity: CrmRef, properties: Mapping[str, str], owner_id: str | None = None
    ) -> None:
        """``crm.lead.update`` / ``crm.deal.update`` with ``ASSIGNED_BY_ID``
        and the user fields the setup created for the properties (fields
        not sent are left as they are, ``crm-deal-update.md``)."""
        kind = self._check_type(entity.kind)
        fields: dict[str, Any] = dict(mapped_fields(self.settings, properties, kind))
        if owner_id:
            fields["ASSIGNED_BY_ID"] = to_int(owner_id, "owner id")
        if fields:
            entity_id = to_int(entity.id, f"{kind} id")
            self.api.call(f"crm.{kind}.update", {"id": entity_id, "fields": fields})

    def create_entity(self, draft: EntityDraft) -> CrmRef:
        """``crm.lead.add`` (title, status = mapping stage, source, owner,
        contact, UTM/UF fields, the conversation uid) or ``crm.deal.add``
        (plus ``CATEGORY_ID`` = mapping pipeline, ``STAGE_ID``)."""
        kind = self._check_type(draft.object_type)
        fields = self.entity_fields(draft)
        fields["CONTACT_ID"] = to_int(draft.contact.id, "contact id")
        result = self.api.call(f"crm.{kind}.add", {"fields": fields}).result
        return CrmRef(kind, str(to_int(result, f"new {kind} id")))

    def find_entities(self, drafts: Mapping[str, EntityDraft]) -> dict[str, CrmRef]:
        """:meth:`find_entity` for many: one ``crm.{lead|deal}.list`` command
        per draft, 50 to a ``batch`` request (FACTS 2.4)."""
        names = {f"n{n}": key for n, key in enumerate(drafts)}
        commands = [
            Command(
                name,
                f"crm.{self._check_type(drafts[key].object_type)}.list",
                {
                    "filter": self._uid_fields(drafts[key].conversation_uid),
                    "select": ["ID"],
                    "order": {"ID": "ASC"},
                },
            )
            for name, key in names.items()
        ]
        answer = self.api.batch(commands, halt=False)
        found: dict[str, CrmRef] = {}
        for name, key in names.items():
            kind = drafts[key].object_type
            rows = answer.value(name)
            ids = [
                to_int(r.get("ID"), f"{kind} id")
                for r in (rows if isinstance(rows, list) else [])
                if isinstance(r, Mapping)
            ]
            if ids:
                found[key] = CrmRef(kind, str(min(ids)))
        return found

    def create_entities(self, drafts: Mapping[str, EntityDraft]) -> dict[str, CrmRef]:
        """:meth:`create_entity` for many: ``crm.{lead|deal}.add`` commands,
        50 to a ``batch`` request (``halt=0``). A command refused raises its
        error with ``error.created`` naming the entities made."""
        names = {f"n{n}": key for n, key in enumerate(drafts)}
        commands = []
        for name, key in names.items():
            draft = drafts[key]
            fields = self.entity_fields(draft)
            fields["CONTACT_ID"] = to_int(draft.contact.id, "contact id")
            commands.append(Command(name, f"crm.{draft.object_type}.add", {"fields": fields}))
        answer = self.api.batch(commands, halt=False)
        made: dict[str, CrmRef] = {}
        for name, key in names.items():
            kind = drafts[key].object_type
            if answer.ok(name):
                made[key] = CrmRef(kind, str(to_int(answer.results[name], f"new {kind} id")))
        failed = answer.first_error(list(names))
        if failed is not None or len(made) < len(names):
            error = (
                failed[1]
                if failed is not None
                else PermanentError("Bitrix24 batch: a crm.*.add did not run")
            )
            error.created = dict(made)
            raise error
        return made

    def entity_is_open(self, entity: CrmRef) -> bool:
        """False once the lead/deal is won, lost, converted or deleted."""
        kind = self._check_type(entity.kind)
        try:
            record = self.api.call(
                f"crm.{kind}.get", {"id": to_int(entity.id, f"{kind} id")}
            ).result
        except NotFoundError:
            return False
        if not isinstance(record, Mapping):
            return False
        return not self.is_closed(kind, record)

    def is_closed(self, kind: str, record: Mapping[str, Any]) -> bool:
        semantic = str(
            record.get("STATUS_SEMANTIC_ID" if kind == "lead" else "STAGE_SEMANTIC_ID") or ""
        ).upper()
        if kind == "deal" and str(record.get("CLOSED") or "").upper() == "Y":
            return True
        if semantic:
            return semantic in CLOSED_SEMANTICS
        code = str(record.get("STATUS_ID" if kind == "lead" else "STAGE_ID") or "")
        if not code:
            return False
        category = str(record.get("CATEGORY_ID") or "0")
        semantics = self._semantics(kind, category)
        if code in semantics:
            return semantics[code] in ("success", "failure", "apology")
        return code.split(":")[-1] in CLOSED_CODES[kind]

    def _semantics(self, kind: str, category: str) -> dict[str, str]:
        """status code -> ``EXTRA.SEMANTICS`` (``crm.status.list``), cached."""
        entity_id = (
            "STATUS"
            if kind == "lead"
            else ("DEAL_STAGE" if category in ("", "0") else f"DEAL_STAGE_{category}")
        )
        key = (self._portal(), entity_id)
        now = time.monotonic()
        with _status_lock:
            cached = _status_cache.get(key)
            if cached and cached[0] > now:
                return cached[1]
        try:
            rows = self.api.call(
                "crm.status.list", {"filter": {"ENTITY_ID": entity_id}, "order": {"SORT": "ASC"}}
            ).result
        except PermanentError:
            rows = []
        semantics: dict[str, str] = {}
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, Mapping):
                continue
            extra = as_map(row.get("EXTRA"))
            value = str(extra.get("SEMANTICS") or "").lower()
            if not value:
                value = {"S": "success", "F": "failure"}.get(str(row.get("SEMANTICS") or ""), "")
            semantics[str(row.get("STATUS_ID") or "")] = value or "process"
        with _status_lock:
            _status_cache[key] = (now + STATUS_TTL, semantics)
        return semantics

    def _portal(self) -> str:
        raise NotImplementedError  # the adapter names the portal


def forget_statuses() -> None:
    """Drop the cached status lists (tests)."""
    with _status_lock:
        _status_cache.clear()
