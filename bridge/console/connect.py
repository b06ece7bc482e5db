"""The console's channels and CRM page, its logic: which channel accounts a
tenant has, connecting one from a form, testing it, disconnecting it, and
the tenant's CRM connection.

Nothing here knows a channel or a CRM by name: the form is drawn from the
adapter's own schema (``ChannelAdapter.ConnectForm``, else ``Connect``,
read with :func:`bridge.schema.fields_of`), the account is built by the
adapter's ``connect_form``, stored by the same core functions as
``bridge <kind> connect`` (:func:`bridge.setup.connect_channel`), tested
with ``ChannelAdapter.check_connection`` and disconnected with
:func:`bridge.lifecycle.disconnect_channel`.

Secrets never leave this module in clear: a form never gets one back, the
account list and the audit rows show :func:`masked` values ("set", and the
last four characters of a long one), and a webhook URL's path key is masked
until an admin asks for it (:func:`webhook_url`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import select

from bridge import lifecycle, oauth
from bridge.errors import AuthError, BridgeError, ConfigError, RetryableError
from bridge.model import ChannelAccountInfo, ConnectedAccount, ReceiveMode
from bridge.registry import UnknownAdapter, channel_class, channel_kinds, crm_class, crm_kinds
from bridge.schema import SettingsError, check, fields_of, load, secret_names
from bridge.setup import connect_channel, store_connected
from bridge.tables import SETUP_PENDING, ChannelAccount, ChannelStatus, Tenant

if TYPE_CHECKING:
    from bridge.runtime import Runtime
    from channel_adapters.base import ChannelAdapter

__all__ = [
    "AccountView",
    "ChannelChoice",
    "Check",
    "ConnectError",
    "CrmView",
    "FormField",
    "account_of",
    "accounts",
    "audit_values",
    "build",
    "channel_choices",
    "check_account",
    "check_values",
    "connect",
    "crm_choices",
    "crm_view",
    "disconnect",
    "form_fields",
    "form_schema",
    "is_testable",
    "masked",
    "read_form",
    "refusal",
    "revealed_url",
    "webhook_url",
]

#: the characters of a secret a page or an audit row may show (its end)
SHOWN = 4
#: a secret shorter than this shows none of its characters (a password)
SHOWN_FROM = 16


# -- masking -------------------------------------------------------------------------------


def masked(value: Any) -> str:
    """What a page or an audit row may say of a secret: ``""`` when it is
    not set, else ``"set"``, with its last four characters when it is long
    enough that they give nothing away (a token, not a password)."""
    text = "" if value is None else str(value)
    if not text:
        return ""
    if len(text) < SHOWN_FROM:
        return "set"
    return f"set …{text[-SHOWN:]}"


def _secret_fields(cls: type[ChannelAdapter]) -> frozenset[str]:
    """The fields of the channel's form and credentials that hold a secret:
    marked so in either schema (a field the form takes in clear but the
    account keeps encrypted counts)."""
    form = cls.ConnectForm or cls.Connect
    return secret_names(form) | secret_names(cls.Credentials)


def audit_values(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as an audit row may keep them: every secret field masked."""
    hidden = _secret_fields(channel_class(kind))
    return {k: masked(v) if k in hidden else v for k, v in values.items()}


# -- the connect form ----------------------------------------------------------------------


@dataclass(frozen=True)
class FormField:
    """One input of a channel's connect form, read from the adapter's schema."""

    name: str
    #: the schema's own description of the field (the adapter's words)
    help: str
    #: ``text``, ``password``, ``number``, ``checkbox`` or ``select``
    input: str
    required: bool
    #: the value shown at first (never a secret's)
    default: str
    choices: tuple[str, ...] = ()
    secret: bool = False
    #: ``any`` for a number with decimals, else ``1``
    step: str = "1"

    @property
    def label(self) -> str:
        """The field's name for a person: ``bot_token`` -> ``Bot token``."""
        words = self.name.replace("_", " ")
        return words[:1].upper() + words[1:]


