"""What a mailbox is connected with (typed schemas, ``bridge.schema``)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.schema import setting

__all__ = ["EmailConnect", "EmailCredentials", "EmailForm", "EmailSettings"]

SECURITY = ("tls", "starttls", "plain")


@dataclass(frozen=True)
class _Mailbox:
    """The fields the command line and the console's form share: the
    address, the login and the servers; each adds its way to the secrets."""

    address: str = setting(help="the support address customers write to (support@acme.com)")
    user: str = setting("", help="the mailbox login (IMAP, and SMTP unless an SMTP login is given)")
    imap_host: str = setting("", help="IMAP server; empty: the raw-MIME webhook receives")
    imap_port: int = setting(0, help="IMAP port (default 993 for tls, 143 otherwise)")
    imap_security: str = setting(
        "tls", choices=SECURITY, help="tls (default), starttls, or plain (explicit only)"
    )
    folder: str = setting("INBOX", help="the folder the poller reads")
    mark_seen: bool = setting(False, help="mark a mail \\Seen once it is journaled")
    move_to: str = setting("", help="move a mail to this folder once it is journaled")
    smtp_host: str = setting("", help="SMTP server for replies (default: the IMAP host)")
    smtp_port: int = setting(0, help="SMTP port (default 465 for tls, 587 otherwise)")
    smtp_security: str = setting("tls", choices=SECURITY, help="tls, starttls or plain")
    smtp_user: str = setting("", help="SMTP login (default: the mailbox login)")
    from_name: str = setting("", help="the name replies are sent under (Acme Support)")


@dataclass(frozen=True)
class EmailConnect(_Mailbox):
    """What an admin supplies. Passwords are named by the environment
    variable that holds them (``--password-env``), never typed on a command
    line (shell history). Without ``--imap-host`` the account receives
    through its raw-MIME webhook (an MTA pipe or a provider's inbound
    route) instead of a mailbox."""

    password_env: str = setting(
        "", help="the environment variable holding the mailbox password (IMAP and SMTP)"
    )
    smtp_password_env: str = setting(
        "", help="the environment variable holding the SMTP password (default: --password-env)"
    )
    webhook_secret_env: str = setting(
        "",
        help="the environment variable holding the HMAC-SHA256 key the MTA signs the raw-MIME "
        "webhook's posts with (X-Bridge-Signature: sha256=<hex>); given, every post must be signed",
    )


@dataclass(frozen=True)
class EmailForm(_Mailbox):
    """What the admin console's form asks: :class:`EmailConnect`'s fields,
    with the passwords and the webhook's key typed in (stored encrypted,
    never shown again) instead of named by environment variables."""

    password: str = setting("", secret=True, help="the mailbox password (IMAP and SMTP)")
    smtp_password: str = setting(
        "", secret=True, help="the SMTP password (default: the mailbox password)"
    )
    webhook_secret: str = setting(
        "",
        secret=True,
        help="the HMAC-SHA256 key the MTA signs the raw-MIME webhook's posts with "
        "(X-Bridge-Signature: sha256=<hex>); given, every post must be signed",
    )


@dataclass(frozen=True)
class EmailCredentials:
    """The mailbox and SMTP passwords, and the key of the raw-MIME
    webhook's HMAC header (``--webhook-secret-env``; empty: none)."""

    imap_password: str = setting("", secret=True, help="the mailbox password")
    smtp_password: str = setting("", secret=True, help="the SMTP password")
    webhook_secret: str = setting(
        "", secret=True, help="HMAC-SHA256 key of the webhook's X-Bridge-Signature header"
    )


@dataclass(frozen=True)
class EmailSettings:
    """The account's servers and behaviour."""

    mode: str = setting(
        "polling",
        choices=("polling", "webhook"),
        help="polling (the worker reads the IMAP mailbox) or webhook (an MTA posts raw mail)",
    )
    address: str = setting("", help="the support address")
    from_name: str = setting("", help="the name replies are sent under")
    imap_host: str = setting("", help="IMAP server")
    imap_port: int = setting(993, help="IMAP port")
    imap_security: str = setting("tls", choices=SECURITY, help="tls, starttls or plain")
    imap_user: str = setting("", help="IMAP login")
    folder: str = setting("INBOX", help="the folder read")
    mark_seen: bool = setting(False, help="mark journaled mail \\Seen")
    move_to: str = setting("", help="move journaled mail to this folder")
    smtp_host: str = setting("", help="SMTP server")
    smtp_port: int = setting(465, help="SMTP port")
    smtp_security: str = setting("tls", choices=SECURITY, help="tls, starttls or plain")
    smtp_user: str = setting("", help="SMTP login")
    #: the webhook refuses a request without a valid X-Bridge-Signature
    require_signature: bool = setting(False, help="refuse webhook posts without an HMAC header")
    #: a CA file to trust besides the system's (a private mail server; tests)
    ca_file: str = setting("", help="extra CA certificate file (PEM) for IMAP and SMTP")
