"""Webhook endpoints: a thin dispatcher over the adapters' edges.

Every channel request goes the same way — body limits, the adapter's
``verify``, its cheap ``edge`` check, one INSERT into the ingest journal
(:mod:`bridge.pipeline.inbound.journal`), then the answer the adapter says
the provider expects (``answer``: a JSON 2xx, plain text, a confirmation
string). A 2xx means "durably accepted": the raw delivery is committed
before the answer; a worker parses it. CRM webhooks are parsed and stored
in the request (their events are small and change the outbox at once).
Bad input gets a 4xx with a JSON error that names the problem (403 for a
wrong secret or signature), never a 500; a redelivery gets 2xx and changes
nothing. The routes:

* ``POST|GET /webhooks/<kind>/<key>``: one channel account (its random
  key); ``GET`` is the adapter's verification handshake.
* ``POST|GET /webhooks/<kind>/app``: every account of an app-routed channel
  (one URL per provider app): the adapter verifies the app's signature and
  names the accounts the delivery is for.
* ``POST /webhooks/crm/<crm>/<key>``, ``.../route/<route key>`` (an
  app-level CRM webhook that names the tenant by a key its setup
  registered) and ``.../install`` (an install event).
* ``POST /webhooks/crm/<crm>/app``: one URL for every account of a CRM app
  whose webhooks name the account in the body (the adapter class's
  ``app_webhook``): verified once with the app's settings, split per CRM
  account, each part parsed by its tenant's adapter and stored for that
  tenant only; an account with no tenant here is skipped. 2xx once every
  part is committed; 404 for a CRM without app-level webhooks.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Request, Response, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from bridge import metrics
from bridge.errors import SignatureError, WebhookError
from bridge.model import CrmEvent, RawDelivery, WebhookAnswer, WebhookRequest
from bridge.pipeline.inbound import AccountRef
from bridge.pipeline.inbound.journal import Waker, record
from bridge.pipeline.outbound import accept_crm_events
from bridge.registry import UnknownAdapter, channel_class, crm_class
from bridge.runtime import Runtime, app_runtime
from bridge.tables import ChannelAccount, ChannelStatus, CrmRoute, Tenant
from channel_adapters.base import ChannelAdapter

__all__ = ["bp", "cached_account", "reset_cache", "to_webhook_request", "waker"]

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)

NOT_FOUND = {"error": "not_found", "message": "no such webhook"}


def runtime() -> Runtime:
    return app_runtime()


@dataclass
class _Cached:
    account: AccountRef
    adapter: ChannelAdapter
    expires: float


class _AdapterCache:
    """Channel adapters by webhook key, for a short while: the hot path
    should not decrypt credentials on every update."""

    TTL = 30.0

    def __init__(self) -> None:
        self._items: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def get(self, rt: Runtime, key: str) -> _Cached | None:
        now = time.monotonic()
        with self._lock:
            item = self._items.get(key)
            if item and item.expires > now:
                return item
        with rt.read_session() as session:
            account = session.scalars(
                select(ChannelAccount).where(
                    ChannelAccount.key == key, ChannelAccount.status == ChannelStatus.ACTIVE
                )
            ).first()
            if account is None:
                return None
            ref = AccountRef(
                account.id, account.tenant_id, account.kind, *rt.ingest_view(account.tenant_id)
            )
            item = _Cached(ref, rt.channel_adapter(account), now + self.TTL)
        with self._lock:
            self._items[key] = item
        return item

    def by_external_id(self, rt: Runtime, kind: str, external_id: str) -> _Cached | None:
        """The active account of ``kind`` whose own id on the channel is
        ``external_id`` (app-routed deliveries name accounts that way)."""
        with rt.read_engine.connect() as conn:
            key = conn.scalar(
                select(ChannelAccount.key).where(
                    ChannelAccount.kind == kind,
                    ChannelAccount.external_id == external_id,
                    ChannelAccount.status == ChannelStatus.ACTIVE,
                )
            )
        return self.get(rt, key) if key else None

    def by_route(self, rt: Runtime, cls: Any, routed: str) -> list[_Cached]:
        """The accounts one of ``route``'s answers names: an account by its
        own id, or every account of a group (``group:<id>``: the accounts
        whose ``group_setting`` is that id, e.g. a WhatsApp Business
        Account's numbers, for a notice about the whole group)."""
        prefix = "group:"
        if not routed.startswith(prefix) or not cls.group_setting:
            found = self.by_external_id(rt, cls.kind, routed)
            return [found] if found is not None else []
        group = routed[len(prefix) :]
        with rt.read_engine.connect() as conn:
            rows = conn.execute(
                select(ChannelAccount.key, ChannelAccount.settings).where(
                    ChannelAccount.kind == cls.kind,
                    ChannelAccount.status == ChannelStatus.ACTIVE,
                )
            ).all()
        keys = [k for k, s in rows if group and str((s or {}).get(cls.group_setting)) == group]
        return [c for c in (self.get(rt, k) for k in keys) if c is not None]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_channels = _AdapterCache()
_wakers: weakref.WeakKeyDictionary[Runtime, Waker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def cached_account(rt: Runtime, key: str) -> _Cached | None:
    """The active channel account with this key and its adapter (cached:
    the hot path does not decrypt credentials on every request)."""
    return _channels.get(rt, key)


def waker(rt: Runtime) -> Waker:
    """The runtime's journal waker: this process's requests wake the
    normaliser through its thread, never before their 2xx."""
    with _wakers_lock:
        found = _wakers.get(rt)
        if found is None:
            found = _wakers[rt] = Waker(rt)
        return found


def to_webhook_request(req: Request, public_url: str) -> WebhookRequest:
    """The provider's request as adapters see it. ``url`` is rebuilt from the
    public URL (what the sender signed), not from proxy-rewritten headers."""
    query = req.query_string.decode("latin-1")
    url = f"{public_url}{req.path}" + (f"?{query}" if query else "")
    # The raw bytes first (signatures are over them); the form is then parsed
    # from the cached copy. The other order leaves the body empty.
    body = req.get_data(cache=True)
    form = req.form.to_dict() if req.mimetype == "application/x-www-form-urlencoded" else {}
    return WebhookRequest(
        method=req.method,
        url=url,
        headers={k.lower(): v for k, v in req.headers.items()},
        body=body,
        query=req.args.to_dict(),
        form=form,
    )


def _check_body(max_body: int, content_types: tuple[str, ...]) -> None:
    length = request.content_length
    if length is not None and length > max_body:
        raise WebhookError(f"body larger than {max_body} bytes", code="too_large", status_code=413)
    if request.mimetype not in content_types:
        raise WebhookError(
            f"content type must be {' or '.join(content_types)}",
            code="unsupported_media_type",
            status_code=415,
        )
    if length is None and len(request.get_data(cache=True)) >= max_body:
        # A streamed (chunked) body has no Content-Length: Werkzeug stops
        # reading it at MAX_CONTENT_LENGTH without an error, so a body that
        # reaches the limit may have been cut short. Refuse it whole.
        raise WebhookError(f"body larger than {max_body} bytes", code="too_large", status_code=413)


def _error(exc: WebhookError) -> tuple[Response, int]:
    if isinstance(exc, SignatureError):
        log.warning("webhook rejected: %s (%s)", exc.code, request.path.rsplit("/", 1)[0])
    return jsonify(exc.to_json()), exc.status_code


def _answer(answer: WebhookAnswer) -> Response:
    if isinstance(answer.body, Mapping):
        response = jsonify(dict(answer.body))
    else:
        response = Response(answer.body, content_type=answer.content_type)
    response.status_code = answer.status
    return response


@bp.route("/webhooks/<kind>/<key>", methods=["GET", "POST"])
def channel_webhook(kind: str, key: str) -> ResponseReturnValue:
    rt = runtime()
    cached = _channels.get(rt, key)
    if cached is None or cached.account.kind != kind:
        metrics.rejected(rt.redis, "unknown", "not_found")  # the URL's kind is not ours to trust
        return jsonify(NOT_FOUND), 404
    adapter = cached.adapter
    try:
        if request.method == "GET":
            return _answer(adapter.handshake(to_webhook_request(request, rt.settings.public_url)))
        _check_body(min(adapter.max_body, rt.settings.max_body), adapter.content_types)
        webhook = to_webhook_request(request, rt.settings.public_url)
        adapter.verify(webhook)
        deliveries = adapter.edge(webhook)
    except WebhookError as exc:
        metrics.rejected(rt.redis, kind, exc.code)
        return _error(exc)
    record(rt, cached.account, deliveries, received_at=webhook.received_at, waker=waker(rt))
    return _answer(adapter.answer(deliveries))


@bp.route("/webhooks/<kind>/app", methods=["GET", "POST"])
def channel_app_webhook(kind: str) -> ResponseReturnValue:
    """One URL for every account of an app-routed channel (a Meta app's
    phone numbers): verified with the app's secret, then stored per account
    the adapter names (an account not connected here is not ours: left)."""
    rt = runtime()
    try:
        cls = channel_class(kind)
    except UnknownAdapter:
        return jsonify(NOT_FOUND), 404
    if not cls.app_routed:
        return jsonify(NOT_FOUND), 404
    app = rt.channel_app(kind)
    try:
        webhook = to_webhook_request(request, rt.settings.public_url)
        if request.method == "GET":
            return _answer(cls.app_handshake(app, webhook))
        _check_body(min(cls.max_body, rt.settings.max_body), cls.content_types)
        cls.verify_app(app, webhook)
        stored: list[RawDelivery] = []
        for routed in cls.route(app, webhook):
            accounts = _channels.by_route(rt, cls, routed)
            if not accounts:
                log.info("%s delivery for an account not connected here: left", kind)
            for cached in accounts:
                deliveries = cached.adapter.edge(webhook)
                record(
                    rt, cached.account, deliveries, received_at=webhook.received_at, waker=waker(rt)
                )
                stored.extend(deliveries)
    except WebhookError as exc:
        metrics.rejected(rt.redis, kind, exc.code)
        return _error(exc)
    return _answer(cls.app_answer(app, stored))


@bp.post("/webhooks/crm/<crm>/<key>")
def crm_webhook(crm: str, key: str) -> ResponseReturnValue:
    """A tenant's own webhook URL (its random key in the path)."""
    rt = runtime()
    with rt.read_engine.connect() as conn:
        tenant_id = conn.scalar(
            select(Tenant.id).where(Tenant.webhook_key == key, Tenant.crm_kind == crm)
        )
    if tenant_id is not None and _is_echo(rt, crm):
        return _answer(WebhookAnswer())
    return _crm_webhook(rt, tenant_id)


def _is_echo(rt: Runtime, crm: str) -> bool:
    """The webhook reports only the bridge's own writes (the adapter's
    ``echo``: amoCRM's webhook for each note the bridge wrote): answered
    before the tenant's adapter is built; nothing in it is stored."""
    try:
        cls = crm_class(crm)
        _check_body(rt.settings.max_body, cls.content_types)
    except (UnknownAdapter, WebhookError):
        return False  # the ordinary path answers it
    return cls.echo(to_webhook_request(request, rt.settings.public_url))


@bp.post("/webhooks/crm/<crm>/install")
def crm_install_event(crm: str) -> ResponseReturnValue:
    """An app install the CRM announces by POSTing to the app's install
    handler (Bitrix24's ONAPPINSTALL, tokens in the body): one URL for every
    portal; the adapter verifies it, the tenant is created or re-authorised."""
    from bridge import admin
    from bridge.errors import BridgeError
    from bridge.registry import crm_class

    rt = runtime()
    try:
        cls = crm_class(crm)
    except UnknownAdapter:
        return jsonify(NOT_FOUND), 404
    if not cls.has_install_event:
        return jsonify(NOT_FOUND), 404  # this CRM installs through OAuth only
    mapping = request.args.get("mapping") or f"{crm}.yaml"
    problem = admin.check_mapping(rt, mapping)
    if problem:
        return jsonify({"error": "bad_mapping", "message": problem}), 400
    try:
        _check_body(rt.settings.max_body, cls.content_types)
        webhook = to_webhook_request(request, rt.settings.public_url)
        installed = cls.install_event(
            rt.crm_app(crm),
            webhook,
            http=rt.http(rt.settings.api_bases.get(crm) or cls.default_api_base()),
        )
    except WebhookError as exc:
        return _error(exc)
    except BridgeError as exc:
        log.warning("install event for %s failed: %s", crm, type(exc).__name__)
        return jsonify({"error": "install_failed", "message": exc.message}), 502
    if installed is None:
        return jsonify(NOT_FOUND), 404
    tenant_id, created = admin.upsert_oauth_tenant(
        rt, crm_kind=crm, installed=installed, mapping=mapping
    )
    try:
        admin.after_install(rt, tenant_id)
    except BridgeError as exc:
        # The tenant is stored; its setup did not finish. A non-2xx answer
        # leaves the CRM's install unfinished, so the admin installs again.
        log.warning("setup after install for %s failed: %s", crm, type(exc).__name__)
        return jsonify({"error": "setup_failed", "message": exc.message}), 502
    return jsonify({"ok": True, "tenant": tenant_id, "created": created})


@bp.post("/webhooks/crm/<crm>/route/<route_key>")
def crm_routed_webhook(crm: str, route_key: str) -> ResponseReturnValue:
    """An app-level webhook (one URL for all tenants, e.g. amoCRM's chat
    channel ``.../route/:scope_id``): the key names the tenant; the adapter's
    signature check decides whether the request is genuine."""
    rt = runtime()
    with rt.read_engine.connect() as conn:
        tenant_id = conn.scalar(
            select(CrmRoute.tenant_id).where(
                CrmRoute.crm_kind == crm, CrmRoute.route_key == route_key
            )
        )
    return _crm_webhook(rt, tenant_id)


@bp.post("/webhooks/crm/<crm>/app")
def crm_app_webhook(crm: str) -> ResponseReturnValue:
    """One URL for every account of the CRM's app (HubSpot's CRM-object
    webhooks, the account in each event): the adapter class verifies the
    request with the app's settings and splits it per account; each part
    is parsed by its tenant's adapter (not verified again) and accepted for
    that tenant alone. An account not connected here is skipped, and so is
    a part its adapter cannot parse (the other accounts' events are not
    lost for it; a request where nothing parses gets its error)."""
    rt = runtime()
    try:
        cls = crm_class(crm)
    except UnknownAdapter:
        return jsonify(NOT_FOUND), 404
    if not cls.has_app_webhooks:
        return jsonify(NOT_FOUND), 404
    try:
        _check_body(rt.settings.max_body, cls.content_types)
        webhook = to_webhook_request(request, rt.settings.public_url)
        parts = cls.app_webhook(rt.crm_app(crm), webhook)
    except WebhookError as exc:
        return _error(exc)
    if parts is None:
        return jsonify(NOT_FOUND), 404
    parsed, problem = _parse_parts(rt, crm, parts)
    if problem is not None and not parsed:
        return _error(problem)
    for tenant_id, events in parsed:
        accept_crm_events(rt, tenant_id, events)
    return _answer(WebhookAnswer())


def _parse_parts(
    rt: Runtime, crm: str, parts: Mapping[str, WebhookRequest]
) -> tuple[list[tuple[int, list[CrmEvent]]], WebhookError | None]:
    """Each account's part parsed by its tenant's adapter: (tenant id,
    events) per tenant found, and the first parse error met."""
    with rt.read_session() as session:
        tenants = {
            str(t.crm_account_id): t
            for t in session.scalars(
                select(Tenant).where(Tenant.crm_kind == crm, Tenant.crm_account_id.in_(list(parts)))
            )
        }
        parsed: list[tuple[int, list[CrmEvent]]] = []
        problem: WebhookError | None = None
        for account_id, part in parts.items():
            tenant = tenants.get(account_id)
            if tenant is None:
                # a CRM account id names a business, not a person
                log.info("%s app webhook for account %s: no tenant here, skipped", crm, account_id)
                continue
            try:
                parsed.append((tenant.id, rt.crm_adapter(tenant).parse_webhook(part)))
            except WebhookError as exc:
                log.warning(
                    "%s app webhook part for tenant %s refused: %s", crm, tenant.id, exc.code
                )
                problem = problem or exc
    return parsed, problem


def _crm_webhook(rt: Runtime, tenant_id: int | None) -> ResponseReturnValue:
    if tenant_id is None:
        return jsonify(NOT_FOUND), 404
    with rt.read_session() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:  # deleted since its key was looked up
            return jsonify(NOT_FOUND), 404
        try:
            adapter = rt.crm_adapter(tenant)
        except UnknownAdapter:
            return jsonify(NOT_FOUND), 404
    try:
        _check_body(rt.settings.max_body, adapter.content_types)
        webhook = to_webhook_request(request, rt.settings.public_url)
        adapter.verify_webhook(webhook)
        events = adapter.parse_webhook(webhook)
    except WebhookError as exc:
        return _error(exc)
    accept_crm_events(rt, tenant_id, events)
    return _answer(adapter.answer(events))


def reset_cache() -> None:
    """Forget cached channel adapters (after credentials change)."""
    _channels.clear()
