"""Deals and tickets: find by conversation uid, create with the contact
association inline, tell whether one is still open (pipelines cached)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.errors import BridgeError, PermanentError
from bridge.model import CrmRef, EntityDraft

from .client import decode
from .search import BATCH_SIZE, SearchMixin, batch_reason, chunks, in_or_eq, matched, oldest
from .timeline import association

__all__ = ["ENTITY_OBJECTS", "EntitiesMixin"]

#: EntityDraft.object_type -> CRM object path
ENTITY_OBJECTS: dict[str, str] = {"deal": "deals", "ticket": "tickets"}
#: HubSpot's default pipeline ids (guides; UNCONFIRMED in the specs, FACTS 3.5)
DEFAULT_PIPELINE = {"deal": "default", "ticket": "0"}
CLOSED_DEAL_STAGES = frozenset({"closedwon", "closedlost"})


class EntitiesMixin(SearchMixin):
    """The deal/ticket hooks of :class:`~crm_adapters.hubspot.HubSpotAdapter`."""

    _pipelines: dict[str, list[Mapping[str, Any]]]

    @staticmethod
    def _entity_path(object_type: str) -> str:
        try:
            return ENTITY_OBJECTS[object_type]
        except KeyError:
            raise PermanentError(
                f"HubSpot entity type {object_type!r} is not supported (deal, ticket)"
            ) from None

    def find_entity(self, draft: EntityDraft) -> CrmRef | None:
        """The deal/ticket whose ``bridge_conversation_id`` is the draft's
        conversation uid (the oldest if an ambiguous retry made two)."""
        return self.find_entities({"": draft}).get("")

    def find_entities(self, drafts: Mapping[str, EntityDraft]) -> dict[str, CrmRef]:
        """:meth:`find_entity` for many: one search per object type and 100
        conversation uids (``IN``), the oldest record per uid."""
        found: dict[str, CrmRef] = {}
        for object_type, group in _by_type(drafts).items():
            for chunk in chunks(list(group), BATCH_SIZE):
                uids = sorted({group[k].conversation_uid for k in chunk})
                hits = self._search(
                    self._entity_path(object_type),
                    [{"filters": [in_or_eq("bridge_conversation_id", uids)]}],
                    ["bridge_conversation_id"],
                )
                for key in chunk:
                    uid = group[key].conversation_uid
                    # one uid searched: every hit is its (as the search says)
                    mine = [
                        h
                        for h in hits
                        if len(uids) == 1
                        or (h.get("properties") or {}).get("bridge_conversation_id") == uid
                    ]
                    first = oldest(mine)
                    if first is not None:
                        found[key] = CrmRef(object_type, str(first["id"]))
        return found

    def _entity_input(self, draft: EntityDraft) -> dict[str, Any]:
        """A create body: a deal (``dealname``, ``pipeline``, ``dealstage``)
        or ticket (``subject``, ``hs_pipeline``, ``hs_pipeline_stage``,
        ``content``) with the contact association inline (deal->contact 3,
        ticket->contact 16, FACTS 3.4). A missing stage is the pipeline's
        first open stage."""
        self._entity_path(draft.object_type)
        pipeline = draft.pipeline or DEFAULT_PIPELINE[draft.object_type]
        stage = draft.stage or self._first_open_stage(draft.object_type, pipeline)
        if draft.object_type == "deal":
            props = {"dealname": draft.name, "pipeline": pipeline, "dealstage": stage}
        else:
            props = {
                "subject": draft.name,
                "hs_pipeline": pipeline,
                "hs_pipeline_stage": stage,
                "content": draft.name,
            }
        if draft.owner_id:
            props["hubspot_owner_id"] = str(draft.owner_id)
        props.update({k: str(v) for k, v in draft.properties.items() if v not in (None, "")})
        props["bridge_conversation_id"] = draft.conversation_uid
        return {
            "properties": props,
            "associations": [association(draft.object_type, draft.contact)],
        }

    def create_entity(self, draft: EntityDraft) -> CrmRef:
        """Open a deal / ticket (:meth:`_entity_input`): ``POST
        /crm/v3/objects/{deals|tickets}``."""
        body = self.api.json(
            "POST",
            f"/crm/v3/objects/{self._entity_path(draft.object_type)}",
            json=self._entity_input(draft),
            limit=self.api_limit,
        )
        return CrmRef(draft.object_type, str(body["id"]))

    def update_entity(
        self, entity: CrmRef, properties: Mapping[str, str], owner_id: str | None = None
    ) -> None:
        """``PATCH /crm/v3/objects/{deals|tickets}/{id}`` with the properties
        and ``hubspot_owner_id``."""
        props = {k: str(v) for k, v in properties.items()}
        if owner_id:
            props["hubspot_owner_id"] = str(owner_id)
        if not props:
            return
        self.api.json(
            "PATCH",
            f"/crm/v3/objects/{self._entity_path(entity.kind)}/{entity.id}",
            json={"properties": props},
            limit=self.api_limit,
        )

    def create_entities(self, drafts: Mapping[str, EntityDraft]) -> dict[str, CrmRef]:
        """:meth:`create_entity` for many: ``POST .../batch/create`` per
        object type and 100 inputs (FACTS 3.3), associations inline, the
        results matched back by ``bridge_conversation_id``. A batch HubSpot
        answered only in part raises with ``error.created`` set."""
        made: dict[str, CrmRef] = {}
        try:
            for object_type, group in _by_type(drafts).items():
                path = self._entity_path(object_type)
                for chunk in chunks(list(group), BATCH_SIZE):
                    body = self.api.json(
                        "POST",
                        f"/crm/v3/objects/{path}/batch/create",
                        json={"inputs": [self._entity_input(group[k]) for k in chunk]},
                        limit=self.api_limit,
                    )
                    by_uid = matched(body, "bridge_conversation_id")
                    for key in chunk:
                        record = by_uid.get(group[key].conversation_uid)
                        if record is not None:
                            made[key] = CrmRef(object_type, record)
                    missing = [k for k in chunk if k not in made]
                    if missing:
                        raise PermanentError(
                            f"HubSpot opened {len(chunk) - len(missing)} of {len(chunk)} "
                            f"{path}: {batch_reason(body)}"
                        )
        except BridgeError as exc:
            exc.created = {**made, **exc.created}
            raise
        return made

    def entity_is_open(self, entity: CrmRef) -> bool:
        """False once the deal/ticket is closed (``hs_is_closed``, a closed
        deal stage, or a ticket stage whose ``ticketState`` is CLOSED); a
        deleted one is not open either."""
        path = self._entity_path(entity.kind)
        stage_prop, pipeline_prop = (
            ("dealstage", "pipeline")
            if entity.kind == "deal"
            else ("hs_pipeline_stage", "hs_pipeline")
        )
        response = self.api.request(
            "GET",
            f"/crm/v3/objects/{path}/{entity.id}",
            params={"properties": f"hs_is_closed,{stage_prop},{pipeline_prop}"},
            limit=self.api_limit,
            ok=(404,),
        )
        if response.status_code == 404:
            return False
        props = decode(response).get("properties") or {}
        closed = str(props.get("hs_is_closed") or "").lower()
        if closed in ("true", "false"):
            return closed == "false"
        stage = props.get(stage_prop)
        if entity.kind == "deal" and stage in CLOSED_DEAL_STAGES:
            return False
        meta = self._stage(entity.kind, props.get(pipeline_prop), stage)
        if meta is None:
            return True
        return not _stage_closed(meta)

    def _pipelines_for(self, object_type: str) -> list[Mapping[str, Any]]:
        # cached per adapter instance: pipelines change rarely
        if object_type not in self._pipelines:
            body = self.api.json(
                "GET", f"/crm/v3/pipelines/{self._entity_path(object_type)}", limit=self.api_limit
            )
            self._pipelines[object_type] = [
                p for p in body.get("results", []) if isinstance(p, Mapping)
            ]
        return self._pipelines[object_type]

    def _stage(
        self, object_type: str, pipeline_id: str | None, stage_id: str | None
    ) -> Mapping[str, Any] | None:
        for pipeline in self._pipelines_for(object_type):
            if pipeline_id and str(pipeline.get("id")) != str(pipeline_id):
                continue
            for stage in pipeline.get("stages") or []:
                if str(stage.get("id")) == str(stage_id):
                    return stage
        return None

    def _first_open_stage(self, object_type: str, pipeline_id: str) -> str:
        for pipeline in self._pipelines_for(object_type):
            if str(pipeline.get("id")) != str(pipeline_id):
                continue
            stages = sorted(pipeline.get("stages") or [], key=lambda s: s.get("displayOrder", 0))
            for stage in stages:
                if not _stage_closed(stage) and not stage.get("archived"):
                    return str(stage["id"])
        raise PermanentError(
            f"HubSpot {object_type} pipeline {pipeline_id!r} has no open stage: "
            "set `pipeline` and `stage` in the mapping"
        )


def _stage_closed(stage: Mapping[str, Any]) -> bool:
    meta = stage.get("metadata") or {}
    if str(meta.get("ticketState") or "").upper() == "CLOSED":
        return True
    return str(meta.get("isClosed") or "").lower() == "true"


def _by_type(drafts: Mapping[str, EntityDraft]) -> dict[str, dict[str, EntityDraft]]:
    out: dict[str, dict[str, EntityDraft]] = {}
    for key, draft in drafts.items():
        out.setdefault(draft.object_type, {})[key] = draft
    return out
