"""The ``coordinator`` command line.

    coordinator run FILE [--mode orchestration|choreography] [--seed N] [--json] ...
    coordinator status                    every workflow's state, pending approvals
    coordinator resume [ID ...]           finish runs a crash left unfinished
    coordinator approve ID / reject ID    answer a pending approval
    coordinator trace ID                  one run's causal chain of events
    coordinator events export             the whole event log, canonically ordered
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
Every run records the ``WorkflowApp`` that ran it, so the commands that act on
existing runs load each run's own app; ``--workflow`` overrides it for the runs of
that app's workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.postgres import redact_url
from agent_coordinator.core.results import WorkflowResult, WorkflowStatus
from agent_coordinator.shell.console import console, errors, fail
from agent_coordinator.shell.inputs import DEFAULT_MAX_INPUT_BYTES, InputProblem, iter_inputs, read_inputs
from agent_coordinator.shell.logs import configure_logging
from agent_coordinator.shell.options import (
    DEFAULT_APP,
    BusOption,
    BusPrefixOption,
    ByOption,
    ConcurrencyOption,
    DeadlineOption,
    FailOn,
    LogFormatOption,
    LogLevelOption,
    ModelOption,
    ModeOption,
    NoteOption,
    OnModelUnavailable,
    OnModelUnavailableOption,
    OutboxOption,
    ParamOption,
    RateOption,
    RecordOption,
    ReplayOption,
    RunIdOption,
    RunJsonOption,
    RunsAppOption,
    ScenarioOption,
    SeedOption,
    ServicesOption,
    StateDirOption,
    StateOption,
    SupervisorOption,
    WorkersOption,
    WorkflowOption,
    a_or_an,
    broker_url,
    bus_spec,
    check_run_id,
    check_submit,
    derive_run_id,
    hosted_participants,
    is_shared_state,
    model_options,
    parse_parameters,
    refuse_inapplicable,
    state_dir,
    state_spec,
)
from agent_coordinator.shell.render import StatusRow, render_trace, status_table, trace_header
from agent_coordinator.shell.reporting import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_TROUBLE,
    RunReport,
    WaitingFor,
    most_severe,
)
from agent_coordinator.shell.session import (
    AppResolver,
    Session,
    SessionOptions,
    existing_event_log,
    load_workflow_app,
    open_session,
    recorded_end,
    status_of,
)

__all__ = ["app", "read_inputs"]


app = typer.Typer(
    help="Run business workflows carried out by tool-using LLM agents, orchestrated or choreographed.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
)


events_app = typer.Typer(help="The event log as data.", no_args_is_help=True)


app.add_typer(events_app, name="events")


def _version() -> str:
    try:
        return version("agent-coordinator")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        console.print(f"coordinator (agent-coordinator) {_version()}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def main_options(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Options of the command itself: --version, and shell completion (typer adds
    --install-completion and --show-completion)."""


