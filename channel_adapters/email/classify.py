"""Who wrote this mail: a customer, or a machine (corpora FACTS §5
"Auto-replies, bounces, loops").

:func:`classify` looks at a :class:`~channel_adapters.email.mime.ParsedMail`
in a fixed order; the first rule that matches wins:

1. ``own_echo``: a Message-ID we generated (``own_message_id``), or an
   ``X-Loop`` naming one of our domains (the mail went round through us).
2. Reports by structure: RFC 3464 ``delivery-status`` -> ``bounce``; RFC 5965
   ARF ``feedback-report`` -> ``complaint``; RFC 8098 MDN
   ``disposition-notification`` -> ``read_receipt``. By the report part when
   the ``report-type`` parameter is missing or mangled (corpora mimekit
   ``messages__*.anonymized.eml``).
3. Non-RFC bounces (sisimai exists because most MTAs send them): an
   ``X-Failed-Recipients`` header, or a MAILER-DAEMON / postmaster sender
   (or a null Return-Path) with a bounce subject or text, Russian mail.ru and
   Yandex ones included.
4. ``auto_reply``: RFC 3834 ``Auto-Submitted`` other than ``no``;
   ``X-Autoreply`` / ``X-Autorespond`` / ``X-Apple-Action: VACATION``.
5. ``mailing_list``: ``List-Id`` (not our own domain's: a group alias that
   delivers customers' mail carries one), ``Precedence: list``,
   ``List-Unsubscribe`` or a list owner sender with ``Precedence: bulk``.
6. ``auto_reply`` again: ``Precedence: bulk|junk|auto_reply``,
   ``X-Auto-Response-Suppress`` with a null Return-Path, an auto-reply
   subject ("Automatic reply:", "Out of Office", "Автоответ" …; several
   corpora auto-replies carry no header at all: sisimai bsd__rfc3834-03),
   a null Return-Path alone (RFC 5321 §4.5.5: only notifications use it).
7. Otherwise ``customer``.

A bounce carries :class:`BounceInfo`: the failed recipient, RFC 3464
action and status, the diagnostic, and the Message-ID of the original
message (from its ``message/rfc822`` or ``text/rfc822-headers`` part, else a
``Message-ID:`` line quoted in the text, else in ``raw``): that is how our
own outbound mail that bounced is found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from channel_adapters.email.mime import ParsedMail, ReportPart, clean_text

__all__ = ["BounceInfo", "Classification", "MailKind", "classify"]


class MailKind(StrEnum):
    """What a mail is; only ``customer`` becomes a timeline entry."""

    CUSTOMER = "customer"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    READ_RECEIPT = "read_receipt"
    OWN_ECHO = "own_echo"
    MAILING_LIST = "mailing_list"


@dataclass(frozen=True, slots=True)
class BounceInfo:
    """A delivery failure (or delay) report about one of our mails.

    ``hard`` is a permanent failure (status 5.x.x, or a 5xx SMTP reply when
    no status is given); ``failed`` says the MTA gave up on the message,
    which a 4.x.x status with ``Action: failed`` also means (corpora flanker
    bounce__delayed.eml: "Cannot send message for 5 days")."""

    recipient: str | None
    action: str | None
    status: str | None
    diagnostic: str | None
    hard: bool
    original_message_id: str | None
    failed: bool = False
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict: ``kind``, a short ``reason`` code (safe to log), the
    bounce details, and the Message-ID of the mail a bounce, complaint or
    read receipt is about."""

    kind: MailKind
    reason: str
    bounce: BounceInfo | None = None
    original_message_id: str | None = None

    @property
    def automatic(self) -> bool:
        """Sent by a machine: never answer it (RFC 3834 §2)."""
        return self.kind is not MailKind.CUSTOMER


# -- patterns -------------------------------------------------------------------

