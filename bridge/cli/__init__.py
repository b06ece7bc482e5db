"""The ``bridge`` command line.

Every failure a user can cause — a missing setting, an unknown id, a
database that was never migrated, a service that does not answer — ends in
one line on stderr and exit status 1 (2 for a wrong command line); ``-v``
keeps the traceback for a bug report. While ``bridge run`` runs, every
command uses its database, Redis and sandbox (``bridge.runfile``).
"""

from __future__ import annotations

import logging
from typing import Any

import click

from bridge import __version__
from bridge.cli.context import explain
from bridge.logs import configure_logging

__all__ = ["main"]


class BridgeCli(click.Group):
    """The root group: turns the failures ``explain`` knows into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 — sorted into known and bugs below
            if ctx.meta.get("bridge.verbose"):
                raise
            message = explain(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


@click.group(cls=BridgeCli)
@click.version_option(__version__, prog_name="bridge", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, and tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Omnichannel CRM bridge: customers' channels <-> your CRM.

    Start with `bridge run` (the demo), then see README.md for connecting a
    real CRM and channel.
    """
    ctx.meta["bridge.verbose"] = verbose
    # a command's answer is its output; processes (run, worker) log at INFO
    configure_logging(logging.DEBUG if verbose else logging.WARNING)


def _register() -> None:
    from bridge.cli import channels, console, contacts, operations, processes, tenants

    for module in (processes, operations, tenants, channels, contacts, console):
        module.register(main)


_register()
