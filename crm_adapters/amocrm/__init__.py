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
              single-use refresh, a pasted long-lived token
``settings``  the typed settings: the integration's, one account's
``contacts``  find (identity > phone > e-mail), create, add what is new
``leads``     ``/leads/complex``, find by conversation uid, open or closed
``timeline``  notes (batched, with the bridge marker) and tasks
``crm_adapters.freetext`` (shared) the hidden bridge marker and local times in free text
``inbox``     chat messages through the Chats API (chat create + contact link)
``chats``     amojo request signing, the channel calls, the hook signature
``webhooks``  PHP bracket-notation decoder, account webhooks, the chat hook
``setup``     custom fields, account webhooks, the chat channel connection
``fields``    custom-field values and names

Settings (``settings``, typed: ``bridge.schema``)
--------------------------------------------------
:class:`~crm_adapters.amocrm.settings.AmoCrmApp` (``AmoCrmAdapter.App``) is
the deployment's integration, read from ``AMOCRM_<FIELD>``: the OAuth client
and the Chats API channel issued by amoCRM support (needed only with
``inbox: true``). :class:`~crm_adapters.amocrm.settings.AmoCrmSettings`
(``AmoCrmAdapter.Settings``) is one account: what the install records (the
account's subdomain and host, its numeric id, the redirect URI), what
``setup()`` records (field ids, the chat channel's ``scope_id``, which is
also the tenant's route) and an admin's options (reply marker, rate,
marker style). Each field says what it is (``help``).

``account.api_base`` is a template with ``{subdomain}`` (default
``https://{subdomain}.amocrm.ru``; with the default, an account on
``*.amocrm.com`` / ``*.kommo.com`` uses its own host, the ``domain``
setting). Whether a tenant also writes into amoCRM's chat window, and the
language and zone of what the bridge writes, are the mapping's
(``account.inbox`` / ``.language`` / ``.timezone``, and per entry).

Credentials
-----------
``{"type": "oauth", "access_token", "refresh_token", "expires_at"}`` from
the OAuth install, or ``{"type": "long_lived", "access_token"}`` from a
private integration's long-lived token, pasted as ``<subdomain>:<token>``
(``token_credentials``: the token names no subdomain, FACTS 1.1). A
long-lived token has no refresh: a 401 is ``AuthError``.

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
