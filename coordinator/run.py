"""The public entry: run a workflow, in the mode a flag picks.

``mode`` is the only thing in the public API that depends on the coordination mode;
everything else (the workflow, the agents, the results, the events) is the same in
both. This module is the one place that knows both coordinators; it imports them
lazily so the kernel does not depend on ``graphs`` or ``bus``.

::

    async with open_coordinator(workflow, agents=agents, mode="choreography") as coordinator:
        result = await coordinator.run({"order_id": "o-1", ...})

    result = run_workflow(workflow, order, agents=agents, mode="orchestration")
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from coordinator.errors import CoordinatorError
from coordinator.eventlog import EventLog, MemoryEventLog
from coordinator.events import Clock, EventFactory
from coordinator.results import WorkflowResult
from coordinator.saga import Saga
from coordinator.settings import RunSettings
from coordinator.workflow import Workflow

if TYPE_CHECKING:
    from agents.agent import Agent

__all__ = ["MODES", "Coordinator", "Engine", "Mode", "arun_workflow", "open_coordinator", "run_workflow"]

Mode = Literal["orchestration", "choreography"]
MODES: tuple[Mode, ...] = ("orchestration", "choreography")


class Engine(Protocol):
    """What a coordination mode provides.

    * ``run`` -- run one validated input until it ends or pauses for an approval;
    * ``resume`` -- carry on a run that stopped short (a crash) until it ends;
    * ``decide`` -- answer a pending approval (``{"approved", "by", "note"}``);
    * ``aclose`` -- release what the engine opened.
    """

    mode: str

    async def run(self, input: BaseModel) -> WorkflowResult: ...

    async def resume(self, workflow_id: str) -> WorkflowResult: ...

    async def decide(self, workflow_id: str, decision: dict[str, Any]) -> WorkflowResult: ...

    async def aclose(self) -> None: ...


class Coordinator:
    """A workflow bound to its agents and a coordination engine; mode-independent.

    Validates inputs (raising :class:`~coordinator.errors.InvalidInput` naming every
    bad field) and runs them, one at a time or many concurrently.
    """

    def __init__(
        self, workflow: Workflow, engine: Engine, *, event_log: EventLog, run_id: str, forget_ended: bool = False
    ) -> None:
        self.workflow = workflow
        self.engine = engine
        self.event_log = event_log
        self.run_id = run_id
        # A log the coordinator made itself is only a working record: an ended run's
        # events are in its result, so they are dropped to keep memory flat.
        self._forget_ended = forget_ended and isinstance(event_log, MemoryEventLog)

    def _ended(self, result: WorkflowResult) -> WorkflowResult:
        if self._forget_ended and result.status.ended:
            assert isinstance(self.event_log, MemoryEventLog)
            self.event_log.forget(result.workflow_id)
        return result

    @property
    def mode(self) -> str:
        return self.engine.mode

    async def run(self, input: Any, *, context: dict[str, Any] | None = None) -> WorkflowResult:
        """Validate ``input`` (a mapping, JSON text or model) and run it to its end."""
        return self._ended(await self.engine.run(self.workflow.validate_input(input, context=context)))

    async def resume(self, workflow_id: str) -> WorkflowResult:
        """Carry on the run of ``workflow_id`` that stopped short, until it ends."""
        return self._ended(await self.engine.resume(workflow_id))

    async def approve(self, workflow_id: str, *, by: str, note: str = "") -> WorkflowResult:
        """Approve the step ``workflow_id`` is waiting on; the run carries on."""
        return self._ended(await self.engine.decide(workflow_id, {"approved": True, "by": by, "note": note}))

    async def reject(self, workflow_id: str, *, by: str, note: str = "") -> WorkflowResult:
        """Reject the step ``workflow_id`` is waiting on: it fails, the rest is undone."""
        return self._ended(await self.engine.decide(workflow_id, {"approved": False, "by": by, "note": note}))

    async def run_many(
        self,
        inputs: Iterable[BaseModel],
        *,
        concurrency: int = 16,
        on_result: Callable[[WorkflowResult], Awaitable[None] | None] | None = None,
    ) -> list[WorkflowResult]:
        """Run validated inputs with at most ``concurrency`` in flight; results in input order."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        gate = asyncio.Semaphore(concurrency)

        async def one(item: BaseModel) -> WorkflowResult:
            async with gate:
                result = self._ended(await self.engine.run(item))
            if on_result is not None:
                maybe = on_result(result)
                if maybe is not None:
                    await maybe
            return result

        return list(await asyncio.gather(*(one(i) for i in inputs)))


