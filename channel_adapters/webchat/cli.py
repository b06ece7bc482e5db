"""``bridge widget create``: connect a web chat widget and print the
snippet a site pastes into its pages.

It is ``bridge webchat connect`` (the generic path: the account stored, the
CRM's setup run for the new channel) with the options a person thinks in —
``--origin`` once per site, choices spelled out — and, since the widget's
key is public by design (every page that embeds it shows it), the snippet
with the key in full.
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


def _options() -> list[click.Option]:
    """One option per field of the widget's ``Connect`` schema (as ``bridge
    <kind> connect`` makes them), with its choices and default shown."""
    options = []
    for field in fields_of(WebChatConnect):
        if field.name in _OWN:
            continue
        choices = tuple(field.metadata.get("choices") or ())
        kind: Any = click.Choice(choices) if choices else None
        if field.type in (int, "int"):
            kind = click.IntRange(min=1)
        options.append(
            click.Option(
                [f"--{field.name.replace('_', '-')}", field.name],
                type=kind,
                default=None,
                show_default=str(field.default)
                if field.default is not dataclasses.MISSING
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
    click.echo(f'<script src="{rt.settings.public_url}/widget/{key}.js" async></script>')


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
