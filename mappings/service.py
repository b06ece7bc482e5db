"""The mapping's ``service:`` section: lines (departments), their working
hours, owners, SLA and bot settings, the greeting menus, the routing rules
and transfers between lines — validated by marshmallow into frozen
dataclasses (:class:`ServicePolicy`) that ``bridge.service`` reads.

Every client-facing text is given in English and Russian (``en:``, ``ru:``):
the product serves both, and a missing one is named in the error. Errors
follow :mod:`mappings.loader`: the key and the fix, e.g.
``service.lines.sales.hours.week.mnd: unknown day: did you mean mon?``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

# ``mappings.schema`` will import this module (its ``service:`` key), so its
# names are read when a value is validated, not at import time
import mappings.schema as _schema

if TYPE_CHECKING:  # bridge imports mappings: a run-time import here is a cycle
    from bridge.service.calendar import Hours, Span
    from bridge.service.sla import Targets

__all__ = [
    "AlertRoute",
    "Csat",
    "Greeting",
    "Line",
    "Menu",
    "MenuOption",
    "OwnerPolicy",
    "Rule",
    "ServicePolicy",
    "ServiceSchema",
    "Suggestions",
    "Supervisor",
    "Texts",
    "TransferPolicy",
    "check_channels",
    "check_knowledge",
    "check_tags",
    "load_service",
    "parse_duration",
    "parse_spans",
    "reply_key",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OWNER_STRATEGIES = ("round_robin", "least_loaded", "strict_order")
STICKY = ("off", "line", "any")
OFF_SHIFT = ("wait", "next")
BOT_MODES = ("always", "out_of_hours", "off")
GREETING_HOURS = ("any", "open", "closed")
TELL = ("each_line", "once", "never")
CALENDARS = ("ru",)
#: the most options one menu level holds: one digit each (0 is the person)
MAX_OPTIONS = 9
#: words a client types for "talk to a person" and "back" in any menu (case-folded);
#: a label may not be one of them
PERSON_WORDS = frozenset(
    {
        "0",
        "operator",
        "person",
        "human",
        "agent",
        "talk to a person",
        "оператор",
        "человек",
        "связаться с оператором",
    }
)
#: what a reply may carry around a number or a label: spaces, punctuation,
#: the keycap emoji's variation selector and combining keycap (``1️⃣``)
REPLY_EDGES = " \t\r\n.,;:!?)(]['\"«»—–-\ufe0f\u20e3"
BACK_WORDS = frozenset({"#", "back", "назад"})
NAME = re.compile(r"^[a-z0-9_]+$")
DURATION = re.compile(
    r"^(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m(?:in)?)?\s*(?:(?P<s>\d+)\s*s)?$"
)
SPAN = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
#: placeholders each kind of text may hold (``bridge.service.after_hours``
#: fills the out-of-hours notice's; ``bridge.service.transfer`` the transfer's)
NOTICE_PLACEHOLDERS = frozenset({"opening", "opening_time"})
TRANSFER_PLACEHOLDERS = frozenset({"line"})
NO_PLACEHOLDERS: frozenset[str] = frozenset()


# -- what the section becomes ----------------------------------------------------------------


@dataclass(frozen=True)
class Texts:
    """A client-facing text in English and Russian."""

    en: str
    ru: str

    def get(self, language: str | None) -> str:
        """The text in ``language`` ("ru", "ru-RU"); English for any other."""
        return self.ru if (language or "").lower().startswith("ru") else self.en

    def as_dict(self) -> dict[str, str]:
        return {"en": self.en, "ru": self.ru}


@dataclass(frozen=True)
class AlertRoute:
    """Where a supervisor's alerts go besides the CRM: a channel kind and
    the address on it (a chat id, an e-mail address)."""

    channel: str
    to: str


@dataclass(frozen=True)
class Supervisor:
    #: the CRM user id alerts and tasks go to
    user: str
    alerts: tuple[AlertRoute, ...] = ()


@dataclass(frozen=True)
class Csat:
    """The rating prompt after a session (``bridge.service.csat``)."""

    enabled: bool = False
    #: a score at or below it alerts the supervisor
    threshold: int = 3
    #: how long after the prompt a reply is read as a rating
    rating_window: dt.timedelta = dt.timedelta(hours=24)
    #: how long after the rating the next message is its comment
    comment_window: dt.timedelta = dt.timedelta(minutes=30)


@dataclass(frozen=True)
class Suggestions:
    """Suggested replies for the operator (``bridge.service.suggest``)."""

    enabled: bool = False
    #: how many are shown
    count: int = 3


@dataclass(frozen=True)
class OwnerPolicy:
    """How a line picks the session's owner among its members on shift."""

    #: round_robin | least_loaded | strict_order
    strategy: str = "round_robin"
    #: the client's current CRM owner keeps the client: off | line (when
    #: a member of this line) | any (any CRM user on shift)
    sticky: str = "line"
    #: that owner is off shift: wait (for them) | next (the strategy picks)
    off_shift: str = "next"
    #: a member with this many open sessions gets no new one (None: no cap)
    max_load: int | None = None


