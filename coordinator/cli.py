"""The ``coordinator`` command line.

    coordinator run FILE [--mode orchestration|choreography] [--seed N] [--json]
    coordinator trace WORKFLOW_ID

Runs read inputs from a JSON-lines file (one workflow input per line), run every
valid line, and report each run; an invalid line is reported with its line number
and field and makes the exit code non-zero, but does not stop the other lines.
Every event goes to the event log in the state directory (``.coordinator/`` or
``$COORDINATOR_STATE_DIR``), which ``trace`` reads.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.tree import Tree

from coordinator.app import AppOptions, WorkflowApp, load_app
from coordinator.errors import CoordinatorError, InvalidInput
from coordinator.eventlog import SqliteEventLog, causal_order
from coordinator.events import Clock, Event, LogicalClock, SystemClock
from coordinator.results import WorkflowResult, WorkflowStatus
from coordinator.run import MODES, open_coordinator
from coordinator.settings import RunSettings
from coordinator.workflow import Workflow

__all__ = ["app", "read_inputs"]

DEFAULT_APP = "agents.orders:order_fulfilment_app"

app = typer.Typer(
    help="Run business workflows carried out by tool-using LLM agents, orchestrated or choreographed.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


def state_dir(explicit: Path | None) -> Path:
    """Where run state lives: ``--state-dir``, else ``$COORDINATOR_STATE_DIR``, else ``./.coordinator``."""
    return explicit or Path(os.environ.get("COORDINATOR_STATE_DIR", ".coordinator"))


@dataclass(frozen=True)
class InputProblem:
    """One line of an input file that could not be used."""

    line: int
    message: str


def read_inputs(
    path: Path, workflow: Workflow, *, context: dict[str, Any] | None = None
) -> tuple[list[BaseModel], list[InputProblem]]:
    """Read a JSON-lines file: the valid inputs, and one problem per invalid field.

    Inputs are validated with :meth:`Workflow.validate_input` (``context`` goes to
    the validators, e.g. the known SKUs). Blank lines and lines starting with ``#``
    are skipped. A line whose workflow id repeats an earlier line's is a problem too:
    two runs cannot share an id.
    """
    inputs: list[BaseModel] = []
    problems: list[InputProblem] = []
    first_line: dict[str, int] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(InputProblem(number, f"not valid JSON: {exc.msg} at column {exc.colno}"))
            continue
        try:
            item = workflow.validate_input(raw, context=context)
        except InvalidInput as exc:
            problems += [InputProblem(number, f"field `{field}`: {message}") for field, message in exc.errors]
            continue
        workflow_id = workflow.workflow_id(item)
        if workflow_id in first_line:
            problems.append(
                InputProblem(
                    number,
                    f"field `{workflow.id_field}`: {workflow_id!r} was already used on line {first_line[workflow_id]}",
                )
            )
            continue
        first_line[workflow_id] = number
        inputs.append(item)
    return inputs, problems


@app.command()
def run(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON-lines file of workflow inputs")],
    mode: Annotated[str, typer.Option(help=f"coordination mode: {' | '.join(MODES)}")] = "orchestration",
    seed: Annotated[int, typer.Option(help="seed for event ids, retry jitter and sandbox faults")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="workflows in flight at once")] = 16,
    transient_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of service calls answered 503 (seeded)")
    ] = 0.0,
    scenario: Annotated[Path | None, typer.Option(help="sandbox scenario file (catalogue, test cards, ...)")] = None,
    workflow: Annotated[str, typer.Option(help="the WorkflowApp to run, as package.module:attribute")] = DEFAULT_APP,
    json_output: Annotated[
        bool, typer.Option("--json", help="print one JSON object per run instead of a table")
    ] = False,
    logical_clock: Annotated[bool, typer.Option(help="stamp events with logical time (reproducible logs)")] = False,
    state: Annotated[Path | None, typer.Option("--state-dir", help="directory for the event log")] = None,
) -> None:
    """Run every workflow input in FILE and report each outcome."""
    if mode not in MODES:
        errors.print(f"[red]unknown --mode {mode!r}[/]; choose one of: {', '.join(MODES)}")
        raise typer.Exit(2)
    try:
        workflow_app = load_app(workflow)
    except CoordinatorError as exc:
        errors.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    options = AppOptions(seed=seed, transient_rate=transient_rate, scenario=str(scenario) if scenario else None)
    clock: Clock = LogicalClock() if logical_clock else SystemClock()
    log_path = state_dir(state) / "events.db"
    exit_code = asyncio.run(_run(file, workflow_app, options, mode, concurrency, clock, log_path, json_output))
    raise typer.Exit(exit_code)


async def _run(
    file: Path,
    workflow_app: WorkflowApp,
    options: AppOptions,
    mode: str,
    concurrency: int,
    clock: Clock,
    log_path: Path,
    json_output: bool,
) -> int:
    event_log = SqliteEventLog(log_path)
    try:
        async with workflow_app.environment(options) as env:
            inputs, problems = read_inputs(file, workflow_app.workflow, context=env.validation_context)
            for problem in problems:
                errors.print(f"[red]{file}:{problem.line}[/]: {problem.message}")
            settings = RunSettings(seed=options.seed)
            async with open_coordinator(
                workflow_app.workflow,
                agents=env.agents,
                mode=mode,
                settings=settings,
                event_log=event_log,
                clock=clock,
                concurrency=concurrency,
            ) as coordinator:
                results = await _run_with_progress(coordinator, inputs, concurrency, quiet=json_output)
            inconsistencies = env.check(results) if env.check is not None else []
    finally:
        event_log.close()
    if json_output:
        for result in results:
            console.print_json(json.dumps(_summary(result)))
    else:
        _print_table(results, mode)
        console.print(_summary_line(results, problems))
        explain = next((r.workflow_id for r in results if r.reason), results[0].workflow_id if results else "ID")
        console.print(
            f"[dim]event log: {log_path} (run {coordinator.run_id}); explain one: coordinator trace {explain}[/]"
        )
    for line in inconsistencies:
        errors.print(f"[red]inconsistent:[/] {line}")
    if problems or inconsistencies:
        return 1
    return 0


async def _run_with_progress(coordinator: Any, inputs: list[BaseModel], concurrency: int, *, quiet: bool) -> Any:
    if quiet or len(inputs) < 20:
        return await coordinator.run_many(inputs, concurrency=concurrency)
    with Progress(console=errors, transient=True) as progress:
        task = progress.add_task(f"{coordinator.mode}", total=len(inputs))

        def advance(_: WorkflowResult) -> None:
            progress.advance(task)

        return await coordinator.run_many(inputs, concurrency=concurrency, on_result=advance)


def _summary(result: WorkflowResult) -> dict[str, Any]:
    usage = result.usage
    return {
        "workflow_id": result.workflow_id,
        "mode": result.mode,
        "status": result.status.value,
        "reason": result.reason,
        "steps_done": result.steps_done,
        "steps_compensated": result.steps_compensated,
        "model_calls": usage.model_calls,
        "tool_calls": usage.tool_calls,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "ms": round(result.duration_ms, 1),
    }


STATUS_STYLE = {
    WorkflowStatus.COMPLETED: "green",
    WorkflowStatus.COMPENSATED: "yellow",
    WorkflowStatus.NEEDS_ATTENTION: "bold red",
    WorkflowStatus.AWAITING_APPROVAL: "cyan",
    WorkflowStatus.FAILED: "red",
}


def _print_table(results: list[WorkflowResult], mode: str) -> None:
    table = Table(title=f"{len(results)} runs ({mode})")
    table.caption = "done/undone: steps performed/compensated; model, tool: calls made"
    for column in ("id", "outcome", "done", "undone", "model", "tool", "ms"):
        numeric = column in ("model", "tool", "ms")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for result in results:
        usage = result.usage
        style = STATUS_STYLE[result.status]
        table.add_row(
            result.workflow_id,
            f"[{style}]{result.status.value}[/]",
            f"{result.steps_done}/{len(result.steps)}",
            str(result.steps_compensated),
            str(usage.model_calls),
            str(usage.tool_calls),
            f"{result.duration_ms:.1f}",
        )
    console.print(table)
    for result in results:
        if result.reason:
            style = STATUS_STYLE[result.status]
            console.print(f"[bold]{result.workflow_id}[/] [{style}]{result.status.value}[/]: {result.reason}")


def _summary_line(results: list[WorkflowResult], problems: list[InputProblem]) -> str:
    counts = {status: 0 for status in WorkflowStatus}
    for result in results:
        counts[result.status] += 1
    always = (WorkflowStatus.COMPLETED, WorkflowStatus.COMPENSATED)
    parts = [f"{counts[s]} {s.value}" for s in WorkflowStatus if s in always or counts[s]]
    line = f"{len(results)} runs: " + ", ".join(parts)
    if problems:
        line += f"; {len(problems)} input problem(s), see above"
    return line


@app.command()
def trace(
    workflow_id: Annotated[str, typer.Argument(help="the workflow id (an order id)")],
    run_id: Annotated[str | None, typer.Option("--run", help="a specific run (default: the latest)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the events as JSON lines")] = False,
    state: Annotated[Path | None, typer.Option("--state-dir", help="directory holding the event log")] = None,
) -> None:
    """Show one workflow run's causal chain of events, from the event log."""
    log_path = state_dir(state) / "events.db"
    if not log_path.exists():
        errors.print(f"[red]no event log at {log_path}[/]; run `coordinator run FILE` first (or pass --state-dir)")
        raise typer.Exit(1)
    event_log = SqliteEventLog(log_path)
    try:
        events = event_log.events(workflow_id, run_id=run_id)
    finally:
        event_log.close()
    if not events:
        errors.print(f"[red]no events for {workflow_id!r}[/] in {log_path}" + (f" (run {run_id})" if run_id else ""))
        raise typer.Exit(1)
    if json_output:
        for event in events:
            console.print(event.to_json(), soft_wrap=True, markup=False, highlight=False)
        return
    console.print(render_trace(workflow_id, events))


