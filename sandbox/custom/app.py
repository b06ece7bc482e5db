"""Flask application of the custom-channel sandbox (routes in the package
docstring)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, Response, current_app, request
from standardwebhooks import Webhook, WebhookVerificationError

from ..core import control as core_control
from ..core import stats
from ..core.clock import Clock
from ..core.control import ControlError, Vendor, json_object, json_response
from ..core.faults import FaultPlan

__all__ = ["DEMO_SECRET", "DEMO_SYSTEM", "create_app"]

DEMO_SYSTEM = "demo-site"
#: a fixed secret for the demo and the tests (32 bytes, base64)
DEMO_SECRET = "whsec_c2FuZGJveC1jdXN0b20tY2hhbm5lbC1kZW1vLXNlY3JldCE="  # noqa: S105
EXTENSION = "custom_sandbox"


@dataclass
class System:
    """One system: its secret, the bridge's URL for it, what it received."""

    name: str
    secret: str
    inbound_url: str | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)
    #: webhook-id -> the id this receiver gave it (a repeat gets the same answer)
    seen: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    refused: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


class CustomSandbox(Vendor):
    name = "custom"
    kind = "channel"

    def __init__(self, config: dict[str, Any]) -> None:
        self.clock = Clock()
        self.faults = FaultPlan()
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.config: dict[str, Any] = {"timeout": 10.0}
        self.seed: dict[str, str] = {DEMO_SYSTEM: DEMO_SECRET, **config.get("systems", {})}
        self.systems: dict[str, System] = {}
        self.reset({})
        if config.get("faults"):
            self.faults.update(config["faults"])

    @property
    def lock(self) -> Any:
        return self._lock

    # -- the common control API ------------------------------------------------

    def accounts(self) -> list[System]:
        return list(self.systems.values())

    def account_key(self, account: System) -> Hashable:
        return account.name

    def find_account(self, selector: str) -> System | None:
        return self.systems.get(selector)

    def dump_account(self, account: System) -> dict[str, Any]:
        return {
            "inbound_url": account.inbound_url,
            "received": len(account.sent),
            "duplicates": account.duplicates,
            "refused_signatures": account.refused,
            "events": [e["type"] for e in account.events],
        }

    def get_config(self) -> dict[str, Any]:
        return dict(self.config)

    def set_config(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key != "timeout":
                raise ValueError(f"unknown setting {key} (known: timeout)")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError("timeout must be a positive number of seconds")
            self.config[key] = float(value)

    def reset(self, options: dict[str, Any]) -> None:
        with self._lock:
            self.systems = {name: System(name, secret) for name, secret in self.seed.items()}

    def deliver(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            system = self._system(body.get("account"))
            url = body.get("url") or system.inbound_url
            secret = body.get("secret") or system.secret
        if not isinstance(url, str) or not url:
            raise ControlError(
                f"{system.name} has no bridge URL yet: connect it (endpoint.connected) or pass url",
                409,
                "not_connected",
            )
        payload = body["payload"] if "payload" in body else _message(body)
        raw = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        webhook_id = str(body.get("webhook_id") or f"msg_{uuid.uuid4().hex}")
        offset = float(body.get("timestamp_offset") or 0)
        when = dt.datetime.fromtimestamp(self.clock.now() + offset, dt.UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(webhook_id, when, raw),
        }
        try:
            answer = requests.post(url, data=raw, headers=headers, timeout=self.config["timeout"])
        except requests.RequestException as exc:
            return {"status": None, "body": None, "error": type(exc).__name__,
                    "webhook_id": webhook_id}
        try:
            answered: Any = answer.json()
        except ValueError:
            answered = answer.text[:2000]
        return {"status": answer.status_code, "body": answered, "webhook_id": webhook_id}

    def sent(self, args: dict[str, str]) -> list[dict[str, Any]]:
        with self._lock:
            chosen = [self._system(args["account"])] if args.get("account") else self.accounts()
            thread = args.get("thread_id")
            return [dict(s) for system in chosen for s in system.sent
                    if thread is None or s["thread_id"] == thread]

    def _system(self, name: Any) -> System:
        if name in (None, ""):
            name = DEMO_SYSTEM
        system = self.systems.get(str(name))
        if system is None:
            raise ControlError(f"unknown system {name}", 404, "account_not_found")
        return system

    # -- the receiver --------------------------------------------------------------

    def receive(self, name: str) -> Response:
        with self._lock:
            system = self.systems.get(name)
            if system is None:
                return _error(404, "not_found", f"no system {name}")
            raw = request.get_data()
            try:
                Webhook(system.secret).verify(raw, dict(request.headers), json_parse=False)
            except (WebhookVerificationError, ValueError) as exc:
                system.refused += 1
                return _error(401, "invalid_signature", str(exc))
            webhook_id = request.headers["webhook-id"]
            if webhook_id in system.seen:
                system.duplicates += 1
                return json_response({"ok": True, "id": system.seen[webhook_id],
                                      "duplicate": True})
            try:
                event = json.loads(raw)
            except ValueError:
                return _error(400, "invalid_json", "the body is not JSON")
            number = next(self._ids)
            system.seen[webhook_id] = f"cb-{number}"
            system.events.append({"type": event.get("type"), "webhook_id": webhook_id})
            data = event.get("data") or {}
            if event.get("type") == "endpoint.connected":
                system.inbound_url = data.get("inbound_url")
            elif event.get("type") == "message.created":
                system.sent.append({
                    "id": f"cb-{number}", "webhook_id": webhook_id,
                    "thread_id": data.get("thread_id"), "text": data.get("text"),
                    "attachments": data.get("attachments") or [],
                    "reply_to": data.get("reply_to"), "bridge_id": data.get("id"),
                })
            return json_response({"ok": True, "id": f"cb-{number}"})

    def add_system(self) -> Response:
        body = json_object()
        name, secret = body.get("system"), body.get("secret")
        if not isinstance(name, str) or not name or not isinstance(secret, str):
            raise ControlError("system and secret (whsec_...) are required")
        try:
            Webhook(secret)
        except Exception:  # noqa: BLE001
            raise ControlError("secret must be whsec_ and base64") from None
        with self._lock:
            self.seed[name] = secret
            self.systems[name] = System(name, secret)
        return json_response({"ok": True, "system": name})


def _message(body: dict[str, Any]) -> dict[str, Any]:
    """The message payload from the convenience form."""
    sender = body.get("sender") or {"id": "visitor-1", "name": "Anna"}
    payload: dict[str, Any] = {"type": "message", "sender": sender}
    for key in ("thread_id", "message_id", "text", "attachments", "sent_at", "reply_to"):
        if key in body:
            payload[key] = body[key]
    return payload


def _error(status: int, code: str, message: str, retry_after: float | None = None) -> Response:
    response = json_response({"error": code, "message": message}, status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(int(retry_after) or 1)
    return response


def _fault_body(status: int, retry_after: float | None) -> Response:
    messages = {429: "slow down", 503: "temporarily unavailable", 504: "gateway timeout",
                400: "refused"}
    return _error(status, "unavailable" if status >= 500 else "refused",
                  messages.get(status, "error"), retry_after)


def _sandbox() -> CustomSandbox:
    sb: CustomSandbox = current_app.extensions[EXTENSION]
    return sb


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The sandbox app; nothing is shared between two apps. ``config``:
    ``{"systems": {name: secret}, "faults": {...}}``."""
    sb = CustomSandbox(dict(config or {}))
    app = Flask(__name__)
    app.extensions[EXTENSION] = sb
    sb.faults.install(app, error_body=_fault_body,
                      applies=lambda: request.path.startswith("/callbacks/"))
    app.add_url_rule("/callbacks/<name>", "callback",
                     lambda name: _sandbox().receive(name), methods=["POST"])
    app.add_url_rule("/_systems", "systems", lambda: _sandbox().add_system(), methods=["POST"])
    app.add_url_rule("/", "index", lambda: json_response({
        "sandbox": "custom", "receiver": f"{request.script_root}/callbacks/<system>",
        "demo_system": DEMO_SYSTEM,
        "control": ["/_deliver", "/_sent", "/_systems", "/_state", "/_faults", "/_stats",
                    "/_reset", "/_config", "/_clock"]}))
    core_control.install(app, sb)
    stats.install(app, route=lambda: "/callbacks/<system>"
                  if request.endpoint == "callback" else None)
    return app
