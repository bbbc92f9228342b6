"""``python -m tests.process.scaling``: throughput and CPU per order with 1, 2 and 4
worker processes per mode, on PostgreSQL state and a real broker.

    python -m tests.process.scaling --orders 300 --processes 1,2,4 --brokers rabbitmq,nats --json scaling.json

For each broker, mode and process count it starts, against a served sandbox (another
process, ``--latency-ms`` per call) and a PostgreSQL schema of its own:

* orchestration: N ``coordinator worker --mode orchestration`` processes, then a
  ``coordinator run --submit`` of the batch;
* choreography: N ``coordinator worker AGENT`` processes per agent (3N in all), then
  a ``coordinator run --workers external`` (the owner) of the batch;

each worker in an empty directory of its own. It times the batch from the start of
the submitting process to its exit, once every worker is ready (their start-up is
not counted), checks that every order ended as the world dictates, and reads the CPU
time every coordinator process spent on the batch (workers from ``/proc`` before and
after, the submitter or owner from its own rusage). Printed: orders/s, the ratio to
one process of the same mode and broker, CPU ms per order, and the machine's cores
-- a process count above the cores measures contention, not scaling. The services'
CPU is not counted: they are the workload, not the coordination.

Measurements, not assertions: ``tests/process/test_scaling_smoke.py`` only checks
that the rows come out and the orders end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

from tests.conftest import postgres_schema
from tests.process.test_broker_workers import (
    AGENTS,
    Cluster,
    Where,
    broker,
    count_events,
    grown_to,
    outcomes,
    sandbox,
    start_run,
    stop_all,
    tail,
    terminal_rows,
    write_world,
)
from tests.process.test_orchestration_workers import in_flight, takeover_delays

MODES = ("orchestration", "choreography")
BATCH_LIMIT_S = 600.0


@dataclass
class Row:
    """One batch: a mode on a broker with ``processes`` workers per role."""

    broker: str
    mode: str
    processes: int
    worker_processes: int
    orders: int
    seconds: float
    orders_per_s: float
    cpu_ms_per_order: float
    worker_cpu_ms_per_order: float
    runner_cpu_s: float
    ended_as_expected: int
    ratio_to_one: float | None = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the live process ``pid``, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@asynccontextmanager
async def deployment(
    broker_name: str, mode: str, processes: int, work: Path, scenario: Path
) -> AsyncIterator[tuple[Cluster, Where, str, str]]:
    """A PostgreSQL schema, a broker namespace, a served sandbox and ``processes``
    workers per role of ``mode``, ready: ``(cluster, where, bus_url, services_url)``."""
    logs = work / "logs"
    logs.mkdir()
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres_schema())
        bus_url = await stack.enter_async_context(broker(broker_name))
        services = await stack.enter_async_context(sandbox(work, scenario))
        where = Where(work / "state", url=url, keys=work / "keys")
        stack.callback(where.close)
        cluster = Cluster(bus_url, services.url, where, logs, concurrency=16)
        stack.push_async_callback(cluster.close)
        for role in ["orchestration"] if mode == "orchestration" else list(AGENTS):
            for i in range(1, processes + 1):
                await cluster.start(f"{role}#{i}")
        await cluster.wait_ready()
        yield cluster, where, bus_url, services.url


async def start_batch(mode: str, orders: Path, bus_url: str, services: str, where: Where, log: Path) -> Any:
    """The process that carries the batch: a submitter (orchestration) or the owner."""
    if mode == "orchestration":
        return await start_run(orders, bus_url, services, where, log, submit=True)
    return await start_run(orders, bus_url, services, where, log, "--concurrency", "64")


async def batch(broker_name: str, mode: str, processes: int, orders: int, latency_ms: float, work: Path) -> Row:
    """Run one batch (see the module docstring) and measure it (``work`` must exist)."""
    scenario, orders_file, expected = write_world(work, orders, prefix="s", latency_ms=latency_ms)
    run_log = work / "run.log"
    async with deployment(broker_name, mode, processes, work, scenario) as (cluster, where, bus_url, services):
        before = {slot: cpu_seconds(w.proc.pid) for slot, w in cluster.workers.items()}
        reaped = children_cpu()
        started = time.monotonic()
        run = await start_batch(mode, orders_file, bus_url, services, where, run_log)
        code = await asyncio.wait_for(run.wait(), BATCH_LIMIT_S)
        seconds = time.monotonic() - started
        if code != 0:
            raise RuntimeError(f"{mode} on {broker_name} with {processes} process(es) exited {code}:\n{tail(run_log)}")
        workers_cpu = sum(cpu_seconds(w.proc.pid) - before[slot] for slot, w in cluster.workers.items())
        runner_cpu = children_cpu() - reaped
        await stop_all(cluster)
    final = {order_id: row["status"] for order_id, row in outcomes(run_log).items()}
    as_expected = sum(final.get(k) == v.value for k, v in expected.items())
    return Row(
        broker=broker_name,
        mode=mode,
        processes=processes,
        worker_processes=processes * (1 if mode == "orchestration" else len(AGENTS)),
        orders=orders,
        seconds=round(seconds, 2),
        orders_per_s=round(orders / seconds, 1),
        cpu_ms_per_order=round((workers_cpu + runner_cpu) * 1000 / orders, 2),
        worker_cpu_ms_per_order=round(workers_cpu * 1000 / orders, 2),
        runner_cpu_s=round(runner_cpu, 2),
        ended_as_expected=as_expected,
    )


async def measure(
    brokers: Sequence[str], counts: Sequence[int], orders: int, latency_ms: float, work: Path
) -> list[Row]:
    rows: list[Row] = []
    for broker_name in brokers:
        for mode in MODES:
            for processes in counts:
                print(f"scaling: {broker_name} {mode} x{processes} ...", file=sys.stderr, flush=True)
                where = work / f"{broker_name}-{mode}-{processes}"
                where.mkdir(parents=True)
                rows.append(await batch(broker_name, mode, processes, orders, latency_ms, where))
    for row in rows:
        one = next((r for r in rows if (r.broker, r.mode, r.processes) == (row.broker, row.mode, 1)), None)
        row.ratio_to_one = round(row.orders_per_s / one.orders_per_s, 2) if one else None
    return rows


@dataclass
class OutageRow:
    """What losing one role's every worker for ``outage_s`` seconds mid-batch did."""

    broker: str
    mode: str
    killed: str
    orders: int
    in_flight_at_kill: int
    events_during_outage: int
    orders_ended_during_outage: int
    stalled_at_restart: int
    resumed_s_median: float | None
    resumed_s_max: float | None
    seconds: float
    lost: int
    ended_as_expected: int


