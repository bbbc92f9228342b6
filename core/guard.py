"""The guard: what a model's answer must be before the step runner lets a tool run.

The model chooses; the coordinator guards (docs/architecture.md, "StepRunner"). An
answer passes when it is exactly one tool call, of a tool the agent owns, that is
this step's action, with arguments valid against the tool's schema and equal to the
workflow's facts. Anything else is refused with a problem written for the model to
read (it is sent back as the answer to its call, and the model is re-asked).

A pure function of the answer and the step, so each refusal is testable on its own
(tests/unit/test_guard.py); :class:`~agent_coordinator.core.runner.StepRunner`
decides what a refusal costs (a re-ask, then a failed step).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from agent_coordinator.core.workflow import Step

__all__ = ["check_tool_call", "json_normal"]


def check_tool_call(
    answer: AIMessage,
    *,
    step: Step,
    tool: BaseTool,
    facts: Mapping[str, Any],
    owned: Collection[str],
    offered: Sequence[str],
) -> tuple[dict[str, Any], str | None]:
    """The arguments of ``answer``'s call of ``step``'s action ``tool``, or the problem
    the model is told about: ``({}, problem)``.

    ``facts`` are the values the action must be called with (JSON-normal, see
    :func:`json_normal`); ``owned`` names every tool of the step's agent (its
    compensations too: calling one is refused as not this step's action, not as an
    unknown tool); ``offered`` names the tools bound to its model, which a refusal
    of an unknown tool lists.
    """
    calls = answer.tool_calls
    if not calls:
        return {}, f"you answered without calling a tool; call `{step.action}` exactly once"
    if len(calls) > 1:
        names = ", ".join(f"`{c['name']}`" for c in calls)
        return {}, f"you made {len(calls)} tool calls at once ({names}); make exactly one call of `{step.action}`"
    call = calls[0]
    if call["name"] != step.action:
        if call["name"] not in owned:
            return {}, f"unknown tool `{call['name']}`; your tools are {list(offered)}; call `{step.action}`"
        return {}, f"tool `{call['name']}` is not this step's action; call `{step.action}`"
    arguments = dict(call.get("args") or {})
    schema = tool.args_schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            validated = schema.model_validate(arguments).model_dump(mode="json")
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<arguments>'}: {e['msg']}" for e in exc.errors()
            )
            return {}, f"invalid arguments for `{step.action}`: {detail}"
    else:
        validated = json_normal(arguments)
    for key, expected in facts.items():
        if key not in validated:
            return {}, f"argument `{key}` is missing; it must be {json.dumps(expected, sort_keys=True)}"
        if validated[key] != expected:
            return {}, (
                f"argument `{key}`={json.dumps(validated[key], sort_keys=True)} does not match the "
                f"workflow's value {json.dumps(expected, sort_keys=True)}"
            )
    return arguments, None


def json_normal(value: Mapping[str, Any]) -> dict[str, Any]:
    """The value as it looks after a JSON round trip (tuples to lists, etc.): how
    facts and arguments compare, since a model's arguments arrive as JSON."""
    normal: dict[str, Any] = json.loads(json.dumps(dict(value), default=str))
    return normal
