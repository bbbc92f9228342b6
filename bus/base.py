"""The event bus seam: publish events, subscribe consumer groups to event types.

Everything the choreography coordinator needs from a message broker is the two
protocols below, :class:`EventBus` and :class:`Subscription`. Backends (the
in-memory bus beside this module, RabbitMQ and NATS JetStream) implement them and must
pass the contract suite in ``tests/contract`` -- it is the executable form of the
contract written here.

The contract, in one place
--------------------------

Routing
    A *group* is a named, durable queue; a group is *bound* to event types. Every
    published event is delivered to every group bound to its ``type`` (fan-out across
    groups). Within a group, members *compete*: each event is handled by one member.
    A group's bindings are the union of the types its members subscribed with, and
    they exist from the first subscribe that named them on; they are never removed
    (closing the last member leaves the queue in place, still collecting events).
    Events published before a group was bound to their type are *not* delivered to
    it -- as with a broker queue that did not exist yet. Start subscribers first.

    Since members share the group's queue, a member may be handed any type its group
    is bound to, not just the types it named: give all members of a group the same
    types.

Delivery and ack (at-least-once)
    A handler that returns *acks* the event: it is settled and never delivered to
    that group again. A handler that raises *nacks* it: the event is redelivered to
    the group (to any member, after a backoff) until it has been delivered
    ``max_deliveries`` times in total; then it is *dead-lettered* with the last error
    and no longer delivered. A handler that raises
    :class:`~agent_coordinator.core.errors.MalformedEvent` (or a subclass, such as
    :class:`~agent_coordinator.core.errors.UntrustedEvent`) says the event itself is at fault
    and can never succeed: it is dead-lettered at once with that error, without
    redeliveries. A body that is not an event at all is dead-lettered at once too,
    and listed as a :class:`DeadLetter` whose ``body`` holds it (see
    :data:`MALFORMED_MESSAGE_TYPE`). :meth:`EventBus.replay_dead_letters` puts dead
    letters back into their group's queue with a fresh delivery count (malformed
    bodies excepted: they would only fail again).

    Delivery is at-least-once, never exactly-once: a redelivery, a member closed
    mid-handler or a broker reconnect can hand the same event to a group twice.
    **Handlers must be idempotent** -- deduplicate on ``event.id`` (ids are
    deterministic, see :mod:`agent_coordinator.core.events`), or make the effect idempotent.

    Each delivery hands the handler a freshly parsed :class:`Event`: events cross the
    bus as JSON, so a handler never shares an object with the publisher or with
    another group.

Ordering
    A group with a single member subscribed with ``concurrency=1`` receives events
    in publish order (FIFO per group) on first delivery. A redelivered event may
    arrive after events published later. With several members or ``concurrency > 1``
    there is no ordering guarantee.

Concurrency
    ``concurrency`` is the number of handler calls one member may have running at
    once (its prefetch). Handlers run on the event loop of the caller of
    ``subscribe``; a handler that blocks the loop blocks the bus.

Close
    :meth:`Subscription.close` stops the member taking deliveries and lets its
    in-flight handlers finish; events it had not taken stay in the group's queue for
    the other members or a future one. :meth:`EventBus.close` stops accepting
    publishes and subscribes, lets handlers finish (bounded by a timeout) and
    cancels the members. Nothing ``publish`` accepted is lost by either close: it is
    handled, or it is still in the broker (or, for a bus without a broker behind it,
    in :meth:`EventBus.dead_letters`).

Errors
    Every failure is a :class:`~agent_coordinator.core.errors.BusError`; backend exceptions are
    translated at the seam. :class:`~agent_coordinator.core.errors.BusClosed` is raised by
    publish, subscribe and replay after close.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

from agent_coordinator.core.errors import BusClosed
from agent_coordinator.core.events import Event

__all__ = [
    "MALFORMED_MESSAGE_TYPE",
    "BusStats",
    "ClosesOnExit",
    "DeadLetter",
    "EventBus",
    "Handler",
    "Subscription",
    "subscription_types",
]

Handler = Callable[[Event], Awaitable[None]]
"""An event handler: returns to ack, raises to nack (the event is redelivered)."""


MALFORMED_MESSAGE_TYPE: Final = "bus.MalformedMessage"
"""The ``type`` of the stand-in event a :class:`DeadLetter` carries when the body
that was dead-lettered is not a valid event (a foreign producer, a corrupted
message): its ``data`` holds ``body`` (the start of the body, decoded leniently),
``body_bytes`` and ``sha256_16`` (the first 16 hex digits of the body's SHA-256)."""

_MALFORMED_BODY_SHOWN: Final = 2000  # characters of a malformed body kept in its stand-in event
_NO_TRACE: Final = "00-00000000000000000000000000000000-0000000000000000-00"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a group gave up on.

    ``error`` is the last failure as ``"ExceptionType: message"`` -- the reason, e.g.
    ``"MalformedEvent: not a valid event envelope: ..."`` or ``"UntrustedEvent: ..."``;
    ``deliveries`` is how many times the event had been handed to the group's
    handlers.

    ``body`` is None for an event. For a dead-lettered body that is not a valid
    event it holds the raw bytes, and ``event`` is a stand-in of type
    :data:`MALFORMED_MESSAGE_TYPE` describing them (see :meth:`of_malformed_body`),
    so every dead letter can be listed the same way; such letters are never replayed.
    """

    event: Event
    group: str
    error: str
    deliveries: int
    body: bytes | None = None

    @property
    def malformed(self) -> bool:
        """True when the dead-lettered body is not a valid event (``body`` holds it)."""
        return self.body is not None

    @classmethod
    def of_malformed_body(
        cls,
        body: bytes,
        *,
        group: str,
        error: str,
        deliveries: int,
        source: str,
        message_id: str | None = None,
        time: datetime | None = None,
    ) -> DeadLetter:
        """The dead letter of ``body``, which is not a valid event: its ``event`` is a
        stand-in of type :data:`MALFORMED_MESSAGE_TYPE` from ``source`` (the bus, e.g.
        ``"bus/nats"``), with the broker's ``message_id`` when it had one (else
        ``malformed-<sha256_16>``) and the time it was dead-lettered."""
        digest = hashlib.sha256(body).hexdigest()[:16]
        stand_in = Event(
            id=message_id or f"malformed-{digest}",
            source=source,
            type=MALFORMED_MESSAGE_TYPE,
            subject=group or "?",
            time=time or datetime.now(UTC),
            data={
                "body": body.decode(errors="replace")[:_MALFORMED_BODY_SHOWN],
                "body_bytes": len(body),
                "sha256_16": digest,
            },
            traceparent=_NO_TRACE,
        )
        return cls(event=stand_in, group=group, error=error, deliveries=deliveries, body=body)


@dataclass(slots=True)
class BusStats:
    """Counters since the bus was opened ("messages on the bus", for benchmarks).

    * ``published`` -- events :meth:`EventBus.publish` accepted (once per publish,
      however many groups they were routed to);
    * ``delivered`` -- handler calls, across all groups, counting redeliveries;
    * ``acked`` -- deliveries whose handler returned;
    * ``redelivered`` -- deliveries put back in a queue after the handler raised;
    * ``dead_lettered`` -- events given up on (see :class:`DeadLetter`).
    """

    published: int = 0
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0
    dead_lettered: int = 0


@runtime_checkable
class Subscription(Protocol):
    """One member of a consumer group, as returned by :meth:`EventBus.subscribe`."""

    async def close(self) -> None:
        """Stop taking deliveries and return once this member's in-flight handlers
        have finished (a backend may bound the wait and cancel them, which nacks
        their events).

        Events this member had not taken -- and the ones it was handling if they
        were cancelled or failed -- stay in the group's queue for the other members
        or a future one: nothing is lost. Closing twice is a no-op.
        """
        ...


@runtime_checkable
class EventBus(Protocol):
    """Publishes events and delivers them to consumer groups.

    See the module docstring for the full contract (routing, at-least-once delivery,
    dead letters, ordering, concurrency, close).
    """

    async def publish(self, event: Event) -> None:
        """Route ``event`` to every group bound to ``event.type``.

        Returns once the bus has durably accepted the event (for the in-memory bus:
        enqueued to every bound group; for a broker: confirmed by it). From then on
        the event will be delivered at least once to each of those groups (or
        dead-lettered), whatever happens to the publisher. An event of a type no
        group is bound to is accepted and dropped.

        Raises :class:`~agent_coordinator.core.errors.BusClosed` after :meth:`close`, and
        :class:`~agent_coordinator.core.errors.BusError` when the event was not accepted (it
        may be retried: handlers are idempotent).
        """
        ...

    async def subscribe(
        self,
        group: str,
        types: Collection[str],
        handler: Handler,
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Join consumer ``group`` as a new member handling ``types`` with ``handler``.

        Binds the group to ``types`` (adding to its existing bindings) before
        returning, so every event of those types published after this call returns
        reaches the group. Members of one group compete for its events; separate
        groups each get every event they are bound to. ``concurrency`` (>= 1) is how
        many ``handler`` calls this member may run at once; ``1`` keeps FIFO order.

        Raises :class:`~agent_coordinator.core.errors.BusClosed` after :meth:`close`,
        ``ValueError`` for an empty group name, no types or ``concurrency < 1``, and
        ``TypeError`` when ``types`` is a single string.
        """
        ...

    async def close(self) -> None:
        """Stop accepting publishes and subscribes, let handlers finish, stop members.

        Handlers still running after the backend's close timeout are cancelled (their
        events are nacked, not lost). Closing twice is a no-op; the second call waits
        for the first to finish.
        """
        ...

    async def dead_letters(self) -> list[DeadLetter]:
        """The events currently dead-lettered, oldest first (a copy).

        Async because a broker backend reads them from the broker (a dead-letter
        queue or subject) without consuming them.
        """
        ...

    async def replay_dead_letters(self, group: str | None = None) -> int:
        """Put the dead letters of ``group`` (all groups when None) back into their
        group's queue with a fresh delivery count; return how many were replayed.

        Raises :class:`~agent_coordinator.core.errors.BusClosed` after :meth:`close`.
        """
        ...

    def stats(self) -> BusStats:
        """A snapshot of this bus's counters (a copy; later traffic does not change it)."""
        ...

    # A timeout parameter (not asyncio.timeout around the call) so the error can name what is busy.
    async def wait_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once the bus is *idle*: every event published so far has been handled
        to the end -- acked or dead-lettered -- by every group bound to its type, and
        no handler runs. For tests, benchmarks and the lab, which must know that a
        workflow's choreography has finished before they look at its effects.

        What the bus can see differs by backend, so "idle" means, precisely:

        * in-memory -- every group's queue is empty, no handler is running and no
          redelivery (or ``reorder`` hold) is pending. Event-driven and exact: the bus
          sees every group there is.
        * RabbitMQ -- every delivery *this bus object* put into the groups it
          subscribed (by publishing, redelivering or replaying) has been acked or
          dead-lettered, none of its handlers is running, and those groups' queues and
          delay queues hold no ready message on the broker (polled every 10 ms).
          Groups that only other processes subscribed are not watched.
        * NATS JetStream -- no member of this bus holds a message, and every consumer
          this bus bound has nothing pending, unacked or awaiting redelivery (consumer
          info polled every 20 ms) -- which includes work waiting for other
          processes' members of those groups.

        Idleness is a moment, not a state: a handler of another process may publish
        right after. Raises ``TimeoutError`` after ``timeout`` seconds, naming the
        groups (or consumers) with work left -- e.g. a group whose members all
        closed, so its queue never drains; a broker backend raises
        :class:`~agent_coordinator.core.errors.BusError` when it cannot ask the broker.
        """
        ...


class ClosesOnExit:
    """Mixin for backends: ``async with bus:`` closes the bus on leaving the block."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def subscription_types(group: str, types: Collection[str], concurrency: int, *, closed: bool) -> set[str]:
    """Check ``subscribe``'s arguments as the contract states and return the types
    as a set: BusClosed after close, TypeError for a single string, ValueError for an
    empty group, no types, an empty or non-string type, or ``concurrency < 1``."""
    if closed:
        raise BusClosed(f"cannot subscribe group {group!r}: the bus is closed")
    if isinstance(types, str):
        raise TypeError(f"types must be a collection of event type names, not the string {types!r}: pass [{types!r}]")
    wanted = set(types)
    if not group:
        raise ValueError("group must be a non-empty name")
    if not wanted:
        raise ValueError(f"subscribe group {group!r} to at least one event type")
    if not all(isinstance(t, str) and t for t in wanted):
        raise ValueError(f"event types must be non-empty strings (got {sorted(map(repr, wanted))})")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1 (got {concurrency}) for group {group!r}")
    return wanted
