"""Orchestration: workflows compiled into LangGraph supervisor graphs."""

from agent_coordinator.graphs.orchestrator import Orchestrator, RunState, build_graph

__all__ = ["Orchestrator", "RunState", "build_graph"]
