"""Integration fixtures: a whole bridge as real processes (bench.stack):
redis-server with AOF started by the test, the sandbox vendors, gunicorn,
real RQ worker processes — on SQLite and (in CI) PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.stack import Stack
from tests.conftest import DATABASES, POSTGRES_URL, with_search_path


@pytest.fixture(params=DATABASES)
def stack_database(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _stacks(tmp_path: Path, request: pytest.FixtureRequest, backend: str):  # type: ignore[no-untyped-def]
    """Stacks on databases already at the newest migration (a copy of this
    worker's SQLite template, or a schema of its PostgreSQL pool): a stack
    does not run ``bridge db upgrade`` at start (the migrations are tested
    on their own, and the canary and README stacks still run them)."""
    stacks: list[Stack] = []
    schemas: list[str] = []
    pool = request.getfixturevalue("_schema_pool") if backend == "postgres" else None

    def make(**kwargs) -> Stack:  # type: ignore[no-untyped-def]
        workdir = tmp_path / f"stack{len(stacks)}"
        workdir.mkdir(parents=True)
        if backend == "sqlite":
            path = workdir / "bridge.db"
            shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
            database = f"sqlite:///{path}"
        else:
            schemas.append(pool.take())
            database = with_search_path(POSTGRES_URL, schemas[-1])
        stack = Stack(workdir=workdir, database_url=database, migrate=False, **kwargs)
        stacks.append(stack)
        return stack.start()

    yield make
    for stack in stacks:
        stack.close()
    for schema in schemas:
        pool.give_back(schema)


@pytest.fixture
def make_stack(tmp_path: Path, request: pytest.FixtureRequest, stack_database: str):  # type: ignore[no-untyped-def]
    yield from _stacks(tmp_path, request, stack_database)


@pytest.fixture
def make_stack_once(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Like ``make_stack``, on one database only: PostgreSQL when the suite
    has one (as in CI), else SQLite. For the slower lifecycle tests whose
    storage paths the 50 × 20 tests already cover on both databases."""
    yield from _stacks(tmp_path, request, "postgres" if POSTGRES_URL else "sqlite")
