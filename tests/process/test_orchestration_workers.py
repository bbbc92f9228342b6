"""Orchestration across worker processes: runs queued on a broker, carried by any of
three ``coordinator worker --mode orchestration`` processes on PostgreSQL state, and
taken over from a worker that dies -- with no ``resume``.

Against a served sandbox (another process), RabbitMQ or NATS JetStream, and a
PostgreSQL schema of the test's own: three workers, each in an empty directory of
its own (as on machines of their own), and a ``coordinator run --submit`` that
queues 300 orders and reports each as the shared log shows it ended. Each time the
event log reaches the next of 20 seeded sizes, a random worker is SIGKILLed; a
seeded coin says whether it is restarted (at least one worker always lives). Then
every order has ended exactly once, as the world dictates, with no second
reservation, charge or shipment, nothing dead-lettered, stock conserved, and no
file left in any worker's directory. The takeover delay -- from a kill to the next
event of each run the dead worker had in flight -- is measured and printed (and
written to ``takeover.json`` in the test's directory).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import postgres_schema
from tests.process.test_broker_workers import (
    BROKERS,
    TERMINAL,
    Cluster,
    Where,
    assert_effects_match,
    broker,
    dead_letters,
    duplicate_effects,
    fetch,
    grown_to,
    outcomes,
    sandbox,
    start_run,
    stop_all,
    stop_run,
    tail,
    terminal_rows,
    wait_until,
    write_world,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

ORDERS = 300
KILLS = 20
WORKERS = 3
RUN_LIMIT_S = 180.0
TAKEOVER_LIMIT_S = 30.0


def in_flight(where: Where, *, started_by: str | None = None) -> dict[str, int]:
    """The runs the log has that have not ended -- only those the worker of run id
    ``started_by`` started, if given: their latest seq."""
    if started_by is None:
        rows = where.events("SELECT subject, MAX(seq) FROM events GROUP BY subject")
    else:
        rows = where.events(
            "SELECT subject, MAX(seq) FROM events WHERE subject IN "
            "(SELECT subject FROM events WHERE run_id = ?) GROUP BY subject",
            started_by,
        )
    ended = {s for s, _ in where.events("SELECT subject, 1 FROM events WHERE type IN (?, ?)", *TERMINAL)}
    return {subject: seq for subject, seq in rows if subject not in ended}


async def takeover_delays(where: Where, held: dict[str, int], killed_at: float) -> list[float]:
    """Seconds from ``killed_at`` until each run in ``held`` has a newer event."""
    delays: dict[str, float] = {}
    deadline = time.monotonic() + TAKEOVER_LIMIT_S
    while len(delays) < len(held):
        rows = where.events("SELECT subject, MAX(seq) FROM events GROUP BY subject")
        now = time.monotonic()
        for subject, seq in rows:
            if subject in held and subject not in delays and seq > held[subject]:
                delays[subject] = now - killed_at
        if now > deadline:
            stuck = sorted(set(held) - set(delays))
            raise AssertionError(f"runs not taken over within {TAKEOVER_LIMIT_S}s of their worker's death: {stuck}")
        await asyncio.sleep(0.02)  # polling the shared log for a condition, bounded above
    return list(delays.values())


def run_id_of(worker_output: str) -> str:
    """The run id a worker's ready line names ("... ready on HOST (run RUN_ID)")."""
    match = re.search(r"\(run ([^)]+)\)", worker_output)
    assert match, f"no run id in the worker's output:\n{worker_output[-2000:]}"
    return match[1]


@pytest.mark.parametrize("broker_name", BROKERS)
async def test_orchestration_workers_killed_again_and_again_finish_every_order_once(
    broker_name: str, tmp_path: Path
) -> None:
    scenario, orders, expected = write_world(tmp_path, ORDERS, prefix="w")
    logs = tmp_path / "logs"
    logs.mkdir()
    run_log = tmp_path / "run.log"
    rng = random.Random(f"orchestration-workers-{broker_name}-20261129")
    # About five events per order; the kills fall in the first 80% of the log.
    points = sorted(rng.sample(range(ORDERS // 10, ORDERS * 4), KILLS))
    delays: list[float] = []
    clocks: list[asyncio.Task[list[float]]] = []
    restarts = kills = 0
    async with (
        postgres_schema() as url,
        broker(broker_name) as bus_url,
        sandbox(tmp_path, scenario) as services,
    ):
        where = Where(tmp_path / "state", url=url, keys=tmp_path / "keys")
        cluster = Cluster(bus_url, services.url, where, logs)
        slots = [f"orchestration#{i}" for i in range(1, WORKERS + 1)]
        run = None
        try:
            for slot in slots:
                await cluster.start(slot)
            await cluster.wait_ready()
            began = time.monotonic()
            run = await start_run(orders, bus_url, services.url, where, run_log, submit=True)
            for point in points:
                if not await grown_to(run, where, point):
                    break
                await wait_until(
                    lambda: any(w.ready() for w in cluster.workers.values()),
                    "a worker to kill",
                    list(cluster.workers.values()),
                )
                victim = rng.choice(sorted(s for s, w in cluster.workers.items() if w.ready()))
                held = in_flight(where, started_by=run_id_of(cluster.workers[victim].text()))
                killed_at = time.monotonic()
                await cluster.kill(victim)
                kills += 1
                if not cluster.workers or rng.random() < 0.5:
                    await cluster.start(victim)  # restarted (always when it was the last one)
                    restarts += 1
                if held:
                    # Clocked beside the schedule, not before the next kill: waiting here
                    # let the batch run past the remaining kill points (NATS's takeover
                    # waits out ack_wait), and fewer kills happened than planned.
                    clocks.append(asyncio.create_task(takeover_delays(where, held, killed_at)))
            for measured in await asyncio.gather(*clocks):
                delays.extend(measured)
            code = await asyncio.wait_for(run.wait(), RUN_LIMIT_S)
            assert code == 0, tail(run_log)
            took = time.monotonic() - began
            await cluster.wait_ready()
            await stop_all(cluster)
        finally:
            for clock in clocks:
                clock.cancel()
            await stop_run(run)
            await cluster.close()
        remote = await fetch(services.url)
        letters = await dead_letters(bus_url)
        terminal = terminal_rows(where)
        left = where.files_written()
        where.close()
    final = {order_id: row["status"] for order_id, row in outcomes(run_log).items()}
    report: dict[str, Any] = {
        "broker": broker_name,
        "orders": ORDERS,
        "kills": kills,
        "restarts": restarts,
        "runs_taken_over": len(delays),
        "takeover_s": {
            "median": round(statistics.median(delays), 3) if delays else None,
            "p90": round(statistics.quantiles(delays, n=10)[-1], 3) if len(delays) >= 2 else None,
            "max": round(max(delays), 3) if delays else None,
        },
        "batch_s": round(took, 1),
    }
    (tmp_path / "takeover.json").write_text(json.dumps(report, indent=2))
    print(f"\n{json.dumps(report)}")
    assert kills == KILLS, f"only {kills} kills before the batch finished"
    assert sorted(set(expected) - set(terminal)) == []
    for order_id, ends in terminal.items():
        assert len(ends) == 1, f"{order_id} ended more than once: {ends}"
    assert final == {k: v.value for k, v in expected.items()}
    assert duplicate_effects(remote, expected) == {}
    assert letters == []
    assert left == [], "a worker wrote local state on shared (PostgreSQL) state"
    assert_effects_match(remote, expected)
