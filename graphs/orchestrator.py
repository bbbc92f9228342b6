"""Orchestration: a workflow compiled into a LangGraph supervisor graph.

The graph, for a workflow whose agents are ``inventory``, ``payment``, ``shipping``::

    START ─► supervisor ─┬─► inventory ──┐
               ▲         ├─► payment ────┤
               │         ├─► shipping ───┤
               │         ├─► compensate ─┤
               │         └─► END         │
               └─────────────────────────┘

The state is the run's event list. The supervisor reads the latest event, asks the
saga what follows (:meth:`coordinator.saga.Saga.next_action`) and hands off with a
``Command``: to the owning agent's node to perform a step, to ``compensate`` to undo
one (completed steps are undone one node visit at a time, in reverse order), or it
emits the terminal event and ends. Agent nodes run the step through the shared
:class:`agents.runner.StepRunner` (model, guard, tool) and append its event.

The workflow id is the graph's thread id, so a checkpointer keeps each run's state
in one place; a run that is started again with the same id is resumed, or, when it
already ended, answered from its checkpoint.
"""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from pydantic import BaseModel

from agents.runner import StepRunner
from coordinator.eventlog import EventLog, MemoryEventLog
from coordinator.events import Event
from coordinator.results import WorkflowResult
from coordinator.saga import Action, Saga

__all__ = ["Orchestrator", "RunState", "build_graph"]

SUPERVISOR = "supervisor"
COMPENSATE = "compensate"


class RunState(TypedDict):
    """A run's graph state: its events (JSON-mode dicts, append-only) and the step
    the supervisor handed off."""

    events: Annotated[list[dict[str, Any]], operator.add]
    step: str


def build_graph(
    runner: StepRunner,
    saga: Saga,
    *,
    event_log: EventLog,
    run_id: str,
) -> StateGraph[RunState, Any, RunState, RunState]:
    """The (uncompiled) supervisor graph for ``runner.workflow``.

    Every node appends the events it emits to ``event_log`` under ``run_id`` as it
    emits them (idempotent, so a re-run node does not duplicate them).
    """
    workflow = runner.workflow
    agent_nodes = workflow.agent_names

    def latest(state: RunState) -> Event:
        return Event.model_validate(state["events"][-1])

    def emit(event: Event) -> list[dict[str, Any]]:
        event_log.append([event], run_id=run_id)
        return [event.model_dump(mode="json")]

    async def supervisor(state: RunState) -> Command[str]:
        last = latest(state)
        nxt = saga.next_action(last.type)
        if nxt is None:
            return Command(goto=END)
        if nxt.action in (Action.COMPLETE, Action.CANCEL):
            return Command(goto=END, update={"events": emit(saga.finished(cause=last))})
        assert nxt.step is not None
        goto = nxt.step.agent if nxt.action is Action.PERFORM else COMPENSATE
        return Command(goto=goto, update={"step": nxt.step.name})

    async def perform(state: RunState) -> Command[str]:
        last = latest(state)
        step = workflow.step(state["step"])
        report = await runner.perform(
            step, workflow_id=last.subject, input=last.data["input"], results=last.data["results"]
        )
        return Command(goto=SUPERVISOR, update={"events": emit(saga.performed(step, report, cause=last))})

    async def compensate(state: RunState) -> Command[str]:
        last = latest(state)
        step = workflow.step(state["step"])
        report = await runner.compensate(step, workflow_id=last.subject, result=last.data["results"][step.name])
        return Command(goto=SUPERVISOR, update={"events": emit(saga.compensated(step, report, cause=last))})

    graph: StateGraph[RunState, Any, RunState, RunState] = StateGraph(RunState)
    graph.add_node(SUPERVISOR, supervisor, destinations=(*agent_nodes, COMPENSATE, END))
    for name in agent_nodes:
        graph.add_node(name, perform, destinations=(SUPERVISOR,))
    graph.add_node(COMPENSATE, compensate, destinations=(SUPERVISOR,))
    graph.add_edge(START, SUPERVISOR)
    return graph


class Orchestrator:
    """Runs workflows as LangGraph supervisor graphs over a checkpointer.

    ``checkpointer`` defaults to an ``InMemorySaver`` whose threads are deleted once
    a run has ended (so memory does not grow with finished runs); a durable saver
    keeps them, which is what lets a re-run of an ended workflow id answer from its
    checkpoint instead of running again.
    """

    mode = "orchestration"

    def __init__(
        self,
        runner: StepRunner,
        saga: Saga,
        *,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        event_log: EventLog | None = None,
        run_id: str = "run",
    ) -> None:
        self.runner = runner
        self.saga = saga
        self.run_id = run_id
        self.event_log: EventLog = event_log if event_log is not None else MemoryEventLog()
        self._forget_ended = checkpointer is None
        self.checkpointer: BaseCheckpointSaver[Any] = checkpointer if checkpointer is not None else InMemorySaver()
        self.graph: CompiledStateGraph[RunState, Any, RunState, RunState] = build_graph(
            runner, saga, event_log=self.event_log, run_id=run_id
        ).compile(checkpointer=self.checkpointer, name=runner.workflow.name)
        # Each step visits the supervisor and one worker node; an undo likewise; plus
        # start and finish. Anything beyond that is a loop, which must fail loudly.
        self.recursion_limit = 4 * len(runner.workflow.steps) + 6

    async def run(self, input: BaseModel) -> WorkflowResult:
        """Run (or resume, or answer from its checkpoint) the workflow for ``input``."""
        started = time.perf_counter()
        workflow_id = self.runner.workflow.workflow_id(input)
        config: Any = {"configurable": {"thread_id": workflow_id}, "recursion_limit": self.recursion_limit}
        snapshot = await self.graph.aget_state(config)
        if snapshot.values.get("events"):
            # A run with this id exists: resume it where it stopped (no-op if it ended).
            state = await self.graph.ainvoke(None, config) if snapshot.next else snapshot.values
        else:
            first = self.saga.started(workflow_id, input.model_dump(mode="json"))
            self.event_log.append([first], run_id=self.run_id)
            initial: RunState = {"events": [first.model_dump(mode="json")], "step": ""}
            state = await self.graph.ainvoke(initial, config)
        events = [Event.model_validate(e) for e in state["events"]]
        if self._forget_ended:
            await self.checkpointer.adelete_thread(workflow_id)
        return self.saga.result(workflow_id, events, mode=self.mode, duration_ms=(time.perf_counter() - started) * 1000)

    async def aclose(self) -> None:
        """Nothing to release for in-memory state; durable savers are closed by their owner."""
        return None
