"""The worked example of docs/testing.md: testing a workflow of your own, deterministically,
with the fixtures of the agent-coordinator pytest plugin. Keep the two in step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from agent_coordinator import (
    MODES,
    Agent,
    AppEnvironment,
    BusinessFailure,
    Choreography,
    Step,
    StepEvents,
    Workflow,
    WorkflowApp,
    WorkflowStatus,
    arun_workflow,
    tool_call_context,
)
from agent_coordinator.agents import misbehave
from agent_coordinator.bus import InMemoryBus
from agent_coordinator.examples.orders import order_fulfilment_app
from agent_coordinator.testing import ReplayingModelFactory, ScriptedModelFactory

# -- the workflow under test: book a flight, then a hotel; cancel the flight if no hotel ----


class Trip(BaseModel):
    trip_id: str
    route: str
    city: str
    nights: int = Field(gt=0)


class FlightArgs(BaseModel):
    trip_id: str
    route: str


class HotelArgs(BaseModel):
    trip_id: str
    city: str
    nights: int


class CancelArgs(BaseModel):
    booking_id: str


class Ledger:
    """Stands in for the airline's and hotel's APIs: bookings by idempotency key."""

    def __init__(self) -> None:
        self.bookings: dict[str, dict[str, Any]] = {}

    def book(self, key: str, kind: str, **details: Any) -> dict[str, Any]:
        if key not in self.bookings:  # the same key again is the same booking
            self.bookings[key] = {"booking_id": f"{kind}-{len(self.bookings) + 1}", "status": "booked", **details}
        return self.bookings[key]

    def cancel(self, booking_id: str) -> dict[str, Any]:
        for booking in self.bookings.values():
            if booking["booking_id"] == booking_id:
                booking["status"] = "cancelled"
        return {"booking_id": booking_id, "status": "cancelled"}

    def live(self) -> list[dict[str, Any]]:
        return [b for b in self.bookings.values() if b["status"] == "booked"]


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
        ),
        Step(
            name="hotel",
            agent="hotelier",
            action="book_hotel",
            compensation="cancel_hotel",
            events=StepEvents(succeeded="HotelBooked", failed="HotelBookingFailed", compensated="HotelCancelled"),
        ),
    ),
)


def travel_agents(ledger: Ledger, model: BaseChatModel | Mapping[str, BaseChatModel]) -> list[Agent]:
    """The airline and hotel agents; ``model`` is one model for both, or one per agent."""

    async def book_flight(trip_id: str, route: str, config: RunnableConfig) -> dict[str, Any]:
        return ledger.book(tool_call_context(config).idempotency_key, "flight", trip_id=trip_id, route=route)

    async def book_hotel(trip_id: str, city: str, nights: int, config: RunnableConfig) -> dict[str, Any]:
        if city == "Atlantis":
            raise BusinessFailure("no hotel rooms in Atlantis")
        return ledger.book(tool_call_context(config).idempotency_key, "hotel", city=city, nights=nights)

    async def cancel(booking_id: str, config: RunnableConfig) -> dict[str, Any]:
        return ledger.cancel(booking_id)

    def tool(name: str, function: Any, schema: type[BaseModel]) -> StructuredTool:
        return StructuredTool.from_function(coroutine=function, name=name, description=name, args_schema=schema)

    def model_of(agent: str) -> BaseChatModel:
        return model[agent] if isinstance(model, Mapping) else model

    return [
        Agent(
            name="airline",
            instructions="You book flights.",
            tools=[tool("book_flight", book_flight, FlightArgs), tool("cancel_flight", cancel, CancelArgs)],
            model=model_of("airline"),
        ),
        Agent(
            name="hotelier",
            instructions="You book hotels.",
            tools=[tool("book_hotel", book_hotel, HotelArgs), tool("cancel_hotel", cancel, CancelArgs)],
            model=model_of("hotelier"),
        ),
    ]


OSLO = {"trip_id": "t-1", "route": "LIS-OSL", "city": "Oslo", "nights": 3}
ATLANTIS = {"trip_id": "t-2", "route": "LIS-ATL", "city": "Atlantis", "nights": 1}


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_trip_is_booked(mode: str, fake_model: BaseChatModel, ledger: Ledger) -> None:
    result = await arun_workflow(TRAVEL, OSLO, agents=travel_agents(ledger, fake_model), mode=mode)
    assert result.status is WorkflowStatus.COMPLETED
    assert [e.type for e in result.events] == ["TripRequested", "FlightBooked", "HotelBooked", "TripBooked"]
    assert len(ledger.live()) == 2


async def test_no_hotel_cancels_the_flight(fake_model: BaseChatModel, ledger: Ledger) -> None:
    result = await arun_workflow(TRAVEL, ATLANTIS, agents=travel_agents(ledger, fake_model))
    assert result.status is WorkflowStatus.COMPENSATED
    assert result.reason == "step 'hotel' failed: no hotel rooms in Atlantis"
    assert ledger.live() == []


async def test_a_wrong_answer_is_refused_and_the_model_asked_again(
    scripted_model: ScriptedModelFactory, ledger: Ledger
) -> None:
    # The hotel agent's first answer books 4 nights instead of 3; the guard refuses it.
    model = scripted_model(misbehave("wrong_value", when=lambda task: task.tool == "book_hotel"))
    result = await arun_workflow(TRAVEL, OSLO, agents=travel_agents(ledger, model))
    assert result.status is WorkflowStatus.COMPLETED
    assert result.outcome("hotel").rejections == ["argument `nights`=4 does not match the workflow's value 3"]
    assert result.usage.model_calls == 3  # one for the flight, two for the hotel


async def test_choreography_on_an_in_memory_bus(
    fake_model: BaseChatModel, memory_bus: InMemoryBus, ledger: Ledger
) -> None:
    result = await arun_workflow(
        TRAVEL,
        ATLANTIS,
        agents=travel_agents(ledger, fake_model),
        mode=Choreography(bus=memory_bus),
    )
    assert result.status is WorkflowStatus.COMPENSATED
    assert [e.type for e in result.events] == [
        "TripRequested",
        "FlightBooked",
        "HotelBookingFailed",
        "FlightCancelled",
        "TripCancelled",
    ]


async def test_a_recorded_conversation_replays(replaying_model: ReplayingModelFactory, ledger: Ledger) -> None:
    # Recorded once with `pytest tests/e2e/test_plugin_example.py --record-cassettes`; in your
    # project record_with names the real model, e.g. "openai:gpt-4o-mini".
    models = {
        agent: replaying_model("cassettes/travel", agent=agent, record_with="fake") for agent in ("airline", "hotelier")
    }
    result = await arun_workflow(TRAVEL, OSLO, agents=travel_agents(ledger, models))
    assert result.status is WorkflowStatus.COMPLETED
    assert result.usage.model_calls == 2


@pytest.fixture
def workflow_app() -> WorkflowApp:
    return order_fulfilment_app  # what app_environment opens: its services, its agents, its checks


async def test_the_order_workflow_in_its_own_environment(app_environment: AppEnvironment) -> None:
    order = {
        "order_id": "o-1",
        "customer": "Ada",
        "items": [{"sku": "SKU-APPLE", "quantity": 2, "unit_price_cents": 120}],
        "payment_method": "tok_declined",
        "shipping_address": {"name": "Ada", "line1": "1 Main St", "city": "Oslo", "postcode": "0150", "country": "NO"},
    }
    workflow = order_fulfilment_app.workflow
    result = await arun_workflow(workflow, order, agents=app_environment.agents)
    assert result.status is WorkflowStatus.COMPENSATED  # the card was declined; the stock is released
    assert app_environment.check is not None and await app_environment.check([result]) == []
