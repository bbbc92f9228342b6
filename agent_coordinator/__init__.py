"""agent-coordinator's kernel: workflow definitions, events, results and the run API.

Pick the coordination mode with one argument; nothing else depends on it::

    from agent_coordinator import run_workflow
    result = run_workflow(workflow, order, agents=agents, mode="choreography")
"""

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
    ModelMisbehaviour,
    ModelUnavailable,
    StepError,
    TransientFailure,
    WorkflowDefinitionError,
)
from agent_coordinator.core.eventlog import EventLog, MemoryEventLog, SqliteEventLog
from agent_coordinator.core.events import Event, EventFactory, LogicalClock, SystemClock, parse_event
from agent_coordinator.core.results import StepOutcome, StepStatus, Usage, WorkflowResult, WorkflowStatus
from agent_coordinator.core.run import MODES, Coordinator, arun_workflow, open_coordinator, run_workflow
from agent_coordinator.core.settings import Backoff, RunSettings
from agent_coordinator.core.workflow import Step, StepEvents, Workflow

__all__ = [
    "MODES",
    "Backoff",
    "BusClosed",
    "BusError",
    "BusinessFailure",
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
    "ModelError",
    "ModelMisbehaviour",
    "ModelUnavailable",
    "RunSettings",
    "SqliteEventLog",
    "Step",
    "StepError",
    "StepEvents",
    "StepOutcome",
    "StepStatus",
    "SystemClock",
    "ToolCallContext",
    "TransientFailure",
    "Usage",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowResult",
    "WorkflowStatus",
    "arun_workflow",
    "idempotency_key",
    "open_coordinator",
    "parse_event",
    "run_workflow",
    "tool_call_context",
]
