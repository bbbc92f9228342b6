"""Run-time knobs shared by both coordinators: retries, re-asks, timeouts, what a
model outage does."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["STATE_DIR_VARIABLE", "Backoff", "ModelOutagePolicy", "RunSettings", "default_state_dir"]

STATE_DIR_VARIABLE = "COORDINATOR_STATE_DIR"
"""The environment variable naming the state directory (event log, checkpoints, outbox)."""


def default_state_dir() -> Path:
    """Where run state lives when nobody says: ``$COORDINATOR_STATE_DIR``, else
    ``./.coordinator`` -- what the CLI, the Studio graph and workers share."""
    return Path(os.environ.get(STATE_DIR_VARIABLE) or ".coordinator")


ModelOutagePolicy = Literal["stop", "compensate"]
"""What a step does when its model cannot be reached: see ``RunSettings.on_model_unavailable``."""


class Backoff(BaseModel):
    """Bounded exponential backoff with deterministic jitter.

    Attempt ``n`` (1-based) that failed waits ``min(max_delay, initial_delay *
    multiplier**(n-1))`` scaled by a jitter factor in ``[1 - jitter, 1]``. The factor
    is a hash of (key, attempt), not a random draw, so a run is reproducible while
    concurrent retries of different calls still spread out.
    """

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(default=4, ge=1)
    initial_delay: float = Field(default=0.05, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_delay: float = Field(default=2.0, ge=0)
    jitter: float = Field(default=0.5, ge=0, le=1)

    def delay(self, attempt: int, *, key: str = "") -> float:
        """Seconds to wait after failed attempt ``attempt`` of the call ``key``."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        digest = hashlib.blake2b(f"{key}|{attempt}".encode(), digest_size=8).digest()
        fraction = int.from_bytes(digest, "big") / 2**64
        return base * (1 - self.jitter * fraction)


class RunSettings(BaseModel):
    """How a coordinator runs steps; the same meaning in both modes.

    * ``tool_retries`` -- backoff for transient tool failures within a step;
    * ``compensation_retries`` -- backoff for compensations (which must not give up
      lightly: an undo that cannot complete leaves the workflow ``failed``);
    * ``max_reasks`` -- how many times a model whose answer the guard refused is told
      what was wrong and asked again before the step fails;
    * ``step_timeout`` -- seconds one step (its model calls, tool calls and retries)
      may take before it fails; None: no limit;
    * ``parameters`` -- free-form values the workflow's rules read (e.g. the amount
      above which a payment needs approval);
    * ``seed`` -- makes event ids, jitter and sandbox faults reproducible;
    * ``direct_tool_calls`` -- after the guard validated a call, await a plain
      ``StructuredTool``'s coroutine directly instead of through ``ainvoke`` (which
      repeats signature introspection and callback setup on every call, ~0.4 ms).
      Set False to have LangChain callbacks (tracing) see every tool call;
    * ``on_model_unavailable`` -- what a step does when its model (or a model
      supervisor's) gives no answer at all after the ``tool_retries`` of the call:
      unreachable, overloaded, rate-limited, timed out, refusing our credentials
      (:class:`~agent_coordinator.core.errors.ModelUnavailable`). That is our outage, not the
      business's answer, so it never ends a run plain ``compensated``:

      - ``"stop"`` (the default) -- nothing is undone: the step emits its
        ``<Step>Stopped`` event and the run stops ``failed`` with the reason; it is
        resumable (``Coordinator.resume``, ``coordinator resume``), which emits
        ``<Step>Resumed`` and performs the step again, with the same idempotency
        keys, once the model is back. The customer's order waits for us instead
        of being undone;
      - ``"compensate"`` -- the step fails and the completed steps are undone, but
        the run ends ``needs_attention`` (a person decides whether to submit it
        again), never a plain ``compensated``.

      Both modes behave alike. A model that answers but breaks the guard is not an
      outage: it is re-asked, then fails the step (``max_reasks``).
    """

    model_config = ConfigDict(frozen=True)

    tool_retries: Backoff = Backoff()
    compensation_retries: Backoff = Backoff(max_attempts=8, max_delay=5.0)
    max_reasks: int = Field(default=2, ge=0)
    step_timeout: float | None = Field(default=120.0, gt=0)
    parameters: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    direct_tool_calls: bool = True
    on_model_unavailable: ModelOutagePolicy = "stop"
