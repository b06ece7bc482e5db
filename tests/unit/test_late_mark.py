"""A message re-parsed from the ingest journal long after it arrived
(``bridge reparse`` after a parser fix) is written with its own time and
says it came late, in each CRM's words (English and Russian)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest

from bridge.model import CrmRef, MessageKind, TimelineEntry
from crm_adapters.amocrm.timeline import message_text
from crm_adapters.bitrix24.openlines import WORDS as B24_WORDS
from crm_adapters.bitrix24.openlines import entry_text
from crm_adapters.bitrix24.timeline import render_comment
from crm_adapters.hubspot.timeline import plain_text, render_body

SENT = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.UTC)

RENDERERS: dict[str, Callable[[TimelineEntry], str]] = {
    "hubspot note": render_body,
    "hubspot inbox": plain_text,
    "amocrm": message_text,
    "bitrix24 open lines": lambda e: entry_text(e, words=B24_WORDS[e.language]),
    "bitrix24 comment": lambda e: render_comment(e, language=e.language),
}


def entry(**kw: object) -> TimelineEntry:
    base = TimelineEntry(
        bridge_id="b-1",
        conversation_uid="c-1",
        channel_kind="telegram",
        channel_account="1",
        direction="in",
        kind=MessageKind.TEXT,
        text="order #12",
        occurred_at=SENT,
        contact=CrmRef("contact", "1"),
        channel_title="Telegram",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("crm", sorted(RENDERERS))
@pytest.mark.parametrize(
    "language,words", [("en", "delivered late"), ("ru", "доставлено с опозданием")]
)
def test_a_late_message_says_so_and_an_ordinary_one_does_not(
    crm: str, language: str, words: str
) -> None:
    render = RENDERERS[crm]
    late = render(entry(late=True, language=language))
    on_time = render(entry(language=language))
    assert words in late and "order #12" in late
    assert words not in on_time and "order #12" in on_time
    assert late.replace(f" ({words})", "").replace(f" <em>({words})</em>", "") == on_time


def test_the_comment_keeps_the_messages_own_time() -> None:
    comment = render_comment(entry(late=True), language="en", timezone="UTC")
    assert "2026-11-30 09:15" in comment
