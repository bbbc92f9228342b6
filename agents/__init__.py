"""Agents (name, instructions, tools, model), the step runner with its guard, and the
deterministic fake chat models for tests and CI."""

from agents.agent import Agent
from agents.fake import ScriptedChatModel, fake_model, follow_task, misbehave, scripted
from agents.runner import StepRunner
from agents.task import Task, parse_task, render_task

__all__ = [
    "Agent",
    "ScriptedChatModel",
    "StepRunner",
    "Task",
    "fake_model",
    "follow_task",
    "misbehave",
    "parse_task",
    "render_task",
    "scripted",
]
