"""What the NATS JetStream bus creates on the server: the event and dead-letter
streams, one durable pull consumer per group (or per group and subject on NATS 2.9),
and the subject names. docs/brokers/nats.md ("Topology") explains the choices.

Names outside ``[A-Za-z0-9_-]`` (and names starting with ``_``) are hex-encoded into
subject tokens and consumer names (:func:`token`), so any event type or group name
is safe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from typing import Final, Literal

import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api

from agent_coordinator.core.errors import BusError

__all__ = ["Connection", "Layout", "StreamTopology", "token"]

Layout = Literal["per-group", "per-subject"]

_LAYOUT_MARK = re.compile(r"consumer layout: (per-group|per-subject)")
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9-][A-Za-z0-9_-]*")
_VALID_STREAM = re.compile(r"[A-Za-z0-9_-]+")
_VALID_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
# The API's "already exists" answers when two processes create the same thing at once.
_ALREADY_EXISTS: Final = frozenset({10058, 10148, 10013})
_SUBJECTS_OVERLAP: Final = 10065


def token(name: str) -> str:
    """``name`` as one subject token / consumer-name part: verbatim when it is plain
    ASCII, else ``_`` + hex of its UTF-8 (plain tokens never start with ``_``, so the
    mapping is one-to-one)."""
    if _SAFE_TOKEN.fullmatch(name):
        return name
    return "_" + name.encode().hex()


@dataclasses.dataclass(slots=True)
class Connection:
    """A connection with its JetStream context and the consumer layout of the stream."""

    nc: NatsClient
    js: JetStreamContext
    layout: Layout


class StreamTopology:
    """The streams, subjects and consumers of one bus, and what it bound.

    ``bound`` maps a group to the names of its consumers this bus bound (what
    ``wait_idle`` inspects); ``ack_waits`` each consumer's actual ack deadline (another
    bus may have created it with its own), which the keep-alive paces itself by.
    """

    def __init__(self, *, stream: str, subject_prefix: str, ack_wait: float, where: str) -> None:
        if not _VALID_STREAM.fullmatch(stream):
            raise ValueError(f"stream must be letters, digits, '_' or '-' (got {stream!r})")
        if not _VALID_PREFIX.fullmatch(subject_prefix):
            raise ValueError(
                f"subject_prefix must be dot-separated tokens of letters, digits, '_' or '-' (got {subject_prefix!r})"
            )
        self.stream = stream
        self.dlq_stream = f"{stream}_DLQ"
        self.subject_prefix = subject_prefix
        self.ack_wait = ack_wait
        self.bound: dict[str, set[str]] = {}
        self.ack_waits: dict[str, float] = {}
        self._where = where
        self._bind_lock = asyncio.Lock()

    # -- subjects ----------------------------------------------------------------------

    def event_subject(self, type_: str) -> str:
        return f"{self.subject_prefix}.{token(type_)}"

    def replay_subject(self, group: str) -> str:
        # Read by the group's consumer only: a replay reaches that group and no other.
        return f"{self.subject_prefix}-replay.{token(group)}"

    def dlq_subject(self, group: str | None) -> str:
        """The dead letters of ``group`` (of every group when None)."""
        return f"{self.subject_prefix}-dlq.{token(group)}" if group is not None else f"{self.subject_prefix}-dlq.>"

    # -- streams -----------------------------------------------------------------------

    async def ensure_streams(self, nc: NatsClient, js: JetStreamContext) -> Layout:
        """Create the event and DLQ streams, or add our subjects to existing ones.
        Returns the consumer layout recorded in the event stream's description.
        Raises :class:`BusError` for JetStream disabled or overlapping subjects, and
        lets other server failures through (the caller names them)."""
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
            info = await _ensure_stream(js, event_stream)
            await _ensure_stream(js, dlq_stream)
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
            raise
        mark = _LAYOUT_MARK.search(info.config.description or "")
        # A stream we did not create (no mark) gets the layout this server supports.
        return "per-group" if (mark.group(1) if mark else fresh) == "per-group" else "per-subject"

    # -- consumers ---------------------------------------------------------------------

    async def bind(self, conn: Connection, group: str, subjects: set[str]) -> list[str]:
        """Make the group's consumers cover ``subjects``; return the consumers to pull
        from. Server failures pass through (the caller names them)."""
        async with self._bind_lock:  # no read-modify-write race within this bus
            if conn.layout == "per-group":
                names = [await self._bind_group_consumer(conn, group, subjects)]
            else:
                names = [await self._bind_subject_consumer(conn, group, subject) for subject in sorted(subjects)]
        self.bound.setdefault(group, set()).update(names)
        return names

    def replay_consumer(self, conn: Connection, group: str) -> str | None:
        """The consumer of the group's replay subject when it has one of its own (the
        per-subject layout), else None."""
        if conn.layout != "per-subject":
            return None
        return self._subject_consumer_name(group, self.replay_subject(group))

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

    async def _bind_group_consumer(self, conn: Connection, group: str, subjects: set[str]) -> str:
        name = token(group)
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
        self.ack_waits[name] = info.config.ack_wait or self.ack_wait
        return name

    @staticmethod
    def _subject_consumer_name(group: str, subject: str) -> str:
        # Consumer names cannot hold dots; a digest keeps them short and distinct.
        return f"{token(group)}_{hashlib.sha256(subject.encode()).hexdigest()[:12]}"

    async def _bind_subject_consumer(self, conn: Connection, group: str, subject: str) -> str:
        name = self._subject_consumer_name(group, subject)
        try:
            info = await conn.js.consumer_info(self.stream, name)
        except nats.js.errors.NotFoundError:
            config = self._consumer_config(name, group)
            config.filter_subject = subject
            config.description = f"agent-coordinator group {group!r}: {subject}"
            info = await self._add_consumer(conn, config)
        self.ack_waits[name] = info.config.ack_wait or self.ack_wait
        return name

    async def _add_consumer(self, conn: Connection, config: js_api.ConsumerConfig) -> js_api.ConsumerInfo:
        assert config.name is not None
        try:
            return await conn.js.add_consumer(self.stream, config)
        except nats.js.errors.APIError as exc:
            if exc.err_code not in _ALREADY_EXISTS:
                raise
            # Another process won the race.
            info: js_api.ConsumerInfo = await conn.js.consumer_info(self.stream, config.name)
            return info


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
