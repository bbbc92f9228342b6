"""Rounds of scenario processes, and what their results add up to.

The method (see ``docs/benchmarks.md``):

* every scenario runs in a process of its own (``python -m benchmarks.scenario``),
  one at a time, so scenarios never compete for the two cores or share a heap;
* rounds are interleaved: each round runs every scenario once, in an order shuffled
  by a seeded RNG, so slow drift of a shared machine (other jobs, thermal state)
  spreads over all scenarios instead of landing on the ones that ran last;
* per scenario the figures are the **median over rounds**; a ratio to a reference
  is computed **within each round** (this round's scenario / this round's
  reference) and the median of those ratios is reported;
* a scenario that skips (backend missing or unreachable) is not retried in later
  rounds; a memory scenario (``once``) runs in the first round only.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.registry import ScenarioSpec

__all__ = ["REPO_ROOT", "Row", "aggregate", "run_rounds", "run_scenario_process"]

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Seconds one scenario process may take before it is killed and reported as an error.
SCENARIO_TIMEOUT = 900.0


def run_scenario_process(
    spec: ScenarioSpec, *, orders: int, concurrencies: Sequence[int], timeout: float = SCENARIO_TIMEOUT
) -> dict[str, Any]:
    """Run ``spec`` in a fresh interpreter; its JSON result (an error result when the
    process dies, times out or prints no JSON)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.scenario",
        spec.name,
        "--orders",
        str(orders),
        "--concurrency",
        *(str(c) for c in concurrencies),
        "--json",
        "-",
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    began = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"name": spec.name, "status": "error", "reason": f"timed out after {timeout:g}s"}
    wall = time.perf_counter() - began
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        return {
            "name": spec.name,
            "status": "error",
            "reason": f"exited {done.returncode} without a result: {tail or 'no output'}",
        }
    result: dict[str, Any] = json.loads(lines[-1])
    result["process_seconds"] = wall
    return result


