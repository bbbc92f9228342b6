"""What both modes' drivers share: waiting on the log, killing, and keeping the record.

A driver executes a kill schedule against the processes of one mode
(:mod:`tests.process.torture.orchestration`, :mod:`tests.process.torture.choreography`), then the
closing phase (resume; run the same file again), and keeps a record of every kill,
every incident (a process that hung, exited by itself, a kill that could not fire)
and every process it started, for the checker and the report.

Nothing waits by the clock for correctness: a wait is a poll of a condition on the
event log or a process, bounded by the *stall* limit (no new event while orders are
unfinished) and by the run's time limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.process.torture.event_log import EventLogWatcher, Takeover
from tests.process.torture.processes import POLL_S, Process, ProcessStarter, Sandbox
from tests.process.torture.schedule import KillKind, PlannedKill
from tests.process.torture.world import World

__all__ = ["Aborted", "Driver", "DriverPaths", "Incident", "KillRecord", "Stalled"]


class Stalled(Exception):
    """No new event for the stall limit while orders are unfinished."""


class Aborted(Exception):
    """The schedule cannot go on (time limit, repeated stalls); the closing phase still runs."""


@dataclass
class KillRecord:
    """One SIGKILL moment (of one or several processes, or of the broker)."""

    number: int
    planned: int | None  # index of the planned kill it belongs to
    kind: KillKind
    roles: list[str]
    pids: list[int]
    events: int  # distinct events in the log at the kill
    at: float  # time.monotonic()
    takeover: Takeover | None = None

    @property
    def in_flight(self) -> int:
        return self.takeover.orders if self.takeover else 0


@dataclass
class Incident:
    """Something the harness saw go wrong that is not a kill it planned."""

    what: str  # stall, exit, missed, aborted, hung, note
    detail: str
    at_events: int
    at_s: float  # seconds since the driver started


@dataclass(frozen=True)
class DriverPaths:
    workdir: Path
    orders: Path
    state_dir: Path
    logs: Path

    @property
    def events(self) -> Path:
        return self.state_dir / "events.db"


@dataclass
class Driver:
    """The shared half of a mode's driver."""

    world: World
    paths: DriverPaths
    starter: ProcessStarter
    watcher: EventLogWatcher
    sandbox: Sandbox
    concurrency: int
    stall_s: float
    time_limit_at: float | None
    kills: list[KillRecord] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    planned_done: set[int] = field(default_factory=set)
    closing: Process | None = None  # the closing `run` of the same file, else the closing `resume`
    closing_complete: bool = False
    status_rows: list[dict[str, object]] = field(default_factory=list)
    status_ok: bool = False
    dead_letters: int | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)
    last_kill_events: int = 0  # distinct events at the latest kill: the next one waits for more
    _floor: float = field(default_factory=time.monotonic)

    mode = "?"

    # -- the record ------------------------------------------------------------------------

    def incident(self, what: str, detail: str) -> None:
        self.incidents.append(Incident(what, detail, self.watcher.distinct, round(time.monotonic() - self.began, 2)))

    def all_ended(self) -> bool:
        return self.watcher.ended_orders >= len(self.world.orders)

    def describe_in_flight(self, limit: int = 8) -> str:
        flight = sorted(self.watcher.in_flight())
        waiting = ", ".join(f"{s} after {self.watcher.orders[s].last_type}" for s in flight[:limit])
        unplaced = sum(1 for o in self.world.orders if o.order_id not in self.watcher.orders)
        more = f" and {len(flight) - limit} more" if len(flight) > limit else ""
        return f"{len(flight)} in flight ({waiting}{more}); {unplaced} never placed"

    async def kill(
        self,
        processes: Sequence[Process],
        kind: KillKind,
        planned: PlannedKill | None,
        waiting_on: frozenset[str] | None = None,
        *,
        other: tuple[str, Callable[[], Awaitable[None]]] | None = None,
    ) -> KillRecord:
        """SIGKILL ``processes`` at once (and ``other``: a name and how to kill it, the
        broker); clock the takeover of the orders left in flight (those whose latest
        event is one of ``waiting_on``; all when None)."""
        self.watcher.poll()
        flight = self.watcher.in_flight(waiting_on)
        at = time.monotonic()
        await asyncio.gather(*(p.kill() for p in processes), *([other[1]()] if other else []))
        record = KillRecord(
            number=len(self.kills),
            planned=planned.index if planned else None,
            kind=kind,
            roles=[p.role for p in processes] + ([other[0]] if other else []),
            pids=[p.pid for p in processes],
            events=self.watcher.distinct,
            at=at,
        )
        record.takeover = self.watcher.start_takeover(record.number, at, flight)
        self.kills.append(record)
        self.last_kill_events = record.events
        if planned is not None:
            self.planned_done.add(planned.index)
        self._floor = time.monotonic()
        return record

    def restarted(self) -> None:
        """A process was (re)started: it gets the stall limit from now to show progress."""
        self._floor = time.monotonic()

    # -- waiting ---------------------------------------------------------------------------

    async def supervise(self) -> None:
        """Called on every poll of a wait (choreography restarts workers that died)."""

    async def until(
        self, condition: Callable[[], bool], watch: Sequence[Process] = (), *, closing: bool = False
    ) -> bool:
        """Wait until ``condition`` holds (True) or one of ``watch`` exits (False).

        Raises Stalled when no new event arrives for the stall limit (whatever is
        awaited, a healthy system keeps logging events, or its processes exit), and
        Aborted past the time limit (not in the ``closing`` phase).
        """
        while True:
            self.watcher.poll()
            await self.supervise()
            if condition():
                return True
            if any(not p.alive for p in watch):
                return False
            now = time.monotonic()
            if now - max(self.watcher.last_progress, self._floor) > self.stall_s:
                raise Stalled(f"no new event for {self.stall_s:g}s: {self.describe_in_flight()}")
            if self.time_limit_at is not None and now > self.time_limit_at and not closing:
                raise Aborted("the time limit for the kill schedule passed")
            await asyncio.sleep(POLL_S)  # polling a condition, bounded by the stall and time limits

    def phase(self, name: str) -> None:
        """Mark the start of a phase (the report gives each one's duration)."""
        self.phases.append((name, time.monotonic()))

    async def exited(self, process: Process, what: str) -> bool:
        """Wait for ``process`` to exit by itself; if it hangs (no progress for the stall
        limit), record it, kill it and return False."""
        self.restarted()
        try:
            await self.until(lambda: not process.alive, closing=True)
            await process.wait()
            return True
        except (Stalled, Aborted) as exc:
            self.incident("hung", f"{what} ({process.role}, pid {process.pid}) did not exit: {exc}")
            await process.kill()
            return False

    async def pause(self, milliseconds: float) -> None:
        """The seeded delay after an observed moment (part of the kill schedule)."""
        if milliseconds > 0:
            await asyncio.sleep(milliseconds / 1000)

    # -- the report's inputs ----------------------------------------------------------------

    def state_args(self) -> list[str]:
        """Where the state is, as coordinator options."""
        return ["--state-dir", str(self.paths.state_dir)]

    def reporting_processes(self) -> list[Process]:
        """Processes whose `--json` lines report runs' statuses, in the order they ended."""
        chosen = [p for p in self.starter.started if p.role in ("run", "resume", "owner") and p.ended is not None]
        return sorted(chosen, key=lambda p: p.ended or 0.0)

    async def read_status(self) -> None:
        """``coordinator status --json``: what the product says each workflow's state is."""
        process = await self.starter.spawn("status", "status", "--json", *self.state_args())
        try:
            code = await asyncio.wait_for(process.wait(), 120.0)
        except TimeoutError:
            await process.kill()
            self.incident("hung", "coordinator status did not answer within 120s")
            return
        self.status_rows = process.json_lines()
        self.status_ok = code == 0
        if code != 0:
            self.incident("exit", f"coordinator status exited {code}: {process.last_error_line()}")
