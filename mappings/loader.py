"""Load and validate mapping files (YAML, one per tenant).

Every problem is a ``(key, message)`` pair: the dotted key
(``channels.telegram.owner.pool[0]``) and one sentence with the value the
file holds and what to write instead. marshmallow's own messages ("Not a
valid boolean.", "Unknown field.", ...) are translated here, in one place,
so the runtime (``MappingStore``), start-up and ``bridge check-config`` all
say the same thing.
"""

from __future__ import annotations

import difflib
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, validate

from mappings.schema import MappingConfig, MappingSchema

__all__ = [
    "MappingError",
    "MappingRead",
    "MappingStore",
    "flatten_errors",
    "load_mapping",
    "parse_mapping",
    "read_mapping",
    "read_text",
    "show",
]


class _Index(int):
    """A list position in a key path (shown ``pool[0]``), unlike a mapping
    key that happens to be a number (``contact.7``)."""


Path_ = tuple[Any, ...]
#: longest value shown back in a message, repr included
SHOWN_CHARS = 60
_ABSENT: Any = object()


class MappingError(ValueError):
    """A mapping file is invalid. ``problems`` are ``(key, message)`` pairs;
    ``str()`` names the file, each key and the fix."""

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {key}: {msg}" if key else f"{file}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class MappingRead:
    """What one mapping text gave: the YAML ``data`` (None when the text is
    not a YAML mapping), the ``config`` (None when anything is wrong) and
    every ``problem`` found, so the CRM checks can still run on ``data``."""

    data: dict[str, Any] | None
    config: MappingConfig | None
    problems: list[tuple[str, str]]


def show(value: Any) -> str:
    """A value as a message quotes it: its repr, cut to :data:`SHOWN_CHARS`."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


# -- YAML ------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """``safe_load`` that refuses a key written twice in one mapping: PyYAML
    silently keeps the last one (yaml/pyyaml#41), so a second ``inbox:``
    further down would quietly undo the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one block", key_node.start_mark
                )
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key))
        return super().construct_mapping(node, deep=deep)


