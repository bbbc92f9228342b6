"""Order fulfilment end to end: the example orders in both modes, services consistent."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel

from agent_coordinator import (
    MODES,
    LogicalClock,
    MemoryEventLog,
    RunSettings,
    StepStatus,
    WorkflowResult,
    WorkflowStatus,
    open_coordinator,
)
from agent_coordinator.agents import ScriptedChatModel, misbehave
from agent_coordinator.bus import EventBus, InMemoryBus
from agent_coordinator.core.settings import Backoff
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox, Scenario
from agent_coordinator.modes import Choreography

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"

EXPECTED = {
    "o-1001": WorkflowStatus.COMPLETED,
    "o-1002": WorkflowStatus.COMPLETED,
    "o-1003": WorkflowStatus.COMPENSATED,  # out of stock at step 1: nothing to undo
    "o-1004": WorkflowStatus.COMPENSATED,  # card declined: stock released
    "o-1005": WorkflowStatus.COMPENSATED,  # unshippable: refunded, released
    "o-1006": WorkflowStatus.COMPLETED,  # payment 503 twice, then charged
    "o-1007": WorkflowStatus.COMPLETED,
    "o-1008": WorkflowStatus.COMPLETED,  # payment 503 twice, then charged
}

FAST = RunSettings(tool_retries=Backoff(initial_delay=0.001), compensation_retries=Backoff(initial_delay=0.001))


#: How long the in-memory bus may hold an event (by its type) in the e2e runs.
REORDER_S = 0.003


def example_orders() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (EXAMPLES / "orders.jsonl").read_text().splitlines() if line.strip()]


async def run_orders(
    mode: str,
    orders: Sequence[dict[str, Any]],
    *,
    scenario: Scenario | None = None,
    model: BaseChatModel | None = None,
    bus: EventBus | None = None,
    settings: RunSettings = FAST,
) -> tuple[list[WorkflowResult], Sandbox]:
    sandbox = Sandbox(scenario or Scenario.default())
    if mode == "choreography" and bus is None:
        # Events of different types overtake each other, as between a broker's subjects:
        # every choreographed e2e run proves that nothing depends on arrival order.
        bus = InMemoryBus(reorder=REORDER_S)
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client, model=model),
            mode=(Choreography(bus=bus) if mode == "choreography" else mode),
            settings=settings,
            clock=LogicalClock(),
            event_log=MemoryEventLog(),
        ) as coordinator,
    ):
        inputs = [ORDER_FULFILMENT.validate_input(o) for o in orders]
        results = await coordinator.run_many(inputs, concurrency=8)
    return results, sandbox


@pytest.mark.parametrize("mode", MODES)
async def test_example_orders_end_as_expected_and_the_services_agree(mode: str) -> None:
    results, sandbox = await run_orders(mode, example_orders())
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    assert check_order_effects(sandbox, results) == []
    declined = next(r for r in results if r.workflow_id == "o-1004")
    assert declined.outcome("inventory").status is StepStatus.COMPENSATED
    assert declined.outcome("payment").status is StepStatus.FAILED
    assert declined.reason is not None and "declined" in declined.reason
    unshippable = next(r for r in results if r.workflow_id == "o-1005")
    assert [s.status for s in unshippable.steps] == [StepStatus.COMPENSATED, StepStatus.COMPENSATED, StepStatus.FAILED]
    flaky = next(r for r in results if r.workflow_id == "o-1006")
    assert flaky.outcome("payment").usage.tool_calls == 3  # two 503s, then the charge
    completed = next(r for r in results if r.workflow_id == "o-1001")
    assert completed.usage.model_calls == 3  # one per step, no supervisor model calls


async def test_both_modes_give_the_same_outcomes_state_and_events() -> None:
    runs = {mode: await run_orders(mode, example_orders()) for mode in MODES}
    (orch, orch_box), (chor, chor_box) = runs["orchestration"], runs["choreography"]
    assert [r.status for r in orch] == [r.status for r in chor]
    assert orch_box.inventory.stock == chor_box.inventory.stock
    for a, b in zip(orch, chor, strict=True):
        assert [e.to_json() for e in a.events] == [e.to_json() for e in b.events], a.workflow_id


async def test_a_choreographed_result_is_the_whole_chain_whatever_the_arrival_order() -> None:
    # Held long enough that the terminal event reaches the waiting projection before
    # the events it follows (as seen on NATS, where each event type is its own subject).
    orchestrated, _ = await run_orders("orchestration", example_orders())
    for seed in range(12):  # seeds 9 and 10 lost events before results were read from the log
        bus = InMemoryBus(reorder=0.02, reorder_seed=seed)
        choreographed, _ = await run_orders("choreography", example_orders(), bus=bus)
        for a, b in zip(orchestrated, choreographed, strict=True):
            assert [e.to_json() for e in b.events] == [e.to_json() for e in a.events], (seed, b.workflow_id)
            assert b.steps == a.steps and b.usage == a.usage


async def test_the_same_seed_gives_the_same_event_log_twice() -> None:
    scenario = Scenario.default().model_copy(update={"transient_rate": 0.3, "seed": 11})
    first, _ = await run_orders("choreography", example_orders(), scenario=scenario)
    second, _ = await run_orders("choreography", example_orders(), scenario=scenario)
    assert [[e.to_json() for e in r.events] for r in first] == [[e.to_json() for e in r.events] for r in second]


@pytest.mark.parametrize("mode", MODES)
async def test_seeded_transient_faults_recover_or_compensate_consistently(mode: str) -> None:
    scenario = Scenario.default().model_copy(update={"transient_rate": 0.35, "seed": 3})
    orders = [dict(o, order_id=f"{o['order_id']}-{n}") for n in range(5) for o in example_orders()]
    results, sandbox = await run_orders(mode, orders, scenario=scenario)
    assert check_order_effects(sandbox, results) == []
    retried = sum(r.usage.tool_calls - r.steps_done - r.steps_compensated for r in results)
    assert retried > 0  # the faults really happened


async def test_every_event_delivered_twice_still_charges_once() -> None:
    bus = InMemoryBus(duplicate_delivery=True)
    try:
        results, sandbox = await run_orders("choreography", example_orders(), bus=bus)
    finally:
        await bus.close()
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    assert bus.stats().delivered > bus.stats().published  # duplicates were really delivered
    for order_id, status in EXPECTED.items():
        charges = sandbox.effects_for(order_id).charges
        assert len(charges) == (0 if order_id in ("o-1003", "o-1004") else 1), order_id
        if status is WorkflowStatus.COMPLETED:
            assert charges[0].status == "captured"
    assert check_order_effects(sandbox, results) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "fault", ["unknown_tool", "invalid_arguments", "wrong_value", "no_tool_call", "parallel_calls"]
)
async def test_a_misbehaving_model_is_reasked_and_the_order_ends_consistent(mode: str, fault: str) -> None:
    model = ScriptedChatModel(policy=misbehave(fault))
    results, sandbox = await run_orders(mode, example_orders(), model=model)
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    assert check_order_effects(sandbox, results) == []
    first = results[0].outcome("inventory")
    assert first.usage.model_calls == 2
    assert len(first.rejections) == 1


async def test_a_wrong_amount_is_named_to_the_model() -> None:
    model = ScriptedChatModel(policy=misbehave("wrong_value", when=lambda task: task.tool == "charge_payment"))
    results, _ = await run_orders("orchestration", example_orders()[:1], model=model)
    payment = results[0].outcome("payment")
    assert results[0].status is WorkflowStatus.COMPLETED
    assert payment.rejections == ["argument `amount_cents`=391 does not match the workflow's value 390"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_model_that_never_behaves_fails_its_step_and_the_rest_is_undone(mode: str) -> None:
    model = ScriptedChatModel(policy=misbehave("unknown_tool", times=99, when=lambda t: t.tool == "schedule_shipment"))
    results, sandbox = await run_orders(mode, example_orders()[:1], model=model)
    (result,) = results
    assert result.status is WorkflowStatus.COMPENSATED
    shipping = result.outcome("shipping")
    assert shipping.status is StepStatus.FAILED
    assert shipping.usage.model_calls == FAST.max_reasks + 1
    assert "unknown tool `delete_database`" in (shipping.reason or "")
    assert check_order_effects(sandbox, results) == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_that_runs_past_its_timeout_fails_and_needs_attention_when_its_effect_is_unknown(
    mode: str,
) -> None:
    # Every service call takes 50 ms; a step may take 30 ms: inventory times out.
    scenario = Scenario.default().model_copy(update={"latency_ms": 50.0})
    settings = RunSettings(step_timeout=0.03, tool_retries=Backoff(initial_delay=0.001))
    results, sandbox = await run_orders(mode, example_orders()[:1], scenario=scenario, settings=settings)
    (result,) = results
    # Even asking again timed out, so nobody knows whether stock is held: a person must look.
    assert result.status is WorkflowStatus.NEEDS_ATTENTION
    assert result.reason == (
        "step 'inventory' failed: step 'inventory' took longer than its timeout of 0.03s; "
        "whether its effect happened is unknown; undo of 'inventory' failed: "
        "its effect may have happened and could not be checked"
    )
    assert sandbox.effects_for("o-1001").outstanding == []  # the cancelled call left nothing held
