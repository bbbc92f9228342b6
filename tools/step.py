"""``@step_tool``: a step's tool from a plain async function.

::

    @step_tool
    async def book_flight(trip_id: str, route: str, *, ledger: Ledger, call: ToolCallContext) -> dict[str, Any]:
        \"\"\"Book a seat on a flight of the route for the trip. Returns {booking_id, status}.\"\"\"
        return ledger.book(call.idempotency_key, trip_id=trip_id, kind="flight", what=route)

The contract of a step tool:

* **The function is async.** Its name is the tool's name, its docstring the tool's
  description, which the model reads (``@step_tool(name=..., description=...)``
  overrides them; a tool without either is refused).
* **The parameters before ``*`` are the model's arguments.** Each is annotated; the
  argument schema is a pydantic model built from them (defaults and
  ``Annotated[int, Field(gt=0, description=...)]`` included), closed to any other
  argument. ``@step_tool(args_schema=Model)`` gives a schema of your own instead,
  whose fields must be exactly those parameters.
* **Keyword-only parameters are the coordinator's; the model never sees them.** The
  one annotated :class:`~agent_coordinator.core.context.ToolCallContext` receives
  the call's context (workflow id, step, action and the idempotency key to send
  with the effect). Any other is a *dependency* (a client, a ledger): bound with
  :meth:`StepTool.using` or :func:`agents_using` when the run's environment is
  built, so that tools and agents can be defined once, at module level, and a
  workflow's steps can name them as objects.
* **Arguments that fail the schema raise**
  :class:`~agent_coordinator.core.errors.InvalidArguments` naming each field (a
  model's bad call is re-asked); a tool that takes a ``ToolCallContext`` called
  without one raises it too: an effect must not run without its idempotency key.
* **What the function returns is the step's recorded result**: return a JSON
  object (a dict or a pydantic model). The compensation tool is called with the
  fields of it that it accepts (or ``Step.compensation_facts``).

A step tool is a LangChain ``StructuredTool``: any chat model binds it, and
``await tool.ainvoke(arguments, config=ToolCallContext(...).as_config())`` calls it
outside a coordinator. The step runner's fast path (``RunSettings.direct_tool_calls``)
validates with the schema and awaits its coroutine directly, as for any
``StructuredTool``.
"""

# No ``from __future__ import annotations``: LangChain finds a tool coroutine's
# RunnableConfig parameter by its evaluated type hints, on every call.

import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, overload

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, create_model

from agent_coordinator.core.agent import Agent
from agent_coordinator.core.context import ToolCallContext, tool_call_context
from agent_coordinator.core.errors import InvalidArguments, WorkflowDefinitionError

__all__ = ["StepFunction", "StepTool", "agents_using", "step_tool"]

#: What ``@step_tool`` decorates: an async function returning the step's result.
StepFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class _Parameters:
    """How a step function's parameters divide between the model and the coordinator."""

    arguments: tuple[str, ...]  # the model's, in order
    context: str | None  # the ToolCallContext parameter, if any
    dependencies: tuple[str, ...]  # every other keyword-only parameter
    required: frozenset[str]  # the dependencies without a default


class StepTool(StructuredTool):
    """A tool made by :func:`step_tool` (see the module docstring for its contract).

    ``function`` is the decorated function; ``dependencies`` the names of its
    keyword-only dependency parameters, ``unbound`` those still without a value.
    :meth:`using` returns a copy with dependencies bound, under the same name and
    schema.
    """

    _function: StepFunction = PrivateAttr()
    _parameters: _Parameters = PrivateAttr()
    _bound: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def function(self) -> StepFunction:
        return self._function

    @property
    def dependencies(self) -> tuple[str, ...]:
        return self._parameters.dependencies

    @property
    def unbound(self) -> tuple[str, ...]:
        """The required dependencies not bound yet; calling the tool before they are fails."""
        return tuple(sorted(self._parameters.required - self._bound.keys()))

    def using(self, **dependencies: Any) -> "StepTool":
        """This tool with ``dependencies`` bound (added to any bound before).

        Raises :class:`WorkflowDefinitionError` for a name the function does not
        declare as a keyword-only parameter, listing the ones it does.
        """
        unknown = sorted(set(dependencies) - set(self._parameters.dependencies))
        if unknown:
            declared = list(self._parameters.dependencies) or "none"
            raise WorkflowDefinitionError(
                f"tool {self.name!r} has no dependency {', '.join(map(repr, unknown))}; it declares: {declared} "
                f"(the keyword-only parameters of {self._function.__qualname__} other than its ToolCallContext)"
            )
        return _build(
            self._function,
            name=self.name,
            description=self.description,
            schema=self._schema,
            parameters=self._parameters,
            bound={**self._bound, **dependencies},
        )

    @property
    def _schema(self) -> type[BaseModel]:
        schema = self.args_schema
        assert isinstance(schema, type) and issubclass(schema, BaseModel)  # _build gives a pydantic model
        return schema

    def _parse_input(self, tool_input: str | dict[str, Any], tool_call_id: str | None) -> str | dict[str, Any]:
        # LangChain raises pydantic's ValidationError; the coordinator acts on
        # StepErrors, so a model's bad call becomes a re-ask, not a crash.
        try:
            return super()._parse_input(tool_input, tool_call_id)
        except ValidationError as exc:
            raise InvalidArguments(f"invalid arguments for {self.name}: {_fields_at_fault(exc)}") from exc


