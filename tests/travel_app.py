"""The travel workflow of ``test_custom_workflow`` as a ``WorkflowApp``: another
workflow than the orders, for the commands that must tell runs of different apps
apart (``--workflow tests.travel_app:travel_app``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agent_coordinator.core.app import AppEnvironment, AppOptions, Parameter, WorkflowApp
from tests.e2e.test_custom_workflow import TRAVEL, Ledger, travel_agents

SPEC = "tests.travel_app:travel_app"


@asynccontextmanager
async def _travel_environment(options: AppOptions) -> AsyncIterator[AppEnvironment]:
    yield AppEnvironment(agents=travel_agents(Ledger()))


travel_app = WorkflowApp(
    workflow=TRAVEL,
    environment=_travel_environment,
    parameters=(Parameter("max_nights", int, default=14, description="the longest stay booked"),),
)