def run_rounds(
    specs: Sequence[ScenarioSpec],
    *,
    orders: int,
    rounds: int,
    concurrencies: Sequence[int],
    seed: int = 0,
    on_result: Callable[[int, ScenarioSpec, dict[str, Any]], None] | None = None,
    run: Callable[..., dict[str, Any]] = run_scenario_process,
) -> dict[str, list[dict[str, Any]]]:
    """Run ``rounds`` interleaved rounds; each scenario's results, one per round it ran.

    Each result gets a ``round`` key. ``on_result(round, spec, result)`` is called
    after every process (for progress output).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    results: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in specs}
    skipped: set[str] = set()
    for round_ in range(rounds):
        order = list(specs)
        random.Random(seed * 1_000_003 + round_).shuffle(order)
        for spec in order:
            if spec.name in skipped or (spec.once and round_ > 0):
                continue
            result = run(spec, orders=orders, concurrencies=concurrencies)
            result["round"] = round_
            results[spec.name].append(result)
            if result.get("status") == "skipped":
                skipped.add(spec.name)
            if on_result is not None:
                on_result(round_, spec, result)
    return results


@dataclass
class Row:
    """One scenario's line of the report: medians over its rounds.

    ``per_order`` holds counts divided by items (model calls, tool calls, bus
    messages, checkpoint writes); ``ratios`` maps a column label to
    ``(reference name, median of per-round ratios)``; ``derived`` holds workload
    figures (share of the ideal rate, ms per step, RSS growth).
    """

    spec: ScenarioSpec
    status: str
    reason: str = ""
    rounds: int = 0
    unit: str = "orders"
    items: int = 0
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mb: float | None = None
    per_order: dict[str, float | None] = field(default_factory=dict)
    ratios: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    derived: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    ref_labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.spec.family.name,
            "workload": self.spec.workload,
            "description": self.spec.description,
            "concurrency": self.spec.concurrency,
            "status": self.status,
            "reason": self.reason,
            "rounds": self.rounds,
            "unit": self.unit,
            "items": self.items,
            "rate": self.rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "peak_rss_mb": self.peak_rss_mb,
            "per_order": self.per_order,
            "ratios": {
                label: {"ref": ref, "ref_label": self.ref_labels.get(ref, ref), "ratio": ratio}
                for label, (ref, ratio) in self.ratios.items()
            },
            "derived": self.derived,
            "failed": self.failed,
        }


_COUNT_KEYS = {
    "model_calls": ("model_calls",),
    "tool_calls": ("tool_calls",),
    "bus_messages": ("bus_messages",),
    "bus_deliveries": ("bus_deliveries",),
    "checkpoint_writes": ("checkpoint_puts", "checkpoint_put_writes"),
    "checkpoint_puts": ("checkpoint_puts",),
}


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _per_order(result: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    counts = result.get("counts") or {}
    values = [counts.get(k) for k in keys]
    if all(v is None for v in values) or not result.get("items"):
        return None
    return float(sum(v or 0 for v in values)) / float(result["items"])


def aggregate(specs: Sequence[ScenarioSpec], results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Row]:
    """One :class:`Row` per scenario: medians over rounds, ratios within rounds."""
    ok: dict[str, dict[int, Mapping[str, Any]]] = {
        name: {r["round"]: r for r in runs if r.get("status") == "ok"} for name, runs in results.items()
    }
    labels = {spec.name: spec.family.label or spec.family.name for spec in specs}
    rows: list[Row] = []
    for spec in specs:
        runs = list(results.get(spec.name, []))
        good = list(ok.get(spec.name, {}).values())
        if not good:
            bad = next((r for r in runs if r.get("status") == "error"), runs[0] if runs else {})
            status = str(bad.get("status", "not run"))
            rows.append(Row(spec=spec, status=status, reason=str(bad.get("reason", "")), rounds=0))
            continue
        errors = [r for r in runs if r.get("status") == "error"]
        row = Row(
            spec=spec,
            status="ok",
            reason=f"{len(errors)} round(s) failed: {errors[0].get('reason')}" if errors else "",
            rounds=len(good),
            unit=str(good[0].get("unit", "orders")),
            items=int(good[0].get("items", 0)),
            rate=_median([r["rate"] for r in good]),
            p50_ms=_median([r["p50_ms"] for r in good]),
            p99_ms=_median([r["p99_ms"] for r in good]),
            peak_rss_mb=_median([r["peak_rss_kb"] / 1024 for r in good]),
            failed=max(int(r.get("failed", 0)) for r in good),
        )
        row.per_order = {name: _median([_per_order(r, keys) for r in good]) for name, keys in _COUNT_KEYS.items()}
        for label, ref in spec.refs.items():
            ratios = [
                r["rate"] / ok[ref][round_]["rate"]
                for round_, r in ok[spec.name].items()
                if round_ in ok.get(ref, {}) and ok[ref][round_]["rate"] > 0
            ]
            row.ratios[label] = (ref, _median(ratios))
            row.ref_labels[ref] = labels.get(ref, ref)
        row.derived = _derived(spec, row, good)
        rows.append(row)
    return rows


def _derived(spec: ScenarioSpec, row: Row, good: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    derived: dict[str, float] = {}
    model_calls = row.per_order.get("model_calls")
    if spec.latency > 0 and model_calls and row.rate:
        # The ideal: every in-flight order waits on the model all the time.
        ideal = spec.concurrency / (model_calls * spec.latency)
        derived["ideal_rate"] = ideal
        derived["of_ideal"] = row.rate / ideal
    steps = spec.steps
    if steps and row.rate:
        derived["ms_per_step"] = 1000 / row.rate / steps
    marks = [(r["extra"].get("rss_mark_kb"), r["peak_rss_kb"], r["extra"].get("rss_mark_items")) for r in good]
    marks = [m for m in marks if m[0]]
    if marks:
        mark_kb, end_kb, mark_items = marks[0]
        derived["rss_mark_mb"] = mark_kb / 1024
        derived["rss_growth"] = end_kb / mark_kb
        derived["rss_mark_items"] = float(mark_items)
        if row.items > mark_items:
            derived["kb_per_order"] = (end_kb - mark_kb) / (row.items - mark_items)
    return derived
