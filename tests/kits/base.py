"""The kit interface: what the cross-cutting suites ask of a provider
(the map is in ``tests/kits/__init__.py``).

A kit is a :class:`ChannelKit` or a :class:`CrmKit` subclass, one per
adapter of ``channel_adapters.REGISTRY`` / ``crm_adapters.REGISTRY``. Its
hooks are grouped by the suite that calls them; a hook marked *abstract*
must be written for every provider (a new kit that forgets one cannot be
built), the others have a default that says "this provider has none".
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from bridge.model import Installed

from .common import Vendor

if TYPE_CHECKING:
    import responses

__all__ = [
    "MARK",
    "PUBLIC_URL",
    "AccountSpec",
    "CallbackAttack",
    "ChannelKit",
    "CrmKit",
    "DeepJson",
    "FuzzTarget",
    "HostileTarget",
    "HostileWorld",
    "IsoConversation",
    "IsoTenant",
    "Kit",
    "OAuthIsolation",
    "Property",
    "Req",
    "TenantSpec",
    "TextHelpers",
]

#: text every hostile body carries: it must never reach a log line
MARK = "hostile-payload-7c1e"
#: the bridge's public URL in the security suites' worlds (what URL-bound
#: signatures cover)
PUBLIC_URL = "http://bridge.test"


# ==========================================================================
# property tests and fuzzing (tests/property/test_parsers.py, tests/fuzz.py)
# ==========================================================================


@dataclass(frozen=True)
class Property:
    """One property of a provider's parsers or helpers.

    ``check`` is called with what ``given`` draws: a strategy (one
    argument), a tuple of strategies (positional arguments) or a mapping of
    them (keyword arguments); with ``given=None`` it runs once, as a plain
    check. ``examples`` are inputs that once broke something, in the same
    shape (a value, a tuple or a mapping), always tried first. ``hostile``
    properties (any input is events or a documented 4xx) get the larger
    example budget; the others are round trips and helpers."""

    name: str
    check: Callable[..., None]
    given: Any = None
    examples: tuple[Any, ...] = ()
    hostile: bool = False


@dataclass(frozen=True)
class DeepJson:
    """A JSON parser and a payload shape around a nested value (``head`` +
    nesting + ``tail``): parsed or refused with a 4xx at any depth."""

    name: str
    head: bytes
    tail: bytes
    drive: Callable[[bytes], Any]


@dataclass(frozen=True)
class FuzzTarget:
    """An atheris target: raw bytes in, the provider's hooks driven as the
    web layer drives them; anything but a documented ``WebhookError`` or a
    broken invariant is a crash. ``instrument``: third-party packages whose
    code is half of the parser (coverage feedback for them too)."""

    name: str
    about: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    tokens: Callable[[list[bytes]], set[bytes]]
    instrument: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextHelpers:
    """The provider's small text parsers (markers, deep links, names...),
    fuzzed together in one target: ``check`` raises ``BrokenInvariant``."""

    check: Callable[[bytes], None]
    seeds: tuple[bytes, ...]
    tokens: frozenset[bytes]


# ==========================================================================
# the worlds the security suites build (tenants, accounts)
# ==========================================================================


@dataclass(frozen=True)
class TenantSpec:
    """A CRM tenant as ``admin.create_tenant`` stores it; ``routes``: the
    app-level route keys it owns (what its ``setup()`` would register)."""

    account_id: str | None
    credentials: Mapping[str, Any]
    settings: Mapping[str, Any] = field(default_factory=dict)
    routes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccountSpec:
    """A channel account as ``admin.add_channel_account`` stores it."""

    credentials: Mapping[str, str]
    external_id: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""


# ==========================================================================
# hostile input (tests/security/test_hostile_input.py)
# ==========================================================================


@dataclass
class Req:
    """One request to the bridge's test client (``send``) or over HTTP."""

    path: str
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    method: str = "POST"
    query: dict[str, str] = field(default_factory=dict)

    def send(self, client: Any) -> Any:
        if self.method != "POST":
            return client.open(
                self.path, method=self.method, query_string=self.query, headers=self.headers
            )
        if self.chunked:
            # no Content-Length: the body is read until the stream ends
            # (gunicorn's chunked requests); the cap must still hold
            return client.post(
                self.path,
                query_string=self.query,
                input_stream=io.BytesIO(self.body),
                headers={**self.headers, "Transfer-Encoding": "chunked"},
                content_type=self.content_type,
                environ_overrides={"wsgi.input_terminated": True},
            )
        return client.post(
            self.path,
            query_string=self.query,
            data=self.body,
            headers=self.headers,
            content_type=self.content_type,
        )


