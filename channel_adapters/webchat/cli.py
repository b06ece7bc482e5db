"""``bridge widget create | update | snippet``.

``create`` is ``bridge webchat connect`` (the generic path: the account
stored, the CRM's setup run for the new channel) with the options a person
thinks in — ``--origin`` once per site, choices spelled out — and, since the
widget's key is public by design (every page that embeds it shows it), the
snippet with the key in full. ``update`` changes a widget's settings (the
same checks; the key, and so the snippet, stay); ``snippet`` prints it again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from bridge.schema import fields_of
from channel_adapters.webchat.settings import WebChatConnect

__all__ = ["widget"]

#: the Connect fields with options of their own here
_OWN = {"origins"}


@click.group(help="Web chat widgets (the chat on your own site).")
def widget() -> None:
    pass


def _options(*, defaults: bool = True) -> list[click.Option]:
    """One option per field of the widget's ``Connect`` schema (as ``bridge
    <kind> connect`` makes them), with its choices (and default) shown."""
    options = []
    for field in fields_of(WebChatConnect):
        if field.name in _OWN:
            continue
        choices = tuple(field.metadata.get("choices") or ())
        kind: Any = click.Choice(choices) if choices else None
        if field.type in (int, "int"):
            kind = click.IntRange(min=0)
        options.append(
            click.Option(
                [f"--{field.name.replace('_', '-')}", field.name],
                type=kind,
                default=None,
                show_default=str(field.default)
                if defaults and field.default is not dataclasses.MISSING
                else None,
                help=str(field.metadata.get("help") or field.name),
            )
        )
    return options


def _create(slug: str, origins: tuple[str, ...], name: str, **values: Any) -> None:
    """Create a widget for a tenant's site(s) and print the snippet to paste
    into the site's pages (before </body>)."""
    from bridge.cli import context
    from bridge.setup import connect_channel
    from bridge.tables import ChannelAccount
    from channel_adapters.webchat.adapter import WebChatAdapter

    rt = context.runtime()
    tenant_id = context.tenant_id(rt, slug)
    given = {k: v for k, v in values.items() if v is not None}
    given["origins"] = " ".join(origins)
    account_id = connect_channel(rt, tenant_id, kind=WebChatAdapter.kind, values=given, name=name)
    with rt.read_session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        key = account.key
    click.echo(f"Web chat widget created as channel account {account_id}")
    click.echo("paste this into every page of the site, before </body>:")
    click.echo(_snippet(rt.settings.public_url, key))


def _snippet(public_url: str, key: str) -> str:
    return f'<script src="{public_url}/widget/{key}.js" async></script>'


def _widget_account(account_id: int) -> tuple[Any, Any]:
    """The runtime and the active widget ``account_id`` (a one-line error else)."""
    from bridge.cli import context
    from bridge.tables import ChannelAccount, ChannelStatus
    from channel_adapters.webchat.adapter import WebChatAdapter

    rt = context.runtime()
    with rt.read_session() as session:
        account = session.get(ChannelAccount, account_id)
        if account is None or account.kind != WebChatAdapter.kind:
            raise click.ClickException(
                f"no web chat widget {account_id} (`bridge webchat list` shows them)"
            )
        if account.status != ChannelStatus.ACTIVE:
            raise click.ClickException(f"widget {account_id} is {account.status}")
        session.expunge(account)
    return rt, account


def _update(account_id: int, origins: tuple[str, ...], **values: Any) -> None:
    """Change a widget's settings; the options not given stay as they are.
    Its key, and so the snippet in the site's pages, stay too."""
    from bridge import admin
    from bridge.schema import load
    from channel_adapters.webchat.adapter import WebChatAdapter

    rt, account = _widget_account(account_id)
    current = load(WebChatAdapter.Settings, account.settings)
    merged: dict[str, Any] = {
        f.name: getattr(current, f.name)
        for f in fields_of(WebChatConnect)
        if f.name not in _OWN and hasattr(current, f.name)
    }
    merged.update({k: v for k, v in values.items() if v is not None})
    merged["origins"] = " ".join(origins or current.origins)
    # the checks of a new widget; its fresh secret and site name are not kept
    checked = WebChatAdapter.connect(load(WebChatConnect, merged, strict=True))
    admin.set_channel_settings(rt, account_id, **checked.settings)
    # the web processes read an account afresh every 30 s, a browser its
    # config every minute: visitors see the change within about a minute
    click.echo(f"widget {account_id} updated (the snippet is unchanged)")


def _print_snippet(account_id: int) -> None:
    """Print the widget's snippet again."""
    rt, account = _widget_account(account_id)
    click.echo(_snippet(rt.settings.public_url, account.key))


widget.add_command(
    click.Command(
        "create",
        callback=_create,
        help=_create.__doc__,
        params=[
            click.Option(["--tenant", "slug"], required=True, help="The tenant's slug."),
            click.Option(
                ["--origin", "origins"],
                multiple=True,
                required=True,
                help="A site the widget runs on, exactly scheme://host[:port] "
                "(https://shop.example); once per site.",
            ),
            click.Option(["--name"], default="", help="Shown to reps (default: Web chat <site>)."),
            *_options(),
        ],
    )
)

widget.add_command(
    click.Command(
        "update",
        callback=_update,
        help=_update.__doc__,
        params=[
            click.Option(
                ["--account", "account_id"], type=int, required=True, help="The widget's id."
            ),
            click.Option(
                ["--origin", "origins"],
                multiple=True,
                help="The sites, all of them (replaces the list); once per site.",
            ),
            *_options(defaults=False),
        ],
    )
)
widget.add_command(
    click.Command(
        "snippet",
        callback=_print_snippet,
        help=_print_snippet.__doc__,
        params=[
            click.Option(
                ["--account", "account_id"], type=int, required=True, help="The widget's id."
            )
        ],
    )
)
