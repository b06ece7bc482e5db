"""``python -m bench.email [--json] [--rounds N] [--mails N] [--skip-imap]
[--skip-crm] [--crm hubspot,amocrm,bitrix24] [--followups N]``: the e-mail
channel's own costs, measured on this machine.

Three phases, each printed as a table and, with ``--json``, as one JSON line
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
* **crm**: CRM calls per e-mail in an open ticket (issue 12's target:
  <= 1.1 where the CRM allows, as for messengers), for each CRM of
  ``--crm`` (default all three): a whole bridge as real processes
  (``bench.stack.Stack``: sandbox CRM, gunicorn, one worker with its
  pollers) on the CRM's demo mapping, a real Dovecot and a real SMTP server
  (aiosmtpd), the mailbox connected with ``bridge email connect`` as an
  admin does, and the sandbox's and the tenant's rate limits raised (the
  figure counts calls, not waiting). A customer's first mail opens the
  ticket (contact, ticket / lead, task, acknowledgement): ``first_mail_calls``.
  Then ``--followups`` replies in its thread (``Re:``, In-Reply-To and
  References naming the previous mail), appended one at a time, each
  waited for until ``bridge status`` counts it synced before the next (the
  "live" case of ``bench.sync``): ``calls_per_email`` = the CRM API
  requests the sandbox received (its ``/_stats``: every HTTP request, 429s
  and OAuth included; a Bitrix24 ``batch`` is one request, its commands
  reported as ``batch_commands``) / follow-ups, with ``by_route``; then 5
  more replies with a small PDF attached: ``calls_per_email_with_file``.
  Each window runs until the sandbox has seen no request for a second, so
  a call made after a mail counts as synced is in it; ``idle_calls`` are
  the requests of 3 quiet seconds before the follow-ups (background work).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
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


# -- crm: CRM calls per e-mail in an open ticket ----------------------------------------

CRMS = ("hubspot", "amocrm", "bitrix24")
ADDRESS = "support@acme.test"
#: mails with a PDF in the crm phase
FILE_MAILS = 5
#: a small, valid PDF (the integration tests' own)
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
#: the sandbox's limits raised as the e-mail integration tests raise them
SANDBOX_LIMITS: dict[str, dict[str, Any]] = {
    "hubspot": {"hubspot": {"per_10s": 2000, "search_per_s": 20}},
    "amocrm": {"amocrm": {"per_second": 100}},
    "bitrix24": {"bitrix24": {"limits": {"basic": {"drain_per_s": 100, "burst": 250}}}},
}
#: ... and the bridge's buckets for the tenant (its settings)
TENANT_LIMITS: dict[str, dict[str, Any]] = {
    "hubspot": {"rate_per_10s": 2000},
    "amocrm": {"rate_per_second": 100},
    "bitrix24": {"rate_per_second": 100, "burst": 250},
}
#: no request for this long: the bridge is done with a mail
QUIET_S = 1.0


class _Thread:
    """One customer's mail thread: each mail answers the one before."""

    sender = "anna@example.org"
    subject = "Order 42"

    def __init__(self) -> None:
        self.ids: list[str] = []

    def mail(self, text: str, *, pdf: str | None = None) -> bytes:
        msg = EmailMessage()
        msg["From"] = f"Anna <{self.sender}>"
        msg["To"] = ADDRESS
        msg["Subject"] = f"Re: {self.subject}" if self.ids else self.subject
        msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        msg["Message-ID"] = make_msgid(idstring=f"m{len(self.ids)}", domain="example.org")
        if self.ids:
            msg["In-Reply-To"] = self.ids[-1]
            msg["References"] = self.ids[-1]
        msg.set_content(text)
        if pdf:
            msg.add_attachment(PDF, maintype="application", subtype="pdf", filename=pdf)
        self.ids.append(str(msg["Message-ID"]))
        return msg.as_bytes()


def _cli(stack: Any, *args: str, **env: str) -> str:
    from bench.stack import ROOT

    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=ROOT,
        env={**stack.env(), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"bridge {' '.join(args[:2])} exited {done.returncode}: {done.stderr}")
    return done.stdout


def _tenant(stack: Any, **settings: Any) -> str:
    """The demo tenant's slug, after adding ``settings`` to its own."""
    from bridge.config import Settings
    from bridge.runtime import Runtime
    from bridge.tables import Tenant

    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.transaction() as session:
            tenant = session.get(Tenant, stack.seeded.tenant_id)
            assert tenant is not None
            tenant.settings = {**tenant.settings, **settings}
            return str(tenant.slug)
    finally:
        runtime.close()


