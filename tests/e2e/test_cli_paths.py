"""Paths and URLs the CLI cannot use: one clear message and exit 2, never a traceback,
and nothing created outside the state directory (issue 12, "Paths and URLs")."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from agent_coordinator.shell.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
ORDERS = str(EXAMPLES / "orders.jsonl")


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def refused(result: Result) -> str:
    """The one message a refused command printed (exit 2, no traceback, nothing on stdout)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert message
    return message


def test_a_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "state"
    a_file.write_text("not a directory")
    message = refused(CliRunner().invoke(app, ["run", ORDERS, "--state-dir", str(a_file)]))
    assert message == (
        f"the state directory {a_file} is a file, not a directory; "
        "point --state-dir (or $COORDINATOR_STATE_DIR) at a directory"
    )


@pytest.mark.parametrize("where", ["/proc/self", "/proc/self/fd", "/proc/no-such-process/state"])
def test_a_state_dir_under_proc_is_refused(where: str) -> None:
    if not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    message = refused(CliRunner().invoke(app, ["run", ORDERS, "--state-dir", where]))
    assert where in message and "point --state-dir (or $COORDINATOR_STATE_DIR) at a writable directory" in message


def test_a_missing_state_dir_is_created_and_its_missing_parents_are_announced(tmp_path: Path) -> None:
    nested = tmp_path / "ci" / "job-5" / "state"
    result = CliRunner().invoke(app, ["run", ORDERS, "--state-dir", str(nested)])
    assert result.exit_code == 0, result.output
    assert f"created the state directory {nested}" in " ".join(result.stderr.split())


def test_a_sqlite_state_whose_directory_does_not_exist_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent-dir"
    spec = f"sqlite://{missing}/x/y.db"
    message = refused(CliRunner().invoke(app, ["run", ORDERS, "--state", spec, "--state-dir", str(tmp_path / "s")]))
    assert f"--state {spec}: the directory {missing}/x does not exist; create it first" in message
    assert not missing.exists()


def test_a_sqlite_state_inside_the_state_directory_gets_its_directories(tmp_path: Path) -> None:
    state = tmp_path / "state"
    spec = f"sqlite://{state}/checkpoints/orders.db"
    result = CliRunner().invoke(app, ["run", ORDERS, "--state", spec, "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    assert (state / "checkpoints" / "orders.db").exists()


def test_a_report_under_a_file_is_refused_before_anything_runs(tmp_path: Path) -> None:
    a_file = tmp_path / "report.txt"
    a_file.write_text("")
    message = refused(CliRunner().invoke(app, ["compare", ORDERS, "--report", str(a_file / "compare")]))
    assert message == (
        f"--report {a_file}/compare is under {a_file}, which is a file, not a directory; "
        "pick a directory for the report"
    )


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
def test_unreachable_services_are_one_message(tmp_path: Path, mode: str) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    result = CliRunner().invoke(
        app, ["run", ORDERS, "--mode", mode, "--services", url, "--state-dir", str(tmp_path / "s")]
    )
    message = refused(result)
    assert message.startswith(f"cannot use the services at --services {url}: ConnectError")
    assert message.endswith("start them with `coordinator sandbox --port 8700` (or point --services at where they run)")


def test_a_corrupt_event_log_is_one_message(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "events.db").write_bytes(b"this is not SQLite" * 100)
    for command in (["run", ORDERS], ["status"], ["events", "export"]):
        message = refused(CliRunner().invoke(app, [*command, "--state-dir", str(state)]))
        assert f"cannot open the event log {state / 'events.db'}" in message
