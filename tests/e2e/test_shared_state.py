"""Shared state on PostgreSQL through the command line: one URL (``--state`` or
``$COORDINATOR_STATE``) for the event log, runs, approvals, participant store and
checkpoints, in either mode; ``coordinator migrate``; and the migrations' lock."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_coordinator.bus.outbox import PARTICIPANT_STORE_MIGRATIONS
from agent_coordinator.core.postgres import EVENT_LOG_MIGRATIONS, migrate, schema_versions
from agent_coordinator.shell.cli import app
from agent_coordinator.shell.options import state_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
ORDERS = str(EXAMPLES / "orders.jsonl")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COORDINATOR_STATE", raising=False)
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.services
def test_migrate_makes_every_table_once_and_then_finds_them_up_to_date(cli: CliRunner, postgres_state: str) -> None:
    first = cli.invoke(app, ["migrate", "--state", postgres_state])
    assert first.exit_code == 0, first.output
    assert "event_log: version 1 (migrated from nothing)" in first.stdout
    assert "participant_store: version 1 (migrated from nothing)" in first.stdout
    assert "checkpoints: LangGraph version" in first.stdout and "(migrated from nothing)" in first.stdout
    again = cli.invoke(app, ["migrate", "--state", postgres_state])
    assert again.exit_code == 0, again.output
    assert again.stdout.count("(up to date)") == 3, again.stdout


@pytest.mark.services
def test_workers_starting_together_migrate_once_under_the_lock(postgres_state: str) -> None:
    # Without the advisory lock, concurrent CREATE TABLE IF NOT EXISTS fails on
    # pg_type's unique index for all but one of them.
    migrations = (*EVENT_LOG_MIGRATIONS, *PARTICIPANT_STORE_MIGRATIONS)
    with ThreadPoolExecutor(8) as pool:
        applied = list(pool.map(lambda _: migrate(postgres_state, migrations), range(8)))
    assert sorted(len(a) for a in applied) == [0] * 7 + [2]  # one did the work, the others found it done
    assert schema_versions(postgres_state) == {"event_log": 1, "participant_store": 1}


@pytest.mark.services
@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
def test_a_run_on_postgresql_state_is_seen_by_status_trace_export_and_approve(
    cli: CliRunner, postgres_state: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threshold = ["--param", "approval_threshold_cents=1000"]  # o-1002 (1,050 cents) waits
    result = cli.invoke(app, ["run", ORDERS, "--mode", mode, "--state", postgres_state, *threshold])
    assert result.exit_code == 4, result.output
    assert "o-1002 waits for approval" in result.stdout
    assert not (tmp_path / "state" / "events.db").exists()  # the log is the database's
    # Every later command finds the state through the environment, as a deployment sets it.
    monkeypatch.setenv("COORDINATOR_STATE", postgres_state)
    status = {row["workflow_id"]: row for row in lines(cli.invoke(app, ["status", "--json"]).stdout)}
    assert len(status) == 8 and status["o-1002"]["status"] == "awaiting_approval"
    assert status["o-1004"]["status"] == "compensated" and status["o-1004"]["mode"] == mode
    approved = cli.invoke(app, ["approve", "o-1002", "--by", "alice", *threshold])
    assert approved.exit_code == 0, approved.output
    assert "1 runs: 1 completed" in approved.stdout
    trace = [e["type"] for e in lines(cli.invoke(app, ["trace", "o-1002", "--json"]).stdout)]
    assert trace[-1] == "OrderCompleted" and "PaymentApproved" in trace
    exported = cli.invoke(app, ["events", "export"]).stdout.splitlines()
    assert len(exported) == len(set(exported)) and sum('"OrderCompleted"' in line for line in exported) == 5
    rerun = cli.invoke(app, ["run", ORDERS, "--mode", mode, *threshold, "--json"])
    assert rerun.exit_code == 0, rerun.output
    assert all(row["recorded"] for row in lines(rerun.stdout))  # answered from the shared record


@pytest.mark.services
def test_reset_leaves_a_database_alone_and_says_how(cli: CliRunner, postgres_state: str) -> None:
    result = cli.invoke(app, ["reset", "--yes", "--state", postgres_state])
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "reset does not touch" in message and "postgresql://postgres@" in message


def test_migrate_without_shared_state_says_what_it_needs(cli: CliRunner) -> None:
    result = cli.invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert "migrate needs shared state: pass --state postgresql://" in " ".join(result.stderr.split())


def test_an_unreachable_database_is_named_without_its_password(cli: CliRunner) -> None:
    url = "postgresql://bob:s3cret@127.0.0.1:1/nowhere"
    result = cli.invoke(app, ["status", "--state", url])
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "cannot open the event log: cannot use PostgreSQL at postgresql://bob@127.0.0.1:1/nowhere" in message
    assert "s3cret" not in result.output


def test_the_environment_gives_shared_state_to_both_modes_and_checkpoints_to_orchestration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COORDINATOR_STATE", "sqlite:///var/lib/c.db")
    assert state_spec(None, mode="orchestration") == "sqlite:///var/lib/c.db"
    assert state_spec(None, mode="choreography") is None  # a choreography worker ignores a checkpoint file
    assert state_spec("memory", mode="orchestration") == "memory"  # the flag wins
    monkeypatch.setenv("COORDINATOR_STATE", "postgresql://db/x")
    assert state_spec(None, mode="choreography") == "postgresql://db/x"


def test_a_checkpoint_file_is_refused_for_choreography_naming_what_it_is(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", ORDERS, "--mode", "choreography", "--state", "sqlite"])
    assert result.exit_code == 2
    assert "--state sqlite applies to orchestration only" in " ".join(result.stderr.split())