_DAEMONS = frozenset(
    {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "maildaemon", "mdaemon"}
)
# Bounce subjects: sisimai's lhost samples (Postfix, Exim, Sendmail, qmail,
# Gmail, Office 365, Exchange, Yahoo, mail.ru, Yandex) and flanker's.
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|delivery status notification|delivery (?:status )?failure"
    r"|delivery has failed|mail delivery failed|returned mail|failure notice|mail system error"
    r"|could not send message|delayed mail|delivery delayed|bounce notification"
    r"|message not delivered|non[- ]?remis|unzustellbar|nicht zustellbar|non recapitabile"
    r"|no se puede entregar|onbestelbaar|postmaster notify"
    r"|недоставленное сообщение|не доставлено|не может быть доставлено"
    r"|уведомление о недоставке|отчет о доставке",
    re.IGNORECASE,
)
_BOUNCE_TEXT = re.compile(
    r"could not be delivered|couldn't be delivered|was not delivered|wasn't delivered"
    r"|delivery to the following recipient|following address(?:es)?\W{0,5}failed"
    r"|permanent (?:fatal )?error|user unknown|unknown user|no such user|mailbox (?:is )?full"
    r"|mailbox unavailable|recipient address rejected|message was rejected|was rejected"
    r"|undeliverable|delivery has failed|delivery failed|i'm afraid i wasn't able to deliver"
    r"|the mail system|не может быть доставлено|не доставлено|не удалось доставить",
    re.IGNORECASE,
)
_DELAY_TEXT = re.compile(
    r"delayed|still (?:being )?retried|will (?:continue|retry)|not yet been delivered"
    r"|could not send message for past|temporar",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(?:automatic reply|auto(?:matic)?[- ]?(?:reply|response|antwort)"
    r"|autoreply|autorespon\w*|away until|abwesenheitsnotiz"
    r"|out of (?:the )?office(?=\s*(?:$|[:(\-–]|reply|auto|until|till|notice|message))"
    r"|réponse automatique|respuesta automática|resposta automática|risposta automatica"
    r"|automatisch antwoord|automatiskt svar|autosvar|автоответ|автоматический ответ"
    r"|вне офиса)",
    re.IGNORECASE,
)
_PERMANENT = re.compile(
    r"permanent (?:fatal )?error|failed permanently|permanently rejected|постоянн", re.IGNORECASE
)
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"(?<!\d)([45]\d\d)(?:[ -]|$)")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MESSAGE_ID_LINE = re.compile(r"^[ \t>]*Message-I[Dd][ \t]*:[ \t]*<?([^\s<>]{1,998})>?", re.M)
_DSN_FIELD = re.compile(
    r"^[ \t]*(Final-Recipient|Original-Recipient|Action|Status|Diagnostic-Code)[ \t]*:[ \t]*(.+)$",
    re.MULTILINE | re.IGNORECASE,
)
# Where a text bounce starts quoting the original message.
_ORIGINAL_MARK = re.compile(
    r"^.{0,20}(?:copy of the message|original message|returned message|message headers follow"
    r"|below this line is a copy|undelivered message|исходное сообщение|заголовки"
    r"|bounced e-?mail)",
    re.IGNORECASE | re.MULTILINE,
)
_LIST_OWNER = re.compile(r"^(?:owner-|.+-owner@|.+-request@|.+-bounces?[+@])", re.IGNORECASE)
_TEXT_SCAN = 30000


# -- public API -------------------------------------------------------------------


def classify(
    mail: ParsedMail,
    raw: bytes | None = None,
    *,
    own_domains: Sequence[str] = (),
    own_message_id: Callable[[str], bool] | None = None,
) -> Classification:
    """Classify one parsed mail (see the module docstring for the order).

    ``raw`` (the mail's bytes) is only read to find a bounced message's
    Message-ID that the parsed parts do not show. ``own_domains`` are the
    domains we receive and send at; ``own_message_id`` says whether a
    Message-ID is one we generated.
    """
    domains = tuple(d.lower().strip(".") for d in own_domains if d)
    for rule in (_own_echo, _report, _text_bounce):
        verdict = rule(mail, raw, domains, own_message_id)
        if verdict is not None:
            return verdict
    reason = _auto_header(mail.headers)
    if reason:
        return Classification(MailKind.AUTO_REPLY, reason)
    reason = _mailing_list(mail.headers, domains)
    if reason:
        return Classification(MailKind.MAILING_LIST, reason)
    reason = _auto_hint(mail)
    if reason:
        return Classification(MailKind.AUTO_REPLY, reason)
    return Classification(MailKind.CUSTOMER, "customer")


