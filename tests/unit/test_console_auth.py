# ruff: noqa: S105, S106  (passwords and secrets here are test fixtures)
"""The console's access layer through the whole app (Flask test client),
on SQLite and PostgreSQL: passwords (Argon2id, rehash), the login and its
second factor, the session cookie, the failed-login limits (Redis, per
account and per address), CSRF on the console only, roles and tenants,
the audit log, the users page, the words in both languages and
``bridge admin``."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher, Type
from click.testing import CliRunner
from cryptography.fernet import Fernet
from flask import Flask, g, url_for
from flask.testing import FlaskClient
from sqlalchemy import select, text
from werkzeug.exceptions import Forbidden

import bridge.runtime
from bridge.cli import main
from bridge.console import auth, i18n, users
from bridge.crypto import SecretBindingError, load_keys
from bridge.model import utcnow
from bridge.runtime import Runtime, set_runtime
from bridge.tables import ConsoleAudit, ConsoleUser
from tests.support.console import (
    PASSWORD,
    console_app,
    csrf_token,
    login,
    make_tenant,
    make_user,
    post,
)


@dataclass
class World:
    rt: Runtime
    app: Flask
    acme: int
    globex: int

    def client(self, address: str = "127.0.0.1") -> FlaskClient:
        client = self.app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        return client

    def signed_in(self, email: str, address: str = "127.0.0.1") -> FlaskClient:
        client = self.client(address)
        answer = login(client, email)
        assert answer.status_code == 302, answer.get_data(as_text=True)[-500:]
        return client

    def landing(self) -> str:
        """Where a sign-in lands: the overview when it exists, else the users page."""
        with self.app.test_request_context():
            return auth.landing_url()

    def audit_rows(self) -> list[ConsoleAudit]:
        with self.rt.read_session() as s:
            return list(s.scalars(select(ConsoleAudit).order_by(ConsoleAudit.id)))

    def user(self, email: str) -> ConsoleUser:
        with self.rt.read_session() as s:
            found = users.user_by_email(s, email)
            assert found is not None
            return found


#: the console's own hasher (Argon2id, the library's defaults: ~0.3 s a hash here)
REAL_HASHER = users._hasher


@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id with small parameters for the many sign-ins here (the
    rehash test puts the real one back)."""
    monkeypatch.setattr(
        users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def world(runtime: Runtime) -> Iterator[World]:
    acme, globex = make_tenant(runtime, "acme"), make_tenant(runtime, "globex")
    make_user(runtime, "owner@bridge.test", role="owner")
    make_user(runtime, "ann@acme.test", role="admin", tenant_id=acme)
    make_user(runtime, "vic@acme.test", role="viewer", tenant_id=acme)
    make_user(runtime, "gus@globex.test", role="admin", tenant_id=globex)
    yield World(runtime, console_app(runtime), acme, globex)


def _text(answer: Any) -> str:
    return str(answer.get_data(as_text=True))


def _signed_in(client: FlaskClient) -> bool:
    answer = client.get("/console/users")
    return bool(answer.status_code == 200)


def _emails_listed(answer: Any) -> set[str]:
    table = _text(answer).split('id="users"', 1)[1].split("</table>", 1)[0]
    return set(re.findall(r"<td>([\w.]+@[\w.]+)", table))


# -- passwords -------------------------------------------------------------------------------


def test_passwords_are_argon2id_hashes_and_old_parameters_are_rehashed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(users, "_hasher", REAL_HASHER)
    assert REAL_HASHER.type == Type.ID
    stored = users.hash_password(PASSWORD)
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    with world.rt.transaction() as s:
        user = users.user_by_email(s, "ann@acme.test")
        assert user is not None
        user.password_hash = weak.hash(PASSWORD)
    old = world.user("ann@acme.test").password_hash
    assert "m=8192,t=1" in old
    with world.rt.transaction() as s:
        user = users.user_by_email(s, "ann@acme.test")
        assert not users.check_password(user, "wrong password here")
        assert user is not None and user.password_hash == old  # a failure changes nothing
        assert users.check_password(user, PASSWORD)
    new = world.user("ann@acme.test").password_hash
    assert new != old and "m=8192,t=1" not in new and new.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(new)
    # the login rehashes too, and the new hash still signs in
    with world.rt.transaction() as s:
        user = users.user_by_email(s, "ann@acme.test")
        assert user is not None
        user.password_hash = weak.hash(PASSWORD)
    world.signed_in("ann@acme.test")
    assert "m=8192,t=1" not in world.user("ann@acme.test").password_hash
    world.signed_in("ann@acme.test")


def test_no_such_user_and_short_passwords(world: World) -> None:
    assert users.check_password(None, PASSWORD) is False
    with world.rt.transaction() as s, pytest.raises(users.UserError, match="12"):
        users.create_user(s, email="x@acme.test", password="short", role="viewer", tenant_id=1)
    with world.rt.transaction() as s, pytest.raises(users.UserError, match="exists"):
        users.create_user(
            s, email=" ANN@acme.test ", password=PASSWORD, role="viewer", tenant_id=world.acme
        )
    with world.rt.transaction() as s, pytest.raises(users.UserError, match="owner"):
        users.create_user(
            s, email="o2@x.test", password=PASSWORD, role="owner", tenant_id=world.acme
        )
    with world.rt.transaction() as s, pytest.raises(users.UserError, match="needs a tenant"):
        users.create_user(s, email="a2@x.test", password=PASSWORD, role="admin", tenant_id=None)
    with world.rt.transaction() as s, pytest.raises(LookupError):
        users.create_user(s, email="a3@x.test", password=PASSWORD, role="admin", tenant_id=999)


# -- signing in and out ----------------------------------------------------------------------


def test_a_visitor_is_sent_to_the_login_page(world: World) -> None:
    client = world.client()
    for path in ("/console/users", "/console/audit", "/console/no/such/page"):
        answer = client.get(path)
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith("/console/login?next=")
    # the login page and the stylesheet need no session
    assert client.get("/console/login").status_code == 200
    assert client.get("/console/static/console/console.css").status_code == 200


def test_login_with_the_right_password_and_not_with_a_wrong_one(world: World) -> None:
    client = world.client()
    for email, password in (
        ("ann@acme.test", "not the password"),
        ("nobody@acme.test", PASSWORD),
        ("", ""),
    ):
        answer = login(client, email, password)
        assert answer.status_code == 401
        assert "Wrong e-mail or password." in _text(answer)
        assert not _signed_in(client)
    assert world.user("ann@acme.test").last_login_at is None
    answer = login(client, " Ann@Acme.test ")
    assert answer.status_code == 302
    assert answer.headers["Location"] == world.landing()
    assert _signed_in(client)
    page = _text(client.get("/console/users"))
    assert "ann@acme.test" in page and "Sign out" in page
    assert world.user("ann@acme.test").last_login_at is not None
    row = world.audit_rows()[-1]
    assert (row.action, row.user_email, row.tenant_id) == ("sign_in", "ann@acme.test", world.acme)
    assert row.remote_addr == "127.0.0.1"


def test_the_login_goes_to_next_only_inside_the_console(world: World) -> None:
    for given, lands in (
        ("/console/audit?page=1", "/console/audit?page=1"),
        ("https://evil.example/console/x", world.landing()),
        ("//evil.example/console/x", world.landing()),
        ("/console/login", world.landing()),
    ):
        client = world.client()
        token = csrf_token(client)
        answer = client.post(
            "/console/login",
            query_string={"next": given},
            data={"email": "ann@acme.test", "password": PASSWORD, "csrf_token": token},
        )
        assert answer.status_code == 302
        assert answer.headers["Location"] == lands, given


def test_after_login_the_overview_when_it_exists(runtime: Runtime) -> None:
    make_tenant(runtime, "acme")
    make_user(runtime, "o@bridge.test", role="owner")
    app = console_app(runtime)
    if "console.overview" not in app.view_functions:
        # the overview page is another module's; stand one in for it
        app.add_url_rule("/console/", endpoint="console.overview", view_func=lambda: "overview")
    with app.test_request_context():
        overview = url_for("console.overview")
    answer = login(app.test_client(), "o@bridge.test")
    assert answer.headers["Location"] == overview


def test_the_session_cookie_is_http_only_lax_and_secure_over_https(runtime: Runtime) -> None:
    make_user(runtime, "o@bridge.test", role="owner")

    def cookie(app: Flask) -> str:
        answer = login(app.test_client(), "o@bridge.test")
        assert answer.status_code == 302
        header = next(h for h in answer.headers.getlist("Set-Cookie") if h.startswith("session="))
        return header.lower()

    plain = cookie(console_app(runtime))  # BRIDGE_PUBLIC_URL is http here (a sandbox, dev)
    assert "httponly" in plain and "samesite=lax" in plain and "secure" not in plain
    assert "expires=" in plain  # a lifetime, not a browser session
    assert "secure" in cookie(console_app(runtime, CONSOLE_SECURE_COOKIE=True))
    https = Runtime(
        replace(runtime.settings, public_url="https://bridge.example"),
        redis_connection=runtime.redis,
    )
    try:
        assert "; secure" in cookie(console_app(https))
        assert "secure" not in cookie(console_app(https, CONSOLE_SECURE_COOKIE=False))
    finally:
        https.close()
        set_runtime(runtime)


def test_the_secret_key_comes_from_the_bridges_keys_and_workers_share_sessions(
    runtime: Runtime,
) -> None:
    make_user(runtime, "o@bridge.test", role="owner")
    first, second = console_app(runtime), console_app(runtime)
    key = load_keys(runtime.settings.secret_keys, runtime.settings.var_dir)[0]
    derived = hmac.new(key.encode(), b"bridge console session v1", hashlib.sha256).hexdigest()
    assert first.secret_key == second.secret_key == derived
    assert (runtime.settings.var_dir / "secret.key").exists()  # the dev key, kept in var/
    client = first.test_client()
    assert login(client, "o@bridge.test").status_code == 302
    value = client.get_cookie("session")
    assert value is not None
    other = second.test_client()
    other.set_cookie("session", value.value)
    assert _signed_in(other)  # another worker with the same keys
    stranger = console_app(runtime, SECRET_KEY="another deployment's key")
    forged = stranger.test_client()
    forged.set_cookie("session", value.value)
    assert not _signed_in(forged)


def test_logout_ends_the_session_and_its_cookie_cannot_be_replayed(world: World) -> None:
    client = world.signed_in("vic@acme.test")  # a viewer may sign out
    cookie = client.get_cookie("session")
    assert cookie is not None
    answer = post(client, "/console/logout")
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/login"
    assert not _signed_in(client)
    client.set_cookie("session", cookie.value)  # the copy taken before signing out
    assert not _signed_in(client)
    assert [r.action for r in world.audit_rows()][-2:] == ["sign_in", "sign_out"]
    # a GET cannot sign anyone out (only the console's 404 page)
    again = world.signed_in("vic@acme.test")
    assert again.get("/console/logout").status_code == 404
    assert _signed_in(again)


def test_a_disabled_user_is_out_at_once_and_cannot_sign_in(world: World) -> None:
    client = world.signed_in("vic@acme.test")
    with world.rt.transaction() as s:
        user = users.user_by_email(s, "vic@acme.test")
        assert user is not None
        user.disabled = True
    assert not _signed_in(client)
    assert login(world.client(), "vic@acme.test").status_code == 401


# -- the second factor -----------------------------------------------------------------------


def _give_totp(world: World, email: str) -> pyotp.TOTP:
    with world.rt.transaction() as s:
        user = users.user_by_email(s, email)
        assert user is not None
        uri = users.new_totp(world.rt, user)
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    return totp


def _code(client: FlaskClient, code: str) -> Any:
    token = csrf_token(client, "/console/login/totp")
    return client.post("/console/login/totp", data={"code": code, "csrf_token": token})


def test_a_user_with_totp_needs_the_code(world: World) -> None:
    totp = _give_totp(world, "ann@acme.test")
    stored = world.user("ann@acme.test").totp_secret
    assert stored is not None and totp.secret not in stored  # encrypted at rest
    with world.rt.engine.connect() as conn:
        raw = conn.execute(text("SELECT totp_secret FROM console_users")).scalars().all()
    assert not any(totp.secret in (value or "") for value in raw)

    client = world.client()
    answer = login(client, "ann@acme.test")
    assert answer.status_code == 302 and answer.headers["Location"].startswith(
        "/console/login/totp"
    )
    assert not _signed_in(client)  # the password alone is not enough
    now = utcnow()
    for wrong in ("000000", "12345", "abcdef", totp.at(now, counter_offset=3)):
        answered = _code(client, wrong)
        assert answered.status_code == 401, wrong
        assert "That code is wrong or was used already." in _text(answered)
    assert not _signed_in(client)
    # one step of clock drift is allowed (valid_window=1)
    answer = _code(client, totp.at(now, counter_offset=-1))
    assert answer.status_code == 302 and answer.headers["Location"] == world.landing()
    assert _signed_in(client)
    # the same code never signs in twice
    other = world.client()
    login(other, "ann@acme.test")
    assert _code(other, totp.at(now, counter_offset=-1)).status_code == 401
    assert _code(other, totp.at(now)).status_code == 302
    assert _signed_in(other)


def test_the_code_must_follow_the_password_within_five_minutes(world: World) -> None:
    totp = _give_totp(world, "ann@acme.test")
    client = world.client()
    assert client.get("/console/login/totp").status_code == 302  # no password given yet
    login(client, "ann@acme.test")
    with client.session_transaction() as session:
        session["console_pending"] = {**session["console_pending"], "at": time.time() - 301}
    answer = _code(client, totp.now())
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/console/login")
    assert not _signed_in(client)


# -- failed sign-ins -------------------------------------------------------------------------


def test_five_failures_lock_the_account_from_every_address(world: World) -> None:
    first = world.client("10.0.0.1")
    for _ in range(auth.FAILURES_PER_ACCOUNT):
        assert login(first, "ann@acme.test", "wrong password!").status_code == 401
    # the right password, from another address, through another worker: still locked
    other_worker = console_app(world.rt).test_client()
    other_worker.environ_base["REMOTE_ADDR"] = "10.0.0.2"
    answer = login(other_worker, "ann@acme.test")
    assert answer.status_code == 429
    wait = int(answer.headers["Retry-After"])
    assert 0 < wait <= auth.FAILURE_WINDOW
    assert f"Try again in {auth.minutes(wait)} min." in _text(answer)
    assert not _signed_in(other_worker)
    token = csrf_token(other_worker)
    as_json = other_worker.post(
        "/console/login",
        data={"email": "ann@acme.test", "password": PASSWORD, "csrf_token": token},
        headers={"Accept": "application/json"},
    )
    assert as_json.status_code == 429
    assert as_json.json is not None and as_json.json["error"] == "too_many_attempts"
    assert 0 < as_json.json["retry_after"] <= auth.FAILURE_WINDOW
    # another account from the first address is not locked (5 < 20 for the address)
    assert login(first, "vic@acme.test").status_code == 302
    # the window ends (Redis expires the count): the right password works again
    for key in world.rt.redis.scan_iter("bridge:console:fail:account:*"):
        world.rt.redis.delete(key)
    assert login(world.client("10.0.0.2"), "ann@acme.test").status_code == 302


def test_twenty_failures_lock_the_address_for_every_account(world: World) -> None:
    attacker = world.client("10.0.0.9")
    for n in range(auth.FAILURES_PER_ADDRESS):
        # a few tries per account: no account reaches its own limit
        email = f"guess{n // 4}@acme.test"
        assert login(attacker, email, "wrong password!").status_code == 401
    answer = login(attacker, "gus@globex.test")  # a real account, the right password
    assert answer.status_code == 429
    assert "Too many failed sign-ins." in _text(answer)
    # the same account from another address is fine
    assert login(world.client("10.0.0.10"), "gus@globex.test").status_code == 302


def test_a_success_starts_the_accounts_count_again(world: World) -> None:
    client = world.client("10.0.0.3")
    for _ in range(auth.FAILURES_PER_ACCOUNT - 1):
        assert login(client, "ann@acme.test", "wrong password!").status_code == 401
    assert login(client, "ann@acme.test").status_code == 302
    fresh = world.client("10.0.0.4")
    for _ in range(auth.FAILURES_PER_ACCOUNT - 1):
        assert login(fresh, "ann@acme.test", "wrong password!").status_code == 401
    assert login(fresh, "ann@acme.test").status_code == 302


def test_wrong_totp_codes_count_as_failures(world: World) -> None:
    _give_totp(world, "ann@acme.test")
    client = world.client("10.0.0.5")
    login(client, "ann@acme.test")
    for _ in range(auth.FAILURES_PER_ACCOUNT):
        assert _code(client, "000000").status_code == 401
    assert _code(client, "000000").status_code == 429
    answer = _code(client, "000000")  # the pending login was dropped
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/console/login")
    assert login(world.client("10.0.0.6"), "ann@acme.test").status_code == 429


# -- CSRF ------------------------------------------------------------------------------------


def test_a_console_post_needs_the_csrf_token(world: World) -> None:
    client = world.signed_in("ann@acme.test")
    new = {"email": "new@acme.test", "password": PASSWORD, "role": "viewer", "language": "en"}
    for data, headers in (
        (new, {}),
        ({**new, "csrf_token": "forged"}, {}),
        (new, {"X-CSRFToken": "forged"}),
    ):
        answer = client.post("/console/users", data=data, headers=headers)
        assert answer.status_code == 400
        assert "CSRF token missing or invalid" in _text(answer)
        assert "<nav" in _text(answer)  # the console's page
    answer = client.post("/console/users", data=new, headers={"Accept": "application/json"})
    assert answer.status_code == 400
    assert answer.json == {"error": "csrf", "message": "CSRF token missing or invalid"}
    assert login(world.client(), "ann@acme.test", PASSWORD).status_code == 302  # with a token
    bare = world.client().post(
        "/console/login", data={"email": "ann@acme.test", "password": PASSWORD}
    )
    assert bare.status_code == 400
    with world.rt.read_session() as s:
        assert users.user_by_email(s, "new@acme.test") is None
    # the form's token, or the page's token in the header (a script's fetch)
    assert post(client, "/console/users", new).status_code == 302
    token = csrf_token(client, "/console/users")
    answer = client.post(
        "/console/users",
        data={**new, "email": "new2@acme.test"},
        headers={"X-CSRFToken": token},
    )
    assert answer.status_code == 302
    with world.rt.read_session() as s:
        assert users.user_by_email(s, "new@acme.test") is not None
        assert users.user_by_email(s, "new2@acme.test") is not None


def test_no_other_route_is_asked_for_a_csrf_token(world: World) -> None:
    """Webhooks and APIs are posted to by machines: CSRFProtect is on the
    app but never asks them (tests/security/test_hostile_input.py and the
    webhook suites post without one)."""
    client = world.signed_in("ann@acme.test")  # even with a console session
    for path, status in (
        ("/webhooks/telegram/no-such-key", 404),
        ("/webhooks/crm/hubspot/no-such-key", 404),
        ("/api/v1/messages/cascade", 401),
    ):
        answer = client.post(path, json={"x": 1})
        assert answer.status_code == status, (path, _text(answer))
        assert "CSRF" not in _text(answer)


# -- roles and tenants -----------------------------------------------------------------------


def test_a_viewer_sees_pages_but_changes_nothing(world: World) -> None:
    client = world.signed_in("vic@acme.test")
    users_page = client.get("/console/users")
    assert users_page.status_code == 200
    assert "ann@acme.test" in _text(users_page)
    assert 'id="add-user"' not in _text(users_page) and "Disable" not in _text(users_page)
    assert client.get("/console/audit").status_code == 200
    ann = world.user("ann@acme.test").id
    new = {"email": "new@acme.test", "password": PASSWORD, "role": "viewer"}
    for path, data in (
        ("/console/users", new),
        (f"/console/users/{ann}/disable", {}),
        (f"/console/users/{ann}/enable", {}),
    ):
        answer = post(client, path, data)
        assert answer.status_code == 403, path
        assert "Your role does not allow this." in _text(answer)
    assert not world.user("ann@acme.test").disabled
    assert [r.action for r in world.audit_rows()] == ["sign_in"]


def test_an_admin_sees_its_own_tenant_only(world: World) -> None:
    client = world.signed_in("ann@acme.test")
    assert _emails_listed(client.get("/console/users")) == {"ann@acme.test", "vic@acme.test"}
    for path in (
        f"/console/users?tenant={world.globex}",
        f"/console/audit?tenant={world.globex}",
        "/console/users?tenant=999999",
        "/console/users?tenant=abc",
    ):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert "There is no such page, or it is not yours to see." in _text(answer)
        assert "gus@globex.test" not in _text(answer)
    gus = world.user("gus@globex.test").id
    owner = world.user("owner@bridge.test").id
    for path in (f"/console/users/{gus}/disable", f"/console/users/{owner}/disable"):
        assert post(client, path).status_code == 404
    assert not world.user("gus@globex.test").disabled
    # an admin makes no owner, and nobody disables themself
    made = post(
        client, "/console/users", {"email": "o2@x.test", "password": PASSWORD, "role": "owner"}
    )
    assert made.status_code == 403
    ann = world.user("ann@acme.test").id
    answer = post(client, f"/console/users/{ann}/disable")
    assert answer.status_code == 400 and "You cannot disable yourself." in _text(answer)
    # the tenant selector offers its own tenant only
    page = _text(client.get("/console/users"))
    assert "Acme" in page and "Globex" not in page


def test_the_owner_sees_every_tenant(world: World) -> None:
    client = world.signed_in("owner@bridge.test")
    default = client.get("/console/users")  # the first tenant, and the owners
    assert _emails_listed(default) == {"owner@bridge.test", "ann@acme.test", "vic@acme.test"}
    page = _text(default)
    assert f'<option value="{world.acme}" selected>Acme</option>' in page
    assert f'<option value="{world.globex}">Globex</option>' in page
    globex = client.get(f"/console/users?tenant={world.globex}")
    assert _emails_listed(globex) == {"owner@bridge.test", "gus@globex.test"}
    gus = world.user("gus@globex.test").id
    answer = post(client, f"/console/users/{gus}/disable?tenant={world.globex}")
    assert answer.status_code == 302
    assert answer.headers["Location"] == f"/console/users?tenant={world.globex}"
    assert world.user("gus@globex.test").disabled
    made = post(
        client,
        "/console/users",
        {"email": "second-owner@bridge.test", "password": PASSWORD, "role": "owner"},
    )
    assert made.status_code == 302
    second = world.user("second-owner@bridge.test")
    assert (second.role, second.tenant_id) == ("owner", None)
    assert client.get("/console/users?tenant=999999").status_code == 404


def test_login_required_guards_a_view_by_role() -> None:
    app = Flask(__name__)
    seen: list[str] = []

    @auth.login_required("admin")
    def admin_view() -> str:
        seen.append("admin")
        return "ok"

    @auth.login_required
    def any_view() -> str:
        return "ok"

    viewer = auth.ConsoleUser(id=1, email="v@x", role="viewer", tenant_id=1, language="en")
    admin = replace(viewer, role="admin")
    app.add_url_rule("/console/login", endpoint="console.login")
    with app.test_request_context("/console/x"):
        g.console_user = None
        assert admin_view().status_code == 302
        g.console_user = viewer
        assert any_view() == "ok"
        with pytest.raises(Forbidden):
            admin_view()
        g.console_user = admin
        assert admin_view() == "ok" and seen == ["admin"]
    with pytest.raises(ValueError, match="unknown console role"):
        auth.login_required("superuser")


# -- the audit log ---------------------------------------------------------------------------


def test_every_change_writes_an_audit_row_with_before_and_after(world: World) -> None:
    client = world.signed_in("ann@acme.test")
    made = post(
        client,
        "/console/users",
        {"email": "Neo@Acme.test", "password": PASSWORD, "role": "viewer", "language": "ru"},
    )
    assert made.status_code == 302
    assert "User neo@acme.test added." in _text(client.get("/console/users"))
    neo = world.user("neo@acme.test")
    assert (neo.role, neo.tenant_id, neo.language) == ("viewer", world.acme, "ru")
    assert post(client, f"/console/users/{neo.id}/disable").status_code == 302
    assert post(client, f"/console/users/{neo.id}/enable").status_code == 302
    changes = [r for r in world.audit_rows() if r.action.startswith("user.")]
    assert [r.action for r in changes] == ["user.create", "user.disable", "user.enable"]
    ann = world.user("ann@acme.test")
    view = {
        "email": "neo@acme.test",
        "role": "viewer",
        "tenant_id": world.acme,
        "language": "ru",
        "disabled": False,
        "totp": False,
    }
    for row in changes:
        assert (row.user_id, row.user_email, row.tenant_id) == (ann.id, ann.email, world.acme)
        assert row.target == f"user:{neo.id} neo@acme.test"
        assert row.remote_addr == "127.0.0.1" and row.at is not None
    assert (changes[0].before, changes[0].after) == (None, view)
    assert (changes[1].before, changes[1].after) == (view, {**view, "disabled": True})
    assert (changes[2].before, changes[2].after) == ({**view, "disabled": True}, view)
    assert not any(PASSWORD in str(r.after) or "argon2" in str(r.after) for r in changes)
    # refused changes leave no row
    before = len(world.audit_rows())
    assert post(client, "/console/users", {"email": "bad", "password": PASSWORD}).status_code == 400
    assert len(world.audit_rows()) == before


def test_the_audit_page_lists_the_tenants_rows_newest_first_in_pages(world: World) -> None:
    with world.rt.transaction() as s:
        for n in range(55):
            users.record(
                s,
                user_id=None,
                user_email="cli",
                tenant_id=world.acme,
                action=f"test.{n}",
                target=f"thing:{n}",
                before={"n": n},
                after={"n": n + 1},
            )
        users.record(
            s,
            user_id=None,
            user_email="cli",
            tenant_id=world.globex,
            action="test.globex",
            target="theirs",
        )
    client = world.signed_in("vic@acme.test")  # a viewer reads it
    first = _text(client.get("/console/audit"))
    actions = re.findall(r"<code>(test\.\w+|sign_in)</code>", first)
    assert len(actions) == 50 and actions[0] == "sign_in" and actions[1] == "test.54"
    assert "test.globex" not in first
    assert "&#34;n&#34;: 54" in first or '"n": 54' in first  # the values before/after
    second = _text(client.get(f"/console/audit?tenant={world.acme}&page=2"))
    assert re.findall(r"<code>(test\.\w+)</code>", second) == [
        f"test.{n}" for n in range(5, -1, -1)
    ]
    assert "Newer" in second and "Older" not in second
    assert "Older" in first
    # the owner sees the other tenant's rows there
    owner = world.signed_in("owner@bridge.test")
    assert "test.globex" in _text(owner.get(f"/console/audit?tenant={world.globex}"))


# -- words and pages -------------------------------------------------------------------------


def test_pages_in_russian_by_choice_by_browser_and_by_user(world: World) -> None:
    client = world.client()
    assert "Вход в консоль" in _text(client.get("/console/login?lang=ru"))
    assert "Вход в консоль" in _text(client.get("/console/login"))  # remembered
    assert "Sign in to the console" in _text(client.get("/console/login?lang=en"))
    browser = world.client()
    page = client_page = browser.get("/console/login", headers={"Accept-Language": "ru,en;q=0.5"})
    assert "Вход в консоль" in _text(page) and '<html lang="ru">' in _text(client_page)
    make_user(world.rt, "ru@acme.test", role="viewer", tenant_id=world.acme, language="ru")
    russian = world.signed_in("ru@acme.test")
    assert "Пользователи консоли" in _text(russian.get("/console/users"))
    wrong = login(world.client(), "ann@acme.test", "wrong password", headers={})
    assert "Wrong e-mail or password." in _text(wrong)


def test_every_word_has_both_languages() -> None:
    assert set(i18n._WORDS["en"]) == set(i18n._WORDS["ru"])
    assert all(i18n._WORDS["ru"][k] for k in i18n._WORDS["ru"])
    with pytest.raises(ValueError, match="both languages"):
        i18n.register({"x.only_en": "x"}, {})


def test_console_errors_are_pages_in_the_layout(world: World) -> None:
    client = world.signed_in("ann@acme.test")
    answer = client.get("/console/no/such/page")
    assert answer.status_code == 404
    page = _text(answer)
    assert "<nav" in page and "Not found" in page and "ann@acme.test" in page
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"
    as_json = client.get("/console/no/such/page", headers={"Accept": "application/json"})
    assert as_json.status_code == 404 and as_json.json is not None


# -- bridge admin ----------------------------------------------------------------------------


def _cli(runtime: Runtime, args: list[str], stdin: str | None = None) -> Any:
    settings = runtime.settings
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BRIDGE_VAR_DIR": str(settings.var_dir),
        "BRIDGE_MAPPINGS_DIR": str(settings.mappings_dir),
    }
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        return CliRunner().invoke(main, args, input=stdin, env=env, catch_exceptions=True)
    finally:
        root.handlers[:], root.level = saved
        current = bridge.runtime._current
        if current is not None and current is not runtime:
            current.close()
        set_runtime(runtime)


