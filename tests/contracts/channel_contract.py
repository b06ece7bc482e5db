"""``ChannelAdapterContract``: the duties every channel adapter's tests check.

Subclass it in ``tests/contracts/test_<channel>_contract.py`` (the class name
must start with ``Test``) and provide:

``adapter``             fixture: the adapter under test, wired to the vendor
                        (a sandbox over real HTTP, or a mock)
``vendor``              fixture: a :class:`Vendor` to read what the vendor received
``signed_request``      fixture: ``payload -> WebhookRequest`` exactly as the
                        vendor would deliver it (right secret / signature)
``forged_request``      fixture: ``payload -> WebhookRequest`` with a wrong one
``unsigned_request``    fixture (optional): ``payload -> WebhookRequest`` with no
                        secret / signature; the default drops every header, so
                        channels that sign inside the body (VK) override it
``sample_payloads()``   classmethod: ``[Sample(label, payload), ...]``, real
                        payloads labelled with their source
``junk_bodies``         class attribute (optional): bodies that are not the
                        vendor's shape; a generic JSON-ish list by default
``splits_long_text``    class attribute (optional): False for a channel without
                        a per-message limit (a long text arrives whole)
``hold``                fixture, for a channel that can be pulled
                        (``ReceiveMode.POLLING`` in the adapter's ``modes``):
                        ``payload -> None``, the vendor keeps ``payload`` for
                        the account's poller (switching the vendor from
                        pushing to being pulled where it must; undone after
                        the test)

The duties, from ``channel_adapters.base``: ``verify`` rejects forged and
missing secrets and raises nothing but ``SignatureError``; ``parse`` of every
sample is deterministic and every message names its id, thread, user and
time; ``parse`` of junk raises ``PayloadError`` and nothing else; ``send``
returns one id per message the vendor received, in order, and flood control
surfaces as ``RetryableError`` with ``retry_after``. Where the channel can
be pulled, ``poll`` returns what the vendor holds as the deliveries the
webhook's ``edge`` would have journaled (the same keys, the same parse), and
returns them again until its cursor is used (a crash before the cursor is
stored fetches them again: the journal's key makes that a no-op).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import pytest

from bridge.errors import AmbiguousError, PayloadError, RetryableError, SignatureError
from bridge.model import (
    IgnoredEvent,
    InboundMessage,
    OutboundMessage,
    PollResult,
    RawDelivery,
    ReceiveMode,
    ThreadMigrated,
    WebhookRequest,
)

__all__ = ["ChannelAdapterContract", "PulledChannelContract", "Sample", "SentPart", "Vendor"]

RequestFactory = Callable[[Any], WebhookRequest]


@dataclass(frozen=True)
class Sample:
    """A webhook payload and where it came from (a corpus file, a sandbox)."""

    label: str
    payload: Any  # JSON-serialisable object, or the raw body bytes


@dataclass(frozen=True)
class SentPart:
    """One message the vendor received from the adapter."""

    external_id: str
    text: str | None


class Vendor(Protocol):
    """The test's window on the far side."""

    def thread(self) -> str:
        """A thread the vendor accepts sends to (a customer who wrote first)."""

    def sent(self, thread: str) -> list[SentPart]:
        """What the vendor received for ``thread``, in order."""

    def rate_limit(self, thread: str) -> None:
        """Make the vendor's flood control refuse the next send to ``thread``."""


#: Header values no client should choke on.
JUNK_HEADER_VALUES: tuple[Any, ...] = (
    "",
    "x" * 10_000,
    "sécret ключ 🔑",
    "\ud800",
    "\x00\r\n",
    b"\xff\xfe",
    None,
)

#: Generic "not the vendor's shape" bodies for JSON webhooks.
JSON_JUNK: tuple[bytes, ...] = (
    b"",
    b"not json",
    b"\xff\xfe\x00\x00",
    b"[]",
    b"null",
    b"42",
    b'"a string"',
    b"{}",
    b'{"unexpected": true}',
    b"[" * 50_000 + b"]" * 50_000,
    b"\x00" * 64,
)


