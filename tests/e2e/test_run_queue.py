"""Orchestration runs shared out to workers: the run queue on a bus, the run locks in
PostgreSQL, and the command line's checks -- in one process, on the in-memory bus
and the machine's PostgreSQL (the crash test across processes is
tests/process/test_orchestration_workers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from agent_coordinator import open_coordinator
from agent_coordinator.bus import InMemoryBus
from agent_coordinator.bus.runqueue import RUN_SUBMITTED, BusRunQueue
from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.events import EventFactory
from agent_coordinator.core.postgres import PostgresEventLog, PostgresRunLocks
from agent_coordinator.core.results import WorkflowResult
from agent_coordinator.core.run import Coordinator
from agent_coordinator.core.saga import OWNER
from agent_coordinator.core.signing import Keyring
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.graphs import Orchestration
from agent_coordinator.graphs.checkpoints import open_checkpointer
from agent_coordinator.shell.cli import app
from tests.e2e.test_orders_e2e import EXPECTED, example_orders
from tests.e2e.test_outbox_and_deadlines import FAST

ORDERS = str(Path(__file__).resolve().parents[2] / "examples" / "orders" / "orders.jsonl")
PARTICIPANTS = (OWNER, "inventory", "payment", "shipping")
WAIT = 30.0  # seconds a whole exchange may take before the test fails: a hang, not a race


@asynccontextmanager
async def coordinator(
    url: str, sandbox: Sandbox, bus: InMemoryBus, keys: Keyring, *, run_id: str
) -> AsyncIterator[tuple[Coordinator, BusRunQueue]]:
    """What one process holds: its own event log handle, checkpointer and run locks on
    the shared database, and a run queue on the shared bus."""
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(sandbox.client())
        log = PostgresEventLog(url)
        stack.callback(log.close)
        locks = PostgresRunLocks(url)
        stack.push_async_callback(locks.close)
        checkpointer = await stack.enter_async_context(open_checkpointer(url, state_dir=Path()))
        queue = BusRunQueue(bus, ORDER_FULFILMENT, keys=keys)
        yield (
            await stack.enter_async_context(
                open_coordinator(
                    ORDER_FULFILMENT,
                    agents=order_agents(client=client),
                    mode=Orchestration(checkpointer=checkpointer),
                    settings=FAST,
                    event_log=log,
                    run_id=run_id,
                    keys=keys,
                    lock=locks,
                    queue=queue,
                )
            ),
            queue,
        )


async def follow(submitter: Coordinator, ids: list[str]) -> dict[str, WorkflowResult]:
    async with asyncio.timeout(WAIT):
        return {r.workflow_id: r async for r in submitter.results(ids, poll=0.02)}


@pytest.mark.services
async def test_submitted_runs_are_carried_by_a_worker_and_followed_through_the_shared_log(
    postgres_state: str,
) -> None:
    sandbox, bus, keys = Sandbox(), InMemoryBus(), Keyring.ephemeral(PARTICIPANTS)
    async with (
        coordinator(postgres_state, sandbox, bus, keys, run_id="worker-1") as (worker, worker_queue),
        coordinator(postgres_state, sandbox, bus, keys, run_id="submitter") as (submitter, _),
    ):
        serving = await worker_queue.serve(worker.run, concurrency=4)
        ids = [await submitter.submit(order) for order in example_orders()]
        results = await follow(submitter, ids)
        assert {k: r.status for k, r in results.items()} == EXPECTED
        assert all(r.duration_ms >= 0 for r in results.values())
        # Submitting an ended run again is answered from the record: nothing runs twice.
        again = await submitter.submit(example_orders()[0])
        await bus.wait_idle()
        assert (await follow(submitter, [again]))[again].status == EXPECTED[again]
        assert len(sandbox.effects_for(again).charges) == 1
        await serving.close()
    assert await bus.dead_letters() == []
    await bus.close()


async def test_a_submission_a_worker_cannot_trust_or_read_is_dead_lettered_with_the_reason() -> None:
    bus, keys = InMemoryBus(), Keyring.ephemeral(PARTICIPANTS)
    carried: list[BaseModel] = []

    async def carry(item: BaseModel) -> WorkflowResult:
        carried.append(item)
        raise AssertionError("a refused submission must never run")

    await BusRunQueue(bus, ORDER_FULFILMENT, keys=keys).serve(carry)
    order = ORDER_FULFILMENT.validate_input(example_orders()[0])
    await BusRunQueue(bus, ORDER_FULFILMENT).submit(order, run_id="r")  # no keys: unsigned
    as_payment = EventFactory(signer=keys.trusting(["payment"]))
    forged = as_payment.event(
        RUN_SUBMITTED,
        subject="o-1001",
        source="workflow/order-fulfilment",
        data={"input": order.model_dump(mode="json"), "run_id": "r"},
        signed_by="payment",
    )
    await bus.publish(forged)
    as_owner = EventFactory(seed=1, signer=keys)
    bad_input = as_owner.event(
        RUN_SUBMITTED,
        subject="o-1001",
        source="workflow/order-fulfilment",
        data={"input": {**order.model_dump(mode="json"), "items": []}, "run_id": "r"},
        signed_by=OWNER,
    )
    await bus.publish(bad_input)
    await bus.wait_idle()
    errors = [letter.error for letter in await bus.dead_letters()]
    await bus.close()
    assert carried == []
    assert len(errors) == 3
    assert "is not signed" in errors[0]
    assert "is signed by 'payment', but only 'owner' may submit runs of workflow 'order-fulfilment'" in errors[1]
    assert "carries an input that is not valid" in errors[2] and "items" in errors[2]


@pytest.mark.services
async def test_one_run_is_advanced_by_one_holder_at_a_time(postgres_state: str) -> None:
    first, second = PostgresRunLocks(postgres_state), PostgresRunLocks(postgres_state, poll=0.01)
    impatient = PostgresRunLocks(postgres_state, wait=0.2, poll=0.01)
    order: list[str] = []
    try:
        async with first.hold("o-1"):
            order.append("first holds")
            waiting = asyncio.create_task(_hold_and_note(second, "o-1", order))
            with pytest.raises(CoordinatorError, match="run o-1 is being advanced by another process"):
                async with impatient.hold("o-1"):
                    pass
            async with impatient.hold("o-2"):  # another run is not held up
                order.append("o-2 held")
            order.append("first releases")
        await asyncio.wait_for(waiting, WAIT)
    finally:
        for locks in (first, second, impatient):
            await locks.close()
    assert order == ["first holds", "o-2 held", "first releases", "second holds"]


async def _hold_and_note(locks: PostgresRunLocks, workflow_id: str, order: list[str]) -> None:
    async with locks.hold(workflow_id):
        order.append("second holds")


@pytest.mark.services
async def test_a_holder_whose_session_dies_is_stopped_and_its_run_freed(postgres_state: str) -> None:
    import psycopg

    doomed = PostgresRunLocks(postgres_state, check=0.05)
    heir = PostgresRunLocks(postgres_state, wait=WAIT, poll=0.01)
    holding = asyncio.Event()

    async def advance_forever() -> None:
        async with doomed.hold("o-3"):
            holding.set()
            await asyncio.Event().wait()  # a run that never ends by itself

    task = asyncio.create_task(advance_forever())
    try:
        await asyncio.wait_for(holding.wait(), WAIT)
        backend = doomed._conn.info.backend_pid
        async with await psycopg.AsyncConnection.connect(postgres_state, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (backend,))  # the session dies
        with pytest.raises(CoordinatorError, match="lost the lock of run o-3"):
            await asyncio.wait_for(task, WAIT)
        async with heir.hold("o-3"):  # the run is free for another process at once
            pass
    finally:
        task.cancel()
        await doomed.close()
        await heir.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", ORDERS, "--submit", "--mode", "choreography", "--bus", "amqp://x"],
            "--submit applies to orchestration",
        ),
        (["run", ORDERS, "--submit", "--state", "postgresql://db/x"], "--submit needs a broker that the workers share"),
        (["run", ORDERS, "--submit", "--bus", "amqp://x"], "--submit needs state the workers share"),
        (
            ["worker", "payment", "--mode", "orchestration", "--state", "postgresql://db/x"],
            "an orchestration worker carries whole runs: drop 'payment'",
        ),
        (["worker", "--bus", "amqp://x"], "a choreography worker hosts one participant: name it"),
        (
            ["worker", "--mode", "orchestration", "--bus", "amqp://x", "--state", "postgresql://d", "--deadline", "5"],
            "--deadline 5.0 applies to choreography only",
        ),
    ],
)
def test_what_cannot_share_runs_between_processes_is_refused_naming_what_it_needs(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COORDINATOR_STATE", raising=False)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
