# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Unit tests of the Bitrix24 adapter (HTTP mocked at one seam: ``responses``).

Fixture sources: Bitrix24's official REST docs and their JSON examples
(bitrix24/b24restdocs, MIT), read from the in-repo copy under
``sandbox/bitrix24/spec/`` (``docs/`` and ``examples/``; page and lines per
file in ``spec/MANIFEST.json``). Every official example a test uses is
loaded by :func:`example` with its file name; request bodies the adapter
sends are compared structurally with the docs' own request examples
(:func:`doc_request`: the ``-d '{…}'`` body of the page's cURL example).
Payloads that are not in the docs are ours, built from FACTS.md §2 (cited).

HTTP is answered by :class:`Portal`, a small stand-in written for these
tests: it decodes the JSON bodies and the batch commands (PHP bracket
notation, ``$result`` references) independently of the adapter's code and
dispatches each method to a per-test handler. No request can reach the
network: an unregistered URL is a ``ConnectionError``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
import responses

from bridge.errors import (
    AmbiguousError,
    AuthError,
    NotFoundError,
    NotReadyError,
    PayloadError,
    PermanentError,
    RetryableError,
    SignatureError,
)
from bridge.http import HttpClient
from bridge.model import (
    Attachment,
    ChannelLink,
    ContactDraft,
    ContactLookup,
    CrmAccountInfo,
    CrmEventKind,
    CrmRef,
    DeliveryReport,
    DeliveryStatus,
    EntityDraft,
    Installed,
    MessageKind,
    OpenedConversation,
    Rate,
    SenderProfile,
    SetupResult,
    TaskDraft,
    TimelineEntry,
    WebhookRequest,
)
from bridge.schema import load, secret_names
from crm_adapters import REGISTRY
from crm_adapters.bitrix24 import Bitrix24Adapter, Bitrix24App, Bitrix24Settings
from crm_adapters.bitrix24.batch import (
    BatchAnswer,
    Command,
    Ref,
    build_query,
    chunks,
    command_string,
    members,
)
from crm_adapters.bitrix24.client import map_error
from crm_adapters.bitrix24.entities import forget_statuses
from crm_adapters.bitrix24.openlines import bb_to_text, person_name, plain_text
from crm_adapters.bitrix24.timeline import marker, marker_hash, parse_marker, read_marker
from crm_adapters.bitrix24.webhooks import decode_brackets, token_digest
from crm_adapters.freetext import HIDDEN_CHARS, strip_hidden
from tests.support.fakes import MemoryCredentials
from tests.support.fakes import RecordingLimiter as Limiter

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "sandbox" / "bitrix24" / "spec"

DOMAIN = "acme.bitrix24.com"
ENDPOINT = f"https://{DOMAIN}/rest/"
HOOK = f"https://{DOMAIN}/rest/1/hookcode123/"
MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
APP_TOKEN = "51856fefc120afa4b628cc82d3935cce"
ACCESS = "s6p6eclrvim6da22ft9ch94ekreb52lv"
REFRESH = "4s386p3q0tr8dy89xvmt96234v3dljg8"
APP = {
    "client_id": "local.56017020f07e17.98523769",
    "client_secret": "app-secret-1",
    "auth_base": "https://oauth.bitrix.info",
}
OAUTH_CREDS = {
    "type": "oauth",
    "access_token": ACCESS,
    "refresh_token": REFRESH,
    "expires_at": 1_900_000_000,
    "client_endpoint": ENDPOINT,
    "server_endpoint": "https://oauth.bitrix.info/rest/",
    "member_id": MEMBER,
    "application_token": APP_TOKEN,
}
HOOK_CREDS = {"type": "webhook", "url": HOOK}
T0 = dt.datetime(2025, 3, 1, 9, 15, 30, 250000, tzinfo=dt.UTC)
LEAD = CrmRef("lead", "900")
DEAL = CrmRef("deal", "77")
CONTACT = CrmRef("contact", "501")
#: the settings of an app install with Open Lines (``inbox=True`` on the account)
OPENLINES = {
    "member_id": MEMBER,
    "domain": DOMAIN,
    "line": "107",
    "connectors": {"telegram": "crm_bridge_telegram"},
    "connector_id": "crm_bridge_telegram",
}


# --------------------------------------------------------------------------
# official examples
# --------------------------------------------------------------------------


def example(name: str) -> Any:
    """An official JSON example (``sandbox/bitrix24/spec/examples``;
    ``<page>.<n>.json``, ``.1`` when no number is given)."""
    path = SPEC / "examples" / f"{name}.json"
    if not path.exists():
        path = SPEC / "examples" / f"{name}.1.json"
    return json.loads(path.read_text(encoding="utf-8"))


def doc_request(page: str) -> dict[str, Any]:
    """The JSON body of the first cURL example of a docs page (the request
    the vendor shows), without its ``auth`` placeholder."""
    text = (SPEC / "docs" / page).read_text(encoding="utf-8")
    match = re.search(r"-d '(\{.*?\})'", text, re.S)
    assert match, f"no request example on {page}"
    body = json.loads(re.sub(r"'\"\$\(date[^)]*\)\"'", "2025-02-03T15:00:00", match.group(1)))
    body.pop("auth", None)
    return body


def same_shape(sent: Any, documented: Any, path: str = "", free: tuple[str, ...] = ()) -> None:
    """``sent`` uses the documented structure: every key it sends exists in
    the documented request (except under ``free`` keys, whose members are
    field codes), with the same kind of value (object / array / scalar)."""
    if isinstance(documented, dict):
        assert isinstance(sent, dict), f"{path}: expected an object"
        for key, value in sent.items():
            if path.rsplit(".", 1)[-1] in free:
                continue
            assert key in documented, f"{path}.{key} is not in the documented request"
            same_shape(value, documented[key], f"{path}.{key}", free)
    elif isinstance(documented, list):
        assert isinstance(sent, list), f"{path}: expected an array"
        if documented and sent:
            for item in sent:
                same_shape(item, documented[0], f"{path}[]", free)
    else:
        assert not isinstance(sent, (dict, list)), f"{path}: expected a scalar"


# --------------------------------------------------------------------------
# the portal stand-in
# --------------------------------------------------------------------------


class Err(Exception):
    def __init__(self, status: int, code: str, description: str = "") -> None:
        super().__init__(code)
        self.status, self.code, self.description = status, code, description


def php_parse(query: str) -> dict[str, Any]:
    """PHP ``parse_str`` (ours, independent of the adapter's encoder)."""
    root: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=True):
        head, _, rest = name.partition("[")
        parts = [head] + (re.findall(r"([^\[\]]*)\]", "[" + rest) if rest else [])
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _listify(root)


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        value = {k: _listify(v) for k, v in value.items()}
        if value and all(k.isdigit() for k in value):
            keys = sorted(value, key=int)
            if [int(k) for k in keys] == list(range(len(keys))):
                return [value[k] for k in keys]
    return value


def _resolve(value: Any, results: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results) for v in value]
    if isinstance(value, str):
        match = re.fullmatch(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)", value)
        if match and match.group(1) in results:
            found: Any = results[match.group(1)]
            for part in re.findall(r"\[([^\]]*)\]", match.group(2)):
                if isinstance(found, list) and part.isdigit() and int(part) < len(found):
                    found = found[int(part)]
                elif isinstance(found, dict) and part in found:
                    found = found[part]
                else:
                    return value
            return found
    return value