# -- rules -------------------------------------------------------------------------


def _own_echo(
    mail: ParsedMail,
    raw: bytes | None,
    domains: tuple[str, ...],
    own_message_id: Callable[[str], bool] | None,
) -> Classification | None:
    if own_message_id is not None and mail.message_id and own_message_id(mail.message_id):
        return Classification(MailKind.OWN_ECHO, "own-message-id")
    loop = mail.headers.get("x-loop", "").lower()
    if loop and any(_names_domain(loop, d) for d in domains):
        return Classification(MailKind.OWN_ECHO, "x-loop")
    return None


def _report(
    mail: ParsedMail,
    raw: bytes | None,
    domains: tuple[str, ...],
    own_message_id: Callable[[str], bool] | None,
) -> Classification | None:
    kinds = {r.kind for r in mail.reports}
    rtype = mail.report_type if mail.content_type == "multipart/report" else None
    if rtype == "feedback-report" or "message/feedback-report" in kinds:
        return Classification(MailKind.COMPLAINT, "arf", original_message_id=_original_id(mail))
    if rtype == "disposition-notification" or "message/disposition-notification" in kinds:
        original = _mdn_original(mail.reports) or _original_id(mail)
        return Classification(MailKind.READ_RECEIPT, "mdn", original_message_id=original)
    if (
        rtype == "delivery-status"
        or "message/delivery-status" in kinds
        or mail.content_type == "message/delivery-status"
    ):
        info = _dsn_bounce(mail, raw)
        return Classification(MailKind.BOUNCE, "rfc3464", info, info.original_message_id)
    return None


def _text_bounce(
    mail: ParsedMail,
    raw: bytes | None,
    domains: tuple[str, ...],
    own_message_id: Callable[[str], bool] | None,
) -> Classification | None:
    if "x-failed-recipients" in mail.headers:
        reason = "x-failed-recipients"
    elif _looks_like_bounce(mail):
        reason = "mailer-daemon-text"
    else:
        return None
    info = _text_bounce_info(mail, raw)
    return Classification(MailKind.BOUNCE, reason, info, info.original_message_id)


def _looks_like_bounce(mail: ParsedMail) -> bool:
    daemon = _local_part(mail.from_addr) in _DAEMONS
    subject = bool(_BOUNCE_SUBJECT.search(mail.subject))
    text = bool(_BOUNCE_TEXT.search(_before_original(mail.text)))
    if daemon:
        return subject or text
    return _null_return_path(mail.headers) and subject and text


def _auto_header(headers: Mapping[str, str]) -> str | None:
    """RFC 3834 and the vendors' own auto-reply headers."""
    submitted = headers.get("auto-submitted", "").split("(")[0].strip().lower()
    if submitted and submitted != "no":
        return "auto-submitted"
    for name in ("x-autoreply", "x-autorespond"):
        value = headers.get(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return name
    if headers.get("x-apple-action", "").strip().lower() == "vacation":
        return "x-apple-action"
    return None


def _mailing_list(headers: Mapping[str, str], domains: tuple[str, ...]) -> str | None:
    list_id = headers.get("list-id", "").lower()
    if list_id and not any(_names_domain(list_id, d) for d in domains):
        return "list-id"
    for name in ("mailing-list", "x-mailing-list", "list-post"):
        if headers.get(name):
            return name
    precedence = headers.get("precedence", "").strip().lower()
    if precedence == "list":
        return "precedence-list"
    if precedence in ("bulk", "junk") and headers.get("list-unsubscribe"):
        return "list-unsubscribe"
    sender = headers.get("sender", "") + " " + headers.get("return-path", "")
    if precedence in ("bulk", "junk") and any(
        _LIST_OWNER.match(a) for a in _ADDRESS.findall(sender)
    ):
        return "list-sender"
    return None


def _auto_hint(mail: ParsedMail) -> str | None:
    """Weaker signs, read after the list rules."""
    precedence = mail.headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "junk", "auto_reply", "auto-reply"):
        return f"precedence-{precedence.replace('-', '_')}"
    null = _null_return_path(mail.headers)
    if null and "x-auto-response-suppress" in mail.headers:
        return "x-auto-response-suppress"
    if _AUTO_SUBJECT.search(mail.subject):
        return "subject-auto-reply"
    if null:
        return "null-return-path"
    return None


