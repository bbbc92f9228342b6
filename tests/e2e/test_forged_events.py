"""Forged events on a real broker do nothing (issue 12, "Forged events act").

Each test runs the order choreography in this process on a RabbitMQ (127.0.0.1:5672)
or NATS JetStream (127.0.0.1:4222) bus of its own, with keys in a temporary keys
directory, runs one genuine order to prove the participants are listening, then
publishes an event straight onto the broker with the raw client -- as someone who
has the broker's credentials but not the participants' keys would -- and waits for
it to be dead-lettered. The reason names what is wrong; the services hold nothing
for the forged order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent_coordinator import WorkflowStatus, open_coordinator
from agent_coordinator.bus import EventBus
from agent_coordinator.bus.base import DeadLetter
from agent_coordinator.core.events import CLOUDEVENTS_CONTENT_TYPE, Event, EventFactory
from agent_coordinator.core.run import Coordinator
from agent_coordinator.core.saga import OWNER, Saga
from agent_coordinator.core.signing import Keyring
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox, Scenario
from agent_coordinator.modes import Choreography
from tests.e2e.test_orders_e2e import FAST, example_orders
from tests.services import NATS_URL, RABBITMQ_URL

pytestmark = pytest.mark.services

BROKERS = ["rabbitmq", "nats"]
WAIT = 15.0
SAGA = Saga(ORDER_FULFILMENT, factory=EventFactory(seed=42))


def order(order_id: str) -> dict[str, Any]:
    return {**example_orders()[0], "order_id": order_id}


async def open_broker_bus(broker: str) -> EventBus:
    """A bus on exchange/queues or streams of this test's own (deleted on close)."""
    if broker == "rabbitmq":
        from tests.contract.backend_rabbitmq import open_rabbitmq_bus

        return await open_rabbitmq_bus()
    from tests.contract.backend_nats import open_throwaway_jetstream_bus

    return await open_throwaway_jetstream_bus()


async def publish_raw(bus: EventBus, event: Event) -> None:
    """Put ``event`` on the broker with the broker's own client, bypassing the bus:
    the body a well-behaved publisher would send, without anyone's key."""
    body = event.to_json().encode()
    if broker_of(bus) == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(bus.exchange, ensure=False)  # type: ignore[attr-defined]
            message = aio_pika.Message(body, content_type=CLOUDEVENTS_CONTENT_TYPE, message_id=event.id)
            await exchange.publish(message, routing_key=event.type)
    else:
        import nats

        nc = await nats.connect(NATS_URL)
        try:
            subject = f"{bus.subject_prefix}.{event.type}"  # type: ignore[attr-defined]
            await nc.jetstream().publish(subject, body, headers={"Content-Type": CLOUDEVENTS_CONTENT_TYPE})
        finally:
            await nc.close()


def broker_of(bus: EventBus) -> str:
    return "rabbitmq" if hasattr(bus, "exchange") else "nats"


async def dead_lettered(bus: EventBus, event: Event, group: str) -> DeadLetter:
    """``event``'s dead letter in ``group``, once the broker holds it."""
    async with asyncio.timeout(WAIT):
        while True:
            for dead in await bus.dead_letters():
                if dead.event.id == event.id and dead.group == group:
                    return dead
            await asyncio.sleep(0.05)  # polling the broker's dead letters, bounded by WAIT


@asynccontextmanager
async def participants_on(broker: str, keys_dir: Path) -> AsyncIterator[tuple[Coordinator, Sandbox, EventBus, Keyring]]:
    """Every participant of the order choreography, on a fresh broker bus, signing
    and checking with the keys of ``keys_dir``; one genuine order has completed."""
    bus = await open_broker_bus(broker)
    keys = Keyring.open(keys_dir)
    sandbox = Sandbox(Scenario.default())
    try:
        async with (
            sandbox.client() as client,
            open_coordinator(
                ORDER_FULFILMENT,
                agents=order_agents(client=client),
                mode=Choreography(bus=bus),
                settings=FAST,
                keys=keys,
            ) as coordinator,
        ):
            genuine = await coordinator.run(order("o-genuine"))
            assert genuine.status is WorkflowStatus.COMPLETED, genuine.reason
            yield coordinator, sandbox, bus, keys
    finally:
        await bus.close()


@pytest.mark.parametrize("broker", BROKERS)
async def test_a_forged_order_placed_published_on_the_broker_is_dead_lettered_and_does_nothing(
    broker: str, tmp_path: Path
) -> None:
    forged = SAGA.started("o-forged", order("o-forged"))  # well-formed; nobody signed it
    async with participants_on(broker, tmp_path / "keys") as (_, sandbox, bus, _):
        await publish_raw(bus, forged)
        dead = await dead_lettered(bus, forged, "order-fulfilment.inventory")
        assert sandbox.effects_for("o-forged").counts == {}
        assert sandbox.effects_for("o-genuine").counts != {}
    print(f"\n{broker}: {json.dumps({'group': dead.group, 'deliveries': dead.deliveries, 'error': dead.error})}")
    assert dead.deliveries == 1
    assert dead.error.startswith(f"UntrustedEvent: OrderPlaced {forged.id} of 'o-forged'")
    assert "is not signed" in dead.error


@pytest.mark.parametrize("broker", BROKERS)
async def test_an_event_signed_by_the_payment_agent_as_inventory_reserved_is_refused_on_the_broker(
    broker: str, tmp_path: Path
) -> None:
    async with participants_on(broker, tmp_path / "keys") as (_, sandbox, bus, keys):
        payment_only = keys.trusting(["payment"])  # all a compromised payment worker holds
        started = keys.sign(SAGA.started("o-claim", order("o-claim")), as_=OWNER)
        claimed = payment_only.sign(
            SAGA.factory.event(
                "InventoryReserved",
                subject="o-claim",
                source="agent/inventory",
                data={
                    "input": order("o-claim"),
                    "results": {"inventory": {"reservation_id": "r"}},
                    "step": "inventory",
                },
                cause=started,
            ),
            as_="payment",
        )
        await publish_raw(bus, claimed)
        dead = await dead_lettered(bus, claimed, "order-fulfilment.payment")
        assert sandbox.effects_for("o-claim").counts == {}
    assert dead.deliveries == 1
    assert dead.error == (
        f"UntrustedEvent: InventoryReserved {claimed.id} of 'o-claim' is signed by 'payment'"
        f" (key {keys.key_id('payment')!r}), but only 'inventory' may emit InventoryReserved"
        " in workflow 'order-fulfilment'"
    )


@pytest.mark.parametrize("broker", BROKERS)
async def test_an_authentic_event_without_its_data_is_dead_lettered_at_once(broker: str, tmp_path: Path) -> None:
    async with participants_on(broker, tmp_path / "keys") as (_, sandbox, bus, keys):
        empty = keys.sign(
            EventFactory(seed=3).event("PaymentFailed", subject="o-nobody", source="agent/payment"), as_="payment"
        )
        await publish_raw(bus, empty)
        dead = await dead_lettered(bus, empty, "order-fulfilment.inventory")
        assert sandbox.effects_for("o-nobody").counts == {}
    assert dead.deliveries == 1
    assert dead.error.startswith(f"MalformedEvent: PaymentFailed {empty.id} of 'o-nobody' from 'agent/payment'")
    assert "data.results is missing" in dead.error
