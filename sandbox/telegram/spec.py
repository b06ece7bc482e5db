"""The vendored Bot API spec (``spec/api.json``, Bot API 10.1) and parameter checks.

Every parameter of every call is checked against the method's fields in
api.json: types (Integer, Float, Boolean, String, ``Integer or String`` chat ids,
``InputFile or String``, ``Array of X`` and object types, recursively against
the object's own fields) and the length limits stated in the field
descriptions ("1-4096 characters", "0-200 characters", "1-64 bytes").
Unknown parameters are ignored, like Telegram.

How values arrive (tdlib/telegram-bot-api ``Query``): the Bot API server turns
every parameter into a string, whatever the transport (query string, form,
multipart or a JSON body), so ``"123"`` is a valid Integer and a JSON-serialised
object in a form field is a valid object. Telegram itself is lenient beyond
that (``to_integer("abc") == 0``); the sandbox rejects such values instead so a
client bug shows up. Those type errors use sandbox wording (noted below); the
descriptions Telegram is known to return are used everywhere else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Any

from .errors import ApiError, bad_request

__all__ = ["FieldSpec", "MethodSpec", "BotApiSpec", "UploadedFile", "load_spec", "utf16_len"]

_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_FLOAT_RE = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_LIMIT_RE = re.compile(r"(\d+)-(\d+) (characters|bytes)")
_PRIMITIVES = {"Integer", "Float", "Boolean", "String", "True"}
_NESTING_LIMIT = 12
#: (type, field) -> the Bot API's own words for a length outside the limit,
#: where they are known (a live test suite of a TypeScript Bot API client:
#: 100 bytes of callback_data is "BUTTON_DATA_INVALID"; "" counts as not
#: given, so the button is a text button: markup.py)
_SERVER_LIMIT_ERRORS = {("InlineKeyboardButton", "callback_data"): "BUTTON_DATA_INVALID"}


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (api.json ``MessageEntity.offset``/``length``)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class UploadedFile:
    """A multipart upload (an ``InputFile``)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class FieldSpec:
    """One field of a method or type, straight from api.json."""

    name: str
    types: tuple[str, ...]
    required: bool
    description: str

    @cached_property
    def limit(self) -> tuple[int, int, str] | None:
        """``(min, max, unit)`` parsed from the description, e.g. ``(1, 4096, "characters")``."""
        match = _LIMIT_RE.search(self.description)
        if not match:
            return None
        return int(match.group(1)), int(match.group(2)), match.group(3)


@dataclass(frozen=True)
class MethodSpec:
    """A Bot API method: its fields (in spec order) and return types."""

    name: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    returns: tuple[str, ...] = ()


