"""Driving orchestration through a kill schedule: `coordinator run` / `coordinator resume`.

One `coordinator run FILE` works through the batch, checkpointing to SQLite (the
state directory) or PostgreSQL (``--state URL``). At each planned kill it is
SIGKILLed and started again on the same file -- which answers ended orders from
their checkpoints and resumes the rest -- or, for a ``resume`` kill, a `coordinator
resume` is started in its place and killed in turn. After the schedule the run is
left to finish; then `coordinator resume` and the same `coordinator run` again are
the closing phase, and their `--json` lines are the statuses the product reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.process.torture.driver import Aborted, Driver, Stalled
from tests.process.torture.processes import Process
from tests.process.torture.schedule import KillKind, PlannedKill

__all__ = ["OrchestrationDriver"]


@dataclass
class OrchestrationDriver(Driver):
    state: str | None = None  # --state (None: SQLite in the state directory)
    current: Process | None = None

    mode = "orchestration"

    def state_args(self) -> list[str]:
        args = super().state_args()
        return args if self.state is None else [*args, "--state", self.state]

    def _common(self) -> list[str]:
        return ["--services", self.sandbox.url, *self.state_args(), "--concurrency", str(self.concurrency), "--json"]

    async def start_run(self, *, fresh_floor: bool = True) -> Process:
        """`run` on the whole file. ``fresh_floor``: it gets the whole stall limit to show
        progress (not so for a restart after a run died by itself: a run that keeps
        dying must end in a stall, not in a loop)."""
        if fresh_floor:
            self.restarted()
        return await self.starter.spawn("run", "run", str(self.paths.orders), *self._common())

    async def start_resume(self) -> Process:
        self.restarted()
        return await self.starter.spawn("resume", "resume", *self._common())

    # -- the schedule ----------------------------------------------------------------------

    async def drive(self, plan: list[PlannedKill]) -> None:
        self.phase("schedule")
        self.current = await self.start_run()
        stalls = 0
        for planned in plan:
            try:
                if not await self.execute(planned):
                    break
                stalls = 0
            except Stalled as exc:
                stalls += 1
                self.incident("stall", f"during {planned.describe()}: {exc}; the stalled process is killed")
                await self._kill_stalled()
                if stalls > 1:
                    self.incident("aborted", f"two stalls in a row; the schedule stops before kill {planned.index}")
                    break
                self.current = await self.start_run()
            except Aborted as exc:
                # A budget, not a verdict: the closing phase still finishes and judges every
                # order, and the test asks for most of the planned kills to have happened.
                self.incident("time-limit", f"{exc}; the schedule stops before kill {planned.index}")
                break
        await self.close_schedule()

    async def _kill_stalled(self) -> None:
        for process in self.starter.started:
            if process.role in ("run", "resume") and process.alive:
                await process.kill()

    async def reach(self, events: int) -> bool:
        """Wait until the log holds ``events`` distinct events; False when the run
        finished first. A run that dies by itself (no report) is started again."""
        while True:
            assert self.current is not None
            if await self.until(lambda: self.watcher.distinct >= events, [self.current]):
                return True
            if not self.ran_out():
                return False
            self.current = await self.start_run(fresh_floor=False)

    def ran_out(self) -> bool:
        """The run exited by itself: True when it died without reporting (an incident;
        it is to be started again), False when it finished the batch."""
        assert self.current is not None
        code = self.current.returncode
        if not self.current.json_lines():
            self.incident("exit", f"run exited {code} without reporting: {self.current.last_error_line()}")
            return True
        self.incident("note", f"the run finished (exit {code}) before the schedule did")
        return False

    async def execute(self, planned: PlannedKill) -> bool:
        """One planned kill; False when the batch ended before it could fire."""
        # A kill waits for its point, and for progress since the previous kill: the next
        # kill never lands before the system has moved again.
        if not await self.reach(max(planned.at_events, self.last_kill_events + 1)):
            return False
        assert self.current is not None
        kind = planned.kind
        if kind is KillKind.COMPENSATION:
            armed = self.watcher.compensations
            if not await self.until(lambda: self.watcher.compensations > armed, [self.current]):
                if self.ran_out():
                    self.current = await self.start_run(fresh_floor=False)
                    return True
                return False
            await self.pause(planned.delay_ms)
            await self.kill([self.current], kind, planned)
        elif kind is KillKind.RANDOM:
            await self.kill([self.current], kind, planned)
        elif kind is KillKind.DOUBLE:
            await self.kill([self.current], kind, planned)
            self.current = await self.start_run()
            seen = self.watcher.distinct
            if not await self.until(lambda: self.watcher.distinct > seen, [self.current]):
                self.incident("missed", f"{planned.describe()}: the restarted run ended before a new event")
                return False
            await self.pause(planned.delay_ms)
            await self.kill([self.current], kind, planned)
        elif kind is KillKind.STARTUP:
            await self.kill([self.current], KillKind.RANDOM, planned)
            runs = self.watcher.runs
            self.current = await self.start_run()
            if planned.landmark == "session":
                if not await self.until(lambda: self.watcher.runs > runs, [self.current]):
                    self.incident("missed", f"{planned.describe()}: the run exited before its session opened")
                    return False
                await self.pause(planned.delay_ms)
            await self.kill([self.current], kind, planned)
        elif kind is KillKind.RESUME:
            await self.kill([self.current], KillKind.RANDOM, planned)
            resume = await self.start_resume()
            seen = self.watcher.distinct
            if await self.until(lambda: self.watcher.distinct >= seen + planned.resume_events, [resume]):
                await self.kill([resume], kind, planned)
            else:
                self.incident(
                    "missed",
                    f"{planned.describe()}: resume exited {resume.returncode} after "
                    f"{self.watcher.distinct - seen} new events",
                )
        else:
            raise ValueError(f"{kind} kills are for choreography")
        self.current = await self.start_run()
        return True

    # -- the closing phase ------------------------------------------------------------------

    async def close_schedule(self) -> None:
        """Let the run finish; then `resume`, the same `run` again, and `status`."""
        self.phase("finish")
        if self.current is not None and self.current.alive:
            await self.exited(self.current, "the last run of the schedule")
        self.phase("resume")
        resume = await self.start_resume()
        await self.exited(resume, "the closing resume")
        self.phase("rerun")
        self.closing = await self.start_run()
        self.closing_complete = await self.exited(self.closing, "the closing run of the same file")
        self.phase("status")
        await self.read_status()
