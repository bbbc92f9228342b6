"""Processes that open one new SQLite store at the same moment all get in.

Seen in the broker process tests: six workers started together on a fresh state
directory, and one exited "cannot create the event log ...: database is locked" --
switching a new file to WAL takes an exclusive lock SQLite does not always wait
for. Here twelve processes start on a barrier and open the same new file through
:func:`connect_shared`, ten times over (plain ``sqlite3.connect`` + ``PRAGMA
journal_mode=WAL`` failed in about one round in eight on this machine)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from agent_coordinator.core.sqlite import connect_shared

PROCESSES = 12
ROUNDS = 10


def _open_and_write(args: tuple[str, float]) -> str | None:
    path, start_at = args
    while time.time() < start_at:  # a barrier across processes: all open at once
        pass
    try:
        db = connect_shared(path)
        db.execute("CREATE TABLE IF NOT EXISTS t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        db.close()
    except Exception as exc:  # reported to the test, which names it
        return f"{type(exc).__name__}: {exc}"
    return None


def test_processes_opening_one_new_store_at_once_all_get_in(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        pool.map(time.sleep, [0.0] * PROCESSES)  # started before the rounds
        for round_ in range(ROUNDS):
            path = str(tmp_path / f"store-{round_}.db")
            start_at = time.time() + 0.1
            errors = [e for e in pool.map(_open_and_write, [(path, start_at)] * PROCESSES) if e]
            assert errors == [], (round_, errors)
            db = connect_shared(path)
            assert db.execute("SELECT count(*) FROM t").fetchone() == (PROCESSES,)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            db.close()
