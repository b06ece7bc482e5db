"""The ``bridge`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from bridge.config import Settings
from bridge.demo import DEMO_CRMS
from bridge.logs import configure_logging
from bridge.runtime import Runtime, set_runtime

__all__ = ["main"]


def _runtime() -> Runtime:
    rt = Runtime(Settings.from_env())
    set_runtime(rt)
    return rt


def _tenant_id(rt: Runtime, slug: str) -> int:
    from bridge.admin import tenant_by_slug

    tenant_id = tenant_by_slug(rt, slug)
    if tenant_id is None:
        raise click.ClickException(f"no tenant {slug!r} (bridge status lists them)")
    return tenant_id


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(verbose: bool) -> None:
    """Omnichannel CRM bridge."""
    configure_logging(logging.DEBUG if verbose else logging.INFO)


# -- processes ----------------------------------------------------------------


@main.command()
@click.option(
    "--demo",
    type=click.Choice([*DEMO_CRMS, "auto", "off"]),  # the CRM the demo wires
    default="auto",
    help="wire a demo tenant to the sandbox (auto: when no CRM credentials are set)",
)
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", "8000")))
def run(demo: str, port: int) -> None:
    """Run web + worker (+ embedded Redis, SQLite, sandbox) until Ctrl-C."""
    from bridge.devserver import run_all

    sys.exit(run_all(demo=demo, port=port))


@main.command()
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", "8000")))
@click.option("--host", default="127.0.0.1")
@click.option("--workers", type=int, default=2)
def web(port: int, host: str, workers: int) -> None:
    """Serve the webhooks with gunicorn."""
    # our interpreter's gunicorn, replacing this process (no shell)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        "4",
        "--worker-class",
        "gthread",
        "wsgi:app",
    ]
    os.execv(sys.executable, argv)  # noqa: S606


@main.command()
@click.option("--burst", is_flag=True, help="drain the queues and exit")
@click.option("--sweeper/--no-sweeper", default=True, help="also run the outbox sweeper")
def worker(burst: bool, sweeper: bool) -> None:
    """Run an RQ worker (delivery queue first, then sync)."""
    from bridge.worker import run_worker

    run_worker(Settings.from_env(), burst=burst, with_sweeper=sweeper)


@main.command()
@click.option("--parent", type=int, default=None, help="exit when this process is gone")
def sweeper(parent: int | None) -> None:
    """Run only the outbox sweeper (re-enqueues work whose job vanished)."""
    from bridge.worker import run_sweeper

    run_sweeper(Settings.from_env(), parent=parent)


# -- database and configuration ------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply Alembic migrations."""
    from bridge.migrate import upgrade

    rt = _runtime()
    upgrade(rt.engine)
    click.echo("database is up to date")


