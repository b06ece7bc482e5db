"""channel_adapters.email.mime: raw RFC 5322 bytes to a ParsedMail.

Fixtures are the real mails under ``tests/fixtures/corpora/email`` (each
test id or comment names its source repository and path from MANIFEST.json).
Mails built in this file are labelled "our own" and say what they imitate.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channel_adapters.email.mime import (
    MailError,
    ParsedMail,
    decode_bytes,
    decode_header_value,
    html_to_text,
    parse_auth_results,
    parse_mail,
    sanitize_html,
)

CORPORA = Path(__file__).resolve().parents[1] / "fixtures" / "corpora"
EMAIL = CORPORA / "email"
MANIFEST = {e["file"]: e for e in json.loads((CORPORA / "MANIFEST.json").read_text())}

RAW_DIRS = ("raw_mime", "bounces_autoreplies")
RAW_FILES = sorted(
    p
    for p in EMAIL.rglob("*")
    if p.is_file()
    and (p.relative_to(EMAIL).parts[0] in RAW_DIRS or p.suffix == ".eml")
    and "reply_text" not in p.name
)


def source(path: Path) -> str:
    """``repo:path`` of a corpora file, from MANIFEST.json."""
    entry = MANIFEST["email/" + path.relative_to(EMAIL).as_posix()]
    return f"{entry['repo']}:{entry['path']}"


def load(rel: str) -> ParsedMail:
    return parse_mail((EMAIL / rel).read_bytes())


def our_mail(headers: str, body: bytes = b"hello\r\n") -> bytes:
    """A mail of our own: header lines (``\\n``-separated) and a body."""
    head = "\r\n".join(line for line in headers.strip().splitlines())
    return head.encode("utf-8") + b"\r\n\r\n" + body


# -- every real mail ---------------------------------------------------------------


def test_the_raw_corpus_is_all_here() -> None:
    # raw_mime 76 + bounces_autoreplies 48 + talon .eml 13 (FACTS §5: 137)
    assert len(RAW_FILES) == 137


@pytest.mark.parametrize("path", RAW_FILES, ids=[source(p) for p in RAW_FILES])
def test_every_corpus_mail_parses_clean(path: Path) -> None:
    mail = parse_mail(path.read_bytes())
    one_line = [mail.subject, mail.from_name or "", *mail.headers.values()]
    one_line += [a.file_name or "" for a in mail.attachments]
    for value in one_line:
        assert "\r" not in value and "\n" not in value
        value.encode("utf-8")  # no lone surrogates left by raw 8-bit headers
    mail.text.encode("utf-8")
    ids = (mail.message_id, *mail.in_reply_to, *mail.references)
    for mid in (i for i in ids if i is not None):
        assert mid and " " not in mid and "<" not in mid and ">" not in mid
    assert mail.date is None or mail.date.tzinfo is not None
    assert mail.language in ("ru", "en")
    for address in (mail.from_addr, mail.reply_to_addr, *mail.to_addrs, *mail.cc_addrs):
        assert address is None or (address == address.lower() and address.count("@") == 1)


# -- headers -----------------------------------------------------------------------


def test_arabic_auto_reply_headers_decode() -> None:
    # chatwoot/chatwoot:spec/fixtures/files/non_utf_encoded_mail.eml
    mail = load("raw_mime/chatwoot/non_utf_encoded_mail.eml")
    assert mail.subject == "أهلين عميلنا الكريم"
    assert mail.from_name == "متجر سوق نت"
    assert mail.from_addr == "example@gmail.com"
    # the duplicated In-Reply-To id is kept once
    assert mail.in_reply_to == ("4e6e35f5a38b4_479f13bb90078178@small-app-01.mail",)
    assert mail.to_addrs == ("reply+6bdc3f4d-0bec-4515-a284-5d916fdde489@example.com",)
    assert mail.message_id == "CAEjnyt3uiyywAF3SrJzEedMRV5H5XG4aYvFrGdFwxtuGoRCc0w@mail.gmail.com"


def test_references_keep_an_id_that_is_not_an_addr_spec() -> None:
    # chatwoot/chatwoot:spec/fixtures/files/references.eml
    mail = load("raw_mime/chatwoot/references.eml")
    assert mail.references == (
        "4e6e35f5a38b4_479f13bb90078178@small-app-01.mail",
        "test-in-reply-to",
    )


def test_an_empty_in_reply_to_gives_no_ids() -> None:
    # mikel/mail:spec/fixtures/emails/error_emails/empty_in_reply_to.eml
    assert load("raw_mime/mikel_mail/error_emails__empty_in_reply_to.eml").in_reply_to == ()


def test_an_id_broken_inside_its_brackets_is_dropped() -> None:
    # mikel/mail:spec/fixtures/emails/error_emails/multiple_references_with_one_invalid.eml
    # (two References headers; "<invalid.   something@bar.net>" is folded mid-id)
    mail = load("raw_mime/mikel_mail/error_emails__multiple_references_with_one_invalid.eml")
    assert mail.references == ("foo@bar.net", "baz@bar.net")


def test_windows_1251_encoded_word_in_from() -> None:
    # mikel/mail:spec/fixtures/emails/plain_emails/raw_email_bad_time.eml
    mail = load("raw_mime/mikel_mail/plain_emails__raw_email_bad_time.eml")
    assert mail.from_name == "Атиковa"
    assert mail.from_addr == "yusuf75thu@auracom.net"


def test_raw_8bit_utf8_header_is_decoded() -> None:
    raw = our_mail("From: Иван Петров <ivan@example.ru>\nSubject: Вопрос по заказу №15")
    mail = parse_mail(raw)  # our own: raw UTF-8 in headers, as some webmails send
    assert (mail.from_name, mail.subject) == ("Иван Петров", "Вопрос по заказу №15")


def test_raw_8bit_cp1251_header_is_decoded() -> None:
    head = "From: Иван <ivan@example.ru>\r\nSubject: Вопрос по заказу\r\n\r\nhi".encode("cp1251")
    mail = parse_mail(head)  # our own: undeclared windows-1251 in headers
    assert (mail.from_name, mail.subject) == ("Иван", "Вопрос по заказу")


def test_header_injection_never_survives_decoding() -> None:
    # our own: CR/LF hidden in encoded-words of Subject, From and a file name
    evil = "=?utf-8?B?SGVsbG8NCkJjYzogZXZpbEB4Lnk=?="  # "Hello\r\nBcc: evil@x.y"
    name = "=?utf-8?Q?Doe=0D=0AX-Injected=3A_1?="
    msg = EmailMessage()
    msg["From"] = "x@example.com"
    msg.set_content("body")
    msg.add_attachment(b"data", maintype="text", subtype="csv", filename="a.csv")
    raw = msg.as_bytes().replace(b"a.csv", b"=?utf-8?Q?a=0D=0Ab.csv?=")
    raw = raw.replace(b"From: x@example.com", f"From: {name} <x@example.com>".encode())
    raw = f"Subject: {evil}\r\n".encode() + raw
    mail = parse_mail(raw)
    assert mail.subject == "Hello Bcc: evil@x.y"
    assert mail.from_name == "Doe X-Injected: 1"
    assert mail.attachments[0].file_name == "a b.csv"
    assert decode_header_value("a\x00b\u2028c\rd") == "a b c d"


def test_undeclared_charset_label_in_encoded_word_falls_back() -> None:
    # our own: an encoded-word labelled with a charset Python does not know
    value = "=?x-unknown?B?" + "0J/RgNC40LLQtdGC" + "?="  # UTF-8 "Привет"
    assert decode_header_value(value) == "Привет"


def test_date_is_aware_and_a_bad_date_is_none() -> None:
    mail = parse_mail(our_mail("From: a@example.com\nDate: Tue, 1 Jul 2003 10:52:37 -0000"))
    assert mail.date == dt.datetime(2003, 7, 1, 10, 52, 37, tzinfo=dt.UTC)
    bad = parse_mail(our_mail("From: a@example.com\nDate: the day after tomorrow"))
    assert bad.date is None and "date-invalid" in bad.defects


def test_message_id_normalised_and_invalid_is_none() -> None:
    mail = parse_mail(our_mail("From: a@example.com\nMessage-ID:   <Abc.123@Example.COM>  "))
    assert mail.message_id == "Abc.123@Example.COM"
    assert parse_mail(our_mail("From: a@example.com\nMessage-ID: <>")).message_id is None
    assert parse_mail(our_mail("From: a@example.com")).message_id is None


def test_delivered_to_and_reply_to() -> None:
    raw = our_mail(
        "From: Bob <Bob@Example.com>\nReply-To: help+123@example.com\n"
        "Delivered-To: support@acme.test\nX-Original-To: Sales@acme.test\n"
        "To: a@x.test, b@x.test\nCc: c@x.test"
    )
    mail = parse_mail(raw)  # our own
    assert mail.from_addr == "bob@example.com"
    assert mail.reply_to_addr == "help+123@example.com"
    assert mail.delivered_to == ("support@acme.test", "sales@acme.test")
    assert (mail.to_addrs, mail.cc_addrs) == (("a@x.test", "b@x.test"), ("c@x.test",))


def test_kept_headers_for_classification() -> None:
    # sisimai/set-of-emails:maildir/bsd/rfc3834-06.eml
    mail = load("bounces_autoreplies/sisimai/bsd__rfc3834-06.eml")
    assert mail.headers["auto-submitted"] == "auto-replied"
    assert mail.headers["precedence"] == "bulk"
    assert mail.headers["x-auto-response-suppress"] == "OOF, AutoReply, DR, NDR, RN, NRN"
    assert mail.headers["return-path"] == "<>"


# -- Authentication-Results ------------------------------------------------------------


def test_auth_results_first_header_only() -> None:
    # our own: the receiving MTA's header on top, a forged one below it
    raw = our_mail(
        "Authentication-Results: mx.acme.test; spf=pass (sender ok; really)"
        " smtp.mailfrom=example.com; dkim=fail header.d=x; dkim=pass header.d=example.com;"
        " dmarc=pass (p=reject) header.from=example.com\n"
        "Authentication-Results: evil.test; spf=fail; dkim=fail; dmarc=fail\n"
        "From: a@example.com"
    )
    auth = parse_mail(raw).auth
    assert (auth.spf, auth.dkim, auth.dmarc, auth.authserv_id) == (
        "pass",
        "pass",
        "pass",
        "mx.acme.test",
    )
    assert parse_auth_results(None).dmarc == "none"
    assert parse_auth_results("mx; dmarc=fail (p=none) header.from=x").dmarc == "fail"


def test_auth_results_of_a_real_mail() -> None:
    # rspamd/rspamd:test/functional/messages/arcallow.eml (Outlook.com)
    auth = load("raw_mime/rspamd/arcallow.eml").auth
    assert auth.authserv_id is not None and auth.spf in ("pass", "none", "fail", "softfail")


# -- bodies and charsets -----------------------------------------------------------------


def test_koi8r_quoted_printable_body() -> None:
    # jstedfast/MimeKit:UnitTests/TestData/tnef/ukr.eml (koi8-r QP + winmail.dat)
    mail = load("raw_mime/mimekit/tnef__ukr.eml")
    assert mail.text.startswith("шостий")
    assert [a.mime_type for a in mail.attachments] == ["application/ms-tnef"]
    assert mail.attachments[0].file_name == "winmail.dat"


def test_koi8r_outlook_com_mail() -> None:
    # rspamd/rspamd:test/functional/messages/arcallow.eml: koi8-r QP plain + HTML
    mail = load("raw_mime/rspamd/arcallow.eml")
    assert mail.text == "test"
    assert mail.html is not None and "test" in mail.html and "<meta" not in mail.html


def test_windows_1251_declared_body() -> None:
    # rspamd/rspamd:test/functional/messages/replyto_1_1.eml
    mail = load("raw_mime/rspamd/replyto_1_1.eml")
    assert (mail.text, mail.subject) == ("test", "06.07.2015")


def test_bilingual_mail_language() -> None:
    # mailgun/flanker:tests/fixtures/messages/bilingual-simple.eml (more Latin than Cyrillic)
    assert load("raw_mime/flanker/bilingual-simple.eml").language == "en"
    # mailgun/flanker:tests/fixtures/messages/8bitmime.eml ("Превел")
    mail = load("raw_mime/flanker/8bitmime.eml")
    assert mail.text.startswith("Превел") and mail.language == "ru"


RUSSIAN = "Здравствуйте! Подскажите, пожалуйста, когда придёт мой заказ? Спасибо."


@pytest.mark.parametrize(
    ("label", "data", "defect"),
    [
        ("koi8-r", RUSSIAN.encode("cp1251"), "charset-fallback"),
        ("windows-1251", RUSSIAN.encode("koi8-r"), "charset-fallback"),
        ("iso-8859-1", RUSSIAN.encode("cp1251"), "charset-fallback"),
        ("us-ascii", RUSSIAN.encode("koi8-r"), "charset-fallback"),
        (None, RUSSIAN.encode("cp1251"), "charset-fallback"),
        ("windows-1251", RUSSIAN.encode("utf-8"), "charset-mislabelled"),
        ("x-unknown-charset", RUSSIAN.encode("cp1251"), "charset-unknown"),
        ("koi8-r", RUSSIAN.encode("koi8-r"), None),
        ("windows-1251", RUSSIAN.encode("cp1251"), None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_mislabelled_russian_is_recovered(label: str | None, data: bytes, defect: str) -> None:
    # our own: Russian text in one charset, labelled as another (FACTS §5
    # "Encodings": the fallback order is our own choice)
    text, found = decode_bytes(data, label)
    assert (text, found) == (RUSSIAN, defect)


def test_western_text_is_not_turned_into_cyrillic() -> None:
    # our own: French in Latin-1, declared and undeclared
    french = "Bonjour, où est ma commande ? Merci beaucoup, à bientôt."
    assert decode_bytes(french.encode("latin-1"), "iso-8859-1") == (french, None)
    assert decode_bytes(french.encode("latin-1"), None)[0] == french


def test_broken_utf8_keeps_the_rest_readable() -> None:
    # our own: one truncated multi-byte character in declared UTF-8
    data = RUSSIAN.encode("utf-8")[:-3] + b"\xd0."
    text, defect = decode_bytes(data, "utf-8")
    assert text.startswith("Здравствуйте! Подскажите") and "\ufffd" in text
    assert defect == "charset-replaced"


def test_japanese_and_korean_charsets() -> None:
    # mikel/mail:spec/fixtures/emails/multi_charset/*.eml
    assert "まみむめも" in load("raw_mime/mikel_mail/multi_charset__japanese_iso_2022.eml").subject
    sjis = load("raw_mime/mikel_mail/multi_charset__japanese_shift_jis.eml")
    assert "\ufffd" not in sjis.text and sjis.text.strip()
    korean = load("raw_mime/mikel_mail/multi_charset__ks_c_5601-1987.eml")
    assert "\ufffd" not in korean.text and korean.text.strip()


def test_an_unquoted_boundary_with_equals_is_repaired() -> None:
    # mikel/mail:spec/fixtures/emails/plain_emails/raw_email_bad_time.eml
    mail = load("raw_mime/mikel_mail/plain_emails__raw_email_bad_time.eml")
    assert "boundary-repaired" in mail.defects
    assert "This message has been scanned for viruses" in mail.text


def test_a_utf8_bom_before_the_headers_is_stripped() -> None:
    # jstedfast/MimeKit:UnitTests/TestData/messages/feedback-report.txt
    mail = load("raw_mime/mimekit/messages__feedback-report.txt")
    assert mail.from_addr == "abusedesk@example.com" and "bom-stripped" in mail.defects
    assert mail.report_type == "feedback-report"


def test_an_mbox_from_line_is_skipped() -> None:
    # sisimai/set-of-emails:maildir/not/rb-issue-368-bug.eml ("From MAILER-DAEMON  Sat Oct ...")
    mail = load("bounces_autoreplies/sisimai/not__rb-issue-368-bug.eml")
    assert mail.from_addr == "postmaster@yyyyyy.de" and "mbox-from-line" in mail.defects


# -- HTML ------------------------------------------------------------------------------


def test_sanitize_html_drops_scripts_handlers_and_js_urls() -> None:
    html = (
        '<p onclick="steal()">Hi <b>there</b></p><script>alert(1)</script>'
        '<a href="javascript:alert(2)">x</a><img src="cid:logo" onerror="x()">'
        '<a href="https://acme.test/">site</a><style>p{}</style><iframe src="https://e.vil">'
    )
    clean = sanitize_html(html)
    for bad in ("onclick", "script", "alert", "javascript", "onerror", "iframe", "<style"):
        assert bad not in clean
    assert "<b>there</b>" in clean and 'href="https://acme.test/"' in clean
    assert 'src="cid:logo"' in clean


def test_html_to_text_blocks_links_quotes_and_no_script_text() -> None:
    html = (
        "<html><head><title>T</title><style>.a{color:red}</style></head><body>"
        "<p>Hello,<br>world</p><div>Order <a href='https://shop.test/o/1'>#1</a></div>"
        "<ul><li>one</li><li>two</li></ul><script>var x = 1;</script>"
        "<a href='mailto:bob@example.com'>bob@example.com</a>"
        "<blockquote>old<blockquote>older</blockquote></blockquote><p>Bye&nbsp;now</p>"
        "</body></html>"
    )
    assert html_to_text(html).splitlines() == [
        "Hello,",
        "world",
        "",
        "Order #1 <https://shop.test/o/1>",
        "- one",
        "- two",
        "bob@example.com",
        "",
        "> old",
        ">",
        "> > older",
        "",
        "Bye now",
    ]


def test_html_only_mail_gets_text_from_html() -> None:
    # mailgun/flanker:tests/fixtures/messages/long-links.eml (text/html only)
    mail = load("raw_mime/flanker/long-links.eml")
    assert mail.text_from_html and mail.html is not None
    assert mail.text.startswith("http://www.longurlmaker.com/view/?id=")
    assert "<a " not in mail.text and "href" not in mail.text


def test_alternative_prefers_plain_and_keeps_sanitised_html() -> None:
    # mailgun/talon:tests/fixtures/standard_replies/gmail.eml
    mail = load("talon/standard_replies__gmail.eml")
    assert mail.text.startswith("Hello") and not mail.text_from_html
    assert mail.html is not None and "<blockquote>" in mail.html and "wrote:" in mail.html


# -- attachments ---------------------------------------------------------------------------


def test_attachment_names_rfc2231_and_encoded_words() -> None:
    # mikel/mail:spec/fixtures/emails/multi_charset/japanese_attachment.eml
    mail = load("raw_mime/mikel_mail/multi_charset__japanese_attachment.eml")
    assert [a.file_name for a in mail.attachments] == ["てすと.txt"]
    # our own: RFC 2231 continuations with a charset, and a path in the name
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content("see attached")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="x.pdf")
    raw = msg.as_bytes().replace(
        b'filename="x.pdf"',
        b"filename*0*=UTF-8''%D0%A1%D1%87%D1%91%D1%82%20%E2%84%96;\r\n filename*1*=5.pdf",
    )
    assert parse_mail(raw).attachments[0].file_name == "Счёт №5.pdf"
    sneaky = msg.as_bytes().replace(b'filename="x.pdf"', b'filename="../../etc/passwd"')
    assert parse_mail(sneaky).attachments[0].file_name == "passwd"


def test_inline_image_has_content_id() -> None:
    # our own: an HTML mail with an inline logo
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content("plain")
    msg.add_alternative('<p>hi <img src="cid:logo1"></p>', subtype="html")
    html_part = msg.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(b"\x89PNG....", maintype="image", subtype="png", cid="<logo1>")
    mail = parse_mail(msg.as_bytes())
    (logo,) = mail.attachments
    assert (logo.mime_type, logo.content_id, logo.inline) == ("image/png", "logo1", True)
    assert logo.content == b"\x89PNG...." and logo.size == 8


def test_big_attachment_keeps_its_size_not_its_bytes() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content("photo attached")
    msg.add_attachment(b"\xff" * 5000, maintype="image", subtype="jpeg", filename="p.jpg")
    mail = parse_mail(msg.as_bytes(), max_attachment=4096)
    (photo,) = mail.attachments
    assert (photo.size, photo.content, photo.truncated) == (5000, None, True)
    assert "attachment-truncated" in mail.defects


def test_embedded_message_is_an_attachment_and_a_report_part() -> None:
    # sisimai/set-of-emails:maildir/not/is-not-bounce-02.eml ("original as attachment")
    mail = load("bounces_autoreplies/sisimai/not__is-not-bounce-02.eml")
    assert mail.text.startswith("it shouldn't be considered as bounce")
    assert [a.mime_type for a in mail.attachments] == ["message/rfc822"]
    assert [r.kind for r in mail.reports] == ["message/rfc822"]


# -- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"just some words", b"\x00\x01\x02\xff"])
def test_bytes_that_are_not_a_mail_raise_mail_error(raw: bytes) -> None:
    with pytest.raises(MailError):
        parse_mail(raw)


def _nested(depth: int) -> bytes:
    head = (
        b"From: a@example.com\r\nSubject: nest\r\n"
        b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    )
    body = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(depth)
    )
    body += b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % depth
    body += b"".join(b"--b%d--\r\n" % i for i in range(depth, -1, -1))
    return head + body


@pytest.mark.timeout(60)
def test_a_thousand_nested_multiparts_stop_at_the_limit() -> None:
    # our own: 1,000 nested multipart/mixed (the stdlib alone recurses into
    # RecursionError after seconds)
    mail = parse_mail(_nested(1000))
    assert "too-many-parts" in mail.defects and mail.subject == "nest"
    shallow = parse_mail(_nested(20))
    assert shallow.text == "deep" and "too-many-parts" not in shallow.defects


def test_many_flat_parts_stop_at_max_parts() -> None:
    # our own: 500 attachments in one multipart/mixed
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content("many files")
    for i in range(500):
        msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename=f"{i}")
    mail = parse_mail(msg.as_bytes(), max_parts=50)
    assert len(mail.attachments) < 50 and "too-many-parts" in mail.defects


def test_a_zip_bomb_is_only_sized_never_unpacked() -> None:
    # our own: 50 MB of zeros deflated to ~50 KB
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * 50_000_000)
    bomb = buffer.getvalue()
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content("see archive")
    msg.add_attachment(bomb, maintype="application", subtype="zip", filename="bomb.zip")
    (archive_part,) = parse_mail(msg.as_bytes()).attachments
    assert archive_part.size == len(bomb) < 1_000_000
    assert archive_part.content == bomb and archive_part.mime_type == "application/zip"


@pytest.mark.timeout(120)
def test_a_25_mb_mail_parses() -> None:
    # our own: a 25 MB mail, its 18 MB attachment over the 10 MB cap
    msg = EmailMessage()
    msg["From"] = "Иван <ivan@example.ru>"
    msg["Subject"] = "большое вложение"
    msg.set_content("Смотрите вложение")
    msg.add_attachment(
        bytes(range(256)) * 70_000, maintype="video", subtype="mp4", filename="v.mp4"
    )
    raw = msg.as_bytes()
    assert len(raw) > 24_000_000
    mail = parse_mail(raw)
    assert mail.text.strip() == "Смотрите вложение" and mail.language == "ru"
    (video,) = mail.attachments
    assert (video.size, video.content, video.truncated) == (17_920_000, None, True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_random_bytes_after_a_header_never_raise(body: bytes) -> None:
    # our own: fuzzed bodies and broken continuations after a real header line
    mail = parse_mail(
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=x\r\n" + body
    )
    assert isinstance(mail.text, str)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_are_a_mail_or_a_mail_error(raw: bytes) -> None:
    try:
        mail = parse_mail(raw)
    except MailError:
        return
    assert isinstance(mail.subject, str)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_any_header_text_decodes_to_one_line(value: str) -> None:
    decoded = decode_header_value(value)
    assert "\n" not in decoded and "\r" not in decoded
    decoded.encode("utf-8")


def test_deeply_nested_html_is_read_up_to_its_cap() -> None:
    """Our own hostile mail: 1 MB of nested <blockquote> (html5ever and the
    text builder are quadratic in depth): the HTML read is cut at the cap,
    the mail still parses, its text ends early."""
    html = "<blockquote>" * 40_000 + "deep" + "</blockquote>" * 40_000 + "<p>tail</p>"
    raw = (
        "From: a@example.org\r\nTo: s@acme.test\r\nSubject: s\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + html
    ).encode()
    mail = parse_mail(raw)
    assert mail.text_from_html and "tail" not in mail.text
    assert mail.html is not None and "tail" not in mail.html  # the sanitiser read the cut too
