"""The demo: ``bridge run --demo <crm>`` on the sandboxes.

The bridge's core knows no vendor and no sandbox: ``bridge run`` finds this
module through the ``crm_bridge.demo`` entry point (pyproject.toml) and asks
it for the environment that points the bridge at the sandbox vendors
(:meth:`SandboxDemo.environment`) and, once the bridge answers, to install
the demo tenant into the sandbox CRM through the real install flow (OAuth,
or the CRM's install event), connect the sandbox Telegram's demo bot and
the sandbox mail system's demo mailbox (:func:`connect_email`) and the
demo shop's chat widget (:func:`connect_webchat`)
(:meth:`SandboxDemo.seed`), which returns the banner to print.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

import requests

from bridge.config import Settings
from bridge.setup import connect_channel

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = [
    "DEMO",
    "DEMO_CRMS",
    "SandboxDemo",
    "Seeded",
    "banner",
    "connect_email",
    "demo_env",
    "event_install",
    "oauth_install",
    "seed",
]

#: CRM -> the demo's mapping file
DEMO_CRMS = {
    "hubspot": "demo-hubspot.yaml",
    "amocrm": "demo-amocrm.yaml",
    "bitrix24": "demo-bitrix24.yaml",
}


@dataclass
class Seeded:
    crm: str
    tenant_id: int
    channel_account_id: int
    account: str  # the CRM account (HubSpot portal id, amoCRM subdomain)
    #: the demo mailbox's channel account (None: no e-mail channel here)
    email_account_id: int | None = None
    #: the demo WhatsApp number's channel account
    whatsapp_account_id: int | None = None
    #: the demo VK community's channel account
    vk_account_id: int | None = None
    #: the demo Viber bot's channel account
    viber_account_id: int | None = None
    #: the demo MAX bot's channel account
    max_account_id: int | None = None
    #: the demo shop's web chat widget (None: no web chat channel here)
    webchat_account_id: int | None = None


def demo_env(crm: str, base: str, sandbox: str | None = None) -> dict[str, str]:
    """Environment that points the bridge (at ``base``) at the sandbox
    vendors (at ``sandbox``, default ``<base>/sandbox``); the deployment-wide
    app credentials are the sandbox's demo app."""
    from sandbox import whatsapp

    sb = sandbox or f"{base}/sandbox"
    env = {
        "BRIDGE_PUBLIC_URL": base,
        "TELEGRAM_API_BASE": f"{sb}/telegram",
        # the sandbox's Meta app: it signs what it posts to /webhooks/whatsapp/app
        "WHATSAPP_API_BASE": f"{sb}/whatsapp",
        "WHATSAPP_APP_SECRET": whatsapp.DEMO_APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": whatsapp.DEMO_VERIFY_TOKEN,
        "VK_API_BASE": f"{sb}/vk",
        "VIBER_API_BASE": f"{sb}/viber/pa",
        "MAX_API_BASE": f"{sb}/max",
    }
    if crm == "hubspot":
        from sandbox.hubspot.config import DEFAULTS

        app = DEFAULTS["app"]
        env.update(
            {
                "HUBSPOT_API_BASE": f"{sb}/hubspot",
                "HUBSPOT_AUTH_BASE": f"{sb}/hubspot",
                "HUBSPOT_CLIENT_ID": app["client_id"],
                "HUBSPOT_CLIENT_SECRET": app["client_secret"],
                "HUBSPOT_APP_ID": str(app["app_id"]),
                "HUBSPOT_DEVELOPER_API_KEY": app["developer_api_key"],
            }
        )
    elif crm == "amocrm":
        from sandbox.amocrm import config as amo

        env.update(
            {
                # amoCRM's hosts, as paths of the sandbox: the account host is
                # per subdomain (a template), OAuth on www, chats on amojo
                "AMOCRM_API_BASE": f"{sb}/amocrm/{{subdomain}}",
                "AMOCRM_AUTH_BASE": f"{sb}/amocrm/www",
                "AMOCRM_AMOJO_BASE": f"{sb}/amocrm/amojo",
                "AMOCRM_CLIENT_ID": amo.DEMO_CLIENT_ID,
                "AMOCRM_CLIENT_SECRET": amo.DEMO_CLIENT_SECRET,
                "AMOCRM_CHANNEL_ID": amo.DEMO_CHANNEL_ID,
                "AMOCRM_CHANNEL_SECRET": amo.DEMO_CHANNEL_SECRET,
                "AMOCRM_BOT_ID": amo.DEMO_BOT_ID,
            }
        )
    elif crm == "bitrix24":
        from sandbox.bitrix24 import config as b24

        host = urlparse(sb).netloc
        env.update(
            {
                # each portal's REST endpoint comes with its install; the
                # sandbox serves portals as paths of its own host (allowed here)
                "BITRIX24_AUTH_BASE": f"{sb}/bitrix24/oauth",
                "BITRIX24_ALLOWED_HOSTS": f"{host.split(':')[0]}:*",
                "BITRIX24_PORTAL": f"{sb}/bitrix24/{b24.DEMO_DOMAIN}",
                "BITRIX24_CLIENT_ID": b24.DEMO_CLIENT_ID,
                "BITRIX24_CLIENT_SECRET": b24.DEMO_CLIENT_SECRET,
                "BITRIX24_APP_CODE": str(b24.DEFAULTS["app"]["code"]),
            }
        )
    else:
        raise ValueError(f"no demo for {crm!r}; choose one of {', '.join(DEMO_CRMS)}")
    return env


