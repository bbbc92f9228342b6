"""How the CLI reports a batch of runs as they end, and the exit code it ends with.

A batch may be 10,000 runs: rows are printed as runs end (a table in chunks, or one
JSON line each) and the summary is counted, never collected, so memory does not
grow with the batch.

Exit codes (one table, shown in ``--help`` and the README):

====  ====================================================================
code  meaning
====  ====================================================================
0     every run reached a business outcome (completed or compensated)
1     bad input lines (the others ran), or the services are inconsistent
2     nothing ran: a usage error, or the state, bus or services are unusable
3     a run needs attention, failed or could not be resumed (also a
      compensated run, with ``--fail-on compensated``)
4     runs wait for a person's approval (and nothing worse happened)
====  ====================================================================

When several apply, the most severe wins: inconsistent services (1), then runs in
trouble (3), then bad input lines (1), then waiting runs (4).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent_coordinator.core.events import Event
from agent_coordinator.core.results import WorkflowResult, WorkflowStatus
from agent_coordinator.core.saga import Action, Saga

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES_HELP",
    "EXIT_OK",
    "EXIT_TROUBLE",
    "EXIT_UNUSABLE",
    "EXIT_WAITING",
    "STATUS_STYLE",
    "RunReport",
    "WaitingFor",
    "most_severe",
    "summary_of",
]

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_UNUSABLE = 2
EXIT_TROUBLE = 3
EXIT_WAITING = 4

EXIT_CODES_HELP = (
    "Exit codes: 0 every run reached a business outcome (completed or compensated); "
    "1 bad input lines or inconsistent services; 2 nothing ran (usage error, unusable state, bus or services); "
    "3 a run needs attention, failed or could not be resumed (or was compensated, with --fail-on compensated); "
    "4 runs wait for approval."
)

STATUS_STYLE = {
    WorkflowStatus.COMPLETED: "green",
    WorkflowStatus.COMPENSATED: "yellow",
    WorkflowStatus.NEEDS_ATTENTION: "bold red",
    WorkflowStatus.AWAITING_APPROVAL: "cyan",
    WorkflowStatus.FAILED: "red",
}

#: Rows per printed table chunk: enough for a readable table, few enough to stream.
CHUNK = 100

_COLUMNS = ("id", "outcome", "done", "undone", "model", "tokens", "tool", "ms", "source")
#: Left out, in this order, while the table is wider than the terminal: the id and
#: the outcome are never cut (a table whose ids are squeezed to nothing tells nothing).
_DROPPABLE = ("ms", "tokens", "undone", "tool", "model")


def summary_of(result: WorkflowResult) -> dict[str, Any]:
    """One run as a JSON-ready dict (the ``--json`` line)."""
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
        "recorded": result.recorded,
    }


@dataclass
class RunReport:
    """Prints runs as they end and counts them; :meth:`exit_code` sums it up.

    ``fail_on`` lists ended statuses that count as trouble too (``compensated``
    for a CI job that expects every run to complete). ``position`` orders the rows
    of a table chunk (e.g. by input line); runs end in any order.
    """

    console: Console
    mode: str
    json_output: bool = False
    fail_on: Collection[WorkflowStatus] = ()
    position: Callable[[WorkflowResult], int] | None = None
    counts: Counter[WorkflowStatus] = field(default_factory=Counter)
    recorded: int = 0
    input_problems: int = 0
    unresumable: int = 0
    inconsistencies: int = 0
    first_explained: str | None = None
    first_id: str | None = None
    waiting: list[str] = field(default_factory=list)
    _pending: list[WorkflowResult] = field(default_factory=list)
    _chunks: int = 0

    @property
    def runs(self) -> int:
        return sum(self.counts.values())

    def add(self, result: WorkflowResult) -> None:
        """Count ``result`` and print it (a JSON line now, or in the next table chunk)."""
        self.counts[result.status] += 1
        self.recorded += result.recorded
        self.first_id = self.first_id or result.workflow_id
        if result.reason and self.first_explained is None:
            self.first_explained = result.workflow_id
        if result.status is WorkflowStatus.AWAITING_APPROVAL and len(self.waiting) < CHUNK:
            self.waiting.append(result.workflow_id)
        if self.json_output:
            self.console.print(json.dumps(summary_of(result)), markup=False, highlight=False, soft_wrap=True)
            return
        self._pending.append(result)
        if len(self._pending) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self.position is not None:
            self._pending.sort(key=self.position)
        first = self._chunks == 0
        table = Table(title=f"runs ({self.mode})" if first else None, show_header=first)
        if first:
            table.caption = (
                "done/undone: steps performed/compensated; model, tool: calls made; tokens: model input+output; "
                "source: ran now, or recorded (answered from the event log: the counts are the original run's)"
            )
        rows = [
            (
                escape(result.workflow_id),
                result.status.value,
                f"{result.steps_done}/{len(result.steps)}",
                str(result.steps_compensated),
                str(result.usage.model_calls),
                str(result.usage.input_tokens + result.usage.output_tokens),
                str(result.usage.tool_calls),
                f"{result.duration_ms:.1f}",
                "recorded" if result.recorded else "ran",
            )
            for result in self._pending
        ]
        widths = {c: max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(_COLUMNS)}
        shown = list(_COLUMNS)
        for column in _DROPPABLE:
            if sum(widths[c] + 3 for c in shown) + 1 <= self.console.width:
                break
            shown.remove(column)
        if first and len(shown) < len(_COLUMNS):
            left_out = ", ".join(c for c in _COLUMNS if c not in shown)
            table.caption = f"{table.caption}; left out at this width: {left_out} (see --json)"
        for column in shown:
            numeric = column in ("model", "tokens", "tool", "ms")
            whole = column in ("id", "outcome")
            table.add_column(
                column,
                justify="right" if numeric else "left",
                no_wrap=True,
                min_width=widths[column] if whole else None,
                overflow="fold",
            )
        for result, row in zip(self._pending, rows, strict=True):
            cells = dict(zip(_COLUMNS, row, strict=True))
            cells["outcome"] = f"[{STATUS_STYLE[result.status]}]{result.status.value}[/]"
            table.add_row(*(cells[c] for c in shown))
        self.console.print(table)
        for result in self._pending:
            if result.reason:
                style = STATUS_STYLE[result.status]
                self.console.print(
                    f"[bold]{escape(result.workflow_id)}[/] [{style}]{result.status.value}[/]: {escape(result.reason)}",
                    highlight=False,
                )
        self._pending.clear()
        self._chunks += 1

    def summary_line(self) -> str:
        always = (WorkflowStatus.COMPLETED, WorkflowStatus.COMPENSATED)
        parts = [f"{self.counts[s]} {s.value}" for s in WorkflowStatus if s in always or self.counts[s]]
        line = f"{self.runs} runs: " + ", ".join(parts)
        if self.recorded:
            line += f" ({self.recorded} answered from the record)"
        if self.unresumable:
            line += f"; {self.unresumable} could not be resumed"
        if self.input_problems:
            line += f"; {self.input_problems} input problem(s), see above"
        return line

    def finish(self, *, log_hint: str | None = None) -> None:
        """Print what is left, the summary and what to do next (tables only)."""
        if self.json_output:
            return
        self._flush()
        self.console.print(self.summary_line())
        if log_hint is not None:
            explain = self.first_explained or self.first_id or "ID"
            self.console.print(
                f"[dim]{escape(log_hint)}; explain one: coordinator trace {escape(explain)}[/]", highlight=False
            )
        for workflow_id in self.waiting:
            self.console.print(
                f"[cyan]{escape(workflow_id)} waits for approval:[/] coordinator approve {escape(workflow_id)} "
                "--by NAME (or reject)",
                highlight=False,
            )

    def exit_code(self) -> int:
        """The batch's exit code (see the module's table)."""
        trouble = self.counts[WorkflowStatus.FAILED] + self.counts[WorkflowStatus.NEEDS_ATTENTION] + self.unresumable
        trouble += sum(self.counts[s] for s in self.fail_on)
        if self.inconsistencies:
            return EXIT_BAD_INPUT
        if trouble:
            return EXIT_TROUBLE
        if self.input_problems:
            return EXIT_BAD_INPUT
        if self.counts[WorkflowStatus.AWAITING_APPROVAL]:
            return EXIT_WAITING
        return EXIT_OK


def most_severe(codes: Collection[int]) -> int:
    """The exit code that sums up several batches' codes (2, then 3, 1, 4, 0)."""
    rank = {EXIT_UNUSABLE: 0, EXIT_TROUBLE: 1, EXIT_BAD_INPUT: 2, EXIT_WAITING: 3, EXIT_OK: 4}
    return min(codes, key=lambda code: rank.get(code, -1), default=EXIT_OK)


