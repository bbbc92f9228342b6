"""Where a scenario keeps its state: checkpointers and buses, opened by name or URL.

A scenario names its backend (``checkpointer="sqlite"``, ``bus="memory://"``); the
opener here gives it the live object for the length of the run and cleans up after.
A backend that cannot be used -- its module is not installed, its service does not
answer -- raises :class:`ScenarioSkipped` with a reason that says what to do, and the
harness reports the scenario as skipped instead of failing the whole run.

Adding a backend (PostgreSQL checkpoints, a RabbitMQ or NATS bus) is one branch
below plus one registry entry in :mod:`benchmarks.registry`.
"""

from __future__ import annotations

import importlib
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_URLS",
    "POSTGRES_POOL_SIZE",
    "ScenarioSkipped",
    "open_bus_for_benchmark",
    "open_checkpointer",
    "require_module",
    "require_reachable",
]

#: The services on every development and CI machine (see DESIGN.md).
DEFAULT_URLS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
}

#: Connections in the PostgreSQL checkpointer's pool.
POSTGRES_POOL_SIZE = 10

_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "nats": 4222, "postgresql": 5432, "postgres": 5432}


class ScenarioSkipped(Exception):
    """The scenario cannot run here; ``str(exc)`` says why and what would fix it."""


def require_module(module: str, *, extra: str) -> Any:
    """Import ``module`` or skip, naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ScenarioSkipped(f"{module} is not installed ({exc}); pip install -e '.[{extra}]'") from None


def require_reachable(url: str, *, timeout: float = 1.0) -> None:
    """Skip unless the host and port of ``url`` accept a TCP connection."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        # Name host and port only: the rest of a URL may carry credentials.
        raise ScenarioSkipped(f"{parts.scheme} service not reachable at {host}:{port} ({exc}); start it") from None


@asynccontextmanager
async def open_checkpointer(kind: str) -> AsyncIterator[Any]:
    """A LangGraph checkpointer for one run, or ``None`` for the library's default.

    * ``"default"`` -- ``None``: the orchestrator makes its own ``InMemorySaver``
      and deletes each thread when its run ends (what ``open_coordinator`` does
      without ``checkpointer=``);
    * ``"memory"`` -- a plain ``InMemorySaver`` that nobody clears (the usual way);
    * ``"sqlite"`` -- ``AsyncSqliteSaver`` on a fresh file in a temporary directory
      (one ``aiosqlite`` connection, as ``from_conn_string`` gives);
    * ``"postgres"`` / ``"postgres:<url>"`` -- ``AsyncPostgresSaver`` (skips when the
      module or the server is missing).
    """
    if kind == "default":
        yield None
    elif kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
    elif kind == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as directory:
            async with AsyncSqliteSaver.from_conn_string(str(Path(directory) / "checkpoints.db")) as saver:
                yield saver
    elif kind == "postgres" or kind.startswith("postgres:"):
        url = kind.partition(":")[2] or DEFAULT_URLS["postgres"]
        async with _postgres_saver(url) as saver:
            yield saver
    else:
        raise ValueError(f"unknown checkpointer {kind!r}; use default, memory, sqlite or postgres[:URL]")


@asynccontextmanager
async def _postgres_saver(url: str) -> AsyncIterator[Any]:
    saver_module = require_module("langgraph.checkpoint.postgres.aio", extra="postgres")
    pool_module = require_module("psycopg_pool", extra="postgres")
    psycopg = require_module("psycopg", extra="postgres")
    from psycopg.rows import dict_row

    require_reachable(url)
    # A fresh schema per run: ids never meet an earlier run's checkpoints, and
    # nothing is left behind in the shared database.
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            async with pool_module.AsyncConnectionPool(
                url,
                min_size=1,
                max_size=POSTGRES_POOL_SIZE,
                open=False,
                kwargs={
                    "autocommit": True,
                    "prepare_threshold": 0,
                    "row_factory": dict_row,
                    "options": f"-c search_path={schema}",
                },
            ) as pool:
                saver = saver_module.AsyncPostgresSaver(pool)
                await saver.setup()
                yield saver
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")


@asynccontextmanager
async def open_bus_for_benchmark(url: str, **options: Any) -> AsyncIterator[Any]:
    """The event bus ``url`` names (``memory://``, ``amqp://...``, ``nats://...``),
    opened with ``agent_coordinator.bus.open_bus(url, **options)`` and closed on exit. Skips when the
    backend is missing or its service unreachable."""
    from agent_coordinator.bus import open_bus
    from agent_coordinator.core.errors import BusError

    if urlsplit(url).scheme != "memory":
        require_reachable(url)
    try:
        bus = open_bus(url, **options)
    except BusError as exc:
        raise ScenarioSkipped(str(exc)) from None
    try:
        yield bus
    finally:
        await bus.close()
