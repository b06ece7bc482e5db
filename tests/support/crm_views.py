"""What a channel's end-to-end test reads from, and does in, each sandbox
CRM and the bridge it runs (``bench.stack.Stack``), whatever the channel.

The channel tests (``tests/integration/test_<channel>_crms.py``) each run
one stack per CRM on its demo mapping and need the same views of it: the
CRM read back against what the customers sent (``bench.traffic``'s
checkers), a rep answering a customer in the CRM's conversation view, the
customer's conversation as the CRM shows it (directions, texts, delivery
statuses and the reasons of failed replies), and the bridge's own rows.
A view is made for one channel (``kind``): the customer is found in the CRM
by the identity the bridge wrote for that channel.
"""

from __future__ import annotations

import re
from typing import Any

import requests
from sqlalchemy import select

from bench.traffic import Report, check_amocrm, check_bitrix24, check_hubspot
from bridge import outbox
from bridge.config import Settings
from bridge.runtime import Runtime
from bridge.tables import Conversation, Message, Tenant
from crm_adapters.amocrm.fields import identity_field_name
from crm_adapters.bitrix24.contacts import identity_value
from crm_adapters.freetext import strip_markers

__all__ = [
    "FAST",
    "AmoCrmView",
    "Bitrix24View",
    "HubSpotView",
    "VIEWS",
    "CrmView",
    "Vendor",
    "bridge_replies",
    "crm_view",
    "fast_stack",
    "runtime_of",
    "tenant_settings",
]


#: the CRM sandboxes' fast tiers (the Telegram tests'), and the tenant's
#: API budget with them: a channel's test is not about the CRM's limit
FAST: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "hubspot": ({"per_10s": 2000, "search_per_s": 20}, {"rate_per_10s": 2000}),
    "amocrm": ({"per_second": 100}, {"rate_per_second": 100}),
    "bitrix24": (
        {"limits": {"basic": {"drain_per_s": 100, "burst": 250}}},
        {"rate_per_second": 100, "burst": 250},
    ),
}


def fast_stack(make_stack, crm: str, channels: tuple[str, ...], **kwargs: Any):  # type: ignore[no-untyped-def]
    """A stack (``make_stack``: the integration fixtures') on ``crm``'s
    demo with the demo's ``channels`` connected, the CRM at its fast tier."""
    sandbox_tier, tenant_tier = FAST[crm]
    config = {crm: sandbox_tier, **kwargs.pop("sandbox_config", {})}
    stack = make_stack(crm=crm, sandbox_config=config, channels=channels, **kwargs)
    tenant_settings(stack, **tenant_tier)
    return stack


def runtime_of(stack) -> Runtime:  # type: ignore[no-untyped-def]
    return Runtime(Settings.from_env(stack.env()))


def tenant_settings(stack, **values: Any) -> None:  # type: ignore[no-untyped-def]
    """Merge ``values`` into the demo tenant's settings (its API budget)."""
    runtime = runtime_of(stack)
    try:
        with runtime.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            tenant.settings = {**tenant.settings, **values}
    finally:
        runtime.close()


