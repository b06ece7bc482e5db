"""The Callback API: what the sandbox posts to a community's server, as VK does.

* **Events** (FACTS §3, schema ``callback_base``): a JSON body ``{"type",
  "object", "group_id", "event_id", "v", "secret"?}`` (``secret`` only when
  the community has one), POSTed with ``Content-Type: application/json``,
  compact, UTF-8, ``/`` escaped as ``\\/`` as VK's PHP-made JSON does
  (``escape_slashes``). The server must answer HTTP 200 with the body ``ok``;
  anything else (another status, another body, no answer in
  ``server_timeout_s``) is a failure.
* **Retries**: the same body (same ``event_id``) again after ``retry.base_s``,
  doubling up to ``retry.cap_s``, ``retry.attempts`` times, each with
  ``X-Retry-Counter: <n>``; a ``Retry-After`` on 410/429/503 is honoured up to
  ``retry_after_cap_s``. After ``pause_after_failures`` failed attempts in a
  row the server is paused for ``pause_s`` ("If a server returns several
  errors in a row, Callback API will temporarily stop sending"): events that
  come meanwhile are held until the pause ends (or dropped:
  ``paused_events``). A successful confirmation ends a pause.
* **Confirmation**: ``{"type": "confirmation", "group_id"}`` (plus ``secret``
  when ``confirmation_with_secret``); the server must answer 200 with the
  community's confirmation string. Only a confirmed server (status ``ok``)
  gets events.

Every attempt is recorded in the delivery log (``GET /_deliveries``).
"""

from __future__ import annotations

import json
from typing import Any

from ..core import webhooks
from .state import Store, new_event_id

__all__ = ["Callbacks", "serialize", "envelope", "USER_AGENT"]

USER_AGENT = "VKCallbackAPI-Sandbox/1.0"


def serialize(event: dict[str, Any], escape_slashes: bool = True) -> bytes:
    """The body as VK writes it: compact, UTF-8, ``\\/``."""
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    if escape_slashes:
        text = text.replace("/", "\\/")
    return text.encode("utf-8")


def envelope(
    community: dict[str, Any], kind: str, obj: Any, event_id: str | None = None
) -> dict[str, Any]:
    """A callback body for ``community`` in VK's field order."""
    body: dict[str, Any] = {
        "type": kind,
        "object": obj,
        "group_id": community["group_id"],
        "event_id": event_id or new_event_id(),
        "v": community["v"],
    }
    if community.get("secret"):
        body["secret"] = community["secret"]
    return body


