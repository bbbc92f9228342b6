"""The event log: every event of every run, in either mode, for tracing afterwards.

Both coordinators append each event they emit (orchestration: the graph node that
emitted it; choreography: the participant that published it). Appends are
idempotent on (run id, event id): a re-run node or a redelivered handler re-emits an
event with the same id, and the log keeps one copy.

Runs: a workflow's start event is appended with an explicit ``run_id`` (one CLI
invocation, say); every later event *inherits* the run of its cause, looked up in
the log. So a run resumed by another process after a crash, or continued by worker
processes that know nothing of the run, still lands in the run it belongs to.

The ``runs`` table says what each run id stands for (:class:`RunRecord`): the
workflow's name, the ``WorkflowApp`` that ran it (``package.module:attribute``, so
that ``status``, ``resume``, ``trace``, ``approve`` and ``reject`` load the right app
for each run), the mode, and when it started. Files written before the app was
recorded are migrated in place (the column is added, empty).

:class:`SqliteEventLog` is the default (a file under the state directory; WAL mode,
so several processes can append to one file); :class:`MemoryEventLog` is for tests.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from agent_coordinator.core.events import Event, parse_event
from agent_coordinator.core.sqlite import connect_shared

__all__ = [
    "ORPHAN_RUN",
    "EventLog",
    "MemoryEventLog",
    "RunRecord",
    "SqlEventLog",
    "SqliteEventLog",
    "canonical_order",
    "causal_order",
    "last_events",
]


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


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a run id stands for, as :meth:`SqliteEventLog.begin_run` recorded it.

    ``app`` is the ``WorkflowApp`` spec (``package.module:attribute``) or None for a
    run recorded before apps were (the ``workflow`` name is all there is then);
    ``started`` is an ISO 8601 UTC time -- the wall clock, or the logical clock's
    epoch for a reproducible log.
    """

    run_id: str
    workflow: str
    mode: str
    app: str | None
    started: str


class MemoryEventLog:
    """An in-process event log (tests, throwaway runs)."""

    def __init__(self) -> None:
        # subject -> run id -> event id -> event (dicts keep append order)
        self._subjects: dict[str, dict[str, dict[str, Event]]] = {}
        self._run_of: dict[str, str] = {}  # event id -> latest run holding it

    def append(self, events: Sequence[Event], *, run_id: str | None = None) -> None:
        for event in events:
            run_of_event = run_id or self._run_of.get(event.causation_id or "", ORPHAN_RUN)
            runs = self._subjects.setdefault(event.subject, {})
            bucket = runs.setdefault(run_of_event, {})
            if event.id not in bucket:
                bucket[event.id] = event
                # Only a new copy is a newer hold: a duplicate changes nothing (as in SQLite).
                self._run_of[event.id] = run_of_event
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


