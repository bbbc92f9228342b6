"""What the lab needs to know of an app's domain, and nothing more.

The fault lab and ``coordinator compare`` are generic: they inject faults through the
seams every app has (models, the bus, the event log, outages) and check the rules
every saga keeps (:mod:`agent_coordinator.lab.invariants`). What only the domain
knows -- how to give its services a fault plan's transient faults and latency, how to
make one of its inputs fail a step for a business reason, what its services must hold
afterwards (money, stock), what a change to it costs -- an app says through
:class:`LabHooks`, named by its :attr:`WorkflowApp.lab
<agent_coordinator.core.app.WorkflowApp.lab>` spec (``package.module:attribute``,
imported only when the lab runs, so that running the app pays nothing for it).

An app without hooks still runs in the lab: its services get no injected faults, no
business failures are injected into its inputs, and only the generic invariants and
the app's own ``check`` judge it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agent_coordinator.core.app import AppEnvironment, AppOptions, WorkflowApp
from agent_coordinator.core.errors import WorkflowDefinitionError
from agent_coordinator.core.events import Event
from agent_coordinator.core.results import WorkflowResult
from agent_coordinator.core.workflow import Workflow
from agent_coordinator.lab.faults import FaultPlan, Saboteur
from agent_coordinator.lab.invariants import InvariantReport, Violation, check_runs

if TYPE_CHECKING:
    from agent_coordinator.lab.compare import ChangeSize

__all__ = ["LabHooks", "judge", "lab_hooks", "world_options"]


@runtime_checkable
class LabHooks(Protocol):
    """An app's domain, as the lab needs it.

    * ``saboteur`` -- turns an input into one whose given step meets a business
      refusal by the services' own rules (None: no business faults injected);
    * ``options(plan, inputs, directory)`` -- the :class:`AppOptions` that give the
      app's services ``plan``'s transient faults, latency and seed, and enough of
      whatever the workload consumes that only faults and the inputs' own failures
      fail runs (``directory`` is for files the options name);
    * ``judge(workflow, env, runs, results)`` -- the invariants over the services'
      state after the runs (the domain's rules on top of the generic ones), or None
      to leave it to :func:`judge`'s default;
    * ``changes(inputs, directory)`` -- the measured changes that add a step to the
      workflow in each mode (``coordinator compare``'s "what a change costs"); empty
      when the app has none to show.
    """

    saboteur: Saboteur | None

    def options(self, plan: FaultPlan, inputs: Sequence[Mapping[str, Any]], directory: Path) -> AppOptions: ...

    def judge(
        self,
        workflow: Workflow,
        env: AppEnvironment,
        runs: Mapping[str, Sequence[Event]],
        results: Sequence[WorkflowResult],
    ) -> InvariantReport | None: ...

    async def changes(self, inputs: Sequence[Mapping[str, Any]], directory: Path) -> list[ChangeSize]: ...


def lab_hooks(app: WorkflowApp) -> LabHooks | None:
    """The hooks ``app.lab`` names, imported now; None when it names none. Raises
    :class:`WorkflowDefinitionError` naming the spec when it cannot be loaded or is
    not :class:`LabHooks`."""
    if app.lab is None:
        return None
    module_name, _, attribute = app.lab.partition(":")
    try:
        hooks = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise WorkflowDefinitionError(
            f"the lab hooks {app.lab!r} of workflow {app.workflow.name!r} cannot be loaded: {exc}"
        ) from exc
    if not isinstance(hooks, LabHooks):
        raise WorkflowDefinitionError(
            f"{app.lab!r} is {type(hooks).__name__}, not LabHooks (saboteur, options, judge, changes); "
            "see agent_coordinator.lab.hooks"
        )
    return hooks


def world_options(
    hooks: LabHooks | None, plan: FaultPlan, inputs: Sequence[Mapping[str, Any]], directory: Path
) -> AppOptions:
    """The app options for ``plan``: the hooks', else only the plan's seed and transient rate."""
    if hooks is not None:
        return hooks.options(plan, inputs, directory)
    return AppOptions(seed=plan.seed, transient_rate=plan.transient_rate)


async def judge(
    hooks: LabHooks | None,
    workflow: Workflow,
    env: AppEnvironment,
    runs: Mapping[str, Sequence[Event]],
    results: Sequence[WorkflowResult],
) -> InvariantReport:
    """The invariant report of a batch: the hooks' judgement, else the generic rules
    plus what the app's own ``check`` finds in its services."""
    report = hooks.judge(workflow, env, runs, results) if hooks is not None else None
    if report is not None:
        return report
    report = check_runs(workflow, {k: list(v) for k, v in runs.items()}, results=results)
    if env.check is not None:
        report.extend(Violation("app-check", None, problem) for problem in await env.check(results))
    return report
