"""The ``coordinator`` command line.

    coordinator run FILE [--mode orchestration|choreography] [--seed N] [--json] ...
    coordinator status                    every workflow's state, pending approvals
    coordinator resume [ID ...]           finish runs a crash left unfinished
    coordinator approve ID / reject ID    answer a pending approval
    coordinator trace ID                  one run's causal chain of events
    coordinator graph                     the orchestration graph as Mermaid
    coordinator reset                     forget the state directory

Runs read inputs from a JSON-lines file (one workflow input per line), run every
valid line, and report each run; an invalid line is reported with its line number
and field and makes the exit code non-zero, but does not stop the other lines.

Everything durable lives in the state directory (``--state-dir``, else
``$COORDINATOR_STATE_DIR``, else ``./.coordinator``): the event log
(``events.db``), orchestration checkpoints (``checkpoints.db`` unless ``--state``
names PostgreSQL) and the in-process services' state (``sandbox.db``), so that a
later ``resume``, ``approve`` or ``status`` in another process sees what a run did.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from rich.tree import Tree

from coordinator.app import AppEnvironment, AppOptions, WorkflowApp, load_app
from coordinator.errors import CoordinatorError
from coordinator.eventlog import SqliteEventLog, causal_order
from coordinator.events import Clock, Event, LogicalClock, SystemClock
from coordinator.inputs import DEFAULT_MAX_INPUT_BYTES, InputProblem, iter_inputs, read_inputs
from coordinator.reporting import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_TROUBLE,
    EXIT_UNUSABLE,
    STATUS_STYLE,
    RunReport,
    most_severe,
)
from coordinator.results import WorkflowResult, WorkflowStatus
from coordinator.run import MODES, Coordinator, open_coordinator
from coordinator.settings import RunSettings

__all__ = ["app", "read_inputs"]

DEFAULT_APP = "agents.orders:order_fulfilment_app"

app = typer.Typer(
    help="Run business workflows carried out by tool-using LLM agents, orchestrated or choreographed.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


def state_dir(explicit: Path | None) -> Path:
    """Where run state lives: ``--state-dir``, else ``$COORDINATOR_STATE_DIR``, else ``./.coordinator``."""
    return explicit or Path(os.environ.get("COORDINATOR_STATE_DIR", ".coordinator"))


# -- options shared by the commands that run workflows ---------------------------------

ModeOption = Annotated[str, typer.Option(help=f"coordination mode: {' | '.join(MODES)}")]
SeedOption = Annotated[int, typer.Option(help="seed for event ids, retry jitter and sandbox faults")]
ConcurrencyOption = Annotated[int, typer.Option(min=1, help="workflows in flight at once")]
RateOption = Annotated[float, typer.Option(min=0.0, max=1.0, help="share of service calls answered 503 (seeded)")]
ScenarioOption = Annotated[Path | None, typer.Option(help="sandbox scenario file (catalogue, test cards, ...)")]
ServicesOption = Annotated[
    str | None, typer.Option(help="base URL of services run elsewhere (coordinator sandbox); default: in-process")
]
WorkflowOption = Annotated[str, typer.Option(help="the WorkflowApp to run, as package.module:attribute")]
StateOption = Annotated[
    str | None,
    typer.Option(
        "--state", help="orchestration checkpoints: sqlite (default), sqlite:///f.db, postgresql://..., memory"
    ),
]
BusOption = Annotated[
    str, typer.Option("--bus", help="choreography event bus: memory:// (default), amqp://..., nats://...")
]
ParamOption = Annotated[
    list[str] | None, typer.Option("--param", help="workflow parameter KEY=VALUE, e.g. approval_threshold_cents=100000")
]
SupervisorOption = Annotated[
    str, typer.Option(help="orchestration supervisor: rule (the saga decides) or model (a chat model hands off)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object per run instead of a table")]
DeadlineOption = Annotated[
    float | None, typer.Option(help="choreography: seconds a run may take before its stuck step is failed")
]
OutboxOption = Annotated[
    str | None,
    typer.Option(help="choreography outbox/inbox: a SQLite file (default <state dir>/outbox.db) or postgresql://"),
]
StateDirOption = Annotated[Path | None, typer.Option("--state-dir", help="directory for the event log and state")]
ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="agents' chat model: fake (default), PROVIDER:MODEL (openai:gpt-4o-mini, anthropic:...), "
        "package.module:Class; AGENT=SPEC for one agent (repeatable); keys come from the environment",
    ),
]
RecordOption = Annotated[
    Path | None, typer.Option("--record", file_okay=False, help="record every model request and answer in DIR")
]
ReplayOption = Annotated[
    Path | None,
    typer.Option("--replay", exists=True, file_okay=False, help="answer from the cassette DIR instead of any model"),
]


class FailOn(StrEnum):
    """Ended statuses a CI job may also treat as failure (``--fail-on``)."""

    compensated = "compensated"


@dataclass(frozen=True)
class SessionOptions:
    """What it takes to build a coordinator from the command line."""

    mode: str = "orchestration"
    workflow: str = DEFAULT_APP
    seed: int = 0
    concurrency: int = 16
    transient_rate: float = 0.0
    scenario: Path | None = None
    services: str | None = None
    state: str | None = None
    bus: str = "memory://"
    parameters: dict[str, Any] = field(default_factory=dict)
    supervisor: str = "rule"
    logical_clock: bool = False
    state_dir: Path = Path(".coordinator")
    participants: tuple[str, ...] | None = None
    outbox: str | None = None
    deadline: float | None = None
    models: tuple[str, ...] = ()
    record: Path | None = None
    replay: Path | None = None
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES


@dataclass
class Session:
    """A live coordinator with its environment and event log."""

    workflow_app: WorkflowApp
    env: AppEnvironment
    coordinator: Coordinator
    event_log: SqliteEventLog
    options: SessionOptions


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as an error and return the Exit to raise."""
    errors.print(f"[red]{message}[/]")
    return typer.Exit(code)


