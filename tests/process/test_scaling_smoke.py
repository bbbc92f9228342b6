"""The scaling and outage measurements (``python -m tests.process.scaling``) produce
their rows, at a size that fits CI: every order ends as expected and none is lost.
What the rows say about speed is for people to read (docs/benchmarks.md), never
asserted here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.process.scaling import measure, outages, render, render_outages

pytestmark = [pytest.mark.services, pytest.mark.slow]


async def test_the_scaling_rows_come_out_with_every_order_ended(tmp_path: Path) -> None:
    rows = await measure(["rabbitmq"], [1, 2], 30, 2.0, tmp_path)
    assert [(r.mode, r.processes) for r in rows] == [
        ("orchestration", 1),
        ("orchestration", 2),
        ("choreography", 1),
        ("choreography", 2),
    ]
    assert all(r.ended_as_expected == r.orders == 30 for r in rows)
    assert all(r.orders_per_s > 0 and r.cpu_ms_per_order > 0 for r in rows)
    assert [r.ratio_to_one for r in rows if r.processes == 1] == [1.0, 1.0]
    assert "| rabbitmq | choreography | 2 | 6 |" in render(rows)


async def test_an_outage_of_a_whole_role_loses_no_order(tmp_path: Path) -> None:
    rows = await outages(["nats"], 40, 2.0, tmp_path, 1.0)
    assert [(r.mode, r.killed) for r in rows] == [
        ("orchestration", "all 2 orchestration workers"),
        ("choreography", "all 2 payment workers"),
    ]
    assert all(r.lost == 0 and r.ended_as_expected == r.orders for r in rows)
    assert "| nats | orchestration | all 2 orchestration workers |" in render_outages(rows, 1.0)
