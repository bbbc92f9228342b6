"""Orchestration: a workflow compiled into a LangGraph supervisor graph.

The graph, for a workflow whose agents are ``inventory``, ``payment``, ``shipping``
(each node declares where it may hand the run, so a drawing shows the saga)::

    START ─► supervisor ─► inventory ─► payment ─► shipping ─► END
                               │           │          │
                               ▼           ▼          ▼
                              END ◄──── compensate ◄──┘
                                         ▲    │ (one undo per visit, in reverse)
                                         └────┘

A step that fails hands the run to ``compensate`` (the first step's failure ends it
cancelled); the supervisor is where every run enters, and a resumed one re-enters.

The state is the run's latest event. The supervisor's rule reads the latest event,
asks the saga what follows (:meth:`agent_coordinator.core.saga.Saga.next_action`) and hands off
with a ``Command``: to the owning agent's node to perform a step, to ``compensate``
to undo one (completed steps are undone one node visit at a time, in reverse order),
or it emits the terminal event and ends. The rule is a pure function of the latest
event, so after the first handoff each worker node applies it itself and hands off
directly (4 supersteps for a 3-step order instead of 7). With a model-driven supervisor
(:class:`agent_coordinator.graphs.supervisor.ModelSupervisor`) a chat model picks the agent through
handoff tools, and the saga's choice is the only legal one: anything else is
refused and re-asked.

Agent nodes run the step through the shared :class:`agent_coordinator.core.runner.StepRunner`
(model, guard, tool). A step with an approval rule first emits its
``...ApprovalRequested`` event and pauses the graph with ``interrupt``; resuming
with a decision emits ``...Approved`` (the step runs) or ``...Rejected`` (the step
fails and the completed ones are compensated).

The workflow id is the graph's thread id. The event log is the record of what
happened; the checkpoint is the graph's place in it (see "One truth, recoverable" in
docs/architecture.md): the state holds only the run's latest event, a run's result
is read from the log, and a run is carried on whenever the log does not show it
ended -- whatever LangGraph's snapshot lists as next. Tool calls carry idempotency
keys, so a node re-run after a crash repeats no effect.
"""

from __future__ import annotations

import operator
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt
from pydantic import BaseModel
from typing_extensions import TypedDict  # typing's TypedDict on 3.11 defeats pydantic's schemas (LangGraph's API)

from agent_coordinator.core import telemetry
from agent_coordinator.core.errors import CoordinatorError, ModelUnavailable, WorkflowDefinitionError
from agent_coordinator.core.eventlog import EventLog, MemoryEventLog
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import Usage, WorkflowResult
from agent_coordinator.core.runner import StepRunner
from agent_coordinator.core.saga import OWNER, Action, NextAction, Saga, StepReport
from agent_coordinator.graphs.checkpoints import traced
from agent_coordinator.graphs.supervisor import ModelSupervisor

if TYPE_CHECKING:
    from agent_coordinator.core.signing import Keyring

__all__ = [
    "ACCEPT",
    "COMPENSATE",
    "SUPERVISOR",
    "Decision",
    "Orchestration",
    "Orchestrator",
    "RunState",
    "Supervisor",
    "build_graph",
    "node_destinations",
]

SUPERVISOR = "supervisor"
COMPENSATE = "compensate"
ACCEPT = "accept"


class RunState(TypedDict):
    """A run's graph state: its latest event (JSON mode), the step the supervisor
    handed off, and the model work the supervisor itself spent.

    Only the latest event: the run's whole chain is in the event log, and copying it
    into every checkpoint would make checkpoints grow with the square of its length.
    """

    last: dict[str, Any]
    step: str
    supervisor_usage: Annotated[list[dict[str, int]], operator.add]


class Decision(TypedDict, total=False):
    """What a person answers to an approval request (the ``interrupt`` resume value)."""

    approved: bool
    by: str
    note: str


