"""A real SMTP server for the e-mail channel's tests: aiosmtpd's threaded
``Controller`` on a free 127.0.0.1 port.

``smtp_server(...)`` starts one for a ``with`` block::

    with smtp_server(security="starttls", users={"bot": "s3cret"}) as server:
        sender = SmtpSender(server.settings(from_addr="support@example.com",
                                            user="bot", password="s3cret"))
        server.behaviour = Behaviour(rcpt="451 4.3.0 try again later")
        ...
        server.messages      # what the server accepted (parsed, policy=default)
        server.received      # every message whose data arrived, with the reply it got

Security: ``"plain"`` (no TLS), ``"starttls"`` (RFC 3207; the session
starts in clear and offers STARTTLS) or ``"tls"`` (implicit TLS, RFC 8314).
The certificate is made for this module by a CA of its own (EC P-256 keys,
made once per process with ``cryptography``); it names 127.0.0.1 and
localhost, and :meth:`SmtpTestServer.client_context` trusts that CA only.

AUTH (LOGIN and PLAIN, aiosmtpd's built-in mechanisms) is offered when
``users`` is given: over TLS, or also in clear on a plain server (where a
client may log in only to a loopback relay). ``require_auth`` makes the
server answer ``530`` to MAIL until a client has logged in.

Behaviours (:class:`Behaviour`, switchable per test through
``server.behaviour``): a reply of your choice to MAIL, RCPT (all or chosen
recipients), the DATA command or the end of the data, and the faults a
network can produce: the connection dropped at RCPT, in the middle of the
content, or after the whole message arrived (before any answer), or no
answer at all after the message (a stall: the client's timeout fires).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import ipaddress
import socket
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from functools import cache
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from channel_adapters.email.smtp import SmtpSettings

__all__ = ["Behaviour", "Received", "SmtpTestServer", "smtp_server", "test_certificates"]

Security = Literal["plain", "starttls", "tls"]
Fault = Literal["drop_at_rcpt", "drop_during_data", "drop_after_data", "stall_after_data"]

HOST = "127.0.0.1"
#: how long a stalled server keeps quiet (the client's timeout is shorter)
STALL_SECONDS = 30.0


@dataclass
class Behaviour:
    """How the server answers; ``None`` fields answer as a good server does."""

    #: the reply to every MAIL FROM ("451 4.3.2 try later")
    mail: str | None = None
    #: the reply to every RCPT TO
    rcpt: str | None = None
    #: the reply to these recipients only (address -> reply)
    refuse: Mapping[str, str] = field(default_factory=dict)
    #: the reply to the DATA command itself (instead of 354)
    data_command: str | None = None
    #: the reply at the end of the data (instead of "250 2.0.0 Ok: queued as <n>")
    data: str | None = None
    #: a network fault (see the module's docstring)
    fault: Fault | None = None


@dataclass(frozen=True)
class Received:
    """A message whose data reached the server."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage
    #: what the server answered at the end of data; ``None``: it dropped the
    #: connection or stalled instead
    reply: str | None
    #: the session was encrypted (implicit TLS or after STARTTLS)
    tls: bool
    #: the login the session authenticated as
    login: str | None

    @property
    def accepted(self) -> bool:
        return bool(self.reply and self.reply.startswith("2"))


# -- certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@cache
def test_certificates() -> Certificates:
    """A CA and a server certificate it signed (127.0.0.1, localhost), as
    PEM files in a directory of this process's own."""
    directory = Path(tempfile.mkdtemp(prefix="smtp-test-tls-"))
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("crm-bridge SMTP test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _server_context() -> ssl.SSLContext:
    certificates = test_certificates()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.cert, certificates.key)
    return context


# -- the server ------------------------------------------------------------------------


class _Handler:
    """aiosmtpd's handler hooks: record, and answer as ``behaviour`` says."""

    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.server.commands.append("MAIL")
        self.server.mail_options.extend(options)
        if self.server.behaviour.mail:
            return self.server.behaviour.mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.server.commands.append("RCPT")
        behaviour = self.server.behaviour
        if behaviour.fault == "drop_at_rcpt":
            return await _drop(smtp)
        reply = behaviour.refuse.get(address) or behaviour.rcpt
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        self.server.commands.append("DATA-END")
        behaviour = self.server.behaviour
        reply: str | None
        if behaviour.fault in ("drop_after_data", "stall_after_data"):
            reply = None
        else:
            reply = behaviour.data or f"250 2.0.0 Ok: queued as Q{len(self.server.received) + 1}"
        raw = envelope.original_content or b""
        auth: Any = session.auth_data
        login = auth.login.decode() if session.authenticated and auth is not None else None
        self.server.received.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                message=_parse(raw, envelope.smtp_utf8),
                reply=reply,
                tls=self.server.security == "tls" or session.ssl is not None,
                login=login,
            )
        )
        if behaviour.fault == "drop_after_data":
            return await _drop(smtp)
        if behaviour.fault == "stall_after_data":
            await asyncio.sleep(STALL_SECONDS)  # cancelled when the client hangs up
        return reply or "250 OK"


def _parse(raw: bytes, utf8: bool) -> EmailMessage:
    """The message as a client reads it; an SMTPUTF8 message's headers are
    UTF-8 (RFC 6532), which ``message_from_bytes`` would read as ASCII."""
    if utf8:
        text = raw.decode("utf-8", "surrogateescape")
        return email.message_from_string(text, policy=default_policy)
    return email.message_from_bytes(raw, policy=default_policy)


