"""The mapping editor's logic (the page is :mod:`bridge.console.pages.mapping`).

* :func:`check_text` finds every problem of an edited mapping the way
  start-up and ``bridge check-config`` do (the loader's schema errors, the
  CRM's rules from ``bridge.checks``), plus the one thing only the tenant
  knows: the CRM it is connected to. :func:`locate` puts each problem at its
  line: the key path (``service.lines.sales.hours``) walked down the YAML
  node tree (``yaml.compose``); a key the file lacks is shown at its
  parent's line; a YAML syntax error at its own line and column.
* :func:`save_text` writes the file where ``Runtime.mapping_for`` reads it,
  atomically (a temporary file, then ``os.replace``) and with a newer
  modification time: ``MappingStore`` keeps a parsed mapping until its
  file's mtime changes, so every process (web, workers) reads the new one
  at its next use.
* :func:`dry_run` reads back from the tenant's CRM what the mapping names
  (pipelines, stages, owners, fields) and, through the channel accounts,
  the WhatsApp-style reply templates, and shows what a sample message
  would create, built by the inbound sync's own draft code: nothing is
  written to the CRM.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from sqlalchemy import select

from bridge import checks
from bridge.checks import Problem
from bridge.errors import BridgeError
from bridge.model import CrmRef, MessageKind
from bridge.registry import UnknownAdapter, channel_class, crm_class
from bridge.tables import ChannelAccount, ChannelStatus, Contact, Conversation, Message, Tenant
from mappings.loader import read_mapping
from mappings.schema import ChannelRule, FieldTemplates, MappingConfig, is_live

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bridge.runtime import Runtime
    from crm_adapters.base import CrmAdapter, Pipeline

__all__ = [
    "Check",
    "DryRun",
    "Located",
    "Preview",
    "Sample",
    "check_text",
    "digest",
    "dry_run",
    "locate",
    "read_current",
    "save_text",
    "sharing_tenants",
]

T = TypeVar("T")

#: where the loader says a YAML syntax error is (``mappings.loader._yaml``)
_YAML_AT = re.compile(r"^line (\d+), column (\d+)$")
_INDEX = re.compile(r"\[(\d+)\]")
#: what the dry run's sample message is written as (never stored)
DRY_RUN_UID = "dry-run"


# -- problems at their lines ---------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    """One problem with where the editor shows it (1-based line and column)."""

    key: str
    message: str
    line: int
    column: int
    #: save refuses the file (False: advisory, as start-up treats it)
    blocking: bool = True
    #: the key is in the file (False: it is missing; shown at its parent)
    exact: bool = True
    #: other keys with the same problem at the same place (a block copied
    #: to several channels with an anchor: ``vk: *telegram``)
    also: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "blocking": self.blocking,
            "exact": self.exact,
            "also": list(self.also),
        }


def locate(text: str, problems: Iterable[Problem]) -> list[Located]:
    """Each problem at the line of its key in ``text``; the same problem of
    several keys at one place (an anchored block) once, with the others in
    ``also``."""
    root = _compose(text)
    out: dict[tuple[int, int, str, bool, bool], Located] = {}
    for problem in problems:
        at = _YAML_AT.match(problem.key)
        if at:
            found = Located("", problem.message, int(at[1]), int(at[2]), problem.blocking)
        else:
            line, column, exact = key_position(root, problem.key)
            found = Located(problem.key, problem.message, line, column, problem.blocking, exact)
        place = (found.line, found.column, found.message, found.blocking, found.exact)
        if place in out:
            out[place] = replace(out[place], also=(*out[place].also, found.key))
        else:
            out[place] = found
    return list(out.values())


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def key_position(root: yaml.Node | None, key: str) -> tuple[int, int, bool]:
    """(line, column, found) of the dotted ``key`` (``a.b[2].c``) in the node
    tree: the line of its key, or of its list item; when part of the path is
    not in the file, the line of the deepest part that is (found: False).
    ``""`` (the file as a whole) is line 1."""
    line, column = 0, 0
    node, rest = root, key
    while rest:
        step = _step(node, rest)
        if step is None:
            return line + 1, column + 1, False
        node, mark, rest = step
        line, column = mark.line, mark.column
    return line + 1, column + 1, True


def _step(node: yaml.Node | None, rest: str) -> tuple[yaml.Node, yaml.Mark, str] | None:
    """One part of the path down from ``node``: (the child, where it is
    written, the rest of the path), or None when the file lacks it."""
    if isinstance(node, yaml.SequenceNode):
        match = _INDEX.match(rest)
        if match is None or int(match[1]) >= len(node.value):
            return None
        item: yaml.Node = node.value[int(match[1])]
        return item, item.start_mark, rest[match.end() :].removeprefix(".")
    if not isinstance(node, yaml.MappingNode):
        return None
    best: tuple[yaml.Node, yaml.Node, str] | None = None
    for key_node, value_node in _pairs(node):
        name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
        if rest == name or rest.startswith((name + ".", name + "[")):
            if best is None or len(name) > len(best[2]):  # a key holding a dot wins
                best = (key_node, value_node, name)
    if best is None:
        return None
    key_node, value_node, name = best
    return value_node, key_node.start_mark, rest[len(name) :].removeprefix(".")


def _pairs(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """The mapping's own keys, then those a merge key (``<<: *base``) brings."""
    own = [(k, v) for k, v in node.value if getattr(k, "value", None) != "<<"]
    for key_node, value_node in node.value:
        if getattr(key_node, "value", None) != "<<":
            continue
        merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for base in merged:
            if isinstance(base, yaml.MappingNode):
                own += _pairs(base)
    return own


