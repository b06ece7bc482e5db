"""The e-mail channel: mailboxes in (IMAP poller or raw-MIME webhook),
replies out over SMTP, threads found by the core from the mail's own
threading (corpora FACTS §5).

A delivery is one raw RFC 5322 message, keyed by its Message-ID (a mail
fetched twice, or through IMAP after a UIDVALIDITY change, or also piped to
the webhook, is journaled once); a mail without one is keyed by its UID in
the mailbox, or by its bytes' SHA-256 at the webhook.

``parse`` classifies each mail (:mod:`.classify`): only a customer's mail
becomes a message; a bounce of one of our replies becomes an
:class:`~bridge.model.OutboundStatus` (the reply failed, and why), anything
else automatic is ignored with its class as the reason. A customer's mail
carries :class:`~bridge.model.ThreadHints` (our Message-IDs it answers,
its References, the plus-addressed reply address, the ticket number in its
subject) and the thread state a reply needs (the address, subject, last
Message-ID and References).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import replace
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any, ClassVar

from bridge.errors import ConfigError, PayloadError, SignatureError
from bridge.model import (
    Attachment,
    ConnectedAccount,
    IgnoredEvent,
    InboundEvent,
    InboundMessage,
    MessageKind,
    OutboundMessage,
    OutboundStatus,
    PollResult,
    Rate,
    RawDelivery,
    ReceiveMode,
    SenderProfile,
    SendResult,
    ThreadHints,
    WebhookRequest,
)
from channel_adapters.base import ChannelAdapter, Reach, ReachView
from channel_adapters.email import classify as classes
from channel_adapters.email import mime, quotes, smtp
from channel_adapters.email import reach as email_reach
from channel_adapters.email.settings import (
    EmailConnect,
    EmailCredentials,
    EmailForm,
    EmailSettings,
)

__all__ = ["EmailAdapter", "mail_key"]

KIND = "email"
#: the journal key, kept with the delivery for ``parse`` (lower case: the
#: journal keeps header names so)
KEY_HEADER = "x-bridge-delivery-key"
#: the longest key kept as it is (``messages.dedupe_key`` is 255 wide)
_MAX_KEY = 200
#: a ticket hook in a subject: ``[#T-1042]`` (Zammad-style, FACTS §5 threading)
_TICKET = re.compile(r"\[#[A-Za-z]{0,8}-?(\d{1,12})\]")
#: what a reply's References keeps (the newest ids; Gmail threads on them)
_MAX_REFERENCES = 20
#: seconds each step of the console's connection test may take (a person waits)
CHECK_TIMEOUT = 10.0


def mail_key(message_id: str | None, fallback: str) -> str:
    """The journal and dedupe key of a mail: its Message-ID (hashed when
    long), else ``fallback``."""
    if not message_id:
        return fallback
    key = f"mid:{message_id}"
    if len(key) > _MAX_KEY:
        key = "mid#" + hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()
    return key


def _thread_id(key: str) -> str:
    """A conversation key of at most 64 characters (the column's width)."""
    return "mail:" + hashlib.sha256(key.encode()).hexdigest()[:40]


class EmailAdapter(ChannelAdapter):
    """IMAP or raw-MIME in, SMTP out."""

    kind = KIND
    title = "E-mail"
    #: a mail's rating prompt is five signed links (one click rates)
    rates_by_link = True
    #: a 25 MB mail, base64-encoded attachments included, fits
    max_body = 36_000_000
    content_types = ("message/rfc822",)
    modes = (ReceiveMode.POLLING, ReceiveMode.WEBHOOK)
    #: one poll's IDLE; re-issued by the next poll, far under the 29-minute
    #: limit (RFC 2177: servers log idle clients off after 30 minutes)
    max_poll_timeout = 300.0
    #: mail servers throttle senders; a conservative default per mailbox
    send_rate = Rate(5, 1.0)
    #: an SMTP send whose outcome is unknown is never repeated blindly
    idempotent_sends = False
    #: a mail failing DMARC (the receiving MTA's Authentication-Results)
    flags: ClassVar[Mapping[str, Mapping[str, str]]] = {
        "dmarc_failed": {
            "en": "Sender not verified: the mail failed DMARC",
            "ru": "Отправитель не подтверждён: письмо не прошло проверку DMARC",
        }
    }

    Connect: ClassVar[type[Any]] = EmailConnect
    #: the console's form: the passwords typed in, not named by variables
    ConnectForm: ClassVar[type[Any] | None] = EmailForm
    Credentials: ClassVar[type[Any]] = EmailCredentials
    Settings: ClassVar[type[Any]] = EmailSettings
    #: the bridge may write first to an address (a web chat visitor's
    #: unread reply, ``bridge.pipeline.outbound.unread``)
    reaches = "email"

    @classmethod
    def reachability(cls, view: ReachView) -> Reach:
        """``bounced`` once a send to the address bounced
        (``channel_adapters.email.reach``), else the default."""
        return email_reach.reachability(view, super().reachability(view))

    @classmethod
    def open_thread(cls, address: str, subject: str) -> tuple[str, Mapping[str, Any]]:
        # one thread per address (keyed by its digest: the address itself
        # stays in the thread state, not in an id); the customer's answer
        # threads back by our Message-ID or the plus-addressed Reply-To
        digest = hashlib.sha256(address.lower().encode("utf-8")).hexdigest()[:40]
        return f"to:{digest}", {"address": address.lower(), "subject": subject}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mailbox: Any = None
        #: UIDs fetched whose journaling the next poll's cursor confirms
        self._unconfirmed: list[int] = []

    # -- connecting ------------------------------------------------------------

    @classmethod
    def connect(cls, values: EmailConnect) -> ConnectedAccount:
        """The support address is the account's id. Passwords, and the key
        the MTA signs the webhook's posts with, come from the environment
        variables named (never a command line: shell history); with a key,
        every post must be signed."""
        imap_password = _from_env(values.password_env) if values.imap_host else ""
        smtp_env = values.smtp_password_env or values.password_env
        smtp_password = _from_env(smtp_env) if smtp_env else ""
        key = _from_env(values.webhook_secret_env) if values.webhook_secret_env else ""
        return _connected(values, imap_password, smtp_password, key)

    @classmethod
    def connect_form(cls, values: EmailForm) -> ConnectedAccount:
        """The same account from the console's form, whose passwords are
        typed in (:class:`EmailForm`)."""
        if values.imap_host and not values.password:
            raise ConfigError("password: the mailbox password is needed to read it over IMAP")
        imap_password = values.password if values.imap_host else ""
        smtp_password = values.smtp_password or values.password
        return _connected(values, imap_password, smtp_password, values.webhook_secret)

    def check_connection(self) -> str:
        """Log in to the mailbox over IMAP (and open its folder) when it is
        read, and to the SMTP server when replies go through one with a
        login; nothing is read, moved or sent. The server's own words on a
        refusal (``AuthError`` for a wrong login)."""
        from channel_adapters.email import imap

        s = self.settings
        done = []
        if s.imap_host:
            mailbox = imap.Mailbox(
                imap.MailboxSettings(
                    host=s.imap_host,
                    port=s.imap_port,
                    security=s.imap_security,
                    user=s.imap_user,
                    password=self.credentials.imap_password,
                    folder=s.folder,
                    timeout=CHECK_TIMEOUT,
                    ssl_context=self._ssl_context(),
                )
            )
            messages = mailbox.check()
            done.append(f"IMAP {s.imap_host}: {s.folder} ({messages} messages)")
        if s.smtp_host:
            sender = smtp.SmtpSender(replace(self._smtp_settings(), timeout=CHECK_TIMEOUT))
            sender.check()
            login = "logged in" if s.smtp_user else "no login"
            done.append(f"SMTP {s.smtp_host}: {login}")
        if not done:
            raise NotImplementedError("this mailbox has no IMAP or SMTP server to log in to")
        return "; ".join(done)

    def setup_webhook(self, url: str) -> None:
        """Nothing to register: the admin points the MTA or the mail
        provider's inbound route at ``url``."""

    # -- the edge ----------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> None:
        """The path key names the account; an ``X-Bridge-Signature:
        sha256=<hex>`` header (HMAC-SHA256 of the body with the key given
        at connect, ``--webhook-secret-env``) is required when the account
        has a key, and refused when it has none (nothing to check it with)."""
        given = request.header("x-bridge-signature")
        if not given:
            if self.settings.require_signature:
                raise SignatureError("missing X-Bridge-Signature")
            return
        secret = str(self.credentials.webhook_secret or "").encode()
        expected = "sha256=" + hmac.new(secret, request.body, hashlib.sha256).hexdigest()
        if not secret or not hmac.compare_digest(expected.encode(), given.strip().encode()):
            raise SignatureError("X-Bridge-Signature does not match")

    def edge(self, request: WebhookRequest) -> list[RawDelivery]:
        """One mail per request; 400 for a body without a header block."""
        body = request.body
        if not _looks_like_mail(body):
            raise PayloadError("the body is not an RFC 5322 message (no header fields)")
        fallback = "sha256:" + hashlib.sha256(body).hexdigest()
        key = mail_key(_message_id(body), fallback)
        return [RawDelivery(key, body, {KEY_HEADER: key})]

    # -- parsing -----------------------------------------------------------------

    def parse(self, request: WebhookRequest) -> list[InboundEvent]:
        raw = request.body
        # the journal key the edge or the poller chose (a mail without a
        # Message-ID is keyed by its UID or bytes): the message's own key
        key = request.headers.get(KEY_HEADER) or ""
        try:
            mail = mime.parse_mail(raw)
        except mime.MailError as exc:
            raise PayloadError(str(exc)) from None
        key = key or mail_key(mail.message_id, "sha256:" + hashlib.sha256(raw).hexdigest())
        verdict = classes.classify(
            mail,
            raw,
            own_domains=(self._domain(),),
            own_message_id=lambda mid: self._ours(mid) is not None,
        )
        if verdict.kind == classes.MailKind.CUSTOMER:
            if not (mail.reply_to_addr or mail.from_addr):
                # nobody to answer and nobody to file it under (corpora:
                # flanker attached-pdf.eml, mikel/mail bad_encoded_subject.eml);
                # journaled as ignored with the reason, `bridge reparse` can
                # take it again
                return [IgnoredEvent(KIND, key, "no_sender")]
            return [self._message(mail, key, request)]
        if verdict.kind == classes.MailKind.BOUNCE and verdict.bounce is not None:
            ours = self._ours(verdict.bounce.original_message_id)
            if ours is not None:
                return [
                    OutboundStatus(
                        KIND,
                        key,
                        ours,
                        # failed: a 5.x.x, or a 4.x.x the server gave up
                        # on (Action: failed after days; flanker bounce__delayed)
                        "failed" if verdict.bounce.failed else "delayed",
                        _bounce_reason(verdict.bounce),
                    )
                ]
        return [IgnoredEvent(KIND, key, str(verdict.kind.value))]

    def _message(self, mail: Any, key: str, request: WebhookRequest) -> InboundMessage:
        sender = (mail.reply_to_addr or mail.from_addr or "").lower()
        trusted = getattr(mail.auth, "dmarc", "none") != "fail"
        text = quotes.strip_reply(mail.text or "").body.strip()
        subject = mail.subject or ""
        state = {
            "address": sender,
            "name": mail.from_name or "",
            "subject": subject,
            "last_message_id": mail.message_id or "",
            "references": _references(mail),
            "language": mail.language or "",
        }
        return InboundMessage(
            channel_kind=KIND,
            external_id=key,
            # a sender failing DMARC is never taken for the address's owner
            external_user_id=sender if trusted else f"unverified:{sender}",
            external_thread_id=_thread_id(key),
            kind=MessageKind.TEXT if not mail.attachments or text else MessageKind.DOCUMENT,
            sent_at=mail.date or request.received_at,
            text=_with_subject(subject, text),
            attachments=(
                *(_attachment(a, i) for i, a in enumerate(mail.attachments)),
                _original(request.body),
            ),
            profile=SenderProfile(
                display_name=mail.from_name or None,
                email=sender if trusted else None,
                email_verified=_proven(mail, sender),
                language=mail.language or None,
            ),
            provider_message_id=mail.message_id,
            raw={"message_id": mail.message_id, "subject": subject},
            thread_hints=self._hints(mail),
            thread_state=state,
            flag=None if trusted else "dmarc_failed",
            opens_ticket=True,
        )

    def _hints(self, mail: Any) -> ThreadHints:
        refs = [*mail.in_reply_to, *reversed(mail.references)]
        ours = tuple(dict.fromkeys(b for b in (self._ours(r) for r in refs) if b))
        keys = tuple(dict.fromkeys(mail_key(r, "") for r in refs if self._ours(r) is None))
        ticket = _TICKET.search(mail.subject or "")
        return ThreadHints(
            bridge_ids=ours,
            message_keys=tuple(k for k in keys if k),
            conversation_uid=self._plus_token(mail),
            ticket=ticket.group(1) if ticket else None,
        )

    def _plus_token(self, mail: Any) -> str | None:
        """The conversation uid of a plus-addressed reply address
        (``support+<uid>@acme.com``, RFC 5233 sub-addressing; Chatwoot's
        ``reply+<uuid>@``, FACTS §5)."""
        local, _, domain = self.settings.address.partition("@")
        pattern = re.compile(
            rf"^{re.escape(local)}\+([0-9a-f-]{{36}})@{re.escape(domain)}$", re.IGNORECASE
        )
        for address in (*mail.to_addrs, *mail.cc_addrs, *(mail.delivered_to or ())):
            found = pattern.match(address or "")
            if found:
                return found.group(1).lower()
        return None

    def _ours(self, message_id: str | None) -> str | None:
        """Our message uuid, when ``message_id`` is one we generated."""
        return smtp.own_bridge_id(message_id, self._domain())

    def _domain(self) -> str:
        return self.settings.address.partition("@")[2] or "bridge.invalid"

    # -- sending -------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        state = message.thread_state
        to = str(state.get("address") or "")
        if not to:
            from bridge.errors import PermanentError

            raise PermanentError("the conversation has no customer address to reply to")
        message_id = smtp.make_message_id(message.bridge_id, self._domain())
        local, _, domain = self.settings.address.partition("@")
        reply_to = (
            f"{local}+{message.conversation_uid}@{domain}" if message.conversation_uid else None
        )
        last = str(state.get("last_message_id") or "") or None
        refs = [str(r) for r in state.get("references") or ()]
        headers = (
            {"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"}
            if message.auto
            else {}
        )
        mail = smtp.build_reply(
            from_addr=self.settings.address,
            from_name=self.settings.from_name,
            to_addr=to,
            reply_to=reply_to,
            subject=smtp.reply_subject(str(state.get("subject") or ""), message.ticket),
            text=message.text,
            message_id=message_id,
            in_reply_to=last,
            references=refs,
            language=str(state.get("language") or "") or None,
            extra_headers=headers,
        )
        smtp.SmtpSender(self._smtp_settings()).send(mail)
        return SendResult(external_ids=(message_id,))

    def _smtp_settings(self) -> Any:
        s = self.settings
        return smtp.SmtpSettings(
            host=s.smtp_host,
            port=s.smtp_port,
            security=s.smtp_security,
            user=s.smtp_user or None,
            password=self.credentials.smtp_password or None,
            timeout=30.0,
            from_addr=s.address,
            from_name=s.from_name,
            ssl_context=self._ssl_context(),
        )

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.settings.ca_file:
            return None
        context = ssl.create_default_context()
        context.load_verify_locations(self.settings.ca_file)
        return context

    # -- the poller hook ------------------------------------------------------------

    def poll(self, cursor: str | None, timeout: float) -> PollResult:
        """Fetch what arrived after ``cursor`` (``<uidvalidity>:<uid>``),
        idling up to ``timeout`` when nothing has. The cursor given proves
        the previous poll's mails are journaled (the core stores it only
        after their commit): only then are they marked seen or moved."""
        from channel_adapters.email import imap

        mailbox = self._open_mailbox()
        confirmed = _uid_of(cursor)
        if self._unconfirmed and confirmed is not None:
            done = [u for u in self._unconfirmed if u <= confirmed]
            if done:
                # the UIDs are the cursor's UIDVALIDITY's: a renumbered
                # folder's are left alone (they may name other mails now)
                parsed = imap.parse_cursor(cursor)
                mailbox.after_journaled(done, uidvalidity=parsed[0] if parsed else None)
            self._unconfirmed = [u for u in self._unconfirmed if u > confirmed]
        fetched: imap.Fetched = mailbox.fetch(cursor, min(timeout, self.max_poll_timeout))
        keys = [mail_key(_message_id(m.raw), f"uid:{m.uidvalidity}:{m.uid}") for m in fetched.mails]
        deliveries = tuple(
            RawDelivery(key, m.raw, {KEY_HEADER: key})
            for key, m in zip(keys, fetched.mails, strict=True)
        )
        if self.settings.mark_seen or self.settings.move_to:
            self._unconfirmed.extend(m.uid for m in fetched.mails)
        return PollResult(deliveries, fetched.cursor)

    def _open_mailbox(self) -> Any:
        if self._mailbox is None:
            from channel_adapters.email import imap

            s = self.settings
            self._mailbox = imap.Mailbox(
                imap.MailboxSettings(
                    host=s.imap_host,
                    port=s.imap_port,
                    security=s.imap_security,
                    user=s.imap_user,
                    password=self.credentials.imap_password,
                    folder=s.folder,
                    mark_seen=s.mark_seen,
                    move_to=s.move_to or None,
                    timeout=30.0,
                    ssl_context=self._ssl_context(),
                )
            )
        return self._mailbox


# -- helpers ---------------------------------------------------------------------------


def _connected(
    values: EmailConnect | EmailForm, imap_password: str, smtp_password: str, webhook_secret: str
) -> ConnectedAccount:
    """The account from the command line's or the console's values, with
    the passwords and the webhook's key as they were supplied."""
    address = values.address.strip().lower()
    if "@" not in address or any(c in address for c in " \r\n<>"):
        raise ConfigError("--address must be a plain address such as support@acme.com")
    imap_port = values.imap_port or (993 if values.imap_security == "tls" else 143)
    smtp_port = values.smtp_port or (465 if values.smtp_security == "tls" else 587)
    settings = {
        "mode": "polling" if values.imap_host else "webhook",
        "address": address,
        "from_name": values.from_name,
        "imap_host": values.imap_host,
        "imap_port": imap_port,
        "imap_security": values.imap_security,
        "imap_user": values.user,
        "folder": values.folder,
        "mark_seen": values.mark_seen,
        "move_to": values.move_to,
        "smtp_host": values.smtp_host or values.imap_host,
        "smtp_port": smtp_port,
        "smtp_security": values.smtp_security,
        "smtp_user": values.smtp_user or values.user,
        "require_signature": bool(webhook_secret),
    }
    credentials = {
        "imap_password": imap_password,
        "smtp_password": smtp_password,
        "webhook_secret": webhook_secret,
    }
    return ConnectedAccount(address, credentials, settings)


def _from_env(name: str) -> str:
    value = os.environ.get(name or "", "")
    if not name or not value:
        raise ConfigError(
            f"set the environment variable {name or '(--password-env)'}: it is empty or unset"
        )
    return value


def _looks_like_mail(body: bytes) -> bool:
    """A header block: the first line is a header field (``Name: value``,
    the name of letters, digits, ``-`` and ``_`` as mail really has them;
    RFC 5322 §3.6.8 allows more, no MTA sends it), or the mbox ``From ``
    line an MTA pipe may put first."""
    first = _from_headers(body[:4000]).split(b"\n", 1)[0]
    return _FIELD.match(first) is not None or first.startswith(b"From ")


def _from_headers(raw: bytes) -> bytes:
    """``raw`` from its first header on: a UTF-8 byte-order mark and lines
    of spaces before it are skipped, as the parser skips them (corpora:
    MimeKit messages__feedback-report.txt, six flanker files). An empty
    line ends the header block (RFC 5322 §2.1): before any field, there is
    none."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    start = 0
    while start < len(raw):
        end = raw.find(b"\n", start)
        line = raw[start : len(raw) if end < 0 else end]
        if line.strip():
            return raw[start:].lstrip(b" \t")
        if end < 0 or not line.rstrip(b"\r"):
            break
        start = end + 1
    return b""


_FIELD = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9_-]{0,75}:")


def _message_id(raw: bytes) -> str | None:
    """The Message-ID from the header block alone (cheap: no body parse)."""
    head = _from_headers(raw).split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    try:
        headers = BytesHeaderParser(policy=default_policy).parsebytes(head)
        value = str(headers.get("Message-ID") or "")
    except Exception:  # noqa: BLE001 — a malformed header is the normaliser's to judge
        return None
    value = value.strip().strip("<>").strip()
    return value or None


def _proven(mail: Any, sender: str) -> bool:
    """Whether the sender's address is proven theirs: the receiving MTA's
    ``Authentication-Results`` (RFC 8601, the topmost header only:
    ``mime.AuthResults``) says ``dmarc=pass``, and the address we key the
    sender by is the ``From`` that DMARC aligned (RFC 7489 §3.1: DMARC
    checks the From domain, never ``Reply-To``). No header at all
    (``dmarc=none``), a failure, or a ``Reply-To`` elsewhere: not proven
    (corpora FACTS §5; such an address links for a rep, never merges). A
    mailbox whose own server writes no Authentication-Results leaves the
    topmost one to whoever sent the mail (docs/channels/email.md)."""
    if getattr(mail.auth, "dmarc", "none") != "pass":
        return False
    return bool(sender) and sender == (mail.from_addr or "").lower()


def _references(mail: Any) -> list[str]:
    refs = [r for r in (*mail.references, *mail.in_reply_to) if r]
    if mail.message_id:
        refs.append(mail.message_id)
    return list(dict.fromkeys(refs))[-_MAX_REFERENCES:]


def _with_subject(subject: str, text: str) -> str:
    """A new thread's timeline entry says what the mail is about."""
    if not subject:
        return text
    return f"{subject}\n\n{text}" if text else subject


def _attachment(part: Any, index: int) -> Attachment:
    """A part of the mail; its bytes (None over the size cap) are kept by
    the bridge as a file the CRM links to or fetches."""
    return Attachment(
        kind=MessageKind.PHOTO
        if (part.mime_type or "").startswith("image/")
        else MessageKind.DOCUMENT,
        file_ref=f"part:{index}",
        mime_type=part.mime_type,
        file_name=part.file_name,
        size=part.size,
        content=part.content,
    )


#: the name of the whole mail as it arrived, kept beside its parts: the
#: timeline entry shows the text without quotes and signature, the
#: original (headers, quoted history, every part) is one click away
ORIGINAL_NAME = "original.eml"


def _original(raw: bytes) -> Attachment:
    return Attachment(
        kind=MessageKind.DOCUMENT,
        file_ref="original",
        mime_type="message/rfc822",
        file_name=ORIGINAL_NAME,
        size=len(raw),
        content=raw,
    )


def _bounce_reason(bounce: Any) -> str:
    parts = [p for p in (bounce.status, bounce.diagnostic) if p]
    return ("bounced: " + " ".join(parts))[:500] if parts else "bounced"


def _uid_of(cursor: str | None) -> int | None:
    if not cursor or ":" not in cursor:
        return None
    tail = cursor.rsplit(":", 1)[1]
    return int(tail) if tail.isdigit() else None