def _yaml(text: str) -> tuple[Any, list[tuple[str, str]]]:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader), []  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return None, [(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]
    except ValueError as exc:
        # PyYAML reads an unquoted 2026-13-01 as a date and raises ValueError
        return None, [("", f"not valid YAML: {exc}; quote the value if it is not a date")]


# -- marshmallow's errors, translated --------------------------------------------------------


def flatten_errors(
    messages: Any, data: Any = _ABSENT, schema: Schema | None = None
) -> list[tuple[str, str]]:
    """marshmallow's nested error dict -> ``[("channels.telegram.owner.pool", "...")]``,
    each message a sentence with the value found in ``data`` (the loaded
    YAML) and, for an unknown key, the closest key ``schema`` has there."""
    return list(_walk(messages, data, schema, ()))


def _walk(
    messages: Any, value: Any, node: Schema | fields.Field | None, path: Path_
) -> Iterator[tuple[str, str]]:
    if not isinstance(messages, dict):
        for text in _texts(messages):
            yield _key(path), _humane(text, value, node)
        return
    if isinstance(node, fields.Nested):
        node = node.schema
    if isinstance(node, fields.List):
        for index, sub in messages.items():
            yield from _walk(sub, _item(value, index), node.inner, (*path, _Index(index)))
    elif isinstance(node, fields.Dict):
        for key, sub in messages.items():
            # {"key": [...]} when the key itself is wrong, {"value": ...} for what it holds
            if "key" in sub:
                yield from _walk(sub["key"], key, node.key_field, (*path, key))
            if "value" in sub:
                yield from _walk(sub["value"], _item(value, key), node.value_field, (*path, key))
    else:
        yield from _walk_level(messages, value, node if isinstance(node, Schema) else None, path)


def _walk_level(
    messages: dict[Any, Any], value: Any, schema: Schema | None, path: Path_
) -> Iterator[tuple[str, str]]:
    """One schema level: its own errors (``_schema``), its keys' errors, and
    unknown keys with the closest known key (whose own "required" error is
    then left out: one misspelt key is one problem)."""
    known = _data_keys(schema)
    guesses = {
        key: _closest(str(key), known)
        for key, sub in messages.items()
        if key != "_schema" and key not in known and "Unknown field." in _texts(sub)
    }
    for key, sub in messages.items():
        if key == "_schema":
            yield from _walk(sub, value, schema, path)
        elif key in guesses:
            yield _key((*path, key)), _unknown_key(guesses[key], known)
        elif key in guesses.values() and _texts(sub) == ["Missing data for required field."]:
            continue
        else:
            yield from _walk(sub, _item(value, key), known.get(key), (*path, key))


def _data_keys(schema: Schema | None) -> dict[str, fields.Field]:
    if schema is None:
        return {}
    return {f.data_key or name: f for name, f in schema.load_fields.items()}


def _closest(word: str, known: Mapping[str, Any]) -> str | None:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if not close:  # a different case reads as the same word to a person
        close = [k for k in known if k.casefold() == word.casefold()]
    return close[0] if close else None


def _unknown_key(guess: str | None, known: Mapping[str, Any]) -> str:
    if guess:
        return f"unknown key: did you mean {guess}?"
    return f"unknown key: remove it or check its spelling (keys here: {', '.join(known)})"


def _texts(messages: Any) -> list[str]:
    if isinstance(messages, list):
        return [str(m) for m in messages if not isinstance(m, (dict, list))]
    return [str(messages)]


def _item(value: Any, key: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get(key, _ABSENT)
    if isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
        return value[key]
    return _ABSENT


def _key(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, _Index) else (f".{part}" if out else str(part))
    return out


_RANGE = re.compile(
    r"Must be (?:greater than or equal to (?P<min>[-\d.]+))?(?: and )?"
    r"(?:less than or equal to (?P<max>[-\d.]+))?\."
)


def _humane(message: str, value: Any, node: Schema | fields.Field | None) -> str:
    """marshmallow's message -> what is wrong, the value got and the fix."""
    got = "" if value is _ABSENT else f" (got {show(value)})"
    fixed = _FIXED.get(message)
    if fixed is not None:
        return fixed(value, node, got)
    bounds = _RANGE.fullmatch(message)
    if bounds and (bounds["min"] or bounds["max"]):
        low, high = bounds["min"], bounds["max"]
        if low and high:
            span = f"from {low} to {high}"
        else:
            span = f"at least {low}" if low else f"at most {high}"
        kind = "a whole number" if isinstance(node, fields.Integer) else "a number"
        return f"must be {kind} {span}{got}"
    return message if "(got " in message else f"{message.rstrip('.')}{got}"


def _not_text(value: Any, node: Any, got: str) -> str:
    choices = _choices(node)
    if choices:
        return f"must be one of {', '.join(choices)}{got}"
    if isinstance(value, bool):
        # YAML 1.1 (PyYAML) reads yes/no/on/off/true/false as booleans
        return f"must be text: YAML reads yes/no/true/false as a boolean, so put it in quotes{got}"
    if isinstance(value, (int, float)):
        return f'must be text: put it in quotes, e.g. "{value}"{got}'
    if isinstance(value, (list, dict)):
        shape = "list" if isinstance(value, list) else "mapping"
        return f"must be a single text value, not a {shape}{got}"
    return f"must be text{got}"


def _choices(node: Any) -> list[str]:
    """The values a field takes when it is a choice (``validate.OneOf``)."""
    for validator in getattr(node, "validators", ()):
        if isinstance(validator, validate.OneOf):
            return [str(c) for c in validator.choices]
    return []


def _not_mapping(value: Any, node: Any, got: str) -> str:
    keys = list(_data_keys(node)) if isinstance(node, Schema) else []
    such = f" with keys such as {', '.join(keys)}" if keys else ""
    return f"must be a mapping (indented key: value lines){such}{got}"


def _empty(value: Any, node: Any, got: str) -> str:
    if isinstance(node, (Schema, fields.Nested)):
        return "is empty: add its keys, or write {} for the defaults"
    return "is empty: give it a value or delete the line"


_FIXED: dict[str, Callable[[Any, Any, str], str]] = {
    "Missing data for required field.": lambda v, n, g: "required: add this key",
    "Field may not be null.": _empty,
    "Not a valid boolean.": lambda v, n, g: f"must be true or false{g}",
    "Not a valid string.": _not_text,
    "Not a valid utf-8 string.": _not_text,
    "Not a valid integer.": lambda v, n, g: f"must be a whole number{g}",
    "Not a valid number.": lambda v, n, g: f"must be a number{g}",
    "Number too large.": lambda v, n, g: f"is too large{g}",
    "Not a valid list.": lambda v, n, g: f'must be a list such as ["1", "2"]{g}',
    "Not a valid mapping type.": _not_mapping,
    "Invalid input type.": _not_mapping,
    "Unknown field.": lambda v, n, g: _unknown_key(None, {}),
}


# -- reading ---------------------------------------------------------------------------------


def read_mapping(text: str, *, file: str = "<mapping>") -> MappingRead:
    """Parse and validate ``text``; never raises for a bad file."""
    data, problems = _yaml(text)
    if problems:
        return MappingRead(None, None, problems)
    if not isinstance(data, dict):
        return MappingRead(
            None, None, [("", "the file must be a YAML mapping with crm: and channels:")]
        )
    schema = MappingSchema()
    try:
        config: MappingConfig = schema.load(data)
    except ValidationError as exc:
        return MappingRead(data, None, flatten_errors(exc.messages, data, schema))
    return MappingRead(data, replace(config, source=file), [])


def parse_mapping(text: str, *, file: str = "<mapping>") -> MappingConfig:
    """The valid mapping in ``text``; :class:`MappingError` lists every problem."""
    result = read_mapping(text, file=file)
    if result.config is None:
        raise MappingError(file, result.problems)
    return result.config


def read_text(path: Path) -> str:
    """The file's text; :class:`MappingError` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MappingError(str(path), [("", f"not UTF-8 text ({exc.reason})")]) from exc
    except OSError as exc:
        raise MappingError(str(path), [("", f"cannot read the file: {exc.strerror}")]) from exc


def load_mapping(path: str | os.PathLike[str]) -> MappingConfig:
    path = Path(path)
    return parse_mapping(read_text(path), file=str(path))


class MappingStore:
    """Mapping files by name under one directory, reloaded when they change."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._cache: dict[str, tuple[float, MappingConfig]] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        """The file a tenant's mapping name stands for: a plain file name in
        the mappings directory, nothing else — the name can come from an
        install link or an install event, so no path may leave the
        directory (``/etc/…``, ``../…``)."""
        candidate = Path(name)
        if (
            not name
            or candidate.is_absolute()
            or len(candidate.parts) != 1
            or name.startswith(".")
            or "\\" in name
        ):
            raise MappingError(
                str(name), [("", "a mapping is a file name in the mappings directory")]
            )
        if candidate.suffix not in (".yaml", ".yml"):
            candidate = candidate.with_suffix(".yaml")
        return self.directory / candidate

    def get(self, name: str) -> MappingConfig:
        path = self.path(name)
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise MappingError(str(path), [("", "mapping file not found")]) from exc
        with self._lock:
            cached = self._cache.get(str(path))
            if cached and cached[0] == mtime:
                return cached[1]
        config = load_mapping(path)
        with self._lock:
            self._cache[str(path)] = (mtime, config)
        return config
