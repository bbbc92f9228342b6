"""What a tool learns about the call it serves: workflow, step, idempotency key.

Coordinators call tools with ``config={"configurable": {"coordinator": ToolCallContext}}``.
A tool reads it with :func:`tool_call_context` (declare a ``config: RunnableConfig``
parameter on a ``@tool`` function and LangChain injects it) and sends the
``idempotency_key`` with its request, so a retried, resumed or redelivered call
never repeats the effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig

from coordinator.errors import InvalidArguments

__all__ = ["CONTEXT_KEY", "ToolCallContext", "idempotency_key", "tool_call_context"]

CONTEXT_KEY = "coordinator"


def idempotency_key(workflow_id: str, step: str, action: str) -> str:
    """The key for one effect: the same (workflow, step, action) always maps to it."""
    return f"{workflow_id}/{step}/{action}"


@dataclass(frozen=True, slots=True)
class ToolCallContext:
    """Identity of one tool call within a workflow run."""

    workflow_id: str
    step: str
    action: str

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.workflow_id, self.step, self.action)

    def as_config(self) -> RunnableConfig:
        """The ``config`` to pass to ``tool.ainvoke`` so the tool sees this context."""
        return {"configurable": {CONTEXT_KEY: self}}


def tool_call_context(config: RunnableConfig | dict[str, Any] | None) -> ToolCallContext:
    """The context a coordinator attached to this tool call.

    Raises :class:`InvalidArguments` when there is none: a tool with effects must not
    run without an idempotency key. Outside a coordinator, pass
    ``ToolCallContext(workflow_id, step, action).as_config()`` as the call's config.
    """
    configurable = (config or {}).get("configurable") or {}
    ctx = configurable.get(CONTEXT_KEY)
    if not isinstance(ctx, ToolCallContext):
        raise InvalidArguments(
            "this tool needs a ToolCallContext (workflow id, step, action) for its idempotency key; "
            "call it through a coordinator, or pass config=ToolCallContext(...).as_config()"
        )
    return ctx
