"""Generated workflows of N steps, for measuring how cost grows with steps.

:func:`generated_workflow` builds a :class:`~agent_coordinator.core.workflow.Workflow` of ``N``
steps over a one-field input (``Job``), owned by ``N`` agents (one per step, as in
the order workflow), each with an action and a compensation tool that record
bookings in an in-memory :class:`Ledger` keyed by idempotency key -- no HTTP, so the
figures are the coordination cost and nothing else. It is built with the public
API only, like ``tests/e2e/test_custom_workflow.py``.
"""

# No ``from __future__ import annotations``: LangChain reads each tool coroutine's
# type hints on every call (to find its RunnableConfig parameter); evaluated
# annotations keep that lookup cheap, as in tools/orders.py.

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, Field

from agent_coordinator import BusinessFailure, Step, StepEvents, Workflow, tool_call_context
from agent_coordinator.core.agent import Agent

__all__ = ["Job", "Ledger", "generate_jobs", "generated_agents", "generated_workflow", "step_name"]


class Job(BaseModel):
    """The input of a generated workflow: just an id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(min_length=1, pattern=r"^[^\s/]+$")


class DoArgs(BaseModel):
    """Arguments of a generated step's action."""

    job_id: str


class UndoArgs(BaseModel):
    """Arguments of a generated step's compensation."""

    token: str


class Ledger:
    """The 'services' of generated workflows: one booking per idempotency key."""

    def __init__(self) -> None:
        self.bookings: dict[str, dict[str, Any]] = {}
        self.calls = 0

    def do(self, key: str, job_id: str) -> dict[str, Any]:
        self.calls += 1
        booking = self.bookings.get(key)
        if booking is None:
            booking = self.bookings[key] = {"token": key, "job_id": job_id, "status": "done"}
        return booking

    def undo(self, token: str) -> dict[str, Any]:
        self.calls += 1
        booking = self.bookings.get(token)
        if booking is None:
            raise BusinessFailure(f"no booking {token!r} to undo")
        booking["status"] = "undone"
        return {"token": token, "status": "undone"}


def step_name(i: int) -> str:
    return f"s{i:02d}"


def generated_workflow(steps: int) -> Workflow:
    """A workflow of ``steps`` steps ``s00``, ``s01``, ... each owned by agent ``a<i>``."""
    if steps < 1:
        raise ValueError(f"a generated workflow needs at least one step, got {steps}")
    return Workflow(
        name=f"generated-{steps}",
        description=f"{steps} trivial steps, for scaling benchmarks",
        input_model=Job,
        id_field="job_id",
        started_event="JobSubmitted",
        completed_event="JobCompleted",
        cancelled_event="JobCancelled",
        steps=tuple(
            Step(
                name=step_name(i),
                agent=f"a{i:02d}",
                action=f"do_{step_name(i)}",
                compensation=f"undo_{step_name(i)}",
                events=StepEvents(succeeded=f"S{i:02d}Done", failed=f"S{i:02d}Failed", compensated=f"S{i:02d}Undone"),
                description=f"Do step {i}.",
                # no facts: the default is the input fields the action accepts (job_id)
            )
            for i in range(steps)
        ),
    )


def generated_tools(workflow: Workflow, ledger: Ledger) -> dict[str, BaseTool]:
    """Every action and compensation tool of ``workflow``, keyed by name."""

    async def do(job_id: str, config: RunnableConfig) -> dict[str, Any]:
        return ledger.do(tool_call_context(config).idempotency_key, job_id)

    async def undo(token: str, config: RunnableConfig) -> dict[str, Any]:
        tool_call_context(config)
        return ledger.undo(token)

    tools: dict[str, BaseTool] = {}
    for step in workflow.steps:
        assert step.compensation is not None
        tools[step.action] = StructuredTool.from_function(
            coroutine=do, name=step.action, description=f"Do step {step.name}.", args_schema=DoArgs
        )
        tools[step.compensation] = StructuredTool.from_function(
            coroutine=undo, name=step.compensation, description=f"Undo step {step.name}.", args_schema=UndoArgs
        )
    return tools


def generated_agents(workflow: Workflow, tools: dict[str, BaseTool], model: BaseChatModel) -> list[Agent]:
    """One agent per step, owning that step's two tools, all driven by ``model``."""
    agents = []
    for step in workflow.steps:
        assert step.compensation is not None
        agents.append(
            Agent(
                name=step.agent,
                instructions=f"You do step {step.name} of generated jobs by calling your tool.",
                tools=[tools[step.action], tools[step.compensation]],
                model=model,
            )
        )
    return agents


def generate_jobs(n: int, *, prefix: str = "b") -> list[Job]:
    """``n`` jobs with unique ids ``job-<prefix><i>``."""
    return [Job(job_id=f"job-{prefix}{i:06d}") for i in range(n)]
