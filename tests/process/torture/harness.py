"""One torture run: a world, a kill schedule, a mode's driver, the checker, a report.

:func:`run_torture` sets up a work directory (orders, scenario, state directory,
process logs, broker data), serves the sandbox in a process of its own, starts a
broker of its own for choreography or a fresh PostgreSQL schema for the
``postgresql`` backend, drives the schedule, and judges the outcome with
:func:`tests.process.torture.checker.judge`. See docs/torture.md.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.process.torture.brokers import broker_for
from tests.process.torture.checker import Closing, Verdict, fetch_services, judge
from tests.process.torture.choreography import ChoreographyDriver
from tests.process.torture.driver import Driver, DriverPaths, Incident, KillRecord
from tests.process.torture.event_log import EventLogWatcher, read_log
from tests.process.torture.orchestration import OrchestrationDriver
from tests.process.torture.processes import HarnessError, ProcessStarter, served_sandbox
from tests.process.torture.schedule import KillKind, PlannedKill, plan_kills
from tests.process.torture.world import make_world

__all__ = ["BACKENDS", "TortureConfig", "TortureReport", "run_torture"]

#: Backend -> the mode it exercises.
BACKENDS = {
    "sqlite": "orchestration",
    "postgresql": "orchestration",
    "rabbitmq": "choreography",
    "nats": "choreography",
}
#: Incidents that are failures of the product (a missed kill or a note is not).
FAILING_INCIDENTS = frozenset({"stall", "hung", "exit", "aborted", "after-end"})


@dataclass(frozen=True)
class TortureConfig:
    """What to run (the command line's options)."""

    backend: str
    orders: int = 1000
    kills: int = 40
    seed: int = 7
    concurrency: int = 24
    latency_ms: float = 4.0
    workdir: Path | None = None
    stall_s: float = 30.0
    deadline_s: float = 60.0
    time_limit_s: float | None = None
    worker_concurrency: int = 8
    postgres_url: str = field(
        default_factory=lambda: os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    keep_schema: bool = False
    closing_rerun: bool = False  # choreography: also run the same file again at the end
    kinds: tuple[str, ...] | None = None  # only these kill kinds (default: the mode's mix)

    @property
    def mode(self) -> str:
        return BACKENDS[self.backend]

    @property
    def effective_stall_s(self) -> float:
        """In choreography the owner's deadline is how a lost chain recovers: a stall
        is only declared once it has had its chance."""
        if self.mode == "choreography":
            return max(self.stall_s, self.deadline_s + 10.0)
        return self.stall_s


@dataclass
class TortureReport:
    """Everything one run found."""

    config: TortureConfig
    workdir: Path
    plan: list[PlannedKill]
    kills: list[KillRecord]
    incidents: list[Incident]
    verdict: Verdict
    duration_s: float
    closing: Closing
    phases: dict[str, float] = field(default_factory=dict)
    dead_letters: int | None = None
    broker_restarts: int = 0
    #: Of those, how many were clean stops (a young RabbitMQ node: see brokers.RA_NAMES_SAVED_AFTER_S).
    broker_graceful_stops: int = 0
    began: float = 0.0  # time.monotonic() when the driver started (kill times are relative to it)
    schema: str | None = None

    @property
    def planned_moments(self) -> int:
        return sum(p.moments for p in self.plan)

    @property
    def failing_incidents(self) -> list[Incident]:
        return [i for i in self.incidents if i.what in FAILING_INCIDENTS]

    @property
    def passed(self) -> bool:
        return self.verdict.clean and not self.failing_incidents and not self.dead_letters

    def kills_by_kind(self) -> dict[str, int]:
        counted = Counter(k.kind.value for k in self.kills)
        return {kind.value: counted[kind.value] for kind in KillKind if counted[kind.value]}

    def takeover(self) -> dict[str, Any]:
        """Per kill, the seconds until the last order it left in flight moved again (a
        new event); over the kills, the median, 90th percentile and maximum. Orders
        that never moved again are counted apart (``never_moved``): they are stranded."""
        measured = [k.takeover for k in self.kills if k.takeover is not None and k.takeover.orders]
        times = sorted(t.last_s for t in measured if t.last_s is not None)
        never = set().union(*(t.waiting for t in measured)) if measured else set()
        return {
            "kills_with_orders_in_flight": len(measured),
            "median_s": round(statistics.median(times), 3) if times else None,
            "p90_s": round(times[int(0.9 * (len(times) - 1))], 3) if times else None,
            "max_s": round(times[-1], 3) if times else None,
            "never_moved": sorted(never),
        }

    def as_json(self) -> dict[str, Any]:
        verdict = self.verdict
        return {
            "backend": self.config.backend,
            "mode": self.config.mode,
            "passed": self.passed,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in self.config.__dict__.items()},
            "workdir": str(self.workdir),
            "schema": self.schema,
            "duration_s": round(self.duration_s, 1),
            "orders": verdict.orders,
            "outcomes": verdict.outcomes,
            "kills": {
                "planned": self.planned_moments,
                "done": len(self.kills),
                "by_kind": self.kills_by_kind(),
                "processes": sum(len(k.roles) for k in self.kills),
                "broker_restarts": self.broker_restarts,
                "broker_graceful_stops": self.broker_graceful_stops,
                "list": [
                    {
                        "number": k.number,
                        "planned": k.planned,
                        "kind": k.kind.value,
                        "roles": k.roles,
                        "pids": k.pids,
                        "at_s": round(k.at - self.began, 2),
                        "events": k.events,
                        "in_flight": k.in_flight,
                        "takeover_s": None
                        if k.takeover is None or k.takeover.last_s is None
                        else round(k.takeover.last_s, 3),
                        "first_progress_s": None
                        if k.takeover is None or k.takeover.first_s is None
                        else round(k.takeover.first_s, 3),
                        "never_progressed": sorted(k.takeover.waiting) if k.takeover else [],
                    }
                    for k in self.kills
                ],
            },
            "schedule": [p.describe() for p in self.plan],
            "takeover": self.takeover(),
            "stranded": verdict.stranded,
            "never_placed": len(verdict.never_placed),
            "misreported": verdict.misreported,
            "unreported": verdict.unreported,
            "duplicated": verdict.duplicated,
            "forked": verdict.forked,
            "completed_without_effects": verdict.incomplete,
            "unexpected_outcomes": verdict.unexpected,
            "money": {**verdict.money, "ok": verdict.money_ok},
            "stock_problems": verdict.stock_problems,
            "records_of_strangers": verdict.strangers,
            "closing": {**self.closing.__dict__, "exit_problem": verdict.exit_problem},
            "phases_s": self.phases,
            "dead_letters": self.dead_letters,
            "incidents": [i.__dict__ for i in self.incidents],
            "examples": {oid: e.as_dict() for oid, e in verdict.examples.items()},
            "problems": verdict.problems(),
        }


@contextlib.contextmanager
def postgres_schema(url: str, *, keep: bool) -> Iterator[tuple[str, str]]:
    """A fresh schema in ``url``'s database; yields (the --state URL using it, its name)."""
    try:
        import psycopg
    except ImportError as exc:
        raise HarnessError("the postgresql backend needs psycopg: pip install -e '.[dev]'") from exc
    schema = f"torture_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        raise HarnessError(f"cannot create a schema in {url}: {exc}") from exc
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}", schema
    finally:
        if not keep:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def run_torture(config: TortureConfig) -> TortureReport:
    """Run one backend through its kill schedule and judge it."""
    if config.backend not in BACKENDS:
        raise HarnessError(f"unknown backend {config.backend!r}; choose one of: {', '.join(BACKENDS)}")
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix=f"torture-{config.backend}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    world = make_world(config.orders, seed=config.seed, latency_ms=config.latency_ms)
    paths = DriverPaths(
        workdir=workdir,
        orders=world.write_orders(workdir / "orders.jsonl"),
        state_dir=workdir / "state",
        logs=workdir / "logs",
    )
    scenario = world.write_scenario(workdir / "scenario.json")
    try:
        plan = plan_kills(config.mode, config.kills, config.orders, config.seed, config.kinds)
    except ValueError as exc:
        raise HarnessError(str(exc)) from None
    (workdir / "schedule.txt").write_text("".join(f"{p.index}: {p.describe()}\n" for p in plan), encoding="utf-8")
    starter = ProcessStarter(paths.logs, cwd=workdir)
    began = time.monotonic()
    schema = None
    async with AsyncExitStack() as stack:
        stack.push_async_callback(starter.close)
        sandbox = await stack.enter_async_context(served_sandbox(starter, workdir / "sandbox.db", scenario))
        state = None
        if config.backend == "postgresql":
            state, schema = stack.enter_context(postgres_schema(config.postgres_url, keep=config.keep_schema))
        # The event log is where the state is: the state directory's file, or PostgreSQL.
        log_source = state if state is not None else paths.events
        watcher = await stack.enter_async_context(EventLogWatcher(log_source))
        common: dict[str, Any] = dict(
            world=world,
            paths=paths,
            starter=starter,
            watcher=watcher,
            sandbox=sandbox,
            concurrency=config.concurrency,
            stall_s=config.effective_stall_s,
            time_limit_at=None if config.time_limit_s is None else began + config.time_limit_s,
        )
        driver: Driver
        if config.mode == "orchestration":
            driver = OrchestrationDriver(**common, state=state)
        else:
            broker = broker_for(config.backend, workdir / "broker")
            stack.push_async_callback(broker.close)
            await broker.start()
            driver = ChoreographyDriver(
                **common,
                broker=broker,
                deadline_s=config.deadline_s,
                worker_concurrency=config.worker_concurrency,
                closing_rerun=config.closing_rerun,
            )
        # Leftover coordinator processes go first, before the broker or the schema does.
        stack.push_async_callback(starter.close)
        await driver.drive(plan)
        watcher.poll()
        for takeover in watcher.takeovers:  # ended just as it was killed: it had nothing left to do
            takeover.waiting = {order for order in takeover.waiting if not watcher.ended(order)}
        log = read_log(log_source)
        services = await fetch_services(sandbox.url, sandbox.store)
    ended = time.monotonic()
    last = driver.closing
    closing = Closing(
        command="run" if last is not None and last.role in ("run", "owner") else "resume",
        exit_code=last.returncode if last is not None else None,
        finished=driver.closing_complete,
    )
    # The closing run of the whole file reports every order; otherwise (it hung, or
    # choreography closes with `resume`) each order's last report, by any process.
    report_required = closing.command == "run" and closing.finished
    sources = [last] if report_required and last is not None else driver.reporting_processes()
    reported = {str(row["workflow_id"]): str(row["status"]) for p in sources for row in p.json_lines()}
    verdict = judge(
        world,
        services,
        log,
        reported=reported,
        report_required=report_required,
        status_rows=driver.status_rows,
        closing=closing,
    )
    marks = [*driver.phases, ("end", ended)]
    return TortureReport(
        config=config,
        workdir=workdir,
        plan=plan,
        kills=driver.kills,
        incidents=driver.incidents,
        verdict=verdict,
        duration_s=ended - began,
        closing=closing,
        phases={name: round(end - start, 1) for (name, start), (_, end) in itertools.pairwise(marks)},
        dead_letters=driver.dead_letters,
        broker_restarts=getattr(driver, "broker_restarts", 0),
        broker_graceful_stops=getattr(getattr(driver, "broker", None), "graceful_stops", 0),
        began=driver.began,
        schema=schema if config.keep_schema else None,
    )
