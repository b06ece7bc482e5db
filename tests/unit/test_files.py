"""Files the bridge keeps for the CRM (bridge/files.py): an attachment's
bytes that came inside the delivery are stored with the message, reach the
CRM entry as a link, and are served at it safely; on real SQLite and
PostgreSQL with the in-memory CRM."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, update

from bridge import create_app, files
from bridge.model import Attachment, InboundMessage, MessageKind, SenderProfile
from bridge.pipeline.inbound import AccountRef, accept, run_inbound
from bridge.tables import Conversation, Message, StoredFile
from crm_adapters.attachments import fetchable, label
from tests.support import fakes

MAPPING = """
crm: fake
language: en
channels:
  telegram:
    object: none
    timeline: note
"""
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
HTML = b"<html><script>alert(document.cookie)</script></html>"


@pytest.fixture
def account(runtime, monkeypatch) -> AccountRef:  # type: ignore[no-untyped-def]
    tenant_id, account_id = fakes.telegram_tenant(runtime, MAPPING, monkeypatch)
    return AccountRef(account_id, tenant_id, "telegram")


def message(n: int, *attachments: Attachment) -> InboundMessage:
    return InboundMessage(
        channel_kind="telegram",
        external_id=f"mid:{n}",
        external_user_id="anna@example.org",
        external_thread_id="thread-1",
        kind=MessageKind.DOCUMENT,
        sent_at=T0,
        text=f"mail {n}",
        attachments=attachments,
        profile=SenderProfile(display_name="Anna"),
    )


def doc(name: str, content: bytes, mime: str = "application/pdf") -> Attachment:
    return Attachment(MessageKind.DOCUMENT, mime_type=mime, file_name=name, content=content)


def synced(runtime) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    with runtime.transaction() as s:
        ids = list(s.scalars(select(Conversation.id)))
    for conversation_id in ids:
        run_inbound(runtime, conversation_id)
    return fakes.STATE.entries


def path_of(url: str | None) -> str:
    assert url
    return urlsplit(url).path


def test_a_file_in_the_delivery_reaches_the_crm_as_a_link_that_serves_it(runtime, account):  # type: ignore[no-untyped-def]
    original = doc("original.eml", b"From: anna@example.org\r\n\r\nhi", "message/rfc822")
    accept(runtime, account, [message(1, doc("Счёт №5.pdf", PDF), original)])
    with runtime.transaction() as s:
        payload = s.scalar(select(Message.payload))
        stored = s.scalars(select(StoredFile)).all()
    # the bytes are in the files table, never in the message's payload
    assert [f.name for f in stored] == ["Счёт №5.pdf", "original.eml"]
    assert all("content" not in a for a in payload["attachments"])
    assert [a["file_ref"] for a in payload["attachments"]] == [f"file:{f.uid}" for f in stored]
    [entry] = synced(runtime)
    pdf, eml = entry["attachments"]
    assert pdf.url.startswith(runtime.settings.public_url + "/files/")
    # the label names the file and gives its link; the original is linked, not sent as a file
    assert label(pdf) == f"[document: Счёт №5.pdf] {pdf.url}"
    entry_view = dataclasses.replace(fakes_entry(entry), attachments=(pdf, eml))
    assert fetchable(entry_view) == [pdf]
    client = create_app(runtime=runtime).test_client()
    got = client.get(path_of(pdf.url))
    assert got.status_code == 200 and got.data == PDF
    assert got.headers["Content-Type"] == "application/pdf"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in got.headers["Content-Security-Policy"]
    assert "filename*=UTF-8''%D0%A1%D1%87%D1%91%D1%82" in got.headers["Content-Disposition"]
    assert client.get(path_of(eml.url)).data.startswith(b"From: anna@example.org")


def fakes_entry(entry: dict[str, Any]) -> Any:
    """A TimelineEntry-shaped view of a fake CRM record (attachments only)."""

    @dataclasses.dataclass(frozen=True)
    class View:
        attachments: tuple[Attachment, ...]

    return View(tuple(entry["attachments"]))


def test_a_wrong_token_or_unknown_file_is_the_same_json_404(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [message(1, doc("a.pdf", PDF))])
    [entry] = synced(runtime)
    url = path_of(entry["attachments"][0].url)
    _, _, uid, token, name = url.split("/")
    client = create_app(runtime=runtime).test_client()
    other = {"0": "1"}.get
    for bad in (
        f"/files/{uid}/{token[:-1]}{other(token[-1], '0')}/{name}",
        f"/files/{uid[:-1]}{other(uid[-1], '0')}/{token}/{name}",
        f"/files/{uid}//{name}",
    ):
        got = client.get(bad)
        assert got.status_code == 404, bad
        assert got.is_json and got.json["error"] == "not_found", bad
    # the name in the link is only a label: the token is what opens it
    assert client.get(f"/files/{uid}/{token}/other.pdf").data == PDF


def test_html_and_svg_are_downloads_of_an_opaque_type(runtime, account):  # type: ignore[no-untyped-def]
    accept(
        runtime,
        account,
        [
            message(
                1,
                doc("x.html", HTML, "text/html"),
                doc("y.svg", b"<svg onload=1/>", "image/svg+xml"),
            )
        ],
    )
    [entry] = synced(runtime)
    client = create_app(runtime=runtime).test_client()
    for attachment in entry["attachments"]:
        got = client.get(path_of(attachment.url))
        assert got.headers["Content-Type"] == "application/octet-stream"
        assert got.headers["Content-Disposition"].startswith("attachment;")
        assert got.headers["X-Content-Type-Options"] == "nosniff"


def test_a_redelivery_stores_no_second_file(runtime, account):  # type: ignore[no-untyped-def]
    for _ in range(3):
        accept(runtime, account, [message(1, doc("a.pdf", PDF))])
    with runtime.transaction() as s:
        assert s.scalar(select(func.count()).select_from(StoredFile)) == 1


def test_names_are_made_safe_for_a_path_and_a_header(runtime, account):  # type: ignore[no-untyped-def]
    long = "x" * 300 + ".pdf"
    accept(
        runtime,
        account,
        [message(1, doc('../../etc/pa"ss\r\nwd', PDF), doc(long, PDF), doc("", PDF))],
    )
    with runtime.transaction() as s:
        names = list(s.scalars(select(StoredFile.name).order_by(StoredFile.id)))
    assert names[0] == "passwd"
    assert len(names[1]) <= 200 and names[1].endswith(".pdf")
    assert names[2] == "file"


def test_retention_drops_the_bytes_and_the_link_says_gone(runtime, account):  # type: ignore[no-untyped-def]
    accept(runtime, account, [message(1, doc("old.pdf", PDF)), message(2, doc("new.pdf", PDF))])
    [old, new] = synced(runtime)
    with runtime.transaction() as s:
        s.execute(
            update(StoredFile)
            .where(StoredFile.name == "old.pdf")
            .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=181))
        )
    assert files.drop_old(runtime) == 1
    assert files.drop_old(runtime) == 0
    client = create_app(runtime=runtime).test_client()
    gone = client.get(path_of(old["attachments"][0].url))
    assert gone.status_code == 410 and gone.json["error"] == "gone"
    assert client.get(path_of(new["attachments"][0].url)).data == PDF


def test_a_channel_url_is_never_shown_only_ours() -> None:
    # a Telegram file URL carries the bot token: the label never shows it
    theirs = Attachment(
        MessageKind.PHOTO, file_ref="AgAD", url="https://api.telegram.org/file/bot1:SECRET/x.jpg"
    )
    ours = Attachment(MessageKind.PHOTO, file_ref="file:u", url="https://b/files/u/t/x.jpg")
    assert label(theirs) == "[photo]"
    assert label(ours) == "[photo] https://b/files/u/t/x.jpg"
