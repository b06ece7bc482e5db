"""The "one client" scenario (issue 16, "Shown by"), per CRM, on one stack
with the web chat, WhatsApp, Telegram and the e-mail channel connected, on
the CRM's shipped demo mapping.

1. A web chat visitor types a phone P ("+7 999 555-01-02") and an address E
   into the pre-chat form and writes "web 1".
2. P's WhatsApp number (wa_id = P's digits) writes "wa 1".
3. A Telegram user writes "tg 1" (synced: the CRM has them) and then
   shares their own contact with P.
4. E writes "mail 1" in a mail whose topmost Authentication-Results says
   ``dmarc=pass`` for its From.

Then:

* the bridge: one live client for all four channel users, with its merges
  and their evidence (``bridge contacts show --json``);
* the CRM (its sandbox's state): the Telegram user's CRM contact merged
  into the client's (HubSpot) or linked to it by a note on each (amoCRM,
  Bitrix24: no merge API); WhatsApp and, from the merge on, Telegram on the
  web chat's open deal/lead (the demo mappings' ``reuse: open``; the deal
  the Telegram conversation had opened before keeps "tg 1"), the mail on a
  ticket/lead of its own (their ``email`` rule: ``reuse: conversation``);
  the address typed into the form and proven by the mail on the CRM
  contact; one owner; every customer entry in order, each showing its
  channel;
* a rep's reply in the client's latest conversation goes out by e-mail
  (the channel the client last wrote from), and on no other channel; in
  amoCRM a notes-mode reply on the lead (``@client``) goes to that lead's
  last channel (Telegram);
* ``bridge contacts unmerge`` of the merge that joined the Telegram user:
  two live clients again, each conversation on its origin's contact and its
  own deal/lead, the Telegram user's next message theirs, the split noted
  in the CRM (on both contacts where the CRM kept both; HubSpot merged the
  records and cannot split them: the one record is noted).

Real HTTP to the stack (gunicorn, RQ workers, Redis, the sandboxes); no
mocks. On PostgreSQL when the suite has one (``make_stack_once``).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from bench.stack import ROOT, Stack
from bench.traffic import wait_until
from bridge import outbox
from bridge.identity import live_contact
from bridge.reach import WORDS
from bridge.registry import channel_class
from bridge.tables import ChannelAccount, Contact, Conversation, Message
from crm_adapters.amocrm.sources import source_name as amo_source_name
from tests.support.crm_views import Vendor, fast_stack, runtime_of

pytestmark = pytest.mark.integration

CRMS = ("hubspot", "amocrm", "bitrix24")
#: besides the demo bot (Telegram), which every demo stack connects
CHANNELS = ("webchat", "whatsapp", "email")
#: the order the client writes in
ORDER = ("webchat", "whatsapp", "telegram", "email")
CHATS = ("webchat", "whatsapp", "telegram")

NAME = "Anna Petrova"
PHONE_TYPED = "+7 999 555-01-02"
PHONE = "+79995550102"
WA_ID = "79995550102"
EMAIL = "anna.petrova@mail.example"
TG_USER = 700_123_401
TG_FROM = {"id": TG_USER, "is_bot": False, "first_name": "Anna", "last_name": "Petrova"}
#: what the customer's entries say in the CRM (their first line), in order
TEXTS = ["web 1", "wa 1", "tg 1", "👤 Anna Petrova: 79995550102", "My order"]
REPLY = "Hello Anna, your order ships today"
#: what becomes of two CRM contacts of one client (``ContactMerge.crm_action``)
CRM_MERGE = {"hubspot": "merged", "amocrm": "linked", "bitrix24": "linked"}


# -- the customer's side -----------------------------------------------------------------


def _widget(stack: Stack) -> tuple[str, str]:
    """The demo widget's key and its site's origin (what a browser sends)."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            account = session.get(ChannelAccount, stack.seeded.webchat_account_id)
            assert account is not None
            return account.key, str((account.settings or {})["origins"][0])
    finally:
        runtime.close()


