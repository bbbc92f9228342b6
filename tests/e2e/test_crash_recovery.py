"""What a crash leaves behind, reproduced in one process, and what a restart makes of it.

LangGraph's default durability ("async") saves a superstep's checkpoint while the
next superstep runs, so a process killed at the wrong instant leaves a thread whose
newest checkpoint is older than the work done: the tasks of that checkpoint have
their writes, later tasks have writes under checkpoint ids that were never saved,
and the event log (written by the nodes as they go) is ahead of all of it. These
tests build exactly that state -- a checkpointer that loses the puts a kill would
have lost, and a transport that "kills" the process right after a chosen service call -- then start a
fresh coordinator on the same log, checkpoints and services, and check that every
order ends once, truthfully reported, with nothing held twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent_coordinator import (
    MODES,
    EventFactory,
    EventLog,
    MemoryEventLog,
    RunSettings,
    SqliteEventLog,
    WorkflowStatus,
    open_coordinator,
)
from agent_coordinator.bus import InMemoryBus
from agent_coordinator.bus.choreography import Choreographer
from agent_coordinator.bus.outbox import SqliteOutbox
from agent_coordinator.core.runner import StepRunner
from agent_coordinator.core.saga import Saga
from agent_coordinator.core.settings import Backoff
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.examples.orders.sandbox.app import SANDBOX_BASE_URL
from agent_coordinator.modes import Choreography, Orchestration
from tests.e2e.test_orders_e2e import example_orders

FAST = RunSettings(tool_retries=Backoff(initial_delay=0.001))
APPROVALS = FAST.model_copy(update={"parameters": {"approval_threshold_cents": 1000}})


class Killed(BaseException):
    """The process died here (a BaseException, so nothing in the code under test catches it)."""


class LosingSaver(InMemorySaver):
    """An in-memory saver that loses every checkpoint after step ``keep_until`` while
    keeping task writes: what a kill leaves with durability "async"."""

    def __init__(self) -> None:
        super().__init__()
        self.keep_until: int | None = None

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        if self.keep_until is not None and metadata.get("step", -1) > self.keep_until:
            return {
                "configurable": {
                    "thread_id": config["configurable"]["thread_id"],
                    "checkpoint_ns": config["configurable"].get("checkpoint_ns", ""),
                    "checkpoint_id": checkpoint["id"],
                }
            }
        return await super().aput(config, checkpoint, metadata, new_versions)


class DyingTransport(httpx.AsyncBaseTransport):
    """The sandbox in-process, but the process dies right after the service answered a
    request whose path contains ``fatal`` (the effect is made; nobody recorded it)."""

    def __init__(self, sandbox: Sandbox, fatal: str) -> None:
        self.inner = httpx.ASGITransport(app=sandbox.app)
        self.fatal: str | None = fatal

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.fatal is not None and self.fatal in request.url.path:
            raise Killed(request.url.path)
        return response


def dying_client(sandbox: Sandbox, fatal: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=DyingTransport(sandbox, fatal), base_url=SANDBOX_BASE_URL)


async def crash_then_restart(
    order: dict[str, Any],
    *,
    keep_until: int,
    fatal: str,
    again: str,
    settings: RunSettings = FAST,
    restart_settings: RunSettings | None = None,
) -> tuple[Any, Sandbox, MemoryEventLog]:
    sandbox, saver, log = Sandbox(), LosingSaver(), MemoryEventLog()
    saver.keep_until = keep_until
    async with sandbox.client() as client, dying_client(sandbox, fatal) as dying:
        async with open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=dying),
            mode=Orchestration(checkpointer=saver),
            event_log=log,
            settings=settings,
        ) as first:
            with pytest.raises(Killed):
                await first.run(order)
        saver.keep_until = None  # the restarted process's saves land
        async with open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Orchestration(checkpointer=saver),
            event_log=log,
            settings=restart_settings or settings,
        ) as second:
            result = await (second.run(order) if again == "run" else second.resume(order["order_id"]))
    return result, sandbox, log


@pytest.mark.parametrize("again", ["run", "resume"])
async def test_a_thread_whose_later_checkpoints_were_lost_is_carried_on_to_its_end(again: str) -> None:
    # Killed while charging; the checkpoint after the supervisor's handoff (step 1) and
    # every later one were lost, the inventory task's writes were not: LangGraph's
    # snapshot then lists no next task, yet the run is not over.
    order = example_orders()[0]
    result, sandbox, log = await crash_then_restart(order, keep_until=0, fatal="/charges", again=again)
    assert result.status is WorkflowStatus.COMPLETED, result.reason
    assert [e.type for e in result.events] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentProcessed",
        "ShipmentScheduled",
        "OrderCompleted",
    ]
    assert [e.type for e in log.events(order["order_id"])] == [e.type for e in result.events]
    assert sandbox.effects_for(order["order_id"]).counts == {
        "reservation:held": 1,
        "charge:captured": 1,
        "shipment:scheduled": 1,
    }
    assert check_order_effects(sandbox, [result]) == []


async def test_a_resume_with_another_seed_carries_the_run_on_with_the_same_event_ids() -> None:
    # The run started with --seed 7; the process that carries it on has seed 0 (the
    # default). Its re-run of the lost superstep must re-emit the same events, not forks.
    order = example_orders()[0]
    result, _, log = await crash_then_restart(
        order,
        keep_until=0,
        fatal="/charges",
        again="resume",
        settings=FAST.model_copy(update={"seed": 7}),
        restart_settings=FAST,
    )
    assert result.status is WorkflowStatus.COMPLETED, result.reason
    types = [e.type for e in log.events(order["order_id"])]
    assert types == ["OrderPlaced", "InventoryReserved", "PaymentProcessed", "ShipmentScheduled", "OrderCompleted"]


async def test_a_run_killed_while_compensating_is_unwound_to_its_end() -> None:
    order = example_orders()[4]  # o-1005: shipping fails (country AQ), payment and stock are undone
    result, sandbox, _ = await crash_then_restart(order, keep_until=1, fatal="/release", again="run")
    assert result.status is WorkflowStatus.COMPENSATED, result.reason
    assert [e.type for e in result.events][-3:] == ["PaymentRefunded", "InventoryReleased", "OrderCancelled"]
    assert sandbox.effects_for(order["order_id"]).outstanding == []
    assert check_order_effects(sandbox, [result]) == []


async def test_an_ended_run_whose_checkpoints_lag_is_answered_from_the_event_log() -> None:
    # The terminal event is logged by the last node; its checkpoint never landed.
    order = example_orders()[0]
    sandbox, saver, log = Sandbox(), LosingSaver(), MemoryEventLog()
    saver.keep_until = 0
    async with sandbox.client() as client:
        async with open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Orchestration(checkpointer=saver),
            event_log=log,
            settings=FAST,
        ) as first:
            assert (await first.run(order)).status is WorkflowStatus.COMPLETED
        saver.keep_until = None
        requests = sum(c.requests for c in sandbox.counters.values())
        async with open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Orchestration(checkpointer=saver),
            event_log=log,
            settings=FAST,
        ) as second:
            again = await second.run(order)
    assert again.status is WorkflowStatus.COMPLETED and again.recorded
    assert again.usage.model_calls == 3  # the original run's work, as recorded
    assert sum(c.requests for c in sandbox.counters.values()) == requests  # nothing called again


async def test_an_approval_decided_before_a_crash_is_not_asked_again() -> None:
    # o-1002 (1,050 cents) waits for approval; the decision is logged, then the process
    # dies while charging, before any checkpoint after the pause landed.
    order = example_orders()[1]
    sandbox, saver, log = Sandbox(), LosingSaver(), MemoryEventLog()
    async with sandbox.client() as client, dying_client(sandbox, "/charges") as dying:
        async with open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=dying),
            mode=Orchestration(checkpointer=saver),
            event_log=log,
            settings=APPROVALS,
        ) as first:
            assert (await first.run(order)).status is WorkflowStatus.AWAITING_APPROVAL
            saver.keep_until = 0
            with pytest.raises(Killed):
                await first.approve(order["order_id"], by="alice")
        saver.keep_until = None
        async with open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Orchestration(checkpointer=saver),
            event_log=log,
            settings=APPROVALS,
        ) as second:
            result = await second.resume(order["order_id"])
    assert result.status is WorkflowStatus.COMPLETED, result.reason
    types = [e.type for e in result.events]
    assert types.count("PaymentApproved") == 1 and types[-1] == "OrderCompleted"
    assert check_order_effects(sandbox, [result]) == []


# -- the same identity in both modes; choreography after a crash -------------------------


async def wait_for_logged(log: EventLog, workflow_id: str, event_type: str) -> None:
    """Until ``event_type`` is in ``workflow_id``'s log (a condition, bounded at 10 s)."""
    async with asyncio.timeout(10.0):
        while event_type not in [e.type for e in log.events(workflow_id)]:  # noqa: ASYNC110 - the log has no signal
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("mode", MODES)
async def test_an_ended_order_run_again_is_answered_from_the_record_in_either_mode(mode: str, tmp_path: Path) -> None:
    sandbox, log = Sandbox(), SqliteEventLog(tmp_path / "events.db")
    orders = [ORDER_FULFILMENT.validate_input(o) for o in example_orders()]
    try:
        async with sandbox.client() as client:
            for attempt in ("first", "again"):
                async with open_coordinator(
                    ORDER_FULFILMENT,
                    agents=order_agents(client=client),
                    mode=(Orchestration(checkpointer=InMemorySaver()) if mode == "orchestration" else mode),
                    event_log=log,
                    settings=FAST,
                ) as coordinator:
                    requests = sum(c.requests for c in sandbox.counters.values())
                    async with asyncio.timeout(30):
                        results = await coordinator.run_many(orders)
                if attempt == "first":
                    first = results
    finally:
        log.close()
    assert [r.status for r in results] == [r.status for r in first]
    assert all(r.recorded for r in results) and not any(r.recorded for r in first)
    assert [r.usage for r in results] == [r.usage for r in first]
    assert [r.events for r in results] == [r.events for r in first]
    assert sum(c.requests for c in sandbox.counters.values()) == requests  # nothing ran again


