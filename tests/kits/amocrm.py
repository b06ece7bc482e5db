# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""amoCRM's kit: two webhooks per tenant. The account webhooks (lead status,
owner, notes, deleted contacts) are PHP bracket forms, unsigned: the
tenant's URL key is the secret and the body must name the tenant's
account. The chat channel's hook (a rep's reply in amoCRM's chat) is JSON
at the app-level route URL (``.../route/<scope id>``), signed with the
app-wide channel secret (``X-Signature``: hex HMAC-SHA1 of the body; FACTS
1.13), so the body's amojo account must be the tenant's too."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import phonenumbers
import pytest
import requests
import responses
from hypothesis import strategies as st

from bridge.errors import PayloadError, SignatureError, WebhookError
from bridge.identity import normalize_phone
from bridge.model import (
    CrmAccountInfo,
    CrmEventKind,
    CrmRef,
    Installed,
    MessageKind,
    WebhookRequest,
)
from crm_adapters.amocrm import AmoCrmAdapter
from crm_adapters.amocrm.chats import body_signature
from crm_adapters.amocrm.fields import phones_match
from crm_adapters.amocrm.leads import CLOSED_STATUSES
from crm_adapters.amocrm.timeline import marker, marker_hash, parse_marker
from crm_adapters.amocrm.webhooks import decode_brackets, strip_reply_marker
from sandbox.demo import DEMO_CRMS, oauth_install
from tests.kits.base import (
    MARK,
    CallbackAttack,
    CrmKit,
    DeepJson,
    FuzzTarget,
    HostileTarget,
    IsoConversation,
    IsoTenant,
    Property,
    Req,
    TenantSpec,
    TextHelpers,
)
from tests.kits.common import (
    BRACKET_EXAMPLES,
    DATES,
    FORM,
    JSON,
    JSON_VALUES,
    NESTED_FORM,
    PHP_PAIRS,
    SENTENCE,
    T0,
    BrokenInvariant,
    Vendor,
    check_crm_events,
    depth,
    dumps,
    form_tokens,
    json_tokens,
    keys_of,
    mutated,
    php_form,
    php_form_raw,
)
from tests.support.fakes import MemoryCredentials

UTC = dt.UTC

# -- the parser's account --------------------------------------------------------------------

ACCOUNT = "30100"
SUB = "acme"
AMOJO = "5d1c0b6e-0a4d-4c1e-9d3b-2a6f8e9b0c11"
SCOPE = f"chan-1_{AMOJO}"
CHANNEL_SECRET = "channel-secret-1"
CONVERSATION_FIELD = 801
LEAD = re.compile(r"/api/v4/leads/(-?\d+)$")
ACCOUNT_FORM = {"subdomain": SUB, "id": ACCOUNT}
ACCOUNT_PAIRS = [("account[id]", ACCOUNT), ("account[subdomain]", SUB)]


def lead_conversation(lead_id: str) -> str:
    """What the offline amoCRM answers as a lead's conversation uid."""
    return f"conv-of-lead-{lead_id}"


def vendor(method: str, url: str, kwargs: Mapping[str, Any]) -> tuple[int, Any] | None:
    """The account's lead re-read (a reply in a note names the lead only)."""
    parts = urlsplit(url)
    if parts.hostname != f"{SUB}.amocrm.ru":
        return None
    match = LEAD.search(parts.path)
    if method == "GET" and match:
        lead = match.group(1)
        values = [{"value": lead_conversation(lead)}]
        return 200, {
            "id": int(lead),
            "custom_fields_values": [{"field_id": CONVERSATION_FIELD, "values": values}],
        }
    return None


@cache
def adapter() -> AmoCrmAdapter:
    account = CrmAccountInfo(
        tenant_id=1,
        kind="amocrm",
        account_id=ACCOUNT,
        settings={
            "subdomain": SUB,
            "amo_account_id": ACCOUNT,
            "amojo_id": AMOJO,
            "scope_id": SCOPE,
            "conversation_field": CONVERSATION_FIELD,
        },
        app={
            "client_id": "integration-uuid-1",
            "client_secret": "client-secret-1",
            "channel_id": "chan-1",
            "channel_secret": CHANNEL_SECRET,
            "bot_id": "bot-1",
        },
        inbox=True,
    )
    creds = {
        "type": "oauth",
        "access_token": "access",
        "refresh_token": "refresh",
        "expires_at": 4_000_000_000,
    }
    return AmoCrmAdapter(account, MemoryCredentials(creds, refresher=dict))


def chat_request(body: bytes, *, secret: str = CHANNEL_SECRET) -> WebhookRequest:
    """The chat channel's hook: JSON, X-Signature = HMAC-SHA1 of the body."""
    return WebhookRequest(
        method="POST",
        url=f"https://bridge.example/webhooks/crm/amocrm/route/{SCOPE}",
        headers={"content-type": JSON, "x-signature": body_signature(secret, body)},
        body=body,
        received_at=T0,
    )


def form_request(body: bytes) -> WebhookRequest:
    """An account webhook: form-encoded, unsigned, at the tenant's own URL."""
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/crm/amocrm/tenant-key",
        headers={"content-type": FORM, "user-agent": "amoCRM-WebHook-client/1.0"},
        body=body,
        received_at=T0,
    )


