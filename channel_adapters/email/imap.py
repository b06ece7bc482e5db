"""The e-mail channel's IMAP mailbox client: what the adapter's ``poll``
reads a mailbox with.

A :class:`Mailbox` keeps one connection across polls (reopened after an
error, and at once when a kept connection turns out dead) and answers
:meth:`Mailbox.fetch`: the next mails after a cursor, waiting for new ones
with IDLE (RFC 2177) when there are none yet. Nothing in the mailbox is
changed by reading it: bodies are fetched with ``BODY.PEEK[]`` in a folder
opened read-only (EXAMINE), so ``\\Seen`` stays as it was, unless the
account asks for "mark seen" or "move to folder", which
:meth:`Mailbox.after_journaled` does once the mails are journaled.

The cursor is ``"<UIDVALIDITY>:<last UID journaled>"`` (RFC 3501 §2.3.1.1:
a UID names a message only together with the folder's UIDVALIDITY; FACTS
§5, "Dedupe and resume across restarts"). When the server's UIDVALIDITY no
longer matches the cursor's, the old UIDs mean nothing and the folder is
read again from UID 1: the mails already journaled come back, and the
journal makes them no-ops because the adapter keys each delivery by its
``Message-ID`` (``uidvalidity:uid`` only for a mail without one).

Security: implicit TLS (``"tls"``, port 993) by default, STARTTLS
(``"starttls"``; refused, before any password is sent, when the server does
not offer it), and plain text only when ``security="plain"`` says so. Errors
come out as the bridge's exceptions (``bridge.errors``)::

    AuthError        the server refused the login (the message says so,
                     and never holds the password)
    PermanentError   what needs a person: the folder does not exist, the
                     server offers no STARTTLS, its TLS certificate is not
                     trusted, a TLS port that speaks no TLS
    RetryableError   the network: refused, reset, timed out, the connection
                     lost mid-command; the server's own "try later"

No log line holds the password or any part of a mail (imaplib's protocol
trace, which IMAPClient sends to its DEBUG logger, is switched off: it
holds whole FETCH responses).

Library: IMAPClient, because Python 3.11's imaplib has no IDLE, and IDLE
over imaplib needs its private command and line readers plus a
non-blocking wait on its socket (imaplib's socket file refuses to read
again after one timeout), which is what IMAPClient's ``idle`` /
``idle_check`` / ``idle_done`` are; it also parses FETCH and SELECT
responses and has MOVE (RFC 6851) and UID EXPUNGE (RFC 4315).
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from bridge.errors import AuthError, BridgeError, PermanentError, RetryableError

__all__ = [
    "BATCH",
    "BATCH_BYTES",
    "MAX_WAIT",
    "Fetched",
    "FetchedMail",
    "Mailbox",
    "MailboxSettings",
    "Security",
    "parse_cursor",
]

log = logging.getLogger(__name__)

Security = Literal["tls", "starttls", "plain"]
SECURITY: tuple[Security, ...] = ("tls", "starttls", "plain")

#: one fetch returns at most this many mails ...
BATCH = 50
#: ... and stops adding mails past this many bytes (at least one mail)
BATCH_BYTES = 25_000_000
#: the longest one fetch idles. RFC 2177 §3: a server may log off a client
#: idle for 30 minutes, so a client ends IDLE (DONE) and re-issues it before
#: 29 (FACTS §5, "IMAP in"); the caller calls again after each fetch.
MAX_WAIT = 25 * 60.0
#: without IDLE: seconds between two NOOPs while waiting for new mail
POLL_INTERVAL = 5.0

_SEEN = rb"\Seen"
_DELETED = rb"\Deleted"
# RFC 5530 response codes that mean "not now": a retry can work
_TRANSIENT = re.compile(r"\[(UNAVAILABLE|INUSE|SERVERBUG|LIMIT)\]", re.IGNORECASE)
_BYTES_REPR = re.compile(r"""\bb(['"])(.*?)\1""")
# an OpenSSL reason for "this port speaks no TLS"
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST")


@dataclass(frozen=True, kw_only=True)
class MailboxSettings:
    """Where and how to read one mailbox.

    ``security``: ``"tls"`` (implicit TLS, usually port 993), ``"starttls"``
    (usually 143) or ``"plain"`` (no encryption: only when said so).
    ``mark_seen`` / ``move_to``: what :meth:`Mailbox.after_journaled` does
    to a journaled mail (nothing by default). ``timeout``: seconds any one
    network operation may take (not the IDLE wait). ``ssl_context``: the
    TLS context for ``"tls"`` and ``"starttls"`` (default:
    ``ssl.create_default_context()``: the system's CAs, host names
    checked); a test passes one that trusts its own CA."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    security: Security = "tls"
    folder: str = "INBOX"
    mark_seen: bool = False
    move_to: str | None = None
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}")
        if not 0 < self.port < 65536:
            raise ValueError("port must be 1-65535")
        if self.move_to is not None and self.move_to == self.folder:
            raise ValueError("move_to must be another folder than the one read")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")

    @property
    def writes(self) -> bool:
        """Whether journaled mails are changed (the folder is then opened
        read-write, SELECT, instead of read-only, EXAMINE)."""
        return self.mark_seen or self.move_to is not None


@dataclass(frozen=True)
class FetchedMail:
    """One mail as the server holds it. ``raw`` stays out of ``repr``:
    nothing of a mail reaches a log line."""

    uid: int
    uidvalidity: int
    raw: bytes = field(repr=False)

    @property
    def key(self) -> str:
        """``"<uidvalidity>:<uid>"``: the mail's identity on this server
        (the fallback delivery key of a mail without a Message-ID)."""
        return f"{self.uidvalidity}:{self.uid}"


@dataclass(frozen=True)
class Fetched:
    """What one :meth:`Mailbox.fetch` got: ``mails`` in UID order, the
    ``cursor`` after the last of them (the cursor passed in, or its
    re-scan start, when there are none), and ``more`` when the folder holds
    more mails after these (call again without waiting)."""

    mails: tuple[FetchedMail, ...]
    cursor: str
    more: bool = False


def parse_cursor(cursor: str | None) -> tuple[int, int] | None:
    """``"<uidvalidity>:<uid>"`` -> (uidvalidity, uid); ``None`` (or an
    empty string) for a mailbox never read. ``PermanentError`` for
    anything else: a cursor this module did not write."""
    if not cursor:
        return None
    validity, sep, uid = cursor.partition(":")
    if not sep or not validity.isdigit() or not uid.isdigit():
        raise PermanentError(f"IMAP cursor {cursor!r} is not '<uidvalidity>:<uid>'")
    return int(validity), int(uid)


def _server_text(exc: BaseException) -> str:
    """The server's words from an imaplib/IMAPClient error, short and on
    one line (a NO/BAD text such as ``[AUTHENTICATIONFAILED] ...``;
    imaplib passes some as bytes, shown as ``b'...'``)."""
    text = " ".join(str(exc).split())
    return _BYTES_REPR.sub(r"\2", text)[:200]


class Mailbox:
    """One IMAP mailbox folder, read by UID.

    ``batch``, ``batch_bytes``, ``poll_interval``: see the module constants.

    Not thread-safe: one poller thread owns a mailbox. :meth:`close` logs
    out.
    """

    def __init__(
        self,
        settings: MailboxSettings,
        *,
        batch: int = BATCH,
        batch_bytes: int = BATCH_BYTES,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        if batch < 1 or batch_bytes < 1 or poll_interval <= 0:
            raise ValueError("batch, batch_bytes and poll_interval must be positive")
        self.settings = settings
        self._batch = batch
        self._batch_bytes = batch_bytes
        self._poll_interval = poll_interval
        self._client: Any = None  # IMAPClient (untyped)
        self._uidvalidity = 0  # the selected folder's
        self._exists = 0  # how many messages the selected folder held when opened
        self._fetched_validity: int | None = None  # that of the last fetch's mails
        self._where = f"IMAP server {settings.host}:{settings.port}"

    # -- public ----------------------------------------------------------------

    def fetch(self, cursor: str | None, wait: float) -> Fetched:
        """The next mails of the folder after ``cursor``, oldest first, at
        most ``batch`` of them (fewer past ``batch_bytes``).

        When there are none, waits up to ``wait`` seconds (capped at
        :data:`MAX_WAIT`) for one: in IDLE where the server's CAPABILITY
        lists it (ended with DONE on the first ``EXISTS``, or at the
        deadline), else with a NOOP every ``poll_interval`` seconds. A
        fetch with the same cursor returns the same mails again (at least
        once: the caller stores the new cursor only after journaling them).

        A cursor of another UIDVALIDITY than the folder's now (the server
        renumbered it: a rebuilt index, a restored backup) starts again
        from UID 1; the journal drops what it already holds by Message-ID.
        Raises ``AuthError``, ``PermanentError`` or ``RetryableError``
        (module docstring)."""
        start = parse_cursor(cursor)
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        with self._guard():
            client = self._ready()
            validity = self._uidvalidity
            last = start[1] if start is not None and start[0] == validity else 0
            if start is not None and start[0] != validity:
                log.warning(
                    "%s folder %r: UIDVALIDITY %s -> %s, reading the folder again from UID 1",
                    self._where,
                    self.settings.folder,
                    start[0],
                    validity,
                )
            uids = self._after(client, last)
            if not uids and deadline > time.monotonic():
                self._wait(client, deadline)
                uids = self._after(client, last)
            take = self._fitting(client, uids[: self._batch])
            mails = self._download(client, take, validity)
            self._fetched_validity = validity
        # past the last UID taken even if it was expunged meanwhile: UIDs
        # are never given again under one UIDVALIDITY (RFC 3501 §2.3.1.1)
        last = take[-1] if take else last
        return Fetched(mails=mails, cursor=f"{validity}:{last}", more=len(uids) > len(take))

    def after_journaled(self, uids: Iterable[int], *, uidvalidity: int | None = None) -> None:
        """Mark the mails ``uids`` seen and/or move them to ``move_to``, as
        the settings say (nothing by default). Call it only once they are
        committed to the journal: a mail moved or marked and then lost in a
        crash would not be fetched again.

        ``uids`` are of ``uidvalidity``, by default the UIDVALIDITY of this
        mailbox's last fetch. When the folder's is another one now, they are
        left alone (they may name other messages); a later fetch returns
        those mails again under the new one. Moves with MOVE (RFC 6851)
        where the server has it, else COPY + ``\\Deleted`` + UID EXPUNGE
        (RFC 4315 UIDPLUS; without UIDPLUS the originals stay, flagged
        ``\\Deleted``: a plain EXPUNGE would also remove what the user
        deleted). Raises like :meth:`fetch`; a missing ``move_to`` folder
        is a ``PermanentError``."""
        settings = self.settings
        batch = sorted(set(uids))
        if not settings.writes or not batch:
            return
        validity = uidvalidity if uidvalidity is not None else self._fetched_validity
        with self._guard():
            client = self._ready()
            if validity != self._uidvalidity:
                log.info(
                    "%s folder %r: %d journaled mails of UIDVALIDITY %s left as they are "
                    "(the folder's is %s now)",
                    self._where,
                    settings.folder,
                    len(batch),
                    validity,
                    self._uidvalidity,
                )
                return
            if settings.mark_seen:
                client.add_flags(batch, [_SEEN], silent=True)
            if settings.move_to is not None:
                self._move(client, batch, settings.move_to)

    def check(self) -> int:
        """Log in and open the folder as :meth:`fetch` would (read-only
        unless the settings write), then log out: how many messages the
        folder holds. Reads no mail (the console's connection test).
        Raises like :meth:`fetch`."""
        try:
            with self._guard():
                self._connect()
            return self._exists
        finally:
            self.close()

    def close(self) -> None:
        """Log out (best effort) and forget the connection."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            self._shutdown(client)

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the connection --------------------------------------------------------------

    def _ready(self) -> Any:
        """The logged-in client with the folder selected: the kept one when
        a NOOP still goes through on it (which also makes the server report
        what arrived since), else a new one."""
        client = self._client
        if client is not None:
            try:
                client.noop()
                return client
            except (OSError, imaplib.IMAP4.error):
                # a kept connection the server closed meanwhile (autologout,
                # restart): open a new one at once instead of failing a poll
                self._drop()
        return self._connect()

    def _connect(self) -> Any:
        settings = self.settings
        context = settings.ssl_context or ssl.create_default_context()
        client = IMAPClient(
            settings.host,
            settings.port,
            ssl=settings.security == "tls",
            ssl_context=context if settings.security == "tls" else None,
            timeout=settings.timeout,
        )
        # IMAPClient turns imaplib's debug output on (to its DEBUG logger):
        # that prints each FETCH response whole, bodies included, and
        # formats it even with the logger off. Off: nothing of a mail in a
        # log, no repr() of every body fetched.
        client._imap.debug = 0  # noqa: SLF001 — imaplib's own switch, no API for it
        self._client = client
        if settings.security == "starttls":
            if not client.has_capability("STARTTLS"):
                raise PermanentError(
                    f"{self._where} does not offer STARTTLS: not logging in without TLS "
                    "(use its TLS port, or security 'plain' on a trusted network only)"
                )
            client.starttls(context)
        client.login(settings.user, settings.password)
        self._select(client)
        return client

    def _select(self, client: Any) -> None:
        folder = self.settings.folder
        try:
            info = client.select_folder(folder, readonly=not self.settings.writes)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            text = _server_text(exc)
            if _TRANSIENT.search(text):
                raise RetryableError(
                    f"{self._where} cannot open folder {folder!r} now: {text}"
                ) from exc
            raise PermanentError(
                f"{self._where} has no folder {folder!r} for this login: {text}"
            ) from exc
        self._uidvalidity = int(info[b"UIDVALIDITY"])
        self._exists = int(info.get(b"EXISTS") or 0)

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._shutdown(client)

    @staticmethod
    def _shutdown(client: Any) -> None:
        try:
            client.shutdown()
        except (OSError, imaplib.IMAP4.error):
            pass  # already closed: nothing left to release

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Every failure as a bridge error, in one place; the connection is
        dropped after any of them (the next call opens a new one)."""
        try:
            yield
        except (OSError, imaplib.IMAP4.error) as exc:
            self._drop()
            raise self._translate(exc) from exc
        except BaseException:
            self._drop()  # mid-command, its state unknown
            raise

    def _translate(self, exc: OSError | imaplib.IMAP4.error) -> BridgeError:
        where, timeout = self._where, self.settings.timeout
        if isinstance(exc, LoginError) and _TRANSIENT.search(_server_text(exc)):
            # RFC 5530 §3: [UNAVAILABLE] is "temporary failure because a
            # subsystem is down" (Dovecot says so when its user database
            # fails): the password is not wrong, try again soon
            return RetryableError(f"{where} cannot log in now: {_server_text(exc)}")
        if isinstance(exc, LoginError):
            return AuthError(
                f"{where} refused the login: check the mailbox's user name and password "
                f"(or app password); the server said: {_server_text(exc)}"
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentError(
                f"{where}: its TLS certificate is not trusted ({exc.verify_message})"
            )
        if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS:
            return PermanentError(
                f"{where} answered the TLS handshake with something else than TLS "
                f"({exc.reason}): is this its TLS port? (STARTTLS ports take security "
                "'starttls')"
            )
        if isinstance(exc, TimeoutError):
            return RetryableError(f"{where} did not answer within {timeout:g} s")
        if isinstance(exc, ConnectionRefusedError):
            return RetryableError(f"{where} refused the connection")
        if isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__
            return RetryableError(f"{where}: network error: {reason}")
        if isinstance(exc, imaplib.IMAP4.abort):
            return RetryableError(f"{where} closed the connection: {_server_text(exc)}")
        return RetryableError(f"{where} refused a command: {_server_text(exc)}")

    # -- reading --------------------------------------------------------------------

    @staticmethod
    def _after(client: Any, last: int) -> list[int]:
        """The folder's UIDs above ``last``, ascending. (``UID last+1:*``
        also matches the highest UID when it is below last+1, RFC 3501
        §6.4.8: filtered out.)"""
        found = client.search(["UID", f"{last + 1}:*"])
        return sorted(int(uid) for uid in found if int(uid) > last)

    @staticmethod
    def _download(client: Any, uids: list[int], validity: int) -> tuple[FetchedMail, ...]:
        """The bodies of ``uids`` (``BODY.PEEK[]``: no ``\\Seen`` set, RFC 3501
        §6.4.5), in UID order; a UID expunged meanwhile is missing."""
        if not uids:
            return ()
        bodies = client.fetch(uids, ["BODY.PEEK[]"])
        return tuple(
            FetchedMail(uid=uid, uidvalidity=validity, raw=bytes(bodies[uid][b"BODY[]"]))
            for uid in uids
            if b"BODY[]" in bodies.get(uid, {})
        )

    def _fitting(self, client: Any, planned: list[int]) -> list[int]:
        """The leading UIDs whose sizes (RFC822.SIZE) add up to at most
        ``batch_bytes``, at least one."""
        if len(planned) <= 1:
            return planned
        sizes = client.fetch(planned, ["RFC822.SIZE"])
        take: list[int] = []
        total = 0
        for uid in planned:
            size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
            if take and total + size > self._batch_bytes:
                break
            take.append(uid)
            total += size
        return take

    # -- waiting ----------------------------------------------------------------------

    def _wait(self, client: Any, deadline: float) -> None:
        """Until the server reports a new message or ``deadline``."""
        if client.has_capability("IDLE"):
            self._idle(client, deadline)
        else:
            self._noop_until(client, deadline)

    def _idle(self, client: Any, deadline: float) -> None:
        """IDLE (RFC 2177) until an ``EXISTS`` or the deadline, then DONE;
        no other command is sent in between. Other untagged responses
        (Dovecot's "* OK Still here" every 2 minutes, flag changes,
        EXPUNGE) keep it idling.

        A mail that arrived between the search and the IDLE is announced
        right after the server's "+ idling", often in the same packet:
        read ahead with it, it never makes the socket readable again, and
        the wait would run to its deadline. So what was read ahead ends
        the IDLE at once; DONE hands it over, and when it was not news the
        IDLE starts again for the rest of the wait."""
        while True:
            client.idle()
            news = False
            if not self._read_ahead(client):
                news = self._idle_check(client, deadline)
            _, responses = client.idle_done()
            if news or _announces_mail(responses) or deadline <= time.monotonic():
                return

    @staticmethod
    def _idle_check(client: Any, deadline: float) -> bool:
        """Wait in IDLE for an ``EXISTS`` (True) or the deadline (False).

        A server going away says ``* BYE`` (RFC 3501 §7.1.5) or just closes
        the connection; IMAPClient's ``idle_check`` then returns at once
        with nothing, and again on every call: two such returns in a row
        before the deadline are a lost connection, not a wait."""
        early = 0
        while (left := deadline - time.monotonic()) > 0:
            responses = client.idle_check(timeout=left)
            if _announces_mail(responses):
                return True
            if any(isinstance(r, tuple) and b"BYE" in r[:2] for r in responses):
                raise imaplib.IMAP4.abort("the server said BYE during IDLE")
            quick = not responses and deadline - time.monotonic() > 0.05
            early = early + 1 if quick else 0
            if early >= 2:
                raise imaplib.IMAP4.abort("the connection closed during IDLE")
        return False

    def _read_ahead(self, client: Any) -> bool:
        """Whether the server's input waits in a buffer, where a poll on
        the socket does not see it: imaplib's buffered file over the
        socket (``IMAP4.file``: IMAPClient's ``_imap``, the only way in),
        or TLS records decrypted and not yet read."""
        sock = client.socket()
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        file = getattr(client._imap, "file", None)  # noqa: SLF001 — see the docstring
        if file is None:
            return False
        sock.setblocking(False)
        try:
            return bool(file.peek(1))  # what is buffered, else one non-blocking read
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        finally:
            sock.settimeout(self.settings.timeout)

    def _noop_until(self, client: Any, deadline: float) -> None:
        """No IDLE: a NOOP (RFC 3501 §6.1.2, "a periodic poll for new
        messages") every ``poll_interval`` seconds until it reports an
        ``EXISTS`` or the deadline."""
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(self._poll_interval, left))
            _, responses = client.noop()
            if _announces_mail(responses):
                return

    # -- after journaling -----------------------------------------------------------

    def _move(self, client: Any, uids: list[int], target: str) -> None:
        try:
            if client.has_capability("MOVE"):
                client.move(uids, target)
                return
            client.copy(uids, target)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            text = _server_text(exc)
            if "TRYCREATE" in text.upper():  # RFC 3501 §6.4.7: no such target folder
                raise PermanentError(
                    f"{self._where} has no folder {target!r} to move journaled mail to: {text}"
                ) from exc
            raise
        client.add_flags(uids, [_DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)


def _announces_mail(responses: Iterable[Any]) -> bool:
    """Whether untagged responses hold an ``EXISTS`` (``(n, b'EXISTS')``
    as IMAPClient parses ``* n EXISTS``): the folder grew."""
    return any(isinstance(r, tuple) and len(r) >= 2 and r[1] == b"EXISTS" for r in responses)
