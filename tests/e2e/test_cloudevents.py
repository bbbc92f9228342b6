"""Events are valid CloudEvents: on the wire of every bus, in the event log, and round trip.

Validation is the CloudEvents SDK's (``cloudevents.core``): its ``CloudEvent``
refuses an event whose required attributes are missing or whose extension names
are not lowercase letters and digits -- which ``causation_id`` was. Each bus's
messages are read as its protocol binding says (AMQP and RabbitMQ bindings from the
SDK; NATS by its binding's rules, which the SDK does not implement: a
``Content-Type`` of ``application/cloudevents*`` means a structured-mode payload),
then written to structured and to binary mode and read back, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import amqp, http, rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from agent_coordinator import LogicalClock, MemoryEventLog, SqliteEventLog, WorkflowResult, open_coordinator
from agent_coordinator.bus import EventBus, InMemoryBus
from agent_coordinator.core.events import CLOUDEVENTS_CONTENT_TYPE, Event, parse_event
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox, Scenario
from agent_coordinator.modes import Choreography
from tests.contract.backend_nats import open_throwaway_jetstream_bus
from tests.contract.backend_rabbitmq import open_rabbitmq_bus
from tests.e2e.test_orders_e2e import EXPECTED, FAST, example_orders
from tests.services import NATS_URL, RABBITMQ_URL
from tests.unit.test_events import a_cause_and_its_effect, old_body

JSON = JSONFormat()


@dataclass
class WireMessage:
    """One message as a broker carried it: what a binding reads."""

    body: bytes
    content_type: str | None
    headers: dict[str, Any] = field(default_factory=dict)


def read_cloudevent(bus: str, wire: WireMessage) -> BaseCloudEvent:
    """The SDK's CloudEvent of ``wire`` per ``bus``'s protocol binding (validated by the SDK)."""
    if bus == "rabbitmq":
        headers = {k: v for k, v in wire.headers.items() if isinstance(v, str)}
        via_rabbitmq = rabbitmq.from_rabbitmq(rabbitmq.RabbitMQMessage(headers, wire.content_type, wire.body), JSON)
        via_amqp = amqp.from_amqp(amqp.AMQPMessage({"content-type": wire.content_type}, wire.headers, wire.body), JSON)
        assert_same_cloudevent(via_rabbitmq, via_amqp)
        return via_rabbitmq
    if bus == "nats":
        # NATS binding >= 1.0.3: a Content-Type of application/cloudevents marks structured
        # mode (1.0.2 knew structured mode only); the payload is the JSON event format.
        assert wire.headers["Content-Type"].lower().startswith("application/cloudevents"), wire.headers
        return JSON.read(None, wire.body)
    return JSON.read(None, wire.body)  # memory: the body is all there is


def assert_same_cloudevent(actual: BaseCloudEvent, expected: BaseCloudEvent) -> None:
    assert actual.get_attributes() == expected.get_attributes()
    assert actual.get_data() == expected.get_data()


def round_trips(bus: str, event: BaseCloudEvent) -> None:
    """``event`` written to structured and to binary mode of ``bus``'s binding and read back is unchanged."""
    if bus == "rabbitmq":
        assert_same_cloudevent(rabbitmq.from_structured(rabbitmq.to_structured(event, JSON), JSON), event)
        assert_same_cloudevent(rabbitmq.from_binary(rabbitmq.to_binary(event, JSON), JSON), event)
        assert_same_cloudevent(amqp.from_structured(amqp.to_structured(event, JSON), JSON), event)
        assert_same_cloudevent(amqp.from_binary(amqp.to_binary(event, JSON), JSON), event)
    else:
        # NATS binary mode maps attributes to ce- headers, percent-encoded, as HTTP does.
        assert_same_cloudevent(http.from_structured(http.to_structured(event, JSON), JSON), event)
        assert_same_cloudevent(http.from_binary(http.to_binary(event, JSON), JSON), event)


