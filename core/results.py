"""What a workflow run reports: per-step outcomes, the final status, the events."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from agent_coordinator.core.events import Event

__all__ = ["StepOutcome", "StepStatus", "Usage", "WorkflowResult", "WorkflowStatus"]


class StepStatus(StrEnum):
    """Where one step ended up."""

    PENDING = "pending"  # never started (an earlier step failed)
    SUCCEEDED = "succeeded"  # done and kept
    FAILED = "failed"  # the step itself failed; nothing of it is held
    COMPENSATED = "compensated"  # done, then undone by its compensation
    COMPENSATION_FAILED = "compensation_failed"  # done, and the undo could not complete


class WorkflowStatus(StrEnum):
    """Where a workflow run stands.

    Ended:

    * ``completed`` -- every step succeeded;
    * ``compensated`` -- a step failed (or was rejected) and every completed step
      was undone;
    * ``needs_attention`` -- a compensation could not complete even after its
      retries: something is still held and a person must look (the reason says what).

    Not ended:

    * ``awaiting_approval`` -- paused before a step until a person approves or
      rejects it (``coordinator approve`` / ``reject``);
    * ``failed`` -- the coordinator itself could not carry the run on (a crash of
      its own code, a lost participant); the reason says why. A durable run in this
      state can be resumed.
    """

    COMPLETED = "completed"
    COMPENSATED = "compensated"
    NEEDS_ATTENTION = "needs_attention"
    AWAITING_APPROVAL = "awaiting_approval"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        """True for the statuses a run never leaves."""
        return self in (WorkflowStatus.COMPLETED, WorkflowStatus.COMPENSATED, WorkflowStatus.NEEDS_ATTENTION)


class Usage(BaseModel):
    """Model and tool work spent on a step (or a whole run, summed)."""

    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            model_calls=self.model_calls + other.model_calls,
            tool_calls=self.tool_calls + other.tool_calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class StepOutcome(BaseModel):
    """One step's outcome: status, recorded result, failure reason, work spent.

    ``rejections`` lists, in order, each model answer the guard refused and why --
    the trail that explains a re-ask.
    """

    step: str
    agent: str
    status: StepStatus = StepStatus.PENDING
    result: dict[str, Any] | None = None
    reason: str | None = None
    rejections: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    compensation_result: dict[str, Any] | None = None


class WorkflowResult(BaseModel):
    """The outcome of one workflow run, the same shape in either mode.

    ``recorded`` is True when the run had already ended and this answer was read
    from the event log without running anything: its usage is the original run's.
    """

    workflow: str
    workflow_id: str
    mode: str
    status: WorkflowStatus
    reason: str | None = None
    steps: list[StepOutcome]
    events: list[Event]
    duration_ms: float = 0.0
    supervisor_usage: Usage = Field(default_factory=Usage)
    recorded: bool = False

    @property
    def usage(self) -> Usage:
        """Model and tool work summed over every step, compensations included, plus
        what a model-driven supervisor spent choosing agents."""
        total = self.supervisor_usage
        for step in self.steps:
            total = total + step.usage
        return total

    @property
    def steps_done(self) -> int:
        """Steps whose action succeeded (whether or not later undone)."""
        done = {StepStatus.SUCCEEDED, StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED}
        return sum(1 for s in self.steps if s.status in done)

    @property
    def steps_compensated(self) -> int:
        """Steps that were undone."""
        return sum(1 for s in self.steps if s.status == StepStatus.COMPENSATED)

    def outcome(self, step: str) -> StepOutcome:
        """The outcome of step ``step``."""
        for s in self.steps:
            if s.step == step:
                return s
        raise KeyError(f"no step {step!r} in result of {self.workflow!r}; steps: {[s.step for s in self.steps]}")
