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
``setup``      events, Open Lines connector, user fields

Deployment settings (``account.app``, from ``BITRIX24_<KEY>``)
--------------------------------------------------------------
``client_id``, ``client_secret``  the app's OAuth credentials (Market or
                   local app); ``client_secret`` only ever goes to ``auth_base``
``auth_base``      the OAuth server (default ``https://oauth.bitrix.info``;
                   the sandbox: ``http://…/sandbox/bitrix24/oauth``)
``redirect_uri``   the app's redirect URI (Bitrix24 takes it from the app's
                   settings; kept for the core's callback)
``channel_title``  the Open Lines connector's name (default "CRM bridge")
``portal``         the portal for the full-OAuth install URL (``acme.bitrix24.com``
                   or a URL); installs from the Market use the install event
``allowed_hosts``  comma-separated host globs a portal may live on besides
                   Bitrix24 cloud hosts (``<name>.bitrix24.<tld>``): on-premise
                   portals, the sandbox (``127.0.0.1:*``); HTTP is accepted
                   only for hosts named here
``app_code``       the app's ``CODE`` in ``app.info`` when it differs from
                   ``client_id`` (Market apps)
``placement_url``  the connector's settings page (``PLACEMENT_HANDLER``;
                   default: the tenant's webhook URL)

``account.api_base`` is **not used**: each tenant's REST endpoint comes from
its credentials (the webhook URL, or ``client_endpoint`` of the install).

Credentials
-----------
Incoming webhook (CRM only, no events, no Open Lines)::

    {"type": "webhook", "url": "https://<portal>/rest/<user>/<code>/"}

App install (``install_event`` / ``exchange_code``)::

    {"type": "oauth", "access_token", "refresh_token", "expires_at",
     "client_endpoint", "server_endpoint", "member_id", "scope",
     "application_token", "domain", "account_id"}

``application_token`` is a secret (it is the proof events carry), so it
lives with the encrypted credentials; the settings keep only its SHA-256
(``application_token_sha256``), which lets events be verified after a full
OAuth re-authorisation (that path does not deliver the token).
``expires_at`` is informational: the adapter refreshes only after Bitrix24
answers ``401 expired_token`` (FACTS 2.5).

Tenant settings (``account.settings``)
--------------------------------------
from the install / ``exchange_code``:
``member_id``       the portal's stable id (also the tenant's ``account_id``
                    and the rate-limit bucket key)
``domain``          the portal's host (the bucket key for webhook tenants)
``plan``            ``basic`` | ``enterprise`` (``app.info`` ``LICENSE_FAMILY``):
                    leaky bucket 50 burst / 2 per s, or 250 / 5 (FACTS 2.3)
``language``        ``en`` | ``ru`` (the install's language; the core sets it
                    from the mapping too): the bridge's own words
``application_token_sha256``  see Credentials

from ``setup()``:
``conversation_field``  where the conversation uid lives on leads/deals
                    (default ``ORIGIN_ID``, with ``ORIGINATOR_ID = crm_bridge``;
                    or a ``UF_CRM_*`` code the admin names)
``custom_fields``   ``{"lead"|"deal"|"contact": {mapping name: UF_CRM_…}}`` —
                    the user fields ``setup()`` created for mapping properties
                    that are no Bitrix24 field code themselves
``events``          the events bound to the webhook URL (app installs)
``line``            the Open Lines line id (default: the first active line
                    of ``imopenlines.config.list.get``; set it to choose)
``connectors``      ``{channel kind: connector id}`` (``crm_bridge_<kind>``)
``connector_id``    the first (or only) connector

set by the admin / the core:
``inbox``           Open Lines on (the core sets it from the mapping)
``source_id``       ``SOURCE_ID`` of contacts, leads and deals (default ``OTHER``)
``task_kind``       ``todo`` (default: ``crm.activity.todo.add``) | ``task``
                    (``tasks.task.add`` bound with ``UF_CRM_TASK``)
``rate_per_second``, ``burst``  the portal's bucket when it is not the plan's
                    (on-premise portals configure their own limits)
``default_responsible_id``  a task's responsible user when the conversation
                    has no owner (tasks require one)
``openlines_crm_tracker``  true: let Bitrix24's CRM tracker process Open
                    Lines messages (default off, ``disable_crm = Y``: the
                    bridge files them on its own contact and lead/deal)
``operator_signature``  ``keep``: a reply keeps the operator's name as a
                    plain ``Name: `` prefix; default: taken off (it becomes
                    the reply's ``author_name``)
``connector_prefix``  connector ids' prefix (default ``crm_bridge``)
``timezone``        IANA zone of the times in comments (the core sets it from
                    the mapping; default UTC)
``marker_style``    ``hidden`` (default) | ``visible``: how comments, to-dos
                    and tasks carry the bridge marker (``visible`` where
                    Bitrix24 is seen dropping zero-width characters)

Replying from Bitrix24
----------------------
Operators answer in the Open Lines chat (app install with ``inbox: true``);
the reply comes back as ``OnImConnectorMessageAdd``, its BB-code turned
into plain text, and its delivery is confirmed with
``imconnector.send.status.delivery``. CRM-only tenants (incoming webhook)
have no reply path: Bitrix24 sends no events to incoming webhooks.
"""

from .adapter import Bitrix24Adapter, OpenedConversation

__all__ = ["Bitrix24Adapter", "OpenedConversation"]
