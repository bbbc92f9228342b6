"""A supervisor whose chat model picks the next agent, kept predictable by a guard.

The model sees the workflow's plan and the run's progress and hands off by calling
one of the ``transfer_to_<agent>`` tools. The saga's next step is the only legal
handoff: a call to an unknown agent, to a step out of order (skipping one, going
back, looping) or anything but one handoff is refused with a message naming the
fault, and the model is re-asked at most ``max_reasks`` times; after that the step
fails (and the completed ones are compensated). The model never chooses undo.

Its model calls are retried like an agent's (:func:`agent_coordinator.core.runner.ask_model`); a
model that gives no answer raises :class:`~agent_coordinator.core.errors.ModelUnavailable`,
which the graph treats like an agent's outage (``RunSettings.on_model_unavailable``).
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict

from agent_coordinator.core.errors import StepError
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import Usage
from agent_coordinator.core.runner import ask_model
from agent_coordinator.core.saga import NextAction
from agent_coordinator.core.settings import Backoff
from agent_coordinator.core.task import render_task
from agent_coordinator.core.workflow import Workflow

__all__ = ["ModelSupervisor", "handoff_tool_name"]

INSTRUCTIONS = (
    "You are the supervisor of a business workflow run by agents. Each step belongs to one agent. "
    "Hand the run to the agent of the next step by calling exactly one transfer tool. "
    "Never skip a step, never repeat a finished one."
)


class _NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


def handoff_tool_name(agent: str) -> str:
    """The handoff tool for ``agent``: ``transfer_to_<agent>``."""
    return f"transfer_to_{agent}"


def _handoff(agent: str) -> BaseTool:
    async def transfer() -> str:
        return f"handed off to {agent}"

    return StructuredTool.from_function(
        coroutine=transfer,
        name=handoff_tool_name(agent),
        description=f"Hand the run to the {agent} agent for its next step.",
        args_schema=_NoArguments,
    )


class ModelSupervisor:
    """Chooses agents with ``model``; see the module docstring for the guard.

    ``retries`` is the backoff of a failed model call (pass the run's
    ``RunSettings.tool_retries``, as :func:`agent_coordinator.core.run.open_coordinator` does).
    """

    def __init__(
        self, model: BaseChatModel, workflow: Workflow, *, max_reasks: int = 2, retries: Backoff | None = None
    ) -> None:
        self.workflow = workflow
        self.max_reasks = max_reasks
        self.retries = retries or Backoff()
        self._agents = {handoff_tool_name(a): a for a in workflow.agent_names}
        self._model: Runnable[Any, BaseMessage] = model.bind_tools([_handoff(a) for a in workflow.agent_names])
        self._plan = [{"step": s.name, "agent": s.agent, "does": s.description} for s in workflow.steps]

    async def choose(self, last: Event, expected: NextAction) -> tuple[str | None, Usage]:
        """Ask the model for the handoff the saga expects; see :class:`Supervisor`.

        Raises ModelUnavailable when the model gives no answer after its retries.
        """
        assert expected.step is not None
        step = expected.step
        done = list(last.data.get("results", {}))
        task = render_task(
            workflow=self.workflow.name,
            workflow_id=last.subject,
            step=step.name,
            description=(
                f"plan {json.dumps(self._plan)}; steps done {json.dumps(done)}; "
                f"next is step `{step.name}`, owned by agent `{step.agent}`"
            ),
            tool=handoff_tool_name(step.agent),
            arguments={},
        )
        messages: list[BaseMessage] = [SystemMessage(INSTRUCTIONS), HumanMessage(task)]
        usage = Usage()
        problems: list[str] = []
        for _ in range(self.max_reasks + 1):
            try:
                answer = await ask_model(
                    self._model,
                    messages,
                    backoff=self.retries,
                    key=f"{last.subject}/{step.name}/supervisor",
                    who="the supervisor",
                )
            except StepError as exc:  # this request refused (a replay miss, say): the step fails
                return f"the supervisor's model call failed: {exc.reason}", usage
            meta = answer.usage_metadata
            usage = usage + Usage(
                model_calls=1,
                input_tokens=meta["input_tokens"] if meta else 0,
                output_tokens=meta["output_tokens"] if meta else 0,
            )
            problem = self._check(answer, step.agent, step.name)
            if problem is None:
                return None, usage
            problems.append(problem)
            messages.append(answer)
            for call in answer.tool_calls:
                messages.append(ToolMessage(f"Error: {problem}", tool_call_id=call.get("id") or ""))
            if not answer.tool_calls:
                messages.append(HumanMessage(f"Error: {problem}"))
        return f"the supervisor's model made no legal handoff in {len(problems)} tries: {problems[-1]}", usage

    def _check(self, answer: AIMessage, agent: str, step: str) -> str | None:
        calls = answer.tool_calls
        if len(calls) != 1:
            return f"make exactly one handoff (you made {len(calls)}); call `{handoff_tool_name(agent)}`"
        name = calls[0]["name"]
        if name not in self._agents:
            return f"unknown handoff `{name}`; the agents are {sorted(self._agents.values())}"
        if self._agents[name] != agent:
            return (
                f"illegal handoff to `{self._agents[name]}`: step `{step}` of agent `{agent}` comes next; "
                "skipping, repeating or reordering steps is not allowed"
            )
        return None