class HostileWorld(Protocol):
    """What a target may read of the hostile-input world."""

    #: crm kind -> {"A"|"B": the tenant's webhook key}
    tenant_keys: dict[str, dict[str, str]]
    #: channel kind -> {"A"|"B": the account's webhook key}
    account_keys: dict[str, dict[str, str]]
    #: crm kind -> the uid of tenant A's conversation (a chat CRM replies can reach)
    conversations: dict[str, str]


class HostileTarget:
    """One inbound endpoint of a provider and how a genuine request to it
    is proven. ``endpoint`` names the route that serves it:

    ``channel``  ``POST /webhooks/<kind>/<key>`` (an account's URL)
    ``handshake``  ``GET /webhooks/<kind>/<key>`` (the adapter's handshake)
    ``app``  ``POST /webhooks/<kind>/app`` (an app-routed channel)
    ``app-handshake``  ``GET /webhooks/<kind>/app``
    ``tenant``  ``POST /webhooks/crm/<crm>/<key>`` (a tenant's URL)
    ``route``  ``POST /webhooks/crm/<crm>/route/<route key>``
    ``install``  ``POST /webhooks/crm/<crm>/install`` (one URL for all)

    ``auth_cases`` maps each attack on the proof to the status it must get
    (403 when the proof fails); ``genuine`` must be accepted (2xx) with an
    effect (POST: a message row) so that a refusal is the proof's."""

    name: ClassVar[str]
    kind: ClassVar[str]
    endpoint: ClassVar[str]
    #: what the provider posts, and every media type the endpoint takes
    content_type: ClassVar[str] = ""
    content_types: ClassVar[tuple[str, ...]] = ()
    auth_cases: ClassVar[dict[str, int]] = {}
    #: attack cases the endpoint must refuse without calling anyone
    untouched_cases: ClassVar[frozenset[str]] = frozenset()
    #: install targets: the far side's calls for a genuine install, then its replay
    replay_calls: ClassVar[tuple[str, ...]] = ()

    def __init__(self, world: HostileWorld) -> None:
        self.world = world

    @property
    def method(self) -> str:
        return "GET" if self.endpoint in ("handshake", "app-handshake") else "POST"

    def path(self, tenant: str = "A") -> str:
        raise NotImplementedError

    def unknown_path(self) -> str:
        """The same URL with a key that names nobody."""
        import uuid

        return self.path().rsplit("/", 1)[0] + "/" + uuid.uuid4().hex

    def delivery(self, uid: str, tenant: str = "A") -> bytes:
        """A genuine delivery for ``tenant`` with an effect (a row, a job);
        ``uid`` makes it new (its delivery id)."""
        raise NotImplementedError

    def prove(
        self, path: str, body: bytes, content_type: str, tenant: str = "A"
    ) -> dict[str, str] | None:
        """Headers that make the request genuine; ``None`` when the proof
        can only travel in the body (nothing to add)."""
        raise NotImplementedError

    def genuine(self, uid: str, tenant: str = "A", path_of: str | None = None) -> Req:
        path = self.path(path_of or tenant)
        body = self.delivery(uid, tenant)
        headers = self.prove(path, body, self.content_type, tenant) or {}
        return Req(path, body, self.content_type, headers)

    def auth_attack(self, case: str) -> Req:
        raise NotImplementedError

    def answer(self, req: Req) -> bytes | None:
        """GET targets: the body a genuine handshake ``req`` is answered
        with (the echoed challenge)."""
        return None

    def far_side(self, case: str, rsps: responses.RequestsMock) -> Any | None:
        """Install targets: register what the vendor answers the install's
        calls for ``case`` (``"genuine"`` or an auth case); the returned
        object's ``calls`` lists the calls made."""
        return None


@dataclass(frozen=True)
class CallbackAttack:
    """A forged ``GET /oauth/<crm>/callback`` the vendor's own flow allows
    (amoCRM's "integration enabled" GET has no state of ours): refused with
    one of ``statuses`` (and the ``error`` code when given), the answer
    never echoes the payload. ``arrange`` registers what the vendor answers
    (``responses``); without it nobody may be called."""

    name: str
    query: Mapping[str, str]
    statuses: frozenset[int]
    error: str | None = None
    arrange: Callable[[responses.RequestsMock], None] | None = None


