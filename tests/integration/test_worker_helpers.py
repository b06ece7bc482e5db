"""``bridge worker`` keeps its helper processes alive: the sweeper (which
carries the worker's heartbeat and recovers stalled work) and the pollers
are restarted when one dies while the worker lives — a sweeper that crashed
once must not leave a live worker reported as gone by ``/healthz``."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import requests

from bench.stack import Stack, helper_role
from bench.traffic import wait_until

pytestmark = pytest.mark.integration


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: {pid: command line}."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(entry.name)] = cmdline
    return out


def _helper(worker: int, name: str) -> int | None:
    found = [p for p in _children(worker) if helper_role(p) == name]
    return found[0] if len(found) == 1 else None


def test_a_dead_sweeper_or_poller_process_is_restarted(make_stack_once) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack_once(workers=1)
    (worker,) = stack.worker_procs
    key = f"bridge:heartbeat:{socket.gethostname()}:{worker.pid}"
    assert wait_until(lambda: _helper(worker.pid, "sweeper") is not None, timeout=30)
    assert wait_until(lambda: _helper(worker.pid, "pollers") is not None, timeout=30)

    for name in ("sweeper", "pollers"):
        old = _helper(worker.pid, name)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        assert wait_until(
            lambda n=name, o=old: _helper(worker.pid, n) not in (None, o), timeout=15
        ), _children(worker.pid)
        assert f"{name} exited (code -9): restarting it" in stack.worker_log(worker)

    # the new sweeper beats for the worker: its key is written afresh
    stack.redis().delete(key)
    assert wait_until(lambda: stack.redis().exists(key) == 1, timeout=15)
    assert requests.get(f"{stack.bridge_url}/healthz", timeout=10).status_code == 200
    assert worker.poll() is None