class ChannelAdapterContract:
    """Shared tests; see the module docstring for what a subclass provides."""

    junk_bodies: ClassVar[Sequence[bytes]] = JSON_JUNK
    #: a text longer than one message can carry (the contract checks the split)
    long_text_units: ClassVar[int] = 10_000
    #: False for a channel with no per-message limit (the custom channel's
    #: callback): the long text must then arrive whole, as one message
    splits_long_text: ClassVar[bool] = True

    @classmethod
    def sample_payloads(cls) -> list[Sample]:
        raise NotImplementedError

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "sample" in metafunc.fixturenames:
            samples = self.sample_payloads()
            assert samples, "a contract needs at least one sample payload"
            metafunc.parametrize("sample", samples, ids=[s.label for s in samples])
        if "junk" in metafunc.fixturenames:
            metafunc.parametrize(
                "junk", self.junk_bodies, ids=[repr(j[:16]) for j in self.junk_bodies]
            )

    @pytest.fixture
    def unsigned_request(self, signed_request: RequestFactory) -> RequestFactory:
        def make(payload: Any) -> WebhookRequest:
            return dataclasses.replace(signed_request(payload), headers={})

        return make

    # -- verify -------------------------------------------------------------

    def test_verify_accepts_the_vendors_request(self, adapter, signed_request, sample):
        adapter.verify(signed_request(sample.payload))

    def test_verify_rejects_a_forged_request(self, adapter, forged_request, sample):
        with pytest.raises(SignatureError):
            adapter.verify(forged_request(sample.payload))

    def test_verify_rejects_a_request_without_secret(self, adapter, unsigned_request, sample):
        with pytest.raises(SignatureError):
            adapter.verify(unsigned_request(sample.payload))

    def test_verify_raises_nothing_but_signature_errors(self, adapter, signed_request):
        good = signed_request(self.sample_payloads()[0].payload)
        variants = [dataclasses.replace(good, body=junk) for junk in self.junk_bodies]
        for value in JUNK_HEADER_VALUES:
            variants.append(
                dataclasses.replace(good, headers={k: value for k in good.headers} or {"x": value})
            )
        for variant in variants:
            try:
                adapter.verify(variant)
            except SignatureError:
                pass

    # -- the edge: what the webhook journals -----------------------------------

    def test_edge_keys_every_delivery_and_the_journal_round_trip_parses_the_same(
        self, adapter, signed_request, sample
    ):
        """The webhook journals what ``edge`` returns; the worker parses each
        row from its stored body and kept headers. Together they must make
        the events ``parse`` makes of the live request."""
        request = signed_request(sample.payload)
        adapter.verify(request)
        deliveries = adapter.edge(request)
        assert deliveries, "a genuine delivery is journaled"
        assert adapter.edge(request) == deliveries, "the same request, the same keys"
        keys = [d.key for d in deliveries]
        assert all(isinstance(k, str) and k for k in keys) and len(set(keys)) == len(keys)
        replayed = [
            event for d in deliveries for event in adapter.parse(d.request(request.received_at))
        ]
        assert replayed == adapter.parse(request)

    def test_edge_of_junk_raises_payload_error_only(self, adapter, signed_request, junk):
        """What the edge refuses is a 400; it never raises anything else. A
        junk body it lets through must then be the parser's to reject."""
        good = signed_request(self.sample_payloads()[0].payload)
        try:
            deliveries = adapter.edge(dataclasses.replace(good, body=junk))
        except PayloadError:
            return
        for delivery in deliveries:
            try:
                adapter.parse(delivery.request(good.received_at))
            except PayloadError:
                pass

    # -- parse --------------------------------------------------------------

    def test_parse_is_deterministic_and_complete(self, adapter, signed_request, sample):
        request = signed_request(sample.payload)
        adapter.verify(request)
        events = adapter.parse(request)
        assert events, "parse must return at least one event (or raise PayloadError)"
        assert adapter.parse(request) == events
        for event in events:
            assert isinstance(event, InboundMessage | ThreadMigrated | IgnoredEvent)
            assert event.channel_kind == adapter.kind
            assert isinstance(event.external_id, str) and event.external_id
            assert event.raw, "events keep the raw payload"
            if isinstance(event, InboundMessage):
                assert isinstance(event.external_thread_id, str) and event.external_thread_id
                assert isinstance(event.external_user_id, str) and event.external_user_id
                assert isinstance(event.sent_at, dt.datetime)
                assert event.sent_at.utcoffset() is not None, "sent_at must be tz-aware"

    def test_parse_of_junk_raises_payload_error_only(self, adapter, signed_request, junk):
        good = signed_request(self.sample_payloads()[0].payload)
        with pytest.raises(PayloadError):
            adapter.parse(dataclasses.replace(good, body=junk))

    def test_parse_of_an_oversized_body_raises_payload_error(self, adapter, signed_request):
        good = signed_request(self.sample_payloads()[0].payload)
        with pytest.raises(PayloadError):
            adapter.parse(dataclasses.replace(good, body=b" " * (adapter.max_body + 1)))

    # -- how the channel reaches the bridge ------------------------------------

    def test_the_receive_modes_are_declared_and_kept(self, adapter):
        """A channel says whether it is pushed (webhook), pulled (polling)
        or both; one never pulled refuses ``poll``, and one that can be
        pulled runs the pulled-channel duties (``PulledChannelContract``)."""
        assert adapter.modes and all(isinstance(m, ReceiveMode) for m in adapter.modes)
        if ReceiveMode.POLLING in adapter.modes:
            assert isinstance(self, PulledChannelContract), (
                f"{adapter.kind} can be pulled: its contract also subclasses PulledChannelContract"
            )
        else:
            assert type(adapter).receive_mode({"mode": "polling"}) == ReceiveMode.WEBHOOK
            with pytest.raises(NotImplementedError):
                adapter.poll(None, 0)

    # -- send ---------------------------------------------------------------

    def test_send_returns_the_id_the_vendor_saw(self, adapter, vendor):
        thread = vendor.thread()
        before = vendor.sent(thread)
        result = adapter.send(_outbound(thread, "Hello from the contract ✓"))
        new = vendor.sent(thread)[len(before) :]
        assert [p.text for p in new] == ["Hello from the contract ✓"]
        assert result.external_ids == tuple(p.external_id for p in new)

    def test_long_text_goes_out_as_ordered_parts(self, adapter, vendor):
        thread = vendor.thread()
        before = vendor.sent(thread)
        text = _long_text(self.long_text_units)
        result = adapter.send(_outbound(thread, text))
        new = vendor.sent(thread)[len(before) :]
        if not self.splits_long_text:
            assert [p.text for p in new] == [text], "the text must arrive whole, unchanged"
        else:
            assert len(new) >= 2, "the text should not fit one message"
        assert result.external_ids == tuple(p.external_id for p in new)
        assert len(set(result.external_ids)) == len(new)
        assert _squash("".join(p.text or "" for p in new)) == _squash(text)

    def test_flood_control_is_retryable_with_retry_after(self, adapter, vendor):
        thread = vendor.thread()
        vendor.rate_limit(thread)
        before = vendor.sent(thread)
        with pytest.raises(RetryableError) as info:
            adapter.send(_outbound(thread, "refused by flood control"))
        assert not isinstance(info.value, AmbiguousError), "a refused send is not ambiguous"
        assert info.value.retry_after is not None and info.value.retry_after > 0
        assert vendor.sent(thread) == before


