"""The event log: every event of every run, in either mode, for tracing afterwards.

Both coordinators append each event they emit (orchestration: the graph node that
emitted it; choreography: the participant that published it). Appends are
idempotent on (run id, event id): a re-run node or a redelivered handler re-emits an
event with the same id, and the log keeps one copy.

Runs: a workflow's start event is appended with an explicit ``run_id`` (one CLI
invocation, say); every later event *inherits* the run of its cause, looked up in
the log. So a run resumed by another process after a crash, or continued by worker
processes that know nothing of the run, still lands in the run it belongs to.

:class:`SqliteEventLog` is the default (a file under the state directory; WAL mode,
so several processes can append to one file); :class:`MemoryEventLog` is for tests.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from coordinator.events import Event, parse_event

__all__ = ["ORPHAN_RUN", "EventLog", "MemoryEventLog", "SqliteEventLog", "causal_order"]


class EventLog(Protocol):
    """Append-only store of events, grouped by run.

    * ``append`` is idempotent per (run_id, event.id) and durable when it returns;
      with ``run_id=None`` each event joins the latest run that holds its cause
      (``"orphan"`` when the cause is unknown);
    * ``events(subject)`` returns one workflow's events of one run (the latest run
      that has any, unless ``run_id`` is given) in append order;
    * safe to call from several coroutines; SQLite also from several processes.
    """

    def append(self, events: Sequence[Event], *, run_id: str | None = None) -> None: ...

    def events(self, subject: str, *, run_id: str | None = None) -> list[Event]: ...

    def close(self) -> None: ...


ORPHAN_RUN = "orphan"


class MemoryEventLog:
    """An in-process event log (tests, throwaway runs)."""

    def __init__(self) -> None:
        # subject -> run id -> event id -> event (dicts keep append order)
        self._subjects: dict[str, dict[str, dict[str, Event]]] = {}
        self._run_of: dict[str, str] = {}  # event id -> latest run holding it

    def append(self, events: Sequence[Event], *, run_id: str | None = None) -> None:
        for event in events:
            run_of_event = run_id or self._run_of.get(event.causation_id or "", ORPHAN_RUN)
            self._run_of[event.id] = run_of_event
            runs = self._subjects.setdefault(event.subject, {})
            bucket = runs.setdefault(run_of_event, {})
            if event.id not in bucket:
                bucket[event.id] = event
                if next(reversed(runs)) != run_of_event:  # the run with the newest event is the latest
                    runs[run_of_event] = runs.pop(run_of_event)

    def events(self, subject: str, *, run_id: str | None = None) -> list[Event]:
        runs = self._subjects.get(subject, {})
        if run_id is None:
            run_id = next(reversed(runs), None) if runs else None
        return list(runs.get(run_id or "", {}).values())

    def forget(self, subject: str) -> None:
        """Drop every event of ``subject`` (a long-lived process bounding its memory)."""
        self._subjects.pop(subject, None)

    def close(self) -> None:
        return None


class SqliteEventLog:
    """An event log in one SQLite file (WAL; shared by processes on one machine)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False + a lock: coordinators may append from worker threads.
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id TEXT NOT NULL,
                id TEXT NOT NULL,
                subject TEXT NOT NULL,
                type TEXT NOT NULL,
                causation_id TEXT,
                body TEXT NOT NULL,
                UNIQUE (run_id, id)
            )"""
        )
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS runs (
                run_id TEXT PRIMARY KEY,
                workflow TEXT NOT NULL,
                mode TEXT NOT NULL,
                started TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
            )"""
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS events_subject ON events (subject, seq)")
        self._db.execute("CREATE INDEX IF NOT EXISTS events_id ON events (id, seq)")

    def append(self, events: Sequence[Event], *, run_id: str | None = None) -> None:
        with self._lock:
            for event in events:
                run = run_id
                if run is None:
                    row = self._db.execute(
                        "SELECT run_id FROM events WHERE id = ? ORDER BY seq DESC LIMIT 1", (event.causation_id,)
                    ).fetchone()
                    run = row[0] if row else ORPHAN_RUN
                self._db.execute(
                    "INSERT OR IGNORE INTO events (run_id, id, subject, type, causation_id, body) VALUES (?,?,?,?,?,?)",
                    (run, event.id, event.subject, event.type, event.causation_id, event.to_json()),
                )

    def events(self, subject: str, *, run_id: str | None = None) -> list[Event]:
        with self._lock:
            if run_id is None:
                row = self._db.execute(
                    "SELECT run_id FROM events WHERE subject = ? ORDER BY seq DESC LIMIT 1", (subject,)
                ).fetchone()
                if row is None:
                    return []
                run_id = row[0]
            rows = self._db.execute(
                "SELECT body FROM events WHERE subject = ? AND run_id = ? ORDER BY seq", (subject, run_id)
            ).fetchall()
        return [parse_event(body) for (body,) in rows]

    def begin_run(self, run_id: str, *, workflow: str, mode: str) -> None:
        """Record which workflow and mode a run id stands for (for resume/approve)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO runs (run_id, workflow, mode) VALUES (?, ?, ?)", (run_id, workflow, mode)
            )

    def run_mode(self, run_id: str) -> str | None:
        """The mode run ``run_id`` used, if it was recorded."""
        with self._lock:
            row = self._db.execute("SELECT mode FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def latest(self) -> list[tuple[str, str, Event]]:
        """Every subject's most recent event: ``(subject, run_id, event)``, by subject."""
        with self._lock:
            rows = self._db.execute(
                "SELECT subject, run_id, body FROM events WHERE seq IN "
                "(SELECT MAX(seq) FROM events GROUP BY subject) ORDER BY subject"
            ).fetchall()
        return [(subject, run_id, parse_event(body)) for subject, run_id, body in rows]

    def runs(self, subject: str) -> list[str]:
        """The runs that have events for ``subject``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, MIN(seq) AS first FROM events WHERE subject = ? GROUP BY run_id ORDER BY first",
                (subject,),
            ).fetchall()
        return [r for r, _ in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def causal_order(events: Sequence[Event]) -> list[tuple[int, Event]]:
    """Events arranged as a causal tree, depth-first: ``(depth, event)`` pairs.

    Roots are events whose cause is not among ``events``; children follow their
    cause, in the order they were given.
    """
    ids = {e.id for e in events}
    children: dict[str | None, list[Event]] = {}
    for event in events:
        parent = event.causation_id if event.causation_id in ids else None
        children.setdefault(parent, []).append(event)
    ordered: list[tuple[int, Event]] = []

    def walk(parent: str | None, depth: int) -> None:
        for child in children.get(parent, []):
            ordered.append((depth, child))
            walk(child.id, depth + 1)

    walk(None, 0)
    return ordered
