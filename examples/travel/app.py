"""The trip workflow as an app the ``coordinator`` command runs (``--workflow mypkg.travel:app``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from agent_coordinator import (
    AppEnvironment,
    AppOptions,
    Parameter,
    WorkflowApp,
    WorkflowResult,
    WorkflowStatus,
    agents_using,
)
from agent_coordinator.agents.models import parse_model_options

from .ledger import Ledger
from .trip import TRIP, airline, hotelier, rental


def check_bookings(ledger: Ledger, results: Sequence[WorkflowResult]) -> list[str]:
    """What is wrong with the bookings after these runs, one line each: a completed
    trip holds its flight, hotel and car; a cancelled one holds nothing."""
    problems = []
    for result in results:
        held = sorted(booking["kind"] for booking in ledger.held(result.workflow_id))
        if result.status is WorkflowStatus.COMPLETED and held != ["car", "flight", "hotel"]:
            problems.append(f"{result.workflow_id} is booked but holds {held}")
        if result.status is WorkflowStatus.COMPENSATED and held:
            problems.append(f"{result.workflow_id} is cancelled but still holds {held}")
    return problems


@asynccontextmanager
async def trip_environment(options: AppOptions) -> AsyncIterator[AppEnvironment]:
    """What the runs need: the ledger (in ``options.store``, a file the CLI puts in the
    state directory, so that every process shares it), the agents with their ledger
    and the models ``--model`` names, and the check of the bookings."""
    ledger = Ledger(options.store)
    choice = parse_model_options(options.models, record=options.record, replay=options.replay)
    agents = agents_using([airline, hotelier, rental], models=choice.models(TRIP.agent_names), ledger=ledger)

    async def check(results: Sequence[WorkflowResult]) -> list[str]:
        return check_bookings(ledger, results)

    try:
        yield AppEnvironment(agents=agents, check=check)
    finally:
        ledger.close()


app = WorkflowApp(
    workflow=TRIP,
    environment=trip_environment,
    parameters=(
        Parameter(
            "long_stay_nights",
            int,
            description="a hotel stay of more nights waits for a person's approval; not set: none waits",
        ),
    ),
)
