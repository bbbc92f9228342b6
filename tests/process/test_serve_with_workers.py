"""``coordinator serve`` with workers in other processes, in both modes, on
PostgreSQL state and RabbitMQ: the example orders go in through the API, the
workers carry them, the API lists every run and its outcome, and an approval given
through the API carries the waiting order to its end.

* orchestration: ``serve --bus ... --state postgresql://...`` queues the runs for two
  ``coordinator worker --mode orchestration`` processes;
* choreography: ``serve --mode choreography --workers external`` hosts only the owner;
  one ``coordinator worker AGENT`` process per agent does the work.

Every process runs in an empty directory of its own and leaves it empty.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.conftest import postgres_schema
from tests.e2e.test_orders_e2e import EXPECTED, example_orders
from tests.process.test_broker_workers import AGENTS, Cluster, Where, broker, sandbox, stop_all, write_world
from tests.process.test_dashboard_browser import OPERATOR, server

pytestmark = [pytest.mark.services, pytest.mark.slow]

WAIT = 60.0
OPERATOR_AUTH = {"Authorization": f"Bearer {OPERATOR}"}


async def statuses(api: httpx.AsyncClient, count: int, **until: str) -> dict[str, str]:
    """Poll the API until ``count`` runs have stopped moving (and the runs in ``until``,
    ``o_1002`` for o-1002, have those statuses)."""
    async with asyncio.timeout(WAIT):
        while True:
            runs = (await api.get("/runs", headers=OPERATOR_AUTH)).json()["runs"]
            found = {r["workflow_id"]: r["status"] for r in runs}
            arrived = all(found.get(k.replace("_", "-")) == v for k, v in until.items())
            if len(found) == count and "in flight" not in found.values() and arrived:
                return found
            await asyncio.sleep(0.05)  # the workers write the shared log; the API reads it


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
async def test_orders_submitted_through_the_api_are_carried_by_workers(mode: str, tmp_path: Path) -> None:
    scenario, *_ = write_world(tmp_path, 1, prefix="unused")  # its catalogue; the orders are the examples
    examples = example_orders()
    (tmp_path / "logs").mkdir()
    async with postgres_schema() as url, broker("rabbitmq") as bus_url, sandbox(tmp_path, scenario) as services:
        where = Where(tmp_path / "state", url=url, keys=tmp_path / "keys")
        params = ("--param", "approval_threshold_cents=1000")
        cluster = Cluster(bus_url, services.url, where, tmp_path / "logs", extra=params)
        roles = ["orchestration", "orchestration"] if mode == "orchestration" else list(AGENTS)
        try:
            for i, role in enumerate(roles):
                await cluster.start(f"{role}#{i}")
            await cluster.wait_ready()
            cwd, env = where.place("server")
            how = ["--bus", bus_url] if mode == "orchestration" else ["--mode", mode, "--bus", bus_url]
            how += [] if mode == "orchestration" else ["--workers", "external"]
            args = (*how, "--services", services.url, *where.args())
            async with server(tmp_path, *args, cwd=cwd, env=env) as base, httpx.AsyncClient(base_url=base) as api:
                for order in examples:
                    answer = await api.post("/workflows/order-fulfilment/runs", json=order, headers=OPERATOR_AUTH)
                    assert answer.status_code == 202, answer.text
                found = await statuses(api, len(examples))
                assert found == {k: v.value for k, v in EXPECTED.items()} | {"o-1002": "awaiting_approval"}
                approve = await api.post("/runs/o-1002/approve", json={"note": "ok"}, headers=OPERATOR_AUTH)
                assert approve.status_code == 202, approve.text
                assert (await statuses(api, len(examples), o_1002="completed"))["o-1002"] == "completed"
                detail = (await api.get("/runs/o-1004", headers=OPERATOR_AUTH)).json()
                assert detail["mode"] == mode and detail["status"] == "compensated"
            await stop_all(cluster)
        finally:
            await cluster.close()
        left = where.files_written()
        where.close()
    assert left == []