def webchat_writes(stack: Stack, text: str) -> Callable[[], list[str]]:
    """A visitor fills the pre-chat form (name, a typed phone, an e-mail),
    ticks the consent box and writes (channel_adapters/webchat/api.py).
    Returns how the visitor's widget reads its conversation (the texts)."""
    key, origin = _widget(stack)
    http = requests.Session()
    http.headers["Origin"] = origin
    r = http.post(f"{stack.bridge_url}/widget/{key}/session", json={}, timeout=30)
    assert r.status_code == 200, r.text
    page = f"{origin}/sandbox/site/"
    body = {
        "id": secrets.token_hex(8),
        "text": text,
        "profile": {"name": NAME, "phone": PHONE_TYPED, "email": EMAIL},
        "consent": {
            "given": True,
            "version": "1",
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "page": page,
        },
        "context": {"page_url": page, "language": "en"},
    }
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    r = http.post(f"{stack.bridge_url}/widget/{key}/messages", json=body, headers=auth, timeout=30)
    assert r.status_code == 202, r.text

    def history() -> list[str]:
        got = http.get(f"{stack.bridge_url}/widget/{key}/messages", headers=auth, timeout=30)
        assert got.status_code == 200, got.text
        return [str(m["text"]) for m in got.json()["messages"]]

    return history


def whatsapp_writes(stack: Stack, text: str) -> None:
    answer = Vendor(stack, "whatsapp").post("_customer", text=text, name=NAME, **{"from": WA_ID})
    assert answer["status"] == 200, answer


def _telegram(stack: Stack, message_id: int, **content: Any) -> None:
    chat = {"id": TG_USER, "type": "private", "first_name": "Anna", "last_name": "Petrova"}
    message = {"message_id": message_id, "from": TG_FROM, "chat": chat, "date": int(time.time())}
    answer = stack.deliver({"message": {**message, **content}})
    assert answer["status"] == 200, answer


def telegram_writes(stack: Stack, text: str, message_id: int = 1) -> None:
    _telegram(stack, message_id, text=text)


def telegram_shares_contact(stack: Stack) -> None:
    """The user shares their own contact: ``contact.user_id`` is ``from.id``,
    Telegram's proof that the number is theirs (Bot API ``Contact``)."""
    contact = {"phone_number": WA_ID, "first_name": "Anna", "last_name": "Petrova"}
    _telegram(stack, 2, contact={**contact, "user_id": TG_USER})


def mail_writes(stack: Stack, text: str) -> None:
    """E writes to the demo mailbox; the receiving MTA's (topmost)
    Authentication-Results says DMARC passed for the From domain (RFC 8601)."""
    results = (
        "mx.demo.example; spf=pass smtp.mailfrom=mail.example; "
        "dkim=pass header.d=mail.example; dmarc=pass header.from=mail.example"
    )
    answer = Vendor(stack, "email").post(
        "_deliver",
        name=NAME,
        subject="My order",
        text=text,
        headers={"Authentication-Results": results},
        **{"from": EMAIL},
    )
    assert answer["delivered"], answer


# -- the bridge's side ---------------------------------------------------------------------


def cli(stack: Stack, *args: str) -> str:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def show(stack: Stack, ref: int | str) -> dict[str, Any]:
    return json.loads(cli(stack, "contacts", "show", str(ref), "--json"))  # type: ignore[no-any-return]


def conversations(stack: Stack) -> dict[str, dict[str, Any]]:
    """The bridge's conversations by channel kind: the live client each is
    on, the contact it started as, its CRM entity."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            rows = session.execute(
                select(Conversation, ChannelAccount.kind).join(
                    ChannelAccount, ChannelAccount.id == Conversation.channel_account_id
                )
            ).all()
            return {
                kind: {
                    "id": conv.id,
                    "live": live_contact(session, conv.contact_id).id,
                    "origin": conv.origin_contact_id,
                    "entity": conv.crm_entity_id,
                    "before": conv.crm_entity_before,
                    "crm_contact": conv.crm_contact_id,
                }
                for conv, kind in rows
            }
    finally:
        runtime.close()


def live_clients(stack: Stack) -> int:
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Contact)
                    .where(
                        Contact.tenant_id == stack.seeded.tenant_id,
                        Contact.merged_into_id.is_(None),
                    )
                )
                or 0
            )
    finally:
        runtime.close()


def crm_contact_of(stack: Stack, contact_id: int) -> str | None:
    """The CRM contact the bridge keeps for one of its contacts."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            contact = session.get(Contact, contact_id)
            assert contact is not None
            return contact.crm_contact_id
    finally:
        runtime.close()


