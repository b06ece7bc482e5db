"""Bitrix24's ``batch`` method: the command builder and the answer parser.

``POST …/batch`` with ``{"halt": 0|1, "cmd": {key: "method?query"}}``
(FACTS 2.4; docs ``settings/how-to-call-rest-api/batch.md``):

* at most **50** commands per call (more fail with
  ``ERROR_BATCH_LENGTH_EXCEEDED``); :func:`chunks` splits longer lists;
* a command is ``method?query`` where the query is PHP ``http_build_query``
  notation (``fields[PHONE][0][VALUE]=…``, values URL-encoded once: the JSON
  body itself is not encoded again, ``data-encoding.md``);
* ``$result[key][field]`` in a value is replaced by Bitrix24 with an earlier
  command's result (:class:`Ref`). Bitrix24 substitutes *after* decoding the
  query, so a customer who types ``$result[contact]`` into a message would
  have it replaced too: :func:`build_query` neutralises that text in every
  plain value with a zero-width space after the ``$`` (invisible, and no
  longer a reference);
* the answer is always HTTP 200:
  ``{"result": {"result": {key: …}, "result_error": {key: {error,
  error_description}}, "result_total", "result_next", "result_time"}}`` and
  every empty member is serialised as ``[]`` (PHP's empty array), not ``{}``;
* with ``halt=1`` execution stops at the first failing command: the
  commands after it are in neither ``result`` nor ``result_error`` (they
  never ran, see :meth:`BatchAnswer.ran`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from bridge.errors import BridgeError, PermanentError

__all__ = [
    "MAX_COMMANDS",
    "BatchAnswer",
    "Command",
    "Ref",
    "as_list",
    "as_map",
    "build_query",
    "chunks",
    "command_string",
    "members",
    "neutralise",
]

#: commands per ``batch`` call (FACTS 2.4)
MAX_COMMANDS = 50

# Bitrix24's own pattern for references (``$result``, ``$result_error``, ...)
_REFERENCE = re.compile(r"\$(?=result)", re.IGNORECASE)
_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")


@dataclass(frozen=True)
class Ref:
    """``$result[key][field]…``: an earlier command's result, by path."""

    key: str
    path: tuple[str | int, ...] = ()

    def __str__(self) -> str:
        return "$result" + "".join(f"[{part}]" for part in (self.key, *self.path))

    def __getitem__(self, part: str | int) -> Ref:
        return Ref(self.key, (*self.path, part))


@dataclass(frozen=True)
class Command:
    """One command of a batch: ``key`` names its result."""

    key: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key):
            raise ValueError(f"batch key {self.key!r}: use letters, digits and _")

    @property
    def ref(self) -> Ref:
        return Ref(self.key)


def neutralise(text: str) -> str:
    """``$result[…]`` in data is not a reference: put an invisible zero-width
    space after the ``$`` (Bitrix24 would substitute it otherwise)."""
    return _REFERENCE.sub("$\u200b", text)


def _pairs(prefix: str, value: Any, out: list[tuple[str, str, bool]]) -> None:
    if value is None:
        return  # PHP's http_build_query leaves null out
    if isinstance(value, Ref):
        out.append((prefix, str(value), True))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _pairs(f"{prefix}[{key}]" if prefix else str(key), item, out)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _pairs(f"{prefix}[{index}]", item, out)
    elif isinstance(value, bool):
        out.append((prefix, "1" if value else "0", False))  # PHP: true -> "1"
    else:
        out.append((prefix, neutralise(str(value)), False))


def build_query(params: Mapping[str, Any]) -> str:
    """PHP ``http_build_query`` notation; :class:`Ref` values stay literal.

    Brackets in keys are kept readable (``fields[TITLE]``, as in the docs'
    examples); everything else is percent-encoded once. Empty lists and
    dicts vanish, as in PHP."""
    pairs: list[tuple[str, str, bool]] = []
    _pairs("", params, pairs)
    return "&".join(
        f"{quote(key, safe='[]')}={value if raw else quote_plus(value, safe='')}"
        for key, value, raw in pairs
    )


def command_string(command: Command) -> str:
    query = build_query(command.params)
    return f"{command.method}?{query}" if query else command.method


def chunks(commands: Sequence[Command], size: int = MAX_COMMANDS) -> Iterator[list[Command]]:
    """Batches of at most ``size`` commands. A reference may only point into
    its own batch: a command referring to a key of an earlier chunk is a bug."""
    for start in range(0, len(commands), size):
        chunk = list(commands[start : start + size])
        keys = {c.key for c in chunk}
        earlier = {c.key for c in commands[:start]}
        for command in chunk:
            for ref in _refs(command.params):
                if ref.key in earlier and ref.key not in keys:
                    raise ValueError(f"batch command {command.key} refers across batches")
        yield chunk


def _refs(value: Any) -> Iterable[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _refs(item)


def members(value: Any) -> dict[str, Any]:
    """A ``result*`` member as a dict: PHP serialises an empty one as ``[]``
    (and a list-shaped one keyed 0..n as a JSON array)."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


@dataclass
class BatchAnswer:
    """The parsed answer of one or more ``batch`` calls.

    ``errors`` holds one exception per failed command, already mapped to the
    bridge's tree (the caller's mapper decides the class per Bitrix24 code).
    """

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BridgeError] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    nexts: dict[str, int] = field(default_factory=dict)
    times: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def ran(self, key: str) -> bool:
        return key in self.results or key in self.errors

    def ok(self, key: str) -> bool:
        return key in self.results and key not in self.errors

    def value(self, key: str) -> Any:
        """The command's result; its error raised; ``PermanentError`` if it
        never ran (a halted batch)."""
        if key in self.errors:
            raise self.errors[key]
        if key not in self.results:
            raise PermanentError(f"Bitrix24 batch: command {key} did not run")
        return self.results[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.results.get(key, default) if key not in self.errors else default

    def first_error(self, order: Sequence[str]) -> tuple[str, BridgeError] | None:
        for key in order:
            if key in self.errors:
                return key, self.errors[key]
        return None

    def merge(self, other: BatchAnswer) -> None:
        self.results.update(other.results)
        self.errors.update(other.errors)
        self.totals.update(other.totals)
        self.nexts.update(other.nexts)
        self.times.update(other.times)


def as_map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else ``{}`` (PHP sends ``[]`` for an
    empty one)."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
