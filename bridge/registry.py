"""Adapter lookup by slug (explicit registries, no folder scanning).

The registries live in ``channel_adapters.REGISTRY`` and
``crm_adapters.REGISTRY`` as ``kind -> "module:Class"``; an adapter whose
optional library is missing is disabled with one log line (sentry-python's
integration pattern) and the others keep working.
"""

from __future__ import annotations

import importlib
import logging
from functools import cache
from typing import TYPE_CHECKING

import channel_adapters
import crm_adapters

if TYPE_CHECKING:
    from channel_adapters.base import ChannelAdapter
    from crm_adapters.base import CrmAdapter

__all__ = ["UnknownAdapter", "channel_class", "channel_kinds", "crm_class", "crm_kinds"]

log = logging.getLogger(__name__)


class UnknownAdapter(LookupError):
    pass


@cache
def _load(spec: str) -> type | None:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        log.warning("adapter %s disabled: missing library (%s)", spec, exc.name)
        return None
    loaded: type = getattr(module, attr)
    return loaded


def channel_class(kind: str) -> type[ChannelAdapter]:
    spec = channel_adapters.REGISTRY.get(kind)
    cls = _load(spec) if spec else None
    if cls is None:
        raise UnknownAdapter(f"unknown or disabled channel {kind!r}")
    return cls


def crm_class(kind: str) -> type[CrmAdapter]:
    spec = crm_adapters.REGISTRY.get(kind)
    cls = _load(spec) if spec else None
    if cls is None:
        raise UnknownAdapter(f"unknown or disabled CRM {kind!r}")
    return cls


def channel_kinds() -> tuple[str, ...]:
    return tuple(channel_adapters.REGISTRY)


def crm_kinds() -> tuple[str, ...]:
    return tuple(crm_adapters.REGISTRY)
