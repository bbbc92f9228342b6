"""The CLI tells the truth (issue 11, item 4): help texts, choices, --version,
completion, options that do not apply, the status table at 80 columns, graph --png,
and no highlighting inside the values it prints."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agent_coordinator.shell import cli as cli_module
from agent_coordinator.shell import console as console_module
from agent_coordinator.shell import session as session_module
from agent_coordinator.shell.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
ORDERS = str(EXAMPLES / "orders.jsonl")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COORDINATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def words(text: str) -> str:
    return " ".join(text.split())


def help_of(cli: CliRunner, *command: str) -> str:
    result = cli.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return words(re.sub(r"[│╭╮╰╯─]", " ", result.stdout))


# -- help texts -------------------------------------------------------------------------------


def test_help_texts_say_what_the_commands_do(cli: CliRunner) -> None:
    for command in ("worker", "dead-letters"):
        assert "memory:// (default)" not in help_of(cli, command)
        assert "default: $COORDINATOR_BUS, else RabbitMQ" in help_of(cli, command)
    assert "print one JSON line per dead letter" in help_of(cli, "dead-letters")
    assert "print the report as one JSON document" in help_of(cli, "compare")
    assert "one JSON object per run" not in help_of(cli, "compare") + help_of(cli, "dead-letters")
    status_help = help_of(cli, "status")
    assert "the WorkflowApp to run" not in status_help
    assert (
        "the WorkflowApp of the runs, as package.module:attribute (default: the app each run recorded)" in status_help
    )
    assert "``" not in help_of(cli, "sandbox")


def test_mode_supervisor_and_workers_are_choices_in_the_help(cli: CliRunner) -> None:
    text = help_of(cli, "run")
    for choices in ("[orchestration|choreography]", "[rule|model]", "[in-process|external]"):
        assert choices in text


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--mode", "telepathy", "'telepathy' is not a mode; choose one of: orchestration, choreography"),
        ("--supervisor", "oracle", "'oracle' is not a supervisor; choose one of: rule, model"),
        ("--workers", "elves", "'elves' is not a workers setting; choose one of: in-process, external"),
    ],
)
def test_a_value_outside_a_choice_is_refused_with_the_choices(
    cli: CliRunner, option: str, value: str, expected: str
) -> None:
    result = cli.invoke(app, ["run", ORDERS, option, value])
    assert result.exit_code == 2
    assert expected in words(result.stderr)
    assert "Value error" not in result.stderr


def complete(cli: CliRunner, line: str) -> list[str]:
    """What the shell's completion offers for ``line`` (the bash protocol of click)."""
    parts = line.split(" ")
    env = {"_COORDINATOR_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(parts) - 1)}
    result = cli.invoke(app, [], prog_name="coordinator", env=env)
    return result.stdout.split()


def test_the_shell_completes_choices_and_commands(cli: CliRunner) -> None:
    assert complete(cli, "coordinator run x --mode ") == ["orchestration", "choreography"]
    assert complete(cli, "coordinator run x --supervisor m") == ["model"]
    assert complete(cli, "coordinator run x --workers ") == ["in-process", "external"]
    assert {"run", "status", "resume", "events"} <= set(complete(cli, "coordinator "))


def test_completion_can_be_installed(cli: CliRunner) -> None:
    assert "--install-completion" in help_of(cli)
    shown = cli.invoke(app, ["--show-completion", "bash"], prog_name="coordinator")
    assert shown.exit_code == 0
    assert "complete -o default -F _coordinator_completion coordinator" in shown.stdout


def test_version(cli: CliRunner) -> None:
    from importlib.metadata import version

    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"coordinator (agent-coordinator) {version('agent-coordinator')}\n"


# -- options that do not apply ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["--bus", "nats://127.0.0.1:4222"],
            "--bus nats://127.0.0.1:4222 applies to choreography only, and --mode is orchestration; "
            "drop --bus or pass --mode choreography",
        ),
        (["--deadline", "5"], "--deadline 5.0 applies to choreography only"),
        (["--workers", "external"], "--workers external applies to choreography only"),
        (["--outbox", "o.db"], "--outbox o.db applies to choreography only"),
        (
            ["--mode", "choreography", "--state", "memory"],
            "--state memory applies to orchestration only, and --mode is choreography",
        ),
        (["--mode", "choreography", "--supervisor", "model"], "--supervisor model applies to orchestration only"),
    ],
)
def test_options_that_do_not_apply_to_the_mode_are_refused(cli: CliRunner, arguments: list[str], expected: str) -> None:
    result = cli.invoke(app, ["run", ORDERS, *arguments])
    assert result.exit_code == 2, result.output
    assert expected in words(result.stderr)
    assert result.stdout == ""  # nothing ran


def test_a_parameter_the_workflow_does_not_declare_is_refused(cli: CliRunner) -> None:
    result = cli.invoke(app, ["run", ORDERS, "--param", "approval_treshold_cents=1000"])
    assert result.exit_code == 2
    assert words(result.stderr) == (
        "--param approval_treshold_cents: workflow 'order-fulfilment' has no parameter 'approval_treshold_cents'; "
        "it declares: approval_threshold_cents (int)"
    )
    typed = cli.invoke(app, ["run", ORDERS, "--param", "approval_threshold_cents=lots"])
    assert typed.exit_code == 2
    assert "--param approval_threshold_cents='lots': approval_threshold_cents must be an integer" in words(typed.stderr)


