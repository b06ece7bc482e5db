"""The web chat channel: the bridge's own chat widget on a business's site.

A hosted channel: no provider sits between the visitor and the bridge. A
page embeds ``<script src="<public url>/widget/<key>.js" async>``; the
script talks to the widget API the bridge serves itself (a Blueprint,
``/widget/<key>/...``, JSON, CORS for the widget's sites only), and the
conversation is kept by the bridge (``bridge.hosted``): what the visitor
writes is journaled like any channel's webhook delivery and reaches the
CRM; what a rep answers is the widget's to read as soon as it is stored.

Registered as ``channel_adapters.webchat:WebChatAdapter``. Modules:

* :mod:`.adapter`  the :class:`WebChatAdapter` hooks (verify, edge, parse,
  send, connect; ``blueprint``, ``commands``)
* :mod:`.api`      the widget's HTTP API and its script (the Blueprint)
* :mod:`.inbound`  the checked message and read-receipt bodies -> events
* :mod:`.tokens`   signed visitor tokens and upload references
* :mod:`.cli`      ``bridge widget create``: a widget and its snippet
* :mod:`.settings` what a widget is connected with

The widget key is public (it is in the page); a visitor's conversation is
protected by their signed visitor token, sent as ``Authorization: Bearer``.
"""

from channel_adapters.webchat.adapter import WebChatAdapter

__all__ = ["WebChatAdapter"]
