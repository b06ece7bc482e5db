"""The control API every vendor sandbox serves: one shape for all of them.

Control endpoints are JSON, never faulted, never rate limited, need no
credentials, and are never counted in ``/_stats``. Routes are relative to the
sandbox's mount point (``/sandbox/<vendor>`` in the demo server).

Every sandbox
-------------

``GET /_state[?account=<selector>]``
    ``{"accounts": [<account dump>, ...], ...}``: one dump per account (a
    HubSpot portal, an amoCRM account, a Bitrix24 portal, a Telegram bot),
    whose content is the vendor's; each dump carries ``"account"``, the
    selector that picks it. The selector is what names an account at the
    vendor: a HubSpot portal id, an amoCRM subdomain or account id, a
    Bitrix24 domain or member id, a Telegram bot id, token or username.
    Unknown selector: 404 ``account_not_found``. Next to ``accounts`` a vendor
    may put app-wide parts (its OAuth counters, webhook deliveries, ...).
``GET|POST /_config``
    The run-time settings; ``POST`` a JSON object of changes (400
    ``invalid_config`` names the bad key). Settings only ``create_app`` takes
    (the accounts) cannot change at run time.
``GET|POST /_faults``
    The fault plan (:mod:`sandbox.core.faults`).
``GET /_stats[?since=][&requests=0]``
    Requests the vendor API received (:mod:`sandbox.core.stats`).
``POST /_reset``
    Back to the seeded state; settings and the clock are kept, so is the
    fault plan (Telegram's goes back to its configured ``faults``). The vendor
    may take options, e.g. Telegram's ``{"keep_webhooks": true}``.
``GET|POST /_clock``
    ``{"advance": s}``, ``{"offset": s}``, ``{"freeze": true|false}``: move or
    stop the sandbox's clock (:mod:`sandbox.core.clock`); answers ``{"now",
    "offset", "frozen"}``.

Every CRM sandbox
-----------------

``POST /_reply``
    A person at the CRM (a HubSpot rep in the inbox, an amoCRM manager in the
    chat, a Bitrix24 Open Lines operator) answers the customer in the CRM's
    own conversation view; the CRM fires its real webhook at the bridge.
    Body: ``{"account"?, "contact_id" | "conversation", "text", "user_id"?}``:
    ``account`` as in ``/_state`` (default: any account that has the
    conversation), ``contact_id`` the CRM contact (its most recent
    conversation is answered), ``conversation`` the id the bridge gave the
    conversation (HubSpot ``integrationThreadId``, amoCRM ``conversation_id``,
    Bitrix24 the connector's chat id), ``user_id`` who answers (default: the
    record's responsible user or the first one in the queue). Vendors may
    take extras (HubSpot ``sender_name``, ``in_reply_to_id``; Bitrix24
    ``line``, ``connector``). Answer: ``{"message": <the stored reply>,
    "webhook": {"status": <the bridge's HTTP status or null>, "body",
    "error"}, ...}``; 404 when there is nothing to answer (the vendor's code:
    HubSpot ``contact_not_found`` / ``no_thread`` / ``conversation_not_found``,
    amoCRM and Bitrix24 ``chat_not_found``), 404 ``account_not_found`` for an
    unknown ``account``, 409 when Bitrix24's connector is not active on the
    line.

Other CRM actions stay vendor-specific (amoCRM ``/_note``, ``/_lead_status``;
Bitrix24 ``/_lead_status``, ``/_deal_stage``; ``/_install`` everywhere...).

Every channel sandbox
---------------------

``POST /_deliver``
    The customer writes: an update goes to the bot's webhook (the channel's
    own payload, or a convenience form); answers what the bridge answered.
``GET /_sent``
    ``{"sent": [...]}``: what the bot sent to customers, in order.

A vendor plugs in by subclassing :class:`Vendor` and calling :func:`install`.
Vendor-specific control routes raise :class:`ControlError` and read bodies
with :func:`json_object`.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flask import Flask, Response, current_app, request

from .clock import Clock
from .faults import FaultPlan

__all__ = [
    "Vendor",
    "Reply",
    "ControlError",
    "install",
    "json_object",
    "json_response",
    "int_field",
    "as_bool",
    "EXTENSION",
]

EXTENSION = "sandbox_vendor"


class ControlError(Exception):
    """A control request that cannot be served: ``{"error", "message"}``."""

    def __init__(self, message: str, status: int = 400, error: str = "bad_request") -> None:
        super().__init__(message)
        self.message, self.status, self.error = message, status, error


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False, separators=(",", ":")),
                    status=status, mimetype="application/json")


def json_object() -> dict[str, Any]:
    """The request body as a JSON object (an empty body is ``{}``)."""
    raw = request.get_data()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise ControlError("the body must be a JSON object")
    return data


def int_field(body: dict[str, Any], key: str, required: bool = True) -> int | None:
    """An integer field (digit strings accepted)."""
    value = body.get(key)
    if value is None and not required:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlError(f"{key} must be an integer")
    return value


def as_bool(value: Any, default: bool = False) -> bool:
    """Y/N, 1/0, true/false, yes/no, on/off."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return str(value).strip().lower() not in ("", "0", "n", "false", "no", "off")


@dataclass(frozen=True)
class Reply:
    """A parsed ``POST /_reply`` body (``body`` keeps every key, extras too)."""

    text: str
    account: str | None = None
    contact_id: str | None = None
    conversation: str | None = None
    user_id: Any = None
    body: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: dict[str, Any], selectors: tuple[str, ...] = ()) -> Reply:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ControlError("a non-empty text is required")
        if all(body.get(k) in (None, "") for k in ("contact_id", "conversation", *selectors)):
            names = ", ".join(("contact_id", "conversation", *selectors))
            raise ControlError(f"one of {names} is required")

        def text_of(key: str) -> str | None:
            value = body.get(key)
            if value in (None, ""):
                return None
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ControlError(f"{key} must be a string or an integer")
            return str(value)

        return cls(text, text_of("account"), text_of("contact_id"), text_of("conversation"),
                   body.get("user_id"), dict(body))