def _consent_hubspot(sandbox: str, query: dict[str, str]) -> dict[str, str]:
    grant = requests.post(
        f"{sandbox}/hubspot/_install",
        json={"client_id": query["client_id"], "redirect_uri": query["redirect_uri"]},
        timeout=10,
    )
    grant.raise_for_status()
    return {"code": grant.json()["code"]}


def _consent_amocrm(sandbox: str, query: dict[str, str]) -> dict[str, str]:
    grant = requests.post(
        f"{sandbox}/amocrm/_install",
        json={"client_id": query["client_id"], "redirect_uri": query.get("redirect_uri", "")},
        timeout=10,
    )
    grant.raise_for_status()
    data = grant.json()
    return {"code": data["code"], "referer": data["referer"], "platform": "1"}


_CONSENT: dict[str, Callable[[str, dict[str, str]], dict[str, str]]] = {
    "hubspot": _consent_hubspot,
    "amocrm": _consent_amocrm,
}


def _register_chat_channel(crm: str, base: str, sandbox: str) -> None:
    """amoCRM support registers a chat channel's hook URL out of band; the
    sandbox's control endpoint plays support."""
    if crm == "amocrm":
        requests.post(
            f"{sandbox}/amocrm/_channel",
            json={"hook_url": f"{base}/webhooks/crm/amocrm/route/:scope_id"},
            timeout=10,
        ).raise_for_status()


def _point_app_webhooks(crm: str, base: str, sandbox: str) -> None:
    """HubSpot sends every portal's CRM-object events (``contact.merge``) to
    the one target URL of the app's webhook settings, which its developer
    sets by hand: the sandbox's app gets the bridge's app URL."""
    if crm == "hubspot":
        requests.post(
            f"{sandbox}/hubspot/_config",
            json={"crm_webhook_url": f"{base}/webhooks/crm/hubspot/app"},
            timeout=10,
        ).raise_for_status()