class Callbacks:
    """Posts events and runs the confirmation handshake (module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dispatcher = webhooks.Dispatcher(
            self._attempt, now=store.clock.now, name="vk-callback", workers=4
        )

    # -- the handshake ------------------------------------------------------------------------

    def confirm(self, group_id: int, url: str | None = None) -> dict[str, Any]:
        """POST the ``confirmation`` event; the server must answer the string."""
        store = self.store
        with store.lock:
            community = store.community(group_id)
            assert community is not None
            server = store.servers[group_id]
            target = url or server.url
            expected = server.confirmation
            timeout = float(store.config["server_timeout_s"])
            body: dict[str, Any] = {"type": "confirmation", "group_id": group_id}
            if store.config["confirmation_with_secret"] and community.get("secret"):
                body["secret"] = community["secret"]
            escape = store.config["escape_slashes"]
        if not target:
            return {"ok": False, "status": None, "body": None, "url": None,
                    "error": "no server_url configured", "expected": expected}
        headers: dict[str, str | None] = {"Content-Type": "application/json",
                                          "User-Agent": USER_AGENT}
        outcome = webhooks.send(target, serialize(body, escape), headers, timeout)
        ok = outcome.status == 200 and outcome.text == expected
        error = outcome.error
        if not ok and outcome.status is not None:
            error = (f"the server answered HTTP {outcome.status} "
                     f"{(outcome.text or '')[:100]!r}, not the confirmation string {expected!r}")
        result = {
            "ok": ok,
            "url": target,
            "status": outcome.status,
            "body": outcome.text if outcome.text is None else outcome.text[:2000],
            "expected": expected,
            "sent": body,
            "error": error,
        }
        with store.lock:
            server = store.servers[group_id]
            if url and url != server.url:
                return result  # a probe of another address changes nothing
            server.last_check = {**result, "time": store.now()}
            server.status = "ok" if ok else "failed"
            if ok:
                server.confirmed_at = store.now()
                server.failures_in_row = 0
                server.paused_until = 0.0
        self.store.deliveries.append({"kind": "confirmation", "type": "confirmation",
                                      "group_id": group_id,
                                      "attempt": 1, "url": target, "status": outcome.status,
                                      "ok": ok, "answer": result["body"], "error": error,
                                      "time": store.now(), "payload": body})
        return result

    # -- posting ------------------------------------------------------------------------------

    def post_now(self, group_id: int, event: dict[str, Any],
                 what: dict[str, Any]) -> dict[str, Any]:
        """The first attempt, synchronously (a control request waits for it)."""
        return self._post(group_id, event, what, 1)

    def post_later(self, group_id: int, event: dict[str, Any], what: dict[str, Any]) -> None:
        """The first attempt from a worker thread (after the API answered)."""
        self.dispatcher.submit([
            webhooks.Job(self.store.now(), data={"group_id": group_id, "event": event,
                                                 "what": what})
        ])

    def _attempt(self, job: webhooks.Job) -> dict[str, Any]:
        data = job.data
        return self._post(data["group_id"], data["event"], data["what"], job.attempt)

    def _post(self, group_id: int, event: dict[str, Any], what: dict[str, Any],
              attempt: int) -> dict[str, Any]:
        store = self.store
        base = {**what, "group_id": group_id, "event_id": event.get("event_id"),
                "type": event.get("type"), "attempt": attempt}
        with store.lock:
            server = store.servers.get(group_id)
            cfg = store.config
            now = store.now()
            if server is None or not server.url:
                return store.deliveries.append({**base, "url": None, "status": None, "ok": False,
                                                "error": "no server_url configured",
                                                "time": now, "payload": event})
            url = server.url
            if server.status != "ok":
                return store.deliveries.append({**base, "url": url, "status": None, "ok": False,
                                                "error": f"server not confirmed ({server.status})",
                                                "time": now, "payload": event})
            if server.paused_until > now:
                held = cfg["paused_events"] == "hold"
                if held:
                    self.dispatcher.schedule(webhooks.Job(
                        server.paused_until, attempt=attempt,
                        data={"group_id": group_id, "event": event, "what": what}))
                return store.deliveries.append({
                    **base, "url": url, "status": None, "ok": False, "time": now,
                    "error": ("held: the server is paused" if held
                              else "dropped: the server is paused"),
                    "held": held, "paused_until": server.paused_until, "payload": event})
            timeout = float(cfg["server_timeout_s"])
            escape = cfg["escape_slashes"]
        headers: dict[str, str | None] = {"Content-Type": "application/json",
                                          "User-Agent": USER_AGENT}
        if attempt > 1:
            headers["X-Retry-Counter"] = str(attempt - 1)
        outcome = webhooks.send(url, serialize(event, escape), headers, timeout)
        ok = outcome.status == 200 and outcome.text == "ok"
        if ok:
            error = None
        elif outcome.status is None:
            error = outcome.error
        elif outcome.status != 200:
            error = f"HTTP {outcome.status}"
        else:
            error = f"the body was {(outcome.text or '')[:100]!r}, not 'ok'"
        with store.lock:
            server = store.servers.get(group_id)
            paused = False
            if server is not None and server.url == url:
                if ok:
                    server.failures_in_row = 0
                else:
                    server.failures_in_row += 1
                    limit = int(cfg["pause_after_failures"])
                    if limit and server.failures_in_row >= limit:
                        server.paused_until = store.now() + float(cfg["pause_s"])
                        server.failures_in_row = 0
                        server.pauses += 1
                        paused = True
            record = store.deliveries.append({
                **base, "url": url, "status": outcome.status, "ok": ok, "error": error,
                "answer": outcome.text if outcome.text is None else outcome.text[:2000],
                "retry_counter": attempt - 1 if attempt > 1 else None,
                "paused_server": paused, "time": now, "duration_ms": outcome.duration_ms,
                "payload": event})
        if not ok:
            self._schedule_retry(group_id, event, what, attempt, outcome)
        return record

    def _schedule_retry(self, group_id: int, event: dict[str, Any], what: dict[str, Any],
                        attempt: int, outcome: webhooks.Outcome) -> None:
        store = self.store
        with store.lock:
            policy = store.config["retry"]
            cap = float(store.config["retry_after_cap_s"])
        retry_after = None
        if outcome.status in (410, 429, 503):
            retry_after = next((v for k, v in outcome.headers.items()
                                if k.lower() == "retry-after"), None)
        backoff = webhooks.Backoff(int(policy["attempts"]), float(policy["base_s"]),
                                   max(float(policy["cap_s"]), cap if retry_after else 0.0))
        delay = backoff.delay(attempt, retry_after)
        if delay is None:
            return
        if retry_after is None:
            delay = min(delay, float(policy["cap_s"]))
        self.dispatcher.schedule(webhooks.Job(
            store.now() + delay, attempt=attempt + 1,
            data={"group_id": group_id, "event": event, "what": what}))
