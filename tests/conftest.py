"""Fixtures shared by the test modules."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.services import POSTGRES_URL, require_service


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A PostgreSQL state URL whose tables live in a schema of its own, dropped after."""
    require_service("postgresql")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
async def postgres_state() -> AsyncIterator[str]:
    """A PostgreSQL state URL whose tables live in a schema of this test's own."""
    async with postgres_schema() as url:
        yield url
