"""Following the coordinator's event log from outside, as it grows.

The harness reads ``<state dir>/events.db`` -- or, with PostgreSQL state, the
database's ``coordinator_events`` -- (``events(seq, run_id, id, subject, type,
causation_id, body)``), written by every coordinator process, with a connection of
its own and never writes to it. :class:`EventLogWatcher` polls it
every few milliseconds and keeps what the kill schedule and the takeover clock
need: how many *distinct* events there are (a rerun that logs a copy of an event
under a new run is not progress), each order's latest event and terminal events,
and when each new event was first seen.

:func:`read_log` reads the whole log once, for the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TERMINAL",
    "EventLogWatcher",
    "LoggedEvent",
    "Takeover",
    "is_compensation",
    "read_log",
]

TERMINAL = frozenset({"OrderCompleted", "OrderCancelled"})
POLL_S = 0.005
#: Rows re-read behind the last seq seen (see EventLogWatcher.poll).
LOOKBACK = 500


def is_compensation(event_type: str) -> bool:
    """A failure, refund, release or cancellation: the saga is unwinding (or about to)."""
    return event_type.endswith(("Failed", "Refunded", "Released")) or event_type in ("ShipmentCancelled",)


#: Where the log is: the SQLite file, or the URL of the PostgreSQL state.
LogSource = Path | str


class _Reader:
    """Read-only queries on the log, SQLite or PostgreSQL alike (``?`` placeholders,
    ``{events}``/``{runs}`` for the tables); None while the tables do not exist yet."""

    def __init__(self, source: LogSource) -> None:
        self.source = source
        self._db: Any = None

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
        if isinstance(self.source, Path):
            if self._db is None:
                if not self.source.exists():
                    return None
                # Read-only, autocommit: every SELECT is its own short read transaction,
                # so the watcher never holds back the writers' WAL checkpoints.
                self._db = sqlite3.connect(f"file:{self.source}?mode=ro", uri=True, timeout=10.0, isolation_level=None)
            try:
                return list(self._db.execute(sql.format(events="events", runs="runs"), params).fetchall())
            except sqlite3.OperationalError as exc:  # the first writer has not created the tables yet
                if "no such table" in str(exc) or "locked" in str(exc):
                    return None
                raise
        import psycopg

        if self._db is None:
            self._db = psycopg.connect(self.source, autocommit=True)
        try:
            query = sql.format(events="coordinator_events", runs="coordinator_runs").replace("?", "%s")
            return list(self._db.execute(query, params).fetchall())
        except psycopg.errors.UndefinedTable:
            return None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@dataclass
class OrderTrack:
    """What the watcher knows of one order."""

    last_type: str
    events: int = 0
    terminal: set[str] = field(default_factory=set)


@dataclass
class Takeover:
    """The orders a kill left in flight, and how long each took to move again."""

    kill: int  # index of the kill in the run's kill list
    at: float  # time.monotonic() of the kill
    waiting: set[str]  # not moved yet (at the end: never moved again)
    orders: int = 0
    moved: dict[str, float] = field(default_factory=dict)  # order -> seconds until its next event

    def __post_init__(self) -> None:
        self.orders = len(self.waiting)

    @property
    def first_s(self) -> float | None:
        """Until the first of them moved."""
        return min(self.moved.values()) if self.moved else None

    @property
    def last_s(self) -> float | None:
        """Until the last of those that moved again did (orders that never moved are
        counted apart: they are stranded)."""
        return max(self.moved.values()) if self.moved else None


class EventLogWatcher:
    """Polls an event log in the background (``async with``) and answers from memory."""

    def __init__(self, source: LogSource) -> None:
        self._reader = _Reader(source)
        self.seen: set[str] = set()
        self.orders: dict[str, OrderTrack] = {}
        self.by_type: Counter[str] = Counter()
        self.compensations = 0
        self.last_compensation = ""
        self.ended_orders = 0
        self.runs = 0
        self.last_seq = 0
        self.last_progress = time.monotonic()
        self.takeovers: list[Takeover] = []
        self.after_end: list[tuple[str, str]] = []  # (order, event type) logged after the order ended
        self._open: list[Takeover] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def distinct(self) -> int:
        """Distinct events in the log (by event id)."""
        return len(self.seen)

    async def __aenter__(self) -> EventLogWatcher:
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._reader.close()

    async def _follow(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(POLL_S)

    def poll(self) -> None:
        """Read what was appended since the last poll."""
        # Look back a little: PostgreSQL hands out seq numbers before commit, so a row
        # with a lower seq may become visible after a higher one was read (SQLite
        # serializes its writers). Rows seen already are skipped by id below.
        after = (self.last_seq - LOOKBACK,)
        rows = self._reader.rows("SELECT seq, id, subject, type FROM {events} WHERE seq > ? ORDER BY seq", after)
        runs = self._reader.rows("SELECT COUNT(*) FROM {runs}")
        if rows is None or runs is None:
            return
        self.runs = int(runs[0][0])
        now = time.monotonic()
        for seq, event_id, subject, event_type in rows:
            self.last_seq = max(self.last_seq, seq)
            if event_id in self.seen:
                continue
            self.seen.add(event_id)
            self.last_progress = now
            self.by_type[event_type] += 1
            if is_compensation(event_type):
                self.compensations += 1
                self.last_compensation = event_type
            track = self.orders.get(subject)
            if track is None:
                track = self.orders[subject] = OrderTrack(event_type)
            if track.terminal:
                self.after_end.append((subject, event_type))
            track.last_type, track.events = event_type, track.events + 1
            if event_type in TERMINAL:
                self.ended_orders += not track.terminal
                track.terminal.add(event_id)
            self._progressed(subject, now)

    def _progressed(self, subject: str, now: float) -> None:
        for takeover in self._open:
            if subject in takeover.waiting:
                takeover.waiting.discard(subject)
                takeover.moved[subject] = now - takeover.at
        self._open = [t for t in self._open if t.waiting]

    # -- questions ---------------------------------------------------------------------

    def ended(self, subject: str) -> bool:
        track = self.orders.get(subject)
        return track is not None and bool(track.terminal)

    def in_flight(self, waiting_on: frozenset[str] | None = None) -> set[str]:
        """Orders that started and have not ended (whose latest event is one of
        ``waiting_on``, if given)."""
        return {
            subject
            for subject, track in self.orders.items()
            if not track.terminal and (waiting_on is None or track.last_type in waiting_on)
        }

    def emitted(self, types: frozenset[str] | None) -> int:
        """How many distinct events of ``types`` (all when None) the log holds."""
        if types is None:
            return self.distinct
        return sum(self.by_type[t] for t in types)

    def start_takeover(self, kill: int, at: float, waiting: set[str]) -> Takeover:
        """Clock how long until each order in ``waiting`` has a new event."""
        takeover = Takeover(kill, at, set(waiting))
        self.takeovers.append(takeover)
        if takeover.waiting:
            self._open.append(takeover)
        return takeover


@dataclass(frozen=True)
class LoggedEvent:
    """One row of the event log."""

    seq: int
    run_id: str
    id: str
    subject: str
    type: str
    causation_id: str | None
    data: dict[str, Any]
    source: str


def read_log(source: LogSource) -> list[LoggedEvent]:
    """Every row of the event log, in append order (empty when there is no log)."""
    reader = _Reader(source)
    try:
        rows = reader.rows("SELECT seq, run_id, id, subject, type, causation_id, body FROM {events} ORDER BY seq")
    finally:
        reader.close()
    events = []
    for seq, run_id, event_id, subject, event_type, causation_id, body in rows or []:
        parsed = json.loads(body)
        data = parsed.get("data") if isinstance(parsed.get("data"), dict) else {}
        events.append(
            LoggedEvent(seq, run_id, event_id, subject, event_type, causation_id, data, parsed.get("source", ""))
        )
    return events
