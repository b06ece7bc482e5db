"""Workflows with a "Send a webhook" action: HubSpot posting an enrolled
record to a URL the admin typed (HubSpot KB "Use webhooks with HubSpot
workflows"; the receiving side is ``crm_adapters/hubspot/cascade.py``).

A workflow here is one enrolment trigger and one webhook action, set in the
``_config`` key ``workflow_webhooks`` (a list; run-time changeable)::

    {"object": "contacts" | "deals", "property": "lifecyclestage",
     "value": "customer", "url": "https://...", "method": "POST" | "GET",
     "portal": 62515, "auth": "none" | "v1" | "v2" | "v3", "reenroll": false,
     "name": "Order ready"}

* **Enrolment**: a record of ``object`` in ``portal`` (default: the first
  portal) whose ``property`` becomes ``value`` (``null``: becomes known),
  by any write -- create, PATCH, batch create/update/upsert, a merge's
  survivor. A record enrols once per workflow; with ``reenroll`` again each
  time the property becomes the value anew (HubSpot's re-enrolment switch).
  Every write goes through :mod:`.records`, which calls :func:`enrol`.
* **The action** runs after the write's answer, on worker threads (HubSpot
  runs workflows asynchronously), or before the answer with config
  ``workflow_delivery: "inline"`` (tests): :func:`run_enrolled`.
* **The request**: ``POST`` with the record as JSON, the same bytes on
  every attempt (``GET``: no body, UNCONFIRMED). The body's shape is config
  ``workflow_webhook_body``, UNCONFIRMED (not in ../shared/contracts; the two
  shapes the adapter's docstring names):

  - ``"object"``: ``{"objectId": 4242, "objectType": "CONTACT",
    "objectTypeId": "0-1", "portalId": 62515, "properties": {name: value}}``;
  - ``"legacy"``: the legacy contact-workflow record, ``{"vid", "canonical-vid",
    "portal-id", "is-contact", "properties": {name: {"value": v}}}`` (a deal:
    ``{"dealId", "portalId", "isDeleted", "properties": ...}``).

* **Authentication** (``auth``; the KB: a request signature or an API key):
  ``"none"`` (default; the bridge checks the URL's key, not a signature),
  or a signature with the app's client secret -- ``"v1"``/``"v2"`` in
  ``X-HubSpot-Signature`` with ``X-HubSpot-Signature-Version``, ``"v3"`` in
  ``X-HubSpot-Signature-v3`` with ``X-HubSpot-Request-Timestamp`` (FACTS 3.6;
  which version workflows sign with is UNCONFIRMED).
* **Retries** (the KB: for up to three days, none after a 4xx; UNCONFIRMED in
  FACTS): no answer within ``webhook_timeout_s``, a 5xx or a 429 is tried
  again after ``workflow_webhook_retry_s[n - 1]`` seconds (attempt ``n``
  failed); any other answer ends it. The default delays double from a
  minute up to 8 hours, about 2.7 days in all (ours). ``POST
  /_workflows/flush`` runs every pending retry at once.
* **A fault** for retry tests: config ``workflow_webhook_lose_answers: N``
  loses the answers of the next N attempts (the receiver got the request
  and acted; HubSpot saw no answer and retries the same bytes).

Every attempt is recorded (``GET /_state`` -> ``workflow_deliveries``, with
``workflow_pending`` and ``workflow_enrolments``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response

from ..core import webhooks
from ..core.webhooks import DeliveryLog, Dispatcher, Job
from . import catalog
from .context import sandbox
from .errors import json_response
from .signature import sign_v1, sign_v2, v3_headers
from .store import CrmObject, Portal, Store, iso

__all__ = ["bp", "Action", "Workflows", "enrol", "run_enrolled", "request_body"]

bp = Blueprint("workflows", __name__)

_KEEP = 200  # attempts kept for /_state
_USER_AGENT = "HubSpot Connect 2.0 (http://dev.hubspot.com/)"  # as merge.py's webhooks


@dataclass(frozen=True)
class Action:
    """One enrolment's webhook: what every attempt sends."""

    workflow: int
    name: str
    portal: int
    object_type: str
    object_id: str
    url: str
    method: str
    auth: str
    body: bytes


