"""How the shell draws runs for people: the status table and the trace tree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from agent_coordinator.core.eventlog import RunRecord, causal_order
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import WorkflowStatus
from agent_coordinator.shell.console import console
from agent_coordinator.shell.reporting import (
    STATUS_STYLE,
)
from agent_coordinator.shell.session import RunApp


@dataclass(frozen=True)
class StatusRow:
    workflow_id: str
    run: str
    mode: str
    workflow: str
    event: Event
    state: str
    app: RunApp


def status_table(rows: Sequence[StatusRow], title: str) -> Table:
    """The status table; ids and statuses are never cut: at a narrow width the run
    column goes first (``--json`` has it), then the other columns wrap."""
    cells = [
        (
            row.workflow_id,
            row.state,
            row.event.type,
            row.workflow,
            row.mode,
            row.run,
        )
        for row in rows
    ]
    headers = ("id", "status", "last event", "workflow", "mode", "run")
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    keep = len(headers)
    if sum(widths) + 3 * len(widths) + 1 > console.width:
        keep -= 1  # drop the run column first
    table = Table(title=title)
    if keep < len(headers):
        table.caption = "the run column is left out at this width: see --json"
    for i, header in enumerate(headers[:keep]):
        whole = i < 2  # the id and the status are never wrapped or cut
        table.add_column(header, no_wrap=whole, min_width=widths[i] if whole else None, overflow="fold")
    for row, values in zip(rows, cells, strict=True):
        style = STATUS_STYLE.get(WorkflowStatus(row.state), "") if row.state in set(WorkflowStatus) else "magenta"
        texts = [Text(value) for value in values[:keep]]
        texts[1].stylize(style)
        table.add_row(*texts)
    return table


def trace_header(workflow_id: str, run_id: str | None, record: RunRecord | None, resolved: RunApp, last: Event) -> Text:
    state = resolved.status(last)
    header = Text(workflow_id, style="bold") + Text(": ")
    style = STATUS_STYLE.get(WorkflowStatus(state), "") if state in set(WorkflowStatus) else "magenta"
    header += Text(state, style=style)
    parts = [
        f"workflow {record.workflow if record else '?'}",
        f"app {resolved.spec or '?'}",
        f"{record.mode if record else '?'} mode",
        f"run {run_id or '?'}",
    ]
    header += Text(" (" + ", ".join(parts) + ")", style="dim")
    if resolved.problem:
        header += Text(f"\n{resolved.problem}", style="yellow")
    return header


def render_trace(workflow_id: str, events: list[Event]) -> Tree:
    """A rich tree of one run's events, each under the event that caused it."""
    root = Tree(Text(workflow_id, style="bold"))
    nodes: dict[str, Tree] = {}
    for _, event in causal_order(events):
        parent = nodes.get(event.causation_id or "", root)
        nodes[event.id] = parent.add(_describe(event))
    return root


def _describe(event: Event) -> Text:
    """A trace entry: type, time and source on the first line, then the event's own
    data (its result, reason or status) and, on a line of its own, what it cost.
    Plain text, not markup: reasons and results are shown verbatim, unhighlighted."""
    data = event.data
    stamp = event.time.strftime("%H:%M:%S.%f")[:-3]
    line = Text(event.type, style="bold") + Text(f" {stamp} {event.source}", style="dim")
    if data.get("reason"):
        line += Text("\nreason: ", style="dim") + Text(str(data["reason"]), style="red")
    elif isinstance(data.get("result"), dict):
        fields = ", ".join(f"{k}={v}" for k, v in data["result"].items() if isinstance(v, str | int | float))
        line += Text("\nresult: ", style="dim") + Text(fields)
    elif "status" in data:
        line += Text("\nstatus: ", style="dim") + Text(str(data["status"]))
    rejections = data.get("rejections") or []
    if rejections:
        line += Text("\nmodel re-asked: ", style="dim")
        line += Text(f"{len(rejections)}x: {'; '.join(map(str, rejections))}", style="yellow")
    usage = data.get("usage") or {}
    if usage:
        line += Text(
            f"\ncost: {usage.get('model_calls', 0)} model calls, {usage.get('tool_calls', 0)} tool calls",
            style="dim",
        )
    return line
