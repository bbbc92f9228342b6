"""``@step_tool``: the schema comes from the signature, the ToolCallContext and the
dependencies are injected where the model never sees them, on LangChain's ainvoke
and on the step runner's fast path alike."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, ValidationError

from agent_coordinator import (
    MODES,
    Agent,
    BusinessFailure,
    InvalidArguments,
    RunSettings,
    Step,
    StepTool,
    ToolCallContext,
    Workflow,
    WorkflowDefinitionError,
    WorkflowStatus,
    agents_using,
    arun_workflow,
    step_tool,
)
from agent_coordinator.agents import ScriptedChatModel, misbehave
from agent_coordinator.core.runner import _direct_call

CONTEXT = ToolCallContext("t-1", "flight", "book_flight")


class Ledger:
    """Bookings by idempotency key: the same key again is the same booking."""

    def __init__(self) -> None:
        self.bookings: dict[str, dict[str, Any]] = {}

    def book(self, key: str, **details: Any) -> dict[str, Any]:
        return self.bookings.setdefault(key, {"booking_id": f"b-{len(self.bookings) + 1}", **details})


@step_tool
async def book_flight(
    trip_id: str,
    route: Annotated[str, Field(min_length=7, description="origin-destination, e.g. 'LIS-OSL'")],
    seats: int = 1,
    *,
    ledger: Ledger,
    call: ToolCallContext,
) -> dict[str, Any]:
    """Book seats on a flight of the route. Returns {booking_id, ...}."""
    if route.endswith("ATL"):
        raise BusinessFailure("no flights to Atlantis")
    return ledger.book(call.idempotency_key, trip_id=trip_id, route=route, seats=seats)


@step_tool
async def cancel_flight(booking_id: str, *, ledger: Ledger) -> dict[str, Any]:
    """Cancel a booking made by book_flight."""
    for booking in ledger.bookings.values():
        if booking["booking_id"] == booking_id:
            booking["status"] = "cancelled"
    return {"booking_id": booking_id, "status": "cancelled"}


# -- what the model sees --------------------------------------------------------------------


def test_the_model_sees_the_arguments_before_the_star_and_nothing_else() -> None:
    spec = convert_to_openai_tool(book_flight)["function"]
    assert spec["name"] == "book_flight"
    assert spec["description"] == "Book seats on a flight of the route. Returns {booking_id, ...}."
    assert list(spec["parameters"]["properties"]) == ["trip_id", "route", "seats"]
    assert spec["parameters"]["required"] == ["trip_id", "route"]
    assert spec["parameters"]["properties"]["route"]["description"] == "origin-destination, e.g. 'LIS-OSL'"
    assert isinstance(book_flight, StepTool)
    assert book_flight.dependencies == ("ledger",)


def test_the_schema_is_closed_and_keeps_the_annotations_constraints() -> None:
    schema = book_flight.args_schema
    assert isinstance(schema, type) and issubclass(schema, BaseModel)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        schema.model_validate({"trip_id": "t-1", "route": "LIS-OSL", "meal": "fish"})
    with pytest.raises(ValidationError, match="at least 7 characters"):
        schema.model_validate({"trip_id": "t-1", "route": "LIS"})


# -- calling it -----------------------------------------------------------------------------


async def test_ainvoke_injects_the_context_and_the_bound_dependencies() -> None:
    ledger = Ledger()
    booking = await book_flight.using(ledger=ledger).ainvoke(
        {"trip_id": "t-1", "route": "LIS-OSL"}, config=CONTEXT.as_config()
    )
    assert booking == {"booking_id": "b-1", "trip_id": "t-1", "route": "LIS-OSL", "seats": 1}
    assert list(ledger.bookings) == ["t-1/flight/book_flight"]


async def test_the_runners_fast_path_calls_it_like_ainvoke() -> None:
    ledger = Ledger()
    direct = _direct_call(book_flight.using(ledger=ledger))
    assert direct is not None, "a step tool must take the fast path"
    booking = await direct({"trip_id": "t-1", "route": "LIS-OSL", "seats": 2}, CONTEXT)
    assert booking == {"booking_id": "b-1", "trip_id": "t-1", "route": "LIS-OSL", "seats": 2}
    with pytest.raises(InvalidArguments, match="invalid arguments for book_flight: route: String should have at least"):
        await direct({"trip_id": "t-1", "route": "LIS"}, CONTEXT)


async def test_arguments_failing_the_schema_are_invalid_naming_the_field() -> None:
    with pytest.raises(InvalidArguments, match="invalid arguments for book_flight: meal: Extra inputs") as info:
        await book_flight.using(ledger=Ledger()).ainvoke(
            {"trip_id": "t-1", "route": "LIS-OSL", "meal": "fish"}, config=CONTEXT.as_config()
        )
    assert isinstance(info.value.__cause__, ValidationError)


async def test_a_tool_that_takes_a_context_refuses_to_run_without_one() -> None:
    ledger = Ledger()
    with pytest.raises(InvalidArguments, match="needs a ToolCallContext"):
        await book_flight.using(ledger=ledger).ainvoke({"trip_id": "t-1", "route": "LIS-OSL"})
    assert ledger.bookings == {}


async def test_a_tool_whose_dependency_was_never_bound_says_how_to_bind_it() -> None:
    unbound = r"dependencies \['ledger'\] are not bound.*using\(ledger=\.\.\.\)"
    with pytest.raises(WorkflowDefinitionError, match=unbound):
        await book_flight.ainvoke({"trip_id": "t-1", "route": "LIS-OSL"}, config=CONTEXT.as_config())


def test_using_an_undeclared_dependency_lists_the_declared_ones() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"no dependency 'ledgr'; it declares: \['ledger'\]"):
        book_flight.using(ledgr=Ledger())


def test_using_leaves_the_declaration_as_it_was() -> None:
    bound = book_flight.using(ledger=Ledger())
    assert (bound.name, bound.description, bound.args_schema) == (
        book_flight.name,
        book_flight.description,
        book_flight.args_schema,
    )
    assert bound.unbound == () and book_flight.unbound == ("ledger",)


def test_decorator_options_and_an_own_schema() -> None:
    class Cancel(BaseModel):
        booking_id: str = Field(description="what book_flight returned")

    @step_tool(name="cancel_hotel", description="Cancel a hotel booking.", args_schema=Cancel)
    async def cancel(booking_id: str) -> dict[str, Any]:
        return {"booking_id": booking_id}

    assert (cancel.name, cancel.description, cancel.args_schema) == ("cancel_hotel", "Cancel a hotel booking.", Cancel)


# -- what cannot be a step tool -------------------------------------------------------------


async def _no_docstring(trip_id: str) -> dict[str, Any]:
    return {}


async def _unannotated(trip_id) -> dict[str, Any]:
    """Unannotated."""
    return {}


async def _visible_context(trip_id: str, call: ToolCallContext) -> dict[str, Any]:
    """The context before the star."""
    return {}


async def _runnable_config(trip_id: str, config: RunnableConfig) -> dict[str, Any]:
    """The old way."""
    return {}


async def _kwargs(**arguments: Any) -> dict[str, Any]:
    """Anything."""
    return {}


def _sync(trip_id: str) -> dict[str, Any]:
    """Not async."""
    return {}


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (_no_docstring, "step tool '_no_docstring' has no description: give _no_docstring a docstring"),
        (_unannotated, "parameter 'trip_id' has no annotation; annotate it"),
        (_visible_context, "the model would see parameter 'call'; put it after `*`"),
        (_runnable_config, "parameter 'config' is a RunnableConfig; take `*, call: ToolCallContext` instead"),
        (_kwargs, "parameter **arguments cannot be a tool's"),
        (_sync, "step tool '_sync' (_sync) is not async; write it as `async def _sync(...)`"),
    ],
)
def test_a_function_that_cannot_be_a_step_tool_is_refused_naming_why(function: Any, message: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as info:
        step_tool(function)
    assert message in str(info.value)


def test_an_own_schema_must_have_the_models_parameters() -> None:
    class Other(BaseModel):
        reservation_id: str

    with pytest.raises(WorkflowDefinitionError, match=r"has the fields \['reservation_id'\], but .* \['booking_id'\]"):
        step_tool(args_schema=Other)(cancel_flight.function)


# -- in a workflow, both modes --------------------------------------------------------------


class Trip(BaseModel):
    trip_id: str
    route: str


AIRLINE = Agent(
    name="airline", instructions="You book flights.", tools=[book_flight, cancel_flight], model=ScriptedChatModel()
)
TRIP = Workflow(
    name="trip",
    input_model=Trip,
    id_field="trip_id",
    steps=[Step(name="flight", agent=AIRLINE, action=book_flight, compensation=cancel_flight)],
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("direct", [True, False], ids=["fast-path", "ainvoke"])
async def test_a_workflow_of_step_tools_runs_in_either_mode(mode: str, direct: bool) -> None:
    ledger = Ledger()
    model = misbehave("invalid_arguments")  # the guard refuses a first answer with an argument the schema lacks
    agents = agents_using([AIRLINE], models={"airline": ScriptedChatModel(policy=model)}, ledger=ledger)
    settings = RunSettings(direct_tool_calls=direct)
    result = await arun_workflow(
        TRIP, {"trip_id": "t-1", "route": "LIS-OSL"}, agents=agents, mode=mode, settings=settings
    )
    assert result.status is WorkflowStatus.COMPLETED
    assert [e.type for e in result.events] == ["TripStarted", "FlightSucceeded", "TripCompleted"]
    assert ledger.bookings == {
        "t-1/flight/book_flight": {"booking_id": "b-1", "trip_id": "t-1", "route": "LIS-OSL", "seats": 1}
    }
    (rejection,) = result.outcome("flight").rejections
    assert "bogus_field: Extra inputs are not permitted" in rejection


def test_agents_using_refuses_a_dependency_nobody_declares_and_one_left_unbound() -> None:
    typo = r"declares the dependencies \['ledgr'\]; they declare \['ledger'\]"
    with pytest.raises(WorkflowDefinitionError, match=typo):
        agents_using([AIRLINE], ledgr=Ledger())
    with pytest.raises(WorkflowDefinitionError, match=r"tool 'book_flight' of agent 'airline' needs \['ledger'\]"):
        agents_using([AIRLINE])
    assert AIRLINE.tools[0] is book_flight  # the declaration is left as it was
