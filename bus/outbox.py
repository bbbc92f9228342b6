"""Outbox and inbox: what a choreography participant commits locally, in one go.

Why both, when every tool call already carries an idempotency key? The key makes
the *service's* effect happen once. It does not make the *participant* consistent
with the bus:

* **Outbox.** A participant that acted must announce it. If it publishes straight
  to the broker and crashes before the broker confirms, the event is lost and the
  chain stalls (or, if it acks its trigger first, it is never retried). So the
  handler writes the event to a local outbox table in the same transaction that
  marks its trigger handled, acks the trigger only after that commit, and a relay
  publishes outbox rows to the broker until each is confirmed. A crash at any
  point leaves either nothing (the trigger is redelivered and the handler re-runs,
  with the same idempotency keys) or a committed row (the relay publishes it after
  restart).
* **Inbox.** A redelivered trigger (a nack, a worker killed mid-handler, a broker
  failover) would re-run the handler: a model call paid twice, an event published
  twice. The inbox row, keyed by (consumer group, event id), makes it a no-op, and
  it is shared by every member of the group (the same file or database), since a
  redelivery may reach another member.

Events have deterministic ids, so a row relayed twice (a relay killed between
publish and mark) is the same event, which downstream inboxes absorb.

:class:`SqliteOutbox` (a file shared by the processes on one machine; WAL) is the
default; :class:`PostgresOutbox` serves several machines. Both implement
:class:`ParticipantStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from agent_coordinator.bus.base import EventBus
from agent_coordinator.core.errors import BusError
from agent_coordinator.core.events import Event, parse_event
from agent_coordinator.core.postgres import Migration, migrate, redact_url
from agent_coordinator.core.sqlite import connect_shared

__all__ = [
    "PARTICIPANT_STORE_MIGRATIONS",
    "Deadlines",
    "MemoryDeadlines",
    "OutboxRelay",
    "ParticipantStore",
    "PostgresOutbox",
    "SqliteOutbox",
    "open_participant_store",
]

log = logging.getLogger(__name__)

#: A row claimed by a relay that has not marked it published within this many
#: seconds is presumed orphaned (its process died) and may be claimed by another.
#: Short on purpose: every run waiting on an orphaned row stalls this long after a
#: crash, while taking over a row from a relay that is merely slow costs only a
#: duplicate publish of the same event, which inboxes (and NATS's dedup) absorb.
CLAIM_TIMEOUT_S = 2.0


class ParticipantStore(Protocol):
    """A participant's local, transactional state: its inbox and its outbox.

    * ``handled(group, event_id)`` -- was this event already handled by the group?
    * ``commit(group, event_id, emitted)`` -- in ONE transaction: mark the event
      handled by the group and queue ``emitted`` for publishing. Idempotent.
    * ``claim(owner, limit)`` -- up to ``limit`` unpublished rows, claimed for
      ``owner`` (rows another relay claimed more than the store's ``claim_timeout``
      ago are taken over: that relay presumably died): ``(row id, event)`` in
      commit order;
    * ``published(row_ids)`` -- the broker confirmed them;
    * ``enqueue(emitted)`` -- queue events for publishing with no trigger to mark
      (a run's start event, a deadline's failure, an announcement made again), so a
      broker outage delays them instead of failing the caller;
    * ``note_attempt(group, event_id)`` / ``attempted(group, event_id)`` -- a
      journal of steps the group *began* on a trigger, written before the step's
      effect is attempted: a member that dies between the effect and its commit
      leaves this mark, so the member that gets the trigger again knows an effect may
      exist even when the run has moved on without it (a deadline failed the step);
    * deadlines (:class:`Deadlines`): the owner's timers, here so that they outlive
      the process that set them and any owner process sharing the store takes over.
    """

    async def handled(self, group: str, event_id: str) -> bool: ...

    async def commit(self, group: str, event_id: str, emitted: Sequence[Event]) -> None: ...

    async def enqueue(self, emitted: Sequence[Event]) -> None: ...

    async def note_attempt(self, group: str, event_id: str) -> None: ...

    async def attempted(self, group: str, event_id: str) -> bool: ...

    async def claim_outcome(self, trigger_id: str, event_id: str) -> str:
        """Claim that ``event_id`` is the one answer to ``trigger_id``; return the
        answer that holds -- ``event_id`` when this claim (or an earlier one of the same
        id) won, another event's id when someone answered first. Atomic across the
        processes sharing the store: an agent's late answer and the owner's deadline
        failure of the same step can never both go out."""
        ...

    async def arm_deadline(self, subject: str, due: float, *, replace: bool = False) -> None: ...

    async def claim_due_deadlines(self, now: float, *, extend_to: float, limit: int = 100) -> list[str]: ...

    async def disarm_deadline(self, subject: str) -> None: ...

    async def claim(self, owner: str, limit: int) -> list[tuple[int, Event]]: ...

    async def published(self, row_ids: Sequence[int]) -> None: ...

    async def close(self) -> None: ...


class Deadlines(Protocol):
    """Each run's deadline: when its owner must fail whatever it is stuck in.

    * ``arm_deadline(subject, due, replace=)`` -- set ``subject``'s deadline to the
      wall-clock time ``due``; an existing one is kept unless ``replace``;
    * ``claim_due_deadlines(now, extend_to=)`` -- the subjects whose deadline is at
      or before ``now``, each moved to ``extend_to`` in the same atomic step, so that
      of several owner processes sharing the store exactly one acts on a deadline,
      and a run that is still stuck after it acted is due again later;
    * ``disarm_deadline(subject)`` -- the run ended (or waits for a person).
    """

    async def arm_deadline(self, subject: str, due: float, *, replace: bool = False) -> None: ...

    async def claim_due_deadlines(self, now: float, *, extend_to: float, limit: int = 100) -> list[str]: ...

    async def disarm_deadline(self, subject: str) -> None: ...


class MemoryDeadlines:
    """Deadlines in this process only (choreography without a participant store)."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}

    async def arm_deadline(self, subject: str, due: float, *, replace: bool = False) -> None:
        if replace or subject not in self._due:
            self._due[subject] = due

    async def claim_due_deadlines(self, now: float, *, extend_to: float, limit: int = 100) -> list[str]:
        due = [subject for subject, at in self._due.items() if at <= now][:limit]
        for subject in due:
            self._due[subject] = extend_to
        return due

    async def disarm_deadline(self, subject: str) -> None:
        self._due.pop(subject, None)


