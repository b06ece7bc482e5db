"""The e-mail channel's outbound side (``channel_adapters.email.smtp``): our
Message-IDs, reply subjects, the reply message, and the SMTP sender against
a real SMTP server (aiosmtpd in a thread, ``tests.support.smtp_server``):
what arrives, over plain, STARTTLS and implicit TLS with AUTH, and which
exception each failure of the server or the network raises (the
exactly-once rules in the module's docstring). No fixture files: every
message and subject here is written for the test."""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage, MIMEPart

import pytest

from bridge.errors import AmbiguousError, AuthError, PermanentError, RetryableError
from channel_adapters.email.smtp import (
    AUTO_REPLY_HEADERS,
    MAX_REFERENCES,
    OutgoingAttachment,
    SmtpSender,
    SmtpSettings,
    build_reply,
    is_own_message_id,
    make_message_id,
    message_ids,
    own_bridge_id,
    reply_subject,
    text_to_html,
    ticket_from_subject,
)
from tests.support.smtp_server import Behaviour, SmtpTestServer, smtp_server

BRIDGE_ID = "123e4567-e89b-12d3-a456-426614174000"
DOMAIN = "support.example.com"
OUR_ID = f"<bridge.{BRIDGE_ID}@{DOMAIN}>"
CUSTOMER = "anna@customer.example"
SUPPORT = f"help@{DOMAIN}"
PLUS = f"help+0f9e8d7c-aaaa-bbbb-cccc-000000000001@{DOMAIN}"
THEIR_ID = "<CAH7x-9Qm@mail.gmail.com>"
LOGIN = "bridge-bot"
PASSWORD = "correct horse"  # noqa: S105 - the test server's user (tests.support.smtp_server)
WRONG = "wrong horse"
USERS = {LOGIN: PASSWORD}


def reply(**overrides: object) -> EmailMessage:
    """A reply as the adapter builds it; ``overrides`` replace arguments."""
    arguments: dict[str, object] = {
        "from_addr": SUPPORT,
        "from_name": "Acme Support",
        "to_addr": CUSTOMER,
        "to_name": "Анна Петрова",
        "reply_to": PLUS,
        "subject": reply_subject("Re: Принтер не печатает", "T-1042"),
        "text": "Здравствуйте, Анна!\n\nПерезагрузите принтер: https://acme.example/help?a=1&b=2.",
        "message_id": make_message_id(BRIDGE_ID, DOMAIN),
        "in_reply_to": THEIR_ID,
        "references": "<root@mail.gmail.com> <CAH7x-1@mail.gmail.com>",
        "language": "ru",
        "date": dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC),
    }
    arguments.update(overrides)
    return build_reply(**arguments)  # type: ignore[arg-type]


def text_of(part: MIMEPart | None) -> str:
    """A text part's content with the wire's CRLFs as newlines."""
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def sender(server: SmtpTestServer, **overrides: object) -> SmtpSender:
    return SmtpSender(server.settings(from_addr=SUPPORT, **overrides))


# -- Message-IDs ------------------------------------------------------------------------


def test_message_id_is_ours_and_deterministic() -> None:
    assert make_message_id(BRIDGE_ID, DOMAIN) == OUR_ID
    assert make_message_id(BRIDGE_ID, "Support.Example.COM.") == OUR_ID
    # an internationalised domain goes out as IDNA (ids are ASCII)
    assert make_message_id("m1", "пример.рф") == "<bridge.m1@xn--e1afmkfd.xn--p1ai>"


@pytest.mark.parametrize(
    "bridge_id", ["", "a b", "x\r\nBcc: evil@example.net", "a@b", "<x>", "-leading"]
)
def test_message_id_refuses_a_bad_bridge_id(bridge_id: str) -> None:
    with pytest.raises(ValueError):
        make_message_id(bridge_id, DOMAIN)


