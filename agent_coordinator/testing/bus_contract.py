"""The event bus conformance suite: :class:`EventBusContract`.

A bus backend is ready when it passes this suite (the contract it checks is the
one :mod:`agent_coordinator.bus.base` states: payloads arrive intact, each event
reaches every bound group at least once and each member of a group competes for
it, failures are redelivered and then dead-lettered, ``concurrency`` bounds the
handlers, closing a member or the bus loses nothing). To run it on your backend,
subclass it in a test module and give it a ``bus_factory`` fixture::

    import pytest

    from agent_coordinator.testing.bus_contract import BusFactory, EventBusContract


    class TestMyBus(EventBusContract):
        drains_on_close = False  # capability flags: set them honestly

        @pytest.fixture
        def bus_factory(self) -> BusFactory:
            async def open_bus(**options):
                return await MyBus.connect("mybus://localhost", **options)

            return open_bus

The suite closes every bus it opens. It needs ``pytest-asyncio`` (its tests are
marked ``asyncio``). A capability a backend lacks is a flag set to False, which
skips the tests that need it; never edit the tests for a backend. Every test uses
fresh group and type names, waits on events with timeouts (never sleeps for
correctness) and uses the protocol's ``wait_idle`` only to prove that nothing
*more* arrives.

This module imports pytest and the bus package: import it from your tests only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, ClassVar, Protocol

import pytest
import pytest_asyncio

from agent_coordinator.bus import EventBus, Handler
from agent_coordinator.core.errors import BusClosed, MalformedEvent, UntrustedEvent
from agent_coordinator.core.events import Event, EventFactory
from agent_coordinator.testing.suite import ConformanceSuite, closed_after

__all__ = [
    "WAIT",
    "BusFactory",
    "EventBusContract",
    "Inbox",
    "assert_each_once",
    "ids",
    "make_events",
    "publish_all",
    "unique",
]

WAIT = 5.0
"""Seconds any single wait of the suite may take before its test fails."""


class BusFactory(Protocol):
    """Opens a fresh bus. Options the suite passes: ``max_deliveries``,
    ``redelivery_delay``, ``duplicate_delivery`` (each only when the matching
    capability flag is set)."""

    def __call__(self, **options: Any) -> Awaitable[EventBus]: ...


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against a shared broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_events(type_: str, count: int, *, tag: str = "") -> list[Event]:
    """``count`` distinct events of ``type_`` (distinct subjects give distinct ids)."""
    factory = EventFactory(seed=7)
    return [
        factory.event(type_, subject=f"wf-{tag}{i}", source="contract-test", data={"n": i, "tag": tag})
        for i in range(count)
    ]


def ids(events: Iterable[Event]) -> list[str]:
    """The events' ids, in order."""
    return [e.id for e in events]


