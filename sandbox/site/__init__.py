"""The demo shop: a small web site that embeds the bridge's web chat widget.

``bridge run`` serves it at ``/sandbox/site/`` (the home page) and
``/sandbox/site/product`` (a second page: the visitor's conversation follows
them from page to page). Each page carries the widget's one line::

    <script src="<bridge public url>/widget/<widget key>.js" async></script>

The demo (:func:`sandbox.demo.connect_webchat`) connects a web chat account
whose allowed origin is the sandbox's own and gives the shop the script's
URL with ``POST /_widget`` (as a site owner pastes the snippet); until then
the pages say that no chat is connected. ``?lang=ru`` shows a page in
Russian (``<html lang="ru">``: the widget speaks Russian there), ``?lang=en``
in English; the switch on each page keeps the visitor on the same page.
UTM tags in the address (``?utm_source=...``) are read by the widget itself.

Routes (relative to the mount point):

``GET /``, ``GET /product``, ``GET /privacy``
    The pages (HTML); the privacy page is what the widget's consent box
    links to in the demo.
``GET /_widget``
    ``{"src": <the script URL or null>}``.
``POST /_widget`` ``{"src": "http(s)://.../widget/<key>.js"}``
    The script the pages embed (``null`` removes it); 400 ``invalid_src``
    for anything but an http(s) URL of a widget script.

Config keys: ``widget_src`` (the script URL from the start; default none).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, render_template, request

__all__ = ["PAGES", "create_app", "create_blueprint"]

#: a widget script's URL, as ``bridge widget create`` prints it
_SRC = re.compile(r"^https?://[^\s\"'<>]+/widget/[A-Za-z0-9_-]+\.js$")

#: the shop's products: (slug, English name, Russian name, price in roubles)
PRODUCTS = (
    ("sencha", "Green tea Sencha", "Зелёный чай Сенча", 690),
    ("assam", "Black tea Assam", "Чёрный чай Ассам", 540),
    ("arabica", "Coffee Arabica, 250 g", "Кофе Арабика, 250 г", 890),
)

#: the two pages: route -> (English title, Russian title)
PAGES = {
    "home": ("Tea & Coffee Demo Shop", "Демо-магазин чая и кофе"),
    "product": ("Green tea Sencha — Demo Shop", "Зелёный чай Сенча — Демо-магазин"),
    "privacy": ("Privacy policy — Demo Shop", "Политика конфиденциальности — Демо-магазин"),
}


def _lang() -> str:
    return "ru" if (request.args.get("lang") or "").lower().startswith("ru") else "en"


def create_blueprint(config: dict[str, Any] | None = None) -> Blueprint:
    """The shop's pages and its ``/_widget`` control route; the widget's
    script URL is kept in this blueprint (process memory, like the
    sandboxes' state)."""
    values = dict(config or {})
    unknown = set(values) - {"widget_src"}
    if unknown:
        raise ValueError(f"unknown demo shop config keys: {sorted(unknown)}")
    widget: dict[str, str | None] = {"src": values.get("widget_src")}
    if widget["src"] is not None and not _SRC.match(str(widget["src"])):
        raise ValueError("widget_src must be the http(s) URL of a widget script")

    bp = Blueprint(
        "site",
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )

    def page(name: str) -> str:
        lang = _lang()
        titles = PAGES[name]
        return render_template(
            "shop.html",
            page=name,
            lang=lang,
            title=titles[1] if lang == "ru" else titles[0],
            products=PRODUCTS,
            widget_src=widget["src"],
        )

    @bp.get("/")
    def home() -> str:
        return page("home")

    @bp.get("/product")
    def product() -> str:
        return page("product")

    @bp.get("/privacy")
    def privacy() -> str:
        return page("privacy")

    @bp.get("/_widget")
    def widget_get() -> Response:
        return jsonify(widget)

    @bp.post("/_widget")
    def widget_set() -> tuple[Response, int] | Response:
        body = request.get_json(silent=True)
        src = body.get("src") if isinstance(body, dict) else ""
        if src is not None and not (isinstance(src, str) and _SRC.match(src)):
            return jsonify(
                {
                    "error": "invalid_src",
                    "message": 'expected {"src": "http(s)://<bridge>/widget/<key>.js"} or null',
                }
            ), 400
        widget["src"] = src
        return jsonify(widget)

    return bp


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The shop as an app of its own (mounted at ``/sandbox/site``)."""
    app = Flask(__name__, static_folder=None)
    app.register_blueprint(create_blueprint(config))
    return app
