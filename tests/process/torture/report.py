"""The torture report: a table per backend, the failures with example orders, JSON."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from tests.process.torture.harness import FAILING_INCIDENTS, TortureReport

__all__ = ["render", "write_json"]

COLUMNS = ("backend", "orders", "kills", "stranded", "misreported", "duplicated", "forked", "takeover s", "verdict")


def _kills(report: TortureReport) -> str:
    by_kind = ", ".join(f"{kind} {n}" for kind, n in report.kills_by_kind().items())
    return f"{len(report.kills)}/{report.planned_moments} ({by_kind})"


def _takeover(report: TortureReport) -> str:
    t = report.takeover()
    never = f", {len(t['never_moved'])} never moved" if t["never_moved"] else ""
    if t["median_s"] is None:
        return f"-{never}"
    return f"{t['median_s']:.2f} med, {t['max_s']:.2f} max{never}"


def row(report: TortureReport) -> list[str]:
    verdict = report.verdict
    stranded = str(len(verdict.stranded))
    if verdict.never_placed:
        stranded += f" ({len(verdict.never_placed)} never placed)"
    misreported = str(len(verdict.misreported))
    if verdict.unreported:
        misreported += f" (+{len(verdict.unreported)} unreported)"
    return [
        f"{report.config.backend} ({report.config.mode})",
        str(verdict.orders),
        _kills(report),
        stranded,
        misreported,
        str(len(verdict.duplicated)),
        str(len(verdict.forked)),
        _takeover(report),
        "PASS" if report.passed else "FAIL",
    ]


def table(reports: list[TortureReport]) -> str:
    rows = [list(COLUMNS), *(row(r) for r in reports)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(report: TortureReport, examples: int = 3) -> str:
    """What went wrong, with example orders (their events and what the services hold)."""
    verdict = report.verdict
    out = [f"== {report.config.backend}: {'PASS' if report.passed else 'FAIL'} in {report.duration_s:.0f}s"]
    out.append(f"   work directory: {report.workdir}" + (f" (schema {report.schema})" if report.schema else ""))
    outcomes = ", ".join(f"{n} {status}" for status, n in sorted(verdict.outcomes.items()))
    out.append(f"   outcomes by the event log: {outcomes}")
    money = verdict.money
    out.append(
        f"   money: charged {money['charged_cents']} - refunded {money['refunded_cents']} = {money['net_cents']};"
        f" completed orders total {money['completed_cents']} ({'ok' if verdict.money_ok else 'MISMATCH'})"
    )
    closing = report.closing
    how = f"exit {closing.exit_code}" if closing.finished else "hung, killed"
    letters = "-" if report.dead_letters is None else report.dead_letters
    out.append(f"   closing {closing.command}: {how}; dead letters: {letters}")
    out.append("   phases: " + ", ".join(f"{name} {seconds:g}s" for name, seconds in report.phases.items()))
    if report.broker_restarts:
        clean = (
            f" ({report.broker_graceful_stops} of them clean stops of a young node)"
            if report.broker_graceful_stops
            else ""
        )
        out.append(f"   broker restarts: {report.broker_restarts}{clean}")
    if verdict.unexpected:
        out.append(f"   note: {len(verdict.unexpected)} orders ended otherwise than the world dictates (deadlines?)")
    for problem in verdict.problems():
        out.append(f"   ! {problem}")
    for incident in report.incidents:
        mark = "!" if incident.what in FAILING_INCIDENTS else "-"
        out.append(f"   {mark} {incident.what} at {incident.at_events} events: {incident.detail}")
    for evidence in itertools.islice(verdict.examples.values(), examples * 4):
        out.append(f"   example {evidence.order_id} (expected {evidence.expected}, log: {evidence.log_status}):")
        out.append(f"      events: {' -> '.join(evidence.events) or 'none'}")
        out.append(
            f"      holds: {', '.join(evidence.holds) or 'nothing'}; records: {', '.join(evidence.records) or 'none'}"
        )
        out.append(f"      reported: {evidence.reported}; status: {evidence.status}")
    return "\n".join(out)


def render(reports: list[TortureReport]) -> str:
    return "\n\n".join([table(reports), *(details(r) for r in reports)])


def write_json(reports: list[TortureReport], path: Path) -> None:
    body = [r.as_json() for r in reports]
    path.write_text(json.dumps(body if len(body) != 1 else body[0], indent=2) + "\n", encoding="utf-8")
