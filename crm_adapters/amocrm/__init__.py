"""amoCRM (and Kommo) CRM adapter, registry slug ``amocrm``.

Every inbound customer message lands in amoCRM on the right contact and lead
(as a note, and/or in amoCRM's own chat window through the Chats API);
managers' replies come back through two webhooks. Facts are cited by section
of ``../shared/contracts/FACTS.md`` ("FACTS 1.x"); amoCRM publishes no
redistributable fixtures, so every payload in our tests is written by us
from those facts.

Modules
-------
``adapter``   the contract hooks (:class:`AmoCrmAdapter`)
``client``    account host, bearer token, refresh-before-expiry, 401 retry,
              the status -> exception mapping (one place), 204 = nothing found
``oauth``     authorize URL, code exchange (``referer`` -> account host),
              single-use refresh
``contacts``  find (identity > phone > e-mail), create, add what is new
``leads``     ``/leads/complex``, find by conversation uid, open or closed
``timeline``  notes (batched, with the bridge marker) and tasks
``crm_adapters.freetext`` (shared) the hidden bridge marker and local times in free text
``inbox``     chat messages through the Chats API (chat create + contact link)
``chats``     amojo request signing, the channel calls, the hook signature
``webhooks``  PHP bracket-notation decoder, account webhooks, the chat hook
``setup``     custom fields, account webhooks, the chat channel connection
``fields``    custom-field values and names

Deployment settings (``account.app``, from ``AMOCRM_<KEY>``)
--------------------------------------------------------------
``client_id``, ``client_secret``   the integration's OAuth credentials
``auth_base``      consent host (default ``https://www.amocrm.ru``)
``redirect_uri``   the integration's configured redirect URI (default: the
                   bridge's ``/oauth/amocrm/callback``)
``channel_id``, ``channel_secret``, ``bot_id``   the Chats API channel issued
                   by amoCRM support (needed only with ``inbox: true``)
``amojo_base``     Chats API host (default ``https://amojo.amocrm.ru``)
``channel_title``  the channel's title in the account (default "CRM bridge")

``account.api_base`` is a template with ``{subdomain}`` (default
``https://{subdomain}.amocrm.ru``; with the default, an account on
``*.amocrm.com`` / ``*.kommo.com`` uses its own host from ``domain``).

Tenant settings (``account.settings``)
--------------------------------------
from ``exchange_code``:
``subdomain``       the account's subdomain (from the OAuth ``referer``)
``domain``          the account host (``acme.kommo.com``), default API base only
``amo_account_id``  amoCRM's numeric account id (also the tenant's
                    ``account_id``: stable across subdomain renames)
``amojo_id``        the account's Chats API id
``redirect_uri``    the redirect URI the install used (refresh repeats it)

from ``setup()``:
``identity_fields``     channel kind -> contact field id ("Telegram ID")
``conversation_field``  lead field id holding the bridge's conversation uid
``custom_fields``       ``{"leads"|"contacts": {mapping name: field id}}``
``scope_id``            the chat channel's connection (with ``inbox``); also
                        returned as ``routes: [scope_id]``
``amo_account_id``, ``amojo_id`` (refreshed)

set by the admin / the core:
``inbox``            connect the Chats API channel (the core sets it from
                     the mapping)
``reply_marker``     notes-mode reply marker (default ``@client``;
                     ``@клиент`` is always accepted)
``rate_per_second``  request budget (default 7, FACTS 1.4)
``language``         ``en`` | ``ru``: delivery-status notes
``timezone``         IANA zone of the times in notes (the core sets it from
                     the mapping; default UTC)
``marker_style``     ``hidden`` (default) | ``visible``: how notes and tasks
                     carry the bridge marker (``visible`` where amoCRM is
                     seen dropping zero-width characters)

Credentials
-----------
``{"type": "oauth", "access_token", "refresh_token", "expires_at"}`` (plus
``account_id`` after an install), or ``{"type": "long_lived",
"access_token"}`` (no refresh; a 401 is ``AuthError``).

Replying from amoCRM
--------------------
*Chat mode* (``inbox: true``): a manager answers in amoCRM's chat window;
the channel's signed outgoing-message hook brings the reply back.

*Notes mode* — the reply-marker convention (README text)::

    To answer a customer from a lead without the chat window, add a note
    to the lead that starts with @client (or @клиент), e.g.
    "@client Yes, it ships tomorrow." The bridge sends the text after the
    marker to the customer through the channel they wrote from, and adds a
    "Reply sent / NOT delivered" service note to the lead. Notes without
    the marker stay internal. The marker can be changed per tenant
    (setting `reply_marker`).

The bridge's own notes carry a marker hidden in zero-width characters at the
end of their header (``freetext``): it finds an entry again after an
ambiguous write (notes have no custom fields) and keeps its own notes from
ever being taken for replies.
"""

from .adapter import AmoCrmAdapter

__all__ = ["AmoCrmAdapter"]
