"""Events: ``event.bind`` / ``event.unbind`` / ``event.get``, delivery, install.

Delivery follows api-reference/events/index.md: a POST with
``Content-Type: application/x-www-form-urlencoded`` in PHP notation
(``event=…&event_handler_id=…&data[FIELDS][ID]=…&ts=…&auth[…]=…``), **no
retries** ("the Bitrix24 queue server will log the failure but will not resend
the event"), each attempt recorded (``GET /_state`` -> ``deliveries``).
``auth`` carries OAuth tokens only when a user did the action (index.md
"Parameter auth"); without a user it carries the endpoints, ``member_id``
and ``application_token``. Events are not sent before the installation
finished (installation-finish.md; modelled as: the install handler answered
2xx, config ``install_finish_requires_2xx``). Sending and the delivery record
are :mod:`sandbox.core.webhooks`'; REST-caused events go out on the sandbox's
:class:`~sandbox.core.webhooks.Dispatcher` (the queue server).

The portal's outgoing webhooks (config ``outgoing_webhooks``) get the same
events, with the outgoing webhook's ``auth`` (:mod:`.automation`); the
automation rules' robots are told of every deal and lead event.

``ONAPPINSTALL`` (on-app-install.md) goes to the app's install handler with a
token pair; ``ONAPPUNINSTALL`` (on-app-uninstall.md) carries no tokens, only
``application_token``. Both are shaped exactly like the vendor examples (no
``event_handler_id``).
"""

from __future__ import annotations

from typing import Any

from ..core import webhooks
from ..core.webhooks import Job
from .automation import outgoing_jobs
from .context import CallCtx, Sandbox, method
from .errors import B24Error
from .params import as_int, encode_form
from .store import AppInstall, Portal, Store

__all__ = ["KNOWN_EVENTS", "send", "dispatch", "fire_now", "install", "uninstall",
           "event_auth"]

_USER_AGENT = "Bitrix24 Webhook Engine"  # UNCONFIRMED: the queue server's User-Agent

#: events event.bind accepts (others: 400 ERROR_EVENT_NOT_FOUND, event-bind.md)
KNOWN_EVENTS = frozenset(
    ["ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPUPDATE", "ONAPPPAYMENT", "ONOFFLINEEVENT",
     "ONCRMTIMELINECOMMENTADD", "ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE",
     "ONIMCONNECTORMESSAGEADD", "ONIMCONNECTORMESSAGEUPDATE", "ONIMCONNECTORMESSAGEDELETE",
     "ONIMCONNECTORDIALOGSTART", "ONIMCONNECTORDIALOGFINISH", "ONIMCONNECTORSTATUSDELETE",
     "ONIMCONNECTORLINEDELETE"]
    + [f"ONCRM{e}{a}" for e in ("LEAD", "DEAL", "CONTACT") for a in ("ADD", "UPDATE", "DELETE")])


def _endpoints(portal: Portal, base: str) -> dict[str, str]:
    return {"domain": portal.domain, "server_endpoint": f"{base}/oauth/rest/",
            "client_endpoint": f"{base}/{portal.domain}/rest/", "member_id": portal.member_id}


def event_auth(store: Store, portal: Portal, base: str, user_id: int | None) -> dict[str, Any]:
    """``auth[...]`` of an app event. With a user: a fresh access token of that user
    and the keys of the OnImConnectorMessageAdd example (which has the most: incl.
    ``expires`` and ``user_id``); without: endpoints + application_token only."""
    assert portal.app is not None
    ends = _endpoints(portal, base)
    if user_id is None:
        return {"domain": ends["domain"], "client_endpoint": ends["client_endpoint"],
                "server_endpoint": ends["server_endpoint"], "member_id": portal.member_id,
                "application_token": portal.app.application_token}
    app = store.cfg["app"]
    scopes = list(app["scope"])
    auth: dict[str, Any] = {}
    if store.cfg.get("event_refresh_token"):
        access, refresh = store.issue_pair(portal, user_id, scopes)
        auth["access_token"] = access.token
        auth["refresh_token"] = refresh.token
    else:
        access = store.issue_access(portal, user_id, scopes)
        auth["access_token"] = access.token
    auth.update({"expires": int(access.expires_at),
                 "expires_in": int(store.cfg["access_token_ttl_s"]),
                 "scope": ",".join(scopes), "domain": ends["domain"],
                 "server_endpoint": ends["server_endpoint"], "status": app["status"],
                 "client_endpoint": ends["client_endpoint"], "member_id": portal.member_id,
                 "user_id": user_id, "application_token": portal.app.application_token})
    return auth


