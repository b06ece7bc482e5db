"""The admin's mapping file: which CRM object each channel opens, with which
pipeline, stage, owner strategy, fields, tasks — validated by marshmallow.

Errors name the file, the key and the fix::

    mappings/acme.yaml: channels.telegram.owner.strategy: must be one of
    fixed, round_robin, sticky (got 'random')
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from mappings.service import ServicePolicy, ServiceSchema

__all__ = [
    "ChannelRule",
    "FieldTemplates",
    "MappingConfig",
    "MappingSchema",
    "OwnerRule",
    "TaskRule",
    "PLACEMENT_KEYS",
    "SLUG",
    "PLACEHOLDER_RE",
    "KNOWN_PLACEHOLDERS",
]

PLACEHOLDER_RE = re.compile(r"\{([a-z_]+(?:\.[a-z0-9_]+)?)\}")
#: what templates may refer to; ``utm.<anything>`` and ``consent.<anything>``
#: are free-form
KNOWN_PLACEHOLDERS = frozenset(
    {
        "contact.name",
        "contact.phone",
        "contact.email",
        "profile.first_name",
        "profile.last_name",
        "profile.username",
        "profile.language",
        "profile.page_url",
        "profile.page_title",
        "profile.referrer",
        "profile.timezone",
        "channel.kind",
        "channel.title",
        "channel.account",
        "conversation.uid",
        "conversation.ticket",
        "conversation.priority",
        "message.text",
        # the channels that reach the client now, in one line
        # ("WhatsApp: yes; Telegram: blocked"; bridge.reach)
        "client.reachable",
    }
)
#: placeholders whose value changes without a message (the bridge keeps a
#: contact field using one current: ``bridge.live_fields``)
LIVE_PLACEHOLDERS = frozenset({"client.reachable"})
#: what a live contact field may use besides: it is rendered from the client
#: alone, outside any message's sync
CLIENT_PLACEHOLDERS = LIVE_PLACEHOLDERS | {"contact.name", "contact.phone", "contact.email"}
#: the deal/lead/ticket fields the service layer writes (bridge.service.engine)
SERVICE_FIELDS = ("service_line", "sla_due", "csat_score")
#: the placeholder families whose keys are the channel's own
FREE_FORM = ("utm.", "consent.")
OWNER_STRATEGIES = ("fixed", "round_robin", "sticky")
#: the keys of a channel rule that say where a new entity lands in the CRM;
#: what each CRM reads of them it declares itself (``CrmAdapter.entity_keys``)
PLACEMENT_KEYS = ("pipeline", "stage")
#: a CRM or channel slug (the registries' keys)
SLUG = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class OwnerRule:
    strategy: str = "fixed"
    owner_id: str | None = None
    pool: tuple[str, ...] = ()
    fallback: str = "round_robin"


@dataclass(frozen=True)
class TaskRule:
    when: str = "never"  # never | new_entity
    subject: str = "Reply to {contact.name}"
    due_in_minutes: int = 60


@dataclass(frozen=True)
class FieldTemplates:
    entity: dict[str, str] = field(default_factory=dict)
    contact: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PriorityRule:
    """A conversation's priority (``{conversation.priority}``) from its
    first message: the first rule that matches — the sender's e-mail domain
    (or a subdomain of it), or a keyword in the text (any case) — else the
    default."""

    default: str = ""
    #: (what: "domain" | "keyword", the domain or keyword, the priority)
    rules: tuple[tuple[str, str, str], ...] = ()

    def of(self, email: str | None, text: str) -> str:
        domain = (email or "").rpartition("@")[2].lower()
        lowered = text.casefold()
        for what, needle, value in self.rules:
            if what == "domain" and domain and (domain == needle or domain.endswith("." + needle)):
                return value
            if what == "keyword" and needle.casefold() in lowered:
                return value
        return self.default


@dataclass(frozen=True)
class AcknowledgeRule:
    """The automatic acknowledgement of a new ticket (channels that open
    tickets: e-mail): its text per language, and the most a sender gets per
    hour (a loop with another auto-responder ends there)."""

    text: dict[str, str] = field(default_factory=dict)
    per_sender_per_hour: int = 3

    def text_for(self, language: str | None, fallback: str) -> str | None:
        return self.text.get(language or "") or self.text.get(fallback) or None


@dataclass(frozen=True)
class WindowTemplate:
    """What a reply becomes when the channel's reply window is closed
    (WhatsApp: 24 h after the customer last wrote): a pre-approved
    template, its language, and its body parameters (templates of their
    own: ``{message.text}`` is the rep's reply)."""

    name: str
    language: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChannelRule:
    """What to do in the CRM for messages from one channel kind."""

    #: deal | ticket (HubSpot), lead (amoCRM, Bitrix24), unsorted (the CRM's
    #: own inbox creates person and lead: amoCRM chats), none
    object: str = "deal"
    pipeline: str | None = None
    stage: str | None = None
    reuse: str = "open"  # open | conversation
    owner: OwnerRule = field(default_factory=OwnerRule)
    timeline: str = "note"
    inbox: bool = False
    task: TaskRule = field(default_factory=TaskRule)
    fields: FieldTemplates = field(default_factory=FieldTemplates)
    name: str = "{channel.title}: {contact.name}"
    #: None: no acknowledgement is sent
    acknowledge: AcknowledgeRule | None = None
    #: None: ``{conversation.priority}`` is empty
    priority: PriorityRule | None = None
    #: None: a reply outside the channel's reply window fails, with the
    #: reason written back to the CRM
    window_template: WindowTemplate | None = None


#: the time zone the bridge writes times in when the mapping names none
DEFAULT_TIMEZONES = {"ru": "Europe/Moscow", "en": "UTC"}


#: the handles two clients may be recognised as one by (a name never is)
IDENTITY_KINDS = ("phone", "email")


@dataclass(frozen=True)
class IdentityRules:
    """When two clients holding the same handle become one.

    ``merge``: kinds whose match merges the two automatically when both
    handles are verified by their channels; ``link``: kinds whose match (an
    unverified handle on either side, or a verified one not in ``merge``)
    only links them for a rep to confirm. Neither: nothing happens.
    """

    merge: frozenset[str] = frozenset(IDENTITY_KINDS)
    link: frozenset[str] = frozenset(IDENTITY_KINDS)


@dataclass(frozen=True)
class MappingConfig:
    crm: str
    channels: dict[str, ChannelRule]
    language: str = "en"
    name: str | None = None
    source: str = ""
    #: IANA time zone for the times the bridge writes into the CRM
    timezone: str = "UTC"
    #: how a ticket number is written (subjects, CRM entities): ``{number}``
    #: is the tenant's sequential number
    ticket_format: str = "T-{number}"
    #: which matching handles merge two clients and which only link them
    identity: IdentityRules = field(default_factory=IdentityRules)
    #: lines, menus, routing and transfers (None: no service layer)
    service: ServicePolicy | None = None

    def ticket(self, number: int | None) -> str | None:
        """The ticket's label (``T-1042``), or None without a number."""
        return None if number is None else self.ticket_format.replace("{number}", str(number))

    def rule(self, channel_kind: str) -> ChannelRule | None:
        return self.channels.get(channel_kind)

    def custom_properties(self) -> dict[str, list[str]]:
        """object type -> property names the templates write."""
        out: dict[str, set[str]] = {}
        for rule in self.channels.values():
            if rule.object not in ("none", "unsorted"):
                out.setdefault(rule.object, set()).update(rule.fields.entity)
            out.setdefault("contact", set()).update(rule.fields.contact)
            if self.service is not None and rule.object not in ("none", "unsorted"):
                # the service layer's fields (bridge.service.engine.FIELDS)
                # and those its menu options write
                out[rule.object].update(SERVICE_FIELDS)
                out[rule.object].update(
                    name
                    for menu in self.service.menus.values()
                    for option in menu.options
                    for name in option.fields
                )
        return {k: sorted(v) for k, v in out.items() if v}

    def live_contact_fields(self) -> dict[str, str]:
        """Contact property -> template, for the contact fields the bridge
        keeps current (a template using a live placeholder such as
        ``{client.reachable}``), over every channel's rule (the first rule
        naming a property gives its template)."""
        out: dict[str, str] = {}
        for rule in self.channels.values():
            for name, template in rule.fields.contact.items():
                if name not in out and is_live(template):
                    out[name] = template
        return out


def is_live(template: str) -> bool:
    """The template uses a placeholder whose value changes without a message."""
    return any(name in LIVE_PLACEHOLDERS for name in PLACEHOLDER_RE.findall(template))


def _check_live(fields_: Mapping[str, str]) -> None:
    """A live contact field is rendered from the client alone."""
    for name, template in fields_.items():
        if not is_live(template):
            continue
        other = sorted(set(PLACEHOLDER_RE.findall(template)) - CLIENT_PLACEHOLDERS)
        if other:
            allowed = ", ".join("{" + p + "}" for p in sorted(CLIENT_PLACEHOLDERS))
            raise ValidationError(
                {
                    name: {
                        "value": [
                            f"{{{other[0]}}} cannot be used with {{client.reachable}}: the "
                            "bridge rewrites this field without a message; use only "
                            f"{allowed} here, or move {{{other[0]}}} to a field of its own"
                        ]
                    }
                },
                "contact",
            )


def _check_template(value: str) -> None:
    for name in PLACEHOLDER_RE.findall(value):
        if name not in KNOWN_PLACEHOLDERS and not name.startswith(FREE_FORM):
            known = ", ".join(sorted(KNOWN_PLACEHOLDERS))
            raise ValidationError(
                f"unknown placeholder {{{name}}}; use one of {known}, {{utm.<key>}}"
                " or {consent.<key>}"
            )
    stray = PLACEHOLDER_RE.sub("", value)
    if "{" in stray or "}" in stray:
        raise ValidationError("unbalanced or malformed {placeholder}")


class Template(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        _check_template(text)
        return text


PROPERTY_NAME = validate.Regexp(
    r"^[a-z][a-z0-9_]{0,99}$",
    error="property names are lower-case letters, digits and _ (got {input!r})",
)


class OwnerSchema(Schema):
    class Meta:
        unknown = RAISE

    strategy = fields.String(
        required=True,
        validate=validate.OneOf(OWNER_STRATEGIES, error="must be one of {choices} (got {input!r})"),
    )
    owner_id = fields.String()
    pool = fields.List(fields.String(), load_default=list)
    fallback = fields.String(
        load_default="round_robin",
        validate=validate.OneOf(("fixed", "round_robin"), error="must be fixed or round_robin"),
    )

    # skip_on_field_errors=False: these checks run on the keys that did load,
    # so one run reports every problem (a key given but invalid has its own
    # error and is not reported again as missing)
    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _strategy_needs(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        strategy = data.get("strategy")
        missing = _missing(data, original)
        if strategy == "fixed" and missing("owner_id"):
            raise ValidationError("fixed needs owner_id: the CRM owner id", "owner_id")
        if strategy == "round_robin" and missing("pool"):
            raise ValidationError("round_robin needs pool: a list of CRM owner ids", "pool")
        if strategy == "sticky":
            if data.get("fallback") == "fixed" and missing("owner_id"):
                raise ValidationError("sticky with fallback fixed needs owner_id", "owner_id")
            if data.get("fallback") == "round_robin" and missing("pool"):
                raise ValidationError(
                    "sticky falls back to round_robin: add pool (owner ids) or fallback: fixed",
                    "pool",
                )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> OwnerRule:
        return OwnerRule(
            strategy=data["strategy"],
            owner_id=data.get("owner_id"),
            pool=tuple(data.get("pool") or ()),
            fallback=data.get("fallback", "round_robin"),
        )


class TaskSchema(Schema):
    class Meta:
        unknown = RAISE

    when = fields.String(
        load_default="never",
        validate=validate.OneOf(("never", "new_entity"), error="must be never or new_entity"),
    )
    subject = Template(load_default="Reply to {contact.name}")
    due_in_minutes = fields.Integer(
        load_default=60, validate=validate.Range(min=0, max=60 * 24 * 30)
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> TaskRule:
        return TaskRule(**data)


class FieldsSchema(Schema):
    class Meta:
        unknown = RAISE

    entity = fields.Dict(
        keys=fields.String(validate=PROPERTY_NAME), values=Template(), load_default=dict
    )
    contact = fields.Dict(
        keys=fields.String(validate=PROPERTY_NAME), values=Template(), load_default=dict
    )

    @validates_schema
    def _live_fields(self, data: dict[str, Any], **_: Any) -> None:
        _check_live(data.get("contact") or {})

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> FieldTemplates:
        return FieldTemplates(entity=dict(data["entity"]), contact=dict(data["contact"]))


class PriorityMatchSchema(Schema):
    class Meta:
        unknown = RAISE

    domain = fields.String(validate=validate.Regexp(r"^[a-z0-9.-]+\.[a-z]{2,}$", flags=re.I))
    keyword = fields.String(validate=validate.Length(min=1, max=100))
    value = fields.String(required=True, validate=validate.Length(min=1, max=64))

    @validates_schema
    def _one(self, data: dict[str, Any], **_: Any) -> None:
        if ("domain" in data) == ("keyword" in data):
            raise ValidationError("give either domain or keyword", "domain")


class PrioritySchema(Schema):
    class Meta:
        unknown = RAISE

    default = fields.String(load_default="", validate=validate.Length(max=64))
    rules = fields.List(fields.Nested(PriorityMatchSchema), load_default=list)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> PriorityRule:
        rules = tuple(
            ("domain", r["domain"].lower(), r["value"])
            if "domain" in r
            else ("keyword", r["keyword"], r["value"])
            for r in data["rules"]
        )
        return PriorityRule(data["default"], rules)


class AcknowledgeSchema(Schema):
    class Meta:
        unknown = RAISE

    text = fields.Dict(
        keys=fields.String(validate=validate.OneOf(("en", "ru"), error="languages: en, ru")),
        values=Template(),
        required=True,
        validate=validate.Length(min=1, error="give the text in at least one language"),
    )
    per_sender_per_hour = fields.Integer(
        load_default=3, validate=validate.Range(min=1, max=100, error="must be 1 to 100")
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> AcknowledgeRule:
        return AcknowledgeRule(dict(data["text"]), data["per_sender_per_hour"])


class WindowTemplateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[a-z0-9_]{1,512}$",
            error="a template name is lower-case letters, digits and _ (got {input!r})",
        ),
    )
    language = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[a-z]{2,3}(_[A-Z]{2})?$", error="a language code such as en, ru or en_US"
        ),
    )
    parameters = fields.List(Template(), load_default=list, validate=validate.Length(max=20))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> WindowTemplate:
        return WindowTemplate(data["name"], data["language"], tuple(data["parameters"]))


class ChannelRuleSchema(Schema):
    class Meta:
        unknown = RAISE

    object = fields.String(
        load_default="deal",
        validate=validate.OneOf(
            ("deal", "ticket", "lead", "unsorted", "none"),
            error="must be one of {choices} (got {input!r})",
        ),
    )
    pipeline = fields.String()
    stage = fields.String()
    reuse = fields.String(
        load_default="open",
        validate=validate.OneOf(("open", "conversation"), error="must be open or conversation"),
    )
    owner = fields.Nested(OwnerSchema, load_default=None)
    timeline = fields.String(
        load_default="note",
        validate=validate.OneOf(
            ("note", "communication", "none"), error="must be note, communication or none"
        ),
    )
    inbox = fields.Boolean(load_default=False)
    task = fields.Nested(TaskSchema, load_default=None)
    fields_ = fields.Nested(FieldsSchema, data_key="fields", load_default=None)
    name = Template(load_default="{channel.title}: {contact.name}")
    acknowledge = fields.Nested(AcknowledgeSchema, load_default=None)
    priority = fields.Nested(PrioritySchema, load_default=None)
    window_template = fields.Nested(WindowTemplateSchema, load_default=None)

    @validates_schema(skip_on_field_errors=False)
    def _something_lands(self, data: dict[str, Any], **_: Any) -> None:
        # an inbox that failed to load is absent from data: its own error says why
        if data.get("timeline") == "none" and data.get("inbox") is False:
            raise ValidationError(
                "messages would land nowhere: set timeline: note or inbox: true", "timeline"
            )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ChannelRule:
        return ChannelRule(
            object=data["object"],
            pipeline=data.get("pipeline"),
            stage=data.get("stage"),
            reuse=data["reuse"],
            owner=data.get("owner") or OwnerRule(),
            timeline=data["timeline"],
            inbox=data["inbox"],
            task=data.get("task") or TaskRule(),
            fields=data.get("fields_") or FieldTemplates(),
            name=data["name"],
            acknowledge=data.get("acknowledge"),
            priority=data.get("priority"),
            window_template=data.get("window_template"),
        )


def _missing(data: Mapping[str, Any], original: Any) -> Callable[[str], bool]:
    """``missing(key)``: the key is empty or left out. A key that was given
    but failed to load is not missing: its own error already says why."""

    def missing(key: str) -> bool:
        if isinstance(original, Mapping) and key in original and key not in data:
            return False
        return not data.get(key)

    return missing


def _valid_timezone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        guess = _closest_timezone(value)
        hint = f"did you mean {guess}? Otherwise use" if guess else "use"
        raise ValidationError(
            f"unknown time zone: {hint} an IANA name such as Europe/Moscow or UTC (got {value!r})"
        ) from None


def _closest_timezone(value: str) -> str | None:
    """The IANA name an admin probably meant: the same name in another case
    (``europe/moscow``), a city without its region (``Moscow``), or a close
    spelling (``Europe/Moscw``)."""
    names = sorted(available_timezones())
    folded = value.strip().casefold()
    for same in (lambda name: name, lambda name: name.rsplit("/", 1)[-1]):
        for name in names:
            if same(name).casefold() == folded:
                return name
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.8)
    return close[0] if close else None


