"""The e-mail channel's IMAP client (channel_adapters/email/imap.py) against
a real Dovecot (tests/support/dovecot.py; Debian's dovecot-imapd, installed
by ``make apt-deps``): no IMAP mock.

Two servers for the module: ``dovecot`` (IMAPS port, plain port with
STARTTLS, IDLE and MOVE) and ``bare`` (no TLS at all, no IDLE, no MOVE);
the tests that stop or renumber a server get one of their own. Every test
reads a folder of its own, so the module's servers are shared safely. The
mails are made here (no corpus file): what matters is that their bytes come
back exactly, 8-bit ones included.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.errors import AuthError, PermanentError, RetryableError
from channel_adapters.email import imap
from channel_adapters.email.imap import Fetched, Mailbox, MailboxSettings
from tests.support.dovecot import DOVECOT, Dovecot, dovecot_available

pytestmark = pytest.mark.integration

_folders = itertools.count(1)
WRONG_PASSWORD = "Wrong-Pass-0451"  # noqa: S105 — the password the tests get refused


def _server(**kwargs: Any) -> Iterator[Dovecot]:
    if not dovecot_available():
        pytest.fail(f"{DOVECOT} is missing: run `make apt-deps` (Debian's dovecot-imapd)")
    with Dovecot(**kwargs) as server:
        yield server


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    yield from _server()


@pytest.fixture(scope="module")
def bare() -> Iterator[Dovecot]:
    yield from _server(bare=True)


@pytest.fixture
def own_dovecot() -> Iterator[Dovecot]:
    yield from _server()


def _context(server: Dovecot) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca_file))


def _settings(server: Dovecot, **kwargs: Any) -> MailboxSettings:
    """TLS on the IMAPS port trusting the server's CA, unless told."""
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.imaps_port,
        "user": server.user,
        "password": server.password,
        "security": "tls",
        "ssl_context": None if server.bare else _context(server),
    }
    values.update(kwargs)
    return MailboxSettings(**values)


@pytest.fixture
def folder(dovecot: Dovecot) -> str:
    name = f"T{next(_folders)}"
    dovecot.create_folder(name)
    return name


def _mail(n: int, body: bytes = b"") -> bytes:
    return (
        f"Message-ID: <{n}.imap-test@example.org>\r\n"
        "From: Client <client@example.org>\r\n"
        "To: desk@example.org\r\n"
        f"Subject: order {n}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
    ).encode() + (body or f"body of mail {n}\r\n".encode())


def _later(seconds: float, action: Callable[[], object]) -> threading.Thread:
    """Run ``action`` from another connection after ``seconds``."""

    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _validity(cursor: str) -> int:
    return int(cursor.split(":")[0])


# -- reading ------------------------------------------------------------------------------


def test_an_empty_folder_gives_no_mail_and_a_cursor_at_uid_0(dovecot: Dovecot, folder: str) -> None:
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        got = mailbox.fetch(None, 0)
    assert got == Fetched(mails=(), cursor=f"{dovecot.uidvalidity(folder)}:0", more=False)


def test_thirty_mails_come_in_uid_order_in_batches_and_again_with_the_same_cursor(
    dovecot: Dovecot, folder: str
) -> None:
    sent = {dovecot.append(_mail(n), folder): _mail(n) for n in range(30)}
    validity = dovecot.uidvalidity(folder)
    with Mailbox(_settings(dovecot, folder=folder), batch=12) as mailbox:
        batches: list[Fetched] = []
        cursor = None
        while not batches or batches[-1].more:
            batches.append(mailbox.fetch(cursor, 0))
            cursor = batches[-1].cursor
        again = mailbox.fetch(batches[0].cursor, 0)  # the cursor after the first batch

    assert [len(b.mails) for b in batches] == [12, 12, 6]
    assert [b.more for b in batches] == [True, True, False]
    got = [m for b in batches for m in b.mails]
    assert [m.uid for m in got] == sorted(sent) == dovecot.uids(folder)
    assert all(m.raw == sent[m.uid] and m.uidvalidity == validity for m in got)
    assert [b.cursor for b in batches] == [f"{validity}:{b.mails[-1].uid}" for b in batches]
    # at least once: a cursor not moved on gives the same mails again
    assert [m.uid for m in again.mails] == [m.uid for m in batches[1].mails]
    assert again.cursor == batches[1].cursor
    # the end: nothing after the last cursor
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        assert mailbox.fetch(batches[-1].cursor, 0) == Fetched((), batches[-1].cursor, False)


