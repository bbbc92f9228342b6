"""One answer per trigger between processes: an agent's late answer against the
owner's deadline failure of the same step.

The agent and the owner each get their own handle on the participant store and
on the event log (as two processes on one machine, or on PostgreSQL, would), and
their steps are interleaved by gates, not by timing: the test decides who reaches
the claim first. Before the claim existed, the agent looked for a rival answer in
the log and then appended its own, and the owner appended the step's failure with
no look at all; both answers went out, the chain forked, and a compensated order
held a charge (seen by the torture harness on RabbitMQ).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent_coordinator import EventFactory, SqliteEventLog, WorkflowStatus
from agent_coordinator.bus import InMemoryBus
from agent_coordinator.bus.choreography import Choreographer
from agent_coordinator.bus.outbox import ParticipantStore, PostgresOutbox, SqliteOutbox
from agent_coordinator.core.runner import StepRunner
from agent_coordinator.core.saga import Saga, StepReport
from agent_coordinator.core.workflow import Step
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from tests.e2e.test_orders_e2e import example_orders
from tests.e2e.test_outbox_and_deadlines import FAST, PAYMENT_FAILED_CHAIN
from tests.services import POSTGRES_URL, require_service

WAIT = 10.0  # seconds any one gate may take to open before the test fails: a hang, not a race


@dataclass
class Handles:
    """What two processes would hold: each its own store connection and log handle."""

    agent_store: ParticipantStore
    owner_store: ParticipantStore
    agent_log: SqliteEventLog
    owner_log: SqliteEventLog


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def handles(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Handles]:
    logs = SqliteEventLog(tmp_path / "events.db"), SqliteEventLog(tmp_path / "events.db")
    if request.param == "sqlite":
        stores: tuple[Any, Any] = (
            SqliteOutbox(tmp_path / "participants.db"),
            SqliteOutbox(tmp_path / "participants.db"),
        )
    else:
        require_service("postgresql")
        prefix = f"t{uuid.uuid4().hex[:10]}_"
        stores = (
            await PostgresOutbox(POSTGRES_URL, table_prefix=prefix).open(),
            await PostgresOutbox(POSTGRES_URL, table_prefix=prefix).open(),
        )
    try:
        yield Handles(stores[0], stores[1], *logs)
    finally:
        if isinstance(stores[0], PostgresOutbox):
            async with stores[0]._pool.connection() as conn:
                await conn.execute(
                    f"DROP TABLE {prefix}inbox, {prefix}outbox, {prefix}deadlines, {prefix}attempts, {prefix}outcomes"
                )
        for store in stores:
            await store.close()
        for log in logs:
            log.close()


class GatedRunner(StepRunner):
    """A runner whose payment step stops at a gate before acting (the agent is slow:
    a broker restart, a slow model) and says when it got there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_gate = asyncio.Event()
        self.gate = asyncio.Event()

    async def perform(
        self,
        step: Step,
        *,
        workflow_id: str,
        input: Mapping[str, Any],
        results: Mapping[str, Mapping[str, Any]],
    ) -> StepReport:
        if step.name == "payment":
            self.at_gate.set()
            await asyncio.wait_for(self.gate.wait(), WAIT)
        return await super().perform(step, workflow_id=workflow_id, input=input, results=results)


class ClaimThenDie:
    """The agent's store handle: its first claim goes through, then the agent stops
    at a gate and "dies" (its handler raises, so the bus redelivers the trigger)
    before it has logged or committed anything -- the window the owner's deadline
    must not slip into."""

    def __init__(self, store: ParticipantStore) -> None:
        self._store = store
        self.claimed = asyncio.Event()
        self.gate = asyncio.Event()
        self.died = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_outcome(self, trigger_id: str, event_id: str) -> str:
        winner = await self._store.claim_outcome(trigger_id, event_id)
        if not self.died:
            self.died = True
            self.claimed.set()
            await asyncio.wait_for(self.gate.wait(), WAIT)
            raise RuntimeError("the payment agent died after its claim, before logging its answer")
        return winner