def _jobs(sb: Sandbox, portal: Portal, base: str, event: str, data: dict[str, Any],
          user_id: int | None) -> list[dict[str, Any]]:
    """Delivery jobs for ``event``: the outgoing webhooks', then the app's
    handlers' (caller holds the lock)."""
    jobs = outgoing_jobs(sb.cfg, portal, base, event, data, int(sb.clock.now()))
    if portal.app is None or not portal.app.finished:
        return jobs
    for binding in portal.bindings:
        if binding["event"] != event:
            continue
        acting = int(binding["auth_type"]) if binding["auth_type"] else user_id
        payload = {"event": event, "event_handler_id": binding["id"], "data": data,
                   "ts": int(sb.clock.now()), "auth": event_auth(sb.store, portal, base, acting)}
        if binding["event_type"] == "offline":
            # offline events wait in a queue (events/offline-events.md); not sent
            portal.offline_queue.append({"event": event, "data": data, "ts": payload["ts"]})
            continue
        jobs.append({"portal": portal.domain, "event": event, "handler_id": binding["id"],
                     "url": binding["handler"], "payload": payload})
    return jobs


def send(sb: Sandbox, job: dict[str, Any]) -> dict[str, Any]:
    """POST one job form-encoded, once (no retries); record the outcome."""
    body = encode_form(job["payload"])
    outcome = webhooks.send(job["url"], body.encode("utf-8"), {
        "Content-Type": "application/x-www-form-urlencoded", "User-Agent": _USER_AGENT},
        float(sb.cfg["event_timeout_s"]))
    return sb.store.deliveries.append({
        "at": sb.clock.now(), "portal": job["portal"], "event": job["event"],
        "event_handler_id": job.get("handler_id"), "url": job["url"],
        "outgoing_webhook": job.get("outgoing_webhook"),
        "payload": job["payload"], "form": body, "status": outcome.status,
        "body": None if outcome.text is None else outcome.text[:2000],  # the answer
        "error": outcome.error})


def dispatch(sb: Sandbox, ctx: CallCtx) -> None:
    """Send what a REST call queued (after its answer is built, outside the lock)."""
    if not ctx.events:
        return
    sb.automation.on_events(ctx.portal, ctx.base_url, ctx.events)  # robots, whatever the switch
    if not sb.cfg.get("events_for_rest_changes", True):
        ctx.events.clear()
        return
    with sb.store.lock:
        jobs = [j for event, data, user in ctx.events
                for j in _jobs(sb, ctx.portal, ctx.base_url, event, data, user)]
    ctx.events.clear()
    if not jobs:
        return
    if sb.cfg["event_delivery"] == "inline":
        for job in jobs:
            send(sb, job)
    else:
        sb.dispatcher.submit([Job(sb.clock.now(), data=job) for job in jobs])


def fire_now(sb: Sandbox, portal: Portal, base: str, event: str, data: dict[str, Any],
             user_id: int | None) -> list[dict[str, Any]]:
    """Send ``event`` synchronously (control endpoints); returns the delivery records."""
    sb.automation.on_events(portal, base, [(event, data, user_id)])
    with sb.store.lock:
        jobs = _jobs(sb, portal, base, event, data, user_id)
    return [send(sb, job) for job in jobs]


# -- install / uninstall (on-app-install.md, on-app-uninstall.md) --------------------------


