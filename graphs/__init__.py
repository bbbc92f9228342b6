"""Orchestration: workflows compiled into LangGraph supervisor graphs."""

from graphs.orchestrator import Orchestrator, RunState, build_graph

__all__ = ["Orchestrator", "RunState", "build_graph"]
