"""The fault model: specs, seeded schedules, and each fault applied through its seam."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent_coordinator import (
    MODES,
    Backoff,
    LogicalClock,
    MemoryEventLog,
    RunSettings,
    StepStatus,
    WorkflowResult,
    WorkflowStatus,
    open_coordinator,
)
from agent_coordinator.bus import InMemoryBus
from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents
from agent_coordinator.examples.orders.faults import sabotage_order
from agent_coordinator.examples.orders.invariants import check_orders
from agent_coordinator.examples.orders.lab import order_scenario
from agent_coordinator.examples.orders.sandbox import Sandbox, Scenario
from agent_coordinator.lab.faults import PRESETS, CountingEventLog, FaultInjection, FaultPlan, Outage
from agent_coordinator.lab.invariants import InvariantReport, events_of
from agent_coordinator.modes import Choreography

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
FAST = RunSettings(
    tool_retries=Backoff(initial_delay=0.001, max_delay=0.004),
    compensation_retries=Backoff(initial_delay=0.001, max_delay=0.004),
)


def example_orders() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (EXAMPLES / "orders.jsonl").read_text().splitlines() if line.strip()]


async def run_orders(
    mode: str,
    plan: FaultPlan,
    orders: Sequence[dict[str, Any]] | None = None,
    *,
    settings: RunSettings = FAST,
    deadline: float | None = None,
    clock: LogicalClock | None = None,
) -> tuple[list[WorkflowResult], InvariantReport, FaultInjection, Sandbox]:
    """Run orders under ``plan`` through every seam the plan uses; check the invariants."""
    orders = list(orders if orders is not None else example_orders())
    injection = FaultInjection(plan, ORDER_FULFILMENT, mode=mode)
    sandbox = Sandbox(order_scenario(plan))
    log = injection.event_log(MemoryEventLog())
    inner = InMemoryBus(duplicate_delivery=plan.duplicate_delivery) if mode == "choreography" else None
    bus = injection.bus(inner) if inner is not None else None
    try:
        async with (
            sandbox.client() as client,
            open_coordinator(
                ORDER_FULFILMENT,
                agents=injection.agents(order_agents(client=client)),
                mode=(Choreography(bus=bus, deadline=deadline) if mode == "choreography" else mode),
                settings=settings,
                event_log=log,
                clock=clock,
            ) as coordinator,
        ):
            inputs = [ORDER_FULFILMENT.validate_input(injection.sabotage(o, sabotage_order)) for o in orders]
            injection.arm()
            results = await coordinator.run_many(inputs, concurrency=8)
            injection.end_outage()
            # Runs a model outage stopped are carried on once it is over, as an
            # operator's `coordinator resume` would.
            results = [await coordinator.resume(r.workflow_id) if stopped(r) else r for r in results]
            if inner is not None:
                await inner.wait_idle()
    finally:
        await injection.aclose()
        if bus is not None:
            await bus.close()
    runs = events_of(log, [o["order_id"] for o in orders])
    report = check_orders(ORDER_FULFILMENT, sandbox, runs, results=results, counters=sandbox.counters)
    return results, report, injection, sandbox


def stopped(result: WorkflowResult) -> bool:
    """Whether a model outage stopped ``result``'s run (its last event is a ``<Step>Stopped``)."""
    return bool(result.events) and result.events[-1].type.endswith("Stopped")


# -- specs and schedules ------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan",
    [
        FaultPlan(),
        FaultPlan(seed=3, business_rate=0.2, transient_rate=0.1, latency_ms=2.5, misbehave_rate=0.3, max_bad_answers=3),
        FaultPlan(seed=4, misbehaviours=("wrong_value", "unasked_compensation"), duplicate_delivery=True),
        FaultPlan(seed=5, outage=Outage(participant="payment", start_ms=50, for_ms=300)),
        FaultPlan(seed=6, outage=Outage(participant="owner", for_events=12)),
    ],
)
def test_a_spec_reads_back_into_the_same_plan(plan: FaultPlan) -> None:
    assert FaultPlan.parse(plan.spec()) == plan


def test_presets_and_overrides() -> None:
    for name in PRESETS:
        FaultPlan.parse(name)
    plan = FaultPlan.parse("standard,seed=3,duplicate=false")
    assert plan.seed == 3 and not plan.duplicate_delivery and plan.misbehave_rate == 0.2
    assert Outage.parse("payment:1.5s@0.1s") == Outage(participant="payment", start_ms=100, for_ms=1500)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("colour=red", "fault spec item 'colour=red': unknown key"),
        ("business=lots", "fault spec item 'business=lots'"),
        ("outage=payment", "must look like PARTICIPANT:LENGTH"),
        ("kinds=shouting", "misbehaviours must be a non-empty subset"),
    ],
)
def test_a_bad_spec_names_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultPlan.parse(spec)