def bridge_replies(stack) -> dict[str, list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """The bridge's outbound rows by the customer's thread id, oldest
    first: ``uid``, ``text``, ``status``, ``attempts``, ``error`` and the
    delivery state the channel reported (``delivery``)."""
    runtime = runtime_of(stack)
    try:
        with runtime.read_session() as session:
            rows = session.execute(
                select(
                    Conversation.external_thread_id,
                    Message.uid,
                    Message.text,
                    Message.status,
                    Message.attempts,
                    Message.payload,
                    Message.last_error,
                )
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(Message.direction == outbox.OUT)
                .order_by(Message.id)
            ).all()
    finally:
        runtime.close()
    out: dict[str, list[dict[str, Any]]] = {}
    for thread, uid, text, status, attempts, payload, error in rows:
        out.setdefault(str(thread), []).append(
            {
                "uid": uid,
                "text": text,
                "status": status,
                "attempts": attempts,
                "delivery": (payload or {}).get("delivery"),
                "error": error,
            }
        )
    return out


class Vendor:
    """A channel's sandbox control API (``/sandbox/<kind>/_...``)."""

    def __init__(self, stack, kind: str) -> None:  # type: ignore[no-untyped-def]
        self.base = f"{stack.sandbox_url}/{kind}"

    def post(self, path: str, **body: Any) -> dict[str, Any]:
        r = requests.post(f"{self.base}/{path}", json=body, timeout=30)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = requests.get(f"{self.base}/{path}", params=params, timeout=30)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


class CrmView:
    """One sandbox CRM as a channel's test sees it."""

    #: what the CRM shows for a reply the bridge reported sent
    delivered = "delivered"

    def __init__(  # type: ignore[no-untyped-def]
        self, stack, kind: str, users: int, per_user: int, *, read_receipts: bool = True
    ) -> None:
        self.stack = stack
        self.kind = kind
        self.users = users
        self.per_user = per_user
        #: False where the channel has none (the CRM's "read" says nothing)
        self.read_receipts = read_receipts

    @property
    def expected_summary(self) -> dict[str, int]:
        """What :meth:`check` reports when every message landed once, in order."""
        return {
            "contacts": self.users,
            "deals": self.users,
            "entries": 0,  # the demo mappings: the conversation only (no note)
            "lost": 0,
            "duplicated": 0,
            "unexpected": 0,
            "out_of_order": 0,
            "inbox_messages": self.users * self.per_user,
            "inbox_duplicated": 0,
        }

    def _post(self, path: str, **body: Any) -> dict[str, Any]:
        r = requests.post(
            f"{self.stack.sandbox_url}/{self.stack.crm}/{path}", json=body, timeout=30
        )
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def check(self, expected: dict[int, list[str]]) -> Report:
        """The CRM read back against what the customers sent (``bench.traffic``)."""
        raise NotImplementedError

    def report_entries(self, failure: str) -> list[str]:
        """What the checker reads as timeline entries among the CRM's
        reports of a failed reply whose shown reason is ``failure``."""
        return []

    def reply(self, user: int | str, text: str) -> dict[str, Any]:
        """A rep answers the customer in the CRM's conversation view."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """The CRM sandbox's state, read once (``messages(user, state)``
        for many customers at one read)."""
        raise NotImplementedError

    def messages(
        self, user: int | str, state: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The customer's conversation in the CRM, in its order: ``direction``
        (in/out), ``text``, and for outgoing ones the delivery ``status``
        the CRM shows (sent, delivered, read, failed) and its ``error``."""
        raise NotImplementedError

    def timeline(self, user: int | str) -> list[str]:
        """Every text the CRM shows about the customer (chat messages,
        timeline entries)."""
        return [m["text"] for m in self.messages(user)]

    def entries_with(self, user: int | str, text: str) -> list[tuple[str, str]]:
        """(direction, text) of the CRM's entries of the customer holding ``text``."""
        return [(m["direction"], m["text"]) for m in self.messages(user) if m["text"] == text]