class Portal:
    """Answers ``{endpoint}{method}`` the way Bitrix24 does (FACTS 2.1, 2.4)."""

    def __init__(self, rsps: responses.RequestsMock, base: str = ENDPOINT) -> None:
        self.base = base
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {}
        #: one entry per HTTP request: (method, JSON body)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        #: every executed method, batch commands included: (method, params)
        self.executed: list[tuple[str, dict[str, Any]]] = []
        self.reset_at = 1_900_000_600
        rsps.add_callback(
            responses.POST,
            re.compile(re.escape(base) + r"[A-Za-z0-9_.]+$"),
            callback=self._callback,
        )

    def on(self, method: str, answer: Any) -> None:
        self.handlers[method] = answer if callable(answer) else (lambda _p, a=answer: a)

    def methods(self, name: str) -> list[dict[str, Any]]:
        return [p for m, p in self.executed if m == name]

    def _run(self, method: str, params: dict[str, Any]) -> Any:
        self.executed.append((method, params))
        handler = self.handlers.get(method)
        if handler is None:
            raise Err(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        return handler(params)

    def _time(self) -> dict[str, Any]:
        return {"start": 1.0, "finish": 1.1, "operating_reset_at": self.reset_at, "operating": 0}

    def _callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        method = request.url.rsplit("/", 1)[-1]
        body = json.loads(request.body or b"{}")
        self.requests.append((method, body))
        headers = {"Content-Type": "application/json"}
        try:
            if method == "batch":
                return 200, headers, json.dumps({"result": self._batch(body), "time": self._time()})
            params = {k: v for k, v in body.items() if k != "auth"}
            result = self._run(method, params)
        except Err as exc:
            return (
                exc.status,
                headers,
                json.dumps({"error": exc.code, "error_description": exc.description}),
            )
        envelope: dict[str, Any] = {"result": result, "time": self._time()}
        if isinstance(result, list):
            envelope["total"] = len(result)
        return 200, headers, json.dumps(envelope)

    def _batch(self, body: dict[str, Any]) -> dict[str, Any]:
        assert set(body) <= {"halt", "cmd", "auth"}
        assert len(body["cmd"]) <= 50, "more than 50 commands in one batch"
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        for key, command in body["cmd"].items():
            method, _, query = command.partition("?")
            params = _resolve(php_parse(query) if query else {}, results)
            try:
                result = self._run(method, params)
            except Err as exc:
                errors[key] = {"error": exc.code, "error_description": exc.description}
                if body.get("halt"):
                    break
                continue
            if isinstance(result, tuple):  # (page, next) for list pagination tests
                result, nexts[key] = result
            results[key] = result
        # PHP serialises every empty member as [] (FACTS 2.4)
        return {
            "result": results or [],
            "result_error": errors or [],
            "result_total": [],
            "result_next": nexts or [],
            "result_time": [],
        }


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def portal(rsps: responses.RequestsMock) -> Portal:
    return Portal(rsps)


@pytest.fixture
def hook_portal(rsps: responses.RequestsMock) -> Portal:
    return Portal(rsps, HOOK)


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    forget_statuses()


def app_settings(**changes: str) -> Bitrix24App:
    """The deployment's app settings as the core hands them to the class
    methods (``APP`` with ``changes``, checked like an admin's input)."""
    return load(Bitrix24App, {**APP, **changes}, strict=True)


def make(
    creds: Mapping[str, Any] = OAUTH_CREDS,
    settings: Mapping[str, Any] | None = None,
    *,
    limiter: Limiter | None = None,
    webhook_url: str | None = "https://bridge.example/webhooks/crm/bitrix24/key-1",
    inbox: bool = False,
    language: str = "en",
    timezone: str = "UTC",
) -> Bitrix24Adapter:
    settings = dict({"member_id": MEMBER, "domain": DOMAIN} if settings is None else settings)
    load(Bitrix24Settings, settings, strict=True)  # every key a test sets is a real setting
    store = MemoryCredentials(creds)
    account = CrmAccountInfo(
        tenant_id=7,
        kind="bitrix24",
        account_id=MEMBER if creds.get("type") == "oauth" else None,
        settings=settings,
        app=dict(APP),
        webhook_url=webhook_url,
        language=language,
        timezone=timezone,
        inbox=inbox,
    )
    adapter = Bitrix24Adapter(account, store, HttpClient(limiter=limiter))
    store.refresher = adapter.refresh_credentials
    return adapter


def entry(
    bridge_id: str,
    *,
    sequence: int = 1,
    text: str = "Is the blue one in stock?",
    inbox: bool = False,
    timeline: str = "note",
    entity: CrmRef | None = LEAD,
    maybe_written: bool = False,
    **extra: Any,
) -> TimelineEntry:
    # how the tenant wants it written, as the core sets it (typed fields)
    options = {"timeline": timeline, "inbox": inbox, "channel_title": "Telegram", "language": "en"}
    options.update(extra.pop("options", {}))
    return TimelineEntry(
        bridge_id=bridge_id,
        conversation_uid="conv-1",
        channel_kind="telegram",
        channel_account="3",
        direction="in",
        kind=extra.pop("kind", MessageKind.TEXT),
        text=text,
        occurred_at=T0 + dt.timedelta(seconds=sequence),
        contact=CONTACT,
        entity=entity,
        sequence=sequence,
        sender_name="Ann Contract",
        sender_identifier="tg-4242",
        maybe_written=maybe_written,
        **options,
        **extra,
    )


def draft(**changes: Any) -> ContactDraft:
    base = ContactDraft(
        lookup=ContactLookup(
            identities={"telegram": "4242"}, phones=("+442079460123",), emails=("Ann@Example.com",)
        ),
        profile=SenderProfile(first_name="Ann", last_name="Contract"),
        owner_id="5",
    )
    return replace(base, **changes)


def lead_draft(**changes: Any) -> EntityDraft:
    base = EntityDraft(
        object_type="lead",
        conversation_uid="conv-1",
        contact=CONTACT,
        name="Telegram: Ann Contract",
        stage="NEW",
        owner_id="5",
        properties={"utm_source": "ads", "UF_CRM_CAMPAIGN": "spring"},
        channel_title="Telegram",
    )
    return replace(base, **changes)


def form(payload: Mapping[str, Any]) -> bytes:
    """An event as Bitrix24 sends it: PHP ``http_build_query`` (events/index.md)."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}[{key}]" if prefix else key, item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)
        else:
            pairs.append((prefix, str(value)))

    walk("", dict(payload))
    return urlencode(pairs).encode()


def event_request(payload: Mapping[str, Any], *, body: bytes | None = None) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://bridge.example/webhooks/crm/bitrix24/key-1",
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=form(payload) if body is None else body,
        received_at=T0,
    )


def official_event(name: str, **auth: Any) -> dict[str, Any]:
    """An official event example with this tenant's portal and token."""
    payload = example(name)
    payload["auth"] = {**payload["auth"], "member_id": MEMBER, "application_token": APP_TOKEN}
    payload["auth"].update(auth)
    return payload


# ==========================================================================
# registry and class attributes
# ==========================================================================


def test_registered_and_described() -> None:
    assert REGISTRY["bitrix24"] == "crm_adapters.bitrix24:Bitrix24Adapter"
    assert Bitrix24Adapter.kind == "bitrix24"
    assert Bitrix24Adapter.title == "Bitrix24"
    assert Bitrix24Adapter.entity_types == ("lead", "deal")
    assert Bitrix24Adapter.content_types == (
        "application/x-www-form-urlencoded",
        "application/json",
    )
    # the documented bucket (50, 2/s) less the margin kept for clock skew
    assert Bitrix24Adapter.rate == Rate(capacity=48, per_second=2)
    # Bitrix24 installs an app by POSTing ONAPPINSTALL (FACTS 2.5)
    assert Bitrix24Adapter.has_install_event is True


def test_settings_are_declared_typed_and_described() -> None:
    """Every setting the adapter reads is a field of its schemas, with a help
    text; the app's secret is marked; what install/setup record is state."""
    assert Bitrix24Adapter.App is Bitrix24App
    assert Bitrix24Adapter.Settings is Bitrix24Settings
    for schema in (Bitrix24App, Bitrix24Settings):
        for spec in dataclasses.fields(schema):
            assert spec.metadata["help"], f"{schema.__name__}.{spec.name} has no help"
    assert secret_names(Bitrix24App) == {"client_secret"}
    state = {f.name for f in dataclasses.fields(Bitrix24Settings) if f.metadata["state"]}
    assert state >= {"member_id", "domain", "plan", "application_token_sha256", "connectors"}
    # the tenant's mapping decides these: the core hands them over on the account
    names = {f.name for f in dataclasses.fields(Bitrix24Settings)}
    assert not names & {"inbox", "language", "timezone"}
    adapter = make(settings={"task_kind": "task", "line": 107, "burst": "500"})
    assert (adapter.settings.task_kind, adapter.settings.line) == ("task", "107")
    assert adapter.settings.burst == 500 and adapter.settings.source_id == "OTHER"
    assert adapter.app.client_id == APP["client_id"]
    assert adapter.app.auth_base == "https://oauth.bitrix.info"


def test_a_drain_holds_one_batch() -> None:
    # 50 commands per batch (FACTS 2.4), two kept for the Open Lines send
    assert make().entries_per_request == 50
    assert make(settings=OPENLINES, inbox=True).entries_per_request == 48


def test_an_incoming_webhook_url_is_a_private_install() -> None:
    installed = Bitrix24Adapter.token_credentials(f"  {HOOK}  ")
    assert installed == Installed(DOMAIN, {"type": "webhook", "url": HOOK})
    local = Bitrix24Adapter.token_credentials("http://127.0.0.1:9/acme/rest/1/code/")
    assert local.account_id == "127.0.0.1:9"
    for bad in ("not a url", f"https://{DOMAIN}/rest/1/", "http://acme.example/rest/1/code/"):
        with pytest.raises(ValueError, match="Bitrix24 webhook URL"):
            Bitrix24Adapter.token_credentials(bad)


# ==========================================================================
# the batch builder and parser (FACTS 2.4)
# ==========================================================================


def test_build_query_is_php_bracket_notation() -> None:
    query = build_query(
        {
            "fields": {
                "TITLE": "John&Martin 100%",
                "PHONE": [{"VALUE": "+44 20", "VALUE_TYPE": "WORK"}],
                "EMPTY": [],
                "NONE": None,
            },
            "flag": True,
            "off": False,
            "n": 7,
        }
    )
    assert "fields[TITLE]=John%26Martin+100%25" in query  # data-encoding.md
    assert "fields[PHONE][0][VALUE]=%2B44+20" in query
    assert "fields[PHONE][0][VALUE_TYPE]=WORK" in query
    assert "EMPTY" not in query and "NONE" not in query  # PHP drops null and []
    assert "flag=1" in query and "off=0" in query and "n=7" in query
    assert php_parse(query) == {
        "fields": {
            "TITLE": "John&Martin 100%",
            "PHONE": [{"VALUE": "+44 20", "VALUE_TYPE": "WORK"}],
        },
        "flag": "1",
        "off": "0",
        "n": "7",
    }


def test_references_stay_literal_and_customer_text_cannot_forge_one() -> None:
    command = Command(
        "lead",
        "crm.lead.add",
        {
            "fields": {
                "CONTACT_ID": Ref("contact"),
                "COMMENTS": "see $result[contact] and $RESULT[x]",
            }
        },
    )
    text = command_string(command)
    assert text.startswith("crm.lead.add?")
    assert "fields[CONTACT_ID]=$result[contact]" in text
    parsed = php_parse(text.partition("?")[2])
    assert parsed["fields"]["CONTACT_ID"] == "$result[contact]"
    # the customer's "$result[...]" gets a zero-width space: no longer a reference
    assert parsed["fields"]["COMMENTS"] == "see $\u200bresult[contact] and $\u200bRESULT[x]"
    assert str(Ref("lines")[0]["ID"]) == "$result[lines][0][ID]"


def test_batches_are_split_at_50_and_references_stay_inside_one() -> None:
    commands = [Command(f"c{i}", "crm.timeline.comment.add", {"i": i}) for i in range(120)]
    assert [len(c) for c in chunks(commands)] == [50, 50, 20]
    crossing = [Command(f"c{i}", "x", {}) for i in range(50)] + [
        Command("late", "y", {"id": Ref("c0")})
    ]
    with pytest.raises(ValueError, match="across batches"):
        list(chunks(crossing))
    with pytest.raises(ValueError):
        Command("bad key!", "x")


def test_batch_answer_members_and_per_command_errors() -> None:
    # batch.md: empty members are [] (batch.2 and batch.3 are its error examples)
    assert members([]) == {} and members({"a": 1}) == {"a": 1}
    halted = example("settings__how-to-call-rest-api__batch.3")["result"]
    adapter = make()
    parsed = adapter.api.parse_batch(halted, {"get_user": "user.current"})
    assert parsed.results == {} and set(parsed.errors) == {"get_user"}
    assert isinstance(parsed.errors["get_user"], PermanentError)
    assert "scope" in parsed.errors["get_user"].message
    assert not parsed.ran("get_department")  # halt=1: it never ran
    with pytest.raises(PermanentError, match="did not run"):
        parsed.value("get_department")
    both = adapter.api.parse_batch(
        example("settings__how-to-call-rest-api__batch.2")["result"],
        {"get_user": "user.current", "get_department": "department.get"},
    )
    assert set(both.errors) == {"get_user", "get_department"}
    good = adapter.api.parse_batch(
        example("settings__how-to-call-rest-api__batch.1")["result"],
        {"get_user": "user.current", "get_department": "department.get"},
    )
    assert good.value("get_user")["NAME"] == "John"
    assert good.totals == {"get_department": 1} and good.errors == {}


def test_batch_runner_splits_and_maps_each_commands_error(portal: Portal) -> None:
    def comment(params: dict[str, Any]) -> int:
        if params["fields"]["ENTITY_ID"] == "13":
            raise Err(400, "NOT_FOUND", "Not found.")
        return 1000 + int(params["fields"]["ENTITY_ID"])

    portal.on("crm.timeline.comment.add", comment)
    commands = [
        Command(f"k{i}", "crm.timeline.comment.add", {"fields": {"ENTITY_ID": i}})
        for i in range(60)
    ]
    answer = make().api.batch(commands, halt=False)
    assert [m for m, _ in portal.requests] == ["batch", "batch"]
    assert isinstance(answer.errors["k13"], NotFoundError)
    assert answer.value("k59") == 1059 and len(answer.results) == 59
    portal.requests.clear()
    halted = make().api.batch(commands, halt=True)
    assert len(portal.requests) == 1  # stopped: the second chunk is never sent
    assert set(halted.results) == {f"k{i}" for i in range(13)}
    assert not halted.ran("k14")


# ==========================================================================
# the error mapping (one place: client.map_error)
# ==========================================================================


@pytest.mark.parametrize(
    ("status", "code", "description", "cls", "text"),
    [
        (503, "QUERY_LIMIT_EXCEEDED", "Too many requests", RetryableError, "QUERY_LIMIT"),
        (503, "OVERLOAD_LIMIT", "REST API is blocked", RetryableError, "OVERLOAD"),
        (401, "NO_AUTH_FOUND", "Wrong authorization data", AuthError, "NO_AUTH_FOUND"),
        (403, "insufficient_scope", "", PermanentError, "scope"),
        (
            403,
            "ACCESS_DENIED",
            "REST API is available only on commercial plans",
            PermanentError,
            "commercial",
        ),
        (400, "", "Access denied.", PermanentError, "denied access"),  # crm-lead-add.2
        (
            403,
            "WRONG_AUTH_TYPE",
            "Application context required",
            PermanentError,
            "Open Lines need the app install, not an incoming webhook",
        ),
        (403, "user_access_error", "", AuthError, "restricted"),
        (400, "NOT_FOUND", "Not found.", NotFoundError, "not found"),
        (400, "", "Contact is not found", NotFoundError, "not found"),  # crm-contact-update.8
        (
            400,
            "Communication type is not defined",
            "Parameter 'type' is required.",
            PermanentError,
            "type",
        ),  # crm-duplicate-find-by-comm.2: the text in `error`
        (400, "ERROR_ARGUMENT", "Argument 'LINE' is null or empty", PermanentError, "LINE"),
        (500, "INTERNAL_SERVER_ERROR", "", AmbiguousError, "INTERNAL"),
        (500, "PORTAL_DELETED", "", AuthError, "deleted"),
    ],
)
def test_error_mapping(status: int, code: str, description: str, cls: type, text: str) -> None:
    error = map_error(code, description, method="crm.lead.add", status=status)
    assert type(error) is cls
    assert text.lower() in error.message.lower()


def test_official_error_examples_map_to_clear_errors() -> None:
    for name, cls in [
        ("api-reference__crm__leads__crm-lead-add.2", PermanentError),
        ("api-reference__crm__contacts__crm-contact-update.8", NotFoundError),
        ("api-reference__crm__timeline__comments__crm-timeline-comment-add.2", NotFoundError),
        ("api-reference__imopenlines__imconnector__imconnector-register.3", PermanentError),
        ("api-reference__imopenlines__imconnector__imconnector-send-messages.2", PermanentError),
        ("settings__oauth__error-codes.1", AuthError),
    ]:
        body = example(name)
        error = map_error(body["error"], body["error_description"], method="m", status=400)
        assert isinstance(error, cls), name


def test_5xx_on_a_read_is_retryable_not_ambiguous() -> None:
    read = map_error("INTERNAL_SERVER_ERROR", "", method="crm.lead.list", status=500)
    assert type(read) is RetryableError
    write = map_error("", "", method="crm.lead.add", status=502)
    assert isinstance(write, AmbiguousError)


def test_query_limit_pauses_the_whole_portal(portal: Portal) -> None:
    limiter = Limiter()
    portal.on("crm.lead.get", lambda _p: (_ for _ in ()).throw(Err(503, "QUERY_LIMIT_EXCEEDED")))
    adapter = make(limiter=limiter)
    with pytest.raises(RetryableError) as caught:
        adapter.entity_is_open(LEAD)
    # one drain interval of the portal's bucket: 2/s on the ordinary plans
    assert caught.value.retry_after == 0.5
    assert limiter.penalties == [(f"bitrix24:{MEMBER}:api", 0.5)]


def test_the_query_limit_pause_is_one_drain_interval_of_the_portals_bucket() -> None:
    from crm_adapters.bitrix24.client import drain_pause

    assert drain_pause(2.0) == 0.5  # ordinary plans (limits.md)
    assert drain_pause(5.0) == 0.2  # Enterprise
    assert drain_pause(1000.0) == 0.05  # a self-hosted portal's own fast bucket: the floor
    assert drain_pause(0.5) == 1.0 and drain_pause(0.0) == 1.0  # never more than 1 s


def test_operation_time_limit_waits_for_the_methods_reset(portal: Portal) -> None:
    limiter = Limiter()
    adapter = make(limiter=limiter)
    adapter.api.clock = lambda: 1_900_000_000.0
    portal.on("crm.lead.list", [])
    adapter.find_entity(lead_draft())  # a successful answer names the reset time
    portal.on("crm.lead.list", lambda _p: (_ for _ in ()).throw(Err(429, "OPERATION_TIME_LIMIT")))
    with pytest.raises(RetryableError) as caught:
        adapter.find_entity(lead_draft())
    assert caught.value.retry_after == 600.0  # operating_reset_at - now
    assert caught.value.status == 429
    # only this method is blocked: the portal's bucket is not emptied
    assert limiter.penalties == []


# ==========================================================================
# auth: both styles, refresh only on expired_token
# ==========================================================================


def test_app_calls_carry_auth_in_the_body_webhook_calls_in_the_url(
    portal: Portal, hook_portal: Portal
) -> None:
    portal.on("crm.lead.list", [])
    make().find_entity(lead_draft())
    method, body = portal.requests[0]
    assert method == "crm.lead.list" and body["auth"] == ACCESS
    hook_portal.on("crm.lead.list", [])
    make(HOOK_CREDS, {"domain": DOMAIN}).find_entity(lead_draft())
    assert "auth" not in hook_portal.requests[0][1]


def test_expired_token_refreshes_once_and_retries(
    portal: Portal, rsps: responses.RequestsMock
) -> None:
    fresh = example("settings__oauth__auto-renewal.1")  # the documented refresh answer
    fresh.update(client_endpoint=ENDPOINT, member_id=MEMBER)
    rsps.add(responses.GET, "https://oauth.bitrix.info/oauth/token/", json=fresh)
    seen: list[str] = []

    def get(params: dict[str, Any]) -> dict[str, Any]:
        seen.append(portal.requests[-1][1]["auth"])
        if portal.requests[-1][1]["auth"] == ACCESS:
            raise Err(401, "expired_token", "The access token provided has expired")
        return {"ID": "900", "STATUS_SEMANTIC_ID": "P"}

    portal.on("crm.lead.get", get)
    adapter = make()
    assert adapter.entity_is_open(LEAD) is True
    assert seen == [ACCESS, fresh["access_token"]]
    store = adapter.credentials
    assert store.refreshes == 1
    assert store.creds["refresh_token"] == fresh["refresh_token"]  # the rotated one
    assert store.creds["application_token"] == APP_TOKEN  # kept across refreshes
    token_call = [c for c in rsps.calls if "oauth/token" in c.request.url][0]
    query = parse_qs(urlsplit(token_call.request.url).query)
    assert query["grant_type"] == ["refresh_token"] and query["refresh_token"] == [REFRESH]
    assert query["client_id"] == [APP["client_id"]] and query["client_secret"] == ["app-secret-1"]


def test_never_refreshed_before_bitrix24_says_expired(
    portal: Portal, rsps: responses.RequestsMock
) -> None:
    portal.on("crm.lead.get", {"ID": "900", "STATUS_SEMANTIC_ID": "P"})
    adapter = make({**OAUTH_CREDS, "expires_at": 0})  # long past
    assert adapter.entity_is_open(LEAD) is True
    assert adapter.credentials.refreshes == 0
    assert not [c for c in rsps.calls if "oauth" in c.request.url]


def test_other_401s_and_a_second_expiry_are_auth_errors(
    portal: Portal, rsps: responses.RequestsMock
) -> None:
    portal.on("crm.lead.get", lambda _p: (_ for _ in ()).throw(Err(401, "NO_AUTH_FOUND")))
    adapter = make()
    with pytest.raises(AuthError, match="NO_AUTH_FOUND"):
        adapter.entity_is_open(LEAD)
    assert adapter.credentials.refreshes == 0

    rsps.add(
        responses.GET,
        "https://oauth.bitrix.info/oauth/token/",
        json={
            "access_token": "new-1",
            "refresh_token": "new-r",
            "member_id": MEMBER,
            "client_endpoint": ENDPOINT,
            "expires_in": 3600,
        },
    )
    portal.on("crm.lead.get", lambda _p: (_ for _ in ()).throw(Err(401, "expired_token")))
    adapter = make()
    with pytest.raises(AuthError, match="expired"):
        adapter.entity_is_open(LEAD)
    assert adapter.credentials.refreshes == 1  # once, not in a loop


def test_a_webhook_never_refreshes(hook_portal: Portal) -> None:
    hook_portal.on("crm.lead.get", lambda _p: (_ for _ in ()).throw(Err(401, "expired_token")))
    with pytest.raises(AuthError):
        make(HOOK_CREDS, {"domain": DOMAIN}).entity_is_open(LEAD)


def test_refused_refresh_is_an_auth_error(rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.GET,
        "https://oauth.bitrix.info/oauth/token/",
        status=400,
        json={"error": "invalid_grant", "error_description": "Invalid refresh token"},
    )
    with pytest.raises(AuthError, match="grant"):
        make().refresh_credentials(OAUTH_CREDS)
    rsps.replace(
        responses.GET,
        "https://oauth.bitrix.info/oauth/token/",
        json={
            "access_token": "a",
            "refresh_token": "r",
            "member_id": "someone-else",
            "client_endpoint": ENDPOINT,
        },
    )
    with pytest.raises(AuthError, match="another portal"):
        make().refresh_credentials(OAUTH_CREDS)


# ==========================================================================
# the leaky bucket (FACTS 2.3)
# ==========================================================================


def test_one_bucket_per_portal_with_the_plans_rate(portal: Portal, hook_portal: Portal) -> None:
    limiter = Limiter()
    portal.on("crm.lead.list", [])
    make(limiter=limiter).find_entity(lead_draft())
    make(settings={"member_id": MEMBER, "plan": "enterprise"}, limiter=limiter).find_entity(
        lead_draft()
    )
    hook_portal.on("crm.lead.list", [])
    make(HOOK_CREDS, {}, limiter=limiter).find_entity(lead_draft())
    assert limiter.acquired == [
        (f"bitrix24:{MEMBER}:api", Rate(capacity=48, per_second=2)),
        (f"bitrix24:{MEMBER}:api", Rate(capacity=248, per_second=5)),
        (f"bitrix24:{DOMAIN}:api", Rate(capacity=48, per_second=2)),
    ]


def test_an_admin_set_bucket_overrides_the_plan() -> None:
    from crm_adapters.bitrix24.adapter import plan_rate

    # the portal's own burst, less the margin the bridge keeps (clock skew)
    assert plan_rate({"plan": "enterprise", "rate_per_second": 20, "burst": 500}) == Rate(
        capacity=498, per_second=20
    )
    assert plan_rate({"rate_per_second": "10"}) == Rate(capacity=48, per_second=10)
    # nonsense falls back to the plan's bucket
    assert plan_rate({"rate_per_second": "fast"}) == Rate(capacity=48, per_second=2)
    assert plan_rate({"plan": "enterprise", "rate_per_second": -1}) == Rate(
        capacity=248, per_second=5
    )


def test_a_batch_is_one_token(portal: Portal) -> None:
    limiter = Limiter()
    portal.on("crm.timeline.comment.add", 1)
    make(limiter=limiter).append_entries([entry(f"m{i}", sequence=i) for i in range(30)])
    assert len(limiter.acquired) == 1


# ==========================================================================
# install event, install URL, code exchange
# ==========================================================================


def install_payload(**auth: Any) -> dict[str, Any]:
    payload = example("api-reference__common__events__on-app-install")
    payload["auth"].update(domain=DOMAIN, client_endpoint=ENDPOINT, member_id=MEMBER)
    payload["auth"].update(auth)
    return payload


def app_info(code: str = APP["client_id"], **extra: Any) -> dict[str, Any]:
    info = example("api-reference__common__system__app-info.1")["result"]
    info.update(CODE=code, **extra)
    return info


TOKEN_URL = "https://oauth.bitrix.info/oauth/token/"


def oauth_server(
    rsps: responses.RequestsMock, *, member: str = MEMBER, endpoint: str = ENDPOINT
) -> list[dict[str, str]]:
    """The OAuth server redeeming the install's refresh token (settings/oauth/
    index.md answer shape); returns the queries it received."""
    seen: list[dict[str, str]] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        seen.append(dict(parse_qsl(urlsplit(request.url).query)))
        body = {
            "access_token": "fresh-access",
            "refresh_token": "fresh-refresh",
            "expires_in": 3600,
            "member_id": member,
            "client_endpoint": endpoint,
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "domain": "oauth.bitrix.info",
            "scope": "crm,imopenlines,imconnector,im,placement,user_brief",
            "status": "L",
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    rsps.add_callback(responses.GET, TOKEN_URL, callback=answer)
    return seen


def test_install_event_is_verified_and_returns_credentials(
    portal: Portal, rsps: responses.RequestsMock
) -> None:
    portal.on("app.info", app_info())
    token_calls = oauth_server(rsps)
    installed = Bitrix24Adapter.install_event(
        app_settings(), event_request(install_payload()), http=HttpClient()
    )
    assert isinstance(installed, Installed)
    creds = installed.credentials
    assert portal.requests == [("app.info", {"auth": "s6p6eclrvim6da22ft9ch94ekreb52lv"})]
    # the event's refresh token was redeemed at the OAuth server, which named the portal
    [query] = token_calls
    assert query["grant_type"] == "refresh_token"
    assert query["refresh_token"] == "4s386p3q0tr8dy89xvmt96234v3dljg8"
    assert query["client_id"] == APP["client_id"]
    assert installed.account_id == MEMBER and creds["member_id"] == MEMBER
    assert creds["client_endpoint"] == ENDPOINT and creds["type"] == "oauth"
    assert creds["application_token"] == APP_TOKEN
    assert (creds["access_token"], creds["refresh_token"]) == ("fresh-access", "fresh-refresh")
    settings = installed.settings
    assert settings["member_id"] == MEMBER and settings["domain"] == DOMAIN
    assert settings["plan"] == "enterprise"  # LICENSE_FAMILY ent (app-info.md)
    assert settings["application_token_sha256"] == token_digest(APP_TOKEN)
    assert APP_TOKEN not in json.dumps(settings)
    # fields of the schema: the core stores them after a strict check
    load(Bitrix24Settings, settings, strict=True)
    # data[LANGUAGE_ID] "de": the bridge writes en or ru, so nothing is recorded
    assert "portal_language" not in settings
    payload = install_payload()
    payload["data"]["LANGUAGE_ID"] = "ru"
    again = Bitrix24Adapter.install_event(app_settings(), event_request(payload), http=HttpClient())
    assert again is not None and again.settings["portal_language"] == "ru"


@pytest.mark.parametrize(
    "auth",
    [
        {"client_endpoint": "https://evil.example/rest/"},
        {"client_endpoint": "https://other.bitrix24.com/rest/"},  # not the portal's own host
        {
            "client_endpoint": "https://acme.bitrix24.attacker.example/rest/",
            "domain": "acme.bitrix24.attacker.example",
        },
        {"client_endpoint": f"http://{DOMAIN}/rest/"},  # no HTTPS
    ],
)
def test_forged_install_endpoints_are_refused_before_any_call(
    portal: Portal, auth: dict[str, str]
) -> None:
    with pytest.raises(SignatureError):
        Bitrix24Adapter.install_event(
            app_settings(), event_request(install_payload(**auth)), http=HttpClient()
        )
    assert portal.requests == []


def test_install_naming_another_portals_member_id_is_refused(
    portal: Portal, rsps: responses.RequestsMock
) -> None:
    # a forger's own working token, with the victim portal's member_id in the event:
    # app.info cannot tell, the OAuth server's answer does
    portal.on("app.info", app_info())
    oauth_server(rsps, member="f0rged0000000000000000000000000")
    with pytest.raises(SignatureError, match="another portal"):
        Bitrix24Adapter.install_event(
            app_settings(), event_request(install_payload()), http=HttpClient()
        )


def test_install_whose_refresh_token_is_refused_is_refused(
    portal: Portal, rsps: responses.RequestsMock
) -> None:
    portal.on("app.info", app_info())
    rsps.add(responses.GET, TOKEN_URL, status=400, json={"error": "invalid_grant"})
    with pytest.raises(SignatureError, match="refresh token"):
        Bitrix24Adapter.install_event(
            app_settings(), event_request(install_payload()), http=HttpClient()
        )


def test_install_with_another_apps_token_or_a_dead_token_is_refused(
    portal: Portal, rsps: responses.RequestsMock
) -> None:
    oauth_server(rsps)
    portal.on("app.info", app_info(code="someone.elses.app"))
    with pytest.raises(SignatureError, match="another app"):
        Bitrix24Adapter.install_event(
            app_settings(), event_request(install_payload()), http=HttpClient()
        )
    portal.on("app.info", lambda _p: (_ for _ in ()).throw(Err(401, "NO_AUTH_FOUND")))
    with pytest.raises(SignatureError):
        Bitrix24Adapter.install_event(
            app_settings(), event_request(install_payload()), http=HttpClient()
        )
    # a Market app's code differs from its client id: app_code names it
    portal.on("app.info", app_info(code="telefum24.kp10"))
    market = app_settings(app_code="telefum24.kp10")
    assert Bitrix24Adapter.install_event(
        market, event_request(install_payload()), http=HttpClient()
    )


def test_allowed_hosts_admit_an_on_premise_portal(rsps: responses.RequestsMock) -> None:
    Portal(rsps, "http://127.0.0.1:8000/b24/acme/rest/").on("app.info", app_info())
    oauth_server(rsps, endpoint="http://127.0.0.1:8000/b24/acme/rest/")
    payload = install_payload(
        domain="127.0.0.1:8000", client_endpoint="http://127.0.0.1:8000/b24/acme/rest/"
    )
    with pytest.raises(SignatureError):
        Bitrix24Adapter.install_event(app_settings(), event_request(payload), http=HttpClient())
    app = app_settings(allowed_hosts="crm.example.com, 127.0.0.1:*")
    installed = Bitrix24Adapter.install_event(app, event_request(payload), http=HttpClient())
    assert installed is not None
    assert installed.credentials["client_endpoint"].startswith("http://127.0.0.1:8000/")


def test_other_events_and_junk_at_the_install_url() -> None:
    uninstall = example("api-reference__common__events__on-app-uninstall")
    assert (
        Bitrix24Adapter.install_event(app_settings(), event_request(uninstall), http=HttpClient())
        is None
    )
    broken = install_payload()
    del broken["auth"]["application_token"]
    with pytest.raises(PayloadError):
        Bitrix24Adapter.install_event(app_settings(), event_request(broken), http=HttpClient())
    with pytest.raises(PayloadError):
        Bitrix24Adapter.install_event(
            APP, event_request({}, body=b"event=ONAPPINSTALL&auth[x]=1&auth=2"), http=HttpClient()
        )


def test_install_without_the_app_configured_is_a_clear_error(portal: Portal) -> None:
    with pytest.raises(PermanentError, match="BITRIX24_CLIENT_ID"):
        Bitrix24Adapter.install_event(
            Bitrix24App(), event_request(install_payload()), http=HttpClient()
        )
    assert portal.requests == []


def test_refresh_keeps_a_known_endpoint_over_an_unacceptable_one(
    rsps: responses.RequestsMock,
) -> None:
    rsps.add(
        responses.GET,
        "https://oauth.bitrix.info/oauth/token/",
        json={
            "access_token": "a2",
            "refresh_token": "r2",
            "member_id": MEMBER,
            "client_endpoint": "https://evil.example/rest/",
            "expires": 1_900_003_600,
        },
    )
    fresh = make().refresh_credentials(OAUTH_CREDS)
    assert fresh["client_endpoint"] == ENDPOINT
    assert fresh["expires_at"] == 1_900_003_600
    assert (fresh["access_token"], fresh["refresh_token"]) == ("a2", "r2")


def test_install_url_needs_the_portal() -> None:
    url = Bitrix24Adapter.install_url(
        app_settings(portal=DOMAIN), redirect_uri="https://bridge.example/cb", state="s-1"
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", DOMAIN, "/oauth/authorize/")
    assert parse_qs(parts.query) == {"client_id": [APP["client_id"]], "state": ["s-1"]}
    sandbox = Bitrix24Adapter.install_url(
        app_settings(portal="http://127.0.0.1:9/sandbox/bitrix24/acme"), redirect_uri="x", state="s"
    )
    assert sandbox.startswith("http://127.0.0.1:9/sandbox/bitrix24/acme/oauth/authorize/?")
    with pytest.raises(PermanentError, match="portal"):
        Bitrix24Adapter.install_url(app_settings(), redirect_uri="x", state="s")


def test_exchange_code_at_the_oauth_server(rsps: responses.RequestsMock) -> None:
    answer = example("settings__oauth__index.1")  # oauth/index.md step 2
    answer.update(client_endpoint=ENDPOINT, member_id=MEMBER)
    rsps.add(responses.GET, "https://oauth.bitrix.info/oauth/token/", json=answer)
    params = {
        "code": "c0de",
        "state": "s",
        "domain": DOMAIN,
        "member_id": MEMBER,
        "server_domain": "oauth.bitrix.info",
    }
    installed = Bitrix24Adapter.exchange_code(
        app_settings(),
        code="c0de",
        redirect_uri="https://bridge.example/cb",
        http=HttpClient(),
        params=params,
    )
    query = parse_qs(urlsplit(rsps.calls[0].request.url).query)
    assert query["grant_type"] == ["authorization_code"] and query["code"] == ["c0de"]
    assert isinstance(installed, Installed)
    assert installed.account_id == MEMBER
    assert installed.credentials["access_token"] == answer["access_token"]
    assert installed.settings == {"member_id": MEMBER, "domain": DOMAIN}
    assert "account_id" not in installed.credentials  # the install carries it
    with pytest.raises(PermanentError, match="another portal"):
        Bitrix24Adapter.exchange_code(
            app_settings(),
            code="c0de",
            redirect_uri="x",
            http=HttpClient(),
            params={**params, "member_id": "f" * 32},
        )
    rsps.replace(
        responses.GET,
        "https://oauth.bitrix.info/oauth/token/",
        status=400,
        json={"error": "invalid_grant", "error_description": "code expired"},
    )
    with pytest.raises(AuthError):
        Bitrix24Adapter.exchange_code(
            app_settings(), code="old", redirect_uri="x", http=HttpClient()
        )


# ==========================================================================
# contacts (FACTS 2.7)
# ==========================================================================


def contact_row(contact_id: str, im: str, value_type: str = "TELEGRAM", owner: str = "5") -> dict:
    return {
        "ID": contact_id,
        "ASSIGNED_BY_ID": owner,
        "IM": [{"ID": "1", "VALUE_TYPE": value_type, "VALUE": im, "TYPE_ID": "IM"}],
    }


def test_find_contact_is_one_batch_with_identity_first(portal: Portal) -> None:
    portal.on("crm.contact.list", [contact_row("31", "4242"), contact_row("30", "4242", "VK")])
    portal.on("crm.duplicate.findbycomm", {"CONTACT": [275, 2297]})  # the docs' example
    portal.on("crm.contact.get", {"ID": "275", "ASSIGNED_BY_ID": "9"})
    found = make().find_contact(draft().lookup)
    assert found is not None and found.ref == CrmRef("contact", "31") and found.owner_id == "5"
    assert [m for m, _ in portal.requests] == ["batch"]
    commands = portal.requests[0][1]["cmd"]
    assert portal.requests[0][1]["halt"] == 0
    identity = php_parse(commands["id0"].partition("?")[2])
    assert commands["id0"].startswith("crm.contact.list?")
    assert identity["filter"] == {"IM": "4242"} and "IM" in identity["select"]
    phone = php_parse(commands["phone"].partition("?")[2])
    assert phone == {"entity_type": "CONTACT", "type": "PHONE", "values": ["+442079460123"]}
    email = php_parse(commands["email"].partition("?")[2])
    assert email["values"] == ["ann@example.com"]
    same_shape(phone, doc_request("api-reference/crm/duplicates/crm-duplicate-find-by-comm.md"))
    assert commands["phone_owner"] == "crm.contact.get?id=$result[phone][CONTACT][0]"


def test_find_contact_falls_back_to_phone_then_email(portal: Portal) -> None:
    portal.on("crm.contact.list", [contact_row("30", "4242", "VK")])  # another messenger
    found_by = {"PHONE": {"CONTACT": [275, 2297]}, "EMAIL": {"CONTACT": [12]}}
    portal.on("crm.duplicate.findbycomm", lambda p: found_by[p["type"]])
    portal.on("crm.contact.get", lambda p: {"ID": str(p["id"]), "ASSIGNED_BY_ID": "9"})
    adapter = make()
    found = adapter.find_contact(draft().lookup)
    assert found is not None and found.ref.id == "275" and found.owner_id == "9"
    found_by["PHONE"] = []  # no hits: an empty PHP array (FACTS 2.7)
    found = adapter.find_contact(draft().lookup)
    assert found is not None and found.ref.id == "12"
    found_by["EMAIL"] = []
    portal.on("crm.contact.list", [])
    assert adapter.find_contact(draft().lookup) is None
    # nothing to look up: no request at all
    portal.requests.clear()
    assert adapter.find_contact(ContactLookup(identities={})) is None
    assert portal.requests == []


def test_create_contact_fields(portal: Portal) -> None:
    portal.on("crm.contact.add", 46)
    created = make().create_contact(draft(properties={"UF_CRM_SIZE": "10"}))
    assert created.ref == CrmRef("contact", "46") and created.owner_id == "5"
    fields = portal.methods("crm.contact.add")[0]["fields"]
    assert fields["NAME"] == "Ann" and fields["LAST_NAME"] == "Contract"
    assert fields["PHONE"] == [{"VALUE": "+442079460123", "VALUE_TYPE": "MOBILE"}]
    assert fields["EMAIL"] == [{"VALUE": "ann@example.com", "VALUE_TYPE": "WORK"}]
    assert fields["IM"] == [{"VALUE": "4242", "VALUE_TYPE": "TELEGRAM"}]
    assert fields["ASSIGNED_BY_ID"] == 5 and fields["SOURCE_ID"] == "OTHER"
    assert fields["UF_CRM_SIZE"] == "10"
    other = make().contact_fields(
        draft(
            lookup=ContactLookup(identities={"whatsapp": "447700900123"}), profile=SenderProfile()
        )
    )
    assert other["IM"] == [{"VALUE": "whatsapp:447700900123", "VALUE_TYPE": "OTHER"}]
    assert other["NAME"] == "Whatsapp 447700900123"


def test_update_contact_adds_only_new_values_without_ids(portal: Portal) -> None:
    current = example("api-reference__crm__contacts__crm-contact-get.1")["result"]
    current["PHONE"] = [{"ID": "222", "VALUE_TYPE": "WORK", "VALUE": "+44 (20) 7946-0123"}]
    current["EMAIL"] = []
    current["IM"] = []
    portal.on("crm.contact.get", current)
    portal.on("crm.contact.update", True)
    make().update_contact(CONTACT, draft())
    (update,) = portal.methods("crm.contact.update")
    assert update["id"] == 501
    # crm-contact-update.md example 6: a value without ID is added, old ones stay
    documented = example("api-reference__crm__contacts__crm-contact-update.6")["fields"]["PHONE"]
    same_shape(update["fields"], {"PHONE": documented, "EMAIL": documented, "IM": documented})
    assert "PHONE" not in update["fields"]  # the same number, formatted differently
    assert update["fields"]["EMAIL"] == [{"VALUE": "ann@example.com", "VALUE_TYPE": "WORK"}]
    assert update["fields"]["IM"] == [{"VALUE": "4242", "VALUE_TYPE": "TELEGRAM"}]
    assert all("ID" not in v for values in update["fields"].values() for v in values)
    portal.executed.clear()
    current.update(
        EMAIL=[{"ID": "2", "VALUE": "ann@example.com"}],
        IM=[{"ID": "3", "VALUE": "4242", "VALUE_TYPE": "TELEGRAM"}],
    )
    make().update_contact(CONTACT, draft())
    assert portal.methods("crm.contact.update") == []  # nothing new: no write


# ==========================================================================
# leads and deals
# ==========================================================================


def test_create_lead_and_deal_fields(portal: Portal) -> None:
    portal.on("crm.lead.add", 3465)
    portal.on("crm.deal.add", 394)
    adapter = make()
    assert adapter.create_entity(lead_draft()) == CrmRef("lead", "3465")
    lead = portal.methods("crm.lead.add")[0]
    assert set(lead) == {"fields"}
    same_shape(lead, doc_request("api-reference/crm/leads/crm-lead-add.md"), free=("fields",))
    fields = lead["fields"]
    assert fields["TITLE"] == "Telegram: Ann Contract" and fields["STATUS_ID"] == "NEW"
    assert fields["CONTACT_ID"] == 501 and fields["ASSIGNED_BY_ID"] == 5
    assert fields["SOURCE_ID"] == "OTHER" and "Telegram" in fields["SOURCE_DESCRIPTION"]
    assert fields["UTM_SOURCE"] == "ads" and fields["UF_CRM_CAMPAIGN"] == "spring"
    assert fields["ORIGINATOR_ID"] == "crm_bridge" and fields["ORIGIN_ID"] == "conv-1"
    deal = lead_draft(object_type="deal", pipeline="1", stage="C1:NEW")
    assert adapter.create_entity(deal) == CrmRef("deal", "394")
    deal_fields = portal.methods("crm.deal.add")[0]["fields"]
    assert deal_fields["CATEGORY_ID"] == 1 and deal_fields["STAGE_ID"] == "C1:NEW"
    assert "STATUS_ID" not in deal_fields and deal_fields["ORIGIN_ID"] == "conv-1"
    with pytest.raises(PermanentError, match="ticket"):
        adapter.create_entity(lead_draft(object_type="ticket"))
    with pytest.raises(NotReadyError, match="company_size"):
        adapter.create_entity(lead_draft(properties={"company_size": "10"}))
    created = make(settings={"custom_fields": {"lead": {"company_size": "UF_CRM_COMPANY_SIZE"}}})
    created.create_entity(lead_draft(properties={"company_size": "10"}))
    assert portal.methods("crm.lead.add")[-1]["fields"]["UF_CRM_COMPANY_SIZE"] == "10"


def test_find_entity_by_conversation_uid(portal: Portal) -> None:
    portal.on("crm.deal.list", [{"ID": "80"}, {"ID": "77"}])
    assert make().find_entity(lead_draft(object_type="deal")) == CrmRef("deal", "77")
    (query,) = portal.methods("crm.deal.list")
    assert query["filter"] == {"ORIGINATOR_ID": "crm_bridge", "ORIGIN_ID": "conv-1"}
    portal.on("crm.lead.list", [])
    assert make().find_entity(lead_draft()) is None
    make(settings={"conversation_field": "UF_CRM_BRIDGE_CONV"}).find_entity(lead_draft())
    assert portal.methods("crm.lead.list")[-1]["filter"] == {"UF_CRM_BRIDGE_CONV": "conv-1"}


def test_entity_is_open_by_semantics(portal: Portal) -> None:
    lead = example("api-reference__crm__leads__crm-lead-get.1")["result"]
    portal.on("crm.lead.get", lead)
    adapter = make()
    assert adapter.entity_is_open(LEAD) is True  # STATUS_SEMANTIC_ID P
    lead["STATUS_SEMANTIC_ID"] = "F"
    assert adapter.entity_is_open(LEAD) is False
    deal = example("api-reference__crm__deals__crm-deal-get.1")["result"]
    portal.on("crm.deal.get", deal)
    assert adapter.entity_is_open(DEAL) is True
    deal["CLOSED"] = "Y"
    assert adapter.entity_is_open(DEAL) is False
    portal.on("crm.lead.get", lambda _p: (_ for _ in ()).throw(Err(400, "", "Not found")))
    assert adapter.entity_is_open(LEAD) is False  # deleted


def test_entity_is_open_falls_back_to_the_cached_status_list(portal: Portal) -> None:
    statuses = example("api-reference__crm__status__crm-status-list.1")["result"]
    portal.on("crm.status.list", statuses)
    deal = {"ID": "77", "STAGE_ID": "APOLOGY", "CATEGORY_ID": "0"}
    portal.on("crm.deal.get", deal)
    adapter = make()
    assert adapter.entity_is_open(DEAL) is False  # EXTRA.SEMANTICS apology
    deal["STAGE_ID"] = "EXECUTING"
    assert adapter.entity_is_open(DEAL) is True
    assert len(portal.methods("crm.status.list")) == 1  # cached
    assert portal.methods("crm.status.list")[0]["filter"] == {"ENTITY_ID": "DEAL_STAGE"}


# ==========================================================================
# timeline comments, one batch per drain
# ==========================================================================


def comment_ids(portal: Portal) -> None:
    counter = iter(range(1000, 100000))
    portal.on("crm.timeline.comment.add", lambda _p: next(counter))


def test_a_drain_is_one_batch_of_comments(portal: Portal) -> None:
    comment_ids(portal)
    entries = [entry(f"m{i}", sequence=i) for i in range(3)]
    result = make().append_entries(entries)
    assert [m for m, _ in portal.requests] == ["batch"]
    assert portal.requests[0][1]["halt"] == 1
    assert result == {f"m{i}": (CrmRef("comment", str(1000 + i)),) for i in range(3)}
    sent = portal.methods("crm.timeline.comment.add")
    same_shape(
        sent[0], doc_request("api-reference/crm/timeline/comments/crm-timeline-comment-add.md")
    )
    fields = sent[1]["fields"]
    assert set(fields) == {"ENTITY_ID", "ENTITY_TYPE", "COMMENT"}
    assert fields["ENTITY_ID"] == "900" and fields["ENTITY_TYPE"] == "lead"
    comment = fields["COMMENT"]
    # what a rep reads: the header and the message, no machine marker
    assert strip_hidden(comment).split("\n") == [
        "Ann Contract via Telegram · 2025-03-01 09:15 UTC",
        "Is the blue one in stock?",
    ]
    assert "[bridge:" not in comment
    # the marker, hidden at the end of the header (through the batch encoding and back)
    at = T0 + dt.timedelta(seconds=1)
    assert comment.split("\n")[0].endswith(marker("m1", 1, at))
    assert read_marker(comment) == (marker_hash("m1"), 1, at)


#: ``options``: the entry's typed fields; ``account``: the tenant's (CrmAccountInfo)
@pytest.mark.parametrize(
    ("language", "options", "account", "header"),
    [
        (
            "ru",
            {"timezone": "Europe/Moscow"},
            {},
            "Ann Contract через Telegram · 01.03.2025 12:15 MSK",
        ),
        (
            "en",
            {"timezone": ""},  # the entry names no zone: the tenant's
            {"timezone": "America/New_York"},
            "Ann Contract via Telegram · 2025-03-01 04:15 EST",
        ),
        (
            "en",
            {"timezone": "Asia/Yekaterinburg"},
            {},
            "Ann Contract via Telegram · 2025-03-01 14:15 UTC+05",
        ),
        (
            "ru",
            {"timezone": "No/Such_Zone"},
            {},
            "Ann Contract через Telegram · 01.03.2025 09:15 UTC",
        ),
        ("ru", {}, {}, "Ann Contract через Telegram · 01.03.2025 09:15 UTC"),
    ],
)
def test_comment_header_shows_the_time_in_the_tenants_zone(
    portal: Portal, language: str, options: dict[str, Any], account: dict[str, Any], header: str
) -> None:
    comment_ids(portal)
    adapter = make(settings={"member_id": MEMBER, "domain": DOMAIN}, **account)
    adapter.append_entries([entry("m1", sequence=0, options={"language": language, **options})])
    (sent,) = portal.methods("crm.timeline.comment.add")
    assert strip_hidden(sent["fields"]["COMMENT"]).split("\n")[0] == header


def test_one_message_is_one_plain_call(portal: Portal) -> None:
    comment_ids(portal)
    make().append_entries([entry("m1")])
    assert [m for m, _ in portal.requests] == ["crm.timeline.comment.add"]


@pytest.mark.parametrize("n", [1, 2, 10, 50, 51, 120])
def test_calls_per_message_fall_with_load(portal: Portal, n: int) -> None:
    comment_ids(portal)
    make().append_entries([entry(f"m{i}", sequence=i) for i in range(n)])
    assert len(portal.requests) == math.ceil(n / 50)


def test_comment_text_edits_attachments_and_no_urls(portal: Portal) -> None:
    comment_ids(portal)
    photo = Attachment(
        kind=MessageKind.PHOTO,
        url="https://api.telegram.org/file/bot123:SECRET/p.jpg",
        file_name="p.jpg",
    )
    make().append_entries(
        [
            entry("m1", text="see $result[contact]", is_edit=True, attachments=(photo,)),
            entry("m2", sequence=2, text="$result[c0]"),
        ]
    )
    comment, second = (c["fields"]["COMMENT"] for c in portal.methods("crm.timeline.comment.add"))
    assert "(edited)" in comment and "[photo: p.jpg]" in comment
    assert "SECRET" not in comment and "https://" not in comment
    # inside a batch Bitrix24 would substitute it: neutralised (invisible)
    assert "see $\u200bresult[contact]" in comment and "$\u200bresult[c0]" in second
    # a plain JSON call is never substituted: the text goes as it is
    portal.executed.clear()
    make().append_entries([entry("m3", text="see $result[contact]")])
    assert (
        "see $result[contact]" in portal.methods("crm.timeline.comment.add")[0]["fields"]["COMMENT"]
    )


def test_retry_looks_comments_up_by_marker(portal: Portal) -> None:
    comment_ids(portal)
    existing = [
        {"ID": "555", "COMMENT": f"old\n[bridge:{marker_hash('m1')}:1:1]"},
        {"ID": "556", "COMMENT": "a rep's own comment"},
    ]
    portal.on(
        "crm.timeline.comment.list",
        lambda p: existing if int(p.get("start", 0)) == 0 else [],
    )
    entries = [entry("m1", maybe_written=True), entry("m2", sequence=2, maybe_written=True)]
    result = make().append_entries(entries)
    assert result["m1"] == (CrmRef("comment", "555"),)
    assert result["m2"] == (CrmRef("comment", "1000"),)
    lookups = portal.methods("crm.timeline.comment.list")
    assert lookups[0]["filter"] == {"ENTITY_ID": "900", "ENTITY_TYPE": "lead"}
    assert lookups[0]["order"] == {"ID": "DESC"}
    assert len(portal.methods("crm.timeline.comment.add")) == 1  # only m2 written
    assert [m for m, _ in portal.requests] == ["batch", "crm.timeline.comment.add"]


def test_retry_finds_comments_by_their_hidden_marker(portal: Portal) -> None:
    comment_ids(portal)
    existing = [
        {"ID": "557", "COMMENT": f"Ann{marker('m1', 1, T0)}\nIs the blue one in stock?"},
        {"ID": "556", "COMMENT": "a rep's own comment"},
    ]
    portal.on(
        "crm.timeline.comment.list", lambda p: existing if int(p.get("start", 0)) == 0 else []
    )
    result = make().append_entries([entry("m1", maybe_written=True)])
    assert result == {"m1": (CrmRef("comment", "557"),)}
    assert portal.methods("crm.timeline.comment.add") == []


def test_a_comment_stripped_of_its_marker_is_written_again_with_a_visible_one(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    """Bitrix24 may drop zero-width characters (UNCONFIRMED): the retry cannot
    prove its comment is there, so it writes it again (never lost, maybe
    shown twice), warns with the fix, and writes the visible tag."""
    comment_ids(portal)
    adapter = make()
    adapter.append_entries([entry("m1")])
    written = portal.methods("crm.timeline.comment.add")[0]["fields"]["COMMENT"]
    existing = [{"ID": "1000", "COMMENT": strip_hidden(written)}]
    portal.on(
        "crm.timeline.comment.list", lambda p: existing if int(p.get("start", 0)) == 0 else []
    )
    with caplog.at_level("WARNING", logger="crm_adapters.bitrix24.timeline"):
        result = adapter.append_entries([entry("m1", maybe_written=True)])
    assert result == {"m1": (CrmRef("comment", "1001"),)}
    again = portal.methods("crm.timeline.comment.add")[-1]["fields"]["COMMENT"]
    assert again.split("\n")[0].endswith(f" [bridge:{marker_hash('m1')}]")
    assert not set(again) & HIDDEN_CHARS and parse_marker(again) == marker_hash("m1")
    assert "marker_style: visible" in caplog.text and "blue" not in caplog.text


def test_marker_style_visible_writes_the_short_tag(portal: Portal) -> None:
    comment_ids(portal)
    make(
        settings={"member_id": MEMBER, "domain": DOMAIN, "marker_style": "visible"}
    ).append_entries([entry("m1")])
    comment = portal.methods("crm.timeline.comment.add")[0]["fields"]["COMMENT"]
    assert comment.split("\n")[0] == (
        f"Ann Contract via Telegram · 2025-03-01 09:15 UTC [bridge:{marker_hash('m1')}]"
    )


def test_failure_part_way_reports_what_was_written(portal: Portal) -> None:
    def comment(params: dict[str, Any]) -> int:
        if "message 2" in params["fields"]["COMMENT"]:
            raise Err(400, "ACCESS_DENIED", "Insufficient permissions")
        return 7

    portal.on("crm.timeline.comment.add", comment)
    entries = [entry(f"m{i}", sequence=i, text=f"message {i}") for i in range(4)]
    with pytest.raises(PermanentError) as caught:
        make().append_entries(entries)
    assert caught.value.partial == {
        "m0": (CrmRef("comment", "7"),),
        "m1": (CrmRef("comment", "7"),),
    }
    # halt=1: nothing after the failing command ran
    assert len(portal.methods("crm.timeline.comment.add")) == 3


def test_an_ambiguous_batch_reports_nothing_written(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, re.compile(re.escape(ENDPOINT) + ".*"), status=504)
    with pytest.raises(AmbiguousError) as caught:
        make().append_entries([entry("m1"), entry("m2", sequence=2)])
    assert caught.value.partial == {}


def test_comments_go_on_the_contact_without_an_entity(portal: Portal) -> None:
    comment_ids(portal)
    make().append_entries([entry("m1", entity=None)])
    fields = portal.methods("crm.timeline.comment.add")[0]["fields"]
    assert fields["ENTITY_TYPE"] == "contact" and fields["ENTITY_ID"] == 501


# ==========================================================================
# Open Lines (FACTS 2.8)
# ==========================================================================


def openlines_ok(portal: Portal) -> None:
    portal.on(
        "imconnector.send.messages",
        lambda p: {
            "SUCCESS": True,
            "DATA": {"RESULT": [{"SUCCESS": True, "session": {"ID": "1"}} for _ in p["MESSAGES"]]},
        },
    )


def test_open_lines_messages_ride_in_the_comments_batch(portal: Portal) -> None:
    comment_ids(portal)
    openlines_ok(portal)
    entries = [entry(f"m{i}", sequence=i, inbox=True) for i in range(3)]
    result = make(settings=OPENLINES, inbox=True).append_entries(entries)
    assert [m for m, _ in portal.requests] == ["batch"]
    keys = list(portal.requests[0][1]["cmd"])
    assert keys[0] == "im0"  # the chat send first, the comments after it
    (send,) = portal.methods("imconnector.send.messages")
    same_shape(
        send, doc_request("api-reference/imopenlines/imconnector/imconnector-send-messages.md")
    )
    assert send["CONNECTOR"] == "crm_bridge_telegram" and send["LINE"] == "107"
    assert len(send["MESSAGES"]) == 3
    first = send["MESSAGES"][0]
    assert first["user"] == {"id": "tg-4242", "name": "Ann", "last_name": "Contract"}
    assert first["message"]["id"] == "m0" and first["message"]["disable_crm"] == "Y"
    assert first["message"]["date"] == str(int(T0.timestamp()))
    assert first["message"]["text"] == "Is the blue one in stock?"
    assert first["chat"] == {"id": "conv-1", "name": "Telegram"}
    assert result["m1"] == (CrmRef("comment", "1001"), CrmRef("message", "m1"))


def test_open_lines_only_is_one_call_for_many_messages(portal: Portal) -> None:
    openlines_ok(portal)
    entries = [entry(f"m{i}", sequence=i, inbox=True, timeline="none") for i in range(5)]
    result = make(settings=OPENLINES, inbox=True).append_entries(entries)
    assert [m for m, _ in portal.requests] == ["imconnector.send.messages"]
    assert result["m4"] == (CrmRef("message", "m4"),)


def test_open_lines_retry_trusts_the_comment_it_was_sent_before(portal: Portal) -> None:
    comment_ids(portal)
    openlines_ok(portal)
    portal.on(
        "crm.timeline.comment.list",
        [{"ID": "555", "COMMENT": f"x\n[bridge:{marker_hash('m1')}:1:1]"}],
    )
    result = make(settings=OPENLINES, inbox=True).append_entries(
        [entry("m1", inbox=True, maybe_written=True), entry("m2", inbox=True, maybe_written=True)]
    )
    assert result["m1"] == (CrmRef("comment", "555"), CrmRef("message", "m1"))
    (send,) = portal.methods("imconnector.send.messages")
    assert [m["message"]["id"] for m in send["MESSAGES"]] == ["m2"]


def test_an_edit_updates_the_original_message(portal: Portal) -> None:
    comment_ids(portal)
    portal.on(
        "imconnector.update.messages", {"SUCCESS": True, "DATA": {"RESULT": [{"SUCCESS": True}]}}
    )
    make(settings=OPENLINES, inbox=True).append_entries(
        [entry("m9", inbox=True, is_edit=True, text="blue, sorry", options={"edit_of": "m1"})]
    )
    (update,) = portal.methods("imconnector.update.messages")
    assert update["MESSAGES"][0]["message"]["id"] == "m1"
    assert update["MESSAGES"][0]["message"]["text"] == "blue, sorry (edited)"


def test_open_lines_refusals(portal: Portal) -> None:
    comment_ids(portal)
    portal.on(
        "imconnector.send.messages",
        {"SUCCESS": True, "DATA": {"RESULT": [{"SUCCESS": False, "ERRORS": ["bad user"]}]}},
    )
    chat_only = entry("m1", inbox=True, timeline="none")
    with pytest.raises(PermanentError, match="bad user"):
        make(settings=OPENLINES, inbox=True).append_entries([chat_only])
    # with a comment the message is filed on the timeline: no error, no duplicate later
    assert make(settings=OPENLINES, inbox=True).append_entries([entry("m2", inbox=True)])["m2"] == (
        CrmRef("comment", "1000"),
    )
    portal.on(
        "imconnector.send.messages",
        lambda _p: (_ for _ in ()).throw(
            Err(400, "NOT_ACTIVE_LINE", "The line with this ID is inactive or does not exist")
        ),
    )
    with pytest.raises(PermanentError, match="NOT_ACTIVE_LINE"):
        make(settings=OPENLINES, inbox=True).append_entries([entry("m3", inbox=True)])


def test_open_lines_sent_whose_comment_failed_is_not_sent_again(portal: Portal) -> None:
    """The chat send runs first in the halt=1 batch; a comment refused after
    it leaves the messages in the Open Lines chat: the error reports them
    (``progress``) and the retry with those refs sends only the comments."""
    openlines_ok(portal)

    def comment(params: dict[str, Any]) -> int:
        if "message 1" in params["fields"]["COMMENT"]:
            raise Err(400, "ACCESS_DENIED", "Insufficient permissions")
        return 7

    portal.on("crm.timeline.comment.add", comment)
    entries = [entry(f"m{i}", sequence=i, text=f"message {i}", inbox=True) for i in range(3)]
    with pytest.raises(PermanentError) as caught:
        make(settings=OPENLINES, inbox=True).append_entries(entries)
    assert caught.value.partial == {"m0": (CrmRef("comment", "7"), CrmRef("message", "m0"))}
    assert caught.value.progress == {
        "m1": (CrmRef("message", "m1"),),
        "m2": (CrmRef("message", "m2"),),
    }
    portal.on("crm.timeline.comment.add", lambda _p: 8)
    retry = [replace(e, written=caught.value.progress[e.bridge_id]) for e in entries[1:]]
    result = make(settings=OPENLINES, inbox=True).append_entries(retry)
    assert len(portal.methods("imconnector.send.messages")) == 1  # the first batch's only
    assert result == {
        "m1": (CrmRef("comment", "8"), CrmRef("message", "m1")),
        "m2": (CrmRef("comment", "8"), CrmRef("message", "m2")),
    }


def test_open_lines_need_the_app_install(hook_portal: Portal) -> None:
    with pytest.raises(PermanentError, match="Open Lines need the app install"):
        make(HOOK_CREDS, {**OPENLINES}).append_entries([entry("m1", inbox=True)])
    assert hook_portal.requests == []
    # an app install whose setup has not activated a line yet: a wait
    with pytest.raises(NotReadyError, match="line"):
        make(settings={"member_id": MEMBER}).append_entries([entry("m1", inbox=True)])


def test_names_are_sanitised_for_open_lines() -> None:
    assert person_name("Ann-Marie O'Neil") == "Ann-Marie O'Neil"
    assert person_name("R2-D2 🤖 <script>") == "R-D script"
    assert person_name("Maximiliana Alexandrovna Konstantinopolskaya") == "Maximiliana Alexandrovna"
    assert len(person_name("x" * 40)) == 25
    assert person_name("Иван Петров") == "Иван Петров"
    assert person_name("12345") == ""


# ==========================================================================
# to-dos and tasks
# ==========================================================================


def task(**changes: Any) -> TaskDraft:
    base = TaskDraft(
        bridge_id="conv-1:task",
        subject="Reply to Ann",
        body="Is the blue one in stock?",
        due_at=dt.datetime(2025, 3, 1, 10, 15, 30, 120000, tzinfo=dt.UTC),
        contact=CONTACT,
        entity=LEAD,
        owner_id="5",
    )
    return replace(base, **changes)


def test_todo_is_added_on_the_lead(portal: Portal) -> None:
    portal.on("crm.activity.todo.add", {"id": 999})
    assert make().create_task(task()) == CrmRef("todo", "999")
    (sent,) = portal.methods("crm.activity.todo.add")
    same_shape(
        sent, doc_request("api-reference/crm/timeline/activities/todo/crm-activity-todo-add.md")
    )
    assert sent["ownerTypeId"] == 1 and sent["ownerId"] == 900 and sent["responsibleId"] == 5
    assert sent["deadline"] == "2025-03-01T10:15:30+00:00" and sent["title"] == "Reply to Ann"
    # the customer's words, the marker hidden ahead of them (never after a link)
    assert sent["description"] == marker("conv-1:task") + "Is the blue one in stock?"
    make().create_task(task(entity=DEAL))
    assert portal.methods("crm.activity.todo.add")[-1]["ownerTypeId"] == 2


def test_todo_retry_finds_the_first_one(portal: Portal) -> None:
    portal.on(
        "crm.activity.list",
        [{"ID": "31", "DESCRIPTION": f"x\n[bridge:{marker_hash('conv-1:task')}]"}],
    )
    portal.on("crm.activity.todo.add", {"id": 1})
    assert make().create_task(task(maybe_written=True)) == CrmRef("todo", "31")
    assert portal.methods("crm.activity.todo.add") == []
    assert portal.methods("crm.activity.list")[0]["filter"] == {"OWNER_TYPE_ID": 1, "OWNER_ID": 900}


def test_tasks_when_the_tenant_wants_tasks(portal: Portal) -> None:
    answer = example("api-reference__tasks__tasks-task-add.1")["result"]
    portal.on("tasks.task.add", answer)
    adapter = make(settings={"task_kind": "task"})
    assert adapter.create_task(task()) == CrmRef("task", str(answer["task"]["id"]))
    (sent,) = portal.methods("tasks.task.add")
    same_shape(sent, doc_request("api-reference/tasks/tasks-task-add.md"), free=("fields",))
    assert sent["fields"]["UF_CRM_TASK"] == ["L_900", "C_501"]
    assert sent["fields"]["RESPONSIBLE_ID"] == 5
    portal.on(
        "tasks.task.list",
        {"tasks": [{"id": "3711", "description": f"[bridge:{marker_hash('conv-1:task')}]"}]},
    )
    assert adapter.create_task(task(maybe_written=True)) == CrmRef("task", "3711")
    assert sent["fields"]["DESCRIPTION"] == marker("conv-1:task") + "Is the blue one in stock?"
    portal.on(
        "tasks.task.list",
        {"tasks": [{"id": "3712", "description": sent["fields"]["DESCRIPTION"]}]},
    )
    assert adapter.create_task(task(maybe_written=True)) == CrmRef("task", "3712")
    with pytest.raises(PermanentError, match="responsible"):
        adapter.create_task(task(owner_id=None))


# ==========================================================================
# owners
# ==========================================================================


def test_list_owners_pages_through_active_users(portal: Portal) -> None:
    users = example("api-reference__user__user-get.1")["result"]
    calls: list[dict[str, Any]] = []

    def user_get(params: dict[str, Any]) -> Any:
        calls.append(params)
        return users

    portal.on("user.get", user_get)
    owners = make().list_owners()
    assert owners[0].id == "1" and owners[0].name == "Vadim Valeev"
    assert owners[0].email == "v.r.valeev@bitrix.com"
    assert calls[0]["FILTER"] == {"ACTIVE": True}


def test_list_owners_fetches_later_pages_in_one_batch(rsps: responses.RequestsMock) -> None:
    pages: list[Any] = []

    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        pages.append(request.url.rsplit("/", 1)[-1])
        if request.url.endswith("/user.get"):
            rows = [{"ID": str(i), "NAME": f"U{i}", "ACTIVE": True} for i in range(50)]
            return 200, {}, json.dumps({"result": rows, "total": 120, "next": 50})
        result = {
            key: [{"ID": str(int(php_parse(cmd.partition("?")[2])["start"]) + i)} for i in range(2)]
            for key, cmd in body["cmd"].items()
        }
        return 200, {}, json.dumps({"result": {"result": result, "result_error": []}})

    rsps.add_callback(responses.POST, re.compile(re.escape(ENDPOINT) + ".*"), callback=callback)
    owners = make().list_owners()
    assert pages == ["user.get", "batch"]
    assert len(owners) == 54 and owners[-1].id == "101"


# ==========================================================================
# events in (FACTS 2.5, 2.6)
# ==========================================================================


def test_decode_brackets_is_strict() -> None:
    assert decode_brackets(b"a[b][0]=1&a[b][1]=2&c=") == {"a": {"b": {"0": "1", "1": "2"}}, "c": ""}
    for junk in (b"a=1&a=2", b"a=1&a[b]=2", b"a[b]=1&a=2", b"=1", b"a[b=1", b"\xff=1"):
        with pytest.raises(PayloadError):
            decode_brackets(junk)


def test_verify_accepts_the_stored_application_token() -> None:
    adapter = make(settings=OPENLINES, inbox=True)
    request = event_request(
        official_event(
            "api-reference__imopenlines__imconnector__events__on-im-connector-message-add"
        )
    )
    adapter.verify_webhook(request)
    # after a full-OAuth re-authorisation the token is gone from the
    # credentials; its digest in the settings still verifies
    digest_only = make(
        {k: v for k, v in OAUTH_CREDS.items() if k != "application_token"},
        {**OPENLINES, "application_token_sha256": token_digest(APP_TOKEN)},
        inbox=True,
    )
    digest_only.verify_webhook(request)


@pytest.mark.parametrize(
    "auth",
    [
        {"application_token": "0" * 32},
        {"application_token": ""},
        {"application_token": APP_TOKEN[:-1]},
        {"member_id": "f" * 32},
    ],
)
def test_forged_tokens_are_refused(auth: dict[str, str]) -> None:
    payload = official_event("api-reference__common__events__on-app-uninstall", **auth)
    with pytest.raises(SignatureError):
        make(settings=OPENLINES, inbox=True).verify_webhook(event_request(payload))


def test_missing_token_and_webhook_tenants_are_refused() -> None:
    payload = official_event("api-reference__common__events__on-app-uninstall")
    del payload["auth"]["application_token"]
    with pytest.raises(SignatureError):
        make().verify_webhook(event_request(payload))
    with pytest.raises(SignatureError):
        make().verify_webhook(event_request({}, body=b"\xff\xfe"))
    good = official_event("api-reference__common__events__on-app-uninstall")
    with pytest.raises(SignatureError, match="incoming webhook"):
        make(HOOK_CREDS, {"domain": DOMAIN}).verify_webhook(event_request(good))
    with pytest.raises(SignatureError, match="install event"):
        make({k: v for k, v in OAUTH_CREDS.items() if k != "application_token"}).verify_webhook(
            event_request(good)
        )


def test_operator_message_becomes_a_reply() -> None:
    payload = official_event(
        "api-reference__imopenlines__imconnector__events__on-im-connector-message-add"
    )
    payload["data"]["CONNECTOR"] = "crm_bridge_telegram"
    payload["data"]["MESSAGES"][0]["chat"]["id"] = "conv-1"
    (reply,) = make(settings=OPENLINES, inbox=True).parse_webhook(event_request(payload))
    assert reply.kind is CrmEventKind.REPLY
    assert reply.external_id == "1807:86497"
    assert reply.thread_key == "conv-1"
    assert reply.crm_thread_id == "crm_bridge_telegram:107:conv-1"
    assert reply.text == "Guten Tag!"
    assert reply.author_name == "Klaus Weber" and reply.author_id == "27"
    assert reply.occurred_at == dt.datetime.fromtimestamp(payload["ts"], dt.UTC)
    assert "auth" not in reply.raw
    kept = make(settings={**OPENLINES, "operator_signature": "keep"}, inbox=True).parse_webhook(
        event_request(payload)
    )
    assert kept[0].text == "Klaus Weber: Guten Tag!"
    other = dict(payload, data={**payload["data"], "CONNECTOR": "someone_else"})
    assert [
        e.kind for e in make(settings=OPENLINES, inbox=True).parse_webhook(event_request(other))
    ] == [CrmEventKind.UNKNOWN]


def test_several_operator_messages_in_one_event() -> None:
    payload = official_event(
        "api-reference__imopenlines__imconnector__events__on-im-connector-message-add"
    )
    payload["data"]["CONNECTOR"] = "crm_bridge_telegram"
    second = json.loads(json.dumps(payload["data"]["MESSAGES"][0]))
    second["im"]["message_id"] = 86498
    second["message"]["text"] = "[b]Klaus Weber:[/b] [br]Noch etwas?"
    payload["data"]["MESSAGES"].append(second)
    replies = make(settings=OPENLINES, inbox=True).parse_webhook(event_request(payload))
    assert [r.external_id for r in replies] == ["1807:86497", "1807:86498"]
    assert [r.text for r in replies] == ["Guten Tag!", "Noch etwas?"]


def test_uninstall_and_deletions(portal: Portal) -> None:
    adapter = make(settings=OPENLINES, inbox=True)
    (removed,) = adapter.parse_webhook(
        event_request(official_event("api-reference__common__events__on-app-uninstall"))
    )
    assert removed.kind is CrmEventKind.APP_REMOVED
    base = official_event("api-reference__crm__leads__events__on-crm-lead-update")
    for name, kind, ref in [
        ("ONCRMLEADDELETE", CrmEventKind.ENTITY_CLOSED, CrmRef("lead", "7")),
        ("ONCRMDEALDELETE", CrmEventKind.ENTITY_CLOSED, CrmRef("deal", "7")),
    ]:
        (event,) = adapter.parse_webhook(
            event_request({**base, "event": name, "data": {"FIELDS": {"ID": "7"}}})
        )
        assert event.kind is kind and event.entity == ref
    (gone,) = adapter.parse_webhook(
        event_request({**base, "event": "ONCRMCONTACTDELETE", "data": {"FIELDS": {"ID": "501"}}})
    )
    assert gone.kind is CrmEventKind.CONTACT_REMOVED and gone.contact == CONTACT
    assert portal.requests == []  # deletions need no re-read


def test_lead_update_is_re_read(portal: Portal) -> None:
    lead = example("api-reference__crm__leads__crm-lead-get.1")["result"]
    portal.on("crm.lead.get", lead)
    limiter = Limiter()
    adapter = make(settings=OPENLINES, limiter=limiter, inbox=True)
    payload = official_event("api-reference__crm__leads__events__on-crm-lead-update")
    lead_id = str(payload["data"]["FIELDS"]["ID"])
    events = adapter.parse_webhook(event_request(payload))
    # the open stage it is in (the service layer's transfers), its owner
    assert [e.kind for e in events] == [CrmEventKind.ENTITY_STAGE, CrmEventKind.OWNER_CHANGED]
    assert events[0].stage and events[0].entity == CrmRef("lead", lead_id)
    assert events[1].entity == CrmRef("lead", lead_id) and events[1].owner_id == "1"
    assert portal.methods("crm.lead.get") == [{"id": int(lead_id)}]
    assert limiter.acquired == []  # outside the bucket: the hook must answer promptly
    lead["STATUS_SEMANTIC_ID"] = "S"
    kinds = [e.kind for e in adapter.parse_webhook(event_request(payload))]
    assert kinds == [CrmEventKind.ENTITY_CLOSED, CrmEventKind.OWNER_CHANGED]


def test_deal_update_and_unreadable_updates(portal: Portal) -> None:
    deal = example("api-reference__crm__deals__crm-deal-get.1")["result"]
    deal["STAGE_SEMANTIC_ID"] = "F"
    portal.on("crm.deal.get", deal)
    payload = official_event("api-reference__crm__deals__events__on-crm-deal-update")
    adapter = make(settings=OPENLINES, inbox=True)
    assert CrmEventKind.ENTITY_CLOSED in {
        e.kind for e in adapter.parse_webhook(event_request(payload))
    }
    portal.on("crm.deal.get", lambda _p: (_ for _ in ()).throw(Err(400, "", "Not found")))
    (gone,) = adapter.parse_webhook(event_request(payload))
    assert gone.kind is CrmEventKind.ENTITY_CLOSED
    portal.on("crm.deal.get", lambda _p: (_ for _ in ()).throw(Err(503, "QUERY_LIMIT_EXCEEDED")))
    (unknown,) = adapter.parse_webhook(event_request(payload))
    assert unknown.kind is CrmEventKind.UNKNOWN  # logged, not a 5xx to the queue server


def test_an_operator_closing_the_open_lines_session_closes_the_chat() -> None:
    """OnImConnectorDialogFinish (the official example): one THREAD_CLOSED
    per DATA item, for our connector only, named by its chat.id."""
    adapter = make(settings=OPENLINES, inbox=True)
    name = "api-reference__imopenlines__imconnector__events__on-im-connector-dialog-finish"
    payload = official_event(name)
    assert adapter.parse_webhook(event_request(payload)) == []  # another app's connector
    payload["data"]["CONNECTOR"] = "crm_bridge_telegram"
    (closed,) = adapter.parse_webhook(event_request(payload))
    assert closed.kind is CrmEventKind.THREAD_CLOSED
    assert closed.external_id == "ONIMCONNECTORDIALOGFINISH:3282"  # the session's id
    assert closed.thread_key == "8"
    assert closed.crm_thread_id == "crm_bridge_telegram:105:8"
    assert "auth" not in closed.raw
    del payload["data"]["DATA"][0]["session"]
    with pytest.raises(PayloadError):
        adapter.parse_webhook(event_request(payload))
    payload["data"]["DATA"] = []
    with pytest.raises(PayloadError):
        adapter.parse_webhook(event_request(payload))


def test_unknown_events_and_junk() -> None:
    adapter = make(settings=OPENLINES, inbox=True)
    for name in (
        "api-reference__imopenlines__imconnector__events__on-im-connector-dialog-start",
        "api-reference__imopenlines__imconnector__events__on-im-connector-status-delete",
        "api-reference__crm__contacts__events__on-crm-contact-add",
    ):
        events = adapter.parse_webhook(event_request(official_event(name)))
        assert [e.kind for e in events] == [CrmEventKind.UNKNOWN], name
    bad = official_event(
        "api-reference__imopenlines__imconnector__events__on-im-connector-message-add"
    )
    bad["data"]["CONNECTOR"] = "crm_bridge_telegram"
    del bad["data"]["MESSAGES"][0]["im"]
    with pytest.raises(PayloadError):
        adapter.parse_webhook(event_request(bad))
    with pytest.raises(PayloadError):
        adapter.parse_webhook(event_request({}, body=b"event=ONCRMLEADUPDATE&data[FIELDS][ID]=x"))
    with pytest.raises(PayloadError):
        adapter.parse_webhook(event_request({}, body=b"a[=1"))
    json_event = WebhookRequest(
        method="POST",
        url="u",
        headers={"content-type": "application/json"},
        body=json.dumps(official_event("api-reference__common__events__on-app-uninstall")).encode(),
    )
    assert adapter.parse_webhook(json_event)[0].kind is CrmEventKind.APP_REMOVED


# ==========================================================================
# BB-code -> text
# ==========================================================================


@pytest.mark.parametrize(
    ("bb", "text"),
    [
        ("[b]Bold[/b] [i]it[/i] [u]u[/u] [s]gone[/s]", "Bold it u gone"),
        ("one[br]two[BR]three", "one\ntwo\nthree"),
        ("[url=https://example.com/p]the page[/url]", "the page (https://example.com/p)"),
        ("[url]https://example.com[/url]", "https://example.com"),
        ("[url=https://example.com]https://example.com[/url]", "https://example.com"),
        ("[quote]was it blue?[/quote]Yes", "> was it blue?\nYes"),
        ("[user=5]Anna[/user], see [chat=12]Sales[/chat]", "Anna, see Sales"),
        ("[b][i]nested[/i][/b]", "nested"),
        ("[color=#ff0000]red[/color] [size=20]big[/size]", "red big"),
        ("keep [this] and 2 < 3", "keep [this] and 2 < 3"),
        ("[icon=https://x/y.png size=20] hi", "hi"),
    ],
)
def test_bb_code_to_plain_text(bb: str, text: str) -> None:
    assert plain_text(bb) == text


def test_signature_is_taken_off_or_kept() -> None:
    assert bb_to_text("[b]Klaus Weber:[/b] [br]Guten Tag!") == ("Guten Tag!", "Klaus Weber")
    assert bb_to_text("[b]Klaus Weber:[/b][br] What questions do you have?")[0] == (
        "What questions do you have?"
    )
    assert bb_to_text("[b]Important:[/b] no line break, not a signature")[1] == "Important"
    assert bb_to_text("no signature") == ("no signature", None)
    assert bb_to_text("[b]Anna:[/b] [br]Hi", keep_signature=True) == ("Anna: Hi", "Anna")


# ==========================================================================
# delivery receipts
# ==========================================================================


def test_delivery_receipt_shape(portal: Portal) -> None:
    portal.on("imconnector.send.status.delivery", {"SUCCESS": True, "DATA": []})
    make(settings=OPENLINES, inbox=True).report_delivery(
        DeliveryReport(
            "1807:86497", DeliveryStatus.SENT, crm_thread_id="crm_bridge_telegram:107:conv-1"
        )
    )
    (sent,) = portal.methods("imconnector.send.status.delivery")
    same_shape(
        sent,
        doc_request("api-reference/imopenlines/imconnector/imconnector-send-status-delivery.md"),
    )
    assert sent["CONNECTOR"] == "crm_bridge_telegram" and sent["LINE"] == 107
    item = sent["MESSAGES"][0]
    assert item["im"] == {"chat_id": 1807, "message_id": 86497}
    assert item["message"]["id"] == ["1807:86497"]  # an array, even for one (FACTS 2.8)
    assert item["chat"] == {"id": "conv-1"}


@pytest.mark.parametrize("crm_message_id", ["²:86497", "1807:٣", "thread-7", "1807:"])
def test_a_receipt_for_no_open_lines_message_sends_nothing(
    portal: Portal, crm_message_id: str
) -> None:
    # str.isdigit() admits "²" and Arabic-Indic digits; int() would not (a crashed job)
    make(settings=OPENLINES, inbox=True).report_delivery(
        DeliveryReport(
            crm_message_id, DeliveryStatus.SENT, crm_thread_id="crm_bridge_telegram:107:conv-1"
        )
    )
    assert portal.requests == []


def test_failed_delivery_becomes_a_comment_and_webhook_tenants_report_nothing(
    portal: Portal, hook_portal: Portal
) -> None:
    portal.on("crm.lead.list", [{"ID": "900"}])
    portal.on("crm.deal.list", [])
    portal.on("crm.timeline.comment.add", 5)
    make(settings=OPENLINES, inbox=True).report_delivery(
        DeliveryReport(
            "1807:86497",
            DeliveryStatus.FAILED,
            error="blocked by the user",
            crm_thread_id="crm_bridge_telegram:107:conv-1",
        )
    )
    (comment,) = portal.methods("crm.timeline.comment.add")
    assert comment["fields"]["ENTITY_ID"] == 900
    assert strip_hidden(comment["fields"]["COMMENT"]) == (
        "Reply NOT delivered to the customer (message 1807:86497): blocked by the user"
    )
    assert parse_marker(comment["fields"]["COMMENT"]) == marker_hash("delivery:1807:86497:failed")
    assert portal.methods("imconnector.send.status.delivery") == []
    make(HOOK_CREDS, {"domain": DOMAIN}).report_delivery(
        DeliveryReport("1807:86497", DeliveryStatus.SENT)
    )
    assert hook_portal.requests == []
    # in the tenant's language (the mapping's, on the account)
    make(settings=OPENLINES, inbox=True, language="ru").report_delivery(
        DeliveryReport("1807:86498", DeliveryStatus.FAILED, crm_thread_id="x:107:conv-1")
    )
    assert strip_hidden(portal.methods("crm.timeline.comment.add")[-1]["fields"]["COMMENT"]) == (
        "Ответ НЕ доставлен клиенту (message 1807:86498)"
    )


# ==========================================================================
# setup
# ==========================================================================

LINK = ChannelLink(id="3", kind="telegram", name="@acme_bot", identifier="4242", title="Telegram")


def setup_portal(portal: Portal) -> None:
    portal.on("user.current", example("api-reference__user__user-current.1")["result"])
    portal.on("app.info", app_info(LICENSE="de_basic", LICENSE_FAMILY="basic"))
    bound: set[tuple[str, str]] = set()

    def bind(params: dict[str, Any]) -> bool:
        key = (params["event"].upper(), params["handler"])
        if key in bound:
            raise Err(400, "ERROR_CORE", "Handler already binded")
        bound.add(key)
        return True

    portal.on("event.bind", bind)
    portal.on("imconnector.register", {"result": True})
    portal.on(
        "imopenlines.config.list.get",
        example("api-reference__imopenlines__openlines__imopenlines-config-list-get.1")["result"],
    )
    portal.on("imconnector.activate", True)
    portal.on("imconnector.connector.data.set", True)
    fields: set[str] = set()
    portal.on(
        "crm.lead.userfield.list",
        lambda p: (
            [{"FIELD_NAME": p["filter"]["FIELD_NAME"]}]
            if p["filter"]["FIELD_NAME"] in fields
            else []
        ),
    )
    portal.on(
        "crm.lead.userfield.add", lambda p: fields.add("UF_CRM_" + p["fields"]["FIELD_NAME"]) or 17
    )


def test_setup_of_an_app_install_with_open_lines(portal: Portal) -> None:
    setup_portal(portal)
    adapter = make(settings={"member_id": MEMBER}, inbox=True)
    result = adapter.setup([LINK], {"lead": ["utm_source", "company_size"]})
    assert isinstance(result, SetupResult) and result.routes == ()  # events go to the tenant's URL
    settings = dict(result.settings)
    load(Bitrix24Settings, settings, strict=True)  # the core's check of what it stores
    assert settings == {
        "domain": DOMAIN,
        "member_id": MEMBER,
        "conversation_field": "ORIGIN_ID",
        "plan": "basic",
        "line": "15",  # the first active line of imopenlines.config.list.get
        "connectors": {"telegram": "crm_bridge_telegram"},
        "connector_id": "crm_bridge_telegram",
        "custom_fields": {"lead": {"company_size": "UF_CRM_COMPANY_SIZE"}},
        "events": sorted(
            [
                "ONAPPUNINSTALL",
                "ONCRMLEADUPDATE",
                "ONCRMDEALUPDATE",
                "ONCRMLEADDELETE",
                "ONCRMDEALDELETE",
                "ONCRMCONTACTDELETE",
                "OnImConnectorMessageAdd",
                "OnImConnectorDialogFinish",
            ]
        ),
    }
    assert [m for m, _ in portal.requests] == ["batch", "batch"]  # + the user field
    binds = portal.methods("event.bind")
    assert {b["handler"] for b in binds} == {adapter.account.webhook_url}
    (register,) = portal.methods("imconnector.register")
    same_shape(
        register, doc_request("api-reference/imopenlines/imconnector/imconnector-register.md")
    )
    assert register["ID"] == "crm_bridge_telegram" and register["NEED_SIGNATURE"] == "1"
    assert register["NAME"] == "CRM bridge · Telegram"  # the app's title, the channel's name
    assert register["PLACEMENT_HANDLER"] == adapter.account.webhook_url
    assert register["ICON"]["DATA_IMAGE"].startswith("data:image/svg+xml,")
    (activate,) = portal.methods("imconnector.activate")
    same_shape(
        activate, doc_request("api-reference/imopenlines/imconnector/imconnector-activate.md")
    )
    assert activate == {"CONNECTOR": "crm_bridge_telegram", "LINE": "15", "ACTIVE": "1"}
    (data,) = portal.methods("imconnector.connector.data.set")
    same_shape(
        data, doc_request("api-reference/imopenlines/imconnector/imconnector-connector-data-set.md")
    )
    (lines,) = portal.methods("imopenlines.config.list.get")
    same_shape(
        lines, doc_request("api-reference/imopenlines/openlines/imopenlines-config-list-get.md")
    )
    (uf,) = portal.methods("crm.lead.userfield.add")
    assert uf["fields"]["FIELD_NAME"] == "COMPANY_SIZE" and uf["fields"]["USER_TYPE_ID"] == "string"
    # idempotent: the same settings, duplicates refused by Bitrix24 are fine
    again = make(settings={"member_id": MEMBER, **settings}, inbox=True).setup(
        [LINK], {"lead": ["utm_source", "company_size"]}
    )
    assert again == result
    assert len(portal.methods("crm.lead.userfield.add")) == 1


def test_setup_of_a_webhook_tenant(hook_portal: Portal) -> None:
    setup_portal(hook_portal)
    settings = make(HOOK_CREDS, {}).setup([LINK], {}).settings
    assert settings == {"domain": DOMAIN, "conversation_field": "ORIGIN_ID"}
    assert [m for m, _ in hook_portal.executed] == ["user.current"]
    with pytest.raises(PermanentError, match="Open Lines need the app install"):
        make(HOOK_CREDS, {}, inbox=True).setup([LINK], {})
    hook_portal.on("user.current", lambda _p: (_ for _ in ()).throw(Err(401, "NO_AUTH_FOUND")))
    with pytest.raises(AuthError):
        make(HOOK_CREDS, {}).setup([LINK], {})


def test_setup_refuses_a_failing_registration(portal: Portal) -> None:
    setup_portal(portal)
    portal.on(
        "imconnector.register",
        example("api-reference__imopenlines__imconnector__imconnector-register.2")["result"],
    )
    with pytest.raises(PermanentError, match="CONNECTOR_ID_REQUIRED"):
        make(settings={"member_id": MEMBER}, inbox=True).setup([LINK], {})
    setup_portal(portal)
    portal.on("event.bind", lambda _p: (_ for _ in ()).throw(Err(400, "ERROR_EVENT_NOT_FOUND")))
    with pytest.raises(PermanentError, match="ERROR_EVENT_NOT_FOUND"):
        make(settings={"member_id": MEMBER}).setup([LINK], {})


# ==========================================================================
# requests per message
# ==========================================================================


def test_a_new_customer_in_one_request(portal: Portal) -> None:
    """Contact + lead + to-do + the first messages' comments and Open Lines
    send, as one batch (nothing to look up)."""
    portal.on("crm.contact.add", 46)
    portal.on("crm.lead.add", 3465)
    portal.on("crm.activity.todo.add", {"id": 999})
    comment_ids(portal)
    openlines_ok(portal)
    entries = [
        replace(entry(f"m{i}", sequence=i, inbox=True), contact=None, entity=None) for i in range(2)
    ]
    opened = make(settings=OPENLINES, inbox=True).open_conversation(
        contact=draft(), entity=lead_draft(), task=task(entity=None), entries=entries
    )
    assert [m for m, _ in portal.requests] == ["batch"]
    assert isinstance(opened, OpenedConversation)
    assert opened.contact.ref == CrmRef("contact", "46")
    assert opened.entity == CrmRef("lead", "3465")
    assert opened.task == CrmRef("todo", "999")
    assert opened.entries["m1"] == (CrmRef("comment", "1001"), CrmRef("message", "m1"))
    lead = portal.methods("crm.lead.add")[0]["fields"]
    assert lead["CONTACT_ID"] == 46  # $result[contact]
    assert portal.methods("crm.activity.todo.add")[0]["ownerId"] == 3465
    assert portal.methods("crm.timeline.comment.add")[0]["fields"]["ENTITY_ID"] == 3465
    assert portal.requests[0][1]["halt"] == 1


def test_known_contact_new_conversation_in_one_request(portal: Portal) -> None:
    portal.on("crm.deal.add", 394)
    comment_ids(portal)
    opened = make().open_conversation(
        contact=CONTACT,
        entity=lead_draft(object_type="deal", pipeline="0"),
        entries=[replace(entry("m1"), entity=None)],
    )
    assert len(portal.requests) == 1 and opened.entity == CrmRef("deal", "394")
    assert portal.methods("crm.deal.add")[0]["fields"]["CONTACT_ID"] == "501"


def test_open_conversation_failure_names_what_was_made(portal: Portal) -> None:
    portal.on("crm.contact.add", 46)
    portal.on("crm.lead.add", lambda _p: (_ for _ in ()).throw(Err(400, "", "Access denied.")))
    with pytest.raises(PermanentError) as caught:
        make().open_conversation(contact=draft(), entity=lead_draft())
    assert caught.value.created == {"contact": CrmRef("contact", "46")}  # type: ignore[attr-defined]


def test_live_conversation_and_backlog_request_counts(portal: Portal) -> None:
    """A live conversation: one request per drain, whatever it holds; with
    two messages per drain that is the 0.5 requests/message target."""
    comment_ids(portal)
    openlines_ok(portal)
    figures = {}
    for mode, settings, inbox in (("crm", None, False), ("openlines", OPENLINES, True)):
        for per_drain in (1, 2, 50):
            portal.requests.clear()
            adapter = make(settings=settings, inbox=inbox)
            for drain in range(10):
                adapter.append_entries(
                    [
                        entry(f"{mode}-{per_drain}-{drain}-{i}", sequence=i, inbox=inbox)
                        for i in range(per_drain)
                    ]
                )
            figures[(mode, per_drain)] = len(portal.requests) / (10 * per_drain)
    assert figures[("crm", 1)] == 1.0 and figures[("crm", 2)] == 0.5
    assert figures[("crm", 50)] == 0.02
    assert figures[("openlines", 1)] == 1.0 and figures[("openlines", 2)] == 0.5
    assert figures[("openlines", 50)] == 0.04  # 48 per batch: the chat send rides along
    print("Bitrix24 requests/message", figures)


def test_batch_answer_helpers() -> None:
    answer = BatchAnswer(results={"a": 1}, errors={"b": PermanentError("x")})
    assert answer.ok("a") and not answer.ok("b") and answer.get("b", 5) == 5
    assert answer.first_error(["a", "b"]) == ("b", answer.errors["b"])
