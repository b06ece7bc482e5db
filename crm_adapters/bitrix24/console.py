"""The bridge's admin console as the Bitrix24 app's page.

Bitrix24 opens an app's page (its main page, ``PLACEMENT=DEFAULT``, or a
widget bound with ``placement.bind``) by POSTing, from the user's browser,
form fields ``AUTH_ID``, ``AUTH_EXPIRES``, ``REFRESH_ID``, ``member_id``,
``status``, ``PLACEMENT`` (and ``PLACEMENT_OPTIONS`` for widgets) with
``DOMAIN``, ``PROTOCOL``, ``LANG``, ``APP_SID`` in the query
(settings/oauth/simple-way.md; the widget pages of b24restdocs
``api-reference/widgets/``). ``AUTH_ID`` is an access token of the user who
opened the page, limited by their rights. Nothing in the POST is signed, so:

* ``member_id`` only picks the tenant (:func:`console_account`); it proves
  nothing.
* :func:`console_identity` then calls **the tenant's own REST endpoint**
  (the ``client_endpoint`` its install recorded, never ``DOMAIN``: a forged
  POST could name a host of its choosing) with the posted ``AUTH_ID``, in
  one ``batch``: ``user.admin`` (``{"result": true}`` when the user may
  manage the portal's apps: dev.1c-bitrix.ru rest_help/general/user_admin),
  ``profile`` (basic scope: the user's ``ID`` and name) and ``app.info``
  (its ``CODE`` must be our app's: a token another app was given does not
  open our console). A token the portal refuses (``401 NO_AUTH_FOUND`` /
  ``expired_token``) is a :class:`SignatureError`.
* ``APPLICATION_TOKEN``, which the main page carries (simple-way.md: "the
  handler can use it to verify that the request came from Bitrix24"), must
  match the install's when it is posted; widget pages do not post it.

Setup binds the page to ``app.console_placements`` (:func:`placement_commands`,
``placement.bind`` with ``PLACEMENT``, ``HANDLER``, ``TITLE``, ``LANG_ALL``:
api-reference/widgets/placement-bind.md; administrator rights, app context).
``DEFAULT``, the app's main page, is the handler path of the app's own
settings in Bitrix24, not a REST binding.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bridge.errors import (
    AuthError,
    BridgeError,
    PayloadError,
    PermanentError,
    RetryableError,
    SignatureError,
)
from bridge.model import WebhookRequest
from crm_adapters.base import ConsoleIdentity

from .batch import Command
from .client import B24Api
from .webhooks import token_digest

if TYPE_CHECKING:
    from .adapter import Bitrix24Adapter

__all__ = [
    "CONSOLE_PATH",
    "console_account",
    "console_identity",
    "console_url",
    "placement_commands",
    "placement_result",
]

#: the bridge's page for the console, under its public URL
CONSOLE_PATH = "/console/crm/bitrix24"
#: a member_id is 32 hex characters; anything much longer is junk
_MAX_FIELD = 128
#: the console's name where Bitrix24 shows the binding (placement-bind.md LANG_ALL)
TITLES = {"en": "CRM bridge console", "ru": "Консоль CRM-моста"}


def _field(request: WebhookRequest, name: str) -> str:
    value = request.form.get(name)
    if value is None:
        return ""
    value = str(value).strip()
    if len(value) > _MAX_FIELD:
        raise PayloadError(f"Bitrix24 app page: {name} is too long")
    return value


def console_account(request: WebhookRequest) -> str | None:
    """The portal the page's POST names (``member_id``): which tenant to
    check the rest against, nothing more."""
    if request.method.upper() != "POST":
        raise PayloadError("Bitrix24 opens the app page with a POST")
    return _field(request, "member_id") or None


class _PageToken:
    """The page's ``AUTH_ID`` as credentials at the tenant's endpoint: no
    refresh token, so an expired one is refused, never renewed."""

    def __init__(self, auth_id: str, endpoint: str) -> None:
        self._creds = {"type": "oauth", "access_token": auth_id, "client_endpoint": endpoint}

    def get(self) -> Mapping[str, Any]:
        return self._creds

    def refresh(self, stale: Mapping[str, Any]) -> Mapping[str, Any]:
        raise AuthError("the page's token cannot be refreshed")


def console_identity(adapter: Bitrix24Adapter, request: WebhookRequest) -> ConsoleIdentity:
    """The portal user who opened the page, as the tenant's portal confirms
    them (see the module docstring)."""
    member = console_account(request)
    own = str(adapter.settings.member_id or adapter.account.account_id or "")
    if not member or not own or not hmac.compare_digest(member.encode(), own.encode()):
        raise SignatureError("Bitrix24 app page names another portal")
    auth_id = _field(request, "AUTH_ID")
    if not auth_id:
        raise PayloadError("Bitrix24 app page without AUTH_ID")
    creds = adapter.credentials.get()
    if B24Api.style(creds) != "oauth":
        raise PermanentError(
            "Bitrix24: this tenant is connected through an incoming webhook; the console "
            "opens inside Bitrix24 only for the app install"
        )
    _check_application_token(adapter, creds, _field(request, "APPLICATION_TOKEN"))
    api = B24Api(adapter.http, _PageToken(auth_id, B24Api.endpoint(creds)), adapter.limit)
    commands = [
        Command("admin", "user.admin"),
        Command("me", "profile"),
        Command("app", "app.info"),
    ]
    try:
        answer = api.batch(commands, budget=False)
        admin, me, info = (answer.value(c.key) for c in commands)
    except AuthError:
        raise SignatureError("Bitrix24 did not accept the app page's AUTH_ID") from None
    except RetryableError:
        raise  # the portal is busy or down: try again
    except BridgeError:
        raise SignatureError("Bitrix24 did not confirm the app page's user") from None
    ours = {adapter.app.client_id, adapter.app.app_code} - {""}
    if not isinstance(info, Mapping) or str(info.get("CODE") or "") not in ours:
        raise SignatureError("Bitrix24 app page: the token belongs to another app")
    if not isinstance(me, Mapping) or not str(me.get("ID") or "").isdigit():
        raise SignatureError("Bitrix24 app page: the portal named no user")
    name = " ".join(str(me.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
    return ConsoleIdentity(
        account_id=own,
        user_id=str(me["ID"]),
        admin=admin is True or str(admin).lower() == "true",
        in_browser=True,
        name=name[:200],
    )


def _check_application_token(
    adapter: Bitrix24Adapter, creds: Mapping[str, Any], posted: str
) -> None:
    """A posted ``APPLICATION_TOKEN`` must be the install's (widget pages post none)."""
    if not posted:
        return
    stored = str(creds.get("application_token") or "")
    expected = token_digest(stored) if stored else adapter.settings.application_token_sha256
    if expected and not hmac.compare_digest(token_digest(posted).encode(), expected.encode()):
        raise SignatureError("Bitrix24 app page: APPLICATION_TOKEN is not this install's")