def form_schema(cls: type[ChannelAdapter]) -> type[Any]:
    """The schema the console's form asks: the channel's form, else its
    command line's."""
    return cls.ConnectForm or cls.Connect


def _input(hint: Any, spec: dataclasses.Field[Any], secret: bool) -> tuple[str, str]:
    if secret:
        return "password", "1"
    if spec.metadata.get("choices"):
        return "select", "1"
    if hint is bool:
        return "checkbox", "1"
    if hint is int:
        return "number", "1"
    if hint is float:
        return "number", "any"
    return "text", "1"


def _default(spec: dataclasses.Field[Any]) -> str:
    if spec.default is not dataclasses.MISSING:
        value = spec.default
    elif spec.default_factory is not dataclasses.MISSING:
        value = spec.default_factory()
    else:
        return ""
    if isinstance(value, bool):
        return "true" if value else ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def form_fields(kind: str) -> list[FormField]:
    """The connect form of channel ``kind``: one input per field of its
    schema, in the schema's order."""
    cls = channel_class(kind)
    schema = form_schema(cls)
    hints = typing.get_type_hints(schema)
    hidden = _secret_fields(cls)
    out = []
    for spec in fields_of(schema):
        secret = spec.name in hidden
        kind_of, step = _input(hints.get(spec.name), spec, secret)
        out.append(
            FormField(
                name=spec.name,
                help=str(spec.metadata.get("help") or ""),
                input=kind_of,
                required=spec.default is dataclasses.MISSING
                and spec.default_factory is dataclasses.MISSING,
                default="" if secret else _default(spec),
                choices=tuple(str(c) for c in spec.metadata.get("choices") or ()),
                secret=secret,
                step=step,
            )
        )
    return out


_TRUE = frozenset({"on", "true", "1", "yes"})


def read_form(kind: str, posted: Mapping[str, str]) -> dict[str, Any]:
    """The form's posted strings as values for the schema: a box is
    ``true``/``false``; an optional field left blank is left out (its
    default stands); text is trimmed, a secret only of its line breaks
    (a pasted token's trailing newline)."""
    values: dict[str, Any] = {}
    for field in form_fields(kind):
        raw = posted.get(field.name)
        if field.input == "checkbox":
            values[field.name] = "true" if (raw or "").strip().lower() in _TRUE else "false"
            continue
        text = (raw or "").strip("\r\n") if field.secret else (raw or "").strip()
        if text == "" and not field.required:
            continue
        if text != "":
            values[field.name] = text
    return values


class ConnectError(ValueError):
    """A form that cannot become an account: ``field`` names the input at
    fault (None: the whole form), ``message`` says why in the schema's or
    the adapter's words."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _where(kind: str) -> str:
    return f"{kind} connect"


def _settings_error(kind: str, exc: SettingsError) -> ConnectError:
    """The schema's words without its prefix, at the field it names."""
    prefix = f"{exc.where}: {exc.key}: " if exc.where else f"{exc.key}: "
    text = str(exc)
    return ConnectError(text[len(prefix) :] if text.startswith(prefix) else text, exc.key)


def build(kind: str, values: Mapping[str, Any]) -> ConnectedAccount:
    """The account the form's values make (checked against the schema, then
    the adapter's ``connect_form``), not stored; ``ConnectError`` when they
    do not fit. May call the provider (a channel that reads an id it was
    not given)."""
    cls = channel_class(kind)
    try:
        given = load(form_schema(cls), values, where=_where(kind), strict=True)
        connected = cls.connect_form(given)
        check(cls.Credentials, connected.credentials, where=f"{kind} credentials")
        check(cls.Settings, connected.settings, where=f"{kind} settings")
    except SettingsError as exc:
        raise _settings_error(kind, exc) from None
    except ConfigError as exc:
        raise ConnectError(str(exc), exc.key) from None
    except ValueError as exc:  # what connect_form may raise besides ConfigError
        raise ConnectError(str(exc)) from None
    return connected