# -- enrolment (called by records.py under the store's lock) ----------------------------


def _workflows_for(
    cfg: dict[str, Any], portal: Portal, type_name: str
) -> list[tuple[int, dict[str, Any]]]:
    """The workflows of ``portal`` (default: the first portal) on ``type_name``."""
    first = cfg["portals"][0]["id"] if cfg["portals"] else None
    return [
        (i, w)
        for i, w in enumerate(cfg["workflow_webhooks"])
        if w["object"] == type_name and w.get("portal", first) == portal.id
    ]


def _meets(workflow: dict[str, Any], values: dict[str, str]) -> bool:
    have = values.get(workflow["property"]) or None
    want = workflow.get("value")
    return have is not None if want is None else have == str(want)


def enrol(store: Store, portal: Portal, obj: CrmObject, before: dict[str, str] | None) -> None:
    """Enrol ``obj`` in each workflow whose trigger its write met (``before``:
    its properties before the write, None for a new record); the actions wait
    in ``store.workflow_queue`` for :func:`run_enrolled`."""
    for index, workflow in _workflows_for(store.cfg, portal, obj.type):
        if not _meets(workflow, obj.properties):
            continue
        if before is not None and _meets(workflow, before):
            continue  # already met: nothing became true
        key = (index, portal.id, obj.type, obj.id)
        if key in store.workflow_enrolled and not workflow.get("reenroll"):
            continue
        store.workflow_enrolled.add(key)
        method = str(workflow.get("method") or "POST").upper()
        body = (
            request_body(store.cfg["workflow_webhook_body"], portal, obj)
            if method == "POST"
            else b""
        )
        store.workflow_queue.append(
            Action(
                index,
                str(workflow.get("name") or f"workflow {index + 1}"),
                portal.id,
                obj.type,
                obj.id,
                str(workflow["url"]),
                method,
                str(workflow.get("auth") or "none"),
                body,
            )
        )


def request_body(shape: str, portal: Portal, obj: CrmObject) -> bytes:
    """The enrolled record as the action posts it (shape UNCONFIRMED, see above)."""
    otype = catalog.OBJECT_TYPES[obj.type]
    props = dict(sorted(obj.properties.items()))
    if shape == "legacy":
        legacy = {k: {"value": v} for k, v in props.items()}
        if obj.type == "contacts":
            body: dict[str, Any] = {
                "vid": int(obj.id),
                "canonical-vid": int(obj.id),
                "merged-vids": [],
                "portal-id": portal.id,
                "is-contact": True,
                "properties": legacy,
            }
        else:
            body = {
                "portalId": portal.id,
                f"{otype.singular}Id": int(obj.id),
                "isDeleted": False,
                "properties": legacy,
            }
    else:
        body = {
            "objectId": int(obj.id),
            "objectType": otype.singular.upper(),
            "objectTypeId": otype.type_id,
            "portalId": portal.id,
            "properties": props,
        }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- the actions -----------------------------------------------------------------------------


def _retryable(status: int | None) -> bool:
    """No answer, a 5xx or a 429 is tried again; another 4xx is not (the KB)."""
    return status is None or status == 429 or status >= 500


