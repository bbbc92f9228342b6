"""The report: one table of scenarios, the issue's targets, the machine, as text,
Markdown or JSON."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.harness import Row
from benchmarks.registry import LATENCY_SECONDS, STEP_COUNTS, STEPS_CONCURRENCY

__all__ = ["COLUMNS", "Target", "machine", "markdown_table", "print_report", "report_json", "targets"]

#: The table's columns; counts are per order (per message for R3).
COLUMNS = (
    "scenario",
    "rate/s",
    "p50 ms",
    "p99 ms",
    "model",
    "tools",
    "bus",
    "ckpt",
    "RSS MB",
    "xR1",
    "xR2|R3",
    "note",
)


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU, cores, memory, Python and key versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory_gb = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    versions: dict[str, str | None] = {}
    for package in ("langgraph", "langchain-core", "langgraph-checkpoint-sqlite", "aio-pika", "nats-py"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _count(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _ratio(row: Row, label: str) -> str:
    if label not in row.ratios:
        return ""
    ref, ratio = row.ratios[label]
    if ratio is None:
        shown = "—"
    else:
        shown = f"{ratio:.3f}" if ratio < 0.1 else f"{ratio:.2f}" if ratio < 10 else f"{ratio:.1f}"
    return shown if label == "R1" else f"{shown} {row.ref_labels.get(ref, ref)}"


def _note(row: Row) -> str:
    if row.status != "ok":
        return f"{row.status}: {row.reason}"
    notes = []
    if row.unit != "orders":
        notes.append(f"rate in {row.unit}/s")
    d = row.derived
    if "of_ideal" in d:
        notes.append(f"{d['of_ideal']:.0%} of ideal {d['ideal_rate']:.0f}/s")
    if "ms_per_step" in d:
        notes.append(f"{d['ms_per_step']:.3f} ms/step")
    if "rss_growth" in d:
        notes.append(
            f"RSS {d['rss_mark_mb']:.0f} MB after {d['rss_mark_items']:,.0f} → x{d['rss_growth']:.2f} "
            f"after {row.items:,}; {d.get('kb_per_order', 0):.1f} KB/order"
        )
    if row.failed:
        notes.append(f"{row.failed} orders did not complete!")
    if row.reason:
        notes.append(row.reason)
    return "; ".join(notes)


def _cells(row: Row) -> list[str]:
    per = row.per_order
    return [
        row.name,
        _num(row.rate),
        _num(row.p50_ms, 2),
        _num(row.p99_ms, 2),
        _count(per.get("model_calls")),
        _count(per.get("tool_calls")),
        _count(per.get("bus_messages")),
        _count(per.get("checkpoint_writes")),
        _num(row.peak_rss_mb, 0),
        _ratio(row, "R1"),
        _ratio(row, "R2"),
        _note(row),
    ]


@dataclass(frozen=True)
class Target:
    """One of the issue's targets and what this run measured for it."""

    target: str
    figure: str
    met: bool | None  # None: not measured in this run


def targets(rows: Sequence[Row]) -> list[Target]:
    """The issue's targets, checked against ``rows`` (only those that were measured)."""
    by_name = {row.name: row for row in rows if row.status == "ok"}
    found: list[Target] = []

    def ratio(name: str, label: str) -> float | None:
        row = by_name.get(name)
        return row.ratios.get(label, ("", None))[1] if row else None

    workloads = sorted(
        {row.spec.workload for row in rows if row.spec.workload.startswith("c")}, key=lambda w: int(w[1:])
    )
    for workload in workloads:
        for family, bound, what in (
            ("ours_orchestration_memory", 4.0, "≥ 4x R2"),
            ("ours_orchestration_sqlite", 3.0, "≥ 3x R2s"),
        ):
            value = ratio(f"{family}.{workload}", "R2")
            if value is not None:
                found.append(Target(f"{family}.{workload} {what}", f"{value:.2f}x", value >= bound))
        value = ratio(f"ours_choreography_memory.{workload}", "R1")
        if value is not None:
            found.append(
                Target(
                    f"ours_choreography_memory.{workload} within 10x of R1",
                    f"{1 / value:.1f}x slower" if value else "—",
                    value >= 0.1,
                )
            )
        model_supervisor = by_name.get(f"ours_orchestration_model_supervisor.{workload}")
        rule_supervisor = by_name.get(f"ours_orchestration_memory.{workload}")
        if model_supervisor and rule_supervisor and model_supervisor.rate and rule_supervisor.rate:
            supervisor_calls = model_supervisor.per_order.get("model_calls") or 0
            relative = model_supervisor.rate / rule_supervisor.rate
            found.append(
                Target(
                    f"ours_orchestration_model_supervisor.{workload}: what the model-driven supervisor costs",
                    f"{supervisor_calls:g} model calls/order; {relative:.2f}x the rule supervisor's rate",
                    None,
                )
            )
        for mode in ("orchestration_memory", "choreography_memory"):
            row = by_name.get(f"ours_{mode}.{workload}")
            calls = row.per_order.get("model_calls") if row else None
            if calls is not None:
                found.append(Target(f"ours_{mode}.{workload}: 3 model calls per order", f"{calls:g}", calls == 3))
    for row in rows:
        if row.status == "ok" and "of_ideal" in row.derived and row.spec.family.kind == "ours":
            share = row.derived["of_ideal"]
            found.append(
                Target(
                    f"{row.name}: ≥ 70% of ideal with {LATENCY_SECONDS * 1000:.0f} ms model latency",
                    f"{share:.0%}",
                    share >= 0.7,
                )
            )
        if row.status == "ok" and "rss_growth" in row.derived and row.spec.family.kind == "ours":
            found.append(_rss_target(row, by_name.get(row.spec.refs.get("R1", ""))))
    for family in ("ours_orchestration_memory", "ours_choreography_memory"):
        small = by_name.get(f"{family}.steps{STEP_COUNTS[0]}.c{STEPS_CONCURRENCY}")
        large = by_name.get(f"{family}.steps{STEP_COUNTS[-1]}.c{STEPS_CONCURRENCY}")
        if small and large and "ms_per_step" in small.derived and "ms_per_step" in large.derived:
            growth = large.derived["ms_per_step"] / small.derived["ms_per_step"]
            found.append(
                Target(
                    f"{family}: cost linear in steps (ms/step at {STEP_COUNTS[-1]} ≤ 1.5x at {STEP_COUNTS[0]})",
                    f"x{growth:.2f} ({small.derived['ms_per_step']:.2f} → {large.derived['ms_per_step']:.2f} ms/step)",
                    growth <= 1.5,
                )
            )
    return found