# -- bounce details ------------------------------------------------------------------


def _dsn_bounce(mail: ParsedMail, raw: bytes | None) -> BounceInfo:
    """BounceInfo from the RFC 3464 per-recipient blocks; from DSN-looking
    lines of the text when the report part was not split off (corpora
    sisimai bsd__rfc3464-04.eml has no MIME boundaries at all)."""
    blocks = [
        b
        for r in mail.reports
        if r.kind == "message/delivery-status"
        for b in r.blocks
        if "final-recipient" in b or "original-recipient" in b or "status" in b
    ]
    if not blocks:
        fields = _text_fields(mail.text)
        if not fields:
            return _text_bounce_info(mail, raw)
        blocks = [fields]
    failed = [b for b in blocks if b.get("action", "").lower().startswith("failed")]
    block = (failed or blocks)[0]
    recipients = tuple(dict.fromkeys(r for r in (_recipient(b) for b in failed or blocks) if r))
    status = _status(block.get("status", "")) or _status(block.get("diagnostic-code", ""))
    diagnostic = _diagnostic(block.get("diagnostic-code", "")) or None
    action = block.get("action", "").split()[0].lower() if block.get("action") else None
    hard = _hard(status, diagnostic or "")
    return BounceInfo(
        recipient=recipients[0] if recipients else None,
        action=action,
        status=status,
        diagnostic=diagnostic,
        hard=hard,
        original_message_id=_original_id(mail) or _quoted_id(mail, raw),
        failed=hard or action == "failed",
        recipients=recipients,
    )


def _text_bounce_info(mail: ParsedMail, raw: bytes | None) -> BounceInfo:
    """BounceInfo from a bounce written for people (Exim, qmail, Gmail,
    mail.ru, Yandex …): the first address, status code and SMTP reply before
    the quoted original."""
    head = _before_original(mail.text)
    fields = _text_fields(head)
    failed_header = mail.headers.get("x-failed-recipients", "")
    recipients = tuple(dict.fromkeys(a.lower() for a in _ADDRESS.findall(failed_header)))
    if not recipients:
        recipients = _recipients_in_text(head, mail)
    status = _status(fields.get("status", "")) or _status(head)
    diagnostic = _diagnostic(fields.get("diagnostic-code", "")) or _diagnostic_line(head)
    hard = _hard(status, diagnostic or "") or (status is None and bool(_PERMANENT.search(head)))
    action = fields.get("action", "").lower() or (
        "delayed" if _DELAY_TEXT.search(mail.subject + " " + head[:3000]) and not hard else "failed"
    )
    return BounceInfo(
        recipient=recipients[0] if recipients else None,
        action=action.split()[0] if action else None,
        status=status,
        diagnostic=diagnostic,
        hard=hard,
        original_message_id=_original_id(mail) or _quoted_id(mail, raw),
        failed=hard or action.startswith("failed"),
        recipients=recipients,
    )


def _text_fields(text: str) -> Mapping[str, str]:
    fields: dict[str, str] = {}
    for name, value in _DSN_FIELD.findall(text[:_TEXT_SCAN]):
        fields.setdefault(name.lower(), clean_text(value))
    return fields