def test_an_outage_lasts_a_time_or_a_number_of_events() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Outage(participant="payment")
    with pytest.raises(ValueError, match="exactly one"):
        Outage(participant="payment", for_ms=10, for_events=3)


def test_one_seed_gives_one_schedule_whatever_the_order_of_the_runs() -> None:
    ids = [f"o-{n}" for n in range(200)]
    plan = FaultPlan.parse("seed=11,business=0.2,misbehave=0.3,bad-answers=3")
    first = plan.schedule(ORDER_FULFILMENT, ids)
    assert first == plan.schedule(ORDER_FULFILMENT, ids)
    assert first.runs == plan.schedule(ORDER_FULFILMENT, reversed(ids)).runs
    assert (
        first.runs
        != FaultPlan.parse("seed=12,business=0.2,misbehave=0.3,bad-answers=3").schedule(ORDER_FULFILMENT, ids).runs
    )
    business = [r.business for r in first.runs.values() if r.business]
    assert 20 < len(business) < 60 and set(business) == {"inventory", "payment", "shipping"}
    times = {t for r in first.runs.values() for _, t in r.misbehaviours.values()}
    assert times == {1, 2, 3}
    assert any("business failure at step" in line for line in first.describe())


def test_an_outage_of_a_participant_the_workflow_lacks_is_refused() -> None:
    with pytest.raises(CoordinatorError, match="outage of unknown participant 'billing'"):
        FaultInjection(FaultPlan(outage=Outage(participant="billing", for_ms=1)), ORDER_FULFILMENT, mode="choreography")


def test_the_counting_log_counts_distinct_events() -> None:
    from agent_coordinator import EventFactory
    from agent_coordinator.core.saga import Saga

    saga = Saga(ORDER_FULFILMENT, factory=EventFactory())
    event = saga.started("o-1", {"order_id": "o-1"})
    log = CountingEventLog(MemoryEventLog())
    log.append([event])
    log.append([event])
    assert log.count == 1 and log.events("o-1") == [event]


