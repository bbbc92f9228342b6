"""Orchestration on durable checkpoints: SQLite files and the local PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agent_coordinator import RunSettings, SqliteEventLog, WorkflowStatus, open_coordinator
from agent_coordinator.core.settings import Backoff
from agent_coordinator.examples.orders.app import ORDER_FULFILMENT, check_order_effects, order_agents
from agent_coordinator.examples.orders.sandbox import Sandbox, Scenario
from agent_coordinator.graphs.checkpoints import describe_state, open_checkpointer
from agent_coordinator.modes import Orchestration
from tests.e2e.test_orders_e2e import EXPECTED, example_orders

FAST = RunSettings(tool_retries=Backoff(initial_delay=0.001))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each durable checkpointer in turn, as the --state spec that opens it."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'checkpoints.db'}"
    url: str = request.getfixturevalue("postgres_state")
    return url


async def run_examples(state: str, tmp_path: Path, sandbox: Sandbox, orders: list[dict[str, Any]]) -> list[Any]:
    """The orders, checkpointed to ``state`` and recorded in the state directory's
    event log (as the CLI pairs them: the log is the record of every run)."""
    event_log = SqliteEventLog(tmp_path / "events.db")
    async with (
        open_checkpointer(state, state_dir=tmp_path) as checkpointer,
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Orchestration(checkpointer=checkpointer),
            settings=FAST,
            event_log=event_log,
        ) as coordinator,
    ):
        try:
            return await coordinator.run_many([ORDER_FULFILMENT.validate_input(o) for o in orders], concurrency=8)
        finally:
            event_log.close()


async def test_a_second_run_of_the_same_orders_is_answered_from_the_record(state: str, tmp_path: Path) -> None:
    sandbox = Sandbox()
    first = await run_examples(state, tmp_path, sandbox, example_orders())
    requests = sum(c.requests for c in sandbox.counters.values())
    second = await run_examples(state, tmp_path, sandbox, example_orders())
    assert {r.workflow_id: r.status for r in second} == EXPECTED
    assert [r.events for r in first] == [r.events for r in second]
    assert not any(r.recorded for r in first) and all(r.recorded for r in second)
    assert [r.usage for r in first] == [r.usage for r in second]  # the original runs' work
    assert sum(c.requests for c in sandbox.counters.values()) == requests  # nothing called again
    assert check_order_effects(sandbox, second) == []


async def test_five_hundred_orders_at_concurrency_one_hundred(tmp_path: Path) -> None:
    scenario = Scenario.default().model_copy(
        update={
            "catalogue": {
                sku: item.model_copy(update={"stock": 10_000 if item.stock else 0})
                for sku, item in Scenario().catalogue.items()
            }
        }
    )
    base = example_orders()
    orders = [dict(base[i % len(base)], order_id=f"o-{i:04d}") for i in range(500)]
    sandbox = Sandbox(scenario)
    async with (
        open_checkpointer(f"sqlite://{tmp_path / 'cp.db'}", state_dir=tmp_path) as checkpointer,
        sandbox.client() as client,
        open_coordinator(
            ORDER_FULFILMENT,
            agents=order_agents(client=client),
            mode=Orchestration(checkpointer=checkpointer),
            settings=FAST,
        ) as coordinator,
    ):
        results = await coordinator.run_many([ORDER_FULFILMENT.validate_input(o) for o in orders], concurrency=100)
    assert len(results) == 500
    expected = [EXPECTED[base[i % len(base)]["order_id"]] for i in range(500)]
    assert [r.status for r in results] == expected
    assert check_order_effects(sandbox, results) == []
    assert sum(1 for r in results if r.status is WorkflowStatus.COMPLETED) == 500 * 5 // 8


def test_describe_state_hides_the_password(tmp_path: Path) -> None:
    assert describe_state("postgresql://bob:secret@db:5432/x", state_dir=tmp_path) == "postgresql://bob@db:5432/x"
    assert describe_state(None, state_dir=tmp_path) == str(tmp_path / "checkpoints.db")


async def test_an_unknown_state_spec_lists_the_valid_forms(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="use 'sqlite' \\(default\\)"):
        async with open_checkpointer("redis://x", state_dir=tmp_path):
            pass


async def test_an_unreachable_postgres_names_it_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=re.escape("cannot use PostgreSQL at postgresql://bob@127.0.0.1:1/x")) as caught:
        async with open_checkpointer("postgresql://bob:secret@127.0.0.1:1/x", state_dir=tmp_path):
            pass
    assert "secret" not in str(caught.value)
