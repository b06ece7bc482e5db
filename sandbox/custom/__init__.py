"""The custom channel's far side: a system that posts customers' messages to
the bridge and receives the CRM's replies at its callback URL, signed both
ways by Standard Webhooks (verified here with the standard's own library,
``standardwebhooks``, as a real receiver would).

Routes (relative to the mount point, ``/sandbox/custom``):

``POST /callbacks/<system>``
    The receiver: checks the signature with the system's secret (401
    ``invalid_signature``), drops a repeated ``webhook-id`` (200, counted as a
    duplicate), records ``message.created`` replies and learns the bridge's
    URL from ``endpoint.connected``. Answers ``{"ok": true, "id": "cb-<n>"}``.
    Faulted by the common fault plan (``/_faults``): ``error_rate`` answers
    503 before recording anything, ``rate_429`` a 429 with ``Retry-After``,
    ``commit_then_timeout_rate`` records then hangs (the bridge cannot tell:
    it sends again with the same ``webhook-id``).

Controls: the common ones (:mod:`sandbox.core.control`), with

``POST /_deliver``
    ``{"account"?, "sender": {"id", "name"?, ...}, "text", "thread_id"?,
    "message_id"?, "attachments"?, "sent_at"?}`` (or ``{"payload": {...}}``
    as it is), signed with the system's secret and posted to the URL the
    bridge gave in ``endpoint.connected`` (or ``"url"``). Extras for hostile
    tests: ``"webhook_id"`` (reuse one: a replay), ``"timestamp_offset"``
    (seconds: a stale or future timestamp), ``"secret"`` (sign with another).
    Answers ``{"status", "body", "webhook_id"}``.
``GET /_sent[?account=][&thread_id=]``
    The replies received, once each, in order of arrival.
``POST /_systems``
    ``{"system", "secret"}``: a system the receiver knows (a ``whsec_``
    secret).
"""

from sandbox.custom.app import DEMO_SECRET, DEMO_SYSTEM, create_app

__all__ = ["DEMO_SECRET", "DEMO_SYSTEM", "create_app"]
