"""Transfers between lines (1st -> 2nd -> 3rd): what moves a session, where
to, and whether the client is told.

A CRM user moves a session by a reply command (``/transfer 2``,
``/transfer support_2``, ``/transfer Вторая линия``, Russian ``/перевод 2``),
a stage (or status) or a tag the mapping's ``transfer:`` maps to a line. The
session keeps its history; the SLA clock follows the new line's targets
(``bridge.service.sla``); the owner is chosen on the new line
(:func:`bridge.service.routing.choose_owner`).

"Told once" is the core's state: the lines the client was told about in
this session. :func:`should_tell` says whether to tell given that list.

Pure: no clock, no storage.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from mappings.service import ServicePolicy, reply_key

__all__ = [
    "Transfer",
    "by_stage",
    "by_tags",
    "decide",
    "notice",
    "parse_command",
    "resolve",
    "should_tell",
    "unknown_target",
]

#: ``/transfer <where>`` or ``/перевод <where>`` at the start of the reply;
#: ``/transfer_2`` as a messenger-style command is read as ``/transfer 2``
COMMAND = re.compile(
    r"^\s*/(?:transfer|перевод|перевести)(?:[\s_]+(?P<where>[^\n]+?))?\s*$",
    re.IGNORECASE,
)
Via = Literal["command", "stage", "tag"]

#: what the CRM user reads when a command names no line ({where}: what they
#: wrote, {known}: the choices)
UNKNOWN = {
    "en": "No line {where!r} to transfer to. Use a number or a line: {known}.",
    "ru": "Нет линии {where!r} для перевода. Укажите номер или линию: {known}.",
}


@dataclass(frozen=True)
class Transfer:
    """A decided move: the line, whether the client is told, and why."""

    line: str
    tell: bool
    #: for the audit: "command -> support_2; told" …
    reason: str


def parse_command(text: str) -> str | None:
    """What a ``/transfer`` reply names (``"2"``, ``"support_2"``), ``""``
    for a bare ``/transfer``; None when the reply is not a transfer command."""
    found = COMMAND.match(text)
    if found is None:
        return None
    return (found["where"] or "").strip()


def resolve(policy: ServicePolicy, where: str) -> str | None:
    """The line ``where`` names: a number of the mapping's ``transfer.numbers``,
    a line's name, or its title in either language (any case); None if none."""
    key = reply_key(where)
    if key in policy.transfer.numbers:
        return policy.transfer.numbers[key]
    for line in policy.lines.values():
        if key in (reply_key(line.name), reply_key(line.title.en), reply_key(line.title.ru)):
            return line.name
    return None


def by_stage(policy: ServicePolicy, stage: str | None) -> str | None:
    """The line a CRM stage (or status) id moves a session to, if any."""
    return policy.transfer.stages.get(stage) if stage else None


def by_tags(policy: ServicePolicy, tags: Iterable[str]) -> str | None:
    """The line the entity's tags move a session to: the first of the
    mapping's ``transfer.tags`` (in its order) the entity carries; tags are
    compared case-insensitively."""
    carried = {reply_key(tag) for tag in tags}
    for tag, line in policy.transfer.tags.items():
        if reply_key(tag) in carried:
            return line
    return None


def should_tell(mode: str, told: Collection[str], line: str) -> bool:
    """Whether the client hears of a move to ``line``, given the lines they
    were told about in this session (``told``): ``each_line`` once per line,
    ``once`` once per session, ``never``."""
    if mode == "each_line":
        return line not in told
    if mode == "once":
        return not told
    return False


def decide(
    policy: ServicePolicy, current: str, line: str, told: Collection[str], via: Via
) -> Transfer | None:
    """The move of a session on ``current`` to ``line``; None when it is
    already there (a stage webhook delivered twice moves nothing)."""
    if line == current or line not in policy.lines:
        return None
    tell = should_tell(policy.transfer.tell, told, line)
    return Transfer(line, tell, f"{via}: {current} -> {line}; {'told' if tell else 'not told'}")


def notice(policy: ServicePolicy, line: str, language: str | None) -> str:
    """The client's notice of a move to ``line``, in their language."""
    title = policy.line(line).title.get(language)
    return policy.transfer.notice.get(language).replace("{line}", title)


def unknown_target(policy: ServicePolicy, where: str, language: str | None) -> str:
    """What the CRM user reads when ``/transfer <where>`` names no line."""
    numbers = [f"{n} ({name})" for n, name in sorted(policy.transfer.numbers.items())]
    known = ", ".join(numbers + list(policy.lines))
    template = UNKNOWN["ru" if (language or "").lower().startswith("ru") else "en"]
    return template.format(where=where, known=known)
