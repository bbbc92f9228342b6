"""Run-time knobs shared by both coordinators: retries, re-asks, concurrency."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Backoff", "RunSettings"]


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
      Set False to have LangChain callbacks (tracing) see every tool call.
    """

    model_config = ConfigDict(frozen=True)

    tool_retries: Backoff = Backoff()
    compensation_retries: Backoff = Backoff(max_attempts=8, max_delay=5.0)
    max_reasks: int = Field(default=2, ge=0)
    step_timeout: float | None = Field(default=120.0, gt=0)
    parameters: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    direct_tool_calls: bool = True