def event_install(runtime: Runtime, base: str, *, crm: str, sandbox: str, mapping: str) -> int:
    """The CRM installs the app by POSTing the install event to the
    bridge's install handler (Bitrix24's ONAPPINSTALL); the sandbox's
    control endpoint plays the admin who clicks "Install"."""
    from sqlalchemy import select

    from bridge.tables import Tenant

    handler = f"{base}/webhooks/crm/{crm}/install?mapping={mapping}"
    answer = requests.post(f"{sandbox}/{crm}/_install", json={"handler": handler}, timeout=60)
    answer.raise_for_status()
    data = answer.json()
    delivery = data.get("delivery") or {}
    if not (delivery.get("status") or 0) // 100 == 2:
        raise RuntimeError(f"the bridge refused the {crm} install event: {delivery}")
    with runtime.read_engine.connect() as conn:
        tenant_id = conn.scalar(
            select(Tenant.id).where(
                Tenant.crm_kind == crm, Tenant.crm_account_id == str(data["member_id"])
            )
        )
    if tenant_id is None:
        raise RuntimeError(f"the {crm} install left no tenant")
    return int(tenant_id)


#: CRMs whose demo installs through the vendor's install event, not OAuth
_EVENT_INSTALLS = {"bitrix24"}


def oauth_install(base: str, *, crm: str, sandbox: str, mapping: str) -> int:
    """An admin installs the app into the sandbox CRM through the bridge's
    real OAuth flow; returns the tenant id (a re-install re-authorises it)."""
    # 1. The CRM admin opens the install link ...
    install = f"{base}/oauth/{crm}/install"
    start = requests.get(install, params={"mapping": mapping}, allow_redirects=False, timeout=10)
    start.raise_for_status()
    query = {k: v[0] for k, v in parse_qs(urlparse(start.headers["Location"]).query).items()}
    redirect_uri = query.get("redirect_uri") or f"{base}/oauth/{crm}/callback"
    query["redirect_uri"] = redirect_uri
    # 2. ... and grants access (the sandbox's scripted consent) ...
    params = _CONSENT[crm](sandbox, query)
    # 3. ... the CRM redirects back to the bridge with a code.
    done = requests.get(redirect_uri, params={**params, "state": query["state"]}, timeout=30)
    done.raise_for_status()
    return int(done.json()["tenant"])


def connect_email(runtime: Runtime, tenant_id: int, sandbox: str) -> int | None:
    """Connect the sandbox mail system's demo mailbox (``support@demo.example``)
    to the tenant as an e-mail account that receives through its raw-MIME
    webhook and replies through the sandbox's SMTP server (plain, on
    loopback: the adapter allows no other clear-text SMTP), then give the
    sandbox the account's webhook URL and secret, as an admin sets the
    inbound route at a mail provider. None when this bridge has no e-mail
    channel (not registered, or its library missing)."""
    from bridge.registry import UnknownAdapter, channel_class
    from sandbox.email import DEMO_ADDRESS, DEMO_NAME

    try:
        channel_class("email")
    except UnknownAdapter:
        return None
    state = requests.get(f"{sandbox}/email/_state", timeout=10)  # starts its SMTP server
    state.raise_for_status()
    server = state.json()["smtp"]
    account_id = connect_channel(
        runtime,
        tenant_id,
        kind="email",
        values={
            "address": DEMO_ADDRESS,
            "from_name": DEMO_NAME,
            "smtp_host": server["host"],
            "smtp_port": server["port"],
            "smtp_security": "plain",
            # the sandbox signs what it posts (X-Bridge-Signature), as an
            # admin's MTA would with the key given at connect
            "webhook_secret_env": _demo_mail_key(),
        },
        name="Demo mailbox",
    )
    url, secret = _email_route(runtime, account_id)
    requests.post(
        f"{sandbox}/email/_mailboxes",
        json={
            "address": DEMO_ADDRESS,
            "name": DEMO_NAME,
            "webhook_url": url,
            "webhook_secret": secret,
        },
        timeout=10,
    ).raise_for_status()
    return account_id