def test_message_id_refuses_a_bad_domain() -> None:
    with pytest.raises(ValueError):
        make_message_id(BRIDGE_ID, "example.com\r\nBcc: evil@example.net")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (OUR_ID, BRIDGE_ID),
        (f" {OUR_ID} ", BRIDGE_ID),
        (OUR_ID[1:-1], BRIDGE_ID),  # without the brackets (a References token)
        (f"<bridge.{BRIDGE_ID}@SUPPORT.example.com>", BRIDGE_ID),  # domains ignore case
        (f"<bridge.{BRIDGE_ID}@other.example.com>", None),  # another sender's
        (f"<{BRIDGE_ID}@{DOMAIN}>", None),  # not our prefix
        (THEIR_ID, None),
        (f"<bridge.@{DOMAIN}>", None),
        (f"<bridge.a b@{DOMAIN}>", None),
        ("", None),
        (None, None),
    ],
)
def test_own_message_ids_are_recognised(value: str | None, expected: str | None) -> None:
    assert own_bridge_id(value, DOMAIN) == expected
    assert is_own_message_id(value, DOMAIN) is (expected is not None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@x> <b@x>\r\n <c@x>", ["<a@x>", "<b@x>", "<c@x>"]),
        ("<a@x><a@x> <b@x>", ["<a@x>", "<b@x>"]),  # duplicated ids (FACTS §5)
        ("a@x", ["<a@x>"]),  # no brackets at all
        ("<not-an-addr-spec> <b@x>", ["<not-an-addr-spec>", "<b@x>"]),  # kept, leniently
        ("<a b@x> <c@x>", ["<c@x>"]),  # whitespace inside: not an id
        ("<ид@x> <c@x>", ["<c@x>"]),  # non-ASCII: dropped
        ("", []),
        (None, []),
        (["<a@x>", "<b@x> <a@x>"], ["<a@x>", "<b@x>"]),
    ],
)
def test_message_ids_are_read_leniently(value: object, expected: list[str]) -> None:
    assert message_ids(value) == expected  # type: ignore[arg-type]


# -- subjects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "ticket", "expected"),
    [
        ("Printer broken", "T-1042", "Re: Printer broken [#T-1042]"),
        ("Re: Printer broken", "T-1042", "Re: Printer broken [#T-1042]"),
        ("RE: Re: re:Printer broken", "T-1042", "Re: Printer broken [#T-1042]"),
        ("Re[2]: Printer broken", "T-1042", "Re: Printer broken [#T-1042]"),
        ("Re (3) : Printer broken", "T-1042", "Re: Printer broken [#T-1042]"),
        ("AW: SV: Drucker", "T-1042", "Re: Drucker [#T-1042]"),
        ("Ответ: Принтер не печатает", "T-1042", "Re: Принтер не печатает [#T-1042]"),
        ("Отв: RE: Принтер", "T-1042", "Re: Принтер [#T-1042]"),
        # forward prefixes stay, as mail clients keep them in a reply
        ("Fwd: Invoice", "T-1042", "Re: Fwd: Invoice [#T-1042]"),
        ("Re: Fwd: Invoice", "T-1042", "Re: Fwd: Invoice [#T-1042]"),
        ("Пересл: Счёт", "T-1042", "Re: Пересл: Счёт [#T-1042]"),
        # the hook once, wherever it already is, in any case
        ("Re: Printer broken [#T-1042]", "T-1042", "Re: Printer broken [#T-1042]"),
        ("[#T-1042] Printer broken", "T-1042", "Re: [#T-1042] Printer broken"),
        ("Re: Printer broken [#t-1042]", "T-1042", "Re: Printer broken [#t-1042]"),
        ("Re: Printer broken [#T-1041]", "T-1042", "Re: Printer broken [#T-1041] [#T-1042]"),
        # no ticket, no hook
        ("Re: Printer broken", None, "Re: Printer broken"),
        # empty subjects
        ("", "T-1042", "Re: (no subject) [#T-1042]"),
        (None, None, "Re: (no subject)"),
        ("Re:  ", None, "Re: (no subject)"),
        # one line: CR/LF and tabs become spaces (header injection)
        (
            "Printer\r\nBcc: evil@example.net",
            "T-1\r\n1",
            "Re: Printer Bcc: evil@example.net [#T-1 1]",
        ),
        ("  Printer \t broken  ", None, "Re: Printer broken"),
        # a subject that merely starts with the letters of a prefix
        ("Report for May", None, "Re: Report for May"),
        ("Reply needed", None, "Re: Reply needed"),
    ],
)
def test_reply_subject(subject: str | None, ticket: str | None, expected: str) -> None:
    assert reply_subject(subject, ticket) == expected