class SqlEventLog:
    """The queries of an event log kept in SQL tables, one place for both engines.

    :class:`SqliteEventLog` (a file) and
    :class:`~agent_coordinator.core.eventlog_postgres.PostgresEventLog` (a database
    several machines share) hold the same two tables -- ``events`` (one row per
    event and run, in append order ``seq``) and ``runs`` (what each run id stands
    for) -- and answer with the same SQL; a subclass only runs it: ``_rows`` for a
    read, ``_write`` for statements that must land together. The SQL is written with
    ``?`` placeholders and table names ``{events}``/``{runs}``; a subclass's
    ``_sql`` adapts both to its engine.
    """

    #: a printable name of where the log is (a file's path, a URL without its password)
    where: str

    #: column that orders ``runs`` as they were recorded
    _runs_order = "rowid"

    def _sql(self, sql: str) -> str:
        return sql.format(events="events", runs="runs")

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _write(self, statements: Sequence[tuple[str, Sequence[object]]]) -> None:
        raise NotImplementedError

    def append(self, events: Sequence[Event], *, run_id: str | None = None) -> None:
        # One statement per event, in order, in one transaction: an event may join the
        # run of a cause appended just before it in the same call.
        self._write(
            [
                (
                    "INSERT INTO {events} (run_id, id, subject, type, causation_id, body) VALUES ("
                    "COALESCE(CAST(? AS TEXT), "
                    "(SELECT run_id FROM {events} WHERE id = ? ORDER BY seq DESC LIMIT 1), ?), ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (
                        run_id,
                        event.causation_id,
                        ORPHAN_RUN,
                        event.id,
                        event.subject,
                        event.type,
                        event.causation_id,
                        event.to_json(),
                    ),
                )
                for event in events
            ]
        )

    def events(self, subject: str, *, run_id: str | None = None) -> list[Event]:
        if run_id is None:
            rows = self._rows("SELECT run_id FROM {events} WHERE subject = ? ORDER BY seq DESC LIMIT 1", (subject,))
            if not rows:
                return []
            run_id = rows[0][0]
        rows = self._rows("SELECT body FROM {events} WHERE subject = ? AND run_id = ? ORDER BY seq", (subject, run_id))
        return [parse_event(body) for (body,) in rows]

    def begin_run(
        self,
        run_id: str,
        *,
        workflow: str,
        mode: str,
        app: str | None = None,
        started: datetime | None = None,
    ) -> RunRecord:
        """Record what ``run_id`` stands for: the workflow's name, the ``app`` spec that
        runs it (``package.module:attribute``), the mode, and when it started
        (``started``; default now -- pass the logical clock's epoch for a
        reproducible log).

        A run id is recorded once; beginning it again (a re-run with the same
        ``--run-id``) keeps the first record, which is returned, so the caller can
        refuse a run id that stands for another workflow or mode.
        """
        stamp = _iso(started or datetime.now(UTC))
        self._write(
            [
                (
                    "INSERT INTO {runs} (run_id, workflow, mode, app, started) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (run_id, workflow, mode, app, stamp),
                )
            ]
        )
        record = self.run(run_id)
        assert record is not None  # inserted above, or there already
        return record

    def run(self, run_id: str) -> RunRecord | None:
        """What ``run_id`` stands for, if it was recorded (:meth:`begin_run`)."""
        rows = self._rows("SELECT run_id, workflow, mode, app, started FROM {runs} WHERE run_id = ?", (run_id,))
        return RunRecord(*rows[0]) if rows else None

    def run_mode(self, run_id: str) -> str | None:
        """The mode run ``run_id`` used, if it was recorded."""
        record = self.run(run_id)
        return None if record is None else record.mode

    def all_runs(self) -> list[RunRecord]:
        """Every recorded run, in the order they were recorded."""
        rows = self._rows(f"SELECT run_id, workflow, mode, app, started FROM {{runs}} ORDER BY {self._runs_order}")
        return [RunRecord(*row) for row in rows]

    def latest(self) -> list[tuple[str, str, Event]]:
        """Every subject's most recent event: ``(subject, run_id, event)``, by subject."""
        rows = self._rows(
            "SELECT subject, run_id, body FROM {events} WHERE seq IN "
            "(SELECT MAX(seq) FROM {events} GROUP BY subject) ORDER BY subject"
        )
        return [(subject, run_id, parse_event(body)) for subject, run_id, body in rows]

    def runs(self, subject: str) -> list[str]:
        """The runs that have events for ``subject``, oldest first."""
        rows = self._rows(
            "SELECT run_id, MIN(seq) AS first FROM {events} WHERE subject = ? GROUP BY run_id ORDER BY first",
            (subject,),
        )
        return [r for r, _ in rows]

    def subjects(self) -> list[str]:
        """Every workflow id the log holds events of, sorted."""
        return [subject for (subject,) in self._rows("SELECT DISTINCT subject FROM {events} ORDER BY subject")]

    def every_event(self) -> Iterator[Event]:
        """Every event in the log, each once (the first copy of one logged under several
        runs), in append order: one query, for readers of the whole log (metrics)."""
        seen: set[str] = set()
        for (body,) in self._rows("SELECT body FROM {events} ORDER BY seq"):
            event = parse_event(body)
            if event.id not in seen:
                seen.add(event.id)
                yield event

    def last_events(self, subjects: Sequence[str]) -> dict[str, Event]:
        """The most recent event of each of ``subjects`` that has any, in one query per
        500 (a follower of many runs polls this, not :meth:`events` per run)."""
        found: dict[str, Event] = {}
        for start in range(0, len(subjects), 500):
            chunk = list(subjects[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows = self._rows(
                "SELECT subject, body FROM {events} WHERE seq IN "
                f"(SELECT MAX(seq) FROM {{events}} WHERE subject IN ({marks}) GROUP BY subject)",
                chunk,
            )
            found.update((subject, parse_event(body)) for subject, body in rows)
        return found

    def export(self) -> Iterator[str]:
        """Every event in the log as JSON text, in a canonical order that does not
        depend on how runs interleaved or which mode ran them: by workflow id, then
        each workflow's events in :func:`canonical_order` (an event appended to
        several runs appears once). With a logical clock and a seed, two logs of the
        same inputs export the same bytes."""
        for subject in self.subjects():
            rows = self._rows("SELECT body FROM {events} WHERE subject = ? ORDER BY seq", (subject,))
            unique: dict[str, Event] = {}
            for (body,) in rows:
                event = parse_event(body)
                unique.setdefault(event.id, event)
            for _, event in canonical_order(list(unique.values())):
                yield event.to_json()

    def close(self) -> None:
        raise NotImplementedError


class SqliteEventLog(SqlEventLog):
    """An event log in one SQLite file (WAL; shared by processes on one machine)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False + a lock: coordinators may append from worker threads.
        self._db = connect_shared(self.path)
        self._lock = threading.Lock()
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
                started TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                app TEXT
            )"""
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS events_subject ON events (subject, seq)")
        self._db.execute("CREATE INDEX IF NOT EXISTS events_id ON events (id, seq)")
        self._migrate()

    def _migrate(self) -> None:
        """Bring a file written by an older version up to this schema, in place."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "app" not in columns:
            # Several processes may open an old file at once: the loser of the race
            # finds the column there, which is what it wanted.
            try:
                self._db.execute("ALTER TABLE runs ADD COLUMN app TEXT")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(self._sql(sql), params).fetchall()

    def _write(self, statements: Sequence[tuple[str, Sequence[object]]]) -> None:
        with self._lock:
            if len(statements) == 1:
                self._db.execute(self._sql(statements[0][0]), statements[0][1])
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(self._sql(sql), params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def last_events(log: EventLog, subjects: Sequence[str]) -> dict[str, Event]:
    """The most recent event of each of ``subjects`` that ``log`` has: through the
    log's own ``last_events`` when it has one (one query for many runs), else one
    :meth:`EventLog.events` call per subject."""
    batch = getattr(log, "last_events", None)
    if batch is not None:
        found: dict[str, Event] = batch(subjects)
        return found
    return {subject: events[-1] for subject in subjects if (events := log.events(subject))}


def _iso(moment: datetime) -> str:
    """``moment`` as the ``runs.started`` text: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def causal_order(events: Sequence[Event]) -> list[tuple[int, Event]]:
    """Events arranged as a causal tree, depth-first: ``(depth, event)`` pairs.

    Roots are events whose cause is not among ``events``; children follow their
    cause, in the order they were given.
    """
    return _tree_order(events, sort=False)


def canonical_order(events: Sequence[Event]) -> list[tuple[int, Event]]:
    """:func:`causal_order` with siblings (and roots) sorted by time, type and id
    instead of arrival: the same events in any order give the same sequence."""
    return _tree_order(events, sort=True)


def _tree_order(events: Sequence[Event], *, sort: bool) -> list[tuple[int, Event]]:
    ids = {e.id for e in events}
    children: dict[str | None, list[Event]] = {}
    for event in events:
        parent = event.causation_id if event.causation_id in ids else None
        children.setdefault(parent, []).append(event)
    if sort:
        for siblings in children.values():
            siblings.sort(key=lambda e: (e.time, e.type, e.id))
    ordered: list[tuple[int, Event]] = []

    def walk(parent: str | None, depth: int) -> None:
        for child in children.get(parent, []):
            ordered.append((depth, child))
            walk(child.id, depth + 1)

    walk(None, 0)
    return ordered
