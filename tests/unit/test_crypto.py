# ruff: noqa: S105, S106  (fake secrets and tokens are test fixtures)
"""Secrets at rest (``bridge.crypto``): MultiFernet rotation, the binding of
each ciphertext to its tenant and field, and clear errors for bad keys."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from bridge import admin
from bridge.config import Settings
from bridge.crypto import SecretBindingError, SecretBox, binding, load_keys
from bridge.errors import ConfigError
from bridge.runtime import Runtime
from bridge.tables import ChannelAccount, Tenant
from tests.support.harness import HUBSPOT_MAPPING, write_mapping

K1, K2, K3 = (Fernet.generate_key().decode() for _ in range(3))
CREDS = {"type": "private_app", "access_token": "pat-na1-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"}


def test_round_trip_keeps_the_value_and_hides_it() -> None:
    box = SecretBox([K1])
    token = box.encrypt(CREDS, binding=binding(1, "crm"))
    assert CREDS["access_token"] not in token and "tenant=1" not in token
    assert box.decrypt(token, binding=binding(1, "crm")) == CREDS
    # Fernet is randomised: the same secret never gives the same ciphertext twice
    assert box.encrypt(CREDS, binding=binding(1, "crm")) != token


def test_rotation_moves_every_secret_to_the_new_key() -> None:
    old = SecretBox([K1]).encrypt(CREDS, binding=binding(1, "crm"))
    during = SecretBox([K2, K1])  # the new key first, the old one still listed
    assert during.decrypt(old, binding=binding(1, "crm")) == CREDS
    rotated = during.rotate(old)
    assert rotated != old
    # only the new key is needed afterwards ...
    assert SecretBox([K2]).decrypt(rotated, binding=binding(1, "crm")) == CREDS
    # ... the old key alone cannot read it, and it is really under K2
    with pytest.raises(SecretBindingError):
        SecretBox([K1]).decrypt(rotated, binding=binding(1, "crm"))
    Fernet(K2.encode()).decrypt(rotated.encode())
    # and the binding travelled with it
    with pytest.raises(SecretBindingError):
        SecretBox([K2]).decrypt(rotated, binding=binding(2, "crm"))


def test_new_secrets_are_written_under_the_first_key() -> None:
    token = SecretBox([K2, K1]).encrypt("x", binding="b")
    assert SecretBox([K2]).decrypt(token, binding="b") == "x"
    with pytest.raises(SecretBindingError):
        SecretBox([K1]).decrypt(token, binding="b")


@pytest.mark.parametrize(
    "written,read",
    [
        (binding(1, "crm"), binding(2, "crm")),  # another tenant
        (binding(1, "crm"), binding(1, "channel:5")),  # another field
        (binding(1, "channel:5"), binding(1, "channel:6")),  # another channel account
        (binding(1, "crm"), binding(11, "crm")),  # no prefix confusion
    ],
)
def test_ciphertext_bound_elsewhere_is_refused(written: str, read: str) -> None:
    box = SecretBox([K1])
    token = box.encrypt(CREDS, binding=written)
    with pytest.raises(SecretBindingError, match="another tenant or field"):
        box.decrypt(token, binding=read)


@pytest.mark.parametrize("token", ["", "not-a-token", "gAAAAA" + "A" * 100])
def test_garbage_or_foreign_ciphertext_is_a_clear_error(token: str) -> None:
    with pytest.raises(SecretBindingError, match="cannot be decrypted with the configured keys"):
        SecretBox([K1]).decrypt(token, binding="b")


def test_wrong_key_is_a_clear_error_that_names_no_secret() -> None:
    token = SecretBox([K1]).encrypt(CREDS, binding=binding(1, "crm"))
    with pytest.raises(SecretBindingError) as caught:
        SecretBox([K2, K3]).decrypt(token, binding=binding(1, "crm"))
    assert "configured keys" in str(caught.value)
    for secret in (K1, K2, K3, CREDS["access_token"]):
        assert secret not in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        "not-a-fernet-key",
        base64.urlsafe_b64encode(b"16 bytes only!!!").decode(),  # valid base64, wrong length
        f"{K1},garbage",  # one bad key among good ones
        K1[:-2] + "!!",
    ],
    # fixed ids: K1 is generated per process, and xdist workers must collect alike
    ids=["not-base64", "wrong-length", "one-bad-among-good", "bad-characters"],
)
def test_malformed_secret_keys_are_a_config_error_with_the_fix(raw: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_env(env={"BRIDGE_SECRET_KEYS": raw, "BRIDGE_VAR_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as caught:
        Runtime(settings).secrets  # noqa: B018
    message = str(caught.value)
    assert "BRIDGE_SECRET_KEYS" in message and "Fernet.generate_key" in message
    for part in raw.split(","):
        if part != K1:
            assert part not in message


def test_no_key_at_all_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="set BRIDGE_SECRET_KEYS"):
        SecretBox([])


def test_keys_list_tolerates_spaces_and_empty_items(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_env(
        env={"BRIDGE_SECRET_KEYS": f" {K2} , ,{K1} ", "BRIDGE_VAR_DIR": str(tmp_path)}
    )
    assert settings.secret_keys == (K2, K1)
    token = SecretBox([K1]).encrypt("v", binding="b")
    assert Runtime(settings).secrets.decrypt(token, binding="b") == "v"


def test_development_key_is_generated_once_and_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = load_keys((), tmp_path / "var")
    second = load_keys((), tmp_path / "var")
    assert first == second and len(first) == 1
    Fernet(first[0].encode())  # a valid key
    mode = stat.S_IMODE(os.stat(tmp_path / "var" / "secret.key").st_mode)
    assert mode == 0o600
    assert load_keys((K1,), tmp_path / "var") == [K1]  # configured keys win


# -- at the runtime level: rows copied between tenants ----------------------------------------


def _two_tenants(runtime):  # type: ignore[no-untyped-def]
    write_mapping(runtime, "hub.yaml", HUBSPOT_MAPPING)
    a = admin.create_tenant(
        runtime, slug="a", crm_kind="hubspot", mapping="hub.yaml", account_id="1", credentials=CREDS
    )
    b = admin.create_tenant(
        runtime,
        slug="b",
        crm_kind="hubspot",
        mapping="hub.yaml",
        account_id="2",
        credentials={"type": "private_app", "access_token": "pat-b"},
    )
    return a, b


def test_tenant_credentials_copied_into_another_tenant_do_not_decrypt(runtime) -> None:  # type: ignore[no-untyped-def]
    a, b = _two_tenants(runtime)
    with runtime.transaction() as s:
        tenant_a, tenant_b = s.get(Tenant, a), s.get(Tenant, b)
        assert runtime.decrypt_tenant_credentials(tenant_a) == CREDS
        tenant_b.credentials = tenant_a.credentials  # an attacker with write access to one column
    with runtime.transaction() as s:
        with pytest.raises(SecretBindingError):
            runtime.decrypt_tenant_credentials(s.get(Tenant, b))


def test_channel_credentials_are_bound_to_their_account(runtime) -> None:  # type: ignore[no-untyped-def]
    a, b = _two_tenants(runtime)
    creds = {"bot_token": "111:AAA", "secret_token": "s1"}
    one = admin.add_channel_account(runtime, a, kind="telegram", credentials=creds)
    two = admin.add_channel_account(
        runtime, a, kind="telegram", credentials={"bot_token": "222:BBB", "secret_token": "s2"}
    )
    other_tenant = admin.add_channel_account(
        runtime, b, kind="telegram", credentials={"bot_token": "333:CCC", "secret_token": "s3"}
    )
    with runtime.transaction() as s:
        accounts = {acc.id: acc for acc in s.scalars(select(ChannelAccount))}
        assert runtime.decrypt_channel_credentials(accounts[one]) == creds
        stolen = accounts[one].credentials
        assert "111:AAA" not in stolen
        tenant_a_crm = s.get(Tenant, a).credentials
        accounts[two].credentials = stolen
        accounts[other_tenant].credentials = stolen
    with runtime.transaction() as s:
        for account_id in (two, other_tenant):
            with pytest.raises(SecretBindingError):
                runtime.decrypt_channel_credentials(s.get(ChannelAccount, account_id))
        # a CRM secret is not a channel secret either
        account = s.get(ChannelAccount, one)
        account.credentials = tenant_a_crm
        with pytest.raises(SecretBindingError):
            runtime.decrypt_channel_credentials(account)
