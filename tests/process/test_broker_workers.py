"""Choreography on real brokers: every agent in worker processes of its own.

Against a served sandbox (another process) and RabbitMQ or NATS JetStream, each test
starts ``coordinator worker`` processes sharing one state directory (event log,
outbox and inbox) and a ``coordinator run --workers external`` that owns the orders
(it publishes them, ends them and enforces their deadline):

* crash test: three agents x two workers, 200 orders; a random worker is SIGKILLed
  each time the event log reaches the next of 20 seeded sizes, and restarted at
  once. Every order then ends exactly once, as expected; the services hold no
  second reservation, charge or shipment, nothing is dead-lettered, and stock is
  conserved;
* stalled chain: with the payment agent down, the run's deadline cancels its orders
  and their stock is released by events; the payment agent, back, charges nothing;
* graceful shutdown: a worker SIGTERMed in the middle of a charge finishes it, exits
  0, and what it had not taken is handled by the next worker; then ``coordinator
  trace`` rebuilds an order's causal chain, written by four processes, as one trace.

Each test gets an exchange and queue prefix (RabbitMQ) or a stream and subject
prefix (NATS) of its own through the bus URL's query, and deletes them afterwards.
Nothing waits by the clock for correctness: every wait is on a condition (the event
log, the inbox, the services' store, a process's output), bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from agent_coordinator.core.results import WorkflowStatus
from agent_coordinator.examples.orders.app import check_order_effects
from agent_coordinator.examples.orders.sandbox import RemoteSandboxState
from agent_coordinator.examples.orders.sandbox.scenario import default_catalogue
from tests.conftest import postgres_schema
from tests.e2e.test_orders_e2e import EXPECTED, example_orders
from tests.e2e.test_sandbox_server import Served, served
from tests.services import NATS_URL, RABBITMQ_URL, require_service

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ("inventory", "payment", "shipping")
WAIT_LIMIT_S = 30.0
ORDERS = 200
TERMINAL = ("OrderCompleted", "OrderCancelled")
COMPLETED_EFFECTS = {"reservation:held": 1, "charge:captured": 1, "shipment:scheduled": 1}


# -- brokers ---------------------------------------------------------------------------


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _delete_rabbitmq(base: str, exchange: str, prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(base)
    try:
        channel = await connection.channel()
        groups = [f"order-fulfilment.{p}" for p in (*AGENTS, "owner", "projection", "orchestrator")]
        # The delay queues are named by their delay: 0.5 s doubled per failed delivery.
        queues = [
            f"{prefix}{g}{suffix}" for g in groups for suffix in ("", *(f".retry.{500 * 2**n}ms" for n in range(5)))
        ]
        for queue in [*queues, f"{prefix}dead-letters"]:
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(queue)
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def _delete_nats(stream: str) -> None:
    import nats
    import nats.errors

    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        for name in (stream, f"{stream}_DLQ"):
            with contextlib.suppress(nats.errors.Error):
                await js.delete_stream(name)
    finally:
        await nc.close()


@asynccontextmanager
async def broker(name: str) -> AsyncIterator[str]:
    """A bus URL naming an exchange and queues (RabbitMQ) or streams (NATS) of this
    test's own, through its query; they are deleted afterwards. Skips (or fails, under
    REQUIRE_SERVICES=1) when the broker is down."""
    require_service(name)
    tag = uuid.uuid4().hex[:10]
    if name == "rabbitmq":
        exchange, prefix = f"test-workers-{tag}", f"test-workers-{tag}."
        url = with_query(RABBITMQ_URL, exchange=exchange, queue_prefix=prefix)

        async def cleanup() -> None:
            await _delete_rabbitmq(RABBITMQ_URL, exchange, prefix)

    else:
        stream = f"WORKERS_{tag}"
        # A killed worker's unacked messages come back after ack_wait: keep it short.
        url = with_query(NATS_URL, stream=stream, subject_prefix=f"workers-{tag}", ack_wait="2")

        async def cleanup() -> None:
            await _delete_nats(stream)

    try:
        yield url
    finally:
        await cleanup()


async def dead_letters(url: str) -> list[Any]:
    """What the bus at ``url`` holds in its dead letters."""
    from agent_coordinator.bus import open_bus

    bus = open_bus(url)
    try:
        return list(await bus.dead_letters())
    finally:
        await bus.close()


# -- processes ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}


@dataclass
class Where:
    """Where a cluster's processes keep their state: in ``state_dir``, SQLite files
    they all share (one machine); or, with ``url``, in PostgreSQL -- then every
    process runs in an empty directory of its own under ``state_dir``, as on machines
    of its own, and takes the keys (configuration, not state) from ``keys``."""

    state_dir: Path
    url: str | None = None
    keys: Path | None = None
    _conn: Any = field(default=None, repr=False)

    def args(self) -> list[str]:
        return ["--state-dir", str(self.state_dir)] if self.url is None else ["--state", self.url]

    def place(self, name: str) -> tuple[Path, dict[str, str]]:
        """The working directory and environment of the process ``name``."""
        if self.url is None:
            return ROOT, _env()
        home = self.homes / name
        home.mkdir(parents=True, exist_ok=True)
        assert self.keys is not None
        return home, {**_env(), "COORDINATOR_EVENT_KEYS": str(self.keys)}

    @property
    def homes(self) -> Path:
        return self.state_dir / "homes"

    def files_written(self) -> list[str]:
        """Whatever the processes left in their own directories, files or directories
        (must be nothing)."""
        return sorted(str(p.relative_to(self.homes)) for p in self.homes.rglob("*") if p.parent != self.homes)

    def events(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of the event log's ``events`` table (``?`` placeholders)."""
        if self.url is None:
            return query(self.state_dir / "events.db", sql, *args)
        import psycopg

        if self._conn is None:  # one connection for the test's polling, not one per look
            self._conn = psycopg.connect(self.url, autocommit=True)
        try:
            sql = sql.replace(" FROM events", " FROM coordinator_events").replace("?", "%s")
            return list(self._conn.execute(sql, args).fetchall())
        except psycopg.errors.UndefinedTable:
            return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@dataclass
