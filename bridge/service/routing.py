"""Routing a session: which line serves it and who on that line owns it.

Pure: the inputs are the tenant's :class:`~mappings.service.ServicePolicy`,
the session's :class:`Facts`, a view of the line's members (:data:`Staff`:
who is on shift and their load) and the round-robin :class:`RoutingState`;
the output is a :class:`Route` — the line, the owner or a "wait" verdict,
the reason as a short string for the audit, and the next state. The core
stores the state and reads the view; nothing here reads a clock or a
database.

The line, first match wins:

1. the line the client chose in the greeting menu;
2. the mapping's ``rules`` in order (channel, keywords, language, audience,
   a CRM segment field; every condition a rule gives must hold);
3. the lines that say whom they serve (their ``channels`` and/or
   ``audience`` fit the session), the highest ``priority`` first, then the
   file's order;
4. ``default_line``.

The owner, on that line:

* sticky: the client's current CRM owner keeps the client when on shift
  (``sticky: line`` only when a member of the line, ``any``: any CRM user
  in the view). Off shift: ``off_shift: wait`` holds the session for them,
  ``next`` lets the strategy pick (returning customers routed to an offline
  agent are a known complaint: chatwoot#4158, chatwoot#9587). Sticky
  ignores ``max_load``: the client is theirs.
* then among the members on shift below ``max_load``: ``round_robin`` (the
  next after the one the line assigned last, in the members' order),
  ``least_loaded`` (fewest open sessions; ties: the one assigned least
  recently — never assigned first — then the members' order) or
  ``strict_order`` (the first in the members' order).
* nobody left: wait for the line (the core assigns when someone is back).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mappings.service import Line, Rule, ServicePolicy

__all__ = [
    "Facts",
    "LineChoice",
    "Member",
    "Route",
    "RoutingState",
    "Staff",
    "choose_line",
    "choose_owner",
    "route",
]

Verdict = Literal["assign", "wait"]
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Facts:
    """What routing knows of a session."""

    #: the channel kind the client wrote from
    channel: str
    #: the client's first message (matched against keywords; never logged)
    text: str = ""
    #: the client's language ("ru", "en-US"), if known
    language: str | None = None
    #: the line the client chose in the greeting menu
    menu_line: str | None = None
    #: the client's audience as the core knows it (leads, clients, partners …)
    audience: str | None = None
    #: the client's CRM fields the rules read (``ServicePolicy.segment_fields``)
    fields: Mapping[str, str] = field(default_factory=dict)
    #: the client's current CRM owner (a CRM user id)
    owner: str | None = None


@dataclass(frozen=True)
class Member:
    """One CRM user as routing sees them now."""

    on_shift: bool = True
    #: open sessions
    load: int = 0
    #: when they were last given a session (aware), None: never
    last_assigned: dt.datetime | None = None


#: CRM user id -> their state; a user not in it is off shift
Staff = Mapping[str, Member]


@dataclass(frozen=True)
class RoutingState:
    """What round-robin remembers: the member each line assigned last."""

    last: Mapping[str, str] = field(default_factory=dict)

    def assigned(self, line: str, member: str) -> RoutingState:
        return RoutingState({**self.last, line: member})

    def to_dict(self) -> dict[str, Any]:
        return {"last": dict(self.last)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RoutingState:
        last = (data or {}).get("last") or {}
        return cls({str(k): str(v) for k, v in last.items()})


@dataclass(frozen=True)
class LineChoice:
    line: str
    #: why, for the audit: "menu", "rule 2 (keywords)", "serves channel", "default"
    reason: str


@dataclass(frozen=True)
class Route:
    """Where a session goes.

    ``assign``: ``owner`` is on shift and takes it now. ``wait`` with an
    owner: the client's sticky owner is off shift and the line waits for
    them; ``wait`` without: nobody on the line can take it now.
    """

    line: str
    verdict: Verdict
    owner: str | None
    reason: str
    state: RoutingState


def route(policy: ServicePolicy, facts: Facts, staff: Staff, state: RoutingState) -> Route:
    """The line and owner for a new session."""
    choice = choose_line(policy, facts)
    return choose_owner(policy.line(choice.line), facts.owner, staff, state, choice.reason)


# -- the line --------------------------------------------------------------------------------


def choose_line(policy: ServicePolicy, facts: Facts) -> LineChoice:
    """The line for ``facts`` (the order is in the module's docstring)."""
    if facts.menu_line is not None and facts.menu_line in policy.lines:
        return LineChoice(facts.menu_line, "menu")
    for number, rule in enumerate(policy.rules, start=1):
        if _matches(rule, facts):
            return LineChoice(rule.line, f"rule {number} ({', '.join(rule.conditions())})")
    serving = _serving(policy.lines.values(), facts)
    if serving is not None:
        return LineChoice(serving.name, f"serves the session (priority {serving.priority})")
    return LineChoice(policy.default_line, "default")


def _matches(rule: Rule, facts: Facts) -> bool:
    if rule.channels and facts.channel not in rule.channels:
        return False
    if rule.languages and _language(facts.language) not in rule.languages:
        return False
    if rule.audience and facts.audience not in rule.audience:
        return False
    if rule.field and not _field_holds(facts.fields.get(rule.field) or "", rule.values):
        return False
    return not rule.keywords or _has_keyword(rule.keywords, facts.text)


def _field_holds(value: str, wanted: Collection[str]) -> bool:
    """The client's field is one of ``wanted``: its whole text, or one of
    its values where it has several (read as "Gold, VIP"; a multiple
    checkbox as HubSpot stores it, "gold;vip")."""
    if _fold(value) in wanted:
        return True
    return any(_fold(part) in wanted for part in re.split(r"[,;]", value) if part.strip())


def _language(language: str | None) -> str:
    """``en-US`` -> ``en``."""
    return re.split(r"[-_]", language or "")[0].lower()


def _has_keyword(keywords: Sequence[str], text: str) -> bool:
    """Any keyword among the text's words: a keyword of several words matches
    them in a row; a word ending in ``*`` is a prefix (``возврат*`` matches
    ``возврата``). Case-folded, ё read as е; no other morphology."""
    words = _WORD.findall(_fold(text))
    for keyword in keywords:
        wanted = keyword.split()
        for start in range(len(words) - len(wanted) + 1):
            if all(_word_is(words[start + i], w) for i, w in enumerate(wanted)):
                return True
    return False


def _word_is(word: str, wanted: str) -> bool:
    if wanted.endswith("*"):
        return word.startswith(wanted[:-1])
    return word == wanted


def _serving(lines: Iterable[Line], facts: Facts) -> Line | None:
    """The highest-priority line that names whom it serves and fits: its
    channels (if given) hold the session's, its audience (if given) the
    client's. Ties: the file's order."""
    fitting = [
        line
        for line in lines
        if (line.channels or line.audience)
        and (not line.channels or facts.channel in line.channels)
        and (not line.audience or facts.audience in line.audience)
    ]
    return max(fitting, key=lambda line: line.priority, default=None)


def _fold(text: str) -> str:
    return " ".join(text.casefold().replace("ё", "е").split())


# -- the owner -------------------------------------------------------------------------------


def choose_owner(
    line: Line,
    client_owner: str | None,
    staff: Staff,
    state: RoutingState,
    why_line: str = "",
) -> Route:
    """Who on ``line`` takes the session (the rules are in the module's docstring)."""
    policy = line.owner
    prefix = f"{why_line}; " if why_line else ""

    def made(verdict: Verdict, owner: str | None, reason: str, after: RoutingState) -> Route:
        return Route(line.name, verdict, owner, f"{prefix}{reason}", after)

    note = ""
    if client_owner and _sticky_applies(line, client_owner):
        if _on_shift(staff, client_owner):
            return made("assign", client_owner, "sticky: the client's owner", state)
        if policy.off_shift == "wait":
            return made("wait", client_owner, "sticky: the client's owner is off shift", state)
        note = "the client's owner is off shift; "
    members = _available(line, staff)
    if not members:
        why = "nobody on shift" if not _anyone_on_shift(line, staff) else "everyone at max load"
        return made("wait", None, f"{note}{why}", state)
    owner = _pick(line, members, staff, state)
    reason = f"{note}{policy.strategy}"
    if policy.strategy == "least_loaded":
        reason += f" (load {staff[owner].load})"
    return made("assign", owner, reason, state.assigned(line.name, owner))


def _sticky_applies(line: Line, owner: str) -> bool:
    sticky = line.owner.sticky
    return sticky == "any" or (sticky == "line" and owner in line.members)


def _on_shift(staff: Staff, user: str) -> bool:
    member = staff.get(user)
    return member is not None and member.on_shift


def _anyone_on_shift(line: Line, staff: Staff) -> bool:
    return any(_on_shift(staff, user) for user in line.members)


def _available(line: Line, staff: Staff) -> list[str]:
    """The line's members on shift below its ``max_load``, in its order."""
    cap = line.owner.max_load
    return [
        user
        for user in line.members
        if _on_shift(staff, user) and (cap is None or staff[user].load < cap)
    ]


def _pick(line: Line, members: list[str], staff: Staff, state: RoutingState) -> str:
    strategy = line.owner.strategy
    if strategy == "least_loaded":
        return min(members, key=lambda user: _load_key(line, staff, user))
    if strategy == "round_robin":
        return _next_after(line.members, state.last.get(line.name), members)
    return members[0]  # strict_order


def _load_key(line: Line, staff: Staff, user: str) -> tuple[int, int, float, int]:
    """Fewest open sessions, then assigned least recently (never: first),
    then the members' order."""
    member = staff[user]
    last = member.last_assigned
    return (
        member.load,
        0 if last is None else 1,
        0.0 if last is None else last.timestamp(),
        line.members.index(user),
    )


def _next_after(order: Sequence[str], last: str | None, available: list[str]) -> str:
    """The first available member after ``last`` in ``order``, cyclically;
    from the start when ``last`` is not (or no longer) a member."""
    start = order.index(last) + 1 if last in order else 0
    for step in range(len(order)):
        user = order[(start + step) % len(order)]
        if user in available:
            return user
    return available[0]