def connect_whatsapp(runtime: Runtime, base: str, tenant_id: int, sandbox: str) -> int:
    """The sandbox's demo WhatsApp number, connected as an admin connects a
    real one, and the sandbox's Meta app pointed at the bridge's app URL
    (Meta's handshake checked, as when a webhook is saved in the app)."""
    from sandbox import whatsapp

    account_id = connect_channel(
        runtime,
        tenant_id,
        kind="whatsapp",
        values={
            "phone_number_id": whatsapp.DEMO_PHONE_NUMBER_ID,
            "waba_id": whatsapp.DEMO_WABA_ID,
            "access_token": whatsapp.DEMO_ACCESS_TOKEN,
            "display_phone_number": whatsapp.DEMO_DISPLAY_PHONE_NUMBER,
        },
        name="Demo WhatsApp",
    )
    requests.post(
        f"{sandbox}/whatsapp/_config",
        json={"webhook_url": f"{base}/webhooks/whatsapp/app"},
        timeout=10,
    ).raise_for_status()
    return account_id


def connect_vk(runtime: Runtime, tenant_id: int, sandbox: str) -> int:
    """The sandbox's demo VK community, connected as an admin connects a
    real one (the confirmation string and secret copied from its Callback
    API settings), and the sandbox's
    Callback API server pointed at the account's URL and confirmed, as VK
    does when the address is saved."""
    from bridge.tables import ChannelAccount
    from sandbox import vk

    account_id = connect_channel(
        runtime,
        tenant_id,
        kind="vk",
        values={
            "group_id": str(vk.DEMO_GROUP_ID),
            "access_token": vk.DEMO_ACCESS_TOKEN,
            "secret": vk.DEMO_SECRET,
            # what the community's Callback API settings show
            "confirmation": vk.DEMO_CONFIRMATION,
        },
        name="Demo VK community",
    )
    with runtime.read_session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None  # connected above
        url = runtime.channel_webhook_url(account)
    requests.post(f"{sandbox}/vk/_connect", json={"server_url": url}, timeout=10).raise_for_status()
    return account_id


def connect_viber(runtime: Runtime, tenant_id: int) -> int:
    """The sandbox's demo Viber bot, connected as an admin connects a real
    one (its auth token; the sender name and the welcome message the
    admin chose): connecting calls set_webhook with the account's URL, and
    the sandbox checks it with a signed ``webhook`` event, as Viber does."""
    from sandbox import viber

    return connect_channel(
        runtime,
        tenant_id,
        kind="viber",
        values={
            "auth_token": viber.DEMO_AUTH_TOKEN,
            "sender_name": "Demo Shop",
            "welcome_text": "Hello! Write to us here. / Здравствуйте! Напишите нам здесь.",
        },
        name="Demo Viber bot",
    )


def connect_max(runtime: Runtime, tenant_id: int) -> int:
    """The sandbox's demo MAX bot, connected as an admin connects a real one
    (its token and id): connecting subscribes the account's URL with a generated secret (``POST
    /subscriptions``), where the sandbox then posts its updates."""
    from sandbox import max as max_messenger

    return connect_channel(
        runtime,
        tenant_id,
        kind="max",
        # the bot's id as its settings page shows it (the connect command
        # would read it with GET /me from MAX_API_BASE)
        values={"access_token": max_messenger.DEMO_TOKEN, "bot_id": str(max_messenger.DEMO_BOT_ID)},
        name="Demo MAX bot",
    )


