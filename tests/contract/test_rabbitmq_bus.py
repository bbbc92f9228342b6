"""What the RabbitMQ bus adds beyond the shared contract: unroutable publishes, malformed
messages, dead letters read in place, the broker's delivery-limit backstop, error
translation, reconnection, and its knobs.

Tests that talk to the broker are marked ``services`` and open isolated buses (own
exchange and queue prefix, deleted on close) through :func:`open_rabbitmq_bus`.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aio_pika
import pytest

from agent_coordinator.bus import EventBus, Subscription, open_bus
from agent_coordinator.bus.rabbitmq import MALFORMED_MESSAGE_TYPE, RabbitMQBus
from agent_coordinator.core.errors import BusError
from agent_coordinator.core.events import Event, EventFactory
from tests.contract.backend_rabbitmq import DisposableRabbitMQBus, open_rabbitmq_bus
from tests.services import RABBITMQ_URL, require_service

WAIT = 5.0
T = TypeVar("T")

OpenBus = Callable[..., Awaitable[DisposableRabbitMQBus]]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_events(type_: str, count: int) -> list[Event]:
    factory = EventFactory(seed=11)
    return [factory.event(type_, subject=f"wf-{i}", source="rabbitmq-test", data={"n": i}) for i in range(count)]


@pytest.fixture
async def new_bus() -> AsyncIterator[OpenBus]:
    opened: list[DisposableRabbitMQBus] = []

    async def open_(**options: Any) -> DisposableRabbitMQBus:
        bus = await open_rabbitmq_bus(**options)
        opened.append(bus)
        return bus

    yield open_
    for bus in opened:
        await bus.close()


async def raw_publish(bus: RabbitMQBus, body: bytes, *, routing_key: str, exchange: str | None = None) -> None:
    """Publish bytes the way a foreign producer would: no envelope checks."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        target = await channel.get_exchange(exchange, ensure=False) if exchange else channel.default_exchange
        await target.publish(aio_pika.Message(body, message_id=unique("raw")), routing_key=routing_key)


async def until(condition: Callable[[], Awaitable[T | None]]) -> T:
    """Poll ``condition`` every 10 ms (up to WAIT) until it returns something: for
    state only the broker knows and no event announces."""
    async with asyncio.timeout(WAIT):
        while True:
            if result := await condition():
                return result
            await asyncio.sleep(0.01)


async def collect(count: int, received: list[Event], changed: asyncio.Event) -> None:
    async with asyncio.timeout(WAIT):
        while len(received) < count:
            changed.clear()
            await changed.wait()


class Recorder:
    def __init__(self) -> None:
        self.received: list[Event] = []
        self.changed = asyncio.Event()

    async def __call__(self, event: Event) -> None:
        self.received.append(event)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        await collect(count, self.received, self.changed)


# -- construction and validation (no broker needed) ------------------------------------


def test_open_bus_builds_a_rabbitmq_bus_with_options() -> None:
    bus = open_bus("amqp://guest:guest@127.0.0.1:5672/", max_deliveries=3, queue_prefix="p.")
    assert isinstance(bus, RabbitMQBus)
    assert isinstance(bus, EventBus)
    assert (bus.max_deliveries, bus.queue_prefix) == (3, "p.")
    assert isinstance(open_bus("amqps://broker.example/"), RabbitMQBus)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_deliveries": 0}, "max_deliveries must be at least 1"),
        ({"redelivery_delay": -1}, "redelivery_delay must be >= 0"),
        ({"prefetch": 0}, "prefetch must be at least 1"),
        ({"close_timeout": -1}, "close_timeout must be >= 0"),
        ({"exchange": ""}, "exchange must be a non-empty name"),
    ],
)
def test_constructor_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RabbitMQBus("amqp://guest:guest@127.0.0.1:5672/", **options)


def test_constructor_rejects_a_non_amqp_url_without_echoing_it() -> None:
    with pytest.raises(ValueError, match=r"amqp:// or amqps://") as raised:
        RabbitMQBus("nats://user:s3cret@127.0.0.1:4222")
    assert "s3cret" not in str(raised.value)


