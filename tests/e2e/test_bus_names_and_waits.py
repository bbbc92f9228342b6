"""Nothing hangs, nothing collides on a shared broker (issue 11, item 5).

Default broker names derive from the workflow's name (and ``--bus-prefix`` /
``$COORDINATOR_BUS_PREFIX``), so two apps on one broker share nothing; a
choreographed ``run`` always has a deadline; and while it waits, the progress line
says what for.
"""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agent_coordinator import modes as modes_module
from agent_coordinator.bus import InMemoryBus, bus_namespace, open_bus
from agent_coordinator.core import run as run_module
from agent_coordinator.core.errors import BusError
from agent_coordinator.core.eventlog import MemoryEventLog
from agent_coordinator.core.events import EventFactory, LogicalClock
from agent_coordinator.core.saga import Saga, StepReport
from agent_coordinator.core.settings import RunSettings
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT
from agent_coordinator.shell import cli as cli_module
from agent_coordinator.shell.cli import app
from agent_coordinator.shell.reporting import WaitingFor
from agent_coordinator.shell.session import default_deadline
from tests.services import NATS_URL, RABBITMQ_URL, require_service
from tests.travel_app import SPEC as TRAVEL_APP

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
ORDERS = str(EXAMPLES / "orders.jsonl")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("COORDINATOR_BUS_PREFIX", raising=False)
    return CliRunner()


# -- names ------------------------------------------------------------------------------------


def test_a_bus_namespace_is_the_workflow_name_with_an_optional_prefix() -> None:
    assert bus_namespace("order-fulfilment") == "order-fulfilment"
    assert bus_namespace("order-fulfilment", "staging-") == "staging-order-fulfilment"
    assert bus_namespace("travel.v2", "eu west ") == "eu-west-travel-v2"
    with pytest.raises(BusError, match="use letters, digits"):
        bus_namespace("...", "")


def test_a_namespace_names_the_rabbitmq_exchange_and_queues_unless_the_url_does() -> None:
    named: Any = open_bus("amqp://guest:guest@127.0.0.1:5672/", namespace="order-fulfilment")
    assert (named.exchange, named.queue_prefix) == ("order-fulfilment", "order-fulfilment.")
    assert named._dead_letter_queue == "order-fulfilment.dead-letters"
    chosen: Any = open_bus("amqp://guest:guest@127.0.0.1:5672/?exchange=shop", namespace="order-fulfilment")
    assert (chosen.exchange, chosen.queue_prefix) == ("shop", "order-fulfilment.")
    other: Any = open_bus("amqp://guest:guest@127.0.0.1:5672/", namespace="travel")
    assert {other.exchange, other.queue_prefix} & {named.exchange, named.queue_prefix} == set()


def test_a_namespace_names_the_nats_stream_and_subjects_unless_the_url_does() -> None:
    named: Any = open_bus("nats://127.0.0.1:4222", namespace="order-fulfilment")
    assert (named.stream, named.dlq_stream, named.subject_prefix) == (
        "order-fulfilment",
        "order-fulfilment_DLQ",
        "order-fulfilment",
    )
    chosen: Any = open_bus("nats://127.0.0.1:4222?stream=SHOP", namespace="order-fulfilment")
    assert (chosen.stream, chosen.subject_prefix) == ("SHOP", "order-fulfilment")
    plain: Any = open_bus("nats://127.0.0.1:4222")  # the API without a namespace: the constructor's names
    assert plain.subject_prefix == "events"


