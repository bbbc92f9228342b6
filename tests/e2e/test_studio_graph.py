"""LangGraph's own tooling sees a usable graph (issue 11, item 9): the Studio graph's
input is the order itself, its run parameters come from ``configurable``, its runs
land in the state directory's event log, and the drawing shows the saga."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from pydantic import BaseModel, TypeAdapter
from typer.testing import CliRunner

from agent_coordinator import (
    EventFactory,
    MemoryEventLog,
    SqliteEventLog,
    Step,
    StepEvents,
    Workflow,
    WorkflowDefinitionError,
)
from agent_coordinator.agents.fake import ScriptedChatModel
from agent_coordinator.core.agent import Agent
from agent_coordinator.core.runner import StepRunner
from agent_coordinator.core.saga import Saga
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents, order_fulfilment_app
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.examples.orders.studio import make_graph
from agent_coordinator.examples.orders.tools import Order
from agent_coordinator.graphs.orchestrator import RunState, build_graph
from agent_coordinator.graphs.studio import compile_graph, studio_graph
from agent_coordinator.graphs.supervisor import ModelSupervisor
from agent_coordinator.modes import Orchestration
from agent_coordinator.shell.cli import app
from tests.e2e.test_orders_e2e import example_orders

ORDER = example_orders()[0]  # o-1001: completes


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(directory))
    monkeypatch.setenv("COLUMNS", "200")
    return directory


def logged_types(state_dir: Path, workflow_id: str) -> list[str]:
    log = SqliteEventLog(state_dir / "events.db")
    try:
        return [e.type for e in log.events(workflow_id)]
    finally:
        log.close()


def test_the_graph_state_is_a_schema_pydantic_can_derive() -> None:
    # typing.TypedDict on Python 3.11 made this raise, and LangGraph's API with it.
    TypeAdapter(RunState).json_schema()


def test_the_studio_graphs_input_schema_is_the_orders(state_dir: Path) -> None:
    graph = make_graph()
    assert graph.get_input_jsonschema() == Order.model_json_schema()
    assert set(graph.get_output_jsonschema()["properties"]) == {"last", "step", "supervisor_usage"}


async def test_invoking_the_studio_graph_with_a_plain_order_completes_it_and_logs_it(state_dir: Path) -> None:
    graph = make_graph()  # what `langgraph dev` loads (its server brings the checkpointer)
    out = await graph.ainvoke(ORDER)
    assert out["last"]["type"] == "OrderCompleted" and out["last"]["subject"] == "o-1001"
    assert logged_types(state_dir, "o-1001") == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentProcessed",
        "ShipmentScheduled",
        "OrderCompleted",
    ]
    cli = CliRunner()
    status = cli.invoke(app, ["status", "--json"])
    assert status.exit_code == 0, status.output
    (row,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert (row["workflow_id"], row["status"], row["mode"]) == ("o-1001", "completed", "orchestration")
    assert row["run"].startswith("studio-")
    trace = cli.invoke(app, ["trace", "o-1001"])
    assert trace.exit_code == 0 and "ShipmentScheduled" in trace.stdout
    # Its services are the state directory's: the CLI's world, where the order holds its effects.
    sandbox = Sandbox(store=state_dir / "sandbox.db")
    try:
        assert sandbox.effects_for("o-1001").counts == {
            "reservation:held": 1,
            "charge:captured": 1,
            "shipment:scheduled": 1,
        }
    finally:
        sandbox.close()


async def test_run_parameters_come_from_configurable(state_dir: Path) -> None:
    sandbox = Sandbox()
    async with sandbox.client() as client:
        graph = studio_graph(
            ORDER_FULFILMENT,
            order_agents(client=client),
            state_dir=state_dir,
            configurable_parameters=["approval_threshold_cents"],
            checkpointer=InMemorySaver(),
        )
        config: Any = {"configurable": {"thread_id": "t-1", "approval_threshold_cents": 1}}
        paused = await graph.ainvoke(ORDER, config)
        assert paused["__interrupt__"][0].value["step"] == "payment"
        assert logged_types(state_dir, "o-1001")[-1] == "PaymentApprovalRequested"
        # Resumed without the parameter (a resume request carries no configurable of
        # its own): the decision still lands, on the request the log holds.
        done = await graph.ainvoke(
            Command(resume={"approved": True, "by": "alice"}), {"configurable": {"thread_id": "t-1"}}
        )
        assert done["last"]["type"] == "OrderCompleted"
        assert logged_types(state_dir, "o-1001")[2:5] == [
            "PaymentApprovalRequested",
            "PaymentApproved",
            "PaymentProcessed",
        ]
        # Without the parameter there is no threshold, so no approval.
        second = dict(example_orders()[1])
        unasked = await graph.ainvoke(second, {"configurable": {"thread_id": "t-2"}})
        assert unasked["last"]["type"] == "OrderCompleted"
    assert "PaymentApprovalRequested" not in logged_types(state_dir, second["order_id"])


async def test_an_order_the_log_shows_ended_is_answered_from_it(state_dir: Path) -> None:
    sandbox = Sandbox()
    async with sandbox.client() as client:
        graph = studio_graph(ORDER_FULFILMENT, order_agents(client=client), state_dir=state_dir)
        first = await graph.ainvoke(ORDER)
        again = await graph.ainvoke(ORDER)
    assert again["last"] == first["last"]
    assert len(logged_types(state_dir, "o-1001")) == 5
    assert sandbox.effects_for("o-1001").counts["charge:captured"] == 1


def test_an_input_field_named_like_a_state_key_is_refused() -> None:
    class Job(BaseModel):
        job_id: str
        step: str

    workflow = Workflow(
        name="jobs",
        input_model=Job,
        id_field="job_id",
        started_event="JobStarted",
        completed_event="JobDone",
        cancelled_event="JobCancelled",
        steps=(
            Step(
                name="run",
                agent="worker",
                action="run_job",
                events=StepEvents(succeeded="JobRan", failed="JobFailed", compensated="JobUndone"),
            ),
        ),
    )

    from agent_coordinator import EventFactory, MemoryEventLog
    from agent_coordinator.core.runner import StepRunner
    from agent_coordinator.core.saga import Saga

    @tool
    def run_job(job_id: str) -> str:
        """Run the job."""
        return job_id

    model: BaseChatModel = ScriptedChatModel()
    runner = StepRunner(workflow, [Agent(name="worker", instructions="work", tools=[run_job], model=model)])
    saga = Saga(workflow, factory=EventFactory())
    with pytest.raises(WorkflowDefinitionError, match=r"has fields named like the graph's state keys: \['step'\]"):
        build_graph(runner, saga, event_log=MemoryEventLog(), start_from="input")


# -- the drawing ------------------------------------------------------------------------------


def edges(graph: Any) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in graph.get_graph().edges}


async def test_the_drawing_shows_the_saga_not_every_node_reaching_every_node() -> None:
    drawn = edges(await compile_graph(order_fulfilment_app))
    forward = {("inventory", "payment"), ("payment", "shipping"), ("shipping", "__end__")}
    undo = {("payment", "compensate"), ("shipping", "compensate"), ("compensate", "compensate")}
    ends = {("inventory", "__end__"), ("payment", "__end__"), ("compensate", "__end__")}  # cancel, stop, cancel
    entry = {("__start__", "supervisor")} | {
        ("supervisor", node) for node in ("inventory", "payment", "shipping", "compensate", "__end__")
    }
    assert drawn == forward | undo | ends | entry
    assert len(drawn) == 15  # was 31: every node to every node
    assert not {("shipping", "payment"), ("compensate", "payment"), ("payment", "inventory")} & drawn


def test_coordinator_graph_labels_each_route_with_its_events(state_dir: Path) -> None:
    result = CliRunner().invoke(app, ["graph"])
    assert result.exit_code == 0, result.output
    for line in (
        "inventory -. &nbsp;InventoryReserved&nbsp; .-> payment;",
        "payment -. &nbsp;PaymentFailed / PaymentRejected&nbsp; .-> compensate;",
        "compensate -. &nbsp;PaymentRefunded / PaymentRefundedFailed&nbsp; .-> compensate;",
        "compensate -. &nbsp;InventoryReleased / InventoryReleasedFailed&nbsp; .-> __end__;",
        "payment -. &nbsp;PaymentStopped&nbsp; .-> __end__;",
    ):
        assert line in result.stdout


async def test_with_a_model_supervisor_every_worker_reports_back_to_it() -> None:
    async with Sandbox().client() as client:
        runner = StepRunner(ORDER_FULFILMENT, order_agents(client=client))
    supervisor = ModelSupervisor(ScriptedChatModel(), ORDER_FULFILMENT)
    graph = build_graph(
        runner, Saga(ORDER_FULFILMENT, factory=EventFactory()), event_log=MemoryEventLog(), supervisor=supervisor
    ).compile()
    workers = ("inventory", "payment", "shipping", "compensate")
    assert {(s, t) for s, t in edges(graph) if s in workers} == {(w, "supervisor") for w in workers}


async def test_an_approval_given_by_a_process_without_the_threshold_is_still_recorded() -> None:
    """`coordinator approve ID` without repeating `--param`: the step pauses on the
    request it logged and records the decision (it used to charge without either)."""
    from agent_coordinator import LogicalClock, RunSettings, open_coordinator

    sandbox, log, saver = Sandbox(), MemoryEventLog(), InMemorySaver()
    asking = RunSettings(parameters={"approval_threshold_cents": 1})
    async with sandbox.client() as client:
        for settings, act in ((asking, "run"), (RunSettings(), "approve")):
            async with open_coordinator(
                ORDER_FULFILMENT,
                agents=order_agents(client=client),
                settings=settings,
                event_log=log,
                mode=Orchestration(checkpointer=saver),
                clock=LogicalClock(),
            ) as coordinator:
                if act == "run":
                    assert (await coordinator.run(ORDER)).status.value == "awaiting_approval"
                else:
                    done = await coordinator.approve("o-1001", by="alice")
    assert done.status.value == "completed"
    approved = next(e for e in done.events if e.type == "PaymentApproved")
    assert approved.data["by"] == "alice"
    processed = next(e for e in done.events if e.type == "PaymentProcessed")
    assert processed.causation_id == approved.id