class PulledChannelContract:
    """The duties of a channel that can be pulled (``ReceiveMode.POLLING``
    in its ``modes``): a contract subclasses it beside
    :class:`ChannelAdapterContract` and provides ``hold``."""

    @pytest.fixture
    def hold(self, adapter) -> Callable[[Any], None]:
        raise NotImplementedError(
            "a channel that can be pulled provides a `hold` fixture: payload -> None, "
            "the vendor keeps the payload for the account's poller"
        )

    def test_poll_fetches_what_the_webhook_would_have_journaled(
        self, adapter, signed_request, hold, sample
    ):
        """The same event, pushed or pulled, is the same journal row: ``poll``
        keys it as ``edge`` does and its parse is the webhook's parse."""
        request = signed_request(sample.payload)
        pushed = adapter.edge(request)
        expected = [e for d in pushed for e in adapter.parse(d.request(request.received_at))]
        hold(sample.payload)
        fetched = _poll_for(adapter, None, {d.key for d in pushed})
        assert [d.key for d in fetched.deliveries] == [d.key for d in pushed]
        assert all(isinstance(d, RawDelivery) and d.body for d in fetched.deliveries)
        pulled = [
            e for d in fetched.deliveries for e in adapter.parse(d.request(request.received_at))
        ]
        assert pulled == expected
        assert fetched.cursor is not None, "a poll that fetched something moves the cursor"

    def test_a_poll_is_repeated_until_its_cursor_is_used(self, adapter, hold):
        """What the core relies on when it stores the cursor only after the
        journal commit: the old cursor fetches the same deliveries again; the
        new one does not fetch them any more."""
        first_payload = self.sample_payloads()[0].payload
        hold(first_payload)
        first = _poll_for(adapter, None, None)
        keys = [d.key for d in first.deliveries]
        assert keys, "the held payload is fetched"
        again = adapter.poll(None, 1)
        assert [d.key for d in again.deliveries] == keys
        after = adapter.poll(first.cursor, 0)
        assert not {d.key for d in after.deliveries} & set(keys)


def _poll_for(adapter: Any, cursor: str | None, keys: set[str] | None) -> PollResult:
    """Poll until something (``keys``, when given) came back; a long poll
    answers as soon as the vendor holds anything, so this is one call."""
    for _ in range(5):
        result: PollResult = adapter.poll(cursor, 2)
        got = {d.key for d in result.deliveries}
        if got and (keys is None or keys <= got):
            return result
    raise AssertionError(f"the vendor never handed the held payload to poll(): {keys}")


def _outbound(thread: str, text: str) -> OutboundMessage:
    return OutboundMessage(bridge_id="contract-1", external_thread_id=thread, text=text)


def _long_text(units: int) -> str:
    """Paragraphs of words with Cyrillic and emoji (surrogate pairs in UTF-16)."""
    words = ["Привет", "world", "😀", "🇷🇺", "naïve", "日本語", "ok"]
    out, i = [], 0
    while sum(len(w) + 1 for w in out) < units:
        out.append(words[i % len(words)] + ("\n\n" if i % 97 == 96 else ""))
        i += 1
    return " ".join(out)


def _squash(text: str) -> str:
    return "".join(text.split())
