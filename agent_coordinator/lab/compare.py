"""``coordinator compare``: the same workload in both modes, measured side by side.

:func:`compare` runs one workload (a workflow app and its inputs, optionally
cycled to ``orders`` runs) under orchestration and under choreography, four times
each with fresh services:

* ``baseline`` -- no injected faults (the inputs' own failures only);
* ``faults`` -- the :class:`~agent_coordinator.lab.faults.FaultPlan`;
* two ``outage`` probes -- one participant down from the start for less, then for
  more, than the choreography's run deadline (nothing else injected).

and measures what the orchestration-vs-choreography trade-off is about: outcomes
(completed / compensated / needs attention / stuck) and invariant violations
(:mod:`agent_coordinator.lab.invariants`, plus the order domain's money and stock rules when
the app runs the sandbox), p50/p99 latency, throughput, model and tool calls per
order (as recorded in the events, and as counted at the models and services),
messages on the bus or checkpoints written, what it takes to explain one failed
order, what happens while a participant is down, and the size of the change that
adds a notification step in each mode (the two example changes in
``examples/notification/``).

Outputs (:mod:`agent_coordinator.lab.compare_report`): a rich table, ``report.model_dump_json()``,
and a Markdown + HTML report with SVG charts. The body of ``coordinator compare`` is
:mod:`agent_coordinator.lab.compare_command`.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import json
import statistics
import tempfile
import time
import tokenize
import uuid
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel, Field

from agent_coordinator.bus import InMemoryBus, open_bus
from agent_coordinator.core.app import SERVICE_ATTEMPTS, WorkflowApp
from agent_coordinator.core.errors import CoordinatorError, InvalidInput
from agent_coordinator.core.eventlog import MemoryEventLog
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import WorkflowResult
from agent_coordinator.core.run import MODES, Coordinator
from agent_coordinator.core.settings import RunSettings
from agent_coordinator.core.workflow import Workflow
from agent_coordinator.lab.buses import DelegatingBus
from agent_coordinator.lab.faults import CountingEventLog, FaultInjection, FaultPlan, Outage, Saboteur
from agent_coordinator.lab.hooks import LabHooks, judge, lab_hooks, world_options
from agent_coordinator.lab.invariants import InvariantReport, render_trace
from agent_coordinator.modes import ModeSpec, open_coordinator, open_mode

if TYPE_CHECKING:
    from agent_coordinator.bus.base import EventBus, Handler, Subscription

__all__ = [
    "ChangeSize",
    "ComparisonReport",
    "Explanation",
    "Measurement",
    "Percentiles",
    "compare",
    "count_code_lines",
    "expand",
    "read_jsonl",
]

OUTCOMES = ("completed", "compensated", "needs_attention", "stuck")


# --------------------------------------------------------------------------- the report


class Percentiles(BaseModel):
    """Latency percentiles in milliseconds over the runs that ended (None: none ended)."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class Measurement(BaseModel):
    """One workload run in one mode.

    Per-order figures divide by ``orders``. ``model_calls_made`` counts calls that
    reached the models (re-asks, duplicate handlers and refused calls of a downed
    agent included); ``model_calls`` / ``tool_calls`` are what the runs' events
    record; ``service_calls`` counts effectful requests at the sandbox services.
    ``bus_*`` are the bus's counters (choreography), ``checkpoints`` the checkpoints
    written (orchestration). ``per_order`` lists (position, start ms, latency ms or
    None, outcome) for the charts.
    """

    label: str
    mode: str
    orders: int
    outcomes: dict[str, int]
    violations: int
    violation_rules: dict[str, int]
    latency_ms: Percentiles
    wall_s: float
    throughput: float
    model_calls: float
    model_calls_made: float
    tool_calls: float
    service_calls: float | None
    bus_published: int | None = None
    bus_delivered: int | None = None
    bus_redelivered: int | None = None
    bus_dead_lettered: int | None = None
    checkpoints: int | None = None
    events_logged: int
    injected: dict[str, Any]
    per_order: list[tuple[int, float, float | None, str]] = Field(default_factory=list)


