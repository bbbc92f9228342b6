"""Invariants of saga runs, checked after the fact over the event log (and, where
the domain offers them, the services' state), in either coordination mode.

Workflow-agnostic rules (:func:`check_runs`), each with its id:

* ``started`` -- a run has exactly one start event;
* ``known-type`` -- every event is one of the workflow's types;
* ``ended`` -- every run ended (completed or cancelled) or is paused for a person:
  nothing is left non-terminal once the workload (and any deadline) is over (a run
  stopped by a model outage counts as not ended: resume it first);
* ``one-end`` -- a run has at most one terminal event;
* ``cause-once`` -- no event caused two different events (a duplicate handler, a
  deadline and a late participant, a retried node must all converge on one);
* ``follows-saga`` -- each event is what the saga allows after its cause
  (:meth:`~agent_coordinator.core.saga.Saga.next_action`), and its cause is in the run;
* ``outcome`` -- a completed run has every step succeeded and nothing failed or
  undone; a compensated run has a compensated event for every step that
  succeeded, and no undo that failed; a run ``needs_attention`` has one;
* ``result`` -- the :class:`~agent_coordinator.core.results.WorkflowResult` a caller got agrees
  with the log;
* ``effect-once`` -- no idempotency key produced more than one effect at a service;
* ``holds`` -- what each step still holds at its service: one effect per
  undoable step of a completed run, none for a compensated run (the failed step
  included: a timed-out call whose effect landed must not stay), at most the
  failed undos' for a run that needs attention.

Every :class:`Violation` carries the run's trace (its events as a causal tree).
Domain rules (money, stock) live beside the domain: :mod:`agent_coordinator.examples.orders.invariants`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent_coordinator.core.context import idempotency_key_prefix
from agent_coordinator.core.eventlog import causal_order
from agent_coordinator.core.events import Event, EventFactory
from agent_coordinator.core.results import WorkflowResult, WorkflowStatus
from agent_coordinator.core.saga import Action, Saga
from agent_coordinator.core.workflow import Workflow

if TYPE_CHECKING:
    from agent_coordinator.core.eventlog import EventLog

__all__ = [
    "RULES",
    "Holdings",
    "InvariantReport",
    "Violation",
    "check_runs",
    "events_of",
    "render_trace",
]

#: Rule id -> what it says (the generic rules; domain checkers add their own).
RULES: dict[str, str] = {
    "started": "a run has exactly one start event",
    "known-type": "every event is one of the workflow's event types",
    "ended": "every run ended (or waits for a person) once the workload is over",
    "one-end": "a run has at most one terminal event",
    "cause-once": "no event caused two different events",
    "follows-saga": "every event is what the saga allows after its cause, and its cause is in the run",
    "outcome": "completed: all steps succeeded; compensated: every done step undone; needs_attention: an undo failed",
    "result": "the result returned to the caller agrees with the event log",
    "effect-once": "no idempotency key produced more than one effect",
    "holds": "completed runs hold one effect per undoable step, compensated runs hold none",
}

#: ``holdings(workflow_id) -> {step name: effects of that step still in force}`` --
#: the domain's view of what a run holds. Steps left out are not checked.
Holdings = Callable[[str], Mapping[str, int]]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: its rule id, the run (None: not one run's), what is
    wrong, and the run's trace."""

    rule: str
    workflow_id: str | None
    message: str
    trace: tuple[str, ...] = ()

    def render(self) -> str:
        """The violation and its trace, as indented text."""
        head = f"[{self.rule}] {self.workflow_id or '*'}: {self.message}"
        if not self.trace:
            return head
        return "\n".join([head, *(f"    {line}" for line in self.trace)])

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "workflow_id": self.workflow_id, "message": self.message, "trace": list(self.trace)}


@dataclass
class InvariantReport:
    """The outcome of a check: each run's status as the log tells it, and the
    violations (empty when every invariant holds)."""

    statuses: dict[str, str] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def by_rule(self) -> dict[str, int]:
        """Violations counted per rule."""
        return dict(Counter(v.rule for v in self.violations))

    def extend(self, violations: Iterable[Violation]) -> None:
        self.violations.extend(violations)

    def render(self) -> str:
        """Every violation with its trace; a one-line all-clear when there is none."""
        if self.ok:
            return f"all invariants hold for {len(self.statuses)} runs"
        lines = [f"{len(self.violations)} invariant violations over {len(self.statuses)} runs:"]
        lines += [v.render() for v in self.violations]
        return "\n".join(lines)