def account_names(stack: Stack) -> dict[str, str]:
    """The channel accounts' names by kind (as connected by the demo)."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            rows = session.execute(select(ChannelAccount.kind, ChannelAccount.name)).all()
    finally:
        runtime.close()
    return {kind: name for kind, name in rows}


def outbound(stack: Stack) -> dict[str, list[str]]:
    """The texts of the bridge's outbound rows, by channel kind."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            rows = session.execute(
                select(ChannelAccount.kind, Message.text)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .join(ChannelAccount, ChannelAccount.id == Conversation.channel_account_id)
                .where(Message.direction == outbox.OUT)
                .order_by(Message.id)
            ).all()
    finally:
        runtime.close()
    out: dict[str, list[str]] = {}
    for kind, text in rows:
        out.setdefault(kind, []).append(text or "")
    return out


def synced(stack: Stack, n: int) -> bool:
    return bool(stack.bridge_status()["messages"]["in"].get("synced", 0) == n)


def mail_sent(stack: Stack) -> list[str]:
    sent = Vendor(stack, "email").get("_sent", to=EMAIL)["sent"]
    return [str(m["text"]).strip() for m in sent]


# -- the CRM's side ------------------------------------------------------------------------
#
# Each CRM read as the same few facts:
#   contacts  the CRM contact ids (not deleted)
#   entities  the deals/leads/tickets: {id: (open, owner, contact id)}
#   owner     the contact's owner
#   entries   the customer's entries, oldest first: (order key, first line
#             of the text, the channel the CRM shows for it or None)


class HubSpotSide:
    """Contacts, deals and tickets; the entries are the inbox threads'
    messages, one thread per conversation, each under its channel account
    (the name it was connected with: "Demo bot", "Demo WhatsApp", ...)."""

    def __init__(self, stack: Stack) -> None:
        r = requests.get(f"{stack.sandbox_url}/hubspot/_state", timeout=30)
        r.raise_for_status()
        data = r.json()
        self.state = data["accounts"][0] if "accounts" in data else data

    def contacts(self) -> list[str]:
        return [c["id"] for c in self.state["contacts"] if not c["archived"]]

    def owner(self, contact: str) -> str:
        found = next(c for c in self.state["contacts"] if c["id"] == contact)
        return str(found["properties"].get("hubspot_owner_id"))

    def entities(self) -> dict[str, tuple[bool, str, str | None]]:
        closed = {"closedwon", "closedlost", "4"}  # deal stages; ticket stage 4: Closed
        out: dict[str, tuple[bool, str, str | None]] = {}
        for kind, stage in (("deals", "dealstage"), ("tickets", "hs_pipeline_stage")):
            for item in self.state[kind]:
                props = item["properties"]
                contact = next(
                    (
                        a["fromId"]
                        for a in self.state["associations"]
                        if a["fromObjectType"] == "contacts" and a["toId"] == item["id"]
                    ),
                    None,
                )
                out[item["id"]] = (
                    props.get(stage) not in closed,
                    str(props.get("hubspot_owner_id")),
                    contact,
                )
        return out

    def emails(self, contact: str) -> list[str]:
        found = next(c for c in self.state["contacts"] if c["id"] == contact)
        return [e for e in (found["properties"].get("email"),) if e]

    def reachable(self, contact: str) -> str | None:
        found = next(c for c in self.state["contacts"] if c["id"] == contact)
        return found["properties"].get("bridge_reachable")  # type: ignore[no-any-return]

    def notes(self, contact: str) -> list[str]:
        mine = {
            a["toId"]
            for a in self.state["associations"]
            if a["fromObjectType"] == "contacts"
            and a["fromId"] == contact
            and a["toObjectType"] == "notes"
        }
        return [
            str(n["properties"].get("hs_note_body") or "")
            for n in self.state["notes"]
            if n["id"] in mine
        ]

    def entries(self, contacts: set[str]) -> list[tuple[Any, str, str | None]]:
        names = {a["id"]: a["name"] for a in self.state["channel_accounts"]}
        out = []
        for thread in self.state["threads"]:
            if thread["associatedContactId"] not in contacts:
                continue
            for m in thread["messages"]:
                if m["direction"] == "INCOMING":
                    first = m["text"].split("\n")[0]
                    out.append((m["createdAt"], first, names.get(thread["channelAccountId"])))
        return sorted(out, key=lambda e: e[0])

    def shown_channel(self, kind: str, names: dict[str, str]) -> str:
        return names[kind]


