"""The Graph API endpoints of the Cloud API, as Meta serves them (FACTS §2).

Paths are Meta's after ``https://graph.facebook.com`` (here: after the mount
point). Every call needs ``Authorization: Bearer <access token>`` (Graph
also takes ``?access_token=``); a missing or unknown token is 401 code 190,
an id the token cannot see is Graph's 400 code 100 subcode 33.

``POST /v{N}/{phone-number-id}/messages``
    A message (``text``, ``image``, ``video``, ``audio``, ``document``,
    ``sticker``, ``location``, ``contacts``, ``template``, ``reaction``,
    ``interactive``; ``type`` defaults to ``text``) →
    ``{"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}],
    "messages": [{"id": "wamid…"}]}`` (templates add ``"message_status":
    "accepted"``), then status webhooks from a background thread. Or mark a
    customer's message read: ``{"messaging_product": "whatsapp", "status":
    "read", "message_id"}`` → ``{"success": true}``.
``POST /v{N}/{phone-number-id}/media``
    multipart ``file``, ``type`` (MIME), ``messaging_product`` → ``{"id"}``.
``GET /v{N}/{media-id}``
    ``{"messaging_product", "url", "mime_type", "sha256", "file_size",
    "id"}``; the ``url`` (``/_media/{media-id}?mid=…&ext=…&hash=…``) serves
    the bytes to the same Bearer token until it expires (``media_url_ttl_s``).
``DELETE /v{N}/{media-id}``
    ``{"success": true}``.
``GET /v{N}/{waba-id}/message_templates``
    ``{"data": [{"name", "language", "status", "category", "components",
    "id"}], "paging": {"cursors": {"before", "after"}, "next"?}}``; filters
    ``name``, ``status``, ``language``, ``category``; ``limit`` (25), ``after``.

Checks on a send, in order: the version (≥ ``min_version``, else 2635), the
token and number, the body (131008 missing, 131009 malformed, 100 invalid:
unknown type, text over ``max_text_chars``), the 24-hour window for free-form
messages (131047) or the template (132001 when it is not an APPROVED
template of that name and language; 132000 when the body's parameters do not
match its placeholders), throughput (130429) and the pair limit (131056).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import socket
import time
from typing import Any

from flask import Response, current_app, g, request

from ..core.control import json_response
from .errors import GraphError, auth_error, invalid_parameter, no_object
from .state import Media, Store, new_media_id, new_wamid, normalize_to

__all__ = [
    "send_message",
    "upload_media",
    "media_object",
    "download_media",
    "message_templates",
    "media_url",
    "MESSAGE_TYPES",
]

MESSAGE_TYPES = (
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "template",
    "reaction",
    "interactive",
)
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
INTERACTIVE_TYPES = (
    "button",
    "list",
    "cta_url",
    "product",
    "product_list",
    "catalog_message",
    "flow",
    "location_request_message",
    "address_message",
    "call_permission_request",
    "voice_call",
)
#: interactive messages (Meta's interactive reply buttons and list messages
#: pages: up to 3 buttons; up to 10 sections, 10 rows in all; the lengths as
#: Meta's WhatsApp Node.js SDK reference gives them: button title 20, id 256;
#: row title 24, id 200, description 72; list button 20; body 1024 and
#: header/footer 60 from the SDKs (whatsapp-api-js, Sinch)). Which error code
#: Meta gives for each is UNCONFIRMED: 100 here, as for the other values.
INTERACTIVE_BODY = 1024
INTERACTIVE_HEADER = 60
MAX_REPLY_BUTTONS = 3
BUTTON_TITLE = 20
BUTTON_ID = 256
LIST_BUTTON = 20
MAX_SECTIONS = 10
MAX_ROWS = 10
ROW_TITLE = 24
ROW_ID = 200
ROW_DESCRIPTION = 72
_BUTTONS = "interactive['action']['buttons'][]"
_SECTIONS = "interactive['action']['sections'][]"
_ROWS = "interactive['action']['sections'][]['rows'][]"
#: upload size limits by medium; third-party tables only (FACTS §2: UNCONFIRMED)
UPLOAD_LIMITS = {
    "image": 5_000_000,
    "audio": 16_000_000,
    "video": 16_000_000,
    "document": 100_000_000,
    "sticker": 500_000,
}
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?$")


def _sandbox() -> Any:
    return current_app.extensions["whatsapp_sandbox"]


def _store() -> Store:
    store: Store = _sandbox().store
    return store


def fail(error: GraphError) -> GraphError:
    """Remember the code for ``/_stats`` and hand the error on."""
    g.graph_error_code = error.code
    return error


# -- common checks ---------------------------------------------------------------------------


def check_version(version: str) -> None:
    match = _VERSION.match(version)
    if match is None:
        raise fail(
            GraphError(2500, whatsapp=False, message=f"Unknown path components: /v{version}")
        )
    if int(match.group(1)) < int(_store().config["min_version"]):
        raise fail(GraphError(2635, whatsapp=False))


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.args.get("access_token") or None


def token_accounts() -> list[dict[str, Any]]:
    """The accounts the request's token opens; 401 (190) when none."""
    token = bearer_token()
    accounts = _store().token_accounts(token) if token else []
    if not accounts:
        raise fail(auth_error())
    return accounts