# ==========================================================================
# tenant isolation (tests/security/test_tenant_isolation.py)
# ==========================================================================


class IsoTenant(Protocol):
    """What a CRM kit may read of an isolation tenant."""

    idx: int
    crm: str
    account_id: str
    credentials: dict[str, Any]
    settings: dict[str, Any]
    webhook_key: str
    route_key: str | None


class IsoConversation(Protocol):
    uid: str
    external_thread_id: str
    crm_entity_id: str
    crm_thread_id: str
    crm_contact_id: str


@dataclass(frozen=True)
class OAuthIsolation:
    """A CRM whose OAuth install the isolation suite plays against its
    sandbox: ``sandbox(config)`` serves it (yields its URL and a spy that
    counts ``grants`` at the token endpoint), ``consent(url, query,
    account_id)`` is the admin granting the install link's ``query`` in
    that account (the callback's query back), ``account_of(url, creds)``
    the account a stored token belongs to (asked of the vendor)."""

    sandbox: Callable[[Mapping[str, Any]], AbstractContextManager[tuple[str, Any]]]
    consent: Callable[[str, Mapping[str, str], str], dict[str, str]]
    account_of: Callable[[str, Mapping[str, Any]], str]
    #: sandbox settings that let the re-install's setup run at full speed
    fast: Mapping[str, Any] = field(default_factory=dict)


# ==========================================================================
# the kits
# ==========================================================================


class Kit(ABC):
    """What every provider's kit declares."""

    #: the adapter's registry slug
    kind: ClassVar[str]

    # -- property tests and fuzzing -------------------------------------------

    def vendors(self) -> Sequence[Vendor]:
        """The vendor calls its parsers make, answered offline (a CRM's
        re-read of a lead, an install's ``app.info``)."""
        return ()

    @abstractmethod
    def properties(self) -> Sequence[Property]:
        """Robustness of every parser (any input: events or a documented
        4xx; the hooks driven as the web layer drives them, correctly
        signed so parsing is reached), round trips of shaped payloads, the
        helpers' properties."""

    def deep_json(self) -> Sequence[DeepJson]:
        """Every JSON parser with a shape to nest inside."""
        return ()

    @abstractmethod
    def fuzz_targets(self) -> Sequence[FuzzTarget]:
        """One target per parser (``tests/fuzz.py``)."""

    def text_helpers(self) -> TextHelpers | None:
        return None

    # -- secrets ---------------------------------------------------------------

    def secrets_of(self, credentials: Mapping[str, Any]) -> set[str]:
        """Every secret in ``credentials`` (and the parts of one that are
        secrets on their own): none may be found in clear at rest, in a log
        or in another tenant's answer."""
        return {
            value
            for key, value in credentials.items()
            if isinstance(value, str)
            and value
            and ("token" in key or "secret" in key or key in ("url", "password"))
        }

    # -- hostile input -------------------------------------------------------------

    def hostile_app(self) -> Mapping[str, str]:
        """The deployment's app settings of this kind (``Settings.apps``)."""
        return {}

    @abstractmethod
    def hostile_targets(self) -> Sequence[type[HostileTarget]]:
        """Every inbound endpoint this provider is served at."""


