"""The files a newcomer looks for: the licence the package declares, a
changelog whose newest entry is the package's version, and an .env.example
that names every setting the bridge reads."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from bridge import __version__
from bridge.registry import channel_class, channel_kinds, crm_class, crm_kinds
from bridge.schema import fields_of, secret_names

ROOT = Path(__file__).resolve().parents[2]
#: read from the environment but set by `bridge run` / the test harness for
#: its own processes, never by a person
INTERNAL = {"BRIDGE_MOUNT_SANDBOX", "BRIDGE_DEMO_CRM"}


def _read_in_code() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "bridge").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"""["'](BRIDGE_[A-Z_]+|DATABASE_URL|REDIS_URL|PORT)["']""", text))
    return names - INTERNAL


def test_every_setting_is_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    wanted = _read_in_code() | {"BRIDGE_CRM_TOKEN"}
    # what each adapter declares: its app settings, the secrets `bridge
    # <channel> connect` reads from the environment, the API host a stand-in
    # replaces (where the provider has one host)
    adapters = [crm_class(k) for k in crm_kinds()] + [channel_class(k) for k in channel_kinds()]
    for cls in adapters:
        prefix = cls.kind.upper()
        wanted |= {f"{prefix}_{f.name.upper()}" for f in fields_of(cls.App)}
        wanted |= {f"{prefix}_API_BASE"} if cls.default_api_base() else set()
    for kind in channel_kinds():
        connect = channel_class(kind).Connect
        wanted |= {f"{kind.upper()}_{name.upper()}" for name in secret_names(connect)}
    assert len(wanted) > 25 and "TELEGRAM_BOT_TOKEN" in wanted
    # a prefix (Flask's BRIDGE_FLASK_<KEY>) is there when one of its keys is
    missing = [w for w in wanted if not any(n == w or n.startswith(f"{w}_") for n in named)]
    assert missing == []


def test_licence_and_changelog_match_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    newest = re.search(r"^## \[?([0-9][^\]\s]*)", changelog, flags=re.MULTILINE)
    assert newest is not None and newest.group(1) == project["version"] == __version__
