"""Outgoing webhooks, and automation rules' webhook robots: Bitrix24 posting
to a URL the admin typed (the receiving side of a cascade is
``crm_adapters/bitrix24/cascade.py``).

**Outgoing webhooks** (config ``outgoing_webhooks``; contracts
local-integrations/local-webhooks.md "Outgoing Webhook", api-reference/
events/index.md "Subscribing via an Outgoing Webhook" and "Event Sent to an
Outgoing Webhook"), each ``{"portal"?: domain (default: the first), "url",
"events": ["ONCRMCONTACTUPDATE", ...], "application_token"?}``:

* fired by the events the app's handlers get (REST changes and the UI
  controls: :mod:`.events` asks :func:`outgoing_jobs`), whether or not the
  app is installed;
* the body is the documented one, form-encoded: ``event``,
  ``event_handler_id``, ``data[FIELDS][ID]``, ``ts``, and ``auth`` with
  ``domain``, ``client_endpoint``, ``server_endpoint``, ``member_id`` and
  ``application_token`` only (no user tokens);
* the application token is "generated automatically" when the webhook is
  saved: the configured one, else one derived from the portal and the URL
  (``GET /_state`` -> ``outgoing_webhooks`` shows it, as the UI does);
* sent once, never retried (online events: FACTS 2.6), recorded in
  ``deliveries`` like the app's events.

**Robots** (config ``robot_webhooks``; UNCONFIRMED as a whole: the contracts
do not cover automation rules), each ``{"portal"?, "entity": "deal" |
"lead", "stage": "WON" | "C1:NEW" | "PROCESSED" ..., "url"}``:

* a robot runs when a deal (lead) **enters** its stage: created in it, or
  moved into it by REST (``crm.deal.update`` ``STAGE_ID``, ``crm.lead.update``
  ``STATUS_ID``) or by a user (``POST /_deal_stage``, ``/_lead_status``);
  a write that leaves the stage as it was runs nothing. It is told of stage
  changes by the ``ONCRM{DEAL,LEAD}{ADD,UPDATE}`` events the sandbox raises
  (:meth:`Automation.on_events`), whatever ``events_for_rest_changes`` says;
* the body, config ``robot_webhook_body``: ``"document"`` (default) the
  business-process document id and the portal's endpoints,
  ``document_id[0]=crm&document_id[1]=CCrmDocumentDeal&document_id[2]=DEAL_42
  &auth[domain]=...&auth[client_endpoint]=...&auth[server_endpoint]=...
  &auth[member_id]=...`` [community: handlers read ``document_id[2]``], or
  ``"event"``: the outgoing webhook's event shape above with
  ``ONCRMDEALUPDATE`` / ``ONCRMLEADUPDATE`` (``...ADD`` when created in the
  stage) and the robot's own token;
* config ``robot_webhook_retry_s`` (default ``[]``: no retry, as for events):
  an attempt with no answer or a non-2xx one is tried again after the n-th
  delay, with the same bytes; ``POST /_robots/flush`` runs the pending
  retries now. Every attempt: ``GET /_state`` -> ``robot_deliveries``.

First attempts of robots go out like REST-caused events (config
``event_delivery``: after the answer on worker threads, or ``"inline"``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response

from ..core import webhooks
from ..core.webhooks import DeliveryLog, Dispatcher, Job
from .context import Sandbox, sandbox
from .errors import json_response
from .params import encode_form
from .store import Portal

__all__ = ["bp", "Automation", "outgoing_jobs", "outgoing_state", "endpoints", "STAGE_FIELD"]

bp = Blueprint("automation", __name__)

_USER_AGENT = "Bitrix24 Webhook Engine"  # as events.py's (UNCONFIRMED)
_KEEP = 200  # robot attempts kept for /_state
#: event_handler_id of the n-th outgoing webhook: 900 + n (ids of ours)
_HANDLER_BASE = 900
#: the field that holds an entity's stage (crm-deal-fields.md, crm-lead-fields.md)
STAGE_FIELD = {"deal": "STAGE_ID", "lead": "STATUS_ID"}
#: the business-process document class per entity [community]
_DOCUMENT = {"deal": ("CCrmDocumentDeal", "DEAL"), "lead": ("CCrmDocumentLead", "LEAD")}


def endpoints(portal: Portal, base: str) -> dict[str, str]:
    """The portal's ``auth`` keys every hook without a user carries."""
    return {
        "domain": portal.domain,
        "client_endpoint": f"{base}/{portal.domain}/rest/",
        "server_endpoint": f"{base}/oauth/rest/",
        "member_id": portal.member_id,
    }