# -- checking an edited text ---------------------------------------------------------------


def check_text(text: str, *, file: str, directory: Path, crm_kind: str | None) -> list[Problem]:
    """Every problem of a mapping text, as ``bridge.checks.check_file`` finds
    them in a file (a knowledge base named relative to ``directory``), and a
    ``crm:`` other than the tenant's CRM (``crm_kind``), in file order."""
    if _expanded_size(_compose(text)) > MAX_VALUES:
        return [Problem(file, "", _TOO_MANY)]
    problems = checks.check_text(text, file=file, directory=directory)
    try:
        stated = yaml.safe_load(text)
    except yaml.YAMLError:
        return problems  # the syntax error is among the problems
    stated = stated.get("crm") if isinstance(stated, dict) else None
    if crm_kind and isinstance(stated, str) and stated != crm_kind:
        # the mapping's first key, by custom: listed first
        problems.insert(
            0,
            Problem(
                file,
                "crm",
                f"this tenant is connected to {_crm_title(crm_kind)}: write crm: {crm_kind} "
                f"(got {stated!r})",
            ),
        )
    return problems


#: the most values a mapping may hold once its aliases are expanded: an
#: alias of an alias of ... (a "billion laughs" text) would otherwise make
#: the schema walk billions of values in the web process
MAX_VALUES = 100_000
_TOO_MANY = (
    f"the file holds more than {MAX_VALUES} values once its aliases (*name) are "
    "expanded: write the blocks out, or alias fewer of them"
)


def _expanded_size(root: yaml.Node | None) -> int:
    """How many values the node tree holds with every alias expanded,
    counted once per distinct node (linear in the text, whatever it expands to)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a cycle (not possible in PyYAML's trees) counts once
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        sizes[id(node)] = min(total, MAX_VALUES + 1)
        return sizes[id(node)]

    return 0 if root is None else size(root)


def _crm_title(kind: str) -> str:
    try:
        return crm_class(kind).title
    except UnknownAdapter:
        return kind


def blocking(problems: Iterable[Located | Problem]) -> bool:
    """Some problem keeps the file from working (save refuses it)."""
    return any(p.blocking for p in problems)


# -- the file -------------------------------------------------------------------------------


def digest(text: str) -> str:
    """What the editor sends back with a save: the text it started from, so
    a save over someone else's newer one is refused."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_current(rt: Runtime, tenant: Tenant) -> tuple[Path, str]:
    """The tenant's mapping file and its text (``""`` when it does not exist)."""
    path = rt.mappings.path(tenant.mapping)
    try:
        return path, path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return path, ""


