"""``bridge <channel> connect | list | set-webhook | set-polling | disconnect``."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING, Any

import click

from bridge.cli import context
from bridge.model import ReceiveMode
from bridge.schema import fields_of
from bridge.tables import ChannelStatus

if TYPE_CHECKING:
    from bridge.runtime import Runtime

__all__ = ["register"]


def _ask(kind: str, title: str, field: dataclasses.Field[Any], given: str | None) -> str | None:
    """A secret field from its option, its environment variable or a hidden
    prompt (never only from the command line: shell history)."""
    if given:
        return given
    variable = f"{kind.upper()}_{field.name.upper()}"
    if not sys.stdin.isatty():
        raise click.UsageError(
            f"no {title} {field.name.replace('_', ' ')}: set {variable}, or run this in a terminal"
        )
    return str(click.prompt(f"{title} {field.name.replace('_', ' ')}", hide_input=True))


def _connect_options(kind: str, title: str, schema: type[Any]) -> list[click.Option]:
    """One option per field of the adapter's ``Connect`` schema."""
    options = []
    for field in fields_of(schema):
        secret = bool(field.metadata.get("secret"))
        required = field.default is dataclasses.MISSING and not secret
        help_text = str(field.metadata.get("help") or field.name)
        if secret:
            help_text += (
                f" (better: set {kind.upper()}_{field.name.upper()} or type it at the prompt)"
            )
        options.append(
            click.Option(
                [f"--{field.name.replace('_', '-')}", field.name],
                envvar=f"{kind.upper()}_{field.name.upper()}",
                required=required,
                help=help_text,
            )
        )
    return options


def _channel_group(kind: str) -> click.Group:
    from bridge.registry import channel_class

    cls = channel_class(kind)
    title = cls.title

    @click.group(name=kind, help=f"{title} accounts.")
    def group() -> None:
        pass

    both = ReceiveMode.WEBHOOK in cls.modes and ReceiveMode.POLLING in cls.modes

    def connect(slug: str, name: str, polling: bool = False, **values: str | None) -> None:
        """Store the account (credentials encrypted), set up the CRM side, register its webhook."""
        from bridge.setup import connect_channel, webhook_url

        rt = context.runtime()
        tenant_id = context.tenant_id(rt, slug)
        for field in fields_of(cls.Connect):
            if field.metadata.get("secret"):
                values[field.name] = _ask(kind, title, field, values.get(field.name))
        given = {k: v for k, v in values.items() if v is not None}
        mode = ReceiveMode.POLLING if polling else None
        account_id = connect_channel(rt, tenant_id, kind=kind, values=given, name=name, mode=mode)
        # how the account receives is the stored mode (a channel may choose
        # it from what was given: e-mail polls when --imap-host is set)
        url = webhook_url(rt, account_id)
        if url is None:
            click.echo(
                f"{title} connected as channel account {account_id}; polling: a running "
                "`bridge worker` fetches its messages (no public URL needed)"
            )
            return
        click.echo(f"{title} connected as channel account {account_id}; webhook registered")
        # where the channel (or the admin's mail system) posts; the path key
        # is a secret, so shown masked as everywhere else, with the command
        # that shows it in full
        click.echo(
            f"webhook URL: {url.rsplit('/', 1)[0]}/<key> "
            f"(the key: bridge tenant show {slug} --reveal)"
        )

    mode_options = []
    if both:
        mode_options.append(
            click.Option(
                ["--polling"],
                is_flag=True,
                help=f"Fetch the messages from {title} (long polling by `bridge worker`) "
                "instead of receiving its webhook: for a bridge without a public HTTPS URL.",
            )
        )
    group.add_command(
        click.Command(
            "connect",
            callback=connect,
            help=connect.__doc__,
            params=[
                click.Option(["--tenant", "slug"], required=True),
                *_connect_options(kind, title, cls.Connect),
                click.Option(["--name"], default="", help="Shown to reps."),
                *mode_options,
            ],
        )
    )

    @group.command("list")
    @click.option("--tenant", "slug", help="Only this tenant's.")
    def list_accounts(slug: str | None) -> None:
        """The connected accounts, with the ids other commands take."""
        from bridge.lifecycle import channel_accounts

        rt = context.runtime()
        tenant_id = context.tenant_id(rt, slug) if slug else None
        rows = channel_accounts(rt, kind=kind, tenant_id=tenant_id)
        if not rows:
            click.echo(f"no {title} account yet: bridge {kind} connect --tenant <slug>")
            return
        click.echo("id\ttenant\tname\taccount\tstatus")
        for r in rows:
            click.echo(
                f"{r['id']}\t{r['tenant']}\t{r['name']}\t{r['external_id'] or '-'}\t{r['status']}"
            )

    if ReceiveMode.WEBHOOK in cls.modes:

        @group.command(
            "set-webhook",
            help="(Re-)register the account's webhook (after BRIDGE_PUBLIC_URL changed)"
            + ("; an account in polling mode switches back to its webhook." if both else "."),
        )
        @click.option(
            "--account", "account_id", type=int, required=True, help="Channel account id."
        )
        def set_webhook(account_id: int) -> None:
            from bridge.setup import set_channel_webhook

            rt = context.runtime()
            url = set_channel_webhook(rt, _account(rt, kind, account_id))
            click.echo(f"webhook set to {url.rsplit('/', 1)[0]}/<key>")

    if both:

        @group.command("set-polling")
        @click.option(
            "--account", "account_id", type=int, required=True, help="Channel account id."
        )
        def set_polling(account_id: int) -> None:
            """Switch the account to polling: its webhook is removed and a
            running `bridge worker` fetches its messages (no public URL needed)."""
            from bridge.setup import set_channel_mode

            rt = context.runtime()
            set_channel_mode(rt, _account(rt, kind, account_id), ReceiveMode.POLLING)
            click.echo(
                f"{title} channel account {account_id}: webhook removed; polling "
                "(a running `bridge worker` fetches its messages)"
            )

    for listing, about in cls.listings.items():
        group.add_command(_listing_command(kind, listing, about))

    @group.command("disconnect")
    @click.option("--account", "account_id", type=int, required=True, help="Channel account id.")
    def disconnect(account_id: int) -> None:
        """Stop receiving: remove the webhook, forget the token; history is kept."""
        from bridge.lifecycle import disconnect_channel

        rt = context.runtime()
        for problem in disconnect_channel(rt, _account(rt, kind, account_id)):
            click.echo(f"warning: webhook not removed at {title}: {problem}", err=True)
        click.echo(f"{title} channel account {account_id} disconnected")

    return group


