"""Kill the orchestrator with SIGKILL at seeded moments, again and again, and resume.

A `coordinator run` process works through a batch of orders against a served
sandbox (a separate process, not killed), checkpointing to SQLite or PostgreSQL.
It is SIGKILLed at least 20 times, each time once the event log has grown by a
seeded random number of events -- mid-run, wherever that falls -- and then started
again on the same file, which resumes the unfinished orders. Afterwards every order
has ended exactly once with its expected outcome, and the services agree: no double
reservation, charge or shipment; nothing held for a compensated order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent_coordinator.core.results import WorkflowStatus
from agent_coordinator.examples.orders.app import check_order_effects
from agent_coordinator.examples.orders.sandbox import RemoteSandboxState
from tests.e2e.test_orders_e2e import EXPECTED, example_orders
from tests.e2e.test_sandbox_server import served
from tests.process.test_broker_workers import Where, count_events, terminal_rows

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
ORDERS = 64
WAIT_LIMIT_S = 60.0


async def start_run(orders: Path, url: str, state: str, state_dir: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_coordinator",
            "run",
            str(orders),
            "--services",
            url,
            "--state",
            state,
            "--state-dir",
            str(state_dir),
            "--concurrency",
            "8",
            "--json",
            stdout=output,
            stderr=output,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


async def kill_when_grown(proc: asyncio.subprocess.Process, events: Where, target: int) -> bool:
    """SIGKILL ``proc`` once the event log holds ``target`` events; False if it ended first."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while proc.returncode is None and count_events(events) < target:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the run made no progress to {target} events in {WAIT_LIMIT_S}s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=0.01)  # wakes at once if it exits
    if proc.returncode is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    return True


def terminal_events(events: Where) -> dict[str, set[tuple[str, str]]]:
    """Each order's terminal events, once each (a re-run may log one in two runs)."""
    return {subject: set(ends) for subject, ends in terminal_rows(events).items()}


async def crash_and_resume(state: str, tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    # 2 ms per service call keeps orders in flight long enough to be killed mid-way.
    scenario.write_text(json.dumps({"latency_ms": 2.0}))
    base = example_orders()
    orders = tmp_path / "orders.jsonl"
    rows = [dict(base[i % len(base)], order_id=f"c-{i:03d}") for i in range(ORDERS)]
    # Enough stock for every order of the batch (the catalogue holds 100 of each).
    orders.write_text("".join(json.dumps(row) + "\n" for row in rows))
    expected = {row["order_id"]: EXPECTED[base[i % len(base)]["order_id"]] for i, row in enumerate(rows)}
    state_dir, log = tmp_path / "state", tmp_path / "runs.log"
    # The event log: the state directory's file, or the database of PostgreSQL state.
    events = Where(state_dir, url=state if state.startswith("postgresql://") else None)
    rng = random.Random(20261125)
    async with served(
        tmp_path / "sandbox.log", "--store", str(tmp_path / "sandbox.db"), "--scenario", str(scenario)
    ) as sandbox:
        kills = 0
        while kills < KILLS:
            proc = await start_run(orders, sandbox.url, state, state_dir, log)
            target = count_events(events) + rng.randint(1, 8)
            if not await kill_when_grown(proc, events, target):
                break  # it finished before the kill point: nothing left in flight
            kills += 1
        assert kills >= KILLS, f"only {kills} kills before the batch finished; make the batch bigger"
        proc = await start_run(orders, sandbox.url, state, state_dir, log)
        assert await proc.wait() == 0, log.read_text()[-3000:]
        async with httpx.AsyncClient() as client:
            remote = await RemoteSandboxState.fetch(client, sandbox.url)
    outcomes = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"workflow_id"')]
    final = {o["workflow_id"]: o["status"] for o in outcomes[-ORDERS:]}
    assert final == {k: v.value for k, v in expected.items()}
    terminal = terminal_events(events)
    events.close()
    assert sorted(terminal) == sorted(expected)
    for order_id, ends in terminal.items():
        assert len(ends) == 1, f"{order_id} ended more than once: {ends}"
    for order_id, status in expected.items():
        effects = remote.effects_for(order_id)
        assert all(n == 1 for n in effects.counts.values()), f"{order_id}: an effect repeated {effects.counts}"
        if status is WorkflowStatus.COMPENSATED:
            assert effects.outstanding == [], f"{order_id} still holds {effects.outstanding}"
        else:
            assert effects.counts == {"reservation:held": 1, "charge:captured": 1, "shipment:scheduled": 1}
    assert check_order_effects(remote, []) == []  # stock conserved


async def test_sigkill_twenty_times_then_resume_on_sqlite(tmp_path: Path) -> None:
    await crash_and_resume(f"sqlite://{tmp_path / 'checkpoints.db'}", tmp_path)


@pytest.mark.services
async def test_sigkill_twenty_times_then_resume_on_postgresql(tmp_path: Path, postgres_state: str) -> None:
    await crash_and_resume(postgres_state, tmp_path)
