"""A real LangChain client (langchain-openai's ChatOpenAI) against an OpenAI-compatible
server on loopback (:mod:`tests.openai_stub`): the example orders in both modes,
real-model faults, retries, a provider that stays down (the run stops, nothing
undone), and cassettes recorded
against it and replayed without it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI  # the dev extra installs it: these tests must not skip

from agent_coordinator import (
    MODES,
    LogicalClock,
    MemoryEventLog,
    RunSettings,
    StepStatus,
    WorkflowResult,
    WorkflowStatus,
    open_coordinator,
)
from agent_coordinator.agents.cassette import RecordedExchange, RecordingChatModel, ReplayingChatModel, load_cassette
from agent_coordinator.agents.models import resolve_model
from agent_coordinator.core.settings import Backoff
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from tests.e2e.test_orders_e2e import EXAMPLES, EXPECTED, FAST, example_orders
from tests.openai_stub import HALLUCINATED_TOOL, Fault, OpenAIStub, StubServer

AGENTS = tuple(dict.fromkeys(step.agent for step in ORDER_FULFILMENT.steps))
COMMITTED_CASSETTE = EXAMPLES / "cassettes"


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubServer]:
    """One loopback server for the module; each test mounts a stub of its own."""
    with StubServer.running() as server:
        yield server


@asynccontextmanager
async def chat_openai(url: str, **options: Any) -> AsyncIterator[BaseChatModel]:
    """ChatOpenAI at ``url`` with its own HTTP client (closed after, so no connection
    outlives this test's event loop) and no retries of its own: the runner's apply."""
    async with httpx.AsyncClient() as http:
        settings: dict[str, Any] = {"max_retries": 0, "timeout": 10.0, **options}
        yield ChatOpenAI(base_url=url, api_key="test", model="stub", http_async_client=http, **settings)


async def run_example_orders(
    mode: str,
    model: BaseChatModel | Mapping[str, BaseChatModel] | None,
    *,
    orders: Sequence[dict[str, Any]] | None = None,
    record: str | Path | None = None,
    settings: RunSettings = FAST,
) -> tuple[list[WorkflowResult], Sandbox]:
    """The example orders (or ``orders``) with ``model`` for every agent (``record``:
    each agent's model wrapped in a RecordingChatModel writing to that directory)."""
    models: dict[str, BaseChatModel] | None = None
    if model is not None:
        models = {name: model[name] if isinstance(model, Mapping) else model for name in AGENTS}
        if record is not None:
            models = {
                name: RecordingChatModel(inner=inner, directory=Path(record), agent=name)
                for name, inner in models.items()
            }
    sandbox = Sandbox()
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client, model=models),
            mode=mode,
            settings=settings,
            clock=LogicalClock(),
            event_log=MemoryEventLog(),
        ) as coordinator,
    ):
        inputs = [ORDER_FULFILMENT.validate_input(o) for o in (orders or example_orders())]
        results = await coordinator.run_many(inputs, concurrency=8)
    return results, sandbox


def outcomes(results: Sequence[WorkflowResult]) -> dict[str, Any]:
    """What must not depend on the model: statuses, step statuses and results, reasons."""
    return {
        r.workflow_id: (r.status, r.reason, [(s.step, s.status, s.result, s.compensation_result) for s in r.steps])
        for r in results
    }


def usage_table(results: Sequence[WorkflowResult]) -> str:
    rows = ["order   status        model calls  input tokens  output tokens"]
    for r in results:
        u = r.usage
        rows.append(
            f"{r.workflow_id:7} {r.status.value:13} {u.model_calls:11}  {u.input_tokens:12}  {u.output_tokens:13}"
        )
    total = sum((r.usage for r in results), start=results[0].usage.__class__())
    rows.append(f"{'total':21} {total.model_calls:11}  {total.input_tokens:12}  {total.output_tokens:13}")
    return "\n".join(rows)


@pytest.mark.parametrize("mode", MODES)
async def test_the_example_orders_through_chatopenai_end_as_with_the_fake_model(
    mode: str, stub_server: StubServer
) -> None:
    stub = OpenAIStub()
    with stub_server.serving(stub) as url:
        async with chat_openai(url) as model:
            results, sandbox = await run_example_orders(mode, model)
    fake_results, _ = await run_example_orders(mode, None)
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    assert outcomes(results) == outcomes(fake_results)
    assert check_order_effects(sandbox, results) == []
    # Exactly one model call per step performed: the first answer is always right.
    for result in results:
        assert result.usage.model_calls == result.steps_done + sum(
            1 for s in result.steps if s.status is StepStatus.FAILED
        ), result.workflow_id
        assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert stub.statuses() == {200: sum(r.usage.model_calls for r in results)}
    print(f"\nmodel calls and tokens per order, ChatOpenAI -> loopback stub, {mode}:\n{usage_table(results)}")