def events_of(log: EventLog, workflow_ids: Iterable[str]) -> dict[str, list[Event]]:
    """Each run's events from ``log`` (the latest run of each id), keyed by id."""
    return {workflow_id: log.events(workflow_id) for workflow_id in workflow_ids}


def render_trace(events: Sequence[Event]) -> tuple[str, ...]:
    """A run's events as a causal tree: one line per event, indented under its cause,
    with the emitter, a short id and the reason of a failure."""
    lines = []
    unique = list({e.id: e for e in events}.values())
    for depth, event in causal_order(unique):
        reason = event.data.get("reason")
        status = event.data.get("status")
        extra = f" status={status}" if status else ""
        extra += f" -- {reason}" if reason else ""
        lines.append(f"{'  ' * depth}{event.type} <{event.source}> {event.id[:8]}{extra}")
    return tuple(lines)


def _legal_consequences(saga: Saga, cause: Event) -> set[str]:
    """The event types the saga allows right after ``cause``."""
    workflow = saga.workflow
    if saga.is_pause(cause.type):
        step = workflow.step(str(cause.data.get("step")))
        return {f"{step.title}Approved", f"{step.title}Rejected"}
    if saga.is_stop(cause.type):  # a model outage stopped the run: only a resume follows
        return {saga.resumed_event(workflow.step(str(cause.data.get("step"))))}
    nxt = saga.next_action(cause.type)
    if nxt is None:
        return set()
    if nxt.action is Action.COMPLETE:
        return {workflow.completed_event}
    if nxt.action is Action.CANCEL:
        return {workflow.cancelled_event}
    target = nxt.step
    assert target is not None
    if nxt.action is Action.COMPENSATE:
        return {target.events.compensated, saga.compensation_failed_event(target)}
    allowed = {target.events.succeeded, target.events.failed, saga.stopped_event(target)}
    if target.approval is not None and cause.type not in (f"{target.title}Approved", saga.resumed_event(target)):
        allowed.add(f"{target.title}ApprovalRequested")
    return allowed


def check_runs(
    workflow: Workflow,
    runs: Mapping[str, Sequence[Event]],
    *,
    results: Iterable[WorkflowResult] = (),
    effects_by_key: Mapping[str, int] | None = None,
    holdings: Holdings | None = None,
) -> InvariantReport:
    """Check the workflow-agnostic invariants (see the module docstring) over
    ``runs`` (workflow id -> its events, e.g. from :func:`events_of`).

    ``results`` are what callers got back (checked against the log);
    ``effects_by_key`` the services' effect counts per idempotency key (e.g.
    ``ServiceCounters.effects_by_key`` merged over services); ``holdings`` what each
    run still holds per step. Each is optional: a rule without its data is skipped.
    Never raises for a broken run: every problem becomes a :class:`Violation`.
    """
    saga = Saga(workflow, factory=EventFactory())
    known_types = set(saga.event_types)
    report = InvariantReport()
    results_by_id = {r.workflow_id: r for r in results}
    for workflow_id, raw_events in runs.items():
        events = list({e.id: e for e in raw_events if e.subject == workflow_id}.values())
        trace = render_trace(events)

        def violation(rule: str, message: str, workflow_id: str = workflow_id, trace: tuple[str, ...] = trace) -> None:
            report.violations.append(Violation(rule, workflow_id, message, trace))

        status = saga.result(workflow_id, events, mode="log").status
        report.statuses[workflow_id] = status.value
        by_id = {e.id: e for e in events}
        starts = [e for e in events if e.type == workflow.started_event]
        if len(starts) != 1:
            violation("started", f"{len(starts)} start events, want exactly 1")
        for event in events:
            if event.type not in known_types:
                violation("known-type", f"event {event.type} is not one of workflow {workflow.name!r}'s types")
        terminal = [e for e in events if saga.is_terminal(e.type)]
        if not terminal and status is not WorkflowStatus.AWAITING_APPROVAL:
            last = causal_order(events)[-1][1].type if events else "none"
            violation("ended", f"the run did not end; it stopped at {last}")
        if len(terminal) > 1:
            kinds = ", ".join(f"{e.type}({e.data.get('status', 'completed')})" for e in terminal)
            violation("one-end", f"{len(terminal)} terminal events: {kinds}")
        consequences: dict[str, list[Event]] = {}
        for event in events:
            if event.causation_id is not None:
                consequences.setdefault(event.causation_id, []).append(event)
        for cause_id, caused in consequences.items():
            if len(caused) > 1:
                cause = by_id.get(cause_id)
                what = cause.type if cause is not None else cause_id[:8]
                violation("cause-once", f"{what} caused {len(caused)} events: {', '.join(e.type for e in caused)}")
        for event in events:
            if event.type == workflow.started_event:
                continue
            cause = by_id.get(event.causation_id or "")
            if cause is None:
                violation("follows-saga", f"{event.type}'s cause {str(event.causation_id)[:8]} is not in the run")
            elif event.type in known_types and event.type not in _legal_consequences(saga, cause):
                violation("follows-saga", f"{event.type} may not follow {cause.type}")
        _check_outcome(workflow, saga, events, status, violation)
        result = results_by_id.get(workflow_id)
        if result is not None and result.status is not status:
            violation("result", f"the caller was told {result.status.value}, the log says {status.value}")
        if holdings is not None and status.ended:
            _check_holdings(workflow, saga, events, status, holdings(workflow_id), violation)
    if effects_by_key is not None:
        for key, count in sorted(effects_by_key.items()):
            if count > 1:
                owner = next((w for w in runs if key.startswith(idempotency_key_prefix(w))), None)
                trace = render_trace(runs[owner]) if owner is not None else ()
                report.violations.append(
                    Violation("effect-once", owner, f"idempotency key {key!r} produced {count} effects", trace)
                )
    return report


