"""The Viber channel: the REST bot API's callbacks in, ``send_message`` out
(corpora FACTS §4).

Registered as ``channel_adapters.viber:ViberAdapter``. Modules:

* :mod:`.adapter`  the :class:`ViberAdapter` hooks (verify, edge, parse,
  answer with the welcome message, send, connect, setup_webhook)
* :mod:`.inbound`  pure functions: the signature, the edge (one callback per
  POST, keyed by ``message_token``) and one callback -> one normalised event
* :mod:`.outbound` a reply -> ``send_message`` bodies (text parts, pictures,
  files by URL, ``tracking_data`` = our id)
* :mod:`.client`   the API call (``POST {base}/<name>`` with
  ``X-Viber-Auth-Token``) and the one mapping of Viber's statuses to the
  exception tree
* :mod:`.settings` what a bot is connected with

Inbound: one URL per bot (``/webhooks/viber/<key>``), registered by
``set_webhook`` when the bot is connected; every callback is signed with
``X-Viber-Content-Signature`` (HMAC-SHA256 of the raw body, keyed with the
bot's auth token).
"""

from channel_adapters.viber.adapter import ViberAdapter

__all__ = ["ViberAdapter"]
