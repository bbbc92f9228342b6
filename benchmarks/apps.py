"""The application under test: a workflow, its agents and tools, and its inputs.

:func:`open_app` gives every scenario the same thing for a request: either the
flagship order workflow against a fresh sandbox in the :func:`benchmark_world`
(``steps`` not set), or a generated workflow of ``steps`` trivial steps
(:mod:`benchmarks.synthetic`). Scenarios differ only in how they coordinate it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel

from agent_coordinator import Workflow
from agent_coordinator.agents.fake import Policy, follow_task
from agent_coordinator.core.agent import Agent
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.examples.orders.tools import order_tools
from benchmarks.measure import Request
from benchmarks.synthetic import Ledger, generate_jobs, generated_agents, generated_tools, generated_workflow
from benchmarks.workload import BenchmarkChatModel, benchmark_world, generate_orders

__all__ = ["App", "open_app"]


@dataclass
class App:
    """One scenario's application: what to run, on what, and how to count tool calls.

    ``tool_calls()`` counts calls that reached a service (sandbox HTTP requests, or
    generated-ledger calls), so it counts the same thing whoever makes the call.
    """

    workflow: Workflow
    agents: list[Agent]
    tools: dict[str, BaseTool]
    model: BenchmarkChatModel
    items: Sequence[BaseModel]
    warmup_items: Sequence[BaseModel]
    tool_calls: Callable[[], int]
    sandbox: Sandbox | None = None

    @property
    def steps(self) -> int:
        return len(self.workflow.steps)


@asynccontextmanager
async def open_app(request: Request, *, policy: Policy = follow_task) -> AsyncIterator[App]:
    """The application for ``request`` (``options["steps"]`` picks a generated
    workflow), with one :class:`BenchmarkChatModel` of ``request.latency`` answering
    by ``policy`` for every agent."""
    model = BenchmarkChatModel(policy=policy, latency=request.latency)
    # Ids unique to this process: a durable backend never meets an earlier run's ids.
    run = uuid.uuid4().hex[:6]
    steps: Any = request.options.get("steps")
    if steps is None:
        sandbox = Sandbox(benchmark_world())
        async with sandbox.client() as client:
            yield App(
                workflow=ORDER_FULFILMENT,
                agents=order_agents(client=client, model=model),
                tools=order_tools(client=client),
                model=model,
                items=generate_orders(request.orders, prefix=f"{run}b"),
                warmup_items=generate_orders(request.warmup, prefix=f"{run}w"),
                tool_calls=lambda: sum(sandbox.request_counts.values()),
                sandbox=sandbox,
            )
    else:
        workflow = generated_workflow(int(steps))
        ledger = Ledger()
        tools = generated_tools(workflow, ledger)
        yield App(
            workflow=workflow,
            agents=generated_agents(workflow, tools, model),
            tools=tools,
            model=model,
            items=generate_jobs(request.orders, prefix=f"{run}b"),
            warmup_items=generate_jobs(request.warmup, prefix=f"{run}w"),
            tool_calls=lambda: ledger.calls,
        )
