"""The MAX messenger channel (max.ru Bot API): updates in through a webhook
subscription or long polling, ``POST /messages`` out (the contract:
corpora ``max/`` and its FACTS).

Registered as ``channel_adapters.max:MaxAdapter``. Modules:

* :mod:`.adapter`  the :class:`MaxAdapter` hooks (verify, edge, parse, poll,
  send, acknowledge, connect, setup_webhook, remove_webhook)
* :mod:`.inbound`  pure functions: one ``Update`` -> one delivery (keyed
  without an event id: MAX has none) -> one normalised event (the table there)
* :mod:`.outbound` a reply -> ``POST /messages`` steps (4000-character
  parts, one message per attachment; the inline keyboard: a menu's or
  rating's callback buttons and the contact button)
* :mod:`.client`   the API call (raw token in ``Authorization``, JSON) and
  the one mapping of MAX's errors to the exception tree; the limits
* :mod:`.settings` what a bot is connected with

Inbound: one URL per bot (``/webhooks/max/<key>``), subscribed with ``POST
/subscriptions`` and a generated secret that MAX echoes in
``X-Max-Bot-Api-Secret``; or ``GET /updates`` from the worker's poller
(``mode: polling``) for a bridge MAX cannot reach.
"""

from channel_adapters.max.adapter import MaxAdapter

__all__ = ["MaxAdapter"]
