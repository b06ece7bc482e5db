"""Small helpers the benchmarks share: percentiles, plain-text tables, the
one-line JSON output, a throw-away PostgreSQL schema, the sandbox's
request statistics."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import requests

__all__ = [
    "emit_json",
    "parse_iso",
    "percentile",
    "postgres_schema",
    "rnd",
    "sandbox_stats",
    "table",
]


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (``p`` in 0..100); None when empty."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    k = (len(data) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return float(data[lo] + (data[hi] - data[lo]) * (k - lo))


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned first column, right-aligned figures."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [
        max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
        for i, h in enumerate(header)
    ]

    def line(items: Sequence[str]) -> str:
        out = [str(items[0]).ljust(widths[0])]
        out += [str(v).rjust(w) for v, w in zip(items[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([title, rule, line(list(header)), rule, *(line(r) for r in cells), rule])


def emit_json(figures: dict[str, Any]) -> None:
    """Exactly one line of JSON on stdout."""
    print(json.dumps(figures, separators=(",", ":"), sort_keys=True), flush=True)


def parse_iso(value: str) -> float:
    """``2026-01-02T03:04:05.678Z`` -> Unix seconds."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@contextmanager
def postgres_schema(url: str | None, prefix: str = "bench") -> Iterator[str | None]:
    """For a PostgreSQL URL: a fresh schema (dropped afterwards) and the URL
    that puts it first on the search path; SQLite/None pass through."""
    if not url or not url.startswith(("postgresql", "postgres")):
        yield url
        return
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def sandbox_stats(
    sandbox_url: str,
    since: float | None = None,
    *,
    with_requests: bool = True,
    crm: str = "hubspot",
) -> dict[str, Any]:
    """A sandbox CRM's ``GET /_stats`` (API requests it received); ``crm``:
    ``hubspot`` (the default) or ``amocrm``."""
    params: dict[str, Any] = {}
    if since is not None:
        params["since"] = repr(since)
    if not with_requests:
        params["requests"] = "0"
    r = requests.get(f"{sandbox_url}/{crm}/_stats", params=params, timeout=30)
    r.raise_for_status()
    return r.json()