class Supervisor(Protocol):
    """Picks the agent for the next forward step.

    ``choose`` gets the run's latest event and the saga's decision (the only legal
    one) and returns the model work it spent plus ``None`` when the handoff was to
    the expected step's agent, or the reason it could not get a legal handoff (the
    step then fails and the completed ones are compensated). Undo and finishing are
    never delegated: compensation is not a model's decision.
    """

    async def choose(self, last: Event, expected: NextAction) -> tuple[str | None, Usage]:
        """The handoff problem (None: legal) and the model work spent. Raises
        :class:`~agent_coordinator.core.errors.ModelUnavailable` when the supervisor's model gave
        no answer: the run then stops or unwinds as ``on_model_unavailable`` says."""
        ...


def node_destinations(saga: Saga, *, model_supervisor: bool = False) -> dict[str, dict[str, str]]:
    """Node -> {node it may hand the run to: the events that send it there}: the saga's
    real routes, for ``add_node(destinations=...)`` (LangGraph draws them; it does not
    enforce them).

    An agent node goes where the saga sends its steps' events (the next step's agent
    on success; ``compensate`` or, for the first step, END on failure; END on a stop);
    ``compensate`` undoes the step before or ends the run; the supervisor is where a
    run enters (the start event) and re-enters (a resume, a restart after a crash).
    With a model supervisor every worker reports back to it instead.
    """
    workflow = saga.workflow
    agents = workflow.agent_names

    def goes_to(event_type: str) -> str:
        nxt = saga.next_action(event_type)
        if nxt is None or nxt.action in (Action.COMPLETE, Action.CANCEL) or nxt.step is None:
            return END
        return COMPENSATE if nxt.action is Action.COMPENSATE else nxt.step.agent

    def labelled(routes: Mapping[str, list[str]]) -> dict[str, str]:
        order = [*agents, COMPENSATE, SUPERVISOR, END]
        return {node: " / ".join(routes[node]) for node in sorted(routes, key=order.index)}

    first = workflow.steps[0]
    entering: dict[str, list[str]] = {first.agent: [workflow.started_event]}
    for step in workflow.steps:
        entering.setdefault(step.agent, []).append(saga.resumed_event(step))
    entering.setdefault(COMPENSATE, []).append("restart after a crash")
    entering.setdefault(END, []).append("restart after a crash")
    if model_supervisor:
        entering[SUPERVISOR] = ["handoff refused"]
        back = {SUPERVISOR: ["every event"]}
        return {SUPERVISOR: labelled(entering), COMPENSATE: labelled(back)} | {a: labelled(back) for a in agents}
    routes: dict[str, dict[str, list[str]]] = {SUPERVISOR: entering, COMPENSATE: {}}
    for i, step in enumerate(workflow.steps):
        emitted = [step.events.succeeded, step.events.failed, saga.stopped_event(step)]
        if step.approval is not None:
            emitted.append(f"{step.title}Rejected")
        for event_type in emitted:
            routes.setdefault(step.agent, {}).setdefault(goes_to(event_type), []).append(event_type)
        if i < len(workflow.steps) - 1:  # the last step is never undone: nothing fails after it
            for event_type in (step.events.compensated, saga.compensation_failed_event(step)):
                routes[COMPENSATE].setdefault(goes_to(event_type), []).append(event_type)
    return {node: labelled(targets) for node, targets in routes.items()}