def test_a_batch_stops_at_its_byte_budget_but_takes_at_least_one_mail(
    dovecot: Dovecot, folder: str
) -> None:
    small = [_mail(n, b"x" * 1000 + b"\r\n") for n in range(3)]
    big = _mail(9, b"y" * 20_000 + b"\r\n")
    for raw in [*small, big]:
        dovecot.append(raw, folder)
    budget = len(small[0]) * 2 + 10  # two small mails fit, a third does not
    with Mailbox(_settings(dovecot, folder=folder), batch_bytes=budget) as mailbox:
        first = mailbox.fetch(None, 0)
        second = mailbox.fetch(first.cursor, 0)
        third = mailbox.fetch(second.cursor, 0)
    assert [m.raw for m in first.mails] == small[:2] and first.more
    assert [m.raw for m in second.mails] == small[2:] and second.more
    assert [m.raw for m in third.mails] == [big] and not third.more  # alone over budget


def test_eight_bit_mail_comes_back_byte_for_byte(dovecot: Dovecot, folder: str) -> None:
    body = "Здравствуйте! Заказ N 42 не пришёл.\r\n".encode("koi8-r")
    raw = _mail(1, body).replace(b"charset=utf-8", b"charset=koi8-r")
    raw = raw.replace(b"\r\n\r\n", b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n", 1)
    dovecot.append(raw, folder)
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        (mail,) = mailbox.fetch(None, 0).mails
    assert mail.raw == raw


def test_reading_leaves_the_mailbox_as_it_was(dovecot: Dovecot, folder: str) -> None:
    dovecot.append(_mail(1), folder)
    dovecot.append(_mail(2), folder, flags=r"\Seen")
    dovecot.append(_mail(3), folder, flags=r"\Flagged")
    before = dovecot.flags(folder)
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        got = mailbox.fetch(None, 0)
        mailbox.after_journaled([m.uid for m in got.mails])  # no mark_seen, no move_to
    assert len(got.mails) == 3
    assert dovecot.flags(folder) == before
    assert [r"\Seen" in f for f in before.values()] == [False, True, False]


def test_a_new_client_resumes_from_the_cursor_without_fetching_a_uid_twice(
    dovecot: Dovecot, folder: str
) -> None:
    for n in range(10):
        dovecot.append(_mail(n), folder)
    seen: list[int] = []
    cursor = None
    for _ in range(3):  # three processes one after another, each one batch
        with Mailbox(_settings(dovecot, folder=folder), batch=4) as mailbox:
            got = mailbox.fetch(cursor, 0)
        seen += [m.uid for m in got.mails]
        cursor = got.cursor
    assert seen == dovecot.uids(folder)
    assert len(set(seen)) == 10


def test_a_missing_folder_is_a_permanent_error(dovecot: Dovecot) -> None:
    with Mailbox(_settings(dovecot, folder="No-Such-Folder")) as mailbox:
        with pytest.raises(PermanentError, match="No-Such-Folder"):
            mailbox.fetch(None, 0)


def test_a_cursor_this_module_did_not_write_is_a_permanent_error(
    dovecot: Dovecot, folder: str
) -> None:
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        with pytest.raises(PermanentError, match="uidvalidity"):
            mailbox.fetch("12345", 0)


# -- waiting ----------------------------------------------------------------------------


def test_idle_returns_a_mail_appended_while_it_waits(dovecot: Dovecot, folder: str) -> None:
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        empty = mailbox.fetch(None, 0)
        appender = _later(1.0, lambda: dovecot.append(_mail(1), folder))
        started = time.monotonic()
        got = mailbox.fetch(empty.cursor, 10)
        took = time.monotonic() - started
    appender.join()
    assert [m.raw for m in got.mails] == [_mail(1)]
    assert took < 8, f"came back after {took:.1f} s: the IDLE missed the EXISTS"


def test_idle_with_nothing_new_waits_out_the_wait_and_keeps_the_cursor(
    dovecot: Dovecot, folder: str
) -> None:
    dovecot.append(_mail(1), folder)
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        first = mailbox.fetch(None, 0)
        started = time.monotonic()
        got = mailbox.fetch(first.cursor, 1.0)
        took = time.monotonic() - started
        # the connection is usable after DONE
        dovecot.append(_mail(2), folder)
        after = mailbox.fetch(first.cursor, 0)
    assert got == Fetched((), first.cursor, False)
    assert 0.9 < took < 5
    assert [m.raw for m in after.mails] == [_mail(2)]


def test_a_mail_arriving_between_the_search_and_the_idle_ends_the_wait_at_once(
    dovecot: Dovecot, folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dovecot announces it right after "+ idling", and imaplib reads both
    at once: only a look into what was read ahead sees it."""
    idle = Mailbox._idle

    def append_first(self: Mailbox, client: Any, deadline: float) -> None:
        dovecot.append(_mail(1), folder)
        idle(self, client, deadline)

    monkeypatch.setattr(Mailbox, "_idle", append_first)
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        started = time.monotonic()
        got = mailbox.fetch(None, 10)
        took = time.monotonic() - started
    assert [m.raw for m in got.mails] == [_mail(1)]
    assert took < 5, f"came back after {took:.1f} s: the announced mail waited for the deadline"


def test_without_idle_the_client_polls_with_noop(bare: Dovecot) -> None:
    with bare.imap() as conn:
        typ, caps = conn.capability()
    assert typ == "OK" and b"IDLE" not in caps[0].split(), "the bare server must lack IDLE"
    name = f"T{next(_folders)}"
    bare.create_folder(name)
    settings = _settings(bare, port=bare.imap_port, security="plain", folder=name)
    with Mailbox(settings, poll_interval=0.3) as mailbox:
        empty = mailbox.fetch(None, 0)
        appender = _later(1.0, lambda: bare.append(_mail(1), name))
        started = time.monotonic()
        got = mailbox.fetch(empty.cursor, 10)
        took = time.monotonic() - started
    appender.join()
    assert [m.raw for m in got.mails] == [_mail(1)]
    assert took < 8


def test_a_new_uidvalidity_reads_the_whole_folder_again(own_dovecot: Dovecot) -> None:
    server = own_dovecot
    sent = [_mail(n) for n in range(3)]
    for raw in sent:
        server.append(raw)
    old = server.uidvalidity()
    with Mailbox(_settings(server, mark_seen=True)) as mailbox:
        first = mailbox.fetch(None, 0)
        assert first.cursor == f"{old}:{first.mails[-1].uid}"
        server.reset_uidvalidity()  # the kept connection dies with the old server
        new = server.uidvalidity()
        assert new != old
        again = mailbox.fetch(first.cursor, 0)
        # UIDs of the old UIDVALIDITY name nothing now: left alone
        mailbox.after_journaled([m.uid for m in first.mails], uidvalidity=old)
        assert not any(r"\Seen" in f for f in server.flags().values())
    assert sorted(m.raw for m in again.mails) == sorted(sent)
    assert {m.uidvalidity for m in again.mails} == {new}
    assert again.cursor == f"{new}:{again.mails[-1].uid}"
    assert _validity(again.cursor) == new


# -- after journaling -------------------------------------------------------------------


def test_mark_seen_is_done_only_after_journaling(dovecot: Dovecot, folder: str) -> None:
    for n in range(3):
        dovecot.append(_mail(n), folder)
    with Mailbox(_settings(dovecot, folder=folder, mark_seen=True)) as mailbox:
        got = mailbox.fetch(None, 0)
        assert not any(r"\Seen" in f for f in dovecot.flags(folder).values())
        mailbox.after_journaled([m.uid for m in got.mails[:2]])
    flags = dovecot.flags(folder)
    assert [r"\Seen" in flags[m.uid] for m in got.mails] == [True, True, False]


def test_move_to_moves_journaled_mail_with_move(dovecot: Dovecot, folder: str) -> None:
    target = f"{folder}-done"
    dovecot.create_folder(target)
    for n in range(3):
        dovecot.append(_mail(n), folder)
    with Mailbox(_settings(dovecot, folder=folder, move_to=target)) as mailbox:
        got = mailbox.fetch(None, 0)
        mailbox.after_journaled([m.uid for m in got.mails])
        assert mailbox.fetch(got.cursor, 0).mails == ()
    assert dovecot.uids(folder) == []
    assert len(dovecot.uids(target)) == 3
    assert not any(r"\Seen" in f for f in dovecot.flags(target).values())


def test_mark_seen_and_move_to_on_a_server_without_move(bare: Dovecot) -> None:
    """COPY + \\Deleted + UID EXPUNGE (UIDPLUS): a mail the user deleted
    but did not expunge stays."""
    source, target = f"T{next(_folders)}", f"T{next(_folders)}"
    bare.create_folder(source)
    bare.create_folder(target)
    bare.append(_mail(0), source, flags=r"\Deleted")  # the user's, not journaled
    for n in range(1, 3):
        bare.append(_mail(n), source)
    settings = _settings(
        bare, port=bare.imap_port, security="plain", folder=source, mark_seen=True, move_to=target
    )
    with Mailbox(settings) as mailbox:
        got = mailbox.fetch(None, 0)
        mailbox.after_journaled([m.uid for m in got.mails[1:]])
    assert len(bare.uids(source)) == 1  # the user's deleted mail
    moved = bare.flags(target)
    assert len(moved) == 2 and all(r"\Seen" in f for f in moved.values())


def test_moving_to_a_missing_folder_is_a_permanent_error(dovecot: Dovecot, folder: str) -> None:
    dovecot.append(_mail(1), folder)
    with Mailbox(_settings(dovecot, folder=folder, move_to="Nowhere")) as mailbox:
        got = mailbox.fetch(None, 0)
        with pytest.raises(PermanentError, match="Nowhere"):
            mailbox.after_journaled([m.uid for m in got.mails])
    assert len(dovecot.uids(folder)) == 1


# -- security -----------------------------------------------------------------------------


def _log_since(server: Dovecot, start: int) -> str:
    return server.log_text()[start:]


def test_tls_on_the_imaps_port_with_the_test_ca(dovecot: Dovecot, folder: str) -> None:
    mark = len(dovecot.log_text())
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        assert mailbox.fetch(None, 0).mails == ()
    assert "method=PLAIN" in _log_since(dovecot, mark) and ", TLS," in _log_since(dovecot, mark)


def test_starttls_on_the_plain_port(dovecot: Dovecot, folder: str) -> None:
    dovecot.append(_mail(1), folder)
    mark = len(dovecot.log_text())
    settings = _settings(dovecot, port=dovecot.imap_port, security="starttls", folder=folder)
    with Mailbox(settings) as mailbox:
        assert [m.raw for m in mailbox.fetch(None, 0).mails] == [_mail(1)]
    login = [line for line in _log_since(dovecot, mark).splitlines() if "Login:" in line]
    assert len(login) == 1 and ", TLS," in login[0]


def test_a_certificate_not_trusted_is_refused(dovecot: Dovecot) -> None:
    with Mailbox(_settings(dovecot, ssl_context=None)) as mailbox:  # the system's CAs
        with pytest.raises(PermanentError, match="certificate is not trusted"):
            mailbox.fetch(None, 0)


def test_tls_on_a_port_without_tls_is_refused(dovecot: Dovecot) -> None:
    with Mailbox(_settings(dovecot, port=dovecot.imap_port)) as mailbox:
        with pytest.raises(PermanentError, match="TLS port"):
            mailbox.fetch(None, 0)


def test_no_password_goes_out_in_clear_unless_security_is_plain(bare: Dovecot) -> None:
    mark = len(bare.log_text())
    settings = _settings(bare, port=bare.imap_port, security="starttls")
    with Mailbox(settings) as mailbox:
        with pytest.raises(PermanentError, match="does not offer STARTTLS"):
            mailbox.fetch(None, 0)
    time.sleep(0.2)  # the login process logs the disconnect
    log = _log_since(bare, mark)
    assert "no auth attempts" in log and "Login:" not in log and "auth failed" not in log
    with Mailbox(_settings(bare, port=bare.imap_port, security="plain")) as mailbox:
        assert mailbox.fetch(None, 0).mails == ()


def test_a_wrong_password_is_an_auth_error_without_the_password(dovecot: Dovecot) -> None:
    wrong = WRONG_PASSWORD
    with Mailbox(_settings(dovecot, password=wrong)) as mailbox:
        with pytest.raises(AuthError) as caught:
            mailbox.fetch(None, 0)
    text = str(caught.value)
    assert "refused the login" in text and "AUTHENTICATIONFAILED" in text
    assert wrong not in text and dovecot.password not in text
    assert wrong not in repr(_settings(dovecot, password=wrong))


def test_no_log_line_holds_the_password_or_the_mail(
    dovecot: Dovecot, folder: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret_body = b"card number 4111 1111 1111 1111\r\n"
    dovecot.append(_mail(1, secret_body), folder)
    caplog.set_level(logging.DEBUG)  # everything, IMAPClient's protocol lines too
    with Mailbox(_settings(dovecot, folder=folder, mark_seen=True)) as mailbox:
        got = mailbox.fetch(None, 0)
        mailbox.after_journaled([m.uid for m in got.mails])
    with Mailbox(_settings(dovecot, password=WRONG_PASSWORD)) as mailbox:
        with pytest.raises(AuthError):
            mailbox.fetch(None, 0)
    assert got.mails[0].raw.endswith(secret_body)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("imapclient") for r in caplog.records)  # it was listened to
    for secret in (dovecot.password, WRONG_PASSWORD, "4111 1111", "order 1"):
        assert secret not in logged
    assert "4111" not in repr(got)


# -- failures ---------------------------------------------------------------------------------


def test_a_stopped_server_is_a_retryable_error_and_a_restarted_one_is_read_again(
    own_dovecot: Dovecot,
) -> None:
    server = own_dovecot
    server.append(_mail(1))
    with Mailbox(_settings(server)) as mailbox:
        first = mailbox.fetch(None, 0)
        server.stop()
        with pytest.raises(RetryableError, match="refused the connection"):
            mailbox.fetch(first.cursor, 0)
        with pytest.raises(RetryableError):
            mailbox.fetch(first.cursor, 5)  # no wait on a server that is away
        server.start()
        server.append(_mail(2))
        got = mailbox.fetch(first.cursor, 0)
    assert [m.raw for m in got.mails] == [_mail(2)]


def test_a_login_the_server_cannot_check_now_is_retryable_not_a_wrong_password() -> None:
    """Dovecot answers ``NO [UNAVAILABLE]`` while its user database cannot
    answer (an auth process still starting, a directory server down; here
    a checkpassword program that says "temporary problem"): the poller
    waits seconds for that, not the minutes a refused password gets."""
    for server in _server(bare=True, auth_down=True):
        with Mailbox(_settings(server, port=server.imap_port, security="plain")) as mailbox:
            with pytest.raises(RetryableError, match=r"cannot log in now.*UNAVAILABLE") as caught:
                mailbox.fetch(None, 0)
    assert not isinstance(caught.value, AuthError)
    assert server.password not in str(caught.value)


def test_a_server_stopping_during_idle_is_a_retryable_error(own_dovecot: Dovecot) -> None:
    server = own_dovecot
    with Mailbox(_settings(server)) as mailbox:
        empty = mailbox.fetch(None, 0)
        stopper = _later(0.5, server.stop)
        started = time.monotonic()
        with pytest.raises(RetryableError):
            mailbox.fetch(empty.cursor, 10)
        stopper.join()
    assert time.monotonic() - started < 8


def test_a_connection_the_server_closed_between_polls_is_reopened_at_once(
    own_dovecot: Dovecot,
) -> None:
    server = own_dovecot
    with Mailbox(_settings(server)) as mailbox:
        first = mailbox.fetch(None, 0)
        server.restart()  # kills the kept connection
        server.append(_mail(1))
        got = mailbox.fetch(first.cursor, 0)
    assert [m.raw for m in got.mails] == [_mail(1)]


def test_a_wait_is_cut_to_max_wait(
    dovecot: Dovecot, folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_WAIT (25 min: RFC 2177's client re-issues IDLE before 29, FACTS
    §5) bounds whatever wait the caller asks for; here it is made 1 s."""
    assert imap.MAX_WAIT < 29 * 60
    monkeypatch.setattr(imap, "MAX_WAIT", 1.0)
    with Mailbox(_settings(dovecot, folder=folder)) as mailbox:
        started = time.monotonic()
        got = mailbox.fetch(None, 3600)
    assert got.mails == () and time.monotonic() - started < 5
