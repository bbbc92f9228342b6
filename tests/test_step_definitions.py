"""Workflow definitions: steps name their agent and tools by object or by name, and
event names default from the step's and the workflow's names (issue 13, item 7)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from agent_coordinator import Agent, Step, StepEvents, ToolCallContext, Workflow, WorkflowDefinitionError, step_tool
from agent_coordinator.agents import ScriptedChatModel
from agent_coordinator.core.workflow import event_title
from agent_coordinator.examples.orders import ORDER_FULFILMENT


class Trip(BaseModel):
    trip_id: str
    route: str


@step_tool
async def book_flight(trip_id: str, route: str, *, call: ToolCallContext) -> dict[str, Any]:
    """Book a flight."""
    return {"booking_id": call.idempotency_key}


@step_tool
async def cancel_flight(booking_id: str) -> dict[str, Any]:
    """Cancel a flight."""
    return {"booking_id": booking_id, "status": "cancelled"}


@step_tool
async def book_hotel(trip_id: str) -> dict[str, Any]:
    """Book a hotel."""
    return {}


AIRLINE = Agent(
    name="airline", instructions="You book flights.", tools=[book_flight, cancel_flight], model=ScriptedChatModel()
)


def test_a_step_stores_the_names_of_the_objects_it_is_given() -> None:
    by_object = Step(name="flight", agent=AIRLINE, action=book_flight, compensation=cancel_flight)
    by_name = Step(name="flight", agent="airline", action="book_flight", compensation="cancel_flight")
    assert by_object == by_name
    assert (by_object.agent, by_object.action, by_object.compensation) == ("airline", "book_flight", "cancel_flight")


def test_event_names_default_from_the_step_and_workflow_names() -> None:
    workflow = Workflow(
        name="trip",
        input_model=Trip,
        id_field="trip_id",
        steps=[Step(name="flight", agent=AIRLINE, action=book_flight), Step(name="car_rental", agent="r", action="a")],
    )
    assert (workflow.started_event, workflow.completed_event, workflow.cancelled_event) == (
        "TripStarted",
        "TripCompleted",
        "TripCancelled",
    )
    assert workflow.steps[0].events == StepEvents(
        succeeded="FlightSucceeded", failed="FlightFailed", compensated="FlightCompensated"
    )
    assert workflow.steps[1].events.succeeded == "CarRentalSucceeded"
    assert workflow.event_types == [
        "TripStarted",
        "FlightSucceeded",
        "FlightFailed",
        "FlightCompensated",
        "CarRentalSucceeded",
        "CarRentalFailed",
        "CarRentalCompensated",
        "TripCompleted",
        "TripCancelled",
    ]


def test_explicit_event_names_are_kept() -> None:
    assert ORDER_FULFILMENT.started_event == "OrderPlaced"
    assert ORDER_FULFILMENT.step("inventory").events.succeeded == "InventoryReserved"
    workflow = Workflow(
        name="trip",
        input_model=Trip,
        id_field="trip_id",
        completed_event="TripBooked",
        steps=[Step(name="flight", agent=AIRLINE, action=book_flight)],
    )
    assert (workflow.started_event, workflow.completed_event) == ("TripStarted", "TripBooked")


@pytest.mark.parametrize(
    ("name", "title"),
    [("flight", "Flight"), ("car_rental", "CarRental"), ("order-fulfilment", "OrderFulfilment"), ("eu.v2", "EuV2")],
)
def test_the_title_of_a_name(name: str, title: str) -> None:
    assert event_title(name) == title


def test_a_validated_mapping_gets_the_same_defaults() -> None:
    workflow = Workflow.model_validate(
        {
            "name": "trip",
            "input_model": Trip,
            "id_field": "trip_id",
            "steps": [{"name": "flight", "agent": AIRLINE, "action": book_flight}],
        }
    )
    assert workflow.started_event == "TripStarted"
    assert workflow.steps[0].agent == "airline"
    assert workflow.steps[0].events.failed == "FlightFailed"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"agent": 42, "action": "book_flight"},
            "step 'flight': agent must be an Agent or an agent's name, not 42 (int)",
        ),
        (
            {"agent": "airline", "action": book_flight.function},
            "step 'flight': action book_flight is a function, not a tool; decorate it with @step_tool",
        ),
        (
            {"agent": "airline", "action": "book_flight", "compensation": 3.5},
            "step 'flight': compensation must be a tool or a tool's name, not 3.5 (float)",
        ),
        (
            {"agent": AIRLINE, "action": book_hotel},
            "step 'flight': its action tool 'book_hotel' is not among the tools of agent 'airline' "
            "['book_flight', 'cancel_flight']; add it to the agent's tools",
        ),
        (
            {"agent": AIRLINE, "action": book_flight, "compensation": "cancel_flihgt"},
            "step 'flight': its compensation tool 'cancel_flihgt' is not among the tools of agent 'airline'",
        ),
    ],
)
def test_a_step_that_cannot_be_names_the_offending_value(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as info:
        Step(name="flight", **arguments)
    assert str(info.value).startswith(message)


def test_default_names_that_collide_are_refused_with_a_way_out() -> None:
    # Two step names with one title ("car_rental", "carRental") would share their events.
    with pytest.raises(WorkflowDefinitionError, match=r"repeated: \['CarRentalCompensated'.*name the events"):
        Workflow(
            name="trip",
            input_model=Trip,
            id_field="trip_id",
            steps=[Step(name="car_rental", agent="r", action="a"), Step(name="carRental", agent="r", action="b")],
        )
