"""How the NATS JetStream bus pulls, settles, redelivers and dead-letters.

A :class:`Member` is one subscriber: ``concurrency`` :class:`PullWorker` s per
consumer it reads, each pulling one message at a time into an inbox of its own and
then waiting for one of the member's handler slots. A handler that returns acks; one
that raises naks with a backoff, or -- after ``max_deliveries`` -- has its message
published to the group's dead-letter subject (confirmed) before the original is
acked. Held messages are kept alive with ``in_progress`` (:func:`keep_alive`).
docs/brokers/nats.md ("Delivery", "Dead letters and replay") gives the rules and
their reasons.

Messages are CloudEvents in the NATS binding's structured content mode
(:func:`event_headers`). Members work on their bus's internals (the same package):
its counters, options and topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Collection, Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, unquote

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import api as js_api

from agent_coordinator.bus.backend import stop_workers
from agent_coordinator.bus.base import DeadLetter, Handler
from agent_coordinator.bus.nats.errors import NATS_FAILURES, describe_failure
from agent_coordinator.bus.nats.topology import Connection, StreamTopology, token
from agent_coordinator.core.errors import MalformedEvent
from agent_coordinator.core.events import CLOUDEVENTS_CONTENT_TYPE, Event, parse_event

if TYPE_CHECKING:
    from agent_coordinator.bus.nats.bus import JetStreamBus

__all__ = ["MSG_ID", "REQUEST_TIMEOUT", "Member", "event_headers", "keep_alive", "read_dead_letters"]

logger = logging.getLogger("agent_coordinator.bus.nats")

# How long one pull request waits on the server; a lost request (reconnect) is
# noticed after this plus the grace, so it bounds the stall after a broker restart.
_PULL_EXPIRES: Final = 5.0
_PULL_GRACE: Final = 1.0
# Back-off of a worker after an error it cannot act on (broker down, odd status).
_WORKER_BACKOFF: Final = 1.0
# Timeout of one JetStream API request (stream/consumer info, publish ack).
REQUEST_TIMEOUT: Final = 5.0
_MAX_REDELIVERY_DELAY: Final = 300.0
_MAX_ERROR_CHARS: Final = 2000

MSG_ID: Final = "Nats-Msg-Id"
_HDR_GROUP: Final = "Coordinator-Group"
_HDR_ERROR: Final = "Coordinator-Error"
_HDR_DELIVERIES: Final = "Coordinator-Deliveries"
_HDR_SUBJECT: Final = "Coordinator-Subject"
_HDR_STATUS: Final = "Status"
_HDR_CONTENT_TYPE: Final = "Content-Type"
_HDR_TRACEPARENT: Final = "traceparent"
# What every copy of an event (dead letter, replay) carries on from the original.
_EVENT_HEADERS: Final = (_HDR_CONTENT_TYPE, _HDR_TRACEPARENT)


def _quote_header(value: str) -> str:
    # Header values may carry neither CR/LF nor (reliably) non-ASCII or edge spaces:
    # percent-encode, keeping the common punctuation readable in `nats stream view`.
    return quote(value, safe=":/()[],;='!*@$&+")


def event_headers(event: Event) -> dict[str, str]:
    """The CloudEvents structured-mode headers of ``event``'s message (see the module docstring)."""
    return {_HDR_CONTENT_TYPE: CLOUDEVENTS_CONTENT_TYPE, _HDR_TRACEPARENT: event.traceparent}


def _status(msg: Msg) -> str | None:
    return msg.headers.get(_HDR_STATUS) if msg.headers else None