def _rss_target(row: Row, r1: Row | None) -> Target:
    """Peak RSS after 10x the orders against after 1x -- net of what R1 grows on the
    same orders (the in-process sandbox keeps every reservation, charge and shipment,
    which a real deployment's services would hold elsewhere)."""
    d = row.derived
    mark_kb = d["rss_mark_mb"] * 1024
    end_kb = d["rss_growth"] * mark_kb
    what = f"{row.name}: peak RSS after 10x orders ≤ 1.2x after 1x"
    if r1 is None or "rss_growth" not in r1.derived:
        return Target(
            what, f"x{d['rss_growth']:.2f} (R1 not measured: sandbox growth included)", d["rss_growth"] <= 1.2
        )
    r1_mark_kb = r1.derived["rss_mark_mb"] * 1024
    sandbox_kb = r1.derived["rss_growth"] * r1_mark_kb - r1_mark_kb
    net = (end_kb - sandbox_kb) / mark_kb
    return Target(f"{what}, net of R1's growth", f"x{net:.2f} (x{d['rss_growth']:.2f} gross)", net <= 1.2)


def print_report(rows: Sequence[Row], *, header: Mapping[str, Any], console: Console | None = None) -> None:
    """The table, then the targets, on ``console`` (default: stdout, at least 200 wide)."""
    console = console or Console(width=max(200, Console().width))
    info = header.get("machine", {})
    title = (
        f"{header.get('orders')} orders x {header.get('rounds')} rounds (medians; ratios per round) — "
        f"{info.get('cpu')}, {info.get('cores')} cores, Python {info.get('python')}, {info.get('date')}"
    )
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in COLUMNS:
        table.add_column(
            column, justify="left" if column in ("scenario", "note") else "right", no_wrap=column != "note"
        )
    for row in rows:
        table.add_row(*_cells(row), style=None if row.status == "ok" else "dim")
    console.print(table)
    checks = targets(rows)
    if checks:
        summary = Table(title="Targets (issue 6)", title_justify="left")
        for column in ("target", "measured", "met"):
            summary.add_column(column)
        for check in checks:
            mark = "—" if check.met is None else ("met" if check.met else "MISSED")
            summary.add_row(check.target, check.figure, mark, style="bold" if check.met is False else None)
        console.print(summary)


def markdown_table(rows: Sequence[Row]) -> str:
    """The scenario table as GitHub Markdown (for the README and docs)."""
    align = ["---" if column in ("scenario", "note") else "---:" for column in COLUMNS]
    header = [column.replace("|", "\\|") for column in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        cells = [c.replace("|", "\\|") for c in _cells(row)]
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join(cells) + " |")
    checks = targets(rows)
    if checks:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [
            f"| {c.target} | {c.figure} | {'—' if c.met is None else ('met' if c.met else '**missed**')} |"
            for c in checks
        ]
    return "\n".join(lines) + "\n"


def report_json(rows: Sequence[Row], *, header: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Everything: the header, one object per row, the targets and every round's raw result."""
    return {
        **header,
        "rows": [row.to_json() for row in rows],
        "targets": [{"target": t.target, "measured": t.figure, "met": t.met} for t in targets(rows)],
        "raw": raw,
    }
