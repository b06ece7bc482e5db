"""Customer traffic and the checker that reads the CRM back.

``telegram_traffic`` builds realistic Telegram updates for U users × M
messages (one per second of the customer's own clock), shuffles each user's
burst, and redelivers a share of them, as Telegram does after a timeout.
``whatsapp_traffic`` does the same with WhatsApp Cloud API webhook bodies
(one text message with its ``contacts`` card, as Meta posts them), which
``send_all(..., channel="whatsapp")`` hands to the WhatsApp sandbox's
``_deliver`` (signed like Meta, redelivered whole).
``check_hubspot`` reads the sandbox HubSpot and reports, Jepsen-style
(RELIABILITY.md 3.1): lost (accepted but not in the CRM), duplicated (more
than one entry per message), unexpected (entries nobody sent) and
out-of-order conversations.
"""

from __future__ import annotations

import base64
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from crm_adapters.amocrm.fields import identity_field_name
from crm_adapters.amocrm.timeline import parse_marker as amo_marker
from crm_adapters.bitrix24.contacts import identity_value
from crm_adapters.bitrix24.timeline import read_marker as b24_marker
from crm_adapters.freetext import strip_markers

__all__ = [
    "Delivery",
    "Report",
    "check_amocrm",
    "check_hubspot",
    "send_all",
    "telegram_traffic",
    "wait_until",
    "wamid",
    "whatsapp_message",
    "whatsapp_traffic",
]

BASE_DATE = 1_790_000_000
WORDS = [
    "price",
    "delivery",
    "order",
    "size",
    "colour",
    "return",
    "тариф",
    "доставка",
    "заказ",
    "🙂",
]


@dataclass(frozen=True)
class Delivery:
    user: int
    index: int  # the customer's own order within the user's burst
    update: dict[str, Any]
    duplicate: bool = False


def message_text(user: int, index: int) -> str:
    return f"u{user} m{index:03d} {WORDS[(user + index) % len(WORDS)]}"


def arrivals(
    bursts: list[list[Delivery]],
    rng: random.Random,
    *,
    duplicate_rate: float = 0.1,
    shuffle: bool = True,
) -> list[Delivery]:
    """How customers' messages reach the bridge: each user's burst shuffled
    (``shuffle``), about ``duplicate_rate`` of it delivered again at a random
    place (the same body: the provider's retry), the bursts interleaved one
    delivery each in turn."""
    pending = []
    for burst in bursts:
        items = list(burst)
        if shuffle:
            rng.shuffle(items)
        dups = [
            Delivery(d.user, d.index, d.update, True)
            for d in items
            if rng.random() < duplicate_rate
        ]
        for dup in dups:
            items.insert(rng.randrange(len(items) + 1), dup)
        pending.append(items)
    out = []
    while any(pending):
        for items in pending:
            if items:
                out.append(items.pop(0))
    return out


def telegram_update(
    user: int, index: int, *, update_id: int, first_name: str | None = None
) -> dict[str, Any]:
    chat = {"id": user, "first_name": first_name or f"User{user}", "type": "private"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": index + 1,
            "from": {
                "id": user,
                "is_bot": False,
                "first_name": chat["first_name"],
                "language_code": "en",
            },
            "chat": chat,
            "date": BASE_DATE + user % 1000 * 100 + index,
            "text": message_text(user, index),
        },
    }


def telegram_traffic(
    users: int,
    per_user: int,
    *,
    duplicate_rate: float = 0.1,
    reorder: str = "shuffle",
    seed: int = 7,
    first_user: int = 5_000_001,
) -> list[Delivery]:
    """Arrival order: every user's burst shuffled (``reorder="shuffle"``)
    and redelivered in part; the bursts interleaved."""
    rng = random.Random(seed)  # noqa: S311 (test traffic, not crypto)
    bursts = []
    update_id = 900_000_000
    for u in range(users):
        user = first_user + u
        items = []
        for i in range(per_user):
            update_id += 1
            items.append(Delivery(user, i, telegram_update(user, i, update_id=update_id)))
        bursts.append(items)
    return arrivals(bursts, rng, duplicate_rate=duplicate_rate, shuffle=reorder == "shuffle")


#: the demo WhatsApp number's WABA and phone number (``sandbox.whatsapp``);
#: the sandbox's ``_deliver`` rewrites them onto the account it posts for
WA_WABA_ID = "102290129340398"
WA_PHONE_NUMBER_ID = "106540352242922"
WA_DISPLAY_NUMBER = "15550783881"


def wamid(user: int, index: int, salt: str = "") -> str:
    """A message id shaped like Meta's (``wamid.`` + base64 naming the
    sender), the same for the same message: a redelivery keeps it."""
    blob = b"\x15\x02\x00\x11\x18\x12" + f"{user}:{index}:{salt}".encode()
    return "wamid." + base64.b64encode(blob).decode()


