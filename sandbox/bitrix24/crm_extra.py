"""Timeline comments, to-dos, tasks, users and the small system methods.

* ``crm.timeline.comment.add`` (crm-timeline-comment-add.md): lowercase
  ``fields`` only (crm >= 23.100.0), errors OWNER_NOT_FOUND / NOT_FOUND /
  ACCESS_DENIED / INVALID_ARG_VALUE / ``100``.
* ``crm.timeline.comment.list`` (b24restdocs
  api-reference/crm/timeline/comments/crm-timeline-comment-list.md, fields:
  crm-timeline-comment-fields.md): ``filter`` with ENTITY_ID and ENTITY_TYPE,
  ``order`` on ID / CREATED / AUTHOR_ID only, 50 a page. The page's only error is
  400 ``{"error": "", "error_description": "Access denied."}``; a filter without
  both fields (or with an unknown type) gets it too: nothing names a CRM object
  the caller may read. UNCONFIRMED: (a) the page's versions disagree on an empty
  ``select``: the older English one (and the Russian one) "the result will return
  an empty array", the newer English one "all fields will be returned"; we
  follow the newer one. (b) A public copy of the vendor's crm
  ``restservice.php`` (CCrmTimelineCommentRestProxy::innerGetList) checks read
  permission on the (type, id) pair, so a valid ENTITY_TYPE without ENTITY_ID
  may pass as a type-wide check and answer an empty list; we follow the page
  (both fields required). The same copy reads no other filter key and sorts
  descending only for the exact value ``DESC``; we do the same. FILES appears
  only on a comment that has files (idem); its entries' ids/sizes/URLs are ours.
* ``crm.activity.todo.add`` (crm-activity-todo-add.md): ``deadline`` required,
  owner type 1 lead / 2 deal / 3 contact / 4 company (crm/data-types.md), answer
  ``{"id": …}``.
* ``crm.activity.list`` (b24restdocs
  api-reference/crm/timeline/activities/activity-base/crm-activity-list.md):
  the to-dos as activity rows (upper-case keys of the page's example;
  ``PROVIDER_ID`` ``CRM_TODO`` as the docs' tutorials show a to-do, with
  ``PROVIDER_TYPE_ID`` ``TODO``), filter prefixes and ``BINDINGS``,
  default order START_TIME ascending, 50 a page; ``order``/``filter`` that are not
  objects are refused as the page's error table says. Rows follow the caller's
  permissions: a user without CRM access gets none. UNCONFIRMED: a to-do's
  ``TYPE_ID`` ``6`` (seen only in third-party code), START_TIME/END_TIME (we give
  both the deadline), PRIORITY, DESCRIPTION_TYPE, NOTIFY_*, DIRECTION values (the
  example's).
* ``tasks.task.add`` (tasks-task-add.md): TITLE and RESPONSIBLE_ID required,
  ``ERROR_CORE`` texts ending in ``<br>``; the answer is the vendor example's
  task object with this task's values.
* ``tasks.task.list`` (b24restdocs api-reference/tasks/tasks-task-list.md):
  ``{"tasks": [...]}`` with camelCase keys, ``total``/``next``; filter on the
  page's fields (UF_CRM_TASK: the task is bound to any of the values), order on
  the page's keys (default ID descending; another key is error ``0`` "Invalid
  sorting key (internal error)"); administrators see every task, others the tasks
  they created or are responsible for, accomplice or auditor of. UNCONFIRMED:
  managers seeing their employees' tasks (no departments here); without
  ``select`` the whole task object as tasks.task.add answers it; ``id`` always
  present; ``ufCrmTask`` only when UF_CRM_TASK is selected; filter keys the
  sandbox does not model (TAG, DEPENDS_ON, ``::SUBFILTER-PARAMS``…) are ignored.
* With the config switch ``strip_zero_width`` (UNCONFIRMED behaviour) the
  texts of comments, to-dos and tasks lose their zero-width characters on
  write.
* Comments and to-dos are also listed by the control API (``GET /_timeline``,
  ``GET /_state``).
* ``user.get`` / ``user.current`` (user-get.md, user-current.md), ``profile``
  and ``app.info`` (b24restdocs api-reference/common/users/profile.md and
  common/system/app-info.md, examples in spec/); ``placement.*`` and
  ``user.admin`` are in :mod:`.placements`.
"""
from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from .context import CallCtx, ListResult, method
from .crm_methods import apply_filter, page
from .errors import B24Error, core_error, crm_error
from .params import as_int, as_str
from .spec import task_template
from .store import ENTITY_TYPE_IDS, Portal

