"""Chat models for agents: deterministic scripted fakes for tests and CI, cassettes that
record and replay real ones, and real providers chosen by spec (``--model``)."""

from agent_coordinator.agents.fake import ScriptedChatModel, fake_model, follow_task, misbehave, scripted

__all__ = ["ScriptedChatModel", "fake_model", "follow_task", "misbehave", "scripted"]
