"""Integration fixtures: a whole bridge as real processes (bench.stack):
redis-server with AOF started by the test, the sandbox vendors, gunicorn,
real RQ worker processes — on SQLite and (in CI) PostgreSQL."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.stack import Stack
from tests.conftest import POSTGRES_URL, migrated_database


def _stacks(tmp_path: Path, request: pytest.FixtureRequest, backend: str):  # type: ignore[no-untyped-def]
    """Stacks on databases already at the newest migration
    (``migrated_database``): a stack does not run ``bridge db upgrade`` at
    start (the migrations are tested on their own, and the canary and
    README stacks still run them)."""
    stacks: list[Stack] = []
    with ExitStack() as databases:

        def make(**kwargs) -> Stack:  # type: ignore[no-untyped-def]
            workdir = tmp_path / f"stack{len(stacks)}"
            workdir.mkdir(parents=True)
            database = databases.enter_context(
                migrated_database(request, backend, workdir / "bridge.db")
            )
            stack = Stack(workdir=workdir, database_url=database, migrate=False, **kwargs)
            stacks.append(stack)
            return stack.start()

        yield make
        for stack in stacks:  # every process gone before its database is given back
            stack.close()


@pytest.fixture
def make_stack(tmp_path: Path, request: pytest.FixtureRequest, db_backend: str):  # type: ignore[no-untyped-def]
    yield from _stacks(tmp_path, request, db_backend)


@pytest.fixture
def make_stack_once(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Like ``make_stack``, on one database only: PostgreSQL when the suite
    has one (as in CI), else SQLite. For the slower lifecycle tests whose
    storage paths the 50 × 20 tests already cover on both databases."""
    yield from _stacks(tmp_path, request, "postgres" if POSTGRES_URL else "sqlite")