def sharing_tenants(rt: Runtime, session: Session, tenant: Tenant) -> list[Tenant]:
    """The other tenants whose mapping is the same file: a save changes theirs too."""
    mine = rt.mappings.path(tenant.mapping)
    others = session.scalars(select(Tenant).where(Tenant.id != tenant.id).order_by(Tenant.id))
    out = []
    for other in others:
        try:
            if rt.mappings.path(other.mapping) == mine:
                out.append(other)
        except ValueError:  # MappingError: a name that is no file name
            continue
    return out


def save_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same
    directory (a dot name, which no ``*.yaml`` glob of the mappings
    directory picks up), flushed, given the old file's mode and an mtime
    later than the old one's, then ``os.replace``d over it. The later
    mtime is what makes every process's ``MappingStore`` read it again:
    it keeps a parsed file until its mtime changes, and two saves within
    the file system's clock tick could otherwise share one."""
    try:
        old = path.stat()
        mode, old_mtime = old.st_mode & 0o777, old.st_mtime_ns
    except FileNotFoundError:
        mode, old_mtime = 0o644, 0
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        stamp = max(time.time_ns(), old_mtime + 1_000_000)  # +1 ms: seen through st_mtime too
        os.utime(temporary, ns=(stamp, stamp))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """The rename reaches the disk (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the dry run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One thing the mapping names, looked up in the CRM."""

    #: pipeline | stage | owner | field | template
    kind: str
    #: the id or name the mapping gives
    value: str
    #: the mapping keys that name it (the first one's line is shown)
    keys: tuple[str, ...]
    #: True: the CRM has it; False: missing; None: the CRM could not tell
    ok: bool | None
    #: what the CRM calls it (ok), or what is wrong with it / why it was not checked
    name: str = ""
    line: int = 1

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "keys": list(self.keys),
            "ok": self.ok,
            "name": self.name,
            "line": self.line,
        }


@dataclass(frozen=True)
class Sample:
    """The dry run's sample message."""

    channel: str
    sender: str
    text: str


@dataclass(frozen=True)
class Preview:
    """What the sample message would create, as the inbound sync builds it."""

    channel: str
    #: the rule's object: deal | ticket | lead | unsorted | none
    object: str
    #: the contact's name and the fields it is created with
    contact: dict[str, str]
    #: the deal/lead/ticket: name, pipeline, stage, owner and its fields
    entity: dict[str, str] | None
    #: the follow-up task: subject, owner, due, body
    task: dict[str, str] | None
    #: the timeline note's text (None: ``timeline: none``)
    note: str | None
    #: the messages go to the CRM's inbox or chat too
    inbox: bool
    #: contact fields the bridge keeps current by itself (not shown here)
    live: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "object": self.object,
            "contact": self.contact,
            "entity": self.entity,
            "task": self.task,
            "note": self.note,
            "inbox": self.inbox,
            "live": list(self.live),
        }


@dataclass
class DryRun:
    """The dry run's answer: the text's problems (nothing was looked up when
    one blocks), the CRM checks, the sample's preview, and why the CRM could
    not be asked at all."""

    problems: list[Located]
    checks: list[Check] = field(default_factory=list)
    preview: Preview | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            not blocking(self.problems)
            and self.error is None
            and all(c.ok is not False for c in self.checks)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [p.as_json() for p in self.problems],
            "checks": [c.as_json() for c in self.checks],
            "preview": self.preview.as_json() if self.preview else None,
            "error": self.error,
        }


