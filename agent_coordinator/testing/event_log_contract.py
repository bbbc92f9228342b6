"""The event log conformance suite: :class:`EventLogContract`.

An event log (:class:`~agent_coordinator.core.eventlog.EventLog`) is ready when it
passes this suite. To run it on yours, subclass it in a test module and give it an
``event_log_factory`` fixture::

    import pytest

    from agent_coordinator.testing.event_log_contract import EventLogContract, EventLogFactory


    class TestMyEventLog(EventLogContract):
        forgets = False  # capability flags: set them honestly

        @pytest.fixture
        def event_log_factory(self, tmp_path) -> EventLogFactory:
            return lambda: MyEventLog(tmp_path / "events.db")

The suite closes every log it opens. A capability a log lacks is a flag set to
False, which skips the tests that need it; never edit the tests for a backend.
This module imports pytest: import it from your tests only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Protocol, cast

import pytest

from agent_coordinator.core.eventlog import ORPHAN_RUN, EventLog, RunRecord
from agent_coordinator.core.events import Event, EventFactory
from agent_coordinator.testing.suite import ConformanceSuite

__all__ = ["EventLogContract", "EventLogFactory", "ForgettingEventLog", "RunRecordingEventLog"]

EventLogFactory = Callable[[], EventLog]
"""Opens a handle on the test's event log: every call another handle on the same
log (several processes sharing one file, say), fresh for each test."""


class ForgettingEventLog(EventLog, Protocol):
    """A log that can drop a workflow's events (a long-lived process bounding its memory)."""

    def forget(self, subject: str) -> None: ...


class RunRecordingEventLog(EventLog, Protocol):
    """A log that records what each run id stands for and answers the CLI's questions."""

    def begin_run(self, run_id: str, *, workflow: str, mode: str, app: str | None = None) -> RunRecord: ...

    def run(self, run_id: str) -> RunRecord | None: ...

    def all_runs(self) -> list[RunRecord]: ...

    def runs(self, subject: str) -> list[str]: ...

    def subjects(self) -> list[str]: ...

    def latest(self) -> list[tuple[str, str, Event]]: ...

    def export(self) -> Iterator[str]: ...


def _chain(subject: str, *types: str, seed: int = 0) -> list[Event]:
    """Events of one workflow, each caused by the one before (the first by nothing)."""
    factory = EventFactory(seed=seed)
    chain: list[Event] = []
    for type_ in types:
        chain.append(
            factory.event(
                type_,
                subject=subject,
                source="contract-test",
                data={"step": len(chain), "text": "naïve — 東京"},
                cause=chain[-1] if chain else None,
            )
        )
    return chain


def _ids(events: list[Event]) -> list[str]:
    return [e.id for e in events]


