"""Static HubSpot reference data: object types, standard properties, property
groups, association type ids, seeded pipelines.

Sources are named per entry (FACTS.md = /work/shared/contracts/FACTS.md).
Nothing here holds state; :mod:`sandbox.hubspot.store` copies what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ObjectType",
    "OBJECT_TYPES",
    "resolve_type",
    "PropertyDef",
    "standard_properties",
    "STANDARD_GROUPS",
    "ASSOCIATION_TYPES",
    "default_type_id",
    "reverse_type_id",
    "target_for_type_id",
    "seed_pipelines",
    "PROPERTY_TYPES",
    "FIELD_TYPES",
    "DELIVERY_IDENTIFIER_TYPES",
]


@dataclass(frozen=True)
class ObjectType:
    """A CRM object type as HubSpot names it in paths and ids."""

    name: str  # plural path name, e.g. "contacts"
    type_id: str  # e.g. "0-1"
    singular: str  # e.g. "contact" (also accepted in paths)
    created_prop: str  # "createdate" (contacts/deals/tickets) or "hs_createdate" (engagements)
    modified_prop: str  # "lastmodifieddate" (contacts) or "hs_lastmodifieddate"
    default_props: tuple[str, ...]  # returned when `properties=` is not given
    search_props: tuple[str, ...]  # searched by the free-text `query`
    default_group: str


# Default property sets returned without `properties=`: HubSpot returns a small
# fixed set per type (the spec examples show createdate/lastmodifieddate/email/
# firstname/lastname for contacts). Exact sets for the other types are
# UNCONFIRMED (from memory of the API's behaviour).
OBJECT_TYPES: dict[str, ObjectType] = {
    t.name: t
    for t in (
        ObjectType("contacts", "0-1", "contact", "createdate", "lastmodifieddate",
                   ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate",
                    "lastname"),
                   ("email", "firstname", "lastname", "phone", "mobilephone", "company"),
                   "contactinformation"),
        ObjectType("deals", "0-3", "deal", "createdate", "hs_lastmodifieddate",
                   ("amount", "closedate", "createdate", "dealname", "dealstage",
                    "hs_lastmodifieddate", "hs_object_id", "pipeline"),
                   ("dealname",), "dealinformation"),
        ObjectType("tickets", "0-5", "ticket", "createdate", "hs_lastmodifieddate",
                   ("content", "createdate", "hs_lastmodifieddate", "hs_object_id",
                    "hs_pipeline", "hs_pipeline_stage", "hs_ticket_category",
                    "hs_ticket_priority", "subject"),
                   ("subject", "content"), "ticketinformation"),
        ObjectType("notes", "0-46", "note", "hs_createdate", "hs_lastmodifieddate",
                   ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
                   ("hs_note_body",), "noteinformation"),
        ObjectType("tasks", "0-27", "task", "hs_createdate", "hs_lastmodifieddate",
                   ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
                   ("hs_task_subject", "hs_task_body"), "taskinformation"),
        ObjectType("communications", "0-18", "communication", "hs_createdate",
                   "hs_lastmodifieddate",
                   ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
                   ("hs_communication_body",), "communicationinformation"),
    )
}

_ALIASES: dict[str, str] = {}
for _t in OBJECT_TYPES.values():
    _ALIASES[_t.name] = _t.name
    _ALIASES[_t.type_id] = _t.name
    _ALIASES[_t.singular] = _t.name


def resolve_type(raw: str) -> ObjectType | None:
    """Map a path's object type (name, singular or ``0-x`` id) to its type.

    Real HubSpot accepts the type ids in place of names (contracts/README.md).
    """
    name = _ALIASES.get(raw.lower())
    return OBJECT_TYPES.get(name) if name else None


# -- properties ----------------------------------------------------------------

PROPERTY_TYPES = ("string", "number", "date", "datetime", "enumeration", "bool", "phone_number")
FIELD_TYPES = (
    "text", "textarea", "date", "file", "number", "select", "radio", "checkbox",
    "booleancheckbox", "calculation_equation", "html", "phonenumber",
)


@dataclass(frozen=True)
class PropertyDef:
    """A property definition (the Properties API's Property shape)."""

    name: str
    label: str
    type: str = "string"
    field_type: str = "text"
    group: str = ""
    options: tuple[tuple[str, str], ...] = ()  # (value, label)
    read_only: bool = False  # modificationMetadata.readOnlyValue
    calculated: bool = False
    unique: bool = False  # hasUniqueValue
    hubspot_defined: bool = True
    external_options: bool = False  # owners / pipelines / stages
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _p(name: str, label: str, type_: str = "string", field_type: str = "text",
       **kw: Any) -> PropertyDef:
    return PropertyDef(name, label, type_, field_type, **kw)


def _enum(name: str, label: str, values: list[str], **kw: Any) -> PropertyDef:
    opts = tuple((v, v.replace("_", " ").title()) for v in values)
    return PropertyDef(name, label, "enumeration", "select", options=opts, **kw)


_OWNER = PropertyDef("hubspot_owner_id", "Owner", "enumeration", "select",
                     external_options=True)


def _common(obj: ObjectType) -> list[PropertyDef]:
    return [
        _p("hs_object_id", "Record ID", "number", "number", read_only=True, calculated=True),
        _p(obj.created_prop, "Create Date", "datetime", "date"),
        _p(obj.modified_prop, "Last Modified Date", "datetime", "date", read_only=True),
        _OWNER,
    ]


# Standard properties per type: the ones FACTS.md 3.3 names plus the obvious
# standard ones. Enumeration option sets are HubSpot's defaults (from memory;
# hs_ticket_category options seen in a live 400 body, community).
_STANDARD: dict[str, list[PropertyDef]] = {
    "contacts": [
        _p("email", "Email", unique=True),
        _p("firstname", "First Name"),
        _p("lastname", "Last Name"),
        _p("phone", "Phone Number", "string", "phonenumber"),
        _p("mobilephone", "Mobile Phone Number", "string", "phonenumber"),
        _p("hs_whatsapp_phone_number", "WhatsApp Phone Number", "string", "phonenumber"),
        _p("company", "Company Name"),
        _p("website", "Website URL"),
        _p("jobtitle", "Job Title"),
        _p("address", "Street Address"),
        _p("city", "City"),
        _p("state", "State/Region"),
        _p("zip", "Postal Code"),
        _p("country", "Country/Region"),
        _p("hs_language", "Preferred language"),
        _enum("lifecyclestage", "Lifecycle Stage",
              ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
               "opportunity", "customer", "evangelist", "other"]),
        _enum("hs_lead_status", "Lead Status",
              ["NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED",
               "ATTEMPTED_TO_CONTACT", "CONNECTED", "BAD_TIMING"]),
        # Calculated: the phone without country code, digits only (FACTS 3.3
        # names it as a phone search property; derivation UNCONFIRMED).
        _p("hs_searchable_calculated_phone_number", "Calculated Phone Number", read_only=True,
           calculated=True),
        # Set by a merge (sandbox/hubspot/merge.py): the ids merged into this
        # contact, ";"-separated, and the merged contacts' e-mail addresses.
        # Names from HubSpot/hubspot-api-nodejs#6 and HubSpot's merge guide
        # (community); the value formats are UNCONFIRMED.
        _p("hs_merged_object_ids", "Merged record IDs", read_only=True, calculated=True),
        _p("hs_additional_emails", "Additional email addresses", read_only=True),
    ],
    "deals": [
        _p("dealname", "Deal Name"),
        PropertyDef("pipeline", "Pipeline", "enumeration", "select", external_options=True),
        PropertyDef("dealstage", "Deal Stage", "enumeration", "radio", external_options=True),
        _p("amount", "Amount", "number", "number"),
        _p("closedate", "Close Date", "datetime", "date"),
        _p("description", "Deal Description", field_type="textarea"),
        _enum("dealtype", "Deal Type", ["newbusiness", "existingbusiness"]),
        _enum("hs_priority", "Priority", ["low", "medium", "high"]),
    ],
    "tickets": [
        _p("subject", "Ticket name"),
        _p("content", "Ticket description", field_type="textarea"),
        PropertyDef("hs_pipeline", "Pipeline", "enumeration", "select", external_options=True),
        PropertyDef("hs_pipeline_stage", "Ticket status", "enumeration", "radio",
                    external_options=True),
        _enum("hs_ticket_priority", "Priority", ["LOW", "MEDIUM", "HIGH", "URGENT"]),
        _enum("hs_ticket_category", "Category",
              ["PRODUCT_ISSUE", "BILLING_ISSUE", "FEATURE_REQUEST", "GENERAL_INQUIRY"]),
        _enum("source_type", "Source", ["CHAT", "EMAIL", "FORM", "PHONE"]),
    ],
    "notes": [
        _p("hs_note_body", "Note body", field_type="html"),
        _p("hs_timestamp", "Activity date", "datetime", "date"),
        _p("hs_attachment_ids", "Attached file IDs"),  # ";"-separated file ids
    ],
    "tasks": [
        _p("hs_task_subject", "Task Title"),
        _p("hs_task_body", "Notes", field_type="html"),
        _enum("hs_task_status", "Task Status",
              ["NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"]),
        _enum("hs_task_priority", "Priority", ["NONE", "LOW", "MEDIUM", "HIGH"]),
        _enum("hs_task_type", "Task Type", ["EMAIL", "CALL", "TODO", "LINKED_IN"]),
        _p("hs_timestamp", "Due date", "datetime", "date"),
    ],
    "communications": [
        # FACTS 3.3 (doc: developers.hubspot.com/docs/api/crm/communications).
        _enum("hs_communication_channel_type", "Channel type",
              ["WHATS_APP", "LINKEDIN_MESSAGE", "SMS"]),
        _enum("hs_communication_logged_from", "Logged from", ["CRM"]),
        _p("hs_communication_body", "Body", field_type="textarea"),
        _p("hs_timestamp", "Activity date", "datetime", "date"),
    ],
}


