"""Control API of the e-mail sandbox: its hooks into the common one
(:mod:`sandbox.core.control`) plus its own routes. Routes are relative to
the mount point (``/sandbox/email`` in the demo).

``POST /_deliver``
    A customer's mail reaches the support address: the sandbox posts it to
    the mailbox's route, the bridge's raw-MIME webhook (``Content-Type:
    message/rfc822``, signed with ``X-Bridge-Signature`` when the sandbox
    knows the account's webhook secret), and answers what the bridge
    answered: ``{"delivered", "status", "body", "error", "account",
    "message_id", "signed", "delivery_id", "duration_ms"}``. Two forms:

    * ``Content-Type: message/rfc822``: a raw RFC 5322 message, posted
      unchanged; the mailbox is ``?account=<address>``, else the first of
      its To / Cc / Delivered-To / X-Original-To that is a mailbox here.
      ``?sign=0`` posts it unsigned.
    * JSON, the mail a customer writes (:func:`sandbox.email.mail.compose`)::

          {"from": "anna@example.com", "name": "Anna", "subject": "Delivery",
           "text": "Do you deliver to Berlin?", "in_reply_to": "<id>"?}

      plus ``"account"`` (or ``"to"``: the support address; default the
      demo one when it has a route, else the only mailbox that has one),
      ``"references"``, ``"html"``, ``"language"``,
      ``"message_id"``, ``"headers"`` (extra ones, e.g. ``Auto-Submitted``),
      ``"sign": false``, ``"secret"`` (sign with another key: a hostile
      test). The sandbox adds Message-ID, Date, To.

    400 ``invalid_mail`` (what is wrong with the mail or the form), 404
    ``account_not_found`` (no such mailbox), 409 ``not_connected`` (the
    mailbox has no route to the bridge yet).
``GET /_sent[?to=<address>][&account=<address>]``
    ``{"sent": [...]}``, what the bridge sent over SMTP, oldest first:
    ``id``, ``time``, ``envelope`` (``mail_from``, ``rcpt_tos``), ``headers``
    (Message-ID, In-Reply-To, References, Subject, From, To, Cc, Reply-To,
    Auto-Submitted, X-Auto-Response-Suppress, Date, Content-Language; null
    when absent), ``references`` (a list), ``subject``, ``text``, ``html``
    (never rendered by the try-it page), ``attachments``, ``size``. ``to``:
    mail with that recipient (envelope or To / Cc); ``account``: mail sent
    from that mailbox.
``GET /_sent/<id>/raw``                 the message as it arrived (message/rfc822)
``GET /_deliveries[?from=][&account=]``  ``{"deliveries": [...]}``: the customers' mail
                                         posted to the bridge, with its answer
``GET|POST /_mailboxes``                 list / add or update ``{"address", "name"?,
                                         "webhook_url"?, "webhook_secret"?}`` (what
                                         an admin sets at the mail provider: the
                                         inbound route to the bridge's webhook)
``GET /_state[?account=<address>]``      the mailboxes (``accounts``) and ``smtp``:
                                         host, port, security, auth, whether it runs
``GET /_smtp``                           ``smtp`` alone: where the bridge sends
                                         (its account's smtp_* settings)
``POST /_reset`` ``{"keep_mailboxes": false}``  forget the mail (and the routes
                                         unless kept)
``GET|POST /_config``                    ``webhook_timeout_s``, ``log_limit``
``GET|POST /_faults``, ``GET /_stats``   the SMTP server's faults and transactions
                                         (:mod:`sandbox.email.smtp`)
"""

from __future__ import annotations

import email
from collections.abc import Hashable
from email.policy import default as default_policy
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..core import webhooks
from ..core.clock import Clock
from ..core.control import ControlError, Vendor, as_bool, json_object, json_response
from ..core.faults import FaultPlan
from .mail import MailError, check_raw, compose, header_recipients, sign, summary
from .smtp import SmtpServer
from .state import DEMO_ADDRESS, Mailbox, SandboxConfig, Store, plain_address, same_address

__all__ = ["EmailSandbox", "EXTENSION", "control", "deliver_view"]

EXTENSION = "email_sandbox"
#: where a raw mail names the mailbox it was delivered to
_RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To")
#: why no answer came (never the exception's text: the URL's path is a secret)
_NO_ANSWER = {
    "timeout": "the bridge did not answer in time",
    "refused": "connection refused",
    "connect": "could not connect to the bridge",
}

control = Blueprint("email_control", __name__)


def _sandbox() -> EmailSandbox:
    sb: EmailSandbox = current_app.extensions[EXTENSION]
    return sb


