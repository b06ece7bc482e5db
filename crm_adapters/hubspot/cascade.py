"""A HubSpot workflow asking for a cascade message
(``CrmAdapter.cascade_contact``).

A contact-based workflow's "Send a webhook" action POSTs the enrolled
record as JSON to a URL the admin types, where query parameters may be
added (HubSpot KB "Use webhooks with HubSpot workflows": POST or GET,
``?queryparameter=abc`` on the URL, authentication by a request signature
or an API key in a header or the query; retries for up to three days, none
after a 4xx). The admin types the tenant's cascade URL with the message in
its query.

The body's shape is UNCONFIRMED (not in ../shared/contracts): the record
id is read from ``objectId`` (the field HubSpot's webhook payloads name an
object by, "Webhooks API" event fields) or, for a legacy contact workflow,
``vid``; a body naming another object type (``objectType`` other than
``CONTACT``, ``objectTypeId`` other than ``0-1``) is refused. The call's
own id is the body's digest: a retried delivery is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from bridge.errors import PayloadError
from bridge.model import WebhookRequest

__all__ = ["cascade_contact"]

#: how HubSpot names the contact object type (CRM object type ids: 0-1)
_CONTACT = {"contact", "contacts", "0-1"}


def cascade_contact(request: WebhookRequest) -> tuple[str, str]:
    """The enrolled contact's id and the call's digest."""
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        raise PayloadError("HubSpot workflow webhook body is not JSON") from None
    if not isinstance(body, Mapping):
        raise PayloadError("HubSpot workflow webhook body must be an object")
    kind = body.get("objectType", body.get("objectTypeId"))
    if kind is not None and str(kind).strip().lower() not in _CONTACT:
        raise PayloadError("a cascade is sent to a contact: use a contact-based workflow")
    contact = _id(body.get("objectId", body.get("vid")))
    if contact is None:
        raise PayloadError("HubSpot workflow webhook names no contact (objectId)")
    return contact, "hubspot:" + hashlib.sha256(request.body).hexdigest()[:40]


def _id(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    return None