def chat_hook(**message: Any) -> dict[str, Any]:
    """The amojo outgoing-message hook (FACTS 1.13)."""
    inner = {
        "id": "amojo-msg-9",
        "type": "text",
        "text": "Yes, it ships tomorrow.",
        "media": "",
        "file_name": "",
        "file_size": 0,
        **message,
    }
    return {
        "account_id": AMOJO,
        "time": 1740820600,
        "message": {
            "receiver": {"id": "amojo-client-1", "client_id": "tg-user-1"},
            "sender": {"id": "amojo-manager-1", "name": "Bob"},
            "conversation": {"id": "amojo-conv-1", "client_id": "conv-1"},
            "timestamp": 1740820600,
            "msec_timestamp": 1740820600123,
            "message": inner,
        },
    }


def chat_seeds() -> list[bytes]:
    payloads = [
        chat_hook(),
        chat_hook(type="picture", media="https://amojo.example/f.jpg", file_size="2048"),
        {"account_id": AMOJO, "action": {"typing": {"expired_at": 1740820700}}},
    ]
    return [dumps(p) for p in payloads]


def account_seeds() -> list[bytes]:
    payloads: list[dict[str, Any]] = [
        {"leads": {"status": [{"id": "900", "status_id": "142", "pipeline_id": "7"}]}},
        {"leads": {"responsible": [{"id": "900", "responsible_user_id": "101"}]}},
        {"leads": {"delete": [{"id": "900"}, {"id": "901"}]}},
        {"contacts": {"delete": [{"id": "501", "type": "contact"}]}},
        {
            "leads": {
                "note": [
                    {
                        "note": {
                            "id": "77",
                            "text": "@client Yes, it ships tomorrow.",
                            "element_id": "900",
                            "created_by": "101",
                            "date_create": "1740820600",
                        }
                    }
                ]
            }
        },
    ]
    out = [php_form({**p, "account": ACCOUNT_FORM}) for p in payloads]
    return out + [php_form_raw({**payloads[0], "account": ACCOUNT_FORM})]


def chat_parse(body: bytes, *, must_verify: bool) -> list[Any] | None:
    amo = adapter()
    req = chat_request(body)
    try:
        amo.verify_webhook(req)
    except (SignatureError, PayloadError):  # signed junk is a 400, another account a 403
        assert not must_verify
    try:
        events = amo.parse_webhook(req)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError)
        return None
    check_crm_events(events)
    assert amo.parse_webhook(req) == events
    return events


def form_parse(body: bytes) -> list[Any] | None:
    amo = adapter()
    req = form_request(body)
    verified = True
    try:
        amo.verify_webhook(req)
    except SignatureError:
        verified = False
    try:
        events = amo.parse_webhook(req)
    except WebhookError as exc:
        assert isinstance(exc, PayloadError)
        return None
    assert verified  # a form that parses and names this account passes
    check_crm_events(events)
    assert amo.parse_webhook(req) == events
    return events


def _fuzz(req: WebhookRequest) -> None:
    amo = adapter()
    with contextlib.suppress(WebhookError):
        amo.verify_webhook(req)
    try:
        events = amo.parse_webhook(req)
    except WebhookError:
        return
    check_crm_events(events)


def fuzz_chat(data: bytes) -> None:
    _fuzz(chat_request(data))


def fuzz_account(data: bytes) -> None:
    _fuzz(form_request(data))


# -- properties ---------------------------------------------------------------------------------


@cache
def _chat_docs() -> list[Any]:
    return [json.loads(s) for s in chat_seeds()]


def with_amojo_account(value: Any) -> Any:
    if isinstance(value, dict):
        return {**value, "account_id": AMOJO}
    return value


def chat_hook_any_signed_body_is_events_or_a_4xx(payload: Any) -> None:
    chat_parse(dumps(payload), must_verify=isinstance(payload, dict))


def chat_hook_any_signed_bytes_are_events_or_a_4xx(body: bytes) -> None:
    chat_parse(body, must_verify=False)


MEDIA = {
    "picture": MessageKind.PHOTO,
    "video": MessageKind.VIDEO,
    "file": MessageKind.DOCUMENT,
    "voice": MessageKind.VOICE,
    "audio": MessageKind.AUDIO,
    "sticker": MessageKind.STICKER,
}


def chat_reply_round_trips(
    message_id: str,
    text: str,
    client_id: str,
    conversation: str,
    receiver: str,
    sender: str,
    msec: int,
    media: tuple[str, int] | None,
) -> None:
    inner: dict[str, Any] = {"id": message_id, "text": text}
    if media is not None:
        inner.update(type=media[0], media="https://amojo.example/f/1", file_size=str(media[1]))
    payload = chat_hook(**inner)
    outer = payload["message"]
    outer["conversation"] = {"id": conversation, "client_id": client_id}
    outer["receiver"] = {"id": "r", "client_id": receiver}
    outer["sender"] = {"id": sender, "name": "Bob"}
    outer["msec_timestamp"] = msec
    events = chat_parse(dumps(payload), must_verify=True)
    assert events is not None
    (event,) = events
    assert event.kind is CrmEventKind.REPLY
    assert (event.external_id, event.text) == (message_id, text)
    assert (event.thread_key, event.crm_thread_id) == (client_id, conversation)
    assert (event.recipient, event.author_id) == (receiver, sender)
    assert event.occurred_at == dt.datetime.fromtimestamp(msec / 1000, UTC)
    if media is None:
        assert event.attachments == ()
    else:
        (attachment,) = event.attachments
        assert attachment.kind is MEDIA[media[0]] and attachment.size == media[1]


