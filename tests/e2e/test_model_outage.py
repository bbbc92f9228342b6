"""A model that cannot be reached is our outage, not the business's answer (issue 12,
"Models"): the run stops ``failed`` with nothing undone and ``resume`` carries it on
once the model is back (``on_model_unavailable="stop"``, the default), or it is undone
but ends ``needs_attention`` (``"compensate"``) -- never a plain ``compensated``. The
same in both modes, with a real ``ChatOpenAI`` whose connections are refused the way
httpx refuses them (``httpx.ConnectError`` -> ``openai.APIConnectionError``)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from agent_coordinator import (
    MODES,
    Coordinator,
    LogicalClock,
    MemoryEventLog,
    RunSettings,
    StepStatus,
    WorkflowResult,
    WorkflowStatus,
    open_coordinator,
)
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.modes import Choreography, Orchestration
from agent_coordinator.shell.cli import app
from tests.e2e.test_orders_e2e import EXAMPLES, EXPECTED, FAST, example_orders
from tests.openai_stub import Fault, OpenAIStub, StubServer

#: Reached the payment step, so the payment model's outage stops them; o-1003 is out
#: of stock at the first step, a business answer given before the outage mattered.
STOPPED = sorted(set(EXPECTED) - {"o-1003"})
REFUSED = (
    f"the model of agent 'payment' could not be reached: {FAST.tool_retries.max_attempts} calls failed, last: "
    "OpenAIConnectionError: Connection error."
)


class Outage(httpx.AsyncBaseTransport):
    """An HTTP transport that refuses every connection while ``down`` (as a dead host's
    kernel does: ``httpx.ConnectError``), and passes requests through otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.refused = 0
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.refused += 1
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubServer]:
    with StubServer.running() as server:
        yield server


@pytest.fixture
def stub_url(stub_server: StubServer) -> Iterator[str]:
    with stub_server.serving(OpenAIStub()) as url:
        yield url


@asynccontextmanager
async def chat_model(url: str, outage: Outage, **options: Any) -> AsyncIterator[BaseChatModel]:
    """ChatOpenAI at ``url`` through ``outage``, without retries of its own (the step
    runner's apply)."""
    async with httpx.AsyncClient(transport=outage) as http:
        settings: dict[str, Any] = {"max_retries": 0, "timeout": 10.0, **options}
        yield ChatOpenAI(base_url=url, api_key="test", model="stub", http_async_client=http, **settings)


@asynccontextmanager
async def session(
    mode: str,
    sandbox: Sandbox,
    models: dict[str, BaseChatModel],
    *,
    event_log: MemoryEventLog,
    checkpointer: InMemorySaver | None = None,
    settings: RunSettings = FAST,
    **options: Any,
) -> AsyncIterator[Coordinator]:
    """A coordinator over ``sandbox`` whose agents named in ``models`` think with them
    (the others with the scripted fake); ``options`` go to the mode. Two sessions on
    one log, checkpointer and sandbox are one process after another."""
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client, model=models),
            mode=(
                Orchestration(checkpointer=checkpointer, **options)
                if mode == "orchestration"
                else Choreography(**options)
            ),
            settings=settings,
            clock=LogicalClock(),
            event_log=event_log,
        ) as coordinator,
    ):
        yield coordinator


async def run_all(coordinator: Coordinator, orders: list[dict[str, Any]] | None = None) -> dict[str, WorkflowResult]:
    inputs = [ORDER_FULFILMENT.validate_input(o) for o in orders or example_orders()]
    return {r.workflow_id: r for r in await coordinator.run_many(inputs, concurrency=8)}


def types(result: WorkflowResult) -> list[str]:
    return [e.type for e in result.events]


def assert_stopped_with_nothing_undone(results: dict[str, WorkflowResult], sandbox: Sandbox) -> None:
    assert results["o-1003"].status is WorkflowStatus.COMPENSATED  # the business said no first
    for order_id in STOPPED:
        result = results[order_id]
        assert result.status is WorkflowStatus.FAILED, order_id
        assert result.reason == (
            f"step 'payment' stopped, nothing undone: {REFUSED}; resume the run once that is fixed "
            f"(`coordinator resume {order_id}`)"
        )
        assert types(result)[-2:] == ["InventoryReserved", "PaymentStopped"]
        assert result.outcome("inventory").status is StepStatus.SUCCEEDED
        assert result.outcome("payment").status is StepStatus.PENDING
        effects = sandbox.effects_for(order_id)
        assert effects.counts == {"reservation:held": 1}, order_id  # kept for the customer, not charged


