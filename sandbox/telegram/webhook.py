"""Webhook delivery: POST one Update to the bot's webhook exactly as Telegram does.

What goes over the wire (api.json ``setWebhook``; tdlib/telegram-bot-api
``WebhookActor::send_update``): ``POST <url>`` with the JSON-serialised Update
as the body, ``Content-Type: application/json``, ``Accept-Encoding: gzip,
deflate``, ``X-Telegram-Bot-Api-Secret-Token: <secret>`` only when a secret is
set, HTTP Basic auth when the URL has userinfo, no redirects followed. A 2XY
answer is success; anything else is recorded in ``getWebhookInfo``
(``last_error_message = "Wrong response from the webhook: <code> <reason>"``)
and, on request, retried with a doubling delay or the webhook's
``Retry-After`` ("we will repeat the request and give up after a reasonable
amount of attempts"). A 2XY answer whose body names a ``method`` is executed as
a Bot API call (the webhook-reply feature; ``get*``, ``setWebhook``,
``deleteWebhook``, ``close`` and ``logOut`` are ignored, as in WebhookActor).

Sending and the retry delays are :mod:`sandbox.core.webhooks`' (``send``,
``Backoff``); the attempts are recorded in the store's delivery log.

``allowed_updates``: an empty or absent list means every kind except
``chat_member``, ``message_reaction`` and ``message_reaction_count`` (api.json
``Update``, FACTS.md 1); a filtered update is not sent.

Without a webhook, an update waits in the bot's queue for ``getUpdates``
(filtered by the ``allowed_updates`` the last ``getUpdates`` gave) — once
the bot has called ``getUpdates``. A bot that has neither a webhook nor ever
polled gets nothing: ``/_deliver`` answers 409 (Telegram would keep the
update 24 hours for whichever comes first; the sandbox tells the demo that
nobody listens yet). A ``setWebhook`` posts what is still queued to the new
webhook, in order (:func:`post_pending`), unless it drops pending updates.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..core import webhooks
from .errors import ApiError
from .methods import dispatch
from .spec import BotApiSpec
from .state import BotState, PendingUpdate, Store, Webhook
from .updates import ControlError, learn_from_update, summarize, update_kinds_of

__all__ = ["deliver", "post_pending", "serialize_update"]

_OPT_IN_KINDS = ("chat_member", "message_reaction", "message_reaction_count")
_NOT_FROM_WEBHOOK_REPLY = ("setwebhook", "deletewebhook", "close", "logout")


def serialize_update(update: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as the Bot API server writes it (no spaces, raw UTF-8)."""
    return json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _is_allowed(kinds: list[str], allowed: list[str] | None) -> bool:
    if not kinds:
        return True  # nothing Telegram knows: deliver unchanged rather than guess
    if allowed:
        return any(kind in allowed for kind in kinds)
    return any(kind not in _OPT_IN_KINDS for kind in kinds)


#: how the Bot API server words a webhook that did not answer
_NO_ANSWER = {"timeout": "Read timeout expired", "refused": "Connection refused"}


def _post(webhook: Webhook, body: bytes, timeout: float) -> dict[str, Any]:
    headers: dict[str, str | None] = {
        "Content-Type": "application/json",
        "Accept-Encoding": "gzip, deflate",
        "User-Agent": None,  # Telegram sends neither header; None drops the defaults
        "Accept": None,
    }
    if webhook.secret_token:
        headers["X-Telegram-Bot-Api-Secret-Token"] = webhook.secret_token
    outcome = webhooks.send(webhook.url, body, headers, timeout)
    if outcome.status is None:
        return {"status": None, "body": None,
                "error": _NO_ANSWER.get(outcome.error_kind or "", "Failed to connect"),
                "duration_ms": outcome.duration_ms}
    result = {"status": outcome.status, "body": outcome.body(), "error": None,
              "duration_ms": outcome.duration_ms,
              "retry_after": outcome.headers.get("Retry-After")}
    if not 200 <= outcome.status <= 299:
        result["error"] = f"Wrong response from the webhook: {outcome.status} {outcome.reason}"
    return result


def _run_webhook_reply(store: Store, spec: BotApiSpec, token: str, answer: Any
                       ) -> dict[str, Any] | None:
    if not isinstance(answer, dict) or not isinstance(answer.get("method"), str):
        return None
    method = answer["method"]
    if method.lower().startswith("get") or method.lower() in _NOT_FROM_WEBHOOK_REPLY:
        return None
    params = {k: v for k, v in answer.items() if k != "method"}
    try:
        result, _ = dispatch(store, spec, token, method, params, {})
    except ApiError as error:
        return {"method": method, **error.envelope()}
    return {"method": method, "ok": True, "result": result}


