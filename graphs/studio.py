"""The orchestration graph for tools that want a graph object: `coordinator graph`,
and LangGraph's own tooling through ``langgraph.json`` (``langgraph dev`` loads
:func:`make_graph`).

The graph is the one :class:`graphs.orchestrator.Orchestrator` runs, built over the
app's default environment (in-process services, the scripted fake models). Its
input is ``{"last": <the workflow's start event as JSON>}``.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph.state import CompiledStateGraph

from agents.runner import StepRunner
from coordinator.app import AppOptions, WorkflowApp
from coordinator.eventlog import MemoryEventLog
from coordinator.events import EventFactory
from coordinator.saga import Saga
from graphs.orchestrator import RunState, build_graph

__all__ = ["compile_graph", "make_graph"]


async def compile_graph(
    workflow_app: WorkflowApp, *, checkpointer: Any = None
) -> CompiledStateGraph[RunState, Any, RunState, RunState]:
    """Compile ``workflow_app``'s orchestration graph over its default environment."""
    async with workflow_app.environment(AppOptions()) as env:
        runner = StepRunner(workflow_app.workflow, env.agents)
    saga = Saga(workflow_app.workflow, factory=EventFactory())
    graph = build_graph(runner, saga, event_log=MemoryEventLog())
    return graph.compile(checkpointer=checkpointer, name=workflow_app.workflow.name)


def make_graph() -> CompiledStateGraph[RunState, Any, RunState, RunState]:
    """The flagship order-fulfilment graph, for ``langgraph.json``.

    Its agents call in-process sandbox services through a client that lives as long
    as the graph (the LangGraph server supplies the checkpointer).
    """
    from agents.orders import ORDER_FULFILMENT, order_agents
    from tools.sandbox import Sandbox

    client = Sandbox().client()
    runner = StepRunner(ORDER_FULFILMENT, order_agents(client=client))
    saga = Saga(ORDER_FULFILMENT, factory=EventFactory())
    return build_graph(runner, saga, event_log=MemoryEventLog()).compile(name=ORDER_FULFILMENT.name)