def _wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class _Calls:
    """The CRM API requests the sandbox received, per window."""

    def __init__(self, stack: Any, crm: str) -> None:
        self.stack = stack
        self.crm = crm

    def requests(self, since: float, until: float | None = None) -> list[list[Any]]:
        from bench.report import sandbox_stats

        items = sandbox_stats(self.stack.sandbox_url, since=since, crm=self.crm)["requests"]
        return [r for r in items if until is None or r[0] <= until]

    def quiet(self, timeout: float = 30.0) -> float:
        """Wait until no request came for ``QUIET_S``; returns that moment."""
        from bench.report import sandbox_stats

        def still() -> bool:
            since = time.time() - QUIET_S
            stats = sandbox_stats(
                self.stack.sandbox_url, since=since, crm=self.crm, with_requests=False
            )
            return int(stats["total"]) == 0

        _wait(still, timeout, f"{self.crm} to be quiet", interval=0.2)
        return time.time()

    def label(self, item: list[Any]) -> str:
        # Bitrix24 names a request by its REST method; the others by HTTP method and route
        return str(item[2]) if self.crm == "bitrix24" else f"{item[1]} {item[2]}"

    def window(self, start: float, end: float, mails: int, marks: list[float]) -> dict[str, Any]:
        """Figures of [start, end] for ``mails`` mails appended at ``marks``."""
        from bench.report import rnd

        items = self.requests(start, end)
        per_mail = [
            sum(1 for r in items if t <= r[0] < (marks[i + 1] if i + 1 < len(marks) else end))
            for i, t in enumerate(marks)
        ]
        out: dict[str, Any] = {
            "requests": len(items),
            "per_email": rnd(len(items) / mails) if mails else None,
            "by_route": dict(Counter(self.label(r) for r in items).most_common()),
            "by_status": dict(Counter(str(r[3]) for r in items)),
            # how many mails cost n requests (n -> mails)
            "requests_per_mail": {str(k): v for k, v in sorted(Counter(per_mail).items())},
            "seconds": rnd(end - start),
        }
        if self.crm == "bitrix24":
            commands = Counter(c for r in items for c in (r[4] if len(r) > 4 and r[4] else []))
            out["batch_commands"] = dict(commands.most_common())
            # REST methods run: a batch's commands, every other request itself
            methods = sum(len(r[4]) if len(r) > 4 and r[4] else 1 for r in items)
            out["methods_per_email"] = rnd(methods / mails) if mails else None
        return out


def crm_phase(crm: str, followups: int, log: Callable[[str], None]) -> dict[str, Any]:
    from bench.stack import Stack
    from tests.support.dovecot import Dovecot, dovecot_available
    from tests.support.smtp_server import smtp_server

    if not dovecot_available():
        raise RuntimeError("dovecot-imapd is needed (make apt-deps installs it)")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-email-{crm}-"))
    with Dovecot() as mailbox, smtp_server(users={mailbox.user: mailbox.password}) as outgoing:
        stack = Stack(
            workdir,
            crm=crm,
            sandbox_config=SANDBOX_LIMITS[crm],
            workers=1,
            env_overrides={"BRIDGE_POLL_TIMEOUT": "5"},
        )
        try:
            log(f"[{crm}] starting the stack in {workdir}")
            stack.start()
            out = _connect_and_measure(stack, crm, mailbox, outgoing, followups, log)
        except BaseException:
            log(f"[{crm}] failed; the stack's logs are kept in {workdir}")
            raise
        finally:
            stack.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def _connect_and_measure(
    stack: Any, crm: str, mailbox: Any, outgoing: Any, followups: int, log: Callable[[str], None]
) -> dict[str, Any]:
    slug = _tenant(stack, **TENANT_LIMITS[crm])
    _cli(
        stack,
        "email", "connect",
        "--tenant", slug,
        "--address", ADDRESS,
        "--user", mailbox.user,
        "--password-env", "SUPPORT_MAIL_PASSWORD",
        "--imap-host", mailbox.host,
        "--imap-port", str(mailbox.imap_port),
        "--imap-security", "plain",
        "--smtp-host", outgoing.host,
        "--smtp-port", str(outgoing.port),
        "--smtp-security", "plain",
        "--from-name", "Acme Support",
        SUPPORT_MAIL_PASSWORD=mailbox.password,
    )  # fmt: skip
    calls = _Calls(stack, crm)
    thread = _Thread()
    synced = 0

    def send(raw: bytes) -> float:
        """Append a mail; wait until it is synced. Returns when it was appended."""
        nonlocal synced
        appended = time.time()
        mailbox.append(raw)
        synced += 1
        want = synced

        def done() -> bool:
            status = stack.bridge_status()
            return int(status["messages"]["in"].get("synced", 0)) >= want

        _wait(done, 90, f"mail {want} to sync")
        return appended

    calls.quiet(60)  # the seeding's and the connection's own calls are over
    log(f"[{crm}] the first mail (a new ticket)")
    t0 = send(thread.mail("Where is my order 42? It was due on Monday."))
    _wait(lambda: len(outgoing.messages) >= 1, 60, "the acknowledgement")
    first = calls.window(t0, calls.quiet(), 1, [t0])
    t_idle = time.time()
    time.sleep(3.0)
    idle = len(calls.requests(t_idle, time.time()))

    log(f"[{crm}] {followups} follow-ups, one at a time")
    marks = [
        send(thread.mail(f"Any news on order 42? (follow-up {i + 1})")) for i in range(followups)
    ]
    live = calls.window(marks[0], calls.quiet(), followups, marks) if followups else {}

    log(f"[{crm}] {FILE_MAILS} follow-ups with a PDF, one at a time")
    marks = [
        send(thread.mail(f"The receipt is attached ({i + 1}).", pdf=f"receipt-{i + 1}.pdf"))
        for i in range(FILE_MAILS)
    ]
    files = calls.window(marks[0], calls.quiet(), FILE_MAILS, marks)
    acks = len(outgoing.messages)
    return {
        "followups": followups,
        "calls_per_email": live.get("per_email"),
        "by_route": live.get("by_route", {}),
        "followup_window": live,
        "first_mail_calls": first["requests"],
        "first_mail": first,
        "file_mails": FILE_MAILS,
        "calls_per_email_with_file": files["per_email"],
        "with_file": files,
        "idle_calls": idle,
        "mails_sent_by_bridge": acks,
    }