class Member:
    """One subscriber: pull workers on the group's consumers sharing ``concurrency``
    handler slots."""

    def __init__(self, bus: JetStreamBus, conn: Connection, group: str, handler: Handler, concurrency: int) -> None:
        self.bus = bus
        self.conn = conn
        self.group = group
        self.handler = handler
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.closing = False
        self.workers: list[PullWorker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()

    async def start(self, workers_per_consumer: Mapping[str, int]) -> None:
        for consumer, count in workers_per_consumer.items():
            for _ in range(count):
                inbox = self.conn.nc.new_inbox()
                sub = await self.conn.nc.subscribe(inbox)
                self.workers.append(PullWorker(self, consumer, inbox, sub))
        if self.closing:  # the bus closed while the inboxes were being made
            return
        self._tasks = [
            asyncio.create_task(w.run(), name=f"jetstream-worker:{self.group}:{w.consumer}:{i}")
            for i, w in enumerate(self.workers)
        ]

    def holding(self) -> bool:
        return any(w.current is not None for w in self.workers)

    def held_messages(self) -> list[Msg]:
        return [w.current for w in self.workers if w.current is not None]

    async def close(self) -> None:
        """Stop pulling; wait (up to the bus's ``close_timeout``) for running handlers,
        then cancel the stragglers, whose events are nacked back to the group."""
        if self.closing:
            await self._closed.wait()
            return
        self.closing = True
        busy = {task for worker, task in zip(self.workers, self._tasks, strict=True) if worker.busy}
        try:
            await stop_workers(
                self._tasks, busy=busy.__contains__, grace=self.bus.close_timeout, group=self.group, logger=logger
            )
        finally:
            self.bus._members.discard(self)
            self._closed.set()

    # -- one delivery: ack, nak with backoff, or dead-letter ---------------------------

    async def deliver(self, msg: Msg) -> None:
        """Hand ``msg`` to the handler and settle it: ack, nak with backoff, or
        dead-letter. (If cancelled -- a close that timed out -- the worker naks it.)"""
        bus = self.bus
        deliveries = msg.metadata.num_delivered
        bus._stats.delivered += 1
        try:
            event = parse_event(msg.data)
        except MalformedEvent as exc:
            logger.error("dead-lettering a malformed message on %s for group %r: %s", msg.subject, self.group, exc)
            await self._dead_letter(msg, describe_failure(exc), deliveries)
            return
        try:
            await self.handler(event)
        except Exception as exc:
            if bus._dead_letter_now(exc, event_id=event.id, group=self.group, deliveries=deliveries):
                await self._dead_letter(msg, describe_failure(exc), deliveries)
                return
            bus._stats.redelivered += 1
            await self._settle(msg.nak(delay=self._backoff(deliveries)), "nak")
        else:
            bus._stats.acked += 1
            await self._settle(msg.ack(), "ack")

    def _backoff(self, deliveries: int) -> float:
        return min(self.bus.redelivery_delay * 2.0 ** (deliveries - 1), _MAX_REDELIVERY_DELAY)

    async def _dead_letter(self, msg: Msg, error: str, deliveries: int) -> None:
        """Publish ``msg`` to the group's DLQ subject (confirmed), then ack the original;
        if the DLQ publish fails, nak it so a later delivery tries again."""
        bus, conn = self.bus, self.conn
        original_seq = msg.metadata.sequence.stream
        carried: dict[str, str] = msg.headers or {}
        headers: dict[str, str] = {
            # The original's content type and trace context (a malformed body may have neither).
            **{name: carried[name] for name in _EVENT_HEADERS if name in carried},
            # A dead-lettering retried after a crash between publish and ack is stored once.
            MSG_ID: f"dlq:{token(self.group)}:{original_seq}",
            _HDR_GROUP: _quote_header(self.group),
            _HDR_ERROR: _quote_header(error[:_MAX_ERROR_CHARS]),
            _HDR_DELIVERIES: str(deliveries),
            _HDR_SUBJECT: msg.subject,
        }
        try:
            await conn.js.publish(
                bus._topology.dlq_subject(self.group),
                msg.data,
                timeout=REQUEST_TIMEOUT,
                stream=bus.dlq_stream,
                headers=headers,
            )
        except NATS_FAILURES as exc:
            logger.error(
                "could not dead-letter message %d of group %r (%s); it will be redelivered",
                original_seq,
                self.group,
                describe_failure(exc),
            )
            bus._stats.redelivered += 1
            await self._settle(msg.nak(delay=self._backoff(deliveries)), "nak")
            return
        bus._stats.dead_lettered += 1
        await self._settle(msg.ack(), "ack")

    async def _settle(self, verdict: Awaitable[None], what: str) -> None:
        try:
            await verdict
        except NATS_FAILURES as exc:
            # The server will redeliver after ack_wait: at-least-once, not lost.
            logger.warning("could not %s a message of group %r: %s", what, self.group, describe_failure(exc))


class PullWorker:
    """Pulls one message at a time from one consumer into its own inbox, then runs it
    through the bus when a handler slot of its member is free."""

    def __init__(self, member: Member, consumer: str, inbox: str, sub: NatsSubscription) -> None:
        self.member = member
        self.consumer = consumer
        self.sub = sub
        self.inbox = inbox
        self.busy = False  # holds a handler slot: close waits for it instead of cancelling
        self.current: Msg | None = None  # held (waiting for a slot or being handled): kept alive
        self._outstanding = 0  # pull requests the server may still answer
        self._failing = False  # warn once per streak of failed pulls, not once a second
        # The pull request of JetStream's wire API (what nats-py's fetch sends); the bus
        # makes its own so that each worker owns its inbox and can retire it cleanly.
        self._next_subject = f"{js_api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{member.bus._topology.stream}.{consumer}"
        self._request = json.dumps({"batch": 1, "expires": int(_PULL_EXPIRES * 1e9)}).encode()

    async def run(self) -> None:
        member = self.member
        try:
            while not member.closing:
                try:
                    msg = await self._pull()
                except NATS_FAILURES as exc:
                    if member.conn.nc.is_closed:
                        return
                    self._pull_failed(f"failed ({describe_failure(exc)})")
                    await asyncio.sleep(_WORKER_BACKOFF)
                    continue
                if msg is None:
                    continue
                self.current = msg
                try:
                    async with member.slots:
                        if member.closing:
                            await msg.nak()
                            return
                        self.busy = True
                        await member.deliver(msg)
                except asyncio.CancelledError:
                    # A close: waiting for a slot, or a handler past close_timeout. Not
                    # settled, so give it back to the group now rather than after ack_wait.
                    if not msg.is_acked:
                        with contextlib.suppress(*NATS_FAILURES):
                            await msg.nak()
                    raise
                finally:
                    self.current = None
                    self.busy = False
        finally:
            await self._retire()

    async def _pull(self) -> Msg | None:
        """The next message for this worker, or None when the pull request ended empty."""
        loop = asyncio.get_running_loop()
        if self._outstanding == 0 and self.sub.pending_msgs == 0:
            await self.member.conn.nc.publish(self._next_subject, self._request, reply=self.inbox)
            self._outstanding = 1
        deadline = loop.time() + _PULL_EXPIRES + _PULL_GRACE
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._outstanding = 0  # lost with a dropped connection: ask again
                return None
            try:
                msg = await self.sub.next_msg(timeout=remaining)
            except nats.errors.TimeoutError:
                self._outstanding = 0
                return None
            status = _status(msg)
            if status is None:
                self._outstanding = max(0, self._outstanding - 1)
                self._failing = False
                if not (msg.reply or "").startswith("$JS.ACK."):
                    logger.warning("ignoring a non-JetStream message on a pull inbox of group %r", self.member.group)
                    return None
                return msg
            if status == "100":  # idle heartbeat
                continue
            self._outstanding = max(0, self._outstanding - 1)
            if status in ("404", "408"):  # no messages / request expired: pull again
                return None
            # E.g. 409 Consumer Deleted (an operator removed the group), 503 (JetStream down).
            description = msg.headers.get("Description", "") if msg.headers else ""
            self._pull_failed(f"was answered {status} {description}")
            await asyncio.sleep(_WORKER_BACKOFF)
            return None

    def _pull_failed(self, what: str) -> None:
        logger.log(
            logging.DEBUG if self._failing else logging.WARNING,
            "pulling from consumer %s of group %r %s; retrying every %ss",
            self.consumer,
            self.member.group,
            what,
            _WORKER_BACKOFF,
        )
        self._failing = True

    async def _retire(self) -> None:
        """Unsubscribe the inbox with a round trip (``drain``: after it the server sends
        nothing more) and nak what it had already sent, so nothing waits for ack_wait."""
        nc = self.member.conn.nc
        if nc.is_closed or nc.is_draining:
            return

        async def nak_leftovers() -> None:
            while True:
                msg = await self.sub.next_msg(timeout=None)
                if _status(msg) is None:
                    with contextlib.suppress(*NATS_FAILURES):
                        await msg.nak()

        naker = asyncio.create_task(nak_leftovers())
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await self.sub.drain()  # type: ignore[no-untyped-call]
        except NATS_FAILURES as exc:
            logger.debug("unsubscribing a pull inbox of group %r: %s", self.member.group, exc)
        finally:
            naker.cancel()
            with contextlib.suppress(asyncio.CancelledError, *NATS_FAILURES):
                await naker


async def keep_alive(members: Collection[Member], topology: StreamTopology) -> None:
    """Send ``in_progress`` for every message ``members`` hold every third of the
    shortest ack deadline, so slow handlers are not redelivered behind their back."""
    while True:
        period = min([topology.ack_wait, *topology.ack_waits.values()]) / 3
        await asyncio.sleep(period)
        for member in list(members):
            for msg in member.held_messages():
                with contextlib.suppress(*NATS_FAILURES):
                    await msg.in_progress()


async def read_dead_letters(
    conn: Connection, topology: StreamTopology, group: str | None
) -> list[tuple[int, bytes, DeadLetter]]:
    """The dead letters of ``group`` (all when None) as (DLQ sequence, body, dead
    letter), oldest first, read without consuming them. Server failures pass
    through."""
    subject = topology.dlq_subject(group)
    entries: list[tuple[int, bytes, DeadLetter]] = []
    seq = 1
    while True:
        try:
            raw = await conn.js.get_msg(topology.dlq_stream, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return entries
        assert raw.seq is not None
        seq = raw.seq + 1
        entries.append((raw.seq, raw.data or b"", _parse_dead_letter(raw, topology.dlq_stream)))


def _parse_dead_letter(raw: js_api.RawStreamMsg, dlq_stream: str) -> DeadLetter:
    headers = raw.headers or {}
    group = unquote(headers.get(_HDR_GROUP, ""))
    error = unquote(headers.get(_HDR_ERROR, "")) or "unknown error"
    try:
        deliveries = int(headers.get(_HDR_DELIVERIES, "0"))
    except ValueError:
        deliveries = 0  # written by someone else: the count is unknown, the letter is still listed
    body = raw.data or b""
    try:
        event = parse_event(body)
    except MalformedEvent:
        return DeadLetter.of_malformed_body(
            body,
            group=group,
            error=error,
            deliveries=deliveries,
            source="bus/nats",
            message_id=f"{dlq_stream}:{raw.seq}",
            time=raw.time,
        )
    return DeadLetter(event=event, group=group, error=error, deliveries=deliveries)
