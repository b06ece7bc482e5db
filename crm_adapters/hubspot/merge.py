"""One client, two HubSpot contacts: the merge, and a note on a contact.

**Merge** (``merge_contacts``): ``POST /crm/v3/objects/contacts/merge`` with
``PublicMergeInput {"primaryObjectId", "objectIdToMerge"}`` (both strings,
both required; spec ``crm-objects-contacts.v3.json`` path ``/merge``,
FACTS 3.3), 200 with the surviving contact. HubSpot moves the secondary's
associations (deals, tickets, engagements) to the primary and keeps its id
in the survivor's ``hs_merged_object_ids`` (HubSpot/hubspot-api-nodejs#6);
a GET of the old id opens the survivor (HubSpot's merge guide, UNCONFIRMED:
the sandbox switch ``merged_id_resolves``). What HubSpot answers when the
pair is merged already is not in the stored specs (UNCONFIRMED, sandbox
switch ``merge_again``): on a 4xx we read both ids back, and when they open
the same record the merge is done (a retry after a timeout is True, not a
failure). That check also covers a merge that made a new record
(``newObjectId``, changelog "New subscription types for webhooks").

**Note** (``note_contact``): a note (``hs_note_body``, ``hs_timestamp``)
associated to the contact (type 202, FACTS 3.4), the same request the
timeline's notes use, carrying the key in ``bridge_message_id``; it is
looked up by that property first, as the timeline's retries are (search is
eventually consistent, FACTS 3.3: a retry within seconds of a write HubSpot
did commit may still write a second note).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping
from typing import Any

from bridge.errors import PermanentError
from bridge.model import CrmRef

from .search import SearchMixin
from .timeline import association, hubspot_time

__all__ = ["MergeMixin", "note_input"]

CONTACTS = "/crm/v3/objects/contacts"


def note_input(contact: CrmRef, text: str, key: str, now: dt.datetime) -> dict[str, Any]:
    """The ``POST /crm/v3/objects/notes`` body of a note on ``contact``: the
    text escaped into HTML paragraphs (``hs_note_body`` is rich text), the key
    in ``bridge_message_id``."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()] or [text]
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return {
        "properties": {
            "hs_timestamp": hubspot_time(now),
            "hs_note_body": body,
            "bridge_message_id": key,
        },
        "associations": [association("note", contact)],
    }


class MergeMixin(SearchMixin):
    """``merge_contacts`` and ``note_contact`` of the HubSpot adapter."""

    def merge_contacts(self, keep: CrmRef, gone: CrmRef) -> bool:
        """``gone`` merged into ``keep`` by HubSpot's merge; True also when
        HubSpot refuses because the two are one record already (a retry)."""
        if str(keep.id) == str(gone.id):
            return True
        try:
            self.api.json(
                "POST",
                f"{CONTACTS}/merge",
                json={"primaryObjectId": str(keep.id), "objectIdToMerge": str(gone.id)},
                limit=self.api_limit,
            )
        except PermanentError as refused:
            if refused.status is not None and self._one_record(keep, gone):
                return True
            raise
        return True

    def _one_record(self, keep: CrmRef, gone: CrmRef) -> bool:
        """Both ids open the same record (they are merged already)."""
        survivors = {self._opens(keep), self._opens(gone)}
        return None not in survivors and len(survivors) == 1

    def _opens(self, contact: CrmRef) -> str | None:
        """The id of the record ``GET /contacts/{id}`` answers (the survivor
        for a merged-away id), None when it answers none."""
        try:
            body = self.api.json(
                "GET",
                f"{CONTACTS}/{contact.id}",
                params={"properties": "hs_merged_object_ids"},
                limit=self.api_limit,
            )
        except PermanentError:  # 404 and the like: no record behind the id
            return None
        return str(body["id"]) if isinstance(body, Mapping) and body.get("id") else None

    def note_contact(self, contact: CrmRef, text: str, key: str) -> CrmRef:
        """A note on the contact's timeline, once per ``key`` (looked up by
        ``bridge_message_id`` before it is written)."""
        found = self._find_by_bridge_ids("notes", [key])
        if key in found:
            return CrmRef("note", found[key])
        body = self.api.json(
            "POST",
            "/crm/v3/objects/notes",
            json=note_input(contact, text, key, dt.datetime.now(dt.UTC)),
            limit=self.api_limit,
        )
        return CrmRef("note", str(body["id"]))
