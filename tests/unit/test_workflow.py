"""Workflow definitions: steps name their agent and tools by object or by name, and
event names default from the step's and the workflow's names (issue 13, item 7); a
definition that cannot work is refused when it is made, naming what is wrong."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from pydantic import BaseModel

from agent_coordinator import Agent, Step, StepEvents, ToolCallContext, Workflow, WorkflowDefinitionError, step_tool
from agent_coordinator.agents import ScriptedChatModel
from agent_coordinator.core.errors import InvalidInput
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


# -- what a definition must hold ---------------------------------------------------------


def trip_with(steps: list[Step], **options: Any) -> Workflow:
    return Workflow(name="trip", input_model=Trip, id_field=options.pop("id_field", "trip_id"), steps=steps, **options)


def test_a_workflow_without_steps_is_refused() -> None:
    with pytest.raises(WorkflowDefinitionError, match="workflow 'trip' has no steps; give at least one Step"):
        trip_with([])


def test_repeated_step_names_are_refused_naming_them() -> None:
    flight = Step(name="flight", agent="airline", action="book_flight")
    with pytest.raises(WorkflowDefinitionError, match=r"step names must be unique, repeated: \['flight'\]"):
        trip_with([flight, Step(name="hotel", agent="h", action="book_hotel"), flight])


def test_an_id_field_the_input_lacks_is_refused_naming_the_fields() -> None:
    with pytest.raises(
        WorkflowDefinitionError, match=r"id_field 'booking_id' is not a field of Trip; fields: \['route'"
    ):
        trip_with([Step(name="flight", agent="airline", action="book_flight")], id_field="booking_id")


def test_an_explicit_event_name_that_repeats_another_is_refused() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"repeated: \['FlightSucceeded'\]"):
        trip_with([Step(name="flight", agent="airline", action="book_flight")], completed_event="FlightSucceeded")


def test_a_step_whose_events_collide_with_anothers_derived_events_is_refused() -> None:
    # "HotelApproved" is the hotel step's approval event once it has a rule.
    approving = Step(name="hotel", agent="h", action="book_hotel", approval=lambda *_: None)
    clashing = Step(
        name="flight",
        agent="airline",
        action="book_flight",
        events=StepEvents(succeeded="HotelApproved", failed="FlightFailed", compensated="FlightCompensated"),
    )
    with pytest.raises(WorkflowDefinitionError, match=r"repeated: \['HotelApproved'\]"):
        trip_with([clashing, approving])
    trip_with([clashing, Step(name="hotel", agent="h", action="book_hotel")])  # no rule, no approval events


def test_a_step_is_looked_up_by_name_and_an_unknown_one_names_the_steps() -> None:
    workflow = trip_with(
        [Step(name="flight", agent="airline", action="book_flight"), Step(name="car", agent="r", action="a")]
    )
    assert workflow.index("car") == 1 and workflow.agent_names == ["airline", "r"]
    with pytest.raises(WorkflowDefinitionError, match=r"has no step 'hotel'; steps: \['flight', 'car'\]"):
        workflow.step("hotel")


def test_an_invalid_input_names_each_field_without_pydantics_prefix() -> None:
    class Checked(BaseModel):
        trip_id: str
        route: str

        @pydantic.field_validator("route")
        @classmethod
        def _two_cities(cls, route: str) -> str:
            if "-" not in route:
                raise ValueError(f"route {route!r} must name two cities, as LIS-AMS")
            return route

    workflow = Workflow(
        name="trip", input_model=Checked, id_field="trip_id", steps=[Step(name="f", agent="a", action="b")]
    )
    with pytest.raises(InvalidInput) as caught:
        workflow.validate_input({"route": "Lisbon"})
    assert caught.value.errors == [
        ("trip_id", "Field required"),
        ("route", "route 'Lisbon' must name two cities, as LIS-AMS"),
    ]
    valid = workflow.validate_input('{"trip_id": "t-1", "route": "LIS-AMS"}')
    assert workflow.workflow_id(valid) == "t-1"