def account_webhook_any_form_is_events_or_a_4xx(pairs: list[tuple[str, str]]) -> None:
    form_parse(urlencode(pairs + ACCOUNT_PAIRS).encode())


def account_webhook_any_bytes_are_events_or_a_4xx(body: bytes) -> None:
    amo = adapter()
    req = form_request(body)
    with contextlib.suppress(SignatureError):
        amo.verify_webhook(req)
    with contextlib.suppress(PayloadError):
        check_crm_events(amo.parse_webhook(req))


LEAD_ID = st.integers(1, 10**10).map(str)


def lead_status_and_owner_round_trip_in_order(
    records: list[tuple[str, str, int]], raw_brackets: bool
) -> None:
    payload = {
        "leads": {
            "status": [
                {"id": i, "status_id": s, "responsible_user_id": str(o)} for i, s, o in records
            ],
            "responsible": [{"id": i, "responsible_user_id": str(o)} for i, _s, o in records],
        },
        "account": ACCOUNT_FORM,
    }
    body = (php_form_raw if raw_brackets else php_form)(payload)
    events = form_parse(body)
    assert events is not None and len(events) == 2 * len(records)
    statuses, owners = events[: len(records)], events[len(records) :]
    for event, (lead, status, _owner) in zip(statuses, records, strict=True):  # in order
        # a closed status closes the entity; an open one is its stage now
        closed = int(status) in CLOSED_STATUSES
        assert event.kind is (CrmEventKind.ENTITY_CLOSED if closed else CrmEventKind.ENTITY_STAGE)
        assert event.external_id == f"leads.status:{lead}:{status}"
        assert event.entity == CrmRef("lead", lead)
        assert event.stage == (None if closed else str(status))
    for event, (lead, _status, owner) in zip(owners, records, strict=True):
        assert event.kind is CrmEventKind.OWNER_CHANGED
        assert (event.entity, event.owner_id) == (CrmRef("lead", lead), str(owner))
        assert event.external_id == f"leads.responsible:{lead}:{owner}"


REPLY_TEXT = st.tuples(st.characters(categories=("Lu", "Ll", "Nd")), st.text(max_size=100)).map(
    lambda t: (t[0] + t[1]).strip()
)


def note_reply_round_trips(
    lead: str, note: str, author: int, marker_: str, separator: str, reply: str, nested: bool
) -> None:
    fields = {"id": note, "text": f"{marker_}{separator}{reply}", "element_id": lead}
    fields["created_by"] = str(author)
    record = {"note": fields} if nested else fields
    body = php_form({"leads": {"note": [record]}, "account": ACCOUNT_FORM})
    events = form_parse(body)
    assert events is not None
    (event,) = events
    assert event.kind is CrmEventKind.REPLY
    assert event.text == reply
    assert event.external_id == f"note:{lead}:{note}"
    assert event.crm_thread_id == f"lead:{lead}" and event.entity == CrmRef("lead", lead)
    assert event.thread_key == lead_conversation(lead)  # re-read from the lead
    assert event.author_id == str(author)


def notes_without_the_marker_or_by_the_bridge_are_no_replies(text: str, bridge_id: str) -> None:
    notes = [f"@client {text}\n{marker(bridge_id)}"]  # the bridge's own note
    if strip_reply_marker(text, ("@client", "@клиент")) is None:
        notes.append(text)  # an internal note
    for note_text in notes:
        body = php_form(
            {
                "leads": {"note": [{"note": {"id": "1", "text": note_text, "element_id": "9"}}]},
                "account": ACCOUNT_FORM,
            }
        )
        events = form_parse(body)
        assert events is not None and all(e.kind is not CrmEventKind.REPLY for e in events)


def php_forms_decode_to_what_was_encoded(payload: dict[str, Any], raw: bool) -> None:
    body = (php_form_raw if raw else php_form)(payload)
    if depth(payload) > 8:  # the decoder's depth limit
        with pytest.raises(PayloadError):
            decode_brackets(body)
    else:
        assert decode_brackets(body) == payload


def php_decoder_accepts_or_refuses_with_a_payload_error(body: bytes) -> None:
    try:
        result = decode_brackets(body)
    except PayloadError:
        return
    assert isinstance(result, dict)


def reply_marker_is_taken_off_and_only_a_whole_marker_counts(reply: str, glue: str) -> None:
    markers = ("@client", "@клиент")
    assert strip_reply_marker(f"  @client {reply}", markers) == reply
    assert strip_reply_marker(f"@Клиент: {reply}", markers) == reply
    assert strip_reply_marker(f"@client{glue}{reply}", markers) is None  # "@clientele"
    assert strip_reply_marker(f"x @client {reply}", markers) is None


