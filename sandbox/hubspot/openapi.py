"""Validate HubSpot API requests and responses against the vendored OpenAPI specs.

Public entry points:

* :func:`validate_request` -- shape/type check of a request (query parameters,
  path parameters and JSON body) for any URL whose path contains ``/crm/v3/``
  or ``/crm/v4/`` and is covered by a shipped spec. Raises ``ValueError``.
* :func:`validate_response` -- strict check of a response body (``required``
  lists, types, formats) against the operation's response schema. Raises
  ``ValueError``. Meant for tests.

Both return silently for paths the shipped specs do not cover (properties API,
custom channels, OAuth, account info): the sandbox handlers check those per
FACTS.md.

Specs: ``sandbox/hubspot/spec/*.json|yaml`` (Apache-2.0 via WSO2, see
MANIFEST.json). Each file keeps its path prefix in ``servers[0].url``
(``https://api.hubapi.com/crm/v3/objects/contacts``) and lists paths relative
to it, so a template is ``server path + relative path``.

Request caveat (contracts/README.md, FACTS.md 3.3): HubSpot's ``required``
lists are not a reliable request contract (later upstream versions mark
``associations`` and every search field as required; the real API does not
need them). Request schemas therefore keep only the ``required`` entries that
FACTS.md confirms (:data:`CONFIRMED_REQUIRED`); responses are validated with
the spec's ``required`` lists intact.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema
import yaml
from openapi_schema_validator import OAS30Validator

__all__ = ["validate_request", "validate_response", "OBJECT_TYPE_ALIASES", "SPEC_DIR"]

SPEC_DIR = Path(__file__).resolve().parent / "spec"

SPEC_FILES = (
    "crm-objects-contacts.v3.json",
    "crm-objects-deals.v3.json",
    "crm-objects-tickets.v3.json",
    "crm-objects-notes.v3.json",
    "crm-objects-tasks.v3.json",
    "crm-objects-communications.v3.json",
    "crm-objects-leads.v3.json",
    "crm-owners.v3.json",
    "crm-pipelines.v3.json",
    "crm-associations.v4.yaml",
    "crm-associations-schema.v4.json",
)

# Real HubSpot accepts object type ids (and singular names) in place of the
# plural names in /crm/v3/objects/{type} (contracts/README.md "How to use").
OBJECT_TYPE_ALIASES: dict[str, str] = {
    "0-1": "contacts", "contact": "contacts",
    "0-3": "deals", "deal": "deals",
    "0-5": "tickets", "ticket": "tickets",
    "0-46": "notes", "note": "notes",
    "0-27": "tasks", "task": "tasks",
    "0-18": "communications", "communication": "communications",
    "0-136": "leads", "lead": "leads",
}

# Request-side `required` entries kept, per component schema, with the source.
# Everything else in the spec's `required` lists is dropped for requests.
CONFIRMED_REQUIRED: dict[str, frozenset[str]] = {
    # FACTS 3.3: create body is {properties:{str:str}, associations?:[...]}.
    "SimplePublicObjectInputForCreate": frozenset({"properties"}),
    # FACTS 3.3: associations on create are [{to:{id}, types:[...]}].
    "PublicAssociationsForObject": frozenset({"to", "types"}),
    # FACTS 3.3: batch bodies are {"inputs":[...]}; batch update/upsert/read by id.
    "BatchInputSimplePublicObjectInputForCreate": frozenset({"inputs"}),
    "BatchInputSimplePublicObjectBatchInput": frozenset({"inputs"}),
    "BatchInputSimplePublicObjectBatchInputUpsert": frozenset({"inputs"}),
    "BatchInputSimplePublicObjectId": frozenset({"inputs"}),
    "BatchReadInputSimplePublicObjectId": frozenset({"inputs"}),
    "SimplePublicObjectId": frozenset({"id"}),
    "SimplePublicObjectBatchInput": frozenset({"id"}),
    "SimplePublicObjectBatchInputUpsert": frozenset({"id"}),
    # FACTS 3.3 search example: filters carry propertyName + operator.
    "Filter": frozenset({"propertyName", "operator"}),
    # FACTS 3.4: labelled PUT body is [{associationCategory, associationTypeId}].
    "AssociationSpec": frozenset({"associationCategory", "associationTypeId"}),
    # FACTS 3.4 batch association endpoints: {inputs:[{from:{id}, to:{id}, ...}]}.
    "BatchInputPublicAssociationMultiPost": frozenset({"inputs"}),
    "BatchInputPublicDefaultAssociationMultiPost": frozenset({"inputs"}),
    "BatchInputPublicFetchAssociationsBatchRequest": frozenset({"inputs"}),
    "BatchInputPublicAssociationMultiArchive": frozenset({"inputs"}),
    "PublicAssociationMultiPost": frozenset({"from", "to", "types"}),
    "PublicDefaultAssociationMultiPost": frozenset({"from", "to"}),
    "PublicAssociationMultiArchive": frozenset({"from", "to"}),
    "PublicFetchAssociationsBatchRequest": frozenset({"id"}),
    "PublicObjectId": frozenset({"id"}),
    # Merge (spec path /merge; HubSpot's reference page marks both required).
    "PublicMergeInput": frozenset({"objectIdToMerge", "primaryObjectId"}),
}

# The spec types search `sorts` as string[], but HubSpot's own search guide
# sends [{"propertyName": ..., "direction": "ASCENDING"|"DESCENDING"}] and the
# API accepts both. Requests allow either form (documented override).
_SORT_ITEM = {
    "anyOf": [
        {"type": "string"},
        {
            "type": "object",
            "required": ["propertyName"],
            "properties": {
                "propertyName": {"type": "string"},
                "direction": {"type": "string", "enum": ["ASCENDING", "DESCENDING"]},
            },
        },
    ]
}

_CRM_PREFIX = re.compile(r"/crm/v[34]/")


@dataclass(frozen=True)
class _Operation:
    spec: str
    template: str
    method: str
    op: dict[str, Any]
    path_params: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class _Template:
    spec: str
    template: str
    regex: re.Pattern[str]
    literals: int
    methods: dict[str, _Operation]


# -- loading -----------------------------------------------------------------


def _load(name: str) -> dict[str, Any]:
    text = (SPEC_DIR / name).read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
    return data


def _compile(template: str) -> tuple[re.Pattern[str], int]:
    parts = [p for p in template.split("/") if p]
    pattern = ""
    literals = 0
    for part in parts:
        m = re.fullmatch(r"\{(\w+)\}", part)
        if m:
            pattern += rf"/(?P<{m.group(1)}>[^/]+)"
        else:
            pattern += "/" + re.escape(part)
            literals += 1
    return re.compile("^" + pattern + "/?$"), literals


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[_Template, ...]:
    """Every (spec, full path template) pair, loaded once."""
    out: list[_Template] = []
    for name in SPEC_FILES:
        spec = _load(name)
        base = urlsplit(spec["servers"][0]["url"]).path.rstrip("/")
        for rel, item in spec["paths"].items():
            template = base + (rel if rel != "/" else "/")
            regex, literals = _compile(template)
            shared = tuple(item.get("parameters", []))
            methods: dict[str, _Operation] = {}
            for method, op in item.items():
                if method.lower() not in {"get", "put", "post", "patch", "delete"}:
                    continue
                params = shared + tuple(op.get("parameters", []))
                methods[method.upper()] = _Operation(name, template, method.upper(), op, params)
            out.append(_Template(name, template, regex, literals, methods))
    out.sort(key=lambda t: -t.literals)
    return tuple(out)


@functools.cache
def _spec(name: str) -> dict[str, Any]:
    return _load(name)


def _deref(spec: dict[str, Any], node: Any, *, request: bool, seen: tuple[str, ...] = ()) -> Any:
    """Inline ``$ref``s; for requests, trim ``required`` to CONFIRMED_REQUIRED."""
    if isinstance(node, list):
        return [_deref(spec, x, request=request, seen=seen) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        name = ref.rsplit("/", 1)[-1]
        if name in seen:  # recursive schema: stop inlining
            return {}
        target: Any = spec
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        resolved = _deref(spec, target, request=request, seen=seen + (name,))
        if request and isinstance(resolved, dict) and ref.startswith("#/components/schemas/"):
            resolved = dict(resolved)
            keep = CONFIRMED_REQUIRED.get(name, frozenset())
            req = [r for r in target.get("required", []) if r in keep]
            if req:
                resolved["required"] = req
            else:
                resolved.pop("required", None)
            if name == "PublicObjectSearchRequest":
                props = dict(resolved.get("properties", {}))
                props["sorts"] = {"type": "array", "items": _SORT_ITEM}
                resolved["properties"] = props
        return resolved
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"description", "example", "examples", "summary"}:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {k: _deref(spec, v, request=request, seen=seen) for k, v in value.items()}
        elif key == "required" and isinstance(value, list) and request:
            # Inline (non-component) schemas: drop required lists in requests.
            continue
        else:
            out[key] = _deref(spec, value, request=request, seen=seen)
    return out


# -- format checks -------------------------------------------------------------


def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


_FORMATS = jsonschema.FormatChecker(formats=())
_FORMATS.checks("date-time")(_is_datetime)
# Sanitation in the WSO2 copies: `format: datetime` instead of `date-time`.
_FORMATS.checks("datetime")(_is_datetime)
_FORMATS.checks("uuid")(_is_uuid)
_FORMATS.checks("int32")(_is_int32)


@functools.cache
def _validator(spec_name: str, pointer: str, request: bool) -> OAS30Validator:
    spec = _spec(spec_name)
    schema = _deref(spec, {"$ref": pointer}, request=request)
    return OAS30Validator(schema, format_checker=_FORMATS)


def _schema_pointer(node: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


# -- matching ------------------------------------------------------------------


def _hubspot_path(url: str) -> str | None:
    path = unquote(urlsplit(url).path)
    m = _CRM_PREFIX.search(path)
    if not m:
        return None
    path = path[m.start():]
    parts = path.split("/")
    # /crm/v3/objects/{type}/...: map type ids and singular names to the spec name.
    if len(parts) > 4 and parts[2] == "v3" and parts[3] == "objects":
        parts[4] = OBJECT_TYPE_ALIASES.get(parts[4], parts[4])
    return "/".join(parts)


def _find(method: str, url: str) -> tuple[_Operation, dict[str, str]] | None:
    path = _hubspot_path(url)
    if path is None:
        return None
    matched = False
    for tpl in _templates():
        m = tpl.regex.match(path)
        if not m:
            continue
        matched = True
        op = tpl.methods.get(method.upper())
        if op is not None:
            return op, m.groupdict()
    if matched:
        raise ValueError(f"{method.upper()} is not supported on {path}")
    return None


def _error_text(errors: Iterable[jsonschema.ValidationError], where: str) -> str:
    errs = sorted(errors, key=lambda e: (len(e.absolute_path), str(e.message)))
    if not errs:
        return ""
    best = jsonschema.exceptions.best_match(errs) or errs[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in best.absolute_path)
    return f"{where}{loc}: {best.message}"


def _coerce_param(param: dict[str, Any], raw: list[str]) -> Any:
    schema = param.get("schema", {})
    kind = schema.get("type")
    name = f"{param.get('in', 'query')} parameter {param['name']!r}"

    def scalar(value: str, sch: dict[str, Any]) -> Any:
        t = sch.get("type")
        if t == "integer":
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name}: {value!r} is not an integer") from None
        if t == "number":
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{name}: {value!r} is not a number") from None
        if t == "boolean":
            if value.lower() not in {"true", "false"}:
                raise ValueError(f"{name}: {value!r} is not a boolean")
            return value.lower() == "true"
        return value

    if kind == "array":
        items = [v for chunk in raw for v in chunk.split(",") if v != ""]
        return [scalar(v, schema.get("items", {})) for v in items]
    return scalar(raw[-1], schema)


def _check_params(op: _Operation, path_values: dict[str, str], query: dict[str, list[str]]) -> None:
    for param in op.path_params:
        where = param.get("in")
        name = param["name"]
        if where == "query" and name in query:
            value = _coerce_param(param, query[name])
        elif where == "path" and name in path_values:
            value = _coerce_param(param, [path_values[name]])
        else:
            continue
        schema = {k: v for k, v in param.get("schema", {}).items()
                  if k not in {"default", "pattern"}}
        errs = list(OAS30Validator(schema, format_checker=_FORMATS).iter_errors(value))
        if errs:
            raise ValueError(_error_text(errs, f"{where} parameter {name!r}"))


def _json_media(content: dict[str, Any]) -> dict[str, Any] | None:
    for ctype in ("application/json", "*/*"):
        if ctype in content:
            media: dict[str, Any] = content[ctype]
            return media
    return None


# -- public API ------------------------------------------------------------------


def validate_request(
    method: str,
    url: str,
    body: bytes | None,
    content_type: str | None = "application/json",
) -> None:
    """Check a request against HubSpot's OpenAPI spec (shape and types only).

    ``url`` may carry any scheme, host and mount prefix; the HubSpot part
    (``/crm/v3/...`` or ``/crm/v4/...``) is matched. Paths outside the shipped
    specs return silently. Raises ``ValueError`` with a readable message.
    """
    found = _find(method, url)
    if found is None:
        return
    op, path_values = found
    query: dict[str, list[str]] = {}
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        query.setdefault(key, []).append(value)
    _check_params(op, path_values, query)

    request_body = op.op.get("requestBody")
    if not request_body:
        return
    media = _json_media(request_body.get("content", {}))
    if media is None:
        return
    if not body:
        if request_body.get("required"):
            raise ValueError("request body is required (application/json)")
        return
    if content_type is not None and "json" not in content_type.lower():
        raise ValueError(f"unsupported content type {content_type!r}; expected application/json")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"Invalid input JSON: {exc}") from None
    spec = _spec(op.spec)
    schema_node = media.get("schema", {})
    if "$ref" in schema_node:
        validator = _validator(op.spec, schema_node["$ref"], True)
    else:
        validator = OAS30Validator(_deref(spec, schema_node, request=True), format_checker=_FORMATS)
    message = _error_text(validator.iter_errors(data), "body")
    if message:
        raise ValueError(message)


def validate_response(method: str, url: str, status: int, body: bytes | str | None) -> None:
    """Strictly check a response against the operation's response schema.

    Uses the exact status code's response, else ``default``. A response with
    no content in the spec (e.g. 204) must have an empty body. Paths outside
    the shipped specs return silently. Raises ``ValueError``.
    """
    found = _find(method, url)
    if found is None:
        return
    op, _ = found
    responses = op.op.get("responses", {})
    response = responses.get(str(status)) or responses.get("default")
    if response is None:
        raise ValueError(f"status {status} is not documented for {op.method} {op.template}")
    spec = _spec(op.spec)
    response = _schema_pointer(response, spec)
    content = response.get("content") or {}
    raw = body.encode() if isinstance(body, str) else (body or b"")
    if not content:
        if raw.strip():
            raise ValueError(f"status {status} of {op.method} {op.template} must have no body")
        return
    media = _json_media(content)
    if media is None or "schema" not in media:
        return
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"response is not JSON: {exc}") from None
    schema_node = media["schema"]
    if "$ref" in schema_node:
        validator = _validator(op.spec, schema_node["$ref"], False)
    else:
        validator = OAS30Validator(
            _deref(spec, copy.deepcopy(schema_node), request=False), format_checker=_FORMATS
        )
    message = _error_text(validator.iter_errors(data), "response")
    if message:
        raise ValueError(f"{op.method} {op.template} -> {status}: {message}")