# -- testing a connection ----------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """What a connection test found: ``code`` is ``ok``, ``refused`` (the
    provider refused the credentials), ``failed`` (it refused something
    else), ``unreachable`` (no answer), ``invalid`` (the form itself) or
    ``unsupported`` (the channel has no test); ``detail`` is the provider's
    (or the schema's) own words; ``field`` the form input at fault."""

    code: str
    detail: str
    field: str | None = None

    @property
    def ok(self) -> bool:
        return self.code == "ok"

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "code": self.code, "detail": self.detail, "field": self.field}


def _host(adapter: ChannelAdapter) -> str:
    """The provider's API host (none for a channel that speaks no HTTP)."""
    return urlsplit(adapter.http.base_url).hostname or ""


def refusal(exc: BridgeError, host: str = "") -> Check:
    """A provider's refusal (or silence) in the page's terms."""
    words = exc.message or type(exc).__name__
    if isinstance(exc, AuthError):
        return Check("refused", words)
    if isinstance(exc, RetryableError):
        # the transport's words name no host ("connection error"): say which
        return Check("unreachable", words if not host or host in words else f"{host}: {words}")
    return Check("failed", words)


def _run(adapter: ChannelAdapter) -> Check:
    """The adapter's check, its outcome in the page's terms."""
    try:
        said = adapter.check_connection()
    except NotImplementedError as exc:
        return Check("unsupported", str(exc))
    except BridgeError as exc:
        return refusal(exc, _host(adapter))
    return Check("ok", said)


def _adapter(rt: Runtime, kind: str, connected: ConnectedAccount) -> ChannelAdapter:
    """An adapter for an account not stored yet (id 0, no webhook key)."""
    cls = channel_class(kind)
    info = ChannelAccountInfo(
        id=0,
        kind=kind,
        key="",
        credentials=dict(connected.credentials),
        settings=dict(connected.settings),
        api_base=rt.settings.api_bases.get(kind),
        external_id=connected.external_id,
        app=dict(rt.settings.apps.get(kind, {})),
    )
    return cls(info, rt.http(info.api_base or cls.default_api_base()))


def check_values(rt: Runtime, kind: str, values: Mapping[str, Any]) -> Check:
    """Test the form's values before anything is stored: the account built
    in memory, then its adapter's ``check_connection``."""
    try:
        connected = build(kind, values)
    except ConnectError as exc:
        return Check("invalid", exc.message, exc.field)
    except BridgeError as exc:  # a channel that asks the provider while connecting
        return refusal(exc)
    return _run(_adapter(rt, kind, connected))


def check_account(rt: Runtime, tenant_id: int, account_id: int) -> Check:
    """Test a connected account of the tenant with its stored credentials
    (``LookupError`` for another tenant's or a disconnected one)."""
    with rt.read_session() as session:
        account = _account(session, tenant_id, account_id)
        if account.status != ChannelStatus.ACTIVE:
            raise LookupError(f"channel account {account_id} is {account.status}")
        adapter = rt.channel_adapter(account)
    return _run(adapter)


# -- connecting and disconnecting ----------------------------------------------------------


def connect(
    rt: Runtime,
    tenant_id: int,
    kind: str,
    values: Mapping[str, Any],
    *,
    name: str = "",
    mode: ReceiveMode | None = None,
) -> int:
    """Store the account the form's values make, as ``bridge <kind>
    connect`` does (the CRM setup run, the webhook registered or the
    channel told to hold deliveries for the poller; nothing kept when that
    fails); its id. ``ConnectError`` for values that do not fit;
    ``ValueError`` for an account connected already; the provider's or the
    CRM's ``BridgeError`` when they refused."""
    cls = channel_class(kind)
    try:
        if cls.ConnectForm is None:
            return connect_channel(rt, tenant_id, kind=kind, values=values, name=name, mode=mode)
        return store_connected(rt, tenant_id, cls, build(kind, values), name=name, mode=mode)
    except SettingsError as exc:
        raise _settings_error(kind, exc) from None
    except ConfigError as exc:  # the values, or the channel's answer while setting up
        raise ConnectError(str(exc), exc.key) from None


