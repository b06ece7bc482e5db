"""The Bitrix24 adapter's typed settings (``bridge.schema``): the
deployment's app (:class:`Bitrix24App`, from ``BITRIX24_<FIELD>`` in the
environment) and one portal's settings (:class:`Bitrix24Settings`: what an
admin may set, and what the install and ``setup()`` record, ``state``).

Not here, because the tenant's mapping decides them and the core hands them
over on ``CrmAccountInfo`` and on each ``TimelineEntry``: ``inbox`` (Open
Lines on), ``language`` (the bridge's own words) and ``timezone`` (times in
comments).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = ["DEFAULT_AUTH_BASE", "DEFAULT_CONNECTOR", "Bitrix24App", "Bitrix24Settings"]

#: Bitrix24's OAuth server (FACTS 2.5)
DEFAULT_AUTH_BASE = "https://oauth.bitrix.info"
#: the connector id when setup has registered none yet (``[a-z0-9_]``, FACTS 2.8)
DEFAULT_CONNECTOR = "crm_bridge"


@dataclass(frozen=True)
class Bitrix24App:
    """The Bitrix24 app of this deployment (a Market or local app), the same
    for every portal. Each field is read from ``BITRIX24_<FIELD>``."""

    client_id: str = setting(
        "",
        help="the app's OAuth client id (app.info CODE of a local app: "
        "local.<hex>.<digits>); installs are refused without it",
    )
    client_secret: str = setting(
        "",
        secret=True,
        help="the app's OAuth client secret; only ever sent to auth_base (FACTS 2.5)",
    )
    auth_base: str = setting(
        DEFAULT_AUTH_BASE,
        help="the OAuth server that exchanges codes and refresh tokens "
        "(the sandbox: http://…/sandbox/bitrix24/oauth)",
    )
    portal: str = setting(
        "",
        help="the portal of a full-OAuth install link (acme.bitrix24.com or a URL); "
        "installs from the Market or the portal use the install event and need none",
    )
    allowed_hosts: str = setting(
        "",
        help="comma-separated host globs a portal may live on besides Bitrix24 cloud "
        "hosts (<name>.bitrix24.<tld>): on-premise portals, the sandbox (127.0.0.1:*); "
        "HTTP is accepted only for hosts named here",
    )
    app_code: str = setting(
        "",
        help="the app's CODE in app.info when it differs from client_id (Market apps)",
    )
    channel_title: str = setting(
        "CRM bridge",
        help="the Open Lines connector's name as operators see it (one connector per "
        "channel kind: '<title> · Telegram')",
    )
    placement_url: str = setting(
        "",
        help="the connector's settings page (imconnector.register PLACEMENT_HANDLER); "
        "empty: the tenant's webhook URL",
    )
    console_url: str = setting(
        "",
        help="the page Bitrix24 opens for the bridge's admin console (the handler setup "
        "binds with placement.bind); empty: <public URL>/console/crm/bitrix24, the "
        "bridge's own. Set the app's main page (its handler path) to the same URL",
    )
    console_placements: str = setting(
        "CRM_ANALYTICS_MENU",
        help="comma-separated placement codes setup binds the console page to "
        "(placement.bind; CRM_ANALYTICS_MENU: an item in the CRM's Analytics, LEFT_MENU: "
        "the portal's main menu); empty: none (the app's main page, DEFAULT, is the "
        "handler path in the app's settings, not bound through REST)",
    )


@dataclass(frozen=True)
class Bitrix24Settings:
    """One portal: what the install and ``setup()`` record (``state``) and
    what an admin may set."""

    # -- recorded by the install (install_event / exchange_code) ------------------

    member_id: str = setting(
        "",
        state=True,
        help="the portal's stable id (app installs): also the tenant's account id and "
        "the rate-limit bucket key",
    )
    domain: str = setting(
        "",
        state=True,
        help="the portal's host; the bucket key of incoming-webhook tenants",
    )
    plan: str = setting(
        "basic",
        state=True,
        choices=("basic", "enterprise"),
        help="basic | enterprise, from app.info LICENSE_FAMILY: the leaky bucket is "
        "50 burst / 2 per s, or 250 / 5 (FACTS 2.3)",
    )
    portal_language: str = setting(
        "",
        state=True,
        help="the portal's language from the install event (data[LANGUAGE_ID], en or ru; "
        "empty when it said another): a default for the mapping's language",
    )
    application_token_sha256: str = setting(
        "",
        state=True,
        help="SHA-256 of the install's application_token (the token itself is a "
        "credential): verifies events after a full OAuth re-authorisation, which "
        "delivers no token",
    )

    # -- recorded by setup() ------------------------------------------------------

    events: tuple[str, ...] = setting(
        (),
        state=True,
        help="the events bound to the tenant's webhook URL (app installs)",
    )
    custom_fields: dict[str, dict[str, str]] = setting(
        default_factory=dict,
        state=True,
        help="{lead|deal|contact: {mapping property: UF_CRM_… code}}: the string user "
        "fields setup created for mapping properties Bitrix24 has no field for",
    )
    connectors: dict[str, str] = setting(
        default_factory=dict,
        state=True,
        help="{channel kind: Open Lines connector id} (<connector_prefix>_<kind>)",
    )
    connector_id: str = setting(
        DEFAULT_CONNECTOR,
        state=True,
        help="the first (or only) connector: messages of a channel kind without one of "
        "its own, and receipts of replies that name none",
    )
    placements: tuple[str, ...] = setting(
        (),
        state=True,
        help="the placements setup bound to the console page (placement.bind); one "
        "Bitrix24 refused (rights, scope) is left out and logged",
    )

    # -- set by an admin (setup records its choice where it made one) ------------

    line: str = setting(
        "",
        help="the Open Lines line id; empty: setup picks the first active line of "
        "imopenlines.config.list.get and records it here",
    )
    conversation_field: str = setting(
        "ORIGIN_ID",
        help="where a lead/deal keeps the conversation uid: ORIGIN_ID (with "
        "ORIGINATOR_ID = crm_bridge) or a UF_CRM_* field code of the portal",
    )
    source_id: str = setting(
        "OTHER",
        help="SOURCE_ID of the contacts, leads and deals the bridge creates (every "
        "portal has OTHER, FACTS 2.7)",
    )
    task_kind: str = setting(
        "todo",
        choices=("todo", "task"),
        help="todo: a to-do on the lead/deal (crm.activity.todo.add) | task: a task "
        "bound to it (tasks.task.add with UF_CRM_TASK)",
    )
    default_responsible_id: str = setting(
        "",
        help="the Bitrix24 user a task goes to when the conversation has no owner "
        "(tasks need one; to-dos do not)",
    )
    rate_per_second: float | None = setting(
        None,
        help="the portal's drain rate when it is not the plan's (on-premise portals set "
        "their own limits, limits.md); empty: the plan's",
    )
    burst: int | None = setting(
        None,
        help="the portal's burst when it is not the plan's (see rate_per_second)",
    )
    openlines_crm_tracker: bool = setting(
        False,
        help="true: let Bitrix24's CRM tracker process Open Lines messages; false "
        "(default): disable_crm = Y, the bridge files them on its own contact and "
        "lead/deal (the tracker would open a second lead)",
    )
    operator_signature: str = setting(
        "strip",
        choices=("strip", "keep"),
        help="strip: the operator's name is taken off a reply (it becomes the reply's "
        "author) | keep: it stays as a plain 'Name: ' prefix",
    )
    connector_prefix: str = setting(
        DEFAULT_CONNECTOR,
        help="prefix of the Open Lines connector ids setup registers ([a-z0-9_], FACTS 2.8)",
    )
    marker_style: str = setting(
        "hidden",
        choices=("hidden", "visible"),
        help="hidden: the bridge marker in zero-width characters | visible: a short "
        "[bridge:…] tag, where Bitrix24 is seen dropping zero-width characters",
    )
