"""Control API of the WhatsApp sandbox (never faulted, never counted in ``/_stats``):
its hooks into the common one (:mod:`sandbox.core.control`) plus WhatsApp's own.

Routes are relative to the mount point (``/sandbox/whatsapp`` in the demo):

``GET|POST /_config``
    ``webhook_url`` (where Meta posts: the bridge's WhatsApp webhook),
    ``app_secret``, ``verify_token``, ``accounts`` (``[{phone_number_id,
    display_phone_number, waba_id, access_token, verified_name?}]``, replaced
    whole), ``templates``, the status-webhook mode, the limits and the fault
    switches (:mod:`.config` documents every key).
``POST /_verify`` ``{"url"?, "verify_token"?}``
    Meta's subscription handshake against the webhook URL (as when a webhook
    is saved in the App Dashboard): ``{"ok", "status", "body", "challenge",
    "error"}``; ``ok`` when the bridge answered 200 with the challenge. The
    last result shows in ``/_state`` (``webhook.verification``).
``POST /_deliver`` ``{"payload": <a webhook body as Meta sends it>, "account"?}``
    The payload (any corpus file's) moved onto the account (``account``: a
    phone number id, display number or WABA id; default the first account):
    ``entry[].id``, ``metadata.phone_number_id`` and ``display_phone_number``
    rewritten; each sender's 24-hour window opened; media registered; signed
    and posted. Answer: ``{"status", "body", "delivered", "error", "account",
    "payload", "customers", "media"}`` (``status``/``body``: the bridge's
    HTTP status and body text). 409 ``not_connected`` without a webhook URL.
``POST /_customer`` ``{"from", "name"?, "text"?, "account"?, "user_id"?,
"reply_to"?, "media"?: {"type", "mime_type"?, "filename"?, "caption"?,
"content_base64"?}}``
    A customer writes: a real-shaped ``messages`` payload, delivered as above;
    adds ``"message_id"`` (the wamid) to the answer.
``POST /_press`` ``{"from", "id", "message_id"?, "name"?, "account"?}``
    The customer taps the reply button, or picks the list row, whose id is
    ``id`` in an interactive message the number sent them (``message_id``:
    its wamid; default their latest button or list message): a real-shaped
    ``interactive`` ``button_reply`` / ``list_reply`` message (corpus
    ``callback_button.json`` "button", ``callback_selection.json``) replying
    to it (``context``), delivered as above; adds ``"message_id"``. 404
    ``no_interactive`` when there is no such message, 400 ``unknown_button``
    for an id it does not show.
``GET /_sent[?to=][&account=]``
    ``{"sent": [...]}``: the bridge's sends, oldest first: ``id`` (the wamid),
    ``time``, ``to``, ``wa_id``, ``phone_number_id``, ``type``, ``body`` (as
    posted), ``failure``, ``statuses`` (posted so far), ``media_fetch``.
``GET /_deliveries[?kind=][&wamid=]``
    ``{"deliveries": [...]}``: every webhook POST and its answer, with the
    payload (``kind``: ``payload``, ``customer``, ``status``).
``GET /_state[?account=]``, ``POST /_reset``, ``GET /_stats``, ``GET|POST /_faults``,
``GET|POST /_clock``
    As every sandbox (README "The control API").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..core.clock import Clock
from ..core.control import ControlError, Vendor, json_object, json_response
from ..core.faults import FaultPlan
from .config import SETTINGS
from .graph import media_url
from .state import Store, new_wamid, normalize_to, sample_bytes
from .webhook import PayloadError, Webhooks, envelope, prepare_inbound, verify

__all__ = ["WhatsAppSandbox", "control", "EXTENSION"]

EXTENSION = "whatsapp_sandbox"

control = Blueprint("whatsapp_control", __name__)


def _sandbox() -> WhatsAppSandbox:
    sb: WhatsAppSandbox = current_app.extensions[EXTENSION]
    return sb


@dataclass
class WhatsAppSandbox(Vendor):
    """What the routes share (``app.extensions["whatsapp_sandbox"]``) and the
    hooks into the common control API."""

    name = "whatsapp"
    kind = "channel"

    store: Store
    webhooks: Webhooks
    faults: FaultPlan
    clock: Clock

    @property
    def lock(self) -> Any:
        return self.store.lock

    # -- /_state ---------------------------------------------------------------------------

    def accounts(self) -> list[dict[str, Any]]:
        return self.store.accounts()

    def account_key(self, account: dict[str, Any]) -> Hashable:
        return str(account["phone_number_id"])

    def find_account(self, selector: str) -> dict[str, Any] | None:
        return self.store.find_account(selector)

    def dump_account(self, account: dict[str, Any]) -> dict[str, Any]:
        store = self.store
        pnid = account["phone_number_id"]
        return {
            **account,
            "windows": store.window_dump(pnid),
            "sent": sum(1 for r in store.sent if r["phone_number_id"] == pnid),
            "received": sorted(wamid for (number, wamid) in store.inbound if number == pnid),
            "read": sorted(
                wamid
                for (number, wamid), m in store.inbound.items()
                if number == pnid and m["read_at"] is not None
            ),
            "media": [m.describe() for m in store.media.values() if m.phone_number_id == pnid],
            "conversations": [
                {"customer": c, "category": k, **v}
                for (n, c, k), v in store.conversations.items()
                if n == pnid
            ],
        }

    def dump_extras(self, account: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "webhook": {
                "url": self.store.config["webhook_url"],
                "verification": self.store.verification,
            },
            "deliveries": len(self.store.deliveries),
            "redeliveries_pending": len(self.webhooks.dispatcher.pending()),
            "in_flight": self.webhooks.dispatcher.in_flight,
            "counters": dict(self.store.counters),
        }

    # -- /_config, /_reset -------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return dict(self.store.config)

    def set_config(self, values: dict[str, Any]) -> None:
        new = SETTINGS.update(self.store.config, values)
        self.store.config = new
        if "seed" in values:
            self.store.rng.seed(new["seed"])

    def reset(self, options: dict[str, Any]) -> None:
        self.webhooks.dispatcher.reset()
        self.store.reset()

    # -- /_deliver, /_sent ------------------------------------------------------------------------

    def _account(self, selector: Any) -> dict[str, Any]:
        with self.store.lock:
            if selector in (None, ""):
                return dict(self.store.default_account())
            account = self.store.find_account(str(selector))
        if account is None:
            raise ControlError(f"unknown account {selector}", 404, "account_not_found")
        return dict(account)

    def _need_webhook(self) -> None:
        with self.store.lock:
            if not self.store.config["webhook_url"]:
                raise ControlError(
                    'no webhook_url: POST /_config {"webhook_url": '
                    '"<the bridge\'s WhatsApp webhook>"} first',
                    409,
                    "not_connected",
                )

    def deliver(self, body: dict[str, Any]) -> dict[str, Any]:
        if "payload" not in body:
            raise ControlError('{"payload": <a WhatsApp webhook body>} is required')
        account = self._account(body.get("account"))
        self._need_webhook()
        return self._send_inbound(body["payload"], account, "payload")

    def _send_inbound(
        self,
        payload: Any,
        account: dict[str, Any],
        kind: str,
        files: dict[str, bytes] | None = None,
    ) -> dict[str, Any]:
        try:
            payload, learnt = prepare_inbound(self.store, payload, account, media_url)
        except PayloadError as exc:
            raise ControlError(str(exc), 400, "invalid_payload") from None
        with self.store.lock:
            for media_id, content in (files or {}).items():
                media = self.store.media.get(media_id)
                if media is not None:
                    media.content = content
        record = self.webhooks.post_now(
            payload, {"kind": kind, "account": account["phone_number_id"]}
        )
        return {
            "status": record["status"],
            "body": record.get("answer"),
            "delivered": record["ok"],
            "error": record["error"],
            "account": account["phone_number_id"],
            "payload": payload,
            "customers": learnt["customers"],
            "media": learnt["media"],
        }

    def customer(self, body: dict[str, Any]) -> dict[str, Any]:
        sender = body.get("from")
        if isinstance(sender, int) and not isinstance(sender, bool):
            sender = str(sender)
        wa_id = normalize_to(sender) if isinstance(sender, str) else None
        if wa_id is None or wa_id.startswith("US."):
            raise ControlError('"from" must be the customer\'s phone number (wa_id)')
        account = self._account(body.get("account"))
        self._need_webhook()
        message_id = body.get("message_id") or new_wamid(wa_id)
        message: dict[str, Any] = {
            "from": wa_id,
            "id": message_id,
            "timestamp": str(int(self.store.now())),
        }
        if body.get("reply_to"):
            message["context"] = {
                "from": account["display_phone_number"],
                "id": str(body["reply_to"]),
            }
        files: dict[str, bytes] = {}
        media = body.get("media")
        if media is not None:
            kind, item, content = _media_part(media)
            message["type"] = kind
            message[kind] = item
            files[item["id"]] = content
        elif isinstance(body.get("text"), str) and body["text"]:
            message["type"] = "text"
            message["text"] = {"body": body["text"]}
        else:
            raise ControlError('a non-empty "text" (or "media") is required')
        contact: dict[str, Any] = {
            "profile": {"name": str(body.get("name") or wa_id)},
            "wa_id": wa_id,
        }
        if body.get("user_id"):
            contact["user_id"] = str(body["user_id"])
        payload = envelope(account, {"contacts": [contact], "messages": [message]})
        answer = self._send_inbound(payload, account, "customer", files)
        return {"message_id": message_id, **answer}

    def press(self, body: dict[str, Any]) -> dict[str, Any]:
        """The customer presses a button of an interactive message (``/_press``)."""
        sender = body.get("from")
        wa_id = normalize_to(str(sender)) if isinstance(sender, (str, int)) else None
        if wa_id is None or wa_id.startswith("US."):
            raise ControlError('"from" must be the customer\'s phone number (wa_id)')
        account = self._account(body.get("account"))
        self._need_webhook()
        shown = self._shown(account, wa_id, body.get("message_id"))
        reply_type, choice = _choice(shown["body"]["interactive"], body.get("id"))
        message: dict[str, Any] = {
            "context": {"from": account["display_phone_number"], "id": shown["id"]},
            "from": wa_id,
            "id": new_wamid(wa_id),
            "timestamp": str(int(self.store.now())),
            "type": "interactive",
            "interactive": {"type": reply_type, reply_type: choice},
        }
        contact = {"profile": {"name": str(body.get("name") or wa_id)}, "wa_id": wa_id}
        payload = envelope(account, {"contacts": [contact], "messages": [message]})
        answer = self._send_inbound(payload, account, "customer")
        return {"message_id": message["id"], **answer}

    def _shown(self, account: dict[str, Any], wa_id: str, wamid: Any) -> dict[str, Any]:
        """The button or list message (``wamid``, else the latest) the
        number sent to ``wa_id``."""
        with self.store.lock:
            for record in reversed(self.store.sent):
                content = (
                    record["body"].get("interactive") if record["type"] == "interactive" else None
                )
                if (
                    record["phone_number_id"] == account["phone_number_id"]
                    and record["wa_id"] == wa_id
                    and isinstance(content, dict)
                    and content.get("type") in ("button", "list")
                    and wamid in (None, "", record["id"])
                ):
                    return dict(record)
        raise ControlError(
            "no button or list message was sent to this customer"
            + (f" as {wamid}" if wamid else ""),
            404,
            "no_interactive",
        )

    def sent(self, args: dict[str, str]) -> list[dict[str, Any]]:
        to = args.get("to")
        wanted = normalize_to(to) if to else None
        account = self._account(args["account"]) if args.get("account") else None
        with self.store.lock:
            out = []
            for record in self.store.sent:
                if to and record["to"] != to and record["wa_id"] != wanted:
                    continue
                if account and record["phone_number_id"] != account["phone_number_id"]:
                    continue
                out.append({k: v for k, v in record.items() if k != "account"})
            return out


def _choice(interactive: dict[str, Any], wanted: Any) -> tuple[str, dict[str, Any]]:
    """``("button_reply" | "list_reply", {"id", "title", "description"?})``
    of the button or row ``wanted`` shows, as Meta reports a press."""
    action = interactive.get("action") or {}
    keys: tuple[str, ...]
    if interactive.get("type") == "button":
        options = [b.get("reply") or {} for b in action.get("buttons") or []]
        reply_type, keys = "button_reply", ("id", "title")
    else:
        options = [r for s in action.get("sections") or [] for r in s.get("rows") or []]
        reply_type, keys = "list_reply", ("id", "title", "description")
    for option in options:
        if option.get("id") == wanted and wanted not in (None, ""):
            return reply_type, {k: option[k] for k in keys if k in option}
    shown = ", ".join(repr(o.get("id")) for o in options)
    raise ControlError(f'"id" must be one the message shows: {shown}', 400, "unknown_button")


def _media_part(media: Any) -> tuple[str, dict[str, Any], bytes]:
    """The message sub-object of a ``/_customer`` medium and its bytes."""
    if not isinstance(media, dict):
        raise ControlError('"media" must be an object')
    kind = media.get("type", "image")
    if kind not in ("image", "video", "audio", "document", "sticker"):
        raise ControlError('"media.type" must be image, video, audio, document or sticker')
    defaults = {
        "image": "image/jpeg",
        "video": "video/mp4",
        "audio": "audio/ogg; codecs=opus",
        "document": "application/pdf",
        "sticker": "image/webp",
    }
    content: bytes | None = None
    if media.get("content_base64") is not None:
        try:
            content = base64.b64decode(str(media["content_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise ControlError('"media.content_base64" must be base64') from None
    media_id = str(1_000_000_000_000_000 + secrets.randbelow(8_999_999_999_999_999))
    mime = str(media.get("mime_type") or defaults[kind])
    if content is None:
        content = sample_bytes(mime, media_id)
    # inbound payloads carry the SHA-256 in base64 (corpus message.json)
    item: dict[str, Any] = {
        "mime_type": mime,
        "id": media_id,
        "sha256": base64.b64encode(hashlib.sha256(content).digest()).decode(),
    }
    if media.get("caption") and kind in ("image", "video", "document"):
        item["caption"] = str(media["caption"])
    if kind == "document":
        item["filename"] = str(media.get("filename") or "document.pdf")
    if kind == "audio" and media.get("voice"):
        item["voice"] = True
    return kind, item, content


@control.post("/_verify")
def verify_webhook() -> Response:
    sb = _sandbox()
    body = json_object()
    with sb.store.lock:
        url = body.get("url") or sb.store.config["webhook_url"]
        token = body.get("verify_token") or sb.store.config["verify_token"]
        timeout = float(sb.store.config["webhook_timeout_s"])
    if not isinstance(url, str) or not url:
        raise ControlError("no webhook_url to verify", 409, "not_connected")
    result = verify(url, str(token), 1_000_000_000 + secrets.randbelow(999_999_999), timeout)
    with sb.store.lock:
        sb.store.verification = {**result, "time": sb.store.now()}
    return json_response(result)


@control.post("/_customer")
def customer() -> Response:
    return json_response(_sandbox().customer(json_object()))


@control.post("/_press")
def press() -> Response:
    return json_response(_sandbox().press(json_object()))


@control.get("/_deliveries")
def deliveries() -> Response:
    kind, wamid = request.args.get("kind"), request.args.get("wamid")
    items = [
        d
        for d in _sandbox().store.deliveries.list()
        if (not kind or d.get("kind") == kind) and (not wamid or d.get("wamid") == wamid)
    ]
    return json_response({"deliveries": items})
