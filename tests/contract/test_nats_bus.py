"""What the JetStream bus does beyond the shared contract: dedup by ``Nats-Msg-Id``,
``in_progress`` heartbeats, malformed bodies, replay to one group, resuming a group
from another bus, and errors that name the server.

Tests that need the server are marked ``services``; the error tests need none.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import nats.js.api
import nats.js.errors
import pytest

from agent_coordinator.bus import open_bus
from agent_coordinator.bus.base import MALFORMED_MESSAGE_TYPE
from agent_coordinator.bus.nats import JetStreamBus
from agent_coordinator.core.errors import BusError
from agent_coordinator.core.events import Event
from tests.services import NATS_URL

from .backend_nats import open_throwaway_jetstream_bus
from .test_bus_contract import WAIT, Inbox, make_events, unique

OpenBus = Callable[..., Awaitable[JetStreamBus]]


@pytest.fixture
async def new_nats_bus() -> AsyncIterator[OpenBus]:
    """Opens throwaway JetStream buses (fresh streams); closes and deletes them afterwards."""
    opened: list[JetStreamBus] = []

    async def open_(**options: Any) -> JetStreamBus:
        bus = await open_throwaway_jetstream_bus(**options)
        opened.append(bus)
        return bus

    yield open_
    for bus in opened:
        await bus.close()


async def dlq_headers(bus: JetStreamBus) -> list[dict[str, str]]:
    """The headers of every message in the bus's DLQ stream, read directly."""
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        headers: list[dict[str, str]] = []
        seq = 1
        while True:
            try:
                raw = await js.get_msg(bus.dlq_stream, seq=seq, subject=f"{bus.subject_prefix}-dlq.>", next=True)
            except nats.js.errors.NotFoundError:
                return headers
            assert raw.seq is not None
            seq = raw.seq + 1
            headers.append(dict(raw.headers or {}))
    finally:
        await nc.close()


# -- no server needed ------------------------------------------------------------------


async def test_open_bus_gives_a_jetstream_bus_with_the_options() -> None:
    bus = open_bus("nats://127.0.0.1:4222", stream="ORDERS", subject_prefix="orders", max_deliveries=3)
    assert isinstance(bus, JetStreamBus)
    assert (bus.stream, bus.dlq_stream, bus.subject_prefix, bus.max_deliveries) == ("ORDERS", "ORDERS_DLQ", "orders", 3)
    assert isinstance(open_bus("tls://127.0.0.1:4222"), JetStreamBus)
    await bus.close()  # never connected: nothing to do


async def test_unreachable_server_raises_bus_error_naming_the_host_not_the_credentials() -> None:
    bus = JetStreamBus("nats://agent:s3cret@127.0.0.1:1")
    (event,) = make_events(unique("OrderPlaced"), 1)
    with pytest.raises(BusError) as raised:
        await bus.publish(event)
    message = str(raised.value)
    assert "127.0.0.1:1" in message
    assert "nats-server" in message and "-js" in message  # says what to check
    assert "s3cret" not in message
    await bus.close()


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"stream": "has.dot"}, "stream"),
        ({"subject_prefix": "events.>"}, "subject_prefix"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"ack_wait": 0}, "ack_wait"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        JetStreamBus("nats://127.0.0.1:4222", **options)


# -- against the server ----------------------------------------------------------------


@pytest.mark.services
async def test_stream_records_the_consumer_layout_the_server_supports(new_nats_bus: OpenBus) -> None:
    bus = await new_nats_bus()
    nc = await nats.connect(NATS_URL)
    try:
        version = nc.connected_server_version
        info = await nc.jetstream().stream_info(bus.stream)
    finally:
        await nc.close()
    expected = "per-group" if (version.major, version.minor) >= (2, 10) else "per-subject"
    assert f"consumer layout: {expected}" in (info.config.description or "")
    assert info.config.retention == nats.js.api.RetentionPolicy.INTEREST


@pytest.mark.services
async def test_publishing_the_same_event_twice_delivers_it_once(new_nats_bus: OpenBus) -> None:
    bus = await new_nats_bus()
    type_ = unique("PaymentProcessed")
    inbox = Inbox()
    await bus.subscribe(unique("payments"), [type_], inbox.handler())
    (event,) = make_events(type_, 1)

    await bus.publish(event)
    await bus.publish(event)  # a retried publish, or a redelivered handler re-emitting it
    await inbox.wait_for(1)
    await bus.wait_idle(timeout=WAIT)

    assert inbox.ids() == [event.id]
    assert bus.stats().published == 2  # both accepted; JetStream stored one