def dry_run(rt: Runtime, tenant: Tenant, text: str, sample: Sample | None) -> DryRun:
    """Validate ``text``, then look up in the tenant's CRM what it names and
    build the sample's drafts. Reads only: the CRM, the channels and the
    database are asked, nothing is written."""
    path = rt.mappings.path(tenant.mapping)
    problems = check_text(text, file=path.name, directory=path.parent, crm_kind=tenant.crm_kind)
    located = locate(text, problems)
    run = DryRun(located)
    if blocking(problems):
        return run
    result = read_mapping(text, file=path.name)
    config = result.config
    assert config is not None and result.data is not None  # no blocking problem: it loaded
    try:
        adapter = rt.crm_adapter(tenant)
    except (BridgeError, ValueError) as exc:
        run.error = f"the CRM adapter could not be built: {exc}"
        return run
    crm = _Catalog(adapter)
    root = _compose(text)
    found = [
        *_placement_checks(adapter, config, crm),
        *_owner_checks(config, result.data, crm),
        *_field_checks(config, crm),
        *_template_checks(rt, tenant, config),
    ]
    run.checks = [replace(c, line=key_position(root, c.keys[0])[0]) for c in found]
    if sample is not None and config.rule(sample.channel) is not None:
        run.preview = _preview(rt, tenant, config, sample, adapter, crm)
    return run


class _Catalog:
    """What the dry run reads from the CRM, each list read once; a read the
    CRM cannot do or refused is the reason (a string) instead."""

    def __init__(self, adapter: CrmAdapter) -> None:
        self.adapter = adapter
        self._read: dict[Any, Any] = {}

    def _once(self, key: Any, read: Callable[[], T]) -> T | str:
        if key not in self._read:
            try:
                self._read[key] = read()
            except NotImplementedError:
                self._read[key] = f"{self.adapter.title} cannot list these"
            except BridgeError as exc:
                self._read[key] = f"{self.adapter.title} did not answer: {exc.message or exc}"
        value: T | str = self._read[key]
        return value

    def pipelines(self, object_type: str) -> list[Pipeline] | str:
        return self._once(
            ("pipelines", object_type), lambda: self.adapter.list_pipelines(object_type)
        )

    def owners(self) -> dict[str, tuple[str, bool]] | str:
        """owner id -> (name or e-mail, active)."""

        def read() -> dict[str, tuple[str, bool]]:
            return {o.id: (o.name or o.email or o.id, o.active) for o in self.adapter.list_owners()}

        return self._once("owners", read)

    def fields(self, object_type: str, names: Sequence[str]) -> dict[str, str] | str:
        key = ("fields", object_type, tuple(names))
        return self._once(key, lambda: self.adapter.list_fields(object_type, names))