def test_resume_and_approve_refuse_a_bus_for_orchestrated_runs(cli: CliRunner) -> None:
    threshold = ["--param", "approval_threshold_cents=1000"]
    assert cli.invoke(app, ["run", ORDERS, *threshold]).exit_code == 4
    approve = cli.invoke(app, ["approve", "o-1002", *threshold, "--bus", "nats://127.0.0.1:4222"])
    assert approve.exit_code == 2
    assert "--bus nats://127.0.0.1:4222 applies to choreography only, and o-1002 is an orchestration run" in words(
        approve.stderr
    )
    resume = cli.invoke(app, ["resume", "o-1002", "--bus", "nats://127.0.0.1:4222"])
    assert resume.exit_code == 2
    assert "applies to choreography runs only, and the runs to resume are orchestrated" in words(resume.stderr)


# -- what the commands print ------------------------------------------------------------------


def test_status_at_80_columns_shows_whole_ids_and_statuses(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_ids = tmp_path / "long.jsonl"
    lines = (EXAMPLES / "orders.jsonl").read_text().splitlines()
    renamed = [line.replace('"o-10', '"order-2026-11-26-express-10') for line in lines[:5]]
    long_ids.write_text("\n".join(renamed) + "\n")
    assert cli.invoke(app, ["run", str(long_ids)]).exit_code == 0
    monkeypatch.setenv("COLUMNS", "80")
    result = cli.invoke(app, ["status"])
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    rows = [line for line in result.stdout.splitlines() if "order-2026-11-26-express-10" in line]
    assert len(rows) == 5
    for row, status in zip(rows, ["completed", "completed", "compensated", "compensated", "compensated"], strict=True):
        assert re.search(rf"order-2026-11-26-express-100\d .*{status}", row), row
    assert "the run column is left out at this width: see --json" in words(result.stdout)


def test_the_run_table_at_80_columns_keeps_whole_ids_and_outcomes(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file run a second time is answered from the record: the widest table, whose
    # id column used to be squeezed to nothing at 80 columns.
    long_ids = tmp_path / "long.jsonl"
    lines = (EXAMPLES / "orders.jsonl").read_text().splitlines()
    long_ids.write_text("\n".join(line.replace('"o-10', '"order-2026-11-26-express-10') for line in lines[:5]) + "\n")
    assert cli.invoke(app, ["run", str(long_ids)]).exit_code == 0
    monkeypatch.setenv("COLUMNS", "80")
    result = cli.invoke(app, ["run", str(long_ids)])
    assert result.exit_code == 0
    table = result.stdout.split("done/undone")[0].splitlines()
    assert max(len(line) for line in table) <= 80
    rows = [line for line in table if "order-2026-11-26-express-10" in line]
    for row, status in zip(rows, ["completed", "completed", "compensated", "compensated", "compensated"], strict=True):
        assert re.search(rf"order-2026-11-26-express-100\d .*{status} .*recorded", row), row
    assert len(rows) == 5
    assert "left out at this width: undone, tokens, ms (see --json)" in words(result.stdout)


def test_graph_png_without_pygraphviz_fails_before_printing(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    real = cli_module.importlib.util.find_spec
    monkeypatch.setattr(
        cli_module.importlib.util, "find_spec", lambda name, *a: None if name == "pygraphviz" else real(name, *a)
    )
    result = cli.invoke(app, ["graph", "--png", "graph.png"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "--png graph.png needs pygraphviz: pip install pygraphviz" in words(result.stderr)


@pytest.fixture
def colour(monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, io.StringIO]:
    """The CLI's consoles as a colour terminal: highlighting would show as escape codes."""
    out, err = io.StringIO(), io.StringIO()
    stdout = Console(file=out, force_terminal=True, color_system="standard", width=200)
    stderr = Console(file=err, force_terminal=True, color_system="standard", width=200)
    for module in (cli_module, console_module, session_module):  # every shell module that prints
        for name, replacement in (("console", stdout), ("errors", stderr)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, replacement)
    return out, err


def test_ids_and_numbers_inside_reasons_are_printed_verbatim(
    cli: CliRunner, colour: tuple[io.StringIO, io.StringIO]
) -> None:
    out, err = colour
    threshold = ["--param", "approval_threshold_cents=1000"]
    assert cli.invoke(app, ["run", ORDERS, "--mode", "choreography", *threshold]).exit_code == 4
    assert "card declined: tok_declined" in out.getvalue()  # the run table's reasons
    out.seek(0)
    out.truncate()
    assert cli.invoke(app, ["status"]).exit_code == 0
    assert "the total 1050 cents is above the approval threshold of 1000 cents" in out.getvalue()
    out.seek(0)
    out.truncate()
    assert cli.invoke(app, ["trace", "o-1005"]).exit_code == 0
    traced = out.getvalue()
    assert "cannot ship to country AQ" in traced
    assert "amount_cents=550, charge_id=" in traced
    assert cli.invoke(app, ["trace", "o-9999"]).exit_code == 1
    assert "no events for 'o-9999' in " in err.getvalue()


def test_trace_shows_event_data_apart_from_what_it_cost(cli: CliRunner) -> None:
    assert cli.invoke(app, ["run", ORDERS]).exit_code == 0
    lines = [line.strip(" │└─") for line in cli.invoke(app, ["trace", "o-1005"]).stdout.splitlines()]
    data = [line for line in lines if line.startswith(("result:", "reason:", "status:"))]
    costs = [line for line in lines if line.startswith("cost:")]
    assert data and costs
    assert not any("model calls" in line for line in data)
    assert "reason: cannot ship to country AQ" in data
    assert "cost: 1 model calls, 1 tool calls" in costs


def test_status_json_names_each_runs_workflow_and_app(cli: CliRunner) -> None:
    assert cli.invoke(app, ["run", ORDERS]).exit_code == 0
    row = json.loads(cli.invoke(app, ["status", "--json"]).stdout.splitlines()[0])
    assert (
        row["workflow"] == "order-fulfilment" and row["app"] == "agent_coordinator.examples.orders:order_fulfilment_app"
    )
