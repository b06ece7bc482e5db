"""Start-up and ``bridge check-config`` validation of mapping files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bridge.registry import UnknownAdapter, channel_kinds, crm_class, crm_kinds
from mappings import MappingError, load_mapping

__all__ = ["check_mapping_files", "validate_mappings_dir"]


def check_mapping_files(paths: Iterable[Path]) -> list[str]:
    """Every problem as ``file: key: what is wrong and the fix``; [] if all good."""
    problems: list[str] = []
    for path in paths:
        try:
            mapping = load_mapping(path)
        except MappingError as exc:
            problems.extend(str(exc).splitlines())
            continue
        try:
            cls = crm_class(mapping.crm)
        except UnknownAdapter:
            known = ", ".join(crm_kinds())
            problems.append(f"{path}: crm: unknown CRM {mapping.crm!r}; use one of {known}")
            continue
        for kind, rule in mapping.channels.items():
            if kind not in channel_kinds():
                known = ", ".join(channel_kinds())
                problems.append(f"{path}: channels.{kind}: unknown channel; use one of {known}")
            if rule.object != "none" and rule.object not in cls.entity_types:
                problems.append(
                    f"{path}: channels.{kind}.object: {cls.title} has no {rule.object!r}; "
                    f"use one of {', '.join(cls.entity_types)} or none"
                )
    return problems


def validate_mappings_dir(directory: Path) -> None:
    """Start-up check: every mapping file must be valid, or nothing starts."""
    from bridge.errors import ConfigError

    problems = check_mapping_files(sorted(directory.glob("*.yaml")))
    if problems:
        raise ConfigError("invalid mapping files:\n" + "\n".join(problems))
