"""A choreographed result is the run's whole causal chain on a real broker too (issue 11,
item 1): on NATS each event type is its own subject, so a run's events reach the caller
in any order -- the terminal one often first. Results are read from the event log, so
each must equal the orchestrated chain, event for event, whatever arrived when."""

from __future__ import annotations

import uuid

import pytest

from agent_coordinator.bus import open_bus
from tests.e2e.test_bus_names_and_waits import _delete_nats_streams, _delete_rabbitmq_names
from tests.e2e.test_orders_e2e import example_orders, run_orders
from tests.services import NATS_URL, RABBITMQ_URL, require_service

pytestmark = pytest.mark.services

ROUNDS = 2  # each a fresh set of broker names; arrival orders differ from round to round


@pytest.mark.parametrize("broker", ["nats", "rabbitmq"])
async def test_every_choreographed_result_on_a_broker_is_the_orchestrated_chain(broker: str) -> None:
    require_service(broker)
    orchestrated, _ = await run_orders("orchestration", example_orders())
    chains = {r.workflow_id: [e.to_json() for e in r.events] for r in orchestrated}
    for _ in range(ROUNDS):
        namespace = f"test-results-{uuid.uuid4().hex[:8]}"
        try:
            async with open_bus(NATS_URL if broker == "nats" else RABBITMQ_URL, namespace=namespace) as bus:
                results, _ = await run_orders("choreography", example_orders(), bus=bus)
        finally:
            if broker == "nats":
                await _delete_nats_streams(namespace)
            else:
                await _delete_rabbitmq_names(namespace)
        assert sorted(r.workflow_id for r in results) == sorted(chains)
        for result in results:
            assert [e.to_json() for e in result.events] == chains[result.workflow_id], result.workflow_id
