"""Bitrix24 CRM adapter, registry slug ``bitrix24``.

Every inbound customer message lands in Bitrix24 on the right contact and
lead or deal (a timeline comment per message, a to-do or task for the
owner), and with Open Lines (``inbox: true``, app installs only) also as a
message in Bitrix24's contact-centre chat; operators' replies there come
back through the ``OnImConnectorMessageAdd`` event. Facts are cited by
section of ``../shared/contracts/FACTS.md`` ("FACTS 2.x") or by the page of
Bitrix24's REST docs (``../shared/contracts/bitrix24/docs/``; the tests read
the copy in ``sandbox/bitrix24/spec/``).

Modules
-------
``adapter``    the contract hooks (:class:`Bitrix24Adapter`), events in,
               delivery receipts, the one-request conversation opener
``client``     both auth styles, the envelope, the error mapping (one
               place), refresh on ``401 expired_token`` only, the batch runner
``batch``      the ``batch`` builder (PHP bracket encoding, ``$result``
               references, ≤ 50 per call) and its answer (``result_error``)
``oauth``      install event verification, authorize URL, code exchange,
               rotating refresh
``contacts``   find (IM identity > phone > e-mail, one batch), create, add
``entities``   leads/deals: create, find by conversation uid, open/closed
``timeline``   comments with the bridge marker, one batch per drain, to-dos
               and tasks
``crm_adapters.freetext`` (shared) the hidden bridge marker and local times in free text
``openlines``  the connector's messages, BB-code -> text, names
``webhooks``   strict PHP-bracket form decoding, the token check, events
``setup``      events, Open Lines connector, user fields, the console's placements
``console``    the admin console as the app's page: the page's POST checked at the
               portal (``user.admin``, ``profile``, ``app.info``), ``placement.bind``
``settings``   the typed app and portal settings (``bridge.schema``)

Settings
--------
Typed, in ``settings`` (each field carries its help text and default):

:class:`~.settings.Bitrix24App`
    the deployment's app, from ``BITRIX24_<FIELD>`` in the environment
    (``BITRIX24_CLIENT_ID``, ``BITRIX24_CLIENT_SECRET`` (secret),
    ``BITRIX24_AUTH_BASE``, ``BITRIX24_PORTAL``, ``BITRIX24_ALLOWED_HOSTS``,
    ``BITRIX24_APP_CODE``, ``BITRIX24_CHANNEL_TITLE``,
    ``BITRIX24_PLACEMENT_URL``, ``BITRIX24_CONSOLE_URL``,
    ``BITRIX24_CONSOLE_PLACEMENTS``); ``client_secret`` only ever goes to
    ``auth_base``.
:class:`~.settings.Bitrix24Settings`
    one portal: what the install records (``member_id``, ``domain``,
    ``plan``, ``portal_language``, ``application_token_sha256``), what
    ``setup()`` records (``events``, ``custom_fields``, ``connectors``,
    ``connector_id``, ``placements``, and ``line`` when the admin named none) and what an
    admin may set (``line``, ``conversation_field``, ``source_id``,
    ``task_kind``, ``default_responsible_id``, ``rate_per_second``,
    ``burst``, ``openlines_crm_tracker``, ``operator_signature``,
    ``connector_prefix``, ``marker_style``).

Open Lines on or off (``inbox``), the language of the bridge's own words and
the time zone of the times in comments are the tenant mapping's: the core
hands them over as ``CrmAccountInfo.inbox`` / ``.language`` / ``.timezone``
and on each ``TimelineEntry``; they are no Bitrix24 settings.

``account.api_base`` is **not used**: each tenant's REST endpoint comes from
its credentials (the webhook URL, or ``client_endpoint`` of the install).

Credentials
-----------
Incoming webhook (CRM only, no events, no Open Lines)::

    {"type": "webhook", "url": "https://<portal>/rest/<user>/<code>/"}

App install (``install_event`` / ``exchange_code``)::

    {"type": "oauth", "access_token", "refresh_token", "expires_at",
     "client_endpoint", "server_endpoint", "member_id", "scope",
     "application_token", "domain"}

The account id of both kinds of install is the portal's ``member_id`` (an
incoming webhook's: the portal's host). ``application_token`` is a secret
(it is the proof events carry), so it lives with the encrypted credentials;
the settings keep only its SHA-256 (``application_token_sha256``), which
lets events be verified after a full OAuth re-authorisation (that path does
not deliver the token). ``expires_at`` is informational: the adapter
refreshes only after Bitrix24 answers ``401 expired_token`` (FACTS 2.5).

Replying from Bitrix24
----------------------
Operators answer in the Open Lines chat (app install with ``inbox: true``);
the reply comes back as ``OnImConnectorMessageAdd``, its BB-code turned
into plain text, and its delivery is confirmed with
``imconnector.send.status.delivery``. CRM-only tenants (incoming webhook)
have no reply path: Bitrix24 sends no events to incoming webhooks.
"""

from .adapter import Bitrix24Adapter
from .settings import Bitrix24App, Bitrix24Settings

__all__ = ["Bitrix24Adapter", "Bitrix24App", "Bitrix24Settings"]
