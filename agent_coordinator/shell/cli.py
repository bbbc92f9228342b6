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
import hashlib
import importlib.util
import json
import os
import re
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from agent_coordinator.core.app import AppEnvironment, AppOptions, InvalidParameter, WorkflowApp, load_app
from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.eventlog import ORPHAN_RUN, RunRecord, SqliteEventLog, causal_order
from agent_coordinator.core.events import Clock, Event, EventFactory, LogicalClock, SystemClock
from agent_coordinator.core.results import WorkflowResult, WorkflowStatus
from agent_coordinator.core.run import MODES, Coordinator, open_coordinator
from agent_coordinator.core.saga import Saga
from agent_coordinator.core.settings import RunSettings
from agent_coordinator.core.signing import Keyring, keys_directory
from agent_coordinator.core.workflow import Workflow
from agent_coordinator.modes import ModeSpec, open_mode
from agent_coordinator.shell.inputs import DEFAULT_MAX_INPUT_BYTES, InputProblem, iter_inputs, read_inputs
from agent_coordinator.shell.reporting import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_TROUBLE,
    EXIT_UNUSABLE,
    STATUS_STYLE,
    RunReport,
    WaitingFor,
    most_severe,
)

__all__ = ["app", "read_inputs"]

DEFAULT_APP = "agent_coordinator.examples.orders:order_fulfilment_app"
#: Prefix of every broker name (exchange, queues, stream, subjects), e.g. ``staging-``.
BUS_PREFIX_ENV = "COORDINATOR_BUS_PREFIX"
SUPERVISORS = ("rule", "model")
WORKERS = ("in-process", "external")

app = typer.Typer(
    help="Run business workflows carried out by tool-using LLM agents, orchestrated or choreographed.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
)
events_app = typer.Typer(help="The event log as data.", no_args_is_help=True)
app.add_typer(events_app, name="events")
console = Console()
errors = Console(stderr=True)


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


def state_dir(explicit: Path | None) -> Path:
    """Where run state lives: ``--state-dir``, else ``$COORDINATOR_STATE_DIR``, else ``./.coordinator``."""
    return explicit or Path(os.environ.get("COORDINATOR_STATE_DIR", ".coordinator"))


# -- choices: shown in --help, completed by the shell, refused with the valid ones ------


