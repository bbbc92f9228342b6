"""A two-step workflow that is not about orders, with its own tools, in both modes.

Proof that neither coordinator hard-codes the order domain: a travel booking
(flight, then hotel) defined here, with tools that keep their own ledger keyed by
idempotency key, runs to the same outcome under orchestration and choreography.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from agent_coordinator import (
    MODES,
    Backoff,
    BusinessFailure,
    LogicalClock,
    RunSettings,
    Step,
    StepEvents,
    StepStatus,
    TransientFailure,
    Workflow,
    WorkflowDefinitionError,
    WorkflowStatus,
    arun_workflow,
    open_coordinator,
    tool_call_context,
)
from agent_coordinator.agents import ScriptedChatModel
from agent_coordinator.core.agent import Agent


class Trip(BaseModel):
    trip_id: str
    route: str
    city: str
    nights: int = Field(gt=0)


class Ledger:
    """The travel 'services': bookings by idempotency key, so a repeat is a no-op."""

    def __init__(self) -> None:
        self.bookings: dict[str, dict[str, Any]] = {}
        self.effects = 0

    def book(self, key: str, kind: str, **details: Any) -> dict[str, Any]:
        if key not in self.bookings:
            self.effects += 1
            self.bookings[key] = {"booking_id": f"{kind}-{len(self.bookings) + 1}", "status": "booked", **details}
        return self.bookings[key]

    def cancel(self, booking_id: str) -> dict[str, Any]:
        for booking in self.bookings.values():
            if booking["booking_id"] == booking_id:
                booking["status"] = "cancelled"
                return {"booking_id": booking_id, "status": "cancelled"}
        raise BusinessFailure(f"no booking {booking_id}")

    def live(self) -> list[dict[str, Any]]:
        return [b for b in self.bookings.values() if b["status"] == "booked"]


class FlightArgs(BaseModel):
    trip_id: str
    route: str


class HotelArgs(BaseModel):
    trip_id: str
    city: str
    nights: int


class CancelArgs(BaseModel):
    booking_id: str


def travel_agents(ledger: Ledger) -> list[Agent]:
    async def book_flight(trip_id: str, route: str, config: RunnableConfig) -> dict[str, Any]:
        return ledger.book(tool_call_context(config).idempotency_key, "flight", trip_id=trip_id, route=route)

    async def book_hotel(trip_id: str, city: str, nights: int, config: RunnableConfig) -> dict[str, Any]:
        if city == "Atlantis":
            raise BusinessFailure("no hotel rooms in Atlantis")
        return ledger.book(tool_call_context(config).idempotency_key, "hotel", city=city, nights=nights)

    async def cancel(booking_id: str, config: RunnableConfig) -> dict[str, Any]:
        tool_call_context(config)
        return ledger.cancel(booking_id)

    def tool(name: str, fn: Any, schema: type[BaseModel]) -> StructuredTool:
        return StructuredTool.from_function(coroutine=fn, name=name, description=name, args_schema=schema)

    return [
        Agent(
            name="airline",
            instructions="You book flights.",
            tools=[tool("book_flight", book_flight, FlightArgs), tool("cancel_flight", cancel, CancelArgs)],
            model=ScriptedChatModel(),
        ),
        Agent(
            name="hotelier",
            instructions="You book hotels.",
            tools=[tool("book_hotel", book_hotel, HotelArgs), tool("cancel_hotel", cancel, CancelArgs)],
            model=ScriptedChatModel(),
        ),
    ]


TRAVEL = Workflow(
    name="travel",
    input_model=Trip,
    id_field="trip_id",
    started_event="TripRequested",
    completed_event="TripBooked",
    cancelled_event="TripCancelled",
    steps=(
        Step(
            name="flight",
            agent="airline",
            action="book_flight",
            compensation="cancel_flight",
            events=StepEvents(succeeded="FlightBooked", failed="FlightBookingFailed", compensated="FlightCancelled"),
            # no facts: the default is the input fields the action accepts (trip_id, route)
        ),
        Step(
            name="hotel",
            agent="hotelier",
            action="book_hotel",
            compensation="cancel_hotel",
            events=StepEvents(succeeded="HotelBooked", failed="HotelBookingFailed", compensated="HotelCancelled"),
            facts=lambda trip, done: {"trip_id": trip["trip_id"], "city": trip["city"], "nights": trip["nights"]},
        ),
    ),
)


@pytest.mark.parametrize("mode", MODES)
async def test_a_trip_is_booked_in_either_mode(mode: str) -> None:
    ledger = Ledger()
    trip = {"trip_id": "t-1", "route": "LIS-OSL", "city": "Oslo", "nights": 3}
    result = await arun_workflow(TRAVEL, trip, agents=travel_agents(ledger), mode=mode)
    assert result.status is WorkflowStatus.COMPLETED
    assert [e.type for e in result.events] == ["TripRequested", "FlightBooked", "HotelBooked", "TripBooked"]
    assert result.outcome("hotel").result == {"booking_id": "hotel-2", "status": "booked", "city": "Oslo", "nights": 3}
    assert ledger.effects == 2 and len(ledger.live()) == 2
    assert result.usage.model_calls == 2 and result.usage.tool_calls == 2


@pytest.mark.parametrize("mode", MODES)
async def test_a_failed_hotel_undoes_the_flight_in_either_mode(mode: str) -> None:
    ledger = Ledger()
    trip = {"trip_id": "t-2", "route": "LIS-ATL", "city": "Atlantis", "nights": 1}
    result = await arun_workflow(TRAVEL, trip, agents=travel_agents(ledger), mode=mode)
    assert result.status is WorkflowStatus.COMPENSATED
    assert [e.type for e in result.events] == [
        "TripRequested",
        "FlightBooked",
        "HotelBookingFailed",
        "FlightCancelled",
        "TripCancelled",
    ]
    assert result.outcome("flight").status is StepStatus.COMPENSATED
    assert result.outcome("hotel").status is StepStatus.FAILED
    assert result.reason is not None and "no hotel rooms in Atlantis" in result.reason
    assert ledger.live() == []


async def test_both_modes_emit_the_same_events_byte_for_byte() -> None:
    logs = {}
    for mode in MODES:
        trip = {"trip_id": "t-3", "route": "LIS-ATL", "city": "Atlantis", "nights": 1}
        result = await arun_workflow(TRAVEL, trip, agents=travel_agents(Ledger()), mode=mode, clock=LogicalClock())
        logs[mode] = [e.to_json() for e in result.events]
    assert logs["orchestration"] == logs["choreography"]


async def test_an_agent_the_workflow_names_but_nobody_gave_is_a_definition_error() -> None:
    with pytest.raises(WorkflowDefinitionError, match="names agent 'hotelier', but no such agent was given"):
        async with open_coordinator(TRAVEL, agents=travel_agents(Ledger())[:1]):
            pass


@pytest.mark.parametrize("mode", MODES)
async def test_an_undo_that_never_works_ends_needs_attention_with_the_reason(mode: str) -> None:
    ledger = Ledger()
    agents = travel_agents(ledger)
    calls = 0

    async def broken_cancel(booking_id: str, config: RunnableConfig) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        raise TransientFailure("airline API is down")

    airline = agents[0].model_copy(
        update={
            "tools": [
                agents[0].tools[0],
                StructuredTool.from_function(
                    coroutine=broken_cancel, name="cancel_flight", description="cancel", args_schema=CancelArgs
                ),
            ]
        }
    )
    settings = RunSettings(compensation_retries=Backoff(max_attempts=3, initial_delay=0.001))
    trip = {"trip_id": "t-9", "route": "LIS-ATL", "city": "Atlantis", "nights": 1}
    result = await arun_workflow(TRAVEL, trip, agents=[airline, agents[1]], mode=mode, settings=settings)
    assert result.status is WorkflowStatus.NEEDS_ATTENTION
    assert calls == 3  # retried, then given up
    assert result.outcome("flight").status is StepStatus.COMPENSATION_FAILED
    assert result.reason == (
        "step 'hotel' failed: no hotel rooms in Atlantis; undo of 'flight' failed: "
        "gave up after 3 attempts of `cancel_flight`, last: airline API is down"
    )
    assert [e.type for e in result.events][-2:] == ["FlightCancelledFailed", "TripCancelled"]
    assert len(ledger.live()) == 1  # the flight is still booked: that is what needs a person


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_that_times_out_after_its_effect_has_that_effect_undone(mode: str) -> None:
    # The hotel is booked, then the answer is slow: the step times out. Asking again
    # with the same idempotency key returns the booking at once, so it is undone.
    ledger = Ledger()
    agents = travel_agents(ledger)
    slow_once: set[str] = set()

    async def slow_hotel(trip_id: str, city: str, nights: int, config: RunnableConfig) -> dict[str, Any]:
        key = tool_call_context(config).idempotency_key
        booking = ledger.book(key, "hotel", city=city, nights=nights)
        if key not in slow_once:
            slow_once.add(key)
            await asyncio.Event().wait()  # never answers: the step's timeout ends it
        return booking

    hotelier = agents[1].model_copy(
        update={
            "tools": [
                StructuredTool.from_function(
                    coroutine=slow_hotel, name="book_hotel", description="book", args_schema=HotelArgs
                ),
                agents[1].tools[1],
            ]
        }
    )
    settings = RunSettings(step_timeout=0.2)
    trip = {"trip_id": "t-7", "route": "LIS-OSL", "city": "Oslo", "nights": 2}
    result = await arun_workflow(TRAVEL, trip, agents=[agents[0], hotelier], mode=mode, settings=settings)
    assert result.status is WorkflowStatus.COMPENSATED
    assert result.reason is not None and result.reason.endswith("; its late effect was undone")
    assert ledger.live() == []  # the flight was cancelled by the saga, the late hotel by the runner
