"""The guard (core/guard.py): a model's answer passes only as exactly one call of this
step's action, with valid arguments equal to the workflow's facts; every other
answer is refused with a problem the model can act on."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import StructuredTool

from agent_coordinator.core.guard import check_tool_call, json_normal
from agent_coordinator.core.workflow import Step
from agent_coordinator.tools.step import step_tool


@step_tool
async def charge(order_id: str, amount_cents: int) -> dict[str, Any]:
    """Charge an order."""
    return {}


STEP = Step(name="payment", agent="payment", action="charge", compensation="refund")
FACTS = {"order_id": "o-1", "amount_cents": 390}
OWNED = {"charge", "refund"}  # the agent's tools: its compensation too


def call(name: str, args: dict[str, Any], id: str = "c1") -> dict[str, Any]:
    return {"name": name, "args": args, "id": id, "type": "tool_call"}


def checked(*calls: dict[str, Any], content: str = "") -> tuple[dict[str, Any], str | None]:
    answer = AIMessage(content=content, tool_calls=list(calls))
    return check_tool_call(answer, step=STEP, tool=charge, facts=FACTS, owned=OWNED, offered=["charge"])


def test_one_call_of_the_action_with_the_facts_passes_with_its_arguments() -> None:
    assert checked(call("charge", FACTS)) == (FACTS, None)


@pytest.mark.parametrize(
    ("calls", "problem"),
    [
        ((), "you answered without calling a tool; call `charge` exactly once"),
        (
            (call("charge", FACTS), call("charge", FACTS, id="c2")),
            "you made 2 tool calls at once (`charge`, `charge`); make exactly one call of `charge`",
        ),
        (
            (call("delete_database", {}),),
            "unknown tool `delete_database`; your tools are ['charge']; call `charge`",
        ),
        (
            # A compensation nobody asked for: the agent owns it, but it is not this step's to call.
            (call("refund", {"order_id": "o-1"}),),
            "tool `refund` is not this step's action; call `charge`",
        ),
        (
            (call("charge", {"order_id": "o-1", "amount_cents": "lots"}),),
            "invalid arguments for `charge`: amount_cents: Input should be a valid integer, unable to parse string",
        ),
        (
            (call("charge", {"order_id": "o-1", "amount_cents": 391}),),
            "argument `amount_cents`=391 does not match the workflow's value 390",
        ),
    ],
    ids=["text answer", "parallel calls", "unknown tool", "unasked compensation", "wrong type", "wrong value"],
)
def test_a_refused_answer_names_what_is_wrong_and_what_to_call(calls: tuple[dict[str, Any], ...], problem: str) -> None:
    arguments, found = checked(*calls, content="I would rather not")
    assert arguments == {}
    assert found is not None and found.startswith(problem)


def test_an_argument_the_schema_does_not_know_is_refused() -> None:
    _, problem = checked(call("charge", {**FACTS, "tip_cents": 50}))
    assert problem is not None and problem.startswith("invalid arguments for `charge`: tip_cents:")


def test_a_fact_the_arguments_lack_is_named_with_its_value() -> None:
    # A tool whose schema lets a fact be left out: the guard still insists on it.
    lenient = StructuredTool(
        name="charge",
        description="Charge an order.",
        args_schema={"type": "object", "properties": {"order_id": {"type": "string"}}},
        coroutine=lambda **_: None,
    )
    answer = AIMessage(content="", tool_calls=[call("charge", {"order_id": "o-1"})])
    arguments, problem = check_tool_call(answer, step=STEP, tool=lenient, facts=FACTS, owned=OWNED, offered=["charge"])
    assert (arguments, problem) == ({}, "argument `amount_cents` is missing; it must be 390")


def test_facts_and_arguments_compare_in_their_json_form() -> None:
    assert json_normal({"lines": ("a", "b"), "n": 1}) == {"lines": ["a", "b"], "n": 1}
    tuple_facts = json_normal({"order_id": "o-1", "amount_cents": 390})
    answer = AIMessage(content="", tool_calls=[call("charge", {"order_id": "o-1", "amount_cents": 390.0})])
    assert (
        check_tool_call(answer, step=STEP, tool=charge, facts=tuple_facts, owned=OWNED, offered=["charge"])[1] is None
    )