def _token(portal: Portal, url: str, kind: str) -> str:
    """A stable 32-character token for a hook saved without one."""
    return hashlib.sha256(f"{kind}:{portal.member_id}:{url}".encode()).hexdigest()[:32]


def _mine(cfg: dict[str, Any], key: str, portal: Portal) -> list[tuple[int, dict[str, Any]]]:
    """``cfg[key]``'s entries for ``portal`` (an entry without one: the first)."""
    first = cfg["portals"][0]["domain"]
    return [
        (i, hook)
        for i, hook in enumerate(cfg[key])
        if str(hook.get("portal") or first).lower() == portal.domain
    ]


# -- outgoing webhooks ----------------------------------------------------------------------


def outgoing_jobs(
    cfg: dict[str, Any], portal: Portal, base: str, event: str, data: dict[str, Any], ts: int
) -> list[dict[str, Any]]:
    """Delivery jobs of ``event`` for the portal's outgoing webhooks, in the
    shape :func:`.events.send` posts (once)."""
    jobs = []
    for index, hook in _mine(cfg, "outgoing_webhooks", portal):
        if event not in {str(e).upper() for e in hook["events"]}:
            continue
        token = str(hook.get("application_token") or _token(portal, hook["url"], "out"))
        payload = {
            "event": event,
            "event_handler_id": _HANDLER_BASE + index,
            "data": data,
            "ts": ts,
            "auth": {**endpoints(portal, base), "application_token": token},
        }
        jobs.append(
            {
                "portal": portal.domain,
                "event": event,
                "handler_id": _HANDLER_BASE + index,
                "url": hook["url"],
                "payload": payload,
                "outgoing_webhook": index,
            }
        )
    return jobs


def outgoing_state(cfg: dict[str, Any], portal: Portal) -> list[dict[str, Any]]:
    """The portal's outgoing webhooks as the admin sees them (with the token)."""
    return [
        {
            "event_handler_id": _HANDLER_BASE + i,
            "url": hook["url"],
            "events": [str(e).upper() for e in hook["events"]],
            "application_token": str(
                hook.get("application_token") or _token(portal, hook["url"], "out")
            ),
        }
        for i, hook in _mine(cfg, "outgoing_webhooks", portal)
    ]


# -- robots ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RobotCall:
    """One robot run's request: what every attempt sends."""

    robot: int
    portal: str
    entity: str
    entity_id: int
    stage: str
    url: str
    form: str


def _robot_form(
    shape: str, portal: Portal, base: str, kind: str, entity_id: int, event: str, url: str, ts: int
) -> str:
    """The robot's request body (``robot_webhook_body``, UNCONFIRMED)."""
    if shape == "event":
        payload: dict[str, Any] = {
            "event": event,
            "data": {"FIELDS": {"ID": str(entity_id)}},
            "ts": ts,
            "auth": {**endpoints(portal, base), "application_token": _token(portal, url, "robot")},
        }
    else:
        document, prefix = _DOCUMENT[kind]
        payload = {
            "document_id": ["crm", document, f"{prefix}_{entity_id}"],
            "auth": endpoints(portal, base),
        }
    return encode_form(payload)