async def test_subscribe_rejects_the_reserved_group_and_wildcard_types_before_connecting() -> None:
    bus = RabbitMQBus("amqp://guest:guest@127.0.0.1:1/")  # nothing listens there: validation comes first

    async def ignore(event: Event) -> None:
        return None

    with pytest.raises(ValueError, match="reserved"):
        await bus.subscribe("dead-letters", ["T"], ignore)
    with pytest.raises(ValueError, match="wildcard"):
        await bus.subscribe("g", ["Order.*"], ignore)
    with pytest.raises(TypeError, match=r"pass \['T'\]"):
        await bus.subscribe("g", "T", ignore)
    await bus.close()


def test_open_bus_without_aio_pika_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aio_pika", None)  # makes `import aio_pika` fail
    package = "agent_coordinator.bus.rabbitmq"
    for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        monkeypatch.delitem(sys.modules, name)  # as in a process that never imported the backend
    with pytest.raises(BusError, match=r"pip install 'agent-coordinator\[rabbitmq\]'"):
        open_bus("amqp://guest:guest@127.0.0.1:5672/")


# -- broker errors ----------------------------------------------------------------------


async def test_an_unreachable_broker_is_a_bus_error_naming_the_host_not_the_password() -> None:
    bus = RabbitMQBus("amqp://guest:s3cret-pw@127.0.0.1:1/")  # port 1: connection refused
    (event,) = make_events("T", 1)

    async def ignore(event: Event) -> None:
        return None

    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: bus.publish(event),
        lambda: bus.subscribe("g", ["T"], ignore),
        bus.dead_letters,
    ]
    for attempt in attempts:
        with pytest.raises(BusError) as raised:
            await attempt()
        message = str(raised.value)
        assert "127.0.0.1:1" in message
        assert "rabbitmqctl status" in message, "the message must say what to check"
        assert "s3cret-pw" not in message
    await bus.close()


@pytest.mark.services
async def test_a_wrong_password_is_a_bus_error_that_does_not_echo_it() -> None:
    require_service("rabbitmq")
    bus = RabbitMQBus("amqp://guest:not-the-Password@127.0.0.1:5672/")
    with pytest.raises(BusError, match="check the user name and password") as raised:
        await bus.publish(make_events("T", 1)[0])
    assert "not-the-Password" not in str(raised.value)
    await bus.close()


# -- publishing -------------------------------------------------------------------------


@pytest.mark.services
async def test_an_event_no_group_is_bound_to_is_accepted_and_dropped(new_bus: OpenBus) -> None:
    bus = await new_bus()
    for event in make_events(unique("Nobody"), 3):
        await bus.publish(event)
    assert bus.stats().published == 3


@pytest.mark.services
async def test_publishing_to_a_group_whose_queue_was_deleted_is_an_error_not_a_silent_loss(new_bus: OpenBus) -> None:
    bus = await new_bus()
    type_, group = unique("PaymentRequested"), unique("payments")
    member = await bus.subscribe(group, [type_], Recorder())
    await member.close()  # no consumer left for the robust connection to restore
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        await (await connection.channel()).queue_delete(f"{bus.queue_prefix}{group}")

    with pytest.raises(BusError, match=rf"routed it to no queue although this bus subscribed '{group}'"):
        await bus.publish(make_events(type_, 1)[0])
    assert bus.stats().published == 0


@pytest.mark.services
async def test_messages_are_structured_cloudevents_with_id_type_persistence_and_traceparent(new_bus: OpenBus) -> None:
    bus = await new_bus()
    type_, group = unique("Traced"), unique("tap")
    await bus.subscribe(group, [type_], Recorder())
    await (await bus.subscribe(group, [type_], Recorder())).close()
    (event,) = make_events(type_, 1)
    # Read the wire form from a queue of our own bound to the same type.
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        tap = await channel.declare_queue(exclusive=True)
        await tap.bind(bus.exchange, routing_key=type_)
        await bus.publish(event)
        message = await until(lambda: tap.get(fail=False))
    assert message.message_id == event.id
    assert message.type == type_
    assert message.content_type == "application/cloudevents+json"  # the AMQP binding's structured mode
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers["traceparent"] == event.traceparent
    assert message.body == event.to_json().encode()


# -- dead letters -----------------------------------------------------------------------