@app.command(epilog=EXIT_CODES_HELP)
def run(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON-lines file of workflow inputs")],
    mode: ModeOption = "orchestration",
    seed: SeedOption = None,
    concurrency: ConcurrencyOption = 16,
    transient_rate: RateOption = 0.0,
    scenario: ScenarioOption = None,
    services: ServicesOption = None,
    workflow: WorkflowOption = DEFAULT_APP,
    state: StateOption = None,
    bus: BusOption = None,
    bus_prefix: BusPrefixOption = "",
    param: ParamOption = None,
    supervisor: SupervisorOption = None,
    workers: WorkersOption = None,
    deadline: DeadlineOption = None,
    outbox: OutboxOption = None,
    json_output: RunJsonOption = False,
    logical_clock: Annotated[
        bool,
        typer.Option("--logical-clock", help="stamp events (and the run's start) with logical time: reproducible logs"),
    ] = False,
    run_id: RunIdOption = None,
    state_directory: StateDirOption = None,
    model: ModelOption = None,
    record: RecordOption = None,
    replay: ReplayOption = None,
    on_model_unavailable: OnModelUnavailableOption = OnModelUnavailable.stop,
    fail_on: Annotated[
        list[FailOn] | None,
        typer.Option("--fail-on", help="also exit 3 when a run ends so (CI jobs that expect every run to complete)"),
    ] = None,
    max_input_bytes: Annotated[
        int, typer.Option(min=1, help="refuse input lines larger than this (every event carries its run's input)")
    ] = DEFAULT_MAX_INPUT_BYTES,
    submit: Annotated[
        bool,
        typer.Option(
            "--submit",
            help="orchestration: queue the runs on --bus for `coordinator worker --mode orchestration` processes "
            "(shared --state postgresql://...) and report each as it ends",
        ),
    ] = False,
) -> None:
    """Run every workflow input in FILE and report each outcome as it ends.

    A workflow id is a durable identity, in both modes: an input whose run the event
    log shows ended is answered from the record (marked `recorded`; nothing runs
    again), and one whose run did not end is carried on, not started twice.
    """
    refuse_inapplicable(
        mode,
        {
            "--bus": None if submit else bus,
            "--outbox": outbox,
            "--deadline": deadline,
            "--workers": workers,
            "--state": state,
            "--supervisor": supervisor,
        },
    )
    state = state_spec(state, mode=mode)
    bus = bus_spec(bus, applies=mode == "choreography" or submit)
    if submit:
        check_submit(mode, bus, state)
    if run_id is not None:
        run_id = check_run_id(run_id)
    elif seed is not None:
        run_id = derive_run_id(seed, file, mode=mode, workflow=workflow)
    options = SessionOptions(
        mode=mode,
        workflow=workflow,
        seed=seed or 0,
        concurrency=concurrency,
        transient_rate=transient_rate,
        scenario=scenario,
        services=services,
        state=state,
        bus=bus or "memory://",
        bus_prefix=bus_prefix,
        parameters=parse_parameters(param),
        supervisor=supervisor or "rule",
        logical_clock=logical_clock,
        state_dir=state_dir(state_directory),
        participants=hosted_participants(workers or "in-process"),
        outbox=outbox,
        deadline=deadline,
        max_input_bytes=max_input_bytes,
        run_id=run_id,
        submit=submit,
        **model_options(model, record, replay, on_model_unavailable),
    )
    statuses = tuple(WorkflowStatus(f.value) for f in fail_on or ())
    raise typer.Exit(asyncio.run(_run(file, options, json_output, statuses)))


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
        waiting = _waiting_for(session)

        def valid_inputs() -> Iterator[BaseModel]:
            for entry in iter_inputs(
                file, workflow, context=session.env.validation_context, max_bytes=options.max_input_bytes
            ):
                if isinstance(entry, InputProblem):
                    report.input_problems += 1
                    errors.print(Text(f"{file}:{entry.line}", style="red") + Text(f": {entry.message}"))
                else:
                    workflow_id = workflow.workflow_id(entry.item)
                    line_of[workflow_id] = entry.line
                    if waiting is not None:
                        waiting.started(workflow_id)
                    yield entry.item

        total = None if json_output else _count_lines(file)
        if options.submit:
            results = _submitted(session, valid_inputs())
        else:
            results = session.coordinator.stream(valid_inputs(), concurrency=options.concurrency)
        await _follow(results, report, session, total=total, waiting=waiting)
        report.finish(log_hint=_log_hint(session))
    return report.exit_code()


async def _submitted(session: Session, inputs: Iterable[BaseModel]) -> AsyncIterator[WorkflowResult]:
    """Queue ``inputs`` for the workers -- answering at once those the log shows ended
    -- then yield each result as the shared log shows its run ended or paused."""
    coordinator = session.coordinator
    queued = []
    for item in inputs:
        workflow_id = coordinator.workflow.workflow_id(item)
        answer = coordinator.recorded(workflow_id)
        if answer is not None:
            yield answer
        else:
            queued.append(await coordinator.submit(item))
    async for result in coordinator.results(queued):
        yield result


def _count_lines(file: Path) -> int | None:
    """Non-blank lines of ``file`` (for a progress bar), or None when it is small."""
    with file.open("rb") as lines:
        total = sum(1 for line in lines if line.strip())
    return total if total >= 20 else None


def _waiting_for(session: Session) -> WaitingFor | None:
    """For a choreography, what the progress line says its runs wait for."""
    if session.options.mode != "choreography":
        return None
    return WaitingFor(events=session.event_log.events, saga=session.coordinator.saga, deadline=session.deadline)


#: Seconds between updates of the progress line's "waiting for ...".
WAITING_REFRESH = 0.5


