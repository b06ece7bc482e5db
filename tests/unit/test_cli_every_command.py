"""Every ``bridge`` command and subcommand, found by walking the command
tree (a new command is covered the day it is added), asked for ``--help``,
run with its required options missing, with ids that do not exist, and
against a database that was never migrated — on SQLite and PostgreSQL,
each call under a timeout: no traceback, no hang, exit status 1 or 2 with
one ``Error:`` line that says what to do."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import bridge.runtime
from bridge.cli import main
from bridge.config import Settings
from bridge.migrate import upgrade
from bridge.runtime import Runtime, set_runtime

#: seconds one command may take before it counts as a hang
TIMEOUT = 20
#: long-running processes: started elsewhere (tests of `bridge run`), never here
PROCESSES = {("run",), ("web",), ("worker",), ("sweeper",), ("pollers",)}
#: commands that need no database at all
NO_DATABASE = {("keys", "generate"), ("check-config",), ("db", "upgrade")}
#: commands that make something new (their ids do not exist yet by design)
CREATES = {("tenant", "create")}
#: commands that go to the CRM's app settings, not to the database, first
NO_SCHEMA = {("hubspot", "install-url"), ("amocrm", "install-url"), ("bitrix24", "install-url")}
#: values for ids that exist nowhere
UNKNOWN = {
    "slug": "no-such-tenant",
    "tenant": "no-such-tenant",
    "account": "424242",
    "conversation": "424242",
    "message": "no-such-message",
    "delivery": "434343",
}


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _leaves(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = sorted(_leaves(main))


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


class Hang(Exception):
    pass


def _invoke(args: list[str], env: dict[str, Any]) -> Result:
    def alarm(_signum: int, _frame: object) -> None:
        raise Hang(f"`bridge {' '.join(args)}` did not finish within {TIMEOUT} s")

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(TIMEOUT)
    try:
        return CliRunner().invoke(main, args, env=env, catch_exceptions=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        root.handlers[:], root.level = saved
        current = bridge.runtime._current
        if current is not None:
            current.close()
        set_runtime(None)


def _one_error_line(result: Result, args: list[str]) -> str:
    shown = f"bridge {' '.join(args)}"
    if isinstance(result.exception, Hang):
        raise result.exception
    assert result.exit_code in (1, 2), (shown, result.exit_code, result.output)
    assert "Traceback" not in result.output, (shown, result.output)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), (shown, repr(result.exception))
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, (shown, result.stderr)
    return errors[0]


def _key(param: click.Parameter) -> str:
    """``--conversation`` -> ``conversation``; an argument's own name."""
    if isinstance(param, click.Option):
        return param.opts[-1].lstrip("-")
    return param.name or ""


def _fill(command: click.Command, *, ids: bool = False) -> list[str]:
    """Arguments for the required params (and, with ``ids``, every id
    option), naming things that do not exist."""
    args: list[str] = []
    for param in command.params:
        if not (param.required or (ids and _key(param) in UNKNOWN)):
            continue
        value = UNKNOWN.get(_key(param))
        if value is None and isinstance(param.type, click.Choice):
            value = str(param.type.choices[0])
        if value is None:
            value = "424242" if isinstance(param.type, click.types.IntParamType) else "x"
        if isinstance(param, click.Argument):
            args.append(value)
        else:
            args += [param.opts[-1], value]
    return args


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, Any]:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "hubspot.yaml").write_text(
        "crm: hubspot\nchannels:\n  telegram: {pipeline: p, stage: s}\n"
    )
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BRIDGE_VAR_DIR": str(tmp_path / "var"),
        "BRIDGE_MAPPINGS_DIR": str(mappings),
        "BRIDGE_PUBLIC_URL": "http://bridge.test",
        # nothing from the developer's shell: no token, no CRM app
        **{f"{k.upper()}_CLIENT_ID": None for k in ("hubspot", "amocrm", "bitrix24")},
        "BRIDGE_CRM_TOKEN": None,
        "TELEGRAM_BOT_TOKEN": None,
        "BRIDGE_SECRET_KEYS": None,
    }


