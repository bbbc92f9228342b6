"""The flagship's graph for LangGraph's own tooling: ``langgraph.json`` points
``langgraph dev`` (and LangGraph Studio) at :func:`make_graph`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents, order_fulfilment_app
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.graphs.orchestrator import RunState
from agent_coordinator.graphs.studio import studio_graph, studio_state_dir

__all__ = ["make_graph"]


def make_graph() -> CompiledStateGraph[RunState, Any, Any, RunState]:
    """The order-fulfilment graph, entered from an order.

    Its agents (scripted fake models) call in-process sandbox services kept in the
    state directory's ``sandbox.db``, through a client that lives as long as the
    graph -- the services ``coordinator run`` uses there, so ``coordinator status``,
    ``trace`` and ``resume`` see the same world; the app's declared parameters (the
    approval threshold) are read from ``configurable``. LangGraph's server calls a
    graph factory on every request: one graph (one run id, one log connection) is
    built per state directory and reused.
    """
    return _order_graph(studio_state_dir().resolve())


@functools.cache
def _order_graph(directory: Path) -> CompiledStateGraph[RunState, Any, Any, RunState]:
    client = Sandbox(store=directory / "sandbox.db").client()
    return studio_graph(
        ORDER_FULFILMENT,
        order_agents(client=client),
        state_dir=directory,
        configurable_parameters=[p.name for p in order_fulfilment_app.parameters],
    )