def build_graph(
    runner: StepRunner,
    saga: Saga,
    *,
    event_log: EventLog,
    supervisor: Supervisor | None = None,
    parameters: Mapping[str, Any] | None = None,
    start_from: Literal["event", "input"] = "event",
    run_id: str | None = None,
    configurable_parameters: Collection[str] = (),
) -> StateGraph[RunState, Any, Any, RunState]:
    """The (uncompiled) supervisor graph for ``runner.workflow``.

    Every node appends the events it emits to ``event_log`` as it emits them; they
    join their cause's run, and re-appending (a node re-run after a crash) is a no-op.

    * ``start_from="event"`` -- the graph's input is a :data:`RunState` holding the
      run's start event (what :class:`Orchestrator` gives it);
    * ``start_from="input"`` -- the graph's input is the workflow's own input (an
      order), its schema ``workflow.input_model``'s: an ``accept`` node validates
      it and logs its start event under ``run_id`` (an id whose run the log shows
      ended is answered from it, one stopped by a model outage is resumed) -- what
      LangGraph's own tooling (``langgraph dev``) wants;
    * ``parameters`` -- the run parameters the workflow's rules read (an approval
      threshold); each name in ``configurable_parameters`` is read from the
      invocation's ``config["configurable"]`` at run time when present there.

    Raises WorkflowDefinitionError when ``start_from="input"`` and a field of the
    input model has the name of a state key (``last``, ``step``, ``supervisor_usage``).
    """
    workflow = runner.workflow
    agent_nodes = workflow.agent_names
    params = dict(parameters or {})
    from_config = frozenset(configurable_parameters)

    def latest(state: RunState) -> Event:
        return Event.model_validate(state["last"])

    def emit(*events: Event) -> dict[str, Any]:
        """Log ``events`` (before any checkpoint can hold them: the log is never behind
        the graph) and the state update that makes the newest one the run's latest."""
        event_log.append(events)
        return {"last": events[-1].model_dump(mode="json")} if events else {}

    def handoff(emitted: list[Event], last: Event) -> Command[str]:
        """Where a worker node hands the run next. With the rule supervisor, its rule
        (a pure function of the latest event) is applied right here, which saves a
        superstep per step; a model supervisor needs its own node visit."""
        if supervisor is not None:
            return Command(goto=SUPERVISOR, update=emit(*emitted))
        return route(emitted, emitted[-1] if emitted else last)

    def route(emitted: list[Event], last: Event) -> Command[str]:
        """The rule supervisor: the saga's next action after ``last``."""
        nxt = saga.next_action(last.type)
        if nxt is None:
            return Command(goto=END, update=emit(*emitted))
        if nxt.action in (Action.COMPLETE, Action.CANCEL):
            return Command(goto=END, update=emit(*emitted, saga.finished(cause=last)))
        assert nxt.step is not None
        goto = COMPENSATE if nxt.action is Action.COMPENSATE else nxt.step.agent
        return Command(goto=goto, update={**emit(*emitted), "step": nxt.step.name})

    async def supervise(state: RunState) -> Command[str]:
        last = latest(state)
        nxt = saga.next_action(last.type)
        if supervisor is None or nxt is None or nxt.action is not Action.PERFORM:
            return route([], last)
        assert nxt.step is not None
        try:
            problem, usage = await supervisor.choose(last, nxt)
        except ModelUnavailable as exc:  # our outage, like an agent's: stop, or fail for attention
            outage = saga.performed(nxt.step, runner.model_unavailable(exc.reason), cause=last)
            return Command(goto=SUPERVISOR, update=emit(outage))
        spent = [usage.model_dump()]
        if problem is not None:
            failed = saga.performed(nxt.step, StepReport(ok=False, reason=problem), cause=last)
            return Command(goto=SUPERVISOR, update={**emit(failed), "supervisor_usage": spent})
        return Command(goto=nxt.step.agent, update={"step": nxt.step.name, "supervisor_usage": spent})

    async def accept(state: BaseModel) -> Command[str]:
        """The workflow's input (``state``: an instance of its input model): validated,
        its start event logged, handed to the supervisor -- unless the log already
        knows the id (see ``start_from``)."""
        validated = workflow.validate_input(state)
        workflow_id = workflow.workflow_id(validated)
        logged = event_log.events(workflow_id)
        if logged and saga.is_terminal(logged[-1].type):
            return Command(goto=END, update={"last": logged[-1].model_dump(mode="json"), "step": ""})
        if logged and saga.is_stop(logged[-1].type):
            first = saga.resumed(cause=logged[-1])
            event_log.append([first])
        else:
            first = saga.started(workflow_id, validated.model_dump(mode="json"))
            event_log.append([first], run_id=run_id)
        return Command(goto=SUPERVISOR, update={"last": first.model_dump(mode="json"), "step": ""})

    def requested_before(last: Event) -> str | None:
        """The reason of an approval request the log holds for the trigger ``last``."""
        for logged in event_log.events(last.subject):
            if logged.causation_id == last.id and saga.is_pause(logged.type):
                return str(logged.data.get("reason") or "")
        return None

    def run_parameters(config: RunnableConfig) -> dict[str, Any]:
        configurable = config.get("configurable") or {}
        return {**params, **{name: configurable[name] for name in from_config if name in configurable}}

    async def perform(state: RunState, config: RunnableConfig) -> Command[str]:
        last = latest(state)
        step = workflow.step(state["step"])
        cause, emitted = last, []
        reason = saga.approval_reason(step, cause=last, parameters=run_parameters(config))
        if reason is None and step.approval is not None:
            # The rule was applied when the step was first reached; a re-run on resume
            # (maybe with other parameters: `approve` without --param, another
            # configurable) must pause on the request it logged then, or it would
            # skip the person's decision it is resumed with.
            reason = requested_before(last)
        if reason is not None:
            requested = saga.approval_requested(step, reason, cause=last)
            event_log.append([requested])  # visible to `coordinator status` while paused
            answer: Decision = interrupt({"workflow_id": last.subject, "step": step.name, "reason": reason})
            decided = saga.approval_decided(
                step,
                approved=bool(answer.get("approved")),
                by=answer.get("by") or "someone",
                note=answer.get("note") or "",
                cause=requested,
            )
            # Logged at once: a person's decision must survive a crash of the step it
            # lets run (a resume finds it in the log and does not ask again).
            event_log.append([decided])
            emitted += [requested, decided]
            if not answer.get("approved"):
                return handoff(emitted, last)
            cause = decided
        report = await runner.perform(
            step, workflow_id=last.subject, input=cause.data["input"], results=cause.data["results"]
        )
        emitted.append(saga.performed(step, report, cause=cause))
        return handoff(emitted, last)

    async def compensate(state: RunState) -> Command[str]:
        last = latest(state)
        step = workflow.step(state["step"])
        report = await runner.compensate(step, workflow_id=last.subject, result=last.data["results"][step.name])
        return handoff([saga.compensated(step, report, cause=last)], last)

    destinations = node_destinations(saga, model_supervisor=supervisor is not None)
    graph: StateGraph[RunState, Any, Any, RunState]
    if start_from == "input":
        clash = sorted(set(workflow.input_model.model_fields) & set(RunState.__annotations__))
        if clash:
            raise WorkflowDefinitionError(
                f"the input model {workflow.input_model.__name__} of workflow {workflow.name!r} has fields named "
                f"like the graph's state keys: {clash}; rename them, or run the graph from events (start_from='event')"
            )
        graph = StateGraph(RunState, input_schema=workflow.input_model, output_schema=RunState)
        graph.add_node(ACCEPT, accept, input_schema=workflow.input_model, destinations=(SUPERVISOR, END))
        graph.add_edge(START, ACCEPT)
    else:
        graph = StateGraph(RunState)
        graph.add_edge(START, SUPERVISOR)
    graph.add_node(SUPERVISOR, supervise, destinations=destinations[SUPERVISOR])
    for name in agent_nodes:
        graph.add_node(name, perform, destinations=destinations[name])
    graph.add_node(COMPENSATE, compensate, destinations=destinations[COMPENSATE])
    return graph