__all__ = ["user_json"]

_OWNER_KINDS = {v: k for k, v in ENTITY_TYPE_IDS.items()}  # 1 lead, 2 deal, 3 contact, 4 company
_DATETIME = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d(?::\d\d)?)(Z|[+-]\d\d:?\d\d)?$")


def _required(name: str) -> B24Error:
    """The ``100`` error of the engine-style methods (tasks-task-add.md wording)."""
    return B24Error(400, "100", f"Could not find value for parameter {{{name}}}")


def _iso(portal: Portal, raw: Any) -> str | None:
    """An ISO datetime in the portal's zone, or None if ``raw`` is not one."""
    match = _DATETIME.match(str(raw).strip())
    if not match:
        return None
    clock = match.group(2) if len(match.group(2)) == 8 else match.group(2) + ":00"
    zone = match.group(3) or portal.cfg["utc_offset"]
    if zone == "Z":
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        dt.datetime.fromisoformat(f"{match.group(1)}T{clock}{zone}")
    except ValueError:
        return None
    return f"{match.group(1)}T{clock}{zone}"


# -- list parameters (shared by the list methods below) -------------------------------


def _object_param(params: dict[str, Any], name: str) -> dict[str, Any]:
    """``order`` / ``filter`` of a CRM list method: absent is empty, anything but an
    object is 400 ``"Parameter 'filter' must be array."`` (crm-activity-list.md)."""
    value = params.get(name, params.get(name.upper()))
    if value in (None, "", []):
        return {}
    if not isinstance(value, dict):
        raise crm_error(f"Parameter '{name}' must be array.")
    return value


def _select(params: dict[str, Any]) -> list[str]:
    raw = params.get("select", params.get("SELECT"))
    if isinstance(raw, dict):  # a PHP array with other keys than 0..n-1
        raw = list(raw.values())
    if isinstance(raw, list):
        return [str(s) for s in raw]
    return [str(raw)] if isinstance(raw, str) and raw else []


def _rank(value: Any) -> tuple[int, float, str]:
    """Numbers before texts, numbers by value (``"9"`` < ``"10"``)."""
    try:
        return (0, float(str(value)), "")
    except (TypeError, ValueError):
        return (1, 0.0, "" if value is None else str(value).lower())


def _sort(rows: list[dict[str, Any]], keys: list[tuple[str, bool]]) -> None:
    """Stable multi-key sort on (field, descending); the first key most significant."""
    for field, descending in reversed(keys):
        rows.sort(key=lambda row: _rank(row.get(field)), reverse=descending)


# -- timeline comments ------------------------------------------------------------------

_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff]")


def _kept(ctx: CallCtx, text: str) -> str:
    """A text as stored: without zero-width characters when the sandbox is
    told to strip them (``strip_zero_width``, see the config)."""
    return _ZERO_WIDTH.sub("", text) if ctx.cfg["strip_zero_width"] else text