class Inbox:
    """Records what handlers receive, by member; ``wait_for(n)`` returns once n arrived."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Event]] = []
        self._changed = asyncio.Event()

    def handler(self, member: str = "member") -> Handler:
        async def record(event: Event) -> None:
            await asyncio.sleep(0)  # let other consumers interleave, as real handlers would
            self.record(member, event)

        return record

    def record(self, member: str, event: Event) -> None:
        self.received.append((member, event))
        self._changed.set()

    def ids(self, member: str | None = None) -> list[str]:
        return [e.id for m, e in self.received if member is None or m == member]

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()


def assert_each_once(received: list[str], expected: list[str]) -> None:
    """Every expected id was received, none twice."""
    counts = Counter(received)
    duplicated = {i: n for i, n in counts.items() if n > 1}
    assert not duplicated, f"delivered more than once: {duplicated}"
    assert set(received) == set(expected), f"missing {len(set(expected) - set(received))} events"


async def publish_all(bus: EventBus, events: Iterable[Event]) -> None:
    """Publish ``events`` one after the other."""
    for event in events:
        await bus.publish(event)


@pytest.mark.asyncio
class EventBusContract(ConformanceSuite):
    """The :class:`~agent_coordinator.bus.base.EventBus` contract, as tests a backend must pass.

    Subclass it as ``Test<YourBus>`` and define the ``bus_factory`` fixture: a
    :class:`BusFactory`, each call opening a fresh bus (isolated from earlier ones:
    its own queues, streams or prefix) with the options the suite passes. Then set
    the capability flags to what the backend does:

    * ``supports_dead_letters`` -- ``dead_letters()`` and ``replay_dead_letters()``
      work, and ``max_deliveries=`` bounds redeliveries;
    * ``supports_duplicate_delivery_switch`` -- ``duplicate_delivery=True`` delivers
      every event twice to every group (a test switch for idempotent handlers);
    * ``fifo_per_group`` -- one member with ``concurrency=1`` sees publish order;
    * ``drains_on_close`` -- ``close()`` handles everything accepted before it
      returns (a broker backend may instead leave it in the broker).

    ``idle_timeout`` bounds :meth:`settle`, which waits on the protocol's
    ``wait_idle(timeout)``; override :meth:`settle` only if your bus needs more.
    """

    supports_dead_letters: ClassVar[bool] = True
    supports_duplicate_delivery_switch: ClassVar[bool] = True
    fifo_per_group: ClassVar[bool] = True
    drains_on_close: ClassVar[bool] = True
    idle_timeout: ClassVar[float] = 10.0

    @pytest.fixture
    def bus_factory(self) -> BusFactory:
        """Opens a fresh bus of the backend under test: define it in your subclass."""
        self._missing_factory("EventBus", "bus_factory", "`async def open_bus(**options) -> EventBus`")

    @pytest_asyncio.fixture
    async def new_bus(self, bus_factory: BusFactory) -> AsyncIterator[BusFactory]:
        """``bus_factory``, with every bus it opened closed after the test."""
        async with closed_after(bus_factory) as open_bus:
            yield open_bus

    async def settle(self, bus: EventBus) -> None:
        """Wait until ``bus`` has nothing queued, in flight or awaiting redelivery
        (``wait_idle``); the suite uses it to assert that nothing *more* arrives."""
        await bus.wait_idle(timeout=self.idle_timeout)

    # -- payload ---------------------------------------------------------------------------

    async def test_payload_and_attributes_arrive_intact(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        type_ = unique("PaymentProcessed")
        factory = EventFactory(seed=uuid.uuid4().int % 10_000)
        cause = factory.event(unique("OrderPlaced"), subject="order-ü-42", source="agent/orders")
        data = {
            "text": 'naïve café — 東京 🚀 "quoted" \\ back\nslash',
            "amount": 12.34,
            "big": 2**53 + 1,
            "negative": -7,
            "flags": [True, False, None],
            "nested": {"items": [{"sku": "ß-1", "qty": 2}], "empty": {}, "none": None},
            "": "empty key",
        }
        event = factory.event(type_, subject="order-ü-42", source="agent/payment", data=data, cause=cause)
        first, second = Inbox(), Inbox()
        await bus.subscribe(unique("g1"), [type_], first.handler())
        await bus.subscribe(unique("g2"), [type_], second.handler())

        await bus.publish(event)
        await first.wait_for(1)
        await second.wait_for(1)

        (_, got), (_, other) = first.received[0], second.received[0]
        assert got == event
        assert got.to_json() == event.to_json()
        assert got.traceparent == event.traceparent
        assert got.causation_id == cause.id
        assert got.data == data
        assert got.time == event.time
        # Events cross the bus as bytes: nobody shares an object with the publisher or another group.
        assert got is not event and got is not other

    # -- delivery --------------------------------------------------------------------------

    async def test_concurrent_publishers_every_group_gets_each_event_once(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        type_ = unique("ItemReserved")
        shared, solo = Inbox(), Inbox()
        shared_group = unique("inventory")
        for member in ("a", "b", "c"):
            await bus.subscribe(shared_group, [type_], shared.handler(member), concurrency=4)
        await bus.subscribe(unique("audit"), [type_], solo.handler())
        events = make_events(type_, 1000)

        async def publisher(chunk: list[Event]) -> None:
            for event in chunk:
                await bus.publish(event)
                await asyncio.sleep(0)  # interleave the publishers

        await asyncio.gather(*(publisher(events[k::20]) for k in range(20)))
        await shared.wait_for(1000)
        await solo.wait_for(1000)
        await self.settle(bus)

        assert_each_once(shared.ids(), ids(events))
        assert_each_once(solo.ids(), ids(events))

    async def test_handler_that_fails_twice_is_redelivered_then_acked(self, new_bus: BusFactory) -> None:
        bus = await new_bus(max_deliveries=5)
        type_ = unique("PaymentRequested")
        (event,) = make_events(type_, 1)
        attempts: list[Event] = []
        succeeded: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def flaky(received: Event) -> None:
            attempts.append(received)
            if len(attempts) <= 2:
                raise ConnectionError(f"payment gateway timeout #{len(attempts)}")
            succeeded.set_result(None)

        await bus.subscribe(unique("payments"), [type_], flaky)
        await bus.publish(event)
        await asyncio.wait_for(succeeded, WAIT)
        await self.settle(bus)

        assert len(attempts) == 3
        assert all(a == event for a in attempts)
        assert (await bus.dead_letters()) == []
        stats = bus.stats()
        assert (stats.published, stats.delivered, stats.acked, stats.redelivered, stats.dead_lettered) == (
            1,
            3,
            1,
            2,
            0,
        )

    async def test_handler_that_always_fails_is_dead_lettered_and_replayable(self, new_bus: BusFactory) -> None:
        if not self.supports_dead_letters:
            pytest.skip(f"{type(self).__name__} has no dead letters")
        bus = await new_bus(max_deliveries=3)
        type_, group = unique("ShipmentRequested"), unique("shipping")
        (event,) = make_events(type_, 1)
        attempts: list[Event] = []
        healthy = False
        handled: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        async def carrier(received: Event) -> None:
            attempts.append(received)
            if not healthy:
                raise RuntimeError(f"carrier API down (attempt {len(attempts)})")
            handled.set_result(received)

        await bus.subscribe(group, [type_], carrier)
        await bus.publish(event)
        await self.settle(bus)

        assert len(attempts) == 3
        (dead,) = await bus.dead_letters()
        assert dead.event == event
        assert dead.group == group
        assert dead.deliveries == 3
        assert dead.error == "RuntimeError: carrier API down (attempt 3)"
        assert bus.stats().dead_lettered == 1

        healthy = True
        assert await bus.replay_dead_letters(unique("other-group")) == 0
        assert await bus.replay_dead_letters(group) == 1
        assert await asyncio.wait_for(handled, WAIT) == event
        await self.settle(bus)
        assert len(attempts) == 4
        assert (await bus.dead_letters()) == []

    async def test_fan_out_across_groups_and_competition_within_a_group(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        type_ = unique("OrderPlaced")
        competing, other = Inbox(), Inbox()
        competing_group = unique("billing")
        await bus.subscribe(competing_group, [type_], competing.handler("m1"), concurrency=3)
        await bus.subscribe(competing_group, [type_], competing.handler("m2"), concurrency=3)
        await bus.subscribe(unique("emails"), [type_], other.handler())
        events = make_events(type_, 300)

        await publish_all(bus, events)
        await competing.wait_for(300)
        await other.wait_for(300)
        await self.settle(bus)

        assert_each_once(competing.ids(), ids(events))
        assert competing.ids("m1"), "member m1 got nothing: members of a group must share its events"
        assert competing.ids("m2"), "member m2 got nothing: members of a group must share its events"
        assert_each_once(other.ids(), ids(events))

    async def test_group_never_receives_types_it_is_not_bound_to(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        type_a, type_b = unique("StockReserved"), unique("StockReleased")
        inbox_a, inbox_b = Inbox(), Inbox()
        await bus.subscribe(unique("ga"), [type_a], inbox_a.handler())
        await bus.subscribe(unique("gb"), [type_b], inbox_b.handler())
        events_a, events_b = make_events(type_a, 20, tag="a"), make_events(type_b, 20, tag="b")

        for event_a, event_b in zip(events_a, events_b, strict=True):
            await bus.publish(event_b)
            await bus.publish(event_a)
        await inbox_a.wait_for(20)
        await inbox_b.wait_for(20)
        await self.settle(bus)

        assert {e.type for _, e in inbox_a.received} == {type_a}
        assert {e.type for _, e in inbox_b.received} == {type_b}
        assert_each_once(inbox_a.ids(), ids(events_a))
        assert_each_once(inbox_b.ids(), ids(events_b))

    async def test_events_published_before_the_first_subscribe_are_not_delivered(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        type_ = unique("OrderCancelled")
        early, late = make_events(type_, 5, tag="early"), make_events(type_, 5, tag="late")
        await publish_all(bus, early)  # no group is bound yet: accepted and dropped
        inbox = Inbox()
        await bus.subscribe(unique("late-group"), [type_], inbox.handler())

        await publish_all(bus, late)
        await inbox.wait_for(5)
        await self.settle(bus)

        assert_each_once(inbox.ids(), ids(late))

    async def test_one_member_with_concurrency_one_sees_publish_order(self, new_bus: BusFactory) -> None:
        if not self.fifo_per_group:
            pytest.skip(f"{type(self).__name__} does not keep FIFO order per group")
        bus = await new_bus()
        type_ = unique("LedgerEntry")
        inbox = Inbox()
        await bus.subscribe(unique("ledger"), [type_], inbox.handler(), concurrency=1)
        events = make_events(type_, 200)

        await publish_all(bus, events)
        await inbox.wait_for(200)

        assert inbox.ids() == ids(events)

    async def test_concurrency_bounds_parallel_handler_calls(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        type_ = unique("ReportRequested")
        running = peak = 0
        three_running, release = asyncio.Event(), asyncio.Event()
        inbox = Inbox()

        async def slow(event: Event) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if running == 3:
                three_running.set()
            await release.wait()
            running -= 1
            inbox.record("m", event)

        await bus.subscribe(unique("reports"), [type_], slow, concurrency=3)
        await publish_all(bus, make_events(type_, 9))
        await asyncio.wait_for(three_running.wait(), WAIT)
        assert peak == 3
        release.set()
        await inbox.wait_for(9)
        await self.settle(bus)

        assert peak == 3
        assert len(inbox.received) == 9

    # -- close -----------------------------------------------------------------------------

    async def test_closing_a_member_mid_flight_loses_nothing(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        type_, group = unique("InvoiceIssued"), unique("invoicing")
        inbox = Inbox()
        holding, release = asyncio.Event(), asyncio.Event()

        async def held_member(event: Event) -> None:
            if not holding.is_set():
                holding.set()
                await release.wait()  # stay in flight while the member is being closed
            inbox.record("leaving", event)

        leaving = await bus.subscribe(group, [type_], held_member)
        await bus.subscribe(group, [type_], inbox.handler("staying"), concurrency=2)
        events = make_events(type_, 200)
        await publish_all(bus, events)

        await asyncio.wait_for(holding.wait(), WAIT)
        closing = asyncio.create_task(leaving.close())
        # A negative check needs a window: close() must neither return nor cancel the handler meanwhile.
        finished, _ = await asyncio.wait([closing], timeout=0.05)
        assert not finished, "Subscription.close() must wait for in-flight handlers"
        release.set()
        await asyncio.wait_for(closing, WAIT)
        handled_by_leaving = inbox.ids("leaving")
        assert handled_by_leaving, "the in-flight handler must be allowed to finish"

        await inbox.wait_for(200)
        await self.settle(bus)
        assert_each_once(inbox.ids(), ids(events))
        assert inbox.ids("leaving") == handled_by_leaving, "a closed member must take no more deliveries"
        await leaving.close()  # closing twice is a no-op

    async def test_new_member_continues_where_a_closed_one_left_off(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        type_, group = unique("TicketBooked"), unique("booking")
        inbox = Inbox()
        tenth, release = asyncio.Event(), asyncio.Event()

        async def first_member(event: Event) -> None:
            inbox.record("first", event)
            if len(inbox.received) == 10:
                tenth.set()
                await release.wait()

        first = await bus.subscribe(group, [type_], first_member)
        before, after = make_events(type_, 100, tag="before"), make_events(type_, 50, tag="after")
        await publish_all(bus, before)
        await asyncio.wait_for(tenth.wait(), WAIT)
        closing = asyncio.create_task(first.close())
        release.set()
        await asyncio.wait_for(closing, WAIT)
        taken = inbox.ids("first")

        await publish_all(bus, after)  # the group has no member now; its queue keeps collecting
        await bus.subscribe(group, [type_], inbox.handler("second"))
        await inbox.wait_for(150)
        await self.settle(bus)

        everything = ids(before + after)
        assert_each_once(inbox.ids(), everything)
        assert inbox.ids("first") == taken
        if self.fifo_per_group:
            assert inbox.ids("first") + inbox.ids("second") == everything

    async def test_closing_the_bus_after_concurrent_publishes_loses_nothing(self, new_bus: BusFactory) -> None:
        if not self.drains_on_close:
            pytest.skip(f"{type(self).__name__} leaves unhandled events in the broker on close")
        bus = await new_bus()
        type_ = unique("AuditRecorded")
        inbox = Inbox()
        group = unique("audit")
        await bus.subscribe(group, [type_], inbox.handler("a"), concurrency=4)
        await bus.subscribe(group, [type_], inbox.handler("b"), concurrency=4)
        events = make_events(type_, 1000)

        await asyncio.gather(*(publish_all(bus, events[k::20]) for k in range(20)))
        await bus.close()

        handled = inbox.ids()
        parked = [d.event.id for d in (await bus.dead_letters())]
        assert_each_once(handled + parked, ids(events))
        assert parked == [], "with live members and no timeout, close() must handle everything accepted"

    async def test_publish_subscribe_and_replay_after_close_raise_bus_closed(self, new_bus: BusFactory) -> None:
        bus = await new_bus()
        type_ = unique("Anything")
        subscription = await bus.subscribe(unique("g"), [type_], Inbox().handler())
        await bus.close()
        await bus.close()  # idempotent
        await subscription.close()  # already stopped by the bus: a no-op

        (event,) = make_events(type_, 1)
        with pytest.raises(BusClosed):
            await bus.publish(event)
        with pytest.raises(BusClosed):
            await bus.subscribe(unique("g"), [type_], Inbox().handler())
        if self.supports_dead_letters:
            with pytest.raises(BusClosed):
                await bus.replay_dead_letters()

    # -- test switches ---------------------------------------------------------------------

    async def test_duplicate_delivery_switch_delivers_every_event_twice_to_every_group(
        self, new_bus: BusFactory
    ) -> None:
        if not self.supports_duplicate_delivery_switch:
            pytest.skip(f"{type(self).__name__} has no duplicate_delivery switch")
        bus = await new_bus(duplicate_delivery=True)
        type_ = unique("PaymentProcessed")
        first, second = Inbox(), Inbox()
        await bus.subscribe(unique("g1"), [type_], first.handler(), concurrency=2)
        await bus.subscribe(unique("g2"), [type_], second.handler())
        events = make_events(type_, 10)

        await publish_all(bus, events)
        await first.wait_for(20)
        await second.wait_for(20)
        await self.settle(bus)

        expected = Counter({i: 2 for i in ids(events)})
        assert Counter(first.ids()) == expected
        assert Counter(second.ids()) == expected

    # -- events at fault -------------------------------------------------------------------

    @pytest.mark.parametrize("error", [MalformedEvent, UntrustedEvent])
    async def test_an_event_its_handler_calls_malformed_is_dead_lettered_at_once_with_the_reason(
        self, new_bus: BusFactory, error: type[MalformedEvent]
    ) -> None:
        """MalformedEvent (and UntrustedEvent, a forged or badly signed event) is never
        retryable: the first failure dead-letters the event, whatever max_deliveries says."""
        if not self.supports_dead_letters:
            pytest.skip(f"{type(self).__name__} has no dead letters")
        bus = await new_bus(max_deliveries=5)
        type_, group = unique("PaymentFailed"), unique("inventory")
        bad, good = make_events(type_, 2)
        calls: list[str] = []
        inbox = Inbox()

        async def strict(received: Event) -> None:
            calls.append(received.id)
            if received.id == bad.id:
                raise error(f"{received.type} {received.id} lacks data.results; the emitter must carry them")
            inbox.record("member", received)

        await bus.subscribe(group, [type_], strict)
        await publish_all(bus, [bad, good])
        await inbox.wait_for(1)
        await self.settle(bus)

        assert calls.count(bad.id) == 1, "retried although the event itself is at fault"
        (dead,) = await bus.dead_letters()
        assert (dead.event, dead.group, dead.deliveries) == (bad, group, 1)
        assert dead.error == f"{error.__name__}: {type_} {bad.id} lacks data.results; the emitter must carry them"
        assert not dead.malformed
        stats = bus.stats()
        assert (stats.redelivered, stats.dead_lettered) == (0, 1)
