"""The admin console in tests: users, tenants and signing in through a
Flask test client (the real login form, its CSRF token, the session cookie)."""

from __future__ import annotations

import re
import secrets
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from bridge import create_app
from bridge.console import users
from bridge.runtime import Runtime
from bridge.tables import Tenant

__all__ = [
    "PASSWORD",
    "console_app",
    "csrf_token",
    "login",
    "make_tenant",
    "make_user",
    "post",
]

#: a password the rules accept
PASSWORD = "correct horse battery"  # noqa: S105 (a test fixture)

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"|name="csrf-token" content="([^"]+)"')


def console_app(runtime: Runtime, **config: Any) -> Flask:
    """The bridge's whole app (webhooks and all) on ``runtime``."""
    return create_app({"TESTING": True, **config}, runtime=runtime)


def make_tenant(runtime: Runtime, slug: str, name: str | None = None) -> int:
    """A tenant row (no CRM behind it: the console only lists it)."""
    with runtime.transaction() as session:
        tenant = Tenant(
            slug=slug,
            name=name or slug.title(),
            crm_kind="hubspot",
            webhook_key=secrets.token_urlsafe(24),
            mapping="hubspot.yaml",
            settings={},
        )
        session.add(tenant)
        session.flush()
        return tenant.id


def make_user(
    runtime: Runtime,
    email: str,
    password: str = PASSWORD,
    role: str = "admin",
    tenant_id: int | None = None,
    language: str = "en",
) -> int:
    """A console user; its id."""
    with runtime.transaction() as session:
        user = users.create_user(
            session,
            email=email,
            password=password,
            role=role,
            tenant_id=tenant_id,
            language=language,
        )
        return user.id


def csrf_token(client: FlaskClient, path: str = "/console/login") -> str:
    """The CSRF token of the client's session, read from a console page."""
    page = client.get(path, follow_redirects=True)
    found = _TOKEN.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {path} ({page.status_code})"
    return found.group(1) or found.group(2)


def login(client: FlaskClient, email: str, password: str = PASSWORD, **env: Any) -> TestResponse:
    """Sign in through the login form (its answer, not followed)."""
    token = csrf_token(client)
    return client.post(
        "/console/login",
        data={"email": email, "password": password, "csrf_token": token},
        **env,
    )


def post(
    client: FlaskClient, path: str, data: dict[str, Any] | None = None, **kw: Any
) -> TestResponse:
    """A console form's POST with the session's CSRF token."""
    token = csrf_token(client, "/console/login")
    return client.post(path, data={**(data or {}), "csrf_token": token}, **kw)
