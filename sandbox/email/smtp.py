"""The sandbox's SMTP server: where the bridge sends its replies.

aiosmtpd's threaded ``Controller`` on a loopback port, plain (no TLS: the
adapter's ``smtp_security = "plain"`` is allowed to a loopback host, with or
without a login), SMTPUTF8 offered (RFC 6531). Without configured ``users``
anyone may send; with them the server offers AUTH PLAIN and LOGIN (RFC 4954)
and answers ``530 5.7.0`` to a client that has not logged in. Every message whose data arrives is
recorded in the store (envelope, raw bytes, a summary) and answered
``250``, unless the sandbox's fault plan (``/_faults``, the one every
sandbox has) says otherwise. A mail transaction is drawn as a request
``DATA /smtp/<recipients>`` (so a ``routes`` rule or ``refuse_path`` can
pick recipients), and each fault reads as an SMTP server's answer at the
end of the data (RFC 5321 §4.2.2 and §4.5.3.2, the codes of RFC 3463):

=========================  ==============================================
``error_rate``             ``451 4.3.0``: a temporary failure, nothing kept
``rate_429`` / a storm     ``421 4.7.0``: slow down, the session is closed
``timeout_rate``           no answer for ``timeout_seconds``, then ``451
                           4.4.2``; nothing kept
``commit_then_timeout``    the mail is kept, then no answer for
                           ``timeout_seconds`` before ``250``: a client
                           that gave up cannot know it was delivered
``refuse_path``            ``550 5.1.1``: the recipient does not exist
=========================  ==============================================

Each transaction is counted in ``/_stats`` as ``SMTP DATA`` with its reply
code.

The server starts with the sandbox's first request (so an app that is
built and never used runs no thread), on ``smtp_port`` or a free port
(``GET /_state`` says which); :meth:`SmtpServer.stop` ends it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import threading
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ..core.faults import FaultPlan
from ..core.stats import RequestStats
from .mail import parse_sent, summary
from .state import Store

__all__ = ["SmtpServer", "REPLIES"]

log = logging.getLogger("sandbox.email")

#: the end-of-data answers, by fault
REPLIES = {
    None: "250 2.0.0 Ok: queued as S{id}",
    "5xx": "451 4.3.0 Temporary failure in the sandbox, try again later",
    "429": "421 4.7.0 Too many messages from you, slow down (closing connection)",
    "timeout": "451 4.4.2 Timed out while delivering, try again later",
    "refused": "550 5.1.1 The recipient does not exist here",
}
#: the greeting's name (aiosmtpd's default is this host's FQDN)
SERVER_NAME = "smtp.sandbox.invalid"


class _Handler:
    """aiosmtpd's ``DATA`` hook: the fault plan, then the record."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        plan, store = self.server.faults, self.server.store
        path = "/smtp/" + ",".join(envelope.rcpt_tos)
        if plan.latency_ms:
            await asyncio.sleep(plan.latency_ms / 1000.0)
        fault = "refused" if plan.refuses(path) else plan.draw("DATA", path)
        # counted when decided: a client that gives up during a stall
        # cancels this task before the answer is written
        if fault not in (None, "commit_then_timeout"):
            reply = self.server.count(REPLIES.get(fault, REPLIES["5xx"]))
            if fault == "timeout":
                await asyncio.sleep(plan.timeout_seconds)
            return reply
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not raw:
            raw = envelope.content
        message = parse_sent(raw, envelope.smtp_utf8)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        mail = store.record_sent(
            envelope.mail_from or "", tuple(envelope.rcpt_tos), raw, summary(message), login
        )
        reply = self.server.count(REPLIES[None].format(id=mail.id))
        if fault == "commit_then_timeout":
            await asyncio.sleep(plan.timeout_seconds)
        return reply


class _Controller(Controller):
    """aiosmtpd's controller with AUTH in clear text allowed (a loopback
    relay). aiosmtpd offers AUTH only after STARTTLS unless told otherwise,
    and warns when told through its arguments: set after ``__init__``."""

    def factory(self) -> SMTP:
        smtp = SMTP(self.handler, **self.SMTP_kwargs)
        smtp._auth_require_tls = False
        return smtp


class SmtpServer:
    """The running (or not yet started) SMTP server of one sandbox app."""

    def __init__(self, store: Store, faults: FaultPlan, stats: RequestStats | None = None) -> None:
        self.store, self.faults, self.stats = store, faults, stats
        self.host = store.config.smtp_host
        self.port = store.config.smtp_port
        self._controller: Controller | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def count(self, reply: str) -> str:
        """Record the transaction in ``/_stats``; returns ``reply``."""
        if self.stats is not None:
            self.stats.record("SMTP", "DATA", int(reply[:3]))
        return reply

    def start(self) -> None:
        """Listen (once; later calls do nothing). A free port is picked when
        none is configured; a port taken in between is tried again."""
        with self._lock:
            if self._controller is not None:
                return
            session_log = logging.getLogger("mail.log")
            if session_log.level == logging.NOTSET:
                # aiosmtpd's session log names peers and, at DEBUG, every
                # command with its addresses: personal data stays out of logs
                session_log.setLevel(logging.WARNING)
            wanted = self.store.config.smtp_port
            for attempt in range(5):
                port = wanted or _free_port(self.host)
                controller = _Controller(
                    _Handler(self),
                    hostname=self.host,
                    port=port,
                    server_hostname=SERVER_NAME,
                    enable_SMTPUTF8=True,
                    ready_timeout=10.0,
                    data_size_limit=36_000_000,
                    **self._auth_options(),
                )
                try:
                    controller.start()
                except (OSError, TimeoutError):
                    if wanted or attempt == 4:
                        raise
                    continue
                self._controller, self.port = controller, port
                log.info("email sandbox: SMTP on %s:%d", self.host, port)
                return

    def _auth_options(self) -> dict[str, Any]:
        if not self.store.config.users:
            return {}
        return {"authenticator": self._authenticate, "auth_required": True}

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """A configured login and its password (compared in constant time);
        the login is what the session's ``auth_data`` keeps."""
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        expected = self.store.config.users.get(login)
        ok = expected is not None and hmac.compare_digest(expected.encode(), data.password)
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def stop(self) -> None:
        with self._lock:
            if self._controller is not None:
                self._controller.stop()
                self._controller = None

    def view(self) -> dict[str, Any]:
        """How the bridge reaches it (the e-mail account's smtp_* settings)."""
        return {
            "host": self.host,
            "port": self.port if self.running else None,
            "security": "plain",
            "auth": bool(self.store.config.users),
            "running": self.running,
        }


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
