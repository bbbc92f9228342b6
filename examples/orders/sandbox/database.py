"""The sandbox's state on disk: one SQLite file that outlives and is shared by processes.

``Sandbox(store=path)`` keeps, per service, every idempotency key's attempt count,
effect count and stored answer, every record with its current status, and the
inventory's stock, in ``path``; a new ``Sandbox`` on the same file loads all of it
back. Without a store none of this module runs.

Write rule (why an answer is never sent for an effect that is not on disk): every
effectful request runs inside one ``BEGIN IMMEDIATE`` transaction, taken under the
service's lock, which

1. re-reads the rows the request involves (its idempotency key; the record an undo
   names; the stock of the SKUs it moves) into memory, so changes committed by
   another ``Sandbox`` on the same file -- in this process or another -- are seen;
2. runs the service's ordinary in-memory logic;
3. writes the changed rows and commits; only then is the answer sent.

``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so the read-modify-write of
step 1-3 is atomic across connections and processes: several processes may each
embed a ``Sandbox`` on one file (e.g. choreography workers) and a stock unit is
still never sold twice, a key never makes its effect twice. A writer that finds the
file locked waits up to :data:`BUSY_TIMEOUT_S` (blocking its event loop meanwhile;
each transaction holds the lock for well under a millisecond). If the transaction
fails the in-memory state is reloaded from the file and the request fails (500).

Reads (``GET`` routes, ``sandbox.inventory.stock``, :meth:`Sandbox.effects_for`)
answer from memory: what this ``Sandbox`` loaded when opened plus the rows its own
requests touched. To see other writers' changes, call :meth:`Sandbox.reload` (or
open a new ``Sandbox`` on the file) before checking invariants.

Durability: WAL journal with ``synchronous=NORMAL``, so a committed request
survives the process being killed (SIGKILL) at any point; a power loss may lose the
last few commits (``synchronous=FULL`` would fsync every request).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent_coordinator.core.errors import InvalidInput
from agent_coordinator.core.sqlite import connect_shared
from agent_coordinator.examples.orders.sandbox.scenario import Scenario

__all__ = ["BUSY_TIMEOUT_S", "SCHEMA_VERSION", "KeyRow", "RecordRow", "SandboxDatabase"]

#: Version of the file layout; a file written by another version is refused.
SCHEMA_VERSION = 2  # 2: reservations carry their catalogue prices, total and currency
#: How long a writer waits for another connection's write lock before failing.
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    service TEXT NOT NULL,
    key TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    effects INTEGER NOT NULL,
    replays INTEGER NOT NULL,
    faults INTEGER NOT NULL,
    refusals INTEGER NOT NULL,
    answer TEXT,
    PRIMARY KEY (service, key)
);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    record_id TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (service, record_id)
);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    available INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class KeyRow:
    """What the file holds for one idempotency key of one service. ``answer`` is the
    stored answer as JSON text (``None`` while no attempt executed)."""

    key: str
    attempts: int
    effects: int
    replays: int
    faults: int
    refusals: int
    answer: str | None


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One record: its current status and its full state as created (a dict)."""

    record_id: str
    status: str
    data: dict[str, Any]