def assert_is_our_event(cloudevent: BaseCloudEvent, event: Event) -> None:
    """The SDK reads every attribute of ``event`` under its CloudEvents name, and writes it back as the same event."""
    attributes = cloudevent.get_attributes()
    assert attributes["specversion"] == "1.0"
    assert attributes["datacontenttype"] == "application/json"
    assert (attributes["id"], attributes["type"], attributes["source"]) == (event.id, event.type, event.source)
    assert attributes["subject"] == event.subject
    assert attributes["time"] == event.time
    assert attributes.get("causationid") == event.causation_id
    assert attributes["traceparent"] == event.traceparent
    assert set(attributes) <= {*CORE_ATTRIBUTES, "causationid", "traceparent"}
    assert cloudevent.get_data() == event.data
    assert parse_event(JSON.write(cloudevent)) == event


CORE_ATTRIBUTES = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype"}


# --------------------------------------------------------------------------- taps on each bus


class Wire:
    """The messages a tap saw, and a way to wait for more."""

    def __init__(self) -> None:
        self.messages: list[WireMessage] = []
        self._changed = asyncio.Event()

    def add(self, message: WireMessage) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for_ids(self, ids: set[str]) -> None:
        """Until a message of every event id in ``ids`` was seen (a tap may lag the publisher's confirm)."""
        async with asyncio.timeout(10):
            while not {json.loads(m.body)["id"] for m in self.messages} >= ids:
                self._changed.clear()
                await self._changed.wait()


Tap = Callable[[], AbstractAsyncContextManager[tuple[EventBus, Wire]]]


class RecordingMemoryBus(InMemoryBus):
    """An :class:`InMemoryBus` that keeps what it puts on its queues: ``event.to_json()``."""

    def __init__(self) -> None:
        super().__init__()
        self.wire = Wire()

    async def publish(self, event: Event) -> None:
        self.wire.add(WireMessage(event.to_json().encode(), CLOUDEVENTS_CONTENT_TYPE))
        await super().publish(event)


@asynccontextmanager
async def memory_tap() -> AsyncIterator[tuple[EventBus, Wire]]:
    bus = RecordingMemoryBus()
    yield bus, bus.wire


@asynccontextmanager
async def rabbitmq_tap() -> AsyncIterator[tuple[EventBus, Wire]]:
    """A bus, and every message published to its exchange, read from a queue of our own bound to ``#``."""
    import aio_pika

    bus = await open_rabbitmq_bus()
    wire = Wire()
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(bus.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        tap = await channel.declare_queue(exclusive=True)
        await tap.bind(exchange, routing_key="#")

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            wire.add(WireMessage(message.body, message.content_type, dict(message.headers)))
            await message.ack()

        await tap.consume(keep)
        async with bus:
            yield bus, wire
    finally:
        await connection.close()


@asynccontextmanager
async def nats_tap() -> AsyncIterator[tuple[EventBus, Wire]]:
    """A bus, and every message published to its stream's event subjects, seen by a core subscriber."""
    import nats

    bus = await open_throwaway_jetstream_bus()
    wire = Wire()
    nc = await nats.connect(NATS_URL)
    try:

        async def keep(msg: Any) -> None:
            wire.add(WireMessage(msg.data, (msg.headers or {}).get("Content-Type"), dict(msg.headers or {})))

        await nc.subscribe(f"{bus.subject_prefix}.>", cb=keep)
        await nc.flush()
        async with bus:
            yield bus, wire
    finally:
        await nc.close()


TAPS: dict[str, Tap] = {"memory": memory_tap, "rabbitmq": rabbitmq_tap, "nats": nats_tap}


async def run_orders_on(bus: EventBus) -> list[WorkflowResult]:
    sandbox = Sandbox(Scenario.default())
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Choreography(bus=bus, deadline=60),
            settings=FAST,
            clock=LogicalClock(),
            event_log=MemoryEventLog(),
        ) as coordinator,
    ):
        inputs = [ORDER_FULFILMENT.validate_input(o) for o in example_orders()]
        return await coordinator.run_many(inputs, concurrency=8)


