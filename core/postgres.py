"""Shared state on PostgreSQL: the event log, and the versioned migrations of every
table the project keeps there.

With ``--state postgresql://...`` everything several processes (on several
machines) must agree on lives in one database: the event log and the run registry
(here, :class:`PostgresEventLog`), the participant store's inbox, outbox, attempt
journal, deadlines and outcome claims
(:class:`~agent_coordinator.bus.outbox.PostgresOutbox`), and the orchestration
checkpoints (LangGraph's ``AsyncPostgresSaver``, which migrates its own tables).

Migrations: each component lists its :class:`Migration` steps; :func:`migrate`
applies the ones a database lacks, in version order, and records each in
``coordinator_schema_versions``, all in one transaction under an advisory lock.
The lock is what makes it "safe at start-up": several workers starting together
would otherwise race on ``CREATE TABLE IF NOT EXISTS``, which PostgreSQL does not
make atomic (the loser fails on ``pg_type``'s unique index). ``coordinator migrate``
runs them explicitly, for a deployment that gives its workers no DDL rights.

psycopg is imported when a PostgreSQL store is opened, never at import time: the
embedded default (SQLite) needs none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.eventlog import SqlEventLog

__all__ = [
    "EVENT_LOG_MIGRATIONS",
    "MIGRATION_LOCK",
    "Migration",
    "PostgresEventLog",
    "PostgresRunLocks",
    "acquire_migration_lock",
    "migrate",
    "redact_url",
    "schema_versions",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The advisory lock every migration (and LangGraph's checkpoint setup) runs under.
MIGRATION_LOCK = 0x61676E74_636F6F72 & 0x7FFFFFFFFFFFFFFF  # "agntcoor": a bigint, stable across versions

VERSIONS_TABLE = "coordinator_schema_versions"


@dataclass(frozen=True)
class Migration:
    """One step of one component's schema: applied once, in ``version`` order.

    ``statements`` use ``{prefix}`` for the component's table prefix.
    """

    component: str
    version: int
    statements: tuple[str, ...]


EVENT_LOG_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "event_log",
        1,
        (
            # COLLATE "C": subjects sort by bytes, as in SQLite, so `status`, `trace` and
            # the canonical export list them in the same order on either engine.
            """CREATE TABLE IF NOT EXISTS {prefix}events (
                seq BIGSERIAL PRIMARY KEY,
                run_id TEXT NOT NULL,
                id TEXT NOT NULL,
                subject TEXT COLLATE "C" NOT NULL,
                type TEXT NOT NULL,
                causation_id TEXT,
                body TEXT NOT NULL,
                UNIQUE (run_id, id)
            )""",
            """CREATE TABLE IF NOT EXISTS {prefix}runs (
                seq BIGSERIAL,
                run_id TEXT PRIMARY KEY,
                workflow TEXT NOT NULL,
                mode TEXT NOT NULL,
                started TEXT NOT NULL,
                app TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS {prefix}events_subject ON {prefix}events (subject, seq)",
            "CREATE INDEX IF NOT EXISTS {prefix}events_id ON {prefix}events (id, seq)",
        ),
    ),
)