def _choice(what: str, choices: Sequence[str], help: str) -> Any:
    """A typer option taking one of ``choices`` (a plain str, so the error is ours)."""

    def parse(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not a {what}; choose one of: {', '.join(choices)}")
        return value

    return typer.Option(parser=parse, metavar=f"[{'|'.join(choices)}]", autocompletion=lambda: list(choices), help=help)


# -- options shared by the commands that run workflows ---------------------------------

ModeOption = Annotated[str, _choice("mode", MODES, "coordination mode")]
SeedOption = Annotated[
    int | None,
    typer.Option(help="seed for event ids, retry jitter and sandbox faults (default 0); also derives the run id"),
]
ConcurrencyOption = Annotated[int, typer.Option(min=1, help="workflows in flight at once")]
RateOption = Annotated[float, typer.Option(min=0.0, max=1.0, help="share of service calls answered 503 (seeded)")]
ScenarioOption = Annotated[Path | None, typer.Option(help="sandbox scenario file (catalogue, test cards, ...)")]
ServicesOption = Annotated[
    str | None, typer.Option(help="base URL of services run elsewhere (coordinator sandbox); default: in-process")
]
WorkflowOption = Annotated[str, typer.Option(help="the WorkflowApp to run, as package.module:attribute")]
RunsAppOption = Annotated[
    str | None,
    typer.Option(
        "--workflow",
        help="the WorkflowApp of the runs, as package.module:attribute (default: the app each run recorded); "
        "applies to the runs of its workflow",
    ),
]
StateOption = Annotated[
    str | None,
    typer.Option(
        "--state",
        help="orchestration checkpoints: sqlite (default, in the state directory), sqlite://PATH "
        "(sqlite:///abs.db, sqlite://rel.db), postgresql://..., memory",
    ),
]
BusOption = Annotated[
    str | None,
    typer.Option(
        "--bus", help="choreography event bus: amqp://... or nats://... (default: memory://, this process only)"
    ),
]
BusPrefixOption = Annotated[
    str,
    typer.Option(
        envvar=BUS_PREFIX_ENV,
        help="prefix of the broker names (exchange, queues, stream, subjects), which are the workflow's name "
        "otherwise; the URL's query can still set each name",
    ),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        metavar="KEY=VALUE",
        help="a parameter the workflow declares (repeatable), e.g. approval_threshold_cents=100000",
    ),
]
SupervisorOption = Annotated[
    str | None,
    _choice(
        "supervisor", SUPERVISORS, "orchestration supervisor: rule (the saga decides; default) or model (a chat model)"
    ),
]
WorkersOption = Annotated[
    str | None,
    _choice(
        "workers setting",
        WORKERS,
        "choreography: in-process (the agents run here; default) or external (coordinator worker ...)",
    ),
]
RunJsonOption = Annotated[bool, typer.Option("--json", help="print one JSON line per run instead of a table")]
DeadlineOption = Annotated[
    float | None,
    typer.Option(
        min=0.001,
        help="choreography: seconds a run may go without ending before its stuck step is failed "
        "(default: (steps + 1) x the step timeout, 480 s for the orders)",
    ),
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
        metavar="SPEC",
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


class OnModelUnavailable(StrEnum):
    """What a step does when its model cannot be reached (``RunSettings.on_model_unavailable``)."""

    stop = "stop"
    compensate = "compensate"


OnModelUnavailableOption = Annotated[
    OnModelUnavailable,
    typer.Option(
        "--on-model-unavailable",
        help="when a step's model cannot be reached after its retries: stop the run (failed, nothing undone; "
        "`coordinator resume` carries it on) or compensate (the run ends needs_attention)",
    ),
]
RunIdOption = Annotated[
    str | None,
    typer.Option(
        "--run-id",
        help="the run's id in the event log (default: derived from --seed and the file when --seed is given, "
        "else random)",
    ),
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
    bus_prefix: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
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
    run_id: str | None = None
    on_model_unavailable: str = "stop"


@dataclass
class Session:
    """A live coordinator with its environment and event log."""

    workflow_app: WorkflowApp
    env: AppEnvironment
    coordinator: Coordinator
    event_log: SqliteEventLog
    options: SessionOptions
    deadline: float | None = None


def fail(message: str, code: int = EXIT_UNUSABLE) -> typer.Exit:
    """Print ``message`` as an error (verbatim: no markup, no highlighting) and return
    the Exit to raise."""
    errors.print(Text(message, style="red"))
    return typer.Exit(code)


def _warn(message: str) -> None:
    errors.print(Text(message, style="yellow"))


def parse_parameters(pairs: Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` pairs, split; the app converts and checks them against what its
    workflow declares (:meth:`WorkflowApp.resolve_parameters`)."""
    parsed: list[tuple[str, str]] = []
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--param {pair!r} must look like KEY=VALUE")
        parsed.append((key, value))
    return tuple(parsed)


def _a(word: str) -> str:
    """``word`` with its indefinite article ("an orchestration", "a choreography")."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _load_app(spec: str) -> WorkflowApp:
    """The app ``spec`` names. The working directory is importable, as for
    ``python -m``: an app of one's own runs from its project's folder uninstalled."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        return load_app(spec)
    except CoordinatorError as exc:
        raise fail(str(exc)) from None


def _refuse_inapplicable(mode: str, given: dict[str, object], why: str = "") -> None:
    """Refuse options that mean nothing in ``mode`` instead of ignoring them.

    ``given`` maps an option's name to its value (None: not given)."""
    applies_to = {
        "--bus": "choreography",
        "--outbox": "choreography",
        "--deadline": "choreography",
        "--workers": "choreography",
        "--state": "orchestration",
        "--supervisor": "orchestration",
    }
    for option, value in given.items():
        wanted = applies_to[option]
        if value is not None and wanted != mode:
            raise fail(
                f"{option} {value} applies to {wanted} only, and {why or f'--mode is {mode}'}; "
                f"drop {option}" + ("" if why else " or pass --mode " + wanted)
            )


# -- the state directory ------------------------------------------------------------------


def prepare_state_dir(directory: Path) -> Path:
    """Make sure ``directory`` can hold the state: create it when missing (saying so
    when its parents had to be created too), and refuse a file or an unwritable
    place with one message (exit 2)."""
    if directory.exists() and not directory.is_dir():
        raise fail(
            f"the state directory {directory} is a file, not a directory; "
            "point --state-dir (or $COORDINATOR_STATE_DIR) at a directory"
        )
    if not directory.exists():
        missing_parents = not directory.absolute().parent.exists()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(
                f"cannot create the state directory {directory}: {exc.strerror or exc}; "
                "point --state-dir (or $COORDINATOR_STATE_DIR) at a writable directory"
            ) from None
        if missing_parents:
            _warn(f"created the state directory {directory.absolute()} and the directories above it")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise fail(
            f"the state directory {directory} is not writable; "
            "point --state-dir (or $COORDINATOR_STATE_DIR) at a writable directory"
        )
    return directory


def open_event_log(path: Path) -> SqliteEventLog:
    """The event log at ``path``; one message (exit 2) when it cannot be opened."""
    existed = path.exists()
    try:
        return SqliteEventLog(path)
    except (sqlite3.Error, OSError) as exc:
        if existed:
            raise fail(f"cannot open the event log {path}: {exc}; is it an agent-coordinator events.db?") from None
        raise fail(
            f"cannot create the event log {path}: {exc}; point --state-dir (or $COORDINATOR_STATE_DIR) "
            "at a writable directory"
        ) from None


def existing_event_log(directory: Path, *, nothing: str = "run `coordinator run FILE` first") -> SqliteEventLog:
    """The event log of the state directory ``directory``, which must exist (exit 1
    when there is none: nothing has run here; exit 2 when it cannot be read)."""
    if directory.exists() and not directory.is_dir():
        raise fail(f"the state directory {directory} is a file, not a directory; pass --state-dir DIRECTORY")
    log_path = directory / "events.db"
    if not log_path.exists():
        raise fail(f"no event log at {log_path}; {nothing} (or pass --state-dir)", 1)
    return open_event_log(log_path)


# -- which app a run belongs to -------------------------------------------------------------


@dataclass(frozen=True)
class RunApp:
    """The app a recorded run belongs to: loaded (``app``), or why not (``problem``)."""

    spec: str | None
    app: WorkflowApp | None = None
    problem: str | None = None

    def status(self, event: Event) -> str:
        """The run's status from its last event: the app's reading of it, or, when the
        app cannot be loaded, what any saga's terminal event says (else ``unknown``)."""
        if self.app is not None:
            return _status_of(event, self.app)
        return _recorded_end(event) or "unknown"


class AppResolver:
    """Loads each run's app once: the ``--workflow`` app for the runs of its workflow,
    else the app the run recorded, else -- for a run recorded before apps were -- the
    order app when the run is of the order workflow. It never assumes an app for a
    run of another workflow, and checks that the run's events are the app's."""

    def __init__(self, explicit: str | None) -> None:
        self.explicit = explicit
        self.explicit_app = _load_app(explicit) if explicit else None
        self._loaded: dict[str, WorkflowApp | str] = {}
        self._sagas: dict[str, Saga] = {}

    def _load(self, spec: str) -> WorkflowApp | str:
        if spec not in self._loaded:
            try:
                self._loaded[spec] = load_app(spec, origin="the run's app")
            except CoordinatorError as exc:
                self._loaded[spec] = str(exc)
        return self._loaded[spec]

    def resolve(self, record: RunRecord | None, last: Event | None = None) -> RunApp:
        """The app of the run ``record`` describes (None: a run nobody recorded)."""
        name = record.workflow if record is not None else None
        explicit = self.explicit_app
        if explicit is not None and name in (None, explicit.workflow.name):
            assert self.explicit is not None
            return self._checked(self.explicit, explicit, last)
        if record is not None and record.app:
            spec = record.app
        elif name is None or name == _default_workflow_name(self):
            spec = DEFAULT_APP  # recorded before apps were: the order app is the only one it can mean
        else:
            return RunApp(
                None,
                problem=f"run {record.run_id if record else '?'} of workflow {name!r} did not record its app; "
                "pass --workflow package.module:attribute",
            )
        loaded = self._load(spec)
        if isinstance(loaded, str):
            return RunApp(spec, problem=f"needs the app {spec}, which cannot be loaded: {loaded}")
        return self._checked(spec, loaded, last)

    def _checked(self, spec: str, loaded: WorkflowApp, last: Event | None) -> RunApp:
        saga = self._sagas.get(spec)
        if saga is None:
            saga = self._sagas[spec] = Saga(loaded.workflow, factory=EventFactory())
        if last is not None and last.type not in saga.event_types and not saga.is_pause(last.type):
            return RunApp(
                spec,
                problem=f"its last event {last.type} is not one of workflow {loaded.workflow.name!r}'s "
                f"({spec}); pass --workflow with the app that ran it",
            )
        return RunApp(spec, loaded)


def _default_workflow_name(resolver: AppResolver) -> str | None:
    loaded = resolver._load(DEFAULT_APP)
    return None if isinstance(loaded, str) else loaded.workflow.name


def _recorded_end(event: Event) -> str | None:
    """The status a terminal event records, read without the app: every saga emits its
    workflow's completed and cancelled events as ``workflow/<name>`` with a cause (the
    start event has none), and the cancelled one carries its status."""
    if not event.source.startswith("workflow/") or event.causation_id is None:
        return None
    return str(event.data.get("status", WorkflowStatus.COMPLETED.value))


# -- a session: the app, its environment, the state, the coordinator -------------------------


def derive_run_id(seed: int, file: Path, *, mode: str, workflow: str) -> str:
    """A run id that the same input file, seed, mode and app always get (``--seed``
    given, ``--run-id`` not): a re-run continues its run, and a reproducible log has
    reproducible run ids."""
    digest = hashlib.sha256()
    with file.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 16), b""):
            digest.update(chunk)
    key = f"{seed}\0{digest.hexdigest()}\0{mode}\0{workflow}".encode()
    return f"run-{hashlib.sha256(key).hexdigest()[:12]}"


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")


def _check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id) or run_id == ORPHAN_RUN:
        raise fail(
            f"--run-id {run_id!r} is not a usable run id: use up to 100 letters, digits, '.', '_', ':' or '-', "
            f"starting with a letter or digit (and not {ORPHAN_RUN!r})"
        )
    return run_id


def default_deadline(workflow: Workflow, settings: RunSettings) -> float:
    """How long a choreographed run may go without ending, unless ``--deadline`` says:
    every step and the end taking the whole step timeout still fits."""
    return (len(workflow.steps) + 1) * (settings.step_timeout or 120.0)


@asynccontextmanager
async def open_session(options: SessionOptions) -> AsyncIterator[Session]:
    """Build the environment, state, bus and coordinator ``options`` describe.

    Everything that can make the session unusable (the app, its parameters, the state
    directory, the event log, the services, the checkpointer, the bus) is reported
    as one message with exit code 2 before anything runs."""
    workflow_app = _load_app(options.workflow)
    workflow = workflow_app.workflow
    try:
        parameters = workflow_app.resolve_parameters(options.parameters)
    except InvalidParameter as exc:
        raise fail(str(exc)) from None
    directory = prepare_state_dir(options.state_dir)
    app_options = AppOptions(
        seed=options.seed,
        transient_rate=options.transient_rate,
        scenario=str(options.scenario) if options.scenario else None,
        services=options.services,
        store=None if options.services else str(directory / "sandbox.db"),
        models=options.models,
        record=str(options.record) if options.record else None,
        replay=str(options.replay) if options.replay else None,
    )
    clock: Clock = LogicalClock() if options.logical_clock else SystemClock()
    settings = RunSettings(
        seed=options.seed,
        parameters=parameters,
        on_model_unavailable="compensate" if options.on_model_unavailable == "compensate" else "stop",
    )
    deadline = options.deadline
    hosts_owner = options.participants is None or "owner" in options.participants
    if options.mode == "choreography" and deadline is None and hosts_owner:
        deadline = default_deadline(workflow, settings)
    run_id = options.run_id or f"run-{uuid.uuid4().hex[:12]}"
    event_log = open_event_log(directory / "events.db")
    try:
        started = clock.epoch if isinstance(clock, LogicalClock) else None
        record = event_log.begin_run(
            run_id, workflow=workflow.name, mode=options.mode, app=options.workflow, started=started
        )
        if (record.workflow, record.mode, record.app or options.workflow) != (
            workflow.name,
            options.mode,
            options.workflow,
        ):
            raise fail(
                f"run id {run_id} already stands for {_a(record.mode)} run of {record.app or record.workflow} "
                f"in {event_log.path}; pass another --run-id (or none)"
            )
        async with AsyncExitStack() as stack:
            try:
                env = await stack.enter_async_context(workflow_app.environment(app_options))
                coordinator = await _open_coordinator(
                    stack, options, workflow_app, env, settings, clock, event_log, run_id=run_id, deadline=deadline
                )
            except (OSError, sqlite3.Error) as exc:
                raise fail(
                    f"cannot start the runs: {type(exc).__name__}: {exc} (state directory {directory})"
                ) from None
            yield Session(
                workflow_app, env, coordinator, event_log, options, deadline if options.mode == "choreography" else None
            )
    except CoordinatorError as exc:
        raise fail(str(exc), EXIT_UNUSABLE) from None
    finally:
        event_log.close()


async def _open_coordinator(
    stack: AsyncExitStack,
    options: SessionOptions,
    workflow_app: WorkflowApp,
    env: AppEnvironment,
    settings: RunSettings,
    clock: Clock,
    event_log: SqliteEventLog,
    *,
    run_id: str,
    deadline: float | None,
) -> Coordinator:
    # Imported here, not at the top: `coordinator --help` and `status` need none of it.
    from agent_coordinator.agents.models import SUPERVISOR, parse_model_options
    from agent_coordinator.bus import bus_namespace

    supervisor_model = None
    if options.mode == "orchestration" and options.supervisor == "model":
        choice = parse_model_options(options.models, record=options.record, replay=options.replay)
        supervisor_model = choice.model_for(SUPERVISOR)
    spec = ModeSpec(
        name=options.mode,
        state_dir=options.state_dir,
        state=options.state,
        supervisor=supervisor_model,
        bus=options.bus,
        namespace=bus_namespace(workflow_app.workflow.name, options.bus_prefix),
        outbox=options.outbox,
        participants=options.participants,
        deadline=deadline,
        concurrency=options.concurrency,
    )
    # Anyone with the broker's credentials can publish there: events are signed, and
    # checked before anyone acts (keys made on first use).
    keys = Keyring.open(keys_directory(options.state_dir)) if spec.on_a_broker else None
    mode = await stack.enter_async_context(open_mode(spec))
    return await stack.enter_async_context(
        open_coordinator(
            workflow_app.workflow,
            agents=env.agents,
            mode=mode,
            settings=settings,
            event_log=event_log,
            clock=clock,
            run_id=run_id,
            keys=keys,
        )
    )


# -- run ------------------------------------------------------------------------------------


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
) -> None:
    """Run every workflow input in FILE and report each outcome as it ends.

    A workflow id is a durable identity, in both modes: an input whose run the event
    log shows ended is answered from the record (marked `recorded`; nothing runs
    again), and one whose run did not end is carried on, not started twice.
    """
    _refuse_inapplicable(
        mode,
        {
            "--bus": bus,
            "--outbox": outbox,
            "--deadline": deadline,
            "--workers": workers,
            "--state": state,
            "--supervisor": supervisor,
        },
    )
    if run_id is not None:
        run_id = _check_run_id(run_id)
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
        participants=_hosted(workers or "in-process"),
        outbox=outbox,
        deadline=deadline,
        max_input_bytes=max_input_bytes,
        run_id=run_id,
        **_model_options(model, record, replay, on_model_unavailable),
    )
    statuses = tuple(WorkflowStatus(f.value) for f in fail_on or ())
    raise typer.Exit(asyncio.run(_run(file, options, json_output, statuses)))


def _model_options(
    model: list[str] | None,
    record: Path | None,
    replay: Path | None,
    on_unavailable: OnModelUnavailable = OnModelUnavailable.stop,
) -> dict[str, Any]:
    """The SessionOptions fields of --model/--record/--replay/--on-model-unavailable,
    checked now so a typo fails before anything runs (ModelError names the value)."""
    from agent_coordinator.agents.models import parse_model_options
    from agent_coordinator.core.errors import ModelError

    try:
        parse_model_options(model, record=record, replay=replay)
    except ModelError as exc:
        raise fail(str(exc)) from None
    return {
        "models": tuple(model or ()),
        "record": record,
        "replay": replay,
        "on_model_unavailable": on_unavailable.value,
    }


def _hosted(workers: str) -> tuple[str, ...] | None:
    """Which participants a `run` hosts: all, or (with external workers) only the
    owner, which starts runs, ends them and enforces their deadlines."""
    if workers == "external":
        from agent_coordinator.bus.choreography import OWNER

        return (OWNER,)
    return None


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
        results = session.coordinator.stream(valid_inputs(), concurrency=options.concurrency)
        await _follow(results, report, session, total=total, waiting=waiting)
        report.finish(log_hint=_log_hint(session))
    return report.exit_code()


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
    if workflow_app is not None and event.type in {Saga.stopped_event(s) for s in workflow_app.workflow.steps}:
        return WorkflowStatus.FAILED.value  # stopped: its model could not be reached; resume carries it on
    return "in flight"


# -- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRow:
    workflow_id: str
    run: str
    mode: str
    workflow: str
    event: Event
    state: str
    app: RunApp


@app.command()
def status(
    workflow: RunsAppOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON line per workflow")] = False,
    state_directory: StateDirOption = None,
) -> None:
    """List every workflow the event log knows: its status, last event, workflow and run.

    Each run is read with the app it recorded; a run whose app cannot be loaded is
    listed with the app it needs.
    """
    directory = state_dir(state_directory)
    event_log = existing_event_log(directory)
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
    console.print(_status_table(rows, f"{len(rows)} workflows ({directory / 'events.db'})"))
    for row in rows:
        if row.app.problem:
            console.print(Text(row.workflow_id, style="magenta") + Text(f": {row.app.problem}"))
        elif row.state == WorkflowStatus.AWAITING_APPROVAL.value:
            step, reason = row.event.data.get("step"), row.event.data.get("reason")
            console.print(Text(row.workflow_id, style="cyan") + Text(f" waits for approval of step {step!r}: {reason}"))


def _status_table(rows: Sequence[StatusRow], title: str) -> Table:
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


# -- resume, approve, reject ------------------------------------------------------------------


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
    event_log = existing_event_log(directory, nothing="nothing to resume")
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
                if asked or _recorded_end(event) is None:
                    left_alone.append(f"cannot resume {subject!r}: {resolved.problem}; left alone")
                continue
            if resolver.explicit is not None and not asked and resolved.spec != resolver.explicit:
                continue  # --workflow: only that app's runs
            if asked or _status_of(event, resolved.app) in ("in flight", WorkflowStatus.FAILED.value):
                assert resolved.spec is not None
                mode = run_record.mode if run_record is not None else "orchestration"
                groups.setdefault((resolved.spec, mode), []).append(subject)
    finally:
        event_log.close()
    unknown = [w for w in workflow_ids or () if w not in known]
    for workflow_id in unknown:
        errors.print(Text(f"cannot resume {workflow_id!r}:", style="red") + Text(f" no run of it in {directory}"))
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
    if state is not None and "orchestration" not in modes:
        raise fail(f"--state {state} applies to orchestration runs only, and the runs to resume are choreographed")
    common = dict(
        services=services,
        bus_prefix=bus_prefix,
        parameters=parse_parameters(param),
        concurrency=concurrency,
        state_dir=directory,
        **_model_options(model, record, replay, on_model_unavailable),
    )
    codes = [
        asyncio.run(
            _resume(
                subjects,
                SessionOptions(
                    mode=mode,
                    workflow=spec,
                    state=state if mode == "orchestration" else None,
                    bus=(bus or "memory://") if mode == "choreography" else "memory://",
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
    event_log = existing_event_log(directory, nothing="nothing has run here")
    try:
        runs = event_log.runs(workflow_id)
        run_record = event_log.run(runs[-1]) if runs else None
        logged = event_log.events(workflow_id)
    finally:
        event_log.close()
    if run_record is None:
        raise fail(f"no run of {workflow_id!r} in {directory / 'events.db'}; see `coordinator status`", 1)
    resolved = AppResolver(explicit_app).resolve(run_record, logged[-1] if logged else None)
    if resolved.app is None or resolved.spec is None:
        raise fail(f"cannot decide on {workflow_id!r}: {resolved.problem}; left alone")
    mode = run_record.mode
    bus, state = overrides.pop("bus"), overrides.pop("state")
    why = f"{workflow_id} is {_a(mode)} run"
    _refuse_inapplicable(mode, {"--bus": bus, "--state": state}, why=why)
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


NoteOption = Annotated[str, typer.Option(help="why, for the record")]
ByOption = Annotated[str, typer.Option(envvar="USER", help="who decides (recorded in the event)")]


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
            **_model_options(model, record, replay, on_model_unavailable),
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


# -- worker, compare, dead letters ------------------------------------------------------------


@app.command()
def worker(
    participant: Annotated[
        str, typer.Argument(help="an agent of the workflow (see `coordinator graph`), owner or projection")
    ],
    bus: Annotated[
        str,
        typer.Option("--bus", help="the broker the participants share: amqp://... or nats://..."),
    ] = "amqp://guest:guest@127.0.0.1:5672/",
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
    state_directory: StateDirOption = None,
) -> None:
    """Run one choreography participant as its own process, until SIGTERM or Ctrl-C.

    Several processes of one participant share its queue (they compete for its
    events). On SIGTERM the worker stops taking events, finishes the ones in hand,
    publishes what its outbox holds, and exits.
    """
    if bus.startswith("memory:"):
        raise fail(f"--bus {bus}: a worker needs a broker other processes share; pass --bus amqp://... or nats://...")
    options = SessionOptions(
        mode="choreography",
        workflow=workflow,
        seed=seed,
        services=services,
        bus=bus,
        bus_prefix=bus_prefix,
        parameters=parse_parameters(param),
        concurrency=concurrency,
        state_dir=state_dir(state_directory),
        participants=(participant,),
        outbox=outbox,
        deadline=deadline,
        **_model_options(model, record, replay, on_model_unavailable),
    )
    asyncio.run(_work(options))


async def _work(options: SessionOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_session(options) as session:
        participants = ", ".join(options.participants or ())
        where = options.bus.split("@")[-1]
        console.print(
            f"worker {participants} ready on {where} (run {session.coordinator.run_id})", markup=False, highlight=False
        )
        await stop.wait()
        console.print(f"worker {participants} stopping: finishing the events in hand", markup=False, highlight=False)
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
    from agent_coordinator.lab.compare import run_compare_command

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
        str, typer.Option("--bus", help="the broker to read: amqp://... or nats://... (default: RabbitMQ on 127.0.0.1)")
    ] = "amqp://guest:guest@127.0.0.1:5672/",
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

    namespace = bus_namespace(_load_app(workflow).workflow.name, bus_prefix)

    async def act() -> None:
        broker = open_bus(bus, namespace=namespace)
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


# -- graph, sandbox, reset --------------------------------------------------------------------


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

    compiled = asyncio.run(compile_graph(_load_app(workflow)))
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
        _load_app(workflow).serve_services(host=host, port=port, store=store, scenario=scenario)
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


# -- trace, events export ---------------------------------------------------------------------


@app.command()
def trace(
    workflow_id: Annotated[str, typer.Argument(help="the workflow id (an order id)")],
    run_id: Annotated[str | None, typer.Option("--run", help="a specific run (default: the latest)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the events as JSON lines")] = False,
    workflow: RunsAppOption = None,
    state: Annotated[Path | None, typer.Option("--state-dir", help="directory holding the event log")] = None,
) -> None:
    """Show one workflow run's causal chain of events, from the event log.

    A header names its workflow, app, mode and status; then each event is shown
    under its cause, its data apart from what it cost (model and tool calls).
    """
    directory = state_dir(state)
    event_log = existing_event_log(directory)
    try:
        events = event_log.events(workflow_id, run_id=run_id)
        runs = event_log.runs(workflow_id)
        shown_run = run_id or (runs[-1] if runs else None)
        run_record = event_log.run(shown_run) if shown_run else None
    finally:
        event_log.close()
    if not events:
        where = f"{directory / 'events.db'}" + (f" (run {run_id})" if run_id else "")
        raise fail(f"no events for {workflow_id!r} in {where}; see `coordinator status`", 1)
    if json_output:
        for event in events:
            console.print(event.to_json(), soft_wrap=True, markup=False, highlight=False)
        return
    resolved = AppResolver(workflow).resolve(run_record, events[-1])
    console.print(_trace_header(workflow_id, shown_run, run_record, resolved, events[-1]))
    console.print(render_trace(workflow_id, events))


def _trace_header(
    workflow_id: str, run_id: str | None, record: RunRecord | None, resolved: RunApp, last: Event
) -> Text:
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


@events_app.command("export")
def export_events(
    output: Annotated[Path | None, typer.Option(help="write the JSON lines to this file (default: print them)")] = None,
    state_directory: StateDirOption = None,
) -> None:
    """Print every event of the event log as JSON lines, in a canonical order.

    Each line is an event in the CloudEvents JSON format; the order is by workflow
    id, then each workflow's events in causal order (siblings by time, type and id).
    It does not depend on how runs interleaved, nor on the mode: with --seed and
    --logical-clock, the same inputs export the same bytes.
    """
    directory = state_dir(state_directory)
    event_log = existing_event_log(directory)
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
