"""The custom channel: any system that speaks HTTP brings its customers'
messages in, and gets the CRM's replies back.

A website form, a call tracker, a marketplace's messenger behind some
middleware, an automation flow: as HubSpot's custom channels and Chatwoot's
API inbox, the system posts each customer message to the account's URL,
``POST /webhooks/custom/<key>``, and registers a callback URL where the
bridge posts the replies written in the CRM. Both directions are signed the
same way, by `Standard Webhooks <https://www.standardwebhooks.com/>`_
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64
HMAC-SHA256 of "<id>.<timestamp>.<body>">``, a ``whsec_`` secret, a
5-minute window), so the system can use the standard's libraries on its
side.

Inbound (the system -> the bridge), one message per request::

    {"type": "message",                      # optional; other types are recorded, ignored
     "thread_id": "order-42",                # optional: default one thread per sender
     "message_id": "m-1001",                 # optional: unique in the thread (dedupe key)
     "text": "Hello",                        # text and/or attachments
     "sent_at": "2026-12-05T10:00:00Z",      # optional, with an offset; default: received
     "reply_to": "m-1000",                   # optional
     "sender": {"id": "visitor-17",          # required: the customer's id in the system
                "name": "Anna", "email": "...", "phone": "+7...", "language": "ru",
                "page_url": "https://...", "utm": {"utm_source": "..."}},
     "attachments": [{"url": "https://...", "file_name": "a.pdf",
                      "mime_type": "application/pdf", "size": 1234}]}

The dedupe key is ``<thread_id>:<message_id>``, or the ``webhook-id`` when
there is no ``message_id``: a request sent again (a retry, a replay inside
the window) lands once.

Outbound (the bridge -> the callback URL)::

    {"type": "message.created", "timestamp": "...",
     "data": {"id": "<the bridge's message id>", "thread_id": "order-42",
              "text": "...", "attachments": [...], "reply_to": "m-1001"}}

``webhook-id`` is the bridge's message id, the same on every retry: the
receiver drops a repeat by it, so a send whose outcome is unknown (a timeout)
is simply sent again, until the receiver answers 2xx. When the account is
connected (and on ``bridge custom set-webhook``) the callback URL receives
``{"type": "endpoint.connected", "data": {"inbound_url": ...}}``: where to
post, and a check that the receiver accepts the signature.
"""

from channel_adapters.custom.adapter import CustomAdapter

__all__ = ["CustomAdapter"]
