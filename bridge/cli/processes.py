"""``bridge run | web | worker | sweeper | pollers``: the processes."""

from __future__ import annotations

import logging
import os
import sys

import click

from bridge.cli import context
from bridge.logs import configure_logging

__all__ = ["register"]


class DemoChoice(click.Choice[str]):
    """auto, off, or a CRM the installed demo offers (read when used)."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self) -> tuple[str, ...]:
        from bridge.devserver import demo_provider

        provider = demo_provider()
        return ("auto", "off", *(provider.crms if provider else ()))

    @choices.setter
    def choices(self, _value: object) -> None:
        pass


def _log_progress() -> None:
    """A long-running process reports what it does (INFO), unless -v asked
    for DEBUG already."""
    if logging.getLogger().level > logging.INFO:
        configure_logging(logging.INFO)


def _port() -> int:
    return int(os.environ.get("PORT", "8000"))


@click.command()
@click.option(
    "--demo",
    type=DemoChoice(),
    default="auto",
    show_default=True,
    help="Run the demo for this CRM on the sandbox (auto: the first one, when no real "
    "app settings, tokens or API bases are set; off: no demo).",
)
@click.option("--port", type=int, default=_port, show_default="8000 or $PORT")
def run(demo: str, port: int) -> None:
    """Run everything (web, worker, embedded Redis, SQLite, the sandbox) until Ctrl-C."""
    from bridge.devserver import run_all

    _log_progress()
    sys.exit(run_all(demo=demo, port=port))


@click.command()
@click.option("--port", type=int, default=_port, show_default="8000 or $PORT")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option(
    "--threads",
    type=int,
    envvar="WEB_THREADS",
    default=64,
    show_default="64 or $WEB_THREADS",
    help="Threads per worker: each open live connection of a hosted channel's "
    "client holds one while it waits.",
)
def web(port: int, host: str, workers: int, threads: int) -> None:
    """Serve the webhooks with gunicorn (production: behind HTTPS)."""
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "wsgi:app",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 — our interpreter's gunicorn, no shell


@click.command()
@click.option("--burst", is_flag=True, help="Drain the queues and exit.")
@click.option("--sweeper/--no-sweeper", default=True, help="Also run the outbox sweeper.")
@click.option(
    "--pollers/--no-pollers",
    default=True,
    help="Also run the pollers of channel accounts in polling mode.",
)
def worker(burst: bool, sweeper: bool, pollers: bool) -> None:
    """Run an RQ worker (replies first, then CRM sync)."""
    from bridge.worker import run_worker

    _log_progress()
    run_worker(context.settings(), burst=burst, with_sweeper=sweeper, with_pollers=pollers)


@click.command()
@click.option("--parent", type=int, default=None, help="Exit when this process is gone.")
def sweeper(parent: int | None) -> None:
    """Run only the outbox sweeper (re-enqueues work whose job vanished)."""
    from bridge.worker import run_sweeper

    _log_progress()
    run_sweeper(context.settings(), parent=parent)


@click.command()
@click.option("--parent", type=int, default=None, help="Exit when this process is gone.")
def pollers(parent: int | None) -> None:
    """Run only the pollers (channel accounts in polling mode; one poller per account
    across all machines)."""
    from bridge.worker import run_pollers

    _log_progress()
    run_pollers(context.settings(), parent=parent)


def register(group: click.Group) -> None:
    for command in (run, web, worker, sweeper, pollers):
        group.add_command(command)
