"""What the CLI needs to run a workflow from a file: the workflow and its world.

A :class:`WorkflowApp` pairs a :class:`~coordinator.workflow.Workflow` with a
factory for the environment its runs need (agents with their models and tools, the
services those tools call). The flagship is ``agents.orders:order_fulfilment_app``;
``coordinator run FILE --workflow mypackage.travel:app`` runs a user's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coordinator.errors import WorkflowDefinitionError
from coordinator.results import WorkflowResult
from coordinator.workflow import Workflow

if TYPE_CHECKING:
    from agents.agent import Agent

__all__ = ["AppEnvironment", "AppOptions", "WorkflowApp", "load_app"]


@dataclass(frozen=True)
class AppOptions:
    """Knobs the CLI passes to an app's environment factory.

    * ``seed``, ``transient_rate``, ``scenario`` -- the sandbox world and its faults;
    * ``services`` -- base URL of services that run elsewhere (``coordinator
      sandbox``); None: in-process services;
    * ``store`` -- where in-process services keep their state so that another
      process (a resume, an approval, a worker) sees it; None: memory only;
    * ``models`` -- the ``--model`` values: a default spec and ``AGENT=SPEC``
      overrides (``agents.models.parse_model_options``); empty: every agent ``fake``;
    * ``record`` / ``replay`` -- a cassette directory to record every model request
      and answer to, or to replay them from (``agents.cassette``).
    """

    seed: int = 0
    transient_rate: float = 0.0
    scenario: str | None = None
    services: str | None = None
    store: str | None = None
    models: tuple[str, ...] = ()
    record: str | None = None
    replay: str | None = None


@dataclass
class AppEnvironment:
    """A live environment for runs: the agents, and what to check afterwards.

    * ``validation_context`` is passed to input validation (e.g. known SKUs);
    * ``check(results)`` returns human-readable inconsistencies in the services'
      state after the given runs (empty when consistent); async, since the
      services may be in another process.
    """

    agents: Sequence[Agent]
    validation_context: dict[str, Any] | None = None
    check: Callable[[Sequence[WorkflowResult]], Awaitable[list[str]]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowApp:
    """A workflow and the factory of the environment its runs need."""

    workflow: Workflow
    environment: Callable[[AppOptions], AbstractAsyncContextManager[AppEnvironment]]


def load_app(spec: str) -> WorkflowApp:
    """Import ``package.module:attribute`` and check that it is a WorkflowApp."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise WorkflowDefinitionError(f"--workflow {spec!r} must look like 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkflowDefinitionError(f"cannot import {module_name!r} for --workflow {spec!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, WorkflowApp):
        raise WorkflowDefinitionError(
            f"{spec!r} is {type(app).__name__}, not a WorkflowApp; define "
            "`app = WorkflowApp(workflow=..., environment=...)` in that module"
        )
    return app
