"""``bench.email``'s crm phase, the parts that need no stack: the customer's
thread (each mail answers the one before, as the bridge's own parser reads
it) and the figures of a window of sandbox requests (per mail, per route, a
Bitrix24 batch's commands)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import email as bench_email
from channel_adapters.email import mime


def test_the_thread_names_the_previous_mail_and_carries_the_pdf() -> None:
    thread = bench_email._Thread()
    first = mime.parse_mail(thread.mail("Where is my order?"))
    second = mime.parse_mail(thread.mail("Any news?"))
    third = mime.parse_mail(thread.mail("The receipt.", pdf="receipt-1.pdf"))
    assert first.subject == "Order 42" and not first.in_reply_to and not first.references
    assert second.subject == "Re: Order 42"
    assert second.in_reply_to == second.references == (thread.ids[0].strip("<>"),)
    assert third.in_reply_to == (thread.ids[1].strip("<>"),)
    assert len(set(thread.ids)) == 3
    [pdf] = [a for a in third.attachments if a.file_name == "receipt-1.pdf"]
    assert pdf.mime_type == "application/pdf" and pdf.content == bench_email.PDF


def _calls(monkeypatch: pytest.MonkeyPatch, crm: str, items: list[list[Any]]) -> Any:
    import bench.report

    def stats(url: str, since: float | None = None, **_: Any) -> dict[str, Any]:
        return {"requests": [r for r in items if since is None or r[0] >= since]}

    monkeypatch.setattr(bench.report, "sandbox_stats", stats)
    return bench_email._Calls(type("S", (), {"sandbox_url": "http://sandbox"})(), crm)


def test_a_window_counts_each_mails_requests_and_its_routes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = [
        [9.0, "POST", "/before", 200],  # before the window
        [10.1, "POST", "/messages", 201],
        [11.2, "POST", "/messages", 201],
        [11.3, "POST", "/oauth", 200],
        [12.5, "POST", "/messages", 429],
        [13.5, "POST", "/after", 200],  # after the window
    ]
    w = _calls(monkeypatch, "hubspot", items).window(10.0, 13.0, 3, [10.0, 11.0, 12.0])
    assert w["requests"] == 4 and w["per_email"] == 1.33
    assert w["by_route"] == {"POST /messages": 3, "POST /oauth": 1}
    assert w["by_status"] == {"201": 2, "200": 1, "429": 1}
    assert w["requests_per_mail"] == {"1": 2, "2": 1}
    assert "batch_commands" not in w


def test_a_bitrix24_window_names_requests_by_method_and_counts_batch_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = [
        [10.1, "POST", "batch", 200, ["imconnector.send.messages", "crm.timeline.comment.add"]],
        [11.1, "POST", "batch", 200, ["imconnector.send.messages", "crm.timeline.comment.add"]],
        [11.2, "POST", "crm.lead.get", 200, None],
    ]
    w = _calls(monkeypatch, "bitrix24", items).window(10.0, 12.0, 2, [10.0, 11.0])
    assert w["by_route"] == {"batch": 2, "crm.lead.get": 1}
    assert w["batch_commands"] == {"imconnector.send.messages": 2, "crm.timeline.comment.add": 2}
    assert w["per_email"] == 1.5 and w["methods_per_email"] == 2.5
