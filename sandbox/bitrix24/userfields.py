"""User fields (``UF_CRM_*``) of leads, deals and contacts: the stored record
and how the ``crm.<type>.userfield.*`` methods (:mod:`.userfield_methods`)
show it.

The vendor's pages (not in ``spec/``; the older reference):
dev.1c-bitrix.ru/rest_help/crm/leads/crm_lead_userfield_add.php,
dev.1c-bitrix.ru/rest_help/crm/contacts/crm_contact_userfield_add.php,
dev.1c-bitrix.ru/rest_help/crm/cdeals/crm_deal_userfield_add.php,
.../crm/cdeals/crm_deal_userfield_list.php and .../crm_deal_userfield_get.php:

* ``FIELD_NAME`` always gets the prefix ``UF_CRM_``; the whole name is
  limited to 20 characters, so 13 after the prefix;
* ``add`` takes ENTITY_ID, USER_TYPE_ID, FIELD_NAME, LIST_FILTER_LABEL,
  LIST_COLUMN_LABEL, EDIT_FORM_LABEL, ERROR_MESSAGE, HELP_MESSAGE, MULTIPLE,
  MANDATORY, SHOW_FILTER, SETTINGS, LIST (the items of a list field: VALUE,
  SORT, DEF, XML_ID) and, in the examples, XML_ID; ``LABEL`` fills the three
  labels not given; it returns the new field's ID, which ``list`` then shows;
* ``list`` takes ``order`` and ``filter``; the labels are in the answer only
  when the filter names a language (``filter: {LANG: "ru"}``, the list page);
  ENTITY_ID is ``CRM_LEAD`` / ``CRM_DEAL`` / ``CRM_CONTACT``.

UNCONFIRMED (our model, not the pages'): the keys of a row beyond those the
pages name (SHOW_IN_LIST, EDIT_IN_LIST, IS_SEARCHABLE: the main module's user
field columns), ids and numbers as strings, a string field's default
SETTINGS, ``get`` giving each label as ``{language: text}``.

Only this module builds a record, so the declared fields of the config
(``portals[].user_fields``) and the ones ``add`` creates look alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .params import as_bool, as_int, as_str

__all__ = ["ENTITY_IDS", "LABELS", "MAX_NAME", "PREFIX", "USER_TYPES", "build", "get_row",
           "label_text", "list_row", "NAME_CHARS"]

#: the ENTITY_ID of each object's user fields (crm_deal_userfield_add.php)
ENTITY_IDS = {"lead": "CRM_LEAD", "deal": "CRM_DEAL", "contact": "CRM_CONTACT"}
PREFIX = "UF_CRM_"
MAX_NAME = 20  # the whole FIELD_NAME, prefix included
LABELS = ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL", "ERROR_MESSAGE",
          "HELP_MESSAGE")
#: the types crm.userfield.types lists (UNCONFIRMED: the set a portal offers varies)
USER_TYPES = ("string", "integer", "double", "boolean", "datetime", "date", "money", "url",
              "address", "enumeration", "file", "employee", "crm_status", "iblock_section",
              "iblock_element", "crm", "resourcebooking")
#: what a FIELD_NAME may hold once upper-cased (UNCONFIRMED: the main module's rule)
NAME_CHARS = re.compile(r"^[A-Z0-9_]+$")
#: a string field's SETTINGS when none are given (UNCONFIRMED)
_STRING_SETTINGS = {"SIZE": 20, "ROWS": 1, "REGEXP": "", "MIN_LENGTH": 0, "MAX_LENGTH": 0,
                    "DEFAULT_VALUE": ""}
_FLAGS = {"MULTIPLE": "N", "MANDATORY": "N", "SHOW_FILTER": "N", "SHOW_IN_LIST": "Y",
          "EDIT_IN_LIST": "Y", "IS_SEARCHABLE": "N"}


def _languages(language: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(("en", "ru", language)))


def _label(value: Any, languages: tuple[str, ...]) -> dict[str, str]:
    """A label as ``{language: text}``: a plain string is the text in every language."""
    if isinstance(value, dict):
        return {str(k).lower(): as_str(v) for k, v in value.items()}
    text = as_str(value)
    return {lang: text for lang in languages} if text else {}


def _flag(value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    text = as_str(value).upper()
    # SHOW_FILTER has more values than Y/N (N, I, E, S: the filter's kind)
    return text if text in ("I", "E", "S") else ("Y" if as_bool(value) else "N")


def build(kind: str, fields: dict[str, Any], field_id: int, enum_id: Callable[[], int],
          language: str) -> dict[str, Any]:
    """The stored record of a user field of ``kind`` named ``fields["FIELD_NAME"]``
    (already checked and prefixed). ``enum_id`` numbers a list field's items."""
    languages = _languages(language)
    user_type = as_str(fields.get("USER_TYPE_ID") or "string").lower()
    settings = fields.get("SETTINGS")
    settings = dict(settings) if isinstance(settings, dict) else {}
    if user_type == "string":
        settings = {**_STRING_SETTINGS, **settings}
    rec: dict[str, Any] = {
        "ID": str(field_id), "ENTITY_ID": ENTITY_IDS[kind],
        "FIELD_NAME": str(fields["FIELD_NAME"]), "USER_TYPE_ID": user_type,
        "XML_ID": as_str(fields.get("XML_ID")) or None,
        "SORT": str(as_int(fields.get("SORT")) if as_int(fields.get("SORT")) is not None
                    else 100),
    }
    for flag, default in _FLAGS.items():
        rec[flag] = _flag(fields.get(flag), default)
    rec["SETTINGS"] = settings
    common = _label(fields.get("LABEL"), languages)
    for key in LABELS:
        own = _label(fields.get(key), languages)
        # LABEL stands in for the labels (not the error and help messages)
        rec[key] = own or (dict(common) if key.endswith("_LABEL") else {})
    if user_type == "enumeration":
        items = fields.get("LIST")
        entries = (list(items.values()) if isinstance(items, dict)
                   else items if isinstance(items, list) else [])
        rec["LIST"] = []
        for n, item in enumerate(e for e in entries if isinstance(e, dict)):
            value = as_str(item.get("VALUE")).strip()
            if not value:
                continue  # the pages: VALUE is required for a new item
            item_id = enum_id()
            rec["LIST"].append({
                "ID": str(item_id), "SORT": str(as_int(item.get("SORT")) or 10 * (n + 1)),
                "VALUE": value, "DEF": "Y" if as_bool(item.get("DEF")) else "N",
                "XML_ID": as_str(item.get("XML_ID")) or f"{item_id:x}"})
    return rec


def label_text(rec: dict[str, Any], key: str, language: str) -> str:
    """One label of ``rec`` in ``language`` ("" when it has none there)."""
    labels = rec.get(key) or {}
    return str(labels.get(language.lower(), "")) if isinstance(labels, dict) else str(labels)


def list_row(rec: dict[str, Any], language: str | None) -> dict[str, Any]:
    """A ``crm.<type>.userfield.list`` row: labels only with a ``LANG`` filter."""
    row = {k: v for k, v in rec.items() if k not in LABELS}
    row["SETTINGS"] = dict(rec["SETTINGS"])
    if "LIST" in rec:
        row["LIST"] = [dict(item) for item in rec["LIST"]]
    if language:
        row.update({key: label_text(rec, key, language) for key in LABELS})
    return row


def get_row(rec: dict[str, Any], languages: Iterable[str]) -> dict[str, Any]:
    """A ``crm.<type>.userfield.get`` answer: each label per language."""
    row = list_row(rec, None)
    for key in LABELS:
        labels = rec.get(key) or {}
        row[key] = {lang: str(labels.get(lang, "")) for lang in
                    dict.fromkeys([*languages, *labels])}
    return row