class Explanation(BaseModel):
    """What it takes to explain one failed order in one mode.

    ``events`` in its causal chain, emitted by ``emitters`` distinct participants;
    ``carriers`` -- bus deliveries of its events (choreography) or checkpoints of its
    graph thread (orchestration); ``places`` -- where one must look without a shared
    event log (1 for orchestration: the run's checkpoint thread holds every event).
    ``median_*`` are over every failed order of the run.
    """

    mode: str
    failed_orders: int
    order_id: str | None = None
    status: str | None = None
    events: int = 0
    emitters: list[str] = Field(default_factory=list)
    carriers: int = 0
    places: int = 0
    median_events: float = 0.0
    median_carriers: float = 0.0
    trace: list[str] = Field(default_factory=list)


class ChangeSize(BaseModel):
    """The change that adds a notification step in one mode, measured.

    ``code_lines`` excludes blank lines, comments and docstrings; ``existing_files``
    is how many existing files the change edits; ``verified`` says what running it
    showed.
    """

    mode: str
    files: list[str]
    code_lines: int
    total_lines: int
    existing_files: int
    new_event_types: list[str]
    extra_model_calls_per_order: float
    failure_effect: str
    verified: str


class ComparisonReport(BaseModel):
    """Everything :func:`compare` measured; ``model_dump_json()`` is the ``--json`` output."""

    workflow: str
    source: str | None = None
    orders: int
    concurrency: int
    deadline_s: float
    plan: str
    schedule: list[str]
    measurements: list[Measurement]
    explain: list[Explanation]
    outages: list[str]
    changes: list[ChangeSize]
    violations: list[dict[str, Any]]
    notes: list[str] = Field(default_factory=list)

    def measurement(self, label: str, mode: str) -> Measurement | None:
        return next((m for m in self.measurements if m.label == label and m.mode == mode), None)

    @property
    def violation_count(self) -> int:
        return sum(m.violations for m in self.measurements)


# --------------------------------------------------------------------------- the workload


def expand(workflow: Workflow, inputs: Sequence[Mapping[str, Any]], orders: int | None) -> list[dict[str, Any]]:
    """``inputs`` cycled to ``orders`` items; copies after the first cycle get the id
    ``<id>.<cycle>``. ``orders=None`` keeps the inputs as they are."""
    items = [dict(i) for i in inputs]
    if orders is None or not items:
        return items
    field = workflow.id_field
    out = []
    for n in range(orders):
        item = dict(items[n % len(items)])
        cycle = n // len(items)
        if cycle:
            item[field] = f"{item[field]}.{cycle}"
        out.append(item)
    return out


class _MeteredBus(DelegatingBus):
    """An event bus that counts the deliveries of each run's events (by subject)."""

    def __init__(self, inner: EventBus) -> None:
        super().__init__(inner)
        self.deliveries: Counter[str] = Counter()

    async def subscribe(
        self, group: str, types: Collection[str], handler: Handler, *, concurrency: int = 1
    ) -> Subscription:
        deliveries = self.deliveries

        async def metered(event: Event) -> None:
            deliveries[event.subject] += 1
            await handler(event)

        return await self.inner.subscribe(group, types, metered, concurrency=concurrency)


