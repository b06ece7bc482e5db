"""The demo page: try the whole loop (customer in Telegram or WhatsApp <-> a rep in the CRM)
in a browser.

``GET /`` serves one plain page (HTML + vanilla JS + CSS from ``static/``, no
build step). Left panel: the customer writes through the Telegram sandbox's
``POST /_deliver`` (convenience form) and sees the transcript from
``/_deliveries`` and ``/_sent``. Right panel: the CRM chosen by ``crm``,
through the control API every sandbox shares (:mod:`sandbox.core.control`):

* ``"hubspot"`` (default): the rep sees contacts, deals, tickets and the
  selected contact's timeline from the HubSpot sandbox's ``GET /_state`` and
  answers with ``POST /_reply``.
* ``"amocrm"``: the manager sees contacts, leads (stage, responsible user) and
  the selected contact's timeline (notes + chat messages) from the amoCRM
  sandbox's ``GET /_state?account=``; answers in amoCRM's chat
  (``POST /_reply``) or as an ``@client`` note on the contact's open lead
  (``POST /_note``); closes a lead as won / lost (``POST /_lead_status``).
* ``"bitrix24"``: the operator sees contacts, leads and deals (title,
  status / stage name, responsible user) and the selected contact's timeline
  (timeline comments and to-dos of the contact and its leads / deals, plus
  its Open Lines messages) from the Bitrix24 sandbox's ``GET /_state?account=``;
  answers in the contact's Open Lines chat (``POST /_reply``; a
  contact without one is CRM-only: the page says so and sends nothing);
  converts or junks an open lead (``POST /_lead_status``: ``CONVERTED`` /
  ``JUNK``) and closes an open deal as won / lost (``POST /_deal_stage``: the
  stage of the deal's pipeline with success / failure semantics).

Beside the Telegram customer, on every page, the WhatsApp customer
(``static/whatsapp.js``): a phone number and a name write to the demo
business number through the WhatsApp sandbox's ``POST /_customer`` (a
message signed as Meta signs it) and read the chat from
``/_deliveries?kind=customer`` (what the customer wrote, and whether the
bridge took it) and ``/_sent?to=`` (what the bridge sent: text, media,
templates as "template: <name> (<params>)", with the delivery ticks of the
statuses posted so far); ``/_state`` names the demo number and says when no
webhook is connected.

Under them, on every page, the MAX customer (``static/max.js``): a user id
and a name write to the demo bot through the MAX sandbox's ``POST
/_customer`` (a ``message_created`` posted to the bot's subscription with
its secret header), share a phone number with ``POST /_contact`` (the card
signed with the bot token), and read the chat from ``/_deliveries`` (what
they wrote, and whether the bridge took it) and ``/_sent?user_id=`` (what
the bot sent); ``/_state`` names the demo bot and says when no
subscription points at the bridge (or it polls).

The whole width, under the customers and the CRM, the Viber customer
(``static/viber.js``): a user id and a name write to the demo bot through
the Viber sandbox's ``POST /_customer`` (a callback signed as Viber signs
it), open the chat with ``POST /_open`` (``conversation_started``: the bot's
welcome message comes back), and read the chat from
``/_deliveries?kind=deliver``, ``/_sent?receiver=`` (with the delivered /
seen reports posted so far) and ``/_state`` (the bot, the welcome messages,
whether its webhook is set).

Under both, on every page, the e-mail client (``static/email.js``): the
customer writes a mail to the demo support address through the e-mail
sandbox's ``POST /_deliver`` (JSON form) and reads the bridge's answers in
an inbox built from ``/_sent?to=`` (the acknowledgement, the rep's replies,
their subjects with the ticket number and their threading headers) and
``/_deliveries?from=`` (the mails written); a sent mail can be answered,
threaded with In-Reply-To and References. Only text parts are shown.

Config keys (lower case; upper-case keys go to ``app.config``):

``crm``               ``"hubspot"`` | ``"amocrm"`` | ``"bitrix24"`` (default ``"hubspot"``)
``telegram_base``     Telegram sandbox URL (default ``<script_root>/telegram``)
``hubspot_base``      HubSpot sandbox URL (default ``<script_root>/hubspot``)
``amocrm_base``       amoCRM sandbox URL (default ``<script_root>/amocrm``)
``amocrm_subdomain``  the amoCRM account shown (default ``"demo"``)
``bitrix24_base``     Bitrix24 sandbox URL (default ``<script_root>/bitrix24``)
``bitrix24_portal``   the Bitrix24 portal shown (default ``"demo.bitrix24.ru"``)
``email_base``        e-mail sandbox URL (default ``<script_root>/email``)
``email_address``     the support address the e-mail client writes to
                      (default ``"support@demo.example"``, the sandbox's demo mailbox)
``whatsapp_base``     WhatsApp sandbox URL (default ``<script_root>/whatsapp``)
``viber_base``        Viber sandbox URL (default ``<script_root>/viber``)
``max_base``          MAX sandbox URL (default ``<script_root>/max``)
``poll_ms``           refresh interval of the panels (default 1500)

The sibling sandboxes are found relative to this app's mount point
(``/sandbox/telegram``, ``/sandbox/hubspot``, ``/sandbox/amocrm``,
``/sandbox/bitrix24``, ``/sandbox/email``, ``/sandbox/whatsapp`` in the demo
server) unless their base is configured.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, render_template, request

__all__ = ["create_app", "DEFAULTS", "CRMS", "CRMS_RU"]

#: the CRMs the right panel can show: crm -> its label on the page
CRMS: dict[str, str] = {"hubspot": "HubSpot", "amocrm": "amoCRM", "bitrix24": "Bitrix24"}
#: the label in the Russian text where it differs
CRMS_RU: dict[str, str] = {"bitrix24": "Битрикс24"}

DEFAULTS: dict[str, Any] = {
    "crm": "hubspot",
    "telegram_base": None,
    "hubspot_base": None,
    "amocrm_base": None,
    "amocrm_subdomain": "demo",
    "bitrix24_base": None,
    "bitrix24_portal": "demo.bitrix24.ru",
    "email_base": None,
    #: sandbox.email.DEMO_ADDRESS (not imported: the page needs no SMTP server)
    "email_address": "support@demo.example",
    "whatsapp_base": None,
    "viber_base": None,
    "max_base": None,
    "poll_ms": 1500,
}


def _settings(values: dict[str, Any]) -> dict[str, Any]:
    unknown = {k for k in values if not k.isupper()} - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown demo page config keys: {sorted(unknown)}")
    settings = dict(DEFAULTS)
    settings.update({k: v for k, v in values.items() if not k.isupper()})
    if settings["crm"] not in CRMS:
        raise ValueError(f"unknown crm {settings['crm']!r}; choose one of {', '.join(CRMS)}")
    subdomain = settings["amocrm_subdomain"]
    if not isinstance(subdomain, str) or not subdomain:
        raise ValueError("amocrm_subdomain must be a non-empty string")
    portal = settings["bitrix24_portal"]
    if not isinstance(portal, str) or not portal:
        raise ValueError("bitrix24_portal must be a non-empty string")
    address = settings["email_address"]
    if not isinstance(address, str) or "@" not in address:
        raise ValueError("email_address must be an e-mail address")
    settings["poll_ms"] = int(settings["poll_ms"])
    return settings


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the demo-page app. Upper-case keys go to ``app.config``.

    Raises ValueError for an unknown key or an unknown ``crm``."""
    values = dict(config or {})
    settings = _settings(values)

    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update({k: v for k, v in values.items() if k.isupper()})

    @app.get("/")
    def index() -> str:
        root = request.script_root
        crm = settings["crm"]
        return render_template(
            "index.html",
            crm=crm,
            crm_label=CRMS[crm],
            crm_label_ru=CRMS_RU.get(crm, CRMS[crm]),
            telegram_base=settings["telegram_base"] or f"{root}/telegram",
            crm_base=settings[f"{crm}_base"] or f"{root}/{crm}",
            amocrm_subdomain=settings["amocrm_subdomain"],
            bitrix24_portal=settings["bitrix24_portal"],
            email_base=settings["email_base"] or f"{root}/email",
            email_address=settings["email_address"],
            whatsapp_base=settings["whatsapp_base"] or f"{root}/whatsapp",
            viber_base=settings["viber_base"] or f"{root}/viber",
            max_base=settings["max_base"] or f"{root}/max",
            poll_ms=settings["poll_ms"],
        )

    return app
