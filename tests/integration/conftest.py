"""Integration fixtures: a whole bridge as real processes (bench.stack):
redis-server with AOF started by the test, the sandbox vendors, gunicorn,
real RQ worker processes — on SQLite and (in CI) PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bench.stack import Stack
from tests.conftest import DATABASES, POSTGRES_URL, _with_search_path


@pytest.fixture(params=DATABASES)
def stack_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None  # the stack's own SQLite file
        return
    schema = f"it_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_search_path(POSTGRES_URL, schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def make_stack(tmp_path: Path, stack_database: str | None):  # type: ignore[no-untyped-def]
    stacks: list[Stack] = []

    def make(**kwargs) -> Stack:  # type: ignore[no-untyped-def]
        stack = Stack(workdir=tmp_path / f"stack{len(stacks)}", database_url=stack_database, **kwargs)
        stacks.append(stack)
        return stack.start()

    yield make
    for stack in stacks:
        stack.close()