class EmailSandbox(Vendor):
    """The e-mail sandbox: what the routes share (``app.extensions
    ["email_sandbox"]``) and its hooks into the common control API."""

    name = "email"
    kind = "channel"

    def __init__(self, store: Store, faults: FaultPlan, clock: Clock) -> None:
        self.store, self.faults, self.clock = store, faults, clock
        self.smtp = SmtpServer(store, faults)

    @property
    def lock(self) -> Any:
        return self.store.lock

    # -- accounts (/_state) ------------------------------------------------------------

    def accounts(self) -> list[Mailbox]:
        return list(self.store.mailboxes.values())

    def account_key(self, account: Mailbox) -> Hashable:
        return account.address

    def find_account(self, selector: str) -> Mailbox | None:
        return self.store.mailboxes.get(selector.strip().lower())

    def dump_account(self, account: Mailbox) -> dict[str, Any]:
        store = self.store
        received = sum(1 for d in store.deliveries if d.get("account") == account.address)
        sent = sum(1 for m in store.sent if m.mail_from.lower() == account.address)
        return {**account.view(), "delivered": received, "sent": sent}

    def dump_extras(self, account: Any | None) -> dict[str, Any]:
        return {"smtp": self.smtp.view()}

    # -- settings ----------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return self.store.config.to_dict()

    def set_config(self, values: dict[str, Any]) -> None:
        new = SandboxConfig.from_dict(values, base=self.store.config)
        self.store.apply_config(new)
        if "faults" in values:
            self.faults.update(new.faults)

    def reset(self, options: dict[str, Any]) -> None:
        self.store.reset(keep_mailboxes=as_bool(options.get("keep_mailboxes")))

    # -- the customer writes -------------------------------------------------------------

    def deliver(self, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON form: the mail is written here, then posted."""
        selector = body.get("account") or body.get("to")
        if body.get("account") and body.get("to") and body["account"] != body["to"]:
            raise ControlError("account and to name two different mailboxes", 400, "invalid_mail")
        box = self._mailbox(selector) if selector else self._default_mailbox()
        form = {k: v for k, v in body.items() if k not in ("account", "to")}
        try:
            raw = compose(form, box.address, now=self.store.now())
        except MailError as exc:
            raise ControlError(str(exc), 400, "invalid_mail") from None
        secret = body.get("secret")
        if secret is not None and not isinstance(secret, str):
            raise ControlError("secret must be a string", 400, "invalid_mail")
        return self._post(box, raw, signed=as_bool(body.get("sign"), True), secret=secret)

    def deliver_raw(self, raw: bytes, args: dict[str, str]) -> dict[str, Any]:
        """A raw message, posted unchanged."""
        try:
            headers = check_raw(raw)
        except MailError as exc:
            raise ControlError(str(exc), 400, "invalid_mail") from None
        if args.get("account"):
            box = self._mailbox(args["account"])
        else:
            box = self._recipient_mailbox(header_recipients(headers, _RECIPIENT_HEADERS))
        return self._post(box, raw, signed=as_bool(args.get("sign"), True), secret=None)

    def _mailbox(self, selector: Any) -> Mailbox:
        if not isinstance(selector, str):
            raise ControlError("account must be a mailbox address", 400, "invalid_mail")
        with self.store.lock:
            box = self.find_account(selector)
            known = sorted(self.store.mailboxes)
        if box is None:
            raise ControlError(
                f"no mailbox {selector} here (mailboxes: {', '.join(known)}); "
                "add one with POST /_mailboxes",
                404,
                "account_not_found",
            )
        return box

    def _default_mailbox(self) -> Mailbox:
        """The demo mailbox when it has a route to the bridge, else the only
        mailbox that has one (a stack that connected one account of its
        own), else the demo one (which answers 409 ``not_connected``)."""
        with self.store.lock:
            demo = self.store.mailboxes.get(DEMO_ADDRESS)
            routed = [b for b in self.store.mailboxes.values() if b.webhook_url]
        if demo is not None and demo.webhook_url:
            return demo
        if len(routed) == 1:
            return routed[0]
        return self._mailbox(DEMO_ADDRESS)

    def _recipient_mailbox(self, recipients: list[str]) -> Mailbox:
        with self.store.lock:
            for address in recipients:
                box = self.store.mailboxes.get(address)
                if box is not None:
                    return box
            known = sorted(self.store.mailboxes)
        raise ControlError(
            "none of the mail's recipients (To, Cc, Delivered-To, X-Original-To) is a mailbox "
            f"here (mailboxes: {', '.join(known)}): pass ?account=<address>",
            404,
            "account_not_found",
        )

    def _post(
        self, box: Mailbox, raw: bytes, *, signed: bool, secret: str | None
    ) -> dict[str, Any]:
        """Post ``raw`` to the mailbox's route; the answer and its record."""
        if not box.webhook_url:
            raise ControlError(
                f"{box.address} has no route to the bridge yet: connect the e-mail account, "
                "then POST /_mailboxes {address, webhook_url, webhook_secret}",
                409,
                "not_connected",
            )
        key = secret if secret is not None else (box.webhook_secret if signed else None)
        headers: dict[str, str | None] = {"Content-Type": "message/rfc822"}
        if key:
            headers["X-Bridge-Signature"] = sign(raw, key)
        started = self.store.now()
        outcome = webhooks.send(box.webhook_url, raw, headers, self.store.config.webhook_timeout_s)
        delivered = outcome.status is not None and 200 <= outcome.status < 300
        if outcome.status is None:
            error: str | None = _NO_ANSWER.get(outcome.error_kind or "", "no answer")
        else:
            error = None if delivered else f"the bridge answered {outcome.status} {outcome.reason}"
        shown = summary(email.message_from_bytes(raw, policy=default_policy))
        record = self.store.deliveries.append(
            {
                "time": started,
                "account": box.address,
                "from": shown["from_addr"],
                "headers": shown["headers"],
                "subject": shown["subject"],
                "text": shown["text"],
                "message_id": shown["headers"]["Message-ID"],
                "size": len(raw),
                "signed": bool(key),
                "status": outcome.status,
                "delivered": delivered,
                "error": error,
            }
        )
        return {
            "delivered": delivered,
            "status": outcome.status,
            "body": outcome.body(2000),
            "error": error,
            "account": box.address,
            "message_id": record["message_id"],
            "signed": bool(key),
            "delivery_id": record["id"],
            "duration_ms": outcome.duration_ms,
        }

    # -- what the bridge sent -------------------------------------------------------------

    def sent(self, args: dict[str, str]) -> list[dict[str, Any]]:
        to = _address_arg(args, "to")
        to = same_address(to) if to else None
        account = _address_arg(args, "account")
        with self.store.lock:
            mails = list(self.store.sent)
        return [
            m.view()
            for m in mails
            if (to is None or to in m.recipients())
            and (account is None or m.mail_from.lower() == account)
        ]

    def deliveries(self, args: dict[str, str]) -> list[dict[str, Any]]:
        sender = _address_arg(args, "from")
        account = _address_arg(args, "account")
        return [
            d
            for d in self.store.deliveries.list()
            if (sender is None or d.get("from") == sender)
            and (account is None or d.get("account") == account)
        ]


def _address_arg(args: dict[str, str], name: str) -> str | None:
    value = args.get(name)
    if value in (None, ""):
        return None
    try:
        return plain_address(value, name)
    except ValueError as exc:
        raise ControlError(str(exc)) from None


def deliver_view() -> Response:
    """``POST /_deliver`` in both forms (the common view takes JSON only)."""
    sb = _sandbox()
    if request.mimetype == "message/rfc822":
        return json_response(sb.deliver_raw(request.get_data(), dict(request.args)))
    try:
        body = json_object()
    except ControlError:
        raise ControlError(
            'post the mail as JSON ({"from", "subject", "text", ...}) or '
            "as a raw message with Content-Type: message/rfc822",
            400,
            "invalid_mail",
        ) from None
    return json_response(sb.deliver(body))


@control.get("/_smtp")
def smtp_server() -> Response:
    return json_response(_sandbox().smtp.view())


@control.get("/_deliveries")
def deliveries() -> Response:
    return json_response({"deliveries": _sandbox().deliveries(dict(request.args))})


@control.get("/_sent/<int:mail_id>/raw")
def sent_raw(mail_id: int) -> Response:
    mail = _sandbox().store.sent_mail(mail_id)
    if mail is None:
        raise ControlError(f"no sent mail {mail_id}", 404, "not_found")
    return Response(mail.raw, mimetype="message/rfc822")


@control.route("/_mailboxes", methods=["GET", "POST"])
def mailboxes() -> tuple[Response, int]:
    sb = _sandbox()
    if request.method == "GET":
        with sb.lock:
            return json_response({"mailboxes": [b.view() for b in sb.accounts()]}), 200
    try:
        box = Mailbox.parse(json_object())
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    return json_response({"mailbox": sb.store.add_mailbox(box).view()}), 201