def bridge_markers_round_trip(
    bridge_id: str, sequence: int | None, at: dt.datetime | None, before: str
) -> None:
    digest, parsed_seq, parsed_at = parse_marker(f"{before}\n{marker(bridge_id, sequence, at)}")
    assert digest == marker_hash(bridge_id) and parsed_seq == sequence
    if at is None:
        assert parsed_at is None
    else:
        assert parsed_at is not None and abs(parsed_at - at) <= dt.timedelta(milliseconds=1)


def bridge_marker_parsing_never_raises(text: str, digits: str) -> None:
    for candidate in (text, f"{text}[bridge:0123456789ab:{digits}:{digits}]"):
        parsed = parse_marker(candidate)
        assert parsed is None or len(parsed[0]) == 12


REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
PHONE_STYLES = st.sampled_from(
    [
        phonenumbers.PhoneNumberFormat.E164,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.RFC3966,
    ]
)


def phones_match_across_international_formats(region: str, style: int) -> None:
    number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if number is None:
        return
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    shown = phonenumbers.format_number(number, style).removeprefix("tel:")
    assert normalize_phone(shown) == e164
    assert phones_match(shown, e164)


def phones_match_never_raises(text: str) -> None:
    phones_match(text, "+79161234567")


def russian_trunk_prefix_matches_plus_seven(local: str, shape: str) -> None:
    typed = shape.format(local[:3], local[3:6], local[6:8], local[8:])
    assert phones_match(typed, "+7" + local)
    assert not phones_match(typed, "+1" + local)


def fuzz_text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    parsed = parse_marker(text)
    if parsed is not None:
        digest, _sequence, at = parsed
        if len(digest) != 12 or (at is not None and at.tzinfo is None):
            raise BrokenInvariant(f"amoCRM parse_marker -> {parsed!r}")
    reply = strip_reply_marker(text, ("@client", "@клиент"))
    if reply is not None and reply != reply.strip():
        raise BrokenInvariant(f"strip_reply_marker left whitespace: {reply!r}")
    phones_match(text, "+79161234567")
    with contextlib.suppress(WebhookError):
        decode_brackets(data)


# -- hostile input ----------------------------------------------------------------------------

CHANNEL_ID = "chan-1"
HOSTILE_SECRET = "amo-channel-secret-1"
A = {"id": "30100", "sub": "acme", "amojo": "5d1c0b6e-0a4d-4c1e-9d3b-2a6f8e9b0c11"}
B = {"id": "30200", "sub": "other", "amojo": "7e2d1c0b-1b5e-4d2f-8e4c-3b7f9a0c1d22"}
HOSTILE_LEAD = "900"


def _uid_digits(uid: str) -> str:
    return str(int(uid[:12], 16))


def _signature(body: bytes, secret: str = HOSTILE_SECRET) -> str:
    # FACTS 1.13: hex HMAC-SHA1(channel secret, raw body), made here independently
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


class AmoAccountTarget(HostileTarget):
    """amoCRM's account webhooks: form-encoded, unsigned; the tenant's URL
    key is the secret and the body must name the tenant's account. JSON at
    the same URL is a chat hook: it must carry ``X-Signature``."""

    name = "amocrm-account"
    kind = "amocrm"
    endpoint = "tenant"
    content_type = FORM
    content_types = (FORM, JSON)
    auth_cases = {
        "forged-account-id": 403,
        "missing-account": 403,
        "missing-account-id": 403,
        "malformed-account-id-container": 403,
        "malformed-account-scalar": 403,
        "malformed-account-id-empty": 403,
        "right-subdomain-wrong-id": 403,
        "json-unsigned": 403,
    }

    def path(self, tenant: str = "A") -> str:
        return f"/webhooks/crm/amocrm/{self.world.tenant_keys['amocrm'][tenant]}"

    @staticmethod
    def fields(uid: str, account: dict[str, str] | None = None) -> dict[str, str]:
        account = A if account is None else account
        return {
            "leads[note][0][note][id]": _uid_digits(uid),
            "leads[note][0][note][text]": f"@client {MARK} it ships tomorrow",
            "leads[note][0][note][note_type]": "4",
            "leads[note][0][note][element_id]": HOSTILE_LEAD,
            "leads[note][0][note][element_type]": "2",
            "leads[note][0][note][created_by]": "101",
            "leads[note][0][note][date_create]": "1740820530",
            "account[subdomain]": account["sub"],
            "account[id]": account["id"],
        }

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        return urlencode(self.fields(uid, A if tenant == "A" else B)).encode()

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict | None:
        if content_type == JSON:
            return {"X-Signature": _signature(body)}
        return None  # unsigned: the account in the body is the proof

    def auth_attack(self, case: str) -> Req:
        fields = self.fields(uuid.uuid4().hex)
        without = {k: v for k, v in fields.items() if not k.startswith("account[")}
        if case == "json-unsigned":
            body = json.dumps({"account_id": A["amojo"], "text": MARK}).encode()
            return Req(self.path(), body, JSON)
        form = {
            "forged-account-id": {**fields, "account[id]": B["id"]},
            "missing-account": without,
            "missing-account-id": {**without, "account[subdomain]": A["sub"]},
            "malformed-account-id-container": {
                **without,
                "account[subdomain]": A["sub"],
                "account[id][0]": A["id"],
            },
            "malformed-account-scalar": {**without, "account": A["id"]},
            "malformed-account-id-empty": {**fields, "account[id]": ""},
            "right-subdomain-wrong-id": {
                **without,
                "account[subdomain]": A["sub"],
                "account[id]": "0",
            },
        }[case]
        return Req(self.path(), urlencode(form).encode(), FORM)


