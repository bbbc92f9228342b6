"""The reference implementations our coordinators are measured against.

Each runs in the same harness as ours (same driver, warm-up, counters, orders and
sandbox world), so a ratio to a reference isolates what our coordination costs.

R1 -- the floor (:func:`run_r1`)
    A hand-written asyncio saga: for each order, ``await`` each step's tool
    *coroutine* directly (``StructuredTool.coroutine``, i.e. the function the tool
    wraps, skipping LangChain's ``ainvoke`` machinery), with the same
    :class:`~agent_coordinator.core.context.ToolCallContext` (idempotency key) a coordinator
    sends; transient failures are retried with the default
    :class:`~agent_coordinator.core.settings.Backoff`; a business failure undoes the completed
    steps in reverse. No model, no events, no checkpoints, no bus: it is the cost of
    the three service calls over ``httpx.ASGITransport`` and little else. Nothing
    that coordinates model-driven agents can be faster; it is the denominator of
    "within 10x of R1".

R2 -- the usual LangGraph way (:func:`run_r2`)
    A supervisor graph whose workers are three prebuilt ReAct agents
    (``langgraph.prebuilt.create_react_agent``), each given its agent's two tools and
    instructions, on ``InMemorySaver`` (R2) or ``AsyncSqliteSaver`` (R2s). The
    supervisor is a plain function (like our default supervisor: no model) that
    hands the next unfinished step to its agent with ``Command(goto=...)``; the
    agent node invokes the ReAct agent with the same task message our runner sends
    (:func:`agent_coordinator.core.task.render_task`, same facts) and the step's ``ToolCallContext``
    in its config. The same :class:`~benchmarks.workload.BenchmarkChatModel` answers,
    with the policy a ReAct loop needs: call the task's tool, then, seeing the tool's
    result, answer in text (the loop's stop condition) -- two model calls per step,
    which is what the prebuilt loop costs. Threads are never deleted (the usual
    way). R2 has no compensation: in the benchmark world no step fails.

R3 -- the broker floor (:func:`run_r3_rabbitmq`, :func:`run_r3_nats`)
    One message, one hop: publish (waiting for the broker's confirm), consume, ack
    manually, and count the message done when the consumer has it. RabbitMQ: a
    durable queue (classic, or quorum with ``queue_type="quorum"``), persistent
    messages, publisher confirms, prefetch = concurrency. NATS: a JetStream stream
    (file storage), ``js.publish`` awaiting its ack, a push consumer with manual
    ack. The body is an example order's JSON. Its unit is messages, not orders.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langchain_core.tools import BaseTool
from pydantic import BaseModel

from agent_coordinator import Backoff, BusinessFailure, Step, ToolCallContext, TransientFailure, Workflow
from agent_coordinator.agents.fake import ToolSpec, follow_task, scripted
from agent_coordinator.core.task import render_task
from agent_coordinator.examples.orders.tools import LineItem, Order
from benchmarks.apps import App, open_app
from benchmarks.backends import DEFAULT_URLS, open_checkpointer, require_module, require_reachable
from benchmarks.measure import Counts, Measurement, Request, count_checkpoint_writes, measure
from benchmarks.synthetic import Job
from benchmarks.workload import EXAMPLE_ORDERS

__all__ = ["run_r1", "run_r2", "run_r3_nats", "run_r3_rabbitmq"]


# --------------------------------------------------------------------------- R1


async def _call(tool: BaseTool, context: ToolCallContext, **arguments: Any) -> dict[str, Any]:
    """Await ``tool``'s coroutine with ``context``; retry transient failures."""
    coroutine: Callable[..., Awaitable[dict[str, Any]]] | None = getattr(tool, "coroutine", None)
    if coroutine is None:
        raise TypeError(f"tool {tool.name!r} has no coroutine; R1 calls async StructuredTools only")
    backoff = Backoff()
    for attempt in range(1, backoff.max_attempts + 1):
        try:
            return await coroutine(**arguments, config=context.as_config())
        except TransientFailure:
            if attempt == backoff.max_attempts:
                raise
            await asyncio.sleep(backoff.delay(attempt, key=context.idempotency_key))
    raise AssertionError("unreachable")  # pragma: no cover