def test_reply_subject_takes_the_hook_format_and_default() -> None:
    assert (
        reply_subject("Re: Printer", "12345", hook_format="[Ticket#{ticket}]")
        == "Re: Printer [Ticket#12345]"
    )
    assert reply_subject("", None, default="Your request") == "Re: Your request"


def test_ticket_is_read_back_from_a_subject() -> None:
    assert ticket_from_subject("Re: Printer broken [#T-1042]") == "T-1042"
    assert ticket_from_subject("Re: x [Ticket#12345]", "[Ticket#{ticket}]") == "12345"
    assert ticket_from_subject("Re: Printer broken") is None
    assert ticket_from_subject(None) is None


# -- the HTML alternative ---------------------------------------------------------------


def test_html_escapes_the_text_and_links_urls() -> None:
    page = text_to_html(
        'Hi <script>alert("x")</script> & <b>bold</b>\n'
        "line two\n\n"
        "See https://acme.example/a?b=1&c=<2>, or (https://acme.example/x_(y)).\n"
        'javascript:alert(1) <a href="javascript:alert(1)">x</a>',
        "ru",
    )
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<br>\nline two</p>\n<p>See" in page  # a line break, then a new paragraph
    # the link stops before markup and the sentence's punctuation
    assert (
        '<a href="https://acme.example/a?b=1&amp;c=">https://acme.example/a?b=1&amp;c=</a>' in page
    )
    assert '(<a href="https://acme.example/x_(y)">https://acme.example/x_(y)</a>).' in page
    # nothing but http(s) becomes a link; the rep's own anchor stays text
    assert page.count("<a href=") == 2
    assert "&lt;a href=&quot;javascript:alert(1)&quot;&gt;" in page
    assert '<html lang="ru">' in page


# -- the reply message ------------------------------------------------------------------


def test_reply_references_are_deduped_capped_and_end_with_the_parent() -> None:
    theirs = [f"<id{i}@mail.example>" for i in range(40)]
    message = reply(
        references=[*theirs, "<id3@mail.example>", "<bad id@x>", THEIR_ID, "<" + "x" * 300 + "@y>"],
        in_reply_to=THEIR_ID,
    )
    refs = message_ids(str(message["References"]))
    assert len(refs) == MAX_REFERENCES
    assert refs[0] == "<id0@mail.example>"  # the thread's root stays
    assert refs[-1] == THEIR_ID  # the parent last, once
    assert refs[-2] == "<id39@mail.example>"
    assert len(set(refs)) == len(refs)
    assert str(message["In-Reply-To"]) == THEIR_ID


def test_a_reply_without_a_parent_has_no_threading_headers() -> None:
    message = reply(in_reply_to=None, references=None)
    assert message["In-Reply-To"] is None and message["References"] is None


def test_a_malformed_parent_id_is_dropped_not_sent() -> None:
    message = reply(in_reply_to="<a b>\r\nBcc: evil@example.net", references=None)
    assert message["In-Reply-To"] is None
    assert message["Bcc"] is None


@pytest.mark.parametrize(
    "field",
    [
        {"to_addr": "anna@customer.example\r\nBcc: evil@example.net"},
        {"to_addr": "anna@customer.example\nBcc: evil@example.net"},
        {"to_addr": "anna@customer.example, evil@example.net"},
        {"to_addr": "Anna <anna@customer.example>"},
        {"to_addr": "no-at-sign"},
        {"from_addr": "help@support.example.com\rBcc: evil@example.net"},
        {"reply_to": "help+x@support.example.com\r\nBcc: evil@example.net"},
        {"cc": ["ok@customer.example", "x@y\r\nBcc: evil@example.net"]},
        {"message_id": "<bridge.x@support.example.com>\r\nBcc: evil@example.net"},
        {"message_id": "bridge.x@support.example.com"},
        {"language": "ru\r\nBcc: evil@example.net"},
        {"extra_headers": {"Auto-Submitted": "auto-replied\r\nBcc: evil@example.net"}},
        {"extra_headers": {"X-Evil\r\nBcc": "evil@example.net"}},
        {"extra_headers": {"Bcc": "evil@example.net"}},  # not one of the headers it lets through
        {"extra_headers": {"From": "ceo@support.example.com"}},
    ],
)
def test_header_injection_in_addresses_ids_and_headers_is_refused(
    field: dict[str, object],
) -> None:
    with pytest.raises(ValueError):
        reply(**field)


