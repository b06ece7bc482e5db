"""Mapping files checked the way a careful admin expects: at start-up and by
``bridge check-config``.

Every problem is one line, ``file: key: what is wrong (got <value>) and the
fix``, and one run finds them all. A file is read once; its schema problems
come from :mod:`mappings.loader`, and the CRM's own rules are checked on the
YAML as written, so a schema error does not hide them. What each CRM allows
its adapter declares (``CrmAdapter.entity_types``, ``timeline_kinds``,
``has_inbox``, ``inbox_created_types``, ``entity_keys``,
``entity_placement``): the core names no CRM.

A problem is *blocking* when the file cannot work (invalid, an unknown CRM,
channel or object, an id the CRM cannot take, messages with nowhere to go):
start-up refuses it. The others are *advisory*: the file works, but
something lands where the admin may not expect it (a default pipeline, an
option the CRM ignores or writes as something else). ``check-config``
reports both and exits 1; start-up logs the advisory ones and starts, so a
rule learnt in an upgrade cannot take every tenant down for one tenant's file.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bridge.registry import UnknownAdapter, channel_kinds, crm_class, crm_kinds
from crm_adapters.base import CrmAdapter
from mappings import MappingError, MappingStore
from mappings.loader import read_mapping, read_text, show
from mappings.schema import PLACEMENT_KEYS, SLUG, ChannelRule, MappingConfig

__all__ = [
    "CheckReport",
    "Problem",
    "check_config",
    "check_file",
    "check_text",
    "check_mapping_files",
    "mapping_files",
    "validate_mappings_dir",
]

log = logging.getLogger(__name__)

#: rule keys whose allowed values the CRM decides: its word replaces the
#: schema's, which lists the values of every CRM
CRM_JUDGED = ("object", "timeline")
#: what ``int()`` in the adapters takes as a numeric id
NUMERIC_ID = re.compile(r"\s*-?[0-9]+\s*")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one file; ``key`` is the dotted path (``""`` for
    the file as a whole)."""

    file: str
    key: str
    message: str
    #: start-up refuses the file (False: check-config reports it, start-up logs it)
    blocking: bool = True

    def __str__(self) -> str:
        return (
            f"{self.file}: {self.key}: {self.message}"
            if self.key
            else f"{self.file}: {self.message}"
        )


@dataclass(frozen=True)
class CheckReport:
    """What ``bridge check-config`` prints: one line per problem, then the
    summary; ``ok`` is False when there is any line (exit status 1)."""

    lines: list[str]
    summary: str
    ok: bool


# -- the command and start-up ---------------------------------------------------------------


def check_config(targets: Sequence[str], mappings_dir: Path) -> CheckReport:
    """Check the mapping files ``targets`` names, every one in ``mappings_dir``
    when there are none. A bare name (``acme``, ``acme.yaml``) is the file in
    the mappings directory, as for ``tenant create --mapping``; a path to a
    file or directory (``./my.yaml``, ``/tmp/x.yaml``) is checked where it is.
    A name that finds nothing counts as a file with errors."""
    lines: list[str] = []
    files = failed = 0
    for found in _resolve_all(targets, Path(mappings_dir)):
        if isinstance(found, _Nothing):
            lines.append(str(found.problem))
            files += found.named
            failed += found.named
            continue
        problems = check_file(found)
        lines.extend(str(p) for p in problems)
        files += 1
        failed += bool(problems)
    summary = (
        f"{_count(files)}, {files - failed} ok, {failed} with errors"
        if files
        else "no mapping files checked"
    )
    return CheckReport(lines=lines, summary=summary, ok=not lines)


def check_mapping_files(paths: Iterable[Path]) -> list[str]:
    """The blocking problems of ``paths`` (what start-up refuses), one line
    each as ``file: key: what is wrong and the fix``; [] if all can work."""
    return [str(p) for path in paths for p in check_file(path) if p.blocking]