class SqliteOutbox:
    """Inbox and outbox tables in one SQLite file (several processes may share it)."""

    def __init__(self, path: str | Path, *, claim_timeout: float = CLAIM_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.claim_timeout = claim_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect_shared(self.path)
        self._lock = threading.Lock()
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS inbox (
                grp TEXT NOT NULL, event_id TEXT NOT NULL, handled REAL NOT NULL,
                PRIMARY KEY (grp, event_id)
            );
            CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id TEXT NOT NULL, body TEXT NOT NULL,
                claimed_by TEXT, claimed_at REAL, published_at REAL
            );
            CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (published_at, id);
            CREATE TABLE IF NOT EXISTS attempts (
                grp TEXT NOT NULL, event_id TEXT NOT NULL, at REAL NOT NULL,
                PRIMARY KEY (grp, event_id)
            );
            CREATE TABLE IF NOT EXISTS deadlines (subject TEXT PRIMARY KEY, due REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS outcomes (trigger_id TEXT PRIMARY KEY, event_id TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS deadlines_due ON deadlines (due);
            """
        )

    async def handled(self, group: str, event_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM inbox WHERE grp = ? AND event_id = ?", (group, event_id)).fetchone()
        return row is not None

    async def commit(self, group: str, event_id: str, emitted: Sequence[Event]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                fresh = self._db.execute(
                    "INSERT OR IGNORE INTO inbox (grp, event_id, handled) VALUES (?, ?, ?)",
                    (group, event_id, time.time()),
                ).rowcount
                if fresh:  # a second commit of the same handling queues nothing again
                    self._db.executemany(
                        "INSERT INTO outbox (event_id, body) VALUES (?, ?)", [(e.id, e.to_json()) for e in emitted]
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    async def enqueue(self, emitted: Sequence[Event]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT INTO outbox (event_id, body) VALUES (?, ?)", [(e.id, e.to_json()) for e in emitted]
            )

    async def note_attempt(self, group: str, event_id: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO attempts (grp, event_id, at) VALUES (?, ?, ?)", (group, event_id, time.time())
            )

    async def attempted(self, group: str, event_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM attempts WHERE grp = ? AND event_id = ?", (group, event_id)
            ).fetchone()
        return row is not None

    async def claim_outcome(self, trigger_id: str, event_id: str) -> str:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO outcomes (trigger_id, event_id) VALUES (?, ?)", (trigger_id, event_id)
            )
            (winner,) = self._db.execute("SELECT event_id FROM outcomes WHERE trigger_id = ?", (trigger_id,)).fetchone()
        return str(winner)

    async def arm_deadline(self, subject: str, due: float, *, replace: bool = False) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock:
            self._db.execute(f"{verb} INTO deadlines (subject, due) VALUES (?, ?)", (subject, due))

    async def claim_due_deadlines(self, now: float, *, extend_to: float, limit: int = 100) -> list[str]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                due = [
                    row[0]
                    for row in self._db.execute(
                        "SELECT subject FROM deadlines WHERE due <= ? ORDER BY due LIMIT ?", (now, limit)
                    ).fetchall()
                ]
                self._db.executemany("UPDATE deadlines SET due = ? WHERE subject = ?", [(extend_to, s) for s in due])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return due

    async def disarm_deadline(self, subject: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM deadlines WHERE subject = ?", (subject,))

    async def claim(self, owner: str, limit: int) -> list[tuple[int, Event]]:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT id, body FROM outbox WHERE published_at IS NULL "
                    "AND (claimed_by IS NULL OR claimed_by = ? OR claimed_at < ?) ORDER BY id LIMIT ?",
                    (owner, now - self.claim_timeout, limit),
                ).fetchall()
                self._db.executemany(
                    "UPDATE outbox SET claimed_by = ?, claimed_at = ? WHERE id = ?", [(owner, now, r[0]) for r in rows]
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [(row_id, parse_event(body)) for row_id, body in rows]

    async def published(self, row_ids: Sequence[int]) -> None:
        with self._lock:
            self._db.executemany("UPDATE outbox SET published_at = ? WHERE id = ?", [(time.time(), i) for i in row_ids])

    async def close(self) -> None:
        with self._lock:
            self._db.close()


PARTICIPANT_STORE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "participant_store",
        1,
        (
            "CREATE TABLE IF NOT EXISTS {prefix}inbox (grp TEXT NOT NULL, event_id TEXT NOT NULL, "
            "handled TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (grp, event_id))",
            "CREATE TABLE IF NOT EXISTS {prefix}outbox (id BIGSERIAL PRIMARY KEY, "
            "event_id TEXT NOT NULL, body TEXT NOT NULL, claimed_by TEXT, "
            "claimed_at DOUBLE PRECISION, published_at DOUBLE PRECISION)",
            "CREATE TABLE IF NOT EXISTS {prefix}attempts (grp TEXT NOT NULL, event_id TEXT NOT NULL, "
            "at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (grp, event_id))",
            "CREATE TABLE IF NOT EXISTS {prefix}deadlines (subject TEXT PRIMARY KEY, due DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {prefix}outcomes (trigger_id TEXT PRIMARY KEY, event_id TEXT NOT NULL)",
        ),
    ),
)
"""The participant store's tables in PostgreSQL, step by step (see
:func:`agent_coordinator.core.postgres.migrate`)."""


class PostgresOutbox:
    """Inbox and outbox tables in PostgreSQL (``table_prefix`` isolates users of one database)."""

    def __init__(self, url: str, *, table_prefix: str = "coordinator_", claim_timeout: float = CLAIM_TIMEOUT_S) -> None:
        self.url = url
        self.prefix = table_prefix
        self.claim_timeout = claim_timeout
        self._pool: Any = None

    async def open(self) -> PostgresOutbox:
        try:
            from psycopg_pool import AsyncConnectionPool
        except ImportError as exc:
            raise BusError("a PostgreSQL outbox needs: pip install 'agent-coordinator[postgres]'") from exc
        self._pool = AsyncConnectionPool(self.url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True})
        try:
            # Versioned, under the migration lock: workers of every participant start
            # together and would otherwise race on CREATE TABLE IF NOT EXISTS.
            await asyncio.to_thread(migrate, self.url, PARTICIPANT_STORE_MIGRATIONS, prefix=self.prefix)
            await self._pool.open(wait=True, timeout=10.0)
        except Exception as exc:
            await self._pool.close()
            raise BusError(
                f"cannot open the PostgreSQL outbox at {redact_url(self.url)}: {exc}; "
                "check the URL and that the server runs"
            ) from exc
        return self

    async def handled(self, group: str, event_id: str) -> bool:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT 1 FROM {self.prefix}inbox WHERE grp = %s AND event_id = %s", (group, event_id)
            )
            return await cursor.fetchone() is not None

    async def commit(self, group: str, event_id: str, emitted: Sequence[Event]) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                f"INSERT INTO {self.prefix}inbox (grp, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (group, event_id),
            )
            if cursor.rowcount:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        f"INSERT INTO {self.prefix}outbox (event_id, body) VALUES (%s, %s)",
                        [(e.id, e.to_json()) for e in emitted],
                    )

    async def enqueue(self, emitted: Sequence[Event]) -> None:
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO {self.prefix}outbox (event_id, body) VALUES (%s, %s)",
                [(e.id, e.to_json()) for e in emitted],
            )

    async def note_attempt(self, group: str, event_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO {self.prefix}attempts (grp, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (group, event_id),
            )

    async def attempted(self, group: str, event_id: str) -> bool:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT 1 FROM {self.prefix}attempts WHERE grp = %s AND event_id = %s", (group, event_id)
            )
            return await cursor.fetchone() is not None

    async def claim_outcome(self, trigger_id: str, event_id: str) -> str:
        async with self._pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO {self.prefix}outcomes (trigger_id, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (trigger_id, event_id),
            )
            cursor = await conn.execute(
                f"SELECT event_id FROM {self.prefix}outcomes WHERE trigger_id = %s", (trigger_id,)
            )
            row = await cursor.fetchone()
            assert row is not None  # inserted or already there
            return str(row[0])

    async def arm_deadline(self, subject: str, due: float, *, replace: bool = False) -> None:
        conflict = "DO UPDATE SET due = EXCLUDED.due" if replace else "DO NOTHING"
        async with self._pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO {self.prefix}deadlines (subject, due) VALUES (%s, %s) ON CONFLICT (subject) {conflict}",
                (subject, due),
            )

    async def claim_due_deadlines(self, now: float, *, extend_to: float, limit: int = 100) -> list[str]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"UPDATE {self.prefix}deadlines SET due = %s WHERE subject IN ("
                f"SELECT subject FROM {self.prefix}deadlines WHERE due <= %s ORDER BY due LIMIT %s "
                "FOR UPDATE SKIP LOCKED) RETURNING subject",
                (extend_to, now, limit),
            )
            return [str(row[0]) for row in await cursor.fetchall()]

    async def disarm_deadline(self, subject: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(f"DELETE FROM {self.prefix}deadlines WHERE subject = %s", (subject,))

    async def claim(self, owner: str, limit: int) -> list[tuple[int, Event]]:
        now = time.time()
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"UPDATE {self.prefix}outbox SET claimed_by = %s, claimed_at = %s WHERE id IN ("
                f"SELECT id FROM {self.prefix}outbox WHERE published_at IS NULL AND "
                "(claimed_by IS NULL OR claimed_by = %s OR claimed_at < %s) ORDER BY id LIMIT %s "
                "FOR UPDATE SKIP LOCKED) RETURNING id, body",
                (owner, now, owner, now - self.claim_timeout, limit),
            )
            rows = await cursor.fetchall()
        return sorted((int(row_id), parse_event(body)) for row_id, body in rows)

    async def published(self, row_ids: Sequence[int]) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                f"UPDATE {self.prefix}outbox SET published_at = %s WHERE id = ANY(%s)", (time.time(), list(row_ids))
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


async def open_participant_store(spec: str | Path) -> ParticipantStore:
    """A store by spec: a ``postgresql://`` URL, else a SQLite file path."""
    text = str(spec)
    if text.startswith(("postgresql://", "postgres://")):
        return await PostgresOutbox(text).open()
    return SqliteOutbox(text.removeprefix("sqlite://"))


class OutboxRelay:
    """Publishes a store's outbox rows to a bus, in commit order, until confirmed.

    :meth:`wake` after a commit; :meth:`start` also drains rows a crashed process
    left behind. :meth:`flush` returns once every row claimed so far is published.
    A publish that fails is retried with backoff; rows are never dropped.

    An idle relay also looks at the outbox every ``poll_interval`` seconds: a relay
    killed between claiming rows and publishing them leaves them claimed, and only
    once that claim has expired may another relay take them -- which must then
    happen even if nothing new is ever committed, or the runs waiting on those
    events would stall for good.
    """

    def __init__(self, store: ParticipantStore, bus: EventBus, *, batch: int = 64, poll_interval: float = 1.0) -> None:
        self.store = store
        self.bus = bus
        self.batch = batch
        self.poll_interval = poll_interval
        self.owner = f"relay-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._relay(), name=f"outbox relay {self.owner}")
            self._wake.set()

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until the relay has nothing left to publish (bound it with ``asyncio.timeout``)."""
        self.wake()
        await self._idle.wait()

    async def _relay(self) -> None:
        delay = 0.05
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
            # (close()) that lands as the wake-up does, and the relay would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while rows := await self.store.claim(self.owner, self.batch):
                    for row_id, event in rows:
                        await self.bus.publish(event)
                        await self.store.published([row_id])
                delay = 0.05
                self._idle.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay could not publish (retrying in %.2fs): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._wake.set()

    async def close(self) -> None:
        """Publish what is queued (bounded), then stop."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(10.0):
                await self.flush()
        except TimeoutError:
            log.warning("outbox relay closed with rows unpublished; they stay in the outbox for the next relay")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