def print_crm(crm: str, c: dict[str, Any]) -> None:
    from bench.report import table

    windows = [
        ("first", c["first_mail"]),
        ("follow-up", c["followup_window"]),
        ("with PDF", c["with_file"]),
    ]
    routes: list[str] = []
    for _, w in windows:
        routes += [r for r in w.get("by_route", {}) if r not in routes]
    rows: list[list[Any]] = [
        [route, *(w.get("by_route", {}).get(route, 0) for _, w in windows)] for route in routes
    ]
    rows.append(["requests", *(w.get("requests", 0) for _, w in windows)])
    rows.append(["requests per e-mail", *(w.get("per_email") for _, w in windows)])
    if crm == "bitrix24":
        rows.append(["REST methods per e-mail", *(w.get("methods_per_email") for _, w in windows)])
    title = (
        f"CRM calls per e-mail in an open ticket, {crm}: the first mail, "
        f"{c['followups']} follow-ups one at a time, {c['file_mails']} with a PDF"
    )
    print(table(title, ["route", "first", "follow-up", "with PDF"], rows))
    if crm == "bitrix24":
        for name, w in windows:
            commands = ", ".join(f"{k} {v}" for k, v in w.get("batch_commands", {}).items())
            print(f"  batch commands, {name}: {commands or 'none'}")
    statuses = Counter[str]()
    for _, w in windows:
        statuses.update(w.get("by_status", {}))
    print(
        f"  statuses: {dict(sorted(statuses.items()))}; {c['idle_calls']} requests in 3 idle s; "
        f"{c['mails_sent_by_bridge']} mail(s) sent by the bridge (the acknowledgement)"
    )


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.email", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures last")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the corpora (default 5)")
    parser.add_argument("--mails", type=int, default=500, help="mails in the IMAP phase (500)")
    parser.add_argument("--skip-imap", action="store_true", help="leave the IMAP phase out")
    parser.add_argument("--skip-crm", action="store_true", help="leave the CRM phase out")
    parser.add_argument(
        "--crm",
        default=",".join(CRMS),
        help="the CRMs of the CRM phase, comma-separated (default: all three)",
    )
    parser.add_argument(
        "--followups", type=int, default=20, help="follow-ups in the CRM phase (default 20)"
    )
    args = parser.parse_args(argv)
    crms = [c.strip() for c in args.crm.split(",") if c.strip()]
    unknown = sorted(set(crms) - set(CRMS))
    if unknown:
        parser.error(f"unknown CRM(s): {', '.join(unknown)} (one of {', '.join(CRMS)})")
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
    if not args.skip_crm:
        figures["crm"] = {}
        for crm in crms:
            figures["crm"][crm] = c = crm_phase(crm, args.followups, _log)
            print_crm(crm, c)
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