async def test_a_choreographed_run_whose_events_died_with_its_process_is_carried_on() -> None:
    # The first process has no payment agent: the order stalls after InventoryReserved,
    # and the process dies -- with it its in-memory bus and every event on it.
    order, sandbox, log = example_orders()[0], Sandbox(), MemoryEventLog()
    async with sandbox.client() as client:
        async with open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Choreography(participants=["inventory", "shipping", "owner", "projection"]),
            event_log=log,
            settings=FAST,
        ) as first:
            stalled = asyncio.ensure_future(first.run(order))
            await wait_for_logged(log, order["order_id"], "InventoryReserved")
            stalled.cancel()
        async with open_coordinator(
            ORDER_FULFILMENT, agents=order_agents(client=client), mode="choreography", event_log=log, settings=FAST
        ) as second:
            async with asyncio.timeout(10):
                result = await second.run(order)
    assert result.status is WorkflowStatus.COMPLETED, result.reason
    assert [e.type for e in result.events] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentProcessed",
        "ShipmentScheduled",
        "OrderCompleted",
    ]
    assert check_order_effects(sandbox, [result]) == []


async def test_another_owner_takes_over_the_deadlines_of_an_owner_that_died(tmp_path: Path) -> None:
    order, sandbox, log, bus = example_orders()[0], Sandbox(), MemoryEventLog(), InMemoryBus()
    store = SqliteOutbox(tmp_path / "outbox.db")
    saga = Saga(ORDER_FULFILMENT, factory=EventFactory())
    try:
        async with sandbox.client() as client:
            runner = StepRunner(ORDER_FULFILMENT, order_agents(client=client), settings=FAST)
            # The payment agent's queue exists (it subscribed once), but the agent is down.
            payment = Choreographer(runner, saga, bus=bus, event_log=log, participants={"payment"}, store=store)
            await payment.start()
            await payment.aclose()
            hosted = {"inventory", "owner", "projection"}
            first = Choreographer(runner, saga, bus=bus, event_log=log, participants=hosted, store=store, deadline=0.3)
            stalled = asyncio.ensure_future(first.run(ORDER_FULFILMENT.validate_input(order)))
            await wait_for_logged(log, order["order_id"], "InventoryReserved")
            stalled.cancel()
            await first.aclose()  # the owner is gone; its deadline is in the store
            second = Choreographer(runner, saga, bus=bus, event_log=log, participants=hosted, store=store, deadline=0.3)
            await second.start()
            await wait_for_logged(log, order["order_id"], "OrderCancelled")
            await second.aclose()
    finally:
        await bus.close()
        await store.close()
    result = saga.result(order["order_id"], log.events(order["order_id"]), mode="choreography")
    assert result.status is WorkflowStatus.COMPENSATED
    assert "agent 'payment' gave no answer within the run's deadline of 0.3s" in (result.reason or "")
    assert check_order_effects(sandbox, [result]) == []


