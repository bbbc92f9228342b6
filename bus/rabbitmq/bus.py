"""The RabbitMQ event bus: :class:`RabbitMQBus`, the connection, publishing and the
dead-letter queue's reads. Declarations are in :mod:`.topology`, consuming and
settling in :mod:`.delivery`, error translation in :mod:`.errors`; the operator's
view is docs/brokers/rabbitmq.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping
from typing import Any, ClassVar, Final
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pamqp.commands import Basic

from agent_coordinator.bus.backend import check_delivery_options, event_json
from agent_coordinator.bus.base import DeadLetter, Handler, Subscription
from agent_coordinator.bus.broker import BrokerBus, OptionKind
from agent_coordinator.bus.rabbitmq.delivery import (
    DELIVERIES,
    Member,
    ack,
    copy_message,
    event_message,
    read_dead_letter,
    settle,
)
from agent_coordinator.bus.rabbitmq.errors import best_effort, broker_errors
from agent_coordinator.bus.rabbitmq.topology import (
    DEAD_LETTER_QUEUE,
    Group,
    check_group,
    declare_exchange_and_dead_letter_queue,
    declare_group_queue,
    declare_retry_queue,
    queued_on_broker,
    retry_queue_name,
)
from agent_coordinator.core.errors import BusClosed, BusError
from agent_coordinator.core.events import Event

__all__ = ["RabbitMQBus"]

logger = logging.getLogger("agent_coordinator.bus.rabbitmq")

_CONNECT_TIMEOUT: Final = 10.0
_IDLE_POLL: Final = 0.01  # seconds between broker queue-depth checks in wait_idle


class RabbitMQBus(BrokerBus):
    """An :class:`~agent_coordinator.bus.base.EventBus` on a RabbitMQ broker: a topic
    exchange, a durable quorum queue per group, delay queues for redeliveries and a
    dead-letter queue (docs/brokers/rabbitmq.md: topology, redelivery, dead letters,
    the unroutable-publish rule, reconnection).

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

    :meth:`publish` returns once the broker confirmed the message. An event no queue
    is bound to is accepted and dropped, unless this bus subscribed a group to its
    type (then the group's queue or binding was deleted behind its back: ``BusError``).
    :meth:`close` leaves unhandled events in the broker (durable queues): they are
    handled by the group's next member, in this process or another. It connects on
    first use.
    """

    _logger: ClassVar[logging.Logger] = logger
    _kind: ClassVar[str] = "RabbitMQ"
    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps")
    example_url: ClassVar[str] = "amqp://guest:guest@127.0.0.1:5672/"
    url_options: ClassVar[Mapping[str, OptionKind]] = {
        "exchange": str,
        "queue_prefix": str,
        "max_deliveries": int,
        "redelivery_delay": float,
        "prefetch": int,
        "close_timeout": float,
    }
    # What aio-pika 10 and aiormq 7 read from the URL's query (left there for them).
    client_url_options: ClassVar[Mapping[str, OptionKind]] = {
        "heartbeat": int,
        "timeout": int,
        "reconnect_interval": float,
        "fail_fast": bool,
        "interleave": int,
        "happy_eyeballs_delay": float,
        "name": str,
        "auth": frozenset({"plain", "amqplain", "external", "PLAIN", "AMQPLAIN", "EXTERNAL"}),
        "cafile": str,
        "capath": str,
        "cadata": str,
        "keyfile": str,
        "certfile": str,
        # aiormq verifies certificates only when this is exactly "0": no other spellings.
        "no_verify_ssl": frozenset({"0", "1"}),
    }

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
        super().__init__(url, default_port=5671 if parts.scheme == "amqps" else 5672)
        if not exchange:
            raise ValueError("exchange must be a non-empty name (the default exchange cannot route by type)")
        check_delivery_options(
            max_deliveries=max_deliveries, redelivery_delay=redelivery_delay, close_timeout=close_timeout
        )
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, or None to use each member's concurrency (got {prefetch})")
        self.exchange = exchange
        self.max_deliveries = max_deliveries
        self.redelivery_delay = redelivery_delay
        self.prefetch = prefetch
        self.close_timeout = close_timeout
        self.queue_prefix = queue_prefix
        self.duplicate_delivery = duplicate_delivery
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self._where += f" (vhost {vhost!r})"
        self._dead_letter_queue = f"{queue_prefix}{DEAD_LETTER_QUEUE}"

        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None  # publisher confirms; publishing only
        self._topology: AbstractRobustChannel | None = None  # declarations that may fail
        self._exchange: AbstractExchange | None = None
        self._inspector: AbstractRobustChannel | None = None  # wait_idle's queue-depth checks
        self._connect_lock = asyncio.Lock()
        self._dead_letter_lock = asyncio.Lock()
        self._groups: dict[str, Group] = {}
        self._routes: dict[str, list[Group]] = {}  # event type -> groups this bus bound to it
        self._declared: set[str] = set()  # queue names this bus declared
        self._background: set[asyncio.Task[None]] = set()
        self._progress = asyncio.Event()

    @classmethod
    def _names_of(cls, namespace: str) -> dict[str, str]:
        # Exchange <namespace>, queues <namespace>.<group>, dead letters <namespace>.dead-letters.
        return {"exchange": namespace, "queue_prefix": f"{namespace}."}

    # -- the EventBus protocol -------------------------------------------------------

    async def _publish(self, event: Event) -> None:
        body = event_json(event).encode()
        if len(event.type.encode()) > 255:
            raise BusError(f"cannot publish {event.type[:40]}...: RabbitMQ routing keys (event types) are <= 255 bytes")
        exchange = await self._ensure_exchange()
        groups = self._routes.get(event.type, ())
        message = event_message(event, body)
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

    async def _join(self, group: str, wanted: set[str], handler: Handler, concurrency: int) -> Subscription:
        # Declares the group's quorum queue and binds it to each type before returning;
        # ValueError also for the reserved group name and for topic wildcards in types.
        check_group(group, wanted)
        connection = await self._ensure_connected()
        target = self._groups.get(group)
        if target is None:
            target = self._groups[group] = Group(group, f"{self.queue_prefix}{group}")
        member = Member(self, target, handler, concurrency)
        async with self._broker_errors(f"subscribe group {group!r}"):
            # Each member declares and binds on its own channel: the robust connection
            # re-declares, re-binds and re-consumes exactly that after a reconnect.
            channel = await connection.channel()
            member.adopt(channel)
            try:
                await channel.set_qos(prefetch_count=self.prefetch or concurrency)
                queue = await declare_group_queue(
                    channel,
                    target.queue,
                    exchange=self.exchange,
                    types=wanted,
                    dead_letter_queue=self._dead_letter_queue,
                )
                self._declared.add(target.queue)
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

    async def _shut_down(self) -> None:
        # Every member stops (in-flight handlers get up to close_timeout in total, then
        # are cancelled and their events requeued); queued events stay in the broker.
        try:
            members = [m for g in self._groups.values() for m in g.members]
            await asyncio.gather(*(m._stop(grace=self.close_timeout) for m in members))
            if self._background:
                await asyncio.wait(set(self._background), timeout=self.close_timeout)
            if self._connection is not None:
                async with best_effort():
                    await self._connection.close()
        finally:
            self._progress.set()

    async def _list_dead_letters(self) -> list[DeadLetter]:
        # Read without consuming: each message is taken unacked and all are requeued at
        # the end (a classic queue puts them back in place). While the read runs, those
        # messages are invisible to another process reading the same queue.
        async with self._dead_letter_lock, self._dead_letter_reader() as taken:
            return [read_dead_letter(message, queue_prefix=self.queue_prefix) for message in taken]

    async def _replay(self, group: str | None) -> int:
        # Each letter is republished straight to <queue_prefix><group> (not through the
        # exchange: other groups bound to the type already handled it) and removed from
        # the dead-letter queue once the broker confirmed the copy. BusError -- after
        # moving the ones before it -- when a group's queue no longer exists.
        replayed = 0
        acked: set[int | None] = set()
        async with self._dead_letter_lock, self._dead_letter_reader(acked) as taken:
            for message in taken:
                letter = read_dead_letter(message, queue_prefix=self.queue_prefix)
                if (group is not None and letter.group != group) or letter.malformed:
                    continue
                known = self._groups.get(letter.group)
                queue = known.queue if known is not None else f"{self.queue_prefix}{letter.group}"
                self._add_unsettled((known,) if known is not None else (), 1)
                try:
                    await self._publish_to_queue(
                        queue, copy_message(message, {DELIVERIES: 0}), f"replay dead letter {letter.event.id}"
                    )
                except BaseException:
                    self._add_unsettled((known,) if known is not None else (), -1)
                    raise
                if not await ack(message):
                    raise BusError(
                        f"replayed dead letter {letter.event.id} to {queue!r} but lost the channel before removing it"
                        " from the dead-letter queue; it will be listed (and could be replayed) again --"
                        f" harmless, handlers are idempotent (broker {self._where})"
                    )
                acked.add(message.delivery_tag)
                replayed += 1
        return replayed

    async def _until_idle(self) -> None:
        # This bus's own count first (event-driven), then the broker's queue depths, so
        # that a message on the wire or between a delay queue and its group counts.
        while True:
            self._progress.clear()
            if any(g.unsettled > 0 or g.in_flight for g in self._groups.values()):
                await self._progress.wait()
                continue
            if not await self._queued_on_broker():
                return
            await asyncio.sleep(_IDLE_POLL)

    def _work_left(self) -> str:
        busy = "; ".join(g.describe() for g in self._groups.values() if g.unsettled > 0 or g.in_flight)
        return busy or "messages still queued on the broker"

    # -- broker plumbing (members call the last four) --------------------------------

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
                    self._exchange = await declare_exchange_and_dead_letter_queue(
                        publisher, topology, self.exchange, self._dead_letter_queue
                    )
                    self._declared.add(self._dead_letter_queue)
                except BaseException:
                    async with best_effort():
                        await connection.close()
                    raise
            if self._closed:  # close() ran while we were connecting: nobody would close this one
                async with best_effort():
                    await connection.close()
                raise BusClosed("the bus was closed while it was connecting to RabbitMQ")
            self._publisher, self._topology = publisher, topology
            self._connection = connection
            return connection

    async def _ensure_exchange(self) -> AbstractExchange:
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
            async with best_effort():
                unsettled = [m for m in taken if m.delivery_tag not in acked]
                if unsettled:
                    # One frame puts back everything not acked (replayed), in place.
                    await settle(unsettled[-1], ack=False, multiple=True)
                await channel.close()  # would requeue them as well; the nack keeps it explicit

    async def _queued_on_broker(self) -> bool:
        """Whether any queue of this bus's groups holds ready messages."""
        connection = await self._ensure_connected()
        async with self._broker_errors("inspect queue depths"):
            if self._inspector is None or self._inspector.is_closed:
                self._inspector = await connection.channel(publisher_confirms=False)
            return await queued_on_broker(self._inspector, self._groups.values())

    def _add_unsettled(self, groups: Collection[Group], n: int) -> None:
        for group in groups:
            group.unsettled += n
        if n < 0:
            self._progress.set()

    async def _retry_queue(self, group: Group, deliveries: int) -> str:
        """The queue a delivery that failed for the ``deliveries``-th time waits in
        (declared on first use), or the group's own queue when there is no delay."""
        delay_ms = round(self.redelivery_delay * 2 ** (deliveries - 1) * 1000)
        if delay_ms <= 0:
            return group.queue
        name = retry_queue_name(group.queue, delay_ms)
        if name not in group.retry_queues:
            await self._ensure_connected()
            assert self._topology is not None
            async with self._broker_errors(f"declare delay queue {name!r}"):
                await declare_retry_queue(self._topology, name, delay_ms=delay_ms, group_queue=group.queue)
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

    def _settled(self, group: Group) -> None:
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

    def _broker_errors(self, action: str) -> contextlib.AbstractAsyncContextManager[None]:
        return broker_errors(action, where=self._where, password=self._password)
