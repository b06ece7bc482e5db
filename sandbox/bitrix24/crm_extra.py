"""Timeline comments, to-dos, tasks, users and the small system methods.

* ``crm.timeline.comment.add`` (crm-timeline-comment-add.md): lowercase
  ``fields`` only (crm >= 23.100.0), errors OWNER_NOT_FOUND / NOT_FOUND /
  ACCESS_DENIED / INVALID_ARG_VALUE / ``100``. Listing: the docs we ship have no
  ``crm.timeline.comment.list``, so comments are listed by the control API
  (``GET /_timeline``, ``GET /_state``).
* ``crm.activity.todo.add`` (crm-activity-todo-add.md): ``deadline`` required,
  owner type 1 lead / 2 deal / 3 contact / 4 company (crm/data-types.md), answer
  ``{"id": …}``. Listed by the same control endpoints.
* ``tasks.task.add`` (tasks-task-add.md): TITLE and RESPONSIBLE_ID required,
  ``ERROR_CORE`` texts ending in ``<br>``; the answer is the vendor example's
  task object with this task's values.
* ``user.get`` / ``user.current`` (user-get.md, user-current.md), ``profile``
  and ``app.info`` (b24restdocs api-reference/common/users/profile.md and
  common/system/app-info.md, examples in spec/), ``placement.bind``
  (app context only; UNCONFIRMED minimal behaviour).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from .context import CallCtx, ListResult, method
from .crm_methods import apply_filter, page
from .errors import B24Error, core_error
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


# -- timeline comments ------------------------------------------------------------------


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
    text = as_str(fields.get("COMMENT")).strip()
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
        "description": as_str(params.get("description")), "responsibleId": responsible,
        "parentActivityId": as_int(params.get("parentActivityId")),
        "pingOffsets": [as_int(p) for p in pings], "colorId": params.get("colorId"),
        "authorId": ctx.auth.user_id, "created": portal.now_str(ctx.now()), "completed": False}
    return {"id": activity_id}


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
        "id": str(task_id), "title": title, "description": as_str(fields.get("DESCRIPTION")),
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


@method("placement.bind", scope="placement", app_only="wrong_auth_type")
def placement_bind(ctx: CallCtx, params: dict[str, Any]) -> bool:
    """App context only (local-webhooks.md). Minimal: records the placement
    (UNCONFIRMED answer shape; placement-bind.md is not in the stored docs)."""
    placement = as_str(params.get("PLACEMENT")).strip()
    handler = as_str(params.get("HANDLER")).strip()
    if not placement:
        raise B24Error(400, "ERROR_ARGUMENT", "Argument 'PLACEMENT' is null or empty")
    if not handler:
        raise B24Error(400, "ERROR_ARGUMENT", "Argument 'HANDLER' is null or empty")
    ctx.portal.placements.append({"PLACEMENT": placement, "HANDLER": handler,
                                  "TITLE": as_str(params.get("TITLE"))})
    return True