def connect_webchat(runtime: Runtime, tenant_id: int, sandbox: str) -> int | None:
    """The demo shop's chat widget (:mod:`sandbox.site`), created as a site
    owner creates one (``bridge widget create --origin <the shop>``): its
    site is the sandbox's own origin (and, for a loopback address, the same
    port on ``localhost``: the same shop typed either way); then the shop is
    given the snippet's script URL, as the owner pastes the snippet into
    their pages. None when this bridge has no web chat channel."""
    from bridge.registry import UnknownAdapter, channel_class
    from bridge.tables import ChannelAccount

    try:
        channel_class("webchat")
    except UnknownAdapter:
        return None
    shop = urlparse(sandbox)
    origins = [f"{shop.scheme}://{shop.netloc}"]
    if shop.hostname == "127.0.0.1":
        origins.append(f"{shop.scheme}://localhost" + (f":{shop.port}" if shop.port else ""))
    account_id = connect_channel(
        runtime,
        tenant_id,
        kind="webchat",
        values={
            "origins": " ".join(origins),
            "title": "Tea & Coffee",
            "color": "#276749",
            "greeting_en": "Hello! Ask us about tea, coffee or delivery.",
            "greeting_ru": "Здравствуйте! Спросите нас о чае, кофе или доставке.",
            # the demo shows both: the form (a phone or an e-mail, or skip it)
            # and the consent box before the first message
            "prechat": "optional",
            "consent": "checkbox",
            "privacy_url": f"{sandbox}/site/privacy",
        },
        name="Demo shop chat",
    )
    with runtime.read_session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None  # connected above
        src = f"{runtime.settings.public_url}/widget/{account.key}.js"
    requests.post(f"{sandbox}/site/_widget", json={"src": src}, timeout=10).raise_for_status()
    return account_id


def _demo_mail_key() -> str:
    """The environment variable holding the demo mailbox's webhook key (a
    fresh one per demo process unless set)."""
    name = "BRIDGE_DEMO_MAIL_WEBHOOK_KEY"
    os.environ.setdefault(name, secrets.token_urlsafe(32))
    return name


def _email_route(runtime: Runtime, account_id: int) -> tuple[str, str]:
    """The e-mail account's raw-MIME webhook URL and its HMAC key."""
    from bridge.tables import ChannelAccount

    with runtime.read_session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None  # connected above
        adapter = runtime.channel_adapter(account)
        return runtime.channel_webhook_url(account), str(adapter.credentials.webhook_secret)


def seed(
    runtime: Runtime,
    base: str,
    *,
    crm: str = "hubspot",
    sandbox: str | None = None,
    mapping: str | None = None,
    email: bool = False,
    channels: tuple[str, ...] = (),
) -> Seeded:
    """Install the demo tenant (bridge at ``base``, sandbox at ``sandbox``,
    default ``<base>/sandbox``) and connect the sandbox's demo bot; with
    ``email`` (``bridge run``'s demo) also the demo mailbox, when the bridge
    has the e-mail channel (the benchmarks' stacks leave it out)."""
    from sandbox.telegram import DEMO_BOT_TOKEN

    sandbox = sandbox or f"{base}/sandbox"
    mapping = mapping or DEMO_CRMS[crm]
    if crm in _EVENT_INSTALLS:
        tenant_id = event_install(runtime, base, crm=crm, sandbox=sandbox, mapping=mapping)
    else:
        tenant_id = oauth_install(base, crm=crm, sandbox=sandbox, mapping=mapping)
    _register_chat_channel(crm, base, sandbox)
    _point_app_webhooks(crm, base, sandbox)
    account_id = connect_channel(
        runtime, tenant_id, kind="telegram", values={"bot_token": DEMO_BOT_TOKEN}, name="Demo bot"
    )
    # a stack that asks for "email" among its channels gets the demo mailbox too
    email = email or "email" in channels
    email_account_id = connect_email(runtime, tenant_id, sandbox) if email else None
    # the demo's other messengers (``bridge run``; a test or bench stack that
    # asks for them): each is an account whose deliveries the counts include
    whatsapp_account_id = (
        connect_whatsapp(runtime, base, tenant_id, sandbox) if "whatsapp" in channels else None
    )
    vk_account_id = connect_vk(runtime, tenant_id, sandbox) if "vk" in channels else None
    viber_account_id = connect_viber(runtime, tenant_id) if "viber" in channels else None
    max_account_id = connect_max(runtime, tenant_id) if "max" in channels else None
    webchat_account_id = (
        connect_webchat(runtime, tenant_id, sandbox) if "webchat" in channels else None
    )
    with runtime.transaction() as session:
        from bridge.tables import Tenant

        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None  # installed above
        settings = tenant.settings or {}
        account = str(settings.get("subdomain") or settings.get("domain") or tenant.crm_account_id)
    return Seeded(
        crm,
        tenant_id,
        account_id,
        account,
        email_account_id,
        whatsapp_account_id,
        vk_account_id,
        viber_account_id,
        max_account_id,
        webchat_account_id,
    )