@pytest.mark.parametrize(
    "bus_name",
    [
        pytest.param("memory"),
        pytest.param("rabbitmq", marks=pytest.mark.services),
        pytest.param("nats", marks=pytest.mark.services),
    ],
)
async def test_every_event_of_the_example_orders_is_a_valid_cloudevent_on_the_wire(bus_name: str) -> None:
    async with TAPS[bus_name]() as (bus, wire):
        results = await run_orders_on(bus)
        emitted = {event.id: event for result in results for event in result.events}
        await wire.wait_for_ids(set(emitted))

    assert {r.workflow_id: r.status for r in results} == EXPECTED
    for message in wire.messages:
        assert message.content_type == CLOUDEVENTS_CONTENT_TYPE  # structured mode
        cloudevent = read_cloudevent(bus_name, message)
        assert isinstance(cloudevent, CloudEvent)
        assert_is_our_event(cloudevent, emitted[cloudevent.get_id()])
        round_trips(bus_name, cloudevent)
        if bus_name != "memory":  # brokers carry the trace context as a header too
            assert message.headers["traceparent"] == cloudevent.get_extension("traceparent")


async def test_every_event_of_an_orchestrated_run_is_a_valid_cloudevent_too() -> None:
    sandbox = Sandbox(Scenario.default())
    async with (
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT, agents=order_agents(client=client), mode="orchestration", settings=FAST
        ) as coordinator,
    ):
        results = await coordinator.run_many([ORDER_FULFILMENT.validate_input(o) for o in example_orders()])

    events = [event for result in results for event in result.events]
    assert {e.type for e in events} >= {"OrderPlaced", "PaymentFailed", "InventoryReleased", "OrderCompleted"}
    for event in events:
        cloudevent = JSON.read(None, event.to_json())
        assert_is_our_event(cloudevent, event)
        round_trips("memory", cloudevent)


def test_an_event_log_with_rows_written_before_reads_them_unchanged(tmp_path: Path) -> None:
    start, effect = a_cause_and_its_effect()
    path = tmp_path / "events.db"
    log = SqliteEventLog(path)
    log.append([start], run_id="run-old")
    log.append([effect])
    log.close()
    with sqlite3.connect(path) as db:  # rewrite the rows as the previous version wrote them
        for event in (start, effect):
            db.execute("UPDATE events SET body = ? WHERE id = ?", (old_body(event), event.id))
        assert all("causation_id" in body for (body,) in db.execute("SELECT body FROM events"))

    reopened = SqliteEventLog(path)
    try:
        assert reopened.events("o-1") == [start, effect]
        reopened.append([effect])  # the same event again is still the same row
        assert reopened.events("o-1") == [start, effect]
    finally:
        reopened.close()


@pytest.mark.services
async def test_a_message_published_before_the_switch_is_still_delivered_on_rabbitmq() -> None:
    """A queue may hold messages of the previous version (``application/json``, ``causation_id``) across an upgrade."""
    import aio_pika

    _, effect = a_cause_and_its_effect()
    type_ = f"Old{uuid.uuid4().hex[:8]}"
    effect = effect.model_copy(update={"type": type_})
    received: list[Event] = []
    arrived = asyncio.Event()
    bus = await open_rabbitmq_bus()
    async with bus:

        async def handle(event: Event) -> None:
            received.append(event)
            arrived.set()

        await bus.subscribe("old-readers", [type_], handle)
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(bus.exchange)
            await exchange.publish(
                aio_pika.Message(old_body(effect).encode(), content_type="application/json"), routing_key=type_
            )
        async with asyncio.timeout(10):
            await arrived.wait()
    assert received == [effect]
