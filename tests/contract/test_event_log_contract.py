"""The shipped event log conformance suite (:mod:`agent_coordinator.testing.event_log_contract`)
run on the project's event logs: in memory, SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_coordinator.core.eventlog import MemoryEventLog, SqliteEventLog
from agent_coordinator.core.postgres import PostgresEventLog
from agent_coordinator.testing.event_log_contract import EventLogContract, EventLogFactory


class TestMemoryEventLog(EventLogContract):
    concurrent_handles = False  # one process's memory
    durable = False
    forgets = True

    @pytest.fixture
    def event_log_factory(self) -> EventLogFactory:
        log = MemoryEventLog()
        return lambda: log


class TestSqliteEventLog(EventLogContract):
    records_runs = True

    @pytest.fixture
    def event_log_factory(self, tmp_path: Path) -> EventLogFactory:
        return lambda: SqliteEventLog(tmp_path / "events.sqlite")


@pytest.mark.services
class TestPostgresEventLog(EventLogContract):
    records_runs = True

    @pytest.fixture
    def event_log_factory(self, postgres_state: str) -> EventLogFactory:
        return lambda: PostgresEventLog(postgres_state)
