"""A Bitrix24 outgoing webhook asking for a cascade message
(``CrmAdapter.cascade_contact``).

An outgoing webhook (*Developer resources > Other > Outgoing webhook*)
sends a chosen event to a handler URL as
``application/x-www-form-urlencoded``: ``event``, ``data[FIELDS][ID]``,
``ts`` and ``auth[domain|member_id|application_token]``
(../shared/contracts/bitrix24/docs/local-integrations/local-webhooks.md,
"What the Handler Receives"). The admin points a contact event
(``ONCRMCONTACTADD``, ``ONCRMCONTACTUPDATE``) at the tenant's cascade URL
with the message in its query; the URL's key is the secret, and the body's
``auth[member_id]`` must be the tenant's portal where we know it (the
outgoing webhook's own token is shown to the admin only, and differs from
an app's). Other events are refused: a robot in a deal's automation is not
covered (its handler contract is not in ../shared/contracts).

The call's own id is ``event:ID``, without ``ts``: ``ts`` is the queue's
sending time (local-webhooks.md, "Event sending time"), not the event's, and
``ONCRMCONTACTUPDATE`` fires on every write of the contact, the bridge's own
included (its live reach field, a phone learnt later). So one automation
(the URL's ``key``) sends one message per contact: a second message to the
same contacts needs a new ``key`` (a new campaign), and the bridge's own
writes never send it twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.errors import PayloadError, SignatureError

__all__ = ["CONTACT_EVENTS", "cascade_contact"]

CONTACT_EVENTS = ("ONCRMCONTACTADD", "ONCRMCONTACTUPDATE")


def cascade_contact(payload: Mapping[str, Any], member_id: str | None) -> tuple[str, str]:
    """The contact the event names and the call's id."""
    auth = payload.get("auth")
    theirs = str(auth.get("member_id") or "") if isinstance(auth, Mapping) else ""
    if member_id and theirs != member_id:
        raise SignatureError("Bitrix24 outgoing webhook is for another portal")
    event = str(payload.get("event") or "").upper()
    if event not in CONTACT_EVENTS:
        raise PayloadError(
            f"a cascade is started by a contact event ({', '.join(CONTACT_EVENTS)}), "
            f"not {event or 'an unnamed one'}"
        )
    data = payload.get("data")
    fields = data.get("FIELDS") if isinstance(data, Mapping) else None
    contact = str(fields.get("ID") or "").strip() if isinstance(fields, Mapping) else ""
    if not contact.isdigit():
        raise PayloadError("Bitrix24 outgoing webhook names no contact (data[FIELDS][ID])")
    return contact, f"bitrix24:{event}:{contact}"