@pytest.mark.services
async def test_a_malformed_message_is_dead_lettered_and_the_consumer_keeps_going(new_bus: OpenBus) -> None:
    bus = await new_bus()
    type_, group = unique("OrderPlaced"), unique("orders")
    recorder = Recorder()
    await bus.subscribe(group, [type_], recorder)

    await raw_publish(bus, b'{"not": "an event"', routing_key=type_, exchange=bus.exchange)
    (event,) = make_events(type_, 1)
    await bus.publish(event)
    await recorder.wait_for(1)
    await bus.wait_idle(timeout=WAIT)

    assert recorder.received == [event]
    (dead,) = await bus.dead_letters()
    assert dead.group == group
    assert dead.error.startswith("MalformedEvent: not a valid event envelope")
    assert dead.event.type == MALFORMED_MESSAGE_TYPE
    assert dead.event.data["body"] == '{"not": "an event"'
    assert bus.stats().dead_lettered == 1
    assert await bus.replay_dead_letters(group) == 0, "a malformed body would only fail again"
    assert len(await bus.dead_letters()) == 1


@pytest.mark.services
async def test_dead_letters_are_listed_in_place_and_replayed_per_group(new_bus: OpenBus) -> None:
    bus = await new_bus(max_deliveries=2)
    type_, first, second = unique("ShipmentRequested"), unique("first"), unique("second")
    healthy = False
    recovered = Recorder()

    async def carrier(event: Event) -> None:
        if not healthy:
            raise RuntimeError(f"carrier down for {event.subject}")
        await recovered(event)

    async def always_down(event: Event) -> None:
        raise RuntimeError("still down")

    await bus.subscribe(first, [type_], carrier)
    await bus.subscribe(second, [type_], always_down)
    events = make_events(type_, 3)
    for event in events:
        await bus.publish(event)
    await bus.wait_idle(timeout=WAIT)

    listed = await bus.dead_letters()
    assert await bus.dead_letters() == listed, "reading dead letters must not consume them"
    for group in (first, second):
        letters = [d for d in listed if d.group == group]
        assert [d.event for d in letters] == events, "oldest first, per group"
        assert {d.deliveries for d in letters} == {2}
    assert {d.error for d in listed if d.group == first} == {f"RuntimeError: carrier down for wf-{i}" for i in range(3)}

    healthy = True
    assert await bus.replay_dead_letters(first) == 3
    await recovered.wait_for(3)
    await bus.wait_idle(timeout=WAIT)
    assert recovered.received == events
    assert [d.group for d in await bus.dead_letters()] == [second] * 3


@pytest.mark.services
async def test_a_message_the_broker_gave_up_on_is_reported_with_its_group(new_bus: OpenBus) -> None:
    bus = await new_bus()
    type_, group = unique("Poison"), unique("crashing")
    await (await bus.subscribe(group, [type_], Recorder())).close()  # declares and binds the queue
    (event,) = make_events(type_, 1)
    await bus.publish(event)

    # Play a consumer that dies mid-handler again and again: take it, give it back.
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        queue = await (await connection.channel()).get_queue(f"{bus.queue_prefix}{group}", ensure=False)
        returns = 0
        async with asyncio.timeout(WAIT):
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                await message.nack(requeue=True)
                returns += 1
    assert returns == 21, "x-delivery-limit is 20 returns"

    (dead,) = await until(bus.dead_letters)  # the broker dead-letters asynchronously
    assert (dead.event, dead.group) == (event, group)
    assert dead.error.startswith("DeliveryLimitExceeded:")


# -- consuming --------------------------------------------------------------------------


@pytest.mark.services
async def test_a_subscriber_continues_after_the_connection_drops(new_bus: OpenBus) -> None:
    bus = await new_bus()
    bus.url += "?reconnect_interval=0.05"  # aio-pika reads it from the URL; before the first connect
    type_ = unique("Heartbeat")
    recorder = Recorder()
    await bus.subscribe(unique("monitor"), [type_], recorder)
    before, after = make_events(type_, 2)
    await bus.publish(before)
    await recorder.wait_for(1)

    connection = bus._connection  # white-box: drop the socket under the robust connection
    assert connection is not None and connection.transport is not None
    await connection.transport.connection.close(ConnectionError("simulated network failure"))

    await bus.publish(after)  # waits for the publishing channel to come back
    async with asyncio.timeout(WAIT):
        while after not in recorder.received:
            await recorder.wait_for(len(recorder.received) + 1)
    # At-least-once: an ack still on the wire when the socket dropped means `before` comes again.
    assert {e.id for e in recorder.received} == {before.id, after.id}


