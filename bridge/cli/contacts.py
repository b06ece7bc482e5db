"""``bridge contacts``: explain a client, undo a merge, decide a link."""

from __future__ import annotations

import json
from typing import Any

import click

from bridge.cli import context

__all__ = ["register"]


@click.group()
def contacts() -> None:
    """One client across channels: explain, unmerge, confirm or dismiss links."""


def _actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _run(fn: Any, *args: Any) -> Any:
    from bridge.identity import IdentityError

    rt = context.runtime()
    try:
        with rt.transaction() as session:
            return fn(session, *args)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from None


@contacts.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def show(ref: str, as_json: bool) -> None:
    """Explain a client: REF is a contact id or crm:<CRM contact id>."""
    from bridge.clients import describe, find_client

    data = _run(lambda s: describe(s, find_client(s, ref)))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        return
    _print(data)


def _print(data: dict[str, Any]) -> None:
    crm = data["crm_contact_id"] or "not in the CRM yet"
    click.echo(f"client {data['id']}: {data['name'] or '(no name)'} — CRM contact {crm}")
    if data["owner_id"]:
        click.echo(f"  owner: {data['owner_id']}")
    if len(data["contacts"]) > 1:
        click.echo(f"  made of contacts: {', '.join(map(str, data['contacts']))}")
    click.echo("identities:")
    for i in data["identities"]:
        proof = "verified" if i["verified"] else "NOT verified"
        click.echo(f"  {i['kind']:<10} {i['value']:<32} {proof:<12} {i['source'] or ''}")
    click.echo("conversations:")
    for c in data["conversations"]:
        last = c["last_inbound"] or "-"
        click.echo(
            f"  #{c['id']:<5} {c['channel']:<10} {c['status']:<7} last wrote {last}"
            f"  {c['crm_entity'] or ''}"
        )
    click.echo("reachable:")
    for r in data["reachability"]:
        where = f"#{r['conversation']}" if r["conversation"] else "(would open a thread)"
        answer = "yes" if r["reachable"] else f"no — {r['reason']}"
        click.echo(f"  {r['title']:<12} {where:<22} {answer}")
    for m in data["merges"]:
        state = f"undone {m['undone']} by {m['undone_by']}" if m["undone"] else "in force"
        click.echo(
            f"merge {m['id']}: contact {m['merged']} into {m['into']} — {m['reason']}"
            f" ({m['at']}; CRM: {m['crm'] or '-'}; {state})"
        )
        if m["evidence"]:
            click.echo(f"  evidence: {json.dumps(m['evidence'], ensure_ascii=False)}")
    for link in data["links"]:
        a, b = link["contacts"]
        click.echo(
            f"link {link['id']}: contacts {a} and {b} share {link['kind']} {link['value']}"
            f" — {link['state']}"
        )


@contacts.command("unmerge")
@click.argument("merge_id", type=int)
def unmerge(merge_id: int) -> None:
    """Split merge MERGE_ID: each conversation back to its own contact."""
    by = _actor()
    merge = _run(lambda s: _undo(s, merge_id, by))
    click.echo(f"merge {merge_id} undone: contact {merge[0]} is a client of its own again")


def _undo(session: Any, merge_id: int, by: str) -> tuple[int, int]:
    from bridge.identity import unmerge as do_unmerge

    merge = do_unmerge(session, merge_id, by)
    return merge.from_contact_id, merge.into_contact_id


@contacts.command("confirm")
@click.argument("link_id", type=int)
def confirm(link_id: int) -> None:
    """Confirm "possibly the same client" LINK_ID: merge the two."""
    from bridge.identity import confirm_link

    by = _actor()
    merge_id = _run(lambda s: confirm_link(s, link_id, by).id)
    click.echo(
        f"link {link_id} confirmed: merge {merge_id} (undo: bridge contacts unmerge {merge_id})"
    )


@contacts.command("dismiss")
@click.argument("link_id", type=int)
def dismiss(link_id: int) -> None:
    """Two different people: close link LINK_ID for good."""
    from bridge.identity import dismiss_link

    by = _actor()
    _run(lambda s: dismiss_link(s, link_id, by).id)
    click.echo(f"link {link_id} dismissed")


def register(group: click.Group) -> None:
    group.add_command(contacts)
