"""Telegram -> CRM sync against a sandbox CRM at its documented default
limit with the bridge's default token bucket: HubSpot (the default; 100
requests per rolling 10 s, search 5/s) or amoCRM (``--crm amocrm``; 7
requests in any second on the account API, the chat host unlimited).

    python -m bench.sync [--json] [--crm hubspot|amocrm|bitrix24] [--variants a,b,c]
                         [--users 20] [--backlog-per-user 25] [--live 20]
                         [--steady-rate 2.5] [--steady-seconds 20] [--workers 2]
                         [--new-customers 200] [--only-new-customers]
                         [--timeout 300] [--database-url URL] [--keep]
    python -m bench.sync --channel whatsapp [--crm ...] [--users N] [--live N]
                         [--replies-per-user 5] [--workers 2] [--json] ...

``--channel whatsapp`` (default ``telegram``, everything below) runs the
WhatsApp phases of ``bench/sync_whatsapp.py`` instead: CRM calls per
message in an open conversation, and the number's 80/s limit used while a
backlog of rep replies drains.

About 5-6 minutes for the three variants on a 2-core machine, either CRM
(the new-customer burst adds under a minute a variant).
Not part of ``make test``: figures are printed, never asserted.

Each mapping variant (``bench/mappings``) gets a fresh stack (``bench.stack``:
redis-server, the sandboxes, gunicorn, ``bridge worker`` processes; SQLite
by default, ``--database-url`` for PostgreSQL in a throw-away schema) and
runs five phases, posting real Telegram updates to the bridge's webhook
(unique ``update_id``, the bot's secret header):

1. open: one message from each of ``--users`` new customers; wait until all
   are synced (contact, deal/lead, task, first entry). Calls per new conversation.
2. live: ``--live`` messages one at a time into those open conversations,
   each waited for until synced before the next. CRM calls per message.
3. steady: ``--steady-rate`` messages/s for ``--steady-seconds`` to random
   open conversations (below the rate limit); end-to-end latency.
4. backlog: workers stopped, ``--users`` x ``--backlog-per-user`` messages
   ingested, then ``--workers`` workers started; drain time, messages/s,
   API requests/s vs the limit, peaks, 429s.
5. new customers (``bench/sync_burst.py``): ``--new-customers`` people
   nobody has seen write at once; seconds until all are synced, CRM
   requests and searches per customer, the searches' peak per second, one
   contact per customer checked in the CRM. ``--only-new-customers`` runs
   it alone; ``--new-customers 0`` leaves it out.

Then, unless ``--no-worker-path`` (``--only-worker-path``: nothing else),
the worker-path phases on a stack of their own (``bench/sync_worker.py``):
the CPU a message costs the bridge's processes when it arrives alone, in a
5/s trickle to known contacts and among 2,000 from 200 of them, send -> CRM
write, and that load again under 10 % CRM faults (5 % 5xx, 5 % 429): its
rate against the fault-free one.

The CRM calls are counted by the sandbox itself (``GET /_stats``: every API
request it received, with its time and status), so every call counts,
whoever made it: retries and 429s included. With ``--json`` the last line on
stdout is one JSON object; its keys, the variants and what each figure
means per CRM: ``bench/sync_hubspot.py`` (HubSpot) and ``bench/sync_amocrm.py``
(amoCRM). The shared machinery is ``bench/sync_core.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.report import emit_json
from bench.sync_amocrm import AmoCrmBench
from bench.sync_bitrix24 import Bitrix24Bench
from bench.sync_burst import add_arguments as add_burst_arguments
from bench.sync_burst import render as render_burst
from bench.sync_core import CrmBench, run_variant
from bench.sync_hubspot import VARIANTS, HubSpotBench
from bench.sync_whatsapp import add_arguments as add_whatsapp_arguments
from bench.sync_worker import add_arguments as add_worker_path_arguments
from bench.sync_worker import render as render_worker_path
from bench.sync_worker import run_worker_path

__all__ = ["BENCHES", "VARIANTS", "main"]

#: --crm -> its part of the bench (``VARIANTS``: HubSpot's, as before)
BENCHES: dict[str, type[CrmBench]] = {
    "hubspot": HubSpotBench,
    "amocrm": AmoCrmBench,
    "bitrix24": Bitrix24Bench,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line of figures last")
    parser.add_argument("--crm", choices=tuple(BENCHES), default="hubspot")
    parser.add_argument(
        "--channel",
        choices=("telegram", "whatsapp"),
        default="telegram",
        help="the customers' channel (default telegram; whatsapp: bench/sync_whatsapp.py)",
    )
    parser.add_argument(
        "--variants", default="a,b,c", help="mapping variants to run (default a,b,c)"
    )
    parser.add_argument("--users", type=int, default=20, help="open conversations (default 20)")
    parser.add_argument(
        "--backlog-per-user", type=int, default=25, help="backlog messages per conversation (25)"
    )
    parser.add_argument(
        "--live", type=int, default=20, help="messages sent one at a time (default 20)"
    )
    parser.add_argument(
        "--steady-rate", type=float, default=2.5, help="steady messages/s (default 2.5)"
    )
    parser.add_argument(
        "--steady-seconds", type=float, default=20.0, help="steady phase length (default 20)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="bridge worker processes (default 2)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="give up waiting after (s)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (a fresh schema is made and dropped); default SQLite",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories (logs)")
    add_worker_path_arguments(parser)
    add_burst_arguments(parser)
    add_whatsapp_arguments(parser)
    args = parser.parse_args(argv)
    if args.channel == "whatsapp":
        from bench.sync_whatsapp import report

        return report(args)
    bench = BENCHES[args.crm]()
    header = bench.configure(args)
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = [k for k in keys if k not in bench.variants]
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {sorted(bench.variants)}")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures: dict[str, Any] = {
        "bench": "sync",
        "crm": args.crm,
        "database": "postgresql"
        if args.database_url and not args.database_url.startswith("sqlite")
        else "sqlite",
        **header,
        "workers": args.workers,
        "users": args.users,
        "steady_rate": args.steady_rate,
        "variants": {},
    }
    if args.only_worker_path:
        figures["worker_path"] = run_worker_path(args.crm, args, log)
        print(render_worker_path(figures["worker_path"]), flush=True)
        if args.json:
            emit_json(figures)
        return 0
    for key in keys:
        started = time.monotonic()
        figures["variants"][key] = run_variant(bench, bench.variants[key], args, log)
        log(f"[{key}] done in {time.monotonic() - started:.0f} s")
    if not args.only_new_customers:
        print(bench.render(figures), flush=True)
    print(render_burst(figures), flush=True)
    if not args.no_worker_path and not getattr(args, "only_new_customers", False):
        figures["worker_path"] = run_worker_path(args.crm, args, log)
        print(render_worker_path(figures["worker_path"]), flush=True)
    if args.json:
        emit_json(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
