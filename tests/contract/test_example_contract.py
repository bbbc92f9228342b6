"""The example of docs/testing.md, "Conformance suites": your own backends put through
the shipped suites. Keep the two in step (tests/e2e/test_docs_testing.py checks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent_coordinator.bus import EventBus, open_bus
from agent_coordinator.bus.outbox import ParticipantStore, SqliteOutbox
from agent_coordinator.core.eventlog import ORPHAN_RUN
from agent_coordinator.core.events import Event
from agent_coordinator.testing.bus_contract import BusFactory, EventBusContract
from agent_coordinator.testing.event_log_contract import EventLogContract, EventLogFactory
from agent_coordinator.testing.participant_store_contract import ParticipantStoreContract, StoreFactory

# -- an event bus: give the suite a factory of fresh buses, and say what yours can do ----


class TestMyBus(EventBusContract):
    drains_on_close = True  # close() handles everything accepted (a broker may say False)

    @pytest.fixture
    def bus_factory(self) -> BusFactory:
        async def open_my_bus(**options: Any) -> EventBus:
            return open_bus("memory://", **options)  # yours: a fresh queue or stream prefix per call

        return open_my_bus


# -- an event log of your own: a list of (run id, event) ---------------------------------


class ListEventLog:
    def __init__(self) -> None:
        self.rows: list[tuple[str, Event]] = []

    def append(self, events: Sequence[Event], *, run_id: str | None = None) -> None:
        for event in events:
            run = run_id or next((r for r, e in reversed(self.rows) if e.id == event.causation_id), ORPHAN_RUN)
            if (run, event.id) not in {(r, e.id) for r, e in self.rows}:
                self.rows.append((run, event))

    def events(self, subject: str, *, run_id: str | None = None) -> list[Event]:
        mine = [(r, e) for r, e in self.rows if e.subject == subject]
        run_id = run_id or (mine[-1][0] if mine else None)
        return [e for r, e in mine if r == run_id]

    def close(self) -> None:
        return None


class TestListEventLog(EventLogContract):
    concurrent_handles = False  # one process's memory: no handles to share, nothing kept
    durable = False

    @pytest.fixture
    def event_log_factory(self) -> EventLogFactory:
        log = ListEventLog()
        return lambda: log  # every "handle" is the one list


# -- a participant store: every call opens another handle on the test's storage ---------


class TestMyStore(ParticipantStoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        async def open_my_store(*, claim_timeout: float) -> ParticipantStore:
            return SqliteOutbox(tmp_path / "store.sqlite", claim_timeout=claim_timeout)

        return open_my_store