def standard_properties(type_name: str) -> dict[str, PropertyDef]:
    """The standard property definitions of an object type, by name."""
    obj = OBJECT_TYPES[type_name]
    props: dict[str, PropertyDef] = {}
    for p in _common(obj) + _STANDARD[type_name]:
        group = p.group or obj.default_group
        props[p.name] = PropertyDef(**{**p.__dict__, "group": group})
    return props


# Standard property groups per type. contactinformation/dealinformation/
# ticketinformation are HubSpot's; the engagement group names are UNCONFIRMED.
STANDARD_GROUPS: dict[str, list[tuple[str, str]]] = {
    "contacts": [("contactinformation", "Contact information"),
                 ("conversioninformation", "Conversion information"),
                 ("emailinformation", "Email information"),
                 ("socialmediainformation", "Social media information")],
    "deals": [("dealinformation", "Deal information"), ("deal_activity", "Deal activity")],
    "tickets": [("ticketinformation", "Ticket information"),
                ("ticketactivity", "Ticket activity")],
    "notes": [("noteinformation", "Note information")],
    "tasks": [("taskinformation", "Task information")],
    "communications": [("communicationinformation", "Communication information")],
}


# -- associations (FACTS 3.4; sdk hubspot/crm/association_type.py) --------------

# (from type, to type, HUBSPOT_DEFINED default type id, reverse type id)
ASSOCIATION_TYPES: tuple[tuple[str, str, int, int], ...] = (
    ("contacts", "companies", 279, 280),
    ("deals", "contacts", 3, 4),
    ("contacts", "tickets", 15, 16),
    ("deals", "tickets", 27, 28),
    ("notes", "contacts", 202, 201),
    ("notes", "deals", 214, 213),
    ("notes", "tickets", 228, 227),
    ("tasks", "contacts", 204, 203),
    ("tasks", "deals", 216, 215),
    ("tasks", "tickets", 230, 229),
    ("communications", "contacts", 81, 82),
    ("communications", "tickets", 83, 84),
    ("communications", "deals", 85, 86),
)