class Worker:
    """One incarnation of ``coordinator worker AGENT``; its output in a file of its own."""

    agent: str
    proc: asyncio.subprocess.Process
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def ready(self) -> bool:
        return "ready on" in self.text()


@dataclass
class Cluster:
    """Worker processes sharing one state directory, bus and services."""

    bus: str
    services: str
    where: Where
    logs: Path
    concurrency: int = 8
    extra: tuple[str, ...] = ()  # more options for every worker
    workers: dict[str, Worker] = field(default_factory=dict)  # slot -> current incarnation
    started: int = 0

    async def start(self, slot: str) -> Worker:
        agent = slot.split("#")[0]
        self.started += 1
        output = self.logs / f"{slot.replace('#', '-')}.{self.started}.log"
        cwd, env = self.where.place(slot.replace("#", "-"))
        what = ["--mode", "orchestration"] if agent == "orchestration" else [agent]
        with output.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent_coordinator",
                "worker",
                *what,
                "--bus",
                self.bus,
                "--services",
                self.services,
                *self.where.args(),
                "--concurrency",
                str(self.concurrency),
                *self.extra,
                stdout=out,
                stderr=out,
                cwd=cwd,
                env=env,
            )
        worker = self.workers[slot] = Worker(agent, proc, output)
        return worker

    async def wait_ready(self, *slots: str) -> None:
        wanted = [self.workers[s] for s in slots or self.workers]
        await wait_until(lambda: all(w.ready() for w in wanted), "workers ready", wanted)

    async def stop(self, slot: str) -> tuple[int, str]:
        """SIGTERM one worker; its exit code and output."""
        worker = self.workers[slot]
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(worker.proc.wait(), WAIT_LIMIT_S)
        except TimeoutError:
            raise AssertionError(f"{slot} did not stop in {WAIT_LIMIT_S}s:\n{worker.text()[-3000:]}") from None
        del self.workers[slot]
        return code, worker.text()

    async def kill(self, slot: str) -> None:
        worker = self.workers.pop(slot)
        with contextlib.suppress(ProcessLookupError):  # it may have exited between choice and kill
            worker.proc.send_signal(signal.SIGKILL)
        await worker.proc.wait()

    async def close(self) -> None:
        for worker in self.workers.values():
            if worker.proc.returncode is None:
                worker.proc.kill()
            await worker.proc.wait()
        self.workers.clear()


