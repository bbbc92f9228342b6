"""The `coordinator` command line, run in-process on the example files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_coordinator.shell.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
def test_run_prints_every_order_and_a_summary(cli: CliRunner, mode: str) -> None:
    result = cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--mode", mode])
    assert result.exit_code == 0, result.output
    assert "8 runs: 5 completed, 3 compensated\n" in result.stdout
    for order_id in [f"o-100{n}" for n in range(1, 9)]:
        assert order_id in result.stdout
    assert "o-1004 compensated: step 'payment' failed: card declined: tok_declined" in result.stdout


def test_run_json_gives_one_object_per_order(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--json", "--mode", "choreography"])
    assert result.exit_code == 0, result.output
    decoder = json.JSONDecoder()
    text, runs = result.stdout.strip(), []
    while text:
        obj, end = decoder.raw_decode(text)
        runs.append(obj)
        text = text[end:].strip()
    # One line per order as it ends (so in the order they end, not the file's).
    by_id = {r["workflow_id"]: r for r in runs}
    assert [by_id[f"o-100{n}"]["status"] for n in range(1, 9)] == ["completed"] * 2 + ["compensated"] * 3 + [
        "completed"
    ] * 3
    assert by_id["o-1006"]["tool_calls"] == 5 and by_id["o-1006"]["model_calls"] == 3
    assert not any(r["recorded"] for r in runs)


def test_bad_lines_are_named_and_the_good_ones_still_run(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", str(EXAMPLES / "orders-invalid.jsonl")])
    assert result.exit_code == 1
    errors = " ".join(result.stderr.split())
    assert "orders-invalid.jsonl:2: field `items.0.sku`: unknown SKU 'SKU-DURIAN'" in errors
    assert "orders-invalid.jsonl:3: field `items.0.quantity`: Input should be greater than 0" in errors
    assert "orders-invalid.jsonl:4: field `shipping_address`: Field required" in errors
    assert "orders-invalid.jsonl:5: not valid JSON" in errors
    assert "2 runs: 1 completed, 1 compensated; 4 input problem(s)" in result.stdout


def test_a_repeated_order_id_is_an_input_problem(cli: CliRunner, tmp_path: Path) -> None:
    line = (EXAMPLES / "orders.jsonl").read_text().splitlines()[0]
    orders = tmp_path / "twice.jsonl"
    orders.write_text(f"{line}\n{line}\n")
    result = cli.invoke(app, ["run", str(orders)])
    assert result.exit_code == 1
    assert "twice.jsonl:2: field `order_id`: 'o-1001' was already used on line 1" in " ".join(result.stderr.split())
    assert "1 runs: 1 completed" in result.stdout


def test_trace_explains_a_compensated_order(cli: CliRunner) -> None:
    assert cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--mode", "choreography"]).exit_code == 0
    result = cli.invoke(app, ["trace", "o-1005"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    known = {"OrderPlaced", "InventoryReserved", "PaymentProcessed", "ShipmentFailed", "PaymentRefunded"}
    known |= {"InventoryReleased", "OrderCancelled"}
    types = [word for line in lines for word in line.split() if word in known]
    assert types == [
        "OrderPlaced",
        "InventoryReserved",
        "PaymentProcessed",
        "ShipmentFailed",
        "PaymentRefunded",
        "InventoryReleased",
        "OrderCancelled",
    ]
    assert "cannot ship to country AQ" in result.stdout
    as_json = cli.invoke(app, ["trace", "o-1005", "--json"])
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["type"] for e in events][-1] == "OrderCancelled"
    assert all(e["subject"] == "o-1005" and e["traceparent"].startswith("00-") for e in events)


def test_trace_of_an_unknown_order_says_so(cli: CliRunner) -> None:
    assert cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl")]).exit_code == 0
    result = cli.invoke(app, ["trace", "o-9999"])
    assert result.exit_code == 1
    assert "no events for 'o-9999'" in result.stderr


def test_an_unknown_mode_lists_the_modes(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--mode", "telepathy"])
    assert result.exit_code == 2
    assert "orchestration, choreography" in result.stderr


# -- exit codes a CI job can gate on -----------------------------------------------------


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
def test_runs_that_wait_for_approval_exit_4_and_a_rerun_answers_from_the_record(cli: CliRunner, mode: str) -> None:
    threshold = ["--param", "approval_threshold_cents=1000"]  # o-1002 (1,050 cents) waits
    result = cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--mode", mode, *threshold])
    assert result.exit_code == 4, result.output
    assert "o-1002 waits for approval" in result.stdout
    again = cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--mode", mode, *threshold, "--json"])
    assert again.exit_code == 4, again.output
    rows = {r["workflow_id"]: r for r in map(json.loads, again.stdout.splitlines())}
    assert rows["o-1002"]["status"] == "awaiting_approval" and not rows["o-1002"]["recorded"]
    assert all(r["recorded"] for k, r in rows.items() if k != "o-1002")
    assert rows["o-1001"]["model_calls"] == 3  # the original run's work, labelled as recorded
    approved = cli.invoke(app, ["approve", "o-1002", "--by", "alice", *threshold])
    assert approved.exit_code == 0, approved.output
    assert "1 runs: 1 completed" in approved.stdout


def test_fail_on_compensated_exits_3_for_a_ci_job_that_expects_every_run_to_complete(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl"), "--fail-on", "compensated"])
    assert result.exit_code == 3, result.output
    assert "8 runs: 5 completed, 3 compensated" in result.stdout


def test_resuming_a_run_nobody_knows_exits_3_naming_it(cli: CliRunner) -> None:
    assert cli.invoke(app, ["run", str(EXAMPLES / "orders.jsonl")]).exit_code == 0
    result = cli.invoke(app, ["resume", "o-9999"])
    assert result.exit_code == 3
    assert "cannot resume 'o-9999': no run of it in" in " ".join(result.stderr.split())
    assert cli.invoke(app, ["resume"]).stdout.strip() == "nothing in flight to resume"


def test_the_exit_codes_are_in_the_help(cli: CliRunner) -> None:
    text = " ".join(cli.invoke(app, ["--help"]).stdout.split())
    assert "Exit codes: 0 every run reached a business outcome" in text
    assert "4 runs wait for approval" in text