@pytest.mark.services
async def test_messages_dead_letters_and_replays_carry_content_type_and_traceparent(new_nats_bus: OpenBus) -> None:
    # Structured mode per the NATS binding: the Content-Type header says the payload is
    # a whole CloudEvent; traceparent travels as a header too. Copies keep both.
    bus = await new_nats_bus(max_deliveries=1)
    type_, group = unique("ParcelLost"), unique("claims")
    seen: list[Any] = []
    arrived = asyncio.Event()
    nc = await nats.connect(NATS_URL)
    try:

        async def tap(msg: Any) -> None:
            seen.append(msg)
            arrived.set()

        await nc.subscribe(f"{bus.subject_prefix}.>", cb=tap)
        await nc.subscribe(f"{bus.subject_prefix}-replay.>", cb=tap)
        await nc.flush()
        healthy = False
        handled = Inbox()
        inner = handled.handler()

        async def claims(event: Event) -> None:
            if not healthy:
                raise RuntimeError("claims desk closed")
            await inner(event)

        await bus.subscribe(group, [type_], claims)
        (event,) = make_events(type_, 1)
        await bus.publish(event)
        await bus.wait_idle(timeout=WAIT)
        (letter_headers,) = await dlq_headers(bus)
        healthy = True
        assert await bus.replay_dead_letters(group) == 1
        await handled.wait_for(1)
        async with asyncio.timeout(WAIT):
            while len(seen) < 2:
                arrived.clear()
                await arrived.wait()
    finally:
        await nc.close()

    expected = {"Content-Type": "application/cloudevents+json", "traceparent": event.traceparent}
    published, replayed = seen
    for headers in (published.headers, letter_headers, replayed.headers):
        assert {k: headers[k] for k in expected} == expected
    assert published.headers["Nats-Msg-Id"] == event.id
    assert published.data == replayed.data == event.to_json().encode()


@pytest.mark.services
async def test_in_progress_keeps_a_slow_handler_from_being_redelivered(new_nats_bus: OpenBus) -> None:
    bus = await new_nats_bus(ack_wait=0.6)
    type_ = unique("QuoteRequested")
    calls: list[Event] = []
    done = asyncio.Event()

    async def slow_model_call(event: Event) -> None:
        calls.append(event)
        await asyncio.sleep(2.0)  # more than three ack deadlines: a slow model call
        done.set()

    await bus.subscribe(unique("quotes"), [type_], slow_model_call, concurrency=2)
    await bus.publish(make_events(type_, 1)[0])
    await asyncio.wait_for(done.wait(), WAIT)
    await bus.wait_idle(timeout=WAIT)

    assert len(calls) == 1, "the message was redelivered while its handler was still running"
    stats = bus.stats()
    assert (stats.delivered, stats.acked, stats.redelivered) == (1, 1, 0)


@pytest.mark.services
async def test_a_malformed_message_is_dead_lettered_and_the_consumer_goes_on(new_nats_bus: OpenBus) -> None:
    bus = await new_nats_bus()
    type_, group = unique("OrderPlaced"), unique("orders")
    inbox = Inbox()
    await bus.subscribe(group, [type_], inbox.handler())

    nc = await nats.connect(NATS_URL)  # another client that does not speak our envelope
    try:
        await nc.jetstream().publish(f"{bus.subject_prefix}.{type_}", b'{"not": "an event"}')
    finally:
        await nc.close()
    (event,) = make_events(type_, 1)
    await bus.publish(event)
    await inbox.wait_for(1)
    await bus.wait_idle(timeout=WAIT)

    assert inbox.ids() == [event.id]
    assert bus.stats().dead_lettered == 1
    # Listed like RabbitMQ's: the raw body, a stand-in event describing it, the reason.
    (dead,) = await bus.dead_letters()
    assert dead.malformed and dead.body == b'{"not": "an event"}'
    assert dead.group == group and dead.deliveries == 1
    assert dead.error.startswith("MalformedEvent: not a valid event envelope")
    assert dead.event.type == MALFORMED_MESSAGE_TYPE
    assert dead.event.data["body"] == '{"not": "an event"}'
    (headers,) = await dlq_headers(bus)
    assert headers["Coordinator-Error"].startswith("MalformedEvent")
    assert await bus.replay_dead_letters() == 0, "a malformed body would only fail again"
    assert len(await bus.dead_letters()) == 1


