"""A session of the ``coordinator`` command: the app, its environment, the state
directory and the event log, the mode and the coordinator, opened from options."""

from __future__ import annotations

import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent_coordinator.core.app import AppEnvironment, AppOptions, InvalidParameter, WorkflowApp, load_app
from agent_coordinator.core.errors import CoordinatorError
from agent_coordinator.core.eventlog import RunRecord, SqlEventLog, SqliteEventLog
from agent_coordinator.core.events import Clock, Event, EventFactory, LogicalClock, SystemClock
from agent_coordinator.core.results import WorkflowStatus
from agent_coordinator.core.saga import Saga
from agent_coordinator.core.settings import RunSettings
from agent_coordinator.core.workflow import Workflow

if TYPE_CHECKING:
    from agent_coordinator.bus.runqueue import BusRunQueue
    from agent_coordinator.core.run import Coordinator

from agent_coordinator.shell.console import fail, warn
from agent_coordinator.shell.inputs import DEFAULT_MAX_INPUT_BYTES
from agent_coordinator.shell.options import DEFAULT_APP, a_or_an, is_shared_state
from agent_coordinator.shell.reporting import (
    EXIT_UNUSABLE,
)


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
    submit: bool = False


@dataclass
class Session:
    """A live coordinator with its environment and event log."""

    workflow_app: WorkflowApp
    env: AppEnvironment
    coordinator: Coordinator
    event_log: SqlEventLog
    options: SessionOptions
    deadline: float | None = None
    #: orchestration on a broker: the queue of runs workers share (submit and serve)
    run_queue: BusRunQueue | None = None


