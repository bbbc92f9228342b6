"""OpenTelemetry spans of a run, in process: one tree per order under the caller's
span, in both modes, with the GenAI attributes of model and tool calls and the
messaging attributes of choreography's events; and nothing changes without an SDK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_coordinator import open_coordinator
from agent_coordinator.core import telemetry
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from tests.e2e.test_orders_e2e import EXPECTED, FAST, example_orders


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with telemetry.use_provider(provider):
        yield exporter


def roots_of(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The spans whose parent is not among ``spans``: one per tree."""
    ids = {s.context.span_id for s in spans}
    return [s for s in spans if s.parent is None or s.parent.span_id not in ids]


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
async def test_each_order_is_one_tree_under_the_callers_span(mode: str, exported: InMemorySpanExporter) -> None:
    sandbox = Sandbox()
    tracer = telemetry._tracer()
    traces: dict[str, int] = {}
    async with (
        sandbox.client() as client,
        open_coordinator(ORDER_FULFILMENT, agents=order_agents(client=client), mode=mode, settings=FAST) as coordinator,
    ):
        for order in example_orders():
            with tracer.start_as_current_span(f"request {order['order_id']}") as request:
                result = await coordinator.run(order)
                traces[order["order_id"]] = request.get_span_context().trace_id
            assert result.status is EXPECTED[order["order_id"]]
            assert all(e.traceparent.split("-")[1] == f"{traces[order['order_id']]:032x}" for e in result.events)
    spans = list(exported.get_finished_spans())
    by_trace: dict[int, list[ReadableSpan]] = {}
    for s in spans:
        by_trace.setdefault(s.context.trace_id, []).append(s)
    assert set(by_trace) == set(traces.values())  # every span in one of the orders' traces
    for order_id, trace_id in traces.items():
        roots = roots_of(by_trace[trace_id])
        assert [r.name for r in roots] == [f"request {order_id}"], f"{order_id} is not one tree"
        names = {s.name for s in by_trace[trace_id]}
        assert "step inventory" in names and any(n.startswith("chat ") for n in names)
        assert any(n.startswith("execute_tool ") for n in names)
        if mode == "choreography":
            assert "process OrderPlaced" in names and "publish OrderPlaced" in names
        else:
            assert f"run {ORDER_FULFILMENT.name}" in names and "checkpoint write" in names
        assert all(s.attributes.get("coordinator.workflow_id") in (None, order_id) for s in by_trace[trace_id])
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert all(s.attributes["gen_ai.operation.name"] == "chat" for s in chats)
    assert all(s.attributes["gen_ai.usage.input_tokens"] > 0 for s in chats)
    undo = [s for s in by_trace[traces["o-1004"]] if s.name == "compensate inventory"]
    assert len(undo) == 1 and undo[0].status.is_ok
    failed_step = next(s for s in by_trace[traces["o-1004"]] if s.name == "step payment")
    assert failed_step.status.status_code is trace.StatusCode.ERROR
    assert "card declined" in (failed_step.status.description or "")


async def test_without_an_sdk_events_keep_their_derived_trace_ids() -> None:
    sandbox = Sandbox()
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT, agents=order_agents(client=client), mode="choreography", settings=FAST
        ) as coordinator,
    ):
        result = await coordinator.run(example_orders()[0])
    for event in result.events:
        span_id = event.traceparent.split("-")[2]
        assert span_id == event.id.replace("-", "")[:16]  # derived from the event id, not a span
    assert len({e.traceparent.split("-")[1] for e in result.events}) == 1
