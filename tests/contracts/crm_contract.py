"""The shared contract suite every CRM adapter runs against its sandbox.

Subclass :class:`CrmAdapterContract` (as ``Test<Crm>Contract``) and provide
these fixtures; everything CRM-specific stays in the subclass:

``make_adapter(settings: Mapping) -> CrmAdapter``
    An adapter talking to the vendor stand-in over real HTTP, with
    ``settings`` merged over the tenant's base settings. Its
    ``account.webhook_url`` must be ``receiver.url`` (the base class's
    ``receiver`` fixture) so the vendor's webhooks reach the test.
``vendor`` (:class:`VendorHandle`)
    Reads the vendor's state and drives it the way a rep would.
``channel_links`` (``Sequence[ChannelLink]``)
    The tenant's channel accounts, passed to ``setup()``.
``make_entry(bridge_id, *, contact, entity, sequence, occurred_at, text, maybe_written)``
    A :class:`TimelineEntry` as the sync job would build it for this CRM
    (channel kind, channel account, sender identifier, the typed fields the
    mapping decides: ``timeline``, ``inbox``, ``channel_title``...).

Optional overrides: ``mapping_properties`` (the mapping's custom properties
for ``setup()``), ``entity_defaults`` (pipeline / stage for ``EntityDraft``)
``forgeries(request)`` (variants of a genuine reply webhook the adapter must
refuse: by default tampered/forged/missing signatures; an unsigned hook, e.g.
amoCRM's account webhooks whose only secret is the URL, returns what it can
check instead) and the class attribute ``reply_names_recipient`` (False when
the CRM's reply names the entity, not the customer's channel id).

The suite checks the duties in ``crm_adapters/base.py``: setup is
idempotent, contacts are found by identity > phone > e-mail, an entity is
found again by its conversation uid, the batch hooks answer every key and
find again what they made (a full ``batch_size`` included), entries are
written exactly once and
keep their time and sequence, people see no machine marker in them, a rep's
reply comes back signed and parses to one REPLY, forged requests are
refused, delivery reports show up, a note on a contact is written once per
key, ``merge_contacts`` either merges (``merges_contacts``: the merged
contact is gone, a retry is True) or leaves both contacts as they were, and
a contact's field reads back for the routing rules (an unknown name left out).

:func:`reveal_markers` reads the bridge's hidden marker (amoCRM, Bitrix24)
independently of the adapters' code, for the vendor handles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

import pytest
from werkzeug.wrappers import Request, Response

from bridge.errors import RetryableError, SignatureError
from bridge.model import (
    ChannelLink,
    ContactDraft,
    ContactLookup,
    CrmEventKind,
    CrmRef,
    DeliveryReport,
    DeliveryStatus,
    EntityDraft,
    SenderProfile,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)
from crm_adapters.base import CrmAdapter
from tests.support.fakes import LocalBucket
from tests.support.fakes import MemoryCredentials as Credentials
from tests.support.servers import serve_wsgi

__all__ = [
    "CrmAdapterContract",
    "Credentials",
    "LocalBucket",
    "Receiver",
    "VendorEntry",
    "VendorHandle",
    "reveal_markers",
    "what_people_see",
]

T0 = dt.datetime(2025, 3, 1, 9, 15, 30, 250000, tzinfo=dt.UTC)

#: the bridge's hidden marker: U+2060, then per character of "<hash>:<seq>:<ms>"
#: three base-3 digits (U+200B = 0, U+200C = 1, U+200D = 2), then U+2060
_HIDDEN_MARKER = re.compile("\u2060([\u200b\u200c\u200d]+)\u2060")
_SYMBOLS = "0123456789abcdef:-"
_TRITS = str.maketrans({"\u200b": "0", "\u200c": "1", "\u200d": "2"})


def reveal_markers(text: str) -> str:
    """``text`` with each hidden bridge marker shown as ``[bridge:…]``."""

    def shown(match: re.Match[str]) -> str:
        trits = match.group(1).translate(_TRITS)
        codes = [int(trits[i : i + 3], 3) for i in range(0, len(trits), 3)]
        if len(trits) % 3 or max(codes) >= len(_SYMBOLS):
            return match.group(0)
        return "[bridge:" + "".join(_SYMBOLS[c] for c in codes) + "]"

    return _HIDDEN_MARKER.sub(shown, text)


def what_people_see(text: str) -> str:
    """``text`` without format characters (Unicode category Cf: the
    zero-width ones), as a rep reads it."""
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


@dataclass(frozen=True)
class VendorEntry:
    """A timeline record as the vendor stores it, normalised by the handle."""

    bridge_id: str
    occurred_at: dt.datetime
    sequence: int | None
    text: str


class VendorHandle(Protocol):
    """What the suite needs from a vendor stand-in (implemented per CRM)."""

    def seed_contact(self, *, name: str, phone: str | None = None, email: str | None = None) -> str:
        """Create a contact the way a rep would (free-form phone); its id."""

    def timeline(self, bridge_ids: Iterable[str]) -> list[VendorEntry]:
        """Every timeline record carrying one of ``bridge_ids`` (duplicates
        included: the suite counts them)."""

    def setup_fingerprint(self) -> Hashable:
        """A summary of what ``setup()`` created (properties, channels,
        channel accounts...), equal before and after a second setup."""

    def fire_reply(self, contact: CrmRef, text: str) -> None:
        """A rep replies to ``contact`` in the CRM: the vendor sends its
        (signed) webhook to the channel's webhook URL."""

    def delivery_status(self, crm_message_id: str) -> str | None:
        """The status the CRM shows for a reply: ``sent``, ``read``,
        ``failed`` (lower-case), or ``None``."""

    def contact_notes(self, contact: CrmRef) -> list[str]:
        """The texts of the notes / comments on ``contact``'s own timeline,
        as stored (markers included)."""

    def contact_exists(self, contact_id: str) -> bool:
        """The contact is a live record of its own (not deleted, not
        merged into another)."""

    def entity_field(self, entity: CrmRef, name: str, settings: Mapping[str, Any]) -> Any:
        """The deal/lead/ticket's value for the mapping's property ``name``,
        and (``name`` None) its owner's id."""

    def contact_field(self, contact_id: str, name: str, settings: Mapping[str, Any]) -> Any:
        """The value the CRM shows in the contact's field for the mapping's
        property ``name`` (the field ``setup()`` made, per ``settings``)."""


