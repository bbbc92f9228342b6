"""The NATS JetStream event bus: :class:`JetStreamBus`, a broker backend of :mod:`agent_coordinator.bus.base`.

It passes the contract suite with ``drains_on_close=False``: what a closing bus has
not handled stays in JetStream for the next member of its group, in this process or
another. Everything below is a choice made to honour the contract on JetStream;
where JetStream cannot, the limitation is stated.

Layout on the server
--------------------

Stream ``<stream>`` (interest retention, file storage)
    Subjects ``<prefix>.<event type>`` (publish) and ``<prefix>-replay.<group>``
    (replay, see below). *Interest* retention is the contract's routing rule made
    storage: a message is kept while a bound group has not acked it, and an event of
    a type no group is bound to is dropped on arrival -- so events published before
    a group was bound are never delivered to it.
Stream ``<stream>_DLQ`` (limits retention)
    Subjects ``<prefix>-dlq.<group>``: the dead letters, kept until replayed or
    deleted by an operator.
One durable pull consumer per group (servers >= 2.10), or one per group and subject
    A group is a durable consumer with explicit ack, created with deliver policy
    ``new`` when the group is first bound (a durable consumer then resumes where it
    left off, whoever pulls from it). NATS 2.10 lets one consumer filter on several
    subjects (``filter_subjects``): there the group is *one* consumer whose filter is
    the union of its members' types plus its replay subject, updated when a member
    adds types. NATS 2.9 (Debian's, the CI machines') allows one filter subject per
    consumer, so there a group is one consumer per subject -- each created with
    deliver policy ``new`` at the moment that type is bound, which matches the
    contract exactly, but FIFO order then holds per event type, not across the
    types of a group. The layout is chosen when the stream is created and recorded
    in its description, so upgrading the server never strands events in the
    consumers of the other layout.

Names outside ``[A-Za-z0-9_-]`` (and names starting with ``_``) are hex-encoded
into subject tokens and consumer names, so any event type or group name is safe.

Delivery
--------

A member runs ``concurrency`` pull workers per consumer it reads (one for the
replay consumer of the per-subject layout), each with its own inbox, each pulling one message at a
time and then waiting for one of the member's ``concurrency`` handler slots: at
most ``concurrency`` handlers run at once, and a single worker (one member,
``concurrency=1``) sees its consumer's order. Members of a group compete because
they pull from the same durable consumers.

While a message is held -- waiting for a slot or in its handler -- the bus sends
``in_progress`` for it every ``ack_wait / 3`` seconds, so a slow handler (a model
call) never hits the ack deadline and is not redelivered behind its back.

Redelivery and dead letters
---------------------------

A handler that returns acks its message. A handler that raises naks it with a
delay of ``redelivery_delay * 2**(n-1)`` seconds (``n`` = the delivery number the
server reports, ``metadata.num_delivered``; capped at 5 minutes), so JetStream
redelivers it to any member later. When the failing delivery is number
``max_deliveries`` or more, the message is instead published to
``<prefix>-dlq.<group>`` with the group, the error (``"Type: message"``) and the
delivery count in headers, the DLQ publish is confirmed, and only then is the
original acked. The consumer's own ``max_deliver`` is left unlimited on purpose:
with it, a message whose last delivery was cancelled by a close would be dropped
by the server without ever reaching the DLQ. A body that is not a valid event is
dead-lettered at once (it cannot get better), and so is an event whose handler
raised :class:`~agent_coordinator.core.errors.MalformedEvent` (missing data, a bad signature),
with that error, at its first failure. :meth:`JetStreamBus.dead_letters` lists a
malformed body like any dead letter, with its reason: a :class:`~agent_coordinator.bus.base.DeadLetter`
whose ``body`` holds the raw bytes and whose stand-in event is of type
:data:`~agent_coordinator.bus.base.MALFORMED_MESSAGE_TYPE`; replay leaves it in the DLQ stream (it
would only fail again) for an operator (``nats stream view <stream>_DLQ``).

Replay
------

:meth:`JetStreamBus.replay_dead_letters` cannot republish to ``<prefix>.<type>``:
that would deliver the event again to *every* group bound to the type. It
publishes to the group's own ``<prefix>-replay.<group>`` subject instead, which
only that group's consumer reads, then deletes the DLQ entry. A replayed event
is a new message, so it starts with a fresh delivery count.

Publish, dedup and errors
-------------------------

Messages are CloudEvents in the NATS binding's *structured* content mode: the
payload is ``event.to_json()`` (the JSON event format), with the headers
``Content-Type: application/cloudevents+json`` (how the binding tells structured
from binary on NATS >= 2.2) and ``traceparent`` (W3C trace context, so tracing
middleware need not parse payloads); dead letters and replays keep both. Why
structured and not binary: docs/architecture.md ("Broker backends").

:meth:`JetStreamBus.publish` waits for the stream's PubAck (the broker confirm)
and sets ``Nats-Msg-Id`` to the event id: a publish retried within the stream's
duplicate window (2 minutes by default) -- or the same deterministic event
emitted twice by a redelivered handler -- is stored once. Every NATS failure
becomes a :class:`~agent_coordinator.core.errors.BusError` naming the server (``host:port``,
never credentials) and what to check.

Options in the URL
------------------

:meth:`JetStreamBus.from_url` (what ``open_bus`` and so ``coordinator worker --bus
URL`` call) reads the bus's options from the URL's query, e.g.
``nats://127.0.0.1:4222?stream=SHOP&subject_prefix=shop&ack_wait=10``: a
deployment, or a test, gets streams of its own from the command line.

Close and reconnection
----------------------

:meth:`Subscription.close` stops that member's workers (idle ones at once, busy ones
after their handler, bounded by ``close_timeout``, then cancelled and nacked),
unsubscribes its inboxes with a round trip to the server and naks whatever the
server had already sent them; the group's consumers stay, so a later member
continues where the group left off. :meth:`JetStreamBus.close` does this for every
member and drains the connection. The client reconnects by itself after a broker
restart; pull requests lost with the old connection are re-issued within
``_PULL_EXPIRES`` seconds.

Known limits: a message handed to an inbox in the microseconds between the
server's interest check and its unsubscribe is redelivered only after ``ack_wait``;
a message fetched but never handed to a handler (member closing) still counts as a
delivery in ``num_delivered``; on servers >= 2.10 two *processes* adding different
types to the same group at the same instant can race on the consumer update (one
binding may be lost -- subscribe again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Collection, Mapping
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext
from nats.js import api as js_api

from agent_coordinator.bus.base import BusStats, ClosesOnExit, DeadLetter, Handler, Subscription, subscription_types
from agent_coordinator.core.errors import BusClosed, BusError, MalformedEvent
from agent_coordinator.core.events import CLOUDEVENTS_CONTENT_TYPE, Event, parse_event

__all__ = ["JetStreamBus"]

logger = logging.getLogger(__name__)

Layout = Literal["per-group", "per-subject"]

# How long one pull request waits on the server; a lost request (reconnect) is
# noticed after this plus the grace, so it bounds the stall after a broker restart.
_PULL_EXPIRES: Final = 5.0
_PULL_GRACE: Final = 1.0
# Back-off of a worker after an error it cannot act on (broker down, odd status).
_WORKER_BACKOFF: Final = 1.0
# Timeout of one JetStream API request (stream/consumer info, publish ack).
_REQUEST_TIMEOUT: Final = 5.0
_MAX_REDELIVERY_DELAY: Final = 300.0
_MAX_ERROR_CHARS: Final = 2000
_IDLE_POLL: Final = 0.02

_HDR_MSG_ID: Final = "Nats-Msg-Id"
_HDR_GROUP: Final = "Coordinator-Group"
_HDR_ERROR: Final = "Coordinator-Error"
_HDR_DELIVERIES: Final = "Coordinator-Deliveries"
_HDR_SUBJECT: Final = "Coordinator-Subject"
_HDR_STATUS: Final = "Status"
_HDR_CONTENT_TYPE: Final = "Content-Type"
_HDR_TRACEPARENT: Final = "traceparent"
# What every copy of an event (dead letter, replay) carries on from the original.
_EVENT_HEADERS: Final = (_HDR_CONTENT_TYPE, _HDR_TRACEPARENT)

_LAYOUT_MARK = re.compile(r"consumer layout: (per-group|per-subject)")
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9-][A-Za-z0-9_-]*")
_VALID_STREAM = re.compile(r"[A-Za-z0-9_-]+")
_VALID_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
# The API's "already exists" answers when two processes create the same thing at once.
_ALREADY_EXISTS: Final = frozenset({10058, 10148, 10013})
_SUBJECTS_OVERLAP: Final = 10065

_NatsFailure = (nats.errors.Error, OSError, TimeoutError)

# Options JetStreamBus.from_url reads from the URL's query, with their types.
_URL_OPTIONS: Final[dict[str, type]] = {
    "stream": str,
    "subject_prefix": str,
    "max_deliveries": int,
    "redelivery_delay": float,
    "ack_wait": float,
    "close_timeout": float,
}


def _token(name: str) -> str:
    """``name`` as one subject token / consumer-name part: verbatim when it is plain
    ASCII, else ``_`` + hex of its UTF-8 (plain tokens never start with ``_``, so the
    mapping is one-to-one)."""
    if _SAFE_TOKEN.fullmatch(name):
        return name
    return "_" + name.encode().hex()


def _quote_header(value: str) -> str:
    # Header values may carry neither CR/LF nor (reliably) non-ASCII or edge spaces:
    # percent-encode, keeping the common punctuation readable in `nats stream view`.
    return quote(value, safe=":/()[],;='!*@$&+")


def _event_headers(event: Event) -> dict[str, str]:
    """The CloudEvents structured-mode headers of ``event``'s message (see the module docstring)."""
    return {_HDR_CONTENT_TYPE: CLOUDEVENTS_CONTENT_TYPE, _HDR_TRACEPARENT: event.traceparent}


