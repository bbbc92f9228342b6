"""The RabbitMQ event bus: the :mod:`agent_coordinator.bus.base` contract on durable quorum queues.

Needs aio-pika (``pip install 'agent-coordinator[rabbitmq]'``) and RabbitMQ 3.10 or
later without plugins (quorum queues with message TTL and at-least-once
dead-lettering arrived in 3.10). Open it with ``open_bus("amqp://user:pass@host/vhost")``
or :meth:`RabbitMQBus.from_url`; it connects on first use.

Topology (all durable; ``P`` is ``queue_prefix``, ``X`` the exchange name)
---------------------------------------------------------------------------

``X``
    A topic exchange; every event is published to it with ``routing key = event.type``.
    Event types are bound literally, so they may not contain the topic wildcards
    ``*`` and ``#``.
``P<group>``
    One **quorum** queue per consumer group, bound to ``X`` with each type the group
    subscribed to. Members of the group consume from it (competing consumers).
``P<group>.retry.<ms>ms``
    Delay queues, created on a group's first failure at each backoff step: a failed
    delivery is republished here, waits ``<ms>`` (the queue's message TTL) and is
    dead-lettered by the broker back into ``P<group>`` -- no delayed-message plugin
    needed, and no head-of-line blocking, since every message in one queue has the
    same TTL. The delay is in the name, so buses configured with different
    ``redelivery_delay`` never disagree about a queue's arguments.
``Pdead-letters``
    One classic queue holding every group's dead letters, the group and last error in
    headers (``x-group``, ``x-error``, ``x-deliveries``). Classic, because
    :meth:`RabbitMQBus.dead_letters` reads it by taking and requeueing every message
    -- a classic queue puts requeued messages back in place, and keeps no delivery
    limit that such peeks could exhaust. ``dead-letters`` is therefore not a valid
    group name.

Messages are CloudEvents in the AMQP binding's *structured* content mode: the body
is ``event.to_json()`` (the JSON event format, every attribute and the data) and
``content_type = application/cloudevents+json``. They are persistent (delivery mode
2) with ``message_id = event.id``, ``type = event.type``, ``timestamp = event.time``
and the event's ``traceparent`` also as a header (so tracing middleware need not
parse bodies). Why structured and not binary: docs/architecture.md ("Broker
backends"). Bodies published before (``application/json``, ``causation_id``) are
still read.

Delivery, redelivery and dead letters
-------------------------------------

A member's channel has ``prefetch = concurrency`` (or ``prefetch`` when set), and
a delivery is acked only after the handler returned. When the handler raises, the
event is republished to the group's delay queue for its attempt (``redelivery_delay
* 2**(n-1)`` seconds after the n-th failure; 0 republishes straight to the back of
the group's queue) with the header ``x-deliveries`` = failed deliveries so far, and
the original is acked once the broker confirmed the copy. After ``max_deliveries``
failed deliveries the event is published to the dead-letter queue instead. If the
broker cannot take the copy (connection lost), the original is requeued untouched:
nothing is lost, the failure just is not counted.

A body that is not a valid event (a foreign producer, a corrupted message) is
dead-lettered at once with the parse error, and the consumer keeps going; so is an
event whose handler raised :class:`~agent_coordinator.core.errors.MalformedEvent` (an event
that can never succeed: data its type requires is missing, or its signature does not
check out), with that error, at its first failure.
:meth:`~RabbitMQBus.dead_letters` shows a malformed body as a
:class:`~agent_coordinator.bus.base.DeadLetter` whose ``body`` holds it and whose stand-in event is of
type :data:`~agent_coordinator.bus.base.MALFORMED_MESSAGE_TYPE`; replay skips it (it would only fail
again) -- inspect and purge it with broker tools.

``x-deliveries`` counts handler calls that *raised*. A handler cancelled by a
close timeout, or a consumer that dies mid-handler, leaves the message unacked; the
broker requeues it (RabbitMQ 3.x puts it at the back of a quorum queue) without our
count changing. As a
backstop against a message that crashes every consumer, group queues carry an
explicit ``x-delivery-limit`` of 20 such broker-level returns (the RabbitMQ 4.x
default, stated so 3.x behaves the same) and dead-letter past it into the same
dead-letter queue, where :meth:`~RabbitMQBus.dead_letters` reports it with the
error ``DeliveryLimitExceeded``. Handler failures never count towards that limit:
each redelivery is a new message.

Publishing and unroutable events
--------------------------------

:meth:`~RabbitMQBus.publish` returns once the broker confirmed the message
(publisher confirms) and publishes it ``mandatory``, so an unroutable message comes
back instead of vanishing. The contract says an event of a type *no group is bound
to* is accepted and dropped -- that is how choreography works (nobody may listen to
``ShipmentScheduled`` yet), so a return is logged at debug level and the publish
succeeds. It is an error -- :class:`~agent_coordinator.core.errors.BusError`, the
publish was *not* accepted -- when this bus itself has subscribed a group to the
type: the group's queue or binding was deleted on the broker behind our back, and
dropping the event would be a silent loss. A bus cannot know about groups that
only other processes subscribed; start subscribers before publishers (the contract
says so) and an unroutable publish means nobody wanted the event.

Long handlers
-------------

RabbitMQ closes a channel whose delivery stays unacked longer than its
``consumer_timeout`` (30 minutes by default); the robust connection reopens it and
the event is redelivered, so a handler that waits longer on a model call is run
twice. Raise ``consumer_timeout`` in ``rabbitmq.conf`` for such workloads.

Reconnection
------------

The connection is an ``aio_pika.connect_robust`` one: when the broker goes away,
members' channels, queues, bindings, prefetch and consumers are restored once it is
back, and they continue; messages that were unacked at the time are redelivered.
aio-pika's URL options apply, e.g. ``?reconnect_interval=1`` (default 5 seconds).
So do this bus's own options (see :meth:`RabbitMQBus.from_url`), e.g.
``?exchange=shop&queue_prefix=shop.``, which is how ``coordinator worker --bus URL``
gives a deployment (or a test) names of its own.
A publish made while it is down waits up to 10 s for the connection to come back
(nothing was sent, so waiting cannot duplicate), then raises
:class:`~agent_coordinator.core.errors.BusError`; it may be retried (handlers are idempotent).
Every exchange with the broker is bounded (30 s: aio-pika itself would wait forever
on a reconnecting connection, and a broker under a memory or disk alarm blocks
publishers), and every broker error is translated into ``BusError`` naming the
broker host (never the password) and what to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq
import pamqp.exceptions
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    ConsumerTag,
    DeliveryMode,
    HeadersType,
)
from pamqp.commands import Basic

from agent_coordinator.bus.base import (
    MALFORMED_MESSAGE_TYPE,
    BusStats,
    ClosesOnExit,
    DeadLetter,
    Handler,
    Subscription,
    subscription_types,
)
from agent_coordinator.core.errors import BusClosed, BusError, MalformedEvent
from agent_coordinator.core.events import CLOUDEVENTS_CONTENT_TYPE, Event, parse_event

# MALFORMED_MESSAGE_TYPE is bus.base's, shared by every backend; still importable from here.
__all__ = ["MALFORMED_MESSAGE_TYPE", "RabbitMQBus"]

logger = logging.getLogger(__name__)

# Headers this bus writes.
_DELIVERIES: Final = "x-deliveries"  # failed handler calls so far
_GROUP: Final = "x-group"  # dead letters: the group that gave up
_ERROR: Final = "x-error"  # dead letters: the last error, "Type: message"
_TRACEPARENT: Final = "traceparent"
# Headers the broker adds when it dead-letters or requeues; dropped from our copies so
# a message that went round the retry loop does not accumulate history.
_BROKER_HEADERS: Final = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)

_DROPPED_ON_COPY: Final = _BROKER_HEADERS | {_GROUP, _ERROR}

_DEAD_LETTER_QUEUE: Final = "dead-letters"
_BROKER_DELIVERY_LIMIT: Final = 20
_CONNECT_TIMEOUT: Final = 10.0
_OPERATION_TIMEOUT: Final = 30.0  # any single exchange with the broker (see _broker_errors)
_CLEANUP_TIMEOUT: Final = 5.0  # best-effort cancels and closes on the way out
_IDLE_POLL: Final = 0.01  # seconds between broker queue-depth checks in wait_idle


class _Group:
    """What this bus knows about one consumer group.

    ``unsettled`` counts the deliveries this bus put into the group (by publishing,
    redelivering or replaying) and has not yet seen acked or dead-lettered; it is what
    :meth:`RabbitMQBus.wait_idle` waits on, because the broker's queue depth does not
    show a message that is on the wire or between a delay queue and the group's queue.
    """

    __slots__ = ("in_flight", "members", "name", "queue", "retry_queues", "types", "unsettled")

    def __init__(self, name: str, queue: str) -> None:
        self.name = name
        self.queue = queue
        self.types: set[str] = set()
        self.members: set[_Member] = set()
        self.retry_queues: set[str] = set()
        self.unsettled = 0
        self.in_flight = 0

    def describe(self) -> str:
        return (
            f"group {self.name!r} (queue {self.queue!r}): {self.unsettled} unsettled,"
            f" {self.in_flight} in flight, {len(self.members)} member(s) here"
        )


class _Member:
    """One subscriber: a channel of its own (so its prefetch is its own), a consumer on
    the group's queue, and ``concurrency`` worker tasks taking deliveries in order from a
    local buffer -- which keeps FIFO for one worker and lets close stop them cleanly."""

    def __init__(self, bus: RabbitMQBus, group: _Group, handler: Handler, concurrency: int) -> None:
        self._bus = bus
        self._group = group
        self._handler = handler
        self._concurrency = concurrency
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: ConsumerTag | None = None
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._busy: set[asyncio.Task[None]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        self._closed = asyncio.Event()

    def adopt(self, channel: AbstractRobustChannel) -> None:
        """Take ownership of ``channel``: closing the member closes it."""
        self._channel = channel

    async def start(self, queue: AbstractQueue) -> None:
        self._queue = queue
        self._workers = [
            asyncio.create_task(self._work(), name=f"rabbitmq-consumer:{self._group.name}:{i}")
            for i in range(self._concurrency)
        ]
        self._consumer_tag = await queue.consume(self._on_message)

    async def close(self) -> None:
        """Cancel this consumer, let in-flight handlers finish (up to the bus's
        ``close_timeout``, then cancel them -- their events are requeued), requeue what
        was prefetched but not started, and close the member's channel."""
        await self._stop(grace=self._bus.close_timeout)

    async def _stop(self, *, grace: float) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._group.members.discard(self)
        try:
            if self._queue is not None and self._consumer_tag is not None:
                # Best effort: on a dead connection there is no consumer left to cancel.
                async with _best_effort():
                    await self._queue.cancel(self._consumer_tag)
            current = asyncio.current_task()
            workers = [w for w in self._workers if w is not current]  # a handler closing its own member
            for worker in workers:
                if worker not in self._busy:
                    worker.cancel()
            if workers:
                _, late = await asyncio.wait(workers, timeout=grace) if grace > 0 else (set(), set(workers))
                for worker in late:
                    worker.cancel()
                if late:
                    await asyncio.wait(late)
                for worker in workers:
                    if not worker.cancelled() and (exc := worker.exception()) is not None:
                        logger.error("consumer task of group %r died", self._group.name, exc_info=exc)
            while not self._buffer.empty():
                self._group.in_flight -= 1
                await _requeue(self._buffer.get_nowait())
            if current in self._workers:
                # Closing the channel now would requeue the calling handler's delivery
                # under it; close it once that handler has settled.
                self._bus._after(current, self._close_channel)
            else:
                await self._close_channel()
        finally:
            self._closed.set()

    async def _close_channel(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            # Closing a channel makes the broker requeue anything still unacked on it.
            async with _best_effort():
                await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Runs in delivery order up to here (aio-pika starts one task per delivery), so
        # the buffer keeps the queue's order.
        if self._closing:
            await _requeue(message)  # arrived between close and the broker's Cancel-Ok
            return
        self._group.in_flight += 1
        self._buffer.put_nowait(message)

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self._closing:
            message = await self._buffer.get()
            if self._closing:
                self._buffer.put_nowait(message)  # requeued by _stop
                return
            self._busy.add(me)
            try:
                await self._bus._deliver(self._group, self._handler, message)
            finally:
                self._group.in_flight -= 1
                self._busy.discard(me)


class RabbitMQBus(ClosesOnExit):
    """An :class:`~agent_coordinator.bus.base.EventBus` on a RabbitMQ broker (see the module docstring
    for the topology, redelivery, dead letters and the unroutable-publish rule).

    * ``url`` -- ``amqp://user:password@host:port/vhost`` (``amqps://`` for TLS);
    * ``exchange`` -- the topic exchange events are published to;
    * ``max_deliveries`` -- failed deliveries of one event to one group before it is
      dead-lettered (>= 1; 1 means never redeliver);
    * ``redelivery_delay`` -- seconds before the first redelivery; the n-th waits
      ``redelivery_delay * 2**(n-1)`` (whole milliseconds; 0 redelivers at once, to
      the back of the group's queue);
    * ``prefetch`` -- unacked deliveries a member may hold; default: its
      ``concurrency``. A larger value keeps the next events on the wire (throughput)
      at the cost of fairness between members; a smaller one caps concurrency;
    * ``close_timeout`` -- how long :meth:`close` and a subscription's close wait for
      in-flight handlers before cancelling them (their events are requeued);
    * ``queue_prefix`` -- prepended to every queue name (group, delay and dead-letter
      queues), to keep several deployments or test runs apart on one vhost;
    * ``duplicate_delivery`` -- a test switch: every event is published twice, so
      every group gets it twice, to prove handlers are idempotent.

    :meth:`close` leaves unhandled events in the broker (durable queues): they are
    handled by the group's next member, in this process or another.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "agent-coordinator",
        max_deliveries: int = 5,
        redelivery_delay: float = 0.5,
        prefetch: int | None = None,
        close_timeout: float = 10.0,
        queue_prefix: str = "",
        duplicate_delivery: bool = False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("amqp", "amqps"):
            raise ValueError(
                f"a RabbitMQ bus URL starts with amqp:// or amqps:// (got {parts.scheme or 'no scheme'}://...),"
                " e.g. amqp://guest:guest@127.0.0.1:5672/"
            )
        if not exchange:
            raise ValueError("exchange must be a non-empty name (the default exchange cannot route by type)")
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1 (got {max_deliveries})")
        if redelivery_delay < 0:
            raise ValueError(f"redelivery_delay must be >= 0 seconds (got {redelivery_delay})")
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, or None to use each member's concurrency (got {prefetch})")
        if close_timeout < 0:
            raise ValueError(f"close_timeout must be >= 0 seconds (got {close_timeout})")
        self.url = url
        self.exchange = exchange
        self.max_deliveries = max_deliveries
        self.redelivery_delay = redelivery_delay
        self.prefetch = prefetch
        self.close_timeout = close_timeout
        self.queue_prefix = queue_prefix
        self.duplicate_delivery = duplicate_delivery
        # Where the broker is, for messages: never the user or password.
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self._where += f" (vhost {vhost!r})"
        self._password = unquote(parts.password) if parts.password else ""
        self._dead_letter_queue = f"{queue_prefix}{_DEAD_LETTER_QUEUE}"

        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None  # publisher confirms; publishing only
        self._topology: AbstractRobustChannel | None = None  # declarations that may fail
        self._exchange: AbstractRobustExchange | None = None
        self._inspector: AbstractRobustChannel | None = None  # wait_idle's queue-depth checks
        self._connect_lock = asyncio.Lock()
        self._dead_letter_lock = asyncio.Lock()
        self._groups: dict[str, _Group] = {}
        self._routes: dict[str, list[_Group]] = {}  # event type -> groups this bus bound to it
        self._declared: set[str] = set()  # queue names this bus declared
        self._background: set[asyncio.Task[None]] = set()
        self._progress = asyncio.Event()
        self._stats = BusStats()
        self._closed = False
        self._close_finished = asyncio.Event()

    @classmethod
    def from_url(cls, url: str, *, namespace: str | None = None, **options: Any) -> RabbitMQBus:
        """The bus for ``url``: the factory :func:`agent_coordinator.bus.open_bus` calls.

        ``namespace`` (one application's name, :func:`agent_coordinator.bus.bus_namespace`) sets the
        default names: exchange ``<namespace>`` and queues ``<namespace>.<group>``
        (dead letters in ``<namespace>.dead-letters``), so that two applications on
        one vhost share nothing. Without it the constructor's defaults apply.

        The URL's query may set this bus's options, so that a command line (``coordinator
        worker --bus URL``) can give each deployment or test its own names::

            amqp://guest:guest@127.0.0.1:5672/?exchange=shop&queue_prefix=shop.&max_deliveries=8

        Recognised: ``exchange``, ``queue_prefix``, ``max_deliveries``,
        ``redelivery_delay``, ``prefetch``, ``close_timeout``. They are removed from
        the URL; the other query parameters stay for aio-pika (``heartbeat``,
        ``reconnect_interval``, ...). Keyword ``options`` win over the URL's, and both
        over the namespace's names. Raises :class:`BusError` for a value of the wrong
        type or out of range.
        """
        url, from_query = _bus_options_from_query(url)
        named = {"exchange": namespace, "queue_prefix": f"{namespace}."} if namespace else {}
        try:
            return cls(url, **{**named, **from_query, **options})
        except ValueError as exc:
            raise BusError(f"invalid RabbitMQ bus option: {exc}") from exc

    # -- the EventBus protocol -------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Publish ``event`` to the exchange and wait for the broker's confirm (see
        :meth:`agent_coordinator.bus.base.EventBus.publish` and, for unroutable events, the module
        docstring). Raises :class:`BusError` when the broker did not accept it."""
        if self._closed:
            raise BusClosed(f"cannot publish {event.type} {event.id}: the bus is closed; open a new bus to publish")
        try:
            body = event.to_json().encode()
        except (TypeError, ValueError) as exc:
            raise BusError(
                f"cannot publish {event.type} {event.id}: its data is not JSON-serialisable ({exc});"
                " put only JSON types (str, int, float, bool, None, lists, dicts) in event.data"
            ) from exc
        if len(event.type.encode()) > 255:
            raise BusError(f"cannot publish {event.type[:40]}...: RabbitMQ routing keys (event types) are <= 255 bytes")
        exchange = await self._ensure_exchange()
        groups = self._routes.get(event.type, ())
        message = aio_pika.Message(
            body,
            content_type=CLOUDEVENTS_CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.type,
            timestamp=event.time,
            headers={_TRACEPARENT: event.traceparent},
        )
        for _ in range(2 if self.duplicate_delivery else 1):
            # Counted before the publish: a consumer may ack the event before the confirm arrives.
            self._add_unsettled(groups, 1)
            try:
                async with self._broker_errors(f"publish {event.type} {event.id}"):
                    result = await exchange.publish(message, routing_key=event.type, mandatory=True)
            except BaseException:
                self._add_unsettled(groups, -1)
                raise
            if not isinstance(result, Basic.Ack):  # the broker returned it: no queue is bound to the type
                self._add_unsettled(groups, -1)
                if groups:
                    raise BusError(
                        f"cannot publish {event.type} {event.id}: RabbitMQ at {self._where} routed it to no queue"
                        f" although this bus subscribed {', '.join(repr(g.name) for g in groups)} to that type --"
                        f" the group queue or its binding to exchange {self.exchange!r} was deleted on the broker;"
                        " subscribe the group again (it re-declares both), then retry the publish"
                    )
                logger.debug("no group is bound to %s: event %s accepted and dropped", event.type, event.id)
                break
        self._stats.published += 1

    async def subscribe(
        self,
        group: str,
        types: Collection[str],
        handler: Handler,
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Join ``group`` as a member handling ``types`` (see :meth:`agent_coordinator.bus.base.EventBus.subscribe`).

        Declares the group's quorum queue and binds it to each type before returning.
        Raises ``ValueError`` also for the reserved group name ``dead-letters`` and for
        types containing the topic wildcards ``*`` or ``#``.
        """
        wanted = subscription_types(group, types, concurrency, closed=self._closed)
        if group == _DEAD_LETTER_QUEUE:
            raise ValueError(f"{group!r} is reserved for the RabbitMQ bus's dead-letter queue; pick another group name")
        wildcards = sorted(t for t in wanted if "*" in t or "#" in t)
        if wildcards:
            raise ValueError(
                f"event types {wildcards} of group {group!r} contain a topic wildcard (* or #), which RabbitMQ"
                " would match as a pattern; name each type exactly"
            )
        connection = await self._ensure_connected()
        target = self._groups.get(group)
        if target is None:
            target = self._groups[group] = _Group(group, f"{self.queue_prefix}{group}")
        member = _Member(self, target, handler, concurrency)
        async with self._broker_errors(f"subscribe group {group!r}"):
            # Each member declares and binds on its own channel: the robust connection
            # re-declares, re-binds and re-consumes exactly that after a reconnect.
            channel = await connection.channel()
            member.adopt(channel)
            try:
                await channel.set_qos(prefetch_count=self.prefetch or concurrency)
                queue = await channel.declare_queue(target.queue, durable=True, arguments=self._group_queue_arguments())
                self._declared.add(target.queue)
                for type_ in sorted(wanted):
                    await queue.bind(self.exchange, routing_key=type_)
                await member.start(queue)
            except BaseException:
                await member._stop(grace=0)
                raise
        for type_ in wanted - target.types:
            self._routes.setdefault(type_, []).append(target)
            target.types.add(type_)
        target.members.add(member)
        if self._closed:  # the bus closed while we were talking to the broker
            await member._stop(grace=0)
            raise BusClosed(f"cannot subscribe group {group!r}: the bus closed meanwhile")
        return member

    async def close(self) -> None:
        """Stop publishes and subscribes, stop every member (in-flight handlers get up
        to ``close_timeout`` in total, then are cancelled and their events requeued),
        and close the connection. Queued events stay in the broker. Closing twice is a
        no-op; the second call waits for the first."""
        if self._closed:
            await self._close_finished.wait()
            return
        self._closed = True
        try:
            members = [m for g in self._groups.values() for m in g.members]
            await asyncio.gather(*(m._stop(grace=self.close_timeout) for m in members))
            if self._background:
                await asyncio.wait(set(self._background), timeout=self.close_timeout)
            if self._connection is not None:
                async with _best_effort():
                    await self._connection.close()
        finally:
            self._progress.set()
            self._close_finished.set()

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter in the broker's dead-letter queue, oldest first -- of all
        groups, whichever process dead-lettered them.

        Read without consuming: each message is taken unacked and all are requeued at
        the end (a classic queue puts them back in place). While the read runs, those
        messages are invisible to another process reading the same queue. Raises
        :class:`BusClosed` after :meth:`close` (open a new bus to inspect the broker).
        """
        if self._closed:
            raise BusClosed("cannot read dead letters: the bus is closed; open a new bus to inspect the broker")
        async with self._dead_letter_lock, self._dead_letter_reader() as taken:
            return [self._read_dead_letter(message) for message in taken]

    async def replay_dead_letters(self, group: str | None = None) -> int:
        """Move the dead letters of ``group`` (all groups when None) back into their
        group's queue with a fresh delivery count; return how many moved.

        Each one is republished straight to ``<queue_prefix><group>`` (not through the
        exchange: other groups bound to the type already handled it) and removed from
        the dead-letter queue once the broker confirmed the copy. Dead letters of
        malformed bodies stay where they are. Raises :class:`BusError` -- after moving
        the ones before it -- when a group's queue no longer exists.
        """
        if self._closed:
            raise BusClosed("cannot replay dead letters: the bus is closed")
        replayed = 0
        acked: set[int | None] = set()
        async with self._dead_letter_lock, self._dead_letter_reader(acked) as taken:
            for message in taken:
                letter = self._read_dead_letter(message)
                if (group is not None and letter.group != group) or letter.malformed:
                    continue
                known = self._groups.get(letter.group)
                queue = known.queue if known is not None else f"{self.queue_prefix}{letter.group}"
                self._add_unsettled((known,) if known is not None else (), 1)
                try:
                    await self._publish_to_queue(
                        queue, _copy(message, {_DELIVERIES: 0}), f"replay dead letter {letter.event.id}"
                    )
                except BaseException:
                    self._add_unsettled((known,) if known is not None else (), -1)
                    raise
                if not await _ack(message):
                    raise BusError(
                        f"replayed dead letter {letter.event.id} to {queue!r} but lost the channel before removing it"
                        " from the dead-letter queue; it will be listed (and could be replayed) again --"
                        f" harmless, handlers are idempotent (broker {self._where})"
                    )
                acked.add(message.delivery_tag)
                replayed += 1
        return replayed

    def stats(self) -> BusStats:
        """A snapshot of this bus's counters (see :class:`~agent_coordinator.bus.base.BusStats`)."""
        return dataclasses.replace(self._stats)

    # -- test helper -----------------------------------------------------------------

    # A timeout parameter (not asyncio.timeout around the call) so the error can name the busy groups.
    async def wait_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once everything this bus published, redelivered or replayed into its
        groups is acked or dead-lettered, and those groups' queues (and delay queues)
        are empty on the broker.

        A test helper: it counts only what passes through this bus object, so it fits
        a test where one bus both publishes and consumes. Waits on this bus's own
        progress, then polls the broker's queue depths (a passive declare every 10 ms)
        to see that nothing else is queued. Raises ``TimeoutError`` naming the groups
        with work left.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._progress.clear()
                    if any(g.unsettled > 0 or g.in_flight for g in self._groups.values()):
                        await self._progress.wait()
                        continue
                    if not await self._queued_on_broker():
                        return
                    await asyncio.sleep(_IDLE_POLL)
        except TimeoutError:
            busy = "; ".join(g.describe() for g in self._groups.values() if g.unsettled > 0 or g.in_flight)
            raise TimeoutError(
                f"RabbitMQ bus not idle after {timeout}s: {busy or 'messages still queued on the broker'}"
            ) from None

    # -- delivery (called by members) ------------------------------------------------

    async def _deliver(self, group: _Group, handler: Handler, message: AbstractIncomingMessage) -> None:
        """Hand one delivery to ``handler`` and settle it: ack, redeliver or dead-letter."""
        try:
            message.channel  # noqa: B018 -- raises once the channel is gone
        except aiormq.exceptions.ChannelInvalidStateError:
            # Prefetched on a channel that died since: the broker has requeued it already.
            return
        failures = _int_header(message.headers, _DELIVERIES)
        try:
            event = parse_event(message.body)
        except MalformedEvent as exc:
            logger.error(
                "dead-lettering an undecodable message %s of group %r: %s", message.message_id, group.name, exc
            )
            # A delivery that failed like any other: counted, so every bus reports 1 here.
            await self._dead_letter(group, message, f"MalformedEvent: {exc}", failures + 1)
            return
        self._stats.delivered += 1
        try:
            await handler(event)
        except asyncio.CancelledError:
            # Cancelled mid-handler (a close timed out): not handled, so back to the group.
            await _requeue(message)
            raise
        except Exception as exc:
            await self._handler_failed(group, message, event, exc, failures + 1)
        else:
            if await _ack(message):
                self._stats.acked += 1
                self._settled(group)

    async def _handler_failed(
        self, group: _Group, message: AbstractIncomingMessage, event: Event, exc: Exception, deliveries: int
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, MalformedEvent):
            # The event itself is at fault (missing data, a bad signature): retrying
            # cannot help, so it is dead-lettered at once with the reason.
            logger.error("dead-lettering event %s for group %r at once: %s", event.id, group.name, error)
            await self._dead_letter(group, message, error, deliveries)
            return
        if deliveries >= self.max_deliveries:
            logger.warning(
                "dead-lettering event %s for group %r after %d deliveries",
                event.id,
                group.name,
                deliveries,
                exc_info=exc,
            )
            await self._dead_letter(group, message, error, deliveries)
            return
        logger.debug(
            "handler of group %r failed (delivery %d of %d); redelivering",
            group.name,
            deliveries,
            self.max_deliveries,
            exc_info=exc,
        )
        try:
            queue = await self._retry_queue(group, deliveries)
            await self._publish_to_queue(queue, _copy(message, {_DELIVERIES: deliveries}), f"redeliver {event.id}")
        except BusError as publish_error:
            # Not lost: the original goes back to the group as it was (this failure uncounted).
            logger.error("cannot schedule the redelivery of %s for group %r: %s", event.id, group.name, publish_error)
            await _requeue(message)
            return
        if await _ack(message):
            self._stats.redelivered += 1

    async def _dead_letter(self, group: _Group, message: AbstractIncomingMessage, error: str, deliveries: int) -> None:
        headers: HeadersType = {_GROUP: group.name, _ERROR: error, _DELIVERIES: deliveries}
        try:
            await self._publish_to_queue(
                self._dead_letter_queue, _copy(message, headers, timestamp=datetime.now(UTC)), "dead-letter"
            )
        except BusError as publish_error:
            logger.error("cannot dead-letter %s for group %r: %s", message.message_id, group.name, publish_error)
            await _requeue(message)
            return
        if await _ack(message):
            self._stats.dead_lettered += 1
            self._settled(group)

    # -- broker plumbing -------------------------------------------------------------

    async def _ensure_connected(self) -> AbstractRobustConnection:
        if self._connection is not None:
            return self._connection
        async with self._connect_lock:
            if self._connection is not None:
                return self._connection
            async with self._broker_errors("connect"):
                connection = await aio_pika.connect_robust(
                    self.url,
                    timeout=_CONNECT_TIMEOUT,
                    client_properties={"connection_name": f"agent-coordinator bus ({self.exchange})"},
                )
                try:
                    publisher = await connection.channel(publisher_confirms=True)
                    topology = await connection.channel()
                    self._exchange = await publisher.declare_exchange(
                        self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                    await topology.declare_queue(
                        self._dead_letter_queue, durable=True, arguments={"x-queue-type": "classic"}
                    )
                    self._declared.add(self._dead_letter_queue)
                except BaseException:
                    async with _best_effort():
                        await connection.close()
                    raise
            if self._closed:  # close() ran while we were connecting: nobody would close this one
                async with _best_effort():
                    await connection.close()
                raise BusClosed("the bus was closed while it was connecting to RabbitMQ")
            self._publisher, self._topology = publisher, topology
            self._connection = connection
            return connection

    async def _ensure_exchange(self) -> AbstractRobustExchange:
        await self._ready_publisher()
        assert self._exchange is not None
        return self._exchange

    async def _ready_publisher(self) -> AbstractRobustChannel:
        """The publishing channel, once it is open: while the robust connection is
        re-establishing it, wait (up to the connect timeout) rather than fail -- nothing
        was sent yet, so waiting cannot duplicate a message."""
        await self._ensure_connected()
        publisher = self._publisher
        assert publisher is not None
        if publisher.is_closed:
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    await publisher.ready()
            except TimeoutError:
                raise BusError(
                    f"RabbitMQ bus could not publish: the connection to the broker at {self._where} was lost and is"
                    f" not back after {_CONNECT_TIMEOUT:.0f}s; check that RabbitMQ is running (rabbitmqctl status)."
                    " The bus keeps reconnecting: retry the publish later"
                ) from None
        return publisher

    def _group_queue_arguments(self) -> dict[str, Any]:
        # Identical for every group and every bus sharing queue_prefix: RabbitMQ refuses
        # to re-declare a queue with other arguments.
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": _BROKER_DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self._dead_letter_queue,
            # at-least-once dead-lettering (3.10+) needs reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def _retry_queue(self, group: _Group, deliveries: int) -> str:
        """The queue a delivery that failed for the ``deliveries``-th time waits in
        (declared on first use), or the group's own queue when there is no delay."""
        delay_ms = round(self.redelivery_delay * 2 ** (deliveries - 1) * 1000)
        if delay_ms <= 0:
            return group.queue
        name = f"{group.queue}.retry.{delay_ms}ms"
        if name not in group.retry_queues:
            await self._ensure_connected()
            assert self._topology is not None
            async with self._broker_errors(f"declare delay queue {name!r}"):
                await self._topology.declare_queue(
                    name,
                    durable=True,
                    arguments={
                        "x-queue-type": "quorum",
                        "x-message-ttl": delay_ms,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": group.queue,
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    },
                )
            group.retry_queues.add(name)
            self._declared.add(name)
        return name

    async def _publish_to_queue(self, queue: str, message: aio_pika.Message, action: str) -> None:
        """Publish straight to ``queue`` (default exchange) and wait for the confirm;
        :class:`BusError` when the broker did not take it or the queue does not exist."""
        publisher = await self._ready_publisher()
        async with self._broker_errors(action):
            result = await publisher.default_exchange.publish(message, routing_key=queue, mandatory=True)
        if not isinstance(result, Basic.Ack):
            for group in self._groups.values():
                group.retry_queues.discard(queue)  # re-declared on the next failure
            raise BusError(
                f"cannot {action}: queue {queue!r} does not exist on RabbitMQ at {self._where};"
                " it was deleted -- subscribe its group again to re-declare it"
            )

    @contextlib.asynccontextmanager
    async def _dead_letter_reader(
        self, acked: Collection[int | None] = ()
    ) -> AsyncIterator[list[AbstractIncomingMessage]]:
        """Take every message of the dead-letter queue unacked on a channel of its own,
        yield them, then requeue all but the delivery tags the caller put in ``acked``
        and close the channel."""
        connection = await self._ensure_connected()
        async with self._broker_errors("read the dead-letter queue"):
            channel = await connection.channel(publisher_confirms=False)
        taken: list[AbstractIncomingMessage] = []
        try:
            async with self._broker_errors("read the dead-letter queue"):
                queue = await channel.get_queue(self._dead_letter_queue, ensure=False)
                while (message := await queue.get(no_ack=False, fail=False)) is not None:
                    taken.append(message)
            yield taken
        finally:
            async with _best_effort():
                unsettled = [m for m in taken if m.delivery_tag not in acked]
                if unsettled:
                    # One frame puts back everything not acked (replayed), in place.
                    await _settle(unsettled[-1], ack=False, multiple=True)
                await channel.close()  # would requeue them as well; the nack keeps it explicit

    def _read_dead_letter(self, message: AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers
        group = _str_header(headers, _GROUP)
        error = _str_header(headers, _ERROR)
        deliveries = _int_header(headers, _DELIVERIES)
        if group is None:
            # Dead-lettered by the broker (x-delivery-limit), not by us: find the group
            # from the queue it died in.
            queue = _death_queue(headers, "delivery_limit") or "?"
            group = queue.removeprefix(self.queue_prefix)
            error = (
                f"DeliveryLimitExceeded: RabbitMQ gave up after {_BROKER_DELIVERY_LIMIT} returns of this message"
                f" to queue {queue!r} without an ack (consumers crashed, closed or timed out mid-handler)"
            )
            deliveries += _BROKER_DELIVERY_LIMIT + 1
        try:
            event = parse_event(message.body)
        except MalformedEvent:
            return DeadLetter.of_malformed_body(
                message.body,
                group=group,
                error=error or "unknown error",
                deliveries=deliveries,
                source="bus/rabbitmq",
                message_id=message.message_id,
                time=message.timestamp,
            )
        return DeadLetter(event=event, group=group, error=error or "unknown error", deliveries=deliveries)

    async def _queued_on_broker(self) -> bool:
        """Whether any queue of this bus's groups holds ready messages."""
        connection = await self._ensure_connected()
        async with self._broker_errors("inspect queue depths"):
            if self._inspector is None or self._inspector.is_closed:
                self._inspector = await connection.channel(publisher_confirms=False)
            channel = await self._inspector.get_underlay_channel()
            for group in self._groups.values():
                for queue in (group.queue, *group.retry_queues):
                    declared = await channel.queue_declare(queue, passive=True)
                    if declared.message_count:
                        return True
        return False

    def _add_unsettled(self, groups: Collection[_Group], n: int) -> None:
        for group in groups:
            group.unsettled += n
        if n < 0:
            self._progress.set()

    def _settled(self, group: _Group) -> None:
        # Clamped: a message this bus did not count (published elsewhere) must not let
        # the count go negative and hide one it did count.
        group.unsettled = max(0, group.unsettled - 1)
        self._progress.set()

    def _after(self, task: asyncio.Task[Any], then: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``then()`` once ``task`` is done (kept referenced until it ran)."""

        def start(_: asyncio.Task[Any]) -> None:
            follow_up = asyncio.ensure_future(then())
            self._background.add(follow_up)
            follow_up.add_done_callback(self._background.discard)

        task.add_done_callback(start)

    @contextlib.asynccontextmanager
    async def _broker_errors(self, action: str) -> AsyncIterator[None]:
        """Bound a conversation with the broker by ``_OPERATION_TIMEOUT`` and translate
        aio-pika/aiormq/socket errors into :class:`BusError` naming the broker (host,
        port, vhost -- never the password) and what to check.

        The bound matters: aio-pika waits for a reconnecting connection without limit,
        and a broker under a memory or disk alarm blocks publishers indefinitely."""
        try:
            async with asyncio.timeout(_OPERATION_TIMEOUT):
                yield
        except BusError:
            raise
        except _BROKER_EXCEPTIONS as exc:
            if isinstance(exc, aiormq.exceptions.ChannelInvalidStateError):
                reason = "the channel is closed: the connection was lost or the bus is closing"
            else:
                reason = str(exc) or type(exc).__name__
            if self._password:
                reason = reason.replace(self._password, "***")
            raise BusError(
                f"RabbitMQ bus could not {action}: {type(exc).__name__}: {reason} (broker {self._where}); {_hint(exc)}"
            ) from exc


# Options RabbitMQBus.from_url reads from the URL's query, with their types.
_URL_OPTIONS: Final[dict[str, type]] = {
    "exchange": str,
    "queue_prefix": str,
    "max_deliveries": int,
    "redelivery_delay": float,
    "prefetch": int,
    "close_timeout": float,
}


def _bus_options_from_query(url: str) -> tuple[str, dict[str, Any]]:
    """Split ``url`` into the URL without this bus's query options, and those options."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        kind = _URL_OPTIONS.get(key)
        if kind is None:
            kept.append((key, value))
            continue
        try:
            options[key] = kind(value)
        except ValueError:
            raise BusError(
                f"bus URL option {key}={value!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
    return urlunsplit(parts._replace(query=urlencode(kept))), options


# Everything aio-pika, aiormq, pamqp or the socket layer raise for a broker problem.
_BROKER_EXCEPTIONS: Final = (
    aiormq.exceptions.AMQPError,
    pamqp.exceptions.PAMQPException,
    ConnectionError,
    OSError,
    TimeoutError,
    RuntimeError,  # aio-pika raises it for a connection or channel already closed
)


@contextlib.asynccontextmanager
async def _best_effort() -> AsyncIterator[None]:
    """For cleanup on the way out (cancel a consumer, close a channel): bounded, and
    quiet about a broker that is gone -- the broker requeues what we held anyway."""
    with contextlib.suppress(*_BROKER_EXCEPTIONS):
        async with asyncio.timeout(_CLEANUP_TIMEOUT):
            yield


def _hint(exc: BaseException) -> str:
    """What to check, by failure."""
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError):
        return "check the user name and password in the bus URL"
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return (
            "a queue or exchange of that name exists with other settings; delete it"
            " (rabbitmqctl delete_queue NAME) or use another exchange/queue_prefix"
        )
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        return "the user lacks permission on this vhost (rabbitmqctl set_permissions)"
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return "a queue or exchange was deleted on the broker; subscribe the group again to re-declare it"
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return "the broker refused the message (nack): check its log for alarms (disk or memory) and queue limits"
    if isinstance(exc, aiormq.exceptions.InvalidFrameError):
        return "check that the vhost in the URL exists and the user may use it (rabbitmqctl list_vhosts)"
    if isinstance(exc, aiormq.exceptions.ChannelInvalidStateError | aiormq.exceptions.ConnectionClosed):
        return "the bus reconnects on its own (robust connection): retry shortly; if it persists, check the broker"
    if isinstance(exc, TimeoutError):
        return (
            f"the broker did not answer within {_OPERATION_TIMEOUT:.0f}s: check that it is running and not"
            " blocked by a memory or disk alarm (rabbitmqctl status lists alarms); the call may be retried"
        )
    return (
        "check that RabbitMQ is running and reachable there (rabbitmqctl status; start it with"
        " rabbitmq-server -detached) and the URL's host and port; the call may be retried"
    )


async def _ack(message: AbstractIncomingMessage) -> bool:
    """Ack a delivery; False when its channel is gone (the broker then requeues the
    delivery itself, so the event will be delivered again)."""
    return await _settle(message, ack=True)


async def _requeue(message: AbstractIncomingMessage) -> None:
    """Give a delivery back to its queue untouched (best effort, as :func:`_ack`)."""
    await _settle(message, ack=False)


async def _settle(message: AbstractIncomingMessage, *, ack: bool, multiple: bool = False) -> bool:
    # Queue the frame without waiting for the socket to drain (wait=False): when the
    # connection drops mid-drain, aiormq can leave that wait pending forever, which
    # would wedge the worker after the robust connection is back. Waiting for the drain
    # would prove nothing more anyway -- the broker does not answer acks.
    tag = message.delivery_tag
    if tag is None:
        return False
    try:
        channel = message.channel  # raises once the channel is closed
        if ack:
            await channel.basic_ack(tag, multiple=multiple, wait=False)
        else:
            await channel.basic_nack(tag, multiple=multiple, requeue=True, wait=False)
    except Exception as exc:  # whatever it is (aiormq even raises bare Exception), the broker redelivers
        logger.debug("could not settle delivery %s (its channel is gone; the broker will redeliver): %r", tag, exc)
        return False
    return True


def _copy(
    message: AbstractIncomingMessage, headers: HeadersType, *, timestamp: datetime | None = None
) -> aio_pika.Message:
    """A persistent copy of ``message`` with ``headers`` set, and the broker's and our
    dead-letter headers dropped (a replayed letter starts clean)."""
    merged: HeadersType = {k: v for k, v in message.headers.items() if k not in _DROPPED_ON_COPY}
    merged.update(headers)
    return aio_pika.Message(
        message.body,
        headers=merged,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        timestamp=timestamp or message.timestamp,
    )


def _int_header(headers: HeadersType, name: str) -> int:
    value = headers.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _str_header(headers: HeadersType, name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def _death_queue(headers: HeadersType, reason: str) -> str | None:
    """The queue of the broker's ``x-death`` record with ``reason``, if any."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list):
        for death in deaths:
            if isinstance(death, dict) and _str_header(death, "reason") == reason:
                return _str_header(death, "queue")
    return None