class EventLogContract(ConformanceSuite):
    """The :class:`~agent_coordinator.core.eventlog.EventLog` contract, as tests a log must pass.

    * ``append`` is idempotent per (run id, event id): an event appended again (a
      re-run node, a redelivered handler) keeps one copy, in its first place -- so
      the last event of a finished run is still its terminal event;
    * with ``run_id=None`` an event joins the latest run that holds its cause, and
      the ``"orphan"`` run when the cause is unknown;
    * ``events(subject)`` is one workflow's events of its latest run (the run that
      received the newest event), or of ``run_id``, in append order, intact.

    Subclass it as ``Test<YourLog>``, define the ``event_log_factory`` fixture (an
    :data:`EventLogFactory`) and set the capability flags:

    * ``concurrent_handles`` -- several handles on one log (several processes) see
      each other's appends, and appends from several threads, each with a handle of
      its own, are each kept once;
    * ``durable`` -- a handle opened after the others closed holds every event;
    * ``forgets`` -- ``forget(subject)`` (:class:`ForgettingEventLog`);
    * ``records_runs`` -- run records and the CLI's queries
      (:class:`RunRecordingEventLog`).
    """

    concurrent_handles: ClassVar[bool] = True
    durable: ClassVar[bool] = True
    forgets: ClassVar[bool] = False
    records_runs: ClassVar[bool] = False

    @pytest.fixture
    def event_log_factory(self) -> EventLogFactory:
        """Opens a handle on the log under test: define it in your subclass."""
        self._missing_factory("EventLog", "event_log_factory", "a function that opens your log")

    @pytest.fixture
    def open_log(self, event_log_factory: EventLogFactory) -> Iterator[EventLogFactory]:
        """``event_log_factory``, with every handle it opened closed after the test."""
        opened: list[EventLog] = []

        def open_() -> EventLog:
            log = event_log_factory()
            opened.append(log)
            return log

        yield open_
        for log in opened:
            log.close()

    # -- append and read -------------------------------------------------------------

    def test_a_workflows_events_come_back_in_append_order_and_intact(self, open_log: EventLogFactory) -> None:
        log = open_log()
        chain = _chain("order-1", "OrderPlaced", "StockReserved", "PaymentProcessed", "OrderCompleted")

        log.append(chain[:1], run_id="run-1")
        log.append(chain[1:3])
        log.append(chain[3:])

        logged = log.events("order-1")
        assert logged == chain
        assert [e.to_json() for e in logged] == [e.to_json() for e in chain]
        assert log.events("order-1", run_id="run-1") == chain

    def test_an_unknown_workflow_or_run_has_no_events(self, open_log: EventLogFactory) -> None:
        log = open_log()
        assert log.events("nobody") == []
        log.append(_chain("order-1", "OrderPlaced"), run_id="run-1")
        assert log.events("order-1", run_id="run-2") == []
        assert log.events("nobody", run_id="run-1") == []

    def test_workflows_do_not_mix(self, open_log: EventLogFactory) -> None:
        log = open_log()
        first = _chain("order-1", "OrderPlaced", "StockReserved", "OrderCompleted")
        second = _chain("order-2", "OrderPlaced", "StockReserved", "OrderCompleted")
        log.append(first[:1], run_id="run-1")
        log.append(second[:1], run_id="run-1")
        for a, b in zip(first[1:], second[1:], strict=True):
            log.append([b])
            log.append([a])

        assert log.events("order-1") == first
        assert log.events("order-2") == second

    def test_appending_an_event_again_keeps_one_copy_in_its_first_place(self, open_log: EventLogFactory) -> None:
        log = open_log()
        placed, reserved, paid = _chain("order-1", "OrderPlaced", "StockReserved", "PaymentProcessed")

        log.append([placed, placed], run_id="run-1")  # twice in one batch
        log.append([reserved, reserved])  # both inherit run-1 from their cause
        log.append([placed], run_id="run-1")
        log.append([paid])
        log.append([reserved])

        assert _ids(log.events("order-1")) == _ids([placed, reserved, paid])

    def test_a_redelivered_event_does_not_move_past_the_terminal_one(self, open_log: EventLogFactory) -> None:
        """Whether a run ended is read off its last logged event: a duplicate of an
        earlier event (a redelivery after the end) must not become the last."""
        log = open_log()
        placed, reserved, completed = _chain("order-1", "OrderPlaced", "StockReserved", "OrderCompleted")
        log.append([placed], run_id="run-1")
        log.append([reserved])
        log.append([completed])

        log.append([reserved])  # redelivered, run inherited from its cause
        log.append([reserved], run_id="run-1")  # redelivered, run named

        assert log.events("order-1")[-1] == completed
        assert len(log.events("order-1")) == 3

    # -- runs ------------------------------------------------------------------------

    def test_an_event_without_a_run_joins_the_run_of_its_cause(self, open_log: EventLogFactory) -> None:
        log = open_log()
        placed, reserved, paid = _chain("order-1", "OrderPlaced", "StockReserved", "PaymentProcessed")
        log.append([placed], run_id="cli-7")
        log.append([reserved])
        log.append([paid])

        assert log.events("order-1", run_id="cli-7") == [placed, reserved, paid]
        assert log.events("order-1", run_id=ORPHAN_RUN) == []

    def test_an_event_whose_cause_is_unknown_is_an_orphan(self, open_log: EventLogFactory) -> None:
        log = open_log()
        _, reserved = _chain("order-1", "OrderPlaced", "StockReserved")  # its cause is never logged
        (started,) = _chain("order-2", "OrderPlaced")  # no cause at all

        log.append([reserved])
        log.append([started])

        assert log.events("order-1") == [reserved]
        assert log.events("order-1", run_id=ORPHAN_RUN) == [reserved]
        assert log.events("order-2", run_id=ORPHAN_RUN) == [started]

    def test_the_latest_run_is_read_unless_a_run_is_named(self, open_log: EventLogFactory) -> None:
        log = open_log()
        first = _chain("order-1", "OrderPlaced", "StockReserved", seed=1)
        second = _chain("order-1", "OrderPlaced", "PaymentProcessed", seed=2)
        log.append(first[:1], run_id="run-1")
        log.append(first[1:])
        log.append(second[:1], run_id="run-2")
        log.append(second[1:])

        assert log.events("order-1") == second
        assert log.events("order-1", run_id="run-1") == first
        assert log.events("order-1", run_id="run-2") == second

    def test_a_run_that_receives_the_newest_event_is_the_latest_again(self, open_log: EventLogFactory) -> None:
        log = open_log()
        placed, reserved = _chain("order-1", "OrderPlaced", "StockReserved", seed=1)
        (other,) = _chain("order-1", "OrderPlaced", seed=2)
        log.append([placed], run_id="run-1")
        log.append([other], run_id="run-2")
        assert log.events("order-1") == [other]

        log.append([reserved])  # run-1 carries on, after run-2 began

        assert log.events("order-1") == [placed, reserved]

    def test_the_same_event_in_two_runs_is_kept_in_each(self, open_log: EventLogFactory) -> None:
        """A run resumed under a new run id logs its start event again, in the new run."""
        log = open_log()
        placed, reserved, paid = _chain("order-1", "OrderPlaced", "StockReserved", "PaymentProcessed")
        log.append([placed], run_id="run-1")
        log.append([reserved])
        log.append([placed], run_id="run-2")
        log.append([paid])  # its cause is only in run-1

        assert log.events("order-1", run_id="run-1") == [placed, reserved, paid]
        assert log.events("order-1", run_id="run-2") == [placed]

    def test_an_event_joins_the_latest_run_that_holds_its_cause(self, open_log: EventLogFactory) -> None:
        log = open_log()
        placed, reserved = _chain("order-1", "OrderPlaced", "StockReserved")
        log.append([placed], run_id="run-1")
        log.append([placed], run_id="run-2")  # resumed under a new run id
        log.append([placed], run_id="run-1")  # a late duplicate in the first run: not a newer hold

        log.append([reserved])

        assert log.events("order-1", run_id="run-2") == [placed, reserved]
        assert log.events("order-1", run_id="run-1") == [placed]

    # -- several handles -------------------------------------------------------------

    def test_handles_on_one_log_see_each_others_appends(self, open_log: EventLogFactory) -> None:
        self._require("concurrent_handles")
        first, second = open_log(), open_log()
        placed, reserved = _chain("order-1", "OrderPlaced", "StockReserved")

        first.append([placed], run_id="run-1")
        second.append([reserved])  # inherits run-1 from a cause the other handle logged

        assert first.events("order-1", run_id="run-1") == [placed, reserved]
        assert second.events("order-1") == [placed, reserved]

    def test_appends_from_several_threads_are_each_kept_once(self, open_log: EventLogFactory) -> None:
        self._require("concurrent_handles")
        workers, per_worker = 4, 40
        chains = {w: _chain(f"order-{w}", *(f"Step{i}" for i in range(per_worker))) for w in range(workers)}
        shared = _chain("shared", *(f"Step{i}" for i in range(per_worker)))
        handles = [open_log() for _ in range(workers)]
        start = threading.Barrier(workers)

        def append_all(worker: int) -> None:
            log = handles[worker]
            start.wait(timeout=10)
            for own, common in zip(chains[worker], shared, strict=True):
                log.append([own], run_id="run-1")
                log.append([common], run_id="run-1")  # every worker appends the same events

        with ThreadPoolExecutor(workers) as pool:
            for done in [pool.submit(append_all, w) for w in range(workers)]:
                done.result(timeout=60)

        reader = open_log()
        for worker, chain in chains.items():
            assert reader.events(f"order-{worker}") == chain
        logged = reader.events("shared")
        assert sorted(_ids(logged)) == sorted(_ids(shared)), "an event appended by several handles is kept once"

    def test_a_log_opened_again_holds_every_event(self, open_log: EventLogFactory) -> None:
        self._require("durable")
        log = open_log()
        chain = _chain("order-1", "OrderPlaced", "StockReserved", "OrderCompleted")
        log.append(chain[:1], run_id="run-1")
        log.append(chain[1:])
        log.close()

        reopened = open_log()
        assert reopened.events("order-1") == chain
        reopened.append(chain[1:2])  # still idempotent after a restart
        assert reopened.events("order-1", run_id="run-1") == chain

    # -- forget ----------------------------------------------------------------------

    def test_forget_drops_one_workflows_events_and_nothing_else(self, open_log: EventLogFactory) -> None:
        self._require("forgets")
        log = cast(ForgettingEventLog, open_log())
        ended = _chain("order-1", "OrderPlaced", "OrderCompleted")
        running = _chain("order-2", "OrderPlaced", "StockReserved")
        for chain in (ended, running):
            log.append(chain[:1], run_id="run-1")
            log.append(chain[1:])

        log.forget("order-1")
        log.forget("never-seen")  # a no-op

        assert log.events("order-1") == []
        assert log.events("order-1", run_id="run-1") == []
        assert log.events("order-2") == running
        log.append(ended[:1], run_id="run-3")
        assert log.events("order-1") == ended[:1]

    # -- run records -----------------------------------------------------------------

    def test_a_run_is_recorded_once_and_the_first_record_kept(self, open_log: EventLogFactory) -> None:
        self._require("records_runs")
        log = cast(RunRecordingEventLog, open_log())

        first = log.begin_run("run-1", workflow="orders", mode="choreography", app="shop.orders:app")
        again = log.begin_run("run-1", workflow="travel", mode="orchestration")
        log.begin_run("run-0", workflow="travel", mode="orchestration")

        assert (first.run_id, first.workflow, first.mode, first.app) == (
            "run-1",
            "orders",
            "choreography",
            "shop.orders:app",
        )
        assert again == first
        assert log.run("run-1") == first
        assert log.run("run-9") is None
        assert [r.run_id for r in log.all_runs()] == ["run-1", "run-0"]  # in the order recorded

    def test_runs_subjects_and_latest_describe_what_was_logged(self, open_log: EventLogFactory) -> None:
        self._require("records_runs")
        log = cast(RunRecordingEventLog, open_log())
        second = _chain("order-b", "OrderPlaced", "StockReserved")
        first = _chain("order-a", "OrderPlaced", "StockReserved", "OrderCompleted")
        log.append(second, run_id="run-2")
        log.append(first[:1], run_id="run-1")
        log.append(first[1:])
        log.append(first[:1], run_id="run-3")

        assert log.subjects() == ["order-a", "order-b"]
        assert log.runs("order-a") == ["run-1", "run-3"]  # oldest first
        assert log.runs("nobody") == []
        assert log.latest() == [("order-a", "run-3", first[0]), ("order-b", "run-2", second[-1])]

    def test_export_holds_each_event_once_whatever_the_runs(self, open_log: EventLogFactory) -> None:
        self._require("records_runs")
        log = cast(RunRecordingEventLog, open_log())
        chain = _chain("order-1", "OrderPlaced", "StockReserved", "OrderCompleted")
        log.append(chain[:1], run_id="run-1")
        log.append(chain[1:])
        log.append(chain[:1], run_id="run-2")  # the start logged again by a resumed run

        exported = list(log.export())

        assert exported == [e.to_json() for e in chain]
