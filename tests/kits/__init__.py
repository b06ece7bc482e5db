"""Test kits: what the cross-cutting suites need of each provider.

The suites that attack or exercise every provider at once — hostile input,
tenant isolation, secrets at rest (``tests/security``), the parser
properties (``tests/property/test_parsers.py``), the fuzzer
(``tests/fuzz.py``) and the canary run (``tests/integration/test_canary.py``)
— hold no provider names and no ``if crm == ...``: they iterate over the
kits. A kit is one module here per adapter, registered below with the same
slug as in ``channel_adapters.REGISTRY`` / ``crm_adapters.REGISTRY``; an
adapter registered without a kit fails ``test_every_provider_has_a_kit`` in
each suite (:func:`missing` names it), so a new provider cannot be forgotten.

What a kit declares (``tests/kits/base.py``: :class:`ChannelKit`,
:class:`CrmKit`; the abstract hooks are the ones every provider must write):

Parsers (property tests, fuzzing)
    ``properties()``: the robustness of every parser — any bytes, any JSON,
    any form, the provider's real payloads mutated: events or a documented
    4xx, driven as the web layer drives them and signed for real so parsing
    is reached — and the round trips of payloads shaped like the contract
    (ids, texts, threads, times come out in the normalised model), and the
    provider's helpers (markers, deep links, BB-code). ``deep_json()``: a
    shape to nest JSON in at the recursion limit. ``fuzz_targets()``:
    atheris targets with their seeds and dictionaries; ``text_helpers()``:
    the small text parsers, fuzzed together. ``vendors()``: the vendor calls
    a parser makes, answered offline through ``responses`` (the one HTTP
    seam; the network guard refuses anything else).

Hostile input (every inbound route)
    ``hostile_targets()``: each endpoint the provider is served at (an
    account's URL and its GET handshake, the app-routed URL, a tenant's URL,
    an app-level route, the install handler), how a genuine request to it is
    proven and how to forge one (``auth_cases``: attack -> status);
    ``hostile_accounts()`` / ``hostile_tenants()``: accounts or tenants A and
    B, each with its own proof; ``hostile_app()``: the deployment's app
    settings; ``callback_attacks()``: forged OAuth callbacks the vendor's
    own flow allows.

Tenant isolation
    Channel: ``isolation_account()``, ``customer_message()`` and ``prove()``
    (real traffic into every tenant). CRM: ``isolation_tenant()``,
    ``thread_id()`` / ``entity_type`` (its CRM state), ``events`` and
    ``crm_webhook()`` (every webhook the CRM sends, genuinely signed, naming
    any conversation, entity, contact or account), ``url()`` / ``resign()``
    / ``proof_in_body`` (how a webhook can be moved to another tenant's
    URL), ``isolation_oauth()`` (an OAuth install played against the
    sandbox, when the CRM has one to play).

Secrets at rest
    ``installed()`` (what an install gives, secrets fresh), ``pasted()`` (a
    private setup), ``stored_secret_webhook()`` (a webhook proven by a
    stored secret), ``check_at_rest()``, ``secrets_of()``; channel kits
    reuse ``isolation_account()`` / ``customer_message()`` / ``prove()``.

Canaries (the whole stack as processes)
    Channel: ``canary_values()`` / ``canary_sandbox()`` / ``canary_connect()``
    / ``canary_deliveries()`` / ``canary_deliver()`` / ``canary_sent()``;
    optional ``canary_user_id()`` (the customer's id on the channel: the
    chat, e-mail's address) and ``refused_body()`` (a proven body its
    webhook refuses with 400).
    CRM: ``canary_values()`` / ``canary_sandbox()`` / ``canary_env()`` /
    ``canary_install()`` / ``fast_settings`` / ``canary_in_crm()`` /
    ``canary_replies()``.

Kits are loaded lazily (``module:Class``, like the adapters' registries):
importing this package imports no adapter, so the fuzzer can instrument the
adapters it loads through a kit.

:data:`EXERCISE_CHANNELS` are test-only channels with their kits
(``tests/support/fakes.py``): the hostile-input suite registers them for its
world, so that the routes no production adapter uses yet (an account URL's
GET handshake, the app-routed URL and its handshake) are attacked too.

Adding a provider: write ``tests/kits/<kind>.py`` (subclass the base of its
side; the abstract hooks say what is needed), register it below, run the
suites above. ``tests/kits/telegram.py`` and ``tests/kits/custom.py`` (two
channels), ``tests/kits/hubspot.py`` (a signed-webhook CRM),
``tests/kits/amocrm.py`` (an app-level route) and ``tests/kits/bitrix24.py``
(an install event) are the worked examples.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.kits.base import ChannelKit, CrmKit, Kit

__all__ = [
    "CHANNEL_KITS",
    "CRM_KITS",
    "EXERCISE_CHANNELS",
    "MissingKit",
    "all_kits",
    "channel_kit",
    "channel_kits",
    "crm_kit",
    "crm_kits",
    "exercise_channel_kits",
    "missing",
]

#: channel kind -> its kit (the slugs of ``channel_adapters.REGISTRY``)
CHANNEL_KITS: dict[str, str] = {
    "telegram": "tests.kits.telegram:TelegramKit",
    "custom": "tests.kits.custom:CustomKit",
    "email": "tests.kits.email:EmailKit",
    "whatsapp": "tests.kits.whatsapp:WhatsAppKit",
    "vk": "tests.kits.vk:VkKit",
    "viber": "tests.kits.viber:ViberKit",
    "max": "tests.kits.max:MaxKit",
    "webchat": "tests.kits.webchat:WebChatKit",
}
#: CRM kind -> its kit (the slugs of ``crm_adapters.REGISTRY``)
CRM_KITS: dict[str, str] = {
    "hubspot": "tests.kits.hubspot:HubSpotKit",
    "amocrm": "tests.kits.amocrm:AmoCrmKit",
    "bitrix24": "tests.kits.bitrix24:Bitrix24Kit",
}


#: test-only channels -> (adapter, kit), see the module docstring
EXERCISE_CHANNELS: dict[str, tuple[str, str]] = {
    "fakeapp": ("tests.support.fakes:FakeAppChannel", "tests.kits.fakeapp:FakeAppKit"),
}


class MissingKit(LookupError):
    """A registered adapter has no kit."""


@cache
def _load(spec: str) -> Kit:
    module, _, name = spec.partition(":")
    kit: Kit = getattr(importlib.import_module(module), name)()
    return kit


def _registered() -> tuple[list[str], list[str]]:
    import channel_adapters
    import crm_adapters

    return list(channel_adapters.REGISTRY), list(crm_adapters.REGISTRY)


def missing() -> list[str]:
    """Every registered adapter without a kit, and what to do about it."""
    channels, crms = _registered()
    out = [
        f"channel adapter {kind!r} has no test kit: write tests/kits/{kind}.py "
        f"(a ChannelKit) and add it to tests.kits.CHANNEL_KITS"
        for kind in channels
        if kind not in CHANNEL_KITS
    ]
    out += [
        f"CRM adapter {kind!r} has no test kit: write tests/kits/{kind}.py "
        f"(a CrmKit) and add it to tests.kits.CRM_KITS"
        for kind in crms
        if kind not in CRM_KITS
    ]
    return out


def channel_kit(kind: str) -> ChannelKit:
    if kind not in CHANNEL_KITS:
        raise MissingKit(f"no test kit for channel {kind!r} (tests/kits/__init__.py)")
    kit = _load(CHANNEL_KITS[kind])
    assert kit.kind == kind, (kit.kind, kind)
    return kit  # type: ignore[return-value]


def crm_kit(kind: str) -> CrmKit:
    if kind not in CRM_KITS:
        raise MissingKit(f"no test kit for CRM {kind!r} (tests/kits/__init__.py)")
    kit = _load(CRM_KITS[kind])
    assert kit.kind == kind, (kit.kind, kind)
    return kit  # type: ignore[return-value]


def channel_kits() -> list[ChannelKit]:
    """The kits of every registered channel adapter that has one, in the
    registry's order (:func:`missing` names the others)."""
    channels, _ = _registered()
    return [channel_kit(kind) for kind in channels if kind in CHANNEL_KITS]


def crm_kits() -> list[CrmKit]:
    """The kits of every registered CRM adapter that has one, in order."""
    _, crms = _registered()
    return [crm_kit(kind) for kind in crms if kind in CRM_KITS]


def all_kits() -> list[Kit]:
    return [*channel_kits(), *crm_kits()]


def exercise_channel_kits() -> list[ChannelKit]:
    """The kits of the test-only channels (:data:`EXERCISE_CHANNELS`)."""
    return [_load(kit) for _, kit in EXERCISE_CHANNELS.values()]  # type: ignore[misc]