class Orchestrator:
    """Runs workflows as LangGraph supervisor graphs over a checkpointer.

    ``checkpointer`` defaults to an ``InMemorySaver`` whose threads are deleted once
    a run has ended (memory must not grow with finished runs). ``event_log`` is the
    run's record and the authority on its outcome: pair a durable checkpointer with
    a durable log (the CLI pairs them in one state directory).
    """

    mode = "orchestration"

    def __init__(
        self,
        runner: StepRunner,
        saga: Saga,
        *,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        event_log: EventLog | None = None,
        run_id: str = "run",
        supervisor: Supervisor | None = None,
    ) -> None:
        self.runner = runner
        self.saga = saga
        self.run_id = run_id
        self.event_log: EventLog = event_log if event_log is not None else MemoryEventLog()
        self._forget_ended = checkpointer is None
        # Every checkpoint write gets a span in the run's trace (graphs/checkpoints.py).
        self.checkpointer: BaseCheckpointSaver[Any] = traced(
            checkpointer if checkpointer is not None else InMemorySaver()
        )
        self.graph: CompiledStateGraph[RunState, Any, Any, RunState] = build_graph(
            runner, saga, event_log=self.event_log, supervisor=supervisor, parameters=runner.settings.parameters
        ).compile(checkpointer=self.checkpointer, name=runner.workflow.name)
        # Each step visits the supervisor and one worker node (an approval pauses
        # inside the worker); each undo likewise; plus the finish. More than that is
        # a loop, which must fail loudly rather than spin.
        self.recursion_limit = 4 * len(runner.workflow.steps) + 6

    def _config(self, workflow_id: str) -> Any:
        return {"configurable": {"thread_id": workflow_id}, "recursion_limit": self.recursion_limit}

    async def run(self, input: BaseModel) -> WorkflowResult:
        """Run the workflow for ``input``; if its id has a run already, carry that run
        on (see :meth:`resume`)."""
        started = time.perf_counter()
        workflow_id = self.runner.workflow.workflow_id(input)
        logged = self.event_log.events(workflow_id)
        # A new run joins the caller's trace (its start event carries the run's span);
        # a run carried on continues the trace its start event began.
        with self._span(workflow_id, logged):
            snapshot = await self.graph.aget_state(self._config(workflow_id))
            if snapshot.values.get("last") or logged:
                return await self._carry_on(workflow_id, snapshot, started)
            first = self.saga.started(workflow_id, input.model_dump(mode="json"))
            self.event_log.append([first], run_id=self.run_id)
            return await self._start(first, started)

    def _span(self, workflow_id: str, logged: list[Event]) -> Any:
        return telemetry.span(
            f"run {self.runner.workflow.name}",
            attributes={"coordinator.workflow_id": workflow_id, "coordinator.mode": self.mode},
            parent=logged[0] if logged else None,
        )

    async def resume(self, workflow_id: str) -> WorkflowResult:
        """Carry on a run that stopped short (after a crash, say) until it ends or
        pauses for a person.

        The event log decides, not the snapshot: a run whose log shows it ended is
        answered from the log; any other is invoked again -- from its last durable
        checkpoint, which re-runs the interrupted superstep with the same idempotency
        keys and event ids -- or, when no checkpoint was saved, started again from
        its logged start event. A pause whose decision is already in the log (the
        process died after logging it) is resumed with that decision, never asked
        again. Raises CoordinatorError when nothing is known of ``workflow_id``.
        """
        started = time.perf_counter()
        with self._span(workflow_id, self.event_log.events(workflow_id)):
            snapshot = await self.graph.aget_state(self._config(workflow_id))
            return await self._carry_on(workflow_id, snapshot, started)

    async def decide(self, workflow_id: str, decision: Mapping[str, Any]) -> WorkflowResult:
        """Answer a pending approval of ``workflow_id`` and carry the run on."""
        snapshot = await self.graph.aget_state(self._config(workflow_id))
        logged = self.event_log.events(workflow_id)
        if not any(task.interrupts for task in snapshot.tasks) or not logged or not self.saga.is_pause(logged[-1].type):
            raise CoordinatorError(f"{workflow_id!r} is not waiting for an approval; see `coordinator status`")
        with self._span(workflow_id, logged):
            return await self._invoke(workflow_id, Command(resume=dict(decision)), time.perf_counter())

    async def _carry_on(self, workflow_id: str, snapshot: Any, started: float) -> WorkflowResult:
        logged = self.event_log.events(workflow_id)
        if logged and self.saga.is_terminal(logged[-1].type):
            return self._result(workflow_id, logged, snapshot.values, started)
        if logged and self.saga.is_stop(logged[-1].type):
            # Stopped by a model outage: the graph ended there. Resuming is a new
            # invocation from the Resumed event, logged first like every event.
            resumed = self.saga.resumed(cause=logged[-1])
            self.event_log.append([resumed])
            return await self._start(resumed, started)
        checkpointed = snapshot.values.get("last")
        if checkpointed and self.saga.is_stop(checkpointed["type"]):
            # The graph ended at a stop and the run was resumed since, but the
            # checkpoints of that resumption were lost: carry on from the log.
            return await self._start(logged[-1], started)
        if not snapshot.values.get("last"):
            first = next((e for e in logged if e.type == self.saga.workflow.started_event), None)
            if first is None:
                raise CoordinatorError(f"no run of {workflow_id!r} to resume: neither a checkpoint nor a start event")
            return await self._start(first, started)
        if any(task.interrupts for task in snapshot.tasks):
            decision = self.saga.logged_decision(logged)
            if decision is None:  # still waiting for a person
                return self._result(workflow_id, logged, snapshot.values, started)
            return await self._invoke(workflow_id, Command(resume=decision), started)
        return await self._invoke(workflow_id, None, started)

    async def _start(self, first: Event, started: float) -> WorkflowResult:
        initial: RunState = {"last": first.model_dump(mode="json"), "step": "", "supervisor_usage": []}
        state = await self.graph.ainvoke(initial, self._config(first.subject))
        return await self._ended(first.subject, state, started)

    async def _invoke(self, workflow_id: str, resume: Command[Any] | None, started: float) -> WorkflowResult:
        state = await self.graph.ainvoke(resume, self._config(workflow_id))
        return await self._ended(workflow_id, state, started)

    async def _ended(self, workflow_id: str, state: Mapping[str, Any], started: float) -> WorkflowResult:
        """The result once the graph returned (ended or paused): read from the log."""
        result = self._result(workflow_id, self.event_log.events(workflow_id), state, started)
        if self._forget_ended and result.status.ended:
            await self.checkpointer.adelete_thread(workflow_id)
        return result

    def _result(
        self, workflow_id: str, events: Sequence[Event], state: Mapping[str, Any], started: float
    ) -> WorkflowResult:
        result = self.saga.result(
            workflow_id, events, mode=self.mode, duration_ms=(time.perf_counter() - started) * 1000
        )
        for usage in state.get("supervisor_usage") or []:
            result.supervisor_usage = result.supervisor_usage + Usage.model_validate(usage)
        return result

    async def aclose(self) -> None:
        """Nothing to release: the checkpointer is closed by whoever opened it."""
        return None