async def _unwind(undo: list[tuple[BaseTool, ToolCallContext, dict[str, Any]]]) -> None:
    for tool, context, arguments in reversed(undo):
        await _call(tool, context, **arguments)


async def fulfil_order(order: Order, tools: Mapping[str, BaseTool]) -> bool:
    """R1 for one order: reserve, charge, ship; on a business failure undo in reverse.

    The idempotency keys are the ones a coordinator would send (workflow id, step,
    tool), so the services do exactly the same work as under our coordinators.
    """
    oid = order.order_id
    items = [LineItem(sku=item.sku, quantity=item.quantity) for item in order.items]
    undo: list[tuple[BaseTool, ToolCallContext, dict[str, Any]]] = []
    try:
        reservation = await _call(
            tools["reserve_stock"],
            ToolCallContext(oid, "inventory", "reserve_stock"),
            order_id=oid,
            items=items,
            currency=order.currency,
        )
        undo.append(
            (
                tools["release_stock"],
                ToolCallContext(oid, "inventory", "release_stock"),
                {"reservation_id": reservation["reservation_id"]},
            )
        )
        charge = await _call(
            tools["charge_payment"],
            ToolCallContext(oid, "payment", "charge_payment"),
            order_id=oid,
            # What the order costs is what the inventory priced it at, as in our workflow.
            amount_cents=reservation["total_cents"],
            currency=reservation["currency"],
            payment_method=order.payment_method,
        )
        undo.append(
            (
                tools["refund_payment"],
                ToolCallContext(oid, "payment", "refund_payment"),
                {"charge_id": charge["charge_id"]},
            )
        )
        await _call(
            tools["schedule_shipment"],
            ToolCallContext(oid, "shipping", "schedule_shipment"),
            order_id=oid,
            address=order.shipping_address,
            items=items,
        )
    except BusinessFailure:
        await _unwind(undo)
        return False
    return True


async def run_job(job: Job, workflow: Workflow, tools: Mapping[str, BaseTool]) -> bool:
    """R1 for one job of a generated workflow: each step's action in turn, undone in
    reverse on a business failure."""
    undo: list[tuple[BaseTool, ToolCallContext, dict[str, Any]]] = []
    try:
        for step in workflow.steps:
            done = await _call(
                tools[step.action], ToolCallContext(job.job_id, step.name, step.action), job_id=job.job_id
            )
            if step.compensation is not None:
                undo.append(
                    (
                        tools[step.compensation],
                        ToolCallContext(job.job_id, step.name, step.compensation),
                        {"token": done["token"]},
                    )
                )
    except BusinessFailure:
        await _unwind(undo)
        return False
    return True


async def run_r1(request: Request) -> Measurement:
    """R1: the hand-written saga over the same tools (see the module docstring)."""
    async with open_app(request) as app:

        async def run_one(item: BaseModel) -> bool:
            if isinstance(item, Order):
                return await fulfil_order(item, app.tools)
            assert isinstance(item, Job)
            return await run_job(item, app.workflow, app.tools)

        def counts() -> Counts:
            return Counts(tool_calls=app.tool_calls())

        return await measure(request, items=app.items, warmup_items=app.warmup_items, run_one=run_one, counts=counts)


# --------------------------------------------------------------------------- R2


def finish_after_tool_result(messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]) -> AIMessage:
    """What a ReAct agent's model says once its tool has answered: a text reply,
    which ends the prebuilt loop."""
    last = messages[-1] if messages else None
    if isinstance(last, ToolMessage):
        return AIMessage(content=f"Done: {last.text}")
    return AIMessage(content="Done.")


#: Call the task's tool first, answer in text after: the two turns of a ReAct step.
REACT_POLICY = scripted(follow_task, then=finish_after_tool_result)