class Vendor:
    """What the common control API needs from a vendor sandbox.

    Subclasses set :attr:`name`, :attr:`kind`, and provide the state lock, the
    clock and the fault plan; every hook below runs under :attr:`lock` unless
    said otherwise.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "crm"  # "crm" | "channel"
    #: extra ``/_reply`` keys that select a conversation (beside contact_id/conversation)
    reply_selectors: ClassVar[tuple[str, ...]] = ()

    clock: Clock
    faults: FaultPlan

    @property
    def lock(self) -> AbstractContextManager[Any]:
        """The vendor state's (re-entrant) lock."""
        raise NotImplementedError

    # -- accounts (/_state) --------------------------------------------------------------

    def accounts(self) -> list[Any]:
        raise NotImplementedError

    def account_key(self, account: Any) -> Hashable:
        """The selector naming ``account`` (shown as ``"account"`` in its dump)."""
        raise NotImplementedError

    def find_account(self, selector: str) -> Any | None:
        raise NotImplementedError

    def dump_account(self, account: Any) -> dict[str, Any]:
        raise NotImplementedError

    def dump_extras(self, account: Any | None) -> dict[str, Any]:
        """App-wide parts of ``/_state`` (``account``: the selected one, if any)."""
        return {}

    # -- settings (/_config, /_reset) -------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_config(self, values: dict[str, Any]) -> None:
        """Apply run-time changes; ``ValueError`` for a bad key or value."""
        raise NotImplementedError

    def reset(self, options: dict[str, Any]) -> None:
        """Back to the seeded state (called without the lock held)."""
        raise NotImplementedError

    # -- CRM: POST /_reply (called without the lock held) --------------------------------------

    def reply(self, reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    # -- channel: POST /_deliver, GET /_sent (called without the lock held) -----------------------

    def deliver(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def sent(self, args: dict[str, str]) -> list[dict[str, Any]]:
        raise NotImplementedError


def vendor() -> Vendor:
    """The current app's :class:`Vendor`."""
    found: Vendor = current_app.extensions[EXTENSION]
    return found


def _state() -> Response:
    sb = vendor()
    selector = request.args.get("account")
    with sb.lock:
        if selector not in (None, ""):
            account = sb.find_account(selector)
            if account is None:
                raise ControlError(f"unknown account {selector}", 404, "account_not_found")
            chosen = [account]
        else:
            account, chosen = None, sb.accounts()
        body = sb.dump_extras(account)
        body["accounts"] = [{"account": sb.account_key(a), **sb.dump_account(a)}
                            for a in chosen]
    return json_response(body)


def _config() -> Response:
    sb = vendor()
    if request.method == "POST":
        values = json_object()
        with sb.lock:
            try:
                sb.set_config(values)
            except (TypeError, ValueError) as exc:
                raise ControlError(str(exc), 400, "invalid_config") from None
    with sb.lock:
        return json_response(sb.get_config())


def _reset() -> Response:
    vendor().reset(json_object())
    return json_response({"ok": True})


def _clock() -> Response:
    clock = vendor().clock
    if request.method == "POST":
        body = json_object()
        try:
            if "freeze" in body:
                clock.freeze(as_bool(body["freeze"]))
            if "offset" in body:
                clock.set_offset(float(body["offset"]))
            if "advance" in body:
                clock.advance(float(body["advance"]))
        except (TypeError, ValueError):
            raise ControlError("offset and advance must be numbers of seconds") from None
    return json_response(clock.snapshot())


def _reply() -> Response:
    sb = vendor()
    answer = sb.reply(Reply.parse(json_object(), sb.reply_selectors))
    webhook = answer.get("webhook")
    assert isinstance(webhook, dict) and {"status", "body", "error"} <= set(webhook), \
        f"{sb.name}: /_reply must answer a webhook with status, body and error"
    return json_response(answer)


def _deliver() -> Response:
    return json_response(vendor().deliver(json_object()))


def _sent() -> Response:
    return json_response({"sent": vendor().sent(dict(request.args))})


def _control_error(exc: ControlError) -> Response:
    return json_response({"error": exc.error, "message": exc.message}, exc.status)


def install(app: Flask, sb: Vendor) -> None:
    """Serve the common control API of ``sb`` on ``app`` (``/_faults`` comes with
    the fault plan's own install, ``/_stats`` with :mod:`sandbox.core.stats`)."""
    assert sb.kind in ("crm", "channel"), sb.kind
    app.extensions[EXTENSION] = sb
    app.register_error_handler(ControlError, _control_error)
    app.add_url_rule("/_state", "sandbox_state", _state, methods=["GET"])
    app.add_url_rule("/_config", "sandbox_config", _config, methods=["GET", "POST"])
    app.add_url_rule("/_reset", "sandbox_reset", _reset, methods=["POST"])
    app.add_url_rule("/_clock", "sandbox_clock", _clock, methods=["GET", "POST"])
    if sb.kind == "crm":
        app.add_url_rule("/_reply", "sandbox_reply", _reply, methods=["POST"])
    else:
        app.add_url_rule("/_deliver", "sandbox_deliver", _deliver, methods=["POST"])
        app.add_url_rule("/_sent", "sandbox_sent", _sent, methods=["GET"])
