"""Our coordinators, measured through the public API.

Both scenarios open the coordinator exactly as a user would --
``open_coordinator(workflow, agents=..., mode=..., checkpointer=... | bus=...)`` --
and run each input with ``Coordinator.run``; an input counts as done when its
result is ``completed``. Nothing is tuned for the benchmark: the settings, event
log (``MemoryEventLog``) and saga are the defaults.

* :func:`run_orchestration` -- the LangGraph supervisor graph, over the checkpointer
  ``options["checkpointer"]`` names (:func:`benchmarks.backends.open_checkpointer`;
  ``"default"`` is the orchestrator's own ``InMemorySaver``, cleared per run); with
  ``options["supervisor"] == "model"`` the supervisor is model-driven (the same fake
  model picks each agent through a handoff tool);
* :func:`run_choreography` -- the participants on the bus ``options["bus"]`` names
  (opened with ``options["bus_options"]``), each subscribed with ``concurrency``
  handlers (the benchmark's concurrency, so the bus never caps what the driver lets
  in flight).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agent_coordinator import WorkflowStatus, open_coordinator
from agent_coordinator.modes import Choreography, Orchestration
from benchmarks.apps import App, open_app
from benchmarks.backends import open_bus_for_benchmark, open_checkpointer
from benchmarks.measure import Counts, Measurement, Request, count_checkpoint_writes, measure

__all__ = ["run_choreography", "run_orchestration"]


async def run_orchestration(request: Request) -> Measurement:
    """Orchestration mode: one supervisor graph run per input."""
    async with (
        open_app(request) as app,
        open_checkpointer(str(request.options.get("checkpointer", "default"))) as saver,
        open_coordinator(
            app.workflow,
            agents=app.agents,
            mode=Orchestration(checkpointer=saver, supervisor=_supervisor(request, app)),
        ) as coordinator,
    ):
        engine: Any = coordinator.engine
        checkpoints = count_checkpoint_writes(engine.checkpointer)

        async def run_one(item: BaseModel) -> bool:
            result = await coordinator.run(item)
            return result.status is WorkflowStatus.COMPLETED

        def counts() -> Counts:
            return Counts(
                model_calls=app.model.calls,
                tool_calls=app.tool_calls(),
                checkpoint_puts=checkpoints.puts,
                checkpoint_put_writes=checkpoints.put_writes,
            )

        return await measure(request, items=app.items, warmup_items=app.warmup_items, run_one=run_one, counts=counts)


def _supervisor(request: Request, app: App) -> Any:
    """The scenario's own fake model (so its calls are counted) as the supervisor when
    ``options["supervisor"] == "model"``; None for the default rule supervisor."""
    if request.options.get("supervisor", "rule") == "model":
        return app.model
    return None


async def run_choreography(request: Request) -> Measurement:
    """Choreography mode: publish each input's start event, wait for its end."""
    async with (
        open_app(request) as app,
        open_bus_for_benchmark(
            str(request.options.get("bus", "memory://")), **dict(request.options.get("bus_options", {}))
        ) as bus,
        open_coordinator(
            app.workflow,
            agents=app.agents,
            mode=Choreography(bus=bus, concurrency=request.concurrency),
        ) as coordinator,
    ):

        async def run_one(item: BaseModel) -> bool:
            result = await coordinator.run(item)
            return result.status is WorkflowStatus.COMPLETED

        def counts() -> Counts:
            stats = bus.stats()
            return Counts(
                model_calls=app.model.calls,
                tool_calls=app.tool_calls(),
                bus_messages=stats.published,
                bus_deliveries=stats.delivered,
            )

        return await measure(request, items=app.items, warmup_items=app.warmup_items, run_one=run_one, counts=counts)