class AmoCrmSide:
    """Contacts and leads; the entries are the amojo chats' messages (one
    chat per conversation), each chat showing the name of the amoCRM source
    whose ``external_id`` it carries (``<kind>-<account id>``, FACTS 1.13;
    crm_adapters/amocrm/inbox.py ``source_of``): the setup registered one
    per channel account through the Sources API (UNCONFIRMED, not in the
    stored contracts; crm_adapters/amocrm/sources.py), named by the
    channel's title and the account's name."""

    def __init__(self, stack: Stack) -> None:
        data = stack.amocrm_state()
        self.state = data["accounts"][0] if "accounts" in data else data

    def contacts(self) -> list[str]:
        return [str(c["id"]) for c in self.state["contacts"] if not c.get("is_deleted")]

    def owner(self, contact: str) -> str:
        found = next(c for c in self.state["contacts"] if str(c["id"]) == contact)
        return str(found["responsible_user_id"])

    def entities(self) -> dict[str, tuple[bool, str, str | None]]:
        return {
            str(lead["id"]): (
                lead["status_id"] not in (142, 143) and not lead.get("is_deleted"),
                str(lead["responsible_user_id"]),
                str(lead["contacts"][0]["id"]) if lead.get("contacts") else None,
            )
            for lead in self.state["leads"]
        }

    def emails(self, contact: str) -> list[str]:
        found = next(c for c in self.state["contacts"] if str(c["id"]) == contact)
        return [
            str(v["value"])
            for f in found.get("custom_fields_values") or ()
            if f.get("field_code") == "EMAIL"
            for v in f["values"]
        ]

    def notes(self, contact: str) -> list[str]:
        return [
            str((n.get("params") or {}).get("text") or "")
            for n in self.state["notes"]
            if n["entity_type"] == "contacts" and str(n["entity_id"]) == contact
        ]

    def reachable(self, contact: str) -> str | None:
        found = next(c for c in self.state["contacts"] if str(c["id"]) == contact)
        for field in found.get("custom_fields_values") or ():
            if field.get("field_name") == "bridge_reachable":
                return str(field["values"][0]["value"])
        return None

    def entries(self, contacts: set[str]) -> list[tuple[Any, str, str | None]]:
        out = []
        for chat in self.state["chats"]:
            if str(chat.get("contact_id")) not in contacts:
                continue
            shown = chat.get("source_name")  # None: amoCRM would show the bare id
            for m in chat["messages"]:
                if m["direction"] == "in":
                    out.append((m["timestamp"], m["text"].split("\n")[0], shown))
        # seconds only: a stable sort keeps each chat's own order
        return sorted(out, key=lambda e: e[0])

    def shown_channel(self, kind: str, names: dict[str, str]) -> str:
        title = channel_class(kind).title
        return amo_source_name(title, names[kind] or title)


class Bitrix24Side:
    """Contacts and leads; the entries are the leads' timeline comments
    ("<name> через <channel> · <time>" on their first line, the demo mapping
    being Russian), in the order written; each conversation is also an Open
    Lines chat of the channel's connector."""

    _HEAD = re.compile(r"^.* через (?P<channel>.+?) · ")

    def __init__(self, stack: Stack) -> None:
        self.state = stack.bitrix24_state()

    def contacts(self) -> list[str]:
        return [str(c["id"]) for c in self.state["contacts"]]

    def owner(self, contact: str) -> str:
        found = next(c for c in self.state["contacts"] if str(c["id"]) == contact)
        return str(found["fields"]["ASSIGNED_BY_ID"])

    def entities(self) -> dict[str, tuple[bool, str, str | None]]:
        return {
            str(lead["id"]): (
                lead["fields"]["STATUS_SEMANTIC_ID"] == "P",
                str(lead["fields"]["ASSIGNED_BY_ID"]),
                lead["fields"].get("CONTACT_ID"),
            )
            for lead in self.state["leads"]
        }

    def emails(self, contact: str) -> list[str]:
        found = next(c for c in self.state["contacts"] if str(c["id"]) == contact)
        return [str(e["VALUE"]) for e in found["fields"].get("EMAIL") or ()]

    def notes(self, contact: str) -> list[str]:
        found = next(c for c in self.state["contacts"] if str(c["id"]) == contact)
        return [str(c["COMMENT"]) for c in found["timeline"]["comments"]]

    def reachable(self, contact: str) -> str | None:
        found = next(c for c in self.state["contacts"] if str(c["id"]) == contact)
        return found["fields"].get("UF_CRM_REACHABLE")  # type: ignore[no-any-return]

    def entries(self, contacts: set[str]) -> list[tuple[Any, str, str | None]]:
        out = []
        for lead in self.state["leads"]:
            if str(lead["fields"].get("CONTACT_ID")) not in contacts:
                continue
            for c in lead["timeline"]["comments"]:
                head, _, body = str(c["COMMENT"]).partition("\n")
                found = self._HEAD.match(head)
                if found and "Менеджер" not in head:
                    out.append((c["ID"], body.split("\n")[0], found.group("channel")))
        return sorted(out, key=lambda e: e[0])

    def shown_channel(self, kind: str, names: dict[str, str]) -> str:
        return channel_class(kind).title

    def chat_channels(self) -> dict[str, str]:
        """Each Open Lines chat's connector's channel: external user -> name."""
        return {c["external_user_id"]: c["name"] for c in self.state["chats"]}