def answers_to(log: SqliteEventLog, workflow_id: str, trigger_type: str) -> list[str]:
    events = log.events(workflow_id)
    (trigger,) = [e for e in events if e.type == trigger_type]
    return [e.type for e in events if e.causation_id == trigger.id]


def two_processes(
    handles: Handles, runner: StepRunner, agent_runner: StepRunner, *, bus: InMemoryBus, agent_store: Any = None
) -> tuple[Choreographer, Choreographer]:
    """The owner's process (with the other agents) and the payment agent's, each on
    its own store and log handle. The owner's deadline is far away: the test fails
    the step itself, at the moment it chooses (``expire``)."""
    saga = Saga(ORDER_FULFILMENT, factory=EventFactory())
    owner = Choreographer(
        runner,
        saga,
        bus=bus,
        event_log=handles.owner_log,
        store=handles.owner_store,
        participants={"inventory", "shipping", "owner", "projection"},
        deadline=3600,
    )
    payment = Choreographer(
        agent_runner,
        saga,
        bus=bus,
        event_log=handles.agent_log,
        store=agent_store or handles.agent_store,
        participants={"payment"},
    )
    return owner, payment


async def test_the_owner_fails_the_step_first_and_the_late_agent_undoes_its_charge(handles: Handles) -> None:
    sandbox, bus = Sandbox(), InMemoryBus()
    order = ORDER_FULFILMENT.validate_input(example_orders()[0])
    async with sandbox.client() as client:
        runner = StepRunner(ORDER_FULFILMENT, order_agents(client=client), settings=FAST)
        gated = GatedRunner(ORDER_FULFILMENT, order_agents(client=client), settings=FAST)
        owner, payment = two_processes(handles, runner, gated, bus=bus)
        await payment.start()
        run = asyncio.create_task(owner.run(order))
        await asyncio.wait_for(gated.at_gate.wait(), WAIT)  # the agent holds InventoryReserved
        failed = await owner.expire(order.order_id)
        assert failed is not None and failed.type == "PaymentFailed"
        gated.gate.set()  # the agent charges now, claims, loses, and refunds
        result = await asyncio.wait_for(run, WAIT)
        await bus.wait_idle()
        await payment.aclose()
        await owner.aclose()
    await bus.close()
    assert result.status is WorkflowStatus.COMPENSATED
    assert [e.type for e in result.events] == PAYMENT_FAILED_CHAIN
    assert answers_to(handles.agent_log, order.order_id, "InventoryReserved") == ["PaymentFailed"]
    (charge,) = sandbox.effects_for(order.order_id).charges  # the late agent did charge...
    assert charge.status == "refunded"  # ...and undid it itself: no compensated order holds money
    assert check_order_effects(sandbox, [result]) == []


async def test_the_agent_claims_first_and_dies_and_the_owner_waits_for_its_answer(handles: Handles) -> None:
    sandbox, bus = Sandbox(), InMemoryBus()
    order = ORDER_FULFILMENT.validate_input(example_orders()[0])
    agent_store = ClaimThenDie(handles.agent_store)
    async with sandbox.client() as client:
        runner = StepRunner(ORDER_FULFILMENT, order_agents(client=client), settings=FAST)
        owner, payment = two_processes(handles, runner, runner, bus=bus, agent_store=agent_store)
        await payment.start()
        run = asyncio.create_task(owner.run(order))
        await asyncio.wait_for(agent_store.claimed.wait(), WAIT)  # charged, claimed, nothing logged
        announced = await owner.expire(order.order_id)
        # The owner lost the claim: it announces the trigger again instead of failing the step.
        assert announced is not None and announced.type == "InventoryReserved"
        agent_store.gate.set()  # the agent dies; the redelivery charges again (same key) and answers
        result = await asyncio.wait_for(run, WAIT)
        await bus.wait_idle()
        await payment.aclose()
        await owner.aclose()
    await bus.close()
    assert result.status is WorkflowStatus.COMPLETED
    assert answers_to(handles.owner_log, order.order_id, "InventoryReserved") == ["PaymentProcessed"]
    assert len(sandbox.effects_for(order.order_id).charges) == 1  # charged once, for all the retries
    assert check_order_effects(sandbox, [result]) == []