def phone_account(phone_number_id: str, method: str = "post") -> dict[str, Any]:
    accounts = token_accounts()
    account = next((a for a in accounts if a["phone_number_id"] == phone_number_id), None)
    if account is None:
        raise fail(no_object(phone_number_id, method))
    return account


def _body() -> dict[str, Any]:
    """The JSON body; a form-encoded one (Graph takes both) with its object
    values JSON-decoded."""
    if request.mimetype == "application/json" or request.get_data(cache=True)[:1] == b"{":
        try:
            data = json.loads(request.get_data(cache=True) or b"{}")
        except ValueError:
            raise fail(invalid_parameter("The request body is not valid JSON.")) from None
        if not isinstance(data, dict):
            raise fail(invalid_parameter("The request body must be a JSON object."))
        return data
    out: dict[str, Any] = {}
    for key, value in request.form.items():
        try:
            out[key] = json.loads(value) if value[:1] in "{[" else value
        except ValueError:
            out[key] = value
    return out


def _missing(param: str) -> GraphError:
    return fail(GraphError(131008, f"The parameter {param} is required."))


def _not_valid(details: str) -> GraphError:
    return fail(GraphError(131009, details))


def _invalid(details: str) -> GraphError:
    return fail(invalid_parameter(details))


# -- POST /{phone-number-id}/messages -------------------------------------------------------------