def parse_parameters(pairs: Iterable[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as JSON when they parse (numbers, true), else kept as text."""
    parameters: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--param {pair!r} must look like KEY=VALUE")
        try:
            parameters[key] = json.loads(value)
        except json.JSONDecodeError:
            parameters[key] = value
    return parameters


@asynccontextmanager
async def open_session(options: SessionOptions) -> AsyncIterator[Session]:
    """Build the environment, state, bus and coordinator ``options`` describe."""
    if options.mode not in MODES:
        raise fail(f"unknown --mode {options.mode!r}; choose one of: {', '.join(MODES)}")
    if options.supervisor not in ("rule", "model"):
        raise fail(f"unknown --supervisor {options.supervisor!r}; choose rule or model")
    try:
        workflow_app = load_app(options.workflow)
    except CoordinatorError as exc:
        raise fail(str(exc)) from None
    options.state_dir.mkdir(parents=True, exist_ok=True)
    app_options = AppOptions(
        seed=options.seed,
        transient_rate=options.transient_rate,
        scenario=str(options.scenario) if options.scenario else None,
        services=options.services,
        store=None if options.services else str(options.state_dir / "sandbox.db"),
        models=options.models,
        record=str(options.record) if options.record else None,
        replay=str(options.replay) if options.replay else None,
    )
    clock: Clock = LogicalClock() if options.logical_clock else SystemClock()
    settings = RunSettings(seed=options.seed, parameters=options.parameters)
    event_log = SqliteEventLog(options.state_dir / "events.db")
    try:
        async with AsyncExitStack() as stack:
            env = await stack.enter_async_context(workflow_app.environment(app_options))
            checkpointer = bus = supervisor_model = store = keys = None
            if options.mode == "orchestration":
                from graphs.checkpoints import open_checkpointer

                checkpointer = await stack.enter_async_context(
                    open_checkpointer(options.state, state_dir=options.state_dir)
                )
                if options.supervisor == "model":
                    from agents.models import SUPERVISOR, parse_model_options

                    choice = parse_model_options(options.models, record=options.record, replay=options.replay)
                    supervisor_model = choice.model_for(SUPERVISOR)
            else:
                from bus import open_bus
                from bus.outbox import open_participant_store

                bus = open_bus(options.bus)
                stack.push_async_callback(bus.close)
                if options.outbox or not options.bus.startswith("memory:"):
                    # On a broker, participants commit through an outbox shared by the
                    # processes of this machine (or a PostgreSQL one for several).
                    store = await open_participant_store(options.outbox or options.state_dir / "outbox.db")
                    stack.push_async_callback(store.close)
                if not options.bus.startswith("memory:"):
                    # Anyone with the broker's credentials can publish there: events are
                    # signed, and checked before anyone acts (keys made on first use).
                    from coordinator.signing import Keyring, keys_directory

                    keys = Keyring.open(keys_directory(options.state_dir))
            coordinator = await stack.enter_async_context(
                open_coordinator(
                    workflow_app.workflow,
                    agents=env.agents,
                    mode=options.mode,
                    settings=settings,
                    event_log=event_log,
                    clock=clock,
                    checkpointer=checkpointer,
                    bus=bus,
                    concurrency=options.concurrency,
                    supervisor_model=supervisor_model,
                    participants=options.participants,
                    participant_store=store,
                    deadline=options.deadline,
                    keys=keys,
                )
            )
            event_log.begin_run(coordinator.run_id, workflow=workflow_app.workflow.name, mode=options.mode)
            yield Session(workflow_app, env, coordinator, event_log, options)
    except CoordinatorError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    finally:
        event_log.close()


@app.command(epilog=EXIT_CODES_HELP)
def run(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON-lines file of workflow inputs")],
    mode: ModeOption = "orchestration",
    seed: SeedOption = 0,
    concurrency: ConcurrencyOption = 16,
    transient_rate: RateOption = 0.0,
    scenario: ScenarioOption = None,
    services: ServicesOption = None,
    workflow: WorkflowOption = DEFAULT_APP,
    state: StateOption = None,
    bus: BusOption = "memory://",
    param: ParamOption = None,
    supervisor: SupervisorOption = "rule",
    workers: Annotated[
        str, typer.Option(help="choreography: in-process (agents run here) or external (coordinator worker ...)")
    ] = "in-process",
    deadline: DeadlineOption = None,
    outbox: OutboxOption = None,
    json_output: JsonOption = False,
    logical_clock: Annotated[bool, typer.Option(help="stamp events with logical time (reproducible logs)")] = False,
    state_directory: StateDirOption = None,
    model: ModelOption = None,
    record: RecordOption = None,
    replay: ReplayOption = None,
    fail_on: Annotated[
        list[FailOn] | None,
        typer.Option("--fail-on", help="also exit 3 when a run ends so (CI jobs that expect every run to complete)"),
    ] = None,
    max_input_bytes: Annotated[
        int, typer.Option(min=1, help="refuse input lines larger than this (every event carries its run's input)")
    ] = DEFAULT_MAX_INPUT_BYTES,
) -> None:
    """Run every workflow input in FILE and report each outcome as it ends.

    A workflow id is a durable identity, in both modes: an input whose run the event
    log shows ended is answered from the record (marked `recorded`; nothing runs
    again), and one whose run did not end is carried on, not started twice.
    """
    options = SessionOptions(
        mode=mode,
        workflow=workflow,
        seed=seed,
        concurrency=concurrency,
        transient_rate=transient_rate,
        scenario=scenario,
        services=services,
        state=state,
        bus=bus,
        parameters=parse_parameters(param),
        supervisor=supervisor,
        logical_clock=logical_clock,
        state_dir=state_dir(state_directory),
        participants=_hosted(workers),
        outbox=outbox,
        deadline=deadline,
        max_input_bytes=max_input_bytes,
        **_model_options(model, record, replay),
    )
    statuses = tuple(WorkflowStatus(f.value) for f in fail_on or ())
    raise typer.Exit(asyncio.run(_run(file, options, json_output, statuses)))


def _model_options(model: list[str] | None, record: Path | None, replay: Path | None) -> dict[str, Any]:
    """The SessionOptions fields of --model/--record/--replay, checked now so a typo fails
    before anything runs (ModelError names the value)."""
    from agents.models import parse_model_options
    from coordinator.errors import ModelError

    try:
        parse_model_options(model, record=record, replay=replay)
    except ModelError as exc:
        raise fail(str(exc)) from None
    return {"models": tuple(model or ()), "record": record, "replay": replay}


def _hosted(workers: str) -> tuple[str, ...] | None:
    """Which participants a `run` hosts: all, or (with external workers) only the
    owner, which starts runs, ends them and enforces their deadlines."""
    if workers == "in-process":
        return None
    if workers == "external":
        from bus.choreography import OWNER

        return (OWNER,)
    raise fail(f"unknown --workers {workers!r}; choose in-process or external")


async def _run(file: Path, options: SessionOptions, json_output: bool, fail_on: tuple[WorkflowStatus, ...]) -> int:
    async with open_session(options) as session:
        line_of: dict[str, int] = {}  # ids only: the table lists a chunk's runs in file order
        report = RunReport(
            console,
            options.mode,
            json_output=json_output,
            fail_on=fail_on,
            position=lambda result: line_of.get(result.workflow_id, 0),
        )
        workflow = session.workflow_app.workflow

        def valid_inputs() -> Iterator[BaseModel]:
            for entry in iter_inputs(
                file, workflow, context=session.env.validation_context, max_bytes=options.max_input_bytes
            ):
                if isinstance(entry, InputProblem):
                    report.input_problems += 1
                    errors.print(f"[red]{escape(str(file))}:{entry.line}[/]: {escape(entry.message)}", highlight=False)
                else:
                    line_of[workflow.workflow_id(entry.item)] = entry.line
                    yield entry.item

        total = None if json_output else _count_lines(file)
        results = session.coordinator.stream(valid_inputs(), concurrency=options.concurrency)
        await _follow(results, report, session, total=total)
        report.finish(log_hint=_log_hint(session))
    return report.exit_code()


def _count_lines(file: Path) -> int | None:
    """Non-blank lines of ``file`` (for a progress bar), or None when it is small."""
    with file.open("rb") as lines:
        total = sum(1 for line in lines if line.strip())
    return total if total >= 20 else None


async def _follow(
    results: AsyncIterator[WorkflowResult], report: RunReport, session: Session, *, total: int | None
) -> None:
    """Report each result as it comes and check the services' state as runs end, in
    chunks, so neither the results nor the checks grow with the batch."""
    check = session.env.check
    ended: list[WorkflowResult] = []

    async def check_ended() -> None:
        if check is not None and ended:
            for line in await check(ended):
                report.inconsistencies += 1
                errors.print(f"[red]inconsistent:[/] {escape(line)}", highlight=False)
        ended.clear()

    with Progress(console=errors, transient=True, disable=total is None) as progress:
        task = progress.add_task(session.options.mode, total=total)
        async for result in results:
            report.add(result)
            progress.advance(task)
            ended.append(result)
            if len(ended) >= CHECK_CHUNK:
                await check_ended()
    await check_ended()


#: Runs checked against the services' state at a time.
CHECK_CHUNK = 500


def _log_hint(session: Session) -> str:
    log_path = session.options.state_dir / "events.db"
    return f"event log: {log_path} (run {session.coordinator.run_id})"


def _status_of(event: Event, workflow_app: WorkflowApp | None = None) -> str:
    """A run's status from its last event alone (for ``status`` and ``resume``)."""
    if event.type.endswith("ApprovalRequested"):
        return WorkflowStatus.AWAITING_APPROVAL.value
    if workflow_app is not None and event.type == workflow_app.workflow.completed_event:
        return WorkflowStatus.COMPLETED.value
    if workflow_app is not None and event.type == workflow_app.workflow.cancelled_event:
        return str(event.data.get("status", WorkflowStatus.COMPENSATED.value))
    return "in flight"


@app.command()
def status(
    workflow: WorkflowOption = DEFAULT_APP,
    json_output: JsonOption = False,
    state_directory: StateDirOption = None,
) -> None:
    """List every workflow the event log knows: its status, last event and run."""
    directory = state_dir(state_directory)
    log_path = directory / "events.db"
    if not log_path.exists():
        raise fail(f"no event log at {log_path}; run `coordinator run FILE` first (or pass --state-dir)", 1)
    workflow_app = load_app(workflow)
    event_log = SqliteEventLog(log_path)
    try:
        rows = [
            (subject, run_id, event_log.run_mode(run_id) or "?", event, _status_of(event, workflow_app))
            for subject, run_id, event in event_log.latest()
        ]
    finally:
        event_log.close()
    if json_output:
        for subject, run_id, mode, event, state in rows:
            payload = {"workflow_id": subject, "status": state, "last_event": event.type, "run": run_id, "mode": mode}
            console.print(json.dumps(payload), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(title=f"{len(rows)} workflows ({log_path})")
    for column in ("id", "status", "last event", "mode", "run"):
        table.add_column(column, no_wrap=True)
    for subject, run_id, mode, event, state in rows:
        style = STATUS_STYLE.get(WorkflowStatus(state), "") if state in set(WorkflowStatus) else "magenta"
        table.add_row(subject, f"[{style}]{state}[/]" if style else state, event.type, mode, run_id)
    console.print(table)
    waiting = [(subject, event) for subject, _, _, event, state in rows if state == "awaiting_approval"]
    for subject, event in waiting:
        console.print(
            f"[cyan]{subject}[/] waits for approval of step {event.data.get('step')!r}: {event.data.get('reason')}"
        )


def _session_options_for(workflow_id: str | None, directory: Path, **overrides: Any) -> SessionOptions:
    """Options for acting on an existing run: its mode comes from the event log."""
    mode = overrides.pop("mode", None)
    if mode is None and workflow_id is not None:
        log_path = directory / "events.db"
        if not log_path.exists():
            raise fail(f"no event log at {log_path}; nothing has run here (or pass --state-dir)", 1)
        event_log = SqliteEventLog(log_path)
        try:
            runs = event_log.runs(workflow_id)
            mode = event_log.run_mode(runs[-1]) if runs else None
        finally:
            event_log.close()
        if mode is None:
            raise fail(f"no run of {workflow_id!r} in {log_path}; see `coordinator status`", 1)
    return SessionOptions(mode=mode or "orchestration", state_dir=directory, **overrides)


@app.command(epilog=EXIT_CODES_HELP)
def resume(
    workflow_ids: Annotated[
        list[str] | None, typer.Argument(help="runs to resume (default: every one in flight)")
    ] = None,
    workflow: WorkflowOption = DEFAULT_APP,
    services: ServicesOption = None,
    state: StateOption = None,
    bus: BusOption = "memory://",
    param: ParamOption = None,
    concurrency: ConcurrencyOption = 16,
    model: ModelOption = None,
    record: RecordOption = None,
    replay: ReplayOption = None,
    json_output: JsonOption = False,
    state_directory: StateDirOption = None,
) -> None:
    """Finish runs that a crash left in flight: the event log says which; each is
    carried on from its last checkpoint (orchestration) or its latest event
    (choreography) until it ends or waits for a person."""
    directory = state_dir(state_directory)
    log_path = directory / "events.db"
    if not log_path.exists():
        raise fail(f"no event log at {log_path}; nothing to resume", 1)
    workflow_app = load_app(workflow)
    event_log = SqliteEventLog(log_path)
    try:
        by_mode: dict[str, list[str]] = {}
        known: set[str] = set()
        for subject, run_id, event in event_log.latest():
            known.add(subject)
            wanted = workflow_ids is None and _status_of(event, workflow_app) == "in flight"
            if wanted or (workflow_ids is not None and subject in workflow_ids):
                by_mode.setdefault(event_log.run_mode(run_id) or "orchestration", []).append(subject)
    finally:
        event_log.close()
    unknown = [w for w in workflow_ids or () if w not in known]
    for workflow_id in unknown:
        errors.print(f"[red]cannot resume {escape(workflow_id)!r}:[/] no run of it in {log_path}", highlight=False)
    if not by_mode:
        if not unknown:
            console.print("nothing in flight to resume")
        raise typer.Exit(EXIT_TROUBLE if unknown else EXIT_OK)
    common = dict(
        workflow=workflow,
        services=services,
        state=state,
        bus=bus,
        parameters=parse_parameters(param),
        concurrency=concurrency,
        **_model_options(model, record, replay),
    )
    codes = [
        asyncio.run(_resume(subjects, _session_options_for(None, directory, mode=mode, **common), json_output))
        for mode, subjects in by_mode.items()
    ]
    if unknown:
        codes.append(EXIT_TROUBLE)
    raise typer.Exit(most_severe(codes))


async def _resume(subjects: list[str], options: SessionOptions, json_output: bool) -> int:
    async with open_session(options) as session:
        report = RunReport(console, options.mode, json_output=json_output)
        results = session.coordinator.resume_stream(subjects, concurrency=options.concurrency)
        await _follow(
            results, report, session, total=len(subjects) if len(subjects) >= 20 and not json_output else None
        )
        report.finish(log_hint=_log_hint(session))
    return report.exit_code()


def _decide(
    workflow_id: str, approved: bool, by: str, note: str, directory: Path, overrides: dict[str, Any], json_output: bool
) -> None:
    options = _session_options_for(workflow_id, directory, **overrides)

    async def act() -> int:
        async with open_session(options) as session:
            coordinator = session.coordinator
            decide = coordinator.approve if approved else coordinator.reject
            try:
                result = await decide(workflow_id, by=by, note=note)
            except CoordinatorError as exc:
                raise fail(str(exc), EXIT_TROUBLE) from None
            report = RunReport(console, options.mode, json_output=json_output)
            report.add(result)
            report.finish(log_hint=_log_hint(session))
        return report.exit_code()

    raise typer.Exit(asyncio.run(act()))


NoteOption = Annotated[str, typer.Option(help="why, for the record")]
ByOption = Annotated[str, typer.Option(envvar="USER", help="who decides (recorded in the event)")]


def _decision_command(approved: bool, summary: str) -> Any:
    """The ``approve`` / ``reject`` command: the same options, the opposite answer."""

    def command(
        workflow_id: Annotated[str, typer.Argument(help="the workflow waiting for approval")],
        by: ByOption = "operator",
        note: NoteOption = "",
        workflow: WorkflowOption = DEFAULT_APP,
        services: ServicesOption = None,
        state: StateOption = None,
        bus: BusOption = "memory://",
        param: ParamOption = None,
        model: ModelOption = None,
        record: RecordOption = None,
        replay: ReplayOption = None,
        json_output: JsonOption = False,
        state_directory: StateDirOption = None,
    ) -> None:
        overrides = dict(
            workflow=workflow,
            services=services,
            state=state,
            bus=bus,
            parameters=parse_parameters(param),
            **_model_options(model, record, replay),
        )
        _decide(workflow_id, approved, by, note, state_dir(state_directory), overrides, json_output)

    command.__doc__ = summary
    return command


app.command("approve", epilog=EXIT_CODES_HELP)(
    _decision_command(True, "Approve the step WORKFLOW_ID waits on; the run carries on to its end.")
)
app.command("reject", epilog=EXIT_CODES_HELP)(
    _decision_command(False, "Reject the step WORKFLOW_ID waits on: it fails and the completed steps are undone.")
)


@app.command()
def worker(
    participant: Annotated[str, typer.Argument(help="inventory, payment, shipping, owner or projection")],
    bus: BusOption = "amqp://guest:guest@127.0.0.1:5672/",
    seed: SeedOption = 0,
    services: ServicesOption = None,
    workflow: WorkflowOption = DEFAULT_APP,
    param: ParamOption = None,
    concurrency: ConcurrencyOption = 16,
    deadline: DeadlineOption = None,
    outbox: OutboxOption = None,
    model: ModelOption = None,
    record: RecordOption = None,
    replay: ReplayOption = None,
    state_directory: StateDirOption = None,
) -> None:
    """Run one choreography participant as its own process, until SIGTERM or Ctrl-C.

    Several processes of one participant share its queue (they compete for its
    events). On SIGTERM the worker stops taking events, finishes the ones in hand,
    publishes what its outbox holds, and exits.
    """
    options = SessionOptions(
        mode="choreography",
        workflow=workflow,
        seed=seed,
        services=services,
        bus=bus,
        parameters=parse_parameters(param),
        concurrency=concurrency,
        state_dir=state_dir(state_directory),
        participants=(participant,),
        outbox=outbox,
        deadline=deadline,
        **_model_options(model, record, replay),
    )
    asyncio.run(_work(options))


async def _work(options: SessionOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_session(options) as session:
        participants = ", ".join(options.participants or ())
        console.print(f"worker {participants} ready on {options.bus.split('@')[-1]} (run {session.coordinator.run_id})")
        await stop.wait()
        console.print(f"worker {participants} stopping: finishing the events in hand")
    console.print(f"worker {participants} stopped")


@app.command()
def compare(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON-lines file of workflow inputs")],
    orders: Annotated[int | None, typer.Option(help="cycle the inputs to N runs")] = None,
    faults: Annotated[str, typer.Option(help="fault plan: a preset (none, standard, outage) or a spec")] = "standard",
    bus: Annotated[str | None, typer.Option("--bus", help="choreography bus URL (default: in memory)")] = None,
    report: Annotated[Path | None, typer.Option(help="write report.md/.html/.json and SVG charts here")] = None,
    workflow: WorkflowOption = DEFAULT_APP,
    concurrency: ConcurrencyOption = 16,
    deadline: Annotated[float, typer.Option(help="choreography run deadline, seconds")] = 1.0,
    json_output: JsonOption = False,
) -> None:
    """Run the same workload in both modes, with faults, and print the trade-offs measured."""
    from coordinator.compare import run_compare_command

    raise typer.Exit(
        run_compare_command(
            file,
            orders=orders,
            faults=faults,
            bus=bus,
            json_output=json_output,
            report=report,
            workflow=workflow,
            concurrency=concurrency,
            deadline=deadline,
            console=console,
        )
    )


@app.command("dead-letters")
def dead_letters(
    bus: BusOption = "amqp://guest:guest@127.0.0.1:5672/",
    replay: Annotated[bool, typer.Option("--replay", help="put them back into their groups' queues")] = False,
    group: Annotated[str | None, typer.Option(help="only this consumer group")] = None,
    json_output: JsonOption = False,
) -> None:
    """List the events a broker gave up on (and, with --replay, deliver them again)."""
    from bus import open_bus

    async def act() -> None:
        broker = open_bus(bus)
        try:
            letters = [d for d in await broker.dead_letters() if group is None or d.group == group]
            if json_output:
                for d in letters:
                    # A malformed body is listed too: its event is a stand-in describing
                    # the raw body (bus.base.MALFORMED_MESSAGE_TYPE), its error the reason.
                    row = {
                        "group": d.group,
                        "error": d.error,
                        "deliveries": d.deliveries,
                        "malformed": d.malformed,
                        "event": d.event.model_dump(mode="json"),
                    }
                    console.print(json.dumps(row), markup=False, highlight=False, soft_wrap=True)
            else:
                table = Table(title=f"{len(letters)} dead letters")
                for column in ("group", "event", "workflow", "deliveries", "last error"):
                    table.add_column(column)
                for d in letters:
                    table.add_row(d.group, d.event.type, d.event.subject, str(d.deliveries), d.error)
                console.print(table)
            if replay:
                count = await broker.replay_dead_letters(group)
                console.print(f"replayed {count} dead letters")
        finally:
            await broker.close()

    try:
        asyncio.run(act())
    except CoordinatorError as exc:
        raise fail(str(exc), 1) from None


@app.command()
def graph(
    workflow: WorkflowOption = DEFAULT_APP,
    output: Annotated[Path | None, typer.Option(help="write Mermaid to this file (default: print it)")] = None,
    png: Annotated[Path | None, typer.Option(help="also render a PNG (needs the optional pygraphviz)")] = None,
) -> None:
    """Print (or write) the orchestration graph of the workflow as Mermaid."""
    from graphs.studio import compile_graph

    compiled = asyncio.run(compile_graph(load_app(workflow)))
    drawable = compiled.get_graph()
    mermaid = drawable.draw_mermaid()
    if output is None:
        console.print(mermaid, markup=False, highlight=False, soft_wrap=True)
    else:
        output.write_text(mermaid, encoding="utf-8")
        console.print(f"wrote {output}")
    if png is not None:
        try:
            drawable.draw_png(str(png))
        except ImportError:
            raise fail("rendering a PNG needs pygraphviz: pip install pygraphviz (and graphviz)", 1) from None
        console.print(f"wrote {png}")


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: a free one, printed)")] = 8700,
    store: Annotated[Path | None, typer.Option(help="keep the services' state in this SQLite file")] = None,
    scenario: ScenarioOption = None,
) -> None:
    """Serve the sandbox inventory, payment and shipping services over HTTP.

    Point runs and workers at it with ``--services http://HOST:PORT`` so that several
    processes (workers, a resume after a crash) share one set of services.
    """
    from tools.sandbox.scenario import Scenario
    from tools.sandbox.server import serve

    try:
        world = Scenario.from_file(scenario) if scenario else None
        serve(host=host, port=port, store=store, scenario=world)
    except CoordinatorError as exc:
        raise fail(str(exc)) from None


@app.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    state_directory: StateDirOption = None,
) -> None:
    """Delete the state directory: event log, checkpoints, in-process services' state."""
    directory = state_dir(state_directory)
    if not directory.exists():
        console.print(f"nothing to reset at {directory}")
        return
    if not yes and not typer.confirm(f"delete {directory} and everything in it?"):
        raise typer.Exit(1)
    for path in sorted(directory.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    directory.rmdir()
    console.print(f"deleted {directory}")


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