async def _follow(
    results: AsyncIterator[WorkflowResult],
    report: RunReport,
    session: Session,
    *,
    total: int | None,
    waiting: WaitingFor | None = None,
) -> None:
    """Report each result as it comes and check the services' state as runs end, in
    chunks, so neither the results nor the checks grow with the batch. The progress
    line (on a terminal) counts the runs and, in a choreography, says what they wait
    for."""
    check = session.env.check
    ended: list[WorkflowResult] = []

    async def check_ended() -> None:
        if check is not None and ended:
            for line in await check(ended):
                report.inconsistencies += 1
                errors.print(Text("inconsistent: ", style="red") + Text(line))
        ended.clear()

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}", markup=False)]
    if total is not None:
        columns[1:1] = [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True, disable=total is None and waiting is None) as progress:
        task = progress.add_task(session.options.mode, total=total)

        async def describe_waiting() -> None:
            assert waiting is not None
            while True:
                progress.update(task, description=f"{session.options.mode}: {waiting.describe()}")
                await asyncio.sleep(WAITING_REFRESH)  # a display refresh, not a wait for correctness

        refresher = asyncio.create_task(describe_waiting()) if waiting is not None else None
        try:
            async for result in results:
                if waiting is not None:
                    waiting.ended(result.workflow_id)
                report.add(result)
                progress.advance(task)
                ended.append(result)
                if len(ended) >= CHECK_CHUNK:
                    await check_ended()
        finally:
            if refresher is not None:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
    await check_ended()


#: Runs checked against the services' state at a time.
CHECK_CHUNK = 500


def _log_hint(session: Session) -> str:
    return f"event log: {session.event_log.where} (run {session.coordinator.run_id})"


@app.command()
def status(
    workflow: RunsAppOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON line per workflow")] = False,
    state: StateOption = None,
    state_directory: StateDirOption = None,
) -> None:
    """List every workflow the event log knows: its status, last event, workflow and run.

    Each run is read with the app it recorded; a run whose app cannot be loaded is
    listed with the app it needs.
    """
    event_log = existing_event_log(state_dir(state_directory), state=state_spec(state))
    where = event_log.where
    resolver = AppResolver(workflow)
    try:
        rows = []
        for subject, run_id, event in event_log.latest():
            record = event_log.run(run_id)
            resolved = resolver.resolve(record, event)
            rows.append(
                StatusRow(
                    subject,
                    run_id,
                    record.mode if record else "?",
                    record.workflow if record else "?",
                    event,
                    resolved.status(event),
                    resolved,
                )
            )
    finally:
        event_log.close()
    if json_output:
        for row in rows:
            payload = {
                "workflow_id": row.workflow_id,
                "status": row.state,
                "last_event": row.event.type,
                "workflow": row.workflow,
                "app": row.app.spec,
                "run": row.run,
                "mode": row.mode,
            }
            if row.app.problem:
                payload["problem"] = row.app.problem
            console.print(json.dumps(payload), markup=False, highlight=False, soft_wrap=True)
        return
    console.print(status_table(rows, f"{len(rows)} workflows ({where})"))
    for row in rows:
        if row.app.problem:
            console.print(Text(row.workflow_id, style="magenta") + Text(f": {row.app.problem}"))
        elif row.state == WorkflowStatus.AWAITING_APPROVAL.value:
            step, reason = row.event.data.get("step"), row.event.data.get("reason")
            console.print(Text(row.workflow_id, style="cyan") + Text(f" waits for approval of step {step!r}: {reason}"))