@method("crm.timeline.comment.add", scope="crm")
def comment_add(ctx: CallCtx, params: dict[str, Any]) -> int:
    fields = params.get("fields")  # only lowercase "fields" is accepted (the page's warning)
    if not isinstance(fields, dict):
        raise _required("fields")
    portal = ctx.portal
    entity_type = str(fields.get("ENTITY_TYPE") or "").strip().lower()
    entity_id = as_int(fields.get("ENTITY_ID"))
    if not entity_type or entity_id is None:
        raise B24Error(400, "100", "Required fields are not provided")
    if entity_type not in ENTITY_TYPE_IDS:
        raise B24Error(400, "NOT_FOUND", "Not found.")
    if portal.crm_access(ctx.auth.user_id) != "write":
        raise B24Error(400, "ACCESS_DENIED", "Access denied.")
    if entity_id not in portal.entities.get(entity_type, {}):
        raise B24Error(400, "OWNER_NOT_FOUND", "Owner of the item not found")
    text = _kept(ctx, as_str(fields.get("COMMENT"))).strip()
    if not text:
        raise B24Error(400, "INVALID_ARG_VALUE", "Empty comment")
    raw_files = fields.get("FILES")
    files: list[Any] = raw_files if isinstance(raw_files, list) else []
    comment_id = portal.next_id("comment")
    portal.comments[comment_id] = {
        "ID": comment_id, "ENTITY_TYPE": entity_type, "ENTITY_ID": entity_id, "COMMENT": text,
        "FILES": [f[0] if isinstance(f, list) and f else str(f) for f in files],
        "AUTHOR_ID": ctx.auth.user_id, "CREATED": portal.now_str(ctx.now())}
    ctx.fire("ONCRMTIMELINECOMMENTADD", {"ID": comment_id}, ctx.auth.user_id)
    return comment_id


# b24restdocs api-reference/crm/timeline/comments/crm-timeline-comment-list.md (fields:
# crm-timeline-comment-fields.md); see the module docstring for what is UNCONFIRMED.
_COMMENT_FIELDS = ("ID", "ENTITY_ID", "ENTITY_TYPE", "CREATED", "COMMENT", "AUTHOR_ID")
_COMMENT_ORDER = ("ID", "CREATED", "AUTHOR_ID")  # "Only the fields ID, CREATED, AUTHOR_ID"


def _comment_json(portal: Portal, comment: dict[str, Any], select: list[str]) -> dict[str, Any]:
    values = {"ID": str(comment["ID"]), "ENTITY_ID": str(comment["ENTITY_ID"]),
              "ENTITY_TYPE": comment["ENTITY_TYPE"], "CREATED": comment["CREATED"],
              "COMMENT": comment["COMMENT"], "AUTHOR_ID": str(comment["AUTHOR_ID"])}
    names = [f for f in _COMMENT_FIELDS if f in select] if select else list(_COMMENT_FIELDS)
    out: dict[str, Any] = {name: values[name] for name in names}
    if comment["FILES"]:
        # the page's FILES: disk files keyed by id (ids, sizes and URLs are the sandbox's)
        author = int(comment["AUTHOR_ID"])
        files: dict[str, Any] = {}
        for index, name in enumerate(comment["FILES"], start=1):
            file_id = int(comment["ID"]) * 100 + index
            base = f"https://{portal.domain}/disk"
            files[str(file_id)] = {
                "id": file_id, "date": comment["CREATED"], "type": "file", "name": name,
                "size": 0, "authorId": author, "authorName": portal.user_name(author),
                "urlPreview": f"{base}/showFile/{file_id}/?&ncc=1&filename={name}",
                "urlShow": f"{base}/showFile/{file_id}/?&ncc=1&filename={name}",
                "urlDownload": f"{base}/downloadFile/{file_id}/?&ncc=1&filename={name}"}
        out["FILES"] = files
    return out