def send_message(version: str, phone_number_id: str) -> Response:
    check_version(version)
    account = phone_account(phone_number_id)
    body = _body()
    if body.get("messaging_product") != "whatsapp":
        if "messaging_product" not in body:
            raise _missing("messaging_product")
        raise _invalid("messaging_product must be 'whatsapp'.")
    if body.get("status") == "read" or "message_id" in body and "to" not in body:
        return _mark_read(account, body)
    store = _store()
    cfg = store.config
    to, wa_id, kind = _validate(body, cfg)
    template = _template(body, cfg) if kind == "template" else None
    failure: dict[str, Any] | None = None
    with store.lock:
        wa_id = store.customer_key(phone_number_id, wa_id)  # a known user id's phone number
        if (
            kind != "template"
            and cfg["enforce_window"]
            and not store.window_open(phone_number_id, wa_id)
        ):
            if cfg["window_error"] == "sync":
                raise fail(GraphError(131047))
            failure = {"code": 131047}
        if cfg["enforce_throughput"] and not store.throughput.take(
            ("throughput", phone_number_id),
            float(cfg["throughput_per_s"]),
            float(cfg["throughput_per_s"]),
        ):
            raise fail(GraphError(130429, status=cfg["throughput_http_status"], subcode=2494055))
        if cfg["enforce_pair_limit"] and not store.pairs.take(
            ("pair", phone_number_id, wa_id),
            1.0 / float(cfg["pair_interval_s"]),
            float(cfg["pair_burst"]),
        ):
            raise fail(GraphError(131056, status=cfg["pair_http_status"]))
        if failure is None and cfg["failed_rate"] and store.rng.random() < cfg["failed_rate"]:
            failure = {"code": cfg["failed_code"]}
        dropped = bool(cfg["drop_after_accept_rate"]) and (
            store.rng.random() < cfg["drop_after_accept_rate"]
        )
        wamid = new_wamid(wa_id)
        medium = body.get(kind) if kind in MEDIA_TYPES else None
        record: dict[str, Any] = {
            "id": wamid,
            "time": store.now(),
            "to": to,
            "wa_id": wa_id,
            "phone_number_id": phone_number_id,
            "account": dict(account),
            "type": kind,
            "category": (template["category"].lower() if template else "service"),
            "body": body,
            "failure": failure,
            "statuses": [],
            "media_link": medium.get("link") if isinstance(medium, dict) else None,
            "dropped_connection": dropped,
        }
        store.sent.append(record)
        store.count("messages")
    _sandbox().webhooks.statuses_for(record)
    answer: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id}],
        "messages": [{"id": wamid}],
    }
    if template is not None:
        answer["messages"][0]["message_status"] = "accepted"
    if dropped:
        return _drop_connection()
    return json_response(answer)


def _drop_connection() -> Response:
    """The message is accepted; the answer never arrives (outcome unknown)."""
    sock = request.environ.get("werkzeug.socket") or request.environ.get("gunicorn.socket")
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return Response(b"", status=500)
    time.sleep(_sandbox().faults.timeout_seconds)
    return fail(
        GraphError(2, status=504, message="(#2) Service temporarily unavailable")
    ).response()


def _mark_read(account: dict[str, Any], body: dict[str, Any]) -> Response:
    message_id = body.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise _missing("message_id")
    if body.get("status") != "read":
        raise _invalid("status must be 'read'.")
    store = _store()
    with store.lock:
        inbound = store.inbound.get((account["phone_number_id"], message_id))
        if inbound is None:
            raise _invalid(
                f"Invalid message_id: {message_id} is not a message this number received."
            )
        inbound["read_at"] = store.now()
        typing = body.get("typing_indicator")
        if isinstance(typing, dict):
            inbound["typing_indicator"] = typing.get("type")
        store.count("marked_read")
    return json_response({"success": True})


def _validate(body: dict[str, Any], cfg: dict[str, Any]) -> tuple[str, str, str]:
    """``(to, wa_id, type)`` of a valid message body; a Graph error otherwise."""
    recipient_type = body.get("recipient_type", "individual")
    if recipient_type != "individual":
        raise _invalid(f"recipient_type {recipient_type!r} is not supported; use 'individual'.")
    to = body.get("to")
    if to in (None, ""):
        raise _missing("to")
    if not isinstance(to, (str, int)) or isinstance(to, bool):
        raise _not_valid("to must be a phone number or a user id.")
    to = str(to)
    wa_id = normalize_to(to)
    if wa_id is None:
        raise _not_valid(f"to: {to!r} is not a valid phone number or user id.")
    kind = body.get("type", "text")
    if kind not in MESSAGE_TYPES:
        raise _invalid(f"Param type must be one of {{{', '.join(MESSAGE_TYPES)}}} - got {kind!r}.")
    content = body.get(kind)
    if not isinstance(content, (dict, list)):
        raise _missing(kind)
    context = body.get("context")
    if context is not None and (
        not isinstance(context, dict) or not isinstance(context.get("message_id"), str)
    ):
        raise _not_valid('context must be {"message_id": "<wamid>"}.')
    opaque = body.get("biz_opaque_callback_data")
    if opaque is not None and (not isinstance(opaque, str) or len(opaque) > 512):
        raise _invalid("biz_opaque_callback_data must be a string of at most 512 characters.")
    _CHECKS[kind](content, cfg, kind)
    return to, wa_id, kind


