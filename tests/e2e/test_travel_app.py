"""The travel example's app (examples/travel/, docs/guide.md) in the pytest plugin's
environment; docs/guide.md, "Test it", shows the tests below verbatim."""

from __future__ import annotations

import pytest

from agent_coordinator import AppEnvironment, WorkflowApp, arun_workflow
from agent_coordinator.examples.travel import app


@pytest.fixture
def workflow_app() -> WorkflowApp:
    return app


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
async def test_venice_cancels_the_hotel_then_the_flight(app_environment: AppEnvironment, mode: str) -> None:
    trip = {"trip_id": "t-3", "route": "LIS-VCE", "city": "Venice", "nights": 4}
    result = await arun_workflow(app.workflow, trip, agents=app_environment.agents, mode=mode)
    assert result.reason == "step 'car' failed: no cars in Venice: its streets are canals"
    assert [e.type for e in result.events][-3:] == ["HotelCompensated", "FlightCompensated", "TripCancelled"]
    assert app_environment.check is not None and await app_environment.check([result]) == []