@dataclass(frozen=True)
class Line:
    """A line (department): who it serves, who works it, when, and how."""

    name: str
    title: Texts
    members: tuple[str, ...]
    hours: Hours
    #: the clients it serves (leads, clients, partners …); empty: anyone
    audience: frozenset[str] = frozenset()
    #: the channel kinds it serves; empty: any
    channels: frozenset[str] = frozenset()
    #: higher first: when several lines serve a session with no rule for
    #: it, and for a member of several lines
    priority: int = 0
    owner: OwnerPolicy = field(default_factory=OwnerPolicy)
    supervisor: Supervisor | None = None
    #: conversation priority ("high", "normal" … "default") -> its SLA
    sla: Mapping[str, Targets] = field(default_factory=dict)
    #: always | out_of_hours | off
    bot: str = "out_of_hours"
    session_idle_hours: int = 24
    #: no out-of-hours notice within this many minutes of an operator's reply
    quiet_minutes: int = 30
    #: the out-of-hours notice; None: the service's default text
    notice: Texts | None = None
    csat: Csat = field(default_factory=Csat)
    #: working time without a client message after which the line's channel
    #: accounts count as silent (bridge.silence); None: BRIDGE_SILENCE_AFTER
    silence_after: dt.timedelta | None = None

    def targets(self, priority: str | None) -> Targets | None:
        """The SLA for a conversation of ``priority``: its own, else ``default``."""
        return self.sla.get(priority or "default") or self.sla.get("default")


@dataclass(frozen=True)
class MenuOption:
    """One choice: another menu, or a leaf that routes the session (line,
    tags, CRM fields) and may answer it from the knowledge base."""

    label: Texts
    menu: str | None = None
    line: str | None = None
    knowledge: str | None = None
    tags: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Menu:
    name: str
    text: Texts
    options: tuple[MenuOption, ...]


@dataclass(frozen=True)
class Greeting:
    """Which menu a new session is greeted with; empty sets match anything."""

    #: None: no menu
    menu: str | None
    channels: frozenset[str] = frozenset()
    lines: frozenset[str] = frozenset()
    #: any | open | closed (the line's hours when the session opens)
    hours: str = "any"


@dataclass(frozen=True)
class Rule:
    """A routing rule: every condition it gives must hold."""

    line: str
    channels: frozenset[str] = frozenset()
    #: case-folded; ``word*`` is a prefix
    keywords: tuple[str, ...] = ()
    languages: frozenset[str] = frozenset()
    audience: frozenset[str] = frozenset()
    #: a CRM field of the client and the values (case-folded) that match
    field: str | None = None
    values: frozenset[str] = frozenset()

    def conditions(self) -> tuple[str, ...]:
        """The kinds of condition it holds, in the order they are checked."""
        given = (
            ("channel", self.channels),
            ("keywords", self.keywords),
            ("language", self.languages),
            ("audience", self.audience),
            ("field", self.field),
        )
        return tuple(kind for kind, value in given if value)


#: the transfer notice when the mapping gives none
TRANSFER_NOTICE = Texts(
    en="Your conversation has been passed to {line}. Everything you wrote stays with it.",
    ru="Ваш диалог передан: {line}. Вся переписка сохранена.",
)


@dataclass(frozen=True)
class TransferPolicy:
    """Moving a session to another line: by a number (``/transfer 2``), a
    CRM stage or a CRM tag; ``tell``: each_line | once | never."""

    numbers: Mapping[str, str] = field(default_factory=dict)
    stages: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    notice: Texts = TRANSFER_NOTICE
    tell: str = "each_line"


@dataclass(frozen=True)
class ServicePolicy:
    """The whole ``service:`` section."""

    #: name -> line, in the file's order
    lines: Mapping[str, Line]
    default_line: str
    menus: Mapping[str, Menu] = field(default_factory=dict)
    greetings: tuple[Greeting, ...] = ()
    rules: tuple[Rule, ...] = ()
    transfer: TransferPolicy = field(default_factory=TransferPolicy)
    #: the tenant's knowledge base file (``bridge.service.knowledge.load``),
    #: relative to the mappings directory; None: none
    knowledge_base: str | None = None
    suggestions: Suggestions = field(default_factory=Suggestions)
    #: a client's message after their session went idle opens a new
    #: deal/ticket too (a closed deal always opens a new one)
    new_deal_per_session: bool = False

    def line(self, name: str) -> Line:
        return self.lines[name]

    def knowledge_ids(self) -> frozenset[str]:
        """The knowledge-base entries the menus answer with."""
        return frozenset(o.knowledge for m in self.menus.values() for o in m.options if o.knowledge)

    def segment_fields(self) -> frozenset[str]:
        """The client's CRM fields the rules read (the core fetches them)."""
        return frozenset(r.field for r in self.rules if r.field)

    def channel_kinds(self) -> frozenset[str]:
        """The channel kinds the section names."""
        kinds = {k for line in self.lines.values() for k in line.channels}
        kinds |= {k for g in self.greetings for k in g.channels}
        kinds |= {k for r in self.rules for k in r.channels}
        return frozenset(kinds)