class Workflows:
    """Runs the enrolled actions: first attempts, retries, the record."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.log = DeliveryLog(_KEEP, numbered=True)
        self.dispatcher = Dispatcher(self.attempt, now=store.now, name="hubspot-workflows")
        #: answers lost so far under ``workflow_webhook_lose_answers``
        self.lost = 0

    def reset(self) -> None:
        self.dispatcher.reset()
        self.log.clear()
        self.lost = 0

    def start(self, actions: list[Action]) -> list[dict[str, Any]]:
        """First attempts: inline (their records) or in the background ([])."""
        jobs = [Job(self.store.now(), data=a) for a in actions]
        if self.store.cfg["workflow_delivery"] == "inline":
            return self.dispatcher.deliver_now(jobs)
        self.dispatcher.submit(jobs)
        return []

    def _headers(self, action: Action) -> dict[str, str | None]:
        headers: dict[str, str | None] = {"User-Agent": _USER_AGENT}
        if action.method == "POST":
            headers["Content-Type"] = "application/json"
        secret = str(self.store.cfg["app"]["client_secret"])
        text = action.body.decode("utf-8")
        if action.auth == "v3":
            headers.update(v3_headers(secret, action.method, action.url, text))
        elif action.auth in ("v1", "v2"):
            signed = (
                sign_v1(secret, text)
                if action.auth == "v1"
                else sign_v2(secret, action.method, action.url, text)
            )
            headers.update(
                {"X-HubSpot-Signature": signed, "X-HubSpot-Signature-Version": action.auth}
            )
        return headers

    def _lose(self) -> bool:
        with self.store.lock:
            if self.lost < int(self.store.cfg["workflow_webhook_lose_answers"]):
                self.lost += 1
                return True
        return False

    def attempt(self, job: Job) -> dict[str, Any]:
        """One attempt of one action; schedules the next when it failed."""
        action: Action = job.data
        cfg = self.store.cfg
        outcome = webhooks.send(
            action.url,
            action.body or None,
            self._headers(action),
            float(cfg["webhook_timeout_s"]),
            method=action.method,
        )
        lost = outcome.answered and self._lose()
        status = None if lost else outcome.status
        record: dict[str, Any] = {
            "at": iso(self.store.now()),
            "workflow": action.workflow,
            "name": action.name,
            "portalId": action.portal,
            "objectType": action.object_type,
            "objectId": action.object_id,
            "url": action.url,
            "method": action.method,
            "attempt": job.attempt,
            "status": status,
            "ok": status is not None and 200 <= status < 300,
            "lost": lost,
            "answer": outcome.body(2000),
            "error": "answer lost (workflow_webhook_lose_answers)" if lost else outcome.error,
            "body": action.body.decode("utf-8"),
        }
        delays = cfg["workflow_webhook_retry_s"]
        if not record["ok"] and _retryable(status) and job.attempt <= len(delays):
            retry = job.retry(self.store.now() + float(delays[job.attempt - 1]))
            record["next_attempt_at"] = iso(retry.due)
            self.dispatcher.schedule(retry)
        return self.log.append(record)

    def pending(self) -> list[dict[str, Any]]:
        return [
            {
                "due_at": iso(j.due),
                "attempt": j.attempt,
                "workflow": j.data.workflow,
                "objectType": j.data.object_type,
                "objectId": j.data.object_id,
                "url": j.data.url,
            }
            for j in self.dispatcher.pending()
        ]

    def state(self) -> dict[str, Any]:
        """What ``GET /_state`` shows of the workflows."""
        with self.store.lock:
            enrolled = sorted(self.store.workflow_enrolled)
        return {
            "workflow_deliveries": self.log.list(),
            "workflow_pending": self.pending(),
            "workflow_enrolments": [
                {"workflow": w, "portalId": p, "objectType": t, "objectId": i}
                for w, p, t, i in enrolled
            ],
        }


def workflows() -> Workflows:
    """The current app's :class:`Workflows`."""
    found = getattr(sandbox(), "workflows", None)
    assert isinstance(found, Workflows), "control.HubSpotSandbox makes one"
    return found


@bp.after_app_request
def run_enrolled(response: Response) -> Response:
    """After every request: start the actions its writes enrolled."""
    store = sandbox().store
    with store.lock:
        actions, store.workflow_queue = store.workflow_queue, []
    if actions:
        workflows().start(actions)
    return response


@bp.route("/_workflows/flush", methods=["POST"])
def flush() -> Response:
    """Run every pending retry now: ``{"attempts": [<record of each>]}``."""
    return json_response({"attempts": workflows().dispatcher.flush()})