def _recipient(block: Mapping[str, str]) -> str | None:
    value = block.get("final-recipient") or block.get("original-recipient") or ""
    found = _ADDRESS.search(value)
    return found.group(0).lower() if found else None


def _recipients_in_text(text: str, mail: ParsedMail) -> tuple[str, ...]:
    own = {mail.from_addr, *mail.to_addrs, mail.reply_to_addr}
    found = (a.lower() for a in _ADDRESS.findall(text))
    return tuple(dict.fromkeys(a for a in found if a not in own and not _is_daemon(a)))[:20]


def _status(value: str) -> str | None:
    found = _STATUS.search(value)
    return ".".join(found.groups()) if found else None


def _diagnostic(value: str) -> str:
    value = clean_text(value)
    kind, sep, rest = value.partition(";")
    if sep and kind.strip().lower() in ("smtp", "x-postfix", "x-unix", "x-local"):
        value = rest.strip()
    return value[:500]


def _diagnostic_line(text: str) -> str | None:
    for line in text.splitlines():
        if _STATUS.search(line) or _SMTP_CODE.search(line.strip()):
            cleaned = clean_text(line)
            if len(cleaned) > 3:
                return cleaned[:500]
    return None


def _hard(status: str | None, diagnostic: str) -> bool:
    if status is not None:
        return status.startswith("5")
    code = _SMTP_CODE.search(diagnostic)
    return bool(code and code.group(1).startswith("5"))


def _original_id(mail: ParsedMail) -> str | None:
    """Message-ID of the original message attached to a report."""
    for part in mail.reports:
        if part.kind in ("message/rfc822", "text/rfc822-headers"):
            for block in part.blocks:
                found = _angle_id(block.get("message-id", ""))
                if found:
                    return found
    return None


def _mdn_original(reports: tuple[ReportPart, ...]) -> str | None:
    for part in reports:
        if part.kind == "message/disposition-notification":
            for block in part.blocks:
                found = _angle_id(block.get("original-message-id", ""))
                if found:
                    return found
    return None


def _quoted_id(mail: ParsedMail, raw: bytes | None) -> str | None:
    """A ``Message-ID:`` line quoted in a text bounce (the original headers
    copied into the body: Exim, qmail, mail.ru), else one in the raw body."""
    text = mail.text[: _TEXT_SCAN * 4]
    for found in _MESSAGE_ID_LINE.finditer(text):
        candidate = found.group(1).strip("<>")
        if candidate and candidate != mail.message_id:
            return candidate
    if raw is None:
        return None
    body = raw.split(b"\n\n", 1)[-1] if b"\n\n" in raw else raw.split(b"\r\n\r\n", 1)[-1]
    for found in _MESSAGE_ID_LINE.finditer(body[: _TEXT_SCAN * 8].decode("utf-8", "replace")):
        candidate = found.group(1).strip("<>")
        if candidate and candidate != mail.message_id:
            return candidate
    return None


def _angle_id(value: str) -> str | None:
    value = clean_text(value)
    found = re.search(r"<([^<>\s]{1,998})>", value)
    if found:
        return found.group(1)
    token = value.split()[0] if value.split() else ""
    return token.strip("<>") or None


# -- helpers ---------------------------------------------------------------------------


def _before_original(text: str) -> str:
    head = text[:_TEXT_SCAN]
    found = _ORIGINAL_MARK.search(head)
    return head[: found.start()] if found else head


def _local_part(address: str | None) -> str:
    return (address or "").partition("@")[0].lower()


def _is_daemon(address: str) -> bool:
    return _local_part(address) in _DAEMONS


def _null_return_path(headers: Mapping[str, str]) -> bool:
    value = headers.get("return-path")
    return value is not None and value.replace(" ", "") in ("<>", "")


def _names_domain(text: str, domain: str) -> bool:
    """Whether an address or list id in ``text`` is at ``domain`` (or a
    subdomain of it)."""
    pattern = r"(?:^|[.@<\s])" + re.escape(domain) + r"(?:$|[>\s;,])"
    return re.search(pattern, text) is not None