def _listing_command(kind: str, name: str, about: str) -> click.Command:
    """``bridge <kind> <name> --account <id>``: rows the provider lists."""

    def show(account_id: int, as_json: bool) -> None:
        from bridge.tables import ChannelAccount

        rt = context.runtime()
        found = _account(rt, kind, account_id)
        with rt.read_session() as session:
            account = session.get(ChannelAccount, found)
            assert account is not None
            adapter = rt.channel_adapter(account)
        rows = adapter.listing(name)
        if as_json:
            click.echo(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
            return
        if not rows:
            click.echo(f"no {name}")
            return
        columns = list(rows[0])
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(str(row.get(c, "")) for c in columns))

    return click.Command(
        name,
        callback=show,
        help=about[0].upper() + about[1:] + ".",
        params=[
            click.Option(
                ["--account", "account_id"], type=int, required=True, help="Channel account id."
            ),
            click.Option(["--json", "as_json"], is_flag=True, help="Machine-readable."),
        ],
    )


def _account(rt: Runtime, kind: str, account_id: int) -> int:
    from bridge.tables import ChannelAccount

    with rt.transaction() as session:
        account = session.get(ChannelAccount, account_id)
        if account is None or account.kind != kind:
            raise click.ClickException(
                f"no {kind} channel account {account_id} (`bridge {kind} list` shows them)"
            )
        if account.status != ChannelStatus.ACTIVE:
            raise click.ClickException(f"channel account {account_id} is {account.status}")
    return account_id


def register(group: click.Group) -> None:
    from bridge.registry import UnknownAdapter, channel_class, channel_kinds

    for kind in channel_kinds():
        try:
            group.add_command(_channel_group(kind))
            for command in channel_class(kind).commands():
                group.add_command(command)
        except UnknownAdapter:
            continue  # disabled (missing library): logged by the registry
