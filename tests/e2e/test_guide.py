"""docs/guide.md runs as written: it shows examples/travel/ verbatim, and its command
lines -- run from a directory holding the files as ``mypkg/travel/`` -- give what it
says, in both modes and (slow, on the machine's brokers) with worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_coordinator.shell.cli import app as cli
from tests.services import NATS_URL, RABBITMQ_URL, require_service

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide.md"
TRAVEL = ROOT / "examples" / "travel"
COORDINATOR = Path(sys.executable).with_name("coordinator")
APP = "mypkg.travel:app"

RUN = "coordinator run trips.jsonl --workflow mypkg.travel:app"
RUN_CHOREOGRAPHY = f"{RUN} --mode choreography --state-dir .choreography"
WORKERS = [
    f"coordinator worker {agent} --bus $BUS --workflow mypkg.travel:app &"
    for agent in ("airline", "hotelier", "rental")
]
RUN_ON_BROKER = f"{RUN} --mode choreography --bus $BUS --workers external"
OUTCOMES = [
    "t-2 compensated: step 'hotel' failed: no hotel rooms in Atlantis",
    "t-3 compensated: step 'car' failed: no cars in Venice: its streets are canals",
    "4 runs: 2 completed, 2 compensated",
]


def guide() -> str:
    return GUIDE.read_text()


@pytest.mark.parametrize(
    ("name", "fence"),
    [
        ("ledger.py", "python"),
        ("trip.py", "python"),
        ("app.py", "python"),
        ("__init__.py", "python"),
        ("trips.jsonl", "json"),
    ],
)
def test_the_guide_shows_the_travel_example_verbatim(name: str, fence: str) -> None:
    text = (TRAVEL / name).read_text()
    assert f"```{fence}\n{text}```" in guide(), f"copy examples/travel/{name} into docs/guide.md again"


def test_the_guides_test_is_a_tested_one() -> None:
    tests = (ROOT / "tests" / "e2e" / "test_travel_app.py").read_text()
    shown = tests[tests.index("@pytest.fixture") :]
    assert f"```python\n{shown}```" in guide(), "copy tests/e2e/test_travel_app.py's tests into docs/guide.md again"


def test_the_commands_tested_here_are_the_guides() -> None:
    for command in [RUN, RUN_CHOREOGRAPHY, *WORKERS, RUN_ON_BROKER, "coordinator trace t-3"]:
        assert f"$ {command}\n" in guide(), f"docs/guide.md no longer shows `{command}`; update tests/e2e/test_guide.py"
    for line in OUTCOMES:
        assert line in guide()


# -- the user's directory: mypkg/travel/ and trips.jsonl -------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory laid out as the guide says, holding the example's files."""
    package = tmp_path / "mypkg" / "travel"
    package.mkdir(parents=True)
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    for name in ("__init__.py", "ledger.py", "trip.py", "app.py"):
        shutil.copy(TRAVEL / name, package / name)
    shutil.copy(TRAVEL / "trips.jsonl", tmp_path / "trips.jsonl")
    return tmp_path


def environment(project: Path, **extra: str) -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")}
    return {**variables, "PYTHONPATH": str(project), "COLUMNS": "200", **extra}


def coordinator(command: str, project: Path, **substitutions: str) -> list[str]:
    """``command`` as the guide writes it, as an argument list for the venv's script."""
    for name, value in substitutions.items():
        command = command.replace(f"${name}", value)
    words = shlex.split(command.removesuffix(" &"))
    assert words[0] == "coordinator"
    return [str(COORDINATOR), *words[1:]]