@app.command(epilog=EXIT_CODES_HELP)
def resume(
    workflow_ids: Annotated[
        list[str] | None, typer.Argument(help="runs to resume (default: every one in flight)")
    ] = None,
    workflow: RunsAppOption = None,
    services: ServicesOption = None,
    state: StateOption = None,
    bus: BusOption = None,
    bus_prefix: BusPrefixOption = "",
    param: ParamOption = None,
    concurrency: ConcurrencyOption = 16,
    deadline: DeadlineOption = None,
    model: ModelOption = None,
    record: RecordOption = None,
    replay: ReplayOption = None,
    on_model_unavailable: OnModelUnavailableOption = OnModelUnavailable.stop,
    json_output: RunJsonOption = False,
    state_directory: StateDirOption = None,
) -> None:
    """Finish runs that a crash left in flight (the event log says which).

    Each is carried on, with the app and in the mode it recorded, from its last
    checkpoint (orchestration) or its latest event (choreography) until it ends or
    waits for a person. A run whose app cannot be loaded is named with the app it
    needs and left alone. With --workflow, only the runs of that app's workflow are
    resumed.
    """
    directory = state_dir(state_directory)
    state = state_spec(state)
    event_log = existing_event_log(directory, state=state, nothing="nothing to resume")
    where = event_log.where
    resolver = AppResolver(workflow)
    groups: dict[tuple[str, str], list[str]] = {}
    left_alone: list[str] = []
    known: set[str] = set()
    try:
        for subject, run_id, event in event_log.latest():
            known.add(subject)
            asked = workflow_ids is not None and subject in workflow_ids
            if workflow_ids is not None and not asked:
                continue
            run_record = event_log.run(run_id)
            resolved = resolver.resolve(run_record, event)
            if resolved.app is None:
                if asked or recorded_end(event) is None:
                    left_alone.append(f"cannot resume {subject!r}: {resolved.problem}; left alone")
                continue
            if resolver.explicit is not None and not asked and resolved.spec != resolver.explicit:
                continue  # --workflow: only that app's runs
            if asked or status_of(event, resolved.app) in ("in flight", WorkflowStatus.FAILED.value):
                assert resolved.spec is not None
                mode = run_record.mode if run_record is not None else "orchestration"
                groups.setdefault((resolved.spec, mode), []).append(subject)
    finally:
        event_log.close()
    unknown = [w for w in workflow_ids or () if w not in known]
    for workflow_id in unknown:
        errors.print(Text(f"cannot resume {workflow_id!r}:", style="red") + Text(f" no run of it in {where}"))
    for message in left_alone:
        errors.print(Text(message, style="red"))
    trouble = [EXIT_TROUBLE] if unknown or left_alone else []
    if not groups:
        if not trouble:
            console.print("nothing in flight to resume")
        raise typer.Exit(most_severe(trouble) if trouble else EXIT_OK)
    modes = {mode for _, mode in groups}
    for option, value, wanted in (("--bus", bus, "choreography"), ("--deadline", deadline, "choreography")):
        if value is not None and wanted not in modes:
            raise fail(f"{option} {value} applies to choreography runs only, and the runs to resume are orchestrated")
    if state is not None and not is_shared_state(state) and "orchestration" not in modes:
        raise fail(f"--state {state} applies to orchestration runs only, and the runs to resume are choreographed")
    common = dict(
        services=services,
        bus_prefix=bus_prefix,
        parameters=parse_parameters(param),
        concurrency=concurrency,
        state_dir=directory,
        **model_options(model, record, replay, on_model_unavailable),
    )
    codes = [
        asyncio.run(
            _resume(
                subjects,
                SessionOptions(
                    mode=mode,
                    workflow=spec,
                    state=state if mode == "orchestration" or is_shared_state(state) else None,
                    bus=(bus_spec(bus, applies=True) or "memory://") if mode == "choreography" else "memory://",
                    deadline=deadline if mode == "choreography" else None,
                    **common,
                ),
                json_output,
            )
        )
        for (spec, mode), subjects in groups.items()
    ]
    raise typer.Exit(most_severe([*codes, *trouble]))


async def _resume(subjects: list[str], options: SessionOptions, json_output: bool) -> int:
    async with open_session(options) as session:
        report = RunReport(console, options.mode, json_output=json_output)
        waiting = _waiting_for(session)
        if waiting is not None:
            for subject in subjects:
                waiting.started(subject)
        results = session.coordinator.resume_stream(subjects, concurrency=options.concurrency)
        await _follow(
            results,
            report,
            session,
            total=len(subjects) if len(subjects) >= 20 and not json_output else None,
            waiting=waiting,
        )
        report.finish(log_hint=_log_hint(session))
    return report.exit_code()


def _decide(
    workflow_id: str,
    approved: bool,
    by: str,
    note: str,
    directory: Path,
    explicit_app: str | None,
    overrides: dict[str, Any],
    json_output: bool,
) -> None:
    event_log = existing_event_log(directory, state=state_spec(overrides["state"]), nothing="nothing has run here")
    where = event_log.where
    try:
        runs = event_log.runs(workflow_id)
        run_record = event_log.run(runs[-1]) if runs else None
        logged = event_log.events(workflow_id)
    finally:
        event_log.close()
    if run_record is None:
        raise fail(f"no run of {workflow_id!r} in {where}; see `coordinator status`", 1)
    resolved = AppResolver(explicit_app).resolve(run_record, logged[-1] if logged else None)
    if resolved.app is None or resolved.spec is None:
        raise fail(f"cannot decide on {workflow_id!r}: {resolved.problem}; left alone")
    mode = run_record.mode
    bus, state = overrides.pop("bus"), overrides.pop("state")
    why = f"{workflow_id} is {a_or_an(mode)} run"
    refuse_inapplicable(mode, {"--bus": bus, "--state": state}, why=why)
    state = state_spec(state, mode=mode)
    bus = bus_spec(bus, applies=mode == "choreography")
    options = SessionOptions(
        mode=mode,
        workflow=resolved.spec,
        state_dir=directory,
        bus=bus or "memory://",
        state=state,
        **overrides,
    )

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