def _grouped(named: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """value -> the keys that name it, in file order."""
    out: dict[str, list[str]] = {}
    for key, value in named:
        out.setdefault(value, []).append(key)
    return out


def _placement_checks(adapter: CrmAdapter, config: MappingConfig, crm: _Catalog) -> list[Check]:
    """Each channel's ``pipeline`` and ``stage`` where the CRM reads them."""
    out: list[Check] = []
    for kind, rule in config.channels.items():
        obj = rule.object
        if obj not in adapter.entity_types or obj in adapter.inbox_created_types:
            continue
        reads = adapter.entity_keys.get(obj)
        wants_pipeline = rule.pipeline and (reads is None or "pipeline" in reads)
        wants_stage = rule.stage and (reads is None or "stage" in reads)
        if not wants_pipeline and not wants_stage:
            continue
        pipelines = crm.pipelines(obj)
        if isinstance(pipelines, str):
            if wants_pipeline:
                out.append(
                    Check("pipeline", str(rule.pipeline), (_k(kind, "pipeline"),), None, pipelines)
                )
            if wants_stage:
                out.append(Check("stage", str(rule.stage), (_k(kind, "stage"),), None, pipelines))
            continue
        chosen = [p for p in pipelines if p.id == rule.pipeline] if wants_pipeline else []
        if wants_pipeline:
            name = chosen[0].name if chosen else ""
            out.append(
                Check("pipeline", str(rule.pipeline), (_k(kind, "pipeline"),), bool(chosen), name)
            )
        if wants_stage:
            stage = str(rule.stage)
            where = chosen or ([] if wants_pipeline else pipelines)
            names = [f"{p.stages[stage]} ({p.name})" for p in where if stage in p.stages]
            out.append(
                Check("stage", stage, (_k(kind, "stage"),), bool(names), names[0] if names else "")
            )
    return _merge_checks(out)


def _k(channel: str, *parts: str) -> str:
    return ".".join(("channels", channel, *parts))


def _merge_checks(found: list[Check]) -> list[Check]:
    """One row per thing named (an anchor copied to several channels names
    the same pipeline each time), with every key that names it."""
    rows: dict[tuple[str, str, bool | None, str], Check] = {}
    for check in found:
        key = (check.kind, check.value, check.ok, check.name)
        if key in rows:
            rows[key] = replace(rows[key], keys=rows[key].keys + check.keys)
        else:
            rows[key] = check
    return list(rows.values())


def _owner_ids(config: MappingConfig, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, owner id) for every CRM user the mapping names (``data``: the
    YAML, to tell a line's own supervisor from the one of ``defaults:``)."""
    named: list[tuple[str, str]] = []
    for kind, rule in config.channels.items():
        if rule.owner.owner_id:
            named.append((_k(kind, "owner", "owner_id"), rule.owner.owner_id))
        named += [(_k(kind, "owner", f"pool[{i}]"), o) for i, o in enumerate(rule.owner.pool)]
    if config.service is None:
        return named
    lines = _dig(data, "service", "lines")
    for name, line in config.service.lines.items():
        where = f"service.lines.{name}"
        named += [(f"{where}.members[{i}]", m) for i, m in enumerate(line.members)]
        if line.supervisor is not None:
            own = "supervisor" in _dig(lines, name)
            key = f"{where}.supervisor.user" if own else "service.defaults.supervisor.user"
            named.append((key, line.supervisor.user))
    return named


def _dig(data: Any, *keys: str) -> Mapping[str, Any]:
    for key in keys:
        data = data.get(key) if isinstance(data, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def _owner_checks(config: MappingConfig, data: Mapping[str, Any], crm: _Catalog) -> list[Check]:
    named = _owner_ids(config, data)
    if not named:
        return []
    owners = crm.owners()
    out = []
    for owner_id, keys in _grouped(named).items():
        if isinstance(owners, str):
            out.append(Check("owner", owner_id, tuple(keys), None, owners))
            continue
        name, active = owners.get(owner_id, ("", False))
        if name and not active:
            name = f"{name} (inactive)"
        out.append(Check("owner", owner_id, tuple(keys), owner_id in owners and active, name))
    return out


def _field_names(config: MappingConfig) -> dict[str, list[tuple[str, str]]]:
    """object type -> (key, property name) the mapping writes, in file order,
    then the service layer's fields (``MappingConfig.custom_properties``)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for kind, rule in config.channels.items():
        out.setdefault("contact", []).extend(
            (_k(kind, "fields", "contact", n), n) for n in rule.fields.contact
        )
        if rule.object not in ("none", "unsorted"):
            out.setdefault(rule.object, []).extend(
                (_k(kind, "fields", "entity", n), n) for n in rule.fields.entity
            )
    for object_type, names in config.custom_properties().items():
        given = {n for _, n in out.get(object_type, [])}
        out.setdefault(object_type, []).extend(("service", n) for n in names if n not in given)
    return {k: v for k, v in out.items() if v}


def _field_checks(config: MappingConfig, crm: _Catalog) -> list[Check]:
    out = []
    for object_type, named in _field_names(config).items():
        by_name = _grouped(named)
        labels = crm.fields(object_type, list(by_name))
        for name, keys in by_name.items():
            value = f"{object_type}.{name}"
            if isinstance(labels, str):
                out.append(Check("field", value, tuple(keys), None, labels))
            else:
                out.append(Check("field", value, tuple(keys), name in labels, labels.get(name, "")))
    return out


def _template_checks(rt: Runtime, tenant: Tenant, config: MappingConfig) -> list[Check]:
    """Each ``window_template`` against the templates of the tenant's
    accounts of that channel (a channel that lists ``templates``)."""
    out: list[Check] = []
    for kind, rule in config.channels.items():
        wanted = rule.window_template
        if wanted is None:
            continue
        value = f"{wanted.name} ({wanted.language})"
        keys = (_k(kind, "window_template", "name"),)
        try:
            cls = channel_class(kind)
        except UnknownAdapter:
            continue  # the text's own problems say so
        if "templates" not in cls.listings:
            out.append(Check("template", value, keys, None, f"{cls.title} lists no templates"))
            continue
        with rt.read_session() as session:
            accounts = list(
                session.scalars(
                    select(ChannelAccount).where(
                        ChannelAccount.tenant_id == tenant.id,
                        ChannelAccount.kind == kind,
                        ChannelAccount.status == ChannelStatus.ACTIVE,
                    )
                )
            )
        if not accounts:
            out.append(Check("template", value, keys, None, f"no {cls.title} account connected"))
        for account in accounts:
            out.append(_template_check(rt, account, wanted.name, wanted.language, value, keys))
    return out


def _template_check(
    rt: Runtime,
    account: ChannelAccount,
    name: str,
    language: str,
    value: str,
    keys: tuple[str, ...],
) -> Check:
    where = account.name or f"account {account.id}"
    try:
        listed = rt.channel_adapter(account).listing("templates")
    except (BridgeError, NotImplementedError) as exc:
        return Check("template", value, keys, None, f"{where}: not read ({exc})")
    same = [t for t in listed if t.get("name") == name and t.get("language") == language]
    if not same:
        return Check("template", value, keys, False, where)
    status = str(same[0].get("status") or "").upper()
    if status and status != "APPROVED":
        return Check("template", value, keys, False, f"{where}: {status}")
    return Check("template", value, keys, True, where)


# -- the sample message ---------------------------------------------------------------------


def _preview(
    rt: Runtime,
    tenant: Tenant,
    config: MappingConfig,
    sample: Sample,
    adapter: CrmAdapter,
    crm: _Catalog,
) -> Preview:
    """The sample message through the inbound sync's own draft builders
    (``InboundSync._contact_draft``, ``_entity_draft``, ``_task_draft``,
    ``_entry``) on rows that exist only in memory, and the adapter's
    :meth:`~crm_adapters.base.CrmAdapter.preview_entry` for the note."""
    from bridge.pipeline.inbound.sync import InboundSync

    rule = config.rule(sample.channel)
    assert rule is not None  # the caller checked
    sync = InboundSync(rt, 0)
    snap = _snapshot(tenant, config, rule, sample)
    owner = _next_owner(rt, tenant.id, sample.channel, rule)
    snap.conversation.owner_id = owner
    stand_in = CrmRef("contact", "")
    contact = sync._contact_draft(snap, rule)
    live = tuple(n for n, t in rule.fields.contact.items() if is_live(t))
    contact_fields = {"name": contact.profile.name() or "", **contact.properties}
    entity: dict[str, str] | None = None
    task: dict[str, str] | None = None
    entity_ref: CrmRef | None = None
    if rule.object not in ("none", "unsorted"):
        draft = sync._entity_draft(snap, rule, stand_in, owner)
        entity_ref = CrmRef(rule.object, "")
        entity = {
            "name": draft.name,
            "pipeline": _pipeline_name(crm, rule.object, draft.pipeline),
            "stage": _stage_name(crm, rule.object, draft.pipeline, draft.stage),
            "owner": _owner_name(crm, owner, rule),
            **draft.properties,
        }
        if rule.task.when == "new_entity":
            made = sync._task_draft(snap, rule, stand_in, entity_ref)
            task = {
                "subject": made.subject,
                "owner": _owner_name(crm, made.owner_id, rule),
                "due_in": f"{rule.task.due_in_minutes} min",
                "body": made.body,
            }
    note = None
    if rule.timeline != "none":
        entry = sync._entry(snap, rule, snap.messages[0], stand_in, entity_ref, False)
        note = adapter.preview_entry(entry)
    return Preview(
        channel=sample.channel,
        object=rule.object,
        contact=contact_fields,
        entity=entity,
        task=task,
        note=note,
        inbox=rule.inbox,
        live=live,
    )


def _snapshot(tenant: Tenant, config: MappingConfig, rule: ChannelRule, sample: Sample) -> Any:
    """The sync's snapshot of a new conversation holding the sample: rows in
    memory only (id 0: no row has it, so the sync's reads find nothing).

    The snapshot's mapping has the channel's rule without its fields: the
    sync fills ``{client.reachable}`` from the client's stored channels,
    and a sample's client has none; the drafts render the rule's own
    fields (the rule is passed to them), the live ones left out."""
    from bridge.pipeline.inbound.sync import _Snapshot

    now = dt.datetime.now(dt.UTC)
    first, _, last = sample.sender.strip().partition(" ")
    account = ChannelAccount(
        id=0, tenant_id=tenant.id, kind=sample.channel, key=DRY_RUN_UID, name="", settings={}
    )
    contact = Contact(id=0, tenant_id=tenant.id, display_name=sample.sender.strip() or None)
    conversation = Conversation(
        id=0,
        uid=DRY_RUN_UID,
        tenant_id=tenant.id,
        channel_account_id=0,
        contact_id=0,
        external_thread_id=DRY_RUN_UID,
    )
    profile: dict[str, str | None] = {
        "display_name": sample.sender.strip() or None,
        "first_name": first or None,
    }
    if last:
        profile["last_name"] = last
    message = Message(
        id=0,
        uid=f"{DRY_RUN_UID}-1",
        tenant_id=tenant.id,
        conversation_id=0,
        channel_account_id=0,
        direction="in",
        seq=1,
        dedupe_key=DRY_RUN_UID,
        kind=MessageKind.TEXT.value,
        text=sample.text,
        payload={"profile": profile},
        sent_at=now,
        created_at=now,
    )
    quiet = replace(rule, fields=FieldTemplates())
    shadow = replace(config, channels={**config.channels, sample.channel: quiet})
    return _Snapshot(conversation, tenant, account, contact, [message], 0, mapping=shadow)


def _next_owner(rt: Runtime, tenant_id: int, channel: str, rule: ChannelRule) -> str | None:
    """The owner a new client's conversation gets now (the sync's
    ``_choose_owner``), without taking a turn of the round robin: its
    counter is read, not advanced."""
    strategy = rule.owner.strategy
    if strategy == "sticky":
        strategy = rule.owner.fallback  # a new client has no CRM owner yet
    if strategy == "fixed":
        return rule.owner.owner_id
    if strategy == "round_robin" and rule.owner.pool:
        taken = rt.redis.get(f"bridge:rr:{tenant_id}:{channel}")
        return rule.owner.pool[int(taken or 0) % len(rule.owner.pool)]
    return None


def _owner_name(crm: _Catalog, owner: str | None, rule: ChannelRule) -> str:
    if not owner:
        return ""
    owners = crm.owners()
    name = owners.get(owner, ("", True))[0] if isinstance(owners, Mapping) else ""
    shown = f"{name} ({owner})" if name else owner
    return f"{shown}, {rule.owner.strategy}"


def _pipeline_name(crm: _Catalog, object_type: str, pipeline: str | None) -> str:
    if not pipeline:
        return ""
    pipelines = crm.pipelines(object_type)
    if isinstance(pipelines, str):
        return pipeline
    named = [p.name for p in pipelines if p.id == pipeline]
    return f"{named[0]} ({pipeline})" if named else pipeline


def _stage_name(crm: _Catalog, object_type: str, pipeline: str | None, stage: str | None) -> str:
    if not stage:
        return ""
    pipelines = crm.pipelines(object_type)
    if isinstance(pipelines, str):
        return stage
    named = [
        p.stages[stage]
        for p in pipelines
        if stage in p.stages and (not pipeline or p.id == pipeline)
    ]
    return f"{named[0]} ({stage})" if named else stage
