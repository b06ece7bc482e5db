"""The e-mail channel (corpora FACTS §5): IMAP mailboxes or a raw-MIME
webhook in, SMTP out.

Modules: :mod:`.adapter` (the channel adapter: keys, classification into
events, threading hints, replies), :mod:`.mime` (RFC 5322 parsing, charsets,
HTML to text, attachments), :mod:`.quotes` (quoted history and signatures),
:mod:`.classify` (customer mail, auto-replies, bounces, complaints, read
receipts, lists, our own echoes), :mod:`.imap` (the mailbox client the
poller uses), :mod:`.smtp` (our Message-IDs, replies, the SMTP sender).
"""

from channel_adapters.email.adapter import EmailAdapter, mail_key

__all__ = ["EmailAdapter", "mail_key"]