def disconnect(rt: Runtime, tenant_id: int, account_id: int) -> list[str]:
    """Disconnect the tenant's account as ``bridge <kind> disconnect`` does
    (its webhook removed at the provider, its credentials forgotten, its
    history kept); the problems met removing the webhook. ``LookupError``
    for another tenant's account or one disconnected already."""
    with rt.read_session() as session:
        account = _account(session, tenant_id, account_id)
        if account.status != ChannelStatus.ACTIVE:
            raise LookupError(f"channel account {account_id} is {account.status}")
    return lifecycle.disconnect_channel(rt, account_id)


def _account(session: Any, tenant_id: int, account_id: int) -> ChannelAccount:
    account = session.get(ChannelAccount, account_id)
    if account is None or account.tenant_id != tenant_id:
        raise LookupError(f"no channel account {account_id} here")
    return typing.cast(ChannelAccount, account)


# -- the list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountView:
    """One channel account as the page shows it (no secret in clear)."""

    id: int
    kind: str
    title: str
    name: str
    external_id: str | None
    #: ``active`` or ``disconnected``
    status: str
    #: ``webhook``, ``polling`` or ``hosted``
    receives: str
    #: where the provider posts, its path key masked; None: nothing posts
    webhook: str | None
    #: the URL carries a secret key an admin may reveal
    has_key: bool
    #: the CRM setup has not covered the account yet
    setup_pending: bool
    #: each credential: "" (not set), "set" or "set …abcd"
    credentials: tuple[tuple[str, str], ...]
    #: the channel has a connection test
    testable: bool

    @property
    def active(self) -> bool:
        return self.status == ChannelStatus.ACTIVE


def is_testable(cls: type[ChannelAdapter]) -> bool:
    """The channel has a connection test (its adapter overrides
    ``check_connection``)."""
    from channel_adapters.base import ChannelAdapter

    return cls.check_connection is not ChannelAdapter.check_connection


def webhook_url(rt: Runtime, account: ChannelAccount, *, reveal: bool = False) -> str | None:
    """Where the provider posts the account's deliveries: None for an
    account a poller reads or a hosted one; an app-routed channel's one URL
    (no key in it); else the account's own URL, its path key masked unless
    ``reveal``."""
    cls = channel_class(account.kind)
    if cls.hosted or cls.receive_mode(account.settings) is ReceiveMode.POLLING:
        return None
    if cls.app_routed:
        return f"{rt.settings.public_url}/webhooks/{account.kind}/app"
    url = rt.channel_webhook_url(account)
    if reveal:
        return url
    return f"{url.rsplit('/', 1)[0]}/…{account.key[-SHOWN:]}"


def _receives(cls: type[ChannelAdapter], account: ChannelAccount) -> str:
    if cls.hosted:
        return "hosted"
    return cls.receive_mode(account.settings).value


def _view(rt: Runtime, account: ChannelAccount) -> AccountView:
    try:
        cls = channel_class(account.kind)
    except UnknownAdapter:
        return _disabled_view(account)
    stored = rt.decrypt_channel_credentials(account)
    hidden = secret_names(cls.Credentials)
    active = account.status == ChannelStatus.ACTIVE
    return AccountView(
        id=account.id,
        kind=account.kind,
        title=cls.title,
        name=account.name,
        external_id=account.external_id,
        status=account.status,
        receives=_receives(cls, account),
        webhook=webhook_url(rt, account) if active else None,
        has_key=active and not cls.hosted and not cls.app_routed,
        setup_pending=bool((account.settings or {}).get(SETUP_PENDING)),
        credentials=tuple(
            (spec.name, masked(stored.get(spec.name)))
            for spec in fields_of(cls.Credentials)
            if spec.name in hidden
        ),
        testable=is_testable(cls) and active,
    )