def _migrate(env: dict[str, Any]) -> None:
    rt = Runtime(Settings.from_env({k: v for k, v in env.items() if v is not None}))
    try:
        upgrade(rt.engine)
    finally:
        rt.close()


def test_every_command_has_help() -> None:
    assert len(COMMANDS) >= 25  # the walk found the tree
    for path in COMMANDS:
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith("Usage: "), path
        assert _command(path).help, f"bridge {' '.join(path)} has no help text"


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("bridge ")


def test_missing_required_options_are_usage_errors(env: dict[str, Any]) -> None:
    checked = 0
    for path in COMMANDS:
        if path in PROCESSES or not any(p.required for p in _command(path).params):
            continue
        args = list(path)
        result = _invoke(args, env)
        line = _one_error_line(result, args)
        assert result.exit_code == 2 and "Missing" in line, (args, line)
        checked += 1
    assert checked >= 10


def test_unknown_ids_are_one_line_errors(env: dict[str, Any]) -> None:
    _migrate(env)
    checked = 0
    for path in COMMANDS:
        if path in PROCESSES or path in NO_DATABASE or path in CREATES:
            continue
        command = _command(path)
        args = [*path, *_fill(command, ids=True)]
        if not any(_key(p) in UNKNOWN for p in command.params):
            continue
        result = _invoke(args, env)
        line = _one_error_line(result, args)
        assert result.exit_code == 1, (args, line)
        # it names what was not found
        named = [v for v in UNKNOWN.values() if v in line] or ("not found" in line)
        assert named, (args, line)
        checked += 1
    assert checked >= 12


def test_an_unmigrated_database_says_run_db_upgrade(env: dict[str, Any]) -> None:
    checked = 0
    for path in COMMANDS:
        if path in PROCESSES or path in NO_DATABASE or path in NO_SCHEMA:
            continue
        args = [*path, *_fill(_command(path))]
        if path == ("replay",):
            args.append("--all")
        result = _invoke(args, env)
        line = _one_error_line(result, args)
        assert "bridge db upgrade" in line, (args, line)
        checked += 1
    assert checked >= 15


def test_install_urls_without_an_app_name_the_settings(env: dict[str, Any]) -> None:
    for path in sorted(NO_SCHEMA):
        result = _invoke(list(path), env)
        line = _one_error_line(result, list(path))
        assert f"set {path[0].upper()}_CLIENT_ID" in line, line


def test_db_upgrade_then_the_read_commands_answer(env: dict[str, Any]) -> None:
    upgraded = _invoke(["db", "upgrade"], env)
    assert upgraded.exit_code == 0, upgraded.output
    for args in (["status"], ["tenant", "list"], ["telegram", "list"]):
        result = _invoke(args, env)
        assert result.exit_code == 0, (args, result.output)
        assert "no tenants yet" in result.output or "no Telegram account yet" in result.output


def test_run_on_a_busy_port_is_one_line_before_touching_anything(tmp_path: Path) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        env = {"BRIDGE_VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": None, "REDIS_URL": None}
        result = _invoke(["run", "--port", str(port)], env)
    line = _one_error_line(result, ["run"])
    assert result.exit_code == 1
    assert line == (
        f"Error: port {port} is in use: stop what listens there, or pick another port "
        f"(bridge run --port {port + 1})"
    )
    assert not (tmp_path / "var" / "demo.db").exists()
    assert not (tmp_path / "var" / "run.json").exists()


def test_run_with_a_broken_mapping_names_it_before_starting(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "acme.yaml").write_text("crm: hubspot\nchannels:\n  telegram: {inbox: maybe}\n")
    env = {
        "BRIDGE_VAR_DIR": str(tmp_path / "var"),
        "BRIDGE_MAPPINGS_DIR": str(mappings),
        "DATABASE_URL": None,
        "REDIS_URL": None,
    }
    result = _invoke(["run", "--port", "0"], env)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "acme.yaml: channels.telegram.inbox: must be true or false (got 'maybe')" in (
        result.stderr
    )
    assert not (tmp_path / "var" / "run.json").exists()