_BY_PAIR: dict[tuple[str, str], tuple[int, int]] = {}
for _f, _to, _id, _rev in ASSOCIATION_TYPES:
    _BY_PAIR[(_f, _to)] = (_id, _rev)
    _BY_PAIR[(_to, _f)] = (_rev, _id)


def default_type_id(from_type: str, to_type: str) -> int | None:
    """The unlabelled HUBSPOT_DEFINED type id from ``from_type`` to ``to_type``."""
    pair = _BY_PAIR.get((from_type, to_type))
    return pair[0] if pair else None


def reverse_type_id(from_type: str, to_type: str, type_id: int) -> int | None:
    """The type id of the reverse direction (symmetric associations)."""
    pair = _BY_PAIR.get((from_type, to_type))
    if pair and pair[0] == type_id:
        return pair[1]
    return None


def target_for_type_id(from_type: str, type_id: int) -> str | None:
    """Which object type a HUBSPOT_DEFINED type id from ``from_type`` points to.

    Inline associations on create name only ``to.id`` and the type id, so the
    target type is inferred from the FACTS 3.4 table.
    """
    for (f, t), (tid, _) in _BY_PAIR.items():
        if f == from_type and tid == type_id:
            return t
    return None


# -- pipelines (FACTS 3.5: `default` deal pipeline; ticket pipeline `0`) ----------