class BotApiSpec:
    """Loaded api.json with lookups and the parameter validator."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.version: str = raw.get("version", "")
        self.types: dict[str, dict[str, Any]] = raw["types"]
        self.methods: dict[str, MethodSpec] = {}
        for name, method in raw["methods"].items():
            fields = {
                f["name"]: FieldSpec(f["name"], tuple(f["types"]), bool(f["required"]),
                                     f.get("description", ""))
                for f in method.get("fields", [])
            }
            # Method names are case-insensitive (Query lowercases the method).
            self.methods[name.lower()] = MethodSpec(name, fields, tuple(method.get("returns", [])))

    # -- lookups -------------------------------------------------------------

    def method(self, name: str) -> MethodSpec | None:
        return self.methods.get(name.lower())

    def type_fields(self, type_name: str) -> list[FieldSpec]:
        raw = self.types.get(type_name, {})
        return [
            FieldSpec(f["name"], tuple(f["types"]), bool(f["required"]), f.get("description", ""))
            for f in raw.get("fields", [])
        ]

    def type_field_names(self, type_name: str) -> list[str]:
        return [f.name for f in self.type_fields(type_name)]

    @cached_property
    def update_kinds(self) -> tuple[str, ...]:
        """The optional fields of ``Update`` ("at most one ... in any given update")."""
        return tuple(f.name for f in self.type_fields("Update") if f.name != "update_id")

    @cached_property
    def getme_only_user_fields(self) -> tuple[str, ...]:
        """``User`` fields documented as "Returned only in getMe"."""
        return tuple(f.name for f in self.type_fields("User")
                     if "Returned only in getMe" in f.description)

    # -- validation ----------------------------------------------------------

    def coerce_params(
        self,
        method: MethodSpec,
        raw: dict[str, Any],
        files: dict[str, UploadedFile],
    ) -> dict[str, Any]:
        """Typed copy of the parameters ``method`` knows; unknown ones are dropped.

        Absent, ``null`` and empty-string values count as not given (the Bot
        API server reads an empty argument as a missing one). Required fields
        are checked by the handlers, in Telegram's order and wording.
        """
        out: dict[str, Any] = {}
        for name, spec in method.fields.items():
            value = raw.get(name)
            if value is None and name in files:
                value = files[name]
            if value is None or value == "":
                continue
            out[name] = self._coerce_top(spec, value, files)
        return out

    def _coerce_top(self, spec: FieldSpec, value: Any, files: dict[str, UploadedFile]) -> Any:
        types = spec.types
        if isinstance(value, UploadedFile):
            if "InputFile" in types:
                return value
            raise bad_request(f'parameter "{spec.name}" can\'t be a file upload')
        if "InputFile" in types and isinstance(value, str) and value.startswith("attach://"):
            attached = files.get(value[len("attach://"):])
            if attached is None:
                raise bad_request(f'parameter "{spec.name}" refers to a missing attach:// file')
            return attached
        if types == ("InputFile",):
            raise bad_request(f'parameter "{spec.name}" must be uploaded as an InputFile')
        if types == ("Integer", "String"):
            return _chat_id_value(spec.name, value)
        if len(types) == 1 and types[0] in _PRIMITIVES:
            result = _primitive(types[0], value)
            if result is _INVALID:
                # Sandbox wording: Telegram would silently read such a value as 0/false.
                raise bad_request(f'parameter "{spec.name}" must be of type {types[0]}')
            self._check_limit(spec, result)
            return result
        if "String" in types and not any(t.startswith("Array of") or t in self.types
                                         for t in types if t != "InputFile"):
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                result = str(value)
                self._check_limit(spec, result)
                return result
            raise bad_request(f'parameter "{spec.name}" must be of type String')
        # Object or array parameters: a JSON value, or its JSON text in a form field.
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise bad_request(_json_error(spec.name)) from None
        problem = self.check_value(types, value, 0)
        if problem:
            raise bad_request(f"can't parse {_readable(spec.name)}: {problem}")
        return value

    def _check_limit(self, spec: FieldSpec, value: Any) -> None:
        """Length limits that are plain validation (text/caption limits have own errors)."""
        if not isinstance(value, str) or spec.limit is None or spec.name in ("text", "caption"):
            return
        low, high, unit = spec.limit
        size = len(value.encode("utf-8")) if unit == "bytes" else utf16_len(value)
        if size > high:
            raise bad_request(f"{_readable(spec.name)} is too long")
        if size < low:
            raise bad_request(f"{_readable(spec.name)} is too short")

    def check_value(self, types: tuple[str, ...], value: Any, depth: int) -> str | None:
        """``None`` when ``value`` fits one of ``types`` (api.json names), else why not."""
        if depth > _NESTING_LIMIT:
            return "object is nested too deeply"
        problems = []
        for type_name in types:
            problem = self._check_one(type_name, value, depth)
            if problem is None:
                return None
            problems.append(problem)
        return problems[0]

    def _check_one(self, type_name: str, value: Any, depth: int) -> str | None:
        if type_name.startswith("Array of "):
            if not isinstance(value, list):
                return f"expected an Array of {type_name[len('Array of '):]}"
            inner = (type_name[len("Array of "):],)
            for item in value:
                problem = self.check_value(inner, item, depth + 1)
                if problem:
                    return problem
            return None
        if type_name in _PRIMITIVES:
            if type_name == "String" and isinstance(value, str):
                return None
            if type_name != "String" and _primitive(type_name, value) is not _INVALID:
                return None
            return f"expected {type_name}"
        if type_name == "InputFile":
            return None if isinstance(value, str) else "expected an InputFile"
        raw = self.types.get(type_name)
        if raw is None:
            return None  # a type this spec does not describe: accept, like unknown params
        if raw.get("subtypes"):
            return self.check_value(tuple(raw["subtypes"]), value, depth + 1)
        if not isinstance(value, dict):
            return f"{type_name} must be an Object"
        for spec in self.type_fields(type_name):
            if spec.name not in value or value[spec.name] is None:
                if spec.required:
                    return f'field "{spec.name}" is required in {type_name}'
                continue
            problem = self.check_value(spec.types, value[spec.name], depth + 1)
            if problem:
                return f'field "{spec.name}" of {type_name}: {problem}'
            limit = spec.limit
            if limit and isinstance(value[spec.name], str):
                item = value[spec.name]
                size = len(item.encode("utf-8")) if limit[2] == "bytes" else utf16_len(item)
                server = _SERVER_LIMIT_ERRORS.get((type_name, spec.name))
                if server and not limit[0] <= size <= limit[1] and item:
                    raise bad_request(server)
                if not server and not limit[0] <= size <= limit[1]:
                    return (f'field "{spec.name}" of {type_name} must be '
                            f"{limit[0]}-{limit[1]} {limit[2]} long")
        return None


class _Invalid:
    pass


_INVALID: Any = _Invalid()


def _primitive(type_name: str, value: Any) -> Any:
    """Coerce a scalar the way the Bot API server reads its string arguments."""
    if type_name == "Integer":
        if isinstance(value, bool):
            return _INVALID
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT_RE.match(value):
            return int(value)
        return _INVALID
    if type_name == "Float":
        if isinstance(value, bool):
            return _INVALID
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value):
            return float(value)
        return _INVALID
    if type_name in ("Boolean", "True"):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        return _INVALID
    if type_name == "String":
        if isinstance(value, str):
            return value
        # A JSON number for a String field reaches the server as its text.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return _INVALID
    return _INVALID


def _chat_id_value(name: str, value: Any) -> int | str:
    """``Integer or String``: a numeric id, or ``@username``."""
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise bad_request(f'parameter "{name}" must be of type Integer or String')
    if isinstance(value, float):
        if not value.is_integer():
            raise bad_request(f'parameter "{name}" must be of type Integer or String')
        return int(value)
    if isinstance(value, str) and _INT_RE.match(value):
        return int(value)
    return value


def _readable(name: str) -> str:
    return name.replace("_", " ")


def _json_error(name: str) -> str:
    # "can't parse reply keyboard markup JSON object" is Telegram's own text; the
    # other fields follow the same pattern (Client.cpp "Can't parse ... JSON object").
    if name == "reply_markup":
        return "can't parse reply keyboard markup JSON object"
    return f"can't parse {_readable(name)} JSON object"


def load_spec() -> BotApiSpec:
    """Read the vendored ``spec/api.json`` (no network, no caching across apps)."""
    text = resources.files(__package__).joinpath("spec", "api.json").read_text("utf-8")
    return BotApiSpec(json.loads(text))


# Re-exported for handlers that build their own errors.
__all__ += ["ApiError"]