def _status(msg: Msg) -> str | None:
    return msg.headers.get(_HDR_STATUS) if msg.headers else None


def _describe_failure(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclasses.dataclass(slots=True)
class _Connection:
    nc: NatsClient
    js: JetStreamContext
    layout: Layout


class JetStreamBus(ClosesOnExit):
    """An :class:`~agent_coordinator.bus.base.EventBus` on NATS JetStream (see the module docstring for
    the layout on the server and the delivery, dead-letter and replay design).

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

    Nothing is connected until first used; :meth:`connect` does it eagerly.
    """

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
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("nats", "tls"):
            raise ValueError(f"a JetStream bus URL starts with nats:// or tls:// (got {parts.scheme or 'no'} scheme)")
        if not _VALID_STREAM.fullmatch(stream):
            raise ValueError(f"stream must be letters, digits, '_' or '-' (got {stream!r})")
        if not _VALID_PREFIX.fullmatch(subject_prefix):
            raise ValueError(
                f"subject_prefix must be dot-separated tokens of letters, digits, '_' or '-' (got {subject_prefix!r})"
            )
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1 (got {max_deliveries})")
        if redelivery_delay < 0:
            raise ValueError(f"redelivery_delay must be >= 0 seconds (got {redelivery_delay})")
        if ack_wait <= 0:
            raise ValueError(f"ack_wait must be > 0 seconds (got {ack_wait})")
        if close_timeout < 0:
            raise ValueError(f"close_timeout must be >= 0 seconds (got {close_timeout})")
        self.url = url
        self.stream = stream
        self.dlq_stream = f"{stream}_DLQ"
        self.subject_prefix = subject_prefix
        self.max_deliveries = max_deliveries
        self.redelivery_delay = redelivery_delay
        self.ack_wait = ack_wait
        self.close_timeout = close_timeout
        # For messages: the server without the credentials a URL may carry.
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 4222}"
        self._conn: _Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._bind_lock = asyncio.Lock()
        self._members: set[_Member] = set()
        self._bound: dict[str, set[str]] = {}  # group -> names of its consumers this bus bound
        self._ack_waits: dict[str, float] = {}  # consumer -> its actual ack_wait (another bus may have made it)
        self._heartbeat: asyncio.Task[None] | None = None
        self._stats = BusStats()
        self._closed = False
        self._close_finished = asyncio.Event()

    @classmethod
    def from_url(cls, url: str, *, namespace: str | None = None, **options: Any) -> JetStreamBus:
        """The bus for ``url`` with keyword ``options`` (what :func:`agent_coordinator.bus.open_bus` calls).

        ``namespace`` (one application's name, :func:`agent_coordinator.bus.bus_namespace`) sets the
        default names: stream ``<namespace>`` (dead letters ``<namespace>_DLQ``) and
        subjects ``<namespace>.<type>``, so that two applications on one server
        share neither a stream nor a subject. Without it the constructor's defaults
        apply.

        The URL's query may set this bus's options, so that a command line (``coordinator
        worker --bus URL``) can give each deployment or test its own stream::

            nats://127.0.0.1:4222?stream=SHOP&subject_prefix=shop&ack_wait=10

        Recognised: ``stream``, ``subject_prefix``, ``max_deliveries``,
        ``redelivery_delay``, ``ack_wait``, ``close_timeout``; they are removed from the
        URL (nats-py takes no query options, so any other parameter is an error).
        Keyword ``options`` win over the URL's, and both over the namespace's names.
        Raises :class:`BusError` for an unknown option or a value of the wrong type or
        out of range.
        """
        parts = urlsplit(url)
        from_query: dict[str, Any] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            kind = _URL_OPTIONS.get(key)
            if kind is None:
                raise BusError(
                    f"unknown NATS bus URL option {key!r}; the query may set: {', '.join(sorted(_URL_OPTIONS))}"
                )
            try:
                from_query[key] = kind(value)
            except ValueError:
                raise BusError(
                    f"bus URL option {key}={value!r} is not {'an integer' if kind is int else 'a number'}"
                ) from None
        named = {"stream": namespace, "subject_prefix": namespace} if namespace else {}
        try:
            return cls(urlunsplit(parts._replace(query="")), **{**named, **from_query, **options})
        except ValueError as exc:
            raise BusError(f"invalid NATS bus option: {exc}") from exc

    # -- the EventBus protocol -------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Store ``event`` in the stream and wait for the PubAck (see
        :meth:`agent_coordinator.bus.base.EventBus.publish`); ``Nats-Msg-Id`` = ``event.id`` dedups retries."""
        if self._closed:
            raise BusClosed(f"cannot publish {event.type} {event.id}: the bus is closed; open a new bus to publish")
        try:
            payload = event.to_json().encode()
        except (TypeError, ValueError) as exc:
            raise BusError(
                f"cannot publish {event.type} {event.id}: its data is not JSON-serialisable ({exc});"
                " put only JSON types (str, int, float, bool, None, lists, dicts) in event.data"
            ) from exc
        conn = await self._connection()
        try:
            await conn.js.publish(
                self._event_subject(event.type),
                payload,
                timeout=_REQUEST_TIMEOUT,
                stream=self.stream,
                headers={_HDR_MSG_ID: event.id, **_event_headers(event)},
            )
        except _NatsFailure as exc:
            raise self._broker_error(f"publishing {event.type} {event.id}", exc) from exc
        self._stats.published += 1

    async def subscribe(
        self,
        group: str,
        types: Collection[str],
        handler: Handler,
        *,
        concurrency: int = 1,
    ) -> Subscription:
        """Bind ``group`` to ``types`` on the server, then start a member pulling from
        the group's consumers (see :meth:`agent_coordinator.bus.base.EventBus.subscribe`)."""
        wanted = subscription_types(group, types, concurrency, closed=self._closed)
        conn = await self._connection()
        subjects = {self._event_subject(t) for t in wanted} | {self._replay_subject(group)}
        consumers = await self._bind(conn, group, subjects)
        if self._closed:
            raise BusClosed(f"cannot subscribe group {group!r}: the bus closed meanwhile")
        member = _Member(self, conn, group, handler, concurrency)
        self._members.add(member)
        # The per-subject layout gives the replay subject a consumer of its own; it is
        # rarely used, so one worker per member reads it.
        replay_consumer = (
            self._subject_consumer_name(group, self._replay_subject(group)) if conn.layout == "per-subject" else None
        )
        try:
            await member.start({c: 1 if c == replay_consumer else concurrency for c in consumers})
        except _NatsFailure as exc:
            await member.close()
            raise self._broker_error(f"starting a member of group {group!r}", exc) from exc
        return member

    async def close(self) -> None:
        """Stop publishes and subscribes, stop every member (in-flight handlers get
        ``close_timeout``, then are cancelled and their events nacked), drain and close
        the connection. Unhandled events stay in the stream for the groups' next
        members. Closing twice is a no-op; the second call waits for the first."""
        if self._closed:
            await self._close_finished.wait()
            return
        self._closed = True
        try:
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
                except _NatsFailure as exc:
                    logger.warning("draining the NATS connection to %s failed: %s", self._where, exc)
                    with contextlib.suppress(*_NatsFailure):
                        await conn.nc.close()
        finally:
            self._close_finished.set()

    async def dead_letters(self) -> list[DeadLetter]:
        """The dead letters in ``<stream>_DLQ``, oldest first, read without consuming
        them -- malformed bodies too, as dead letters whose ``body`` holds them.
        Raises :class:`~agent_coordinator.core.errors.BusClosed` after close (the connection is gone)."""
        if self._closed:
            raise BusClosed("cannot read dead letters: the bus is closed; open a new bus on the same stream")
        conn = await self._connection()
        return [dead for _, _, dead in await self._read_dead_letters(conn, None)]

    async def replay_dead_letters(self, group: str | None = None) -> int:
        """Republish the dead letters of ``group`` (all when None) to each one's group
        replay subject -- reaching that group only -- and delete them from the DLQ.
        Returns how many were replayed; entries that are not valid events stay."""
        if self._closed:
            raise BusClosed("cannot replay dead letters: the bus is closed")
        conn = await self._connection()
        replayed = 0
        ready: set[str] = set()
        for seq, raw, dead in await self._read_dead_letters(conn, group):
            if dead.malformed:
                continue
            subject = self._replay_subject(dead.group)
            if dead.group not in ready:
                # Interest retention drops a message nobody reads: make sure the group's
                # consumer exists (and reads its replay subject) before publishing.
                await self._bind(conn, dead.group, {subject})
                ready.add(dead.group)
            try:
                await conn.js.publish(
                    subject,
                    raw,
                    timeout=_REQUEST_TIMEOUT,
                    stream=self.stream,
                    # Deduplicates a replay repeated after a crash between publish and delete.
                    headers={_HDR_MSG_ID: f"replay:{self.dlq_stream}:{seq}", **_event_headers(dead.event)},
                )
                await conn.js.delete_msg(self.dlq_stream, seq)
            except _NatsFailure as exc:
                raise self._broker_error(f"replaying dead letter {seq} of group {dead.group!r}", exc) from exc
            replayed += 1
        return replayed

    def stats(self) -> BusStats:
        """A snapshot of this bus's counters (this process only; see :class:`~agent_coordinator.bus.base.BusStats`)."""
        return dataclasses.replace(self._stats)

    # -- extras ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and create/update the streams now rather than on first use (fail fast).

        Raises :class:`~agent_coordinator.core.errors.BusError` naming the server and what to check."""
        await self._connection()

    # A timeout parameter (not asyncio.timeout around the call) so the error can name the busy consumers.
    async def wait_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Return once no handler of this bus runs and every consumer this bus bound has
        nothing pending, held or awaiting redelivery -- everything published so far is
        acked or dead-lettered. For tests and benchmarks.

        It polls consumer info every 20 ms (JetStream has no idle notification).
        Raises ``TimeoutError`` naming the consumers that still have work, e.g. a group
        whose members all closed."""
        conn = await self._connection()
        busy: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    busy = [f"{m.group!r} (handling)" for m in self._members if m.holding()]
                    for group, consumers in self._bound.items():
                        for name in sorted(consumers):
                            info = await conn.js.consumer_info(self.stream, name)
                            if info.num_pending or info.num_ack_pending:
                                busy.append(
                                    f"{group!r} consumer {name} ({info.num_pending} pending,"
                                    f" {info.num_ack_pending} unacked)"
                                )
                    if not busy:
                        return
                    await asyncio.sleep(_IDLE_POLL)
        except nats.errors.Error as exc:  # before TimeoutError: nats' timeouts subclass it
            raise self._broker_error("reading consumer state", exc) from exc
        except TimeoutError:
            raise TimeoutError(f"JetStream bus not idle after {timeout}s: {'; '.join(busy)}") from None

    # -- connection and server objects -------------------------------------------------

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None:
            return conn
        async with self._connect_lock:
            if self._closed:
                raise BusClosed("the bus is closed; open a new bus")
            if self._conn is None:
                self._conn = await self._connect()
                self._heartbeat = asyncio.create_task(self._keep_alive(), name=f"jetstream-heartbeat:{self.stream}")
            return self._conn

    async def _connect(self) -> _Connection:
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
                _describe_failure(exc),
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
        except _NatsFailure as exc:
            cause = last_error[0] if isinstance(exc, nats.errors.NoServersError) and last_error else exc
            raise BusError(
                f"cannot connect to the NATS server at {self._where} ({_describe_failure(cause)}): check that"
                " nats-server is running there with JetStream enabled (nats-server -js) and that the URL's host,"
                " port and credentials are right"
            ) from exc
        # ...and once connected, reconnect for as long as it takes (a broker restart
        # must not kill a long-running agent process). nats-py reads this per attempt.
        nc.options["max_reconnect_attempts"] = -1
        phase = "connected"
        js = nc.jetstream(timeout=_REQUEST_TIMEOUT)
        try:
            layout = await self._ensure_streams(nc, js)
        except BaseException:
            phase = "closing"
            with contextlib.suppress(*_NatsFailure):
                await nc.close()
            raise
        return _Connection(nc=nc, js=js, layout=layout)

    async def _ensure_streams(self, nc: NatsClient, js: JetStreamContext) -> Layout:
        """Create the event and DLQ streams, or add our subjects to existing ones.
        Returns the consumer layout recorded in the event stream's description."""
        version = nc.connected_server_version
        fresh: Layout = "per-group" if (version.major, version.minor) >= (2, 10) else "per-subject"
        event_stream = js_api.StreamConfig(
            name=self.stream,
            description=f"agent-coordinator events (consumer layout: {fresh})",
            subjects=[f"{self.subject_prefix}.>", f"{self.subject_prefix}-replay.>"],
            retention=js_api.RetentionPolicy.INTEREST,
            storage=js_api.StorageType.FILE,
        )
        dlq_stream = js_api.StreamConfig(
            name=self.dlq_stream,
            description=f"agent-coordinator dead letters of stream {self.stream}",
            subjects=[f"{self.subject_prefix}-dlq.>"],
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
        )
        try:
            info = await self._ensure_stream(js, event_stream)
            await self._ensure_stream(js, dlq_stream)
        except nats.js.errors.ServiceUnavailableError as exc:
            raise BusError(
                f"JetStream is not enabled on the NATS server at {self._where}: start nats-server with -js"
                " (or enable JetStream for this account)"
            ) from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code == _SUBJECTS_OVERLAP:
                raise BusError(
                    f"cannot create stream {self.stream!r} on the NATS server at {self._where}: its subjects"
                    f" ({self.subject_prefix}.>) overlap another stream's; pick another subject_prefix, or use"
                    " that stream's name"
                ) from exc
            raise self._broker_error("creating the streams", exc) from exc
        except _NatsFailure as exc:
            raise self._broker_error("creating the streams", exc) from exc
        mark = _LAYOUT_MARK.search(info.config.description or "")
        # A stream we did not create (no mark) gets the layout this server supports.
        return "per-group" if (mark.group(1) if mark else fresh) == "per-group" else "per-subject"

    @staticmethod
    async def _ensure_stream(js: JetStreamContext, wanted: js_api.StreamConfig) -> js_api.StreamInfo:
        assert wanted.name is not None and wanted.subjects is not None
        try:
            info = await js.stream_info(wanted.name)
        except nats.js.errors.NotFoundError:
            try:
                return await js.add_stream(wanted)
            except nats.js.errors.APIError as exc:
                if exc.err_code not in _ALREADY_EXISTS:
                    raise
                info = await js.stream_info(wanted.name)  # another process won the race
        # Existing stream: only add missing subjects; operators may have tuned the rest.
        current = list(info.config.subjects or [])
        missing = [s for s in wanted.subjects if s not in current]
        if missing:
            info = await js.update_stream(dataclasses.replace(info.config, subjects=current + missing))
        return info

    async def _bind(self, conn: _Connection, group: str, subjects: set[str]) -> list[str]:
        """Make the group's consumers cover ``subjects``; return the consumers to pull from."""
        async with self._bind_lock:  # no read-modify-write race within this bus
            try:
                if conn.layout == "per-group":
                    names = [await self._bind_group_consumer(conn, group, subjects)]
                else:
                    names = [await self._bind_subject_consumer(conn, group, subject) for subject in sorted(subjects)]
            except _NatsFailure as exc:
                raise self._broker_error(f"binding group {group!r}", exc) from exc
        self._bound.setdefault(group, set()).update(names)
        return names

    def _consumer_config(self, name: str, group: str) -> js_api.ConsumerConfig:
        return js_api.ConsumerConfig(
            name=name,
            durable_name=name,
            description=f"agent-coordinator group {group!r}",
            # The contract: events published before the group was bound are not delivered.
            deliver_policy=js_api.DeliverPolicy.NEW,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            # Unlimited on purpose: this bus counts deliveries and dead-letters itself.
            max_deliver=-1,
        )

    async def _bind_group_consumer(self, conn: _Connection, group: str, subjects: set[str]) -> str:
        name = _token(group)
        try:
            info = await conn.js.consumer_info(self.stream, name)
        except nats.js.errors.NotFoundError:
            config = self._consumer_config(name, group)
            config.filter_subjects = sorted(subjects)
            info = await self._add_consumer(conn, config)
        else:
            config = info.config
            current = set(config.filter_subjects or ([config.filter_subject] if config.filter_subject else []))
            if not subjects <= current:
                # On >= 2.10 creating an existing durable with a changed config updates it.
                config.filter_subjects = sorted(current | subjects)
                config.filter_subject = None
                info = await conn.js.add_consumer(self.stream, config)
        self._ack_waits[name] = info.config.ack_wait or self.ack_wait
        return name

    @staticmethod
    def _subject_consumer_name(group: str, subject: str) -> str:
        # Consumer names cannot hold dots; a digest keeps them short and distinct.
        return f"{_token(group)}_{hashlib.sha256(subject.encode()).hexdigest()[:12]}"

    async def _bind_subject_consumer(self, conn: _Connection, group: str, subject: str) -> str:
        name = self._subject_consumer_name(group, subject)
        try:
            info = await conn.js.consumer_info(self.stream, name)
        except nats.js.errors.NotFoundError:
            config = self._consumer_config(name, group)
            config.filter_subject = subject
            config.description = f"agent-coordinator group {group!r}: {subject}"
            info = await self._add_consumer(conn, config)
        self._ack_waits[name] = info.config.ack_wait or self.ack_wait
        return name

    async def _add_consumer(self, conn: _Connection, config: js_api.ConsumerConfig) -> js_api.ConsumerInfo:
        assert config.name is not None
        try:
            return await conn.js.add_consumer(self.stream, config)
        except nats.js.errors.APIError as exc:
            if exc.err_code not in _ALREADY_EXISTS:
                raise
            # Another process won the race.
            info: js_api.ConsumerInfo = await conn.js.consumer_info(self.stream, config.name)
            return info

    # -- delivery ----------------------------------------------------------------------

    async def _deliver(self, member: _Member, msg: Msg) -> None:
        """Hand ``msg`` to the member's handler and settle it: ack, nak with backoff, or
        dead-letter. (If cancelled -- a close that timed out -- the worker naks it.)"""
        deliveries = msg.metadata.num_delivered
        self._stats.delivered += 1
        try:
            event = parse_event(msg.data)
        except MalformedEvent as exc:
            logger.error("dead-lettering a malformed message on %s for group %r: %s", msg.subject, member.group, exc)
            await self._dead_letter(member, msg, _describe_failure(exc), deliveries)
            return
        try:
            await member.handler(event)
        except Exception as exc:
            if isinstance(exc, MalformedEvent):
                # The event itself is at fault (missing data, a bad signature): retrying
                # cannot help, so it is dead-lettered at once with the reason.
                logger.error(
                    "dead-lettering event %s for group %r at once: %s", event.id, member.group, _describe_failure(exc)
                )
                await self._dead_letter(member, msg, _describe_failure(exc), deliveries)
                return
            if deliveries >= self.max_deliveries:
                logger.warning(
                    "dead-lettering event %s for group %r after %d deliveries",
                    event.id,
                    member.group,
                    deliveries,
                    exc_info=exc,
                )
                await self._dead_letter(member, msg, _describe_failure(exc), deliveries)
                return
            logger.debug(
                "handler of group %r failed (delivery %d of %d); redelivering",
                member.group,
                deliveries,
                self.max_deliveries,
                exc_info=exc,
            )
            self._stats.redelivered += 1
            await self._settle(msg.nak(delay=self._backoff(deliveries)), member, "nak")
        else:
            self._stats.acked += 1
            await self._settle(msg.ack(), member, "ack")

    def _backoff(self, deliveries: int) -> float:
        return min(self.redelivery_delay * 2.0 ** (deliveries - 1), _MAX_REDELIVERY_DELAY)

    async def _dead_letter(self, member: _Member, msg: Msg, error: str, deliveries: int) -> None:
        """Publish ``msg`` to the group's DLQ subject (confirmed), then ack the original;
        if the DLQ publish fails, nak it so a later delivery tries again."""
        conn = member.conn
        original_seq = msg.metadata.sequence.stream
        carried: dict[str, str] = msg.headers or {}
        headers: dict[str, str] = {
            # The original's content type and trace context (a malformed body may have neither).
            **{name: carried[name] for name in _EVENT_HEADERS if name in carried},
            # A dead-lettering retried after a crash between publish and ack is stored once.
            _HDR_MSG_ID: f"dlq:{_token(member.group)}:{original_seq}",
            _HDR_GROUP: _quote_header(member.group),
            _HDR_ERROR: _quote_header(error[:_MAX_ERROR_CHARS]),
            _HDR_DELIVERIES: str(deliveries),
            _HDR_SUBJECT: msg.subject,
        }
        try:
            await conn.js.publish(
                self._dlq_subject(member.group),
                msg.data,
                timeout=_REQUEST_TIMEOUT,
                stream=self.dlq_stream,
                headers=headers,
            )
        except _NatsFailure as exc:
            logger.error(
                "could not dead-letter message %d of group %r (%s); it will be redelivered",
                original_seq,
                member.group,
                _describe_failure(exc),
            )
            self._stats.redelivered += 1
            await self._settle(msg.nak(delay=self._backoff(deliveries)), member, "nak")
            return
        self._stats.dead_lettered += 1
        await self._settle(msg.ack(), member, "ack")

    async def _settle(self, verdict: Awaitable[None], member: _Member, what: str) -> None:
        try:
            await verdict
        except _NatsFailure as exc:
            # The server will redeliver after ack_wait: at-least-once, not lost.
            logger.warning("could not %s a message of group %r: %s", what, member.group, _describe_failure(exc))

    async def _keep_alive(self) -> None:
        """Send ``in_progress`` for every held message every third of the shortest ack
        deadline, so slow handlers are not redelivered behind their back."""
        while True:
            period = min([self.ack_wait, *self._ack_waits.values()]) / 3
            await asyncio.sleep(period)
            for member in list(self._members):
                for msg in member.held_messages():
                    with contextlib.suppress(*_NatsFailure):
                        await msg.in_progress()

    async def _read_dead_letters(self, conn: _Connection, group: str | None) -> list[tuple[int, bytes, DeadLetter]]:
        """(DLQ sequence, body, dead letter), oldest first."""
        subject = self._dlq_subject(group) if group is not None else f"{self.subject_prefix}-dlq.>"
        entries: list[tuple[int, bytes, DeadLetter]] = []
        seq = 1
        try:
            while True:
                try:
                    raw = await conn.js.get_msg(self.dlq_stream, seq=seq, subject=subject, next=True)
                except nats.js.errors.NotFoundError:
                    return entries
                assert raw.seq is not None
                seq = raw.seq + 1
                entries.append((raw.seq, raw.data or b"", self._parse_dead_letter(raw)))
        except _NatsFailure as exc:
            raise self._broker_error("reading the dead letters", exc) from exc

    def _parse_dead_letter(self, raw: js_api.RawStreamMsg) -> DeadLetter:
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
                message_id=f"{self.dlq_stream}:{raw.seq}",
                time=raw.time,
            )
        return DeadLetter(event=event, group=group, error=error, deliveries=deliveries)

    # -- names and errors --------------------------------------------------------------

    def _event_subject(self, type_: str) -> str:
        return f"{self.subject_prefix}.{_token(type_)}"

    def _replay_subject(self, group: str) -> str:
        return f"{self.subject_prefix}-replay.{_token(group)}"

    def _dlq_subject(self, group: str) -> str:
        return f"{self.subject_prefix}-dlq.{_token(group)}"

    def _broker_error(self, action: str, exc: BaseException) -> BusError:
        if self._conn is not None and self._conn.nc.is_reconnecting:
            hint = "the connection to the server is down and being re-established; retry shortly"
        elif isinstance(exc, nats.errors.ConnectionClosedError):
            hint = "the connection is closed; open a new bus"
        elif isinstance(exc, nats.js.errors.ServiceUnavailableError | nats.errors.NoRespondersError):
            hint = "JetStream is not answering: is nats-server running with -js, and the stream's server up?"
        elif isinstance(exc, nats.js.errors.NoStreamResponseError):
            hint = f"no stream took the message: was stream {self.stream!r} deleted? reopen the bus to recreate it"
        elif isinstance(exc, TimeoutError):
            hint = "the server did not answer in time: check that it is up and not overloaded (nats-server logs)"
        elif isinstance(exc, nats.js.errors.APIError):
            hint = "the JetStream API refused the request; see its description"
        else:
            hint = "check that nats-server is reachable and healthy"
        return BusError(f"NATS JetStream at {self._where}: {action} failed ({_describe_failure(exc)}); {hint}")