@method("crm.timeline.comment.list", scope="crm")
def comment_list(ctx: CallCtx, params: dict[str, Any]) -> ListResult:
    order = _object_param(params, "order")
    flt = _object_param(params, "filter")
    portal = ctx.portal
    entity_type = str(flt.get("ENTITY_TYPE") or "").strip().lower()
    entity_id = as_int(flt.get("ENTITY_ID"))
    # "a user with read access to CRM entities"; the filter's two fields are required and
    # the page's one error (400, code "", "Access denied.") is what a missing one gets
    if (portal.crm_access(ctx.auth.user_id) == "none" or entity_type not in ENTITY_TYPE_IDS
            or entity_id is None or entity_id <= 0):
        raise crm_error("Access denied.")
    rows = [c for _, c in sorted(portal.comments.items())
            if c["ENTITY_TYPE"] == entity_type and c["ENTITY_ID"] == entity_id]
    _sort(rows, [(str(k), str(v) == "DESC") for k, v in order.items()
                 if str(k) in _COMMENT_ORDER])
    result = page(rows, params)
    select = _select(params)
    result.items = [_comment_json(portal, c, select) for c in result.items]
    return result


# -- to-dos ---------------------------------------------------------------------------------


@method("crm.activity.todo.add", scope="crm")
def todo_add(ctx: CallCtx, params: dict[str, Any]) -> dict[str, int]:
    portal = ctx.portal
    for name in ("ownerTypeId", "ownerId", "deadline"):
        if params.get(name) in (None, ""):
            raise _required(name)
    owner_type = as_int(params.get("ownerTypeId"))
    owner_id = as_int(params.get("ownerId"))
    kind = _OWNER_KINDS.get(owner_type or 0)
    if kind is None:
        raise B24Error(400, "OWNER_NOT_FOUND", "Owner of the entity not found")
    deadline = _iso(portal, params.get("deadline"))
    if deadline is None:
        raise B24Error(400, "WRONG_DATETIME_FORMAT", "Wrong datetime format")
    if portal.crm_access(ctx.auth.user_id) != "write":
        raise B24Error(400, "ACCESS_DENIED", "Access denied.")
    if owner_id is None or owner_id not in portal.entities.get(kind, {}):
        raise B24Error(400, "NOT_FOUND", "Not found.")
    responsible = as_int(params.get("responsibleId")) or ctx.auth.user_id
    if responsible not in portal.users:
        raise B24Error(400, "NOT_FOUND", "Not found.")  # UNCONFIRMED for a bad responsibleId
    raw_pings = params.get("pingOffsets")
    pings: list[Any] = raw_pings if isinstance(raw_pings, list) else []
    activity_id = portal.next_id("activity")
    portal.activities[activity_id] = {
        "id": activity_id, "type": "todo", "ownerTypeId": owner_type, "ownerId": owner_id,
        "deadline": deadline, "title": as_str(params.get("title")),
        "description": _kept(ctx, as_str(params.get("description"))),
        "responsibleId": responsible,
        "parentActivityId": as_int(params.get("parentActivityId")),
        "pingOffsets": [as_int(p) for p in pings], "colorId": params.get("colorId"),
        "authorId": ctx.auth.user_id, "created": portal.now_str(ctx.now()), "completed": False}
    return {"id": activity_id}


# b24restdocs api-reference/crm/timeline/activities/activity-base/crm-activity-list.md:
# a row has the keys of the page's example answer; a to-do is PROVIDER_ID CRM_TODO
# (b24restdocs tutorial "How to Reschedule a Planned Activity"), PROVIDER_TYPE_ID TODO
# (the Russian docs' tutorials). TYPE_ID 6, START_TIME/END_TIME = the deadline and the
# constant fields are UNCONFIRMED.
_ACTIVITY_EXTRAS = ("COMMUNICATIONS", "FILES")  # "specify them in select"