def _cli(var_dir: Path | None) -> str:
    """The bridge command as a newcomer can paste it from any directory: the
    CLI finds the running demo's settings in the var directory."""
    exe = Path(sys.executable).parent / "bridge"
    if var_dir is None or var_dir == Settings().var_dir:
        return str(exe)
    return f"BRIDGE_VAR_DIR={shlex.quote(str(var_dir))} {exe}"


def banner(base: str, seeded: Seeded, *, var_dir: Path | None = None) -> str:
    rep = {
        "hubspot": (
            f"a rep in (sandbox) HubSpot portal {seeded.account}",
            f"""   curl -s {base}/sandbox/hubspot/_state | python3 -m json.tool

 ... reply as a rep (contact id from _state):
   curl -s -X POST {base}/sandbox/hubspot/_reply -H 'Content-Type: application/json' \\
        -d '{{"contact_id": "<contact id>", "text": "Hi Anna, yes we do!"}}'""",
        ),
        "amocrm": (
            f"a manager in (sandbox) amoCRM account '{seeded.account}'",
            f"""   curl -s '{base}/sandbox/amocrm/_state?account={seeded.account}' \\
        | python3 -m json.tool

 ... reply as a manager in amoCRM's chat (contact id from _state):
   curl -s -X POST {base}/sandbox/amocrm/_reply -H 'Content-Type: application/json' \\
        -d '{{"contact_id": <contact id>, "text": "Hi Anna, yes we do!"}}'""",
        ),
        "bitrix24": (
            f"an operator in (sandbox) Bitrix24 portal {seeded.account}",
            f"""   curl -s '{base}/sandbox/bitrix24/_state?account={seeded.account}' \\
        | python3 -m json.tool

 ... reply as an operator in the Open Lines chat (external_chat_id of a chat in
     _state's accounts[0].chats):
   curl -s -X POST {base}/sandbox/bitrix24/_reply \\
        -H 'Content-Type: application/json' \\
        -d '{{"account": "{seeded.account}", "conversation": "<chat id>", "text": "Hi Anna!"}}'""",
        ),
    }[seeded.crm]
    cli = _cli(var_dir)
    mail = _email_banner(base) if seeded.email_account_id is not None else ""
    mail += _whatsapp_banner(base) if seeded.whatsapp_account_id is not None else ""
    mail += _vk_banner(base) if seeded.vk_account_id is not None else ""
    mail += _viber_banner(base) if seeded.viber_account_id is not None else ""
    mail += _max_banner(base) if seeded.max_account_id is not None else ""
    mail += _webchat_banner(base) if seeded.webchat_account_id is not None else ""
    return f"""
================================================================================
 CRM bridge demo is running (Ctrl-C stops everything)

 Try the whole loop in a browser:   {base}/sandbox/
   left:  you are a Telegram customer writing to the demo bot
   right: you are {rep[0]}

 Or with curl — a customer writes:
   curl -s -X POST {base}/sandbox/telegram/_deliver -H 'Content-Type: application/json' \\
        -d '{{"from": {{"id": 1001, "first_name": "Anna"}}, "text": "Hello! Do you deliver?"}}'

 ... see the contact, deal/lead and timeline the bridge wrote into the CRM:
{rep[1]}

 ... and see what the bot sent back to the customer:
   curl -s '{base}/sandbox/telegram/_sent?chat_id=1001'
{mail}
 The bridge's own view (works from any directory while the demo runs):
   {cli} status
   {cli} tenant list

 The admin console (overview, channels, mapping, conversations, KPIs):
   {cli} admin create-user --email you@example.com --role owner
   then sign in at {base}/console/
================================================================================
"""