def _decision_command(approved: bool, summary: str) -> Callable[..., None]:
    """The ``approve`` / ``reject`` command: the same options, the opposite answer."""

    def command(
        workflow_id: Annotated[str, typer.Argument(help="the workflow waiting for approval")],
        by: ByOption = "operator",
        note: NoteOption = "",
        workflow: RunsAppOption = None,
        services: ServicesOption = None,
        state: StateOption = None,
        bus: BusOption = None,
        bus_prefix: BusPrefixOption = "",
        param: ParamOption = None,
        model: ModelOption = None,
        record: RecordOption = None,
        replay: ReplayOption = None,
        on_model_unavailable: OnModelUnavailableOption = OnModelUnavailable.stop,
        json_output: RunJsonOption = False,
        state_directory: StateDirOption = None,
    ) -> None:
        overrides = dict(
            services=services,
            state=state,
            bus=bus,
            bus_prefix=bus_prefix,
            parameters=parse_parameters(param),
            **model_options(model, record, replay, on_model_unavailable),
        )
        _decide(workflow_id, approved, by, note, state_dir(state_directory), workflow, overrides, json_output)

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
    participant: Annotated[
        str | None,
        typer.Argument(
            help="choreography: an agent of the workflow (see `coordinator graph`), owner or projection; "
            "orchestration: none"
        ),
    ] = None,
    mode: ModeOption = "choreography",
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            help="the broker the workers share: amqp://... or nats://... (default: $COORDINATOR_BUS, "
            "else RabbitMQ on 127.0.0.1)",
        ),
    ] = None,
    bus_prefix: BusPrefixOption = "",
    seed: Annotated[int, typer.Option(help="seed for event ids and retry jitter (as the run's)")] = 0,
    services: ServicesOption = None,
    workflow: WorkflowOption = DEFAULT_APP,
    param: ParamOption = None,
    concurrency: ConcurrencyOption = 16,
    deadline: DeadlineOption = None,
    outbox: OutboxOption = None,
    model: ModelOption = None,
    record: RecordOption = None,
    replay: ReplayOption = None,
    on_model_unavailable: OnModelUnavailableOption = OnModelUnavailable.stop,
    state: StateOption = None,
    state_directory: StateDirOption = None,
    log_level: LogLevelOption = "warning",
    log_format: LogFormatOption = "text",
) -> None:
    """Run one choreography participant, or one orchestration worker, as its own
    process, until SIGTERM or Ctrl-C.

    Choreography: several processes of one participant share its queue (they compete
    for its events). Orchestration (--mode orchestration, shared --state
    postgresql://...): the process carries the runs `coordinator run --submit` queued
    on --bus, each to its end or a pause for a person, any number of processes on any
    machines; a run whose worker dies goes to another, which carries it on from its
    last checkpoint. On SIGTERM a worker stops taking work, finishes what it has in
    hand, and exits.
    """
    bus = broker_url(bus)
    if bus.startswith("memory:"):
        raise fail(f"--bus {bus}: a worker needs a broker other processes share; pass --bus amqp://... or nats://...")
    configure_logging(log_level, log_format)
    if mode == "orchestration":
        if participant is not None:
            raise fail(
                f"an orchestration worker carries whole runs: drop {participant!r} (participants are choreography's)"
            )
        refuse_inapplicable(mode, {"--outbox": outbox, "--deadline": deadline}, why="the worker is orchestration's")
        state = state_spec(state, mode=mode)
        check_submit(mode, bus, state, what="an orchestration worker")
        participants: tuple[str, ...] | None = None
    else:
        if participant is None:
            raise fail("a choreography worker hosts one participant: name it (an agent, owner or projection)")
        refuse_inapplicable("choreography", {"--state": state}, why="a worker is a choreography participant")
        state = state_spec(state, mode="choreography")
        participants = (participant,)
    options = SessionOptions(
        mode=mode,
        workflow=workflow,
        seed=seed,
        services=services,
        bus=bus,
        bus_prefix=bus_prefix,
        parameters=parse_parameters(param),
        concurrency=concurrency,
        state_dir=state_dir(state_directory),
        participants=participants,
        state=state,
        outbox=outbox,
        deadline=deadline,
        **model_options(model, record, replay, on_model_unavailable),
    )
    asyncio.run(_work(options))


