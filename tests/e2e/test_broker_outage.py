"""A broker that is down when a participant starts, or restarts under it: the
participant waits for it, and nothing is lost. A NATS server of the test's own, on a
free port (never the machine's), is started late and restarted."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from agent_coordinator import WorkflowStatus, open_coordinator
from agent_coordinator.bus import open_bus
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox
from agent_coordinator.modes import Choreography
from tests.e2e.test_orders_e2e import FAST, example_orders
from tests.process.torture.brokers import NatsServer
from tests.services import require_service

pytestmark = pytest.mark.services


@pytest.fixture
def nats_binary() -> None:
    if shutil.which("nats-server") is None:
        require_service("nats")  # fails under REQUIRE_SERVICES=1, skips otherwise
        pytest.skip("nats-server is not installed")


async def test_a_coordinator_started_while_its_broker_is_down_waits_for_it(
    nats_binary: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = NatsServer(tmp_path)
    sandbox = Sandbox()
    order = example_orders()[0]
    bus = open_bus(broker.bus_url)
    try:
        async with sandbox.client() as client:
            coordinator_cm = open_coordinator(
                ORDER_FULFILMENT, agents=order_agents(client=client), mode=Choreography(bus=bus), settings=FAST
            )
            with caplog.at_level(logging.WARNING, logger="agent_coordinator.bus.choreography"):
                entering = asyncio.ensure_future(coordinator_cm.__aenter__())
                async with asyncio.timeout(30):
                    while "waiting up to 120s for the broker" not in caplog.text:  # noqa: ASYNC110 - a log line
                        await asyncio.sleep(0.01)
                assert not entering.done()  # still waiting, not failed
                await broker.start()
                async with asyncio.timeout(60):
                    coordinator = await entering
            try:
                async with asyncio.timeout(60):
                    result = await coordinator.run(order)
            finally:
                await coordinator_cm.__aexit__(None, None, None)
    finally:
        await bus.close()
        await broker.close()
    assert result.status is WorkflowStatus.COMPLETED, result.reason
    assert check_order_effects(sandbox, [result]) == []
