"""One client, two amoCRM contacts: no merge the bridge may call, so the core
links them with a note on each (``note_contact``).

**No merge.** amoCRM's public API v4 has no contact merge: the contacts API
(FACTS 1.5: ``GET|POST|PATCH /api/v4/contacts``, ``/contacts/chats``) and the
rest of FACTS 1 name none, and the only "merged" in it is ``/leads/complex``'s
duplicate control (FACTS 1.7: ``"merged": false`` in its answer), which
merges a *new* lead's contact into an existing one while it is created, not
two contacts that both exist. amoCRM's "Объединить" in the UI calls private
endpoints no integration may rely on. ``merge_contacts`` is therefore False.

**Merges a person makes in amoCRM.** The account webhook reports the
merged-away contact as ``contacts[delete]`` with its ``id`` only (FACTS 1.12:
"For deletes: ``{entity:{delete:[{id}]}}``"); nothing in it names the
survivor, so ``webhooks`` keeps turning it into ``CONTACT_REMOVED`` (the next
message finds the person again by identity, phone, e-mail) rather than
guessing a ``CONTACT_MERGED``.

**Note.** ``POST /api/v4/contacts/{id}/notes`` with one ``common`` note
(FACTS 1.9: ``params.text``), the bridge marker of ``key`` at the end of its
first line (``freetext``: hidden, or the visible tag). Notes have no custom
fields, so before writing, the contact's ``common`` notes are listed
(newest first) and one carrying the key's marker is returned instead.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import PermanentError
from bridge.model import CrmRef
from crm_adapters.freetext import attach_marker, marker, marker_hash

from .client import embedded
from .fields import as_map, to_int
from .timeline import NotesMixin, parse_marker

__all__ = ["MergeMixin"]

#: pages of a contact's notes a look-up reads (250 each, FACTS 1.3)
NOTE_PAGES = 4


class MergeMixin(NotesMixin):
    """``merge_contacts`` and ``note_contact`` of the amoCRM adapter."""

    def merge_contacts(self, keep: CrmRef, gone: CrmRef) -> bool:
        """False: amoCRM has no public contact merge (see the module
        docstring); the core links the two with notes."""
        return False

    def note_contact(self, contact: CrmRef, text: str, key: str) -> CrmRef:
        """A common note on the contact, once per ``key``."""
        contact_id = to_int(contact.id, "contact id")
        found = self._contact_note(contact_id, key)
        if found is not None:
            return found
        tag = marker(key, visible=self._visible_marker())
        item: dict[str, Any] = {
            "note_type": "common",
            "params": {"text": attach_marker(text, tag)},
            "request_id": key,
        }
        body = self.api.json("POST", f"/api/v4/contacts/{contact_id}/notes", json=[item])
        notes = embedded(body, "notes")
        if not notes or notes[0].get("id") is None:
            raise PermanentError("amoCRM did not return the new note's id")
        return CrmRef("note", str(notes[0]["id"]))

    def _contact_note(self, contact_id: int, key: str) -> CrmRef | None:
        """The contact's note carrying ``key``'s marker, if one was written."""
        wanted = marker_hash(key)
        for page in range(1, NOTE_PAGES + 1):
            body = self.api.json(
                "GET",
                f"/api/v4/contacts/{contact_id}/notes",
                params=[
                    ("filter[note_type][]", "common"),
                    ("order[updated_at]", "desc"),
                    ("limit", "250"),
                    ("page", str(page)),
                ],
            )
            notes = embedded(body, "notes")
            for note in notes:
                found = parse_marker(as_map(note.get("params")).get("text") or note.get("text"))
                if found is not None and found[0] == wanted:
                    return CrmRef("note", str(note["id"]))
            if len(notes) < 250:
                return None
        return None
