"""A real Dovecot IMAP server for the e-mail channel's tests.

Debian's ``dovecot-imapd`` (``make apt-deps`` installs it) is started as
``dovecot -F -c <conf>`` with a configuration of its own — nothing under
/etc/dovecot is read — on two free 127.0.0.1 ports:

* ``imaps_port``: implicit TLS (RFC 8314) with a certificate signed by a CA
  made for this server (``ca_file``; the certificate names 127.0.0.1 and
  localhost);
* ``imap_port``: plain IMAP offering STARTTLS (RFC 3501 §6.2.1).

``bare=True`` makes a server with TLS off (no IMAPS port, no STARTTLS) and a
CAPABILITY without IDLE and MOVE (Dovecot's ``imap_capability`` setting
replaces the list sent after login): the client's polling and COPY +
UID EXPUNGE paths.

Everything lives in a directory of its own (``root``): base_dir, state_dir,
the log (``log_file``), a passwd-file with one test user and that user's
Maildir. Running as root, Dovecot's own users from the package
(``dovecot``, ``dovenull``) run its internal and login processes, and the
mail processes run as ``nobody``, so ``root`` is made traversable for them
(pytest's own tmp directories are 0700: they are not used). Not as root,
every process runs as the current user.

The helpers that put mail in or look at it (``append``, ``create_folder``,
``flags``, ...) use the standard library's imaplib over the plain port, not
the code under test.
"""

from __future__ import annotations

import datetime
import imaplib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["DOVECOT", "Dovecot", "dovecot_available"]

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

# After login (Dovecot 2.3's default list, less IDLE and MOVE): a server
# that makes the client poll with NOOP and move with COPY + UID EXPUNGE.
_BARE_CAPABILITY = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+ SORT SORT=DISPLAY "
    "THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND UNSELECT "
    "CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC "
    "ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY SPECIAL-USE"
)


def dovecot_available() -> bool:
    """dovecot-core's master and dovecot-imapd's IMAP server."""
    return Path(DOVECOT).exists() and Path("/usr/lib/dovecot/imap").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed, for 127.0.0.1 and
    localhost: (ca.pem, server.pem, server.key). EC P-256 keys: made in
    milliseconds."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
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
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "server.pem", "server.key"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


class Dovecot:
    """One Dovecot instance; ``start()`` / ``stop()`` / ``restart()``, or a
    context manager. Attributes: ``host``, ``imap_port`` (plain, STARTTLS
    unless bare), ``imaps_port`` (TLS; 0 when bare), ``user``,
    ``password``, ``ca_file``, ``maildir`` (the user's Maildir, INBOX at its
    top), ``log_file``."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        bare: bool = False,
        auth_down: bool = False,
        user: str = "desk@example.org",
        password: str = "s3cret-Imap-pass",  # noqa: S107 — a test server's test user
    ) -> None:
        self.bare = bare
        self.auth_down = auth_down
        self.user = user
        self.password = password
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-test-"))
        self.root.chmod(0o755)  # the mail (nobody) and login (dovenull) processes enter it
        self.log_file = self.root / "dovecot.log"
        self.home = self.root / "home" / user
        self.maildir = self.home / "Maildir"
        self.imap_port = _free_port()
        self.imaps_port = 0 if bare else _free_port()
        self.ca_file = self.root / "ca.pem"
        self.config = self.root / "dovecot.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepare()

    # -- set-up -----------------------------------------------------------------

    def _ids(self) -> tuple[int, int, str, str]:
        """(mail uid, mail gid, internal user, login user)."""
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            return nobody.pw_uid, nobody.pw_gid, "dovecot", "dovenull"
        me = pwd.getpwuid(os.geteuid())
        return me.pw_uid, me.pw_gid, me.pw_name, me.pw_name

    def _prepare(self) -> None:
        uid, gid, internal, login = self._ids()
        (self.root / "run").mkdir()
        (self.root / "state").mkdir()
        self.home.mkdir(parents=True)
        for path in (self.root / "home", self.home):
            os.chown(path, uid, gid)
        passwd = self.root / "passwd"
        passwd.write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        passdb = f"driver = passwd-file\n  args = scheme=PLAIN username_format=%u {passwd}"
        if self.auth_down:
            # a user database that cannot answer: checkpassword's exit code
            # 111 is "temporary problem" (cr.yp.to/checkpwd/interface.html),
            # which Dovecot answers with NO [UNAVAILABLE]
            down = self.root / "auth-down"
            down.write_text("#!/bin/sh\nexit 111\n")
            down.chmod(0o755)
            passdb = f"driver = checkpassword\n  args = {down}"
        if not self.bare:
            self.ca_file, cert, key = _write_certificates(self.root)
        listeners = [f"  inet_listener imap {{\n    port = {self.imap_port}\n  }}"]
        if self.bare:
            tls = f"ssl = no\nimap_capability = {_BARE_CAPABILITY}\n"
            listeners.append("  inet_listener imaps {\n    port = 0\n  }")
        else:
            tls = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n"
            listeners.append(
                f"  inet_listener imaps {{\n    port = {self.imaps_port}\n    ssl = yes\n  }}"
            )
        listener_block = "\n".join(listeners)
        self.config.write_text(
            f"""# written by tests/support/dovecot.py
