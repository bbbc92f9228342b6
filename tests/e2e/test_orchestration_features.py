"""Approvals (both modes), the model-driven supervisor, and resuming runs."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage

from agent_coordinator import MODES, MemoryEventLog, RunSettings, StepStatus, WorkflowStatus, open_coordinator
from agent_coordinator.agents import ScriptedChatModel, misbehave, scripted
from agent_coordinator.core.settings import Backoff
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.modes import Orchestration
from tests.e2e.test_orders_e2e import example_orders

APPROVALS = RunSettings(
    tool_retries=Backoff(initial_delay=0.001),
    parameters={"approval_threshold_cents": 1000},  # o-1002 (1050 cents) needs approval; o-1001 (390) not
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("approved", [True, False])
async def test_a_large_order_waits_for_a_person_then_goes_on(mode: str, approved: bool) -> None:
    sandbox = Sandbox()
    small, large = example_orders()[0], example_orders()[1]
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT, agents=order_agents(client=client), mode=mode, settings=APPROVALS
        ) as coordinator,
    ):
        assert (await coordinator.run(small)).status is WorkflowStatus.COMPLETED
        paused = await coordinator.run(large)
        assert paused.status is WorkflowStatus.AWAITING_APPROVAL
        assert paused.events[-1].type == "PaymentApprovalRequested"
        assert "above the approval threshold of 1000 cents" in (paused.reason or "")
        assert sandbox.effects_for("o-1002").charges == ()  # nothing charged while waiting
        if approved:
            result = await coordinator.approve("o-1002", by="alice", note="known customer")
        else:
            result = await coordinator.reject("o-1002", by="bob", note="suspicious")
    types = [e.type for e in result.events]
    if approved:
        assert result.status is WorkflowStatus.COMPLETED
        assert types[2:5] == ["PaymentApprovalRequested", "PaymentApproved", "PaymentProcessed"]
    else:
        assert result.status is WorkflowStatus.COMPENSATED
        assert types[2:] == ["PaymentApprovalRequested", "PaymentRejected", "InventoryReleased", "OrderCancelled"]
        assert result.outcome("payment").reason == "rejected by bob: suspicious"
    assert check_order_effects(sandbox, [result]) == []


@pytest.mark.parametrize("mode", MODES)
async def test_deciding_on_a_run_that_is_not_waiting_is_an_error(mode: str) -> None:
    sandbox = Sandbox()
    async with (
        sandbox.client() as client,
        open_coordinator(ORDER_FULFILMENT, agents=order_agents(client=client), mode=mode) as coordinator,
    ):
        await coordinator.run(example_orders()[0])
        with pytest.raises(Exception, match="not waiting for an approval"):
            await coordinator.approve("o-1001", by="alice")


async def test_a_model_driven_supervisor_costs_one_call_per_step() -> None:
    sandbox = Sandbox()
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Orchestration(supervisor=ScriptedChatModel()),
        ) as coordinator,
    ):
        result = await coordinator.run(example_orders()[0])
    assert result.status is WorkflowStatus.COMPLETED
    assert result.supervisor_usage.model_calls == 3
    assert result.usage.model_calls == 6  # 3 agents + 3 handoffs


def _handoff_to(agent: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": f"transfer_to_{agent}", "args": {}, "id": "h1"}])


async def test_an_illegal_handoff_is_refused_and_reasked() -> None:
    # Each handoff's first answer is "shipping": illegal for inventory and payment
    # (skipping steps), so those two are refused and re-asked; legal for shipping.
    supervisor = ScriptedChatModel(policy=scripted(_handoff_to("shipping")))
    sandbox = Sandbox()
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Orchestration(supervisor=supervisor),
        ) as coordinator,
    ):
        result = await coordinator.run(example_orders()[0])
    assert result.status is WorkflowStatus.COMPLETED
    assert result.supervisor_usage.model_calls == 5


async def test_a_supervisor_that_keeps_misrouting_fails_the_step_cleanly() -> None:
    supervisor = ScriptedChatModel(policy=misbehave("unknown_tool", times=99))
    sandbox = Sandbox()
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Orchestration(supervisor=supervisor),
            settings=RunSettings(max_reasks=1),
        ) as coordinator,
    ):
        result = await coordinator.run(example_orders()[0])
    assert result.status is WorkflowStatus.COMPENSATED
    assert result.outcome("inventory").status is StepStatus.FAILED
    assert "no legal handoff in 2 tries: unknown handoff `delete_database`" in (result.reason or "")


@pytest.mark.parametrize("mode", MODES)
async def test_resume_of_an_ended_run_answers_from_what_is_known(mode: str) -> None:
    sandbox, log = Sandbox(), MemoryEventLog()
    async with (
        sandbox.client() as client,
        open_coordinator(ORDER_FULFILMENT, agents=order_agents(client=client), mode=mode, event_log=log) as coordinator,
    ):
        first = await coordinator.run(example_orders()[3])
        with pytest.raises(Exception, match="no run of 'o-4242'"):
            await coordinator.resume("o-4242")
        if mode == "choreography":
            again = await coordinator.resume("o-1004")
            assert again.status is first.status
