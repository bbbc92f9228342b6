"""agent-coordinator: business workflows carried out by tool-using LLM agents,
orchestrated by a LangGraph supervisor or choreographed by events on a bus.

The public API, by name; each is imported when first used, so importing a submodule
(the CLI's, say) does not pay for all of them::

    from agent_coordinator import Choreography, open_coordinator, run_workflow

    result = run_workflow(workflow, order, agents=agents, mode="choreography")
    async with open_coordinator(workflow, agents=agents, mode=Choreography(bus=bus)) as coordinator:
        result = await coordinator.run(order)

Layers (each imports only those below it; ``.importlinter``): ``core`` (the kernel),
``agents`` and ``tools``, ``graphs`` and ``bus`` (the two coordinators), ``modes``,
``lab`` and ``testing``, ``examples``, ``shell``. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_coordinator.core.agent import Agent
    from agent_coordinator.core.app import AppEnvironment, AppOptions, Parameter, WorkflowApp
    from agent_coordinator.core.context import ToolCallContext, idempotency_key, tool_call_context
    from agent_coordinator.core.errors import (
        BusClosed,
        BusError,
        BusinessFailure,
        CoordinatorError,
        InvalidArguments,
        InvalidInput,
        MalformedEvent,
        ModelError,
        ModelUnavailable,
        StepError,
        TransientFailure,
        WorkflowDefinitionError,
    )
    from agent_coordinator.core.eventlog import EventLog, MemoryEventLog, SqliteEventLog
    from agent_coordinator.core.events import Event, EventFactory, LogicalClock, SystemClock, parse_event
    from agent_coordinator.core.results import StepOutcome, StepStatus, Usage, WorkflowResult, WorkflowStatus
    from agent_coordinator.core.run import MODES, Coordinator, Mode
    from agent_coordinator.core.settings import Backoff, RunSettings
    from agent_coordinator.core.workflow import Step, StepEvents, Workflow
    from agent_coordinator.modes import Choreography, Orchestration, arun_workflow, open_coordinator, run_workflow
    from agent_coordinator.tools.step import StepTool, agents_using, step_tool

#: name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "ToolCallContext": "agent_coordinator.core.context",
    "idempotency_key": "agent_coordinator.core.context",
    "tool_call_context": "agent_coordinator.core.context",
    "BusClosed": "agent_coordinator.core.errors",
    "BusError": "agent_coordinator.core.errors",
    "BusinessFailure": "agent_coordinator.core.errors",
    "CoordinatorError": "agent_coordinator.core.errors",
    "InvalidArguments": "agent_coordinator.core.errors",
    "InvalidInput": "agent_coordinator.core.errors",
    "MalformedEvent": "agent_coordinator.core.errors",
    "ModelError": "agent_coordinator.core.errors",
    "ModelUnavailable": "agent_coordinator.core.errors",
    "StepError": "agent_coordinator.core.errors",
    "TransientFailure": "agent_coordinator.core.errors",
    "WorkflowDefinitionError": "agent_coordinator.core.errors",
    "EventLog": "agent_coordinator.core.eventlog",
    "MemoryEventLog": "agent_coordinator.core.eventlog",
    "SqliteEventLog": "agent_coordinator.core.eventlog",
    "Event": "agent_coordinator.core.events",
    "EventFactory": "agent_coordinator.core.events",
    "LogicalClock": "agent_coordinator.core.events",
    "SystemClock": "agent_coordinator.core.events",
    "parse_event": "agent_coordinator.core.events",
    "StepOutcome": "agent_coordinator.core.results",
    "StepStatus": "agent_coordinator.core.results",
    "Usage": "agent_coordinator.core.results",
    "WorkflowResult": "agent_coordinator.core.results",
    "WorkflowStatus": "agent_coordinator.core.results",
    "Coordinator": "agent_coordinator.core.run",
    "MODES": "agent_coordinator.core.run",
    "Mode": "agent_coordinator.core.run",
    "Backoff": "agent_coordinator.core.settings",
    "RunSettings": "agent_coordinator.core.settings",
    "Step": "agent_coordinator.core.workflow",
    "StepEvents": "agent_coordinator.core.workflow",
    "Workflow": "agent_coordinator.core.workflow",
    "Agent": "agent_coordinator.core.agent",
    "AppEnvironment": "agent_coordinator.core.app",
    "AppOptions": "agent_coordinator.core.app",
    "Parameter": "agent_coordinator.core.app",
    "WorkflowApp": "agent_coordinator.core.app",
    "Choreography": "agent_coordinator.modes",
    "Orchestration": "agent_coordinator.modes",
    "arun_workflow": "agent_coordinator.modes",
    "open_coordinator": "agent_coordinator.modes",
    "run_workflow": "agent_coordinator.modes",
    "StepTool": "agent_coordinator.tools.step",
    "agents_using": "agent_coordinator.tools.step",
    "step_tool": "agent_coordinator.tools.step",
}

__all__ = [
    "MODES",
    "Agent",
    "AppEnvironment",
    "AppOptions",
    "Backoff",
    "BusClosed",
    "BusError",
    "BusinessFailure",
    "Choreography",
    "Coordinator",
    "CoordinatorError",
    "Event",
    "EventFactory",
    "EventLog",
    "InvalidArguments",
    "InvalidInput",
    "LogicalClock",
    "MalformedEvent",
    "MemoryEventLog",
    "Mode",
    "ModelError",
    "ModelUnavailable",
    "Orchestration",
    "Parameter",
    "RunSettings",
    "SqliteEventLog",
    "Step",
    "StepError",
    "StepEvents",
    "StepOutcome",
    "StepStatus",
    "StepTool",
    "SystemClock",
    "ToolCallContext",
    "TransientFailure",
    "Usage",
    "Workflow",
    "WorkflowApp",
    "WorkflowDefinitionError",
    "WorkflowResult",
    "WorkflowStatus",
    "agents_using",
    "arun_workflow",
    "idempotency_key",
    "open_coordinator",
    "parse_event",
    "run_workflow",
    "step_tool",
    "tool_call_context",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agent_coordinator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