protocols = imap
listen = {self.host}
base_dir = {self.root / "run"}
state_dir = {self.root / "state"}
instance_name = dovecot-test-{self.imap_port}
log_path = {self.log_file}
info_log_path = {self.log_file}
auth_verbose = yes
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {min(uid, 100)}
first_valid_gid = {min(gid, 100)}
mail_location = maildir:~/Maildir
auth_mechanisms = plain login
{tls}
passdb {{
  {passdb}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.root / "home"}/%u
}}
service imap-login {{
  chroot =
{listener_block}
}}
# no brute-force slowing for the tests' wrong passwords: the first failed
# login is answered at once, the next ones are not delayed by anvil's
# penalty (doc.dovecot.org 2.3, "Authentication penalty support")
auth_failure_delay = 0
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        )

    # -- process ----------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Dovecot:
        """Start the server and wait until the plain port greets."""
        self._proc = subprocess.Popen(  # noqa: S603 — fixed argv
            [DOVECOT, "-F", "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: stop() signals all of it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"dovecot exited with {self._proc.returncode}: {err}")
            if self._greets():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"dovecot did not come up; log: {self.log_text()}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.imap_port), timeout=1) as s:
                return s.recv(64).startswith(b"* OK")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the server's process group and wait for the master.
        (The master alone, told to stop, waits about a second for its
        children; told together, they are all gone in milliseconds.)"""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # -- mail, through the standard library's imaplib -------------------------

    @contextmanager
    def imap(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib connection on the plain port (as the test
        user; 127.0.0.1 counts as a secure connection for Dovecot)."""
        conn = imaplib.IMAP4(self.host, self.imap_port, timeout=10)
        try:
            conn.login(self.user, self.password)
            yield conn
        finally:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error):
                pass

    def append(self, raw: bytes, folder: str = "INBOX", flags: str = "") -> int:
        """APPEND ``raw`` to ``folder``; the UID it got (UIDPLUS
        APPENDUID, RFC 4315)."""
        with self.imap() as conn:
            typ, data = conn.append(folder, f"({flags})" if flags else None, None, raw)
            assert typ == "OK", data
            match = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            assert match, data
            return int(match.group(1))

    def create_folder(self, folder: str) -> None:
        with self.imap() as conn:
            typ, data = conn.create(folder)
            assert typ == "OK", data

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.imap() as conn:
            conn.select(folder, readonly=True)
            typ, data = conn.uid("SEARCH", "ALL")
            assert typ == "OK", data
            return [int(u) for u in (data[0] or b"").split()]

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.imap() as conn:
            typ, data = conn.status(folder, "(UIDVALIDITY)")
            assert typ == "OK", data
            match = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
            assert match, data
            return int(match.group(1))

    def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags of every message in ``folder`` (read-only EXAMINE:
        looking does not change them)."""
        with self.imap() as conn:
            conn.select(folder, readonly=True)
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            assert typ == "OK", data
            out: dict[int, set[str]] = {}
            for item in data:
                if not isinstance(item, bytes):
                    continue
                match = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", item) or re.search(
                    rb"FLAGS \(([^)]*)\) UID (\d+)", item
                )
                if match is None:
                    continue
                if match.re.pattern.startswith(b"UID"):
                    uid, flags = match.group(1), match.group(2)
                else:
                    flags, uid = match.group(1), match.group(2)
                out[int(uid)] = set(flags.decode().split())
            return out

    def empty(self, folder: str = "INBOX") -> None:
        """Delete every message in ``folder``."""
        with self.imap() as conn:
            conn.select(folder)
            conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
            conn.expunge()

    def reset_uidvalidity(self) -> None:
        """Make the server give INBOX a new UIDVALIDITY with its messages
        kept and renumbered: stopped, Dovecot's UID list and indexes of the
        INBOX Maildir are removed (what a restored backup or a rebuilt
        server does), then it is started again. Dovecot takes the next
        value from ``dovecot-uidvalidity`` in the mail root, so it differs
        from the old one."""
        self.stop()
        for path in self.maildir.glob("dovecot-uidlist*"):
            path.unlink()
        for path in self.maildir.glob("dovecot.index*"):
            path.unlink()
        # messages delivered before keep their ":2,<flags>" info; the new
        # UIDs are assigned in the order Dovecot reads the directories
        self.start()
