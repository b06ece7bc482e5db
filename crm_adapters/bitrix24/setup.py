"""Create what the bridge needs in a portal; idempotent (a second run
changes nothing and returns the same settings).

Everything goes out in at most two batches:

1. ``user.current`` (the credentials work), and for an app install:
   ``app.info`` (the plan: Enterprise or not, ``LICENSE_FAMILY``), one
   ``event.bind`` per event to the tenant's webhook URL (``ONAPPUNINSTALL``,
   lead/deal update and delete, contact delete, and with Open Lines
   ``OnImConnectorMessageAdd``; "Handler already binded" counts as done:
   Bitrix24 refuses duplicates, community-confirmed wording), and with
   ``account.inbox`` (the mapping's ``inbox``): per channel kind
   ``imconnector.register`` (``ID`` ``crm_bridge_<kind>``, named after the
   channel's title; re-registering updates it), the line
   (``imopenlines.config.list.get``, the first active line unless the
   setting ``line`` names one), ``imconnector.activate`` and
   ``imconnector.connector.data.set`` — the line's id passed by reference
   (``$result[lines][0][ID]``), so this is one request. Also
   ``crm.<type>.userfield.list`` for the user fields the mapping needs, and
   ``placement.bind`` of the admin console's page to
   ``app.console_placements`` (``console``; a refusal is logged, not fatal).
2. ``crm.<type>.userfield.add`` for the missing ones (string fields).

An incoming-webhook tenant cannot bind events nor use Open Lines
(``WRONG_AUTH_TYPE``, FACTS 2.1, 2.8): ``inbox: true`` there is a
``PermanentError``.

The result's settings are fields of :class:`~.settings.Bitrix24Settings`;
Bitrix24 needs no routes (every event is bound to the tenant's own URL).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from bridge.errors import PermanentError
from bridge.model import ChannelLink, SetupResult

from .batch import Command, Ref
from .console import placement_commands, placement_result
from .entities import field_code, user_field_name
from .oauth import plan_from_license
from .settings import DEFAULT_CONNECTOR, Bitrix24Settings

if TYPE_CHECKING:
    from .adapter import Bitrix24Adapter

__all__ = ["APP_EVENTS", "CHAT_EVENTS", "run_setup"]

log = logging.getLogger(__name__)

APP_EVENTS = (
    "ONAPPUNINSTALL",
    "ONCRMLEADUPDATE",
    "ONCRMDEALUPDATE",
    "ONCRMLEADDELETE",
    "ONCRMDEALDELETE",
    "ONCRMCONTACTDELETE",
)
#: an operator's reply; an operator closing the chat's session (the
#: service layer's session closes with it)
CHAT_EVENTS = ("OnImConnectorMessageAdd", "OnImConnectorDialogFinish")
OBJECT_TYPES = ("lead", "deal", "contact")
_ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 70 71"><path fill="#fff" '
    'd="M35 10C20 10 8 20 8 33c0 7 4 14 10 18l-3 10 12-6c3 1 5 1 8 1 15 0 27-10 27-23S50 10 '
    '35 10z"/></svg>'
)
ICON = {
    "DATA_IMAGE": "data:image/svg+xml," + quote(_ICON_SVG, safe=":/=\"' "),
    "COLOR": "#2fc6f6",
    "SIZE": "90%",
    "POSITION": "center",
}
ICON_DISABLED = {"DATA_IMAGE": ICON["DATA_IMAGE"], "COLOR": "#a8adb4"}


def _connector_ids(channels: Sequence[ChannelLink], settings: Bitrix24Settings) -> dict[str, str]:
    """channel kind -> connector id (``[a-z0-9_]``, no dots, FACTS 2.8)."""
    kinds = sorted({link.kind for link in channels})
    base = settings.connector_prefix or DEFAULT_CONNECTOR
    if not kinds:
        return {"": base}
    return {
        kind: f"{base}_{''.join(c for c in kind.lower() if c.isalnum() or c == '_')}"
        for kind in kinds
    }


def _user_fields(
    properties: Mapping[str, Sequence[str]] | None,
) -> dict[str, dict[str, str]]:
    """object type -> {mapping name: UF_CRM_… code} for names that are no
    Bitrix24 field code of their own."""
    out: dict[str, dict[str, str]] = {}
    for object_type, names in (properties or {}).items():
        if object_type not in OBJECT_TYPES:
            raise PermanentError(
                f"Bitrix24 has no object type {object_type!r} for mapping fields "
                f"({', '.join(OBJECT_TYPES)})"
            )
        for name in names:
            if field_code(name) is None:
                out.setdefault(object_type, {})[name] = user_field_name(name)
    return out


def run_setup(
    adapter: Bitrix24Adapter,
    channels: Sequence[ChannelLink],
    properties: Mapping[str, Sequence[str]] | None,
) -> SetupResult:
    """See :meth:`Bitrix24Adapter.setup`."""
    account = adapter.account
    settings = adapter.settings
    creds = adapter.credentials.get()
    webhook = adapter.api.style(creds) == "webhook"
    inbox = account.inbox
    if webhook and inbox:
        raise PermanentError(
            "Bitrix24: Open Lines need the app install, not an incoming webhook: install the "
            "bridge as a Bitrix24 app, or set `inbox: false` in the mapping"
        )
    result: dict[str, Any] = {
        # the install's portal name when there is one (a proxied or on-premise
        # portal's REST host may differ), else the webhook URL's host
        "domain": settings.domain.lower() or urlsplit(adapter.api.endpoint(creds)).netloc.lower(),
        "conversation_field": settings.conversation_field or "ORIGIN_ID",
    }
    if not webhook and creds.get("member_id"):
        result["member_id"] = str(creds["member_id"])
    commands = [Command("me", "user.current")]
    binds: dict[str, str] = {}
    connectors: dict[str, str] = {}
    places: list[Command] = []
    if not webhook:
        commands.append(Command("app", "app.info"))
        events = list(APP_EVENTS) + (list(CHAT_EVENTS) if inbox else [])
        if account.webhook_url:
            for n, event in enumerate(events):
                binds[f"bind{n}"] = event
                commands.append(
                    Command(
                        f"bind{n}", "event.bind", {"event": event, "handler": account.webhook_url}
                    )
                )
        elif inbox:
            raise PermanentError("Bitrix24 Open Lines setup needs the tenant's webhook URL")
        if inbox:
            connectors = _connector_ids(channels, settings)
            commands.extend(_openlines_commands(adapter, channels, connectors))
        places = placement_commands(adapter)
        commands.extend(places)
    wanted = _user_fields(properties)
    for object_type, fields in sorted(wanted.items()):
        for n, code in enumerate(sorted(set(fields.values()))):
            commands.append(
                Command(
                    f"uf_{object_type}_{n}",
                    f"crm.{object_type}.userfield.list",
                    {"filter": {"FIELD_NAME": code}},
                )
            )
    answer = adapter.api.batch(commands, halt=False)
    answer.value("me")  # the credentials work (raises the mapped error)
    if not webhook:
        info = answer.get("app")
        plan = plan_from_license(info) if isinstance(info, Mapping) else None
        if plan:
            result["plan"] = plan
        for key in binds:
            error = answer.errors.get(key)
            if error is not None and "already" not in (error.message or "").lower():
                raise error
        if inbox:
            result.update(_openlines_result(answer, connectors, settings))
        bound = _bound_placements(answer, places)
        if bound:
            result["placements"] = bound
    if wanted:
        result["custom_fields"] = _ensure_user_fields(adapter, wanted, answer)
    if binds:
        result["events"] = sorted(binds.values())
    return SetupResult(settings=result)


def _bound_placements(answer: Any, places: list[Command]) -> list[str]:
    """The console page's placements Bitrix24 took; a refused one is logged
    (the app's main page still opens the console)."""
    bound, refused = placement_result(answer, places)
    for why in refused:
        log.warning("Bitrix24 refused the console placement %s", why)
    return bound


def _openlines_commands(
    adapter: Bitrix24Adapter, channels: Sequence[ChannelLink], connectors: Mapping[str, str]
) -> list[Command]:
    settings = adapter.settings
    title = adapter.app.channel_title or "CRM bridge"
    handler = adapter.app.placement_url or adapter.account.webhook_url or ""
    names = {link.kind: link.name for link in channels}
    # the channel's name from the channel registry ("Telegram"), else its kind
    labels = {link.kind: link.title or link.kind.title() for link in channels}
    commands: list[Command] = []
    for n, (kind, connector) in enumerate(sorted(connectors.items())):
        name = f"{title} · {labels.get(kind) or kind}" if kind else title
        commands.append(
            Command(
                f"reg{n}",
                "imconnector.register",
                {
                    "ID": connector,
                    "NAME": name[:100],
                    "ICON": ICON,
                    "ICON_DISABLED": ICON_DISABLED,
                    "PLACEMENT_HANDLER": handler,
                    # operator signature on: the reply parser takes it off
                    "NEED_SIGNATURE": True,
                    "CHAT_GROUP": False,
                },
            )
        )
    line: Any = settings.line
    if not line:
        commands.append(
            Command(
                "lines",
                "imopenlines.config.list.get",
                {
                    "PARAMS": {
                        "select": ["ID", "LINE_NAME", "ACTIVE"],
                        "order": {"ID": "ASC"},
                        "filter": {"ACTIVE": "Y"},
                    }
                },
            )
        )
        line = Ref("lines")[0]["ID"]
    for n, (kind, connector) in enumerate(sorted(connectors.items())):
        commands.append(
            Command(
                f"act{n}",
                "imconnector.activate",
                {"CONNECTOR": connector, "LINE": line, "ACTIVE": 1},
            )
        )
        data = {"ID": connector, "NAME": names.get(kind) or title}
        commands.append(
            Command(
                f"data{n}",
                "imconnector.connector.data.set",
                {"CONNECTOR": connector, "LINE": line, "DATA": data},
            )
        )
    return commands


def _openlines_result(
    answer: Any, connectors: Mapping[str, str], settings: Bitrix24Settings
) -> dict[str, Any]:
    for n in range(len(connectors)):
        registered = answer.value(f"reg{n}")
        if isinstance(registered, Mapping) and registered.get("result") is False:
            code = registered.get("error") or ""
            text = registered.get("error_description") or ""
            raise PermanentError(
                f"Bitrix24 refused the Open Lines connector: {code} {text}".strip()
            )
    line: Any = settings.line
    if not line:
        lines = answer.value("lines")
        if not isinstance(lines, list) or not lines or not isinstance(lines[0], Mapping):
            raise PermanentError("Bitrix24 has no active Open Lines line: create one first")
        line = lines[0].get("ID")
    for n in range(len(connectors)):
        answer.value(f"act{n}")
        answer.value(f"data{n}")
    ordered = dict(sorted(connectors.items()))
    return {
        "line": str(line),
        "connectors": ordered,
        "connector_id": next(iter(ordered.values())),
    }


def _ensure_user_fields(
    adapter: Bitrix24Adapter, wanted: Mapping[str, Mapping[str, str]], answer: Any
) -> dict[str, dict[str, str]]:
    missing: list[tuple[str, str, str]] = []
    for object_type, fields in sorted(wanted.items()):
        labels = {code: name for name, code in fields.items()}
        for n, code in enumerate(sorted(set(fields.values()))):
            rows = answer.value(f"uf_{object_type}_{n}")
            if not (isinstance(rows, list) and rows):
                missing.append((object_type, code, labels[code]))
    if missing:
        adds = [
            Command(
                f"add{n}",
                f"crm.{object_type}.userfield.add",
                {
                    "fields": {
                        "FIELD_NAME": code.removeprefix("UF_CRM_"),
                        "EDIT_FORM_LABEL": label,
                        "LIST_COLUMN_LABEL": label,
                        "USER_TYPE_ID": "string",
                        "XML_ID": code,
                    }
                },
            )
            for n, (object_type, code, label) in enumerate(missing)
        ]
        created = adapter.api.batch(adds, halt=False)
        for command in adds:
            created.value(command.key)
    return {
        object_type: dict(sorted(fields.items())) for object_type, fields in sorted(wanted.items())
    }
