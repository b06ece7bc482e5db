"""The official examples shipped under ``spec/`` (bitrix24/b24restdocs, MIT).

``spec/examples/*.json`` are the JSON blocks of the vendor's pages (which page
and lines: ``spec/MANIFEST.json``). Where a response is a big fixed catalogue
the sandbox serves the vendor's own data instead of a retyped copy:

* ``crm.lead.fields`` / ``crm.contact.fields`` / ``crm.deal.fields``: the
  field descriptions of crm-lead-fields.md, crm-contact-fields.md,
  crm-deal-fields.md (plus the portal's user fields);
* ``crm.multifield.fields``: crm-multifield-fields.md;
* ``tasks.task.add``: the task object of tasks-task-add.md as the template of
  the answer (ids, texts, dates, people filled in from the request).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["SPEC_DIR", "example", "fields_catalog", "task_template", "multifield_catalog"]

SPEC_DIR = Path(__file__).resolve().parent / "spec"

_FIELDS = {
    "lead": "api-reference__crm__leads__crm-lead-fields.1.json",
    "contact": "api-reference__crm__contacts__crm-contact-fields.1.json",
    "deal": "api-reference__crm__deals__crm-deal-fields.1.json",
}


@cache
def _load(name: str) -> Any:
    with open(SPEC_DIR / "examples" / name, encoding="utf-8") as fh:
        return json.load(fh)


def example(name: str) -> Any:
    """A deep copy of ``spec/examples/<name>`` (``.json`` optional)."""
    if not name.endswith(".json"):
        name += ".json"
    return copy.deepcopy(_load(name))


def fields_catalog(entity: str) -> dict[str, Any]:
    """The vendor's ``crm.<entity>.fields`` result (field name -> description)."""
    result: dict[str, Any] = example(_FIELDS[entity])["result"]
    return result


def multifield_catalog() -> dict[str, Any]:
    result: dict[str, Any] = example(
        "api-reference__crm__auxiliary__multifield__crm-multifield-fields.1.json")["result"]
    return result


def task_template() -> dict[str, Any]:
    """The ``task`` object of the tasks.task.add example answer."""
    task: dict[str, Any] = example("api-reference__tasks__tasks-task-add.1.json")["result"]["task"]
    return task
