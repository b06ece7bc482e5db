"""``python -m bench.email [--json] [--rounds N] [--mails N]``: the e-mail
channel's own costs, measured on this machine.

Two phases, each printed as a table and, with ``--json``, as one JSON line
of figures last:

* **parse**: every mail of the corpora (tests/fixtures/corpora/email: 137
  raw mails, 107 reply bodies, 26 talon replies; a body alone is wrapped
  in a minimal mail) through what the normaliser runs per mail —
  ``mime.parse_mail``, ``classify.classify``, ``quotes.strip_reply`` —
  ``--rounds`` times: mails/s on one core, and the classes found.
* **imap**: ``--mails`` mails (the corpora's raw mails, each with a
  Message-ID of its own) appended to a real Dovecot (Debian's
  ``dovecot-imapd``, started by the bench as the tests start it), then the
  poller's work: ``Mailbox.fetch`` from the cursor and ``journal.record``
  into a fresh SQLite journal, until the mailbox is read: mails/s and MB/s
  from the first fetch to the last commit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "corpora" / "email"


def corpus() -> list[bytes]:
    """The corpora's mails as raw bytes (reply bodies wrapped in a mail)."""
    mails: list[bytes] = []
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".eml":
            mails.append(data)
        else:
            kind = "html" if path.suffix == ".html" else "plain"
            head = (
                "From: Customer <customer@example.org>\r\nTo: support@acme.test\r\n"
                f"Subject: Re: your answer\r\nContent-Type: text/{kind}; charset=utf-8\r\n\r\n"
            )
            mails.append(head.encode() + data)
    return mails


def parse_phase(rounds: int) -> dict[str, Any]:
    from channel_adapters.email import classify, mime, quotes

    mails = corpus()
    classes: Counter[str] = Counter()
    started = time.perf_counter()
    cpu = time.process_time()
    for i in range(rounds):
        for raw in mails:
            mail = mime.parse_mail(raw)
            verdict = classify.classify(mail, raw, own_domains=("acme.test",))
            quotes.strip_reply(mail.text)
            if i == 0:
                classes[verdict.kind.value] += 1
    wall = time.perf_counter() - started
    done = len(mails) * rounds
    return {
        "mails": len(mails),
        "rounds": rounds,
        "mails_per_s": round(done / wall, 1),
        "cpu_ms_per_mail": round((time.process_time() - cpu) / done * 1000, 3),
        "classes": dict(sorted(classes.items())),
    }


def imap_phase(count: int) -> dict[str, Any]:
    from email.utils import make_msgid

    from tests.support.dovecot import Dovecot  # the tests' real server, reused

    raws = [m for m in corpus() if b"\nMessage-ID:" in m or b"\nMessage-Id:" in m][:50] or corpus()
    with Dovecot() as server, tempfile.TemporaryDirectory() as tmp:
        total = 0
        for i in range(count):
            raw = _with_message_id(raws[i % len(raws)], make_msgid(f"b{i}", "bench.test"))
            total += len(raw)
            server.append(raw)
        runtime, ref = _journal(Path(tmp))
        try:
            return _drain(server, runtime, ref, count, total)
        finally:
            runtime.close()


def _with_message_id(raw: bytes, message_id: str) -> bytes:
    lines = raw.split(b"\n")
    kept = [line for line in lines if not line.lower().startswith(b"message-id:")]
    return f"Message-ID: {message_id}\r\n".encode() + b"\n".join(kept)


def _journal(tmp: Path) -> tuple[Any, Any]:
    from bridge import admin
    from bridge.config import Settings
    from bridge.migrate import upgrade
    from bridge.pipeline.inbound import AccountRef
    from bridge.runtime import Runtime

    (tmp / "mappings").mkdir()
    (tmp / "mappings" / "m.yaml").write_text(
        "crm: hubspot\nchannels:\n  email:\n    object: none\n    timeline: note\n"
    )
    settings = Settings.from_env(
        env={
            "DATABASE_URL": f"sqlite:///{tmp / 'bridge.db'}",
            "REDIS_URL": "",
            "BRIDGE_VAR_DIR": str(tmp / "var"),
            "BRIDGE_MAPPINGS_DIR": str(tmp / "mappings"),
            "BRIDGE_PUBLIC_URL": "http://bridge.test",
        }
    )
    runtime = Runtime(settings)
    upgrade(runtime.engine)
    tenant = admin.create_tenant(runtime, slug="bench", crm_kind="hubspot", mapping="m.yaml")
    account = admin.add_channel_account(
        runtime, tenant, kind="email", credentials={}, external_id="desk@example.org"
    )
    return runtime, AccountRef(account, tenant, "email")


def _drain(server: Any, runtime: Any, ref: Any, count: int, total: int) -> dict[str, Any]:
    from bridge.model import RawDelivery
    from bridge.pipeline.inbound.journal import record
    from channel_adapters.email import mail_key
    from channel_adapters.email.adapter import _message_id
    from channel_adapters.email.imap import Mailbox, MailboxSettings

    mailbox = Mailbox(
        MailboxSettings(
            host=server.host,
            port=server.imap_port,
            security="plain",
            user=server.user,
            password=server.password,
        )
    )
    cursor: str | None = None
    stored = fetches = 0
    started = time.perf_counter()
    while stored < count:
        fetched = mailbox.fetch(cursor, 0)
        fetches += 1
        deliveries = [
            RawDelivery(mail_key(_message_id(m.raw), f"uid:{m.uidvalidity}:{m.uid}"), m.raw)
            for m in fetched.mails
        ]
        stored += record(runtime, ref, deliveries) if deliveries else 0
        cursor = fetched.cursor
        if not fetched.mails and not fetched.more:
            break
    wall = time.perf_counter() - started
    mailbox.close()
    return {
        "mails": count,
        "journaled": stored,
        "fetches": fetches,
        "seconds": round(wall, 2),
        "mails_per_s": round(stored / wall, 1),
        "mb_per_s": round(total / wall / 1e6, 2),
        "mean_kb": round(total / count / 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.email", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures last")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the corpora (default 5)")
    parser.add_argument("--mails", type=int, default=500, help="mails in the IMAP phase (500)")
    parser.add_argument("--skip-imap", action="store_true", help="the parse phase alone")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"bench": "email", "parse": parse_phase(args.rounds)}
    p = figures["parse"]
    print(f"parse + classify + strip quotes: {p['mails']} corpus mails x {p['rounds']} rounds")
    print(f"  {p['mails_per_s']:,} mails/s on one core, {p['cpu_ms_per_mail']} ms CPU per mail")
    print("  classes: " + ", ".join(f"{k} {v}" for k, v in p["classes"].items()))
    if not args.skip_imap:
        figures["imap"] = i = imap_phase(args.mails)
        print(f"IMAP fetch -> journal (Dovecot, SQLite): {i['journaled']} of {i['mails']} mails")
        print(
            f"  {i['mails_per_s']:,} mails/s, {i['mb_per_s']} MB/s, {i['fetches']} fetches, "
            f"{i['seconds']} s (mean mail {i['mean_kb']} kB)"
        )
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