# -- checks the core runs once it knows more than this section --------------------------------


def check_knowledge(policy: ServicePolicy, known: Collection[str]) -> list[tuple[str, str]]:
    """``(key, message)`` for each menu option whose knowledge-base entry is
    not in ``known`` (the tenant's knowledge base ids)."""
    problems = []
    for menu in policy.menus.values():
        for index, option in enumerate(menu.options):
            if option.knowledge and option.knowledge not in known:
                problems.append(
                    (
                        f"service.menus.{menu.name}.options[{index}].knowledge",
                        f"no knowledge-base entry with this id{_hint(option.knowledge, known)}"
                        f" (got {option.knowledge!r})",
                    )
                )
    return problems


def check_tags(policy: ServicePolicy, crm_title: str) -> list[tuple[str, str]]:
    """``(key, message)`` for each place the section names tags, for a CRM
    whose deals carry none (HubSpot, Bitrix24): a CRM field does the job there."""
    why = f"{crm_title} has no tags on deals: route by a CRM field (fields:) or a stage"
    problems = [
        (f"service.menus.{menu.name}.options[{index}].tags", why)
        for menu in policy.menus.values()
        for index, option in enumerate(menu.options)
        if option.tags
    ]
    if policy.transfer.tags:
        problems.append(("service.transfer.tags", why))
    return problems


def check_channels(policy: ServicePolicy, mapped: Collection[str]) -> list[tuple[str, str]]:
    """``(key, message)`` for each channel kind the section names that the
    mapping's ``channels:`` does not map."""
    where: list[tuple[str, frozenset[str]]] = [
        (f"service.lines.{line.name}.channels", line.channels) for line in policy.lines.values()
    ]
    where += [
        (f"service.greetings[{i}].channels", g.channels) for i, g in enumerate(policy.greetings)
    ]
    where += [(f"service.rules[{i}].channels", r.channels) for i, r in enumerate(policy.rules)]
    return [
        (key, f"channel {kind!r} is not one of the mapping's channels{_hint(kind, mapped)}")
        for key, kinds in where
        for kind in sorted(kinds)
        if kind not in mapped
    ]


def _hint(word: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if close:
        return f": did you mean {close[0]}?"
    return f"; known: {', '.join(sorted(known))}" if known else ""


# -- values ----------------------------------------------------------------------------------


def parse_duration(value: str) -> dt.timedelta:
    """``"15m"``, ``"1h30m"``, ``"2d"``, ``"45s"`` -> a timedelta (> 0)."""
    found = DURATION.fullmatch(value.strip().lower()) if value.strip() else None
    if found is None or not any(found.groupdict().values()):
        raise ValidationError(f"a duration such as 15m, 1h30m, 4h or 2d (got {value!r})")
    parts = {k: int(v or 0) for k, v in found.groupdict().items()}
    span = dt.timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])
    if not span:
        raise ValidationError(f"must be longer than zero (got {value!r})")
    return span


def parse_spans(value: str | list[str]) -> list[tuple[dt.time, dt.time]]:
    """``"09:00-13:00, 14:00-18:00"`` (or a list of spans) -> ordered spans;
    ``"24:00"`` ends a span at midnight (an end of 00:00); ``closed`` or
    nothing: no spans."""
    parts = value if isinstance(value, list) else str(value).split(",")
    texts = [str(p).strip() for p in parts if str(p).strip()]
    if [t.lower() for t in texts] in ([], ["closed"]):
        return []
    spans = [_span(text) for text in texts]
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if start < end or end == dt.time(0):
            raise ValidationError(
                "spans must be in order and not overlap; a break is the gap between two spans"
                f" such as 09:00-13:00, 14:00-18:00 (got {value!r})"
            )
    return spans


def _span(text: str) -> tuple[dt.time, dt.time]:
    found = SPAN.fullmatch(text)
    if found is None:
        raise ValidationError(f"a span is HH:MM-HH:MM such as 09:00-18:00 (got {text!r})")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ValidationError(f"not a time of day in {text!r}: hours 00-23 (24:00 ends a day)")
    start = dt.time(h1, m1)
    # bridge.service.calendar.Span: an end of 00:00 is the end of the day
    end = dt.time(0) if h2 in (0, 24) and not m2 else dt.time(h2, m2)
    if end != dt.time(0) and end <= start:
        raise ValidationError(
            f"a span ends after it starts; one that runs past midnight is two spans,"
            f" e.g. fri: 20:00-24:00 and sat: 00:00-02:00 (got {text!r})"
        )
    return start, end


