"""The settings of a running ``bridge run``, for the CLI beside it.

``bridge run`` hands its processes settings the shell never saw (the demo's
database under ``var/``, its embedded Redis socket, the sandbox's URLs). It
writes them to ``var/run.json`` (mode 0600) while it runs; a CLI command run
from any directory with the same var directory reads them back, so
``bridge status`` or ``bridge hubspot owners`` talk to the same database,
Redis and sandbox instead of an empty database, a second embedded Redis on
the same files, or the real vendor hosts. What the caller's own environment
sets wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["NAME", "live", "remove", "write"]

NAME = "run.json"


def write(var_dir: Path, *, port: int, env: Mapping[str, str], base: Mapping[str, str]) -> Path:
    """Record the settings ``bridge run`` gave its processes: the entries of
    ``env`` that differ from ``base`` (the shell's own environment)."""
    given = {k: v for k, v in env.items() if base.get(k) != v}
    path = var_dir / NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"pid": os.getpid(), "port": port, "env": given}, out)
    return path


def remove(var_dir: Path) -> None:
    (var_dir / NAME).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live(var_dir: Path) -> dict[str, Any] | None:
    """The record of a ``bridge run`` that is still running, else None."""
    try:
        data = json.loads((var_dir / NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    if not _alive(data["pid"]) or not isinstance(data.get("env"), dict):
        return None
    return data