# -- setup: where the page is bound ------------------------------------------------


def console_url(adapter: Bitrix24Adapter) -> str:
    """The handler setup binds: ``app.console_url``, else the bridge's own
    page beside the tenant's webhook URL (``<public URL>/webhooks/...``)."""
    if adapter.app.console_url:
        return str(adapter.app.console_url)
    webhook = adapter.account.webhook_url or ""
    base = webhook.split("/webhooks/", 1)[0] if "/webhooks/" in webhook else ""
    return base + CONSOLE_PATH if base else ""


def _placements(adapter: Bitrix24Adapter) -> list[str]:
    codes = [p.strip().upper() for p in str(adapter.app.console_placements or "").split(",")]
    return [c for c in dict.fromkeys(codes) if c and c != "DEFAULT"]


def placement_commands(adapter: Bitrix24Adapter) -> list[Command]:
    """``placement.bind`` of the console page per configured placement (none
    without a URL to bind)."""
    handler = console_url(adapter)
    if not handler:
        return []
    return [
        Command(
            f"place{n}",
            "placement.bind",
            {
                "PLACEMENT": code,
                "HANDLER": handler,
                "TITLE": TITLES["en"],
                "LANG_ALL": {lang: {"TITLE": title} for lang, title in TITLES.items()},
            },
        )
        for n, code in enumerate(_placements(adapter))
    ]


def placement_result(answer: Any, commands: list[Command]) -> tuple[list[str], list[str]]:
    """(placements bound, placements refused with why). "Handler already
    binded" counts as bound (Bitrix24 refuses the same handler twice; the
    wording as integrators quote it). A refusal does not fail setup: the
    app's main page opens the console without any binding."""
    bound: list[str] = []
    refused: list[str] = []
    for command in commands:
        code = str(command.params["PLACEMENT"])
        error = answer.errors.get(command.key)
        if error is None or "already" in (error.message or "").lower():
            bound.append(code)
        else:
            refused.append(f"{code}: {error.message}")
    return bound, refused