def _days(key: str) -> list[int]:
    """``mon`` -> [0]; ``mon-fri`` -> [0 … 4]; raises with the closest day."""
    text = key.strip().lower()
    first, dash, last = (part.strip() for part in text.partition("-"))
    ends = [first, last] if dash else [first]
    for end in ends:
        if end not in WEEKDAYS:
            close = difflib.get_close_matches(end, WEEKDAYS, n=1, cutoff=0.5)
            guess = f"did you mean {close[0]}? " if close else ""
            raise ValidationError(
                f"unknown day: {guess}days are mon, tue, wed, thu, fri, sat, sun or a range"
                f" such as mon-fri (got {key!r})"
            )
    start, stop = WEEKDAYS.index(ends[0]), WEEKDAYS.index(ends[-1])
    if stop < start:
        raise ValidationError(f"a range runs forward through the week, e.g. mon-fri (got {key!r})")
    return list(range(start, stop + 1))


_T = TypeVar("_T")


def _loaded(items: Any, kind: type[_T]) -> Iterator[tuple[int, _T]]:
    """The items of a list that loaded into ``kind``, with their index."""
    for index, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, kind):
            yield index, item


def _check_text(value: str, allowed: frozenset[str]) -> None:
    for name in PLACEHOLDER.findall(value):
        if name not in allowed:
            own = ", ".join("{" + p + "}" for p in sorted(allowed)) or "none"
            raise ValidationError(f"unknown placeholder {{{name}}}; this text takes {own}")
    if "{" in PLACEHOLDER.sub("", value) or "}" in PLACEHOLDER.sub("", value):
        raise ValidationError("unbalanced or malformed {placeholder}")


class _Day(fields.String):
    """A weekday key: ``mon`` … ``sun`` or a range ``mon-fri``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        _days(text)
        return text


class _Spans(fields.Field[list[tuple[dt.time, dt.time]]]):
    """A day's open spans: ``"09:00-13:00, 14:00-18:00"`` or a list of them."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> list[tuple[dt.time, dt.time]]:
        if value is None or value is False:
            return []
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return parse_spans(value)
        if isinstance(value, str):
            return parse_spans(value)
        raise ValidationError(
            f'spans as text such as "09:00-13:00, 14:00-18:00", or closed (got {value!r})'
        )


