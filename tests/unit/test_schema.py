# ruff: noqa: S106  (fake secrets are test fixtures)
"""Typed settings (``bridge.schema``): what adapters declare, and the
messages an admin gets when a value does not fit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bridge.registry import channel_class, channel_kinds, crm_class, crm_kinds
from bridge.schema import SettingsError, check, dump, load, public, secret_names, setting


@dataclass(frozen=True)
class Example:
    token: str = setting(secret=True, help="required, secret")
    rate: float = setting(2.0, help="a number")
    line: int | None = setting(None, help="an optional id")
    enabled: bool = setting(False)
    hosts: list[str] = setting(default_factory=list)
    ids: dict[str, str] = setting(default_factory=dict, state=True)


def test_load_coerces_what_the_environment_and_older_rows_hold() -> None:
    got = load(
        Example,
        {"token": "t", "rate": "7.5", "line": "12", "enabled": "yes", "hosts": ["a"], "ids": {}},
    )
    assert got == Example(token="t", rate=7.5, line=12, enabled=True, hosts=["a"], ids={})
    assert load(Example, {"token": "t", "line": 5, "rate": 3}).rate == 3.0
    # an id an older version stored as a number reads as text
    assert load(Example, {"token": "t", "ids": {"7": 42}}).ids == {"7": "42"}
    # null means not set; unknown keys (an older version's) are dropped
    assert load(Example, {"token": "t", "line": None, "legacy": 1}).line is None


def test_errors_name_the_key_the_value_and_what_it_must_be() -> None:
    with pytest.raises(SettingsError, match=r"acme: token: required: set it"):
        load(Example, {}, where="acme")
    with pytest.raises(SettingsError, match=r"rate: must be a number \(got 'fast'\)"):
        load(Example, {"token": "t", "rate": "fast"})
    with pytest.raises(SettingsError, match=r"enabled: must be true or false \(got 'maybe'\)"):
        load(Example, {"token": "t", "enabled": "maybe"})
    with pytest.raises(SettingsError, match=r"colour: unknown setting \(known: enabled, hosts"):
        load(Example, {"token": "t", "colour": "red"}, strict=True)
    # a secret is never echoed back
    with pytest.raises(SettingsError, match=r"token: must be text \(got <hidden>\)") as caught:
        load(Example, {"token": ["sk-live-123"]})
    assert "sk-live-123" not in str(caught.value)


def test_check_validates_only_the_keys_given() -> None:
    assert check(Example, {"rate": "4"}) == {"rate": 4.0}
    with pytest.raises(SettingsError, match="unknown setting"):
        check(Example, {"typo": 1})


def test_secrets_stay_out_of_what_is_shown() -> None:
    value = Example(token="secret-value", rate=1.0)
    assert secret_names(Example) == {"token"}
    assert "token" in dump(value) and "token" not in public(value)


@pytest.mark.parametrize("kind", crm_kinds())
def test_every_crm_declares_typed_app_and_settings(kind: str) -> None:
    cls = crm_class(kind)
    app, settings = load(cls.App, {}), load(cls.Settings, {})
    # the defaults load, and the app's OAuth secret is marked secret
    assert dump(app) is not None and dump(settings) is not None
    if "client_secret" in dump(app):
        assert "client_secret" in secret_names(cls.App)


@pytest.mark.parametrize("kind", channel_kinds())
def test_every_channel_declares_how_it_is_connected(kind: str) -> None:
    cls = channel_class(kind)
    assert dump(load(cls.Credentials, {})) is not None
    assert secret_names(cls.Credentials) == set(dump(load(cls.Credentials, {})))


def test_a_setting_with_choices_refuses_anything_else() -> None:
    @dataclass(frozen=True)
    class Choosy:
        kind: str = setting("todo", choices=("todo", "task"))

    assert load(Choosy, {"kind": "task"}).kind == "task"
    with pytest.raises(SettingsError, match=r"kind: must be one of todo, task \(got 'tsak'\)"):
        load(Choosy, {"kind": "tsak"})
    with pytest.raises(SettingsError, match="must be one of"):
        check(Choosy, {"kind": "other"})
