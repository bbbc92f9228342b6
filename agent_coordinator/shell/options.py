"""The command-line options the ``coordinator`` commands share, and their checks."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from agent_coordinator.core.eventlog import ORPHAN_RUN
from agent_coordinator.core.run import MODES
from agent_coordinator.shell.console import fail

DEFAULT_APP = "agent_coordinator.examples.orders:order_fulfilment_app"


#: Prefix of every broker name (exchange, queues, stream, subjects), e.g. ``staging-``.
BUS_PREFIX_ENV = "COORDINATOR_BUS_PREFIX"


SUPERVISORS = ("rule", "model")


WORKERS = ("in-process", "external")


def state_dir(explicit: Path | None) -> Path:
    """Where run state lives: ``--state-dir``, else ``$COORDINATOR_STATE_DIR``, else ``./.coordinator``."""
    return explicit or Path(os.environ.get("COORDINATOR_STATE_DIR", ".coordinator"))


STATE_ENV = "COORDINATOR_STATE"


def state_spec(explicit: str | None, *, mode: str | None = None) -> str | None:
    """``--state``, else ``$COORDINATOR_STATE`` -- the environment's only when it means
    something for ``mode``: a PostgreSQL URL (shared state) in either mode, anything
    else for orchestration only (a deployment sets the variable once for all its
    processes; a choreography worker must not refuse to start over an orchestration
    setting)."""
    if explicit:
        return explicit
    from_env = os.environ.get(STATE_ENV) or None
    if from_env is None or mode is None or mode == "orchestration" or is_shared_state(from_env):
        return from_env
    return None


BUS_ENV = "COORDINATOR_BUS"

#: The broker a worker or dead-letters uses when neither --bus nor $COORDINATOR_BUS says.
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


def bus_spec(explicit: str | None, *, applies: bool) -> str | None:
    """``--bus``, else ``$COORDINATOR_BUS`` where a bus means something (``applies``:
    choreography, orchestration shared out to workers) -- a deployment sets it once
    for all its processes, and an orchestration run of its own must not refuse to
    start over it."""
    if explicit:
        return explicit
    return (os.environ.get(BUS_ENV) or None) if applies else None


def broker_url(explicit: str | None) -> str:
    """The broker of a command that always needs one (``worker``, ``dead-letters``):
    ``--bus``, else ``$COORDINATOR_BUS``, else :data:`DEFAULT_BROKER`."""
    return explicit or os.environ.get(BUS_ENV) or DEFAULT_BROKER


def is_shared_state(spec: str | None) -> bool:
    """Whether ``spec`` puts all the state several processes share in one database
    (a PostgreSQL URL) rather than in the state directory."""
    return spec is not None and spec.startswith(("postgresql://", "postgres://"))


def _choice(what: str, choices: Sequence[str], help: str) -> Any:
    """A typer option taking one of ``choices`` (a plain str, so the error is ours)."""

    def parse(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not a {what}; choose one of: {', '.join(choices)}")
        return value

    return typer.Option(parser=parse, metavar=f"[{'|'.join(choices)}]", autocompletion=lambda: list(choices), help=help)


ModeOption = Annotated[str, _choice("mode", MODES, "coordination mode")]


LogLevelOption = Annotated[
    str, _choice("log level", ("debug", "info", "warning", "error"), "log records of this level and above (stderr)")
]


LogFormatOption = Annotated[
    str, _choice("log format", ("text", "json"), "text, or one JSON object per line (a handled event's fields)")
]


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
        help="where state lives. postgresql://...: everything processes share (event log, runs, "
        "approvals, outbox/inbox, deadlines, checkpoints), in either mode, no local state file. "
        "Orchestration checkpoints only: sqlite (default, in the state directory), sqlite://PATH "
        "(sqlite:///abs.db, sqlite://rel.db), memory. Default: $COORDINATOR_STATE",
    ),
]


BusOption = Annotated[
    str | None,
    typer.Option(
        "--bus",
        help="event bus: amqp://... or nats://... (choreography; orchestration shared out to workers); "
        "default: $COORDINATOR_BUS, else memory:// (this process only)",
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


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article ("an orchestration", "a choreography")."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def refuse_inapplicable(mode: str, given: dict[str, object], why: str = "") -> None:
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
        if option == "--state" and is_shared_state(str(value)):
            continue  # shared state serves both modes
        if value is not None and wanted != mode:
            raise fail(
                f"{option} {value} applies to {wanted} only, and {why or f'--mode is {mode}'}; "
                f"drop {option}" + ("" if why else " or pass --mode " + wanted)
            )


def check_submit(mode: str, bus: str | None, state: str | None, *, what: str = "--submit") -> None:
    """Refuse (exit 2) what cannot share orchestration runs between processes: a mode
    other than orchestration, no broker to queue them on, state that is not shared."""
    if mode != "orchestration":
        raise fail(
            f"{what} applies to orchestration; a choreography is shared out by its participants' workers "
            "(coordinator run --workers external)"
        )
    if bus is None or bus.startswith("memory:"):
        raise fail(f"{what} needs a broker that the workers share: pass --bus amqp://... or nats://...")
    if not is_shared_state(state):
        raise fail(f"{what} needs state the workers share: pass --state postgresql://... (or set ${STATE_ENV})")


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


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id) or run_id == ORPHAN_RUN:
        raise fail(
            f"--run-id {run_id!r} is not a usable run id: use up to 100 letters, digits, '.', '_', ':' or '-', "
            f"starting with a letter or digit (and not {ORPHAN_RUN!r})"
        )
    return run_id


def model_options(
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


def hosted_participants(workers: str) -> tuple[str, ...] | None:
    """Which participants a `run` hosts: all, or (with external workers) only the
    owner, which starts runs, ends them and enforces their deadlines."""
    if workers == "external":
        from agent_coordinator.bus.choreography import OWNER

        return (OWNER,)
    return None


NoteOption = Annotated[str, typer.Option(help="why, for the record")]


ByOption = Annotated[str, typer.Option(envvar="USER", help="who decides (recorded in the event)")]