def load_workflow_app(spec: str) -> WorkflowApp:
    """The app ``spec`` names. The working directory is importable, as for
    ``python -m``: an app of one's own runs from its project's folder uninstalled."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        return load_app(spec)
    except CoordinatorError as exc:
        raise fail(str(exc)) from None


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
            warn(f"created the state directory {directory.absolute()} and the directories above it")
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


def open_shared_event_log(url: str) -> SqlEventLog:
    """The event log in the database ``url`` names (its tables made or migrated when
    missing); one message (exit 2) when it cannot be used."""
    from agent_coordinator.core.postgres import PostgresEventLog

    try:
        return PostgresEventLog(url)
    except CoordinatorError as exc:
        raise fail(f"cannot open the event log: {exc}") from None


def existing_event_log(
    directory: Path, *, state: str | None = None, nothing: str = "run `coordinator run FILE` first"
) -> SqlEventLog:
    """The event log of ``state`` when it is shared (a PostgreSQL URL), else of the
    state directory ``directory``, which must exist (exit 1 when there is none:
    nothing has run here; exit 2 when it cannot be read)."""
    if is_shared_state(state):
        assert state is not None
        return open_shared_event_log(state)
    if directory.exists() and not directory.is_dir():
        raise fail(f"the state directory {directory} is a file, not a directory; pass --state-dir DIRECTORY")
    log_path = directory / "events.db"
    if not log_path.exists():
        raise fail(f"no event log at {log_path}; {nothing} (or pass --state-dir)", 1)
    return open_event_log(log_path)


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
            return status_of(event, self.app)
        return recorded_end(event) or "unknown"


class AppResolver:
    """Loads each run's app once: the ``--workflow`` app for the runs of its workflow,
    else the app the run recorded, else -- for a run recorded before apps were -- the
    order app when the run is of the order workflow. It never assumes an app for a
    run of another workflow, and checks that the run's events are the app's."""

    def __init__(self, explicit: str | None) -> None:
        self.explicit = explicit
        self.explicit_app = load_workflow_app(explicit) if explicit else None
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


def recorded_end(event: Event) -> str | None:
    """The status a terminal event records, read without the app: every saga emits its
    workflow's completed and cancelled events as ``workflow/<name>`` with a cause (the
    start event has none), and the cancelled one carries its status."""
    if not event.source.startswith("workflow/") or event.causation_id is None:
        return None
    return str(event.data.get("status", WorkflowStatus.COMPLETED.value))


def default_deadline(workflow: Workflow, settings: RunSettings) -> float:
    """How long a choreographed run may go without ending, unless ``--deadline`` says:
    every step and the end taking the whole step timeout still fits."""
    return (len(workflow.steps) + 1) * (settings.step_timeout or 120.0)


_telemetry_configured = False


def _configure_telemetry(options: SessionOptions) -> None:
    """Export spans when the standard ``OTEL_*`` variables ask for it (once per
    process); the service is named after what this process is, unless
    ``OTEL_SERVICE_NAME`` says."""
    global _telemetry_configured
    if _telemetry_configured:
        return
    from agent_coordinator.core.telemetry import configure_from_environment

    what = ", ".join(options.participants) if options.participants else options.mode
    _telemetry_configured = configure_from_environment(f"agent-coordinator {what}")


@asynccontextmanager
async def open_session(options: SessionOptions) -> AsyncIterator[Session]:
    """Build the environment, state, bus and coordinator ``options`` describe.

    Everything that can make the session unusable (the app, its parameters, the state
    directory, the event log, the services, the checkpointer, the bus) is reported
    as one message with exit code 2 before anything runs."""
    _configure_telemetry(options)
    workflow_app = load_workflow_app(options.workflow)
    workflow = workflow_app.workflow
    try:
        parameters = workflow_app.resolve_parameters(options.parameters)
    except InvalidParameter as exc:
        raise fail(str(exc)) from None
    shared = is_shared_state(options.state)
    # Shared state needs no directory, unless the app's in-process services keep
    # theirs there (no --services): a worker of a deployment writes no local file.
    directory = options.state_dir if shared and options.services else prepare_state_dir(options.state_dir)
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
    event_log = (
        open_shared_event_log(options.state)
        if shared and options.state is not None
        else open_event_log(directory / "events.db")
    )
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
                f"run id {run_id} already stands for {a_or_an(record.mode)} run of {record.app or record.workflow} "
                f"in {event_log.where}; pass another --run-id (or none)"
            )
        async with AsyncExitStack() as stack:
            try:
                env = await stack.enter_async_context(workflow_app.environment(app_options))
                coordinator, run_queue = await _open_coordinator(
                    stack, options, workflow_app, env, settings, clock, event_log, run_id=run_id, deadline=deadline
                )
            except (OSError, sqlite3.Error) as exc:
                raise fail(f"cannot start the runs: {type(exc).__name__}: {exc} (state: {event_log.where})") from None
            yield Session(
                workflow_app,
                env,
                coordinator,
                event_log,
                options,
                deadline if options.mode == "choreography" else None,
                run_queue,
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
    event_log: SqlEventLog,
    *,
    run_id: str,
    deadline: float | None,
) -> tuple[Coordinator, BusRunQueue | None]:
    # Imported here, not at the top: `coordinator --help` and `status` need none of it.
    from agent_coordinator.agents.models import SUPERVISOR, parse_model_options
    from agent_coordinator.bus import bus_namespace, open_bus
    from agent_coordinator.bus.runqueue import BusRunQueue
    from agent_coordinator.core.postgres import PostgresRunLocks
    from agent_coordinator.core.run import open_coordinator
    from agent_coordinator.core.signing import Keyring, keys_directory
    from agent_coordinator.modes import ModeSpec, open_mode

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
        # Shared state holds the participant store too, unless --outbox says otherwise.
        outbox=options.outbox or (options.state if is_shared_state(options.state) else None),
        participants=options.participants,
        deadline=deadline,
        concurrency=options.concurrency,
    )
    # Anyone with the broker's credentials can publish there: events are signed, and
    # checked before anyone acts (keys made on first use).
    orchestrated_on_a_broker = options.mode == "orchestration" and not options.bus.startswith("memory:")
    keys = Keyring.open(keys_directory(options.state_dir)) if spec.on_a_broker or orchestrated_on_a_broker else None
    mode = await stack.enter_async_context(open_mode(spec))
    lock = None
    if options.mode == "orchestration" and is_shared_state(options.state):
        # Processes sharing the state never advance one run at once (workers, a
        # resume, an approval): a PostgreSQL session lock per run.
        assert options.state is not None
        lock = PostgresRunLocks(options.state)
        stack.push_async_callback(lock.close)
    run_queue = None
    if orchestrated_on_a_broker:
        queue_bus = open_bus(options.bus, namespace=spec.namespace)
        stack.push_async_callback(queue_bus.close)
        run_queue = BusRunQueue(
            queue_bus, workflow_app.workflow, keys=keys, factory=EventFactory(seed=options.seed, signer=keys)
        )
    coordinator = await stack.enter_async_context(
        open_coordinator(
            workflow_app.workflow,
            agents=env.agents,
            mode=mode,
            settings=settings,
            event_log=event_log,
            clock=clock,
            run_id=run_id,
            keys=keys,
            lock=lock,
            queue=run_queue,
        )
    )
    return coordinator, run_queue


def status_of(event: Event, workflow_app: WorkflowApp | None = None) -> str:
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