def _whatsapp_banner(base: str) -> str:
    from sandbox.whatsapp import DEMO_DISPLAY_PHONE_NUMBER

    return f"""
 WhatsApp: a customer writes to the demo number +{DEMO_DISPLAY_PHONE_NUMBER}:
   curl -s -X POST {base}/sandbox/whatsapp/_customer -H 'Content-Type: application/json' \\
        -d '{{"from": "79990001234", "name": "Anna", "text": "Hello from WhatsApp"}}'
 ... and what the bridge sent back (a reply after 24 h goes as a template):
   curl -s '{base}/sandbox/whatsapp/_sent'
"""


def _vk_banner(base: str) -> str:
    return f"""
 VK: a user writes to the demo community:
   curl -s -X POST {base}/sandbox/vk/_customer -H 'Content-Type: application/json' \\
        -d '{{"from": 5550001, "name": "Anna", "text": "Hello from VK"}}'
   curl -s '{base}/sandbox/vk/_sent'
"""


def _viber_banner(base: str) -> str:
    return f"""
 Viber: a user writes to the demo bot:
   curl -s -X POST {base}/sandbox/viber/_customer -H 'Content-Type: application/json' \\
        -d '{{"from": "01234567890A=", "name": "Anna", "text": "Hello from Viber"}}'
   curl -s '{base}/sandbox/viber/_sent'
"""


def _max_banner(base: str) -> str:
    return f"""
 MAX: a user writes to the demo bot (/_contact shares a phone, /_stop stops the bot):
   curl -s -X POST {base}/sandbox/max/_customer -H 'Content-Type: application/json' \\
        -d '{{"from": 5550001, "name": "Anna", "text": "Hello from MAX"}}'
   curl -s '{base}/sandbox/max/_sent?user_id=5550001'
"""


def _webchat_banner(base: str) -> str:
    return f"""
 Web chat: the demo shop's pages carry the chat widget (the button at the bottom right):
   {base}/sandbox/site/?utm_source=newsletter&utm_medium=email&utm_campaign=spring
"""


def _email_banner(base: str) -> str:
    from sandbox.email import DEMO_ADDRESS

    return f"""
 E-mail: a customer writes to {DEMO_ADDRESS} (the page's e-mail client too):
   curl -s -X POST {base}/sandbox/email/_deliver -H 'Content-Type: application/json' \\
        -d '{{"from": "anna@example.com", "name": "Anna", "subject": "Delivery", "text": "Hi!"}}'
 ... and the mail the bridge sent back (the acknowledgement, the rep's replies):
   curl -s '{base}/sandbox/email/_sent?to=anna@example.com'
"""


#: the messengers ``bridge run``'s demo connects besides the Telegram bot
DEMO_CHANNELS = ("whatsapp", "vk", "viber", "max", "webchat")


class SandboxDemo:
    """The demo provider ``bridge run`` loads (``crm_bridge.demo``)."""

    #: the CRMs ``--demo`` accepts, the first one the default
    crms: tuple[str, ...] = tuple(DEMO_CRMS)

    def environment(self, crm: str, base: str) -> dict[str, str]:
        """What the bridge's processes need to serve the demo at ``base``:
        the sandboxes mounted under ``/sandbox``, the try-it page as ``/``,
        the vendors' API bases and app credentials pointed at them."""
        return {
            "BRIDGE_MOUNT_SANDBOX": "1",
            "BRIDGE_DEMO_CRM": crm,
            "BRIDGE_HOME_URL": "/sandbox/",
            **demo_env(crm, base),
        }

    def seed(self, runtime: Runtime, base: str, crm: str, var_dir: Path) -> str:
        """Install the demo tenant, connect the demo bot and the demo
        mailbox; the banner."""
        seeded = seed(runtime, base, crm=crm, email=True, channels=DEMO_CHANNELS)
        return banner(base, seeded, var_dir=var_dir)


DEMO = SandboxDemo()