class R2State(TypedDict):
    """The R2 supervisor graph's state: the input, each step's result, the step
    handed off."""

    input: dict[str, Any]
    results: Annotated[dict[str, dict[str, Any]], lambda old, new: {**old, **new}]
    step: str


def _facts(step: Step, tool: BaseTool, input: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """The step's action arguments, as our runner computes them (same task message)."""
    if step.facts is not None:
        normal: dict[str, Any] = json.loads(json.dumps(dict(step.facts(input, results)), default=str))
        return normal
    schema = tool.args_schema
    accepted = set(schema.model_fields) if isinstance(schema, type) and issubclass(schema, BaseModel) else None
    return {k: v for k, v in input.items() if accepted is None or k in accepted}


def build_r2_graph(app: App, checkpointer: Any) -> Any:
    """The R2 graph: a function supervisor and one prebuilt ReAct agent per agent."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command
    from langgraph.warnings import LangGraphDeprecatedSinceV10

    with warnings.catch_warnings():
        # create_react_agent is deprecated in favour of langchain.agents.create_agent;
        # langchain is not a dependency, and the prebuilt agent *is* the reference.
        warnings.simplefilter("ignore", LangGraphDeprecatedSinceV10)
        from langgraph.prebuilt import create_react_agent

        react_agents = {
            agent.name: create_react_agent(app.model, list(agent.tools), prompt=agent.instructions, name=agent.name)
            for agent in app.agents
        }
    workflow = app.workflow
    recursion_limit = 4 * len(workflow.steps) + 6

    async def supervisor(state: R2State) -> Command[str]:
        for step in workflow.steps:
            if step.name not in state["results"]:
                return Command(goto=step.agent, update={"step": step.name})
        return Command(goto=END)

    def agent_node(name: str) -> Callable[[R2State, RunnableConfig], Awaitable[Command[str]]]:
        react = react_agents[name]
        tools = {tool.name: tool for tool in next(a for a in app.agents if a.name == name).tools}

        async def node(state: R2State, config: RunnableConfig) -> Command[str]:
            step = workflow.step(state["step"])
            workflow_id = str(state["input"][workflow.id_field])
            task = render_task(
                workflow=workflow.name,
                workflow_id=workflow_id,
                step=step.name,
                description=step.description,
                tool=step.action,
                arguments=_facts(step, tools[step.action], state["input"], state["results"]),
            )
            context = ToolCallContext(workflow_id, step.name, step.action)
            answer = await react.ainvoke(
                {"messages": [HumanMessage(task)]},
                merge_configs(config, {**context.as_config(), "recursion_limit": recursion_limit}),
            )
            results = [m for m in answer["messages"] if isinstance(m, ToolMessage) and m.status == "success"]
            if not results:
                raise RuntimeError(f"R2 agent {name!r} made no successful tool call for {workflow_id}/{step.name}")
            return Command(goto="supervisor", update={"results": {step.name: json.loads(results[-1].text)}})

        return node

    graph: Any = StateGraph(R2State)
    graph.add_node("supervisor", supervisor, destinations=(*react_agents, END))
    for name in react_agents:
        graph.add_node(name, agent_node(name), destinations=("supervisor",))
    graph.add_edge(START, "supervisor")
    return graph.compile(checkpointer=checkpointer, name=f"r2-{workflow.name}")


async def run_r2(request: Request) -> Measurement:
    """R2 (``checkpointer="memory"``) or R2s (``"sqlite"``): see the module docstring."""
    async with (
        open_app(request, policy=REACT_POLICY) as app,
        open_checkpointer(str(request.options.get("checkpointer", "memory"))) as saver,
    ):
        checkpoints = count_checkpoint_writes(saver)
        graph = build_r2_graph(app, saver)
        recursion_limit = 4 * app.steps + 6
        steps = {step.name for step in app.workflow.steps}

        async def run_one(item: BaseModel) -> bool:
            workflow_id = app.workflow.workflow_id(item)
            config: Any = {"configurable": {"thread_id": workflow_id}, "recursion_limit": recursion_limit}
            state = await graph.ainvoke({"input": item.model_dump(mode="json"), "results": {}, "step": ""}, config)
            return set(state["results"]) == steps

        def counts() -> Counts:
            return Counts(
                model_calls=app.model.calls,
                tool_calls=app.tool_calls(),
                checkpoint_puts=checkpoints.puts,
                checkpoint_put_writes=checkpoints.put_writes,
            )

        return await measure(request, items=app.items, warmup_items=app.warmup_items, run_one=run_one, counts=counts)


# --------------------------------------------------------------------------- R3


def _message_body() -> bytes:
    """One example order as JSON: a realistic event-sized payload."""
    return EXAMPLE_ORDERS.read_text(encoding="utf-8").splitlines()[0].encode()


async def run_r3_rabbitmq(request: Request) -> Measurement:
    """R3 on RabbitMQ: publish with confirm -> consume -> manual ack, one hop."""
    aio_pika = require_module("aio_pika", extra="rabbitmq")
    url = str(request.options.get("url", DEFAULT_URLS["rabbitmq"]))
    require_reachable(url)
    queue_type = str(request.options.get("queue_type", "classic"))
    body = _message_body()
    loop = asyncio.get_running_loop()
    waiters: dict[str, asyncio.Future[None]] = {}
    published = 0

    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=request.concurrency)
        queue = await channel.declare_queue(
            f"bench-r3-{uuid.uuid4().hex[:12]}", durable=True, arguments={"x-queue-type": queue_type}
        )

        async def on_message(message: Any) -> None:
            await message.ack()
            waiter = waiters.pop(message.message_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        tag = await queue.consume(on_message, no_ack=False)
        try:

            async def run_one(i: int) -> bool:
                nonlocal published
                message_id = f"m{i}"
                waiter = waiters[message_id] = loop.create_future()
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        body,
                        message_id=message_id,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=queue.name,
                    mandatory=True,
                )
                published += 1
                await waiter
                return True

            return await measure(
                request,
                items=range(request.orders),
                warmup_items=range(-request.warmup, 0),
                run_one=run_one,
                counts=lambda: Counts(bus_messages=published),
                unit="msgs",
            )
        finally:
            await queue.cancel(tag)
            await queue.delete(if_unused=False, if_empty=False)


async def run_r3_nats(request: Request) -> Measurement:
    """R3 on NATS JetStream: ``js.publish`` (awaits the stream's ack) -> push consumer
    -> manual ack, one hop."""
    nats = require_module("nats", extra="nats")
    url = str(request.options.get("url", DEFAULT_URLS["nats"]))
    require_reachable(url)
    body = _message_body()
    loop = asyncio.get_running_loop()
    waiters: dict[str, asyncio.Future[None]] = {}
    published = 0
    suffix = uuid.uuid4().hex[:12]
    stream, subject = f"BENCH_R3_{suffix}", f"bench.r3.{suffix}"

    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[subject])

        async def on_message(message: Any) -> None:
            await message.ack()
            waiter = waiters.pop((message.headers or {}).get("Nats-Msg-Id", ""), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        subscription = await js.subscribe(
            subject, durable=f"bench-{suffix}", manual_ack=True, cb=on_message, stream=stream
        )
        try:

            async def run_one(i: int) -> bool:
                nonlocal published
                message_id = f"m{i}"
                waiter = waiters[message_id] = loop.create_future()
                await js.publish(subject, body, headers={"Nats-Msg-Id": message_id})
                published += 1
                await waiter
                return True

            return await measure(
                request,
                items=range(request.orders),
                warmup_items=range(-request.warmup, 0),
                run_one=run_one,
                counts=lambda: Counts(bus_messages=published),
                unit="msgs",
            )
        finally:
            await subscription.unsubscribe()
            await js.delete_stream(stream)
    finally:
        await client.close()
