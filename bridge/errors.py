"""The bridge's exception tree.

Retry semantics travel with the exception type (as in the Singer SDK and
python-telegram-bot); adapters raise, and only the job layer decides whether
to retry, park or skip::

    BridgeError
    ├── RetryableError(retry_after=None)   transient: 5xx, 429, timeouts, connection resets
    │   ├── AmbiguousError                 the far side may have committed (read timeout
    │   │                                  after the request was sent): look up before retrying
    │   ├── NotReadyError                  the account's setup has not finished yet: wait
    │   └── PartlySentError                a split reply went out in part: send the rest
    ├── PermanentError                     a 4xx that will fail the same way again
    │   └── NotFoundError                  the referenced remote object does not exist
    ├── AuthError                          credentials rejected/expired beyond refresh:
    │                                      the tenant needs re-authorisation
    ├── SkippableError                     this item can be dropped (e.g. an update kind
    │                                      the bridge does not handle)
    └── WebhookError(status, code)         inbound request rejected; the view answers
        ├── SignatureError                 403: forged/missing/expired signature or secret
        └── PayloadError                   400/413/415: malformed body

``ConfigError`` (a bad mapping file or environment) sits outside the tree:
it is raised at start-up, never inside a job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.model import CrmRef

__all__ = [
    "AmbiguousError",
    "AuthError",
    "BridgeError",
    "ConfigError",
    "NotFoundError",
    "WindowClosedError",
    "NotReadyError",
    "PartlySentError",
    "PayloadError",
    "PermanentError",
    "RetryableError",
    "SignatureError",
    "SkippableError",
    "WebhookError",
]


class BridgeError(Exception):
    """Root of every error an adapter or the pipeline raises on purpose."""

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: HTTP status of the far side's answer, when there was one.
        self.status = status
        #: the far side's own name for the error, when it gave one (an
        #: adapter reads it back to tell, e.g., a rate-limit refusal apart)
        self.vendor_code: str | None = None
        #: what a batch hook completed before it failed (``bridge_id`` ->
        #: refs): the job records it and retries only the rest
        self.partial: dict[str, tuple[CrmRef, ...]] = {}
        #: what a one-request open made before it failed (``"contact"`` /
        #: ``"entity"`` -> ref; ``CrmAdapter.open_conversation``)
        self.created: dict[str, CrmRef] = {}
        #: entries a batch hook wrote only some steps of before it failed
        #: (``bridge_id`` -> refs of the steps written): the job keeps them
        #: and hands them back (``TimelineEntry.written``) so the retry
        #: skips those steps instead of writing them again
        self.progress: dict[str, tuple[CrmRef, ...]] = {}


class RetryableError(BridgeError):
    """A transient failure: try the same call again later.

    ``retry_after`` (seconds) is the far side's own hint (``Retry-After``,
    Telegram's ``parameters.retry_after``); ``None`` means "use backoff".
    """

    def __init__(
        self, message: str = "", *, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        #: the far side refused the request before running any of it (a
        #: rate limit's 429/503): a retry need not look anything up
        self.nothing_written = False


class NotReadyError(RetryableError):
    """The far side is not ready for this call yet: the account's setup has
    not finished (an install whose CRM-side setup still runs while the first
    messages arrive). Nothing was written; wait and try again."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.nothing_written = True


class PartlySentError(RetryableError):
    """A reply split into parts went out in part: ``sent_ids`` (the
    channel's ids of the parts delivered, in order) went out, and the next
    part was refused before it ran (flood control): the rest can be sent
    after ``retry_after`` (``OutboundMessage.sent_parts``)."""

    def __init__(
        self,
        message: str = "",
        *,
        sent_ids: tuple[str, ...],
        new_thread_id: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, status=status)
        self.sent_ids = sent_ids
        self.new_thread_id = new_thread_id


class AmbiguousError(RetryableError):
    """The request may have been committed by the far side (read timeout,
    connection reset after sending). Before repeating a write, look the
    entry up by the bridge's message id."""


class PermanentError(BridgeError):
    """The call will fail the same way every time (validation error, 4xx)."""


class WindowClosedError(PermanentError):
    """The channel refuses free-form messages to this customer now: its
    reply window (WhatsApp: 24 h after the customer last wrote) is closed.
    Only a pre-approved template can go (``OutboundMessage.template``)."""


class NotFoundError(PermanentError):
    """The remote object referenced by the call does not exist (404)."""


class AuthError(BridgeError):
    """Credentials were rejected and cannot be refreshed: re-authorise."""


class SkippableError(BridgeError):
    """This item can be acknowledged and dropped without loss."""


class WebhookError(BridgeError):
    """An inbound webhook request is rejected with a 4xx and a JSON error."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class SignatureError(WebhookError):
    """Missing, forged or expired signature / secret token."""

    status_code = 403
    code = "forbidden"


class PayloadError(WebhookError):
    """The body cannot be parsed (bad JSON, unknown shape, too large)."""

    status_code = 400
    code = "invalid_payload"


class ConfigError(Exception):
    """A configuration problem found at start-up (mapping file, environment).

    ``str()`` names the file, the key and the fix.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)
