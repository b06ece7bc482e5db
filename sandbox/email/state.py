"""In-process state of the e-mail sandbox: mailboxes, the mail the bridge
sent, the customers' mail delivered to the bridge.

Everything lives in one :class:`Store` guarded by one re-entrant lock: the
Flask threads (the control API) and the SMTP server's event-loop thread
both write to it. Nothing here does I/O.

A :class:`Mailbox` is a support address this mail system hosts for the
bridge, with the inbound route a mail provider would have: the URL of the
bridge's raw-MIME webhook (``POST /webhooks/email/<key>``) and, when the
sandbox was told it, the account's webhook secret, with which it signs what
it posts (``X-Bridge-Signature``).
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..core.clock import Clock
from ..core.webhooks import DeliveryLog

__all__ = [
    "DEMO_ADDRESS",
    "DEMO_NAME",
    "Mailbox",
    "SandboxConfig",
    "SentMail",
    "Store",
    "plain_address",
    "same_address",
]

#: the demo support address (``.example`` is reserved for examples, RFC 2606)
DEMO_ADDRESS = "support@demo.example"
DEMO_NAME = "Demo Support"

#: a plain ``local@domain`` address: no display name, no spaces, no angle
#: brackets, no line breaks (what a form field or a JSON value may carry)
_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"@]{1,64}@[^\s<>()\[\]\\,;:\"@]{1,253}")


def plain_address(value: Any, what: str) -> str:
    """``value`` as a lower-case plain address; ``ValueError`` naming ``what``."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value.strip()):
        raise ValueError(f"{what} must be a plain e-mail address such as anna@example.com")
    return value.strip().lower()


def same_address(address: str) -> str:
    """``address`` in the form two spellings of one mailbox share: lower
    case, an internationalised domain as its IDNA A-label (RFC 5890; a
    sender writes ``анна@пример.рф`` as ``анна@xn--e1afmkfd.xn--p1ai`` in the
    envelope)."""
    local, _, domain = address.strip().lower().rpartition("@")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # not a domain IDNA can write: compared as it is
    return f"{local}@{domain}"


@dataclass
class SandboxConfig:
    """The sandbox's settings (``create_app(config)``, ``/_config``).

    Start-up only: ``smtp_host``, ``smtp_port`` (0: a free port, learnt from
    ``GET /_state`` or ``GET /_smtp``), ``mailboxes`` (the seeded ones),
    ``users`` (SMTP logins: ``{login: password}``; when there are any, the
    server offers AUTH and takes mail only from a logged-in client, and a
    login that is an address is a mailbox too). Run-time: the rest.
    """

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 0
    mailboxes: list[dict[str, Any]] = field(
        default_factory=lambda: [{"address": DEMO_ADDRESS, "name": DEMO_NAME}]
    )
    users: dict[str, str] = field(default_factory=dict)
    #: how long ``/_deliver`` waits for the bridge's webhook to answer
    webhook_timeout_s: float = 30.0
    #: the newest mails and deliveries kept
    log_limit: int = 10_000
    faults: dict[str, Any] = field(default_factory=dict)

    START_UP = ("smtp_host", "smtp_port", "mailboxes", "users")

    @classmethod
    def from_dict(
        cls, values: dict[str, Any] | None, base: SandboxConfig | None = None
    ) -> SandboxConfig:
        """Merge ``values`` over ``base`` (or the defaults); a bad key or
        value raises ``ValueError``."""
        current = asdict(base) if base else asdict(cls())
        unknown = set(values or {}) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown email sandbox config keys: {sorted(unknown)}")
        if base is not None:
            fixed = sorted(set(values or {}) & set(cls.START_UP))
            if fixed:
                raise ValueError(f"{fixed} are start-up settings (create_app), not run-time ones")
        current.update(values or {})
        config = cls(**current)
        config.validate()
        return config

    def validate(self) -> None:
        timeout = self.webhook_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError("webhook_timeout_s must be a positive number of seconds")
        limit = self.log_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("log_limit must be a positive integer")
        port = self.smtp_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError("smtp_port must be 0 (a free port) or a port number")
        if not isinstance(self.smtp_host, str) or not self.smtp_host:
            raise ValueError("smtp_host must be a host name or address")
        if not isinstance(self.mailboxes, list):
            raise ValueError(
                "mailboxes must be a list of {address, name?, webhook_url?, webhook_secret?}"
            )
        for value in self.mailboxes:
            Mailbox.parse(value)
        if not isinstance(self.users, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in self.users.items()
        ):
            raise ValueError("users must map SMTP logins to passwords (non-empty strings)")
        if not isinstance(self.faults, dict):
            raise ValueError("faults must be an object (see /_faults)")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mailboxes"] = [Mailbox.parse(m).view() for m in self.mailboxes]
        data["users"] = sorted(self.users)  # the logins, never the passwords
        return data


