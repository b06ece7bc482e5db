"""``bridge db | check-config | status | replay | reparse | keys``: operating it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from bridge.cli import context

__all__ = ["register"]


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema (idempotent)."""
    from bridge.migrate import upgrade

    rt = context.runtime(schema=False)
    upgrade(rt.engine)
    click.echo(f"database {context.safe_url(rt.settings.database_url)} is up to date")


@click.command("check-config")
@click.argument("targets", nargs=-1)
def check_config(targets: tuple[str, ...]) -> None:
    """Check mapping files: names in the mappings directory (acme, acme.yaml),
    paths to files or directories (./draft.yaml); all of the mappings
    directory when none is given. Exit status 1 when anything is wrong."""
    from bridge.checks import check_config as run_checks

    report = run_checks(targets, context.settings().mappings_dir)
    for line in report.lines:
        click.echo(line, err=True)
    click.echo(report.summary)
    if not report.ok:
        raise SystemExit(1)


def _print_status(data: dict[str, Any]) -> None:
    for t in data["tenants"]:
        extra = f" ({t['reason']})" if t["reason"] else ""
        click.echo(f"tenant {t['slug']} [{t['crm']}]: {t['status']}{extra}")
    if not data["tenants"]:
        click.echo("no tenants yet: `bridge run` (demo) or see README, Connecting a CRM")
    click.echo(f"conversations: {data['conversations']}")
    if data.get("consent_withdrawn"):
        click.echo(
            f"customers who withdrew consent: {data['consent_withdrawn']} "
            "(replies to them are refused until they write again or allow messages)"
        )
    journal = data["journal"]
    shown = ", ".join(f"{k} {v}" for k, v in journal["by_state"].items() if v)
    age = journal["oldest_new_age_s"]
    waiting = f"; the oldest new one waits {age:.1f} s" if age is not None else ""
    click.echo(f"ingest journal: {shown or 'empty'}{waiting}")
    if journal["rejected_reasons"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(journal["rejected_reasons"].items()))
        click.echo(f"REJECTED deliveries: {reasons} (after a fix: bridge reparse)")
    for p in data["pollers"]:
        _print_poller(p)
    for p in data.get("channel_problems", []):
        click.echo(
            f"CHANNEL {p['kind']} account {p['account']}: {p['what']} ({p['event']}, "
            f"{p['count']}x, last {p['last']}): see the provider's account manager"
        )
    for direction, label in (
        ("in", "inbound (customer -> CRM)"),
        ("out", "outbound (CRM -> customer)"),
    ):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(data["messages"][direction].items()))
        click.echo(f"{label}: {counts or 'none'}")
    names = {"ack": "acknowledgements to the channel", "report": "delivery reports to the CRM"}
    for direction, counts in data["followups"].items():
        if counts:
            shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            click.echo(f"{names.get(direction, direction)}: {shown}")
    for f in data["followup_failed"]:
        click.echo(
            f"FAILED {names.get(f['direction'], f['direction'])[:-1]} of message {f['message']} "
            f"(conversation {f['conversation']}): {f['error']}"
        )
    for w in data["waiting"]:
        click.echo(
            f"WAITING conversation {w['conversation']} ({w['direction']}) until {w['until']}: "
            f"{w['reason']}"
        )
    for r in data.get("sessions_at_risk", []):
        what = "BREACHED" if r["breached"] else "AT RISK"
        owner = f", owner {r['owner']}" if r["owner"] else ", no owner yet"
        click.echo(
            f"SLA {what}: conversation {r['conversation']} session {r['session']} "
            f"(line {r['line']}{owner}): due {r['due']:%Y-%m-%d %H:%M} UTC"
        )
    for f in data.get("service_failed", []):
        click.echo(
            f"FAILED service {f['kind']} (conversation {f['conversation']}, {f['key']}): "
            f"{f['error']}"
        )
    for p in data["parked"]:
        click.echo(f"PARKED conversation {p['conversation']} ({p['direction']}): {p['reason']}")
    for f in data["failed"]:
        click.echo(
            f"FAILED {f['direction']} message {f['message']} (conversation {f['conversation']}, "
            f"seq {f['seq']}, {f['attempts']} attempts): {f['error']}"
        )
    if data["failed"] or data["parked"] or data["followup_failed"]:
        click.echo(
            "fix the cause, then: bridge replay --message <id> | --conversation <id> | --all"
        )