def test_settings_check_their_values() -> None:
    base = {"host": "smtp.example.com", "from_addr": SUPPORT}
    with pytest.raises(ValueError, match="security"):
        SmtpSettings(**base, security="ssl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clear|plain"):
        SmtpSettings(**base, security="plain", user=LOGIN, password=PASSWORD)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SmtpSettings(host="smtp.example.com", from_addr="x\r\n@y")
    settings = SmtpSettings(**base, user=LOGIN, password=PASSWORD)  # type: ignore[arg-type]
    assert PASSWORD not in repr(settings)
    assert settings.effective_port == 465
    assert SmtpSettings(**base, security="starttls").effective_port == 587  # type: ignore[arg-type]
    # a login in clear is allowed to a loopback relay only
    assert SmtpSettings(host="127.0.0.1", from_addr=SUPPORT, security="plain", user="u").user


# -- sending: what arrives --------------------------------------------------------------


def test_a_reply_arrives_with_its_threading_headers_and_parts() -> None:
    attachment = OutgoingAttachment("../счёт №5.pdf", "application/PDF", b"%PDF-1.4\n%\xe2\xe3\n")
    message = reply(attachments=[attachment], extra_headers=AUTO_REPLY_HEADERS)
    with smtp_server(security="plain") as server:
        outcome = sender(server, security="plain").send(message)
    assert outcome.accepted == (CUSTOMER,) and outcome.refused == {}
    assert outcome.message_id == OUR_ID
    assert outcome.reply.startswith("250 2.0.0 Ok: queued as Q1")
    [received] = server.received
    assert received.mail_from == SUPPORT and received.rcpt_tos == (CUSTOMER,)
    assert received.tls is False and received.login is None
    got = received.message
    assert got["Message-ID"] == OUR_ID
    assert got["In-Reply-To"] == THEIR_ID
    assert got["References"].split() == [
        "<root@mail.gmail.com>",
        "<CAH7x-1@mail.gmail.com>",
        THEIR_ID,
    ]
    assert got["Subject"] == "Re: Принтер не печатает [#T-1042]"
    assert got["From"].addresses[0].display_name == "Acme Support"
    assert got["From"].addresses[0].addr_spec == SUPPORT
    assert got["To"].addresses[0].display_name == "Анна Петрова"
    assert got["Reply-To"].addresses[0].addr_spec == PLUS
    assert got["Date"].datetime == dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    assert got["Content-Language"] == "ru"
    assert got["Auto-Submitted"] == "auto-replied"
    assert got["X-Auto-Response-Suppress"] == "All"
    assert got.get_content_type() == "multipart/mixed"
    alternative, attached = got.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    plain, page = alternative.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert text_of(plain) == (
        "Здравствуйте, Анна!\n\nПерезагрузите принтер: https://acme.example/help?a=1&b=2.\n"
    )
    assert page.get_content_type() == "text/html"
    assert '<a href="https://acme.example/help?a=1&amp;b=2">' in page.get_content()
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_filename() == "счёт №5.pdf"  # the name only, no directories
    assert attached.get_content() == attachment.data
    # 7-bit on the wire: no reliance on the server's 8BITMIME
    assert received.raw.isascii()


def test_references_with_long_ids_are_folded_between_ids_never_encoded() -> None:
    long_id = "<" + "a" * 120 + "@mail.gmail.com>"
    message = reply(in_reply_to=long_id, references=[f"<r{i}@x.example>" for i in range(8)])
    with smtp_server() as server:
        sender(server, security="plain").send(message)
    raw = server.received[0].raw
    # on the wire as it is (an RFC 2047 encoded-word would break threading)
    assert b"\r\nIn-Reply-To: " + long_id.encode() + b"\r\n" in raw
    assert b"\r\n " + long_id.encode() + b"\r\n" in raw  # References' last line
    got = server.messages[0]
    assert got["In-Reply-To"] == long_id
    assert got["References"].split()[-1] == long_id


