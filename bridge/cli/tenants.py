"""``bridge tenant ...``, ``bridge crm setup`` and ``bridge <crm> install-url | owners``."""

from __future__ import annotations

import json
from typing import Any

import click

from bridge.cli import context
from bridge.tables import TenantStatus

__all__ = ["RegistryChoice", "register"]


class RegistryChoice(click.Choice[str]):
    """A choice among the registered adapters of one side, read when the
    command runs (tests and plugins register adapters after import)."""

    def __init__(self, side: str) -> None:
        self.side = side
        super().__init__([])

    @property
    def choices(self) -> tuple[str, ...]:
        from bridge.registry import channel_kinds, crm_kinds

        return crm_kinds() if self.side == "crm" else channel_kinds()

    @choices.setter
    def choices(self, _value: Any) -> None:
        pass


@click.group()
def tenant() -> None:
    """Tenants: one CRM account each, with its mapping and channels."""


@tenant.command("create")
@click.option("--slug", required=True, help="Your short name for it (acme).")
@click.option("--crm", "crm_kind", required=True, type=RegistryChoice("crm"))
@click.option("--mapping", required=True, help="Mapping file name in the mappings directory.")
@click.option(
    "--token",
    envvar="BRIDGE_CRM_TOKEN",
    help="A private-app / long-lived token or webhook URL (better: set BRIDGE_CRM_TOKEN, "
    "or use --ask-token, so it stays out of your shell history).",
)
@click.option("--ask-token", is_flag=True, help="Type the token at a hidden prompt.")
@click.option("--account-id", help="The account's id in the CRM (when the token does not name it).")
def tenant_create(
    slug: str,
    crm_kind: str,
    mapping: str,
    token: str | None,
    ask_token: bool,
    account_id: str | None,
) -> None:
    """Create a tenant with a private token (OAuth installs create theirs)."""
    from bridge.admin import create_tenant, tenant_by_slug
    from bridge.registry import crm_class

    rt = context.runtime()
    if tenant_by_slug(rt, slug) is not None:
        raise click.ClickException(f"tenant {slug!r} exists already (`bridge tenant list`)")
    if ask_token:
        token = click.prompt("token", hide_input=True)
    if not token:
        raise click.UsageError(
            "give the CRM's token: BRIDGE_CRM_TOKEN=... in the environment, or --ask-token "
            f"(OAuth installs create their tenant themselves: bridge {crm_kind} install-url)"
        )
    installed = crm_class(crm_kind).token_credentials(token)
    tenant_id = create_tenant(
        rt,
        slug=slug,
        crm_kind=crm_kind,
        mapping=mapping,
        credentials=installed.credentials,
        account_id=account_id or installed.account_id,
        settings=installed.settings,
    )
    click.echo(
        f"tenant {slug} created (id {tenant_id}); next: bridge <channel> connect --tenant {slug}"
    )


@tenant.command("list")
def tenant_list() -> None:
    """Every tenant: id, slug, CRM, status, channels."""
    from bridge.lifecycle import tenants

    rows = tenants(context.runtime())
    if not rows:
        click.echo("no tenants yet: `bridge run` (demo) or see README, Connecting a CRM")
        return
    click.echo("id\tslug\tcrm\taccount\tstatus\tchannels\tmapping")
    for t in rows:
        status = t["status"] + (f" ({t['reason']})" if t["reason"] else "")
        click.echo(
            f"{t['id']}\t{t['slug']}\t{t['crm']}\t{t['account'] or '-'}\t{status}\t"
            f"{t['channels']}\t{t['mapping']}"
        )


