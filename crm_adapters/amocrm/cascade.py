"""An amoCRM digital pipeline asking for a cascade message
(``CrmAdapter.cascade_contact``).

A pipeline stage's "webhook" action posts the lead in amoCRM's webhook
format (FACTS 1.12: ``application/x-www-form-urlencoded`` in PHP bracket
notation, ``leads[<action>][0][id]=…&account[id]=…``, values as strings,
unsigned: the secret is the URL's key, and the body must name the tenant's
account). Contacts arrive the same way under ``contacts`` with ``type:
contact``. That the digital pipeline's webhook uses exactly the account
webhooks' format is UNCONFIRMED (not in ../shared/contracts); it is what
the parser accepts.

A lead's client is its main contact, read with ``GET /api/v4/leads/{id}
?with=contacts`` (``_embedded.contacts[{id, is_main}]``, FACTS 1.7). The
call's own id is the body's digest: amoCRM retries a failed delivery with
the same body (after 5 and 15 minutes, FACTS 1.12).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from bridge.errors import PayloadError

__all__ = ["cascade_target"]


def cascade_target(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    """What the body names: ``("contact", id)`` or ``("lead", id)``, or None."""
    contacts = payload.get("contacts")
    for item in _items(contacts):
        if str(item.get("type") or "contact") == "contact" and _id(item.get("id")):
            return "contact", str(_id(item.get("id")))
    for item in _items(payload.get("leads")):
        if _id(item.get("id")):
            return "lead", str(_id(item.get("id")))
    return None


def cascade_contact(
    payload: Mapping[str, Any], body: bytes, lead_contacts: Callable[[str], list[Any]]
) -> tuple[str, str]:
    """The contact (a lead's main one, read through ``lead_contacts``) and
    the call's digest."""
    target = cascade_target(payload)
    if target is None:
        raise PayloadError("amoCRM webhook names no lead or contact")
    kind, entity_id = target
    digest = "amocrm:" + hashlib.sha256(body).hexdigest()[:40]
    if kind == "contact":
        return entity_id, digest
    contacts = [c for c in lead_contacts(entity_id) if isinstance(c, Mapping) and c.get("id")]
    if not contacts:
        raise PayloadError("the amoCRM lead has no contact to write to")
    main = next((c for c in contacts if c.get("is_main")), contacts[0])
    return str(main["id"]), digest


def _items(section: Any) -> list[Mapping[str, Any]]:
    """``{action: {"0": {...}}}`` -> the items of every action."""
    if not isinstance(section, Mapping):
        return []
    found: list[Mapping[str, Any]] = []
    for action in section.values():
        values = action.values() if isinstance(action, Mapping) else action
        if isinstance(values, (list, tuple)) or isinstance(action, Mapping):
            found.extend(v for v in values if isinstance(v, Mapping))
    return found


def _id(value: Any) -> str | None:
    text = str(value or "").strip()
    return text if text.isdigit() else None
