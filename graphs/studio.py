"""The orchestration graph for tools that want a graph object: ``coordinator graph``
(:func:`compile_graph`), and LangGraph's own tooling through ``langgraph.json``
(``langgraph dev`` loads :func:`make_graph`; see :func:`studio_graph`).

The Studio graph is the graph :class:`agent_coordinator.graphs.orchestrator.Orchestrator` runs, entered
from the workflow's own input: its input schema is the input model's (an order), its
run parameters come from ``config["configurable"]`` (``approval_threshold_cents``),
and it writes to the state directory's event log, so its runs show in ``coordinator
status`` and ``coordinator trace`` like any other (docs/architecture.md, "LangGraph
tooling").
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from agent_coordinator.core.agent import Agent
from agent_coordinator.core.app import AppOptions, WorkflowApp
from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.eventlog import MemoryEventLog, SqliteEventLog
from agent_coordinator.core.events import EventFactory
from agent_coordinator.core.runner import StepRunner
from agent_coordinator.core.saga import Saga
from agent_coordinator.core.settings import STATE_DIR_VARIABLE, RunSettings, default_state_dir
from agent_coordinator.core.workflow import Workflow
from agent_coordinator.graphs.orchestrator import RunState, build_graph

__all__ = ["compile_graph", "studio_graph", "studio_state_dir"]


async def compile_graph(
    workflow_app: WorkflowApp, *, checkpointer: Any = None
) -> CompiledStateGraph[RunState, Any, Any, RunState]:
    """Compile ``workflow_app``'s orchestration graph over its default environment
    (for drawing: it logs to memory)."""
    async with workflow_app.environment(AppOptions()) as env:
        runner = StepRunner(workflow_app.workflow, env.agents)
    saga = Saga(workflow_app.workflow, factory=EventFactory())
    graph = build_graph(runner, saga, event_log=MemoryEventLog())
    return graph.compile(checkpointer=checkpointer, name=workflow_app.workflow.name)


def studio_graph(
    workflow: Workflow,
    agents: Sequence[Agent],
    *,
    state_dir: Path | None = None,
    settings: RunSettings | None = None,
    configurable_parameters: Collection[str] = (),
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[RunState, Any, Any, RunState]:
    """``workflow``'s orchestration graph, taking the workflow's input as its input.

    Invoke it with an input (``graph.ainvoke(order, config)``): the ``accept`` node
    validates it and logs its start event, then the run goes on as under
    :class:`~agent_coordinator.graphs.orchestrator.Orchestrator` (an approval pauses it with
    ``interrupt``; resume with ``Command(resume={"approved": ..., "by": ...})``).
    The output is the run's latest event (``{"last": ...}``).

    * ``state_dir`` -- whose ``events.db`` the runs are logged to, under one run id
      of their own recorded as orchestration (default: ``$COORDINATOR_STATE_DIR``,
      else ``./.coordinator``, which is created if its parent exists);
    * ``configurable_parameters`` -- run parameters read from each invocation's
      ``config["configurable"]`` (over ``settings.parameters``);
    * ``checkpointer`` -- None when the LangGraph server supplies its own.

    Raises CoordinatorError naming the directory when the state directory cannot be
    created.
    """
    settings = settings or RunSettings()
    event_log = SqliteEventLog(studio_state_dir(state_dir) / "events.db")
    run_id = f"studio-{uuid.uuid4().hex[:12]}"
    event_log.begin_run(run_id, workflow=workflow.name, mode="orchestration")
    runner = StepRunner(workflow, agents, settings=settings)
    saga = Saga(workflow, factory=EventFactory(seed=settings.seed))
    graph = build_graph(
        runner,
        saga,
        event_log=event_log,
        parameters=settings.parameters,
        start_from="input",
        run_id=run_id,
        configurable_parameters=configurable_parameters,
    ).compile(checkpointer=checkpointer, name=workflow.name)
    # As Orchestrator's limit, plus the accept node: a loop fails loudly.
    return graph.with_config(recursion_limit=4 * len(workflow.steps) + 7)


def studio_state_dir(explicit: Path | None = None) -> Path:
    """``explicit`` or the default state directory, created if its parent exists."""
    directory = explicit if explicit is not None else default_state_dir()
    try:
        directory.mkdir(exist_ok=True)
    except OSError as exc:
        raise CoordinatorError(
            f"cannot use {str(directory)!r} as the state directory ({exc.strerror}); create its parent or set "
            f"{STATE_DIR_VARIABLE} to an existing directory"
        ) from None
    return directory