def test_a_line_starting_with_a_dot_survives() -> None:
    with smtp_server() as server:
        sender(server, security="plain").send(reply(text=".\n..two\n.three"))
    assert text_of(server.messages[0].get_body(("plain",))) == ".\n..two\n.three\n"


def test_injected_headers_never_arrive() -> None:
    evil = "\r\nBcc: evil@example.net\r\nX-Injected: yes"
    message = reply(
        subject=reply_subject("Printer" + evil, "T-1042"),
        from_name="Acme" + evil,
        to_name="Anna" + evil,
        in_reply_to=THEIR_ID + evil,
        references="<a@x>" + evil,
    )
    with smtp_server() as server:
        sender(server, security="plain").send(message)
    [received] = server.received
    assert received.rcpt_tos == (CUSTOMER,)
    got = received.message
    assert got["Bcc"] is None and got["X-Injected"] is None
    assert got["Subject"] == "Re: Printer Bcc: evil@example.net X-Injected: yes [#T-1042]"
    assert got["In-Reply-To"] == THEIR_ID
    assert b"\r\nBcc:" not in received.raw and b"\r\nX-Injected:" not in received.raw


def test_bcc_goes_in_the_envelope_not_the_headers() -> None:
    message = reply(cc=["boss@customer.example"])
    message["Bcc"] = "audit@support.example.com"
    with smtp_server() as server:
        outcome = sender(server, security="plain").send(message)
    [received] = server.received
    assert received.rcpt_tos == (CUSTOMER, "boss@customer.example", "audit@support.example.com")
    assert outcome.accepted == received.rcpt_tos
    assert received.message["Bcc"] is None and b"audit@" not in received.raw
    assert message["Bcc"] == "audit@support.example.com"  # the caller's message is unchanged


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_starttls_with_auth(mechanism: str) -> None:
    with smtp_server(security="starttls", users=USERS, mechanisms=(mechanism,)) as server:
        sender(server, user=LOGIN, password=PASSWORD).send(reply())
    [received] = server.received
    assert received.tls is True and received.login == "bridge-bot"
    assert server.auth_attempts == [(mechanism, "bridge-bot", True)]
    assert server.messages[0]["Message-ID"] == OUR_ID


def test_implicit_tls_with_auth() -> None:
    with smtp_server(security="tls", users=USERS, require_auth=True) as server:
        assert server.settings(from_addr=SUPPORT).security == "tls"
        sender(server, user=LOGIN, password=PASSWORD).send(reply())
    [received] = server.received
    assert received.tls is True and received.login == "bridge-bot"


def test_a_loopback_relay_in_plain_with_auth() -> None:
    with smtp_server(security="plain", users=USERS) as server:
        sender(server, user=LOGIN, password=PASSWORD).send(reply())
    assert server.received[0].login == "bridge-bot"


def test_smtputf8_is_used_when_an_address_needs_it() -> None:
    with smtp_server(smtputf8=True) as server:
        sender(server, security="plain").send(reply(to_addr="анна@пример.рф"))
    [received] = server.received
    assert received.rcpt_tos == ("анна@xn--e1afmkfd.xn--p1ai",)
    assert received.message["To"].addresses[0].username == "анна"
    assert received.message["To"].addresses[0].display_name == "Анна Петрова"
    assert "SMTPUTF8" in server.mail_options


def test_an_address_needing_smtputf8_is_refused_by_a_server_without_it() -> None:
    with smtp_server(smtputf8=False) as server:
        with pytest.raises(PermanentError, match="SMTPUTF8"):
            sender(server, security="plain").send(reply(to_addr="анна@пример.рф"))
    assert server.commands == []


# -- sending: what fails and how --------------------------------------------------------


def test_wrong_password_is_an_auth_error() -> None:
    with smtp_server(security="starttls", users=USERS) as server:
        with pytest.raises(AuthError, match="535"):
            sender(server, user=LOGIN, password=WRONG).send(reply())
    assert server.commands == [] and server.received == []
    assert WRONG not in repr(server.settings(from_addr=SUPPORT, user=LOGIN, password=WRONG))


