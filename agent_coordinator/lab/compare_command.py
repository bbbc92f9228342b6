"""The body of ``coordinator compare FILE``: run :func:`~agent_coordinator.lab.compare.compare`,
print its table (or JSON) and write its report. The shell parses the options and
names the app (the lab knows no app of its own: the order app is a layer above).

The command sits above both the measuring (:mod:`agent_coordinator.lab.compare`) and
the rendering (:mod:`agent_coordinator.lab.compare_report`), so neither imports the
other's caller: the report module reads the comparison's types, the comparison
knows nothing of how it is shown.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from agent_coordinator.core.app import load_app
from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.lab.compare import compare, read_jsonl
from agent_coordinator.lab.compare_report import render_table, write_report
from agent_coordinator.lab.faults import FaultPlan

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["run_compare_command"]


def run_compare_command(
    file: Path,
    *,
    orders: int | None = None,
    faults: str = "standard",
    bus: str | None = None,
    json_output: bool = False,
    report: Path | None = None,
    workflow: str,
    concurrency: int = 16,
    deadline: float = 1.0,
    console: Console | None = None,
) -> int:
    """``coordinator compare FILE``: run, print the table (or JSON), write the report.

    Returns the exit code: 0 when every invariant held, 1 when one was violated,
    2 for unusable arguments (named on stderr).
    """
    from rich.console import Console

    out = console or Console()
    err = Console(stderr=True)
    unusable = _unusable_report_directory(report) if report is not None else None
    if unusable is not None:  # checked before the runs: a report that cannot be written wastes them
        err.print(unusable, style="red", markup=False, highlight=False)
        return 2
    try:
        plan = FaultPlan.parse(faults)
        app = load_app(workflow)
        items, problems = read_jsonl(file)
    except (ValueError, CoordinatorError, OSError) as exc:
        err.print(f"[red]{exc}[/]")
        return 2
    for problem in problems:
        err.print(f"[yellow]{file}: {problem} (skipped)[/]")
    # Injected outages and missed deadlines are the point here: their per-call warnings are not news.
    quiet = [
        logging.getLogger(name) for name in ("agent_coordinator.core.runner", "agent_coordinator.bus.choreography")
    ]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        result = asyncio.run(
            compare(
                app,
                items,
                orders=orders,
                faults=plan,
                bus_url=bus,
                concurrency=concurrency,
                deadline=deadline,
                source=str(file),
            )
        )
    except CoordinatorError as exc:
        err.print(f"[red]{exc}[/]")
        return 2
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    if json_output:
        out.print_json(result.model_dump_json())
    else:
        out.print(render_table(result))
        for story in result.outages:
            out.print(f"- {story}")
    if report is not None:
        command = f"coordinator compare {file}" + (f" --orders {orders}" if orders else "") + f" --faults {faults}"
        command += f" --bus {bus}" if bus else ""
        command += f" --report {report}"
        try:
            written = write_report(result, report, command=command)
        except OSError as exc:
            err.print(f"cannot write the report to {report}: {exc}", style="red", markup=False, highlight=False)
            return 2
        if not json_output:
            out.print(f"report: {written[-3]} (+ {len(written) - 3} more files in {report})")
    return 1 if result.violation_count else 0


def _unusable_report_directory(directory: Path) -> str | None:
    """Why ``--report DIRECTORY`` cannot be written (a file on its path, an unwritable
    parent), or None when it can be (made)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is" if existing == directory else f"is under {existing}, which is"
        return f"--report {directory} {where} a file, not a directory; pick a directory for the report"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--report {directory}: {existing} is not writable; pick a directory you can write"
    return None
