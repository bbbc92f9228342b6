"""The scripted fake chat models in agents/fake.py behave like real LangChain chat models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.messages.tool import invalid_tool_call
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, tool
from pydantic import ValidationError

from agent_coordinator.agents.fake import (
    FAULTS,
    ScriptedChatModel,
    ScriptedMessageChunk,
    fake_model,
    follow_task,
    misbehave,
    scripted,
)
from agent_coordinator.core.task import Task, render_task

ARGS: dict[str, Any] = {"amount_cents": 2598, "currency": "EUR", "order_id": "o-1001", "payment_method": "tok_visa"}


@tool
def charge_payment(order_id: str, amount_cents: int, currency: str, payment_method: str) -> str:
    """Charge the order total."""
    return f"charged {amount_cents} {currency}"


@tool
def reserve_stock(sku: str, quantity: int) -> str:
    """Reserve stock for an order."""
    return f"reserved {quantity} x {sku}"


@tool
def send_email(to: str, subject: str) -> str:
    """Send an email."""
    return "sent"


TOOLS: list[BaseTool] = [charge_payment, reserve_stock, send_email]


def task_text(tool_name: str = "charge_payment", arguments: dict[str, Any] | None = None, run: str = "o-1001") -> str:
    return render_task(
        workflow="order-fulfilment",
        workflow_id=run,
        step="payment",
        description="Charge the order total.",
        tool=tool_name,
        arguments=ARGS if arguments is None else arguments,
    )


def conversation(
    tool_name: str = "charge_payment", arguments: dict[str, Any] | None = None, run: str = "o-1001"
) -> list[BaseMessage]:
    return [SystemMessage("You run the payment step."), HumanMessage(task_text(tool_name, arguments, run))]


def reask(messages: list[BaseMessage], answer: AIMessage, error: str = "that was wrong") -> list[BaseMessage]:
    """The conversation after ``answer``, with an error result for each of its tool calls (or a nudge)."""
    follow_up: list[BaseMessage] = [
        ToolMessage(content=f"Error: {error}", tool_call_id=call["id"] or "", status="error")
        for call in answer.tool_calls
    ]
    return [*messages, answer, *(follow_up or [HumanMessage(f"Error: {error}")])]


def aggregate(chunks: Sequence[BaseMessage]) -> AIMessageChunk:
    """The sum of a stream's chunks (each must be an ``AIMessageChunk``)."""
    assert chunks, "the stream yielded nothing"
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    total = AIMessageChunk(content="")
    for chunk in chunks:
        assert isinstance(chunk, AIMessageChunk)
        total = total + chunk
    return total


def added_up(chunks: Sequence[BaseMessage]) -> AIMessageChunk:
    """``sum(chunks)``: the fake's chunks add up from 0, like numbers."""
    pieces = [chunk for chunk in chunks if isinstance(chunk, ScriptedMessageChunk)]
    assert len(pieces) == len(chunks), "every chunk should be a ScriptedMessageChunk"
    total = sum(pieces)
    assert isinstance(total, AIMessageChunk)
    return total


def folded(chunks: Iterable[BaseMessage]) -> AIMessageChunk:
    """The chunks added as LangChain's standard tests add them: ``full = chunk if full is None else full + chunk``."""
    full: AIMessageChunk | None = None
    for chunk in chunks:
        assert isinstance(chunk, AIMessageChunk)
        full = chunk if full is None else full + chunk
    assert full is not None, "the stream yielded nothing"
    return full


def assert_same_answer(streamed: AIMessageChunk, invoked: AIMessage) -> None:
    assert streamed.content == invoked.content
    assert streamed.tool_calls == invoked.tool_calls
    assert streamed.invalid_tool_calls == invoked.invalid_tool_calls
    assert streamed.usage_metadata == invoked.usage_metadata
    assert streamed.id == invoked.id
    assert streamed.response_metadata["model_name"] == invoked.response_metadata["model_name"]


# --------------------------------------------------------------------------- follow_task through the model