# -- a batch streams -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_batch_pulls_inputs_as_slots_free_up_and_yields_results_as_runs_end(mode: str) -> None:
    base, sandbox = example_orders()[0], Sandbox()
    pulled = 0

    def orders() -> Any:
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield ORDER_FULFILMENT.validate_input(dict(base, order_id=f"s-{i}"))

    async with (
        sandbox.client() as client,
        open_coordinator(ORDER_FULFILMENT, agents=order_agents(client=client), mode=mode, settings=FAST) as coordinator,
    ):
        ahead = []
        async for result in coordinator.stream(orders(), concurrency=4):
            assert result.status is WorkflowStatus.COMPLETED
            ahead.append(pulled)
    assert len(ahead) == 40
    assert ahead[0] <= 5  # the first result came while only the first slots' inputs were read
    assert all(n - i <= 5 for i, n in enumerate(ahead, start=1))  # never more than 4 in flight + 1 pulled


async def test_an_effect_a_dead_agent_left_behind_a_deadline_failure_is_undone(tmp_path: Path) -> None:
    # A payment worker charged the card and died before it could commit; the run's
    # deadline then failed the payment step and the run was unwound without the charge.
    # The worker that gets the trigger again must leave nothing held.
    order, sandbox, log, bus = example_orders()[0], Sandbox(), MemoryEventLog(), InMemoryBus()
    store = SqliteOutbox(tmp_path / "outbox.db")
    saga = Saga(ORDER_FULFILMENT, factory=EventFactory())
    payment_group = f"{ORDER_FULFILMENT.name}.payment"
    try:
        async with sandbox.client() as client:
            runner = StepRunner(ORDER_FULFILMENT, order_agents(client=client), settings=FAST)
            down = Choreographer(runner, saga, bus=bus, event_log=log, participants={"payment"}, store=store)
            await down.start()  # the payment group's queue exists; its only worker is gone
            await down.aclose()
            hosted = {"inventory", "shipping", "owner", "projection"}
            owner = Choreographer(runner, saga, bus=bus, event_log=log, participants=hosted, store=store, deadline=0.3)
            run = asyncio.ensure_future(owner.run(ORDER_FULFILMENT.validate_input(order)))
            await wait_for_logged(log, order["order_id"], "InventoryReserved")
            # What the dead worker did: noted its attempt, then charged, then died.
            (trigger,) = [e for e in log.events(order["order_id"]) if e.type == "InventoryReserved"]
            await store.note_attempt(payment_group, trigger.id)
            charged = await runner.perform(
                ORDER_FULFILMENT.step("payment"),
                workflow_id=order["order_id"],
                input=trigger.data["input"],
                results=trigger.data["results"],
            )
            assert charged.ok
            result = await run
            assert result.status is WorkflowStatus.COMPENSATED
            assert [c.status for c in sandbox.effects_for(order["order_id"]).charges] == ["captured"]  # leaked
            back = Choreographer(runner, saga, bus=bus, event_log=log, participants={"payment"}, store=store)
            await back.start()
            await bus.wait_idle()
            await back.aclose()
            await owner.aclose()
    finally:
        await bus.close()
        await store.close()
    failed = next(e for e in result.events if e.type == "PaymentFailed")
    assert failed.data["failure"]["by"] == "owner" and failed.source == "workflow/order-fulfilment"
    assert sandbox.effects_for(order["order_id"]).outstanding == []
    assert [c.status for c in sandbox.effects_for(order["order_id"]).charges] == ["refunded"]
    assert check_order_effects(sandbox, [result]) == []
