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