REASKS = {
    "parallel_calls": "you made 2 tool calls at once (`reserve_stock`, `reserve_stock`); make exactly one call of "
    "`reserve_stock`",
    "text_answer": "you answered without calling a tool; call `reserve_stock` exactly once",
    "wrong_types": "invalid arguments for `reserve_stock`: items: Input should be a valid list",
    "hallucinated_tool": f"unknown tool `{HALLUCINATED_TOOL}`; your tools are ['reserve_stock']; call `reserve_stock`",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", sorted(REASKS))
async def test_a_real_models_mistakes_are_reasked_within_the_bound(
    mode: str, fault: str, stub_server: StubServer
) -> None:
    stub = OpenAIStub(Fault(fault))  # the first answer of every conversation is wrong
    with stub_server.serving(stub) as url:
        async with chat_openai(url) as model:
            results, sandbox = await run_example_orders(mode, model)
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    assert check_order_effects(sandbox, results) == []
    first = results[0].outcome("inventory")
    assert first.rejections == [REASKS[fault]]
    for result in results:
        for step in result.steps:
            if step.status is not StepStatus.PENDING:
                assert step.usage.model_calls == 2 and len(step.rejections) == 1, (result.workflow_id, step.step)


async def test_rate_limits_are_retried_with_backoff(stub_server: StubServer) -> None:
    stub = OpenAIStub(Fault("rate_limited", times=2))  # every request: 429, 429, then an answer
    with stub_server.serving(stub) as url:
        async with chat_openai(url) as model:
            results, sandbox = await run_example_orders("orchestration", model)
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    assert check_order_effects(sandbox, results) == []
    answered = sum(r.usage.model_calls for r in results)
    assert stub.statuses() == {429: 2 * answered, 200: answered}


async def test_a_request_that_times_out_is_retried(stub_server: StubServer) -> None:
    stub = OpenAIStub(Fault("slow", tool="charge_payment"))  # the first charge request hangs
    with stub_server.serving(stub) as url:
        async with chat_openai(url, timeout=1.0) as model:
            results, sandbox = await run_example_orders("orchestration", model, orders=example_orders()[:1])
    (result,) = results
    assert result.status is WorkflowStatus.COMPLETED
    assert result.outcome("payment").usage.model_calls == 1
    assert [c.tool for c in stub.calls].count("charge_payment") == 2  # the timed-out one and its retry
    assert check_order_effects(sandbox, results) == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_provider_that_stays_down_stops_the_run_with_nothing_undone(mode: str, stub_server: StubServer) -> None:
    stub = OpenAIStub(Fault("unavailable", times=10**9, tool="schedule_shipment"))
    settings = FAST.model_copy(update={"tool_retries": Backoff(max_attempts=3, initial_delay=0.001)})
    with stub_server.serving(stub) as url:
        async with chat_openai(url) as model:
            results, sandbox = await run_example_orders(mode, model, orders=example_orders()[:1], settings=settings)
    (result,) = results
    # Our provider's outage is not the customer's answer: the order waits, resumable.
    assert result.status is WorkflowStatus.FAILED
    assert [s.status for s in result.steps] == [StepStatus.SUCCEEDED, StepStatus.SUCCEEDED, StepStatus.PENDING]
    assert result.reason is not None and result.reason.startswith(
        "step 'shipping' stopped, nothing undone: the model of agent 'shipping' could not be reached: "
        "3 calls failed, last: "
    )
    assert "503" in result.reason
    assert stub.statuses()[503] == 3
    assert sandbox.effects_for("o-1001").counts == {"reservation:held": 1, "charge:captured": 1}


async def test_with_the_compensate_policy_a_provider_that_stays_down_leaves_the_order_needing_attention(
    stub_server: StubServer,
) -> None:
    stub = OpenAIStub(Fault("unavailable", times=10**9, tool="schedule_shipment"))
    settings = FAST.model_copy(
        update={"tool_retries": Backoff(max_attempts=3, initial_delay=0.001), "on_model_unavailable": "compensate"}
    )
    with stub_server.serving(stub) as url:
        async with chat_openai(url) as model:
            results, sandbox = await run_example_orders(
                "orchestration", model, orders=example_orders()[:1], settings=settings
            )
    (result,) = results
    assert result.status is WorkflowStatus.NEEDS_ATTENTION
    assert [s.status for s in result.steps] == [StepStatus.COMPENSATED, StepStatus.COMPENSATED, StepStatus.FAILED]
    shipping = result.outcome("shipping")
    assert shipping.reason is not None and "could not be reached: 3 calls failed" in shipping.reason
    assert sandbox.effects_for("o-1001").outstanding == []


async def test_a_recorded_session_replays_identically_without_the_server(
    tmp_path: Path, stub_server: StubServer
) -> None:
    cassette = tmp_path / "cassette"
    with stub_server.serving(OpenAIStub()) as url:
        async with chat_openai(url) as model:
            recorded, _ = await run_example_orders("orchestration", model, record=cassette)
    assert len(load_cassette(cassette)) == sum(r.usage.model_calls for r in recorded)
    for mode in MODES:
        replaying = {name: ReplayingChatModel(cassette, agent=name) for name in AGENTS}
        replayed, sandbox = await run_example_orders(mode, replaying)
        assert check_order_effects(sandbox, replayed) == []
        for a, b in zip(recorded, replayed, strict=True):
            assert [e.to_json() for e in a.events] == [e.to_json() for e in b.events], (mode, a.workflow_id)
            assert a.usage == b.usage


async def test_the_committed_cassette_is_what_the_stub_records_today(tmp_path: Path, stub_server: StubServer) -> None:
    """Guards the committed cassette against drift: a change to the prompts, the tools or
    the stub shows up here first. Record it again with
    ``python -m tests.openai_stub record examples/orders/cassettes`` (after emptying it)."""
    fresh = tmp_path / "fresh"
    with stub_server.serving(OpenAIStub()) as url:
        async with chat_openai(url) as model:
            await run_example_orders("orchestration", model, record=fresh)
    committed = {e.key: essentials(e) for e in load_cassette(COMMITTED_CASSETTE)}
    recorded = {e.key: essentials(e) for e in load_cassette(fresh)}
    assert sorted(recorded) == sorted(committed)  # the same requests, so the same keys
    assert recorded == committed  # and the same answers


def essentials(exchange: RecordedExchange) -> dict[str, Any]:
    """What a cassette entry must keep: the request, and the answer's text, tool calls and
    usage (not metadata a newer langchain-openai may add, nor the message id LangChain
    draws at random when the provider's message has none)."""
    answer = exchange.answer
    return {
        "agent": exchange.agent,
        "request": exchange.request,
        "answer": [answer.content, answer.tool_calls, answer.usage_metadata],
    }


async def test_resolve_model_takes_the_key_and_base_url_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch, stub_server: StubServer
) -> None:
    secret = "sk-test-4f6c1a9e-never-in-events"
    stub = OpenAIStub(Fault("text_answer", tool="charge_payment"))
    with stub_server.serving(stub) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        async with httpx.AsyncClient() as http:
            model = resolve_model("openai:stub-model", options={"max_retries": 0, "http_async_client": http})
            results, _ = await run_example_orders("orchestration", model, orders=example_orders()[:1])
    (result,) = results
    assert result.status is WorkflowStatus.COMPLETED
    assert {call.api_key for call in stub.calls} == {secret}
    assert result.events[-1].data is not None
    logged = json.dumps([e.to_json() for e in result.events]) + result.model_dump_json()
    assert secret not in logged
    assert result.outcome("payment").rejections  # a rejection was recorded, without the key


async def test_a_refused_key_stops_the_run_at_once_and_never_reaches_the_event_log(
    monkeypatch: pytest.MonkeyPatch, stub_server: StubServer
) -> None:
    secret = "sk-test-0c5e2b7d-refused"
    stub = OpenAIStub(Fault("unauthorized", times=10**9, tool="charge_payment"))
    with stub_server.serving(stub) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        async with httpx.AsyncClient() as http:
            model = resolve_model("openai:stub-model", options={"max_retries": 0, "http_async_client": http})
            results, sandbox = await run_example_orders("orchestration", model, orders=example_orders()[:1])
    (result,) = results
    # A refused key is our configuration, not the customer's answer: the run stops.
    assert result.status is WorkflowStatus.FAILED
    assert result.reason is not None and result.reason.startswith(
        "step 'payment' stopped, nothing undone: the model of agent 'payment' refused our configuration "
        "(HTTP 401): OpenAIAuthenticationError: "
    )
    assert "Incorrect API key provided: ***" in result.reason
    assert stub.statuses()[401] == 1  # a refused key is not retried
    assert secret not in json.dumps([e.to_json() for e in result.events]) + result.model_dump_json()
    assert sandbox.effects_for("o-1001").counts == {"reservation:held": 1}