def render_trace(workflow_id: str, events: list[Event]) -> Tree:
    """A rich tree of one run's events, each under the event that caused it."""
    root = Tree(f"[bold]{workflow_id}[/]")
    nodes: dict[str, Tree] = {}
    for _, event in causal_order(events):
        parent = nodes.get(event.causation_id or "", root)
        nodes[event.id] = parent.add(_describe(event))
    return root


def _describe(event: Event) -> str:
    """One line for a trace: type, source, time, and what explains the event."""
    data = event.data
    detail = ""
    if data.get("reason"):
        detail = f"[red]{data['reason']}[/]"
    elif isinstance(data.get("result"), dict):
        detail = ", ".join(f"{k}={v}" for k, v in data["result"].items() if isinstance(v, (str, int, float)))
    elif "status" in data:
        detail = f"status={data['status']}"
    rejections = data.get("rejections") or []
    if rejections:
        detail += f" [yellow](model re-asked {len(rejections)}x: {'; '.join(rejections)})[/]"
    usage = data.get("usage") or {}
    cost = ""
    if usage:
        cost = f" [dim]model calls {usage.get('model_calls', 0)}, tool calls {usage.get('tool_calls', 0)}[/]"
    stamp = event.time.strftime("%H:%M:%S.%f")[:-3]
    return f"[bold]{event.type}[/] [dim]{stamp} {event.source}[/] {detail}{cost}"


def main() -> None:  # pragma: no cover - console script entry
    app()
