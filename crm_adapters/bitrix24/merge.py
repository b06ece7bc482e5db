"""One client, two Bitrix24 contacts: the bridge does not merge them; the
core links them with a timeline comment on each (``note_contact``).

**No merge.** The stored Bitrix24 docs (``../shared/contracts/bitrix24/docs``,
b24restdocs @ 5988ed13) document no merge method: ``crm.duplicate.findbycomm``
(``api-reference/crm/duplicates/crm-duplicate-find-by-comm.md``) only links
to a ``crm-entity-merge-batch.md`` page (line 335) that is not among them.
Bitrix24's public page for that method, ``crm.entity.mergeBatch``
(dev.1c-bitrix.ru/rest_help/crm/auxiliary/duplicates/crm_entity_mergeBatch.php),
takes ``params: {entityTypeId, entityIds[]}`` and does **not** let the caller
name the survivor (its answer lists the ids merged away), and it may answer
``STATUS: CONFLICT`` and leave the merge to a person in the UI. The core's
``merge_contacts(keep, gone)`` must keep ``keep``: without a documented
way to choose it, ``merge_contacts`` is False (UNCONFIRMED in the stored
contracts; revisit if the page is added to them).

**Merges a person makes in Bitrix24** are seen as ``ONCRMCONTACTDELETE``
for the contact merged away (``data[FIELDS][ID]`` only: the docs name no
merge event and no survivor), so ``webhooks`` keeps ``CONTACT_REMOVED``.

**Note.** ``crm.timeline.comment.add`` with ``ENTITY_TYPE`` ``contact``
(FACTS 2.7; ``crm-timeline-comment-add.md``), the bridge marker of ``key``
at the end of its first line (``freetext``). Before writing, the contact's
comments are listed (``crm.timeline.comment.list``, newest first) and one
carrying the key's marker is returned instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.model import CrmRef
from crm_adapters.freetext import attach_marker, marker, marker_hash

from .timeline import TimelineMixin, parse_marker, to_int

__all__ = ["MergeMixin"]

#: pages (50 comments each) of a contact's timeline a look-up reads
NOTE_PAGES = 4


class MergeMixin(TimelineMixin):
    """``merge_contacts`` and ``note_contact`` of the Bitrix24 adapter."""

    def merge_contacts(self, keep: CrmRef, gone: CrmRef) -> bool:
        """False: no documented merge that keeps ``keep`` (module docstring);
        the core links the two with comments."""
        return False

    def note_contact(self, contact: CrmRef, text: str, key: str) -> CrmRef:
        """A timeline comment on the contact, once per ``key``."""
        contact_id = to_int(contact.id, "contact id")
        found = self._contact_comment(contact_id, key)
        if found is not None:
            return found
        comment = attach_marker(text, marker(key, visible=self._visible_marker()))
        answer = self.api.call(
            "crm.timeline.comment.add",
            {"fields": {"ENTITY_ID": contact_id, "ENTITY_TYPE": "contact", "COMMENT": comment}},
        )
        return CrmRef("comment", str(answer.result))

    def _contact_comment(self, contact_id: int, key: str) -> CrmRef | None:
        """The contact's comment carrying ``key``'s marker, if one was written."""
        wanted = marker_hash(key)
        start: int | None = 0
        for _ in range(NOTE_PAGES):
            answer = self.api.call(
                "crm.timeline.comment.list",
                {
                    "filter": {"ENTITY_ID": contact_id, "ENTITY_TYPE": "contact"},
                    "select": ["ID", "COMMENT"],
                    "order": {"ID": "DESC"},
                    "start": start,
                },
            )
            rows = answer.result if isinstance(answer.result, list) else []
            for row in rows:
                if isinstance(row, Mapping) and parse_marker(row.get("COMMENT")) == wanted:
                    return CrmRef("comment", str(row.get("ID")))
            start = answer.next
            if start is None:
                return None
        return None
