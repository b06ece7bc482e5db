"""``bridge admin ...``: the admin console's users from the command line
(the first owner is made here; the console's users page makes the rest).

A password is never an argument: it is typed at a hidden prompt, or read
from the first line of stdin with ``--password-stdin`` (scripts)."""

from __future__ import annotations

import sys

import click

from bridge.cli import context
from bridge.runtime import Runtime

__all__ = ["register"]

CLI_ACTOR = "bridge admin (command line)"


@click.group()
def admin() -> None:
    """The admin console's users: create them, set their second factor."""


def _tenant(rt: Runtime, value: str | None) -> int | None:
    """``--tenant``: a tenant's id or slug (None when not given)."""
    if value is None:
        return None
    from bridge.admin import tenant_by_slug
    from bridge.tables import Tenant

    if value.isdigit():
        with rt.read_session() as s:
            if s.get(Tenant, int(value)) is not None:
                return int(value)
    found = tenant_by_slug(rt, value)
    if found is None:
        raise click.ClickException(f"no tenant {value!r} (`bridge tenant list` shows them)")
    return found


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise click.UsageError("--password-stdin: nothing on stdin")
        return line.rstrip("\r\n")
    value: str = click.prompt("password", hide_input=True, confirmation_prompt=True)
    return value


@admin.command("create-user")
@click.option("--email", required=True, help="The user's e-mail (their login).")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["viewer", "admin", "owner"]),
    help="viewer: reads; admin: changes its tenant; owner: every tenant.",
)
@click.option("--tenant", help="The tenant's id or slug (not for an owner).")
@click.option(
    "--language", default="en", type=click.Choice(["en", "ru"]), help="The console's language."
)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")
def create_user(
    email: str, role: str, tenant: str | None, language: str, password_stdin: bool
) -> None:
    """Create a console user (the password at a prompt, or from stdin)."""
    from bridge.console import users

    rt = context.runtime()
    tenant_id = _tenant(rt, tenant)
    if role != "owner" and tenant_id is None:
        raise click.UsageError(f"a {role} belongs to a tenant: give --tenant <id or slug>")
    if role == "owner" and tenant_id is not None:
        raise click.UsageError("an owner sees every tenant: leave out --tenant")
    with rt.read_session() as s:
        if users.user_by_email(s, email) is not None:
            raise click.ClickException(f"a console user {users.normalise_email(email)} exists")
    password = _password(password_stdin)
    with rt.transaction() as s:
        try:
            user = users.create_user(
                s,
                email=email,
                password=password,
                role=role,
                tenant_id=tenant_id,
                language=language,
            )
        except users.UserError as exc:
            raise click.ClickException(str(exc)) from None
        users.record(
            s,
            user_id=None,
            user_email=CLI_ACTOR,
            tenant_id=user.tenant_id,
            action="user.create",
            target=f"user:{user.id} {user.email}",
            after=users.user_view(user),
        )
        user_id, shown = user.id, user.email
    where = f"tenant {tenant}" if tenant_id is not None else "every tenant"
    click.echo(
        f"console user {shown} created (id {user_id}, {role}, {where}); sign in at /console/login"
    )


@admin.command("totp")
@click.option("--email", required=True, help="The user's e-mail.")
@click.option("--remove", is_flag=True, help="Remove the second factor instead.")
def totp(email: str, remove: bool) -> None:
    """Give a user a new TOTP secret and print its otpauth:// URI once
    (scan it into an authenticator app); the old secret stops working."""
    from bridge.console import users

    rt = context.runtime()
    with rt.transaction() as s:
        user = users.user_by_email(s, email)
        if user is None:
            raise click.ClickException(
                f"no console user {users.normalise_email(email)!r} (`bridge admin users`)"
            )
        before = users.user_view(user)
        if remove:
            users.remove_totp(user)
            uri = None
        else:
            uri = users.new_totp(rt, user)
        users.record(
            s,
            user_id=None,
            user_email=CLI_ACTOR,
            tenant_id=user.tenant_id,
            action="user.totp_remove" if remove else "user.totp_set",
            target=f"user:{user.id} {user.email}",
            before=before,
            after=users.user_view(user),
        )
    if uri is None:
        click.echo(f"{email}: second factor removed; the password alone signs in")
        return
    click.echo(uri)
    click.echo(
        "Scan or paste this URI into an authenticator app now: it is not shown again "
        "(running this command again makes a new one).",
        err=True,
    )


@admin.command("users")
@click.option("--tenant", help="Only this tenant's users (id or slug).")
def list_users(tenant: str | None) -> None:
    """Every console user: id, e-mail, role, tenant, state."""
    from sqlalchemy import select

    from bridge.tables import ConsoleUser

    rt = context.runtime()
    tenant_id = _tenant(rt, tenant)
    query = select(ConsoleUser).order_by(ConsoleUser.id)
    if tenant_id is not None:
        query = query.where(ConsoleUser.tenant_id == tenant_id)
    with rt.read_session() as s:
        rows = list(s.scalars(query))
        if not rows:
            click.echo("no console users yet: bridge admin create-user --email ... --role owner")
            return
        click.echo("id\temail\trole\ttenant\t2fa\tstate\tlast sign-in")
        for u in rows:
            last = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "-"
            click.echo(
                f"{u.id}\t{u.email}\t{u.role}\t{u.tenant_id or '-'}\t"
                f"{'yes' if u.totp_secret else 'no'}\t{'disabled' if u.disabled else 'active'}\t"
                f"{last}"
            )


def register(main: click.Group) -> None:
    from bridge.console.crm_login import login_link_command

    admin.add_command(login_link_command)
    main.add_command(admin)