SIDES = {"hubspot": HubSpotSide, "amocrm": AmoCrmSide, "bitrix24": Bitrix24Side}


def reach_line(crm: str, *answers: tuple[str, str]) -> str:
    """The CRM contact's ``{client.reachable}`` field as the demo mapping
    words it (HubSpot's in English, the others' in Russian)."""
    language = "en" if crm == "hubspot" else "ru"
    return "; ".join(f"{channel_class(k).title}: {WORDS[why][language]}" for k, why in answers)


def shows_reach(stack: Stack, crm_contact: str, line: str) -> Callable[[], bool]:
    return lambda: SIDES[stack.crm](stack).reachable(crm_contact) == line


def rep_replies_in_latest_chat(stack: Stack, crm_contact: str, text: str) -> dict[str, Any]:
    """A rep answers in the CRM's conversation view, in the client's most
    recent conversation (where the client wrote last)."""
    if stack.crm == "hubspot":
        # the sandbox answers in the contact's most recent thread
        return stack.reply(crm_contact, text)
    if stack.crm == "amocrm":
        # the sandbox answers in the contact's chat with the newest message
        return Vendor(stack, "amocrm").post("_reply", contact_id=int(crm_contact), text=text)
    chats = stack.bitrix24_state()["chats"]
    latest = max(chats, key=lambda c: max(m["date"] for m in c["messages"]))
    return Vendor(stack, "bitrix24").post(
        "_reply", conversation=latest["external_chat_id"], text=text
    )


def rep_replies_in_newest_chat(stack: Stack, text: str) -> dict[str, Any]:
    """A rep answers in the chat with the newest message (amoCRM, Bitrix24)."""
    if stack.crm == "amocrm":
        chats = AmoCrmSide(stack).state["chats"]
        newest = max(chats, key=lambda c: max(m["timestamp"] for m in c["messages"]))
        return Vendor(stack, "amocrm").post(
            "_reply", conversation=newest["conversation_id"], text=text
        )
    return rep_replies_in_latest_chat(stack, "", text)