@pytest.mark.services
async def test_closing_cancels_a_stuck_handler_after_the_timeout_and_requeues_its_event(new_bus: OpenBus) -> None:
    bus = await new_bus(close_timeout=0.05)
    type_, group = unique("Stuck"), unique("stuck")
    started = asyncio.Event()

    async def never_returns(event: Event) -> None:
        started.set()
        await asyncio.Event().wait()

    stuck = await bus.subscribe(group, [type_], never_returns)
    (event,) = make_events(type_, 1)
    await bus.publish(event)
    await asyncio.wait_for(started.wait(), WAIT)
    await asyncio.wait_for(stuck.close(), WAIT)

    recorder = Recorder()
    await bus.subscribe(group, [type_], recorder)
    await recorder.wait_for(1)
    await bus.wait_idle(timeout=WAIT)
    assert recorder.received == [event]
    assert await bus.dead_letters() == []


@pytest.mark.services
async def test_close_leaves_unhandled_events_in_the_broker_for_the_next_process(new_bus: OpenBus) -> None:
    require_service("rabbitmq")
    run = uuid.uuid4().hex[:12]
    exchange, prefix = f"test-{run}", f"test-{run}."
    first = RabbitMQBus(RABBITMQ_URL, exchange=exchange, queue_prefix=prefix, close_timeout=0.05)  # keeps its queues
    type_, group = unique("InvoiceIssued"), unique("invoicing")
    handled: list[Event] = []
    gate = asyncio.Event()

    async def slow(event: Event) -> None:
        handled.append(event)
        await gate.wait()  # never opened: the close timeout cancels it

    await first.subscribe(group, [type_], slow, concurrency=2)
    events = make_events(type_, 30)
    for event in events:
        await first.publish(event)
    await first.close()
    assert len(handled) == 2, "two handlers were in flight when the bus closed"

    second = await new_bus(exchange=exchange, queue_prefix=prefix)  # the next process: same exchange and queues
    recorder = Recorder()
    await second.subscribe(group, [type_], recorder, concurrency=4)
    await recorder.wait_for(30)
    await second.wait_idle(timeout=WAIT)
    assert sorted(e.id for e in recorder.received) == sorted(e.id for e in events)


@pytest.mark.services
async def test_a_handler_may_close_its_own_subscription(new_bus: OpenBus) -> None:
    bus = await new_bus()
    type_ = unique("OneShot")
    subscription: Subscription | None = None
    handled = asyncio.Event()

    async def once(event: Event) -> None:
        assert subscription is not None
        await subscription.close()
        handled.set()

    subscription = await bus.subscribe(unique("one-shot"), [type_], once)
    await bus.publish(make_events(type_, 1)[0])
    await asyncio.wait_for(handled.wait(), WAIT)
    await bus.wait_idle(timeout=WAIT)
    stats = bus.stats()
    assert (stats.delivered, stats.acked, stats.redelivered) == (1, 1, 0)


@pytest.mark.services
async def test_a_prefetch_above_concurrency_keeps_order_and_the_concurrency_bound(new_bus: OpenBus) -> None:
    bus = await new_bus(prefetch=20)
    ordered_type, parallel_type = unique("Ledger"), unique("Report")
    ordered = Recorder()
    await bus.subscribe(unique("ledger"), [ordered_type], ordered)
    running = peak = 0
    parallel = Recorder()

    async def slow(event: Event) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        await parallel(event)

    await bus.subscribe(unique("reports"), [parallel_type], slow, concurrency=2)
    ledger, reports = make_events(ordered_type, 50), make_events(parallel_type, 20)
    for event in ledger + reports:
        await bus.publish(event)
    await ordered.wait_for(50)
    await parallel.wait_for(20)
    assert ordered.received == ledger
    assert peak == 2