def redact_url(url: str) -> str:
    """``url`` fit to print: a password in it is dropped."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    credentials, at, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}{at}{host}" if at else url


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise CoordinatorError(
            "PostgreSQL state needs extra packages (psycopg is missing): pip install 'agent-coordinator[postgres]'"
        ) from exc
    return psycopg


def _connect(url: str) -> Any:
    psycopg = _psycopg()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CoordinatorError(
            f"cannot use PostgreSQL at {redact_url(url)}: {str(exc).strip()}; "
            "check that the server runs and the database exists"
        ) from exc


#: How long a process waits for another's migrations before it gives up.
MIGRATION_WAIT_S = 120.0


def acquire_migration_lock(url: str, *, wait: float = MIGRATION_WAIT_S) -> Any:
    """A new connection to ``url`` holding :data:`MIGRATION_LOCK` (a session lock:
    closing the connection releases it). Raises :class:`CoordinatorError` after
    ``wait`` seconds of another process holding it.

    The lock is polled (``pg_try_advisory_lock``), never waited for in a statement:
    LangGraph's checkpoint setup runs ``CREATE INDEX CONCURRENTLY``, which waits for
    every transaction in the database to end -- a waiter blocked in
    ``pg_advisory_lock`` included, while that waiter waits for the lock held by the
    setup: a deadlock PostgreSQL does not detect (seen with three workers starting
    together). A poller has no statement running between looks.
    """
    conn = _connect(url)
    deadline = time.monotonic() + wait
    pause = 0.02
    try:
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise CoordinatorError(
                    f"another process has been migrating {redact_url(url)} for {wait:g}s; "
                    "is a migration stuck? (pg_locks shows who holds the advisory lock)"
                )
            time.sleep(pause)  # another process migrates: look again, backing off
            pause = min(pause * 2, 0.5)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(url: str, migrations: Sequence[Migration], *, prefix: str = "coordinator_") -> list[Migration]:
    """Apply the ``migrations`` the database at ``url`` lacks; return those applied.

    One transaction under :data:`MIGRATION_LOCK` (:func:`acquire_migration_lock`):
    concurrent callers wait for each other and the later ones find nothing to do.
    Raises :class:`CoordinatorError` when the database cannot be reached (naming it
    without its password) or a step fails (naming the component and version).
    """
    wanted = {(m.component, m.version) for m in migrations}
    with _connect(url) as conn:
        if wanted <= _applied(conn, prefix):
            return []  # the usual start-up: up to date, no lock to queue for
    with acquire_migration_lock(url) as conn, conn.transaction():
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (component TEXT NOT NULL, prefix TEXT NOT NULL, "
            "version INTEGER NOT NULL, applied TIMESTAMPTZ NOT NULL DEFAULT now(), "
            "PRIMARY KEY (component, prefix, version))"
        )
        done = _applied(conn, prefix)  # again, under the lock: another process may have just migrated
        applied = []
        for migration in sorted(migrations, key=lambda m: (m.component, m.version)):
            if (migration.component, migration.version) in done:
                continue
            try:
                for statement in migration.statements:
                    conn.execute(statement.format(prefix=prefix))
            except _psycopg().Error as exc:
                raise CoordinatorError(
                    f"migrating {migration.component} to version {migration.version} at {redact_url(url)} "
                    f"failed: {str(exc).strip()}"
                ) from exc
            conn.execute(
                f"INSERT INTO {VERSIONS_TABLE} (component, prefix, version) VALUES (%s, %s, %s)",
                (migration.component, prefix, migration.version),
            )
            applied.append(migration)
    return applied


def _applied(conn: Any, prefix: str) -> set[tuple[str, int]]:
    """The (component, version) steps applied for ``prefix`` (none before the first)."""
    if conn.execute("SELECT to_regclass(%s)", (VERSIONS_TABLE,)).fetchone()[0] is None:
        return set()
    rows = conn.execute(f"SELECT component, version FROM {VERSIONS_TABLE} WHERE prefix = %s", (prefix,)).fetchall()
    return {(component, version) for component, version in rows}


def schema_versions(url: str, *, prefix: str = "coordinator_") -> dict[str, int]:
    """Each component's schema version at ``url`` (empty before any migration)."""
    with _connect(url) as conn:
        applied = _applied(conn, prefix)
    versions: dict[str, int] = {}
    for component, version in applied:
        versions[component] = max(version, versions.get(component, 0))
    return versions


class PostgresEventLog(SqlEventLog):
    """The event log and run registry in PostgreSQL, shared by processes on any
    number of machines (tables ``<prefix>events`` and ``<prefix>runs``).

    Same contract and answers as :class:`~agent_coordinator.core.eventlog.SqliteEventLog`
    (the same SQL: :class:`~agent_coordinator.core.eventlog.SqlEventLog`). Calls are
    synchronous, as the :class:`~agent_coordinator.core.eventlog.EventLog` protocol
    is: an append is durable when it returns. Connections come from a small pool;
    one broken by a server restart is replaced, and an idempotent call that met it
    is tried once more on a fresh one. ``migrate_schema=False`` leaves the schema alone
    (``coordinator migrate`` made it); then a missing table is an error naming the
    command to run.
    """

    _runs_order = "seq"

    def __init__(self, url: str, *, table_prefix: str = "coordinator_", migrate_schema: bool = True) -> None:
        psycopg = _psycopg()
        from psycopg_pool import ConnectionPool

        self.url = url
        self.where = redact_url(url)
        self.prefix = table_prefix
        if migrate_schema:
            migrate(url, EVENT_LOG_MIGRATIONS, prefix=table_prefix)
        else:
            _connect(url).close()  # a refused or misnamed database fails now, with the server's message
        self._errors = (psycopg.OperationalError, psycopg.InterfaceError)
        self._pool = ConnectionPool(url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True})
        self._pool.open(wait=True, timeout=10.0)

    def _sql(self, sql: str) -> str:
        return sql.format(events=f"{self.prefix}events", runs=f"{self.prefix}runs").replace("?", "%s")

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._twice(lambda conn: conn.execute(self._sql(sql), params).fetchall())
        return rows

    def _write(self, statements: Sequence[tuple[str, Sequence[object]]]) -> None:
        def write(conn: Any) -> None:
            with conn.transaction():
                for sql, params in statements:
                    conn.execute(self._sql(sql), params)

        self._twice(write)

    def _twice(self, work: Callable[[Any], _T]) -> _T:
        """``work(connection)``, once more on a fresh connection if the server dropped
        the first: every read and write here is idempotent (writes are ON CONFLICT DO
        NOTHING), and the pool replaces a broken connection when it comes back."""
        try:
            with self._pool.connection() as conn:
                return work(conn)
        except self._errors:
            with self._pool.connection() as conn:
                return work(conn)

    def close(self) -> None:
        self._pool.close()