async def _drop(smtp: SMTP) -> str:
    """Close the connection without a word; the session's task is
    cancelled by aiosmtpd once the transport is gone."""
    transport = smtp.transport
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    elif transport is not None:
        transport.close()
    await asyncio.sleep(STALL_SECONDS)
    return "421 unreachable"


class _SMTP(SMTP):
    """aiosmtpd's SMTP with the two behaviours its hooks cannot express:
    a reply to the DATA command itself, and a drop in the middle of the
    content (after 354, before the end of data)."""

    test_server: SmtpTestServer

    async def smtp_DATA(self, arg: str) -> None:
        behaviour = self.test_server.behaviour
        if self.envelope is not None and self.envelope.rcpt_tos:
            self.test_server.commands.append("DATA")
            if behaviour.data_command:
                await self.push(behaviour.data_command)
                return
            if behaviour.fault == "drop_during_data":
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                await _drop(self)
                return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def __init__(self, test_server: SmtpTestServer, *, auth_in_clear: bool, **kwargs: Any) -> None:
        super().__init__(_Handler(test_server), **kwargs)
        self.test_server = test_server
        self.auth_in_clear = auth_in_clear

    def factory(self) -> SMTP:
        smtp = _SMTP(self.handler, **self.SMTP_kwargs)
        smtp.test_server = self.test_server
        # aiosmtpd offers AUTH only after STARTTLS (auth_require_tls); it
        # does not know an implicit-TLS session is encrypted, and a plain
        # test relay offers AUTH on purpose. Set after __init__, which warns
        # about AUTH in clear when told so through its arguments.
        smtp._auth_require_tls = not self.auth_in_clear
        return smtp


class SmtpTestServer:
    """A running server (see :func:`smtp_server`)."""

    def __init__(
        self,
        *,
        security: Security,
        users: Mapping[str, str] | None,
        require_auth: bool,
        smtputf8: bool,
        mechanisms: tuple[str, ...],
        data_size_limit: int,
    ) -> None:
        self.host = HOST
        self.port = 0
        self.security = security
        self.users = dict(users or {})
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        #: MAIL, RCPT, DATA (the command) and DATA-END (the content arrived)
        self.commands: list[str] = []
        #: the parameters of every MAIL FROM (SIZE=..., SMTPUTF8), upper-cased
        self.mail_options: list[str] = []
        #: (mechanism, login, succeeded) per AUTH attempt
        self.auth_attempts: list[tuple[str, str, bool]] = []
        self._require_auth = require_auth
        self._smtputf8 = smtputf8
        self._mechanisms = mechanisms
        self._data_size_limit = data_size_limit
        self._controller: _Controller | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        """The messages the server accepted (250 at the end of data)."""
        return [r.message for r in self.received if r.accepted]

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this server's CA, and only it."""
        return ssl.create_default_context(cafile=str(test_certificates().ca))

    def settings(self, **overrides: Any) -> SmtpSettings:
        """:class:`SmtpSettings` pointing at this server (its security, port
        and CA); ``overrides`` supply ``from_addr`` and the rest."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "timeout": 5.0,
            "ssl_context": self.client_context(),
            "helo_name": "bridge.test",
        }
        values.update(overrides)
        return SmtpSettings(**values)

    # -- lifecycle ------------------------------------------------------------------

    def _authenticate(
        self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        login, password = "", b""
        if isinstance(data, LoginPassword):
            login, password = data.login.decode("utf-8", "replace"), data.password
        expected = self.users.get(login)
        ok = expected is not None and expected.encode() == password
        self.auth_attempts.append((mechanism, login, ok))
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def start(self) -> None:
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "server_hostname": "smtp.test",
            "enable_SMTPUTF8": self._smtputf8,
            "data_size_limit": self._data_size_limit,
            "ready_timeout": 10.0,
        }
        if self.security == "tls":
            kwargs["ssl_context"] = _server_context()
        elif self.security == "starttls":
            kwargs["tls_context"] = _server_context()
        if self.users:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = self._require_auth
            offered = {"LOGIN", "PLAIN"}
            kwargs["auth_exclude_mechanism"] = sorted(offered - set(self._mechanisms))
        for attempt in range(5):
            self.port = _free_port()
            controller = _Controller(
                self, port=self.port, auth_in_clear=self.security != "starttls", **kwargs
            )
            try:
                controller.start()
            except OSError:  # the free port was taken in between
                if attempt == 4:
                    raise
                continue
            self._controller = controller
            return

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextmanager
def smtp_server(
    *,
    security: Security = "plain",
    users: Mapping[str, str] | None = None,
    require_auth: bool = False,
    smtputf8: bool = True,
    mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN"),
    data_size_limit: int = 33_554_432,
    behaviour: Behaviour | None = None,
) -> Iterator[SmtpTestServer]:
    """A real SMTP server on 127.0.0.1 for the ``with`` block: ``users``
    (login -> password) turn AUTH on, ``smtputf8`` offers RFC 6531,
    ``data_size_limit`` is the SIZE it announces (RFC 1870)."""
    server = SmtpTestServer(
        security=security,
        users=users,
        require_auth=require_auth,
        smtputf8=smtputf8,
        mechanisms=mechanisms,
        data_size_limit=data_size_limit,
    )
    if behaviour is not None:
        server.behaviour = behaviour
    server.start()
    try:
        yield server
    finally:
        server.stop()