class Automation:
    """The robots of every portal: which stage each deal and lead was last
    seen in, the runs' first attempts, retries and their record."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        #: (portal domain, entity kind, id) -> the stage it was last seen in
        self.seen: dict[tuple[str, str, int], str] = {}
        self.log = DeliveryLog(_KEEP, numbered=True)
        self.dispatcher = Dispatcher(self.attempt, now=sb.clock.now, name="b24-robots")

    def reset(self) -> None:
        self.seen.clear()
        self.dispatcher.reset()
        self.log.clear()

    def on_events(
        self,
        portal: Portal,
        base: str,
        events: Iterable[tuple[str, dict[str, Any], int | None]],
    ) -> list[dict[str, Any]]:
        """Run the robots whose stage a deal or lead of ``events`` entered;
        the records of inline first attempts ([] in the background)."""
        with self.sb.store.lock:
            calls = [c for e in events for c in self._entered(portal, base, e[0], e[1])]
        if not calls:
            return []
        jobs = [Job(self.sb.clock.now(), data=c) for c in calls]
        if self.sb.cfg["event_delivery"] == "inline":
            return self.dispatcher.deliver_now(jobs)
        self.dispatcher.submit(jobs)
        return []

    def _entered(
        self, portal: Portal, base: str, event: str, data: dict[str, Any]
    ) -> list[RobotCall]:
        """The robot runs one event causes (caller holds the lock)."""
        kind = next((k for k in STAGE_FIELD if event.startswith(f"ONCRM{k.upper()}")), None)
        fields = data.get("FIELDS") if isinstance(data, dict) else None
        raw_id = str((fields or {}).get("ID") or "")
        if kind is None or not raw_id.isdigit():
            return []
        key = (portal.domain, kind, int(raw_id))
        entity = portal.entities[kind].get(int(raw_id))
        if entity is None or event.endswith("DELETE"):
            self.seen.pop(key, None)
            return []
        stage = str(entity.fields.get(STAGE_FIELD[kind]) or "")
        before, self.seen[key] = self.seen.get(key), stage
        if before == stage:
            return []
        cfg = self.sb.cfg
        ts = int(self.sb.clock.now())
        return [
            RobotCall(
                index,
                portal.domain,
                kind,
                int(raw_id),
                stage,
                robot["url"],
                _robot_form(
                    cfg["robot_webhook_body"],
                    portal,
                    base,
                    kind,
                    int(raw_id),
                    event,
                    robot["url"],
                    ts,
                ),
            )
            for index, robot in _mine(cfg, "robot_webhooks", portal)
            if robot["entity"] == kind and str(robot["stage"]) == stage
        ]

    def attempt(self, job: Job) -> dict[str, Any]:
        """One attempt of one robot run; schedules the next when it failed."""
        call: RobotCall = job.data
        cfg = self.sb.cfg
        outcome = webhooks.send(
            call.url,
            call.form.encode("utf-8"),
            {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": _USER_AGENT},
            float(cfg["event_timeout_s"]),
        )
        ok = outcome.status is not None and 200 <= outcome.status < 300
        record: dict[str, Any] = {
            "at": self.sb.clock.now(),
            "portal": call.portal,
            "robot": call.robot,
            "entity": call.entity,
            "entity_id": call.entity_id,
            "stage": call.stage,
            "url": call.url,
            "attempt": job.attempt,
            "form": call.form,
            "status": outcome.status,
            "ok": ok,
            "body": None if outcome.text is None else outcome.text[:2000],
            "error": outcome.error,
        }
        delays = cfg["robot_webhook_retry_s"]
        if not ok and job.attempt <= len(delays):
            retry = job.retry(record["at"] + float(delays[job.attempt - 1]))
            record["next_attempt_at"] = retry.due
            self.dispatcher.schedule(retry)
        return self.log.append(record)

    def state(self) -> dict[str, Any]:
        """What ``GET /_state`` shows of the robots."""
        pending = [
            {
                "due_at": j.due,
                "attempt": j.attempt,
                "robot": j.data.robot,
                "entity": j.data.entity,
                "entity_id": j.data.entity_id,
                "url": j.data.url,
            }
            for j in self.dispatcher.pending()
        ]
        return {"robot_deliveries": self.log.list(), "robot_pending": pending}


@bp.route("/_robots/flush", methods=["POST"])
def flush() -> Response:
    """Run every pending robot retry now: ``{"attempts": [<record of each>]}``."""
    return json_response({"attempts": sandbox().automation.dispatcher.flush()})
