"""The bridge's admin console from inside HubSpot: a signed call for a
short-lived login link.

HubSpot has no settings page of an app that signs the user into the app's
own site (none in the stored contracts). What it does sign is the requests
it sends on an app's behalf: its v3 request signature (FACTS 3.6,
``X-HubSpot-Signature-v3`` over method, full URL, body and
``X-HubSpot-Request-Timestamp``, the app's client secret as the key, a
300 s window), the same one the app's webhooks carry (``webhooks.verify_v3``).
A CRM card's data fetch or a settings action of the app calls
``/console/crm/hubspot`` that way, naming the portal and the user:

* ``GET`` with the query ``portalId``, ``userId`` (and ``userEmail``,
  ``associatedObjectId``, ``associatedObjectType``: a CRM card's data fetch
  sends these; UNCONFIRMED in the stored copies), or
* ``POST`` with a JSON object holding ``portalId`` and ``userId``.

The signature proves the call is HubSpot's, for this app; ``portalId`` and
``userId`` are HubSpot's own values in it. The bridge answers with a login
link (``bridge.console.crm_login``): what the card or action shows the user.
HubSpot says nothing of the user's rights in such a call: whoever HubSpot
shows the app's card or action to is taken as an admin of the portal's tenant
(only of that tenant).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bridge.errors import PayloadError, SignatureError
from bridge.model import WebhookRequest
from crm_adapters.base import ConsoleIdentity

from .settings import HubSpotApp
from .webhooks import verify_v3

if TYPE_CHECKING:
    from .adapter import HubSpotAdapter

__all__ = ["console_account", "console_identity"]

_MAX_ID = 20  # digits of a portal or user id


def _params(request: WebhookRequest) -> Mapping[str, Any]:
    """The call's named values: the query of a GET, the JSON object of a POST."""
    if request.method.upper() == "GET":
        return request.query
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise PayloadError("HubSpot console call: the body is not JSON") from None
    if not isinstance(body, Mapping):
        raise PayloadError("HubSpot console call: the body is not a JSON object")
    return body


def _id(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    if not text.isdigit() or len(text) > _MAX_ID:
        raise PayloadError(f"HubSpot console call: {name} must be a number")
    return text


def console_account(app: HubSpotApp, request: WebhookRequest) -> str | None:
    """The portal of a v3-signed call (``SignatureError`` unless HubSpot
    signed it for this app within the 300 s window)."""
    verify_v3(request, app.client_secret)
    return _id(_params(request), "portalId")


def console_identity(adapter: HubSpotAdapter, request: WebhookRequest) -> ConsoleIdentity:
    """The portal's user the signed call names (checked again here: the
    signature, and that the portal is this tenant's)."""
    verify_v3(request, adapter.app.client_secret)
    params = _params(request)
    portal = _id(params, "portalId")
    own = str(adapter.account.account_id or "")
    if not own or not hmac.compare_digest(portal.encode(), own.encode()):
        raise SignatureError("HubSpot console call names another portal")
    email = params.get("userEmail")
    return ConsoleIdentity(
        account_id=own,
        user_id=_id(params, "userId"),
        admin=True,
        in_browser=False,
        name=str(email)[:200] if isinstance(email, str) else "",
    )