_DEAL_STAGES = (
    # HubSpot's standard sales pipeline stages with their default probabilities.
    ("appointmentscheduled", "Appointment Scheduled", "0.2", False),
    ("qualifiedtobuy", "Qualified To Buy", "0.4", False),
    ("presentationscheduled", "Presentation Scheduled", "0.6", False),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", False),
    ("contractsent", "Contract Sent", "0.9", False),
    ("closedwon", "Closed Won", "1.0", True),
    ("closedlost", "Closed Lost", "0.0", True),
)

_TICKET_STAGES = (
    ("1", "New", "OPEN"),
    ("2", "Waiting on contact", "OPEN"),
    ("3", "Waiting on us", "OPEN"),
    ("4", "Closed", "CLOSED"),
)


def seed_pipelines(created_at: str) -> dict[str, list[dict[str, Any]]]:
    """Fresh copies of the seeded pipelines, shaped as the spec's ``Pipeline``."""

    def stage(sid: str, label: str, order: int, metadata: dict[str, str]) -> dict[str, Any]:
        return {"id": sid, "label": label, "displayOrder": order, "metadata": metadata,
                "createdAt": created_at, "updatedAt": created_at, "archived": False,
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT"}

    deals = {
        "id": "default", "label": "Sales Pipeline", "displayOrder": 0, "archived": False,
        "createdAt": created_at, "updatedAt": created_at,
        "stages": [stage(sid, label, i, {"isClosed": str(closed).lower(), "probability": prob})
                   for i, (sid, label, prob, closed) in enumerate(_DEAL_STAGES)],
    }
    tickets = {
        "id": "0", "label": "Support Pipeline", "displayOrder": 0, "archived": False,
        "createdAt": created_at, "updatedAt": created_at,
        "stages": [stage(sid, label, i, {"ticketState": state})
                   for i, (sid, label, state) in enumerate(_TICKET_STAGES)],
    }
    return {"deals": [deals], "tickets": [tickets]}


# FACTS 3.7: channel account / message delivery identifier types.
DELIVERY_IDENTIFIER_TYPES = (
    "CHANNEL_SPECIFIC_OPAQUE_ID", "HS_EMAIL_ADDRESS", "HS_PHONE_NUMBER", "HS_SHORT_CODE",
)
