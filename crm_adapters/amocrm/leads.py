"""Leads: open one through ``/api/v4/leads/complex`` with the contact
embedded, find it again by the bridge's conversation uid, tell whether it is
still open (FACTS 1.7, 1.8)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.errors import BridgeError, NotReadyError, PermanentError
from bridge.model import CrmAccountInfo, CrmRef, EntityDraft

from .client import AmoApi, embedded
from .fields import custom_values, has_value, merge_fields, oldest, text_value, to_int
from .settings import AmoCrmSettings

__all__ = ["CLOSED_STATUSES", "LeadsMixin"]

#: "won" and "lost" in every pipeline (FACTS 1.8)
WON, LOST = 142, 143
CLOSED_STATUSES = frozenset({WON, LOST})
#: every lead the bridge opens carries this tag (reps can filter on it)
BRIDGE_TAG = "CRM bridge"
#: ``/leads/complex`` takes at most 50 leads (FACTS 1.7)
COMPLEX_CHUNK = 50


class LeadsMixin:
    """The lead hooks of :class:`~crm_adapters.amocrm.AmoCrmAdapter`."""

    account: CrmAccountInfo
    settings: AmoCrmSettings
    api: AmoApi

    def _conversation_field(self) -> int:
        field_id = self.settings.conversation_field
        if field_id is None:
            # the setup creates it: a mapping changed since the last setup waits for it
            raise NotReadyError(
                "amoCRM has no 'Bridge conversation' lead field for this tenant: "
                "run `bridge crm setup --tenant <slug>`"
            )
        return field_id

    @staticmethod
    def _check_type(object_type: str) -> None:
        if object_type != "lead":
            raise PermanentError(
                f"amoCRM entity type {object_type!r}: the bridge opens leads ('lead'); "
                "'unsorted' is created by amoCRM's own chat, not by the bridge"
            )

    def find_entity(self, draft: EntityDraft) -> CrmRef | None:
        """The lead whose conversation field is ``draft.conversation_uid``
        (``GET /api/v4/leads?query=`` then an exact match; the oldest if an
        ambiguous retry made two)."""
        self._check_type(draft.object_type)
        field_id = self._conversation_field()
        body = self.api.json(
            "GET", "/api/v4/leads", params={"query": draft.conversation_uid, "limit": 50}
        )
        hits = [
            lead
            for lead in embedded(body, "leads")
            if has_value(lead, field_id, draft.conversation_uid) and not lead.get("is_deleted")
        ]
        first = oldest(hits)
        return CrmRef("lead", str(first["id"])) if first else None

    def _lead_item(self, draft: EntityDraft) -> dict[str, Any]:
        """One lead of a ``/leads/complex`` array: name, pipeline and stage
        from the mapping (numeric ids), owner, the conversation field, the
        mapping's lead fields (UTM...), tags, the contact embedded as
        ``{id}``; ``request_id`` is the conversation uid."""
        self._check_type(draft.object_type)
        lead: dict[str, Any] = {"name": draft.name[:255] or draft.conversation_uid}
        if draft.pipeline:
            lead["pipeline_id"] = to_int(draft.pipeline, "pipeline (mapping `pipeline`)")
        if draft.stage:
            lead["status_id"] = to_int(draft.stage, "stage (mapping `stage`)")
        if draft.owner_id:
            lead["responsible_user_id"] = to_int(draft.owner_id, "owner id")
        ids = self.settings.custom_fields.get("leads") or {}
        values = custom_values(draft.properties, ids, "lead")
        values.append(text_value(self._conversation_field(), draft.conversation_uid))
        lead["custom_fields_values"] = merge_fields(values)
        tags = [BRIDGE_TAG]
        if draft.channel_title:
            tags.append(draft.channel_title)
        lead["_embedded"] = {
            "contacts": [{"id": to_int(draft.contact.id, "contact id")}],
            "tags": [{"name": t} for t in tags],
        }
        lead["request_id"] = draft.conversation_uid
        return lead

    def update_entity(
        self, entity: CrmRef, properties: Mapping[str, str], owner_id: str | None = None
    ) -> None:
        """``PATCH /api/v4/leads/{id}``: ``responsible_user_id`` and the
        custom fields the setup created for the properties (the fields not
        sent are kept)."""
        self._check_type(entity.kind)
        body: dict[str, Any] = {}
        if owner_id:
            body["responsible_user_id"] = to_int(owner_id, "owner id")
        ids = self.settings.custom_fields.get("leads") or {}
        values = custom_values(properties, ids, "lead")
        if values:
            body["custom_fields_values"] = values
        if body:
            self.api.json("PATCH", f"/api/v4/leads/{to_int(entity.id, 'lead id')}", json=body)

    def tag_entity(self, entity: CrmRef, tags: Sequence[str]) -> None:
        """``PATCH /api/v4/leads/{id}`` with ``tags_to_add`` (FACTS 1.7: a
        lead field next to ``_embedded.tags``, which would replace the
        lead's tags): the lead keeps the tags its managers gave it."""
        self._check_type(entity.kind)
        if tags:
            self.api.json(
                "PATCH",
                f"/api/v4/leads/{to_int(entity.id, 'lead id')}",
                json={"tags_to_add": [{"name": tag} for tag in tags]},
            )

    def create_entity(self, draft: EntityDraft) -> CrmRef:
        """``POST /api/v4/leads/complex`` (a bare-array answer) with one
        lead (:meth:`_lead_item`)."""
        return self.create_entities({"lead": draft})["lead"]

    def create_entities(self, drafts: Mapping[str, EntityDraft]) -> dict[str, CrmRef]:
        """Up to 50 leads per ``POST /api/v4/leads/complex`` (its documented
        maximum, FACTS 1.7), each answer matched back by its ``request_id``
        (the conversation uid; the complex answer gives it as an array)."""
        made: dict[str, CrmRef] = {}
        keys = list(drafts)
        try:
            for start in range(0, len(keys), COMPLEX_CHUNK):
                chunk = keys[start : start + COMPLEX_CHUNK]
                items = [self._lead_item(drafts[k]) for k in chunk]
                body = self.api.json("POST", "/api/v4/leads/complex", json=items)
                if not isinstance(body, list) or not body:
                    raise PermanentError("amoCRM /leads/complex did not return the new lead")
                by_request: dict[str, Mapping[str, Any]] = {}
                for n, lead in enumerate(body):
                    if not isinstance(lead, Mapping):
                        continue
                    echoed = lead.get("request_id")
                    names = echoed if isinstance(echoed, list) else [echoed]
                    if echoed is None and n < len(items):
                        names = [items[n]["request_id"]]  # no echo: in order
                    for name in names:
                        by_request.setdefault(str(name), lead)
                for key in chunk:
                    lead = by_request.get(drafts[key].conversation_uid)
                    if lead is None or lead.get("id") is None:
                        raise PermanentError(
                            "amoCRM /leads/complex did not return the new lead's id"
                        )
                    made[key] = CrmRef("lead", str(lead["id"]))
        except BridgeError as exc:
            exc.created = {**made, **exc.created}
            raise
        return made

    def entity_is_open(self, entity: CrmRef) -> bool:
        """False once the lead is won (142), lost (143) or deleted."""
        response = self.api.request(
            "GET", f"/api/v4/leads/{to_int(entity.id, 'lead id')}", ok=(404,)
        )
        if response.status_code in (204, 404) or not response.content:
            return False
        try:
            lead = response.json()
        except ValueError:
            return True  # unreadable: do not open a second lead on a guess
        if not isinstance(lead, Mapping) or lead.get("is_deleted"):
            return False
        try:
            return int(str(lead.get("status_id"))) not in CLOSED_STATUSES
        except (TypeError, ValueError):
            return True