class _CountingSaver(InMemorySaver):
    """An in-memory LangGraph checkpointer that counts checkpoints per thread (``.puts``)."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: Counter[str] = Counter()

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        self.puts[str(config["configurable"]["thread_id"])] += 1
        return super().put(config, checkpoint, metadata, new_versions)


def _percentiles(values: Sequence[float]) -> Percentiles:
    if not values:
        return Percentiles()
    ordered = sorted(values)

    def at(q: float) -> float:
        # nearest-rank percentile
        index = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 1)) - 1))
        return round(ordered[index], 1)

    return Percentiles(p50=at(0.5), p90=at(0.9), p99=at(0.99), max=round(ordered[-1], 1))


class _Workload:
    """One workload run in one mode: its measurement, and what the explanations need."""

    def __init__(self) -> None:
        self.measurement: Measurement | None = None
        self.runs: dict[str, list[Event]] = {}
        self.statuses: dict[str, str] = {}
        self.carriers: Counter[str] = Counter()
        self.report = InvariantReport()


async def _run_workload(
    app: WorkflowApp,
    raw: Sequence[Mapping[str, Any]],
    *,
    label: str,
    mode: str,
    plan: FaultPlan,
    bus_url: str | None,
    concurrency: int,
    deadline: float,
    settings: RunSettings,
    run_timeout: float,
    directory: Path,
    saboteur: Saboteur | None,
    hooks: LabHooks | None,
) -> _Workload:
    """Run ``raw`` once in ``mode`` under ``plan`` on a fresh environment (services,
    event log, bus or checkpointer), then check the invariants and measure it."""
    workflow = app.workflow
    if bus_url and not bus_url.startswith("memory:") and mode == "choreography":
        # Fresh consumer groups on a broker: queues of an earlier compare must not feed this one.
        workflow = Workflow.model_validate({**dict(workflow), "name": f"{workflow.name}-cmp{uuid.uuid4().hex[:6]}"})
    injection = FaultInjection(plan, workflow, mode=mode)
    sabotaged = [injection.sabotage(item, saboteur) for item in raw]
    options = world_options(hooks, plan, sabotaged, directory)
    workload = _Workload()
    async with AsyncExitStack() as stack:
        env = await stack.enter_async_context(app.environment(options))
        log: CountingEventLog = injection.event_log(MemoryEventLog())
        # Both meters are made; the mode uses the one that is its own.
        saver = _CountingSaver()
        inner: EventBus
        memory_bus: InMemoryBus | None = None
        if bus_url and not bus_url.startswith("memory:"):
            inner = open_bus(bus_url)
        else:
            inner = memory_bus = InMemoryBus(duplicate_delivery=plan.duplicate_delivery)
        metered = _MeteredBus(injection.bus(inner))
        stack.push_async_callback(metered.close)
        spec = ModeSpec(
            name=mode,
            state_dir=directory,
            checkpointer=saver,
            event_bus=metered,
            deadline=deadline,
            concurrency=concurrency,
        )
        coordinator = await stack.enter_async_context(
            open_coordinator(
                workflow,
                agents=injection.agents(env.agents),
                mode=await stack.enter_async_context(open_mode(spec)),
                settings=settings,
                event_log=log,
            )
        )
        inputs = [workflow.validate_input(item, context=env.validation_context) for item in sabotaged]
        ids = [workflow.workflow_id(i) for i in inputs]
        injection.arm()
        started = time.perf_counter()
        outcomes = await _run_all(coordinator, inputs, concurrency=concurrency, run_timeout=run_timeout)
        wall = time.perf_counter() - started
        if any(_stopped(coordinator, result) for _, _, result in outcomes):
            await injection.outage_over(at_most=run_timeout)  # an operator resumes once the model is back
        injection.end_outage()
        outcomes = await _resume_stopped(coordinator, outcomes, started, run_timeout=run_timeout)
        if memory_bus is not None:
            # What is still unsettled then is reported by the invariants (a run that never ended).
            with contextlib.suppress(TimeoutError):
                await memory_bus.wait_idle(timeout=run_timeout)
        await injection.aclose()
        results = [r for _, _, r in outcomes if isinstance(r, WorkflowResult)]
        runs = {workflow_id: log.events(workflow_id) for workflow_id in ids}
        report = await judge(hooks, workflow, env, runs, results)
        statuses = {w: report.statuses.get(w, "stuck") for w in ids}
        counts = Counter("stuck" if s in ("failed", "awaiting_approval") else s for s in statuses.values())
        n = max(len(ids), 1)
        durations = [r.duration_ms for r in results if r.status.ended]
        service_calls: float | None = None
        attempts = env.extras.get(SERVICE_ATTEMPTS)
        if callable(attempts):
            service_calls = attempts() / n
        # Whichever meter carried the runs: the bus's (choreography) or the checkpointer's.
        stats = metered.stats() if metered.stats().published else None
        per_order: list[tuple[int, float, float | None, str]] = []
        for position, ((offset, _, result), workflow_id) in enumerate(zip(outcomes, ids, strict=True)):
            ended = isinstance(result, WorkflowResult) and result.status.ended
            latency = round(result.duration_ms, 1) if isinstance(result, WorkflowResult) and ended else None
            per_order.append((position, round(offset, 1), latency, statuses[workflow_id]))
        workload.measurement = Measurement(
            label=label,
            mode=mode,
            orders=len(ids),
            outcomes={k: counts.get(k, 0) for k in OUTCOMES},
            violations=len(report.violations),
            violation_rules=report.by_rule,
            latency_ms=_percentiles(durations),
            wall_s=round(wall, 3),
            throughput=round(len(ids) / wall, 1) if wall > 0 else 0.0,
            model_calls=round(sum(r.usage.model_calls for r in results) / n, 2),
            model_calls_made=round(sum(injection.stats.model_calls.values()) / n, 2),
            tool_calls=round(sum(r.usage.tool_calls for r in results) / n, 2),
            service_calls=None if service_calls is None else round(service_calls, 2),
            bus_published=stats.published if stats else None,
            bus_delivered=stats.delivered if stats else None,
            bus_redelivered=stats.redelivered if stats else None,
            bus_dead_lettered=stats.dead_lettered if stats else None,
            checkpoints=sum(saver.puts.values()) or None,
            events_logged=log.count,
            injected=injection.stats.as_dict(),
            per_order=per_order,
        )
        workload.runs = runs
        workload.statuses = statuses
        workload.report = report
        workload.carriers = metered.deliveries if stats is not None else saver.puts
    return workload


async def _run_all(
    coordinator: Coordinator, inputs: Sequence[BaseModel], *, concurrency: int, run_timeout: float
) -> list[tuple[float, float, WorkflowResult | BaseException]]:
    """Run every input, at most ``concurrency`` at once; per input (start offset ms,
    duration ms, result or the error that stopped it). A run still going after
    ``run_timeout`` seconds is given up on (its status comes from the log)."""
    gate = asyncio.Semaphore(concurrency)
    origin = time.perf_counter()

    async def one(item: BaseModel) -> tuple[float, float, WorkflowResult | BaseException]:
        async with gate:
            began = time.perf_counter()
            try:
                result: WorkflowResult | BaseException = await asyncio.wait_for(coordinator.run(item), run_timeout)
            except (TimeoutError, CoordinatorError) as exc:
                result = exc
            return (began - origin) * 1000, (time.perf_counter() - began) * 1000, result

    return list(await asyncio.gather(*(one(i) for i in inputs)))


async def _resume_stopped(
    coordinator: Coordinator,
    outcomes: list[tuple[float, float, WorkflowResult | BaseException]],
    origin: float,
    *,
    run_timeout: float,
) -> list[tuple[float, float, WorkflowResult | BaseException]]:
    """Carry on the runs a model outage stopped (``on_model_unavailable="stop"``) now
    that it is over, as an operator's ``coordinator resume`` would; a resumed run's
    duration lasts from its start until it ended."""
    carried: list[tuple[float, float, WorkflowResult | BaseException]] = []
    for offset, duration, result in outcomes:
        if isinstance(result, WorkflowResult) and _stopped(coordinator, result):
            try:
                result = await asyncio.wait_for(coordinator.resume(result.workflow_id), run_timeout)
            except (TimeoutError, CoordinatorError) as exc:
                result = exc
            duration = (time.perf_counter() - origin) * 1000 - offset
            if isinstance(result, WorkflowResult):
                result = result.model_copy(update={"duration_ms": duration})
        carried.append((offset, duration, result))
    return carried


def _stopped(coordinator: Coordinator, result: WorkflowResult | BaseException) -> bool:
    """Whether a model outage stopped this run (its last event is a ``<Step>Stopped``)."""
    return (
        isinstance(result, WorkflowResult) and bool(result.events) and coordinator.saga.is_stop(result.events[-1].type)
    )


def _explain(mode: str, workload: _Workload, prefer: str | None) -> Explanation:
    failed = [w for w, s in workload.statuses.items() if s in ("compensated", "needs_attention")]
    explanation = Explanation(mode=mode, failed_orders=len(failed))
    if not failed:
        return explanation
    events_per = [len(workload.runs[w]) for w in failed]
    carriers_per = [workload.carriers.get(w, 0) for w in failed]
    order_id = prefer if prefer in failed else failed[0]
    events = workload.runs[order_id]
    emitters = sorted({e.source for e in events})
    explanation.order_id = order_id
    explanation.status = workload.statuses[order_id]
    explanation.events = len(events)
    explanation.emitters = emitters
    explanation.carriers = workload.carriers.get(order_id, 0)
    explanation.places = 1 if mode == "orchestration" else len(emitters)
    explanation.median_events = float(statistics.median(events_per))
    explanation.median_carriers = float(statistics.median(carriers_per))
    explanation.trace = list(render_trace(events))
    return explanation


# --------------------------------------------------------------------------- the change


def count_code_lines(path: Path) -> tuple[int, int]:
    """(code lines, all lines) of a Python file: code lines exclude blank lines,
    comments and docstrings."""
    text = path.read_text(encoding="utf-8")
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    code: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in skip:
            code.update(line for line in range(token.start[0], token.end[0] + 1) if line not in docstrings)
    return len(code), len(text.splitlines())


# --------------------------------------------------------------------------- compare


def _default_outages(workflow: Workflow, deadline: float) -> list[Outage]:
    steps = workflow.steps
    participant = steps[1].agent if len(steps) > 1 else steps[0].agent
    return [
        Outage(participant=participant, for_ms=round(deadline * 500)),
        Outage(participant=participant, for_ms=round(deadline * 1500)),
    ]


async def compare(
    workflow_app: WorkflowApp,
    inputs: Sequence[Mapping[str, Any] | BaseModel],
    *,
    orders: int | None = None,
    faults: FaultPlan,
    bus_url: str | None = None,
    concurrency: int = 16,
    deadline: float = 1.0,
    outages: Sequence[Outage] | None = None,
    settings: RunSettings | None = None,
    run_timeout: float = 60.0,
    saboteur: Saboteur | Literal["auto"] | None = "auto",
    measure_changes: bool = True,
    source: str | None = None,
) -> ComparisonReport:
    """Run ``inputs`` (cycled to ``orders`` runs) in both modes and measure them.

    * ``faults`` -- the plan of the ``faults`` workload (the other workloads run
      without it); business failures are applied by ``saboteur`` (``"auto"``:
      the app's :class:`~agent_coordinator.lab.hooks.LabHooks` saboteur, none without hooks);
    * ``bus_url`` -- the choreography's bus (default: in memory; a broker URL gets
      fresh consumer groups per workload);
    * ``concurrency`` -- runs in flight at once (and handlers per participant);
    * ``deadline`` -- seconds a choreographed run may take before its stuck step is
      failed (orchestration has no run deadline: its step runner retries, then fails
      the step);
    * ``outages`` -- the outage probes (default: the second step's agent down from the
      start for half, then one and a half times, the deadline);
    * ``settings`` -- run settings for every workload (default ``RunSettings(seed=faults.seed)``);
    * ``run_timeout`` -- a run still going after this many seconds counts as stuck;
    * ``measure_changes`` -- also measure and run the app's example changes (its
      hooks' ``changes``: for the flagship, the notification step in each mode).

    Raises :class:`~agent_coordinator.core.errors.InvalidInput` when an input does not validate.
    """
    workflow = workflow_app.workflow
    raw = [i.model_dump(mode="json") if isinstance(i, BaseModel) else dict(i) for i in inputs]
    raw = expand(workflow, raw, orders)
    if not raw:
        raise InvalidInput("nothing to compare: no inputs")
    hooks = lab_hooks(workflow_app)
    if saboteur == "auto":
        saboteur = hooks.saboteur if hooks is not None else None
    settings = settings or RunSettings(seed=faults.seed)
    probes = list(outages) if outages is not None else _default_outages(workflow, deadline)
    workloads: list[tuple[str, FaultPlan]] = [("baseline", FaultPlan(seed=faults.seed)), ("faults", faults)]
    workloads += [(f"outage {o.spec()}", FaultPlan(seed=faults.seed, outage=o)) for o in probes]
    measured: dict[tuple[str, str], _Workload] = {}
    with tempfile.TemporaryDirectory(prefix="coordinator-compare-") as tmp:
        directory = Path(tmp)
        for label, plan in workloads:
            for mode in MODES:
                measured[(label, mode)] = await _run_workload(
                    workflow_app,
                    raw,
                    label=label,
                    mode=mode,
                    plan=plan,
                    bus_url=bus_url,
                    concurrency=concurrency,
                    deadline=deadline,
                    settings=settings,
                    run_timeout=run_timeout,
                    directory=directory,
                    saboteur=saboteur,
                    hooks=hooks,
                )
        changes = await hooks.changes(raw, directory) if measure_changes and hooks is not None else []
    failed_both = [
        w
        for w, s in measured[("faults", "orchestration")].statuses.items()
        if s == "compensated" and measured[("faults", "choreography")].statuses.get(w) == "compensated"
    ]
    prefer = failed_both[0] if failed_both else None
    explain = [_explain(mode, measured[("faults", mode)], prefer) for mode in MODES]
    violations: list[dict[str, Any]] = []
    for (workload_label, workload_mode), workload in measured.items():
        for violation in workload.report.violations[:20]:
            violations.append({"workload": workload_label, "mode": workload_mode, **violation.as_dict()})
    schedule = faults.schedule(workflow, [str(i[workflow.id_field]) for i in raw]).describe()
    report = ComparisonReport(
        workflow=workflow.name,
        source=source,
        orders=len(raw),
        concurrency=concurrency,
        deadline_s=deadline,
        plan=faults.spec(),
        schedule=schedule,
        measurements=[w.measurement for w in measured.values() if w.measurement is not None],
        explain=explain,
        outages=[_outage_story(o, measured, deadline) for o in probes],
        changes=changes,
        violations=violations,
    )
    report.notes = _notes(report, settings)
    return report


def _outage_story(outage: Outage, measured: Mapping[tuple[str, str], _Workload], deadline: float) -> str:
    label = f"outage {outage.spec()}"
    length = f"{outage.for_ms:g} ms" if outage.for_ms is not None else f"{outage.for_events} events"
    parts = [f"{outage.participant} down for {length} from the start (deadline {deadline:g} s):"]
    for mode in MODES:
        m = measured[(label, mode)].measurement
        if m is None:
            continue
        o = m.outcomes
        refused = m.injected.get("outage_refusals", 0)
        how = (
            f"{refused} model calls refused: runs stopped, nothing undone, resumed once it was back up"
            if mode == "orchestration"
            else "its events waited in the queue"
        )
        parts.append(
            f"{mode}: {o['completed']} completed, {o['compensated']} compensated, "
            f"{o['needs_attention']} need attention, {o['stuck']} stuck; "
            f"p50 {m.latency_ms.p50} ms, max {m.latency_ms.max} ms ({how})"
        )
    return " ".join(parts)


def _notes(report: ComparisonReport, settings: RunSettings) -> list[str]:
    retries = settings.tool_retries
    return [
        f"Orchestration has no run deadline; a downed agent's model call is retried {retries.max_attempts} times "
        f"(backoff from {retries.initial_delay:g} s, at most {retries.max_delay:g} s) by the step runner, then "
        + (
            "the run stops with nothing undone and is resumed once the outage is over"
            if settings.on_model_unavailable == "stop"
            else "the step fails, the completed steps are undone and the run needs attention"
        )
        + f" (on_model_unavailable={settings.on_model_unavailable!r}; LangGraph node retry policies are not used).",
        f"Choreography fails a run's stuck step when its {report.deadline_s:g} s deadline passes; until then a "
        "downed participant's events wait in its group's queue.",
        "Model calls 'made' are counted at the models (re-asks, duplicate handlers, refused calls); 'recorded' is "
        "what the runs' events say. Service calls are effectful requests counted at the sandbox.",
        "Latencies are per run, measured inside the concurrency gate; p99 of a small workload is its maximum.",
    ]


# --------------------------------------------------------------------------- command line


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """JSON objects of a JSON-lines file (blank and ``#`` lines skipped) and one
    problem per line that is not one."""
    items: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON: {exc.msg}")
            continue
        if not isinstance(value, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        items.append(value)
    return items, problems
