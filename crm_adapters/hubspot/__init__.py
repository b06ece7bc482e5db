"""HubSpot CRM adapter (registry slug ``hubspot``).

Modules: ``adapter`` (the contract hooks), ``client`` (auth header, token
refresh, error mapping), ``oauth``, ``webhooks`` (v3 signature, reply
webhook), ``setup`` (custom properties, custom channel), ``timeline``
(request bodies for notes, communications and inbox messages), ``settings``
(the typed schemas of the app's and a portal's settings), ``console`` (the
app's v3-signed call for a login link to the admin console).
"""

from .adapter import HubSpotAdapter

__all__ = ["HubSpotAdapter"]