def _fields_at_fault(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<args>'}: {e['msg']}" for e in exc.errors())


@overload
def step_tool(function: StepFunction, /) -> StepTool: ...


@overload
def step_tool(
    *, name: str | None = None, description: str | None = None, args_schema: type[BaseModel] | None = None
) -> Callable[[StepFunction], StepTool]: ...


def step_tool(
    function: StepFunction | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    args_schema: type[BaseModel] | None = None,
) -> StepTool | Callable[[StepFunction], StepTool]:
    """Make a step's tool of an async function: ``@step_tool`` or
    ``@step_tool(name=..., description=..., args_schema=...)``.

    See the module docstring for the contract. Raises
    :class:`WorkflowDefinitionError` when the function cannot be one, naming the
    function and the parameter at fault: not async, no description, a parameter of
    the model's without an annotation, ``*args``/``**kwargs``, a
    ``RunnableConfig`` parameter, a ``ToolCallContext`` the model would see, or an
    ``args_schema`` whose fields are not the model's parameters.
    """

    def decorate(function: StepFunction) -> StepTool:
        tool_name = name or function.__name__
        parameters, fields = _read_parameters(function, tool_name)
        text = description if description is not None else inspect.getdoc(function)
        if not text:
            raise WorkflowDefinitionError(
                f"step tool {tool_name!r} has no description: give {function.__qualname__} a docstring saying "
                "what it does and returns (the model reads it), or pass @step_tool(description=...)"
            )
        if args_schema is None:
            schema = _closed_schema(tool_name, fields)
        else:
            declared = set(args_schema.model_fields)
            if declared != set(parameters.arguments):
                raise WorkflowDefinitionError(
                    f"step tool {tool_name!r}: args_schema {args_schema.__name__} has the fields {sorted(declared)}, "
                    f"but {function.__qualname__} takes the model's arguments {sorted(parameters.arguments)}; "
                    "make them the same"
                )
            schema = args_schema
        return _build(function, name=tool_name, description=text, schema=schema, parameters=parameters, bound={})

    return decorate if function is None else decorate(function)


def _closed_schema(name: str, fields: Mapping[str, Any]) -> type[BaseModel]:
    """The model's arguments as a pydantic model refusing any other argument."""
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def _read_parameters(function: StepFunction, tool: str) -> tuple[_Parameters, dict[str, Any]]:
    """Split ``function``'s parameters into the model's (with their schema fields)
    and the coordinator's (the context and the dependencies)."""
    where = f"step tool {tool!r} ({function.__qualname__})"
    if not inspect.iscoroutinefunction(function):
        raise WorkflowDefinitionError(f"{where} is not async; write it as `async def {function.__name__}(...)`")
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:  # a NameError, or whatever an annotation's evaluation raises
        raise WorkflowDefinitionError(
            f"{where}: its annotations cannot be resolved ({type(exc).__name__}: {exc}); import the types it "
            "names at module level, outside `if TYPE_CHECKING:`"
        ) from exc
    fields: dict[str, Any] = {}
    context: str | None = None
    dependencies: list[str] = []
    required: set[str] = set()
    for parameter in inspect.signature(function).parameters.values():
        annotation = hints.get(parameter.name, inspect.Parameter.empty)
        bare = typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            stars = (
                1 if parameter.kind is parameter.VAR_POSITIONAL else 2 if parameter.kind is parameter.VAR_KEYWORD else 0
            )
            shown = "*" * stars
            raise WorkflowDefinitionError(
                f"{where}: parameter {shown}{parameter.name} cannot be a tool's; take named parameters only "
                "(the model's before `*`, the coordinator's after it)"
            )
        if bare is RunnableConfig:
            raise WorkflowDefinitionError(
                f"{where}: parameter {parameter.name!r} is a RunnableConfig; take `*, call: ToolCallContext` "
                "instead, and the coordinator passes the call's context there"
            )
        if parameter.kind is parameter.KEYWORD_ONLY:
            if bare is ToolCallContext:
                if context is not None:
                    raise WorkflowDefinitionError(
                        f"{where}: two ToolCallContext parameters ({context!r}, {parameter.name!r}); keep one"
                    )
                context = parameter.name
            else:
                dependencies.append(parameter.name)
                if parameter.default is parameter.empty:
                    required.add(parameter.name)
            continue
        if bare is ToolCallContext:
            raise WorkflowDefinitionError(
                f"{where}: the model would see parameter {parameter.name!r}; put it after `*` "
                f"(`*, {parameter.name}: ToolCallContext`): keyword-only parameters are the coordinator's"
            )
        if annotation is inspect.Parameter.empty:
            raise WorkflowDefinitionError(
                f"{where}: parameter {parameter.name!r} has no annotation; annotate it: the model's argument "
                "schema is built from the annotations"
            )
        if parameter.name == "config":
            raise WorkflowDefinitionError(
                f"{where}: a model's argument cannot be named 'config' (LangChain passes the run's config "
                "under that name); rename it"
            )
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    parameters = _Parameters(
        arguments=tuple(fields), context=context, dependencies=tuple(dependencies), required=frozenset(required)
    )
    return parameters, fields


def _build(
    function: StepFunction,
    *,
    name: str,
    description: str,
    schema: type[BaseModel],
    parameters: _Parameters,
    bound: Mapping[str, Any],
) -> StepTool:
    bound = dict(bound)

    # LangChain's convention for a coroutine: the validated arguments by keyword, and
    # the run's config in the parameter annotated RunnableConfig. LangChain's ainvoke,
    # the step runner's fast path and anything else that awaits a StructuredTool's
    # coroutine therefore call a step tool unchanged.
    async def coroutine(config: RunnableConfig, **arguments: Any) -> Any:
        missing = sorted(parameters.required - bound.keys())
        if missing:
            raise WorkflowDefinitionError(
                f"tool {name!r} cannot run: its dependencies {missing} are not bound; build its agent with "
                f"{name}.using({missing[0]}=...) or agents_using(agents, {missing[0]}=...)"
            )
        if parameters.context is not None:
            arguments[parameters.context] = tool_call_context(config)
        return await function(**arguments, **bound)

    tool = StepTool(name=name, description=description, args_schema=schema, coroutine=coroutine)
    tool._function = function
    tool._parameters = parameters
    tool._bound = bound
    return tool


def agents_using(
    agents: Iterable[Agent], *, models: Mapping[str, BaseChatModel] | None = None, **dependencies: Any
) -> list[Agent]:
    """The agents as a run uses them: each with its model from ``models`` (by agent
    name; an agent not named keeps its own) and each of its step tools bound to the
    ``dependencies`` it declares (other tools are kept as they are).

    Raises :class:`WorkflowDefinitionError` naming the tool and the agent when a step
    tool is left without a dependency it requires, or naming the dependency when no
    tool of these agents declares it (a misspelt name would otherwise go unused).
    ``agents`` are not changed: pydantic copies are returned.
    """
    agents = list(agents)
    models = models or {}
    declared = {
        name for agent in agents for tool in agent.tools if isinstance(tool, StepTool) for name in tool.dependencies
    }
    unknown = sorted(set(dependencies) - declared)
    if unknown:
        raise WorkflowDefinitionError(
            f"no step tool of agents {[a.name for a in agents]} declares the dependencies {unknown}; they declare "
            f"{sorted(declared) or 'none'} (their keyword-only parameters)"
        )
    ready: list[Agent] = []
    for agent in agents:
        tools = []
        for tool in agent.tools:
            if isinstance(tool, StepTool):
                wanted = {k: v for k, v in dependencies.items() if k in tool.dependencies}
                tool = tool.using(**wanted) if wanted else tool
                if tool.unbound:
                    raise WorkflowDefinitionError(
                        f"tool {tool.name!r} of agent {agent.name!r} needs {list(tool.unbound)}; pass "
                        f"agents_using(..., {tool.unbound[0]}=...)"
                    )
            tools.append(tool)
        ready.append(agent.model_copy(update={"tools": tools, "model": models.get(agent.name, agent.model)}))
    return ready