def test_invoke_calls_the_task_tool_with_the_task_arguments() -> None:
    answer = fake_model().bind_tools(TOOLS).invoke(conversation())

    assert isinstance(answer, AIMessage)
    assert answer.content == ""
    assert answer.tool_calls == [{"name": "charge_payment", "args": ARGS, "id": "call_1", "type": "tool_call"}]
    assert answer.response_metadata["model_name"] == "scripted"


async def test_ainvoke_gives_the_same_answer_as_invoke() -> None:
    model = fake_model().bind_tools(TOOLS)
    messages = conversation()

    assert await model.ainvoke(messages) == model.invoke(messages)


def test_bound_tools_reach_the_policy_in_openai_format() -> None:
    seen: list[list[dict[str, Any]]] = []

    def recording(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> AIMessage:
        seen.append(list(tools))
        return follow_task(messages, tools)

    model = fake_model(recording)
    model.bind_tools([charge_payment, reserve_stock]).invoke(conversation())
    model.invoke(conversation())

    bound, unbound = seen
    assert [spec["function"]["name"] for spec in bound] == ["charge_payment", "reserve_stock"]
    assert bound[0]["type"] == "function"
    assert sorted(bound[0]["function"]["parameters"]["required"]) == sorted(ARGS)
    assert unbound == []


def test_a_task_for_a_tool_that_is_not_bound_is_answered_in_text() -> None:
    answer = fake_model().bind_tools([reserve_stock, send_email]).invoke(conversation())

    assert answer.tool_calls == []
    assert isinstance(answer.content, str)
    assert "charge_payment" in answer.content
    assert "reserve_stock" in answer.content


def test_without_a_task_message_the_answer_is_text() -> None:
    answer = fake_model().bind_tools(TOOLS).invoke([SystemMessage("hi"), HumanMessage("How are you?")])

    assert answer.tool_calls == []
    assert "no task" in answer.text


def test_the_latest_task_message_wins() -> None:
    messages = [
        *conversation(),
        AIMessage("", tool_calls=[{"name": "charge_payment", "args": ARGS, "id": "call_1"}]),
        ToolMessage("charged", tool_call_id="call_1"),
        HumanMessage(task_text("reserve_stock", {"quantity": 2, "sku": "SKU-1"})),
    ]

    answer = fake_model().bind_tools(TOOLS).invoke(messages)

    assert answer.tool_calls == [
        {"name": "reserve_stock", "args": {"quantity": 2, "sku": "SKU-1"}, "id": "call_2", "type": "tool_call"}
    ]


def test_a_reask_after_a_bad_call_is_answered_correctly() -> None:
    bad = AIMessage("", tool_calls=[{"name": "delete_database", "args": {}, "id": "call_1"}])
    messages = reask(conversation(), bad, "unknown tool delete_database")

    answer = fake_model().bind_tools(TOOLS).invoke(messages)

    assert answer.tool_calls == [{"name": "charge_payment", "args": ARGS, "id": "call_2", "type": "tool_call"}]


# --------------------------------------------------------------------------- streaming


def scripted_with_text_and_parallel_calls() -> ScriptedChatModel:
    return fake_model(
        scripted(
            AIMessage(
                "I will charge the order and then reserve the stock.",
                tool_calls=[
                    {"name": "charge_payment", "args": ARGS, "id": None},
                    {"name": "reserve_stock", "args": {"sku": "SKU-1", "quantity": 2}, "id": None},
                ],
            )
        )
    )


@pytest.mark.parametrize(
    ("model", "messages"),
    [
        pytest.param(fake_model(), conversation(), id="tool-call"),
        pytest.param(fake_model(), [HumanMessage("Tell me a joke, please.")], id="text"),
        pytest.param(scripted_with_text_and_parallel_calls(), conversation(), id="text-and-parallel-calls"),
    ],
)
def test_stream_aggregates_to_the_invoke_answer(model: ScriptedChatModel, messages: list[BaseMessage]) -> None:
    bound = model.bind_tools(TOOLS)

    chunks = list(bound.stream(messages))
    invoked = bound.invoke(messages)

    assert len(chunks) > 2
    assert_same_answer(aggregate(chunks), invoked)
    if invoked.tool_calls:
        assert any(isinstance(chunk, AIMessageChunk) and chunk.tool_call_chunks for chunk in chunks)
    if invoked.content:
        assert sum(1 for chunk in chunks if chunk.content) > 1, "text should come in several chunks"


async def test_astream_aggregates_to_the_invoke_answer() -> None:
    bound = scripted_with_text_and_parallel_calls().bind_tools(TOOLS)
    messages = conversation()

    chunks = [chunk async for chunk in bound.astream(messages)]
    streamed = aggregate(chunks)

    assert_same_answer(streamed, await bound.ainvoke(messages))
    assert [call["id"] for call in streamed.tool_calls] == ["call_1", "call_1_1"]
    assert [call["name"] for call in streamed.tool_calls] == ["charge_payment", "reserve_stock"]


TRUNCATED = '{"order_id": "o-1001", "amount_cents": 25'
"""Arguments cut short: invalid JSON, which LangChain's partial parser would still read as a dict."""


def answer_with_a_truncated_call() -> AIMessage:
    return AIMessage(
        "Charging now.",
        invalid_tool_calls=[
            invalid_tool_call(name="charge_payment", args=TRUNCATED, id="call_1", error="arguments are not valid JSON")
        ],
    )


def test_an_invalid_call_streams_as_invalid_however_the_chunks_are_added() -> None:
    model = fake_model(scripted(answer_with_a_truncated_call())).bind_tools(TOOLS)

    invoked = model.invoke(conversation())
    chunks = list(model.stream(conversation()))

    assert invoked.tool_calls == []
    assert [c["args"] for c in invoked.invalid_tool_calls] == [TRUNCATED]
    first, *rest = chunks
    assert isinstance(first, AIMessageChunk)
    listed = first + [chunk for chunk in rest if isinstance(chunk, AIMessageChunk)]  # LangChain's own merge
    for total in (added_up(chunks), aggregate(chunks), folded(chunks), listed):
        assert isinstance(total, AIMessageChunk)
        assert_same_answer(total, invoked)
        assert type(total) is AIMessageChunk  # message_chunk_to_message gives an AIMessage again


async def test_an_invalid_call_streams_as_invalid_when_invoked_under_a_streaming_callback() -> None:
    # astream_events makes ainvoke stream and merge the chunks itself.
    model = fake_model(scripted(answer_with_a_truncated_call())).bind_tools(TOOLS)
    ends = [
        event["data"]["output"]
        async for event in model.astream_events(conversation(), version="v2")
        if event["event"] == "on_chat_model_end"
    ]
    streamed = aggregate([chunk async for chunk in model.astream(conversation())])

    (end,) = ends
    assert (
        end.invalid_tool_calls
        == streamed.invalid_tool_calls
        == (await model.ainvoke(conversation())).invalid_tool_calls
    )


# Scripted messages as a provider might answer: text, valid calls with JSON arguments,
# invalid calls (cut-short, non-object or missing arguments) and usage.
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_ARGS = st.dictionaries(st.text(max_size=8), _JSON, max_size=4)
_CALL_IDS = st.none() | st.text(alphabet="abc_123", min_size=1, max_size=8)


@st.composite
def _invalid_arguments(draw: st.DrawFn) -> str | None:
    cut_short = draw(_ARGS.map(json.dumps).filter(lambda text: len(text) > 2))
    return draw(
        st.sampled_from([cut_short[: len(cut_short) // 2], cut_short[:-1]])
        | st.just(None)
        | st.sampled_from(["", "not json", "[1, 2", '"a string"', "42", '{"a": 1}}'])
    )


_TOOL_CALLS = st.lists(
    st.builds(lambda name, args, id_: {"name": name, "args": args, "id": id_}, st.text(max_size=10), _ARGS, _CALL_IDS),
    max_size=3,
)
_INVALID_CALLS = st.lists(
    st.builds(
        invalid_tool_call,
        name=st.none() | st.text(max_size=10),
        args=_invalid_arguments(),
        id=_CALL_IDS,
        error=st.none() | st.text(max_size=20),
    ),
    max_size=3,
)


def usage_metadata(input_tokens: int, output_tokens: int, cache_read: int | None) -> UsageMetadata:
    usage = UsageMetadata(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
    )
    if cache_read is not None:
        usage["input_token_details"] = {"cache_read": cache_read}
    return usage


_COUNTS = st.integers(min_value=0, max_value=10_000)
_USAGE = st.none() | st.builds(
    lambda i, o, cache: usage_metadata(i, o, cache),
    _COUNTS,
    _COUNTS,
    st.none() | _COUNTS,
)
_CONTENT = st.text(max_size=40) | st.lists(
    st.builds(lambda text: {"type": "text", "text": text}, st.text(max_size=12)), min_size=1, max_size=2
)


@given(
    content=_CONTENT,
    tool_calls=_TOOL_CALLS,
    invalid_calls=_INVALID_CALLS,
    usage=_USAGE,
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_streamed_chunks_add_up_to_the_invoked_message(
    content: str | list[str | dict[str, Any]],
    tool_calls: list[dict[str, Any]],
    invalid_calls: list[Any],
    usage: UsageMetadata | None,
) -> None:
    scripted_answer = AIMessage(content, tool_calls=tool_calls, invalid_tool_calls=invalid_calls, usage_metadata=usage)
    model = fake_model(scripted(scripted_answer))

    invoked = model.invoke(conversation())
    chunks = list(model.stream(conversation()))

    total = added_up(chunks)
    assert (total.content, total.tool_calls, total.invalid_tool_calls, total.usage_metadata) == (
        invoked.content,
        invoked.tool_calls,
        invoked.invalid_tool_calls,
        invoked.usage_metadata,
    )
    first, *rest = chunks
    assert isinstance(first, AIMessageChunk)
    listed = first + [chunk for chunk in rest if isinstance(chunk, AIMessageChunk)]
    assert (listed.tool_calls, listed.invalid_tool_calls, listed.usage_metadata) == (
        invoked.tool_calls,
        invoked.invalid_tool_calls,
        invoked.usage_metadata,
    )


async def test_astream_events_report_the_stream() -> None:
    events = [event["event"] async for event in fake_model().bind_tools(TOOLS).astream_events(conversation())]

    assert events[0] == "on_chat_model_start"
    assert events[-1] == "on_chat_model_end"
    assert "on_chat_model_stream" in events


# --------------------------------------------------------------------------- usage and callbacks


def test_usage_metadata_is_an_estimate_from_the_text() -> None:
    question = HumanMessage("x" * 40)

    answer = fake_model().invoke([question])

    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == 40 // 4 + 1
    assert answer.usage_metadata["output_tokens"] == len(answer.text) // 4 + 1
    assert answer.usage_metadata["total_tokens"] == (
        answer.usage_metadata["input_tokens"] + answer.usage_metadata["output_tokens"]
    )


def test_usage_metadata_is_deterministic_and_grows_with_the_conversation() -> None:
    model = fake_model(misbehave("wrong_value")).bind_tools(TOOLS)
    first = model.invoke(conversation())
    again = fake_model(misbehave("wrong_value")).bind_tools(TOOLS).invoke(conversation())
    second = model.invoke(reask(conversation(), first))

    assert first.usage_metadata is not None and second.usage_metadata is not None
    assert first.usage_metadata == again.usage_metadata
    assert first.usage_metadata["output_tokens"] > 1, "tool calls count as output"
    assert second.usage_metadata["input_tokens"] > first.usage_metadata["input_tokens"]


class CountingHandler(BaseCallbackHandler):
    run_inline = True

    def __init__(self) -> None:
        self.starts = 0
        self.ends = 0
        self.outputs: list[LLMResult] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.starts += 1

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self.ends += 1
        self.outputs.append(response)


async def test_callbacks_fire_for_invoke_ainvoke_stream_and_astream() -> None:
    handler = CountingHandler()
    model = fake_model().bind_tools(TOOLS)
    config: RunnableConfig = {"callbacks": [handler]}

    model.invoke(conversation(), config=config)
    await model.ainvoke(conversation(), config=config)
    list(model.stream(conversation(), config=config))
    [chunk async for chunk in model.astream(conversation(), config=config)]

    assert (handler.starts, handler.ends) == (4, 4)
    for result in handler.outputs:
        generation = result.generations[0][0]
        assert isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage)
        assert generation.message.tool_calls[0]["args"] == ARGS


def test_identifying_params_and_model_name() -> None:
    model = ScriptedChatModel(model_name="fake-gpt", policy=misbehave("no_tool_call"))

    assert model._identifying_params == {"model_name": "fake-gpt", "policy": "misbehave('no_tool_call', times=1)"}
    assert model._llm_type == "scripted-chat-model"
    assert model.invoke(conversation()).response_metadata["model_name"] == "fake-gpt"


# --------------------------------------------------------------------------- determinism


def test_same_messages_give_identical_answers_including_ids() -> None:
    one = fake_model().bind_tools(TOOLS).invoke(conversation())
    two = fake_model().bind_tools(TOOLS).invoke(conversation())
    other_run = fake_model().bind_tools(TOOLS).invoke(conversation(run="o-1002"))

    assert one == two
    assert one.id is not None and one.id == two.id
    assert one.tool_calls[0]["id"] == two.tool_calls[0]["id"] == "call_1"
    assert other_run.id != one.id


def test_a_policy_must_answer_with_an_ai_message() -> None:
    def broken(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> AIMessage:
        return HumanMessage("oops")  # type: ignore[return-value]

    with pytest.raises(TypeError, match="not an AIMessage"):
        fake_model(broken).invoke(conversation())


# --------------------------------------------------------------------------- scripted


def test_scripted_answers_in_order_then_follows_the_task() -> None:
    model = fake_model(
        scripted(
            AIMessage("Let me look at the order first."),
            lambda messages, tools: AIMessage("", tool_calls=[{"name": "send_email", "args": {}, "id": None}]),
        )
    ).bind_tools(TOOLS)

    messages = conversation()
    first = model.invoke(messages)
    messages = reask(messages, first, "please call the tool")
    second = model.invoke(messages)
    messages = reask(messages, second)
    third = model.invoke(messages)

    assert first.content == "Let me look at the order first." and first.tool_calls == []
    assert second.tool_calls == [{"name": "send_email", "args": {}, "id": "call_2", "type": "tool_call"}]
    assert third.tool_calls == [{"name": "charge_payment", "args": ARGS, "id": "call_3", "type": "tool_call"}]


def test_scripted_keeps_given_ids_and_fills_missing_ones() -> None:
    policy = scripted(
        AIMessage(
            "",
            id="given-message-id",
            tool_calls=[
                {"name": "charge_payment", "args": ARGS, "id": "given-call-id"},
                {"name": "charge_payment", "args": ARGS, "id": None},
            ],
        )
    )

    direct = policy(conversation(), [])
    answer = fake_model(policy).invoke(conversation())

    assert [call["id"] for call in direct.tool_calls] == ["given-call-id", "call_1_1"]
    assert [call["id"] for call in answer.tool_calls] == ["given-call-id", "call_1_1"]
    assert answer.id == "given-message-id"


def test_scripted_uses_then_when_the_answers_run_out() -> None:
    model = fake_model(scripted(then=misbehave("no_tool_call", times=5))).bind_tools(TOOLS)

    assert model.invoke(conversation()).tool_calls == []


def test_scripted_is_per_conversation_when_conversations_interleave() -> None:
    model = fake_model(scripted(misbehave("unknown_tool"), AIMessage("thinking..."))).bind_tools(TOOLS)
    a, b = (
        conversation(run="a"),
        conversation(run="b", tool_name="reserve_stock", arguments={"sku": "S", "quantity": 1}),
    )

    a1 = model.invoke(a)
    b1 = model.invoke(b)
    a = reask(a, a1)
    a2 = model.invoke(a)
    b = reask(b, b1)
    b2 = model.invoke(b)
    a3 = model.invoke(reask(a, a2))
    b3 = model.invoke(reask(b, b2))

    assert [c["name"] for c in a1.tool_calls] == [c["name"] for c in b1.tool_calls] == ["delete_database"]
    assert a2.content == b2.content == "thinking..."
    assert a3.tool_calls == [{"name": "charge_payment", "args": ARGS, "id": "call_3", "type": "tool_call"}]
    assert b3.tool_calls == [
        {"name": "reserve_stock", "args": {"sku": "S", "quantity": 1}, "id": "call_3", "type": "tool_call"}
    ]


async def test_scripted_is_per_conversation_under_concurrency() -> None:
    model = fake_model(scripted(AIMessage("first"), AIMessage("second"))).bind_tools(TOOLS)

    async def run(name: str) -> list[str]:
        messages = conversation(run=name)
        texts = []
        for _ in range(3):
            answer = await model.ainvoke(messages)
            texts.append(answer.text or answer.tool_calls[0]["name"])
            messages = reask(messages, answer)
            await asyncio.sleep(0)
        return texts

    results = await asyncio.gather(*(run(f"o-{i}") for i in range(20)))

    assert all(texts == ["first", "second", "charge_payment"] for texts in results)


# --------------------------------------------------------------------------- misbehave


def answer_then_reask(fault: str, **kwargs: Any) -> tuple[AIMessage, AIMessage]:
    model = fake_model(misbehave(fault, **kwargs)).bind_tools(TOOLS)
    bad = model.invoke(conversation())
    good = model.invoke(reask(conversation(), bad))
    assert good.tool_calls == [{"name": "charge_payment", "args": ARGS, "id": "call_2", "type": "tool_call"}]
    return bad, good


def test_misbehave_unknown_tool() -> None:
    bad, _ = answer_then_reask("unknown_tool")

    assert [(c["name"], c["args"], c["id"]) for c in bad.tool_calls] == [("delete_database", ARGS, "call_1")]


def test_misbehave_invalid_arguments() -> None:
    bad, _ = answer_then_reask("invalid_arguments")

    (call,) = bad.tool_calls
    assert call["name"] == "charge_payment"
    assert "bogus_field" in call["args"]
    missing = set(ARGS) - set(call["args"])
    assert len(missing) == 1
    with pytest.raises(ValidationError):
        charge_payment.invoke(call["args"])


def test_misbehave_wrong_value_bumps_numbers() -> None:
    bad, _ = answer_then_reask("wrong_value")

    (call,) = bad.tool_calls
    assert call["name"] == "charge_payment"
    assert call["args"] == {**ARGS, "amount_cents": ARGS["amount_cents"] + 1}


def test_misbehave_wrong_value_without_numbers_changes_the_first_string() -> None:
    model = fake_model(misbehave("wrong_value")).bind_tools(TOOLS)

    bad = model.invoke(conversation("send_email", {"subject": "Your order", "to": "a@example.com"}))

    assert bad.tool_calls[0]["args"] == {"subject": "WRONG", "to": "a@example.com"}


def test_misbehave_no_tool_call() -> None:
    bad, _ = answer_then_reask("no_tool_call")

    assert bad.tool_calls == []
    assert bad.text


def test_misbehave_parallel_calls() -> None:
    bad, _ = answer_then_reask("parallel_calls")

    assert [(c["name"], c["args"]) for c in bad.tool_calls] == [("charge_payment", ARGS)] * 2
    assert [c["id"] for c in bad.tool_calls] == ["call_1", "call_1_1"]


@pytest.mark.parametrize("fault", FAULTS)
def test_every_fault_streams_like_it_invokes(fault: str) -> None:
    model = fake_model(misbehave(fault)).bind_tools(TOOLS)

    assert_same_answer(aggregate(list(model.stream(conversation()))), model.invoke(conversation()))


def test_misbehave_times_and_when() -> None:
    def is_payment(task: Task) -> bool:
        return task.tool == "charge_payment"

    model = fake_model(misbehave("no_tool_call", times=2, when=is_payment)).bind_tools(TOOLS)
    messages = conversation()
    answers = []
    for _ in range(3):
        answer = model.invoke(messages)
        answers.append(answer)
        messages = reask(messages, answer)
    stock = model.invoke(conversation("reserve_stock", {"sku": "S", "quantity": 1}))

    assert [len(a.tool_calls) for a in answers] == [0, 0, 1]
    assert stock.tool_calls[0]["name"] == "reserve_stock"


def test_misbehave_rejects_an_unknown_fault_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid faults") as excinfo:
        misbehave("hallucinate")

    assert "hallucinate" in str(excinfo.value)
    for fault in FAULTS:
        assert fault in str(excinfo.value)


# --------------------------------------------------------------------------- tool_choice


@tool
def magic_function_no_args() -> int:
    """Calculate a magic function."""
    return 5


QUERY = "What is the value of magic_function()? Use the tool."


@pytest.mark.parametrize(
    "tool_choice",
    [
        "magic_function_no_args",
        "any",
        {"type": "function", "function": {"name": "magic_function_no_args"}},
    ],
)
def test_tool_choice_forces_a_call_of_a_tool_without_arguments(tool_choice: Any) -> None:
    # What langchain_tests' ChatModelIntegrationTests.test_tool_calling_with_no_arguments
    # asks: invoke and stream each answer with one call of the tool, no arguments.
    model = fake_model().bind_tools([magic_function_no_args], tool_choice=tool_choice)

    invoked = model.invoke(QUERY)
    streamed = folded(model.stream(QUERY))

    for answer in (invoked, streamed):
        assert isinstance(answer, AIMessage)
        (call,) = answer.tool_calls
        assert call["name"] == "magic_function_no_args"
        assert call["args"] == {}
        assert call["id"] is not None
        assert call.get("type") == "tool_call"


def test_tool_choice_never_overrides_a_task() -> None:
    model = fake_model().bind_tools([*TOOLS, magic_function_no_args], tool_choice="magic_function_no_args")

    answer = model.invoke(conversation())

    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("charge_payment", ARGS)]


@pytest.mark.parametrize("tool_choice", ["auto", "none", None])
def test_a_tool_choice_that_does_not_force_leaves_the_text_answer(tool_choice: str | None) -> None:
    answer = fake_model().bind_tools([magic_function_no_args], tool_choice=tool_choice).invoke(QUERY)

    assert answer.tool_calls == []
    assert "no task" in answer.text


def test_any_with_several_tools_forces_nothing() -> None:
    answer = fake_model().bind_tools([magic_function_no_args, send_email], tool_choice="any").invoke(QUERY)

    assert answer.tool_calls == []


def test_a_forced_tool_with_required_arguments_is_refused_naming_them() -> None:
    model = fake_model().bind_tools(TOOLS, tool_choice="reserve_stock")

    with pytest.raises(ValueError, match="required arguments") as excinfo:
        model.invoke(QUERY)

    assert "quantity, sku" in str(excinfo.value) or "sku, quantity" in str(excinfo.value)
    assert "task message" in str(excinfo.value)


def test_a_forced_tool_that_is_not_bound_is_refused_naming_the_bound_ones() -> None:
    model = fake_model().bind_tools([magic_function_no_args], tool_choice="delete_database")

    with pytest.raises(ValueError, match="not bound") as excinfo:
        model.invoke(QUERY)

    assert "magic_function_no_args" in str(excinfo.value)