def test_no_login_where_one_is_required_is_an_auth_error() -> None:
    with smtp_server(security="tls", users=USERS, require_auth=True) as server:
        with pytest.raises(AuthError, match="530"):
            sender(server).send(reply())
    assert server.received == []


def test_starttls_not_offered_is_refused_before_anything_is_sent() -> None:
    with smtp_server(security="plain") as server:
        with pytest.raises(PermanentError, match="does not offer STARTTLS.*clear text"):
            sender(server, security="starttls").send(reply())
    assert server.commands == []


def test_a_server_offering_no_usable_auth_mechanism_is_permanent() -> None:
    # AUTH advertised with no mechanism smtplib speaks (as one offering only
    # XOAUTH2 or GSSAPI would be)
    with smtp_server(security="starttls", users=USERS, mechanisms=()) as server:
        with pytest.raises(PermanentError, match="AUTH.*No suitable authentication method"):
            sender(server, user=LOGIN, password=PASSWORD).send(reply())
    assert server.commands == []


def test_an_untrusted_certificate_is_permanent() -> None:
    with smtp_server(security="tls") as server:
        with pytest.raises(PermanentError, match="certificate"):
            sender(server, ssl_context=None).send(reply())  # the system's trust store
    assert server.commands == []


def test_server_down_is_retryable() -> None:
    with smtp_server() as server:
        settings = server.settings(from_addr=SUPPORT, security="plain")
    with pytest.raises(RetryableError) as caught:
        SmtpSender(settings).send(reply())
    assert type(caught.value) is RetryableError  # not ambiguous: nothing was sent
    assert caught.value.nothing_written is True


def assert_nothing_sent(error: BaseException, server: SmtpTestServer) -> None:
    assert type(error) is RetryableError
    assert error.nothing_written is True
    assert server.received == []


@pytest.mark.parametrize(
    ("behaviour", "commands", "code"),
    [
        (Behaviour(mail="451 4.3.2 System busy, try later"), ["MAIL"], "451"),
        (Behaviour(mail="421 4.7.0 Closing connection"), ["MAIL"], "421"),
        (Behaviour(rcpt="451 4.3.0 Greylisted, try again later"), ["MAIL", "RCPT"], "451"),
        (Behaviour(rcpt="452 4.2.2 Mailbox full"), ["MAIL", "RCPT"], "452"),
        (Behaviour(data_command="451 4.3.0 Try later"), ["MAIL", "RCPT", "DATA"], "451"),
    ],
)
def test_4xx_before_the_data_is_retryable(
    behaviour: Behaviour, commands: list[str], code: str
) -> None:
    with smtp_server(behaviour=behaviour) as server:
        with pytest.raises(RetryableError) as caught:
            sender(server, security="plain").send(reply())
    assert_nothing_sent(caught.value, server)
    assert server.commands == commands
    assert caught.value.vendor_code == code


def test_5xx_on_the_data_command_is_permanent() -> None:
    with smtp_server(behaviour=Behaviour(data_command="554 5.5.1 No valid recipients")) as server:
        with pytest.raises(PermanentError, match="554 5.5.1 No valid recipients"):
            sender(server, security="plain").send(reply())
    assert server.received == []


def test_dropped_at_rcpt_is_retryable() -> None:
    with smtp_server(behaviour=Behaviour(fault="drop_at_rcpt")) as server:
        with pytest.raises(RetryableError, match="connection lost") as caught:
            sender(server, security="plain").send(reply())
    assert_nothing_sent(caught.value, server)


def test_550_on_rcpt_is_permanent_with_the_servers_reply() -> None:
    refusal = f"550 5.1.1 <{CUSTOMER}>: Recipient address rejected: User unknown"
    with smtp_server(behaviour=Behaviour(rcpt=refusal)) as server:
        with pytest.raises(PermanentError) as caught:
            sender(server, security="plain").send(reply())
    message = str(caught.value)
    assert "550 5.1.1" in message and "Recipient address rejected: User unknown" in message
    assert "anna@" not in message  # addresses never reach a log line
    assert caught.value.vendor_code == "550"
    assert server.commands == ["MAIL", "RCPT"] and server.received == []