@pytest.mark.parametrize("mode", MODES)
async def test_a_model_outage_stops_the_run_with_nothing_undone_and_resume_carries_it_on(
    mode: str, stub_url: str
) -> None:
    sandbox, log, outage = Sandbox(), MemoryEventLog(), Outage()
    async with (
        chat_model(stub_url, outage) as payment,
        session(mode, sandbox, {"payment": payment}, event_log=log) as c,
    ):
        stopped = await run_all(c)
        assert_stopped_with_nothing_undone(stopped, sandbox)
        assert outage.refused == 4 * len(STOPPED)  # FAST.tool_retries: 4 attempts each, then the stop

        outage.down = False  # the provider is back
        resumed = {order_id: await c.resume(order_id) for order_id in STOPPED}
    assert {order_id: r.status for order_id, r in resumed.items()} == {o: EXPECTED[o] for o in STOPPED}
    assert check_order_effects(sandbox, [*resumed.values(), stopped["o-1003"]]) == []
    for order_id, result in resumed.items():
        chain = types(result)
        assert chain[:4] == ["OrderPlaced", "InventoryReserved", "PaymentStopped", "PaymentResumed"], order_id
        assert chain.count("InventoryReserved") == 1 and chain.count("PaymentStopped") == 1
        assert result.outcome("inventory").usage.model_calls == 1  # the reservation was not asked for again
    declined = resumed["o-1004"]  # now the business answers: the card is declined, the stock released
    assert declined.reason == "step 'payment' failed: card declined: tok_declined"


async def test_the_stop_and_the_resume_are_the_same_events_in_both_modes(stub_url: str) -> None:
    chains: dict[str, list[list[str]]] = {}
    for mode in MODES:
        sandbox, log, outage = Sandbox(), MemoryEventLog(), Outage()
        async with (
            chat_model(stub_url, outage) as payment,
            session(mode, sandbox, {"payment": payment}, event_log=log) as coordinator,
        ):
            await run_all(coordinator)
            outage.down = False
            resumed = [await coordinator.resume(order_id) for order_id in STOPPED]
        chains[mode] = [[e.to_json() for e in r.events] for r in resumed]
    assert chains["orchestration"] == chains["choreography"]


@pytest.mark.parametrize("mode", MODES)
async def test_running_the_orders_again_after_a_restart_carries_the_stopped_ones_on(mode: str, stub_url: str) -> None:
    sandbox, log, saver, outage = Sandbox(), MemoryEventLog(), InMemorySaver(), Outage()
    async with chat_model(stub_url, outage) as payment:
        async with session(mode, sandbox, {"payment": payment}, event_log=log, checkpointer=saver) as first:
            assert_stopped_with_nothing_undone(await run_all(first), sandbox)
        outage.down = False
        async with session(mode, sandbox, {"payment": payment}, event_log=log, checkpointer=saver) as second:
            again = await run_all(second)  # `coordinator run FILE` once more, in a new process
    assert {order_id: r.status for order_id, r in again.items()} == EXPECTED
    assert again["o-1003"].recorded and not any(again[o].recorded for o in STOPPED)
    assert check_order_effects(sandbox, list(again.values())) == []


@pytest.mark.parametrize("mode", MODES)
async def test_the_compensate_policy_undoes_the_order_but_it_needs_attention(mode: str, stub_url: str) -> None:
    settings = FAST.model_copy(update={"on_model_unavailable": "compensate"})
    sandbox, log, outage = Sandbox(), MemoryEventLog(), Outage()
    async with (
        chat_model(stub_url, outage) as payment,
        session(mode, sandbox, {"payment": payment}, event_log=log, settings=settings) as coordinator,
    ):
        results = await run_all(coordinator)
    for order_id in STOPPED:
        result = results[order_id]
        assert result.status is WorkflowStatus.NEEDS_ATTENTION, order_id
        assert result.reason == (
            f"step 'payment' failed: {REFUSED}; step 'payment' needs attention: it was not refused: its model "
            "could not be reached, and the completed steps were undone because on_model_unavailable is "
            "'compensate'; submit it again once the model is back if it should go through"
        )
        assert [s.status for s in result.steps] == [StepStatus.COMPENSATED, StepStatus.FAILED, StepStatus.PENDING]
        assert sandbox.effects_for(order_id).outstanding == []  # the stock went back
    assert results["o-1003"].status is WorkflowStatus.COMPENSATED


