"""Webhooks: what the sandbox posts to the bridge, exactly as Meta does (FACTS §2).

* **Wire format**: ``POST <webhook_url>`` with the JSON body, ``Content-Type:
  application/json``, ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(App
  Secret, raw body)>`` and the legacy ``X-Hub-Signature: sha1=<hex>``. The
  body is compact JSON with non-ASCII escaped (``\\uXXXX``): Meta signs "an
  escaped unicode version of the payload" (FACTS §0.1), so a receiver that
  re-serialises before checking the signature fails on the first "é".
* **Envelope**: ``{"object": "whatsapp_business_account", "entry": [{"id":
  <WABA id>, "changes": [{"field": "messages", "value": {"messaging_product":
  "whatsapp", "metadata": {"display_phone_number", "phone_number_id"},
  ...}}]}]}``.
* **Inbound** (``/_deliver``, ``/_customer``): :func:`prepare_inbound` moves a
  payload onto a sandbox account (its ``metadata`` and ``entry[].id``),
  opens the 24-hour window of each customer who wrote, registers the media it
  names (with bytes of their MIME type; a media object's inline ``url`` is
  pointed at the sandbox), then :meth:`Webhooks.post_now` posts it and waits
  for the answer.
* **Statuses** of every accepted send go from a background thread
  (:class:`sandbox.core.webhooks.Dispatcher`), never inside the send request:
  ``sent``, ``delivered``, ``read`` (or one ``failed`` with ``errors[]``), one
  per POST, with ``conversation``, ``pricing`` and the send's
  ``biz_opaque_callback_data``; in order, shuffled, or with duplicates
  (``status_webhooks``).
* **Redelivery**: an answer other than 2xx (or none) is retried with a
  doubling delay on the sandbox clock (``redelivery``; Meta: "with decreasing
  frequency ... for up to 7 days"). Meta asks for a 200; whether another 2xx
  is retried is UNCONFIRMED, the sandbox accepts any 2xx.
* **Handshake** (:func:`verify`): ``GET <webhook_url>?hub.mode=subscribe&
  hub.challenge=<int>&hub.verify_token=<token>``; the subscription holds when
  the answer is 200 with the challenge as its whole body.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..core import media as core_media
from ..core import webhooks
from .errors import status_error
from .state import Media, Store, sample_bytes

__all__ = [
    "serialize",
    "signature_headers",
    "envelope",
    "prepare_inbound",
    "verify",
    "Webhooks",
    "MEDIA_KEYS",
]

#: the message sub-objects that are media (corpus message.json)
MEDIA_KEYS = ("image", "video", "audio", "document", "sticker")
USER_AGENT = "facebookexternalua"


def serialize(payload: Any) -> bytes:
    """Compact JSON, non-ASCII escaped, as Meta writes and signs it."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def signature_headers(app_secret: str, body: bytes) -> dict[str, str]:
    key = app_secret.encode()
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
        "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
    }