async def _work(options: SessionOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_session(options) as session:
        participants = ", ".join(options.participants or ()) or "orchestration"
        where = options.bus.split("@")[-1]
        serving = None
        if session.run_queue is not None:
            serving = await session.run_queue.serve(session.coordinator.run, concurrency=options.concurrency)
        console.print(
            f"worker {participants} ready on {where} (run {session.coordinator.run_id})", markup=False, highlight=False
        )
        await stop.wait()
        console.print(f"worker {participants} stopping: finishing the events in hand", markup=False, highlight=False)
        if serving is not None:
            await serving.close()  # lets the runs in hand finish; the rest stay queued
    console.print(f"worker {participants} stopped", markup=False, highlight=False)


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
    json_output: Annotated[bool, typer.Option("--json", help="print the report as one JSON document")] = False,
) -> None:
    """Run the same workload in both modes, with faults, and print the trade-offs measured."""
    from agent_coordinator.lab.compare_command import run_compare_command

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
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus", help="the broker to read: amqp://... or nats://... (default: $COORDINATOR_BUS, else RabbitMQ)"
        ),
    ] = None,
    bus_prefix: BusPrefixOption = "",
    workflow: Annotated[
        str, typer.Option(help="the WorkflowApp whose broker names to read, as package.module:attribute")
    ] = DEFAULT_APP,
    replay: Annotated[bool, typer.Option("--replay", help="put them back into their groups' queues")] = False,
    group: Annotated[str | None, typer.Option(help="only this consumer group")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON line per dead letter")] = False,
) -> None:
    """List the events a broker gave up on (and, with --replay, deliver them again)."""
    from agent_coordinator.bus import bus_namespace, open_bus

    namespace = bus_namespace(load_workflow_app(workflow).workflow.name, bus_prefix)
    url = broker_url(bus)

    async def act() -> None:
        broker = open_bus(url, namespace=namespace)
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
    workflow: Annotated[str, typer.Option(help="the WorkflowApp to draw, as package.module:attribute")] = DEFAULT_APP,
    output: Annotated[Path | None, typer.Option(help="write Mermaid to this file (default: print it)")] = None,
    png: Annotated[Path | None, typer.Option(help="also render a PNG (needs the optional pygraphviz)")] = None,
) -> None:
    """Print (or write) the orchestration graph of the workflow as Mermaid."""
    if png is not None and importlib.util.find_spec("pygraphviz") is None:
        # Checked first: nothing is printed or written when the PNG cannot be made.
        raise fail(f"--png {png} needs pygraphviz: pip install pygraphviz (it needs graphviz's headers)")
    from agent_coordinator.graphs.studio import compile_graph

    compiled = asyncio.run(compile_graph(load_workflow_app(workflow)))
    drawable = compiled.get_graph()
    mermaid = drawable.draw_mermaid()
    if output is None:
        console.print(mermaid, markup=False, highlight=False, soft_wrap=True)
    else:
        output.write_text(mermaid, encoding="utf-8")
        console.print(f"wrote {output}", markup=False, highlight=False)
    if png is not None:
        drawable.draw_png(str(png))
        console.print(f"wrote {png}", markup=False, highlight=False)


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: a free one, printed)")] = 8700,
    store: Annotated[Path | None, typer.Option(help="keep the services' state in this SQLite file")] = None,
    scenario: ScenarioOption = None,
    workflow: WorkflowOption = DEFAULT_APP,
) -> None:
    """Serve the workflow app's own services over HTTP (the flagship's: its sandbox
    inventory, payment and shipping services).

    Point runs and workers at it with `--services http://HOST:PORT` so that several
    processes (workers, a resume after a crash) share one set of services.
    """
    try:
        load_workflow_app(workflow).serve_services(host=host, port=port, store=store, scenario=scenario)
    except CoordinatorError as exc:
        raise fail(str(exc)) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: a free one, printed)")] = 8780,
    mode: ModeOption = "orchestration",
    workflow: WorkflowOption = DEFAULT_APP,
    services: ServicesOption = None,
    state: StateOption = None,
    bus: BusOption = None,
    bus_prefix: BusPrefixOption = "",
    param: ParamOption = None,
    concurrency: ConcurrencyOption = 16,
    deadline: DeadlineOption = None,
    outbox: OutboxOption = None,
    workers: WorkersOption = None,
    seed: SeedOption = None,
    model: ModelOption = None,
    record: RecordOption = None,
    replay: ReplayOption = None,
    on_model_unavailable: OnModelUnavailableOption = OnModelUnavailable.stop,
    state_directory: StateDirOption = None,
    log_level: LogLevelOption = "warning",
    log_format: LogFormatOption = "text",
) -> None:
    """Serve the workflow app's runs over HTTP: a JSON API and a dashboard, until
    SIGTERM or Ctrl-C.

    Runs started through the API are carried by this process, or by workers:
    orchestration with --bus and shared --state postgresql://... queues them for
    `coordinator worker --mode orchestration` processes; choreography with --workers
    external hosts only the owner here and leaves the agents to `coordinator worker
    AGENT` processes. Every run the state records is listed, whoever carried it.
    Access needs bearer tokens from $COORDINATOR_API_TOKENS
    (NAME:ROLE[,ROLE...]:SECRET entries; roles viewer, operator, approver).
    """
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise fail(f"the server needs {exc.name}: pip install 'agent-coordinator[server]'") from None
    from agent_coordinator.shell.server import TOKENS_ENV, tokens_from_environment

    configure_logging(log_level, log_format)

    try:
        tokens = tokens_from_environment()
    except CoordinatorError as exc:
        raise fail(str(exc)) from None
    if not tokens:
        raise fail(
            f"no API tokens: set ${TOKENS_ENV} to NAME:ROLE[,ROLE...]:SECRET entries "
            "(roles: viewer, operator, approver)"
        )
    inapplicable: dict[str, object] = {
        "--bus": None if mode == "orchestration" else bus,
        "--outbox": outbox,
        "--deadline": deadline,
        "--workers": workers,
    }
    refuse_inapplicable(mode, inapplicable)
    state = state_spec(state, mode=mode)
    bus = bus_spec(bus, applies=mode == "choreography" or is_shared_state(state))
    queued = mode == "orchestration" and bus is not None
    if queued:
        check_submit(mode, bus, state, what="serving orchestration runs to workers (--bus)")
    options = SessionOptions(
        mode=mode,
        workflow=workflow,
        seed=seed or 0,
        concurrency=concurrency,
        services=services,
        state=state,
        bus=bus or "memory://",
        bus_prefix=bus_prefix,
        parameters=parse_parameters(param),
        state_dir=state_dir(state_directory),
        outbox=outbox,
        deadline=deadline,
        participants=hosted_participants(workers or "in-process"),
        **model_options(model, record, replay, on_model_unavailable),
    )
    asyncio.run(_serve(options, tokens, host, port))