class HubSpotView(CrmView):
    delivered = "sent"  # HubSpot has no "delivered" (shown SENT)

    def check(self, expected: dict[int, list[str]]) -> Report:
        state = self.stack.hubspot_state()
        assert state["notes"] == []
        return check_hubspot(state, expected, notes=False, channel=self.kind)

    def state(self) -> dict[str, Any]:
        return self.stack.hubspot_state()  # type: ignore[no-any-return]

    def _contact(self, user: int | str, state: dict[str, Any] | None = None) -> dict[str, Any]:
        prop = f"bridge_{self.kind}_id"
        return next(
            c for c in (state or self.state())["contacts"] if c["properties"].get(prop) == str(user)
        )

    def reply(self, user: int | str, text: str) -> dict[str, Any]:
        return self.stack.reply(self._contact(user)["id"], text)  # type: ignore[no-any-return]

    def messages(
        self, user: int | str, state: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        state = state or self.state()
        contact = self._contact(user, state)["id"]
        out = []
        for thread in state["threads"]:
            if thread.get("associatedContactId") != contact:
                continue
            for m in thread["messages"]:
                out.append(
                    {
                        "direction": "in" if m["direction"] == "INCOMING" else "out",
                        "text": m["text"],
                        "status": str(m.get("status") or "").lower(),
                        "error": m.get("errorMessage"),
                        "history": [
                            (h["statusType"], h["at"]) for h in m.get("statusHistory") or []
                        ],
                    }
                )
        return out


class AmoCrmView(CrmView):
    def state(self) -> dict[str, Any]:
        state = self.stack.amocrm_state()
        return state["accounts"][0] if "accounts" in state else state  # type: ignore[no-any-return]

    def _account(self) -> dict[str, Any]:
        return self.state()

    def check(self, expected: dict[int, list[str]]) -> Report:
        account = self._account()
        assert [n for n in account["notes"] if n["note_type"] == "common"] == []
        assert not [lead for lead in account["leads"] if lead.get("is_unsorted")]
        return check_amocrm(account, expected, notes=False, channel=self.kind)

    def reply(self, user: int | str, text: str) -> dict[str, Any]:
        field = identity_field_name(self.kind)
        contact = next(
            c
            for c in self._account()["contacts"]
            if any(
                v["field_name"] == field and v["values"][0]["value"] == str(user)
                for v in c.get("custom_fields_values") or []
            )
        )
        return self._post("_reply", contact_id=contact["id"], text=text)

    def messages(
        self, user: int | str, state: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        # amojo delivery_status: 1 delivered, 2 read, -1 error (with its text)
        codes = {1: "delivered", 2: "read", -1: "failed"}
        out = []
        for chat in (state or self.state())["chats"]:
            if (chat.get("client") or {}).get("client_id") != str(user):
                continue
            for m in chat["messages"]:
                last = (m.get("delivery_statuses") or [{}])[-1]
                out.append(
                    {
                        "direction": m["direction"],
                        "text": m["text"],
                        "status": codes.get(int(last.get("status") or 0), "sent"),
                        "error": last.get("error"),
                    }
                )
        return out


class Bitrix24View(CrmView):
    @property
    def expected_summary(self) -> dict[str, int]:
        # every message is a timeline comment and an Open Lines message
        return {**super().expected_summary, "entries": self.users * self.per_user}

    def check(self, expected: dict[int, list[str]]) -> Report:
        portal = self.stack.bitrix24_state()
        assert len(portal["leads"]) == self.users and portal["deals"] == []
        chat_only = check_bitrix24(portal, expected, comments=False, channel=self.kind)
        assert (chat_only.lost, chat_only.out_of_order, chat_only.unexpected) == ([], [], [])
        assert len(portal["chats"]) == self.users
        assert all(c["crm"] is None for c in portal["chats"])
        return check_bitrix24(portal, expected, channel=self.kind)

    def report_entries(self, failure: str) -> list[str]:
        # the failed reply's timeline comment carries the bridge's marker
        # like a customer's message: the checker reads it as an entry
        return [strip_markers(failure).split("\n")[0]]

    def _chat(self, portal: dict[str, Any], user: int | str) -> dict[str, Any]:
        return next(c for c in portal["chats"] if c["external_user_id"] == str(user))

    def reply(self, user: int | str, text: str) -> dict[str, Any]:
        chat = self._chat(self.stack.bitrix24_state(), user)
        return self._post("_reply", conversation=chat["external_chat_id"], text=text)

    @staticmethod
    def _comments(leads: list[dict[str, Any]]) -> list[str]:
        return [
            str(c.get("COMMENT") or "")
            for lead in leads
            for c in (lead.get("timeline") or {}).get("comments") or []
        ]

    def state(self) -> dict[str, Any]:
        return self.stack.bitrix24_state()  # type: ignore[no-any-return]

    def messages(
        self, user: int | str, state: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        portal = state or self.state()
        chat = self._chat(portal, user)
        # no "failed" in Open Lines: a failed reply is a timeline comment
        # naming the message ("... (message <chat>:<id>): <reason>")
        comments = self._comments(portal["leads"])
        out = []
        for m in chat["messages"]:
            failure = next((c for c in comments if f"(message {chat['id']}:{m['id']})" in c), None)
            # Bitrix24 marks a delivered message read too
            # (imconnector-send-status-delivery.md): without the channel's
            # own read receipts, "read" says nothing
            read = self.read_receipts and m.get("read")
            status = "read" if read else "delivered" if m.get("delivered") else "sent"
            out.append(
                {
                    "direction": m["direction"],
                    # an operator's reply shows under their name: "[b]Name:[/b] [br]text"
                    "text": re.sub(r"^\[b\][^\[]*\[/b\] \[br\]", "", m["text"]),
                    "status": "failed" if failure else status,
                    "error": failure,
                }
            )
        return out

    def contact(self, user: int | str, portal: dict[str, Any] | None = None) -> dict[str, Any]:
        """The customer's CRM contact (found by the channel's IM value)."""
        value_type, value = identity_value(self.kind, str(user))
        return next(
            c
            for c in (portal or self.state())["contacts"]
            if any(
                str(im.get("VALUE_TYPE")) == value_type and str(im.get("VALUE")) == value
                for im in (c.get("multifields") or {}).get("IM") or []
            )
        )

    def timeline(self, user: int | str) -> list[str]:
        portal = self.state()
        mine = str(self.contact(user, portal)["id"])
        leads = [lead for lead in portal["leads"] if str(lead["fields"].get("CONTACT_ID")) == mine]
        return [*super().timeline(user), *self._comments(leads)]

    def entries_with(self, user: int | str, text: str) -> list[tuple[str, str]]:
        """Open Lines shows only the customer's side (imconnector posts as
        the external user): the business's own message is a timeline
        comment under the rep's word, and must not be in the chat."""
        portal = self.stack.bitrix24_state()
        chat = [
            ("in", m["text"]) for m in self._chat(portal, user)["messages"] if text in m["text"]
        ]
        comments = [
            ("out", text)
            for comment in self._comments(portal["leads"])
            if text in comment and "Менеджер" in comment
        ]
        return chat + comments


VIEWS: dict[str, type[CrmView]] = {
    "amocrm": AmoCrmView,
    "bitrix24": Bitrix24View,
    "hubspot": HubSpotView,
}


def crm_view(  # type: ignore[no-untyped-def]
    stack, kind: str, users: int, per_user: int, *, read_receipts: bool = True
) -> CrmView:
    """The view of the stack's CRM for the channel ``kind``."""
    return VIEWS[stack.crm](stack, kind, users, per_user, read_receipts=read_receipts)
