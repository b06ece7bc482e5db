"""Typed settings that adapters declare (the Singer SDK's typed config, with
dataclasses).

Each adapter class names three schemas, all frozen dataclasses whose fields
are declared with :func:`setting`:

* ``App`` — deployment-wide app settings from the environment
  (``<KIND>_<FIELD>``, e.g. ``HUBSPOT_CLIENT_ID``);
* ``Settings`` — one account's settings: what an admin may set (a rate, a
  reply marker) and what the setup or the install records (``state=True``:
  an inbox id, a chat scope);
* ``Credentials`` — what authenticates the account (tokens).

A field marked ``secret=True`` is stored encrypted, like every credential,
and never shown; ``state=True`` marks what the bridge writes itself (not an
admin). :func:`load` checks a stored or typed-in mapping against a schema
and names the key and the fix when it does not fit.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Hashable, Mapping
from typing import Any, TypeVar, Union

__all__ = [
    "NoSettings",
    "SettingsError",
    "check",
    "dump",
    "fields_of",
    "load",
    "public",
    "secret_names",
    "setting",
]

T = TypeVar("T")


class SettingsError(ValueError):
    """A value does not fit its schema; ``str()`` names the key and the fix."""

    def __init__(self, where: str, key: str, message: str) -> None:
        self.where, self.key = where, key
        super().__init__(f"{where}: {key}: {message}" if where else f"{key}: {message}")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    secret: bool = False,
    state: bool = False,
    help: str = "",  # noqa: A002 — the field's description, as argparse names it
    default_factory: Any = dataclasses.MISSING,
    choices: tuple[Any, ...] = (),
) -> Any:
    """A field of a settings schema (see the module docstring); ``choices``:
    the only values it may take."""
    metadata = {"secret": secret, "state": state, "help": help, "choices": tuple(choices)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The schema of an adapter that declares nothing."""


def fields_of(schema: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(schema)


def secret_names(schema: type) -> frozenset[str]:
    return frozenset(f.name for f in fields_of(schema) if f.metadata.get("secret"))


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint) if a is not type(None))
    if origin in (list, tuple):
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return {str: "text", int: "a whole number", float: "a number", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _value(spec: dataclasses.Field[Any], hint: Any, value: Any, where: str) -> Any:
    """``value`` for the field ``spec``, or ``SettingsError`` naming the fix."""
    try:
        got = _coerce(hint, value)
    except TypeError:
        shown = "<hidden>" if spec.metadata.get("secret") else repr(value)[:60]
        raise SettingsError(where, spec.name, f"must be {_describe(hint)} (got {shown})") from None
    choices = spec.metadata.get("choices") or ()
    if choices and got not in choices:
        allowed = ", ".join(str(c) for c in choices)
        raise SettingsError(where, spec.name, f"must be one of {allowed} (got {got!r})")
    return got


def _coerce(hint: Any, value: Any) -> Any:
    """``value`` as ``hint`` wants it, or ``TypeError``. Numbers and booleans
    may come as text (environment variables, the command line)."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value)
            except TypeError:
                continue
        raise TypeError
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        (item,) = typing.get_args(hint)[:1] or (Any,)
        items = [_coerce(item, v) for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError
        key_type, value_type = typing.get_args(hint) or (Any, Any)
        return {_coerce(key_type, k): _coerce(value_type, v) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise TypeError
    if hint is int:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise TypeError
    if hint is float:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError from None
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # ids stored as numbers by an older version
        raise TypeError
    if isinstance(value, hint):
        return value
    raise TypeError


def load(
    schema: type[T], data: Mapping[str, Any] | None, *, where: str = "", strict: bool = False
) -> T:
    """An instance of ``schema`` from ``data``. Keys the schema does not
    know are dropped (what an older version stored), or refused with
    ``strict`` (what an admin typed)."""
    data = dict(data or {})
    hints = _hints(schema)
    known = {f.name: f for f in fields_of(schema)}
    if strict:
        for key in data:
            if key not in known:
                names = ", ".join(sorted(known)) or "none"
                raise SettingsError(where, key, f"unknown setting (known: {names})")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if data.get(name, 0) is None and not _required(spec):
            continue  # stored as null: not set
        if name not in data:
            if _required(spec):
                raise SettingsError(where, name, "required: set it")
            continue
        values[name] = _value(spec, hints[name], data[name], where)
    return schema(**values)


def check(schema: type, updates: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """``updates`` checked key by key against ``schema`` (each must be one
    of its fields, of its type), coerced; the fields not named are left
    alone."""
    hints = _hints(schema)
    known = {f.name: f for f in fields_of(schema)}
    out: dict[str, Any] = {}
    for key, value in updates.items():
        if key not in known:
            names = ", ".join(sorted(known)) or "none"
            raise SettingsError(where, key, f"unknown setting (known: {names})")
        out[key] = _value(known[key], hints[key], value, where)
    return out


def _hints(schema: type) -> dict[str, Any]:
    """The schema's resolved field types (a schema is a class: read once;
    each adapter built per job reads its ``Settings`` and ``App``)."""
    return _resolved(schema)


@functools.cache
def _resolved(schema: Hashable) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _required(spec: dataclasses.Field[Any]) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def dump(instance: Any) -> dict[str, Any]:
    """Every field, JSON-ready (tuples as lists)."""
    out: dict[str, Any] = {}
    for spec in fields_of(type(instance)):
        value = getattr(instance, spec.name)
        out[spec.name] = list(value) if isinstance(value, tuple) else value
    return out


def public(instance: Any) -> dict[str, Any]:
    """The fields that are not secret (what may be shown)."""
    hidden = secret_names(type(instance))
    return {k: v for k, v in dump(instance).items() if k not in hidden}
