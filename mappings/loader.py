"""Load and validate mapping files (YAML, one per tenant)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from mappings.schema import MappingConfig, MappingSchema

__all__ = ["MappingError", "MappingStore", "flatten_errors", "load_mapping", "parse_mapping"]


class MappingError(ValueError):
    """A mapping file is invalid. ``problems`` are ``(key, message)`` pairs;
    ``str()`` names the file, each key and the fix."""

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {key}: {msg}" if key else f"{file}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


def flatten_errors(messages: Any, prefix: str = "") -> list[tuple[str, str]]:
    """marshmallow's nested error dict -> [("channels.telegram.owner.pool", "...")]."""
    out: list[tuple[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            # Dict fields nest errors under "key"/"value": not part of the path.
            if key == "value":
                out.extend(flatten_errors(value, prefix))
                continue
            if key == "key":
                out.extend(flatten_errors(value, prefix))
                continue
            name = "fields" if key == "fields_" else str(key)
            if name == "_schema":
                out.extend(flatten_errors(value, prefix))
                continue
            out.extend(flatten_errors(value, f"{prefix}.{name}" if prefix else name))
    elif isinstance(messages, list):
        for item in messages:
            if isinstance(item, (dict, list)):
                out.extend(flatten_errors(item, prefix))
            else:
                out.append((prefix, _humane(str(item))))
    else:
        out.append((prefix, _humane(str(messages))))
    return out


def _humane(message: str) -> str:
    if message == "Unknown field.":
        return "unknown key: remove it or check its spelling"
    if message == "Missing data for required field.":
        return "required: add this key"
    return message


def parse_mapping(text: str, *, file: str = "<mapping>") -> MappingConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MappingError(
            file, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]
        ) from exc
    if not isinstance(data, dict):
        raise MappingError(file, [("", "the file must be a YAML mapping with crm: and channels:")])
    try:
        config: MappingConfig = MappingSchema().load(data)
    except ValidationError as exc:
        raise MappingError(file, flatten_errors(exc.messages)) from exc
    return MappingConfig(
        crm=config.crm,
        channels=config.channels,
        language=config.language,
        name=config.name,
        source=file,
        timezone=config.timezone,
    )


def load_mapping(path: str | os.PathLike[str]) -> MappingConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(str(path), [("", f"cannot read the file: {exc.strerror}")]) from exc
    return parse_mapping(text, file=str(path))


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
