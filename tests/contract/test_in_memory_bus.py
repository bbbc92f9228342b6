"""What the in-memory bus adds beyond the shared contract: its knobs, its test
helper ``wait_idle``, close timeouts, and ``open_bus`` URL resolution."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from agent_coordinator.bus import EventBus, InMemoryBus, Subscription, open_bus
from agent_coordinator.core.errors import BusError
from agent_coordinator.core.events import Event, EventFactory


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_event(type_: str, n: int = 0, **data: object) -> Event:
    return EventFactory().event(type_, subject=f"wf-{n}", source="memory-test", data={"n": n, **data})


async def never_returns(event: Event) -> None:
    await asyncio.Event().wait()


async def test_it_is_an_event_bus_and_subscriptions_are_subscriptions() -> None:
    async with InMemoryBus() as bus:
        assert isinstance(bus, EventBus)

        async def ignore(event: Event) -> None:
            return None

        assert isinstance(await bus.subscribe("g", ["T"], ignore), Subscription)


async def test_wait_idle_times_out_naming_the_group_that_still_has_work() -> None:
    async with InMemoryBus(close_timeout=0) as bus:
        type_, group = unique("T"), unique("orphaned")
        member = await bus.subscribe(group, [type_], never_returns)
        await member.close()  # leaves the group bound, with no member to drain it
        await bus.publish(make_event(type_))

        with pytest.raises(TimeoutError, match=rf"group '{group}': 1 unsettled \(1 queued.*0 member\(s\)\)"):
            await bus.wait_idle(timeout=0.05)


async def test_close_cancels_handlers_past_the_timeout_and_dead_letters_what_is_left() -> None:
    bus = InMemoryBus(close_timeout=0.05)
    type_, group = unique("T"), unique("stuck")
    await bus.subscribe(group, [type_], never_returns)
    events = [make_event(type_, n) for n in range(3)]
    for event in events:
        await bus.publish(event)

    await asyncio.wait_for(bus.close(), 2)

    dead = await bus.dead_letters()
    assert sorted(d.event.id for d in dead) == sorted(e.id for e in events)
    assert {d.group for d in dead} == {group}
    assert all(d.error.startswith("BusClosed:") for d in dead)
    assert sorted(d.deliveries for d in dead) == [0, 0, 1]  # one was in flight when cancelled


async def test_events_of_a_group_without_members_become_dead_letters_at_close() -> None:
    bus = InMemoryBus()
    type_, group = unique("T"), unique("orphaned")
    await (await bus.subscribe(group, [type_], never_returns)).close()
    await bus.publish(make_event(type_))

    await asyncio.wait_for(bus.close(), 2)  # does not wait for a group nobody consumes

    (dead,) = await bus.dead_letters()
    assert (dead.group, dead.deliveries) == (group, 0)


async def test_redeliveries_back_off_exponentially() -> None:
    async with InMemoryBus(max_deliveries=3, redelivery_delay=0.02) as bus:
        loop = asyncio.get_running_loop()
        seen: list[float] = []

        async def failing(event: Event) -> None:
            seen.append(loop.time())
            raise TimeoutError("upstream slow")

        await bus.subscribe(unique("g"), ["T"], failing)
        await bus.publish(make_event("T"))
        await bus.wait_idle(timeout=2)

        assert len(seen) == 3
        tolerance = 0.005  # loop timers may fire up to the clock resolution early
        assert seen[1] - seen[0] >= 0.02 - tolerance
        assert seen[2] - seen[1] >= 0.04 - tolerance
        (dead,) = await bus.dead_letters()
        assert dead.error == "TimeoutError: upstream slow"


async def test_a_pending_redelivery_at_close_is_dead_lettered() -> None:
    bus = InMemoryBus(redelivery_delay=60, close_timeout=0.05)
    failed = asyncio.Event()

    async def failing(event: Event) -> None:
        failed.set()
        raise RuntimeError("nope")

    await bus.subscribe(unique("g"), ["T"], failing)
    await bus.publish(make_event("T"))
    await asyncio.wait_for(failed.wait(), 2)
    await asyncio.wait_for(bus.close(), 2)

    (dead,) = await bus.dead_letters()
    assert (dead.deliveries, dead.error.split(":")[0]) == (1, "BusClosed")


async def test_subscription_close_timeout_puts_the_cancelled_event_back_for_the_group() -> None:
    async with InMemoryBus(close_timeout=0.05) as bus:
        group = unique("g")
        started = asyncio.Event()
        handled: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        async def hangs(event: Event) -> None:
            started.set()
            await asyncio.Event().wait()

        async def works(event: Event) -> None:
            handled.set_result(event)

        stuck = await bus.subscribe(group, ["T"], hangs)
        event = make_event("T")
        await bus.publish(event)
        await asyncio.wait_for(started.wait(), 2)
        await asyncio.wait_for(stuck.close(), 2)
        await bus.subscribe(group, ["T"], works)

        assert await asyncio.wait_for(handled, 2) == event
        await bus.wait_idle(timeout=2)
        assert (await bus.dead_letters()) == []


async def test_a_handler_may_close_its_own_subscription() -> None:
    async with InMemoryBus() as bus:
        subscription: Subscription | None = None
        done = asyncio.Event()

        async def once(event: Event) -> None:
            assert subscription is not None
            await subscription.close()
            done.set()

        subscription = await bus.subscribe(unique("g"), ["T"], once)
        await bus.publish(make_event("T"))
        await asyncio.wait_for(done.wait(), 2)
        await bus.wait_idle(timeout=2)


async def test_dead_lettering_is_logged_with_the_error(caplog: pytest.LogCaptureFixture) -> None:
    async with InMemoryBus(max_deliveries=1) as bus:

        async def failing(event: Event) -> None:
            raise ValueError("bad sku")

        group = unique("g")
        await bus.subscribe(group, ["T"], failing)
        with caplog.at_level(logging.WARNING, logger="agent_coordinator.bus.memory"):
            await bus.publish(make_event("T"))
            await bus.wait_idle(timeout=2)

        (record,) = caplog.records
        assert group in record.getMessage()
        assert record.exc_info is not None and "bad sku" in str(record.exc_info[1])


async def test_unserialisable_data_is_refused_at_publish() -> None:
    async with InMemoryBus() as bus:
        await bus.subscribe(unique("g"), ["T"], never_returns)
        with pytest.raises(BusError, match="not JSON-serialisable"):
            await bus.publish(make_event("T", payload=object()))
        assert bus.stats().published == 0


async def test_stats_are_a_snapshot() -> None:
    async with InMemoryBus() as bus:
        before = bus.stats()
        await bus.publish(make_event("Unbound"))
        assert (before.published, bus.stats().published) == (0, 1)


async def test_subscribe_rejects_bad_arguments() -> None:
    async with InMemoryBus() as bus:
        with pytest.raises(TypeError, match=r"pass \['OrderPlaced'\]"):
            await bus.subscribe("g", "OrderPlaced", never_returns)
        with pytest.raises(ValueError, match="at least one event type"):
            await bus.subscribe("g", [], never_returns)
        with pytest.raises(ValueError, match="non-empty"):
            await bus.subscribe("", ["T"], never_returns)
        with pytest.raises(ValueError, match="concurrency must be at least 1"):
            await bus.subscribe("g", ["T"], never_returns, concurrency=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"redelivery_delay": -1}, "redelivery_delay"),
        ({"close_timeout": -1}, "close_timeout"),
    ],
)
def test_constructor_rejects_bad_knobs(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InMemoryBus(**options)  # type: ignore[arg-type]


# -- open_bus --------------------------------------------------------------------------


async def test_open_bus_memory_passes_options_through() -> None:
    bus = open_bus("memory://", max_deliveries=2, duplicate_delivery=True)
    assert isinstance(bus, InMemoryBus)
    assert (bus.max_deliveries, bus.duplicate_delivery) == (2, True)
    assert isinstance(open_bus(), InMemoryBus)
    await bus.close()


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("redis://coordinator:s3cret@localhost", "unknown bus URL scheme (redis://)"),
        ("localhost", "unknown bus URL scheme (no scheme)"),
    ],
)
def test_open_bus_refuses_schemes_without_a_backend(url: str, names: str) -> None:
    with pytest.raises(BusError) as raised:
        open_bus(url)
    message = str(raised.value)
    assert names in message
    assert "amqp://, amqps://, memory://, nats://" in message  # the supported schemes are listed
    assert "s3cret" not in message  # never echo credentials from a broker URL


@pytest.mark.parametrize("url", ["memory://?max_deliveries=3", "memory://somewhere", "memory:///x"])
def test_a_memory_url_with_options_is_refused_not_ignored(url: str) -> None:
    with pytest.raises(BusError, match=r"the memory bus takes no host, path or URL options .*max_deliveries=3\)"):
        open_bus(url)


async def test_a_plain_memory_url_opens_the_in_memory_bus() -> None:
    for url in ("memory://", "memory:", "MEMORY://"):
        bus = open_bus(url, max_deliveries=2)
        assert isinstance(bus, InMemoryBus)
        await bus.close()


async def test_reorder_keeps_each_types_order_and_lets_types_overtake_each_other() -> None:
    seen: list[tuple[str, int]] = []

    async def note(event: Event) -> None:
        seen.append((event.type, event.data["n"]))

    # Seed 1 holds B's copies for this group longer than A's: B, published first, arrives last.
    types = ["B", "A"]
    async with InMemoryBus(reorder=0.05, reorder_seed=1) as bus:
        holds = {t: bus._hold(t, "g") for t in types}
        assert holds["B"] > holds["A"]
        await bus.subscribe("g", types, note)
        for n in range(3):
            await bus.publish(make_event("B", n))
        for n in range(3):
            await bus.publish(make_event("A", n))
        await bus.wait_idle()
        assert bus.stats().acked == 6
    assert seen == [("A", 0), ("A", 1), ("A", 2), ("B", 0), ("B", 1), ("B", 2)]


def test_reorder_is_refused_when_negative() -> None:
    with pytest.raises(ValueError, match="reorder must be >= 0 seconds"):
        InMemoryBus(reorder=-1)
