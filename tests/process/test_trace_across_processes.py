"""One order, four processes, one trace: choreography workers on RabbitMQ export
their spans by OTLP (the standard ``OTEL_*`` variables, the SDK of the ``otel``
extra) to a receiver this test serves on loopback, and every order's spans form one
tree rooted at the owner's run span -- the context travels in the events themselves.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.e2e.test_orders_e2e import EXPECTED
from tests.process.test_broker_workers import (
    AGENTS,
    Cluster,
    Where,
    broker,
    finished,
    outcomes,
    sandbox,
    start_run,
    stop_all,
    write_world,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

ORDERS = Path(__file__).resolve().parents[2] / "examples" / "orders" / "orders.jsonl"


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    workflow_id: str | None


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, list[ReceivedSpan]]]:
    """An OTLP/HTTP trace receiver on a free loopback port: its URL and what it got."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    received: list[ReceivedSpan] = []

    async def traces(request: Request) -> Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    own = {a.key: a.value.string_value for a in span.attributes}
                    received.append(
                        ReceivedSpan(
                            attributes.get("service.name", "?"),
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            own.get("coordinator.workflow_id") or None,
                        )
                    )
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])]), log_level="warning")
    )
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.should_exit = True
        await serving


async def test_one_order_carried_by_four_processes_is_one_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, *_ = write_world(tmp_path, 1, prefix="unused")  # its catalogue; the orders are the examples
    (tmp_path / "logs").mkdir()
    async with (
        otlp_receiver() as (endpoint, received),
        broker("rabbitmq") as bus_url,
        sandbox(tmp_path, scenario) as services,
    ):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)  # the processes inherit it
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        where = Where(tmp_path / "state")
        cluster = Cluster(bus_url, services.url, where, tmp_path / "logs")
        run_log = tmp_path / "run.log"
        try:
            for agent in AGENTS:
                await cluster.start(f"{agent}#1")
            await cluster.wait_ready()
            run = await start_run(ORDERS, bus_url, services.url, where, run_log)
            await finished(run, run_log)  # the owner exits: its spans are flushed
            await stop_all(cluster)  # SIGTERM: each worker flushes its spans on the way out
        finally:
            await cluster.close()
    assert {k: r["status"] for k, r in outcomes(run_log).items()} == {k: v.value for k, v in EXPECTED.items()}
    by_order: dict[str, set[str]] = {}
    for span in received:
        if span.workflow_id:
            by_order.setdefault(span.workflow_id, set()).add(span.trace_id)
    assert sorted(by_order) == sorted(EXPECTED)
    assert all(len(traces) == 1 for traces in by_order.values()), by_order  # one trace per order
    for order_id, (trace_id,) in by_order.items():
        spans = [s for s in received if s.trace_id == trace_id]
        ids = {s.span_id for s in spans}
        roots = [s for s in spans if s.parent_id not in ids]
        assert [(r.name, r.service) for r in roots] == [("run order-fulfilment", "agent-coordinator owner")], (
            order_id,
            roots,
        )
    completed = [s for s in received if s.trace_id == next(iter(by_order["o-1001"]))]
    assert {s.service for s in completed} == {
        "agent-coordinator owner",
        "agent-coordinator inventory",
        "agent-coordinator payment",
        "agent-coordinator shipping",
    }
    assert {"step payment", "execute_tool charge_payment", "process InventoryReserved"} <= {s.name for s in completed}
    print("\n" + render(completed))  # one order's tree, for people (-s)


def render(spans: list[ReceivedSpan]) -> str:
    """An indented tree of one trace's spans: name [service]."""
    children: dict[str, list[ReceivedSpan]] = {}
    ids = {s.span_id for s in spans}
    for span in spans:
        children.setdefault(span.parent_id if span.parent_id in ids else "", []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            lines.append(f"{'  ' * depth}{span.name} [{span.service.removeprefix('agent-coordinator ')}]")
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)
