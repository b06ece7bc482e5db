"""Sandbox mail system: the e-mail channel's far side.

A support mailbox the bridge reads through its raw-MIME webhook and answers
through SMTP, as a mail provider with an inbound route and an SMTP relay
would serve it:

* an SMTP server (:mod:`.smtp`; aiosmtpd on a loopback port, plain, no
  AUTH) records every mail the bridge sends: envelope, raw bytes, headers,
  text and HTML parts;
* ``POST /_deliver`` plays the customer: a raw RFC 5322 message, or one the
  sandbox writes from a JSON form (Message-ID, Date, From, To), is posted to
  the mailbox's route, the bridge's ``POST /webhooks/email/<key>``, signed
  with ``X-Bridge-Signature`` when the sandbox knows the account's webhook
  secret; the bridge's answer comes back;
* ``GET /_sent[?to=]`` lists what the bridge sent, oldest first.

Routes and bodies: :mod:`.control`. The demo (``bridge run``) registers the
demo account's route with ``POST /_mailboxes`` (:mod:`sandbox.demo`).

    from sandbox.email import create_app, DEMO_ADDRESS
    app = create_app()
    sb = app.extensions["email_sandbox"]; sb.smtp.start(); sb.smtp.port
"""

from __future__ import annotations

from .app import create_app
from .control import EXTENSION, EmailSandbox
from .state import DEMO_ADDRESS, DEMO_NAME

__all__ = ["DEMO_ADDRESS", "DEMO_NAME", "EXTENSION", "EmailSandbox", "create_app"]