class WaitingFor:
    """What a batch of runs in flight waits for: the progress line of a choreography.

    Nobody holds a whole choreography, so "what is it waiting for" is read from the
    record: each run's latest event in the log (``events(workflow_id)``) and the
    saga's rule for what follows it name the participant and the tool it should
    call next -- which a person watching a stalled run on a broker needs to know
    (is the payment worker running?). Runs are listed oldest first; ``deadline`` is
    what ends a stall.
    """

    def __init__(
        self,
        *,
        events: Callable[[str], Sequence[Event]],
        saga: Saga,
        deadline: float | None,
        shown: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events = events
        self._saga = saga
        self._deadline = deadline
        self._shown = shown
        self._clock = clock
        self._since: dict[str, float] = {}  # workflow id -> when it was started (dicts keep order)

    def started(self, workflow_id: str) -> None:
        self._since.setdefault(workflow_id, self._clock())

    def ended(self, workflow_id: str) -> None:
        self._since.pop(workflow_id, None)

    def describe(self) -> str:
        """One line: how many runs are in flight and, for the oldest, whose move it is."""
        if not self._since:
            return "waiting for the first run to start"
        now = self._clock()
        oldest = list(self._since.items())[: self._shown]
        parts = [f"{workflow_id} ({now - since:.0f} s): {self._next(workflow_id)}" for workflow_id, since in oldest]
        count = len(self._since)
        line = f"waiting for {count} run{'s' if count != 1 else ''}: " + "; ".join(parts)
        if count > len(oldest):
            line += f"; +{count - len(oldest)} more"
        if self._deadline is not None:
            line += f" (each fails its stuck step after {self._deadline:g} s)"
        return line

    def _next(self, workflow_id: str) -> str:
        events = self._events(workflow_id)
        if not events:
            return "its start to be logged"
        last = events[-1].type
        if self._saga.is_pause(last):
            return f"a person's approval (after {last})"
        try:
            nxt = self._saga.next_action(last)
        except KeyError:
            return f"whoever handles {last}"
        if nxt is None:
            return f"its result to be read (after {last})"
        if nxt.step is None:
            return f"the owner to end it (after {last})"
        if nxt.action is Action.PERFORM:
            return f"{nxt.step.agent} to call {nxt.step.action} (after {last})"
        undo = nxt.step.compensation or f"undo {nxt.step.name}"
        return f"{nxt.step.agent} to call {undo} (after {last})"
