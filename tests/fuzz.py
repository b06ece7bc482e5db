"""Coverage-guided fuzzing of every webhook parser (atheris / libFuzzer).

Run ``python -m tests.fuzz --seconds N`` (``make fuzz FUZZ_SECONDS=N``): each
target fuzzes in a subprocess of its own for N seconds, then a table
(target, executions, corpus, crashes) is printed; the exit status is 1 when
any target crashed. ``--target NAME`` (repeatable) picks targets, ``--runs``
bounds executions instead of time, ``--list`` names the targets, and
``--reproduce NAME FILE`` runs one saved input again (a crash artifact).

The targets come from the providers' test kits (``tests/kits``: each kit's
``fuzz_targets()``), plus ``text_helpers``: the core's small text parsers
and every kit's (``text_helpers()``), fuzzed together. A target takes the raw
bytes as the webhook body, builds the request the way the provider sends it
(correctly signed, so that parsing is reached), and calls the adapter's
``verify`` *and* ``parse`` hooks (parse also when verify refused: both must
hold on any input). The adapter's documented errors
(:class:`bridge.errors.WebhookError`: 400/403/413/503) are expected; any
other exception, a broken invariant of the result (wrong types, an
``external_id`` that is not a non-empty string, a naive datetime) or an input
slower than ``--timeout`` seconds is a crash. Crash inputs are saved under
``var/fuzz/<target>/`` (``crash-*``, ``timeout-*``) and the growing corpus
under ``var/fuzz/<target>/corpus`` (seeded from the kits' real payloads).

No target can reach the network: the vendor calls a parser makes (a lead
re-read, ``app.info``, an OAuth server) are answered by the kits' offline
vendors (``responses``); any other URL is a connection error.

In a fuzzing child the kits, and so the adapters they drive, are imported
inside ``atheris.instrument_imports`` (coverage feedback for the bridge's
packages and a target's ``instrument`` packages); nothing here imports them
at module import.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.kits.base import FuzzTarget

ROOT = Path(__file__).resolve().parent.parent
WORKDIR = ROOT / "var" / "fuzz"
#: the packages whose code the fuzzer measures coverage of (a target adds
#: its ``instrument`` packages: a library that is half of its parser)
INSTRUMENTED = ["bridge", "channel_adapters", "crm_adapters"]


# --------------------------------------------------------------------------
# the targets: the kits' and the text helpers
# --------------------------------------------------------------------------

CORE_TEXT_SEEDS = (b"+44 20 7946 0123", b"8 (916) 123-45-67", b"+7 999 000-11-02")
CORE_TEXT_TOKENS = frozenset({b"+", b"(", b")", b"-", b"8", b"7"})


def _core_text(data: bytes) -> None:
    from bridge.identity import normalize_phone
    from tests.kits.common import BrokenInvariant

    phone = normalize_phone(data.decode("utf-8", "replace"))
    if phone is not None and not re.fullmatch(r"\+[0-9]{2,17}", phone):
        raise BrokenInvariant(f"normalize_phone -> {phone!r}")


@cache
def targets() -> dict[str, FuzzTarget]:
    """Every target by name: the kits' (in the registries' order), then
    ``text_helpers``."""
    from tests import kits
    from tests.kits.base import FuzzTarget

    found: dict[str, FuzzTarget] = {}
    for kit in kits.all_kits():
        for target in kit.fuzz_targets():
            assert target.name not in found, f"two fuzz targets named {target.name}"
            found[target.name] = target
    helpers = [h for h in (kit.text_helpers() for kit in kits.all_kits()) if h is not None]

    def run(data: bytes) -> None:
        _core_text(data)
        for helper in helpers:
            helper.check(data)

    seeds = list(CORE_TEXT_SEEDS) + [seed for h in helpers for seed in h.seeds]
    tokens = set(CORE_TEXT_TOKENS).union(*(h.tokens for h in helpers))
    found["text_helpers"] = FuzzTarget(
        "text_helpers",
        "the small text parsers: phones and every provider's helpers (markers, deep links...)",
        run,
        lambda: list(seeds),
        lambda _seeds: set(tokens),
    )
    return found


@contextlib.contextmanager
def offline_vendors() -> Iterator[Any]:
    """The kits' offline vendors, for the duration (a ``responses`` mock)."""
    from tests import kits
    from tests.kits.common import offline

    with offline(vendor for kit in kits.all_kits() for vendor in kit.vendors()) as mock:
        yield mock


