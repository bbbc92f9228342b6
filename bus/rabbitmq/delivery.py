"""How the RabbitMQ bus consumes, settles, redelivers and dead-letters.

A :class:`Member` is one subscriber: a channel of its own, a consumer on its group's
queue and ``concurrency`` worker tasks. A delivery is acked only after its handler
returned; a failed one is republished to the group's delay queue with its failure
count in ``x-deliveries``, or to the dead-letter queue once out of deliveries, and the
original acked only once the broker confirmed the copy. docs/brokers/rabbitmq.md
("Delivery, redelivery and dead letters") gives the rules and their reasons.

Messages are CloudEvents in the AMQP binding's structured content mode
(:func:`event_message`). Members work on their bus's internals (the same package):
its counters, its groups' unsettled counts and its confirmed publishes to a queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    ConsumerTag,
    DeliveryMode,
    HeadersType,
)

from agent_coordinator.bus.backend import stop_workers
from agent_coordinator.bus.base import DeadLetter, Handler
from agent_coordinator.bus.rabbitmq.errors import best_effort
from agent_coordinator.bus.rabbitmq.topology import BROKER_DELIVERY_LIMIT, Group
from agent_coordinator.core.errors import BusError, MalformedEvent
from agent_coordinator.core.events import CLOUDEVENTS_CONTENT_TYPE, Event, parse_event

if TYPE_CHECKING:
    from agent_coordinator.bus.rabbitmq.bus import RabbitMQBus

__all__ = ["DELIVERIES", "Member", "ack", "copy_message", "event_message", "read_dead_letter", "requeue", "settle"]

logger = logging.getLogger("agent_coordinator.bus.rabbitmq")

# Headers this bus writes.
DELIVERIES: Final = "x-deliveries"  # failed handler calls so far
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


def event_message(event: Event, body: bytes) -> aio_pika.Message:
    """``event`` as a persistent AMQP message: the JSON event format as the body,
    labelled ``application/cloudevents+json``, with ``message_id = event.id``,
    ``type = event.type``, ``timestamp = event.time`` and the ``traceparent`` also as
    a header (so tracing middleware need not parse bodies)."""
    return aio_pika.Message(
        body,
        content_type=CLOUDEVENTS_CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=event.id,
        type=event.type,
        timestamp=event.time,
        headers={_TRACEPARENT: event.traceparent},
    )


class Member:
    """One subscriber: a channel of its own (so its prefetch is its own), a consumer on
    the group's queue, and ``concurrency`` worker tasks taking deliveries in order from a
    local buffer -- which keeps FIFO for one worker and lets close stop them cleanly."""

    def __init__(self, bus: RabbitMQBus, group: Group, handler: Handler, concurrency: int) -> None:
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
                async with best_effort():
                    await self._queue.cancel(self._consumer_tag)
            await stop_workers(
                self._workers, busy=self._busy.__contains__, grace=grace, group=self._group.name, logger=logger
            )
            while not self._buffer.empty():
                self._group.in_flight -= 1
                await requeue(self._buffer.get_nowait())
            if (current := asyncio.current_task()) in self._workers:
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
            async with best_effort():
                await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Runs in delivery order up to here (aio-pika starts one task per delivery), so
        # the buffer keeps the queue's order.
        if self._closing:
            await requeue(message)  # arrived between close and the broker's Cancel-Ok
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
                await self._deliver(message)
            finally:
                self._group.in_flight -= 1
                self._busy.discard(me)

    # -- one delivery: ack, redeliver or dead-letter ------------------------------------

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        """Hand one delivery to the handler and settle it: ack, redeliver or dead-letter."""
        group, bus = self._group, self._bus
        try:
            message.channel  # noqa: B018 -- raises once the channel is gone
        except aiormq.exceptions.ChannelInvalidStateError:
            # Prefetched on a channel that died since: the broker has requeued it already.
            return
        failures = _int_header(message.headers, DELIVERIES)
        try:
            event = parse_event(message.body)
        except MalformedEvent as exc:
            logger.error(
                "dead-lettering an undecodable message %s of group %r: %s", message.message_id, group.name, exc
            )
            # A delivery that failed like any other: counted, so every bus reports 1 here.
            await self._dead_letter(message, f"MalformedEvent: {exc}", failures + 1)
            return
        bus._stats.delivered += 1
        try:
            await self._handler(event)
        except asyncio.CancelledError:
            # Cancelled mid-handler (a close timed out): not handled, so back to the group.
            await requeue(message)
            raise
        except Exception as exc:
            await self._handler_failed(message, event, exc, failures + 1)
        else:
            if await ack(message):
                bus._stats.acked += 1
                bus._settled(group)

    async def _handler_failed(
        self, message: AbstractIncomingMessage, event: Event, exc: Exception, deliveries: int
    ) -> None:
        group, bus = self._group, self._bus
        error = f"{type(exc).__name__}: {exc}"
        if bus._dead_letter_now(exc, event_id=event.id, group=group.name, deliveries=deliveries):
            await self._dead_letter(message, error, deliveries)
            return
        copy = copy_message(message, {DELIVERIES: deliveries})
        if await self._move(message, bus._retry_queue(group, deliveries), copy, f"redeliver {event.id}"):
            bus._stats.redelivered += 1

    async def _dead_letter(self, message: AbstractIncomingMessage, error: str, deliveries: int) -> None:
        group, bus = self._group, self._bus
        headers: HeadersType = {_GROUP: group.name, _ERROR: error, DELIVERIES: deliveries}
        copy = copy_message(message, headers, timestamp=datetime.now(UTC))
        if await self._move(message, bus._dead_letter_queue, copy, f"dead-letter {message.message_id}"):
            bus._stats.dead_lettered += 1
            bus._settled(group)

    async def _move(
        self, message: AbstractIncomingMessage, queue: str | Awaitable[str], copy: aio_pika.Message, action: str
    ) -> bool:
        """Publish ``copy`` to ``queue`` (awaited first when declaring it is part of
        finding it) and wait for the broker's confirm, then ack ``message``: True when
        both happened. When the broker did not take the copy, ``message`` goes back to
        its queue untouched -- not lost, and this failure not counted -- and False."""
        try:
            target = queue if isinstance(queue, str) else await queue
            await self._bus._publish_to_queue(target, copy, action)
        except BusError as publish_error:
            logger.error("cannot %s for group %r: %s", action, self._group.name, publish_error)
            await requeue(message)
            return False
        return await ack(message)


def read_dead_letter(message: AbstractIncomingMessage, *, queue_prefix: str) -> DeadLetter:
    """The :class:`DeadLetter` a message of the dead-letter queue stands for; a body that
    is not an event becomes a malformed dead letter (see :meth:`DeadLetter.of_malformed_body`)."""
    headers = message.headers
    group = _str_header(headers, _GROUP)
    error = _str_header(headers, _ERROR)
    deliveries = _int_header(headers, DELIVERIES)
    if group is None:
        # Dead-lettered by the broker (x-delivery-limit), not by us: find the group
        # from the queue it died in.
        queue = _death_queue(headers, "delivery_limit") or "?"
        group = queue.removeprefix(queue_prefix)
        error = (
            f"DeliveryLimitExceeded: RabbitMQ gave up after {BROKER_DELIVERY_LIMIT} returns of this message"
            f" to queue {queue!r} without an ack (consumers crashed, closed or timed out mid-handler)"
        )
        deliveries += BROKER_DELIVERY_LIMIT + 1
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


async def ack(message: AbstractIncomingMessage) -> bool:
    """Ack a delivery; False when its channel is gone (the broker then requeues the
    delivery itself, so the event will be delivered again)."""
    return await settle(message, ack=True)


async def requeue(message: AbstractIncomingMessage) -> None:
    """Give a delivery back to its queue untouched (best effort, as :func:`ack`)."""
    await settle(message, ack=False)


async def settle(message: AbstractIncomingMessage, *, ack: bool, multiple: bool = False) -> bool:
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


def copy_message(
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