def whatsapp_message(
    user: int,
    index: int,
    *,
    timestamp: int,
    text: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A WhatsApp Cloud API webhook body: one text message from ``user``
    (its wa_id: the phone number's digits) with its ``contacts`` card, the
    shape of the corpus's ``message.json`` "text" (pywa's test data)."""
    wa_id = str(user)
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WA_WABA_ID,
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": WA_DISPLAY_NUMBER,
                                "phone_number_id": WA_PHONE_NUMBER_ID,
                            },
                            "contacts": [
                                {"profile": {"name": name or f"Customer {wa_id}"}, "wa_id": wa_id}
                            ],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": wamid(user, index),
                                    "timestamp": str(timestamp),
                                    "text": {"body": text or message_text(user, index)},
                                    "type": "text",
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def whatsapp_traffic(
    users: int,
    per_user: int,
    *,
    duplicate_rate: float = 0.1,
    reorder: str = "shuffle",
    seed: int = 7,
    first_user: int = 79_990_000_001,
    start: int | None = None,
) -> list[Delivery]:
    """``telegram_traffic`` for WhatsApp: ``users`` customers (wa_ids from
    ``first_user``) × ``per_user`` text messages, each customer's one second
    apart on their own clock from ``start`` (default: two hours ago, well
    inside the 24-hour reply window); every burst shuffled and redelivered
    in part (the same body posted again, as Meta retries), the bursts
    interleaved. ``Delivery.update`` is the webhook body."""
    rng = random.Random(seed)  # noqa: S311 (test traffic, not crypto)
    base = int(time.time()) - 7200 if start is None else start
    bursts = []
    for u in range(users):
        user = first_user + u
        items = [
            Delivery(user, i, whatsapp_message(user, i, timestamp=base + u * per_user + i))
            for i in range(per_user)
        ]
        bursts.append(items)
    return arrivals(bursts, rng, duplicate_rate=duplicate_rate, shuffle=reorder == "shuffle")


def send_all(
    url: str,
    deliveries: Iterable[Delivery],
    *,
    threads: int = 8,
    retries: int = 5,
    channel: str = "telegram",
) -> Counter[int]:
    """POST each update to the sandbox's ``_deliver`` (which posts it to the
    bridge's webhook like Telegram, or like Meta with ``channel="whatsapp"``:
    ``Delivery.update`` is then the webhook body); retry a non-2xx like the
    channel does. Returns a Counter of final bridge status codes."""
    codes: Counter[int] = Counter()
    local = threading_local()
    wrap = "payload" if channel == "whatsapp" else "update"

    def one(delivery: Delivery) -> int:
        session = local.session()
        status = 0
        for attempt in range(retries):
            r = session.post(f"{url}/{channel}/_deliver", json={wrap: delivery.update}, timeout=60)
            status = r.json().get("status", r.status_code) if r.ok else r.status_code
            if 200 <= status < 300:
                return status
            time.sleep(0.2 * (attempt + 1))
        return status

    with ThreadPoolExecutor(threads) as pool:
        for status in pool.map(one, deliveries):
            codes[status] += 1
    return codes


class threading_local:  # noqa: N801 — tiny helper: one requests.Session per thread
    def __init__(self) -> None:
        import threading

        self._local = threading.local()

    def session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
        return s


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass
class Report:
    contacts: int = 0
    deals: int = 0
    entries: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    out_of_order: list[int] = field(default_factory=list)
    inbox_messages: int = 0
    inbox_duplicated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unexpected
            or self.out_of_order
            or self.inbox_duplicated
        )

    def summary(self) -> dict[str, Any]:
        return {
            "contacts": self.contacts,
            "deals": self.deals,
            "entries": self.entries,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "unexpected": len(self.unexpected),
            "out_of_order": len(self.out_of_order),
            "inbox_messages": self.inbox_messages,
            "inbox_duplicated": len(self.inbox_duplicated),
        }


def _note_text(body: str) -> str:
    """The customer's words inside the bridge's note body (the last <p>)."""
    import html

    paragraphs = re.findall(r"<p>(.*?)</p>", body, flags=re.S)
    return html.unescape(paragraphs[-1] if paragraphs else body)


def check_hubspot(
    state: dict[str, Any],
    expected: dict[int, list[str]],
    *,
    inbox: bool = True,
    notes: bool = True,
    channel: str = "telegram",
) -> Report:
    """Compare the sandbox HubSpot with what the customers sent.

    ``expected``: the customer's id on ``channel`` (Telegram user id,
    WhatsApp wa_id) -> texts in the customer's order. Notes are read by
    their own time (``hs_timestamp``) and sequence; without notes
    (``notes=False``, an inbox-only mapping) the inbox messages are
    compared instead, by their own time, then the thread's order.
    """
    report = Report()
    contacts = {c["id"]: c for c in state.get("contacts", [])}
    report.contacts = len(contacts)
    report.deals = len(state.get("deals", []))
    user_of_contact = {
        cid: int(c["properties"].get(f"bridge_{channel}_id") or 0) for cid, c in contacts.items()
    }
    if notes:
        _hubspot_notes(state, expected, user_of_contact, report)
    if inbox:
        ids: Counter[str] = Counter()
        chat_got: dict[int, list[tuple[str, int, str]]] = defaultdict(list)
        for thread in state.get("threads", []):
            user = user_of_contact.get(str(thread.get("associatedContactId") or ""), 0)
            for n, m in enumerate(thread.get("messages", [])):
                if m.get("direction") == "INCOMING":
                    report.inbox_messages += 1
                    ids[m.get("integrationIdempotencyId") or m["id"]] += 1
                    chat_got[user].append((str(m.get("timestamp") or ""), n, m.get("text") or ""))
        report.inbox_duplicated = [k for k, n in ids.items() if n > 1]
        if not notes:
            _compare(report, expected, chat_got)
    return report


def _hubspot_notes(
    state: dict[str, Any],
    expected: dict[int, list[str]],
    user_of_contact: dict[str, int],
    report: Report,
) -> None:
    notes = {n["id"]: n for n in state.get("notes", [])}
    report.entries = len(notes)
    note_contact: dict[str, str] = {}
    for assoc in state.get("associations", []):
        if assoc.get("fromObjectType") == "notes" and assoc.get("toObjectType") == "contacts":
            note_contact[assoc["fromId"]] = assoc["toId"]
    by_user: dict[int, list[tuple[str, int, str]]] = defaultdict(list)
    per_bridge_id: Counter[str] = Counter()
    for nid, note in notes.items():
        props = note["properties"]
        per_bridge_id[props.get("bridge_message_id", "")] += 1
        user = user_of_contact.get(note_contact.get(nid, ""), 0)
        by_user[user].append(
            (
                props.get("hs_timestamp", ""),
                int(props.get("bridge_sequence") or 0),
                _note_text(props.get("hs_note_body", "")),
            )
        )
    report.duplicated = [b for b, n in per_bridge_id.items() if n > 1]
    _compare(report, expected, by_user)


def _amocrm_account(state: dict[str, Any]) -> dict[str, Any]:
    return state["accounts"][0] if "accounts" in state else state


def check_amocrm(
    state: dict[str, Any],
    expected: dict[int, list[str]],
    *,
    notes: bool = True,
    chat: bool = True,
    channel: str = "telegram",
) -> Report:
    """Compare the sandbox amoCRM with what the customers sent.

    Notes carry the message's own time and sequence in the bridge's marker
    (hidden in the header, read with the adapter's own parser: the only place
    a note can keep them); chat messages carry the message's timestamp. Both
    are read in that order.
    """
    account = _amocrm_account(state)
    report = Report()
    contacts = {c["id"]: c for c in account.get("contacts", []) if not c.get("is_deleted")}
    report.contacts = len(contacts)
    report.deals = len([lead for lead in account.get("leads", []) if not lead.get("is_deleted")])

    field_name = identity_field_name(channel)  # "Telegram ID", "Whatsapp ID"

    def telegram_id(contact: dict[str, Any]) -> int:
        for value in contact.get("custom_fields_values") or []:
            if value.get("field_name") == field_name:
                return int(value["values"][0]["value"])
        return 0

    user_of_lead: dict[int, int] = {}
    for lead in account.get("leads", []):
        for link in lead.get("contacts") or []:
            cid = link["id"] if isinstance(link, dict) else link
            if cid in contacts:
                user_of_lead[lead["id"]] = telegram_id(contacts[cid])
    got: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    markers: Counter[str] = Counter()
    if notes:
        for note in account.get("notes", []):
            text = (note.get("params") or {}).get("text") or ""
            found = amo_marker(text)
            if note.get("note_type") != "common" or not found:
                continue
            report.entries += 1
            digest, seq, at = found
            markers[digest] += 1
            user = user_of_lead.get(note.get("entity_id"), 0)
            got[user].append((_ms(at), seq or 0, _message_line(text)))
        report.duplicated = [m for m, n in markers.items() if n > 1]
        _compare(report, expected, got)
    if chat:
        ids: Counter[str] = Counter()
        for chat_row in account.get("chats", []):
            for message in chat_row.get("messages", []):
                if message.get("direction") == "in":
                    report.inbox_messages += 1
                    ids[message.get("ref_id") or message["id"]] += 1
        report.inbox_duplicated = [k for k, n in ids.items() if n > 1]
        if not notes:
            chat_got: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
            for chat_row in account.get("chats", []):
                user = int((chat_row.get("client") or {}).get("client_id") or 0)
                for message in chat_row.get("messages", []):
                    if message.get("direction") == "in":
                        chat_got[user].append(
                            (int(message.get("timestamp") or 0), 0, message["text"])
                        )
            _compare(report, expected, chat_got)
    return report


def _compare(
    report: Report, expected: dict[int, list[str]], got: dict[int, list[tuple[Any, int, str]]]
) -> None:
    """Lost, unexpected and out-of-order texts per user; ``got`` holds
    (time, tie-breaker, text) as the CRM shows them."""
    for user, texts in expected.items():
        seen_texts = [t for *_, t in sorted(got.get(user, []))]
        seen = Counter(seen_texts)
        report.lost += [f"{user}:{t}" for t in texts if seen[t] == 0]
        report.unexpected += [f"{user}:{t}" for t in seen if t not in set(texts)]
        if [t for t in seen_texts if t in set(texts)] != [t for t in texts if seen[t]] or any(
            n > 1 for n in seen.values()
        ):
            report.out_of_order.append(user)
    report.unexpected += [
        f"?:{t}" for u, items in got.items() if u not in expected for *_, t in items
    ]


def _ms(at: Any) -> int:
    return round(at.timestamp() * 1000) if at is not None else 0


def _message_line(text: str) -> str:
    """The customer's words in a note / comment: the line after the header
    (markers taken off, whether hidden or the visible form)."""
    lines = strip_markers(text).split("\n")
    return lines[1] if len(lines) >= 2 else lines[0]


def _bitrix24_portal(state: dict[str, Any]) -> dict[str, Any]:
    return state["accounts"][0] if "accounts" in state else state


def check_bitrix24(
    state: dict[str, Any],
    expected: dict[int, list[str]],
    *,
    comments: bool = True,
    chat: bool = True,
    channel: str = "telegram",
) -> Report:
    """Compare the sandbox Bitrix24 with what the customers sent.

    Timeline comments carry the message's own sequence and time in the
    bridge's marker (hidden in the header, read with the adapter's own
    parser); the customer's words are the line after the header. Open Lines
    messages are read
    by their own time (``date``, the customer's send time), then the chat's
    order: a message that arrived late is appended to the chat but dated
    before its successors.
    """
    portal = _bitrix24_portal(state)
    report = Report()
    contacts = {c["id"]: c for c in portal.get("contacts", [])}
    report.contacts = len(contacts)

    # the IM multifield's (VALUE_TYPE, VALUE) of the customer's id on the
    # channel: ("TELEGRAM", "<id>"), ("OTHER", "whatsapp:<wa_id>")
    value_type, prefix = identity_value(channel, "")

    def telegram_id(contact: dict[str, Any]) -> int:
        for im in (contact.get("multifields") or {}).get("IM") or []:
            value = str(im.get("VALUE") or "")
            if im.get("VALUE_TYPE") == value_type and value.startswith(prefix):
                if value[len(prefix) :].isdigit():
                    return int(value[len(prefix) :])
        return 0

    entities: list[tuple[str, dict[str, Any], list[int]]] = []
    for lead in portal.get("leads", []):
        cid = lead["fields"].get("CONTACT_ID")
        entities.append(("lead", lead, [int(cid)] if cid else []))
    for deal in portal.get("deals", []):
        entities.append(("deal", deal, list((deal.get("links") or {}).get("CONTACT_IDS") or [])))
    report.deals = len(entities)
    got: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    markers: Counter[str] = Counter()
    if comments:
        for _, entity, contact_ids in entities:
            user = next((telegram_id(contacts[c]) for c in contact_ids if c in contacts), 0)
            for comment in (entity.get("timeline") or {}).get("comments") or []:
                text = str(comment.get("COMMENT") or "")
                found = b24_marker(text)
                if not found:
                    continue
                report.entries += 1
                digest, seq, at = found
                markers[digest] += 1
                got[user].append((_ms(at), seq or 0, _message_line(text)))
        report.duplicated = [m for m, n in markers.items() if n > 1]
        _compare(report, expected, got)
    if chat:
        ids: Counter[str] = Counter()
        chat_got: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for chat_row in portal.get("chats", []):
            user = int(chat_row.get("external_user_id") or 0)
            for n, message in enumerate(chat_row.get("messages", [])):
                if message.get("direction") == "in":
                    report.inbox_messages += 1
                    ids[message.get("external_id") or str(message["id"])] += 1
                    # the message's own time (``message.date`` the bridge sent,
                    # which the chat shows), then the chat's order
                    chat_got[user].append((int(message.get("date") or 0), n, message["text"]))
        report.inbox_duplicated = [k for k, n in ids.items() if n > 1]
        if not comments:
            _compare(report, expected, chat_got)
    return report