# --------------------------------------------------------------------------
# the fuzzing child (one target, inside atheris)
# --------------------------------------------------------------------------


def _dict_line(token: bytes) -> str:
    out = []
    for byte in token:
        char = chr(byte)
        if char in '\\"':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02X}")
    return '"' + "".join(out) + '"'


def prepare(target: FuzzTarget, workdir: Path) -> tuple[Path, Path]:
    """The target's corpus folder (seeded) and libFuzzer dictionary."""
    corpus = workdir / target.name / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = target.seeds()
    for seed in seeds:
        path = corpus / ("seed-" + hashlib.sha1(seed).hexdigest())  # noqa: S324 (a file name)
        if not path.exists():
            path.write_bytes(seed)
    dictionary = workdir / target.name / "tokens.dict"
    lines = sorted(_dict_line(t) for t in target.tokens(seeds) if 0 < len(t) <= 64)
    dictionary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpus, dictionary


def child(name: str, args: argparse.Namespace, *, instrument: bool = True) -> None:
    import atheris

    if instrument:  # the kits and the adapters they load, instrumented
        with atheris.instrument_imports(include=INSTRUMENTED + list(args.instrument or [])):
            target = targets()[name]
    else:
        target = targets()[name]
    workdir = Path(args.workdir)
    logging.disable(logging.CRITICAL)  # the adapters' warnings would drown libFuzzer's
    corpus, dictionary = prepare(target, workdir)
    vendors = offline_vendors()
    mock = vendors.__enter__()  # for the process's life: atheris.Fuzz() never returns

    def run(data: bytes) -> None:
        try:
            target.run(data)
        finally:
            mock.calls.reset()  # responses keeps every call: not for millions of runs

    run(b"")  # the adapters are built before the clock starts
    flags = [
        "-print_final_stats=1",
        f"-artifact_prefix={workdir / name}/",
        f"-dict={dictionary}",
        f"-timeout={args.timeout}",
        "-rss_limit_mb=2048",
        "-max_len=8192",
    ]
    if args.reproduce:
        argv = [sys.argv[0], *flags, args.reproduce]
    elif args.runs:
        argv = [sys.argv[0], *flags, f"-runs={args.runs}", str(corpus)]
    else:
        argv = [sys.argv[0], *flags, f"-max_total_time={args.seconds}", str(corpus)]
    atheris.Setup(argv, run)
    atheris.Fuzz()


# --------------------------------------------------------------------------
# the driver (one subprocess per target, then the table)
# --------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    wall: float  # seconds, start-up (instrumenting the imports) included
    execs: int | None
    corpus: int | None
    crashes: int
    status: str
    detail: str = ""
    #: libFuzzer's own figures: seconds fuzzed, executions per second, new units
    fuzzed: int | None = None
    rate: int | None = None
    new: int | None = None


def _stat(output: str, key: str) -> int | None:
    match = re.search(rf"stat::{key}:\s*(\d+)", output)
    return int(match.group(1)) if match else None


def _last_exec_line(output: str) -> int | None:
    found = re.findall(r"^#(\d+)\s", output, re.M)
    return int(found[-1]) if found else None