@tenant.command("show")
@click.argument("slug")
@click.option("--reveal", is_flag=True, help="Show webhook URLs with their secret keys.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def tenant_show(slug: str, reveal: bool, as_json: bool) -> None:
    """One tenant: its settings, channel accounts and what it holds."""
    from bridge.lifecycle import tenant_detail

    rt = context.runtime()
    detail = tenant_detail(rt, context.tenant_id(rt, slug), reveal=reveal)
    if as_json:
        click.echo(json.dumps(detail, indent=2, default=str))
        return
    for key in ("id", "slug", "name", "crm", "account", "mapping", "status", "crm_webhook"):
        click.echo(f"{key}: {detail[key] if detail[key] is not None else '-'}")
    held = ", ".join(f"{n} {k}" for k, n in detail["holds"].items())
    click.echo(f"holds: {held}")
    for ch in detail["channels"]:
        click.echo(
            f"channel account {ch['id']}: {ch['kind']} {ch['name']!r} [{ch['status']}] "
            f"webhook {ch['webhook']}"
        )
    if not detail["channels"]:
        click.echo(f"no channel yet: bridge <channel> connect --tenant {slug}")


@tenant.command("disable")
@click.argument("slug")
def tenant_disable(slug: str) -> None:
    """Pause a tenant: what arrives is kept, nothing is synced or sent until enabled."""
    from bridge.lifecycle import set_tenant_status

    rt = context.runtime()
    set_tenant_status(
        rt, context.tenant_id(rt, slug), TenantStatus.DISABLED, "disabled by an admin"
    )
    click.echo(f"tenant {slug} disabled; `bridge tenant enable {slug}` resumes it")


@tenant.command("enable")
@click.argument("slug")
def tenant_enable(slug: str) -> None:
    """Resume a disabled tenant and the conversations that waited for it."""
    from bridge.lifecycle import set_tenant_status

    rt = context.runtime()
    n = set_tenant_status(rt, context.tenant_id(rt, slug), TenantStatus.ACTIVE)
    click.echo(f"tenant {slug} enabled; {n} conversation(s) resumed")


@tenant.command("api-token")
@click.argument("slug")
@click.option("--name", default="", help="What the token is for (shown in no log).")
def tenant_api_token(slug: str, name: str) -> None:
    """Make a token for the tenant's /api/v1 calls (shown once, stored hashed)."""
    from bridge.apitokens import issue

    rt = context.runtime()
    click.echo(issue(rt, context.tenant_id(rt, slug), name))


@tenant.command("delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def tenant_delete(slug: str, yes: bool) -> None:
    """Delete a tenant and everything the bridge keeps for it (not the CRM's data)."""
    from bridge.lifecycle import delete_tenant

    rt = context.runtime()
    tenant_id = context.tenant_id(rt, slug)
    if not yes:
        click.confirm(
            f"delete tenant {slug} and all its contacts, conversations and messages here?",
            abort=True,
        )
    deleted, problems = delete_tenant(rt, tenant_id)
    for problem in problems:
        click.echo(f"warning: webhook not removed at the provider: {problem}", err=True)
    click.echo(f"tenant {slug} deleted ({deleted.get('messages', 0)} messages)")


@click.group()
def crm() -> None:
    """CRM setup."""


@crm.command("setup")
@click.option("--tenant", "slug", required=True)
def crm_setup(slug: str) -> None:
    """Create what the bridge needs in the CRM (properties, inbox/chat channel); idempotent."""
    from bridge.admin import setup_crm

    rt = context.runtime()
    settings = setup_crm(rt, context.tenant_id(rt, slug))
    click.echo(json.dumps(settings, indent=2, default=str))


def _crm_group(kind: str) -> click.Group:
    """``bridge <crm> install-url | owners`` for one registered CRM."""
    from bridge.registry import crm_class

    title = crm_class(kind).title

    @click.group(name=kind, help=f"{title}: install link and users.")
    def group() -> None:
        pass

    @group.command("install-url")
    @click.option("--mapping", default=None, help="Mapping file the new tenant uses.")
    def install(mapping: str | None) -> None:
        """Print the install link a CRM admin opens."""
        from bridge.oauth import install_url

        rt = context.runtime(schema=False)
        click.echo(install_url(rt, kind, mapping))

    @group.command("owners")
    @click.option("--tenant", "slug", required=True)
    def owners(slug: str) -> None:
        """List the account's users (owner ids for the mapping's pool)."""
        from bridge.tables import Tenant

        rt = context.runtime()
        tenant_id = context.tenant_id(rt, slug)
        with rt.transaction() as session:
            row = session.get(Tenant, tenant_id)
            if row is None or row.crm_kind != kind:
                raise click.ClickException(f"tenant {slug!r} is not a {title} tenant")
            adapter = rt.crm_adapter(row)
        for owner in adapter.list_owners():
            click.echo(f"{owner.id}\t{owner.name or ''}\t{owner.email or ''}")

    return group


def register(group: click.Group) -> None:
    from bridge.registry import UnknownAdapter, crm_kinds

    group.add_command(tenant)
    group.add_command(crm)
    for kind in crm_kinds():
        try:
            group.add_command(_crm_group(kind))
        except UnknownAdapter:
            continue  # disabled (missing library): logged by the registry
