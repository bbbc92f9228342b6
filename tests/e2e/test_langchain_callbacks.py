"""LangChain's callbacks, tags and metadata through the public API: every model and
tool run of a workflow sees them, with the workflow id, step and agent in its
metadata, in both modes -- and tool runs are traced (the direct-call fast path
steps aside when callbacks are given)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler

from agent_coordinator import open_coordinator
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from tests.e2e.test_orders_e2e import EXPECTED, FAST, example_orders


class Recorder(AsyncCallbackHandler):
    """What LangChain told the callbacks: (kind, name, tags, metadata) per run."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, list[str], dict[str, Any]]] = []

    async def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, **kw: Any) -> None:
        self.runs.append(("model", "", list(kw.get("tags") or []), dict(kw.get("metadata") or {})))

    async def on_tool_start(self, serialized: dict[str, Any], input_str: str, **kw: Any) -> None:
        name = serialized.get("name", "")
        self.runs.append(("tool", name, list(kw.get("tags") or []), dict(kw.get("metadata") or {})))


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
async def test_every_model_and_tool_run_carries_the_callers_tags_and_the_runs_identity(mode: str) -> None:
    recorder, sandbox = Recorder(), Sandbox()
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=mode,
            settings=FAST,
            callbacks=[recorder],
            tags=["ci"],
            metadata={"tenant": "acme"},
        ) as coordinator,
    ):
        results = [await coordinator.run(order) for order in example_orders()]
    assert {r.workflow_id: r.status for r in results} == EXPECTED
    models = [r for r in recorder.runs if r[0] == "model"]
    tools = [r for r in recorder.runs if r[0] == "tool"]
    assert len(models) == sum(r.usage.model_calls for r in results) - sum(
        r.supervisor_usage.model_calls for r in results
    )
    assert len(tools) == sum(s.usage.tool_calls for r in results for s in r.steps)  # every attempt, retries too
    for kind, _name, tags, metadata in recorder.runs:
        assert "ci" in tags and metadata["tenant"] == "acme", kind
        assert metadata["workflow"] == "order-fulfilment" and metadata["thread_id"] == metadata["workflow_id"]
        assert f"step:{metadata['step']}" in tags and f"agent:{metadata['agent']}" in tags
    charges = [m for k, name, _, m in recorder.runs if k == "tool" and name == "charge_payment"]
    assert {m["workflow_id"] for m in charges} >= {"o-1001", "o-1004"} and {m["agent"] for m in charges} == {"payment"}
