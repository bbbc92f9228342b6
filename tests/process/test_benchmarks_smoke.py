"""The benchmark harness runs end to end on a tiny workload and reports sane figures.

No timing is asserted -- only that the harness produces the rows, counts and ratios
it promises (performance is shown by ``python -m benchmarks``, never by a test).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from benchmarks.harness import REPO_ROOT, aggregate, run_rounds
from benchmarks.registry import ScenarioSpec, scenarios, select
from benchmarks.report import markdown_table, print_report

CHEAP = ["r1.c1", "ours_orchestration_memory.c1", "ours_choreography_memory.c1"]


def test_the_cli_runs_three_cheap_scenarios_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--orders",
            "5",
            "--rounds",
            "1",
            "--only",
            *CHEAP,
            "--no-refs",
            "--json",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in CHEAP:
        assert name in done.stdout  # the table names every scenario
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert set(rows) == set(CHEAP)
    for row in rows.values():
        assert row["status"] == "ok", row["reason"]
        assert row["rounds"] == 1 and row["items"] == 5 and row["failed"] == 0
        assert row["rate"] > 0 and row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"]
        assert row["peak_rss_mb"] > 0
        assert row["per_order"]["tool_calls"] == 3  # reserve, charge, ship
    assert rows["r1.c1"]["per_order"]["model_calls"] is None
    orchestration, choreography = rows["ours_orchestration_memory.c1"], rows["ours_choreography_memory.c1"]
    for ours in (orchestration, choreography):
        assert ours["per_order"]["model_calls"] == 3  # one per step with the default supervisor
        assert ours["ratios"]["R1"]["ref"] == "r1.c1" and ours["ratios"]["R1"]["ratio"] > 0
    assert orchestration["per_order"]["checkpoint_writes"] > 0 and orchestration["per_order"]["bus_messages"] is None
    assert choreography["per_order"]["bus_messages"] == 5  # OrderPlaced, 3 step events, OrderCompleted
    assert choreography["per_order"]["checkpoint_writes"] is None
    assert report["machine"]["cores"] and report["raw"]["r1.c1"][0]["status"] == "ok"


def test_rounds_are_interleaved_and_ratios_are_medians_of_per_round_ratios() -> None:
    specs = select(scenarios(), ["ours_orchestration_memory.c1"])
    assert [s.name for s in specs] == ["ours_orchestration_memory.c1", "r1.c1", "r2.c1"]  # references added
    rates = {  # per round: ours, r1, r2
        0: (100.0, 1000.0, 50.0),
        1: (120.0, 1000.0, 30.0),
        2: (90.0, 1500.0, 45.0),
    }
    calls: list[tuple[int, str]] = []

    def fake_run(spec: ScenarioSpec, *, orders: int) -> tuple[dict[str, Any], dict[str, int]]:
        round_ = sum(1 for _, name in calls if name == spec.name)
        calls.append((round_, spec.name))
        rate = rates[round_][["ours_orchestration_memory.c1", "r1.c1", "r2.c1"].index(spec.name)]
        counts = {"model_calls": 3 * orders, "tool_calls": 3 * orders, "checkpoint_puts": 9 * orders}
        return {"status": "ok", "unit": "orders", "items": orders, "rate": rate, "p50_ms": 1.0, "p99_ms": 2.0}, counts

    def run(spec: ScenarioSpec, *, orders: int, concurrencies: Sequence[int]) -> dict[str, Any]:
        result, counts = fake_run(spec, orders=orders)
        return {**result, "peak_rss_kb": 1024, "failed": 0, "counts": counts, "extra": {}}

    raw = run_rounds(specs, orders=10, rounds=3, concurrencies=[1], seed=1, run=run)
    assert [len(raw[s.name]) for s in specs] == [3, 3, 3]
    orders_per_round = [[name for r, name in calls if r == i] for i in range(3)]
    assert all(sorted(o) == sorted(s.name for s in specs) for o in orders_per_round)
    rows = {row.name: row for row in aggregate(specs, raw)}
    ours = rows["ours_orchestration_memory.c1"]
    assert ours.rate == 100.0
    # per-round ratios to R2: 2.0, 4.0, 2.0 -> median 2.0 (not 100/45)
    assert ours.ratios["R2"][0] == "r2.c1" and ours.ratios["R2"][1] == pytest.approx(2.0)
    # per-round ratios to R1: 0.1, 0.12, 0.06 -> median 0.1
    assert ours.ratios["R1"][0] == "r1.c1" and ours.ratios["R1"][1] == pytest.approx(0.1)
    assert ours.per_order["model_calls"] == 3 and ours.per_order["checkpoint_writes"] == 9

    console = Console(file=io.StringIO(), width=240)
    print_report(list(rows.values()), header={"orders": 10, "rounds": 3, "machine": {}}, console=console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "ours_orchestration_memory.c1" in text and "2.00 R2" in text
    assert "| `r2.c1` |" in markdown_table(list(rows.values()))


def test_an_unknown_scenario_name_is_refused_with_the_families() -> None:
    with pytest.raises(ValueError, match=r"matches no scenario; families: .*ours_orchestration_memory"):
        select(scenarios(), ["ours_orchestration_nowhere"])