def _check_text(content: Any, cfg: dict[str, Any], kind: str) -> None:
    text = content.get("body") if isinstance(content, dict) else None
    if not isinstance(text, str) or not text:
        raise _missing("text['body']")
    if len(text) > cfg["max_text_chars"]:
        raise _invalid(
            f"Param text['body'] must be at most {cfg['max_text_chars']} "
            f"characters long (got {len(text)})."
        )
    if "preview_url" in content and not isinstance(content["preview_url"], bool):
        raise _invalid("Param text['preview_url'] must be a boolean.")


def _check_media(content: Any, cfg: dict[str, Any], kind: str) -> None:
    if not isinstance(content, dict):
        raise _missing(kind)
    media_id, link = content.get("id"), content.get("link")
    if media_id in (None, "") and link in (None, ""):
        raise _missing(f"{kind}['id'] or {kind}['link']")
    if media_id not in (None, "") and link not in (None, ""):
        raise _invalid(f"Param {kind} must have either 'id' or 'link', not both.")
    if link not in (None, ""):
        if not isinstance(link, str) or not link.startswith(("http://", "https://")):
            raise _not_valid(f"{kind}['link'] must be an http(s) URL.")
    else:
        store = _store()
        with store.lock:
            known = str(media_id) in store.media
        if not known:  # UNCONFIRMED: Meta may accept and fail the status (131053)
            raise _invalid(f"Param {kind}['id'] is not a valid media id: {media_id}.")
    caption = content.get("caption")
    if caption is not None:
        if kind in ("audio", "sticker"):
            raise _invalid(f"Param {kind}['caption'] is not allowed.")
        if not isinstance(caption, str) or len(caption) > cfg["max_caption_chars"]:
            raise _invalid(
                f"Param {kind}['caption'] must be at most "
                f"{cfg['max_caption_chars']} characters long."
            )


def _check_location(content: Any, cfg: dict[str, Any], kind: str) -> None:
    if not isinstance(content, dict):
        raise _missing("location")
    for key, bound in (("latitude", 90.0), ("longitude", 180.0)):
        value = content.get(key)
        if value in (None, ""):
            raise _missing(f"location['{key}']")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _not_valid(f"location['{key}'] must be a number.") from None
        if isinstance(value, bool) or not -bound <= number <= bound:
            raise _not_valid(f"location['{key}'] must be between {-bound:g} and {bound:g}.")


def _check_contacts(content: Any, cfg: dict[str, Any], kind: str) -> None:
    if not isinstance(content, list) or not content:
        raise _missing("contacts")
    for contact in content:
        name = contact.get("name") if isinstance(contact, dict) else None
        if not isinstance(name, dict) or not name.get("formatted_name"):
            raise _missing("contacts[]['name']['formatted_name']")


def _check_template(content: Any, cfg: dict[str, Any], kind: str) -> None:
    if not isinstance(content, dict):
        raise _missing("template")
    if not isinstance(content.get("name"), str) or not content["name"]:
        raise _missing("template['name']")
    language = content.get("language")
    if (
        not isinstance(language, dict)
        or not isinstance(language.get("code"), str)
        or not language["code"]
    ):
        raise _missing("template['language']['code']")
    components = content.get("components", [])
    if not isinstance(components, list):
        raise _not_valid("template['components'] must be a list.")