@dataclass(frozen=True)
class Orchestration:
    """Orchestration mode: a LangGraph supervisor graph calls each agent and holds the
    run's place in a checkpointer (a :class:`~agent_coordinator.core.run.Mode`).

    * ``checkpointer`` -- a LangGraph ``BaseCheckpointSaver``; default: in memory,
      each thread deleted once its run ended (:func:`agent_coordinator.graphs.checkpoints.open_checkpointer`
      opens SQLite and PostgreSQL ones by URL);
    * ``supervisor`` -- a chat model that chooses each agent through handoff tools;
      default: the rule supervisor (the saga decides).
    """

    checkpointer: BaseCheckpointSaver[Any] | None = None
    supervisor: BaseChatModel | None = None
    name: ClassVar[str] = "orchestration"

    @asynccontextmanager
    async def open(
        self, runner: StepRunner, saga: Saga, *, event_log: EventLog, run_id: str, keys: Keyring | None
    ) -> AsyncIterator[Orchestrator]:
        """The :class:`Orchestrator` of ``runner``'s workflow (nothing to close)."""
        if keys is not None:
            # One process emits every participant's events: it must hold every key.
            for participant in (OWNER, *runner.workflow.agent_names):
                keys.ensure_signer(participant)
        supervisor = None
        if self.supervisor is not None:
            settings = runner.settings
            supervisor = ModelSupervisor(
                self.supervisor, runner.workflow, max_reasks=settings.max_reasks, retries=settings.tool_retries
            )
        engine = Orchestrator(
            runner, saga, checkpointer=self.checkpointer, event_log=event_log, run_id=run_id, supervisor=supervisor
        )
        try:
            yield engine
        finally:
            await engine.aclose()
