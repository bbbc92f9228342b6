"""Orchestration: workflows compiled into LangGraph supervisor graphs, run over a
checkpointer (:class:`Orchestration` is the mode, :class:`Orchestrator` its engine)."""

from agent_coordinator.graphs.orchestrator import Orchestration, Orchestrator, RunState, build_graph

__all__ = ["Orchestration", "Orchestrator", "RunState", "build_graph"]