def _check_reaction(content: Any, cfg: dict[str, Any], kind: str) -> None:
    if not isinstance(content, dict):
        raise _missing("reaction")
    if not isinstance(content.get("message_id"), str) or not content["message_id"]:
        raise _missing("reaction['message_id']")
    if not isinstance(content.get("emoji"), str):  # "" removes a reaction
        raise _missing("reaction['emoji']")


def _check_interactive(content: Any, cfg: dict[str, Any], kind: str) -> None:
    if not isinstance(content, dict):
        raise _missing("interactive")
    itype = content.get("type")
    if itype in (None, ""):
        raise _missing("interactive['type']")
    if itype not in INTERACTIVE_TYPES:
        raise _invalid(f"Param interactive['type'] is invalid: {itype!r}.")
    action = content.get("action")
    if itype != "location_request_message" and not isinstance(action, dict):
        raise _missing("interactive['action']")
    if itype in ("button", "list", "cta_url", "flow"):
        body = content.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
            raise _missing("interactive['body']['text']")
        if len(body["text"]) > INTERACTIVE_BODY:
            raise _invalid("Param interactive['body']['text'] must be at most 1024 characters.")
        _check_header_footer(content)
    if itype == "button" and isinstance(action, dict):
        _check_reply_buttons(action)
    if itype == "list" and isinstance(action, dict):
        _check_list(action)


def _check_header_footer(content: dict[str, Any]) -> None:
    """A text header and a footer: at most 60 characters each."""
    for part in ("header", "footer"):
        value = content.get(part)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _not_valid(f"interactive['{part}'] must be an object.")
        text = value.get("text")
        if (part == "footer" or value.get("type") == "text") and not isinstance(text, str):
            raise _missing(f"interactive['{part}']['text']")
        if isinstance(text, str) and len(text) > INTERACTIVE_HEADER:
            raise _invalid(f"Param interactive['{part}']['text'] must be at most 60 characters.")


def _check_reply_buttons(action: dict[str, Any]) -> None:
    """Reply buttons: 1-3 of type ``reply``, each id 1-256 characters, each
    title 1-20 characters; titles and ids unique in the message."""
    buttons = action.get("buttons")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= MAX_REPLY_BUTTONS:
        raise _invalid("Param interactive['action']['buttons'] must have 1 to 3 buttons.")
    ids, titles = [], []
    for button in buttons:
        reply = button.get("reply") if isinstance(button, dict) else None
        if not isinstance(reply, dict) or not reply.get("id") or not reply.get("title"):
            raise _missing("interactive['action']['buttons'][]['reply']['id'|'title']")
        if button.get("type", "reply") != "reply":
            raise _invalid("Param interactive['action']['buttons'][]['type'] must be 'reply'.")
        ids.append(_text_param(reply["id"], BUTTON_ID, f"{_BUTTONS}['reply']['id']"))
        titles.append(_text_param(reply["title"], BUTTON_TITLE, f"{_BUTTONS}['reply']['title']"))
    if len(set(ids)) != len(ids):
        raise _invalid("Button ids must be unique within the message.")
    if len(set(titles)) != len(titles):
        raise _invalid("Button titles must be unique within the message.")


def _check_list(action: dict[str, Any]) -> None:
    """A list: its button 1-20 characters; 1-10 sections holding 1-10 rows
    in all; a row's id 1-200 and unique, title 1-24, description up to 72;
    a section title (up to 24) when there is more than one section."""
    _text_param(action.get("button"), LIST_BUTTON, "interactive['action']['button']")
    sections = action.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= MAX_SECTIONS:
        raise _invalid("Param interactive['action']['sections'] must have 1 to 10 sections.")
    ids: list[str] = []
    for section in sections:
        rows = section.get("rows") if isinstance(section, dict) else None
        if not isinstance(rows, list) or not rows:
            raise _missing(f"{_SECTIONS}['rows']")
        if len(sections) > 1 or "title" in section:
            _text_param(section.get("title"), ROW_TITLE, f"{_SECTIONS}['title']")
        for row in rows:
            if not isinstance(row, dict):
                raise _missing(_ROWS)
            ids.append(_text_param(row.get("id"), ROW_ID, f"{_ROWS}['id']"))
            _text_param(row.get("title"), ROW_TITLE, f"{_ROWS}['title']")
            if row.get("description") is not None:
                _text_param(row["description"], ROW_DESCRIPTION, f"{_ROWS}['description']")
    if len(ids) > MAX_ROWS:
        raise _invalid(f"Param {_SECTIONS}['rows'] must have at most {MAX_ROWS} rows in all.")
    if len(set(ids)) != len(ids):
        raise _invalid("Row ids must be unique within the message.")