async def outage(
    broker_name: str, mode: str, orders: int, latency_ms: float, work: Path, *, outage_s: float, processes: int = 2
) -> OutageRow:
    """Kill every worker of one role -- orchestration: all its workers; choreography:
    all the payment agent's -- once the log holds 30% of the batch's events, keep them
    down ``outage_s`` seconds, restart them, and see what went on meanwhile and after."""
    scenario, orders_file, expected = write_world(work, orders, prefix="o", latency_ms=latency_ms)
    run_log = work / "run.log"
    role = "orchestration" if mode == "orchestration" else "payment"
    async with deployment(broker_name, mode, processes, work, scenario) as (cluster, where, bus_url, services):
        started = time.monotonic()
        run = await start_batch(mode, orders_file, bus_url, services, where, run_log)
        if not await grown_to(run, where, int(orders * 5 * 0.3)):
            raise RuntimeError(f"the batch ended before the kill point:\n{tail(run_log)}")
        victims = sorted(slot for slot in cluster.workers if slot.startswith(f"{role}#"))
        at_kill = in_flight(where)
        events_at_kill = count_events(where)
        ended_at_kill = len(terminal_rows(where))
        for slot in victims:
            await cluster.kill(slot)
        await asyncio.sleep(outage_s)  # the outage itself: what is measured is what happens during it
        events_during = count_events(where) - events_at_kill
        ended_during = len(terminal_rows(where)) - ended_at_kill
        stalled = in_flight(where)
        restarted = time.monotonic()
        for slot in victims:
            await cluster.start(slot)
        delays = await takeover_delays(where, stalled, restarted) if stalled else []
        code = await asyncio.wait_for(run.wait(), BATCH_LIMIT_S)
        seconds = time.monotonic() - started
        if code != 0:
            raise RuntimeError(f"{mode} on {broker_name} exited {code}:\n{tail(run_log)}")
        await cluster.wait_ready()
        await stop_all(cluster)
        terminal = terminal_rows(where)
    final = {order_id: row["status"] for order_id, row in outcomes(run_log).items()}
    return OutageRow(
        broker=broker_name,
        mode=mode,
        killed=f"all {len(victims)} {role} workers",
        orders=orders,
        in_flight_at_kill=len(at_kill),
        events_during_outage=events_during,
        orders_ended_during_outage=ended_during,
        stalled_at_restart=len(stalled),
        resumed_s_median=round(statistics.median(delays), 2) if delays else None,
        resumed_s_max=round(max(delays), 2) if delays else None,
        seconds=round(seconds, 1),
        lost=len(set(expected) - set(terminal)),
        ended_as_expected=sum(final.get(k) == v.value for k, v in expected.items()),
    )


