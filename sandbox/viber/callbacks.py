"""What the sandbox posts to a bot's webhook, as Viber does.

* Every callback is one JSON object POSTed with ``Content-Type:
  application/json`` and ``X-Viber-Content-Signature``: the hex HMAC-SHA256 of
  the exact body, keyed with the bot's auth token (FACTS §4; the sandbox
  writes compact UTF-8 JSON, big integers as JSON integers).
* The webhook must answer HTTP 200; anything else (another status, no answer
  in ``webhook_timeout_s``) is retried "several times for an hour" (FACTS §4):
  ``retry.attempts`` times, doubling from ``retry.base_s`` up to
  ``retry.cap_s`` on the sandbox clock (``POST /_flush`` runs them now).
* ``set_webhook`` posts the ``webhook`` event first and fails with status 1
  when the URL does not answer 200 (:meth:`Callbacks.check`).

Every attempt is recorded in the delivery log (``GET /_deliveries``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from ..core import webhooks
from .state import Store

__all__ = ["Callbacks", "serialize", "sign", "SIGNATURE_HEADER", "CHAT_HOSTNAME"]

SIGNATURE_HEADER = "X-Viber-Content-Signature"
USER_AGENT = "Viber-Sandbox/1.0"
#: set_webhook's and send_message's ``chat_hostname`` (the docs' example shape)
CHAT_HOSTNAME = "SN-CHAT-SANDBOX_"


def serialize(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(token: str, body: bytes) -> str:
    return hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


class Callbacks:
    """Posts callbacks (now, later, retried) and runs set_webhook's check."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dispatcher = webhooks.Dispatcher(
            self._attempt, now=store.clock.now, name="viber-callback", workers=4
        )

    def check(self, bot: dict[str, Any], url: str) -> dict[str, Any]:
        """The ``webhook`` event set_webhook sends; ``ok`` when answered 200."""
        event = {
            "event": "webhook",
            "timestamp": self.store.millis(),
            "chat_hostname": CHAT_HOSTNAME,
            "message_token": self.store.token(),
        }
        return self._post(bot, url, event, {"kind": "webhook_check"}, 1, retry=False)

    def post_now(
        self, bot: dict[str, Any], event: dict[str, Any], what: dict[str, Any]
    ) -> dict[str, Any]:
        """The first attempt, synchronously (a control request waits for it)."""
        with self.store.lock:
            url = (self.store.webhooks.get(bot["id"]) or {}).get("url")
        return self._post(bot, url, event, what, 1)

    def post_later(
        self, bot: dict[str, Any], events: list[dict[str, Any]], what: dict[str, Any]
    ) -> None:
        """The first attempts from worker threads (after the API answered)."""
        self.dispatcher.submit(
            [
                webhooks.Job(self.store.now(), data={"bot": bot, "event": e, "what": what})
                for e in events
            ]
        )

    def _attempt(self, job: webhooks.Job) -> dict[str, Any]:
        data = job.data
        with self.store.lock:
            url = (self.store.webhooks.get(data["bot"]["id"]) or {}).get("url")
        return self._post(data["bot"], url, data["event"], data["what"], job.attempt)

    def _post(
        self,
        bot: dict[str, Any],
        url: str | None,
        event: dict[str, Any],
        what: dict[str, Any],
        attempt: int,
        *,
        retry: bool = True,
    ) -> dict[str, Any]:
        store = self.store
        base = {
            **what,
            "bot": bot["id"],
            "event": event.get("event"),
            "message_token": event.get("message_token"),
            "attempt": attempt,
            "time": store.now(),
            "payload": event,
        }
        if not url:
            return store.deliveries.append(
                {
                    **base,
                    "url": None,
                    "status": None,
                    "ok": False,
                    "error": "no webhook set (set_webhook)",
                }
            )
        body = serialize(event)
        headers: dict[str, str | None] = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(bot["auth_token"], body),
        }
        with store.lock:
            timeout = float(store.config["webhook_timeout_s"])
        outcome = webhooks.send(url, body, headers, timeout)
        ok = outcome.status == 200
        error = None if ok else (outcome.error or f"HTTP {outcome.status}")
        record = store.deliveries.append(
            {
                **base,
                "url": url,
                "status": outcome.status,
                "ok": ok,
                "error": error,
                "answer": outcome.text if outcome.text is None else outcome.text[:2000],
                "duration_ms": outcome.duration_ms,
            }
        )
        if what.get("kind") == "status":
            # the send's record shows how far it got (the page's ticks: a
            # token beyond 2^53 cannot be matched in JavaScript)
            with store.lock:
                for sent in store.sent:
                    if sent["message_token"] == event.get("message_token"):
                        sent.setdefault("statuses", []).append(
                            {"status": event.get("event"), "ok": ok, "time": store.now()}
                        )
        if not ok and retry:
            self._schedule_retry(bot, event, what, attempt)
        return record

    def _schedule_retry(
        self, bot: dict[str, Any], event: dict[str, Any], what: dict[str, Any], attempt: int
    ) -> None:
        with self.store.lock:
            policy = self.store.config["retry"]
        backoff = webhooks.Backoff(
            int(policy["attempts"]), float(policy["base_s"]), float(policy["cap_s"])
        )
        delay = backoff.delay(attempt)
        if delay is None:
            return
        self.dispatcher.schedule(
            webhooks.Job(
                self.store.now() + delay,
                attempt=attempt + 1,
                data={"bot": bot, "event": event, "what": what},
            )
        )
