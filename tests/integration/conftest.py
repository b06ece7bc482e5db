"""Integration fixtures: a whole bridge as real processes (bench.stack):
redis-server with AOF started by the test, the sandbox vendors, gunicorn,
real RQ worker processes — on SQLite and (in CI) PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import Stack
from tests.conftest import DATABASES, postgres_schema


@pytest.fixture(params=DATABASES)
def stack_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None  # the stack's own SQLite file
        return
    with postgres_schema("it") as url:
        yield url


@pytest.fixture
def make_stack(tmp_path: Path, stack_database: str | None):  # type: ignore[no-untyped-def]
    stacks: list[Stack] = []

    def make(**kwargs) -> Stack:  # type: ignore[no-untyped-def]
        stack = Stack(
            workdir=tmp_path / f"stack{len(stacks)}", database_url=stack_database, **kwargs
        )
        stacks.append(stack)
        return stack.start()

    yield make
    for stack in stacks:
        stack.close()


def _one_database_stacks(tmp_path: Path, postgres: bool):  # type: ignore[no-untyped-def]
    stacks: list[Stack] = []
    schemas = []

    def make(**kwargs) -> Stack:  # type: ignore[no-untyped-def]
        database = None
        if postgres:
            schema = postgres_schema("it")
            database = schema.__enter__()
            schemas.append(schema)
        stack = Stack(workdir=tmp_path / f"stack{len(stacks)}", database_url=database, **kwargs)
        stacks.append(stack)
        return stack.start()

    yield make
    for stack in stacks:
        stack.close()
    for schema in schemas:
        schema.__exit__(None, None, None)


@pytest.fixture
def make_stack_once(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Like ``make_stack``, on one database only: PostgreSQL when the suite
    has one (as in CI), else SQLite. For the slower lifecycle tests whose
    storage paths the 50 × 20 tests already cover on both databases (keeps
    ``make test`` well under 15 minutes on 2 cores)."""
    from tests.conftest import POSTGRES_URL

    yield from _one_database_stacks(tmp_path, postgres=bool(POSTGRES_URL))