async def outages(
    brokers: Sequence[str], orders: int, latency_ms: float, work: Path, outage_s: float
) -> list[OutageRow]:
    found = []
    for broker_name in brokers:
        for mode in MODES:
            print(f"outage: {broker_name} {mode} ...", file=sys.stderr, flush=True)
            where = work / f"outage-{broker_name}-{mode}"
            where.mkdir(parents=True)
            found.append(await outage(broker_name, mode, orders, latency_ms, where, outage_s=outage_s))
    return found


def render_outages(rows: Sequence[OutageRow], outage_s: float) -> str:
    lines = [
        f"| broker | mode | killed for {outage_s:g} s | in flight at the kill | events during the outage "
        "| orders ended during it | stalled at restart | progress again after restart (median / max s) "
        "| batch s | lost | ended as expected |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.broker} | {r.mode} | {r.killed} | {r.in_flight_at_kill} | {r.events_during_outage} | "
            f"{r.orders_ended_during_outage} | {r.stalled_at_restart} | {r.resumed_s_median} / {r.resumed_s_max} | "
            f"{r.seconds} | {r.lost} | {r.ended_as_expected}/{r.orders} |"
        )
    return "\n".join(lines)


def render(rows: Sequence[Row]) -> str:
    header = (
        "| broker | mode | processes per role | worker processes | orders/s | vs 1 | CPU ms/order (all) "
        "| of which workers | submitter/owner CPU s | ended as expected |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.broker} | {r.mode} | {r.processes} | {r.worker_processes} | {r.orders_per_s} | "
            f"{r.ratio_to_one if r.ratio_to_one is not None else '-'} | {r.cpu_ms_per_order} | "
            f"{r.worker_cpu_ms_per_order} | {r.runner_cpu_s} | {r.ended_as_expected}/{r.orders} |"
        )
    lines.append(f"\n{os.cpu_count()} cores on this machine.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.process.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=300, help="orders per batch (default: %(default)s)")
    parser.add_argument("--processes", default="1,2,4", help="worker processes per role (default: %(default)s)")
    parser.add_argument("--brokers", default="rabbitmq,nats", help="rabbitmq and/or nats (default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=2.0, help="services' latency per call (default: 2)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument(
        "--outage",
        type=float,
        metavar="SECONDS",
        help="instead: kill every worker of one role mid-batch for SECONDS (orchestration: all of them; "
        "choreography: the payment agent's), per mode and broker",
    )
    parser.add_argument("--workdir", type=Path, help="where logs go (default: a new temporary directory)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(mkdtemp(prefix="scaling-"))
    if args.outage is not None:
        found = asyncio.run(outages(args.brokers.split(","), args.orders, args.latency_ms, work, args.outage))
        print(render_outages(found, args.outage))
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in found], indent=2))
        return 0 if all(r.lost == 0 and r.ended_as_expected == r.orders for r in found) else 1
    counts = [int(n) for n in args.processes.split(",")]
    rows = asyncio.run(measure(args.brokers.split(","), counts, args.orders, args.latency_ms, work))
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0 if all(r.ended_as_expected == r.orders for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
