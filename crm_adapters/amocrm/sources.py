"""A readable name for each chat's channel: amoCRM sources (setup step).

In chat mode every chat and message carries ``source.external_id`` =
``<channel kind>-<channel account id>`` (FACTS 1.13; :func:`external_id`,
the value ``inbox.source_of`` sends). amoCRM shows a source's *name* for it
only when a source with that ``external_id`` was created through its Sources
API; the setup creates one per connected channel account, named by the
channel's title and the account's name ("WhatsApp · +1 555 0100",
"Telegram · Demo bot"), in the mapping's lead pipeline when the core passes
it on the channel link, else in the account's main pipeline (``is_main`` of
``GET /api/v4/leads/pipelines``, FACTS 1.8).

The Sources API is NOT in the stored contracts (amoCRM developers:
crm_platform/sources-api, not in the stored contracts): every field below is
UNCONFIRMED. ``GET /api/v4/sources`` lists ``_embedded.sources[{id, name,
external_id, pipeline_id, default, origin_code, services}]``; ``POST`` takes
``[{"name", "external_id", "pipeline_id", "request_id"}]`` and answers
``_embedded.sources``. The field names are also those of the official PHP
SDK's ``SourceModel`` (amocrm/amocrm-api-php). Idempotent: the sources are
read first and matched by ``external_id``; an existing one is left as it is
(a rep may have renamed it). An account without the API answers 404: the
chats then show the bare ``external_id``; that is logged once per account
and is no failure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bridge.errors import NotFoundError, PermanentError
from bridge.model import ChannelLink

from .client import echoed, embedded

if TYPE_CHECKING:
    from .adapter import AmoCrmAdapter

__all__ = [
    "SOURCES_PATH",
    "ensure_sources",
    "external_id",
    "forget_unavailable",
    "source_name",
]

log = logging.getLogger(__name__)

SOURCES_PATH = "/api/v4/sources"
#: longest name we send (the API's own limit is not known: UNCONFIRMED)
NAME_MAX = 255

_unavailable: set[str] = set()  # accounts already logged as without the API
_unavailable_lock = threading.Lock()


def forget_unavailable() -> None:
    """Forget which accounts were logged as without the API (tests)."""
    with _unavailable_lock:
        _unavailable.clear()


def external_id(kind: str, account_id: str) -> str:
    """``source.external_id`` of a channel account's chats: ``whatsapp-3``."""
    return f"{kind}-{account_id}"


def source_name(title: str, name: str) -> str:
    """The name a rep reads: ``"<channel title> · <account name>"``, or
    either one alone when the other is empty or the same."""
    title, name = title.strip(), name.strip()
    if not title or not name or title == name:
        text = title or name
    else:
        text = f"{title} · {name}"
    return text[:NAME_MAX]


def ensure_sources(adapter: AmoCrmAdapter, channels: Sequence[ChannelLink]) -> dict[str, int]:
    """external id -> source id for every channel account in ``channels``,
    creating the missing sources in one call; ``{}`` when the account has
    no Sources API (404)."""
    wanted = {external_id(link.kind, link.id): link for link in channels}
    if not wanted:
        return {}
    try:
        existing = adapter.api.pages(SOURCES_PATH, "sources")
    except NotFoundError:
        _log_unavailable(adapter)
        return {}
    found = {
        str(s["external_id"]): int(s["id"])
        for s in existing
        if s.get("external_id") in wanted and s.get("id") is not None
    }
    missing = [key for key in wanted if key not in found]
    if missing:
        found.update(_create(adapter, [(key, wanted[key]) for key in missing]))
    return found


def _create(adapter: AmoCrmAdapter, items: Sequence[tuple[str, ChannelLink]]) -> dict[str, int]:
    main: list[int] = []  # the main pipeline, read once when a link has none

    def pipeline(link: ChannelLink) -> int:
        # the mapping's pipeline when the core puts it on the link (a core
        # change asked for); until then the account's main pipeline
        given = str(getattr(link, "pipeline", "") or "").strip()
        if given.isdigit():
            return int(given)
        if not main:
            main.append(_main_pipeline(adapter))
        return main[0]

    body = adapter.api.json(
        "POST",
        SOURCES_PATH,
        json=[
            {
                "name": source_name(link.title, link.name) or key,
                "external_id": key,
                "pipeline_id": pipeline(link),
                "request_id": key,
            }
            for key, link in items
        ],
    )
    keys = [key for key, _ in items]
    answers = echoed(embedded(body, "sources"), keys)  # by request_id, else in order
    made = {
        key: int(answer["id"])
        for key, answer in zip(keys, answers, strict=True)
        if answer is not None and answer.get("id") is not None
    }
    lost = [key for key in keys if key not in made]
    if lost:
        raise PermanentError(f"amoCRM did not create the source(s) {', '.join(lost)}")
    return made


def _main_pipeline(adapter: AmoCrmAdapter) -> int:
    """The id of the account's main pipeline (FACTS 1.8 ``is_main``; the
    first one listed when none says so)."""
    body = adapter.api.json("GET", "/api/v4/leads/pipelines")
    pipelines: list[Mapping[str, Any]] = embedded(body, "pipelines")
    chosen = next((p for p in pipelines if p.get("is_main")), pipelines[0] if pipelines else None)
    if chosen is None or chosen.get("id") is None:
        raise PermanentError("amoCRM listed no pipeline for the chats' sources")
    return int(chosen["id"])


def _log_unavailable(adapter: AmoCrmAdapter) -> None:
    account = str(adapter.settings.amo_account_id or adapter.account.account_id or "")
    with _unavailable_lock:
        if account in _unavailable:
            return
        _unavailable.add(account)
    log.info(
        "amoCRM account %s has no sources API (404): its chats show the channel's "
        "external id, not a name",
        account,
    )