def validate_mappings_dir(directory: Path) -> None:
    """Start-up check: every mapping file must be able to work, or nothing
    starts; advisory problems are logged (``bridge check-config`` shows them)."""
    from bridge.errors import ConfigError

    problems = [p for path in mapping_files(directory) for p in check_file(path)]
    for problem in problems:
        if not problem.blocking:
            log.warning("mapping: %s (bridge check-config lists them all)", problem)
    blocking = [str(p) for p in problems if p.blocking]
    if blocking:
        raise ConfigError("invalid mapping files:\n" + "\n".join(blocking))


def mapping_files(directory: Path) -> list[Path]:
    """The mapping files of a directory (``*.yaml``, ``*.yml``), sorted."""
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def _count(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


# -- which files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Nothing:
    """A target that found no file: ``named`` when the admin named it (it
    counts as a file with errors), not for an empty mappings directory."""

    problem: Problem
    named: bool = True


def _resolve_all(targets: Sequence[str], mappings_dir: Path) -> list[Path | _Nothing]:
    if not targets:
        return _directory(mappings_dir, str(mappings_dir), "the mappings directory", named=False)
    store = MappingStore(mappings_dir)
    out: list[Path | _Nothing] = []
    seen: set[Path] = set()
    for target in targets:
        for found in _resolve(target, store):
            if isinstance(found, Path):
                if found.resolve() in seen:
                    continue
                seen.add(found.resolve())
            out.append(found)
    return out


def _resolve(target: str, store: MappingStore) -> list[Path | _Nothing]:
    """A bare name is a file in the mappings directory; anything else a path."""
    if not target.strip():
        return [_nothing(repr(target), "an empty name: give a mapping name or a file path")]
    try:
        named: Path | None = store.path(target)
    except MappingError:  # not a bare name: a directory part, absolute, ./...
        named = None
    local = Path(target)
    if named is not None and named.is_file():
        return [named]
    if local.is_dir():
        return _directory(local, target, "this directory", named=True)
    if named is not None:
        hint = f"; to check ./{target} instead, write ./{target}" if local.is_file() else ""
        return [_nothing(target, f"no mapping named {target!r}: looked for {named}{hint}")]
    if local.is_file():
        return [local]
    return [_nothing(target, f"no such file: looked for {local.absolute()}")]


def _directory(directory: Path, label: str, what: str, *, named: bool) -> list[Path | _Nothing]:
    if not directory.is_dir():
        message = f"{what} does not exist (BRIDGE_MAPPINGS_DIR names it)"
        return [_nothing(label, message, named=named)]
    files: list[Path | _Nothing] = list(mapping_files(directory))
    return files or [_nothing(label, f"no mapping files (*.yaml) in {what}", named=named)]


def _nothing(label: str, message: str, *, named: bool = True) -> _Nothing:
    return _Nothing(Problem(label, "", message), named)


# -- one file --------------------------------------------------------------------------------


def check_file(path: Path) -> list[Problem]:
    """Every problem of one mapping file, in the order of the file."""
    file = str(path)
    try:
        text = read_text(path)
    except MappingError as exc:
        return [Problem(file, key, message) for key, message in exc.problems]
    return check_text(text, file=file, directory=path.parent)


def check_text(text: str, *, file: str, directory: Path) -> list[Problem]:
    """Every problem of a mapping's text (e.g. unsaved, in the console's
    editor) as if it were the file ``file`` in ``directory`` (where its
    knowledge base is looked up), in the order of the text."""
    result = read_mapping(text, file=file)
    problems = [Problem(file, key, message) for key, message in result.problems]
    if result.data is None:
        return problems
    problems = _merge(problems, _crm_problems(file, result.data))
    problems += _service_problems(file, result.config, directory)
    return _in_file_order(problems, result.data)


def _service_problems(file: str, config: MappingConfig | None, directory: Path) -> list[Problem]:
    """The service section against the rest of the mapping: the channels it
    names are mapped, its knowledge base loads and has the entries its menus
    name (a path relative to the mappings directory)."""
    if config is None or config.service is None:
        return []
    from bridge.service import knowledge
    from mappings.service import check_channels, check_knowledge, check_tags

    policy = config.service
    found = [Problem(file, k, m) for k, m in check_channels(policy, config.channels)]
    try:
        cls = crm_class(config.crm)
    except UnknownAdapter:
        cls = None  # the CRM's own problem is reported already
    if cls is not None and not cls.has_entity_tags:
        found += [Problem(file, k, m) for k, m in check_tags(policy, cls.title)]
    if policy.knowledge_base:
        try:
            base = knowledge.load(directory / policy.knowledge_base)
        except knowledge.KnowledgeError as exc:
            return [*found, Problem(file, "service.knowledge_base", str(exc))]
        ids = [entry.id for entry in base.entries]
        found += [Problem(file, k, m) for k, m in check_knowledge(policy, ids)]
    return found


def _merge(schema: list[Problem], crm: list[Problem]) -> list[Problem]:
    """The CRM's word on an object or timeline replaces the schema's generic
    one for the same key, and stays blocking when the schema's was."""
    judged = {p.key for p in crm if p.key.rsplit(".", 1)[-1] in CRM_JUDGED}
    replaced = {p.key for p in schema if p.key in judged}
    kept = [p for p in schema if p.key not in replaced]
    return kept + [replace(p, blocking=True) if p.key in replaced else p for p in crm]


def _in_file_order(problems: list[Problem], data: Mapping[str, Any]) -> list[Problem]:
    """Sorted as the keys appear in the file; a key the file lacks sorts at
    the end of its parent's block."""
    spans = _spans(data)

    def position(problem: Problem) -> float:
        key = problem.key
        if key in spans:
            return spans[key][0]
        while key:
            key = re.sub(r"(\[\d+\]|\.[^.\[]*|^[^.\[]*)$", "", key)
            if key in spans:
                return spans[key][1] + 0.5
        return -1 if not problem.key else len(spans)

    return sorted(problems, key=position)


def _spans(
    data: Any, prefix: str = "", counter: list[int] | None = None
) -> dict[str, tuple[int, int]]:
    """dotted key -> (first, last) position of the key and everything under it."""
    counter = counter if counter is not None else [0]
    out: dict[str, tuple[int, int]] = {}
    items: Iterable[tuple[str, Any]] = ()
    if isinstance(data, Mapping):
        items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in data.items())
    elif isinstance(data, list):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(data))
    for key, value in items:
        start = counter[0]
        counter[0] += 1
        out.update(_spans(value, key, counter))
        out[key] = (start, counter[0] - 1)
    return out