class _Date(fields.Field[dt.date]):
    """An ISO date: YAML reads ``2026-01-09`` as a date, a quoted one is text."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value).strip())
        except ValueError:
            raise ValidationError(
                f"a date as YYYY-MM-DD such as 2026-01-09 (got {value!r})"
            ) from None


class _Duration(fields.Field[dt.timedelta]):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.timedelta:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError(f"a duration such as 15m, 1h30m, 4h or 2d (got {value!r})")
        if isinstance(value, int):
            raise ValidationError(f"give the unit: {value}m for minutes, {value}h for hours")
        return parse_duration(value)


def _one_of(choices: tuple[str, ...]) -> validate.OneOf:
    return validate.OneOf(choices, error="must be one of {choices} (got {input!r})")


class _Choice(fields.String):
    """One of ``choices``; an unquoted ``off`` (a boolean false to YAML 1.1,
    which PyYAML reads) is the choice ``off``."""

    def __init__(self, choices: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(validate=_one_of(choices), **kwargs)
        self.off = "off" in choices

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if value is False and self.off:
            return "off"
        return super()._deserialize(value, attr, data, **kwargs)


def _name(what: str) -> validate.Regexp:
    return validate.Regexp(
        NAME, error=f"{what} are lower-case letters, digits and _ (got {{input!r}})"
    )


def _valid_timezone(value: str) -> None:
    _schema._valid_timezone(value)


def _slugs(what: str, **kwargs: Any) -> fields.List[str]:
    return fields.List(fields.String(validate=_name(what)), load_default=list, **kwargs)


# -- schemas ---------------------------------------------------------------------------------


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def texts_schema(allowed: frozenset[str] = NO_PLACEHOLDERS) -> type[Schema]:
    """A schema for ``{en: …, ru: …}``, both required, holding only the
    ``allowed`` placeholders."""

    def text(lang: str) -> fields.String:
        return fields.String(
            required=True,
            validate=[
                validate.Length(min=1, error="is empty: write the text"),
                lambda v: _check_text(v, allowed),
            ],
            error_messages={
                "required": f"required: the {lang} text (client-facing texts are given in"
                " en and ru)"
            },
        )

    class TextsSchema(_Strict):
        class Meta(_Strict.Meta):
            register = False

        en = text("English")
        ru = text("Russian")

        @post_load
        def _make(self, data: dict[str, Any], **_: Any) -> Texts:
            return Texts(en=data["en"], ru=data["ru"])

    return TextsSchema


class WeekHoursSchema(_Strict):
    """``hours:`` of a line (or of ``defaults:``)."""

    timezone = fields.String(required=True, validate=_valid_timezone)
    week = fields.Dict(keys=_Day(), values=_Spans(), required=True)
    holidays = fields.List(_Date(), load_default=list)
    workdays = fields.List(_Date(), load_default=list)
    calendar = fields.String(validate=_one_of(CALENDARS), load_default=None, allow_none=True)

    @validates_schema
    def _each_day_once(self, data: dict[str, Any], **_: Any) -> None:
        seen: dict[int, str] = {}
        for key in data.get("week", {}):
            for day in _days(key):
                if day in seen:
                    raise ValidationError(
                        {
                            key: {
                                "key": [
                                    f"{WEEKDAYS[day]} is given twice (in {seen[day]} and {key}):"
                                    " give each day once"
                                ]
                            }
                        },
                        "week",
                    )
                seen[day] = key
        if data.get("week") is not None and not any(data["week"].values()):
            raise ValidationError("the line is never open: give at least one day's spans", "week")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Hours:
        from bridge.service.calendar import Hours, Span  # at load time (see the imports)

        week: dict[int, tuple[Span, ...]] = {}
        for key, spans in data["week"].items():
            for day in _days(key):
                week[day] = tuple(Span(start, end) for start, end in spans)
        return Hours(
            timezone=data["timezone"],
            week=week,
            holidays=frozenset(data["holidays"]),
            workdays=frozenset(data["workdays"]),
            calendar=data.get("calendar"),
        )


class SlaSchema(_Strict):
    first_response = _Duration()
    next_response = _Duration()
    resolution = _Duration()
    warn_share = fields.Float(
        load_default=0.8,
        validate=validate.Range(
            min=0,
            max=1,
            error="a share from 0 to 1 such as 0.8 (0 or 1: no warning, the breach only)",
        ),
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Targets:
        from bridge.service.sla import Targets  # at load time (see the imports)

        return Targets(**data)


class AlertSchema(_Strict):
    channel = fields.String(required=True, validate=_name("channel kinds"))
    to = fields.String(required=True, validate=validate.Length(min=1, max=320))

    @validates_schema
    def _address(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("channel") == "email" and "@" not in data.get("to", "@"):
            raise ValidationError("an e-mail address such as head@example.com", "to")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> AlertRoute:
        return AlertRoute(data["channel"], data["to"])


class SupervisorSchema(_Strict):
    user = fields.String(required=True, validate=validate.Length(min=1, max=64))
    alerts = fields.List(fields.Nested(AlertSchema), load_default=list)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Supervisor:
        return Supervisor(data["user"], tuple(data["alerts"]))


class CsatSchema(_Strict):
    enabled = fields.Boolean(load_default=True)
    threshold = fields.Integer(
        load_default=3, validate=validate.Range(min=1, max=5, error="a score from 1 to 5")
    )
    rating_window = _Duration(load_default=Csat.rating_window)
    comment_window = _Duration(load_default=Csat.comment_window)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Csat:
        return Csat(**data)


class SuggestionsSchema(_Strict):
    enabled = fields.Boolean(load_default=True)
    count = fields.Integer(
        load_default=3, validate=validate.Range(min=1, max=10, error="from 1 to 10 suggestions")
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Suggestions:
        return Suggestions(**data)


class OwnerPolicySchema(_Strict):
    strategy = fields.String(load_default="round_robin", validate=_one_of(OWNER_STRATEGIES))
    sticky = _Choice(STICKY, load_default="line")
    off_shift = fields.String(load_default="next", validate=_one_of(OFF_SHIFT))
    max_load = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=1000, error="open sessions from 1 to 1000"),
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> OwnerPolicy:
        return OwnerPolicy(**data)


def _line_settings() -> dict[str, fields.Field[Any]]:
    """The keys a line and ``defaults:`` share (a line's own key wins whole)."""
    return {
        "hours": fields.Nested(WeekHoursSchema),
        "owner": fields.Nested(OwnerPolicySchema),
        "supervisor": fields.Nested(SupervisorSchema),
        "sla": fields.Dict(
            keys=fields.String(validate=validate.Length(min=1, max=64)),
            values=fields.Nested(SlaSchema),
        ),
        "bot": _Choice(BOT_MODES),
        "session_idle_hours": fields.Integer(
            validate=validate.Range(min=1, max=24 * 30, error="hours from 1 to 720")
        ),
        "quiet_minutes": fields.Integer(
            validate=validate.Range(min=0, max=24 * 60, error="minutes from 0 to 1440")
        ),
        "out_of_hours": fields.Nested(texts_schema(NOTICE_PLACEHOLDERS)),
        "csat": fields.Nested(CsatSchema),
        "silence_after": _Duration(),
    }


DefaultsSchema = _Strict.from_dict(_line_settings(), name="DefaultsSchema")

LineSchema = _Strict.from_dict(
    {
        **_line_settings(),
        "title": fields.Nested(texts_schema()),
        "audience": _slugs("audience names"),
        "channels": _slugs("channel kinds"),
        "members": fields.List(
            fields.String(validate=validate.Length(min=1, max=64)),
            required=True,
            validate=validate.Length(
                min=1, error='a line needs members: a list of CRM user ids such as ["101"]'
            ),
        ),
        "priority": fields.Integer(
            load_default=0, validate=validate.Range(min=-100, max=100, error="from -100 to 100")
        ),
    },
    name="LineSchema",
)


class OptionSchema(_Strict):
    label = fields.Nested(texts_schema(), required=True)
    menu = fields.String()
    line = fields.String()
    knowledge = fields.String(validate=validate.Length(min=1, max=200))
    tags = fields.List(fields.String(validate=validate.Length(min=1, max=100)), load_default=list)
    fields_ = fields.Dict(
        data_key="fields",
        keys=fields.String(validate=validate.Length(min=1, max=100)),
        values=fields.String(),
        load_default=dict,
    )

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _does_something(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        given = set(original) if isinstance(original, Mapping) else set()
        routes = given & {"line", "knowledge", "tags", "fields"}
        if "menu" in given and routes:
            raise ValidationError(
                f"an option opens a menu or routes the session, not both: remove menu or"
                f" {', '.join(sorted(routes))}",
                "menu",
            )
        if "menu" not in given and not routes:
            raise ValidationError(
                "the option does nothing: give menu (a submenu), line, knowledge, tags or fields"
            )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> MenuOption:
        return MenuOption(
            label=data["label"],
            menu=data.get("menu"),
            line=data.get("line"),
            knowledge=data.get("knowledge"),
            tags=tuple(data["tags"]),
            fields=dict(data["fields_"]),
        )


class MenuSchema(_Strict):
    text = fields.Nested(texts_schema(), required=True)
    options = fields.List(
        fields.Nested(OptionSchema),
        required=True,
        validate=validate.Length(
            min=1,
            max=MAX_OPTIONS,
            error=f"a menu holds 1 to {MAX_OPTIONS} options (0 is always the person);"
            " put more in a submenu",
        ),
    )

    @validates_schema(skip_on_field_errors=False)
    def _labels(self, data: dict[str, Any], **_: Any) -> None:
        """A client's reply must name one option: no label is a number, a
        word for back or a person, or another option's label."""
        seen: set[str] = set()
        problems: dict[int, dict[str, list[str]]] = {}
        for index, option in _loaded(data.get("options"), MenuOption):
            own = {reply_key(option.label.en), reply_key(option.label.ru)}
            reserved = sorted(k for k in own if k in PERSON_WORDS or k in BACK_WORDS or k.isdigit())
            taken = sorted(own & seen)
            seen |= own
            if reserved:
                message = (
                    f"{reserved[0]!r} is what a client types for a number, back or a person:"
                    " choose another label"
                )
            elif taken:
                message = f"{taken[0]!r} is another option's label too: labels differ in a menu"
            else:
                continue
            problems[index] = {"label": [message]}
        if problems:
            raise ValidationError(problems, "options")


class GreetingSchema(_Strict):
    menu = fields.String(required=True, allow_none=True)
    channels = _slugs("channel kinds")
    lines = _slugs("line names")
    hours = fields.String(load_default="any", validate=_one_of(GREETING_HOURS))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Greeting:
        return Greeting(
            menu=data["menu"],
            channels=frozenset(data["channels"]),
            lines=frozenset(data["lines"]),
            hours=data["hours"],
        )


class RuleSchema(_Strict):
    line = fields.String(required=True)
    channels = _slugs("channel kinds")
    keywords = fields.List(
        fields.String(validate=validate.Length(min=1, max=100)), load_default=list
    )
    languages = fields.List(
        fields.String(
            validate=validate.Regexp(r"^[a-z]{2,3}$", error="a language code such as en or ru")
        ),
        load_default=list,
    )
    audience = _slugs("audience names")
    field_ = fields.String(data_key="field", validate=validate.Length(min=1, max=100))
    values = fields.List(fields.String(), load_default=list)

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _some_condition(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        given = set(original) if isinstance(original, Mapping) else set()
        if "field" in given and not data.get("values") and "values" not in given:
            raise ValidationError("field needs values: the field's values that match", "values")
        if "values" in given and "field" not in given:
            raise ValidationError("values need field: the client's CRM field to read", "field")
        if not given & {"channels", "keywords", "languages", "audience", "field"}:
            raise ValidationError(
                "a rule needs a condition: channels, keywords, languages, audience or field"
            )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Rule:
        return Rule(
            line=data["line"],
            channels=frozenset(data["channels"]),
            keywords=tuple(_fold(k) for k in data["keywords"]),
            languages=frozenset(data["languages"]),
            audience=frozenset(data["audience"]),
            field=data.get("field_"),
            values=frozenset(_fold(v) for v in data["values"]),
        )


class TransferSchema(_Strict):
    numbers = fields.Dict(
        keys=fields.String(
            validate=validate.Regexp(
                r"^[1-9][0-9]?$", error="a number from 1 to 99 (got {input!r})"
            )
        ),
        values=fields.String(),
        load_default=dict,
    )
    stages = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    tags = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    notice = fields.Nested(texts_schema(TRANSFER_PLACEHOLDERS), load_default=None)
    tell = fields.String(load_default="each_line", validate=_one_of(TELL))

    @pre_load
    def _numbers_as_text(self, data: Any, **_: Any) -> Any:
        """YAML reads ``2: support_2`` with a number key: the numbers are text here."""
        numbers = data.get("numbers") if isinstance(data, Mapping) else None
        if isinstance(numbers, Mapping):
            as_text = {str(k) if isinstance(k, int) else k: v for k, v in numbers.items()}
            data = {**data, "numbers": as_text}
        return data

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> TransferPolicy:
        return TransferPolicy(
            numbers=dict(data["numbers"]),
            stages=dict(data["stages"]),
            tags=dict(data["tags"]),
            notice=data["notice"] or TRANSFER_NOTICE,
            tell=data["tell"],
        )


class ServiceSchema(_Strict):
    """The ``service:`` section: ``ServiceSchema().load(data)`` -> :class:`ServicePolicy`."""

    defaults = fields.Nested(DefaultsSchema, load_default=dict)
    lines = fields.Dict(
        keys=fields.String(validate=_name("line names")),
        values=fields.Nested(LineSchema),
        required=True,
        validate=validate.Length(min=1, error="give at least one line"),
    )
    default_line = fields.String()
    menus = fields.Dict(
        keys=fields.String(validate=_name("menu names")),
        values=fields.Nested(MenuSchema),
        load_default=dict,
    )
    greetings = fields.List(fields.Nested(GreetingSchema), load_default=list)
    rules = fields.List(fields.Nested(RuleSchema), load_default=list)
    transfer = fields.Nested(TransferSchema, load_default=None)
    knowledge_base = fields.String(
        load_default=None,
        validate=validate.Regexp(
            r"^(?!.*\.\.)[^/\\][^\\]*\.ya?ml$",
            error="a YAML file in the mappings directory such as kb/acme.yaml (got {input!r})",
        ),
    )
    suggestions = fields.Nested(SuggestionsSchema, load_default=None)
    new_deal_per_session = fields.Boolean(load_default=False)

    # skip_on_field_errors=False: the references are checked among what did
    # load (an item that failed has its own error), so one run reports all
    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _references(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        errors = _Errors()
        if isinstance(original, Mapping):
            _check_hours(original, errors)
        lines = data.get("lines")
        if isinstance(lines, Mapping):
            _check_line_refs(data, set(lines), errors)
        _check_menu_refs(data, errors)
        if errors.messages:
            raise ValidationError(errors.messages)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ServicePolicy:
        defaults = data["defaults"]
        lines = {name: _line(name, raw, defaults) for name, raw in data["lines"].items()}
        menus = {
            name: Menu(name, raw["text"], tuple(raw["options"]))
            for name, raw in data["menus"].items()
        }
        return ServicePolicy(
            lines=lines,
            default_line=data.get("default_line") or next(iter(lines)),
            menus=menus,
            greetings=tuple(data["greetings"]),
            rules=tuple(data["rules"]),
            transfer=data["transfer"] or TransferPolicy(),
            knowledge_base=data["knowledge_base"],
            suggestions=data["suggestions"] or Suggestions(),
            new_deal_per_session=data["new_deal_per_session"],
        )


def _line(name: str, raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> Line:
    def own(key: str, default: Any) -> Any:
        if key in raw:
            return raw[key]
        return defaults.get(key, default)

    return Line(
        name=name,
        title=raw.get("title") or Texts(name, name),
        members=tuple(raw["members"]),
        hours=own("hours", None),
        audience=frozenset(raw["audience"]),
        channels=frozenset(raw["channels"]),
        priority=raw["priority"],
        owner=own("owner", OwnerPolicy()),
        supervisor=own("supervisor", None),
        sla=dict(own("sla", {})),
        bot=own("bot", "out_of_hours"),
        session_idle_hours=own("session_idle_hours", 24),
        quiet_minutes=own("quiet_minutes", 30),
        notice=own("out_of_hours", None),
        csat=own("csat", Csat()),
        silence_after=own("silence_after", None),
    )


# -- cross-checks (errors shaped as marshmallow's, so the loader names the key) --------------


class _Errors:
    """marshmallow-shaped error messages built from key paths: a dict field's
    entry is ``{key: {"value": …}}``, a list's item ``{index: …}``."""

    def __init__(self) -> None:
        self.messages: dict[Any, Any] = {}

    def add(self, path: tuple[Any, ...], message: str) -> None:
        node = self.messages
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node.setdefault(path[-1], []).append(message)


def _check_hours(original: Mapping[str, Any], errors: _Errors) -> None:
    """Each line has hours: its own or the defaults' (as written in the file)."""
    defaults, lines = original.get("defaults"), original.get("lines")
    if isinstance(defaults, Mapping) and "hours" in defaults or not isinstance(lines, Mapping):
        return
    for name, raw in lines.items():
        if isinstance(raw, Mapping) and "hours" not in raw:
            errors.add(
                ("lines", name, "value", "hours"),
                "required: the line's working hours (here or in defaults: hours:)",
            )


def _options(data: Mapping[str, Any]) -> Iterator[tuple[str, int, MenuOption]]:
    """(menu name, index, option) for each option that loaded."""
    menus = data.get("menus")
    for name, raw in menus.items() if isinstance(menus, Mapping) else ():
        options = raw.get("options") if isinstance(raw, Mapping) else None
        for index, option in _loaded(options, MenuOption):
            yield name, index, option


def _check_line_refs(data: Mapping[str, Any], names: set[str], errors: _Errors) -> None:
    def check(path: tuple[Any, ...], name: str | None) -> None:
        if name is not None and name not in names:
            errors.add(path, f"no line {name!r}{_hint(name, names)}")

    check(("default_line",), data.get("default_line"))
    for index, rule in _loaded(data.get("rules"), Rule):
        check(("rules", index, "line"), rule.line)
    for index, greeting in _loaded(data.get("greetings"), Greeting):
        for name in sorted(greeting.lines):
            check(("greetings", index, "lines"), name)
    for menu_name, index, option in _options(data):
        check(("menus", menu_name, "value", "options", index, "line"), option.line)
    transfer = data.get("transfer")
    for key in ("numbers", "stages", "tags"):
        if isinstance(transfer, TransferPolicy):
            targets = getattr(transfer, key)
        else:  # partly loaded: its other keys have errors of their own
            targets = transfer.get(key) if isinstance(transfer, Mapping) else None
        for entry, name in (targets or {}).items():
            check(("transfer", key, entry, "value"), name)


def _check_menu_refs(data: Mapping[str, Any], errors: _Errors) -> None:
    menus = data.get("menus")
    names = set(menus) if isinstance(menus, Mapping) else set()

    def check(path: tuple[Any, ...], name: str | None) -> None:
        if name is not None and name not in names:
            errors.add(path, f"no menu {name!r}{_hint(name, names)}")

    for index, greeting in _loaded(data.get("greetings"), Greeting):
        check(("greetings", index, "menu"), greeting.menu)
    submenus: dict[str, set[str]] = {name: set() for name in names}
    opened: list[tuple[str, int, str]] = []
    for menu_name, index, option in _options(data):
        check(("menus", menu_name, "value", "options", index, "menu"), option.menu)
        if option.menu is not None and option.menu in names:
            submenus[menu_name].add(option.menu)
            opened.append((menu_name, index, option.menu))
    for menu_name, index, submenu in opened:
        if menu_name == submenu or menu_name in _reachable(submenu, submenus):
            errors.add(
                ("menus", menu_name, "value", "options", index, "menu"),
                f"{submenu!r} leads back to {menu_name!r}: menus nest without cycles"
                " (a client goes back with #)",
            )


def _reachable(start: str, submenus: Mapping[str, set[str]]) -> set[str]:
    """The menus reachable from ``start``'s options (``start`` only in a cycle)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for name in submenus.get(todo.pop(), set()) - seen:
            seen.add(name)
            todo.append(name)
    return seen


def _fold(text: str) -> str:
    """Case-folded, spaces collapsed, ё read as е."""
    return " ".join(text.casefold().replace("ё", "е").split())


def reply_key(text: str) -> str:
    """A client's reply or a label as a menu compares them: case-folded, ё
    read as е, spaces collapsed, the edges' punctuation and keycap marks
    gone (``" 2) "`` -> ``2``, ``1️⃣`` -> ``1``, ``Купить!`` -> ``купить``)."""
    return _fold(text).strip(REPLY_EDGES) or text.strip()


# -- reading ---------------------------------------------------------------------------------


def load_service(data: Any, *, file: str = "<mapping>") -> ServicePolicy:
    """The ``service:`` section's policy; ``MappingError`` names the file,
    each key (``service.…``) and the fix."""
    from mappings.loader import MappingError, flatten_errors  # the loader imports schema

    schema = ServiceSchema()
    try:
        policy: ServicePolicy = schema.load(data)
    except ValidationError as exc:
        problems = flatten_errors(exc.messages, data, schema)
        keyed = [(f"service.{key}" if key else "service", text) for key, text in problems]
        raise MappingError(file, keyed) from None
    return policy