def envelope(
    account: dict[str, Any], value: dict[str, Any], field: str = "messages"
) -> dict[str, Any]:
    """One change of ``field`` for ``account``'s number."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": account["waba_id"],
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": account["display_phone_number"],
                                "phone_number_id": account["phone_number_id"],
                            },
                            **value,
                        },
                        "field": field,
                    }
                ],
            }
        ],
    }


# -- inbound payloads ------------------------------------------------------------------------


class PayloadError(ValueError):
    """A ``/_deliver`` payload that is not a WhatsApp webhook body."""


def prepare_inbound(
    store: Store, payload: Any, account: dict[str, Any], media_url: Callable[[str], str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``payload`` moved onto ``account``, and what it taught the sandbox.

    Rewrites ``entry[].id`` (WABA), ``metadata.phone_number_id`` and
    ``metadata.display_phone_number``; opens the window of each ``messages[]``
    sender; registers media. Returns ``(payload, learnt)`` where ``learnt``
    names the customers, messages and media.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        raise PayloadError(
            'payload must be a webhook body: {"object": '
            '"whatsapp_business_account", "entry": [...]}'
        )
    payload = copy.deepcopy(payload)
    pnid = account["phone_number_id"]
    learnt: dict[str, Any] = {"customers": [], "messages": [], "media": [], "fields": []}
    with store.lock:
        for entry in payload["entry"]:
            if not isinstance(entry, dict):
                raise PayloadError("each entry must be an object")
            entry["id"] = account["waba_id"]
            for change in entry.get("changes") or []:
                if not isinstance(change, dict):
                    raise PayloadError("each change must be an object")
                learnt["fields"].append(change.get("field"))
                value = change.get("value")
                if not isinstance(value, dict):
                    continue
                metadata = value.get("metadata")
                if isinstance(metadata, dict):
                    metadata["phone_number_id"] = pnid
                    metadata["display_phone_number"] = account["display_phone_number"]
                if change.get("field") == "messages":
                    _learn_messages(store, pnid, value, learnt)
                _register_media(store, pnid, value, learnt, media_url)
    return payload, learnt


def _learn_messages(store: Store, pnid: str, value: dict[str, Any], learnt: dict[str, Any]) -> None:
    for contact in value.get("contacts") or []:
        if isinstance(contact, dict) and contact.get("wa_id") and contact.get("user_id"):
            store.aliases[(pnid, str(contact["user_id"]))] = str(contact["wa_id"])
    for message in value.get("messages") or []:
        if not isinstance(message, dict) or not message.get("from"):
            continue
        customer = str(message["from"])
        store.open_window(pnid, customer)  # a customer's message opens the 24-hour window
        if customer not in learnt["customers"]:
            learnt["customers"].append(customer)
        if message.get("id"):
            store.inbound[(pnid, str(message["id"]))] = {
                "from": customer,
                "type": message.get("type"),
                "received": store.now(),
                "read_at": None,
            }
            learnt["messages"].append(message["id"])


def _register_media(
    store: Store, pnid: str, node: Any, learnt: dict[str, Any], media_url: Callable[[str], str]
) -> None:
    """Every ``{id, mime_type}`` object in the payload becomes downloadable media."""
    if isinstance(node, list):
        for item in node:
            _register_media(store, pnid, item, learnt, media_url)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("id"), (str, int)) and isinstance(node.get("mime_type"), str):
        media_id = str(node["id"])
        store.add_media(
            Media(
                media_id,
                pnid,
                node["mime_type"],
                sample_bytes(node["mime_type"], media_id),
                node.get("filename"),
                store.now(),
            )
        )
        if "url" in node:
            node["url"] = media_url(media_id)
        learnt["media"].append(media_id)
    for value in node.values():
        if isinstance(value, (dict, list)):
            _register_media(store, pnid, value, learnt, media_url)


# -- the handshake -----------------------------------------------------------------------------


def verify(url: str, verify_token: str, challenge: int, timeout: float) -> dict[str, Any]:
    """Meta's subscription handshake against ``url``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + [
        ("hub.mode", "subscribe"),
        ("hub.challenge", str(challenge)),
        ("hub.verify_token", verify_token),
    ]
    target = urlunsplit(parts._replace(query=urlencode(query)))
    outcome = webhooks.send(target, None, {"User-Agent": USER_AGENT}, timeout, method="GET")
    text = outcome.text
    ok = outcome.status == 200 and text is not None and text == str(challenge)
    result: dict[str, Any] = {
        "ok": ok,
        "url": url,
        "challenge": challenge,
        "status": outcome.status,
        "body": text,
        "error": outcome.error,
    }
    if not ok and outcome.status is not None:
        result["error"] = (
            "The callback URL or verify token couldn't be validated. Please "
            "verify the provided information or try again later."
        )
    return result


# -- posting ---------------------------------------------------------------------------------------


