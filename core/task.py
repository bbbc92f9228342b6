"""The task message an agent's model receives for one step, and how to read it back.

The message is compact and structured so a real model gets the call right the first
time, and so a scripted fake can follow it exactly::

    Workflow `order-fulfilment`, run `o-1001`, step `payment`: Charge the order total.
    Call the tool `charge_payment` exactly once, with exactly these arguments:
    ```json
    {"amount_cents": 2598, "currency": "EUR", "order_id": "o-1001", "payment_method": "tok_visa"}
    ```
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Task", "parse_task", "render_task"]

_TOOL = re.compile(r"Call the tool `([^`]+)`")
_ARGS = re.compile(r"```json\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Task:
    """What a task message asks for: one call of ``tool`` with ``arguments``."""

    tool: str
    arguments: dict[str, Any]


def render_task(
    *, workflow: str, workflow_id: str, step: str, description: str, tool: str, arguments: Mapping[str, Any]
) -> str:
    """The human message that asks an agent to do one step."""
    header = f"Workflow `{workflow}`, run `{workflow_id}`, step `{step}`"
    if description:
        header += f": {description}"
    body = json.dumps(dict(arguments), sort_keys=True)
    return f"{header}\nCall the tool `{tool}` exactly once, with exactly these arguments:\n```json\n{body}\n```"


def parse_task(text: str) -> Task | None:
    """Read a message written by :func:`render_task`; ``None`` if it is not one."""
    tool = _TOOL.search(text)
    args = _ARGS.search(text)
    if tool is None or args is None:
        return None
    try:
        arguments = json.loads(args.group(1))
    except json.JSONDecodeError:
        return None
    if not isinstance(arguments, dict):
        return None
    return Task(tool=tool.group(1), arguments=arguments)