@dataclass
class Mailbox:
    """A support address and its inbound route to the bridge."""

    address: str
    name: str = ""
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, value: Any) -> Mailbox:
        """A mailbox from the control API or the config; ``ValueError`` when bad."""
        if not isinstance(value, dict):
            raise ValueError(
                "a mailbox is an object {address, name?, webhook_url?, webhook_secret?}"
            )
        unknown = set(value) - {"address", "name", "webhook_url", "webhook_secret"}
        if unknown:
            raise ValueError(f"unknown mailbox fields: {sorted(unknown)}")
        address = plain_address(value.get("address"), "address")
        name = value.get("name") or ""
        url = value.get("webhook_url") or None
        secret = value.get("webhook_secret") or None
        if not isinstance(name, str):
            raise ValueError("name must be a string")
        if url is not None and (not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url)):
            raise ValueError("webhook_url must be an http(s) URL")
        if secret is not None and not isinstance(secret, str):
            raise ValueError("webhook_secret must be a string")
        return cls(address, name, url, secret)

    def view(self) -> dict[str, Any]:
        """The mailbox as the control API shows it (the secret is not shown)."""
        return {
            "address": self.address,
            "name": self.name,
            "webhook_url": self.webhook_url,
            "has_webhook_secret": bool(self.webhook_secret),
        }


@dataclass
class SentMail:
    """One message the SMTP server accepted from the bridge."""

    id: int
    time: float
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes = field(repr=False)
    #: what :func:`sandbox.email.mail.summary` read from it
    summary: dict[str, Any] = field(default_factory=dict)
    #: the SMTP login the client authenticated as (None: no AUTH)
    login: str | None = None

    def recipients(self) -> set[str]:
        """Envelope and header recipients (:func:`same_address`)."""
        found = {same_address(r) for r in self.rcpt_tos}
        found.update(same_address(a) for a in self.summary.get("to_addrs", ()))
        return found

    def view(self) -> dict[str, Any]:
        """The ``GET /_sent`` entry."""
        shown = {k: v for k, v in self.summary.items() if k not in ("to_addrs", "from_addr")}
        return {
            "id": self.id,
            "time": self.time,
            "envelope": {"mail_from": self.mail_from, "rcpt_tos": list(self.rcpt_tos)},
            "login": self.login,
            "size": len(self.raw),
            **shown,
        }


class Store:
    """All state of one sandbox app."""

    def __init__(self, config: SandboxConfig, clock: Clock) -> None:
        self.lock = threading.RLock()
        self.config = config
        self.clock = clock
        self.mailboxes: dict[str, Mailbox] = {}
        self.sent: list[SentMail] = []
        self.deliveries = DeliveryLog(config.log_limit, numbered=True)
        self._next_sent = 1
        self.reset()

    def now(self) -> float:
        return self.clock.now()

    def reset(self, *, keep_mailboxes: bool = False) -> None:
        """Forget the mail; the mailboxes go back to the configured ones
        unless ``keep_mailboxes`` (their routes to the bridge are kept)."""
        with self.lock:
            self.sent.clear()
            self.deliveries.clear()
            self._next_sent = 1
            if not keep_mailboxes:
                self.mailboxes = {}
                for value in self.config.mailboxes:
                    box = Mailbox.parse(value)
                    self.mailboxes[box.address] = box
                for login in self.config.users:
                    try:
                        address = plain_address(login, "login")
                    except ValueError:
                        continue  # a login that is no address names no mailbox
                    self.mailboxes.setdefault(address, Mailbox(address))

    def apply_config(self, config: SandboxConfig) -> None:
        with self.lock:
            self.config = config
            self.deliveries.resize(config.log_limit)
            del self.sent[: -config.log_limit]

    def add_mailbox(self, box: Mailbox) -> Mailbox:
        """Register ``box`` or update the one with its address (a field left
        out keeps its value)."""
        with self.lock:
            old = self.mailboxes.get(box.address)
            if old is not None:
                box = Mailbox(
                    box.address,
                    box.name or old.name,
                    box.webhook_url or old.webhook_url,
                    box.webhook_secret or old.webhook_secret,
                )
            self.mailboxes[box.address] = box
            return box

    def record_sent(
        self,
        mail_from: str,
        rcpt_tos: tuple[str, ...],
        raw: bytes,
        summary: dict[str, Any],
        login: str | None = None,
    ) -> SentMail:
        with self.lock:
            mail = SentMail(self._next_sent, self.now(), mail_from, rcpt_tos, raw, summary, login)
            self._next_sent += 1
            self.sent.append(mail)
            del self.sent[: -self.config.log_limit]
            return mail

    def sent_mail(self, mail_id: int) -> SentMail | None:
        with self.lock:
            return next((m for m in self.sent if m.id == mail_id), None)
