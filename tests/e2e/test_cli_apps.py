"""Commands that act on recorded runs load each run's own app (issue 11, item 3).

The travel workflow (``tests.travel_app``) is "another workflow": its runs must
never be read, resumed or decided as orders, and a run whose app cannot be imported
is named with the app it needs and left alone.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_coordinator.core.eventlog import SqliteEventLog
from agent_coordinator.core.events import EventFactory, LogicalClock
from agent_coordinator.core.saga import Saga
from agent_coordinator.shell.cli import app
from tests.e2e.test_custom_workflow import TRAVEL
from tests.travel_app import SPEC as TRAVEL_APP

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
ORDER_APP = "agent_coordinator.examples.orders:order_fulfilment_app"
GHOST_APP = "ghost_package.flows:app"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "state"


@pytest.fixture
def trips(tmp_path: Path) -> Path:
    path = tmp_path / "trips.jsonl"
    path.write_text(
        '{"trip_id": "t-1", "route": "LIS-OSL", "city": "Oslo", "nights": 3}\n'
        '{"trip_id": "t-2", "route": "LIS-ATL", "city": "Atlantis", "nights": 1}\n'
    )
    return path


def status_rows(cli: CliRunner) -> dict[str, dict[str, str]]:
    result = cli.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    return {row["workflow_id"]: row for row in map(json.loads, result.stdout.splitlines())}


def start_by_hand(
    state: Path, run_id: str, *, workflow: str, app_spec: str | None, event_type: str, subject: str
) -> None:
    """A run that began and stopped at its start event (a crash), written to the log
    as a run of ``app_spec`` would have written it."""
    log = SqliteEventLog(state / "events.db")
    try:
        log.begin_run(run_id, workflow=workflow, mode="orchestration", app=app_spec)
        start = EventFactory(clock=LogicalClock()).event(
            event_type, subject=subject, source=f"workflow/{workflow}", data={"input": {}, "results": {}}
        )
        log.append([start], run_id=run_id)
    finally:
        log.close()


def test_every_run_records_the_app_that_ran_it(state: Path, trips: Path) -> None:
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(trips), "--workflow", TRAVEL_APP]).exit_code == 0
    assert cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl")]).exit_code == 0
    log = SqliteEventLog(state / "events.db")
    try:
        apps = {(record.workflow, record.app) for record in log.all_runs()}
    finally:
        log.close()
    assert apps == {("travel", TRAVEL_APP), ("order-fulfilment", ORDER_APP)}


def test_status_reads_ended_runs_of_another_workflow_with_their_own_app(state: Path, trips: Path) -> None:
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(trips), "--workflow", TRAVEL_APP]).exit_code == 0
    assert cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl")]).exit_code == 0
    rows = status_rows(cli)
    assert (rows["t-1"]["status"], rows["t-1"]["workflow"], rows["t-1"]["app"]) == ("completed", "travel", TRAVEL_APP)
    assert rows["t-2"]["status"] == "compensated"  # not "in flight", as read with the order workflow
    assert rows["o-1001"]["status"] == "completed" and rows["o-1001"]["app"] == ORDER_APP
    table = cli.invoke(app, ["status"])
    assert "in flight" not in table.stdout


def test_resume_leaves_ended_runs_of_another_workflow_alone(state: Path, trips: Path) -> None:
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(trips), "--workflow", TRAVEL_APP]).exit_code == 0
    result = cli.invoke(app, ["resume"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "nothing in flight to resume"


def test_resume_carries_on_a_run_of_another_workflow_with_its_app(state: Path, trips: Path) -> None:
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(trips), "--workflow", TRAVEL_APP]).exit_code == 0  # makes the state
    log = SqliteEventLog(state / "events.db")
    try:
        log.begin_run("run-crashed", workflow="travel", mode="orchestration", app=TRAVEL_APP)
        saga = Saga(TRAVEL, factory=EventFactory())
        trip = {"trip_id": "t-9", "route": "LIS-OSL", "city": "Oslo", "nights": 2}
        log.append([saga.started("t-9", trip)], run_id="run-crashed")
    finally:
        log.close()
    assert status_rows(cli)["t-9"]["status"] == "in flight"
    result = cli.invoke(app, ["resume", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = map(json.loads, result.stdout.splitlines())
    assert (row["workflow_id"], row["status"], row["steps_done"]) == ("t-9", "completed", 2)
    assert status_rows(cli)["t-9"]["status"] == "completed"


def test_a_run_whose_app_cannot_be_imported_is_named_with_it_and_left_alone(state: Path, trips: Path) -> None:
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(trips), "--workflow", TRAVEL_APP]).exit_code == 0
    start_by_hand(state, "run-ghost", workflow="ghost", app_spec=GHOST_APP, event_type="GhostSummoned", subject="g-1")

    rows = status_rows(cli)
    assert rows["g-1"]["status"] == "unknown" and rows["g-1"]["app"] == GHOST_APP
    assert GHOST_APP in rows["g-1"]["problem"] and "cannot be loaded" in rows["g-1"]["problem"]
    assert rows["t-1"]["status"] == "completed"
    table = cli.invoke(app, ["status"])
    assert f"g-1: needs the app {GHOST_APP}, which cannot be loaded" in " ".join(table.stdout.split())

    resumed = cli.invoke(app, ["resume"])
    assert resumed.exit_code == 3
    assert f"cannot resume 'g-1': needs the app {GHOST_APP}" in " ".join(resumed.stderr.split())
    assert "No module named 'ghost_package'; left alone" in " ".join(resumed.stderr.split())
    log = SqliteEventLog(state / "events.db")
    try:
        assert [e.type for e in log.events("g-1")] == ["GhostSummoned"]  # untouched
    finally:
        log.close()

    decided = cli.invoke(app, ["approve", "g-1"])
    assert decided.exit_code == 2
    assert GHOST_APP in " ".join(decided.stderr.split())
    traced = cli.invoke(app, ["trace", "g-1"])
    assert traced.exit_code == 0 and GHOST_APP in " ".join(traced.stdout.split())


def test_a_run_of_another_workflow_recorded_without_its_app_is_not_taken_for_an_order(state: Path) -> None:
    start_by_hand(state, "run-old", workflow="travel", app_spec=None, event_type="TripRequested", subject="t-5")
    cli = CliRunner()
    row = status_rows(cli)["t-5"]
    assert row["status"] == "unknown" and "did not record its app; pass --workflow" in row["problem"]
    resumed = cli.invoke(app, ["resume"])
    assert resumed.exit_code == 3 and "cannot resume 't-5'" in resumed.stderr
    # Told which app it is, the command can read it.
    told = cli.invoke(app, ["status", "--json", "--workflow", TRAVEL_APP])
    assert json.loads(told.stdout)["status"] == "in flight"


def test_trace_names_the_workflow_app_and_status_of_the_run(state: Path, trips: Path) -> None:
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(trips), "--workflow", TRAVEL_APP]).exit_code == 0
    result = cli.invoke(app, ["trace", "t-2"])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("t-2: compensated (workflow travel, app tests.travel_app:travel_app, orchestration mode")


def test_an_event_log_written_before_apps_were_recorded_is_migrated(state: Path) -> None:
    state.mkdir(parents=True)
    old = sqlite3.connect(state / "events.db")
    old.executescript(
        """CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, id TEXT NOT NULL,
               subject TEXT NOT NULL, type TEXT NOT NULL, causation_id TEXT, body TEXT NOT NULL, UNIQUE (run_id, id));
           CREATE TABLE runs (run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, mode TEXT NOT NULL,
               started TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
           INSERT INTO runs (run_id, workflow, mode) VALUES ('run-old', 'order-fulfilment', 'orchestration');"""
    )
    old.commit()
    old.close()
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--run-id", "run-new"]).exit_code == 0
    log = SqliteEventLog(state / "events.db")
    try:
        assert log.run("run-old") is not None and log.run("run-old").app is None  # type: ignore[union-attr]
        assert log.run("run-new").app == ORDER_APP  # type: ignore[union-attr]
    finally:
        log.close()
    assert status_rows(cli)["o-1001"]["status"] == "completed"


def test_parameters_are_the_ones_each_app_declares(state: Path, trips: Path) -> None:
    cli = CliRunner()
    result = cli.invoke(app, ["run", str(trips), "--workflow", TRAVEL_APP, "--param", "approval_threshold_cents=1"])
    assert result.exit_code == 2
    assert "workflow 'travel' has no parameter 'approval_threshold_cents'; it declares: max_nights (int)" in " ".join(
        result.stderr.split()
    )
    assert cli.invoke(app, ["run", str(trips), "--workflow", TRAVEL_APP, "--param", "max_nights=7"]).exit_code == 0
