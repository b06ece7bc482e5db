"""WhatsApp Cloud API inbound: route -> split -> parse (pure functions).

Inputs are pywa's renditions of Meta's webhook examples (``whatsapp/
pywa_updates/*.json``: each file maps variant name -> full webhook body),
read from ``tests/fixtures/corpora/whatsapp`` (copied verbatim, with
their entries in MANIFEST.json); every row of the table names its source
from MANIFEST.json. Bodies built here say so.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import PayloadError
from bridge.model import (
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    OutboundStatus,
    RawDelivery,
)
from channel_adapters.whatsapp.inbound import KIND, parse, route, split

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT / "tests" / "fixtures" / "corpora"
WHATSAPP = CORPORA / "whatsapp"
MANIFEST: dict[str, dict[str, Any]] = {
    e["file"]: e for e in json.loads((CORPORA / "MANIFEST.json").read_text())
}

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
PN = "1122334455667"  # the corpus' phone_number_id
PYWA = "whatsapp/pywa_updates"

# --------------------------------------------------------------------------
# The table: every file and every variant -> the events, in order.
# "text", "photo"...: a customer message of that kind; "edit …"/"revoke …":
# it changes an earlier one; "echo …": the business's own; "status <s>":
# an OutboundStatus; "ignored <event_type>". Written by reading the payloads.
# --------------------------------------------------------------------------

EXPECTED: dict[str, dict[str, tuple[str, ...]]] = {
    # david-lev/pywa:tests/data/updates/account_update.json (no phone number: WABA-level)
    "account_update.json": {
        "account_deleted": ("ignored account_update:ACCOUNT_DELETED",),
        "account_restriction": ("ignored account_update:ACCOUNT_RESTRICTION",),
        "account_violation": ("ignored account_update:ACCOUNT_VIOLATION",),
        "ad_account_linked": ("ignored account_update:AD_ACCOUNT_LINKED",),
        "authentication_international_eligibility": (
            "ignored account_update:AUTH_INTL_PRICE_ELIGIBILITY_UPDATE",
        ),
        "account_disabled": ("ignored account_update:DISABLED_UPDATE",),
        "mm_api_for_wa_terms_of_service": ("ignored account_update:MM_LITE_TERMS_SIGNED",),
        "partner_added": ("ignored account_update:PARTNER_ADDED",),
        "partner_app_installed": ("ignored account_update:PARTNER_APP_INSTALLED",),
        "partner_app_uninstalled": ("ignored account_update:PARTNER_APP_UNINSTALLED",),
        "partner_led_business_verification_status": (
            "ignored account_update:PARTNER_CLIENT_CERTIFICATION_STATUS_UPDATE",
        ),
        "partner_removed": ("ignored account_update:PARTNER_REMOVED",),
        "partner_removed_wa_app_disconnection": ("ignored account_update:PARTNER_REMOVED",),
        "primary_business_location_set": (
            "ignored account_update:BUSINESS_PRIMARY_LOCATION_COUNTRY_UPDATE",
        ),
        "pricing_tiering_update": ("ignored account_update:VOLUME_BASED_PRICING_TIER_UPDATE",),
        "account_offboarded": ("ignored account_update:ACCOUNT_OFFBOARDED",),
        "account_reconnected": ("ignored account_update:ACCOUNT_RECONNECTED",),
    },
    # david-lev/pywa:tests/data/updates/call_connect.json (field "calls")
    "call_connect.json": {
        "business_initiated": ("ignored calls:connect",),
        "user_initiated": ("ignored calls:connect",),
    },
    # david-lev/pywa:tests/data/updates/call_permission_update.json
    "call_permission_update.json": {"accept": ("system",), "reject": ("system",)},
    # david-lev/pywa:tests/data/updates/call_status.json (a call's status, not a message's)
    "call_status.json": {"call_status": ("ignored calls:RINGING",)},
    # david-lev/pywa:tests/data/updates/call_terminate.json
    "call_terminate.json": {"call_terminate": ("ignored calls:terminate",)},
    # david-lev/pywa:tests/data/updates/callback_button.json
    "callback_button.json": {
        "button": ("text",),  # interactive.button_reply
        "quick_reply": ("text",),  # template quick reply: type "button"
        "quick_reply_without_context": ("text",),
    },
    # david-lev/pywa:tests/data/updates/callback_selection.json (list_reply)
    "callback_selection.json": {"callback": ("text",), "description": ("text",)},
    # david-lev/pywa:tests/data/updates/deleted_message.json
    "deleted_message.json": {"revoke": ("revoke text",)},
    # david-lev/pywa:tests/data/updates/edited_message.json (the new content is an image)
    "edited_message.json": {"image": ("edit photo",)},
    # david-lev/pywa:tests/data/updates/flow_completion.json (interactive.nfm_reply)
    "flow_completion.json": {"completion": ("text",), "without_flow_token": ("text",)},
    # david-lev/pywa:tests/data/updates/message.json
    "message.json": {
        "text": ("text",),
        "image": ("photo",),
        "media_with_url": ("photo",),
        "video": ("video",),
        "document": ("document",),
        "audio": ("audio",),
        "voice": ("voice",),
        "static_sticker": ("sticker",),
        "animated_sticker": ("sticker",),
        "reaction": ("reaction",),
        "unreaction_empty": ("reaction",),
        "unreaction_no_emoji": ("reaction",),
        "current_location": ("location",),
        "chosen_location": ("location",),
        "contacts": ("contact",),
        "order": ("text",),
        "unsupported": ("unknown",),
        "unsupported_with_type": ("unknown",),
        "reply": ("text",),
        "forwarded": ("text",),
        "forwarded_many_times": ("text",),
        "interactive_message_with_err": ("unknown",),
        "referral": ("text",),
    },
    # david-lev/pywa:tests/data/updates/message_status.json
    "message_status.json": {
        "sent": ("status sent",),
        "delivered": ("status delivered",),
        "read": ("status read",),
        "played": ("status played",),
        "failed": ("status failed",),
        "with_tracker": ("status sent",),
        "group": ("status read",),
    },
    # david-lev/pywa:tests/data/updates/outgoing_message.json (smb_message_echoes)
    "outgoing_message.json": {
        "text": ("echo text",),
        "delete": ("echo revoke text",),
        "edit": ("echo edit text",),
    },
    # david-lev/pywa:tests/data/updates/system.json
    "system.json": {"phone_number_change": ("system",), "identity_change": ("system",)},
    # david-lev/pywa:tests/data/updates/template_category_update.json (WABA-level)
    "template_category_update.json": {"marketing": ("ignored template_category_update:MARKETING",)},
    # david-lev/pywa:tests/data/updates/template_components_update.json (WABA-level)
    "template_components_update.json": {"element": ("ignored message_template_components_update",)},
    # david-lev/pywa:tests/data/updates/template_quality_update.json (WABA-level)
    "template_quality_update.json": {"yellow": ("ignored message_template_quality_update:YELLOW",)},
    # david-lev/pywa:tests/data/updates/template_status_update.json (WABA-level)
    "template_status_update.json": {
        "approved": ("ignored message_template_status_update:APPROVED",),
        "rejected": ("ignored message_template_status_update:REJECTED",),
    },
    # david-lev/pywa:tests/data/updates/user_marketing_preferences.json
    "user_marketing_preferences.json": {
        "resume": ("ignored user_preferences:resume",),
        "signup": ("ignored user_preferences:signup",),
    },
}


def _source(name: str) -> str:
    entry = MANIFEST[f"{PYWA}/{name}"]
    return f"{entry['repo']}@{entry['commit'][:7]}:{entry['path']}"


def _variants(name: str) -> dict[str, Any]:
    assert WHATSAPP is not None
    data: dict[str, Any] = json.loads((WHATSAPP / "pywa_updates" / name).read_text("utf-8"))
    return data


CASES = (
    [
        pytest.param(name, variant, expected, id=f"{_source(name)}#{variant}")
        for name, variants in EXPECTED.items()
        for variant, expected in variants.items()
    ]
    if CORPORA
    else []
)


def describe(event: InboundEvent) -> str:
    if isinstance(event, InboundMessage):
        marks = [
            "echo" if event.echo else "",
            "revoke" if event.revoked else "edit" if event.is_edit else "",
        ]
        return " ".join([*filter(None, marks), event.kind.value])
    if isinstance(event, OutboundStatus):
        return f"status {event.status}"
    if isinstance(event, IgnoredEvent):
        return f"ignored {event.event_type}"
    return type(event).__name__


def deliver(body: bytes) -> list[tuple[RawDelivery, list[InboundEvent]]]:
    """What the webhook and the normaliser make of one POST: route, split
    for each number, parse each delivery (checking the keys agree)."""
    out = []
    for routed in route(body):
        # a business account's notice (group:<WABA id>) is split for each of
        # its numbers; one number stands for them here
        number, waba = ("-", routed[6:]) if routed.startswith("group:") else (routed, "")
        for delivery in split(body, number, waba):
            events = parse(delivery.body, NOW)
            assert [e.external_id for e in events] == [delivery.key]
            assert len(delivery.key) <= 255
            assert split(delivery.body, number, waba) == [delivery]  # a delivery is one item
            out.append((delivery, events))
    return out


def events_of(body: bytes) -> list[InboundEvent]:
    return [e for _d, events in deliver(body) for e in events]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------


def test_table_covers_every_file_and_variant() -> None:
    assert WHATSAPP is not None
    files = sorted(p.name for p in (WHATSAPP / "pywa_updates").glob("*.json"))
    assert sorted(EXPECTED) == files
    for name in files:
        assert f"{PYWA}/{name}" in MANIFEST, name
        assert sorted(_variants(name)) == sorted(EXPECTED[name]), name
    assert sum(len(v) for v in EXPECTED.values()) == 74


@pytest.mark.parametrize(("name", "variant", "expected"), CASES)
def test_corpus_variant(name: str, variant: str, expected: tuple[str, ...]) -> None:
    body = dumps(_variants(name)[variant])
    numbers = route(body)
    if numbers:
        events = events_of(body)
    else:  # account-level notices only: acknowledged, stored for no number
        events = parse(body, NOW)
    assert tuple(describe(e) for e in events) == expected
    for event in events:
        assert event.channel_kind == KIND
        if isinstance(event, InboundMessage):
            assert event.external_user_id == event.external_thread_id
            assert event.sent_at.tzinfo is not None


def test_account_level_notices_route_to_the_business_accounts_numbers() -> None:
    """Template and account updates carry no phone number: they are routed
    to the WhatsApp Business Account (``entry.id``), whose numbers each
    journal them (ignored, with the event named); a number of another
    business account takes none of them."""
    for name in ("account_update.json", "template_status_update.json"):
        for body in _variants(name).values():
            raw = dumps(body)
            waba = str(body["entry"][0]["id"])
            assert route(raw) == (f"group:{waba}",)
            assert split(raw, PN) == [] and split(raw, PN, "another-waba") == []
            [delivery] = split(raw, PN, waba)
            [event] = parse(delivery.body, NOW)
            assert isinstance(event, IgnoredEvent) and event.event_type.startswith(
                ("account_update:", "message_template_status_update")
            )


def test_corpus_messages_read_right() -> None:
    msgs = {
        variant: events_of(dumps(body))[0] for variant, body in _variants("message.json").items()
    }
    text = msgs["text"]
    assert isinstance(text, InboundMessage)
    assert (text.external_id, text.provider_message_id, text.text) == (
        "wamid.xyzxyz",
        "wamid.xyzxyz",
        "Body Text",
    )
    assert text.external_user_id == "972987654321"
    assert text.profile.display_name == "Test Name"
    assert text.profile.phone == "+972987654321"
    assert text.profile.language is None
    assert text.sent_at == dt.datetime.fromtimestamp(1697043223, dt.UTC)
    assert text.raw["user_id"] == "US.13491208655302741918"

    image = msgs["image"]
    assert isinstance(image, InboundMessage)
    (att,) = image.attachments
    assert (att.kind, att.file_ref, att.mime_type, att.url) == (
        MessageKind.PHOTO,
        "65463453",
        "image/jpeg",
        None,
    )
    video = msgs["video"]
    assert isinstance(video, InboundMessage)
    assert video.text == "caption" and video.raw["forwarded"] is True

    reply = msgs["reply"]
    assert isinstance(reply, InboundMessage) and reply.reply_to == "wamid.xyzxyz=="

    location = msgs["chosen_location"]
    assert isinstance(location, InboundMessage)
    assert location.text == (
        "📍 Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025 (37.4611978, -122.2164385)"
    )
    assert (location.raw["latitude"], location.raw["longitude"]) == (37.4611978, -122.2164385)

    order = msgs["order"]
    assert isinstance(order, InboundMessage)
    assert order.text.splitlines() == [
        "🛒 order, total 180 ILS",
        "• 3 × HAMBURGER at 30 ILS",
        "• 2 × FRENCH_FRIES at 35 ILS",
        "• 2 × SODA at 10 ILS",
    ]
    unsupported = msgs["unsupported"]
    assert isinstance(unsupported, InboundMessage)
    assert unsupported.text == "unsupported message (131051: Message type unknown)"
    with_type = msgs["unsupported_with_type"]
    assert isinstance(with_type, InboundMessage)
    assert with_type.text == "unsupported message: pool (131051: Message type unknown)"
    broken = msgs["interactive_message_with_err"]  # the error sits on the change
    assert isinstance(broken, InboundMessage)
    assert broken.text == "unsupported message: interactive (131000: Something went wrong)"
    many = msgs["forwarded_many_times"]
    assert isinstance(many, InboundMessage) and many.raw["forwarded"] is True


def test_corpus_buttons_system_and_flows() -> None:
    button = events_of(dumps(_variants("callback_button.json")["button"]))[0]
    assert isinstance(button, InboundMessage)
    # a pressed reply button is the id the bridge gave it (what the client would type)
    assert (button.text, button.raw["reply_id"], button.raw["title"]) == (
        "callback_data",
        "callback_data",
        "title",
    )
    quick = events_of(dumps(_variants("callback_button.json")["quick_reply"]))[0]
    assert isinstance(quick, InboundMessage)
    assert (quick.text, quick.raw["payload"]) == ("title", "callback_data")

    change = events_of(dumps(_variants("system.json")["phone_number_change"]))[0]
    assert isinstance(change, InboundMessage)
    assert change.text == "User A changed from 972987654321 to 972912345678"
    assert change.raw["new_wa_id"] == "972912345678"
    assert change.external_user_id == "972987654321"  # no contacts: read from "from"

    flow = events_of(dumps(_variants("flow_completion.json")["completion"]))[0]
    assert isinstance(flow, InboundMessage)
    assert "delivery_rating: 4" in flow.text.splitlines()
    assert "flow_token" not in flow.text and flow.raw["flow_token"]


def test_corpus_echoes_are_never_the_customers() -> None:
    for variant, body in _variants("outgoing_message.json").items():
        (event,) = events_of(dumps(body))
        assert isinstance(event, InboundMessage), variant
        assert event.echo and event.external_id.startswith("echo:")
        assert event.profile.name() is None and event.profile.phone is None
    edit = events_of(dumps(_variants("outgoing_message.json")["edit"]))[0]
    assert isinstance(edit, InboundMessage)
    # pywa's "edit" and "delete" have from/to swapped ("to" is our own
    # display number): the thread is the customer's, not ours
    assert edit.external_thread_id == "972987654321"
    assert (edit.provider_message_id, edit.text) == ("wamid.zzzzzz", "Text was edited")


def test_corpus_statuses() -> None:
    variants = _variants("message_status.json")
    failed = events_of(dumps(variants["failed"]))[0]
    assert isinstance(failed, OutboundStatus)
    assert failed.error == (
        "130472: User's number is part of an experiment — Failed to send message because "
        "this user's phone number is part of an experiment"
    )
    assert (failed.channel_message_id, failed.bridge_id) == ("wamid.xyzxyz", "")
    tracked = events_of(dumps(variants["with_tracker"]))[0]
    assert isinstance(tracked, OutboundStatus)
    assert (tracked.bridge_id, tracked.external_id, tracked.error) == (
        "some data",
        "wamid.xyzxyz:sent",
        None,
    )


# --------------------------------------------------------------------------
# Bodies built here (our own, shaped like the corpus)
# --------------------------------------------------------------------------


def envelope(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": list(entries)}


def entry(*changes: dict[str, Any], waba: str = "WABA1") -> dict[str, Any]:
    return {"id": waba, "changes": list(changes)}


def change(
    number: Any = PN,
    *,
    messages: list[Any] | None = None,
    statuses: list[Any] | None = None,
    contacts: list[Any] | None = None,
    field: str = "messages",
    **extra: Any,
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": number},
    }
    if contacts is not None:
        value["contacts"] = contacts
    if messages is not None:
        value["messages"] = messages
    if statuses is not None:
        value["statuses"] = statuses
    value.update(extra)
    return {"field": field, "value": value}


def contact(wa_id: str | None, name: str = "Ann", user_id: str | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {"profile": {"name": name}}
    if wa_id is not None:
        card["wa_id"] = wa_id
    if user_id is not None:
        card["user_id"] = user_id
    return card


def text_msg(wamid: str, sender: str = "15551230001", body: str = "hi", **extra: Any) -> dict:
    return {
        "from": sender,
        "id": wamid,
        "timestamp": "1700000000",
        "type": "text",
        "text": {"body": body},
        **extra,
    }


def status(wamid: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"id": wamid, "status": state, "timestamp": "1700000001", "recipient_id": "1", **extra}


def one(body: dict[str, Any]) -> InboundEvent:
    (event,) = events_of(dumps(body))
    return event


def one_message(msg: dict[str, Any], *cards: dict[str, Any]) -> InboundMessage:
    event = one(envelope(entry(change(messages=[msg], contacts=list(cards)))))
    assert isinstance(event, InboundMessage)
    return event


def test_one_post_splits_into_one_delivery_per_item() -> None:
    body = envelope(
        entry(
            change(
                messages=[text_msg("wamid.A", "111"), text_msg("wamid.B", "222")],
                statuses=[status("wamid.S", "delivered"), status("wamid.S", "read")],
                contacts=[contact("111", "One"), contact("222", "Two")],
            ),
            change("999", messages=[text_msg("wamid.OTHER", "333")]),
        ),
        entry(change(messages=[text_msg("wamid.C", "222")], contacts=[contact("222", "Two")])),
        entry({"field": "account_update", "value": {"event": "ACCOUNT_DELETED"}}),
    )
    raw = dumps(body)
    assert route(raw) == (PN, "999", "group:WABA1")
    deliveries = split(raw, PN)
    assert [d.key for d in deliveries] == [
        "wamid.A",
        "wamid.B",
        "wamid.S:delivered",
        "wamid.S:read",
        "wamid.C",
    ]
    assert [d.key for d in split(raw, "999")] == ["wamid.OTHER"]
    assert split(raw, "no-such-number") == []

    second = json.loads(deliveries[1].body)
    (only_change,) = second["entry"][0]["changes"]
    assert second["object"] == "whatsapp_business_account"
    assert second["entry"][0]["id"] == "WABA1"
    assert only_change["field"] == "messages"
    assert only_change["value"]["metadata"]["phone_number_id"] == PN
    assert only_change["value"]["contacts"] == [contact("222", "Two")]  # its sender's only
    assert [m["id"] for m in only_change["value"]["messages"]] == ["wamid.B"]
    assert "statuses" not in only_change["value"]

    events = [e for _d, evs in deliver(raw) for e in evs]
    names = {e.external_id: e for e in events if isinstance(e, InboundMessage)}
    assert names["wamid.B"].profile.display_name == "Two"
    assert names["wamid.A"].profile.display_name == "One"
    assert "wamid.OTHER" in names  # under its own number


def test_a_redelivered_post_gives_the_same_keys() -> None:
    body = dumps(
        envelope(
            entry(change(messages=[text_msg("wamid.A")], statuses=[status("wamid.S", "sent")])),
            {"id": "W", "time": 1, "changes": [change(field="user_preferences")]},
        )
    )
    first = split(body, PN)
    again = split(json.dumps(json.loads(body), indent=2).encode(), PN)  # other bytes, same JSON
    assert [d.key for d in first] == [d.key for d in again]
    assert first[-1].key.startswith("sha256:") and len(first[-1].key) == 7 + 64


def test_other_changes_are_keyed_by_their_content_and_time() -> None:
    prefs = {"user_preferences": [{"wa_id": "1", "value": "stop", "timestamp": 1}]}
    a = {"id": "W", "time": 100, "changes": [change(field="user_preferences", **prefs)]}
    b = {**a, "time": 200}  # the same notice again, later: another event
    (da,) = split(dumps(envelope(a)), PN)
    (db,) = split(dumps(envelope(b)), PN)
    assert da.key != db.key
    (event,) = parse(da.body, NOW)
    assert isinstance(event, IgnoredEvent)
    assert (event.external_id, event.event_type) == (da.key, "user_preferences:stop")


def test_sender_known_only_by_business_scoped_id() -> None:
    """BSUID: no wa_id anywhere; the id is not a phone (FACTS §2)."""
    msg = {k: v for k, v in text_msg("wamid.U").items() if k != "from"}
    msg["from_user_id"] = "US.777"
    event = one_message(msg, contact(None, "Bee", user_id="US.777"))
    assert (event.external_user_id, event.external_thread_id) == ("US.777", "US.777")
    assert event.profile.display_name == "Bee"
    assert event.profile.phone is None

    bsuid_from = one_message(text_msg("wamid.V", sender="US.888"))
    assert bsuid_from.external_user_id == "US.888" and bsuid_from.profile.phone is None


def test_wa_id_wins_over_user_id_and_non_digits_are_no_phone() -> None:
    event = one_message(
        text_msg("wamid.W", "4915112345678"), contact("4915112345678", user_id="US.1")
    )
    assert event.external_user_id == "4915112345678"
    assert event.profile.phone == "+4915112345678"
    odd = one_message(text_msg("wamid.X", "<USER>"), contact("<USER>"))
    assert odd.external_user_id == "<USER>" and odd.profile.phone is None


def test_another_senders_contact_entry_is_not_used() -> None:
    event = one_message(text_msg("wamid.Y", "15550009999"), contact("15550001111", "Someone"))
    assert event.external_user_id == "15550009999"
    assert event.profile.display_name is None


def test_voice_note_and_audio() -> None:
    voice = {"id": "m1", "mime_type": "audio/ogg; codecs=opus", "voice": True}
    msg = {"from": "1", "id": "wamid.V", "timestamp": "1", "type": "audio", "audio": voice}
    event = one_message(msg)
    assert event.kind is MessageKind.VOICE
    assert event.attachments[0].kind is MessageKind.VOICE
    assert event.attachments[0].file_ref == "m1"
    msg["audio"] = {**voice, "voice": False}
    assert one_message(msg | {"id": "wamid.A"}).kind is MessageKind.AUDIO


def test_document_keeps_its_file_name_and_caption() -> None:
    doc = {"id": "d1", "mime_type": "application/pdf", "filename": "offer.pdf", "caption": "see"}
    event = one_message({"from": "1", "id": "w", "type": "document", "document": doc})
    assert event.kind is MessageKind.DOCUMENT and event.text == "see"
    (att,) = event.attachments
    assert (att.file_name, att.mime_type, att.file_ref, att.url) == (
        "offer.pdf",
        "application/pdf",
        "d1",
        None,
    )
    image = {"id": "i1", "filename": "not-a-document.jpg"}
    photo = one_message({"from": "1", "id": "w2", "type": "image", "image": image})
    assert photo.attachments[0].file_name is None


def test_reaction_refers_to_the_message_it_reacts_to() -> None:
    msg = {"from": "1", "id": "wamid.R", "type": "reaction"}
    event = one_message(msg | {"reaction": {"message_id": "wamid.T", "emoji": "👍"}})
    assert (event.kind, event.text, event.reply_to) == (MessageKind.REACTION, "👍", "wamid.T")
    assert event.external_id == "wamid.R" and not event.is_edit
    removed = one_message(msg | {"id": "wamid.R2", "reaction": {"message_id": "wamid.T"}})
    assert (removed.kind, removed.text) == (MessageKind.REACTION, "")
    lost = one_message(msg | {"id": "wamid.R3", "reaction": {"emoji": "👍"}})
    assert lost.kind is MessageKind.UNKNOWN  # a reaction to nothing we can name


def test_edit_and_revoke_mark_the_original() -> None:
    edit = {
        "from": "1",
        "id": "wamid.EDIT",
        "type": "edit",
        "edit": {
            "original_message_id": "wamid.ORIG",
            "message": {"type": "text", "text": {"body": "new"}},
        },
    }
    event = one_message(edit)
    assert (event.is_edit, event.revoked) == (True, False)
    assert (event.external_id, event.provider_message_id) == ("wamid.EDIT", "wamid.ORIG")
    assert (event.kind, event.text) == (MessageKind.TEXT, "new")

    revoke = {"from": "1", "id": "wamid.DEL", "type": "revoke"}
    gone = one_message(revoke | {"revoke": {"original_message_id": "wamid.ORIG"}})
    assert (gone.is_edit, gone.revoked, gone.text) == (True, True, "")
    assert (gone.external_id, gone.provider_message_id) == ("wamid.DEL", "wamid.ORIG")

    orphan = one_message(revoke | {"revoke": {}})
    assert orphan.kind is MessageKind.UNKNOWN and not orphan.revoked


def test_statuses_carry_bridge_id_wamid_and_error() -> None:
    failed = status(
        "wamid.OUT",
        "failed",
        biz_opaque_callback_data="4b7c9f0e-bridge-uuid",
        errors=[
            {"code": 131047, "title": "Re-engagement message", "error_data": {"details": "24h"}},
            {"code": 131026, "message": "Message undeliverable"},
        ],
    )
    body = envelope(entry(change(statuses=[failed, status("wamid.OUT2", "read")])))
    first, second = events_of(dumps(body))
    assert isinstance(first, OutboundStatus) and isinstance(second, OutboundStatus)
    assert first.bridge_id == "4b7c9f0e-bridge-uuid"
    assert first.channel_message_id == "wamid.OUT"
    assert first.external_id == "wamid.OUT:failed"
    assert first.error == "131047: Re-engagement message — 24h; 131026: Message undeliverable"
    assert (second.bridge_id, second.status, second.error) == ("", "read", None)
    bare = one(envelope(entry(change(statuses=[status("wamid.F", "failed")]))))
    assert isinstance(bare, OutboundStatus) and bare.error == "no error given"


def test_statuses_the_bridge_does_not_track_are_ignored() -> None:
    body = envelope(
        entry(
            change(
                statuses=[
                    status("wamid.D", "deleted"),
                    {"id": "wamid.N", "timestamp": "1"},  # no status at all
                    {"status": "read"},  # no id, no callback data: nothing to find
                ]
            )
        )
    )
    events = events_of(dumps(body))
    assert [describe(e) for e in events] == [
        "ignored statuses:deleted",
        "ignored statuses:malformed",
        "ignored statuses:read",
    ]


def test_echo_is_never_a_customer_message() -> None:
    echo = {
        "from": "15550000000",
        "to": "4915112345678",
        "id": "wamid.SAME",
        "timestamp": "1700000000",
        "type": "text",
        "text": {"body": "sent from the phone"},
    }
    body = envelope(
        entry(
            change(
                field="smb_message_echoes",
                message_echoes=[echo],
                contacts=[contact("4915112345678")],
            ),
            change(messages=[text_msg("wamid.SAME", "4915112345678")]),
        )
    )
    deliveries = split(dumps(body), PN)
    assert [d.key for d in deliveries] == ["echo:wamid.SAME", "wamid.SAME"]  # no collision
    mine, theirs = events_of(dumps(body))
    assert isinstance(mine, InboundMessage) and isinstance(theirs, InboundMessage)
    assert mine.echo and not theirs.echo
    assert (mine.external_user_id, mine.external_thread_id) == ("4915112345678", "4915112345678")
    assert mine.external_thread_id == theirs.external_thread_id  # the same conversation
    assert mine.profile.name() is None and mine.profile.phone is None
    assert mine.text == "sent from the phone" and mine.provider_message_id == "wamid.SAME"
    alias = change(field="message_echoes", message_echoes=[echo | {"id": "wamid.E2"}])
    other = one(envelope(entry(alias)))
    assert isinstance(other, InboundMessage) and other.echo


def test_referral_becomes_utm() -> None:
    referral = {
        "source_url": "https://fb.me/ad",
        "source_id": "120210",
        "source_type": "ad",
        "headline": "Spring sale",
        "body": "",
        "ctwa_clid": "ARAkLk",
        "media_type": "image",
    }
    event = one_message(text_msg("wamid.AD", referral=referral))
    assert event.profile.utm == {
        "utm_source": "whatsapp_ad",
        "utm_medium": "ad",
        "utm_content": "120210",
        "utm_campaign": "Spring sale",
        "ctwa_clid": "ARAkLk",
        "source_url": "https://fb.me/ad",
    }
    odd = one_message(text_msg("wamid.AD2", referral={"headline": 7, "source_id": "", "x": []}))
    assert odd.profile.utm == {"utm_source": "whatsapp_ad"}
    assert one_message(text_msg("wamid.AD3", referral=["x"])).profile.utm == {}


def card(name: str, phone: str, wa_id: str | None) -> dict[str, Any]:
    entry_phone = {"phone": phone, "type": "CELL"} | ({"wa_id": wa_id} if wa_id else {})
    return {"name": {"formatted_name": name}, "phones": [entry_phone]}


def test_shared_contact_cards_own_and_someone_elses() -> None:
    sender = "4915112345678"
    msg = {"from": sender, "id": "wamid.C1", "type": "contacts"}
    own = one_message(msg | {"contacts": [card("Me", "+49 151 12345678", sender)]})
    assert own.kind is MessageKind.CONTACT
    assert own.text == "👤 Me: +49 151 12345678"
    assert own.profile.phone == "+" + sender

    other = one_message(
        msg | {"id": "wamid.C2", "contacts": [card("Bob", "+1 555 0100", "15550100")]}
    )
    assert other.text == "👤 Bob: +1 555 0100"
    assert other.profile.phone == "+" + sender  # Bob's number is content, not identity
    assert other.external_user_id == sender
    assert "15550100" not in json.dumps(dict(other.raw))

    hidden = {k: v for k, v in msg.items() if k != "from"} | {"from_user_id": "US.5"}
    bsuid = one_message(
        hidden | {"id": "wamid.C3", "contacts": [card("Bob", "+1 555 0100", "15550100")]},
        contact(None, user_id="US.5"),
    )
    assert bsuid.external_user_id == "US.5" and bsuid.profile.phone is None


def test_timestamps() -> None:
    assert one_message(text_msg("w1", timestamp="bad")).sent_at == NOW
    assert one_message(text_msg("w2", timestamp="99999999999999999999999")).sent_at == NOW
    assert one_message(text_msg("w3", timestamp=10**30)).sent_at == NOW
    assert (
        one_message({"from": "1", "id": "w4", "type": "text", "text": {"body": ""}}).sent_at == NOW
    )
    assert one_message(text_msg("w5", timestamp=1700000000)).sent_at == dt.datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC
    )


def test_interactive_and_button_replies() -> None:
    list_reply = {"type": "list_reply", "list_reply": {"id": "row-2", "title": "Tuesday"}}
    msg = {"from": "1", "id": "wamid.I", "type": "interactive", "interactive": list_reply}
    event = one_message(msg)
    assert (event.kind, event.text, event.raw["title"]) == (MessageKind.TEXT, "row-2", "Tuesday")
    button = {
        "from": "1",
        "id": "wamid.B",
        "type": "button",
        "button": {"payload": "STOP", "text": "Stop"},
    }
    pressed = one_message(button)
    assert (pressed.text, pressed.raw["payload"]) == ("Stop", "STOP")
    novel = msg | {"id": "wamid.N", "interactive": {"type": "payment_reply", "payment_reply": {}}}
    assert one_message(novel).text == "unsupported message: interactive"


# --------------------------------------------------------------------------
# Hostile bodies
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"\xff\xfe{", id="bad-bytes"),
        pytest.param(b"[]", id="a-list"),
        pytest.param(b'"whatsapp_business_account"', id="a-string"),
        pytest.param(dumps({"object": "page", "entry": [entry(change())]}), id="messenger"),
        pytest.param(dumps({"entry": [entry(change())]}), id="no-object"),
        pytest.param(dumps({"object": "whatsapp_business_account"}), id="no-entry"),
        pytest.param(dumps(envelope()), id="empty-entry"),
        pytest.param(dumps({"object": "whatsapp_business_account", "entry": {}}), id="entry-obj"),
        pytest.param(dumps(envelope(entry())), id="no-changes"),
        pytest.param(dumps(envelope([], "x", 5)), id="entries-not-objects"),
        pytest.param(
            dumps(envelope(entry({"field": "messages", "value": {"messages": [text_msg("w")]}}))),
            id="messages-without-number",
        ),
        pytest.param(b"[" * 100_000, id="deep"),
        pytest.param(
            b'{"object": "whatsapp_business_account", "entry": [' + b"1" * 5000 + b"]}",
            id="huge-int",
        ),
    ],
)
def test_not_an_envelope_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        route(body)


@pytest.mark.parametrize("body", [b"nope", b"{}", dumps({"object": "x", "entry": [1]})])
def test_split_and_parse_reject_a_non_envelope(body: bytes) -> None:
    with pytest.raises(PayloadError):
        split(body, PN)
    with pytest.raises(PayloadError):
        parse(body, NOW)


ODD_MESSAGES: list[Any] = [
    None,
    7,
    [],
    ["a", "list"],
    {},
    {"id": ["x"], "from": {"a": 1}, "type": ["text"]},
    {"id": "w.1", "from": "1", "type": "text", "text": ["body"]},
    {"id": "w.2", "from": "1", "type": "text", "text": {"body": 5}},
    {"id": "w.3", "from": "1", "type": "image", "image": []},
    {"id": "w.4", "from": "1", "type": "image", "image": {"id": ["x"], "caption": {}}},
    {"id": "w.5", "from": "1", "type": "location", "location": {"latitude": "x", "longitude": 1}},
    {
        "id": "w.6",
        "from": "1",
        "type": "location",
        "location": {"latitude": 1e308, "longitude": -0.0},
    },
    {"id": "w.7", "from": "1", "type": "contacts", "contacts": "x"},
    {"id": "w.8", "from": "1", "type": "contacts", "contacts": [[], {"name": [], "phones": {}}]},
    {"id": "w.9", "from": "1", "type": "interactive", "interactive": []},
    {"id": "w.10", "from": "1", "type": "interactive", "interactive": {"type": ["x"]}},
    {
        "id": "w.11",
        "from": "1",
        "type": "order",
        "order": {
            "product_items": [
                {"quantity": 10**40, "item_price": 1e308, "currency": "X"},
                {"quantity": True},
            ]
        },
    },
    {
        "id": "w.12",
        "from": "1",
        "type": "order",
        "order": {
            "product_items": [
                {"quantity": 2, "item_price": 1.5, "currency": "A"},
                {"quantity": 1, "item_price": 1, "currency": "B"},
            ]
        },
    },
    {
        "id": "w.13",
        "from": "1",
        "type": "edit",
        "edit": {"original_message_id": "o", "message": {"type": "edit"}},
    },
    {"id": "w.14", "from": "1", "type": "edit", "edit": []},
    {"id": "w.15", "from": "1", "type": "system", "system": "changed"},
    {"id": "w.16", "from": "1", "type": "reaction", "reaction": {"message_id": 12345, "emoji": 5}},
    {"id": "w.17", "from": "1", "type": "text", "text": {"body": "\ud800 lone surrogate"}},
    {
        "id": "w.18",
        "from": "1",
        "type": "interactive",
        "interactive": {"type": "nfm_reply", "nfm_reply": {"response_json": "[[[["}},
    },
    {"id": "w.19", "from": "1", "type": "unsupported", "errors": "x", "unsupported": []},
    {"id": "w.20", "from": "1", "type": "brand_new_type", "brand_new_type": {}},
    {
        "id": "w.21",
        "from": "1",
        "type": "text",
        "text": {"body": "x"},
        "context": [],
        "referral": "x",
    },
    {"id": "w.22", "from": "1" * 400, "type": "text", "text": {"body": "long sender"}},
    {"id": "w" * 300, "from": "1", "type": "text", "text": {"body": "long wamid"}},
    {"id": 10**40, "from": 10**40, "type": "text", "text": {"body": "int ids"}},
    {"id": "w.23", "type": "text", "text": {"body": "nobody sent this"}},
    {"id": "w.24\n", "from": "1\x00", "type": "text", "text": {"body": "control chars"}},
]


def test_odd_items_inside_an_envelope_never_raise() -> None:
    body = envelope(
        entry(
            change(messages=ODD_MESSAGES, contacts=[[], "x", {"wa_id": []}, contact("1")]),
            change(
                statuses=[
                    None,
                    [],
                    {"id": {}, "status": 5},
                    {"id": "s", "status": "read", "errors": {}},
                ]
            ),
            {"field": "messages", "value": {"metadata": [], "messages": [text_msg("z")]}},
            {"field": "messages", "value": [], "extra": 1},
            {"field": ["x"], "value": {"metadata": {"phone_number_id": PN}}},
            {
                "field": "messages",
                "value": {"metadata": {"phone_number_id": PN}, "messages": {"id": "dict"}},
            },
            {
                "field": "smb_message_echoes",
                "value": {
                    "metadata": {"phone_number_id": PN},
                    "message_echoes": [{}, {"id": "e", "type": "text"}],
                },
            },
            change(field="calls", calls=[{"event": ["x"]}], errors=[{"code": {}}]),
            "not a change",
        ),
        entry(change(number=10**40, messages=[text_msg("big")])),
        {"id": None, "changes": None},
    )
    raw = dumps(body)
    numbers = route(raw)
    assert PN in numbers and str(10**40) in numbers
    events = events_of(raw)
    assert len(events) >= len(ODD_MESSAGES)
    for event in events:
        if isinstance(event, IgnoredEvent):
            assert len(event.event_type) <= 64 and event.event_type.isprintable()
        if isinstance(event, InboundMessage):
            assert event.external_user_id and len(event.external_user_id) <= 255
    by_id = {e.external_id: e for e in events}
    assert describe(by_id["w.22"]) == "ignored messages:no_sender"  # sender id too long
    assert describe(by_id["w.23"]) == "ignored messages:no_sender"  # no sender at all
    assert describe(by_id["w.20"]) == "unknown"
    assert describe(by_id["w.3"]) == "unknown"  # an image without its image
    texts = {e.text: e for e in events if isinstance(e, InboundMessage)}
    assert texts["long wamid"].external_id.startswith("sha256:")
    assert texts["long wamid"].provider_message_id is None
    assert texts["int ids"].external_id == str(10**40)
    # a lone surrogate no database (nor UTF-8) takes: a replacement character
    assert texts["\ufffd lone surrogate"].kind is MessageKind.TEXT
    mixed = by_id["w.12"]
    assert isinstance(mixed, InboundMessage) and "total" not in mixed.text  # two currencies
    huge = by_id["w.11"]
    assert isinstance(huge, InboundMessage) and huge.kind is MessageKind.TEXT


def test_hundred_messages_in_one_post() -> None:
    msgs = [text_msg(f"wamid.{i}", str(15550000000 + i), f"#{i}") for i in range(100)]
    cards = [contact(str(15550000000 + i), f"N{i}") for i in range(100)]
    raw = dumps(envelope(entry(change(messages=msgs, contacts=cards))))
    deliveries = split(raw, PN)
    assert [d.key for d in deliveries] == [f"wamid.{i}" for i in range(100)]
    for i, delivery in enumerate(deliveries):
        (event,) = parse(delivery.body, NOW)
        assert isinstance(event, InboundMessage)
        assert (event.text, event.profile.display_name) == (f"#{i}", f"N{i}")
        assert len(json.loads(delivery.body)["entry"][0]["changes"][0]["value"]["contacts"]) == 1


def test_a_repeated_key_in_one_post_is_kept_once() -> None:
    raw = dumps(envelope(entry(change(messages=[text_msg("dup"), text_msg("dup", body="again")]))))
    assert [d.key for d in split(raw, PN)] == ["dup"]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
SEED = envelope(
    entry(
        change(
            messages=[
                text_msg(
                    "wamid.A", context={"id": "x", "forwarded": True}, referral={"headline": "h"}
                ),
                {
                    "from": "1",
                    "id": "wamid.D",
                    "type": "document",
                    "document": {"id": "d", "filename": "f"},
                },
                {
                    "from": "1",
                    "id": "wamid.E",
                    "type": "edit",
                    "edit": {
                        "original_message_id": "o",
                        "message": {"type": "text", "text": {"body": "b"}},
                    },
                },
                {
                    "from": "1",
                    "id": "wamid.C",
                    "type": "contacts",
                    "contacts": [card("A", "+1", "1")],
                },
            ],
            statuses=[status("wamid.S", "failed", errors=[{"code": 1, "title": "t"}])],
            contacts=[contact("1", user_id="US.1")],
        ),
        change(field="smb_message_echoes", message_echoes=[text_msg("wamid.X") | {"to": "2"}]),
        change(field="user_preferences", user_preferences=[{"value": "stop"}]),
    )
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*path, index))
    return out


SEED_PATHS = [p for p in _paths(SEED) if len(p) > 3]  # inside entry[].changes[]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEED_PATHS), JSON)
def test_any_value_anywhere_inside_never_raises(path: tuple[Any, ...], value: Any) -> None:
    """Replace one node of a varied envelope with any JSON value: route may
    refuse the body (PayloadError), split and parse never raise anything."""
    body = copy.deepcopy(SEED)
    node: Any = body
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    raw = dumps(body)
    try:
        numbers = route(raw)
    except PayloadError:
        return
    for number in numbers:
        for delivery in split(raw, number):
            events = parse(delivery.body, NOW)
            assert [e.external_id for e in events] == [delivery.key]
            assert len(delivery.key) <= 255
    parse(raw, NOW)


# -- verified handles (SenderProfile.phone_verified) --------------------------------------


def test_the_phone_from_wa_id_is_verified() -> None:
    # corpus pywa_updates/message.json "text": value.contacts[].wa_id is the sender's
    text = events_of(dumps(_variants("message.json")["text"]))[0]
    assert isinstance(text, InboundMessage)
    assert text.profile.phone == "+972987654321" and text.profile.phone_verified is True
    assert text.profile.email is None and text.profile.email_verified is False
    # corpus "contacts": three cards, all with the sender's own wa_id
    cards = events_of(dumps(_variants("message.json")["contacts"]))[0]
    assert isinstance(cards, InboundMessage)
    assert cards.profile.phone == "+972987654321" and cards.profile.phone_verified is True


def test_a_card_never_gives_a_verified_phone_that_is_not_the_senders() -> None:
    # built here: Bob's card from a sender known only by a BSUID
    hidden = {"from_user_id": "US.5", "id": "wamid.VC", "type": "contacts"}
    bsuid = one_message(
        hidden | {"contacts": [card("Bob", "+1 555 0100", "15550100")]},
        contact(None, user_id="US.5"),
    )
    assert bsuid.profile.phone is None and bsuid.profile.phone_verified is False
    only_id = one_message(text_msg("wamid.VB", sender="US.888"))
    assert only_id.profile.phone is None and only_id.profile.phone_verified is False
    # corpus outgoing_message.json "text": a Business app echo is the
    # business's own, to the customer: no phone of anyone's
    [echo] = events_of(dumps(_variants("outgoing_message.json")["text"]))
    assert isinstance(echo, InboundMessage) and echo.echo
    assert echo.profile.phone is None and echo.profile.phone_verified is False