def deliver(store: Store, spec: BotApiSpec, token: str, update: dict[str, Any], *,
            redeliver: bool = False, files: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Send ``update`` to ``token``'s webhook; the bridge's answer and the attempts made."""
    with store.lock:
        bot = store.bot(token)
        if bot is None:
            raise ControlError(f"unknown bot token {token!r}; register it with POST /_bots", 404)
        webhook = bot.webhook
        if webhook is None and not bot.polling:
            raise ControlError("the bot has no webhook and nobody calls getUpdates: call "
                               "setWebhook (or getUpdates) first", 409)
        given = update.get("update_id")
        if given is not None and (not isinstance(given, int) or isinstance(given, bool)):
            raise ControlError('"update_id" must be an integer')
        update_id = bot.take_update_id(given)
        if given is None:
            update = {"update_id": update_id, **update}
        learn_from_update(store, bot, update, files)
        kinds = update_kinds_of(update, spec.update_kinds)
        if webhook is None:
            return _queue(store, bot, update, kinds, spec)
        allowed = _is_allowed(kinds, webhook.allowed_updates)
        timeout = store.config.webhook_timeout_s
        config = store.config
        backoff = webhooks.Backoff(config.redeliver_attempts if redeliver else 0,
                                   config.redeliver_delay_s, config.redeliver_max_delay_s)
    warnings = _warnings(update, kinds, spec)
    summary = summarize(update)
    base = {"bot_id": bot.account.id, "update_id": update_id, "url": webhook.url, **summary}
    if not allowed:
        store.log_delivery({**base, "attempt": 0, "status": None, "ok": False,
                            "error": "not in allowed_updates", "time": store.now(),
                            "update": update})
        return {"delivered": False, "status": None, "body": None, "update_id": update_id,
                "attempts": 0, "filtered": True, "warnings": warnings}
    body = serialize_update(update)
    outcome: dict[str, Any] = {}
    attempt = 0
    while True:
        attempt += 1
        started = store.now()  # log time = when the POST began, before any reply it caused
        with webhook.slots:
            outcome = _post(webhook, body, timeout)
        ok = outcome["error"] is None
        entry = {**base, "attempt": attempt, "status": outcome["status"], "ok": ok,
                 "error": outcome["error"], "duration_ms": outcome["duration_ms"],
                 "time": started, "update": update}
        if ok:
            reply = _run_webhook_reply(store, spec, token, outcome["body"])
            if reply:
                entry["webhook_reply"] = outcome["webhook_reply"] = reply
        else:
            with store.lock:
                webhook.last_error_date = int(store.now())
                webhook.last_error_message = outcome["error"]
        store.log_delivery(entry)
        delay = None if ok else backoff.delay(attempt, outcome.get("retry_after"))
        if delay is None:
            break
        time.sleep(delay)
    result = {"delivered": outcome["error"] is None, "status": outcome["status"],
              "body": outcome["body"], "update_id": update_id, "attempts": attempt,
              "warnings": warnings}
    if outcome["error"]:
        result["error"] = outcome["error"]
    if "webhook_reply" in outcome:
        result["webhook_reply"] = outcome["webhook_reply"]
    return result


def _queue(store: Store, bot: BotState, update: dict[str, Any], kinds: list[str],
           spec: BotApiSpec) -> dict[str, Any]:
    """Keep ``update`` for getUpdates (the store's lock is held)."""
    update_id = update["update_id"]
    warnings = _warnings(update, kinds, spec)
    if not _is_allowed(kinds, bot.poll_allowed_updates):
        return {"delivered": False, "queued": False, "status": None, "body": None,
                "update_id": update_id, "attempts": 0, "filtered": True, "warnings": warnings}
    bot.confirm(0, store.now())  # retention only
    bot.pending.append(PendingUpdate(dict(update), store.now()))
    store.updates_changed.notify_all()
    return {"delivered": False, "queued": True, "status": None, "body": None,
            "update_id": update_id, "attempts": 0, "pending_update_count": len(bot.pending),
            "warnings": warnings}


def post_pending(store: Store, spec: BotApiSpec, token: str) -> None:
    """Post the bot's queued updates to its (new) webhook, oldest first,
    each retried like a failed delivery; one that still fails goes back to
    the head of the queue and the rest wait with it (``getWebhookInfo``
    counts them)."""
    while True:
        with store.lock:
            bot = store.bot(token)
            if bot is None or bot.webhook is None or not bot.pending:
                return
            item = bot.pending.popleft()
        try:
            result = deliver(store, spec, token, item.update, redeliver=True)
        except ControlError:
            result = {"delivered": False}
        if not result.get("delivered") and not result.get("filtered"):
            with store.lock:
                bot.pending.appendleft(item)
            return


def _warnings(update: dict[str, Any], kinds: list[str], spec: BotApiSpec) -> list[str]:
    warnings = []
    if len(kinds) > 1:
        warnings.append(f"Update carries {len(kinds)} optional fields {kinds}; Telegram sends "
                        "at most one (api.json Update)")
    unknown = [k for k in update if k != "update_id" and k not in spec.update_kinds]
    if unknown:
        warnings.append(f"fields not in Bot API {spec.version} Update: {unknown}")
    return warnings