class _Member:
    """One subscriber: pull workers on the group's consumers sharing ``concurrency``
    handler slots."""

    def __init__(self, bus: JetStreamBus, conn: _Connection, group: str, handler: Handler, concurrency: int) -> None:
        self.bus = bus
        self.conn = conn
        self.group = group
        self.handler = handler
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.closing = False
        self.workers: list[_PullWorker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()

    async def start(self, workers_per_consumer: Mapping[str, int]) -> None:
        for consumer, count in workers_per_consumer.items():
            for _ in range(count):
                inbox = self.conn.nc.new_inbox()
                sub = await self.conn.nc.subscribe(inbox)
                self.workers.append(_PullWorker(self, consumer, inbox, sub))
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
        try:
            current = asyncio.current_task()
            tasks = [t for t in self._tasks if t is not current]  # a handler closing its own subscription
            for worker, task in zip(self.workers, self._tasks, strict=True):
                if task is not current and not worker.busy:
                    task.cancel()
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=self.bus.close_timeout)
                for task in late:
                    task.cancel()
                if late:
                    logger.warning(
                        "group %r: %d handler(s) still running after %ss; cancelled (their events are nacked)",
                        self.group,
                        len(late),
                        self.bus.close_timeout,
                    )
                    await asyncio.wait(late)
                for task in tasks:
                    if not task.cancelled() and (exc := task.exception()) is not None:
                        logger.error("pull worker of group %r died", self.group, exc_info=exc)
        finally:
            self.bus._members.discard(self)
            self._closed.set()


