"""The shipped participant store conformance suite
(:mod:`agent_coordinator.testing.participant_store_contract`) run on the project's
stores: SQLite (a file per test) and PostgreSQL (a schema per test, dropped after)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_coordinator.bus.outbox import ParticipantStore, PostgresOutbox, SqliteOutbox
from agent_coordinator.testing.participant_store_contract import ParticipantStoreContract, StoreFactory


class TestSqliteOutbox(ParticipantStoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        async def open_store(*, claim_timeout: float) -> ParticipantStore:
            return SqliteOutbox(tmp_path / "participant.sqlite", claim_timeout=claim_timeout)

        return open_store


@pytest.mark.services
class TestPostgresOutbox(ParticipantStoreContract):
    @pytest.fixture
    def store_factory(self, postgres_state: str) -> StoreFactory:
        # postgres_state (tests/conftest.py): a URL whose search_path is a schema of this test's own.
        async def open_store(*, claim_timeout: float) -> ParticipantStore:
            return await PostgresOutbox(postgres_state, claim_timeout=claim_timeout).open()

        return open_store
