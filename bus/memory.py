"""The in-memory event bus: the reference backend of the :mod:`agent_coordinator.bus.base` contract.

One process, one event loop, no threads. It behaves like a broker where it matters
for correctness: each group is one queue that its members' consumer tasks pull
from; events cross the bus as JSON (``event.to_json()`` on publish, ``parse_event``
on every delivery), so handlers never share objects and payload fidelity is really
exercised; failed deliveries are redelivered with exponential backoff and then
dead-lettered. What it cannot give is durability across processes: events still
unhandled when :meth:`InMemoryBus.close` gives up are moved to the dead letters
rather than kept in a broker.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from agent_coordinator.bus.backend import BusBackend, check_delivery_options, event_json, stop_workers
from agent_coordinator.bus.base import DeadLetter, Handler, Subscription
from agent_coordinator.core.errors import MalformedEvent
from agent_coordinator.core.events import Event, parse_event

__all__ = ["InMemoryBus"]

logger = logging.getLogger(__name__)

_CLOSED_BEFORE_HANDLED = "BusClosed: the bus closed before this event was handled"


class _Delivery:
    """One event on its way to one group: the wire form and how often it was handed out."""

    __slots__ = ("deliveries", "raw")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.deliveries = 0


class _Group:
    """A consumer group: one queue, its bindings and its members.

    ``unsettled`` counts deliveries neither acked nor dead-lettered (queued, in
    flight or waiting for a redelivery timer); it is the one number idleness is
    judged by, so the per-event path only touches an integer.
    """

    __slots__ = ("in_flight", "members", "name", "progress", "queue", "redeliveries", "types", "unsettled")

    def __init__(self, name: str, progress: asyncio.Event) -> None:
        self.name = name
        self.types: set[str] = set()
        self.queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        self.members: set[_GroupMember] = set()
        self.redeliveries: dict[_Delivery, asyncio.TimerHandle] = {}
        self.unsettled = 0
        self.in_flight = 0
        # Shared with the bus: set whenever a group may have become idle, so waiters
        # re-check instead of polling.
        self.progress = progress

    def enqueue(self, delivery: _Delivery) -> None:
        self.unsettled += 1
        self.queue.put_nowait(delivery)

    def settle(self) -> None:
        self.unsettled -= 1
        if not self.unsettled:
            self.progress.set()

    def hold(self, delivery: _Delivery, seconds: float) -> None:
        """Accept ``delivery`` now, queue it ``seconds`` later (``reorder``)."""
        self.unsettled += 1
        self.redeliveries[delivery] = asyncio.get_running_loop().call_later(seconds, self.release, delivery)

    def release(self, delivery: _Delivery) -> None:
        """Queue a delivery that was held (a redelivery's backoff, or ``reorder``)."""
        del self.redeliveries[delivery]
        self.queue.put_nowait(delivery)

    def describe(self) -> str:
        return (
            f"group {self.name!r}: {self.unsettled} unsettled ({self.queue.qsize()} queued, {self.in_flight} in flight,"
            f" {len(self.redeliveries)} awaiting redelivery; {len(self.members)} member(s))"
        )


class _GroupMember:
    """One subscriber: ``concurrency`` consumer tasks pulling from its group's queue."""

    def __init__(self, bus: InMemoryBus, group: _Group, handler: Handler, concurrency: int) -> None:
        self._bus = bus
        self._group = group
        self._handler = handler
        self._closing = False
        # Workers currently inside a handler; the others sit in queue.get() and can be
        # cancelled at once without losing anything (asyncio.Queue keeps the item).
        self._busy: set[asyncio.Task[Any]] = set()
        self._workers = [
            asyncio.create_task(self._consume(), name=f"bus-consumer:{group.name}:{i}") for i in range(concurrency)
        ]

    async def close(self) -> None:
        """Stop taking deliveries; wait (up to the bus's ``close_timeout``) for
        in-flight handlers, then cancel the stragglers, whose events go back to the
        group's queue."""
        await self._stop(grace=self._bus.close_timeout)

    async def _stop(self, *, grace: float) -> None:
        self._closing = True
        group = self._group
        group.members.discard(self)
        if not group.members:
            group.progress.set()  # a bus close waiting on this group's members can move on
        await stop_workers(self._workers, busy=self._busy.__contains__, grace=grace, group=group.name, logger=logger)

    async def _consume(self) -> None:
        # The hot path: keep it to local lookups and integer arithmetic.
        group = self._group
        queue = group.queue
        handler = self._handler
        bus = self._bus
        stats = bus._stats
        busy = self._busy
        me = asyncio.current_task()
        assert me is not None
        while not self._closing:
            delivery = await queue.get()
            busy.add(me)
            delivery.deliveries += 1
            group.in_flight += 1
            stats.delivered += 1
            event: Event | None = None
            try:
                event = parse_event(delivery.raw)
                await handler(event)
            except asyncio.CancelledError:
                # Cancelled mid-handler (close timed out): not acked, so back to the group.
                queue.put_nowait(delivery)
                raise
            except Exception as exc:
                bus._nack(group, delivery, event, exc)
            else:
                stats.acked += 1
                group.settle()
            finally:
                group.in_flight -= 1
                busy.discard(me)


class InMemoryBus(BusBackend):
    """An :class:`~agent_coordinator.bus.base.EventBus` in the memory of one event loop.

    * ``max_deliveries`` -- deliveries of one event to one group before it is
      dead-lettered (>= 1; 1 means never redeliver).
    * ``redelivery_delay`` -- seconds before the first redelivery of a failed event;
      the n-th redelivery waits ``redelivery_delay * 2**(n-1)``. 0 redelivers at once
      (to the back of the group's queue).
    * ``duplicate_delivery`` -- a test switch: every event is delivered twice to every
      group, to prove handlers are idempotent.
    * ``reorder`` -- a test switch: each event is held for up to ``reorder`` seconds
      before it is queued to a group, the hold a fixed function of (type, group).
      Events of one type keep their order within a group (as on a broker that orders
      per subject: NATS's per-subject consumers) while events of different types
      overtake each other, and one group may see an event long after another group
      reacted to it -- to prove nothing depends on arrival order. ``reorder_seed``
      picks another fixed set of holds.
    * ``close_timeout`` -- how long :meth:`close` (and a subscription's close) waits
      for handlers before cancelling them.

    Publishing never blocks (queues are unbounded). :meth:`wait_idle` is the test
    helper that waits until everything published has been handled.

    :meth:`close` waits up to ``close_timeout`` for every group that has members to
    handle everything already accepted (so a close right after a burst of publishes
    loses nothing), then cancels the members; handlers still running are cancelled
    and their events nacked. Whatever is still unhandled then -- events of groups
    without members, or left by the timeout -- is moved to :meth:`dead_letters` with
    the error ``"BusClosed: ..."``, so nothing accepted silently disappears.
    Publishes are refused from the start of close, including those of handlers
    draining the queue (they raise ``BusClosed``, so their events are redelivered and
    end up dead-lettered): let a workflow finish (``wait_idle``) before closing. Do not
    close it from a handler (close would wait for that handler until the timeout).
    """

    _kind: ClassVar[str] = "in-memory"
    _logger: ClassVar[logging.Logger] = logger

    def __init__(
        self,
        *,
        max_deliveries: int = 5,
        redelivery_delay: float = 0.0,
        duplicate_delivery: bool = False,
        reorder: float = 0.0,
        reorder_seed: int = 0,
        close_timeout: float = 10.0,
    ) -> None:
        check_delivery_options(
            max_deliveries=max_deliveries, redelivery_delay=redelivery_delay, close_timeout=close_timeout
        )
        self.max_deliveries = max_deliveries
        self.redelivery_delay = redelivery_delay
        if reorder < 0:
            raise ValueError(f"reorder must be >= 0 seconds (got {reorder})")
        self.duplicate_delivery = duplicate_delivery
        self.reorder = reorder
        self.reorder_seed = reorder_seed
        self.close_timeout = close_timeout
        self._groups: dict[str, _Group] = {}
        self._routes: dict[str, list[_Group]] = {}  # event type -> groups bound to it
        self._dead: list[DeadLetter] = []
        self._progress = asyncio.Event()
        super().__init__()

    # -- the EventBus protocol -------------------------------------------------------

    async def _publish(self, event: Event) -> None:
        # Accepted once enqueued to every bound group.
        groups = self._routes.get(event.type)
        if groups:
            raw = event_json(event)
            copies = 2 if self.duplicate_delivery else 1
            for group in groups:
                for _ in range(copies):
                    if self.reorder:
                        group.hold(_Delivery(raw), self._hold(event.type, group.name))
                    else:
                        group.enqueue(_Delivery(raw))

    async def _join(self, group: str, wanted: set[str], handler: Handler, concurrency: int) -> Subscription:
        target = self._groups.get(group)
        if target is None:
            target = self._groups[group] = _Group(group, self._progress)
        for type_ in wanted - target.types:
            self._routes.setdefault(type_, []).append(target)
            target.types.add(type_)
        member = _GroupMember(self, target, handler, concurrency)
        target.members.add(member)
        return member

    async def _shut_down(self) -> None:
        # Drain what groups with members can handle, then stop them (see the class docstring).
        try:
            async with asyncio.timeout(self.close_timeout):
                await self._until_settled(lambda g: bool(g.members) and g.unsettled > 0)
        except TimeoutError:
            logger.warning(
                "bus close timed out after %ss; cancelling handlers: %s",
                self.close_timeout,
                "; ".join(g.describe() for g in self._groups.values() if g.unsettled),
            )
        members = [m for g in self._groups.values() for m in g.members]
        await asyncio.gather(*(m._stop(grace=0) for m in members))
        self._dead_letter_unhandled()

    async def dead_letters(self) -> list[DeadLetter]:
        """The dead-lettered events, oldest first (a copy)."""
        return list(self._dead)

    async def _replay(self, group: str | None) -> int:
        # Re-enqueued with a fresh delivery count.
        replay = [d for d in self._dead if (group is None or d.group == group) and not d.malformed]
        self._dead = [d for d in self._dead if d not in replay]
        for dead in replay:
            self._groups[dead.group].enqueue(_Delivery(dead.event.to_json()))
        return len(replay)

    # -- wait_idle, event-driven (no polling) ----------------------------------------

    async def _until_idle(self) -> None:
        await self._until_settled(lambda g: g.unsettled > 0)

    def _work_left(self) -> str:
        return "; ".join(g.describe() for g in self._groups.values() if g.unsettled)

    # -- internals -------------------------------------------------------------------

    def _hold(self, event_type: str, group: str) -> float:
        """How long ``group``'s copies of ``event_type`` events are held (``reorder``)."""
        digest = hashlib.blake2b(f"{self.reorder_seed}|{group}|{event_type}".encode(), digest_size=8).digest()
        return self.reorder * int.from_bytes(digest, "big") / 2**64

    async def _until_settled(self, has_work: Callable[[_Group], bool]) -> None:
        while True:
            # Clear before checking: a group settling after the check sets it again.
            self._progress.clear()
            if not any(has_work(g) for g in self._groups.values()):
                return
            await self._progress.wait()

    def _nack(self, group: _Group, delivery: _Delivery, event: Event | None, exc: Exception) -> None:
        """A handler raised: redeliver after backoff, or dead-letter once out of
        deliveries -- at once when the event itself is at fault (MalformedEvent)."""
        event_id = event.id if event is not None else "?"
        if self._dead_letter_now(exc, event_id=event_id, group=group.name, deliveries=delivery.deliveries):
            self._dead_letter(group, delivery, event, f"{type(exc).__name__}: {exc}")
            return
        self._stats.redelivered += 1
        delay = self.redelivery_delay * 2 ** (delivery.deliveries - 1)
        if delay > 0:
            loop = asyncio.get_running_loop()
            group.redeliveries[delivery] = loop.call_later(delay, group.release, delivery)
        else:
            group.queue.put_nowait(delivery)

    def _dead_letter(self, group: _Group, delivery: _Delivery, event: Event | None, error: str) -> None:
        if event is None:
            try:
                event = parse_event(delivery.raw)
            except MalformedEvent:
                # Only bytes this bus produced itself are queued, so hardly possible; still
                # listed like a broker's malformed dead letter rather than dropped.
                dead = DeadLetter.of_malformed_body(
                    delivery.raw.encode(),
                    group=group.name,
                    error=error,
                    deliveries=delivery.deliveries,
                    source="bus/memory",
                )
                self._dead.append(dead)
                self._stats.dead_lettered += 1
                group.settle()
                return
        self._dead.append(DeadLetter(event=event, group=group.name, error=error, deliveries=delivery.deliveries))
        self._stats.dead_lettered += 1
        group.settle()

    def _dead_letter_unhandled(self) -> None:
        left = 0
        for group in self._groups.values():
            for delivery, timer in list(group.redeliveries.items()):
                timer.cancel()
                del group.redeliveries[delivery]
                self._dead_letter(group, delivery, None, _CLOSED_BEFORE_HANDLED)
                left += 1
            while not group.queue.empty():
                self._dead_letter(group, group.queue.get_nowait(), None, _CLOSED_BEFORE_HANDLED)
                left += 1
        if left:
            logger.warning("bus closed with %d unhandled deliveries; they are in dead_letters()", left)