async def wait_until(condition: Callable[[], bool], what: str, workers: list[Worker] | None = None) -> None:
    """Poll ``condition`` until it holds; fail after WAIT_LIMIT_S naming ``what``."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        for worker in workers or ():
            if worker.proc.returncode is not None:
                raise AssertionError(f"{worker.agent} worker exited {worker.proc.returncode}:\n{worker.text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {WAIT_LIMIT_S}s")
        await asyncio.sleep(0.01)  # polling a condition, bounded by the deadline


async def start_run(
    orders: Path, broker_url: str, services: str, where: Where, log: Path, *extra: str, submit: bool = False
) -> asyncio.subprocess.Process:
    """``coordinator run`` of ``orders`` against the workers, reporting JSON lines to
    ``log``: the owner of a choreography (``--workers external``), or with ``submit``
    the submitter of orchestration runs (``--submit``)."""
    cwd, env = where.place("submitter" if submit else "run")
    how = ["--submit"] if submit else ["--mode", "choreography", "--workers", "external"]
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_coordinator",
            "run",
            str(orders),
            *how,
            "--bus",
            broker_url,
            "--services",
            services,
            *where.args(),
            "--json",
            *extra,
            stdout=output,
            stderr=output,
            cwd=cwd,
            env=env,
        )


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def outcomes(log: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"workflow_id"')]
    return {row["workflow_id"]: row for row in rows}


# -- the event log and the inbox ------------------------------------------------------------


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a SQLite file another process writes (none before it has the table)."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=10.0)) as conn:
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def count_events(where: Where) -> int:
    rows = where.events("SELECT COUNT(*) FROM events")
    return int(rows[0][0]) if rows else 0


def terminal_rows(where: Where) -> dict[str, list[tuple[str, str]]]:
    rows = where.events("SELECT subject, id, type FROM events WHERE type IN (?, ?)", *TERMINAL)
    terminal: dict[str, list[tuple[str, str]]] = {}
    for subject, event_id, event_type in rows:
        terminal.setdefault(subject, []).append((event_id, event_type))
    return terminal


# -- the world -----------------------------------------------------------------------------


def write_world(
    tmp_path: Path, count: int, *, prefix: str, latency_ms: float = 2.0
) -> tuple[Path, Path, dict[str, WorkflowStatus]]:
    """A scenario whose catalogue has stock for every order (the default catalogue's
    100 of each would run out; SKU-SOLDOUT stays at 0), and ``count`` orders cycling
    the examples under unique ids; returns the files and each order's expected outcome."""
    scenario = tmp_path / "scenario.json"
    items = {
        sku: {**item.model_dump(), "stock": 10_000 if item.stock else 0} for sku, item in default_catalogue().items()
    }
    scenario.write_text(json.dumps({"catalogue": items, "latency_ms": latency_ms}))
    base = example_orders()
    rows = [dict(base[i % len(base)], order_id=f"{prefix}-{i:03d}") for i in range(count)]
    orders = tmp_path / "orders.jsonl"
    orders.write_text("".join(json.dumps(row) + "\n" for row in rows))
    expected = {row["order_id"]: EXPECTED[base[i % len(base)]["order_id"]] for i, row in enumerate(rows)}
    return scenario, orders, expected


@asynccontextmanager
async def sandbox(tmp_path: Path, scenario: Path) -> AsyncIterator[Served]:
    async with served(
        tmp_path / "sandbox.log", "--store", str(tmp_path / "sandbox.db"), "--scenario", str(scenario)
    ) as server:
        yield server


async def fetch(url: str) -> RemoteSandboxState:
    async with httpx.AsyncClient(timeout=30.0) as client:
        return await RemoteSandboxState.fetch(client, url)