# -- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("crm", CRMS)
def test_one_client_across_four_channels(  # type: ignore[no-untyped-def]
    make_stack_once, monkeypatch: pytest.MonkeyPatch, crm: str
):
    # the demo mailbox's webhook key (sandbox.demo.connect_email names it):
    # the stack's web process checks the sandbox's signature with it
    monkeypatch.setenv("BRIDGE_DEMO_MAIL_WEBHOOK_KEY", secrets.token_urlsafe(32))
    stack: Stack = fast_stack(make_stack_once, crm, CHANNELS, workers=2)

    # 1-4. the client writes, one channel after the other (each synced
    # first: "in order" is the order the client wrote in)
    widget_history = webchat_writes(stack, "web 1")
    assert wait_until(lambda: synced(stack, 1), timeout=30), stack.bridge_status()
    whatsapp_writes(stack, "wa 1")
    assert wait_until(lambda: synced(stack, 2), timeout=30), stack.bridge_status()
    telegram_writes(stack, "tg 1")
    assert wait_until(lambda: synced(stack, 3), timeout=30), stack.bridge_status()
    telegram_shares_contact(stack)  # a message of its own in the chat
    assert wait_until(lambda: synced(stack, 4), timeout=30), stack.bridge_status()
    mail_writes(stack, "mail 1")
    assert wait_until(lambda: synced(stack, 5), timeout=30), stack.bridge_status()
    status = stack.bridge_status()
    assert status["parked"] == [] and status["failed"] == [], status

    # -- the bridge: one client, its merges with their evidence --------------------
    convs = conversations(stack)
    assert sorted(convs) == sorted(ORDER)
    (client_id,) = {c["live"] for c in convs.values()}
    assert live_clients(stack) == 1
    # the CRM side of the merges is settled by the syncs (bridge.pipeline.inbound.clients)
    assert wait_until(
        lambda: all(m["crm"] != "pending" for m in show(stack, client_id)["merges"]), timeout=30
    )
    client = show(stack, client_id)
    assert [c["channel"] for c in client["conversations"]] == list(ORDER)
    # each conversation keeps the contact it started as (the mail's sender
    # was a client of its own until its proven address met the one typed
    # into the web chat before)
    origins = {c["channel"]: c["started_as"] for c in client["conversations"]}
    assert origins["webchat"] == client_id
    assert len(set(origins.values())) == 4
    handles = {(i["kind"], i["value"], i["verified"]) for i in client["identities"]}
    assert ("phone", PHONE, False) in handles  # typed into the web chat's form
    assert ("phone", PHONE, True) in handles  # WhatsApp's sender, Telegram's own contact
    assert ("email", EMAIL, True) in handles  # DMARC passed for the From
    merges = client["merges"]
    assert [(m["merged"], m["into"], m["reason"]) for m in merges] == [
        (origins["whatsapp"], client_id, "same verified phone"),
        (origins["telegram"], client_id, "same verified phone"),
        (origins["email"], client_id, "same verified email"),
    ]
    wa_merge, tg_merge, mail_merge = merges
    assert mail_merge["evidence"]["source"] == "email: sender"
    assert mail_merge["evidence"]["matched"] == [
        {"contact": client_id, "verified": False, "source": "webchat: not verified"}
    ]
    # the evidence: WhatsApp's proven number met the number typed into the
    # web chat before it; Telegram's met both
    assert wa_merge["evidence"]["source"] == "whatsapp: proven by the channel"
    assert wa_merge["evidence"]["matched"] == [
        {"contact": client_id, "verified": False, "source": "webchat: not verified"}
    ]
    assert tg_merge["evidence"]["source"] == "telegram: proven by the channel"
    assert {m["source"] for m in tg_merge["evidence"]["matched"]} == {
        "webchat: not verified",
        "whatsapp: proven by the channel",
    }
    assert client["links"] == []
    assert {r["channel"] for r in client["reachability"] if r["reachable"]} == set(ORDER)

    # -- the CRM: one client, one owner, every entry in order with its channel -------
    side = SIDES[crm](stack)
    crm_contact = client["crm_contact_id"]
    # the channels that reach the client, on the CRM contact: the demo
    # mappings' live field, rewritten as the client came on each channel
    everywhere = reach_line(crm, *((k, "window_open" if k == "whatsapp" else "ok") for k in ORDER))
    assert wait_until(shows_reach(stack, crm_contact, everywhere), timeout=30), SIDES[crm](
        stack
    ).reachable(crm_contact)
    # WhatsApp's number joined the client before its first sync (no CRM
    # contact of its own); the Telegram user had one when they shared their
    # number: HubSpot merges the two CRM contacts (its merge API); amoCRM and
    # Bitrix24 have none an integration may use (crm_adapters/*/merge.py),
    # so both contacts get a note naming the other, and the bridge writes to
    # the survivor from then on
    assert wa_merge["crm"] is None
    assert tg_merge["crm"] == CRM_MERGE[crm], tg_merge
    tg_crm_contact = crm_contact_of(stack, origins["telegram"])
    assert tg_crm_contact not in (None, crm_contact)
    if CRM_MERGE[crm] == "merged":
        assert side.contacts() == [crm_contact]
        assert any(f"#{tg_crm_contact}" in n for n in side.notes(crm_contact))
    else:
        assert side.contacts() == [crm_contact, tg_crm_contact]
        for one, other in ((crm_contact, tg_crm_contact), (tg_crm_contact, crm_contact)):
            assert any(f"#{other}" in n and f"#{crm_contact}" in n for n in side.notes(one))
    clients_crm = set(side.contacts())
    # the messages after the merge went to the survivor
    assert convs["email"]["crm_contact"] == crm_contact
    entities = side.entities()
    chat_entity = convs["webchat"]["entity"]
    assert convs["whatsapp"]["entity"] == chat_entity
    # The Telegram conversation had opened a deal/lead of its own before its
    # user shared the number ("tg 1" synced first, as a real user writes
    # before the bot asks for the number). From the merge on it writes to the
    # client's one open deal/lead (reuse: open): the shared contact went
    # there; its own one keeps "tg 1" (the bridge closes no deal) and is its
    # own again if the merge is undone.
    assert convs["telegram"]["entity"] == chat_entity
    tg_entity = convs["telegram"]["before"]
    assert tg_entity not in (None, chat_entity)
    # The demo mappings' e-mail rule opens a ticket (HubSpot) / lead per mail
    # thread (``reuse: conversation``, mappings/demo-*.yaml "email"): the mail
    # is on an open entity of its own, not the chats'. Not a bug: the rule.
    mail_entity = convs["email"]["entity"]
    assert mail_entity not in (None, chat_entity, tg_entity)
    assert {chat_entity, tg_entity, mail_entity} <= set(entities)
    assert all(entities[e][0] for e in (chat_entity, tg_entity, mail_entity)), entities
    assert {contact for _, _, contact in entities.values()} <= clients_crm
    # one owner: the client's, on every contact and deal/lead/ticket
    owners = {owner for _, owner, _ in entities.values()}
    owners |= {side.owner(c) for c in clients_crm}
    assert owners == {client["owner_id"]}, (owners, entities)
    # every entry, in the order written, showing its channel (where it does)
    entries = side.entries(clients_crm)
    assert [text for _, text, _ in entries] == TEXTS, entries
    names = account_names(stack)
    kinds = ["webchat", "whatsapp", "telegram", "telegram", "email"]
    assert [shown for _, _, shown in entries] == [side.shown_channel(k, names) for k in kinds]
    if isinstance(side, Bitrix24Side):
        # and each conversation is an Open Lines chat under its channel's connector
        shown = side.chat_channels()
        assert (shown[WA_ID], shown[str(TG_USER)]) == ("WhatsApp", "Telegram")
        assert sorted(shown.values()) == sorted(channel_class(k).title for k in ORDER)
    # the address E, typed into the web chat (not given to the CRM then),
    # proven by the DMARC-passing mail: on the client's CRM contact now
    assert side.emails(crm_contact) == [EMAIL]

    # -- the rep's reply goes to the channel the client last wrote from --------------
    acks = mail_sent(stack)  # the e-mail rule's acknowledgement of the new ticket
    answer = rep_replies_in_latest_chat(stack, crm_contact, REPLY)
    assert answer["webhook"]["status"] == 200, answer
    assert wait_until(lambda: REPLY in mail_sent(stack), timeout=30), outbound(stack)
    assert mail_sent(stack) == [*acks, REPLY]
    assert Vendor(stack, "whatsapp").get("_sent", to=WA_ID)["sent"] == []
    assert stack.telegram_sent(TG_USER) == []
    assert set(outbound(stack)) == {"email"}  # nothing for the web chat either
    # one client, yet the visitor's widget reads only what was said in it: none
    # of the WhatsApp, Telegram or e-mail history, nor the reply sent by e-mail
    assert widget_history() == ["web 1"]
    if crm == "amocrm":
        # A notes-mode reply on the lead (``@client``) names the lead, not a
        # chat: it goes to the conversation of that lead the client last
        # wrote from (route.py): Telegram here (the shared contact was the
        # client's last message on it; the mail has a lead of its own: the
        # demo e-mail rule opens one per thread). HubSpot's and Bitrix24's
        # replies always name a thread/chat: none names the deal.
        assert convs["telegram"]["entity"] == chat_entity
        note = Vendor(stack, "amocrm").post(
            "_note", lead_id=int(chat_entity), text="@client On the lead: see you"
        )
        assert [w["status"] for w in note["webhooks"]] == [200], note

        def on_telegram() -> bool:
            return [m.get("text") for m in stack.telegram_sent(TG_USER)] == ["On the lead: see you"]

        assert wait_until(on_telegram, timeout=30), outbound(stack)
        assert mail_sent(stack) == [*acks, REPLY]
        assert Vendor(stack, "whatsapp").get("_sent", to=WA_ID)["sent"] == []

    # -- unmerge the Telegram user: two clients again -----------------------------------
    notes_before = side.notes(crm_contact)
    said = cli(stack, "contacts", "unmerge", str(tg_merge["id"]))
    assert f"contact {origins['telegram']}" in said, said
    assert live_clients(stack) == 2
    convs = conversations(stack)
    assert {k: c["live"] for k, c in convs.items()} == {
        "webchat": client_id,
        "whatsapp": client_id,
        "email": client_id,
        "telegram": origins["telegram"],
    }
    kept, split = show(stack, client_id), show(stack, origins["telegram"])
    assert [c["channel"] for c in kept["conversations"]] == ["webchat", "whatsapp", "email"]
    assert [c["channel"] for c in split["conversations"]] == ["telegram"]
    assert [(m["id"], bool(m["undone"])) for m in kept["merges"]] == [
        (wa_merge["id"], False),
        (tg_merge["id"], True),
        (mail_merge["id"], False),
    ]
    assert [i["kind"] for i in split["identities"]] == ["telegram", "phone"]
    # the Telegram user writes again: their own client's message
    telegram_writes(stack, "tg 2", message_id=3)
    assert wait_until(lambda: synced(stack, 6), timeout=30), stack.bridge_status()
    convs = conversations(stack)
    assert convs["telegram"]["live"] == origins["telegram"]
    assert live_clients(stack) == 2

    # the survivor's CRM contact says the two were split (the sync wrote it)
    def split_noted() -> list[str]:
        return [n for n in SIDES[crm](stack).notes(crm_contact) if n not in notes_before]

    assert wait_until(lambda: len(split_noted()) == 1, timeout=30), split_noted()
    assert f"#{tg_crm_contact}" in split_noted()[0]
    if CRM_MERGE[crm] != "merged":
        # each client's CRM contact shows its own channels again (HubSpot
        # keeps one record for both: it cannot split a merge)
        kept_line = reach_line(crm, ("webchat", "ok"), ("whatsapp", "window_open"), ("email", "ok"))
        assert wait_until(shows_reach(stack, crm_contact, kept_line), timeout=30)
        telegram_alone = reach_line(crm, ("telegram", "ok"))
        assert wait_until(shows_reach(stack, tg_crm_contact, telegram_alone), timeout=30)
    side = SIDES[crm](stack)
    # back on the deal/lead it had opened itself
    assert convs["telegram"]["entity"] == tg_entity
    if CRM_MERGE[crm] == "linked":
        # two CRM contacts all along: the split-off client writes to its own,
        # and both are told of the split
        assert convs["telegram"]["crm_contact"] == tg_crm_contact
        assert side.contacts() == [crm_contact, tg_crm_contact]
        assert any(f"#{crm_contact}" in n for n in side.notes(tg_crm_contact)[-1:])
    else:
        # HubSpot merged the two records and has no unmerge (the survivor
        # holds both clients' identity properties): two clients in the
        # bridge, the one record in the CRM, which says they were split
        assert convs["telegram"]["crm_contact"] == crm_contact
        assert side.contacts() == [crm_contact]
    status = stack.bridge_status()
    assert status["parked"] == [] and status["failed"] == [], status
    assert status["followup_failed"] == [], status
    if CRM_MERGE[crm] != "merged":
        # the Telegram user blocks the bot; a rep's reply fails: their
        # contact says so (the failure reported, the contact due, rewritten)
        Vendor(stack, "telegram").post("_block", chat_id=TG_USER, blocked=True)
        answer = rep_replies_in_newest_chat(stack, "Are you there?")
        assert answer["webhook"]["status"] == 200, answer
        blocked = reach_line(crm, ("telegram", "blocked"))
        assert wait_until(shows_reach(stack, tg_crm_contact, blocked), timeout=30), SIDES[crm](
            stack
        ).reachable(tg_crm_contact)
