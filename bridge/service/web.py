"""The public page a rating link opens (an e-mail's rating prompt: five
signed links, ``bridge.service.csat.rating_links``).

``GET /service/rate?token=…``: the token names the tenant, the session and
the score, signed with a key derived from the bridge's own
(``runner.links_secret``) and valid for :data:`MAX_AGE`. A valid link
rates the session once and answers a short page in English and Russian; a
link that was tampered with or is too old gets a 400 with a JSON error.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from flask import Blueprint, Response, current_app, jsonify, request

from bridge.model import utcnow
from bridge.service import csat, runner

__all__ = ["MAX_AGE", "bp"]

bp = Blueprint("service", __name__)

#: how long a rating link works
MAX_AGE = dt.timedelta(days=30)

_PAGES = {
    "rated": ("Thank you for your rating!", "Спасибо за оценку!"),
    "already": (
        "This conversation is rated already. Thank you!",
        "Этот диалог уже оценён. Спасибо!",
    ),
    "unknown": ("This conversation can no longer be rated.", "Этот диалог больше нельзя оценить."),
}


@bp.get(runner.RATE_PATH)
def rate() -> Response | tuple[Response, int]:
    """Rate a session by its signed link."""
    token = request.args.get("token", "")
    rt = current_app.extensions["bridge"]
    now = utcnow()
    claim = csat.read_token(runner.links_secret(rt), token, MAX_AGE, now=now) if token else None
    if claim is None:
        body = {"error": "bad_link", "message": "this rating link is not valid or has expired"}
        return jsonify(body), 400
    outcome = runner.rate_by_link(rt, claim, now)
    english, russian = _PAGES[outcome]
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>Rating</title></head>'
        f'<body><p>{escape(english)}</p><p lang="ru">{escape(russian)}</p></body></html>'
    )
    return Response(page, 200, mimetype="text/html")