def duplicate_effects(remote: RemoteSandboxState, order_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Orders with more than one reservation, charge or shipment."""
    repeated = {}
    for order_id in order_ids:
        effects = remote.effects_for(order_id)
        made = {"reservations": effects.reservations, "charges": effects.charges, "shipments": effects.shipments}
        if any(len(records) > 1 for records in made.values()):
            repeated[order_id] = {kind: len(records) for kind, records in made.items()}
    return repeated


def assert_effects_match(remote: RemoteSandboxState, expected: dict[str, WorkflowStatus]) -> None:
    for order_id, status in expected.items():
        effects = remote.effects_for(order_id)
        if status is WorkflowStatus.COMPENSATED:
            assert effects.outstanding == [], f"{order_id} still holds {effects.outstanding}"
        else:
            assert effects.counts == COMPLETED_EFFECTS, f"{order_id}: {effects.counts}"
    assert check_order_effects(remote, []) == []  # stock conserved


def inbox_handled(outbox: Path, group: str) -> set[str]:
    """The event ids ``group`` has handled, by its inbox."""
    return {row[0] for row in query(outbox, "SELECT event_id FROM inbox WHERE grp = ?", group)}


def unpublished(outbox: Path) -> int:
    rows = query(outbox, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
    return int(rows[0][0]) if rows else 0


def charges_under_way(sandbox_db: Path) -> set[str]:
    """Orders whose charge the payment service has answered 503 and not yet made: a
    payment handler is in the middle of its retries (the flaky card)."""
    rows = query(
        sandbox_db,
        "SELECT key FROM idempotency WHERE service = 'payment' AND attempts >= 1 AND answer IS NULL"
        " AND key LIKE '%/charge_payment'",
    )
    return {key.split("/")[0] for (key,) in rows}


async def stop_all(cluster: Cluster) -> None:
    """SIGTERM every worker at once: each exits 0 with its "stopped" line."""
    slots = sorted(cluster.workers)
    for code, output in await asyncio.gather(*(cluster.stop(slot) for slot in slots)):
        assert code == 0 and output.rstrip().endswith("stopped"), output[-2000:]


def killable(cluster: Cluster) -> list[str]:
    """The workers to pick a victim from: ready ones whose agent's other worker is ready
    too (the kill leaves the agent a live worker, so the batch keeps moving), else any
    ready one (the agent is then down until a restart is ready; its events wait)."""
    ready = sorted(slot for slot, worker in cluster.workers.items() if worker.ready())
    agents = [slot.split("#")[0] for slot in ready]
    covered = [slot for slot in ready if agents.count(slot.split("#")[0]) > 1]
    return covered or ready


async def grown_to(run: asyncio.subprocess.Process, events: Where, target: int) -> bool:
    """Wait until the event log holds ``target`` events; False when the run ended first."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while run.returncode is None and count_events(events) < target:
        if time.monotonic() > deadline:
            raise AssertionError(f"the run made no progress to {target} events in {WAIT_LIMIT_S}s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.wait(), timeout=0.01)  # wakes at once if it exits
    return run.returncode is None


async def stop_run(run: asyncio.subprocess.Process | None) -> None:
    """Kill a run that is still going (a failed test)."""
    if run is not None and run.returncode is None:
        run.kill()
        await run.wait()


async def finished(run: asyncio.subprocess.Process, log: Path) -> None:
    try:
        code = await asyncio.wait_for(run.wait(), RUN_LIMIT_S)
    except TimeoutError:
        raise AssertionError(f"the run did not finish in {RUN_LIMIT_S}s:\n{tail(log)}") from None
    assert code == 0, tail(log)


BROKERS = ["rabbitmq", "nats"]
KILLS = 20
RUN_LIMIT_S = 90.0


# -- 1. the crash test ------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["sqlite", "postgresql"])
@pytest.mark.parametrize("broker_name", BROKERS)
async def test_workers_sigkilled_again_and_again_lose_and_repeat_nothing(
    broker_name: str, state: str, tmp_path: Path
) -> None:
    """Three agents x two workers, 200 orders; a random worker is SIGKILLed and restarted
    each time the event log reaches the next of 20 seeded sizes. State: SQLite files
    every process shares, or PostgreSQL with every process in an empty directory of
    its own (as on machines of their own), which it must leave empty."""
    async with AsyncExitStack() as stack:
        where = Where(tmp_path / "state")
        if state == "postgresql":
            url = await stack.enter_async_context(postgres_schema())
            where = Where(tmp_path / "state", url=url, keys=tmp_path / "keys")
        stack.callback(where.close)
        await _crash_workers(broker_name, where, tmp_path)
        if where.url is not None:
            assert where.files_written() == [], "a process wrote local state on shared (PostgreSQL) state"


async def _crash_workers(broker_name: str, where: Where, tmp_path: Path) -> None:
    scenario, orders, expected = write_world(tmp_path, ORDERS, prefix="k")
    logs = tmp_path / "logs"
    logs.mkdir()
    events, run_log, kill_log = where, tmp_path / "run.log", tmp_path / "kills.log"
    rng = random.Random(f"broker-workers-{broker_name}-20261125")
    # The log ends with five events per order on average; the kills fall in its first 80%.
    points = sorted(rng.sample(range(ORDERS // 10, ORDERS * 4), KILLS))
    slots = [f"{agent}#{i}" for agent in AGENTS for i in (1, 2)]
    began = time.monotonic()
    kills = 0
    async with broker(broker_name) as bus_url, sandbox(tmp_path, scenario) as services:
        cluster = Cluster(bus_url, services.url, where, logs)
        run = None
        try:
            for slot in slots:
                await cluster.start(slot)
            await cluster.wait_ready()
            run_started = time.monotonic()
            run = await start_run(orders, bus_url, services.url, where, run_log, "--concurrency", "32")
            for point in points:
                if not await grown_to(run, events, point):
                    break
                await wait_until(lambda: bool(killable(cluster)), "worker to kill", list(cluster.workers.values()))
                victim = rng.choice(killable(cluster))
                with kill_log.open("a") as record:  # for a post-mortem
                    record.write(f"{time.time():.3f} SIGKILL {victim} at {count_events(events)} events\n")
                await cluster.kill(victim)
                kills += 1
                await cluster.start(victim)
            await finished(run, run_log)
            run_s = time.monotonic() - run_started
            await cluster.wait_ready()
            await stop_all(cluster)
        finally:
            await stop_run(run)
            await cluster.close()
        remote = await fetch(services.url)
        letters = await dead_letters(bus_url)
    final = {order_id: row["status"] for order_id, row in outcomes(run_log).items()}
    terminal = terminal_rows(events)
    lost = sorted(set(expected) - set(terminal))
    repeated = duplicate_effects(remote, expected)
    print(
        f"\n{broker_name} ({'postgresql' if where.url else 'sqlite'} state): {kills} kills survived,"
        f" {len(lost)} orders lost, {len(repeated)} orders with a duplicate"
        f" effect; {ORDERS} orders in {run_s:.1f}s (test {time.monotonic() - began:.1f}s,"
        f" {cluster.started} worker starts)"
    )
    assert kills == KILLS, f"only {kills} kills before the batch finished"
    assert lost == []
    assert repeated == {}
    assert letters == []
    assert final == {k: v.value for k, v in expected.items()}
    for order_id, ends in terminal.items():
        assert len(ends) == 1, f"{order_id} ended more than once: {ends}"
    assert_effects_match(remote, expected)


# -- 2. a stalled chain ---------------------------------------------------------------------------


@pytest.mark.parametrize("broker_name", BROKERS)
async def test_with_the_payment_agent_down_the_deadline_cancels_and_it_charges_nothing_later(
    broker_name: str, tmp_path: Path
) -> None:
    scenario, orders, expected = write_world(tmp_path, 2, prefix="s")  # two orders that would complete
    state_dir, logs = tmp_path / "state", tmp_path / "logs"
    logs.mkdir()
    events, outbox, run_log = state_dir / "events.db", state_dir / "outbox.db", tmp_path / "run.log"
    async with broker(broker_name) as bus_url, sandbox(tmp_path, scenario) as services:
        cluster = Cluster(bus_url, services.url, Where(state_dir), logs)
        run = None
        try:
            for slot in ("inventory#1", "payment#1", "shipping#1"):
                await cluster.start(slot)
            await cluster.wait_ready()
            # The payment agent's queue exists now (it subscribed once); then it goes down.
            code, output = await cluster.stop("payment#1")
            assert code == 0 and output.rstrip().endswith("stopped"), output
            run = await start_run(orders, bus_url, services.url, Where(state_dir), run_log, "--deadline", "2")
            await finished(run, run_log)
            rows = outcomes(run_log)
            assert {k: r["status"] for k, r in rows.items()} == dict.fromkeys(expected, "compensated")
            for row in rows.values():
                assert "agent 'payment' gave no answer within the run's deadline of 2s" in row["reason"], row
            remote = await fetch(services.url)
            for order_id in expected:
                effects = remote.effects_for(order_id)
                assert effects.outstanding == [] and effects.charges == (), effects  # stock released
                assert effects.counts == {"reservation:released": 1}, effects.counts
            # The payment agent comes back to find InventoryReserved in its queue: the
            # run already failed that step (the consequence is in the log), so no charge.
            reserved = {r[0] for r in query(events, "SELECT id FROM events WHERE type = 'InventoryReserved'")}
            assert len(reserved) == len(expected)
            await cluster.start("payment#2")
            await wait_until(
                lambda: reserved <= inbox_handled(outbox, "order-fulfilment.payment"),
                "handling of the queued InventoryReserved by the payment agent",
                list(cluster.workers.values()),
            )
            await wait_until(lambda: unpublished(outbox) == 0, "outbox relayed")
            await stop_all(cluster)
        finally:
            await stop_run(run)
            await cluster.close()
        remote = await fetch(services.url)
        letters = await dead_letters(bus_url)
    assert letters == []
    for order_id in expected:
        assert remote.effects_for(order_id).charges == ()
    assert check_order_effects(remote, []) == []
    types = [r[0] for r in query(events, "SELECT type FROM events")]
    assert "PaymentProcessed" not in types
    assert sorted(types.count(t) for t in ("OrderCancelled", "PaymentFailed", "InventoryReleased")) == [2, 2, 2]


# -- 3. graceful shutdown, 4. tracing across processes ---------------------------------------------


@pytest.mark.parametrize("broker_name", BROKERS)
async def test_a_worker_sigtermed_mid_handler_finishes_it_and_the_trace_spans_the_processes(
    broker_name: str, tmp_path: Path
) -> None:
    # 150 ms per service call: a flaky card's charge (two 503s, then a charge) takes half a second.
    scenario, orders, expected = write_world(tmp_path, 8, prefix="g", latency_ms=150.0)
    state_dir, logs = tmp_path / "state", tmp_path / "logs"
    logs.mkdir()
    events, run_log = state_dir / "events.db", tmp_path / "run.log"
    async with broker(broker_name) as bus_url, sandbox(tmp_path, scenario) as services:
        cluster = Cluster(bus_url, services.url, Where(state_dir), logs)
        run = None
        try:
            for slot in ("inventory#1", "payment#1", "shipping#1"):
                await cluster.start(slot)
            await cluster.wait_ready()
            run = await start_run(orders, bus_url, services.url, Where(state_dir), run_log)
            sandbox_db = Path(services.store)
            await wait_until(
                lambda: bool(charges_under_way(sandbox_db)), "charge under way", [cluster.workers["payment#1"]]
            )
            in_hand = charges_under_way(sandbox_db)
            code, output = await cluster.stop("payment#1")
            assert code == 0, output
            assert "finishing the events in hand" in output and output.rstrip().endswith("stopped"), output
            # It finished the charges it had in hand before exiting: their PaymentProcessed
            # is logged while no payment worker runs.
            processed = {r[0] for r in query(events, "SELECT subject FROM events WHERE type = 'PaymentProcessed'")}
            assert in_hand <= processed, (in_hand, processed)
            # What it had not taken, or gave back, waits for the next payment worker.
            await cluster.start("payment#2")
            await finished(run, run_log)
            await cluster.wait_ready()
            await stop_all(cluster)
        finally:
            await stop_run(run)
            await cluster.close()
        remote = await fetch(services.url)
    assert {k: r["status"] for k, r in outcomes(run_log).items()} == {k: v.value for k, v in expected.items()}
    assert duplicate_effects(remote, expected) == {}
    assert_effects_match(remote, expected)
    for order_id, ends in terminal_rows(Where(state_dir)).items():
        assert len(ends) == 1, f"{order_id} ended more than once: {ends}"

    # Tracing: the unshippable order -- every agent acts, payment and inventory twice
    # (do, then undo) -- was written by the run process (start, end) and three or four
    # worker processes; one trace-id, each event caused by the one before.
    unshippable = f"g-{[o['order_id'] for o in example_orders()].index('o-1005'):03d}"
    chain = await trace(unshippable, state_dir)
    assert [e["type"] for e in chain] == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentProcessed",
        "ShipmentFailed",
        "PaymentRefunded",
        "InventoryReleased",
        "OrderCancelled",
    ]
    assert "causationid" not in chain[0]  # a start event has no cause (CloudEvents: absent, not null)
    for cause, effect in itertools.pairwise(chain):
        assert effect["causationid"] == cause["id"], (cause["type"], effect["type"])
    assert len({e["traceparent"].split("-")[1] for e in chain}) == 1, [e["traceparent"] for e in chain]
    assert {e["source"] for e in chain} == {
        "workflow/order-fulfilment",
        "agent/inventory",
        "agent/payment",
        "agent/shipping",
    }


async def trace(order_id: str, state_dir: Path) -> list[dict[str, Any]]:
    """``coordinator trace ORDER_ID --json``, in a process of its own: the events."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent_coordinator",
        "trace",
        order_id,
        "--json",
        "--state-dir",
        str(state_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_LIMIT_S)
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]