async def test_a_stopped_choreography_is_not_failed_by_its_deadline_later(stub_url: str) -> None:
    sandbox, log, outage = Sandbox(), MemoryEventLog(), Outage()
    async with (
        chat_model(stub_url, outage) as payment,
        session("choreography", sandbox, {"payment": payment}, event_log=log, deadline=30.0) as coordinator,
    ):
        result = await coordinator.run(example_orders()[0])
        assert result.status is WorkflowStatus.FAILED
        # Its deadline was disarmed at the stop: an hour later the owner would fail nothing.
        deadlines = coordinator.engine.deadlines  # type: ignore[attr-defined]
        now = time.time() + 3600
        assert await deadlines.claim_due_deadlines(now, extend_to=now + 30) == []
        assert await coordinator.engine.expire("o-1001") is None  # type: ignore[attr-defined]
        outage.down = False
        assert (await coordinator.resume("o-1001")).status is WorkflowStatus.COMPLETED


@pytest.mark.parametrize("mode", MODES)
async def test_an_approved_step_whose_model_is_down_is_not_asked_for_approval_again(mode: str, stub_url: str) -> None:
    settings = FAST.model_copy(update={"parameters": {"approval_threshold_cents": 1}})
    sandbox, log, outage = Sandbox(), MemoryEventLog(), Outage()
    async with (
        chat_model(stub_url, outage) as payment,
        session(mode, sandbox, {"payment": payment}, event_log=log, settings=settings) as coordinator,
    ):
        waiting = await coordinator.run(example_orders()[0])
        assert waiting.status is WorkflowStatus.AWAITING_APPROVAL
        stopped = await coordinator.approve("o-1001", by="alice")
        assert stopped.status is WorkflowStatus.FAILED and types(stopped)[-1] == "PaymentStopped"
        outage.down = False
        done = await coordinator.resume("o-1001")
    assert done.status is WorkflowStatus.COMPLETED
    assert types(done).count("PaymentApprovalRequested") == 1
    assert types(done)[2:6] == ["PaymentApprovalRequested", "PaymentApproved", "PaymentStopped", "PaymentResumed"]


async def test_a_model_supervisor_that_is_down_stops_the_run_too(stub_url: str) -> None:
    sandbox, log, outage = Sandbox(), MemoryEventLog(), Outage()
    async with (
        chat_model(stub_url, outage) as supervisor,
        session("orchestration", sandbox, {}, event_log=log, supervisor=supervisor) as coordinator,
    ):
        stopped = await coordinator.run(example_orders()[0])
        assert stopped.status is WorkflowStatus.FAILED
        assert types(stopped) == ["OrderPlaced", "InventoryStopped"]
        assert stopped.reason is not None
        assert "the model of the supervisor could not be reached: 4 calls failed" in stopped.reason
        outage.down = False
        done = await coordinator.resume("o-1001")
    assert done.status is WorkflowStatus.COMPLETED
    assert done.supervisor_usage.model_calls == 3  # one handoff per step, after the resume
    assert check_order_effects(sandbox, [done]) == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_model_silent_past_the_step_timeout_stops_the_run(mode: str, stub_server: StubServer) -> None:
    settings = FAST.model_copy(update={"step_timeout": 0.5})
    sandbox, log, outage = Sandbox(), MemoryEventLog(), Outage()
    outage.down = False
    with stub_server.serving(OpenAIStub(Fault("slow", times=10**9, tool="charge_payment"))) as url:
        async with (
            chat_model(url, outage) as payment,
            session(mode, sandbox, {"payment": payment}, event_log=log, settings=settings) as coordinator,
        ):
            result = await coordinator.run(example_orders()[0])
    assert result.status is WorkflowStatus.FAILED
    assert result.reason is not None and result.reason.startswith(
        "step 'payment' stopped, nothing undone: the model of agent 'payment' gave no answer within the "
        "step's timeout of 0.5s"
    )
    assert sandbox.effects_for("o-1001").counts == {"reservation:held": 1}


