"""Workflow definitions: what happens, in which order, owned by whom.

A :class:`Workflow` is an ordered list of :class:`Step` s. It says nothing about
*how* the steps are coordinated: ``graphs`` compiles it into a LangGraph supervisor
graph, ``bus`` into per-agent event subscriptions. Neither coordinator knows any
domain; everything domain-specific is here, in the step's ``facts``.

Example (three steps, not about orders; docs/guide.md builds it from nothing)::

    Workflow(
        name="trip",
        input_model=Trip,
        id_field="trip_id",
        steps=[
            Step(name="flight", agent=airline, action=book_flight, compensation=cancel_flight),
            Step(name="hotel", agent=hotelier, action=book_hotel, compensation=cancel_hotel),
            Step(name="car", agent=rental, action=rent_car, compensation=return_car,
                 facts=lambda trip, done: {"trip_id": trip["trip_id"], "city": trip["city"],
                                           "days": trip["nights"] + 1}),
        ],
    )

A step names its agent and tools by object or by name (``agent="airline"``,
``action="book_flight"``): objects are turned into their names here, so the
definition is plain data either way, and a typo is caught when the module loads.

**Event names** default from the names (:func:`event_title` turns ``car_rental``
into ``CarRental`` and ``order-fulfilment`` into ``OrderFulfilment``):

==========================  =====================================================
workflow ``trip``           ``TripStarted``, ``TripCompleted``, ``TripCancelled``
step ``flight``             ``FlightSucceeded``, ``FlightFailed``, ``FlightCompensated``
==========================  =====================================================

Name them yourself -- ``started_event=...``, ``events=StepEvents(...)`` -- when the
domain has better words (``InventoryReserved``, ``PaymentRefunded``). The events
derived from a step's events or title are the same either way:
``<compensated>Failed`` (an undo that could not complete), ``<Title>Stopped`` and
``<Title>Resumed`` (a model outage), ``<Title>ApprovalRequested``,
``<Title>Approved`` and ``<Title>Rejected`` (a step that needs approval).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from agent_coordinator.core.agent import Agent
from agent_coordinator.core.errors import InvalidInput, WorkflowDefinitionError

__all__ = ["ApprovalRule", "CompensationFacts", "Facts", "Step", "StepEvents", "Workflow", "event_title"]

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

_WORD_SEPARATORS = re.compile(r"[-_.]+")
_SHOWN_CHARACTERS = 60


def event_title(name: str) -> str:
    """The CamelCase word a step's or workflow's events start with: ``flight`` ->
    ``Flight``, ``car_rental`` -> ``CarRental``, ``order-fulfilment`` ->
    ``OrderFulfilment`` (each part's first letter upper-cased, the rest kept)."""
    return "".join(part[:1].upper() + part[1:] for part in _WORD_SEPARATORS.split(name))


def _shown(value: Any) -> str:
    """``value`` as a message names it: its repr, cut short, and its type."""
    text = repr(value)
    if len(text) > _SHOWN_CHARACTERS:
        text = text[:_SHOWN_CHARACTERS] + "..."
    return f"{text} ({type(value).__name__})"


class StepEvents(BaseModel):
    """The three domain events of a step; by default ``<Title>Succeeded``,
    ``<Title>Failed`` and ``<Title>Compensated`` (see :meth:`named_after`)."""

    model_config = ConfigDict(frozen=True)

    succeeded: str = Field(min_length=1, description="e.g. 'InventoryReserved'")
    failed: str = Field(min_length=1, description="e.g. 'InventoryReservationFailed'")
    compensated: str = Field(min_length=1, description="e.g. 'InventoryReleased'")

    @classmethod
    def named_after(cls, step: str) -> StepEvents:
        """The default events of step ``step``: ``flight`` -> ``FlightSucceeded``,
        ``FlightFailed``, ``FlightCompensated``."""
        title = event_title(step)
        return cls(succeeded=f"{title}Succeeded", failed=f"{title}Failed", compensated=f"{title}Compensated")


class Step(BaseModel):
    """One unit of work, owned by one agent.

    * ``agent`` is the :class:`~agent_coordinator.core.agent.Agent` that owns the
      step, or its name;
    * ``action`` is the agent's tool the model must call to do the step (the tool,
      e.g. one made with ``@step_tool``, or its name);
    * ``compensation`` is the tool that undoes it. It is never chosen by a model: the
      coordinator calls it with ``compensation_facts(result)`` (by default, the
      fields of the step's recorded result that the compensation tool accepts).
      ``None`` means the step needs no undo.
    * ``events`` names the step's three events; by default they are named after the
      step (``flight`` -> ``FlightSucceeded``, ``FlightFailed``,
      ``FlightCompensated``; see :class:`StepEvents`);
    * ``facts`` computes the action's expected arguments (see :data:`Facts`). By
      default: the input fields whose names the action tool accepts.
    * ``approval`` (see :data:`ApprovalRule`) pauses the run before the step until a
      person approves; a rejection fails the step and compensates the others.

    Objects are stored as their names (``step.agent == "airline"``). When the agent
    is given as an object, its tools must include the action and the compensation;
    either way :class:`WorkflowDefinitionError` names the step and the offending
    value.
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

    # Spelled out so that type checkers accept objects where the stored field is a
    # name (pydantic's generated signature would say ``agent: str``).
    def __init__(
        self,
        *,
        name: str,
        agent: Agent | str,
        action: BaseTool | str,
        compensation: BaseTool | str | None = None,
        events: StepEvents | None = None,
        description: str = "",
        facts: Facts | None = None,
        compensation_facts: CompensationFacts | None = None,
        approval: ApprovalRule | None = None,
    ) -> None:
        super().__init__(
            name=name,
            agent=agent,
            action=action,
            compensation=compensation,
            events=events,
            description=description,
            facts=facts,
            compensation_facts=compensation_facts,
            approval=approval,
        )

    @model_validator(mode="before")
    @classmethod
    def _names_of_objects(cls, data: Any) -> Any:
        """Agents and tools given as objects become their names; absent events get
        the step's default names."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        name = data.get("name")
        step = f"step {name!r}"
        agent = data.get("agent")
        if isinstance(agent, Agent):
            data["agent"] = agent.name
        elif not isinstance(agent, str) and agent is not None:
            raise WorkflowDefinitionError(f"{step}: agent must be an Agent or an agent's name, not {_shown(agent)}")
        for role in ("action", "compensation"):
            tool = data.get(role)
            if isinstance(tool, BaseTool):
                data[role] = tool.name
            elif callable(tool):
                function = getattr(tool, "__name__", repr(tool))
                raise WorkflowDefinitionError(
                    f"{step}: {role} {function} is a function, not a tool; decorate it with @step_tool "
                    "(agent_coordinator.step_tool) or pass a LangChain tool"
                )
            elif not isinstance(tool, str) and tool is not None:
                raise WorkflowDefinitionError(f"{step}: {role} must be a tool or a tool's name, not {_shown(tool)}")
            named = data.get(role)
            if isinstance(agent, Agent) and isinstance(named, str):
                owned = sorted(t.name for t in agent.tools)
                if named not in owned:
                    raise WorkflowDefinitionError(
                        f"{step}: its {role} tool {named!r} is not among the tools of agent {agent.name!r} "
                        f"{owned}; add it to the agent's tools, or give the step the agent that owns it"
                    )
        if data.get("events") is None and isinstance(name, str):
            data["events"] = StepEvents.named_after(name)
        return data

    @property
    def title(self) -> str:
        """The step name in CamelCase, e.g. ``payment`` -> ``Payment``; prefixes the
        step's default events, its approval events (``PaymentApprovalRequested``,
        ``PaymentApproved``, ``PaymentRejected``) and the events of a run stopped at
        it because its model could not be reached (``PaymentStopped``,
        ``PaymentResumed``)."""
        return event_title(self.name)


class Workflow(BaseModel):
    """An ordered saga of steps over a validated input.

    ``input_model`` validates each input; ``id_field`` names the input field that is
    the workflow id (the event ``subject``, the graph thread id, the idempotency-key
    prefix). ``started_event`` is emitted when an input is accepted;
    ``completed_event`` / ``cancelled_event`` end it. They default to the
    workflow's name: ``trip`` -> ``TripStarted``, ``TripCompleted``,
    ``TripCancelled``.

    Raises :class:`WorkflowDefinitionError` (no steps, repeated step or event names,
    an ``id_field`` the input does not have) naming what is wrong.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    description: str = ""
    input_model: type[BaseModel]
    id_field: str
    started_event: str = Field(min_length=1)
    completed_event: str = Field(min_length=1)
    cancelled_event: str = Field(min_length=1)
    steps: tuple[Step, ...]

    # Spelled out so that the event names read as optional to type checkers.
    def __init__(
        self,
        *,
        name: str,
        input_model: type[BaseModel],
        id_field: str,
        steps: Sequence[Step],
        description: str = "",
        started_event: str | None = None,
        completed_event: str | None = None,
        cancelled_event: str | None = None,
    ) -> None:
        super().__init__(
            name=name,
            input_model=input_model,
            id_field=id_field,
            steps=steps,
            description=description,
            started_event=started_event,
            completed_event=completed_event,
            cancelled_event=cancelled_event,
        )

    @model_validator(mode="before")
    @classmethod
    def _default_event_names(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            return data
        title = event_title(data["name"])
        defaults = {"started_event": "Started", "completed_event": "Completed", "cancelled_event": "Cancelled"}
        return {**data, **{key: f"{title}{word}" for key, word in defaults.items() if data.get(key) is None}}

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
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: event names must be unique, repeated: {dupes}; name the events of "
                "the steps involved yourself (Step(events=StepEvents(...)))"
            )
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