def test_bridge_admin_create_user_and_totp(world: World) -> None:
    rt = world.rt
    made = _cli(
        rt,
        [
            "admin",
            "create-user",
            "--email",
            "Cli@Acme.test",
            "--role",
            "admin",
            "--tenant",
            "acme",
            "--password-stdin",
        ],
        stdin="a long enough password\n",
    )
    assert made.exit_code == 0, made.output
    assert "console user cli@acme.test created" in made.output
    assert "a long enough password" not in made.output
    assert world.user("cli@acme.test").tenant_id == world.acme
    assert login(world.client(), "cli@acme.test", "a long enough password").status_code == 302
    # the prompt (typed twice, hidden)
    prompted = _cli(
        rt,
        [
            "admin",
            "create-user",
            "--email",
            "p@globex.test",
            "--role",
            "viewer",
            "--tenant",
            str(world.globex),
        ],
        stdin="prompted password!\nprompted password!\n",
    )
    assert prompted.exit_code == 0, prompted.output
    assert "prompted password!" not in prompted.output
    assert world.user("p@globex.test").tenant_id == world.globex
    # never a password on the command line
    argv = _cli(
        rt,
        [
            "admin",
            "create-user",
            "--email",
            "x@acme.test",
            "--role",
            "viewer",
            "--tenant",
            "acme",
            "--password",
            "in argv",
        ],
    )
    assert argv.exit_code == 2 and "No such option" in argv.output
    for args, message in (
        (["--role", "viewer", "--tenant", "nope"], "no tenant 'nope'"),
        (["--role", "viewer"], "give --tenant"),
        (["--role", "owner", "--tenant", "acme"], "leave out --tenant"),
    ):
        refused = _cli(rt, ["admin", "create-user", "--email", "y@acme.test", *args], "x\n")
        assert refused.exit_code in (1, 2) and message in refused.output, refused.output
    short = _cli(
        rt,
        [
            "admin",
            "create-user",
            "--email",
            "s@acme.test",
            "--role",
            "viewer",
            "--tenant",
            "acme",
            "--password-stdin",
        ],
        stdin="short\n",
    )
    assert short.exit_code == 1 and "12" in short.output
    exists = _cli(
        rt,
        [
            "admin",
            "create-user",
            "--email",
            "ann@acme.test",
            "--role",
            "viewer",
            "--tenant",
            "acme",
            "--password-stdin",
        ],
        stdin="a long enough password\n",
    )
    assert exists.exit_code == 1 and "exists" in exists.output
    # the second factor: the URI once, the secret kept encrypted
    shown = _cli(rt, ["admin", "totp", "--email", "cli@acme.test"])
    assert shown.exit_code == 0, shown.output
    uri = shown.stdout.strip()
    assert uri.startswith("otpauth://totp/CRM%20bridge:cli%40acme.test?secret=")
    totp = pyotp.parse_uri(uri)
    assert world.user("cli@acme.test").totp_secret is not None
    assert totp.secret not in str(world.user("cli@acme.test").totp_secret)
    client = world.client()
    assert (
        login(client, "cli@acme.test", "a long enough password")
        .headers["Location"]
        .startswith("/console/login/totp")
    )
    assert _code(client, totp.now()).status_code == 302
    assert _cli(rt, ["admin", "totp", "--email", "nobody@x.test"]).exit_code == 1
    listed = _cli(rt, ["admin", "users", "--tenant", "acme"])
    assert "cli@acme.test\tadmin\t" in listed.output and "gus@globex.test" not in listed.output
    actions = [(r.action, r.user_email) for r in world.audit_rows() if r.user_id is None]
    assert ("user.create", "bridge admin (command line)") in actions
    assert ("user.totp_set", "bridge admin (command line)") in actions


def test_totp_secrets_follow_a_key_rotation(runtime: Runtime) -> None:
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()

    def under(*keys: str) -> Runtime:
        return Runtime(replace(runtime.settings, secret_keys=keys), redis_connection=runtime.redis)

    old, both, new = under(k1), under(k2, k1), under(k2)
    try:
        uid = make_user(old, "o@bridge.test", role="owner")
        with old.transaction() as s:
            user = s.get(ConsoleUser, uid)
            assert user is not None
            totp = pyotp.parse_uri(users.new_totp(old, user))
        assert isinstance(totp, pyotp.TOTP)
        assert users.rotate_totp_secrets(both) == 1
        with new.read_session() as s:
            user = s.get(ConsoleUser, uid)
            assert user is not None
            assert users.totp_check(new, user, totp.now()) is not None
            with pytest.raises(SecretBindingError):
                users.totp_check(old, user, totp.now())
            # a secret copied to another user's row does not decrypt there
            user.id = uid + 1
            with pytest.raises(SecretBindingError):
                users.totp_check(new, user, totp.now())
    finally:
        for rt in (old, both, new):
            rt.close()
        set_runtime(runtime)