def _text_param(value: Any, limit: int, param: str) -> str:
    """``param``: a required string of 1 to ``limit`` characters."""
    if not isinstance(value, str) or not value:
        raise _missing(param)
    if len(value) > limit:
        raise _invalid(f"Param {param} must be at most {limit} characters long.")
    return value


_CHECKS = {
    "text": _check_text,
    **{kind: _check_media for kind in MEDIA_TYPES},
    "location": _check_location,
    "contacts": _check_contacts,
    "template": _check_template,
    "reaction": _check_reaction,
    "interactive": _check_interactive,
}


def _template(body: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The APPROVED template the send names (132001 otherwise; 132000 when the
    body's parameters do not fill its placeholders)."""
    wanted = body["template"]
    name, code = wanted["name"], wanted["language"]["code"]
    found = next(
        (
            t
            for t in cfg["templates"]
            if t["name"] == name and t["language"] == code and t["status"] == "APPROVED"
        ),
        None,
    )
    if found is None:
        raise fail(GraphError(132001, f"template name ({name}) does not exist in {code}"))
    expected = 0
    for component in found.get("components", []):
        if str(component.get("type", "")).upper() == "BODY":
            expected = len(set(_PLACEHOLDER.findall(str(component.get("text", "")))))
    given = 0
    for component in wanted.get("components", []):
        if isinstance(component, dict) and str(component.get("type", "")).lower() == "body":
            parameters = component.get("parameters") or []
            given = len(parameters) if isinstance(parameters, list) else 0
    if given != expected:
        raise fail(
            GraphError(
                132000,
                f"body: number of localizable_params ({given}) does not "
                f"match the expected number of params ({expected})",
            )
        )
    return found


# -- media ---------------------------------------------------------------------------------------


def _media_key() -> bytes:
    return ("sandbox-media:" + _store().config["app_secret"]).encode()


def media_url(media_id: str) -> str:
    """An absolute, expiring download URL of ``media_id`` (request context)."""
    store = _store()
    expires = int(store.now() + float(store.config["media_url_ttl_s"]))
    digest = hmac.new(_media_key(), f"{media_id}:{expires}".encode(), hashlib.sha256)
    return (
        f"{request.url_root}_media/{media_id}?mid={media_id}&ext={expires}"
        f"&hash={digest.hexdigest()[:32]}"
    )


def _owned_media(media_id: str, method: str) -> Media:
    accounts = token_accounts()
    store = _store()
    with store.lock:
        media = store.media.get(media_id)
    numbers = {a["phone_number_id"] for a in accounts}
    if media is None or media.phone_number_id not in numbers:
        raise fail(no_object(media_id, method))
    return media


def media_object(version: str, media_id: str) -> Response:
    """``GET /{media-id}`` (the URL step) and ``DELETE /{media-id}``."""
    check_version(version)
    media = _owned_media(media_id, request.method.lower())
    if request.method == "DELETE":
        store = _store()
        with store.lock:
            store.media.pop(media_id, None)
        return json_response({"success": True})
    return json_response(
        {
            "messaging_product": "whatsapp",
            "url": media_url(media_id),
            "mime_type": media.mime_type,
            "sha256": media.sha256,
            "file_size": len(media.content),
            "id": media.id,
        }
    )


def download_media(media_id: str) -> Response:
    """The bytes behind a media URL: the same Bearer token, before ``ext``."""
    store = _store()
    if not request.headers.get("Authorization", "")[:7].lower() == "bearer ":
        raise fail(auth_error())  # the media host wants the header, not ?access_token=
    media = _owned_media(media_id, "get")
    expires = request.args.get("ext", "")
    digest = hmac.new(_media_key(), f"{media_id}:{expires}".encode(), hashlib.sha256)
    if (
        not hmac.compare_digest(request.args.get("hash", ""), digest.hexdigest()[:32])
        or not expires.isdigit()
        or store.now() > int(expires)
    ):
        # UNCONFIRMED: what the media host answers for an expired or forged URL
        return Response(b"URL signature expired or invalid", status=404, mimetype="text/plain")
    response = Response(media.content, mimetype=media.mime_type.split(";")[0])
    response.headers["Content-Length"] = str(len(media.content))
    if media.filename:
        response.headers["Content-Disposition"] = f'attachment; filename="{media.filename}"'
    return response


def upload_media(version: str, phone_number_id: str) -> Response:
    check_version(version)
    account = phone_account(phone_number_id)
    if request.form.get("messaging_product") != "whatsapp":
        raise _missing("messaging_product")
    upload = request.files.get("file")
    if upload is None:
        raise _missing("file")
    content = upload.read()
    mime = (request.form.get("type") or upload.mimetype or "").strip()
    if not mime or "/" not in mime:
        raise _missing("type")
    medium = mime.split("/")[0]
    kind = "sticker" if mime == "image/webp" else medium if medium in UPLOAD_LIMITS else "document"
    if len(content) > UPLOAD_LIMITS[kind]:
        raise fail(
            GraphError(
                131053,
                f"{kind} files may be at most {UPLOAD_LIMITS[kind]} bytes (UNCONFIRMED limit).",
            )
        )
    media = _store().add_media(
        Media(
            new_media_id(),
            account["phone_number_id"],
            mime,
            content,
            upload.filename or None,
            _store().now(),
            origin="upload",
        )
    )
    return json_response({"id": media.id})


# -- templates ----------------------------------------------------------------------------------


def message_templates(version: str, waba_id: str) -> Response:
    check_version(version)
    accounts = token_accounts()
    if not any(a["waba_id"] == waba_id for a in accounts):
        raise fail(no_object(waba_id, "get"))
    store = _store()
    with store.lock:
        templates = [dict(t) for t in store.config["templates"]]
    args = request.args
    for key in ("name", "status", "language", "category"):
        wanted = args.get(key)
        if wanted:
            if key == "name":
                templates = [t for t in templates if wanted.lower() in t["name"].lower()]
            else:
                templates = [t for t in templates if t[key].upper() == wanted.upper()]
    try:
        limit = max(1, min(int(args.get("limit", 25)), 1000))
    except ValueError:
        raise _invalid("Param limit must be an integer.") from None
    start = _cursor(args.get("after"), default=0)
    page = templates[start : start + limit]
    body: dict[str, Any] = {"data": page}
    if page:
        body["paging"] = {
            "cursors": {
                "before": _encode_cursor(start),
                "after": _encode_cursor(start + len(page) - 1),
            }
        }
        if start + limit < len(templates):
            body["paging"]["next"] = (
                f"{request.base_url}?limit={limit}&after={_encode_cursor(start + len(page) - 1)}"
            )
    return json_response(body)


def _encode_cursor(index: int) -> str:
    return base64.b64encode(f"template:{index}".encode()).decode()


def _cursor(value: str | None, default: int) -> int:
    if not value:
        return default
    try:
        text = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, ValueError):
        raise _invalid("Param after is not a valid cursor.") from None
    if not text.startswith("template:") or not text[9:].isdigit():
        raise _invalid("Param after is not a valid cursor.")
    return int(text[9:]) + 1
