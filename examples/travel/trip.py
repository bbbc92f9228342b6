"""A trip: book a flight, then a hotel, then a car; when a booking fails, cancel
the ones made before it, in reverse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from agent_coordinator import Agent, BusinessFailure, Step, ToolCallContext, Workflow, step_tool
from agent_coordinator.agents import ScriptedChatModel

from .ledger import Ledger


class Trip(BaseModel):
    """One line of trips.jsonl: the workflow's input."""

    trip_id: str = Field(min_length=1)
    route: str = Field(pattern=r"^[A-Z]{3}-[A-Z]{3}$", description="from-to airports, e.g. LIS-OSL")
    city: str = Field(min_length=1)
    nights: int = Field(gt=0, le=60)


# -- tools: what the agents can do. The model fills the parameters before `*`; the
# coordinator passes those after it: the call's context (its idempotency key) and the
# ledger the environment binds.


@step_tool
async def book_flight(trip_id: str, route: str, *, ledger: Ledger, call: ToolCallContext) -> dict[str, Any]:
    """Book a seat on a flight of the route, e.g. LIS-OSL. Returns {booking_id, status}."""
    return ledger.book(call.idempotency_key, trip_id=trip_id, kind="flight", route=route)


@step_tool
async def book_hotel(trip_id: str, city: str, nights: int, *, ledger: Ledger, call: ToolCallContext) -> dict[str, Any]:
    """Book a hotel room in the city for that many nights. Returns {booking_id, status}."""
    if city == "Atlantis":
        raise BusinessFailure("no hotel rooms in Atlantis")
    return ledger.book(call.idempotency_key, trip_id=trip_id, kind="hotel", city=city, nights=nights)


@step_tool
async def rent_car(trip_id: str, city: str, days: int, *, ledger: Ledger, call: ToolCallContext) -> dict[str, Any]:
    """Rent a car in the city for that many days. Returns {booking_id, status}."""
    if city == "Venice":
        raise BusinessFailure("no cars in Venice: its streets are canals")
    return ledger.book(call.idempotency_key, trip_id=trip_id, kind="car", city=city, days=days)


@step_tool
async def cancel_booking(booking_id: str, *, ledger: Ledger) -> dict[str, Any]:
    """Cancel a booking. Safe to repeat. Returns {booking_id, status: 'cancelled'}."""
    return ledger.cancel(booking_id)


# -- agents: who owns which tools. Each runs on the scripted fake model until the
# app's environment gives it the model `--model` names.

airline = Agent(
    name="airline",
    instructions="You book flights. Call your tool with exactly the values you are given.",
    tools=[book_flight, cancel_booking],
    model=ScriptedChatModel(),
)
hotelier = Agent(
    name="hotelier",
    instructions="You book hotel rooms. Call your tool with exactly the values you are given.",
    tools=[book_hotel, cancel_booking],
    model=ScriptedChatModel(),
)
rental = Agent(
    name="rental",
    instructions="You rent cars. Call your tool with exactly the values you are given.",
    tools=[rent_car, cancel_booking],
    model=ScriptedChatModel(),
)


# -- the workflow: the steps in order, each with its agent, its action and its undo.


def long_stay(trip: Mapping[str, Any], done: Mapping[str, Any], parameters: Mapping[str, Any]) -> str | None:
    """A person approves a hotel stay longer than `--param long_stay_nights=N` (not set: none)."""
    limit = parameters.get("long_stay_nights")
    if limit is None or trip["nights"] <= limit:
        return None
    return f"a stay of {trip['nights']} nights is longer than long_stay_nights={limit}"


def car_facts(trip: Mapping[str, Any], done: Mapping[str, Any]) -> dict[str, Any]:
    """What rent_car must be called with: the car is kept a day longer than the room."""
    return {"trip_id": trip["trip_id"], "city": trip["city"], "days": trip["nights"] + 1}


TRIP = Workflow(
    name="trip",
    description="Book a flight, a hotel and a car; cancel what was booked when a later booking fails.",
    input_model=Trip,
    id_field="trip_id",
    steps=[
        Step(name="flight", agent=airline, action=book_flight, compensation=cancel_booking),
        Step(name="hotel", agent=hotelier, action=book_hotel, compensation=cancel_booking, approval=long_stay),
        Step(name="car", agent=rental, action=rent_car, compensation=cancel_booking, facts=car_facts),
    ],
)