@pytest.mark.services
async def test_replay_reaches_only_the_group_that_dead_lettered(new_nats_bus: OpenBus) -> None:
    bus = await new_nats_bus(max_deliveries=2)
    type_ = unique("ShipmentRequested")
    failing_group, other_group = unique("shipping"), unique("audit")
    healthy = False
    replayed: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
    other = Inbox()

    async def carrier(event: Event) -> None:
        if not healthy:
            raise ConnectionError("carrier API\ndown")  # a newline survives the header round trip
        replayed.set_result(event)

    await bus.subscribe(failing_group, [type_], carrier)
    await bus.subscribe(other_group, [type_], other.handler())
    (event,) = make_events(type_, 1)
    await bus.publish(event)
    await other.wait_for(1)
    await bus.wait_idle(timeout=WAIT)
    (dead,) = await bus.dead_letters()
    assert (dead.event, dead.group, dead.deliveries) == (event, failing_group, 2)
    assert dead.error == "ConnectionError: carrier API\ndown"

    healthy = True
    assert await bus.replay_dead_letters(failing_group) == 1
    assert await asyncio.wait_for(replayed, WAIT) == event
    await bus.wait_idle(timeout=WAIT)
    assert other.ids() == [event.id], "replay must not deliver the event to the other groups again"
    assert await bus.dead_letters() == []


@pytest.mark.services
async def test_adding_a_type_to_a_group_binds_it_from_then_on(new_nats_bus: OpenBus) -> None:
    bus = await new_nats_bus()
    type_a, type_b, group = unique("StockReserved"), unique("StockReleased"), unique("inventory")
    inbox = Inbox()
    await bus.subscribe(group, [type_a], inbox.handler("first"))
    early_b = make_events(type_b, 1, tag="early")
    await bus.publish(early_b[0])  # the group is not bound to B yet

    await bus.subscribe(group, [type_a, type_b], inbox.handler("second"))
    late = [*make_events(type_b, 3, tag="late"), *make_events(type_a, 3, tag="late")]
    for event in late:
        await bus.publish(event)
    await inbox.wait_for(len(late))
    await bus.wait_idle(timeout=WAIT)

    assert sorted(inbox.ids()) == sorted(e.id for e in late)


@pytest.mark.services
async def test_a_new_bus_resumes_the_group_where_a_closed_bus_left_it(new_nats_bus: OpenBus) -> None:
    type_, group = unique("InvoiceIssued"), unique("invoicing")
    first = await new_nats_bus(close_timeout=0.2)
    stuck = asyncio.Event()

    async def hangs(event: Event) -> None:
        stuck.set()
        await asyncio.Event().wait()  # never finishes: the close must cancel it and nak its event

    await first.subscribe(group, [type_], hangs)
    events = make_events(type_, 10)
    for event in events:
        await first.publish(event)
    await asyncio.wait_for(stuck.wait(), WAIT)
    # Close without deleting the streams (the second bus reopens them and deletes them).
    await JetStreamBus.close(first)

    second = await new_nats_bus(stream=first.stream, subject_prefix=first.subject_prefix)
    inbox = Inbox()
    await second.subscribe(group, [type_], inbox.handler())
    await inbox.wait_for(10)
    await second.wait_idle(timeout=WAIT)

    assert sorted(inbox.ids()) == sorted(e.id for e in events)
    rest = [i for i in inbox.ids() if i != events[0].id]  # the nacked one may come back first
    assert rest == [e.id for e in events[1:]], "the group must go on in order"
    await second.close()  # before the fixture closes `first`, which deletes the shared streams


@pytest.mark.services
async def test_subscribe_refuses_bad_arguments_before_touching_the_server(new_nats_bus: OpenBus) -> None:
    bus = await new_nats_bus()
    with pytest.raises(TypeError):
        await bus.subscribe("g", "OrderPlaced", Inbox().handler())
    with pytest.raises(ValueError, match="concurrency"):
        await bus.subscribe("g", ["OrderPlaced"], Inbox().handler(), concurrency=0)


@pytest.mark.services
async def test_odd_type_and_group_names_are_encoded_into_valid_subjects(new_nats_bus: OpenBus) -> None:
    bus = await new_nats_bus()
    type_ = f"Order placed.{uuid.uuid4().hex[:6]} *>"
    inbox = Inbox()
    await bus.subscribe("billing team/é", [type_], inbox.handler())
    events = make_events(type_, 3)
    for event in events:
        await bus.publish(event)
    await inbox.wait_for(3)
    assert inbox.ids() == [e.id for e in events]