def _identity_kinds(what: str) -> Any:
    return fields.List(
        fields.String(
            validate=validate.OneOf(
                IDENTITY_KINDS,
                error=f"{what}: one of {', '.join(IDENTITY_KINDS)} (got {{input!r}}); a name"
                " never makes two clients one",
            )
        ),
        load_default=list(IDENTITY_KINDS),
    )


class IdentitySchema(Schema):
    class Meta:
        unknown = RAISE

    merge = _identity_kinds("merge")
    link = _identity_kinds("link")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> IdentityRules:
        return IdentityRules(merge=frozenset(data["merge"]), link=frozenset(data["link"]))


class MappingSchema(Schema):
    class Meta:
        unknown = RAISE

    crm = fields.String(
        required=True,
        validate=validate.Regexp(SLUG, error="must be a CRM slug such as hubspot"),
    )
    name = fields.String()
    language = fields.String(
        load_default="en", validate=validate.OneOf(("en", "ru"), error="must be en or ru")
    )
    timezone = fields.String(validate=_valid_timezone)
    ticket_format = fields.String(
        load_default="T-{number}",
        validate=validate.Regexp(
            r"^[A-Za-z0-9#_-]{0,16}\{number\}[A-Za-z0-9_-]{0,16}$",
            error="must hold {number} once, with letters, digits, # _ - around it (T-{number})",
        ),
    )
    identity = fields.Nested(IdentitySchema, load_default=None)
    service = fields.Nested(ServiceSchema, load_default=None)
    channels = fields.Dict(
        keys=fields.String(
            validate=validate.Regexp(
                SLUG,
                error="channel names are lower-case slugs such as telegram (got {input!r})",
            )
        ),
        values=fields.Nested(ChannelRuleSchema),
        required=True,
        validate=validate.Length(min=1, error="map at least one channel (e.g. telegram)"),
    )

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> MappingConfig:
        return MappingConfig(
            crm=data["crm"],
            channels=dict(data["channels"]),
            language=data["language"],
            name=data.get("name"),
            timezone=data.get("timezone") or DEFAULT_TIMEZONES[data["language"]],
            ticket_format=data["ticket_format"],
            identity=data.get("identity") or IdentityRules(),
            service=data.get("service"),
        )