# -- each fault through its seam ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_model_calling_a_compensation_nobody_asked_for_is_refused(mode: str) -> None:
    plan = FaultPlan(seed=1, misbehave_rate=1.0, misbehaviours=("unasked_compensation",))
    results, report, injection, sandbox = await run_orders(mode, plan)
    assert report.ok, report.render()
    assert injection.stats.misbehaviours["unasked_compensation"] > 0
    refund_calls = sandbox.payment.counters.effects_by_key
    assert not any(key.endswith("/refund_payment") for key in refund_calls if key.startswith("o-1001"))
    completed = next(r for r in results if r.workflow_id == "o-1001")
    assert completed.status is WorkflowStatus.COMPLETED
    assert completed.outcome("payment").rejections == [
        "tool `refund_payment` is not this step's action; call `charge_payment`"
    ]
    assert [c.status for c in sandbox.effects_for("o-1001").charges] == ["captured"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_model_that_misbehaves_past_its_reasks_fails_the_step_and_the_rest_is_undone(mode: str) -> None:
    plan = FaultPlan(seed=2, misbehave_rate=1.0, misbehaviours=("wrong_value",), max_bad_answers=1)
    settings = FAST.model_copy(update={"max_reasks": 0})
    results, report, _, _ = await run_orders(mode, plan, settings=settings)
    assert report.ok, report.render()
    first = results[0]
    assert first.status is WorkflowStatus.COMPENSATED
    assert first.outcome("inventory").status is StepStatus.FAILED
    assert "does not match the workflow's value" in (first.reason or "")


@pytest.mark.parametrize("mode", MODES)
async def test_business_failures_at_planned_steps_compensate_the_rest(mode: str) -> None:
    orders = [dict(o, order_id=f"{o['order_id']}.{n}") for n in range(3) for o in example_orders()]
    plan = FaultPlan(seed=9, business_rate=1.0)
    results, report, _, _ = await run_orders(mode, plan, orders)
    assert report.ok, report.render()
    assert all(r.status is WorkflowStatus.COMPENSATED for r in results)
    schedule = plan.schedule(ORDER_FULFILMENT, [o["order_id"] for o in orders])
    for result in results:
        planned = schedule.runs[result.workflow_id].business
        failed = [s.step for s in result.steps if s.status is StepStatus.FAILED]
        # the planned step fails, unless the order's own flaw stops it earlier
        assert failed == [planned] or ORDER_FULFILMENT.index(failed[0]) < ORDER_FULFILMENT.index(str(planned))


@pytest.mark.parametrize("mode", MODES)
async def test_transient_faults_latency_and_misbehaviour_together_keep_the_invariants(mode: str) -> None:
    plan = FaultPlan.parse("seed=5,transient=0.3,latency=1ms,misbehave=0.5,bad-answers=3,business=0.3")
    orders = [dict(o, order_id=f"{o['order_id']}.{n}") for n in range(4) for o in example_orders()]
    _, report, injection, sandbox = await run_orders(mode, plan, orders)
    assert report.ok, report.render()
    assert sum(c.faults for c in sandbox.counters.values()) > 0
    assert sum(injection.stats.misbehaviours.values()) > 0


async def test_duplicate_delivery_reaches_every_group_twice() -> None:
    plan = FaultPlan(duplicate_delivery=True)
    results, report, _, _ = await run_orders("choreography", plan)
    assert report.ok, report.render()
    assert [r.status for r in results].count(WorkflowStatus.COMPLETED) == 5


async def test_on_a_bus_without_the_switch_duplicates_are_published_twice() -> None:
    injection = FaultInjection(FaultPlan(duplicate_delivery=True), ORDER_FULFILMENT, mode="choreography")
    inner = InMemoryBus()
    bus = injection.bus(inner)
    seen: list[str] = []

    async def record(event: Any) -> None:
        seen.append(event.id)

    await bus.subscribe("g", ["OrderPlaced"], record)
    from agent_coordinator import EventFactory
    from agent_coordinator.core.saga import Saga

    await bus.publish(Saga(ORDER_FULFILMENT, factory=EventFactory()).started("o-1", {}))
    await bus.wait_idle()  # the wrapper forwards it to the inner bus
    await bus.close()
    await injection.aclose()
    assert len(seen) == 2 and len(set(seen)) == 1
    assert injection.stats.duplicates_published == 1


async def test_the_same_plan_gives_the_same_event_log_twice() -> None:
    plan = FaultPlan.parse("seed=21,business=0.3,transient=0.3,misbehave=0.5,bad-answers=3")
    logs = []
    for _ in range(2):
        results, report, _, _ = await run_orders("choreography", plan, clock=LogicalClock())
        assert report.ok, report.render()
        logs.append([[e.to_json() for e in r.events] for r in results])
    assert logs[0] == logs[1]


async def test_orchestration_retries_a_downed_agent_then_stops_the_run_until_it_is_back() -> None:
    plan = FaultPlan(outage=Outage(participant="payment", for_ms=10_000))
    results, report, injection, sandbox = await run_orders("orchestration", plan, example_orders()[:2])
    assert report.ok, report.render()
    # Resumed after the outage: completed, charged once, the stop on the record.
    assert all(r.status is WorkflowStatus.COMPLETED for r in results)
    stop = next(e for e in results[0].events if e.type == "PaymentStopped")
    assert "agent 'payment' is unreachable (injected outage)" in stop.data["reason"]
    assert [len(sandbox.effects_for(r.workflow_id).charges) for r in results] == [1, 1]
    # every attempt of the step runner's tool_retries reached the model and was refused
    assert injection.stats.outage_refusals == 2 * FAST.tool_retries.max_attempts


async def test_with_the_compensate_policy_a_downed_agent_leaves_orders_needing_attention() -> None:
    plan = FaultPlan(outage=Outage(participant="payment", for_ms=10_000))
    settings = FAST.model_copy(update={"on_model_unavailable": "compensate"})
    results, report, _, _ = await run_orders("orchestration", plan, example_orders()[:2], settings=settings)
    assert report.ok, report.render()
    assert all(r.status is WorkflowStatus.NEEDS_ATTENTION for r in results)
    assert "agent 'payment' is unreachable (injected outage)" in (results[0].reason or "")


async def test_choreography_waits_for_a_participant_that_comes_back_before_the_deadline() -> None:
    plan = FaultPlan(outage=Outage(participant="payment", for_ms=60))
    results, report, injection, _ = await run_orders("choreography", plan, deadline=5.0)
    assert report.ok, report.render()
    assert [r.status for r in results].count(WorkflowStatus.COMPLETED) == 5
    assert min(r.duration_ms for r in results if r.steps_done > 1) >= 50  # they waited for payment
    assert injection.stats.outage_up_ms is not None


async def test_choreography_fails_the_step_of_a_participant_down_past_the_deadline() -> None:
    plan = FaultPlan(outage=Outage(participant="payment", for_events=1_000))
    results, report, _, sandbox = await run_orders("choreography", plan, example_orders()[:2], deadline=0.1)
    assert report.ok, report.render()  # the participant came back afterwards and charged nothing
    for result in results:
        assert result.status is WorkflowStatus.COMPENSATED
        assert "agent 'payment' gave no answer within the run's deadline of 0.1s" in (result.reason or "")
    assert sandbox.payment.charges == {}


def test_the_scenario_takes_the_plans_transients_seed_and_latency() -> None:
    scenario = order_scenario(FaultPlan.parse("seed=4,transient=0.2,latency=3"), Scenario.default())
    assert (scenario.seed, scenario.transient_rate, scenario.latency_ms) == (4, 0.2, 3.0)
