"""Reproducible event logs, byte for byte (issue 11, item 6).

Through the CLI, each run in a fresh state directory: with ``--seed`` and
``--logical-clock`` the run id, ``runs.started`` and ``coordinator events export``
are the same every time, and the export is the same in both modes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_coordinator.core.eventlog import SqliteEventLog
from agent_coordinator.shell.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
MODES = ("orchestration", "choreography")


def run_and_export(tmp_path: Path, mode: str, attempt: int) -> bytes:
    state = tmp_path / f"{mode}-{attempt}"
    cli = CliRunner()
    reproducible = ["--seed", "7", "--logical-clock"]
    ran = cli.invoke(
        app, ["run", str(EXAMPLES / "orders.jsonl"), "--mode", mode, *reproducible, "--json", "--state-dir", str(state)]
    )
    assert ran.exit_code == 0, ran.output
    exported = cli.invoke(app, ["events", "export", "--state-dir", str(state)])
    assert exported.exit_code == 0, exported.output
    return exported.stdout_bytes


def assert_reproducible(tmp_path: Path, runs_per_mode: int) -> str:
    digests = {
        mode: {hashlib.sha256(run_and_export(tmp_path, mode, i)).hexdigest() for i in range(runs_per_mode)}
        for mode in MODES
    }
    assert all(len(found) == 1 for found in digests.values()), digests
    assert digests["orchestration"] == digests["choreography"], digests
    return next(iter(digests["orchestration"]))


def test_events_export_is_byte_identical_across_runs_and_modes(tmp_path: Path) -> None:
    assert_reproducible(tmp_path, runs_per_mode=3)


@pytest.mark.slow
def test_events_export_is_byte_identical_across_20_runs_per_mode(tmp_path: Path) -> None:
    assert_reproducible(tmp_path, runs_per_mode=20)


def test_the_export_is_canonical_json_lines_by_workflow_id_then_causal_order(tmp_path: Path) -> None:
    lines = run_and_export(tmp_path, "choreography", 0).decode().splitlines()
    events = [json.loads(line) for line in lines]
    subjects = [e["subject"] for e in events]
    assert subjects == sorted(subjects) and len(set(subjects)) == 8
    for subject in set(subjects):
        chain = [e for e in events if e["subject"] == subject]
        seen: set[str] = set()
        for event in chain:  # every cause comes before its effects
            assert event.get("causationid") is None or event["causationid"] in seen
            seen.add(event["id"])
        assert chain[0]["type"] == "OrderPlaced" and chain[-1]["type"] in ("OrderCompleted", "OrderCancelled")


def test_seed_derives_the_run_id_and_the_logical_clock_stamps_the_start(tmp_path: Path) -> None:
    records = []
    for attempt in range(2):
        run_and_export(tmp_path, "orchestration", attempt)
        log = SqliteEventLog(tmp_path / f"orchestration-{attempt}" / "events.db")
        try:
            records.append(log.all_runs())
        finally:
            log.close()
    assert records[0] == records[1]
    (record,) = records[0]
    assert record.run_id.startswith("run-") and record.started == "2026-01-01T00:00:00.000Z"


def test_an_explicit_run_id_is_used_and_one_that_stands_for_another_run_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cli = CliRunner()
    orders = str(EXAMPLES / "orders.jsonl")
    first = cli.invoke(app, ["run", orders, "--run-id", "nightly-42", "--state-dir", str(state)])
    assert first.exit_code == 0, first.output
    assert "(run nightly-42)" in first.stdout
    clash = cli.invoke(
        app, ["run", orders, "--run-id", "nightly-42", "--mode", "choreography", "--state-dir", str(state)]
    )
    assert clash.exit_code == 2
    assert (
        "run id nightly-42 already stands for an orchestration run of "
        "agent_coordinator.examples.orders:order_fulfilment_app" in " ".join(clash.stderr.split())
    )
    bad = cli.invoke(app, ["run", orders, "--run-id", "two words", "--state-dir", str(state)])
    assert bad.exit_code == 2 and "--run-id 'two words' is not a usable run id" in " ".join(bad.stderr.split())