def test_550_on_mail_from_is_permanent() -> None:
    with smtp_server(behaviour=Behaviour(mail="550 5.7.1 Sender not allowed")) as server:
        with pytest.raises(PermanentError, match="5.7.1 Sender not allowed"):
            sender(server, security="plain").send(reply())


def test_some_recipients_refused_is_an_outcome_not_an_error() -> None:
    boss = "boss@customer.example"
    behaviour = Behaviour(refuse={boss: "550 5.1.1 No such user"})
    with smtp_server(behaviour=behaviour) as server:
        outcome = sender(server, security="plain").send(reply(cc=[boss]))
    assert outcome.accepted == (CUSTOMER,)
    assert outcome.refused == {boss: (550, "5.1.1 No such user")}
    [received] = server.received
    assert received.rcpt_tos == (CUSTOMER,)


def test_every_recipient_refused_retries_when_one_refusal_was_temporary() -> None:
    boss = "boss@customer.example"
    behaviour = Behaviour(refuse={CUSTOMER: "550 5.1.1 No such user", boss: "450 4.2.1 Busy"})
    with smtp_server(behaviour=behaviour) as server:
        with pytest.raises(RetryableError) as caught:
            sender(server, security="plain").send(reply(cc=[boss]))
    assert_nothing_sent(caught.value, server)


def test_4xx_at_the_end_of_data_is_retryable() -> None:
    with smtp_server(behaviour=Behaviour(data="451 4.3.0 Queue write failed")) as server:
        with pytest.raises(RetryableError) as caught:
            sender(server, security="plain").send(reply())
    assert type(caught.value) is RetryableError
    assert "451 4.3.0 Queue write failed" in str(caught.value)
    assert server.received[0].reply == "451 4.3.0 Queue write failed"
    assert server.messages == []


def test_5xx_at_the_end_of_data_is_permanent() -> None:
    behaviour = Behaviour(data="554 5.7.1 Message rejected as spam")
    with smtp_server(behaviour=behaviour) as server:
        with pytest.raises(PermanentError, match="554 5.7.1 Message rejected as spam"):
            sender(server, security="plain").send(reply())
    assert server.messages == []


def test_dropped_after_the_data_is_ambiguous() -> None:
    with smtp_server(behaviour=Behaviour(fault="drop_after_data")) as server:
        with pytest.raises(AmbiguousError, match="may have accepted"):
            sender(server, security="plain").send(reply())
    # the whole message did reach the server: a resend could duplicate it
    [received] = server.received
    assert received.reply is None and received.message["Message-ID"] == OUR_ID


def test_no_answer_after_the_data_is_ambiguous() -> None:
    with smtp_server(behaviour=Behaviour(fault="stall_after_data")) as server:
        with pytest.raises(AmbiguousError, match="timed out"):
            sender(server, security="plain", timeout=0.5).send(reply())
    assert len(server.received) == 1


def test_dropped_in_the_middle_of_the_content_is_retryable() -> None:
    # the server closes right after its 354: the client's sendall hands the
    # kernel its send buffer (4 MiB at most, tcp_wmem) and what the peer's
    # window takes before the reset arrives, far less than 16 MB of base64,
    # so the failure lands while the content is still going out
    big = OutgoingAttachment("big.bin", "application/octet-stream", b"\0" * 12_000_000)
    with smtp_server(behaviour=Behaviour(fault="drop_during_data")) as server:
        with pytest.raises(RetryableError, match="SMTP content") as caught:
            sender(server, security="plain").send(reply(attachments=[big]))
    assert_nothing_sent(caught.value, server)
    assert server.commands == ["MAIL", "RCPT", "DATA"]


def test_an_oversized_message_is_refused_before_the_data() -> None:
    big = OutgoingAttachment("big.bin", "application/octet-stream", b"\0" * 200_000)
    with smtp_server(data_size_limit=100_000) as server:
        with pytest.raises(PermanentError, match="552"):
            sender(server, security="plain").send(reply(attachments=[big]))
    assert server.received == []