class AmoChatTarget(HostileTarget):
    """amoCRM's chat channel hook at the app-level route URL: JSON,
    ``X-Signature`` = hex HMAC-SHA1 with the channel secret (app-wide, so the
    body's amojo account must be the tenant's too)."""

    name = "amocrm-chat"
    kind = "amocrm"
    endpoint = "route"
    content_type = JSON
    content_types = (FORM, JSON)
    auth_cases = {
        "forged": 403,
        "missing": 403,
        "empty": 403,
        "malformed-not-hex": 403,
        "malformed-short": 403,
        "malformed-huge": 403,
        "malformed-non-ascii": 403,
        "body-swapped": 403,
        "another-account-validly-signed": 403,
        "unsigned-form-at-route": 403,
    }

    def path(self, tenant: str = "A") -> str:
        amojo = (A if tenant == "A" else B)["amojo"]
        return f"/webhooks/crm/amocrm/route/{CHANNEL_ID}_{amojo}"

    def unknown_path(self) -> str:
        return f"/webhooks/crm/amocrm/route/{CHANNEL_ID}_{uuid.uuid4()}"

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        payload = {
            "account_id": (A if tenant == "A" else B)["amojo"],
            "time": 1740820600,
            "message": {
                "receiver": {"id": "amojo-client-1", "client_id": "tg-user-1"},
                "sender": {"id": "amojo-manager-1", "name": "Manager"},
                "conversation": {
                    "id": "amojo-conv-1",
                    "client_id": self.world.conversations["amocrm"],
                },
                "timestamp": 1740820600,
                "msec_timestamp": 1740820600123,
                "message": {"id": f"amojo-{uid}", "type": "text", "text": f"{MARK} reply"},
            },
        }
        return json.dumps(payload).encode()

    def prove(self, path: str, body: bytes, content_type: str, tenant: str = "A") -> dict | None:
        if content_type == JSON:
            return {"X-Signature": _signature(body)}
        return None

    def auth_attack(self, case: str) -> Req:
        path, body = self.path(), self.delivery(uuid.uuid4().hex)
        good = _signature(body)
        if case == "unsigned-form-at-route":
            form = AmoAccountTarget.fields(uuid.uuid4().hex)
            return Req(path, urlencode(form).encode(), FORM)
        if case == "another-account-validly-signed":
            body = self.delivery(uuid.uuid4().hex, tenant="B")  # B's account, A's route
            return Req(path, body, JSON, {"X-Signature": _signature(body)})
        signature = {
            "forged": _signature(body, "not-the-channel-secret"),
            "missing": None,
            "empty": "",
            "malformed-not-hex": "zz" * 20,
            "malformed-short": good[:20],
            "malformed-huge": "a" * 10_240,
            "malformed-non-ascii": "подпись".encode().decode("latin-1"),
            "body-swapped": _signature(self.delivery(uuid.uuid4().hex)),
        }[case]
        headers = {} if signature is None else {"X-Signature": signature}
        return Req(path, body, JSON, headers)


def _forged_code(rsps: responses.RequestsMock) -> None:
    rsps.post(
        "https://acme.amocrm.ru/oauth2/access_token",
        status=400,
        json={"title": "Bad Request", "hint": "Authorization code has been revoked"},
    )


# -- tenant isolation ---------------------------------------------------------------------------

ISO_APP = {
    "client_id": "amo-integration-1",
    "client_secret": "amo-client-secret-1",
    "channel_id": "chan-1",
    "channel_secret": "amo-channel-secret-app-wide",
    "bot_id": "bot-1",
}


def _form(fields: Mapping[str, Any]) -> bytes:
    return "&".join(f"{quote(k, safe='[]')}={quote(str(v))}" for k, v in fields.items()).encode()