async def test_a_refused_request_is_still_the_steps_failure_not_an_outage() -> None:
    """A model call refused for this request alone (here: a cassette replay miss) says
    nothing about the provider: the step fails and the run is compensated, as before."""
    from agent_coordinator.agents.cassette import ReplayingChatModel

    sandbox, log = Sandbox(), MemoryEventLog()
    replay = ReplayingChatModel(EXAMPLES / "cassettes", agent="payment")
    order = dict(example_orders()[0], payment_method="tok_mastercard")  # not what was recorded
    async with session("orchestration", sandbox, {"payment": replay}, event_log=log) as coordinator:
        result = await coordinator.run(order)
    assert result.status is WorkflowStatus.COMPENSATED
    assert result.reason is not None and result.reason.startswith("step 'payment' failed: model call failed: ")


# -- the command line: exit code 3, then `coordinator resume` ------------------------------


def unreachable_payment_model() -> BaseChatModel:
    """``--model payment=tests.e2e.test_model_outage:unreachable_payment_model``: ChatOpenAI
    pointed at a loopback port nobody listens on (connections refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ChatOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", model="stub", max_retries=0)


@pytest.mark.parametrize("mode", MODES)
def test_the_command_line_exits_3_for_stopped_orders_and_resume_finishes_them(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    cli = CliRunner()
    down = ["--model", "payment=tests.e2e.test_model_outage:unreachable_payment_model"]
    run = cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--mode", mode, "--json", *down])
    assert run.exit_code == 3, run.output
    rows = {r["workflow_id"]: r for r in map(json.loads, run.stdout.splitlines())}
    assert {o: r["status"] for o, r in rows.items()} == {o: "failed" for o in STOPPED} | {"o-1003": "compensated"}
    assert (
        "step 'payment' stopped, nothing undone: the model of agent 'payment' could not be reached"
        in (rows["o-1001"]["reason"])
    )
    status = {
        r["workflow_id"]: r["status"]
        for r in map(json.loads, cli.invoke(app, ["status", "--json"]).stdout.splitlines())
    }
    assert {o: status[o] for o in STOPPED} == {o: "failed" for o in STOPPED}  # stopped, not "in flight"
    resume = cli.invoke(app, ["resume", "--json"])  # the fake model: the provider is back
    assert resume.exit_code == 0, resume.output
    finished = {r["workflow_id"]: r["status"] for r in map(json.loads, resume.stdout.splitlines())}
    assert finished == {o: EXPECTED[o].value for o in STOPPED}


@pytest.mark.parametrize("mode", MODES)
def test_the_command_line_can_compensate_instead_and_the_runs_need_attention(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path / "state"))
    down = ["--model", "payment=tests.e2e.test_model_outage:unreachable_payment_model"]
    policy = ["--on-model-unavailable", "compensate"]
    run = CliRunner().invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--mode", mode, "--json", *down, *policy])
    assert run.exit_code == 3, run.output
    rows = {r["workflow_id"]: r["status"] for r in map(json.loads, run.stdout.splitlines())}
    assert rows == {o: "needs_attention" for o in STOPPED} | {"o-1003": "compensated"}


@pytest.mark.parametrize("mode", MODES)
async def test_a_resume_that_crashed_after_logging_its_resumed_event_is_carried_on(mode: str, stub_url: str) -> None:
    """A kill right after ``PaymentResumed`` was logged (before the graph saw it, or
    before the bus carried it): the next resume carries the run on from the log."""
    sandbox, log, outage = Sandbox(), MemoryEventLog(), Outage()
    async with (
        chat_model(stub_url, outage) as payment,
        session(mode, sandbox, {"payment": payment}, event_log=log) as c,
    ):
        stopped = await c.run(example_orders()[0])
        log.append([c.saga.resumed(cause=stopped.events[-1])])  # what the killed resume had written
        outage.down = False
        done = await c.resume("o-1001")
    assert done.status is WorkflowStatus.COMPLETED
    assert types(done).count("PaymentResumed") == 1
    assert check_order_effects(sandbox, [done]) == []
