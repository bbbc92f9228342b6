"""Outbox and inbox (SQLite and PostgreSQL), and deadlines for stalled choreographies."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent_coordinator import EventFactory, MemoryEventLog, RunSettings, WorkflowStatus
from agent_coordinator.bus import InMemoryBus
from agent_coordinator.bus.choreography import Choreographer
from agent_coordinator.bus.outbox import OutboxRelay, ParticipantStore, PostgresOutbox, SqliteOutbox
from agent_coordinator.core.runner import StepRunner
from agent_coordinator.core.saga import Saga
from agent_coordinator.core.settings import Backoff
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from tests.e2e.test_orders_e2e import EXPECTED, example_orders
from tests.services import POSTGRES_URL, require_service

FAST = RunSettings(tool_retries=Backoff(initial_delay=0.001))

#: An order whose payment step failed (the agent's failure, or its deadline's).
PAYMENT_FAILED_CHAIN = ["OrderPlaced", "InventoryReserved", "PaymentFailed", "InventoryReleased", "OrderCancelled"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ParticipantStore]:
    """Each participant store, fresh (PostgreSQL: tables with a prefix of this test's own)."""
    if request.param == "sqlite":
        sqlite = SqliteOutbox(tmp_path / "outbox.db", claim_timeout=0.0)
        yield sqlite
        await sqlite.close()
        return
    require_service("postgresql")
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    postgres = await PostgresOutbox(POSTGRES_URL, table_prefix=prefix, claim_timeout=0.0).open()
    try:
        yield postgres
    finally:
        async with postgres._pool.connection() as conn:
            await conn.execute(
                f"DROP TABLE {prefix}inbox, {prefix}outbox, {prefix}deadlines, {prefix}attempts, {prefix}outcomes"
            )
        await postgres.close()


def events(n: int) -> list:  # type: ignore[type-arg]
    saga = Saga(ORDER_FULFILMENT, factory=EventFactory())
    return [saga.started(f"o-{i}", {"order_id": f"o-{i}"}) for i in range(n)]


async def test_commit_marks_the_trigger_and_queues_its_events_once(store: ParticipantStore) -> None:
    trigger, out_a, out_b = events(3)
    assert not await store.handled("g", trigger.id)
    await store.commit("g", trigger.id, [out_a, out_b])
    await store.commit("g", trigger.id, [out_a, out_b])  # a second commit of the same handling
    assert await store.handled("g", trigger.id)
    assert not await store.handled("other-group", trigger.id)  # the inbox is per group
    claimed = await store.claim("relay-1", 10)
    assert [e.id for _, e in claimed] == [out_a.id, out_b.id]  # commit order, queued once
    await store.published([claimed[0][0]])
    # relay-1 died before marking the second row; with a zero claim timeout another takes it over
    assert [e.id for _, e in await store.claim("relay-2", 10)] == [out_b.id]


async def test_the_relay_publishes_rows_a_crashed_process_left_behind(store: ParticipantStore) -> None:
    trigger, left_behind = events(2)
    await store.commit("g", trigger.id, [left_behind])  # committed, never published: then a crash
    bus = InMemoryBus()
    seen = []

    async def record(event):  # type: ignore[no-untyped-def]
        seen.append(event.id)

    await bus.subscribe("watcher", [left_behind.type], record)
    relay = OutboxRelay(store, bus)
    relay.start()
    await relay.flush()
    await bus.wait_idle()
    assert seen == [left_behind.id]
    assert await store.claim("anyone", 10) == []
    await relay.close()
    await bus.close()


@pytest.mark.parametrize("duplicates", [False, True])
async def test_choreography_through_the_outbox_ends_every_order_consistently(
    store: ParticipantStore, duplicates: bool
) -> None:
    sandbox, bus = Sandbox(), InMemoryBus(duplicate_delivery=duplicates)
    async with sandbox.client() as client:
        runner = StepRunner(ORDER_FULFILMENT, order_agents(client=client), settings=FAST)
        saga = Saga(ORDER_FULFILMENT, factory=EventFactory())
        choreography = Choreographer(runner, saga, bus=bus, store=store, event_log=MemoryEventLog())
        results = [await choreography.run(ORDER_FULFILMENT.validate_input(o)) for o in example_orders()]
        await choreography.aclose()
    await bus.close()
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    assert check_order_effects(sandbox, results) == []
    assert all(r.usage.model_calls <= 3 for r in results)  # duplicates never reached a model twice


async def test_a_stalled_order_is_cancelled_at_its_deadline_and_compensates_itself() -> None:
    sandbox, bus, log = Sandbox(), InMemoryBus(), MemoryEventLog()
    async with sandbox.client() as client:
        runner = StepRunner(ORDER_FULFILMENT, order_agents(client=client), settings=FAST)
        saga = Saga(ORDER_FULFILMENT, factory=EventFactory())
        everyone_but_payment = {"inventory", "shipping", "owner", "projection"}
        # The payment agent's queue exists (it subscribed once) but the agent is down.
        payment = Choreographer(runner, saga, bus=bus, event_log=log, participants={"payment"})
        await payment.start()
        await payment.aclose()
        owner = Choreographer(runner, saga, bus=bus, event_log=log, participants=everyone_but_payment, deadline=0.2)
        result = await owner.run(ORDER_FULFILMENT.validate_input(example_orders()[0]))
        assert result.status is WorkflowStatus.COMPENSATED
        assert [e.type for e in result.events] == PAYMENT_FAILED_CHAIN
        assert "agent 'payment' gave no answer within the run's deadline of 0.2s" in (result.reason or "")
        # The payment agent comes back and finds InventoryReserved in its queue: the
        # run already failed that step, so it must not charge.
        back = Choreographer(runner, saga, bus=bus, event_log=log, participants={"payment"})
        await back.start()
        await bus.wait_idle()
        await back.aclose()
        await owner.aclose()
    await bus.close()
    assert sandbox.effects_for("o-1001").charges == ()
    assert check_order_effects(sandbox, [result]) == []
