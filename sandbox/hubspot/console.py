"""A signed call HubSpot makes on an app's behalf for one of its users: the
app's CRM card fetching its data, or a settings action (the bridge answers
it with a login link to its admin console).

* ``POST /_console_link`` ``{"url", "account"? (portal id; default the
  first), "user_id"? (an owner's id or userId; default the first owner),
  "method"?: "GET" | "POST", "secret"? (sign with another secret: a forged
  call)}`` -- the sandbox calls ``url`` with HubSpot's v3 request signature
  (FACTS 3.6: ``X-HubSpot-Signature-v3`` over method + full URL + body +
  ``X-HubSpot-Request-Timestamp``, keyed by the app's client secret). A GET
  carries ``userId``, ``userEmail``, ``associatedObjectId``,
  ``associatedObjectType`` and ``portalId`` in the query, as a CRM card's
  data fetch does (UNCONFIRMED: HubSpot's card docs are not in the stored
  copies); a POST the same names in a JSON object. Answers ``{"status",
  "body", "error", "url"}`` (the receiver's answer).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response

from ..core import webhooks
from ..core.control import ControlError, json_object
from .context import sandbox
from .errors import json_response
from .signature import v3_headers
from .store import Portal

__all__ = ["bp"]

bp = Blueprint("console", __name__)

_AGENT = "HubSpot Connect 2.0 (http://dev.hubspot.com/)"


def _portal(selector: Any) -> Portal:
    store = sandbox().store
    if selector in (None, ""):
        return next(iter(store.portals.values()))
    portal = store.portals.get(int(selector)) if str(selector).isdigit() else None
    if portal is None:
        raise ControlError(f"unknown portal {selector}", 404, "portal_not_found")
    return portal


def _user(portal: Portal, selector: Any) -> dict[str, Any]:
    if selector in (None, ""):
        if not portal.owners:
            raise ControlError("the portal has no users", 404, "user_not_found")
        return portal.owners[0]
    for owner in portal.owners:
        if str(selector) in (owner["id"], str(owner["userId"])):
            return owner
    raise ControlError(f"unknown user {selector}", 404, "user_not_found")


@bp.route("/_console_link", methods=["POST"])
def console_link() -> Response:
    body = json_object()
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ControlError("url (the app's endpoint) is required")
    method = str(body.get("method") or "GET").upper()
    if method not in ("GET", "POST"):
        raise ControlError("method must be GET or POST")
    sb = sandbox()
    with sb.store.lock:
        portal = _portal(body.get("account"))
        user = _user(portal, body.get("user_id"))
        secret = str(body.get("secret") or sb.store.cfg["app"]["client_secret"])
        values = {"userId": str(user["userId"]), "userEmail": user["email"],
                  "associatedObjectId": "0", "associatedObjectType": "CONTACT",
                  "portalId": str(portal.id)}
        timeout = float(sb.store.cfg["webhook_timeout_s"])
    headers: dict[str, str | None] = {"User-Agent": _AGENT}
    if method == "GET":
        target = url + ("&" if "?" in url else "?") + urlencode(values)
        payload = ""
    else:
        target = url
        payload = json.dumps(values, separators=(",", ":"))
        headers["Content-Type"] = "application/json"
    headers.update(v3_headers(secret, method, target, payload))
    sent = webhooks.send(target, payload.encode() if payload else None, headers, timeout,
                         method=method)
    return json_response({"status": sent.status, "body": sent.body(), "error": sent.error,
                          "url": target})