class _PullWorker:
    """Pulls one message at a time from one consumer into its own inbox, then runs it
    through the bus when a handler slot of its member is free."""

    def __init__(self, member: _Member, consumer: str, inbox: str, sub: NatsSubscription) -> None:
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
        self._next_subject = f"{js_api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{member.bus.stream}.{consumer}"
        self._request = json.dumps({"batch": 1, "expires": int(_PULL_EXPIRES * 1e9)}).encode()

    async def run(self) -> None:
        member = self.member
        bus = member.bus
        try:
            while not member.closing:
                try:
                    msg = await self._pull()
                except _NatsFailure as exc:
                    if member.conn.nc.is_closed:
                        return
                    self._pull_failed(f"failed ({_describe_failure(exc)})")
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
                        await bus._deliver(member, msg)
                except asyncio.CancelledError:
                    # A close: waiting for a slot, or a handler past close_timeout. Not
                    # settled, so give it back to the group now rather than after ack_wait.
                    if not msg.is_acked:
                        with contextlib.suppress(*_NatsFailure):
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
                    with contextlib.suppress(*_NatsFailure):
                        await msg.nak()

        naker = asyncio.create_task(nak_leftovers())
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                await self.sub.drain()  # type: ignore[no-untyped-call]
        except _NatsFailure as exc:
            logger.debug("unsubscribing a pull inbox of group %r: %s", self.member.group, exc)
        finally:
            naker.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_NatsFailure):
                await naker
