"""``python -m bench.webchat``: open web chat widgets held by one web
process, and a reply's way from the CRM to the browser at that load.

    python -m bench.webchat [--widgets 500] [--replies 500] [--seconds 60]
                            [--threads N] [--crm hubspot] [--database-url URL]
                            [--json] [--keep]

A fresh stack (``bench.stack``: redis-server, the sandboxes, gunicorn with
ONE worker process, two ``bridge worker`` processes) with the demo web
chat widget connected as ``bridge run`` connects it. Then, as browsers
would:

1. ``--widgets`` visitors each take a token (``POST /widget/<key>/session``)
   and write one message; the bench waits until every one is in the CRM
   (the rep needs a conversation to answer in).
2. Each visitor opens the live stream (``GET /widget/<key>/stream``, the
   widget's Server-Sent Events) and keeps it open: the server ends a
   stream after its ``stream_seconds`` and the client comes back with
   ``Last-Event-ID``, exactly as the widget does. The web worker's resident
   memory is read before the streams open and once they are all open:
   the difference per connection is what a waiting widget costs.
3. With every stream open, a rep answers ``--replies`` times in the
   sandbox CRM's conversation view (``/_reply``, which fires the CRM's
   real webhook at the bridge), spread over the visitors by four reps at
   once and over ``--seconds`` — longer than a stream lasts, so every
   stream ends and resumes from its last id while replies keep coming.
   Latency is from the moment the reply is posted to the CRM until its
   event is read from the visitor's stream: the CRM's webhook, the
   bridge storing the reply, the news on Redis, the waiting thread waking,
   its read of the thread and the bytes on the wire. Every reply must
   arrive exactly once on its visitor's stream (reconnections included).

With ``--json`` the last line on stdout is one JSON object::

    {"bench": "webchat", "crm", "database", "web_threads", "widgets",
     "streams_open", "rss_before_mb", "rss_open_mb", "kb_per_connection",
     "replies", "received", "lost", "duplicates", "reconnects",
     "latency_ms": {"p50", "p90", "p99", "max"}}
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from bench.report import emit_json, percentile, postgres_schema, rnd, table
from bench.stack import Stack


class Failed(RuntimeError):
    pass


@dataclass
class Visitor:
    index: int
    token: str
    visitor_id: str
    contact_id: str | None = None
    #: reply text -> when it was read from the stream (the first time)
    arrived: dict[str, float] = field(default_factory=dict)
    seen_seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    reconnects: int = 0
    connected: threading.Event = field(default_factory=threading.Event)


class Widget:
    """What a browser's widget does, over plain HTTP."""

    def __init__(self, base: str, key: str, origin: str, settings: dict[str, Any]) -> None:
        self.base = base
        self.key = key
        self.origin = origin
        self.settings = settings
        self._local = threading.local()

    def _session(self) -> requests.Session:
        found = getattr(self._local, "s", None)
        if found is None:
            found = self._local.s = requests.Session()
            found.headers["Origin"] = self.origin
        return found

    def visitor(self, index: int) -> Visitor:
        r = self._session().post(f"{self.base}/widget/{self.key}/session", json={}, timeout=30)
        if r.status_code != 200:
            raise Failed(f"session: {r.status_code} {r.text[:200]}")
        data = r.json()
        return Visitor(index, data["token"], data["visitor_id"])

    def write(self, visitor: Visitor, text: str) -> None:
        body: dict[str, Any] = {
            "id": secrets.token_hex(8),
            "text": text,
            "profile": {"name": f"Bench visitor {visitor.index}"},
            "context": {
                "page_url": "https://shop.example/bench",
                "page_title": "Bench",
                "language": "en",
                "timezone": "UTC",
                "utm_first": {"utm_source": "bench"},
                "utm_last": {"utm_source": "bench"},
            },
        }
        if self.settings.get("prechat") == "required":
            body["profile"]["email"] = f"bench{visitor.index}@example.org"
        if self.settings.get("consent") == "checkbox":
            body["consent"] = {
                "given": True,
                "version": str(self.settings.get("consent_version") or "1"),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "page": "https://shop.example/bench",
            }
        r = self._session().post(
            f"{self.base}/widget/{self.key}/messages",
            json=body,
            headers={"Authorization": f"Bearer {visitor.token}"},
            timeout=30,
        )
        if r.status_code != 202:
            raise Failed(f"message: {r.status_code} {r.text[:200]}")

    def stream_forever(self, visitor: Visitor, stop: threading.Event) -> None:
        """Hold the visitor's stream open, coming back with the last id
        after each end (the widget's loop), until ``stop``."""
        url = urlparse(self.base)
        last = 0
        while not stop.is_set():
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
            try:
                conn.request(
                    "GET",
                    f"/widget/{self.key}/stream?after={last}",
                    headers={
                        "Authorization": f"Bearer {visitor.token}",
                        "Origin": self.origin,
                        "Accept": "text/event-stream",
                        **({"Last-Event-ID": str(last)} if last else {}),
                    },
                )
                response = conn.getresponse()
                if response.status != 200:
                    time.sleep(1.0)
                    continue
                visitor.connected.set()
                last = self._read_events(visitor, response, last, stop)
            except (OSError, http.client.HTTPException):
                time.sleep(0.5)
            finally:
                conn.close()
            if not stop.is_set():
                visitor.reconnects += 1

    @staticmethod
    def _read_events(
        visitor: Visitor, response: http.client.HTTPResponse, last: int, stop: threading.Event
    ) -> int:
        event_id: int | None = None
        data: list[str] = []
        while not stop.is_set():
            raw = response.readline()
            if not raw:
                return last
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif line == "" and data:
                message = json.loads("\n".join(data))
                seq = int(message.get("seq") or event_id or 0)
                if seq in visitor.seen_seqs:
                    visitor.duplicates += 1
                else:
                    visitor.seen_seqs.add(seq)
                    text = str(message.get("text") or "")
                    visitor.arrived.setdefault(text, time.time())
                last = max(last, seq)
                event_id, data = None, []
        return last


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise Failed(f"no RSS for {pid}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    # PostgreSQL: a schema of the run's own (dropped after)
    with postgres_schema(args.database_url, prefix="webchat") as database_url:
        return _run(args, database_url)


def _run(args: argparse.Namespace, database_url: str | None) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-webchat-"))
    stack = Stack(
        workdir,
        database_url=database_url,
        workers=2,
        web_workers=1,
        web_threads=args.threads or args.widgets + 32,
        crm=args.crm,
        channels=("webchat",),
        env_overrides={
            # one IP here stands for many browsers: the per-IP limits are
            # raised, the per-visitor ones stay
            "WEBCHAT_SESSIONS_PER_MINUTE": "100000",
            "WEBCHAT_IP_MESSAGES_PER_MINUTE": "100000",
            "WEBCHAT_STREAM_SECONDS": "25",
        },
    )
    try:
        # inside: a stack that fails to start is stopped too (no orphaned
        # workers or redis-server left to skew the next run)
        stack.start()
        return _measure(stack, args)
    finally:
        if not args.keep:
            stack.close()


def _widget(stack: Stack) -> Widget:
    from bridge.config import Settings
    from bridge.runtime import Runtime
    from bridge.tables import ChannelAccount

    runtime = Runtime(Settings.from_env(stack.env()))
    try:
        with runtime.read_session() as session:
            account = session.get(ChannelAccount, stack.seeded.webchat_account_id)
            assert account is not None
            settings = dict(account.settings or {})
            key = account.key
    finally:
        runtime.close()
    origins = settings.get("origins") or []
    return Widget(stack.bridge_url, key, str(origins[0]), settings)


def _learn_contacts(stack: Stack, visitors: list[Visitor], timeout: float = 300.0) -> None:
    wanted = {v.visitor_id: v for v in visitors}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for contact in stack.hubspot_state()["contacts"]:
            found = wanted.get(contact["properties"].get("bridge_webchat_id"))
            if found is not None:
                found.contact_id = contact["id"]
        if all(v.contact_id for v in visitors):
            return
        time.sleep(1.0)
    missing = sum(1 for v in visitors if not v.contact_id)
    raise Failed(f"{missing} visitors never reached the CRM")


def _measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    widget = _widget(stack)
    visitors = [widget.visitor(i) for i in range(args.widgets)]
    for v in visitors:
        widget.write(v, f"Hello from visitor {v.index}")
    _learn_contacts(stack, visitors)

    web_worker = _children(stack.procs["web"].pid)[0]
    rss_before = _rss_mb(web_worker)
    stop = threading.Event()
    streams = [
        threading.Thread(target=widget.stream_forever, args=(v, stop), daemon=True)
        for v in visitors
    ]
    for thread in streams:
        thread.start()
    for v in visitors:
        if not v.connected.wait(60):
            raise Failed(f"visitor {v.index}'s stream never opened")
    time.sleep(2.0)  # every stream past its first read
    rss_open = _rss_mb(web_worker)

    posted: dict[str, tuple[Visitor, float]] = {}
    # spread over --seconds, longer than a stream lasts: every stream ends
    # and comes back with its last id while replies keep arriving
    pause = max(0.0, args.seconds * 4 / max(args.replies, 1))
    lock = threading.Lock()

    def rep(worker: int) -> None:
        session = requests.Session()
        for k in range(worker, args.replies, 4):
            v = visitors[k % len(visitors)]
            text = f"bench reply {k}"
            started = time.time()
            with lock:
                posted[text] = (v, started)
            r = session.post(
                f"{stack.sandbox_url}/{stack.crm}/_reply",
                json={"contact_id": v.contact_id, "text": text},
                timeout=60,
            )
            r.raise_for_status()
            time.sleep(pause)

    reps = [threading.Thread(target=rep, args=(w,)) for w in range(4)]
    for thread in reps:
        thread.start()
    for thread in reps:
        thread.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        text in v.arrived for text, (v, _) in posted.items()
    ):
        time.sleep(0.2)
    stop.set()

    latencies = [
        (v.arrived[text] - started) * 1000
        for text, (v, started) in posted.items()
        if text in v.arrived
    ]
    if not latencies:
        raise Failed("no reply reached a widget")
    return {
        "bench": "webchat",
        "crm": stack.crm,
        "database": "postgresql" if stack.database_url else "sqlite",
        "web_threads": stack.web_threads,
        "widgets": len(visitors),
        "streams_open": sum(1 for v in visitors if v.connected.is_set()),
        "rss_before_mb": round(rss_before, 1),
        "rss_open_mb": round(rss_open, 1),
        "kb_per_connection": round((rss_open - rss_before) * 1024 / len(visitors), 1),
        "replies": len(posted),
        "received": len(latencies),
        "lost": len(posted) - len(latencies),
        "duplicates": sum(v.duplicates for v in visitors),
        "reconnects": sum(v.reconnects for v in visitors),
        "latency_ms": {
            "p50": rnd(percentile(latencies, 50), 1),
            "p90": rnd(percentile(latencies, 90), 1),
            "p99": rnd(percentile(latencies, 99), 1),
            "max": rnd(max(latencies), 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webchat")
    parser.add_argument("--widgets", type=int, default=500)
    parser.add_argument("--replies", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=60.0, help="spread the replies over")
    parser.add_argument("--crm", default="hubspot", choices=("hubspot",))
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    result = run(args)
    lat = result["latency_ms"]
    print(
        table(
            f"Web chat: {result['widgets']} open widgets on one web process "
            f"({result['web_threads']} threads, {result['database']})",
            ["figure", "value"],
            [
                ["streams open", result["streams_open"]],
                ["web worker RSS before streams (MB)", result["rss_before_mb"]],
                ["web worker RSS with all open (MB)", result["rss_open_mb"]],
                ["memory per open connection (KB)", result["kb_per_connection"]],
                ["replies posted in the CRM", result["replies"]],
                ["replies received once", result["received"]],
                ["lost", result["lost"]],
                ["shown twice", result["duplicates"]],
                ["stream reconnects (the server ends each)", result["reconnects"]],
                ["reply CRM -> widget p50 (ms)", lat["p50"]],
                ["reply CRM -> widget p90 (ms)", lat["p90"]],
                ["reply CRM -> widget p99 (ms)", lat["p99"]],
                ["reply CRM -> widget max (ms)", lat["max"]],
            ],
        )
    )
    if args.json:
        emit_json(result)
    return 0 if result["lost"] == 0 and result["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
