"""Worker processes: an RQ worker (the journal's normaliser first, then
deliveries, then sync) plus the outbox sweeper and the pollers of pulled
channel accounts (``bridge.pollers``), or either of those alone.

The worker runs each job in its own process (:mod:`bridge.rqworker`: no
work-horse is forked). The sweeper and the pollers run as small processes
of their own, never as threads of the worker: a job holding the GIL or
stuck in a call must not delay the pass that recovers other conversations'
work, nor a poller's lease renewal (a late renewal hands the account to
another machine). Both, when started by ``bridge worker``, exit when their
worker dies.

``bridge worker`` forks its two helpers right after its imports, before it
opens any connection or starts a thread: each starts with the modules
already loaded instead of importing them again (about 2 s of CPU each). A
helper restarted later is started afresh (``python -m bridge.cli <name>``):
by then the worker has threads and connections a fork would copy. Helpers
name themselves ``bridge-sweeper`` and ``bridge-pollers`` (what ps and top
show, :data:`PROCESS_NAMES`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import redis

from bridge.config import Settings
from bridge.health import HEARTBEAT_TTL, beat
from bridge.jobs import QUEUES
from bridge.rqworker import InProcessWorker
from bridge.runtime import Runtime, set_runtime
from bridge.sweeper import Sweeper

__all__ = ["PROCESS_NAMES", "run_pollers", "run_sweeper", "run_worker"]

log = logging.getLogger(__name__)

#: each helper's process name (``/proc/<pid>/comm``: ps, top, and the
#: stack tests tell a forked helper from its worker by it)
PROCESS_NAMES = {"sweeper": "bridge-sweeper", "pollers": "bridge-pollers"}


def run_worker(
    settings: Settings,
    *,
    burst: bool = False,
    with_sweeper: bool = True,
    with_pollers: bool = True,
) -> None:
    from bridge.checks import validate_mappings_dir

    validate_mappings_dir(settings.mappings_dir)
    _preload()
    wanted = (("sweeper", with_sweeper), ("pollers", with_pollers))
    helpers = _Helpers([] if burst else [name for name, on in wanted if on], settings)
    helpers.start()  # forked here: nothing connected yet, no thread but this one
    runtime = Runtime(settings)
    set_runtime(runtime)
    worker = InProcessWorker(
        [runtime.queues[name] for name in QUEUES],
        connection=runtime.redis,
        log_job_description=False,
    )
    try:
        worker.work(burst=burst, logging_level="INFO", with_scheduler=False)
    finally:
        helpers.stop()


class _Process(Protocol):
    """What :class:`_Helpers` needs of a helper process (``Popen``'s names)."""

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class _Forked:
    """A helper forked from the worker (``multiprocessing``'s fork), seen
    through ``Popen``'s names."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process

    def poll(self) -> int | None:
        return self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(str(self.process.name), timeout or 0.0)
        return self.process.exitcode


class _Helpers:
    """The worker's helper processes (``bridge sweeper``, ``bridge pollers``),
    started with the worker and restarted when one dies while the worker
    lives: the sweeper carries the worker's heartbeat and recovers stalled
    work, so a sweeper that crashed at start (a database busy while it
    opened, an unreachable Redis) must not leave a live worker reported as
    gone and its conversations unswept for the rest of its life."""

    #: seconds between a helper's death and its restart (doubling to the cap)
    RESTART_DELAY = 1.0
    RESTART_DELAY_MAX = 30.0

    def __init__(self, names: list[str], settings: Settings) -> None:
        self.names = names
        self.settings = settings
        self.procs: dict[str, _Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="helpers", daemon=True)

    def start(self) -> None:
        for name in self.names:
            self.procs[name] = self._fork(name)
        if self.names:
            self._thread.start()

    def _fork(self, name: str) -> _Process:
        """``name`` forked from this process, which must hold no thread
        and no connection yet (else, or without fork: :meth:`_spawn`)."""
        if threading.active_count() > 1 or "fork" not in multiprocessing.get_all_start_methods():
            return self._spawn(name)
        mains: dict[str, Callable[..., None]] = {"sweeper": run_sweeper, "pollers": run_pollers}
        process = multiprocessing.get_context("fork").Process(
            target=mains[name],
            args=(self.settings,),
            kwargs={"parent": os.getpid()},
            name=PROCESS_NAMES[name],
            daemon=True,  # stopped by multiprocessing too when the worker exits
        )
        process.start()
        return _Forked(process)

    @staticmethod
    def _spawn(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 — our own interpreter and module
            [sys.executable, "-m", "bridge.cli", name, "--parent", str(os.getpid())]
        )

    def _watch(self) -> None:
        delay = dict.fromkeys(self.names, self.RESTART_DELAY)
        while not self._stop.wait(1.0):
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                # 0: it was told to stop (SIGTERM/SIGINT, as on Ctrl-C) — so is the worker
                if code is None or code == 0 or self._stop.is_set():
                    continue
                log.error("%s exited (code %s): restarting it in %.0f s", name, code, delay[name])
                if self._stop.wait(delay[name]):
                    return
                delay[name] = min(delay[name] * 2, self.RESTART_DELAY_MAX)
                self.procs[name] = self._spawn(name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _preload() -> None:
    """Import what every job needs once, at start: the first job that
    imported the adapters (python-telegram-bot...) itself would spend
    ~250 ms doing so (measured by bench.sync)."""
    import bridge.pipeline.inbound  # noqa: F401
    import bridge.pipeline.outbound  # noqa: F401
    from bridge.registry import UnknownAdapter, channel_class, channel_kinds, crm_class, crm_kinds

    for kind in channel_kinds():
        try:
            channel_class(kind)
        except UnknownAdapter:
            pass
    for kind in crm_kinds():
        try:
            crm_class(kind)
        except UnknownAdapter:
            pass


def _name_process(name: str) -> None:
    """Show this helper as ``PROCESS_NAMES[name]`` in ps and top: Linux
    lets a thread rename itself through ``/proc/self/comm`` (proc(5), up to
    15 bytes); elsewhere the name stays the interpreter's."""
    try:
        Path("/proc/self/comm").write_text(PROCESS_NAMES[name])
    except OSError:
        pass


def run_sweeper(settings: Settings, *, parent: int | None = None) -> None:
    _name_process("sweeper")
    runtime = Runtime(settings)
    set_runtime(runtime)
    sweeper = Sweeper(runtime)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sweeper.start()
    log.info("sweeper running every %.1fs", settings.sweep_interval)
    worker_pid = parent or os.getpid()
    last_beat = 0.0
    while True:
        if parent is not None and os.getppid() != parent:
            log.info("worker %s is gone: sweeper exits", parent)
            break
        if time.monotonic() - last_beat >= HEARTBEAT_TTL / 6:
            last_beat = time.monotonic()
            try:
                beat(runtime.redis, worker_pid)
            except (redis.RedisError, OSError):
                log.warning("heartbeat not recorded: Redis unreachable")
        if stop.wait(1.0):
            break
    sweeper.stop()


def run_pollers(settings: Settings, *, parent: int | None = None) -> None:
    """The pollers of every pulled channel account (``bridge.pollers``)
    until SIGTERM, or until the worker ``parent`` is gone; their leases are
    given up on the way out, so another machine takes over at once."""
    from bridge.pollers import Pollers, worker_name

    _name_process("pollers")
    _preload()
    runtime = Runtime(settings)
    set_runtime(runtime)
    pollers = Pollers(runtime, worker=worker_name(parent or os.getpid()))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    pollers.start()
    log.info("pollers running (long polls of %.0f s)", settings.poll_timeout)
    while not stop.wait(1.0):
        if parent is not None and os.getppid() != parent:
            log.info("worker %s is gone: pollers exit", parent)
            break
    pollers.stop()