async def _serve(options: SessionOptions, tokens: list[Any], host: str, port: int) -> None:
    import socket

    import uvicorn

    from agent_coordinator.shell.server import create_app, drain

    async with open_session(options) as session:
        if options.mode == "choreography":
            await session.coordinator.engine.start()  # type: ignore[attr-defined]
        listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listening.bind((host, port))
        except OSError as exc:
            raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port") from None
        bound = listening.getsockname()[1]
        api = create_app(session, tokens)
        server = uvicorn.Server(uvicorn.Config(api, log_level="warning", lifespan="off"))
        console.print(
            f"serving {session.workflow_app.workflow.name} ({options.mode}) on http://{host}:{bound} "
            f"(state: {session.event_log.where})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        await server.serve(sockets=[listening])
        await drain(api)  # the runs started here finish before the session closes


@app.command()
def migrate(state: StateOption = None) -> None:
    """Create or bring up to date the shared state's tables in PostgreSQL: the event
    log and runs, the participant store, and LangGraph's checkpoints.

    Every process also does this when it starts (under one lock, so workers starting
    together do not race); run it once yourself when the workers' database user may
    not create tables. SQLite files are made and migrated when opened.
    """
    from agent_coordinator.bus.outbox import PARTICIPANT_STORE_MIGRATIONS
    from agent_coordinator.core.postgres import EVENT_LOG_MIGRATIONS, schema_versions
    from agent_coordinator.core.postgres import migrate as apply_migrations
    from agent_coordinator.graphs.checkpoints import checkpoint_version, open_checkpointer

    url = state_spec(state)
    if url is None or not is_shared_state(url):
        raise fail(
            "migrate needs shared state: pass --state postgresql://... (or set $COORDINATOR_STATE); "
            "SQLite files are made and migrated when they are opened"
        )

    async def act() -> tuple[int | None, int | None]:
        before = await checkpoint_version(url)
        async with open_checkpointer(url, state_dir=Path()):
            pass  # opening it runs LangGraph's own migrations (under the migration lock)
        return before, await checkpoint_version(url)

    try:
        was = schema_versions(url)
        applied = apply_migrations(url, (*EVENT_LOG_MIGRATIONS, *PARTICIPANT_STORE_MIGRATIONS))
        now = schema_versions(url)
        checkpoints_before, checkpoints_now = asyncio.run(act())
    except CoordinatorError as exc:
        raise fail(str(exc)) from None
    for component in sorted(now):
        moved = any(m.component == component for m in applied)
        change = f"migrated from {was.get(component, 'nothing')}" if moved else "up to date"
        console.print(f"{component}: version {now[component]} ({change})", markup=False, highlight=False)
    change = "up to date"
    if checkpoints_before != checkpoints_now:
        change = f"migrated from {checkpoints_before or 'nothing'}"
    console.print(f"checkpoints: LangGraph version {checkpoints_now} ({change})", markup=False, highlight=False)
    console.print(f"state: {redact_url(url)}", markup=False, highlight=False)


@app.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    state: StateOption = None,
    state_directory: StateDirOption = None,
) -> None:
    """Delete the state directory: event log, checkpoints, in-process services' state."""
    shared = state_spec(state)
    if is_shared_state(shared):
        assert shared is not None
        raise fail(
            f"the state is in the database {redact_url(shared)}, which reset does not touch: drop its "
            "coordinator_* and checkpoint* tables with your database's tools if you mean it "
            "(coordinator migrate makes them again); unset $COORDINATOR_STATE to reset a state directory"
        )
    directory = state_dir(state_directory)
    if not directory.exists():
        console.print(f"nothing to reset at {directory}", markup=False, highlight=False)
        return
    if not directory.is_dir():
        raise fail(f"{directory} is a file, not a state directory; not deleting it")
    if not yes and not typer.confirm(f"delete {directory} and everything in it?"):
        raise typer.Exit(1)
    for path in sorted(directory.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    directory.rmdir()
    console.print(f"deleted {directory}", markup=False, highlight=False)


@app.command()
def trace(
    workflow_id: Annotated[str, typer.Argument(help="the workflow id (an order id)")],
    run_id: Annotated[str | None, typer.Option("--run", help="a specific run (default: the latest)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the events as JSON lines")] = False,
    workflow: RunsAppOption = None,
    state: StateOption = None,
    state_directory: StateDirOption = None,
) -> None:
    """Show one workflow run's causal chain of events, from the event log.

    A header names its workflow, app, mode and status; then each event is shown
    under its cause, its data apart from what it cost (model and tool calls).
    """
    event_log = existing_event_log(state_dir(state_directory), state=state_spec(state))
    where = event_log.where
    try:
        events = event_log.events(workflow_id, run_id=run_id)
        runs = event_log.runs(workflow_id)
        shown_run = run_id or (runs[-1] if runs else None)
        run_record = event_log.run(shown_run) if shown_run else None
    finally:
        event_log.close()
    if not events:
        where += f" (run {run_id})" if run_id else ""
        raise fail(f"no events for {workflow_id!r} in {where}; see `coordinator status`", 1)
    if json_output:
        for event in events:
            console.print(event.to_json(), soft_wrap=True, markup=False, highlight=False)
        return
    resolved = AppResolver(workflow).resolve(run_record, events[-1])
    console.print(trace_header(workflow_id, shown_run, run_record, resolved, events[-1]), soft_wrap=True)
    console.print(render_trace(workflow_id, events))


@events_app.command("export")
def export_events(
    output: Annotated[Path | None, typer.Option(help="write the JSON lines to this file (default: print them)")] = None,
    state: StateOption = None,
    state_directory: StateDirOption = None,
) -> None:
    """Print every event of the event log as JSON lines, in a canonical order.

    Each line is an event in the CloudEvents JSON format; the order is by workflow
    id, then each workflow's events in causal order (siblings by time, type and id).
    It does not depend on how runs interleaved, nor on the mode: with --seed and
    --logical-clock, the same inputs export the same bytes.
    """
    event_log = existing_event_log(state_dir(state_directory), state=state_spec(state))
    try:
        if output is None:
            for line in event_log.export():
                typer.echo(line)
            return
        try:
            with output.open("w", encoding="utf-8", newline="\n") as out:
                for line in event_log.export():
                    out.write(line + "\n")
        except OSError as exc:
            raise fail(f"cannot write {output}: {exc.strerror or exc}; pick a writable --output") from None
    finally:
        event_log.close()
    console.print(f"wrote {output}", markup=False, highlight=False)


def main() -> None:  # pragma: no cover - console script entry
    app()