def _activity_row(activity: dict[str, Any]) -> dict[str, Any]:
    done = bool(activity.get("completed"))
    deadline = activity["deadline"]
    author = str(activity["authorId"])
    return {
        "ID": str(activity["id"]), "OWNER_ID": str(activity["ownerId"]),
        "OWNER_TYPE_ID": str(activity["ownerTypeId"]), "TYPE_ID": "6",
        "PROVIDER_ID": "CRM_TODO", "PROVIDER_TYPE_ID": "TODO", "PROVIDER_GROUP_ID": None,
        "ASSOCIATED_ENTITY_ID": "0", "SUBJECT": activity["title"],
        "CREATED": activity["created"], "LAST_UPDATED": activity.get("updated") or
        activity["created"], "START_TIME": deadline, "END_TIME": deadline, "DEADLINE": deadline,
        "COMPLETED": "Y" if done else "N", "STATUS": "2" if done else "1",
        "RESPONSIBLE_ID": str(activity["responsibleId"]), "PRIORITY": "2", "NOTIFY_TYPE": "0",
        "NOTIFY_VALUE": "0", "DESCRIPTION": activity["description"], "DESCRIPTION_TYPE": "1",
        "DIRECTION": "0", "LOCATION": "", "SETTINGS": [], "ORIGINATOR_ID": None,
        "ORIGIN_ID": None, "AUTHOR_ID": author, "EDITOR_ID": author, "PROVIDER_PARAMS": [],
        "PROVIDER_DATA": None, "RESULT_MARK": "0", "RESULT_VALUE": None, "RESULT_SUM": None,
        "RESULT_CURRENCY_ID": None, "RESULT_STATUS": "0", "RESULT_STREAM": "0",
        "RESULT_SOURCE_ID": None, "AUTOCOMPLETE_RULE": "0"}


def _bound(row: dict[str, Any], bindings: list[Any]) -> bool:
    """filter[BINDINGS]: any ``{OWNER_TYPE_ID?, OWNER_ID?}`` item names the row's owner."""
    for item in bindings:
        if not isinstance(item, dict) or not item:
            continue
        if all(str(as_int(item[k])) == row[k] for k in ("OWNER_TYPE_ID", "OWNER_ID")
               if k in item):
            return True
    return False


@method("crm.activity.list", scope="crm")
def activity_list(ctx: CallCtx, params: dict[str, Any]) -> ListResult:
    order = _object_param(params, "order")
    flt = dict(_object_param(params, "filter"))
    portal = ctx.portal
    rows: list[dict[str, Any]] = []
    # "a list of activities by filter, taking the current user's permissions into account"
    if portal.crm_access(ctx.auth.user_id) != "none":
        rows = [_activity_row(a) for _, a in sorted(portal.activities.items())]
    bindings = flt.pop("BINDINGS", None)
    if isinstance(bindings, dict):
        bindings = list(bindings.values())
    if isinstance(bindings, list):
        rows = [r for r in rows if _bound(r, bindings)]
    rows = apply_filter(rows, flt)
    keys = [(str(k), str(v).upper() == "DESC") for k, v in order.items()]
    _sort(rows, keys or [("START_TIME", False)])  # "By default ... START_TIME" ascending
    result = page(rows, params)
    select = _select(params)
    everything = not select or "*" in select
    items = []
    for row in result.items:
        out = {k: v for k, v in row.items() if everything or k in select}
        for extra in _ACTIVITY_EXTRAS:
            if extra in select:
                out[extra] = []  # a to-do has no communications; files are not modelled
        items.append(out)
    result.items = items
    return result


# -- tasks ------------------------------------------------------------------------------------


def _person(portal: Portal, user_id: int) -> dict[str, str]:
    return {"id": str(user_id), "name": portal.user_name(user_id),
            "link": f"/company/personal/user/{user_id}/", "icon": "", "workPosition": as_str(
                portal.users.get(user_id, {}).get("WORK_POSITION"))}