@pytest.mark.slow  # the guide's command lines, each a coordinator process
def test_the_guides_runs_in_both_modes(project: Path) -> None:
    for command in (RUN, RUN_CHOREOGRAPHY):
        done = subprocess.run(
            coordinator(command, project), cwd=project, env=environment(project), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        for line in OUTCOMES:
            assert line in done.stdout, done.stdout
        assert "inconsistent" not in done.stdout + done.stderr
        assert "answered from the record" not in done.stdout  # a state directory of its own: it ran


@contextlib.contextmanager
def inside(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """The command run in-process, from ``project``, with it on the path (as PYTHONPATH puts it)."""
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delenv("COORDINATOR_STATE_DIR", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    yield CliRunner()
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]  # the next test's mypkg is another directory


def test_without_the_package_on_the_path_the_command_says_what_it_cannot_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COORDINATOR_STATE_DIR", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    shutil.copy(TRAVEL / "trips.jsonl", tmp_path / "trips.jsonl")
    result = CliRunner().invoke(cli, shlex.split(RUN)[1:])
    assert result.exit_code == 2
    message = "cannot import 'mypkg.travel' for --workflow 'mypkg.travel:app': No module named 'mypkg'"
    assert message in result.output and message in guide()


def test_the_trace_and_the_event_log_are_the_same_in_both_modes(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with inside(project, monkeypatch) as runner:
        exports = []
        for mode in ("orchestration", "choreography"):
            state = f".{mode}"
            result = runner.invoke(
                cli, [*shlex.split(RUN)[1:], "--mode", mode, "--seed", "7", "--logical-clock", "--state-dir", state]
            )
            assert result.exit_code == 0, result.output
            exports.append(runner.invoke(cli, ["events", "export", "--state-dir", state]).stdout)
            trace = runner.invoke(cli, ["trace", "t-3", "--state-dir", state]).stdout
            chain = ["TripStarted", "FlightSucceeded", "HotelSucceeded", "CarFailed", "HotelCompensated"]
            chain += ["FlightCompensated", "TripCancelled"]
            positions = [trace.index(event) for event in chain]
            assert positions == sorted(positions), trace
            assert "booking_id=flight-e0d04a8e" in trace and "booking_id=flight-e0d04a8e" in guide()
        assert exports[0] == exports[1] and exports[0].count("\n") == 22


def test_a_long_stay_waits_for_a_person(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with inside(project, monkeypatch) as runner:
        waiting = runner.invoke(cli, [*shlex.split(RUN)[1:], "--param", "long_stay_nights=7"])
        assert waiting.exit_code == 4, waiting.output
        assert "t-4 waits for approval: coordinator approve t-4 --by NAME (or reject)" in waiting.output
        approve = 'coordinator approve t-4 --by alice --note "a long trip, known traveller"'
        assert f"$ {approve}\n" in guide()
        approved = runner.invoke(cli, shlex.split(approve)[1:])
        assert approved.exit_code == 0, approved.output
        assert "1 runs: 1 completed, 0 compensated" in approved.output
        refused = runner.invoke(cli, [*shlex.split(RUN)[1:], "--param", "long_stay_nights=a week"])
        assert refused.exit_code != 0 and "long_stay_nights must be an integer" in refused.output


# -- workers on a broker (slow) ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_bus(name: str) -> AsyncIterator[str]:
    """A bus URL whose exchange and queues (RabbitMQ) or stream (NATS) are this test's
    own, deleted afterwards."""
    require_service(name)
    tag = uuid.uuid4().hex[:10]
    if name == "rabbitmq":
        prefix = f"guide-{tag}."
        yield f"{RABBITMQ_URL}?exchange=guide-{tag}&queue_prefix={prefix}"
        import aio_pika

        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            groups = [f"trip.{p}" for p in ("airline", "hotelier", "rental", "owner", "projection")]
            delays = ("", *(f".retry.{500 * 2**n}ms" for n in range(5)))
            for queue in [*(f"{prefix}{g}{d}" for g in groups for d in delays), f"{prefix}dead-letters"]:
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    await channel.queue_delete(queue)
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.exchange_delete(f"guide-{tag}")
        finally:
            await connection.close()
    else:
        stream = f"GUIDE_{tag}"
        yield f"{NATS_URL}?stream={stream}&subject_prefix=guide-{tag}"
        import nats
        import nats.errors

        client = await nats.connect(NATS_URL)
        try:
            for name in (stream, f"{stream}_DLQ"):
                with contextlib.suppress(nats.errors.Error):
                    await client.jetstream().delete_stream(name)
        finally:
            await client.close()


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.parametrize("broker", ["rabbitmq", "nats"])
async def test_the_guides_workers_book_the_trips_on_a_broker(project: Path, broker: str) -> None:
    async with fresh_bus(broker) as bus:
        env = environment(project)
        logs = {}
        workers = []
        try:
            for command in WORKERS:
                log = project / f"{command.split()[2]}.log"
                logs[command] = log
                with log.open("wb") as output:
                    workers.append(
                        await asyncio.create_subprocess_exec(
                            *coordinator(command, project, BUS=bus), cwd=project, env=env, stdout=output, stderr=output
                        )
                    )
            async with asyncio.timeout(60):
                while not all("ready on" in log.read_text() for log in logs.values()):
                    for worker, log in zip(workers, logs.values(), strict=True):
                        assert worker.returncode is None, log.read_text()
                    await asyncio.sleep(0.05)  # polling the workers' output, bounded by the timeout
            run = await asyncio.create_subprocess_exec(
                *coordinator(RUN_ON_BROKER, project, BUS=bus),
                cwd=project,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            async with asyncio.timeout(120):
                output = (await run.communicate())[0].decode()
            assert run.returncode == 0, output
            for line in OUTCOMES:
                assert line in output, output
            assert "inconsistent" not in output  # the run's check sees what the workers booked
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.terminate()
            for worker, log in zip(workers, logs.values(), strict=False):
                async with asyncio.timeout(60):
                    code = await worker.wait()
                assert code == 0, log.read_text()
