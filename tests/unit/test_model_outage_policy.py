"""A model that gives no answer is our outage, not the business's answer: the step
runner reports it by ``on_model_unavailable`` and the saga stops the run (nothing
undone, resumable) or unwinds it to ``needs_attention`` -- never a plain refusal."""

from __future__ import annotations

from typing import Any

from agent_coordinator.agents import ScriptedChatModel
from agent_coordinator.core.agent import Agent
from agent_coordinator.core.results import WorkflowStatus
from agent_coordinator.core.runner import ATTENTION_AFTER_OUTAGE, StepRunner
from agent_coordinator.core.saga import Action, NextAction, StepReport
from agent_coordinator.core.settings import ModelOutagePolicy, RunSettings
from agent_coordinator.tools.step import step_tool
from tests.unit.trip import FLIGHT, TRIP, trip_saga


@step_tool
async def anything() -> dict[str, Any]:
    """Any tool: the runner only checks that each agent owns its step's tools."""
    return {}


def runner(policy: ModelOutagePolicy) -> StepRunner:
    tools = {
        "airline": ["book_flight", "cancel_flight"],
        "hotelier": ["book_hotel", "cancel_hotel"],
        "rental": ["rent_car"],
    }
    agents = [
        Agent(
            name=name,
            instructions="",
            tools=[anything.model_copy(update={"name": t}) for t in names],
            model=ScriptedChatModel(),
        )
        for name, names in tools.items()
    ]
    return StepRunner(TRIP, agents, settings=RunSettings(on_model_unavailable=policy))


def test_by_default_an_outage_stops_the_run_with_nothing_undone() -> None:
    saga = trip_saga()
    report = runner("stop").model_unavailable("the model of agent 'hotelier' could not be reached")
    assert report.stopped and not report.ok and report.attention is None
    start = saga.started("t-1", {"trip_id": "t-1", "nights": 1})
    flown = saga.performed(FLIGHT, StepReport(ok=True, result={"booking": "b"}), cause=start)
    stopped = saga.performed(TRIP.steps[1], report, cause=flown)
    assert stopped.type == "HotelStopped" and saga.next_action(stopped.type) is None
    assert saga.next_action(saga.resumed(cause=stopped).type) == NextAction(Action.PERFORM, TRIP.steps[1])


def test_by_policy_an_outage_unwinds_the_run_which_then_needs_attention() -> None:
    saga = trip_saga()
    report = runner("compensate").model_unavailable("the model of agent 'hotelier' could not be reached")
    assert not report.stopped and not report.ok and report.attention == ATTENTION_AFTER_OUTAGE
    start = saga.started("t-1", {"trip_id": "t-1", "nights": 1})
    flown = saga.performed(FLIGHT, StepReport(ok=True, result={"booking": "b"}), cause=start)
    failed = saga.performed(TRIP.steps[1], report, cause=flown)
    assert saga.next_action(failed.type) == NextAction(Action.COMPENSATE, FLIGHT)
    undone = saga.compensated(FLIGHT, StepReport(ok=True, result={}), cause=failed)
    assert saga.finished(cause=undone).data["status"] == WorkflowStatus.NEEDS_ATTENTION
