"""Workflow definitions: what happens, in which order, owned by whom.

A :class:`Workflow` is an ordered list of :class:`Step` s. It says nothing about
*how* the steps are coordinated: ``graphs`` compiles it into a LangGraph supervisor
graph, ``bus`` into per-agent event subscriptions. Neither coordinator knows any
domain; everything domain-specific is here, in the step's ``facts``.

Example (two steps, not about orders)::

    Workflow(
        name="travel",
        input_model=Trip,
        id_field="trip_id",
        started_event="TripRequested",
        completed_event="TripBooked",
        cancelled_event="TripCancelled",
        steps=[
            Step(name="flight", agent="airline", action="book_flight",
                 compensation="cancel_flight",
                 events=StepEvents(succeeded="FlightBooked", failed="FlightBookingFailed",
                                   compensated="FlightCancelled"),
                 facts=lambda trip, done: {"trip_id": trip["trip_id"], "route": trip["route"]}),
            ...
        ],
    )
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from agent_coordinator.core.errors import InvalidInput, WorkflowDefinitionError

__all__ = ["ApprovalRule", "CompensationFacts", "Facts", "Step", "StepEvents", "Workflow"]

#: ``facts(input, results) -> arguments``: the values the step's action must be
#: called with, computed from the workflow input (JSON-mode dict) and the results of
#: the steps already done (step name -> result dict). The model is shown these facts
#: and the guard rejects any call whose arguments disagree with them.
Facts = Callable[[Mapping[str, Any], Mapping[str, Mapping[str, Any]]], Mapping[str, Any]]

#: ``compensation_facts(result) -> arguments`` for the compensation tool, from the
#: recorded result of the step being undone.
CompensationFacts = Callable[[Mapping[str, Any]], Mapping[str, Any]]

#: ``approval(input, results, parameters) -> reason | None``: why a person must
#: approve the step before it runs, or None when no approval is needed.
#: ``parameters`` are the run's :attr:`RunSettings.parameters` (thresholds, say).
ApprovalRule = Callable[[Mapping[str, Any], Mapping[str, Mapping[str, Any]], Mapping[str, Any]], str | None]


class StepEvents(BaseModel):
    """The three domain events of a step."""

    model_config = ConfigDict(frozen=True)

    succeeded: str = Field(min_length=1, description="e.g. 'InventoryReserved'")
    failed: str = Field(min_length=1, description="e.g. 'InventoryReservationFailed'")
    compensated: str = Field(min_length=1, description="e.g. 'InventoryReleased'")


class Step(BaseModel):
    """One unit of work, owned by one agent.

    * ``action`` is the name of the agent's tool the model must call to do the step;
    * ``compensation`` is the tool that undoes it. It is never chosen by a model: the
      coordinator calls it with ``compensation_facts(result)`` (by default, the
      fields of the step's recorded result that the compensation tool accepts).
      ``None`` means the step needs no undo.
    * ``facts`` computes the action's expected arguments (see :data:`Facts`). By
      default: the input fields whose names the action tool accepts.
    * ``approval`` (see :data:`ApprovalRule`) pauses the run before the step until a
      person approves; a rejection fails the step and compensates the others.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    agent: str = Field(min_length=1)
    action: str = Field(min_length=1)
    compensation: str | None = None
    events: StepEvents
    description: str = ""
    facts: Facts | None = None
    compensation_facts: CompensationFacts | None = None
    approval: ApprovalRule | None = None

    @property
    def title(self) -> str:
        """The step name in CamelCase, e.g. ``payment`` -> ``Payment``; prefixes the
        step's approval events (``PaymentApprovalRequested``, ``PaymentApproved``,
        ``PaymentRejected``) and the events of a run stopped at it because its model
        could not be reached (``PaymentStopped``, ``PaymentResumed``)."""
        return "".join(part[:1].upper() + part[1:] for part in self.name.split("_"))


class Workflow(BaseModel):
    """An ordered saga of steps over a validated input.

    ``input_model`` validates each input; ``id_field`` names the input field that is
    the workflow id (the event ``subject``, the graph thread id, the idempotency-key
    prefix). ``started_event`` is emitted when an input is accepted;
    ``completed_event`` / ``cancelled_event`` end it.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    description: str = ""
    input_model: type[BaseModel]
    id_field: str
    started_event: str
    completed_event: str
    cancelled_event: str
    steps: tuple[Step, ...]

    @model_validator(mode="after")
    def _check_consistent(self) -> Workflow:
        if not self.steps:
            raise WorkflowDefinitionError(f"workflow {self.name!r} has no steps; give at least one Step")
        names = [s.name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise WorkflowDefinitionError(f"workflow {self.name!r}: step names must be unique, repeated: {dupes}")
        if self.id_field not in self.input_model.model_fields:
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: id_field {self.id_field!r} is not a field of "
                f"{self.input_model.__name__}; fields: {sorted(self.input_model.model_fields)}"
            )
        event_names = [self.started_event, self.completed_event, self.cancelled_event]
        for step in self.steps:
            event_names += [step.events.succeeded, step.events.failed, step.events.compensated]
            event_names += [f"{step.title}Stopped", f"{step.title}Resumed"]
            if step.approval is not None:
                event_names += [f"{step.title}ApprovalRequested", f"{step.title}Approved", f"{step.title}Rejected"]
        dupes = sorted({n for n in event_names if event_names.count(n) > 1})
        if dupes:
            raise WorkflowDefinitionError(f"workflow {self.name!r}: event names must be unique, repeated: {dupes}")
        return self

    # -- lookups the coordinators share -------------------------------------------

    def step(self, name: str) -> Step:
        """The step called ``name``; raises WorkflowDefinitionError listing the steps."""
        for step in self.steps:
            if step.name == name:
                return step
        raise WorkflowDefinitionError(
            f"workflow {self.name!r} has no step {name!r}; steps: {[s.name for s in self.steps]}"
        )

    def index(self, name: str) -> int:
        """Position of step ``name`` in the saga."""
        return self.steps.index(self.step(name))

    @property
    def agent_names(self) -> list[str]:
        """The agents the workflow needs, in first-use order."""
        return list(dict.fromkeys(s.agent for s in self.steps))

    @property
    def event_types(self) -> list[str]:
        """Every event type this workflow can emit."""
        types = [self.started_event]
        for s in self.steps:
            types += [s.events.succeeded, s.events.failed, s.events.compensated]
        return [*types, self.completed_event, self.cancelled_event]

    def validate_input(self, raw: Any, *, context: dict[str, Any] | None = None) -> BaseModel:
        """Validate one input against ``input_model``.

        ``context`` is handed to pydantic validators (e.g. the catalogue of known
        SKUs). Raises :class:`InvalidInput` listing every offending field, each with
        the validator's own message (without pydantic's ``"Value error, "`` prefix).
        """
        try:
            if isinstance(raw, (str, bytes)):
                return self.input_model.model_validate_json(raw, context=context)
            if isinstance(raw, self.input_model):
                return raw
            if isinstance(raw, BaseModel):
                raw = raw.model_dump(mode="json")
            return self.input_model.model_validate(raw, context=context)
        except ValidationError as exc:
            errors = [(".".join(str(p) for p in e["loc"]) or "<root>", _message(e)) for e in exc.errors()]
            detail = "; ".join(f"{path}: {msg}" for path, msg in errors)
            raise InvalidInput(f"invalid {self.input_model.__name__}: {detail}", errors=errors) from exc

    def workflow_id(self, validated: BaseModel) -> str:
        """The id of the workflow run for a validated input."""
        return str(getattr(validated, self.id_field))


def _message(error: ErrorDetails) -> str:
    """One validation error's message as a user should read it.

    pydantic prefixes what a validator raised with its kind ("Value error, unknown SKU
    ..."); the validator's own message already says what is wrong and what to do.
    """
    if error["type"] in ("value_error", "assertion_error"):
        cause = (error.get("ctx") or {}).get("error")
        if cause is not None and str(cause):
            return str(cause)
    return error["msg"]
