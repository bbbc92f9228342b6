"""The saga's rules, shared by both coordinators: what follows each event, and what
each event says.

Both modes run the same chain of events for a workflow run::

    Started ─► S1.succeeded ─► S2.succeeded ─► ... ─► Sn.succeeded ─► Completed
                      └─► Sk.failed ─► S(k-1).compensated ─► ... ─► S1.compensated ─► Cancelled

A step whose model cannot be reached may instead stop the run (when
``RunSettings.on_model_unavailable`` is ``"stop"``): ``Sk.Stopped`` ends the chain
for now, nothing is undone, and resuming the run emits ``Sk.Resumed``, after which
the step is performed again::

    S(k-1).succeeded ─► SkStopped ─► SkResumed ─► Sk.succeeded ─► ...

:meth:`Saga.next_action` is the one decision function: given the latest event of a
run, it says what happens next (perform a step, compensate a step, finish). The
orchestrator's supervisor calls it on its state; choreography compiles it into
per-agent subscription tables (:meth:`Saga.triggers`) so that each agent only learns
which event types concern it. Event *payloads* are built here too, so both modes
emit byte-identical events for the same run (given the same seed and clock), and
one function (:meth:`Saga.result`) turns any run's events into its
:class:`~agent_coordinator.core.results.WorkflowResult`.

Events carry the state the next participant needs (input, results so far, the
failure being unwound): in choreography no participant can look anything up in a
central store, and this keeps every event self-explaining in a trace.
:meth:`Saga.check_event` states what each type must carry, and
:meth:`Saga.emitters` who may emit it: a participant checks both before it acts.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from agent_coordinator.core.errors import InvalidInput, MalformedEvent
from agent_coordinator.core.events import Event, EventFactory
from agent_coordinator.core.results import StepOutcome, StepStatus, Usage, WorkflowResult, WorkflowStatus
from agent_coordinator.core.workflow import Step, Workflow

__all__ = ["OWNER", "Action", "NextAction", "Saga", "StepReport"]

_INPUT_VERDICTS: Final = 1024  # inputs whose validation check_event remembers (runs in flight)

OWNER: Final = "owner"
"""The emitter of a workflow's start and terminal events and of a person's approval
decisions (published by the coordinator on the person's behalf); in choreography,
the participant that ends runs and enforces deadlines. Agents are named by their
steps' ``agent``."""


class Action(StrEnum):
    """What a coordinator does next for a run."""

    PERFORM = "perform"  # run ``step``'s action
    COMPENSATE = "compensate"  # run ``step``'s compensation
    COMPLETE = "complete"  # emit the workflow's completed event
    CANCEL = "cancel"  # emit the workflow's cancelled event


@dataclass(frozen=True, slots=True)
class NextAction:
    """One decision of :meth:`Saga.next_action`; ``step`` is None for COMPLETE/CANCEL."""

    action: Action
    step: Step | None = None


@dataclass(frozen=True, slots=True)
class StepReport:
    """What an agent reports after performing or compensating a step.

    ``ok`` False with ``reason`` means the action failed (or the compensation could
    not complete); ``result`` is the tool's result when ``ok``.
    """

    ok: bool
    result: dict[str, Any] | None = None
    reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    rejections: tuple[str, ...] = ()
    #: A failure after which the step's own effect may exist and could not be
    #: checked (a timed-out call): the run ends ``needs_attention``, not compensated.
    uncertain: bool = False
    #: Neither done nor failed: the step's model could not be reached and the run
    #: stops, resumable, with nothing undone (``<Step>Stopped``; ``reason`` says why).
    stopped: bool = False
    #: A failure that is not the business's answer (its model could not be reached):
    #: the completed steps are undone, but the run ends ``needs_attention`` with
    #: this note, never a plain ``compensated``.
    attention: str | None = None


class Saga:
    """The rules of one workflow's saga, and the builder of its events.

    ``factory`` mints ids, times and trace context (see
    :class:`~agent_coordinator.core.events.EventFactory`).
    """

    def __init__(self, workflow: Workflow, *, factory: EventFactory) -> None:
        self.workflow = workflow
        self.factory = factory
        self.source = f"workflow/{workflow.name}"
        steps = workflow.steps
        # event type -> (kind, step index); kinds: started/succeeded/failed/compensated/compensation_failed
        self._kinds: dict[str, tuple[str, int]] = {workflow.started_event: ("started", -1)}
        for i, step in enumerate(steps):
            self._kinds[step.events.succeeded] = ("succeeded", i)
            self._kinds[step.events.failed] = ("failed", i)
            self._kinds[step.events.compensated] = ("compensated", i)
            self._kinds[self.compensation_failed_event(step)] = ("compensation_failed", i)
            self._kinds[self.stopped_event(step)] = ("stopped", i)
            self._kinds[self.resumed_event(step)] = ("resumed", i)
            if step.approval is not None:
                self._kinds[f"{step.title}ApprovalRequested"] = ("approval_requested", i)
                self._kinds[f"{step.title}Approved"] = ("approved", i)
                self._kinds[f"{step.title}Rejected"] = ("rejected", i)
        self._kinds[workflow.completed_event] = ("completed", len(steps))
        self._kinds[workflow.cancelled_event] = ("cancelled", len(steps))
        self._input_verdicts: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()

    # -- the rules ------------------------------------------------------------------

    @staticmethod
    def compensation_failed_event(step: Step) -> str:
        """The event an agent emits when its undo of ``step`` could not complete."""
        return f"{step.events.compensated}Failed"

    @staticmethod
    def stopped_event(step: Step) -> str:
        """The event that stops a run at ``step`` because its model could not be
        reached (``PaymentStopped``); nothing is undone and the run can be resumed."""
        return f"{step.title}Stopped"

    @staticmethod
    def resumed_event(step: Step) -> str:
        """The event that carries a stopped run on: ``step`` is performed again."""
        return f"{step.title}Resumed"

    @property
    def event_types(self) -> list[str]:
        """Every event type the saga can emit, compensation failures included."""
        return list(self._kinds)

    @property
    def terminal_events(self) -> tuple[str, str]:
        return (self.workflow.completed_event, self.workflow.cancelled_event)

    def is_terminal(self, event_type: str) -> bool:
        return event_type in self.terminal_events

    def is_pause(self, event_type: str) -> bool:
        """True for an approval request: the run waits for a person, not for an agent."""
        return self._kinds.get(event_type, ("", 0))[0] == "approval_requested"

    def kind(self, event_type: str) -> tuple[str, str | None]:
        """What ``event_type`` is in this saga -- ``started``, ``succeeded``, ``failed``,
        ``compensated``, ``compensation_failed``, ``stopped``, ``resumed``,
        ``approval_requested``, ``approved``, ``rejected``, ``completed``,
        ``cancelled``, or ``""`` for a type it does not know -- and the step it is
        about (None for the run's own events)."""
        kind, i = self._kinds.get(event_type, ("", -1))
        steps = self.workflow.steps
        return kind, steps[i].name if 0 <= i < len(steps) else None

    def is_stop(self, event_type: str) -> bool:
        """True for a ``<Step>Stopped`` event: the run waits for ``resume``, not for a
        participant or a person; it is not over."""
        return self._kinds.get(event_type, ("", 0))[0] == "stopped"

    def approval_reason(self, step: Step, *, cause: Event, parameters: Mapping[str, Any]) -> str | None:
        """Why a person must approve ``step`` before it runs after ``cause``; None when
        no approval is needed (no rule, the rule says no, ``cause`` is the approval, or
        ``cause`` resumes the step after a stop: approval was settled before it ran)."""
        if step.approval is None or cause.type in (f"{step.title}Approved", self.resumed_event(step)):
            return None
        return step.approval(cause.data.get("input", {}), cause.data.get("results", {}), parameters)

    def logged_decision(self, events: Sequence[Event]) -> dict[str, Any] | None:
        """The decision on the run's pending approval request, if ``events`` already
        hold one (``{"approved", "by", "note"}``); None while it waits for a person.

        A process may die after logging a person's decision and before its engine
        recorded it; resuming then applies the logged decision instead of asking again.
        """
        requests = [e for e in events if self.is_pause(e.type)]
        if not requests:
            return None
        request = requests[-1]
        for event in events:
            kind = self._kinds.get(event.type, ("", 0))[0]
            if event.causation_id == request.id and kind in ("approved", "rejected"):
                return {
                    "approved": kind == "approved",
                    "by": event.data.get("by", "someone"),
                    "note": event.data.get("note", ""),
                }
        return None

    def next_action(self, event_type: str) -> NextAction | None:
        """What follows an event of ``event_type``; None after a terminal event.

        Raises KeyError naming the type when it is not one of this workflow's.
        """
        try:
            kind, i = self._kinds[event_type]
        except KeyError:
            raise KeyError(
                f"event type {event_type!r} is not part of workflow {self.workflow.name!r}; "
                f"its types: {self.event_types}"
            ) from None
        steps = self.workflow.steps
        if kind in ("started", "succeeded"):
            if i + 1 < len(steps):
                return NextAction(Action.PERFORM, steps[i + 1])
            return NextAction(Action.COMPLETE)
        if kind in ("approved", "resumed"):
            return NextAction(Action.PERFORM, steps[i])
        if kind in ("failed", "rejected", "compensated", "compensation_failed"):
            # Unwind in reverse: the step before the one that failed or was just undone.
            if i >= 1:
                return NextAction(Action.COMPENSATE, steps[i - 1])
            return NextAction(Action.CANCEL)
        return None

    def emitters(self, event_type: str) -> frozenset[str]:
        """Who may emit an event of ``event_type``, as the workflow definition says:
        a step's own events (succeeded, failed, compensated, compensation failed,
        approval requested, stopped) come from the step's agent; the start and
        terminal events, a person's approval decision and the resumption of a stopped
        run from :data:`OWNER`. The owner may also emit a
        step's failed and compensation-failed events: that is how a run's deadline
        fails a step whose agent gave no answer. Empty for a type the workflow does
        not know."""
        kind, i = self._kinds.get(event_type, ("", -1))
        if kind in ("started", "completed", "cancelled", "approved", "rejected", "resumed"):
            return frozenset({OWNER})
        if kind in ("failed", "compensation_failed"):
            return frozenset({self.workflow.steps[i].agent, OWNER})
        if kind in ("succeeded", "compensated", "approval_requested", "stopped"):
            return frozenset({self.workflow.steps[i].agent})
        return frozenset()

    def check_event(self, event: Event) -> None:
        """Check that ``event`` carries what its type requires before anyone acts on it.

        Every event of the workflow must carry ``data.input``, a valid input of the
        workflow whose id is the event's ``subject``, and ``data.results``, an object
        holding the result (an object) of every step done at that point of the saga;
        a step's event names its ``step``. Raises
        :class:`~agent_coordinator.core.errors.MalformedEvent` naming the event and each
        missing or wrong field -- never retryable: the bus dead-letters it at once.
        """
        kind, i = self._kinds.get(event.type, ("", -1))
        if not kind:
            raise MalformedEvent(
                f"{event.type} {event.id} of {event.subject!r} is not an event type of workflow "
                f"{self.workflow.name!r}; its types: {self.event_types}"
            )
        problems: list[str] = []
        data = event.data
        raw_input = data.get("input")
        if not isinstance(raw_input, dict):
            problems.append("data.input is missing or not an object (the workflow input)")
        else:
            workflow_id, problem = self._checked_input(raw_input)
            if problem is not None:
                problems.append(problem)
            elif workflow_id != event.subject:
                problems.append(
                    f"data.input is the input of {workflow_id!r}, not of the event's subject {event.subject!r}"
                )
        results = data.get("results")
        steps = self.workflow.steps
        if kind == "succeeded":
            done = steps[: i + 1]
        elif kind == "completed":
            done = steps
        elif kind in ("started", "cancelled"):
            done = ()
        else:  # failed, rejected, approval asked or given, undone: the steps before it are held
            done = steps[:i]
        if not isinstance(results, dict):
            problems.append("data.results is missing or not an object (the results of the steps done)")
        else:
            missing = [s.name for s in done if not isinstance(results.get(s.name), dict)]
            if missing:
                problems.append(f"data.results lacks the result of {', '.join(map(repr, missing))}")
        if 0 <= i < len(steps) and kind not in ("completed", "cancelled") and data.get("step") != steps[i].name:
            problems.append(f"data.step is {data.get('step')!r}, not {steps[i].name!r}")
        if problems:
            raise MalformedEvent(
                f"{event.type} {event.id} of {event.subject!r} from {event.source!r} cannot be acted on: "
                + "; ".join(problems)
            )

    def _checked_input(self, raw_input: dict[str, Any]) -> tuple[str | None, str | None]:
        """(workflow id, None) for a valid input, (None, problem) for another.

        Every event of a run carries the same input, so the verdicts on the latest
        inputs are kept (validating one costs far more than the JSON text that keys it).
        """
        # As JSON: the input travelled as JSON, and a strict model reads dates and the
        # like from their JSON form only.
        text = json.dumps(raw_input, sort_keys=True, separators=(",", ":"))
        verdict = self._input_verdicts.get(text)
        if verdict is None:
            try:
                verdict = (self.workflow.workflow_id(self.workflow.validate_input(text)), None)
            except InvalidInput as exc:
                verdict = (None, f"data.input is not a valid {self.workflow.input_model.__name__} ({exc})")
            self._input_verdicts[text] = verdict
            if len(self._input_verdicts) > _INPUT_VERDICTS:
                self._input_verdicts.popitem(last=False)
        return verdict

    def triggers(self) -> dict[str, NextAction]:
        """Every non-terminal event type mapped to what it triggers: the subscription
        table that choreography splits among its participants."""
        table: dict[str, NextAction] = {}
        for event_type in self._kinds:
            nxt = self.next_action(event_type)
            if nxt is not None:
                table[event_type] = nxt
        return table

    # -- the events -----------------------------------------------------------------

    def started(self, workflow_id: str, input: Mapping[str, Any]) -> Event:
        """The event that starts a run for ``input`` (a JSON-mode dict)."""
        return self.factory.event(
            self.workflow.started_event,
            subject=workflow_id,
            source=self.source,
            data={"input": dict(input), "results": {}},
            signed_by=OWNER,
        )

    def performed(self, step: Step, report: StepReport, *, cause: Event, signed_by: str | None = None) -> Event:
        """``step``'s succeeded or failed event (or its stopped event, for a
        ``report.stopped``), caused by its trigger ``cause``, signed by the step's
        agent (or ``signed_by``: the owner, when a deadline fails the step)."""
        data = _carried(cause)
        data.update(step=step.name, usage=report.usage.model_dump(), rejections=list(report.rejections))
        if report.stopped:
            data["reason"] = report.reason
            return self.factory.event(
                self.stopped_event(step),
                subject=cause.subject,
                source=f"agent/{step.agent}",
                data=data,
                cause=cause,
                signed_by=step.agent,
            )
        if report.ok:
            # An event's data is its own: a tool may keep (and later change) the very
            # dict it returned, and a log must not change after the fact.
            result = copy.deepcopy(report.result or {})
            data["results"] = {**data["results"], step.name: result}
            data["result"] = result
            event_type = step.events.succeeded
        else:
            data["reason"] = report.reason
            data["failure"] = {"step": step.name, "reason": report.reason}
            if report.uncertain:
                data["compensation_failures"] = [
                    *data.get("compensation_failures", []),
                    {"step": step.name, "reason": "its effect may have happened and could not be checked"},
                ]
            elif report.attention is not None:
                # Nothing of the step is held, but the run must not read as the
                # business's refusal: an entry here makes it end needs_attention.
                data["compensation_failures"] = [
                    *data.get("compensation_failures", []),
                    {"step": step.name, "reason": report.attention, "undo": False},
                ]
            event_type = step.events.failed
            if signed_by not in (None, step.agent):
                # Failed by someone else (a deadline, for an agent that gave no answer):
                # said in the event, since the agent may yet have done something.
                data["failure"]["by"] = signed_by
        return self.factory.event(
            event_type,
            subject=cause.subject,
            source=f"agent/{step.agent}" if signed_by in (None, step.agent) else self.source,
            data=data,
            cause=cause,
            signed_by=signed_by or step.agent,
        )

    def compensated(self, step: Step, report: StepReport, *, cause: Event, signed_by: str | None = None) -> Event:
        """``step``'s compensated (or compensation-failed) event, caused by ``cause``,
        signed by the step's agent (or ``signed_by``, as for :meth:`performed`)."""
        data = _carried(cause)
        data.update(step=step.name, usage=report.usage.model_dump())
        if report.ok:
            data["result"] = copy.deepcopy(report.result)
            event_type = step.events.compensated
        else:
            data["reason"] = report.reason
            data["compensation_failures"] = [
                *data.get("compensation_failures", []),
                {"step": step.name, "reason": report.reason},
            ]
            event_type = self.compensation_failed_event(step)
        return self.factory.event(
            event_type,
            subject=cause.subject,
            source=f"agent/{step.agent}",
            data=data,
            cause=cause,
            signed_by=signed_by or step.agent,
        )

    def resumed(self, *, cause: Event) -> Event:
        """The event that carries a run stopped by ``cause`` (a ``<Step>Stopped``) on:
        the step is performed again (its idempotency keys are the same, so an effect
        that happened before the stop is not repeated). Raises ValueError for any
        other ``cause``."""
        if not self.is_stop(cause.type):
            raise ValueError(
                f"{cause.type} did not stop workflow {self.workflow.name!r}; only a <Step>Stopped event is resumed"
            )
        step = self.workflow.steps[self._kinds[cause.type][1]]
        data = _carried(cause)
        data.update(step=step.name)
        return self.factory.event(
            self.resumed_event(step), subject=cause.subject, source=self.source, data=data, cause=cause, signed_by=OWNER
        )

    def approval_requested(self, step: Step, reason: str, *, cause: Event) -> Event:
        """The event that pauses a run before ``step`` until a person decides."""
        data = _carried(cause)
        data.update(step=step.name, reason=reason)
        return self.factory.event(
            f"{step.title}ApprovalRequested",
            subject=cause.subject,
            source=f"agent/{step.agent}",
            data=data,
            cause=cause,
            signed_by=step.agent,
        )

    def approval_decided(self, step: Step, *, approved: bool, by: str, note: str, cause: Event) -> Event:
        """A person's decision on ``step``: approved (the step runs) or rejected (it
        fails with the note as reason, and the completed steps are compensated)."""
        data = _carried(cause)
        data.update(step=step.name, by=by, note=note)
        if approved:
            event_type = f"{step.title}Approved"
        else:
            reason = f"rejected by {by}" + (f": {note}" if note else "")
            data.update(reason=reason, failure={"step": step.name, "reason": reason})
            event_type = f"{step.title}Rejected"
        # The person's decision reaches the bus through the coordinator, which signs it.
        return self.factory.event(
            event_type, subject=cause.subject, source=f"person/{by}", data=data, cause=cause, signed_by=OWNER
        )

    def finished(self, *, cause: Event) -> Event:
        """The terminal event that follows ``cause`` (completed or cancelled)."""
        nxt = self.next_action(cause.type)
        if nxt is None or nxt.action not in (Action.COMPLETE, Action.CANCEL):
            raise ValueError(f"{cause.type} does not end workflow {self.workflow.name!r}")
        data = _carried(cause)
        event_type = self.workflow.completed_event
        if nxt.action is Action.CANCEL:
            event_type = self.workflow.cancelled_event
            failures = data.get("compensation_failures")
            status = WorkflowStatus.NEEDS_ATTENTION if failures else WorkflowStatus.COMPENSATED
            data["status"] = status.value
        return self.factory.event(
            event_type, subject=cause.subject, source=self.source, data=data, cause=cause, signed_by=OWNER
        )

    # -- reading a run back ---------------------------------------------------------

    def result(
        self,
        workflow_id: str,
        events: Iterable[Event],
        *,
        mode: str,
        duration_ms: float = 0.0,
        recorded: bool = False,
    ) -> WorkflowResult:
        """Rebuild a run's :class:`WorkflowResult` from its events (duplicates ignored).

        A run without a terminal event is ``awaiting_approval`` when its last event is
        an approval request, ``failed`` otherwise (it stopped short: see ``reason``).
        ``recorded`` marks a result answered from the record without running anything.
        """
        seen: set[str] = set()
        chain: list[Event] = []
        for event in events:
            if event.id not in seen and event.subject == workflow_id:
                seen.add(event.id)
                chain.append(event)
        outcomes = {s.name: StepOutcome(step=s.name, agent=s.agent) for s in self.workflow.steps}
        status: WorkflowStatus | None = None
        reason: str | None = None
        for event in chain:
            kind, _ = self._kinds.get(event.type, ("foreign", -1))
            data = event.data
            if kind == "rejected":
                outcome = outcomes[data["step"]]
                outcome.status, outcome.reason = StepStatus.FAILED, data.get("reason")
            elif kind == "stopped":
                outcome = outcomes[data["step"]]
                outcome.usage = outcome.usage + Usage.model_validate(data.get("usage") or {})
            elif kind in ("succeeded", "failed", "compensated", "compensation_failed"):
                outcome = outcomes[data["step"]]
                outcome.usage = outcome.usage + Usage.model_validate(data.get("usage") or {})
                if kind == "succeeded":
                    outcome.status, outcome.result = StepStatus.SUCCEEDED, data.get("result")
                    outcome.rejections = list(data.get("rejections") or [])
                elif kind == "failed":
                    outcome.status, outcome.reason = StepStatus.FAILED, data.get("reason")
                    outcome.rejections = list(data.get("rejections") or [])
                elif kind == "compensated":
                    outcome.status, outcome.compensation_result = StepStatus.COMPENSATED, data.get("result")
                else:
                    outcome.status, outcome.reason = StepStatus.COMPENSATION_FAILED, data.get("reason")
            elif kind == "completed":
                status = WorkflowStatus.COMPLETED
            elif kind == "cancelled":
                status = WorkflowStatus(data.get("status", WorkflowStatus.COMPENSATED))
                failure = data.get("failure") or {}
                reason = f"step {failure.get('step')!r} failed: {failure.get('reason')}" if failure else None
                for problem in data.get("compensation_failures") or []:
                    if problem.get("undo") is False:  # not an undo: the failed step itself
                        reason = f"{reason}; step {problem['step']!r} needs attention: {problem['reason']}"
                    else:
                        reason = f"{reason}; undo of {problem['step']!r} failed: {problem['reason']}"
        if status is None and chain and self.is_pause(chain[-1].type):
            status = WorkflowStatus.AWAITING_APPROVAL
            reason = (
                f"waiting for a person to approve step {chain[-1].data.get('step')!r}: {chain[-1].data.get('reason')}"
            )
        elif status is None and chain and self.is_stop(chain[-1].type):
            status = WorkflowStatus.FAILED
            stop = chain[-1]
            reason = (
                f"step {stop.data.get('step')!r} stopped, nothing undone: {stop.data.get('reason')}; "
                f"resume the run once that is fixed (`coordinator resume {workflow_id}`)"
            )
        elif status is None:
            status = WorkflowStatus.FAILED
            last = chain[-1].type if chain else "none"
            reason = f"the run stopped before its end; its last event is {last}"
        return WorkflowResult(
            workflow=self.workflow.name,
            workflow_id=workflow_id,
            mode=mode,
            status=status,
            reason=reason,
            steps=list(outcomes.values()),
            events=chain,
            duration_ms=duration_ms,
            recorded=recorded,
        )


def _carried(cause: Event) -> dict[str, Any]:
    """The part of ``cause``'s data that travels on to the next event."""
    data = cause.data
    carried: dict[str, Any] = {"input": data.get("input", {}), "results": dict(data.get("results", {}))}
    for key in ("failure", "compensation_failures"):
        if key in data:
            carried[key] = data[key]
    return carried