def install(sb: Sandbox, portal: Portal, base: str, handler: str | None,
            user_id: int | None) -> dict[str, Any]:
    """Install the app on ``portal``: tokens for the installing user, ONAPPINSTALL
    to the install handler, finished when it answers 2xx. Installing again keeps
    the ``application_token`` (UNCONFIRMED) and drops the event bindings."""
    store, cfg = sb.store, sb.cfg
    app_cfg = cfg["app"]
    with store.lock:
        uid = user_id if user_id in portal.users else portal.admin_id()
        previous = portal.app
        app_token = previous.application_token if previous else store.random_token()
        portal.app = AppInstall(app_token, sb.clock.now(), uid, finished=False, handler=handler)
        # event-bind.md: "When an application is deleted or updated, its actions will be
        # removed. Therefore, they must be set from scratch in the installer of each
        # version." A repeated install is treated like an update.
        portal.bindings.clear()
        access, refresh = store.issue_pair(portal, uid, list(app_cfg["scope"]))
        ends = _endpoints(portal, base)
        payload = {"event": "ONAPPINSTALL",
                   "data": {"VERSION": str(app_cfg["version"]), "ACTIVE": "Y", "INSTALLED": "Y",
                            "LANGUAGE_ID": portal.cfg["language"]},
                   "ts": int(sb.clock.now()),
                   "auth": {"domain": portal.domain, "scope": ",".join(app_cfg["scope"]),
                            "access_token": access.token, "refresh_token": refresh.token,
                            "expires_in": int(cfg["access_token_ttl_s"]),
                            "server_endpoint": ends["server_endpoint"],
                            "status": app_cfg["status"],
                            "client_endpoint": ends["client_endpoint"],
                            "member_id": portal.member_id, "application_token": app_token}}
    delivery: dict[str, Any] | None = None
    if handler:
        delivery = send(sb, {"portal": portal.domain, "event": "ONAPPINSTALL", "url": handler,
                              "payload": payload})
        ok = delivery["status"] is not None and 200 <= delivery["status"] < 300
        finished = ok or not cfg["install_finish_requires_2xx"]
    else:
        finished = True  # an API-only app without a handler is installed at once
    with store.lock:
        if portal.app is not None:
            portal.app.finished = finished
            portal.app.result = delivery
    return {"portal": portal.domain, "installed": True, "finished": finished,
            "handler": handler, "delivery": delivery, "member_id": portal.member_id,
            "application_token": app_token, "access_token": access.token,
            "refresh_token": refresh.token, "user_id": uid}


def uninstall(sb: Sandbox, portal: Portal, base: str, clean: bool,
              handler: str | None) -> dict[str, Any]:
    """ONAPPUNINSTALL (no tokens), then every token, binding and connector dies."""
    store = sb.store
    with store.lock:
        app = portal.app
        if app is None:
            return {"portal": portal.domain, "uninstalled": False, "deliveries": [],
                    "reason": "the app is not installed"}
        targets = [b["handler"] for b in portal.bindings if b["event"] == "ONAPPUNINSTALL"]
        for extra in (sb.cfg["app"].get("uninstall_handler"), handler):
            if extra and extra not in targets:
                targets.append(extra)
        ends = _endpoints(portal, base)
        payload = {"event": "ONAPPUNINSTALL",
                   "data": {"LANGUAGE_ID": portal.cfg["language"], "CLEAN": 1 if clean else 0},
                   "ts": int(sb.clock.now()),
                   "auth": {"domain": portal.domain, "server_endpoint": ends["server_endpoint"],
                            "client_endpoint": ends["client_endpoint"],
                            "member_id": portal.member_id,
                            "application_token": app.application_token}}
        notify = app.finished
    deliveries = [send(sb, {"portal": portal.domain, "event": "ONAPPUNINSTALL", "url": url,
                             "payload": payload}) for url in targets] if notify else []
    with store.lock:
        portal.app = None
        portal.bindings.clear()
        portal.placements.clear()
        portal.connectors.clear()
        portal.activations.clear()
        store.revoke_portal(portal.domain)
    return {"portal": portal.domain, "uninstalled": True, "deliveries": deliveries}