def _print_poller(p: dict[str, Any]) -> None:
    """One pulled account's poller: a line in capitals when it needs a look."""
    what = f"{p['kind']} channel account {p['account']}"
    if p["worker"] is None:
        state = p["state"] if p["state"] == "unknown" else "not running"
        hint = p["error"] or "no worker holds its lease: start `bridge worker`"
        click.echo(f"POLLER of {what}: {state} ({hint})")
        return
    if p["error"] is None:
        fetched = f", {p['fetched']} fetched" if p["fetched"] else ""
        click.echo(f"poller of {what}: polling in worker {p['worker']}{fetched}")
        return
    retry = f"; next try in {p['retry_in_s']:.0f} s" if p["retry_in_s"] is not None else ""
    click.echo(
        f"POLLER of {what} {p['state'].upper()} in worker {p['worker']}: {p['error']}{retry}"
    )
    if p["state"] == "failing":
        fix = "fix the cause at the channel; the poller keeps trying"
        if "webhook" in p["modes"]:
            fix += (
                f" (a webhook set elsewhere: `bridge {p['kind']} set-polling --account "
                f"{p['account']}` removes it)"
            )
        click.echo(f"  {fix}")


@click.command()
@click.option("--tenant", "slug", help="Only this tenant.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def status(slug: str | None, as_json: bool) -> None:
    """Message counts, waiting, parked and failed conversations, with reasons."""
    from bridge.admin import status as get_status

    rt = context.runtime()
    data = get_status(rt, context.tenant_id(rt, slug) if slug else None)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        _print_status(data)


@click.command()
@click.option("--message", "message_uid", help="One failed message (its id from bridge status).")
@click.option("--conversation", "conversation_id", type=int, help="A conversation's failures.")
@click.option("--tenant", "slug", help="Restrict --all to one tenant.")
@click.option("--all", "everything", is_flag=True, help="Every failed message.")
def replay(
    message_uid: str | None, conversation_id: int | None, slug: str | None, everything: bool
) -> None:
    """Re-run failed messages and resume their conversations."""
    from bridge.admin import replay as do_replay

    if not (message_uid or conversation_id or everything):
        raise click.UsageError("say what to replay: --message, --conversation or --all")
    rt = context.runtime()
    n = do_replay(
        rt,
        message_uid=message_uid,
        conversation_id=conversation_id,
        tenant_id=context.tenant_id(rt, slug) if slug else None,
    )
    click.echo(f"requeued {n} message(s)")


@click.group()
def keys() -> None:
    """Encryption keys for secrets at rest."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key (prepend it to BRIDGE_SECRET_KEYS, then rotate)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under the first key of BRIDGE_SECRET_KEYS."""
    from bridge.setup import rotate_secrets

    rt = context.runtime()
    n = rotate_secrets(rt)
    click.echo(f"re-encrypted {n} secret(s); keys after the first can now be removed")


@click.command()
@click.option("--account", type=int, help="Only this channel account's deliveries (its id).")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]),
    help="Only deliveries received since then (UTC).",
)
@click.option(
    "--state",
    type=click.Choice(["rejected", "ignored"]),
    help="Which deliveries (default: rejected).",
)
@click.option("--delivery", type=int, help="One journal row by its id.")
def reparse(
    account: int | None, since: dt.datetime | None, state: str | None, delivery: int | None
) -> None:
    """Normalise journaled deliveries again (after a parser fix).

    A message that lands this way keeps its own time and is marked late in
    the CRM.
    """
    from bridge.pipeline.inbound.journal import reparse as do_reparse
    from bridge.tables import DeliveryState

    rt = context.runtime()
    _must_exist(rt, account, delivery)
    put_back = do_reparse(
        rt,
        account=account,
        since=since.replace(tzinfo=dt.UTC) if since else None,
        state=DeliveryState(state) if state else None,
        delivery=delivery,
    )
    total = sum(put_back.values())
    click.echo(f"reparsed {total} deliver{'y' if total == 1 else 'ies'}")
    from bridge.pipeline.inbound.journal import counts

    still = counts(rt)["rejected_reasons"]
    if still:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(still.items()))
        click.echo(f"still rejected: {reasons}")


def _must_exist(rt: Any, account: int | None, delivery: int | None) -> None:
    from bridge.tables import ChannelAccount, Delivery

    with rt.transaction() as session:
        if account is not None and session.get(ChannelAccount, account) is None:
            raise click.ClickException(
                f"no channel account {account} (`bridge status` and the channel commands show them)"
            )
        if delivery is not None and session.get(Delivery, delivery) is None:
            raise click.ClickException(f"no journaled delivery {delivery}")


def register(group: click.Group) -> None:
    for command in (db, check_config, status, replay, reparse, keys):
        group.add_command(command)