@asynccontextmanager
async def open_coordinator(
    workflow: Workflow,
    *,
    agents: Sequence[Agent],
    mode: Mode | str = "orchestration",
    settings: RunSettings | None = None,
    event_log: EventLog | None = None,
    clock: Clock | None = None,
    run_id: str | None = None,
    checkpointer: Any = None,
    bus: Any = None,
    concurrency: int = 16,
    supervisor_model: Any = None,
    participants: Sequence[str] | None = None,
    participant_store: Any = None,
    deadline: float | None = None,
) -> AsyncIterator[Coordinator]:
    """Build the coordinator for ``mode`` and close it on exit.

    * ``orchestration`` uses ``checkpointer`` (a LangGraph ``BaseCheckpointSaver``;
      default in-memory); ``supervisor_model`` (a chat model) makes the supervisor
      choose agents through handoff tools instead of by rule;
    * ``choreography`` uses ``bus`` (an :class:`bus.EventBus`; default a fresh
      in-memory bus, closed on exit) with ``concurrency`` handlers per participant;
      ``participants`` picks the ones this process hosts (default: all),
      ``participant_store`` gives them an outbox and inbox (:mod:`bus.outbox`), and
      ``deadline`` (seconds) fails a run's stuck step when it passes.

    Raises :class:`~coordinator.errors.WorkflowDefinitionError` when the workflow and
    agents don't fit, and :class:`CoordinatorError` for an unknown mode.
    """
    from agents.runner import StepRunner

    settings = settings or RunSettings()
    own_log = event_log is None
    event_log = event_log if event_log is not None else MemoryEventLog()
    run_id = run_id or f"run-{uuid.uuid4().hex[:12]}"
    runner = StepRunner(workflow, agents, settings=settings)
    saga = Saga(workflow, factory=EventFactory(seed=settings.seed, clock=clock))
    engine: Engine
    own_bus = None
    if mode == "orchestration":
        from graphs.orchestrator import Orchestrator
        from graphs.supervisor import ModelSupervisor

        supervisor = None
        if supervisor_model is not None:
            supervisor = ModelSupervisor(supervisor_model, workflow, max_reasks=settings.max_reasks)
        engine = Orchestrator(
            runner, saga, checkpointer=checkpointer, event_log=event_log, run_id=run_id, supervisor=supervisor
        )
    elif mode == "choreography":
        from bus import InMemoryBus
        from bus.choreography import Choreography

        if bus is None:
            bus = own_bus = InMemoryBus()
        choreography = Choreography(
            runner,
            saga,
            bus=bus,
            event_log=event_log,
            run_id=run_id,
            concurrency=concurrency,
            participants=participants,
            store=participant_store,
            deadline=deadline,
        )
        await choreography.start()
        engine = choreography
    else:
        raise CoordinatorError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    try:
        yield Coordinator(workflow, engine, event_log=event_log, run_id=run_id, forget_ended=own_log)
    finally:
        await engine.aclose()
        if own_bus is not None:
            await own_bus.close()


async def arun_workflow(
    workflow: Workflow, input: Any, *, agents: Sequence[Agent], mode: Mode | str = "orchestration", **options: Any
) -> WorkflowResult:
    """Run one workflow input to its end; see :func:`open_coordinator` for ``options``."""
    async with open_coordinator(workflow, agents=agents, mode=mode, **options) as coordinator:
        return await coordinator.run(input)


def run_workflow(
    workflow: Workflow, input: Any, *, agents: Sequence[Agent], mode: Mode | str = "orchestration", **options: Any
) -> WorkflowResult:
    """Blocking twin of :func:`arun_workflow` (starts its own event loop)."""
    return asyncio.run(arun_workflow(workflow, input, agents=agents, mode=mode, **options))
