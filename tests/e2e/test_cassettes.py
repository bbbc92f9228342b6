"""Cassettes: stable keys, exact replays, clear misses, and the committed recording of
the example orders replayed with no server and no network."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from agent_coordinator import (
    MODES,
    LogicalClock,
    MemoryEventLog,
    StepStatus,
    WorkflowResult,
    WorkflowStatus,
    open_coordinator,
)
from agent_coordinator.agents import ScriptedChatModel, misbehave
from agent_coordinator.agents.cassette import (
    RecordingChatModel,
    ReplayingChatModel,
    load_cassette,
    normalise_request,
    request_key,
)
from agent_coordinator.agents.fake import follow_task
from agent_coordinator.core.errors import ModelError
from agent_coordinator.core.task import render_task
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.examples.orders.tools import ChargePaymentArgs
from tests.e2e.test_orders_e2e import EXAMPLES, EXPECTED, FAST, example_orders

COMMITTED = EXAMPLES / "cassettes"
AGENTS = ("inventory", "payment", "shipping")


def charge_tool() -> dict[str, Any]:
    """``charge_payment`` as a provider sees it (OpenAI tool format)."""
    return {
        "type": "function",
        "function": {
            "name": "charge_payment",
            "description": "Charge the order total.",
            "parameters": ChargePaymentArgs.model_json_schema(),
        },
    }


def charge_conversation(amount: int = 390) -> list[BaseMessage]:
    arguments = {"order_id": "o-1", "amount_cents": amount, "currency": "EUR", "payment_method": "tok_visa"}
    task = render_task(
        workflow="order-fulfilment",
        workflow_id="o-1",
        step="payment",
        description="Charge.",
        tool="charge_payment",
        arguments=arguments,
    )
    return [SystemMessage("You are the payment agent."), HumanMessage(task)]


async def test_a_recording_replays_the_same_message_field_for_field(tmp_path: Path) -> None:
    tool = charge_tool()
    inner = ScriptedChatModel(policy=misbehave("wrong_value"))
    recording = RecordingChatModel(inner=inner, directory=tmp_path, agent="payment").bind_tools([tool])
    conversation = charge_conversation()
    first = await recording.ainvoke(conversation)
    refused = [*conversation, first, ToolMessage("Error: wrong amount", tool_call_id=first.tool_calls[0]["id"])]
    second = await recording.ainvoke(refused)
    replaying = ReplayingChatModel(tmp_path, agent="payment").bind_tools([tool])
    assert await replaying.ainvoke(conversation) == first
    assert await replaying.ainvoke(refused) == second
    assert replaying.invoke(refused) == second  # sync too
    assert second.usage_metadata is not None and second.usage_metadata["input_tokens"] > 0
    assert [e.agent for e in load_cassette(tmp_path)] == ["payment", "payment"]


async def test_the_key_ignores_message_ids_and_follows_content_calls_and_tools() -> None:
    tool = [charge_tool()]
    base = charge_conversation()
    same = [m.model_copy(update={"id": f"random-{i}"}) for i, m in enumerate(base)]
    key = request_key(normalise_request(base, tool))
    assert request_key(normalise_request(same, tool)) == key
    assert request_key(normalise_request(charge_conversation(391), tool)) != key
    assert request_key(normalise_request(base, [])) != key
    answer = AIMessage("", tool_calls=[{"name": "charge_payment", "args": {"a": 1}, "id": "call_1"}])
    with_call = request_key(normalise_request([*base, answer], tool))
    other_id = answer.model_copy(update={"tool_calls": [{**answer.tool_calls[0], "id": "call_2"}]})
    assert request_key(normalise_request([*base, other_id], tool)) != with_call


def test_the_normalised_form_is_stable() -> None:
    """Committed cassettes depend on this exact form: changing it re-keys every one."""
    messages = [
        SystemMessage("s"),
        HumanMessage("h"),
        AIMessage("", tool_calls=[{"name": "t", "args": {"x": 1}, "id": "c1"}]),
        ToolMessage("r", tool_call_id="c1"),
    ]
    tools = [{"type": "function", "function": {"name": "t", "description": "d", "parameters": {"type": "object"}}}]
    request = normalise_request(messages, tools)
    assert request == {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "h"},
            {"role": "assistant", "content": "", "tool_calls": [{"name": "t", "args": {"x": 1}, "id": "c1"}]},
            {"role": "tool", "content": "r", "tool_call_id": "c1"},
        ],
        "tools": [{"name": "t", "parameters": {"type": "object"}}],
    }
    assert request_key(request) == "50a9ef04b775994614a10208afce3396103642a5ba5f55be7079e806ac57fa3d"


async def test_a_request_already_recorded_is_answered_from_the_cassette(tmp_path: Path) -> None:
    asked: list[int] = []

    def counting(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> AIMessage:
        asked.append(1)
        return follow_task(messages, tools)

    model = RecordingChatModel(inner=ScriptedChatModel(policy=counting), directory=tmp_path).bind_tools([charge_tool()])
    first = await model.ainvoke(charge_conversation())
    again = await model.ainvoke(charge_conversation())
    assert again == first and len(asked) == 1
    assert len(load_cassette(tmp_path)) == 1


async def test_a_replay_miss_names_the_agent_and_shows_what_differs(tmp_path: Path) -> None:
    tool = charge_tool()
    recording = RecordingChatModel(inner=ScriptedChatModel(), directory=tmp_path, agent="payment")
    await recording.bind_tools([tool]).ainvoke(charge_conversation(390))
    replaying = ReplayingChatModel(tmp_path, agent="payment").bind_tools([tool])
    with pytest.raises(ModelError) as caught:
        await replaying.ainvoke(charge_conversation(391))
    message = str(caught.value)
    assert message.startswith(f"replay miss: agent 'payment' made a request that cassette {tmp_path} does not hold")
    assert "(1 recorded requests)" in message.replace("...; ", "(")
    assert '-    {"amount_cents": 390, "currency": "EUR", "order_id": "o-1", "payment_method": "tok_visa"}' in message
    assert '+    {"amount_cents": 391, "currency": "EUR", "order_id": "o-1", "payment_method": "tok_visa"}' in message
    assert "agent 'payment', 8" in message or "agent 'payment', 9" in message  # 80-99% alike
    assert message.endswith("If the change is intended, record the cassette again (--record).")


def test_replaying_a_cassette_that_does_not_exist_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no cassette at .*missing for agent 'payment': record one first"):
        ReplayingChatModel(tmp_path / "missing", agent="payment")


def test_a_file_that_is_not_an_exchange_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ModelError, match=r"broken.json is not a recorded exchange: format 99"):
        load_cassette(tmp_path)


# -- the committed cassette: the example orders against the OpenAI-compatible stub ----------


async def replay_examples(
    mode: str, orders: list[dict[str, Any]] | None = None
) -> tuple[list[WorkflowResult], Sandbox]:
    sandbox = Sandbox()
    models = {name: ReplayingChatModel(COMMITTED, agent=name) for name in AGENTS}
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client, model=models),
            mode=mode,
            settings=FAST,
            clock=LogicalClock(),
            event_log=MemoryEventLog(),
        ) as coordinator,
    ):
        inputs = [ORDER_FULFILMENT.validate_input(o) for o in (orders or example_orders())]
        return await coordinator.run_many(inputs, concurrency=8), sandbox


@pytest.mark.parametrize("mode", MODES)
async def test_the_committed_cassette_replays_the_example_orders(mode: str) -> None:
    results, sandbox = await replay_examples(mode)
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    assert check_order_effects(sandbox, results) == []
    recorded = load_cassette(COMMITTED)
    assert sum(r.usage.model_calls for r in results) == len(recorded) == 21
    # The usage the run reports is the usage the provider reported when recording.
    tokens = sum(e.answer.usage_metadata["input_tokens"] for e in recorded if e.answer.usage_metadata)
    assert sum(r.usage.input_tokens for r in results) == tokens


async def test_a_changed_order_misses_the_cassette_and_its_step_fails_naming_the_agent() -> None:
    order = dict(example_orders()[0])
    order["payment_method"] = "tok_mastercard"  # the recorded conversation charged tok_visa
    results, sandbox = await replay_examples("orchestration", [order])
    (result,) = results
    assert result.status is WorkflowStatus.COMPENSATED
    payment = result.outcome("payment")
    assert payment.status is StepStatus.FAILED
    assert payment.reason is not None and "replay miss: agent 'payment'" in payment.reason
    assert '"payment_method": "tok_mastercard"' in payment.reason
    assert check_order_effects(sandbox, results) == []