# -- REST methods (event-bind.md, event-unbind.md) -------------------------------------------


def _is_admin(ctx: CallCtx) -> bool:
    return bool(ctx.portal.users.get(ctx.auth.user_id, {}).get("ADMIN"))


@method("event.bind", app_only="event_bind")
def event_bind(ctx: CallCtx, params: dict[str, Any]) -> bool:
    event = str(params.get("event") or params.get("EVENT") or "").strip().upper()
    handler = str(params.get("handler") or params.get("HANDLER") or "").strip()
    if event not in KNOWN_EVENTS:
        raise B24Error(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
    if not handler:
        # UNCONFIRMED code: the page lists no error for a missing handler
        raise B24Error(400, "ERROR_ARGUMENT", "Argument 'handler' is null or empty")
    event_type = "offline" if str(params.get("event_type", "")).lower() == "offline" else "online"
    auth_type = as_int(params.get("auth_type")) or 0
    if event_type == "offline" and not _is_admin(ctx):
        raise B24Error(403, "ACCESS_DENIED", "Access denied! Offline events binding requires "
                                             "administrator access rights")
    if auth_type and auth_type != ctx.auth.user_id and not _is_admin(ctx):
        raise B24Error(403, "ACCESS_DENIED", "Access denied! Event binding with AUTH_TYPE "
                                             "requires administrator access rights")
    if not _is_admin(ctx):
        auth_type = ctx.auth.user_id  # "Events are installed on behalf of the current user"
    for binding in ctx.portal.bindings:
        if (binding["event"], binding["handler"], binding["auth_type"],
                binding["event_type"]) == (event, handler, auth_type, event_type):
            # error-codes.md's example envelope; the status is UNCONFIRMED
            raise B24Error(400, "ERROR_HANDLER_ALREADY_EXIST", "Handler already exists!")
    ctx.portal.bindings.append({"id": ctx.portal.next_id("handler"), "event": event,
                                "handler": handler, "auth_type": auth_type,
                                "event_type": event_type, "bound_by": ctx.auth.user_id,
                                "at": ctx.now()})
    return True


@method("event.unbind", app_only="event_bind")
def event_unbind(ctx: CallCtx, params: dict[str, Any]) -> dict[str, int]:
    event = str(params.get("event") or "").strip().upper()
    handler = str(params.get("handler") or "").strip()
    event_type = "offline" if str(params.get("event_type", "")).lower() == "offline" else "online"
    auth_raw = params.get("auth_type")
    if event_type == "offline" and not _is_admin(ctx):
        raise B24Error(403, "ACCESS_DENIED", "Access denied! Offline events unbinding requires "
                                             "administrator access rights")
    if auth_raw not in (None, "", 0, "0") and as_int(auth_raw) != ctx.auth.user_id \
            and not _is_admin(ctx):
        raise B24Error(403, "ACCESS_DENIED", "Access denied! Event unbinding with AUTH_TYPE "
                                             "requires administrator access rights")
    keep, removed = [], 0
    for binding in ctx.portal.bindings:
        match = ((not event or binding["event"] == event)
                 and (not handler or binding["handler"] == handler)
                 and binding["event_type"] == event_type
                 and (auth_raw is None or (as_int(auth_raw) or 0) == binding["auth_type"]))
        if match:
            removed += 1
        else:
            keep.append(binding)
    ctx.portal.bindings[:] = keep
    return {"count": removed}


@method("event.get", app_only="event_bind")
def event_get(ctx: CallCtx, params: dict[str, Any]) -> list[dict[str, Any]]:
    """UNCONFIRMED shape (event-get.md is not in the stored docs)."""
    return [{"event": b["event"], "handler": b["handler"], "auth_type": str(b["auth_type"]),
             "offline": 1 if b["event_type"] == "offline" else 0}
            for b in ctx.portal.bindings]