@pytest.fixture
def namespaces(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The namespaces the CLI opens buses with; the buses themselves are in memory."""
    seen: list[str] = []

    def fake_open_bus(url: str = "memory://", *, namespace: str | None = None, **options: Any) -> InMemoryBus:
        assert namespace is not None
        seen.append(namespace)
        return InMemoryBus()

    monkeypatch.setattr(modes_module, "open_bus", fake_open_bus)
    return seen


def test_the_cli_names_broker_objects_after_the_workflow_and_the_prefix(
    cli: CliRunner, namespaces: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = ["--mode", "choreography", "--bus", "amqp://guest:guest@127.0.0.1:5672/"]
    assert cli.invoke(app, ["run", ORDERS, *broker]).exit_code == 0
    trips = tmp_path / "trips.jsonl"
    trips.write_text('{"trip_id": "t-1", "route": "LIS-OSL", "city": "Oslo", "nights": 3}\n')
    assert cli.invoke(app, ["run", str(trips), *broker, "--workflow", TRAVEL_APP]).exit_code == 0
    assert cli.invoke(app, ["run", ORDERS, *broker, "--bus-prefix", "blue-"]).exit_code == 0
    monkeypatch.setenv("COORDINATOR_BUS_PREFIX", "staging-")
    assert cli.invoke(app, ["run", ORDERS, *broker]).exit_code == 0
    assert namespaces == ["order-fulfilment", "travel", "blue-order-fulfilment", "staging-order-fulfilment"]


# -- deadlines --------------------------------------------------------------------------------


def test_a_choreographed_run_has_a_deadline_by_default(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    deadlines: dict[str, Any] = {}
    real = run_module.open_coordinator

    def spy(workflow: Any, **options: Any) -> Any:
        mode = options["mode"]
        deadlines[mode.name] = getattr(mode, "deadline", None)
        return real(workflow, **options)

    monkeypatch.setattr(run_module, "open_coordinator", spy)
    for mode in ("orchestration", "choreography"):
        assert cli.invoke(app, ["run", ORDERS, "--mode", mode]).exit_code == 0
    assert default_deadline(ORDER_FULFILMENT, RunSettings()) == 480.0  # (3 steps + 1) x 120 s
    assert deadlines == {"orchestration": None, "choreography": 480.0}


def test_a_run_whose_participants_never_come_ends_at_its_deadline(cli: CliRunner) -> None:
    orders = ["run", ORDERS, "--mode", "choreography", "--workers", "external", "--deadline", "0.3", "--json"]
    result = cli.invoke(app, orders)
    assert result.exit_code == 0, result.output  # every order compensated: nothing was done, nothing held
    assert result.stdout.count('"status": "compensated"') == 8
    assert "no answer within the run's deadline of 0.3s" in result.stdout


# -- what a run waits for -----------------------------------------------------------------------


def test_the_waiting_line_names_whose_move_it_is() -> None:
    log = MemoryEventLog()
    saga = Saga(ORDER_FULFILMENT, factory=EventFactory(clock=LogicalClock()))
    now = [100.0]
    waiting = WaitingFor(events=log.events, saga=saga, deadline=480.0, shown=2, clock=lambda: now[0])
    assert waiting.describe() == "waiting for the first run to start"
    order = {"order_id": "o-1", "items": [], "currency": "EUR"}
    for workflow_id in ("o-1", "o-2", "o-3"):
        waiting.started(workflow_id)
    placed = saga.started("o-1", order)
    log.append([placed], run_id="r")
    now[0] = 112.0
    assert waiting.describe() == (
        "waiting for 3 runs: o-1 (12 s): inventory to call reserve_stock (after OrderPlaced); "
        "o-2 (12 s): its start to be logged; +1 more (each fails its stuck step after 480 s)"
    )
    inventory, payment = ORDER_FULFILMENT.steps[0], ORDER_FULFILMENT.steps[1]
    reserved = saga.performed(
        inventory, StepReport(ok=True, result={"total_cents": 1, "currency": "EUR"}), cause=placed
    )
    failed = saga.performed(payment, StepReport(ok=False, reason="card declined"), cause=reserved)
    log.append([reserved], run_id="r")
    assert "o-1 (12 s): payment to call charge_payment (after InventoryReserved)" in waiting.describe()
    log.append([failed], run_id="r")
    assert "o-1 (12 s): inventory to call release_stock (after PaymentFailed)" in waiting.describe()
    waiting.ended("o-1")
    waiting.ended("o-2")
    assert waiting.describe().startswith("waiting for 1 run: o-3 (12 s): its start to be logged")


def test_the_progress_line_of_a_waiting_run_says_what_it_waits_for(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = io.StringIO()
    monkeypatch.setattr(cli_module, "errors", Console(file=terminal, force_terminal=True, width=400))
    monkeypatch.setattr(cli_module, "WAITING_REFRESH", 0.05)
    # Nobody hosts the inventory agent: every order waits for it until the deadline.
    orders = ["run", ORDERS, "--mode", "choreography", "--workers", "external", "--deadline", "1.5", "--json"]
    assert cli.invoke(app, orders).exit_code == 0
    line = r"choreography: waiting for 8 runs: o-1001 \(\d+ s\): inventory to call reserve_stock \(after OrderPlaced\)"
    assert re.search(line, terminal.getvalue()), terminal.getvalue()[-2000:]


# -- on real brokers ----------------------------------------------------------------------------


async def _delete_nats_streams(namespace: str) -> None:
    import nats
    import nats.errors

    nc = await nats.connect(NATS_URL)
    try:
        for name in (namespace, f"{namespace}_DLQ"):
            with contextlib.suppress(nats.errors.Error):
                await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


async def _nats_stream_subjects(namespace: str) -> list[str]:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        info = await nc.jetstream().stream_info(namespace)
        return list(info.config.subjects or [])
    finally:
        await nc.close()


async def _delete_rabbitmq_names(namespace: str) -> bool:
    """Delete what a run in ``namespace`` declared; True when its exchange existed."""
    import aio_pika
    import aiormq

    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        groups = [f"{ORDER_FULFILMENT.name}.{p}" for p in ("inventory", "payment", "shipping", "owner", "projection")]
        for queue in [*groups, "dead-letters"]:
            channel = await connection.channel()
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.queue_delete(f"{namespace}.{queue}")
        channel = await connection.channel()
        try:
            await channel.declare_exchange(namespace, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        await channel.exchange_delete(namespace)
        return True
    finally:
        await connection.close()


@pytest.mark.services
@pytest.mark.parametrize("broker", ["nats", "rabbitmq"])
async def test_a_broker_run_uses_names_of_its_own(broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_service(broker)
    prefix = f"test-{uuid.uuid4().hex[:8]}-"
    namespace = f"{prefix}{ORDER_FULFILMENT.name}"
    url = NATS_URL if broker == "nats" else RABBITMQ_URL
    monkeypatch.setenv("COLUMNS", "200")
    arguments = ["run", ORDERS, "--mode", "choreography", "--bus", url, "--bus-prefix", prefix, "--json"]
    try:
        result = await _invoke([*arguments, "--state-dir", str(tmp_path / "state")])
        assert result.exit_code == 0, result.output
        if broker == "nats":
            assert await _nats_stream_subjects(namespace) == [f"{namespace}.>", f"{namespace}-replay.>"]
    finally:
        if broker == "nats":
            await _delete_nats_streams(namespace)
        else:
            assert await _delete_rabbitmq_names(namespace), f"no exchange {namespace!r} was declared"


async def _invoke(arguments: list[str]) -> Any:
    """Invoke the CLI (which runs its own event loop) from an async test, in a thread."""
    import asyncio

    return await asyncio.to_thread(CliRunner().invoke, app, arguments)
