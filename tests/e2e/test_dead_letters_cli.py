"""`coordinator dead-letters --json` lists every dead letter a broker holds, with its
reason -- malformed bodies included, on RabbitMQ and on NATS alike (issue 12)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

import pytest
from typer.testing import CliRunner

from agent_coordinator.bus import EventBus
from agent_coordinator.bus.base import MALFORMED_MESSAGE_TYPE
from agent_coordinator.bus.nats import JetStreamBus
from agent_coordinator.bus.rabbitmq import RabbitMQBus
from agent_coordinator.shell.cli import app
from tests.contract.test_bus_contract import Inbox, make_events, unique
from tests.services import NATS_URL, RABBITMQ_URL

pytestmark = pytest.mark.services

BODY = b'{"not": "an event"}'


async def _dead_letter_a_malformed_body(broker: str) -> tuple[str, str, EventBus]:
    """Open a throwaway bus, have one group dead-letter a foreign body; return the bus
    URL a command line would use, the group and the bus (to close afterwards)."""
    type_, group = unique("OrderPlaced"), unique("orders")
    inbox = Inbox()
    bus: JetStreamBus | RabbitMQBus
    if broker == "nats":
        import nats

        from tests.contract.backend_nats import open_throwaway_jetstream_bus

        bus = await open_throwaway_jetstream_bus()
        await bus.subscribe(group, [type_], inbox.handler())
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().publish(f"{bus.subject_prefix}.{type_}", BODY)
        finally:
            await nc.close()
        url = f"{NATS_URL}?{urlencode({'stream': bus.stream, 'subject_prefix': bus.subject_prefix})}"
    else:
        from tests.contract.backend_rabbitmq import open_rabbitmq_bus
        from tests.contract.test_rabbitmq_bus import raw_publish

        bus = await open_rabbitmq_bus()
        await bus.subscribe(group, [type_], inbox.handler())
        await raw_publish(bus, BODY, routing_key=type_, exchange=bus.exchange)
        url = f"{RABBITMQ_URL}?{urlencode({'exchange': bus.exchange, 'queue_prefix': bus.queue_prefix})}"
    (event,) = make_events(type_, 1)  # the consumer keeps going after the malformed body
    await bus.publish(event)
    await inbox.wait_for(1)
    await bus.wait_idle(timeout=10.0)
    return url, group, bus


@pytest.mark.parametrize("broker", ["rabbitmq", "nats"])
async def test_dead_letters_json_lists_a_malformed_body_with_its_reason(broker: str) -> None:
    url, group, bus = await _dead_letter_a_malformed_body(broker)
    try:
        # The command runs its own event loop: give it a thread.
        result = await asyncio.to_thread(CliRunner().invoke, app, ["dead-letters", "--bus", url, "--json"])
    finally:
        await bus.close()
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert row["group"] == group
    assert row["malformed"] is True
    assert row["deliveries"] == 1
    assert row["error"].startswith("MalformedEvent: not a valid event envelope")
    assert row["event"]["type"] == MALFORMED_MESSAGE_TYPE
    assert row["event"]["data"]["body"] == BODY.decode()