class Receiver:
    """A tiny HTTP endpoint that records every request as the bridge's
    webhook view would hand it to an adapter."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[WebhookRequest] = []
        self._cond = threading.Condition()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        captured = WebhookRequest(
            method=request.method,
            url=request.url,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.get_data(),
            query=dict(request.args),
        )
        with self._cond:
            self.requests.append(captured)
            self._cond.notify_all()
        return Response('{"ok": true}', status=200, mimetype="application/json")(
            environ, start_response
        )

    def wait_for(self, count: int, timeout: float = 10.0) -> list[WebhookRequest]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} webhook request(s), got {len(self.requests)}"
                    )
                self._cond.wait(left)
            return list(self.requests)


def _ms(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class CrmAdapterContract:
    """Duties every CRM adapter keeps (see ``crm_adapters/base.py``)."""

    #: the CRM refuses a second contact with the same e-mail
    #: the reply webhook is signed (False: unsigned, the URL key is the secret)
    #: a reply names the customer's channel id (``CrmEvent.recipient``)
    reply_names_recipient: ClassVar[bool] = True
    #: ``merge_contacts`` merges in this CRM (False: the core links the two
    #: contacts with a note on each, ``note_contact``)
    merges_contacts: ClassVar[bool] = False

    # -- fixtures the base provides ------------------------------------

    @pytest.fixture
    def receiver(self) -> Iterator[Receiver]:
        receiver = Receiver()
        with serve_wsgi(receiver) as server:
            receiver.url = f"{server.url}/webhooks/crm/contract"
            yield receiver

    @pytest.fixture
    def mapping_properties(self) -> Mapping[str, Sequence[str]]:
        return {}

    @pytest.fixture
    def entity_defaults(self) -> Mapping[str, Any]:
        return {}

    @pytest.fixture
    def settings(
        self,
        make_adapter: Callable[[Mapping[str, Any]], CrmAdapter],
        channel_links: Sequence[ChannelLink],
        mapping_properties: Mapping[str, Sequence[str]],
    ) -> dict[str, Any]:
        """The settings ``setup()`` recorded: the core persists them on the tenant."""
        return dict(make_adapter({}).setup(channel_links, mapping_properties).settings)

    @pytest.fixture
    def adapter(
        self, make_adapter: Callable[[Mapping[str, Any]], CrmAdapter], settings: dict[str, Any]
    ) -> CrmAdapter:
        return make_adapter(settings)

    @pytest.fixture
    def channel_kind(self, channel_links: Sequence[ChannelLink]) -> str:
        return channel_links[0].kind

    # -- helpers --------------------------------------------------------

    @staticmethod
    def uid(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    @staticmethod
    def phone() -> tuple[str, str]:
        """A London number from Ofcom's drama range, as a rep would type it
        and in E.164 (the bridge normalises before it looks up)."""
        tail = f"{uuid.uuid4().int % 1000:03d}"
        return f"+44 (20) 7946-0{tail}", f"+442079460{tail}"

    def contact_draft(
        self,
        channel_kind: str,
        *,
        identity: str,
        phone: str | None = None,
        email: str | None = None,
    ) -> ContactDraft:
        return ContactDraft(
            lookup=ContactLookup(
                identities={channel_kind: identity},
                phones=(phone,) if phone else (),
                emails=(email,) if email else (),
            ),
            profile=SenderProfile(first_name="Ann", last_name="Contract", phone=phone, email=email),
        )

    def open_conversation(
        self, adapter: CrmAdapter, channel_kind: str, entity_defaults: Mapping[str, Any]
    ) -> tuple[CrmRef, CrmRef, str]:
        """A contact and an entity for a fresh conversation uid."""
        contact = adapter.create_contact(
            self.contact_draft(channel_kind, identity=self.uid("user"))
        ).ref
        conversation = self.uid("conv")
        entity = adapter.create_entity(
            EntityDraft(
                object_type=adapter.entity_types[0],
                conversation_uid=conversation,
                contact=contact,
                name="Contract conversation",
                **dict(entity_defaults),
            )
        )
        return contact, entity, conversation

    # -- setup ----------------------------------------------------------

    def test_setup_is_idempotent(
        self,
        make_adapter: Callable[[Mapping[str, Any]], CrmAdapter],
        vendor: VendorHandle,
        channel_links: Sequence[ChannelLink],
        mapping_properties: Mapping[str, Sequence[str]],
        settings: dict[str, Any],
    ) -> None:
        before = vendor.setup_fingerprint()
        again = make_adapter(settings).setup(channel_links, mapping_properties)
        assert dict(again.settings) == settings
        assert vendor.setup_fingerprint() == before

    # -- contacts -------------------------------------------------------

    def test_contact_found_by_identity(self, adapter: CrmAdapter, channel_kind: str) -> None:
        identity = self.uid("user")
        created = adapter.create_contact(self.contact_draft(channel_kind, identity=identity))
        found = adapter.find_contact(ContactLookup(identities={channel_kind: identity}))
        assert found is not None and found.ref == created.ref
        assert adapter.find_contact(ContactLookup(identities={channel_kind: self.uid("x")})) is None

    def test_contact_found_by_phone_whatever_its_formatting(
        self, adapter: CrmAdapter, vendor: VendorHandle, channel_kind: str
    ) -> None:
        formatted, e164 = self.phone()
        seeded = vendor.seed_contact(name="Rep Entered", phone=formatted)
        found = adapter.find_contact(
            ContactLookup(identities={channel_kind: self.uid("user")}, phones=(e164,))
        )
        assert found is not None and found.ref.id == seeded

    def test_contact_found_by_email(
        self, adapter: CrmAdapter, vendor: VendorHandle, channel_kind: str
    ) -> None:
        email = f"{self.uid('ann')}@example.com"
        seeded = vendor.seed_contact(name="Rep Entered", email=email)
        found = adapter.find_contact(ContactLookup(identities={}, emails=(email,)))
        assert found is not None and found.ref.id == seeded

    def test_identity_beats_phone_beats_email(
        self, adapter: CrmAdapter, vendor: VendorHandle, channel_kind: str
    ) -> None:
        formatted, phone = self.phone()
        email = f"{self.uid('ann')}@example.com"
        by_email = vendor.seed_contact(name="By Email", email=email)
        by_phone = vendor.seed_contact(name="By Phone", phone=formatted)
        identity = self.uid("user")
        by_identity = adapter.create_contact(self.contact_draft(channel_kind, identity=identity))
        everything = ContactLookup(
            identities={channel_kind: identity}, phones=(phone,), emails=(email,)
        )
        found = adapter.find_contact(everything)
        assert found is not None and found.ref == by_identity.ref
        found = adapter.find_contact(replace(everything, identities={channel_kind: "nobody"}))
        assert found is not None and found.ref.id == by_phone
        found = adapter.find_contact(ContactLookup(identities={}, emails=(email,)))
        assert found is not None and found.ref.id == by_email

    # -- entities -------------------------------------------------------

    def test_entity_found_by_conversation_uid(
        self, adapter: CrmAdapter, channel_kind: str, entity_defaults: Mapping[str, Any]
    ) -> None:
        contact, entity, conversation = self.open_conversation(
            adapter, channel_kind, entity_defaults
        )
        draft = EntityDraft(
            object_type=entity.kind,
            conversation_uid=conversation,
            contact=contact,
            name="again",
            **dict(entity_defaults),
        )
        assert adapter.find_entity(draft) == entity
        assert adapter.find_entity(replace(draft, conversation_uid=self.uid("conv"))) is None
        assert adapter.entity_is_open(entity) is True

    # -- many at once (batch hooks: a burst of new customers) -------------

    def test_batch_hooks_answer_each_key_as_the_one_item_hooks(
        self, adapter: CrmAdapter, channel_kind: str, entity_defaults: Mapping[str, Any]
    ) -> None:
        """``create_contacts`` / ``create_entities`` answer every key, and
        what they made is what ``find_contacts`` / ``find_entities`` (the
        lookups a retry runs first) find again under the same keys; keys
        nobody matches are left out."""
        assert adapter.batch_size >= 1
        identities = {f"p{n}": self.uid("user") for n in range(3)}
        drafts = {
            key: self.contact_draft(channel_kind, identity=identity)
            for key, identity in identities.items()
        }
        made = adapter.create_contacts(drafts)
        assert set(made) == set(drafts)
        assert len({c.ref for c in made.values()}) == len(drafts)
        lookups = {key: d.lookup for key, d in drafts.items()}
        lookups["nobody"] = ContactLookup(identities={channel_kind: self.uid("x")})
        found = adapter.find_contacts(lookups)
        assert {k: c.ref for k, c in found.items()} == {k: c.ref for k, c in made.items()}
        for key, contact in made.items():
            one = adapter.find_contact(drafts[key].lookup)
            assert one is not None and one.ref == contact.ref
        entities = {
            key: EntityDraft(
                object_type=adapter.entity_types[0],
                conversation_uid=self.uid("conv"),
                contact=contact.ref,
                name="Contract burst",
                **dict(entity_defaults),
            )
            for key, contact in made.items()
        }
        opened = adapter.create_entities(entities)
        assert set(opened) == set(entities) and len(set(opened.values())) == len(entities)
        missing = replace(entities["p0"], conversation_uid=self.uid("conv"))
        again = adapter.find_entities({**entities, "missing": missing})
        assert again == opened
        assert adapter.find_entity(entities["p1"]) == opened["p1"]

    def test_batch_tasks_are_made_once(
        self, adapter: CrmAdapter, channel_kind: str, entity_defaults: Mapping[str, Any]
    ) -> None:
        """``create_tasks`` again with ``maybe_written`` (a retry after an
        ambiguous answer) finds the tasks the first call made."""
        owner = adapter.list_owners()[0].id  # HubSpot's sandbox requires one on tasks
        drafts = {}
        for n in range(2):
            contact, entity, conversation = self.open_conversation(
                adapter, channel_kind, entity_defaults
            )
            drafts[f"t{n}"] = TaskDraft(
                bridge_id=f"{conversation}:task",
                subject="Call back",
                body="Is the blue one in stock?",
                due_at=T0 + dt.timedelta(days=1),
                contact=contact,
                entity=entity,
                owner_id=owner,
            )
        made = adapter.create_tasks(drafts)
        assert set(made) == set(drafts) and len(set(made.values())) == 2
        retried = {k: replace(d, maybe_written=True) for k, d in drafts.items()}
        assert _as_the_core_does(adapter.create_tasks, retried) == made

    def test_a_full_batch_is_one_the_crm_accepts(
        self, adapter: CrmAdapter, channel_kind: str
    ) -> None:
        """``batch_size`` people at once: the CRM takes the requests at that
        size (HubSpot: 100 inputs and an ``IN`` of 100 values; Bitrix24: 50
        commands; amoCRM: 50 contacts), and finds every one again."""
        drafts = {
            f"p{n}": self.contact_draft(channel_kind, identity=self.uid("user"))
            for n in range(adapter.batch_size)
        }
        made = _as_the_core_does(adapter.create_contacts, drafts)
        assert set(made) == set(drafts)
        found = _as_the_core_does(adapter.find_contacts, {k: d.lookup for k, d in drafts.items()})
        assert {k: c.ref for k, c in found.items()} == {k: c.ref for k, c in made.items()}

    # -- timeline -------------------------------------------------------

    def test_entries_are_written_exactly_once(
        self,
        adapter: CrmAdapter,
        vendor: VendorHandle,
        make_entry: Callable[..., TimelineEntry],
        channel_kind: str,
        entity_defaults: Mapping[str, Any],
    ) -> None:
        contact, entity, _ = self.open_conversation(adapter, channel_kind, entity_defaults)
        entries = [
            make_entry(
                self.uid("msg"),
                contact=contact,
                entity=entity,
                sequence=i,
                occurred_at=T0 + dt.timedelta(seconds=i),
                text=f"message {i}",
            )
            for i in range(1, 4)
        ]
        first = adapter.append_entries(entries)
        assert set(first) == {e.bridge_id for e in entries}
        retried = [replace(e, maybe_written=True) for e in entries]
        second = adapter.append_entries(retried)
        assert second == first
        records = vendor.timeline(e.bridge_id for e in entries)
        assert sorted(r.bridge_id for r in records) == sorted(e.bridge_id for e in entries)

    def test_people_see_no_machine_marker(
        self,
        adapter: CrmAdapter,
        vendor: VendorHandle,
        make_entry: Callable[..., TimelineEntry],
        channel_kind: str,
        entity_defaults: Mapping[str, Any],
    ) -> None:
        """The id that finds an entry again stays out of what a rep reads."""
        contact, entity, _ = self.open_conversation(adapter, channel_kind, entity_defaults)
        entry = make_entry(
            self.uid("msg"),
            contact=contact,
            entity=entity,
            sequence=7,
            occurred_at=T0,
            text="Is the blue one in stock?",
        )
        adapter.append_entries([entry])
        (record,) = vendor.timeline([entry.bridge_id])
        seen = what_people_see(record.text)
        assert entry.text in seen
        assert "[bridge" not in seen and entry.bridge_id not in seen
        assert hashlib.sha256(entry.bridge_id.encode()).hexdigest()[:12] not in seen

    def test_entries_keep_their_time_and_sequence(
        self,
        adapter: CrmAdapter,
        vendor: VendorHandle,
        make_entry: Callable[..., TimelineEntry],
        channel_kind: str,
        entity_defaults: Mapping[str, Any],
    ) -> None:
        contact, entity, _ = self.open_conversation(adapter, channel_kind, entity_defaults)
        # written out of order: the CRM must still show the customer's order
        entries = [
            make_entry(
                self.uid("msg"),
                contact=contact,
                entity=entity,
                sequence=seq,
                occurred_at=T0 + dt.timedelta(minutes=seq),
                text=f"sequence {seq}",
            )
            for seq in (12, 10, 11)
        ]
        adapter.append_entries(entries)
        records = {r.bridge_id: r for r in vendor.timeline(e.bridge_id for e in entries)}
        for entry in entries:
            record = records[entry.bridge_id]
            assert record.sequence == entry.sequence
            assert record.occurred_at == _ms(entry.occurred_at)
            assert entry.text in record.text

    # -- CRM -> bridge ----------------------------------------------------

    def _reply(
        self,
        adapter: CrmAdapter,
        vendor: VendorHandle,
        receiver: Receiver,
        make_entry: Callable[..., TimelineEntry],
        channel_kind: str,
        entity_defaults: Mapping[str, Any],
    ) -> tuple[TimelineEntry, WebhookRequest]:
        contact, entity, _ = self.open_conversation(adapter, channel_kind, entity_defaults)
        entry = make_entry(
            self.uid("msg"),
            contact=contact,
            entity=entity,
            sequence=1,
            occurred_at=T0,
            text="Is the blue one in stock?",
        )
        adapter.append_entries([entry])
        vendor.fire_reply(contact, "Yes, it ships tomorrow.")
        (request,) = receiver.wait_for(1)
        return entry, request

    def test_rep_reply_comes_back_signed_and_parsed(
        self,
        adapter: CrmAdapter,
        vendor: VendorHandle,
        receiver: Receiver,
        make_entry: Callable[..., TimelineEntry],
        channel_kind: str,
        entity_defaults: Mapping[str, Any],
    ) -> None:
        entry, request = self._reply(
            adapter, vendor, receiver, make_entry, channel_kind, entity_defaults
        )
        adapter.verify_webhook(request)
        events = adapter.parse_webhook(request)
        replies = [e for e in events if e.kind is CrmEventKind.REPLY]
        assert len(replies) == 1
        reply = replies[0]
        if self.reply_names_recipient:
            assert reply.recipient == entry.sender_identifier
        assert reply.thread_key == entry.conversation_uid
        assert reply.text == "Yes, it ships tomorrow."
        assert reply.external_id

    def test_forged_webhooks_are_refused(
        self,
        adapter: CrmAdapter,
        vendor: VendorHandle,
        receiver: Receiver,
        make_entry: Callable[..., TimelineEntry],
        channel_kind: str,
        entity_defaults: Mapping[str, Any],
    ) -> None:
        _, request = self._reply(
            adapter, vendor, receiver, make_entry, channel_kind, entity_defaults
        )
        forgeries = self.forgeries(request)
        assert forgeries, "a CRM adapter must refuse something"
        for forged in forgeries:
            with pytest.raises(SignatureError):
                adapter.verify_webhook(forged)

    def forgeries(self, request: WebhookRequest) -> list[WebhookRequest]:
        """Variants of a genuine reply webhook the adapter must refuse: by
        default a tampered body, a forged and a missing signature. A CRM whose
        hook is unsigned (the URL key is the secret) overrides this with what
        it can check (e.g. another account named in the body)."""
        tampered_body = replace(request, body=request.body.replace(b"tomorrow", b"never!!!"))
        forged_headers = replace(
            request,
            headers={
                k: ("A" * len(v) if "signature" in k else v) for k, v in request.headers.items()
            },
        )
        unsigned = replace(
            request, headers={k: v for k, v in request.headers.items() if "signature" not in k}
        )
        return [tampered_body, forged_headers, unsigned]

    def test_delivery_report_shows_in_the_crm(
        self,
        adapter: CrmAdapter,
        vendor: VendorHandle,
        receiver: Receiver,
        make_entry: Callable[..., TimelineEntry],
        channel_kind: str,
        entity_defaults: Mapping[str, Any],
    ) -> None:
        _, request = self._reply(
            adapter, vendor, receiver, make_entry, channel_kind, entity_defaults
        )
        (reply,) = [e for e in adapter.parse_webhook(request) if e.kind is CrmEventKind.REPLY]
        _as_the_core_does(
            adapter.report_delivery,
            DeliveryReport(
                reply.external_id, DeliveryStatus.SENT, crm_thread_id=reply.crm_thread_id
            ),
        )
        assert vendor.delivery_status(reply.external_id) == "sent"
        _as_the_core_does(
            adapter.report_delivery,
            DeliveryReport(reply.external_id, DeliveryStatus.FAILED, error="blocked by the user"),
        )
        assert vendor.delivery_status(reply.external_id) == "failed"

    # -- one client, two contacts -----------------------------------------

    def test_two_contacts_of_one_client_are_merged_or_linked_once(
        self, adapter: CrmAdapter, vendor: VendorHandle, channel_kind: str
    ) -> None:
        """``merge_contacts``: True when ``gone`` became part of ``keep`` (a
        retry is True again), False when the CRM was not touched. Then the
        core's note (``note_contact``): its key finds it again, so a retry
        writes none; people read its text, never the key."""
        keep, gone = (
            adapter.create_contact(self.contact_draft(channel_kind, identity=self.uid("user"))).ref
            for _ in range(2)
        )
        merged = _as_the_core_does(adapter.merge_contacts, keep, gone)
        assert merged is self.merges_contacts
        assert vendor.contact_exists(keep.id)
        assert vendor.contact_exists(gone.id) is not merged
        if merged:
            assert _as_the_core_does(adapter.merge_contacts, keep, gone) is True
        key = self.uid("link")
        text = "Possibly the same client as contact 4242\nВозможно, тот же клиент, что и 4242"
        first = _as_the_core_does(adapter.note_contact, keep, text, key)
        again = _as_the_core_does(adapter.note_contact, keep, text, key)
        assert again == first
        other = _as_the_core_does(adapter.note_contact, keep, "another link", self.uid("link"))
        assert other != first
        notes = [n for n in vendor.contact_notes(keep) if "4242" in n]
        assert len(notes) == 1
        seen = what_people_see(notes[0])
        for line in text.splitlines():
            assert line in seen
        assert key not in seen and "[bridge" not in seen
        assert hashlib.sha256(key.encode()).hexdigest()[:12] not in seen

    # -- fields the bridge keeps current ----------------------------------

    def test_a_contacts_live_field_is_rewritten_and_nothing_else(
        self,
        adapter: CrmAdapter,
        vendor: VendorHandle,
        channel_kind: str,
        settings: dict[str, Any],
    ) -> None:
        """``write_contact_fields`` overwrites the mapping's property the
        bridge keeps current (``{client.reachable}``) on a contact created
        with it, and leaves the contact's phone as it was."""
        _, e164 = self.phone()
        draft = replace(
            self.contact_draft(channel_kind, identity=self.uid("user"), phone=e164),
            properties={LIVE_FIELD: "Telegram: yes"},
        )
        contact = adapter.create_contact(draft).ref
        assert vendor.contact_field(contact.id, LIVE_FIELD, settings) == "Telegram: yes"
        now = "WhatsApp: template only; Telegram: blocked"
        _as_the_core_does(adapter.write_contact_fields, contact, {LIVE_FIELD: now})
        assert vendor.contact_field(contact.id, LIVE_FIELD, settings) == now
        found = adapter.find_contact(ContactLookup(identities={}, phones=(e164,)))
        assert found is not None and found.ref.id == contact.id

    def test_a_contacts_fields_are_read_for_routing(
        self, adapter: CrmAdapter, channel_kind: str
    ) -> None:
        """``read_contact_fields``: the service layer's routing rules read a
        client's CRM field. The mapping's contact property (the field the
        setup made) reads back as written; a name the CRM has no field for,
        and a field without a value, are left out."""
        contact = adapter.create_contact(
            self.contact_draft(channel_kind, identity=self.uid("user"))
        ).ref
        unknown = f"no_such_field_{uuid.uuid4().hex[:8]}"
        empty = _as_the_core_does(adapter.read_contact_fields, contact, [LIVE_FIELD, unknown])
        assert empty == {}
        _as_the_core_does(adapter.write_contact_fields, contact, {LIVE_FIELD: "VIP"})
        read = _as_the_core_does(adapter.read_contact_fields, contact, [LIVE_FIELD, unknown])
        assert read == {LIVE_FIELD: "VIP"}

    def test_an_entity_is_given_to_an_owner_and_its_fields_rewritten(
        self,
        adapter: CrmAdapter,
        vendor: VendorHandle,
        channel_kind: str,
        entity_defaults: Mapping[str, Any],
        mapping_properties: Mapping[str, Sequence[str]],
        settings: dict[str, Any],
    ) -> None:
        """``update_entity``: the service layer's routing gives the open
        deal/lead to an owner and writes its fields (the SLA due time, the
        rating), leaving the rest as it was."""
        _, entity, _ = self.open_conversation(adapter, channel_kind, entity_defaults)
        owners = [o.id for o in adapter.list_owners()]
        assert len(owners) >= 2
        (name,) = [n for k, names in mapping_properties.items() if k != "contact" for n in names]
        _as_the_core_does(adapter.update_entity, entity, {name: "first"}, owners[0])
        assert vendor.entity_field(entity, name, settings) == "first"
        assert str(vendor.entity_field(entity, None, settings)) == owners[0]
        _as_the_core_does(adapter.update_entity, entity, {}, owners[1])
        assert str(vendor.entity_field(entity, None, settings)) == owners[1]
        assert vendor.entity_field(entity, name, settings) == "first"  # kept


#: the contact property the suite's mapping keeps current
LIVE_FIELD = "bridge_reach"


def _as_the_core_does(hook: Callable[..., Any], *args: Any) -> Any:
    """Call ``hook`` retrying a ``RetryableError`` (a sandbox's rate limit
    answered 429) after its ``retry_after``, as the core's jobs do; a
    report must not fail the contract on a limit the vendor documents."""
    for attempt in range(3):
        try:
            return hook(*args)
        except RetryableError as exc:
            if attempt == 2:
                raise
            time.sleep(exc.retry_after or 1.0)
    return None
