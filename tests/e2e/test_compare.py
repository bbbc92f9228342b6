"""`coordinator compare`: both modes measured on one workload, reported three ways."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agent_coordinator import MODES, Backoff, RunSettings
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, order_fulfilment_app
from agent_coordinator.lab.compare import ComparisonReport, compare, count_code_lines, expand, read_jsonl
from agent_coordinator.lab.compare_report import charts, render_markdown, render_table, table_rows, write_report
from agent_coordinator.lab.faults import FaultPlan, Outage
from agent_coordinator.shell.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "orders"
FAST = RunSettings(
    tool_retries=Backoff(initial_delay=0.001, max_delay=0.004),
    compensation_retries=Backoff(initial_delay=0.001, max_delay=0.004),
    seed=7,
)
#: Seconds after which the lab gives up on a run (it counts as stuck).
RUN_TIMEOUT = 60.0


def test_code_lines_leave_out_blanks_comments_and_docstrings(tmp_path: Path) -> None:
    source = tmp_path / "change.py"
    source.write_text(
        '"""A module docstring\n\nover lines."""\n\n# a comment\nimport os\n\n\n'
        'def f(x: int) -> int:\n    """Doc."""\n    return (x +\n            1)  # trailing\n'
    )
    assert count_code_lines(source) == (4, 12)


def test_inputs_are_cycled_to_the_number_of_orders() -> None:
    items, problems = read_jsonl(EXAMPLES / "orders.jsonl")
    assert problems == [] and len(items) == 8
    ids = [i["order_id"] for i in expand(ORDER_FULFILMENT, items, 18)]
    assert ids[:9] == [*(i["order_id"] for i in items), "o-1001.1"] and ids[-1] == "o-1002.2"
    assert len(set(ids)) == 18


@pytest.fixture(scope="module")
def report() -> ComparisonReport:
    items, _ = read_jsonl(EXAMPLES / "orders.jsonl")
    return asyncio.run(
        compare(
            order_fulfilment_app,
            items,
            orders=16,
            faults=FaultPlan.parse("seed=3,business=0.2,transient=0.1,misbehave=0.3,bad-answers=3,duplicate"),
            # No run here needs the choreography's deadline to end (nothing is lost, the
            # one outage ends by itself), so the deadline must never fire: a deadline
            # that may (1 s, later 5 s) failed steps of a loaded machine's slow runs and
            # changed the outcomes asserted below. One beyond RUN_TIMEOUT cannot fire
            # before the lab gives up on a run -- and a given-up run counts as stuck,
            # which the tests refuse. What a deadline does to an outage is measured by
            # coordinator compare itself (and by the command test below), not asserted.
            deadline=2 * RUN_TIMEOUT,
            run_timeout=RUN_TIMEOUT,
            outages=[Outage(participant="payment", for_ms=100)],
            settings=FAST,
            source="examples/orders/orders.jsonl",
        )
    )


@pytest.mark.timeout(120)
def test_compare_measures_both_modes_on_every_workload(report: ComparisonReport) -> None:
    labels = ["baseline", "faults", "outage payment:100ms"]
    assert [(m.label, m.mode) for m in report.measurements] == [(label, mode) for label in labels for mode in MODES]
    assert report.violation_count == 0, report.violations
    for m in report.measurements:
        assert sum(m.outcomes.values()) == m.orders == 16
        assert m.latency_ms.p50 is not None and m.throughput > 0
    base = {m.mode: m for m in report.measurements if m.label == "baseline"}
    assert (
        base["orchestration"].outcomes
        == base["choreography"].outcomes
        == {
            "completed": 10,
            "compensated": 6,
            "needs_attention": 0,
            "stuck": 0,
        }
    )
    assert base["orchestration"].checkpoints and base["orchestration"].bus_published is None
    assert base["choreography"].bus_delivered and base["choreography"].checkpoints is None
    assert base["orchestration"].model_calls == base["choreography"].model_calls
    # the short outage: choreography waits and completes. (How many model calls the
    # orchestration had refused, and how many runs the long outage's deadline fails,
    # depend on wall-clock windows and so on the machine's load: the report shows
    # them; asserting them here would be a timed assertion.)
    short = {m.mode: m for m in report.measurements if m.label == "outage payment:100ms"}
    assert short["choreography"].outcomes == base["choreography"].outcomes
    assert any("faults" in line or "business failure" in line for line in report.schedule)


@pytest.mark.timeout(120)
def test_one_failed_order_is_explained_in_both_modes(report: ComparisonReport) -> None:
    orch, chor = report.explain
    assert orch.mode == "orchestration" and chor.mode == "choreography"
    assert orch.order_id == chor.order_id is not None
    assert orch.events == chor.events >= 3  # the same chain of events in either mode
    assert orch.places == 1 and chor.places == len(chor.emitters) >= 2
    assert chor.trace and chor.trace[0].startswith("OrderPlaced")


@pytest.mark.timeout(120)
def test_both_notification_changes_are_measured_and_work(report: ComparisonReport) -> None:
    orch, chor = report.changes
    assert orch.mode == "orchestration" and orch.new_event_types == [
        "CustomerNotified",
        "NotificationFailed",
        "NotificationRetracted",
    ]
    assert chor.mode == "choreography" and chor.new_event_types == [] and chor.existing_files == 0
    assert orch.extra_model_calls_per_order == 1.0 and chor.extra_model_calls_per_order == 0.0
    assert orch.verified == "10 notifications for 10 completed orders"
    assert chor.verified == "10 notifications for 10 completed orders"
    assert 0 < chor.code_lines < orch.code_lines


@pytest.mark.timeout(120)
def test_the_report_renders_as_a_table_json_markdown_html_and_charts(report: ComparisonReport, tmp_path: Path) -> None:
    rows = table_rows(report)
    assert rows[0][0].startswith("outcomes") and len(rows) >= 15
    console = Console(record=True, width=160)
    console.print(render_table(report))
    assert "choreography" in console.export_text()
    assert json.loads(report.model_dump_json())["plan"] == report.plan
    svgs = charts(report)
    assert {"outcomes.svg", "latency.svg", "throughput.svg", "cost.svg"} <= set(svgs)
    assert all(svg.startswith("<svg") and svg.endswith("</svg>") for svg in svgs.values())
    markdown = render_markdown(report, list(svgs), "coordinator compare examples/orders/orders.jsonl")
    assert "| invariant violations | 0 | 0 |" in markdown
    written = write_report(report, tmp_path / "out", command="coordinator compare examples/orders/orders.jsonl")
    names = {p.relative_to(tmp_path / "out").as_posix() for p in written}
    assert {"report.md", "report.html", "report.json", "charts/outcomes.svg"} <= names
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("<svg") == len(svgs) and "<table>" in html


@pytest.mark.timeout(120)
def test_the_command_prints_json_and_exits_zero_without_violations() -> None:
    orders = str(EXAMPLES / "orders.jsonl")
    args = ["compare", orders, "--faults", "seed=1,transient=0.1", "--deadline", "0.2", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["orders"] == 8 and {m["mode"] for m in data["measurements"]} == set(MODES)


def test_the_command_refuses_a_bad_fault_spec() -> None:
    result = CliRunner().invoke(app, ["compare", str(EXAMPLES / "orders.jsonl"), "--faults", "colour=red"])
    assert result.exit_code == 2
    assert "unknown key" in result.stderr