class Webhooks:
    """Posts to the bridge: inbound payloads now, statuses in the background,
    retries on the sandbox clock (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dispatcher = webhooks.Dispatcher(
            self._attempt, now=store.clock.now, name="whatsapp-webhooks", workers=4
        )

    # -- one POST -------------------------------------------------------------------------

    def _post(self, payload: dict[str, Any], what: dict[str, Any], attempt: int) -> dict[str, Any]:
        with self.store.lock:
            url = self.store.config["webhook_url"]
            secret = self.store.config["app_secret"]
            timeout = float(self.store.config["webhook_timeout_s"])
        started = self.store.now()
        if not url:
            return self.store.deliveries.append(
                {
                    **what,
                    "attempt": attempt,
                    "url": None,
                    "status": None,
                    "ok": False,
                    "error": "no webhook_url configured",
                    "time": started,
                    "payload": payload,
                }
            )
        body = serialize(payload)
        headers: dict[str, str | None] = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Accept": "*/*",
            **signature_headers(secret, body),
        }
        outcome = webhooks.send(url, body, headers, timeout)
        ok = outcome.status is not None and 200 <= outcome.status <= 299
        record = self.store.deliveries.append(
            {
                **what,
                "attempt": attempt,
                "url": url,
                "status": outcome.status,
                "ok": ok,
                "error": outcome.error or (None if ok else f"HTTP {outcome.status}"),
                "answer": outcome.text if outcome.text is None else outcome.text[:2000],
                "time": started,
                "duration_ms": outcome.duration_ms,
                "payload": payload,
            }
        )
        if not ok:
            self._schedule_retry(payload, what, attempt)
        return record

    def _schedule_retry(self, payload: dict[str, Any], what: dict[str, Any], attempt: int) -> None:
        with self.store.lock:
            policy = self.store.config["redelivery"]
            if not self.store.config["webhook_url"]:
                return
        backoff = webhooks.Backoff(
            int(policy["attempts"]), float(policy["base_s"]), float(policy["cap_s"])
        )
        delay = backoff.delay(attempt)
        if delay is not None:
            self.dispatcher.schedule(
                webhooks.Job(
                    self.store.now() + delay,
                    attempt=attempt + 1,
                    data={"kind": "one", "payload": payload, "what": what},
                )
            )

    def post_now(self, payload: dict[str, Any], what: dict[str, Any]) -> dict[str, Any]:
        """Post synchronously (a control request waits for the bridge's answer)."""
        return self._post(payload, what, 1)

    # -- statuses -----------------------------------------------------------------------------

    def statuses_for(self, record: dict[str, Any]) -> None:
        """Post the statuses of an accepted send from a worker thread."""
        self.dispatcher.submit(
            [webhooks.Job(self.store.now(), data={"kind": "send", "wamid": record["id"]})]
        )

    def _attempt(self, job: webhooks.Job) -> dict[str, Any]:
        data = job.data
        if data["kind"] == "one":
            return self._post(data["payload"], data["what"], job.attempt)
        return self._send_statuses(data["wamid"])

    def _send_statuses(self, wamid: str) -> dict[str, Any]:
        store = self.store
        with store.lock:
            record = next((r for r in reversed(store.sent) if r["id"] == wamid), None)
            if record is None:
                return {"wamid": wamid, "error": "forgotten (reset)"}
            link = record.get("media_link") if store.config["fetch_media_links"] else None
        if link:  # Meta downloads a "link" medium before it sends the message
            fetched = core_media.fetch(link)
            with store.lock:
                record["media_fetch"] = fetched
                if fetched.get("status") != 200 and record.get("failure") is None:
                    why = fetched.get("error") or fetched.get("status")
                    record["failure"] = {"code": 131053, "details": f"Media download failed: {why}"}
        with store.lock:
            mode = store.config["status_webhooks"]
            delay = float(store.config["status_delay_s"])
            statuses = self._plan(record)
            record["statuses_planned"] = [s["status"] for s in statuses]
            account = dict(record["account"])
        if mode == "off":
            return {"wamid": wamid, "statuses": []}
        posted = []
        for status in statuses:
            if delay:
                time.sleep(delay)
            payload = envelope(account, {"statuses": [status]})
            result = self._post(
                payload, {"kind": "status", "wamid": wamid, "status_name": status["status"]}, 1
            )
            with store.lock:
                record.setdefault("statuses", []).append(
                    {"status": status["status"], "http": result["status"]}
                )
            posted.append(status["status"])
        return {"wamid": wamid, "statuses": posted}

    def _plan(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The status objects of ``record``, ordered by the mode (lock held)."""
        store = self.store
        cfg = store.config
        base = int(record["time"])
        step = cfg["status_step_s"]
        common: dict[str, Any] = {"id": record["id"], "recipient_id": record["wa_id"]}
        opaque = record["body"].get("biz_opaque_callback_data")
        if record.get("failure") is not None:
            failure = record["failure"]
            status = {
                **common,
                "status": "failed",
                "timestamp": str(base),
                "errors": [status_error(failure["code"], failure.get("details"))],
            }
            if opaque is not None:
                status["biz_opaque_callback_data"] = opaque
            return [status]
        category = record["category"]
        conversation = store.conversation(record["phone_number_id"], record["wa_id"], category)
        statuses = []
        for index, name in enumerate(cfg["status_sequence"]):
            status = {**common, "status": name, "timestamp": str(int(base + index * step))}
            if opaque is not None:
                status["biz_opaque_callback_data"] = opaque
            conv: dict[str, Any] = {"id": conversation["id"]}
            if name == "sent":
                conv["expiration_timestamp"] = str(int(conversation["expires"]))
            conv["origin"] = {"type": category}
            status["conversation"] = conv
            status["pricing"] = _pricing(cfg["pricing_model"], category)
            statuses.append(status)
        mode = cfg["status_webhooks"]
        if mode == "shuffled" and len(statuses) > 1:
            shuffled = statuses[:]
            store.rng.shuffle(shuffled)
            statuses = shuffled if shuffled != statuses else statuses[::-1]
        elif mode == "duplicated" and statuses:
            out: list[dict[str, Any]] = []
            doubled = [store.rng.random() < cfg["duplicate_rate"] for _ in statuses]
            if not any(doubled):
                doubled[0] = True
            for status, twice in zip(statuses, doubled, strict=True):
                out.append(status)
                if twice:
                    out.append(copy.deepcopy(status))
            statuses = out
        return statuses


def _pricing(model: str, category: str) -> dict[str, Any]:
    if model == "PMP":  # per-message pricing: service replies are free (UNCONFIRMED shape)
        return {
            "billable": category != "service",
            "pricing_model": "PMP",
            "type": "free_customer_service" if category == "service" else "regular",
            "category": category,
        }
    return {"billable": True, "pricing_model": "CBP", "category": category}
