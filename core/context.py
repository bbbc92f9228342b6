"""What a tool learns about the call it serves: workflow, step, idempotency key.

Coordinators call tools with ``config={"configurable": {"coordinator": ToolCallContext}}``.
A tool sends the context's ``idempotency_key`` with its request, so a retried,
resumed or redelivered call never repeats the effect. A ``@step_tool``
(:mod:`agent_coordinator.tools.step`) receives the context in its keyword-only
parameter annotated ``ToolCallContext``; any other LangChain tool reads it with
:func:`tool_call_context` from a ``config: RunnableConfig`` parameter, which
LangChain injects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from langchain_core.runnables import RunnableConfig

from agent_coordinator.core.errors import InvalidArguments

__all__ = ["CONTEXT_KEY", "ToolCallContext", "idempotency_key", "idempotency_key_prefix", "tool_call_context"]

CONTEXT_KEY = "coordinator"

# Printable ASCII is kept as it is, so the key of an ASCII id reads as the id does
# (and is what it always was); '%' (the escape) and '/' (the separator) are encoded.
_KEY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%/")


def _key_part(text: str) -> str:
    # surrogatepass: even a lone surrogate has an encoding, so no id can make this raise.
    return quote(text, safe=_KEY_SAFE, encoding="utf-8", errors="surrogatepass")


def idempotency_key(workflow_id: str, step: str, action: str) -> str:
    """The key for one effect: ``<workflow id>/<step>/<action>``, each part percent-encoded.

    The same (workflow, step, action) always maps to the same key and different ones
    never do. The key is printable ASCII, so it fits an HTTP header whatever the
    workflow id's script: printable ASCII other than ``%`` and ``/`` is kept, anything
    else is percent-encoded as UTF-8 (``o-1001/payment/charge_payment``,
    ``%C3%BC-1/payment/charge_payment`` for the order ``ü-1``).
    """
    return f"{_key_part(workflow_id)}/{_key_part(step)}/{_key_part(action)}"


def idempotency_key_prefix(workflow_id: str) -> str:
    """What every idempotency key of ``workflow_id`` starts with (its encoded id and ``/``)."""
    return f"{_key_part(workflow_id)}/"


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
