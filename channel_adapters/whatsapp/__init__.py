"""The WhatsApp Cloud API channel (Meta), corpora FACTS §2.

Inbound: one Meta app posts every connected number's events to
``/webhooks/whatsapp/app`` (``GET``: the ``hub.verify_token`` handshake;
``POST``: ``X-Hub-Signature-256`` with the App Secret), routed by
``metadata.phone_number_id``; each message, status and other change is its
own journal row (:mod:`.inbound`). Outbound: ``POST
/v{N}/{phone-number-id}/messages`` with the number's bearer token
(:mod:`.outbound`, :mod:`.client`), inside the 24-hour customer-service
window or as the mapping's template outside it.
"""

from channel_adapters.whatsapp.adapter import WhatsAppAdapter

__all__ = ["WhatsAppAdapter"]