#: The first key of every run lock (PostgreSQL's two-key advisory locks): runs
#: hash into the second, so they never meet the migration lock or anyone else's.
RUN_LOCK_SPACE = 0x61676E74  # "agnt"


class PostgresRunLocks:
    """Run locks (:class:`~agent_coordinator.core.run.RunLock`) as PostgreSQL
    session advisory locks, held on one connection of this process's own.

    PostgreSQL releases a session's locks when the session ends, so a process that
    dies -- SIGKILL, a lost machine -- frees its runs as soon as the server notices
    (at once for a closed socket; after TCP keepalive for a silent network), and
    another process may take them over: a lease kept by the database, not a
    home-made timer. Two workflow ids whose hashes meet share a lock: they are then
    only advanced one after the other.

    ``hold`` waits up to ``wait`` seconds for a run another process holds (polling
    ``pg_try_advisory_lock`` every ``poll`` seconds, so one connection serves every
    run of the process), then raises :class:`CoordinatorError`. Every ``check``
    seconds the connection is probed; if it is gone, the locks went with it: every
    holder is cancelled and its ``hold`` raises :class:`CoordinatorError` (its run
    is someone else's now), and the next ``hold`` opens a new connection.
    """

    def __init__(self, url: str, *, wait: float = 30.0, poll: float = 0.1, check: float = 2.0) -> None:
        self.url = url
        self.wait = wait
        self.poll = poll
        self.check = check
        self._conn: Any = None
        self._opening = asyncio.Lock()
        self._using = asyncio.Lock()  # one statement at a time on the connection
        self._holders: dict[str, asyncio.Task[Any]] = {}
        self._lost: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def _connection(self) -> Any:
        async with self._opening:
            if self._conn is None or self._conn.closed:
                psycopg = _psycopg()
                try:
                    self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=10)
                except psycopg.OperationalError as exc:
                    raise CoordinatorError(
                        f"cannot take run locks at {redact_url(self.url)}: {str(exc).strip()}"
                    ) from exc
                if self._watchdog is None or self._watchdog.done():
                    self._watchdog = asyncio.create_task(self._watch(), name="run lock watchdog")
            return self._conn

    async def _execute(self, sql: str, params: Sequence[object]) -> Any:
        conn = await self._connection()
        async with self._using:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()

    @asynccontextmanager
    async def hold(self, workflow_id: str) -> AsyncIterator[None]:
        """Hold ``workflow_id``'s lock for the body (see the class docstring)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.wait
        while True:
            (got,) = await self._execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (RUN_LOCK_SPACE, workflow_id))
            if got:
                break
            if loop.time() > give_up:
                raise CoordinatorError(
                    f"run {workflow_id} is being advanced by another process (its lock was held for {self.wait:g}s)"
                )
            await asyncio.sleep(self.poll)  # another process holds the run: look again
        task = asyncio.current_task()
        assert task is not None
        self._holders[workflow_id] = task
        try:
            yield
        except asyncio.CancelledError:
            if task in self._lost:
                task.uncancel()
                raise CoordinatorError(
                    f"lost the lock of run {workflow_id} (the database session holding it ended): "
                    "another process may carry it on"
                ) from None
            raise
        finally:
            self._holders.pop(workflow_id, None)
            lost = task in self._lost
            self._lost.discard(task)
            if not lost:
                with contextlib.suppress(Exception):  # a dead session released it already
                    await self._execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (RUN_LOCK_SPACE, workflow_id))

    async def _watch(self) -> None:
        """Probe the lock session; when it is gone, stop every holder (their locks
        are gone with it)."""
        while True:
            await asyncio.sleep(self.check)  # a lease check's period, not a wait for a condition
            if not self._holders:
                continue
            try:
                await self._execute("SELECT 1", ())
            except Exception as exc:
                log.error("the run lock session is gone (%s): stopping %d runs", exc, len(self._holders))
                for task in self._holders.values():
                    self._lost.add(task)
                    task.cancel()
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._conn is not None:
            await self._conn.close()