# -- the CRM's rules, on the YAML as written -------------------------------------------------


def _crm_problems(file: str, data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    cls = _crm(data.get("crm"), lambda msg: problems.append(Problem(file, "crm", msg)))
    channels = data.get("channels")
    if not isinstance(channels, Mapping):
        return problems  # the schema said why
    for kind, rule in channels.items():
        if not isinstance(kind, str) or not SLUG.fullmatch(kind):
            continue  # the schema said why
        if kind not in channel_kinds():
            problems.append(Problem(file, f"channels.{kind}", _unknown_channel(kind)))
        if cls is not None and isinstance(rule, Mapping):
            problems.extend(
                Problem(file, f"channels.{kind}.{key}", message, blocking)
                for key, message, blocking in _rule_problems(cls, kind, rule)
            )
    return problems


def _crm(value: Any, report: Callable[[str], None]) -> type[CrmAdapter] | None:
    if not isinstance(value, str) or not SLUG.fullmatch(value):
        return None  # the schema said why
    try:
        return crm_class(value)
    except UnknownAdapter:
        known = crm_kinds()
        if value in known:
            report(f"CRM {value!r} is disabled: its Python library is missing (see the log)")
        else:
            report(f"unknown CRM {value!r}; use one of {', '.join(known)}{_guess(value, known)}")
        return None


def _unknown_channel(kind: str) -> str:
    return (
        f"unknown channel; use one of {', '.join(channel_kinds())}{_guess(kind, channel_kinds())}"
    )


def _guess(word: str, known: Sequence[str]) -> str:
    if len(known) < 2:
        return ""  # the one choice is named already
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


Finding = tuple[str, str, bool]  # (rule key, message, blocking)


def _rule_problems(cls: type[CrmAdapter], channel: str, rule: Mapping[str, Any]) -> list[Finding]:
    """One channel rule against what the CRM declares. Only values of the
    right type are judged: a wrong type has its schema error already."""
    defaults = ChannelRule()
    obj = rule.get("object", defaults.object)
    findings = _object(cls, obj, defaulted="object" not in rule)
    findings += _timeline(cls, channel, rule.get("timeline", defaults.timeline))
    findings += _inbox(cls, obj, rule)
    if isinstance(obj, str) and (obj == "none" or obj in cls.entity_types):
        label = f"object {obj}" + ("" if "object" in rule else " (the default)")
        findings += _placement(cls, obj, rule, label)
    return findings


def _object(cls: type[CrmAdapter], obj: Any, *, defaulted: bool) -> list[Finding]:
    if not isinstance(obj, str) or obj == "none" or obj in cls.entity_types:
        return []
    known = ", ".join(cls.entity_types)
    if defaulted:
        message = f"{cls.title} has no {obj!r} (the default object); set object: {known} or none"
        return [("object", message, True)]
    return [("object", f"{cls.title} has no {obj!r}; use one of {known} or none", True)]


def _timeline(cls: type[CrmAdapter], channel: str, kind: Any) -> list[Finding]:
    if not isinstance(kind, str) or kind == "none":
        return []
    usable = [k for k, only in cls.timeline_kinds.items() if not only or channel in only]
    fix = f"use {_either([*usable, 'none'])} (got {show(kind)})"
    if kind not in cls.timeline_kinds:
        return [("timeline", f"{cls.title} writes no {kind!r} timeline; {fix}", False)]
    if kind not in usable:
        only = ", ".join(cls.timeline_kinds[kind])
        message = f"{cls.title} writes {kind} only for {only} channels, not {channel}; {fix}"
        return [("timeline", message, False)]
    return []


def _inbox(cls: type[CrmAdapter], obj: Any, rule: Mapping[str, Any]) -> list[Finding]:
    inbox = rule.get("inbox", False)
    got = show(inbox) if "inbox" in rule else "nothing: false is the default"
    if inbox is True and not cls.has_inbox:
        message = f"{cls.title} has no inbox or chat to publish to; set inbox: false (got {got})"
        return [("inbox", message, False)]
    if inbox is False and obj in cls.inbox_created_types:
        message = (
            f"with object {obj}, {cls.title}'s own inbox creates the entity from the first "
            f"message, so without inbox: true messages have nowhere to go; set inbox: true "
            f"(got {got})"
        )
        return [("inbox", message, True)]
    return []


def _placement(
    cls: type[CrmAdapter], obj: str, rule: Mapping[str, Any], label: str
) -> list[Finding]:
    """Placement keys the CRM ignores for ``obj``, ids it cannot take, and
    keys it wants set, each said with what happens."""
    opens_nothing = obj == "none" or obj in cls.inbox_created_types
    reads = {} if opens_nothing else cls.entity_keys.get(obj)
    findings: list[Finding] = []
    for key in PLACEMENT_KEYS:
        value = rule.get(key)
        if not isinstance(value, str) or not value:
            continue  # left out, or a wrong type with its own error
        if reads is not None and key not in reads:
            findings.append((key, _ignored(cls, obj, key, value), False))
        elif reads and reads.get(key) == "number" and not NUMERIC_ID.fullmatch(value):
            message = (
                f"{cls.title} takes a numeric {key} id (got {show(value)}): "
                "write the id, not the name"
            )
            findings.append((key, message, True))
    for key, without in cls.entity_placement.get(obj, {}).items():
        if rule.get(key) in (None, "", False):
            message = f"{cls.title} needs {key} for {label}: {without}; add {key}: <{key} id>"
            findings.append((key, message, False))
    return findings


def _ignored(cls: type[CrmAdapter], obj: str, key: str, value: str) -> str:
    got = f"remove it (got {show(value)})"
    if obj == "none":
        return f"object none opens no entity, so {key} is never used: {got}"
    if obj in cls.inbox_created_types:
        inbox = f"{cls.title}'s own inbox opens the entity"
        return f"with object {obj}, {inbox}, so {key} is never used: {got}"
    takers = [t for t, keys in cls.entity_keys.items() if key in keys]
    only = f" (only {_either(takers)} takes one)" if takers else ""
    return f"{cls.title} ignores {key} for a {obj}{only}: {got}"


def _either(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