@method("tasks.task.add", scope="task")
def task_add(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    portal = ctx.portal
    fields = params.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise _required("fields")
    fields = {str(k).upper(): v for k, v in fields.items()}
    title = as_str(fields.get("TITLE")).strip()
    if not title:
        raise core_error("Task title is not specified<br>")
    responsible = as_int(fields.get("RESPONSIBLE_ID"))
    if fields.get("RESPONSIBLE_ID") in (None, ""):
        raise core_error("Responsible person not specified<br>")
    if responsible not in portal.users:
        raise core_error('User specified in the "Responsible" field not found<br>')
    creator = as_int(fields.get("CREATED_BY")) or ctx.auth.user_id
    if creator not in portal.users:
        creator = ctx.auth.user_id
    deadline = None
    if fields.get("DEADLINE") not in (None, ""):
        deadline = _iso(portal, fields["DEADLINE"])
        if deadline is None:
            raise core_error("Incorrect deadline<br>")  # UNCONFIRMED text
    stamp = portal.now_str(ctx.now())
    task_id = portal.next_id("task")
    task = task_template()
    task.update({
        "id": str(task_id), "title": title,
        "description": _kept(ctx, as_str(fields.get("DESCRIPTION"))),
        "priority": as_str(fields.get("PRIORITY") or "1"), "createdBy": str(creator),
        "createdDate": stamp, "responsibleId": str(responsible), "changedBy": str(creator),
        "changedDate": stamp, "activityDate": stamp, "deadline": deadline,
        "guid": "{" + str(uuid.uuid4()) + "}", "status": "2", "statusChangedDate": stamp,
        "groupId": str(as_int(fields.get("GROUP_ID")) or 0),
        "creator": _person(portal, creator), "responsible": _person(portal, responsible)})
    task["checkListTree"]["fields"]["userId"] = ctx.auth.user_id
    crm = fields.get("UF_CRM_TASK")
    portal.tasks[task_id] = {"task": task, "UF_CRM_TASK": crm if isinstance(crm, list) else
                             ([crm] if crm else []), "fields": fields}
    return {"task": task}


# b24restdocs api-reference/tasks/tasks-task-list.md ("order": the sortable fields)
_TASK_ORDER = {
    "ID", "TITLE", "TIME_SPENT_IN_LOGS", "DATE_START", "CREATED_DATE", "CHANGED_DATE",
    "CLOSED_DATE", "ACTIVITY_DATE", "START_DATE_PLAN", "END_DATE_PLAN", "DEADLINE",
    "REAL_STATUS", "STATUS_COMPLETE", "PRIORITY", "MARK", "CREATED_BY_LAST_NAME",
    "RESPONSIBLE_LAST_NAME", "GROUP_ID", "TIME_ESTIMATE", "ALLOW_CHANGE_DEADLINE",
    "ALLOW_TIME_TRACKING", "MATCH_WORK_TIME", "FAVORITE", "SORTING", "IS_PINNED",
    "IS_PINNED_IN_GROUP"}
_FILTER_KEY = re.compile(r"^[!<>=%@]*(.*)$")
#: a selected field that brings another object along (the page's example answer)
_TASK_COMPANIONS = {"STATUS": ("status", "subStatus"), "REAL_STATUS": ("status",),
                    "RESPONSIBLE_ID": ("responsibleId", "responsible"),
                    "CREATED_BY": ("createdBy", "creator"), "GROUP_ID": ("groupId", "group")}


def _camel(name: str) -> str:
    """``RESPONSIBLE_ID`` -> ``responsibleId`` (the answer's spelling of a field)."""
    if "_" not in name and not name.isupper():
        return name  # already camelCase (the page selects "subStatus")
    head, *rest = name.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def _task_view(portal: Portal, rec: dict[str, Any]) -> dict[str, Any]:
    """The task with the fields filters and sorts look at, under their upper-case names."""
    task = rec["task"]
    view = {re.sub(r"(?<!^)([A-Z])", r"_\1", k).upper(): v for k, v in task.items()
            if not isinstance(v, (dict, list))}
    view.update({"REAL_STATUS": task["status"], "STATUS": task["status"],
                 "STATUS_COMPLETE": "Y" if task["status"] == "5" else "N",
                 "CREATED_BY_LAST_NAME": as_str(portal.users.get(
                     int(task["createdBy"]), {}).get("LAST_NAME")),
                 "RESPONSIBLE_LAST_NAME": as_str(portal.users.get(
                     int(task["responsibleId"]), {}).get("LAST_NAME")),
                 "UF_CRM_TASK": rec["UF_CRM_TASK"], "_REC": rec})
    return view


def _visible(portal: Portal, user_id: int, task: dict[str, Any]) -> bool:
    """"administrators see all tasks ... others see only the tasks available to them"."""
    if portal.users.get(user_id, {}).get("ADMIN"):
        return True
    people = {task["createdBy"], task["responsibleId"], *map(str, task.get("accomplices") or []),
              *map(str, task.get("auditors") or [])}
    return str(user_id) in people


def _task_json(rec: dict[str, Any], select: list[str]) -> dict[str, Any]:
    task: dict[str, Any] = rec["task"]
    if not select or "*" in select:
        return dict(task)
    out: dict[str, Any] = {"id": task["id"]}
    for name in select:
        upper = name.upper() if "_" in name or name.isupper() else name
        if upper == "UF_CRM_TASK":
            out["ufCrmTask"] = list(rec["UF_CRM_TASK"])
            continue
        for key in _TASK_COMPANIONS.get(upper, (_camel(name),)):
            if key == "subStatus":
                out[key] = task["status"]
            elif key in task:
                out[key] = task[key]
    return out


@method("tasks.task.list", scope="task")
def task_list(ctx: CallCtx, params: dict[str, Any]) -> ListResult:
    portal = ctx.portal
    raw_order = params.get("order", params.get("ORDER"))
    order = raw_order if isinstance(raw_order, dict) else {}
    keys: list[tuple[str, bool]] = []
    for key, direction in order.items():
        field = str(key).upper()
        if field not in _TASK_ORDER:
            raise B24Error(400, "0", "Invalid sorting key (internal error)")
        keys.append((field, str(direction).upper() == "DESC"))
    raw_filter = params.get("filter", params.get("FILTER"))
    flt = raw_filter if isinstance(raw_filter, dict) else {}
    rows = [_task_view(portal, rec) for _, rec in sorted(portal.tasks.items())
            if _visible(portal, ctx.auth.user_id, rec["task"])]
    known = (set(rows[0]) - {"_REC"}) if rows else set()
    plain: dict[str, Any] = {}
    for key, wanted in flt.items():
        match = _FILTER_KEY.match(str(key))
        field = match.group(1).upper() if match else ""
        if field == "UF_CRM_TASK":
            wanted_links = {str(w) for w in (wanted if isinstance(wanted, list) else [wanted])}
            negate = str(key).startswith("!")
            rows = [r for r in rows if bool(wanted_links & set(r["UF_CRM_TASK"])) != negate]
        elif field in known:  # fields the sandbox does not model are ignored (UNCONFIRMED)
            prefix = str(key)[: len(str(key)) - len(field)]
            if isinstance(wanted, list) and prefix in ("", "="):
                prefix = "@"  # an array of values: any of them
            elif field == "TITLE" and prefix == "" and "%" in str(wanted):
                prefix = "=%"  # "can search by pattern [%_]"
            plain[prefix + field] = wanted
    rows = apply_filter(rows, plain)
    _sort(rows, keys or [("ID", True)])  # "By default — descending by ID"
    result = page(rows, params)
    select = _select(params)
    result.items = {"tasks": [_task_json(r["_REC"], select) for r in result.items]}
    return result


# -- users --------------------------------------------------------------------------------------


def user_json(portal: Portal, user: dict[str, Any], started: float, *,
              current: bool) -> dict[str, Any]:
    """A user as user.get (``current=False``) or user.current returns it. The two
    examples differ: user.get shows TIMESTAMP_X / LAST_ACTIVITY_DATE as ``{}``,
    user.current (and batch.md) as strings."""
    stamp = portal.now_str(started)
    out: dict[str, Any] = {
        "ID": str(user["ID"]), "ACTIVE": bool(user.get("ACTIVE", True)),
        "NAME": as_str(user.get("NAME")), "LAST_NAME": as_str(user.get("LAST_NAME")),
        "SECOND_NAME": as_str(user.get("SECOND_NAME")), "EMAIL": as_str(user.get("EMAIL")),
        "LAST_LOGIN": stamp, "DATE_REGISTER": stamp[:10] + "T00:00:00" + stamp[19:],
        "TIME_ZONE": "", "IS_ONLINE": "Y"}
    if current:
        out["TIMESTAMP_X"] = dt.datetime.fromisoformat(stamp).strftime("%d.%m.%Y %H:%M:%S")
        out["LAST_ACTIVITY_DATE"] = stamp[:10] + " " + stamp[11:19]
    else:
        out["TIMESTAMP_X"] = {}
        out["LAST_ACTIVITY_DATE"] = {}
    out.update({"PERSONAL_GENDER": "", "PERSONAL_WWW": "", "PERSONAL_BIRTHDAY": "",
                "PERSONAL_MOBILE": "", "PERSONAL_CITY": "", "WORK_PHONE": "",
                "WORK_POSITION": as_str(user.get("WORK_POSITION")), "UF_EMPLOYMENT_DATE": "",
                "UF_DEPARTMENT": [1], "USER_TYPE": "employee"})
    return out


@method("user.get", scope="user")
def user_get(ctx: CallCtx, params: dict[str, Any]) -> ListResult:
    portal = ctx.portal
    rows = [user_json(portal, u, ctx.store.started, current=False)
            for _, u in sorted(portal.users.items())]
    flt = params.get("FILTER", params.get("filter"))
    if isinstance(flt, dict):
        rows = apply_filter(rows, flt)
    for key in ("ID",):  # user-get.md: "ID" also works as a top-level filter key
        if params.get(key) not in (None, ""):
            rows = apply_filter(rows, {key: params[key]})
    sort = str(params.get("sort") or params.get("SORT") or "ID")
    order = str(params.get("order") or params.get("ORDER") or "ASC").upper()
    rows.sort(key=lambda r: (as_int(r.get(sort)) or 0, str(r.get(sort))),
              reverse=order == "DESC")
    return page(rows, params)


@method("user.current", scope="user")
def user_current(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    out = user_json(ctx.portal, ctx.portal.users[ctx.auth.user_id], ctx.store.started,
                    current=True)
    for key in ("SECOND_NAME", "TIME_ZONE", "PERSONAL_WWW", "PERSONAL_MOBILE", "PERSONAL_CITY",
                "WORK_PHONE", "USER_TYPE"):
        out.pop(key, None)
    return out


@method("profile")
def profile(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    user = ctx.portal.users[ctx.auth.user_id]
    return {"ID": str(user["ID"]), "ADMIN": bool(user.get("ADMIN")),
            "NAME": as_str(user.get("NAME")), "LAST_NAME": as_str(user.get("LAST_NAME")),
            "PERSONAL_GENDER": "", "TIME_ZONE": ""}


@method("app.info", app_only="app_info")
def app_info(ctx: CallCtx, params: dict[str, Any]) -> dict[str, Any]:
    portal = ctx.portal
    app = ctx.cfg["app"]
    family, kind = ("ent", "ent250") if portal.plan == "enterprise" else ("basic", "basic")
    lang = portal.cfg["language"]
    version = as_int(app.get("version"))
    return {"ID": 1, "CODE": app.get("code") or app["client_id"],
            "VERSION": version if version is not None else app.get("version"),
            "STATUS": app["status"], "INSTALLED": bool(portal.app and portal.app.finished),
            "PAYMENT_EXPIRED": "N", "DAYS": None, "LANGUAGE_ID": lang,
            "LICENSE": f"{lang}_{kind}", "LICENSE_TYPE": kind, "LICENSE_FAMILY": family}
