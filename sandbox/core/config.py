"""Vendor configuration: defaults, start-up overrides, run-time updates.

Every CRM sandbox keeps its settings as one JSON-able dict: ``create_app(config)``
deep-merges the overrides over the vendor's ``DEFAULTS`` (nested objects are
merged, lists and the keys named in ``replace`` are replaced whole), and
``POST /_config`` applies run-time changes to the keys in ``runtime_keys`` only.
The vendor supplies ``check(cfg)``, which raises ``ValueError`` naming the bad
key; the small validators below keep those checks short and their messages
alike.

    SETTINGS = Settings(DEFAULTS, check=_check, frozen={"portals"})
    cfg = SETTINGS.build({"per_10s": 5})
    cfg = SETTINGS.update(cfg, {"per_10s": 7})   # ValueError for "portals"
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterable
from typing import Any

__all__ = [
    "Settings",
    "merge",
    "require_bools",
    "require_positive_ints",
    "require_numbers",
]


def merge(base: dict[str, Any], over: dict[str, Any],
          replace: Collection[str] = ()) -> dict[str, Any]:
    """A deep copy of ``base`` with ``over`` merged in: nested dicts merge key by
    key, anything else (and every top-level key in ``replace``) is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in replace and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Settings:
    """One vendor's configuration rules (see the module docstring)."""

    def __init__(self, defaults: dict[str, Any], *, check: Callable[[dict[str, Any]], None],
                 frozen: Iterable[str] = (), replace: Iterable[str] = (),
                 prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.defaults = defaults
        self.check = check
        #: keys only ``create_app`` sets; ``POST /_config`` refuses them
        self.frozen = frozenset(frozen)
        #: top-level keys replaced whole instead of merged
        self.replace = frozenset(replace)
        #: completes a merged config before the check (e.g. fills per-account defaults)
        self.prepare = prepare

    @property
    def runtime_keys(self) -> frozenset[str]:
        return frozenset(self.defaults) - self.frozen

    def build(self, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults deep-merged with ``overrides``; raises ``ValueError``."""
        cfg = merge(self.defaults, overrides or {}, self.replace)
        if self.prepare is not None:
            cfg = self.prepare(cfg)
        self._check(cfg)
        return cfg

    def update(self, cfg: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """A new config with run-time ``values`` applied; raises ``ValueError``."""
        bad = set(values) - self.runtime_keys
        if bad:
            raise ValueError(f"not changeable at run time (or unknown): {sorted(bad)}")
        new = merge(cfg, values, self.replace)
        self._check(new)
        return new

    def _check(self, cfg: dict[str, Any]) -> None:
        unknown = set(cfg) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        self.check(cfg)


# -- validators (each raises ValueError naming the key) ------------------------------------


def require_bools(cfg: dict[str, Any], keys: Iterable[str]) -> None:
    for key in keys:
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be a boolean")


def require_positive_ints(cfg: dict[str, Any], keys: Iterable[str]) -> None:
    for key in keys:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{key} must be a positive integer")


def require_numbers(cfg: dict[str, Any], keys: Iterable[str]) -> None:
    """Numbers >= 0 (booleans refused)."""
    for key in keys:
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], (int, float)) or cfg[key] < 0:
            raise ValueError(f"{key} must be a number >= 0")
