"""An agent: a name, instructions, the tools it owns, and the chat model that drives it."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from agent_coordinator.core.errors import WorkflowDefinitionError

__all__ = ["Agent"]


class Agent(BaseModel):
    """One participant of a workflow.

    ``tools`` holds every tool the agent owns: the actions its model may call and the
    compensations the coordinator calls on its behalf (never offered to the model).
    ``model`` is any LangChain chat model that supports ``bind_tools``.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(min_length=1)
    instructions: str
    tools: Sequence[BaseTool]
    model: BaseChatModel

    def tool(self, name: str) -> BaseTool:
        """The agent's tool ``name``; the error lists the tools it does have."""
        for tool in self.tools:
            if tool.name == name:
                return tool
        raise WorkflowDefinitionError(
            f"agent {self.name!r} has no tool {name!r}; its tools: {sorted(t.name for t in self.tools)}"
        )