def _crash_detail(output: str) -> str:
    """The exception line atheris prints first ("KeyError: 0"), or
    libFuzzer's own verdict (a timeout, out of memory)."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if "Uncaught Python exception" in line:
            tail = [entry.strip() for entry in lines[index + 1 : index + 5] if entry.strip()]
            return tail[0] if tail else "?"
    for line in lines:
        if "ERROR: libFuzzer:" in line:
            return line.split("ERROR: libFuzzer:", 1)[1].strip()
    return ""


def _artifacts(output: str) -> list[str]:
    return re.findall(r"Test unit written to (\S+)", output)


def drive(name: str, args: argparse.Namespace) -> Outcome:
    command = [sys.executable, "-m", "tests.fuzz", "--child", name, "--workdir", args.workdir]
    command += ["--seconds", str(args.seconds), "--timeout", str(args.timeout)]
    for package in targets()[name].instrument:
        command += ["--instrument", package]
    if args.runs:
        command += ["--runs", str(args.runs)]
    started = time.monotonic()
    budget = (args.seconds if not args.runs else 600) + 300
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    try:
        done = subprocess.run(  # noqa: S603 (our own interpreter and module)
            command, cwd=ROOT, capture_output=True, text=True, timeout=budget, env=env
        )
    except subprocess.TimeoutExpired:
        return Outcome(name, time.monotonic() - started, None, None, 1, "hung")
    elapsed = time.monotonic() - started
    output = (done.stdout or "") + (done.stderr or "")
    log = Path(args.workdir) / name / "last-run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(output, encoding="utf-8")
    execs = _stat(output, "number_of_executed_units") or _last_exec_line(output)
    corpus = _count_corpus(Path(args.workdir) / name / "corpus")
    done_line = re.search(r"^Done \d+ runs in (\d+) second", output, re.M)
    figures = {
        "fuzzed": int(done_line.group(1)) if done_line else None,
        "rate": _stat(output, "average_exec_per_sec"),
        "new": _stat(output, "new_units_added"),
    }
    if done.returncode == 0:
        return Outcome(name, elapsed, execs, corpus, 0, "ok", **figures)
    if "No module named 'atheris'" in output:
        hint = "pip install -c constraints.txt -e '.[fuzz]'"
        return Outcome(name, elapsed, execs, corpus, 0, "no atheris", hint, **figures)
    artifacts = _artifacts(output)
    detail = _crash_detail(output)
    if artifacts:
        detail = f"{detail} -> {artifacts[0]}"
    crashes = max(1, len(artifacts))
    return Outcome(name, elapsed, execs, corpus, crashes, "CRASH", detail, **figures)


def _count_corpus(path: Path) -> int | None:
    try:
        return sum(1 for p in path.iterdir() if p.is_file())
    except OSError:
        return None


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def table(outcomes: list[Outcome]) -> str:
    head = ("target", "fuzzed s", "wall s", "execs", "execs/s", "new", "corpus", "crashes")
    head += ("status",)
    rows = [head]
    for o in outcomes:
        rows.append(
            (
                o.name,
                _num(o.fuzzed),
                f"{o.wall:.0f}",
                _num(o.execs),
                _num(o.rate),
                _num(o.new),
                _num(o.corpus),
                str(o.crashes),
                o.status,
            )
        )
    total = sum(o.execs or 0 for o in outcomes)
    crashes = sum(o.crashes for o in outcomes)
    rows.append(("total", "", "", _num(total), "", "", "", str(crashes), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    rule = "  ".join("-" * w for w in widths)
    lines.insert(1, rule)
    lines.insert(len(lines) - 1, rule)
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    parser.add_argument("--runs", type=int, default=0, help="executions per target instead")
    parser.add_argument("--target", action="append", help="repeatable (see --list)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--workdir", default=str(WORKDIR))
    parser.add_argument("--list", action="store_true", help="name the targets and stop")
    parser.add_argument("--reproduce", nargs=2, metavar=("TARGET", "FILE"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--instrument", action="append", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # first: nothing is imported before the instrumentation
        args.reproduce = None
        child(args.child, args)
        return 0
    unknown = sorted(set(args.target or ()) - set(targets()))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; see --list")
    if args.list:
        for target in targets().values():
            print(f"{target.name:24} {target.about}")
        return 0
    if args.reproduce:
        name, path = args.reproduce
        args.reproduce = path
        child(name, args, instrument=False)
        return 0
    args.reproduce = None
    outcomes = []
    for name in args.target or list(targets()):
        print(
            f"fuzzing {name} ({f'{args.runs} runs' if args.runs else f'{args.seconds} s'})",
            flush=True,
        )
        outcome = drive(name, args)
        if outcome.status != "ok":
            print(f"  {outcome.status}: {outcome.detail}", flush=True)
        outcomes.append(outcome)
    print()
    print(table(outcomes))
    failed = [o for o in outcomes if o.status != "ok"]
    if failed:
        print(f"\n{len(failed)} target(s) failed; logs in {args.workdir}/<target>/last-run.log")
        print("reproduce one input: python -m tests.fuzz --reproduce TARGET FILE")
        return 1
    return 0


def seeds_of(name: str) -> Iterator[bytes]:
    """A target's seed inputs (the property tests run every target on them)."""
    yield from targets()[name].seeds()


if __name__ == "__main__":
    sys.exit(main())