class ChannelKit(Kit):
    """A channel (``channel_adapters.REGISTRY``)."""

    # -- hostile input -------------------------------------------------------------

    @abstractmethod
    def hostile_accounts(self) -> Mapping[str, AccountSpec]:
        """Accounts ``"A"`` and ``"B"`` (each its own proof); tenant A's
        conversations of every CRM are made through account A's proof."""

    # -- tenant isolation ------------------------------------------------------------

    content_type: ClassVar[str] = "application/json"

    @abstractmethod
    def isolation_account(self, idx: int, n: int) -> AccountSpec:
        """Tenant ``idx``'s ``n``-th account, with fresh secrets."""

    @abstractmethod
    def customer_message(
        self, delivery_id: int, chat: int, name: str, *, text: str | None = None,
        phone: str | None = None,
    ) -> bytes:  # fmt: skip
        """A genuine delivery: ``name`` writes ``text`` from ``chat`` (or
        shares ``phone``, E.164, as their own contact)."""

    @abstractmethod
    def prove(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        """Headers that prove ``body`` comes from the provider for the
        account of ``credentials``."""

    def forge(self, credentials: Mapping[str, str], body: bytes) -> dict[str, str]:
        """The same, with a proof that is almost right (refused: 403)."""
        proven = self.prove(credentials, body)
        return {name: value[:-1] for name, value in proven.items()}

    def addressed(self, body: bytes, external_id: str) -> bytes:
        """``body`` (a :meth:`customer_message`) addressed to the account
        whose own id on the channel is ``external_id``, where the body
        names its account (an app-routed channel's phone number id)."""
        return body

    # -- canaries --------------------------------------------------------------------

    def canary_env(self, values: Mapping[str, str], sandbox_url: str) -> dict[str, str]:
        """The channel's deployment-wide settings for the canary run (an
        app-routed channel's app secret, its API base at the sandbox);
        their secrets are canaries too."""
        return {}

    @abstractmethod
    def canary_values(self, tag: str) -> dict[str, str]:
        """Secrets of this channel that must never show up (named)."""

    @abstractmethod
    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        """The sandbox config for the canary run (``{kind: config}``)."""

    @abstractmethod
    def canary_connect(
        self, cli: Callable[..., str], slug: str, values: Mapping[str, str], sandbox_url: str
    ) -> str:
        """Connect the canary account the documented way (``cli(*args,
        **env)`` runs ``bridge``; the sandbox plays the provider); the
        command's output. The secrets of :meth:`canary_values` end up in the
        account's credentials."""

    @abstractmethod
    def canary_deliveries(self, values: Mapping[str, str], person: Mapping[str, str]) -> list[Any]:
        """What the canary customer (``person``: first/last name, username,
        phone, e-mail, text, edited text; ``chat``) sends: text with the
        e-mail, the phone shared, text with both, an edit (as far as the
        channel has these; at least three messages). Each goes through
        :meth:`canary_deliver`."""

    @abstractmethod
    def canary_deliver(self, sandbox_url: str, values: Mapping[str, str], delivery: Any) -> None:
        """Have the sandbox deliver it to the bridge (as the provider does)."""

    @abstractmethod
    def canary_sent(self, sandbox_url: str, user: str) -> list[str]:
        """The texts the sandbox saw the bridge send to ``user`` (what
        :meth:`canary_user_id` gives)."""

    def canary_user_id(self, person: Mapping[str, str]) -> str:
        """Who the canary customer (``person``, as for
        :meth:`canary_deliveries`) is on this channel: the channel
        identity's value the bridge keeps (``external_user_id``), by which
        a CRM kit finds the customer and :meth:`canary_sent` the replies.
        Default: the chat id (a messenger's user); the e-mail channel's
        user is the sender's address."""
        return person["chat"]

    def refused_body(self, delivery: bytes, canary: str) -> bytes:
        """A body the account's webhook refuses with 400 though proven
        (signed as it is): ``delivery`` (a genuine one, carrying canaries)
        made malformed, with ``canary`` in it; the answer and the logs must
        repeat neither. Default: cut short by 7 bytes with ``canary``
        appended (a JSON body no longer parses)."""
        return delivery[:-7] + canary.encode()


class CrmKit(Kit):
    """A CRM (``crm_adapters.REGISTRY``)."""

    @abstractmethod
    def mapping_text(self) -> str:
        """A mapping for tests that never sync (a CRM's own defaults)."""

    # -- hostile input ------------------------------------------------------------

    @abstractmethod
    def hostile_tenants(self) -> Mapping[str, TenantSpec]:
        """Tenants ``"A"`` and ``"B"``, each with its own proof and routes."""

    #: the CRM entity id tenant A's conversation carries (what a reply names)
    hostile_entity_id: ClassVar[str | None] = None

    def callback_attacks(self) -> Sequence[CallbackAttack]:
        """Forged OAuth callbacks beyond the state checks every CRM gets."""
        return ()

    # -- tenant isolation ----------------------------------------------------------

    def isolation_app(self, sandbox: str | None) -> Mapping[str, str]:
        """App settings (pointed at the CRM's ``sandbox`` when one runs)."""
        return self.hostile_app()

    @abstractmethod
    def isolation_api_base(self, nowhere: str, sandbox: str | None) -> str:
        """The API base: ``nowhere`` (a port where nothing listens: a call
        nobody expected fails fast) or the sandbox."""

    @abstractmethod
    def isolation_tenant(self, idx: int, n: int, nowhere: str) -> TenantSpec:
        """The kind's ``n``-th tenant (0, 1), ``idx``-th of the world, with
        fresh secrets; any URL in it points ``nowhere``."""

    #: the entity a conversation opens, and its CRM thread id
    entity_type: ClassVar[str] = "deal"

    @abstractmethod
    def thread_id(self, idx: int, j: int, conversation_uid: str) -> str:
        """How the CRM names tenant ``idx``'s ``j``-th conversation (the
        first one's id collides across tenants where the CRM allows)."""

    #: event name -> its effect on the conversation it names: ``reply``
    #: (an outbound message), ``close``, ``owner``, ``contact_removed``, or
    #: ``none`` (not checked against its own tenant: it would disable it)
    events: ClassVar[Mapping[str, str]] = {}

    @abstractmethod
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
        """``src``'s CRM sending ``event`` to ``src``'s own URL genuinely
        (signed, with src's token) about ``conv`` / ``entity`` /
        ``contact``; ``claim``: the tenant whose account the body names.
        ``n`` makes it new. Returns the request and the URL its signature
        covers (None: not URL-bound)."""

    def url(self, tenant: IsoTenant, *, routed: bool) -> str:
        """``tenant``'s webhook path: its route URL when ``routed`` and it
        has one, else its own URL."""
        if routed and tenant.route_key:
            return f"/webhooks/crm/{self.kind}/route/{tenant.route_key}"
        return f"/webhooks/crm/{self.kind}/{tenant.webhook_key}"

    def resign(self, url: str, body: bytes) -> dict[str, str] | None:
        """Headers proving ``body`` for another ``url`` with the app-wide
        secret (a signature that covers the URL); None: nothing to sign."""
        return None

    #: the proof travels in the body (a token): a body copied to another
    #: tenant's URL is still "proven"
    proof_in_body: ClassVar[bool] = False

    def isolation_oauth(self) -> OAuthIsolation | None:
        return None

    # -- secrets at rest --------------------------------------------------------

    def at_rest_app(self) -> Mapping[str, str] | None:
        return None

    @abstractmethod
    def at_rest_api_base(self, nowhere: str) -> str:
        """The API base (nothing is called: ``nowhere``)."""

    @abstractmethod
    def installed(self, n: int, token: Callable[[str], str], nowhere: str) -> Installed:
        """What connecting account ``n`` gives (an OAuth code exchanged, an
        install event), secrets fresh from ``token(name)``; any URL in it
        points ``nowhere``."""

    def pasted(self, token: Callable[[str], str]) -> str | None:
        """What an admin pastes for a private setup (the adapter's
        ``token_credentials``), or None when the CRM has none."""
        return None

    def stored_secret_webhook(
        self, key: str, credentials: Mapping[str, Any]
    ) -> Req | None:  # fmt: skip
        """A genuine webhook at the tenant's URL whose proof is a stored
        secret (verified from the decrypted credentials); None: none is."""
        return None

    def check_at_rest(self, settings: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        """What else this CRM keeps of a secret in its settings (a digest)."""

    # -- canaries -------------------------------------------------------------------

    @abstractmethod
    def canary_values(self, tag: str) -> dict[str, str]:
        """The app's secrets as canaries (named)."""

    @abstractmethod
    def canary_sandbox(self, values: Mapping[str, str]) -> dict[str, Any]:
        """The sandbox config: the canary secrets, limits fast enough."""

    @abstractmethod
    def canary_env(self, values: Mapping[str, str]) -> dict[str, str]:
        """The bridge's environment for them."""

    @abstractmethod
    def canary_install(self, stack: Any, runtime: Any) -> int:
        """Install the app the vendor's way (OAuth, an install event, ...);
        the tenant id."""

    #: tenant settings that make the tenant's API budget as fast as the sandbox's
    fast_settings: ClassVar[Mapping[str, Any]] = {}

    @abstractmethod
    def canary_in_crm(self, stack: Any) -> str:
        """Everything the CRM holds now, as text (the canaries must be there)."""

    @abstractmethod
    def canary_replies(
        self, stack: Any, values: Mapping[str, str], channel: str, user: str
    ) -> list[str]:
        """Operators answer the customer ``user`` of ``channel`` (the
        channel identity's value: a chat id, the e-mail channel's address;
        ``ChannelKit.canary_user_id``) with texts that carry the ``reply`` /
        ``note reply`` canaries, the way the CRM's users do; the canary
        names of the replies, in sending order."""


def iter_targets(kits: Sequence[Kit]) -> Iterator[type[HostileTarget]]:
    for kit in kits:
        yield from kit.hostile_targets()
