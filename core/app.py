"""What the CLI needs to run a workflow from a file: the workflow and its world.

A :class:`WorkflowApp` pairs a :class:`~agent_coordinator.core.workflow.Workflow` with a
factory for the environment its runs need (agents with their models and tools, the
services those tools call) and declares the run parameters its rules read
(:class:`Parameter`: name, type, default), so that ``--param`` can refuse a name or
value the workflow does not know. The flagship is
``agent_coordinator.examples.orders:order_fulfilment_app``; ``coordinator run FILE --workflow
mypackage.travel:app`` runs a user's own.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_coordinator.core.errors import WorkflowDefinitionError
from agent_coordinator.core.results import WorkflowResult
from agent_coordinator.core.workflow import Workflow

if TYPE_CHECKING:
    from agent_coordinator.core.agent import Agent

__all__ = [
    "SERVICE_ATTEMPTS",
    "AppEnvironment",
    "AppOptions",
    "InvalidParameter",
    "Parameter",
    "WorkflowApp",
    "load_app",
]


@dataclass(frozen=True)
class AppOptions:
    """Knobs the CLI passes to an app's environment factory.

    * ``seed``, ``transient_rate``, ``scenario`` -- the sandbox world and its faults;
    * ``services`` -- base URL of services that run elsewhere (``coordinator
      sandbox``); None: in-process services;
    * ``store`` -- where in-process services keep their state so that another
      process (a resume, an approval, a worker) sees it; None: memory only;
    * ``models`` -- the ``--model`` values: a default spec and ``AGENT=SPEC``
      overrides (``agent_coordinator.agents.models.parse_model_options``); empty: every agent ``fake``;
    * ``record`` / ``replay`` -- a cassette directory to record every model request
      and answer to, or to replay them from (``agent_coordinator.agents.cassette``).
    """

    seed: int = 0
    transient_rate: float = 0.0
    scenario: str | None = None
    services: str | None = None
    store: str | None = None
    models: tuple[str, ...] = ()
    record: str | None = None
    replay: str | None = None


#: An :attr:`AppEnvironment.extras` key: a callable returning how many requests the
#: app's services have answered so far (the lab reports service calls per run).
SERVICE_ATTEMPTS = "service_attempts"


@dataclass
class AppEnvironment:
    """A live environment for runs: the agents, and what to check afterwards.

    * ``validation_context`` is passed to input validation (e.g. known SKUs);
    * ``check(results)`` returns human-readable inconsistencies in the services'
      state after the given runs (empty when consistent); async, since the
      services may be in another process;
    * ``extras`` -- whatever else the app's own hooks need (its lab hooks read the
      in-process sandbox from it); :data:`SERVICE_ATTEMPTS` is read by the lab.
    """

    agents: Sequence[Agent]
    validation_context: dict[str, Any] | None = None
    check: Callable[[Sequence[WorkflowResult]], Awaitable[list[str]]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class InvalidParameter(WorkflowDefinitionError):
    """A run parameter (``--param KEY=VALUE``) that the app does not declare, or whose
    value is not of the declared type; the message names both and lists what is
    declared."""


#: The types a parameter may have: what a command line can spell unambiguously.
ParameterType = type[int] | type[float] | type[str] | type[bool]


@dataclass(frozen=True)
class Parameter:
    """A run parameter a workflow's rules read (``RunSettings.parameters``).

    * ``name`` -- the key (``--param NAME=VALUE``);
    * ``type`` -- ``int``, ``float``, ``str`` or ``bool``; a value is converted to it
      and refused when it does not fit (no rounding, no ``"yes"`` for ``True``);
    * ``default`` -- the value when not given (``None``: the rule's "not set");
    * ``description`` -- one line for ``--help`` and error messages.
    """

    name: str
    type: ParameterType
    default: Any = None
    description: str = ""

    def convert(self, text: str) -> Any:
        """``text`` (from the command line) as a value of this parameter's type.

        Raises :class:`InvalidParameter` naming the parameter, the value and the type."""
        try:
            if self.type is str:
                return text
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if self.type is bool and isinstance(value, bool):
            return value
        if self.type is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if self.type is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        wanted = {int: "an integer", float: "a number", bool: "true or false"}.get(self.type, self.type.__name__)
        raise InvalidParameter(f"--param {self.name}={text!r}: {self.name} must be {wanted} ({self.description})")


@dataclass(frozen=True)
class WorkflowApp:
    """A workflow and everything about its domain that generic code may need.

    * ``environment`` -- the factory of the environment its runs need (agents,
      services, checks) for given :class:`AppOptions`;
    * ``parameters`` -- the run parameters its rules read (none by default);
    * ``lab`` -- ``package.module:attribute`` of its
      :class:`~agent_coordinator.lab.hooks.LabHooks` (fault injection into its
      services, its invariants, its example changes), imported only when the lab
      runs; None: the lab uses the generic parts only;
    * ``services`` -- ``package.module:attribute`` of a function serving its
      services over HTTP for other processes (``coordinator sandbox``):
      ``serve(*, host: str, port: int, store: Path | None, scenario: Path | None)``,
      blocking until SIGINT or SIGTERM; None: it has none to serve.

    The generic code -- the CLI, the lab, the Studio entry, the test fixtures --
    talks only to this; the domain stays in the app's own folder.
    """

    workflow: Workflow
    environment: Callable[[AppOptions], AbstractAsyncContextManager[AppEnvironment]]
    parameters: tuple[Parameter, ...] = ()
    lab: str | None = None
    services: str | None = None

    def serve_services(self, *, host: str, port: int, store: Path | None, scenario: Path | None) -> None:
        """Serve this app's services over HTTP until SIGINT or SIGTERM (see ``services``).

        Raises :class:`WorkflowDefinitionError` when the app has no services to serve,
        or its ``services`` spec cannot be loaded."""
        if self.services is None:
            raise WorkflowDefinitionError(
                f"workflow {self.workflow.name!r} has no services to serve: its WorkflowApp names none (services=)"
            )
        serve = _load_attribute(self.services, f"the services of workflow {self.workflow.name!r}")
        serve(host=host, port=port, store=store, scenario=scenario)

    def resolve_parameters(self, given: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, Any]:
        """Every declared parameter's value: ``given`` (``name -> text`` from the command
        line) converted to its type, else its default.

        Raises :class:`InvalidParameter` for a name the app does not declare (listing
        the declared ones) or a value of the wrong type.
        """
        declared = {p.name: p for p in self.parameters}
        values = {p.name: p.default for p in self.parameters}
        for name, text in given.items() if isinstance(given, Mapping) else given:
            parameter = declared.get(name)
            if parameter is None:
                known = ", ".join(f"{p.name} ({p.type.__name__})" for p in self.parameters) or "none"
                raise InvalidParameter(
                    f"--param {name}: workflow {self.workflow.name!r} has no parameter {name!r}; it declares: {known}"
                )
            values[name] = parameter.convert(text)
        return values


def load_app(spec: str, *, origin: str = "--workflow") -> WorkflowApp:
    """Import ``package.module:attribute`` and check that it is a WorkflowApp.

    Raises :class:`WorkflowDefinitionError` naming ``spec`` and ``origin`` (where the
    spec came from: the ``--workflow`` option, a run's record) when the module
    cannot be imported -- whatever its import raised -- or the attribute is not a
    WorkflowApp.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise WorkflowDefinitionError(f"{origin} {spec!r} must look like 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkflowDefinitionError(f"cannot import {module_name!r} for {origin} {spec!r}: {exc}") from exc
    except Exception as exc:  # a broken module: its import raised; say so instead of a traceback
        raise WorkflowDefinitionError(
            f"importing {module_name!r} for {origin} {spec!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, WorkflowApp):
        raise WorkflowDefinitionError(
            f"{spec!r} is {type(app).__name__}, not a WorkflowApp; define "
            "`app = WorkflowApp(workflow=..., environment=...)` in that module"
        )
    return app


def _load_attribute(spec: str, what: str) -> Any:
    """``package.module:attribute`` imported, or a :class:`WorkflowDefinitionError`
    naming ``what`` and the spec."""
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise WorkflowDefinitionError(f"{what}: cannot load {spec!r}: {exc}") from exc