def _unfinished_undos(saga: Saga, events: Sequence[Event]) -> set[str]:
    """The steps whose undo a run reports as not done: a compensation-failed event, or
    a ``compensation_failures`` entry on its terminal event (e.g. a step whose cut-off
    call may have left an effect behind)."""
    steps = {s.name for s in saga.workflow.steps if saga.compensation_failed_event(s) in {e.type for e in events}}
    for event in events:
        if saga.is_terminal(event.type):
            steps |= {str(f.get("step")) for f in event.data.get("compensation_failures") or []}
    return steps


def _check_outcome(
    workflow: Workflow,
    saga: Saga,
    events: Sequence[Event],
    status: WorkflowStatus,
    violation: Callable[[str, str], None],
) -> None:
    types = {e.type for e in events}
    for step in workflow.steps:
        done = step.events.succeeded in types
        undone = step.events.compensated in types
        undo_failed = saga.compensation_failed_event(step) in types
        if status is WorkflowStatus.COMPLETED:
            if not done or step.events.failed in types or undone or undo_failed:
                violation("outcome", f"completed, but step {step.name!r} did not simply succeed")
        elif status is WorkflowStatus.COMPENSATED:
            if done and not undone:
                violation("outcome", f"compensated, but step {step.name!r} succeeded and was never undone")
            if undo_failed:
                violation("outcome", f"compensated, but the undo of step {step.name!r} failed")
    if status is WorkflowStatus.NEEDS_ATTENTION and not _unfinished_undos(saga, events):
        violation("outcome", "needs_attention, but no undo failed")


def _check_holdings(
    workflow: Workflow,
    saga: Saga,
    events: Sequence[Event],
    status: WorkflowStatus,
    held: Mapping[str, int],
    violation: Callable[[str, str], None],
) -> None:
    unfinished = _unfinished_undos(saga, events)
    for step in workflow.steps:
        if step.compensation is None or step.name not in held:
            continue
        count = held[step.name]
        if status is WorkflowStatus.COMPLETED:
            want = "exactly 1"
            ok = count == 1
        elif status is WorkflowStatus.NEEDS_ATTENTION and step.name in unfinished:
            want = "at most 1 (its undo failed)"
            ok = count <= 1
        else:
            want = "none"
            ok = count == 0
        if not ok:
            violation("holds", f"{status.value}, but step {step.name!r} holds {count} effects, want {want}")
