"""The NATS JetStream event bus: :class:`JetStreamBus`, the connection, publishing,
replay and ``wait_idle``. Streams and consumers are in :mod:`.topology`, pulling and
settling in :mod:`.delivery`, error translation in :mod:`.errors`; the operator's
view is docs/brokers/nats.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import ClassVar, Final

import nats
import nats.errors

from agent_coordinator.bus.backend import check_delivery_options, event_json
from agent_coordinator.bus.base import DeadLetter, Handler, Subscription
from agent_coordinator.bus.broker import BrokerBus, OptionKind
from agent_coordinator.bus.nats.delivery import (
    MSG_ID,
    REQUEST_TIMEOUT,
    Member,
    event_headers,
    keep_alive,
    read_dead_letters,
)
from agent_coordinator.bus.nats.errors import NATS_FAILURES, broker_error, connect_error, describe_failure
from agent_coordinator.bus.nats.topology import Connection, StreamTopology
from agent_coordinator.core.errors import BusClosed, BusError
from agent_coordinator.core.events import Event

__all__ = ["JetStreamBus"]

logger = logging.getLogger("agent_coordinator.bus.nats")

_IDLE_POLL: Final = 0.02  # seconds between consumer-info polls in wait_idle


class JetStreamBus(BrokerBus):
    """An :class:`~agent_coordinator.bus.base.EventBus` on NATS JetStream: an
    interest-retention stream, a durable pull consumer per group, a dead-letter stream
    (docs/brokers/nats.md: topology, delivery, dead letters and replay, reconnection,
    known limits).

    * ``url`` -- ``nats://host:4222`` or ``tls://host:4222`` (credentials in the URL
      are used, never shown in messages);
    * ``stream`` -- the stream's name; the dead letters go to ``<stream>_DLQ``;
    * ``subject_prefix`` -- events are published to ``<prefix>.<event type>``; it
      must not overlap another stream's subjects;
    * ``max_deliveries`` -- deliveries of one event to one group before it is
      dead-lettered (>= 1);
    * ``redelivery_delay`` -- seconds before the first redelivery of a failed event,
      doubled for each further one (capped at 5 minutes); 0 redelivers at once;
    * ``ack_wait`` -- the consumers' ack deadline; held messages are kept alive with
      ``in_progress`` every third of it, so it only matters when a process dies;
    * ``close_timeout`` -- how long a close waits for running handlers before
      cancelling them (their events are nacked, and stay in the stream).

    :meth:`publish` waits for the stream's PubAck and sets ``Nats-Msg-Id`` to the
    event id, so a publish retried within the stream's duplicate window is stored
    once. :meth:`close` leaves unhandled events in the stream for the groups' next
    members. Nothing is connected until first used; :meth:`connect` does it eagerly.
    """

    _logger: ClassVar[logging.Logger] = logger
    _kind: ClassVar[str] = "NATS JetStream"
    schemes: ClassVar[tuple[str, ...]] = ("nats", "tls")
    example_url: ClassVar[str] = "nats://127.0.0.1:4222"
    url_options: ClassVar[Mapping[str, OptionKind]] = {
        "stream": str,
        "subject_prefix": str,
        "max_deliveries": int,
        "redelivery_delay": float,
        "ack_wait": float,
        "close_timeout": float,
    }
    client_url_options: ClassVar[Mapping[str, OptionKind]] = {}  # nats-py reads no query options

    def __init__(
        self,
        url: str,
        *,
        stream: str = "AGENT_COORDINATOR",
        subject_prefix: str = "events",
        max_deliveries: int = 5,
        redelivery_delay: float = 0.5,
        ack_wait: float = 30.0,
        close_timeout: float = 10.0,
    ) -> None:
        super().__init__(url, default_port=4222)
        self._topology = StreamTopology(
            stream=stream, subject_prefix=subject_prefix, ack_wait=ack_wait, where=self._where
        )
        check_delivery_options(
            max_deliveries=max_deliveries, redelivery_delay=redelivery_delay, close_timeout=close_timeout
        )
        if ack_wait <= 0:
            raise ValueError(f"ack_wait must be > 0 seconds (got {ack_wait})")
        self.stream = stream
        self.dlq_stream = self._topology.dlq_stream
        self.subject_prefix = subject_prefix
        self.max_deliveries = max_deliveries
        self.redelivery_delay = redelivery_delay
        self.ack_wait = ack_wait
        self.close_timeout = close_timeout
        self._conn: Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._members: set[Member] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._busy: list[str] = []  # what the last wait_idle round found busy

    @classmethod
    def _names_of(cls, namespace: str) -> dict[str, str]:
        # Stream <namespace> (dead letters <namespace>_DLQ), subjects <namespace>.<type>.
        return {"stream": namespace, "subject_prefix": namespace}

    async def connect(self) -> None:
        """Connect and create/update the streams now rather than on first use (fail fast).

        Raises :class:`~agent_coordinator.core.errors.BusError` naming the server and what to check."""
        await self._connection()

    # -- the EventBus protocol -------------------------------------------------------

    async def _publish(self, event: Event) -> None:
        payload = event_json(event).encode()
        conn = await self._connection()
        try:
            await conn.js.publish(
                self._topology.event_subject(event.type),
                payload,
                timeout=REQUEST_TIMEOUT,
                stream=self.stream,
                headers={MSG_ID: event.id, **event_headers(event)},
            )
        except NATS_FAILURES as exc:
            raise self._broker_error(f"publishing {event.type} {event.id}", exc) from exc

    async def _join(self, group: str, wanted: set[str], handler: Handler, concurrency: int) -> Subscription:
        # Binds the group's consumers on the server, then starts a member pulling from them.
        conn = await self._connection()
        subjects = {self._topology.event_subject(t) for t in wanted} | {self._topology.replay_subject(group)}
        consumers = await self._bind(conn, group, subjects)
        if self._closed:
            raise BusClosed(f"cannot subscribe group {group!r}: the bus closed meanwhile")
        member = Member(self, conn, group, handler, concurrency)
        self._members.add(member)
        # The per-subject layout gives the replay subject a consumer of its own; it is
        # rarely used, so one worker per member reads it.
        replay_consumer = self._topology.replay_consumer(conn, group)
        try:
            await member.start({c: 1 if c == replay_consumer else concurrency for c in consumers})
        except NATS_FAILURES as exc:
            await member.close()
            raise self._broker_error(f"starting a member of group {group!r}", exc) from exc
        return member

    async def _shut_down(self) -> None:
        # Every member stops (in-flight handlers get close_timeout, then are cancelled
        # and their events nacked); the connection is drained and closed.
        await asyncio.gather(*(m.close() for m in list(self._members)))
        async with self._connect_lock:  # a connect in progress finishes first
            conn, self._conn = self._conn, None
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if conn is not None:
            try:
                await conn.nc.drain()
            except NATS_FAILURES as exc:
                logger.warning("draining the NATS connection to %s failed: %s", self._where, exc)
                with contextlib.suppress(*NATS_FAILURES):
                    await conn.nc.close()

    async def _list_dead_letters(self) -> list[DeadLetter]:
        # Read from <stream>_DLQ without consuming -- malformed bodies too.
        conn = await self._connection()
        return [dead for _, _, dead in await self._read_dead_letters(conn, None)]

    async def _replay(self, group: str | None) -> int:
        # Each letter is republished to its group's replay subject -- reaching that group
        # only -- then deleted from the DLQ; entries that are not valid events stay.
        conn = await self._connection()
        replayed = 0
        ready: set[str] = set()
        for seq, raw, dead in await self._read_dead_letters(conn, group):
            if dead.malformed:
                continue
            subject = self._topology.replay_subject(dead.group)
            if dead.group not in ready:
                # Interest retention drops a message nobody reads: make sure the group's
                # consumer exists (and reads its replay subject) before publishing.
                await self._bind(conn, dead.group, {subject})
                ready.add(dead.group)
            try:
                await conn.js.publish(
                    subject,
                    raw,
                    timeout=REQUEST_TIMEOUT,
                    stream=self.stream,
                    # Deduplicates a replay repeated after a crash between publish and delete.
                    headers={MSG_ID: f"replay:{self.dlq_stream}:{seq}", **event_headers(dead.event)},
                )
                await conn.js.delete_msg(self.dlq_stream, seq)
            except NATS_FAILURES as exc:
                raise self._broker_error(f"replaying dead letter {seq} of group {dead.group!r}", exc) from exc
            replayed += 1
        return replayed

    async def _until_idle(self) -> None:
        # JetStream has no idle notification: poll the consumers this bus bound.
        conn = await self._connection()
        try:
            while True:
                busy = [f"{m.group!r} (handling)" for m in self._members if m.holding()]
                for group, consumers in self._topology.bound.items():
                    for name in sorted(consumers):
                        info = await conn.js.consumer_info(self.stream, name)
                        if info.num_pending or info.num_ack_pending:
                            busy.append(
                                f"{group!r} consumer {name} ({info.num_pending} pending,"
                                f" {info.num_ack_pending} unacked)"
                            )
                self._busy = busy
                if not busy:
                    return
                await asyncio.sleep(_IDLE_POLL)
        except nats.errors.Error as exc:  # nats' timeouts subclass it: translated, not taken for ours
            raise self._broker_error("reading consumer state", exc) from exc

    def _work_left(self) -> str:
        return "; ".join(self._busy)

    # -- connection ------------------------------------------------------------------

    async def _connection(self) -> Connection:
        conn = self._conn
        if conn is not None:
            return conn
        async with self._connect_lock:
            if self._closed:
                raise BusClosed("the bus is closed; open a new bus")
            if self._conn is None:
                self._conn = await self._connect()
                self._heartbeat = asyncio.create_task(
                    keep_alive(self._members, self._topology), name=f"jetstream-heartbeat:{self.stream}"
                )
            return self._conn

    async def _connect(self) -> Connection:
        last_error: list[BaseException] = []
        # "connecting" until the first connect succeeds, "closing" once we close it ourselves.
        phase = "connecting"
        reported = False  # one warning per outage, not one per reconnect attempt

        async def on_error(exc: Exception) -> None:
            nonlocal reported
            last_error[:] = [exc]
            # A failed first connect is reported by the BusError it raises.
            loud = phase == "connected" and not reported
            reported = reported or loud
            logger.log(
                logging.WARNING if loud else logging.DEBUG,
                "NATS connection to %s: %s",
                self._where,
                describe_failure(exc),
            )

        async def on_disconnect() -> None:
            nonlocal reported
            if phase == "connected" and not self._closed:  # our own close disconnects too
                reported = True
                logger.warning("disconnected from NATS at %s; reconnecting until it is back", self._where)

        async def on_reconnect() -> None:
            nonlocal reported
            reported = False
            logger.warning("reconnected to NATS at %s", self._where)

        try:
            nc = await nats.connect(
                self.url,
                name=f"agent-coordinator:{self.stream}",
                connect_timeout=2,
                reconnect_time_wait=0.5,
                # One retry on the first connect so a dead server fails fast...
                max_reconnect_attempts=1,
                drain_timeout=max(self.close_timeout, 1.0),
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
        except NATS_FAILURES as exc:
            cause = last_error[0] if isinstance(exc, nats.errors.NoServersError) and last_error else exc
            raise connect_error(self._where, cause, password=self._password) from exc
        # ...and once connected, reconnect for as long as it takes (a broker restart
        # must not kill a long-running agent process). nats-py reads this per attempt.
        nc.options["max_reconnect_attempts"] = -1
        phase = "connected"
        js = nc.jetstream(timeout=REQUEST_TIMEOUT)
        try:
            try:
                layout = await self._topology.ensure_streams(nc, js)
            except NATS_FAILURES as exc:
                raise self._broker_error("creating the streams", exc) from exc
        except BaseException:
            phase = "closing"
            with contextlib.suppress(*NATS_FAILURES):
                await nc.close()
            raise
        return Connection(nc=nc, js=js, layout=layout)

    async def _bind(self, conn: Connection, group: str, subjects: set[str]) -> list[str]:
        try:
            return await self._topology.bind(conn, group, subjects)
        except NATS_FAILURES as exc:
            raise self._broker_error(f"binding group {group!r}", exc) from exc

    async def _read_dead_letters(self, conn: Connection, group: str | None) -> list[tuple[int, bytes, DeadLetter]]:
        try:
            return await read_dead_letters(conn, self._topology, group)
        except NATS_FAILURES as exc:
            raise self._broker_error("reading the dead letters", exc) from exc

    def _broker_error(self, action: str, exc: BaseException) -> BusError:
        reconnecting = self._conn is not None and self._conn.nc.is_reconnecting
        return broker_error(
            action, exc, where=self._where, password=self._password, stream=self.stream, reconnecting=reconnecting
        )
