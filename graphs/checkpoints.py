"""Where orchestration keeps its process state: a LangGraph checkpointer, by URL.

=================================  ==================================================
``--state``                        checkpointer
=================================  ==================================================
(not given) / ``sqlite``           ``AsyncSqliteSaver`` on ``<state dir>/checkpoints.db``
``sqlite://PATH``                  ``AsyncSqliteSaver`` on the file ``PATH``: absolute
                                   with a third slash (``sqlite:///var/lib/c.db``),
                                   else relative to the working directory
                                   (``sqlite://c.db``)
``postgresql://user@host/db``      ``AsyncPostgresSaver`` over a connection pool
``memory``                         ``InMemorySaver`` (nothing survives the process)
=================================  ==================================================

A SQLite file outside the state directory must have an existing parent directory:
nothing is created outside the state directory (a typo must not make
``/nonexistent-dir`` at the filesystem root); inside it, missing directories are made.

The workflow id is the thread id. SQLite is the default because it is a file: a
killed process resumes from it with no server. It uses one connection, so it does
not scale with concurrency; PostgreSQL does (``pool_size`` connections).

A PostgreSQL URL may select a schema with libpq's ``options`` parameter, e.g.
``postgresql://postgres@127.0.0.1/test?options=-csearch_path%3Dmy_schema`` (the
schema must exist); tests use that to isolate themselves.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from agent_coordinator.core import telemetry
from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.postgres import acquire_migration_lock, redact_url

__all__ = ["checkpoint_version", "describe_state", "open_checkpointer", "traced"]


def describe_state(spec: str | None, *, state_dir: Path) -> str:
    """A printable name for where the state goes (a URL's password is hidden)."""
    if spec is None or spec == "sqlite":
        return str(state_dir / "checkpoints.db")
    if spec.startswith(("postgresql://", "postgres://")):
        return redact_url(spec)
    return spec


@asynccontextmanager
async def open_checkpointer(
    spec: str | None, *, state_dir: Path, pool_size: int = 10
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open the checkpointer ``spec`` names (see the module table); close it on exit.

    Raises :class:`CoordinatorError` for an unknown spec (listing the valid forms),
    a SQLite file whose directory does not exist outside ``state_dir`` or that
    cannot be opened, a missing optional package (naming the extra to install), or
    a database that cannot be reached (naming it, without its password).
    """
    if spec == "memory":
        yield InMemorySaver()
        return
    if spec is None or spec == "sqlite" or spec.startswith("sqlite://"):
        path = state_dir / "checkpoints.db" if spec in (None, "sqlite") else _sqlite_path(spec, state_dir)
        async with _sqlite(path) as saver:
            yield saver
        return
    if spec.startswith(("postgresql://", "postgres://")):
        async with _postgres(spec, pool_size=pool_size) as saver:
            yield saver
        return
    raise CoordinatorError(
        f"unknown --state {spec!r}; use 'sqlite' (default), 'sqlite:///path.db', 'postgresql://...' or 'memory'"
    )


def _sqlite_path(spec: str, state_dir: Path) -> Path:
    """The file ``sqlite://PATH`` names, checked: a directory outside ``state_dir``
    must exist already (see the module docstring)."""
    path = Path(spec.removeprefix("sqlite://"))
    if not str(path) or str(path) == ".":
        raise CoordinatorError(
            f"--state {spec!r} names no file; use sqlite:///absolute/path.db or sqlite://relative/path.db"
        )
    parent = path.parent.resolve()
    if parent.is_relative_to(state_dir.resolve()):
        return path
    if not parent.exists():
        raise CoordinatorError(
            f"--state {spec}: the directory {parent} does not exist; create it first, or keep the checkpoints "
            f"in the state directory (--state sqlite, {state_dir / 'checkpoints.db'}). Note sqlite:///x.db "
            "is the absolute /x.db and sqlite://x.db is relative to the working directory"
        )
    if not parent.is_dir():
        raise CoordinatorError(f"--state {spec}: {parent} is not a directory; name a file in a directory")
    return path


@asynccontextmanager
async def _sqlite(path: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    # Only ever the state directory's own subdirectories: an outside path was
    # checked to have its directory already (_sqlite_path).
    path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        try:
            saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
            # WAL lets `coordinator status` read while a run writes; NORMAL sync is
            # durable across a process kill (only an OS crash can lose the last commits).
            await saver.conn.execute("PRAGMA journal_mode=WAL")
            await saver.conn.execute("PRAGMA synchronous=NORMAL")
            await saver.setup()
        except sqlite3.Error as exc:
            raise CoordinatorError(
                f"cannot use {path} for checkpoints: {exc}; check that it is a writable SQLite file"
            ) from exc
        yield saver


@asynccontextmanager
async def _postgres(url: str, *, pool_size: int) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import AsyncConnection, OperationalError
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool
    except ImportError as exc:
        raise CoordinatorError(
            f"PostgreSQL state needs extra packages ({exc.name} is missing): pip install 'agent-coordinator[postgres]'"
        ) from exc
    try:
        # One direct connection first: a refused or misnamed database fails at once
        # with the server's own message, where the pool would retry until its timeout.
        probe = await AsyncConnection.connect(url, connect_timeout=10)
        await probe.close()
    except OperationalError as exc:
        raise CoordinatorError(
            f"cannot use PostgreSQL at {describe_state(url, state_dir=Path())}: {str(exc).strip()}; "
            "check that the server runs and the database exists"
        ) from exc
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=pool_size,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    try:
        await pool.open(wait=True, timeout=10.0)
        saver = AsyncPostgresSaver(pool)
        # LangGraph migrates its own tables; under the project's migration lock, as
        # workers starting together would race on its CREATE TABLE IF NOT EXISTS.
        holder = await asyncio.to_thread(acquire_migration_lock, url)
        try:
            await saver.setup()
        finally:
            await asyncio.to_thread(holder.close)  # the session's end releases the lock
    except (OperationalError, TimeoutError) as exc:
        await pool.close()
        raise CoordinatorError(
            f"cannot use PostgreSQL at {describe_state(url, state_dir=Path())}: {exc}; "
            "check that the server runs and the database exists"
        ) from exc
    except BaseException:
        await pool.close()
        raise
    try:
        yield saver
    finally:
        await pool.close()


async def checkpoint_version(url: str) -> int | None:
    """The version of LangGraph's checkpoint schema in the database ``url`` names
    (its ``checkpoint_migrations``), or None when it has none yet."""
    from psycopg import AsyncConnection, OperationalError

    try:
        async with await AsyncConnection.connect(url, connect_timeout=10, autocommit=True) as conn:
            cursor = await conn.execute("SELECT to_regclass('checkpoint_migrations')")
            row = await cursor.fetchone()
            if row is None or row[0] is None:
                return None
            cursor = await conn.execute("SELECT MAX(v) FROM checkpoint_migrations")
            latest = await cursor.fetchone()
    except OperationalError as exc:
        raise CoordinatorError(
            f"cannot use PostgreSQL at {redact_url(url)}: {str(exc).strip()}; "
            "check that the server runs and the database exists"
        ) from exc
    return None if latest is None or latest[0] is None else int(latest[0])


def traced(saver: BaseCheckpointSaver[Any]) -> BaseCheckpointSaver[Any]:
    """``saver`` with a span around each checkpoint write (``checkpoint write``: a
    superstep's checkpoint; ``checkpoint writes``: a task's pending writes), in the
    trace of the run being advanced. The instance's own methods are wrapped, so any
    saver -- memory, SQLite, PostgreSQL, a caller's -- is traced the same; wrapping
    twice is a no-op."""
    if getattr(saver, "_coordinator_traced", False):
        return saver
    put, put_writes = saver.aput, saver.aput_writes

    def attributes(config: Any) -> dict[str, Any]:
        return {"coordinator.workflow_id": (config.get("configurable") or {}).get("thread_id")}

    async def aput(config: Any, *args: Any, **kwargs: Any) -> Any:
        with telemetry.span("checkpoint write", attributes=attributes(config)):
            return await put(config, *args, **kwargs)

    async def aput_writes(config: Any, *args: Any, **kwargs: Any) -> Any:
        with telemetry.span("checkpoint writes", attributes=attributes(config)):
            return await put_writes(config, *args, **kwargs)

    saver.aput = aput  # type: ignore[method-assign]
    saver.aput_writes = aput_writes  # type: ignore[method-assign]
    saver._coordinator_traced = True  # type: ignore[attr-defined]
    return saver
