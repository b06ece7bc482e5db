"""The VK channel: a community's Callback API in, ``messages.send`` out
(corpora FACTS §3).

Registered as ``channel_adapters.vk:VkAdapter``. Modules:

* :mod:`.adapter`  the :class:`VkAdapter` hooks (verify, edge, parse,
  answer, send, acknowledge, connect, setup_webhook, the ``callback`` listing)
* :mod:`.inbound`  pure functions: the edge (one delivery per POST, keyed
  by ``event_id``) and one event -> one normalised event (the table there)
* :mod:`.outbound` a reply -> ``messages.send`` calls (4096-character
  parts, each with its own ``random_id``; attachments as links; choices as
  an inline keyboard of callback buttons)
* :mod:`.client`   the API call (``POST {base}/method/<name>``, form-encoded)
  and the one mapping of VK's errors to the exception tree
* :mod:`.settings` what a community is connected with

Inbound: one URL per community (``/webhooks/vk/<key>``), set as a Callback
API server of API version 5.103 or later with the secret key. VK's
``confirmation`` event gets the community's confirmation string back, every
other event the plain text ``ok``.
"""

from channel_adapters.vk.adapter import VkAdapter

__all__ = ["VkAdapter"]