def _disabled_view(account: ChannelAccount) -> AccountView:
    """An account of a channel not enabled here (its library missing):
    listed, nothing more."""
    return AccountView(
        id=account.id,
        kind=account.kind,
        title=account.kind,
        name=account.name,
        external_id=account.external_id,
        status=account.status,
        receives="",
        webhook=None,
        has_key=False,
        setup_pending=False,
        credentials=(),
        testable=False,
    )


def accounts(rt: Runtime, tenant_id: int) -> list[AccountView]:
    """The tenant's channel accounts, connected ones first, oldest first."""
    with rt.read_session() as session:
        rows = list(
            session.scalars(
                select(ChannelAccount)
                .where(ChannelAccount.tenant_id == tenant_id)
                .order_by(ChannelAccount.id)
            )
        )
        views = [_view(rt, row) for row in rows]
    return sorted(views, key=lambda v: (not v.active, v.id))


def account_of(rt: Runtime, tenant_id: int, account_id: int) -> AccountView:
    """One of the tenant's accounts (``LookupError`` for another's)."""
    with rt.read_session() as session:
        return _view(rt, _account(session, tenant_id, account_id))


def revealed_url(rt: Runtime, tenant_id: int, account_id: int) -> str | None:
    """The account's webhook URL with its key (for an admin to paste)."""
    with rt.read_session() as session:
        return webhook_url(rt, _account(session, tenant_id, account_id), reveal=True)


@dataclass(frozen=True)
class ChannelChoice:
    """A channel kind the form can connect."""

    kind: str
    title: str
    #: how it can receive, when it offers a choice (``webhook``, ``polling``)
    modes: tuple[str, ...]
    testable: bool


def channel_choices() -> list[ChannelChoice]:
    """Every registered channel that is enabled here, in the registry's order."""
    out = []
    for kind in channel_kinds():
        try:
            cls = channel_class(kind)
        except UnknownAdapter:
            continue  # disabled (a missing library): the registry logged it
        modes = tuple(m.value for m in cls.modes) if len(cls.modes) > 1 else ()
        out.append(ChannelChoice(kind, cls.title, modes, is_testable(cls)))
    return out


# -- the CRM ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrmView:
    """A CRM as the page shows it: the tenant's own (its state), or one the
    owner may install for a new tenant."""

    kind: str
    title: str
    #: None when this CRM installs through OAuth here; else why not
    oauth_problem: str | None
    #: the tenant's: its account id, ``active`` / ``needs_reauth`` /
    #: ``disabled`` and why
    account: str | None = None
    status: str | None = None
    reason: str | None = None

    @property
    def oauth(self) -> bool:
        return self.oauth_problem is None


def _oauth_problem(rt: Runtime, kind: str) -> str | None:
    """Why ``kind`` cannot be installed through ``/oauth/<kind>/install``
    here (None when it can): a CRM whose adapter has no OAuth install says
    so first; then the install link is made exactly as that view makes it."""
    cls = crm_class(kind)
    if not cls.has_oauth_app:
        return f"{cls.title} has no OAuth install"
    try:
        oauth.install_url(rt, kind)
    except (ConfigError, SettingsError, UnknownAdapter) as exc:
        return str(exc)
    return None


def crm_view(rt: Runtime, tenant: Tenant) -> CrmView:
    """The tenant's CRM connection."""
    return CrmView(
        kind=tenant.crm_kind,
        title=_crm_title(tenant.crm_kind),
        oauth_problem=_oauth_problem(rt, tenant.crm_kind),
        account=tenant.crm_account_id,
        status=tenant.status,
        reason=tenant.status_reason,
    )


def _crm_title(kind: str) -> str:
    try:
        return crm_class(kind).title
    except UnknownAdapter:
        return kind


def crm_choices(rt: Runtime) -> list[CrmView]:
    """Every registered CRM that is enabled here, with whether it installs
    through OAuth."""
    out = []
    for kind in crm_kinds():
        try:
            title = crm_class(kind).title
        except UnknownAdapter:
            continue
        out.append(CrmView(kind=kind, title=title, oauth_problem=_oauth_problem(rt, kind)))
    return out