@main.command("check-config")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
def check_config(files: tuple[str, ...]) -> None:
    """Validate mapping files (all under the mappings directory if none given)."""
    from bridge.checks import check_mapping_files

    settings = Settings.from_env()
    paths = [Path(f) for f in files] or sorted(settings.mappings_dir.glob("*.yaml"))
    problems = check_mapping_files(paths)
    for line in problems:
        click.echo(line, err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{len(paths)} mapping file(s) OK")


# -- operations ------------------------------------------------------------------


@main.command()
@click.option("--tenant", "slug", help="only this tenant")
@click.option("--json", "as_json", is_flag=True)
def status(slug: str | None, as_json: bool) -> None:
    """Message counts, parked conversations and failed messages."""
    from bridge.admin import status as get_status

    rt = _runtime()
    data = get_status(rt, _tenant_id(rt, slug) if slug else None)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for t in data["tenants"]:
        extra = f" ({t['reason']})" if t["reason"] else ""
        click.echo(f"tenant {t['slug']} [{t['crm']}]: {t['status']}{extra}")
    click.echo(f"conversations: {data['conversations']}")
    for direction, label in (
        ("in", "inbound (customer -> CRM)"),
        ("out", "outbound (CRM -> customer)"),
    ):
        counts = (
            ", ".join(f"{k} {v}" for k, v in sorted(data["messages"][direction].items())) or "none"
        )
        click.echo(f"{label}: {counts}")
    if data["backing_off"]:
        click.echo(f"backing off after transient errors: {data['backing_off']} conversation(s)")
    for p in data["parked"]:
        click.echo(f"PARKED conversation {p['conversation']} ({p['direction']}): {p['reason']}")
    for f in data["failed"]:
        click.echo(
            f"FAILED {f['direction']} message {f['message']} (conversation {f['conversation']}, "
            f"seq {f['seq']}, {f['attempts']} attempts): {f['error']}"
        )
    if data["failed"] or data["parked"]:
        click.echo(
            "fix the cause, then: bridge replay --message <id> | --conversation <id> | --all"
        )


@main.command()
@click.option("--message", "message_uid", help="one failed message (its id from bridge status)")
@click.option(
    "--conversation", "conversation_id", type=int, help="a conversation's failed messages"
)
@click.option("--tenant", "slug", help="restrict --all to one tenant")
@click.option("--all", "everything", is_flag=True, help="every failed message")
def replay(
    message_uid: str | None, conversation_id: int | None, slug: str | None, everything: bool
) -> None:
    """Re-run failed messages and resume their conversations."""
    from bridge.admin import replay as do_replay

    if not (message_uid or conversation_id or everything):
        raise click.UsageError("say what to replay: --message, --conversation or --all")
    rt = _runtime()
    n = do_replay(
        rt,
        message_uid=message_uid,
        conversation_id=conversation_id,
        tenant_id=_tenant_id(rt, slug) if slug else None,
    )
    click.echo(f"requeued {n} message(s)")


# -- tenants and channels ----------------------------------------------------------


@main.group()
def tenant() -> None:
    """Tenants (one CRM account each)."""


@tenant.command("create")
@click.option("--slug", required=True)
@click.option("--crm", "crm_kind", required=True)
@click.option("--mapping", required=True, help="mapping file name under the mappings directory")
@click.option("--token", envvar="BRIDGE_CRM_TOKEN", help="a private-app / long-lived token")
@click.option("--account-id", help="the CRM account id (a HubSpot portal id, ...)")
def tenant_create(
    slug: str, crm_kind: str, mapping: str, token: str | None, account_id: str | None
) -> None:
    """Create a tenant with a private-app token (OAuth installs create theirs)."""
    from bridge.admin import create_tenant, tenant_by_slug
    from bridge.registry import UnknownAdapter, crm_class
    from mappings import MappingError

    rt = _runtime()
    if tenant_by_slug(rt, slug) is not None:
        raise click.ClickException(f"tenant {slug!r} exists already (bridge status lists them)")
    try:
        creds = crm_class(crm_kind).token_credentials(token) if token else None
    except (UnknownAdapter, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if creds is not None:
        account_id = account_id or creds.pop("account_id", None)
    try:
        tenant_id = create_tenant(
            rt,
            slug=slug,
            crm_kind=crm_kind,
            mapping=mapping,
            credentials=creds,
            account_id=account_id,
        )
    except (UnknownAdapter, MappingError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"tenant {slug} created (id {tenant_id}); next: bridge <channel> connect --tenant {slug}"
    )


@main.group()
def crm() -> None:
    """CRM setup."""


@crm.command("setup")
@click.option("--tenant", "slug", required=True)
def crm_setup(slug: str) -> None:
    """Create the custom properties / inbox channel the bridge needs (idempotent)."""
    from bridge.admin import setup_crm

    rt = _runtime()
    settings = setup_crm(rt, _tenant_id(rt, slug))
    click.echo(json.dumps(settings, indent=2))


def _channel_group(kind: str) -> click.Group:
    """``bridge <channel> connect | set-webhook`` for one registered channel."""
    from bridge.registry import channel_class

    title = channel_class(kind).title

    @click.group(name=kind, help=f"{title} accounts.")
    def group() -> None:
        pass

    @group.command("connect")
    @click.option("--tenant", "slug", required=True)
    @click.option(
        "--token",
        envvar=f"{kind.upper()}_BOT_TOKEN",
        required=True,
        help=f"the {title} token (bot token from @BotFather for Telegram)",
    )
    @click.option("--name", default="", help="shown to reps")
    def connect(slug: str, token: str, name: str) -> None:
        """Store the account (token encrypted), register its webhook, set up the CRM side."""
        from bridge.setup import connect_channel

        rt = _runtime()
        account_id = connect_channel(rt, _tenant_id(rt, slug), kind=kind, token=token, name=name)
        click.echo(f"{title} connected as channel account {account_id}; webhook registered")

    @group.command("set-webhook")
    @click.option("--account", "account_id", type=int, required=True, help="channel account id")
    def set_webhook(account_id: int) -> None:
        """(Re-)register the account's webhook (after BRIDGE_PUBLIC_URL changed)."""
        from bridge.setup import set_channel_webhook

        rt = _runtime()
        url = set_channel_webhook(rt, account_id)
        click.echo(f"webhook set to {url.rsplit('/', 1)[0]}/<key>")

    return group


def _crm_group(kind: str) -> click.Group:
    """``bridge <crm> install-url | owners`` for one registered CRM."""
    from bridge.registry import crm_class

    title = crm_class(kind).title

    @click.group(name=kind, help=f"{title} installs.")
    def group() -> None:
        pass

    @group.command("install-url")
    @click.option("--mapping", default=None, help="mapping file the new tenant uses")
    def install(mapping: str | None) -> None:
        """Print the OAuth install link a CRM admin opens."""
        from bridge.oauth import install_url

        rt = _runtime()
        click.echo(install_url(rt, kind, mapping))

    @group.command("owners")
    @click.option("--tenant", "slug", required=True)
    def owners(slug: str) -> None:
        """List the account's users (owner ids for the mapping's pool)."""
        from bridge.tables import Tenant

        rt = _runtime()
        with rt.transaction() as session:
            adapter = rt.crm_adapter(session.get(Tenant, _tenant_id(rt, slug)))
        for owner in adapter.list_owners():
            click.echo(f"{owner.id}\t{owner.name or ''}\t{owner.email or ''}")

    return group


def _register_vendor_groups() -> None:
    from bridge.registry import UnknownAdapter, channel_kinds, crm_kinds

    for kind, factory in [
        *((k, _channel_group) for k in channel_kinds()),
        *((k, _crm_group) for k in crm_kinds()),
    ]:
        try:
            main.add_command(factory(kind))
        except UnknownAdapter:
            continue  # disabled (missing library): logged by the registry


_register_vendor_groups()


@main.group()
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

    rt = _runtime()
    n = rotate_secrets(rt)
    click.echo(f"re-encrypted {n} secret(s); keys after the first can now be removed")


if __name__ == "__main__":  # pragma: no cover
    main()