class SandboxDatabase:
    """One open sandbox store file (see the module docstring for the write rule).

    Opening creates the file if needed. ``scenario=None`` adopts the scenario the file
    was created with (:meth:`Scenario.default` for a new file); a scenario that differs
    from the stored one raises :class:`~agent_coordinator.core.errors.InvalidInput` naming the file
    and the differing fields, as does a file that is not a sandbox store.

    All methods must be called inside :meth:`transaction` (writes) or :meth:`snapshot`
    (consistent reads); the connection is shared by the sandbox's three services and
    guarded by one lock.
    """

    def __init__(self, path: str | Path, scenario: Scenario | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._conn = connect_shared(self.path, timeout=BUSY_TIMEOUT_S)
        except sqlite3.OperationalError as exc:
            raise InvalidInput(f"cannot open sandbox store {str(self.path)!r}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # opened, but its header is not SQLite's
            raise InvalidInput(f"sandbox store {str(self.path)!r} is not a sandbox store: {exc}") from exc
        except sqlite3.Error as exc:
            raise InvalidInput(f"cannot open sandbox store {str(self.path)!r}: {exc}") from exc
        try:
            self.scenario = self._initialise(scenario)
        except BaseException:
            self._conn.close()
            raise

    def _initialise(self, scenario: Scenario | None) -> Scenario:
        where = f"sandbox store {str(self.path)!r}"
        try:
            with self.transaction() as conn:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "meta" not in tables:
                    raise InvalidInput(
                        f"{where} is not a sandbox store: it holds other tables ({', '.join(sorted(tables))})"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
                if not meta:
                    chosen = scenario if scenario is not None else Scenario.default()
                    conn.executemany(
                        "INSERT INTO meta (name, value) VALUES (?, ?)",
                        [("schema_version", str(SCHEMA_VERSION)), ("scenario", chosen.model_dump_json())],
                    )
                    conn.executemany(
                        "INSERT OR REPLACE INTO stock (sku, available) VALUES (?, ?)",
                        [(sku, item.stock) for sku, item in chosen.catalogue.items()],
                    )
                    return chosen
        except sqlite3.OperationalError as exc:
            raise InvalidInput(f"cannot open {where}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise InvalidInput(f"{where} is not a sandbox store: {exc}") from exc
        if meta.get("schema_version") != str(SCHEMA_VERSION) or "scenario" not in meta:
            raise InvalidInput(
                f"{where} has layout version {meta.get('schema_version')!r}, this sandbox reads {SCHEMA_VERSION}; "
                "use a new file"
            )
        try:
            stored = Scenario.model_validate_json(meta["scenario"])
        except ValidationError as exc:
            raise InvalidInput(f"{where} holds a scenario this sandbox cannot read: {exc}") from exc
        if scenario is not None and scenario != stored:
            ours, theirs = scenario.model_dump(), stored.model_dump()
            fields = ", ".join(name for name in ours if ours[name] != theirs[name])
            raise InvalidInput(
                f"{where} was created with a different scenario (differs in: {fields}); "
                "open it without a scenario to use the stored one, or use a new file"
            )
        return stored

    def close(self) -> None:
        """Close the file; the sandbox must not be used afterwards."""
        with self._lock:
            self._conn.close()

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` if the block raises or the
        commit fails), holding this object's lock throughout."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every read inside sees one consistent state of the file."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    # -- idempotency keys ------------------------------------------------------------

    def load_key(self, service: str, key: str) -> KeyRow | None:
        row = self._conn.execute(
            "SELECT key, attempts, effects, replays, faults, refusals, answer FROM idempotency "
            "WHERE service = ? AND key = ?",
            (service, key),
        ).fetchone()
        return KeyRow(*row) if row is not None else None

    def load_keys(self, service: str) -> list[KeyRow]:
        rows = self._conn.execute(
            "SELECT key, attempts, effects, replays, faults, refusals, answer FROM idempotency WHERE service = ?",
            (service,),
        ).fetchall()
        return [KeyRow(*row) for row in rows]

    def save_key(
        self,
        service: str,
        key: str,
        *,
        attempts: int,
        effects: int,
        replays: int,
        faults: int,
        refusals: int,
        answer: str | None,
    ) -> None:
        """Write ``key``'s row: ``attempts`` and ``effects`` as totals, the other counts
        as increments, ``answer`` only if none is stored yet."""
        self._conn.execute(
            "INSERT INTO idempotency (service, key, attempts, effects, replays, faults, refusals, answer) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (service, key) DO UPDATE SET attempts = excluded.attempts, effects = excluded.effects, "
            "replays = replays + excluded.replays, faults = faults + excluded.faults, "
            "refusals = refusals + excluded.refusals, answer = COALESCE(answer, excluded.answer)",
            (service, key, attempts, effects, replays, faults, refusals, answer),
        )

    # -- records ---------------------------------------------------------------------

    def load_record(self, service: str, record_id: str) -> RecordRow | None:
        row = self._conn.execute(
            "SELECT record_id, status, data FROM records WHERE service = ? AND record_id = ?", (service, record_id)
        ).fetchone()
        return RecordRow(row[0], row[1], json.loads(row[2])) if row is not None else None

    def load_records(self, service: str) -> list[RecordRow]:
        """Every record of ``service``, oldest first."""
        rows = self._conn.execute(
            "SELECT record_id, status, data FROM records WHERE service = ? ORDER BY seq", (service,)
        ).fetchall()
        return [RecordRow(r[0], r[1], json.loads(r[2])) for r in rows]

    def insert_record(self, service: str, record_id: str, status: str, data: dict[str, Any]) -> None:
        self._conn.execute(
            "INSERT INTO records (service, record_id, status, data) VALUES (?, ?, ?, ?)",
            (service, record_id, status, json.dumps(data, separators=(",", ":"))),
        )

    def update_status(self, service: str, record_id: str, status: str) -> None:
        self._conn.execute(
            "UPDATE records SET status = ? WHERE service = ? AND record_id = ?", (status, service, record_id)
        )

    # -- stock -----------------------------------------------------------------------

    def load_stock(self, skus: Iterable[str] | None = None) -> dict[str, int]:
        """Available units of ``skus`` (all SKUs when ``None``); unknown SKUs are left out."""
        if skus is None:
            return dict(self._conn.execute("SELECT sku, available FROM stock").fetchall())
        found: dict[str, int] = {}
        for sku in skus:
            row = self._conn.execute("SELECT available FROM stock WHERE sku = ?", (sku,)).fetchone()
            if row is not None:
                found[sku] = row[0]
        return found

    def save_stock(self, stock: dict[str, int]) -> None:
        self._conn.executemany("UPDATE stock SET available = ? WHERE sku = ?", [(n, sku) for sku, n in stock.items()])