def _post(stack: Any, path: str, **body: Any) -> dict[str, Any]:
    r = requests.post(f"{stack.sandbox_url}/{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def _account_state(stack: Any) -> dict[str, Any]:
    state = stack.amocrm_state()
    return state["accounts"][0] if "accounts" in state else state


# -- the kit --------------------------------------------------------------------------------------


class AmoCrmKit(CrmKit):
    kind = "amocrm"
    entity_type = "lead"
    events = {
        "reply": "reply",  # a note starting with the reply marker
        "chat_reply": "reply",  # the chat channel's hook
        "close": "close",
        "owner": "owner",
        "contact_removed": "contact_removed",
    }
    hostile_entity_id = HOSTILE_LEAD
    fast_settings = {"rate_per_second": 100}

    def mapping_text(self) -> str:
        from tests.conftest import ROOT

        return (ROOT / "mappings" / "amocrm.yaml").read_text(encoding="utf-8")

    # -- parsers

    def vendors(self) -> Sequence[Vendor]:
        return [vendor]

    def properties(self) -> Sequence[Property]:
        chat_docs = _chat_docs()
        return [
            Property(
                "amocrm: the chat hook's any signed body is events or a 4xx",
                chat_hook_any_signed_body_is_events_or_a_4xx,
                st.one_of(JSON_VALUES, mutated(chat_docs, keys_of(chat_docs))).map(
                    with_amojo_account
                ),
                examples=(
                    chat_hook(type="picture", media="https://x/y.png", file_size="²"),  # ValueError
                    chat_hook(type="file", media="https://x/y", file_size="9" * 5000),  # ValueError
                    {"account_id": AMOJO, "message": {"message": {"id": 0}}},
                ),
                hostile=True,
            ),
            Property(
                "amocrm: the chat hook's any signed bytes are events or a 4xx",
                chat_hook_any_signed_bytes_are_events_or_a_4xx,
                st.binary(max_size=200),
                examples=(b"[" * 100_000,),  # was RecursionError out of json.loads
                hostile=True,
            ),
            Property(
                "amocrm: a chat reply round-trips",
                chat_reply_round_trips,
                {
                    "message_id": st.text(min_size=1, max_size=40).filter(str.strip),
                    "text": st.text(max_size=300),
                    "client_id": st.text(min_size=1, max_size=40),
                    "conversation": st.text(min_size=1, max_size=40),
                    "receiver": st.text(min_size=1, max_size=40),
                    "sender": st.text(min_size=1, max_size=40),
                    "msec": st.integers(1, 4_102_444_800_000),
                    "media": st.one_of(
                        st.none(), st.tuples(st.sampled_from(sorted(MEDIA)), st.integers(0, 2**40))
                    ),
                },
            ),
            Property(
                "amocrm: the account webhook's any form is events or a 4xx",
                account_webhook_any_form_is_events_or_a_4xx,
                PHP_PAIRS,
                examples=(
                    [("leads[status][²][id]", "900")],  # was ValueError (int("²") in items())
                    [("leads[delete][" + "1" * 5000 + "][id]", "900")],  # was ValueError
                    [
                        ("leads[note][0][note][text]", "@client x"),
                        ("leads[note][0][note][id]", "7"),
                    ],
                ),
                hostile=True,
            ),
            Property(
                "amocrm: the account webhook's any bytes are events or a 4xx",
                account_webhook_any_bytes_are_events_or_a_4xx,
                st.binary(max_size=200),
                examples=("account[id]=30100&leads[delete][²][id]=1".encode(),),
                hostile=True,
            ),
            Property(
                "amocrm: lead status and owner round-trip in order",
                lead_status_and_owner_round_trip_in_order,
                {
                    "records": st.lists(
                        st.tuples(
                            LEAD_ID, st.sampled_from(["142", "143", "20", "1"]), st.integers(1, 999)
                        ),
                        min_size=1,
                        max_size=12,
                    ),
                    "raw_brackets": st.booleans(),
                },
            ),
            Property(
                "amocrm: a note reply round-trips",
                note_reply_round_trips,
                {
                    "lead": LEAD_ID,
                    "note": LEAD_ID,
                    "author": st.integers(1, 10**6),
                    "marker_": st.sampled_from(["@client", "@CLIENT", "@клиент", "@Клиент"]),
                    "separator": st.sampled_from([" ", ": ", " — ", ", ", "\t- "]),
                    "reply": REPLY_TEXT,
                    "nested": st.booleans(),
                },
            ),
            Property(
                "amocrm: notes without the marker or by the bridge are no replies",
                notes_without_the_marker_or_by_the_bridge_are_no_replies,
                {"text": SENTENCE, "bridge_id": st.uuids().map(str)},
            ),
            Property(
                "amocrm: PHP bracket forms decode to what was encoded",
                php_forms_decode_to_what_was_encoded,
                (NESTED_FORM, st.booleans()),
            ),
            Property(
                "amocrm: the bracket decoder accepts or refuses with a PayloadError",
                php_decoder_accepts_or_refuses_with_a_payload_error,
                st.binary(max_size=120),
                examples=BRACKET_EXAMPLES,
            ),
            Property(
                "amocrm: the reply marker is taken off, and only a whole marker counts",
                reply_marker_is_taken_off_and_only_a_whole_marker_counts,
                {
                    "reply": REPLY_TEXT,
                    "glue": st.text(
                        alphabet=string.ascii_letters + string.digits, min_size=1, max_size=3
                    ),
                },
            ),
            Property(
                "amocrm: bridge markers round-trip",
                bridge_markers_round_trip,
                {
                    "bridge_id": st.uuids().map(str),
                    "sequence": st.one_of(st.none(), st.integers(-(2**63), 2**63)),
                    "at": st.one_of(st.none(), DATES),
                    "before": st.text(max_size=40),
                },
            ),
            Property(
                "amocrm: bridge marker parsing never raises",
                bridge_marker_parsing_never_raises,
                (st.text(max_size=60), st.from_regex(r"[0-9]{0,30}", fullmatch=True)),
                examples=(
                    ("", "99999999999999999999"),  # was OSError/OverflowError (year out of range)
                    ("", "9" * 5000),  # was ValueError (> 4300 digits)
                ),
            ),
            Property(
                "amocrm: phones match across international formats",
                phones_match_across_international_formats,
                {"region": st.sampled_from(REGIONS), "style": PHONE_STYLES},
            ),
            Property(
                "amocrm: phone matching never raises",
                phones_match_never_raises,
                st.text(max_size=40),
                examples=("+" + "9" * 300, "８ (916) 123-45-67"),
            ),
            Property(
                "amocrm: the Russian trunk prefix 8 matches +7",
                russian_trunk_prefix_matches_plus_seven,
                (
                    st.from_regex(r"9[0-9]{9}", fullmatch=True),
                    st.sampled_from(["8 ({}) {}-{}-{}", "8{}{}{}{}"]),
                ),
            ),
        ]

    def deep_json(self) -> Sequence[DeepJson]:
        head = b'{"account_id":"' + AMOJO.encode() + b'","x":'
        return [DeepJson("amocrm", head, b"}", lambda body: chat_parse(body, must_verify=False))]

    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        return [
            FuzzTarget(
                "amocrm_chat_hook",
                "AmoCrmAdapter chat hook (X-Signature HMAC-SHA1, JSON)",
                fuzz_chat,
                chat_seeds,
                json_tokens,
            ),
            FuzzTarget(
                "amocrm_account_webhook",
                "AmoCrmAdapter account webhook (PHP bracket form, note replies)",
                fuzz_account,
                account_seeds,
                form_tokens,
            ),
        ]

    def text_helpers(self) -> TextHelpers:
        seeds = (
            b"note body\n[bridge:0123456789ab:42:1740820600123]",
            b"[bridge:0123456789ab]",
            b"@client: Yes, tomorrow",
            "  @Клиент — привет".encode(),
            b"+44 20 7946 0123",
            b"8 (916) 123-45-67",
            b"a[b][0][c]=x&a[b][1][c]=y&k=v",
        )
        tokens = ["[bridge:", "0123456789ab", ":", "]", "@client", "@клиент", "+", "(", ")"]
        tokens += ["[", "=", "&", "8", "7"]
        return TextHelpers(fuzz_text, seeds, frozenset(t.encode() for t in tokens))

    # -- hostile input

    def hostile_app(self) -> Mapping[str, str]:
        return {
            "client_id": "amo-client-1",
            "client_secret": "amo-client-secret-1",
            "channel_id": CHANNEL_ID,
            "channel_secret": HOSTILE_SECRET,
        }

    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        return [AmoAccountTarget, AmoChatTarget]

    def hostile_tenants(self) -> Mapping[str, TenantSpec]:
        out = {}
        for name, spec in (("A", A), ("B", B)):
            scope = f"{CHANNEL_ID}_{spec['amojo']}"
            out[name] = TenantSpec(
                spec["id"],
                {"type": "long_lived", "access_token": f"amo-token-{name}"},
                {
                    "subdomain": spec["sub"],
                    "amo_account_id": spec["id"],
                    "amojo_id": spec["amojo"],
                    "scope_id": scope,
                },
                routes=(scope,),
            )
        return out

    def callback_attacks(self) -> Sequence[CallbackAttack]:
        """amoCRM's "integration enabled" GET has no state of ours, so its
        query is all attacker-chosen: the referer must not send the client
        secret anywhere, and the answer is the request's fault (4xx), not a
        failing CRM's (502)."""
        out = [
            CallbackAttack(
                f"vendor-initiated-{name}",
                {"code": MARK, "from_widget": "1", **({"referer": referer} if referer else {})},
                frozenset({400, 403}),
            )
            for name, referer in (
                ("foreign-host", "evil.example"),
                ("lookalike-host", "acme.amocrm.ru.evil.example"),
                ("no-referer", ""),
                ("loopback", "http://127.0.0.1:8080"),
            )
        ]
        out.append(
            CallbackAttack(
                "vendor-initiated-forged-code",
                {"code": MARK, "referer": "acme.amocrm.ru", "from_widget": "1"},
                frozenset({400}),
                error="invalid_grant",
                arrange=_forged_code,
            )
        )
        return out

    # -- tenant isolation

    def isolation_app(self, sandbox: str | None) -> Mapping[str, str]:
        return dict(ISO_APP)

    def isolation_api_base(self, nowhere: str, sandbox: str | None) -> str:
        return f"{nowhere}/{{subdomain}}"

    def isolation_tenant(self, idx: int, n: int, nowhere: str) -> TenantSpec:
        amojo = f"amojo-{idx}-{secrets.token_hex(6)}"
        scope = f"{ISO_APP['channel_id']}_{amojo}"
        account = ("30100", "30200")[n]
        return TenantSpec(
            account,
            {
                "type": "oauth",
                "access_token": f"amocrm-access-{idx}-{secrets.token_hex(8)}",
                "refresh_token": f"amocrm-refresh-{idx}-{secrets.token_hex(8)}",
                "expires_at": 4_000_000_000,
            },
            {
                "subdomain": f"acct{idx}",
                "amo_account_id": account,
                "amojo_id": amojo,
                "scope_id": scope,
            },
            routes=(scope,),
        )

    def thread_id(self, idx: int, j: int, conversation_uid: str) -> str:
        return "amojo-conv-1" if j == 0 else f"amojo-conv-{idx}-{j}"

    def crm_webhook(
        self,
        public_url: str,
        src: IsoTenant,
        event: str,
        *,
        n: int,
        conv: IsoConversation | None,
        entity: str,
        contact: str,
        claim: IsoTenant,
        text: str,
    ) -> tuple[Req, str | None]:
        if event == "chat_reply":
            assert conv is not None
            payload = {
                "account_id": claim.settings["amojo_id"],
                "time": 1_767_225_600,
                "message": {
                    "receiver": {"id": "amojo-client-1", "client_id": conv.external_thread_id},
                    "sender": {"id": "amojo-manager-1", "name": "Manager"},
                    "conversation": {"id": conv.crm_thread_id, "client_id": conv.uid},
                    "source": {"external_id": "7"},
                    "timestamp": 1_767_225_600,
                    "msec_timestamp": 1_767_225_600_123,
                    "message": {"id": f"amojo-msg-{n}", "type": "text", "text": text},
                },
            }
            raw = dumps(payload)
            headers = {"X-Signature": body_signature(ISO_APP["channel_secret"], raw)}
            return Req(f"/webhooks/crm/amocrm/route/{src.route_key}", raw, JSON, headers), None
        account = {
            "account[subdomain]": claim.settings["subdomain"],
            "account[id]": claim.account_id,
        }
        if event == "reply":
            fields: dict[str, Any] = {
                "leads[note][0][note][id]": str(70_000 + n),
                "leads[note][0][note][text]": f"@client {text}",
                "leads[note][0][note][note_type]": "4",
                "leads[note][0][note][element_id]": entity,
                "leads[note][0][note][element_type]": "2",
                "leads[note][0][note][created_by]": "101",
                "leads[note][0][note][date_create]": "1767225600",
            }
        elif event == "close":
            fields = {
                "leads[status][0][id]": entity,
                "leads[status][0][status_id]": "142",
                "leads[status][0][pipeline_id]": "7001001",
                "leads[status][0][last_modified]": str(1_767_225_600 + n),
            }
        elif event == "owner":
            fields = {
                "leads[responsible][0][id]": entity,
                "leads[responsible][0][responsible_user_id]": f"60{n:05d}",
                "leads[responsible][0][last_modified]": str(1_767_225_600 + n),
            }
        else:
            assert event == "contact_removed", event
            fields = {"contacts[delete][0][id]": contact, "contacts[delete][0][type]": "contact"}
        raw = _form({**fields, **account})
        return Req(f"/webhooks/crm/amocrm/{src.webhook_key}", raw, FORM), None

    # -- secrets at rest

    def at_rest_api_base(self, nowhere: str) -> str:
        return f"{nowhere}/{{subdomain}}"

    def installed(self, n: int, token: Callable[[str], str], nowhere: str) -> Installed:
        return Installed(
            f"3010{n}",
            {
                "type": "oauth",
                "access_token": token("amo-access"),
                "refresh_token": token("def50200-amo-refresh"),
                "expires_at": 4_000_000_000,
            },
            {
                "subdomain": f"acct{n}",
                "amo_account_id": f"3010{n}",
                "amojo_id": f"amojo-{n}",
                "redirect_uri": "http://bridge.test/oauth/amocrm/callback",
            },
        )

    def pasted(self, token: Callable[[str], str]) -> str:
        return "acme:" + token("amo-long-lived")

    # -- canaries

    def canary_values(self, tag: str) -> dict[str, str]:
        return {
            "client secret": f"CanaryClientSecret{tag}",
            "channel secret": f"canarychannelsecret{tag}",
        }

    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        return {
            "amocrm": {
                "per_second": 100,
                "integration": {"client_secret": values["client secret"]},
                "channel": {"secret": values["channel secret"]},
            }
        }

    def canary_env(self, values: Mapping[str, str]) -> dict[str, str]:
        return {
            "AMOCRM_CLIENT_SECRET": values["client secret"],
            "AMOCRM_CHANNEL_SECRET": values["channel secret"],
        }

    def canary_install(self, stack: Any, runtime: Any) -> int:
        tenant_id = oauth_install(
            stack.bridge_url, crm=self.kind, sandbox=stack.sandbox_url, mapping=DEMO_CRMS[self.kind]
        )
        # amoCRM support registers the chat channel's hook (out of band)
        _post(
            stack,
            "amocrm/_channel",
            hook_url=f"{stack.bridge_url}/webhooks/crm/amocrm/route/:scope_id",
        )
        return tenant_id

    def canary_in_crm(self, stack: Any) -> str:
        return json.dumps(_account_state(stack))

    def canary_replies(
        self, stack: Any, values: Mapping[str, str], channel: str, user: str
    ) -> list[str]:
        # a channel's user id is in the contact's identity field; the e-mail
        # channel's user is an address, kept in the EMAIL field instead
        contact = next(
            x
            for x in _account_state(stack)["contacts"]
            if any(
                str(v.get("value") or "").lower() == user.lower()
                for field in x.get("custom_fields_values") or []
                for v in field.get("values") or []
            )
        )
        answer = _post(stack, "amocrm/_reply", contact_id=contact["id"], text=values["reply"])
        assert answer["webhook"]["status"] == 200, answer
        _post(
            stack,
            "amocrm/_note",
            lead_id=contact["leads"][0],
            text=f"@client {values['note reply']}",
        )
        return ["reply", "note reply"]
