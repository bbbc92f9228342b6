"""A three-step trip for the kernel's unit tests, defined by names only (the saga and
the validators read names): flight and hotel can be undone, the car cannot, and a
hotel stay longer than the run's ``max_nights`` parameter waits for a person."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from agent_coordinator.core.events import EventFactory, LogicalClock
from agent_coordinator.core.saga import Saga
from agent_coordinator.core.workflow import Step, Workflow


class Trip(BaseModel):
    trip_id: str
    nights: int = 1


def long_stay(
    trip: Mapping[str, Any], done: Mapping[str, Mapping[str, Any]], parameters: Mapping[str, Any]
) -> str | None:
    limit = parameters.get("max_nights", 7)
    return f"{trip['nights']} nights is more than {limit}" if trip["nights"] > limit else None


TRIP = Workflow(
    name="trip",
    input_model=Trip,
    id_field="trip_id",
    steps=[
        Step(name="flight", agent="airline", action="book_flight", compensation="cancel_flight"),
        Step(name="hotel", agent="hotelier", action="book_hotel", compensation="cancel_hotel", approval=long_stay),
        Step(name="car", agent="rental", action="rent_car"),
    ],
)
FLIGHT, HOTEL, CAR = TRIP.steps


def trip_saga(seed: int = 0) -> Saga:
    """The trip's saga, minting events with a logical clock (reproducible times)."""
    return Saga(TRIP, factory=EventFactory(seed=seed, clock=LogicalClock()))
